-- After 0003 (already applied where it shipped, hence a file of its own): an organisation's
-- withdrawal (convention art. 6), operator API tokens, review campaigns, the e-mail outbox and
-- the bulk uploads waiting for their "Appliquer". Portable SQL, as in 0001.

-- Set when the organisation left: its entries are unpublished, its people and tokens refused.
ALTER TABLE organisations ADD COLUMN withdrawn_at TIMESTAMPTZ;

-- API tokens of the platform operator have no organisation: the column loses its NOT NULL, by
-- rebuilding the table (SQLite alters no column constraint; nothing references this table).
CREATE TABLE api_tokens_next (
    id TEXT PRIMARY KEY,
    -- SHA-256 of the token, which is shown once and never stored.
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- NULL: a token of the platform operator.
    organisation_id TEXT REFERENCES organisations (id),
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
INSERT INTO api_tokens_next (id, token_hash, name, organisation_id, created_at, revoked_at, last_used_at)
    SELECT id, token_hash, name, organisation_id, created_at, revoked_at, last_used_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_next RENAME TO api_tokens;

-- An organisation's withdrawal: every entry it signed unpublished at once, in one recorded
-- operation the operator can undo (the entries it unpublished are listed).
CREATE TABLE organisation_withdrawals (
    id TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    at TIMESTAMPTZ NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    -- JSON array of the entry ids it unpublished.
    entries TEXT NOT NULL,
    undone_at TIMESTAMPTZ
);

-- Review campaigns, twice a year on dates the operator sets: during one, each entry is to
-- review, confirmed unchanged, or updated.
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    starts_on DATE NOT NULL,
    ends_on DATE NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- E-mails to send, written in the transaction of what causes them and sent by the server when
-- the SMTP server answers: nothing is lost while it is down. `dedupe_key` makes a reminder
-- enqueued once however often the scheduler runs.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);

CREATE INDEX outbox_pending ON outbox (sent_at, created_at);

-- A file uploaded from the pages, checked (dry run) and waiting for its "Appliquer": the same
-- bytes are applied as were checked. Removed once applied; older ones are cleared.
CREATE TABLE pending_uploads (
    id TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    -- The person who uploaded it: only they apply it.
    user_id TEXT NOT NULL REFERENCES users (id),
    file_name TEXT NOT NULL,
    content BLOB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
