//! The simulator over real HTTP and gRPC on loopback: echoes, every injected fault, run-time
//! plan changes, and the ledger's duplicate counts.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_proto::external::v1::ProcessRequest;
use appstack_proto::external::v1::processor_client::ProcessorClient;
use appstack_simulator::{ErrorAnswer, FaultPlan, Outage, Simulator};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::Code;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `method` on `path` with `body`; the status, the headers and the body, or the transport
/// error's text.
async fn call(
    client: &HttpClient,
    sim: &Simulator,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", sim.http))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn http_echoes_and_counts_duplicates_by_key() {
    let sim = Simulator::start_on_loopback(FaultPlan::default())
        .await
        .unwrap();
    let client = http_client();
    for _ in 0..2 {
        let (status, _, body) = call(&client, &sim, "POST", "/charge", Some("k1"), r#"{"a":1}"#)
            .await
            .unwrap();
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["echo"]["a"], 1);
        assert_eq!(answer["idempotencyKey"], "k1");
    }
    call(&client, &sim, "POST", "/charge", Some("k2"), "{}")
        .await
        .unwrap();
    let (status, _, _) = call(&client, &sim, "POST", "/charge", None, "not json")
        .await
        .unwrap();
    assert_eq!(status, 400);

    let stats = sim.calls().stats();
    assert_eq!(
        (stats.calls, stats.distinct_keys, stats.duplicate_calls),
        (3, 2, 1)
    );
    assert_eq!(sim.calls().calls_for("k1"), 2);
    // The same figures over HTTP.
    let (_, _, body) = call(&client, &sim, "GET", "/_simulator/calls", None, "")
        .await
        .unwrap();
    let over_http: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_http["duplicateCalls"], 1);
}

#[tokio::test]
async fn http_faults_error_throttle_and_drop() {
    let sim = Simulator::start_on_loopback(FaultPlan {
        error_rate: 1.0,
        error: ErrorAnswer {
            http_status: 502,
            grpc_code: 14,
        },
        ..FaultPlan::default()
    })
    .await
    .unwrap();
    let client = http_client();
    let (status, _, _) = call(&client, &sim, "POST", "/x", Some("e"), "{}")
        .await
        .unwrap();
    assert_eq!(status, 502);

    sim.set_faults(FaultPlan {
        throttle_rate: 1.0,
        retry_after: Duration::from_millis(1500),
        ..FaultPlan::default()
    })
    .unwrap();
    let (status, headers, _) = call(&client, &sim, "POST", "/x", Some("t"), "{}")
        .await
        .unwrap();
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2", "rounded up to whole seconds");

    sim.set_faults(FaultPlan {
        drop_rate: 1.0,
        ..FaultPlan::default()
    })
    .unwrap();
    let dropped = call(&client, &sim, "POST", "/x", Some("d"), "{}").await;
    assert!(dropped.is_err(), "{dropped:?}");

    let outcomes = sim.calls().stats().outcomes;
    assert_eq!(
        (outcomes.failed, outcomes.throttled, outcomes.dropped),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn plans_change_at_run_time_and_outages_follow_their_script() {
    let sim = Simulator::start_on_loopback(FaultPlan::default())
        .await
        .unwrap();
    let client = http_client();
    let (status, _, body) = call(
        &client,
        &sim,
        "PUT",
        "/_simulator/faults",
        None,
        r#"{"errorRate": 3}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("errorRate"), "{body}");
    let (status, _, _) = call(
        &client,
        &sim,
        "PUT",
        "/_simulator/faults",
        None,
        r#"{"nope": 1}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 400);

    let plan = r#"{"outages": [{"after": "0s", "lasting": "300ms"}]}"#;
    let (status, _, _) = call(&client, &sim, "PUT", "/_simulator/faults", None, plan)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, _, _) = call(&client, &sim, "POST", "/x", Some("o1"), "{}")
        .await
        .unwrap();
    assert_eq!(status, 503, "inside the outage");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, _) = call(&client, &sim, "POST", "/x", Some("o2"), "{}")
        .await
        .unwrap();
    assert_eq!(status, 200, "after the outage");
    assert_eq!(
        sim.set_faults(FaultPlan {
            outages: vec![Outage {
                after: Duration::ZERO,
                lasting: Duration::from_secs(1)
            }],
            ..FaultPlan::default()
        }),
        Ok(())
    );
}

fn process(key: &str) -> ProcessRequest {
    ProcessRequest {
        id: "r1".into(),
        kind: "charge".into(),
        payload: r#"{"amount": 5}"#.into(),
        idempotency_key: key.into(),
        attempt: 1,
    }
}

#[tokio::test]
async fn grpc_echoes_and_injects_every_fault() {
    let sim = Simulator::start_on_loopback(FaultPlan::default())
        .await
        .unwrap();
    let mut client = ProcessorClient::connect(format!("http://{}", sim.grpc))
        .await
        .unwrap();
    let answer = client.process(process("g1")).await.unwrap().into_inner();
    let result: serde_json::Value = serde_json::from_str(&answer.result).unwrap();
    assert_eq!(result["echo"]["amount"], 5);
    let bad = client
        .process(ProcessRequest {
            payload: "{".into(),
            ..process("g0")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    sim.set_faults(FaultPlan {
        error_rate: 1.0,
        error: ErrorAnswer {
            http_status: 500,
            grpc_code: Code::Unavailable as i32,
        },
        ..FaultPlan::default()
    })
    .unwrap();
    assert_eq!(
        client.process(process("g2")).await.unwrap_err().code(),
        Code::Unavailable
    );

    sim.set_faults(FaultPlan {
        throttle_rate: 1.0,
        retry_after: Duration::from_millis(250),
        ..FaultPlan::default()
    })
    .unwrap();
    let throttled = client.process(process("g3")).await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    assert_eq!(
        throttled.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "250"
    );

    sim.set_faults(FaultPlan {
        drop_rate: 1.0,
        ..FaultPlan::default()
    })
    .unwrap();
    let dropped = client.process(process("g4")).await.unwrap_err();
    assert!(
        matches!(
            dropped.code(),
            Code::Internal | Code::Unknown | Code::Unavailable | Code::Cancelled
        ),
        "{dropped:?}"
    );
    // The stream was reset, not the connection: the next call on it works.
    sim.set_faults(FaultPlan::default()).unwrap();
    client.process(process("g5")).await.unwrap();

    let stats = sim.calls().stats();
    assert_eq!(stats.outcomes.dropped, 1);
    assert_eq!(stats.distinct_keys, 5, "g0 was refused before it counted");
}
