//! The render's rules, case by case, and the golden files of the examples.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::crd::AppStack;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn quickstart() -> AppStack {
    let text = std::fs::read_to_string(examples_dir().join("quickstart.yaml")).unwrap();
    let mut stack: AppStack = serde_norway::from_str(&text).unwrap();
    stack.metadata.uid = Some("0d3c6a8e-5b1f-4c59-9f7e-1f2a3b4c5d6e".into());
    stack
}

fn running(version: &str) -> Rollout {
    Rollout {
        running: Some(version.into()),
        migrated: false,
    }
}

fn steady(stack: &AppStack) -> Desired {
    render(stack, &ServedApis::CURRENT, &running(&stack.spec.version)).unwrap()
}

fn deployments(desired: &Desired) -> Vec<&Deployment> {
    desired
        .children
        .iter()
        .filter_map(|child| match child {
            Child::Deployment(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn kinds(desired: &Desired) -> Vec<(&'static str, String)> {
    desired
        .children
        .iter()
        .map(|child| {
            (
                child.kind(&ServedApis::CURRENT).kind,
                child.name().to_owned(),
            )
        })
        .collect()
}

/// The Deployment's one container.
fn container_of(deployment: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    &pod.containers[0]
}

fn image_of(deployment: &Deployment) -> String {
    container_of(deployment).image.clone().unwrap()
}

#[test]
fn a_steady_stack_has_every_child_owned_and_labelled() {
    let desired = steady(&quickstart());
    let names = kinds(&desired);
    for (kind, count) in [
        ("ServiceAccount", 3),
        ("ConfigMap", 1),
        ("Service", 2),
        ("NetworkPolicy", 4),
        ("Deployment", 3),
        ("HorizontalPodAutoscaler", 3),
        ("PodDisruptionBudget", 3),
        ("Job", 0),
    ] {
        assert_eq!(
            names.iter().filter(|(k, _)| *k == kind).count(),
            count,
            "{kind}: {names:?}"
        );
    }
    for child in &desired.children {
        let manifest = child.manifest(&ServedApis::CURRENT).unwrap();
        let meta = &manifest["metadata"];
        assert_eq!(meta["namespace"], "appstack");
        assert_eq!(meta["labels"][STACK_LABEL], "shop", "{}", child.name());
        assert_eq!(meta["labels"][MANAGED_BY_LABEL], MANAGER);
        let owner = &meta["ownerReferences"][0];
        assert_eq!(owner["kind"], "AppStack");
        assert_eq!(owner["uid"], "0d3c6a8e-5b1f-4c59-9f7e-1f2a3b4c5d6e");
        assert_eq!(owner["controller"], true);
    }
}

#[test]
fn every_pod_runs_under_the_restricted_pod_security_standard() {
    let mut stack = quickstart();
    stack.spec.version = "0.2.0".into();
    // Deployments and the migration Job at once.
    let desired = render(
        &stack,
        &ServedApis::CURRENT,
        &Rollout {
            running: Some("0.1.0".into()),
            migrated: false,
        },
    )
    .unwrap();
    let mut pods = 0;
    for child in &desired.children {
        let manifest = child.manifest(&ServedApis::CURRENT).unwrap();
        let Some(pod) = manifest["spec"]["template"]["spec"].as_object() else {
            continue;
        };
        pods += 1;
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
        // Service links would inject `APPSTACK_…_PORT` variables, read as configuration.
        assert_eq!(pod["enableServiceLinks"], false, "{}", child.name());
        for container in pod["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(
                security["allowPrivilegeEscalation"],
                false,
                "{}",
                child.name()
            );
            assert_eq!(security["readOnlyRootFilesystem"], true);
            assert_eq!(security["capabilities"]["drop"][0], "ALL");
            assert_eq!(security["runAsUser"], RUN_AS);
        }
    }
    assert_eq!(pods, 4, "three Deployments and the Job");
}

#[test]
fn deployments_spread_over_zones_probe_the_admin_port_and_wait_for_the_drain() {
    let mut stack = quickstart();
    stack.spec.config.server.shutdown_delay = std::time::Duration::from_secs(7);
    stack.spec.config.server.shutdown_grace = std::time::Duration::from_secs(30);
    let desired = steady(&stack);
    for deployment in deployments(&desired) {
        let pod = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(42));
        let keys: Vec<&str> = pod
            .topology_spread_constraints
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.topology_key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        );
        let container = &pod.containers[0];
        let readiness = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        assert_eq!(
            readiness.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into())
        );
    }
}

