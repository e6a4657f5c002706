//! The `AppStack` custom resource's spec: what a user writes.

use std::collections::BTreeMap;

use appstack_config::StackConfig;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One running AppStack: the request API (`main`), `auth` and the `worker`, their
/// configuration, autoscaling, disruption budgets and network policies, and the database
/// migrations of each version.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "appstack.dev",
    version = "v1alpha1",
    kind = "AppStack",
    namespaced,
    status = "super::AppStackStatus",
    shortname = "astack",
    category = "appstack",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Main","type":"string","jsonPath":".status.components.main.summary"}"#,
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".status.components.auth.summary"}"#,
    printcolumn = r#"{"name":"Worker","type":"string","jsonPath":".status.components.worker.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.main) || !has(self.main.autoscaling) || !has(self.main.autoscaling.queue)",
     "message": "main.autoscaling.queue: queue-depth scaling is for the worker only"},
    {"rule": "!has(self.auth) || !has(self.auth.autoscaling) || !has(self.auth.autoscaling.queue)",
     "message": "auth.autoscaling.queue: queue-depth scaling is for the worker only"}
]))]
pub struct AppStackSpec {
    /// Image repository of every component, without a tag, e.g. `ghcr.io/acme/appstack`.
    #[schemars(length(min = 1, max = 255))]
    pub image: String,
    /// The version to run: the image tag, e.g. `1.4.2`. A new version runs its database
    /// migration Job first; the components roll only when it succeeded.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub version: String,
    /// Image pull policy of every container: `Always`, `IfNotPresent` or `Never`. Default:
    /// Kubernetes' own (`IfNotPresent` unless the tag is `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// The PostgreSQL database: a Secret key holding a `postgres://` URI, as
    /// CloudNativePG's app Secret or an External Secret for RDS provide.
    pub database: DatabaseRef,
    /// The request API.
    #[serde(default)]
    pub main: ComponentSpec,
    /// Users, tokens and signing keys.
    #[serde(default)]
    pub auth: ComponentSpec,
    /// Executes queued requests.
    #[serde(default)]
    pub worker: ComponentSpec,
    /// The services' configuration, exactly as an `appstack` configuration file holds it
    /// (external services and their resilience, routes, queue, worker, request limits, auth
    /// policy, pool sizes, shutdown timing). The operator sets the fields it owns itself:
    /// `server.grpcAddr`, `server.adminAddr`, `database.url` (from the Secret),
    /// `database.migrateOnStart`, `auth.keysDir`, `auth.generateKeyIfMissing`,
    /// `auth.endpoint`, `auth.jwksUri` when unset, and `log.filter` when
    /// `observability.logLevel` is set.
    #[serde(default)]
    pub config: StackConfig,
    /// Logs and traces.
    #[serde(default)]
    pub observability: ObservabilitySpec,
    /// NetworkPolicies around the stack.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// main's gRPC API from outside the cluster: an Ingress (e.g. the AWS Load Balancer
    /// Controller's ALB with gRPC backends), or a GRPCRoute on a Gateway where the Gateway
    /// API is served. Default: none (main is reachable inside the cluster only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Stop changing the stack's children (status stays current). Default `false`.
    #[serde(default)]
    pub paused: bool,
}

/// `Always`, `IfNotPresent` or `Never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull (images loaded by hand, as on kind).
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Where the database URI is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRef {
    /// Name of a Secret in the AppStack's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The key of that Secret holding the URI. Default `uri` (CloudNativePG's).
    #[serde(default = "default_uri_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_uri_key() -> String {
    "uri".into()
}

/// One component (main, auth or worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Pods when autoscaling is off. Default `2`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the container. Default: requests of 100m CPU
    /// and 128Mi memory, a 512Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// A HorizontalPodAutoscaler for the component. Default: on, 2 to 10 pods at 70% CPU.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// A PodDisruptionBudget for the component. Default: on, at most one pod unavailable.
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,
    /// Extra environment variables of the container (an `APPSTACK_*` variable overrides
    /// a configuration key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Annotations of the component's ServiceAccount, e.g. `eks.amazonaws.com/role-arn`
    /// for IRSA.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_account_annotations: BTreeMap<String, String>,
}

fn default_replicas() -> i32 {
    2
}

impl Default for ComponentSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
            autoscaling: AutoscalingSpec::default(),
            disruption_budget: DisruptionBudgetSpec::default(),
            env: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            service_account_annotations: BTreeMap::new(),
        }
    }
}

