//! The Helm chart installed for real on the test control plane with helm 4; then the
//! operator runs with exactly the chart's ServiceAccount (a token from the TokenRequest API,
//! not the admin's) and reconciles the quickstart stack, and what the chart's RBAC does not
//! grant is refused by the apiserver. Upgrade and uninstall leave nothing behind.
//!
//! No kubelet runs here, so the chart's own Deployment never starts a pod: the operator
//! runs as a process beside the test, with the token that pod would have had.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use appstack_operator::crd::AppStack;
use appstack_tests::auth_server::http_get;
use appstack_tests::control_plane::ControlPlane;
use appstack_tests::operator_fixture;
use appstack_tests::processes::spawn_operator;
use appstack_tests::wait::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);
const RELEASE: &str = "appstack";

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/appstack-operator")
}

fn helm(plane: &ControlPlane, namespace: &str, args: &[&str]) {
    appstack_tests::helm::helm(&plane.kubeconfig, namespace, args).unwrap();
}

async fn token_of(client: &kube::Client, namespace: &str, account: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .unwrap();
    let issued: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .unwrap();
    issued.status.unwrap().token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_and_its_service_account_runs_the_operator_and_no_more() {
    let plane = ControlPlane::shared().await.unwrap();
    let admin = plane.client().unwrap();
    let namespace = plane.namespace("chart").await.unwrap();
    let chart = chart();
    let chart = chart.to_str().unwrap();
    // Namespaced mode: a Role, so the rights end at this namespace.
    let install_started = std::time::Instant::now();
    helm(
        &plane,
        &namespace,
        // Client-side: a 1.20 server refuses the CRD's CEL rules under server-side apply
        // (helm 4's default) as undeclared fields; created, it drops them (and the operator
        // checks the same rules itself).
        &[
            "install",
            RELEASE,
            chart,
            "--server-side=false",
            "--set",
            "watch=namespace",
        ],
    );
    // A figure for the log (the closing note's install time), never an assertion.
    eprintln!("helm install took {:?}", install_started.elapsed());
    let roles: Api<Role> = Api::namespaced(admin.clone(), &namespace);
    assert!(
        roles
            .get_opt("appstack-appstack-operator")
            .await
            .unwrap()
            .is_some()
    );

    let token = token_of(&admin, &namespace, "appstack-appstack-operator").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    plane
        .write_kubeconfig_with_token(&kubeconfig, &token)
        .unwrap();
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut operator = spawn_operator(&kubeconfig, &namespace, "chart-pod", admin_addr).unwrap();
    eventually("the operator to lead", WAIT, || async {
        match http_get(admin_addr, "/readyz").await {
            Ok((200, body)) if body == "leading" => Some(()),
            _ => None,
        }
    })
    .await;

    // The quickstart stack, reconciled to its Deployments with the chart's rights alone.
    operator_fixture::create_database_secret(&admin, &namespace)
        .await
        .unwrap();
    let stacks: Api<AppStack> = Api::namespaced(admin.clone(), &namespace);
    let applied = std::time::Instant::now();
    operator_fixture::create_quickstart(&admin, &namespace)
        .await
        .unwrap();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin.clone(), &namespace);
    eventually("the migration Job", WAIT, || async {
        jobs.get_opt("shop-migrate-0-1-0").await.ok().flatten()
    })
    .await;
    operator_fixture::finish_job(&admin, &namespace, "shop-migrate-0-1-0", true)
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    eventually("the stack deployed", WAIT, || async {
        let version = stacks.get("shop").await.ok()?.status?.version?;
        let present = deployments.get_opt("shop-worker").await.ok()??;
        (version == "0.1.0").then_some(present)
    })
    .await;
    eprintln!(
        "helm install → stack deployed: {:?} (AppStack applied → deployed, migration Job finished by the test: {:?})",
        install_started.elapsed(),
        applied.elapsed()
    );

    // What the Role does not grant is refused: a cluster-scoped read, a Secret deleted,
    // anything in another namespace.
    let operator_client = plane.client_with_token(&token).unwrap();
    let forbidden = |result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.code == 403,
        _ => false,
    };
    let nodes: Api<Node> = Api::all(operator_client.clone());
    assert!(forbidden(
        nodes.list(&ListParams::default()).await.map(|_| ())
    ));
    let secrets: Api<Secret> = Api::namespaced(operator_client.clone(), &namespace);
    assert!(forbidden(
        secrets
            .delete("shop-signing-keys", &DeleteParams::default())
            .await
            .map(|_| ())
    ));
    let elsewhere: Api<Secret> = Api::namespaced(operator_client.clone(), "default");
    assert!(forbidden(
        elsewhere.list(&ListParams::default()).await.map(|_| ())
    ));
    operator.start_kill().unwrap();
    let _ = operator.wait().await;

    // Upgrade, then uninstall: none of the chart's objects remain.
    helm(
        &plane,
        &namespace,
        &[
            "upgrade",
            RELEASE,
            chart,
            "--server-side=false",
            "--set",
            "watch=namespace",
            "--set",
            "controller.concurrency=4",
        ],
    );
    let upgraded = Api::<Deployment>::namespaced(admin.clone(), &namespace)
        .get("appstack-appstack-operator")
        .await
        .unwrap();
    let args = upgraded.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--concurrency=4".to_owned()), "{args:?}");
    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=appstack-operator");
    let by_release = ListParams::default().labels(&selector);
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(admin.clone(), &namespace);
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(admin.clone(), &namespace);
    // Present before the uninstall, so their absence after it means something.
    assert_eq!(policies.list(&by_release).await.unwrap().items.len(), 1);
    assert_eq!(services.list(&by_release).await.unwrap().items.len(), 1);
    helm(&plane, &namespace, &["uninstall", RELEASE, "--wait"]);
    assert!(
        deployments
            .list(&by_release)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(roles.list(&by_release).await.unwrap().items.is_empty());
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &namespace);
    assert!(bindings.list(&by_release).await.unwrap().items.is_empty());
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
    assert!(accounts.list(&by_release).await.unwrap().items.is_empty());
    assert!(services.list(&by_release).await.unwrap().items.is_empty());
    assert!(policies.list(&by_release).await.unwrap().items.is_empty());
    plane.delete_namespace(&namespace).await.unwrap();
}
