//! POST /o/revoke_token (RFC 7009) and POST /o/introspect (RFC 7662) as OpenAPI operations.

use poem::Request;
use poem::http::header;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::Tag;
use super::errors::OAuthErrorBody;
use super::form::{FormError, OAuthForm};
use super::token::TokenEndpointAuth;
use crate::oauth::introspect::Introspection;
use crate::oauth::{AuthorizationServer, OAuthError};
use crate::startup::now;

/// A revocation or introspection request.
#[derive(Debug, Object)]
pub struct TokenRequestByValue {
    /// The access token or refresh token.
    pub token: String,
    /// `access_token` or `refresh_token`: which kind to look for first.
    pub token_type_hint: Option<String>,
    /// The client id, when not authenticating with Basic.
    pub client_id: Option<String>,
    /// The client secret of a confidential client not using Basic.
    pub client_secret: Option<String>,
}

/// RFC 7662 §2.2. Only `active` is present for an inactive token.
#[derive(Debug, Object)]
pub struct IntrospectionBody {
    /// Whether the token is valid now.
    pub active: bool,
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub client_id: Option<String>,
    /// `Bearer` for access tokens.
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub nbf: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub username: Option<String>,
}

impl From<Introspection> for IntrospectionBody {
    fn from(found: Introspection) -> IntrospectionBody {
        IntrospectionBody {
            active: found.active,
            scope: found.scope,
            client_id: found.client_id,
            token_type: found.token_type,
            exp: found.exp,
            iat: found.iat,
            nbf: found.nbf,
            sub: found.sub,
            aud: found.aud,
            iss: found.iss,
            jti: found.jti,
            username: found.username,
        }
    }
}

const NO_STORE: &str = "no-store";

/// The error answers shared by both endpoints (RFC 6749 §5.2, RFC 7009 §2.2.1).
macro_rules! client_endpoint_response {
    ($name:ident, $handler:literal, $ok:ty, $ok_doc:literal) => {
        #[derive(ApiResponse)]
        #[oai(bad_request_handler = $handler)]
        pub enum $name {
            #[doc = $ok_doc]
            #[oai(status = 200)]
            Ok($ok, #[oai(header = "Cache-Control")] String),
            /// `invalid_request`, or `unauthorized_client` when the token belongs to another client.
            #[oai(status = 400)]
            BadRequest(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
            /// `invalid_client`: unknown client, wrong or missing secret.
            #[oai(status = 401)]
            Unauthorized(
                Json<OAuthErrorBody>,
                #[oai(header = "WWW-Authenticate")] String,
                #[oai(header = "Cache-Control")] String,
            ),
            /// `invalid_request`: the body is larger than 64 KiB.
            #[oai(status = 413)]
            PayloadTooLarge(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
            /// `server_error`.
            #[oai(status = 500)]
            ServerError(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
        }

        impl From<&OAuthError> for $name {
            fn from(error: &OAuthError) -> $name {
                let body = Json(OAuthErrorBody::from(error));
                match error {
                    OAuthError::InvalidClient(_) => $name::Unauthorized(
                        body,
                        "Basic realm=\"portcullis\", charset=\"UTF-8\"".into(),
                        NO_STORE.into(),
                    ),
                    OAuthError::Server(_) => $name::ServerError(body, NO_STORE.into()),
                    _ => $name::BadRequest(body, NO_STORE.into()),
                }
            }
        }

        impl From<poem::Error> for $name {
            fn from(error: poem::Error) -> $name {
                match error.downcast_ref::<FormError>() {
                    Some(form) if form.status == poem::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        $name::PayloadTooLarge(Json(OAuthErrorBody::from(&form.error)), NO_STORE.into())
                    }
                    Some(form) => $name::from(&form.error),
                    None => $name::from(&OAuthError::InvalidRequest(format!(
                        "the body must be application/x-www-form-urlencoded: {error}"
                    ))),
                }
            }
        }
    };
}

client_endpoint_response!(
    RevokeResponse,
    "revoke_unreadable",
    Json<serde_json::Value>,
    "Revoked, or the token was unknown or already invalid (RFC 7009 §2.2): the body is `{}`."
);
client_endpoint_response!(
    IntrospectResponse,
    "introspect_unreadable",
    Json<IntrospectionBody>,
    "The token's state."
);

fn revoke_unreadable(error: poem::Error) -> RevokeResponse {
    RevokeResponse::from(error)
}

fn introspect_unreadable(error: poem::Error) -> IntrospectResponse {
    IntrospectResponse::from(error)
}

pub struct RevocationApi;

#[OpenApi]
impl RevocationApi {
    /// Revoke a token (RFC 7009)
    ///
    /// A refresh token revokes its whole grant, access tokens included; an access token is
    /// refused by this server (introspection, `/api/hello`) until it expires. Offline verifiers
    /// cannot see it: keep access tokens short-lived.
    #[oai(path = "/o/revoke_token", method = "post", tag = "Tag::OAuth", operation_id = "revokeToken")]
    async fn revoke(
        &self,
        request: &Request,
        server: poem::web::Data<&AuthorizationServer>,
        _auth: TokenEndpointAuth,
        body: OAuthForm<TokenRequestByValue>,
    ) -> RevokeResponse {
        let authorization = request.header(header::AUTHORIZATION);
        match crate::oauth::revoke::revoke(server.0, authorization, &body.params, now()).await {
            Ok(_) => RevokeResponse::Ok(Json(serde_json::json!({})), NO_STORE.into()),
            Err(error) => RevokeResponse::from(&error),
        }
    }

    /// Introspect a token (RFC 7662)
    ///
    /// For resource servers registered as confidential clients. Expired, revoked, malformed,
    /// unknown and other-audience tokens are `{"active": false}`.
    #[oai(path = "/o/introspect", method = "post", tag = "Tag::OAuth", operation_id = "introspect")]
    async fn introspect(
        &self,
        request: &Request,
        server: poem::web::Data<&AuthorizationServer>,
        _auth: TokenEndpointAuth,
        body: OAuthForm<TokenRequestByValue>,
    ) -> IntrospectResponse {
        let authorization = request.header(header::AUTHORIZATION);
        match crate::oauth::introspect::introspect(server.0, authorization, &body.params, now()).await {
            Ok(found) => IntrospectResponse::Ok(Json(found.into()), NO_STORE.into()),
            Err(error) => IntrospectResponse::from(&error),
        }
    }
}
