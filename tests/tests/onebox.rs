//! The whole stack on a real single-node Kubernetes 1.20 cluster with a kubelet and
//! containerd (`../shared/tools/onebox`): the project's image imported into the cluster,
//! the chart installed with helm (the operator in two pods, with the chart's RBAC),
//! PostgreSQL and the simulator as pods, the quickstart AppStack applied with kubectl.
//! Then, from the host through the main Service: sign up, log in, SYNC and ASYNC requests,
//! a permanent failure; faults on the cluster (a worker pod deleted mid-run, the operator's
//! leader deleted, the PostgreSQL pod restarted); an upgrade to a second image tag under a
//! trickle of submits, a failing migration that stops the roll; and an uninstall that leaves
//! nothing behind. The figures of the closing note are printed as `onebox figure:` lines.
//!
//! Needs root and about ten minutes; it runs when `APPSTACK_TEST_ONEBOX` is set
//! (`.ci/run` sets it after building the image, and runs this suite on its own: the cluster
//! uses fixed ports and one per machine), else it says so and passes.
//! `APPSTACK_TEST_IMAGE` names an image already built; else `tests/tools/build-image.sh`
//! builds it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appstack_operator::crd::AppStack;
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::main::v1::request_service_client::RequestServiceClient;
use appstack_proto::main::v1::{GetRequest, Mode, Request, Status, SubmitRequest, WatchRequest};
use appstack_simulator::FaultPlan;
use appstack_tests::clients::sign_up_and_login;
use appstack_tests::helm::helm;
use appstack_tests::http_json::HttpJson;
use appstack_tests::onebox::Onebox;
use appstack_tests::stack_server::{Bearer, Requests};
use appstack_tests::steady_load::{Seen, SubmitLoad, all_succeed};
use appstack_tests::wait::eventually;
use appstack_tests::{images, pg};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt as _};
use tonic::transport::Channel;

const STACK_NAMESPACE: &str = "appstack";
const OPERATOR_NAMESPACE: &str = "appstack-system";
const RELEASE: &str = "appstack";
const WAIT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A figure for the closing note.
fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("onebox figure: {name}: {value}");
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_installs_serves_survives_faults_upgrades_and_uninstalls_on_a_real_cluster() {
    if std::env::var_os("APPSTACK_TEST_ONEBOX").is_none() {
        eprintln!("skipped: set APPSTACK_TEST_ONEBOX=1 to run the one-box cluster suite (root)");
        return;
    }
    let images = Images::build();
    let started = Instant::now();
    let cluster = Onebox::start(&pg::target_dir().join("appstack-onebox")).unwrap();
    figure("cluster start (node Ready)", secs(started.elapsed()));
    let loaded = Instant::now();
    cluster
        .load(&[
            &images.current,
            &images.next,
            &images.failing,
            &images.postgres,
        ])
        .unwrap();
    figure("images loaded into containerd", secs(loaded.elapsed()));
    let client = cluster.client().await.unwrap();
    let run = Run {
        cluster: &cluster,
        client: client.clone(),
        images: &images,
        jobs: JobLog::start(&client),
    };

    let stack = run.install().await;
    run.figures_at_rest().await;
    run.faults(&stack).await;
    run.upgrade(&stack).await;
    run.uninstall().await;
}

/// The images: the one built, a second tag of it, one whose migration fails, PostgreSQL.
struct Images {
    repository: String,
    current: String,
    current_version: String,
    next: String,
    next_version: String,
    failing: String,
    failing_version: String,
    postgres: String,
}

impl Images {
    fn build() -> Self {
        let current = images::appstack().unwrap();
        let (repository, current_version) = current.rsplit_once(':').unwrap();
        let (repository, current_version) = (repository.to_owned(), current_version.to_owned());
        let next_version = format!("{current_version}-next");
        let failing_version = format!("{current_version}-broken");
        let next = format!("{repository}:{next_version}");
        let failing = format!("{repository}:{failing_version}");
        images::tag(&current, &next).unwrap();
        images::failing(&current, &failing).unwrap();
        Self {
            postgres: images::postgres().unwrap(),
            repository,
            current,
            current_version,
            next,
            next_version,
            failing,
            failing_version,
        }
    }
}

