//! Starts and stops a private PostgreSQL cluster from the server binaries
//! installed on this machine.
//!
//! `appstack dev` uses it to run the whole stack locally, and the test
//! support uses it to give every test a throw-away database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), appstack_localpg::LocalPgError> {
//! use appstack_localpg::{LocalPostgres, Options};
//!
//! let pg = LocalPostgres::start(Options::new("/var/tmp/appstack-pg")).await?;
//! println!("connect to {}", pg.url("postgres"));
//! pg.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When this process's effective user is
//! root, `initdb`, `pg_ctl` and the server run as the `postgres` system user
//! (through `runuser`, or `setpriv` when `runuser` is missing), and the data
//! folder is handed to that user. Every folder above the data folder must then
//! be traversable by `postgres`; [`LocalPostgres::start`] checks this and
//! names the folder that is not.
//!
//! # Lifetime
//!
//! Dropping a [`LocalPostgres`] does **not** stop the server: it keeps
//! running, detached, until [`LocalPostgres::stop`] or [`stop_cluster`] is
//! called (or the machine restarts). A later [`LocalPostgres::start`] on the
//! same data folder adopts it.

mod bins;
mod error;
mod run_as;

use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bins::find_bin_dir;
pub use error::LocalPgError;
use run_as::{RunAs, run, run_checked};

/// The superuser [`Options::new`] sets up.
pub const DEFAULT_SUPERUSER: &str = "appstack";

/// The file in the data folder recording the port the cluster was last started on.
pub const PORT_FILE: &str = "appstack-port";

/// The server's log file in the data folder.
pub const LOG_FILE: &str = "appstack-postgres.log";

/// The settings file in the data folder that this crate rewrites on every
/// start; `postgresql.conf` includes it.
pub const CONF_FILE: &str = "appstack.conf";

/// The only address the server listens on.
const LISTEN_ADDRESS: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long `pg_ctl` waits for the server to start or stop, in seconds.
const PG_CTL_TIMEOUT_SECS: u64 = 60;

/// How often a start is retried on a fresh port when the picked one was taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

/// The longest socket folder whose socket path (`/.s.PGSQL.65535`) still
/// fits in `sun_path` (108 bytes with its terminating NUL).
const MAX_SOCKET_DIR_LEN: usize = 107 - "/.s.PGSQL.65535".len();

/// How many lines of the server log a start failure reports.
const LOG_TAIL_LINES: usize = 40;

/// What [`LocalPostgres::start`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The cluster's data folder. It is created (with its parents) if missing;
    /// the log, the port file and the Unix socket live in it as well.
    pub data_dir: PathBuf,
    /// The TCP port on 127.0.0.1; `None` reuses the port the cluster last ran
    /// on when that is free, and otherwise picks a free one.
    pub port: Option<u16>,
    /// The superuser `initdb` creates (authentication is `trust`).
    pub superuser: String,
    /// Turns off `fsync`, `synchronous_commit` and `full_page_writes`, and
    /// skips `initdb`'s sync: much faster, but a crash of the machine can
    /// corrupt the cluster. For tests.
    pub fast_unsafe: bool,
}

impl Options {
    /// Options for `data_dir` with a free port, the superuser `appstack`, and
    /// durable settings.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            port: None,
            superuser: DEFAULT_SUPERUSER.to_owned(),
            fast_unsafe: false,
        }
    }
}

/// A running cluster that this value started or adopted.
///
/// Dropping it leaves the server running: call [`LocalPostgres::stop`] to stop it.
#[derive(Debug)]
#[must_use = "the server keeps running until `stop` is called"]
pub struct LocalPostgres {
    cluster: Cluster,
    port: u16,
    superuser: String,
    adopted: bool,
}

