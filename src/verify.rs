//! Offline verification of this server's access tokens (RFC 9068) for resource servers.
//!
//! A [`Verifier`] holds the issuer's public keys (from a JWKS document, a file, or fetched from
//! the issuer at start) and checks a token with no network call: the signature with the key
//! named by `kid`, then every claim itself (josekit checks none): the algorithm is in an
//! allowlist (never `none`, never HMAC) and is the key's own, `typ` is `at+jwt`, `iss` and `aud`
//! are the expected ones, `exp`, `nbf` and `iat` are present and hold within a small leeway.
//!
//! Two things need the network, both optional and bounded: a token with an unknown `kid`
//! triggers one JWKS refetch (at most one per [`Verifier::with_refetch_interval`]), and
//! [`Verifier::poll_revocations`] keeps a list of revoked token ids, and of deleted clients, from
//! the issuer's signed revocation feed, so revoked tokens (and every token of a deleted client)
//! are refused offline too, at most one poll interval (plus the feed's 10 s cache lifetime) late.
//!
//! This module needs no HTTP server, no store and no pages (`features = ["verify"]`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use josekit::jwk::{Jwk, JwkSet};
use josekit::jws::{ES256, EdDSA, JwsAlgorithm, JwsVerifier, RS256};
use josekit::jwt::{self, JwtPayload};
use serde::{Deserialize, Serialize};

pub mod poem;

/// Why a token was refused: one variant per reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("{}; it must be \"at+jwt\" (RFC 9068 §2.1)", match .0 {
        Some(typ) => format!("the token's typ is {typ:?}"),
        None => "the token has no typ".to_owned(),
    })]
    WrongType(Option<String>),
    #[error("algorithm {0:?} is not accepted")]
    AlgorithmNotAllowed(String),
    #[error("no key with kid {0:?}")]
    UnknownKey(String),
    #[error("the token has no kid")]
    MissingKeyId,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("claim {0} is missing or has the wrong type")]
    MissingClaim(&'static str),
    #[error("the token was issued by {0:?}, not by this issuer")]
    WrongIssuer(String),
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInTheFuture,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the JWKS is not usable: {0}")]
    BadJwks(String),
    #[error("could not fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
}

/// The claims of an RFC 9068 access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    /// The user's id, or the client's for client_credentials.
    pub sub: String,
    pub aud: serde_json::Value,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// When the user signed in (absent for client_credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl AccessTokenClaims {
    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|scope| !scope.is_empty())
    }

    /// True when the token carries scope `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scopes().any(|scope| scope == wanted)
    }

    /// True when the token carries every scope of `wanted`.
    pub fn has_scopes(&self, wanted: &[&str]) -> bool {
        wanted.iter().all(|scope| self.has_scope(scope))
    }
}

/// The JWS algorithms a verifier can accept. Only asymmetric ones exist here: `none` and HMAC
/// (whose "secret" an attacker would take from the public JWKS) cannot even be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    ES256,
    RS256,
    EdDSA,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA].into_iter().find(|alg| alg.name() == name)
    }
}

struct VerifyingKey {
    alg: Algorithm,
    verifier: Box<dyn JwsVerifier>,
}

/// One revoked access token, as the revocation feed lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    pub jti: String,
    pub exp: i64,
}

/// A deleted client, as the revocation feed lists it: every access token issued to it at or
/// before `deleted_at` (its `iat`) is revoked; none of them is valid after `exp`, when the entry
/// leaves the feed. A token issued later is from a new client of the same id (the server creates
/// `swagger-ui` again at its next start). A client that revoked more access tokens one by one
/// than the server's `--max-revoked-per-client` is listed the same way, without being deleted:
/// its tokens issued up to `deleted_at` are revoked, later ones are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedClient {
    pub client_id: String,
    pub deleted_at: i64,
    pub exp: i64,
}

/// One user's access tokens of a client, as the revocation feed lists them: every access token
/// with this `client_id` and `sub` issued at or before `issued_until` (its `iat`) is revoked;
/// none of them is valid after `exp`, when the entry leaves the feed. Written instead of listing
/// each `jti` once revocations of the user's tokens of that client (by a public client, or by
/// the user withdrawing their authorizations) passed the server's `--max-revoked-per-client`
/// within an access-token lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSubject {
    pub client_id: String,
    pub sub: String,
    pub issued_until: i64,
    pub exp: i64,
}

