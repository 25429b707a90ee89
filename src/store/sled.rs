//! The sled store (sled 0.34). One tree per record kind, values as `super::codec` encodes them
//! (binary for codes, grants and refresh tokens, JSON for the rest), and an `expiry` tree keyed by
//! big-endian purge time + kind tag + primary key, written in the same change as the record it
//! indexes, so the background purge finds expired records with one range scan. Most of what the
//! token endpoint writes needs no entry there: codes and refresh tokens whose key carries their
//! purge time ([`crate::secrets::token_key`]) are found by a range scan of their own tree; a grant
//! issued with such a refresh token goes with the purge of its chain's head; and the access tokens
//! of rotations, keyed by grant then expiry, are removed by the next rotation of their grant once
//! expired (or with the grant). Two writes fewer per rotation, one per exchange.
//!
//! Multi-record changes are all or nothing. Most (revoking a grant, purging, a new user) are
//! stored whole as a redo record before their writes and removed after them, and opening the
//! store finishes any a crash interrupted (`Trees::commit` says why not sled's own
//! transactions). The two the token endpoint makes on every request, redeeming a code and
//! rotating a refresh token, are written in an order where every prefix is consistent and need
//! no redo record (`Trees::commit_in_order`). A code's record is never rewritten: the code is
//! spent once its grant exists (see `redeem_code`), so an exchange writes two records, the refresh
//! token and the grant.
//!
//! One writer thread. Every write runs on a dedicated thread (`Writer`), which applies queued
//! changes one after the other; a flusher thread makes them durable, one flush shared by every
//! request that came while the previous flush ran (pipelined group commit). Being the only writer, it can compute a change from what it reads without any
//! other isolation. It also keeps sled's process-wide lock (taken by sled's flush) away from the
//! tokio workers, which only read; the 2 workers used to spend most of their time blocked on it
//! when they wrote themselves. sled's own flush timer is off: the writer flushes after
//! `IDLE_FLUSH` without a request for one.
//!
//! sled's flush survives a killed process but not necessarily a power cut (it uses
//! `sync_file_range` on Linux; sled issue #1452).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ::sled::{Db, Tree};
use async_trait::async_trait;
use tokio::sync::oneshot;

use super::codec::{CodeState, Corrupt, Stored};
use super::*;

const TAG_CODE: u8 = b'c';
const TAG_GRANT: u8 = b'g';
const TAG_REFRESH: u8 = b'r';
const TAG_SESSION: u8 = b's';
const TAG_JTI: u8 = b'j';
const TAG_GRANT_TOKEN: u8 = b't';
const TAG_CLIENT: u8 = b'k';

/// The key in `meta` that says every grant whose id does not begin with its user's prefix is in
/// `untagged_grants` (stores of earlier releases get their entries once, when first opened).
const GRANTS_INDEXED: &[u8] = b"untagged_grants indexed";
/// The `meta` mark of a store whose clients are all listed in `client_owners`.
const CLIENT_OWNERS_INDEXED: &[u8] = b"client_owners indexed";
/// The `meta` mark of a store whose consents are all listed in `client_consents`.
const CLIENT_CONSENTS_INDEXED: &[u8] = b"client_consents indexed";

/// How long written data may wait for a flush nobody asked for (what sled's own timer did).
const IDLE_FLUSH: Duration = Duration::from_millis(500);
/// Expired entries purged per writer job, so that request writes are not held up by a big purge.
const PURGE_CHUNK: usize = 256;
/// Expired access-token entries of its grant a rotation removes, at most (usually one or none;
/// what is left goes at the next rotation or with the grant).
const PRUNED_PER_ROTATION: usize = 16;
/// Grants whose next prune time the writer remembers, at most (see `Trees::prune_times`).
const PRUNE_TIMES: usize = 100_000;

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
    /// A user's grants are found by the prefix their ids begin with ([`Grant::id_prefix`]); a
    /// grant whose id begins otherwise (ids of earlier releases, or chosen by a caller) is listed
    /// here: key user id, zero byte, grant id; empty value. See [`untagged_key`].
    untagged_grants: Tree,
    /// Deleted clients, and clients (or clients for one user) whose access tokens were all
    /// revoked, while those may still be unexpired: key [`revoked_holder_key`], value
    /// big-endian times until which its tokens may live and of its deletion (or revocation).
    revoked_clients: Tree,
    /// The clients registered by a user, for their applications page: key owner's user id, zero
    /// byte, client id; empty value (see [`owner_key`]).
    client_owners: Tree,
    /// Every consent again, by client (`consents` is keyed by user): key client id, zero byte,
    /// user id ([`client_consent_key`]); empty value. Written in the same change as the consent,
    /// so that deleting a client reads its consents, not every consent.
    client_consents: Tree,
    /// The store's own settings: [`GRANTS_INDEXED`], [`CLIENT_OWNERS_INDEXED`],
    /// [`CLIENT_CONSENTS_INDEXED`].
    meta: Tree,
    /// Changes being applied, each whole under a sequence number (see [`Trees::commit`]).
    redo: Tree,
    next_redo: std::sync::atomic::AtomicU64,
    /// Per grant, a time before which none of its access-token entries in `grant_tokens`
    /// expires: a rotation before it has nothing to prune and skips the scan (a sled range scan,
    /// a twentieth of a rotation's writer time, that finds nothing nearly every time). Only the
    /// writer thread uses it. A grant that is not here is scanned; the map is emptied when it
    /// reaches [`PRUNE_TIMES`] grants, and starts empty at every open.
    prune_times: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Set when a change failed after its redo record was stored (see [`Trees::commit`]).
    interrupted: std::sync::atomic::AtomicBool,
    /// Bumped after every write to `revoked_jtis` or `revoked_clients`
    /// ([`RevokedTokenStore::revocations_version`]).
    revocations: std::sync::atomic::AtomicU64,
    /// Tests: [`Trees::commit_in_order`] fails after this many writes, as a crash would cut it.
    #[cfg(test)]
    cut_after: std::sync::atomic::AtomicUsize,
}

pub struct SledStore {
    trees: Arc<Trees>,
    writer: Writer,
    /// Decoded clients, read on every token request.
    clients: RecordCache<Client>,
    /// Decoded users, read on every code exchange and refresh.
    users: RecordCache<User>,
}

/// Decoded records by key, so that the hottest reads skip sled and JSON. Only this process
/// writes the store (sled holds an exclusive lock); every write of the kind empties the cache
/// and bumps its generation, and a read fills it only if no write happened since the read
/// began, so it is never stale. Bounded: unknown keys are not cached, and once it holds
/// [`RecordCache::CAPACITY`] records it is emptied and fills again with what is read next.
struct RecordCache<T> {
    inner: std::sync::RwLock<CacheInner<T>>,
}

struct CacheInner<T> {
    generation: u64,
    records: std::collections::HashMap<String, T>,
}

impl<T> Default for RecordCache<T> {
    fn default() -> RecordCache<T> {
        RecordCache {
            inner: std::sync::RwLock::new(CacheInner { generation: 0, records: Default::default() }),
        }
    }
}

impl<T: Clone> RecordCache<T> {
    const CAPACITY: usize = 10_000;

    /// The cached record of `key`, or `read()`'s, remembered if it found one.
    fn get_or_read(
        &self,
        key: &str,
        read: impl FnOnce() -> StoreResult<Option<T>>,
    ) -> StoreResult<Option<T>> {
        let generation = {
            let cache = self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(record) = cache.records.get(key) {
                return Ok(Some(record.clone()));
            }
            cache.generation
        };
        let record = read()?;
        if let Some(record) = &record {
            let mut cache = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            if cache.generation == generation {
                if cache.records.len() >= Self::CAPACITY {
                    cache.records.clear();
                }
                cache.records.insert(key.to_owned(), record.clone());
            }
        }
        Ok(record)
    }

    /// After a write of the kind: empty the cache and make reads begun before it not fill it.
    fn forget(&self) {
        let mut cache = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.generation += 1;
        cache.records.clear();
    }
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

#[derive(Debug, thiserror::Error)]
#[error("a store change failed half way; the store takes no more writes until the server restarts")]
struct Interrupted;

enum Job {
    Write(WriteJob),
    /// Answered once every write queued before it is durable.
    Flush(FlushReply),
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
        let (flushes, flush_queue) = mpsc::channel();
        let flusher_trees = trees.clone();
        // Short names: Linux keeps 15 bytes of a thread's name, and `bench/run.sh` tells the two
        // threads apart by it when it splits the server's CPU time by thread.
        let flusher = std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || flush_loop(&flusher_trees, &flush_queue))?;
        let thread = std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            write_loop(&trees, &queue, flushes); // drops the flusher's queue: it finishes and stops
            let _ = flusher.join();
            if let Err(error) = trees.db.flush() {
                tracing::error!(%error, "final store flush failed");
            }
        })?;
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

/// Applies writes; returns the answer to give once they are durable, if the caller waits for
/// that ([`SledStore::write_durably`]).
type WriteJob = Box<dyn FnOnce(&Trees) -> Option<FlushReply> + Send>;

/// What to do once a flush ended: answer the caller waiting for it.
type FlushReply = Box<dyn FnOnce(Result<(), ::sled::Error>) + Send>;

/// Applies writes in arrival order and hands the flush requests of each run of queued jobs to the
/// flusher thread, then goes on applying: the next run is applied while the flusher makes the
/// previous one durable (pipelined group commit; sled's flush and plain writes do not exclude
/// each other). A flush request is answered by a flush that began after every write queued
/// before it was applied.
fn write_loop(trees: &Trees, queue: &mpsc::Receiver<Job>, flushes: mpsc::Sender<Vec<FlushReply>>) {
    let mut dirty = false;
    loop {
        let first = if dirty {
            match queue.recv_timeout(IDLE_FLUSH) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = flushes.send(Vec::new());
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
                    if let Ok(Some(reply)) =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(trees)))
                    {
                        waiting.push(reply);
                    }
                    dirty = true;
                }
                Job::Flush(reply) => waiting.push(reply),
            }
            next = queue.try_recv().ok();
        }
        if !waiting.is_empty() {
            dirty = false;
            if let Err(mpsc::SendError(waiting)) = flushes.send(waiting) {
                // The flusher is gone (it never is while this thread runs): flush here.
                flush_and_answer(trees, waiting);
            }
        }
    }
}

/// Flushes for the writer thread: every request that arrived while the last flush ran shares the
/// next one.
fn flush_loop(trees: &Trees, queue: &mpsc::Receiver<Vec<FlushReply>>) {
    while let Ok(mut waiting) = queue.recv() {
        while let Ok(more) = queue.try_recv() {
            waiting.extend(more);
        }
        flush_and_answer(trees, waiting);
    }
}

/// One flush, its result given to everyone waiting for it.
fn flush_and_answer(trees: &Trees, waiting: Vec<FlushReply>) {
    let result = trees.db.flush().map(drop);
    if let Err(error) = &result {
        tracing::error!(%error, "store flush failed");
    }
    for reply in waiting {
        reply(result.clone());
    }
}

fn encode<T: Stored>(record: &T) -> Vec<u8> {
    record.encode()
}

fn decode<T: Stored>(bytes: &[u8]) -> StoreResult<T> {
    T::decode(bytes)
}

