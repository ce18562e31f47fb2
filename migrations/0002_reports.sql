-- Citizen reports (« Signaler une erreur »): kept for the organisation responsible for the entry,
-- which works them through new → in_progress → fixed | rejected.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services (id),
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    message TEXT NOT NULL,
    email TEXT,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX reports_queue ON reports (organisation_id, status, created_at);
