//! Storage behind async traits in domain words, one trait per aggregate (clients, users, sessions,
//! grants and codes, refresh tokens, revoked access tokens), with a sled implementation for
//! production and an in-memory one for tests. The `oauth` module depends only on these traits, so a
//! PostgreSQL implementation can be added here without touching it.
//!
//! Durability contract: a write returns once it is applied (readers see it), but it is durable only
//! after [`Maintenance::flush`] returns. Every response that says something was stored awaits one
//! flush; concurrent callers share it (group commit).

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{
    AuthorizationCode, Client, Grant, IssuedAccessToken, RefreshToken, Scope, Session, User,
};

mod codec;
pub mod memory;
pub mod sled;

pub use memory::MemoryStore;
pub use sled::SledStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(error))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Fails with `Conflict` when the client id is taken.
    async fn insert_client(&self, client: &Client) -> StoreResult<()>;
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    async fn clients(&self) -> StoreResult<Vec<Client>>;
    /// At most `limit` clients whose ids sort after `after` (from the first without it), by
    /// client id: one page of every client, read without reading the others.
    async fn clients_after(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Client>>;
    /// The clients registered by the user `owner`, by client id, without reading every client.
    async fn clients_of_owner(&self, owner: &str) -> StoreResult<Vec<Client>>;
    /// Fails with `NotFound` when there is no such client.
    async fn replace_client(&self, client: &Client) -> StoreResult<()>;
    /// Deletes the client (`NotFound` when there is none), and remembers until `tokens_until`,
    /// when the last access token issued to it has expired, that every token issued to it up to
    /// `deleted_at` is revoked: the revocation feed lists it
    /// ([`RevokedTokenStore::revoked_clients`]). A client deleted before keeps the later time and
    /// the longer life. One change; then what users consented to for it is forgotten
    /// ([`ConsentStore::forget_client_consents`]), without holding up other writes.
    async fn delete_client(&self, client_id: &str, deleted_at: i64, tokens_until: i64) -> StoreResult<()>;
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` when the username is taken.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn user(&self, user_id: &str) -> StoreResult<Option<User>>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    async fn users(&self) -> StoreResult<Vec<User>>;
    /// Replaces the record of the user with this id and username; `NotFound` when there is none.
    async fn replace_user(&self, user: &User) -> StoreResult<()>;
    /// Deletes the user (`NotFound` when there is none) and the consents they gave; their grants
    /// are the caller's to revoke first. One change.
    async fn delete_user(&self, username: &str) -> StoreResult<()>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert_session(&self, id_hash: &str, session: &Session) -> StoreResult<()>;
    /// The session, if it exists and has not expired at `now`.
    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
}

/// What happened when a code was redeemed.
#[derive(Debug, Clone, PartialEq)]
pub enum Redemption {
    /// The code was unused: it is now used and the grant is stored.
    Redeemed,
    /// The code had been used already (RFC 6749 §4.1.2: revoke what it issued).
    AlreadyUsed { grant_id: String },
    /// No such code, or it expired.
    Unknown,
}

/// What happened when a refresh token was rotated.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    Rotated,
    /// The token had been rotated already: reuse (RFC 9700 §4.14.2), the caller revokes the grant.
    AlreadyRotated {
        grant_id: String,
    },
    /// Unknown, expired, or its grant revoked.
    Invalid,
}

#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores a new code; returns once it is durable, as after [`Maintenance::flush`].
    async fn insert_code(&self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()>;
    /// The code record, used or not, if it has not been purged.
    async fn code(&self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>>;
    /// Atomically: spends the code (single use, RFC 6749 §4.1.2; [`GrantStore::code`] reads it
    /// used from then on), stores its grant and the first refresh token. `grant` is the code's
    /// (its id is the code's `grant_id`). Nothing is written unless the code was unused and
    /// unexpired. Returns once the change is durable, as after [`Maintenance::flush`].
    async fn redeem_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        refresh_token: Option<(&str, &RefreshToken)>,
        now: i64,
    ) -> StoreResult<Redemption>;
    async fn grant(&self, grant_id: &str) -> StoreResult<Option<Grant>>;
    /// Every grant (revoked ones and tombstones excluded) of `user_id`, newest first.
    async fn grants_of_user(&self, user_id: &str) -> StoreResult<Vec<Grant>>;
    /// Marks the grant revoked (refresh tokens of it stop working) and remembers the `jti` of
    /// each of its unexpired access tokens as revoked. Revoking an unknown grant leaves a
    /// tombstone so that a racing redemption cannot create it afterwards.
    ///
    /// Lists every token: the server bounds what a confidential client's own requests list with
    /// [`GrantStore::revoke_grant_bounded`].
    async fn revoke_grant(&self, grant_id: &str, now: i64) -> StoreResult<()> {
        self.revoke_grant_bounded(grant_id, now, u64::MAX, now, Holder::User).await.map(drop)
    }
    /// [`GrantStore::revoke_grant`], remembering at most `list_at_most` access tokens one by
    /// one: a grant with more unexpired ones (a grant can be rotated thousands of times within
    /// an access-token lifetime) has none listed; every access token issued until `now` to its
    /// client ([`Holder::Client`]), or to its client for its user ([`Holder::User`]), is revoked
    /// instead, in the same change, as [`RevokedTokenStore::revoke_client_tokens`] does (until
    /// `tokens_until`).
    async fn revoke_grant_bounded(
        &self,
        grant_id: &str,
        now: i64,
        list_at_most: u64,
        tokens_until: i64,
        past_bound: Holder,
    ) -> StoreResult<GrantRevocation>;
}

/// What [`GrantStore::revoke_grant_bounded`] did with the grant's unexpired access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRevocation {
    /// Each remembered by its `jti`: how many.
    Listed(u64),
    /// Too many: every access token of the grant's client (or of its client for its user, as
    /// asked) issued until then revoked instead.
    AllRevoked,
}

/// Whose access tokens one entry revokes all of ([`RevokedTokenStore::revoke_client_tokens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Every access token issued to the client.
    Client,
    /// Those issued to the client for one user (their `sub`).
    User,
}

