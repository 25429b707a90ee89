//! Discovery (RFC 8414, OIDC Discovery), JWKS (RFC 7517, RFC 7638 kids), health, trailing slashes.

use portcullis::keys::thumbprint;

use crate::helpers::*;

#[tokio::test]
async fn both_discovery_documents_describe_what_exists() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let doc: serde_json::Value = response.json().await.unwrap();
        assert_eq!(doc["issuer"], app.address.as_str());
        assert_eq!(doc["authorization_endpoint"], app.url("/o/authorize"));
        assert_eq!(doc["token_endpoint"], app.url("/o/token"));
        assert_eq!(doc["jwks_uri"], app.url("/.well-known/jwks.json"));
        assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
        for grant in ["authorization_code", "refresh_token", "client_credentials"] {
            assert!(doc["grant_types_supported"].as_array().unwrap().contains(&grant.into()));
        }
        for method in ["client_secret_basic", "client_secret_post", "none"] {
            assert!(
                doc["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&method.into())
            );
        }
        assert!(doc["scopes_supported"].as_array().unwrap().contains(&"read".into()));
    }
    // Every endpoint it names answers.
    let doc: serde_json::Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(app.http.get(doc["jwks_uri"].as_str().unwrap()).send().await.unwrap().status(), 200);
    assert_ne!(app.http.post(doc["token_endpoint"].as_str().unwrap()).send().await.unwrap().status(), 404);
    for endpoint in ["revocation_endpoint", "introspection_endpoint"] {
        let url = doc[endpoint].as_str().unwrap();
        assert!(url.starts_with(&app.address), "{endpoint}");
        assert_ne!(app.http.post(url).send().await.unwrap().status(), 404, "{endpoint}");
    }
    assert_eq!(doc["revocation_endpoint"], app.url("/o/revoke_token"));
    assert_eq!(doc["introspection_endpoint"], app.url("/o/introspect"));
    let introspection_methods = doc["introspection_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(!introspection_methods.contains(&"none".into()), "public clients cannot introspect");
    assert!(doc["revocation_endpoint_auth_methods_supported"].as_array().unwrap().contains(&"none".into()));
    assert_ne!(
        app.http.get(doc["authorization_endpoint"].as_str().unwrap()).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn jwks_publishes_public_keys_with_thumbprint_kids() {
    let app = spawn_app().await;
    let jwks: serde_json::Value =
        app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let algs: Vec<&str> = keys.iter().map(|key| key["alg"].as_str().unwrap()).collect();
    assert!(algs.contains(&"ES256") && algs.contains(&"RS256"));
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "no private member {private}");
        }
        assert_eq!(key["use"], "sig");
        let jwk = josekit::jwk::Jwk::from_map(key.as_object().unwrap().clone()).unwrap();
        assert_eq!(key["kid"].as_str().unwrap(), thumbprint(&jwk));
    }
}

#[tokio::test]
async fn keys_are_created_private_and_reused_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let files: Vec<_> = std::fs::read_dir(app.keys_dir.path()).unwrap().map(|entry| entry.unwrap()).collect();
    assert_eq!(files.len(), 2, "one ES256 and one RS256 key");
    for file in &files {
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    let ring = portcullis::keys::KeyRing::load_or_generate(
        app.keys_dir.path(),
        &[portcullis::keys::Algorithm::ES256],
        0,
    )
    .unwrap();
    assert_eq!(ring.keys().len(), 2, "existing keys are loaded, none generated");
}

#[tokio::test]
async fn health_and_trailing_slashes() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let client = app.confidential_client().await;
    let response = app
        .http
        .post(app.url("/o/token/"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "DOT clients post to /o/token/");
    assert_eq!(app.http.get(app.url("/no/such/path")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn keys_rotated_while_serving_are_picked_up_and_old_tokens_stay_valid() {
    let app = spawn_app_with(|settings| settings.key_reload_interval = 1, None).await;
    let client = app.confidential_client().await;
    let kid_of = |token: &str| {
        josekit::jwt::decode_header(token).unwrap().claim("kid").unwrap().as_str().unwrap().to_owned()
    };
    let before = app.client_credentials_token(&client, None).await;

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keys", "rotate"])
        .env("PORTCULLIS_KEYS_DIR", app.keys_dir.path())
        .env("PORTCULLIS_DATA_DIR", app.data_dir.path().join("unused"))
        .output()
        .unwrap();
    assert!(status.status.success());

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let after = loop {
        let candidate = app.client_credentials_token(&client, None).await;
        if kid_of(&candidate) != kid_of(&before) {
            break candidate;
        }
        assert!(std::time::Instant::now() < deadline, "the rotated key was not picked up");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let jwks: serde_json::Value =
        app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&kid_of(&before).as_str()), "the old key stays published while its tokens live");
    assert!(kids.contains(&kid_of(&after).as_str()));
    assert_eq!(app.hello(Some(&before)).await.status(), 200);
    assert_eq!(app.hello(Some(&after)).await.status(), 200);
}

#[tokio::test]
async fn rotating_keys_under_load_fails_no_verification() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let app = Arc::new(spawn_app_with(|settings| settings.key_reload_interval = 1, None).await);
    let client = app.confidential_client().await;
    let offline =
        Arc::new(portcullis::verify::Verifier::from_issuer(&app.address, &app.address).await.unwrap());
    let (issued, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (app, client, offline, issued, failures, stop) =
            (app.clone(), client.clone(), offline.clone(), issued.clone(), failures.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut old_tokens = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let body: serde_json::Value = app
                    .token(&[("grant_type", "client_credentials")], Some(&client))
                    .await
                    .json()
                    .await
                    .unwrap();
                let token = body["access_token"].as_str().unwrap().to_owned();
                issued.fetch_add(1, Ordering::Relaxed);
                // Tokens signed before and after the switch, verified online and offline.
                old_tokens.push(token.clone());
                let sample = old_tokens[old_tokens.len() / 2].clone();
                for candidate in [&token, &sample] {
                    let online = app.hello(Some(candidate)).await.status() == 200;
                    let offline_ok =
                        offline.verify_refreshing_keys(candidate, portcullis::startup::now()).await.is_ok();
                    if !online || !offline_ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keys", "rotate"])
        .env("PORTCULLIS_KEYS_DIR", app.keys_dir.path())
        .env("PORTCULLIS_DATA_DIR", app.data_dir.path().join("unused"))
        .output()
        .unwrap();
    assert!(rotated.status.success());
    // Run on until tokens carry the new key, plus a little.
    let new_kid = portcullis::keys::KeyRing::load(app.keys_dir.path())
        .unwrap()
        .active(portcullis::keys::Algorithm::ES256)
        .unwrap()
        .kid
        .clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body: serde_json::Value =
            app.token(&[("grant_type", "client_credentials")], Some(&client)).await.json().await.unwrap();
        let header = josekit::jwt::decode_header(body["access_token"].as_str().unwrap()).unwrap();
        if header.claim("kid").unwrap().as_str() == Some(new_kid.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new key never signed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(issued.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no verification failed across the switch");
}
