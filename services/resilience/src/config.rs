//! The one configuration type for the whole pipeline, defined in `appstack_config` (the
//! stack's light configuration crate, which the operator renders into the `AppStack`
//! resource) and re-exported here under its usual names.
//!
//! [`ResilienceConfig`] sits at `externalServices.<name>.resilience` in the services'
//! configuration and in the custom resource, so its field names (camelCase), units and
//! defaults are part of the product. Durations are strings of the stack's grammar
//! (`"250ms"`, `"2s"`, `"1m30s"`: [`appstack_config::duration`]); rates are percentages in
//! `0..=100` or plain ratios where stated.
//!
//! Every struct is `deny_unknown_fields`: a misspelt key is an error naming the key, not a
//! silently ignored setting. [`ResilienceConfig::validate`] checks the ranges and the
//! cross-field rules and reports every broken rule at once, each message starting with the
//! field's camelCase path (`retry.maxBackoff: …`).

pub use appstack_config::resilience::*;
pub use appstack_config::{InvalidConfig, Validate};
