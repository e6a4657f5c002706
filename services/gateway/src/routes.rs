//! The HTTP routes of the contract: every `google.api.http` rule of the chosen services, read
//! from the descriptor set once at start. The routes exist only there, so the JSON API, the
//! OpenAPI document and the gRPC contract cannot disagree.

use http::Method;
use prost_reflect::{DescriptorPool, MessageDescriptor, MethodDescriptor, Value};

use crate::template::{PathTemplate, TemplateError};

/// The option that binds an rpc to HTTP.
const HTTP_OPTION: &str = "google.api.http";

/// The routes could not be read from the contract (found at start).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The descriptor set does not decode.
    #[error("decoding the descriptor set: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// The `google.api.http` extension is not in the descriptor set.
    #[error("the descriptor set has no google.api.http extension")]
    NoHttpOption,
    /// A service to route is not in the descriptor set.
    #[error("service {0} is not in the descriptor set")]
    UnknownService(String),
    /// A template is malformed.
    #[error("{method}: {source}")]
    Template {
        /// The rpc.
        method: String,
        /// Why.
        source: TemplateError,
    },
    /// A rule is outside what the door implements.
    #[error("{method}: {reason}")]
    Unsupported {
        /// The rpc.
        method: String,
        /// Why.
        reason: String,
    },
    /// Two rules claim the same verb and path.
    #[error("{first} and {second} are both bound to {verb} {path}")]
    Clash {
        /// One rpc.
        first: String,
        /// The other.
        second: String,
        /// The verb.
        verb: Method,
        /// The path.
        path: String,
    },
}

/// What fills the request message besides the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyBinding {
    /// No body: the remaining fields come from the query string.
    None,
    /// The JSON body is the whole message (minus path fields).
    Whole,
}

/// One rpc reachable over HTTP.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP verb.
    pub verb: Method,
    /// The path template.
    pub template: PathTemplate,
    /// Where the rest of the request comes from.
    pub body: BodyBinding,
    /// The rpc.
    pub method: MethodDescriptor,
    /// The gRPC path: `/appstack.main.v1.RequestService/Submit`.
    pub grpc_path: String,
}

impl Route {
    /// The request message.
    pub fn input(&self) -> MessageDescriptor {
        self.method.input()
    }

    /// The response message (one per stream event for server-streaming rpcs).
    pub fn output(&self) -> MessageDescriptor {
        self.method.output()
    }

    /// Whether the rpc streams its responses (served as Server-Sent Events).
    pub fn streams(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// The gRPC service's full name.
    pub fn service(&self) -> &str {
        self.method.parent_service().full_name()
    }
}

/// The fields a path binds: (field name, decoded value), in template order.
pub type Bound = Vec<(String, String)>;

/// A request that matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// No template matches the path.
    NotFound,
    /// Templates match the path, with other verbs.
    MethodNotAllowed(Vec<Method>),
}

/// Every route of the chosen services.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    pool: DescriptorPool,
}

impl RouteTable {
    /// The routes of `services` (full names) in the encoded `descriptor_set`. An rpc without a
    /// rule is not reachable over HTTP (gRPC only).
    ///
    /// # Errors
    ///
    /// When the set does not decode, a service is missing, or a rule is malformed, clashes or
    /// uses a form the door does not implement (client streaming, `response_body`, a body
    /// naming one field, nested variables).
    pub fn new(descriptor_set: &[u8], services: &[&str]) -> Result<Self, RouteError> {
        let pool = DescriptorPool::decode(descriptor_set)?;
        let option = pool
            .get_extension_by_name(HTTP_OPTION)
            .ok_or(RouteError::NoHttpOption)?;
        let mut routes: Vec<Route> = Vec::new();
        for name in services {
            let service = pool
                .get_service_by_name(name)
                .ok_or_else(|| RouteError::UnknownService((*name).to_owned()))?;
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&option) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&option).into_owned() else {
                    continue;
                };
                let route = route_of(&method, &rule)?;
                if let Some(other) = routes
                    .iter()
                    .find(|r| r.verb == route.verb && r.template == route.template)
                {
                    return Err(RouteError::Clash {
                        first: other.method.full_name().to_owned(),
                        second: method.full_name().to_owned(),
                        verb: route.verb,
                        path: route.template.to_string(),
                    });
                }
                routes.push(route);
            }
        }
        Ok(Self { routes, pool })
    }

    /// Every route, in contract order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The descriptors the routes came from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The route for `verb` and `path`, with the path's bound fields.
    ///
    /// # Errors
    ///
    /// [`RouteMiss`] when nothing matches; `MethodNotAllowed` lists the verbs that would.
    pub fn resolve(&self, verb: &Method, path: &str) -> Result<(&Route, Bound), RouteMiss> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(bound) = route.template.matches(path) {
                if route.verb == *verb {
                    let bound = bound
                        .into_iter()
                        .map(|(field, value)| (field.to_owned(), value))
                        .collect();
                    return Ok((route, bound));
                }
                allowed.push(route.verb.clone());
            }
        }
        if allowed.is_empty() {
            Err(RouteMiss::NotFound)
        } else {
            Err(RouteMiss::MethodNotAllowed(allowed))
        }
    }
}

