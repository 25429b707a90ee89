//! Signing keys: loaded from the keys directory (one JSON file per key, mode 0600), generated there
//! on first start (one ES256 and one RS256 key; an EdDSA key when that algorithm is chosen). Each
//! key's `kid` is its RFC 7638 JWK thumbprint. The JWKS publishes every public key whose tokens can
//! still be valid: active keys, and retired keys until their last token has expired.
//!
//! Signers are built once per key and shared: parsing a key costs as much as ~15 signatures.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::{ES256, EdDSA, JwsAlgorithm, JwsSigner, RS256};
use josekit::jwt::JwtPayload;
use serde::{Deserialize, Serialize};

use crate::secrets::sha256_base64url;

/// The JWS algorithms this server signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    ES256,
    RS256,
    EdDSA,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::ES256),
            "RS256" => Some(Algorithm::RS256),
            "EdDSA" => Some(Algorithm::EdDSA),
            _ => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("keys directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key file {path} is not a portcullis key file: {reason}")]
    Malformed { path: String, reason: String },
    #[error("no active {0} key")]
    NoActiveKey(Algorithm),
    #[error("could not sign: {0}")]
    Sign(String),
    #[error("could not generate a key: {0}")]
    Generate(String),
}

/// What a key file holds. The private key is PKCS#8 PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyFile {
    alg: Algorithm,
    created_at: i64,
    /// Set by `keys rotate`: the key signs nothing after this, and leaves the JWKS once the
    /// tokens it signed have expired.
    retired_at: Option<i64>,
    private_key_pem: String,
}

/// One loaded key.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub public_jwk: Jwk,
    signer: Box<dyn JwsSigner>,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// All keys of the keys directory.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

/// What the key files of a directory look like from outside: each one's name, size, modification
/// time and inode, in name order. A running server compares it before reading any key again:
/// reading and checking the keys takes about 1.7 ms with an RS256 key (OpenSSL's checks of the
/// RSA key), a look at the directory about 8 µs (`KeyRing::load` and this, on this machine).
/// `keys rotate` writes each file under a temporary name and renames it, so every file it touches
/// gets a new inode; an edit in place gets a new modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDirState(Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>, u64)>);

/// The key files of `dir` (`*.json`), none when it does not exist: what `KeyRing::load` reads and
/// `KeyRing::dir_state` describes.
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(dir)(error)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().and_then(|ext| ext.to_str()) == Some("json") {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// RFC 7638 §3: the SHA-256 of the JSON object of the required members, in lexicographic order,
/// with no whitespace.
pub fn thumbprint(jwk: &Jwk) -> String {
    let member = |name: &str| jwk.parameter(name).cloned().unwrap_or(serde_json::Value::Null);
    let mut required = BTreeMap::new();
    let names: &[&str] = match jwk.key_type() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => &["kty"],
    };
    for name in names {
        required.insert(*name, member(name));
    }
    // BTreeMap serializes its keys in order, and serde_json writes no whitespace.
    let canonical = serde_json::to_string(&required).expect("a map of JSON values serializes");
    sha256_base64url(canonical.as_bytes())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.display().to_string(), source }
}

fn generate_pem(alg: Algorithm) -> Result<String, KeyError> {
    let pem = match alg {
        Algorithm::ES256 => ES256.generate_key_pair().map(|pair| pair.to_pem_private_key()),
        Algorithm::RS256 => RS256.generate_key_pair(2048).map(|pair| pair.to_pem_private_key()),
        Algorithm::EdDSA => EdDSA.generate_key_pair(EdCurve::Ed25519).map(|pair| pair.to_pem_private_key()),
    }
    .map_err(|error| KeyError::Generate(error.to_string()))?;
    String::from_utf8(pem).map_err(|error| KeyError::Generate(error.to_string()))
}

