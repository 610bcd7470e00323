/**
 * Revocation of an OpenID Provider grant's tokens, measured on another instance: two Keygate
 * instances on one PostgreSQL; a relying party signs a user in on instance A (authorization
 * code + PKCE, with a `resource`), so it holds an access token whose aud is the resource and a
 * refresh token. Then one of five calls on A ends the grant: Logout of the session that
 * accepted it, BlockUser, RemoveMember, ResetPassword (with the token from the reset mail,
 * timed from the ResetPassword call, not from the mail) or RevokeSession of the grant's
 * session. From the revoking call's answer, instance B is polled until it refuses:
 * - keygate/verify, a Verifier following B with `resource` set, every 2 ms;
 * - the refresh token at B's token endpoint, one call after another (a refresh that B still
 *   answers rotates the token, and the next call uses the new one; such answers are counted);
 * - Introspect on B asked about the resource (as a gateway in front of it asks), every call
 *   after the other, if it answered active for the token before the revocation.
 * The relying party, the resource's verifier and the SMTP server that receives the reset mail
 * run in a separate process; the two instances in this one.
 *
 *   DATABASE_URL=postgres://... npm run bench -- grant-revocation [rounds per path=40]
 *
 * Target (the OpenID Provider issue, acceptance test 5): p99 < 1 s on every instance.
 */
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeJwt } from "jose";
import * as client from "openid-client";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { createVerifier, VerifyError } from "../src/verify/index.js";
import { CookieBrowser } from "../test/support/cookie-browser.js";
import { bearer, freePort, password, uniqueEmail } from "../test/support/fixtures.js";
import { linkIn, type ReceivedMail, startSmtpServer } from "../test/support/smtp.js";
import {
  liftedLimits,
  loadGenerator,
  quantile,
  type Ratio,
  round,
  serveJobs,
  startBenchKeygate,
  startBenchPeer,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);
const redirectUri = "http://127.0.0.1:9/callback";
const resource = "https://calendar.example.com/api";
const pollMs = 2;
/** A refuser still accepting the token this long after the revocation is recorded as never. */
const giveUpMs = 10_000;

const paths = ["Logout", "BlockUser", "RemoveMember", "ResetPassword", "RevokeSession"] as const;
type RevocationPath = (typeof paths)[number];
const refusers = ["keygate/verify", "refresh", "Introspect"] as const;
type Refuser = (typeof refusers)[number];

interface Job {
  a: string;
  b: string;
  issuer: string;
  workspaceId: string;
  rootKey: string;
  rounds: number;
}

interface Sample {
  path: RevocationPath;
  /** Milliseconds from the revoking call's answer to the first refusal; null: not in giveUpMs. */
  ms: Partial<Record<Refuser, number | null>>;
  /** Why the first refusal refused (a VerifyError reason, an OAuth error). */
  why: Partial<Record<Refuser, string>>;
  /** Refreshes that B still answered with tokens after the revoking call's answer. */
  refreshesAfter: number;
  introspectActiveBefore: boolean;
}

// ---- the relying party and the resource, in a process of their own ----

