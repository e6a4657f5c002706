//! The verifier library as other services use it: keys fetched from the auth service's
//! `GetJwks` over real gRPC, refetched on rotation, rate limited against made-up key ids.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use appstack_tests::auth_server::AuthServer;
use appstack_tests::clients::sign_up_and_login;
use appstack_verifier::{
    GrpcJwksSource, KeyCache, KeyCacheConfig, PrincipalKind, Verifier, VerifierConfig, VerifyError,
};

fn jwks_calls(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(r#"grpc_server_handled_total{service="appstack.auth.v1.AuthService",method="GetJwks",code="OK"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the GetJwks counter is exported")
}

#[tokio::test]
async fn verifies_rotates_and_rate_limits_refetches() {
    let server = AuthServer::start_with(|c| {
        c.auth.key_reload_interval = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    let tokens = sign_up_and_login(&mut client, "svc@example.com", "correct horse battery")
        .await
        .unwrap();

    let source = Arc::new(GrpcJwksSource::new(server.channel().await.unwrap()));
    let cache = KeyCache::new(
        source,
        KeyCacheConfig {
            min_refetch_interval: Duration::from_secs(2),
        },
    );
    let verifier = Verifier::new(
        VerifierConfig::new(
            server.config.auth.issuer.clone(),
            server.config.auth.audience.clone(),
        ),
        cache,
    );
    let identity = verifier.verify(&tokens.access_token).await.unwrap();
    assert_eq!(identity.subject, tokens.subject);
    assert_eq!(identity.kind, PrincipalKind::User);
    assert_eq!(identity.email.as_deref(), Some("svc@example.com"));

    // A wrong audience is refused even with a valid signature.
    let other = Verifier::new(
        VerifierConfig::new(server.config.auth.issuer.clone(), "another-stack"),
        KeyCache::new(
            Arc::new(GrpcJwksSource::new(server.channel().await.unwrap())),
            KeyCacheConfig::default(),
        ),
    );
    assert_eq!(
        other.verify(&tokens.access_token).await.unwrap_err(),
        VerifyError::Audience
    );

    // Made-up kids: at most one refetch per interval reaches the auth service.
    let before = jwks_calls(&server.admin_get("/metrics").await.unwrap().1);
    let header = base64_json(&serde_json::json!({"alg":"EdDSA","typ":"at+jwt","kid":"made-up"}));
    let payload = tokens.access_token.split('.').nth(1).unwrap();
    let signature = tokens.access_token.split('.').nth(2).unwrap();
    let forged = format!("{header}.{payload}.{signature}");
    for _ in 0..200 {
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err(),
            VerifyError::UnknownKey
        );
    }
    let after = jwks_calls(&server.admin_get("/metrics").await.unwrap().1);
    assert!(
        after - before <= 1,
        "{} JWKS fetches for 200 unknown kids",
        after - before
    );

    // Rotation: a token signed by the new key verifies after one refetch.
    let old_kid = jsonwebtoken::decode_header(&tokens.access_token)
        .unwrap()
        .kid
        .unwrap();
    appstack_auth::signing::generate_key_file(&server.keys_dir, &format!("{old_kid}z")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let rotated = loop {
        let t =
            appstack_tests::clients::login(&mut client, "svc@example.com", "correct horse battery")
                .await
                .unwrap();
        if jsonwebtoken::decode_header(&t.access_token)
            .unwrap()
            .kid
            .unwrap()
            != old_kid
        {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // past the refetch interval
    verifier.verify(&rotated.access_token).await.unwrap();
    verifier.verify(&tokens.access_token).await.unwrap();
}

fn base64_json(value: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}
