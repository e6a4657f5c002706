//! Whole-configuration tests: the schema, serde round trips, cross-section rules, and the
//! reference tables in the README and the resilience crate's docs against `Default`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::resilience::ResilienceConfig;
use crate::*;

/// A valid configuration with one entry in each map, so every type is reached.
fn sample() -> StackConfig {
    let mut config = StackConfig::default();
    config.database.url = "postgres://app:secret@db/app".into();
    config.external_services.insert(
        "payments".into(),
        ExternalServiceConfig {
            endpoint: "http://payments.billing.svc:8080".into(),
            ..ExternalServiceConfig::default()
        },
    );
    config.routes.insert(
        "charge".into(),
        RouteConfig {
            service: "payments".into(),
            ordering_key: Some("/accountId".into()),
            ..RouteConfig::default()
        },
    );
    config
}

#[test]
fn defaults_and_sample_are_valid_except_the_required_url() {
    sample().validate().unwrap();
    let problems = StackConfig::default().validate().unwrap_err().problems;
    assert_eq!(
        problems,
        ["database.url: is required (or set DATABASE_URL or DATABASE_URL_FILE)"]
    );
}

#[test]
fn round_trips_through_json() {
    for config in [StackConfig::default(), sample()] {
        let text = serde_json::to_string_pretty(&config).unwrap();
        let back: StackConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
    let empty: StackConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, StackConfig::default());
}

#[test]
fn serialises_camel_case_with_canonical_durations() {
    let value = serde_json::to_value(sample()).unwrap();
    assert_eq!(value["server"]["grpcAddr"], "0.0.0.0:8080");
    assert_eq!(value["auth"]["keyReloadInterval"], "1m");
    assert_eq!(value["auth"]["refreshTokenTtl"], "14d");
    assert_eq!(value["queue"]["retention"], "7d");
    assert_eq!(value["externalServices"]["payments"]["protocol"], "http");
    assert_eq!(
        value["externalServices"]["payments"]["resilience"]["timeout"]["perAttempt"],
        "2s"
    );
    assert_eq!(value["routes"]["charge"]["maxJobAttempts"], 5);
    assert_eq!(value["routes"]["charge"]["jobBackoff"]["max"], "5m");
    assert_eq!(
        value["requests"]["submitRate"],
        json!({"default": {"perSecond": 100, "burst": 200}})
    );
    assert!(!value.to_string().contains('_'), "{value}");
}

