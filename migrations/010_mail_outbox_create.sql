-- Transactional outbox for mail: a row is inserted in the same transaction as the state change
-- that calls for the message, so mail exists if and only if that change committed, and a
-- message that cannot be delivered yet (SMTP down, process killed) is kept and retried.
CREATE TABLE mail_outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- NULL for mail that belongs to no workspace. Deleting a workspace deletes its mail: pending
  -- messages carry codes and links for accounts that no longer exist, and delivered ones still
  -- hold the recipient address, which must go with the tenant's other personal data.
  workspace_id uuid REFERENCES workspaces (id) ON DELETE CASCADE,
  template text NOT NULL,
  recipient text NOT NULL,
  -- Subjects never contain codes or links (the template loader refuses them there), so the
  -- subject stays after delivery for support and auditing.
  subject text NOT NULL,
  -- Rendered at enqueue time; erased on delivery, since they may hold codes and links.
  body_text text,
  body_html text,
  created_at timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- Lease of the sender working on the row; a sender that died loses it when it runs out.
  locked_until timestamptz,
  sent_at timestamptz,
  -- The transport's error message of the latest failed attempt; never the body.
  last_error text,
  CONSTRAINT mail_outbox_body_until_sent CHECK (
    CASE WHEN sent_at IS NULL THEN body_text IS NOT NULL ELSE body_text IS NULL AND body_html IS NULL END
  )
);

-- The claim query: unsent rows that are due, oldest first. Delivered rows, the vast majority,
-- stay out of the index.
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at, id) WHERE sent_at IS NULL;

CREATE INDEX mail_outbox_workspace_id_idx ON mail_outbox (workspace_id);
