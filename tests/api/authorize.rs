//! The authorization endpoint: RFC 6749 §4.1.1–4.1.2.1, RFC 7636 §4.3–4.4, RFC 9207.

use crate::helpers::*;

async fn assert_error_page(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none(), "an untrusted request must never redirect");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    response.text().await.unwrap()
}

fn assert_error_redirect(response: &reqwest::Response, error: &str, app: &TestApp) {
    assert_eq!(response.status(), 302);
    let location = location(response);
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    assert_eq!(query_param(&location, "error").as_deref(), Some(error), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("state-123"));
    assert_eq!(query_param(&location, "iss").as_deref(), Some(app.address.as_str()));
    assert!(query_param(&location, "code").is_none());
}

#[tokio::test]
async fn unknown_or_missing_client_gets_an_error_page() {
    let app = spawn_app().await;
    let page = assert_error_page(
        app.authorize(&[("response_type", "code"), ("client_id", "nope"), ("redirect_uri", REDIRECT_URI)])
            .await,
    )
    .await;
    assert!(page.contains("Unknown client"));
    let page =
        assert_error_page(app.authorize(&[("response_type", "code"), ("redirect_uri", REDIRECT_URI)]).await)
            .await;
    assert!(page.contains("no client_id"));
}

#[tokio::test]
async fn unregistered_or_missing_redirect_uri_never_redirects() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    for presented in [
        "https://evil.example/callback",
        "https://app.example.com/callback/",
        "https://app.example.com/callback?x=1",
        "https://app.example.com.evil.example/callback",
        "https://evil.example@app.example.com/callback",
        "https://app.example.com/callback#fragment",
        "https://app.example.com/callback%2F..%2Fevil",
        "https://APP.example.com/callback",
        "http://app.example.com/callback",
    ] {
        let response = app
            .authorize(&[
                ("response_type", "code"),
                ("client_id", &client.id),
                ("redirect_uri", presented),
                ("state", "s"),
            ])
            .await;
        let page = assert_error_page(response).await;
        assert!(page.contains("not registered"), "{presented}");
    }
    let page =
        assert_error_page(app.authorize(&[("response_type", "code"), ("client_id", &client.id)]).await).await;
    assert!(page.contains("no redirect_uri"));
}

#[tokio::test]
async fn bad_requests_from_a_trusted_client_redirect_with_the_error_and_state() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut params = vec![
            ("client_id", client.id.clone()),
            ("redirect_uri", REDIRECT_URI.into()),
            ("state", "state-123".into()),
        ];
        params.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        params
    };
    let send = |params: Vec<(&'static str, String)>| {
        let app = &app;
        async move { app.browser.get(app.url("/o/authorize")).query(&params).send().await.unwrap() }
    };
    assert_error_redirect(
        &send(base(&[("response_type", "token")])).await,
        "unsupported_response_type",
        &app,
    );
    assert_error_redirect(&send(base(&[])).await, "invalid_request", &app);
    assert_error_redirect(
        &send(base(&[("response_type", "code"), ("scope", "read admin")])).await,
        "invalid_scope",
        &app,
    );
    assert_error_redirect(
        &send(base(&[("response_type", "code"), ("scope", "re\"ad")])).await,
        "invalid_scope",
        &app,
    );
    assert_error_redirect(
        &send(base(&[
            ("response_type", "code"),
            ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            ("code_challenge_method", "plain"),
        ]))
        .await,
        "invalid_request",
        &app,
    );
    assert_error_redirect(
        &send(base(&[
            ("response_type", "code"),
            ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
        ]))
        .await,
        "invalid_request",
        &app,
    );
    // A method alone: the client thinks it uses PKCE, so no unprotected code is issued.
    let response = send(base(&[("response_type", "code"), ("code_challenge_method", "S256")])).await;
    assert_error_redirect(&response, "invalid_request", &app);
    assert!(
        query_param(&location(&response), "error_description").unwrap().contains("without code_challenge")
    );
    assert_error_redirect(
        &send(base(&[
            ("response_type", "code"),
            ("code_challenge", "short"),
            ("code_challenge_method", "S256"),
        ]))
        .await,
        "invalid_request",
        &app,
    );
    // RFC 6749 §3.1: parameters must not repeat.
    assert_error_redirect(
        &send(base(&[("response_type", "code"), ("scope", "read"), ("scope", "write")])).await,
        "invalid_request",
        &app,
    );
    let long = "s".repeat(5000);
    let mut oversized = base(&[("response_type", "code")]);
    oversized.push(("code_challenge", long.clone()));
    assert_error_redirect(&send(oversized).await, "invalid_request", &app);
    // An oversized state goes back to the client as an error too (§4.1.2.1), without the state:
    // it is not echoed.
    let mut oversized = base(&[("response_type", "code")]);
    oversized.retain(|(name, _)| *name != "state");
    oversized.push(("state", long.clone()));
    let response = send(oversized).await;
    assert_eq!(response.status(), 302);
    let location = location(&response);
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    assert_eq!(query_param(&location, "error").as_deref(), Some("invalid_request"));
    assert!(query_param(&location, "error_description").unwrap().contains("state is longer than 4096"));
    assert!(query_param(&location, "state").is_none());
    assert!(location.len() < 1000, "nothing oversized is echoed: {} bytes", location.len());
}

