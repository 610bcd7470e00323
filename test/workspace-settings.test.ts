import { readFile } from "node:fs/promises";
import path from "node:path";
import { create, toJson } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { OtpLoginMode, WorkspaceSettingsSchema } from "../gen/keygate/v1/types_pb.js";
import { failure } from "./support/failure.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

// Workspace settings as an admin sends them: over Connect JSON by hand (curl's view, where a
// misspelt field or a value the server does not know must not be taken as "unchanged"), and
// through the generated client, for every flag the table of docs/configuration.md lists.

let keygate: TestKeygate;
let adminKey: string;
let workspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
const auth = () => ({ headers: { authorization: `Bearer ${adminKey}` } });

beforeAll(async () => {
  keygate = await startTestKeygate();
  adminKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  admin = createClient(
    AdminService,
    createConnectTransport({ baseUrl: keygate.url, httpVersion: "1.1" }),
  );
});
afterAll(async () => {
  await keygate?.stop();
});

interface ConnectJsonError {
  code: string;
  message: string;
  details?: { type: string; debug?: { fieldViolations?: { field: string }[] } }[];
}

async function post(method: string, body: unknown) {
  const res = await fetch(`${keygate.url}/keygate.v1.AdminService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${adminKey}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The fields a Connect JSON error's google.rpc.BadRequest names. */
function violatedFields(body: unknown): string[] {
  const details = (body as ConnectJsonError).details ?? [];
  return details
    .filter((d) => d.type === "google.rpc.BadRequest")
    .flatMap((d) => d.debug?.fieldViolations ?? [])
    .map((v) => v.field);
}

async function settingsNow() {
  return (await admin.getWorkspace({ workspaceId }, auth())).settings;
}

describe("UpdateWorkspaceSettings over Connect JSON", () => {
  it("refuses a value the enum does not have, naming the field, and changes nothing", async () => {
    const res = await post("UpdateWorkspaceSettings", {
      workspaceId,
      settings: { otpLogin: "required" },
    });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(violatedFields(res.body)).toEqual(["settings.otp_login"]);
    expect(String(res.body.message)).toContain("OTP_LOGIN_MODE_REQUIRED");
    expect((await settingsNow())?.otpLogin).toBe(OtpLoginMode.OFF);
  });

  it("refuses a misspelt field, naming it", async () => {
    const res = await post("UpdateWorkspaceSettings", {
      workspaceId,
      settings: { requireEmailVerfication: true },
    });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(violatedFields(res.body)).toEqual(["settings.requireEmailVerfication"]);
    expect((await settingsNow())?.requireEmailVerification).toBe(false);
  });

  it("refuses an unknown top-level field of the request too", async () => {
    const res = await post("UpdateWorkspaceSettings", { workspaceId, setings: { signup: false } });
    expect(res.status).toBe(400);
    expect(violatedFields(res.body)).toEqual(["setings"]);
    expect((await settingsNow())?.signup).toBe(true);
  });

  it("refuses an unknown field in CreateWorkspace's settings", async () => {
    const res = await post("CreateWorkspace", {
      name: "Strict",
      slug: "strict-settings",
      settings: { otpLogn: "OTP_LOGIN_MODE_REQUIRED" },
    });
    expect(res.status).toBe(400);
    expect(violatedFields(res.body)).toEqual(["settings.otpLogn"]);
    const listed = await admin.listWorkspaces({ slugPrefix: "strict-settings" }, auth());
    expect(listed.workspaces).toEqual([]);
  });

  it("takes the values the flags table gives, and answers them the same way", async () => {
    const res = await post("UpdateWorkspaceSettings", {
      workspaceId,
      settings: {
        otpLogin: "OTP_LOGIN_MODE_OPTIONAL",
        emailVerification: "EMAIL_VERIFICATION_MODE_LINK",
        passwordReset: "PASSWORD_RESET_MODE_CODE",
        otpTtlSeconds: 120,
        actionProofRequired: true,
        rateLimits: { login_ip: { limit: 20, windowSeconds: 600 } },
      },
    });
    expect(res.status).toBe(200);
    expect(res.body.settings).toMatchObject({
      otpLogin: "OTP_LOGIN_MODE_OPTIONAL",
      emailVerification: "EMAIL_VERIFICATION_MODE_LINK",
      passwordReset: "PASSWORD_RESET_MODE_CODE",
      otpTtlSeconds: 120,
      actionProofRequired: true,
      rateLimits: { login_ip: { limit: 20, windowSeconds: 600 } },
    });
    const reset = await post("UpdateWorkspaceSettings", {
      workspaceId,
      resetMask:
        "otpLogin,emailVerification,passwordReset,otpTtlSeconds,actionProofRequired,rateLimits",
    });
    expect(reset.status).toBe(200);
    expect(reset.body.settings).toMatchObject({
      otpLogin: "OTP_LOGIN_MODE_OFF",
      otpTtlSeconds: 300,
      actionProofRequired: false,
    });
    expect((reset.body.settings as Record<string, unknown>).rateLimits).toBeUndefined();
  });

  it("names the part of a rate limit that is out of range", async () => {
    const res = await post("UpdateWorkspaceSettings", {
      workspaceId,
      settings: { rateLimits: { login_ip: { limit: 0, windowSeconds: 60 } } },
    });
    expect(res.status).toBe(400);
    expect(violatedFields(res.body)).toEqual(["settings.rate_limits.login_ip.limit"]);
  });
});

describe("Connect JSON elsewhere", () => {
  it("refuses a misspelt field of any RPC, and the call is not made", async () => {
    const res = await fetch(`${keygate.url}/keygate.v1.AuthService/SignUp`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-workspace-id": workspaceId },
      body: JSON.stringify({ email: "typo@example.test", pasword: "correct horse battery" }),
    });
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(violatedFields(body)).toEqual(["pasword"]);
    const users = await admin.listUsers({ emailPrefix: "typo@" }, auth());
    expect(users.users).toEqual([]);
  });
});

describe("UpdateWorkspaceSettings through the generated client", () => {
  it("sets and resets otp_ttl_seconds, action_proof_required and rate_limits", async () => {
    const set = await admin.updateWorkspaceSettings(
      {
        workspaceId,
        settings: {
          otpTtlSeconds: 90,
          actionProofRequired: true,
          rateLimits: { otp_send_address: { limit: 5, windowSeconds: 300 } },
        },
      },
      auth(),
    );
    expect(set.settings?.otpTtlSeconds).toBe(90);
    expect(set.settings?.actionProofRequired).toBe(true);
    expect(set.settings?.rateLimits.otp_send_address).toMatchObject({
      limit: 5,
      windowSeconds: 300,
    });
    const read = await settingsNow();
    expect(read?.otpTtlSeconds).toBe(90);
    expect(read?.rateLimits.otp_send_address?.limit).toBe(5);

    const reset = await admin.updateWorkspaceSettings(
      {
        workspaceId,
        resetMask: create(FieldMaskSchema, {
          paths: ["otp_ttl_seconds", "action_proof_required", "rate_limits"],
        }),
      },
      auth(),
    );
    expect(reset.settings?.otpTtlSeconds).toBe(300);
    expect(reset.settings?.actionProofRequired).toBe(false);
    expect(reset.settings?.rateLimits).toEqual({});
  });

  it("applies a workspace's rate limit set through the API", async () => {
    const { workspace } = await admin.createWorkspace(
      { name: "Limited", slug: "limited-signups" },
      auth(),
    );
    const limited = workspace?.id as string;
    await admin.updateWorkspaceSettings(
      {
        workspaceId: limited,
        settings: { rateLimits: { signup_ip: { limit: 1, windowSeconds: 3600 } } },
      },
      auth(),
    );
    const signUp = (email: string) =>
      fetch(`${keygate.url}/keygate.v1.AuthService/SignUp`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-workspace-id": limited },
        body: JSON.stringify({ email, password: "correct horse battery staple" }),
      });
    expect((await signUp("first-limited@example.test")).status).toBe(200);
    const second = await signUp("second-limited@example.test");
    expect(second.status).toBe(429);
    expect(((await second.json()) as { code: string }).code).toBe("resource_exhausted");
  });

  it("refuses the deployment-wide limit and unknown limit names, over gRPC as well", async () => {
    const grpc = createClient(AdminService, createGrpcTransport({ baseUrl: keygate.url }));
    for (const name of ["deployment_ip", "login_everything"]) {
      const error = await failure(
        grpc.updateWorkspaceSettings(
          { workspaceId, settings: { rateLimits: { [name]: { limit: 5, windowSeconds: 60 } } } },
          auth(),
        ),
      );
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.fields.join()).toContain("settings.rate_limits");
    }
    expect((await settingsNow())?.rateLimits).toEqual({});
  });

  it("refuses an OTP lifetime above ten minutes", async () => {
    const error = await failure(
      admin.updateWorkspaceSettings({ workspaceId, settings: { otpTtlSeconds: 601 } }, auth()),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.fields).toEqual(["settings.otp_ttl_seconds"]);
  });
});

describe("the table of workspace flags in docs/configuration.md", () => {
  async function table() {
    const doc = await readFile(
      path.resolve(import.meta.dirname, "../docs/configuration.md"),
      "utf8",
    );
    const start = doc.indexOf("\n## Workspace capability flags\n");
    expect(start).toBeGreaterThan(-1);
    const end = doc.indexOf("\n## ", start + 1);
    const section = doc.slice(start, end === -1 ? undefined : end);
    return [...section.matchAll(/^\| `([a-z_]+)` \| ([^|]+) \| (.+) \|$/gm)].map((m) => ({
      flag: m[1] as string,
      builtIn: (m[2] as string).trim(),
      meaning: m[3] as string,
    }));
  }

  it("lists only flags the API takes, with the built-in values a new workspace answers", async () => {
    const rows = await table();
    expect(rows.length).toBeGreaterThan(10);
    const fields = WorkspaceSettingsSchema.fields;
    expect(rows.map((r) => r.flag).sort()).toEqual(fields.map((f) => f.name).sort());
    const { settings } = await admin.createWorkspace(
      { name: "Defaults", slug: "readme-defaults" },
      auth(),
    );
    const answered = toJson(WorkspaceSettingsSchema, settings ?? create(WorkspaceSettingsSchema), {
      alwaysEmitImplicit: true,
    }) as Record<string, unknown>;
    for (const row of rows) {
      const field = fields.find((f) => f.name === row.flag);
      const builtIn = /^`([^`]+)`/.exec(row.builtIn)?.[1];
      if (!field || builtIn === undefined) continue; // "none"
      expect([row.flag, String(answered[field.jsonName])]).toEqual([row.flag, builtIn]);
    }
  });

  it("gives enum values the API takes, each read back as written", async () => {
    for (const row of await table()) {
      const field = WorkspaceSettingsSchema.fields.find((f) => f.name === row.flag);
      if (field?.fieldKind !== "enum") continue;
      const values = [...row.meaning.matchAll(/`([A-Z][A-Z_]+)`/g)].map((m) => m[1] as string);
      expect(values.length).toBeGreaterThan(1);
      for (const value of values) {
        const res = await post("UpdateWorkspaceSettings", {
          workspaceId,
          settings: { [field.jsonName]: value },
        });
        expect([row.flag, res.status]).toEqual([row.flag, 200]);
        expect((res.body.settings as Record<string, unknown>)[field.jsonName]).toBe(value);
      }
      await post("UpdateWorkspaceSettings", { workspaceId, resetMask: field.jsonName });
    }
  });
});
