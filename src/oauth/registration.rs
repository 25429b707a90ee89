//! Client registration rules, shared by the CLI and the applications pages: what a client may be
//! registered with, and the client id and secret it gets.

use crate::domain::{Client, ClientType, GrantType, RedirectUri, Scope};
use crate::keys::Algorithm;
use crate::secrets::{hash_secret, random_alphanumeric, random_secret};

/// What someone asked to register (or change), unvalidated.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistration {
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    /// Empty means authorization_code and refresh_token.
    pub grant_types: Vec<String>,
    pub scope: String,
    pub skip_consent: bool,
    /// Extra origins allowed to call the token endpoint from a browser (CORS).
    pub allowed_origins: Vec<String>,
    pub id_token_alg: Option<String>,
    /// Where RP-initiated logout may send the user afterwards.
    pub post_logout_redirect_uris: Vec<String>,
}

/// A registration that breaks a rule; the message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistrationError(pub String);

/// The parts of a client a registration decides.
#[derive(Debug, Clone)]
pub struct ValidRegistration {
    pub name: String,
    pub client_type: ClientType,
    pub redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    pub scope: Scope,
    pub skip_consent: bool,
    pub allowed_origins: Vec<String>,
    pub id_token_alg: Option<Algorithm>,
    pub post_logout_redirect_uris: Vec<RedirectUri>,
}

fn error(message: impl Into<String>) -> RegistrationError {
    RegistrationError(message.into())
}

impl ClientRegistration {
    pub fn validate(&self) -> Result<ValidRegistration, RegistrationError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(error("the name must be 1 to 100 printable characters"));
        }
        let redirect_uris = parse_uris(&self.redirect_uris)?;
        let post_logout_redirect_uris = parse_uris(&self.post_logout_redirect_uris)?;
        let mut grant_types = Vec::new();
        for name in &self.grant_types {
            let grant = GrantType::parse(name).ok_or_else(|| {
                error(format!(
                    "unknown grant type {name:?}: use authorization_code, refresh_token or client_credentials"
                ))
            })?;
            if !grant_types.contains(&grant) {
                grant_types.push(grant);
            }
        }
        if grant_types.is_empty() {
            grant_types = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
        }
        if self.public && grant_types.contains(&GrantType::ClientCredentials) {
            return Err(error("a public client cannot use client_credentials (RFC 6749 §4.4)"));
        }
        // Refresh tokens come only from the code exchange (client_credentials issues none, RFC
        // 6749 §4.4.3): without the code grant, refresh_token could never be used.
        if grant_types.contains(&GrantType::RefreshToken)
            && !grant_types.contains(&GrantType::AuthorizationCode)
        {
            return Err(error(
                "the refresh_token grant needs authorization_code: refresh tokens are issued only by the code exchange",
            ));
        }
        if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            return Err(error("the authorization_code grant needs at least one redirect URI"));
        }
        let scope = Scope::parse(&self.scope).map_err(|problem| error(problem.to_string()))?;
        let mut allowed_origins = Vec::new();
        for origin in
            self.allowed_origins.iter().map(|origin| origin.trim()).filter(|origin| !origin.is_empty())
        {
            let parsed =
                url::Url::parse(origin).map_err(|_| error(format!("{origin:?} is not an origin")))?;
            let normalized = parsed.origin().ascii_serialization();
            if !matches!(parsed.origin(), url::Origin::Tuple(..))
                || normalized != origin.trim_end_matches('/')
            {
                return Err(error(format!(
                    "{origin:?} is not an origin: write scheme://host[:port], without a path"
                )));
            }
            allowed_origins.push(normalized);
        }
        let id_token_alg = match self.id_token_alg.as_deref().filter(|alg| !alg.is_empty()) {
            None => None,
            Some(name) => Some(
                crate::oauth::oidc::ID_TOKEN_ALGORITHMS
                    .into_iter()
                    .find(|alg| alg.as_str() == name)
                    .ok_or_else(|| error(format!("ID token algorithm {name:?}: use RS256 or ES256")))?,
            ),
        };
        Ok(ValidRegistration {
            name: name.to_owned(),
            client_type: if self.public { ClientType::Public } else { ClientType::Confidential },
            redirect_uris,
            grant_types,
            scope,
            skip_consent: self.skip_consent,
            allowed_origins,
            id_token_alg,
            post_logout_redirect_uris,
        })
    }
}

/// Redirect URIs, one per entry, blank entries ignored, at most 20.
fn parse_uris(uris: &[String]) -> Result<Vec<RedirectUri>, RegistrationError> {
    let parsed = uris
        .iter()
        .map(|uri| uri.trim())
        .filter(|uri| !uri.is_empty())
        .map(|uri| RedirectUri::parse(uri).map_err(|problem| error(problem.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.len() > 20 {
        return Err(error("at most 20 redirect URIs"));
    }
    Ok(parsed)
}

impl ValidRegistration {
    /// A new client with a fresh id and, for confidential clients, a secret (shown once; only
    /// its SHA-256 is kept).
    pub fn into_client(self, owner: Option<String>, now: i64) -> (Client, Option<String>) {
        let secret = (self.client_type == ClientType::Confidential).then(random_secret);
        let client = Client {
            // 24 alphanumerics (~143 bits): never starts with '-', so it is a safe CLI argument.
            client_id: random_alphanumeric(24),
            name: self.name,
            client_type: self.client_type,
            secret_hash: secret.as_deref().map(hash_secret),
            redirect_uris: self.redirect_uris,
            grant_types: self.grant_types,
            scope: self.scope,
            skip_consent: self.skip_consent,
            owner,
            created_at: now,
            id_token_signed_response_alg: self.id_token_alg,
            allowed_origins: self.allowed_origins,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
        };
        (client, secret)
    }

    /// Changes `client` to this registration. The client type stays what it was registered as
    /// (a confidential client keeps its secret).
    pub fn apply_to(self, client: &mut Client) {
        client.name = self.name;
        client.redirect_uris = self.redirect_uris;
        client.grant_types = self.grant_types;
        client.scope = self.scope;
        client.skip_consent = self.skip_consent;
        client.allowed_origins = self.allowed_origins;
        client.id_token_signed_response_alg = self.id_token_alg;
        client.post_logout_redirect_uris = self.post_logout_redirect_uris;
    }
}

/// A new secret for a confidential client: returns it (shown once).
pub fn rotate_secret(client: &mut Client) -> Option<String> {
    if client.is_public() {
        return None;
    }
    let secret = random_secret();
    client.secret_hash = Some(hash_secret(&secret));
    Some(secret)
}
