//! Names, labels and the owner reference every child carries.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest as _, Sha256};

/// The operator's field manager and `app.kubernetes.io/managed-by` value.
pub const MANAGER: &str = "appstack-operator";
/// Label naming the AppStack a child belongs to (the selector orphans are found by).
pub const STACK_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming the component of a child.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label saying who manages a child.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Pod-template annotation with the hash of the configuration file: a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "appstack.dev/config-hash";

/// The three long-running components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// The request API.
    Main,
    /// Users, tokens and keys.
    Auth,
    /// Executes queued requests.
    Worker,
}

impl Component {
    /// Every component, in a fixed order.
    pub const ALL: [Self; 3] = [Self::Main, Self::Auth, Self::Worker];

    /// The role name: `appstack <role>` and the label value.
    pub fn role(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Auth => "auth",
            Self::Worker => "worker",
        }
    }
}

/// The name of `component`'s Deployment, Service and ServiceAccount in stack `stack`.
pub fn component_name(stack: &str, component: Component) -> String {
    format!("{stack}-{}", component.role())
}

/// The name of auth's signing-key Secret in stack `stack`.
pub fn signing_keys_name(stack: &str) -> String {
    format!("{stack}-signing-keys")
}

/// What a child needs to know of its AppStack.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    pub version: String,
}

impl Owner {
    /// `{stack}-{suffix}`.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Labels that select a component's pods (stable across versions).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "appstack".to_owned()),
            (STACK_LABEL.to_owned(), self.name.clone()),
            (COMPONENT_LABEL.to_owned(), component.to_owned()),
        ])
    }

    /// Every label of a child of `component`.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
        labels.insert(
            "app.kubernetes.io/part-of".to_owned(),
            "appstack".to_owned(),
        );
        labels.insert(
            "app.kubernetes.io/version".to_owned(),
            label_value(&self.version),
        );
        labels
    }

    /// Metadata of a child called `name`, of `component`.
    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: self.uid.as_ref().map(|uid| {
                vec![OwnerReference {
                    api_version: "appstack.dev/v1alpha1".into(),
                    kind: "AppStack".into(),
                    name: self.name.clone(),
                    uid: uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        }
    }
}

/// A label value (at most 63 characters): long versions keep a prefix and a hash.
pub(crate) fn label_value(value: &str) -> String {
    bounded(value, 63)
}

/// `value` if it fits in `max` characters, else a prefix and 10 hex characters of its hash.
pub(crate) fn bounded(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let hash = short_hash(value.as_bytes());
    let keep = max.saturating_sub(hash.len() + 1);
    let prefix: String = value.chars().take(keep).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.', '_']))
}

/// The first 10 hex characters of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_keep_a_prefix_and_a_hash_within_the_limit() {
        let long = "v".repeat(100);
        let bounded = label_value(&long);
        assert_eq!(bounded.len(), 63);
        assert!(bounded.starts_with("vvvv"));
        assert_ne!(label_value(&"w".repeat(100)), bounded);
        assert_eq!(label_value("1.2.3"), "1.2.3");
    }
}
