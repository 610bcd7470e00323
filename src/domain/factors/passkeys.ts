import { randomBytes } from "node:crypto";
import {
  generateRegistrationOptions,
  type PublicKeyCredentialCreationOptionsJSON,
  verifyRegistrationResponse,
} from "@simplewebauthn/server";
import type { WorkspaceSettings } from "../../config.js";
import { withTenant } from "../../db/with-tenant.js";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnauthenticatedError,
} from "../../errors.js";
import { factorSummary } from "../../repositories/factors.js";
import {
  ensurePasskeyUserHandle,
  findMembership,
  lockMembershipForFactorChange,
} from "../../repositories/memberships.js";
import {
  deletePasskey as deletePasskeyRow,
  findPasskeyByCredentialId,
  insertPasskey,
  listPasskeys,
  type PasskeyRow,
  renamePasskey as renamePasskeyRow,
} from "../../repositories/passkeys.js";
import { deleteRecoveryCodes } from "../../repositories/recovery-codes.js";
import { findUserById, type UserRow } from "../../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../../repositories/workspaces.js";
import { consumeActionProof } from "../action-proofs.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { noticeFactorChange } from "../factor-notice.js";
import {
  endSessionsOpenedWithoutFactor,
  finishPendingLogin,
  mfaRequired,
  tokensAfterFactor,
} from "../second-step.js";
import type { IssuedTokens } from "../sessions.js";
import { effectiveSettings } from "../settings.js";
import { Violations } from "../validate.js";
import { enrollmentCaller } from "./enrollment.js";
import { issueRecoveryCodes } from "./recovery-codes.js";
import {
  challengeTtlMs,
  descriptorsOf,
  methodOf,
  newChallenge,
  registrationOf,
  spendChallenge,
  usablePublicKey,
} from "./webauthn.js";

/**
 * Passkeys of a membership: registration (signed in, or the enrollment step of a login), the
 * list, renaming and deletion. Sign-in and other checks with a passkey are in
 * passkey-authentication.ts.
 */

/** Who registers: the signed-in member, or the member of an enrollment pending login. */
interface Registrant {
  readonly workspace: WorkspaceRow;
  readonly settings: WorkspaceSettings;
  readonly user: UserRow;
  readonly pendingLoginId: string | null;
  readonly sessionId: string | null;
}

const unauthenticated = () =>
  new UnauthenticatedError("UNAUTHENTICATED", "send `authorization: Bearer <access token>`");

/** The member a passkey is registered for: the one factor enrollments share (enrollment.ts). */
async function registrant(
  deps: AuthDeps,
  principal: Principal | undefined,
  pendingLoginId: string,
): Promise<Registrant> {
  const caller = await enrollmentCaller(deps, principal, pendingLoginId);
  return {
    workspace: caller.workspace,
    settings: caller.settings,
    user: caller.user,
    pendingLoginId: caller.pending?.id ?? null,
    sessionId: caller.principal?.sessionId ?? null,
  };
}

/** BeginPasskeyRegistration: creation options for a discoverable credential of the member. */
export async function beginPasskeyRegistration(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: { pendingLoginId: string; actionProof: string },
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const who = await registrant(deps, principal, input.pendingLoginId);
  // Bounded per client, as the authentication challenges are.
  await deps.limiter.hit(null, [["passkey_challenge_ip", meta.ipAddress ?? "unknown"]]);
  if (principal && who.pendingLoginId === null && who.settings.action_proof_required) {
    await consumeActionProof(deps, principal, input.actionProof);
  }
  const userVerification = who.settings.passwordless_only ? "required" : "preferred";
  return withTenant(deps.pool, who.workspace.id, async (tx) => {
    const handle = await ensurePasskeyUserHandle(
      tx,
      who.workspace.id,
      who.user.id,
      randomBytes(32),
    );
    if (!handle) throw unauthenticated();
    const existing = await listPasskeys(tx, who.workspace.id, who.user.id);
    const challenge = newChallenge(deps, {
      workspaceId: who.workspace.id,
      userId: who.user.id,
      pendingLoginId: who.pendingLoginId,
      purpose: "registration",
      userVerification,
    });
    return generateRegistrationOptions({
      rpName: who.workspace.name,
      rpID: deps.settings.webauthn.rpId,
      // The membership's own random handle: never the account id, and different in every
      // workspace, so that no two workspaces can link their passkeys to one person.
      userID: new Uint8Array(handle),
      userName: who.user.email,
      userDisplayName: who.user.email,
      challenge: challenge.bytes,
      timeout: challengeTtlMs,
      attestationType: "none",
      excludeCredentials: descriptorsOf(existing),
      authenticatorSelection: { residentKey: "required", userVerification },
      // EdDSA, ES256, RS256: what authenticators make, without the library's experimental
      // ML-DSA default.
      supportedAlgorithmIDs: [-8, -7, -257],
    });
  });
}

