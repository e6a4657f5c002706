//! `appstack dev` as a real process: one per data folder, the usual configuration sources,
//! plain logs when not on a terminal, no PostgreSQL notices on a restart.
//!
//! Each test starts the real binary on a temporary data folder and free loopback ports,
//! with its own private PostgreSQL (from the machine's binaries). Every wait has a deadline,
//! generous for a busy 2-core machine; nothing asserts how long anything took.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appstack_proto::auth::v1::LoginRequest;
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;

/// Up to readiness: initdb (durable), migrations, one OWASP-cost argon2 hash.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Up to the exit of a process that should exit: a refusal, or a drain and `pg_ctl stop`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A temporary folder the `postgres` user can traverse (we may run as root), and the
/// (not yet existing) data folder inside it. Stops the cluster when dropped, so a failing
/// test leaves no server behind.
struct Folder {
    _temp: tempfile::TempDir,
    data_dir: PathBuf,
}

impl Folder {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data_dir = temp.path().canonicalize().unwrap().join("dev");
        Self {
            _temp: temp,
            data_dir,
        }
    }

    fn postmaster_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join("postgres/postmaster.pid")).ok()
    }

    fn listing(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data_dir.join(sub))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let pg = self.data_dir.join("postgres");
        if pg.join("postmaster.pid").exists() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = runtime.block_on(appstack_localpg::stop_cluster(&pg));
        }
    }
}

