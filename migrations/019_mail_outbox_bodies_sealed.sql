-- Outbox bodies carry codes and links. From here on they are stored sealed (AES-256-GCM under
-- a key derived from KEYGATE_KEY_ENCRYPTION_KEY, bound to the row's template and recipient),
-- so a reader of the table or of a dump finds no usable secret. body_text and body_html stay
-- for messages enqueued before this migration: they are still delivered, then erased.
ALTER TABLE mail_outbox ADD COLUMN body_sealed bytea;

-- A message the sender gave up on keeps its recipient, subject and error for support, but not
-- its body: nothing will send it any more.
ALTER TABLE mail_outbox ADD COLUMN given_up_at timestamptz;

ALTER TABLE mail_outbox DROP CONSTRAINT mail_outbox_body_until_sent;

-- Messages already given up on (the sender stops after 20 attempts) lose their bodies now.
UPDATE mail_outbox
SET given_up_at = now(), body_text = NULL, body_html = NULL
WHERE sent_at IS NULL AND attempts >= 20;

-- While a message is due it has exactly one body, in clear (from before this migration) or
-- sealed; once sent or given up it has none.
ALTER TABLE mail_outbox ADD CONSTRAINT mail_outbox_body_until_done CHECK (
  CASE WHEN sent_at IS NULL AND given_up_at IS NULL
    THEN (body_text IS NOT NULL) <> (body_sealed IS NOT NULL)
      AND (body_html IS NULL OR body_text IS NOT NULL)
    ELSE body_text IS NULL AND body_html IS NULL AND body_sealed IS NULL
  END
);