/// The payload of the revocation feed (a JWS with `typ: revocation-list+jwt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationFeed {
    pub iss: String,
    pub iat: i64,
    pub revoked: Vec<RevokedToken>,
    /// Absent when empty (feeds of earlier releases have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_clients: Vec<RevokedClient>,
    /// Absent when empty (feeds of earlier releases have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_subjects: Vec<RevokedSubject>,
}

/// What the last revocation feed applied lists: `jti` → `exp`, client id → (`deleted_at`,
/// `exp`), and (client id, `sub`) → (`issued_until`, `exp`).
#[derive(Default)]
struct Revoked {
    tokens: HashMap<String, i64>,
    clients: HashMap<String, (i64, i64)>,
    subjects: HashMap<(String, String), (i64, i64)>,
}

impl Revoked {
    fn len(&self) -> usize {
        self.tokens.len() + self.clients.len() + self.subjects.len()
    }

    /// Whether the feed revoked the token (an entry still counts within the leeway after its
    /// `exp`, as the token itself would).
    fn lists(&self, claims: &AccessTokenClaims, not_before: i64) -> bool {
        let token_listed = || self.tokens.get(&claims.jti).is_some_and(|&exp| exp > not_before);
        let client_deleted = || {
            (self.clients.get(&claims.client_id))
                .is_some_and(|&(deleted_at, exp)| claims.iat <= deleted_at && exp > not_before)
        };
        // The key copied for the lookup: only while the feed lists some user's tokens.
        let subject_revoked = || {
            let key = (claims.client_id.clone(), claims.sub.clone());
            (self.subjects.get(&key))
                .is_some_and(|&(issued_until, exp)| claims.iat <= issued_until && exp > not_before)
        };
        (!self.tokens.is_empty() && token_listed())
            || (!self.clients.is_empty() && client_deleted())
            || (!self.subjects.is_empty() && subject_revoked())
    }
}

/// The media type (`typ`) of the revocation feed's JWS.
pub const REVOCATION_FEED_TYPE: &str = "revocation-list+jwt";

/// Verifies access tokens offline against a JWKS.
pub struct Verifier {
    keys: RwLock<HashMap<String, Arc<VerifyingKey>>>,
    issuer: String,
    audience: String,
    leeway_seconds: i64,
    algorithms: Vec<Algorithm>,
    jwks_uri: Option<String>,
    refetch_interval: Duration,
    last_refetch: Mutex<Option<Instant>>,
    /// One refetch at a time: concurrent requests with the same new `kid` wait for it rather
    /// than being refused because a refetch "just happened".
    refetching: tokio::sync::Mutex<()>,
    /// From the revocation feed.
    revoked: RwLock<Revoked>,
    /// `iat` of the newest feed applied: an older one (a replayed response) is ignored.
    feed_issued_at: Mutex<i64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> =
            self.keys.read().map(|keys| keys.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("Verifier")
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish_non_exhaustive()
    }
}

fn parse_jwks(jwks: &[u8]) -> Result<HashMap<String, Arc<VerifyingKey>>, VerifyError> {
    let set = JwkSet::from_bytes(jwks).map_err(|error| VerifyError::BadJwks(error.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in set.keys() {
        // A key without kid cannot be selected; one without a known alg cannot be trusted.
        let (Some(kid), Some(alg)) = (jwk.key_id(), jwk.algorithm().and_then(Algorithm::from_name)) else {
            continue;
        };
        if jwk.key_use().is_some_and(|key_use| key_use != "sig") {
            continue;
        }
        keys.insert(kid.to_owned(), Arc::new(VerifyingKey { alg, verifier: verifier_for(jwk, alg)? }));
    }
    Ok(keys)
}

fn verifier_for(jwk: &Jwk, alg: Algorithm) -> Result<Box<dyn JwsVerifier>, VerifyError> {
    let bad = |error: josekit::JoseError| VerifyError::BadJwks(error.to_string());
    Ok(match alg {
        Algorithm::ES256 => {
            // josekit checks the JWK (kty, crv, key_use, key_ops) as it always has; aws-lc verifies.
            ES256.verifier_from_jwk(jwk).map_err(bad)?;
            Box::new(AwsLcVerifier::es256(jwk)?)
        }
        Algorithm::RS256 => Box::new(RS256.verifier_from_jwk(jwk).map_err(bad)?),
        Algorithm::EdDSA => {
            let josekit = EdDSA.verifier_from_jwk(jwk).map_err(bad)?;
            // aws-lc has Ed25519 only; an Ed448 key (RFC 8037 allows it) stays with josekit.
            match jwk.curve() {
                Some("Ed25519") => Box::new(AwsLcVerifier::ed25519(jwk)?),
                _ => Box::new(josekit),
            }
        }
    })
}

/// ES256 (RFC 7518 §3.4) and Ed25519 (RFC 8037 §3.1) verified by aws-lc (through aws-lc-rs,
/// already built for reqwest's TLS), like the server's signatures, with the key parsed, and
/// checked to be a point on its curve, once instead of per token. ES256: about 20 % less time
/// per verification than josekit's over OpenSSL 3.0 on the benchmark machine; Ed25519: about
/// a third of it (bench/README.md; `cargo bench --bench verify`).
#[derive(Clone)]
struct AwsLcVerifier {
    /// ES256 or EdDSA.
    alg: &'static dyn JwsAlgorithm,
    key: Arc<aws_lc_rs::signature::ParsedPublicKey>,
}

impl std::fmt::Debug for AwsLcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsLcVerifier({})", self.alg.name())
    }
}

