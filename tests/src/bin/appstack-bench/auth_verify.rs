//! `auth-verify`: access-token verifications per second through the real verifier.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use appstack_auth::signing;
use appstack_auth::tokens::{Subject, sign_access_token};
use appstack_proto::auth::v1::Jwk;
use appstack_verifier::{KeyCache, KeyCacheConfig, StaticKeySource, Verifier, VerifierConfig};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Verifier as _;

use crate::measure::{Latencies, Report, Throughput, cores, join_all, run_for, warmup_for};

/// The goal of the verification issue.
const VERIFY_GOAL_PER_CORE: f64 = 15_000.0;

const ISSUER: &str = "https://auth.bench.appstack";
const AUDIENCE: &str = "appstack-bench";

/// A signed access token, the verifier for it and its raw parts.
struct VerifyFixture {
    token: String,
    verifier: Arc<Verifier>,
    /// The same, remembering verified tokens (the services' default).
    remembering: Verifier,
    public_key: [u8; 32],
    /// `header.payload`, the bytes the signature covers.
    signing_input: Vec<u8>,
    signature: ed25519_dalek::Signature,
}

impl VerifyFixture {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        signing::generate_key_file(dir.path(), "kbench")?;
        let folder = signing::load_folder(dir.path())?;
        let key = folder.active().context("the generated key was not found")?;
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: key.public_x(),
            kid: key.kid.clone(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        };
        let roles = vec!["user".to_owned()];
        let subject = Subject {
            id: "0197a3f0-0000-7000-8000-000000000001",
            roles: &roles,
            email: Some("bench@example.com"),
        };
        let token =
            sign_access_token(key, ISSUER, AUDIENCE, Duration::from_secs(3600), &subject)?.token;
        let keys = || {
            KeyCache::new(
                Arc::new(StaticKeySource::new(vec![jwk.clone()])),
                KeyCacheConfig::default(),
            )
        };
        // The full check on every call: what this benchmark's goal is about.
        let full = VerifierConfig {
            verified_cache_capacity: 0,
            ..VerifierConfig::new(ISSUER, AUDIENCE)
        };
        let verifier = Arc::new(Verifier::new(full, keys()));
        let remembering = Verifier::new(VerifierConfig::new(ISSUER, AUDIENCE), keys());

        let (signing_input, encoded_signature) = token
            .rsplit_once('.')
            .context("the token has no signature part")?;
        let signature_bytes = URL_SAFE_NO_PAD
            .decode(encoded_signature)
            .context("decoding the token's signature")?;
        let signature = ed25519_dalek::Signature::from_slice(&signature_bytes)?;
        Ok(Self {
            signing_input: signing_input.as_bytes().to_vec(),
            token,
            verifier,
            remembering,
            public_key: key.public_key,
            signature,
        })
    }
}