/// The ES256 and EdDSA signatures, by aws-lc (through aws-lc-rs, already built for reqwest's
/// TLS) rather than josekit's OpenSSL signers. Measured on the benchmark machine:
/// - ES256 (RFC 7518 §3.4: ECDSA over P-256 with SHA-256, the signature as R then S, 32 bytes
///   each): about 19 µs against 23–24 µs for OpenSSL 3.0's `ECDSA_do_sign`, and josekit's signer
///   adds an `EVP_DigestSignInit` per signature on top. A fresh random nonce per signature from
///   aws-lc's DRBG (RFC 6979 is not needed: the RNG is the OS's, reseeded).
/// - EdDSA (RFC 8037 §3.1, Ed25519): 11 µs against 54 µs for josekit's signer on OpenSSL 3.0.
///   Ed25519 is deterministic (RFC 8032 §5.1.6), so both give the same bytes; a test checks it.
///
/// RS256 stays with josekit: aws-lc's RSA-2048 signature was the slower one (1,021 µs against
/// 905 µs). (aws-lc-rs's `Debug` of a key pair shows its public key only.)
#[derive(Debug, Clone)]
enum AwsLcSigner {
    Es256(std::sync::Arc<aws_lc_rs::signature::EcdsaKeyPair>, aws_lc_rs::rand::SystemRandom),
    Ed25519(std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>),
}

impl AwsLcSigner {
    /// From any PEM private key OpenSSL reads (PKCS#8 as the server writes them, or SEC1), on
    /// P-256; a key on any other curve is refused.
    fn es256(pem: &[u8]) -> Result<AwsLcSigner, josekit::JoseError> {
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8_of(pem)?,
        )
        .map_err(|error| josekit::JoseError::InvalidKeyFormat(error.into()))?;
        Ok(AwsLcSigner::Es256(std::sync::Arc::new(key), aws_lc_rs::rand::SystemRandom::new()))
    }

    /// From a PEM Ed25519 private key; a key of another type is refused.
    fn ed25519(pem: &[u8]) -> Result<AwsLcSigner, josekit::JoseError> {
        // OpenSSL writes PKCS#8 v1 (no public key), which `from_pkcs8` refuses. The public key is
        // then derived from the private one, as the published JWK is: they cannot disagree.
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8_of(pem)?)
            .map_err(|error| josekit::JoseError::InvalidKeyFormat(error.into()))?;
        Ok(AwsLcSigner::Ed25519(std::sync::Arc::new(key)))
    }
}

/// A PEM private key as PKCS#8 DER, as OpenSSL writes it.
fn pkcs8_of(pem: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
    openssl::pkey::PKey::private_key_from_pem(pem)
        .and_then(|key| key.private_key_to_pkcs8())
        .map_err(|error| josekit::JoseError::InvalidKeyFormat(error.into()))
}

impl JwsSigner for AwsLcSigner {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        match self {
            AwsLcSigner::Es256(..) => &ES256,
            AwsLcSigner::Ed25519(_) => &EdDSA,
        }
    }

    fn key_id(&self) -> Option<&str> {
        None // the header's kid is set by `KeyRing::sign`
    }

    fn signature_len(&self) -> usize {
        64
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        match self {
            AwsLcSigner::Es256(key, rng) => Ok(key
                .sign(rng, message)
                .map_err(|error| josekit::JoseError::InvalidSignature(error.into()))?
                .as_ref()
                .to_vec()),
            AwsLcSigner::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
        }
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

fn load_key(path: &Path, file: KeyFile) -> Result<SigningKey, KeyError> {
    let malformed = |error: josekit::JoseError| KeyError::Malformed {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    let pem = file.private_key_pem.as_bytes();
    let (mut public_jwk, signer): (Jwk, Box<dyn JwsSigner>) = match file.alg {
        Algorithm::ES256 => {
            let pair = ES256.key_pair_from_pem(pem).map_err(malformed)?;
            if pair.curve() != EcCurve::P256 {
                return Err(KeyError::Malformed {
                    path: path.display().to_string(),
                    reason: "an ES256 key must be on P-256".into(),
                });
            }
            (pair.to_jwk_public_key(), Box::new(AwsLcSigner::es256(pem).map_err(malformed)?))
        }
        Algorithm::RS256 => {
            let pair = RS256.key_pair_from_pem(pem).map_err(malformed)?;
            (pair.to_jwk_public_key(), Box::new(RS256.signer_from_pem(pem).map_err(malformed)?))
        }
        Algorithm::EdDSA => {
            let pair = EdDSA.key_pair_from_pem(pem).map_err(malformed)?;
            // The server generates Ed25519 keys only, and signs with aws-lc, which has no Ed448.
            if pair.curve() != EdCurve::Ed25519 {
                return Err(KeyError::Malformed {
                    path: path.display().to_string(),
                    reason: "an EdDSA key must be on Ed25519".into(),
                });
            }
            (pair.to_jwk_public_key(), Box::new(AwsLcSigner::ed25519(pem).map_err(malformed)?))
        }
    };
    let kid = thumbprint(&public_jwk);
    public_jwk.set_key_id(&kid);
    public_jwk.set_algorithm(file.alg.as_str());
    public_jwk.set_key_use("sig");
    Ok(SigningKey {
        kid,
        alg: file.alg,
        created_at: file.created_at,
        retired_at: file.retired_at,
        public_jwk,
        signer,
        path: path.to_owned(),
    })
}

fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let json = serde_json::to_vec_pretty(file).expect("a key file serializes");
    // Private keys are readable by their owner only, from the moment the file exists.
    let temporary = path.with_extension("tmp");
    let mut handle = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    handle.write_all(&json).map_err(io_error(&temporary))?;
    handle.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))?;
    Ok(())
}

