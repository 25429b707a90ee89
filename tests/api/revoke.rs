//! Revocation (RFC 7009).

use crate::helpers::*;

impl TestApp {
    pub async fn revoke(&self, client: &TestClient, token: &str, hint: Option<&str>) -> reqwest::Response {
        let mut form = vec![("token", token)];
        if let Some(hint) = hint {
            form.push(("token_type_hint", hint));
        }
        let mut request = self.http.post(self.url("/o/revoke_token"));
        if client.secret.is_some() {
            request = request.basic_auth(&client.id, client.secret.as_deref());
        } else {
            form.push(("client_id", &client.id));
        }
        request.form(&form).send().await.unwrap()
    }

    /// A grant of `client` rotated `rotations` times: every access token it issued (the
    /// exchange's first) and its current refresh token.
    async fn grant_rotated(&self, client: &TestClient, rotations: usize) -> (Vec<String>, String) {
        let tokens = self.tokens_for(client).await;
        let mut access = vec![tokens["access_token"].as_str().unwrap().to_owned()];
        let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        for _ in 0..rotations {
            let response = self.refresh(client, &refresh, None).await;
            assert_eq!(response.status(), 200);
            let rotated: serde_json::Value = response.json().await.unwrap();
            access.push(rotated["access_token"].as_str().unwrap().to_owned());
            refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
        }
        (access, refresh)
    }
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_whole_grant() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let response =
        app.revoke(&client, tokens["refresh_token"].as_str().unwrap(), Some("refresh_token")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_oauth_error(
        app.refresh(&client, tokens["refresh_token"].as_str().unwrap(), None).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.hello(Some(tokens["access_token"].as_str().unwrap())).await.status(), 401);
}

#[tokio::test]
async fn revoking_an_access_token_is_remembered_and_the_hint_is_not_trusted() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    // A wrong hint: the server still finds the access token.
    assert_eq!(app.revoke(&client, access, Some("refresh_token")).await.status(), 200);
    let hello = app.hello(Some(access)).await;
    assert_eq!(hello.status(), 401);
    assert!(hello.headers()["www-authenticate"].to_str().unwrap().contains("revoked"));
    // The refresh token of the same grant still works: only that access token was revoked.
    assert_eq!(app.refresh(&client, tokens["refresh_token"].as_str().unwrap(), None).await.status(), 200);
}

#[tokio::test]
async fn unknown_tokens_answer_200_and_change_nothing() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    for token in ["not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        for hint in [None, Some("access_token"), Some("refresh_token"), Some("something_else")] {
            assert_eq!(app.revoke(&client, token, hint).await.status(), 200, "{token} {hint:?}");
        }
    }
    assert_eq!(app.hello(Some(tokens["access_token"].as_str().unwrap())).await.status(), 200);
}

#[tokio::test]
async fn a_client_revokes_only_its_own_tokens() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let other = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_oauth_error(app.revoke(&other, refresh, None).await, 400, "unauthorized_client").await;
    assert_oauth_error(app.revoke(&other, access, None).await, 400, "unauthorized_client").await;
    assert_eq!(app.hello(Some(access)).await.status(), 200, "nothing was revoked");
    assert_eq!(app.refresh(&client, refresh, None).await.status(), 200);
}

