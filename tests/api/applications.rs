//! The applications pages (`/o/applications/`) and `/o/authorized_tokens/`, driven as a browser
//! would: GET the form, POST it with its CSRF token.

use crate::helpers::*;

fn id_in(html: &str, element: &str) -> Option<String> {
    let marker = format!("id=\"{element}\">");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('<')? + start;
    Some(html[start..end].to_owned())
}

impl TestApp {
    async fn page(&self, path: &str) -> (u16, String) {
        let response = self.browser.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// POSTs `form` with the CSRF token found on the page at `form_path`.
    async fn submit(&self, form_path: &str, action: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let (_, page) = self.page(form_path).await;
        let csrf = hidden_field(&page, "csrf_token").expect("the form has a CSRF token");
        let mut fields: Vec<(&str, &str)> = vec![("csrf_token", csrf.as_str())];
        fields.extend_from_slice(form);
        self.browser.post(self.url(action)).form(&fields).send().await.unwrap()
    }

    async fn register_application(&self, form: &[(&str, &str)]) -> (String, Option<String>, String) {
        let response = self.submit("/o/applications/register/", "/o/applications/register/", form).await;
        let status = response.status().as_u16();
        let html = response.text().await.unwrap();
        assert_eq!(status, 200, "{html}");
        (id_in(&html, "client_id").expect("the new client id"), id_in(&html, "client_secret"), html)
    }
}

const WEB_APP: &[(&str, &str)] = &[
    ("name", "My Web App"),
    ("client_type", "confidential"),
    ("grant_type", "authorization_code"),
    ("grant_type", "client_credentials"),
    ("redirect_uris", "https://app.example.com/callback\nhttps://app.example.com/other"),
    ("scope", "read write"),
];

/// A user who is not an admin registers at most --max-applications-per-user applications: past
/// it the form says so (409) and nothing is stored; deleting one makes room again. Admins are
/// not bounded.
#[tokio::test]
async fn a_user_registers_a_bounded_number_of_applications() {
    let app = spawn_app_with(|settings| settings.max_applications_per_user = 2, None).await;
    let alice = app.create_user("alice").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), 303);
    let (first, _, _) = app.register_application(WEB_APP).await;
    app.register_application(WEB_APP).await;
    let response = app.submit("/o/applications/register/", "/o/applications/register/", WEB_APP).await;
    assert_eq!(response.status(), 409);
    let html = response.text().await.unwrap();
    assert!(html.contains("You have registered 2 applications"), "{html}");
    assert!(html.contains("--max-applications-per-user"), "{html}");
    assert!(html.contains("My Web App"), "the form keeps what was typed");
    assert_eq!(app.server.store.clients_of_owner(&alice.id).await.unwrap().len(), 2, "nothing stored");

    let delete_path = format!("/o/applications/{first}/delete/");
    assert_eq!(app.submit(&delete_path, &delete_path, &[]).await.status(), 303);
    app.register_application(WEB_APP).await;
    assert_eq!(app.server.store.clients_of_owner(&alice.id).await.unwrap().len(), 2);

    app.login_admin().await;
    for _ in 0..3 {
        app.register_application(WEB_APP).await;
    }
}

#[tokio::test]
async fn the_pages_need_a_signed_in_user() {
    let app = spawn_app().await;
    for path in ["/o/applications/", "/o/applications/register/", "/o/authorized_tokens/"] {
        let response = app.browser.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 302, "{path}");
        let login = location(&response);
        assert_eq!(query_param(&login, "next").as_deref(), Some(path), "back to {path} after signing in");
    }
}

