import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  type CryptoKey,
  createRemoteJWKSet,
  errors,
  type FlattenedJWSInput,
  type JWSHeaderParameters,
  type JWTPayload,
  jwtVerify,
} from "jose";
import {
  RevocationKind,
  TokenIntrospectionService,
} from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { resourceProblem } from "../resource-identifiers.js";
import { type Revocation, type RevocationKindName, RevocationSet } from "../revocation-set.js";
import {
  type VerifiedCaller,
  type VerifiedClient,
  type VerifierOptions,
  VerifyError,
  type VerifyOptions,
} from "./options.js";

/** A token's checked claims, with what the revocation state needs. */
type Checked =
  | (VerifiedCaller & { kind: "user"; issuedAt: Date; kid: string })
  | (VerifiedClient & { sessionId: string; issuedAt: Date; kid: string });

const kindNames: Record<RevocationKind, RevocationKindName | null> = {
  [RevocationKind.UNSPECIFIED]: null,
  [RevocationKind.SESSION]: "session",
  [RevocationKind.USER]: "user",
  [RevocationKind.MEMBERSHIP]: "membership",
  [RevocationKind.WORKSPACE]: "workspace",
  [RevocationKind.SIGNING_KEY]: "signing_key",
};
const roles = new Set(["owner", "admin", "member"]);

/**
 * Verifies Keygate access tokens locally at signature cost and still refuses revoked ones
 * within a second: jose against the JWKS (fetched once, refetched on an unknown kid at most
 * every 5 s), algorithms, issuer, audience and `typ` pinned, then an in-memory revocation
 * state fed by WatchRevocations (resumed by cursor after a reconnect, with backoff and jitter).
 * No network call per request while the feed is up.
 */
export class Verifier {
  private readonly set = new RevocationSet();
  private readonly jwks: ReturnType<typeof createRemoteJWKSet>;
  private readonly keys = new Map<string, { key: CryptoKey; at: number }>();
  private readonly client;
  private readonly abort = new AbortController();
  private readonly options: Required<
    Omit<VerifierOptions, "onFeedError" | "issuer" | "workspaceId" | "audience" | "resource">
  > &
    Pick<VerifierOptions, "onFeedError" | "workspaceId" | "resource"> & {
      issuer: string;
      audience: string;
    };
  /** The workspace of a workspace-scoped key, as the feed tells it. */
  private keyWorkspace: string | null = null;
  private cursor = "";
  private synced = false;
  private lastHeardAt = Number.NEGATIVE_INFINITY;
  private readonly introspected = new Map<string, { at: number; caller: VerifiedCaller | null }>();
  private readonly feed: Promise<void>;
  private readySignal: { promise: Promise<void>; resolve: () => void };
  /** Calls made to Keygate, for tests and metrics. */
  readonly calls = { watch: 0, introspect: 0 };