/// In `grant_tokens`, between the grant id and the rest of the key: [`GRANT_TOKEN`] for the
/// entries written now (big-endian expiry then jti, no value: a grant's entries sort by expiry, so
/// the expired ones are one range), [`OLD_GRANT_TOKEN`] for those of earlier releases (jti; the
/// expiry as value and in an expiry index entry, which purges them).
const GRANT_TOKEN: u8 = 1;
const OLD_GRANT_TOKEN: u8 = 0;

fn grant_token_key(grant_id: &str, expires_at: i64, jti: &str) -> Vec<u8> {
    [grant_id.as_bytes(), &[GRANT_TOKEN], &(expires_at.max(0) as u64).to_be_bytes(), jti.as_bytes()].concat()
}

/// The keys of all of a grant's access-token entries of the current shape, in expiry order.
fn grant_token_entries(grant_id: &[u8]) -> std::ops::Range<Vec<u8>> {
    [grant_id, &[GRANT_TOKEN]].concat()..[grant_id, &[GRANT_TOKEN + 1]].concat()
}

/// The keys of a grant's access-token entries that expired at or before `now`.
fn expired_grant_tokens(grant_id: &[u8], now: i64) -> std::ops::Range<Vec<u8>> {
    let after = now.saturating_add(1).max(0) as u64;
    [grant_id, &[GRANT_TOKEN]].concat()..[grant_id, &[GRANT_TOKEN], &after.to_be_bytes()].concat()
}

fn index_key(purge_at: i64, tag: u8, key: &[u8]) -> Vec<u8> {
    [&(purge_at.max(0) as u64).to_be_bytes()[..], &[tag], key].concat()
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// The key of a grant in `untagged_grants`, if its id does not begin with its user's prefix
/// ([`Grant::id_prefix`]); None when reading that prefix's range of `grants` finds it.
fn untagged_key(grant: &Grant) -> Option<Vec<u8>> {
    let tagged = grant.id.starts_with(&Grant::id_prefix(&grant.user_id));
    (!tagged).then(|| user_key(&grant.user_id, &grant.id))
}

/// When the record of the kind `tag` may be deleted.
fn purge_time(tag: u8, record: &[u8]) -> StoreResult<i64> {
    Ok(match tag {
        TAG_CODE => decode::<AuthorizationCode>(record)?.purge_at,
        TAG_GRANT => decode::<Grant>(record)?.expires_at,
        TAG_REFRESH => decode::<RefreshToken>(record)?.expires_at,
        TAG_SESSION => decode::<Session>(record)?.expires_at,
        TAG_CLIENT => deleted_client_record(record).0,
        _ => be_i64(record),
    })
}

/// The trees a [`Change`] writes, by the byte that names them in a redo record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Clients,
    Users,
    Usernames,
    Sessions,
    Codes,
    Grants,
    RefreshTokens,
    RevokedJtis,
    GrantTokens,
    Consents,
    Expiry,
    UntaggedGrants,
    RevokedClients,
    ClientOwners,
    ClientConsents,
}

/// By the byte that names them in redo records: a new space goes at the end.
const SPACES: [Space; 15] = [
    Space::Clients,
    Space::Users,
    Space::Usernames,
    Space::Sessions,
    Space::Codes,
    Space::Grants,
    Space::RefreshTokens,
    Space::RevokedJtis,
    Space::GrantTokens,
    Space::Consents,
    Space::Expiry,
    Space::UntaggedGrants,
    Space::RevokedClients,
    Space::ClientOwners,
    Space::ClientConsents,
];

/// The writes of one change to the store (None removes), applied all or nothing by
/// [`Trees::commit`].
#[derive(Debug, Default, PartialEq)]
struct Change(Vec<(Space, Vec<u8>, Option<Vec<u8>>)>);

impl Change {
    fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((space, key.into(), Some(value.into())));
    }

    fn remove(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.0.push((space, key.into(), None));
    }

    /// A record and its expiry entry, the entry first: an entry whose record is missing is
    /// dropped by the purge, a record without an entry would never be (see
    /// [`Trees::commit_in_order`]).
    fn put_expiring(&mut self, space: Space, tag: u8, key: &[u8], value: Vec<u8>, purge_at: i64) {
        self.put(Space::Expiry, index_key(purge_at, tag, key), []);
        self.put(space, key, value);
    }

    /// A revoked access token's `jti`, remembered until it expires.
    fn revoke_jti(&mut self, jti: &[u8], expires_at: i64) {
        self.put_expiring(Space::RevokedJtis, TAG_JTI, jti, expires_at.to_be_bytes().to_vec(), expires_at);
    }

    /// A code or refresh token record. A key that carries the record's purge time
    /// ([`crate::secrets::key_purge_time`]) is its own index entry: the purge finds it by a range
    /// scan of its tree. Any other key (tokens issued by earlier releases) gets an expiry entry.
    /// Returns whether the key is its own index entry.
    fn put_token(&mut self, space: Space, tag: u8, key: &[u8], value: Vec<u8>, purge_at: i64) -> bool {
        let indexed_by_key = crate::secrets::key_purge_time(key) == Some(purge_at);
        match indexed_by_key {
            true => self.put(space, key, value),
            false => self.put_expiring(space, tag, key, value, purge_at),
        }
        indexed_by_key
    }

    /// Per write: space byte, key length (u32 BE), key, then 0 (remove) or 1, value length, value.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (space, key, value) in &self.0 {
            out.push(*space as u8);
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
            match value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                    out.extend_from_slice(value);
                }
            }
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Change> {
        fn take<'a>(bytes: &mut &'a [u8], length: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(length)?;
            *bytes = rest;
            Some(head)
        }
        fn length(bytes: &mut &[u8]) -> Option<usize> {
            Some(u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?) as usize)
        }
        let mut change = Change::default();
        while !bytes.is_empty() {
            let space = *SPACES.get(take(&mut bytes, 1)?[0] as usize)?;
            let key_length = length(&mut bytes)?;
            let key = take(&mut bytes, key_length)?.to_vec();
            let value = match take(&mut bytes, 1)?[0] {
                0 => None,
                1 => {
                    let value_length = length(&mut bytes)?;
                    Some(take(&mut bytes, value_length)?.to_vec())
                }
                _ => return None,
            };
            change.0.push((space, key, value));
        }
        Some(change)
    }
}

impl Trees {
    fn tree(&self, space: Space) -> &Tree {
        match space {
            Space::Clients => &self.clients,
            Space::Users => &self.users,
            Space::Usernames => &self.usernames,
            Space::Sessions => &self.sessions,
            Space::Codes => &self.codes,
            Space::Grants => &self.grants,
            Space::RefreshTokens => &self.refresh_tokens,
            Space::RevokedJtis => &self.revoked_jtis,
            Space::GrantTokens => &self.grant_tokens,
            Space::Consents => &self.consents,
            Space::Expiry => &self.expiry,
            Space::UntaggedGrants => &self.untagged_grants,
            Space::RevokedClients => &self.revoked_clients,
            Space::ClientOwners => &self.client_owners,
            Space::ClientConsents => &self.client_consents,
        }
    }

