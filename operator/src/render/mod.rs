//! `AppStack` → the children it stands for. Pure: what the cluster serves and how far the
//! rollout has come are inputs, so every case is tested without a cluster, and the same
//! function backs `appstack-operator render` (GitOps review, `kubectl diff`).

mod config_file;
pub mod external_kinds;
mod ingress;
mod migration;
mod names;
mod network;
mod pod;
mod queue_scaling;
mod workload;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;

pub use config_file::{ADMIN_PORT, CONFIG_FILE, GRPC_PORT, KEYS_DIR};
pub use migration::{MIGRATION_DEADLINE_SECONDS, migration_job_name, signing_key_secret};
pub use names::{
    COMPONENT_LABEL, CONFIG_HASH_ANNOTATION, Component, MANAGED_BY_LABEL, MANAGER, STACK_LABEL,
    component_name, signing_keys_name,
};
pub use pod::RUN_AS;
pub use queue_scaling::{JOBS_QUERY, OLDEST_READY_AGE_QUERY};
pub use workload::VERSION_ANNOTATION;

use crate::crd::AppStack;
use external_kinds::{GrpcRoute, ScaledObject, TriggerAuthentication};
use names::Owner;

/// Why an `AppStack` cannot be rendered; each becomes a condition, never a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The resource has no name or namespace (not from the API server, nor a file that says).
    #[error("the AppStack needs metadata.name and metadata.namespace")]
    Unnamed,
    /// Broken rules of the spec, each naming its key.
    #[error("invalid spec: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
    /// The configuration could not be written as TOML.
    #[error("the configuration could not be written: {0}")]
    Serialize(String),
}

/// HPA versions an API server may serve, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoscalingApi {
    /// `autoscaling/v2` (Kubernetes 1.23+).
    V2,
    /// `autoscaling/v2beta2` (1.12–1.25): the same fields.
    V2beta2,
}

/// PDB versions an API server may serve, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisruptionApi {
    /// `policy/v1` (1.21+).
    V1,
    /// `policy/v1beta1` (to 1.24): the same fields for what we set.
    V1beta1,
}

/// GRPCRoute versions a Gateway API install may serve, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcRouteApi {
    /// `gateway.networking.k8s.io/v1` (Gateway API 1.1+).
    V1,
    /// `gateway.networking.k8s.io/v1alpha2`: the same fields for what we set.
    V1alpha2,
}

/// What the cluster serves, from discovery. `None`: in no version we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedApis {
    /// HorizontalPodAutoscalers.
    pub autoscaling: Option<AutoscalingApi>,
    /// PodDisruptionBudgets.
    pub disruption: Option<DisruptionApi>,
    /// KEDA's ScaledObject and TriggerAuthentication (`keda.sh/v1alpha1`).
    pub keda: bool,
    /// The Gateway API's GRPCRoute.
    pub grpc_route: Option<GrpcRouteApi>,
}

impl ServedApis {
    /// A current cluster: `autoscaling/v2`, `policy/v1`; neither KEDA nor the Gateway API.
    pub const CURRENT: Self = Self {
        autoscaling: Some(AutoscalingApi::V2),
        disruption: Some(DisruptionApi::V1),
        keda: false,
        grpc_route: None,
    };
}

/// How far the rollout of `spec.version` has come, as the controller observed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The version the Deployments run now (`status.version`); `None` before the first.
    pub running: Option<String>,
    /// Whether the migration Job of `spec.version` succeeded.
    pub migrated: bool,
}

/// One desired child.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    /// A component's identity (IRSA / Pod Identity annotations).
    ServiceAccount(ServiceAccount),
    /// The services' configuration file.
    ConfigMap(ConfigMap),
    /// A component.
    Deployment(Deployment),
    /// main's or auth's Service.
    Service(Service),
    /// A component's autoscaler.
    Autoscaler(HorizontalPodAutoscaler),
    /// A component's disruption budget.
    DisruptionBudget(PodDisruptionBudget),
    /// Ingress of a component, or the stack's egress.
    NetworkPolicy(NetworkPolicy),
    /// The migration of a version.
    Migration(Job),
    /// main's Ingress.
    Ingress(Ingress),
    /// main's GRPCRoute on a Gateway.
    GrpcRoute(GrpcRoute),
    /// The worker's queue-depth autoscaler (KEDA).
    ScaledObject(ScaledObject),
    /// The database URL handed to the ScaledObject's triggers.
    TriggerAuthentication(TriggerAuthentication),
}

/// A kind of child, with the API version it is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildKind {
    /// `group/version` (or `v1`).
    pub api_version: &'static str,
    /// The kind.
    pub kind: &'static str,
}

