-- Keys that sign access tokens. Deployment-wide, not tenant-owned: every workspace's tokens
-- are signed by the active key and verified against one JWKS.
--
-- Life of a key: 'next' (published in the JWKS, not signing yet, so verifiers that cache the
-- JWKS know it before the first token it signs), 'active' (signs), 'retired' (no longer signs,
-- published until unpublish_after, when the last token it signed has expired).
CREATE TABLE signing_keys (
  -- RFC 7638 thumbprint of the public key; also the additional authenticated data of the
  -- encrypted private key, so a row's ciphertext cannot be moved to another kid.
  kid text PRIMARY KEY CHECK (char_length(kid) BETWEEN 1 AND 100),
  algorithm text NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA', 'RS256')),
  -- The public JWK only; a private member here would be published in the JWKS.
  public_jwk jsonb NOT NULL CHECK (
    jsonb_typeof(public_jwk) = 'object'
    AND NOT public_jwk ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']
  ),
  -- The private JWK, AES-256-GCM under the key-encryption key from configuration:
  -- version byte | 12-byte IV | 16-byte tag | ciphertext.
  private_key_encrypted bytea NOT NULL CHECK (octet_length(private_key_encrypted) > 29),
  status text NOT NULL CHECK (status IN ('next', 'active', 'retired')),
  created_at timestamptz NOT NULL DEFAULT now(),
  activated_at timestamptz,
  retired_at timestamptz,
  unpublish_after timestamptz,
  CONSTRAINT signing_keys_active_has_activated_at CHECK (
    status <> 'active' OR activated_at IS NOT NULL
  ),
  CONSTRAINT signing_keys_retired_has_dates CHECK (
    status <> 'retired' OR (retired_at IS NOT NULL AND unpublish_after IS NOT NULL)
  )
);

-- At most one key signs at a time.
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (status) WHERE status = 'active';
