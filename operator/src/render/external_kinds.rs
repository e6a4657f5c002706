//! Kinds of other projects' CRDs the operator renders (KEDA, the Gateway API): only the
//! fields it sets, as plain serde types. k8s-openapi has none of them, and the crates that
//! generate them track each project's releases rather than the subset every served version
//! accepts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// `keda.sh/v1alpha1` ScaledObject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaledObject {
    /// Name, labels, owner.
    pub metadata: ObjectMeta,
    /// What scales, between which bounds, on which triggers.
    pub spec: ScaledObjectSpec,
}

/// A ScaledObject's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    /// The Deployment scaled.
    pub scale_target_ref: ScaleTargetRef,
    /// Seconds between trigger queries.
    pub polling_interval: i32,
    /// Seconds after the last active trigger before scaling to `minReplicaCount` (when 0).
    pub cooldown_period: i32,
    /// Fewest pods; `0` scales to zero.
    pub min_replica_count: i32,
    /// Most pods.
    pub max_replica_count: i32,
    /// The HPA KEDA makes, e.g. its `behavior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<serde_json::Value>,
    /// What is measured.
    pub triggers: Vec<ScaleTrigger>,
}

/// The workload a ScaledObject scales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// The Deployment's name.
    pub name: String,
}

/// One KEDA trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    /// The scaler, e.g. `postgresql`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The trigger's name (the HPA's metric name).
    pub name: String,
    /// How the HPA reads the value: `AverageValue` (per pod) or `Value` (KEDA 2.7+).
    pub metric_type: String,
    /// The scaler's settings, all strings.
    pub metadata: BTreeMap<String, String>,
    /// Where the scaler's secrets come from.
    pub authentication_ref: AuthenticationRef,
}

/// A TriggerAuthentication in the ScaledObject's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationRef {
    /// Its name.
    pub name: String,
}

/// `keda.sh/v1alpha1` TriggerAuthentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerAuthentication {
    /// Name, labels, owner.
    pub metadata: ObjectMeta,
    /// The Secret keys handed to the scaler.
    pub spec: TriggerAuthenticationSpec,
}

/// A TriggerAuthentication's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Scaler parameters from Secret keys.
    pub secret_target_ref: Vec<SecretTargetRef>,
}

/// One scaler parameter from a Secret key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretTargetRef {
    /// The scaler's parameter, e.g. `connection`.
    pub parameter: String,
    /// The Secret.
    pub name: String,
    /// Its key.
    pub key: String,
}

/// `gateway.networking.k8s.io` GRPCRoute (`v1`, or `v1alpha2`: the same fields here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpcRoute {
    /// Name, labels, owner.
    pub metadata: ObjectMeta,
    /// Which Gateway, which host, which backend.
    pub spec: GrpcRouteSpec,
}

/// A GRPCRoute's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    /// The Gateway (listener) it attaches to.
    pub parent_refs: Vec<ParentRef>,
    /// Host names it answers.
    pub hostnames: Vec<String>,
    /// Its rules: here one, every method to main.
    pub rules: Vec<GrpcRouteRule>,
}

/// A Gateway a route attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// The Gateway's name.
    pub name: String,
    /// Its namespace, when not the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// One GRPCRoute rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// Where matching calls go.
    pub backend_refs: Vec<BackendRef>,
}

/// A Service port a route sends to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRef {
    /// The Service.
    pub name: String,
    /// Its port.
    pub port: i32,
}