impl ChildKind {
    const fn of(api_version: &'static str, kind: &'static str) -> Self {
        Self { api_version, kind }
    }
    /// `v1` ServiceAccount.
    pub const SERVICE_ACCOUNT: Self = Self::of("v1", "ServiceAccount");
    /// `v1` ConfigMap.
    pub const CONFIG_MAP: Self = Self::of("v1", "ConfigMap");
    /// `apps/v1` Deployment.
    pub const DEPLOYMENT: Self = Self::of("apps/v1", "Deployment");
    /// `v1` Service.
    pub const SERVICE: Self = Self::of("v1", "Service");
    /// `networking.k8s.io/v1` NetworkPolicy.
    pub const NETWORK_POLICY: Self = Self::of("networking.k8s.io/v1", "NetworkPolicy");
    /// `batch/v1` Job.
    pub const JOB: Self = Self::of("batch/v1", "Job");
    /// `networking.k8s.io/v1` Ingress.
    pub const INGRESS: Self = Self::of("networking.k8s.io/v1", "Ingress");
    /// KEDA's ScaledObject.
    pub const SCALED_OBJECT: Self = Self::of("keda.sh/v1alpha1", "ScaledObject");
    /// KEDA's TriggerAuthentication.
    pub const TRIGGER_AUTHENTICATION: Self = Self::of("keda.sh/v1alpha1", "TriggerAuthentication");
}

impl ServedApis {
    /// The HPA kind in the version served (`autoscaling/v2` when none is).
    pub fn autoscaler_kind(&self) -> ChildKind {
        match self.autoscaling {
            Some(AutoscalingApi::V2beta2) => {
                ChildKind::of("autoscaling/v2beta2", "HorizontalPodAutoscaler")
            }
            _ => ChildKind::of("autoscaling/v2", "HorizontalPodAutoscaler"),
        }
    }

    /// The PDB kind in the version served (`policy/v1` when none is).
    pub fn disruption_kind(&self) -> ChildKind {
        match self.disruption {
            Some(DisruptionApi::V1beta1) => ChildKind::of("policy/v1beta1", "PodDisruptionBudget"),
            _ => ChildKind::of("policy/v1", "PodDisruptionBudget"),
        }
    }

    /// The GRPCRoute kind in the version served (`v1` when none is).
    pub fn grpc_route_kind(&self) -> ChildKind {
        match self.grpc_route {
            Some(GrpcRouteApi::V1alpha2) => {
                ChildKind::of("gateway.networking.k8s.io/v1alpha2", "GRPCRoute")
            }
            _ => ChildKind::of("gateway.networking.k8s.io/v1", "GRPCRoute"),
        }
    }

    /// Every kind the operator may have created, in the versions served; kinds served in
    /// no version are left out (there is nothing of them to list or delete).
    pub fn managed_kinds(&self) -> Vec<ChildKind> {
        let mut kinds = vec![
            ChildKind::SERVICE_ACCOUNT,
            ChildKind::CONFIG_MAP,
            ChildKind::DEPLOYMENT,
            ChildKind::SERVICE,
            ChildKind::NETWORK_POLICY,
            ChildKind::JOB,
            ChildKind::INGRESS,
        ];
        if self.autoscaling.is_some() {
            kinds.push(self.autoscaler_kind());
        }
        if self.disruption.is_some() {
            kinds.push(self.disruption_kind());
        }
        if self.keda {
            kinds.extend([ChildKind::SCALED_OBJECT, ChildKind::TRIGGER_AUTHENTICATION]);
        }
        if self.grpc_route.is_some() {
            kinds.push(self.grpc_route_kind());
        }
        kinds
    }
}