struct Run<'a> {
    cluster: &'a Onebox,
    client: Client,
    images: &'a Images,
    jobs: JobLog,
}

/// Every state of every Job of the stack's namespace, as watched: the operator deletes a
/// migration Job once its version is deployed, so its record is kept here.
#[derive(Clone, Default)]
struct JobLog(std::sync::Arc<std::sync::Mutex<BTreeMap<String, Job>>>);

impl JobLog {
    fn start(client: &Client) -> Self {
        use futures_util::StreamExt as _;
        let log = Self::default();
        let jobs: Api<Job> = Api::namespaced(client.clone(), STACK_NAMESPACE);
        let kept = log.clone();
        tokio::spawn(async move {
            let mut stream =
                kube::runtime::watcher(jobs, kube::runtime::watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                if let Ok(
                    kube::runtime::watcher::Event::Apply(job)
                    | kube::runtime::watcher::Event::InitApply(job),
                ) = event
                {
                    kept.0.lock().unwrap().insert(job.name_any(), job);
                }
            }
        });
        log
    }

    fn get(&self, name: &str) -> Option<Job> {
        self.0.lock().unwrap().get(name).cloned()
    }
}

/// The stack as a caller sees it: the main Service's address, a caller's token.
struct Stack {
    main: Channel,
    simulator: HttpJson,
    token: String,
}

impl Stack {
    fn requests(&self) -> Requests {
        RequestServiceClient::with_interceptor(self.main.clone(), Bearer::new(&self.token).unwrap())
    }
}

fn submit(payload: &str, mode: Mode) -> SubmitRequest {
    SubmitRequest {
        kind: "echo".into(),
        payload: payload.into(),
        idempotency_key: String::new(),
        mode: mode as i32,
        deadline: None,
    }
}

/// Stops `load` two seconds on, checks that every acknowledged request ends SUCCEEDED, and
/// reports the counts under `what`.
async fn finish_and_check(stack: &Stack, load: SubmitLoad, what: &str) -> Seen {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.finish().await.unwrap();
    let mut requests = stack.requests();
    all_succeed(&mut requests, &seen.acknowledged, Duration::from_secs(180))
        .await
        .unwrap();
    let codes: Vec<_> = seen.failures.iter().map(|f| f.0).collect();
    figure(
        &format!("{what}: acknowledged / all succeeded / failed submits"),
        format!(
            "{0} / {0} / {1} {codes:?}",
            seen.acknowledged.len(),
            seen.failures.len()
        ),
    );
    seen
}

/// Whole seconds from `earlier` to `later` (the API's times have second resolution).
fn seconds_between(earlier: Timestamp, later: Timestamp) -> i64 {
    later.as_second() - earlier.as_second()
}

