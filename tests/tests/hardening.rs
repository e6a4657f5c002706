//! What an outside client's hostile test found, each as a test: calls cancelled at random
//! points leave no half-done database work, one caller's bad input cannot hurt others, a
//! database outage is reported as one, concurrent refreshes keep their session, and unknown
//! emails are throttled like known ones. Real auth role, real PostgreSQL, real gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::time::Duration;

use appstack_proto::auth::v1::{
    ClientCredentialsTokenRequest, LoginRequest, RefreshRequest, SignUpRequest,
};
use appstack_tests::auth_server::AuthServer;
use appstack_tests::clients::{login, sign_up_and_login};
use appstack_tests::pg;
use appstack_tests::raw_grpc;
use appstack_tests::tcp_proxy::TcpProxy;
use rand::Rng as _;
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery";

/// The server log from here on, to check that a test caused no transaction warnings.
struct LogWatch {
    path: Option<std::path::PathBuf>,
    offset: u64,
}

impl LogWatch {
    fn start() -> Self {
        let path = pg::server_log();
        let offset = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        Self { path, offset }
    }

    /// Lines since the start that say a transaction was begun or ended out of turn.
    fn transaction_warnings(&self) -> Vec<String> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let mut file = std::fs::File::open(path).unwrap();
        file.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text.lines()
            .filter(|l| {
                l.contains("there is already a transaction in progress")
                    || l.contains("there is no transaction in progress")
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Waits until every session of the server's database is idle (handlers run to
/// completion after their callers left; one between two statements of a transaction shows
/// as idle in transaction for a moment), then counts the sessions left inside a
/// transaction for over a second: a connection returned to the pool mid-transaction.
async fn sessions_idle_in_transaction(pool: &PgPool) -> i64 {
    const BUSY: &str = "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND (state = 'active' OR state LIKE 'idle in transaction%')";
    for _ in 0..100 {
        let busy: i64 = sqlx::query_scalar(BUSY).fetch_one(pool).await.unwrap();
        if busy == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND state LIKE 'idle in transaction%' AND state_change < now() - interval '1 second'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What the storm's callers were told succeeded.
#[derive(Default)]
struct Acknowledged {
    signed_up: Vec<String>,
    refresh_tokens: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cancelled_at_random_points_leave_no_half_done_work() {
    let log = LogWatch::start();
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    // Refresh tokens to spend in the storm, each once.
    let mut spare = Vec::new();
    for user in 0..10 {
        let email = format!("u{user}@example.com");
        spare.push(
            sign_up_and_login(&mut client, &email, PASSWORD)
                .await
                .unwrap()
                .refresh_token,
        );
        for _ in 0..9 {
            spare.push(
                login(&mut client, &email, PASSWORD)
                    .await
                    .unwrap()
                    .refresh_token,
            );
        }
    }

    let mut acked = Acknowledged::default();
    let mut call = 0usize;
    for _wave in 0..8 {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            call += 1;
            // From 1 ms to ~2 s, evenly over the orders of magnitude: most calls are cut
            // off somewhere inside, some finish.
            let deadline = {
                let mut rng = rand::thread_rng();
                Duration::from_micros(rng.gen_range(1000..2000) << rng.gen_range(0..11))
            };
            // Every fourth call on a connection of its own, dropped with the call.
            let mut client = if call.is_multiple_of(4) {
                server.client().await.unwrap()
            } else {
                client.clone()
            };
            let kind = call % 3;
            let email = format!("storm{call}@example.com");
            let token = if kind == 2 { spare.pop() } else { None };
            tasks.push(tokio::spawn(async move {
                let work = async {
                    match (kind, token) {
                        (0, _) => client
                            .sign_up(SignUpRequest {
                                email: email.clone(),
                                password: PASSWORD.into(),
                            })
                            .await
                            .map(|_| (Some(email), None)),
                        (2, Some(token)) => client
                            .refresh(RefreshRequest {
                                refresh_token: token,
                            })
                            .await
                            .map(|r| (None, Some(r.into_inner().refresh_token))),
                        _ => {
                            let mut request = tonic::Request::new(LoginRequest {
                                email: format!("u{}@example.com", call % 10),
                                password: PASSWORD.into(),
                            });
                            // Half of the logins also carry the deadline to the server
                            // (`grpc-timeout`), which then ends the call itself.
                            if call % 2 == 1 {
                                request.set_timeout(deadline);
                            }
                            client
                                .login(request)
                                .await
                                .map(|r| (None, Some(r.into_inner().refresh_token)))
                        }
                    }
                };
                tokio::time::timeout(deadline, work).await
            }));
        }
        for task in tasks {
            // Others were refused (a parallel login found the account locked) or cut off.
            if let Ok(Ok((email, token))) = task.await.unwrap() {
                acked.signed_up.extend(email);
                acked.refresh_tokens.extend(token);
            }
        }
    }

    let pool = PgPool::connect(&server.database_url).await.unwrap();
    assert_eq!(sessions_idle_in_transaction(&pool).await, 0);
    // Every acknowledged write is there.
    let users: HashSet<String> = sqlx::query_scalar("SELECT email FROM auth.users")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for email in &acked.signed_up {
        assert!(
            users.contains(email),
            "{email} was acknowledged but is missing"
        );
    }
    for token in &acked.refresh_tokens {
        client
            .refresh(RefreshRequest {
                refresh_token: token.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("an acknowledged session does not work: {s:?}"));
    }
    // No correct login was ever counted against its account.
    let failures: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(failures), 0) FROM auth.login_attempts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failures, 0);
    assert_eq!(log.transaction_warnings(), Vec::<String>::new());
    assert!(
        !acked.refresh_tokens.is_empty() && !acked.signed_up.is_empty(),
        "the storm should let some calls through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_with_the_right_password_do_not_lock_the_account() {
    // Hashing slow enough (a few ms) that most deadlines fall inside a login.
    let server = AuthServer::start_with(|c| {
        c.auth.password.memory_kib = 8 * 1024;
        c.auth.password.iterations = 2;
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    sign_up_and_login(&mut client, "patient@example.com", PASSWORD)
        .await
        .unwrap();
    for attempt in 0..20u64 {
        let mut client = client.clone();
        let call = client.login(LoginRequest {
            email: "patient@example.com".into(),
            password: PASSWORD.into(),
        });
        let _ = tokio::time::timeout(Duration::from_millis(1 + attempt), call).await;
    }
    let pool = PgPool::connect(&server.database_url).await.unwrap();
    assert_eq!(sessions_idle_in_transaction(&pool).await, 0);
    let failures: i32 = sqlx::query_scalar(
        "SELECT failures FROM auth.login_attempts WHERE email_normalized = 'patient@example.com'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failures, 0);
    login(&mut client, "patient@example.com", PASSWORD)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_fails_only_its_own_call() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    for user in 0..30 {
        let email = format!("crowd{user}@example.com");
        sign_up_and_login(&mut client, &email, PASSWORD)
            .await
            .unwrap();
    }
    // One connection, as behind a proxy that multiplexes many users' calls.
    let mut logins = Vec::new();
    for user in 0..30 {
        let mut client = client.clone();
        logins.push(tokio::spawn(async move {
            login(&mut client, &format!("crowd{user}@example.com"), PASSWORD).await
        }));
    }
    let mut oversized = Vec::new();
    for size in [20 * 1024, 64 * 1024, 1024 * 1024] {
        let mut client = client.clone();
        oversized.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(LoginRequest {
                email: "crowd@example.com".into(),
                password: PASSWORD.into(),
            });
            let value = format!("Bearer {}", "a".repeat(size)).parse().unwrap();
            request.metadata_mut().insert("authorization", value);
            client.login(request).await
        }));
    }
    for call in oversized {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("metadata"), "{status:?}");
    }
    for call in logins {
        call.await.unwrap().unwrap();
    }
    login(&mut client, "crowd0@example.com", PASSWORD)
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_text_in_any_field_is_invalid_argument() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    let field_of = |status: &tonic::Status| {
        status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations[0].field.clone())
    };

    let status = client
        .client_credentials_token(ClientCredentialsTokenRequest {
            client_id: "ci_\0".into(),
            client_secret: "cs_x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(field_of(&status).as_deref(), Some("client_id"));

    let status = client
        .sign_up(SignUpRequest {
            email: "nul\0@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(field_of(&status).as_deref(), Some("email"));

    let status = client
        .refresh(RefreshRequest {
            refresh_token: "rt_\0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Not UTF-8 (field 1, `email`, of LoginRequest): a generated client cannot send this.
    let channel = server.channel().await.unwrap();
    let status = raw_grpc::unary(
        channel.clone(),
        "/appstack.auth.v1.AuthService/Login",
        vec![0x0a, 0x02, 0xc3, 0x28],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(field_of(&status).as_deref(), Some("email"));
    // Not protobuf at all.
    let status = raw_grpc::unary(
        channel,
        "/appstack.auth.v1.AuthService/Login",
        vec![0x0a, 0x7f, b'x'],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Valid input still works.
    sign_up_and_login(&mut client, "after@example.com", PASSWORD)
        .await
        .unwrap();
}

/// The server address of a `postgres://user@host:port/db` URL, and the URL with that
/// address replaced by `to`.
fn redirect(url: &str, to: SocketAddr) -> (SocketAddr, String) {
    use std::net::ToSocketAddrs as _;
    let authority_start = url.find("://").unwrap() + 3;
    let path_start = authority_start + url[authority_start..].find('/').unwrap();
    let host_start = url[authority_start..path_start]
        .rfind('@')
        .map_or(authority_start, |i| authority_start + i + 1);
    let upstream = url[host_start..path_start]
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let moved = format!("{}{to}{}", &url[..host_start], &url[path_start..]);
    (upstream, moved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_reported_as_unreachable() {
    let database = pg::test_database().await.unwrap();
    let (upstream, _) = redirect(&database.url, "127.0.0.1:1".parse().unwrap());
    let proxy = TcpProxy::start(upstream).await.unwrap();
    let (_, through_proxy) = redirect(&database.url, proxy.addr);
    let server = AuthServer::start_with(|c| {
        c.database.url = through_proxy;
        c.database.acquire_timeout = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    sign_up_and_login(&mut client, "outage@example.com", PASSWORD)
        .await
        .unwrap();

    proxy.cut();
    let status = login(&mut client, "outage@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("unreachable"), "{status:?}");
    assert!(!status.message().contains("busy"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_is_reported_as_busy() {
    let server = AuthServer::start_with(|c| {
        c.database.max_connections = 2;
        c.database.min_connections = 0;
        c.database.acquire_timeout = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    sign_up_and_login(&mut client, "busy@example.com", PASSWORD)
        .await
        .unwrap();
    // Hold the account's throttle row: logins block on it, each holding a connection.
    let pool = PgPool::connect(&server.database_url).await.unwrap();
    let mut holder = appstack_db::begin(&pool).await.unwrap();
    sqlx::query("SELECT 1 FROM auth.login_attempts WHERE email_normalized = $1 FOR UPDATE")
        .bind("busy@example.com")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut blocked = Vec::new();
    for _ in 0..2 {
        let mut client = client.clone();
        blocked.push(tokio::spawn(async move {
            login(&mut client, "busy@example.com", PASSWORD).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = login(&mut client, "busy@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("busy"), "{status:?}");
    assert!(!status.message().contains("unreachable"), "{status:?}");
    holder.rollback().await.unwrap();
    for call in blocked {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_refreshing_at_once_both_keep_the_session() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    let tokens = sign_up_and_login(&mut client, "tabs@example.com", PASSWORD)
        .await
        .unwrap();
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut client = client.clone();
        let token = tokens.refresh_token.clone();
        tabs.push(tokio::spawn(async move {
            client
                .refresh(RefreshRequest {
                    refresh_token: token,
                })
                .await
        }));
    }
    let mut next = Vec::new();
    for tab in tabs {
        next.push(tab.await.unwrap().unwrap().into_inner().refresh_token);
    }
    assert_ne!(next[0], next[1]);
    for token in next {
        client
            .refresh(RefreshRequest {
                refresh_token: token,
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn reuse_after_the_grace_still_revokes_the_session() {
    let server =
        AuthServer::start_with(|c| c.auth.refresh_reuse_grace = Duration::from_millis(300))
            .await
            .unwrap();
    let mut client = server.client().await.unwrap();
    let first = sign_up_and_login(&mut client, "late@example.com", PASSWORD)
        .await
        .unwrap();
    let second = client
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let replay = client
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token,
        })
        .await
        .unwrap_err();
    assert!(replay.message().contains("reuse"), "{replay:?}");
    let status = client
        .refresh(RefreshRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// The code and message of six wrong-password logins in a row.
async fn six_wrong_logins(server: &AuthServer, email: &str) -> Vec<(Code, String)> {
    let mut client = server.client().await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..6 {
        let status = login(&mut client, email, "wrong password!")
            .await
            .unwrap_err();
        answers.push((status.code(), status.message().to_owned()));
    }
    answers
}

#[tokio::test]
async fn unknown_emails_are_throttled_like_known_ones() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    sign_up_and_login(&mut client, "known@example.com", PASSWORD)
        .await
        .unwrap();
    let known = six_wrong_logins(&server, "known@example.com").await;
    let unknown = six_wrong_logins(&server, "nobody@example.com").await;
    assert_eq!(known, unknown);
    assert_eq!(known[5].0, Code::ResourceExhausted, "{known:?}");

    // Without the setting, unknown emails are never locked (and not recorded).
    let open = AuthServer::start_with(|c| c.auth.prevent_user_existence_errors = false)
        .await
        .unwrap();
    let unknown = six_wrong_logins(&open, "nobody@example.com").await;
    assert!(
        unknown
            .iter()
            .all(|(code, _)| *code == Code::Unauthenticated)
    );
}
