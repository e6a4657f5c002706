//! Durations as strings with one grammar, for serde and for the schema.
//!
//! A duration is one or more `<integer><unit>` groups, with no spaces, signs or fractions:
//! `250ms`, `30s`, `15m`, `1m30s`, `7d`. Units are `ms`, `s`, `m` (minutes), `h` and `d`
//! (24 hours); groups add up in any order (`30s1m` is `1m30s`, as in Go's
//! `time.ParseDuration`). [`PATTERN`] states exactly this grammar, so the CRD schema refuses
//! what the services would refuse; the only thing a pattern cannot state is size, so a
//! total beyond [`MAX`] matches the pattern and is still refused by [`parse`].
//!
//! Serialised canonically: largest units first, zero groups left out, `0s` for zero
//! (`90s` is written `1m30s`, `36h` is `1d12h`).
//!
//! Fields stay [`std::time::Duration`]:
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct Example {
//!     #[serde(with = "appstack_config::duration")]
//!     #[schemars(with = "appstack_config::duration::DurationString")]
//!     timeout: Duration,
//! }
//!
//! assert_eq!(appstack_config::duration::parse("1m30s"), Ok(Duration::from_secs(90)));
//! assert_eq!(appstack_config::duration::format(Duration::from_millis(1500)), "1s500ms");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserializer, Serializer, de};

/// The grammar as a regular expression (ECMA-262 and RE2 alike, as Kubernetes evaluates
/// CRD patterns): one or more groups of digits and a unit.
pub const PATTERN: &str = "^(?:[0-9]+(?:ms|s|m|h|d))+$";

/// The longest duration the grammar's parser accepts: `u64::MAX` milliseconds (some 584
/// million years).
pub const MAX: Duration = Duration::from_millis(u64::MAX);

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A string that is not a duration of the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing to parse.
    #[error("expected a duration such as `250ms`, `30s` or `1m30s`, got an empty string")]
    Empty,
    /// The text breaks the grammar.
    #[error(
        "expected a duration such as `250ms`, `30s` or `1m30s` (integers with units ms, s, m, h, d; no spaces or fractions), got `{0}`"
    )]
    Syntax(String),
    /// The grammar is respected but the total is beyond [`MAX`].
    #[error("duration `{0}` is too long")]
    Overflow(String),
}

/// Parses a duration of the grammar.
///
/// # Errors
///
/// [`ParseError`] when `text` is empty, breaks the grammar, or adds up beyond [`MAX`].
pub fn parse(text: &str) -> Result<Duration, ParseError> {
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let bytes = text.as_bytes();
    // The whole text is checked against the grammar before its size: a text that breaks
    // the grammar is a syntax error even when an earlier group overflowed.
    let mut total: Option<u64> = Some(0);
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[digits_start..i];
        let unit_ms: u64 = match &bytes[i..] {
            _ if digits.is_empty() => return Err(ParseError::Syntax(shorten(text))),
            [b'm', b's', ..] => 1,
            [b's', ..] => 1_000,
            [b'm', ..] => 60_000,
            [b'h', ..] => 3_600_000,
            [b'd', ..] => 86_400_000,
            _ => return Err(ParseError::Syntax(shorten(text))),
        };
        i += if unit_ms == 1 { 2 } else { 1 };
        // Only ASCII digits: the sole way to fail is a number beyond u64.
        let group = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms));
        total = total.zip(group).and_then(|(t, g)| t.checked_add(g));
    }
    let total = total.ok_or_else(|| ParseError::Overflow(shorten(text)))?;
    Ok(Duration::from_millis(total))
}

