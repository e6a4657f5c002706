//! The error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while finding, initialising, starting or
/// stopping a private PostgreSQL cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPgError {
    /// Neither PATH nor `/usr/lib/postgresql/*/bin` holds `initdb` and `pg_ctl`.
    #[error(
        "PostgreSQL server binaries not found: looked on PATH and in /usr/lib/postgresql/*/bin; \
         install the `postgresql` package"
    )]
    BinariesNotFound,

    /// Running as root, but there is no `postgres` system user to run the server as.
    #[error(
        "running as root, but there is no `{user}` system user to run PostgreSQL as \
         (PostgreSQL refuses to run as root); install the `postgresql` package or create the user"
    )]
    NoServiceUser {
        /// The user name that was looked up.
        user: String,
    },

    /// Running as root, but neither `runuser` nor `setpriv` is installed.
    #[error(
        "running as root, but neither `runuser` nor `setpriv` was found to run PostgreSQL as the \
         `{user}` user; install the `util-linux` package"
    )]
    NoRunAsTool {
        /// The user the server would run as.
        user: String,
    },

    /// A folder above the data folder cannot be traversed by the server's user.
    #[error(
        "the `{user}` user cannot reach the data folder {data_dir}: the folder {folder} is not \
         traversable by it (mode {mode:04o}); run `chmod o+x {folder}` or choose a data folder \
         elsewhere"
    )]
    NotTraversable {
        /// The data folder that was asked for.
        data_dir: PathBuf,
        /// The first folder above it that the server's user cannot traverse.
        folder: PathBuf,
        /// That folder's permission bits.
        mode: u32,
        /// The user the server runs as.
        user: String,
    },

    /// A file system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create folder".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A program could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A program ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on standard error (or standard output if that was empty).
        stderr: String,
    },

    /// `pg_ctl start` failed; the server log tail says why.
    #[error(
        "PostgreSQL failed to start in {data_dir} on port {port}: {stderr}\n\
         --- last lines of {log_file} ---\n{log_tail}"
    )]
    StartFailed {
        /// The data folder.
        data_dir: PathBuf,
        /// The port it was asked to listen on.
        port: u16,
        /// What `pg_ctl` printed.
        stderr: String,
        /// The server log file.
        log_file: PathBuf,
        /// The last lines the server wrote to its log during this attempt.
        log_tail: String,
    },

    /// The cluster is already running, but on another port than the one asked for.
    #[error(
        "the cluster in {data_dir} is already running on port {running}, but port {requested} \
         was asked for; stop it first (pg_ctl stop -D {data_dir}) or ask for port {running}"
    )]
    PortMismatch {
        /// The data folder.
        data_dir: PathBuf,
        /// The port the running server listens on.
        running: u16,
        /// The port that was asked for.
        requested: u16,
    },

    /// The cluster is running, but its port could not be found out.
    #[error(
        "the cluster in {data_dir} is running, but its port could not be read from \
         postmaster.pid or {port_file}"
    )]
    UnknownPort {
        /// The data folder.
        data_dir: PathBuf,
        /// The port file that was tried as well.
        port_file: &'static str,
    },

    /// No free loopback port could be found.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),
}

impl LocalPgError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
