//! The protocol: RFC 6749 (authorization code, refresh token, client credentials), RFC 7636
//! (PKCE), RFC 9068 (JWT access tokens), RFC 9207 (`iss` in authorization responses). No HTTP and
//! no storage engine here: the functions take parsed parameters, the store traits and `now`, and
//! return outcomes that `api/` and `web/` turn into responses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::domain::{Client, IssuedAccessToken, Scope};
use crate::keys::{Algorithm, KeyRing};
use crate::store::{GrantRevocation, SharedStore};
use crate::verify::{Verifier, VerifyError};

pub mod authorize;
pub mod client_auth;
pub mod error;
pub mod introspect;
pub mod oidc;
pub mod params;
pub mod registration;
pub mod revoke;
pub mod token;

pub use error::OAuthError;
pub use params::Params;

/// See [`AuthorizationServer::access_token_standing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStanding {
    Good,
    /// Its `jti` was revoked.
    Revoked,
    /// Its client was deleted.
    ClientDeleted,
}

/// Protocol settings, validated at start.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The issuer identifier: an https (or loopback http) URL without a trailing slash.
    pub issuer: String,
    /// The `aud` of access tokens.
    pub audience: String,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub code_ttl: i64,
    pub session_ttl: i64,
    pub signing_alg: Algorithm,
    /// Access tokens a client may revoke one by one within an access-token lifetime
    /// ([`AuthorizationServer::revocation_allowance`]).
    pub max_revoked_per_client: u32,
}

/// What the protocol functions work with: settings, storage, keys.
#[derive(Clone)]
pub struct AuthorizationServer {
    pub config: Arc<OAuthConfig>,
    pub store: SharedStore,
    keys: Arc<RwLock<Arc<KeyRing>>>,
    /// Verifies this server's own access tokens; its keys follow `keys`.
    pub verifier: Arc<Verifier>,
    /// Client id → what its revocations listed one by one in the current access-token lifetime:
    /// [`AuthorizationServer::revocation_allowance`].
    revocations_by_client: Arc<Mutex<HashMap<String, RevocationWindow>>>,
}

/// A client's revocations within one access-token lifetime.
#[derive(Debug, Default)]
struct RevocationWindow {
    /// When the lifetime began.
    since: i64,
    /// Access tokens listed one by one since.
    listed: u64,
    /// Whether passing the bound was logged.
    warned: bool,
}

/// Every key on disk, retired ones included, as a JWKS: a token they signed is still checked
/// against its own `exp`.
fn verifier_jwks(ring: &KeyRing) -> String {
    ring.jwks(0, i64::MAX / 2).to_string()
}

impl AuthorizationServer {
    pub fn new(
        config: OAuthConfig,
        store: SharedStore,
        ring: KeyRing,
    ) -> Result<AuthorizationServer, VerifyError> {
        let verifier =
            Verifier::from_jwks_json(verifier_jwks(&ring).as_bytes(), &config.issuer, &config.audience)?;
        Ok(AuthorizationServer {
            config: Arc::new(config),
            store,
            keys: Arc::new(RwLock::new(Arc::new(ring))),
            verifier: Arc::new(verifier),
            revocations_by_client: Default::default(),
        })
    }

    /// Whether the client's revocations are counted against `max_revoked_per_client`: only a
    /// confidential client's. Its requests are authenticated, so only the client itself can take
    /// it past the bound and have all of its access tokens revoked. Anyone holding a public
    /// client's token may present it, so counting those would let any user, with grants of their
    /// own, revoke every other user's tokens of that client; nor are a user's withdrawals of
    /// their authorizations counted, for the same reason. Those revocations list every token.
    pub fn counts_revocations(client: &Client) -> bool {
        !client.is_public()
    }

    /// How many more access tokens the client may have listed one by one in the revocation feed
    /// within the current access-token lifetime: `max_revoked_per_client` less what its
    /// revocations listed since the lifetime began ([`AuthorizationServer::count_listed`]). Past
    /// it, a revocation revokes all of the client's access tokens issued until then instead, in
    /// one entry ([`crate::store::RevokedTokenStore::revoke_client_tokens`]).
    ///
    /// The revocation feed is public and lists every revoked `jti` until it expires; without a
    /// bound, one client minting (or rotating) and revoking tokens as fast as it can would grow it
    /// to hundreds of megabytes, rebuilt after each revocation and downloaded again by every
    /// verifier. With it, what a client's revocations list within a lifetime is bounded (twice
    /// the bound in the feed at most: this lifetime's and the last one's, give or take
    /// revocations running at the same moment). Counted in memory: a restart starts the count
    /// again.
    pub fn revocation_allowance(&self, client_id: &str, now: i64) -> u64 {
        let listed = self.revocation_window(client_id, now, |window| window.listed);
        u64::from(self.config.max_revoked_per_client).saturating_sub(listed)
    }

    /// Counts `listed` access tokens the client's revocation listed one by one.
    pub fn count_listed(&self, client_id: &str, now: i64, listed: u64) {
        self.revocation_window(client_id, now, |window| window.listed = window.listed.saturating_add(listed));
    }

    /// Logs, once per access-token lifetime and client, that the client's revocations now revoke
    /// all of its access tokens issued until then.
    pub fn note_past_bound(&self, client_id: &str, now: i64) {
        if !self.revocation_window(client_id, now, |window| std::mem::replace(&mut window.warned, true)) {
            tracing::warn!(
                %client_id,
                max = self.config.max_revoked_per_client,
                "the client's revocations listed more access tokens one by one than --max-revoked-per-client allows within an access-token lifetime: each further revocation revokes all of its access tokens issued until then"
            );
        }
    }

