//! Grows a stopped server's store by N live refresh tokens, the way the token endpoint does it
//! (an authorization code is stored, then redeemed into a grant and a refresh token), but without
//! HTTP, so that `bench/scale.sh` reaches a million tokens in minutes. Prints the first CHAINS
//! refresh tokens it made, one per line, for the rotation run.
//!
//!   cargo run --release --example bench_seed -- DATA_DIR CLIENT_ID USERNAME COUNT CHAINS
//!
//! Codes are given a purge time a minute away and purged at the end, as the server's background
//! purge would: what stays is what a server holds after COUNT exchanges.

use std::sync::Arc;

use portcullis::domain::{AuthorizationCode, Grant, IssuedAccessToken, RefreshToken, Scope};
use portcullis::secrets::{random_dated_secret, random_token, token_key};
use portcullis::store::{SharedStore, SledStore};

/// Redemptions in flight at once: enough to keep the store's writer busy.
const CONCURRENCY: usize = 64;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data_dir, client_id, username, count, chains] = args.as_slice() else {
        eprintln!("usage: bench_seed DATA_DIR CLIENT_ID USERNAME COUNT CHAINS");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let chains: usize = chains.parse().expect("CHAINS is a number");
    // The server's default cache (--cache-mb 16).
    let store: SharedStore =
        Arc::new(SledStore::open(data_dir.as_ref(), 16 * 1024 * 1024).expect("open the store"));
    let user = store.user_by_username(username).await.expect("read the user").expect("the user exists");
    let scope = Scope::parse("read write").expect("a valid scope");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (store, next, scope) = (store.clone(), next.clone(), scope.clone());
        let (client_id, user_id) = (client_id.clone(), user.id.clone());
        workers.spawn(async move {
            let mut tokens = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= count {
                    return tokens;
                }
                let grant_id = Grant::new_id(&user_id);
                let code_hash = token_key(&random_dated_secret(now + 60));
                let code = AuthorizationCode {
                    client_id: client_id.clone(),
                    redirect_uri: "http://127.0.0.1:9/cb".into(),
                    user_id: user_id.clone(),
                    scope: scope.clone(),
                    auth_time: now,
                    code_challenge: None,
                    grant_id: grant_id.clone(),
                    expires_at: now + 60,
                    used: false,
                    purge_at: now + 60,
                    nonce: None,
                    issued_at: Some(now),
                };
                store.insert_code(&code_hash, &code).await.expect("store the code");
                let refresh_token = random_dated_secret(now + 2_592_000);
                let refresh = RefreshToken {
                    grant_id: grant_id.clone(),
                    client_id: client_id.clone(),
                    scope: scope.clone(),
                    expires_at: now + 2_592_000,
                    rotated: false,
                };
                let grant = Grant {
                    id: grant_id,
                    client_id: client_id.clone(),
                    user_id: user_id.clone(),
                    scope: scope.clone(),
                    auth_time: now,
                    created_at: now,
                    revoked_at: None,
                    access_tokens: vec![IssuedAccessToken { jti: random_token(16), expires_at: now + 900 }],
                    expires_at: refresh.expires_at,
                };
                store
                    .redeem_code(&code_hash, &grant, Some((&token_key(&refresh_token), &refresh)), now)
                    .await
                    .expect("redeem the code");
                if index < chains {
                    tokens.push(refresh_token);
                }
            }
        });
    }
    let mut tokens = Vec::new();
    while let Some(made) = workers.join_next().await {
        tokens.extend(made.expect("a seeding task"));
    }
    store.flush().await.expect("flush");
    let purged = store.purge_expired(now + 61).await.expect("purge the codes");
    eprintln!(
        "seeded {count} refresh tokens in {:.1} s; purged {} codes",
        started.elapsed().as_secs_f64(),
        purged.codes
    );
    for token in tokens {
        println!("{token}");
    }
}
