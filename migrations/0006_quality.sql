-- Quality flags (issue 16): what is doubtful in an entry that is still usable (a position
-- outside the commune its source names, a phone or hours that do not read…), as a JSON list of
-- {"code", "field", "message", "value"}; NULL for a clean entry, so that the lists' « à
-- vérifier » filter and the monitoring page's share of flagged entries read a partial index.
ALTER TABLE services ADD COLUMN quality TEXT;
CREATE INDEX services_flagged ON services (source_id, insee_code) WHERE quality IS NOT NULL;

-- How many rows of each import were kept with a quality flag.
ALTER TABLE imports ADD COLUMN flagged_count BIGINT NOT NULL DEFAULT 0;
