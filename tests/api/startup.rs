//! What every start does: the admin user, the `swagger-ui` client in step with the issuer, the
//! background purge.

use std::sync::Arc;

use portcullis::config::Settings;
use portcullis::startup::{App, SWAGGER_UI_CLIENT_ID, now};
use portcullis::store::{MemoryStore, SharedStore};

use crate::helpers::*;

#[tokio::test]
async fn the_first_start_creates_the_admin_and_the_swagger_ui_client() {
    let app = spawn_app().await;
    let admin = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    assert!(admin.admin);
    assert!(admin.password_hash.starts_with("$argon2id$"));
    assert!(app.admin_password.len() >= 20, "a random password");
    let swagger = app.server.store.client(SWAGGER_UI_CLIENT_ID).await.unwrap().unwrap();
    assert!(swagger.is_public());
    assert_eq!(swagger.redirect_uris.len(), 1);
    assert_eq!(swagger.redirect_uris[0].as_str(), format!("{}/docs/oauth2-redirect.html", app.address));
}

#[tokio::test]
async fn later_starts_keep_the_admin_and_follow_a_new_issuer() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    // A user created before the first start (as with the CLI) does not stop the admin's creation.
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let settings = |issuer: &str| {
        let mut settings =
            portcullis::config::Settings::for_directories(data.path().into(), keys.path().into());
        settings.issuer = Some(issuer.into());
        settings
    };
    let alice = portcullis::domain::User {
        id: "alice-id".into(),
        username: "alice".into(),
        password_hash: portcullis::web::password::hash(PASSWORD).unwrap(),
        admin: false,
        created_at: now(),
        email: None,
        name: None,
        session_generation: 0,
    };
    store.insert_user(&alice).await.unwrap();

    let first = App::build_with_store(settings("https://one.example"), store.clone()).await.unwrap();
    assert!(first.initial_admin_password.is_some());
    drop(first);
    let second = App::build_with_store(settings("https://two.example"), store.clone()).await.unwrap();
    assert!(second.initial_admin_password.is_none(), "an admin exists: none is created");
    assert_eq!(store.users().await.unwrap().len(), 2);
    let swagger = store.client(SWAGGER_UI_CLIENT_ID).await.unwrap().unwrap();
    assert_eq!(swagger.redirect_uris[0].as_str(), "https://two.example/docs/oauth2-redirect.html");
}

#[tokio::test]
async fn expired_records_are_purged_in_the_background() {
    let app = spawn_app_with(|settings| settings.purge_interval = 1, None).await;
    let code = |purge_at: i64| portcullis::domain::AuthorizationCode {
        client_id: "c".into(),
        redirect_uri: REDIRECT_URI.into(),
        user_id: "u".into(),
        scope: Default::default(),
        auth_time: 0,
        code_challenge: None,
        grant_id: "g".into(),
        expires_at: purge_at - 10,
        used: false,
        purge_at,
        nonce: None,
        issued_at: None,
    };
    // `code()` returns a record until it is physically deleted, so this watches the purge
    // without purging anything itself.
    app.server.store.insert_code("expired", &code(now() - 1)).await.unwrap();
    app.server.store.insert_code("live", &code(now() + 3600)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.server.store.code("expired").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the background purge never ran");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(app.server.store.code("live").await.unwrap().is_some(), "unexpired records stay");
}

/// A revocation past the bound revokes every token of its holder (a client, or a user of a
/// client) issued until a whole second, and the server waits for the next one before issuing to
/// that holder again (see `revoke::past_its_bound_a_clients_revocations_...`). A restart within
/// that second must not forget it: the restarted server reads it back from the store.
#[tokio::test]
async fn a_restart_within_the_second_of_a_revocation_past_the_bound_issues_no_token_born_revoked() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let users_client = app.confidential_client().await;
    let refresh = app.tokens_for(&users_client).await["refresh_token"].as_str().unwrap().to_owned();
    let admin_id = app.server.store.user_by_username("admin").await.unwrap().unwrap().id;
    // The entries such revocations write: every token of `client`, and admin's of `users_client`.
    // A second ahead of the clock, so that the restarted server's token requests fall within
    // it however long the restart takes.
    let until = now() + 1;
    let store = &app.server.store;
    store.revoke_client_tokens(&client.id, None, until, until + 3600).await.unwrap();
    store.revoke_client_tokens(&users_client.id, Some(&admin_id), until, until + 3600).await.unwrap();

    let settings = Settings::for_directories(app.data_dir.path().join("store"), app.keys_dir.path().into());
    let restarted = App::build_with_store(settings, store.clone()).await.unwrap();
    let address = restarted.issuer().to_owned();
    tokio::spawn(restarted.run_until_stopped(std::future::pending()));
    let http = reqwest::Client::new();
    let token = |client: &TestClient, form: Vec<(&'static str, String)>| {
        let request = http
            .post(format!("{address}/o/token"))
            .basic_auth(&client.id, client.secret.as_deref())
            .form(&form);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    // At once: one waiting for the next second would let the other pass without waiting.
    let (clients, admins) = tokio::join!(
        token(&client, vec![("grant_type", "client_credentials".into()), ("scope", "read".into())]),
        token(&users_client, vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh)]),
    );
    for access in [clients, admins] {
        assert!(jws_payload(&access)["iat"].as_i64().unwrap() > until, "{access}");
        let hello = http.get(format!("{address}/api/hello")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(hello.status(), 200, "a token issued after the entry's second is good");
    }
}

#[tokio::test]
async fn a_connection_silent_for_the_idle_timeout_is_closed() {
    let app = spawn_app_with(|settings| settings.idle_timeout = 1, None).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.bound_port)).await.unwrap();
    request_then_silence(stream).await;
    // The request some time after the connection: the server's flushes on each wake-up of the
    // connection (its idle timer's included) must not count as activity. They did, and such a
    // connection stayed open for good.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.bound_port)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    request_then_silence(stream).await;
}

async fn request_then_silence(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // One request on a keep-alive connection, then silence: the server answers, then hangs up.
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the server closes an idle connection")
        .ok();
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"), "answered first");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "kept open while not idle for 1 s");
}