#[test]
fn only_auth_mounts_the_signing_keys() {
    let desired = steady(&quickstart());
    for deployment in deployments(&desired) {
        let pod = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let mounts_keys = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.name == "signing-keys");
        assert_eq!(
            mounts_keys,
            deployment.metadata.name.as_deref() == Some("shop-auth")
        );
    }
}

#[test]
fn turning_autoscaling_and_budgets_off_drops_their_children_and_pins_replicas() {
    let mut stack = quickstart();
    stack.spec.worker.autoscaling.enabled = false;
    stack.spec.worker.replicas = 4;
    stack.spec.auth.disruption_budget.enabled = false;
    stack.spec.network_policy.enabled = false;
    let desired = steady(&stack);
    let names = kinds(&desired);
    assert!(!names.contains(&("HorizontalPodAutoscaler", "shop-worker".into())));
    assert!(names.contains(&("HorizontalPodAutoscaler", "shop-main".into())));
    assert!(!names.contains(&("PodDisruptionBudget", "shop-auth".into())));
    assert!(!names.iter().any(|(kind, _)| *kind == "NetworkPolicy"));
    for deployment in deployments(&desired) {
        let replicas = deployment.spec.as_ref().unwrap().replicas;
        if deployment.metadata.name.as_deref() == Some("shop-worker") {
            assert_eq!(replicas, Some(4));
        } else {
            assert_eq!(
                replicas, None,
                "an autoscaled Deployment leaves replicas to the HPA"
            );
        }
    }
}

#[test]
fn a_new_version_migrates_before_the_deployments_move() {
    let mut stack = quickstart();
    stack.spec.version = "0.2.0".into();
    let apis = ServedApis::CURRENT;

    let pending = render(&stack, &apis, &running("0.1.0")).unwrap();
    assert!(kinds(&pending).contains(&("Job", "shop-migrate-0-2-0".into())));
    assert_eq!(pending.deployed_version.as_deref(), Some("0.1.0"));
    for deployment in deployments(&pending) {
        assert_eq!(image_of(deployment), "localhost/appstack:0.1.0");
    }

    let migrated = render(
        &stack,
        &apis,
        &Rollout {
            running: Some("0.1.0".into()),
            migrated: true,
        },
    )
    .unwrap();
    assert_eq!(migrated.deployed_version.as_deref(), Some("0.2.0"));
    for deployment in deployments(&migrated) {
        assert_eq!(image_of(deployment), "localhost/appstack:0.2.0");
    }

    // A first install has nothing to keep running: no Deployment before its migration.
    let first = render(&stack, &apis, &Rollout::default()).unwrap();
    assert!(deployments(&first).is_empty());
    // Nor an autoscaler or a budget for a Deployment that does not exist yet.
    assert!(
        !kinds(&first)
            .iter()
            .any(|(kind, _)| matches!(*kind, "HorizontalPodAutoscaler" | "PodDisruptionBudget")),
        "{:?}",
        kinds(&first)
    );
    assert!(kinds(&first).contains(&("Job", "shop-migrate-0-2-0".into())));
    assert_eq!(first.deployed_version, None);
}