#[tokio::test]
async fn register_view_edit_rotate_and_delete_an_application() {
    let app = spawn_app().await;
    app.login_admin().await;
    let (client_id, secret, html) = app.register_application(WEB_APP).await;
    let secret = secret.expect("a confidential client's secret is shown at creation");
    assert!(html.contains("not shown again"));
    let stored = app.server.store.client(&client_id).await.unwrap().unwrap();
    let admin = app.server.store.user_by_username("admin").await.unwrap().unwrap();
    assert_eq!(stored.owner.as_deref(), Some(admin.id.as_str()));
    assert_eq!(stored.redirect_uris.len(), 2);
    let client = TestClient { id: client_id.clone(), secret: Some(secret.clone()) };
    assert_eq!(
        app.token(&[("grant_type", "client_credentials")], Some(&client)).await.status(),
        200,
        "the shown secret works"
    );
    let before_the_edit = app.client_credentials_token(&client, Some("read")).await;

    let (status, detail) = app.page(&format!("/o/applications/{client_id}/")).await;
    assert_eq!(status, 200);
    assert!(detail.contains("My Web App") && !detail.contains(&secret), "the secret is shown once only");
    let (_, list) = app.page("/o/applications/").await;
    assert!(list.contains("My Web App"));

    let edit_path = format!("/o/applications/{client_id}/update/");
    let response = app
        .submit(
            &edit_path,
            &edit_path,
            &[
                ("name", "Renamed"),
                ("grant_type", "client_credentials"),
                ("scope", "read"),
                ("redirect_uris", ""),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let stored = app.server.store.client(&client_id).await.unwrap().unwrap();
    assert_eq!(stored.name, "Renamed");
    assert_eq!(stored.scope.to_string(), "read");
    assert!(stored.redirect_uris.is_empty());

    let rotate_form = format!("/o/applications/{client_id}/");
    let response =
        app.submit(&rotate_form, &format!("/o/applications/{client_id}/rotate-secret/"), &[]).await;
    assert_eq!(response.status(), 200);
    let new_secret =
        id_in(&response.text().await.unwrap(), "client_secret").expect("the new secret, shown once");
    assert_oauth_error(
        app.token(&[("grant_type", "client_credentials")], Some(&client)).await,
        401,
        "invalid_client",
    )
    .await;
    let rotated = TestClient { id: client_id.clone(), secret: Some(new_secret) };
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some(&rotated)).await.status(), 200);
    // Still the same client (its creation time is kept): its tokens issued before still work.
    assert_eq!(app.hello(Some(&before_the_edit)).await.status(), 200);

    let delete_path = format!("/o/applications/{client_id}/delete/");
    let (status, confirm) = app.page(&delete_path).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Delete Renamed?"));
    assert!(!confirm.contains("next start"), "only swagger-ui comes back");
    let response = app.submit(&delete_path, &delete_path, &[]).await;
    assert_eq!(response.status(), 303);
    assert!(app.server.store.client(&client_id).await.unwrap().is_none());
    assert_oauth_error(
        app.token(&[("grant_type", "client_credentials")], Some(&rotated)).await,
        401,
        "invalid_client",
    )
    .await;
}

#[tokio::test]
async fn invalid_registrations_are_refused_with_the_reason_and_store_nothing() {
    let app = spawn_app().await;
    app.login_admin().await;
    let before = app.server.store.clients().await.unwrap().len();
    for (form, reason) in [
        (vec![("name", "X"), ("redirect_uris", "https://a.example/cb#frag")], "fragment"),
        (vec![("name", "X"), ("redirect_uris", "javascript:alert(1)")], "never allowed"),
        (vec![("name", ""), ("redirect_uris", "https://a.example/cb")], "name"),
        (
            vec![("name", "X"), ("client_type", "public"), ("grant_type", "client_credentials")],
            "public client",
        ),
        (vec![("name", "X"), ("grant_type", "authorization_code")], "redirect URI"),
        (
            vec![("name", "X"), ("grant_type", "client_credentials"), ("grant_type", "refresh_token")],
            "refresh_token grant needs authorization_code",
        ),
        (
            vec![
                ("name", "X"),
                ("redirect_uris", "https://a.example/cb"),
                ("allowed_origins", "https://a.example/path"),
            ],
            "origin",
        ),
    ] {
        let response = app.submit("/o/applications/register/", "/o/applications/register/", &form).await;
        assert_eq!(response.status(), 400, "{form:?}");
        let html = response.text().await.unwrap();
        assert!(html.contains(reason), "{reason}: {html}");
    }
    assert_eq!(app.server.store.clients().await.unwrap().len(), before);
}

