-- Contributors (convention art. 2 and 6, Annexe 2): organisations and their commitments, the
-- people and scripts acting for them, and the history of every change to an entry.
-- Portable SQL, as in 0001: TEXT keys, TIMESTAMPTZ instants, lists as JSON text.

-- kind: commune | epci | departement | region | state | association | other.
-- territory: JSON array of "commune:CODE", "epci:SIREN", "departement:CODE".
-- typologies: JSON array of the typology codes it committed to maintain (Annexe 2).
ALTER TABLE organisations ADD COLUMN territory TEXT NOT NULL DEFAULT '[]';
ALTER TABLE organisations ADD COLUMN referent_name TEXT;
ALTER TABLE organisations ADD COLUMN referent_email TEXT;
ALTER TABLE organisations ADD COLUMN referent_phone TEXT;
ALTER TABLE organisations ADD COLUMN convention_start DATE;
ALTER TABLE organisations ADD COLUMN convention_end DATE;
ALTER TABLE organisations ADD COLUMN typologies TEXT NOT NULL DEFAULT '[]';

-- role: operator (no organisation) | admin | editor (of organisation_id).
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    -- argon2id, PHC string; NULL until the invitation is accepted.
    password_hash TEXT,
    role TEXT NOT NULL,
    organisation_id TEXT REFERENCES organisations (id),
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE invitations (
    -- SHA-256 of the secret the link carries: a database leak opens no account.
    token_hash TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    accepted_at TIMESTAMPTZ
);

CREATE TABLE sessions (
    -- SHA-256 of the cookie's value.
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    -- The secret forms of this session carry (CSRF).
    csrf TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    -- SHA-256 of the token, which is shown once and never stored.
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- Who started an import: "user:ID", "token:ID", or NULL for the command line.
ALTER TABLE imports ADD COLUMN started_by TEXT;

-- Every change of an entry. One row per change; `previous` holds the whole version before it
-- (restorable), `changes` each field's old and new value. A bulk import writes compact rows
-- (created: no values) so that three million entries do not write three million copies.
CREATE TABLE service_history (
    service_id TEXT NOT NULL,
    -- Sorts by time (the entries' id scheme): the primary key is also the per-entry timeline.
    id TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    -- user | token | import
    actor_kind TEXT NOT NULL,
    -- The user's, token's or import's id.
    actor_id TEXT NOT NULL,
    -- page | api | import
    via TEXT NOT NULL,
    -- created | updated | withdrawn | restored | confirmed
    action TEXT NOT NULL,
    -- JSON object: field -> {"old": value, "new": value}.
    changes TEXT,
    -- JSON object: the entry as it was before the change.
    previous TEXT,
    PRIMARY KEY (service_id, id)
);