/// The key of a [`RevokedTokenStore::revoke_client_tokens`] entry: the client id, then for one
/// user's tokens a zero byte and the user id (client ids are letters, digits and `-`, never a
/// zero byte: `registration::random_alphanumeric`, `swagger-ui`).
pub fn revoked_holder_key(client_id: &str, user_id: Option<&str>) -> String {
    match user_id {
        None => client_id.to_owned(),
        Some(user_id) => format!("{client_id}\0{user_id}"),
    }
}

/// A [`revoked_holder_key`] as (client id, user id).
pub fn split_revoked_holder_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('\0') {
        Some((client_id, user_id)) => (client_id, Some(user_id)),
        None => (key, None),
    }
}

/// One user's access tokens of a client, all revoked up to a time: what a revocation past the
/// bound writes for a public client or a user's own withdrawal
/// ([`RevokedTokenStore::revoke_client_tokens`] with a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedUserTokens {
    pub client_id: String,
    pub user_id: String,
    /// A token issued at or before it (its `iat`, in seconds) is revoked.
    pub issued_until: i64,
    /// When the last of them has expired, and the entry goes.
    pub tokens_until: i64,
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>>;
    /// Atomically: if `old_hash` is unrotated, unexpired and its grant live, marks it rotated,
    /// stores `new` and records `access_token` in the grant. Returns once the change is
    /// durable, as after [`Maintenance::flush`].
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        access_token: &IssuedAccessToken,
        now: i64,
    ) -> StoreResult<Rotation>;
}

/// A deleted client, remembered until its last access token has expired.
///
/// Client ids can come back: `swagger-ui` is created again at the next start after it was
/// deleted. So what a deletion revokes is bounded by time, not only by id: a token issued at or
/// before `deleted_at` (its `iat`, in seconds) is revoked, one issued later belongs to the new
/// client of that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedClient {
    pub client_id: String,
    pub deleted_at: i64,
    /// When the last access token issued to it up to `deleted_at` has expired.
    pub tokens_until: i64,
}

