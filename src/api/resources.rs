//! The example protected resource and health. `/api/hello` answers as RFC 6750 §3 says: 401 with
//! a bare `WWW-Authenticate: Bearer` challenge when no token came, 401 `invalid_token` for a bad
//! one, 403 `insufficient_scope` when `read` is missing.

use poem_openapi::auth::Bearer;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OAuthScopes, Object, OpenApi, SecurityScheme};

use super::Tag;
use super::errors::{BearerErrorBody, BearerErrorCode, OAuthErrorBody};
use crate::oauth::{AuthorizationServer, OAuthError};
use crate::startup::now;
use crate::verify::VerifyError;
use crate::verify::poem::{BearerError, VerifiedToken};

/// The scopes this server's own resources know.
#[derive(OAuthScopes)]
pub enum Scopes {
    /// Read access (needed by /api/hello).
    #[oai(rename = "read")]
    Read,
    /// Write access.
    #[oai(rename = "write")]
    Write,
}

/// Sign in with the authorization code flow and PKCE (Swagger UI uses the public client
/// `swagger-ui`).
#[derive(SecurityScheme)]
#[oai(
    rename = "oauth2",
    ty = "oauth2",
    flows(authorization_code(
        authorization_url = "/o/authorize",
        token_url = "/o/token",
        scopes = "Scopes"
    ))
)]
pub struct OAuth2(#[allow(dead_code)] Bearer);

/// A bearer access token (RFC 6750 §2.1), e.g. from client_credentials.
#[derive(SecurityScheme)]
#[oai(rename = "bearer", ty = "bearer", bearer_format = "JWT")]
pub struct BearerToken(#[allow(dead_code)] Bearer);

#[derive(SecurityScheme)]
pub enum ResourceAuth {
    OAuth2(OAuth2),
    Bearer(BearerToken),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "no_bearer_token")]
pub enum HelloResponse {
    /// `Hello, there!!`
    #[oai(status = 200)]
    Ok(PlainText<String>),
    /// No token (bare challenge), or `invalid_token`: malformed, badly signed, expired, revoked,
    /// or for another issuer or audience.
    #[oai(status = 401)]
    Unauthorized(Json<BearerErrorBody>, #[oai(header = "WWW-Authenticate")] String),
    /// `insufficient_scope`: the token lacks scope `read`.
    #[oai(status = 403)]
    Forbidden(Json<BearerErrorBody>, #[oai(header = "WWW-Authenticate")] String),
    /// `server_error`.
    #[oai(status = 500)]
    ServerError(Json<OAuthErrorBody>),
}

impl From<BearerError> for HelloResponse {
    fn from(error: BearerError) -> HelloResponse {
        let challenge = error.challenge("portcullis");
        let code = match error.code() {
            Some("invalid_token") => Some(BearerErrorCode::InvalidToken),
            Some("insufficient_scope") => Some(BearerErrorCode::InsufficientScope),
            _ => None,
        };
        let body = BearerErrorBody {
            error: code,
            error_description: code.map(|_| error.to_string()),
            scope: match &error {
                BearerError::InsufficientScope(scope) => Some(scope.clone()),
                _ => None,
            },
        };
        match error {
            BearerError::InsufficientScope(_) => HelloResponse::Forbidden(Json(body), challenge),
            _ => HelloResponse::Unauthorized(Json(body), challenge),
        }
    }
}

/// Extractor failures: RFC 6750 §3.1, a request without a bearer token (none, or another
/// scheme) gets the challenge without an error code; a bad token gets `invalid_token`.
fn no_bearer_token(error: poem::Error) -> HelloResponse {
    match error.downcast_ref::<BearerError>() {
        Some(bearer) => HelloResponse::from(bearer.clone()),
        None => HelloResponse::from(BearerError::Missing),
    }
}

#[derive(Debug, Object)]
pub struct Health {
    /// `ok`
    pub status: String,
}

pub struct ResourceApi;

#[OpenApi]
impl ResourceApi {
    /// Example protected resource
    ///
    /// Needs an access token with scope `read`. Press Authorize, sign in, then try it.
    #[oai(path = "/api/hello", method = "get", tag = "Tag::Resources", operation_id = "hello")]
    async fn hello(
        &self,
        server: poem::web::Data<&AuthorizationServer>,
        #[oai(scope = "Scopes::Read")] _auth: ResourceAuth,
        token: VerifiedToken,
    ) -> HelloResponse {
        // Offline verification is done; this server also knows its revocations.
        match server.store.is_access_token_revoked(&token.0.jti, now()).await {
            Ok(false) => {}
            Ok(true) => return HelloResponse::from(BearerError::Invalid(VerifyError::Revoked)),
            Err(error) => {
                return HelloResponse::ServerError(Json(OAuthErrorBody::from(&OAuthError::from(error))));
            }
        }
        match token.require_scope("read") {
            Ok(_) => HelloResponse::Ok(PlainText("Hello, there!!".into())),
            Err(error) => HelloResponse::from(error),
        }
    }

    /// Liveness
    #[oai(path = "/healthz", method = "get", tag = "Tag::Resources", operation_id = "health")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }
}
