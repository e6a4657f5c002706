//! The front door on main's port: HTTP/JSON routes from the contract, Server-Sent Events,
//! gRPC-Web, the OpenAPI document, and the limits at the door — against the whole stack in
//! one process, over real HTTP/1.1 and HTTP/2 on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_proto::auth::v1::WhoAmIRequest;
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::main::v1::{Mode, SubmitRequest};
use appstack_tests::http_json::HttpJson;
use appstack_tests::stack_server::StackServer;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

async fn sign_up_and_log_in(http: &HttpJson, email: &str) -> String {
    let signed = http
        .post(
            "/v1/auth/sign-up",
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(signed.status, StatusCode::OK, "{:?}", signed.json());
    assert_eq!(signed.json().unwrap()["user"]["email"], email);
    let tokens = http
        .post(
            "/v1/auth/login",
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(tokens.status, StatusCode::OK);
    let tokens = tokens.json().unwrap();
    assert_eq!(tokens["tokenType"], "Bearer");
    assert!(
        tokens["expiresIn"].as_str().is_some(),
        "int64 is a string in proto3 JSON: {tokens}"
    );
    tokens["accessToken"].as_str().unwrap().to_owned()
}

/// Reads the SSE stream at `path` to its end: the `message` events' data, and the closing
/// event's name and data.
async fn events(http: &HttpJson, path: &str, token: &str) -> (Vec<Value>, String, Value) {
    let answer = tokio::time::timeout(Duration::from_secs(30), http.get(path, Some(token)))
        .await
        .expect("the stream ended within 30 s")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let mut messages = Vec::new();
    let mut closing = None;
    for block in text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
    {
        let mut name = "";
        let mut data = "";
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v;
            }
        }
        let value: Value = serde_json::from_str(data).unwrap();
        match name {
            "message" => messages.push(value),
            other => {
                assert!(closing.is_none(), "one closing event");
                closing = Some((other.to_owned(), value));
            }
        }
    }
    let (name, data) = closing.expect("a closing event");
    (messages, name, data)
}

