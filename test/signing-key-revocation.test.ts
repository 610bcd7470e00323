import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import {
  AdminKeyRole,
  Role,
  SigningKeyPurpose,
  SigningKeyStatus,
} from "../gen/keygate/v1/types_pb.js";
import { errorReason } from "../src/client/errors.js";
import { createVerifier, type Verifier, VerifyError } from "../src/verify/index.js";
import { usingExternalPostgres } from "./support/database.js";
import { failure } from "./support/failure.js";
import { type Provisioner, signedIn } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { until } from "./support/wait.js";

/**
 * RevokeSigningKey with two instances on one database: the revocation is made on `keygate`;
 * `peer` and a keygate/verify verifier that follows `peer`'s feed must refuse the key's
 * tokens within a second, and `peer` must stop signing with it.
 */
let keygate: TestKeygate;
let peer: TestKeygate;
let verifier: Verifier;
let rootKey: string;
let workspaceId: string;

const clients = (url: string) => {
  const transport = createConnectTransport({ baseUrl: url, httpVersion: "2" });
  return {
    admin: createClient(AdminService, transport),
    auth: createClient(AuthService, transport),
    introspection: createClient(TokenIntrospectionService, createGrpcTransport({ baseUrl: url })),
  };
};
let here: ReturnType<typeof clients>;
let there: ReturnType<typeof clients>;
let byRoot: Provisioner;
/** The users this file makes: members whose address is already verified. */
const verifiedMember = { role: Role.MEMBER, emailVerified: true };
const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** On the embedded database the peer hears of revocations by its resync only. */
const peerEnv: Record<string, string> = usingExternalPostgres
  ? {}
  : { KEYGATE_REVOCATION_RESYNC_MS: "200" };

beforeAll(async () => {
  keygate = await startTestKeygate();
  peer = await startPeerKeygate(keygate, peerEnv);
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  here = clients(keygate.url);
  there = clients(peer.url);
  byRoot = { ...here, adminKey: rootKey, workspaceId };
});
afterAll(async () => {
  await verifier?.close();
  await peer?.stop();
  await keygate?.stop();
});

