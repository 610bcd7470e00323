import { describe, expect, it } from "vitest";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { accessOf } from "../src/handlers/access.js";
import { keygateServices } from "../src/routes.js";

describe("the access table", () => {
  it("says who may call every method of every service served", () => {
    const unlisted: string[] = [];
    for (const service of [...keygateServices, Health]) {
      for (const method of service.methods) {
        if (accessOf(service, method.name) === undefined)
          unlisted.push(`${service.typeName}/${method.name}`);
      }
    }
    expect(unlisted).toEqual([]);
  });

  it("opens only what is meant to be open", () => {
    const open = [...keygateServices, Health].flatMap((s) =>
      s.methods
        .filter((m) => accessOf(s, m.name) === "public")
        .map((m) => `${s.typeName}/${m.name}`),
    );
    // Every AdminService and introspection method needs a caller, but the public keys; of
    // the provider's sign-in step, declining a request (looking at one reads a token when
    // one is sent: it tells that user's remembered consent).
    expect(open.filter((m) => !m.startsWith("keygate.v1.AuthService/"))).toEqual([
      "keygate.v1.OAuthService/RejectAuthorizationRequest",
      "keygate.v1.TokenIntrospectionService/GetJwks",
      "grpc.health.v1.Health/Check",
      "grpc.health.v1.Health/Watch",
    ]);
    expect(accessOf({ typeName: "keygate.v1.AdminService" }, "NoSuchMethod")).toBeUndefined();
    expect(accessOf({ typeName: "keygate.v1.AuthService" }, "GetSession")).toBe("signed_in");
    expect(accessOf({ typeName: "keygate.v1.OAuthService" }, "GetAuthorizationRequest")).toBe(
      "signed_in_optional",
    );
  });
});
