import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type {
  OtpService,
  SendOtpRequest,
  VerifyOtpRequest,
} from "../../gen/keygate/v1/otp_service_pb.js";
import { OtpPurpose } from "../../gen/keygate/v1/types_pb.js";
import type { AuthDeps } from "../domain/deps.js";
import { type OtpPurpose as DomainPurpose, sendOtp, verifyOtp } from "../domain/otp.js";
import { maybePrincipal, meta } from "./call-context.js";
import { actionProofOf, pendingLoginOf, tokensOf } from "./convert.js";

const purposes: Partial<Record<OtpPurpose, DomainPurpose>> = {
  [OtpPurpose.LOGIN_SECOND_STEP]: "login_second_step",
  [OtpPurpose.PASSWORDLESS_SIGN_IN]: "passwordless_sign_in",
  [OtpPurpose.EMAIL_VERIFICATION]: "email_verification",
  [OtpPurpose.SENSITIVE_ACTION]: "sensitive_action",
};

/** OtpService: translates between the API and src/domain/otp.ts. */
export class OtpServiceHandler implements ServiceImpl<typeof OtpService> {
  constructor(private readonly deps: AuthDeps) {}

  async sendOtp(req: SendOtpRequest, ctx: HandlerContext) {
    const res = await sendOtp(this.deps, meta(ctx), maybePrincipal(ctx), {
      ...req,
      purpose: purposes[req.purpose],
    });
    return { expireTime: timestampFromMs(res.expiresAt.getTime()) };
  }

  async verifyOtp(req: VerifyOtpRequest, ctx: HandlerContext) {
    const res = await verifyOtp(this.deps, meta(ctx), maybePrincipal(ctx), {
      ...req,
      purpose: purposes[req.purpose],
    });
    switch (res.kind) {
      case "tokens":
        return { result: { case: "tokens" as const, value: tokensOf(res.tokens) } };
      case "pending":
        return { result: { case: "pendingLogin" as const, value: pendingLoginOf(res.pending) } };
      case "email_verified":
        return { result: { case: "emailVerified" as const, value: true } };
      case "action_proof":
        return { result: { case: "actionProof" as const, value: actionProofOf(res) } };
    }
  }
}