fn route_of(
    method: &MethodDescriptor,
    rule: &prost_reflect::DynamicMessage,
) -> Result<Route, RouteError> {
    let name = method.full_name().to_owned();
    let unsupported = |reason: &str| RouteError::Unsupported {
        method: name.clone(),
        reason: reason.to_owned(),
    };
    if method.is_client_streaming() {
        return Err(unsupported("client-streaming rpcs have no HTTP/JSON form"));
    }
    let text = |field: &str| match rule.get_field_by_name(field).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    if !text("response_body").is_empty() {
        return Err(unsupported(
            "the front door answers with the whole response; response_body is refused",
        ));
    }
    let has_more = matches!(
        rule.get_field_by_name("additional_bindings").as_deref(),
        Some(Value::List(list)) if !list.is_empty()
    );
    if has_more {
        return Err(unsupported(
            "one HTTP binding per rpc; additional_bindings are refused",
        ));
    }
    let (verb, template) = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ]
    .into_iter()
    .find_map(|(field, verb)| rule.has_field_by_name(field).then(|| (verb, text(field))))
    .ok_or_else(|| unsupported("the rule has no get, put, post, delete or patch pattern"))?;
    let template = PathTemplate::parse(&template).map_err(|source| RouteError::Template {
        method: name.clone(),
        source,
    })?;
    let input = method.input();
    for field in template.variables() {
        let bound = input.get_field_by_name(field).ok_or_else(|| {
            unsupported(&format!(
                "the path binds {field}, which the request does not have"
            ))
        })?;
        if bound.is_list()
            || bound.is_map()
            || matches!(bound.kind(), prost_reflect::Kind::Message(_))
        {
            return Err(unsupported(&format!(
                "the path binds {field}, which is not a scalar"
            )));
        }
    }
    let body = match text("body").as_str() {
        "" => BodyBinding::None,
        "*" => BodyBinding::Whole,
        _ => {
            return Err(unsupported(
                "the body is the whole message (`*`) or none; a body naming one field is refused",
            ));
        }
    };
    if body == BodyBinding::Whole && matches!(verb, Method::GET | Method::DELETE) {
        return Err(unsupported("GET and DELETE take no body"));
    }
    Ok(Route {
        verb,
        template,
        body,
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        method: method.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: [&str; 3] = [
        "appstack.main.v1.RequestService",
        "appstack.auth.v1.AuthService",
        "appstack.worker.v1.WorkerAdmin",
    ];

    fn table() -> RouteTable {
        RouteTable::new(appstack_proto::FILE_DESCRIPTOR_SET, &SERVICES)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_contract_binds_the_client_rpcs() {
        let table = table();
        let (route, bound) = table
            .resolve(&Method::POST, "/v1/requests/0190abcd:cancel")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(route.grpc_path, "/appstack.main.v1.RequestService/Cancel");
        assert_eq!(bound, vec![("id".to_owned(), "0190abcd".to_owned())]);
        let (watch, _) = table
            .resolve(&Method::GET, "/v1/requests/x/events")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(watch.streams());
        let (login, _) = table
            .resolve(&Method::POST, "/v1/auth/login")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(login.body, BodyBinding::Whole);
        assert_eq!(login.service(), "appstack.auth.v1.AuthService");
    }

    #[test]
    fn misses_say_whether_the_path_or_the_verb_is_wrong() {
        let table = table();
        assert_eq!(
            table.resolve(&Method::GET, "/v1/nothing").err(),
            Some(RouteMiss::NotFound)
        );
        assert_eq!(
            table.resolve(&Method::DELETE, "/v1/requests").err(),
            Some(RouteMiss::MethodNotAllowed(vec![Method::POST, Method::GET]))
        );
    }

    #[test]
    fn only_the_chosen_services_are_routed() {
        let table = RouteTable::new(appstack_proto::FILE_DESCRIPTOR_SET, &SERVICES[..1])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(table.resolve(&Method::POST, "/v1/auth/login").is_err());
        assert!(RouteTable::new(appstack_proto::FILE_DESCRIPTOR_SET, &["no.Such"]).is_err());
    }

    #[test]
    fn rpcs_without_a_rule_stay_grpc_only() {
        let table = RouteTable::new(
            appstack_proto::FILE_DESCRIPTOR_SET,
            &["appstack.external.v1.Processor"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(table.routes().is_empty());
    }
}
