//! Small checks shared by several sections, written by hand so this crate stays light.

/// The grammar of external service names and route kinds (a DNS-label-like name, dots
/// allowed): `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub(crate) const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,62}$";

/// True for a name of [`NAME_PATTERN`].
pub(crate) fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.len() <= 62
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        }
        None => false,
    }
}

/// The grammar of role names (as the auth service enforces them): `^[a-z][a-z0-9_-]{0,31}$`.
pub(crate) const ROLE_PATTERN: &str = "^[a-z][a-z0-9_-]{0,31}$";

/// True for a role name of [`ROLE_PATTERN`].
pub(crate) fn is_role(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.len() <= 31
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
                })
        }
        None => false,
    }
}

/// True for an absolute `http`/`https` URL with a host: `scheme://[userinfo@]host[:port][/…]`,
/// printable ASCII only, the host a name or a bracketed IPv6 literal, the port (if any)
/// `0..=65535`.
pub(crate) fn is_absolute_http_url(text: &str) -> bool {
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((address, after)) = v6.split_once(']') else {
            return false;
        };
        if address.is_empty()
            || !address
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => (address, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return false,
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// Why `text` is not an RFC 6901 JSON pointer to a member (`/accountId`, `/a/b~1c`), or
/// `None` when it is one.
pub(crate) fn json_pointer_problem(text: &str) -> Option<&'static str> {
    if !text.starts_with('/') {
        return Some("must be a JSON pointer (RFC 6901) starting with `/`, e.g. `/accountId`");
    }
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some("is not a JSON pointer (RFC 6901): `~` must be followed by `0` or `1`");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "0", "payments", "payment.v2", "a-b_c", &"a".repeat(63)] {
            assert!(is_name(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "_a",
            "a b",
            "ä",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn roles() {
        for good in ["admin", "user", "a", "svc-1_x", &"a".repeat(32)] {
            assert!(is_role(good), "{good}");
        }
        for bad in ["", "1a", "Admin", "a.b", "a b", &"a".repeat(33)] {
            assert!(!is_role(bad), "{bad}");
        }
    }

    #[test]
    fn urls() {
        for good in [
            "http://a",
            "https://auth.appstack.local/.well-known/jwks.json",
            "http://127.0.0.1:9090/x",
            "HTTP://host:1?q#f",
            "http://u:p@host/",
            "http://[::1]:8080/",
        ] {
            assert!(is_absolute_http_url(good), "{good}");
        }
        for bad in [
            "",
            "/.well-known/jwks.json",
            "ftp://x/jwks",
            "http://",
            "http:///path",
            "not a url",
            "http://host:port/",
            "http://host:99999/",
            "http://host:/",
            "http://ho st/",
            "http://[::1/",
            "http://[]/",
            "http://[::1]x/",
            "http://héllo/",
            "grpc://host",
        ] {
            assert!(!is_absolute_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn pointers() {
        for good in ["/accountId", "/a/b", "/a~0b/c~1d", "/", "//"] {
            assert_eq!(json_pointer_problem(good), None, "{good}");
        }
        for bad in ["", "accountId", "#/a", "/a~", "/a~2"] {
            assert!(json_pointer_problem(bad).is_some(), "{bad}");
        }
    }
}