    /// Runs `f` on the client's count for the current access-token lifetime.
    fn revocation_window<T>(
        &self,
        client_id: &str,
        now: i64,
        f: impl FnOnce(&mut RevocationWindow) -> T,
    ) -> T {
        let lifetime = self.config.access_token_ttl;
        let mut windows = self.revocations_by_client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bounded by the clients that revoked within a lifetime; older counts say nothing.
        if windows.len() > 4096 {
            windows.retain(|_, window| now < window.since + lifetime);
        }
        let window = windows
            .entry(client_id.to_owned())
            .or_insert(RevocationWindow { since: now, ..Default::default() });
        if now >= window.since + lifetime {
            *window = RevocationWindow { since: now, ..Default::default() };
        }
        f(window)
    }

    /// Revokes a grant on a request of `client` (RFC 7009 §2.1 with its refresh token; RFC 6749
    /// §4.1.2 and RFC 9700 §4.14.2 when its code or a rotated refresh token comes back), counted
    /// against its bound ([`AuthorizationServer::counts_revocations`]).
    pub async fn revoke_grant_for(
        &self,
        client: &Client,
        grant_id: &str,
        now: i64,
    ) -> Result<(), OAuthError> {
        if !Self::counts_revocations(client) {
            return Ok(self.store.revoke_grant(grant_id, now).await?);
        }
        let client_id = client.client_id.as_str();
        let allowance = self.revocation_allowance(client_id, now);
        let tokens_until = now + self.max_token_lifetime();
        match self.store.revoke_grant_bounded(grant_id, now, allowance, tokens_until).await? {
            GrantRevocation::Listed(listed) => self.count_listed(client_id, now, listed),
            GrantRevocation::ClientTokensRevoked => self.note_past_bound(client_id, now),
        }
        Ok(())
    }

    /// The keys in use now (cheap: one reference count).
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Replaces the keys (after `keys rotate` changed the keys directory).
    pub fn install_keys(&self, ring: KeyRing) -> Result<(), VerifyError> {
        self.verifier.replace_keys(verifier_jwks(&ring).as_bytes())?;
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// What this server's records say of an access token whose signature and claims verified
    /// (offline verifiers know only what the revocation feed tells them).
    pub async fn access_token_standing(
        &self,
        claims: &crate::verify::AccessTokenClaims,
        now: i64,
    ) -> Result<TokenStanding, OAuthError> {
        if self.store.is_access_token_revoked(&claims.jti, now).await? {
            return Ok(TokenStanding::Revoked);
        }
        // A deleted client's access tokens are all revoked (`ClientStore::delete_client`), also
        // when a client of the same id was created since (`Client::issued_this`).
        match self.store.client(&claims.client_id).await? {
            Some(client) if client.issued_this(claims.iat) => {}
            _ => return Ok(TokenStanding::ClientDeleted),
        }
        // Every access token of the client issued until then was revoked at once
        // (`revocation_allowance`).
        let revoked_until = self.store.client_tokens_revoked_until(&claims.client_id, now).await?;
        if revoked_until.is_some_and(|until| claims.iat <= until) {
            return Ok(TokenStanding::Revoked);
        }
        Ok(TokenStanding::Good)
    }

    /// The longest a token signed now can stay valid: how long a retired key stays in the JWKS.
    pub fn max_token_lifetime(&self) -> i64 {
        self.config.access_token_ttl
    }

    /// Mints an RFC 9068 access token. `subject` is the user id, or the client id for
    /// client_credentials; `auth_time` is set when a user signed in.
    pub fn mint_access_token(
        &self,
        subject: &str,
        client_id: &str,
        scope: &Scope,
        auth_time: Option<i64>,
        now: i64,
    ) -> Result<(String, IssuedAccessToken), OAuthError> {
        let jti = uuid::Uuid::new_v4().to_string();
        let expires_at = now + self.config.access_token_ttl;
        let scope = scope.to_string();
        // RFC 9068 §2.2, in this order; whole seconds (josekit's own setters write fractional
        // times some clients reject).
        let claims = AccessTokenClaims {
            iss: &self.config.issuer,
            sub: subject,
            aud: &self.config.audience,
            exp: expires_at,
            nbf: now,
            iat: now,
            jti: &jti,
            client_id,
            scope: &scope,
            auth_time,
        };
        let keys = self.keys();
        let (token, kid) = keys.sign_claims(self.config.signing_alg, "at+jwt", &claims)?;
        tracing::debug!(%jti, %kid, %client_id, "issued an access token");
        Ok((token, IssuedAccessToken { jti, expires_at }))
    }
}

/// The claims of an access token (RFC 9068 §2.2), serialized as they are.
#[derive(serde::Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: &'a str,
    client_id: &'a str,
    scope: &'a str,
    /// When the user signed in; absent for client_credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
}

/// The scope a request asks for, checked against what may be granted. No `scope` (or an empty
/// one) means all of `allowed`; anything outside it is `invalid_scope`, never silently narrowed.
pub fn requested_scope(requested: Option<&str>, allowed: &Scope) -> Result<Scope, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.clone());
    };
    let scope = Scope::parse(requested).map_err(|error| OAuthError::InvalidScope(error.to_string()))?;
    if !scope.is_subset_of(allowed) {
        return Err(OAuthError::InvalidScope(format!(
            "scope {:?} cannot be granted here (allowed: {:?})",
            scope.missing_from(allowed),
            allowed.to_string()
        )));
    }
    Ok(if scope.is_empty() { allowed.clone() } else { scope })
}
