//! The protocol: RFC 6749 (authorization code, refresh token, client credentials), RFC 7636
//! (PKCE), RFC 9068 (JWT access tokens), RFC 9207 (`iss` in authorization responses). No HTTP and
//! no storage engine here: the functions take parsed parameters, the store traits and `now`, and
//! return outcomes that `api/` and `web/` turn into responses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::domain::{Client, IssuedAccessToken, Scope};
use crate::keys::{Algorithm, KeyRing};
use crate::store::{GrantRevocation, Holder, SharedStore, revoked_holder_key};
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
    /// Access tokens a client's revocations, or those of one user's tokens of a client, may list
    /// one by one within an access-token lifetime
    /// ([`AuthorizationServer::revocation_allowance`]).
    pub max_revoked_per_client: u32,
    /// Applications a user who is not an admin may register on the applications pages.
    pub max_applications_per_user: u32,
}

/// Whose revocations one bound counts, and whose access tokens all go once it is passed
/// ([`AuthorizationServer::revocation_allowance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoker<'a> {
    pub client_id: &'a str,
    /// None: a confidential client's own requests, which only it can make (authenticated), so
    /// passing the bound revokes all of its access tokens. Some: a public client's requests
    /// (anyone holding a token of it may present it) or a user withdrawing an authorization;
    /// passing the bound revokes that user's access tokens of the client only, so that one user
    /// cannot have every other user's tokens revoked.
    pub user_id: Option<&'a str>,
    /// The user account answerable for the revocations across every client, counted against a
    /// bound of its own too: the user whose tokens a public client's requests or a withdrawal
    /// revoke, or the user who registered the confidential client on the applications pages.
    /// Without it, one user would get a bound per client they use or register, up to
    /// `--max-applications-per-user` times two. None: a client registered by the operator (CLI).
    pub account: Option<&'a str>,
}

impl<'a> Revoker<'a> {
    /// A request of `client` revoking tokens of `user_id` (for client_credentials tokens, the
    /// client's own id).
    pub fn client_request(client: &'a Client, user_id: &'a str) -> Revoker<'a> {
        let user_id = client.is_public().then_some(user_id);
        Revoker { client_id: &client.client_id, user_id, account: user_id.or(client.owner.as_deref()) }
    }

    /// The user `user_id` withdrawing what they authorized `client_id` to do (or having it
    /// withdrawn: deleting the user).
    pub fn user(client_id: &'a str, user_id: &'a str) -> Revoker<'a> {
        Revoker { client_id, user_id: Some(user_id), account: Some(user_id) }
    }

    /// Whose access tokens go past the bound.
    pub fn holder(&self) -> Holder {
        if self.user_id.is_some() { Holder::User } else { Holder::Client }
    }
}

/// What the protocol functions work with: settings, storage, keys.
#[derive(Clone)]
pub struct AuthorizationServer {
    pub config: Arc<OAuthConfig>,
    pub store: SharedStore,
    keys: Arc<RwLock<Arc<KeyRing>>>,
    /// Verifies this server's own access tokens; its keys follow `keys`.
    pub verifier: Arc<Verifier>,
    /// A [`Revoker`]'s holder and account → what their revocations listed one by one in the
    /// current access-token lifetime: [`AuthorizationServer::revocation_allowance`].
    revocation_counts: Arc<Mutex<HashMap<WindowKey, RevocationWindow>>>,
    /// The latest revocations past the bound: [`AuthorizationServer::issue_time`].
    cutoffs: Arc<Cutoffs>,
}

/// The revocations past the bound of the last second or so, each of which revoked every access
/// token of a holder (a client, or a user of a client) issued until a second: a token issued to
/// that holder within that second would be born revoked ([`AuthorizationServer::issue_time`]).
#[derive(Debug)]
struct Cutoffs {
    /// The latest second any of them revoked tokens until: a token request of a later second,
    /// nearly every one, looks no further.
    latest: AtomicI64,
    /// (client id, user id: None for every token of the client) → issued until.
    holders: Mutex<HashMap<(String, Option<String>), i64>>,
}

impl Default for Cutoffs {
    fn default() -> Cutoffs {
        Cutoffs { latest: AtomicI64::new(i64::MIN), holders: Mutex::default() }
    }
}

impl Cutoffs {
    /// Every access token of the client (with `user_id`: of the client for that user) issued
    /// until `issued_until` is revoked; entries of seconds before `now` are forgotten.
    fn note(&self, client_id: &str, user_id: Option<&str>, issued_until: i64, now: i64) {
        let mut holders = self.holders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        holders.retain(|_, until| *until >= now);
        let until = holders.entry((client_id.to_owned(), user_id.map(str::to_owned))).or_insert(issued_until);
        *until = (*until).max(issued_until);
        // Raised after the entry is in, so that a request that sees it finds the entry.
        self.latest.fetch_max(issued_until, Ordering::AcqRel);
    }
}

/// Whose revocations a [`RevocationWindow`] counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WindowKey {
    /// [`revoked_holder_key`]: a client, or a user of a client.
    Holder(String),
    /// [`Revoker::account`]: a user across every client.
    Account(String),
}

