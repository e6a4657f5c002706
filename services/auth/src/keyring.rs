//! The live signing key and the published key set.
//!
//! The active key lives in memory and is swapped when the key folder changes; the published
//! set comes from the database, so every replica publishes the same keys, including retired
//! ones whose tokens may still be valid.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use appstack_proto::auth::v1::Jwk;
use appstack_verifier::{KeySource, VerifyError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;

use crate::error::AuthError;
use crate::signing::{self, KeyPair};
use crate::store::Store;

/// The signing key in use and how to reload it.
pub struct KeyRing {
    dir: PathBuf,
    active: RwLock<Arc<KeyPair>>,
    store: Store,
    /// Keys stay published this long after retirement: the access-token lifetime plus clock
    /// skew.
    publish_window: Duration,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the folder (creating a key when allowed and none exists) and registers the
    /// keys in the database.
    pub async fn load(
        dir: PathBuf,
        generate_if_missing: bool,
        store: Store,
        publish_window: Duration,
    ) -> Result<Self, AuthError> {
        let active = Arc::new(read_active(&dir, generate_if_missing)?);
        let ring = Self {
            dir,
            active: RwLock::new(active),
            store,
            publish_window,
        };
        ring.sync().await?;
        Ok(ring)
    }

    /// The key that signs now.
    pub fn active(&self) -> Arc<KeyPair> {
        match self.active.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the folder; registers every key and swaps the signing key when a newer one
    /// appeared. Returns the active `kid`.
    pub async fn sync(&self) -> Result<String, AuthError> {
        let folder = signing::load_folder(&self.dir)?;
        let Some(newest) = folder.active() else {
            return Err(signing::KeyError::NoKeys(self.dir.clone()).into());
        };
        let keys: Vec<(String, [u8; 32])> = folder
            .keys
            .iter()
            .map(|k| (k.kid.clone(), k.public_key))
            .collect();
        let active_kid = newest.kid.clone();
        match self.store.register_keys(&keys, &active_kid).await? {
            Ok(true) => tracing::info!(kid = %active_kid, "new signing key active"),
            Ok(false) => {}
            Err(conflict) => return Err(AuthError::KeyConflict(conflict)),
        }
        if self.active().kid != active_kid {
            let mut folder = folder;
            if let Some(pair) = folder.keys.pop() {
                match self.active.write() {
                    Ok(mut k) => *k = Arc::new(pair),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(pair),
                }
            }
        }
        Ok(active_kid)
    }

    /// The published keys as JWKs, newest first.
    pub async fn jwks(&self) -> Result<Vec<Jwk>, AuthError> {
        let keys = self.store.published_keys(self.publish_window).await?;
        Ok(keys
            .into_iter()
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(&k.public_key),
                kid: k.kid,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect())
    }

    /// Re-reads the folder every `interval` until `stop`; failures are logged and retried.
    pub async fn run_reload(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        appstack_common::shutdown::run_every(interval, stop, || async {
            if let Err(error) = self.sync().await {
                tracing::warn!(%error, "reloading signing keys failed; keeping the current key");
            }
        })
        .await;
    }
}

fn read_active(dir: &std::path::Path, generate_if_missing: bool) -> Result<KeyPair, AuthError> {
    let mut folder = signing::load_folder(dir)?;
    if folder.active().is_none() && generate_if_missing {
        let path = signing::generate_key_file(dir, &signing::new_kid())?;
        tracing::info!(path = %path.display(), "generated a signing key");
        folder = signing::load_folder(dir)?;
    }
    folder
        .keys
        .pop()
        .ok_or_else(|| signing::KeyError::NoKeys(dir.to_owned()).into())
}

/// The published keys, read from the database, as a verifier key source: the auth service
/// verifies its own tokens (WhoAmI, admin rpcs) exactly as other services do.
impl KeySource for KeyRing {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, VerifyError>> {
        Box::pin(async move {
            self.jwks()
                .await
                .map_err(|e| VerifyError::KeysUnavailable(e.to_string()))
        })
    }
}
