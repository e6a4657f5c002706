//! The migration Job of a version, and auth's signing-key Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::names::{Owner, bounded, label_value};
use super::pod::{PodInput, pod_spec};
use crate::crd::AppStackSpec;

/// How long one migration may run before it counts as failed.
pub const MIGRATION_DEADLINE_SECONDS: i64 = 600;

/// The migration Job's name for `version`: one Job per version, at most 63 characters
/// (its pods carry the name as a label).
pub fn migration_job_name(stack: &str, version: &str) -> String {
    bounded(&format!("{stack}-migrate-{}", slug(version)), 63)
}

/// `version` as a DNS label part: lowercase, other characters as `-`.
fn slug(version: &str) -> String {
    let slug: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.trim_matches('-').to_owned()
}

/// `appstack migrate` of `version`: applied once; a failure keeps the old version running.
pub(crate) fn migration_job(spec: &AppStackSpec, owner: &Owner, version: &str) -> Job {
    let mut pod = pod_spec(&PodInput {
        spec,
        owner,
        role: "migrate",
        version,
        component: None,
        signing_keys: false,
        serves: false,
        grace_seconds: Some(30),
    });
    // The migration runs as the worker's identity (same database rights).
    pod.service_account_name = Some(owner.child_name("worker"));
    let mut labels = owner.labels("migrate");
    labels.insert("app.kubernetes.io/version".into(), label_value(version));
    Job {
        metadata: ObjectMeta {
            labels: Some(labels.clone()),
            ..owner.meta(migration_job_name(&owner.name, version), "migrate")
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(MIGRATION_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Auth's signing keys: created once with the first key, `pem` (PKCS#8), never overwritten
/// (rotation adds keys to it by hand or by a rotation job).
pub fn signing_key_secret(
    owner_name: &str,
    namespace: &str,
    uid: Option<&str>,
    kid: &str,
    pem: &str,
) -> Secret {
    let owner = Owner {
        name: owner_name.to_owned(),
        namespace: namespace.to_owned(),
        uid: uid.map(str::to_owned),
        version: String::new(),
    };
    let mut metadata = owner.meta(super::names::signing_keys_name(&owner.name), "auth");
    if let Some(labels) = metadata.labels.as_mut() {
        labels.remove("app.kubernetes.io/version");
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            format!("{kid}.pem"),
            ByteString(pem.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels_per_version() {
        assert_eq!(migration_job_name("shop", "1.4.2"), "shop-migrate-1-4-2");
        assert_eq!(migration_job_name("shop", "V2_rc"), "shop-migrate-v2-rc");
        let long = migration_job_name(&"s".repeat(50), &"1".repeat(40));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, migration_job_name(&"s".repeat(50), &"2".repeat(40)));
    }
}
