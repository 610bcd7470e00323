/**
 * A refusal in the protocol's own terms (RFC 6749 section 5.2, OpenID Connect Core 3.1.2.6):
 * an error code for the client, a description for its developer, and the HTTP status.
 */
export class OAuthProtocolError extends Error {
  constructor(
    readonly error: string,
    readonly description: string,
    readonly status = 400,
  ) {
    super(description);
  }
}