#[tokio::test]
async fn revocation_requires_client_authentication() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let wrong = TestClient { id: client.id.clone(), secret: Some("wrong".into()) };
    let response = app.revoke(&wrong, refresh, None).await;
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_oauth_error(response, 401, "invalid_client").await;
    let anonymous =
        app.http.post(app.url("/o/revoke_token")).form(&[("token", refresh)]).send().await.unwrap();
    assert_oauth_error(anonymous, 401, "invalid_client").await;
    let no_token = app
        .http
        .post(app.url("/o/revoke_token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(no_token, 400, "invalid_request").await;
    let json = app
        .http
        .post(app.url("/o/revoke_token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .json(&serde_json::json!({"token": refresh}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(json, 400, "invalid_request").await;
    assert_eq!(app.refresh(&client, refresh, None).await.status(), 200, "nothing was revoked");
}

#[tokio::test]
async fn public_clients_revoke_their_own_tokens() {
    let app = spawn_app().await;
    let client = app.public_client().await;
    let tokens = app.tokens_for(&client).await;
    assert_eq!(app.revoke(&client, tokens["refresh_token"].as_str().unwrap(), None).await.status(), 200);
    assert_oauth_error(
        app.refresh(&client, tokens["refresh_token"].as_str().unwrap(), None).await,
        400,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn two_authorization_headers_are_invalid_request_at_revocation_and_introspection() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let basic = basic_header(&client);
    // RFC 6749 §5.2 ("multiple credentials"), which RFC 7009 §2.2.1 and RFC 7662 §2.3 refer to.
    for (path, token) in
        [("/o/revoke_token", refresh), ("/o/revoke_token", access), ("/o/introspect", access)]
    {
        let response = app
            .http
            .post(app.url(path))
            .header("authorization", basic.as_str())
            .header("authorization", basic.as_str())
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let body = assert_oauth_error(response, 400, "invalid_request").await;
        assert!(
            body["error_description"].as_str().unwrap().contains("more than one Authorization header"),
            "{path}"
        );
    }
    assert_eq!(app.hello(Some(access)).await.status(), 200, "the access token was not revoked");
    assert_eq!(app.refresh(&client, refresh, None).await.status(), 200, "nor the refresh token");
}

/// The revocation feed is public and lists revoked tokens one by one: past
/// `--max-revoked-per-client` within an access-token lifetime, a client's revocations revoke all
/// of its access tokens issued until then, in one entry, so that one client cannot grow the feed
/// without bound. Its other tokens issued before are refused; later ones, and other clients', are
/// not.
#[tokio::test]
async fn past_its_bound_a_clients_revocations_revoke_all_its_access_tokens_in_one_feed_entry() {
    let app = spawn_app_with(|settings| settings.max_revoked_per_client = 3, None).await;
    let client = app.confidential_client().await;
    let other = app.confidential_client().await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(app.client_credentials_token(&client, Some("read")).await);
    }
    let others = app.client_credentials_token(&other, Some("read")).await;
    let feed = || async {
        let jws = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
        jws_payload(&jws)
    };
    for token in &tokens[..3] {
        assert_eq!(app.revoke(&client, token, Some("access_token")).await.status(), 200);
    }
    // Revoking a revoked token again lists nothing more, and does not count.
    for token in &tokens[..2] {
        assert_eq!(app.revoke(&client, token, Some("access_token")).await.status(), 200);
    }
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 3, "{listed}");
    assert!(listed.get("revoked_clients").is_none(), "{listed}");
    assert_eq!(app.hello(Some(&tokens[3])).await.status(), 200, "not revoked yet");

    // The fourth is past the bound: every token of the client issued until now goes.
    assert_eq!(app.revoke(&client, &tokens[3], Some("access_token")).await.status(), 200);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 3, "no entry per token: {listed}");
    let entries = listed["revoked_clients"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["client_id"], client.id.as_str());
    let until = entries[0]["deleted_at"].as_i64().unwrap();
    for token in &tokens[3..] {
        assert!(jws_payload(token)["iat"].as_i64().unwrap() <= until);
        let hello = app.hello(Some(token)).await;
        assert_eq!(hello.status(), 401, "{token}");
        assert!(hello.headers()["www-authenticate"].to_str().unwrap().contains("revoked"));
        let introspected =
            app.introspect(&client, token, None).await.json::<serde_json::Value>().await.unwrap();
        assert_eq!(introspected, serde_json::json!({"active": false}));
    }
    assert_eq!(app.hello(Some(&others)).await.status(), 200, "another client's token is untouched");

    // A token asked for at once is good: `iat` is in seconds, and one issued within the entry's
    // second would be refused from the start, so the server waits for the next one.
    let later = app.client_credentials_token(&client, Some("read")).await;
    assert!(jws_payload(&later)["iat"].as_i64().unwrap() > until, "{later}");
    assert_eq!(app.hello(Some(&later)).await.status(), 200);
    // Revoking it, still past the bound, moves the one entry instead of adding one.
    assert_eq!(app.revoke(&client, &later, None).await.status(), 200);
    assert_eq!(app.hello(Some(&later)).await.status(), 401);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 3, "{listed}");
    let entries = listed["revoked_clients"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert!(entries[0]["deleted_at"].as_i64().unwrap() >= jws_payload(&later)["iat"].as_i64().unwrap());
}

/// A grant's access tokens count against the same bound: a grant rotated into more unexpired
/// access tokens than its client may still have listed is revoked with none of them listed, and
/// every access token of the client issued until then revoked in one entry instead.
#[tokio::test]
async fn a_grant_rotated_past_the_bound_is_revoked_without_listing_its_tokens() {
    let app = spawn_app_with(|settings| settings.max_revoked_per_client = 3, None).await;
    let client = app.confidential_client().await;
    let (access, refresh) = app.grant_rotated(&client, 3).await;
    // Four unexpired access tokens in the grant, one more than may be listed.
    assert_eq!(app.revoke(&client, &refresh, Some("refresh_token")).await.status(), 200);
    let jws = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
    let listed = jws_payload(&jws);
    assert!(listed["revoked"].as_array().unwrap().is_empty(), "{listed}");
    let entries = listed["revoked_clients"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["client_id"], client.id.as_str());
    for token in &access {
        assert_eq!(app.hello(Some(token)).await.status(), 401, "{token}");
    }
    assert_oauth_error(app.refresh(&client, &refresh, None).await, 400, "invalid_grant").await;
}

/// A public client's revocations count per user: anyone holding one of its tokens may present
/// it, so counting them against the client would let a user with grants of their own take it
/// past the bound and revoke every other user's tokens of it. Past the bound, they revoke that
/// user's access tokens of the client in one `revoked_subjects` entry; another user's tokens of
/// the client, and their own bound, are untouched.
#[tokio::test]
async fn past_the_bound_a_public_clients_revocations_revoke_only_that_users_tokens() {
    let app = spawn_app_with(|settings| settings.max_revoked_per_client = 1, None).await;
    let client = app.public_client().await;
    let (access, refresh) = app.grant_rotated(&client, 2).await;
    let admin_id = app.server.store.user_by_username("admin").await.unwrap().unwrap().id;
    app.create_user("bob").await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 303);
    let bobs = app.tokens_for(&client).await;
    let (bobs_access, bobs_refresh) =
        (bobs["access_token"].as_str().unwrap(), bobs["refresh_token"].as_str().unwrap());
    let feed = || async {
        let jws = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
        jws_payload(&jws)
    };

    assert_eq!(app.revoke(&client, &access[0], Some("access_token")).await.status(), 200);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 1, "within the bound: listed {listed}");
    assert!(listed.get("revoked_subjects").is_none(), "{listed}");
    // Past admin's bound for this client: admin's tokens of it go in one entry, then their grant.
    assert_eq!(app.revoke(&client, &access[1], Some("access_token")).await.status(), 200);
    assert_eq!(app.revoke(&client, &refresh, None).await.status(), 200);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 1, "no entry per token: {listed}");
    assert!(listed.get("revoked_clients").is_none(), "not the client's tokens: {listed}");
    let entries = listed["revoked_subjects"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["client_id"], client.id.as_str());
    assert_eq!(entries[0]["sub"], admin_id.as_str());
    assert!(entries[0]["exp"].as_i64().unwrap() >= jws_payload(&access[2])["exp"].as_i64().unwrap());
    for token in &access {
        let hello = app.hello(Some(token)).await;
        assert_eq!(hello.status(), 401, "{token}");
        assert!(hello.headers()["www-authenticate"].to_str().unwrap().contains("revoked"));
    }
    assert_oauth_error(app.refresh(&client, &refresh, None).await, 400, "invalid_grant").await;
    // Admin's next tokens of the client, asked for at once, are good: issued after the entry's
    // second, which the server waits for (`iat` is in seconds).
    app.login_admin().await;
    let admins = app.tokens_for(&client).await;
    let admins_access = admins["access_token"].as_str().unwrap();
    let until = entries[0]["issued_until"].as_i64().unwrap();
    assert!(jws_payload(admins_access)["iat"].as_i64().unwrap() > until, "{admins}");
    assert_eq!(app.hello(Some(admins_access)).await.status(), 200);
    // An offline verifier applying the feed refuses admin's tokens of the client, not bob's.
    let offline = portcullis::verify::Verifier::from_issuer(&app.address, &app.address).await.unwrap();
    let jws = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
    assert_eq!(offline.apply_revocation_feed(&jws, portcullis::startup::now()), Ok(2));
    for token in &access[1..] {
        let verified = offline.verify(token, portcullis::startup::now());
        assert_eq!(verified, Err(portcullis::verify::VerifyError::Revoked), "{token}");
    }
    assert!(offline.verify(bobs_access, portcullis::startup::now()).is_ok(), "bob's token, offline");

    // Bob's tokens of the same client are untouched, and his revocations have a bound of their own.
    assert_eq!(app.hello(Some(bobs_access)).await.status(), 200, "another user's token of the client");
    assert_eq!(app.revoke(&client, bobs_access, None).await.status(), 200);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 2, "bob's listed one by one: {listed}");
    assert_eq!(listed["revoked_subjects"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(app.hello(Some(bobs_access)).await.status(), 401);
    assert_eq!(app.refresh(&client, bobs_refresh, None).await.status(), 200, "his grant lives");
}

/// One user's revocations count against one bound across every client as well: the tokens of
/// theirs that public clients revoke, and what the confidential clients they registered revoke.
/// Otherwise each client they use or register (up to `--max-applications-per-user`) would bring
/// a bound of its own. Past it, only the holder's tokens go: the user's of a public client, all
/// of a confidential client's. A client the operator registered (no owner) keeps its own bound.
#[tokio::test]
async fn past_their_bound_across_clients_a_users_revocations_revoke_only_their_holders_tokens() {
    let app = spawn_app_with(|settings| settings.max_revoked_per_client = 1, None).await;
    let feed = || async {
        let jws = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
        jws_payload(&jws)
    };
    // Admin's tokens of two public clients: one revocation of each.
    let (first, second) = (app.public_client().await, app.public_client().await);
    let admin_id = app.server.store.user_by_username("admin").await.unwrap().unwrap().id;
    let firsts = app.tokens_for(&first).await;
    let seconds = app.tokens_for(&second).await;
    let (firsts, seconds) =
        (firsts["access_token"].as_str().unwrap(), seconds["access_token"].as_str().unwrap());
    app.create_user("bob").await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 303);
    let bobs = app.tokens_for(&second).await;
    let bobs = bobs["access_token"].as_str().unwrap();

    assert_eq!(app.revoke(&first, firsts, None).await.status(), 200);
    assert_eq!(feed().await["revoked"].as_array().unwrap().len(), 1, "within admin's bound: listed");
    // Admin's bound of their own for the second client is untouched, their account's is not.
    assert_eq!(app.revoke(&second, seconds, None).await.status(), 200);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 1, "no entry per token: {listed}");
    let entries = listed["revoked_subjects"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(
        (entries[0]["client_id"].as_str(), entries[0]["sub"].as_str()),
        (Some(second.id.as_str()), Some(admin_id.as_str()))
    );
    assert_eq!(app.hello(Some(seconds)).await.status(), 401);
    assert_eq!(app.hello(Some(bobs)).await.status(), 200, "bob's token of the same client");
    // Bob's revocations count against his own account.
    assert_eq!(app.revoke(&second, bobs, None).await.status(), 200);
    assert_eq!(feed().await["revoked"].as_array().unwrap().len(), 2, "bob's listed one by one");

    // Two confidential clients carol registered: the second one's revocation is past her bound
    // and revokes all of its tokens; one the operator registered lists its own.
    let carol = app.create_user("carol").await;
    let registered =
        || app.create_client(ClientOptions { owner: Some(carol.id.clone()), ..ClientOptions::default() });
    let (mine, also_mine) = (registered().await, registered().await);
    let operators = app.confidential_client().await;
    let token = app.client_credentials_token(&mine, Some("read")).await;
    assert_eq!(app.revoke(&mine, &token, None).await.status(), 200);
    let kept = app.client_credentials_token(&also_mine, Some("read")).await;
    let token = app.client_credentials_token(&also_mine, Some("read")).await;
    assert_eq!(app.revoke(&also_mine, &token, None).await.status(), 200);
    let token = app.client_credentials_token(&operators, Some("read")).await;
    assert_eq!(app.revoke(&operators, &token, None).await.status(), 200);
    let listed = feed().await;
    assert_eq!(listed["revoked"].as_array().unwrap().len(), 4, "mine's and the operator's: {listed}");
    let entries = listed["revoked_clients"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["client_id"], also_mine.id.as_str());
    assert_eq!(app.hello(Some(&kept)).await.status(), 401, "all of its tokens go");
    let others = app.client_credentials_token(&mine, Some("read")).await;
    assert_eq!(app.hello(Some(&others)).await.status(), 200, "her other client's are untouched");
}