#[tokio::test]
async fn a_client_signs_up_submits_and_watches_over_http_json() {
    let stack = StackServer::start().await.unwrap();
    let http = HttpJson::new(stack.grpc);
    let token = sign_up_and_log_in(&http, "ada@example.com").await;

    let me = http.get("/v1/auth/me", Some(&token)).await.unwrap();
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json().unwrap()["principalKind"], "user");

    let submitted = http
        .post(
            "/v1/requests",
            Some(&token),
            &json!({"kind": "echo", "payload": "{\"n\":1}", "mode": "MODE_ASYNC", "idempotencyKey": "k-1"}),
        )
        .await
        .unwrap();
    assert_eq!(submitted.status, StatusCode::OK, "{:?}", submitted.json());
    let submitted = submitted.json().unwrap();
    assert_eq!(submitted["request"]["status"], "STATUS_QUEUED");
    assert_eq!(submitted["replayed"], false);
    let id = submitted["request"]["id"].as_str().unwrap().to_owned();

    let (transitions, closing, status) =
        events(&http, &format!("/v1/requests/{id}/events"), &token).await;
    assert_eq!(closing, "end", "{status}");
    assert_eq!(status["code"], 0);
    assert_eq!(transitions.first().unwrap()["toStatus"], "STATUS_QUEUED");
    assert_eq!(transitions.last().unwrap()["toStatus"], "STATUS_SUCCEEDED");
    assert!(transitions.windows(2).all(|w| {
        w[0]["sequence"].as_str().unwrap().parse::<i64>().unwrap()
            < w[1]["sequence"].as_str().unwrap().parse::<i64>().unwrap()
    }));

    let got = http
        .get(&format!("/v1/requests/{id}"), Some(&token))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["status"], "STATUS_SUCCEEDED");
    assert!(!got["result"].as_str().unwrap().is_empty());

    let listed = http
        .get(
            "/v1/requests?statuses=STATUS_SUCCEEDED&pageSize=10",
            Some(&token),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["requests"][0]["id"], id.as_str());

    // The same handler behind both protocols: the key given over HTTP replays over gRPC.
    let mut grpc = stack.requests(&token).await.unwrap();
    let replay = grpc
        .submit(SubmitRequest {
            kind: "echo".into(),
            payload: "{\"n\":1}".into(),
            idempotency_key: "k-1".into(),
            mode: Mode::Async as i32,
            deadline: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.request.unwrap().id, id);

    // A SYNC submit answers with the outcome.
    let sync = http
        .post(
            "/v1/requests",
            Some(&token),
            &json!({"kind": "echo", "payload": "{}", "mode": "MODE_SYNC"}),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(sync["request"]["status"], "STATUS_SUCCEEDED");

    // Cancel of a finished request is FAILED_PRECONDITION: 400 with code 9.
    let cancel = http
        .send(
            Method::POST,
            &format!("/v1/requests/{id}:cancel"),
            Some(&token),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cancel.status, StatusCode::BAD_REQUEST);
    assert_eq!(cancel.json().unwrap()["code"], 9);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn errors_carry_the_grpc_code_the_mapped_status_and_the_details() {
    let stack = StackServer::start().await.unwrap();
    let http = HttpJson::new(stack.grpc);
    let token = sign_up_and_log_in(&http, "grace@example.com").await;

    let anonymous = http.get("/v1/requests", None).await.unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.header("www-authenticate"), "Bearer");
    assert_eq!(anonymous.json().unwrap()["code"], 16);

    let taken = http
        .post(
            "/v1/auth/sign-up",
            None,
            &json!({"email": "grace@example.com", "password": PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.json().unwrap()["code"], 6);

    let weak = http
        .post(
            "/v1/auth/sign-up",
            None,
            &json!({"email": "not-an-email", "password": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    let weak = weak.json().unwrap();
    assert_eq!(
        weak["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert!(
        !weak["details"][0]["fieldViolations"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let unknown_kind = http
        .post(
            "/v1/requests",
            Some(&token),
            &json!({"kind": "nope", "payload": "{}", "mode": "MODE_ASYNC"}),
        )
        .await
        .unwrap();
    assert_eq!(unknown_kind.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_kind.json().unwrap()["code"], 3);

    let missing = http
        .get(
            "/v1/requests/0190f0f0-0000-7000-8000-000000000000",
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json().unwrap()["code"], 5);

    let stream_missing = http
        .get(
            "/v1/requests/0190f0f0-0000-7000-8000-000000000000/events",
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(
        stream_missing.status,
        StatusCode::NOT_FOUND,
        "a stream failing at once is a plain error"
    );

    let unknown_field = http
        .post(
            "/v1/requests",
            Some(&token),
            &json!({"kind": "echo", "surprise": true}),
        )
        .await
        .unwrap();
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown_field.json().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("surprise")
    );

    let no_route = http.get("/v1/nothing-here", Some(&token)).await.unwrap();
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    let wrong_verb = http
        .send(Method::DELETE, "/v1/requests", Some(&token), None, &[])
        .await
        .unwrap();
    assert_eq!(wrong_verb.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_verb.header("allow"), "POST, GET");

    let not_json = http
        .send(
            Method::POST,
            "/v1/requests",
            Some(&token),
            None,
            &[("content-type", "text/plain"), ("content-length", "2")],
        )
        .await
        .unwrap();
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = "x".repeat(stack.config.front_door.max_body_bytes + 1);
    let oversized = http
        .post(
            "/v1/requests",
            Some(&token),
            &json!({"kind": "echo", "payload": huge}),
        )
        .await
        .unwrap();
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);

    let big_header = "y".repeat(stack.config.front_door.max_header_bytes);
    let headers = http
        .send(
            Method::GET,
            "/v1/requests",
            Some(&token),
            None,
            &[("x-padding", &big_header)],
        )
        .await
        .unwrap();
    assert_eq!(headers.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Admin routes need the admin role, checked by the same handler as over gRPC.
    let denied = http.get("/v1/queue/stats", Some(&token)).await.unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let admin = stack.admin_token("root@example.com").await.unwrap();
    let stats = http.get("/v1/queue/stats", Some(&admin)).await.unwrap();
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.json().unwrap()["states"].is_array());
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_calls_are_limited_per_address_on_every_protocol() {
    let stack = StackServer::start_with(|config| {
        config.front_door.public_rate.per_second = 1;
        config.front_door.public_rate.burst = 3;
    })
    .await
    .unwrap();
    let http = HttpJson::new(stack.grpc);
    let login = json!({"email": "nobody@example.com", "password": PASSWORD});
    for _ in 0..3 {
        let answer = http.post("/v1/auth/login", None, &login).await.unwrap();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = http.post("/v1/auth/login", None, &login).await.unwrap();
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(
        limited.json().unwrap()["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );

    // The same bucket holds for a gRPC client from the same address.
    let mut auth = AuthServiceClient::new(stack.channel().await.unwrap());
    let status = auth
        .login(appstack_proto::auth::v1::LoginRequest {
            email: "nobody@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_web_reaches_the_same_services() {
    let stack = StackServer::start().await.unwrap();
    let http = HttpJson::new(stack.grpc);
    let token = sign_up_and_log_in(&http, "web@example.com").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(false)
        .build_http();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(client);
    let origin: http::Uri = format!("http://{}", stack.grpc).parse().unwrap();
    let mut auth = AuthServiceClient::with_origin(web, origin);
    let mut request = tonic::Request::new(WhoAmIRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let me = auth.who_am_i(request).await.unwrap().into_inner();
    assert_eq!(me.email, "web@example.com");
    let anonymous = auth.who_am_i(WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let origin = "https://console.example.com";
    let preflight = [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization,content-type",
        ),
    ];
    let closed = StackServer::start().await.unwrap();
    let http = HttpJson::new(closed.grpc);
    let answer = http
        .send(Method::OPTIONS, "/v1/requests", None, None, &preflight)
        .await
        .unwrap();
    assert_eq!(answer.header("access-control-allow-origin"), "");
    closed.stop().await.unwrap();

    let open = StackServer::start_with(|config| {
        config.front_door.cors_allowed_origins = vec![origin.into()];
    })
    .await
    .unwrap();
    let http = HttpJson::new(open.grpc);
    let answer = http
        .send(Method::OPTIONS, "/v1/requests", None, None, &preflight)
        .await
        .unwrap();
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(answer.header("access-control-allow-origin"), origin);
    let other = http
        .send(
            Method::OPTIONS,
            "/v1/requests",
            None,
            None,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(other.header("access-control-allow-origin"), "");
    open.stop().await.unwrap();
}

#[tokio::test]
async fn the_openapi_document_is_served_and_the_committed_copy_matches_the_contract() {
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proto/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let generated = appstack_server::front_door::published_document().unwrap();
    assert!(
        committed == generated,
        "proto/openapi.json drifted from the contract; regenerate it: \
         cargo run -p appstack -- openapi > proto/openapi.json"
    );
    let stack = StackServer::start().await.unwrap();
    let served = HttpJson::new(stack.grpc)
        .get("/openapi.json", None)
        .await
        .unwrap();
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(
        served.json().unwrap(),
        generated,
        "all three services are local here"
    );
    stack.stop().await.unwrap();
}
