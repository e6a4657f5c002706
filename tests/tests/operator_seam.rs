//! The seam between the operator and the services: the ConfigMap the operator renders is
//! read by the services' own loader (file, then the `DATABASE_URL` the pod gets from the
//! Secret) into exactly the configuration the operator meant, with every setting the user
//! wrote in the AppStack intact.

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