#[test]
fn a_configuration_change_changes_the_pods_hash_and_nothing_else_does() {
    let stack = quickstart();
    let before = steady(&stack);
    let mut scaled = stack.clone();
    scaled.spec.main.autoscaling.max_replicas = 20;
    assert_eq!(steady(&scaled).config_hash, before.config_hash);
    let mut changed = stack.clone();
    changed.spec.config.worker.concurrency += 1;
    let after = steady(&changed);
    assert_ne!(after.config_hash, before.config_hash);
    let hash = |desired: &Desired| {
        deployments(desired)[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_eq!(hash(&after), after.config_hash);
}

#[test]
fn an_older_server_gets_the_versions_it_serves_and_a_missing_kind_is_reported() {
    let stack = quickstart();
    let legacy = ServedApis {
        autoscaling: Some(AutoscalingApi::V2beta2),
        disruption: Some(DisruptionApi::V1beta1),
        ..ServedApis::CURRENT
    };
    let desired = render(&stack, &legacy, &running("0.1.0")).unwrap();
    let versions: Vec<String> = desired
        .children
        .iter()
        .map(|child| {
            child.manifest(&legacy).unwrap()["apiVersion"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(versions.contains(&"autoscaling/v2beta2".to_owned()));
    assert!(versions.contains(&"policy/v1beta1".to_owned()));
    assert!(!versions.contains(&"autoscaling/v2".to_owned()));

    let none = ServedApis {
        autoscaling: None,
        disruption: Some(DisruptionApi::V1),
        ..ServedApis::CURRENT
    };
    let desired = render(&stack, &none, &running("0.1.0")).unwrap();
    assert_eq!(desired.unserved, ["HorizontalPodAutoscaler"]);
    assert_eq!(deployments(&desired).len(), 3, "the rest is still rendered");
}

#[test]
fn broken_rules_are_errors_naming_their_keys() {
    let mut stack = quickstart();
    stack.spec.config.routes.get_mut("echo").unwrap().service = "nowhere".into();
    stack.spec.main.autoscaling.min_replicas = 9;
    stack.spec.main.autoscaling.max_replicas = 3;
    let Err(RenderError::InvalidConfig(problems)) =
        render(&stack, &ServedApis::CURRENT, &Rollout::default())
    else {
        panic!("rendered a broken spec");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("main.autoscaling: minReplicas (9)")),
        "{problems:?}"
    );
    // Only the autoscaling rule is reported first; fix it and the config's rule shows.
    stack.spec.main.autoscaling.max_replicas = 10;
    let Err(RenderError::InvalidConfig(problems)) =
        render(&stack, &ServedApis::CURRENT, &Rollout::default())
    else {
        panic!("rendered a broken spec");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("config.routes.echo.service")),
        "{problems:?}"
    );

    let mut unnamed = quickstart();
    unnamed.metadata.namespace = None;
    assert_eq!(
        render(&unnamed, &ServedApis::CURRENT, &Rollout::default()),
        Err(RenderError::Unnamed)
    );
}

#[test]
fn the_operator_owned_settings_are_set_and_the_url_never_written() {
    let mut stack = quickstart();
    stack.spec.config.server.grpc_addr = "127.0.0.1:1".parse().unwrap();
    stack.spec.config.database.url = "postgres://u:secret@db/app".into();
    stack.spec.observability.log_level = Some("debug".into());
    let desired = steady(&stack);
    let Some(Child::ConfigMap(map)) = desired
        .children
        .iter()
        .find(|c| matches!(c, Child::ConfigMap(_)))
    else {
        panic!("no ConfigMap");
    };
    let file = &map.data.as_ref().unwrap()[CONFIG_FILE];
    assert!(file.contains("grpcAddr = \"0.0.0.0:8080\""), "{file}");
    assert!(
        !file.contains("secret"),
        "the database URL leaked into the ConfigMap"
    );
    assert!(
        file.contains("endpoint = \"http://shop-auth.appstack.svc:8080\""),
        "{file}"
    );
    assert!(file.contains("filter = \"debug\""), "{file}");
}

fn env_of(deployment: &Deployment) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    container_of(deployment).env.clone().unwrap()
}

#[test]
fn traced_pods_say_which_stack_and_namespace_their_spans_come_from() {
    let mut stack = quickstart();
    stack.spec.observability.otlp_endpoint = Some("http://collector:4317".into());
    let desired = steady(&stack);
    for deployment in deployments(&desired) {
        let env = env_of(deployment);
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
            Some("http://collector:4317")
        );
        assert!(value("OTEL_SERVICE_NAME").unwrap().starts_with("appstack-"));
        let namespace = stack.metadata.namespace.clone().unwrap();
        assert_eq!(
            value("OTEL_RESOURCE_ATTRIBUTES"),
            Some(format!(
                "service.namespace={},k8s.namespace.name={namespace}",
                stack.metadata.name.clone().unwrap()
            ))
        );
    }
    // The collector's port is let out of the stack's egress policy.
    let egress = desired
        .children
        .iter()
        .find_map(|child| match child {
            Child::NetworkPolicy(policy)
                if policy.metadata.name.as_deref() == Some("shop-egress") =>
            {
                Some(policy.clone())
            }
            _ => None,
        })
        .unwrap();
    let ports: Vec<_> = egress
        .spec
        .unwrap()
        .egress
        .unwrap()
        .iter()
        .flat_map(|rule| rule.ports.clone().unwrap_or_default())
        .filter_map(|port| port.port)
        .collect();
    assert!(ports.contains(&IntOrString::Int(4317)), "{ports:?}");
    // Untraced: none of them.
    for deployment in deployments(&steady(&quickstart())) {
        assert!(
            env_of(deployment)
                .iter()
                .all(|e| !e.name.starts_with("OTEL_"))
        );
    }
}

/// `deploy/examples/<name>.yaml` renders to `deploy/examples/rendered/<name>.yaml`
/// (`UPDATE_GOLDEN=1` rewrites them): a change to what the operator applies shows in review.
#[test]
fn the_examples_render_to_their_golden_files() {
    let rendered_dir = examples_dir().join("rendered");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        seen += 1;
        let stack: AppStack =
            serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let desired = steady(&stack);
        let yaml = to_yaml(&desired, &ServedApis::CURRENT).unwrap();
        let golden = rendered_dir.join(path.file_name().unwrap());
        if update {
            std::fs::create_dir_all(&rendered_dir).unwrap();
            std::fs::write(&golden, &yaml).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            expected == yaml,
            "{} differs from its render: run `UPDATE_GOLDEN=1 cargo test -p appstack-operator` and review the diff",
            golden.display()
        );
    }
    assert!(seen >= 2, "the examples folder lost its examples");
}

