import { generateKeyPairSync } from "node:crypto";
import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  type PublicKeyCredentialRequestOptionsJSON,
  type VerifiedAuthenticationResponse,
  verifyAuthenticationResponse,
} from "@simplewebauthn/server";
import { isoCBOR } from "@simplewebauthn/server/helpers";
import type { DatabaseTransactionConnection } from "slonik";
import { hashesEqual } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { DomainError, FailedPreconditionError, NotFoundError } from "../../errors.js";
import {
  type AssertionTarget,
  listPasskeys,
  type PasskeyUse,
  recordPasskeySignIn,
  recordPasskeyUse,
  spendChallengeForAssertion,
} from "../../repositories/passkeys.js";
import { issueActionProof } from "../action-proofs.js";
import { withMethod } from "../amr.js";
import { audit, auditEvent } from "../audit.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { guessSubject } from "../lockout.js";
import { finishPendingLogin, planSecondStep, tokensAfterFactor } from "../second-step.js";
import {
  type IssuedTokens,
  planSession,
  sessionDraft,
  signTokens,
  type TokenDraft,
} from "../sessions.js";
import { bindingOf, type Scope, type ScopeInput, scopeOf } from "./passkey-scope.js";
import {
  assertionOf,
  challengeToSpend,
  challengeTtlMs,
  descriptorsOf,
  methodOf,
  newChallenge,
  passkeyInvalid,
} from "./webauthn.js";

/**
 * Checks with a passkey: username-less sign-in (public), the second step of a login (with
 * its pending login) and the confirmation of a sensitive action (signed in). Which of them a
 * call is, and for whom, is passkey-scope.ts's.
 */

/**
 * BeginPasskeyAuthentication. For a sign-in nobody is named and no credential is listed, so
 * the answer is the same for every caller but for its random challenge.
 */
export async function beginPasskeyAuthentication(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: ScopeInput,
): Promise<PublicKeyCredentialRequestOptionsJSON> {
  const scope = await scopeOf(deps, meta, principal, input);
  // Challenges cost no row, but each is work: bounded per client, whatever workspace or caller.
  await deps.limiter.hit(null, [["passkey_challenge_ip", meta.ipAddress ?? "unknown"]]);
  let allow: ReturnType<typeof descriptorsOf> = [];
  const userId = scope.userId;
  if (userId) {
    allow = descriptorsOf(
      await withTenant(deps.pool, scope.workspace.id, (tx) =>
        listPasskeys(tx, scope.workspace.id, userId),
      ),
    );
    if (allow.length === 0) throw new NotFoundError("no passkey to check");
  }
  const challenge = newChallenge(deps, {
    ...bindingOf(scope),
    userVerification: scope.userVerification,
  });
  return generateAuthenticationOptions({
    rpID: deps.settings.webauthn.rpId,
    challenge: challenge.bytes,
    timeout: challengeTtlMs,
    allowCredentials: allow,
    userVerification: scope.userVerification,
  });
}

export type PasskeyAuthenticationResult =
  | { kind: "tokens"; tokens: IssuedTokens }
  | { kind: "action_proof"; proof: string; expiresAt: Date };

/**
 * FinishPasskeyAuthentication: the challenge once, then the assertion (origin, RP ID, user
 * verification where asked for, signature), a credential of this workspace (and of the member
 * the challenge was for), and a signature counter that moved forward. Every refusal answers
 * UNAUTHENTICATED / PASSKEY_INVALID alike and is audited; a counter that did not move forward
 * is audited as a cloned authenticator. One transaction: the challenge is spent and the
 * credential read (one statement), the assertion judged, and what it opens written: a
 * username-less sign-in's session in one more statement, once everything it depends on was
 * checked; the pending login's end or an action proof under a savepoint, so that a refusal
 * there undoes its own writes but never the spending.
 */
