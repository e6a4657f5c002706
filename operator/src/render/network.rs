//! NetworkPolicies: who may call each component, and where the stack's pods may connect.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_file::{ADMIN_PORT, GRPC_PORT};
use super::names::{Component, Owner, STACK_LABEL};
use crate::crd::AppStackSpec;

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn pods(owner: &Owner, component: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(owner.selector(component)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Anywhere (no `from`/`to`): the admin port is scraped by Prometheus, probed by kubelets.
fn ingress(
    ports: Vec<NetworkPolicyPort>,
    from: Option<Vec<NetworkPolicyPeer>>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(ports),
    }
}

/// The ingress policy of `component`.
fn ingress_policy(spec: &AppStackSpec, owner: &Owner, component: Component) -> NetworkPolicy {
    let role = component.role();
    let grpc_from = match component {
        // Clients: every namespace, or those listed.
        Component::Main => {
            let namespaces = &spec.network_policy.main_ingress_namespaces;
            (!namespaces.is_empty()).then(|| {
                vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: "kubernetes.io/metadata.name".into(),
                            operator: "In".into(),
                            values: Some(namespaces.clone()),
                        }]),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]
            })
        }
        // Only main and the worker fetch keys and verify through auth.
        Component::Auth => Some(vec![pods(owner, "main"), pods(owner, "worker")]),
        // WorkerAdmin: from the stack's own pods (main) and the namespace (admins' tools).
        Component::Worker => Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]),
    };
    NetworkPolicy {
        metadata: owner.meta(owner.child_name(&format!("{role}-ingress")), role),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(owner.selector(role)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                ingress(vec![tcp(GRPC_PORT)], grpc_from),
                ingress(vec![tcp(ADMIN_PORT)], None),
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The egress policy of every pod of the stack: DNS, the database, auth, the worker's admin
/// API (for main's front door), and the ports of
/// the declared external services and of the trace collector (a NetworkPolicy cannot name
/// hosts, so those ports to any address).
fn egress_policy(spec: &AppStackSpec, owner: &Owner) -> NetworkPolicy {
    let dns = NetworkPolicyEgressRule {
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".into()),
                ..NetworkPolicyPort::default()
            },
            tcp(53),
        ]),
        to: None,
    };
    let database_port = u16::try_from(spec.network_policy.database_port).unwrap_or(5432);
    let mut rules = vec![
        dns,
        NetworkPolicyEgressRule {
            ports: Some(vec![tcp(database_port)]),
            to: None,
        },
        NetworkPolicyEgressRule {
            ports: Some(vec![tcp(GRPC_PORT), tcp(ADMIN_PORT)]),
            to: Some(vec![pods(owner, "auth")]),
        },
        // main's front door forwards the admin API's JSON routes to the worker.
        NetworkPolicyEgressRule {
            ports: Some(vec![tcp(GRPC_PORT)]),
            to: Some(vec![pods(owner, "worker")]),
        },
    ];
    // The trace collector too: a policy that let spans out nowhere would lose them silently.
    let external: BTreeSet<u16> = spec
        .config
        .external_services
        .values()
        .map(|service| service.endpoint.as_str())
        .chain(spec.observability.otlp_endpoint.as_deref())
        .filter_map(endpoint_port)
        .collect();
    if !external.is_empty() {
        rules.push(NetworkPolicyEgressRule {
            ports: Some(external.into_iter().map(tcp).collect()),
            to: None,
        });
    }
    NetworkPolicy {
        metadata: owner.meta(owner.child_name("egress"), "network"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [(STACK_LABEL.to_owned(), owner.name.clone())]
                        .into_iter()
                        .collect(),
                ),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The stack's NetworkPolicies, when enabled.
pub(crate) fn network_policies(spec: &AppStackSpec, owner: &Owner) -> Vec<NetworkPolicy> {
    if !spec.network_policy.enabled {
        return Vec::new();
    }
    let mut policies: Vec<NetworkPolicy> = Component::ALL
        .into_iter()
        .map(|component| ingress_policy(spec, owner, component))
        .collect();
    policies.push(egress_policy(spec, owner));
    policies
}

/// The TCP port of an `http(s)://host[:port]/…` URL.
pub(crate) fn endpoint_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // `[v6]:port` or `host:port`.
    let port = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            if host.starts_with('[') && !host.ends_with(']') {
                None
            } else {
                Some(port)
            }
        }
        _ => None,
    };
    match port {
        Some(port) => port.parse().ok(),
        None => match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_port;

    #[test]
    fn ports_come_from_the_url_or_its_scheme() {
        assert_eq!(endpoint_port("http://sim:7070/x"), Some(7070));
        assert_eq!(endpoint_port("https://api.example.com/v1"), Some(443));
        assert_eq!(endpoint_port("http://api.example.com"), Some(80));
        assert_eq!(endpoint_port("http://[::1]:9000/"), Some(9000));
        assert_eq!(endpoint_port("http://[::1]/"), Some(80));
        assert_eq!(endpoint_port("http://u:p@h:81/"), Some(81));
        assert_eq!(endpoint_port("ftp://h/"), None);
        assert_eq!(endpoint_port("nonsense"), None);
    }
}
