//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager from `KUBEBUILDER_ASSETS` (the envtest convention), on loopback.
//!
//! kube-rs has no envtest; this is its idea in Rust. Started once per machine under a file
//! lock in `<target>/appstack-test-k8s` and adopted by every later test process (nextest
//! runs one per test), like the shared PostgreSQL: each test works in a namespace of its
//! own. It stays running between runs; [`stop_shared`] (or `.ci/run`'s trap, which kills the
//! pids in the folder) stops it.
//!
//! There is no kubelet and no scheduler: Deployments get ReplicaSets and Pods (the
//! controller-manager makes them) but no pod ever runs. The Job controller is off, so that a
//! test can finish a Job by writing its status, as the Job controller would once a kubelet
//! ran its pod, without the two fighting over it.
//!
//! Access is a static bearer token in group `system:masters` (`admin`), over the
//! apiserver's self-signed certificate; RBAC is on, so other identities are checked for
//! real.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

/// The variable naming the folder with `etcd`, `kube-apiserver`, `kube-controller-manager`.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
/// The admin's bearer token file name in the state folder.
const TOKEN_FILE: &str = "admin-token";
/// The apiserver's port file name in the state folder.
const PORT_FILE: &str = "apiserver-port";
/// How long a cold start may take on a small machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared control plane, as one test sees it.
#[derive(Clone)]
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The admin's bearer token.
    pub token: String,
    /// A kubeconfig file for `kubectl` and `helm` (admin).
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts the shared control plane, or adopts the running one.
    ///
    /// # Errors
    ///
    /// When `KUBEBUILDER_ASSETS` is missing or a component does not start.
    pub async fn shared() -> anyhow::Result<Self> {
        let dir = state_dir();
        let lock = lock(&dir)?;
        let plane = match adopt(&dir).await {
            Some(plane) => plane,
            None => start(&dir, &[], true).await?,
        };
        drop(lock);
        Ok(plane)
    }

    /// An admin client.
    ///
    /// # Errors
    ///
    /// When the client cannot be built.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.url, &self.token)
    }

    /// A client that authenticates with `token` (a ServiceAccount's, say).
    ///
    /// # Errors
    ///
    /// When the client cannot be built.
    pub fn client_with_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        client_for(&self.url, token)
    }

    /// Writes a kubeconfig at `path` that authenticates with `token` (a ServiceAccount's,
    /// so a process runs with exactly that account's rights).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        std::fs::write(path, kubeconfig_with_token(self, token))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Creates a fresh namespace `{prefix}-{random}` for one test.
    ///
    /// # Errors
    ///
    /// When the apiserver refuses.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let namespaces: Api<Namespace> = Api::all(self.client()?);
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Deletes namespace `name` and (through the namespace controller) all in it, without
    /// waiting: the shared plane outlives test runs, so what a test made should not pile up.
    ///
    /// # Errors
    ///
    /// When the apiserver refuses.
    pub async fn delete_namespace(&self, name: &str) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client()?);
        match namespaces.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(other) => Err(other).with_context(|| format!("deleting namespace {name}")),
        }
    }
}

/// A control plane of one test's own (etcd and kube-apiserver, no controller-manager), for a
/// case that needs a server configured unlike the shared one — an API group switched off,
/// say. About 10 s to start; stopped and removed when dropped.
pub struct PrivateControlPlane {
    /// The running plane.
    pub plane: ControlPlane,
    dir: tempfile::TempDir,
}

impl PrivateControlPlane {
    /// Starts one whose apiserver also gets `extra_apiserver_args`
    /// (`--runtime-config=policy/v1beta1=false`, say).
    ///
    /// # Errors
    ///
    /// When the assets are missing or a component does not start.
    pub async fn start(extra_apiserver_args: &[&str]) -> anyhow::Result<Self> {
        let parent = state_dir();
        std::fs::create_dir_all(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix("private-")
            .tempdir_in(&parent)
            .context("making the private control plane's folder")?;
        match start(dir.path(), extra_apiserver_args, false).await {
            Ok(plane) => Ok(Self { plane, dir }),
            Err(error) => {
                stop_recorded(dir.path());
                Err(error)
            }
        }
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        stop_recorded(self.dir.path());
    }
}

fn client_for(url: &str, token: &str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(url.parse().context("the apiserver URL")?);
    // The apiserver's certificate is self-signed for this run, on loopback only.
    config.accept_invalid_certs = true;
    config.auth_info.token = Some(token.to_owned().into());
    config.default_namespace = "default".into();
    kube::Client::try_from(config).context("building a Kubernetes client")
}

/// `<target>/appstack-test-k8s`.
fn state_dir() -> PathBuf {
    crate::pg::target_dir().join("appstack-test-k8s")
}

fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .context("opening the control plane's lock")?;
    file.lock().context("locking the control plane")?;
    Ok(file)
}

/// The running control plane recorded in `dir`, if it answers.
async fn adopt(dir: &Path) -> Option<ControlPlane> {
    let port = std::fs::read_to_string(dir.join(PORT_FILE)).ok()?;
    let token = std::fs::read_to_string(dir.join(TOKEN_FILE)).ok()?;
    let plane = ControlPlane {
        url: format!("https://127.0.0.1:{}", port.trim()),
        token: token.trim().to_owned(),
        kubeconfig: dir.join("kubeconfig"),
    };
    let client = plane.client().ok()?;
    tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
        .await
        .ok()?
        .ok()?;
    Some(plane)
}