#[tokio::test]
async fn unrecognized_parameters_are_ignored_however_long() {
    // RFC 6749 §3.1: the request goes on to sign-in, and the parameter is not carried along.
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let long = "u".repeat(5000);
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("state", "state-123"),
    ];
    params.push(("ui_hint", long.as_str()));
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 302);
    let location = location(&response);
    assert!(location.starts_with("/login?next="), "{location}");
    assert!(location.contains("state-123"), "{location}");
    assert!(!location.contains("ui_hint"), "{location}");
}

#[tokio::test]
async fn public_clients_must_use_pkce() {
    let app = spawn_app().await;
    let client = app.public_client().await;
    let response = app.authorize(&app.authorization_params(&client, None).to_vec()).await;
    assert_error_redirect(&response, "invalid_request", &app);
    assert!(query_param(&location(&response), "error_description").unwrap().contains("code_challenge"));
}

#[tokio::test]
async fn a_client_without_the_code_grant_is_unauthorized() {
    let app = spawn_app().await;
    let client = app
        .create_client(ClientOptions {
            grant_types: vec![portcullis::domain::GrantType::ClientCredentials],
            ..Default::default()
        })
        .await;
    let response = app.authorize(&app.authorization_params(&client, None)).await;
    assert_error_redirect(&response, "unauthorized_client", &app);
}

#[tokio::test]
async fn signing_in_returns_to_the_request_then_consent_issues_a_code() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let params = app.authorization_params(&client, None);
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 302);
    let login = location(&response);
    assert!(login.starts_with("/login?next="), "{login}");
    let next = query_param(&login, "next").unwrap();
    assert!(next.starts_with("/o/authorize?"));

    let response = app.login_with_next("admin", &app.admin_password, &next).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), next, "login returns to the authorization request");

    let consent = app.browser.get(app.url(&next)).send().await.unwrap();
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    assert!(
        html.contains("Test App")
            && html.contains("<code>read</code>")
            && html.contains("<code>write</code>")
    );
    assert!(html.contains("name=\"allow\"") && html.contains("name=\"deny\""));

    let response = app.answer_consent(&html, "allow").await;
    assert_eq!(response.status(), 303);
    // The code must not leak to third parties through Referer from the client's page.
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let location = location(&response);
    assert!(location.starts_with(&format!("{REDIRECT_URI}?code=")));
    assert_eq!(query_param(&location, "state").as_deref(), Some("state-123"));
    assert_eq!(query_param(&location, "iss").as_deref(), Some(app.address.as_str()));
    assert!(query_param(&location, "code").unwrap().len() >= 43, "at least 256 bits");
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let app = spawn_app().await;
    app.login_admin().await;
    let client = app.confidential_client().await;
    let html = app.authorize(&app.authorization_params(&client, None)).await.text().await.unwrap();
    let response = app.answer_consent(&html, "deny").await;
    assert_eq!(response.status(), 303);
    let location = location(&response);
    assert_eq!(query_param(&location, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&location, "state").as_deref(), Some("state-123"));
    assert!(query_param(&location, "code").is_none());
}

