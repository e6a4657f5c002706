//! Loading the configuration: defaults, then a TOML file, then `APPSTACK_*` environment
//! variables, then command-line flags, each layer overriding the one before. The types,
//! their defaults and their rules are `appstack_config`'s; this module only layers the
//! sources (figment) and checks what the light crate cannot.
//!
//! Keys are camelCase everywhere (`server.grpcAddr`), as in the `AppStack` resource.
//! Environment variables stay SCREAMING_SNAKE_CASE: `APPSTACK_DATABASE__MAX_CONNECTIONS`
//! sets `database.maxConnections` (`__` separates the parts of the path; each part is turned
//! from snake_case into camelCase). Map entries (`externalServices`, `routes`,
//! `requests.submitRate`) are set in the file only: their names (`payment.v2`) have no
//! SCREAMING_SNAKE form, so a variable under them is refused with a message saying so.
//! Unknown keys are errors, so a typo is reported, not ignored.

use std::path::Path;

use appstack_config::{InvalidConfig, Problems, Validate};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Serialize, de::DeserializeOwned};

/// The environment prefix of every setting: `APPSTACK_DATABASE__URL` sets `database.url`.
pub const ENV_PREFIX: &str = "APPSTACK_";

/// `APPSTACK_*` variables that are not settings (read by the binary itself), named without
/// the prefix; every `APPSTACK_TEST_*` belongs to the test support. Without this rule,
/// setting the documented `APPSTACK_CONFIG` would fail every load as an unknown key `config`.
pub const NON_SETTING_ENV: &[&str] = &["CONFIG", "ADMIN_PASSWORD"];

/// The maps of the configuration, whose entries the environment cannot set.
pub const MAP_KEYS: &[&str] = &["externalServices", "routes", "requests.submitRate"];

/// What an `APPSTACK_*` variable (prefix stripped) is to the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvKey {
    /// A setting at this camelCase dotted path.
    Setting(String),
    /// Not a setting ([`NON_SETTING_ENV`], `TEST_*`): skipped.
    NotASetting,
    /// Inside one of the [`MAP_KEYS`] (named here): refused.
    MapEntry(&'static str),
}

/// Classifies the `APPSTACK_*` variable `name` (prefix stripped, any case):
/// `DATABASE__MAX_CONNECTIONS` is the setting `database.maxConnections`.
pub fn env_key(name: &str) -> EnvKey {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("TEST_") || NON_SETTING_ENV.contains(&upper.as_str()) {
        return EnvKey::NotASetting;
    }
    let path = name
        .split("__")
        .map(snake_to_camel)
        .collect::<Vec<_>>()
        .join(".");
    match MAP_KEYS
        .iter()
        .find(|map| path == **map || path.starts_with(&format!("{map}.")))
    {
        Some(map) => EnvKey::MapEntry(map),
        None => EnvKey::Setting(path),
    }
}

/// `MAX_CONNECTIONS` (any case) → `maxConnections`.
fn snake_to_camel(part: &str) -> String {
    let mut camel = String::with_capacity(part.len());
    for (i, word) in part.split('_').filter(|w| !w.is_empty()).enumerate() {
        let word = word.to_ascii_lowercase();
        if i == 0 {
            camel.push_str(&word);
        } else {
            let mut chars = word.chars();
            camel.extend(chars.next().map(|c| c.to_ascii_uppercase()));
            camel.push_str(chars.as_str());
        }
    }
    camel
}

/// `maxConnections` (any case of the first letter) → `MAX_CONNECTIONS`.
fn camel_to_snake(part: &str) -> String {
    let mut snake = String::with_capacity(part.len() + 4);
    for c in part.chars() {
        if c.is_ascii_uppercase() && !snake.is_empty() {
            snake.push('_');
        }
        snake.push(c.to_ascii_uppercase());
    }
    snake
}

/// The `APPSTACK_*` environment as settings, named in errors by both the camelCase path
/// and the variable: `auth.accessTokenTtl (APPSTACK_AUTH__ACCESS_TOKEN_TTL)` (figment's own
/// `Env` would say `AUTH.ACCESSTOKENTTL`).
struct SettingsEnv(Env);