#[tokio::test]
async fn the_admin_lists_every_application_a_page_at_a_time() {
    use portcullis::web::applications::APPLICATIONS_PER_PAGE;
    let app = spawn_app().await;
    let mut ids = vec!["swagger-ui".to_owned()];
    for _ in 0..APPLICATIONS_PER_PAGE + 20 {
        ids.push(app.confidential_client().await.id);
    }
    ids.sort();
    app.login_admin().await;
    let listed = |html: &str| -> Vec<String> {
        html.split("<li><a href=\"/o/applications/")
            .skip(1)
            .map(|item| item.split('/').next().unwrap().to_owned())
            .collect()
    };
    let (status, first) = app.page("/o/applications/").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&first), ids[..APPLICATIONS_PER_PAGE], "the first page, by client id");
    assert!(first.contains("<h1>Applications</h1>"), "the admin's list is every application");
    let next = format!("/o/applications/?after={}", ids[APPLICATIONS_PER_PAGE - 1]);
    assert!(first.contains(&format!("<a href=\"{next}\">Next 100 applications</a>")), "{first}");
    let (status, second) = app.page(&next).await;
    assert_eq!(status, 200);
    assert_eq!(listed(&second), ids[APPLICATIONS_PER_PAGE..], "the rest");
    assert!(!second.contains("Next 100"), "no page after the last");
    assert!(second.contains("<a href=\"/o/applications/\">First page</a>") && !first.contains("First page"));
    // A user's own list has no pages: it holds only what they registered.
    app.create_user("alice").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), 303);
    let (_, own) = app.page("/o/applications/").await;
    assert!(listed(&own).is_empty() && !own.contains("Next 100"), "{own}");
    assert!(own.contains("<h1>Your applications</h1>"));
}