#[async_trait]
pub trait RevokedTokenStore: Send + Sync {
    /// Remembers a revoked access token's `jti` until its `exp`.
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> StoreResult<()>;
    async fn is_access_token_revoked(&self, jti: &str, now: i64) -> StoreResult<bool>;
    /// A number that changes whenever a token is revoked or a client deleted: what
    /// [`RevokedTokenStore::revoked_access_tokens`] and [`RevokedTokenStore::revoked_clients`]
    /// return has not changed while it stays the same, but for entries expiring. In-process only
    /// (it starts again at every open), and cheap: the revocation feed reads it on every request
    /// instead of the lists, which grow with revocations.
    fn revocations_version(&self) -> u64;
    /// Every revoked access token that has not expired at `now`, as (`jti`, `exp`), by `jti`.
    async fn revoked_access_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>>;
    /// Every deleted client whose access tokens may not all have expired at `now`, by client id
    /// (see [`ClientStore::delete_client`]), and every client whose tokens were all revoked
    /// ([`RevokedTokenStore::revoke_client_tokens`] without a user).
    async fn revoked_clients(&self, now: i64) -> StoreResult<Vec<DeletedClient>>;
    /// Every client and user whose access tokens of that client were all revoked
    /// ([`RevokedTokenStore::revoke_client_tokens`] with a user) and may not all have expired at
    /// `now`, by client id then user id.
    async fn revoked_user_tokens(&self, now: i64) -> StoreResult<Vec<RevokedUserTokens>>;
    /// Revokes every access token issued to the client (with `user_id`: for that user, their
    /// `sub`) at or before `issued_until` (its `iat`), as deleting the client does, but keeps
    /// the client: remembered, and listed by [`RevokedTokenStore::revoked_clients`] (or
    /// [`RevokedTokenStore::revoked_user_tokens`]), until `tokens_until`, when the last of them
    /// has expired. An earlier entry of the same client and user (for a client: a deletion, or an
    /// earlier call) keeps the later of each time. One entry however many tokens it revokes.
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        user_id: Option<&str>,
        issued_until: i64,
        tokens_until: i64,
    ) -> StoreResult<()>;
    /// Until when the access tokens the client holds for `subject` (a token's `sub`) are all
    /// revoked, while an entry lasts (until its `tokens_until`): the later `issued_until` of the
    /// client's entry and of the client's entry for that user, if either is there.
    async fn tokens_revoked_until(
        &self,
        client_id: &str,
        subject: &str,
        now: i64,
    ) -> StoreResult<Option<i64>>;
}

/// Remembered consent: the scopes a user approved for a client, so that a later request for a
/// subset skips the consent page.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    async fn consented_scope(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Scope>>;
    /// Adds `scope` to what the user approved for the client; nothing when there is no such
    /// client (it was deleted meanwhile: [`ClientStore::delete_client`] has forgotten its
    /// consents, and none may come after).
    async fn remember_consent(&self, user_id: &str, client_id: &str, scope: &Scope) -> StoreResult<()>;
    async fn forget_consent(&self, user_id: &str, client_id: &str) -> StoreResult<()>;
    /// Forgets every consent given to the client; returns how many. Called by `delete_client`,
    /// and before a client is created with an id used before (`swagger-ui`), in case a crash
    /// cut a deletion short.
    async fn forget_client_consents(&self, client_id: &str) -> StoreResult<u64>;
}

/// What a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    pub codes: u64,
    pub grants: u64,
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub revoked_access_tokens: u64,
    /// Entries of deleted clients, of clients whose tokens were all revoked, and of users whose
    /// tokens of a client were all revoked ([`RevokedTokenStore::revoke_client_tokens`]).
    pub revoked_clients: u64,
}

impl PurgeCounts {
    pub fn total(&self) -> u64 {
        self.codes
            + self.grants
            + self.refresh_tokens
            + self.sessions
            + self.revoked_access_tokens
            + self.revoked_clients
    }
}

#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Makes every write applied so far durable. Concurrent callers share one flush.
    async fn flush(&self) -> StoreResult<()>;
    /// Deletes every record whose time ran out at or before `now`.
    async fn purge_expired(&self, now: i64) -> StoreResult<PurgeCounts>;
    /// Bytes the store uses on disk, when it has a disk.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}

/// Everything the server needs from storage.
pub trait Store:
    ClientStore
    + UserStore
    + SessionStore
    + GrantStore
    + RefreshTokenStore
    + RevokedTokenStore
    + ConsentStore
    + Maintenance
{
}

impl<T> Store for T where
    T: ClientStore
        + UserStore
        + SessionStore
        + GrantStore
        + RefreshTokenStore
        + RevokedTokenStore
        + ConsentStore
        + Maintenance
{
}

pub type SharedStore = Arc<dyn Store>;
