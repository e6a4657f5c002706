//! The seam between the operator and the services: the ConfigMap the operator renders is
//! read by the services' own loader into exactly the configuration the operator meant, with
//! every setting the user wrote in the AppStack intact; and the `DATABASE_URL_FILE` each
//! pod gets names the file its database Secret is mounted as. (`appstack`'s CLI tests read
//! such a file.)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use appstack_common::config::ConfigLoader;
use appstack_config::StackConfig;
use appstack_operator::crd::AppStack;
use appstack_operator::render::{self, CONFIG_FILE, Child, Rollout, ServedApis};

fn example(name: &str) -> AppStack {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name);
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rendered_file(stack: &AppStack) -> String {
    let rollout = Rollout {
        running: Some(stack.spec.version.clone()),
        migrated: true,
    };
    let desired = render::render(stack, &ServedApis::CURRENT, &rollout).unwrap();
    desired
        .children
        .iter()
        .find_map(|child| match child {
            Child::ConfigMap(map) => Some(map.data.as_ref().unwrap()[CONFIG_FILE].clone()),
            _ => None,
        })
        .expect("no ConfigMap rendered")
}

#[test]
fn the_services_read_the_rendered_config_map_as_the_operator_meant_it() {
    for name in ["quickstart.yaml", "production.yaml"] {
        let stack = example(name);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, rendered_file(&stack)).unwrap();
        let url = "postgres://app:pw@db.example:5432/app";
        let loaded: StackConfig = ConfigLoader::new::<StackConfig>()
            .file(&path)
            .set("database.url", url)
            .load()
            .unwrap_or_else(|e| panic!("{name}: the services refuse the rendered file: {e}"));

        let mut meant = render::services_config(&stack).unwrap();
        meant.database.url = url.into();
        assert_eq!(loaded, meant, "{name}");
        // What the user wrote survives untouched.
        let spec = &stack.spec.config;
        assert_eq!(loaded.external_services, spec.external_services, "{name}");
        assert_eq!(loaded.routes, spec.routes, "{name}");
        assert_eq!(loaded.queue, spec.queue, "{name}");
        assert_eq!(loaded.worker, spec.worker, "{name}");
        assert_eq!(loaded.requests, spec.requests, "{name}");
        assert_eq!(
            loaded.server.shutdown_grace, spec.server.shutdown_grace,
            "{name}"
        );
        assert_eq!(loaded.auth.issuer, spec.auth.issuer, "{name}");
    }
}

#[test]
fn every_pod_finds_the_database_url_where_its_secret_is_mounted() {
    use k8s_openapi::api::core::v1::PodSpec;
    let stack = example("production.yaml");
    // An upgrade in its migration: the Deployments of the running version and the Job of
    // the new one.
    let rollout = Rollout {
        running: Some("0.0.9".into()),
        migrated: false,
    };
    let desired = render::render(&stack, &ServedApis::CURRENT, &rollout).unwrap();
    let pods: Vec<(String, PodSpec)> = desired
        .children
        .iter()
        .filter_map(|child| match child {
            Child::Deployment(d) => Some((
                d.metadata.name.clone().unwrap(),
                d.spec.clone()?.template.spec?,
            )),
            Child::Migration(j) => Some((
                j.metadata.name.clone().unwrap(),
                j.spec.clone()?.template.spec?,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(pods.len(), 4, "three Deployments and the migration Job");
    for (name, pod) in pods {
        let container = &pod.containers[0];
        let env = container.env.as_deref().unwrap();
        assert!(
            env.iter().all(|e| e.name != "DATABASE_URL"),
            "{name}: the URL is in the environment"
        );
        let file = env
            .iter()
            .find(|e| e.name == "DATABASE_URL_FILE")
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{name}: no DATABASE_URL_FILE"));
        let (dir, file_name) = file.rsplit_once('/').unwrap();
        let mount = container
            .volume_mounts
            .as_deref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {dir}"));
        let volume = pod
            .volumes
            .as_deref()
            .unwrap()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(
            secret.secret_name.as_deref(),
            Some(stack.spec.database.secret_name.as_str()),
            "{name}"
        );
        let items = secret.items.as_deref().unwrap();
        assert_eq!(items.len(), 1, "{name}");
        assert_eq!(items[0].key, stack.spec.database.key, "{name}");
        assert_eq!(items[0].path, file_name, "{name}");
    }
}