/// The assets folder: `KUBEBUILDER_ASSETS`, else the cached build, else built now by
/// `tests/tools/build-envtest-assets.sh` (once, about 6 minutes on 2 cores; the caller holds
/// the lock, so parallel tests wait for one build).
fn assets() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()) {
        return checked(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/envtest-debian/1.20.2-reflect2");
        if cached.join("kube-apiserver").exists() {
            return checked(cached);
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-envtest-assets.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed; or set {ASSETS_ENV} to a folder with etcd, kube-apiserver and kube-controller-manager",
        script.display()
    );
    checked(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

fn checked(dir: PathBuf) -> anyhow::Result<PathBuf> {
    for binary in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        anyhow::ensure!(
            dir.join(binary).exists(),
            "{} has no {binary}",
            dir.display()
        );
    }
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `binary` detached (its own process group, outliving this test), logging to
/// `dir/<name>.log`; records its pid in `dir/<name>.pid`.
fn spawn(dir: &Path, name: &str, binary: &Path, args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(())
}

/// Starts etcd and kube-apiserver (with `extra_apiserver_args`) in `dir`, then the
/// controller-manager when `controller_manager` is set.
async fn start(
    dir: &Path,
    extra_apiserver_args: &[&str],
    controller_manager: bool,
) -> anyhow::Result<ControlPlane> {
    let assets = assets()?;
    stop_recorded(dir);
    for stale in ["etcd-data", "certs"] {
        let _ = std::fs::remove_dir_all(dir.join(stale));
    }
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(dir.join(TOKEN_FILE), &token)?;
    std::fs::write(
        certs.join("tokens.csv"),
        format!("{token},admin,admin,system:masters\n"),
    )?;
    let sa_key = certs.join("service-account.key");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&sa_key)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .context("running openssl for the service-account key")?;
    anyhow::ensure!(status.success(), "openssl genrsa failed");

    let (etcd_port, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
    let path = |p: &Path| p.display().to_string();
    spawn(
        dir,
        "etcd",
        &assets.join("etcd"),
        &[
            format!("--data-dir={}", path(&dir.join("etcd-data"))),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync=true".into(),
        ],
    )?;
    let mut apiserver_args = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={api_port}"),
        "--insecure-port=0".into(),
        format!("--cert-dir={}", path(&certs)),
        format!("--token-auth-file={}", path(&certs.join("tokens.csv"))),
        "--authorization-mode=RBAC".into(),
        // Room for many stacks' Services: the shared plane outlives test runs.
        "--service-cluster-ip-range=10.0.0.0/16".into(),
        "--allow-privileged=true".into(),
        format!("--service-account-key-file={}", path(&sa_key)),
        format!("--service-account-signing-key-file={}", path(&sa_key)),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
    ];
    apiserver_args.extend(extra_apiserver_args.iter().map(|a| (*a).to_owned()));
    spawn(
        dir,
        "kube-apiserver",
        &assets.join("kube-apiserver"),
        &apiserver_args,
    )?;
    let plane = ControlPlane {
        url: format!("https://127.0.0.1:{api_port}"),
        token,
        kubeconfig: dir.join("kubeconfig"),
    };
    wait_ready(&plane, dir).await?;
    std::fs::write(dir.join(PORT_FILE), api_port.to_string())?;
    std::fs::write(
        &plane.kubeconfig,
        kubeconfig_with_token(&plane, &plane.token),
    )?;
    if !controller_manager {
        return Ok(plane);
    }
    spawn(dir, "kube-controller-manager", &assets.join("kube-controller-manager"), &[
        format!("--kubeconfig={}", path(&plane.kubeconfig)),
        format!("--service-account-private-key-file={}", path(&sa_key)),
        format!("--root-ca-file={}", path(&certs.join("apiserver.crt"))),
        "--leader-elect=false".into(),
        "--port=0".into(),
        "--secure-port=0".into(),
        "--controllers=*,-job,-cronjob,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-csrsigning,-csrapproving,-bootstrapsigner,-tokencleaner,-ttl".into(),
    ])?;
    Ok(plane)
}

async fn wait_ready(plane: &ControlPlane, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let client = plane.client()?;
    loop {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(3), client.apiserver_version()).await
        {
            // The built-in namespaces exist once the apiserver's bootstrap ran.
            let namespaces: Api<Namespace> = Api::all(client.clone());
            if namespaces.get_opt("default").await.ok().flatten().is_some() {
                return Ok(());
            }
        }
        if started.elapsed() > START_TIMEOUT {
            let log = std::fs::read_to_string(dir.join("kube-apiserver.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow::bail!(
                "kube-apiserver not ready after {START_TIMEOUT:?}; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kubeconfig_with_token(plane: &ControlPlane, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
",
        plane.url, token
    )
}

/// Kills the processes recorded in `dir` (a stale run's, before a new start) and waits a
/// little for them to go, so their files can be removed.
fn stop_recorded(dir: &Path) {
    let mut killed = Vec::new();
    for name in ["kube-controller-manager", "kube-apiserver", "etcd"] {
        let pid_file = dir.join(format!("{name}.pid"));
        if let Ok(pid) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            killed.push(pid);
        }
        let _ = std::fs::remove_file(pid_file);
    }
    let _ = std::fs::remove_file(dir.join(PORT_FILE));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && killed
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists() && !zombie(*pid))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` has exited but not been reaped (a child of this process's parent).
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Stops the shared control plane.
///
/// # Errors
///
/// When its folder cannot be locked.
pub fn stop_shared() -> anyhow::Result<()> {
    let dir = state_dir();
    let _lock = lock(&dir)?;
    stop_recorded(&dir);
    Ok(())
}
