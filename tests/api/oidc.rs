//! OpenID Connect Core: ID tokens, UserInfo, prompt and max_age, remembered consent.

use std::sync::Arc;

use josekit::jwk::JwkSet;
use josekit::jws::{ES256, RS256};
use portcullis::domain::{Session, User};
use portcullis::secrets::{hash_secret, random_secret};
use portcullis::startup::now;

use crate::helpers::*;

/// Verifies an ID token against the JWKS and returns its header alg and claims.
async fn verify_id_token(
    app: &TestApp,
    id_token: &str,
) -> (String, serde_json::Map<String, serde_json::Value>) {
    let jwks = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().bytes().await.unwrap();
    let set = JwkSet::from_bytes(&jwks).unwrap();
    let header = josekit::jwt::decode_header(id_token).unwrap();
    let kid = header.claim("kid").unwrap().as_str().unwrap();
    let jwk = set.get(kid)[0];
    let alg = header.claim("alg").unwrap().as_str().unwrap().to_owned();
    let (payload, _) = match alg.as_str() {
        "RS256" => {
            josekit::jwt::decode_with_verifier(id_token, &RS256.verifier_from_jwk(jwk).unwrap()).unwrap()
        }
        "ES256" => {
            josekit::jwt::decode_with_verifier(id_token, &ES256.verifier_from_jwk(jwk).unwrap()).unwrap()
        }
        other => panic!("unexpected alg {other}"),
    };
    (alg, payload.claims_set().clone())
}

fn oidc_client() -> ClientOptions {
    ClientOptions { scope: "openid profile email read", ..ClientOptions::default() }
}

