//! `log`: log output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Problems, Validate};

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LogConfig {
    /// `json` (one object per line, for collectors) or `pretty` (for people). Default
    /// `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,appstack_auth=debug`; the `RUST_LOG`
    /// environment variable overrides it. Default `info`. Its full syntax is checked when
    /// a service loads its configuration.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

impl Validate for LogConfig {
    /// Only what needs no tracing library: the filter is printable text. The services'
    /// loader (`appstack_common::config`) parses it with the filter's own parser.
    fn check(&self, p: &mut Problems) {
        if self.filter.chars().any(char::is_control) {
            p.push("filter", "must not contain control characters");
        }
    }
}

/// How log lines are written: `json` (one object per line) or `pretty` (human-readable,
/// coloured on a terminal).
// The variants carry no doc comments on purpose: schemars then describes the enum as a plain
// `enum` of strings, which a Kubernetes structural schema accepts (a `oneOf` it would not).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}
