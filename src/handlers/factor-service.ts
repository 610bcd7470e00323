import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type BeginPasskeyAuthenticationRequest,
  type BeginPasskeyRegistrationRequest,
  type ConfirmTotpRequest,
  type DeletePasskeyRequest,
  type EnrollTotpRequest,
  FactorPurpose,
  type FactorService,
  type FinishPasskeyAuthenticationRequest,
  type FinishPasskeyRegistrationRequest,
  type ListFactorsRequest,
  PasskeySchema,
  type RegenerateRecoveryCodesRequest,
  type RemoveTotpRequest,
  type RenamePasskeyRequest,
  type UpdateFactorPreferencesRequest,
  type VerifyFactorRequest,
} from "../../gen/keygate/v1/factor_service_pb.js";
import type { AuthDeps } from "../domain/deps.js";
import { factorOverview, updateFactorPreferences } from "../domain/factors/overview.js";
import {
  beginPasskeyAuthentication,
  finishPasskeyAuthentication,
} from "../domain/factors/passkey-authentication.js";
import type { PasskeyPurpose } from "../domain/factors/passkey-scope.js";
import {
  beginPasskeyRegistration,
  deletePasskey,
  finishPasskeyRegistration,
  passkeysOf,
  renamePasskey,
} from "../domain/factors/passkeys.js";
import { regenerateRecoveryCodes } from "../domain/factors/recovery-codes.js";
import { confirmTotp, enrollTotp, removeTotp } from "../domain/factors/totp.js";
import { type VerifyFactorPurpose, verifyFactor } from "../domain/factors/verify-factor.js";
import type { PasskeyRow } from "../domain/model.js";
import { maybePrincipal, meta, principal } from "./call-context.js";
import { tokensOf, tokensOrProofOf } from "./convert.js";

const _method = (m: string) => `keygate.v1.FactorService/${m}`;

const purposes: Partial<Record<FactorPurpose, PasskeyPurpose>> = {
  [FactorPurpose.PASSKEY_SIGN_IN]: "passkey_sign_in",
  [FactorPurpose.LOGIN_SECOND_STEP]: "login_second_step",
  [FactorPurpose.SENSITIVE_ACTION]: "sensitive_action",
};

/** WebAuthn options as a Struct: JSON as the browser takes it, without unset members. */
const struct = (options: object) => JSON.parse(JSON.stringify(options)) as JsonObject;

function passkeyOf(p: PasskeyRow) {
  return create(PasskeySchema, {
    id: p.id,
    name: p.name,
    createTime: timestampFromMs(Math.floor(p.created_at)),
    ...(p.last_used_at === null
      ? {}
      : { lastUseTime: timestampFromMs(Math.floor(p.last_used_at)) }),
    backedUp: p.backed_up,
    transports: [...p.transports],
  });
}

/** FactorService: translates between the API and src/domain/factors. */
export class FactorServiceHandler implements ServiceImpl<typeof FactorService> {
  constructor(private readonly deps: AuthDeps) {}

  async listFactors(_req: ListFactorsRequest, ctx: HandlerContext) {
    const caller = principal(ctx);
    const { summary, totpConfirmedAt, preferences } = await factorOverview(this.deps, caller);
    return {
      passkeys: (await passkeysOf(this.deps, caller)).map(passkeyOf),
      ...(totpConfirmedAt ? { totpCreateTime: timestampFromMs(totpConfirmedAt.getTime()) } : {}),
      recoveryCodesLeft: summary.recoveryCodesLeft,
      preferences: { emailCodeSecondStep: preferences.emailCodeSecondStep },
    };
  }

  async updateFactorPreferences(req: UpdateFactorPreferencesRequest, ctx: HandlerContext) {
    const preferences = await updateFactorPreferences(this.deps, meta(ctx), principal(ctx), {
      emailCodeSecondStep: req.emailCodeSecondStep,
    });
    return { preferences: { emailCodeSecondStep: preferences.emailCodeSecondStep } };
  }

