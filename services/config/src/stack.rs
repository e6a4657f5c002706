//! [`StackConfig`]: everything an `appstack` process reads, and the rules across sections.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::format as show;
use crate::rules::{NAME_PATTERN, is_name};
use crate::{
    AuthConfig, DatabaseConfig, ExternalServiceConfig, FrontDoorConfig, LogConfig, Problems,
    QueueConfig, RequestsConfig, RouteConfig, ServerConfig, Validate, WorkerConfig,
};

/// The most external services a stack declares (a bound the CRD's CEL rules need).
pub const MAX_EXTERNAL_SERVICES: usize = 256;
/// The most routes a stack declares.
pub const MAX_ROUTES: usize = 1024;

/// The configuration of every `appstack` role, one file for all: each role reads the
/// sections it needs. Every key is camelCase; `{}` (or an empty file) means all defaults,
/// which leave only `database.url` to set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
// The cross-section rule, for API servers that enforce CEL (the AppStack CRD embeds this
// type); `Validate` checks the same rule everywhere.
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.routes) || self.routes.all(kind, self.routes[kind].service == '' || (has(self.externalServices) && self.routes[kind].service in self.externalServices))",
    "message": "every route's service must be a key of externalServices"
}]))]
pub struct StackConfig {
    /// Listen addresses and gRPC limits.
    pub server: ServerConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Logs.
    pub log: LogConfig,
    /// The auth service.
    pub auth: AuthConfig,
    /// The external microservices requests are executed by, by name (`^[a-z0-9][a-z0-9._-]{0,62}$`).
    /// Default: none; at most 256.
    #[schemars(extend("maxProperties" = 256))]
    pub external_services: BTreeMap<String, ExternalServiceConfig>,
    /// Which external service executes each request kind, by kind
    /// (`^[a-z0-9][a-z0-9._-]{0,62}$`); a request of a kind not listed is refused.
    /// Default: none; at most 1024.
    #[schemars(extend("maxProperties" = 1024))]
    pub routes: BTreeMap<String, RouteConfig>,
    /// The durable queue.
    pub queue: QueueConfig,
    /// The worker.
    pub worker: WorkerConfig,
    /// Limits of the request API.
    pub requests: RequestsConfig,
    /// main's HTTP/JSON API, gRPC-Web and console.
    pub front_door: FrontDoorConfig,
}

impl Validate for StackConfig {
    fn check(&self, p: &mut Problems) {
        p.field("server", |p| self.server.check(p));
        p.field("database", |p| self.database.check(p));
        p.field("log", |p| self.log.check(p));
        p.field("auth", |p| self.auth.check(p));
        p.field("frontDoor", |p| self.front_door.check(p));
        p.field("externalServices", |p| {
            if self.external_services.len() > MAX_EXTERNAL_SERVICES {
                p.here(format_args!(
                    "at most {MAX_EXTERNAL_SERVICES} external services"
                ));
            }
            for (name, service) in &self.external_services {
                p.entry(name, |p| {
                    if !is_name(name) {
                        p.here(format_args!(
                            "external service names must match {NAME_PATTERN}"
                        ));
                    }
                    service.check(p);
                });
            }
        });
        p.field("routes", |p| {
            if self.routes.len() > MAX_ROUTES {
                p.here(format_args!("at most {MAX_ROUTES} routes"));
            }
            for (kind, route) in &self.routes {
                p.entry(kind, |p| {
                    if !is_name(kind) {
                        p.here(format_args!("route kind names must match {NAME_PATTERN}"));
                    }
                    route.check(p);
                    self.check_route_service(route, p);
                });
            }
        });
        p.field("queue", |p| self.queue.check(p));
        p.field("worker", |p| self.worker.check(p));
        p.field("requests", |p| {
            self.requests.check(p);
            let max = self.server.max_message_bytes;
            for (name, value) in [
                ("maxPayloadBytes", self.requests.max_payload_bytes),
                ("maxResultBytes", self.requests.max_result_bytes),
            ] {
                if value > max {
                    p.push(
                        name,
                        format_args!(
                            "must be at most server.maxMessageBytes ({max}), or it could not be sent"
                        ),
                    );
                }
            }
        });
    }
}

impl StackConfig {
    /// The rules between a route and the service it names, reported under the route.
    fn check_route_service(&self, route: &RouteConfig, p: &mut Problems) {
        if route.service.is_empty() {
            return;
        }
        let Some(service) = self.external_services.get(&route.service) else {
            p.push(
                "service",
                format_args!(
                    "names no declared external service {:?} (declared: {})",
                    route.service,
                    declared(&self.external_services)
                ),
            );
            return;
        };
        let per_attempt = service.resilience.timeout.per_attempt;
        if route.timeout < per_attempt {
            p.push(
                "timeout",
                format_args!(
                    "must be at least externalServices.{}.resilience.timeout.perAttempt ({}), or no attempt could use its time",
                    route.service,
                    show(per_attempt)
                ),
            );
        }
    }
}

/// The declared names, for a message: `a, b` or `none`.
fn declared(services: &BTreeMap<String, ExternalServiceConfig>) -> String {
    if services.is_empty() {
        "none".to_owned()
    } else {
        services
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
