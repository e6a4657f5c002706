//! Tokens already verified, so the next call with the same token skips the signature check.
//!
//! A client sends the same access token on every call until it expires, and checking its
//! Ed25519 signature is most of the verifier's cost. An entry is keyed by the token's
//! SHA-256 (the token itself is not kept) and holds the identity, the key that verified it
//! and the last second at which the token is acceptable (`exp` + leeway). A hit counts only
//! while that second has not passed and the key is still the one the key cache holds for its
//! `kid`: a refresh or a withdrawal of the key sends every token it verified through the full
//! check again. Only verified tokens enter, so forged ones cannot evict real ones, and the
//! cache is bounded (quick_cache's S3-FIFO), so many tokens cannot grow it.

use std::sync::Arc;

use jsonwebtoken::DecodingKey;
use quick_cache::sync::Cache;
use sha2::{Digest as _, Sha256};

use crate::identity::Identity;

/// The SHA-256 of a token: the cache's key.
pub(crate) type TokenDigest = [u8; 32];

/// What a full verification established about one token.
#[derive(Clone)]
pub(crate) struct Verified {
    /// Who the token identifies.
    pub(crate) identity: Identity,
    /// The `kid` it was verified with.
    pub(crate) kid: String,
    /// The key that verified it, compared by identity with the key cache's current one.
    pub(crate) key: Arc<DecodingKey>,
    /// The last second (Unix time) at which the token is still accepted.
    pub(crate) acceptable_until: i64,
}

/// A bounded cache of verified tokens; capacity 0 turns it off.
pub(crate) struct VerifiedTokens {
    cache: Option<Cache<TokenDigest, Verified>>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("capacity", &self.cache.as_ref().map(|c| c.capacity()))
            .finish()
    }
}

impl VerifiedTokens {
    /// Room for `capacity` tokens.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            cache: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    /// The cache key of `token`.
    pub(crate) fn digest(token: &str) -> TokenDigest {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The entry for `digest` if it is still acceptable at `now` (Unix seconds); an entry
    /// past its time is dropped.
    pub(crate) fn get(&self, digest: &TokenDigest, now: i64) -> Option<Verified> {
        let cache = self.cache.as_ref()?;
        let entry = cache.get(digest)?;
        if still_acceptable(entry.acceptable_until, now) {
            Some(entry)
        } else {
            cache.remove(digest);
            None
        }
    }

    /// Remembers a token that passed the full check.
    pub(crate) fn insert(&self, digest: TokenDigest, verified: Verified) {
        if let Some(cache) = &self.cache {
            cache.insert(digest, verified);
        }
    }
}

/// The same rule as the full check's `exp` test: accepted while `now <= exp + leeway`.
pub(crate) fn still_acceptable(acceptable_until: i64, now: i64) -> bool {
    now <= acceptable_until
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::PrincipalKind;

    fn verified(until: i64) -> Verified {
        Verified {
            identity: Identity {
                subject: "u".into(),
                kind: PrincipalKind::User,
                roles: vec![],
                email: None,
                expires_at: until,
                token_id: "t".into(),
            },
            kid: "k".into(),
            key: Arc::new(DecodingKey::from_secret(b"unused")),
            acceptable_until: until,
        }
    }

    #[test]
    fn an_entry_is_acceptable_up_to_and_including_its_last_second() {
        assert!(still_acceptable(100, 99));
        assert!(still_acceptable(100, 100));
        assert!(!still_acceptable(100, 101));
    }

    #[test]
    fn an_entry_past_its_time_is_a_miss_and_is_dropped() {
        let tokens = VerifiedTokens::new(8);
        let digest = VerifiedTokens::digest("a.b.c");
        tokens.insert(digest, verified(100));
        assert!(tokens.get(&digest, 100).is_some());
        assert!(tokens.get(&digest, 101).is_none());
        // Dropped: even an earlier clock no longer finds it.
        assert!(tokens.get(&digest, 50).is_none());
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let tokens = VerifiedTokens::new(0);
        let digest = VerifiedTokens::digest("a.b.c");
        tokens.insert(digest, verified(100));
        assert!(tokens.get(&digest, 0).is_none());
    }

    #[test]
    fn different_tokens_have_different_keys() {
        assert_ne!(
            VerifiedTokens::digest("a.b.c"),
            VerifiedTokens::digest("a.b.d")
        );
    }
}
