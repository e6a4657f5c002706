//! The worker's queue-depth autoscaler: a KEDA ScaledObject with two PostgreSQL triggers on
//! the stack's own database, in place of the CPU HPA, where KEDA is served.
//!
//! - **Jobs to do** (ready or running), `AverageValue`: workers = ceil(jobs / target), so
//!   the pool follows the backlog it has to drain, not the CPU a waiting worker does not use.
//! - **Oldest ready age**, `Value`: while the oldest ready job has waited longer than the
//!   target, the HPA grows the pool in proportion; the HPA takes the larger of the two.
//!
//! Both activate above zero: with `scaleToZero`, KEDA keeps no worker while nothing is ready
//! or running and starts one when a job is (a Lambda consumer's behaviour).

use std::collections::BTreeMap;

use super::external_kinds::{
    AuthenticationRef, ScaleTargetRef, ScaleTrigger, ScaledObject, ScaledObjectSpec,
    SecretTargetRef, TriggerAuthentication, TriggerAuthenticationSpec,
};
use super::names::{Component, Owner};
use crate::crd::{AppStackSpec, QueueScalingSpec};

/// Ready or running jobs: what the pool has to work through now (scheduled retries and
/// jobs waiting behind their ordering key are not yet anyone's work).
pub const JOBS_QUERY: &str = "SELECT count(*)::float8 FROM requests.jobs \
     WHERE state = 'running' OR (NOT blocked AND run_at <= now())";

/// Seconds the oldest ready job has waited (0 with none), as the worker's
/// `appstack_queue_oldest_ready_age_seconds` gauge reports it.
pub const OLDEST_READY_AGE_QUERY: &str = "SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 \
     FROM requests.jobs WHERE state <> 'running' AND NOT blocked AND run_at <= now()";

/// The worker's queue settings when it scales on the queue (autoscaling on, `queue` set).
pub(crate) fn queue_settings(spec: &AppStackSpec) -> Option<&QueueScalingSpec> {
    let scaling = &spec.worker.autoscaling;
    scaling.enabled.then_some(scaling.queue.as_ref()).flatten()
}

/// The name of the worker's TriggerAuthentication.
pub(crate) fn trigger_authentication_name(owner: &Owner) -> String {
    owner.child_name("worker-queue")
}

/// The ScaledObject and the TriggerAuthentication that hands it the database URL, when
/// the worker scales on the queue.
pub(crate) fn queue_autoscaler(
    spec: &AppStackSpec,
    owner: &Owner,
) -> Option<(ScaledObject, TriggerAuthentication)> {
    let queue = queue_settings(spec)?;
    let scaling = &spec.worker.autoscaling;
    let role = Component::Worker.role();
    let authentication = TriggerAuthentication {
        metadata: owner.meta(trigger_authentication_name(owner), role),
        spec: TriggerAuthenticationSpec {
            secret_target_ref: vec![SecretTargetRef {
                parameter: "connection".into(),
                name: spec.database.secret_name.clone(),
                key: spec.database.key.clone(),
            }],
        },
    };
    let trigger = |name: &str, query: &str, target: i32, metric_type: &str| ScaleTrigger {
        type_: "postgresql".into(),
        name: name.into(),
        metric_type: metric_type.into(),
        metadata: BTreeMap::from([
            ("query".to_owned(), query.to_owned()),
            ("targetQueryValue".to_owned(), target.to_string()),
            // Active (0 → 1 with scale to zero) as soon as the value is above zero.
            ("activationTargetQueryValue".to_owned(), "0".to_owned()),
        ]),
        authentication_ref: AuthenticationRef {
            name: authentication.metadata.name.clone().unwrap_or_default(),
        },
    };
    let advanced = scaling
        .behavior
        .as_ref()
        .and_then(|behavior| serde_json::to_value(behavior).ok())
        .map(|behavior| {
            serde_json::json!({ "horizontalPodAutoscalerConfig": { "behavior": behavior } })
        });
    let scaled = ScaledObject {
        metadata: owner.meta(owner.child_name(role), role),
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: owner.child_name(role),
            },
            polling_interval: queue.polling_interval_seconds,
            cooldown_period: queue.cooldown_seconds,
            min_replica_count: if queue.scale_to_zero {
                0
            } else {
                scaling.min_replicas
            },
            max_replica_count: scaling.max_replicas,
            advanced,
            triggers: vec![
                trigger(
                    "jobs",
                    JOBS_QUERY,
                    queue.target_jobs_per_replica,
                    "AverageValue",
                ),
                trigger(
                    "oldest-ready-age",
                    OLDEST_READY_AGE_QUERY,
                    queue.oldest_ready_age_seconds,
                    "Value",
                ),
            ],
        },
    };
    Some((scaled, authentication))
}
