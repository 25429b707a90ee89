//! Refresh tokens: RFC 6749 §6, rotation and reuse detection (RFC 9700 §4.14.2).

use crate::helpers::*;

#[tokio::test]
async fn each_refresh_rotates_and_the_old_token_stops_working() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let first = app.tokens_for(&client).await;
    let old = first["refresh_token"].as_str().unwrap();

    let response = app.refresh(&client, old, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let second: serde_json::Value = response.json().await.unwrap();
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(second["scope"], "read write");
    assert_eq!(app.hello(Some(second["access_token"].as_str().unwrap())).await.status(), 200);

    let third: serde_json::Value = app.refresh(&client, new, None).await.json().await.unwrap();
    assert!(third["refresh_token"].is_string());
}

#[tokio::test]
async fn presenting_a_rotated_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let first = app.tokens_for(&client).await;
    let old = first["refresh_token"].as_str().unwrap().to_owned();
    let second: serde_json::Value = app.refresh(&client, &old, None).await.json().await.unwrap();
    let live_access = second["access_token"].as_str().unwrap();
    let live_refresh = second["refresh_token"].as_str().unwrap();

    let reuse = app.refresh(&client, &old, None).await;
    let body = assert_oauth_error(reuse, 400, "invalid_grant").await;
    assert!(body["error_description"].as_str().unwrap().contains("already used"));

    assert_oauth_error(app.refresh(&client, live_refresh, None).await, 400, "invalid_grant").await;
    assert_eq!(app.hello(Some(live_access)).await.status(), 401, "access tokens of the family are revoked");
    assert_eq!(app.hello(Some(first["access_token"].as_str().unwrap())).await.status(), 401);
}

#[tokio::test]
async fn scope_may_narrow_but_never_widen() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let (verifier, challenge) = pkce_pair();
    let code = app.login_and_consent(&client, Some(&challenge), &[("scope", "read write")]).await;
    let tokens: serde_json::Value =
        app.exchange_code(&client, &code, Some(&verifier)).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let widened = app.refresh(&client, refresh, Some("read write admin")).await;
    assert_oauth_error(widened, 400, "invalid_scope").await;

    let narrowed: serde_json::Value = app.refresh(&client, refresh, Some("read")).await.json().await.unwrap();
    assert_eq!(narrowed["scope"], "read");
    // The new refresh token keeps the original grant's scope (RFC 6749 §6).
    let again: serde_json::Value =
        app.refresh(&client, narrowed["refresh_token"].as_str().unwrap(), None).await.json().await.unwrap();
    assert_eq!(again["scope"], "read write");
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let other = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_oauth_error(app.refresh(&other, refresh, None).await, 400, "invalid_grant").await;
    assert_eq!(app.refresh(&client, refresh, None).await.status(), 200, "the failed attempt changed nothing");
}