impl KeyRing {
    /// Loads every key in `dir`, creating the directory and any missing active key of `required`.
    pub fn load_or_generate(dir: &Path, required: &[Algorithm], now: i64) -> Result<KeyRing, KeyError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut ring = KeyRing::load(dir)?;
        for &alg in required {
            if ring.active(alg).is_none() {
                ring.generate(dir, alg, now)?;
            }
        }
        Ok(ring)
    }

    /// Loads every `*.json` key file in `dir` (no generation).
    pub fn load(dir: &Path) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::new();
        for path in key_files(dir)? {
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            let file: KeyFile = serde_json::from_slice(&bytes).map_err(|error| KeyError::Malformed {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
            keys.push(load_key(&path, file)?);
        }
        let mut ring = KeyRing { keys };
        ring.sort();
        Ok(ring)
    }

    /// Oldest first, then by `kid`: the order of a ring read from its directory, kept by every
    /// change, so that a ring read back is the same ring (the background reload compares them).
    fn sort(&mut self) {
        self.keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    }

    /// The state of the key files in `dir` (none when it does not exist), without reading them.
    pub fn dir_state(dir: &Path) -> Result<KeyDirState, KeyError> {
        use std::os::unix::fs::MetadataExt;
        let mut files = Vec::new();
        for path in key_files(dir)? {
            // The file's own metadata, not a symlink's: a key file may be a link into a secret mount.
            let metadata = fs::metadata(&path).map_err(io_error(&path))?;
            let name = path.file_name().unwrap_or_default().to_owned();
            files.push((name, metadata.len(), metadata.modified().ok(), metadata.ino()));
        }
        files.sort();
        Ok(KeyDirState(files))
    }

    fn generate(&mut self, dir: &Path, alg: Algorithm, now: i64) -> Result<&SigningKey, KeyError> {
        let file = KeyFile { alg, created_at: now, retired_at: None, private_key_pem: generate_pem(alg)? };
        let provisional = dir.join(format!("new-{}.json", crate::secrets::random_token(8)));
        let key = load_key(&provisional, file.clone())?;
        let path = dir.join(format!("{}-{}.json", alg.as_str().to_lowercase(), key.kid));
        write_key_file(&path, &file)?;
        tracing::info!(kid = %key.kid, alg = %alg, "generated a signing key");
        let kid = key.kid.clone();
        self.keys.push(SigningKey { path, ..key });
        self.sort();
        Ok(self.keys.iter().find(|key| key.kid == kid).expect("just added"))
    }

    /// `keys rotate`: a new active key for every algorithm that has one; the old ones are
    /// retired (they sign nothing more, and stay published until their tokens expire).
    pub fn rotate(&mut self, dir: &Path, now: i64) -> Result<Vec<String>, KeyError> {
        let algs: Vec<Algorithm> = {
            let mut algs: Vec<Algorithm> =
                self.keys.iter().filter(|k| k.retired_at.is_none()).map(|k| k.alg).collect();
            algs.sort();
            algs.dedup();
            algs
        };
        let mut new_kids = Vec::new();
        for alg in algs {
            for key in self.keys.iter_mut().filter(|k| k.alg == alg && k.retired_at.is_none()) {
                let bytes = fs::read(&key.path).map_err(io_error(&key.path))?;
                let mut file: KeyFile = serde_json::from_slice(&bytes).map_err(|error| {
                    KeyError::Malformed { path: key.path.display().to_string(), reason: error.to_string() }
                })?;
                file.retired_at = Some(now);
                write_key_file(&key.path, &file)?;
                key.retired_at = Some(now);
            }
            new_kids.push(self.generate(dir, alg, now)?.kid.clone());
        }
        Ok(new_kids)
    }

    /// The newest unretired key of `alg`: the one that signs.
    pub fn active(&self, alg: Algorithm) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|key| key.alg == alg && key.retired_at.is_none())
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The public keys whose tokens can still be valid at `now`, given that no token lives
    /// longer than `max_token_lifetime` seconds: a retired key stays until that long after it
    /// signed its last token.
    pub fn jwks(&self, now: i64, max_token_lifetime: i64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter(|key| key.retired_at.is_none_or(|retired| retired + max_token_lifetime >= now))
            .map(|key| serde_json::Value::Object(key.public_jwk.as_ref().clone()))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs arbitrary bytes as a compact JWS with the active key of `alg` (the revocation
    /// feed), with header `typ` and the key's `kid`.
    pub fn sign_bytes(&self, alg: Algorithm, typ: &str, payload: &[u8]) -> Result<String, KeyError> {
        let key = self.active(alg).ok_or(KeyError::NoActiveKey(alg))?;
        key.compact_jws(typ, payload)
    }

    /// Signs `payload` with the active key of `alg`, with header `typ` and the key's `kid`.
    pub fn sign(&self, alg: Algorithm, typ: &str, payload: &JwtPayload) -> Result<(String, &str), KeyError> {
        self.sign_claims(alg, typ, payload.claims_set())
    }

    /// Signs a claims set (any value that serializes to a JSON object) with the active key of
    /// `alg`, with header `typ` (RFC 9068 §2.1: `at+jwt` for access tokens) and the key's `kid`.
    /// The access tokens' way: a struct of borrowed claims, serialized once, instead of a map of
    /// JSON values built claim by claim.
    pub fn sign_claims(
        &self,
        alg: Algorithm,
        typ: &str,
        claims: &impl Serialize,
    ) -> Result<(String, &str), KeyError> {
        let key = self.active(alg).ok_or(KeyError::NoActiveKey(alg))?;
        let payload = serde_json::to_vec(claims).map_err(|error| KeyError::Sign(error.to_string()))?;
        Ok((key.compact_jws(typ, &payload)?, &key.kid))
    }
}

impl SigningKey {
    /// RFC 7515 §7.1 compact serialization: BASE64URL(header) . BASE64URL(payload) .
    /// BASE64URL(signature over the first two parts), no padding. The protected header holds
    /// `typ`, `alg` and `kid`, nothing else (no `jku`/`jwk`/`x5u` a verifier could be led by).
    fn compact_jws(&self, typ: &str, payload: &[u8]) -> Result<String, KeyError> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        #[derive(Serialize)]
        struct Header<'a> {
            typ: &'a str,
            alg: &'a str,
            kid: &'a str,
        }
        let header = serde_json::to_vec(&Header { typ, alg: self.alg.as_str(), kid: &self.kid })
            .map_err(|error| KeyError::Sign(error.to_string()))?;
        let signature_len = self.signer.signature_len();
        let mut token = String::with_capacity((header.len() + payload.len() + signature_len) * 4 / 3 + 8);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature =
            self.signer.sign(token.as_bytes()).map_err(|error| KeyError::Sign(error.to_string()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys generated in one second come in `kid` order, as a ring read from the directory has
    /// them: otherwise the first background reload after a first start found a "changed" ring in
    /// half the starts and logged that it reloaded keys nobody had touched.
    #[test]
    fn a_generated_ring_is_the_ring_read_back_from_its_directory() {
        let kids = |ring: &KeyRing| ring.keys().iter().map(|key| key.kid.clone()).collect::<Vec<_>>();
        for _ in 0..16 {
            let dir = tempfile::tempdir().unwrap();
            let ring =
                KeyRing::load_or_generate(dir.path(), &[Algorithm::ES256, Algorithm::EdDSA], 1000).unwrap();
            assert_eq!(kids(&ring), kids(&KeyRing::load(dir.path()).unwrap()));
        }
    }

    /// Our ES256 signer against josekit's: signatures it makes verify with josekit's ES256
    /// verifier of the public key, fail for another message, and are fresh each time.
    #[test]
    fn es256_signatures_verify_with_josekit() {
        let pem = generate_pem(Algorithm::ES256).unwrap();
        let signer = AwsLcSigner::es256(pem.as_bytes()).unwrap();
        let public = ES256.key_pair_from_pem(pem.as_bytes()).unwrap().to_jwk_public_key();
        let verifier = ES256.verifier_from_jwk(&public).unwrap();
        for message in [&b""[..], b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0", &[0xff; 1000]] {
            let signature = signer.sign(message).unwrap();
            assert_eq!(signature.len(), 64);
            verifier.verify(message, &signature).unwrap();
            assert!(verifier.verify(b"another message", &signature).is_err());
            assert_ne!(signer.sign(message).unwrap(), signature, "a fresh nonce each time");
        }
        // R or S below 2^248 (one signature in 64) is left-padded to 32 bytes: 300 tries.
        for _ in 0..300 {
            verifier.verify(b"m", &signer.sign(b"m").unwrap()).unwrap();
        }
        // And josekit's own signer's output verifies the same way: same format.
        let theirs = ES256.signer_from_pem(pem.as_bytes()).unwrap().sign(b"m").unwrap();
        verifier.verify(b"m", &theirs).unwrap();
        assert!(AwsLcSigner::es256(b"not a key").is_err());
    }

    /// Our EdDSA signer against josekit's: Ed25519 is deterministic (RFC 8032 §5.1.6), so the
    /// two give the same bytes for the same key and message, and josekit's verifier accepts them.
    #[test]
    fn ed25519_signatures_are_josekits_byte_for_byte() {
        let pem = generate_pem(Algorithm::EdDSA).unwrap();
        let ours = AwsLcSigner::ed25519(pem.as_bytes()).unwrap();
        let theirs = EdDSA.signer_from_pem(pem.as_bytes()).unwrap();
        let public = EdDSA.key_pair_from_pem(pem.as_bytes()).unwrap().to_jwk_public_key();
        let verifier = EdDSA.verifier_from_jwk(&public).unwrap();
        for message in [&b""[..], b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0", &[0xff; 1000]] {
            let signature = ours.sign(message).unwrap();
            assert_eq!(signature.len(), ours.signature_len());
            assert_eq!(signature, theirs.sign(message).unwrap());
            verifier.verify(message, &signature).unwrap();
            assert!(verifier.verify(b"another message", &signature).is_err());
        }
        assert_eq!(ours.algorithm().name(), "EdDSA");
        assert!(AwsLcSigner::ed25519(b"not a key").is_err());
        let p256 = generate_pem(Algorithm::ES256).unwrap();
        assert!(AwsLcSigner::ed25519(p256.as_bytes()).is_err(), "a P-256 key is no Ed25519 key");
        assert!(AwsLcSigner::es256(pem.as_bytes()).is_err(), "nor the other way round");
        // A key file holding an Ed448 key is refused with a reason, not loaded.
        let ed448 = EdDSA.generate_key_pair(EdCurve::Ed448).unwrap().to_pem_private_key();
        let file = KeyFile {
            alg: Algorithm::EdDSA,
            created_at: 0,
            retired_at: None,
            private_key_pem: String::from_utf8(ed448).unwrap(),
        };
        let Err(KeyError::Malformed { reason, .. }) = load_key(Path::new("eddsa-x.json"), file) else {
            panic!("an Ed448 key was loaded");
        };
        assert_eq!(reason, "an EdDSA key must be on Ed25519");
    }

    /// RFC 8037 §A.4: the Ed25519 example's signature, from the private key of §A.1.
    #[test]
    fn rfc8037_ed25519_example_signature() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // PKCS#8 v1 of an Ed25519 seed (RFC 8410 §7): a fixed prefix, then the 32 bytes.
        let mut pkcs8 = hex_bytes("302e020100300506032b657004220420");
        pkcs8.extend(b64.decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap());
        let pem =
            openssl::pkey::PKey::private_key_from_der(&pkcs8).unwrap().private_key_to_pem_pkcs8().unwrap();
        let signer = AwsLcSigner::ed25519(&pem).unwrap();
        let signature = signer.sign(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc").unwrap();
        assert_eq!(
            b64.encode(signature),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// The compact serialization (RFC 7515 §7.1) with every algorithm: josekit's verifier of the
    /// published key accepts it, the header is exactly `typ`, `alg`, `kid`, and the payload is
    /// the claims as serialized.
    #[test]
    fn signed_claims_verify_with_josekit_for_every_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let all = [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA];
        let ring = KeyRing::load_or_generate(dir.path(), &all, 1000).unwrap();
        let claims = serde_json::json!({ "sub": "user-1", "exp": 1900, "scope": "read write" });
        for alg in all {
            let (token, kid) = ring.sign_claims(alg, "at+jwt", &claims).unwrap();
            let key = ring.active(alg).unwrap();
            let verifier: Box<dyn josekit::jws::JwsVerifier> = match alg {
                Algorithm::ES256 => Box::new(ES256.verifier_from_jwk(&key.public_jwk).unwrap()),
                Algorithm::RS256 => Box::new(RS256.verifier_from_jwk(&key.public_jwk).unwrap()),
                Algorithm::EdDSA => Box::new(EdDSA.verifier_from_jwk(&key.public_jwk).unwrap()),
            };
            let (payload, header) = josekit::jwt::decode_with_verifier(&token, verifier.as_ref()).unwrap();
            assert_eq!(header.token_type(), Some("at+jwt"));
            assert_eq!(header.key_id(), Some(kid));
            assert_eq!(header.algorithm(), Some(alg.as_str()));
            assert_eq!(header.claims_set().len(), 3, "{alg}: {:?}", header.claims_set());
            assert_eq!(serde_json::Value::Object(payload.claims_set().clone()), claims);
            // A changed payload no longer verifies.
            let parts: Vec<&str> = token.split('.').collect();
            let forged = format!("{}.{}.{}", parts[0], sha256_base64url(b"other"), parts[2]);
            assert!(josekit::jwt::decode_with_verifier(&forged, verifier.as_ref()).is_err());
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = Jwk::from_bytes(br#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(thumbprint(&jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn generates_loads_rotates_and_retires() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring =
            KeyRing::load_or_generate(dir.path(), &[Algorithm::ES256, Algorithm::RS256], 1000).unwrap();
        let first = ring.active(Algorithm::ES256).unwrap().kid.clone();
        for entry in fs::read_dir(dir.path()).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let reloaded = KeyRing::load_or_generate(dir.path(), &[Algorithm::ES256], 2000).unwrap();
        assert_eq!(reloaded.active(Algorithm::ES256).unwrap().kid, first, "an existing key is reused");

        ring.rotate(dir.path(), 5000).unwrap();
        let second = ring.active(Algorithm::ES256).unwrap().kid.clone();
        assert_ne!(first, second);
        let published = |ring: &KeyRing, now| -> Vec<String> {
            ring.jwks(now, 900)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        assert!(published(&ring, 5900).contains(&first), "kept while its tokens can live");
        assert!(!published(&ring, 5901).contains(&first), "dropped once they cannot");
        assert!(published(&ring, 5901).contains(&second));
        let reloaded = KeyRing::load(dir.path()).unwrap();
        assert_eq!(reloaded.active(Algorithm::ES256).unwrap().kid, second);
    }

    /// What the running server's reload compares: unchanged while nothing is written, changed by
    /// a rotation, by an edit in place and by a key file added or removed; files other than
    /// `*.json` do not count.
    #[test]
    fn the_key_directory_state_changes_with_its_key_files_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KeyRing::dir_state(&dir.path().join("missing")).unwrap(), KeyDirState(Vec::new()));
        let mut ring = KeyRing::load_or_generate(dir.path(), &[Algorithm::ES256], 1000).unwrap();
        let state = KeyRing::dir_state(dir.path()).unwrap();
        assert_eq!(state.0.len(), 1);
        assert_eq!(KeyRing::dir_state(dir.path()).unwrap(), state, "nothing written, nothing changed");
        fs::write(dir.path().join("notes.txt"), "not a key").unwrap();
        assert_eq!(KeyRing::dir_state(dir.path()).unwrap(), state, "only key files count");

        ring.rotate(dir.path(), 2000).unwrap();
        let rotated = KeyRing::dir_state(dir.path()).unwrap();
        assert_ne!(rotated, state, "a rotation retires one file and adds another");
        assert_eq!(rotated.0.len(), 2);

        // An edit in place, same size: the modification time tells it apart.
        let path = ring.active(Algorithm::ES256).unwrap().path.clone();
        let bytes = fs::read(&path).unwrap();
        let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(&bytes).unwrap();
        // Set, not waited for: the clock's tick may be coarser than the test.
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1)).unwrap();
        assert_ne!(KeyRing::dir_state(dir.path()).unwrap(), rotated, "an edit in place");

        let edited = KeyRing::dir_state(dir.path()).unwrap();
        fs::remove_file(&path).unwrap();
        assert_ne!(KeyRing::dir_state(dir.path()).unwrap(), edited, "a key file removed");
    }
}
