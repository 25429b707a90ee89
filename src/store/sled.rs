//! The sled store (sled 0.34). One tree per record kind, JSON values, and an `expiry` tree keyed by
//! big-endian purge time + kind tag + primary key, written in the same transaction as the record
//! it indexes, so the background purge finds expired records with one range scan.
//!
//! Multi-record changes (redeeming a code, rotating a refresh token, revoking a grant) run as sled
//! transactions: all or nothing. Durability: sled writes reach disk on `flush`; [`GroupCommit`]
//! lets concurrent callers share one flush. sled's flush survives a killed process but not
//! necessarily a power cut (it uses `sync_file_range` on Linux; sled issue #1452).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ::sled::transaction::{ConflictableTransactionError, TransactionError, Transactional, TransactionalTree};
use ::sled::{Db, Tree};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;

const TAG_CODE: u8 = b'c';
const TAG_GRANT: u8 = b'g';
const TAG_REFRESH: u8 = b'r';
const TAG_SESSION: u8 = b's';
const TAG_JTI: u8 = b'j';

pub struct SledStore {
    db: Db,
    clients: Tree,
    users: Tree,
    usernames: Tree,
    sessions: Tree,
    codes: Tree,
    grants: Tree,
    refresh_tokens: Tree,
    revoked_jtis: Tree,
    consents: Tree,
    expiry: Tree,
    group_commit: GroupCommit,
    /// Decoded clients, read on every token request. Only this process writes the store (sled
    /// holds an exclusive lock); every client write empties the cache and bumps its generation,
    /// and a read fills it only if no write happened since the read began, so it is never stale.
    client_cache: std::sync::RwLock<ClientCache>,
}

#[derive(Default)]
struct ClientCache {
    generation: u64,
    clients: std::collections::HashMap<String, Client>,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the data directory {path} is in use by another process (a running portcullis server?): \
         stop it, or point --data-dir elsewhere"
    )]
    Locked { path: String },
    #[error("could not open the store at {path}: {source}")]
    Other { path: String, source: ::sled::Error },
}

/// Shares one flush between concurrent callers: a caller whose write was applied before a flush
/// started needs no flush of its own.
#[derive(Default)]
struct GroupCommit {
    lock: tokio::sync::Mutex<()>,
    /// Writes applied so far.
    applied: AtomicU64,
    /// Every write counted up to this number is durable.
    durable: AtomicU64,
}

impl GroupCommit {
    fn note_write(&self) {
        self.applied.fetch_add(1, Ordering::SeqCst);
    }

    async fn flush(&self, db: &Db) -> StoreResult<()> {
        let target = self.applied.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let _only_one_flush_at_a_time = self.lock.lock().await;
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(()); // someone else's flush covered our write while we waited
        }
        let covered = self.applied.load(Ordering::SeqCst);
        db.flush_async().await.map_err(StoreError::backend)?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Corrupt(String);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records serialize infallibly (no maps with non-string keys, no custom serializers).
    serde_json::to_vec(value).expect("records always serialize to JSON")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::backend(Corrupt(format!("undecodable record: {error}"))))
}

fn expiry_key(purge_at: i64, tag: u8, key: &str) -> Vec<u8> {
    let mut index_key = Vec::with_capacity(9 + key.len());
    index_key.extend_from_slice(&(purge_at.max(0) as u64).to_be_bytes());
    index_key.push(tag);
    index_key.extend_from_slice(key.as_bytes());
    index_key
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_decode<T: DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    decode(bytes).map_err(ConflictableTransactionError::Abort)
}

fn tx_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::backend(error),
    }
}