impl Provider for SettingsEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{ENV_PREFIX}` environment variable(s)")).interpolater(
            |_: &Profile, keys: &[&str]| {
                let variable: Vec<String> = keys.iter().map(|k| camel_to_snake(k)).collect();
                format!("{} ({ENV_PREFIX}{})", keys.join("."), variable.join("__"))
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.0.data()
    }
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an environment variable or a flag holds a value of the wrong shape.
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    /// Every value parsed but some break a rule; one message per broken rule.
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(error: Box<figment::Error>) -> Self {
        Self::Load(error)
    }
}

/// Layers configuration sources, last one wins.
#[derive(Debug)]
pub struct ConfigLoader {
    figment: Figment,
    /// `APPSTACK_*` variables under a map, refused at [`Self::load`].
    map_variables: Vec<(String, &'static str)>,
    /// Environment problems found while layering (an unreadable `DATABASE_URL_FILE`),
    /// reported at [`Self::load`] with the rest.
    environment_problems: Vec<(&'static str, String)>,
}

/// The environment variable naming a file that holds the database URL: a Secret mounted as
/// a file, so the URL is in neither the pod spec's environment nor `/proc/<pid>/environ`.
pub const DATABASE_URL_FILE_ENV: &str = "DATABASE_URL_FILE";

/// The largest database URL file read; anything bigger is not a URL.
const DATABASE_URL_FILE_LIMIT: u64 = 64 * 1024;

impl ConfigLoader {
    /// Starts from the defaults of `T`.
    pub fn new<T: Serialize + Default>() -> Self {
        Self::with_defaults(&T::default())
    }

    /// Starts from `defaults` instead of `T::default()`: a role with defaults of its own
    /// (`dev`) puts them below every other source.
    pub fn with_defaults<T: Serialize>(defaults: &T) -> Self {
        Self {
            figment: Figment::from(Serialized::defaults(defaults)),
            map_variables: Vec::new(),
            environment_problems: Vec::new(),
        }
    }

    /// Adds a TOML file (camelCase keys); a file that does not exist is an error.
    pub fn file(mut self, path: &Path) -> Self {
        self.figment = self.figment.merge(Toml::file_exact(path));
        self
    }

    /// Adds the `APPSTACK_*` environment and the conventional `DATABASE_URL` (or
    /// `DATABASE_URL_FILE`, the path of a file holding it; not both), which
    /// `APPSTACK_DATABASE__URL` overrides.
    pub fn env(mut self) -> Self {
        if let Some(path) = std::env::var_os(DATABASE_URL_FILE_ENV) {
            if std::env::var_os("DATABASE_URL").is_some() {
                self.environment_problems.push((
                    DATABASE_URL_FILE_ENV,
                    "is set together with DATABASE_URL; set one of them".into(),
                ));
            } else {
                match read_url_file(Path::new(&path)) {
                    Ok(url) => {
                        self.figment = self.figment.merge(Serialized::default("database.url", url));
                    }
                    Err(problem) => self
                        .environment_problems
                        .push((DATABASE_URL_FILE_ENV, problem)),
                }
            }
        }
        self.figment = self.figment.merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "database.url".into()),
        );
        self.prefixed_env()
    }

    /// Adds only the `APPSTACK_*` environment, not `DATABASE_URL`: for `dev`, whose database
    /// is its own, and which must not trip over a `DATABASE_URL` a shell keeps for other tools.
    pub fn prefixed_env(mut self) -> Self {
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let Some(stripped) = strip_prefix_ignoring_case(&name, ENV_PREFIX) else {
                continue;
            };
            if let EnvKey::MapEntry(map) = env_key(stripped) {
                self.map_variables.push((name.into_owned(), map));
            }
        }
        self.figment = self.figment.merge(SettingsEnv(
            Env::prefixed(ENV_PREFIX)
                .filter_map(|key| match env_key(key.as_str()) {
                    EnvKey::Setting(path) => Some(path.into()),
                    EnvKey::NotASetting | EnvKey::MapEntry(_) => None,
                })
                // After `filter_map`, which resets it: keep the camelCase paths.
                .lowercase(false),
        ));
        self
    }

    /// Sets one value by its camelCase dotted path (`server.grpcAddr`), e.g. from a flag.
    pub fn set<V: Serialize>(mut self, key: &str, value: V) -> Self {
        self.figment = self.figment.merge(Serialized::default(key, value));
        self
    }

    /// Builds the typed configuration and checks its rules: the type's own
    /// ([`Validate`]), a valid `log.filter` (tracing's syntax, which the light crate does
    /// not know) when the configuration has one, and no environment variable under a map.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Load`] for a value of the wrong shape or an unknown key,
    /// [`ConfigError::Invalid`] listing every broken rule.
    pub fn load<T: DeserializeOwned + Validate>(self) -> Result<T, ConfigError> {
        let config: T = self.figment.extract().map_err(Box::new)?;
        let mut problems = Problems::new();
        for (name, problem) in &self.environment_problems {
            problems.push(name, problem);
        }
        for (name, map) in &self.map_variables {
            problems.push(
                name,
                format_args!(
                    "{map} entries are set in the configuration file, not the environment (their names have no SCREAMING_SNAKE form)"
                ),
            );
        }
        config.check(&mut problems);
        if let Ok(filter) = self.figment.extract_inner::<String>("log.filter")
            && let Err(error) = tracing_subscriber::EnvFilter::try_new(&filter)
        {
            problems.field("log", |p| {
                p.push("filter", format_args!("is not a valid filter: {error}"));
            });
        }
        problems.into_result()?;
        Ok(config)
    }
}

