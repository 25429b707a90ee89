//! The store contract, one test body run against the memory store and sled.

use portcullis::domain::*;
use portcullis::store::*;

fn client(id: &str) -> Client {
    Client {
        client_id: id.into(),
        name: "n".into(),
        client_type: ClientType::Confidential,
        secret_hash: Some("h".into()),
        redirect_uris: vec![RedirectUri::parse("https://a.example/cb").unwrap()],
        grant_types: vec![GrantType::AuthorizationCode],
        scope: Scope::parse("read").unwrap(),
        skip_consent: false,
        owner: None,
        id_token_signed_response_alg: None,
        allowed_origins: Vec::new(),
        post_logout_redirect_uris: Vec::new(),
        created_at: 0,
    }
}

fn user(id: &str, username: &str) -> User {
    User {
        id: id.into(),
        username: username.into(),
        password_hash: "x".into(),
        admin: false,
        created_at: 0,
        email: None,
        name: None,
    }
}

fn code(grant_id: &str, expires_at: i64) -> AuthorizationCode {
    AuthorizationCode {
        client_id: "c".into(),
        redirect_uri: "https://a.example/cb".into(),
        user_id: "u".into(),
        scope: Scope::parse("read").unwrap(),
        auth_time: 0,
        code_challenge: None,
        grant_id: grant_id.into(),
        expires_at,
        used: false,
        purge_at: expires_at + 100,
        nonce: None,
    }
}

fn grant(id: &str, jti: &str, expires_at: i64) -> Grant {
    Grant {
        id: id.into(),
        client_id: "c".into(),
        user_id: "u".into(),
        scope: Scope::parse("read").unwrap(),
        auth_time: 0,
        created_at: 0,
        revoked_at: None,
        access_tokens: vec![IssuedAccessToken { jti: jti.into(), expires_at: 1900 }],
        expires_at,
    }
}

fn refresh(grant_id: &str, expires_at: i64) -> RefreshToken {
    RefreshToken {
        grant_id: grant_id.into(),
        client_id: "c".into(),
        scope: Scope::parse("read").unwrap(),
        expires_at,
        rotated: false,
    }
}

