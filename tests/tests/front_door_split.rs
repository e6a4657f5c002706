//! The front door as deployed: `appstack auth`, `appstack worker` and `appstack main` as
//! three processes. Only main is called. Its JSON routes for auth go to the auth process,
//! and those for the worker's admin API go to the worker process (`frontDoor.workerEndpoint`).
//! Its gRPC-Web reaches auth the same way. The per-address limit holds for forwarded calls.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use appstack_proto::auth::v1::WhoAmIRequest;
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_simulator::{FaultPlan, Simulator};
use appstack_tests::auth_server::http_get;
use appstack_tests::http_json::HttpJson;
use appstack_tests::processes::appstack_binary;
use appstack_tests::stack_server::StackServer;
use appstack_tests::wait::eventually;
use http::StatusCode;
use serde_json::json;
use tokio::process::{Child, Command};

const PASSWORD: &str = "correct horse battery";

fn loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `appstack <role>` with `config` on free ports; its gRPC address and the process.
async fn start_role(
    role: &str,
    mut config: appstack_config::StackConfig,
    dir: &Path,
) -> (SocketAddr, Child) {
    config.server.grpc_addr = loopback_port();
    config.server.admin_addr = loopback_port();
    config.log.filter = "warn".into();
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let child = Command::new(appstack_binary().unwrap())
        .arg(role)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin = config.server.admin_addr;
    eventually(
        &format!("{role} ready"),
        Duration::from_secs(60),
        || async move { matches!(http_get(admin, "/readyz").await, Ok((200, _))).then_some(()) },
    )
    .await;
    (config.server.grpc_addr, child)
}

#[tokio::test]
async fn main_alone_publishes_the_whole_client_api() {
    let simulator = Simulator::start_on_loopback(FaultPlan::default())
        .await
        .unwrap();
    let database = appstack_tests::pg::test_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StackServer::test_config(&simulator);
    config.database.url = database.url.clone();
    config.auth.keys_dir = dir.path().join("keys");
    config.front_door.public_rate.per_second = 1;
    config.front_door.public_rate.burst = 6;

    let (auth, _auth) = start_role("auth", config.clone(), dir.path()).await;
    config.auth.endpoint = format!("http://{auth}");
    let (worker, _worker) = start_role("worker", config.clone(), dir.path()).await;
    config.front_door.worker_endpoint = Some(format!("http://{worker}"));
    let (main, _main) = start_role("main", config.clone(), dir.path()).await;
    let http = HttpJson::new(main);

    // Sign-up and login are the auth process's, reached through main.
    for email in ["user@example.com", "admin@example.com"] {
        let signed = http
            .post(
                "/v1/auth/sign-up",
                None,
                &json!({"email": email, "password": PASSWORD}),
            )
            .await
            .unwrap();
        assert_eq!(signed.status, StatusCode::OK, "{:?}", signed.json());
    }
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    sqlx::query(
        "UPDATE auth.users SET roles = ARRAY['user', 'admin'] WHERE email = 'admin@example.com'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let login = |email: &'static str| {
        let http = http.clone();
        async move {
            let answer = http
                .post(
                    "/v1/auth/login",
                    None,
                    &json!({"email": email, "password": PASSWORD}),
                )
                .await
                .unwrap();
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
            answer.json().unwrap()["accessToken"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let user = login("user@example.com").await;
    let admin = login("admin@example.com").await;

    // main's own routes, with the worker (another process) running the request.
    let submitted = http
        .post(
            "/v1/requests",
            Some(&user),
            &json!({"kind": "echo", "payload": "{}", "mode": "MODE_ASYNC"}),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let id = submitted["request"]["id"].as_str().unwrap().to_owned();
    let events = http
        .get(&format!("/v1/requests/{id}/events"), Some(&user))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&events.body).into_owned();
    assert!(
        text.contains("STATUS_SUCCEEDED") && text.contains("event: end"),
        "{text}"
    );

    // The worker's admin API, forwarded to the worker process; its role check is the worker's.
    let denied = http
        .get("/v1/external-services", Some(&user))
        .await
        .unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let services = http
        .get("/v1/external-services", Some(&admin))
        .await
        .unwrap();
    assert_eq!(services.status, StatusCode::OK);
    let services = services.json().unwrap();
    let http_service = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "sim-http")
        .cloned()
        .unwrap();
    assert!(
        http_service["calls"].as_u64().unwrap() >= 1,
        "the worker made the call: {http_service}"
    );

    // gRPC-Web to main, for a service main does not serve.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(client);
    let mut auth_web =
        AuthServiceClient::with_origin(web, format!("http://{main}").parse().unwrap());
    let mut who = tonic::Request::new(WhoAmIRequest {});
    who.metadata_mut()
        .insert("authorization", format!("Bearer {user}").parse().unwrap());
    assert_eq!(
        auth_web.who_am_i(who).await.unwrap().into_inner().email,
        "user@example.com"
    );

    // The per-address limit counts the forwarded calls: 2 sign-ups + 2 logins so far, out
    // of a burst of 6.
    let wrong = json!({"email": "user@example.com", "password": "wrong password!"});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            http.post("/v1/auth/login", None, &wrong)
                .await
                .unwrap()
                .status,
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}
