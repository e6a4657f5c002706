//! One request's trace across real processes: `appstack auth`, `appstack main` and
//! `appstack worker`, each exporting OTLP/gRPC to a real receiver on loopback, with the
//! simulator as the external service.
//!
//! The ASYNC request's trace must be one tree: the caller's span → main's Submit (server)
//! → main's GetJwks (client; main had never seen the token's key) → auth's GetJwks
//! (server); and Submit → the worker's `process echo` (consumer, continuing the context
//! stored with the job) → the call to the external service (client), whose `traceparent`
//! the service received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::main::v1::request_service_client::RequestServiceClient;
use appstack_proto::main::v1::{GetRequest, Mode, Status, SubmitRequest};
use appstack_simulator::{FaultPlan, Simulator};
use appstack_tests::auth_server::http_get;
use appstack_tests::clients::{bearer, sign_up_and_login};
use appstack_tests::otlp::{OtlpReceiver, ReceivedSpan, kind};
use appstack_tests::processes::appstack_binary;
use appstack_tests::stack_server::StackServer;
use appstack_tests::wait::eventually;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// The caller's own trace: the Submit must continue it.
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Role {
    grpc: SocketAddr,
    admin: SocketAddr,
    _child: Child,
}

/// Starts `appstack <role>` with `config` (its ports replaced by free ones), exporting
/// traces to `receiver`, and waits for it to be ready.
async fn start_role(
    role: &str,
    mut config: appstack_config::StackConfig,
    dir: &Path,
    receiver: &OtlpReceiver,
) -> Role {
    config.server.grpc_addr = loopback_port();
    config.server.admin_addr = loopback_port();
    config.log.filter = "warn".into();
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let child = Command::new(appstack_binary().unwrap())
        .arg(role)
        .arg("--config")
        .arg(&path)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        // Quick batches: the test waits for the spans.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("RUST_LOG")
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
    Role {
        grpc: config.server.grpc_addr,
        admin,
        _child: child,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The span named `name` from `service` among `spans`.
fn find<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

/// The spans of `trace` once every `(service, name)` of `expected` has arrived (the
/// exporters send in batches, each process on its own schedule).
async fn spans_of(
    receiver: &OtlpReceiver,
    trace: &str,
    expected: &[(&str, &str)],
) -> Vec<ReceivedSpan> {
    eventually(
        &format!("the spans of {trace}"),
        Duration::from_secs(30),
        || {
            let spans = receiver.trace(trace);
            let complete = expected
                .iter()
                .all(|(service, name)| find(&spans, service, name).is_some());
            async move { complete.then_some(spans) }
        },
    )
    .await
}

/// The trace as an indented tree, for the log (and the closing note's trace shape).
fn render_tree(spans: &[ReceivedSpan], parent: &str, depth: usize, out: &mut String) {
    for span in spans.iter().filter(|s| s.parent_span_id == parent) {
        out.push_str(&format!(
            "{}{} [{}, kind {}]\n",
            "  ".repeat(depth),
            span.name,
            span.service,
            span.kind
        ));
        render_tree(spans, &span.span_id, depth + 1, out);
    }
}

#[tokio::test]
async fn one_request_is_one_trace_from_submit_through_auth_the_queue_and_the_external_call() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let simulator = Simulator::start_on_loopback(FaultPlan::default())
        .await
        .unwrap();
    let database = appstack_tests::pg::test_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StackServer::test_config(&simulator);
    config.database.url = database.url.clone();
    config.auth.keys_dir = dir.path().join("keys");

    let auth = start_role("auth", config.clone(), dir.path(), &receiver).await;
    config.auth.endpoint = format!("http://{}", auth.grpc);
    let main = start_role("main", config.clone(), dir.path(), &receiver).await;
    let _worker = start_role("worker", config.clone(), dir.path(), &receiver).await;

    let mut auth_client = AuthServiceClient::new(channel(auth.grpc).await);
    let token = sign_up_and_login(
        &mut auth_client,
        "tracer@example.com",
        "correct horse battery",
    )
    .await
    .unwrap()
    .access_token;
    let mut requests = RequestServiceClient::new(channel(main.grpc).await);
    let mut submit = bearer(
        SubmitRequest {
            kind: "echo".into(),
            payload: r#"{"traced":true}"#.into(),
            idempotency_key: String::new(),
            mode: Mode::Async as i32,
            deadline: None,
        },
        &token,
    );
    submit.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let request_id = requests
        .submit(submit)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    eventually("the request to succeed", Duration::from_secs(30), || {
        let mut requests = requests.clone();
        let get = bearer(
            GetRequest {
                id: request_id.clone(),
            },
            &token,
        );
        async move {
            let request = requests.get(get).await.ok()?.into_inner();
            (request.status == Status::Succeeded as i32).then_some(())
        }
    })
    .await;

    let spans = spans_of(
        &receiver,
        CALLER_TRACE,
        &[
            ("appstack-main", "appstack.main.v1.RequestService/Submit"),
            ("appstack-main", "appstack.auth.v1.AuthService/GetJwks"),
            ("appstack-auth", "appstack.auth.v1.AuthService/GetJwks"),
            ("appstack-worker", "process echo"),
            ("appstack-worker", "POST"),
        ],
    )
    .await;
    let mut tree = String::new();
    render_tree(&spans, "", 0, &mut tree);
    render_tree(&spans, CALLER_SPAN, 1, &mut tree);
    eprintln!("the trace of {request_id} ({} spans):\n{tree}", spans.len());

    let submit = find(
        &spans,
        "appstack-main",
        "appstack.main.v1.RequestService/Submit",
    )
    .unwrap();
    assert_eq!(
        submit.parent_span_id, CALLER_SPAN,
        "Submit continues the caller's span"
    );
    assert_eq!(submit.kind, kind::SERVER);
    assert_eq!(submit.attribute("rpc.system"), Some("grpc"));
    assert_eq!(submit.attribute("rpc.method"), Some("Submit"));
    assert_eq!(submit.attribute("rpc.grpc.status_code"), Some("0"));

    let fetch = find(
        &spans,
        "appstack-main",
        "appstack.auth.v1.AuthService/GetJwks",
    )
    .unwrap();
    assert_eq!(fetch.kind, kind::CLIENT);
    assert_eq!(
        fetch.parent_span_id, submit.span_id,
        "the key fetch is the Submit's"
    );
    let served = find(
        &spans,
        "appstack-auth",
        "appstack.auth.v1.AuthService/GetJwks",
    )
    .unwrap();
    assert_eq!(served.kind, kind::SERVER);
    assert_eq!(
        served.parent_span_id, fetch.span_id,
        "auth continues main's client span"
    );

    let process = find(&spans, "appstack-worker", "process echo").unwrap();
    assert_eq!(process.kind, kind::CONSUMER);
    assert_eq!(
        process.parent_span_id, submit.span_id,
        "the worker continues the context stored with the job"
    );
    assert_eq!(
        process.attribute("messaging.message.id"),
        Some(request_id.as_str())
    );
    assert_eq!(process.attribute("appstack.outcome"), Some("succeeded"));

    let call = find(&spans, "appstack-worker", "POST").unwrap();
    assert_eq!(call.kind, kind::CLIENT);
    assert_eq!(call.parent_span_id, process.span_id);
    assert_eq!(call.attribute("http.response.status_code"), Some("200"));
    assert_eq!(call.attribute("appstack.service"), Some("sim-http"));

    // The external service received the call span's context.
    assert_eq!(
        simulator.calls().traceparents_for(&request_id),
        [format!("00-{CALLER_TRACE}-{}-01", call.span_id)]
    );
    // No span of the request strays out of the trace, and none is an orphan within it.
    for span in &spans {
        assert!(
            span.parent_span_id == CALLER_SPAN
                || spans.iter().any(|p| p.span_id == span.parent_span_id),
            "{} has a parent outside the trace",
            span.name
        );
    }
    // Probes make no spans: health checks would drown every trace store.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| !s.name.starts_with("grpc.health")),
    );

    // A SYNC request executes inside its Submit: main's own call span, under the Submit.
    let sync = requests
        .submit(bearer(
            SubmitRequest {
                kind: "echo".into(),
                payload: r#"{"sync":true}"#.into(),
                idempotency_key: String::new(),
                mode: Mode::Sync as i32,
                deadline: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(sync.status, Status::Succeeded as i32);
    let sent = simulator.calls().traceparents_for(&sync.id);
    let sync_trace = sent[0].split('-').nth(1).unwrap().to_owned();
    assert_ne!(
        sync_trace, CALLER_TRACE,
        "a call without traceparent starts a trace"
    );
    let sync_spans = spans_of(
        &receiver,
        &sync_trace,
        &[
            ("appstack-main", "appstack.main.v1.RequestService/Submit"),
            ("appstack-main", "POST"),
        ],
    )
    .await;
    let sync_submit = find(
        &sync_spans,
        "appstack-main",
        "appstack.main.v1.RequestService/Submit",
    )
    .unwrap();
    assert_eq!(sync_submit.parent_span_id, "", "the root of its trace");
    let sync_call = find(&sync_spans, "appstack-main", "POST").unwrap();
    assert_eq!(sync_call.parent_span_id, sync_submit.span_id);
    assert!(
        find(
            &sync_spans,
            "appstack-main",
            "appstack.auth.v1.AuthService/GetJwks"
        )
        .is_none(),
        "the key is cached now: no fetch"
    );
    let _ = (main.admin, auth.admin);
}
