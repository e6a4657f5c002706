//! What one server serves, from its descriptor sets: every method path of the services it
//! registered, with the request message's shape. Built once at start; used to label metrics,
//! answer UNIMPLEMENTED for anything else, and check request text before decoding.

use std::collections::{HashMap, HashSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// One served method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// Fully qualified service, e.g. `appstack.auth.v1.AuthService`.
    pub service: String,
    /// Method name, e.g. `Login`.
    pub method: String,
    /// Fully qualified request message, e.g. `appstack.auth.v1.LoginRequest`.
    pub input_type: String,
    /// True when the client sends a stream of messages.
    pub client_streaming: bool,
}

/// How the wire checker treats one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A `string`: must be UTF-8 without NUL.
    Text,
    /// A nested message of this (fully qualified) type.
    Message(String),
    /// A (deprecated) group of this type.
    Group(String),
    /// Anything else: numbers, bytes, enums, packed repeated scalars.
    Other,
}

/// One field of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldShape {
    /// The field's name in the `.proto`, as clients see it in errors.
    pub name: String,
    /// How it is checked.
    pub kind: FieldKind,
}

/// The fields of one message type, by field number.
pub type MessageShape = HashMap<u32, FieldShape>;

/// The served methods and the shapes of every message the descriptor sets declare.
#[derive(Clone, Debug, Default)]
pub struct MethodTable {
    methods: HashMap<String, MethodInfo>,
    messages: HashMap<String, MessageShape>,
}

impl MethodTable {
    /// The methods of the services named in `served` (fully qualified), as declared in the
    /// encoded `descriptor_sets`. A set that does not decode contributes nothing (they are
    /// compiled into the binary).
    pub fn new(descriptor_sets: &[&[u8]], served: &[&str]) -> Self {
        let served: HashSet<&str> = served.iter().copied().collect();
        let mut table = Self::default();
        for set in descriptor_sets {
            let Ok(set) = FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for message in &file.message_type {
                    table.add_message(&package, message);
                }
                for service in file.service {
                    let full = qualify(&package, service.name());
                    if !served.contains(full.as_str()) {
                        continue;
                    }
                    for method in &service.method {
                        let info = MethodInfo {
                            service: full.clone(),
                            method: method.name().to_owned(),
                            input_type: method.input_type().trim_start_matches('.').to_owned(),
                            client_streaming: method.client_streaming(),
                        };
                        table
                            .methods
                            .insert(format!("/{full}/{}", method.name()), info);
                    }
                }
            }
        }
        table
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let full = qualify(scope, message.name());
        let fields = message
            .field
            .iter()
            .map(|field| {
                let type_name = field.type_name().trim_start_matches('.').to_owned();
                let kind = match field.r#type() {
                    Type::String => FieldKind::Text,
                    Type::Message => FieldKind::Message(type_name),
                    Type::Group => FieldKind::Group(type_name),
                    _ => FieldKind::Other,
                };
                let number = u32::try_from(field.number()).unwrap_or(0);
                (
                    number,
                    FieldShape {
                        name: field.name().to_owned(),
                        kind,
                    },
                )
            })
            .collect();
        for nested in &message.nested_type {
            self.add_message(&full, nested);
        }
        self.messages.insert(full, fields);
    }

    /// The served method at `path` (`/pkg.Service/Method`).
    pub fn method(&self, path: &str) -> Option<&MethodInfo> {
        self.methods.get(path)
    }

    /// The fields of the message type `name` (fully qualified, no leading dot).
    pub fn message(&self, name: &str) -> Option<&MessageShape> {
        self.messages.get(name)
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> MethodTable {
        MethodTable::new(
            &[
                appstack_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            &["appstack.auth.v1.AuthService", "grpc.health.v1.Health"],
        )
    }

    #[test]
    fn only_served_services_have_methods() {
        let table = table();
        let login = table.method("/appstack.auth.v1.AuthService/Login").cloned();
        assert_eq!(
            login,
            Some(MethodInfo {
                service: "appstack.auth.v1.AuthService".into(),
                method: "Login".into(),
                input_type: "appstack.auth.v1.LoginRequest".into(),
                client_streaming: false,
            })
        );
        assert!(table.method("/grpc.health.v1.Health/Check").is_some());
        assert!(
            table
                .method("/appstack.main.v1.RequestService/Submit")
                .is_none()
        );
        assert!(table.method("/appstack.auth.v1.AuthService/Nope").is_none());
    }

    #[test]
    fn message_shapes_name_their_fields() {
        let table = table();
        let login = table.message("appstack.auth.v1.LoginRequest").unwrap();
        assert!(
            login
                .values()
                .any(|f| f.name == "email" && f.kind == FieldKind::Text)
        );
    }
}
