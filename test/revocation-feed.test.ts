import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  RevocationKind,
  TokenIntrospectionService,
  type WatchRevocationsResponse,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { type Provisioner, signedIn } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let rootKey: string;
let defaultWorkspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let byRoot: Provisioner;

let counter = 0;
const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: smtp.url,
    KEYGATE_REVOCATION_HEARTBEAT_MS: "300",
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  byRoot = { admin, auth, adminKey: rootKey, workspaceId: defaultWorkspaceId };
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

/** An open WatchRevocations stream whose events are collected as they arrive. */
function watch(options: { cursor?: string; key?: string; baseUrl?: string; grpc?: boolean } = {}) {
  const baseUrl = options.baseUrl ?? keygate.url;
  const transport = options.grpc
    ? createGrpcTransport({ baseUrl })
    : createConnectTransport({ baseUrl, httpVersion: "2" });
  const client = createClient(TokenIntrospectionService, transport);
  const abort = new AbortController();
  const events: WatchRevocationsResponse["event"][] = [];
  let failure: unknown;
  let changed: () => void = () => {};
  const done = (async () => {
    try {
      for await (const res of client.watchRevocations(
        { cursor: options.cursor ?? "" },
        { ...as(options.key ?? rootKey), signal: abort.signal },
      )) {
        events.push(res.event);
        changed();
      }
    } catch (error) {
      if (!abort.signal.aborted) failure = error;
    }
    changed();
  })();
  return {
    events,
    /** Waits until `predicate` holds for the events so far (at most 5 s). */
    async until(predicate: (events: WatchRevocationsResponse["event"][]) => boolean) {
      const deadline = Date.now() + 5_000;
      while (!predicate(events)) {
        if (failure) throw failure;
        if (Date.now() > deadline)
          throw new Error(`not seen: ${JSON.stringify(events.map((e) => e.case))}`);
        await new Promise<void>((resolve) => {
          changed = resolve;
          setTimeout(resolve, 50);
        });
      }
    },
    revocations() {
      return events.flatMap((e) => (e.case === "revocation" ? [e.value] : []));
    },
    async close() {
      abort.abort();
      await done;
    },
    failed: async () => {
      await done;
      return failure;
    },
  };
}

const snapshotDone = (events: WatchRevocationsResponse["event"][]) =>
  events.some((e) => e.case === "snapshotComplete");

describe("WatchRevocations", () => {
  it("sends what can still matter, then each revocation as it is committed", async () => {
    const before = await signedIn(byRoot, "feed");
    await auth.logout({}, as(before.accessToken));
    const stream = watch();
    try {
      await stream.until(snapshotDone);
      const snapshot = stream.revocations();
      expect(snapshot.map((r) => r.sessionId)).toContain(before.sessionId);
      const complete = stream.events.find((e) => e.case === "snapshotComplete");
      const snapshotCursor = Number(complete?.case === "snapshotComplete" && complete.value.cursor);
      expect(snapshot.every((r) => Number(r.cursor) <= snapshotCursor)).toBe(true);

      const live = await signedIn(byRoot, "feed");
      await auth.logout({}, as(live.accessToken));
      await stream.until(() => stream.revocations().some((r) => r.sessionId === live.sessionId));
      const event = stream.revocations().find((r) => r.sessionId === live.sessionId);
      expect(event).toMatchObject({
        kind: RevocationKind.SESSION,
        userId: live.userId,
        workspaceId: defaultWorkspaceId,
      });
      expect(Number(event?.cursor)).toBeGreaterThan(snapshotCursor);
      expect(Number(event?.expireTime?.seconds)).toBeGreaterThanOrEqual(
        Number(live.accessTokenExpireTime?.seconds),
      );

      const blocked = await signedIn(byRoot, "feed");
      await admin.blockUser({ userId: blocked.userId, reason: "feed" }, as(rootKey));
      await stream.until(() =>
        stream
          .revocations()
          .some((r) => r.kind === RevocationKind.USER && r.userId === blocked.userId),
      );
      const cursors = stream.revocations().map((r) => Number(r.cursor));
      expect(cursors).toEqual([...cursors].sort((a, b) => a - b));
      expect(new Set(cursors).size).toBe(cursors.length);
    } finally {
      await stream.close();
    }
  });

  it("resumes after a cursor with exactly what was missed, over gRPC too", async () => {
    const first = watch({ grpc: true });
    await first.until(snapshotDone);
    const complete = first.events.find((e) => e.case === "snapshotComplete");
    const cursor = complete?.case === "snapshotComplete" ? complete.value.cursor : "";
    await first.close();

    const missed = [await signedIn(byRoot, "feed"), await signedIn(byRoot, "feed")];
    for (const t of missed) await auth.logout({}, as(t.accessToken));
    const resumed = watch({ cursor, grpc: true });
    try {
      await resumed.until(snapshotDone);
      expect(resumed.revocations().map((r) => r.sessionId)).toEqual(missed.map((t) => t.sessionId));
    } finally {
      await resumed.close();
    }
  });

  it("carries revocations made through another instance", async () => {
    const peer = await startPeerKeygate(keygate);
    const stream = watch();
    try {
      await stream.until(snapshotDone);
      const user = await signedIn(byRoot, "feed");
      const onPeer = createClient(
        AuthService,
        createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
      );
      await onPeer.logout({}, as(user.accessToken));
      await stream.until(() => stream.revocations().some((r) => r.sessionId === user.sessionId));
    } finally {
      await stream.close();
      await peer.stop();
    }
  });

  it("keeps idle streams alive with heartbeats", async () => {
    const stream = watch();
    try {
      await stream.until((events) => events.filter((e) => e.case === "heartbeat").length >= 2);
    } finally {
      await stream.close();
    }
  });

  it("shows a workspace-scoped key its own workspace only", async () => {
    const ws = await admin.createWorkspace(
      { name: "Feed", slug: `feed-${Date.now()}-${++counter}` },
      as(rootKey),
    );
    const workspaceId = ws.workspace?.id as string;
    const { secret } = await admin.createAdminKey(
      { name: "scoped", workspaceId, role: AdminKeyRole.READ_ONLY, introspect: true },
      as(rootKey),
    );
    const stream = watch({ key: secret });
    try {
      await stream.until(snapshotDone);
      const outsider = await signedIn(byRoot, "feed");
      const insider = await signedIn(byRoot, "feed", { workspaceId });
      await auth.logout({}, as(outsider.accessToken));
      await auth.logout({}, as(insider.accessToken));
      await stream.until(() => stream.revocations().some((r) => r.sessionId === insider.sessionId));
      expect(stream.revocations().every((r) => r.workspaceId === workspaceId)).toBe(true);
    } finally {
      await stream.close();
    }
  });

  it("refuses malformed and future cursors and callers without the permission", async () => {
    for (const cursor of ["abc", "-1", "99999999999"]) {
      const error = ConnectError.from(await watch({ cursor }).failed());
      expect(error.code).toBe(Code.InvalidArgument);
      expect(
        error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field)),
      ).toEqual(["cursor"]);
    }
    const { secret } = await admin.createAdminKey(
      { name: "plain", role: AdminKeyRole.READ_ONLY, introspect: false },
      as(rootKey),
    );
    expect(ConnectError.from(await watch({ key: secret }).failed()).code).toBe(
      Code.PermissionDenied,
    );
  });
});
