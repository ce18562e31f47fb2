-- Proximités schema. Portable SQL: SQLite today, PostgreSQL tomorrow.
-- Rules: TEXT keys, DOUBLE PRECISION coordinates, BOOLEAN flags, TIMESTAMPTZ instants
-- (SQLite stores them as ISO-8601 text), lists as JSON text, no engine-specific functions.

CREATE TABLE themes (
    code TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    label_fr TEXT NOT NULL,
    label_en TEXT NOT NULL
);

CREATE TABLE typology_groups (
    code TEXT PRIMARY KEY,
    theme_code TEXT NOT NULL REFERENCES themes (code),
    parent_code TEXT REFERENCES typology_groups (code),
    position INTEGER NOT NULL,
    label_fr TEXT NOT NULL,
    label_en TEXT NOT NULL
);

CREATE TABLE typologies (
    code TEXT PRIMARY KEY,
    theme_code TEXT NOT NULL REFERENCES themes (code),
    group_code TEXT NOT NULL REFERENCES typology_groups (code),
    position INTEGER NOT NULL,
    label_fr TEXT NOT NULL,
    label_en TEXT NOT NULL,
    synonyms TEXT NOT NULL,
    pivot_codes TEXT NOT NULL,
    bpe_codes TEXT NOT NULL,
    note TEXT,
    retired BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE regions (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE departements (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    region_code TEXT NOT NULL REFERENCES regions (code)
);

CREATE TABLE epcis (
    siren TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL
);

CREATE TABLE communes (
    insee_code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    departement_code TEXT NOT NULL REFERENCES departements (code),
    region_code TEXT NOT NULL REFERENCES regions (code),
    epci_siren TEXT REFERENCES epcis (siren),
    population BIGINT NOT NULL,
    postcodes TEXT NOT NULL,
    centroid_lon DOUBLE PRECISION NOT NULL,
    centroid_lat DOUBLE PRECISION NOT NULL,
    min_lon DOUBLE PRECISION NOT NULL,
    min_lat DOUBLE PRECISION NOT NULL,
    max_lon DOUBLE PRECISION NOT NULL,
    max_lat DOUBLE PRECISION NOT NULL,
    -- GeoJSON geometry (Polygon or MultiPolygon, WGS84), when boundaries were loaded.
    boundary TEXT
);

CREATE INDEX communes_departement ON communes (departement_code);
CREATE INDEX communes_epci ON communes (epci_siren);

-- The bodies that contribute entries (convention art. 2: data is shown under their name).
CREATE TABLE organisations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    siren TEXT,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE services (
    id TEXT PRIMARY KEY,
    typology_code TEXT NOT NULL REFERENCES typologies (code),
    name TEXT NOT NULL,
    description TEXT,
    street TEXT,
    postcode TEXT,
    city TEXT,
    insee_code TEXT NOT NULL REFERENCES communes (insee_code),
    lon DOUBLE PRECISION NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    -- JSON array of E.164 numbers.
    phones TEXT NOT NULL,
    email TEXT,
    website TEXT,
    -- Normalised OpenStreetMap opening_hours.
    opening_hours TEXT,
    -- JSON array of {"from": date, "to": date, "reason": text}.
    closures TEXT NOT NULL,
    wheelchair TEXT NOT NULL,
    wheelchair_note TEXT,
    source_id TEXT NOT NULL REFERENCES organisations (id),
    source_ref TEXT NOT NULL,
    status TEXT NOT NULL,
    verified_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    -- Digest of the content fields: lets an import tell "updated" from "unchanged" without reading rows back.
    content_hash TEXT NOT NULL,
    CONSTRAINT services_source_ref_unique UNIQUE (source_id, source_ref)
);

-- Access paths in SQL: by id and by (source, source_ref). Filtering by typology, territory or
-- place goes through the in-memory indexes derived from this table, so no secondary index
-- slows every write down.

-- One row per import run, kept as the import journal.
CREATE TABLE imports (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES organisations (id),
    file_name TEXT NOT NULL,
    format TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    created_count BIGINT NOT NULL,
    updated_count BIGINT NOT NULL,
    unchanged_count BIGINT NOT NULL,
    rejected_count BIGINT NOT NULL
);

-- Small key/value facts about this instance (data version, taxonomy digest, demo loaded).
CREATE TABLE instance_facts (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
