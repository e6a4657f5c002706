//! Two `appstack-operator run` processes on the test control plane: one leads (holds the
//! Lease, reconciles, says `leading` on `/readyz`), the other stands by (ready too); when the leader is killed the
//! other takes over, and a leader stopped with SIGTERM exits cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use appstack_operator::serve::{LEASE_NAME, LEASE_SECONDS};
use appstack_tests::auth_server::http_get;
use appstack_tests::control_plane::ControlPlane;
use appstack_tests::operator_fixture;
use appstack_tests::processes::spawn_operator;
use appstack_tests::wait::eventually;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams};

/// The Lease's duration, its grace, and room for a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(LEASE_SECONDS + 30);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Whether the replica at `admin` says it leads or stands by (`/readyz`, ready either way),
/// or does not answer.
async fn leading(admin: SocketAddr) -> Option<bool> {
    match http_get(admin, "/readyz").await {
        Ok((200, body)) if body == "leading" => Some(true),
        Ok((200, body)) if body == "standby" => Some(false),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over_when_it_dies() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().unwrap();
    operator_fixture::install_crd(&client).await.unwrap();
    let namespace = plane.namespace("leader").await.unwrap();
    operator_fixture::create_database_secret(&client, &namespace)
        .await
        .unwrap();

    let replicas = [("replica-a", free_addr()), ("replica-b", free_addr())];
    let mut processes = Vec::new();
    for (identity, admin) in replicas {
        processes.push(spawn_operator(&plane.kubeconfig, &namespace, identity, admin).unwrap());
    }
    // One leads; the other answers as a standby.
    let leader = eventually("one leader and one standby", TAKEOVER, || async {
        let a = leading(replicas[0].1).await?;
        let b = leading(replicas[1].1).await?;
        match (a, b) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    })
    .await;
    let standby = 1 - leader;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(holder.holder_identity.as_deref(), Some(replicas[leader].0));

    // Only the leader works: the stack gets its children.
    operator_fixture::create_quickstart(&client, &namespace)
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    eventually("the ConfigMap", TAKEOVER, || async {
        maps.get_opt("shop-config").await.ok().flatten()
    })
    .await;
    assert_eq!(leading(replicas[standby].1).await, Some(false));
    // The leader gauge the NoLeader alert reads says the same.
    for (index, expected) in [
        (leader, "appstack_operator_leader 1"),
        (standby, "appstack_operator_leader 0"),
    ] {
        let (status, body) = http_get(replicas[index].1, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.lines().any(|line| line == expected),
            "{expected} missing:\n{body}"
        );
    }

    // The leader dies without releasing the Lease: the standby takes over once it expires.
    let killed = Instant::now();
    processes[leader].start_kill().unwrap();
    let _ = processes[leader].wait().await;
    eventually("the standby to lead", TAKEOVER, || async {
        leading(replicas[standby].1).await.filter(|l| *l)
    })
    .await;
    eprintln!(
        "takeover after a kill: {:.1} s (Lease {LEASE_SECONDS} s)",
        killed.elapsed().as_secs_f64()
    );
    let holder = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(holder.holder_identity.as_deref(), Some(replicas[standby].0));
    // And it reconciles: a child deleted by hand comes back.
    maps.delete("shop-config", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the ConfigMap restored by the new leader",
        TAKEOVER,
        || async { maps.get_opt("shop-config").await.ok().flatten() },
    )
    .await;

    // Stopped with SIGTERM, the new leader exits cleanly.
    let pid = processes[standby].id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), processes[standby].wait())
        .await
        .expect("the leader did not stop within 20 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    plane.delete_namespace(&namespace).await.unwrap();
}
