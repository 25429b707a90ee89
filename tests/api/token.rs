//! The token endpoint: RFC 6749 §4.1.3, §4.4, §5.1–5.2, RFC 7636 §4.5–4.6, RFC 9068.

use josekit::jwk::JwkSet;
use josekit::jws::{ES256, RS256};
use portcullis::domain::{AuthorizationCode, GrantType, Scope};
use portcullis::secrets::hash_secret;
use portcullis::startup::now;

use crate::helpers::*;

/// Verifies an access token the way a resource server with a standard library would: fetch the
/// JWKS, pick the key by `kid`, verify, check the claims.
pub async fn verify_offline(app: &TestApp, token: &str) -> josekit::jwt::JwtPayload {
    let jwks = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().bytes().await.unwrap();
    let set = JwkSet::from_bytes(&jwks).unwrap();
    let header = josekit::jwt::decode_header(token).unwrap();
    let kid = header.claim("kid").unwrap().as_str().unwrap();
    let jwk = set.get(kid).into_iter().next().expect("the token's kid is in the JWKS");
    let (payload, header) = match header.claim("alg").unwrap().as_str().unwrap() {
        "ES256" => josekit::jwt::decode_with_verifier(token, &ES256.verifier_from_jwk(jwk).unwrap()).unwrap(),
        "RS256" => josekit::jwt::decode_with_verifier(token, &RS256.verifier_from_jwk(jwk).unwrap()).unwrap(),
        other => panic!("unexpected alg {other}"),
    };
    assert_eq!(header.token_type(), Some("at+jwt"));
    payload
}

#[tokio::test]
async fn code_flow_with_pkce_issues_a_verifiable_rfc9068_token() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let (verifier, challenge) = pkce_pair();
    let code = app.login_and_consent(&client, Some(&challenge), &[("scope", "read")]).await;
    let response = app.exchange_code(&client, &code, Some(&verifier)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
    // Dated tokens: 64 bits of the time the store may forget them (a refresh token's expiry, a
    // code's end of replay detection: expiry plus the access-token lifetime), then 256 random
    // bits, base64url (src/secrets.rs).
    let refresh_ttl = 30 * 24 * 3600; // the default --refresh-token-ttl
    for (token, lifetime) in
        [(body["refresh_token"].as_str().unwrap(), refresh_ttl), (code.as_str(), 60 + 900)]
    {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap();
        assert_eq!(bytes.len(), 8 + 32, "purge time and 256 bits: {token}");
        let purge_at = i64::from_be_bytes(bytes[..8].try_into().unwrap());
        assert!((now() + lifetime - purge_at).abs() <= 5, "the purge time, in seconds: {token}");
    }

    let access_token = body["access_token"].as_str().unwrap();
    let header = josekit::jwt::decode_header(access_token).unwrap();
    assert_eq!(header.claim("alg").unwrap(), "ES256");
    let claims = verify_offline(&app, access_token).await;
    let admin = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    assert_eq!(claims.claim("iss").unwrap(), app.address.as_str());
    assert_eq!(claims.claim("aud").unwrap(), app.address.as_str());
    assert_eq!(claims.claim("sub").unwrap(), admin.id.as_str());
    assert_eq!(claims.claim("client_id").unwrap(), client.id.as_str());
    assert_eq!(claims.claim("scope").unwrap(), "read");
    for name in ["exp", "iat", "nbf", "auth_time"] {
        assert!(claims.claim(name).unwrap().is_i64(), "{name} is whole seconds");
    }
    let iat = claims.claim("iat").unwrap().as_i64().unwrap();
    assert_eq!(claims.claim("exp").unwrap().as_i64().unwrap(), iat + 900);
    assert!(claims.claim("jti").unwrap().as_str().unwrap().len() >= 16);

    let hello = app.hello(Some(access_token)).await;
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().await.unwrap(), "Hello, there!!");
}

#[tokio::test]
async fn client_secret_post_and_public_clients_work() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let code = app.login_and_consent(&client, None, &[]).await;
    let secret = client.secret.clone().unwrap();
    let response = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("client_id", &client.id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);

    let public = app.public_client().await;
    let body = app.tokens_for(&public).await;
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn a_replayed_code_fails_and_revokes_what_it_issued() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let (verifier, challenge) = pkce_pair();
    let code = app.login_and_consent(&client, Some(&challenge), &[]).await;
    let first: serde_json::Value =
        app.exchange_code(&client, &code, Some(&verifier)).await.json().await.unwrap();
    let access_token = first["access_token"].as_str().unwrap();
    assert_eq!(app.hello(Some(access_token)).await.status(), 200);

    let replay = app.exchange_code(&client, &code, Some(&verifier)).await;
    let body = assert_oauth_error(replay, 400, "invalid_grant").await;
    assert!(body["error_description"].as_str().unwrap().contains("already used"));

    let hello = app.hello(Some(access_token)).await;
    assert_eq!(hello.status(), 401, "the access token issued from the code is revoked");
    let refresh = app.refresh(&client, first["refresh_token"].as_str().unwrap(), None).await;
    assert_oauth_error(refresh, 400, "invalid_grant").await;
}

