//! Per component: ServiceAccount, Deployment, Service, HPA and PDB.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    PodTemplateSpec, Service, ServiceAccount, ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_file::{ADMIN_PORT, GRPC_PORT};
use super::names::{CONFIG_HASH_ANNOTATION, Component, Owner};
use super::pod::{PodInput, pod_spec};
use crate::crd::{AppStackSpec, ComponentSpec};

/// The settings of `component` in `spec`.
pub(crate) fn settings(spec: &AppStackSpec, component: Component) -> &ComponentSpec {
    match component {
        Component::Main => &spec.main,
        Component::Auth => &spec.auth,
        Component::Worker => &spec.worker,
    }
}

pub(crate) fn service_account(
    owner: &Owner,
    role: &str,
    settings: Option<&ComponentSpec>,
) -> ServiceAccount {
    let mut metadata = owner.meta(owner.child_name(role), role);
    if let Some(settings) = settings.filter(|s| !s.service_account_annotations.is_empty()) {
        metadata.annotations = Some(settings.service_account_annotations.clone());
    }
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// On each Deployment: the version it runs, exactly (the version label may be shortened).
/// The controller reads the running version from it when the AppStack's status lacks one
/// (a status lost in a restore, or read before the operator's own write reached it), so a
/// running stack is never taken for a first install.
pub const VERSION_ANNOTATION: &str = "appstack.dev/version";

/// The Deployment of `component` running `version`.
pub(crate) fn deployment(
    spec: &AppStackSpec,
    owner: &Owner,
    component: Component,
    version: &str,
    config_hash: &str,
) -> Deployment {
    let role = component.role();
    let settings = settings(spec, component);
    let selector = owner.selector(role);
    let config = &spec.config.server;
    // The process reports not-ready for `shutdownDelay`, then drains for up to
    // `shutdownGrace`; the kubelet must wait for both, and a little more.
    let grace = config.shutdown_delay.as_secs() + config.shutdown_grace.as_secs() + 5;
    let mut pod = pod_spec(&PodInput {
        spec,
        owner,
        role,
        version,
        component: Some(settings),
        signing_keys: component == Component::Auth,
        serves: true,
        grace_seconds: Some(i64::try_from(grace).unwrap_or(i64::MAX)),
    });
    pod.topology_spread_constraints = Some(
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
            .into_iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.into(),
                // Spread where the cluster can; never leave pods pending for it.
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            })
            .collect(),
    );
    let mut pod_labels = owner.labels(role);
    pod_labels.insert(
        "app.kubernetes.io/version".into(),
        super::names::label_value(version),
    );
    let mut metadata = owner.meta(owner.child_name(role), role);
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(VERSION_ANNOTATION.into(), version.into());
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // With an HPA the replica count is the HPA's: leaving it out of the applied
            // fields keeps the operator from fighting it.
            replicas: (!settings.autoscaling.enabled).then_some(settings.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Service of main or auth: gRPC, and the admin port (auth's JWKS over HTTP, metrics).
pub(crate) fn service(owner: &Owner, component: Component) -> Service {
    let role = component.role();
    let port = |name: &str, port: u16, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(protocol.into()),
        ..ServicePort::default()
    };
    Service {
        metadata: owner.meta(owner.child_name(role), role),
        spec: Some(ServiceSpec {
            selector: Some(owner.selector(role)),
            ports: Some(vec![
                port("grpc", GRPC_PORT, "grpc"),
                port("admin", ADMIN_PORT, "http"),
            ]),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The HPA of `component`, when its autoscaling is on.
pub(crate) fn autoscaler(
    spec: &AppStackSpec,
    owner: &Owner,
    component: Component,
) -> Option<HorizontalPodAutoscaler> {
    let role = component.role();
    let scaling = &settings(spec, component).autoscaling;
    if !scaling.enabled {
        return None;
    }
    let resource = |name: &str, utilization: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: name.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(utilization),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics = Vec::new();
    if let Some(cpu) = scaling.target_cpu_utilization {
        metrics.push(resource("cpu", cpu));
    }
    if let Some(memory) = scaling.target_memory_utilization {
        metrics.push(resource("memory", memory));
    }
    Some(HorizontalPodAutoscaler {
        metadata: owner.meta(owner.child_name(role), role),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: owner.child_name(role),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(metrics),
            behavior: scaling.behavior.clone(),
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

/// The PDB of `component`, when its budget is on.
pub(crate) fn disruption_budget(
    spec: &AppStackSpec,
    owner: &Owner,
    component: Component,
) -> Option<PodDisruptionBudget> {
    let role = component.role();
    let budget = &settings(spec, component).disruption_budget;
    if !budget.enabled {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: owner.meta(owner.child_name(role), role),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(budget.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(owner.selector(role)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
