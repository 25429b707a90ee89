//! The JSON side of HTTP: the token endpoint, discovery, JWKS, the example protected resource and
//! health. This is where `OAuthError` becomes a status code and headers (RFC 6749 §5.2, RFC 6750
//! §3), and where bodies are size-bounded before anything parses them.

use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, post};
use serde_json::json;

use crate::oauth::{AuthorizationServer, OAuthError, Params};
use crate::startup::now;

/// The largest request body accepted by form endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route of the server.
pub fn routes(server: AuthorizationServer) -> impl Endpoint {
    Route::new()
        .at("/.well-known/oauth-authorization-server", get(discovery))
        .at("/.well-known/openid-configuration", get(discovery))
        .at("/.well-known/jwks.json", get(jwks_endpoint))
        .at("/o/token", post(token_endpoint))
        .at("/api/hello", get(hello))
        .at("/healthz", get(healthz))
        .at(
            "/o/authorize",
            get(crate::web::authorize_get).post(crate::web::authorize_post),
        )
        .at(
            "/login",
            get(crate::web::login_get).post(crate::web::login_post),
        )
        .at("/logout", post(crate::web::logout))
        .at("/static/portcullis.css", get(crate::web::stylesheet))
        .at("/", get(crate::web::index))
        .data(server)
        .around(|endpoint, request| async move { dispatch(endpoint, request).await })
}

/// Runs every request: accepts paths with a trailing slash (DOT clients send one), logs method,
/// path and status (never the query, which may carry codes or state), and turns any error poem
/// raises itself (unknown path, wrong method) into a plain answer without internals.
async fn dispatch<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    mut request: Request,
) -> poem::Result<Response> {
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
    let response = match endpoint.call(request).await {
        Ok(response) => response.into_response(),
        Err(error) => {
            let status = error.status();
            let message = match status {
                StatusCode::NOT_FOUND => "not found".to_owned(),
                StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
                _ => error.to_string(),
            };
            Response::builder()
                .status(status)
                .content_type("text/plain; charset=utf-8")
                .body(message)
        }
    };
    tracing::info!(%method, path = %path, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    Ok(response)
}

/// A JSON response with `Cache-Control: no-store` (RFC 6749 §5.1).
fn no_store_json(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::PRAGMA, "no-cache")
        .content_type("application/json")
        .body(body.to_string())
}

