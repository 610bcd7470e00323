-- A user is one identity shared by every workspace they belong to.
CREATE TABLE users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 320),
  -- Case-folded form that uniqueness and lookups use.
  email_normalized text NOT NULL,
  -- NULL for users provisioned without a password.
  password_hash text,
  email_verified boolean NOT NULL DEFAULT false,
  blocked boolean NOT NULL DEFAULT false,
  metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  -- Access tokens of this user issued before this instant are dead (block, password change).
  tokens_valid_after timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_email_normalized_key UNIQUE (email_normalized)
);
