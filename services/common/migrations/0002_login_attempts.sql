-- Login throttling per email, for every email tried: known and unknown alike, so a lockout
-- and its timing do not reveal which emails have accounts (Cognito's "prevent user existence
-- errors"). Rows of emails not tried for a while are purged.
CREATE TABLE auth.login_attempts (
    email_normalized text PRIMARY KEY,
    -- Failures since the last success, and the lockout end.
    failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    locked_until     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_by_age ON auth.login_attempts (updated_at);

INSERT INTO auth.login_attempts (email_normalized, failures, locked_until)
SELECT email_normalized, failed_logins, locked_until FROM auth.users
WHERE failed_logins > 0 OR locked_until IS NOT NULL;

-- Kept for one release so a replica of the previous version keeps working during a rolling
-- upgrade; no longer read or written.
COMMENT ON COLUMN auth.users.failed_logins IS 'unused since 0002; see auth.login_attempts';
COMMENT ON COLUMN auth.users.locked_until IS 'unused since 0002; see auth.login_attempts';
