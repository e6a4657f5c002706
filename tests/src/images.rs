//! Container images for the one-box suite, built with the project's scripts (buildah and
//! podman on Debian-made bases, no registry): the AppStack image, the PostgreSQL image, a
//! second tag of the same image for an upgrade, and an image whose every command fails
//! (a migration that cannot succeed).

use std::path::Path;
use std::process::Command;

use crate::onebox::run;

fn build_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-image.sh")
}

/// The AppStack image: `APPSTACK_TEST_IMAGE` when set (`.ci/run` builds it before the
/// tests), else built now by `tests/tools/build-image.sh` (cached after the first build).
///
/// # Errors
///
/// When the build fails.
pub fn appstack() -> anyhow::Result<String> {
    if let Some(image) = std::env::var("APPSTACK_TEST_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
    {
        return Ok(image);
    }
    run(Command::new("bash").arg(build_script()))
}

/// The PostgreSQL image (`build-image.sh postgres`).
///
/// # Errors
///
/// When the build fails.
pub fn postgres() -> anyhow::Result<String> {
    run(Command::new("bash").arg(build_script()).arg("postgres"))
}

/// Tags `image` as `tag` too.
///
/// # Errors
///
/// When podman fails.
pub fn tag(image: &str, tag: &str) -> anyhow::Result<()> {
    run(Command::new("podman").args(["tag", image, tag])).map(drop)
}

/// `tag`: `image` with its `appstack` binary replaced by `false`, so every command of it —
/// the migration first — exits 1 (an upgrade to it must stop at its migration).
///
/// # Errors
///
/// When the build fails.
pub fn failing(image: &str, tag: &str) -> anyhow::Result<()> {
    let context = tempfile::tempdir()?;
    // The host's `false` needs only glibc, which the image has (the same Debian release).
    std::fs::copy("/usr/bin/false", context.path().join("false"))?;
    std::fs::write(
        context.path().join("Containerfile"),
        format!("FROM {image}\nCOPY false /usr/local/bin/appstack\n"),
    )?;
    run(Command::new("buildah")
        .args([
            "bud",
            "--runtime",
            "runc",
            "--layers=false",
            "-t",
            tag,
            "-f",
        ])
        .arg(context.path().join("Containerfile"))
        .arg(context.path()))
    .map(drop)
}
