//! Input rules for everything a caller sends. Each returns the violation text for its field.

/// Longest email accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted: long enough for passphrases and managers, short enough that
/// hashing input cannot be abused.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Most roles on one principal.
pub const MAX_ROLES: usize = 32;

/// The lookup form of an email: trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks an email's shape: `local@domain`, printable ASCII, sane lengths and labels. Not
/// every RFC 5322 form (quoted local parts, IP literals) is accepted: they are not used by
/// real sign-ups and complicate every consumer downstream.
pub fn email(email: &str) -> Result<(), &'static str> {
    let email = email.trim();
    if email.is_empty() {
        return Err("is required");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("is longer than 254 characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("is not an email address");
    };
    if local.is_empty() || local.len() > 64 {
        return Err("has an empty or too long local part");
    }
    const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if !local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err("has characters not allowed in the local part");
    }
    if domain.is_empty() || domain.len() > 253 {
        return Err("has an empty or too long domain");
    }
    for label in domain.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err("has an invalid domain");
        }
    }
    Ok(())
}

/// Checks a new password's length (in characters) and that it has no control characters.
pub fn new_password(password: &str) -> Result<(), &'static str> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err("must be at least 8 characters");
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err("must be at most 1024 characters");
    }
    if password.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Checks a password presented at login: only its size, so a login never reveals rules.
pub fn presented_password(password: &str) -> Result<(), &'static str> {
    if password.is_empty() {
        return Err("is required");
    }
    if password.len() > MAX_PASSWORD_CHARS * 4 {
        return Err("is too long");
    }
    Ok(())
}

/// Checks and canonicalizes roles: `[a-z][a-z0-9_-]{0,31}`, at most 32, sorted, unique.
pub fn roles(roles: &[String]) -> Result<Vec<String>, &'static str> {
    if roles.len() > MAX_ROLES {
        return Err("has more than 32 roles");
    }
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if !is_slug(role, 32, &['_', '-']) {
            return Err("each role must match [a-z][a-z0-9_-]{0,31}");
        }
        out.push(role.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks a service account name: `[a-z][a-z0-9-]{0,62}`.
pub fn service_account_name(name: &str) -> Result<(), &'static str> {
    if is_slug(name, 63, &['-']) {
        Ok(())
    } else {
        Err("must match [a-z][a-z0-9-]{0,62}")
    }
}

fn is_slug(value: &str, max: usize, extra: &[char]) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && value.len() <= max
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

/// Parses a UUID field.
pub fn uuid(value: &str) -> Result<uuid::Uuid, &'static str> {
    uuid::Uuid::parse_str(value.trim()).map_err(|_| "is not a UUID")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails() {
        for ok in [
            "a@b",
            "first.last+tag@example.com",
            "o'brien@example.co.uk",
            "X@Y.Z",
        ] {
            assert_eq!(email(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
            "a..b@x.com",
            "robert'); DROP TABLE users;--@x.com",
            "ünïcode@example.com",
            "a@b@c",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(email(&format!("a@{}.com", "b".repeat(250))).is_err());
    }

    #[test]
    fn passwords() {
        assert!(new_password("short").is_err());
        assert!(new_password("long enough").is_ok());
        assert!(new_password("with\0nul byte").is_err());
        assert!(new_password(&"x".repeat(1025)).is_err());
        assert!(new_password("'; DROP TABLE auth.users; --").is_ok());
        assert!(presented_password("").is_err());
    }

    #[test]
    fn roles_are_canonical() {
        let r = roles(&["user".into(), "admin".into(), "user".into()]);
        assert_eq!(r, Ok(vec!["admin".to_string(), "user".to_string()]));
        assert!(roles(&["Admin".into()]).is_err());
        assert!(roles(&["".into()]).is_err());
        assert!(roles(&vec!["r".to_string(); 33]).is_err());
    }

    proptest! {
        #[test]
        fn email_check_never_panics(s in "\\PC{0,300}") {
            let _ = email(&s);
            let _ = normalize_email(&s);
        }

        #[test]
        fn accepted_emails_are_ascii_with_one_at(s in "[a-zA-Z0-9.@+'-]{1,80}") {
            if email(&s).is_ok() {
                prop_assert!(s.is_ascii());
                prop_assert_eq!(s.matches('@').count(), 1);
            }
        }
    }
}