/// A JWK member of base64url bytes of exactly `len` bytes (a key's coordinate).
fn jwk_bytes(jwk: &Jwk, alg: Algorithm, name: &str, len: usize) -> Result<Vec<u8>, VerifyError> {
    use base64::Engine;
    jwk.parameter(name)
        .and_then(|value| value.as_str())
        .and_then(|value| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok())
        .filter(|bytes| bytes.len() == len)
        .ok_or_else(|| {
            VerifyError::BadJwks(format!("an {} key's {name} is not {len} bytes of base64url", alg.name()))
        })
}

impl AwsLcVerifier {
    /// From an EC JWK on P-256: its `x` and `y`, 32 bytes each, as an uncompressed point
    /// (SEC 1 §2.3.3).
    fn es256(jwk: &Jwk) -> Result<AwsLcVerifier, VerifyError> {
        let mut point = vec![0x04];
        point.extend_from_slice(&jwk_bytes(jwk, Algorithm::ES256, "x", 32)?);
        point.extend_from_slice(&jwk_bytes(jwk, Algorithm::ES256, "y", 32)?);
        // `ECDSA_P256_SHA256_FIXED` takes R then S, 32 bytes each, and refuses any other length.
        AwsLcVerifier::new(&ES256, &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, point)
    }

    /// From an OKP JWK on Ed25519 (RFC 8037 §2): its `x`, the 32-byte public key.
    fn ed25519(jwk: &Jwk) -> Result<AwsLcVerifier, VerifyError> {
        let x = jwk_bytes(jwk, Algorithm::EdDSA, "x", 32)?;
        AwsLcVerifier::new(&EdDSA, &aws_lc_rs::signature::ED25519, x)
    }

    fn new(
        alg: &'static dyn JwsAlgorithm,
        algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
        public_key: Vec<u8>,
    ) -> Result<AwsLcVerifier, VerifyError> {
        let key = aws_lc_rs::signature::ParsedPublicKey::new(algorithm, public_key).map_err(|error| {
            VerifyError::BadJwks(format!("an {} key is not a point on its curve: {error}", alg.name()))
        })?;
        Ok(AwsLcVerifier { alg, key: Arc::new(key) })
    }
}

impl JwsVerifier for AwsLcVerifier {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        self.alg
    }

    fn key_id(&self) -> Option<&str> {
        None // keys are selected by `Verifier::select_key`
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), josekit::JoseError> {
        self.key
            .verify_sig(message, signature)
            .map_err(|error| josekit::JoseError::InvalidSignature(error.into()))
    }

    fn box_clone(&self) -> Box<dyn JwsVerifier> {
        Box::new(self.clone())
    }
}

