-- The W3C trace context of what queued a job (its Submit's span, or the admin's requeue),
-- so the worker's span continues that trace. NULL when the submitting process exports no
-- traces. Nullable without a default: adding them rewrites nothing and takes no lock
-- longer than the catalogue update, so it runs under live traffic.
ALTER TABLE requests.jobs
    ADD COLUMN traceparent text CHECK (octet_length(traceparent) <= 64),
    ADD COLUMN tracestate text CHECK (octet_length(tracestate) <= 512);