    fn apply(&self, (space, key, value): &(Space, Vec<u8>, Option<Vec<u8>>)) -> Result<(), ::sled::Error> {
        match value {
            Some(value) => self.tree(*space).insert(key.as_slice(), value.as_slice())?,
            None => self.tree(*space).remove(key.as_slice())?,
        };
        // After the write, so that a reader who sees the new number sees the write too.
        if matches!(space, Space::RevokedJtis | Space::RevokedClients) {
            self.revocations.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Applies a change all or nothing. Only the writer thread calls it (and `open`, before the
    /// writer starts), so the reads a change was computed from still hold.
    ///
    /// Why not sled transactions or batches: each one makes sled write out its I/O buffer twice
    /// (`PageCache::pin_log` rolls it before and after the batch), about 250 µs for a rotation
    /// against 75 µs for the same writes alone (`cargo run --release --example
    /// bench_sled_floor`). Instead a change of several writes is first stored whole as one redo
    /// record (a single insert, atomic in sled), then applied write by write, then its redo record
    /// is removed. sled recovers a prefix of its log after a crash (it stops at the first gap, and
    /// truncates a torn batch for the same reason), so if any write of a change survived, its
    /// redo record, written before it, survived too, and [`Trees::recover`] finishes the change
    /// when the store is opened again. Every write sets a whole value, so replaying is idempotent.
    ///
    /// A change that fails after its redo record was stored leaves the store refusing every later
    /// write: replaying that record at the next start must not overwrite anything newer.
    fn commit(&self, change: Change) -> StoreResult<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.interrupted.load(Relaxed) {
            return Err(StoreError::backend(Interrupted));
        }
        match change.0.as_slice() {
            [] => Ok(()),
            [write] => self.apply(write).map_err(StoreError::backend),
            writes => {
                let sequence = self.next_redo.fetch_add(1, Relaxed).to_be_bytes();
                self.redo.insert(sequence, change.encode()).map_err(StoreError::backend)?;
                let applied = writes.iter().try_for_each(|write| self.apply(write));
                let done = applied.and_then(|()| self.redo.remove(sequence).map(drop));
                done.map_err(|error| {
                    self.interrupted.store(true, Relaxed);
                    tracing::error!(%error, "a store change failed half way; restart to finish it");
                    StoreError::backend(error)
                })
            }
        }
    }

    /// Applies a change written so that every prefix of it leaves a consistent store, without
    /// the redo record of [`Trees::commit`] (two sled writes fewer).
    /// The last write is the change's commit point, the one that makes it count (the new grant,
    /// whose existence spends its code; the old refresh token marked rotated); every write before
    /// it only adds what nothing reachable refers to yet: a refresh token whose secret was never
    /// handed out and whose grant does not exist yet, the jti of an access token never handed out,
    /// a grant that lives longer. sled recovers a prefix of its log after a crash, so a crash
    /// leaves the change counted or not, never half counted, and the client, which got no answer,
    /// retries. What the lost change left behind expires and is purged like any record. A
    /// failure half way leaves such a prefix too, so unlike [`Trees::commit`] it does not stop
    /// the store.
    fn commit_in_order(&self, change: Change) -> StoreResult<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.interrupted.load(Relaxed) {
            return Err(StoreError::backend(Interrupted));
        }
        #[cfg(test)]
        if let Some(kept) =
            change.0.get(..self.cut_after.load(Relaxed)).filter(|kept| kept.len() < change.0.len())
        {
            kept.iter().try_for_each(|write| self.apply(write)).map_err(StoreError::backend)?;
            return Err(StoreError::backend(::sled::Error::Unsupported("cut short by a test".into())));
        }
        change.0.iter().try_for_each(|write| self.apply(write)).map_err(StoreError::backend)
    }

    /// Finishes the changes a crash interrupted (see [`Trees::commit`]). Returns how many.
    fn recover(&self) -> Result<usize, ::sled::Error> {
        let mut finished = 0;
        for entry in self.redo.iter() {
            let (sequence, record) = entry?;
            let change = Change::decode(&record).ok_or_else(|| {
                ::sled::Error::Unsupported("an undecodable redo record in the store".into())
            })?;
            for write in &change.0 {
                self.apply(write)?;
            }
            self.redo.remove(sequence)?;
            finished += 1;
        }
        if finished > 0 {
            self.db.flush()?;
        }
        Ok(finished)
    }

    /// [`GrantStore::revoke_grant_bounded`], on the writer thread.
    fn revoke_grant(
        &self,
        grant_id: &str,
        now: i64,
        list_at_most: u64,
        tokens_until: i64,
        past_bound: Holder,
    ) -> StoreResult<GrantRevocation> {
        let mut grant: Grant =
            self.get(&self.grants, grant_id)?.unwrap_or_else(|| memory::tombstone(grant_id, now));
        if grant.revoked_at.is_none() {
            grant.revoked_at = Some(now);
        }
        // The unexpired access tokens as (jti, expiry): the exchange's is listed in the grant,
        // those of rotations have their own tree (entries of earlier releases, then those keyed
        // grant id, GRANT_TOKEN, expiry, jti, read from past the expired ones).
        let first = grant_id.len() + 1;
        let exchanged =
            grant.access_tokens.iter().map(|token| Ok((token.jti.as_bytes().to_vec(), token.expires_at)));
        let old =
            self.grant_tokens.scan_prefix([grant_id.as_bytes(), &[OLD_GRANT_TOKEN]].concat()).map(|entry| {
                let (key, value) = entry.map_err(StoreError::backend)?;
                Ok((key[first..].to_vec(), be_i64(&value)))
            });
        let unexpired =
            expired_grant_tokens(grant_id.as_bytes(), now).end..grant_token_entries(grant_id.as_bytes()).end;
        let rotated = self.grant_tokens.range(unexpired).keys().filter_map(|key| match key {
            Err(error) => Some(Err(StoreError::backend(error))),
            Ok(key) => {
                key.get(first..first + 8).map(|expiry| Ok((key[first + 8..].to_vec(), be_i64(expiry))))
            }
        });
        // Read one past what may be listed, no more: a grant rotated millions of times is not
        // loaded whole.
        let live: Vec<(Vec<u8>, i64)> = (exchanged.chain(old).chain(rotated))
            .filter(|token| token.as_ref().map_or(true, |(_, expires_at)| *expires_at > now))
            .take(usize::try_from(list_at_most).unwrap_or(usize::MAX).saturating_add(1))
            .collect::<StoreResult<_>>()?;
        let mut change = Change::default();
        let outcome = if live.len() as u64 > list_at_most {
            let user_id = (past_bound == Holder::User).then_some(grant.user_id.as_str());
            self.revoke_client_tokens(&mut change, &grant.client_id, user_id, now, tokens_until)?;
            GrantRevocation::AllRevoked
        } else {
            for (jti, expires_at) in &live {
                change.revoke_jti(jti, *expires_at);
            }
            GrantRevocation::Listed(live.len() as u64)
        };
        change.put_expiring(Space::Grants, TAG_GRANT, grant_id.as_bytes(), encode(&grant), grant.expires_at);
        self.commit(change)?;
        Ok(outcome)
    }

    /// Once per store (`open`, before the writer starts): lists in `untagged_grants` every
    /// grant whose id does not begin with its user's prefix, such as every grant of a store
    /// written by an earlier release (UUIDv7 ids), then marks the store as indexed. Idempotent,
    /// so a crash half way only makes the next open do it again.
    fn index_untagged_grants(&self) -> StoreResult<()> {
        self.once(GRANTS_INDEXED, || {
            let (mut listed, mut undecodable) = (0, 0);
            // One grant at a time: a large store's grants are not loaded whole.
            for value in self.grants.iter().values() {
                // A record no reader could use either does not stop the server from starting.
                let Ok(grant) = decode::<Grant>(&value.map_err(StoreError::backend)?) else {
                    undecodable += 1;
                    continue;
                };
                // A revoked grant is never listed (a revocation's tombstone has no user).
                if let Some(key) = untagged_key(&grant).filter(|_| grant.revoked_at.is_none()) {
                    self.untagged_grants.insert(key, &[]).map_err(StoreError::backend)?;
                    listed += 1;
                }
            }
            if listed > 0 {
                tracing::info!(listed, "listed the grants of earlier releases by user, once");
            }
            if undecodable > 0 {
                tracing::warn!(undecodable, "undecodable grant records left unlisted");
            }
            Ok(())
        })
    }

    /// Once per store (`open`, before the writer starts): lists every client that has an owner
    /// in `client_owners` (a store of an earlier release has no entries), then marks the store.
    /// Idempotent, as [`Trees::index_untagged_grants`].
    fn index_client_owners(&self) -> StoreResult<()> {
        self.once(CLIENT_OWNERS_INDEXED, || {
            for value in self.clients.iter().values() {
                let Ok(client) = decode::<Client>(&value.map_err(StoreError::backend)?) else {
                    tracing::warn!("an undecodable client record left unlisted by owner");
                    continue;
                };
                if let Some(key) = owner_key(&client) {
                    self.client_owners.insert(key, &[]).map_err(StoreError::backend)?;
                }
            }
            Ok(())
        })
    }

    /// Once per store: lists every consent in `client_consents` (stores of earlier releases).
    fn index_client_consents(&self) -> StoreResult<()> {
        self.once(CLIENT_CONSENTS_INDEXED, || {
            for key in self.consents.iter().keys() {
                let key = key.map_err(StoreError::backend)?;
                if let Some((user_id, client_id)) = split_pair(&key) {
                    let index = client_consent_key(client_id, user_id);
                    self.client_consents.insert(index, &[]).map_err(StoreError::backend)?;
                }
            }
            Ok(())
        })
    }

    /// Runs `index` unless the store carries `mark` in `meta`, then sets the mark, durably.
    fn once(&self, mark: &[u8], index: impl FnOnce() -> StoreResult<()>) -> StoreResult<()> {
        if self.meta.contains_key(mark).map_err(StoreError::backend)? {
            return Ok(());
        }
        index()?;
        self.meta.insert(mark, &[]).map_err(StoreError::backend)?;
        self.db.flush().map_err(StoreError::backend)?;
        Ok(())
    }

    /// The [`owner_key`] of the stored client `client_id`; `NotFound` when there is none.
    fn stored_owner_key(&self, client_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let stored: Client = self.get(&self.clients, client_id)?.ok_or(StoreError::NotFound)?;
        Ok(owner_key(&stored))
    }

    fn get<T: Stored>(&self, tree: &Tree, key: &str) -> StoreResult<Option<T>> {
        match tree.get(key.as_bytes()).map_err(StoreError::backend)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn all<T: Stored>(&self, tree: &Tree) -> StoreResult<Vec<T>> {
        tree.iter().values().map(|value| decode(&value.map_err(StoreError::backend)?)).collect()
    }

    /// Adds to `change` the client's entry (for `user_id`, if given) in `revoked_clients`: its
    /// access tokens issued until `issued_until` revoked until `tokens_until`, an earlier entry
    /// keeping the later of each.
    fn revoke_client_tokens(
        &self,
        change: &mut Change,
        client_id: &str,
        user_id: Option<&str>,
        issued_until: i64,
        tokens_until: i64,
    ) -> StoreResult<()> {
        let key = revoked_holder_key(client_id, user_id);
        let earlier = self.revoked_clients.get(key.as_bytes()).map_err(StoreError::backend)?;
        let (mut until, mut at) = (tokens_until, issued_until);
        if let Some(earlier) = earlier.as_deref().map(deleted_client_record) {
            (until, at) = (until.max(earlier.0), at.max(earlier.1));
        }
        let record = [until.to_be_bytes(), at.to_be_bytes()].concat();
        change.put_expiring(Space::RevokedClients, TAG_CLIENT, key.as_bytes(), record, until);
        Ok(())
    }

    /// Deletes the record behind one expiry entry if its time has really come, then the entry;
    /// a record whose time was extended gets an entry at its new time. Returns the kinds of the
    /// records that went.
    fn purge_entry(&self, entry: &[u8], now: i64) -> StoreResult<Vec<u8>> {
        let mut change = Change::default();
        change.remove(Space::Expiry, entry);
        let (tag, key) = match entry {
            [_, _, _, _, _, _, _, _, tag, key @ ..] => (*tag, key),
            _ => return self.commit(change).map(|_| vec![]),
        };
        let space = match tag {
            TAG_CODE => Space::Codes,
            TAG_GRANT => return self.expire_grant(key, now, change),
            TAG_REFRESH => Space::RefreshTokens,
            TAG_SESSION => Space::Sessions,
            TAG_JTI => Space::RevokedJtis,
            TAG_GRANT_TOKEN => Space::GrantTokens,
            TAG_CLIENT => Space::RevokedClients,
            _ => return self.commit(change).map(|_| vec![]),
        };
        let Some(bytes) = self.tree(space).get(key).map_err(StoreError::backend)? else {
            return self.commit(change).map(|_| vec![]);
        };
        let purge_at = purge_time(tag, &bytes)?;
        let removed = purge_at <= now;
        if removed {
            change.remove(space, key);
        } else {
            change.put(Space::Expiry, index_key(purge_at, tag, key), []);
        }
        self.commit(change)?;
        Ok(if removed { vec![tag] } else { vec![] })
    }

    /// Adds to `change` what a grant whose time may have come needs, and commits it: the grant
    /// goes if its time has come, else it is indexed again at its real time (its life was
    /// extended by rotations: writers that extend a grant need not index it themselves); and the
    /// access-token entries of its rotations that have expired go (all of them with the grant,
    /// which outlives every token issued in it).
    fn expire_grant(&self, grant_id: &[u8], now: i64, mut change: Change) -> StoreResult<Vec<u8>> {
        let mut removed = vec![];
        if let Some(bytes) = self.grants.get(grant_id).map_err(StoreError::backend)? {
            let grant: Grant = decode(&bytes)?;
            if grant.expires_at <= now {
                if let Some(key) = untagged_key(&grant) {
                    change.remove(Space::UntaggedGrants, key);
                }
                change.remove(Space::Grants, grant_id);
                removed.push(TAG_GRANT);
            } else {
                change.put(Space::Expiry, index_key(grant.expires_at, TAG_GRANT, grant_id), []);
            }
        }
        self.remove_expired_grant_tokens(&mut change, grant_id, now)?;
        self.commit(change)?;
        Ok(removed)
    }

    /// Adds to `change` the removal of a grant's access-token entries that expired at or before
    /// `now`.
    fn remove_expired_grant_tokens(&self, change: &mut Change, grant_id: &[u8], now: i64) -> StoreResult<()> {
        for key in self.grant_tokens.range(expired_grant_tokens(grant_id, now)).keys() {
            change.remove(Space::GrantTokens, key.map_err(StoreError::backend)?.to_vec());
        }
        Ok(())
    }

    /// Adds to `change` the removal of up to [`PRUNED_PER_ROTATION`] of a grant's access-token
    /// entries that expired at or before `now`, unless its prune time says none has; and
    /// remembers, for the next rotation, when the first one left (or `adding`, the expiry of the
    /// entry this change adds) expires. A rotation's way to keep `grant_tokens` bounded without an
    /// expiry entry per token. Call [`Trees::forget_prune_time`] if the change is not committed.
    fn prune_rotated_tokens(
        &self,
        change: &mut Change,
        grant_id: &str,
        now: i64,
        adding: i64,
    ) -> StoreResult<()> {
        let mut times = self.prune_times.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(next) = times.get_mut(grant_id)
            && *next > now
        {
            *next = (*next).min(adding);
            return Ok(());
        }
        // The grant's entries in expiry order: the expired ones first, then the first left.
        let entries = grant_token_entries(grant_id.as_bytes());
        let expiry_at = entries.start.len();
        let mut next = i64::MAX;
        for (pruned, key) in self.grant_tokens.range(entries).keys().enumerate() {
            let key = key.map_err(StoreError::backend)?;
            let expiry = key.get(expiry_at..expiry_at + 8).map_or(0, be_i64);
            if expiry > now || pruned == PRUNED_PER_ROTATION {
                next = expiry;
                break;
            }
            change.remove(Space::GrantTokens, key.to_vec());
        }
        if times.len() >= PRUNE_TIMES {
            times.clear();
        }
        times.insert(grant_id.to_owned(), next.min(adding));
        Ok(())
    }

    /// A rotation's change was not committed: what [`Trees::prune_rotated_tokens`] remembered
    /// for its grant may not hold.
    fn forget_prune_time(&self, grant_id: &str) {
        self.prune_times.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(grant_id);
    }

    /// Deletes a code or refresh token found in the range of keys whose purge time has come
    /// ([`crate::secrets::dated_keys_due`]), if the record agrees. A refresh token at the head of
    /// its chain (never rotated) takes its grant's purge with it when the grant has no expiry
    /// entry of its own (see `redeem_code`): the grant goes if its time has come too, else it gets
    /// an entry. A rotated token's successor, written before it was marked rotated, does that.
    /// Returns the kinds of the records that went.
    fn purge_dated(&self, space: Space, tag: u8, key: &[u8], now: i64) -> StoreResult<Vec<u8>> {
        let Some(bytes) = self.tree(space).get(key).map_err(StoreError::backend)? else {
            return Ok(vec![]);
        };
        let (purge_at, head_of_grant) = match tag {
            TAG_REFRESH => {
                let token: RefreshToken = decode(&bytes)?;
                (token.expires_at, (!token.rotated).then_some(token.grant_id))
            }
            _ => (purge_time(tag, &bytes)?, None),
        };
        if purge_at > now {
            // Written with an expiry entry too (its key's time was not its own): that entry purges it.
            return Ok(vec![]);
        }
        let mut change = Change::default();
        change.remove(space, key);
        if let Some(grant_id) = head_of_grant {
            let mut removed = self.expire_grant(grant_id.as_bytes(), now, change)?;
            removed.push(tag);
            return Ok(removed);
        }
        self.commit(change)?;
        Ok(vec![tag])
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
            untagged_grants: tree("untagged_grants")?,
            revoked_clients: tree("revoked_clients")?,
            client_owners: tree("client_owners")?,
            client_consents: tree("client_consents")?,
            meta: tree("meta")?,
            redo: tree("redo")?,
            next_redo: Default::default(),
            prune_times: Default::default(),
            interrupted: Default::default(),
            revocations: Default::default(),
            #[cfg(test)]
            cut_after: usize::MAX.into(),
            db,
        });
        let finished =
            trees.recover().map_err(|source| OpenError::Other { path: display.clone(), source })?;
        if finished > 0 {
            tracing::warn!(finished, "finished store changes interrupted by a crash");
        }
        let indexed = (trees.index_untagged_grants())
            .and_then(|()| trees.index_client_owners())
            .and_then(|()| trees.index_client_consents());
        indexed.map_err(|error| OpenError::Other {
            path: display.clone(),
            source: ::sled::Error::Unsupported(error.to_string()),
        })?;
        let writer = Writer::start(trees.clone())
            .map_err(|error| OpenError::Other { path: display, source: error.into() })?;
        Ok(SledStore { trees, writer, clients: Default::default(), users: Default::default() })
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
            None
        })))?;
        result.await.map_err(|_| StoreError::backend(WriterStopped))?
    }

    /// [`SledStore::write`], answered only once the write is durable: what a write then a
    /// [`Maintenance::flush`] give, with one trip to the writer thread instead of two (the token
    /// endpoint's writes; a thread wake-up less per request).
    async fn write_durably<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Trees) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, result) = oneshot::channel();
        self.writer.send(Job::Write(Box::new(move |trees| {
            let written = write(trees);
            Some(Box::new(move |flushed: Result<(), ::sled::Error>| {
                let _ = reply.send(flushed.map_err(StoreError::backend).and(written));
            }))
        })))?;
        result.await.map_err(|_| StoreError::backend(WriterStopped))?
    }

    /// Runs `purge` on the writer thread for every key of a tree in `range`, [`PURGE_CHUNK`] keys
    /// per job, so that request writes are not held up and a large backlog is never loaded whole.
    /// Returns what each call returned.
    async fn purge_range(
        &self,
        space: Space,
        range: std::ops::Range<Vec<u8>>,
        purge: impl Fn(&Trees, &[u8]) -> StoreResult<Vec<u8>> + Send + Sync + Clone + 'static,
    ) -> StoreResult<Vec<u8>> {
        let mut results = Vec::new();
        let mut from = range.start;
        loop {
            let chunk: Vec<::sled::IVec> = self
                .trees
                .tree(space)
                .range(from.clone()..range.end.clone())
                .keys()
                .take(PURGE_CHUNK)
                .collect::<Result<_, _>>()
                .map_err(StoreError::backend)?;
            let Some(last) = chunk.last() else { return Ok(results) };
            // Past the last key seen: keys a purge keeps (not yet due) are not read again.
            from = [last.as_ref(), &[0]].concat();
            let purge = purge.clone();
            let purged = self
                .write(move |trees| {
                    chunk.iter().map(|key| purge(trees, key)).collect::<StoreResult<Vec<_>>>()
                })
                .await?;
            results.extend(purged.into_iter().flatten());
        }
    }
}

