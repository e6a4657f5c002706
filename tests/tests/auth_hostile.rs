//! Hostile and malformed input against the auth service and the verifier, each with the exact
//! gRPC code it must get.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_proto::auth::v1::*;
use appstack_tests::auth_server::AuthServer;
use appstack_tests::clients::{bearer, login, sign_up_and_login};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::postgres::PgPool;
use tonic::Code;
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery";

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

struct Forger {
    kid: String,
    key: EncodingKey,
    public_key: Vec<u8>,
    issuer: String,
    audience: String,
}

impl Forger {
    fn new(server: &AuthServer) -> Self {
        let folder = appstack_auth::signing::load_folder(&server.keys_dir).unwrap();
        let active = folder.active().unwrap();
        let pem = std::fs::read(server.keys_dir.join(format!("{}.pem", active.kid))).unwrap();
        Self {
            kid: active.kid.clone(),
            key: EncodingKey::from_ed_pem(&pem).unwrap(),
            public_key: active.public_key.to_vec(),
            issuer: server.config.auth.issuer.clone(),
            audience: server.config.auth.audience.clone(),
        }
    }

    fn claims(&self, sub: &str) -> Value {
        let now = chrono_now();
        json!({ "iss": self.issuer, "aud": self.audience, "sub": sub, "exp": now + 600, "nbf": now, "iat": now, "jti": "j", "roles": ["admin"] })
    }

    fn sign(&self, claims: &Value, edit: impl FnOnce(&mut Header)) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        edit(&mut header);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn forged_and_broken_tokens_are_unauthenticated() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    let real = sign_up_and_login(&mut client, "victim@example.com", PASSWORD)
        .await
        .unwrap();
    let f = Forger::new(&server);
    let sub = real.subject.clone();
    let good = f.sign(&f.claims(&sub), |_| {});
    // Control: a correctly forged token with the real key is accepted (so the cases below
    // fail for the reason they name, not for another).
    client
        .who_am_i(bearer(WhoAmIRequest {}, &good))
        .await
        .unwrap();