fn with_keda() -> ServedApis {
    ServedApis {
        keda: true,
        ..ServedApis::CURRENT
    }
}

fn queue_scaled() -> AppStack {
    let mut stack = quickstart();
    stack.spec.worker.autoscaling.queue = Some(crate::crd::QueueScalingSpec::default());
    stack
}

#[test]
fn with_keda_the_worker_scales_on_its_queue_instead_of_cpu() {
    let stack = queue_scaled();
    let desired = render(&stack, &with_keda(), &running(&stack.spec.version)).unwrap();
    assert!(desired.unserved.is_empty(), "{:?}", desired.unserved);
    let hpas: Vec<&str> = desired
        .children
        .iter()
        .filter(|c| matches!(c, Child::Autoscaler(_)))
        .map(Child::name)
        .collect();
    assert_eq!(hpas, ["shop-main", "shop-auth"], "the worker kept its HPA");
    let scaled = desired
        .children
        .iter()
        .find_map(|c| match c {
            Child::ScaledObject(s) => Some(s),
            _ => None,
        })
        .expect("no ScaledObject");
    assert_eq!(scaled.spec.scale_target_ref.name, "shop-worker");
    assert_eq!(
        scaled.spec.min_replica_count,
        stack.spec.worker.autoscaling.min_replicas
    );
    assert_eq!(
        scaled.spec.max_replica_count,
        stack.spec.worker.autoscaling.max_replicas
    );
    let triggers: Vec<(&str, &str, &str)> = scaled
        .spec
        .triggers
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.metadata["targetQueryValue"].as_str(),
                t.metric_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        triggers,
        [
            ("jobs", "20", "AverageValue"),
            ("oldest-ready-age", "30", "Value")
        ]
    );
    // The URL reaches KEDA from the stack's own Secret, never written into the object.
    let position = |wanted: fn(&Child) -> bool| desired.children.iter().position(wanted);
    let authentication = desired
        .children
        .iter()
        .find_map(|c| match c {
            Child::TriggerAuthentication(a) => Some(a),
            _ => None,
        })
        .expect("no TriggerAuthentication");
    let reference = &authentication.spec.secret_target_ref[0];
    assert_eq!(
        (
            reference.parameter.as_str(),
            reference.name.as_str(),
            reference.key.as_str()
        ),
        ("connection", "shop-db-app", "uri")
    );
    assert!(
        position(|c| matches!(c, Child::TriggerAuthentication(_)))
            < position(|c| matches!(c, Child::ScaledObject(_))),
        "the ScaledObject is applied before what it refers to"
    );
    // The Deployment leaves its replica count to the autoscaler.
    let worker = deployments(&desired)
        .into_iter()
        .find(|d| d.metadata.name.as_deref() == Some("shop-worker"))
        .unwrap();
    assert_eq!(worker.spec.as_ref().unwrap().replicas, None);
}

