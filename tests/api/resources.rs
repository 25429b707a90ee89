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
    let token = &app.client_credentials_token(&client, None).await;
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

#[tokio::test]
async fn two_or_unreadable_authorization_headers_are_400_invalid_request() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let bearer = format!("Bearer {}", app.client_credentials_token(&client, None).await);
    // RFC 6750 §3.1: a request that carries its token more than once is `invalid_request`; with
    // two headers, which one counts would be a guess, even when one of them is the valid token.
    for (first, second) in
        [(bearer.as_str(), bearer.as_str()), ("Basic abc", bearer.as_str()), (bearer.as_str(), "Bearer x")]
    {
        for path in ["/api/hello", "/o/userinfo"] {
            let response = app
                .http
                .get(app.url(path))
                .header("authorization", first)
                .header("authorization", second)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{path} {first:.12} + {second:.12}");
            assert!(challenge(&response).contains("error=\"invalid_request\""), "{path}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request", "{path}");
            assert!(
                body["error_description"].as_str().unwrap().contains("more than one Authorization header")
            );
        }
    }
    // A header that is not visible ASCII cannot be read: not "no token".
    let response = app
        .http
        .get(app.url("/api/hello"))
        .header("authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xe9").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(challenge(&response).contains("error=\"invalid_request\""));
    // The same token alone is still good.
    assert_eq!(app.hello(Some(&bearer["Bearer ".len()..])).await.status(), 200);
}

#[tokio::test]
async fn a_token_in_the_uri_query_is_refused_with_the_way_to_send_it() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let token = &app.client_credentials_token(&client, None).await;
    // RFC 6750 §2.3 (a MAY) is not supported: answering "no token" would hide why; and with the
    // header too, the request carries its token twice (§3.1).
    for path in ["/api/hello", "/o/userinfo"] {
        for (query_name, header) in
            [("access_token", None), ("access_token", Some(token)), ("access%5Ftoken", None)]
        {
            let mut request = app.http.get(format!("{}?{query_name}={token}", app.url(path)));
            if let Some(header) = header {
                request = request.bearer_auth(header);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 400, "{path} {query_name} {}", header.is_some());
            assert!(challenge(&response).contains("error=\"invalid_request\""), "{path}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request");
            assert!(body["error_description"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
        }
    }
    // Other query parameters are the resource's own.
    let response = app
        .http
        .get(format!("{}?token=x&access_tokens=y", app.url("/api/hello")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn challenges_hold_only_the_characters_rfc_6750_allows() {
    let app = spawn_app().await;
    // Reasons that quote the token's own header (its typ, kid or alg, any characters) or cite
    // an RFC section (`§`): RFC 6750 §3 allows only visible ASCII and space, without '"' or '\',
    // in error_description. The JSON body keeps the whole reason.
    let header = |json: &str| portcullis::secrets::base64url(json.as_bytes());
    for (header, reason) in [
        (header(r#"{"alg":"ES256","typ":"JWT"}"#), "§2.1"),
        (header(r#"{"alg":"ES256","typ":"at+jwt","kid":"clé \" \\ \u0001"}"#), "clé"),
        (header(r#"{"alg":"ÉS256","typ":"at+jwt"}"#), "ÉS256"),
    ] {
        let token = format!("{header}.e30.AAAA");
        let response = app.hello(Some(&token)).await;
        assert_eq!(response.status(), 401, "{reason}");
        let value = response.headers()["www-authenticate"].as_bytes().to_vec();
        let description = String::from_utf8(value).unwrap();
        let description =
            description.split("error_description=\"").nth(1).unwrap().strip_suffix('"').unwrap();
        assert!(
            description.chars().all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'),
            "{description}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error_description"].as_str().unwrap().contains(reason), "{body}");
    }
}
