-- A digest of the record as the source last gave it (every field as text, before validation),
-- written by imports and harvests: a re-harvest recognises an unchanged record without
-- validating it again. NULL after a person's write or for entries written before: those are
-- validated and compared by content, as before, and get their digest then.
ALTER TABLE services ADD COLUMN source_digest TEXT;
