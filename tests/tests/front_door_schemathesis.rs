//! schemathesis (PyPI) against the running front door: every operation of the served OpenAPI
//! document, with generated valid and invalid input, anonymous and with a user's token. It
//! must find no 5xx, no response outside the document (status, content type, headers,
//! schema), no accepted invalid input, no operation open without its token, and the right
//! answer to unsupported methods. Not checked: `positive_data_acceptance`, which expects
//! every schema-valid body to succeed; the contract's rules beyond types (required fields,
//! lengths, formats) are written in its comments and enforced by the handlers, not expressed
//! as schema constraints, so a schema-valid body may rightly get 400 with its violations.
//!
//! `.ci/run` installs schemathesis; elsewhere, without it on PATH, the test says so and stops
//! (with `CI` set it fails instead).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Stdio;
use std::time::Duration;

use appstack_tests::stack_server::StackServer;

/// Bounds of one run: examples per operation and the whole run's time.
const EXAMPLES: &str = "30";
const MAX_SECONDS: u64 = 60;

async fn schemathesis(base: &str, token: Option<&str>, report: &std::path::Path) -> (bool, String) {
    let mut command = tokio::process::Command::new(program());
    command
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", EXAMPLES, "--seed", "20261202"])
        .args(["--max-time", &MAX_SECONDS.to_string()])
        .args(["--request-timeout", "10", "--workers", "2", "--no-color"])
        .args(["--generation-database", "none"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let output = tokio::time::timeout(Duration::from_secs(MAX_SECONDS + 60), command.output())
        .await
        .expect("schemathesis ended within its budget")
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `APPSTACK_TEST_SCHEMATHESIS` (CI's pinned install), else `schemathesis` on PATH.
fn program() -> std::ffi::OsString {
    std::env::var_os("APPSTACK_TEST_SCHEMATHESIS").unwrap_or_else(|| "schemathesis".into())
}

fn installed() -> bool {
    std::process::Command::new(program())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn schemathesis_finds_nothing_anonymous_or_authenticated() {
    if !installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is not installed (pip install schemathesis)"
        );
        eprintln!("schemathesis is not installed; skipping (pip install schemathesis)");
        return;
    }
    let stack = StackServer::start_with(|config| {
        // Generated sign-ups and logins come from one address; the limit is tested elsewhere.
        config.front_door.public_rate.per_second = 100_000;
        config.front_door.public_rate.burst = 100_000;
    })
    .await
    .unwrap();
    let token = stack.user_token("fuzz@example.com").await.unwrap();
    let base = format!("http://{}", stack.grpc);
    let reports = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis");
    std::fs::create_dir_all(&reports).unwrap();
    for (name, token) in [("anonymous", None), ("authenticated", Some(token.as_str()))] {
        let (passed, text) = schemathesis(&base, token, &reports.join(format!("{name}.xml"))).await;
        println!("--- schemathesis, {name} ---\n{text}");
        assert!(passed, "schemathesis found problems ({name}):\n{text}");
    }
    stack.stop().await.unwrap();
}
