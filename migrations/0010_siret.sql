-- The SIRET a national source gives an entry (14 digits; the Annuaire, the BPE and
-- data·inclusion publish one for many establishments): two sources giving the same SIRET for
-- the same typology describe one service, whatever their positions (see the duplicates).
-- Written by harvests and imports, not part of what a person edits.
ALTER TABLE services ADD COLUMN siret TEXT;

-- The digests of records as sources last gave them leave out the SIRET: forgotten, so that
-- the next harvest of each source reads every record once again and records its SIRET.
UPDATE services SET source_digest = NULL WHERE source_digest IS NOT NULL;
