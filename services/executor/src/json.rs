//! Checks on the JSON documents that cross the stack's edges: request payloads (from
//! callers) and results (from external services), both stored as PostgreSQL JSONB.

/// Why a document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Larger than the limit.
    #[error("is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON at all.
    #[error("is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// Holds a string with a NUL character (`\u0000`), which PostgreSQL's JSONB cannot store.
    #[error("must not contain the NUL character (\\u0000) in any string")]
    Nul,
}

/// Checks a request payload: a JSON object of at most `limit` bytes that JSONB can store.
pub fn check_payload(text: &str, limit: usize) -> Result<serde_json::Value, DocumentError> {
    let value = check_document(text, limit)?;
    match &value {
        serde_json::Value::Object(_) => Ok(value),
        other => Err(DocumentError::NotAnObject(type_name(other))),
    }
}

/// Checks a result: any JSON value of at most `limit` bytes that JSONB can store.
pub fn check_result(text: &str, limit: usize) -> Result<(), DocumentError> {
    check_document(text, limit).map(drop)
}

fn check_document(text: &str, limit: usize) -> Result<serde_json::Value, DocumentError> {
    if text.len() > limit {
        return Err(DocumentError::TooLarge {
            size: text.len(),
            limit,
        });
    }
    // serde_json refuses nesting deeper than 128 levels, so a hostile document cannot
    // exhaust the stack here (or in PostgreSQL, which would take it).
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DocumentError::NotJson(e.to_string()))?;
    // Only documents that spell `u0000` can hold a NUL; skip the walk for the others.
    if text.contains("u0000") && has_nul(&value) {
        return Err(DocumentError::Nul);
    }
    Ok(value)
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The ordering-key value at `pointer` (RFC 6901) in `payload`: a string as it is, a number
/// or boolean as its JSON text. `None` when the payload has no such member, or it is null,
/// an array or an object (which cannot order anything).
pub fn ordering_key_at(payload: &serde_json::Value, pointer: &str) -> Option<String> {
    match payload.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn payloads_must_be_objects_within_the_limit_without_nul() {
        assert!(check_payload(r#"{"a":1}"#, 100).is_ok());
        assert_eq!(
            check_payload("[1]", 100),
            Err(DocumentError::NotAnObject("an array"))
        );
        assert_eq!(
            check_payload("\"x\"", 100),
            Err(DocumentError::NotAnObject("a string"))
        );
        assert!(matches!(
            check_payload("{", 100),
            Err(DocumentError::NotJson(_))
        ));
        assert!(matches!(
            check_payload("", 100),
            Err(DocumentError::NotJson(_))
        ));
        assert_eq!(
            check_payload(r#"{"a":"0123456789"}"#, 10),
            Err(DocumentError::TooLarge {
                size: 18,
                limit: 10
            })
        );
        assert_eq!(
            check_payload(r#"{"a":"x\u0000"}"#, 100),
            Err(DocumentError::Nul)
        );
        assert_eq!(
            check_payload(r#"{"a\u0000":1}"#, 100),
            Err(DocumentError::Nul)
        );
        // An escaped backslash followed by `u0000` is no NUL.
        assert!(check_payload(r#"{"a":"\\u0000"}"#, 100).is_ok());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            check_result(&deep, 10_000),
            Err(DocumentError::NotJson(_))
        ));
    }

    #[test]
    fn ordering_keys_are_scalars_at_the_pointer() {
        let payload: serde_json::Value =
            serde_json::from_str(r#"{"a":{"b":"k1"},"n":7,"t":true,"o":{},"z":null}"#).unwrap();
        assert_eq!(ordering_key_at(&payload, "/a/b").as_deref(), Some("k1"));
        assert_eq!(ordering_key_at(&payload, "/n").as_deref(), Some("7"));
        assert_eq!(ordering_key_at(&payload, "/t").as_deref(), Some("true"));
        assert_eq!(ordering_key_at(&payload, "/o"), None);
        assert_eq!(ordering_key_at(&payload, "/z"), None);
        assert_eq!(ordering_key_at(&payload, "/missing"), None);
    }

    proptest! {
        #[test]
        fn any_text_has_an_answer(text in "\\PC{0,64}") {
            // Never panics; an accepted payload is an object.
            if let Ok(value) = check_payload(&text, 1024) {
                prop_assert!(value.is_object());
            }
        }
    }
}
