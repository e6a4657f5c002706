//! Pages of List and ListDeadLetters: their size rule, and tokens opaque to callers (the
//! last id of a page).

use uuid::Uuid;

/// The version prefix: a later format can be told apart (and an old token refused clearly).
const PREFIX: &str = "p1.";

/// The largest page a List may ask for.
pub const MAX_PAGE_SIZE: u32 = 500;
/// The page size when none is asked for (`0`).
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// The page size for `asked` (`0`: the default), or why it is refused.
pub fn page_size(asked: u32) -> Result<u32, String> {
    match asked {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Ok(n),
        n => Err(format!("must be between 1 and {MAX_PAGE_SIZE}, got {n}")),
    }
}

/// A page token that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not a page token returned by this service")]
pub struct InvalidPageToken;

/// The token of the page after the item `last`.
pub fn encode(last: Uuid) -> String {
    format!("{PREFIX}{}", last.simple())
}

/// The id a token names; an empty token is the first page (`None`).
pub fn decode(token: &str) -> Result<Option<Uuid>, InvalidPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let hex = token.strip_prefix(PREFIX).ok_or(InvalidPageToken)?;
    if hex.len() != 32 {
        return Err(InvalidPageToken);
    }
    Uuid::try_parse(hex).map(Some).map_err(|_| InvalidPageToken)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips_and_refuses_others() {
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(id)), Ok(Some(id)));
        assert_eq!(decode(""), Ok(None));
        for bad in [
            "x",
            "p1.",
            "p1.zz",
            &id.to_string(),
            &format!("p2.{}", id.simple()),
        ] {
            assert_eq!(decode(bad), Err(InvalidPageToken), "{bad}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(MAX_PAGE_SIZE), Ok(MAX_PAGE_SIZE));
        assert!(page_size(MAX_PAGE_SIZE + 1).is_err());
    }

    proptest! {
        #[test]
        fn any_text_is_a_token_or_refused(text in "\\PC{0,80}") {
            let _ = decode(&text);
        }
    }
}
