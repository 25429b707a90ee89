//! The OAuth 2.0 error vocabulary (RFC 6749 §4.1.2.1 and §5.2). Wire strings are spelled only in
//! [`OAuthError::code`]; each message says what the caller should fix.

use crate::keys::KeyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// "The request is missing a required parameter, includes an unsupported parameter value
    /// (other than grant type), repeats a parameter, includes multiple credentials, utilizes more
    /// than one mechanism for authenticating the client, or is otherwise malformed."
    #[error("{0}")]
    InvalidRequest(String),
    /// "Client authentication failed (e.g., unknown client, no client authentication included, or
    /// unsupported authentication method)."
    #[error("{0}")]
    InvalidClient(String),
    /// "The provided authorization grant (e.g., authorization code, resource owner credentials)
    /// or refresh token is invalid, expired, revoked, does not match the redirection URI used in
    /// the authorization request, or was issued to another client."
    #[error("{0}")]
    InvalidGrant(String),
    /// "The authenticated client is not authorized to use this authorization grant type."
    #[error("{0}")]
    UnauthorizedClient(String),
    /// "The authorization grant type is not supported by the authorization server."
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// "The requested scope is invalid, unknown, malformed, or exceeds the scope granted by the
    /// resource owner."
    #[error("{0}")]
    InvalidScope(String),
    /// "The resource owner or authorization server denied the request."
    #[error("{0}")]
    AccessDenied(String),
    /// "The authorization server does not support obtaining an authorization code using this
    /// method."
    #[error("{0}")]
    UnsupportedResponseType(String),
    /// OIDC Core §3.1.2.6: "The Authorization Server requires End-User authentication" and
    /// `prompt=none` forbids asking.
    #[error("{0}")]
    LoginRequired(String),
    /// OIDC Core §3.1.2.6: "The Authorization Server requires End-User consent" and
    /// `prompt=none` forbids asking.
    #[error("{0}")]
    ConsentRequired(String),
    /// OIDC Core §6.1 (and RFC 9101 §10.2): a `request` object, which this server does not
    /// support; "the OP MUST return the request_not_supported error".
    #[error("{0}")]
    RequestNotSupported(String),
    /// OIDC Core §6.2 (and RFC 9101 §10.2): a `request_uri`, which this server does not support.
    #[error("{0}")]
    RequestUriNotSupported(String),
    /// Too many failed attempts for this client or address: answered 429 with `Retry-After`.
    #[error("{0}")]
    TemporarilyUnavailable(String),
    /// "The authorization server encountered an unexpected condition that prevented it from
    /// fulfilling the request." The cause is logged once at the boundary, never sent.
    #[error("internal error: {0}")]
    Server(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl OAuthError {
    /// The `error` value on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::AccessDenied(_) => "access_denied",
            OAuthError::UnsupportedResponseType(_) => "unsupported_response_type",
            OAuthError::LoginRequired(_) => "login_required",
            OAuthError::ConsentRequired(_) => "consent_required",
            OAuthError::RequestNotSupported(_) => "request_not_supported",
            OAuthError::RequestUriNotSupported(_) => "request_uri_not_supported",
            OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
            OAuthError::Server(_) => "server_error",
        }
    }

    /// The `error_description` on the wire: what to fix. Internal causes are not disclosed.
    pub fn description(&self) -> String {
        match self {
            OAuthError::Server(_) => "the server could not complete the request; try again later".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn server(error: impl std::error::Error + Send + Sync + 'static) -> OAuthError {
        OAuthError::Server(Box::new(error))
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> OAuthError {
        OAuthError::server(error)
    }
}

impl From<KeyError> for OAuthError {
    fn from(error: KeyError) -> OAuthError {
        OAuthError::server(error)
    }
}
