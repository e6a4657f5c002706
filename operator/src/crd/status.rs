//! The `AppStack` status: what the operator observed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator last observed of the stack. Nothing here changes unless the stack
/// does (no timestamps per pass).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStackStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version the components run: its migration succeeded and the Deployments were
    /// given it (`Progressing` says whether every pod has rolled to it yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Available`, `Progressing` and `Degraded`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas per component.
    #[serde(default)]
    pub components: ComponentsStatus,
}

/// Replicas of each component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentsStatus {
    /// The request API.
    #[serde(default)]
    pub main: ComponentStatus,
    /// Auth.
    #[serde(default)]
    pub auth: ComponentStatus,
    /// The worker.
    #[serde(default)]
    pub worker: ComponentStatus,
}

/// Replicas of one component's Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods wanted.
    #[serde(default)]
    pub replicas: i32,
    /// Pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods running the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// `ready/wanted`, for `kubectl get`.
    #[serde(default)]
    pub summary: String,
}