function nameOf(field: string, name: string): string {
  const v = new Violations();
  if (name.trim() !== "") v.displayName(field, name, 100);
  v.throwIfAny();
  return name.trim();
}

export interface RegisteredPasskey {
  readonly passkey: PasskeyRow;
  readonly recoveryCodes: readonly string[];
  readonly tokens: IssuedTokens | undefined;
}

/**
 * FinishPasskeyRegistration: checks the attestation (origin, RP ID, the challenge once) and
 * stores the credential. The membership's first factor also answers its ten recovery codes.
 */
export async function finishPasskeyRegistration(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: { credential?: unknown; name: string; pendingLoginId: string },
): Promise<RegisteredPasskey> {
  const { credential, challenge } = registrationOf(input.credential);
  const name = nameOf("name", input.name);
  const who = await registrant(deps, principal, input.pendingLoginId);
  const refused = () =>
    new InvalidArgumentError(
      [{ field: "credential", description: "the authenticator's answer did not check out" }],
      "PASSKEY_INVALID",
      "the passkey could not be verified",
    );
  // Every refusal of the answer is the same INVALID_ARGUMENT, the challenge's included.
  const spent = await withTenant(deps.pool, who.workspace.id, (tx) =>
    spendChallenge(tx, deps, {
      workspaceId: who.workspace.id,
      purpose: "registration",
      challenge,
      userId: who.user.id,
      pendingLoginId: who.pendingLoginId,
    }),
  ).catch((error: unknown) => {
    throw error instanceof UnauthenticatedError ? refused() : error;
  });
  let info: Awaited<ReturnType<typeof verifyRegistrationResponse>>["registrationInfo"];
  try {
    const r = await verifyRegistrationResponse({
      response: credential,
      expectedChallenge: challenge,
      expectedOrigin: [...deps.settings.webauthn.origins],
      expectedRPID: deps.settings.webauthn.rpId,
      requireUserVerification: spent.userVerification === "required",
    });
    info = r.verified ? r.registrationInfo : undefined;
  } catch {
    info = undefined;
  }
  // The credential the browser names is the one the authenticator made, and its key can
  // verify the assertions to come.
  if (
    !info ||
    credential.id !== credential.rawId ||
    info.credential.id !== credential.rawId ||
    !usablePublicKey(info.credential.publicKey)
  )
    throw refused();
  const registration = info;
  const outcome = await withTenant(deps.pool, who.workspace.id, async (tx) => {
    if (!(await lockMembershipForFactorChange(tx, who.workspace.id, who.user.id)))
      throw unauthenticated();
    const before = await factorSummary(tx, who.workspace.id, who.user.id);
    const count = before.passkeys;
    const row = await insertPasskey(tx, {
      workspaceId: who.workspace.id,
      userId: who.user.id,
      credentialId: Buffer.from(registration.credential.id, "base64url"),
      publicKey: Buffer.from(registration.credential.publicKey),
      signCount: registration.credential.counter,
      transports: credential.response.transports ?? [],
      backedUp: registration.credentialBackedUp,
      deviceType: registration.credentialDeviceType,
      name:
        name ||
        `${registration.credentialBackedUp ? "Synced passkey" : "Device passkey"} ${count + 1}`,
      now: deps.clock.now(),
    });
    if (!row) {
      // Already the member's own: say so. Another member's: refuse as any bad answer does, so
      // that registering tells nobody which credential ids exist.
      const held = await findPasskeyByCredentialId(
        tx,
        who.workspace.id,
        Buffer.from(registration.credential.id, "base64url"),
      );
      if (held?.user_id !== who.user.id) throw refused();
      throw new AlreadyExistsError("this passkey is already registered", "credential");
    }
    const first = !before.totp && before.passkeys === 0;
    const recoveryCodes = first
      ? await issueRecoveryCodes(tx, deps, { workspaceId: who.workspace.id, userId: who.user.id })
      : [];
    await noticeFactorChange(tx, deps, meta, {
      workspace: who.workspace,
      user: who.user,
      change: "passkey_added",
      sessionId: who.sessionId,
      details: {
        passkey_id: row.id,
        backed_up: row.backed_up,
        recovery_codes: recoveryCodes.length,
      },
    });
    if (!who.pendingLoginId) {
      if (first) {
        await endSessionsOpenedWithoutFactor(tx, deps, {
          workspaceId: who.workspace.id,
          userId: who.user.id,
          keepSessionId: who.sessionId,
        });
      }
      return { row, recoveryCodes, draft: undefined };
    }
    const draft = await finishPendingLogin(tx, deps, meta, {
      pending: { id: who.pendingLoginId, workspace_id: who.workspace.id, user_id: who.user.id },
      step: "enroll",
      method: methodOf(row.backed_up),
      verified: registration.userVerified,
      settings: who.settings,
      details: { passkey_id: row.id },
    });
    if (!draft) throw new NotFoundError("pending login not found or expired");
    // After the pending login is finished, so that it is not among what ends.
    if (first) {
      await endSessionsOpenedWithoutFactor(tx, deps, {
        workspaceId: who.workspace.id,
        userId: who.user.id,
        keepSessionId: draft.sessionId,
      });
    }
    return { row, recoveryCodes, draft };
  });
  deps.mail.wake();
  if (outcome.recoveryCodes.length > 0) await deps.revocations.changed();
  return {
    passkey: outcome.row,
    recoveryCodes: outcome.recoveryCodes,
    tokens: outcome.draft ? await tokensAfterFactor(deps, outcome.draft) : undefined,
  };
}