#[tokio::test]
async fn public_clients_refresh_without_a_secret() {
    let app = spawn_app().await;
    let client = app.public_client().await;
    let tokens = app.tokens_for(&client).await;
    let response = app.refresh(&client, tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_refresh_tokens_and_missing_parameters() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    assert_oauth_error(app.refresh(&client, "no-such-token", None).await, 400, "invalid_grant").await;
    assert_oauth_error(
        app.token(&[("grant_type", "refresh_token")], Some(&client)).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn clients_without_the_refresh_grant_get_no_refresh_token() {
    let app = spawn_app().await;
    let client = app
        .create_client(ClientOptions {
            grant_types: vec![portcullis::domain::GrantType::AuthorizationCode],
            ..Default::default()
        })
        .await;
    let code = app.login_and_consent(&client, None, &[]).await;
    let body: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    assert!(body.get("refresh_token").is_none());
}

/// Codes and refresh tokens are issued dated by their purge time (their store keys sort by it);
/// those of earlier releases, stored under the bare digest or led by their issue time, keep
/// working through the exchange, replay detection, introspection, rotation and reuse detection.
#[tokio::test]
async fn tokens_issued_by_earlier_releases_keep_working() {
    use portcullis::domain::{AuthorizationCode, Grant, RefreshToken, Scope};
    use portcullis::secrets::{base64url, hash_secret, random_secret};
    use portcullis::startup::now;

    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let issued = app.tokens_for(&client).await;
    assert_eq!(issued["refresh_token"].as_str().unwrap().len(), 54, "dated: 64-bit time, 256 bits");

    // The two earlier shapes and the keys they were stored under: 43 characters under their bare
    // digest, then 51 (6 bytes of issue time, 32 random) under their hex issue time and digest.
    let undated = || {
        let token = random_secret();
        let key = hash_secret(&token);
        (token, key)
    };
    let dated_by_issue_time = || {
        let mut bytes = now().to_be_bytes()[2..].to_vec();
        bytes.extend_from_slice(&uuid::Uuid::new_v4().into_bytes());
        bytes.extend_from_slice(&uuid::Uuid::new_v4().into_bytes());
        let token = base64url(&bytes);
        let key = format!("{:012x}{}", now(), hash_secret(&token));
        (token, key)
    };
    let user = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    for (shape, earlier) in
        [("undated", &undated as &dyn Fn() -> (String, String)), ("dated", &dated_by_issue_time)]
    {
        let old_code = AuthorizationCode {
            client_id: client.id.clone(),
            redirect_uri: REDIRECT_URI.into(),
            user_id: user.id.clone(),
            scope: Scope::parse("read").unwrap(),
            auth_time: now(),
            code_challenge: None,
            grant_id: format!("{shape}-grant-from-before"),
            expires_at: now() + 60,
            used: false,
            purge_at: now() + 960,
            nonce: None,
            issued_at: None,
        };
        let (code, code_key) = earlier();
        app.server.store.insert_code(&code_key, &old_code).await.unwrap();
        let exchanged = app.exchange_code(&client, &code, None).await;
        assert_eq!(exchanged.status(), 200, "{shape}");
        let exchanged: serde_json::Value = exchanged.json().await.unwrap();
        assert_eq!(exchanged["refresh_token"].as_str().unwrap().len(), 54);
        assert_oauth_error(app.exchange_code(&client, &code, None).await, 400, "invalid_grant").await;

        // A refresh token from before, in a grant of its own.
        let ((_, second_key), (old_refresh, old_refresh_key)) = (earlier(), earlier());
        let second = AuthorizationCode { grant_id: format!("{shape}-second-grant-from-before"), ..old_code };
        app.server.store.insert_code(&second_key, &second).await.unwrap();
        let grant = Grant {
            id: second.grant_id.clone(),
            client_id: client.id.clone(),
            user_id: user.id.clone(),
            scope: second.scope.clone(),
            auth_time: now(),
            created_at: now(),
            revoked_at: None,
            access_tokens: Vec::new(),
            expires_at: now() + 3600,
        };
        let record = RefreshToken {
            grant_id: grant.id.clone(),
            client_id: client.id.clone(),
            scope: grant.scope.clone(),
            expires_at: now() + 3600,
            rotated: false,
        };
        app.server
            .store
            .redeem_code(&second_key, &grant, Some((&old_refresh_key, &record)), now())
            .await
            .unwrap();
        let introspected = app
            .http
            .post(app.url("/o/introspect"))
            .basic_auth(&client.id, client.secret.as_deref())
            .form(&[("token", old_refresh.as_str()), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(introspected.json::<serde_json::Value>().await.unwrap()["active"], true, "{shape}");
        let rotated = app.refresh(&client, &old_refresh, None).await;
        assert_eq!(rotated.status(), 200, "{shape}");
        let successor =
            rotated.json::<serde_json::Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(successor.len(), 54);
        // The old token is now spent: presenting it again is reuse and revokes the grant.
        assert_oauth_error(app.refresh(&client, &old_refresh, None).await, 400, "invalid_grant").await;
        assert_oauth_error(app.refresh(&client, &successor, None).await, 400, "invalid_grant").await;
    }
}
