//! The AppStack's status from what the controller observed (pure): conditions that change
//! only when the facts do, so an unchanged stack is never written.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{AppStackStatus, ComponentStatus};
use crate::render::Component;

/// The state of the current version's migration Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// No migration is wanted (the version already runs).
    NotNeeded,
    /// The Job exists and has not finished.
    Running,
    /// It succeeded.
    Succeeded,
    /// It failed; the message says how.
    Failed(String),
}

/// What one reconcile observed.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// `metadata.generation` of the AppStack.
    pub generation: Option<i64>,
    /// The spec's version.
    pub version: &'a str,
    /// The version the Deployments run after this reconcile (see `Desired`).
    pub deployed_version: Option<&'a str>,
    /// The migration of the spec's version.
    pub migration: Migration,
    /// Each component's Deployment as the server has it, in `Component::ALL` order.
    pub deployments: [Option<&'a Deployment>; 3],
    /// A reason the spec could not be applied (invalid spec, unserved API), if any.
    pub problem: Option<(&'static str, String)>,
    /// `spec.paused`.
    pub paused: bool,
}

/// Replicas of one Deployment.
fn component(deployment: Option<&Deployment>) -> ComponentStatus {
    let status = deployment.and_then(|d| d.status.as_ref());
    let wanted = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    ComponentStatus {
        replicas: wanted,
        ready_replicas: ready,
        updated_replicas: status.and_then(|s| s.updated_replicas).unwrap_or(0),
        summary: format!("{ready}/{wanted}"),
    }
}

/// Whether `deployment` finished rolling out its current template and has every pod ready.
fn rolled_out(deployment: Option<&Deployment>) -> bool {
    let Some(deployment) = deployment else {
        return false;
    };
    let (Some(status), Some(generation)) = (&deployment.status, deployment.metadata.generation)
    else {
        return false;
    };
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.ready_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) <= wanted
}

/// The status for `observed`, keeping each condition's `lastTransitionTime` from `previous`
/// while its status does not change; `now` stamps the ones that do.
pub fn compute(
    previous: Option<&AppStackStatus>,
    observed: &Observed<'_>,
    now: &Time,
) -> AppStackStatus {
    let [main, auth, worker] = observed.deployments;
    let components = crate::crd::ComponentsStatus {
        main: component(main),
        auth: component(auth),
        worker: component(worker),
    };
    let all_rolled = observed.deployments.iter().all(|d| rolled_out(*d));
    let deployed_is_current = observed.deployed_version == Some(observed.version);
    let available = Component::ALL
        .iter()
        .zip(observed.deployments)
        .all(|(_, d)| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.available_replicas)
                .unwrap_or(0)
                > 0
        });
    // The version the Deployments run: its migration succeeded and they were given it
    // (whether every pod has rolled to it yet is `Progressing`).
    let version = observed
        .deployed_version
        .map(str::to_owned)
        .or_else(|| previous.and_then(|p| p.version.clone()));

    let (progressing, progressing_reason, progressing_message) = if observed.paused {
        (
            false,
            "Paused",
            "spec.paused is set: children are not changed".to_owned(),
        )
    } else {
        match &observed.migration {
            Migration::Running => (
                true,
                "Migrating",
                format!("running the migration of {}", observed.version),
            ),
            Migration::Failed(_) => (
                false,
                "MigrationFailed",
                format!(
                    "the migration of {} failed; the running version stays",
                    observed.version
                ),
            ),
            _ if !all_rolled || !deployed_is_current => (
                true,
                "RollingOut",
                format!("rolling out {}", observed.version),
            ),
            _ => (
                false,
                "RolledOut",
                format!("{} is rolled out", observed.version),
            ),
        }
    };
    let (degraded, degraded_reason, degraded_message) =
        match (&observed.problem, &observed.migration) {
            (Some((reason, message)), _) => (true, *reason, message.clone()),
            (None, Migration::Failed(message)) => (true, "MigrationFailed", message.clone()),
            _ => (false, "AsExpected", "no problem seen".to_owned()),
        };
    let (available_reason, available_message) = if available {
        (
            "MinimumReplicasAvailable",
            "every component has ready pods".to_owned(),
        )
    } else {
        ("ComponentsUnavailable", unavailable_message(&components))
    };

    let condition = |kind: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let last = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: observed.generation,
            last_transition_time: last,
        }
    };
    AppStackStatus {
        observed_generation: observed.generation,
        version,
        conditions: vec![
            condition("Available", available, available_reason, available_message),
            condition(
                "Progressing",
                progressing,
                progressing_reason,
                progressing_message,
            ),
            condition("Degraded", degraded, degraded_reason, degraded_message),
        ],
        components,
    }
}

