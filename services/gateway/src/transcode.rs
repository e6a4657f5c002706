//! JSON to protobuf and back, with the proto3 JSON mapping (prost-reflect's serde support):
//! lowerCamelCase names out, either name in, enums by name, 64-bit integers as strings,
//! `Timestamp` as RFC 3339. Every field is written, defaults included, so a client and the
//! OpenAPI schema see the same shape whatever the values.
//!
//! The request message is assembled from three places, as `google.api.http` defines: the
//! path's variables, then the body (for `body: "*"`) or the query string (without a body).
//! A path variable wins over the same field in the body, so a URL names what it acts on.

use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};
use tonic::Status;

use crate::routes::{BodyBinding, Route};

/// How request JSON is read: unknown fields are an error, not silently dropped.
const READ: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);
/// How response JSON is written.
const WRITE: SerializeOptions = SerializeOptions::new().skip_default_fields(false);

/// The protobuf encoding of the request `route` takes, from the path's `bound` fields, the
/// raw `query` string and the `body`.
///
/// # Errors
///
/// INVALID_ARGUMENT, naming the problem: malformed JSON, a body that is not an object, an
/// unknown field or query parameter, a value of the wrong type, a body where none is taken.
pub fn request_message(
    route: &Route,
    bound: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Status> {
    let input = route.input();
    let mut fields = match route.body {
        BodyBinding::Whole => {
            if query.is_some_and(|q| !q.is_empty()) {
                return Err(Status::invalid_argument(
                    "this operation takes its fields in the JSON body, not the query string",
                ));
            }
            body_object(body)?
        }
        BodyBinding::None => {
            if !body.iter().all(u8::is_ascii_whitespace) {
                return Err(Status::invalid_argument(
                    "this operation takes no body; pass fields in the query string",
                ));
            }
            query_object(&input, query.unwrap_or_default())?
        }
    };
    for (field, value) in bound {
        let descriptor = input
            .get_field_by_name(field)
            .ok_or_else(|| Status::internal(format!("the route binds an unknown field {field}")))?;
        // Either JSON name may have come in the body; the path's value replaces both.
        fields.remove(descriptor.json_name());
        fields.insert(
            descriptor.name().to_owned(),
            scalar_json(&descriptor, value),
        );
    }
    let message = DynamicMessage::deserialize_with_options(input, Value::Object(fields), &READ)
        .map_err(|e| Status::invalid_argument(format!("request JSON: {e}")))?;
    Ok(message.encode_to_vec())
}

/// The JSON of one encoded `message` of type `output`.
///
/// # Errors
///
/// INTERNAL when the bytes do not decode as `output` (a peer broke the contract).
pub fn response_json(output: &MessageDescriptor, message: &[u8]) -> Result<Vec<u8>, Status> {
    let decoded = DynamicMessage::decode(output.clone(), message)
        .map_err(|e| Status::internal(format!("decoding the response: {e}")))?;
    let mut out = Vec::with_capacity(message.len() * 2 + 16);
    let mut serializer = serde_json::Serializer::new(&mut out);
    decoded
        .serialize_with_options(&mut serializer, &WRITE)
        .map_err(|e| Status::internal(format!("writing the response JSON: {e}")))?;
    Ok(out)
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(Status::invalid_argument(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(Status::invalid_argument(format!(
            "the request body is not JSON: {e}"
        ))),
    }
}

/// The query string as a JSON object: each parameter names a top-level field (either name);
/// a repeated field takes the parameter once per element.
fn query_object(input: &MessageDescriptor, query: &str) -> Result<Map<String, Value>, Status> {
    let mut fields = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let descriptor = input
            .get_field_by_name(&key)
            .or_else(|| input.get_field_by_json_name(&key))
            .ok_or_else(|| Status::invalid_argument(format!("unknown query parameter {key:?}")))?;
        if descriptor.is_map() || (!descriptor.is_list() && is_message(&descriptor)) {
            return Err(Status::invalid_argument(format!(
                "query parameter {key:?} names a field that cannot come from a query string"
            )));
        }
        let element = scalar_json(&descriptor, &value);
        let name = descriptor.name().to_owned();
        if descriptor.is_list() {
            match fields
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(element),
                _ => return Err(Status::internal("a list field held a scalar")),
            }
        } else if fields.insert(name, element).is_some() {
            return Err(Status::invalid_argument(format!(
                "query parameter {key:?} is given twice"
            )));
        }
    }
    Ok(fields)
}

fn is_message(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(_))
}

