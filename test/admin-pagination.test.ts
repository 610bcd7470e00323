import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

let keygate: TestKeygate;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let key: { headers: Record<string, string> };
let ws: string;

beforeAll(async () => {
  keygate = await startTestKeygate();
  ws = keygate.bootstrapped?.workspaceId as string;
  key = { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } };
  admin = createClient(
    AdminService,
    createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
  );
});
afterAll(async () => {
  await keygate?.stop();
});

describe("pagination while rows are being inserted", () => {
  it("ListUsers and ListMembers show every existing row exactly once", async () => {
    const original = new Set<string>();
    for (let i = 0; i < 25; i++) {
      const res = await admin.provisionUser(
        { email: `page-${String(i).padStart(2, "0")}@example.test`, workspaceId: ws },
        key,
      );
      original.add(res.user?.id as string);
    }
    let extra = 0;
    const insertSome = async () => {
      // New rows on both sides of the cursor: a, m and z sort before, amid and after.
      for (const prefix of ["a", "m", "z"]) {
        await admin.provisionUser(
          { email: `${prefix}-late-${++extra}@example.test`, workspaceId: ws },
          key,
        );
      }
    };

    for (const list of ["users", "members"] as const) {
      const seen: string[] = [];
      let token = "";
      do {
        const page =
          list === "users"
            ? await admin
                .listUsers({ workspaceId: ws, pageSize: 7, pageToken: token }, key)
                .then((r) => ({
                  ids: r.users.map((u) => u.id),
                  next: r.nextPageToken,
                }))
            : await admin
                .listMembers({ workspaceId: ws, pageSize: 7, pageToken: token }, key)
                .then((r) => ({
                  ids: r.memberships.map((m) => m.userId),
                  next: r.nextPageToken,
                }));
        seen.push(...page.ids);
        token = page.next;
        await insertSome();
      } while (token !== "");
      expect(new Set(seen).size, `${list}: no row twice`).toBe(seen.length);
      for (const id of original) expect(seen, `${list}: every original row`).toContain(id);
    }
  });
});
