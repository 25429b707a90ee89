//! The example protected resource `/api/hello`: RFC 6750 §3.

use portcullis::domain::Scope;
use portcullis::startup::now;

use crate::helpers::*;

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn no_token_is_401_with_a_bare_bearer_challenge() {
    let app = spawn_app().await;
    let response = app.hello(None).await;
    assert_eq!(response.status(), 401);
    let challenge = challenge(&response);
    assert!(challenge.starts_with("Bearer"));
    assert!(!challenge.contains("error="), "RFC 6750 §3.1: no error code without credentials");
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let body: serde_json::Value =
        app.token(&[("grant_type", "client_credentials")], Some(&client)).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let mut tampered = token.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = portcullis::secrets::base64url(br#"{"scope":"read admin"}"#);
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let expired = app
        .server
        .mint_access_token("someone", &client.id, &Scope::parse("read").unwrap(), None, now() - 3600)
        .unwrap()
        .0;
    for bad in
        ["garbage", "a.b.c", tampered.as_str(), forged.as_str(), expired.as_str(), "eyJhbGciOiJub25lIn0.e30."]
    {
        let response = app.hello(Some(bad)).await;
        assert_eq!(response.status(), 401, "{bad}");
        assert!(challenge(&response).contains("error=\"invalid_token\""), "{bad}");
    }
    let response =
        app.http.get(app.url("/api/hello")).header("authorization", "Basic abc").send().await.unwrap();
    // RFC 6750 §3.1: another authentication scheme is "no authentication information": a bare
    // challenge, no error code.
    assert_eq!(response.status(), 401);
    assert_eq!(challenge(&response), "Bearer realm=\"portcullis\"");
}

#[tokio::test]
async fn a_token_without_read_is_403_insufficient_scope() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let body: serde_json::Value = app
        .token(&[("grant_type", "client_credentials"), ("scope", "write")], Some(&client))
        .await
        .json()
        .await
        .unwrap();
    let response = app.hello(Some(body["access_token"].as_str().unwrap())).await;
    assert_eq!(response.status(), 403);
    let challenge = challenge(&response);
    assert!(challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"read\""));
}
