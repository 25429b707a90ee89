//! Introspection (RFC 7662).

use portcullis::domain::Scope;
use portcullis::startup::now;

use crate::helpers::*;

impl TestApp {
    pub async fn introspect(
        &self,
        caller: &TestClient,
        token: &str,
        hint: Option<&str>,
    ) -> reqwest::Response {
        let mut form = vec![("token", token)];
        if let Some(hint) = hint {
            form.push(("token_type_hint", hint));
        }
        let mut request = self.http.post(self.url("/o/introspect"));
        if caller.secret.is_some() {
            request = request.basic_auth(&caller.id, caller.secret.as_deref());
        } else {
            form.push(("client_id", &caller.id));
        }
        request.form(&form).send().await.unwrap()
    }

    pub async fn introspect_json(&self, caller: &TestClient, token: &str) -> serde_json::Value {
        let response = self.introspect(caller, token, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        response.json().await.unwrap()
    }
}

#[tokio::test]
async fn active_tokens_show_their_claims() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let resource_server = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let access = app.introspect_json(&resource_server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(access["active"], true);
    assert_eq!(access["client_id"], client.id.as_str());
    assert_eq!(access["scope"], "read write");
    assert_eq!(access["token_type"], "Bearer");
    assert_eq!(access["username"], "admin");
    assert_eq!(access["iss"], app.address.as_str());
    assert_eq!(access["aud"], app.address.as_str());
    for claim in ["exp", "iat", "nbf"] {
        assert!(access[claim].is_i64(), "{claim}");
    }
    let refresh = app.introspect_json(&resource_server, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh["active"], true);
    assert_eq!(refresh["client_id"], client.id.as_str());
    assert_eq!(refresh["scope"], "read write");
    assert!(refresh["exp"].as_i64().unwrap() > now() + 86_400);
}

#[tokio::test]
async fn expired_revoked_malformed_unknown_and_foreign_tokens_are_inactive() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let expired = app
        .server
        .mint_access_token("someone", &client.id, &Scope::parse("read").unwrap(), None, now() - 3600)
        .unwrap()
        .0;
    let old_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rotated: serde_json::Value = app.refresh(&client, &old_refresh, None).await.json().await.unwrap();

    // A token from another server (another key, another issuer and audience).
    let other = spawn_app().await;
    let other_client = other.confidential_client().await;
    let foreign: serde_json::Value =
        other.token(&[("grant_type", "client_credentials")], Some(&other_client)).await.json().await.unwrap();

    let revoked_access = rotated["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.revoke(&client, &revoked_access, None).await.status(), 200);

    for token in [
        expired.as_str(),
        old_refresh.as_str(),
        revoked_access.as_str(),
        foreign["access_token"].as_str().unwrap(),
        "garbage",
        "eyJhbGciOiJub25lIn0.e30.",
        "",
    ] {
        let response = app.introspect(&client, token, None).await;
        if token.is_empty() {
            assert_oauth_error(response, 400, "invalid_request").await;
            continue;
        }
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({ "active": false }), "{token}");
    }
}

/// Deleting a client (by its owner on the applications pages, or `client delete`) leaves its
/// tokens unusable: none of them is active any more.
#[tokio::test]
async fn the_tokens_of_a_deleted_client_are_inactive() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let resource_server = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let machine = app.client_credentials_token(&client, None).await;
    let tokens =
        [tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap(), &machine];
    for token in tokens {
        assert_eq!(app.introspect_json(&resource_server, token).await["active"], true);
    }
    app.server.store.delete_client(&client.id, now(), now() + 900).await.unwrap();
    for token in tokens {
        assert_eq!(
            app.introspect_json(&resource_server, token).await,
            serde_json::json!({ "active": false })
        );
    }
    // The other client's tokens are not touched.
    let other = app.client_credentials_token(&resource_server, None).await;
    assert_eq!(app.introspect_json(&resource_server, &other).await["active"], true);
}

#[tokio::test]
async fn the_caller_must_be_an_authenticated_confidential_client() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let public = app.public_client().await;
    assert_oauth_error(app.introspect(&public, access, None).await, 401, "invalid_client").await;
    let wrong = TestClient { id: client.id.clone(), secret: Some("wrong".into()) };
    assert_oauth_error(app.introspect(&wrong, access, None).await, 401, "invalid_client").await;
    let anonymous = app.http.post(app.url("/o/introspect")).form(&[("token", access)]).send().await.unwrap();
    assert_oauth_error(anonymous, 401, "invalid_client").await;
}

#[tokio::test]
async fn the_hint_orders_the_search_but_does_not_limit_it() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    for (token, hint) in [("access_token", "refresh_token"), ("refresh_token", "access_token")] {
        let body: serde_json::Value =
            app.introspect(&client, tokens[token].as_str().unwrap(), Some(hint)).await.json().await.unwrap();
        assert_eq!(body["active"], true, "{token} with hint {hint}");
    }
}
