import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { ManualClock } from "../src/clock.js";
import { usingExternalPostgres } from "./support/database.js";
import { failure } from "./support/failure.js";
import { type Provisioner, password, signedIn } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

/**
 * keygate/verify protecting a service in its own process (test/fixtures/internal-service.ts).
 * Revocations are made through instance `keygate`; the services' verifiers follow `feedPeer`.
 */
let keygate: TestKeygate;
let feedPeer: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let rootKey: string;
let gatewayKey: string;
let defaultWorkspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let byRoot: Provisioner;
const services: InternalService[] = [];
/**
 * On PostgreSQL the instances hear each other through LISTEN/NOTIFY; the embedded database
 * has no notifications across connections, so there the followed instance resyncs often.
 */
const feedEnv: Record<string, string> = usingExternalPostgres
  ? {}
  : { KEYGATE_REVOCATION_RESYNC_MS: "200" };

let counter = 0;
const as = (token: string, workspaceId?: string) => ({
  headers: {
    authorization: `Bearer ${token}`,
    ...(workspaceId ? { "x-workspace-id": workspaceId } : {}),
  },
});

interface InternalService {
  child: ChildProcess;
  client: ReturnType<typeof createClient<typeof AuthService>>;
  httpUrl: string;
  stats(): Promise<{ watch: number; introspect: number }>;
  stop(): Promise<void>;
}

async function startService(keygateUrl: string, env: Record<string, string> = {}) {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", path.resolve(import.meta.dirname, "fixtures/internal-service.ts")],
    {
      env: {
        ...process.env,
        KEYGATE_URL: keygateUrl,
        KEYGATE_ADMIN_KEY: gatewayKey,
        KEYGATE_AUDIENCE: keygate.config.audience,
        KEYGATE_ISSUER: keygate.config.issuer,
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const ports = await new Promise<{ rpc: number; http: number }>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) resolve(JSON.parse(line));
    });
    child.once("exit", (code) => reject(new Error(`internal service exited with ${code}`)));
  });
  const service: InternalService = {
    child,
    client: createClient(
      AuthService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${ports.rpc}`, httpVersion: "2" }),
    ),
    httpUrl: `http://127.0.0.1:${ports.http}`,
    async stats() {
      return (await fetch(`${this.httpUrl}/stats`)).json();
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
  services.push(service);
  return service;
}

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url });
  feedPeer = await startPeerKeygate(keygate, feedEnv);
  rootKey = keygate.bootstrapped?.adminKey as string;
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  byRoot = { admin, auth, adminKey: rootKey, workspaceId: defaultWorkspaceId };
  gatewayKey = (
    await admin.createAdminKey(
      { name: "internal service", role: AdminKeyRole.READ_ONLY, introspect: true },
      as(rootKey),
    )
  ).secret;
});
afterAll(async () => {
  for (const s of services) await s.stop();
  await feedPeer?.stop();
  await keygate?.stop();
  await smtp?.stop();
});

async function refusal(p: Promise<unknown>) {
  const { code, error } = await failure(p);
  return { code, reason: error.metadata.get("keygate-reason") };
}