#[tokio::test]
async fn the_code_flow_with_openid_returns_a_valid_id_token() {
    let app = spawn_app().await;
    let client = app.create_client(oidc_client()).await;
    let (verifier, challenge) = pkce_pair();
    let code = app
        .login_and_consent(
            &client,
            Some(&challenge),
            &[("scope", "openid profile"), ("nonce", "n-0S6_WzA2Mj")],
        )
        .await;
    let tokens: serde_json::Value =
        app.exchange_code(&client, &code, Some(&verifier)).await.json().await.unwrap();
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let (alg, claims) = verify_id_token(&app, id_token).await;
    assert_eq!(alg, "RS256", "RS256 unless the client registered another");
    let admin = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    assert_eq!(claims["iss"], app.address.as_str());
    assert_eq!(claims["sub"], admin.id.as_str());
    assert_eq!(claims["aud"], client.id.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    let now = now();
    assert!(claims["exp"].as_i64().unwrap() > now && claims["iat"].as_i64().unwrap() <= now);
    assert!(claims["auth_time"].as_i64().unwrap() <= now);
    let expected_at_hash = portcullis::oauth::oidc::at_hash(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["at_hash"], expected_at_hash.as_str());

    // Refreshing returns a new ID token, without nonce, same auth_time.
    let refreshed: serde_json::Value =
        app.refresh(&client, tokens["refresh_token"].as_str().unwrap(), None).await.json().await.unwrap();
    let (_, refreshed_claims) = verify_id_token(&app, refreshed["id_token"].as_str().unwrap()).await;
    assert!(refreshed_claims.get("nonce").is_none());
    assert_eq!(refreshed_claims["auth_time"], claims["auth_time"]);
    assert_eq!(refreshed_claims["sub"], claims["sub"]);
}

#[tokio::test]
async fn no_openid_scope_no_id_token_and_the_clients_alg_is_used() {
    let app = spawn_app().await;
    let client = app.create_client(oidc_client()).await;
    let code = app.login_and_consent(&client, None, &[("scope", "read")]).await;
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    assert!(tokens.get("id_token").is_none());

    let es256 = app.create_client(oidc_client()).await;
    let mut stored = app.server.store.client(&es256.id).await.unwrap().unwrap();
    stored.id_token_signed_response_alg = Some(portcullis::keys::Algorithm::ES256);
    app.server.store.replace_client(&stored).await.unwrap();
    let code = app.login_and_consent(&es256, None, &[("scope", "openid")]).await;
    let tokens: serde_json::Value = app.exchange_code(&es256, &code, None).await.json().await.unwrap();
    let (alg, _) = verify_id_token(&app, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(alg, "ES256");
}

#[tokio::test]
async fn userinfo_releases_claims_by_scope() {
    let app = spawn_app().await;
    let mut admin = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    admin.email = Some("admin@example.com".into());
    admin.name = Some("Ada Admin".into());
    app.server.store.delete_user("admin").await.unwrap();
    app.server.store.insert_user(&admin).await.unwrap();
    let client = app.create_client(oidc_client()).await;

    let code = app.login_and_consent(&client, None, &[("scope", "openid profile email")]).await;
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    for request in [app.http.get(app.url("/o/userinfo")), app.http.post(app.url("/o/userinfo"))] {
        let response = request.bearer_auth(access).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let claims: serde_json::Value = response.json().await.unwrap();
        assert_eq!(claims["sub"], admin.id.as_str());
        assert_eq!(claims["preferred_username"], "admin");
        assert_eq!(claims["name"], "Ada Admin");
        assert_eq!(claims["email"], "admin@example.com");
        assert_eq!(claims["email_verified"], false);
    }

    let code = app.login_and_consent(&client, None, &[("scope", "openid")]).await;
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    let claims: serde_json::Value = app
        .http
        .get(app.url("/o/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claims, serde_json::json!({ "sub": admin.id }), "only sub without profile and email");

    let code = app.login_and_consent(&client, None, &[("scope", "read")]).await;
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    let response = app
        .http
        .get(app.url("/o/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));

    // RFC 6750 §2.2: a POST may carry the token in its form body instead.
    let response =
        app.http.post(app.url("/o/userinfo")).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let claims: serde_json::Value = response.json().await.unwrap();
    assert_eq!(claims["sub"], admin.id.as_str());
    let response =
        app.http.post(app.url("/o/userinfo")).form(&[("access_token", "garbage")]).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    // RFC 6750 §2: a client MUST NOT send the token two ways; §3.1 makes it invalid_request.
    let response = app
        .http
        .post(app.url("/o/userinfo"))
        .bearer_auth(access)
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_request"));
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "invalid_request");

    let response = app.http.get(app.url("/o/userinfo")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(app.revoke(&client, access, None).await.status(), 200);
    let response = app.http.get(app.url("/o/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(response.status(), 401, "a revoked token gets no claims");

    // Valid tokens whose subject is no user are invalid_token, and say why.
    let userinfo_refusal = |access: String| {
        let app = &app;
        async move {
            let response = app.http.get(app.url("/o/userinfo")).bearer_auth(access).send().await.unwrap();
            assert_eq!(response.status(), 401);
            assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_token");
            body["error_description"].as_str().unwrap().to_owned()
        }
    };
    let service = app
        .create_client(ClientOptions {
            grant_types: vec![portcullis::domain::GrantType::ClientCredentials],
            ..oidc_client()
        })
        .await;
    let description =
        userinfo_refusal(app.client_credentials_token(&service, Some("openid read")).await).await;
    assert!(description.contains("client_credentials"), "{description}");

    let code = app.login_and_consent(&client, None, &[("scope", "openid")]).await;
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    // A deleted client's tokens get nothing either (introspection calls them inactive too).
    let other = app.create_client(oidc_client()).await;
    let code = app.login_and_consent(&other, None, &[("scope", "openid")]).await;
    let tokens: serde_json::Value = app.exchange_code(&other, &code, None).await.json().await.unwrap();
    let response = app.http.get(app.url("/o/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap());
    assert_eq!(response.send().await.unwrap().status(), 200);
    let now = portcullis::startup::now();
    app.server.store.delete_client(&other.id, now, now + 900).await.unwrap();
    let description = userinfo_refusal(tokens["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(description, "the token's client has been deleted");

    app.server.store.delete_user("admin").await.unwrap();
    let description = userinfo_refusal(access).await;
    assert!(description.contains("no longer exists"), "{description}");
}

fn redirect_error(response: &reqwest::Response) -> Option<String> {
    assert_eq!(response.status(), 302);
    let location = location(response);
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("state-123"));
    query_param(&location, "error")
}

#[tokio::test]
async fn prompt_none_never_shows_a_page() {
    let app = spawn_app().await;
    let client = app.create_client(oidc_client()).await;
    let mut params = app.authorization_params(&client, None);
    params.push(("scope", "openid"));
    params.push(("prompt", "none"));
    assert_eq!(redirect_error(&app.authorize(&params).await).as_deref(), Some("login_required"));
    app.login_admin().await;
    assert_eq!(redirect_error(&app.authorize(&params).await).as_deref(), Some("consent_required"));
    // After one approval, prompt=none succeeds silently.
    app.login_and_consent(&client, None, &[("scope", "openid")]).await;
    let response = app.authorize(&params).await;
    assert_eq!(redirect_error(&response), None);
    assert!(query_param(&location(&response), "code").is_some());
}

#[tokio::test]
async fn consent_is_remembered_for_subsets_unless_prompt_consent() {
    let app = spawn_app().await;
    let client = app.create_client(oidc_client()).await;
    app.login_and_consent(&client, None, &[("scope", "openid profile")]).await;
    let ask = |scope: &'static str, prompt: Option<&'static str>| {
        let mut params = app.authorization_params(&client, None);
        params.push(("scope", scope));
        if let Some(prompt) = prompt {
            params.push(("prompt", prompt));
        }
        let app = &app;
        async move { app.authorize(&params).await }
    };
    let same = ask("openid profile", None).await;
    assert_eq!(same.status(), 302, "the same scopes skip the consent page");
    assert!(query_param(&location(&same), "code").is_some());
    let subset = ask("openid", None).await;
    assert!(query_param(&location(&subset), "code").is_some(), "a subset skips it too");
    assert_eq!(ask("openid email", None).await.status(), 200, "a new scope asks again");
    assert_eq!(ask("openid", Some("consent")).await.status(), 200, "prompt=consent always asks");
    // Another user has not consented.
    app.create_user("bob").await;
    let response = app.login("bob", PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(ask("openid", None).await.status(), 200);
}

#[tokio::test]
async fn prompt_login_and_max_age_make_the_user_sign_in_again() {
    let app = spawn_app().await;
    let client = app.create_client(ClientOptions { skip_consent: true, ..oidc_client() }).await;
    // A session that signed in 100 s ago, set up directly.
    let session_id = random_secret();
    let admin: User = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    let session = Session {
        user_id: admin.id.clone(),
        auth_time: now() - 100,
        csrf_token: random_secret(),
        expires_at: now() + 3600,
        user_generation: 0,
    };
    app.server.store.insert_session(&hash_secret(&session_id), &session).await.unwrap();
    let jar = Arc::new(reqwest::cookie::Jar::default());
    jar.add_cookie_str(&format!("portcullis_session={session_id}"), &app.address.parse().unwrap());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = |extra: &[(&'static str, &'static str)]| {
        let mut params = app.authorization_params(&client, None);
        params.push(("scope", "openid"));
        params.extend_from_slice(extra);
        let request = browser.get(app.url("/o/authorize")).query(&params);
        async move { request.send().await.unwrap() }
    };

    let fresh_enough = authorize(&[("max_age", "3600")]).await;
    assert!(query_param(&location(&fresh_enough), "code").is_some());
    for extra in [&[("max_age", "10")][..], &[("prompt", "login")][..], &[("prompt", "login consent")][..]] {
        let response = authorize(extra).await;
        assert_eq!(response.status(), 302);
        let login = location(&response);
        assert!(login.starts_with("/login?next="), "{login}");
        let next = query_param(&login, "next").unwrap();
        assert!(
            !next.contains("max_age") && !next.contains("prompt=login"),
            "the return does not loop: {next}"
        );
    }
    assert_eq!(
        redirect_error(&authorize(&[("max_age", "10"), ("prompt", "none")]).await).as_deref(),
        Some("login_required")
    );

    let code = {
        let response = authorize(&[]).await;
        query_param(&location(&response), "code").unwrap()
    };
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    let (_, claims) = verify_id_token(&app, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["auth_time"], session.auth_time, "auth_time is the sign-in time, not the request's");
}

#[tokio::test]
async fn bad_prompt_and_max_age_values_are_invalid_requests() {
    let app = spawn_app().await;
    let client = app.create_client(oidc_client()).await;
    for extra in [("prompt", "none login"), ("prompt", "sometimes"), ("max_age", "-5"), ("max_age", "soon")] {
        let mut params = app.authorization_params(&client, None);
        params.push(extra);
        assert_eq!(
            redirect_error(&app.authorize(&params).await).as_deref(),
            Some("invalid_request"),
            "{extra:?}"
        );
    }
}

#[tokio::test]
async fn discovery_carries_the_openid_provider_metadata() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .http
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["userinfo_endpoint"], app.url("/o/userinfo"));
    assert_eq!(doc["end_session_endpoint"], app.url("/o/logout"));
    assert_eq!(doc["subject_types_supported"], serde_json::json!(["public"]));
    assert!(doc["id_token_signing_alg_values_supported"].as_array().unwrap().contains(&"RS256".into()));
    for scope in ["openid", "profile", "email"] {
        assert!(doc["scopes_supported"].as_array().unwrap().contains(&scope.into()));
    }
    // What /o/authorize refuses (`request_objects_request_uris_and_other_response_modes_are_refused`).
    assert_eq!(doc["request_parameter_supported"], false);
    assert_eq!(doc["request_uri_parameter_supported"], false);
    assert_eq!(doc["response_modes_supported"], serde_json::json!(["query"]));
    assert!(doc["claims_supported"].as_array().unwrap().contains(&"nonce".into()));
}

async fn rp_with_logout(app: &TestApp) -> (TestClient, String) {
    let client = app.create_client(oidc_client()).await;
    let mut stored = app.server.store.client(&client.id).await.unwrap().unwrap();
    stored.post_logout_redirect_uris =
        vec![portcullis::domain::RedirectUri::parse("https://app.example.com/bye").unwrap()];
    app.server.store.replace_client(&stored).await.unwrap();
    let code = app.login_and_consent(&client, None, &[("scope", "openid")]).await;
    let tokens: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    (client, tokens["id_token"].as_str().unwrap().to_owned())
}

async fn signed_in(app: &TestApp) -> bool {
    app.browser.get(app.url("/")).send().await.unwrap().text().await.unwrap().contains("Signed in as")
}

/// GET /o/logout with `params`, in the browser.
async fn logout(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Response {
    app.browser.get(app.url("/o/logout")).query(params).send().await.unwrap()
}

#[tokio::test]
async fn rp_initiated_logout_with_a_valid_hint_signs_out_and_returns_with_state() {
    let app = spawn_app().await;
    let (_, id_token) = rp_with_logout(&app).await;
    assert!(signed_in(&app).await);
    let response = logout(
        &app,
        &[
            ("id_token_hint", id_token.as_str()),
            ("post_logout_redirect_uri", "https://app.example.com/bye"),
            ("state", "s1"),
        ],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "https://app.example.com/bye?state=s1");
    assert!(!signed_in(&app).await);
}

#[tokio::test]
async fn rp_initiated_logout_by_post_is_answered_as_its_get() {
    // RP-Initiated Logout §2: the OP MUST support POST. A relying party's page posts it, so the
    // SameSite=Lax session cookie does not come along: answering it there would find no one
    // signed in and report a sign-out that did not happen. A 303 turns it into the GET, which
    // carries the cookie.
    let app = spawn_app().await;
    let (_, id_token) = rp_with_logout(&app).await;
    let form = [
        ("id_token_hint", id_token.as_str()),
        ("post_logout_redirect_uri", "https://app.example.com/bye"),
        ("state", "s1"),
    ];
    let cookieless = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = cookieless.post(app.url("/o/logout")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let get = location(&response);
    assert!(get.starts_with("/o/logout?"), "{get}");
    assert_eq!(query_param(&get, "id_token_hint").as_deref(), Some(id_token.as_str()));
    assert!(signed_in(&app).await, "nothing is done without the session");

    let response = app.browser.get(app.url(&get)).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "https://app.example.com/bye?state=s1");
    assert!(!signed_in(&app).await);
}

#[tokio::test]
async fn rp_initiated_logout_without_a_hint_asks_first_and_never_redirects_to_unregistered_uris() {
    let app = spawn_app().await;
    let (client, _) = rp_with_logout(&app).await;
    let unregistered = logout(
        &app,
        &[("client_id", client.id.as_str()), ("post_logout_redirect_uri", "https://evil.example/")],
    )
    .await;
    assert_eq!(unregistered.status(), 400);
    assert!(unregistered.headers().get("location").is_none());
    assert!(signed_in(&app).await, "nothing happened");

    let confirm = logout(
        &app,
        &[("client_id", client.id.as_str()), ("post_logout_redirect_uri", "https://app.example.com/bye")],
    )
    .await;
    assert_eq!(confirm.status(), 200, "without a hint the user confirms");
    let html = confirm.text().await.unwrap();
    assert!(signed_in(&app).await);
    let forged: Vec<(String, String)> = hidden_fields(&html)
        .into_iter()
        .map(|(name, value)| if name == "csrf_token" { (name, "forged".into()) } else { (name, value) })
        .collect();
    assert_eq!(app.browser.post(app.url("/o/logout")).form(&forged).send().await.unwrap().status(), 403);
    assert!(signed_in(&app).await, "a cross-site form cannot sign the user out");
    // Without a csrf_token it is a relying party's request: the user is asked, as by a GET.
    let unconfirmed: Vec<(String, String)> =
        hidden_fields(&html).into_iter().filter(|(name, _)| name != "csrf_token").collect();
    let response = app.browser.post(app.url("/o/logout")).form(&unconfirmed).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let response = app.browser.get(app.url(&location(&response))).send().await.unwrap();
    assert_eq!(response.status(), 200, "the confirmation page");
    assert!(signed_in(&app).await);
    // A relying party posts here too: a parameter it does not read is ignored, however long
    // (RFC 6749 §3.1).
    let mut fields = hidden_fields(&html);
    fields.push(("rp_extension".into(), "u".repeat(5000)));
    let response = app.browser.post(app.url("/o/logout")).form(&fields).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "https://app.example.com/bye");
    assert!(!signed_in(&app).await);
}

#[tokio::test]
async fn rp_initiated_logout_refuses_a_hint_this_server_did_not_issue() {
    let app = spawn_app().await;
    let (client, id_token) = rp_with_logout(&app).await;
    // An access token is signed by this server too, but is not an ID token.
    let access =
        app.tokens_for(&app.confidential_client().await).await["access_token"].as_str().unwrap().to_owned();
    let mut tampered = id_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for hint in ["garbage", "a.b.c", tampered.as_str(), access.as_str()] {
        // With the client named and its registered redirect: were the hint taken as absent,
        // this would be a redirect (RP-Initiated Logout §4: "MUST NOT perform post-logout
        // redirection" when validation fails).
        let response = logout(
            &app,
            &[
                ("id_token_hint", hint),
                ("client_id", client.id.as_str()),
                ("post_logout_redirect_uri", "https://app.example.com/bye"),
            ],
        )
        .await;
        assert_eq!(response.status(), 400, "{hint:.20}");
        assert!(response.headers().get("location").is_none());
        assert!(response.text().await.unwrap().contains("not an ID token this server issued"));
        assert!(signed_in(&app).await, "nothing happened");
    }
    // POSTed, the refusal comes at once, not after a 303 to the GET.
    let response = app
        .browser
        .post(app.url("/o/logout"))
        .form(&[("id_token_hint", "garbage"), ("post_logout_redirect_uri", "https://app.example.com/bye")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    assert!(signed_in(&app).await);
    let response = logout(
        &app,
        &[("id_token_hint", id_token.as_str()), ("post_logout_redirect_uri", "https://app.example.com/bye")],
    )
    .await;
    assert_eq!(response.status(), 303, "the real hint still works");
}

#[tokio::test]
async fn id_token_hint_at_authorization_names_the_user_the_client_expects() {
    let app = spawn_app().await;
    // Signed in as admin, consent given: the admin's ID token is the hint.
    let (client, admin_id_token) = rp_with_logout(&app).await;
    let params = |hint: &str, prompt: Option<&'static str>| {
        let mut params = vec![
            ("response_type", "code".to_owned()),
            ("client_id", client.id.clone()),
            ("redirect_uri", REDIRECT_URI.to_owned()),
            ("state", "state-123".to_owned()),
            ("scope", "openid".to_owned()),
            ("id_token_hint", hint.to_owned()),
        ];
        params.extend(prompt.map(|prompt| ("prompt", prompt.to_owned())));
        params
    };
    let authorize = |params: Vec<(&'static str, String)>| {
        let app = &app;
        async move { app.browser.get(app.url("/o/authorize")).query(&params).send().await.unwrap() }
    };
    let error_of = |response: &reqwest::Response| {
        assert_eq!(response.status(), 302);
        let location = location(response);
        assert!(location.starts_with(REDIRECT_URI), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("state-123"));
        query_param(&location, "error")
    };
    // The hinted user is the signed-in one: silent re-authentication works.
    let response = authorize(params(&admin_id_token, Some("none"))).await;
    assert_eq!(error_of(&response), None);
    assert!(query_param(&location(&response), "code").is_some());
    // A hint this server did not issue.
    let response = authorize(params("a.b.c", Some("none"))).await;
    assert_eq!(error_of(&response).as_deref(), Some("invalid_request"));

    // Another user signs in in this browser.
    app.create_user("bob").await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 303);
    // OIDC Core §3.1.2.1: with prompt=none, no code for a user other than the hinted one.
    let response = authorize(params(&admin_id_token, Some("none"))).await;
    assert_eq!(error_of(&response).as_deref(), Some("login_required"));
    // Interactive: sign in again, as whoever the user chooses; the return drops the hint, so
    // signing in as bob again does not loop.
    let response = authorize(params(&admin_id_token, None)).await;
    assert_eq!(response.status(), 302);
    let login = location(&response);
    assert!(login.starts_with("/login?next="), "{login}");
    let next = query_param(&format!("http://x{login}"), "next").unwrap();
    assert!(!next.contains("id_token_hint") && next.contains("scope=openid"), "{next}");
    let response = app.login_with_next("bob", PASSWORD, &next).await;
    assert_eq!(location(&response), next);
    let response = app.browser.get(app.url(&next)).send().await.unwrap();
    assert_eq!(response.status(), 200, "bob's consent page, not the sign-in again");
}

#[tokio::test]
async fn login_hint_fills_in_the_username_on_the_sign_in_page() {
    let app = spawn_app().await;
    let client = app.create_client(oidc_client()).await;
    let sign_in_page = |hint: Option<String>| {
        let app = &app;
        let client = &client;
        async move {
            let mut params = app.authorization_params(client, None);
            params.push(("scope", "openid"));
            if let Some(hint) = &hint {
                params.push(("login_hint", hint));
            }
            let response = app.authorize(&params).await;
            let login = location(&response);
            assert!(login.starts_with("/login?next="), "{login}");
            let page = app.browser.get(app.url(&login)).send().await.unwrap();
            assert_eq!(page.status(), 200);
            page.text().await.unwrap()
        }
    };
    let page = sign_in_page(Some("ada<b>\"".into())).await;
    assert!(page.contains(r#"value="ada&#60;b&#62;&#34;""#), "filled in, escaped: {page}");
    assert!(page.contains(r#"current-password" required autofocus"#), "the password field has the focus");
    // Only a suggestion that could be a username.
    for hint in [None, Some("x".repeat(151)), Some("a\u{7}b".into())] {
        let page = sign_in_page(hint).await;
        assert!(
            page.contains(r#"name="username" autocomplete="username" required autofocus value="""#),
            "{page}"
        );
    }
}
