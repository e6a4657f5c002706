//! The services' configuration file (TOML) in the stack's ConfigMap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use appstack_config::{StackConfig, Validate as _};
use k8s_openapi::api::core::v1::ConfigMap;

use super::RenderError;
use super::names::{Owner, short_hash};
use crate::crd::AppStackSpec;

/// The gRPC port of every component.
pub const GRPC_PORT: u16 = 8080;
/// The admin HTTP port (`/healthz`, `/readyz`, `/metrics`, JWKS) of every component.
pub const ADMIN_PORT: u16 = 9090;
/// Where the configuration file is mounted.
pub const CONFIG_DIR: &str = "/etc/appstack";
/// The file's name in the ConfigMap and the mount.
pub const CONFIG_FILE: &str = "appstack.toml";
/// Where auth's signing keys are mounted.
pub const KEYS_DIR: &str = "/var/run/appstack/auth-keys";
/// Where the database Secret's key is mounted, outside the ConfigMap's folder (a mount
/// inside a ConfigMap volume would need a mount point in a read-only volume).
pub const DATABASE_DIR: &str = "/var/run/appstack/database";
/// The file in [`DATABASE_DIR`] holding the URL; `DATABASE_URL_FILE` names it.
pub const DATABASE_URL_FILE: &str = "url";

/// The configuration every component reads: the spec's, with the fields the operator owns
/// set (listen ports, key folder, the auth and worker endpoints, no migrations at start).
pub(crate) fn stack_config(spec: &AppStackSpec, owner: &Owner) -> StackConfig {
    let mut config = spec.config.clone();
    config.server.grpc_addr = SocketAddr::from(([0, 0, 0, 0], GRPC_PORT));
    config.server.admin_addr = SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT));
    // From the Secret, through DATABASE_URL_FILE: never in a ConfigMap.
    config.database.url = String::new();
    config.database.migrate_on_start = false;
    config.auth.keys_dir = PathBuf::from(KEYS_DIR);
    config.auth.generate_key_if_missing = false;
    let auth_host = format!("{}.{}.svc", owner.child_name("auth"), owner.namespace);
    config.auth.endpoint = format!("http://{auth_host}:{GRPC_PORT}");
    if config.auth.jwks_uri.is_none() {
        config.auth.jwks_uri = Some(format!(
            "http://{auth_host}:{ADMIN_PORT}/.well-known/jwks.json"
        ));
    }
    // main's front door forwards WorkerAdmin's JSON routes to the worker's Service.
    config.front_door.worker_endpoint = Some(format!(
        "http://{}.{}.svc:{GRPC_PORT}",
        owner.child_name("worker"),
        owner.namespace
    ));
    if let Some(level) = &spec.observability.log_level {
        config.log.filter = level.clone();
    }
    config
}

/// The configuration file and its hash.
pub(crate) struct ConfigFile {
    pub text: String,
    pub hash: String,
}

/// Renders and checks the file: every broken rule (but the database URL, which comes from
/// the Secret at run time) is an error naming its key.
pub(crate) fn config_file(spec: &AppStackSpec, owner: &Owner) -> Result<ConfigFile, RenderError> {
    let config = stack_config(spec, owner);
    let mut checked = config.clone();
    checked.database.url = "postgres://checked-at-render@localhost/appstack".into();
    if let Err(invalid) = checked.validate() {
        return Err(RenderError::InvalidConfig(
            invalid
                .problems
                .into_iter()
                .map(|problem| format!("config.{problem}"))
                .collect(),
        ));
    }
    let body = toml::to_string(&config).map_err(|e| RenderError::Serialize(e.to_string()))?;
    let text = format!(
        "# Rendered by appstack-operator from AppStack {}/{}; edits are overwritten.\n{body}",
        owner.namespace, owner.name
    );
    let hash = short_hash(text.as_bytes());
    Ok(ConfigFile { text, hash })
}

/// The ConfigMap holding `file`.
pub(crate) fn config_map(owner: &Owner, file: &ConfigFile) -> ConfigMap {
    ConfigMap {
        metadata: owner.meta(owner.child_name("config"), "config"),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            file.text.clone(),
        )])),
        ..ConfigMap::default()
    }
}
