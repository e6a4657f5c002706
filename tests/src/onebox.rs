//! A real single-node Kubernetes cluster with a kubelet, for the end-to-end suite
//! (`tests/tests/onebox.rs`): `../shared/tools/onebox/onebox.sh` started in a folder of
//! `target/`, images copied into its containerd, `kubectl` and a kube client for it, and a
//! stop when dropped — also when a case failed, after the cluster's state is written out.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The one-box cluster started from a folder.
pub struct Onebox {
    script: PathBuf,
    dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
}

/// `onebox.sh` of the shared tools.
///
/// # Errors
///
/// When the shared tools are not found.
pub fn script() -> anyhow::Result<PathBuf> {
    crate::shared_tools::shared_tool("onebox/onebox.sh")
        .context("no shared tools/onebox/onebox.sh beside the project")
}

/// Where `onebox.sh build` caches its binaries (kubectl among them): its own rule,
/// `ONEBOX_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/onebox/1.20.2`.
fn binaries() -> anyhow::Result<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(cache) = var("ONEBOX_CACHE") {
        return Ok(cache);
    }
    let cache = match var("XDG_CACHE_HOME") {
        Some(cache) => cache,
        None => var("HOME").context("HOME is not set")?.join(".cache"),
    };
    Ok(cache.join("onebox/1.20.2"))
}

/// Runs `command`, its stderr passed through; its stdout, trimmed.
///
/// # Errors
///
/// When it cannot start or exits unsuccessfully.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

impl Onebox {
    /// Starts a new cluster in `dir` (one left there by an aborted run is stopped and
    /// removed first, and what a killed cluster left on the host is cleared: see
    /// [`crate::onebox_leftovers`]). The control plane is built by the project's copy of
    /// the envtest script (its apiserver survives custom resources; see its header).
    ///
    /// # Errors
    ///
    /// When the script fails.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let script = script()?;
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-envtest-assets.sh");
        if dir.exists() {
            let _ = run(Command::new("bash").arg(&script).arg("stop").arg(dir));
            // A new cluster each run: a kept etcd would still hold the last run's objects.
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the last run's {}", dir.display()))?;
        }
        let mut stand_in = dir.as_os_str().to_owned();
        stand_in.push("-leftovers");
        crate::onebox_leftovers::clear(&script, Path::new(&stand_in))?;
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let kubeconfig = run(Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .env("ONEBOX_BUILD_ASSETS", &assets))?;
        let kubectl = binaries()?.join("kubectl");
        Ok(Self {
            script,
            dir,
            kubeconfig: PathBuf::from(kubeconfig),
            kubectl,
        })
    }

    /// A client of its apiserver, as admin.
    ///
    /// # Errors
    ///
    /// When the kubeconfig cannot be read.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Copies podman images into the cluster's containerd.
    ///
    /// # Errors
    ///
    /// When `onebox.sh load` fails.
    pub fn load(&self, images: &[&str]) -> anyhow::Result<()> {
        run(Command::new("bash")
            .arg(&self.script)
            .arg("load")
            .arg(&self.dir)
            .args(images))
        .map(drop)
    }

    /// `kubectl args…` with `stdin` on its standard input; its stdout.
    ///
    /// # Errors
    ///
    /// When kubectl fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The memory table of `mem.sh` (every process the cluster started, by component).
    ///
    /// # Errors
    ///
    /// When the script fails.
    pub fn memory(&self) -> anyhow::Result<String> {
        let mem = self.script.with_file_name("mem.sh");
        run(Command::new("bash").arg(mem).arg(&self.dir))
    }

    /// The cluster's state for a failed run: pods, events, and the logs of every container.
    fn write_diagnostics(&self) {
        let path = self.dir.join("diagnostics.txt");
        let mut report = String::new();
        for args in [
            &["get", "all,pvc,pv,leases,appstacks", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &["get", "appstacks", "-A", "-o", "yaml"][..],
        ] {
            report.push_str(&format!("### kubectl {}\n", args.join(" ")));
            report.push_str(&self.kubectl(args, None).unwrap_or_else(|e| e.to_string()));
        }
        let pods = self
            .kubectl(
                &[
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}\n{end}",
                ],
                None,
            )
            .unwrap_or_default();
        for line in pods.lines() {
            if let Some((namespace, pod)) = line.split_once(' ') {
                report.push_str(&format!("### logs {namespace}/{pod}\n"));
                let logs = self
                    .kubectl(
                        &[
                            "logs",
                            "-n",
                            namespace,
                            pod,
                            "--all-containers",
                            "--tail=60",
                        ],
                        None,
                    )
                    .unwrap_or_else(|e| e.to_string());
                report.push_str(&logs);
            }
        }
        let _ = std::fs::write(&path, &report);
        eprintln!(
            "onebox: the cluster's state is in {} ({} bytes)",
            path.display(),
            report.len()
        );
    }
}

impl Drop for Onebox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.write_diagnostics();
        }
        if let Err(error) = run(Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir))
        {
            eprintln!("onebox: stopping the cluster failed: {error:#}");
        }
    }
}