/// Verifies `token` in a loop on the current thread for `duration`, timing every call.
///
/// Latency is sampled per call: a verification takes tens of microseconds and reading the
/// clock (TSC through the vDSO) tens of nanoseconds, so per-call timing costs well under 1%.
/// The throughput of this loop therefore includes that small overhead.
async fn verify_loop(
    verifier: &Verifier,
    token: &str,
    duration: Duration,
    mut latencies: Option<&mut Latencies>,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut operations = 0u64;
    let mut now = start;
    while now < deadline {
        let result = verifier.verify(token).await;
        let done = Instant::now();
        result.map_err(|e| anyhow!("the verifier refused the benchmark token: {e}"))?;
        if let Some(latencies) = latencies.as_deref_mut() {
            latencies.record(done - now);
        }
        operations += 1;
        now = done;
    }
    Ok(Throughput {
        operations,
        elapsed: start.elapsed(),
    })
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("auth-verify");
    let fixture = VerifyFixture::new()?;
    let warmup = warmup_for(seconds);
    eprintln!(
        "auth-verify: token of {} bytes, {:.1}s per phase",
        fixture.token.len(),
        seconds.as_secs_f64()
    );

    // One thread: the first call fills the key cache, the warm-up settles caches and clocks.
    let runtime = current_thread_runtime()?;
    let mut latencies = Latencies::new()?;
    let single = runtime.block_on(async {
        fixture
            .verifier
            .verify(&fixture.token)
            .await
            .map_err(|e| anyhow!("the first verification failed: {e}"))?;
        verify_loop(&fixture.verifier, &fixture.token, warmup, None).await?;
        verify_loop(
            &fixture.verifier,
            &fixture.token,
            seconds,
            Some(&mut latencies),
        )
        .await
    })?;
    drop(runtime);
    eprintln!(
        "auth-verify: one thread: {} verifications in {:.2}s",
        single.operations,
        single.elapsed.as_secs_f64()
    );

    // One thread per core, sharing the verifier, each on its own current-thread runtime.
    let threads = cores();
    let all_start = Barrier::new(threads);
    let all = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let verifier = Arc::clone(&fixture.verifier);
                let token = fixture.token.as_str();
                let all_start = &all_start;
                scope.spawn(move || {
                    let runtime = current_thread_runtime()?;
                    runtime.block_on(async {
                        verify_loop(&verifier, token, warmup, None).await?;
                        all_start.wait();
                        verify_loop(&verifier, token, seconds, None).await
                    })
                })
            })
            .collect();
        join_all(handles)
    });
    let all = all?;
    let all_cores: f64 = all.iter().map(Throughput::per_sec).sum();
    eprintln!(
        "auth-verify: {threads} threads: {:?} verifications/s each",
        all.iter().map(|t| t.per_sec().round()).collect::<Vec<_>>()
    );

    // Raw Ed25519 on one thread, with the check jsonwebtoken makes (`verify`, not
    // `verify_strict`), on the same bytes and signature.
    let key = ed25519_dalek::VerifyingKey::from_bytes(&fixture.public_key)?;
    key.verify(&fixture.signing_input, &fixture.signature)
        .context("the token's signature does not verify with the raw key")?;
    let raw_check = || -> anyhow::Result<()> {
        key.verify(&fixture.signing_input, &fixture.signature)?;
        Ok(())
    };
    run_for(warmup, &raw_check)?;
    let raw = run_for(seconds, &raw_check)?;
    // Diagnostic: jsonwebtoken rebuilds the `VerifyingKey` (a point decompression) from the
    // cached `DecodingKey` bytes on every decode; this is raw verify plus that step.
    let raw_with_key_decode = run_for(seconds, || {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&fixture.public_key)?;
        key.verify(&fixture.signing_input, &fixture.signature)?;
        Ok(())
    })?;

    // A client's second and later calls with the same token: answered from memory.
    let runtime = current_thread_runtime()?;
    let remembered = runtime.block_on(async {
        verify_loop(&fixture.remembering, &fixture.token, warmup, None).await?;
        verify_loop(&fixture.remembering, &fixture.token, seconds, None).await
    })?;
    drop(runtime);

    let per_core = single.per_sec();
    report.real(
        "verifications_per_sec_per_core",
        per_core,
        1,
        "verifications/s",
    )?;
    report.count("verify_latency_p50_ns", latencies.quantile_ns(0.50), "ns")?;
    report.count("verify_latency_p99_ns", latencies.quantile_ns(0.99), "ns")?;
    report.real(
        "verifications_per_sec_all_cores",
        all_cores,
        1,
        "verifications/s",
    )?;
    report.count("cores", u64::try_from(threads)?, "cores")?;
    report.real(
        "raw_ed25519_verify_per_sec",
        raw.per_sec(),
        1,
        "verifications/s",
    )?;
    report.real(
        "raw_ed25519_verify_with_key_decode_per_sec",
        raw_with_key_decode.per_sec(),
        1,
        "verifications/s",
    )?;
    report.real(
        "remembered_verifications_per_sec_per_core",
        remembered.per_sec(),
        1,
        "verifications/s",
    )?;
    report.real(
        "remembered_to_full_ratio",
        remembered.per_sec() / per_core,
        1,
        "ratio",
    )?;
    report.real(
        "verifier_to_raw_ratio",
        per_core / raw.per_sec(),
        3,
        "ratio",
    )?;
    eprintln!(
        "auth-verify: goal >= {VERIFY_GOAL_PER_CORE} verifications/s per core: {} ({per_core:.0}, {} latency samples)",
        if per_core >= VERIFY_GOAL_PER_CORE {
            "met"
        } else {
            "NOT met"
        },
        latencies.samples(),
    );
    Ok(())
}
