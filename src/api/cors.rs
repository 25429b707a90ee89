//! CORS for the endpoints a browser application calls directly (token, revocation, userinfo,
//! discovery, JWKS, the revocation feed). An
//! origin is allowed when it is in `--cors-origin` or is the origin of a redirect URI some client
//! registered: a single-page app registered with `https://app.example/cb` may call the token
//! endpoint from `https://app.example`. Other origins, and every HTML page, get no CORS headers.
//! No credentials mode: these endpoints never read cookies.

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::oauth::AuthorizationServer;

/// The paths that answer cross-origin requests.
pub const CORS_PATHS: [&str; 7] = [
    "/o/userinfo",
    "/o/revoked_tokens",
    "/o/token",
    "/o/revoke_token",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
];

/// The configured origins, normalized (`scheme://host[:port]`).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<String>);

/// `scheme://host[:port]` of an origin or URL, or `None` when it has no such origin.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

async fn is_allowed(request: &Request, origin: &str) -> bool {
    let Some(normalized) = normalize_origin(origin) else {
        return false;
    };
    // The Origin header is already serialized; anything else (a path, a trailing slash) is not
    // an origin a browser would send.
    if normalized != origin {
        return false;
    }
    if request.data::<CorsOrigins>().is_some_and(|configured| configured.0.contains(&normalized)) {
        return true;
    }
    let Some(server) = request.data::<AuthorizationServer>() else {
        return false;
    };
    match server.store.clients().await {
        Ok(clients) => clients.iter().any(|client| {
            client.allowed_origins.contains(&normalized)
                || client.redirect_uris.iter().any(|uri| uri.origin().as_deref() == Some(normalized.as_str()))
        }),
        Err(error) => {
            tracing::error!(%error, "could not read clients for a CORS check");
            false
        }
    }
}

/// Runs `endpoint`, answering preflights and adding CORS headers where the origin is allowed.
pub async fn with_cors<E: Endpoint>(endpoint: &E, request: Request) -> poem::Result<Response> {
    let path = request.uri().path();
    let origin = request.header(header::ORIGIN).map(str::to_owned);
    let (Some(origin), true) = (origin, CORS_PATHS.contains(&path)) else {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    };
    let allowed = is_allowed(&request, &origin).await;
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let origin_value = HeaderValue::from_str(&origin).ok().filter(|_| allowed);
    if preflight {
        let Some(origin_value) = origin_value else {
            return Ok(Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header(header::VARY, "Origin")
                .content_type("text/plain; charset=utf-8")
                .body("this origin may not call this endpoint: register a redirect URI on it, or add it with --cors-origin"));
        };
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin_value)
            .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")
            .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type")
            .header(header::ACCESS_CONTROL_MAX_AGE, "600")
            .header(header::VARY, "Origin")
            .finish());
    }
    let mut response = endpoint.call(request).await.map(IntoResponse::into_response)?;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin_value) = origin_value {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin_value);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("WWW-Authenticate"));
    }
    Ok(response)
}
