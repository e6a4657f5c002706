//! The shared service plumbing, end to end: health, reflection, metrics, readiness,
//! migrations under concurrency, graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use appstack_common::admin::ReadinessCheck as _;
use appstack_common::db::{self, DatabaseReady};
use appstack_proto::auth::v1::{GetJwksRequest, LoginRequest};
use appstack_tests::auth_server::AuthServer;
use appstack_tests::pg;
use futures_util::StreamExt as _;
use sqlx::Connection as _;
use sqlx::postgres::PgPool;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_reports_serving_per_service() {
    let server = AuthServer::start().await.unwrap();
    let mut health = HealthClient::new(server.channel().await.unwrap());
    for service in ["", "appstack.auth.v1.AuthService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let server = AuthServer::start().await.unwrap();
    let channel = server.channel().await.unwrap();

    use tonic_reflection::pb::v1::ServerReflectionRequest as V1Req;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Msg;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Res;
    let request = V1Req {
        host: String::new(),
        message_request: Some(V1Msg::ListServices(String::new())),
    };
    let mut stream = V1::new(channel.clone())
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(V1Res::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"appstack.auth.v1.AuthService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    // Only what this process serves: the other contracts are in the same descriptor set
    // but are not advertised.
    for absent in [
        "appstack.main.v1.RequestService",
        "appstack.worker.v1.WorkerAdmin",
        "appstack.external.v1.Processor",
    ] {
        assert!(!names.contains(&absent.to_string()), "{names:?}");
    }

    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as V1aReq;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1a;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as V1aMsg;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as V1aRes;
    let request = V1aReq {
        host: String::new(),
        message_request: Some(V1aMsg::ListServices(String::new())),
    };
    let mut stream = V1a::new(channel)
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(V1aRes::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("unexpected reflection answer");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "appstack.auth.v1.AuthService")
    );
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter([item])
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_status() {
    let server = AuthServer::start().await.unwrap();
    let mut client = server.client().await.unwrap();
    client.get_jwks(GetJwksRequest {}).await.unwrap();
    client.get_jwks(GetJwksRequest {}).await.unwrap();
    let err = client
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: "whatever!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let (status, body) = server.admin_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"grpc_server_handled_total{service="appstack.auth.v1.AuthService",method="GetJwks",code="OK"} 2"#),
        "{body}"
    );
    assert!(
        body.contains(r#"grpc_server_handled_total{service="appstack.auth.v1.AuthService",method="Login",code="UNAUTHENTICATED"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("grpc_server_handling_seconds_bucket"),
        "{body}"
    );
    assert!(
        body.contains(r#"auth_logins_total{outcome="wrong_credentials"} 1"#),
        "{body}"
    );
    let (status, _) = server.admin_get("/healthz").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn readiness_needs_a_reachable_database_with_current_schema() {
    let database = pg::test_database().await.unwrap();
    let pool = PgPool::connect(&database.url).await.unwrap();
    let check = DatabaseReady::new(pool.clone());
    let reason = check.check().await.unwrap_err();
    assert!(reason.contains("appstack migrate"), "{reason}");
    db::migrate(&pool).await.unwrap();
    check.check().await.unwrap();

    // A database nobody can reach is not ready either.
    let config = appstack_config::DatabaseConfig {
        url: "postgres://nobody@127.0.0.1:1/none".into(),
        acquire_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let unreachable = DatabaseReady::new(db::connect_lazy(&config, "test").unwrap());
    assert!(unreachable.check().await.is_err());
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let database = pg::test_database().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = database.url.clone();
        tasks.push(tokio::spawn(async move {
            let pool = PgPool::connect(&url).await.unwrap();
            db::migrate(&pool).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let pool = PgPool::connect(&database.url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, db::MIGRATOR.iter().count() as i64);
    assert!(db::schema_is_current(&pool).await.unwrap());
}

#[tokio::test]
async fn shutdown_drains_and_stops_listening() {
    let server = AuthServer::start().await.unwrap();
    let grpc = server.grpc;
    let admin = server.admin;
    server.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(grpc).await.is_err(),
        "gRPC still listening"
    );
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin still listening"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    // Slow hashing on one worker, so calls are still running when shutdown starts.
    let server = AuthServer::start_with(|c| {
        c.auth.password = appstack_config::PasswordConfig {
            memory_kib: 8 * 1024,
            iterations: 3,
            parallelism: 1,
            workers: 1,
            queue: 64,
        };
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    client
        .sign_up(appstack_proto::auth::v1::SignUpRequest {
            email: "drain@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move {
            c.login(LoginRequest {
                email: "drain@example.com".into(),
                password: "correct horse battery".into(),
            })
            .await
        }));
    }
    // Let the calls reach the server, then stop it while they run.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let admin = server.admin;
    server.stop().await.unwrap();
    for call in calls {
        call.await
            .unwrap()
            .expect("an in-flight call was cut off by shutdown");
    }
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

#[tokio::test]
async fn a_method_not_served_is_unimplemented_with_or_without_a_token() {
    let server = AuthServer::start().await.unwrap();
    let channel = server.channel().await.unwrap();
    // A contract of another role, and a made-up method of this one.
    for path in [
        "/appstack.main.v1.RequestService/Submit",
        "/appstack.auth.v1.AuthService/Nope",
    ] {
        let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
        let status = appstack_tests::raw_grpc::unary(channel.clone(), path, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{path}: {status:?}"
        );
    }
}

#[tokio::test]
async fn health_and_reflection_calls_are_labelled_as_themselves() {
    let server = AuthServer::start().await.unwrap();
    let channel = server.channel().await.unwrap();
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    use tonic_reflection::pb::v1::ServerReflectionRequest as V1Req;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Msg;
    let mut stream = V1::new(channel)
        .server_reflection_info(tokio_stream_once(V1Req {
            host: String::new(),
            message_request: Some(V1Msg::ListServices(String::new())),
        }))
        .await
        .unwrap()
        .into_inner();
    while stream.next().await.is_some() {}

    let (_, body) = server.admin_get("/metrics").await.unwrap();
    assert!(
        body.contains(r#"service="grpc.health.v1.Health",method="Check",code="OK""#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"service="grpc.reflection.v1.ServerReflection",method="ServerReflectionInfo""#
        ),
        "{body}"
    );
}

#[tokio::test]
async fn a_caller_gone_mid_begin_leaves_no_transaction_behind() {
    let database = pg::test_database().await.unwrap();
    let config = appstack_config::DatabaseConfig {
        url: database.url.clone(),
        max_connections: 1,
        min_connections: 0,
        ..Default::default()
    };
    let pool = db::connect_lazy(&config, "plumbing-test").unwrap();
    sqlx::query("CREATE TABLE written (n integer)")
        .execute(&pool)
        .await
        .unwrap();
    // Callers that go away at every point of a begin: polled `polls` times, letting the
    // runtime run in between, then dropped. With sqlx's own `Pool::begin`, those dropped
    // while `BEGIN` is in flight return the pool's only connection inside a transaction
    // nobody knows of (sqlx #4393).
    for polls in 1..40 {
        {
            let mut begin = std::pin::pin!(appstack_db::begin(&pool));
            for _ in 0..polls {
                if futures_util::FutureExt::now_or_never(begin.as_mut()).is_some() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let mut conn = pool.acquire().await.unwrap();
        assert!(
            appstack_db::outside_transaction(&mut conn).await.unwrap(),
            "after a caller gone at poll {polls}, the pool lent a connection inside a transaction"
        );
    }
    // And what the next borrower writes is committed: another session sees it.
    sqlx::query("INSERT INTO written VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    let mut other = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM written")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(seen, 1, "the write ran inside a stale transaction");
}