/** Polls the service until it refuses the token (at most `ms`). */
async function refusedWithin(service: InternalService, token: string, ms: number) {
  const started = performance.now();
  for (;;) {
    const outcome = await service.client.getSession({}, as(token)).then(
      () => "allowed",
      (e) => ConnectError.from(e).code,
    );
    if (outcome !== "allowed") return outcome;
    if (performance.now() - started > ms) throw new Error(`still allowed after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("keygate/verify in an internal service", () => {
  let service: InternalService;
  beforeAll(async () => {
    service = await startService(feedPeer.url);
  });

  it("lets a valid token through and hands the handler the caller", async () => {
    const user = await signedIn(byRoot, "verify", { role: Role.ADMIN });
    const res = await service.client.getSession({}, as(user.accessToken, defaultWorkspaceId));
    expect(res.user?.id).toBe(user.userId);
    expect(res.workspace?.id).toBe(defaultWorkspaceId);
    expect(res.session?.id).toBe(user.sessionId);
    expect(res.role).toBe(Role.ADMIN);

    const web = await fetch(`${service.httpUrl}/whoami`, {
      headers: { authorization: `Bearer ${user.accessToken}` },
    });
    expect(web.status).toBe(200);
    expect(await web.json()).toMatchObject({
      userId: user.userId,
      workspaceId: defaultWorkspaceId,
      sessionId: user.sessionId,
      role: "admin",
    });
  });

  it("refuses another workspace, an expired token, an unknown key and alg none", async () => {
    const user = await signedIn(byRoot, "verify");
    expect(
      await refusal(
        service.client.getSession({}, as(user.accessToken, "00000000-0000-4000-8000-000000000000")),
      ),
    ).toEqual({ code: Code.PermissionDenied, reason: "workspace_mismatch" });

    // An instance whose clock is two hours behind issues tokens that are already expired.
    const late = await startPeerKeygate(
      keygate,
      {},
      {
        clock: new ManualClock(Date.now() - 2 * 3600_000),
      },
    );
    try {
      const lateAuth = createClient(
        AuthService,
        createConnectTransport({ baseUrl: late.url, httpVersion: "2" }),
      );
      const res = await lateAuth.login({
        email: user.email,
        password,
        workspaceId: defaultWorkspaceId,
      });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      expect(
        await refusal(service.client.getSession({}, as(res.result.value.accessToken))),
      ).toEqual({
        code: Code.Unauthenticated,
        reason: "expired",
      });
    } finally {
      await late.stop();
    }

    const { privateKey } = await generateKeyPair("RS256");
    const [, payload] = user.accessToken.split(".") as [string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
    const foreign = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: "not-a-keygate-key", typ: "at+jwt" })
      .sign(privateKey);
    const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: "at+jwt" })).toString("base64url")}.${payload}.`;
    for (const token of [foreign, none, "garbage"]) {
      expect(await refusal(service.client.getSession({}, as(token)))).toEqual({
        code: Code.Unauthenticated,
        reason: "invalid",
      });
    }
    const web = await fetch(`${service.httpUrl}/whoami`, {
      headers: { authorization: `Bearer ${foreign}` },
    });
    expect(web.status).toBe(401);
    expect(web.headers.get("www-authenticate")).toMatch(
      /^Bearer realm="keygate", error="invalid_token"/,
    );
  });

  it("refuses within a second after Logout, BlockUser, ChangePassword, RemoveMember and DeleteWorkspace through another instance, with no call per request", async () => {
    const before = await service.stats();
    const ws = await admin.createWorkspace(
      { name: "Verify", slug: `verify-${Date.now()}-${++counter}` },
      as(rootKey),
    );
    const workspaceId = ws.workspace?.id as string;
    const loggedOut = await signedIn(byRoot, "verify");
    const blocked = await signedIn(byRoot, "verify");
    const changer = await signedIn(byRoot, "verify");
    const otherSession = await auth.login({
      email: changer.email,
      password,
      workspaceId: defaultWorkspaceId,
    });
    if (otherSession.result.case !== "tokens") throw new Error("no tokens");
    const removed = await signedIn(byRoot, "verify", { workspaceId: workspaceId });
    const deleted = await signedIn(byRoot, "verify", { workspaceId: workspaceId });
    const tokens = [loggedOut, blocked, otherSession.result.value, removed, deleted];
    for (const t of tokens) {
      await service.client.getSession({}, as(t.accessToken));
    }
    const actions: [string, () => Promise<unknown>][] = [
      [loggedOut.accessToken, () => auth.logout({}, as(loggedOut.accessToken))],
      [
        blocked.accessToken,
        () => admin.blockUser({ userId: blocked.userId, reason: "test" }, as(rootKey)),
      ],
      [
        otherSession.result.value.accessToken,
        () =>
          auth.changePassword(
            { currentPassword: password, newPassword: `${password} 2` },
            as(changer.accessToken),
          ),
      ],
      [
        removed.accessToken,
        () => admin.removeMember({ workspaceId, userId: removed.userId }, as(rootKey)),
      ],
      [deleted.accessToken, () => admin.deleteWorkspace({ workspaceId }, as(rootKey))],
    ];
    for (const [token, act] of actions) {
      await act();
      expect([Code.Unauthenticated, Code.PermissionDenied]).toContain(
        await refusedWithin(service, token, 1_000),
      );
    }
    // Dozens of requests, and the verifier called Keygate for none of them.
    expect(await service.stats()).toEqual(before);
  });

  it("resumes after the Keygate instance it follows restarts, missing nothing", async () => {
    const port = new URL(feedPeer.url).port;
    const victims = [await signedIn(byRoot, "verify"), await signedIn(byRoot, "verify")];
    for (const v of victims) await service.client.getSession({}, as(v.accessToken));
    await feedPeer.stop();
    for (const v of victims) await auth.logout({}, as(v.accessToken));
    feedPeer = await startPeerKeygate(keygate, { ...feedEnv, KEYGATE_PORT: port });
    for (const v of victims) await refusedWithin(service, v.accessToken, 10_000);
    expect((await service.stats()).watch).toBeGreaterThan(1);
    const alive = await signedIn(byRoot, "verify");
    expect((await service.client.getSession({}, as(alive.accessToken))).user?.id).toBe(
      alive.userId,
    );
  });
});

