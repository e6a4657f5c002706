//! Fresh, isolated PostgreSQL databases for tests.
//!
//! [`test_database`] creates a new, empty database for the calling test and
//! returns its URL; the caller runs the migrations it needs.
//!
//! Where the databases live:
//!
//! - If `DATABASE_URL` is set (and not empty), on that server.
//! - Otherwise on a private cluster shared by every test process on this
//!   machine, started from the local PostgreSQL binaries by
//!   [`appstack_localpg`]. Its data folder is `$APPSTACK_TEST_PG_DIR`, or
//!   else `<target dir>/appstack-test-pg` (the target dir being
//!   `$CARGO_TARGET_DIR` or the workspace's `target`). A file lock beside the
//!   data folder (`appstack-test-pg.lock`) makes parallel processes (such as
//!   cargo-nextest's, one per test) start it once; the others adopt it. It
//!   runs with `fsync` off and stays running after the tests end, so the next
//!   run reuses it; [`stop_shared_cluster`] stops it (CI calls it at the end).
//!
//! Databases are named `t_{pid}_{random}`. Nothing drops them when a test
//! ends; instead, each [`test_database`] call on the private cluster drops the
//! `t_{pid}_*` databases whose process no longer exists (no `/proc/{pid}`), so
//! disk use does not grow across runs. Databases on a `DATABASE_URL` server are
//! never collected, since its other users' process ids mean nothing here.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use appstack_localpg::{LocalPostgres, Options};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};

/// The variable naming the shared private cluster's data folder.
pub const DATA_DIR_ENV: &str = "APPSTACK_TEST_PG_DIR";

/// The variable naming an existing server to use instead of the private cluster.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// The prefix of every test database's name.
const NAME_PREFIX: &str = "t_";

/// The superuser of the shared private cluster.
const SUPERUSER: &str = "appstack";

/// The admin URL of the shared private cluster, once this process has
/// started or adopted it.
static SHARED_ADMIN_URL: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);

/// A database created for one test; its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDatabase {
    /// A URL connecting to the database as a superuser.
    pub url: String,
    /// The database's name, `t_{pid}_{random}`.
    pub name: String,
}

/// If `DATABASE_URL` is set, use that server; else use the shared private
/// cluster (see the [module docs](self)). Creates a new database named
/// `t_{pid}_{random}` and returns it (no migrations: the caller runs them).
///
/// # Errors
///
/// When the private cluster cannot be started, the server cannot be reached,
/// or the database cannot be created.
pub async fn test_database() -> anyhow::Result<TestDatabase> {
    let (mut conn, admin_url, private) = admin_connection().await?;
    if private {
        collect_garbage(&mut conn).await;
    }
    let name = format!(
        "{NAME_PREFIX}{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(&name)
    )))
    .execute(&mut conn)
    .await
    .with_context(|| format!("creating test database {name}"))?;
    // Failing to say goodbye nicely does not matter.
    let _ = conn.close().await;
    let url = with_database(&admin_url, &name)?;
    Ok(TestDatabase { url, name })
}

/// Stops the shared private cluster if it is running (CI calls this when the
/// tests are done). Does nothing to a `DATABASE_URL` server.
///
/// # Errors
///
/// When the data folder cannot be locked or `pg_ctl stop` fails.
pub async fn stop_shared_cluster() -> anyhow::Result<()> {
    let data_dir = shared_data_dir()?;
    let _lock = lock_shared(&data_dir).await?;
    appstack_localpg::stop_cluster(&data_dir)
        .await
        .with_context(|| format!("stopping the test cluster in {}", data_dir.display()))?;
    *SHARED_ADMIN_URL.lock().await = None;
    Ok(())
}

/// A connection to the server's maintenance database, its URL, and whether
/// the server is the shared private cluster.
async fn admin_connection() -> anyhow::Result<(PgConnection, String, bool)> {
    if let Some(url) = std::env::var(DATABASE_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
    {
        let conn = PgConnection::connect(&url)
            .await
            .with_context(|| format!("connecting to {DATABASE_URL_ENV} ({})", redact(&url)))?;
        return Ok((conn, url, false));
    }

    let known = SHARED_ADMIN_URL.lock().await.clone();
    if let Some(url) = known
        && let Ok(conn) = PgConnection::connect(&url).await
    {
        return Ok((conn, url, true));
    }
    // Not started by this process yet, or stopped since: start or adopt it.
    let mut cached = SHARED_ADMIN_URL.lock().await;
    let url = start_shared_cluster().await?;
    let conn = PgConnection::connect(&url)
        .await
        .with_context(|| format!("connecting to the shared test cluster at {url}"))?;
    *cached = Some(url.clone());
    Ok((conn, url, true))
}

/// Starts the shared private cluster, or adopts it if another process has,
/// under the file lock. Returns the URL of its `postgres` database. The
/// cluster is left running on purpose.
async fn start_shared_cluster() -> anyhow::Result<String> {
    let data_dir = shared_data_dir()?;
    let _lock = lock_shared(&data_dir).await?;
    let opts = Options {
        data_dir: data_dir.clone(),
        port: None,
        superuser: SUPERUSER.to_owned(),
        fast_unsafe: true,
    };
    let pg = LocalPostgres::start(opts)
        .await
        .with_context(|| format!("starting the test cluster in {}", data_dir.display()))?;
    // Dropping the handle leaves the server running for later tests and runs.
    Ok(pg.url("postgres"))
}

/// `$APPSTACK_TEST_PG_DIR`, or `<target dir>/appstack-test-pg`.
fn shared_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return std::path::absolute(&dir)
            .with_context(|| format!("resolving {DATA_DIR_ENV}={}", Path::new(&dir).display()));
    }
    Ok(target_dir().join("appstack-test-pg"))
}

