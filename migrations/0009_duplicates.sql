-- Duplicates across sources (issue 16): the same service harvested from two sources (or
-- harvested and typed by a contributor) forms a group of which one entry is shown to citizens;
-- the others get the status 'duplicate' (hidden everywhere citizens look, kept, listed for the
-- operator). Each hidden entry names the entry shown in its place. Rewritten by every pass of
-- the detection (after imports and harvests, `proximites duplicates`, the operator's page).
CREATE TABLE duplicates (
    service_id TEXT PRIMARY KEY REFERENCES services (id),
    shown_id TEXT NOT NULL REFERENCES services (id),
    detected_at TIMESTAMPTZ NOT NULL
);

-- The operator's decisions, which every later pass follows: two entries that are not the same
-- service ('separated'), two that are although the detection does not see it ('merged'), and
-- an entry to show in its group whatever the precedence ('preferred', with b = a).
CREATE TABLE duplicate_decisions (
    a TEXT NOT NULL REFERENCES services (id),
    b TEXT NOT NULL REFERENCES services (id),
    decision TEXT NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL,
    decided_by TEXT NOT NULL,
    PRIMARY KEY (a, b)
);
