//! The one validation idiom: each type checks its own fields, named relative to itself;
//! [`Problems`] keeps the path from the root, so a message reads
//! `externalServices.payments.resilience.retry.maxBackoff: must be at least initialBackoff (100ms)`
//! whether the resilience settings were checked alone or inside the whole stack.

use std::fmt;

/// Rules a configuration must satisfy beyond its types.
///
/// ```
/// use appstack_config::{Problems, Validate};
///
/// struct Backoff { initial: u32, max: u32 }
/// struct Retry { backoff: Backoff }
///
/// impl Validate for Backoff {
///     fn check(&self, problems: &mut Problems) {
///         if self.max < self.initial {
///             problems.push("max", "must be at least initial");
///         }
///     }
/// }
/// impl Validate for Retry {
///     fn check(&self, problems: &mut Problems) {
///         problems.field("backoff", |p| self.backoff.check(p));
///     }
/// }
///
/// let retry = Retry { backoff: Backoff { initial: 2, max: 1 } };
/// let err = retry.validate().unwrap_err();
/// assert_eq!(err.problems, ["backoff.max: must be at least initial"]);
/// ```
pub trait Validate {
    /// Reports every broken rule of `self` to `problems`, naming fields relative to `self`
    /// ([`Problems::push`]) and descending into sub-values with [`Problems::field`] and
    /// [`Problems::entry`]. Never names the parent: the caller's path is already there.
    fn check(&self, problems: &mut Problems);

    /// Checks `self` as the root of a configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] listing every broken rule.
    fn validate(&self) -> Result<(), InvalidConfig> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.into_result()
    }
}

/// The broken rules found so far, and where the check is in the configuration.
#[derive(Debug, Default)]
pub struct Problems {
    /// The path of the value being checked, one segment per field or map entry.
    path: Vec<String>,
    found: Vec<String>,
}

impl Problems {
    /// No problems, at the root.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `check` for the field `name` of the value being checked: whatever it reports
    /// is placed under `name`.
    pub fn field(&mut self, name: &str, check: impl FnOnce(&mut Self)) {
        self.path.push(name.to_owned());
        check(self);
        self.path.pop();
    }

    /// Runs `check` for the entry `key` of the map being checked. A key that is not a plain
    /// word (letters, digits, `-`, `_`) is quoted, so `routes."payment.v2".service` stays
    /// readable.
    pub fn entry(&mut self, key: &str, check: impl FnOnce(&mut Self)) {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let segment = if plain {
            key.to_owned()
        } else {
            format!("{key:?}")
        };
        self.path.push(segment);
        check(self);
        self.path.pop();
    }

    /// Reports that the field `name` of the value being checked breaks a rule:
    /// `<path>.<name>: <message>`.
    pub fn push(&mut self, name: &str, message: impl fmt::Display) {
        let path = self.path_of(name);
        self.found.push(format!("{path}: {message}"));
    }

    /// Reports that the value being checked itself breaks a rule (a map key that is not a
    /// valid name, say): `<path>: <message>`.
    pub fn here(&mut self, message: impl fmt::Display) {
        let path = self.path.join(".");
        self.found.push(format!("{path}: {message}"));
    }

    /// The full path of the field `name` of the value being checked, for a message that
    /// names another setting: `externalServices.payments.resilience.timeout.perAttempt`.
    pub fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path.join("."))
        }
    }

    /// True when no rule is broken.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The messages so far, in the order found.
    pub fn messages(&self) -> &[String] {
        &self.found
    }

    /// `Ok` when no rule is broken, otherwise every message.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] when a rule is broken.
    pub fn into_result(self) -> Result<(), InvalidConfig> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(InvalidConfig {
                problems: self.found,
            })
        }
    }
}

/// A configuration that breaks rules: every broken rule, each message starting with the
/// camelCase path of the setting from the root (`retry.maxAttempts: must be between 1 and
/// 10, got 0`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct InvalidConfig {
    /// The broken rules, in field order.
    pub problems: Vec<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_and_unwind() {
        let mut p = Problems::new();
        p.push("top", "bad");
        p.field("externalServices", |p| {
            p.entry("payments", |p| {
                p.field("resilience", |p| {
                    p.field("retry", |p| p.push("maxBackoff", "must be at least x"));
                    assert_eq!(
                        p.path_of("timeout"),
                        "externalServices.payments.resilience.timeout"
                    );
                });
            });
            p.entry("Bad Name", |p| p.here("is not a name"));
            p.entry("payment.v2", |p| p.push("endpoint", "missing"));
        });
        p.field("log", |p| p.push("filter", "bad"));
        assert_eq!(
            p.messages(),
            [
                "top: bad",
                "externalServices.payments.resilience.retry.maxBackoff: must be at least x",
                "externalServices.\"Bad Name\": is not a name",
                "externalServices.\"payment.v2\".endpoint: missing",
                "log.filter: bad",
            ]
        );
        let err = p.into_result().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid configuration: top: bad; ")
        );
        assert!(Problems::new().into_result().is_ok());
    }
}