#[async_trait]
impl ClientStore for SledStore {
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        let (client_id, record, owner_key) = (client.client_id.clone(), encode(client), owner_key(client));
        let result = self
            .write(move |trees| {
                if trees.clients.contains_key(client_id.as_bytes()).map_err(StoreError::backend)? {
                    return Err(StoreError::Conflict(format!("client {client_id}")));
                }
                let mut change = Change::default();
                if let Some(key) = owner_key {
                    change.put(Space::ClientOwners, key, []);
                }
                change.put(Space::Clients, client_id.as_bytes(), record);
                trees.commit(change)
            })
            .await;
        self.clients.forget();
        result
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        self.clients.get_or_read(client_id, || self.trees.get(&self.trees.clients, client_id))
    }

    async fn clients(&self) -> StoreResult<Vec<Client>> {
        self.trees.all(&self.trees.clients)
    }

    async fn clients_after(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Client>> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.as_bytes()));
        (self.trees.clients.range::<&[u8], _>((from, Bound::Unbounded)).values().take(limit))
            .map(|value| decode(&value.map_err(StoreError::backend)?))
            .collect()
    }

    async fn clients_of_owner(&self, owner: &str) -> StoreResult<Vec<Client>> {
        let mut clients = Vec::new();
        for key in self.trees.client_owners.scan_prefix(user_range(owner.as_bytes())).keys() {
            let key = key.map_err(StoreError::backend)?;
            let client_id = String::from_utf8_lossy(after_user(&key)).into_owned();
            // An entry whose client is gone or changed hands is skipped (none is left so, but a
            // listing must never show another user's client).
            if let Some(client) = self.client(&client_id).await?
                && client.owner.as_deref() == Some(owner)
            {
                clients.push(client);
            }
        }
        Ok(clients)
    }

    async fn replace_client(&self, client: &Client) -> StoreResult<()> {
        let (client_id, record, owner_key) = (client.client_id.clone(), encode(client), owner_key(client));
        let result = self
            .write(move |trees| {
                let stored_key = trees.stored_owner_key(&client_id)?;
                let mut change = Change::default();
                if stored_key != owner_key {
                    if let Some(key) = stored_key {
                        change.remove(Space::ClientOwners, key);
                    }
                    if let Some(key) = owner_key {
                        change.put(Space::ClientOwners, key, []);
                    }
                }
                change.put(Space::Clients, client_id.as_bytes(), record);
                trees.commit(change)
            })
            .await;
        self.clients.forget();
        result
    }

    async fn delete_client(&self, client_id: &str, deleted_at: i64, tokens_until: i64) -> StoreResult<()> {
        let id = client_id.to_owned();
        let deleted = self
            .write(move |trees| {
                let stored_key = trees.stored_owner_key(&id)?;
                let mut change = Change::default();
                if let Some(key) = stored_key {
                    change.remove(Space::ClientOwners, key);
                }
                change.remove(Space::Clients, id.as_bytes());
                trees.revoke_client_tokens(&mut change, &id, None, deleted_at, tokens_until)?;
                trees.commit(change)
            })
            .await;
        self.clients.forget();
        deleted?;
        // After the deletion: from then on no consent to the client is remembered, so none is
        // missed. A consent left behind by a crash in between is found before the id is used
        // again (`startup::bootstrap`).
        self.forget_client_consents(client_id).await.map(drop)
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let (id, username, record) = (user.id.clone(), user.username.clone(), encode(user));
        let result = self
            .write(move |trees| {
                if trees.usernames.contains_key(username.as_bytes()).map_err(StoreError::backend)? {
                    return Err(StoreError::Conflict(format!("username {username}")));
                }
                let mut change = Change::default();
                change.put(Space::Usernames, username.as_bytes(), id.as_bytes());
                change.put(Space::Users, id.as_bytes(), record);
                trees.commit(change)
            })
            .await;
        self.users.forget();
        result
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        self.users.get_or_read(user_id, || self.trees.get(&self.trees.users, user_id))
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

    async fn replace_user(&self, user: &User) -> StoreResult<()> {
        let (id, username, record) = (user.id.clone(), user.username.clone(), encode(user));
        let result = self
            .write(move |trees| {
                let named = trees.usernames.get(username.as_bytes()).map_err(StoreError::backend)?;
                if named.as_deref() != Some(id.as_bytes()) {
                    return Err(StoreError::NotFound);
                }
                let mut change = Change::default();
                change.put(Space::Users, id.as_bytes(), record);
                trees.commit(change)
            })
            .await;
        self.users.forget();
        result
    }

    async fn delete_user(&self, username: &str) -> StoreResult<()> {
        let username = username.to_owned();
        let result = self
            .write(move |trees| {
                let Some(id) = trees.usernames.get(username.as_bytes()).map_err(StoreError::backend)? else {
                    return Err(StoreError::NotFound);
                };
                let mut change = Change::default();
                change.remove(Space::Usernames, username.as_bytes());
                // The consents they gave: keyed by user id first, one range.
                for key in trees.consents.scan_prefix(user_range(&id)).keys() {
                    let key = key.map_err(StoreError::backend)?;
                    change.remove(Space::ClientConsents, client_consent_key(after_user(&key), &id));
                    change.remove(Space::Consents, key.to_vec());
                }
                change.remove(Space::Users, id.to_vec());
                trees.commit(change)
            })
            .await;
        self.users.forget();
        result
    }
}

#[async_trait]
impl SessionStore for SledStore {
    async fn insert_session(&self, id_hash: &str, session: &Session) -> StoreResult<()> {
        let (id_hash, record, expires_at) = (id_hash.to_owned(), encode(session), session.expires_at);
        self.write(move |trees| {
            let mut change = Change::default();
            change.put_expiring(Space::Sessions, TAG_SESSION, id_hash.as_bytes(), record, expires_at);
            trees.commit(change)
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
            let mut change = Change::default();
            change.remove(Space::Sessions, id_hash.as_bytes());
            trees.commit(change)
        })
        .await
    }
}

