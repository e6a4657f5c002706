//! `google.api.http` path templates: `/v1/requests/{id}:cancel`.
//!
//! The subset our contracts use, and refuse anything else at start rather than mis-route: literal
//! segments, single-segment variables naming a top-level field (`{id}`), and an optional
//! trailing `:verb`. Multi-segment (`**`) and nested (`{a.b=…}`) variables are refused.

use std::fmt;

/// A template could not be parsed (a contract error, found at start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the path's segment.
    Literal(String),
    /// Captures the path's segment into this field.
    Variable(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    verb: Option<String>,
}

impl PathTemplate {
    /// Parses `template`.
    ///
    /// # Errors
    ///
    /// When it does not start with `/`, has an empty segment, or uses a form outside the subset.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason| TemplateError {
            template: template.to_owned(),
            reason,
        };
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| fail("must start with /"))?;
        // The verb follows the last segment's last `:` outside braces.
        let (path, verb) = match rest.rfind(':') {
            Some(at) if !rest[at..].contains('}') && !rest[at..].contains('/') => {
                (&rest[..at], Some(rest[at + 1..].to_owned()))
            }
            _ => (rest, None),
        };
        if verb.as_deref().is_some_and(|v| !is_literal(v)) {
            return Err(fail("the verb must be a plain word"));
        }
        let mut segments = Vec::new();
        for part in path.split('/') {
            if let Some(inner) = part.strip_prefix('{') {
                let field = inner
                    .strip_suffix('}')
                    .ok_or_else(|| fail("unclosed variable"))?;
                if field.is_empty()
                    || !field
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(fail("variables must name one top-level field"));
                }
                segments.push(Segment::Variable(field.to_owned()));
            } else if is_literal(part) {
                segments.push(Segment::Literal(part.to_owned()));
            } else {
                return Err(fail("segments must be plain words or {field}"));
            }
        }
        Ok(Self { segments, verb })
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The fields the path binds.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable(field) => Some(field.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The bound fields' values when `path` (as received, percent-encoded) matches, else
    /// `None`. Values are percent-decoded; one that is not UTF-8 does not match.
    pub fn matches(&self, path: &str) -> Option<Vec<(&str, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let mut parts = rest.split('/');
        let mut bound = Vec::new();
        let last = self.segments.len().saturating_sub(1);
        for (index, segment) in self.segments.iter().enumerate() {
            let part = parts.next()?;
            // A raw `:` in the last segment starts a verb (`{id}:cancel`); a value holding one
            // comes percent-encoded, so `/x/{id}` never answers for `/x/{id}:verb`.
            if index == last && self.verb.is_none() && part.contains(':') {
                return None;
            }
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Variable(field) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?;
                    if value.is_empty() {
                        return None;
                    }
                    bound.push((field.as_str(), value.into_owned()));
                }
            }
        }
        parts.next().is_none().then_some(bound)
    }

    /// The OpenAPI form: `/v1/requests/{id}:cancel`.
    pub fn openapi_path(&self) -> String {
        self.to_string()
    }
}

fn is_literal(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => write!(f, "/{literal}")?,
                Segment::Variable(field) => write!(f, "/{{{field}}}")?,
            }
        }
        if let Some(verb) = &self.verb {
            write!(f, ":{verb}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn template(t: &str) -> PathTemplate {
        PathTemplate::parse(t).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn literal_and_variable_segments_match() {
        let t = template("/v1/requests/{id}");
        assert_eq!(
            t.matches("/v1/requests/abc"),
            Some(vec![("id", "abc".into())])
        );
        assert_eq!(t.matches("/v1/requests"), None);
        assert_eq!(t.matches("/v1/requests/abc/more"), None);
        assert_eq!(t.matches("/v1/requests/"), None, "an empty id is no id");
        assert_eq!(t.matches("/v2/requests/abc"), None);
    }

    #[test]
    fn verbs_are_stripped_before_segments_are_matched() {
        let t = template("/v1/requests/{id}:cancel");
        assert_eq!(
            t.matches("/v1/requests/abc:cancel"),
            Some(vec![("id", "abc".into())])
        );
        assert_eq!(t.matches("/v1/requests/abc"), None);
        assert_eq!(t.matches("/v1/requests/abc:delete"), None);
        let plain = template("/v1/requests/{id}");
        assert_eq!(
            plain.matches("/v1/requests/abc:cancel"),
            None,
            "a raw colon in the last segment is a verb, which this template has not"
        );
        assert_eq!(
            plain.matches("/v1/requests/abc%3Acancel"),
            Some(vec![("id", "abc:cancel".into())]),
            "an encoded colon is part of the value"
        );
        assert_eq!(
            template("/v1/queue/dead-letters:requeue").to_string(),
            "/v1/queue/dead-letters:requeue"
        );
    }

    #[test]
    fn values_are_percent_decoded_and_must_be_utf8() {
        let t = template("/v1/users/{user_id}/roles");
        assert_eq!(
            t.matches("/v1/users/a%2Fb/roles"),
            Some(vec![("user_id", "a/b".into())])
        );
        assert_eq!(t.matches("/v1/users/%FF/roles"), None);
    }

    #[test]
    fn forms_outside_the_subset_are_refused() {
        for bad in [
            "v1/x",
            "/v1//x",
            "/v1/{a.b}",
            "/v1/{name=**}",
            "/v1/{id",
            "/v1/x y",
            "/v1/{id}:",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_path_is_answered_without_panicking(path in "\\PC{0,64}") {
            let t = template("/v1/requests/{id}:cancel");
            let _ = t.matches(&path);
        }

        #[test]
        fn a_bound_value_round_trips(value in "[a-zA-Z0-9._~-]{1,40}") {
            let t = template("/v1/requests/{id}/events");
            let path = format!("/v1/requests/{value}/events");
            prop_assert_eq!(t.matches(&path), Some(vec![("id", value)]));
        }
    }
}
