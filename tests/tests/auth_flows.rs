//! The auth service's flows end to end: real gRPC on loopback, real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_auth::{Auth, BootstrapOutcome};
use appstack_common::metrics::MetricsRegistry;
use appstack_proto::auth::v1::*;
use appstack_tests::auth_server::AuthServer;
use appstack_tests::clients::{bearer, login, sign_up_and_login};
use sqlx::postgres::PgPool;
use tonic::Code;

const PASSWORD: &str = "correct horse battery";

async fn pool(server: &AuthServer) -> PgPool {
    PgPool::connect(&server.database_url).await.unwrap()
}

async fn audit_kinds(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM auth.audit_events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Makes `email` an admin through the same bootstrap path `appstack bootstrap-admin` uses.
async fn bootstrap_admin(server: &AuthServer, email: &str) -> BootstrapOutcome {
    let auth = Auth::new(
        server.config.auth.clone(),
        pool(server).await,
        &MetricsRegistry::default(),
    )
    .await
    .unwrap();
    auth.bootstrap_admin(email, PASSWORD).await.unwrap()
}

#[tokio::test]
async fn sign_up_login_who_am_i_refresh_logout() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();

    let signed = client
        .sign_up(SignUpRequest {
            email: "Ada@Example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(signed.email, "Ada@Example.com");
    assert_eq!(signed.roles, vec!["user"]);

    // Emails compare case-insensitively.
    let tokens = login(&mut client, "ada@example.COM", PASSWORD)
        .await
        .unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.subject, signed.id);
    assert!(tokens.expires_in > 0 && tokens.expires_in <= 15 * 60);

    let me = client
        .who_am_i(bearer(WhoAmIRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.subject, signed.id);
    assert_eq!(me.principal_kind, "user");
    assert_eq!(me.email, "Ada@Example.com");
    assert_eq!(me.roles, vec!["user"]);

    let refreshed = client
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(refreshed.refresh_token, tokens.refresh_token);
    client
        .who_am_i(bearer(WhoAmIRequest {}, &refreshed.access_token))
        .await
        .unwrap();

    client
        .logout(LogoutRequest {
            refresh_token: refreshed.refresh_token.clone(),
        })
        .await
        .unwrap();
    let after = client
        .refresh(RefreshRequest {
            refresh_token: refreshed.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);
    // Logout is idempotent.
    client
        .logout(LogoutRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .unwrap();

    let kinds = audit_kinds(&pool(&server).await).await;
    for kind in ["sign_up", "login_ok", "refresh", "logout"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn duplicate_sign_up_is_already_exists() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    client
        .sign_up(SignUpRequest {
            email: "dup@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let err = client
        .sign_up(SignUpRequest {
            email: " DUP@example.com ".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn admin_manages_roles_users_and_service_accounts() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    assert_eq!(
        bootstrap_admin(&server, "root@example.com").await,
        BootstrapOutcome::Created
    );
    assert_eq!(
        bootstrap_admin(&server, "root@example.com").await,
        BootstrapOutcome::Unchanged
    );
    let admin = login(&mut client, "root@example.com", PASSWORD)
        .await
        .unwrap();
    let user = sign_up_and_login(&mut client, "bob@example.com", PASSWORD)
        .await
        .unwrap();

    // A plain user is not an admin.
    let denied = client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: user.subject.clone(),
                roles: vec!["admin".into()],
            },
            &user.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let changed = client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: user.subject.clone(),
                roles: vec!["user".into(), "billing".into(), "user".into()],
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(changed.roles, vec!["billing", "user"]);
    // The next refresh carries the new roles.
    let refreshed = client
        .refresh(RefreshRequest {
            refresh_token: user.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let me = client
        .who_am_i(bearer(WhoAmIRequest {}, &refreshed.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.roles, vec!["billing", "user"]);

    let unknown = client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
                roles: vec![],
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Service accounts: created by an admin, tokens by client credentials.
    let sa = client
        .create_service_account(bearer(
            CreateServiceAccountRequest {
                name: "billing-sync".into(),
                roles: vec!["billing".into()],
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let dup = client
        .create_service_account(bearer(
            CreateServiceAccountRequest {
                name: "billing-sync".into(),
                roles: vec![],
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let token = client
        .client_credentials_token(ClientCredentialsTokenRequest {
            client_id: sa.client_id.clone(),
            client_secret: sa.client_secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(token.refresh_token.is_empty());
    let me = client
        .who_am_i(bearer(WhoAmIRequest {}, &token.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.principal_kind, "service_account");
    assert_eq!(me.subject, format!("sa:{}", sa.id));
    assert_eq!(me.roles, vec!["billing"]);
    let wrong = client
        .client_credentials_token(ClientCredentialsTokenRequest {
            client_id: sa.client_id,
            client_secret: format!("{}x", sa.client_secret),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);

    // Disabling: no more logins or refreshes.
    let disabled = client
        .disable_user(bearer(
            DisableUserRequest {
                user_id: user.subject.clone(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.user.unwrap().disabled);
    assert_eq!(disabled.revoked_sessions, 1);
    let login_err = login(&mut client, "bob@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(login_err.code(), Code::PermissionDenied);
    let refresh_err = client
        .refresh(RefreshRequest {
            refresh_token: refreshed.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(refresh_err.code(), Code::Unauthenticated);
    let self_disable = client
        .disable_user(bearer(
            DisableUserRequest {
                user_id: admin.subject.clone(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(self_disable.code(), Code::FailedPrecondition);

    let kinds = audit_kinds(&pool(&server).await).await;
    for kind in [
        "role_change",
        "user_disabled",
        "service_account_created",
        "client_credentials_ok",
        "client_credentials_failed",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let server = AuthServer::start_with(|c| {
        c.auth.key_reload_interval = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    let before = sign_up_and_login(&mut client, "rot@example.com", PASSWORD)
        .await
        .unwrap();
    let old_kid = kid_of(&before.access_token);

    let new_kid = format!("{old_kid}z");
    appstack_auth::signing::generate_key_file(&server.keys_dir, &new_kid).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let jwks = client
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap()
            .into_inner();
        if jwks.keys.first().map(|k| k.kid.as_str()) == Some(new_kid.as_str()) {
            let kids: Vec<_> = jwks.keys.iter().map(|k| k.kid.clone()).collect();
            assert_eq!(
                kids,
                vec![new_kid.clone(), old_kid.clone()],
                "the old key stays published"
            );
            assert!(
                jwks.keys
                    .iter()
                    .all(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = login(&mut client, "rot@example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(kid_of(&after.access_token), new_kid);
    // Tokens signed by the retired key still verify until they expire.
    client
        .who_am_i(bearer(WhoAmIRequest {}, &before.access_token))
        .await
        .unwrap();
    client
        .who_am_i(bearer(WhoAmIRequest {}, &after.access_token))
        .await
        .unwrap();
    assert!(
        audit_kinds(&pool(&server).await)
            .await
            .iter()
            .filter(|k| *k == "key_rotation")
            .count()
            >= 2
    );
}

#[tokio::test]
async fn login_rehashes_when_parameters_change() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    let user = sign_up_and_login(&mut client, "old@example.com", PASSWORD)
        .await
        .unwrap();
    let pool = pool(&server).await;
    // Store a hash made with older, weaker parameters.
    let weak = {
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let params = argon2::Params::new(256, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    };
    sqlx::query("UPDATE auth.users SET password_hash = $1 WHERE id = $2::uuid")
        .bind(&weak)
        .bind(&user.subject)
        .execute(&pool)
        .await
        .unwrap();
    login(&mut client, "old@example.com", PASSWORD)
        .await
        .unwrap();
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM auth.users WHERE id = $1::uuid")
            .bind(&user.subject)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        stored.contains("m=1024,t=1,p=1"),
        "rehashed with current parameters: {stored}"
    );
    login(&mut client, "old@example.com", PASSWORD)
        .await
        .unwrap();
}

#[tokio::test]
async fn audit_events_are_append_only() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    sign_up_and_login(&mut client, "audit@example.com", PASSWORD)
        .await
        .unwrap();
    let pool = pool(&server).await;
    for statement in [
        "UPDATE auth.audit_events SET kind = 'x'",
        "DELETE FROM auth.audit_events",
        "TRUNCATE auth.audit_events",
    ] {
        let err = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
}

#[tokio::test]
async fn a_demoted_admin_token_loses_admin_powers_at_once() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    bootstrap_admin(&server, "boss@example.com").await;
    let boss = login(&mut client, "boss@example.com", PASSWORD)
        .await
        .unwrap();
    bootstrap_admin(&server, "deputy@example.com").await;
    let deputy = login(&mut client, "deputy@example.com", PASSWORD)
        .await
        .unwrap();

    // A service account made by the deputy, with admin powers.
    let sa = client
        .create_service_account(bearer(
            CreateServiceAccountRequest {
                name: "robot".into(),
                roles: vec!["admin".into()],
            },
            &deputy.access_token,
        ))
        .await
        .unwrap()
        .into_inner();

    // The boss demotes the deputy; the deputy's unexpired token still says `admin`.
    client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: deputy.subject.clone(),
                roles: vec!["user".into()],
            },
            &boss.access_token,
        ))
        .await
        .unwrap();
    let denied = client
        .create_service_account(bearer(
            CreateServiceAccountRequest {
                name: "backdoor".into(),
                roles: vec!["admin".into()],
            },
            &deputy.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: deputy.subject.clone(),
                roles: vec!["admin".into()],
            },
            &deputy.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The boss disables the robot: its credentials and its admin token stop working.
    let robot = client
        .client_credentials_token(ClientCredentialsTokenRequest {
            client_id: sa.client_id.clone(),
            client_secret: sa.client_secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .disable_service_account(bearer(
            DisableServiceAccountRequest { id: sa.id.clone() },
            &boss.access_token,
        ))
        .await
        .unwrap();
    let err = client
        .client_credentials_token(ClientCredentialsTokenRequest {
            client_id: sa.client_id,
            client_secret: sa.client_secret,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .disable_user(bearer(
            DisableUserRequest {
                user_id: boss.subject.clone(),
            },
            &robot.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let unknown = client
        .disable_service_account(bearer(
            DisableServiceAccountRequest {
                id: uuid::Uuid::new_v4().to_string(),
            },
            &boss.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
