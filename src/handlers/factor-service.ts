import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type {
  FactorService,
  ListFactorsRequest,
  UpdateFactorPreferencesRequest,
} from "../../gen/keygate/v1/factor_service_pb.js";
import { principalKey, requestMetaKey } from "../context-keys.js";
import type { AuthDeps, Principal } from "../domain/deps.js";
import { UnauthenticatedError } from "../domain/errors.js";
import { factorOverview, updateFactorPreferences } from "../domain/factors/overview.js";

const method = (m: string) => `keygate.v1.FactorService/${m}`;

/** Methods that need an access token. */
export const factorSignedIn = new Set(
  [
    "ListFactors",
    "RemoveTotp",
    "RegenerateRecoveryCodes",
    "RenamePasskey",
    "DeletePasskey",
    "UpdateFactorPreferences",
  ].map(method),
);
/**
 * Methods that use an access token when one is sent: enrollment also works with an
 * enrollment pending login, and factor checks are public for a second step or a sign-in.
 */
export const factorSignedInOptional = new Set(
  [
    "EnrollTotp",
    "ConfirmTotp",
    "BeginPasskeyRegistration",
    "FinishPasskeyRegistration",
    "BeginPasskeyAuthentication",
    "FinishPasskeyAuthentication",
    "VerifyFactor",
  ].map(method),
);

export function principal(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (!p)
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      "send `authorization: Bearer <access token>`",
    );
  return p;
}

export const meta = (ctx: HandlerContext) => ctx.values.get(requestMetaKey);

/** FactorService: translates between the API and src/domain/factors. */
export class FactorServiceHandler implements Partial<ServiceImpl<typeof FactorService>> {
  constructor(private readonly deps: AuthDeps) {}

  async listFactors(_req: ListFactorsRequest, ctx: HandlerContext) {
    const { summary, preferences } = await factorOverview(this.deps, principal(ctx));
    return {
      passkeys: [],
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
}