#[tokio::test]
async fn users_see_only_their_own_applications_and_only_admins_skip_consent() {
    let app = spawn_app().await;
    app.login_admin().await;
    let (admin_client, _, _) = app.register_application(WEB_APP).await;

    app.create_user("alice").await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), 303);
    let (_, list) = app.page("/o/applications/").await;
    assert!(!list.contains(&admin_client), "alice does not see the admin's application");
    for path in [
        format!("/o/applications/{admin_client}/"),
        format!("/o/applications/{admin_client}/update/"),
        format!("/o/applications/{admin_client}/delete/"),
    ] {
        assert_eq!(app.page(&path).await.0, 404, "{path}");
    }
    let (_, form) = app.page("/o/applications/register/").await;
    assert!(!form.contains("skip_consent"), "the option is for admins only");
    let mut fields = WEB_APP.to_vec();
    fields.push(("skip_consent", "on"));
    let (alice_client, _, _) = app.register_application(&fields).await;
    assert!(
        !app.server.store.client(&alice_client).await.unwrap().unwrap().skip_consent,
        "a forged field is ignored"
    );

    // The admin sees every application and may let one skip consent.
    app.login_admin().await;
    let (_, list) = app.page("/o/applications/").await;
    assert!(list.contains(&alice_client) && list.contains(&admin_client));
    let edit = format!("/o/applications/{alice_client}/update/");
    let response = app
        .submit(
            &edit,
            &edit,
            &[("name", "Alice App"), ("grant_type", "client_credentials"), ("skip_consent", "on")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert!(app.server.store.client(&alice_client).await.unwrap().unwrap().skip_consent);
}

#[tokio::test]
async fn every_form_needs_its_csrf_token() {
    let app = spawn_app().await;
    app.login_admin().await;
    let (client_id, _, _) = app.register_application(WEB_APP).await;
    for action in [
        "/o/applications/register/".to_owned(),
        format!("/o/applications/{client_id}/update/"),
        format!("/o/applications/{client_id}/rotate-secret/"),
        format!("/o/applications/{client_id}/delete/"),
        "/o/authorized_tokens/anything/delete/".to_owned(),
    ] {
        let response = app
            .browser
            .post(app.url(&action))
            .form(&[("name", "Forged"), ("csrf_token", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{action}");
    }
    assert!(app.server.store.client(&client_id).await.unwrap().is_some());
    assert_eq!(app.server.store.clients().await.unwrap().iter().filter(|c| c.name == "Forged").count(), 0);
}

#[tokio::test]
async fn authorized_tokens_lists_grants_and_revoking_one_ends_its_tokens_and_consent() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let (status, page) = app.page("/o/authorized_tokens/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Test App") && page.contains("read write"));
    let grant = app
        .server
        .store
        .grants_of_user(&app.server.store.user_by_username("admin").await.unwrap().unwrap().id)
        .await
        .unwrap();
    assert_eq!(grant.len(), 1);
    let action = format!("/o/authorized_tokens/{}/delete/", grant[0].id);
    let response = app.submit("/o/authorized_tokens/", &action, &[]).await;
    assert_eq!(response.status(), 303);

    assert_oauth_error(
        app.refresh(&client, tokens["refresh_token"].as_str().unwrap(), None).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.hello(Some(tokens["access_token"].as_str().unwrap())).await.status(), 401);
    let (_, page) = app.page("/o/authorized_tokens/").await;
    assert!(!page.contains("Test App"), "the grant is gone from the list");
    let consent = app.authorize(&app.authorization_params(&client, None)).await;
    assert_eq!(consent.status(), 200, "the remembered consent is forgotten: the consent page shows again");

    // Another user's grant cannot be revoked.
    let admin_tokens = app.tokens_for(&client).await;
    let admin_id = app.server.store.user_by_username("admin").await.unwrap().unwrap().id;
    let admin_grant = app.server.store.grants_of_user(&admin_id).await.unwrap().remove(0);
    app.create_user("mallory").await;
    assert_eq!(app.login("mallory", PASSWORD).await.status(), 303);
    let action = format!("/o/authorized_tokens/{}/delete/", admin_grant.id);
    // (mallory has no grants, so the home page's sign-out form supplies her CSRF token.)
    let response = app.submit("/", &action, &[]).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        app.refresh(&client, admin_tokens["refresh_token"].as_str().unwrap(), None).await.status(),
        200,
        "untouched"
    );
}

/// Deleting an application on its page revokes every access token issued to it, those of
/// client_credentials included: the revocation feed lists the client for as long as one of its
/// tokens could be valid, so offline verifiers refuse them, and so does this server's resource.
#[tokio::test]
async fn deleting_an_application_revokes_its_tokens_offline_too() {
    use portcullis::startup::now;
    use portcullis::verify::{Verifier, VerifyError};
    let app = spawn_app().await;
    app.login_admin().await;
    let (client_id, secret, _) = app.register_application(WEB_APP).await;
    let client = TestClient { id: client_id.clone(), secret };
    let other = app.confidential_client().await;
    let theirs = app.client_credentials_token(&client, Some("read")).await;
    let others = app.client_credentials_token(&other, Some("read")).await;
    let verifier = Verifier::from_issuer(&app.address, &app.address).await.unwrap();
    let feed =
        || async { app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap() };
    assert_eq!(verifier.apply_revocation_feed(&feed().await, now()), Ok(0));
    assert!(verifier.verify(&theirs, now()).is_ok());

    let delete_path = format!("/o/applications/{client_id}/delete/");
    assert_eq!(app.submit(&delete_path, &delete_path, &[]).await.status(), 303);
    let signed = feed().await;
    assert_eq!(verifier.apply_revocation_feed(&signed, now()), Ok(1));
    assert_eq!(verifier.verify(&theirs, now()), Err(VerifyError::Revoked));
    assert!(verifier.verify(&others, now()).is_ok(), "another client's tokens are not touched");
    // Listed until the last token issued before the deletion has expired (15 minutes here).
    let payload = jws_payload(&signed);
    assert_eq!(payload["revoked_clients"][0]["client_id"], client_id.as_str());
    let deleted_at = payload["revoked_clients"][0]["deleted_at"].as_i64().unwrap();
    assert!((now() - 5..=now()).contains(&deleted_at), "{deleted_at}");
    let until = payload["revoked_clients"][0]["exp"].as_i64().unwrap();
    let unaware = Verifier::from_issuer(&app.address, &app.address).await.unwrap();
    let claims = unaware.verify(&theirs, now()).unwrap();
    assert!(until >= claims.exp && until <= now() + 900, "{until} against the token's {}", claims.exp);

    let response = app.http.get(app.url("/api/hello")).bearer_auth(&theirs).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["error_description"], "the token's client has been deleted");
    let response = app.http.get(app.url("/api/hello")).bearer_auth(&others).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Client ids can come back: `swagger-ui` is created again at the next start after it was
/// deleted. What the deleted client was given stays gone (its access and refresh tokens, the
/// consent it was given), here and offline; the new client of that id starts afresh.
#[tokio::test]
async fn a_client_id_that_comes_back_brings_back_none_of_its_tokens() {
    use portcullis::startup::now;
    use portcullis::verify::{Verifier, VerifyError};
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let resource_server = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let (access, refresh) =
        (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    let params = app.authorization_params(&client, None);
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 302, "the consent is remembered");
    // A code the deleted client got and never exchanged.
    let unexchanged = query_param(&location(&response), "code").expect("a code");
    let (_, listed) = app.page("/o/authorized_tokens/").await;
    assert!(listed.contains("Test App"), "the grant is listed");
    // The admin deleting swagger-ui is told it comes back, and as what.
    let (status, confirm) = app.page("/o/applications/swagger-ui/delete/").await;
    assert_eq!(status, 200);
    assert!(confirm.contains("creates it again at its next start, as a new application"), "{confirm}");

    let record = app.server.store.client(&client.id).await.unwrap().unwrap();
    let deleted_at = now();
    app.server.store.delete_client(&client.id, deleted_at, deleted_at + 900).await.unwrap();
    // Created again (the same id and secret) in the next second, as a restart would.
    let again = portcullis::domain::Client { created_at: deleted_at + 1, ..record };
    app.server.store.insert_client(&again).await.unwrap();
    while now() <= deleted_at {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    for token in [access, refresh] {
        assert_eq!(
            app.introspect_json(&resource_server, token).await,
            serde_json::json!({ "active": false })
        );
    }
    assert_oauth_error(app.refresh(&client, refresh, None).await, 400, "invalid_grant").await;
    assert_oauth_error(app.exchange_code(&client, &unexchanged, None).await, 400, "invalid_grant").await;
    let response = app.hello(Some(access)).await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error_description"], "the token's client has been deleted");
    let (_, listed) = app.page("/o/authorized_tokens/").await;
    assert!(!listed.contains("Test App"), "the deleted client's grant is not the new one's");
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 200, "asked again: the consent was for the deleted client");
    assert!(response.text().await.unwrap().contains("name=\"allow\""));

    let fresh = app.client_credentials_token(&client, None).await;
    assert_eq!(app.introspect_json(&resource_server, &fresh).await["active"], true);
    assert_eq!(app.hello(Some(&fresh)).await.status(), 200);
    let verifier = Verifier::from_issuer(&app.address, &app.address).await.unwrap();
    let feed = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
    assert_eq!(verifier.apply_revocation_feed(&feed, now()), Ok(1));
    assert_eq!(verifier.verify(access, now()), Err(VerifyError::Revoked));
    assert!(verifier.verify(&fresh, now()).is_ok(), "issued after the deletion: the new client's");
}