export async function finishPasskeyAuthentication(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: ScopeInput & { credential?: unknown },
): Promise<PasskeyAuthenticationResult> {
  const { credential, challenge } = assertionOf(input.credential);
  const scope = await scopeOf(deps, meta, principal, input);
  const ws = scope.workspace.id;
  if (scope.purpose === "passkey_sign_in") {
    await deps.limiter.hit({ id: ws, settings: scope.settings }, [
      ["login_ip", meta.ipAddress ?? "unknown"],
    ]);
  }
  const settled = await withTenant(deps.pool, ws, async (tx) => {
    const checked = await checkAssertion(tx, deps, scope, credential, challenge);
    let refusal: Refusal | undefined = checked.kind === "refused" ? checked : undefined;
    let opened: Opened | undefined;
    let error: DomainError | undefined;
    if (checked.kind === "passed") {
      try {
        opened =
          scope.purpose === "passkey_sign_in"
            ? await signIn(tx, deps, meta, scope, checked)
            : await tx.transaction((sp) => open(sp, deps, meta, scope, checked));
        if (!opened) refusal = { reason: "not_allowed", userId: checked.passkey.user_id };
      } catch (e) {
        if (!(e instanceof DomainError)) throw e;
        error = e;
      }
    }
    if (refusal) {
      await audit(tx, deps, meta, {
        type:
          refusal.type ??
          (scope.purpose === "sensitive_action" ? "factor_check_failed" : "login_failed"),
        workspaceId: ws,
        userId: refusal.userId,
        outcome: "failure",
        details: { method: "passkey", purpose: scope.purpose, reason: refusal.reason },
      });
    }
    return { refusal, opened, error };
  });
  if (settled.error) throw settled.error;
  if (settled.refusal || !settled.opened) throw passkeyInvalid();
  const opened = settled.opened;
  if (opened.kind === "action_proof") return opened;
  // A sign-in's statement cleared the failed-login count already.
  const tokens =
    opened.kind === "session"
      ? await signTokens(deps, opened.draft)
      : await tokensAfterFactor(deps, opened.draft);
  return { kind: "tokens", tokens };
}

interface Refusal {
  readonly reason: string;
  readonly userId: string | null;
  /** The audit event; login_failed or factor_check_failed by purpose unless given. */
  readonly type?: string;
}

type AuthenticationInfo = VerifiedAuthenticationResponse["authenticationInfo"];

type Checked =
  | ({ kind: "refused" } & Refusal)
  | { kind: "passed"; passkey: AssertionTarget; info: AuthenticationInfo };

type Opened =
  | { kind: "action_proof"; proof: string; expiresAt: Date }
  /** The pending login's end: its tokens clear the failed-login count. */
  | { kind: "draft"; draft: TokenDraft }
  /** A username-less sign-in's session. */
  | { kind: "session"; draft: TokenDraft };

/** An ES256 COSE public key whose private half was thrown away at start. */
const nobodysKey: Buffer = (() => {
  const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
    format: "jwk",
  });
  return Buffer.from(
    isoCBOR.encode(
      new Map<number, number | Uint8Array>([
        [1, 2],
        [3, -7],
        [-1, 1],
        [-2, Buffer.from(jwk.x as string, "base64url")],
        [-3, Buffer.from(jwk.y as string, "base64url")],
      ]) as never,
    ),
  );
})();

/** Spends the challenge and judges the assertion against the workspace's credential. */
async function checkAssertion(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  scope: Scope,
  credential: AuthenticationResponseJSON,
  challenge: string,
): Promise<Checked> {
  const ws = scope.workspace.id;
  const refused = (reason: string, userId: string | null, type?: string): Checked => ({
    kind: "refused",
    reason,
    userId,
    ...(type ? { type } : {}),
  });
  let spent: ReturnType<typeof challengeToSpend>;
  try {
    spent = challengeToSpend(deps, { ...bindingOf(scope), challenge });
  } catch {
    return refused("challenge", scope.userId);
  }
  const passkey = await spendChallengeForAssertion(tx, {
    workspaceId: ws,
    credentialId: Buffer.from(credential.rawId, "base64url"),
    challenge: spent,
  });
  if (passkey && !passkey.fresh) return refused("challenge", scope.userId);
  // The signature is checked whatever was found (against a key nobody holds when nothing
  // was), so that an unknown credential id answers as slowly as a known one with a bad
  // signature: the time of a refusal does not tell which ids exist.
  let verified: VerifiedAuthenticationResponse | undefined;
  try {
    verified = await verifyAuthenticationResponse({
      response: credential,
      expectedChallenge: challenge,
      expectedOrigin: [...deps.settings.webauthn.origins],
      expectedRPID: deps.settings.webauthn.rpId,
      // The counter is checked below, where a regression is told apart from a bad signature.
      credential: {
        id: credential.rawId,
        publicKey: new Uint8Array(passkey?.public_key ?? nobodysKey),
        counter: 0,
        transports: (passkey?.transports ?? []) as never,
      },
      requireUserVerification: scope.userVerification === "required",
    });
  } catch {
    verified = undefined;
  }
  // Another workspace's credential, even of the same account, is unknown here.
  if (!passkey) return refused("unknown_credential", scope.userId);
  if (scope.userId !== null && passkey.user_id !== scope.userId)
    return refused("other_member", scope.userId);
  if (scope.purpose === "passkey_sign_in") {
    const claimed = credential.response.userHandle;
    const handle = passkey.user_handle;
    if (!claimed || !handle || !hashesEqual(Buffer.from(claimed, "base64url"), handle))
      return refused("user_handle", passkey.user_id);
  }
  if (!verified?.verified) return refused("assertion", passkey.user_id);
  const info = verified.authenticationInfo;
  if ((info.newCounter > 0 || passkey.sign_count > 0) && info.newCounter <= passkey.sign_count) {
    return refused("counter", passkey.user_id, "passkey_clone_suspected");
  }
  return { kind: "passed", passkey, info };
}

