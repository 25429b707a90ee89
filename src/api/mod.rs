//! HTTP: every route of the server, the OpenAPI document and Swagger UI. The JSON endpoints are
//! poem-openapi operations (`token`, `well_known`, `resources`), so the document at
//! `/openapi.json` is generated from the same code that answers; the HTML pages are in `web/`.
//! This is where `OAuthError` becomes a status code and headers, and where bodies are bounded.

use poem::http::{StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, post};
use poem_openapi::{OpenApiService, Tags};

use crate::oauth::AuthorizationServer;
use crate::web::applications;

pub mod cors;
pub mod errors;
pub mod form;
pub mod metrics;
pub mod resources;
pub mod revocation;
pub mod token;
pub mod well_known;

pub use form::{MAX_BODY_BYTES, read_form};

#[derive(Tags)]
pub enum Tag {
    /// OAuth 2.0 endpoints (RFC 6749, RFC 7636).
    #[oai(rename = "OAuth 2.0")]
    OAuth,
    /// Discovery and keys: what a client or resource server reads first.
    Discovery,
    /// Protected resources and health.
    Resources,
}

type Apis = (
    token::TokenApi,
    revocation::RevocationApi,
    revocation::RevocationFeedApi,
    well_known::WellKnownApi,
    resources::ResourceApi,
);

fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            token::TokenApi,
            revocation::RevocationApi,
            revocation::RevocationFeedApi,
            well_known::WellKnownApi,
            resources::ResourceApi,
        ),
        "portcullis",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "An OAuth 2.0 authorization server whose access tokens are RFC 9068 JWTs, verifiable \
         offline against the JWKS. The authorization endpoint (`/o/authorize`) and the login and \
         consent pages are HTML and are not listed here; press Authorize to run them.",
    )
}

