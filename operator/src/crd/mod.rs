//! The `AppStack` custom resource (`appstack.dev/v1alpha1`) and its CRD.

mod spec;
mod status;

pub use spec::{
    AppStack, AppStackSpec, AutoscalingSpec, ComponentSpec, DatabaseRef, DisruptionBudgetSpec,
    GatewayRef, IngressSpec, NetworkPolicySpec, ObservabilitySpec, PullPolicy, QueueScalingSpec,
};
pub use status::{AppStackStatus, ComponentStatus, ComponentsStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;

/// The CRD, as `deploy/crds/appstack.dev_appstacks.yaml` holds it.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = AppStack::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            && let Ok(mut value) = serde_json::to_value(&*schema)
        {
            prune_defaults(&mut value);
            if let Ok(pruned) = serde_json::from_value(value) {
                *schema = pruned;
            }
        }
    }
    crd
}

/// Drops the schema defaults that are whole objects or empty strings, keeping the scalar
/// ones `kubectl explain` shows. A whole section's default repeats every leaf's and is
/// applied by the services anyway; an empty-string default is refused by Kubernetes 1.20
/// ("must be of type string: null").
fn prune_defaults(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            let drop = map
                .get("default")
                .is_some_and(|d| d.is_object() || d.as_str() == Some(""));
            if drop {
                map.remove("default");
            }
            for value in map.values_mut() {
                prune_defaults(value);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(prune_defaults),
        _ => {}
    }
}

/// The CRD as YAML.
///
/// # Errors
///
/// Never in practice: the CRD is plain data.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&crd())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn deploy_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
    }

    fn example(name: &str) -> AppStack {
        let text = std::fs::read_to_string(deploy_dir().join("examples").join(name)).unwrap();
        serde_norway::from_str(&text).unwrap()
    }

    /// Every AppStack manifest a user is given: the examples and the install guides'.
    fn every_manifest() -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("examples"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.push(deploy_dir().join("eks/appstack.yaml"));
        paths
    }

    /// The keys of `written` that `typed` (the same object after a round trip through the
    /// types) lacks: fields the types do not know, which the API server would prune.
    fn unknown_keys(
        written: &serde_json::Value,
        typed: &serde_json::Value,
        at: &str,
    ) -> Vec<String> {
        match (written, typed) {
            (serde_json::Value::Object(written), serde_json::Value::Object(typed)) => written
                .iter()
                .flat_map(|(key, value)| match typed.get(key) {
                    Some(t) => unknown_keys(value, t, &format!("{at}.{key}")),
                    None => vec![format!("{at}.{key}")],
                })
                .collect(),
            (serde_json::Value::Array(written), serde_json::Value::Array(typed)) => written
                .iter()
                .zip(typed)
                .enumerate()
                .flat_map(|(i, (w, t))| unknown_keys(w, t, &format!("{at}[{i}]")))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn every_manifest_passes_the_crd_rules_and_has_no_unknown_field() {
        for path in every_manifest() {
            let text = std::fs::read_to_string(&path).unwrap();
            let written: serde_json::Value = serde_norway::from_str(&text).unwrap();
            let stack: AppStack =
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let typed = serde_json::to_value(&stack).unwrap();
            assert_eq!(
                unknown_keys(&written, &typed, ""),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
            assert_eq!(
                cel_errors(&stack),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn queue_scaling_is_refused_outside_the_worker() {
        let mut stack = example("quickstart.yaml");
        stack.spec.main.autoscaling.queue = Some(crate::crd::QueueScalingSpec::default());
        let errors = cel_errors(&stack);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("for the worker only"), "{errors:?}");
        stack.spec.main.autoscaling.queue = None;
        stack.spec.worker.autoscaling.queue = Some(crate::crd::QueueScalingSpec::default());
        assert!(cel_errors(&stack).is_empty());
    }

    /// Messages of the CEL rules `stack` breaks, as an API server enforcing CEL would give.
    fn cel_errors(stack: &AppStack) -> Vec<String> {
        match kube::core::cel::validate_cel(stack) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_committed_crd_is_what_the_types_generate() {
        let path = deploy_dir().join("crds/appstack.dev_appstacks.yaml");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = crd_yaml().unwrap();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        assert!(
            committed == generated,
            "{} drifted from the types: run `UPDATE_GOLDEN=1 cargo test -p appstack-operator` and commit it",
            path.display()
        );
    }

    #[test]
    fn an_autoscaler_whose_minimum_exceeds_its_maximum_is_refused() {
        let mut stack = example("quickstart.yaml");
        stack.spec.worker.autoscaling.min_replicas = 5;
        stack.spec.worker.autoscaling.max_replicas = 3;
        let errors = cel_errors(&stack);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("minReplicas must not exceed maxReplicas"),
            "{errors:?}"
        );
        // Off, the bounds do not matter.
        stack.spec.worker.autoscaling.enabled = false;
        assert!(cel_errors(&stack).is_empty());
    }

    #[test]
    fn a_route_naming_an_undeclared_service_is_refused() {
        let mut stack = example("quickstart.yaml");
        let mut route = stack.spec.config.routes["echo"].clone();
        route.service = "nowhere".into();
        stack.spec.config.routes.insert("lost".into(), route);
        let errors = cel_errors(&stack);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("every route's service must be a key of externalServices"),
            "{errors:?}"
        );
    }
}