/// RFC 6749 §5.2: 400 with a JSON `error`, or 401 with `WWW-Authenticate` for `invalid_client`.
pub fn oauth_error_response(error: &OAuthError) -> Response {
    if let OAuthError::Server(cause) = error {
        tracing::error!(error = %cause, "request failed inside the server");
    }
    let status = match error {
        OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
        OAuthError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = no_store_json(
        status,
        json!({ "error": error.code(), "error_description": error.description() }),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"portcullis\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Reads a urlencoded form body: the right content type, at most [`MAX_BODY_BYTES`].
pub async fn read_form(
    content_type: Option<&str>,
    body: poem::Body,
) -> Result<Params, (StatusCode, OAuthError)> {
    let essence = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err((
            StatusCode::BAD_REQUEST,
            OAuthError::InvalidRequest(format!(
                "the body must be application/x-www-form-urlencoded (RFC 6749 §3.2), not {:?}",
                if essence.is_empty() {
                    "nothing"
                } else {
                    essence
                }
            )),
        ));
    }
    let body = body
        .into_bytes_limit(MAX_BODY_BYTES)
        .await
        .map_err(|error| match error {
            poem::error::ReadBodyError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                OAuthError::InvalidRequest(format!(
                    "the body is larger than {MAX_BODY_BYTES} bytes"
                )),
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                OAuthError::InvalidRequest("the body could not be read".into()),
            ),
        })?;
    Params::parse(&body).map_err(|error| (StatusCode::BAD_REQUEST, error))
}

#[handler]
async fn token_endpoint(
    request: &Request,
    Data(server): Data<&AuthorizationServer>,
    body: poem::Body,
) -> Response {
    let params = match read_form(request.content_type(), body).await {
        Ok(params) => params,
        Err((status, error)) => {
            let mut response = oauth_error_response(&error);
            response.set_status(status);
            return response;
        }
    };
    let authorization = request.header(header::AUTHORIZATION);
    match crate::oauth::token::exchange(server, authorization, &params, now()).await {
        Ok(token) => no_store_json(
            StatusCode::OK,
            serde_json::to_value(token).unwrap_or_default(),
        ),
        Err(error) => oauth_error_response(&error),
    }
}

/// RFC 8414 §2 and OpenID Connect Discovery 1.0 §3: what exists now, nothing more.
#[handler]
fn discovery(Data(server): Data<&AuthorizationServer>) -> Response {
    let issuer = &server.config.issuer;
    let body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/o/authorize"),
        "token_endpoint": format!("{issuer}/o/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": ["read", "write"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    Response::builder()
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .content_type("application/json")
        .body(body.to_string())
}

#[handler]
fn jwks_endpoint(Data(server): Data<&AuthorizationServer>) -> Response {
    let body = server.keys().ring.jwks(now(), server.max_token_lifetime());
    // Short caching: a rotated key must reach verifiers well before the old one is dropped.
    Response::builder()
        .header(header::CACHE_CONTROL, "public, max-age=60")
        .content_type("application/jwk-set+json")
        .body(body.to_string())
}

#[handler]
fn healthz() -> Response {
    Response::builder()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// RFC 6750 §3: the `WWW-Authenticate: Bearer` challenge.
fn bearer_challenge(
    status: StatusCode,
    error: Option<(&str, &str)>,
    scope: Option<&str>,
) -> Response {
    let mut challenge = String::from("Bearer realm=\"portcullis\"");
    if let Some((code, description)) = error {
        challenge.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if let Some(scope) = scope {
        challenge.push_str(&format!(", scope=\"{scope}\""));
    }
    let mut body = json!({});
    if let Some((code, description)) = error {
        body = json!({ "error": code, "error_description": description });
    }
    Response::builder()
        .status(status)
        .header(header::WWW_AUTHENTICATE, challenge)
        .header(header::CACHE_CONTROL, "no-store")
        .content_type("application/json")
        .body(body.to_string())
}

/// The example protected resource: scope `read`, RFC 6750 answers.
#[handler]
async fn hello(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    let Some(authorization) = request.header(header::AUTHORIZATION) else {
        // RFC 6750 §3.1: no error code when the request carried no authentication.
        return bearer_challenge(StatusCode::UNAUTHORIZED, None, None);
    };
    let token = match authorization.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => {
            return bearer_challenge(
                StatusCode::BAD_REQUEST,
                Some((
                    "invalid_request",
                    "send the access token as Authorization: Bearer <token>",
                )),
                None,
            );
        }
    };
    let claims = match server.keys().verifier.verify(token, now()) {
        Ok(claims) => claims,
        Err(error) => {
            let description = error.to_string().replace('"', "'");
            return bearer_challenge(
                StatusCode::UNAUTHORIZED,
                Some(("invalid_token", &description)),
                None,
            );
        }
    };
    match server
        .store
        .is_access_token_revoked(&claims.jti, now())
        .await
    {
        Ok(false) => {}
        Ok(true) => {
            return bearer_challenge(
                StatusCode::UNAUTHORIZED,
                Some(("invalid_token", "the token has been revoked")),
                None,
            );
        }
        Err(error) => return oauth_error_response(&OAuthError::from(error)),
    }
    if !claims.has_scope("read") {
        return bearer_challenge(
            StatusCode::FORBIDDEN,
            Some(("insufficient_scope", "this resource needs scope read")),
            Some("read"),
        );
    }
    Response::builder()
        .content_type("text/plain; charset=utf-8")
        .body("Hello, there!!")
}