/// A document (a revocation feed, or with no `etag` anything else) fetched with the `ETag` of
/// the one applied last: `None` when it is unchanged (304), so a poll of an unchanged feed
/// neither downloads nor checks it again.
async fn fetch_unless_unchanged(
    url: &str,
    etag: Option<&str>,
) -> Result<Option<(Vec<u8>, Option<String>)>, VerifyError> {
    let failed = |reason: String| VerifyError::Fetch { url: url.to_owned(), reason };
    let mut request = reqwest::Client::new().get(url);
    if let Some(etag) = etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let response = request.send().await.map_err(|error| failed(error.to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let etag = (response.headers().get(reqwest::header::ETAG))
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.map_err(|error| failed(error.to_string()))?;
    Ok(Some((body.to_vec(), etag)))
}

async fn fetch(url: &str) -> Result<Vec<u8>, VerifyError> {
    // Without an `ETag` to revalidate there is no 304: a body, or an error.
    Ok(fetch_unless_unchanged(url, None).await?.map(|(body, _)| body).unwrap_or_default())
}

impl Verifier {
    /// A verifier for tokens from `issuer` meant for `audience`, with the keys of `jwks` (a JWK
    /// Set document). Keys without `kid`, without a supported `alg`, or not for signing are
    /// skipped.
    pub fn from_jwks_json(jwks: &[u8], issuer: &str, audience: &str) -> Result<Verifier, VerifyError> {
        Ok(Verifier {
            keys: RwLock::new(parse_jwks(jwks)?),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_seconds: 30,
            algorithms: vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA],
            jwks_uri: None,
            refetch_interval: Duration::from_secs(30),
            last_refetch: Mutex::new(None),
            refetching: tokio::sync::Mutex::new(()),
            revoked: RwLock::new(Revoked::default()),
            feed_issued_at: Mutex::new(i64::MIN),
        })
    }

    /// Like [`Verifier::from_jwks_json`], reading the JWKS from a file.
    pub fn from_jwks_file(
        path: &std::path::Path,
        issuer: &str,
        audience: &str,
    ) -> Result<Verifier, VerifyError> {
        let bytes = std::fs::read(path).map_err(|error| VerifyError::Fetch {
            url: path.display().to_string(),
            reason: error.to_string(),
        })?;
        Verifier::from_jwks_json(&bytes, issuer, audience)
    }

    /// Fetches the issuer's metadata (RFC 8414) and its JWKS. Tokens with a `kid` not in it
    /// later trigger a refetch of `jwks_uri`.
    pub async fn from_issuer(issuer: &str, audience: &str) -> Result<Verifier, VerifyError> {
        let issuer = issuer.trim_end_matches('/');
        let metadata_url = format!("{issuer}/.well-known/oauth-authorization-server");
        let metadata: serde_json::Value = serde_json::from_slice(&fetch(&metadata_url).await?)
            .map_err(|error| VerifyError::Fetch { url: metadata_url.clone(), reason: error.to_string() })?;
        // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if metadata["issuer"].as_str() != Some(issuer) {
            return Err(VerifyError::Fetch {
                url: metadata_url,
                reason: "the metadata names another issuer".into(),
            });
        }
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or_else(|| VerifyError::Fetch { url: metadata_url.clone(), reason: "no jwks_uri".into() })?;
        let mut verifier = Verifier::from_jwks_json(&fetch(jwks_uri).await?, issuer, audience)?;
        verifier.jwks_uri = Some(jwks_uri.to_owned());
        Ok(verifier)
    }

    /// Tolerated clock skew for `exp`, `nbf` and `iat` (default 30 s).
    pub fn with_leeway(mut self, seconds: i64) -> Verifier {
        self.leeway_seconds = seconds.max(0);
        self
    }

    /// The algorithms accepted (default ES256, RS256, EdDSA).
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Verifier {
        self.algorithms = algorithms.to_vec();
        self
    }

    /// Where to refetch keys when a token names an unknown `kid` (set by `from_issuer`).
    pub fn with_jwks_uri(mut self, jwks_uri: &str) -> Verifier {
        self.jwks_uri = Some(jwks_uri.to_owned());
        self
    }

    /// The least time between two refetches caused by unknown `kid`s (default 30 s), so that a
    /// flood of forged tokens cannot turn into a flood of requests to the issuer.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Verifier {
        self.refetch_interval = interval;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Replaces the keys (the server does this when its keys directory changes).
    pub fn replace_keys(&self, jwks: &[u8]) -> Result<(), VerifyError> {
        let keys = parse_jwks(jwks)?;
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        Ok(())
    }

    /// Verifies `token` at Unix time `now`, offline.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessTokenClaims, VerifyError> {
        if token.len() > 16 * 1024 || token.split('.').count() != 3 {
            return Err(VerifyError::Malformed);
        }
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The header is parsed once, by josekit, and checked here before any signature work.
        let refused = std::cell::RefCell::new(None);
        let decoded =
            jwt::decode_with_verifier_selector(token, |header| match self.select_key(&keys, header) {
                Ok(key) => Ok(Some(key.verifier.as_ref())),
                Err(error) => {
                    *refused.borrow_mut() = Some(error);
                    Ok(None)
                }
            });
        if let Some(error) = refused.into_inner() {
            return Err(error);
        }
        let (payload, _) = decoded.map_err(|error| match error {
            josekit::JoseError::InvalidSignature(_) => VerifyError::BadSignature,
            _ => VerifyError::Malformed,
        })?;
        drop(keys);
        let claims = self.check_claims(&payload, now)?;
        let revoked = self.revoked.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if revoked.lists(&claims, now - self.leeway_seconds) {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// The key a token's header names, if the header is acceptable: an allowed algorithm that is
    /// the key's own, `typ` `at+jwt`, a known `kid`.
    fn select_key<'k>(
        &self,
        keys: &'k HashMap<String, Arc<VerifyingKey>>,
        header: &josekit::jws::JwsHeader,
    ) -> Result<&'k VerifyingKey, VerifyError> {
        let claim = |name: &str| header.claim(name).and_then(|value| value.as_str());
        let alg_name = claim("alg").unwrap_or("none");
        let alg = Algorithm::from_name(alg_name)
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| VerifyError::AlgorithmNotAllowed(alg_name.to_owned()))?;
        let typ = claim("typ");
        // RFC 9068 §4: "application/at+jwt" is the same media type.
        if !matches!(typ, Some("at+jwt") | Some("application/at+jwt")) {
            return Err(VerifyError::WrongType(typ.map(str::to_owned)));
        }
        let kid = claim("kid").ok_or(VerifyError::MissingKeyId)?;
        let key = keys.get(kid).ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))?;
        if key.alg != alg {
            // RFC 8725 §3.1: the token may not choose an algorithm other than its key's.
            return Err(VerifyError::AlgorithmNotAllowed(alg_name.to_owned()));
        }
        Ok(key)
    }

    /// [`Verifier::verify`], but a token naming an unknown `kid` first makes the verifier refetch
    /// the JWKS (at most once per refetch interval), then tries again.
    pub async fn verify_refreshing_keys(
        &self,
        token: &str,
        now: i64,
    ) -> Result<AccessTokenClaims, VerifyError> {
        match self.verify(token, now) {
            Err(VerifyError::UnknownKey(kid)) => {
                if self.refetch_keys_for(&kid).await {
                    self.verify(token, now)
                } else {
                    Err(VerifyError::UnknownKey(kid))
                }
            }
            other => other,
        }
    }

    /// Makes `kid` known if the issuer has it: waits for a refetch in progress, then refetches
    /// unless one happened within the refetch interval. True when `kid` is known afterwards.
    async fn refetch_keys_for(&self, kid: &str) -> bool {
        let _one_at_a_time = self.refetching.lock().await;
        if self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(kid) {
            return true; // a concurrent refetch brought it
        }
        self.refetch_keys().await
            && self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(kid)
    }

    /// Refetches the JWKS unless one was fetched within the refetch interval. True when new keys
    /// were loaded.
    async fn refetch_keys(&self) -> bool {
        let Some(jwks_uri) = &self.jwks_uri else { return false };
        {
            let mut last = self.last_refetch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match fetch(jwks_uri).await.and_then(|jwks| self.replace_keys(&jwks)) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "could not refetch the JWKS");
                false
            }
        }
    }

    fn check_claims(&self, payload: &JwtPayload, now: i64) -> Result<AccessTokenClaims, VerifyError> {
        let string = |name: &'static str| {
            payload.claim(name).and_then(|value| value.as_str()).ok_or(VerifyError::MissingClaim(name))
        };
        let integer = |name: &'static str| {
            payload.claim(name).and_then(|value| value.as_i64()).ok_or(VerifyError::MissingClaim(name))
        };
        let iss = string("iss")?;
        if iss != self.issuer {
            return Err(VerifyError::WrongIssuer(iss.to_owned()));
        }
        let aud = payload.claim("aud").ok_or(VerifyError::MissingClaim("aud"))?;
        let audience_matches = match aud {
            serde_json::Value::String(aud) => aud == &self.audience,
            serde_json::Value::Array(auds) => auds.iter().any(|aud| aud.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_matches {
            return Err(VerifyError::WrongAudience);
        }
        let exp = integer("exp")?;
        let nbf = integer("nbf")?;
        let iat = integer("iat")?;
        // RFC 7519 §4.1.4: valid only while now is before exp.
        if now >= exp + self.leeway_seconds {
            return Err(VerifyError::Expired);
        }
        if nbf > now + self.leeway_seconds {
            return Err(VerifyError::NotYetValid);
        }
        if iat > now + self.leeway_seconds {
            return Err(VerifyError::IssuedInTheFuture);
        }
        Ok(AccessTokenClaims {
            iss: iss.to_owned(),
            sub: string("sub")?.to_owned(),
            aud: aud.clone(),
            exp,
            nbf,
            iat,
            jti: string("jti")?.to_owned(),
            client_id: string("client_id")?.to_owned(),
            scope: payload.claim("scope").and_then(|scope| scope.as_str()).unwrap_or_default().to_owned(),
            auth_time: payload.claim("auth_time").and_then(|time| time.as_i64()),
        })
    }

    /// Checks a revocation feed (a JWS from the issuer) and, if it is genuine and newer than the
    /// last one applied, makes its lists the revoked tokens and clients. Returns how many entries they hold.
    pub fn apply_revocation_feed(&self, feed: &str, now: i64) -> Result<usize, VerifyError> {
        let header = jwt::decode_header(feed).map_err(|_| VerifyError::Malformed)?;
        let typ = header.claim("typ").and_then(|typ| typ.as_str()).map(str::to_owned);
        if typ.as_deref() != Some(REVOCATION_FEED_TYPE) {
            return Err(VerifyError::WrongType(typ));
        }
        let kid = header.claim("kid").and_then(|kid| kid.as_str()).ok_or(VerifyError::MissingKeyId)?;
        let alg_name = header.claim("alg").and_then(|alg| alg.as_str()).unwrap_or("none").to_owned();
        let key = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kid)
            .cloned()
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))?;
        if key.alg.name() != alg_name {
            return Err(VerifyError::AlgorithmNotAllowed(alg_name));
        }
        let (payload, _) =
            josekit::jws::deserialize_compact(feed, key.verifier.as_ref()).map_err(|error| match error {
                josekit::JoseError::InvalidSignature(_) => VerifyError::BadSignature,
                _ => VerifyError::Malformed,
            })?;
        let feed: RevocationFeed = serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
        if feed.iss != self.issuer {
            return Err(VerifyError::WrongIssuer(feed.iss));
        }
        if feed.iat > now + self.leeway_seconds {
            return Err(VerifyError::IssuedInTheFuture);
        }
        let mut newest = self.feed_issued_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if feed.iat < *newest {
            return Ok(self.revoked.read().map(|revoked| revoked.len()).unwrap_or(0));
        }
        *newest = feed.iat;
        let revoked = Revoked {
            tokens: feed.revoked.into_iter().map(|token| (token.jti, token.exp)).collect(),
            clients: (feed.revoked_clients.into_iter())
                .map(|client| (client.client_id, (client.deleted_at, client.exp)))
                .collect(),
            subjects: (feed.revoked_subjects.into_iter())
                .map(|subject| ((subject.client_id, subject.sub), (subject.issued_until, subject.exp)))
                .collect(),
        };
        let count = revoked.len();
        *self.revoked.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = revoked;
        Ok(count)
    }

    /// Polls the issuer's revocation feed every `interval` in the background (on the current
    /// tokio runtime) until the verifier is dropped. A token revoked at time t is refused from
    /// t + `interval` + 10 s at the latest (the feed may be cached for 10 s).
    pub fn poll_revocations(
        self: &Arc<Self>,
        feed_url: &str,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        let feed_url = feed_url.to_owned();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            // The `ETag` of the feed applied last: asked with `If-None-Match`, an unchanged feed
            // comes back as a bodiless 304 (the feed holds every revocation of the last token
            // lifetime, megabytes when many tokens are revoked).
            let mut applied: Option<String> = None;
            loop {
                ticker.tick().await;
                let Some(verifier) = verifier.upgrade() else { return };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs() as i64)
                    .unwrap_or_default();
                let result = match fetch_unless_unchanged(&feed_url, applied.as_deref()).await {
                    Ok(None) => continue,
                    Ok(Some((body, etag))) => {
                        let feed = String::from_utf8_lossy(&body).trim().to_owned();
                        let result = match verifier.apply_revocation_feed(&feed, now) {
                            Err(VerifyError::UnknownKey(_)) if verifier.refetch_keys().await => {
                                verifier.apply_revocation_feed(&feed, now)
                            }
                            other => other,
                        };
                        // Kept only for a feed applied: one refused is fetched whole again.
                        applied = result.is_ok().then_some(etag).flatten();
                        result
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::warn!(%error, "could not apply the revocation feed; keeping the last one");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds of earlier releases have no `revoked_clients`; an empty list is left out, so such
    /// a feed reads the same to every verifier.
    #[test]
    fn revoked_clients_are_optional_in_the_feed() {
        let old: RevocationFeed = serde_json::from_str(r#"{"iss":"i","iat":1,"revoked":[]}"#).unwrap();
        assert!(old.revoked_clients.is_empty());
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"iss":"i","iat":1,"revoked":[]}"#);
        let claims = |jti: &str, client_id: &str| AccessTokenClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 100,
            nbf: 0,
            iat: 50,
            jti: jti.into(),
            client_id: client_id.into(),
            scope: String::new(),
            auth_time: None,
        };
        let revoked = Revoked {
            tokens: HashMap::from([("j".to_owned(), 100)]),
            clients: HashMap::from([("c".to_owned(), (50, 200))]),
            subjects: HashMap::from([(("p".to_owned(), "u".to_owned()), (50, 300))]),
        };
        assert!(revoked.lists(&claims("j", "x"), 99));
        assert!(!revoked.lists(&claims("j", "x"), 100), "the token's entry is over");
        assert!(revoked.lists(&claims("other", "c"), 199), "issued in the second of the deletion");
        assert!(!revoked.lists(&claims("other", "c"), 200), "the client's entry is over");
        assert!(!revoked.lists(&claims("other", "x"), 0));
        let later = AccessTokenClaims { iat: 51, ..claims("other", "c") };
        assert!(!revoked.lists(&later, 60), "a new client of the same id");
        let of_user =
            |sub: &str, iat: i64| AccessTokenClaims { sub: sub.into(), iat, ..claims("other", "p") };
        assert!(revoked.lists(&of_user("u", 50), 299), "the user's token of the client");
        assert!(!revoked.lists(&of_user("u", 50), 300), "the user's entry is over");
        assert!(!revoked.lists(&of_user("u", 51), 60), "issued after the entry");
        assert!(!revoked.lists(&of_user("v", 50), 60), "another user's token of the client");
        let elsewhere = AccessTokenClaims { sub: "u".into(), ..claims("other", "x") };
        assert!(!revoked.lists(&elsewhere, 60), "the user's token of another client");
    }

    /// Feeds without `revoked_subjects` (earlier releases) read as none; one with it applies.
    #[test]
    fn revoked_subjects_are_optional_in_the_feed() {
        let feed: RevocationFeed = serde_json::from_str(
            r#"{"iss":"i","iat":1,"revoked":[],"revoked_subjects":[{"client_id":"p","sub":"u","issued_until":5,"exp":9}]}"#,
        )
        .unwrap();
        let expected = RevokedSubject { client_id: "p".into(), sub: "u".into(), issued_until: 5, exp: 9 };
        assert_eq!(feed.revoked_subjects, vec![expected]);
        let empty = RevocationFeed { revoked_subjects: vec![], ..feed };
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"iss":"i","iat":1,"revoked":[]}"#);
    }

    /// RFC 8037 §A.4: the Ed25519 example JWS verifies with the key of §A.2, through aws-lc, and
    /// no longer with a byte of its signature changed.
    #[test]
    fn rfc8037_ed25519_example_verifies() {
        use base64::Engine;
        let jwk = Jwk::from_bytes(
            br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        )
        .unwrap();
        let verifier = verifier_for(&jwk, Algorithm::EdDSA).unwrap();
        assert_eq!(format!("{verifier:?}"), "AwsLcVerifier(EdDSA)");
        let message = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")
            .unwrap();
        verifier.verify(message, &signature).unwrap();
        signature[10] ^= 1;
        assert!(verifier.verify(message, &signature).is_err());
    }
}
