//! Tests that start real clusters from the binaries on this machine.

use std::process::Stdio;

use super::*;

/// Stops the cluster in a data folder when a test ends, even by panicking,
/// so no server outlives its deleted temporary folder.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let dir = self.0.clone();
        // The test's runtime is still current here: stop from a fresh one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = runtime.block_on(stop_cluster(&dir));
        })
        .join();
    }
}

/// A temporary data folder (root-owned, mode 0700: the start must chown it).
fn temp_cluster() -> (tempfile::TempDir, StopOnDrop, Options) {
    let dir = private_tempdir();
    let guard = StopOnDrop(dir.path().to_owned());
    let mut opts = Options::new(dir.path());
    opts.fast_unsafe = true;
    (dir, guard, opts)
}

/// A temporary folder with mode 0700, like `mktemp -d` makes (tempfile's
/// own default follows the umask).
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// `pg_isready` against the TCP port; true when the server accepts connections.
async fn pg_isready(pg: &LocalPostgres) -> bool {
    tokio::process::Command::new(pg.bin_dir().join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", pg.superuser(), "-d", "postgres", "-t", "5"])
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap()
        .success()
}

#[tokio::test]
async fn start_connect_stop_round_trip() {
    let (dir, _guard, opts) = temp_cluster();
    let pg = LocalPostgres::start(opts).await.unwrap();
    assert!(!pg.was_adopted());
    let port = pg.port();
    assert_ne!(port, 0);
    assert_eq!(
        pg.url("app db"),
        format!("postgres://appstack@127.0.0.1:{port}/app%20db")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(PORT_FILE)).unwrap(),
        format!("{port}\n")
    );
    assert!(pg.log_file().is_file());

    tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    assert!(pg_isready(&pg).await, "pg_isready should succeed");

    let bin_dir = pg.bin_dir().to_owned();
    pg.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_err()
    );
    assert!(!dir.path().join("postmaster.pid").exists());
    // Stopping a stopped cluster is not an error.
    assert!(!stop_cluster(dir.path()).await.unwrap());
    assert!(bin_dir.join("initdb").exists());
}

#[tokio::test]
async fn adopts_a_running_cluster_and_restarts_on_the_same_port() {
    let (_dir, _guard, opts) = temp_cluster();
    let first = LocalPostgres::start(opts.clone()).await.unwrap();
    let port = first.port();

    let second = LocalPostgres::start(opts.clone()).await.unwrap();
    assert!(second.was_adopted());
    assert_eq!(second.port(), first.port());

    let mut other_port = opts.clone();
    other_port.port = Some(first.port().wrapping_add(1).max(1024));
    let err = LocalPostgres::start(other_port).await.unwrap_err();
    assert!(
        matches!(err, LocalPgError::PortMismatch { running, .. } if running == first.port()),
        "{err}"
    );

    // Either handle may stop it; the other then finds it stopped.
    second.stop().await.unwrap();
    first.stop().await.unwrap();

    // A new start reuses the recorded port (free again now).
    let third = LocalPostgres::start(opts).await.unwrap();
    assert!(!third.was_adopted());
    assert_eq!(third.port(), port);
    assert!(pg_isready(&third).await);
    third.stop().await.unwrap();
}

#[tokio::test]
async fn start_failure_reports_the_log_tail() {
    let (_dir, _guard, mut opts) = temp_cluster();
    let blocker = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    opts.port = Some(blocker.local_addr().unwrap().port());
    let err = LocalPostgres::start(opts).await.unwrap_err();
    let LocalPgError::StartFailed { log_tail, .. } = &err else {
        panic!("expected StartFailed, got {err}");
    };
    assert!(log_tail.contains("could not bind"), "{log_tail}");
    assert!(err.to_string().contains(LOG_FILE), "{err}");
    eprintln!("{err}");
}

#[tokio::test]
async fn names_a_parent_the_server_user_cannot_traverse() {
    if !rustix::process::geteuid().is_root() {
        return; // Only root hands the cluster to another user.
    }
    let dir = private_tempdir(); // owned by root
    let _guard = StopOnDrop(dir.path().join("nested/data"));
    let mut opts = Options::new(dir.path().join("nested/data"));
    opts.fast_unsafe = true;
    let err = LocalPostgres::start(opts).await.unwrap_err();
    match &err {
        LocalPgError::NotTraversable { folder, .. } => assert_eq!(folder, dir.path()),
        other => panic!("expected NotTraversable, got {other}"),
    }
    assert!(err.to_string().contains("chmod o+x"), "{err}");
    eprintln!("{err}");
}

#[tokio::test]
async fn long_data_dir_paths_use_tcp_only() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("x".repeat(100));
    let _guard = StopOnDrop(data_dir.clone());
    let mut opts = Options::new(&data_dir);
    opts.fast_unsafe = true;
    let pg = LocalPostgres::start(opts).await.unwrap();
    assert!(pg_isready(&pg).await);
    let conf = std::fs::read_to_string(data_dir.join(CONF_FILE)).unwrap();
    assert!(conf.contains("unix_socket_directories = ''"), "{conf}");
    pg.stop().await.unwrap();
}

#[test]
fn encodes_url_parts() {
    assert_eq!(percent_encode("t_123_ab-c.d~"), "t_123_ab-c.d~");
    assert_eq!(percent_encode("a b/c@d"), "a%20b%2Fc%40d");
    assert_eq!(percent_encode("é"), "%C3%A9");
}

#[test]
fn quotes_conf_strings() {
    assert_eq!(conf_quote(r"/a'b\c"), r"/a''b\\c");
}

#[test]
fn options_defaults() {
    let opts = Options::new("/x");
    assert_eq!(opts.superuser, "appstack");
    assert_eq!(opts.port, None);
    assert!(!opts.fast_unsafe);
}