impl Child {
    /// Its name.
    pub fn name(&self) -> &str {
        let meta = match self {
            Self::ServiceAccount(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::Deployment(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::Autoscaler(o) => &o.metadata,
            Self::DisruptionBudget(o) => &o.metadata,
            Self::NetworkPolicy(o) => &o.metadata,
            Self::Migration(o) => &o.metadata,
            Self::Ingress(o) => &o.metadata,
            Self::GrpcRoute(o) => &o.metadata,
            Self::ScaledObject(o) => &o.metadata,
            Self::TriggerAuthentication(o) => &o.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }

    /// Its kind, in the version `apis` says the server serves.
    pub fn kind(&self, apis: &ServedApis) -> ChildKind {
        match self {
            Self::ServiceAccount(_) => ChildKind::SERVICE_ACCOUNT,
            Self::ConfigMap(_) => ChildKind::CONFIG_MAP,
            Self::Deployment(_) => ChildKind::DEPLOYMENT,
            Self::Service(_) => ChildKind::SERVICE,
            Self::Autoscaler(_) => apis.autoscaler_kind(),
            Self::DisruptionBudget(_) => apis.disruption_kind(),
            Self::NetworkPolicy(_) => ChildKind::NETWORK_POLICY,
            Self::Migration(_) => ChildKind::JOB,
            Self::Ingress(_) => ChildKind::INGRESS,
            Self::GrpcRoute(_) => apis.grpc_route_kind(),
            Self::ScaledObject(_) => ChildKind::SCALED_OBJECT,
            Self::TriggerAuthentication(_) => ChildKind::TRIGGER_AUTHENTICATION,
        }
    }

    /// The manifest to apply: the object as JSON with `apiVersion` and `kind` as `apis`
    /// serves them (the v2beta2 HPA and v1beta1 PDB take the same fields we set).
    ///
    /// # Errors
    ///
    /// Never in practice: the objects are plain data.
    pub fn manifest(&self, apis: &ServedApis) -> Result<serde_json::Value, serde_json::Error> {
        let mut value = match self {
            Self::ServiceAccount(o) => to_value(o)?,
            Self::ConfigMap(o) => to_value(o)?,
            Self::Deployment(o) => to_value(o)?,
            Self::Service(o) => to_value(o)?,
            Self::Autoscaler(o) => to_value(o)?,
            Self::DisruptionBudget(o) => to_value(o)?,
            Self::NetworkPolicy(o) => to_value(o)?,
            Self::Migration(o) => to_value(o)?,
            Self::Ingress(o) => to_value(o)?,
            Self::GrpcRoute(o) => to_value(o)?,
            Self::ScaledObject(o) => to_value(o)?,
            Self::TriggerAuthentication(o) => to_value(o)?,
        };
        let kind = self.kind(apis);
        if let Some(object) = value.as_object_mut() {
            object.insert("apiVersion".into(), kind.api_version.into());
            object.insert("kind".into(), kind.kind.into());
        }
        Ok(value)
    }
}

fn to_value<T: Serialize>(object: &T) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(object)
}

/// The children of one AppStack.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Everything to apply, in apply order (identities and config before what uses them,
    /// the migration before the Deployments).
    pub children: Vec<Child>,
    /// The version the Deployments are rendered with; `None` while the first version's
    /// migration has not succeeded (no Deployment yet).
    pub deployed_version: Option<String>,
    /// The configuration file's hash (the pods' annotation).
    pub config_hash: String,
    /// Kinds wanted but served by the cluster in no version we know: reported in a
    /// condition; the rest is applied.
    pub unserved: Vec<&'static str>,
}

/// The configuration the services of `stack` read (what its ConfigMap holds), the
/// database URL aside, which they take from the Secret.
///
/// # Errors
///
/// [`RenderError::Unnamed`] for a resource without a name or namespace.
pub fn services_config(stack: &AppStack) -> Result<appstack_config::StackConfig, RenderError> {
    Ok(config_file::stack_config(&stack.spec, &owner_of(stack)?))
}

/// What every child needs of `stack`: its name, namespace, uid and version.
fn owner_of(stack: &AppStack) -> Result<Owner, RenderError> {
    let (Some(name), Some(namespace)) = (&stack.metadata.name, &stack.metadata.namespace) else {
        return Err(RenderError::Unnamed);
    };
    Ok(Owner {
        name: name.clone(),
        namespace: namespace.clone(),
        uid: stack.metadata.uid.clone(),
        version: stack.spec.version.clone(),
    })
}

/// Renders `stack` for a cluster serving `apis`, at `rollout`.
///
/// # Errors
///
/// [`RenderError`]: an unnamed resource or a broken rule of the spec.
pub fn render(
    stack: &AppStack,
    apis: &ServedApis,
    rollout: &Rollout,
) -> Result<Desired, RenderError> {
    let owner = owner_of(stack)?;
    let spec = &stack.spec;
    check_spec(spec)?;
    let file = config_file::config_file(spec, &owner)?;

    let mut children = Vec::new();
    for component in Component::ALL {
        children.push(Child::ServiceAccount(workload::service_account(
            &owner,
            component.role(),
            Some(workload::settings(spec, component)),
        )));
    }
    children.push(Child::ConfigMap(config_file::config_map(&owner, &file)));
    for component in [Component::Main, Component::Auth] {
        children.push(Child::Service(workload::service(&owner, component)));
    }
    children.extend(
        network::network_policies(spec, &owner)
            .into_iter()
            .map(Child::NetworkPolicy),
    );
    let mut unserved = Vec::new();
    if let Some(ingress) = &spec.ingress {
        match ingress::grpc_route(ingress, &owner) {
            Some(route) if apis.grpc_route.is_some() => children.push(Child::GrpcRoute(route)),
            route => {
                if route.is_some() {
                    unserved.push(GRPC_ROUTE_FALLBACK);
                }
                children.push(Child::Ingress(ingress::ingress(ingress, &owner)));
            }
        }
    }

    // A new version migrates first; the Deployments keep the running version until then.
    let needs_migration = rollout.running.as_deref() != Some(spec.version.as_str());
    if needs_migration {
        children.push(Child::Migration(migration::migration_job(
            spec,
            &owner,
            &spec.version,
        )));
    }
    let deployed_version = if !needs_migration || rollout.migrated {
        Some(spec.version.clone())
    } else {
        rollout.running.clone()
    };

    // Autoscalers and budgets come with their Deployments: before the first migration
    // succeeded there is nothing to scale (an HPA would report FailedGetScale) or protect.
    let components = if let Some(version) = &deployed_version {
        for component in Component::ALL {
            children.push(Child::Deployment(workload::deployment(
                spec, &owner, component, version, &file.hash,
            )));
        }
        Component::ALL.as_slice()
    } else {
        &[]
    };
    for &component in components {
        if component == Component::Worker
            && apis.keda
            && let Some((scaled, authentication)) = queue_scaling::queue_autoscaler(spec, &owner)
        {
            children.push(Child::TriggerAuthentication(authentication));
            children.push(Child::ScaledObject(scaled));
        } else if let Some(hpa) = workload::autoscaler(spec, &owner, component) {
            if component == Component::Worker && queue_scaling::queue_settings(spec).is_some() {
                unserved.push(SCALED_OBJECT_FALLBACK);
            }
            if apis.autoscaling.is_some() {
                children.push(Child::Autoscaler(hpa));
            } else if !unserved.contains(&"HorizontalPodAutoscaler") {
                unserved.push("HorizontalPodAutoscaler");
            }
        }
        if let Some(pdb) = workload::disruption_budget(spec, &owner, component) {
            if apis.disruption.is_some() {
                children.push(Child::DisruptionBudget(pdb));
            } else if !unserved.contains(&"PodDisruptionBudget") {
                unserved.push("PodDisruptionBudget");
            }
        }
    }
    Ok(Desired {
        children,
        deployed_version,
        config_hash: file.hash,
        unserved,
    })
}

/// How the condition names a GRPCRoute asked for where the Gateway API is not served.
const GRPC_ROUTE_FALLBACK: &str =
    "GRPCRoute (gateway.networking.k8s.io; main has an Ingress instead)";
/// How the condition names queue scaling asked for where KEDA is not served.
const SCALED_OBJECT_FALLBACK: &str =
    "ScaledObject (keda.sh/v1alpha1; the worker's HPA scales on CPU instead)";

/// The spec's own rules beyond the configuration (which `config_file` checks): the same
/// rules as the CRD's CEL, for servers that do not enforce CEL.
fn check_spec(spec: &crate::crd::AppStackSpec) -> Result<(), RenderError> {
    let mut problems = Vec::new();
    for component in Component::ALL {
        let settings = workload::settings(spec, component);
        let scaling = &settings.autoscaling;
        let at = component.role();
        if scaling.enabled {
            if scaling.min_replicas > scaling.max_replicas {
                problems.push(format!(
                    "{at}.autoscaling: minReplicas ({}) must not exceed maxReplicas ({})",
                    scaling.min_replicas, scaling.max_replicas
                ));
            }
            if scaling.target_cpu_utilization.is_none()
                && scaling.target_memory_utilization.is_none()
            {
                problems.push(format!(
                    "{at}.autoscaling: an enabled autoscaler needs targetCpuUtilization or targetMemoryUtilization"
                ));
            }
        }
        if component != Component::Worker && settings.autoscaling.queue.is_some() {
            problems.push(format!(
                "{at}.autoscaling.queue: queue-depth scaling is for the worker only"
            ));
        }
        if settings.replicas < 0 {
            problems.push(format!("{at}.replicas must not be negative"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RenderError::InvalidConfig(problems))
    }
}

/// The children as a YAML stream, as `appstack-operator render` prints them.
///
/// # Errors
///
/// Never in practice: the objects are plain data.
pub fn to_yaml(desired: &Desired, apis: &ServedApis) -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for child in &desired.children {
        let manifest = child
            .manifest(apis)
            .map_err(<serde_norway::Error as serde::ser::Error>::custom)?;
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&manifest)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
