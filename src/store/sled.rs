//! The sled store (sled 0.34). One tree per record kind, JSON values, and an `expiry` tree keyed by
//! big-endian purge time + kind tag + primary key, written in the same transaction as the record
//! it indexes, so the background purge finds expired records with one range scan.
//!
//! Multi-record changes (redeeming a code, rotating a refresh token, revoking a grant) run as sled
//! transactions: all or nothing.
//!
//! One writer thread. Every write runs on a dedicated thread ([`Writer`]), which applies queued
//! writes one after the other and then makes them durable with one flush shared by all of them
//! (group commit). The reason is sled's global concurrency control: once transactions are in use,
//! a transaction takes a process-wide write lock and a flush holds the read side of that lock
//! for its whole I/O. Writes from many tokio workers therefore stalled behind every flush, and
//! readers queued behind the waiting writers (the lock is fair), so the 2 workers spent most of
//! their time blocked: 8–9 ms per durable request with 0.6 ms flushes. On one thread, a write
//! never waits for a flush it is not part of, and readers on the tokio workers only ever wait for
//! a single short transaction. sled's own flush timer is off for the same reason: the writer
//! flushes after [`IDLE_FLUSH`] without a request for one.
//!
//! sled's flush survives a killed process but not necessarily a power cut (it uses
//! `sync_file_range` on Linux; sled issue #1452).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ::sled::transaction::{ConflictableTransactionError, TransactionError, Transactional, TransactionalTree};
use ::sled::{Db, Tree};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::*;

const TAG_CODE: u8 = b'c';
const TAG_GRANT: u8 = b'g';
const TAG_REFRESH: u8 = b'r';
const TAG_SESSION: u8 = b's';
const TAG_JTI: u8 = b'j';
const TAG_GRANT_TOKEN: u8 = b't';

/// How long written data may wait for a flush nobody asked for (what sled's own timer did).
const IDLE_FLUSH: Duration = Duration::from_millis(500);
/// Expired entries purged per writer job, so that request writes are not held up by a big purge.
const PURGE_CHUNK: usize = 256;

/// The trees, read from any thread and written only by the writer thread.
struct Trees {
    db: Db,
    clients: Tree,
    users: Tree,
    usernames: Tree,
    sessions: Tree,
    codes: Tree,
    grants: Tree,
    refresh_tokens: Tree,
    revoked_jtis: Tree,
    /// The access tokens issued by rotations, per grant: key grant id, zero byte, jti; value
    /// big-endian expiry. (The exchange's own token is listed in the grant record.)
    grant_tokens: Tree,
    consents: Tree,
    expiry: Tree,
}

pub struct SledStore {
    trees: Arc<Trees>,
    writer: Writer,
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

#[derive(Debug, thiserror::Error)]
#[error("the store's writer thread has stopped")]
struct WriterStopped;

enum Job {
    Write(Box<dyn FnOnce(&Trees) + Send>),
    /// Answered once every write queued before it is durable.
    Flush(oneshot::Sender<Result<(), ::sled::Error>>),
}

/// The writer thread and the queue to it. Dropping it lets the thread finish the queue, flush,
/// and release the store (joined, so that the directory can be opened again at once).
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(trees: Arc<Trees>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("portcullis-store-writer".into())
            .spawn(move || write_loop(&trees, &queue))?;
        Ok(Writer { jobs: Some(jobs), thread: Some(thread) })
    }

