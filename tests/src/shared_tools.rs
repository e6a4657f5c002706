//! The workplace's shared tools (`../shared/tools`, read-only): beside the project, or at
//! `/work/shared` for a clone elsewhere (CI's), as `.ci/run` finds them.

use std::path::{Path, PathBuf};

/// `tools/<relative>` of the shared folder, where it exists.
pub fn shared_tool(relative: &str) -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        repo.join("../shared/tools").join(relative),
        Path::new("/work/shared/tools").join(relative),
    ]
    .into_iter()
    .find(|p| p.exists())
}
