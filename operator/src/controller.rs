//! The controller: watches AppStacks and their children, applies what [`render`] wants
//! with server-side apply, deletes what it no longer wants, and writes the status.
//!
//! Writes happen only for a difference: a child is applied when it is missing, when what
//! the operator last applied to it (its `appstack.dev/applied` hash) differs from what it
//! wants now, or when a field it sets was changed by hand; the status is written only when
//! it changed. A steady stack costs reads alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};

use crate::crd::AppStack;
use crate::render::{
    self, AutoscalingApi, Child, ChildKind, Component, DisruptionApi, GrpcRouteApi,
    MANAGED_BY_LABEL, MANAGER, Rollout, STACK_LABEL, ServedApis, component_name,
    migration_job_name,
};
use crate::status::{self, Migration, Observed};

/// Annotation on every applied child: the hash of the manifest last applied.
pub const APPLIED_ANNOTATION: &str = "appstack.dev/applied";
/// How often an unchanged stack is looked at again.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a stack in motion (migrating, rolling out) is looked at again.
const PROGRESS_POLL: Duration = Duration::from_secs(5);

/// How the controller paces its reconciles (`appstack-operator run --concurrency
/// --debounce-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Stacks reconciled at once. Each holds an apiserver connection (its TLS and HTTP
    /// buffers stay pooled afterwards) and sends a burst of requests; unbounded, 100 stacks
    /// created at once meant 100 connections and a burst the apiserver queues anyway.
    pub concurrency: u16,
    /// Events for one stack within this window make one reconcile. A stack's own applies
    /// and the controller-manager's status updates of its Deployments raise a flurry of
    /// events; 100 stacks created at once took 21.7 reconciles each to converge without
    /// it, 10 with 200 ms. It delays a new stack's first pass by as much.
    pub debounce: Duration,
    /// How often discovery runs again. When what is served changed (KEDA or the Gateway API
    /// installed or removed, an HPA version turned off), the controller restarts with the
    /// new kinds: its watches are fixed when it starts.
    pub rediscover: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            concurrency: 8,
            debounce: Duration::from_millis(200),
            rediscover: Duration::from_secs(60),
        }
    }
}

/// What can go wrong in one reconcile; each has a metric label.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be written as JSON.
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The signing key could not be made.
    #[error("generating the signing key: {0}")]
    Key(String),
}