    fn send(&self, job: Job) -> StoreResult<()> {
        let jobs = self.jobs.as_ref().ok_or_else(|| StoreError::backend(WriterStopped))?;
        jobs.send(job).map_err(|_| StoreError::backend(WriterStopped))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Applies writes in arrival order; after each run of queued jobs, one flush answers every flush
/// request of that run (group commit).
fn write_loop(trees: &Trees, queue: &mpsc::Receiver<Job>) {
    let mut dirty = false;
    loop {
        let first = if dirty {
            match queue.recv_timeout(IDLE_FLUSH) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(error) = trees.db.flush() {
                        tracing::error!(%error, "store flush failed");
                    }
                    dirty = false;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Write(write) => {
                    // A panicking write drops its reply (its caller gets an error), not the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(trees)));
                    dirty = true;
                }
                Job::Flush(reply) => waiting.push(reply),
            }
            next = queue.try_recv().ok();
        }
        if !waiting.is_empty() {
            let result = if dirty { trees.db.flush().map(|_| ()) } else { Ok(()) };
            dirty = result.is_err();
            for reply in waiting {
                let _ = reply.send(result.clone());
            }
        }
    }
    if dirty && let Err(error) = trees.db.flush() {
        tracing::error!(%error, "final store flush failed");
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

fn grant_token_key(grant_id: &str, jti: &str) -> Vec<u8> {
    [grant_id.as_bytes(), &[0], jti.as_bytes()].concat()
}

/// Remembers an access token of a grant, so that revoking the grant revokes it.
fn remember_grant_token_tx(
    grant_tokens: &TransactionalTree,
    expiry: &TransactionalTree,
    grant_id: &str,
    token: &IssuedAccessToken,
) -> TxResult<()> {
    let key = grant_token_key(grant_id, &token.jti);
    grant_tokens.insert(key.as_slice(), &token.expires_at.to_be_bytes())?;
    let index_key = [&(token.expires_at.max(0) as u64).to_be_bytes()[..], &[TAG_GRANT_TOKEN], &key].concat();
    expiry.insert(index_key, &[])?;
    Ok(())
}

impl Trees {
    /// Revokes a grant and every unexpired access token issued in it. Runs on the writer thread,
    /// the only writer, so the scan of the grant's tokens cannot miss one added meanwhile.
    fn revoke_grant(&self, grant_id: &str, now: i64) -> StoreResult<()> {
        let mut live = Vec::new();
        for entry in self.grant_tokens.scan_prefix([grant_id.as_bytes(), &[0]].concat()) {
            let (key, value) = entry.map_err(StoreError::backend)?;
            let expires_at = i64::from_be_bytes(value.as_ref().try_into().unwrap_or([0; 8]));
            if expires_at > now {
                live.push((key[grant_id.len() + 1..].to_vec(), expires_at));
            }
        }
        (&self.grants, &self.revoked_jtis, &self.expiry)
            .transaction(|(grants, revoked_jtis, expiry)| {
                let mut grant: Grant = match grants.get(grant_id)? {
                    Some(bytes) => tx_decode(&bytes)?,
                    None => memory::tombstone(grant_id, now),
                };
                if grant.revoked_at.is_none() {
                    grant.revoked_at = Some(now);
                }
                // Grants written before the tokens had their own tree still list them.
                let listed = grant.access_tokens.iter().map(|token| (token.jti.as_bytes(), token.expires_at));
                let kept = live.iter().map(|(jti, expires_at)| (jti.as_slice(), *expires_at));
                for (jti, expires_at) in listed.chain(kept).filter(|(_, expires_at)| *expires_at > now) {
                    revoked_jtis.insert(jti, &expires_at.to_be_bytes())?;
                    let index_key = [&(expires_at.max(0) as u64).to_be_bytes()[..], &[TAG_JTI], jti].concat();
                    expiry.insert(index_key, &[])?;
                }
                grants.insert(grant_id.as_bytes(), encode(&grant))?;
                expiry.insert(expiry_key(grant.expires_at, TAG_GRANT, grant_id), &[])?;
                Ok(())
            })
            .map_err(tx_error)
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
    fn insert_expiring(
        &self,
        tree: &Tree,
        tag: u8,
        key: &str,
        value: &[u8],
        purge_at: i64,
    ) -> StoreResult<()> {
        (tree, &self.expiry)
            .transaction(|(records, expiry)| {
                records.insert(key.as_bytes(), value)?;
                expiry.insert(expiry_key(purge_at, tag, key), &[])?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)
    }

    /// Deletes the record behind one expiry entry if its time has really come, then the entry;
    /// a record whose time was extended gets an entry at its new time. Returns whether a record
    /// went.
    fn purge_entry(&self, index_key: &[u8], now: i64) -> StoreResult<Option<u8>> {
        if index_key.len() < 9 {
            self.expiry.remove(index_key).map_err(StoreError::backend)?;
            return Ok(None);
        }
        let tag = index_key[8];
        let key = &index_key[9..];
        let tree = match tag {
            TAG_CODE => &self.codes,
            TAG_GRANT => &self.grants,
            TAG_REFRESH => &self.refresh_tokens,
            TAG_SESSION => &self.sessions,
            TAG_JTI => &self.revoked_jtis,
            TAG_GRANT_TOKEN => &self.grant_tokens,
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
                    // The record's time was extended (a grant by a rotation): index it again at
                    // its real time. Writers that extend a record need not index it themselves.
                    let index_key = [&(purge_at.max(0) as u64).to_be_bytes()[..], &[tag], key].concat();
                    expiry.insert(index_key, &[])?;
                    Ok(false)
                }
            })
            .map_err(tx_error)?;
        Ok(removed.then_some(tag))
    }
}

impl SledStore {
    /// Opens (or creates) the store in `path`. Fails at once, without waiting, when another
    /// process holds it.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SledStore, OpenError> {
        let display = path.display().to_string();
        let db = ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None) // the writer thread flushes; see the module comment
            .open()
            .map_err(|source| match &source {
                ::sled::Error::Io(io) if io.to_string().contains("lock") => {
                    OpenError::Locked { path: display.clone() }
                }
                _ => OpenError::Other { path: display.clone(), source },
            })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| OpenError::Other { path: display.clone(), source })
        };
        let trees = Arc::new(Trees {
            clients: tree("clients")?,
            users: tree("users")?,
            usernames: tree("usernames")?,
            sessions: tree("sessions")?,
            codes: tree("codes")?,
            grants: tree("grants")?,
            refresh_tokens: tree("refresh_tokens")?,
            revoked_jtis: tree("revoked_jtis")?,
            grant_tokens: tree("grant_tokens")?,
            consents: tree("consents")?,
            expiry: tree("expiry")?,
            db,
        });
        let writer = Writer::start(trees.clone())
            .map_err(|error| OpenError::Other { path: display, source: error.into() })?;
        Ok(SledStore { trees, writer, client_cache: Default::default() })
    }

    /// Runs `write` on the writer thread and returns its result once applied (not yet durable:
    /// that is [`Maintenance::flush`]).
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Trees) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, result) = oneshot::channel();
        self.writer.send(Job::Write(Box::new(move |trees| {
            let _ = reply.send(write(trees));
        })))?;
        result.await.map_err(|_| StoreError::backend(WriterStopped))?
    }

    /// After a client write: empty the cache and make reads begun before it not fill it.
    fn forget_cached_clients(&self) {
        let mut cache = self.client_cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.generation += 1;
        cache.clients.clear();
    }
}