#[async_trait]
impl GrantStore for SledStore {
    async fn insert_code(&self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()> {
        let (code_hash, record, purge_at) = (code_hash.to_owned(), encode(code), code.purge_at);
        self.write_durably(move |trees| {
            let mut change = Change::default();
            change.put_token(Space::Codes, TAG_CODE, code_hash.as_bytes(), record, purge_at);
            trees.commit(change)
        })
        .await
    }

    async fn code(&self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>> {
        let Some(mut code) = self.trees.get::<AuthorizationCode>(&self.trees.codes, code_hash)? else {
            return Ok(None);
        };
        // Used once its grant exists (see `redeem_code`); codes of earlier releases are marked.
        if !code.used {
            code.used =
                self.trees.grants.contains_key(code.grant_id.as_bytes()).map_err(StoreError::backend)?;
        }
        Ok(Some(code))
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        refresh_token: Option<(&str, &RefreshToken)>,
        now: i64,
    ) -> StoreResult<Redemption> {
        let code_hash = code_hash.to_owned();
        // The grant's first access tokens stay in its record (one, from this exchange): two writes
        // fewer than the token tree, which rotations use.
        let (grant, grant_record) = (grant.clone(), encode(grant));
        // Computed here, not on the writer thread, which every exchange waits for.
        let untagged = untagged_key(&grant);
        let refresh_token =
            refresh_token.map(|(hash, token)| (hash.to_owned(), token.expires_at, encode(token)));
        self.write_durably(move |trees| {
            let Some(code) = trees.codes.get(code_hash.as_bytes()).map_err(StoreError::backend)? else {
                return Ok(Redemption::Unknown);
            };
            let code = CodeState::decode(&code)?;
            if code.grant_id != grant.id {
                let error = format!("redeem_code: grant {} is not the code's ({})", grant.id, code.grant_id);
                return Err(StoreError::backend(Corrupt(error)));
            }
            // The code's record is never rewritten: the code counts as used once its grant
            // exists, the grant being written last (one write per exchange fewer than marking the
            // code). A grant that exists before its code was redeemed is a tombstone, revoked
            // before the redemption: the code is spent too. Codes marked used by earlier
            // releases stay used.
            if code.used || trees.grants.contains_key(grant.id.as_bytes()).map_err(StoreError::backend)? {
                return Ok(Redemption::AlreadyUsed { grant_id: code.grant_id });
            }
            if code.expires_at <= now {
                return Ok(Redemption::Unknown);
            }
            // The grant must outlive the code's time to be redeemed: were it purged first, the
            // code would count as unused again.
            let (grant_expires_at, grant_record) = match code.expires_at > grant.expires_at {
                false => (grant.expires_at, grant_record),
                true => (code.expires_at, encode(&Grant { expires_at: code.expires_at, ..grant.clone() })),
            };
            // In commit order (see `Trees::commit_in_order`): the refresh token counts only once
            // the grant, written last, exists. A retry of a code whose change was cut short finds
            // no grant and redeems it.
            let mut change = Change::default();
            // Listed by user before the grant exists: an entry whose grant is missing is skipped.
            // The server's own grant ids need none (see `Grant::new_id`).
            if let Some(key) = untagged {
                change.put(Space::UntaggedGrants, key, []);
            }
            // A refresh token whose key carries its expiry, and the grant's, is purged by a range
            // scan, and takes the grant's purge with it (`Trees::purge_dated`): the grant needs
            // no expiry entry (one write fewer). It is written first, so that no prefix of the
            // change leaves a grant nothing would purge.
            let mut grant_purged_by_token = false;
            if let Some((hash, expires_at, record)) = refresh_token {
                let indexed_by_key =
                    change.put_token(Space::RefreshTokens, TAG_REFRESH, hash.as_bytes(), record, expires_at);
                grant_purged_by_token = indexed_by_key && expires_at >= grant_expires_at;
            }
            match grant_purged_by_token {
                true => change.put(Space::Grants, grant.id.as_bytes(), grant_record),
                false => change.put_expiring(
                    Space::Grants,
                    TAG_GRANT,
                    grant.id.as_bytes(),
                    grant_record,
                    grant_expires_at,
                ),
            }
            trees.commit_in_order(change)?;
            Ok(Redemption::Redeemed)
        })
        .await
    }

    async fn grant(&self, grant_id: &str) -> StoreResult<Option<Grant>> {
        self.trees.get(&self.trees.grants, grant_id)
    }

    /// Reads the range of grant ids that begin with the user's prefix, then the user's grants
    /// listed in `untagged_grants`: the time it takes grows with the user's grants, not with the
    /// store's (before, a scan of every grant took 0.5-1.2 s with 300,000 in the store).
    async fn grants_of_user(&self, user_id: &str) -> StoreResult<Vec<Grant>> {
        let trees = &self.trees;
        let mut grants = Vec::new();
        for entry in trees.grants.scan_prefix(Grant::id_prefix(user_id)).values() {
            grants.push(decode::<Grant>(&entry.map_err(StoreError::backend)?)?);
        }
        for key in trees.untagged_grants.scan_prefix(user_range(user_id.as_bytes())).keys() {
            let key = key.map_err(StoreError::backend)?;
            // An entry whose grant is gone (written before a grant whose change was cut short).
            if let Some(bytes) = trees.grants.get(after_user(&key)).map_err(StoreError::backend)? {
                grants.push(decode(&bytes)?);
            }
        }
        grants.retain(|grant| grant.user_id == user_id && grant.revoked_at.is_none());
        grants.sort_by_key(|grant| std::cmp::Reverse(grant.created_at));
        Ok(grants)
    }

    async fn revoke_grant_bounded(
        &self,
        grant_id: &str,
        now: i64,
        list_at_most: u64,
        tokens_until: i64,
        past_bound: Holder,
    ) -> StoreResult<GrantRevocation> {
        let grant_id = grant_id.to_owned();
        self.write(move |trees| trees.revoke_grant(&grant_id, now, list_at_most, tokens_until, past_bound))
            .await
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
        self.write_durably(move |trees| {
            let Some(mut old) = trees.get::<RefreshToken>(&trees.refresh_tokens, &old_hash)? else {
                return Ok(Rotation::Invalid);
            };
            if old.rotated {
                return Ok(Rotation::AlreadyRotated { grant_id: old.grant_id });
            }
            let Some(mut grant) = trees.get::<Grant>(&trees.grants, &old.grant_id)? else {
                return Ok(Rotation::Invalid);
            };
            if old.expires_at <= now || grant.revoked_at.is_some() {
                return Ok(Rotation::Invalid);
            }
            // In commit order (see `Trees::commit_in_order`): the new token, its access token and
            // the grant's longer life first; the old token marked rotated, last, makes it count.
            old.rotated = true;
            let mut change = Change::default();
            // The grant's access tokens that expired since its last rotation: nothing refers to
            // them any more (this keeps the tree bounded without an expiry entry per token).
            trees.prune_rotated_tokens(&mut change, &grant.id, now, access_token.expires_at)?;
            change.put_token(
                Space::RefreshTokens,
                TAG_REFRESH,
                new_hash.as_bytes(),
                new_record,
                new_expires_at,
            );
            // The access token, remembered so that revoking the grant revokes it.
            change.put(
                Space::GrantTokens,
                grant_token_key(&grant.id, access_token.expires_at, &access_token.jti),
                [],
            );
            let expires_at = grant.expires_at.max(new_expires_at).max(access_token.expires_at);
            let listed = grant.access_tokens.len();
            grant.access_tokens.retain(|token| token.expires_at > now);
            if expires_at != grant.expires_at || listed != grant.access_tokens.len() {
                // No new expiry entry: the purge indexes an extended grant again when it finds it,
                // from its entry or from the purge of its chain's head (`Trees::purge_dated`).
                grant.expires_at = expires_at;
                change.put(Space::Grants, grant.id.as_bytes(), encode(&grant));
            }
            change.put(Space::RefreshTokens, old_hash.as_bytes(), encode(&old));
            trees.commit_in_order(change).inspect_err(|_| trees.forget_prune_time(&grant.id))?;
            Ok(Rotation::Rotated)
        })
        .await
    }
}

#[async_trait]
impl RevokedTokenStore for SledStore {
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        let jti = jti.to_owned();
        self.write(move |trees| {
            let mut change = Change::default();
            change.revoke_jti(jti.as_bytes(), expires_at);
            trees.commit(change)
        })
        .await
    }

    async fn is_access_token_revoked(&self, jti: &str, now: i64) -> StoreResult<bool> {
        let stored = self.trees.revoked_jtis.get(jti.as_bytes()).map_err(StoreError::backend)?;
        Ok(stored.is_some_and(|bytes| be_i64(&bytes) > now))
    }

    fn revocations_version(&self) -> u64 {
        self.trees.revocations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Read on the blocking pool: the list grows with revocations, and a tokio worker reading it
    /// serves nothing else meanwhile.
    async fn revoked_access_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || unexpired(&trees.revoked_jtis, now))
            .await
            .map_err(StoreError::backend)?
    }

    async fn revoked_clients(&self, now: i64) -> StoreResult<Vec<DeletedClient>> {
        Ok((self.revoked_holders(now)?.into_iter())
            .filter_map(|entry| match entry.user_id {
                None => Some(DeletedClient {
                    client_id: entry.client_id,
                    deleted_at: entry.issued_until,
                    tokens_until: entry.tokens_until,
                }),
                Some(_) => None,
            })
            .collect())
    }

    async fn revoked_user_tokens(&self, now: i64) -> StoreResult<Vec<RevokedUserTokens>> {
        Ok((self.revoked_holders(now)?.into_iter())
            .filter_map(|entry| {
                let RevokedHolder { client_id, user_id, issued_until, tokens_until } = entry;
                Some(RevokedUserTokens { client_id, user_id: user_id?, issued_until, tokens_until })
            })
            .collect())
    }

    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        user_id: Option<&str>,
        issued_until: i64,
        tokens_until: i64,
    ) -> StoreResult<()> {
        let (id, user_id) = (client_id.to_owned(), user_id.map(str::to_owned));
        self.write(move |trees| {
            let mut change = Change::default();
            trees.revoke_client_tokens(&mut change, &id, user_id.as_deref(), issued_until, tokens_until)?;
            trees.commit(change)
        })
        .await
    }

    async fn tokens_revoked_until(
        &self,
        client_id: &str,
        subject: &str,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let until = |key: String| -> StoreResult<Option<i64>> {
            let stored = self.trees.revoked_clients.get(key.as_bytes()).map_err(StoreError::backend)?;
            let entry = stored.as_deref().map(deleted_client_record);
            Ok(entry.filter(|(tokens_until, _)| *tokens_until > now).map(|(_, issued_until)| issued_until))
        };
        Ok(until(revoked_holder_key(client_id, None))?
            .max(until(revoked_holder_key(client_id, Some(subject)))?))
    }
}

/// The entries of a tree valued by a big-endian time that is after `now`, by key.
fn unexpired(tree: &Tree, now: i64) -> StoreResult<Vec<(String, i64)>> {
    let mut entries = Vec::new();
    for entry in tree.iter() {
        let (key, bytes) = entry.map_err(StoreError::backend)?;
        let until = be_i64(&bytes);
        if until > now {
            entries.push((String::from_utf8_lossy(&key).into_owned(), until));
        }
    }
    Ok(entries)
}