/// Revokes a grant inside a transaction (shared by revoke_grant and nothing else needs it twice).
fn revoke_grant_tx(
    grants: &TransactionalTree,
    revoked_jtis: &TransactionalTree,
    expiry: &TransactionalTree,
    grant_id: &str,
    now: i64,
) -> TxResult<()> {
    let mut grant: Grant = match grants.get(grant_id)? {
        Some(bytes) => tx_decode(&bytes)?,
        None => memory::tombstone(grant_id, now),
    };
    if grant.revoked_at.is_none() {
        grant.revoked_at = Some(now);
    }
    for token in grant.access_tokens.iter().filter(|token| token.expires_at > now) {
        revoked_jtis.insert(token.jti.as_bytes(), &token.expires_at.to_be_bytes())?;
        expiry.insert(expiry_key(token.expires_at, TAG_JTI, &token.jti), &[])?;
    }
    grants.insert(grant_id.as_bytes(), encode(&grant))?;
    expiry.insert(expiry_key(grant.expires_at, TAG_GRANT, grant_id), &[])?;
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the store in `path`. Fails at once, without waiting, when another
    /// process holds it.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SledStore, OpenError> {
        let display = path.display().to_string();
        let db = ::sled::Config::new().path(path).cache_capacity(cache_capacity_bytes).open().map_err(
            |source| match &source {
                ::sled::Error::Io(io) if io.to_string().contains("lock") => {
                    OpenError::Locked { path: display.clone() }
                }
                _ => OpenError::Other { path: display.clone(), source },
            },
        )?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| OpenError::Other { path: display.clone(), source })
        };
        Ok(SledStore {
            clients: tree("clients")?,
            users: tree("users")?,
            usernames: tree("usernames")?,
            sessions: tree("sessions")?,
            codes: tree("codes")?,
            grants: tree("grants")?,
            refresh_tokens: tree("refresh_tokens")?,
            revoked_jtis: tree("revoked_jtis")?,
            consents: tree("consents")?,
            expiry: tree("expiry")?,
            db,
            group_commit: GroupCommit::default(),
            client_cache: Default::default(),
        })
    }

    /// After a client write: empty the cache and make reads begun before it not fill it.
    fn forget_cached_clients(&self) {
        let mut cache = self.client_cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.generation += 1;
        cache.clients.clear();
    }

    fn get<T: DeserializeOwned>(&self, tree: &Tree, key: &str) -> StoreResult<Option<T>> {
        match tree.get(key.as_bytes()).map_err(StoreError::backend)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(&self, tree: &Tree) -> StoreResult<Vec<T>> {
        tree.iter().values().map(|value| decode(&value.map_err(StoreError::backend)?)).collect()
    }

    /// Inserts a record and its expiry entry atomically.
    fn insert_expiring<T: Serialize>(
        &self,
        tree: &Tree,
        tag: u8,
        key: &str,
        value: &T,
        purge_at: i64,
    ) -> StoreResult<()> {
        (tree, &self.expiry)
            .transaction(|(records, expiry)| {
                records.insert(key.as_bytes(), encode(value))?;
                expiry.insert(expiry_key(purge_at, tag, key), &[])?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(())
    }

    /// Deletes the record behind one expiry entry if its time has really come (a record whose
    /// time was extended has a newer entry), then the entry. Returns whether a record went.
    fn purge_entry(&self, index_key: &[u8], now: i64) -> StoreResult<Option<u8>> {
        let tag = index_key[8];
        let key = &index_key[9..];
        let tree = match tag {
            TAG_CODE => &self.codes,
            TAG_GRANT => &self.grants,
            TAG_REFRESH => &self.refresh_tokens,
            TAG_SESSION => &self.sessions,
            TAG_JTI => &self.revoked_jtis,
            _ => {
                self.expiry.remove(index_key).map_err(StoreError::backend)?;
                return Ok(None);
            }
        };
        let removed = (tree, &self.expiry)
            .transaction(|(records, expiry)| {
                expiry.remove(index_key)?;
                let Some(bytes) = records.get(key)? else {
                    return Ok(false);
                };
                let purge_at = match tag {
                    TAG_CODE => tx_decode::<AuthorizationCode>(&bytes)?.purge_at,
                    TAG_GRANT => tx_decode::<Grant>(&bytes)?.expires_at,
                    TAG_REFRESH => tx_decode::<RefreshToken>(&bytes)?.expires_at,
                    TAG_SESSION => tx_decode::<Session>(&bytes)?.expires_at,
                    _ => i64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8])),
                };
                if purge_at <= now {
                    records.remove(key)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(true)
                } else {
                    Ok(false)
                }
            })
            .map_err(tx_error)?;
        Ok(removed.then_some(tag))
    }
}