/// A long input cut for error messages (a hostile file could hold megabytes).
fn shorten(text: &str) -> String {
    const MAX_SHOWN: usize = 64;
    match text.char_indices().nth(MAX_SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The canonical text of `duration`: largest units first, zero groups left out, `0s` for
/// zero. Below a millisecond is dropped (the grammar has no smaller unit); [`serialize`]
/// refuses such a duration instead.
pub fn format(duration: Duration) -> String {
    let mut rest = duration.as_millis();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, ms) in UNITS {
        let ms = u128::from(ms);
        let count = rest / ms;
        if count > 0 {
            text.push_str(&count.to_string());
            text.push_str(unit);
            rest %= ms;
        }
    }
    text
}

/// A `Duration` the grammar can write back exactly: whole milliseconds, at most [`MAX`].
fn representable(duration: Duration) -> bool {
    duration.subsec_nanos().is_multiple_of(1_000_000) && duration <= MAX
}

/// Serialises a duration canonically ([`format()`]).
///
/// # Errors
///
/// When `duration` has a part below a millisecond or exceeds [`MAX`], which the grammar
/// cannot write back.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    if !representable(*duration) {
        return Err(serde::ser::Error::custom(format_args!(
            "{duration:?} is not a whole number of milliseconds up to {}",
            format(MAX)
        )));
    }
    serializer.serialize_str(&format(*duration))
}

/// Deserialises a duration string of the grammar.
///
/// # Errors
///
/// When the value is not a string or not a duration of the grammar.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as `250ms`, `30s` or `1m30s`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

/// The schema of a duration field: a string matching [`PATTERN`]. Use with
/// `#[schemars(with = "appstack_config::duration::DurationString")]`. Inlined, as
/// Kubernetes schemas have no references.
pub struct DurationString;

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
        })
    }
}

