//! Error bodies on the wire: RFC 6749 §5.2 for the token endpoint, RFC 6750 §3 for protected
//! resources. Variants mirror `OAuthError` one to one; no wire string is spelled here.

use poem_openapi::{Enum, Object};

use crate::oauth::OAuthError;

/// RFC 6749 §5.2 / §4.1.2.1 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    LoginRequired,
    ConsentRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    TemporarilyUnavailable,
    ServerError,
}

/// An OAuth 2.0 error response (RFC 6749 §5.2).
#[derive(Debug, Clone, Object)]
pub struct OAuthErrorBody {
    /// The error code.
    pub error: OAuthErrorCode,
    /// What went wrong and how to fix it.
    pub error_description: String,
}

impl From<&OAuthError> for OAuthErrorBody {
    fn from(error: &OAuthError) -> OAuthErrorBody {
        if let OAuthError::Server(cause) = error {
            // Logged once, here at the boundary, with its cause; never sent.
            tracing::error!(error = %cause, "request failed inside the server");
        }
        let code = match error {
            OAuthError::InvalidRequest(_) => OAuthErrorCode::InvalidRequest,
            OAuthError::InvalidClient(_) => OAuthErrorCode::InvalidClient,
            OAuthError::InvalidGrant(_) => OAuthErrorCode::InvalidGrant,
            OAuthError::UnauthorizedClient(_) => OAuthErrorCode::UnauthorizedClient,
            OAuthError::UnsupportedGrantType(_) => OAuthErrorCode::UnsupportedGrantType,
            OAuthError::InvalidScope(_) => OAuthErrorCode::InvalidScope,
            OAuthError::AccessDenied(_) => OAuthErrorCode::AccessDenied,
            OAuthError::UnsupportedResponseType(_) => OAuthErrorCode::UnsupportedResponseType,
            OAuthError::LoginRequired(_) => OAuthErrorCode::LoginRequired,
            OAuthError::ConsentRequired(_) => OAuthErrorCode::ConsentRequired,
            OAuthError::RequestNotSupported(_) => OAuthErrorCode::RequestNotSupported,
            OAuthError::RequestUriNotSupported(_) => OAuthErrorCode::RequestUriNotSupported,
            OAuthError::TemporarilyUnavailable(_) => OAuthErrorCode::TemporarilyUnavailable,
            OAuthError::Server(_) => OAuthErrorCode::ServerError,
        };
        super::metrics::METRICS.record_oauth_error(error.code());
        OAuthErrorBody { error: code, error_description: error.description() }
    }
}

/// RFC 6750 §3.1 error codes for protected resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum BearerErrorCode {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

/// The body of a refused resource request; empty when the request carried no token.
#[derive(Debug, Clone, Object)]
pub struct BearerErrorBody {
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<BearerErrorCode>,
    #[oai(skip_serializing_if_is_none)]
    pub error_description: Option<String>,
    /// The scope the resource needs (with `insufficient_scope`).
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
}