impl LocalPostgres {
    /// Starts the cluster in `opts.data_dir`, creating it first if needed.
    ///
    /// If the data folder has no `PG_VERSION`, `initdb` creates a cluster
    /// there (authentication `trust`, encoding UTF8, locale C). Each start
    /// rewrites [`CONF_FILE`] so the server listens only on 127.0.0.1 (Unix
    /// socket inside the data folder when its path is short enough, else
    /// none), then runs `pg_ctl start -w` with the log in [`LOG_FILE`] and
    /// records the port in [`PORT_FILE`].
    ///
    /// If the cluster is already running (`postmaster.pid` present and
    /// `pg_ctl status` confirms), it is adopted instead: its port is read from
    /// `postmaster.pid` and nothing is changed. The superuser is not checked
    /// then.
    ///
    /// # Errors
    ///
    /// See [`LocalPgError`]; a failed start carries the tail of the server log.
    pub async fn start(opts: Options) -> Result<Self, LocalPgError> {
        let cluster = Cluster::new(&opts.data_dir).await?;
        cluster.prepare_dir().await?;
        if cluster.is_initialised() {
            if let Some(port) = cluster.running_port().await? {
                return cluster.adopt(port, &opts).await;
            }
        } else {
            cluster.initdb(&opts).await?;
        }
        cluster.start_server(&opts).await
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://{superuser}@127.0.0.1:{port}/{database}`, with the user
    /// and database percent-encoded.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@{LISTEN_ADDRESS}:{}/{}",
            percent_encode(&self.superuser),
            self.port,
            percent_encode(database)
        )
    }

    /// The superuser from the options this cluster was started with.
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// The absolute data folder.
    pub fn data_dir(&self) -> &Path {
        &self.cluster.data_dir
    }

    /// The folder of the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.cluster.bin_dir
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.cluster.data_dir.join(LOG_FILE)
    }

    /// Whether the server was already running and this value adopted it.
    pub fn was_adopted(&self) -> bool {
        self.adopted
    }

    /// Stops the server with `pg_ctl stop -m fast -w` (open sessions are
    /// disconnected). A server that is already gone counts as stopped.
    ///
    /// # Errors
    ///
    /// [`LocalPgError::CommandFailed`] when `pg_ctl` fails and the server is
    /// still running.
    pub async fn stop(self) -> Result<(), LocalPgError> {
        self.cluster.stop().await.map(|_| ())
    }
}

/// Stops the cluster in `data_dir` if it is running, whoever started it.
/// Returns whether a server was stopped.
///
/// # Errors
///
/// See [`LocalPostgres::stop`]; also fails when the binaries are missing.
pub async fn stop_cluster(data_dir: impl AsRef<Path>) -> Result<bool, LocalPgError> {
    let cluster = Cluster::new(data_dir.as_ref()).await?;
    if !cluster.is_initialised() || cluster.running_port().await?.is_none() {
        return Ok(false);
    }
    cluster.stop().await
}

/// One data folder and the means to act on it.
#[derive(Debug, Clone)]
struct Cluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as: RunAs,
}