#[async_trait]
impl ClientStore for SledStore {
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        let (client_id, record) = (client.client_id.clone(), encode(client));
        let result = self
            .write(move |trees| {
                trees
                    .clients
                    .compare_and_swap(client_id.as_bytes(), None as Option<&[u8]>, Some(record))
                    .map_err(StoreError::backend)?
                    .map_err(|_| StoreError::Conflict(format!("client {client_id}")))
            })
            .await;
        self.forget_cached_clients();
        result
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let generation = {
            let cache = self.client_cache.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(client) = cache.clients.get(client_id) {
                return Ok(Some(client.clone()));
            }
            cache.generation
        };
        let client: Option<Client> = self.trees.get(&self.trees.clients, client_id)?;
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
        self.trees.all(&self.trees.clients)
    }

    async fn replace_client(&self, client: &Client) -> StoreResult<()> {
        let (client_id, record) = (client.client_id.clone(), encode(client));
        let replaced = self
            .write(move |trees| {
                trees
                    .clients
                    .update_and_fetch(client_id.as_bytes(), |current| current.map(|_| record.clone()))
                    .map_err(StoreError::backend)
            })
            .await;
        self.forget_cached_clients();
        replaced?.map(|_| ()).ok_or(StoreError::NotFound)
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<()> {
        let client_id = client_id.to_owned();
        let removed = self
            .write(move |trees| trees.clients.remove(client_id.as_bytes()).map_err(StoreError::backend))
            .await;
        self.forget_cached_clients();
        removed?.map(|_| ()).ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let (id, username, record) = (user.id.clone(), user.username.clone(), encode(user));
        self.write(move |trees| {
            (&trees.users, &trees.usernames)
                .transaction(|(users, usernames)| {
                    if usernames.get(username.as_bytes())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(StoreError::Conflict(format!(
                            "username {username}"
                        ))));
                    }
                    usernames.insert(username.as_bytes(), id.as_bytes())?;
                    users.insert(id.as_bytes(), record.as_slice())?;
                    Ok(())
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        self.trees.get(&self.trees.users, user_id)
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        match self.trees.usernames.get(username.as_bytes()).map_err(StoreError::backend)? {
            Some(id) => self.trees.get(&self.trees.users, &String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let mut users: Vec<User> = self.trees.all(&self.trees.users)?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn delete_user(&self, username: &str) -> StoreResult<()> {
        let username = username.to_owned();
        self.write(move |trees| {
            (&trees.users, &trees.usernames)
                .transaction(|(users, usernames)| {
                    let Some(id) = usernames.remove(username.as_bytes())? else {
                        return Err(ConflictableTransactionError::Abort(StoreError::NotFound));
                    };
                    users.remove(id)?;
                    Ok(())
                })
                .map_err(tx_error)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SledStore {
    async fn insert_session(&self, id_hash: &str, session: &Session) -> StoreResult<()> {
        let (id_hash, record, expires_at) = (id_hash.to_owned(), encode(session), session.expires_at);
        self.write(move |trees| {
            trees.insert_expiring(&trees.sessions, TAG_SESSION, &id_hash, &record, expires_at)
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<Session>> {
        let session: Option<Session> = self.trees.get(&self.trees.sessions, id_hash)?;
        Ok(session.filter(|session| session.expires_at > now))
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_owned();
        self.write(move |trees| {
            trees.sessions.remove(id_hash.as_bytes()).map(|_| ()).map_err(StoreError::backend)
        })
        .await
    }
}

#[async_trait]
impl GrantStore for SledStore {
    async fn insert_code(&self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()> {
        let (code_hash, record, purge_at) = (code_hash.to_owned(), encode(code), code.purge_at);
        self.write(move |trees| trees.insert_expiring(&trees.codes, TAG_CODE, &code_hash, &record, purge_at))
            .await
    }

    async fn code(&self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>> {
        self.trees.get(&self.trees.codes, code_hash)
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        refresh_token: Option<(&str, &RefreshToken)>,
        now: i64,
    ) -> StoreResult<Redemption> {
        let code_hash = code_hash.to_owned();
        // The grant's first access tokens stay in its record (one, from this exchange): two inserts
        // fewer than the token tree, which rotations use.
        let (grant_id, grant_expires_at, grant_record) = (grant.id.clone(), grant.expires_at, encode(grant));
        let refresh_token =
            refresh_token.map(|(hash, token)| (hash.to_owned(), token.expires_at, encode(token)));
        self.write(move |trees| {
            (&trees.codes, &trees.grants, &trees.refresh_tokens, &trees.expiry)
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
                    if let Some(existing) = grants.get(grant_id.as_bytes())? {
                        // A tombstone: the grant was revoked before it was created.
                        let existing: Grant = tx_decode(&existing)?;
                        if existing.revoked_at.is_some() {
                            return Ok(Redemption::AlreadyUsed { grant_id: grant_id.clone() });
                        }
                    }
                    grants.insert(grant_id.as_bytes(), grant_record.as_slice())?;
                    expiry.insert(expiry_key(grant_expires_at, TAG_GRANT, &grant_id), &[])?;
                    if let Some((hash, expires_at, record)) = &refresh_token {
                        refresh_tokens.insert(hash.as_bytes(), record.as_slice())?;
                        expiry.insert(expiry_key(*expires_at, TAG_REFRESH, hash), &[])?;
                    }
                    Ok(Redemption::Redeemed)
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn grant(&self, grant_id: &str) -> StoreResult<Option<Grant>> {
        self.trees.get(&self.trees.grants, grant_id)
    }

    /// A scan of every grant: fine for the pages that call it; an index by user would be the
    /// next step for very large stores.
    async fn grants_of_user(&self, user_id: &str) -> StoreResult<Vec<Grant>> {
        let mut grants: Vec<Grant> = self
            .trees
            .all::<Grant>(&self.trees.grants)?
            .into_iter()
            .filter(|grant| grant.user_id == user_id && grant.revoked_at.is_none())
            .collect();
        grants.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(grants)
    }

    async fn revoke_grant(&self, grant_id: &str, now: i64) -> StoreResult<()> {
        let grant_id = grant_id.to_owned();
        self.write(move |trees| trees.revoke_grant(&grant_id, now)).await
    }
}

#[async_trait]
impl RefreshTokenStore for SledStore {
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
        self.trees.get(&self.trees.refresh_tokens, token_hash)
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        access_token: &IssuedAccessToken,
        now: i64,
    ) -> StoreResult<Rotation> {
        let (old_hash, new_hash) = (old_hash.to_owned(), new_hash.to_owned());
        let (new_expires_at, new_record) = (new.expires_at, encode(new));
        let access_token = access_token.clone();
        self.write(move |trees| {
            (&trees.refresh_tokens, &trees.grants, &trees.grant_tokens, &trees.expiry)
                .transaction(|(refresh_tokens, grants, grant_tokens, expiry)| {
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
                    refresh_tokens.insert(new_hash.as_bytes(), new_record.as_slice())?;
                    expiry.insert(expiry_key(new_expires_at, TAG_REFRESH, &new_hash), &[])?;
                    remember_grant_token_tx(grant_tokens, expiry, &grant.id, &access_token)?;
                    let expires_at = grant.expires_at.max(new_expires_at).max(access_token.expires_at);
                    let listed = grant.access_tokens.len();
                    grant.access_tokens.retain(|token| token.expires_at > now);
                    if expires_at != grant.expires_at || listed != grant.access_tokens.len() {
                        // No new expiry entry: the purge re-indexes an extended grant.
                        grant.expires_at = expires_at;
                        grants.insert(grant.id.as_bytes(), encode(&grant))?;
                    }
                    Ok(Rotation::Rotated)
                })
                .map_err(tx_error)
        })
        .await
    }
}

#[async_trait]
impl RevokedTokenStore for SledStore {
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        let jti = jti.to_owned();
        self.write(move |trees| {
            (&trees.revoked_jtis, &trees.expiry)
                .transaction(|(revoked_jtis, expiry)| {
                    revoked_jtis.insert(jti.as_bytes(), &expires_at.to_be_bytes())?;
                    expiry.insert(expiry_key(expires_at, TAG_JTI, &jti), &[])?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn is_access_token_revoked(&self, jti: &str, now: i64) -> StoreResult<bool> {
        let stored = self.trees.revoked_jtis.get(jti.as_bytes()).map_err(StoreError::backend)?;
        Ok(stored.is_some_and(|bytes| {
            let expires_at = i64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8]));
            expires_at > now
        }))
    }

    async fn revoked_access_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut revoked = Vec::new();
        for entry in self.trees.revoked_jtis.iter() {
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
        match self.trees.consents.get(consent_key(user_id, client_id)).map_err(StoreError::backend)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn remember_consent(&self, user_id: &str, client_id: &str, scope: &Scope) -> StoreResult<()> {
        let (key, scope) = (consent_key(user_id, client_id), scope.clone());
        self.write(move |trees| {
            let mut failure = None;
            trees
                .consents
                .update_and_fetch(key, |current| {
                    let known: Scope = match current.map(decode::<Scope>) {
                        Some(Ok(known)) => known,
                        Some(Err(error)) => {
                            failure = Some(error);
                            Scope::default()
                        }
                        None => Scope::default(),
                    };
                    Some(encode(&known.union(&scope)))
                })
                .map_err(StoreError::backend)?;
            failure.map_or(Ok(()), Err)
        })
        .await
    }

    async fn forget_consent(&self, user_id: &str, client_id: &str) -> StoreResult<()> {
        let key = consent_key(user_id, client_id);
        self.write(move |trees| trees.consents.remove(key).map(|_| ()).map_err(StoreError::backend)).await
    }
}

#[async_trait]
impl Maintenance for SledStore {
    fn size_on_disk(&self) -> Option<u64> {
        self.trees.db.size_on_disk().ok()
    }

    async fn flush(&self) -> StoreResult<()> {
        let (reply, result) = oneshot::channel();
        self.writer.send(Job::Flush(reply))?;
        result.await.map_err(|_| StoreError::backend(WriterStopped))?.map_err(StoreError::backend)
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<PurgeCounts> {
        let end = expiry_key(now.saturating_add(1), 0, "");
        let due: Vec<::sled::IVec> =
            self.trees.expiry.range(..end).keys().collect::<Result<_, _>>().map_err(StoreError::backend)?;
        let mut counts = PurgeCounts::default();
        for chunk in due.chunks(PURGE_CHUNK) {
            let chunk = chunk.to_vec();
            let purged = self
                .write(move |trees| {
                    chunk
                        .iter()
                        .map(|index_key| trees.purge_entry(index_key, now))
                        .collect::<StoreResult<Vec<_>>>()
                })
                .await?;
            for tag in purged {
                match tag {
                    Some(TAG_CODE) => counts.codes += 1,
                    Some(TAG_GRANT) => counts.grants += 1,
                    Some(TAG_REFRESH) => counts.refresh_tokens += 1,
                    Some(TAG_SESSION) => counts.sessions += 1,
                    Some(TAG_JTI) => counts.revoked_access_tokens += 1,
                    _ => {}
                }
            }
        }
        self.flush().await?;
        Ok(counts)
    }
}
