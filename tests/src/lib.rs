//! Test support for AppStack's cross-crate and end-to-end suites: a private PostgreSQL
//! ([`pg`]), a Kubernetes control plane ([`control_plane`]) and an in-process auth server on
//! loopback ([`auth_server`]), what the operator suites set up ([`operator_fixture`]), and a
//! real single-node cluster with the project's images for the end-to-end suite ([`onebox`],
//! [`images`]).

pub mod auth_server;
pub mod clients;
pub mod control_plane;
pub mod helm;
pub mod http_json;
pub mod images;
pub mod onebox;
pub mod onebox_leftovers;
pub mod operator_fixture;
pub mod otlp;
pub mod pg;
pub mod processes;
pub mod raw_grpc;
pub mod shared_tools;
pub mod stack_server;
pub mod steady_load;
pub mod tcp_proxy;
pub mod wait;