#[test]
fn unknown_and_snake_case_keys_are_errors() {
    for bad in [
        r#"{"server": {"grpc_addr": "127.0.0.1:1"}}"#,
        r#"{"externalServices": {"a": {"endpoint": "http://a", "timeout": "1s"}}}"#,
        r#"{"routes": {"a": {"maxAttempts": 3}}}"#,
        r#"{"requests": {"submitRate": {"default": {"perMinute": 3}}}}"#,
        r#"{"externalServices": {"a": {"protocol": "HTTP"}}}"#,
    ] {
        assert!(serde_json::from_str::<StackConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn cross_section_rules_name_the_full_path() {
    let mut config = sample();
    config.external_services.insert(
        "Bad_Name".into(),
        ExternalServiceConfig {
            endpoint: "payments:8080".into(),
            protocol: Protocol::Grpc,
            resilience: ResilienceConfig::default(),
        },
    );
    let payments = config.external_services.get_mut("payments").unwrap();
    payments.resilience.retry.max_backoff = Duration::from_millis(1);
    config.routes.insert(
        "refund.v2".into(),
        RouteConfig {
            service: "refunds".into(),
            ordering_key: Some("accountId".into()),
            ..RouteConfig::default()
        },
    );
    let charge = config.routes.get_mut("charge").unwrap();
    charge.timeout = Duration::from_secs(1);
    charge.max_job_attempts = 0;
    config.requests.max_payload_bytes = 8 * 1024 * 1024;
    config.requests.submit_rate.insert(
        "Admins".into(),
        RateLimitConfig {
            per_second: 0,
            burst: 1,
        },
    );
    config.worker.claim_batch = 100;
    config.worker.concurrency = 10;
    let problems = config.validate().unwrap_err().problems;
    let expected = [
        "externalServices.Bad_Name: external service names must match ^[a-z0-9][a-z0-9._-]{0,62}$",
        "externalServices.Bad_Name.endpoint: must be an absolute http(s) URL such as http://payments.billing.svc:8080",
        "externalServices.payments.resilience.retry.maxBackoff: must be at least initialBackoff (100ms)",
        "routes.charge.maxJobAttempts: must be between 1 and 100, got 0",
        "routes.charge.timeout: must be at least externalServices.payments.resilience.timeout.perAttempt (2s), or no attempt could use its time",
        "routes.\"refund.v2\".orderingKey: must be a JSON pointer (RFC 6901) starting with `/`, e.g. `/accountId`",
        "routes.\"refund.v2\".service: names no declared external service \"refunds\" (declared: Bad_Name, payments)",
        "worker.claimBatch: must be at most concurrency (10)",
        "requests.submitRate.Admins: must be `default` or a role name matching ^[a-z][a-z0-9_-]{0,31}$",
        "requests.submitRate.Admins.perSecond: must be between 1 and 1000000, got 0",
        "requests.maxPayloadBytes: must be at most server.maxMessageBytes (4194304), or it could not be sent",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn route_kind_names_are_checked() {
    let mut config = sample();
    let route = config.routes["charge"].clone();
    config.routes.insert("Charge Card".into(), route);
    let problems = config.validate().unwrap_err().problems;
    assert_eq!(
        problems,
        ["routes.\"Charge Card\": route kind names must match ^[a-z0-9][a-z0-9._-]{0,62}$"]
    );
}

// --- The schema ---------------------------------------------------------------------------

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/$defs/");
            resolve(&defs[name], defs)
        }
        None => schema,
    }
}

/// Walks the schema beside a value of it: every property whose value is a duration string
/// must have the duration pattern, and every property with the pattern must hold one.
fn check_durations(schema: &Value, value: &Value, defs: &Value, path: &str, seen: &mut usize) {
    let schema = resolve(schema, defs);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (key, property) in properties {
            let property = resolve(property, defs);
            let child = &value[key];
            let child_path = format!("{path}.{key}");
            let has_pattern =
                property.get("pattern").and_then(Value::as_str) == Some(duration::PATTERN);
            let is_duration = child.as_str().is_some_and(|s| duration::parse(s).is_ok());
            assert_eq!(has_pattern, is_duration, "{child_path}: {property}");
            if has_pattern {
                assert_eq!(property["type"], "string", "{child_path}");
                *seen += 1;
            }
            check_durations(property, child, defs, &child_path, seen);
        }
    }
    if let Some(entries) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        let map = value.as_object().expect("a map has a value");
        assert!(!map.is_empty(), "{path}: give the sample an entry");
        for (key, entry) in map {
            check_durations(entries, entry, defs, &format!("{path}.{key}"), seen);
        }
    }
}

#[test]
fn schema_has_every_duration_pattern_and_stays_structural() {
    let schema = serde_json::to_value(schemars::schema_for!(StackConfig)).unwrap();
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let value = serde_json::to_value(sample()).unwrap();
    let mut seen = 0;
    check_durations(&schema, &value, &defs, "", &mut seen);
    // server 4, database 2, auth 7 (lockout's included), resilience 9, route 3, queue 6,
    // requests 1.
    assert_eq!(seen, 32);
    let text = schema.to_string();
    assert!(!text.contains("oneOf"), "{text}");
    for (name, def) in defs.as_object().unwrap() {
        for key in def["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(!key.contains('_'), "{name}.{key} is not camelCase");
        }
    }
    let protocol = resolve(
        &defs["ExternalServiceConfig"]["properties"]["protocol"],
        &defs,
    );
    assert_eq!(protocol["enum"], json!(["http", "grpc"]));
    let route = &defs["RouteConfig"]["properties"];
    assert_eq!(route["timeout"]["default"], "30s");
    let doc = route["maxJobAttempts"]["description"].as_str().unwrap();
    let doc = doc.replace('\n', " ");
    assert!(doc.contains("in-call retries are not counted"), "{doc:?}");
}

// --- Reference tables ---------------------------------------------------------------------

