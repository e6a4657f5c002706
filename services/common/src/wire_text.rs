//! Checks every `string` field of an encoded protobuf message, before it is decoded: text
//! must be UTF-8 (prost refuses it otherwise, which tonic reports as INTERNAL) and must not
//! hold NUL (PostgreSQL refuses 0x00 in `text`, which would surface as INTERNAL from
//! whichever query stores it). Pure: bytes and the message shapes in, a verdict out.
//!
//! Hand-written because the decoders at hand (prost, prost-reflect) stop at the first
//! invalid string without naming the field and allocate a whole dynamic message; this walks
//! the wire format once, allocates nothing on valid input and names the offending field.

use crate::methods::{FieldKind, MethodTable};

/// Nesting deeper than this is refused, as prost's own decoder does (its limit is 100).
const MAX_DEPTH: usize = 100;

/// What is wrong with a request message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireProblem {
    /// A string field holds bytes that are not UTF-8.
    NotUtf8 {
        /// Dotted path of the field, e.g. `client_id` or `filter.kind`.
        field: String,
    },
    /// A string field holds a NUL character.
    Nul {
        /// Dotted path of the field.
        field: String,
    },
    /// The bytes are not a protobuf message (truncated, bad wire type, too deep).
    Malformed,
}

impl WireProblem {
    /// The field to name in a `BadRequest` violation and what to say of it.
    pub fn violation(&self) -> (String, &'static str) {
        match self {
            Self::NotUtf8 { field } => (field.clone(), "is not valid UTF-8 text"),
            Self::Nul { field } => (field.clone(), "must not contain a NUL character"),
            Self::Malformed => ("request".into(), "is not a valid protobuf message"),
        }
    }
}

/// Checks the message `type_name` encoded in `bytes`. Types the table does not know are
/// skipped, not refused: their decoder decides.
pub fn check_message(
    table: &MethodTable,
    type_name: &str,
    bytes: &[u8],
) -> Result<(), WireProblem> {
    let mut reader = Reader { bytes, at: 0 };
    walk(table, type_name, &mut reader, None, 0, &mut Vec::new())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, WireProblem> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or(WireProblem::Malformed)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireProblem::Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireProblem> {
        let end = self.at.checked_add(len).ok_or(WireProblem::Malformed)?;
        let slice = self.bytes.get(self.at..end).ok_or(WireProblem::Malformed)?;
        self.at = end;
        Ok(slice)
    }
}

/// Walks fields until the input ends, or until the end-group tag of `group` (its field
/// number) when walking a group. `path` holds the names of the enclosing fields.
fn walk<'t>(
    table: &'t MethodTable,
    type_name: &str,
    reader: &mut Reader<'_>,
    group: Option<u32>,
    depth: usize,
    path: &mut Vec<&'t str>,
) -> Result<(), WireProblem> {
    if depth > MAX_DEPTH {
        return Err(WireProblem::Malformed);
    }
    let shape = table.message(type_name);
    loop {
        if reader.done() {
            // A group must be closed by its end tag.
            return match group {
                None => Ok(()),
                Some(_) => Err(WireProblem::Malformed),
            };
        }
        let tag = reader.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| WireProblem::Malformed)?;
        if number == 0 {
            return Err(WireProblem::Malformed);
        }
        let field = shape.and_then(|s| s.get(&number));
        match tag & 7 {
            0 => {
                reader.varint()?;
            }
            1 => {
                reader.take(8)?;
            }
            5 => {
                reader.take(4)?;
            }
            2 => {
                let len = usize::try_from(reader.varint()?).map_err(|_| WireProblem::Malformed)?;
                let value = reader.take(len)?;
                match field.map(|f| (&f.kind, f.name.as_str())) {
                    Some((FieldKind::Text, name)) => check_text(value, path, name)?,
                    Some((FieldKind::Message(nested), name)) => {
                        path.push(name);
                        let mut inner = Reader {
                            bytes: value,
                            at: 0,
                        };
                        walk(table, nested, &mut inner, None, depth + 1, path)?;
                        path.pop();
                    }
                    _ => {}
                }
            }
            3 => {
                let (nested, name) = match field.map(|f| (&f.kind, f.name.as_str())) {
                    Some((FieldKind::Group(nested), name)) => (nested.as_str(), name),
                    // An unknown group: walk it with no shape, only to find its end.
                    _ => ("", ""),
                };
                path.push(name);
                walk(table, nested, reader, Some(number), depth + 1, path)?;
                path.pop();
            }
            4 => {
                return if group == Some(number) {
                    Ok(())
                } else {
                    Err(WireProblem::Malformed)
                };
            }
            _ => return Err(WireProblem::Malformed),
        }
    }
}

