//! Running the PostgreSQL programs as the right user.
//!
//! PostgreSQL refuses to run as root. When this process runs as root, every
//! `initdb`, `pg_ctl` and `postgres` invocation goes through
//! `runuser -u postgres --` (or `setpriv` when `runuser` is missing), and the
//! files the server uses are handed to that user.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::process::Command;

use crate::LocalPgError;

/// The system user PostgreSQL runs as when we are root.
pub(crate) const SERVICE_USER: &str = "postgres";

/// Environment variables that would change what the PostgreSQL programs do.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGCTLTIMEOUT",
];

/// How to run a program as the server's user.
#[derive(Debug, Clone)]
pub(crate) enum Wrapper {
    /// `runuser -u USER -- program …`
    Runuser(PathBuf),
    /// `setpriv --reuid UID --regid GID --init-groups -- program …`
    Setpriv(PathBuf),
}

/// Who the server and its tools run as.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// Not root: run directly as the current user.
    CurrentUser,
    /// Root: run as the `postgres` system user.
    ServiceUser {
        name: String,
        uid: u32,
        gid: u32,
        wrapper: Wrapper,
    },
}

impl RunAs {
    /// Decides from the effective user id.
    pub(crate) async fn detect() -> Result<Self, LocalPgError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self::CurrentUser);
        }
        let name = SERVICE_USER.to_owned();
        let (uid, gid) = match lookup_user(&name).await {
            Some(ids) => ids,
            None => return Err(LocalPgError::NoServiceUser { user: name }),
        };
        let wrapper = if let Some(path) = find_tool("runuser") {
            Wrapper::Runuser(path)
        } else if let Some(path) = find_tool("setpriv") {
            Wrapper::Setpriv(path)
        } else {
            return Err(LocalPgError::NoRunAsTool { user: name });
        };
        tracing::debug!(user = %name, uid, gid, ?wrapper, "running PostgreSQL as a system user");
        Ok(Self::ServiceUser {
            name,
            uid,
            gid,
            wrapper,
        })
    }

    /// The name of the user the server runs as (for messages).
    pub(crate) fn user_name(&self) -> String {
        match self {
            Self::CurrentUser => std::env::var("USER").unwrap_or_else(|_| "current".to_owned()),
            Self::ServiceUser { name, .. } => name.clone(),
        }
    }

    /// A command that runs `program` as the server's user, with PostgreSQL's
    /// environment variables removed and the standard streams set up for
    /// [`run`].
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut cmd = match self {
            Self::CurrentUser => Command::new(program),
            Self::ServiceUser {
                name,
                wrapper: Wrapper::Runuser(runuser),
                ..
            } => {
                let mut cmd = Command::new(runuser);
                cmd.arg("-u").arg(name).arg("--").arg(program);
                cmd
            }
            Self::ServiceUser {
                uid,
                gid,
                wrapper: Wrapper::Setpriv(setpriv),
                ..
            } => {
                let mut cmd = Command::new(setpriv);
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
        };
        if matches!(self, Self::ServiceUser { .. }) {
            // Our working folder (often /root) may be closed to the service user.
            cmd.current_dir("/");
        }
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Hands `path` to the server's user (no-op when not root).
    pub(crate) fn chown(&self, path: &Path) -> Result<(), LocalPgError> {
        if let Self::ServiceUser { uid, gid, .. } = self {
            let meta = std::fs::symlink_metadata(path)
                .map_err(|e| LocalPgError::io("inspect", path, e))?;
            if meta.uid() != *uid || meta.gid() != *gid {
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                    .map_err(|e| LocalPgError::io("change the owner of", path, e))?;
            }
        }
        Ok(())
    }

    /// Checks that the server's user can traverse every folder above
    /// `data_dir` (which must exist). Returns the first one it cannot.
    pub(crate) async fn check_reachable(&self, data_dir: &Path) -> Result<(), LocalPgError> {
        let Self::ServiceUser { uid, gid, .. } = self else {
            return Ok(());
        };
        let mut ancestors: Vec<&Path> = data_dir.ancestors().skip(1).collect();
        ancestors.reverse();
        for folder in ancestors {
            let meta =
                std::fs::metadata(folder).map_err(|e| LocalPgError::io("inspect", folder, e))?;
            let mode = meta.permissions().mode();
            let by_mode = mode & 0o001 != 0
                || (meta.uid() == *uid && mode & 0o100 != 0)
                || (meta.gid() == *gid && mode & 0o010 != 0);
            // The mode bits miss supplementary groups and ACLs: ask the system.
            if !by_mode && !self.can_search(folder).await? {
                return Err(LocalPgError::NotTraversable {
                    data_dir: data_dir.to_owned(),
                    folder: folder.to_owned(),
                    mode: mode & 0o7777,
                    user: self.user_name(),
                });
            }
        }
        Ok(())
    }

    /// Whether the server's user has search permission on `folder`
    /// (`test -x`, run as that user).
    async fn can_search(&self, folder: &Path) -> Result<bool, LocalPgError> {
        let mut cmd = self.command(Path::new("test"));
        cmd.arg("-x").arg(folder);
        Ok(run(&mut cmd).await?.status.success())
    }
}

/// Runs a prepared command to completion and collects its output.
pub(crate) async fn run(cmd: &mut Command) -> Result<Output, LocalPgError> {
    cmd.output().await.map_err(|source| LocalPgError::Spawn {
        command: describe(cmd),
        source,
    })
}

/// Runs a prepared command and fails unless it exits successfully.
pub(crate) async fn run_checked(cmd: &mut Command) -> Result<Output, LocalPgError> {
    let output = run(cmd).await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LocalPgError::CommandFailed {
            command: describe(cmd),
            status: output.status.to_string(),
            stderr: message(&output),
        })
    }
}

/// What a failed program said: its standard error, or its standard output
/// when standard error is empty.
pub(crate) fn message(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.is_empty() {
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    } else {
        stderr
    }
}

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds a privilege tool on PATH or in the usual system folders.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| crate::bins::is_executable(candidate))
}

/// The uid and gid of `name`, from /etc/passwd or else `getent passwd`.
async fn lookup_user(name: &str) -> Option<(u32, u32)> {
    if let Ok(passwd) = tokio::fs::read_to_string("/etc/passwd").await
        && let Some(ids) = parse_passwd(&passwd, name)
    {
        return Some(ids);
    }
    let output = Command::new("getent")
        .arg("passwd")
        .arg(name)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_passwd(&String::from_utf8_lossy(&output.stdout), name)
}

/// Finds `name` in passwd(5)-formatted text.
fn parse_passwd(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_passwd;

    #[test]
    fn parses_passwd_lines() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(parse_passwd(text, "postgres"), Some((101, 104)));
        assert_eq!(parse_passwd(text, "root"), Some((0, 0)));
        assert_eq!(parse_passwd(text, "post"), None);
        assert_eq!(parse_passwd("postgres:x:oops:1:", "postgres"), None);
    }
}
