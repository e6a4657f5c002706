//! The `grpc-timeout` header: `1..=8` ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`),
//! as in the gRPC over HTTP/2 specification.

use std::time::Duration;

use http::HeaderValue;

/// The header carrying the time the callee has left.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

const MAX_VALUE: u128 = 99_999_999;

/// Formats `timeout` for the `grpc-timeout` header: the smallest unit in which the value
/// fits in 8 digits, rounded up (as grpc-go does), so `123ms` is `123000u` and `2s` is
/// `2000000u`; at most `99999999H`. Zero is `0n`.
pub fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (value, unit) = units
        .iter()
        .map(|&(size, unit)| (nanos.div_ceil(size), unit))
        .find(|&(value, _)| value <= MAX_VALUE)
        .unwrap_or((MAX_VALUE, 'H'));
    // Digits and an ASCII letter: always a valid header value.
    HeaderValue::try_from(format!("{value}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

/// Parses a `grpc-timeout` value; `None` if malformed.
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(value * 3600),
        'M' => Duration::from_secs(value * 60),
        'S' => Duration::from_secs(value),
        'm' => Duration::from_millis(value),
        'u' => Duration::from_micros(value),
        'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_smallest_unit_that_fits() {
        let f = |d| format_grpc_timeout(d).to_str().unwrap().to_owned();
        assert_eq!(f(Duration::ZERO), "0n");
        assert_eq!(f(Duration::from_nanos(999)), "999n");
        assert_eq!(f(Duration::from_millis(50)), "50000000n");
        assert_eq!(f(Duration::from_millis(123)), "123000u");
        assert_eq!(f(Duration::from_nanos(123_000_001)), "123001u");
        assert_eq!(f(Duration::from_secs(2)), "2000000u");
        assert_eq!(f(Duration::from_secs(1000)), "1000000m");
        assert_eq!(f(Duration::from_secs(200_000)), "200000S");
        assert_eq!(f(Duration::from_secs(u64::MAX)), "99999999H");
    }

    #[test]
    fn parses_every_unit_and_round_trips() {
        let p = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(p("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(p("2M"), Some(Duration::from_secs(120)));
        assert_eq!(p("3S"), Some(Duration::from_secs(3)));
        assert_eq!(p("123m"), Some(Duration::from_millis(123)));
        assert_eq!(p("7u"), Some(Duration::from_micros(7)));
        assert_eq!(p("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "12", "123456789m", "1.5S", "-1S", "10s", "1 S"] {
            assert_eq!(
                parse_grpc_timeout(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(7),
            Duration::from_nanos(5),
        ] {
            assert_eq!(parse_grpc_timeout(&format_grpc_timeout(d)), Some(d));
        }
    }

    proptest::proptest! {
        /// Any header value a peer can send gets an answer, never a panic.
        #[test]
        fn parsing_any_header_value_never_panics(text in "[ -~]{0,20}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let _ = parse_grpc_timeout(&value);
            }
        }

        /// Formatting rounds up, by less than one part in ten thousand (or one nanosecond).
        #[test]
        fn formatting_rounds_up_by_a_tiny_fraction(nanos in proptest::num::u64::ANY) {
            let timeout = Duration::from_nanos(nanos);
            let sent = parse_grpc_timeout(&format_grpc_timeout(timeout)).unwrap();
            proptest::prop_assert!(sent >= timeout);
            let slack = (timeout / 10_000).max(Duration::from_nanos(1));
            proptest::prop_assert!(sent - timeout <= slack, "{timeout:?} sent as {sent:?}");
        }
    }
}
