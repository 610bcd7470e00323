import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { ManualClock } from "../src/clock.js";
import { sql } from "../src/db/sql.js";
import { sweep } from "../src/maintenance.js";
import { usingExternalPostgres } from "./support/database.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let clock: ManualClock;
const day = 86_400_000;
const count = (table: string) =>
  keygate.database.pool.oneFirst(
    sql.type(
      z.object({ n: z.number() }),
    )`SELECT count(*)::int AS n FROM ${sql.identifier([table])}`,
  );

beforeAll(async () => {
  clock = new ManualClock();
  smtp = await startSmtpServer();
  keygate = await startTestKeygate(
    { KEYGATE_SMTP_URL: smtp.url, KEYGATE_SIGNING_KEY_ROTATION_DAYS: "0" },
    { clock },
  );
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

describe("sweep", () => {
  it("deletes ended sessions, spent codes and old revocations, and keeps what still matters", async () => {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const auth = createClient(AuthService, transport);
    const admin = createClient(AdminService, transport);
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    const password = "correct horse battery staple";
    const email = `sweep-${Date.now()}@example.test`;
    await admin.provisionUser(
      { email, password, workspaceId },
      { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
    );
    const login = async () => {
      const res = await auth.login({ email, password, workspaceId });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      return res.result.value;
    };
    const ended = await login();
    await auth.logout({}, { headers: { authorization: `Bearer ${ended.accessToken}` } });
    await auth.sendEmailVerification({ email, workspaceId });

    const before = { sessions: await count("sessions"), revocations: await count("revocations") };
    expect(await sweep(keygate.database.pool, clock.now())).toMatchObject({ sessions: 0 });
    expect(await count("sessions")).toBe(before.sessions);

    // A week and a day later everything here has ended, and a fresh login is kept.
    clock.advance(8 * day);
    const live = await login();
    const swept = await sweep(keygate.database.pool, clock.now());
    expect(swept?.sessions).toBeGreaterThanOrEqual(1);
    expect(swept?.revocations).toBeGreaterThanOrEqual(1);
    expect(swept?.codes).toBeGreaterThanOrEqual(1);
    const left =
      await keygate.database.pool.anyFirst(
        sql.type(z.object({ id: z.string() }))`SELECT id FROM sessions`,
      );
    expect(left).toContain(live.sessionId);
    expect(left).not.toContain(ended.sessionId);
    expect(await count("revocations")).toBeLessThan(before.revocations + 1);
  });

  it.runIf(usingExternalPostgres)("runs on one instance per round", async () => {
    const pool = keygate.database.pool;
    const results = await pool.transaction(async (tx) => {
      await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(118129447433072)`);
      return sweep(pool, clock.now());
    });
    expect(results).toBeNull();
  });
});

describe("scheduled signing-key rotation", () => {
  it("publishes one next key when the active one is due, however many instances ask", async () => {
    const peer = await startPeerKeygate(keygate, {}, { clock });
    try {
      const admin = createClient(
        AdminService,
        createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
      );
      const keys = async () =>
        (
          await admin.listSigningKeys(
            {},
            { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
          )
        ).signingKeys;
      const { SigningKeys } = await import("../src/domain/signing-keys.js");
      const { loadSecrets } = await import("../src/crypto/secrets.js");
      const { createLogger } = await import("../src/log.js");
      const open = async () =>
        SigningKeys.open({
          pool: keygate.database.pool,
          keyEncryptionKey: (await loadSecrets(keygate.config)).keyEncryptionKey,
          algorithm: keygate.config.jwtAlgorithm,
          issuer: keygate.config.issuer,
          audience: keygate.config.audience,
          clock,
          logger: createLogger("silent"),
        });
      const [a, b] = [await open(), await open()];
      const before = (await keys()).length;
      expect(await a.rotateIfDue(30 * day)).toBeNull();
      clock.advance(31 * day);
      const results = await Promise.all([a.rotateIfDue(30 * day), b.rotateIfDue(30 * day)]);
      expect(results.filter((r) => r !== null)).toHaveLength(1);
      expect((await keys()).length).toBe(before + 1);
      expect(await a.rotateIfDue(30 * day)).toBeNull();
    } finally {
      await peer.stop();
    }
  });
});
