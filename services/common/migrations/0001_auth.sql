-- The auth service's tables (replaces Cognito user pools and IAM users).
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.users (
    id               uuid PRIMARY KEY,
    email            text NOT NULL,
    -- Lower-cased and trimmed: the identity used for uniqueness and lookup.
    email_normalized text NOT NULL UNIQUE,
    -- PHC string (argon2id with its parameters), so parameters can change with rehash on login.
    password_hash    text NOT NULL,
    roles            text[] NOT NULL DEFAULT ARRAY['user'],
    disabled_at      timestamptz,
    -- Brute-force protection: failures since the last success, and the lockout end.
    failed_logins    integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A login starts a session family; every refresh token of one login belongs to it.
CREATE TABLE auth.session_families (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Absolute end of the session, however often it is refreshed.
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX session_families_live_by_user ON auth.session_families (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens are stored only as SHA-256 hashes; each is spent by one refresh.
CREATE TABLE auth.refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    family_id  uuid NOT NULL REFERENCES auth.session_families (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    spent_at   timestamptz
);
CREATE INDEX refresh_tokens_by_family ON auth.refresh_tokens (family_id);

-- Machine clients (client-credentials grant). The secret is high-entropy, so a SHA-256 hash
-- is enough; argon2 is for human-chosen passwords.
CREATE TABLE auth.service_accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    client_id   text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    roles       text[] NOT NULL,
    disabled_at timestamptz,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Public halves of every signing key seen, so the JWKS keeps a retired key until the tokens
-- it signed have expired, on every replica, even once its file is gone.
CREATE TABLE auth.signing_keys (
    kid          text PRIMARY KEY,
    public_key   bytea NOT NULL CHECK (octet_length(public_key) = 32),
    activated_at timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);

-- Security events. Append-only: updates, deletes and truncation are refused.
CREATE TABLE auth.audit_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    kind    text NOT NULL,
    -- Who the event is about: a user id, `sa:<id>`, or a key id.
    subject text,
    -- Who caused it, when that is someone else (an admin).
    actor   text,
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_by_subject ON auth.audit_events (subject, at);

CREATE FUNCTION auth.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'auth.audit_events is append-only';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON auth.audit_events
    FOR EACH ROW EXECUTE FUNCTION auth.refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON auth.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION auth.refuse_audit_change();