impl WindowKey {
    /// The windows that count a revoker's revocations: its holder's, and its account's if any.
    fn of(revoker: Revoker) -> impl Iterator<Item = WindowKey> {
        let holder = WindowKey::Holder(revoked_holder_key(revoker.client_id, revoker.user_id));
        std::iter::once(holder).chain(revoker.account.map(|account| WindowKey::Account(account.to_owned())))
    }
}

/// A [`Revoker`]'s revocations within one access-token lifetime.
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
            revocation_counts: Default::default(),
            cutoffs: Default::default(),
        })
    }

    /// How many more access tokens the revoker's revocations may have listed one by one in the
    /// revocation feed within the current access-token lifetime: `max_revoked_per_client` less
    /// what they listed since the lifetime began ([`AuthorizationServer::count_listed`]), both
    /// for its holder (the client, or the user of a client) and for its account (the user,
    /// across every client: [`Revoker::account`]), whichever is less. Past it, a revocation
    /// revokes instead all of the access tokens of the client (a confidential client's own
    /// requests) or of the client for the user (a public client's requests, a user's
    /// withdrawals) issued until then, in one entry
    /// ([`crate::store::RevokedTokenStore::revoke_client_tokens`]): only the tokens of the
    /// holder, whichever bound was passed.
    ///
    /// The revocation feed is public and lists every revoked `jti` until it expires; without a
    /// bound, one client minting (or rotating) and revoking tokens as fast as it can, or one user
    /// rotating their own grant of a public client and withdrawing it, would grow it to hundreds
    /// of megabytes, rebuilt after each revocation and downloaded again by every verifier. With
    /// it, what one revoker's revocations list within a lifetime is bounded (twice the bound in
    /// the feed at most: this lifetime's and the last one's, give or take revocations running at
    /// the same moment). Counted in memory: a restart starts the count again.
    pub fn revocation_allowance(&self, revoker: Revoker, now: i64) -> u64 {
        let max = u64::from(self.config.max_revoked_per_client);
        self.revocation_windows(revoker, now, |_, window| max.saturating_sub(window.listed))
            .into_iter()
            .min()
            .unwrap_or(max)
    }

    /// Counts `listed` access tokens the revoker's revocation listed one by one.
    pub fn count_listed(&self, revoker: Revoker, now: i64, listed: u64) {
        self.revocation_windows(revoker, now, |_, window| {
            window.listed = window.listed.saturating_add(listed)
        });
    }

    /// After a revocation past the bound revoked all of the access tokens of the revoker's holder
    /// (the client, or the client for the user) issued until `issued_until`: remembers that
    /// second, so that no token issued to the holder within it is born revoked
    /// ([`AuthorizationServer::issue_time`]), and logs, once per access-token lifetime and bound
    /// passed, that the revoker's revocations now revoke that much.
    pub fn note_past_bound(&self, revoker: Revoker, now: i64, issued_until: i64) {
        self.cutoffs.note(revoker.client_id, revoker.user_id, issued_until, now);
        let max = u64::from(self.config.max_revoked_per_client);
        // The bound that was passed is the one with the least left (a grant can have more tokens
        // than is left, before the count reaches the bound): its key, if not logged yet.
        let least = self.revocation_allowance(revoker, now);
        let passed = self.revocation_windows(revoker, now, |key, window| {
            (max.saturating_sub(window.listed) == least && !std::mem::replace(&mut window.warned, true))
                .then(|| key.clone())
        });
        let client_id = revoker.client_id;
        for key in passed.into_iter().flatten() {
            match (key, revoker.user_id) {
                (WindowKey::Holder(_), None) => tracing::warn!(
                    %client_id,
                    max,
                    "the client's revocations listed more access tokens one by one than --max-revoked-per-client allows within an access-token lifetime: each further revocation revokes all of its access tokens issued until then"
                ),
                (WindowKey::Holder(_), Some(user_id)) => tracing::warn!(
                    %client_id,
                    %user_id,
                    max,
                    "revocations of one user's access tokens of this client listed more of them one by one than --max-revoked-per-client allows within an access-token lifetime: each further one revokes all of that user's access tokens of the client issued until then"
                ),
                (WindowKey::Account(user_id), _) => tracing::warn!(
                    %client_id,
                    %user_id,
                    max,
                    "revocations answerable to one user (of their tokens, or by the confidential clients they registered) listed more access tokens one by one, across every client, than --max-revoked-per-client allows within an access-token lifetime: each further one revokes all of the access tokens of the client (a public client: of that user) issued until then"
                ),
            }
        }
    }

    /// Reads back from the store the cutoffs ([`AuthorizationServer::issue_time`]) of entries
    /// written within the current second, before this server started: kept in memory, they
    /// would be lost at a restart, and a token issued right after it, within that second, would
    /// be born revoked. A deleted client's entry counts too: a client created again with its id
    /// (`swagger-ui`) gets tokens of the next second. Called once, at start-up; the lists hold
    /// only entries whose tokens have not expired, a few per revoker past its bound.
    pub async fn load_cutoffs(&self, now: i64) -> Result<(), crate::store::StoreError> {
        for client in self.store.revoked_clients(now).await? {
            if client.deleted_at >= now {
                self.cutoffs.note(&client.client_id, None, client.deleted_at, now);
            }
        }
        for entry in self.store.revoked_user_tokens(now).await? {
            if entry.issued_until >= now {
                self.cutoffs.note(&entry.client_id, Some(&entry.user_id), entry.issued_until, now);
            }
        }
        Ok(())
    }

    /// The time to issue an access token at, to `client_id` for `user_id` (None for a
    /// client_credentials token): `now`, unless a revocation past the bound
    /// ([`AuthorizationServer::note_past_bound`]) revoked every access token of the client, or of
    /// the client for that user, issued until this very second. `iat` is in whole seconds and a
    /// verifier refuses a token whose `iat` is at or before the entry's second, so a token issued
    /// within it would be refused from the start: this waits (under a second) for the next one
    /// and returns it. One atomic load for every other request.
    pub async fn issue_time(&self, client_id: &str, user_id: Option<&str>, now: i64) -> i64 {
        if self.cutoffs.latest.load(Ordering::Acquire) < now {
            return now;
        }
        let until = {
            let holders = self.cutoffs.holders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let of = |user_id: Option<&str>| holders.get(&(client_id.to_owned(), user_id.map(str::to_owned)));
            of(None).into_iter().chain(user_id.and_then(|user_id| of(Some(user_id)))).copied().max()
        };
        let Some(until) = until.filter(|until| *until >= now) else {
            return now;
        };
        loop {
            let clock = time::OffsetDateTime::now_utc();
            if clock.unix_timestamp() > until {
                return clock.unix_timestamp();
            }
            let left = i128::from(until + 1) * 1_000_000_000 - clock.unix_timestamp_nanos();
            tokio::time::sleep(std::time::Duration::from_nanos(u64::try_from(left).unwrap_or(1))).await;
        }
    }

    /// Runs `f` on each of the revoker's counts for the current access-token lifetime
    /// ([`WindowKey::of`]); what it returned, in that order.
    fn revocation_windows<T>(
        &self,
        revoker: Revoker,
        now: i64,
        mut f: impl FnMut(&WindowKey, &mut RevocationWindow) -> T,
    ) -> Vec<T> {
        let lifetime = self.config.access_token_ttl;
        let mut windows = self.revocation_counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bounded by the revokers of the last lifetime; older counts say nothing.
        if windows.len() > 4096 {
            windows.retain(|_, window| now < window.since + lifetime);
        }
        let mut results = Vec::with_capacity(2);
        for key in WindowKey::of(revoker) {
            let window =
                windows.entry(key.clone()).or_insert(RevocationWindow { since: now, ..Default::default() });
            if now >= window.since + lifetime {
                *window = RevocationWindow { since: now, ..Default::default() };
            }
            results.push(f(&key, window));
        }
        results
    }

    /// Revokes a grant on a request of `client` (RFC 7009 §2.1 with its refresh token; RFC 6749
    /// §4.1.2 and RFC 9700 §4.14.2 when its code or a rotated refresh token comes back), counted
    /// against the bound of [`Revoker::client_request`].
    pub async fn revoke_grant_for(
        &self,
        client: &Client,
        grant_id: &str,
        now: i64,
    ) -> Result<(), OAuthError> {
        if !client.is_public() {
            return self
                .revoke_grant_as(Revoker::client_request(client, &client.client_id), grant_id, now)
                .await;
        }
        // A public client's revocations count per user: the grant says whose.
        match self.store.grant(grant_id).await? {
            Some(grant) => {
                self.revoke_grant_as(Revoker::client_request(client, &grant.user_id), grant_id, now).await
            }
            // None: no tokens to list; a tombstone keeps a racing redemption from creating it.
            None => Ok(self.store.revoke_grant(grant_id, now).await?),
        }
    }

    /// Revokes a grant, what it lists counted against the revoker's bound
    /// ([`AuthorizationServer::revocation_allowance`]).
    pub async fn revoke_grant_as(
        &self,
        revoker: Revoker<'_>,
        grant_id: &str,
        now: i64,
    ) -> Result<(), OAuthError> {
        let allowance = self.revocation_allowance(revoker, now);
        let tokens_until = now + self.max_token_lifetime();
        match self
            .store
            .revoke_grant_bounded(grant_id, now, allowance, tokens_until, revoker.holder())
            .await?
        {
            GrantRevocation::Listed(listed) => self.count_listed(revoker, now, listed),
            GrantRevocation::AllRevoked => self.note_past_bound(revoker, now, now),
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
        // Every access token of the client, or of the client for this user, issued until then
        // was revoked at once (`revocation_allowance`).
        let revoked_until = self.store.tokens_revoked_until(&claims.client_id, &claims.sub, now).await?;
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
