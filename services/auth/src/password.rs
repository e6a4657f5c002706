//! Password hashing with argon2id on a bounded pool off the async threads.
//!
//! A hash takes tens of milliseconds of CPU and 19 MiB; computing it on a runtime thread would
//! stall every other request. Hashes run on Tokio's blocking pool, at most `workers` at once,
//! with at most `queue` more waiting; beyond that a login is refused with
//! RESOURCE_EXHAUSTED at once, instead of piling up memory and latency.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use appstack_config::PasswordConfig;

/// A hashing failure.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The pool and its queue are full.
    #[error("too many password operations in progress")]
    Busy,
    /// The parameters are invalid.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The hashing task died.
    #[error("password hashing task failed")]
    Task,
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password matches.
    pub matches: bool,
    /// It matches, but the stored hash uses other parameters: store a new hash.
    pub needs_rehash: bool,
}

/// The bounded argon2id pool.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    workers: Arc<Semaphore>,
    admission: Arc<Semaphore>,
    /// A hash of a random password with the current parameters: checked for unknown
    /// accounts, so a login costs the same whether the email exists or not.
    decoy: Arc<str>,
    /// argon2 working memory reused across hashes.
    memory: Arc<MemoryPool>,
}

/// Reusable argon2 working memory, one buffer per worker.
///
/// A fresh 19 MiB buffer per hash is mapped and unmapped by the allocator each time, and the
/// page faults of touching it cost about a third more CPU than the hash itself (measured:
/// ~390k faults per 3 s per hashing thread). Reused buffers are already mapped.
struct MemoryPool {
    free: std::sync::Mutex<Vec<Vec<Block>>>,
    keep: usize,
}

impl MemoryPool {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let reused = match self.free.lock() {
            Ok(mut free) => free.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        };
        let mut buffer = reused.unwrap_or_default();
        if buffer.len() < blocks {
            buffer.resize(blocks, Block::default());
        }
        buffer
    }

    fn give(&self, buffer: Vec<Block>) {
        let mut free = match self.free.lock() {
            Ok(free) => free,
            Err(poisoned) => poisoned.into_inner(),
        };
        if free.len() < self.keep {
            free.push(buffer);
        }
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// A reserved slot in the pool; taken before any other work for the attempt.
#[derive(Debug)]
pub struct HashSlot {
    hasher: PasswordHasher,
    _admission: OwnedSemaphorePermit,
}

impl PasswordHasher {
    /// A pool with `config`'s parameters; computes the decoy hash.
    pub fn new(config: &PasswordConfig) -> Result<Self, PasswordError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let workers = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.workers
        };
        let decoy_password = uuid::Uuid::new_v4().to_string();
        let decoy = hash_blocking(&params, &decoy_password)?;
        Ok(Self {
            params,
            workers: Arc::new(Semaphore::new(workers)),
            admission: Arc::new(Semaphore::new(workers + config.queue)),
            decoy: decoy.into(),
            memory: Arc::new(MemoryPool {
                free: std::sync::Mutex::new(Vec::new()),
                keep: workers,
            }),
        })
    }

    /// Reserves a place in the pool, or `Busy` at once.
    pub fn admit(&self) -> Result<HashSlot, PasswordError> {
        let permit = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        Ok(HashSlot {
            hasher: self.clone(),
            _admission: permit,
        })
    }

    /// Hashes a password (admission included).
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.admit()?.hash(password).await
    }
}

impl HashSlot {
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Params, &MemoryPool) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _worker = Arc::clone(&self.hasher.workers)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Task)?;
        let params = self.hasher.params.clone();
        let memory = Arc::clone(&self.hasher.memory);
        tokio::task::spawn_blocking(move || work(&params, &memory))
            .await
            .map_err(|_| PasswordError::Task)
    }

    /// Hashes `password` with the current parameters, as a PHC string.
    pub async fn hash(self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        self.run(move |params, _| hash_blocking(params, &password))
            .await?
    }

    /// Checks `password` against `stored` (a PHC string), or against the decoy when there is
    /// no account, so both take the same time.
    pub async fn verify(
        self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verification, PasswordError> {
        let password = password.to_owned();
        let is_real = stored.is_some();
        let stored: String = stored
            .map(str::to_owned)
            .unwrap_or_else(|| self.hasher.decoy.to_string());
        self.run(move |params, memory| {
            let parsed =
                PasswordHash::new(&stored).map_err(|e| PasswordError::Hash(e.to_string()))?;
            let matches = verify_with_memory(&parsed, password.as_bytes(), memory)?;
            let needs_rehash = matches && !uses_params(&parsed, params);
            Ok(Verification {
                matches: matches && is_real,
                needs_rehash,
            })
        })
        .await?
    }
}

/// Checks `password` against a parsed PHC hash, in reused working memory, comparing in
/// constant time.
fn verify_with_memory(
    stored: &PasswordHash<'_>,
    password: &[u8],
    memory: &MemoryPool,
) -> Result<bool, PasswordError> {
    let bad = |e: argon2::password_hash::Error| PasswordError::Hash(e.to_string());
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(bad)?;
    let version = match stored.version {
        Some(v) => Version::try_from(v).map_err(|e| PasswordError::Hash(e.to_string()))?,
        None => Version::V0x13,
    };
    let params = Params::try_from(stored).map_err(bad)?;
    let salt = stored
        .salt
        .ok_or_else(|| PasswordError::Hash("hash has no salt".into()))?;
    let mut salt_buffer = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buffer).map_err(bad)?;
    let expected = stored
        .hash
        .ok_or_else(|| PasswordError::Hash("hash has no output".into()))?;
    let mut output = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let mut buffer = memory.take(blocks);
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut output,
        &mut buffer[..blocks],
    );
    memory.give(buffer);
    computed.map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        output.as_slice(),
    )))
}

fn argon2_for(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2_for(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether a stored hash was made with argon2id v19 and exactly `params`.
fn uses_params(hash: &PasswordHash<'_>, params: &Params) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return false;
    }
    match Params::try_from(hash) {
        Ok(stored) => {
            stored.m_cost() == params.m_cost()
                && stored.t_cost() == params.t_cost()
                && stored.p_cost() == params.p_cost()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cheap(memory_kib: u32) -> PasswordConfig {
        PasswordConfig {
            memory_kib,
            iterations: 1,
            parallelism: 1,
            workers: 1,
            queue: 1,
        }
    }

    #[tokio::test]
    async fn verifies_and_flags_rehash_when_parameters_change() {
        let old = PasswordHasher::new(&cheap(64)).unwrap();
        let stored = old.hash("correct horse").await.unwrap();
        let v = old
            .admit()
            .unwrap()
            .verify("correct horse", Some(&stored))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = old
            .admit()
            .unwrap()
            .verify("wrong", Some(&stored))
            .await
            .unwrap();
        assert!(!wrong.matches);

        let new = PasswordHasher::new(&cheap(128)).unwrap();
        let v = new
            .admit()
            .unwrap()
            .verify("correct horse", Some(&stored))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let h = PasswordHasher::new(&cheap(64)).unwrap();
        let v = h.admit().unwrap().verify("anything", None).await.unwrap();
        assert!(!v.matches);
    }

    #[tokio::test]
    async fn full_pool_is_busy() {
        let h = PasswordHasher::new(&cheap(64)).unwrap();
        let _a = h.admit().unwrap();
        let _b = h.admit().unwrap();
        assert!(matches!(h.admit(), Err(PasswordError::Busy)));
    }
}
