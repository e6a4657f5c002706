//! The web console in a real browser: `console/e2e/console.mjs` (playwright-core driving
//! Debian's headless Chromium, axe-core for accessibility) against the whole stack served by
//! main, the simulator behind its routes. Screenshots land in `target/console-screenshots`.
//!
//! Needs `chromium` and `console/node_modules` (`npm ci` in `console/`); `.ci/run` installs
//! both. Elsewhere, without them, the test says so and stops (with `CI` set it fails).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use appstack_proto::main::v1::Status;
use appstack_tests::stack_server::StackServer;

const ADMIN_EMAIL: &str = "console-admin@example.com";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")))
        .filter(|path| path.exists())
}

#[tokio::test]
async fn a_user_and_an_admin_work_through_the_console_in_chromium() {
    let modules = repo().join("console/node_modules/playwright-core");
    let Some(chromium) = chromium().filter(|_| modules.exists()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the browser suite needs chromium and console/node_modules (apt-get install chromium; npm ci in console/)"
        );
        eprintln!("chromium or console/node_modules missing; skipping the browser suite");
        return;
    };
    let stack = StackServer::start().await.unwrap();
    stack.admin_token(ADMIN_EMAIL).await.unwrap();
    let screenshots = repo().join("target/console-screenshots");
    let child = tokio::process::Command::new("node")
        .arg(repo().join("console/e2e/console.mjs"))
        .env("CONSOLE_URL", format!("http://{}", stack.grpc))
        .env("SIMULATOR_URL", format!("http://{}", stack.simulator.http))
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", "correct horse battery")
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the browser suite ended within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "the browser suite failed:\n{stderr}\n{stdout}"
    );
    let results: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert!(results["cspErrors"].as_array().unwrap().is_empty());

    // What the browser did is what the API holds: the requeued dead letter ran again and
    // succeeded (the faults were cleared before the requeue).
    let dead_id = results["deadId"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = request_status(&stack, &dead_id).await;
        if status == Status::Succeeded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the requeued request is {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for page in [
        "1-sign-in",
        "2-requests",
        "3-request",
        "4-dead",
        "5-operations",
        "6-requeued",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "{page}.png"
        );
    }
    stack.stop().await.unwrap();
}

/// The request's status, from its table: the browser's user and its token live in the
/// browser only.
async fn request_status(stack: &StackServer, id: &str) -> Status {
    let pool = sqlx::PgPool::connect(&stack.config.database.url)
        .await
        .unwrap();
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM requests.requests WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    match status.as_str() {
        "succeeded" => Status::Succeeded,
        "dead" => Status::Dead,
        "queued" => Status::Queued,
        "scheduled" => Status::Scheduled,
        "running" => Status::Running,
        other => panic!("unexpected status {other}"),
    }
}
