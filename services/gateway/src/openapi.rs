//! The OpenAPI 3.0 document of the JSON routes, generated from the same descriptors and
//! `google.api.http` rules the door routes by, with the contract's comments as descriptions.
//! Schemas follow the proto3 JSON mapping the door writes: lowerCamelCase names, enums as
//! names, 64-bit integers as strings, `Timestamp` as RFC 3339, `Duration` as `"1.5s"`.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{BodyBinding, Route, RouteTable};

/// The OpenAPI version written.
const OPENAPI_VERSION: &str = "3.0.3";

/// The document of every route in `table`; operations whose gRPC path is in `public` need
/// no token.
pub fn document(table: &RouteTable, public: &BTreeSet<String>) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let mut pending: Vec<MessageDescriptor> = Vec::new();
    for route in table.routes() {
        let operation = operation(route, public.contains(&route.grpc_path), &mut pending);
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.verb.as_str().to_ascii_lowercase(), operation);
    }
    while let Some(message) = pending.pop() {
        let name = schema_name(&message);
        if schemas.contains_key(&name) {
            continue;
        }
        let schema = message_schema(&message, &mut pending);
        schemas.insert(name, schema);
    }
    schemas.insert("google.rpc.Status".into(), status_schema());
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "AppStack API",
            "version": "v1",
            "description": "The HTTP/JSON form of AppStack's gRPC contracts (appstack.main.v1, \
                appstack.auth.v1, appstack.worker.v1), generated from their google.api.http rules. \
                Bodies use the proto3 JSON mapping; errors are google.rpc.Status with the same codes \
                and details as gRPC. Streams are Server-Sent Events.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            },
        },
        "security": [ { "bearer": [] } ],
    })
}

fn operation(route: &Route, public: bool, pending: &mut Vec<MessageDescriptor>) -> Value {
    let method = &route.method;
    let service = method.parent_service();
    let (summary, description) = summary_and_description(&comments(
        method.parent_file().file_descriptor_proto(),
        method.path(),
    ));
    let input = route.input();
    let output = route.output();
    let path_fields: BTreeSet<&str> = route.template.variables().collect();
    let mut parameters = Vec::new();
    for field in &path_fields {
        if let Some(descriptor) = input.get_field_by_name(field) {
            parameters.push(json!({
                "name": field,
                "in": "path",
                "required": true,
                "description": field_description(&descriptor),
                "schema": field_schema(&descriptor, pending),
            }));
        }
    }
    let mut operation = Map::new();
    operation.insert(
        "operationId".into(),
        json!(format!("{}_{}", service.name(), method.name())),
    );
    operation.insert("tags".into(), json!([service.name()]));
    operation.insert("summary".into(), json!(summary));
    operation.insert("description".into(), json!(description));
    match route.body {
        BodyBinding::None => {
            for field in input.fields().filter(|f| !path_fields.contains(f.name())) {
                let mut parameter = json!({
                    "name": field.json_name(),
                    "in": "query",
                    "required": false,
                    "description": field_description(&field),
                    "schema": field_schema(&field, pending),
                });
                if field.is_list() {
                    parameter["style"] = json!("form");
                    parameter["explode"] = json!(true);
                }
                parameters.push(parameter);
            }
        }
        BodyBinding::Whole => {
            pending.push(input.clone());
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": false,
                    "content": { "application/json": { "schema": reference(&input) } },
                }),
            );
        }
    }
    if !parameters.is_empty() {
        operation.insert("parameters".into(), Value::Array(parameters));
    }
    pending.push(output.clone());
    let success = if route.streams() {
        json!({
            "description": format!(
                "A stream of Server-Sent Events: `message` events, each one {} as JSON, then one \
                 `end` event (a google.rpc.Status with code 0) or one `error` event (the failing \
                 google.rpc.Status).",
                output.full_name()
            ),
            "content": { "text/event-stream": { "schema": { "type": "string" } } },
        })
    } else {
        json!({
            "description": output.full_name(),
            "content": { "application/json": { "schema": reference(&output) } },
        })
    };
    operation.insert(
        "responses".into(),
        json!({
            "200": success,
            "default": {
                "description": "An error: the gRPC status as google.rpc.Status, with the HTTP status \
                    of the gRPC–HTTP mapping (400, 401, 403, 404, 409, 413, 429, 499, 500, 501, 503, 504).",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/google.rpc.Status" } } },
            },
        }),
    );
    if public {
        operation.insert("security".into(), json!([]));
    }
    Value::Object(operation)
}

fn message_schema(message: &MessageDescriptor, pending: &mut Vec<MessageDescriptor>) -> Value {
    let (_, description) = summary_and_description(&comments(
        message.parent_file().file_descriptor_proto(),
        message.path(),
    ));
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field, pending);
        let text = field_description(&field);
        if !text.is_empty() {
            schema = with_description(schema, &text);
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// `$ref` can carry no siblings in OpenAPI 3.0, so a described reference becomes `allOf`.
fn with_description(schema: Value, text: &str) -> Value {
    if schema.get("$ref").is_some() {
        json!({ "allOf": [schema], "description": text })
    } else {
        let mut schema = schema;
        schema["description"] = json!(text);
        schema
    }
}

fn field_schema(field: &FieldDescriptor, pending: &mut Vec<MessageDescriptor>) -> Value {
    if field.is_map() {
        let value = match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            other => other,
        };
        return json!({ "type": "object", "additionalProperties": kind_schema(&value, pending) });
    }
    let single = kind_schema(&field.kind(), pending);
    if field.is_list() {
        json!({ "type": "array", "items": single })
    } else {
        single
    }
}

fn kind_schema(kind: &Kind, pending: &mut Vec<MessageDescriptor>) -> Value {
    match kind {
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$" })
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$" })
        }
        Kind::Float | Kind::Double => json!({ "type": "number" }),
        Kind::Enum(descriptor) => json!({
            "type": "string",
            "enum": descriptor.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
        }),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => {
                json!({ "type": "string", "format": "date-time", "nullable": true })
            }
            "google.protobuf.Duration" => {
                json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "nullable": true })
            }
            _ => {
                pending.push(message.clone());
                json!({ "allOf": [reference(message)], "nullable": true })
            }
        },
    }
}

fn reference(message: &MessageDescriptor) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", schema_name(message)) })
}

fn schema_name(message: &MessageDescriptor) -> String {
    message.full_name().to_owned()
}

fn field_description(field: &FieldDescriptor) -> String {
    summary_and_description(&comments(
        field.parent_file().file_descriptor_proto(),
        field.path(),
    ))
    .1
}

/// The leading comment at `path` in `file`.
fn comments(file: &prost_types::FileDescriptorProto, path: &[i32]) -> String {
    file.source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|location| location.leading_comments.clone())
        .unwrap_or_default()
}

/// The first sentence as the summary, the whole comment as the description.
fn summary_and_description(comment: &str) -> (String, String) {
    let text = comment
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned();
    let summary = match text.find(". ") {
        Some(end) => text[..=end].trim().to_owned(),
        None => text.clone(),
    };
    (summary, text)
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "A gRPC status (google.rpc.Status): the code, a message, and typed details.",
        "required": ["code", "message", "details"],
        "properties": {
            "code": { "type": "integer", "format": "int32", "description": "The gRPC code (google.rpc.Code)." },
            "message": { "type": "string" },
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["@type"],
                    "properties": { "@type": { "type": "string" } },
                    "additionalProperties": true,
                },
            },
        },
    })
}
