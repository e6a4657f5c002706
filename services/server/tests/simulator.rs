//! `appstack simulator` as a real process: it serves the HTTP form on its port, takes a fault
//! plan at start, changes it at run time, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange; the status and body, or `None` when nothing answers.
fn http(port: u16, method: &str, path: &str, key: &str, body: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

#[test]
fn the_simulator_serves_takes_faults_and_stops_on_sigterm() {
    let (http_port, grpc_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_appstack"))
        .args([
            "simulator",
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc_port}"),
            "--faults",
            r#"{"errorRate": 1.0, "error": {"httpStatus": 502, "grpcCode": 14}}"#,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(answer) = http(http_port, "POST", "/charge", "k1", "{}") {
            break answer;
        }
        assert!(Instant::now() < deadline, "the simulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first.0, 502, "the plan given at start applies");

    let (status, _) = http(http_port, "PUT", "/_simulator/faults", "", "{}").unwrap();
    assert_eq!(status, 204);
    let (status, body) = http(http_port, "POST", "/charge", "k1", r#"{"n": 7}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""n":7"#), "{body}");
    let (_, calls) = http(http_port, "GET", "/_simulator/calls", "", "").unwrap();
    assert!(calls.contains(r#""duplicateCalls":1"#), "{calls}");

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the simulator did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_fault_plan_is_refused_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_appstack"))
        .args([
            "simulator",
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--grpc-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--faults",
            r#"{"errorRate": 7}"#,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("errorRate"), "{stderr}");
}
