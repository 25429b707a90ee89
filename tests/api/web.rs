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
    let sign_in = || app.login("victim", PASSWORD);
    blocked_then(sign_in().await, "Too many failed sign-ins", sign_in, 303).await;
}

/// Asserts that `blocked` (sent with the right password) is a 429 with a `Retry-After` of 1 or
/// 2 s whose page says `says`; then sends `retry()` until the block ends (at most 5 s) and
/// asserts that the answer is `then`.
async fn blocked_then<F, Fut>(blocked: reqwest::Response, says: &str, retry: F, then: u16)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    assert_eq!(blocked.status(), 429, "blocked even with the right password");
    let retry_after: u64 = blocked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after));
    assert!(blocked.text().await.unwrap().contains(says));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = retry().await;
        if response.status() == then {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(std::time::Instant::now() < deadline, "the block never ended");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A signed-in user replaces their password on `/account/password`: the current one is asked
/// for, every bad form changes nothing, and a change signs every other browser out but keeps
/// this one signed in.
#[tokio::test]
async fn changing_the_password_ends_the_other_sessions() {
    let app = spawn_app().await;
    app.create_user("erin").await;
    let (here, status) = sign_in(&app.address, "erin", PASSWORD).await;
    assert_eq!(status, 303);
    let (elsewhere, status) = sign_in(&app.address, "erin", PASSWORD).await;
    assert_eq!(status, 303);
    let signed_in = |browser: &reqwest::Client| {
        let request = browser.get(app.url("/o/authorized_tokens/"));
        async move { request.send().await.unwrap().status() == 200 }
    };
    let page = here.get(app.url("/account/password")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf = hidden_field(&page.text().await.unwrap(), "csrf_token").unwrap();
    let change = |current: &str, new: &str, again: &str, csrf: &str| {
        let form = [
            ("csrf_token", csrf.to_owned()),
            ("current_password", current.to_owned()),
            ("new_password", new.to_owned()),
            ("new_password_again", again.to_owned()),
        ];
        let request = here.post(app.url("/account/password")).form(&form);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let new = "a brand new passphrase";
    for (current, again, csrf, status, says) in [
        ("wrong password", new, csrf.as_str(), 401, "The current password is wrong."),
        (PASSWORD, "something else entirely", csrf.as_str(), 400, "The two new passwords differ."),
        (PASSWORD, new, "forged", 403, "The form expired."),
    ] {
        let (got, page) = change(current, new, again, csrf).await;
        assert_eq!(got, status, "{says}");
        assert!(page.contains(says), "{page}");
    }
    let (got, page) = change(PASSWORD, "short", "short", &csrf).await;
    assert_eq!(got, 400);
    assert!(page.contains("at least 8 characters"), "{page}");
    assert!(signed_in(&elsewhere).await, "nothing changed so far");
    assert_eq!(sign_in(&app.address, "erin", PASSWORD).await.1, 303);

    let (got, page) = change(PASSWORD, new, new, &csrf).await;
    assert_eq!(got, 200, "{page}");
    assert!(page.contains("Password changed"));
    assert!(signed_in(&here).await, "this browser got a new session");
    assert!(!signed_in(&elsewhere).await, "every other session is over");
    assert_eq!(sign_in(&app.address, "erin", PASSWORD).await.1, 401, "the old password is refused");
    assert_eq!(sign_in(&app.address, "erin", new).await.1, 303);

    // Signed out, the page sends the browser to sign in first.
    let response = browser().get(app.url("/account/password")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert!(location(&response).starts_with("/login?next=%2Faccount%2Fpassword"), "{}", location(&response));
}

/// Guessing the current password on `/account/password` (a session left open) counts as failed
/// sign-ins: the same throttle blocks the page and the sign-in form, then lets the user in.
#[tokio::test]
async fn wrong_current_passwords_are_throttled_as_sign_ins() {
    let app = spawn_app().await;
    app.create_user("fay").await;
    let (browser, _) = sign_in(&app.address, "fay", PASSWORD).await;
    let page = browser.get(app.url("/account/password")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_field(&page, "csrf_token").unwrap();
    let change = |current: &str| {
        let form = [
            ("csrf_token", csrf.as_str()),
            ("current_password", current),
            ("new_password", "another long passphrase"),
            ("new_password_again", "another long passphrase"),
        ];
        browser.post(app.url("/account/password")).form(&form).send()
    };
    for _ in 0..portcullis::throttle::FREE_FAILURES + 1 {
        assert_eq!(change("guess").await.unwrap().status(), 401);
    }
    let blocked = change(PASSWORD).await.unwrap();
    assert_eq!(app.login("fay", PASSWORD).await.status(), 429, "the sign-in form is blocked too");
    let retry = || async { change(PASSWORD).await.unwrap() };
    blocked_then(blocked, "Too many wrong passwords", retry, 200).await;
}

/// "Sign out everywhere else" ends every other session of the user, keeps this one and the
/// password, and needs the session's CSRF token.
#[tokio::test]
async fn signing_out_everywhere_else_keeps_this_browser_and_the_password() {
    let app = spawn_app().await;
    app.create_user("gus").await;
    let (here, _) = sign_in(&app.address, "gus", PASSWORD).await;
    let (elsewhere, _) = sign_in(&app.address, "gus", PASSWORD).await;
    let status = |browser: &reqwest::Client| {
        let request = browser.get(app.url("/o/authorized_tokens/"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let page = here.get(app.url("/account/password")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_field(&page, "csrf_token").unwrap();
    let sign_out_others =
        |csrf: &str| here.post(app.url("/account/sign-out-others")).form(&[("csrf_token", csrf)]).send();
    assert_eq!(sign_out_others("forged").await.unwrap().status(), 403);
    assert_eq!(status(&elsewhere).await, 200, "a forged form changes nothing");

    let done = sign_out_others(&csrf).await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Every other browser signed in as you has been signed out."));
    assert_eq!(status(&here).await, 200, "this browser got a new session");
    assert_eq!(status(&elsewhere).await, 302, "the other one is signed out");
    assert_eq!(sign_in(&app.address, "gus", PASSWORD).await.1, 303, "the password is kept");
    let anonymous =
        browser().post(app.url("/account/sign-out-others")).form(&[("csrf_token", csrf.as_str())]).send();
    let anonymous = anonymous.await.unwrap();
    assert_eq!(anonymous.status(), 302, "signed out, it sends the browser to sign in");
    assert_eq!(
        location(&anonymous),
        "/login?next=%2Faccount%2Fpassword",
        "then to the page, not to a POST-only address"
    );
}
