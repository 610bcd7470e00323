/**
 * keygate/verify: verify Keygate access tokens inside a Node service, locally, with
 * revocations pushed by Keygate (WatchRevocations). See docs/protecting-a-service.md.
 */
export { keygateCallerKey, keygateClientKey, keygateInterceptor } from "./connect.js";
export {
  type KeygateRequest,
  keygateMiddleware,
  protectedResourceMetadata,
  protectedResourceMetadataHandler,
  protectedResourceMetadataUrl,
} from "./http.js";
export {
  type VerifiedCaller,
  type VerifiedClient,
  type VerifierOptions,
  VerifyError,
  type VerifyErrorReason,
  type VerifyOptions,
} from "./options.js";
export { createVerifier, Verifier } from "./verifier.js";
