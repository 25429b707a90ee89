//! POST /o/token (RFC 6749 §3.2) as an OpenAPI operation. The protocol is in `oauth::token`; this
//! file maps its outcome to RFC 6749 §5.1–5.2 responses, all with `Cache-Control: no-store`.

use poem::Request;
use poem_openapi::auth::Basic;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};

use super::Tag;
use super::errors::OAuthErrorBody;
use super::form::{FormError, OAuthForm};
use crate::oauth::{AuthorizationServer, OAuthError};
use crate::startup::now;
use crate::throttle::{Throttles, retry_after_seconds};

/// HTTP Basic client authentication (`client_secret_basic`, RFC 6749 §2.3.1): the client id and
/// secret, each form-urlencoded.
#[derive(SecurityScheme)]
#[oai(rename = "clientBasic", ty = "basic")]
pub struct ClientBasic(#[allow(dead_code)] Basic);

/// Confidential clients authenticate with Basic or with `client_id` + `client_secret` in the
/// body (never both); public clients send `client_id` alone.
#[derive(SecurityScheme)]
pub enum TokenEndpointAuth {
    Basic(ClientBasic),
    #[oai(fallback)]
    Body,
}

/// A token request. Which fields apply depends on `grant_type`.
#[derive(Debug, Object)]
pub struct TokenRequest {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    #[oai(validator(min_length = 1))]
    pub grant_type: String,
    /// authorization_code: the code from the authorization response.
    pub code: Option<String>,
    /// authorization_code: the redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// authorization_code: the PKCE code verifier (RFC 7636).
    pub code_verifier: Option<String>,
    /// refresh_token: the refresh token.
    pub refresh_token: Option<String>,
    /// refresh_token, client_credentials: the scope wanted (space-separated); a refresh may
    /// only narrow it.
    pub scope: Option<String>,
    /// The client id, when not authenticating with Basic.
    pub client_id: Option<String>,
    /// The client secret of a confidential client not using Basic.
    pub client_secret: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Object)]
pub struct TokenResponseBody {
    /// An RFC 9068 JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// An opaque refresh token (authorization_code and refresh_token grants).
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
    /// The granted scope.
    pub scope: String,
    /// An OpenID Connect ID token (when the grant includes scope `openid`).
    #[oai(skip_serializing_if_is_none)]
    pub id_token: Option<String>,
}

/// The token response's payload: the schema and content type of `Json<TokenResponseBody>`, its
/// body written directly rather than through a `serde_json::Value` (a map of owned keys and
/// strings, built and then serialized for every token issued). The bytes are the same: fields in
/// their declared order, strings escaped as serde_json escapes them.
pub struct TokenJson(pub TokenResponseBody);

impl TokenJson {
    fn to_vec(&self) -> Vec<u8> {
        let body = &self.0;
        let mut out = Vec::with_capacity(
            96 + body.access_token.len()
                + body.refresh_token.as_ref().map_or(0, String::len)
                + body.id_token.as_ref().map_or(0, String::len)
                + body.scope.len(),
        );
        out.extend_from_slice(b"{\"access_token\":");
        json_string(&mut out, &body.access_token);
        out.extend_from_slice(b",\"token_type\":");
        json_string(&mut out, &body.token_type);
        out.extend_from_slice(b",\"expires_in\":");
        out.extend_from_slice(body.expires_in.to_string().as_bytes());
        if let Some(refresh_token) = &body.refresh_token {
            out.extend_from_slice(b",\"refresh_token\":");
            json_string(&mut out, refresh_token);
        }
        out.extend_from_slice(b",\"scope\":");
        json_string(&mut out, &body.scope);
        if let Some(id_token) = &body.id_token {
            out.extend_from_slice(b",\"id_token\":");
            json_string(&mut out, id_token);
        }
        out.push(b'}');
        out
    }
}

/// `value` as a JSON string. Tokens and scopes never hold a character JSON escapes, so they are
/// copied between quotes; anything else goes through serde_json.
fn json_string(out: &mut Vec<u8>, value: &str) {
    // A fold without early exit, which the compiler vectorizes: tokens are a kilobyte or more.
    let escaped =
        value.bytes().fold(false, |any, byte| any | (byte < 0x20) | (byte == b'"') | (byte == b'\\'));
    if !escaped {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, value).expect("a string always serializes");
    }
}