/// Two ids as one key: the first, a zero byte, the second (with no second id, what every key of
/// the first begins with). Neither has a zero byte: user ids are UUIDs, client ids are made
/// alphanumeric by the server (or are `swagger-ui`), so the keys of one first id are one range,
/// and [`split_pair`] reads the two back.
fn pair_key(first: &[u8], second: &[u8]) -> Vec<u8> {
    [first, &[0], second].concat()
}

/// The keys of `consents` (user, client), `untagged_grants` (user, grant) and `client_owners`
/// (owner, client): a [`pair_key`] led by a user id; [`after_user`] reads the other id back.
fn user_key(user_id: &str, id: &str) -> Vec<u8> {
    pair_key(user_id.as_bytes(), id.as_bytes())
}

/// What every [`user_key`] of `user_id` begins with.
fn user_range(user_id: &[u8]) -> Vec<u8> {
    pair_key(user_id, &[])
}

/// The id after the user's in a [`user_key`].
fn after_user(key: &[u8]) -> &[u8] {
    split_pair(key).map_or(&[], |(_, id)| id)
}

/// The two ids of a [`pair_key`].
fn split_pair(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let zero = key.iter().position(|&byte| byte == 0)?;
    Some((&key[..zero], &key[zero + 1..]))
}

/// A key of `client_consents`: the [`pair_key`] of client id and user id (with no user id, what
/// every key of the client begins with).
fn client_consent_key(client_id: &[u8], user_id: &[u8]) -> Vec<u8> {
    pair_key(client_id, user_id)
}

/// A client's key in `client_owners`, if it has an owner.
fn owner_key(client: &Client) -> Option<Vec<u8>> {
    Some(user_key(client.owner.as_deref()?, &client.client_id))
}

/// An entry of `revoked_clients`: a client's tokens, or one user's of the client, revoked.
struct RevokedHolder {
    client_id: String,
    user_id: Option<String>,
    issued_until: i64,
    tokens_until: i64,
}

impl SledStore {
    /// The entries of `revoked_clients` whose tokens may not all have expired at `now`, by key.
    fn revoked_holders(&self, now: i64) -> StoreResult<Vec<RevokedHolder>> {
        let mut entries = Vec::new();
        for entry in self.trees.revoked_clients.iter() {
            let (key, bytes) = entry.map_err(StoreError::backend)?;
            let (tokens_until, issued_until) = deleted_client_record(&bytes);
            if tokens_until > now {
                let key = String::from_utf8_lossy(&key);
                let (client_id, user_id) = split_revoked_holder_key(&key);
                let (client_id, user_id) = (client_id.to_owned(), user_id.map(str::to_owned));
                entries.push(RevokedHolder { client_id, user_id, issued_until, tokens_until });
            }
        }
        Ok(entries)
    }
}

/// A `revoked_clients` record: until when its tokens may live, then when it was deleted (both
/// big-endian seconds).
fn deleted_client_record(bytes: &[u8]) -> (i64, i64) {
    let (until, at) = bytes.split_at(bytes.len().min(8));
    (be_i64(until), be_i64(at))
}

#[async_trait]
impl ConsentStore for SledStore {
    async fn consented_scope(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Scope>> {
        match self.trees.consents.get(user_key(user_id, client_id)).map_err(StoreError::backend)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn remember_consent(&self, user_id: &str, client_id: &str, scope: &Scope) -> StoreResult<()> {
        let (key, scope, client_id) = (user_key(user_id, client_id), scope.clone(), client_id.to_owned());
        let index = client_consent_key(client_id.as_bytes(), user_id.as_bytes());
        self.write(move |trees| {
            // On the writer, after any deletion of the client queued before it.
            if !trees.clients.contains_key(client_id.as_bytes()).map_err(StoreError::backend)? {
                return Ok(());
            }
            let known: Scope = match trees.consents.get(&key).map_err(StoreError::backend)? {
                Some(bytes) => decode(&bytes)?,
                None => Scope::default(),
            };
            let mut change = Change::default();
            change.put(Space::ClientConsents, index, []);
            change.put(Space::Consents, key, encode(&known.union(&scope)));
            trees.commit(change)
        })
        .await
    }

    async fn forget_consent(&self, user_id: &str, client_id: &str) -> StoreResult<()> {
        let key = user_key(user_id, client_id);
        let index = client_consent_key(client_id.as_bytes(), user_id.as_bytes());
        self.write(move |trees| {
            let mut change = Change::default();
            change.remove(Space::Consents, key);
            change.remove(Space::ClientConsents, index);
            trees.commit(change)
        })
        .await
    }

    /// The client's consents are one range of `client_consents`, read on a blocking thread (a
    /// popular client may have a consent from every user), then removed with their entries
    /// there by the writer, `PURGE_CHUNK` per job, so that token requests are not held up.
    async fn forget_client_consents(&self, client_id: &str) -> StoreResult<u64> {
        let (trees, client_id) = (self.trees.clone(), client_id.to_owned());
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let client = client_id.as_bytes();
            for key in trees.client_consents.scan_prefix(client_consent_key(client, &[])).keys() {
                let key = key.map_err(StoreError::backend)?;
                let consent = pair_key(after_user(&key), client); // its `user_key`
                found.push((key.to_vec(), consent));
            }
            Ok::<_, StoreError>(found)
        })
        .await
        .map_err(StoreError::backend)??;
        let count = found.len() as u64;
        for chunk in found.chunks(PURGE_CHUNK) {
            let keys = chunk.to_vec();
            self.write(move |trees| {
                let mut change = Change::default();
                for (index, consent) in keys {
                    change.remove(Space::Consents, consent);
                    change.remove(Space::ClientConsents, index);
                }
                trees.commit(change)
            })
            .await?;
        }
        Ok(count)
    }
}

#[async_trait]
impl Maintenance for SledStore {
    fn size_on_disk(&self) -> Option<u64> {
        self.trees.db.size_on_disk().ok()
    }

    async fn flush(&self) -> StoreResult<()> {
        let (reply, result) = oneshot::channel();
        self.writer.send(Job::Flush(Box::new(move |flushed| {
            let _ = reply.send(flushed);
        })))?;
        result.await.map_err(|_| StoreError::backend(WriterStopped))?.map_err(StoreError::backend)
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<PurgeCounts> {
        let mut purged = self
            .purge_range(
                Space::Expiry,
                vec![]..index_key(now.saturating_add(1), 0, b""),
                move |trees, key| trees.purge_entry(key, now),
            )
            .await?;
        for (space, tag) in [(Space::Codes, TAG_CODE), (Space::RefreshTokens, TAG_REFRESH)] {
            let dated = self
                .purge_range(space, crate::secrets::dated_keys_due(now), move |trees, key| {
                    trees.purge_dated(space, tag, key, now)
                })
                .await?;
            purged.extend(dated);
        }
        let mut counts = PurgeCounts::default();
        for tag in purged {
            match tag {
                TAG_CODE => counts.codes += 1,
                TAG_GRANT => counts.grants += 1,
                TAG_REFRESH => counts.refresh_tokens += 1,
                TAG_SESSION => counts.sessions += 1,
                TAG_JTI => counts.revoked_access_tokens += 1,
                TAG_CLIENT => counts.revoked_clients += 1,
                _ => {}
            }
        }
        self.flush().await?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuthorizationCode, Grant, IssuedAccessToken, RefreshToken, Scope};
    use proptest::prelude::*;

    /// A public client of scope `read`, created at 0.
    fn client(id: &str, owner: Option<&str>) -> Client {
        Client {
            client_id: id.into(),
            name: "n".into(),
            client_type: crate::domain::ClientType::Public,
            secret_hash: None,
            redirect_uris: vec![],
            grant_types: vec![],
            scope: Scope::parse("read").unwrap(),
            skip_consent: false,
            owner: owner.map(str::to_owned),
            created_at: 0,
            id_token_signed_response_alg: None,
            allowed_origins: vec![],
            post_logout_redirect_uris: vec![],
        }
    }

    /// The records of the exchange and rotation tests: code, grant "g" and its refresh tokens,
    /// client "c", user "u", issued at 1000.
    fn code() -> AuthorizationCode {
        AuthorizationCode {
            client_id: "c".into(),
            redirect_uri: "https://a.example/cb".into(),
            user_id: "u".into(),
            scope: Scope::parse("read").unwrap(),
            auth_time: 0,
            code_challenge: None,
            grant_id: "g".into(),
            expires_at: 1100,
            used: false,
            purge_at: 1200,
            nonce: None,
            issued_at: None,
        }
    }

    fn grant() -> Grant {
        Grant {
            id: "g".into(),
            client_id: "c".into(),
            user_id: "u".into(),
            scope: Scope::parse("read").unwrap(),
            auth_time: 0,
            created_at: 1000,
            revoked_at: None,
            access_tokens: vec![IssuedAccessToken { jti: "a0".into(), expires_at: 1300 }],
            expires_at: 2000,
        }
    }

    fn refresh(expires_at: i64) -> RefreshToken {
        RefreshToken {
            grant_id: "g".into(),
            client_id: "c".into(),
            scope: Scope::parse("read").unwrap(),
            expires_at,
            rotated: false,
        }
    }

    fn change() -> Change {
        let mut change = Change::default();
        change.put(Space::RefreshTokens, "old", "rotated");
        change.put_expiring(Space::RefreshTokens, TAG_REFRESH, b"new", b"fresh".to_vec(), 2000);
        change.remove(Space::Codes, "used");
        change.put(Space::Expiry, [0u8; 0], []);
        change
    }

    #[test]
    fn the_record_cache_is_never_stale_and_stays_bounded() {
        let cache = RecordCache::<u32>::default();
        assert_eq!(cache.get_or_read("a", || Ok(Some(1))).unwrap(), Some(1));
        assert_eq!(cache.get_or_read("a", || panic!("served from the cache")).unwrap(), Some(1));
        // Unknown keys are not cached.
        assert_eq!(cache.get_or_read("b", || Ok(None)).unwrap(), None);
        assert_eq!(cache.get_or_read("b", || Ok(Some(2))).unwrap(), Some(2));
        // A read that began before a write does not fill the cache with what it read.
        let stale = cache.get_or_read("c", || {
            cache.forget();
            Ok(Some(3))
        });
        assert_eq!(stale.unwrap(), Some(3));
        assert_eq!(cache.get_or_read("c", || Ok(Some(4))).unwrap(), Some(4), "read again");
        assert_eq!(cache.get_or_read("a", || Ok(Some(5))).unwrap(), Some(5), "emptied by the write");
        for key in 0..RecordCache::<u32>::CAPACITY + 10 {
            cache.get_or_read(&key.to_string(), || Ok(Some(0))).unwrap();
        }
        assert!(cache.inner.read().unwrap().records.len() <= RecordCache::<u32>::CAPACITY);
    }

    #[test]
    fn a_change_survives_its_redo_encoding() {
        let change = change();
        assert_eq!(Change::decode(&change.encode()), Some(change));
        assert_eq!(Change::decode(&[]), Some(Change::default()));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Change::decode(&bytes);
        }

        #[test]
        fn a_truncated_redo_record_is_refused(cut in 1usize..40) {
            let encoded = change().encode();
            let cut = cut.min(encoded.len() - 1);
            // Every prefix that ends inside a write is refused, never half applied.
            if let Some(decoded) = Change::decode(&encoded[..encoded.len() - cut]) {
                prop_assert!(decoded.0.len() < change().0.len());
                prop_assert!(change().0.starts_with(&decoded.0));
            }
        }
    }

