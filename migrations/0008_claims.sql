-- Claims (issue 16): an organisation signs an entry that a national source harvested. The
-- entry's source becomes the organisation (its source_ref its own id); the claim keeps where it
-- came from, so that the next harvest of that source recognises the record, leaves the entry's
-- fields alone and records what the source says differently as suggestions.
CREATE TABLE claims (
    service_id TEXT PRIMARY KEY REFERENCES services (id),
    organisation_id TEXT NOT NULL REFERENCES organisations (id),
    origin_source_id TEXT NOT NULL REFERENCES organisations (id),
    origin_ref TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    -- Who claimed it, as the history names actors ("user:ID", "token:ID").
    claimed_by TEXT NOT NULL,
    -- When the source stopped listing the record: the entry is flagged, not withdrawn.
    dropped_at TIMESTAMPTZ,
    CONSTRAINT claims_origin_unique UNIQUE (origin_source_id, origin_ref)
);

-- What the source of a claimed entry says differently, field by field (the project's CSV
-- names; `position` is the point, "lon,lat"). A dismissed suggestion stays dismissed while the
-- source keeps saying the same; a new value from the source is a new suggestion.
CREATE TABLE suggestions (
    service_id TEXT NOT NULL REFERENCES services (id),
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    suggested_at TIMESTAMPTZ NOT NULL,
    dismissed_at TIMESTAMPTZ,
    PRIMARY KEY (service_id, field)
);