/// A user withdrawing an authorization counts against their own bound for that client, never
/// the client's: past it, their access tokens of the client go in one entry, and the client's
/// tokens for anyone else (its client_credentials tokens included) stay good.
#[tokio::test]
async fn a_user_withdrawing_a_grant_rotated_past_the_bound_revokes_only_their_tokens() {
    let app = spawn_app_with(|settings| settings.max_revoked_per_client = 2, None).await;
    let client = app.confidential_client().await;
    let own = app.client_credentials_token(&client, Some("read")).await;
    app.create_user("bob").await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 303);
    let bobs = app.tokens_for(&client).await;
    app.login_admin().await;
    let (access, refresh) = app.grant_rotated(&client, 2).await;
    let admin_id = app.server.store.user_by_username("admin").await.unwrap().unwrap().id;
    let grant = app.server.store.grants_of_user(&admin_id).await.unwrap().remove(0);

    // Three unexpired access tokens in the grant, one more than may be listed.
    let page = app.browser.get(app.url("/o/authorized_tokens/")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_field(&page, "csrf_token").expect("the page has a CSRF token");
    let action = app.url(&format!("/o/authorized_tokens/{}/delete/", grant.id));
    let withdrawn = app.browser.post(action).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(withdrawn.status(), 303);

    let jws = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
    let listed = jws_payload(&jws);
    assert!(listed["revoked"].as_array().unwrap().is_empty(), "{listed}");
    assert!(listed.get("revoked_clients").is_none(), "not the client's tokens: {listed}");
    let entries = listed["revoked_subjects"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(
        (entries[0]["client_id"].as_str(), entries[0]["sub"].as_str()),
        (Some(client.id.as_str()), Some(admin_id.as_str()))
    );
    for token in &access {
        assert_eq!(app.hello(Some(token)).await.status(), 401, "{token}");
    }
    assert_oauth_error(app.refresh(&client, &refresh, None).await, 400, "invalid_grant").await;
    assert_eq!(app.hello(Some(&own)).await.status(), 200, "the client's own token");
    assert_eq!(app.hello(Some(bobs["access_token"].as_str().unwrap())).await.status(), 200, "bob's");
    let introspected = app
        .introspect(&client, bobs["access_token"].as_str().unwrap(), None)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true);
}
