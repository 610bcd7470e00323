import { randomInt } from "node:crypto";
import type { DatabaseTransactionConnection } from "slonik";
import { opaqueHash } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { FailedPreconditionError, UnauthenticatedError } from "../../errors.js";
import { factorSummary } from "../../repositories/factors.js";
import { replaceRecoveryCodes, useRecoveryCode } from "../../repositories/recovery-codes.js";
import { findUserById } from "../../repositories/users.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { consumeActionProof } from "../action-proofs.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { noticeFactorChange } from "../factor-notice.js";

/**
 * Recovery codes: ten per membership, each `xxxx-xxxx-xx` of Crockford's base32 in lower case
 * (no i, l, o, u), 50 bits from the CSPRNG, stored only as HMAC-SHA-256 keyed with the token
 * secret and bound to the membership, shown once, single use (SECURITY.md 40).
 */

export const recoveryCodeCount = 10;

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";
const codeLength = 10;

export function newRecoveryCode(): string {
  let body = "";
  for (let i = 0; i < codeLength; i++) body += alphabet[randomInt(0, alphabet.length)];
  return `${body.slice(0, 4)}-${body.slice(4, 8)}-${body.slice(8)}`;
}

/**
 * The code as typed, in its one canonical form: case, spaces and hyphens do not matter, and
 * the letters people misread for digits read as those digits. Undefined when it cannot be a
 * recovery code at all.
 */
export function canonicalRecoveryCode(typed: string): string | undefined {
  if (typed.length > 64) return undefined;
  const body = typed.toLowerCase().replace(/[\s-]/g, "").replace(/[il]/g, "1").replace(/o/g, "0");
  if (body.length !== codeLength) return undefined;
  for (const c of body) if (!alphabet.includes(c)) return undefined;
  return body;
}

interface Member {
  readonly workspaceId: string;
  readonly userId: string;
}

function codeHash(deps: Pick<AuthDeps, "tokenSecret">, member: Member, canonical: string): Buffer {
  return opaqueHash(
    deps.tokenSecret,
    "recovery",
    `${member.workspaceId}\0${member.userId}\0${canonical}`,
  );
}

/** A new set for the membership, in the caller's transaction; the old set dies with it. */
export async function issueRecoveryCodes(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  member: Member,
): Promise<string[]> {
  const codes = Array.from({ length: recoveryCodeCount }, newRecoveryCode);
  await replaceRecoveryCodes(tx, {
    ...member,
    hashes: codes.map((c) => codeHash(deps, member, canonicalRecoveryCode(c) as string)),
    now: deps.clock.now(),
  });
  return codes;
}

/** Spends one of the membership's unused codes; false for anything else. */
export async function spendRecoveryCode(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  member: Member,
  typed: string,
): Promise<boolean> {
  const canonical = canonicalRecoveryCode(typed);
  if (!canonical) return false;
  return useRecoveryCode(tx, {
    ...member,
    hash: codeHash(deps, member, canonical),
    now: deps.clock.now(),
  });
}

const factorRequired = () =>
  new FailedPreconditionError(
    "FACTOR_REQUIRED",
    "set up an authenticator app or a passkey first: recovery codes recover a factor",
  );

/** RegenerateRecoveryCodes: ten new codes, shown once; the previous set stops working. */
export async function regenerateRecoveryCodes(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  input: { actionProof: string },
): Promise<string[]> {
  const member = { workspaceId: principal.workspaceId, userId: principal.userId };
  const hasFactor = async (tx: DatabaseTransactionConnection) => {
    const have = await factorSummary(tx, member.workspaceId, member.userId);
    return have.totp || have.passkeys > 0;
  };
  // Refused before the proof is spent, and checked again where the codes are written.
  if (!(await withTenant(deps.pool, member.workspaceId, hasFactor))) throw factorRequired();
  await consumeActionProof(deps, principal, input.actionProof, "factor");
  const codes = await withTenant(deps.pool, member.workspaceId, async (tx) => {
    if (!(await hasFactor(tx))) throw factorRequired();
    const workspace = await findWorkspaceById(tx, member.workspaceId);
    const user = await findUserById(tx, member.userId);
    if (!workspace || !user)
      throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
    const codes = await issueRecoveryCodes(tx, deps, member);
    await noticeFactorChange(tx, deps, meta, {
      workspace,
      user,
      change: "recovery_codes_generated",
      sessionId: principal.sessionId,
      details: { count: codes.length },
    });
    return codes;
  });
  deps.mail.wake();
  return codes;
}