/// The OpenAPI document as served by a server whose issuer is `issuer`: the server URL and the
/// OAuth flow URLs are absolute (poem-openapi only takes literals).
pub fn openapi_document(issuer: &str) -> String {
    let raw = openapi_service().spec();
    let mut document: serde_json::Value = serde_json::from_str(&raw).expect("poem-openapi writes JSON");
    document["servers"] = serde_json::json!([{ "url": issuer }]);
    if let Some(schemes) = document.pointer_mut("/components/securitySchemes").and_then(|v| v.as_object_mut())
    {
        for scheme in schemes.values_mut() {
            let Some(flows) = scheme.get_mut("flows").and_then(|f| f.as_object_mut()) else {
                continue;
            };
            for flow in flows.values_mut() {
                for field in ["authorizationUrl", "tokenUrl", "refreshUrl"] {
                    if let Some(url) = flow.get_mut(field)
                        && let Some(path) = url.as_str().filter(|u| u.starts_with('/'))
                    {
                        *url = serde_json::Value::String(format!("{issuer}{path}"));
                    }
                }
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// Swagger UI with its assets inlined (works offline), PKCE on, and the `swagger-ui` client.
/// poem-openapi's page never calls `initOAuth`, so we keep a handle on the UI and call it.
pub fn swagger_ui_page(issuer: &str, document: &str) -> String {
    let service = openapi_service();
    let html = service.swagger_ui_html().replace(&service.spec(), document);
    let redirect = format!("{issuer}/docs/oauth2-redirect.html");
    let redirect = serde_json::to_string(&redirect).expect("a string serializes");
    html.replace("SwaggerUIBundle({", "window.ui = SwaggerUIBundle({")
        .replace("oauth2RedirectUrl: oauth2RedirectUrl,", &format!("oauth2RedirectUrl: {redirect},"))
        .replace(
            "deepLinking: true,\n    })",
            &format!(
                "deepLinking: true,\n        persistAuthorization: false,\n    }});\n    window.ui.initOAuth({{ clientId: {client}, usePkceWithAuthorizationCodeGrant: true, scopes: ['read'] }});",
                client = serde_json::to_string(crate::startup::SWAGGER_UI_CLIENT_ID).expect("a string serializes"),
            ),
        )
        .replace("<title>Swagger UI</title>", "<title>portcullis API</title>")
}

/// The paths of the OpenAPI operations (a test checks this list against the document).
pub const OPERATION_PATHS: [&str; 10] = [
    "/o/token",
    "/o/userinfo",
    "/o/revoke_token",
    "/o/introspect",
    "/o/revoked_tokens",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/api/hello",
    "/healthz",
];

/// Every route of the server.
pub fn routes(
    server: AuthorizationServer,
    cors_origins: cors::CorsOrigins,
    body_read_timeout: form::BodyReadTimeout,
) -> impl Endpoint {
    let document = openapi_document(&server.config.issuer);
    let docs_page = swagger_ui_page(&server.config.issuer, &document);
    // The operations keep their full paths: mount the one service at each of them, so that the
    // HTML routes (and `/`) stay separate.
    let operations = std::sync::Arc::new(poem::IntoEndpoint::into_endpoint(openapi_service()));
    let mut route = Route::new();
    for path in OPERATION_PATHS {
        route = route.at(path, operations.clone());
    }
    route
        .at(
            "/openapi.json",
            get(poem::endpoint::make_sync(move |_| {
                Response::builder().content_type("application/json").body(document.clone())
            })),
        )
        .at(
            "/docs",
            get(poem::endpoint::make_sync(move |_| {
                Response::builder().content_type("text/html; charset=utf-8").body(docs_page.clone())
            })),
        )
        .at("/docs/oauth2-redirect.html", get(swagger_oauth2_redirect))
        .at("/metrics", get(metrics_endpoint))
        .at("/o/authorize", get(crate::web::authorize_get).post(crate::web::authorize_post))
        .at("/login", get(crate::web::login_get).post(crate::web::login_post))
        .at("/logout", post(crate::web::logout))
        .at(
            "/account/password",
            get(crate::web::account::password_get).post(crate::web::account::password_post),
        )
        .at("/account/sign-out-others", post(crate::web::account::sign_out_others))
        .at(
            "/o/logout",
            get(crate::web::end_session::end_session_get).post(crate::web::end_session::end_session_post),
        )
        .at("/o/applications", get(applications::list))
        .at("/o/applications/register", get(applications::register_form).post(applications::register))
        .at("/o/applications/:client_id", get(applications::detail))
        .at("/o/applications/:client_id/update", get(applications::update_form).post(applications::update))
        .at("/o/applications/:client_id/rotate-secret", post(applications::rotate))
        .at("/o/applications/:client_id/delete", get(applications::delete_form).post(applications::delete))
        .at("/o/authorized_tokens", get(applications::authorized_tokens))
        .at("/o/authorized_tokens/:grant_id/delete", post(applications::revoke_grant))
        .at("/static/portcullis.css", get(crate::web::stylesheet))
        .at("/", get(crate::web::index))
        .around(|endpoint, request| async move { dispatch(endpoint, request).await })
        .data(server.verifier.clone())
        .data(std::sync::Arc::new(revocation::FeedCache::default()))
        .data(std::sync::Arc::new(crate::throttle::Throttles::default()))
        .data(server)
        .data(cors_origins)
        .data(body_read_timeout)
}

/// Prometheus scrape target.
#[handler]
fn metrics_endpoint(poem::web::Data(server): poem::web::Data<&AuthorizationServer>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(metrics::METRICS.render(server.store.size_on_disk()))
}

/// Swagger UI's OAuth2 redirect page (from swagger-ui, Apache-2.0): hands the code to the page
/// that opened the sign-in window.
#[handler]
fn swagger_oauth2_redirect() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("Referrer-Policy", "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
        .body(include_str!("../../templates/swagger-oauth2-redirect.html"))
}
/// The methods each path answers (for `Allow` on a 405).
fn allowed_methods(path: &str) -> Option<&'static str> {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    Some(match path {
        "/o/token" | "/o/revoke_token" | "/o/introspect" | "/logout" | "/account/sign-out-others" => "POST",
        "/o/authorize" | "/login" | "/o/userinfo" | "/o/logout" | "/account/password" => "GET, POST",
        "/.well-known/oauth-authorization-server"
        | "/.well-known/openid-configuration"
        | "/.well-known/jwks.json"
        | "/o/revoked_tokens"
        | "/api/hello"
        | "/healthz"
        | "/openapi.json"
        | "/metrics"
        | "/docs"
        | "/docs/oauth2-redirect.html"
        | "/static/portcullis.css"
        | "/" => "GET",
        _ => return None,
    })
}

/// Runs every request: accepts paths with a trailing slash (DOT clients send one), logs method,
/// path and status (never the query, which may carry codes or state), and turns any error poem
/// raises itself (unknown path, wrong method) into a plain answer without internals.
async fn dispatch<E: Endpoint>(endpoint: std::sync::Arc<E>, mut request: Request) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rewritten = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rewritten.parse() {
            *request.uri_mut() = uri;
        }
    }
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = match cors::with_cors(&*endpoint, request).await {
        Ok(response) => response.into_response(),
        Err(error) => {
            let status = error.status();
            let message = match status {
                StatusCode::NOT_FOUND => "not found".to_owned(),
                StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
                _ => error.to_string(),
            };
            let mut response =
                Response::builder().status(status).content_type("text/plain; charset=utf-8").body(message);
            if status == StatusCode::METHOD_NOT_ALLOWED {
                // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
                if let Some(methods) = allowed_methods(&path) {
                    response
                        .headers_mut()
                        .insert(header::ALLOW, poem::http::HeaderValue::from_static(methods));
                }
            }
            response
        }
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::METRICS.record_request(&path, status, elapsed);
    tracing::info!(%method, path = %path, status, elapsed_us = elapsed.as_micros() as u64, "request");
    Ok(response)
}