/// `Option<Duration>` fields: absent or `null` is `None`, otherwise a duration string.
/// Schema: `#[schemars(with = "Option<appstack_config::duration::DurationString>")]`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Serialises `Some` canonically and `None` as nothing (`null`).
    ///
    /// # Errors
    ///
    /// As [`super::serialize`].
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserialises `null` as `None` and a duration string as `Some`.
    ///
    /// # Errors
    ///
    /// As [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Text(#[serde(with = "super")] Duration);
        Ok(Option::<Text>::deserialize(deserializer)?.map(|Text(d)| d))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pattern() -> regex::Regex {
        regex::Regex::new(PATTERN).unwrap()
    }

    #[test]
    fn parses_the_documented_examples() {
        let cases = [
            ("0s", 0),
            ("250ms", 250),
            ("30s", 30_000),
            ("15m", 900_000),
            ("1m30s", 90_000),
            ("30s1m", 90_000),
            ("1h", 3_600_000),
            ("7d", 7 * 86_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("007s", 7_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn formats_canonically() {
        let cases = [
            (0, "0s"),
            (1, "1ms"),
            (250, "250ms"),
            (1_000, "1s"),
            (1_500, "1s500ms"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (36 * 3_600_000, "1d12h"),
            (7 * 86_400_000, "7d"),
        ];
        for (ms, text) in cases {
            assert_eq!(format(Duration::from_millis(ms)), text);
        }
        assert_eq!(format(Duration::from_micros(1_500)), "1ms");
    }

    #[test]
    fn hostile_strings_are_errors_not_panics() {
        let overflow = format!("{}ms", u64::MAX as u128 + 1);
        let many = "9".repeat(10_000) + "d";
        let hostile = [
            "",
            "1",
            "s",
            "ms",
            "1.5s",
            "-1s",
            "+1s",
            " 1s",
            "1s ",
            "1 s",
            "1S",
            "1sec",
            "1us",
            "1ns",
            "1w",
            "1y",
            "1m 30s",
            "1,5s",
            "１s",
            "1s\0",
            "s1",
            "1mss",
            "1hm",
            // 18446744073709551615 ms is u64::MAX: fine; one more group overflows the sum.
            "18446744073709551615ms1ms",
            "213503982334601d",
            &overflow,
            &many,
        ];
        let re = pattern();
        for text in hostile {
            let parsed = parse(text);
            assert!(parsed.is_err(), "{text:?} parsed as {parsed:?}");
        }
        assert_eq!(parse("18446744073709551615ms"), Ok(MAX));
        // What overflows matches the pattern (a pattern cannot count); the rest does not.
        for text in [
            "18446744073709551615ms1ms",
            "213503982334601d",
            &overflow,
            &many,
        ] {
            assert!(re.is_match(text), "{text}");
            assert!(
                matches!(parse(text), Err(ParseError::Overflow(_))),
                "{text}"
            );
        }
        assert!(parse(&many).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn serde_round_trip_and_refusals() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Holder {
            #[serde(with = "super")]
            d: Duration,
            #[serde(with = "super::option", default)]
            o: Option<Duration>,
        }
        let holder = Holder {
            d: Duration::from_secs(90),
            o: Some(Duration::from_millis(5)),
        };
        let json = serde_json::to_string(&holder).unwrap();
        assert_eq!(json, r#"{"d":"1m30s","o":"5ms"}"#);
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), holder);
        let none: Holder = serde_json::from_str(r#"{"d":"1s","o":null}"#).unwrap();
        assert_eq!(none.o, None);
        let absent: Holder = serde_json::from_str(r#"{"d":"1s"}"#).unwrap();
        assert_eq!(absent.o, None);
        let err = serde_json::from_str::<Holder>(r#"{"d":30}"#).unwrap_err();
        assert!(err.to_string().contains("duration string"), "{err}");
        let err = serde_json::from_str::<Holder>(r#"{"d":"1.5s"}"#).unwrap_err();
        assert!(err.to_string().contains("no spaces or fractions"), "{err}");
        let sub_ms = Holder {
            d: Duration::from_micros(1),
            o: None,
        };
        assert!(serde_json::to_string(&sub_ms).is_err());
    }

    #[test]
    fn schema_is_a_string_with_the_pattern() {
        let schema = schemars::schema_for!(DurationString);
        let value = serde_json::to_value(&schema).unwrap();
        assert_eq!(value["type"], "string");
        assert_eq!(value["pattern"], PATTERN);
    }

    /// One group, sometimes malformed: digits (maybe none, maybe huge) and a unit or junk.
    fn group() -> impl Strategy<Value = String> {
        let digits = prop_oneof![
            4 => "[0-9]{1,4}",
            1 => "[0-9]{18,22}",
            1 => Just(String::new()),
        ];
        let unit = prop_oneof![
            8 => prop::sample::select(vec!["ms", "s", "m", "h", "d"]),
            1 => prop::sample::select(vec!["", "S", "us", "ns", "w", ".", ".5s", " ", "-", "mss", "\u{e9}"]),
        ];
        (digits, unit).prop_map(|(d, u)| format!("{d}{u}"))
    }

    proptest! {
        /// The pattern and the parser agree on every string of near-miss groups: what
        /// parses matches, and what matches parses unless it overflows.
        #[test]
        fn parser_and_pattern_agree(groups in prop::collection::vec(group(), 0..5)) {
            let text = groups.concat();
            let matches = pattern().is_match(&text);
            match parse(&text) {
                Ok(_) => prop_assert!(matches, "{text:?} parsed but does not match"),
                Err(ParseError::Overflow(_)) => prop_assert!(matches, "{text:?}"),
                Err(_) => prop_assert!(!matches, "{text:?} matches but does not parse"),
            }
        }

        /// Any string at all: no panic, and the same agreement.
        #[test]
        fn arbitrary_strings(text in ".{0,24}") {
            let matches = pattern().is_match(&text);
            match parse(&text) {
                Ok(_) | Err(ParseError::Overflow(_)) => prop_assert!(matches, "{text:?}"),
                Err(_) => prop_assert!(!matches, "{text:?}"),
            }
        }

        /// Strings generated from the pattern itself parse (or overflow).
        #[test]
        fn pattern_strings_parse(text in proptest::string::string_regex("(?:[0-9]{1,25}(?:ms|s|m|h|d)){1,4}").unwrap()) {
            prop_assert!(pattern().is_match(&text));
            prop_assert!(!matches!(parse(&text), Err(ParseError::Syntax(_) | ParseError::Empty)), "{text:?}");
        }

        /// Canonical text parses back to the same duration, and is a fixed point.
        #[test]
        fn format_round_trips(ms in any::<u64>()) {
            let duration = Duration::from_millis(ms);
            let text = format(duration);
            prop_assert!(pattern().is_match(&text));
            prop_assert_eq!(parse(&text), Ok(duration));
            prop_assert_eq!(format(parse(&text).unwrap()), text);
        }
    }
}
