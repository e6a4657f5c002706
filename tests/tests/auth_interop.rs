//! Standards interop: the JWKS and OpenID discovery document over HTTP, read by an
//! independent JWT library (PyJWT) and by hand; signing-key files readable by OpenSSL and
//! Python's `cryptography`, and `openssl genpkey` keys usable as signing keys.
//!
//! Python: `APPSTACK_TEST_PYTHON` (set by `.ci/run` to a venv with pyjwt and cryptography),
//! else `python3` when it can import both; else the Python parts fail under `CI` and are
//! skipped, loudly, elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use appstack_proto::auth::v1::{GetJwksRequest, WhoAmIRequest};
use appstack_tests::auth_server::AuthServer;
use appstack_tests::clients::{bearer, sign_up_and_login};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

/// A response of the admin port: status, headers (names lower-cased) and body.
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 GET over loopback with extra request headers (the body is not chunked: axum
/// sends a length for a fixed body).
async fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The Python with pyjwt and cryptography, or `None` (after a loud message) outside CI.
fn python() -> Option<PathBuf> {
    let can_import = |python: &Path| {
        Command::new(python)
            .args(["-c", "import jwt, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(configured) = std::env::var_os("APPSTACK_TEST_PYTHON") {
        let configured = PathBuf::from(configured);
        assert!(
            can_import(&configured),
            "APPSTACK_TEST_PYTHON={} cannot import jwt and cryptography",
            configured.display()
        );
        return Some(configured);
    }
    let system = PathBuf::from("python3");
    if can_import(&system) {
        return Some(system);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but no Python with pyjwt and cryptography: set APPSTACK_TEST_PYTHON \
         (.ci/run makes target/pyenv)"
    );
    eprintln!(
        "\n!!!!! SKIPPED the Python interop checks: no Python with pyjwt and cryptography.\n\
         !!!!! Run: python3 -m venv target/pyenv && target/pyenv/bin/pip install pyjwt \
         cryptography\n!!!!! then APPSTACK_TEST_PYTHON=target/pyenv/bin/python\n"
    );
    None
}

/// Runs `script` with `args`; returns stdout, panicking with stderr on failure.
fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Follows discovery to the JWKS exactly as a relying party would, verifies the token, and
/// checks that a tampered one is refused. Prints the verified claims as JSON.
const PYJWT_VERIFY: &str = r#"
import json, sys, urllib.request
import jwt
discovery_url, token, audience, issuer = sys.argv[1:]
with urllib.request.urlopen(discovery_url) as response:
    assert response.headers.get_content_type() == "application/json", response.headers
    discovery = json.load(response)
assert discovery["issuer"] == issuer, discovery
assert "EdDSA" in discovery["id_token_signing_alg_values_supported"], discovery
client = jwt.PyJWKClient(discovery["jwks_uri"])
signing_key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(token, signing_key.key, algorithms=["EdDSA"], audience=audience, issuer=issuer)
head, body, sig = token.split(".")
tampered = head + "." + body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
try:
    jwt.decode(tampered, signing_key.key, algorithms=["EdDSA"], audience=audience, issuer=issuer)
    raise SystemExit("a tampered token verified")
except jwt.InvalidSignatureError:
    pass
print(json.dumps(claims))
"#;

/// Loads a PEM private key with `cryptography`; prints its public key as base64url.
const CRYPTOGRAPHY_READ_KEY: &str = r#"
import base64, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
with open(sys.argv[1], "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=None)
assert isinstance(key, Ed25519PrivateKey), type(key)
raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print(base64.urlsafe_b64encode(raw).rstrip(b"=").decode())
"#;

#[tokio::test]
async fn jwks_and_discovery_are_served_with_members_and_cache_headers() {
    let server = AuthServer::start().await.unwrap();
    let issuer = server.config.auth.issuer.clone();
    let mut client = server.client().await.unwrap();
    let grpc_jwks = client
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();

    let discovery = get(server.admin, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(discovery.status, 200, "{}", discovery.body);
    assert_eq!(discovery.header("content-type"), Some("application/json"));
    // The HTTP cache lifetime is the one GetJwks gives gRPC clients.
    let cache_control = format!("public, max-age={}", grpc_jwks.max_age_seconds);
    assert_eq!(
        discovery.header("cache-control"),
        Some(cache_control.as_str())
    );
    let doc = discovery.json();
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(
        doc["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json").as_str()
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert!(doc["response_types_supported"].is_array(), "{doc}");
    // Only what exists: there are no HTTP authorization or token endpoints.
    assert!(doc.get("authorization_endpoint").is_none(), "{doc}");
    assert!(doc.get("token_endpoint").is_none(), "{doc}");

    let jwks = get(server.admin, "/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    assert_eq!(jwks.header("content-type"), Some("application/json"));
    assert_eq!(jwks.header("cache-control"), Some(cache_control.as_str()));
    let set = jwks.json();
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), grpc_jwks.keys.len());
    assert!(!keys.is_empty());
    for (key, grpc) in keys.iter().zip(&grpc_jwks.keys) {
        // Exactly RFC 8037's members, no others.
        let mut names: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"], "{key}");
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], grpc.kid.as_str());
        assert_eq!(key["x"], grpc.x.as_str());
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 32);
    }

    // Conditional requests: the ETag comes back as 304 with no body, and the cache headers.
    for (path, response) in [
        ("/.well-known/jwks.json", &jwks),
        ("/.well-known/openid-configuration", &discovery),
    ] {
        let etag = response.header("etag").unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let again = get(server.admin, path, &[("If-None-Match", etag)]).await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty(), "{path}: {}", again.body);
        assert_eq!(again.header("etag"), Some(etag));
        assert_eq!(again.header("cache-control"), Some(cache_control.as_str()));
        let weak = format!("W/{etag}");
        let weak_again = get(server.admin, path, &[("If-None-Match", &weak)]).await;
        assert_eq!(weak_again.status, 304, "{path}");
        let other = get(server.admin, path, &[("If-None-Match", "\"other\"")]).await;
        assert_eq!(other.status, 200, "{path}");
        assert_eq!(other.body, response.body);
    }
    // The rest of the admin port is unchanged.
    assert_eq!(server.admin_get("/healthz").await.unwrap().0, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_explicit_jwks_uri_is_advertised_and_a_bad_one_refused() {
    let server = AuthServer::start_with(|c| {
        c.auth.jwks_uri = Some("http://auth.appstack.svc:9090/.well-known/jwks.json".into());
    })
    .await
    .unwrap();
    let doc = get(server.admin, "/.well-known/openid-configuration", &[])
        .await
        .json();
    assert_eq!(
        doc["jwks_uri"],
        "http://auth.appstack.svc:9090/.well-known/jwks.json"
    );
    server.stop().await.unwrap();

    use appstack_config::Validate as _;
    for bad in [
        "/.well-known/jwks.json",
        "ftp://x/jwks",
        "http://",
        "not a url",
    ] {
        let config = appstack_config::AuthConfig {
            jwks_uri: Some(bad.into()),
            ..Default::default()
        };
        let problems = config.validate().unwrap_err().problems;
        assert!(
            problems.iter().any(|p| p.starts_with("jwksUri:")),
            "{bad}: {problems:?}"
        );
    }
    appstack_config::AuthConfig::default().validate().unwrap();
}

/// Runs PyJWT's relying-party path against `server` for `token`; its stdout (the claims).
async fn pyjwt_verify(python: &std::path::Path, server: &AuthServer, token: &str) -> String {
    let discovery_url = format!("http://{}/.well-known/openid-configuration", server.admin);
    let issuer = server.config.auth.issuer.clone();
    let audience = server.config.auth.audience.clone();
    let (python, token) = (python.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        run_python(
            &python,
            PYJWT_VERIFY,
            &[&discovery_url, &token, &audience, &issuer],
        )
    })
    .await
    .unwrap()
}

/// The whole relying-party path with an independent library: discovery → jwks_uri → key by
/// `kid` → signature, `alg`, `aud`, `iss`, `exp`.
#[tokio::test]
async fn pyjwt_verifies_our_tokens_through_discovery() {
    let Some(python) = python() else { return };
    let server = AuthServer::start_bound(|c, admin| {
        c.auth.jwks_uri = Some(format!("http://{admin}/.well-known/jwks.json"));
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    let tokens = sign_up_and_login(&mut client, "interop@example.com", PASSWORD)
        .await
        .unwrap();
    let out = pyjwt_verify(&python, &server, &tokens.access_token).await;
    let claims: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(claims["sub"], tokens.subject.as_str());
    assert_eq!(claims["email"], "interop@example.com");
    server.stop().await.unwrap();
}

fn openssl_reads(path: &Path) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(path)
        .output()
        .map_err(|e| format!("running openssl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn key_files_we_write_are_read_by_openssl_and_python_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let path = appstack_auth::signing::generate_key_file(dir.path(), "k1").unwrap();
    openssl_reads(&path).unwrap();
    // OpenSSL derives the same public key as we publish.
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(public.status.success());
    let folder = appstack_auth::signing::load_folder(dir.path()).unwrap();
    let ours = folder.active().unwrap();
    assert_eq!(&public.stdout[public.stdout.len() - 32..], &ours.public_key);

    let Some(python) = python() else { return };
    let x = run_python(&python, CRYPTOGRAPHY_READ_KEY, &[path.to_str().unwrap()]);
    assert_eq!(x.trim(), ours.public_x());
}

/// An operator's `openssl genpkey` key in the keys folder signs tokens that verify, over
/// gRPC (the service's own verifier) and, when Python is there, with PyJWT.
#[tokio::test]
async fn an_openssl_genpkey_key_signs_tokens_that_verify() {
    let server = AuthServer::start_bound(|c, admin| {
        c.auth.jwks_uri = Some(format!("http://{admin}/.well-known/jwks.json"));
        c.auth.generate_key_if_missing = false;
        let output = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(c.auth.keys_dir.join("k20300101T000000Z.pem"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    })
    .await
    .unwrap();
    let mut client = server.client().await.unwrap();
    let tokens = sign_up_and_login(&mut client, "ops@example.com", PASSWORD)
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k20300101T000000Z"));
    let me = client
        .who_am_i(bearer(WhoAmIRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.subject, tokens.subject);

    if let Some(python) = python() {
        pyjwt_verify(&python, &server, &tokens.access_token).await;
    }
    server.stop().await.unwrap();
}