#[tokio::test]
async fn pkce_mismatch_missing_or_downgraded_verifier_is_invalid_grant_and_burns_nothing() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let (verifier, challenge) = pkce_pair();
    let code = app.login_and_consent(&client, Some(&challenge), &[]).await;
    let (wrong, _) = pkce_pair();
    assert_oauth_error(app.exchange_code(&client, &code, Some(&wrong)).await, 400, "invalid_grant").await;
    assert_oauth_error(app.exchange_code(&client, &code, None).await, 400, "invalid_grant").await;
    assert_oauth_error(app.exchange_code(&client, &code, Some("short")).await, 400, "invalid_grant").await;
    // Failed attempts changed nothing stored: the rightful holder can still redeem it.
    assert_eq!(app.exchange_code(&client, &code, Some(&verifier)).await.status(), 200);

    // A code issued without a challenge cannot be redeemed with a verifier (PKCE downgrade).
    let code = app.login_and_consent(&client, None, &[]).await;
    let body =
        assert_oauth_error(app.exchange_code(&client, &code, Some(&verifier)).await, 400, "invalid_grant")
            .await;
    assert!(body["error_description"].as_str().unwrap().contains("no code_challenge"));
}

#[tokio::test]
async fn the_code_is_bound_to_its_client_and_redirect_uri() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let other = app.confidential_client().await;
    let code = app.login_and_consent(&client, None, &[]).await;
    assert_oauth_error(app.exchange_code(&other, &code, None).await, 400, "invalid_grant").await;
    let wrong_redirect = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://app.example.com/other"),
            ],
            Some(&client),
        )
        .await;
    assert_oauth_error(wrong_redirect, 400, "invalid_grant").await;
    let no_redirect =
        app.token(&[("grant_type", "authorization_code"), ("code", &code)], Some(&client)).await;
    assert_oauth_error(no_redirect, 400, "invalid_grant").await;
    assert_eq!(app.exchange_code(&client, &code, None).await.status(), 200, "still redeemable by its client");
}

