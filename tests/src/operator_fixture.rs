//! What the operator suites and the operator benchmark set up on a control plane: the CRD,
//! the example stack, its database Secret, and a migration Job finished as the Job
//! controller would finish it (there is no kubelet to run its pod).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_operator::crd::{self, AppStack};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// Waits until `metrics` counts no new API write for `quiet`: the stacks it watches have
/// settled (statuses written, nothing in motion).
pub async fn settled(metrics: &appstack_operator::metrics::Metrics, quiet: Duration) {
    let mut last = (metrics.writes(), Instant::now());
    while last.1.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if metrics.writes() != last.0 {
            last = (metrics.writes(), Instant::now());
        }
    }
}

/// The database Secret the example stacks name.
pub const DATABASE_SECRET: &str = "shop-db-app";

/// Installs the AppStack CRD (unless it exists) and waits until it is established.
///
/// Created, as `kubectl create -f deploy/crds/` does: a 1.20 server drops the CEL rules it
/// does not know, where server-side apply would refuse them as undeclared fields.
///
/// # Errors
///
/// When the server refuses it or it is not established within 30 s.
pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&PostParams::default(), &crd::crd()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(other) => return Err(other).context("installing the CRD"),
    }
    wait_established(&crds, "appstacks.appstack.dev").await
}

/// Waits until the CRD `name` is established (its kind served), for at most 30 s.
async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let established = crds
            .get(name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{name} was not established within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `deploy/examples/quickstart.yaml` in `namespace`.
///
/// # Errors
///
/// When the example cannot be read or parsed.
pub fn quickstart(namespace: &str) -> anyhow::Result<AppStack> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut stack: AppStack = serde_norway::from_str(&text).context("parsing the quickstart")?;
    stack.metadata.namespace = Some(namespace.into());
    Ok(stack)
}

/// Creates the quickstart stack (`shop`) in `namespace`.
///
/// # Errors
///
/// When the example cannot be read or the server refuses it.
pub async fn create_quickstart(client: &Client, namespace: &str) -> anyhow::Result<AppStack> {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    stacks
        .create(&PostParams::default(), &quickstart(namespace)?)
        .await
        .context("creating the quickstart stack")
}

/// Creates [`DATABASE_SECRET`] in `namespace`, holding a `postgres://` URI under `uri`.
///
/// # Errors
///
/// When the server refuses it.
pub async fn create_database_secret(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(DATABASE_SECRET.into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("uri".to_owned(), "postgres://app:pw@db:5432/app".to_owned())].into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the database Secret")?;
    Ok(())
}

/// Writes the status the Job controller would write once a kubelet had run the Job's pod:
/// complete, or failed past its backoff limit.
///
/// # Errors
///
/// When the Job does not exist or the server refuses.
pub async fn finish_job(
    client: &Client,
    namespace: &str,
    name: &str,
    succeeded: bool,
) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let now = "2026-12-01T00:00:00Z";
    let status = if succeeded {
        serde_json::json!({"status": {"succeeded": 1, "startTime": now, "completionTime": now,
            "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}]}})
    } else {
        serde_json::json!({"status": {"failed": 3, "startTime": now,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}]}})
    };
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("finishing job {name}"))?;
    Ok(())
}

/// Stand-ins for other projects' CRDs, for a control plane that must serve their kinds:
/// the group, version, kind and scope of the real ones, with a schema that keeps every
/// field. (Their own CRD files stay out of this repository; what the operator writes into
/// them is checked field by field in the render's tests.)
#[derive(Debug, Clone, Copy)]
pub struct StandInCrd {
    /// The API group, e.g. `keda.sh`.
    pub group: &'static str,
    /// The served version, e.g. `v1alpha1`.
    pub version: &'static str,
    /// The kind, e.g. `ScaledObject`.
    pub kind: &'static str,
    /// The plural, e.g. `scaledobjects`.
    pub plural: &'static str,
}

/// KEDA's ScaledObject and TriggerAuthentication (`keda.sh/v1alpha1`).
pub const KEDA_CRDS: [StandInCrd; 2] = [
    StandInCrd {
        group: "keda.sh",
        version: "v1alpha1",
        kind: "ScaledObject",
        plural: "scaledobjects",
    },
    StandInCrd {
        group: "keda.sh",
        version: "v1alpha1",
        kind: "TriggerAuthentication",
        plural: "triggerauthentications",
    },
];

/// The Gateway API's GRPCRoute (`gateway.networking.k8s.io/v1`).
pub const GRPC_ROUTE_CRD: StandInCrd = StandInCrd {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "GRPCRoute",
    plural: "grpcroutes",
};

/// Creates the stand-in CRDs and waits until each is established.
///
/// # Errors
///
/// When the server refuses one or one is not established within 30 s.
pub async fn install_stand_in_crds(client: &Client, crds: &[StandInCrd]) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = format!("{}.{}", crd.plural, crd.group);
        // Groups under k8s.io need an approval (the Gateway API's CRDs carry their PR's).
        let annotations = if crd.group.ends_with(".k8s.io") {
            serde_json::json!({"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1538"})
        } else {
            serde_json::json!({})
        };
        let definition: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "group": crd.group,
                "scope": "Namespaced",
                "names": {
                    "kind": crd.kind,
                    "listKind": format!("{}List", crd.kind),
                    "plural": crd.plural,
                    "singular": crd.kind.to_lowercase(),
                },
                "versions": [{
                    "name": crd.version,
                    "served": true,
                    "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                    }},
                }],
            },
        }))?;
        match api.create(&PostParams::default(), &definition).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(other) => return Err(other).with_context(|| format!("installing {name}")),
        }
        wait_established(&api, &name).await?;
    }
    Ok(())
}
