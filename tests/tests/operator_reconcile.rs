//! The operator against a real control plane (etcd, kube-apiserver, kube-controller-manager
//! 1.20 from `KUBEBUILDER_ASSETS`): create, migrate, roll, restore, toggle, upgrade, delete.
//!
//! No kubelet runs here, so a migration Job is finished by writing its status — what the Job
//! controller would write once a kubelet had run its pod (the Job controller is off in the
//! test control plane, so nothing overwrites it).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::time::Duration;

use appstack_operator::controller::Tuning;
use appstack_operator::crd::AppStack;
use appstack_operator::metrics::Metrics;
use appstack_tests::control_plane::{ControlPlane, PrivateControlPlane};
use appstack_tests::operator_fixture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it gives a value, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    appstack_tests::wait::eventually(what, WAIT, check).await
}

fn quickstart(namespace: &str) -> AppStack {
    operator_fixture::quickstart(namespace).unwrap()
}

struct Running {
    plane: ControlPlane,
    client: Client,
    namespace: String,
    metrics: Metrics,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// On the shared control plane: see [`operator_on`].
async fn operator() -> Running {
    operator_on(ControlPlane::shared().await.unwrap()).await
}

/// A namespace on `plane` with the CRD, the database Secret, and the controller watching it.
async fn operator_on(plane: ControlPlane) -> Running {
    operator_tuned(plane, Tuning::default()).await
}

/// [`operator_on`] with the controller tuned.
async fn operator_tuned(plane: ControlPlane, tuning: Tuning) -> Running {
    let client = plane.client().unwrap();
    operator_fixture::install_crd(&client).await.unwrap();
    let namespace = plane.namespace("op").await.unwrap();
    operator_fixture::create_database_secret(&client, &namespace)
        .await
        .unwrap();
    let metrics = Metrics::default();
    let (stop, task) = start_controller(&client, &namespace, tuning, metrics.clone());
    Running {
        plane,
        client,
        namespace,
        metrics,
        stop,
        task,
    }
}

/// The controller over `namespace`, counting into `metrics`, until the sender is used.
fn start_controller(
    client: &Client,
    namespace: &str,
    tuning: Tuning,
    metrics: Metrics,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (client, namespace) = (client.clone(), namespace.to_owned());
    let task = tokio::spawn(async move {
        appstack_operator::controller::run(client, Some(namespace), tuning, metrics, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task)
}

impl Running {
    /// Creates the quickstart stack and finishes its first migration.
    async fn create_migrated(&self) {
        let stacks: Api<AppStack> = self.api();
        stacks
            .create(&PostParams::default(), &quickstart(&self.namespace))
            .await
            .unwrap();
        self.finish_job("shop-migrate-0-1-0", true).await;
    }

    /// Stops the controller.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Stops the controller and deletes the test's namespace (the shared plane outlives
    /// the run).
    async fn shut_down(self) {
        let (plane, namespace) = (self.plane.clone(), self.namespace.clone());
        self.stop().await;
        plane.delete_namespace(&namespace).await.unwrap();
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn dynamic(&self, api_version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    /// Finishes the migration Job `name` as the Job controller would: succeeded or failed.
    async fn finish_job(&self, name: &str, succeeded: bool) {
        let jobs: Api<Job> = self.api();
        let job = eventually(&format!("job {name}"), || async {
            jobs.get_opt(name).await.ok().flatten()
        })
        .await;
        assert!(job.metadata.owner_references.is_some());
        operator_fixture::finish_job(&self.client, &self.namespace, name, succeeded)
            .await
            .unwrap();
    }

    async fn deployment_image(&self, name: &str) -> Option<String> {
        let deployments: Api<Deployment> = self.api();
        let d = deployments.get_opt(name).await.ok()??;
        d.spec?.template.spec?.containers.first()?.image.clone()
    }

    /// Waits for `Degraded=True` and gives its reason and message.
    async fn degraded(&self) -> (String, String) {
        let stacks: Api<AppStack> = self.api();
        eventually("Degraded", || async {
            let stack = stacks.get("shop").await.ok()?;
            let c = stack
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True")?;
            Some((c.reason, c.message))
        })
        .await
    }

    async fn condition(&self, kind: &str) -> Option<(String, String)> {
        let stacks: Api<AppStack> = self.api();
        let stack = stacks.get("shop").await.ok()?;
        let c = stack
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == kind)?;
        Some((c.status, c.reason))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appstack_becomes_its_children_and_the_operator_keeps_them_so() {
    let op = operator().await;
    let stacks: Api<AppStack> = op.api();
    stacks
        .create(&PostParams::default(), &quickstart(&op.namespace))
        .await
        .unwrap();

    // First install: identities, config, services, policies and the migration; no Deployment
    // before the migration succeeded.
    let accounts: Api<ServiceAccount> = op.api();
    for name in ["shop-main", "shop-auth", "shop-worker"] {
        eventually(name, || async {
            accounts.get_opt(name).await.ok().flatten()
        })
        .await;
    }
    let maps: Api<ConfigMap> = op.api();
    let map = eventually("the ConfigMap", || async {
        maps.get_opt("shop-config").await.ok().flatten()
    })
    .await;
    let owner = &map.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("AppStack", Some(true))
    );
    let secrets: Api<Secret> = op.api();
    let keys = eventually("the signing keys", || async {
        secrets.get_opt("shop-signing-keys").await.ok().flatten()
    })
    .await;
    let pem = keys.data.unwrap().into_values().next().unwrap();
    assert!(
        String::from_utf8(pem.0)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        op.deployment_image("shop-main").await.is_none(),
        "a Deployment before its migration"
    );
    eventually("Progressing/Migrating", || async {
        (op.condition("Progressing").await == Some(("True".into(), "Migrating".into())))
            .then_some(())
    })
    .await;

    op.finish_job("shop-migrate-0-1-0", true).await;
    for name in ["shop-main", "shop-auth", "shop-worker"] {
        let image = eventually(name, || op.deployment_image(name)).await;
        assert_eq!(image, "localhost/appstack:0.1.0");
    }
    // 1.20 serves HPAs as autoscaling/v2beta2 and PDBs as policy/v1beta1 only: discovered.
    let hpas = op.dynamic(
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    let pdbs = op.dynamic(
        "policy/v1beta1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    );
    eventually("the worker's HPA", || async {
        hpas.get_opt("shop-worker").await.ok().flatten()
    })
    .await;
    eventually("the worker's PDB", || async {
        pdbs.get_opt("shop-worker").await.ok().flatten()
    })
    .await;
    let jobs: Api<Job> = op.api();
    eventually("the finished migration Job to go", || async {
        jobs.get_opt("shop-migrate-0-1-0")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;

    // Each condition's transitions were recorded as Events on the AppStack.
    let events: Api<k8s_openapi::api::events::v1::Event> = op.api();
    let reasons = eventually("Events for the migration and the roll-out", || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("AppStack"))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.iter().any(|r| r == "Migrating") && reasons.iter().any(|r| r == "RollingOut"))
            .then_some(reasons)
    })
    .await;
    assert!(
        reasons.iter().any(|r| r == "ComponentsUnavailable"),
        "{reasons:?}"
    );

    // A child deleted by hand comes back; one edited by hand is put back.
    maps.delete("shop-config", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ConfigMap restored", || async {
        maps.get_opt("shop-config").await.ok().flatten()
    })
    .await;
    let deployments: Api<Deployment> = op.api();
    let edit = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "appstack", "image": "evil/image:1"}]}}}});
    deployments
        .patch(
            "shop-auth",
            &PatchParams::default(),
            &Patch::Strategic(&edit),
        )
        .await
        .unwrap();
    eventually("the auth image restored", || async {
        (op.deployment_image("shop-auth").await.as_deref() == Some("localhost/appstack:0.1.0"))
            .then_some(())
    })
    .await;

    // Autoscaling off for the worker: its HPA goes, its Deployment gets a fixed count.
    let off =
        serde_json::json!({"spec": {"worker": {"autoscaling": {"enabled": false}, "replicas": 3}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    eventually("the worker's HPA deleted", || async {
        hpas.get_opt("shop-worker")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    let replicas = eventually("3 worker replicas", || async {
        let d = deployments.get_opt("shop-worker").await.ok()??;
        (d.spec?.replicas == Some(3)).then_some(3)
    })
    .await;
    assert_eq!(replicas, 3);

    // Deleted: the garbage collector takes every child with it.
    stacks
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the children collected", || async {
        let gone = deployments.get_opt("shop-main").await.ok()?.is_none()
            && maps.get_opt("shop-config").await.ok()?.is_none()
            && accounts.get_opt("shop-worker").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_migrates_first_and_a_failed_migration_stops_the_roll() {
    let op = operator().await;
    let stacks: Api<AppStack> = op.api();
    op.create_migrated().await;
    eventually("0.1.0 rolled", || async {
        (op.deployment_image("shop-worker").await.as_deref() == Some("localhost/appstack:0.1.0"))
            .then_some(())
    })
    .await;

    // 0.2.0 fails to migrate: the Deployments keep 0.1.0 and the stack says why.
    let bump = |version: &str| serde_json::json!({"spec": {"version": version}});
    stacks
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&bump("0.2.0")),
        )
        .await
        .unwrap();
    op.finish_job("shop-migrate-0-2-0", false).await;
    let (reason, message) = op.degraded().await;
    assert_eq!(reason, "MigrationFailed");
    assert!(message.contains("backoff limit"), "{message}");
    assert_eq!(
        op.deployment_image("shop-main").await.as_deref(),
        Some("localhost/appstack:0.1.0")
    );
    // A change to every pod's template (the Job's too) while that failed Job stands — its
    // template cannot change — still reaches everything else.
    let traced =
        serde_json::json!({"spec": {"observability": {"otlpEndpoint": "http://collector:4317"}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&traced))
        .await
        .unwrap();
    let deployments: Api<Deployment> = op.api();
    eventually("the Deployments to follow", || async {
        let d = deployments.get_opt("shop-main").await.ok()??;
        let env = d.spec?.template.spec?.containers.first()?.env.clone()?;
        env.iter()
            .any(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
            .then_some(())
    })
    .await;

    // 0.3.0 migrates: then, and only then, the Deployments move to it.
    stacks
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&bump("0.3.0")),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = op.api();
    eventually("the 0.3.0 migration", || async {
        jobs.get_opt("shop-migrate-0-3-0").await.ok().flatten()
    })
    .await;
    assert_eq!(
        op.deployment_image("shop-main").await.as_deref(),
        Some("localhost/appstack:0.1.0")
    );
    op.finish_job("shop-migrate-0-3-0", true).await;
    for name in ["shop-main", "shop-auth", "shop-worker"] {
        eventually("0.3.0 rolled", || async {
            (op.deployment_image(name).await.as_deref() == Some("localhost/appstack:0.3.0"))
                .then_some(())
        })
        .await;
    }
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_server_accepts_but_the_rules_refuse_is_a_condition() {
    let op = operator().await;
    let stacks: Api<AppStack> = op.api();
    let mut stack = quickstart(&op.namespace);
    // 1.20 does not enforce CEL, so the schema lets this through; the render refuses it.
    stack.spec.config.routes.get_mut("echo").unwrap().service = "nowhere".into();
    stacks.create(&PostParams::default(), &stack).await.unwrap();
    let (reason, message) = op.degraded().await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("config.routes.echo.service"), "{message}");
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_writes_nothing_for_an_unchanged_stack() {
    let op = operator().await;
    op.create_migrated().await;
    let hpas = op.dynamic(
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    eventually("every child", || async {
        hpas.get_opt("shop-worker").await.ok().flatten()
    })
    .await;
    // Settled: the migration Job gone, every Deployment's status written by the
    // controller-manager and seen in the AppStack's (those are real changes, each a status
    // write), then no write for five seconds.
    let jobs: Api<Job> = op.api();
    let deployments: Api<Deployment> = op.api();
    eventually("the stack to settle", || async {
        if jobs.get_opt("shop-migrate-0-1-0").await.ok()?.is_some() {
            return None;
        }
        for name in ["shop-main", "shop-auth", "shop-worker"] {
            let d = deployments.get_opt(name).await.ok()??;
            let status = d.status?;
            (status.observed_generation? >= d.metadata.generation?).then_some(())?;
        }
        Some(())
    })
    .await;
    operator_fixture::settled(&op.metrics, Duration::from_secs(5)).await;
    let (plane, client, namespace) = (op.plane.clone(), op.client.clone(), op.namespace.clone());
    op.stop().await;

    // A new operator process (fresh memory) looks at the same stack.
    let metrics = Metrics::default();
    let (stop, task) = start_controller(&client, &namespace, Tuning::default(), metrics.clone());
    eventually("the new operator's first reconcile", || async {
        (metrics.reconciles() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metrics.failures(), 0);
    assert_eq!(
        metrics.writes(),
        0,
        "a restart rewrote children or status of an unchanged stack"
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    plane.delete_namespace(&namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stack_is_left_as_it_is_and_its_status_stays_current() {
    let op = operator().await;
    let stacks: Api<AppStack> = op.api();
    op.create_migrated().await;
    let hpas = op.dynamic(
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    // Migrated and rolled: the Deployments and their autoscalers exist.
    eventually("every child", || async {
        op.deployment_image("shop-worker").await?;
        hpas.get_opt("shop-worker").await.ok().flatten()
    })
    .await;

    let pause = serde_json::json!({"spec": {"paused": true}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .unwrap();
    eventually("Progressing/Paused", || async {
        (op.condition("Progressing").await == Some(("False".into(), "Paused".into()))).then_some(())
    })
    .await;
    // While paused: a spec change is not applied and a child deleted by hand stays deleted,
    // but the status follows the spec's generation.
    let off =
        serde_json::json!({"spec": {"worker": {"autoscaling": {"enabled": false}, "replicas": 3}}});
    let changed = stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    let maps: Api<ConfigMap> = op.api();
    maps.delete("shop-config", &DeleteParams::default())
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    eventually("the status to observe the paused change", || async {
        let status = stacks.get("shop").await.ok()?.status?;
        (status.observed_generation == generation).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hpas.get_opt("shop-worker").await.unwrap().is_some(),
        "a paused stack lost its HPA"
    );
    assert!(
        maps.get_opt("shop-config").await.unwrap().is_none(),
        "a paused stack's child was restored"
    );
    let deployments: Api<Deployment> = op.api();
    let worker = deployments.get("shop-worker").await.unwrap();
    assert_ne!(worker.spec.unwrap().replicas, Some(3));

    // Resumed: everything the spec says, at once.
    let resume = serde_json::json!({"spec": {"paused": false}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    eventually("the ConfigMap restored", || async {
        maps.get_opt("shop-config").await.ok().flatten()
    })
    .await;
    eventually("the HPA deleted and 3 replicas", || async {
        let gone = hpas.get_opt("shop-worker").await.ok()?.is_none();
        let d = deployments.get_opt("shop-worker").await.ok()??;
        (gone && d.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_the_server_does_not_serve_is_a_condition_and_the_rest_is_applied() {
    // A server of its own with HPAs (autoscaling/v2beta2) and PDBs (policy/v1beta1) off:
    // what a cluster serving only versions this operator does not know looks like.
    let private = PrivateControlPlane::start(&[
        "--runtime-config=autoscaling/v2beta2=false,policy/v1beta1=false",
    ])
    .await
    .unwrap();
    let op = operator_on(private.plane.clone()).await;
    op.create_migrated().await;

    let (reason, message) = op.degraded().await;
    assert_eq!(reason, "UnservedApi");
    assert!(
        message.contains("HorizontalPodAutoscaler") && message.contains("PodDisruptionBudget"),
        "{message}"
    );
    for name in ["shop-main", "shop-auth", "shop-worker"] {
        let image = eventually(name, || op.deployment_image(name)).await;
        assert_eq!(image, "localhost/appstack:0.1.0");
    }
    assert_eq!(
        op.metrics.failures(),
        0,
        "an unserved API failed reconciles instead of being reported"
    );
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_the_server_refuses_is_a_condition_and_is_retried() {
    let op = operator().await;
    // A quota of no Services: the apiserver's admission refuses the stack's Services.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = op.api();
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}}),
    )
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    eventually("the quota counted", || async {
        quotas.get("no-services").await.ok()?.status?.hard
    })
    .await;
    let stacks: Api<AppStack> = op.api();
    stacks
        .create(&PostParams::default(), &quickstart(&op.namespace))
        .await
        .unwrap();
    let (reason, message) = op.degraded().await;
    assert_eq!(reason, "ApplyRefused");
    assert!(
        message.contains("Service shop-") && message.contains("quota"),
        "{message}"
    );

    // The quota lifted: the next retry applies the rest, and the condition clears.
    quotas
        .delete("no-services", &DeleteParams::default())
        .await
        .unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> = op.api();
    eventually("the Services", || async {
        services.get_opt("shop-auth").await.ok().flatten()
    })
    .await;
    eventually("Degraded cleared", || async {
        op.condition("Degraded").await.filter(|(s, _)| s == "False")
    })
    .await;
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stack_whose_status_was_lost_keeps_its_deployments() {
    let op = operator().await;
    let stacks: Api<AppStack> = op.api();
    op.create_migrated().await;
    let jobs: Api<Job> = op.api();
    eventually("0.1.0 deployed and its Job gone", || async {
        let version = stacks.get("shop").await.ok()?.status?.version?;
        let gone = jobs.get_opt("shop-migrate-0-1-0").await.ok()?.is_none();
        (version == "0.1.0" && gone && op.deployment_image("shop-worker").await.is_some())
            .then_some(())
    })
    .await;
    // The status wiped (a restore from a backup keeps no status): the Deployments say what
    // runs, so this is no first install — nothing deleted, no migration run again.
    let wipe = serde_json::json!({"status": null});
    stacks
        .patch_status("shop", &PatchParams::default(), &Patch::Merge(&wipe))
        .await
        .unwrap();
    eventually("the status rebuilt with 0.1.0", || async {
        let version = stacks.get("shop").await.ok()?.status?.version?;
        (version == "0.1.0").then_some(())
    })
    .await;
    for name in ["shop-main", "shop-auth", "shop-worker"] {
        assert!(
            op.deployment_image(name).await.is_some(),
            "{name} deleted after the status was lost"
        );
    }
    assert!(
        jobs.get_opt("shop-migrate-0-1-0").await.unwrap().is_none(),
        "the migration ran again"
    );
    op.shut_down().await;
}

/// The quickstart with queue-depth scaling on the worker and main behind a Gateway.
fn queue_scaled_behind_a_gateway(namespace: &str) -> AppStack {
    let mut stack = quickstart(namespace);
    stack.spec.worker.autoscaling.queue = Some(Default::default());
    stack.spec.ingress = Some(appstack_operator::crd::IngressSpec {
        host: "api.shop.example".into(),
        class_name: None,
        annotations: Default::default(),
        tls_secret_name: None,
        gateway: Some(appstack_operator::crd::GatewayRef {
            name: "public".into(),
            namespace: None,
            section_name: None,
        }),
    });
    stack
}

impl Running {
    /// Merge-patches the `shop` stack's spec.
    async fn patch_spec(&self, spec: serde_json::Value) {
        let stacks: Api<AppStack> = self.api();
        stacks
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Waits until `api` has `name` (`present`) or not.
    async fn wait_for(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        present: bool,
    ) -> Option<DynamicObject> {
        let what = format!("{name} {}", if present { "present" } else { "gone" });
        eventually(&what, || async {
            match api.get_opt(name).await {
                Ok(found) if found.is_some() == present => Some(found),
                _ => None,
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keda_and_the_gateway_api_the_worker_scales_on_its_queue_and_main_gets_a_route() {
    // A server of its own: installing KEDA's and the Gateway API's kinds on the shared
    // plane would change what every other suite's operator discovers.
    let private = PrivateControlPlane::start(&[]).await.unwrap();
    let client = private.plane.client().unwrap();
    let mut stand_ins = operator_fixture::KEDA_CRDS.to_vec();
    stand_ins.push(operator_fixture::GRPC_ROUTE_CRD);
    operator_fixture::install_stand_in_crds(&client, &stand_ins)
        .await
        .unwrap();
    let op = operator_on(private.plane.clone()).await;
    let hpas = op.dynamic(
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    let scaled = op.dynamic("keda.sh/v1alpha1", "ScaledObject", "scaledobjects");
    let authentications = op.dynamic(
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        "triggerauthentications",
    );
    let routes = op.dynamic("gateway.networking.k8s.io/v1", "GRPCRoute", "grpcroutes");
    let ingresses = op.dynamic("networking.k8s.io/v1", "Ingress", "ingresses");

    // First without queue scaling: the worker has its CPU HPA.
    op.create_migrated().await;
    op.wait_for(&hpas, "shop-worker", true).await;

    // Queue scaling and a Gateway: the ScaledObject replaces the worker's HPA (deleted first,
    // as KEDA's webhook would refuse a second autoscaler), main gets a GRPCRoute.
    let wanted = queue_scaled_behind_a_gateway(&op.namespace);
    op.patch_spec(serde_json::json!({
        "worker": {"autoscaling": {"queue": wanted.spec.worker.autoscaling.queue}},
        "ingress": wanted.spec.ingress,
    }))
    .await;
    let object = op.wait_for(&scaled, "shop-worker", true).await.unwrap();
    op.wait_for(&hpas, "shop-worker", false).await;
    let spec = &object.data["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "shop-worker");
    assert_eq!(spec["minReplicaCount"], 2);
    assert_eq!(spec["triggers"][0]["type"], "postgresql");
    assert_eq!(
        spec["triggers"][0]["authenticationRef"]["name"],
        "shop-worker-queue"
    );
    let authentication = op
        .wait_for(&authentications, "shop-worker-queue", true)
        .await
        .unwrap();
    assert_eq!(
        authentication.data["spec"]["secretTargetRef"][0],
        serde_json::json!({"parameter": "connection", "name": "shop-db-app", "key": "uri"})
    );
    let route = op.wait_for(&routes, "shop-main", true).await.unwrap();
    assert_eq!(route.data["spec"]["parentRefs"][0]["name"], "public");
    assert!(ingresses.get_opt("shop-main").await.unwrap().is_none());
    // main and auth keep their CPU HPAs.
    op.wait_for(&hpas, "shop-main", true).await;
    op.wait_for(&hpas, "shop-auth", true).await;

    // Scale to zero.
    op.patch_spec(serde_json::json!({"worker": {"autoscaling": {"queue": {"scaleToZero": true}}}}))
        .await;
    eventually("minReplicaCount 0", || async {
        let object = scaled.get("shop-worker").await.ok()?;
        (object.data["spec"]["minReplicaCount"] == 0).then_some(())
    })
    .await;

    // Back to CPU and no Gateway: the HPA returns, KEDA's objects and the route go.
    op.patch_spec(serde_json::json!({
        "worker": {"autoscaling": {"queue": null}},
        "ingress": {"gateway": null},
    }))
    .await;
    op.wait_for(&hpas, "shop-worker", true).await;
    op.wait_for(&scaled, "shop-worker", false).await;
    op.wait_for(&authentications, "shop-worker-queue", false)
        .await;
    op.wait_for(&routes, "shop-main", false).await;
    op.wait_for(&ingresses, "shop-main", true).await;
    assert_eq!(op.metrics.failures(), 0);
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keda_or_the_gateway_api_the_fallbacks_are_applied_and_reported() {
    let op = operator().await;
    let stacks: Api<AppStack> = op.api();
    stacks
        .create(
            &PostParams::default(),
            &queue_scaled_behind_a_gateway(&op.namespace),
        )
        .await
        .unwrap();
    op.finish_job("shop-migrate-0-1-0", true).await;
    let hpas = op.dynamic(
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    let ingresses = op.dynamic("networking.k8s.io/v1", "Ingress", "ingresses");
    op.wait_for(&hpas, "shop-worker", true).await;
    let ingress = op.wait_for(&ingresses, "shop-main", true).await.unwrap();
    assert_eq!(ingress.data["spec"]["rules"][0]["host"], "api.shop.example");
    // The route's fallback is reported from the first reconcile, the worker's once the
    // migration let it render: the status is written after the children, so wait for both.
    eventually("Degraded naming both fallbacks", || async {
        let stack = stacks.get("shop").await.ok()?;
        stack.status?.conditions.into_iter().find(|c| {
            c.type_ == "Degraded"
                && c.status == "True"
                && c.reason == "UnservedApi"
                && c.message.contains("ScaledObject")
                && c.message.contains("GRPCRoute")
        })
    })
    .await;
    assert_eq!(op.metrics.failures(), 0);
    op.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_installed_while_the_operator_runs_is_found_and_used() {
    // A server of its own, as above; the operator rediscovers every second here.
    let private = PrivateControlPlane::start(&[]).await.unwrap();
    let tuning = Tuning {
        rediscover: Duration::from_secs(1),
        ..Tuning::default()
    };
    let op = operator_tuned(private.plane.clone(), tuning).await;
    let stacks: Api<AppStack> = op.api();
    let mut stack = quickstart(&op.namespace);
    stack.spec.worker.autoscaling.queue = Some(Default::default());
    stacks.create(&PostParams::default(), &stack).await.unwrap();
    op.finish_job("shop-migrate-0-1-0", true).await;
    let hpas = op.dynamic(
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    op.wait_for(&hpas, "shop-worker", true).await;
    let (reason, _) = op.degraded().await;
    assert_eq!(reason, "UnservedApi");

    // KEDA arrives: the controller restarts with its kinds and the worker moves to it.
    operator_fixture::install_stand_in_crds(&op.client, &operator_fixture::KEDA_CRDS)
        .await
        .unwrap();
    let scaled = op.dynamic("keda.sh/v1alpha1", "ScaledObject", "scaledobjects");
    op.wait_for(&scaled, "shop-worker", true).await;
    op.wait_for(&hpas, "shop-worker", false).await;
    eventually("Degraded cleared", || async {
        (op.condition("Degraded").await?.0 == "False").then_some(())
    })
    .await;
    assert_eq!(op.metrics.failures(), 0);
    op.shut_down().await;
}
