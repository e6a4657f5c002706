//! Finding the PostgreSQL server binaries.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::LocalPgError;

/// Where Debian and Ubuntu install each PostgreSQL major version.
pub(crate) const VERSIONS_ROOT: &str = "/usr/lib/postgresql";

/// Finds the folder holding `initdb` and `pg_ctl`.
///
/// PATH is searched first (following symbolic links there to the folder
/// they point into); otherwise the highest version under
/// `/usr/lib/postgresql/*/bin` (where Debian and Ubuntu put the server
/// binaries, off PATH) is used.
///
/// # Errors
///
/// [`LocalPgError::BinariesNotFound`] when neither place has both programs.
pub fn find_bin_dir() -> Result<PathBuf, LocalPgError> {
    let path = std::env::var_os("PATH");
    find_bin_dir_in(path.as_deref(), Path::new(VERSIONS_ROOT))
}

/// [`find_bin_dir`] with the search places given.
pub(crate) fn find_bin_dir_in(
    path: Option<&OsStr>,
    versions_root: &Path,
) -> Result<PathBuf, LocalPgError> {
    if let Some(path) = path
        && let Some(dir) = std::env::split_paths(path)
            .filter(|dir| dir.is_absolute())
            .find(|dir| has_server_tools(dir))
    {
        // A PATH entry may only hold symbolic links to a version's folder
        // (e.g. /usr/local/bin/initdb): use that folder, which also has the
        // other tools (pg_isready, psql, …).
        let real = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
            .filter(|real| has_server_tools(real));
        return Ok(real.unwrap_or(dir));
    }
    let Ok(entries) = std::fs::read_dir(versions_root) else {
        return Err(LocalPgError::BinariesNotFound);
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            has_server_tools(&bin).then_some((version, bin))
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, bin)| bin)
        .ok_or(LocalPgError::BinariesNotFound)
}

/// Whether `dir` holds executable `initdb` and `pg_ctl`.
fn has_server_tools(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

/// Whether `path` is a file with an execute bit set.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// "15" → [15], "9.6" → [9, 6]; anything else → None.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn fake_bin(dir: &Path, programs: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for program in programs {
            let file = dir.join(program);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn finds_the_binaries_on_this_machine() {
        let dir = find_bin_dir().expect("PostgreSQL server binaries should be installed");
        assert!(is_executable(&dir.join("initdb")), "{}", dir.display());
        assert!(is_executable(&dir.join("pg_ctl")), "{}", dir.display());
    }

    #[test]
    fn picks_the_highest_complete_version() {
        let root = tempfile::tempdir().unwrap();
        fake_bin(&root.path().join("9.6/bin"), &["initdb", "pg_ctl"]);
        fake_bin(&root.path().join("15/bin"), &["initdb", "pg_ctl"]);
        fake_bin(&root.path().join("10/bin"), &["initdb", "pg_ctl"]);
        fake_bin(&root.path().join("17/bin"), &["initdb"]); // incomplete
        fake_bin(&root.path().join("common/bin"), &["initdb", "pg_ctl"]); // not a version
        let found = find_bin_dir_in(None, root.path()).unwrap();
        assert_eq!(found, root.path().join("15/bin"));
    }

    #[test]
    fn prefers_path() {
        let root = tempfile::tempdir().unwrap();
        fake_bin(&root.path().join("versions/15/bin"), &["initdb", "pg_ctl"]);
        fake_bin(&root.path().join("onpath"), &["initdb", "pg_ctl"]);
        fake_bin(&root.path().join("partial"), &["pg_ctl"]);
        let path = std::env::join_paths([root.path().join("partial"), root.path().join("onpath")])
            .unwrap();
        let found = find_bin_dir_in(Some(&path), &root.path().join("versions")).unwrap();
        assert_eq!(found, root.path().join("onpath"));
    }

    #[test]
    fn follows_symbolic_links_on_path() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("versions/15/bin");
        fake_bin(&real, &["initdb", "pg_ctl", "pg_isready"]);
        let onpath = root.path().join("onpath");
        std::fs::create_dir(&onpath).unwrap();
        for program in ["initdb", "pg_ctl"] {
            std::os::unix::fs::symlink(real.join(program), onpath.join(program)).unwrap();
        }
        let found = find_bin_dir_in(Some(onpath.as_os_str()), Path::new("/nonexistent")).unwrap();
        assert_eq!(found, std::fs::canonicalize(&real).unwrap());
    }

    #[test]
    fn reports_missing_binaries() {
        let root = tempfile::tempdir().unwrap();
        let err = find_bin_dir_in(Some(OsStr::new("")), &root.path().join("nothing")).unwrap_err();
        assert!(matches!(err, LocalPgError::BinariesNotFound));
        assert!(err.to_string().contains("install the `postgresql` package"));
    }
}
