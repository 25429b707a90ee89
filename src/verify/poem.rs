//! poem integration: the [`VerifiedToken`] extractor. Add an `Arc<Verifier>` to the app with
//! `.data(verifier)`, take `VerifiedToken` as a handler argument, and requests without a valid
//! token are answered as RFC 6750 §3 says: 401 with `WWW-Authenticate: Bearer` (and
//! `error="invalid_token"` when a token was sent), 400 `invalid_request` when it came in more
//! than one `Authorization` header, 403 `insufficient_scope` from [`VerifiedToken::require_scope`].
//!
//! The token is read from the `Authorization` header (RFC 6750 §2.1) or, for a request without
//! one that POSTs (or PUTs...) a form, from the form's `access_token` field (§2.2); the body is
//! put back for the handler to read. A token in the URI query (§2.3) is refused, and so is a
//! request that sends it both in the header and in a form body of at most 64 KiB (§2, §3.1).

use std::borrow::Cow;
use std::sync::Arc;

use poem::error::ResponseError;
use poem::http::{Method, StatusCode, header};
use poem::{Body, FromRequest, Request, RequestBody, Response};

use super::{AccessTokenClaims, Verifier, VerifyError};

/// The claims of a verified bearer token.
#[derive(Debug, Clone)]
pub struct VerifiedToken(pub AccessTokenClaims);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No `Authorization: Bearer` header (or another scheme): no error code (RFC 6750 §3.1).
    #[error("this resource needs a bearer access token")]
    Missing,
    /// A request that cannot be read unambiguously (RFC 6750 §3.1 `invalid_request`, 400).
    #[error("{0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Invalid(VerifyError),
    /// A token that verifies but that the resource refuses, e.g. because it does not know its
    /// subject (`invalid_token`, 401); the text says why.
    #[error("{0}")]
    Rejected(String),
    #[error("this resource needs scope {0}")]
    InsufficientScope(String),
    #[error("the application has no Verifier: add one with .data(Arc<Verifier>)")]
    NotConfigured,
}

impl BearerError {
    /// The RFC 6750 §3 error code, if any.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            BearerError::Malformed(_) => Some("invalid_request"),
            BearerError::Invalid(_) | BearerError::Rejected(_) => Some("invalid_token"),
            BearerError::InsufficientScope(_) => Some("insufficient_scope"),
            BearerError::Missing | BearerError::NotConfigured => None,
        }
    }

    /// The `WWW-Authenticate` header value for `realm`.
    pub fn challenge(&self, realm: &str) -> String {
        let mut challenge = format!("Bearer realm=\"{realm}\"");
        if let Some(code) = self.code() {
            // RFC 6750 §3: error_description holds only %x20-21 / %x23-5B / %x5D-7E (visible
            // ASCII and space, without '"' or '\'). The JSON body keeps the whole text.
            let description: String = self
                .to_string()
                .replace('§', "section ")
                .chars()
                .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
                .collect();
            challenge.push_str(&format!(", error=\"{code}\", error_description=\"{description}\""));
        }
        if let BearerError::InsufficientScope(scope) = self {
            challenge.push_str(&format!(", scope=\"{scope}\""));
        }
        challenge
    }
}

impl ResponseError for BearerError {
    fn status(&self) -> StatusCode {
        match self {
            BearerError::Malformed(_) => StatusCode::BAD_REQUEST,
            BearerError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            BearerError::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn as_response(&self) -> Response {
        let body = match self.code() {
            Some(code) => serde_json::json!({ "error": code, "error_description": self.to_string() }),
            None => serde_json::json!({}),
        };
        Response::builder()
            .status(self.status())
            .header(header::WWW_AUTHENTICATE, self.challenge("api"))
            .header(header::CACHE_CONTROL, "no-store")
            .content_type("application/json")
            .body(body.to_string())
    }
}

/// Why a request's `Authorization` header cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadableAuthorization {
    /// More than one. Which to believe would be a guess: `Authorization` is not a list field, so
    /// it may appear once (RFC 9110 §5.3).
    Repeated,
    /// Bytes that are not visible ASCII: malformed credentials, never a missing header.
    NotAscii,
}

impl UnreadableAuthorization {
    pub fn reason(self) -> &'static str {
        match self {
            UnreadableAuthorization::Repeated => {
                "the request has more than one Authorization header; send one (RFC 9110 §5.3)"
            }
            UnreadableAuthorization::NotAscii => {
                "the Authorization header holds bytes that are not visible ASCII"
            }
        }
    }
}

/// The request's one `Authorization` header, if it sent one. Every reader of the header goes
/// through it (this extractor, and the server's client authentication).
pub fn authorization_header(request: &Request) -> Result<Option<&str>, UnreadableAuthorization> {
    let mut headers = request.headers().get_all(header::AUTHORIZATION).iter();
    match (headers.next(), headers.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(UnreadableAuthorization::Repeated),
        (Some(value), None) => value.to_str().map(Some).map_err(|_| UnreadableAuthorization::NotAscii),
    }
}