    let parts: Vec<&str> = real.access_token.split('.').collect();
    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg":"none","typ":"at+jwt","kid":f.kid})),
            b64(&f.claims(&sub))
        ),
    ));
    cases.push((
        "alg none, no kid",
        format!("{}.{}.", b64(&json!({"alg":"none"})), b64(&f.claims(&sub))),
    ));
    let hs = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(f.kid.clone());
        jsonwebtoken::encode(
            &h,
            &f.claims(&sub),
            &EncodingKey::from_secret(&f.public_key),
        )
        .unwrap()
    };
    cases.push(("HS256 signed with the public key", hs));
    let hs_x = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(f.kid.clone());
        let x = URL_SAFE_NO_PAD.encode(&f.public_key);
        jsonwebtoken::encode(&h, &f.claims(&sub), &EncodingKey::from_secret(x.as_bytes())).unwrap()
    };
    cases.push(("HS256 signed with the JWK x", hs_x));
    let mut expired = f.claims(&sub);
    expired["exp"] = json!(chrono_now() - 3600);
    cases.push(("expired", f.sign(&expired, |_| {})));
    let mut future = f.claims(&sub);
    future["nbf"] = json!(chrono_now() + 3600);
    cases.push(("not yet valid", f.sign(&future, |_| {})));
    let mut iss = f.claims(&sub);
    iss["iss"] = json!("https://evil.example");
    cases.push(("wrong iss", f.sign(&iss, |_| {})));
    let mut aud = f.claims(&sub);
    aud["aud"] = json!("someone-else");
    cases.push(("wrong aud", f.sign(&aud, |_| {})));
    cases.push((
        "typ JWT (an ID token, say)",
        f.sign(&f.claims(&sub), |h| h.typ = Some("JWT".into())),
    ));
    cases.push(("no typ", f.sign(&f.claims(&sub), |h| h.typ = None)));
    cases.push((
        "unknown kid",
        f.sign(&f.claims(&sub), |h| h.kid = Some("nope".into())),
    ));
    cases.push(("no kid", f.sign(&f.claims(&sub), |h| h.kid = None)));
    // RFC 7515 §4.1.11: a `crit` header names extensions the recipient must understand; we
    // understand none, so any `crit` is refused even with a valid signature.
    cases.push((
        "crit naming an unknown extension",
        f.sign(&f.claims(&sub), |h| {
            h.crit = Some(vec!["urn:example:ext".into()]);
            h.extras.insert("urn:example:ext", true);
        }),
    ));
    cases.push((
        "crit naming a registered claim",
        f.sign(&f.claims(&sub), |h| h.crit = Some(vec!["exp".into()])),
    ));
    cases.push((
        "crit null",
        f.sign(&f.claims(&sub), |h| h.extras.insert("crit", Value::Null)),
    ));
    let mut no_sub = f.claims(&sub);
    no_sub.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", f.sign(&no_sub, |_| {})));
    let mut no_exp = f.claims(&sub);
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", f.sign(&no_exp, |_| {})));
    // Payload swapped for one granting admin, signature kept.
    let mut elevated = f.claims(&sub);
    elevated["roles"] = json!(["admin", "user"]);
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&elevated), parts[2]),
    ));
    let mut sig: Vec<u8> = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 0x01;
    cases.push((
        "tampered signature",
        format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig)),
    ));
    cases.push((
        "truncated",
        real.access_token[..real.access_token.len() - 5].to_owned(),
    ));
    cases.push(("garbage", "not.a.jwt".into()));
    cases.push(("large", "a".repeat(8 * 1024)));

    for (name, token) in cases {
        let err = client
            .who_am_i(bearer(WhoAmIRequest {}, &token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
    }

    // Header shapes.
    let mut none = tonic::Request::new(WhoAmIRequest {});
    assert_eq!(
        client.who_am_i(none).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    none = tonic::Request::new(WhoAmIRequest {});
    none.metadata_mut().insert(
        "authorization",
        format!("Basic {}", real.access_token).parse().unwrap(),
    );
    assert_eq!(
        client.who_am_i(none).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut empty = tonic::Request::new(WhoAmIRequest {});
    empty
        .metadata_mut()
        .insert("authorization", "Bearer ".parse().unwrap());
    assert_eq!(
        client.who_am_i(empty).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // The scheme is case-insensitive.
    let mut lower = tonic::Request::new(WhoAmIRequest {});
    lower.metadata_mut().insert(
        "authorization",
        format!("bearer {}", real.access_token).parse().unwrap(),
    );
    client.who_am_i(lower).await.unwrap();

    // A header beyond HTTP/2's header-list limit is refused at the transport (the connection
    // is closed with ENHANCE_YOUR_CALM), and the server keeps serving others.
    let mut huge_client = server.client().await.unwrap();
    let err = huge_client
        .who_am_i(bearer(WhoAmIRequest {}, &"a".repeat(64 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    client
        .who_am_i(bearer(WhoAmIRequest {}, &real.access_token))
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_family() {
    // No reuse grace: every replay is reuse (the grace has its own suite).
    let server = AuthServer::start_with(|c| c.auth.refresh_reuse_grace = Duration::ZERO)
        .await
        .unwrap();
    let mut client = server.client().await.unwrap();
    let first = sign_up_and_login(&mut client, "reuse@example.com", PASSWORD)
        .await
        .unwrap();
    let second = client
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // An attacker replays the spent token: refused, and the family is revoked.
    let replay = client
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    assert!(replay.message().contains("reuse"), "{replay:?}");
    // The legitimate holder's newer token is dead too.
    let later = client
        .refresh(RefreshRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(later.code(), Code::Unauthenticated);
    // Another login starts a fresh family.
    let again = login(&mut client, "reuse@example.com", PASSWORD)
        .await
        .unwrap();
    client
        .refresh(RefreshRequest {
            refresh_token: again.refresh_token,
        })
        .await
        .unwrap();

    let pool = PgPool::connect(&server.database_url).await.unwrap();
    let detected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM auth.audit_events WHERE kind = 'refresh_reuse_detected'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(detected, 1);
}

#[tokio::test]
async fn parallel_refreshes_of_one_token_let_at_most_one_through() {
    // Without a reuse grace (with one, every parallel refresh gets a token: see hardening).
    let server = AuthServer::start_with(|c| c.auth.refresh_reuse_grace = Duration::ZERO)
        .await
        .unwrap();
    let mut client = server.client().await.unwrap();
    let tokens = sign_up_and_login(&mut client, "race@example.com", PASSWORD)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = client.clone();
        let t = tokens.refresh_token.clone();
        tasks.push(tokio::spawn(async move {
            c.refresh(RefreshRequest { refresh_token: t }).await
        }));
    }
    let mut ok = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(r) => ok.push(r.into_inner()),
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
        }
    }
    // The first to spend the token holds its row until it commits, so exactly one wins.
    assert_eq!(ok.len(), 1, "refreshes of one token that succeeded");
    // Reuse was seen, so even the winner's new token is revoked.
    for r in ok {
        let err = client
            .refresh(RefreshRequest {
                refresh_token: r.refresh_token,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn fifty_parallel_wrong_passwords_cannot_beat_the_lockout() {
    let server = AuthServer::start_with(|c| {
        c.auth.lockout.base = Duration::from_secs(60);
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    client
        .sign_up(SignUpRequest {
            email: "target@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            login(&mut c, "target@example.com", &format!("wrong password {i}")).await
        }));
    }
    let (mut unauthenticated, mut exhausted) = (0, 0);
    for task in tasks {
        let status = task.await.unwrap().unwrap_err();
        match status.code() {
            Code::Unauthenticated => unauthenticated += 1,
            Code::ResourceExhausted if status.message().contains("locked") => exhausted += 1,
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    // At most `threshold` guesses were ever checked.
    assert_eq!(unauthenticated, 5, "guesses checked");
    assert_eq!(exhausted, 45);

    // The right password is refused while locked, with a RetryInfo detail.
    let locked = login(&mut client, "target@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(locked.message().contains("locked"), "{locked:?}");
    let retry = locked
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo detail");
    assert!(retry.retry_delay.unwrap() > Duration::from_secs(30));

    let pool = PgPool::connect(&server.database_url).await.unwrap();
    let failures: i32 = sqlx::query_scalar(
        "SELECT failures FROM auth.login_attempts WHERE email_normalized = 'target@example.com'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failures, 5);
    let lockouts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM auth.audit_events WHERE kind = 'lockout'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(lockouts, 1);

    // Once the lock ends, the right password works and the counter resets.
    sqlx::query("UPDATE auth.login_attempts SET locked_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    login(&mut client, "target@example.com", PASSWORD)
        .await
        .unwrap();
    let failures: i32 = sqlx::query_scalar(
        "SELECT failures FROM auth.login_attempts WHERE email_normalized = 'target@example.com'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failures, 0);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    client
        .sign_up(SignUpRequest {
            email: "real@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let unknown = login(&mut client, "ghost@example.com", PASSWORD)
        .await
        .unwrap_err();
    let wrong = login(&mut client, "real@example.com", "not the password")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.message(), wrong.message());
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn malformed_empty_and_huge_fields_are_invalid_argument() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    let sign_up = |email: String, password: String| SignUpRequest { email, password };

    let err = client
        .sign_up(sign_up(String::new(), String::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["email", "password"]);

    for email in [
        "plain",
        "a@",
        "@b.com",
        "a b@c.com",
        "x@y..z",
        "robert'); DROP TABLE auth.users;--@x.com",
        "\u{0}@x.com",
    ] {
        let err = client
            .sign_up(sign_up(email.into(), PASSWORD.into()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{email}");
        assert_eq!(violations(&err), vec!["email"], "{email}");
    }
    let huge_email = format!("{}@example.com", "a".repeat(1024 * 1024));
    let err = client
        .sign_up(sign_up(huge_email.clone(), PASSWORD.into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .sign_up(sign_up("ok@example.com".into(), "x".repeat(2000)))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["password"]);
    let err = client
        .sign_up(sign_up("ok@example.com".into(), "short".into()))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["password"]);

    let err = login(&mut client, "", "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = login(&mut client, &huge_email, PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .refresh(RefreshRequest {
            refresh_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .refresh(RefreshRequest {
            refresh_token: "x".repeat(100_000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .logout(LogoutRequest {
            refresh_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .client_credentials_token(ClientCredentialsTokenRequest {
            client_id: String::new(),
            client_secret: "s".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Admin inputs.
    let admin = {
        let pool = PgPool::connect(&server.database_url).await.unwrap();
        let t = sign_up_and_login(&mut client, "adm@example.com", PASSWORD)
            .await
            .unwrap();
        sqlx::query("UPDATE auth.users SET roles = ARRAY['admin','user'] WHERE id = $1::uuid")
            .bind(&t.subject)
            .execute(&pool)
            .await
            .unwrap();
        client
            .refresh(RefreshRequest {
                refresh_token: t.refresh_token,
            })
            .await
            .unwrap()
            .into_inner()
    };
    let err = client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: "not-a-uuid".into(),
                roles: vec![],
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["user_id"]);
    let err = client
        .set_roles(bearer(
            SetRolesRequest {
                user_id: admin.subject.clone(),
                roles: vec!["Robert'); DROP".into()],
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["roles"]);
    let err = client
        .create_service_account(bearer(
            CreateServiceAccountRequest {
                name: "Bad Name".into(),
                roles: vec!["UPPER".into()],
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["name", "roles"]);
    let err = client.who_am_i(WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sql_looking_input_is_stored_verbatim_never_executed() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    let email = "o'brien+x@example.com";
    let password = "'; DROP TABLE auth.users; --";
    let tokens = sign_up_and_login(&mut client, email, password)
        .await
        .unwrap();
    let pool = PgPool::connect(&server.database_url).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT email FROM auth.users WHERE id = $1::uuid")
        .bind(&tokens.subject)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, email);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    let err = login(&mut client, "x' OR '1'='1@example.com", "' OR '1'='1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = login(&mut client, "x@example.com", "' OR '1'='1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let server = AuthServer::start_with(|c| {
        c.server.max_message_bytes = 64 * 1024;
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    let err = client
        .sign_up(SignUpRequest {
            email: "big@example.com".into(),
            password: "p".repeat(128 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The server is fine afterwards.
    client.get_jwks(GetJwksRequest {}).await.unwrap();
}