async fn clients_and_users(store: &dyn Store) {
    store.insert_client(&client("a")).await.unwrap();
    assert!(matches!(store.insert_client(&client("a")).await, Err(StoreError::Conflict(_))));
    assert_eq!(
        store.client("a").await.unwrap().unwrap().name,
        "n",
        "read (and cached, where a store caches)"
    );
    let mut changed = client("a");
    changed.name = "renamed".into();
    store.replace_client(&changed).await.unwrap();
    assert_eq!(store.client("a").await.unwrap().unwrap().name, "renamed");
    assert!(matches!(store.replace_client(&client("zz")).await, Err(StoreError::NotFound)));
    assert_eq!(store.clients().await.unwrap().len(), 1);
    store.delete_client("a").await.unwrap();
    assert!(store.client("a").await.unwrap().is_none());
    assert!(matches!(store.delete_client("a").await, Err(StoreError::NotFound)));

    store.insert_user(&user("1", "alice")).await.unwrap();
    assert!(matches!(store.insert_user(&user("2", "alice")).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.user_by_username("alice").await.unwrap().unwrap().id, "1");
    assert_eq!(
        store.user("1").await.unwrap().unwrap().username,
        "alice",
        "read (and cached, where a store caches)"
    );
    store.delete_user("alice").await.unwrap();
    assert!(store.user_by_username("alice").await.unwrap().is_none());
    assert!(store.user("1").await.unwrap().is_none(), "a deleted user is not served from a cache");
    store.insert_user(&user("1", "bob")).await.unwrap();
    assert_eq!(store.user("1").await.unwrap().unwrap().username, "bob");
    assert!(matches!(store.delete_user("alice").await, Err(StoreError::NotFound)));
}

async fn sessions_expire(store: &dyn Store) {
    let session = Session { user_id: "u".into(), auth_time: 0, csrf_token: "t".into(), expires_at: 100 };
    store.insert_session("s", &session).await.unwrap();
    assert_eq!(store.session("s", 99).await.unwrap(), Some(session));
    assert_eq!(store.session("s", 100).await.unwrap(), None);
    store.delete_session("s").await.unwrap();
    assert_eq!(store.session("s", 0).await.unwrap(), None);
}

async fn codes_are_single_use(store: &dyn Store) {
    store.insert_code("h", &code("g1", 1000)).await.unwrap();
    let redeemed = store
        .redeem_code("h", &grant("g1", "j1", 5000), Some(("r1", &refresh("g1", 5000))), 900)
        .await
        .unwrap();
    assert_eq!(redeemed, Redemption::Redeemed);
    assert!(store.code("h").await.unwrap().unwrap().used);
    assert!(store.grant("g1").await.unwrap().is_some());
    assert!(store.refresh_token("r1").await.unwrap().is_some());
    let again = store.redeem_code("h", &grant("g1", "j2", 5000), None, 901).await.unwrap();
    assert_eq!(again, Redemption::AlreadyUsed { grant_id: "g1".into() });
    assert_eq!(
        store.redeem_code("missing", &grant("g9", "j9", 5000), None, 900).await.unwrap(),
        Redemption::Unknown
    );

    store.insert_code("old", &code("g2", 1000)).await.unwrap();
    assert_eq!(
        store.redeem_code("old", &grant("g2", "j3", 5000), None, 1000).await.unwrap(),
        Redemption::Unknown
    );
    assert!(store.grant("g2").await.unwrap().is_none(), "nothing written for an expired code");
}

async fn revoking_before_redeeming_leaves_a_tombstone(store: &dyn Store) {
    store.insert_code("h", &code("g1", 1000)).await.unwrap();
    store.revoke_grant("g1", 900).await.unwrap();
    let outcome = store
        .redeem_code("h", &grant("g1", "j1", 5000), Some(("r1", &refresh("g1", 5000))), 900)
        .await
        .unwrap();
    assert_eq!(outcome, Redemption::AlreadyUsed { grant_id: "g1".into() });
    assert!(store.refresh_token("r1").await.unwrap().is_none());
}

async fn rotation_and_reuse(store: &dyn Store) {
    store.insert_code("h", &code("g1", 1000)).await.unwrap();
    store.redeem_code("h", &grant("g1", "j1", 5000), Some(("r1", &refresh("g1", 5000))), 900).await.unwrap();
    let access = IssuedAccessToken { jti: "j2".into(), expires_at: 1900 };
    let rotated = store.rotate_refresh_token("r1", "r2", &refresh("g1", 6000), &access, 950).await.unwrap();
    assert_eq!(rotated, Rotation::Rotated);
    assert!(store.refresh_token("r1").await.unwrap().unwrap().rotated);
    let grant_now = store.grant("g1").await.unwrap().unwrap();
    assert_eq!(grant_now.expires_at, 6000);
    let reuse = store.rotate_refresh_token("r1", "r3", &refresh("g1", 6000), &access, 960).await.unwrap();
    assert_eq!(reuse, Rotation::AlreadyRotated { grant_id: "g1".into() });
    assert!(store.refresh_token("r3").await.unwrap().is_none(), "nothing written on reuse");

    store.revoke_grant("g1", 970).await.unwrap();
    assert!(store.is_access_token_revoked("j1", 970).await.unwrap());
    assert!(store.is_access_token_revoked("j2", 970).await.unwrap());
    assert!(!store.is_access_token_revoked("j2", 1900).await.unwrap(), "forgotten after exp");
    let after = store.rotate_refresh_token("r2", "r4", &refresh("g1", 7000), &access, 980).await.unwrap();
    assert_eq!(after, Rotation::Invalid);
    assert_eq!(
        store.rotate_refresh_token("nope", "r5", &refresh("g1", 7000), &access, 980).await.unwrap(),
        Rotation::Invalid
    );
}

async fn expired_refresh_tokens_do_not_rotate(store: &dyn Store) {
    store.insert_code("h", &code("g1", 1000)).await.unwrap();
    store.redeem_code("h", &grant("g1", "j1", 5000), Some(("r1", &refresh("g1", 1200))), 900).await.unwrap();
    let access = IssuedAccessToken { jti: "j2".into(), expires_at: 2100 };
    assert_eq!(
        store.rotate_refresh_token("r1", "r2", &refresh("g1", 9000), &access, 1200).await.unwrap(),
        Rotation::Invalid
    );
}

async fn purge_removes_only_what_expired(store: &dyn Store) {
    store.insert_code("h", &code("g1", 1000)).await.unwrap(); // purge_at 1100
    store.redeem_code("h", &grant("g1", "j1", 5000), Some(("r1", &refresh("g1", 3000))), 900).await.unwrap();
    store
        .insert_session(
            "s",
            &Session { user_id: "u".into(), auth_time: 0, csrf_token: "t".into(), expires_at: 2000 },
        )
        .await
        .unwrap();
    store.revoke_access_token("j9", 1500).await.unwrap();

    let counts = store.purge_expired(1000).await.unwrap();
    assert_eq!(counts.total(), 0);
    let counts = store.purge_expired(2000).await.unwrap();
    assert_eq!(
        (counts.codes, counts.sessions, counts.revoked_access_tokens, counts.refresh_tokens),
        (1, 1, 1, 0)
    );
    assert!(store.code("h").await.unwrap().is_none());
    assert!(store.refresh_token("r1").await.unwrap().is_some());
    let counts = store.purge_expired(5000).await.unwrap();
    assert_eq!((counts.refresh_tokens, counts.grants), (1, 1));
    assert!(store.grant("g1").await.unwrap().is_none());
    store.flush().await.unwrap();
}

/// A rotation extends the grant without writing a new expiry entry of its own (sled): the purge
/// must keep the grant at its first time and remove it at its real one, with the access token
/// the rotation remembered.
async fn purge_follows_a_grant_extended_by_rotation(store: &dyn Store) {
    store.insert_code("h", &code("g1", 1000)).await.unwrap();
    store.redeem_code("h", &grant("g1", "j1", 2000), Some(("r1", &refresh("g1", 2000))), 900).await.unwrap();
    let access = IssuedAccessToken { jti: "j2".into(), expires_at: 2500 };
    let rotated = store.rotate_refresh_token("r1", "r2", &refresh("g1", 4000), &access, 950).await.unwrap();
    assert_eq!(rotated, Rotation::Rotated);

    let counts = store.purge_expired(2000).await.unwrap();
    assert_eq!((counts.grants, counts.refresh_tokens), (0, 1), "only r1 is due");
    assert!(store.grant("g1").await.unwrap().is_some(), "the grant lives as long as r2");
    store.revoke_grant("g1", 2100).await.unwrap();
    assert!(store.is_access_token_revoked("j2", 2100).await.unwrap(), "the rotation's token is revoked");
    let counts = store.purge_expired(4000).await.unwrap();
    assert_eq!((counts.grants, counts.refresh_tokens), (1, 1));
    assert!(store.grant("g1").await.unwrap().is_none());
    assert_eq!(store.purge_expired(10_000).await.unwrap().total(), 0, "nothing left behind");
}

async fn revoked_tokens_are_listed_until_they_expire(store: &dyn Store) {
    store.revoke_access_token("b", 2000).await.unwrap();
    store.revoke_access_token("a", 1000).await.unwrap();
    let mut listed = store.revoked_access_tokens(500).await.unwrap();
    listed.sort();
    assert_eq!(listed, vec![("a".to_owned(), 1000), ("b".to_owned(), 2000)]);
    assert_eq!(store.revoked_access_tokens(1000).await.unwrap(), vec![("b".to_owned(), 2000)]);
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(&portcullis::store::MemoryStore::new()).await; })*
        }
        mod sled {
            $(#[tokio::test] async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let store = portcullis::store::SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
                super::$name(&store).await;
            })*
        }
    };
}

store_suite!(
    clients_and_users,
    sessions_expire,
    codes_are_single_use,
    revoking_before_redeeming_leaves_a_tombstone,
    rotation_and_reuse,
    expired_refresh_tokens_do_not_rotate,
    purge_removes_only_what_expired,
    purge_follows_a_grant_extended_by_rotation,
    revoked_tokens_are_listed_until_they_expire,
);

#[tokio::test]
async fn sled_keeps_flushed_writes_across_reopen_and_locks_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
        store.insert_client(&client("kept")).await.unwrap();
        store.flush().await.unwrap();
        let second = SledStore::open(dir.path(), 4 * 1024 * 1024);
        assert!(
            matches!(second, Err(portcullis::store::sled::OpenError::Locked { .. })),
            "a held store is refused at once"
        );
    }
    let store = SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap();
    assert!(store.client("kept").await.unwrap().is_some());
}

#[tokio::test]
async fn concurrent_flushes_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(dir.path(), 4 * 1024 * 1024).unwrap());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.insert_client(&client(&format!("c{i}"))).await.unwrap();
            store.flush().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.clients().await.unwrap().len(), 32);
}