impl ReconcileError {
    /// Every value [`metric_label`](Self::metric_label) gives.
    pub const METRIC_LABELS: [&'static str; 4] =
        ["api_refused", "api_unreachable", "serialize", "signing_key"];

    /// A short, bounded label for metrics (one of [`METRIC_LABELS`](Self::METRIC_LABELS)).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api_refused",
            Self::Kube(_) => "api_unreachable",
            Self::Serialize(_) => "serialize",
            Self::Key(_) => "signing_key",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The client.
    pub client: Client,
    /// What the server serves (discovered at start).
    pub apis: ServedApis,
    /// Events on AppStacks.
    pub reporter: Reporter,
    /// Counts of reconciles and their outcomes.
    pub metrics: crate::metrics::Metrics,
}

/// Which HPA and PDB versions the server serves.
///
/// # Errors
///
/// When discovery itself fails (the server is unreachable).
pub async fn discover(client: &Client) -> Result<ServedApis, kube::Error> {
    let served = |group: Result<kube::discovery::ApiGroup, kube::Error>| -> Result<Vec<String>, kube::Error> {
        match group {
            Ok(group) => Ok(group.versions().map(str::to_owned).collect()),
            // A group the server does not serve at all.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
            Err(kube::Error::Discovery(_)) => Ok(Vec::new()),
            Err(other) => Err(other),
        }
    };
    let autoscaling = served(kube::discovery::group(client, "autoscaling").await)?;
    let policy = served(kube::discovery::group(client, "policy").await)?;
    let has = |versions: &[String], v: &str| versions.iter().any(|x| x == v);
    let keda = served_kinds(client, "keda.sh", "v1alpha1").await;
    let gateway_v1 = served_kinds(client, "gateway.networking.k8s.io", "v1").await;
    let gateway_v1alpha2 = served_kinds(client, "gateway.networking.k8s.io", "v1alpha2").await;
    let kind_in = |kinds: &[String], kind: &str| kinds.iter().any(|k| k == kind);
    Ok(ServedApis {
        keda: kind_in(&keda, "ScaledObject") && kind_in(&keda, "TriggerAuthentication"),
        grpc_route: if kind_in(&gateway_v1, "GRPCRoute") {
            Some(GrpcRouteApi::V1)
        } else if kind_in(&gateway_v1alpha2, "GRPCRoute") {
            Some(GrpcRouteApi::V1alpha2)
        } else {
            None
        },
        autoscaling: if has(&autoscaling, "v2") {
            Some(AutoscalingApi::V2)
        } else if has(&autoscaling, "v2beta2") {
            Some(AutoscalingApi::V2beta2)
        } else {
            None
        },
        disruption: if has(&policy, "v1") && supports_pdb_v1(client).await {
            Some(DisruptionApi::V1)
        } else if has(&policy, "v1beta1") {
            Some(DisruptionApi::V1beta1)
        } else {
            None
        },
    })
}

/// The kinds `group/version` serves; none when it is not served (a CRD not installed).
async fn served_kinds(client: &Client, group: &str, version: &str) -> Vec<String> {
    let gv = kube::core::GroupVersion::gv(group, version);
    match kube::discovery::pinned_group(client, &gv).await {
        Ok(group) => group
            .resources_by_stability()
            .into_iter()
            .map(|(resource, _)| resource.kind)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `policy/v1` exists on 1.20 too (for Evictions) without PodDisruptionBudgets.
async fn supports_pdb_v1(client: &Client) -> bool {
    let gv = kube::core::GroupVersion::gv("policy", "v1");
    match kube::discovery::pinned_group(client, &gv).await {
        Ok(group) => group.recommended_kind("PodDisruptionBudget").is_some(),
        Err(_) => false,
    }
}

fn api_resource(kind: ChildKind) -> ApiResource {
    let (group, version) = kind
        .api_version
        .split_once('/')
        .unwrap_or(("", kind.api_version));
    let plural = match kind.kind {
        "ServiceAccount" => "serviceaccounts",
        "ConfigMap" => "configmaps",
        "Deployment" => "deployments",
        "Service" => "services",
        "HorizontalPodAutoscaler" => "horizontalpodautoscalers",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        "NetworkPolicy" => "networkpolicies",
        "Job" => "jobs",
        "Ingress" => "ingresses",
        "GRPCRoute" => "grpcroutes",
        "ScaledObject" => "scaledobjects",
        "TriggerAuthentication" => "triggerauthentications",
        other => other,
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: kind.api_version.to_owned(),
        kind: kind.kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Whether every field of `desired` has the same value in `live` (what the server added,
/// defaults and status, is ignored).
fn contains(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    match (live, desired) {
        (serde_json::Value::Object(live), serde_json::Value::Object(desired)) => desired
            .iter()
            .all(|(key, value)| live.get(key).is_some_and(|l| contains(l, value))),
        (serde_json::Value::Array(live), serde_json::Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (live, desired) => live == desired,
    }
}

fn manifest_hash(manifest: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(manifest.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The children of `stack` as the server has them, by kind and name: one list per managed
/// kind, by the stack's labels, served from the apiserver's watch cache (`resourceVersion=0`)
/// rather than one read from etcd per child. A cache a moment behind costs at most a
/// redundant apply; the watch event of whatever changed brings another reconcile.
async fn live_children(
    client: &Client,
    stack: &AppStack,
    apis: &ServedApis,
) -> Result<BTreeMap<(&'static str, String), DynamicObject>, ReconcileError> {
    let namespace = stack.namespace().unwrap_or_default();
    let selector = format!(
        "{STACK_LABEL}={},{MANAGED_BY_LABEL}={MANAGER}",
        stack.name_any()
    );
    let mut live = BTreeMap::new();
    for kind in apis.managed_kinds() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &api_resource(kind));
        for object in api
            .list(&ListParams::default().labels(&selector).match_any())
            .await?
        {
            let mut object = object;
            // A list's items carry no apiVersion and kind; what is compared with the
            // manifest must.
            object.types.get_or_insert_with(|| kube::api::TypeMeta {
                api_version: kind.api_version.to_owned(),
                kind: kind.kind.to_owned(),
            });
            live.insert((kind.kind, object.name_any()), object);
        }
    }
    Ok(live)
}

/// Applies `child` unless `live` (the object as the server has it) already is what it
/// wants. Returns the object as applied when it wrote.
async fn apply(
    client: &Client,
    namespace: &str,
    apis: &ServedApis,
    child: &Child,
    live: Option<&DynamicObject>,
) -> Result<Option<DynamicObject>, ReconcileError> {
    let kind = child.kind(apis);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
    let mut manifest = child.manifest(apis)?;
    let hash = manifest_hash(&manifest);
    if let Some(meta) = manifest.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(APPLIED_ANNOTATION.into(), hash.clone().into());
        }
    }
    if let Some(live) = live {
        // A Job's template cannot change: an existing migration stays as it is (to retry a
        // failed one for the same version, delete it).
        if matches!(child, Child::Migration(_)) {
            return Ok(None);
        }
        let same_hash = live.annotations().get(APPLIED_ANNOTATION) == Some(&hash);
        if same_hash && contains(&serde_json::to_value(live)?, &manifest) {
            return Ok(None);
        }
    }
    let params = PatchParams::apply(MANAGER).force();
    let applied = api
        .patch(child.name(), &params, &Patch::Apply(&manifest))
        .await?;
    Ok(Some(applied))
}

/// Deletes the children of `stack` in `live` that are no longer wanted. Returns how many.
async fn delete_orphans(
    client: &Client,
    stack: &AppStack,
    apis: &ServedApis,
    live: &BTreeMap<(&'static str, String), DynamicObject>,
    wanted: &BTreeSet<(&'static str, String)>,
) -> Result<usize, ReconcileError> {
    let (Some(namespace), Some(uid)) = (stack.namespace(), stack.uid()) else {
        return Ok(0);
    };
    let mut deleted = 0;
    for kind in apis.managed_kinds() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &api_resource(kind));
        for ((_, name), object) in live.iter().filter(|((k, _), _)| *k == kind.kind) {
            let ours = object.owner_references().iter().any(|o| o.uid == uid);
            if !ours || wanted.contains(&(kind.kind, name.clone())) {
                continue;
            }
            // Background: the Job's pods, a Deployment's ReplicaSets go with them.
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => deleted += 1,
                // Already gone (the cache was behind a deletion).
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(deleted)
}

/// Deletes the worker's own HPA before its ScaledObject is applied: KEDA's admission
/// webhook refuses a ScaledObject for a Deployment another HPA already scales, so the usual
/// order (apply, then delete orphans) would never get there.
async fn retire_replaced_autoscaler(
    client: &Client,
    stack: &AppStack,
    apis: &ServedApis,
    desired: &render::Desired,
    live: &mut BTreeMap<(&'static str, String), DynamicObject>,
) -> Result<(), ReconcileError> {
    let (Some(namespace), Some(uid)) = (stack.namespace(), stack.uid()) else {
        return Ok(());
    };
    let replaced = desired
        .children
        .iter()
        .any(|child| matches!(child, Child::ScaledObject(_)));
    let kind = apis.autoscaler_kind();
    let key = (
        kind.kind,
        component_name(&stack.name_any(), Component::Worker),
    );
    let ours = live
        .get(&key)
        .is_some_and(|hpa| hpa.owner_references().iter().any(|o| o.uid == uid));
    if !replaced || !ours {
        return Ok(());
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &api_resource(kind));
    match api.delete(&key.1, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(other) => return Err(other.into()),
    }
    live.remove(&key);
    Ok(())
}

/// Creates auth's signing-key Secret when it does not exist; never overwrites it.
async fn ensure_signing_keys(client: &Client, stack: &AppStack) -> Result<(), ReconcileError> {
    let (Some(namespace), name) = (stack.namespace(), stack.name_any()) else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    if secrets
        .get_opt(&render::signing_keys_name(&name))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let pem = signing_key_pem()?;
    let kid = format!(
        "k{}",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    );
    let secret = render::signing_key_secret(&name, &namespace, stack.uid().as_deref(), &kid, &pem);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        // Another replica (or a person) made it first: theirs stays.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// A new Ed25519 key as PKCS#8 v1 PEM (what `appstack keygen` writes).
fn signing_key_pem() -> Result<String, ReconcileError> {
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, KeypairBytes, spki::der::pem::LineEnding};
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let v1 = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    v1.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| ReconcileError::Key(e.to_string()))
}

/// The migration Job of `version`, as the server has it.
async fn migration_state(
    client: &Client,
    stack: &AppStack,
    needed: bool,
) -> Result<Migration, ReconcileError> {
    if !needed {
        return Ok(Migration::NotNeeded);
    }
    let namespace = stack.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let name = migration_job_name(&stack.name_any(), &stack.spec.version);
    let Some(job) = jobs.get_opt(&name).await? else {
        return Ok(Migration::Running);
    };
    let status = job.status.unwrap_or_default();
    if status.succeeded.unwrap_or(0) > 0 {
        return Ok(Migration::Succeeded);
    }
    let failed = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    Ok(match failed {
        Some(condition) => Migration::Failed(format!(
            "job {name}: {}",
            condition
                .message
                .or(condition.reason)
                .unwrap_or_else(|| "failed".into())
        )),
        None => Migration::Running,
    })
}

/// The version the stack's Deployments run, from their [`render::VERSION_ANNOTATION`]
/// (the main one's first): what runs when the status does not say.
fn running_version(
    stack: &AppStack,
    live: &BTreeMap<(&'static str, String), DynamicObject>,
) -> Option<String> {
    Component::ALL.iter().find_map(|component| {
        live.get(&("Deployment", component_name(&stack.name_any(), *component)))?
            .annotations()
            .get(render::VERSION_ANNOTATION)
            .cloned()
    })
}

/// One pass over one AppStack.
async fn reconcile(stack: Arc<AppStack>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let timer = ctx.metrics.start();
    let result = reconcile_inner(&stack, &ctx).await;
    ctx.metrics.finish(
        timer,
        result.as_ref().err().map(ReconcileError::metric_label),
    );
    result
}

async fn reconcile_inner(cached: &AppStack, ctx: &Context) -> Result<Action, ReconcileError> {
    let client = &ctx.client;
    let namespace = cached.namespace().unwrap_or_default();
    // Read fresh, not from the watch cache: the cached copy can predate this operator's own
    // last status write (the version it deployed), and acting on that old status would take
    // a running stack for one still migrating.
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
    let Some(fresh) = stacks.get_opt(&cached.name_any()).await? else {
        // Deleted meanwhile: the garbage collector takes the children.
        return Ok(Action::await_change());
    };
    let stack = &fresh;
    let mut live = live_children(client, stack, &ctx.apis).await?;
    let previous = stack.status.clone();
    let running = previous
        .as_ref()
        .and_then(|s| s.version.clone())
        .or_else(|| running_version(stack, &live));
    let needs_migration = running.as_deref() != Some(stack.spec.version.as_str());
    let migration = migration_state(client, stack, needs_migration).await?;
    let rollout = Rollout {
        running: running.clone(),
        migrated: matches!(migration, Migration::Succeeded),
    };

    let mut problem = None;
    let mut refused = None;
    let mut deployed_version = running.clone();
    if !stack.spec.paused {
        match render::render(stack, &ctx.apis, &rollout) {
            Ok(desired) => {
                ensure_signing_keys(client, stack).await?;
                retire_replaced_autoscaler(client, stack, &ctx.apis, &desired, &mut live).await?;
                let mut wanted = BTreeSet::new();
                for child in &desired.children {
                    let key = (child.kind(&ctx.apis).kind, child.name().to_owned());
                    // A failed migration's Job is kept (its status is the evidence); an
                    // existing Job is never re-applied (see `apply`).
                    match apply(client, &namespace, &ctx.apis, child, live.get(&key)).await {
                        Ok(Some(applied)) => {
                            ctx.metrics.wrote();
                            live.insert(key.clone(), applied);
                        }
                        Ok(None) => {}
                        // Refused (a quota, an admission webhook, a full IP range): the
                        // status says which child and why, then the reconcile backs off.
                        Err(ReconcileError::Kube(kube::Error::Api(status))) => {
                            problem = Some((
                                "ApplyRefused",
                                format!(
                                    "the API server refused {} {}: {}",
                                    key.0, key.1, status.message
                                ),
                            ));
                            refused = Some(ReconcileError::Kube(kube::Error::Api(status)));
                            break;
                        }
                        Err(other) => return Err(other),
                    }
                    wanted.insert(key);
                }
                if matches!(migration, Migration::Failed(_) | Migration::Running) {
                    wanted.insert((
                        "Job",
                        migration_job_name(&stack.name_any(), &stack.spec.version),
                    ));
                }
                // After a refusal the rest waits: no deletes, the version stays.
                if refused.is_none() {
                    for _ in 0..delete_orphans(client, stack, &ctx.apis, &live, &wanted).await? {
                        ctx.metrics.wrote();
                    }
                    deployed_version = desired.deployed_version.clone();
                    if !desired.unserved.is_empty() {
                        problem = Some((
                            "UnservedApi",
                            format!(
                                "the cluster serves no known version of {}; the rest is applied",
                                desired.unserved.join(", ")
                            ),
                        ));
                    }
                }
            }
            Err(error) => problem = Some(("InvalidSpec", error.to_string())),
        }
    }

    // Each Deployment as listed, or as this reconcile applied it.
    let mut deployments = Vec::new();
    for component in Component::ALL {
        let key = ("Deployment", component_name(&stack.name_any(), component));
        deployments.push(match live.get(&key) {
            Some(object) => Some(serde_json::from_value::<Deployment>(serde_json::to_value(
                object,
            )?)?),
            None => None,
        });
    }
    let observed = Observed {
        generation: stack.metadata.generation,
        version: &stack.spec.version,
        deployed_version: deployed_version.as_deref(),
        migration: migration.clone(),
        deployments: [
            deployments[0].as_ref(),
            deployments[1].as_ref(),
            deployments[2].as_ref(),
        ],
        problem: problem.clone(),
        paused: stack.spec.paused,
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status::compute(previous.as_ref(), &observed, &now);
    if previous.as_ref() != Some(&status) {
        let patch = serde_json::json!({"status": status});
        stacks
            .patch_status(
                &stack.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        ctx.metrics.wrote();
        publish_transitions(ctx, stack, previous.as_ref(), &status).await;
    }
    if let Some(error) = refused {
        return Err(error);
    }
    let in_motion = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Progressing" && c.status == "True");
    Ok(Action::requeue(if in_motion {
        PROGRESS_POLL
    } else {
        RESYNC
    }))
}

/// An Event for each condition whose status or reason changed (Migrating → RollingOut is a
/// step worth seeing in `kubectl describe`, though Progressing stays True).
async fn publish_transitions(
    ctx: &Context,
    stack: &AppStack,
    previous: Option<&crate::crd::AppStackStatus>,
    now: &crate::crd::AppStackStatus,
) {
    let before: BTreeMap<&str, (&str, &str)> = previous
        .map(|p| {
            p.conditions
                .iter()
                .map(|c| (c.type_.as_str(), (c.status.as_str(), c.reason.as_str())))
                .collect()
        })
        .unwrap_or_default();
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = stack.object_ref(&());
    for condition in &now.conditions {
        let current = (condition.status.as_str(), condition.reason.as_str());
        if before.get(condition.type_.as_str()) == Some(&current) {
            continue;
        }
        let warning = (condition.type_ == "Degraded" && condition.status == "True")
            || (condition.type_ == "Available"
                && condition.status == "False"
                && previous.is_some());
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: condition.reason.clone(),
            note: Some(format!(
                "{} is {}: {}",
                condition.type_, condition.status, condition.message
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        // An event that cannot be recorded is not worth failing the reconcile for.
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "could not record an event");
        }
    }
}

fn error_policy(_stack: Arc<AppStack>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    // The controller's own backoff is per object; this is the floor.
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller over `namespace` (or all) until `shutdown` resolves, restarting it
/// whenever discovery finds that what the server serves changed.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    tuning: Tuning,
    metrics: crate::metrics::Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), kube::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown_task = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let result = async {
        let mut apis = discover(&client).await?;
        loop {
            tracing::info!(?apis, "served API versions");
            let (served_tx, served_rx) = tokio::sync::watch::channel(apis);
            let watcher = tokio::spawn(watch_discovery(
                client.clone(),
                tuning.rediscover,
                served_tx,
            ));
            let (mut stop, mut changed) = (stop_rx.clone(), served_rx.clone());
            let until = async move {
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => {}
                    _ = changed.changed() => {}
                }
            };
            run_once(&client, &namespace, tuning, &metrics, apis, until).await;
            watcher.abort();
            if *stop_rx.borrow() {
                return Ok(());
            }
            let now = *served_rx.borrow();
            tracing::info!(before = ?apis, after = ?now, "served APIs changed: restarting the controller");
            apis = now;
        }
    }
    .await;
    shutdown_task.abort();
    result
}

/// Publishes into `served` what discovery, run every `every`, finds once it differs from
/// what `served` holds, then stops. A failed discovery (the server briefly unreachable)
/// changes nothing.
async fn watch_discovery(
    client: Client,
    every: Duration,
    served: tokio::sync::watch::Sender<ServedApis>,
) {
    loop {
        tokio::time::sleep(every).await;
        match discover(&client).await {
            Ok(now) if now != *served.borrow() => {
                let _ = served.send(now);
                return;
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "rediscovery failed"),
        }
    }
}

/// One controller over the kinds `apis` serves, until `until` resolves.
async fn run_once(
    client: &Client,
    namespace: &Option<String>,
    tuning: Tuning,
    metrics: &crate::metrics::Metrics,
    apis: ServedApis,
    until: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = client.clone();
    let metrics = metrics.clone();
    let api = |c: &Client| -> Api<AppStack> {
        match namespace {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    };
    fn owned<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let children = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let context = Arc::new(Context {
        client: client.clone(),
        apis,
        reporter: Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
        metrics,
    });
    let mut controller = Controller::new(api(&client), watcher::Config::default()).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(tuning.concurrency)
            .debounce(tuning.debounce),
    );
    // HPAs and PDBs in whichever version the server serves (dynamic: 1.20's v2beta2 and
    // v1beta1 have no typed counterpart in k8s-openapi), and the other projects' kinds.
    for kind in apis.managed_kinds() {
        if matches!(
            kind.kind,
            "HorizontalPodAutoscaler"
                | "PodDisruptionBudget"
                | "Ingress"
                | "GRPCRoute"
                | "ScaledObject"
                | "TriggerAuthentication"
        ) {
            let resource = api_resource(kind);
            let dynamic: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            controller = controller.owns_with(dynamic, resource, children.clone());
        }
    }
    controller
        .owns(owned::<Deployment>(&client, namespace), children.clone())
        .owns(owned::<Job>(&client, namespace), children.clone())
        .owns(owned::<ConfigMap>(&client, namespace), children.clone())
        .owns(owned::<Service>(&client, namespace), children.clone())
        .owns(
            owned::<ServiceAccount>(&client, namespace),
            children.clone(),
        )
        .owns(owned::<NetworkPolicy>(&client, namespace), children.clone())
        .graceful_shutdown_on(until)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::contains;

    #[test]
    fn a_live_object_contains_what_was_applied_plus_what_the_server_added() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "x": 1}, "status": {}});
        assert!(contains(&live, &desired));
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 2, "ports": []}}),
            &desired
        ));
        assert!(!contains(&json!({}), &desired));
    }
}
