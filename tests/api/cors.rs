//! CORS: allowed origins are `--cors-origin` plus the origins of registered redirect URIs; only
//! the endpoints browser apps call get CORS headers.

use reqwest::Method;

use crate::helpers::*;

const APP_ORIGIN: &str = "https://app.example.com"; // from REDIRECT_URI

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

fn allow_origin(response: &reqwest::Response) -> Option<String> {
    response.headers().get("access-control-allow-origin").map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn preflight_is_answered_for_a_registered_redirect_origin() {
    let app = spawn_app().await;
    app.confidential_client().await;
    let response = preflight(&app, "/o/token", APP_ORIGIN).await;
    assert_eq!(response.status(), 204);
    assert_eq!(allow_origin(&response).as_deref(), Some(APP_ORIGIN));
    let methods = response.headers()["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"));
    let headers = response.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"));
    assert!(response.headers().get("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    for origin in
        ["https://evil.example", "https://app.example.com.evil.example", "null", "https://app.example.com/"]
    {
        let response = preflight(&app, "/o/token", origin).await;
        assert_eq!(response.status(), 403, "{origin}");
        assert_eq!(allow_origin(&response), None, "{origin}");
    }
    let response = app
        .http
        .post(app.url("/o/token"))
        .header("origin", "https://evil.example")
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "CORS never changes what the server does, only what browsers may read"
    );
    assert_eq!(allow_origin(&response), None);
}

#[tokio::test]
async fn allowed_origins_can_read_token_discovery_and_jwks_responses() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let response = app
        .http
        .post(app.url("/o/token"))
        .header("origin", APP_ORIGIN)
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(allow_origin(&response).as_deref(), Some(APP_ORIGIN));
    assert!(response.headers()["vary"].to_str().unwrap().contains("Origin"));
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/",
    ] {
        let response = app.http.get(app.url(path)).header("origin", APP_ORIGIN).send().await.unwrap();
        assert_eq!(allow_origin(&response).as_deref(), Some(APP_ORIGIN), "{path}");
    }
}

#[tokio::test]
async fn configured_origins_are_allowed_and_pages_never_get_cors_headers() {
    let app =
        spawn_app_with(|settings| settings.cors_origin = vec!["http://localhost:3000".into()], None).await;
    let response = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(allow_origin(&response).as_deref(), Some("http://localhost:3000"));
    for path in ["/login", "/o/authorize", "/api/hello", "/docs", "/"] {
        let response =
            app.http.get(app.url(path)).header("origin", "http://localhost:3000").send().await.unwrap();
        assert_eq!(allow_origin(&response), None, "{path}");
    }
}

#[tokio::test]
async fn a_malformed_cors_origin_fails_at_start() {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut settings = portcullis::config::Settings::for_directories(data.path().into(), keys.path().into());
    settings.cors_origin = vec!["https://app.example.com/path".into()];
    let store: portcullis::store::SharedStore = std::sync::Arc::new(portcullis::store::MemoryStore::new());
    let error = portcullis::startup::App::build_with_store(settings, store).await.err().expect("refused");
    assert!(error.to_string().contains("--cors-origin"), "{error}");
}
