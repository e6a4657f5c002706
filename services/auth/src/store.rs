//! Every query of the auth service. Each multi-step change runs in one transaction, and every
//! security-relevant change writes its audit event in that same transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::audit::AuditKind;
use crate::lockout::{AttemptDecision, LockoutPolicy};

/// A user row.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    /// Id.
    pub id: Uuid,
    /// Email as given.
    pub email: String,
    /// PHC hash.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Disabled since.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Signed up at.
    pub created_at: DateTime<Utc>,
}

/// A service account row.
#[derive(Debug, Clone, FromRow)]
pub struct ServiceAccountRow {
    /// Id.
    pub id: Uuid,
    /// SHA-256 of the client secret.
    pub secret_hash: Vec<u8>,
    /// Roles.
    pub roles: Vec<String>,
    /// Disabled since.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A published public key.
#[derive(Debug, Clone, FromRow)]
pub struct PublishedKey {
    /// Key id.
    pub kid: String,
    /// 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
}

/// What a refresh-token exchange found.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// Exchanged; the user to issue an access token for.
    Rotated {
        /// The user.
        user: UserRow,
        /// The new refresh token's lifetime.
        expires_in: Duration,
    },
    /// No such token, or it expired.
    Invalid,
    /// The token was spent already: its family is now revoked.
    Reused,
    /// The session was revoked or reached its absolute end.
    SessionEnded,
    /// The user is disabled.
    Disabled,
}

/// The outcome of reserving a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go ahead; `failures` are recorded (this attempt included).
    Granted {
        /// Failures recorded, this attempt included.
        failures: u32,
    },
    /// Locked until then.
    Locked(DateTime<Utc>),
}