impl poem_openapi::payload::Payload for TokenJson {
    const CONTENT_TYPE: &'static str =
        <Json<TokenResponseBody> as poem_openapi::payload::Payload>::CONTENT_TYPE;

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <Json<TokenResponseBody> as poem_openapi::payload::Payload>::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <Json<TokenResponseBody> as poem_openapi::payload::Payload>::register(registry);
    }
}

impl poem::IntoResponse for TokenJson {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .content_type(<Self as poem_openapi::payload::Payload>::CONTENT_TYPE)
            .body(self.to_vec())
    }
}

const NO_STORE: &str = "no-store";
const NO_CACHE: &str = "no-cache";

#[derive(ApiResponse)]
#[oai(bad_request_handler = "token_request_unreadable")]
pub enum TokenResponse {
    /// Tokens issued.
    #[oai(status = 200)]
    Ok(TokenJson, #[oai(header = "Cache-Control")] String, #[oai(header = "Pragma")] String),
    /// `invalid_request`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type` or
    /// `invalid_scope`.
    #[oai(status = 400)]
    BadRequest(
        Json<OAuthErrorBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// `invalid_client`: unknown client, wrong or missing secret.
    #[oai(status = 401)]
    Unauthorized(
        Json<OAuthErrorBody>,
        #[oai(header = "WWW-Authenticate")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// `temporarily_unavailable`: too many failed client authentications from this client or
    /// address; retry after the given seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<OAuthErrorBody>,
        #[oai(header = "Retry-After")] u64,
        #[oai(header = "Cache-Control")] String,
    ),
    /// `invalid_request`: the body did not arrive in time.
    #[oai(status = 408)]
    RequestTimeout(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
    /// `invalid_request`: the body is larger than 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
    /// `server_error`.
    #[oai(status = 500)]
    ServerError(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem_openapi::types::ToJSON;

    fn body(refresh_token: Option<&str>, id_token: Option<&str>, scope: &str) -> TokenResponseBody {
        TokenResponseBody {
            access_token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: refresh_token.map(str::to_owned),
            scope: scope.into(),
            id_token: id_token.map(str::to_owned),
        }
    }

    #[test]
    fn the_token_body_is_what_json_of_it_would_be() {
        for body in [
            body(None, None, "read"),
            body(Some("AAAA-_x"), None, "read write"),
            body(Some("r"), Some("i.d.t"), "openid profile"),
            body(None, None, "quote\" backslash\\ control\u{1} é"),
        ] {
            let expected = serde_json::to_vec(&body.to_json()).unwrap();
            assert_eq!(
                String::from_utf8(TokenJson(body).to_vec()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}

impl From<&OAuthError> for TokenResponse {
    /// RFC 6749 §5.2: 400, or 401 with `WWW-Authenticate` for `invalid_client`.
    fn from(error: &OAuthError) -> TokenResponse {
        let body = Json(OAuthErrorBody::from(error));
        match error {
            OAuthError::InvalidClient(_) => TokenResponse::Unauthorized(
                body,
                "Basic realm=\"portcullis\", charset=\"UTF-8\"".into(),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            OAuthError::Server(_) => TokenResponse::ServerError(body, NO_STORE.into()),
            _ => TokenResponse::BadRequest(body, NO_STORE.into(), NO_CACHE.into()),
        }
    }
}

/// Extractor failures (wrong content type, oversized or unreadable body) as RFC 6749 JSON.
fn token_request_unreadable(error: poem::Error) -> TokenResponse {
    if let Some(form) = error.downcast_ref::<FormError>() {
        if form.status == poem::http::StatusCode::PAYLOAD_TOO_LARGE {
            return TokenResponse::PayloadTooLarge(Json(OAuthErrorBody::from(&form.error)), NO_STORE.into());
        }
        if form.status == poem::http::StatusCode::REQUEST_TIMEOUT {
            return TokenResponse::RequestTimeout(Json(OAuthErrorBody::from(&form.error)), NO_STORE.into());
        }
        return TokenResponse::from(&form.error);
    }
    let reason = match error.downcast_ref::<poem_openapi::error::ContentTypeError>() {
        Some(_) => {
            format!("the body must be application/x-www-form-urlencoded (RFC 6749 §3.2): {error}")
        }
        None => format!("the request could not be read: {error}"),
    };
    TokenResponse::from(&OAuthError::InvalidRequest(reason))
}

/// The `Authorization` header of a client-authenticating request, if it sent one. Two are
/// "multiple credentials", `invalid_request` (RFC 6749 §5.2); one that is not visible ASCII is
/// malformed credentials, not a missing header (the body's would be read instead).
pub fn client_authorization(request: &Request) -> Result<Option<&str>, OAuthError> {
    use crate::verify::poem::{UnreadableAuthorization, authorization_header};
    authorization_header(request).map_err(|unreadable| match unreadable {
        UnreadableAuthorization::Repeated => OAuthError::InvalidRequest(unreadable.reason().into()),
        UnreadableAuthorization::NotAscii => {
            OAuthError::InvalidClient(format!("malformed credentials: {}", unreadable.reason()))
        }
    })
}

/// The throttle keys of a client-authenticating request: the client id it names (Basic or body)
/// and the peer address.
pub fn throttle_keys(
    request: &Request,
    authorization: Option<&str>,
    params: &crate::oauth::Params,
) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    let client_id = match authorization {
        Some(header) => crate::oauth::client_auth::parse_basic(header).ok().map(|(id, _)| id),
        None => params.get("client_id").ok().flatten().map(str::to_owned),
    };
    if let Some(client_id) = client_id {
        keys.push(format!("client:{client_id}"));
    }
    if let Some(address) = request.remote_addr().as_socket_addr() {
        keys.push(format!("ip:{}", address.ip()));
    }
    keys
}

pub struct TokenApi;

#[OpenApi]
impl TokenApi {
    /// Token endpoint
    ///
    /// Exchanges an authorization code (with its PKCE verifier), a refresh token (rotated: the
    /// answer carries a new one, and presenting a used one revokes the whole grant) or client
    /// credentials for an RFC 9068 JWT access token.
    #[oai(path = "/o/token", method = "post", tag = "Tag::OAuth", operation_id = "token")]
    async fn token(
        &self,
        request: &Request,
        server: poem::web::Data<&AuthorizationServer>,
        _auth: TokenEndpointAuth,
        body: OAuthForm<TokenRequest>,
    ) -> TokenResponse {
        let authorization = match client_authorization(request) {
            Ok(authorization) => authorization,
            Err(error) => return TokenResponse::from(&error),
        };
        // Brute force on client secrets: the client id and the address, checked before the secret.
        let keys = throttle_keys(request, authorization, &body.params);
        if let Some(throttles) = request.data::<std::sync::Arc<Throttles>>()
            && let Err(wait) = throttles.client_auth.check(&keys, std::time::Instant::now())
        {
            let error = OAuthError::TemporarilyUnavailable(format!(
                "too many failed client authentications; retry in {} s",
                retry_after_seconds(wait)
            ));
            return TokenResponse::TooManyRequests(
                Json(OAuthErrorBody::from(&error)),
                retry_after_seconds(wait),
                NO_STORE.into(),
            );
        }
        let outcome = crate::oauth::token::exchange(server.0, authorization, &body.params, now()).await;
        if let (Err(OAuthError::InvalidClient(_)), Some(throttles)) =
            (&outcome, request.data::<std::sync::Arc<Throttles>>())
        {
            throttles.client_auth.failure(&keys, std::time::Instant::now());
        }
        match outcome {
            Ok(token) => {
                if let Some(grant) =
                    body.params.get("grant_type").ok().flatten().and_then(crate::domain::GrantType::parse)
                {
                    super::metrics::METRICS.record_token_issued(grant.as_str());
                }
                TokenResponse::Ok(
                    TokenJson(TokenResponseBody {
                        access_token: token.access_token,
                        token_type: token.token_type.into(),
                        expires_in: token.expires_in,
                        refresh_token: token.refresh_token,
                        scope: token.scope,
                        id_token: token.id_token,
                    }),
                    NO_STORE.into(),
                    NO_CACHE.into(),
                )
            }
            Err(error) => TokenResponse::from(&error),
        }
    }
}
