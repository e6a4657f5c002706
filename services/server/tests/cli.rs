//! The `appstack` binary's command line: configuration errors are clear, tools work.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

fn appstack() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appstack"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_URL_FILE")
        .env_remove("RUST_LOG");
    command
}

#[test]
fn help_lists_the_roles() {
    let out = appstack().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for role in ["auth", "migrate", "dev", "keygen", "bootstrap-admin"] {
        assert!(text.contains(role), "{role} missing:\n{text}");
    }
}

#[test]
fn a_typo_in_the_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appstack.toml");
    std::fs::write(&path, "[server]\ngrpcAdress = \"0.0.0.0:1\"\n").unwrap();
    let out = appstack()
        .args(["auth", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpcAdress"), "{err}");
}

#[test]
fn bad_values_from_env_and_missing_database_are_reported() {
    let out = appstack()
        .arg("auth")
        .env("APPSTACK_AUTH__ACCESS_TOKEN_TTL", "forever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.accessTokenTtl (APPSTACK_AUTH__ACCESS_TOKEN_TTL)"),
        "{err}"
    );

    let out = appstack().arg("auth").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database.url: is required"), "{err}");
}

#[test]
fn keygen_writes_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = appstack()
        .args(["keygen", "--kid", "k1", "--keys-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = appstack_auth::signing::load_folder(dir.path()).unwrap();
    assert_eq!(folder.active().unwrap().kid, "k1");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("k1.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    // Key ids are never reused.
    let again = appstack()
        .args(["keygen", "--kid", "k1", "--keys-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn the_config_file_may_come_from_appstack_config() {
    // APPSTACK_CONFIG is read by the flag, not a setting: it used to fail every load as the
    // unknown key `config`. The file's own typo is what gets reported.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appstack.toml");
    std::fs::write(&path, "[server]\ngrpcAdress = \"0.0.0.0:1\"\n").unwrap();
    let out = appstack()
        .arg("auth")
        .env("APPSTACK_CONFIG", &path)
        .env("APPSTACK_ADMIN_PASSWORD", "not a setting either")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpcAdress"), "{err}");
    assert!(!err.contains("`config`"), "{err}");
}

#[test]
fn environment_variables_map_to_camel_case_keys() {
    // Both rules broken: the variables reached `database.maxConnections` and
    // `database.minConnections`, and the message names them by their camelCase paths.
    let out = appstack()
        .arg("migrate")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("APPSTACK_DATABASE__MAX_CONNECTIONS", "0")
        .env("APPSTACK_DATABASE__MIN_CONNECTIONS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database.maxConnections: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("database.minConnections: must not exceed maxConnections"),
        "{err}"
    );
}

#[test]
fn map_entries_from_the_environment_are_refused_by_name() {
    let out = appstack()
        .arg("migrate")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("APPSTACK_ROUTES__CHARGE__SERVICE", "payments")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "APPSTACK_ROUTES__CHARGE__SERVICE: routes entries are set in the configuration file"
        ),
        "{err}"
    );
}

#[test]
fn snake_case_keys_in_the_file_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appstack.toml");
    std::fs::write(&path, "[database]\nmax_connections = 3\n").unwrap();
    let out = appstack()
        .args(["migrate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_connections"), "{err}");
}

#[test]
fn the_database_url_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = |file: &std::path::Path, url: Option<&str>| {
        let mut command = appstack();
        command
            .arg("migrate")
            .env("DATABASE_URL_FILE", file)
            // A rule broken on purpose, so the run stops after loading the configuration.
            .env("APPSTACK_DATABASE__MAX_CONNECTIONS", "0");
        if let Some(url) = url {
            command.env("DATABASE_URL", url);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A Secret's file, newline and all: the URL is taken, only the broken rule is reported.
    let good = dir.path().join("uri");
    std::fs::write(&good, "postgres://app:s3cret@db:5432/app\n").unwrap();
    let err = run(&good, None);
    assert!(err.contains("database.maxConnections"), "{err}");
    assert!(!err.contains("database.url"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");

    // The file's content goes through the same rules as DATABASE_URL.
    let wrong_scheme = dir.path().join("mysql");
    std::fs::write(&wrong_scheme, "mysql://x").unwrap();
    let err = run(&wrong_scheme, None);
    assert!(
        err.contains("database.url: must start with postgres://"),
        "{err}"
    );

    let err = run(&dir.path().join("missing"), None);
    assert!(err.contains("DATABASE_URL_FILE: cannot open"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    assert!(run(&empty, None).contains("is empty"));

    let huge = dir.path().join("huge");
    std::fs::write(&huge, "p".repeat(70 * 1024)).unwrap();
    assert!(run(&huge, None).contains("larger than"));

    let err = run(&good, Some("postgres://other@db/app"));
    assert!(err.contains("set together with DATABASE_URL"), "{err}");
}

/// Runs `appstack auth` with `env` until it exits (at most 20 s, then it is killed): its
/// standard error, or `None` when it kept running.
fn auth_exit_with(env: &[(&str, &str)]) -> Option<String> {
    let mut command = appstack();
    command
        .arg("auth")
        .env("DATABASE_URL", "postgres://app@127.0.0.1:1/app")
        .env("APPSTACK_SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("APPSTACK_SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(20) {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success());
            return Some(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn trace_exporters_and_protocols_it_does_not_speak_stop_the_start_by_name() {
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ] {
        let err = auth_exit_with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            (name, value),
        ])
        .unwrap_or_else(|| panic!("{name}={value} was not refused"));
        assert!(err.contains(name) && err.contains(value), "{err}");
    }
}
