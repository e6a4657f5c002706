//! The `AppStack` custom resource (`appstack.dev/v1alpha1`) and its CRD.

mod spec;
mod status;

pub use spec::{
    AppStack, AppStackSpec, AutoscalingSpec, ComponentSpec, DatabaseRef, DisruptionBudgetSpec,
    NetworkPolicySpec, ObservabilitySpec, PullPolicy,
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
    fn the_examples_pass_the_crd_rules() {
        for entry in std::fs::read_dir(deploy_dir().join("examples")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert_eq!(cel_errors(&example(&name)), Vec::<String>::new(), "{name}");
            }
        }
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
