//! OpenID Connect Core 1.0 on top of the code flow: the ID token (§2, §3.1.3.6), the `prompt`
//! and `max_age` rules (§3.1.2.1), and the UserInfo claims (§5.1, §5.4).

use josekit::jwt::JwtPayload;
use sha2::{Digest, Sha256};

use super::{AuthorizationServer, OAuthError};
use crate::domain::{Client, Scope, User};
use crate::keys::Algorithm;

/// The scope that makes a request an OpenID Connect request.
pub const OPENID: &str = "openid";

/// `prompt` values (§3.1.2.1). `select_account` is accepted and treated like no prompt: one
/// browser has one signed-in user here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

impl Prompt {
    pub fn parse(value: Option<&str>) -> Result<Prompt, OAuthError> {
        let mut prompt = Prompt::default();
        for item in value.unwrap_or_default().split(' ').filter(|item| !item.is_empty()) {
            match item {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => {}
                other => {
                    return Err(OAuthError::InvalidRequest(format!(
                        "prompt {other:?} is not supported; use none, login, consent or select_account"
                    )));
                }
            }
        }
        // §3.1.2.1: "If this parameter contains none with any other value, an error is returned."
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(OAuthError::InvalidRequest(
                "prompt=none cannot be combined with other values".into(),
            ));
        }
        Ok(prompt)
    }
}

/// `max_age` (§3.1.2.1): seconds since the user last signed in actively.
pub fn parse_max_age(value: Option<&str>) -> Result<Option<i64>, OAuthError> {
    value
        .map(|value| {
            value
                .parse::<u32>()
                .map(i64::from)
                .map_err(|_| OAuthError::InvalidRequest("max_age must be a whole number of seconds".into()))
        })
        .transpose()
}

/// §3.1.3.6: `at_hash` is the base64url of the left half of the hash of the access token, with
/// the hash of the ID token's algorithm (SHA-256 for RS256 and ES256).
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    crate::secrets::base64url(&digest[..16])
}

/// The algorithms an ID token may be signed with (both keys always exist).
pub const ID_TOKEN_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

impl AuthorizationServer {
    /// Mints an ID token for `user` and `client`, bound to `access_token` (`at_hash`).
    pub fn mint_id_token(
        &self,
        client: &Client,
        user: &User,
        auth_time: i64,
        nonce: Option<&str>,
        access_token: &str,
        now: i64,
    ) -> Result<String, OAuthError> {
        let alg = client.id_token_signed_response_alg.unwrap_or(Algorithm::RS256);
        let mut payload = JwtPayload::new();
        let mut claims = vec![
            ("iss", serde_json::json!(self.config.issuer)),
            ("sub", serde_json::json!(user.id)),
            ("aud", serde_json::json!(client.client_id)),
            ("exp", serde_json::json!(now + self.config.access_token_ttl)),
            ("iat", serde_json::json!(now)),
            ("auth_time", serde_json::json!(auth_time)),
            ("at_hash", serde_json::json!(at_hash(access_token))),
        ];
        if let Some(nonce) = nonce {
            claims.push(("nonce", serde_json::json!(nonce)));
        }
        for (name, value) in claims {
            payload.set_claim(name, Some(value)).map_err(OAuthError::server)?;
        }
        let (token, _) = self.keys().sign(alg, "JWT", &payload)?;
        Ok(token)
    }
}

/// The UserInfo claims `scope` releases about `user` (§5.4): `sub` always; `name` and
/// `preferred_username` for `profile`; `email` and `email_verified` for `email`.
pub fn user_claims(user: &User, scope: &Scope) -> serde_json::Map<String, serde_json::Value> {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), user.id.clone().into());
    if scope.contains("profile") {
        claims.insert("preferred_username".into(), user.username.clone().into());
        if let Some(name) = &user.name {
            claims.insert("name".into(), name.clone().into());
        }
    }
    if scope.contains("email")
        && let Some(email) = &user.email
    {
        claims.insert("email".into(), email.clone().into());
        // Addresses are entered by an administrator, never confirmed by mail.
        claims.insert("email_verified".into(), false.into());
    }
    claims
}

/// The `aud` (client id) and `sub` of an ID token this server signed, read from an
/// `id_token_hint` (OIDC Core §3.1.2.1, RP-Initiated Logout §2). Expiry is not checked: the
/// specifications allow an expired hint. Anything else is refused, never taken as no hint: the
/// OP "MUST validate that it was the issuer of the ID Token" (RP-Initiated Logout §2).
pub fn id_token_hint(server: &AuthorizationServer, hint: &str) -> Result<(String, String), OAuthError> {
    hint_claims(server, hint).ok_or_else(|| {
        OAuthError::InvalidRequest(
            "id_token_hint is not an ID token this server issued (or its signing key was retired)".into(),
        )
    })
}

fn hint_claims(server: &AuthorizationServer, hint: &str) -> Option<(String, String)> {
    let header = josekit::jwt::decode_header(hint).ok()?;
    let kid = header.claim("kid")?.as_str()?.to_owned();
    let keys = server.keys();
    let key = keys.keys().iter().find(|key| key.kid == kid)?;
    let (payload, _) = match key.alg {
        Algorithm::RS256 => josekit::jwt::decode_with_verifier(
            hint,
            &josekit::jws::RS256.verifier_from_jwk(&key.public_jwk).ok()?,
        ),
        Algorithm::ES256 => josekit::jwt::decode_with_verifier(
            hint,
            &josekit::jws::ES256.verifier_from_jwk(&key.public_jwk).ok()?,
        ),
        Algorithm::EdDSA => josekit::jwt::decode_with_verifier(
            hint,
            &josekit::jws::EdDSA.verifier_from_jwk(&key.public_jwk).ok()?,
        ),
    }
    .ok()?;
    if payload.issuer() != Some(server.config.issuer.as_str()) || header.claim("typ")?.as_str()? != "JWT" {
        return None;
    }
    let aud = payload.claim("aud")?.as_str()?.to_owned();
    let sub = payload.claim("sub")?.as_str()?.to_owned();
    Some((aud, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OpenID Connect Core 1.0, Appendix A.3 (RS256, SHA-256).
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[test]
    fn prompt_rules() {
        assert_eq!(Prompt::parse(None).unwrap(), Prompt::default());
        assert!(Prompt::parse(Some("login consent")).unwrap().login);
        assert!(Prompt::parse(Some("none login")).is_err());
        assert!(Prompt::parse(Some("bogus")).is_err());
        assert_eq!(parse_max_age(Some("60")).unwrap(), Some(60));
        assert!(parse_max_age(Some("-1")).is_err());
    }
}