async function relyingParty(): Promise<void> {
  const smtp = await startSmtpServer();
  const taken = new Set<ReceivedMail>();
  const drive = async (job: Job): Promise<Sample[]> => {
    const rpc = (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "2" });
    const admin = createClient(AdminService, rpc(job.a));
    const auth = createClient(AuthService, rpc(job.a));
    const oauth = createClient(OAuthService, rpc(job.a));
    const introspection = createClient(TokenIntrospectionService, rpc(job.b));
    const root = bearer(job.rootKey);
    const { workspaceId } = job;
    const issuer = `${job.issuer}/w/${workspaceId}`;
    // What a resource server holds: a workspace key that may introspect, nothing more.
    const { secret: resourceKey } = await admin.createAdminKey(
      { name: "calendar api", workspaceId, role: AdminKeyRole.READ_ONLY, introspect: true },
      root,
    );
    const verifier = createVerifier({
      baseUrl: job.b,
      adminKey: resourceKey,
      resource,
      workspaceId,
      issuer: job.issuer,
    });
    await verifier.ready();
    const registered = await admin.createOAuthClient(
      {
        workspaceId,
        name: "Calendar",
        redirectUris: [redirectUri],
        confidential: true,
        firstParty: true,
      },
      root,
    );
    const clientId = registered.client?.clientId as string;
    const config = await client.discovery(
      new URL(issuer),
      clientId,
      undefined,
      client.ClientSecretBasic(registered.clientSecret),
      { execute: [client.allowInsecureRequests] },
    );
    const basic = Buffer.from(`${clientId}:${registered.clientSecret}`).toString("base64");
    /** A refresh at B's token endpoint: the next refresh token, or the error B answered. */
    const refreshAtB = async (
      refreshToken: string,
    ): Promise<{ next: string } | { error: string }> => {
      const res = await fetch(`${job.b}/w/${workspaceId}/oauth2/token`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${basic}`,
        },
        body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken }),
      });
      const body = (await res.json()) as { refresh_token?: string; error?: string };
      return res.ok && body.refresh_token
        ? { next: body.refresh_token }
        : { error: body.error ?? String(res.status) };
    };

    /** A member signed in on A who granted the client, and the client's tokens. */
    const signedInGrant = async () => {
      const email = uniqueEmail("grant-revocation");
      const { user } = await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
      const login = await auth.login({ email, password, workspaceId });
      if (login.result.case !== "tokens") throw new Error("login answered no tokens");
      const browser = new CookieBrowser();
      const codeVerifier = client.randomPKCECodeVerifier();
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope: "openid offline_access",
        resource,
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: "S256",
      });
      const toPage = new URL((await browser.get(url.toString())).headers.get("location") ?? "");
      const requestId = toPage.searchParams.get("request");
      if (requestId === null) throw new Error(`authorize refused: ${toPage}`);
      const { redirectTo } = await oauth.acceptAuthorizationRequest(
        { requestId },
        bearer(login.result.value.accessToken),
      );
      const callback = new URL((await browser.get(redirectTo)).headers.get("location") ?? "");
      const tokens = await client.authorizationCodeGrant(
        config,
        callback,
        { pkceCodeVerifier: codeVerifier, idTokenExpected: true },
        { resource },
      );
      if (!tokens.refresh_token) throw new Error("the code exchange answered no refresh token");
      return {
        email,
        userId: user?.id as string,
        session: login.result.value.accessToken,
        accessToken: tokens.access_token,
        refreshToken: tokens.refresh_token,
        grantSessionId: decodeJwt(tokens.access_token).sid as string,
      };
    };

    /** Polls `refused` until it holds: ms since `t0` and why, or null after giveUpMs. */
    const firstRefusal = async (t0: number, refused: () => Promise<string | null>) => {
      for (;;) {
        const why = await refused();
        const ms = performance.now() - t0;
        if (why !== null) return { ms, why };
        if (ms > giveUpMs) return { ms: null, why: "still accepted" };
        await new Promise((r) => setTimeout(r, pollMs));
      }
    };

    const revokeOnce = async (path: RevocationPath): Promise<Sample> => {
      const g = await signedInGrant();
      const caller = await verifier.verify(g.accessToken);
      if (caller.clientId !== clientId) throw new Error("the verifier did not see the client");
      const introspectActiveBefore = (
        await introspection.introspect({ token: g.accessToken, resource }, bearer(resourceKey))
      ).active;
      let resetToken = "";
      if (path === "ResetPassword") {
        await auth.requestPasswordReset({ email: g.email, workspaceId });
        const mail = await smtp.waitFor(
          (m) => m.to.includes(g.email) && m.raw.includes("reset-password") && !taken.has(m),
          30_000,
        );
        taken.add(mail);
        resetToken = linkIn(mail).token;
      }
      const revoke: Record<RevocationPath, () => Promise<unknown>> = {
        Logout: () => auth.logout({}, bearer(g.session)),
        BlockUser: () => admin.blockUser({ userId: g.userId }, root),
        RemoveMember: () => admin.removeMember({ workspaceId, userId: g.userId }, root),
        ResetPassword: () =>
          auth.resetPassword({
            proof: { case: "token", value: resetToken },
            newPassword: `${password} reset`,
          }),
        RevokeSession: () => auth.revokeSession({ sessionId: g.grantSessionId }, bearer(g.session)),
      };
      await revoke[path]();
      const t0 = performance.now();
      let refreshToken = g.refreshToken;
      let refreshesAfter = 0;
      const polled: [Refuser, ReturnType<typeof firstRefusal>][] = [
        [
          "keygate/verify",
          firstRefusal(t0, () =>
            verifier.verify(g.accessToken).then(
              () => null,
              (e: unknown) => (e instanceof VerifyError ? e.reason : String(e)),
            ),
          ),
        ],
        [
          "refresh",
          firstRefusal(t0, async () => {
            const answer = await refreshAtB(refreshToken);
            if ("error" in answer) return answer.error;
            refreshesAfter++;
            refreshToken = answer.next;
            return null;
          }),
        ],
      ];
      if (introspectActiveBefore) {
        polled.push([
          "Introspect",
          firstRefusal(t0, async () => {
            const { active } = await introspection.introspect(
              { token: g.accessToken, resource },
              bearer(resourceKey),
            );
            return active ? null : "inactive";
          }),
        ]);
      }
      const sample: Sample = { path, ms: {}, why: {}, refreshesAfter: 0, introspectActiveBefore };
      for (const [refuser, result] of polled) {
        const { ms, why } = await result;
        sample.ms[refuser] = ms;
        sample.why[refuser] = why;
      }
      sample.refreshesAfter = refreshesAfter;
      return sample;
    };

    // The paths in turn, so that each sees the same moments of the machine's load.
    const samples: Sample[] = [];
    try {
      for (let i = 0; i < job.rounds; i++) {
        for (const path of paths) samples.push(await revokeOnce(path));
      }
    } finally {
      await verifier.close();
    }
    return samples;
  };
  serveJobs(drive, {
    ready: { smtpUrl: smtp.url },
    onDisconnect: () => {
      smtp.stop().finally(() => process.exit(0));
    },
  });
}

// ---- the benchmark ----

interface Figure {
  samples: number;
  /** Rounds in which the refuser still accepted the token giveUpMs after the revocation. */
  never: number;
  /** null: past giveUpMs (a round that never refused counts as the slowest). */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

function figure(values: readonly (number | null | undefined)[]): Figure | undefined {
  const sorted = values
    .filter((v) => v !== undefined)
    .map((v) => v ?? Number.POSITIVE_INFINITY)
    .sort((x, y) => x - y);
  if (sorted.length === 0) return undefined;
  const ms = (x: number) => (Number.isFinite(x) ? round(x, 1) : null);
  return {
    samples: sorted.length,
    never: sorted.filter((v) => !Number.isFinite(v)).length,
    p50Ms: ms(quantile(sorted, 0.5)),
    p99Ms: ms(quantile(sorted, 0.99)),
    maxMs: ms(sorted[sorted.length - 1] ?? 0),
  };
}

/** Whether a figure meets "p99 < 1 s". */
const withinASecond = (f: Figure | undefined) => f?.p99Ms != null && f.p99Ms < 1_000;

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const rounds = Number(args[0] ?? 40);
  if (!process.env.DATABASE_URL) {
    console.log("\ngrant-revocation: skipped, needs DATABASE_URL (two instances on PostgreSQL)");
    return { skipped: "DATABASE_URL is not set" };
  }
  const generator = await loadGenerator(self);
  const { smtpUrl } = generator.ready as { smtpUrl: string };
  // The issuer names A's port: the provider's redirects point at it.
  const port = await freePort();
  const a = await startBenchKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
    KEYGATE_SMTP_URL: smtpUrl,
  });
  const b = await startBenchPeer(a, { ...liftedLimits, KEYGATE_SMTP_URL: smtpUrl });
  try {
    const samples = await generator.ask<Sample[]>({
      a: a.url,
      b: b.url,
      issuer: a.config.issuer,
      workspaceId: a.workspaceId,
      rootKey: a.rootKey,
      rounds,
    } satisfies Job);
    const introspectActive = samples.filter((s) => s.introspectActiveBefore).length;
    const table: Record<string, Record<string, Figure | undefined>> = {};
    for (const refuser of refusers) {
      const byPath: Record<string, Figure | undefined> = {};
      for (const path of paths) {
        byPath[path] = figure(samples.filter((s) => s.path === path).map((s) => s.ms[refuser]));
      }
      byPath.overall = figure(samples.map((s) => s.ms[refuser]));
      if (byPath.overall) table[refuser] = byPath;
    }
    const reasons: Record<string, Record<string, number>> = {};
    for (const s of samples) {
      for (const [refuser, why] of Object.entries(s.why)) {
        const key = `${s.path} → ${refuser}`;
        reasons[key] ??= {};
        reasons[key][why] = (reasons[key][why] ?? 0) + 1;
      }
    }
    const refreshesAfter = samples.reduce((n, s) => n + s.refreshesAfter, 0);
    const ms = (x: number | null) => (x === null ? "never" : `${x} ms`);
    const rows = Object.entries(table).flatMap(([refuser, byPath]) =>
      Object.entries(byPath).map(([path, f]) =>
        f
          ? `| ${path} | ${refuser} | ${f.samples} | ${ms(f.p50Ms)} | ${ms(f.p99Ms)} | ` +
            `${ms(f.maxMs)} | ${verdict(withinASecond(f))} |`
          : "",
      ),
    );
    console.log(`
grant-revocation: an OpenID Provider grant's tokens (aud = a resource) revoked on instance A,
refused by instance B (external PostgreSQL, ${rounds} rounds per path, the paths in turn);
keygate/verify polled every ${pollMs} ms, the refresh token at B's token endpoint call after call
| revoked by | refused by | samples | p50 | p99 | max | p99 < 1 s |
|---|---|---|---|---|---|---|
${rows.filter(Boolean).join("\n")}

Introspect on B before the revocation: active for ${introspectActive} of ${samples.length} tokens${
      introspectActive === 0 ? " (so it was not polled)" : ""
    }
refreshes B still answered after the revoking call's answer: ${refreshesAfter}
`);
    console.table(reasons);
    const targets: Record<string, boolean> = {};
    for (const [refuser, byPath] of Object.entries(table)) {
      targets[`${refuser} on another instance, revocation to refusal p99 < 1 s`] = withinASecond(
        byPath.overall,
      );
      targets[`${refuser} on another instance, p99 < 1 s for each of the five paths`] = paths.every(
        (p) => withinASecond(byPath[p]),
      );
    }
    targets["no refresh answered after the revocation"] = refreshesAfter === 0;
    const chart: Ratio[] = Object.entries(table).map(([refuser, byPath]) => ({
      label: `grant revoked → ${refuser} refuses, p99`,
      // Past giveUpMs, the chart shows the give-up time.
      value: round((byPath.overall?.p99Ms ?? giveUpMs) / 1_000, 4),
      reference: "1 s",
      target: { atMost: 1 },
    }));
    return {
      rounds,
      database: "external PostgreSQL",
      pollMs,
      figures: table,
      introspectActiveBefore: introspectActive,
      refreshesAfter,
      reasons,
      targets,
      chart,
    };
  } finally {
    generator.child.disconnect();
    await b.close();
    await a.stop();
  }
}

if (process.argv[2] === "client") await relyingParty();
