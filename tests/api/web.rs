//! Login, logout, sessions, CSRF and the headers every page carries.

use crate::helpers::*;

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("set-cookie").iter().map(|value| value.to_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn login_sets_a_hardened_session_cookie_and_a_fresh_id() {
    let app = spawn_app().await;
    let first = app.login("admin", &app.admin_password).await;
    assert_eq!(first.status(), 303);
    let cookie = set_cookies(&first).into_iter().find(|c| c.starts_with("portcullis_session=")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"));
    assert!(!cookie.contains("Secure"), "http issuer");
    let second = app.login("admin", &app.admin_password).await;
    let cookie2 = set_cookies(&second).into_iter().find(|c| c.starts_with("portcullis_session=")).unwrap();
    assert_ne!(cookie, cookie2, "a new session id at every login (no fixation)");
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_issuer_is_https() {
    let app =
        spawn_app_with(|settings| settings.issuer = Some("https://auth.example.com".into()), None).await;
    let page = app.browser.get(format!("http://127.0.0.1:{}/login", app.server_port())).send().await.unwrap();
    let cookies = set_cookies(&page);
    assert!(cookies.iter().all(|cookie| cookie.contains("; Secure")), "{cookies:?}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = spawn_app().await;
    app.create_user("alice").await;
    let wrong = app.login("alice", "not the password").await;
    assert_eq!(wrong.status(), 401);
    let wrong = wrong.text().await.unwrap();
    let unknown = app.login("nobody", "not the password").await;
    assert_eq!(unknown.status(), 401);
    let unknown = unknown.text().await.unwrap();
    assert!(wrong.contains("Wrong username or password.") && unknown.contains("Wrong username or password."));
    assert_eq!(app.login("alice", PASSWORD).await.status(), 303);
}

#[tokio::test]
async fn login_requires_its_csrf_token() {
    let app = spawn_app().await;
    let _ = app.browser.get(app.url("/login")).send().await.unwrap();
    let response = app
        .browser
        .post(app.url("/login"))
        .form(&[("username", "admin"), ("password", app.admin_password.as_str()), ("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(set_cookies(&response).iter().all(|cookie| !cookie.starts_with("portcullis_session=")));
    // The page's own form has no field to ignore: an oversized one is refused, not read as absent.
    let page = app.browser.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_field(&page, "csrf_token").unwrap();
    let long = "a".repeat(5000);
    let response = app
        .browser
        .post(app.url("/login"))
        .form(&[("username", long.as_str()), ("password", "x"), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("parameter username is longer than 4096 characters"));
}

#[tokio::test]
async fn next_never_leaves_the_site() {
    let app = spawn_app().await;
    for next in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
    ] {
        let response = app.login_with_next("admin", &app.admin_password, next).await;
        assert_eq!(response.status(), 303);
        assert_eq!(location(&response), "/", "{next}");
    }
}

#[tokio::test]
async fn logout_needs_csrf_and_ends_the_session() {
    let app = spawn_app().await;
    app.login_admin().await;
    let client = app.confidential_client().await;
    let home = app.browser.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Signed in as"));
    let csrf = hidden_field(&home, "csrf_token").unwrap();

    let forged = app.browser.post(app.url("/logout")).form(&[("csrf_token", "forged")]).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        app.authorize(&app.authorization_params(&client, None)).await.status(),
        200,
        "still signed in"
    );

    let response =
        app.browser.post(app.url("/logout")).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let response = app.authorize(&app.authorization_params(&client, None)).await;
    assert_eq!(response.status(), 302);
    assert!(location(&response).starts_with("/login"));
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    app.login_admin().await;
    let consent = app.authorize(&app.authorization_params(&client, None)).await;
    let error_page = app.authorize(&[("client_id", "nope")]).await;
    let login = app.http.get(app.url("/login")).send().await.unwrap();
    for response in [consent, error_page, login] {
        let headers = response.headers();
        assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn user_input_is_escaped_in_pages() {
    let app = spawn_app().await;
    app.login_admin().await;
    let client = app.confidential_client().await;
    let mut params = app.authorization_params(&client, None);
    params.retain(|(name, _)| *name != "state");
    params.push(("state", "\"><script>alert(1)</script>"));
    let html = app.authorize(&params).await.text().await.unwrap();
    assert!(!html.contains("<script>"));
    let fields = hidden_fields(&html);
    assert!(
        fields.contains(&("state".into(), "\"><script>alert(1)</script>".into())),
        "the state survives the round trip"
    );
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_throttled_with_retry_after() {
    let app = spawn_app().await;
    app.create_user("victim").await;
    for _ in 0..portcullis::throttle::FREE_FAILURES + 1 {
        assert_eq!(app.login("victim", "guess").await.status(), 401);
    }
    let blocked = app.login("victim", PASSWORD).await;
    assert_eq!(blocked.status(), 429, "blocked even with the right password");
    let retry_after: u64 = blocked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after));
    assert!(blocked.text().await.unwrap().contains("Too many failed sign-ins"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = app.login("victim", PASSWORD).await;
        if response.status() == 303 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(std::time::Instant::now() < deadline, "the block never ended");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