// File system calls below are std's: they are few, small and local.
impl Cluster {
    async fn new(data_dir: &Path) -> Result<Self, LocalPgError> {
        let bin_dir = find_bin_dir()?;
        let data_dir =
            std::path::absolute(data_dir).map_err(|e| LocalPgError::io("resolve", data_dir, e))?;
        let run_as = RunAs::detect().await?;
        Ok(Self {
            bin_dir,
            data_dir,
            run_as,
        })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    fn is_initialised(&self) -> bool {
        self.file("PG_VERSION").is_file()
    }

    fn pg_ctl(&self, action: &str) -> tokio::process::Command {
        let mut cmd = self.run_as.command(&self.bin_dir.join("pg_ctl"));
        cmd.arg(action).arg("-D").arg(&self.data_dir);
        cmd
    }

    /// Creates the data folder (and its parents), hands it to the server's
    /// user and checks that user can reach it.
    async fn prepare_dir(&self) -> Result<(), LocalPgError> {
        let root = matches!(self.run_as, RunAs::ServiceUser { .. });
        if let Some(parent) = self.data_dir.parent() {
            let missing: Vec<&Path> = parent.ancestors().take_while(|p| !p.exists()).collect();
            for folder in missing.into_iter().rev() {
                match std::fs::DirBuilder::new().mode(0o755).create(folder) {
                    Ok(()) if root => {
                        // Whatever the umask, the service user must traverse it.
                        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755))
                            .map_err(|e| LocalPgError::io("set permissions on", folder, e))?;
                    }
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(LocalPgError::io("create folder", folder, e)),
                }
            }
        }
        match std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.data_dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(LocalPgError::io("create folder", &self.data_dir, e)),
        }
        if !self.is_initialised() {
            self.run_as.chown(&self.data_dir)?;
        }
        self.run_as.check_reachable(&self.data_dir).await
    }

    /// Creates the cluster with `initdb`.
    async fn initdb(&self, opts: &Options) -> Result<(), LocalPgError> {
        tracing::info!(data_dir = %self.data_dir.display(), "creating a PostgreSQL cluster");
        let mut cmd = self.run_as.command(&self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("--username")
            .arg(&opts.superuser)
            .arg("--auth=trust")
            .arg("--encoding=UTF8")
            .arg("--locale=C");
        if opts.fast_unsafe {
            cmd.arg("--no-sync");
        }
        run_checked(&mut cmd).await?;

        let conf = self.file("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).map_err(|e| LocalPgError::io("read", &conf, e))?;
        text.push_str(&format!(
            "\n# Settings managed by appstack-localpg.\ninclude_if_exists = '{CONF_FILE}'\n"
        ));
        std::fs::write(&conf, text).map_err(|e| LocalPgError::io("write", &conf, e))
    }

    /// Writes [`CONF_FILE`] for this start.
    fn write_conf(&self, port: u16, fast_unsafe: bool) -> Result<(), LocalPgError> {
        let socket_dir = if self.data_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            self.data_dir.to_string_lossy().into_owned()
        } else {
            tracing::debug!(
                data_dir = %self.data_dir.display(),
                "data folder path too long for a Unix socket; TCP only"
            );
            String::new()
        };
        let durable = if fast_unsafe { "off" } else { "on" };
        let text = format!(
            "# Written by appstack-localpg on every start: edits are overwritten.\n\
             port = {port}\n\
             listen_addresses = '{LISTEN_ADDRESS}'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             fsync = {durable}\n\
             synchronous_commit = {durable}\n\
             full_page_writes = {durable}\n",
            conf_quote(&socket_dir)
        );
        let path = self.file(CONF_FILE);
        std::fs::write(&path, text).map_err(|e| LocalPgError::io("write", &path, e))?;
        self.run_as.chown(&path)
    }

    /// Starts the server, retrying on a new port if a picked one was taken.
    async fn start_server(&self, opts: &Options) -> Result<LocalPostgres, LocalPgError> {
        let log_file = self.file(LOG_FILE);
        let mut attempt = 1;
        loop {
            let port = match opts.port {
                Some(port) => port,
                None => match self
                    .recorded_port()
                    .filter(|&p| attempt == 1 && port_is_free(p))
                {
                    Some(port) => port,
                    None => free_port()?,
                },
            };
            self.write_conf(port, opts.fast_unsafe)?;
            let log_offset = self.prepare_log(&log_file)?;
            tracing::info!(data_dir = %self.data_dir.display(), port, "starting PostgreSQL");

            let mut cmd = self.pg_ctl("start");
            cmd.arg("-l")
                .arg(&log_file)
                .arg("-w")
                .arg("-t")
                .arg(PG_CTL_TIMEOUT_SECS.to_string())
                .arg("-s");
            let output = run(&mut cmd).await?;
            if output.status.success() {
                // Trust the server's own record over what we asked for.
                let port = self.pid_file_port().unwrap_or(port);
                self.record_port(port)?;
                return Ok(self.handle(port, &opts.superuser, false));
            }

            let log_tail = read_log_tail(&log_file, log_offset);
            // Someone else may have started it at the same moment.
            if let Some(running) = self.running_port().await? {
                return self.adopt(running, opts).await;
            }
            let port_taken =
                log_tail.contains("could not bind") || log_tail.contains("Address already in use");
            if opts.port.is_none() && port_taken && attempt < PORT_ATTEMPTS {
                tracing::warn!(port, "port was taken before PostgreSQL bound it; retrying");
                attempt += 1;
                continue;
            }
            return Err(LocalPgError::StartFailed {
                data_dir: self.data_dir.clone(),
                port,
                stderr: run_as::message(&output),
                log_file,
                log_tail,
            });
        }
    }

    /// Makes sure the log file exists and belongs to the server's user;
    /// returns its current length.
    fn prepare_log(&self, log_file: &Path) -> Result<u64, LocalPgError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .map_err(|e| LocalPgError::io("open", log_file, e))?;
        let len = file
            .metadata()
            .map_err(|e| LocalPgError::io("inspect", log_file, e))?
            .len();
        self.run_as.chown(log_file)?;
        Ok(len)
    }

    /// Adopts a server found running on `port`, once it accepts connections.
    async fn adopt(&self, port: u16, opts: &Options) -> Result<LocalPostgres, LocalPgError> {
        if let Some(requested) = opts.port
            && requested != port
        {
            return Err(LocalPgError::PortMismatch {
                data_dir: self.data_dir.clone(),
                running: port,
                requested,
            });
        }
        self.wait_until_ready().await;
        tracing::info!(data_dir = %self.data_dir.display(), port, "adopting running PostgreSQL");
        Ok(self.handle(port, &opts.superuser, true))
    }

    fn handle(&self, port: u16, superuser: &str, adopted: bool) -> LocalPostgres {
        LocalPostgres {
            cluster: self.clone(),
            port,
            superuser: superuser.to_owned(),
            adopted,
        }
    }

    /// Waits (up to the `pg_ctl` timeout) until `postmaster.pid` says the
    /// server is ready, so that an adopter does not race a starting server.
    async fn wait_until_ready(&self) {
        let pid_file = self.file("postmaster.pid");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(PG_CTL_TIMEOUT_SECS);
        while tokio::time::Instant::now() < deadline {
            let Ok(text) = std::fs::read_to_string(&pid_file) else {
                return; // It stopped meanwhile: the caller will find out on connecting.
            };
            // The eighth line is the status: starting, stopping, ready or standby.
            if matches!(
                text.lines().nth(7).map(str::trim),
                Some("ready" | "standby")
            ) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(data_dir = %self.data_dir.display(), "adopted server is not ready yet");
    }

    /// The port of the running server, or `None` when it is not running.
    async fn running_port(&self) -> Result<Option<u16>, LocalPgError> {
        if !self.file("postmaster.pid").exists() {
            return Ok(None);
        }
        let mut cmd = self.pg_ctl("status");
        let output = run(&mut cmd).await?;
        match output.status.code() {
            Some(0) => self
                .pid_file_port()
                .or_else(|| self.recorded_port())
                .map(Some)
                .ok_or_else(|| LocalPgError::UnknownPort {
                    data_dir: self.data_dir.clone(),
                    port_file: PORT_FILE,
                }),
            // 3: not running (perhaps a stale postmaster.pid).
            Some(3) => Ok(None),
            _ => Err(LocalPgError::CommandFailed {
                command: run_as::describe(&cmd),
                status: output.status.to_string(),
                stderr: run_as::message(&output),
            }),
        }
    }

    /// The port in `postmaster.pid` (its fourth line).
    fn pid_file_port(&self) -> Option<u16> {
        let text = std::fs::read_to_string(self.file("postmaster.pid")).ok()?;
        text.lines().nth(3)?.trim().parse().ok()
    }

    /// The port in [`PORT_FILE`].
    fn recorded_port(&self) -> Option<u16> {
        std::fs::read_to_string(self.file(PORT_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn record_port(&self, port: u16) -> Result<(), LocalPgError> {
        let path = self.file(PORT_FILE);
        std::fs::write(&path, format!("{port}\n"))
            .map_err(|e| LocalPgError::io("write", &path, e))?;
        self.run_as.chown(&path)
    }

    /// `pg_ctl stop -m fast -w`; `Ok(false)` when the server was not running.
    async fn stop(&self) -> Result<bool, LocalPgError> {
        tracing::info!(data_dir = %self.data_dir.display(), "stopping PostgreSQL");
        let mut cmd = self.pg_ctl("stop");
        cmd.arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("-t")
            .arg(PG_CTL_TIMEOUT_SECS.to_string())
            .arg("-s");
        let output = run(&mut cmd).await?;
        if output.status.success() {
            return Ok(true);
        }
        if self.running_port().await?.is_none() {
            return Ok(false);
        }
        Err(LocalPgError::CommandFailed {
            command: run_as::describe(&cmd),
            status: output.status.to_string(),
            stderr: run_as::message(&output),
        })
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, LocalPgError> {
    let listener = TcpListener::bind((LISTEN_ADDRESS, 0)).map_err(LocalPgError::NoFreePort)?;
    let port = listener
        .local_addr()
        .map_err(LocalPgError::NoFreePort)?
        .port();
    Ok(port)
}

/// Whether `port` on 127.0.0.1 can be bound right now.
fn port_is_free(port: u16) -> bool {
    TcpListener::bind((LISTEN_ADDRESS, port)).is_ok()
}

/// The last [`LOG_TAIL_LINES`] lines written to the log after `offset`.
fn read_log_tail(log_file: &Path, offset: u64) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(log_file)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(offset.max(len.saturating_sub(MAX_BYTES))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            if tail.trim().is_empty() {
                "(the server wrote nothing)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

/// Quotes a value for a postgresql.conf string (without the outer quotes).
fn conf_quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
