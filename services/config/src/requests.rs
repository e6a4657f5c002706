//! `requests`: limits of the request API (main).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{ROLE_PATTERN, is_role};
use crate::{Problems, Validate};

/// The key of [`RequestsConfig::submit_rate`] for callers none of whose roles has an entry.
pub const DEFAULT_RATE_KEY: &str = "default";

/// Limits of the request API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestsConfig {
    /// Largest request payload accepted (INVALID_ARGUMENT beyond). Bytes,
    /// `1024..=16777216`, at most `server.maxMessageBytes`; default `262144` (256 KiB).
    pub max_payload_bytes: usize,
    /// Largest result kept from an external service (a larger one fails the request).
    /// Bytes, `1024..=16777216`, at most `server.maxMessageBytes`; default `1048576`
    /// (1 MiB).
    pub max_result_bytes: usize,
    /// How long a SYNC request waits for its result when the caller set no deadline.
    /// Duration, `1ms..=1h`; default `30s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub sync_timeout: Duration,
    /// Submissions allowed per caller, by role name (`^[a-z][a-z0-9_-]{0,31}$`) or
    /// `default` (callers none of whose roles has an entry); a caller with several listed
    /// roles gets the most generous. Without a `default` entry, such callers are not
    /// limited. Default `{"default": {"perSecond": 100, "burst": 200}}`.
    pub submit_rate: BTreeMap<String, RateLimitConfig>,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            max_result_bytes: 1024 * 1024,
            sync_timeout: Duration::from_secs(30),
            submit_rate: BTreeMap::from([(
                DEFAULT_RATE_KEY.to_owned(),
                RateLimitConfig::default(),
            )]),
        }
    }
}

const MIN_BYTES: usize = 1024;
const MAX_BYTES: usize = 16 * 1024 * 1024;

impl Validate for RequestsConfig {
    /// The rules of the section alone; the bounds by `server.maxMessageBytes` are checked
    /// by the whole configuration ([`crate::StackConfig`]).
    fn check(&self, p: &mut Problems) {
        for (name, value) in [
            ("maxPayloadBytes", self.max_payload_bytes),
            ("maxResultBytes", self.max_result_bytes),
        ] {
            if !(MIN_BYTES..=MAX_BYTES).contains(&value) {
                p.push(
                    name,
                    format_args!("must be between {MIN_BYTES} and {MAX_BYTES}, got {value}"),
                );
            }
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&self.sync_timeout) {
            p.push("syncTimeout", "must be between 1ms and 1h");
        }
        p.field("submitRate", |p| {
            for (key, limit) in &self.submit_rate {
                p.entry(key, |p| {
                    if key != DEFAULT_RATE_KEY && !is_role(key) {
                        p.here(format_args!(
                            "must be `{DEFAULT_RATE_KEY}` or a role name matching {ROLE_PATTERN}"
                        ));
                    }
                    limit.check(p);
                });
            }
        });
    }
}

/// A token bucket: `perSecond` tokens added per second, up to `burst`; a submission takes
/// one, and without one it is refused with RESOURCE_EXHAUSTED and a retry delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitConfig {
    /// Sustained rate. Submissions per second, `1..=1000000`; default `100`.
    pub per_second: u32,
    /// Largest burst. Submissions, `1..=1000000`; default `200`.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
        }
    }
}

impl Validate for RateLimitConfig {
    fn check(&self, p: &mut Problems) {
        for (name, value) in [("perSecond", self.per_second), ("burst", self.burst)] {
            if !(1..=1_000_000).contains(&value) {
                p.push(
                    name,
                    format_args!("must be between 1 and 1000000, got {value}"),
                );
            }
        }
    }
}