/// A text value as the JSON the field's kind reads: booleans as JSON booleans, everything
/// else as a string (the mapping reads numbers, enums and well-known types from strings).
fn scalar_json(field: &FieldDescriptor, value: &str) -> Value {
    match field.kind() {
        Kind::Bool => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        _ => Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteTable;
    use appstack_proto::main::v1 as pb;
    use http::Method;

    fn table() -> RouteTable {
        RouteTable::new(
            appstack_proto::FILE_DESCRIPTOR_SET,
            &[
                "appstack.main.v1.RequestService",
                "appstack.worker.v1.WorkerAdmin",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn transcode(
        verb: Method,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> Result<Vec<u8>, Status> {
        let table = table();
        let (route, bound) = table
            .resolve(&verb, path)
            .unwrap_or_else(|e| panic!("{e:?}"));
        request_message(route, &bound, query, body.as_bytes())
    }

    #[test]
    fn a_submit_body_becomes_the_protobuf_request() {
        let bytes = transcode(
            Method::POST,
            "/v1/requests",
            None,
            r#"{"kind":"echo","payload":"{\"a\":1}","idempotency_key":"k1","mode":"MODE_ASYNC","deadline":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let request = pb::SubmitRequest::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.kind, "echo");
        assert_eq!(
            request.idempotency_key, "k1",
            "the proto name is accepted beside idempotencyKey"
        );
        assert_eq!(request.mode(), pb::Mode::Async);
        assert_eq!(request.deadline.map(|d| d.seconds), Some(1_893_456_000));
    }

    #[test]
    fn path_variables_win_over_the_body() {
        let bytes = transcode(
            Method::POST,
            "/v1/requests/from-path:cancel",
            None,
            r#"{"id":"from-body"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let request = pb::CancelRequest::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.id, "from-path");
        let empty = transcode(Method::POST, "/v1/requests/x:cancel", None, "")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pb::CancelRequest::decode(empty.as_slice())
                .map(|r| r.id)
                .ok(),
            Some("x".into())
        );
    }

    #[test]
    fn query_parameters_fill_repeated_enum_and_number_fields() {
        let bytes = transcode(
            Method::GET,
            "/v1/requests",
            Some("pageSize=20&statuses=STATUS_DEAD&statuses=STATUS_QUEUED&kind=echo"),
            "",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let request = pb::ListRequest::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.page_size, 20);
        assert_eq!(
            request.statuses,
            vec![pb::Status::Dead as i32, pb::Status::Queued as i32]
        );
        assert_eq!(request.kind, "echo");
    }

    #[test]
    fn bad_input_is_invalid_argument_with_a_reason() {
        let cases = [
            (Method::POST, "/v1/requests", None, "{not json"),
            (Method::POST, "/v1/requests", None, "[1,2]"),
            (
                Method::POST,
                "/v1/requests",
                None,
                r#"{"kind":"echo","surprise":1}"#,
            ),
            (
                Method::POST,
                "/v1/requests",
                None,
                r#"{"mode":"MODE_NONSENSE"}"#,
            ),
            (Method::POST, "/v1/requests", None, r#"{"kind":7}"#),
            (Method::POST, "/v1/requests", Some("kind=echo"), "{}"),
            (Method::GET, "/v1/requests", Some("pageSize=lots"), ""),
            (Method::GET, "/v1/requests", Some("nope=1"), ""),
            (Method::GET, "/v1/requests", Some("kind=a&kind=b"), ""),
            (Method::GET, "/v1/requests", None, r#"{"kind":"echo"}"#),
            (Method::GET, "/v1/requests", Some("pageSize=-1"), ""),
        ];
        for (verb, path, query, body) in cases {
            let status = transcode(verb.clone(), path, query, body)
                .err()
                .unwrap_or_else(|| panic!("{verb} {path} {query:?} {body} was accepted"));
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{path} {query:?} {body}"
            );
            assert!(!status.message().is_empty());
        }
    }

    #[test]
    fn responses_are_written_with_every_field_and_canonical_names() {
        let response = pb::SubmitResponse {
            request: Some(pb::Request {
                id: "r1".into(),
                status: pb::Status::Queued as i32,
                ..Default::default()
            }),
            replayed: false,
        };
        let table = table();
        let (route, _) = table
            .resolve(&Method::POST, "/v1/requests")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let json = response_json(&route.output(), &response.encode_to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        let value: Value = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["request"]["status"], "STATUS_QUEUED");
        assert_eq!(value["request"]["idempotencyKey"], "");
        assert_eq!(value["replayed"], false);
        assert!(response_json(&route.output(), &[0xff, 0xff]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_answered_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let table = table();
            let (route, bound) = table.resolve(&Method::POST, "/v1/requests").unwrap_or_else(|e| panic!("{e:?}"));
            let _ = request_message(route, &bound, None, &body);
        }

        #[test]
        fn any_query_is_answered_without_panicking(query in "\\PC{0,80}") {
            let table = table();
            let (route, bound) = table.resolve(&Method::GET, "/v1/requests").unwrap_or_else(|e| panic!("{e:?}"));
            let _ = request_message(route, &bound, Some(&query), b"");
        }
    }
}
