//! One `appstack dev` per data folder: an exclusive advisory lock (`flock`) on a file in the
//! folder, held until the process ends.
//!
//! `flock` locks belong to the open file, so the kernel releases this one when the process
//! exits however it exits (even `kill -9`): a stale lock cannot block the next start. The
//! file is opened close-on-exec, so PostgreSQL (started through `pg_ctl`) does not inherit
//! it and cannot keep the folder locked after `dev` is gone.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// The lock file in the data folder; it holds the pid of the `appstack dev` holding it.
pub const LOCK_FILE: &str = "appstack-dev.lock";

/// The data folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the data folder {} is in use by another `appstack dev`{}; stop that one first, \
         or give this one another --data-dir",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Held {
        /// The data folder.
        dir: PathBuf,
        /// The holder's pid, as it wrote it in the lock file (absent if it had not yet).
        holder: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("locking the data folder: {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The lock on a data folder; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) without waiting, and records this
    /// process's pid in it.
    ///
    /// # Errors
    ///
    /// [`LockError::Held`] when another process holds it; [`LockError::Io`] otherwise.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source: std::io::Error| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: a refused process must still read the holder's pid.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder,
                });
            }
            Err(errno) => return Err(io(errno.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        // A second open file description conflicts even within one process.
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        match &err {
            LockError::Held { dir: held, holder } => {
                assert_eq!(held, dir.path());
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other}"),
        }
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