#[tokio::test]
async fn unknown_and_expired_codes_are_invalid_grant() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    assert_oauth_error(app.exchange_code(&client, "not-a-code", None).await, 400, "invalid_grant").await;
    let user = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    let expired = AuthorizationCode {
        client_id: client.id.clone(),
        redirect_uri: REDIRECT_URI.into(),
        user_id: user.id,
        scope: Scope::parse("read").unwrap(),
        auth_time: now() - 100,
        code_challenge: None,
        grant_id: "expired-grant".into(),
        expires_at: now() - 1,
        used: false,
        purge_at: now() + 900,
        nonce: None,
        issued_at: None,
    };
    app.server.store.insert_code(&hash_secret("expired-code"), &expired).await.unwrap();
    assert_oauth_error(app.exchange_code(&client, "expired-code", None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn client_authentication_failures() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let form = [("grant_type", "client_credentials")];
    let check_401 = |response: reqwest::Response| async move {
        assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        assert_oauth_error(response, 401, "invalid_client").await
    };
    let wrong = TestClient { id: client.id.clone(), secret: Some("wrong".into()) };
    let wrong_body = check_401(app.token(&form, Some(&wrong)).await).await;
    let unknown = TestClient { id: "unknown".into(), secret: Some("wrong".into()) };
    let unknown_body = check_401(app.token(&form, Some(&unknown)).await).await;
    assert_eq!(wrong_body, unknown_body, "unknown client and wrong secret look the same");
    check_401(app.token(&form, None).await).await;
    check_401(app.token(&[("grant_type", "client_credentials"), ("client_id", &client.id)], None).await)
        .await;
    let malformed = app
        .http
        .post(app.url("/o/token"))
        .header("authorization", "Basic !!!")
        .form(&form)
        .send()
        .await
        .unwrap();
    check_401(malformed).await;

    // Both methods at once (RFC 6749 §2.3).
    let both = app
        .token(
            &[("grant_type", "client_credentials"), ("client_secret", client.secret.as_deref().unwrap())],
            Some(&client),
        )
        .await;
    assert_oauth_error(both, 400, "invalid_request").await;

    // A public client presenting a secret.
    let public = app.public_client().await;
    let with_secret = TestClient { id: public.id.clone(), secret: Some("anything".into()) };
    check_401(
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", "x")], Some(&with_secret)).await,
    )
    .await;
}

#[tokio::test]
async fn grant_type_errors() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    assert_oauth_error(
        app.token(&[("grant_type", "password")], Some(&client)).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    assert_oauth_error(app.token(&[("scope", "read")], Some(&client)).await, 400, "invalid_request").await;
    let code_only = app
        .create_client(ClientOptions {
            grant_types: vec![GrantType::AuthorizationCode],
            ..Default::default()
        })
        .await;
    assert_oauth_error(
        app.token(&[("grant_type", "client_credentials")], Some(&code_only)).await,
        400,
        "unauthorized_client",
    )
    .await;
}

#[tokio::test]
async fn client_credentials_for_confidential_clients_only() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let response =
        app.token(&[("grant_type", "client_credentials"), ("scope", "write")], Some(&client)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "write");
    assert!(body.get("refresh_token").is_none(), "RFC 6749 §4.4.3");
    let claims = verify_offline(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims.claim("sub").unwrap(), client.id.as_str());
    assert!(claims.claim("auth_time").is_none());

    let all: serde_json::Value =
        app.token(&[("grant_type", "client_credentials")], Some(&client)).await.json().await.unwrap();
    assert_eq!(all["scope"], "read write");
    // RFC 6749 §3.1: unrecognized parameters are ignored, whatever their names.
    let long_name = "\u{1e7d}".repeat(200);
    let long_value = "v".repeat(5000);
    let with_unknown = [
        ("grant_type", "client_credentials"),
        ("unknown", "1"),
        (long_name.as_str(), "x"),
        ("resource_hint", long_value.as_str()),
    ];
    assert_eq!(app.token(&with_unknown, Some(&client)).await.status(), 200);
    // A parameter the server reads is still bounded: it would be echoed or stored.
    let body = assert_oauth_error(
        app.token(&[("grant_type", "client_credentials"), ("scope", long_value.as_str())], Some(&client))
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert!(
        body["error_description"].as_str().unwrap().contains("parameter scope is longer than 4096"),
        "{body}"
    );
    assert_oauth_error(
        app.token(&[("grant_type", "client_credentials"), ("scope", "admin")], Some(&client)).await,
        400,
        "invalid_scope",
    )
    .await;

    // A public client registered (directly in the store) with the grant still cannot use it.
    let public = app
        .create_client(ClientOptions {
            public: true,
            grant_types: vec![GrantType::ClientCredentials],
            ..Default::default()
        })
        .await;
    let response = app.token(&[("grant_type", "client_credentials"), ("client_id", &public.id)], None).await;
    assert_oauth_error(response, 400, "unauthorized_client").await;
}

#[tokio::test]
async fn garbage_bodies_get_invalid_request_never_500() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let post = |content_type: &'static str, body: Vec<u8>| {
        let request = app.http.post(app.url("/o/token")).header("content-type", content_type).body(body);
        let request = request.basic_auth(&client.id, client.secret.as_deref());
        async move { request.send().await.unwrap() }
    };
    assert_oauth_error(
        post("application/json", br#"{"grant_type":"client_credentials"}"#.to_vec()).await,
        400,
        "invalid_request",
    )
    .await;
    assert_oauth_error(
        post("text/plain", b"grant_type=client_credentials".to_vec()).await,
        400,
        "invalid_request",
    )
    .await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let response = post("application/x-www-form-urlencoded", binary).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    let huge = format!("grant_type=client_credentials&pad={}", "a".repeat(200_000)).into_bytes();
    let response = post("application/x-www-form-urlencoded", huge).await;
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    let repeated = post(
        "application/x-www-form-urlencoded",
        b"grant_type=client_credentials&grant_type=client_credentials".to_vec(),
    )
    .await;
    assert_oauth_error(repeated, 400, "invalid_request").await;
    let response = app.http.get(app.url("/o/token")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST", "RFC 9110 §15.5.6");
}

#[tokio::test]
async fn signing_alg_can_be_changed() {
    let app =
        spawn_app_with(|settings| settings.signing_alg = portcullis::config::SigningAlg::Rs256, None).await;
    let client = app.confidential_client().await;
    let body: serde_json::Value =
        app.token(&[("grant_type", "client_credentials")], Some(&client)).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(josekit::jwt::decode_header(token).unwrap().claim("alg").unwrap(), "RS256");
    verify_offline(&app, token).await;
    assert_eq!(app.hello(Some(token)).await.status(), 200);
}

#[tokio::test]
async fn eddsa_signing_generates_its_key() {
    let app =
        spawn_app_with(|settings| settings.signing_alg = portcullis::config::SigningAlg::EdDsa, None).await;
    let client = app.confidential_client().await;
    let body: serde_json::Value =
        app.token(&[("grant_type", "client_credentials")], Some(&client)).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(josekit::jwt::decode_header(token).unwrap().claim("alg").unwrap(), "EdDSA");
    assert_eq!(app.hello(Some(token)).await.status(), 200);
}

#[tokio::test]
async fn repeated_client_authentication_failures_are_throttled() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let wrong = TestClient { id: client.id.clone(), secret: Some("wrong".into()) };
    for _ in 0..portcullis::throttle::FREE_FAILURES + 1 {
        assert_eq!(app.token(&[("grant_type", "client_credentials")], Some(&wrong)).await.status(), 401);
    }
    let blocked = app.token(&[("grant_type", "client_credentials")], Some(&client)).await;
    assert_eq!(blocked.status(), 429, "blocked before the secret is checked");
    assert!(blocked.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let body: serde_json::Value = blocked.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

/// Sends raw bytes and returns what the server answered (or "" if it closed).
async fn raw(app: &TestApp, request: &[u8], then_wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.server_port())).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(then_wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn slow_bodies_get_408_and_too_many_headers_431() {
    let app = spawn_app_with(|settings| settings.body_read_timeout = 1, None).await;
    // Headers promise 100 bytes of body; only 10 come.
    let started = std::time::Instant::now();
    let answer = raw(
        &app,
        b"POST /o/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("invalid_request") && answer.contains("did not arrive"));
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    let mut many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..500 {
        many.extend_from_slice(format!("X-Header-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let answer = raw(&app, &many, std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1_000_000));
    huge.extend_from_slice(b"\r\n\r\n");
    let answer = raw(&app, &huge, std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "a 1 MB header: {}", &answer[..answer.len().min(80)]);
}

#[tokio::test]
async fn too_many_or_too_long_parameters_are_invalid_requests() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("p{i}"), "1".to_owned())).collect();
    let response = app
        .http
        .post(app.url("/o/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&many)
        .send()
        .await
        .unwrap();
    let body = assert_oauth_error(response, 400, "invalid_request").await;
    assert!(body["error_description"].as_str().unwrap().contains("too many parameters"));
    let long_scope = "a ".repeat(3000);
    let response = app
        .http
        .post(app.url("/o/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("grant_type", "client_credentials"), ("scope", long_scope.as_str())])
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, 400, "invalid_request").await;
    let many_scopes: Vec<String> =
        (0..=portcullis::domain::scope::MAX_SCOPES).map(|i| format!("s{i}")).collect();
    let response = app
        .token(
            &[("grant_type", "client_credentials"), ("scope", many_scopes.join(" ").as_str())],
            Some(&client),
        )
        .await;
    let body = assert_oauth_error(response, 400, "invalid_scope").await;
    assert!(body["error_description"].as_str().unwrap().contains("at most 50"));
    let long_redirect = format!("https://app.example.com/{}", "x".repeat(5000));
    let response =
        app.authorize(&[("client_id", client.id.as_str()), ("redirect_uri", long_redirect.as_str())]).await;
    assert_eq!(response.status(), 400, "an oversized authorization request gets the error page");
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn two_authorization_headers_are_invalid_request_and_spend_nothing() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let (verifier, challenge) = pkce_pair();
    let code = app.login_and_consent(&client, Some(&challenge), &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", verifier.as_str()),
    ];
    let basic = basic_header(&client);
    // RFC 6749 §5.2: "multiple credentials" are `invalid_request`, even twice the same.
    for second in [basic.as_str(), "Basic d3Jvbmc6d3Jvbmc="] {
        let response = app
            .http
            .post(app.url("/o/token"))
            .header("authorization", basic.as_str())
            .header("authorization", second)
            .form(&form)
            .send()
            .await
            .unwrap();
        let body = assert_oauth_error(response, 400, "invalid_request").await;
        assert!(body["error_description"].as_str().unwrap().contains("more than one Authorization header"));
    }
    // A header that is not visible ASCII is malformed credentials (401, Basic challenge), not a
    // missing header that would let the body's credentials count instead.
    let mut with_body_credentials = form.to_vec();
    with_body_credentials
        .extend([("client_id", client.id.as_str()), ("client_secret", client.secret.as_deref().unwrap())]);
    let response = app
        .http
        .post(app.url("/o/token"))
        .header("authorization", reqwest::header::HeaderValue::from_bytes(b"Basic \xe9").unwrap())
        .form(&with_body_credentials)
        .send()
        .await
        .unwrap();
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_oauth_error(response, 401, "invalid_client").await;
    // The code was not spent by any of them.
    assert_eq!(app.exchange_code(&client, &code, Some(&verifier)).await.status(), 200);
}
