//! main's API from outside the cluster: an Ingress to main's gRPC port, or a GRPCRoute on a
//! Gateway where the Gateway API serves GRPCRoute.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};

use super::config_file::GRPC_PORT;
use super::external_kinds::{BackendRef, GrpcRoute, GrpcRouteRule, GrpcRouteSpec, ParentRef};
use super::names::{Component, Owner};
use crate::crd::IngressSpec;

/// The Ingress: every path of `host` to main's `grpc` port.
pub(crate) fn ingress(spec: &IngressSpec, owner: &Owner) -> Ingress {
    let role = Component::Main.role();
    let mut metadata = owner.meta(owner.child_name(role), role);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        // gRPC paths are `/package.Service/Method`: one prefix takes them all.
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: owner.child_name(role),
                                port: Some(ServiceBackendPort {
                                    name: Some("grpc".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        ..Ingress::default()
    }
}

/// The GRPCRoute, when the spec names a Gateway.
pub(crate) fn grpc_route(spec: &IngressSpec, owner: &Owner) -> Option<GrpcRoute> {
    let gateway = spec.gateway.as_ref()?;
    let role = Component::Main.role();
    let mut metadata = owner.meta(owner.child_name(role), role);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Some(GrpcRoute {
        metadata,
        spec: GrpcRouteSpec {
            parent_refs: vec![ParentRef {
                name: gateway.name.clone(),
                namespace: gateway.namespace.clone(),
                section_name: gateway.section_name.clone(),
            }],
            hostnames: vec![spec.host.clone()],
            rules: vec![GrpcRouteRule {
                backend_refs: vec![BackendRef {
                    name: owner.child_name(role),
                    port: i32::from(GRPC_PORT),
                }],
            }],
        },
    })
}
