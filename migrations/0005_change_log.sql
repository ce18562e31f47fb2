-- The change log (issue 14): one row per entry changed by a committed write, appended in the
-- write's own transaction by the only statements that write entries (services/store.rs:
-- `insert`, `overwrite`, and the bulk writer of imports). Every process that holds derived
-- indexes applies the rows past the last sequence number it applied. The data version is the
-- last sequence number. (Triggers would log raw SQL too, but they make SQLite keep a statement
-- journal for every row: an import took twice as long.)
-- `seq` is the rowid: the next one is the largest plus one, and pruning never deletes the last
-- row, so it only grows (AUTOINCREMENT would write its counter table at every row: a third of
-- an import's time).
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY,
    entry_id TEXT NOT NULL,
    -- created, changed (a field the indexes hold, or the status), touched (only what no index
    -- holds: the confirmation, phones, closures…). Entries are withdrawn, never deleted; an
    -- entry read again and found missing or unpublished leaves the indexes.
    kind TEXT NOT NULL,
    -- When it was written (RFC 3339, UTC, microseconds: ordered as text), for pruning.
    at TIMESTAMPTZ NOT NULL
);

-- Where each derived index stands (reported by the process that applies the log), so that
-- pruning keeps what some index still needs and `check` can report lags. `name` is the index's
-- directory.
CREATE TABLE index_positions (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The highest sequence number pruned: an index behind it cannot catch up from the log.
INSERT INTO instance_facts (key, value) VALUES ('log_pruned_through', '0')
    ON CONFLICT (key) DO NOTHING;
