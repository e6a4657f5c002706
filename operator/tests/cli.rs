//! The `appstack-operator` binary's offline commands, as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appstack-operator"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn crd_prints_what_deploy_crds_and_the_chart_hold() {
    let out = operator(&["crd"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    for copy in [
        "deploy/crds/appstack.dev_appstacks.yaml",
        "charts/appstack-operator/crds/appstack.dev_appstacks.yaml",
    ] {
        let expected = std::fs::read_to_string(repo().join(copy)).unwrap();
        assert!(
            printed == expected,
            "{copy} differs from `appstack-operator crd`: write it again with `cargo run -p appstack-operator -- crd > {copy}`"
        );
    }
}

#[test]
fn render_prints_the_golden_children_of_each_example() {
    for example in ["quickstart", "production"] {
        let out = operator(&["render", "-f", &format!("deploy/examples/{example}.yaml")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let golden = std::fs::read_to_string(
            repo().join(format!("deploy/examples/rendered/{example}.yaml")),
        )
        .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), golden, "{example}");
    }
}

#[test]
fn render_of_an_upgrade_prints_the_migration_and_keeps_the_running_version() {
    let out = operator(&[
        "render",
        "-f",
        "deploy/examples/quickstart.yaml",
        "--running",
        "0.0.9",
        "--apis",
        "legacy",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("kind: Job"), "{yaml}");
    assert!(yaml.contains("localhost/appstack:0.0.9"), "{yaml}");
    assert!(yaml.contains("autoscaling/v2beta2"), "{yaml}");
    assert!(yaml.contains("policy/v1beta1"), "{yaml}");
}

#[test]
fn render_refuses_a_broken_or_invalid_stack_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: appstack.dev/v1alpha1\nkind: AppStack\nspec: [",
    )
    .unwrap();
    let out = operator(&["render", "-f", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsing the AppStack"));

    let quickstart =
        std::fs::read_to_string(repo().join("deploy/examples/quickstart.yaml")).unwrap();
    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        quickstart.replace("service: echo", "service: nowhere"),
    )
    .unwrap();
    let out = operator(&["render", "-f", invalid.to_str().unwrap()]);
    assert!(!out.status.success(), "an invalid route rendered");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");
}
