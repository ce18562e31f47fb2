-- State several instances on one database share (issue 15): what one process used to keep in
-- its memory and that matters whichever instance a request lands on.

-- Attempts counted against a rate limit (failed sign-ins per account and per address, citizen
-- reports per address): one row per attempt, counted over the limit's window, so that spreading
-- attempts over the instances behind a load balancer gains nothing. Rows older than the longest
-- window are deleted as new ones come.
CREATE TABLE rate_events (
    key TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX rate_events_key ON rate_events (key, at);
CREATE INDEX rate_events_at ON rate_events (at);

-- An instance takes e-mails to send by setting this (a lease): no other instance sends them
-- until it lapses, so that each is sent once however many instances run.
ALTER TABLE outbox ADD COLUMN claimed_until TIMESTAMPTZ;

-- Printed guides to make and made: queued by the instance that received the request, rendered
-- by whichever instance takes it first (one at a time per instance), served by any.
CREATE TABLE guide_jobs (
    id TEXT PRIMARY KEY,
    -- Data version, choices and public address: a guide asked again is not made again.
    cache_key TEXT NOT NULL,
    -- Who asked (an organisation id, or 'operator'), for the per-owner bound of the queue.
    owner TEXT NOT NULL,
    -- The choices as received (JSON, the edition date made explicit) and the logo's bytes: any
    -- instance reads the entries and renders from them.
    choices TEXT NOT NULL,
    logo BLOB,
    public_url TEXT NOT NULL,
    -- queued | composing | laying_out | writing | done | failed
    stage TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    -- The instance rendering it, and until when: renewed as the render goes on; a job whose
    -- lease lapsed (its instance died) is taken again by another.
    worker TEXT,
    lease_until TIMESTAMPTZ,
    -- Renders begun: a guide whose instances keep dying under it is failed at the third.
    attempts BIGINT NOT NULL DEFAULT 0,
    finished_at TIMESTAMPTZ,
    pages BIGINT,
    entries BIGINT,
    conformance TEXT,
    conformance_note TEXT,
    render_ms BIGINT,
    pdf BLOB,
    html TEXT,
    -- The failure, as the problem details answered (JSON).
    error TEXT
);
CREATE INDEX guide_jobs_key ON guide_jobs (cache_key);
CREATE INDEX guide_jobs_stage ON guide_jobs (stage, created_at);
