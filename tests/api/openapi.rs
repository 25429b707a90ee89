//! The committed OpenAPI document is the served one. `PORTCULLIS_WRITE_OPENAPI=1 cargo test
//! openapi` rewrites `openapi/openapi.json` after an intended change.

use crate::helpers::*;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
/// The issuer the committed document is written for: the default of `cargo run`.
const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = spawn_app_with(|settings| settings.issuer = Some(DEFAULT_ISSUER.into()), None).await;
    let response =
        app.http.get(format!("http://127.0.0.1:{}/openapi.json", app.server_port())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let served = response.text().await.unwrap();
    if std::env::var_os("PORTCULLIS_WRITE_OPENAPI").is_some() {
        std::fs::create_dir_all(std::path::Path::new(COMMITTED).parent().unwrap()).unwrap();
        std::fs::write(COMMITTED, &served).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        served == committed,
        "openapi/openapi.json differs from the served document: run `PORTCULLIS_WRITE_OPENAPI=1 cargo test openapi` and review the diff"
    );
}

#[tokio::test]
async fn the_document_describes_every_operation_and_the_security_schemes() {
    let app = spawn_app().await;
    let document: serde_json::Value =
        app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(document["servers"][0]["url"], app.address.as_str());
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    let mut mounted = portcullis::api::OPERATION_PATHS.to_vec();
    mounted.sort();
    assert_eq!(documented, mounted, "every operation is routed, every route documented");

    let token = &paths["/o/token"]["post"];
    for status in ["200", "400", "401", "413", "500"] {
        assert!(token["responses"][status].is_object(), "token documents {status}");
    }
    assert!(token["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    let hello = &paths["/api/hello"]["get"];
    for status in ["200", "401", "403"] {
        assert!(hello["responses"][status].is_object(), "hello documents {status}");
    }
    assert!(
        hello["security"]
            .as_array()
            .unwrap()
            .iter()
            .any(|requirement| requirement["oauth2"] == serde_json::json!(["read"]))
    );

    let schemes = &document["components"]["securitySchemes"];
    let flow = &schemes["oauth2"]["flows"]["authorizationCode"];
    assert_eq!(flow["authorizationUrl"], app.url("/o/authorize"), "the server's real URLs");
    assert_eq!(flow["tokenUrl"], app.url("/o/token"));
    assert!(flow["scopes"]["read"].is_string());
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["clientBasic"]["scheme"], "basic");
    let codes = &document["components"]["schemas"]["OAuthErrorCode"]["enum"];
    for code in [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    ] {
        assert!(codes.as_array().unwrap().contains(&code.into()), "{code}");
    }
}

#[tokio::test]
async fn swagger_ui_is_served_with_pkce_and_its_redirect_page() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("SwaggerUIBundle"), "assets are inlined");
    assert!(page.contains("usePkceWithAuthorizationCodeGrant: true"));
    assert!(page.contains("clientId: \"swagger-ui\""));
    let redirect = format!("{}/docs/oauth2-redirect.html", app.address);
    assert!(page.contains(&format!("oauth2RedirectUrl: \"{redirect}\"")));
    assert_eq!(app.http.get(&redirect).send().await.unwrap().status(), 200);
    assert_eq!(app.http.get(app.url("/docs/")).send().await.unwrap().status(), 200);
    let swagger = app.server.store.client("swagger-ui").await.unwrap().unwrap();
    assert_eq!(swagger.redirect_uris[0].as_str(), redirect, "registered with exactly that redirect URI");
}