/// The URL in a `DATABASE_URL_FILE`: its text without surrounding whitespace (a file
/// written with `echo` ends in a newline). The message never holds the file's content.
fn read_url_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let mut text = String::new();
    file.take(DATABASE_URL_FILE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read {} as UTF-8 text: {error}", path.display()))?;
    if text.len() as u64 > DATABASE_URL_FILE_LIMIT {
        return Err(format!(
            "{} is larger than {DATABASE_URL_FILE_LIMIT} bytes; it must hold one URL",
            path.display()
        ));
    }
    let url = text.trim();
    if url.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(url.to_owned())
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use appstack_config::StackConfig;

    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn layers_file_then_flags() {
        let (_dir, path) = file(
            "[database]\nurl = \"postgres://a:secret@h/db\"\nacquireTimeout = \"250ms\"\n[server]\nshutdownGrace = \"3s\"\n",
        );
        let cfg: StackConfig = ConfigLoader::new::<StackConfig>()
            .file(&path)
            .set("server.grpcAddr", "127.0.0.1:7000")
            .load()
            .unwrap();
        assert_eq!(cfg.database.acquire_timeout, Duration::from_millis(250));
        assert_eq!(cfg.server.shutdown_grace, Duration::from_secs(3));
        assert_eq!(cfg.server.grpc_addr, "127.0.0.1:7000".parse().unwrap());
        assert!(!format!("{:?}", cfg.database).contains("secret"));
    }

    #[test]
    fn unknown_key_snake_case_and_bad_duration_are_errors() {
        for (text, named) in [
            ("[server]\ngrpcAdr = \"127.0.0.1:1\"\n", "grpcAdr"),
            ("[server]\ngrpc_addr = \"127.0.0.1:1\"\n", "grpc_addr"),
            ("[server]\nshutdownGrace = \"soon\"\n", "shutdownGrace"),
            ("[server]\nshutdownGrace = \"1.5s\"\n", "shutdownGrace"),
        ] {
            let (_dir, path) = file(text);
            let err = ConfigLoader::new::<StackConfig>()
                .file(&path)
                .load::<StackConfig>()
                .unwrap_err();
            assert!(err.to_string().contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn rules_are_reported_together_with_full_paths() {
        let err = ConfigLoader::new::<StackConfig>()
            .set("database.url", "mysql://x")
            .set("database.maxConnections", 0)
            .set("log.filter", "info,[")
            .load::<StackConfig>()
            .unwrap_err();
        let ConfigError::Invalid(invalid) = err else {
            panic!("not a rule error: {err}")
        };
        assert_eq!(invalid.problems.len(), 4, "{invalid}");
        assert!(invalid.problems[0].starts_with("database.url: must start with postgres://"));
        assert!(invalid.problems[1].starts_with("database.maxConnections: "));
        assert!(invalid.problems[2].starts_with("database.minConnections: "));
        assert!(invalid.problems[3].starts_with("log.filter: is not a valid filter"));
    }

    #[test]
    fn map_entries_come_from_the_file() {
        let (_dir, path) = file(
            r#"
[database]
url = "postgres://app@db/app"

[externalServices.payments]
endpoint = "http://payments:8080"
resilience.retry.maxAttempts = 2

[routes."charge.v2"]
service = "payments"
orderingKey = "/accountId"

[requests.submitRate.admin]
perSecond = 1000
"#,
        );
        let cfg: StackConfig = ConfigLoader::new::<StackConfig>()
            .file(&path)
            .load()
            .unwrap();
        assert_eq!(
            cfg.external_services["payments"]
                .resilience
                .retry
                .max_attempts,
            2
        );
        assert_eq!(
            cfg.routes["charge.v2"].ordering_key.as_deref(),
            Some("/accountId")
        );
        // The file's entry joins the default one.
        assert_eq!(cfg.requests.submit_rate["admin"].per_second, 1000);
        assert_eq!(cfg.requests.submit_rate["admin"].burst, 200);
        assert!(cfg.requests.submit_rate.contains_key("default"));
    }

    #[test]
    fn errors_name_the_variable_back() {
        assert_eq!(camel_to_snake("accessTokenTtl"), "ACCESS_TOKEN_TTL");
        assert_eq!(camel_to_snake("auth"), "AUTH");
        let md = SettingsEnv(Env::prefixed(ENV_PREFIX)).metadata();
        assert_eq!(
            md.interpolate(&Profile::Default, &["auth", "password", "memoryKib"]),
            "auth.password.memoryKib (APPSTACK_AUTH__PASSWORD__MEMORY_KIB)"
        );
    }

    #[test]
    fn environment_names_map_to_camel_case_paths() {
        let setting = |p: &str| EnvKey::Setting(p.to_owned());
        assert_eq!(
            env_key("DATABASE__MAX_CONNECTIONS"),
            setting("database.maxConnections")
        );
        assert_eq!(env_key("database__url"), setting("database.url"));
        assert_eq!(env_key("SERVER__GRPC_ADDR"), setting("server.grpcAddr"));
        assert_eq!(
            env_key("AUTH__PASSWORD__MEMORY_KIB"),
            setting("auth.password.memoryKib")
        );
        assert_eq!(env_key("AUTH__JWKS_URI"), setting("auth.jwksUri"));
        assert_eq!(env_key("QUEUE__PURGE_BATCH"), setting("queue.purgeBatch"));
        assert_eq!(env_key("CONFIG"), EnvKey::NotASetting);
        assert_eq!(env_key("admin_password"), EnvKey::NotASetting);
        assert_eq!(env_key("TEST_PG_DIR"), EnvKey::NotASetting);
        assert_eq!(
            env_key("ROUTES__CHARGE__SERVICE"),
            EnvKey::MapEntry("routes")
        );
        assert_eq!(
            env_key("EXTERNAL_SERVICES__PAYMENTS__ENDPOINT"),
            EnvKey::MapEntry("externalServices")
        );
        assert_eq!(
            env_key("REQUESTS__SUBMIT_RATE__DEFAULT__BURST"),
            EnvKey::MapEntry("requests.submitRate")
        );
        assert_eq!(
            env_key("REQUESTS__MAX_PAYLOAD_BYTES"),
            setting("requests.maxPayloadBytes")
        );
    }

    /// The defaults written as TOML (what an operator or `dev` would write) load back as
    /// themselves.
    #[test]
    fn defaults_round_trip_through_a_toml_file() {
        let mut config = StackConfig::default();
        config.database.url = "postgres://app@db/app".into();
        config.external_services.insert(
            "payments".into(),
            appstack_config::ExternalServiceConfig {
                endpoint: "http://payments:8080".into(),
                ..Default::default()
            },
        );
        config.routes.insert(
            "charge".into(),
            appstack_config::RouteConfig {
                service: "payments".into(),
                ..Default::default()
            },
        );
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("grpcAddr"), "{text}");
        let (_dir, path) = file(&text);
        let loaded: StackConfig = ConfigLoader::new::<StackConfig>()
            .file(&path)
            .load()
            .unwrap();
        assert_eq!(loaded, config);
    }
}