#[async_trait]
impl ClientStore for SledStore {
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        self.clients
            .compare_and_swap(client.client_id.as_bytes(), None as Option<&[u8]>, Some(encode(client)))
            .map_err(StoreError::backend)?
            .map_err(|_| StoreError::Conflict(format!("client {}", client.client_id)))?;
        self.forget_cached_clients();
        self.group_commit.note_write();
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let generation = {
            let cache = self.client_cache.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(client) = cache.clients.get(client_id) {
                return Ok(Some(client.clone()));
            }
            cache.generation
        };
        let client: Option<Client> = self.get(&self.clients, client_id)?;
        if let Some(client) = &client {
            let mut cache = self.client_cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Bounded: unknown ids are not cached, and a store with very many clients only
            // keeps the first ones seen.
            if cache.generation == generation && cache.clients.len() < 10_000 {
                cache.clients.insert(client_id.to_owned(), client.clone());
            }
        }
        Ok(client)
    }

    async fn clients(&self) -> StoreResult<Vec<Client>> {
        self.all(&self.clients)
    }

    async fn replace_client(&self, client: &Client) -> StoreResult<()> {
        let replaced = self
            .clients
            .update_and_fetch(client.client_id.as_bytes(), |current| current.map(|_| encode(client)))
            .map_err(StoreError::backend)?;
        self.forget_cached_clients();
        self.group_commit.note_write();
        replaced.map(|_| ()).ok_or(StoreError::NotFound)
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<()> {
        let removed = self.clients.remove(client_id.as_bytes()).map_err(StoreError::backend)?;
        self.forget_cached_clients();
        self.group_commit.note_write();
        removed.map(|_| ()).ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        (&self.users, &self.usernames)
            .transaction(|(users, usernames)| {
                if usernames.get(user.username.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(format!(
                        "username {}",
                        user.username
                    ))));
                }
                usernames.insert(user.username.as_bytes(), user.id.as_bytes())?;
                users.insert(user.id.as_bytes(), encode(user))?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(())
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        self.get(&self.users, user_id)
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        match self.usernames.get(username.as_bytes()).map_err(StoreError::backend)? {
            Some(id) => self.get(&self.users, &String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let mut users: Vec<User> = self.all(&self.users)?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn delete_user(&self, username: &str) -> StoreResult<()> {
        (&self.users, &self.usernames)
            .transaction(|(users, usernames)| {
                let Some(id) = usernames.remove(username.as_bytes())? else {
                    return Err(ConflictableTransactionError::Abort(StoreError::NotFound));
                };
                users.remove(id)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(())
    }
}

#[async_trait]
impl SessionStore for SledStore {
    async fn insert_session(&self, id_hash: &str, session: &Session) -> StoreResult<()> {
        self.insert_expiring(&self.sessions, TAG_SESSION, id_hash, session, session.expires_at)
    }

    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<Session>> {
        let session: Option<Session> = self.get(&self.sessions, id_hash)?;
        Ok(session.filter(|session| session.expires_at > now))
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.sessions.remove(id_hash.as_bytes()).map_err(StoreError::backend)?;
        self.group_commit.note_write();
        Ok(())
    }
}

#[async_trait]
impl GrantStore for SledStore {
    async fn insert_code(&self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()> {
        self.insert_expiring(&self.codes, TAG_CODE, code_hash, code, code.purge_at)
    }

    async fn code(&self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>> {
        self.get(&self.codes, code_hash)
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        refresh_token: Option<(&str, &RefreshToken)>,
        now: i64,
    ) -> StoreResult<Redemption> {
        let outcome = (&self.codes, &self.grants, &self.refresh_tokens, &self.expiry)
            .transaction(|(codes, grants, refresh_tokens, expiry)| {
                let Some(bytes) = codes.get(code_hash.as_bytes())? else {
                    return Ok(Redemption::Unknown);
                };
                let mut code: AuthorizationCode = tx_decode(&bytes)?;
                if code.used {
                    return Ok(Redemption::AlreadyUsed { grant_id: code.grant_id });
                }
                if code.expires_at <= now {
                    return Ok(Redemption::Unknown);
                }
                code.used = true;
                codes.insert(code_hash.as_bytes(), encode(&code))?;
                if let Some(existing) = grants.get(grant.id.as_bytes())? {
                    // A tombstone: the grant was revoked before it was created.
                    let existing: Grant = tx_decode(&existing)?;
                    if existing.revoked_at.is_some() {
                        return Ok(Redemption::AlreadyUsed { grant_id: grant.id.clone() });
                    }
                }
                grants.insert(grant.id.as_bytes(), encode(grant))?;
                expiry.insert(expiry_key(grant.expires_at, TAG_GRANT, &grant.id), &[])?;
                if let Some((hash, token)) = refresh_token {
                    refresh_tokens.insert(hash.as_bytes(), encode(token))?;
                    expiry.insert(expiry_key(token.expires_at, TAG_REFRESH, hash), &[])?;
                }
                Ok(Redemption::Redeemed)
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(outcome)
    }

    async fn grant(&self, grant_id: &str) -> StoreResult<Option<Grant>> {
        self.get(&self.grants, grant_id)
    }

    /// A scan of every grant: fine for the pages that call it; an index by user would be the
    /// next step for very large stores.
    async fn grants_of_user(&self, user_id: &str) -> StoreResult<Vec<Grant>> {
        let mut grants: Vec<Grant> = self
            .all::<Grant>(&self.grants)?
            .into_iter()
            .filter(|grant| grant.user_id == user_id && grant.revoked_at.is_none())
            .collect();
        grants.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(grants)
    }

    async fn revoke_grant(&self, grant_id: &str, now: i64) -> StoreResult<()> {
        (&self.grants, &self.revoked_jtis, &self.expiry)
            .transaction(|(grants, revoked_jtis, expiry)| {
                revoke_grant_tx(grants, revoked_jtis, expiry, grant_id, now)
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(())
    }
}

#[async_trait]
impl RefreshTokenStore for SledStore {
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
        self.get(&self.refresh_tokens, token_hash)
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        access_token: &IssuedAccessToken,
        now: i64,
    ) -> StoreResult<Rotation> {
        let outcome = (&self.refresh_tokens, &self.grants, &self.expiry)
            .transaction(|(refresh_tokens, grants, expiry)| {
                let Some(bytes) = refresh_tokens.get(old_hash.as_bytes())? else {
                    return Ok(Rotation::Invalid);
                };
                let mut old: RefreshToken = tx_decode(&bytes)?;
                if old.rotated {
                    return Ok(Rotation::AlreadyRotated { grant_id: old.grant_id });
                }
                let mut grant: Grant = match grants.get(old.grant_id.as_bytes())? {
                    Some(bytes) => tx_decode(&bytes)?,
                    None => return Ok(Rotation::Invalid),
                };
                if old.expires_at <= now || grant.revoked_at.is_some() {
                    return Ok(Rotation::Invalid);
                }
                old.rotated = true;
                refresh_tokens.insert(old_hash.as_bytes(), encode(&old))?;
                refresh_tokens.insert(new_hash.as_bytes(), encode(new))?;
                expiry.insert(expiry_key(new.expires_at, TAG_REFRESH, new_hash), &[])?;
                grant.remember_access_token(access_token.clone(), now);
                grant.expires_at = grant.expires_at.max(new.expires_at);
                grants.insert(grant.id.as_bytes(), encode(&grant))?;
                expiry.insert(expiry_key(grant.expires_at, TAG_GRANT, &grant.id), &[])?;
                Ok(Rotation::Rotated)
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(outcome)
    }
}

#[async_trait]
impl RevokedTokenStore for SledStore {
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        (&self.revoked_jtis, &self.expiry)
            .transaction(|(revoked_jtis, expiry)| {
                revoked_jtis.insert(jti.as_bytes(), &expires_at.to_be_bytes())?;
                expiry.insert(expiry_key(expires_at, TAG_JTI, jti), &[])?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        self.group_commit.note_write();
        Ok(())
    }

    async fn is_access_token_revoked(&self, jti: &str, now: i64) -> StoreResult<bool> {
        let stored = self.revoked_jtis.get(jti.as_bytes()).map_err(StoreError::backend)?;
        Ok(stored.is_some_and(|bytes| {
            let expires_at = i64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8]));
            expires_at > now
        }))
    }

    async fn revoked_access_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut revoked = Vec::new();
        for entry in self.revoked_jtis.iter() {
            let (jti, bytes) = entry.map_err(StoreError::backend)?;
            let expires_at = i64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8]));
            if expires_at > now {
                revoked.push((String::from_utf8_lossy(&jti).into_owned(), expires_at));
            }
        }
        Ok(revoked)
    }
}

/// Consents are keyed by user id, a zero byte, client id.
fn consent_key(user_id: &str, client_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), &[0], client_id.as_bytes()].concat()
}

#[async_trait]
impl ConsentStore for SledStore {
    async fn consented_scope(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Scope>> {
        match self.consents.get(consent_key(user_id, client_id)).map_err(StoreError::backend)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn remember_consent(&self, user_id: &str, client_id: &str, scope: &Scope) -> StoreResult<()> {
        let mut failure = None;
        self.consents
            .update_and_fetch(consent_key(user_id, client_id), |current| {
                let known: Scope = match current.map(decode::<Scope>) {
                    Some(Ok(known)) => known,
                    Some(Err(error)) => {
                        failure = Some(error);
                        Scope::default()
                    }
                    None => Scope::default(),
                };
                Some(encode(&known.union(scope)))
            })
            .map_err(StoreError::backend)?;
        if let Some(error) = failure {
            return Err(error);
        }
        self.group_commit.note_write();
        Ok(())
    }

    async fn forget_consent(&self, user_id: &str, client_id: &str) -> StoreResult<()> {
        self.consents.remove(consent_key(user_id, client_id)).map_err(StoreError::backend)?;
        self.group_commit.note_write();
        Ok(())
    }
}

#[async_trait]
impl Maintenance for SledStore {
    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    async fn flush(&self) -> StoreResult<()> {
        self.group_commit.flush(&self.db).await
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<PurgeCounts> {
        let mut counts = PurgeCounts::default();
        let end = expiry_key(now.saturating_add(1), 0, "");
        let due: Vec<::sled::IVec> =
            self.expiry.range(..end).keys().collect::<Result<_, _>>().map_err(StoreError::backend)?;
        for index_key in due {
            if index_key.len() < 9 {
                self.expiry.remove(&index_key).map_err(StoreError::backend)?;
                continue;
            }
            match self.purge_entry(&index_key, now)? {
                Some(TAG_CODE) => counts.codes += 1,
                Some(TAG_GRANT) => counts.grants += 1,
                Some(TAG_REFRESH) => counts.refresh_tokens += 1,
                Some(TAG_SESSION) => counts.sessions += 1,
                Some(TAG_JTI) => counts.revoked_access_tokens += 1,
                _ => {}
            }
        }
        self.group_commit.note_write();
        self.flush().await?;
        Ok(counts)
    }
}
