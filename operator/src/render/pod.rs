//! The pod every component and the migration Job run: restricted security, the config
//! file, the database URL from its Secret (as a file).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_file::{
    ADMIN_PORT, CONFIG_DIR, CONFIG_FILE, DATABASE_DIR, DATABASE_URL_FILE, GRPC_PORT, KEYS_DIR,
};
use super::names::Owner;
use crate::crd::{AppStackSpec, ComponentSpec};

/// The non-root user and group of the image.
pub const RUN_AS: i64 = 65532;

/// What differs between the pods.
pub(crate) struct PodInput<'a> {
    pub spec: &'a AppStackSpec,
    pub owner: &'a Owner,
    /// `appstack <role>`.
    pub role: &'a str,
    /// The image tag.
    pub version: &'a str,
    /// Per-component settings; `None` for the migration Job.
    pub component: Option<&'a ComponentSpec>,
    /// Mount auth's signing keys.
    pub signing_keys: bool,
    /// Serving (ports and probes) rather than a run-to-completion Job.
    pub serves: bool,
    /// `terminationGracePeriodSeconds`.
    pub grace_seconds: Option<i64>,
}

pub(crate) fn pod_spec(input: &PodInput<'_>) -> PodSpec {
    let spec = input.spec;
    let mut env = vec![
        EnvVar {
            name: "APPSTACK_CONFIG".into(),
            value: Some(format!("{CONFIG_DIR}/{CONFIG_FILE}")),
            ..EnvVar::default()
        },
        // A file, not `DATABASE_URL`: a Secret in the environment shows in
        // `/proc/<pid>/environ` and in every `kubectl describe` of the pod.
        EnvVar {
            name: "DATABASE_URL_FILE".into(),
            value: Some(format!("{DATABASE_DIR}/{DATABASE_URL_FILE}")),
            ..EnvVar::default()
        },
    ];
    if let Some(endpoint) = &spec.observability.otlp_endpoint {
        env.push(EnvVar {
            name: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            value: Some(endpoint.clone()),
            ..EnvVar::default()
        });
        env.push(EnvVar {
            name: "OTEL_SERVICE_NAME".into(),
            value: Some(format!("appstack-{}", input.role)),
            ..EnvVar::default()
        });
        // Which stack a span came from: several stacks share one collector, and every
        // stack's main is `appstack-main`. Names are DNS labels: no `,` or `=` to escape.
        env.push(EnvVar {
            name: "OTEL_RESOURCE_ATTRIBUTES".into(),
            value: Some(format!(
                "service.namespace={},k8s.namespace.name={}",
                input.owner.name, input.owner.namespace
            )),
            ..EnvVar::default()
        });
    }
    if let Some(component) = input.component {
        env.extend(component.env.iter().cloned());
    }

    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "database".into(),
            mount_path: DATABASE_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: input.owner.child_name("config"),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "database".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(spec.database.secret_name.clone()),
                items: Some(vec![KeyToPath {
                    key: spec.database.key.clone(),
                    path: DATABASE_URL_FILE.into(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if input.signing_keys {
        mounts.push(VolumeMount {
            name: "signing-keys".into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "signing-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(super::names::signing_keys_name(&input.owner.name)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let probe = |path: &str, failure_threshold: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    };
    let (ports, liveness, readiness, startup) = if input.serves {
        (
            Some(vec![
                ContainerPort {
                    name: Some("grpc".into()),
                    container_port: i32::from(GRPC_PORT),
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("admin".into()),
                    container_port: i32::from(ADMIN_PORT),
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
            ]),
            Some(probe("/healthz", 3)),
            Some(probe("/readyz", 2)),
            // Up to a minute to start (the pool, the first JWKS fetch) before liveness counts.
            Some(probe("/healthz", 12)),
        )
    } else {
        (None, None, None, None)
    };

    let container = Container {
        name: "appstack".into(),
        image: Some(format!("{}:{}", spec.image, input.version)),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(vec![input.role.to_owned()]),
        env: Some(env),
        ports,
        liveness_probe: liveness,
        readiness_probe: readiness,
        startup_probe: startup,
        resources: Some(
            input
                .component
                .and_then(|c| c.resources.clone())
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let component = input.component;
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        service_account_name: Some(input.owner.child_name(input.role)),
        // The services never call the Kubernetes API; IRSA / Pod Identity mount their own.
        automount_service_account_token: Some(false),
        // No `<SERVICE>_PORT`-style variables: every `APPSTACK_*` variable is configuration,
        // so a Service named `appstack-…` in the namespace (the simulator of the kind guide,
        // say) made every pod refuse to start (found on the one-box cluster).
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: input.grace_seconds,
        node_selector: component
            .filter(|c| !c.node_selector.is_empty())
            .map(|c| c.node_selector.clone()),
        tolerations: component
            .filter(|c| !c.tolerations.is_empty())
            .map(|c| c.tolerations.clone()),
        restart_policy: (!input.serves).then(|| "Never".to_owned()),
        ..PodSpec::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// Requests that let the scheduler and the HPA work, a memory limit against leaks.
pub(crate) fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("512Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}
