//! Public keys for verification: where they come from and how they are cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::auth::v1::{GetJwksRequest, Jwk};
use futures_util::future::BoxFuture;
use jsonwebtoken::DecodingKey;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::verifier::VerifyError;

/// Where public keys come from.
pub trait KeySource: Send + Sync + 'static {
    /// Every currently published key.
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, VerifyError>>;
}

/// Fetches the JWKS from the auth service over gRPC.
#[derive(Clone, Debug)]
pub struct GrpcJwksSource {
    client: AuthServiceClient<Channel>,
}

impl GrpcJwksSource {
    /// A source reading through `channel` (a lazily connecting channel is fine).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

impl KeySource for GrpcJwksSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, VerifyError>> {
        let mut client = self.client.clone();
        // A client span: a fetch made for a call (a token naming an unknown key) is part
        // of that call's trace, and auth's side of it continues from here.
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = "appstack.auth.v1.AuthService/GetJwks",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "appstack.auth.v1.AuthService",
            rpc.method = "GetJwks",
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        Box::pin(
            async move {
                let mut request = tonic::Request::new(GetJwksRequest {});
                request.set_timeout(Duration::from_secs(5));
                let span = tracing::Span::current();
                appstack_trace::inject_metadata(&span, request.metadata_mut());
                let response = client.get_jwks(request).await.map_err(|status| {
                    span.record("rpc.grpc.status_code", status.code() as i32);
                    span.record("otel.status_code", "error");
                    VerifyError::KeysUnavailable(status.message().to_owned())
                })?;
                span.record("rpc.grpc.status_code", 0);
                Ok(response.into_inner().keys)
            }
            .instrument(span),
        )
    }
}

/// A fixed key set (tests, tools).
#[derive(Clone, Debug, Default)]
pub struct StaticKeySource {
    keys: Vec<Jwk>,
}

impl StaticKeySource {
    /// A source that always returns `keys`.
    pub fn new(keys: Vec<Jwk>) -> Self {
        Self { keys }
    }
}

impl KeySource for StaticKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, VerifyError>> {
        let keys = self.keys.clone();
        Box::pin(async move { Ok(keys) })
    }
}

/// Key cache settings.
#[derive(Clone, Copy, Debug)]
pub struct KeyCacheConfig {
    /// At most one refetch per this interval when tokens name unknown keys, so a flood of
    /// tokens with made-up `kid`s cannot turn into a flood of JWKS requests.
    pub min_refetch_interval: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            min_refetch_interval: Duration::from_secs(10),
        }
    }
}

type KeyMap = HashMap<String, Arc<DecodingKey>>;

/// After a failed fetch, the next one may start this soon.
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(1);

/// Decoding keys by `kid`, filled from a [`KeySource`].
pub struct KeyCache {
    source: Arc<dyn KeySource>,
    config: KeyCacheConfig,
    keys: RwLock<Arc<KeyMap>>,
    last_fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// An empty cache; the first lookup fetches.
    pub fn new(source: Arc<dyn KeySource>, config: KeyCacheConfig) -> Self {
        Self {
            source,
            config,
            keys: RwLock::new(Arc::default()),
            last_fetch: Mutex::new(None),
        }
    }

