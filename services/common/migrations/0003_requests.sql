-- Requests and the durable queue (replaces DynamoDB for the documents, SQS for the queue).
--
-- Two tables with different lives:
-- - `requests.requests` keeps every request, its JSONB payload and result, for as long as
--   the retention allows; `requests.events` is its append-only status history.
-- - `requests.jobs` holds only the requests still to run or running: a finished request's
--   job row is deleted in the transaction that finishes it. Claims scan this table alone, so
--   a million finished requests cost the hot path nothing (history lives elsewhere), and the
--   table stays small enough for autovacuum to keep up at any throughput.
CREATE SCHEMA IF NOT EXISTS requests;

CREATE TABLE requests.requests (
    -- UUID v7: time-ordered, so `ORDER BY id DESC` is "newest first" for List.
    id                uuid PRIMARY KEY,
    -- The caller's token subject (a user id, or `sa:…` for a service account).
    owner             text NOT NULL,
    kind              text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('sync', 'async')),
    status            text NOT NULL CHECK (status IN
                          ('queued', 'scheduled', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    payload           jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    idempotency_key   text,
    ordering_key      text,
    -- Executions started (job attempts); in-call retries of one execution are not counted.
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    result            jsonb,
    failure_reason    text,
    failure_message   text,
    failure_retryable boolean,
    deadline          timestamptz,
    -- The owner asked to cancel while it was running: its outcome is discarded.
    cancel_requested  boolean NOT NULL DEFAULT false,
    -- The sequence number of the last event in `requests.events`.
    last_sequence     integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- Set when the request reaches a terminal status; retention counts from here.
    finished_at       timestamptz
);
-- Idempotency: one request per (owner, key), enforced by the database, so concurrent
-- duplicates cannot both insert.
CREATE UNIQUE INDEX requests_idempotency ON requests.requests (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- List: a caller's requests, newest first.
CREATE INDEX requests_by_owner ON requests.requests (owner, id DESC);
-- The dead-letter list, newest first.
CREATE INDEX requests_dead ON requests.requests (id DESC) WHERE status = 'dead';
-- Retention: the oldest finished requests first.
CREATE INDEX requests_finished ON requests.requests (finished_at) WHERE finished_at IS NOT NULL;

-- Every status transition of a request, in order (feeds Watch and audit).
CREATE TABLE requests.events (
    request_id  uuid NOT NULL REFERENCES requests.requests (id) ON DELETE CASCADE,
    sequence    integer NOT NULL CHECK (sequence > 0),
    from_status text,
    to_status   text NOT NULL,
    attempt     integer NOT NULL DEFAULT 0,
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    PRIMARY KEY (request_id, sequence)
);

-- Live jobs only: queued, scheduled or running.
CREATE TABLE requests.jobs (
    request_id    uuid PRIMARY KEY REFERENCES requests.requests (id) ON DELETE CASCADE,
    -- Submit order; orders the requests of one ordering key.
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    kind          text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('sync', 'async')),
    state         text NOT NULL CHECK (state IN ('queued', 'scheduled', 'running')),
    -- Not claimable before this time (backoff, an open breaker).
    run_at        timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Every claim increments it, releases and postponements included: a completion names the
    -- claim it belongs to, so a worker whose lease expired cannot complete a job someone else
    -- has claimed since (fencing).
    claims        integer NOT NULL DEFAULT 0,
    claimed_by    text,
    lease_until   timestamptz,
    deadline      timestamptz,
    ordering_key  text,
    -- Waiting behind an earlier request of the same ordering key.
    blocked       boolean NOT NULL DEFAULT false,
    CHECK ((state = 'running') = (lease_until IS NOT NULL)),
    CHECK (NOT blocked OR ordering_key IS NOT NULL)
) WITH (fillfactor = 80);
-- The claim index: ready or scheduled, unblocked jobs by time.
CREATE INDEX jobs_claimable ON requests.jobs (run_at) WHERE state <> 'running' AND NOT blocked;
-- The rescuer: running jobs by lease end.
CREATE INDEX jobs_leases ON requests.jobs (lease_until) WHERE state = 'running';
-- At most one unblocked job per ordering key: the database itself guarantees that two
-- requests of one key never run at once, whatever the workers do.
CREATE UNIQUE INDEX jobs_ordering_head ON requests.jobs (ordering_key)
    WHERE ordering_key IS NOT NULL AND NOT blocked;
-- The next request of a key, when its head finishes.
CREATE INDEX jobs_ordering_next ON requests.jobs (ordering_key, seq) WHERE blocked;

-- A queue table turns over its whole content constantly: vacuum it by dead-row count, not by
-- a fraction of a table that is nearly empty, and without cost-based pauses.
ALTER TABLE requests.jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 2000
);
