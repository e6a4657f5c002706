//! `auth-existence`: does a wrong password take longer for an email that has an account than
//! for one that has none? The same server, the same client, the two kinds interleaved, with
//! `auth.prevent_user_existence_errors` on (the default) and off (the path without throttling
//! unknown emails, as before the setting existed), in the same run.

use std::time::Instant;

use anyhow::anyhow;
use appstack_proto::auth::v1::{LoginRequest, SignUpRequest};
use appstack_tests::auth_server::AuthServer;
use tonic::Code;

use crate::measure::{Latencies, Report};

/// Wrong-password logins of each kind per setting: enough for a stable median at ~25 ms
/// (OWASP argon2id) per login.
const SAMPLES: usize = 150;

pub(crate) fn run() -> anyhow::Result<()> {
    let report = Report::new("auth-existence");
    let runtime = crate::measure::runtime()?;
    for prevent in [true, false] {
        let (known, unknown) = runtime.block_on(measure(prevent))?;
        let setting = if prevent { "on" } else { "off" };
        let known_ms = known.quantile_ms(0.5);
        let unknown_ms = unknown.quantile_ms(0.5);
        report.real(&format!("known_p50_ms_{setting}"), known_ms, 3, "ms")?;
        report.real(&format!("unknown_p50_ms_{setting}"), unknown_ms, 3, "ms")?;
        report.real(
            &format!("known_minus_unknown_p50_ms_{setting}"),
            known_ms - unknown_ms,
            3,
            "ms",
        )?;
    }
    Ok(())
}

/// Median-ready latencies of wrong-password logins for a known and unknown emails.
async fn measure(prevent: bool) -> anyhow::Result<(Latencies, Latencies)> {
    let server = AuthServer::start_with(|c| {
        // Production hashing; a threshold no run reaches, so every attempt checks a hash.
        c.auth.password = appstack_config::PasswordConfig::default();
        c.auth.lockout.threshold = 1_000_000;
        c.auth.prevent_user_existence_errors = prevent;
    })
    .await?;
    let mut client = server.client().await?;
    client
        .sign_up(SignUpRequest {
            email: "known@example.com".into(),
            password: "the right password".into(),
        })
        .await
        .map_err(|s| anyhow!("sign-up: {s}"))?;
    let mut known = Latencies::new()?;
    let mut unknown = Latencies::new()?;
    for sample in 0..SAMPLES * 2 {
        // A fresh unknown email each time, as an enumerating attacker sends.
        let (email, into) = if sample % 2 == 0 {
            ("known@example.com".to_owned(), &mut known)
        } else {
            (format!("nobody-{sample}@example.com"), &mut unknown)
        };
        let start = Instant::now();
        let result = client
            .login(LoginRequest {
                email,
                password: "a wrong password".into(),
            })
            .await;
        let elapsed = start.elapsed();
        match result {
            Err(status) if status.code() == Code::Unauthenticated => into.record(elapsed),
            other => return Err(anyhow!("expected UNAUTHENTICATED, got {other:?}")),
        }
    }
    server.stop().await?;
    eprintln!(
        "auth-existence: setting {}: {} + {} wrong-password logins",
        if prevent { "on" } else { "off" },
        known.samples(),
        unknown.samples()
    );
    Ok((known, unknown))
}