describe("a verifier whose feed goes quiet", () => {
  it("fails closed with `stale` by default, and introspects when configured", async () => {
    // This instance sends heartbeats every five minutes: the feed falls silent at once.
    // (feedEnv: on the embedded database it learns of the logout below by its resync.)
    const quiet = await startPeerKeygate(keygate, {
      ...feedEnv,
      KEYGATE_REVOCATION_HEARTBEAT_MS: "300000",
    });
    try {
      const strict = await startService(quiet.url, { VERIFIER_STALE_AFTER_MS: "300" });
      const lenient = await startService(quiet.url, {
        VERIFIER_STALE_AFTER_MS: "300",
        VERIFIER_WHEN_STALE: "introspect",
        VERIFIER_TRANSPORT: "connect",
      });
      await new Promise((r) => setTimeout(r, 600));
      const user = await signedIn(byRoot, "verify");
      expect(await refusal(strict.client.getSession({}, as(user.accessToken)))).toEqual({
        code: Code.Unavailable,
        reason: "stale",
      });
      expect((await lenient.client.getSession({}, as(user.accessToken))).user?.id).toBe(
        user.userId,
      );
      expect((await lenient.stats()).introspect).toBe(1);
      await auth.logout({}, as(user.accessToken));
      // The fallback's answers are reused for a second at most.
      expect(await refusedWithin(lenient, user.accessToken, 3_000)).toBe(Code.Unauthenticated);
    } finally {
      await quiet.stop();
    }
  });
});

describe("SECURITY.md 34: a verifier with a workspace-scoped key accepts that workspace only", () => {
  it("refuses another workspace's tokens whatever the request's headers, and sees its own revocations", async () => {
    const other = await admin.createWorkspace(
      { name: "Elsewhere", slug: `elsewhere-${++counter}` },
      as(rootKey),
    );
    const otherId = other.workspace?.id as string;
    const scopedKey = (
      await admin.createAdminKey(
        {
          name: "one workspace's gateway",
          workspaceId: defaultWorkspaceId,
          role: AdminKeyRole.READ_ONLY,
          introspect: true,
        },
        as(rootKey),
      )
    ).secret;
    const service = await startService(feedPeer.url, { KEYGATE_ADMIN_KEY: scopedKey });
    const mine = await signedIn(byRoot, "verify");
    const theirs = await signedIn(byRoot, "verify", { workspaceId: otherId });
    expect((await service.client.getSession({}, as(mine.accessToken))).user?.id).toBe(mine.userId);
    const mismatch = { code: Code.PermissionDenied, reason: "workspace_mismatch" };
    expect(await refusal(service.client.getSession({}, as(theirs.accessToken)))).toEqual(mismatch);
    expect(await refusal(service.client.getSession({}, as(theirs.accessToken, otherId)))).toEqual(
      mismatch,
    );
    const web = await fetch(`${service.httpUrl}/whoami`, {
      headers: { authorization: `Bearer ${theirs.accessToken}`, "x-workspace-id": otherId },
    });
    expect(web.status).toBe(403);
    // Its own workspace's logout reaches it.
    await auth.logout({}, as(mine.accessToken));
    expect(await refusedWithin(service, mine.accessToken, 3_000)).toBe(Code.Unauthenticated);
    await service.stop();
  });
});