/// Horizontal autoscaling of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.enabled || self.minReplicas <= self.maxReplicas",
     "message": "minReplicas must not exceed maxReplicas"},
    {"rule": "!self.enabled || has(self.targetCpuUtilization) || has(self.targetMemoryUtilization)",
     "message": "an enabled autoscaler needs targetCpuUtilization or targetMemoryUtilization"}
]))]
pub struct AutoscalingSpec {
    /// Default `true`; off, the component runs `replicas` pods.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Fewest pods. Default `2`.
    #[serde(default = "default_min")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most pods; at least `minReplicas`. Default `10`.
    #[serde(default = "default_max")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use to hold, percent of the CPU request. Default `70`.
    #[serde(default = "default_cpu", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization: Option<i32>,
    /// Average memory use to hold, percent of the memory request. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_memory_utilization: Option<i32>,
    /// Scale-up and scale-down behaviour (the HPA's `behavior`). Default: Kubernetes'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
    /// The worker only: scale on the queue instead of CPU where KEDA (`keda.sh/v1alpha1`)
    /// is served: a ScaledObject replaces the HPA. Without KEDA the HPA stays and the
    /// stack reports it. Default: none (CPU/memory HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueScalingSpec>,
}

/// Queue-depth autoscaling of the worker (a KEDA ScaledObject with PostgreSQL triggers on
/// the stack's own database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueScalingSpec {
    /// Jobs ready or running per worker pod: workers = ceil(jobs / this). Default `20`.
    #[serde(default = "default_jobs_per_replica")]
    #[schemars(range(min = 1, max = 100_000))]
    pub target_jobs_per_replica: i32,
    /// Add workers while the oldest ready job has waited longer than this many seconds.
    /// Default `30`.
    #[serde(default = "default_oldest_ready_age")]
    #[schemars(range(min = 1, max = 86_400))]
    pub oldest_ready_age_seconds: i32,
    /// Scale to zero workers when no job is ready or running, and back to one when one is
    /// (the serverless behaviour of a Lambda consumer). Default `false`: `minReplicas` stay.
    #[serde(default)]
    pub scale_to_zero: bool,
    /// Seconds without work before scaling to zero. Default `300`.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86_400))]
    pub cooldown_seconds: i32,
    /// How often KEDA runs the queries, in seconds. Default `15`.
    #[serde(default = "default_polling_interval")]
    #[schemars(range(min = 1, max = 3_600))]
    pub polling_interval_seconds: i32,
}

fn default_jobs_per_replica() -> i32 {
    20
}
fn default_oldest_ready_age() -> i32 {
    30
}
fn default_cooldown() -> i32 {
    300
}
fn default_polling_interval() -> i32 {
    15
}

impl Default for QueueScalingSpec {
    fn default() -> Self {
        Self {
            target_jobs_per_replica: default_jobs_per_replica(),
            oldest_ready_age_seconds: default_oldest_ready_age(),
            scale_to_zero: false,
            cooldown_seconds: default_cooldown(),
            polling_interval_seconds: default_polling_interval(),
        }
    }
}

/// main's API from outside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The host name clients call, e.g. `api.shop.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        )
    )]
    pub host: String,
    /// The IngressClass, e.g. `alb`. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Annotations of the Ingress or GRPCRoute, e.g. the ALB's
    /// `alb.ingress.kubernetes.io/backend-protocol-version: GRPC`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// A TLS Secret for `host`, terminated by the Ingress. Default: none (an ALB takes its
    /// certificate from ACM by annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
    /// Attach a GRPCRoute to this Gateway instead of rendering an Ingress, where
    /// `gateway.networking.k8s.io` serves GRPCRoute. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

/// A Gateway a GRPCRoute attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its namespace. Default: the AppStack's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The listener, e.g. `https`. Default: every listener that allows the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_min() -> i32 {
    2
}
fn default_max() -> i32 {
    10
}
#[allow(clippy::unnecessary_wraps)] // serde's default for an optional field
fn default_cpu() -> Option<i32> {
    Some(70)
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_replicas: default_min(),
            max_replicas: default_max(),
            target_cpu_utilization: default_cpu(),
            target_memory_utilization: None,
            behavior: None,
            queue: None,
        }
    }
}

/// The disruption budget of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Pods a voluntary disruption (a node drain) may take down at once. Default `1`.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: i32,
}

fn default_max_unavailable() -> i32 {
    1
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilitySpec {
    /// OTLP endpoint traces are exported to (`OTEL_EXPORTER_OTLP_ENDPOINT` of every
    /// container), e.g. `http://otel-collector.observability:4317`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Log filter of every component, e.g. `info` or `info,appstack_main=debug`; replaces
    /// `config.log.filter`. Default: the configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// NetworkPolicies: auth reachable only from main and worker; every component's egress
/// limited to DNS, the database, auth and the declared external services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The database's port, for the egress rule. Default `5432`.
    #[serde(default = "default_db_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub database_port: i32,
    /// Namespaces (by label selector `kubernetes.io/metadata.name`) allowed to call main's
    /// gRPC port. Default: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub main_ingress_namespaces: Vec<String>,
}

fn default_db_port() -> i32 {
    5432
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            database_port: default_db_port(),
            main_ingress_namespaces: Vec::new(),
        }
    }
}