/// `appstack dev` on `folder` with the given ports, extra arguments and environment.
fn dev_command(folder: &Folder, grpc: u16, admin: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appstack"));
    command
        .arg("dev")
        .arg("--data-dir")
        .arg(&folder.data_dir)
        .arg("--grpc-addr")
        .arg(loopback(grpc).to_string())
        .arg("--admin-addr")
        .arg(loopback(admin).to_string())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("APPSTACK_CONFIG")
        .env_remove("APPSTACK_TEST_PG_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running child whose stdout and stderr (both pipes, not terminals) are collected.
struct Process {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut stream in streams {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        Self {
            child,
            output,
            readers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written so far, stdout and stderr interleaved.
    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until `/readyz` answers 200; panics (with the output) if the process exits or
    /// the deadline passes first.
    fn wait_ready(&mut self, admin: u16) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("dev exited ({status}) before ready:\n{}", self.output());
            }
            if readyz(admin) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the exit; kills the process and panics past the deadline. Returns the
    /// status and the whole output.
    fn wait_exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("still running past the deadline:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for reader in std::mem::take(&mut self.readers) {
            reader.join().unwrap();
        }
        (status, self.output())
    }

    /// SIGTERM, as Kubernetes or Ctrl-C would stop it, then [`Process::wait_exit`].
    fn terminate(self) -> (ExitStatus, String) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.wait_exit()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Only when a test failed midway: leave nothing running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The status of `GET /readyz` on the admin port, or `None` if nothing answered.
fn readyz(admin: u16) -> Option<u16> {
    admin_get(admin, "/readyz")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The whole response to `GET path` on the admin port, or `None` if nothing answered.
fn admin_get(admin: u16, path: &str) -> Option<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&loopback(admin), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// Logs in as the dev admin (password from the data folder); returns `expiresIn`.
fn admin_login_expires_in(folder: &Folder, grpc: u16) -> i64 {
    let password = std::fs::read_to_string(folder.data_dir.join("admin-password")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = tokio::time::timeout(
            Duration::from_secs(30),
            AuthServiceClient::connect(format!("http://{}", loopback(grpc))),
        )
        .await
        .expect("connect timed out")
        .unwrap();
        let tokens = tokio::time::timeout(
            Duration::from_secs(60),
            client.login(LoginRequest {
                email: appstack_server::dev::DEV_ADMIN_EMAIL.into(),
                password: password.trim().into(),
            }),
        )
        .await
        .expect("login timed out")
        .unwrap()
        .into_inner();
        tokens.expires_in
    })
}

fn assert_refused(process: Process, folder: &Folder, holder: u32) {
    let (status, output) = process.wait_exit();
    assert!(!status.success(), "second dev succeeded:\n{output}");
    let expected = format!(
        "the data folder {} is in use by another `appstack dev` (pid {holder})",
        folder.data_dir.display()
    );
    assert!(
        output.contains(&expected),
        "expected {expected:?} in:\n{output}"
    );
    assert!(!output.contains("PostgreSQL in"), "{output}");
    assert!(!output.contains("stopping PostgreSQL"), "{output}");
}

#[test]
fn a_second_dev_on_the_same_folder_is_refused_and_the_first_keeps_serving() {
    let folder = Folder::new();
    let (grpc, admin) = (free_port(), free_port());
    let mut first = Process::spawn(dev_command(&folder, grpc, admin));
    first.wait_ready(admin);
    let postmaster = folder.postmaster_pid().expect("PostgreSQL is running");
    let keys = folder.listing("auth-keys");
    assert_eq!(keys.len(), 1, "{keys:?}");

    // Same ports: it used to fail to bind, then stop the first one's PostgreSQL.
    assert_refused(
        Process::spawn(dev_command(&folder, grpc, admin)),
        &folder,
        first.pid(),
    );
    // Other ports: it used to adopt the cluster, and stop it when stopped itself.
    let other = Process::spawn(dev_command(&folder, free_port(), free_port()));
    assert_refused(other, &folder, first.pid());

    // The refusals touched nothing: same server process, same keys, still ready.
    assert_eq!(
        folder.postmaster_pid().as_deref(),
        Some(postmaster.as_str())
    );
    assert_eq!(folder.listing("auth-keys"), keys);
    assert_eq!(readyz(admin), Some(200), "{}", first.output());
    // The discovery document points at the JWKS this dev stack serves.
    let discovery = admin_get(admin, "/.well-known/openid-configuration").unwrap();
    let jwks = format!("http://127.0.0.1:{admin}/.well-known/jwks.json");
    assert!(discovery.contains(&jwks), "{discovery}");
    assert!(
        admin_get(admin, "/.well-known/jwks.json")
            .unwrap()
            .contains(r#""kty":"OKP""#)
    );

    let (status, output) = first.terminate();
    assert!(status.success(), "{status}:\n{output}");
    assert!(output.contains("stopping PostgreSQL"), "{output}");
    assert_eq!(folder.postmaster_pid(), None, "PostgreSQL still running");
}

#[test]
fn dev_reads_env_and_config_file_logs_plainly_and_restarts_quietly() {
    let folder = Folder::new();
    let (grpc, admin) = (free_port(), free_port());

    // First start: the environment. A DATABASE_URL kept for other tools is not dev's.
    let mut command = dev_command(&folder, grpc, admin);
    command
        .env("APPSTACK_AUTH__ACCESS_TOKEN_TTL", "10m")
        .env("DATABASE_URL", "postgres://someone@127.0.0.1:1/elsewhere");
    let mut process = Process::spawn(command);
    process.wait_ready(admin);
    assert_eq!(admin_login_expires_in(&folder, grpc), 600);
    let (status, first_output) = process.terminate();
    assert!(status.success(), "{status}:\n{first_output}");

    // Second start on the same folder: the file (through APPSTACK_CONFIG, which must not
    // be taken for a setting), and the migrations table already exists.
    let config = folder.data_dir.join("dev.toml");
    std::fs::write(&config, "[auth]\naccessTokenTtl = \"11m\"\n").unwrap();
    let mut command = dev_command(&folder, grpc, admin);
    command.env("APPSTACK_CONFIG", &config);
    let mut process = Process::spawn(command);
    process.wait_ready(admin);
    assert_eq!(admin_login_expires_in(&folder, grpc), 660);
    let (status, second_output) = process.terminate();
    assert!(status.success(), "{status}:\n{second_output}");

    for output in [&first_output, &second_output] {
        // Logs were written (so the check means something), without colour codes.
        assert!(output.contains("INFO"), "{output}");
        assert!(!output.contains("\x1b["), "colour codes in:\n{output}");
    }
    assert!(
        !second_output.contains("already exists, skipping"),
        "PostgreSQL notice logged:\n{second_output}"
    );
}

#[test]
fn an_unknown_key_in_the_dev_config_file_is_named_and_nothing_is_touched() {
    let folder = Folder::new();
    let config = folder.data_dir.with_file_name("dev.toml");
    std::fs::write(&config, "[auth]\naccessTokenTll = \"10m\"\n").unwrap();
    let mut command = dev_command(&folder, free_port(), free_port());
    command.arg("--config").arg(&config);
    let (status, output) = Process::spawn(command).wait_exit();
    assert!(!status.success(), "{output}");
    assert!(output.contains("accessTokenTll"), "{output}");
    assert!(!folder.data_dir.exists(), "data folder created:\n{output}");
}

#[test]
fn dev_refuses_a_database_url_and_touches_nothing() {
    let folder = Folder::new();
    let mut command = dev_command(&folder, free_port(), free_port());
    command.env(
        "APPSTACK_DATABASE__URL",
        "postgres://someone@127.0.0.1:1/elsewhere",
    );
    let (status, output) = Process::spawn(command).wait_exit();
    assert!(!status.success(), "{output}");
    assert!(output.contains("does not take database.url"), "{output}");
    assert!(!folder.data_dir.exists(), "data folder created:\n{output}");
}