    fn snapshot(&self) -> Arc<KeyMap> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The key `kid` if cached.
    pub fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.snapshot().get(kid).cloned()
    }

    /// The key `kid`, refetching the set (rate limited) when it is not cached.
    pub async fn get(&self, kid: &str) -> Result<Arc<DecodingKey>, VerifyError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if let Some(at) = *last_fetch
            && at.elapsed() < self.config.min_refetch_interval
        {
            return Err(VerifyError::UnknownKey);
        }
        match self.source.fetch().await {
            Ok(keys) => {
                *last_fetch = Some(Instant::now());
                self.replace(keys);
            }
            Err(error) => {
                // Retry a failed fetch sooner than a successful one: the keys may be new and
                // valid tokens would be refused until then.
                let wait = self
                    .config
                    .min_refetch_interval
                    .saturating_sub(FAILED_FETCH_RETRY);
                let now = Instant::now();
                *last_fetch = Some(now.checked_sub(wait).unwrap_or(now));
                return Err(error);
            }
        }
        self.cached(kid).ok_or(VerifyError::UnknownKey)
    }

    /// Refetches the set now (periodic refresh); keeps the old set if the fetch fails.
    ///
    /// It does not count against the unknown-kid rate limit: a token signed by a key rotated
    /// in just after a periodic refresh must still trigger a fetch.
    pub async fn refresh(&self) -> Result<usize, VerifyError> {
        let _single_flight = self.last_fetch.lock().await;
        let keys = self.source.fetch().await?;
        Ok(self.replace(keys))
    }

    /// Refetches every `interval` until `stop`, so keys withdrawn from the JWKS (an
    /// emergency revocation) stop verifying without a restart. A failed fetch keeps the
    /// current set.
    pub async fn run_refresh(&self, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(error) = self.refresh().await {
                        tracing::warn!(%error, "refreshing verification keys failed; keeping the current set");
                    }
                }
            }
        }
    }

    fn replace(&self, jwks: Vec<Jwk>) -> usize {
        let map: KeyMap = jwks
            .into_iter()
            .filter(|k| {
                k.kty == "OKP" && k.crv == "Ed25519" && (k.alg.is_empty() || k.alg == "EdDSA")
            })
            .filter_map(|k| match DecodingKey::from_ed_components(&k.x) {
                Ok(key) => Some((k.kid, Arc::new(key))),
                Err(error) => {
                    tracing::warn!(kid = %k.kid, %error, "ignoring a malformed JWK");
                    None
                }
            })
            .collect();
        let count = map.len();
        match self.keys.write() {
            Ok(mut keys) => *keys = Arc::new(map),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(map),
        }
        count
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts fetches; serves one fixed JWK.
    struct CountingSource {
        fetches: AtomicUsize,
        keys: Vec<Jwk>,
    }

    impl KeySource for CountingSource {
        fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, VerifyError>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let keys = self.keys.clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    fn jwk(kid: &str) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            // A valid 32-byte point (the Ed25519 base point's encoding).
            x: "WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY".into(),
            kid: kid.into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let source = Arc::new(CountingSource {
            fetches: AtomicUsize::new(0),
            keys: vec![jwk("k1")],
        });
        let cache = KeyCache::new(
            source.clone(),
            KeyCacheConfig {
                min_refetch_interval: Duration::from_secs(10),
            },
        );

        cache.get("k1").await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        // Cached: no fetch.
        cache.get("k1").await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        // A flood of made-up kids right after a fetch costs nothing.
        for i in 0..100 {
            assert_eq!(
                cache.get(&format!("bogus{i}")).await.unwrap_err(),
                VerifyError::UnknownKey
            );
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        // After the interval, one more fetch is allowed.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.get("bogus").await.is_err());
        assert!(cache.get("bogus2").await.is_err());
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    /// Fails until told otherwise.
    struct FlakySource {
        up: std::sync::atomic::AtomicBool,
        fetches: AtomicUsize,
    }

    impl KeySource for FlakySource {
        fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, VerifyError>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let up = self.up.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(vec![jwk("k1")])
                } else {
                    Err(VerifyError::KeysUnavailable("down".into()))
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_is_retried_soon() {
        let source = Arc::new(FlakySource {
            up: false.into(),
            fetches: AtomicUsize::new(0),
        });
        let cache = KeyCache::new(
            source.clone(),
            KeyCacheConfig {
                min_refetch_interval: Duration::from_secs(10),
            },
        );
        assert!(matches!(
            cache.get("k1").await,
            Err(VerifyError::KeysUnavailable(_))
        ));
        // Within the retry pause: no new fetch.
        assert_eq!(cache.get("k1").await.unwrap_err(), VerifyError::UnknownKey);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        source.up.store(true, Ordering::SeqCst);
        tokio::time::advance(FAILED_FETCH_RETRY + Duration::from_millis(1)).await;
        cache.get("k1").await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn malformed_and_foreign_keys_are_ignored() {
        let mut rsa = jwk("rsa");
        rsa.kty = "RSA".into();
        let mut broken = jwk("broken");
        broken.x = "!!!".into();
        let source = Arc::new(StaticKeySource::new(vec![rsa, broken, jwk("good")]));
        let cache = KeyCache::new(source, KeyCacheConfig::default());
        assert_eq!(cache.refresh().await.unwrap(), 1);
        assert!(cache.cached("good").is_some());
        assert!(cache.cached("rsa").is_none());
    }
}