/** What a checked assertion records of its passkey: the counter it moves to, its backup. */
const useOf = (
  workspaceId: string,
  passkey: AssertionTarget,
  info: AuthenticationInfo,
  now: Date,
): PasskeyUse => ({
  workspaceId,
  id: passkey.id,
  previousCount: passkey.sign_count,
  signCount: info.newCounter,
  backedUp: info.credentialBackedUp,
  now,
});

/**
 * What a checked assertion opens for a second step or a sensitive action; undefined when it
 * may not (anything changed meanwhile).
 */
async function open(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  scope: Scope,
  { passkey, info }: { passkey: AssertionTarget; info: AuthenticationInfo },
): Promise<Opened | undefined> {
  const ws = scope.workspace.id;
  const method = methodOf(info.credentialBackedUp);
  const moved = await recordPasskeyUse(tx, useOf(ws, passkey, info, deps.clock.now()));
  // Another assertion with this counter got there first (or the passkey was deleted).
  if (!moved) return undefined;
  if (scope.purpose === "sensitive_action") {
    return {
      kind: "action_proof",
      ...(await issueActionProof(tx, deps, ws, passkey.user_id, "factor")),
    };
  }
  if (!scope.pending) return undefined;
  const draft = await finishPendingLogin(tx, deps, meta, {
    pending: scope.pending,
    step: "factor",
    method,
    verified: info.userVerified,
    settings: scope.settings,
    details: { passkey_id: passkey.id },
  });
  return draft && { kind: "draft", draft };
}

/**
 * A username-less sign-in: through the workspace's rules like any other way in, from the
 * member and account the assertion's statement read (and share-locked); then the counter,
 * session, refresh token, audit row and the cleared failed-login count in one statement.
 * Undefined when it may not open (blocked, not active, or another assertion moved the counter
 * first).
 */
async function signIn(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  scope: Scope,
  { passkey, info }: { passkey: AssertionTarget; info: AuthenticationInfo },
): Promise<Opened | undefined> {
  const ws = scope.workspace.id;
  const userId = passkey.user_id;
  if (passkey.user_blocked || passkey.member_status !== "active") return undefined;
  if (
    scope.settings.require_email_verification &&
    !passkey.user_email_verified &&
    !passkey.member_email_verified
  ) {
    throw new FailedPreconditionError(
      "EMAIL_NOT_VERIFIED",
      "verify your email address before logging in",
    );
  }
  const method = methodOf(info.credentialBackedUp);
  const amr = withMethod([], method, info.userVerified);
  const role = passkey.member_role;
  // A verified passkey already counts as two factors, so no further step is asked for.
  const step = await planSecondStep(tx, {
    workspaceId: ws,
    user: { id: userId, otp_login_opt_in: passkey.user_otp_login_opt_in },
    role,
    settings: scope.settings,
    amr,
  });
  if (step) return undefined;
  const plan = planSession(deps, meta, {
    workspaceId: ws,
    userId,
    role,
    settings: scope.settings,
    amr,
  });
  const sessionId = await recordPasskeySignIn(tx, {
    use: useOf(ws, passkey, info, plan.session.now),
    session: plan.session,
    refreshTokenHash: plan.refreshTokenHash,
    audit: auditEvent(deps, meta, {
      type: "login_succeeded",
      workspaceId: ws,
      userId,
      outcome: "success",
      details: { method, flow: "passkey_sign_in", passkey_id: passkey.id },
    }),
    lockoutSubject: guessSubject(passkey.user_email, null),
  });
  // Another assertion with this counter got there first (or the passkey was deleted).
  if (sessionId === null) return undefined;
  return { kind: "session", draft: sessionDraft(plan, sessionId, role) };
}
