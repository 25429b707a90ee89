//! In-memory store for tests: the same contract as sled, one mutex around plain maps. Every
//! operation is atomic because it holds the lock for its whole length; `flush` has nothing to do.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::*;

#[derive(Default)]
struct State {
    clients: HashMap<String, Client>,
    users: HashMap<String, User>,
    sessions: HashMap<String, Session>,
    codes: HashMap<String, AuthorizationCode>,
    grants: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, RefreshToken>,
    revoked_jtis: HashMap<String, i64>,
    /// [`revoked_holder_key`] → (deleted at or issued until, tokens until).
    revoked_clients: HashMap<String, (i64, i64)>,
    consents: HashMap<(String, String), Scope>,
    /// Bumped by every write to `revoked_jtis` or `revoked_clients`.
    revocations: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied operation (each operation
        // validates before it mutates), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Every access token of the client (for `user_id`, if given) issued until `issued_until`
    /// revoked, until `tokens_until`; an earlier entry keeps the later of each time.
    fn revoke_client_tokens(
        &mut self,
        client_id: &str,
        user_id: Option<&str>,
        issued_until: i64,
        tokens_until: i64,
    ) {
        let key = revoked_holder_key(client_id, user_id);
        let entry = self.revoked_clients.entry(key).or_insert((issued_until, tokens_until));
        *entry = (entry.0.max(issued_until), entry.1.max(tokens_until));
        self.revocations += 1;
    }
}

/// [`GrantStore::revoke_grant_bounded`] inside the locked state.
fn revoke_grant_locked(
    state: &mut State,
    grant_id: &str,
    now: i64,
    list_at_most: u64,
    tokens_until: i64,
    past_bound: Holder,
) -> GrantRevocation {
    let grant = state.grants.entry(grant_id.to_owned()).or_insert_with(|| tombstone(grant_id, now));
    if grant.revoked_at.is_none() {
        grant.revoked_at = Some(now);
    }
    let live: Vec<IssuedAccessToken> =
        grant.access_tokens.iter().filter(|token| token.expires_at > now).cloned().collect();
    if live.len() as u64 > list_at_most {
        let (client_id, user_id) = (grant.client_id.clone(), grant.user_id.clone());
        let user_id = (past_bound == Holder::User).then_some(user_id.as_str());
        state.revoke_client_tokens(&client_id, user_id, now, tokens_until);
        return GrantRevocation::AllRevoked;
    }
    let listed = live.len() as u64;
    for token in live {
        state.revoked_jtis.insert(token.jti, token.expires_at);
    }
    state.revocations += 1;
    GrantRevocation::Listed(listed)
}

/// A revoked, empty grant that stops a later redemption from bringing the grant back.
pub(crate) fn tombstone(grant_id: &str, now: i64) -> Grant {
    Grant {
        id: grant_id.to_owned(),
        client_id: String::new(),
        user_id: String::new(),
        scope: Default::default(),
        auth_time: now,
        created_at: now,
        revoked_at: Some(now),
        access_tokens: Vec::new(),
        // Long enough to outlive any code that could still be redeemed into it.
        expires_at: now + 86_400,
    }
}

#[async_trait]
impl ClientStore for MemoryStore {
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        let mut state = self.state();
        if state.clients.contains_key(&client.client_id) {
            return Err(StoreError::Conflict(format!("client {}", client.client_id)));
        }
        state.clients.insert(client.client_id.clone(), client.clone());
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.state().clients.get(client_id).cloned())
    }

    async fn clients_after(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Client>> {
        let clients = self.clients().await?.into_iter();
        Ok(clients
            .filter(|client| after.is_none_or(|after| client.client_id.as_str() > after))
            .take(limit)
            .collect())
    }

    async fn clients(&self) -> StoreResult<Vec<Client>> {
        let mut clients: Vec<Client> = self.state().clients.values().cloned().collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(clients)
    }

    async fn clients_of_owner(&self, owner: &str) -> StoreResult<Vec<Client>> {
        let clients = self.clients().await?.into_iter();
        Ok(clients.filter(|client| client.owner.as_deref() == Some(owner)).collect())
    }

    async fn replace_client(&self, client: &Client) -> StoreResult<()> {
        let mut state = self.state();
        match state.clients.get_mut(&client.client_id) {
            Some(stored) => {
                *stored = client.clone();
                Ok(())
            }
            None => Err(StoreError::NotFound),
        }
    }

    async fn delete_client(&self, client_id: &str, deleted_at: i64, tokens_until: i64) -> StoreResult<()> {
        {
            let mut state = self.state();
            state.clients.remove(client_id).ok_or(StoreError::NotFound)?;
            state.revoke_client_tokens(client_id, None, deleted_at, tokens_until);
        }
        self.forget_client_consents(client_id).await.map(drop)
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let mut state = self.state();
        if state.users.values().any(|existing| existing.username == user.username) {
            return Err(StoreError::Conflict(format!("username {}", user.username)));
        }
        state.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        Ok(self.state().users.get(user_id).cloned())
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        Ok(self.state().users.values().find(|user| user.username == username).cloned())
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let mut users: Vec<User> = self.state().users.values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn replace_user(&self, user: &User) -> StoreResult<()> {
        let mut state = self.state();
        match state.users.get_mut(&user.id) {
            Some(stored) if stored.username == user.username => {
                *stored = user.clone();
                Ok(())
            }
            _ => Err(StoreError::NotFound),
        }
    }

    async fn delete_user(&self, username: &str) -> StoreResult<()> {
        let mut state = self.state();
        let id = state
            .users
            .values()
            .find(|user| user.username == username)
            .map(|user| user.id.clone())
            .ok_or(StoreError::NotFound)?;
        state.users.remove(&id);
        state.consents.retain(|(user_id, _), _| *user_id != id);
        Ok(())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert_session(&self, id_hash: &str, session: &Session) -> StoreResult<()> {
        self.state().sessions.insert(id_hash.to_owned(), session.clone());
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<Session>> {
        Ok(self.state().sessions.get(id_hash).filter(|session| session.expires_at > now).cloned())
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.state().sessions.remove(id_hash);
        Ok(())
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn insert_code(&self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()> {
        self.state().codes.insert(code_hash.to_owned(), code.clone());
        Ok(())
    }

    async fn code(&self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>> {
        Ok(self.state().codes.get(code_hash).cloned())
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        refresh_token: Option<(&str, &RefreshToken)>,
        now: i64,
    ) -> StoreResult<Redemption> {
        let mut state = self.state();
        let Some(code) = state.codes.get_mut(code_hash) else {
            return Ok(Redemption::Unknown);
        };
        if code.used {
            return Ok(Redemption::AlreadyUsed { grant_id: code.grant_id.clone() });
        }
        if code.expires_at <= now {
            return Ok(Redemption::Unknown);
        }
        code.used = true;
        if state.grants.get(&grant.id).is_some_and(|existing| existing.revoked_at.is_some()) {
            return Ok(Redemption::AlreadyUsed { grant_id: grant.id.clone() });
        }
        state.grants.insert(grant.id.clone(), grant.clone());
        if let Some((hash, token)) = refresh_token {
            state.refresh_tokens.insert(hash.to_owned(), token.clone());
        }
        Ok(Redemption::Redeemed)
    }

    async fn grant(&self, grant_id: &str) -> StoreResult<Option<Grant>> {
        Ok(self.state().grants.get(grant_id).cloned())
    }

    async fn grants_of_user(&self, user_id: &str) -> StoreResult<Vec<Grant>> {
        let mut grants: Vec<Grant> = self
            .state()
            .grants
            .values()
            .filter(|grant| grant.user_id == user_id && grant.revoked_at.is_none())
            .cloned()
            .collect();
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
        Ok(revoke_grant_locked(&mut self.state(), grant_id, now, list_at_most, tokens_until, past_bound))
    }
}

#[async_trait]
impl RefreshTokenStore for MemoryStore {
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
        Ok(self.state().refresh_tokens.get(token_hash).cloned())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        access_token: &IssuedAccessToken,
        now: i64,
    ) -> StoreResult<Rotation> {
        let mut state = self.state();
        let Some(old) = state.refresh_tokens.get(old_hash).cloned() else {
            return Ok(Rotation::Invalid);
        };
        if old.rotated {
            return Ok(Rotation::AlreadyRotated { grant_id: old.grant_id });
        }
        let grant_live = state.grants.get(&old.grant_id).is_some_and(|grant| grant.revoked_at.is_none());
        if old.expires_at <= now || !grant_live {
            return Ok(Rotation::Invalid);
        }
        if let Some(stored) = state.refresh_tokens.get_mut(old_hash) {
            stored.rotated = true;
        }
        state.refresh_tokens.insert(new_hash.to_owned(), new.clone());
        if let Some(grant) = state.grants.get_mut(&old.grant_id) {
            grant.remember_access_token(access_token.clone(), now);
            grant.expires_at = grant.expires_at.max(new.expires_at);
        }
        Ok(Rotation::Rotated)
    }
}

#[async_trait]
impl RevokedTokenStore for MemoryStore {
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        let mut state = self.state();
        state.revoked_jtis.insert(jti.to_owned(), expires_at);
        state.revocations += 1;
        Ok(())
    }

    fn revocations_version(&self) -> u64 {
        self.state().revocations
    }

    async fn is_access_token_revoked(&self, jti: &str, now: i64) -> StoreResult<bool> {
        Ok(self.state().revoked_jtis.get(jti).is_some_and(|&expires_at| expires_at > now))
    }

    async fn revoked_access_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(unexpired(&self.state().revoked_jtis, now))
    }

    async fn revoked_clients(&self, now: i64) -> StoreResult<Vec<DeletedClient>> {
        let mut clients: Vec<DeletedClient> = (self.state().revoked_clients.iter())
            .filter(|(key, (_, tokens_until))| {
                *tokens_until > now && split_revoked_holder_key(key).1.is_none()
            })
            .map(|(client_id, &(deleted_at, tokens_until))| DeletedClient {
                client_id: client_id.clone(),
                deleted_at,
                tokens_until,
            })
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(clients)
    }

    async fn revoked_user_tokens(&self, now: i64) -> StoreResult<Vec<RevokedUserTokens>> {
        let state = self.state();
        let mut entries: Vec<RevokedUserTokens> = (state.revoked_clients.iter())
            .filter(|(_, (_, tokens_until))| *tokens_until > now)
            .filter_map(|(key, &(issued_until, tokens_until))| match split_revoked_holder_key(key) {
                (client_id, Some(user_id)) => Some(RevokedUserTokens {
                    client_id: client_id.to_owned(),
                    user_id: user_id.to_owned(),
                    issued_until,
                    tokens_until,
                }),
                (_, None) => None,
            })
            .collect();
        entries.sort_by(|a, b| (&a.client_id, &a.user_id).cmp(&(&b.client_id, &b.user_id)));
        Ok(entries)
    }

    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        user_id: Option<&str>,
        issued_until: i64,
        tokens_until: i64,
    ) -> StoreResult<()> {
        self.state().revoke_client_tokens(client_id, user_id, issued_until, tokens_until);
        Ok(())
    }

    async fn tokens_revoked_until(
        &self,
        client_id: &str,
        subject: &str,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let state = self.state();
        let until = |key: String| {
            let entry = state.revoked_clients.get(&key);
            entry.filter(|(_, tokens_until)| *tokens_until > now).map(|(issued_until, _)| *issued_until)
        };
        Ok(until(revoked_holder_key(client_id, None))
            .max(until(revoked_holder_key(client_id, Some(subject)))))
    }
}

#[async_trait]
impl ConsentStore for MemoryStore {
    async fn consented_scope(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Scope>> {
        Ok(self.state().consents.get(&(user_id.to_owned(), client_id.to_owned())).cloned())
    }

    async fn remember_consent(&self, user_id: &str, client_id: &str, scope: &Scope) -> StoreResult<()> {
        let mut state = self.state();
        if !state.clients.contains_key(client_id) {
            return Ok(());
        }
        let entry = state.consents.entry((user_id.to_owned(), client_id.to_owned())).or_default();
        *entry = entry.union(scope);
        Ok(())
    }

    async fn forget_consent(&self, user_id: &str, client_id: &str) -> StoreResult<()> {
        self.state().consents.remove(&(user_id.to_owned(), client_id.to_owned()));
        Ok(())
    }

    async fn forget_client_consents(&self, client_id: &str) -> StoreResult<u64> {
        let consents = &mut self.state().consents;
        let before = consents.len();
        consents.retain(|(_, consented_to), _| consented_to != client_id);
        Ok((before - consents.len()) as u64)
    }
}

#[async_trait]
impl Maintenance for MemoryStore {
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<PurgeCounts> {
        let mut state = self.state();
        let mut counts = PurgeCounts::default();
        fn sweep<V>(map: &mut HashMap<String, V>, expired: impl Fn(&V) -> bool) -> u64 {
            let before = map.len();
            map.retain(|_, value| !expired(value));
            (before - map.len()) as u64
        }
        counts.codes = sweep(&mut state.codes, |code| code.purge_at <= now);
        counts.grants = sweep(&mut state.grants, |grant| grant.expires_at <= now);
        counts.refresh_tokens = sweep(&mut state.refresh_tokens, |token| token.expires_at <= now);
        counts.sessions = sweep(&mut state.sessions, |session| session.expires_at <= now);
        counts.revoked_access_tokens = sweep(&mut state.revoked_jtis, |&expires_at| expires_at <= now);
        counts.revoked_clients = sweep(&mut state.revoked_clients, |&(_, until)| until <= now);
        Ok(counts)
    }
}

/// The entries of `map` whose time is after `now`, sorted.
fn unexpired(map: &HashMap<String, i64>, now: i64) -> Vec<(String, i64)> {
    let mut entries: Vec<(String, i64)> =
        map.iter().filter(|(_, until)| **until > now).map(|(key, until)| (key.clone(), *until)).collect();
    entries.sort();
    entries
}