#[test]
fn scale_to_zero_sets_no_minimum_and_behavior_passes_through() {
    let mut stack = queue_scaled();
    if let Some(queue) = stack.spec.worker.autoscaling.queue.as_mut() {
        queue.scale_to_zero = true;
        queue.cooldown_seconds = 60;
    }
    stack.spec.worker.autoscaling.behavior = Some(
        serde_json::from_value(serde_json::json!({
            "scaleDown": {"stabilizationWindowSeconds": 120}
        }))
        .unwrap(),
    );
    let desired = render(&stack, &with_keda(), &running(&stack.spec.version)).unwrap();
    let manifest = desired
        .children
        .iter()
        .find(|c| matches!(c, Child::ScaledObject(_)))
        .unwrap()
        .manifest(&with_keda())
        .unwrap();
    assert_eq!(manifest["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(manifest["spec"]["minReplicaCount"], 0);
    assert_eq!(manifest["spec"]["cooldownPeriod"], 60);
    assert_eq!(
        manifest["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        120
    );
}

#[test]
fn without_keda_the_worker_keeps_its_cpu_hpa_and_the_stack_says_so() {
    let stack = queue_scaled();
    let desired = steady(&stack);
    assert!(
        kinds(&desired).contains(&("HorizontalPodAutoscaler", "shop-worker".into())),
        "{:?}",
        kinds(&desired)
    );
    assert!(
        !desired
            .children
            .iter()
            .any(|c| matches!(c, Child::ScaledObject(_) | Child::TriggerAuthentication(_)))
    );
    assert_eq!(desired.unserved.len(), 1);
    assert!(desired.unserved[0].contains("scales on CPU"));
    // Queue scaling asks nothing of a stack whose worker autoscaling is off.
    let mut off = queue_scaled();
    off.spec.worker.autoscaling.enabled = false;
    assert!(steady(&off).unserved.is_empty());
}

#[test]
fn queue_scaling_on_main_is_an_invalid_spec() {
    let mut stack = quickstart();
    stack.spec.main.autoscaling.queue = Some(crate::crd::QueueScalingSpec::default());
    let error = render(&stack, &with_keda(), &running(&stack.spec.version)).unwrap_err();
    assert!(
        error.to_string().contains("main.autoscaling.queue"),
        "{error}"
    );
}

fn with_ingress(gateway: bool) -> AppStack {
    let mut stack = quickstart();
    stack.spec.ingress = Some(crate::crd::IngressSpec {
        host: "api.shop.example".into(),
        class_name: Some("alb".into()),
        annotations: [(
            "alb.ingress.kubernetes.io/backend-protocol-version".to_owned(),
            "GRPC".to_owned(),
        )]
        .into(),
        tls_secret_name: Some("shop-tls".into()),
        gateway: gateway.then(|| crate::crd::GatewayRef {
            name: "public".into(),
            namespace: Some("gateways".into()),
            section_name: Some("https".into()),
        }),
    });
    stack
}

#[test]
fn an_ingress_sends_every_grpc_path_of_the_host_to_main() {
    let desired = steady(&with_ingress(false));
    assert!(desired.unserved.is_empty());
    let manifest = desired
        .children
        .iter()
        .find(|c| matches!(c, Child::Ingress(_)))
        .expect("no Ingress")
        .manifest(&ServedApis::CURRENT)
        .unwrap();
    assert_eq!(manifest["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(manifest["metadata"]["name"], "shop-main");
    assert_eq!(
        manifest["metadata"]["annotations"]["alb.ingress.kubernetes.io/backend-protocol-version"],
        "GRPC"
    );
    let spec = &manifest["spec"];
    assert_eq!(spec["ingressClassName"], "alb");
    assert_eq!(spec["tls"][0]["secretName"], "shop-tls");
    let rule = &spec["rules"][0];
    assert_eq!(rule["host"], "api.shop.example");
    let path = &rule["http"]["paths"][0];
    assert_eq!(
        (&path["path"], &path["pathType"]),
        (&"/".into(), &"Prefix".into())
    );
    assert_eq!(path["backend"]["service"]["name"], "shop-main");
    assert_eq!(path["backend"]["service"]["port"]["name"], "grpc");
}

#[test]
fn a_gateway_gets_a_grpc_route_where_served_and_an_ingress_elsewhere() {
    let stack = with_ingress(true);
    let apis = ServedApis {
        grpc_route: Some(GrpcRouteApi::V1alpha2),
        ..ServedApis::CURRENT
    };
    let desired = render(&stack, &apis, &running(&stack.spec.version)).unwrap();
    assert!(
        !desired
            .children
            .iter()
            .any(|c| matches!(c, Child::Ingress(_)))
    );
    let manifest = desired
        .children
        .iter()
        .find(|c| matches!(c, Child::GrpcRoute(_)))
        .expect("no GRPCRoute")
        .manifest(&apis)
        .unwrap();
    assert_eq!(manifest["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
    assert_eq!(manifest["kind"], "GRPCRoute");
    let spec = &manifest["spec"];
    assert_eq!(
        spec["parentRefs"][0],
        serde_json::json!({"name": "public", "namespace": "gateways", "sectionName": "https"})
    );
    assert_eq!(spec["hostnames"][0], "api.shop.example");
    assert_eq!(
        spec["rules"][0]["backendRefs"][0],
        serde_json::json!({"name": "shop-main", "port": 8080})
    );

    // No Gateway API: the Ingress, and a condition saying why.
    let fallback = steady(&stack);
    assert!(
        fallback
            .children
            .iter()
            .any(|c| matches!(c, Child::Ingress(_)))
    );
    assert_eq!(fallback.unserved.len(), 1);
    assert!(fallback.unserved[0].contains("GRPCRoute"));
}