  constructor(options: VerifierOptions) {
    const issuer = (options.issuer ?? new URL(options.baseUrl).origin).replace(/\/+$/, "");
    const { resource, workspaceId } = options;
    if (resource !== undefined) {
      if (workspaceId === undefined)
        throw new TypeError("a verifier with a resource needs workspaceId");
      // One the provider would never issue a token for: Keygate itself (its issuer's origin,
      // where the provider's own tokens point), or no proper https URI.
      const problem = resourceProblem(resource, { audience: options.audience, issuerBase: issuer });
      if (problem !== null) throw new TypeError(`resource ${problem}`);
      // Introspect answers for Keygate's own sessions' tokens only.
      if (options.whenStale === "introspect") {
        throw new TypeError('whenStale "introspect" is not available with a resource');
      }
    } else if (options.audience === undefined) {
      throw new TypeError("give the deployment's audience, or a resource");
    }
    this.options = {
      transport: "grpc",
      algorithms: ["RS256", "ES256", "EdDSA"],
      staleAfterMs: 5_000,
      whenStale: "fail",
      introspectCacheMs: 1_000,
      requireMfa: false,
      ...options,
      // A workspace's provider issues the tokens granted for a resource (docs/openid-provider.md).
      issuer: resource === undefined ? issuer : `${issuer}/w/${workspaceId}`,
      audience: resource ?? (options.audience as string),
    };
    const base = options.baseUrl.replace(/\/+$/, "");
    this.jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`), {
      cacheMaxAge: 60_000,
      cooldownDuration: 5_000,
    });
    const transport: Transport =
      this.options.transport === "connect"
        ? createConnectTransport({ baseUrl: base, httpVersion: "2" })
        : createGrpcTransport({ baseUrl: base });
    this.client = createClient(TokenIntrospectionService, transport);
    let resolve = () => {};
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    this.readySignal = { promise, resolve };
    this.feed = this.follow();
  }

  /**
   * For a verifier with a `resource`: where its clients get tokens (the workspace's issuer)
   * and what the resource is called, for RFC 9728 metadata. Undefined otherwise.
   */
  get protectedResource(): { resource: string; authorizationServer: string } | undefined {
    const { resource, issuer } = this.options;
    return resource === undefined ? undefined : { resource, authorizationServer: issuer };
  }

  /** Resolves once the first snapshot of the revocation feed is in. */
  ready(): Promise<void> {
    return this.readySignal.promise;
  }

  /** Whether the revocation state is current (the feed was heard from recently). */
  get current(): boolean {
    return this.synced && performance.now() - this.lastHeardAt <= this.options.staleAfterMs;
  }

  /** A user's token: one of Keygate's own sessions', or a grant's for this resource. */
  async verify(token: string, options: VerifyOptions = {}): Promise<VerifiedCaller> {
    return (await this.check(token, options, false)) as VerifiedCaller;
  }

  /**
   * As `verify`, and for a verifier with a `resource` also a client's own token for that
   * resource (client_credentials): check `kind` to tell them apart. A client's token is
   * refused where two factors are required, since no one signed in.
   */
  async verifyUserOrClient(
    token: string,
    options: VerifyOptions = {},
  ): Promise<VerifiedCaller | VerifiedClient> {
    return this.check(token, options, true);
  }

  private async check(
    token: string,
    options: VerifyOptions,
    clients: boolean,
  ): Promise<VerifiedCaller | VerifiedClient> {
    const claims = await this.checkSignature(token, clients);
    // The key's own workspace first: its feed carries no other workspace's revocations.
    for (const pinned of [this.keyWorkspace, this.options.workspaceId, options.workspaceId]) {
      if (pinned !== null && pinned !== undefined && pinned !== claims.workspaceId)
        throw new VerifyError("workspace_mismatch", "the token is for another workspace");
    }
    // The signed amr claim decides, so a refusal costs no feed lookup or Introspect.
    const mfa = claims.kind === "user" && claims.amr.includes("mfa");
    if ((options.requireMfa ?? this.options.requireMfa) && !mfa) {
      throw new VerifyError("mfa_required", "sign in with a second factor for this");
    }
    if (!this.current) return this.whenStale(token);
    // A client's tokens carry its machine session as sid, which deleting the client or
    // rotating its secret revokes.
    const kind = this.set.match(
      claims.kind === "user" ? claims : { ...claims, userId: claims.clientId },
    );
    if (kind === "membership") {
      throw new VerifyError("membership_inactive", "the membership changed or ended");
    }
    if (kind !== null) throw new VerifyError("revoked", "the token has been revoked");
    if (claims.kind === "client") {
      const { clientId, workspaceId, scopes, expiresAt } = claims;
      return { kind: "client", clientId, workspaceId, scopes, expiresAt };
    }
    const { issuedAt: _, kid: __, ...caller } = claims;
    return caller;
  }

  /** Stops following the feed. */
  async close(): Promise<void> {
    this.abort.abort();
    await this.feed;
  }

  /**
   * The key for a token's header: imported keys are kept by kid and alg for a minute (the
   * JWKS cache time), so the common case skips the key-set lookup; unknown kids go to the
   * remote key set, which refetches (rate-limited).
   */
  private readonly keyFor = (
    header: JWSHeaderParameters,
    token: FlattenedJWSInput,
  ): CryptoKey | Promise<CryptoKey> => {
    const id = `${header.kid}\0${header.alg}`;
    const known = this.keys.get(id);
    if (known && performance.now() - known.at < 60_000) return known.key;
    return this.jwks(header, token).then((key) => {
      if (this.keys.size > 100) this.keys.clear();
      this.keys.set(id, { key, at: performance.now() });
      return key;
    });
  };

  private async checkSignature(token: string, clients: boolean): Promise<Checked> {
    let payload: JWTPayload;
    let kid: unknown;
    const forResource = this.options.resource !== undefined;
    try {
      ({
        payload,
        protectedHeader: { kid },
      } = await jwtVerify(token, this.keyFor, {
        algorithms: [...this.options.algorithms],
        issuer: this.options.issuer,
        audience: this.options.audience,
        typ: "at+jwt",
        requiredClaims: [
          "sub",
          "workspace_id",
          "sid",
          "iat",
          "exp",
          "jti",
          ...(forResource ? ["client_id", "scope"] : ["role"]),
        ],
      }));
    } catch (error) {
      if (error instanceof errors.JWTExpired) {
        throw new VerifyError("expired", "the access token has expired");
      }
      throw new VerifyError("invalid", "the access token is invalid");
    }
    const { sub, workspace_id, sid, role, iat, exp, amr, acr, client_id, scope } = payload;
    // A client's own token: sub is the client and there is no user, so no role.
    const client = forResource && role === undefined && sub === client_id;
    if (
      // A client's token never passes for one of Keygate's own sessions', nor the reverse.
      (client_id !== undefined) !== forResource ||
      (forResource && (typeof client_id !== "string" || typeof scope !== "string")) ||
      (client && !clients) ||
      typeof sub !== "string" ||
      typeof workspace_id !== "string" ||
      typeof sid !== "string" ||
      (!client && (typeof role !== "string" || !roles.has(role))) ||
      typeof iat !== "number" ||
      typeof exp !== "number" ||
      typeof kid !== "string" ||
      (amr !== undefined && !(Array.isArray(amr) && amr.every((m) => typeof m === "string"))) ||
      (acr !== undefined && typeof acr !== "string")
    ) {
      throw new VerifyError("invalid", "the access token's claims are malformed");
    }
    const expiresAt = new Date(exp * 1000);
    const issuedAt = new Date(iat * 1000);
    const scopes = forResource ? (scope as string).split(" ").filter((s) => s !== "") : [];
    if (client) {
      return {
        kind: "client",
        clientId: client_id as string,
        workspaceId: workspace_id,
        scopes,
        expiresAt,
        sessionId: sid,
        issuedAt,
        kid,
      };
    }
    return {
      kind: "user",
      userId: sub,
      workspaceId: workspace_id,
      sessionId: sid,
      role: role as VerifiedCaller["role"],
      expiresAt,
      amr: (amr as string[] | undefined) ?? [],
      acr: (acr as string | undefined) ?? "1",
      issuedAt,
      kid,
      ...(forResource ? { clientId: client_id as string, scopes } : {}),
    };
  }

  private async whenStale(token: string): Promise<VerifiedCaller> {
    if (this.options.whenStale !== "introspect") {
      throw new VerifyError("stale", "revocations cannot be checked: the feed is down");
    }
    const now = performance.now();
    const cached = this.introspected.get(token);
    let caller =
      cached && now - cached.at <= this.options.introspectCacheMs ? cached.caller : undefined;
    if (caller === undefined) {
      this.calls.introspect++;
      try {
        const res = await this.client.introspect(
          { token },
          { headers: { authorization: `Bearer ${this.options.adminKey}` }, timeoutMs: 2_000 },
        );
        caller = res.active
          ? {
              kind: "user",
              userId: res.sub,
              workspaceId: res.workspaceId,
              sessionId: res.sid,
              role: res.role as VerifiedCaller["role"],
              expiresAt: new Date(Number(res.exp) * 1000),
              amr: res.amr,
              acr: res.acr || "1",
            }
          : null;
      } catch {
        throw new VerifyError("stale", "revocations cannot be checked: Keygate is unreachable");
      }
      if (this.introspected.size > 10_000) this.introspected.clear();
      this.introspected.set(token, { at: now, caller });
    }
    if (caller === null) throw new VerifyError("revoked", "the token is not active");
    return caller;
  }

  /** Follows WatchRevocations for as long as the verifier lives, resuming by cursor. */
  private async follow(): Promise<void> {
    let backoffMs = 100;
    let pruned = performance.now();
    while (!this.abort.signal.aborted) {
      this.calls.watch++;
      try {
        const stream = this.client.watchRevocations(
          { cursor: this.cursor },
          {
            headers: { authorization: `Bearer ${this.options.adminKey}` },
            signal: this.abort.signal,
          },
        );
        for await (const res of stream) {
          this.lastHeardAt = performance.now();
          backoffMs = 100;
          const event = res.event;
          if (event.case === "revocation") {
            const r = event.value;
            const kind = kindNames[r.kind];
            if (kind !== null) this.set.apply(revocationOf(kind, r));
            this.cursor = r.cursor;
          } else if (event.case === "snapshotComplete") {
            this.cursor = event.value.cursor;
            this.keyWorkspace = event.value.workspaceId || null;
            this.synced = true;
            this.readySignal.resolve();
          } else if (event.case === "heartbeat") {
            this.cursor = event.value.cursor;
          }
          if (this.lastHeardAt - pruned > 10_000) {
            this.set.prune(Date.now());
            pruned = this.lastHeardAt;
          }
        }
      } catch (error) {
        if (this.abort.signal.aborted) break;
        // A cursor the feed refuses (another database): start again from a snapshot.
        if (ConnectError.from(error).code === Code.InvalidArgument) {
          this.cursor = "";
          this.set.clear();
          this.synced = false;
        }
        this.options.onFeedError?.(error);
      }
      if (this.abort.signal.aborted) break;
      const delay = backoffMs / 2 + Math.random() * backoffMs;
      backoffMs = Math.min(backoffMs * 2, 5_000);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

function revocationOf(
  kind: RevocationKindName,
  r: {
    workspaceId: string;
    userId: string;
    sessionId: string;
    kid: string;
    cutOffTime?: { seconds: bigint; nanos: number };
    expireTime?: { seconds: bigint; nanos: number };
  },
): Revocation {
  const ms = (t?: { seconds: bigint; nanos: number }) =>
    t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0;
  return {
    kind,
    workspaceId: r.workspaceId || null,
    userId: r.userId || null,
    sessionId: r.sessionId || null,
    kid: r.kid || null,
    cutOffMs: ms(r.cutOffTime),
    expireMs: ms(r.expireTime),
  };
}

/** Starts a verifier; it follows the revocation feed until `close()`. */
export function createVerifier(options: VerifierOptions): Verifier {
  return new Verifier(options);
}