/// The build's target folder (`$CARGO_TARGET_DIR` or the workspace's `target`), absolute:
/// where the shared test servers keep their state.
pub fn target_dir() -> PathBuf {
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match option_env!("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            // This crate lives one folder below the workspace root.
            _ => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
                .join("target"),
        },
    };
    std::path::absolute(&target_dir).unwrap_or(target_dir)
}

/// Takes the exclusive lock on `<data_dir>.lock`, waiting for other
/// processes. Released when the returned file is dropped.
async fn lock_shared(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let mut path = data_dir.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
        if let Some(parent) = path.parent() {
            // 0755: when root, the postgres user must traverse it.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await
    .context("waiting for the test cluster lock")?
}

/// Drops the test databases of processes that no longer exist. Best effort:
/// failures only delay the collection to a later call.
async fn collect_garbage(conn: &mut PgConnection) {
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, 't_')",
    )
    .fetch_all(&mut *conn)
    .await
    {
        Ok(names) => names,
        Err(err) => {
            eprintln!("test databases not collected: {err}");
            return;
        }
    };
    let own_pid = std::process::id();
    for name in names {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid == own_pid || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        );
        if let Err(err) = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await {
            // Another process may be dropping it at the same moment.
            eprintln!("test database {name} not dropped: {err}");
        }
    }
}

/// The process id in a `t_{pid}_{random}` name.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, random) = name.strip_prefix(NAME_PREFIX)?.split_once('_')?;
    if random.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Quotes an SQL identifier: `"` around it, inner `"` doubled.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `url` with its database (path) replaced by `database`, which must be a
/// plain name (letters, digits, `_`). A `dbname` query parameter is removed.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("not a database URL: {}", redact(url)))?;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.starts_with("dbname="))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    Ok(out)
}

/// `url` with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _password)) => format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The shared private cluster's server log, to look for warnings a test must not cause;
/// `None` when the tests run against a `DATABASE_URL` server.
pub fn server_log() -> Option<PathBuf> {
    if std::env::var(DATABASE_URL_ENV).is_ok_and(|url| !url.trim().is_empty()) {
        return None;
    }
    shared_data_dir()
        .ok()
        .map(|dir| dir.join(appstack_localpg::LOG_FILE))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/postgres", "t_1_a").unwrap(),
            "postgres://u@127.0.0.1:5432/t_1_a"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432", "t_1_a").unwrap(),
            "postgres://u:p@db:5432/t_1_a"
        );
        assert_eq!(
            with_database("postgresql://u@h/app?sslmode=disable&dbname=x", "t_1_a").unwrap(),
            "postgresql://u@h/t_1_a?sslmode=disable"
        );
        assert!(with_database("nonsense", "t").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db?x=1"),
            "postgres://u:***@h:1/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn parses_owner_pids() {
        assert_eq!(owner_pid("t_123_abcdef"), Some(123));
        assert_eq!(owner_pid("t_123_"), None);
        assert_eq!(owner_pid("t_x1_abc"), None);
        assert_eq!(owner_pid("app"), None);
        assert_eq!(owner_pid("t_+5_abc"), None);
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("t_1_a"), "\"t_1_a\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[tokio::test]
    async fn creates_isolated_databases() {
        let a = test_database().await.unwrap();
        let b = test_database().await.unwrap();
        assert_ne!(a.name, b.name);
        assert!(a.name.starts_with(&format!("t_{}_", std::process::id())));
        assert!(a.url.ends_with(&format!("/{}", a.name)));

        let mut conn = PgConnection::connect(&a.url).await.unwrap();
        sqlx::query("CREATE TABLE only_in_a (id int)")
            .execute(&mut conn)
            .await
            .unwrap();
        let current: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(current, a.name);

        let mut conn_b = PgConnection::connect(&b.url).await.unwrap();
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_a'",
        )
        .fetch_one(&mut conn_b)
        .await
        .unwrap();
        assert_eq!(tables, 0);
    }
}