/// The bearer token of a request (RFC 6750 §2.1), if it sent one; `Malformed` when its
/// `Authorization` header cannot be read ([`authorization_header`]): RFC 6750 §3.1 makes a
/// request that carries its token more than once, or is otherwise malformed, `invalid_request`.
///
/// A token in the URI query (RFC 6750 §2.3) is refused as `Malformed`, not ignored: a URI ends up
/// in logs, histories and `Referer` headers (§5.3: "don't pass bearer tokens in page URLs"), and a
/// caller whose token went unread would be told only that it sent none.
pub fn bearer_token(request: &Request) -> Result<Option<&str>, BearerError> {
    let query = request.uri().query().unwrap_or_default();
    if form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "access_token") {
        return Err(BearerError::Malformed(
            "the access token is not read from the URI query (RFC 6750 §2.3, §5.3): send it in the Authorization header, `Authorization: Bearer <token>`",
        ));
    }
    let value =
        authorization_header(request).map_err(|unreadable| BearerError::Malformed(unreadable.reason()))?;
    let Some((scheme, token)) = value.and_then(|value| value.split_once(' ')) else {
        return Ok(None);
    };
    let token = token.trim();
    Ok((scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

/// The media type of a `Content-Type` value, without its parameters (`; charset=...`).
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// The largest form body searched for an `access_token` (RFC 6750 §2.2).
pub const MAX_FORM_BODY_BYTES: usize = 64 * 1024;

/// The `access_token` of a form body (RFC 6750 §2.2). Only a form, and not with GET or HEAD
/// (§2.2: "the GET method MUST NOT be used"). The body is put back, so the handler still reads
/// it whole.
async fn form_body_token(request: &Request, body: &mut RequestBody) -> Result<Option<String>, BearerError> {
    if matches!(*request.method(), Method::GET | Method::HEAD)
        || !media_type(request.content_type().unwrap_or_default())
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Ok(None);
    }
    let Ok(taken) = body.take() else {
        return Ok(None); // another extractor read it first
    };
    let bytes = taken
        .into_bytes_limit(MAX_FORM_BODY_BYTES)
        .await
        .map_err(|_| BearerError::Malformed("the form body could not be read, or is larger than 64 KiB"))?;
    let mut tokens =
        form_urlencoded::parse(&bytes).filter(|(name, _)| name == "access_token").map(|(_, value)| value);
    let token = match (tokens.next(), tokens.next()) {
        (_, Some(_)) => Err(BearerError::Malformed("the form body has more than one access_token; send one")),
        (token, None) => Ok(token.filter(|token| !token.is_empty()).map(|token| token.into_owned())),
    };
    *body = RequestBody::new(Body::from(bytes));
    token
}

/// The body length a request declares in its `Content-Length` header, if it declares one.
fn declared_length(request: &Request) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

impl<'a> FromRequest<'a> for VerifiedToken {
    async fn from_request(request: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let verifier = request.data::<Arc<Verifier>>().ok_or(BearerError::NotConfigured)?;
        let token = match bearer_token(request)? {
            Some(token) => {
                // RFC 6750 §2: "Clients MUST NOT use more than one method to transmit the token
                // in each request", and §3.1 makes such a request `invalid_request`: which token
                // counts would be a guess. A form body with a declared length within the limit is
                // searched (it is read whole anyway by a handler that takes a form); a larger or
                // chunked one is left unread, so that a handler with a higher limit still gets it.
                if declared_length(request).is_some_and(|length| length <= MAX_FORM_BODY_BYTES as u64)
                    && form_body_token(request, body).await?.is_some()
                {
                    return Err(BearerError::Malformed(
                        "the request carries an access token both in the Authorization header and in the form body; send it one way (RFC 6750 §2)",
                    )
                    .into());
                }
                Cow::Borrowed(token)
            }
            None => Cow::Owned(form_body_token(request, body).await?.ok_or(BearerError::Missing)?),
        };
        match verifier.verify_refreshing_keys(&token, unix_now()).await {
            Ok(claims) => Ok(VerifiedToken(claims)),
            Err(error) => Err(BearerError::Invalid(error).into()),
        }
    }
}

impl VerifiedToken {
    /// The claims, if the token carries `scope`; else `insufficient_scope` (403).
    pub fn require_scope(&self, scope: &str) -> Result<&AccessTokenClaims, BearerError> {
        if self.0.has_scope(scope) {
            Ok(&self.0)
        } else {
            Err(BearerError::InsufficientScope(scope.to_owned()))
        }
    }
}