    /// A crash after the redo record and the first write: opening the store finishes the change.
    #[tokio::test]
    async fn opening_the_store_finishes_an_interrupted_change() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
            store.trees.codes.insert("used", "code").unwrap();
            let change = change();
            store.trees.redo.insert(7u64.to_be_bytes(), change.encode()).unwrap();
            store.trees.apply(&change.0[0]).unwrap();
            store.trees.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        let trees = &store.trees;
        assert_eq!(trees.refresh_tokens.get("old").unwrap().unwrap(), "rotated");
        assert_eq!(trees.refresh_tokens.get("new").unwrap().unwrap(), "fresh");
        assert!(trees.expiry.contains_key(index_key(2000, TAG_REFRESH, b"new")).unwrap());
        assert!(trees.codes.get("used").unwrap().is_none());
        assert!(trees.redo.is_empty(), "the redo record is gone once applied");
    }

    #[tokio::test]
    async fn a_committed_change_leaves_no_redo_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        store.write(|trees| trees.commit(change())).await.unwrap();
        assert!(store.trees.redo.is_empty());
        assert_eq!(store.trees.refresh_tokens.get("new").unwrap().unwrap(), "fresh");
    }

    /// An exchange or a rotation cut short after any of its writes (a crash, as sled recovers a
    /// prefix of its log, or a failed write) counts as not made: the client's retry succeeds,
    /// the token it retried with is then spent, and nothing is left that the purge misses.
    #[tokio::test]
    async fn an_exchange_or_a_rotation_cut_short_anywhere_can_be_retried() {
        let access = IssuedAccessToken { jti: "a1".into(), expires_at: 1400 };
        let set_cut =
            |store: &SledStore, cut| store.trees.cut_after.store(cut, std::sync::atomic::Ordering::Relaxed);
        // Keys of tokens from earlier releases (an expiry entry each), and keys that carry their
        // purge time (found by a range scan; two writes fewer); grant ids as the server makes
        // them, and one that does not begin with its user's prefix (listed in `untagged_grants`,
        // one write more).
        for (dated, grant_id) in [(false, Grant::new_id("u")), (true, Grant::new_id("u")), (true, "g".into())]
        {
            let code = AuthorizationCode { grant_id: grant_id.clone(), ..code() };
            let grant = Grant { id: grant_id.clone(), ..grant() };
            let refresh = |expires_at| RefreshToken { grant_id: grant_id.clone(), ..refresh(expires_at) };
            let key = |name: &str, purge_at| match dated {
                false => name.to_owned(),
                true => crate::secrets::token_key(&crate::secrets::random_dated_secret(purge_at)),
            };
            let mut cuts_seen = (0, 0);
            for cut in 0.. {
                let dir = tempfile::tempdir().unwrap();
                let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
                let code_key = key("code", code.purge_at);
                let [r1, r1b, r2, r2b, r3] =
                    [("r1", 2000), ("r1b", 2000), ("r2", 3000), ("r2b", 3000), ("r3", 3000)]
                        .map(|(name, purge_at)| key(name, purge_at));
                store.insert_code(&code_key, &code).await.unwrap();

                set_cut(&store, cut);
                let exchange = store.redeem_code(&code_key, &grant, Some((&r1, &refresh(2000))), 1000).await;
                set_cut(&store, usize::MAX);
                if exchange.is_err() {
                    cuts_seen.0 = cut + 1;
                    assert!(
                        !store.code(&code_key).await.unwrap().unwrap().used,
                        "cut {cut}: the code is still unused"
                    );
                    let retry =
                        store.redeem_code(&code_key, &grant, Some((&r1b, &refresh(2000))), 1000).await;
                    assert!(matches!(retry, Ok(Redemption::Redeemed)), "cut {cut}: {retry:?}");
                } else {
                    assert!(matches!(exchange, Ok(Redemption::Redeemed)));
                }
                let again = store.redeem_code(&code_key, &grant, None, 1000).await.unwrap();
                assert!(matches!(again, Redemption::AlreadyUsed { .. }), "cut {cut}: the code is spent");
                assert_eq!(
                    store.grants_of_user("u").await.unwrap(),
                    std::slice::from_ref(&grant),
                    "cut {cut}: listed"
                );
                let first = if exchange.is_err() { &r1b } else { &r1 };

                set_cut(&store, cut);
                let rotation = store.rotate_refresh_token(first, &r2, &refresh(3000), &access, 1001).await;
                set_cut(&store, usize::MAX);
                if rotation.is_err() {
                    cuts_seen.1 = cut + 1;
                    assert!(!store.refresh_token(first).await.unwrap().unwrap().rotated, "cut {cut}");
                    let retry = store.rotate_refresh_token(first, &r2b, &refresh(3000), &access, 1001).await;
                    assert!(matches!(retry, Ok(Rotation::Rotated)), "cut {cut}: {retry:?}");
                } else {
                    assert!(matches!(rotation, Ok(Rotation::Rotated)));
                }
                let reuse =
                    store.rotate_refresh_token(first, &r3, &refresh(3000), &access, 1002).await.unwrap();
                assert!(
                    matches!(reuse, Rotation::AlreadyRotated { .. }),
                    "cut {cut}: reuse is still detected"
                );

                // Whatever the cut left behind goes with the rest once everything expired.
                store.purge_expired(10_000).await.unwrap();
                for (name, tree) in [
                    ("codes", &store.trees.codes),
                    ("grants", &store.trees.grants),
                    ("refresh tokens", &store.trees.refresh_tokens),
                    ("grant tokens", &store.trees.grant_tokens),
                    ("expiry", &store.trees.expiry),
                    ("untagged grants", &store.trees.untagged_grants),
                    ("redo", &store.trees.redo),
                ] {
                    assert!(tree.is_empty(), "cut {cut}: {name} left after the purge");
                }
                if exchange.is_ok() && rotation.is_ok() {
                    break;
                }
            }
            // Every cut inside them was tried. The exchange: the refresh token and the grant (each
            // with an expiry entry when the token's key is not dated), and the grant's entry in
            // `untagged_grants` if its id needs one. The rotation: the new refresh token (and
            // expiry entry), its access token, the grant, the old token.
            let listed = usize::from(grant_id == "g");
            let writes = if dated { (2 + listed, 4) } else { (4 + listed, 5) };
            assert_eq!(cuts_seen, writes, "dated keys: {dated}, grant {grant_id}");
        }
    }

    /// A user's grants are read from the range of ids that begin with the user's prefix, plus
    /// `untagged_grants` for the others, never by reading every grant; a store of an earlier
    /// release gets its entries when first opened; the purge removes them with their grants.
    #[tokio::test]
    async fn a_users_grants_are_read_without_reading_every_grant() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        let exchange = |id: String, user_id: &str, created_at: i64| {
            let grant = Grant { id: id.clone(), user_id: user_id.into(), created_at, ..grant() };
            let code = AuthorizationCode { grant_id: id.clone(), user_id: user_id.into(), ..code() };
            let (store, key) = (&store, format!("code-{id}"));
            async move {
                store.insert_code(&key, &code).await.unwrap();
                let redeemed = store.redeem_code(&key, &grant, None, 1000).await.unwrap();
                assert!(matches!(redeemed, Redemption::Redeemed));
                grant
            }
        };
        let older = exchange(Grant::new_id("u"), "u", 1000).await;
        let untagged = exchange("g".into(), "u", 1001).await;
        let newer = exchange(Grant::new_id("u"), "u", 1002).await;
        let revoked = exchange(Grant::new_id("u"), "u", 1003).await;
        store.revoke_grant(&revoked.id, 1004).await.unwrap();
        let others = exchange(Grant::new_id("v"), "v", 1005).await;
        // A record no lookup of u's or v's grants may touch: reading every grant fails on it.
        store.trees.grants.insert("zz-undecodable", &[1, 0xff][..]).unwrap();
        assert_eq!(store.trees.untagged_grants.len(), 1, "only the grant whose id needs an entry");

        assert_eq!(
            store.grants_of_user("u").await.unwrap(),
            [newer.clone(), untagged.clone(), older.clone()]
        );
        assert_eq!(store.grants_of_user("v").await.unwrap(), [others]);
        assert_eq!(store.grants_of_user("w").await.unwrap(), []);

        // A store written by an earlier release: grants with UUIDv7 ids, no entries, no mark.
        let legacy = Grant { id: "0190a0b0-0000-7000-8000-000000000000".into(), created_at: 999, ..grant() };
        let mut change = Change::default();
        change.put_expiring(
            Space::Grants,
            TAG_GRANT,
            legacy.id.as_bytes(),
            encode(&legacy),
            legacy.expires_at,
        );
        store.write(move |trees| trees.commit(change)).await.unwrap();
        store.trees.untagged_grants.clear().unwrap();
        store.trees.meta.clear().unwrap();
        drop(store);
        // (The undecodable record is skipped, not a reason to refuse to start.)
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        assert_eq!(store.grants_of_user("u").await.unwrap(), [newer, untagged, older, legacy]);
        assert!(store.trees.meta.contains_key(GRANTS_INDEXED).unwrap());
        store.trees.grants.remove("zz-undecodable").unwrap();

        // The entries go with their grants.
        store.purge_expired(10_000).await.unwrap();
        assert!(store.trees.grants.is_empty());
        assert!(store.trees.untagged_grants.is_empty());
    }

    /// A store of an earlier release has no `client_owners` entries: the first open lists every
    /// client by owner, once.
    #[tokio::test]
    async fn clients_are_listed_by_owner_once_for_a_store_of_an_earlier_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        store.insert_client(&client("mine", Some("u"))).await.unwrap();
        store.insert_client(&client("swagger-ui", None)).await.unwrap();
        assert_eq!(store.trees.client_owners.len(), 1);
        store.trees.client_owners.clear().unwrap();
        store.trees.meta.remove(CLIENT_OWNERS_INDEXED).unwrap();
        assert_eq!(store.clients_of_owner("u").await.unwrap(), []);
        drop(store);

        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        assert_eq!(store.clients_of_owner("u").await.unwrap(), [client("mine", Some("u"))]);
        assert!(store.trees.meta.contains_key(CLIENT_OWNERS_INDEXED).unwrap());
        assert_eq!(store.trees.client_owners.len(), 1);
    }

    #[tokio::test]
    async fn consents_are_listed_by_client_once_for_a_store_of_an_earlier_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        let read = Scope::parse("read").unwrap();
        for id in ["a", "ab"] {
            store.insert_client(&client(id, None)).await.unwrap();
        }
        for (user, client) in [("u1", "a"), ("u2", "a"), ("u1", "ab")] {
            store.remember_consent(user, client, &read).await.unwrap();
        }
        assert_eq!(store.trees.client_consents.len(), 3, "written with every consent");
        store.trees.client_consents.clear().unwrap();
        store.trees.meta.remove(CLIENT_CONSENTS_INDEXED).unwrap();
        drop(store);

        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        assert!(store.trees.meta.contains_key(CLIENT_CONSENTS_INDEXED).unwrap());
        assert_eq!(store.trees.client_consents.len(), 3, "indexed at the first open");
        assert_eq!(store.forget_client_consents("a").await.unwrap(), 2);
        assert_eq!(store.consented_scope("u1", "ab").await.unwrap(), Some(read));
        store.forget_consent("u1", "ab").await.unwrap();
        assert!(store.trees.client_consents.is_empty(), "every entry goes with its consent");
        assert!(store.trees.consents.is_empty());
    }

    /// A grant issued with a dated refresh token has no expiry entry: the purge of the head of
    /// its chain (the token never rotated) removes it, or indexes it when an access token
    /// outlives the chain.
    #[tokio::test]
    async fn a_grant_goes_with_the_head_of_its_refresh_chain() {
        use crate::secrets::{random_dated_secret, token_key};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        let (code, grant) = (code(), grant());
        let dated = |time| token_key(&random_dated_secret(time));
        let (code_key, r1, r2) = (dated(1200), dated(2000), dated(3000));
        store.insert_code(&code_key, &code).await.unwrap();
        store.redeem_code(&code_key, &grant, Some((&r1, &refresh(2000))), 1000).await.unwrap();
        assert!(store.trees.expiry.is_empty(), "no expiry entry for the code, the token or the grant");
        // An access token that outlives the chain's last refresh token.
        let access = IssuedAccessToken { jti: "a1".into(), expires_at: 3500 };
        store.rotate_refresh_token(&r1, &r2, &refresh(3000), &access, 1001).await.unwrap();

        // The rotated token goes; its successor, the head, will take care of the grant.
        let counts = store.purge_expired(2500).await.unwrap();
        assert_eq!((counts.codes, counts.refresh_tokens, counts.grants), (1, 1, 0));
        assert!(store.grant("g").await.unwrap().is_some());
        assert!(store.trees.expiry.is_empty());
        // The head goes; the grant lives on for its access token, now with an entry.
        let counts = store.purge_expired(3000).await.unwrap();
        assert_eq!((counts.refresh_tokens, counts.grants), (1, 0));
        assert!(store.grant("g").await.unwrap().is_some());
        assert_eq!(store.trees.expiry.len(), 1);
        // Then the grant and its access-token entry.
        let counts = store.purge_expired(3500).await.unwrap();
        assert_eq!(counts.grants, 1);
        for tree in
            [&store.trees.grants, &store.trees.refresh_tokens, &store.trees.grant_tokens, &store.trees.expiry]
        {
            assert!(tree.is_empty());
        }

        // When the grant's time comes with its head's, both go in one purge.
        let (code_key, r1) = (dated(1200), dated(2000));
        store.insert_code(&code_key, &code).await.unwrap();
        store.redeem_code(&code_key, &grant, Some((&r1, &refresh(2000))), 1000).await.unwrap();
        let counts = store.purge_expired(2000).await.unwrap();
        assert_eq!((counts.codes, counts.refresh_tokens, counts.grants), (1, 1, 1));
        assert!(store.trees.grants.is_empty() && store.trees.expiry.is_empty());
    }

    /// Codes, grants and refresh tokens written as JSON by earlier releases are redeemed, rotated
    /// and purged like the binary ones this release writes; what a change rewrites is binary.
    #[tokio::test]
    async fn records_written_as_json_by_earlier_releases_still_work() {
        use crate::secrets::{random_dated_secret, token_key};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        let dated = |time| token_key(&random_dated_secret(time));
        let (code_key, r1, r2) = (dated(1200), dated(2000), dated(3000));
        let (other_grant, other_r1, other_r2) = ("h", dated(2000), dated(3000));
        let mut change = Change::default();
        change.put_token(
            Space::Codes,
            TAG_CODE,
            code_key.as_bytes(),
            serde_json::to_vec(&code()).unwrap(),
            1200,
        );
        let grant_h = Grant { id: other_grant.into(), expires_at: 2000, ..grant() };
        change.put(Space::Grants, other_grant.as_bytes(), serde_json::to_vec(&grant_h).unwrap());
        let refresh_h = RefreshToken { grant_id: other_grant.into(), ..refresh(2000) };
        change.put_token(
            Space::RefreshTokens,
            TAG_REFRESH,
            other_r1.as_bytes(),
            serde_json::to_vec(&refresh_h).unwrap(),
            2000,
        );
        store.write(move |trees| trees.commit(change)).await.unwrap();
        let first_byte = |tree: &Tree, key: &str| tree.get(key).unwrap().unwrap()[0];
        assert_eq!(first_byte(&store.trees.codes, &code_key), b'{');

        assert_eq!(store.code(&code_key).await.unwrap(), Some(code()));
        let redeemed = store.redeem_code(&code_key, &grant(), Some((&r1, &refresh(2000))), 1000).await;
        assert!(matches!(redeemed.unwrap(), Redemption::Redeemed));
        assert_eq!(store.grant("g").await.unwrap(), Some(grant()));
        assert_ne!(first_byte(&store.trees.grants, "g"), b'{');
        let access = IssuedAccessToken { jti: "a1".into(), expires_at: 1100 };
        let rotated = store
            .rotate_refresh_token(
                &other_r1,
                &other_r2,
                &RefreshToken { grant_id: "h".into(), ..refresh(3000) },
                &access,
                1001,
            )
            .await;
        assert!(matches!(rotated.unwrap(), Rotation::Rotated));
        assert!(store.refresh_token(&other_r1).await.unwrap().unwrap().rotated);
        assert_ne!(first_byte(&store.trees.refresh_tokens, &other_r1), b'{');
        let rotated = store.rotate_refresh_token(&r1, &r2, &refresh(3000), &access, 1002).await;
        assert!(matches!(rotated.unwrap(), Rotation::Rotated));

        let counts = store.purge_expired(10_000).await.unwrap();
        assert_eq!((counts.codes, counts.refresh_tokens, counts.grants), (1, 4, 2));
        for tree in
            [&store.trees.codes, &store.trees.grants, &store.trees.refresh_tokens, &store.trees.expiry]
        {
            assert!(tree.is_empty());
        }
    }

    /// Rotations skip the prune scan until one of their grant's entries can have expired, remove
    /// at most 16 expired entries each, and a store opened again (nothing remembered) still
    /// prunes.
    #[tokio::test]
    async fn rotations_prune_their_grants_expired_access_tokens() {
        use crate::secrets::{random_dated_secret, token_key};
        let dir = tempfile::tempdir().unwrap();
        let record = refresh(9000);
        let tokens: Vec<String> = (0..40).map(|_| token_key(&random_dated_secret(9000))).collect();
        let entries = |store: &SledStore| store.trees.grant_tokens.len();
        let mut next = 0;
        async fn rotate(store: &SledStore, tokens: &[String], step: usize, now: i64, expires_at: i64) {
            let access = IssuedAccessToken { jti: format!("a{step:02}"), expires_at };
            let rotation = store
                .rotate_refresh_token(&tokens[step], &tokens[step + 1], &refresh(9000), &access, now)
                .await;
            assert!(matches!(rotation.unwrap(), Rotation::Rotated));
        }
        {
            let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
            let grant = Grant { expires_at: 9000, ..grant() };
            let mut change = Change::default();
            change.put_expiring(Space::Grants, TAG_GRANT, b"g", encode(&grant), grant.expires_at);
            change.put_token(Space::RefreshTokens, TAG_REFRESH, tokens[0].as_bytes(), encode(&record), 9000);
            store.write(move |trees| trees.commit(change)).await.unwrap();
            // 20 access tokens of 100 s, one a second: none expires before the last is issued.
            for second in 0..20 {
                rotate(&store, &tokens, next, 1000 + second, 1100 + second).await;
                next += 1;
            }
            assert_eq!(entries(&store), 20);
            // At 2000 all 20 have expired: 16 go, then the other 4 at the next rotation.
            rotate(&store, &tokens, next, 2000, 2010).await;
            next += 1;
            assert_eq!(entries(&store), 20 - 16 + 1);
            rotate(&store, &tokens, next, 2001, 2011).await;
            next += 1;
            assert_eq!(entries(&store), 2);
            rotate(&store, &tokens, next, 2002, 2012).await;
            next += 1;
            assert_eq!(entries(&store), 3, "none expired: nothing pruned");
        }
        // Opened again, the store remembers no prune time: the first rotation scans.
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        rotate(&store, &tokens, next, 2012, 2100).await;
        assert_eq!(entries(&store), 1, "the three of 2010-2012 went");
    }

    /// The access tokens of rotations need no expiry entries: a rotation removes its grant's
    /// expired ones, the grant's purge the rest; revoking the grant revokes every unexpired one,
    /// those recorded by earlier releases too.
    #[tokio::test]
    async fn the_access_tokens_of_rotations_are_revoked_with_their_grant_and_go_once_expired() {
        use crate::secrets::{random_dated_secret, token_key};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        let grant = Grant {
            access_tokens: vec![IssuedAccessToken { jti: "a0".into(), expires_at: 1090 }],
            expires_at: 5000,
            ..grant()
        };
        let refresh = refresh(5000);
        let tokens: Vec<String> = (0..4).map(|_| token_key(&random_dated_secret(5000))).collect();
        let mut change = Change::default();
        change.put_expiring(Space::Grants, TAG_GRANT, b"g", encode(&grant), grant.expires_at);
        change.put_token(Space::RefreshTokens, TAG_REFRESH, tokens[0].as_bytes(), encode(&refresh), 5000);
        // An entry as earlier releases wrote it: the jti after a zero byte, the expiry as value.
        change.put_expiring(
            Space::GrantTokens,
            TAG_GRANT_TOKEN,
            b"g\0old",
            1300i64.to_be_bytes().to_vec(),
            1300,
        );
        store.write(move |trees| trees.commit(change)).await.unwrap();

        let jtis = |store: &SledStore| -> Vec<String> {
            let keys = store.trees.grant_tokens.iter().keys().map(Result::unwrap);
            keys.map(|key| String::from_utf8_lossy(&key[key.len() - 2..]).into_owned()).collect()
        };
        for (step, (now, expires_at)) in [(1000, 1100), (1050, 1150), (1120, 1220)].into_iter().enumerate() {
            let access = IssuedAccessToken { jti: format!("a{}", step + 1), expires_at };
            let rotation = store
                .rotate_refresh_token(&tokens[step], &tokens[step + 1], &refresh, &access, now)
                .await
                .unwrap();
            assert!(matches!(rotation, Rotation::Rotated));
        }
        // a1 expired (1100) before the third rotation (1120), which removed it.
        assert_eq!(jtis(&store), ["ld", "a2", "a3"]);
        assert_eq!(store.trees.expiry.len(), 2, "the grant's and the old entry's; none per rotation");

        store.revoke_grant("g", 1130).await.unwrap();
        let revoked: Vec<String> =
            store.revoked_access_tokens(1130).await.unwrap().into_iter().map(|(jti, _)| jti).collect();
        assert_eq!(revoked, ["a2", "a3", "old"], "every unexpired one, of either shape");

        let counts = store.purge_expired(10_000).await.unwrap();
        assert_eq!((counts.grants, counts.refresh_tokens, counts.revoked_access_tokens), (1, 4, 3));
        for tree in
            [&store.trees.grants, &store.trees.refresh_tokens, &store.trees.grant_tokens, &store.trees.expiry]
        {
            assert!(tree.is_empty());
        }
    }

    /// After a change failed half way, nothing more is written until a restart replays it.
    #[tokio::test]
    async fn a_store_with_an_interrupted_change_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        store.trees.interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
        let error = store.write(|trees| trees.commit(change())).await.unwrap_err();
        assert!(error.to_string().contains("until the server restarts"), "{error}");
        assert!(store.trees.refresh_tokens.get("new").unwrap().is_none());
        assert!(store.trees.redo.is_empty());
    }
}