  async enrollTotp(req: EnrollTotpRequest, ctx: HandlerContext) {
    const res = await enrollTotp(this.deps, meta(ctx), maybePrincipal(ctx), {
      pendingLoginId: req.pendingLoginId,
      actionProof: req.actionProof,
    });
    return {
      otpauthUri: res.otpauthUri,
      secret: res.secret,
      qrCodeSvg: res.qrCodeSvg,
      expireTime: timestampFromMs(res.expiresAt.getTime()),
    };
  }

  async confirmTotp(req: ConfirmTotpRequest, ctx: HandlerContext) {
    const res = await confirmTotp(this.deps, meta(ctx), maybePrincipal(ctx), {
      code: req.code,
      pendingLoginId: req.pendingLoginId,
    });
    return {
      recoveryCodes: res.recoveryCodes,
      ...(res.tokens ? { tokens: tokensOf(res.tokens) } : {}),
    };
  }

  async beginPasskeyRegistration(req: BeginPasskeyRegistrationRequest, ctx: HandlerContext) {
    const options = await beginPasskeyRegistration(this.deps, meta(ctx), maybePrincipal(ctx), req);
    return { options: struct(options) };
  }

  async finishPasskeyRegistration(req: FinishPasskeyRegistrationRequest, ctx: HandlerContext) {
    const res = await finishPasskeyRegistration(this.deps, meta(ctx), maybePrincipal(ctx), req);
    return {
      passkey: passkeyOf(res.passkey),
      recoveryCodes: [...res.recoveryCodes],
      ...(res.tokens ? { tokens: tokensOf(res.tokens) } : {}),
    };
  }

  async removeTotp(req: RemoveTotpRequest, ctx: HandlerContext) {
    await removeTotp(this.deps, meta(ctx), principal(ctx), { actionProof: req.actionProof });
    return {};
  }

  async regenerateRecoveryCodes(req: RegenerateRecoveryCodesRequest, ctx: HandlerContext) {
    const recoveryCodes = await regenerateRecoveryCodes(this.deps, meta(ctx), principal(ctx), {
      actionProof: req.actionProof,
    });
    return { recoveryCodes };
  }

  async verifyFactor(req: VerifyFactorRequest, ctx: HandlerContext) {
    const res = await verifyFactor(this.deps, meta(ctx), maybePrincipal(ctx), {
      purpose: verifyPurposes[req.purpose],
      pendingLoginId: req.pendingLoginId,
      factor:
        req.factor.case === "totpCode"
          ? { kind: "totp", code: req.factor.value }
          : req.factor.case === "recoveryCode"
            ? { kind: "recovery_code", code: req.factor.value }
            : undefined,
    });
    return tokensOrProofOf(res);
  }

  async renamePasskey(req: RenamePasskeyRequest, ctx: HandlerContext) {
    return { passkey: passkeyOf(await renamePasskey(this.deps, principal(ctx), req)) };
  }

  async deletePasskey(req: DeletePasskeyRequest, ctx: HandlerContext) {
    await deletePasskey(this.deps, meta(ctx), principal(ctx), req);
    return {};
  }

  async beginPasskeyAuthentication(req: BeginPasskeyAuthenticationRequest, ctx: HandlerContext) {
    const options = await beginPasskeyAuthentication(this.deps, meta(ctx), maybePrincipal(ctx), {
      ...req,
      purpose: purposes[req.purpose],
    });
    return { options: struct(options) };
  }

  async finishPasskeyAuthentication(req: FinishPasskeyAuthenticationRequest, ctx: HandlerContext) {
    const res = await finishPasskeyAuthentication(this.deps, meta(ctx), maybePrincipal(ctx), {
      ...req,
      purpose: purposes[req.purpose],
    });
    return tokensOrProofOf(res);
  }
}

const verifyPurposes: Partial<Record<FactorPurpose, VerifyFactorPurpose>> = {
  [FactorPurpose.LOGIN_SECOND_STEP]: "login_second_step",
  [FactorPurpose.SENSITIVE_ACTION]: "sensitive_action",
};