/// Database access for the auth service.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a user; `None` when the email is taken.
    pub async fn create_user(
        &self,
        email: &str,
        normalized: &str,
        password_hash: &str,
        roles: &[String],
        actor: Option<&str>,
    ) -> Result<Option<UserRow>, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let user: Option<UserRow> = sqlx::query_as(
            "INSERT INTO auth.users (id, email, email_normalized, password_hash, roles)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email_normalized) DO NOTHING
             RETURNING id, email, password_hash, roles, disabled_at, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(normalized)
        .bind(password_hash)
        .bind(roles)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(user) = &user {
            audit(
                &mut tx,
                AuditKind::SignUp,
                Some(&user.id.to_string()),
                actor,
                serde_json::json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    /// The user with this normalized email.
    pub async fn user_by_email(&self, normalized: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, email, password_hash, roles, disabled_at, created_at
             FROM auth.users WHERE email_normalized = $1",
        )
        .bind(normalized)
        .fetch_optional(&self.pool)
        .await
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, email, password_hash, roles, disabled_at, created_at FROM auth.users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Counts this attempt on `normalized_email` as a failure before the password is
    /// checked, under the throttle row's lock, so parallel attempts see each other (see
    /// [`crate::lockout`]), and finds the user. One transaction: the upsert is the lock.
    ///
    /// With `throttle_unknown`, an email without an account is throttled exactly like one
    /// with (same statements, same answers); without it, such an email is not recorded and
    /// gets `None` at once.
    pub async fn reserve_attempt(
        &self,
        normalized_email: &str,
        policy: &LockoutPolicy,
        throttle_unknown: bool,
    ) -> Result<Option<(Option<UserRow>, Reservation)>, sqlx::Error> {
        #[derive(FromRow)]
        struct Attempt {
            failures: i32,
            locked_until: Option<DateTime<Utc>>,
            id: Option<Uuid>,
            email: Option<String>,
            password_hash: Option<String>,
            roles: Option<Vec<String>>,
            disabled_at: Option<DateTime<Utc>>,
            created_at: Option<DateTime<Utc>>,
        }
        let mut tx = appstack_db::begin(&self.pool).await?;
        // Not throttling unknown emails: no row is made (and none returned) for them.
        let row: Option<Attempt> = sqlx::query_as(
            "WITH attempt AS (
                 INSERT INTO auth.login_attempts (email_normalized)
                 SELECT $1 WHERE $2 OR EXISTS
                     (SELECT 1 FROM auth.users WHERE email_normalized = $1)
                 ON CONFLICT (email_normalized) DO UPDATE SET updated_at = now()
                 RETURNING failures, locked_until
             )
             SELECT a.failures, a.locked_until, u.id, u.email, u.password_hash, u.roles,
                    u.disabled_at, u.created_at
             FROM attempt a LEFT JOIN auth.users u ON u.email_normalized = $1",
        )
        .bind(normalized_email)
        .bind(throttle_unknown)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let user = match (
            row.id,
            row.email,
            row.password_hash,
            row.roles,
            row.created_at,
        ) {
            (Some(id), Some(email), Some(password_hash), Some(roles), Some(created_at)) => {
                Some(UserRow {
                    id,
                    email,
                    password_hash,
                    roles,
                    disabled_at: row.disabled_at,
                    created_at,
                })
            }
            _ => None,
        };
        let failures = u32::try_from(row.failures).unwrap_or(0);
        let outcome = match policy.decide(failures, row.locked_until, Utc::now()) {
            AttemptDecision::Locked { until } => Reservation::Locked(until),
            AttemptDecision::Allowed {
                failures,
                locked_until,
            } => {
                sqlx::query(
                    "UPDATE auth.login_attempts
                     SET failures = $2, locked_until = coalesce($3, locked_until)
                     WHERE email_normalized = $1",
                )
                .bind(normalized_email)
                .bind(i32::try_from(failures).unwrap_or(i32::MAX))
                .bind(locked_until)
                .execute(&mut *tx)
                .await?;
                Reservation::Granted { failures }
            }
        };
        tx.commit().await?;
        Ok(Some((user, outcome)))
    }

    /// Forgives the reserved attempt: failures back to zero, no lockout.
    pub async fn clear_failures(&self, normalized_email: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE auth.login_attempts SET failures = 0, locked_until = NULL
             WHERE email_normalized = $1",
        )
        .bind(normalized_email)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a new password hash (rehash after a parameter change).
    pub async fn update_password_hash(&self, user_id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE auth.users SET password_hash = $2, updated_at = now() WHERE id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an audit event on its own.
    pub async fn audit(
        &self,
        kind: AuditKind,
        subject: Option<&str>,
        actor: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        audit(&mut conn, kind, subject, actor, detail).await
    }

    /// After a correct password: clears the failure count, starts a session family with its
    /// first refresh token, audits the login. False (nothing written) for a disabled user.
    pub async fn start_session(
        &self,
        user_id: Uuid,
        normalized_email: &str,
        token_hash: &[u8; 32],
        refresh_ttl: Duration,
        session_lifetime: Duration,
    ) -> Result<bool, sqlx::Error> {
        // One statement, so one round trip and one implicit transaction. It share-locks the
        // user row: a concurrent DisableUser waits for this session to exist (and then
        // revokes it), or this one sees the user disabled and writes nothing (each step
        // selects from the one before). It forgives the attempt counted before the check.
        let family = Uuid::now_v7();
        let started: i64 = sqlx::query_scalar(
            "WITH enabled AS (
                 SELECT id FROM auth.users WHERE id = $1 AND disabled_at IS NULL FOR SHARE
             ), forgiven AS (
                 UPDATE auth.login_attempts SET failures = 0, locked_until = NULL
                 WHERE email_normalized = $8 AND EXISTS (SELECT 1 FROM enabled)
             ), family AS (
                 INSERT INTO auth.session_families (id, user_id, expires_at)
                 SELECT $2, id, now() + $3 FROM enabled RETURNING id
             ), token AS (
                 INSERT INTO auth.refresh_tokens (token_hash, family_id, expires_at)
                 SELECT $4, id, now() + $5 FROM family RETURNING family_id
             ), audited AS (
                 INSERT INTO auth.audit_events (kind, subject, detail)
                 SELECT $6, $7, jsonb_build_object('family', family_id) FROM token
                 RETURNING 1
             )
             SELECT count(*) FROM audited",
        )
        .bind(user_id)
        .bind(family)
        .bind(interval(session_lifetime))
        .bind(&token_hash[..])
        .bind(interval(refresh_ttl))
        .bind(AuditKind::LoginOk.as_str())
        .bind(user_id.to_string())
        .bind(normalized_email)
        .fetch_one(&self.pool)
        .await?;
        Ok(started == 1)
    }

    /// Spends `old_hash` and issues `new_hash` in the same family. A spent token presented
    /// again revokes the family (OAuth 2.0 Security BCP, refresh token rotation) — unless it
    /// was spent less than `reuse_grace` ago: then it is a concurrent or retried refresh of
    /// the same client, and gets a token of its own in the same family.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &[u8; 32],
        new_hash: &[u8; 32],
        refresh_ttl: Duration,
        reuse_grace: Duration,
    ) -> Result<RefreshOutcome, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let spent: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE auth.refresh_tokens SET spent_at = now()
             WHERE token_hash = $1 AND spent_at IS NULL
             RETURNING family_id, expires_at",
        )
        .bind(&old_hash[..])
        .fetch_optional(&mut *tx)
        .await?;
        let mut within_grace = false;
        let (family, expires_at) = if let Some(spent) = spent {
            spent
        } else {
            // FOR UPDATE: a reuse decision and the rotation it races with see each other.
            let known: Option<(Uuid, Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
                "SELECT t.family_id, f.user_id, t.expires_at, t.spent_at > now() - $2
                 FROM auth.refresh_tokens t
                 JOIN auth.session_families f ON f.id = t.family_id
                 WHERE t.token_hash = $1 FOR UPDATE OF t",
            )
            .bind(&old_hash[..])
            .bind(interval(reuse_grace))
            .fetch_optional(&mut *tx)
            .await?;
            let Some((family, user_id, expires_at, recent)) = known else {
                return Ok(RefreshOutcome::Invalid);
            };
            if recent && !reuse_grace.is_zero() {
                within_grace = true;
                (family, expires_at)
            } else {
                return self.revoke_for_reuse(tx, family, user_id).await;
            }
        };
        if expires_at <= Utc::now() {
            return Ok(RefreshOutcome::Invalid);
        }
        // Lock order matches DisableUser (user row, then sessions), so the two cannot
        // deadlock, and a user disabled meanwhile is seen here.
        let (user_id,): (Uuid,) =
            sqlx::query_as("SELECT user_id FROM auth.session_families WHERE id = $1")
                .bind(family)
                .fetch_one(&mut *tx)
                .await?;
        let user: UserRow = sqlx::query_as(
            "SELECT id, email, password_hash, roles, disabled_at, created_at FROM auth.users WHERE id = $1 FOR SHARE",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        let (revoked_at, session_end): (Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(
            "SELECT revoked_at, expires_at FROM auth.session_families WHERE id = $1 FOR UPDATE",
        )
        .bind(family)
        .fetch_one(&mut *tx)
        .await?;
        let now = Utc::now();
        if revoked_at.is_some() || session_end <= now {
            return Ok(RefreshOutcome::SessionEnded);
        }
        if user.disabled_at.is_some() {
            return Ok(RefreshOutcome::Disabled);
        }
        // A refresh token never outlives its session.
        let remaining = (session_end - now).to_std().unwrap_or_default();
        let ttl = refresh_ttl.min(remaining);
        sqlx::query(
            "INSERT INTO auth.refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, now() + $3)",
        )
        .bind(&new_hash[..])
        .bind(family)
        .bind(interval(ttl))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            AuditKind::Refresh,
            Some(&user_id.to_string()),
            None,
            serde_json::json!({ "family": family, "within_reuse_grace": within_grace }),
        )
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated {
            user,
            expires_in: ttl,
        })
    }

    /// A spent token came back after its grace: revoke its whole family.
    async fn revoke_for_reuse(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        family: Uuid,
        user_id: Uuid,
    ) -> Result<RefreshOutcome, sqlx::Error> {
        sqlx::query(
            "UPDATE auth.session_families SET revoked_at = now(), revoked_reason = 'refresh token reuse'
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(family)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            AuditKind::RefreshReuseDetected,
            Some(&user_id.to_string()),
            None,
            serde_json::json!({ "family": family }),
        )
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Reused)
    }

    /// Revokes the family of a refresh token; true when one was live.
    pub async fn revoke_family_of(&self, token_hash: &[u8; 32]) -> Result<bool, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let revoked: Option<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE auth.session_families SET revoked_at = now(), revoked_reason = 'logout'
             WHERE id = (SELECT family_id FROM auth.refresh_tokens WHERE token_hash = $1)
               AND revoked_at IS NULL
             RETURNING id, user_id",
        )
        .bind(&token_hash[..])
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((family, user_id)) = revoked {
            audit(
                &mut tx,
                AuditKind::Logout,
                Some(&user_id.to_string()),
                None,
                serde_json::json!({ "family": family }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(revoked.is_some())
    }

    /// Replaces a user's roles; `None` for an unknown user.
    pub async fn set_roles(
        &self,
        user_id: Uuid,
        roles: &[String],
        actor: &str,
    ) -> Result<Option<UserRow>, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let before: Option<(Vec<String>,)> =
            sqlx::query_as("SELECT roles FROM auth.users WHERE id = $1 FOR UPDATE")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((before,)) = before else {
            return Ok(None);
        };
        let user: UserRow = sqlx::query_as(
            "UPDATE auth.users SET roles = $2, updated_at = now() WHERE id = $1
             RETURNING id, email, password_hash, roles, disabled_at, created_at",
        )
        .bind(user_id)
        .bind(roles)
        .fetch_one(&mut *tx)
        .await?;
        audit(
            &mut tx,
            AuditKind::RoleChange,
            Some(&user_id.to_string()),
            Some(actor),
            serde_json::json!({ "before": before, "after": roles }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Disables a user and revokes every session; `None` for an unknown user.
    pub async fn disable_user(
        &self,
        user_id: Uuid,
        actor: &str,
    ) -> Result<Option<(UserRow, i64)>, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let user: Option<UserRow> = sqlx::query_as(
            "UPDATE auth.users SET disabled_at = coalesce(disabled_at, now()), updated_at = now()
             WHERE id = $1 RETURNING id, email, password_hash, roles, disabled_at, created_at",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user) = user else { return Ok(None) };
        let revoked = sqlx::query(
            "UPDATE auth.session_families SET revoked_at = now(), revoked_reason = 'user disabled'
             WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let revoked = i64::try_from(revoked).unwrap_or(i64::MAX);
        audit(
            &mut tx,
            AuditKind::UserDisabled,
            Some(&user_id.to_string()),
            Some(actor),
            serde_json::json!({ "revoked_sessions": revoked }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some((user, revoked)))
    }

    /// Inserts a service account; `None` when the name is taken.
    pub async fn create_service_account(
        &self,
        name: &str,
        client_id: &str,
        secret_hash: &[u8; 32],
        roles: &[String],
        actor: &str,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let id: Option<(Uuid,)> = sqlx::query_as(
            "INSERT INTO auth.service_accounts (id, name, client_id, secret_hash, roles, created_by)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(client_id)
        .bind(&secret_hash[..])
        .bind(roles)
        .bind(actor)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((id,)) = id {
            audit(
                &mut tx,
                AuditKind::ServiceAccountCreated,
                Some(&format!("sa:{id}")),
                Some(actor),
                serde_json::json!({ "name": name, "roles": roles }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id.map(|(id,)| id))
    }

    /// The service account with this client id.
    pub async fn service_account(
        &self,
        client_id: &str,
    ) -> Result<Option<ServiceAccountRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, secret_hash, roles, disabled_at FROM auth.service_accounts WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// A service account by id: (roles, disabled).
    pub async fn service_account_by_id(
        &self,
        id: Uuid,
    ) -> Result<Option<(Vec<String>, Option<DateTime<Utc>>)>, sqlx::Error> {
        sqlx::query_as("SELECT roles, disabled_at FROM auth.service_accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Disables a service account; false for an unknown id.
    pub async fn disable_service_account(
        &self,
        id: Uuid,
        actor: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let found = sqlx::query(
            "UPDATE auth.service_accounts SET disabled_at = coalesce(disabled_at, now()) WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if found {
            audit(
                &mut tx,
                AuditKind::ServiceAccountDisabled,
                Some(&format!("sa:{id}")),
                Some(actor),
                serde_json::json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    /// Deletes throttle rows of emails not tried for `idle` and not locked: failures that
    /// old are forgotten, and unknown emails tried once do not pile up.
    pub async fn purge_idle_login_attempts(&self, idle: Duration) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "DELETE FROM auth.login_attempts
             WHERE updated_at < now() - $1 AND (locked_until IS NULL OR locked_until < now())",
        )
        .bind(interval(idle))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Deletes refresh tokens and sessions that ended more than `keep` ago; returns how many
    /// sessions went. Their audit events stay.
    pub async fn purge_ended_sessions(&self, keep: Duration) -> Result<u64, sqlx::Error> {
        sqlx::query("DELETE FROM auth.refresh_tokens WHERE expires_at < now() - $1")
            .bind(interval(keep))
            .execute(&self.pool)
            .await?;
        let sessions = sqlx::query(
            "DELETE FROM auth.session_families
             WHERE expires_at < now() - $1 OR revoked_at < now() - $1",
        )
        .bind(interval(keep))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(sessions)
    }

    /// Registers the public keys of the key folder and retires every other key.
    /// Returns whether `active` was seen for the first time (a rotation). A `kid` already
    /// registered with a different public key is an error: key ids must never be reused.
    pub async fn register_keys(
        &self,
        keys: &[(String, [u8; 32])],
        active: &str,
    ) -> Result<Result<bool, String>, sqlx::Error> {
        let mut tx = appstack_db::begin(&self.pool).await?;
        let mut rotated = false;
        for (kid, public_key) in keys {
            let inserted = sqlx::query(
                "INSERT INTO auth.signing_keys (kid, public_key) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
            )
            .bind(kid)
            .bind(&public_key[..])
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                let (stored,): (Vec<u8>,) =
                    sqlx::query_as("SELECT public_key FROM auth.signing_keys WHERE kid = $1")
                        .bind(kid)
                        .fetch_one(&mut *tx)
                        .await?;
                if stored != public_key[..] {
                    return Ok(Err(format!(
                        "signing key id {kid} was used before for a different key; choose a new kid"
                    )));
                }
            }
            if inserted && kid == active {
                rotated = true;
                audit(
                    &mut tx,
                    AuditKind::KeyRotation,
                    Some(kid),
                    None,
                    serde_json::json!({}),
                )
                .await?;
            }
        }
        sqlx::query(
            "UPDATE auth.signing_keys SET retired_at = now() WHERE kid <> $1 AND retired_at IS NULL",
        )
        .bind(active)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE auth.signing_keys SET retired_at = NULL WHERE kid = $1")
            .bind(active)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(rotated))
    }

    /// Keys that may have signed a token still valid: live ones, and ones retired less than
    /// `token_lifetime` ago. Newest first.
    pub async fn published_keys(
        &self,
        token_lifetime: Duration,
    ) -> Result<Vec<PublishedKey>, sqlx::Error> {
        sqlx::query_as(
            "SELECT kid, public_key FROM auth.signing_keys
             WHERE retired_at IS NULL OR retired_at > now() - $1
             ORDER BY kid DESC",
        )
        .bind(interval(token_lifetime))
        .fetch_all(&self.pool)
        .await
    }
}

async fn audit(
    conn: &mut PgConnection,
    kind: AuditKind,
    subject: Option<&str>,
    actor: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO auth.audit_events (kind, subject, actor, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(kind.as_str())
    .bind(subject)
    .bind(actor)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// A duration as a PostgreSQL interval parameter.
fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}
