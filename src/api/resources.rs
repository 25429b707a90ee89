//! The example protected resource and health. `/api/hello` answers as RFC 6750 §3 says: 401 with
//! a bare `WWW-Authenticate: Bearer` challenge when no token came, 401 `invalid_token` for a bad
//! one, 403 `insufficient_scope` when `read` is missing.

use poem_openapi::auth::Bearer;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OAuthScopes, Object, OpenApi, SecurityScheme};

use super::Tag;
use super::errors::{BearerErrorBody, BearerErrorCode, OAuthErrorBody};
use crate::oauth::{AuthorizationServer, OAuthError, TokenStanding};
use crate::startup::now;
use crate::verify::VerifyError;
use crate::verify::poem::{BearerError, VerifiedToken};

/// The scopes this server's own resources know.
#[derive(OAuthScopes)]
pub enum Scopes {
    /// OpenID Connect sign-in: an ID token, and `/o/userinfo`.
    #[oai(rename = "openid")]
    OpenId,
    /// Your name and username (OpenID Connect).
    #[oai(rename = "profile")]
    Profile,
    /// Your e-mail address (OpenID Connect).
    #[oai(rename = "email")]
    Email,
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

/// The schemes a protected resource accepts, for the OpenAPI document. It reads only the first
/// `Authorization` header, so handlers take `VerifiedToken` before it: a request with two is
/// refused whatever the first one is.
#[derive(SecurityScheme)]
pub enum ResourceAuth {
    OAuth2(OAuth2),
    Bearer(BearerToken),
}

/// UserInfo by POST: the same schemes, or the token as `access_token` in the form body (RFC
/// 6750 §2.2), which no security scheme can describe, hence the fallback. `VerifiedToken`
/// still refuses a request that carries no token.
#[derive(SecurityScheme)]
pub enum UserinfoPostAuth {
    OAuth2(OAuth2),
    Bearer(BearerToken),
    #[oai(fallback)]
    FormBody,
}

/// A protected resource's answers (RFC 6750 §3): `$ok` on success, 400 for a request that is not
/// readable, 401 without or with a bad token, 403 without the scope. `$handler` maps extractor failures.
macro_rules! protected_response {
    ($name:ident, $handler:ident, $handler_name:literal, $ok:ty, $ok_doc:literal, $scope_doc:literal) => {
        #[derive(ApiResponse)]
        #[oai(bad_request_handler = $handler_name)]
        pub enum $name {
            #[doc = $ok_doc]
            #[oai(status = 200)]
            Ok($ok),
            /// `invalid_request`: more than one `Authorization` header, one that is not visible
            /// ASCII, an `access_token` in the URI query (not supported: it would be logged), or
            /// the token both in the header and in the form body.
            #[oai(status = 400)]
            BadRequest(Json<BearerErrorBody>, #[oai(header = "WWW-Authenticate")] String),
            /// No token (bare challenge), or `invalid_token`: malformed, badly signed, expired,
            /// revoked, of a deleted client, for another issuer or audience, or (UserInfo) for no
            /// user.
            #[oai(status = 401)]
            Unauthorized(Json<BearerErrorBody>, #[oai(header = "WWW-Authenticate")] String),
            #[doc = $scope_doc]
            #[oai(status = 403)]
            Forbidden(Json<BearerErrorBody>, #[oai(header = "WWW-Authenticate")] String),
            /// `server_error`.
            #[oai(status = 500)]
            ServerError(Json<OAuthErrorBody>),
        }

        impl From<BearerError> for $name {
            fn from(error: BearerError) -> $name {
                let (body, challenge) = refusal(&error);
                match error {
                    BearerError::Malformed(_) => $name::BadRequest(Json(body), challenge),
                    BearerError::InsufficientScope(_) => $name::Forbidden(Json(body), challenge),
                    _ => $name::Unauthorized(Json(body), challenge),
                }
            }
        }

        impl From<OAuthError> for $name {
            fn from(error: OAuthError) -> $name {
                $name::ServerError(Json(OAuthErrorBody::from(&error)))
            }
        }

        /// Extractor failures: RFC 6750 §3.1, a request without a bearer token (none, or another
        /// scheme) gets the challenge without an error code; a bad token gets `invalid_token`.
        fn $handler(error: poem::Error) -> $name {
            match error.downcast_ref::<BearerError>() {
                Some(bearer) => $name::from(bearer.clone()),
                None => $name::from(BearerError::Missing),
            }
        }
    };
}

/// The body and `WWW-Authenticate` challenge of a refused request.
fn refusal(error: &BearerError) -> (BearerErrorBody, String) {
    let code = error.code();
    if let Some(code) = code {
        super::metrics::METRICS.record_oauth_error(code);
    }
    let code = match code {
        Some("invalid_request") => Some(BearerErrorCode::InvalidRequest),
        Some("invalid_token") => Some(BearerErrorCode::InvalidToken),
        Some("insufficient_scope") => Some(BearerErrorCode::InsufficientScope),
        _ => None,
    };
    let body = BearerErrorBody {
        error: code,
        error_description: code.map(|_| error.to_string()),
        scope: match error {
            BearerError::InsufficientScope(scope) => Some(scope.clone()),
            _ => None,
        },
    };
    (body, error.challenge("portcullis"))
}

protected_response!(
    HelloResponse,
    hello_refused,
    "hello_refused",
    PlainText<String>,
    "`Hello, there!!`",
    "`insufficient_scope`: the token lacks scope `read`."
);
protected_response!(
    UserinfoResponse,
    userinfo_refused,
    "userinfo_refused",
    Json<serde_json::Value>,
    "The user's claims: `sub`; `name`, `preferred_username` with scope `profile`; `email`, `email_verified` with scope `email` (OpenID Connect Core §5.1).",
    "`insufficient_scope`: the token lacks scope `openid`."
);

/// Whether this server revoked the token, or deleted its client (offline verification knows
/// only what the revocation feed told it).
async fn check_not_revoked(
    server: &AuthorizationServer,
    token: &VerifiedToken,
) -> Result<(), Result<BearerError, OAuthError>> {
    match server.access_token_standing(&token.0, now()).await {
        Ok(TokenStanding::Good) => Ok(()),
        Ok(TokenStanding::Revoked) => Err(Ok(BearerError::Invalid(VerifyError::Revoked))),
        Ok(TokenStanding::ClientDeleted) => {
            Err(Ok(BearerError::Rejected("the token's client has been deleted".into())))
        }
        Err(error) => Err(Err(error)),
    }
}

async fn userinfo(server: &AuthorizationServer, token: VerifiedToken) -> UserinfoResponse {
    match check_not_revoked(server, &token).await {
        Ok(()) => {}
        Err(Ok(refused)) => return UserinfoResponse::from(refused),
        Err(Err(error)) => return UserinfoResponse::from(error),
    }
    if let Err(refused) = token.require_scope(crate::oauth::oidc::OPENID) {
        return UserinfoResponse::from(refused);
    }
    let user = match server.store.user(&token.0.sub).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            // A valid token whose subject is no user: client_credentials names the client.
            let reason = match token.0.auth_time {
                None => {
                    "the token was issued to a client (client_credentials), not to a user: UserInfo needs a token from the authorization_code flow"
                }
                Some(_) => "the token's user no longer exists",
            };
            return UserinfoResponse::from(BearerError::Rejected(reason.into()));
        }
        Err(error) => return UserinfoResponse::from(OAuthError::from(error)),
    };
    let scope = crate::domain::Scope::parse(&token.0.scope).unwrap_or_default();
    UserinfoResponse::Ok(Json(serde_json::Value::Object(crate::oauth::oidc::user_claims(&user, &scope))))
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
        token: VerifiedToken,
        #[oai(scope = "Scopes::Read")] _auth: ResourceAuth,
    ) -> HelloResponse {
        // Offline verification is done; this server also knows its revocations.
        match check_not_revoked(server.0, &token).await {
            Ok(()) => {}
            Err(Ok(refused)) => return HelloResponse::from(refused),
            Err(Err(error)) => return HelloResponse::from(error),
        }
        match token.require_scope("read") {
            Ok(_) => HelloResponse::Ok(PlainText("Hello, there!!".into())),
            Err(error) => HelloResponse::from(error),
        }
    }

    /// OpenID Connect UserInfo (GET)
    ///
    /// Needs an access token with scope `openid`.
    #[oai(path = "/o/userinfo", method = "get", tag = "Tag::OAuth", operation_id = "userinfo")]
    async fn userinfo_get(
        &self,
        server: poem::web::Data<&AuthorizationServer>,
        token: VerifiedToken,
        #[oai(scope = "Scopes::OpenId")] _auth: ResourceAuth,
    ) -> UserinfoResponse {
        userinfo(server.0, token).await
    }

    /// OpenID Connect UserInfo (POST)
    ///
    /// The same as GET, for clients that POST (OpenID Connect Core §5.3.1). The token may also
    /// come as `access_token` in an `application/x-www-form-urlencoded` body (RFC 6750 §2.2).
    #[oai(path = "/o/userinfo", method = "post", tag = "Tag::OAuth", operation_id = "userinfoPost")]
    async fn userinfo_post(
        &self,
        server: poem::web::Data<&AuthorizationServer>,
        token: VerifiedToken,
        #[oai(scope = "Scopes::OpenId")] _auth: UserinfoPostAuth,
    ) -> UserinfoResponse {
        userinfo(server.0, token).await
    }

    /// Liveness
    #[oai(path = "/healthz", method = "get", tag = "Tag::Resources", operation_id = "health")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }
}