fn check_text(value: &[u8], path: &[&str], name: &str) -> Result<(), WireProblem> {
    let field = || {
        let mut full = path.join(".");
        if !full.is_empty() {
            full.push('.');
        }
        full.push_str(name);
        full
    };
    let text = std::str::from_utf8(value).map_err(|_| WireProblem::NotUtf8 { field: field() })?;
    if text.contains('\0') {
        return Err(WireProblem::Nul { field: field() });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use appstack_proto::auth::v1 as pb;
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    fn table() -> MethodTable {
        MethodTable::new(
            &[appstack_proto::FILE_DESCRIPTOR_SET],
            &["appstack.auth.v1.AuthService"],
        )
    }

    const CREDENTIALS: &str = "appstack.auth.v1.ClientCredentialsTokenRequest";

    #[test]
    fn valid_text_passes() {
        let bytes = pb::ClientCredentialsTokenRequest {
            client_id: "ci_abc".into(),
            client_secret: "cs_ü€".into(),
        }
        .encode_to_vec();
        assert_eq!(check_message(&table(), CREDENTIALS, &bytes), Ok(()));
        assert_eq!(check_message(&table(), CREDENTIALS, &[]), Ok(()));
    }

    #[test]
    fn nul_is_named() {
        let bytes = pb::ClientCredentialsTokenRequest {
            client_id: "ci_\0".into(),
            client_secret: "x".into(),
        }
        .encode_to_vec();
        assert_eq!(
            check_message(&table(), CREDENTIALS, &bytes),
            Err(WireProblem::Nul {
                field: "client_id".into()
            })
        );
    }

    #[test]
    fn invalid_utf8_is_named() {
        // Field 2 (client_secret), length 2, bytes that are not UTF-8.
        let bytes = [0x12, 0x02, 0xc3, 0x28];
        assert_eq!(
            check_message(&table(), CREDENTIALS, &bytes),
            Err(WireProblem::NotUtf8 {
                field: "client_secret".into()
            })
        );
    }

    #[test]
    fn truncated_and_bad_wire_types_are_malformed() {
        assert_eq!(
            check_message(&table(), CREDENTIALS, &[0x0a, 0x05, b'a']),
            Err(WireProblem::Malformed)
        );
        assert_eq!(
            check_message(&table(), CREDENTIALS, &[0x0f]),
            Err(WireProblem::Malformed)
        );
        assert_eq!(
            check_message(&table(), CREDENTIALS, &[0x80]),
            Err(WireProblem::Malformed)
        );
        // An end-group tag with no group open.
        assert_eq!(
            check_message(&table(), CREDENTIALS, &[0x0c]),
            Err(WireProblem::Malformed)
        );
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped() {
        // Field 9 varint, field 10 as a group holding a string, then the known field.
        let mut bytes = vec![0x48, 0x01, 0x53, 0x0a, 0x01, b'x', 0x54];
        bytes.extend(
            pb::ClientCredentialsTokenRequest {
                client_id: "ok".into(),
                client_secret: String::new(),
            }
            .encode_to_vec(),
        );
        assert_eq!(check_message(&table(), CREDENTIALS, &bytes), Ok(()));
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_stack_overflow() {
        // An unknown group opened 10,000 times.
        let bytes = vec![0x53; 10_000];
        assert_eq!(
            check_message(&table(), CREDENTIALS, &bytes),
            Err(WireProblem::Malformed)
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = check_message(&table(), CREDENTIALS, &bytes);
        }

        #[test]
        fn agrees_with_prost_on_valid_messages(id in ".{0,40}", secret in ".{0,40}") {
            let bytes = pb::ClientCredentialsTokenRequest {
                client_id: id.clone(),
                client_secret: secret.clone(),
            }
            .encode_to_vec();
            let verdict = check_message(&table(), CREDENTIALS, &bytes);
            if id.contains('\0') {
                prop_assert_eq!(verdict, Err(WireProblem::Nul { field: "client_id".into() }));
            } else if secret.contains('\0') {
                prop_assert_eq!(verdict, Err(WireProblem::Nul { field: "client_secret".into() }));
            } else {
                prop_assert_eq!(verdict, Ok(()));
            }
        }
    }
}
