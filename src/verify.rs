//! Offline verification of this server's access tokens (RFC 9068) for resource servers: a
//! [`Verifier`] built from a JWKS checks the signature with the key named by `kid`, then every
//! claim itself (josekit checks none): `typ` is `at+jwt`, the algorithm is in an allowlist and
//! matches the key, `iss` and `aud` are the expected ones, `exp`, `nbf` and `iat` are present and
//! hold at `now` within a small leeway.
//!
//! It depends on no HTTP server and no store. The server's own protected resources use it too.

use std::collections::HashMap;

use josekit::jwk::{Jwk, JwkSet};
use josekit::jws::{ES256, EdDSA, JwsVerifier, RS256};
use josekit::jwt::{self, JwtPayload};
use serde::{Deserialize, Serialize};

/// Why a token was refused. Each variant says one thing, so callers and logs can tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token's typ is {0:?}, not \"at+jwt\" (RFC 9068 §2.1)")]
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
    #[error("the JWKS is not usable: {0}")]
    BadJwks(String),
}

/// The claims of an RFC 9068 access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: serde_json::Value,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl AccessTokenClaims {
    /// True when the space-separated `scope` claim contains `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.split(' ').any(|scope| scope == wanted)
    }
}

struct VerifyingKey {
    alg: String,
    verifier: Box<dyn JwsVerifier>,
}

/// Verifies access tokens offline against a JWKS.
pub struct Verifier {
    keys: HashMap<String, VerifyingKey>,
    issuer: String,
    audience: String,
    leeway_seconds: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The algorithms a verifier accepts: asymmetric only (never `none`, never HMAC, whose "secret"
/// would be the public key).
const ALLOWED_ALGORITHMS: [&str; 3] = ["ES256", "RS256", "EdDSA"];

fn verifier_for(jwk: &Jwk, alg: &str) -> Result<Box<dyn JwsVerifier>, VerifyError> {
    let bad = |error: josekit::JoseError| VerifyError::BadJwks(error.to_string());
    Ok(match alg {
        "ES256" => Box::new(ES256.verifier_from_jwk(jwk).map_err(bad)?),
        "RS256" => Box::new(RS256.verifier_from_jwk(jwk).map_err(bad)?),
        "EdDSA" => Box::new(EdDSA.verifier_from_jwk(jwk).map_err(bad)?),
        other => return Err(VerifyError::AlgorithmNotAllowed(other.to_owned())),
    })
}

impl Verifier {
    /// A verifier for tokens from `issuer` meant for `audience`, with the keys of `jwks` (the
    /// JSON of a JWK Set). Keys without `kid` or with an algorithm outside the allowlist are
    /// skipped.
    pub fn from_jwks_json(jwks: &[u8], issuer: &str, audience: &str) -> Result<Verifier, VerifyError> {
        let set = JwkSet::from_bytes(jwks).map_err(|error| VerifyError::BadJwks(error.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in set.keys() {
            let (Some(kid), Some(alg)) = (jwk.key_id(), jwk.algorithm()) else {
                continue;
            };
            if !ALLOWED_ALGORITHMS.contains(&alg) {
                continue;
            }
            keys.insert(
                kid.to_owned(),
                VerifyingKey { alg: alg.to_owned(), verifier: verifier_for(jwk, alg)? },
            );
        }
        Ok(Verifier { keys, issuer: issuer.to_owned(), audience: audience.to_owned(), leeway_seconds: 30 })
    }

    /// Tolerated clock skew for `exp`, `nbf` and `iat` (default 30 s).
    pub fn with_leeway(mut self, seconds: i64) -> Verifier {
        self.leeway_seconds = seconds;
        self
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessTokenClaims, VerifyError> {
        if token.len() > 16 * 1024 || token.split('.').count() != 3 {
            return Err(VerifyError::Malformed);
        }
        let header = jwt::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let alg = header.claim("alg").and_then(|alg| alg.as_str()).unwrap_or("none").to_owned();
        if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
            return Err(VerifyError::AlgorithmNotAllowed(alg));
        }
        let typ = header.claim("typ").and_then(|typ| typ.as_str()).map(str::to_owned);
        // RFC 9068 §4: "application/at+jwt" is the same media type as "at+jwt".
        if !matches!(typ.as_deref(), Some("at+jwt") | Some("application/at+jwt")) {
            return Err(VerifyError::WrongType(typ));
        }
        let kid = header.claim("kid").and_then(|kid| kid.as_str()).ok_or(VerifyError::MissingKeyId)?;
        let key = self.keys.get(kid).ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))?;
        if key.alg != alg {
            // The header may not choose an algorithm other than the key's (RFC 8725 §3.1).
            return Err(VerifyError::AlgorithmNotAllowed(alg));
        }
        let (payload, _) =
            jwt::decode_with_verifier(token, key.verifier.as_ref()).map_err(|error| match error {
                josekit::JoseError::InvalidSignature(_) => VerifyError::BadSignature,
                _ => VerifyError::Malformed,
            })?;
        self.check_claims(&payload, now)
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
        if now >= exp + self.leeway_seconds {
            return Err(VerifyError::Expired);
        }
        if nbf > now + self.leeway_seconds {
            return Err(VerifyError::NotYetValid);
        }
        if iat > now + self.leeway_seconds {
            return Err(VerifyError::IssuedInTheFuture);
        }
        serde_json::from_value(serde_json::Value::Object(payload.claims_set().clone()))
            .map_err(|_| VerifyError::MissingClaim("sub, jti, client_id or scope"))
    }
}