/// A pod whose Ready condition is True.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Submits `request`; the request as stored.
async fn submitted(requests: &mut Requests, request: SubmitRequest) -> Request {
    requests
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

impl Run<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), STACK_NAMESPACE)
    }

    fn helm(&self, args: &[&str]) {
        helm(&self.cluster.kubeconfig, OPERATOR_NAMESPACE, args).unwrap();
    }

    /// helm install, PostgreSQL, the simulator, the AppStack; Available; the first request.
    async fn install(&self) -> Stack {
        let installed = Instant::now();
        let chart = repo().join("charts/appstack-operator");
        // Client-side: a 1.20 server refuses the CRD's CEL rules under server-side apply.
        self.helm(&[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--create-namespace",
            "--server-side=false",
            "--set",
            &format!("image.repository={}", self.images.repository),
            "--set",
            &format!("image.tag={}", self.images.current_version),
            "--wait",
            "--timeout=4m",
        ]);
        figure(
            "helm install --wait (operator pods Ready)",
            secs(installed.elapsed()),
        );

        self.cluster
            .kubectl(&["create", "namespace", STACK_NAMESPACE], None)
            .unwrap();
        self.apply_postgres();
        self.cluster
            .kubectl(
                &[
                    "apply",
                    "-f",
                    repo().join("deploy/kind/simulator.yaml").to_str().unwrap(),
                ],
                None,
            )
            .unwrap();
        let mut quickstart: serde_json::Value = serde_norway::from_str(
            &std::fs::read_to_string(repo().join("deploy/examples/quickstart.yaml")).unwrap(),
        )
        .unwrap();
        quickstart["spec"]["image"] = self.images.repository.clone().into();
        quickstart["spec"]["version"] = self.images.current_version.clone().into();
        self.cluster
            .kubectl(
                &["apply", "-f", "-"],
                Some(&serde_json::to_string(&quickstart).unwrap()),
            )
            .unwrap();

        self.wait_available(&self.images.current_version).await;
        figure(
            "helm install → AppStack Available",
            secs(installed.elapsed()),
        );
        self.migration_ran_before_the_deployments(&self.images.current_version, None)
            .await;

        let stack = self.connect().await;
        let mut requests = stack.requests();
        let answer = submitted(&mut requests, submit(r#"{"first":true}"#, Mode::Sync)).await;
        assert_eq!(
            Status::try_from(answer.status),
            Ok(Status::Succeeded),
            "{answer:?}"
        );
        figure(
            "helm install → first succeeded request",
            secs(installed.elapsed()),
        );
        self.requests_end_to_end(&stack).await;
        stack
    }

    /// The kind guide's PostgreSQL manifest with the Debian-made image, on a hostPath
    /// volume bound ahead to its claim (onebox has no volume provisioner), so the data
    /// outlives the pod.
    fn apply_postgres(&self) {
        let data = pg::target_dir().join("appstack-onebox-volumes/shop-db");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        // The image's postgres user (70, as the alpine image's); hostPath gets no fsGroup.
        std::os::unix::fs::chown(&data, Some(70), Some(70)).unwrap();
        let volume = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "onebox-shop-db"},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": data.to_str().unwrap(), "type": "Directory"},
                "claimRef": {"namespace": STACK_NAMESPACE, "name": "data-shop-db-0"}
            }
        });
        self.cluster
            .kubectl(&["apply", "-f", "-"], Some(&volume.to_string()))
            .unwrap();
        let manifest = std::fs::read_to_string(repo().join("deploy/kind/postgres.yaml"))
            .unwrap()
            .replace(
                "docker.io/library/postgres:17-alpine",
                &self.images.postgres,
            );
        assert!(manifest.contains(&self.images.postgres));
        self.cluster
            .kubectl(&["apply", "-f", "-"], Some(&manifest))
            .unwrap();
    }

    /// Waits for `Available=True` at `version`, every component's pods Ready and updated.
    async fn wait_available(&self, version: &str) {
        let stacks: Api<AppStack> = self.api();
        let deployments: Api<Deployment> = self.api();
        let image = format!("{}:{version}", self.images.repository);
        eventually(
            &format!("the stack Available at {version}"),
            WAIT,
            || async {
                let status = stacks.get("shop").await.ok()?.status?;
                let available = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                if !available || status.version.as_deref() != Some(version) {
                    return None;
                }
                for component in ["main", "auth", "worker"] {
                    let d = deployments.get(&format!("shop-{component}")).await.ok()?;
                    let spec = d.spec.as_ref()?;
                    let pod = spec.template.spec.as_ref()?;
                    if pod.containers.first()?.image.as_deref() != Some(&image) {
                        return None;
                    }
                    let s = d.status.as_ref()?;
                    let want = spec.replicas.unwrap_or(1);
                    let settled = s.observed_generation == d.metadata.generation
                        && s.updated_replicas == Some(want)
                        && s.ready_replicas == Some(want)
                        && s.replicas == Some(want);
                    if want < 1 || !settled {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    /// The migration Job of `version` succeeded, and each Deployment's pods of `version`
    /// (its ReplicaSet) were made after it completed.
    async fn migration_ran_before_the_deployments(&self, version: &str, after: Option<Timestamp>) {
        let name = appstack_operator::render::migration_job_name("shop", version);
        let job = self
            .jobs
            .get(&name)
            .unwrap_or_else(|| panic!("no Job {name} was seen"));
        let status = job.status.unwrap();
        assert_eq!(status.succeeded, Some(1), "{status:?}");
        let completed = status.completion_time.as_ref().unwrap().0;
        let started = status.start_time.as_ref().unwrap().0;
        if let Some(after) = after {
            assert!(
                started >= after,
                "the Job started before the version changed"
            );
        }
        figure(
            &format!("migration Job {version}: start → complete"),
            format!("{} s", seconds_between(started, completed)),
        );
        let image = format!("{}:{version}", self.images.repository);
        let sets: Api<ReplicaSet> = self.api();
        for set in sets.list(&ListParams::default()).await.unwrap() {
            let pod = set.spec.as_ref().unwrap().template.as_ref().unwrap();
            let ours = pod.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(&image);
            if ours && set.name_any().starts_with("shop-") {
                let made = set.metadata.creation_timestamp.as_ref().unwrap().0;
                assert!(
                    made >= completed,
                    "{} was made at {made}, before the migration completed at {completed}",
                    set.name_any()
                );
            }
        }
    }

    /// The main Service and the simulator's, from the host (kube-proxy routes ClusterIPs
    /// for this machine too); a new user's token.
    async fn connect(&self) -> Stack {
        let services: Api<Service> = self.api();
        let address = |service: Service, port: &str| {
            let spec = service.spec.unwrap();
            let number = spec
                .ports
                .unwrap()
                .into_iter()
                .find(|p| p.name.as_deref() == Some(port))
                .unwrap()
                .port;
            std::net::SocketAddr::new(spec.cluster_ip.unwrap().parse().unwrap(), number as u16)
        };
        let main = address(services.get("shop-main").await.unwrap(), "grpc");
        let simulator = address(services.get("appstack-simulator").await.unwrap(), "http");
        figure("main Service", main);
        let main = Channel::from_shared(format!("http://{main}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let mut auth = AuthServiceClient::new(main.clone());
        let tokens = sign_up_and_login(&mut auth, "onebox@example.com", "a long onebox password")
            .await
            .unwrap();
        Stack {
            main,
            simulator: HttpJson::new(simulator),
            token: tokens.access_token,
        }
    }

    /// SYNC and ASYNC through main, ASYNC executed by a worker pod and watched to the end,
    /// and a permanent failure that goes dead.
    async fn requests_end_to_end(&self, stack: &Stack) {
        let mut requests = stack.requests();
        let sync = submitted(&mut requests, submit(r#"{"mode":"sync"}"#, Mode::Sync)).await;
        assert_eq!(Status::try_from(sync.status), Ok(Status::Succeeded));
        assert!(sync.result.contains("sync"), "{}", sync.result);

        let started_before = self.worker_jobs_started().await;
        let queued = submitted(&mut requests, submit(r#"{"mode":"async"}"#, Mode::Async)).await;
        let mut watch = requests
            .watch(WatchRequest {
                id: queued.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while let Some(event) = tokio::time::timeout(Duration::from_secs(60), watch.message())
            .await
            .unwrap()
            .unwrap()
        {
            seen.push(Status::try_from(event.to_status).unwrap());
        }
        assert_eq!(seen.last(), Some(&Status::Succeeded), "{seen:?}");
        assert!(seen.contains(&Status::Running), "{seen:?}");
        let done = requests
            .get(GetRequest { id: queued.id })
            .await
            .unwrap()
            .into_inner();
        assert!(done.result.contains("async"), "{}", done.result);
        assert!(
            self.worker_jobs_started().await > started_before,
            "no worker pod counted the job"
        );

        // A 400 from the external service is permanent: dead after one attempt.
        let mut failing = FaultPlan {
            error_rate: 1.0,
            ..FaultPlan::default()
        };
        failing.error.http_status = 400;
        self.set_faults(stack, &failing).await;
        let failing = submitted(&mut requests, submit(r#"{"mode":"dead"}"#, Mode::Async)).await;
        let dead = eventually("the failing request dead", WAIT, || {
            let mut requests = requests.clone();
            let id = failing.id.clone();
            async move {
                let r = requests.get(GetRequest { id }).await.ok()?.into_inner();
                (Status::try_from(r.status) == Ok(Status::Dead)).then_some(r)
            }
        })
        .await;
        assert_eq!(dead.attempts, 1);
        assert_eq!(dead.last_failure.unwrap().reason, "http_400");
        self.set_faults(stack, &FaultPlan::default()).await;
    }

    async fn set_faults(&self, stack: &Stack, plan: &FaultPlan) {
        let plan = serde_json::to_value(plan).unwrap();
        let answer = stack
            .simulator
            .send(
                http::Method::PUT,
                "/_simulator/faults",
                None,
                Some(&plan),
                &[],
            )
            .await
            .unwrap();
        assert!(answer.status.is_success(), "{:?}", answer.body);
    }

    /// `appstack_worker_jobs_started_total` summed over the worker pods' admin ports.
    async fn worker_jobs_started(&self) -> u64 {
        let mut total = 0;
        for pod in self.pods("worker").await {
            let ip = pod.status.and_then(|s| s.pod_ip).unwrap();
            let address = format!("{ip}:{}", appstack_operator::render::ADMIN_PORT);
            let metrics = HttpJson::new(address.parse().unwrap());
            let answer = metrics.get("/metrics", None).await.unwrap();
            let text = String::from_utf8_lossy(&answer.body);
            total += text
                .lines()
                .filter(|l| l.starts_with("appstack_worker_jobs_started_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64;
        }
        total
    }

    async fn pods(&self, component: &str) -> Vec<Pod> {
        let pods: Api<Pod> = self.api();
        pods.list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance=shop,app.kubernetes.io/component={component}"
        )))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
    }

    /// Pod start times (created → Ready), the cluster's and each pod's memory.
    async fn figures_at_rest(&self) {
        let pods: Api<Pod> = self.api();
        let mut by_owner: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut memory = Vec::new();
        for pod in pods.list(&ListParams::default()).await.unwrap() {
            let name = pod.name_any();
            let created = pod.metadata.creation_timestamp.as_ref().unwrap().0;
            let status = pod.status.as_ref().unwrap();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0);
            if let Some(ready) = ready {
                // By component where the operator made it, else by owner (StatefulSet,
                // ReplicaSet of the simulator).
                let labels = pod.labels();
                let group = match labels.get("app.kubernetes.io/component") {
                    Some(component) => format!("shop {component}"),
                    None => pod
                        .owner_references()
                        .first()
                        .map_or_else(|| name.clone(), |o| o.name.clone()),
                };
                by_owner
                    .entry(group)
                    .or_default()
                    .push(seconds_between(created, ready));
            }
            if let Some(bytes) = pod.metadata.uid.as_deref().and_then(working_set_bytes) {
                memory.push(format!("{name} {:.1} MiB", bytes as f64 / 1_048_576.0));
            }
        }
        for (group, seconds) in by_owner {
            figure(
                &format!("pod start (created → Ready) {group}"),
                format!("{seconds:?} s"),
            );
        }
        figure("pod working sets", memory.join(", "));
        figure(
            "cluster memory (mem.sh)",
            format!("\n{}", self.cluster.memory().unwrap()),
        );
    }

    async fn faults(&self, stack: &Stack) {
        self.delete_a_worker_pod_mid_run(stack).await;
        self.delete_the_operator_leader().await;
        self.restart_postgres(stack).await;
    }

    async fn delete_a_worker_pod_mid_run(&self, stack: &Stack) {
        let load = SubmitLoad::start(&stack.requests(), 2, Duration::from_millis(50));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let workers = self.pods("worker").await;
        let victim = workers[0].name_any();
        let pods: Api<Pod> = self.api();
        pods.delete(&victim, &DeleteParams::default())
            .await
            .unwrap();
        let deleted = Instant::now();
        let want = workers.len();
        eventually("the worker Deployment to replace its pod", WAIT, || async {
            let now = self.pods("worker").await;
            let ready = now
                .iter()
                .filter(|p| p.name_any() != victim && is_ready(p))
                .count();
            (ready == want).then_some(())
        })
        .await;
        figure(
            "worker pod deleted → replacement Ready",
            secs(deleted.elapsed()),
        );
        finish_and_check(stack, load, "worker pod deleted mid-run").await;
    }

    /// The other replica takes the Lease; the stack's children are the same objects.
    async fn delete_the_operator_leader(&self) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        let holder = || async {
            leases
                .get("appstack-operator")
                .await
                .ok()?
                .spec?
                .holder_identity
                .filter(|h| !h.is_empty())
        };
        let leader = eventually("a leader", WAIT, holder).await;
        let before = self.children().await.unwrap();
        assert!(before.len() > 10, "{before:?}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        pods.delete(&leader, &DeleteParams::default())
            .await
            .unwrap();
        let deleted = Instant::now();
        let successor = eventually("another replica to lead", WAIT, || async {
            holder().await.filter(|h| *h != leader)
        })
        .await;
        figure(
            "operator leader deleted → new leader",
            format!("{} ({successor})", secs(deleted.elapsed())),
        );
        // A few reconciles of the new leader later, nothing was made twice or remade.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = self.children().await.unwrap();
        assert_eq!(before, after, "the children changed under the new leader");
    }

    /// The stack's children: kind, name, uid, and a Deployment's generation.
    async fn children(&self) -> Result<Vec<(String, String, String)>, kube::Error> {
        let mut children = Vec::new();
        for (group, version, kind, plural) in [
            ("apps", "v1", "Deployment", "deployments"),
            ("", "v1", "Service", "services"),
            ("", "v1", "ConfigMap", "configmaps"),
            ("", "v1", "Secret", "secrets"),
            ("", "v1", "ServiceAccount", "serviceaccounts"),
            ("batch", "v1", "Job", "jobs"),
            (
                "policy",
                "v1beta1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            (
                "autoscaling",
                "v2beta2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
        ] {
            let resource = ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() {
                    version.into()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.into(),
                plural: plural.into(),
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), STACK_NAMESPACE, &resource);
            for object in api
                .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
                .await?
            {
                let generation = object.metadata.generation.unwrap_or(0);
                children.push((
                    kind.to_owned(),
                    object.name_any(),
                    format!("{} g{generation}", object.uid().unwrap_or_default()),
                ));
            }
        }
        children.sort();
        Ok(children)
    }

    /// The PostgreSQL pod deleted under load: its StatefulSet brings it back on the same
    /// volume, and every acknowledged request ends succeeded.
    async fn restart_postgres(&self, stack: &Stack) {
        let load = SubmitLoad::start(&stack.requests(), 2, Duration::from_millis(50));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pods: Api<Pod> = self.api();
        let old = pods.get("shop-db-0").await.unwrap().uid().unwrap();
        pods.delete("shop-db-0", &DeleteParams::default())
            .await
            .unwrap();
        let deleted = Instant::now();
        eventually("PostgreSQL back", WAIT, || async {
            let pod = pods.get("shop-db-0").await.ok()?;
            (pod.uid()? != old && is_ready(&pod)).then_some(())
        })
        .await;
        figure(
            "PostgreSQL pod deleted → new pod Ready",
            secs(deleted.elapsed()),
        );
        let back = load
            .back_since(Instant::now(), Duration::from_secs(120))
            .await
            .unwrap();
        figure("PostgreSQL Ready → submits succeed again", secs(back));
        finish_and_check(stack, load, "PostgreSQL restart").await;
    }

    async fn set_version(&self, version: &str) -> Timestamp {
        let stacks: Api<AppStack> = self.api();
        let changed = Timestamp::now();
        stacks
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"version": version}})),
            )
            .await
            .unwrap();
        // Second resolution on the server's side.
        changed - SignedDuration::from_secs(1)
    }

    /// To the second tag under a trickle of submits; then to the failing image and back.
    async fn upgrade(&self, stack: &Stack) {
        let load = SubmitLoad::start(&stack.requests(), 2, Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rolled = Instant::now();
        let changed = self.set_version(&self.images.next_version).await;
        self.wait_available(&self.images.next_version).await;
        figure(
            "upgrade: version changed → Available",
            secs(rolled.elapsed()),
        );
        self.migration_ran_before_the_deployments(&self.images.next_version, Some(changed))
            .await;
        finish_and_check(stack, load, "upgrade under a trickle").await;
        let mut requests = stack.requests();

        // The failing image: its migration Job fails, the roll stops, the old pods serve.
        self.set_version(&self.images.failing_version).await;
        let stacks: Api<AppStack> = self.api();
        let reason = eventually("MigrationFailed", WAIT, || async {
            let status = stacks.get("shop").await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "MigrationFailed"
                })
                .map(|c| c.message)
        })
        .await;
        figure("failing migration reported as", &reason);
        let deployments: Api<Deployment> = self.api();
        let serving = format!("{}:{}", self.images.repository, self.images.next_version);
        for component in ["main", "auth", "worker"] {
            let d = deployments.get(&format!("shop-{component}")).await.unwrap();
            let image = d.spec.unwrap().template.spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            assert_eq!(image, serving, "{component} rolled past a failed migration");
        }
        let answer = submitted(
            &mut requests,
            submit(r#"{"after":"failed migration"}"#, Mode::Sync),
        )
        .await;
        assert_eq!(Status::try_from(answer.status), Ok(Status::Succeeded));
        // Back to the version that runs: Available again, nothing rolled.
        self.set_version(&self.images.next_version).await;
        self.wait_available(&self.images.next_version).await;
        eventually("Degraded cleared", WAIT, || async {
            let status = stacks.get("shop").await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "False")
                .then_some(())
        })
        .await;
    }

    /// The AppStack deleted: its children go; the chart uninstalled: nothing of it stays.
    async fn uninstall(&self) {
        let stacks: Api<AppStack> = self.api();
        stacks
            .delete("shop", &DeleteParams::default())
            .await
            .unwrap();
        let deleted = Instant::now();
        eventually("the stack's children gone", WAIT, || async {
            let pods: Api<Pod> = self.api();
            let left = pods
                .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
                .await
                .ok()?;
            (left.items.is_empty() && self.children().await.ok()?.is_empty()).then_some(())
        })
        .await;
        figure(
            "AppStack deleted → children and pods gone",
            secs(deleted.elapsed()),
        );

        let uninstalled = Instant::now();
        self.helm(&["uninstall", RELEASE, "--wait", "--timeout=2m"]);
        figure("helm uninstall --wait", secs(uninstalled.elapsed()));
        // The ReplicaSet and its pods go by the garbage collector, after the pods' grace.
        let kinds = "all,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,networkpolicies,poddisruptionbudgets,configmaps,secrets";
        let selector = format!("app.kubernetes.io/instance={RELEASE}");
        eventually("nothing of the release left", WAIT, || async {
            let listed = self
                .cluster
                .kubectl(&["get", kinds, "-A", "-l", &selector, "-o", "name"], None)
                .ok()?;
            let pods = self
                .cluster
                .kubectl(
                    &["get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "name"],
                    None,
                )
                .ok()?;
            (listed.trim().is_empty() && pods.trim().is_empty()).then_some(())
        })
        .await;
        figure(
            "helm uninstall → nothing of the release left",
            secs(uninstalled.elapsed()),
        );
        // What stays: the namespace helm created, the operator's Lease (expired, naming its
        // last holder) and the CRD (helm never deletes those in crds/).
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        for lease in leases.list(&ListParams::default()).await.unwrap() {
            let holder = lease
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            figure(
                "left in the operator's namespace",
                format!(
                    "Lease {} holder {holder:?}",
                    lease.metadata.name.unwrap_or_default()
                ),
            );
        }
    }
}

/// A pod's memory working set (usage less inactive file pages, as the kubelet counts it),
/// from its cgroup (v1 layout, any QoS class).
fn working_set_bytes(uid: &str) -> Option<u64> {
    let root = Path::new("/sys/fs/cgroup/memory/kubepods");
    let folder = format!("pod{uid}");
    let dir = [
        root.join(&folder),
        root.join("burstable").join(&folder),
        root.join("besteffort").join(&folder),
    ]
    .into_iter()
    .find(|d| d.exists())?;
    let usage: u64 = std::fs::read_to_string(dir.join("memory.usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let inactive = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}