const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;
const jwksKids = async (url: string) =>
  (
    (await (await fetch(`${url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] }
  ).keys.map((k) => k.kid);
const active = async (token: string) =>
  (await there.introspection.introspect({ token }, as(rootKey))).active;

describe("SECURITY.md 38: a revoked signing key is refused by every instance and verifier within a second", () => {
  it("unpublishes the key, kills its tokens everywhere, and lets their sessions refresh", async () => {
    const victim = await signedIn(byRoot, "revoke-key", verifiedMember);
    const bystander = await signedIn(byRoot, "revoke-key", verifiedMember);
    const revokedKid = kidOf(victim.accessToken);
    const { signingKey: next } = await here.admin.rotateSigningKey({}, as(rootKey));
    const nextKid = next?.kid as string;

    // The peer's key set reloads at most once a second; the verifier then fetches it once.
    await until(async () => (await jwksKids(peer.url)).includes(nextKid), 2_000);
    verifier = createVerifier({
      baseUrl: peer.url,
      adminKey: rootKey,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
    });
    await verifier.ready();
    expect((await verifier.verify(victim.accessToken)).userId).toBeDefined();
    expect(await active(victim.accessToken)).toBe(true);
    expect(await jwksKids(peer.url)).toEqual(expect.arrayContaining([revokedKid, nextKid]));
    // Not signing yet: the next key waits out the promotion delay.
    expect(kidOf((await signedIn(byRoot, "revoke-key", verifiedMember)).accessToken)).toBe(
      revokedKid,
    );

    const revoked = await here.admin.revokeSigningKey({ kid: revokedKid }, as(rootKey));
    expect(revoked.signingKey?.status).toBe(SigningKeyStatus.REVOKED);
    expect(revoked.signingKey?.revokeTime).toBeDefined();
    expect(revoked.promotedKid).toBe(nextKid);

    // At once on the instance that revoked it, within a second on the other and the verifier.
    expect(await jwksKids(keygate.url)).not.toContain(revokedKid);
    expect(
      (await here.introspection.introspect({ token: victim.accessToken }, as(rootKey))).active,
    ).toBe(false);
    const peerMs = await until(async () => !(await active(victim.accessToken)), 1_000);
    await until(async () => !(await active(bystander.accessToken)), 1_000);
    const verifierMs = await until(async () => {
      try {
        await verifier.verify(bystander.accessToken);
        return false;
      } catch (error) {
        return error instanceof VerifyError && error.reason === "revoked";
      }
    }, 1_000);
    await until(async () => !(await jwksKids(peer.url)).includes(revokedKid), 1_000);
    console.log(
      `SECURITY.md 38: revoked key refused by the peer after ${peerMs.toFixed(0)} ms, by the verifier after ${verifierMs.toFixed(0)} ms more`,
    );

    // The session is not over: a refresh on either instance gets a token of the new key,
    // which both the peer and the verifier accept.
    const refreshed = await there.auth.refresh({ refreshToken: victim.refreshToken });
    const token = refreshed.tokens?.accessToken as string;
    expect(kidOf(token)).toBe(nextKid);
    expect(await active(token)).toBe(true);
    const claims = await there.introspection.introspect({ token }, as(rootKey));
    expect((await verifier.verify(token)).sessionId).toBe(claims.sid);
    const again = await here.auth.refresh({ refreshToken: bystander.refreshToken });
    expect(kidOf(again.tokens?.accessToken as string)).toBe(nextKid);

    const listed = await there.admin.listSigningKeys({}, as(rootKey));
    expect(listed.signingKeys.find((k) => k.kid === revokedKid)?.status).toBe(
      SigningKeyStatus.REVOKED,
    );
    expect(listed.signingKeys.find((k) => k.kid === nextKid)?.status).toBe(SigningKeyStatus.ACTIVE);

    // Answered unchanged the second time.
    const twice = await there.admin.revokeSigningKey({ kid: revokedKid }, as(rootKey));
    expect(twice.signingKey?.status).toBe(SigningKeyStatus.REVOKED);
    expect(twice.promotedKid).toBe("");
  });

  it("refuses to revoke the active key when no next key can take over, and keeps it signing", async () => {
    const before = await signedIn(byRoot, "revoke-key", verifiedMember);
    const kid = kidOf(before.accessToken);
    const keys = await here.admin.listSigningKeys({}, as(rootKey));
    expect(keys.signingKeys.some((k) => k.status === SigningKeyStatus.NEXT)).toBe(false);
    const { error: refused } = await failure(here.admin.revokeSigningKey({ kid }, as(rootKey)));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(errorReason(refused)).toBe("SIGNING_KEY_ACTIVE");
    expect(await active(before.accessToken)).toBe(true);
    expect(kidOf((await signedIn(byRoot, "revoke-key", verifiedMember)).accessToken)).toBe(kid);
  });

  it("revokes a next key before it ever signs: it never becomes active", async () => {
    const { signingKey } = await here.admin.rotateSigningKey({}, as(rootKey));
    const kid = signingKey?.kid as string;
    expect(await jwksKids(keygate.url)).toContain(kid);
    const revoked = await here.admin.revokeSigningKey({ kid }, as(rootKey));
    expect(revoked.promotedKid).toBe("");
    expect(await jwksKids(keygate.url)).not.toContain(kid);
    const keys = await here.admin.listSigningKeys({}, as(rootKey));
    const active = keys.signingKeys.filter((k) => k.status === SigningKeyStatus.ACTIVE);
    // One access-token key, one ID-token key; the revoked next key is neither.
    expect(active.map((k) => k.purpose).sort()).toEqual([
      SigningKeyPurpose.ACCESS_TOKEN,
      SigningKeyPurpose.ID_TOKEN,
    ]);
    expect(active.map((k) => k.kid)).not.toContain(kid);
  });

  it("answers INVALID_ARGUMENT, NOT_FOUND and PERMISSION_DENIED deliberately", async () => {
    const { error: empty } = await failure(here.admin.revokeSigningKey({ kid: "" }, as(rootKey)));
    expect(empty.code).toBe(Code.InvalidArgument);
    expect(empty.rawMessage).toContain("kid");
    const { error: unknown } = await failure(
      here.admin.revokeSigningKey({ kid: "no-such-kid" }, as(rootKey)),
    );
    expect(unknown.code).toBe(Code.NotFound);
    const scoped = await here.admin.createAdminKey(
      { name: "workspace admin", workspaceId, role: AdminKeyRole.ADMIN },
      as(rootKey),
    );
    const keys = await here.admin.listSigningKeys({}, as(rootKey));
    const kid = keys.signingKeys[0]?.kid as string;
    const { error: denied } = await failure(
      here.admin.revokeSigningKey({ kid }, as(scoped.secret)),
    );
    expect(denied.code).toBe(Code.PermissionDenied);
    const readOnly = await here.admin.createAdminKey(
      { name: "deployment reader", role: AdminKeyRole.READ_ONLY },
      as(rootKey),
    );
    expect((await failure(here.admin.revokeSigningKey({ kid }, as(readOnly.secret)))).code).toBe(
      Code.PermissionDenied,
    );
  });
});
