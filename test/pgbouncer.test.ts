import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { usingExternalPostgres } from "./support/database.js";
import { havePgbouncer, startPgbouncer } from "./support/pgbouncer.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

/**
 * The main flows through PgBouncer in transaction pooling mode: an instance whose pool goes
 * through the pooler, with its listener (and migrations) on a direct connection. PostgreSQL
 * only: PgBouncer fronts a PostgreSQL server, and the embedded database is one process's own.
 */
describe.runIf(usingExternalPostgres && havePgbouncer)(
  "behind PgBouncer (transaction pooling)",
  () => {
    let direct: TestKeygate;
    let pooled: TestKeygate;
    let bouncer: Awaited<ReturnType<typeof startPgbouncer>>;
    let smtp: Awaited<ReturnType<typeof startSmtpServer>>;

    beforeAll(async () => {
      smtp = await startSmtpServer();
      direct = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url });
      bouncer = await startPgbouncer(direct.database.url);
      pooled = await startPeerKeygate(direct, {
        DATABASE_URL: bouncer.url,
        KEYGATE_DIRECT_DATABASE_URL: direct.database.url,
        KEYGATE_SMTP_URL: smtp.url,
      });
    });
    afterAll(async () => {
      await pooled?.stop();
      await direct?.stop();
      await bouncer?.stop();
      await smtp?.stop();
    });

    it("signs up, logs in, refreshes, introspects, revokes and administers", async () => {
      const transport = createGrpcTransport({ baseUrl: pooled.url });
      const auth = createClient(AuthService, transport);
      const admin = createClient(AdminService, transport);
      const introspection = createClient(TokenIntrospectionService, transport);
      const root = { headers: { authorization: `Bearer ${direct.bootstrapped?.adminKey}` } };
      const workspaceId = direct.bootstrapped?.workspaceId as string;
      const password = "correct horse battery staple";

      const emails = Array.from({ length: 5 }, (_, i) => `bouncer-${Date.now()}-${i}@example.test`);
      // In parallel, so that transactions of different callers share server connections.
      const sessions = await Promise.all(
        emails.map(async (email) => {
          await admin.provisionUser({ email, password, workspaceId }, root);
          const res = await auth.login({ email, password, workspaceId });
          if (res.result.case !== "tokens") throw new Error("no tokens");
          return res.result.value;
        }),
      );
      for (const s of sessions) {
        const as = { headers: { authorization: `Bearer ${s.accessToken}` } };
        expect((await auth.getSession({}, as)).user?.id).toBe(s.userId);
        expect((await introspection.introspect({ token: s.accessToken }, root)).active).toBe(true);
        const next = await auth.refresh({ refreshToken: s.refreshToken });
        // Within the grace window the parent gets the same successor again.
        const again = await auth.refresh({ refreshToken: s.refreshToken });
        expect(again.tokens?.refreshToken).toBe(next.tokens?.refreshToken);
        await auth.logout({}, { headers: { authorization: `Bearer ${next.tokens?.accessToken}` } });
        expect(
          (await introspection.introspect({ token: next.tokens?.accessToken ?? "" }, root)).active,
        ).toBe(false);
      }
      const users = await admin.listUsers({ workspaceId }, root);
      expect(users.users.map((u) => u.email)).toEqual(expect.arrayContaining(emails));

      // The pooled instance hears revocations made elsewhere through its direct listener.
      const email = emails[0] as string;
      const res = await createClient(
        AuthService,
        createConnectTransport({ baseUrl: direct.url, httpVersion: "2" }),
      ).login({ email, password, workspaceId });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      const token = res.result.value.accessToken;
      expect((await introspection.introspect({ token }, root)).active).toBe(true);
      await createClient(
        AuthService,
        createConnectTransport({ baseUrl: direct.url, httpVersion: "2" }),
      ).logout({}, { headers: { authorization: `Bearer ${token}` } });
      const deadline = Date.now() + 1_000;
      while ((await introspection.introspect({ token }, root)).active) {
        if (Date.now() > deadline) throw new Error("not within a second");
        await new Promise((r) => setTimeout(r, 10));
      }
    });
  },
);
