-- The change log (issue 14): one row per entry changed by a committed write, appended in the
-- write's own transaction by the triggers below, so that no writer (the API, the pages, bulk
-- updates, imports through the raw bulk writer, any writer added later) can forget it. Every
-- process that holds derived indexes applies the rows past the last sequence number it applied.
-- The data version is the last sequence number.
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL,
    -- created, changed (a field the indexes hold), touched (only the confirmation, the update
    -- time or the fields no index holds), deleted.
    kind TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX change_log_at ON change_log (at);

CREATE TRIGGER services_logged_insert AFTER INSERT ON services
BEGIN
    INSERT INTO change_log (entry_id, kind) VALUES (NEW.id, 'created');
END;

CREATE TRIGGER services_logged_update AFTER UPDATE ON services
BEGIN
    INSERT INTO change_log (entry_id, kind) VALUES (
        NEW.id,
        CASE WHEN NEW.status IS OLD.status
              AND NEW.typology_code IS OLD.typology_code
              AND NEW.name IS OLD.name
              AND NEW.description IS OLD.description
              AND NEW.street IS OLD.street
              AND NEW.postcode IS OLD.postcode
              AND NEW.city IS OLD.city
              AND NEW.insee_code IS OLD.insee_code
              AND NEW.lon IS OLD.lon
              AND NEW.lat IS OLD.lat
              AND NEW.opening_hours IS OLD.opening_hours
              AND NEW.wheelchair IS OLD.wheelchair
             THEN 'touched' ELSE 'changed' END);
END;

CREATE TRIGGER services_logged_delete AFTER DELETE ON services
BEGIN
    INSERT INTO change_log (entry_id, kind) VALUES (OLD.id, 'deleted');
END;

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
