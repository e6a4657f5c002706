//! Ed25519 signing keys: files in a folder (a mounted Kubernetes Secret), one of which signs.
//!
//! A key file is `<kid>.pem`, a PKCS#8 Ed25519 private key (`-----BEGIN PRIVATE KEY-----`).
//! We write the RFC 8410 v1 form (RFC 5208 `PrivateKeyInfo`, no public key), which is what
//! `openssl genpkey -algorithm ed25519` writes and what OpenSSL 3.0 and Python's
//! `cryptography` read; both v1 and v2 (RFC 5958, with the public key — what earlier
//! versions wrote) are read. The greatest `kid` (names are
//! sortable, e.g. `k20261123T1811Z`) signs new tokens; to rotate, add a newer file; the
//! older ones keep being published (see `Store::publish_keys`) until their tokens expire.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding,
};
use jsonwebtoken::EncodingKey;

/// A key-folder problem.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The folder cannot be read or written.
    #[error("signing keys folder {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a PKCS#8 Ed25519 private key.
    #[error("signing key {path} is not a PKCS#8 Ed25519 PEM private key: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The folder holds no key.
    #[error(
        "no signing key in {0}: create one with `appstack keygen --keys-dir {0}` (or set auth.generate_key_if_missing for development)"
    )]
    NoKeys(PathBuf),
    /// A key id is not a safe name.
    #[error("signing key id {0:?} must match [A-Za-z0-9._-]{{1,64}}")]
    BadKid(String),
}

/// One signing key.
pub struct KeyPair {
    /// Key id.
    pub kid: String,
    /// The 32-byte public key.
    pub public_key: [u8; 32],
    /// The private key, ready for jsonwebtoken.
    pub encoding_key: EncodingKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// The public key as base64url (the JWK `x`).
    pub fn public_x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key)
    }
}

/// The keys found in a folder, sorted by `kid`; the last one signs.
#[derive(Debug)]
pub struct KeyFolder {
    /// Every key, ascending by `kid`.
    pub keys: Vec<KeyPair>,
}

impl KeyFolder {
    /// The signing key.
    pub fn active(&self) -> Option<&KeyPair> {
        self.keys.last()
    }
}

fn valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads every `*.pem` file of `dir`. Other files (Kubernetes' `..data` links) are ignored.
pub fn load_folder(dir: &Path) -> Result<KeyFolder, KeyError> {
    let mut keys = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyFolder { keys }),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let Some(kid) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if kid.starts_with('.') {
            continue;
        }
        if !valid_kid(&kid) {
            return Err(KeyError::BadKid(kid));
        }
        let pem = std::fs::read_to_string(&path).map_err(io(&path))?;
        keys.push(parse_key(kid, &pem, &path)?);
    }
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    Ok(KeyFolder { keys })
}

fn parse_key(kid: String, pem: &str, path: &Path) -> Result<KeyPair, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| invalid(e.to_string()))?;
    let encoding_key =
        EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    Ok(KeyPair {
        kid,
        public_key: signing.verifying_key().to_bytes(),
        encoding_key,
    })
}

/// A sortable key id for a key made now: `k` + UTC time to the second.
pub fn new_kid() -> String {
    format!("k{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))
}

/// Writes a new key `<kid>.pem` (mode 0600) into `dir`, creating it; returns its path.
pub fn generate_key_file(dir: &Path, kid: &str) -> Result<PathBuf, KeyError> {
    if !valid_kid(kid) {
        return Err(KeyError::BadKid(kid.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("{kid}.pem"));
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    // `SigningKey::to_pkcs8_pem` writes v2 (with the public key), which OpenSSL 3.0 and
    // Python's `cryptography` refuse; without the public key it is v1, and readers derive
    // the public key from the private one anyway.
    let v1 = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = v1
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    write_private(&path, pem.as_bytes())?;
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn newest_kid_signs_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_file(dir.path(), "k2025").unwrap();
        generate_key_file(dir.path(), "k2026").unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let folder = load_folder(dir.path()).unwrap();
        assert_eq!(folder.keys.len(), 2);
        assert_eq!(folder.active().unwrap().kid, "k2026");
        assert_eq!(folder.active().unwrap().public_x().len(), 43);
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("k1.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            load_folder(dir.path()),
            Err(KeyError::Invalid { .. })
        ));
        assert!(matches!(
            generate_key_file(dir.path(), "../evil"),
            Err(KeyError::BadKid(_))
        ));
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use base64::engine::general_purpose::STANDARD;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    #[test]
    fn written_keys_are_pkcs8_v1() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate_key_file(dir.path(), "k1").unwrap();
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let der = pem_der(&pem);
        // RFC 8410 §7: SEQUENCE { INTEGER 0 (v1), AlgorithmIdentifier 1.3.101.112,
        // OCTET STRING { OCTET STRING (32 bytes) } } — 48 bytes, no public key.
        assert_eq!(der.len(), 48, "{der:02x?}");
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x00]);
        assert_eq!(&der[5..12], &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]);
        let folder = load_folder(dir.path()).unwrap();
        assert_eq!(folder.keys.len(), 1);
    }

    #[test]
    fn v1_and_v2_files_both_load_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        // v2 (with the public key): what earlier versions wrote.
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(&pem_der(&v2)[2..5], &[0x02, 0x01, 0x01]);
        std::fs::write(dir.path().join("k2.pem"), v2.as_bytes()).unwrap();
        // v1 in the RFC 8410 §10.3 example (as `openssl genpkey` writes).
        std::fs::write(
            dir.path().join("k1.pem"),
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let folder = load_folder(dir.path()).unwrap();
        assert_eq!(
            folder.keys[0].public_x(),
            "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE"
        );
        assert_eq!(folder.keys[1].public_key, key.verifying_key().to_bytes());
        for pair in &folder.keys {
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            let token = jsonwebtoken::encode(
                &header,
                &serde_json::json!({"sub": "x"}),
                &pair.encoding_key,
            )
            .unwrap();
            let decoding = jsonwebtoken::DecodingKey::from_ed_der(&pair.public_key);
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        }
    }

    #[test]
    fn a_missing_folder_is_empty() {
        let folder = load_folder(Path::new("/nonexistent/appstack-keys")).unwrap();
        assert!(folder.active().is_none());
    }
}