#[tokio::test]
async fn consent_without_the_csrf_token_issues_nothing() {
    let app = spawn_app().await;
    app.login_admin().await;
    let client = app.confidential_client().await;
    let html = app.authorize(&app.authorization_params(&client, None)).await.text().await.unwrap();
    let mut form: Vec<(String, String)> =
        hidden_fields(&html).into_iter().filter(|(name, _)| name != "csrf_token").collect();
    form.push(("allow".into(), "allow".into()));
    let response = app.browser.post(app.url("/o/authorize")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("location").is_none());

    form.push(("csrf_token".into(), "forged".into()));
    let response = app.browser.post(app.url("/o/authorize")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn consent_post_is_validated_again() {
    let app = spawn_app().await;
    app.login_admin().await;
    let client = app.confidential_client().await;
    let html = app.authorize(&app.authorization_params(&client, None)).await.text().await.unwrap();
    let form: Vec<(String, String)> = hidden_fields(&html)
        .into_iter()
        .map(
            |(name, value)| {
                if name == "redirect_uri" { (name, "https://evil.example/".into()) } else { (name, value) }
            },
        )
        .chain([("allow".to_owned(), "allow".to_owned())])
        .collect();
    let response = app.browser.post(app.url("/o/authorize")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn skip_consent_clients_get_a_code_at_once() {
    let app = spawn_app().await;
    app.login_admin().await;
    let client = app.create_client(ClientOptions { skip_consent: true, ..Default::default() }).await;
    let response = app.authorize(&app.authorization_params(&client, None)).await;
    assert_eq!(response.status(), 302);
    assert!(query_param(&location(&response), "code").is_some());
}

#[tokio::test]
async fn no_scope_means_the_clients_scopes_and_the_grant_says_so() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let code = app.login_and_consent(&client, None, &[]).await;
    let body: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    assert_eq!(body["scope"], "read write");
    let code = app.login_and_consent(&client, None, &[("scope", "read")]).await;
    let body: serde_json::Value = app.exchange_code(&client, &code, None).await.json().await.unwrap();
    assert_eq!(body["scope"], "read");
}

#[tokio::test]
async fn request_objects_request_uris_and_other_response_modes_are_refused() {
    // Discovery says so (`discovery_carries_the_openid_provider_metadata`).
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let send = |extra: Vec<(&'static str, String)>| {
        let app = &app;
        let mut params = vec![
            ("response_type", "code".to_owned()),
            ("client_id", client.id.clone()),
            ("redirect_uri", REDIRECT_URI.into()),
            ("state", "state-123".into()),
        ];
        params.extend(extra);
        async move { app.browser.get(app.url("/o/authorize")).query(&params).send().await.unwrap() }
    };
    // OIDC Core §6.1 and §6.2: an OP that does not support them MUST answer these errors, not
    // ignore the parameter (the request it stands for is not the one that would be served). A
    // request object is often longer than a parameter may be: still this error.
    let object = format!("eyJhbGciOiJub25lIn0.{}.", "e".repeat(6000));
    for object in ["eyJhbGciOiJub25lIn0.e30.", object.as_str()] {
        assert_error_redirect(&send(vec![("request", object.into())]).await, "request_not_supported", &app);
    }
    assert_error_redirect(
        &send(vec![("request_uri", "urn:ietf:params:oauth:request_uri:abc".into())]).await,
        "request_uri_not_supported",
        &app,
    );
    // The code would come back in the query whatever the client waits for.
    for mode in ["fragment", "form_post", "query.jwt"] {
        let response = send(vec![("response_mode", mode.into())]).await;
        assert_error_redirect(&response, "invalid_request", &app);
        assert!(query_param(&location(&response), "error_description").unwrap().contains("response_mode"));
    }
    // response_mode=query is what the server does anyway: on to the sign-in page.
    let response = send(vec![("response_mode", "query".into())]).await;
    assert_eq!(response.status(), 302);
    assert!(location(&response).contains("/login?next="), "{}", location(&response));
}

#[tokio::test]
async fn a_native_apps_loopback_redirect_uri_may_use_any_port() {
    let app = spawn_app().await;
    let client = app
        .create_client(ClientOptions {
            public: true,
            skip_consent: true,
            redirect_uris: vec!["http://127.0.0.1/callback"],
            ..ClientOptions::default()
        })
        .await;
    app.login_admin().await;
    let (verifier, challenge) = pkce_pair();
    let authorize = |redirect_uri: &'static str| {
        let app = &app;
        let params = [
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", redirect_uri),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        async move { app.authorize(&params).await }
    };
    // RFC 8252 §7.3: the app listens on the port the OS gave it.
    let response = authorize("http://127.0.0.1:49152/callback").await;
    assert_eq!(response.status(), 302);
    let location = location(&response);
    assert!(location.starts_with("http://127.0.0.1:49152/callback?code="), "{location}");
    let code = query_param(&location, "code").unwrap();
    // The code is bound to the URI the request used, port included (RFC 6749 §4.1.3).
    let exchange = |redirect_uri: &'static str| {
        let app = &app;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("client_id", client.id.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        async move { app.token(&form, None).await }
    };
    assert_oauth_error(exchange("http://127.0.0.1/callback").await, 400, "invalid_grant").await;
    assert_oauth_error(exchange("http://127.0.0.1:49153/callback").await, 400, "invalid_grant").await;
    assert_eq!(exchange("http://127.0.0.1:49152/callback").await.status(), 200);
    // Only the port may differ: another path or host is an unregistered redirect URI (a page).
    for unregistered in [
        "http://127.0.0.1:49152/other",
        "http://localhost:49152/callback",
        "https://127.0.0.1:49152/callback",
    ] {
        assert_error_page(authorize(unregistered).await).await;
    }
}

#[tokio::test]
async fn authorization_requests_may_be_posted_as_forms() {
    // OpenID Connect Core §3.1.2.1: the authorization endpoint MUST support POST (form
    // serialization) as well as GET.
    let app = spawn_app().await;
    let client = app.public_client().await;
    let (verifier, challenge) = pkce_pair();
    let params = app.authorization_params(&client, Some(&challenge));
    let post = |params: Vec<(&str, &str)>| app.browser.post(app.url("/o/authorize")).form(&params).send();
    // The answer is a 303 to the same request by GET: a browser posting from the relying
    // party's site sends no SameSite=Lax session cookie, and the GET it follows with does.
    let as_get = |response: reqwest::Response| {
        assert_eq!(response.status(), 303);
        let next = location(&response);
        assert!(next.starts_with("/o/authorize?"), "{next}");
        assert_eq!(query_param(&next, "code_challenge").as_deref(), Some(challenge.as_str()));
        assert_eq!(query_param(&next, "state").as_deref(), Some("state-123"));
        app.browser.get(app.url(&next)).send()
    };

    let response = as_get(post(params.clone()).await.unwrap()).await.unwrap();
    assert_eq!(response.status(), 302);
    assert!(location(&response).starts_with("/login?next="), "signed out: the sign-in detour");
    app.login_admin().await;
    let response = as_get(post(params.clone()).await.unwrap()).await.unwrap();
    assert_eq!(response.status(), 200, "the consent page");
    let html = response.text().await.unwrap();
    let response = app.answer_consent(&html, "allow").await;
    let code = query_param(&location(&response), "code").expect("a code");
    let response = app.exchange_code(&client, &code, Some(&verifier)).await;
    assert_eq!(response.status(), 200, "the posted request's PKCE binds the code");

    // A value over 4096 characters that the server does not read is ignored, as in a query, and
    // left out of the GET; one it reads is refused at once, as the GET would refuse it.
    let long = "x".repeat(5000);
    let mut with_long = params.clone();
    with_long.push(("ui_hint", &long));
    let response = post(with_long).await.unwrap();
    assert!(!location(&response).contains("ui_hint"));
    let response = as_get(response).await.unwrap();
    assert_eq!(response.status(), 302, "a code (consent is remembered)");
    assert!(query_param(&location(&response), "code").is_some());
    let mut with_long_state = app.authorization_params(&client, Some(&challenge));
    with_long_state.retain(|(name, _)| *name != "state");
    with_long_state.push(("state", &long));
    let response = post(with_long_state).await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(query_param(&location(&response), "error").as_deref(), Some("invalid_request"));

    // Its errors are the GET's, at once: a page before the client is known, a redirect after.
    let page =
        assert_error_page(post(vec![("response_type", "code"), ("client_id", "nope")]).await.unwrap()).await;
    assert!(page.contains("Unknown client"));
    let mut bad = params.clone();
    bad[0] = ("response_type", "token");
    assert_error_redirect(&post(bad).await.unwrap(), "unsupported_response_type", &app);
    let response = app
        .browser
        .post(app.url("/o/authorize"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let page = assert_error_page(response).await;
    assert!(page.contains("application/x-www-form-urlencoded"), "{page}");

    // A consent answer without its csrf_token is still refused, not read as a new request.
    let mut forged = params.clone();
    forged.push(("allow", "allow"));
    let response = post(forged).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("location").is_none());
}