/// The rows of the first Markdown table after `heading`: (key, default cell).
fn table(document: &str, heading: &str, prefix: &str) -> Vec<(String, String)> {
    let lines: Vec<String> = document
        .lines()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).trim().to_owned())
        .collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("no {heading:?}"));
    let header = lines[start..]
        .iter()
        .position(|l| l.starts_with('|'))
        .map(|i| start + i)
        .unwrap();
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let default_column = cells(&lines[header])
        .iter()
        .position(|c| c == "default")
        .unwrap();
    lines[header + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let row = cells(l);
            (
                row[0].trim_matches('`').to_owned(),
                row[default_column].clone(),
            )
        })
        .collect()
}

/// The value at a dotted key; `<…>` segments take a map's first entry.
fn lookup<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(value, |v, segment| {
        if segment.starts_with('<') {
            v.as_object()?.values().next()
        } else {
            v.get(segment)
        }
    })
}

/// Leaf keys of a value, map entries named by their stand-in (`<name>`).
fn leaves(value: &Value, path: &str, maps: &[(&str, &str)], out: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(object) => {
            let stand_in = maps.iter().find(|(p, _)| *p == path).map(|(_, name)| *name);
            for (key, child) in object {
                let key = stand_in.unwrap_or(key);
                let child_path = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                leaves(child, &child_path, maps, out);
            }
        }
        None => {
            out.insert(path.to_owned());
        }
    }
}

/// Checks each row's literal default against `defaults`, and that every leaf is a row
/// (leaves under `skip` are documented elsewhere).
fn check_table(rows: &[(String, String)], defaults: &Value, maps: &[(&str, &str)], skip: &str) {
    let mut documented = BTreeSet::new();
    for (key, cell) in rows {
        documented.insert(key.clone());
        // `database.url` is left out when written while unset (it comes from the environment).
        let unset = Value::Null;
        let actual = match lookup(defaults, key) {
            Some(actual) => actual,
            None if key == "database.url" => &unset,
            None => panic!("{key}: no such setting"),
        };
        // Only literal defaults (`…`) are checked; `— (required)` and the like are prose.
        let Some(literal) = cell.strip_prefix('`').and_then(|c| c.split('`').next()) else {
            assert!(
                actual.is_null() || actual == "" || actual.is_object(),
                "{key}: the default {actual} is not in the table"
            );
            continue;
        };
        let agrees = match actual {
            Value::String(s) => match duration::parse(s) {
                Ok(d) => duration::parse(literal) == Ok(d),
                Err(_) => s == literal,
            },
            Value::Number(n) => literal.parse::<f64>().ok() == n.as_f64(),
            Value::Bool(b) => literal == b.to_string(),
            Value::Null => true,
            other => serde_json::from_str::<Value>(literal).ok().as_ref() == Some(other),
        };
        assert!(
            agrees,
            "{key}: the table says {literal}, Default says {actual}"
        );
    }
    let mut all = BTreeSet::new();
    leaves(defaults, "", maps, &mut all);
    for leaf in all {
        if !skip.is_empty() && leaf.starts_with(skip) {
            continue;
        }
        assert!(documented.contains(&leaf), "{leaf} is not in the table");
    }
}

const README: &str = include_str!("../../../README.md");
const MAPS: [(&str, &str); 3] = [
    ("externalServices", "<name>"),
    ("routes", "<kind>"),
    ("requests.submitRate", "<role>"),
];

/// The defaults, with a default entry in each map for the `<…>` rows.
fn reference_defaults() -> Value {
    let mut config = StackConfig::default();
    config
        .external_services
        .insert("x".into(), ExternalServiceConfig::default());
    config.routes.insert("x".into(), RouteConfig::default());
    serde_json::to_value(config).unwrap()
}

#[test]
fn readme_configuration_table_matches_the_defaults() {
    let rows = table(README, "### The services' configuration", "");
    let defaults = reference_defaults();
    check_table(
        &rows,
        &defaults,
        &MAPS,
        "externalServices.<name>.resilience.",
    );
}

#[test]
fn resilience_tables_match_the_defaults() {
    let defaults = serde_json::to_value(ResilienceConfig::default()).unwrap();
    let readme = table(README, "### Resilience settings", "");
    check_table(&readme, &defaults, &[], "");
    let crate_docs = include_str!("../../resilience/src/lib.rs");
    let docs = table(crate_docs, "# Configuration", "//!");
    check_table(&docs, &defaults, &[], "");
}