/** ListFactors' passkeys: the caller's in the current workspace. */
export function passkeysOf(deps: AuthDeps, principal: Principal): Promise<readonly PasskeyRow[]> {
  return withTenant(deps.pool, principal.workspaceId, (tx) =>
    listPasskeys(tx, principal.workspaceId, principal.userId),
  );
}

const passkeyNotFound = () => new NotFoundError("passkey not found");

/** RenamePasskey: one of the caller's own, in the current workspace. */
export async function renamePasskey(
  deps: AuthDeps,
  principal: Principal,
  input: { passkeyId: string; name: string },
): Promise<PasskeyRow> {
  new Violations()
    .required("passkey_id", input.passkeyId, 64)
    .uuid("passkey_id", input.passkeyId)
    .displayName("name", input.name, 100)
    .throwIfAny();
  const row = await withTenant(deps.pool, principal.workspaceId, (tx) =>
    renamePasskeyRow(tx, {
      workspaceId: principal.workspaceId,
      userId: principal.userId,
      id: input.passkeyId,
      name: input.name.trim(),
    }),
  );
  if (!row) throw passkeyNotFound();
  return row;
}

/**
 * DeletePasskey, with an action proof: the passkey stops working at once. Where the
 * workspace requires a factor of this member, the last one (counting the authenticator app)
 * stays.
 */
export async function deletePasskey(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  input: { passkeyId: string; actionProof: string },
): Promise<void> {
  new Violations()
    .required("passkey_id", input.passkeyId, 64)
    .uuid("passkey_id", input.passkeyId)
    .throwIfAny();
  await consumeActionProof(deps, principal, input.actionProof, "factor");
  const workspace = await findWorkspaceById(deps.pool, principal.workspaceId);
  if (!workspace) throw unauthenticated();
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  await withTenant(deps.pool, workspace.id, async (tx) => {
    if (!(await lockMembershipForFactorChange(tx, workspace.id, principal.userId)))
      throw unauthenticated();
    const membership = await findMembership(tx, workspace.id, principal.userId);
    const user = await findUserById(tx, principal.userId);
    if (!membership || !user) throw unauthenticated();
    const mine = await listPasskeys(tx, workspace.id, principal.userId);
    if (!mine.some((p) => p.id === input.passkeyId)) throw passkeyNotFound();
    const have = await factorSummary(tx, workspace.id, principal.userId);
    if (mfaRequired(settings, membership.role) && !have.totp && have.passkeys <= 1) {
      throw new FailedPreconditionError(
        "FACTOR_REQUIRED",
        "this workspace requires a factor: add another before removing the last one",
      );
    }
    const gone = await deletePasskeyRow(tx, {
      workspaceId: workspace.id,
      userId: principal.userId,
      id: input.passkeyId,
    });
    if (!gone) throw passkeyNotFound();
    // Recovery codes recover a factor: with none left, they would be a factor of their own.
    if (!have.totp && have.passkeys <= 1)
      await deleteRecoveryCodes(tx, workspace.id, principal.userId);
    await noticeFactorChange(tx, deps, meta, {
      workspace,
      user,
      change: "passkey_removed",
      sessionId: principal.sessionId,
      details: { passkey_id: gone.id },
    });
  });
  deps.mail.wake();
}