fn unavailable_message(components: &crate::crd::ComponentsStatus) -> String {
    let waiting: Vec<&str> = [
        ("main", &components.main),
        ("auth", &components.auth),
        ("worker", &components.worker),
    ]
    .into_iter()
    .filter(|(_, c)| c.ready_replicas == 0)
    .map(|(name, _)| name)
    .collect();
    format!("no ready pod yet: {}", waiting.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn deployment(replicas: i32, ready: i32, updated: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                updated_replicas: Some(updated),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap())
    }

    fn observed<'a>(
        deployments: [Option<&'a Deployment>; 3],
        migration: Migration,
    ) -> Observed<'a> {
        Observed {
            generation: Some(3),
            version: "2.0.0",
            deployed_version: Some("2.0.0"),
            migration,
            deployments,
            problem: None,
            paused: false,
        }
    }

    fn condition<'a>(status: &'a AppStackStatus, kind: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn a_rolled_out_stack_is_available_at_its_version_and_stays_unchanged() {
        let d = deployment(2, 2, 2);
        let first = compute(
            None,
            &observed([Some(&d); 3], Migration::Succeeded),
            &time(0),
        );
        assert_eq!(first.version.as_deref(), Some("2.0.0"));
        assert_eq!(condition(&first, "Available").status, "True");
        assert_eq!(condition(&first, "Progressing").status, "False");
        assert_eq!(first.components.main.summary, "2/2");
        // Nothing changed: the same status, timestamps included (no write).
        let again = compute(
            Some(&first),
            &observed([Some(&d); 3], Migration::NotNeeded),
            &time(60),
        );
        assert_eq!(again, first);
    }

    #[test]
    fn a_failed_migration_keeps_the_old_version_and_says_so() {
        let d = deployment(2, 2, 2);
        let before = AppStackStatus {
            version: Some("1.0.0".into()),
            ..AppStackStatus::default()
        };
        let mut seen = observed(
            [Some(&d); 3],
            Migration::Failed("BackoffLimitExceeded".into()),
        );
        seen.deployed_version = Some("1.0.0");
        let status = compute(Some(&before), &seen, &time(5));
        assert_eq!(status.version.as_deref(), Some("1.0.0"));
        assert_eq!(condition(&status, "Degraded").reason, "MigrationFailed");
        assert_eq!(condition(&status, "Progressing").reason, "MigrationFailed");
        assert_eq!(
            condition(&status, "Available").status,
            "True",
            "the old pods still serve"
        );
    }

    #[test]
    fn a_rollout_in_progress_is_progressing_at_its_new_version() {
        let rolling = deployment(2, 2, 1);
        let before = AppStackStatus {
            version: Some("1.0.0".into()),
            ..AppStackStatus::default()
        };
        let status = compute(
            Some(&before),
            &observed([Some(&rolling); 3], Migration::Succeeded),
            &time(1),
        );
        assert_eq!(
            status.version.as_deref(),
            Some("2.0.0"),
            "given to the Deployments"
        );
        assert_eq!(condition(&status, "Progressing").reason, "RollingOut");
        let transition = condition(&status, "Progressing")
            .last_transition_time
            .clone();
        // Still rolling a minute later: the transition time holds.
        let later = compute(
            Some(&status),
            &observed([Some(&rolling); 3], Migration::Succeeded),
            &time(61),
        );
        assert_eq!(
            condition(&later, "Progressing").last_transition_time,
            transition
        );
    }

    #[test]
    fn missing_deployments_and_problems_show() {
        let mut seen = observed([None; 3], Migration::Running);
        seen.deployed_version = None;
        seen.problem = Some(("InvalidSpec", "config.routes.x.service: unknown".into()));
        let status = compute(None, &seen, &time(0));
        assert_eq!(condition(&status, "Available").status, "False");
        assert!(
            condition(&status, "Available")
                .message
                .contains("main, auth, worker")
        );
        assert_eq!(condition(&status, "Degraded").reason, "InvalidSpec");
        assert_eq!(condition(&status, "Progressing").reason, "Migrating");
        assert_eq!(status.version, None);
    }
}
