//! `OAuthForm<T>`: an `application/x-www-form-urlencoded` request body, described in the OpenAPI
//! document by the schema `T` but parsed by RFC 6749's rules ([`Params`]): bounded size, no
//! repeated parameters, empty values treated as absent.

use std::marker::PhantomData;

use poem::http::StatusCode;
use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;

use crate::oauth::{OAuthError, Params};
use crate::verify::poem::media_type;

/// The largest request body accepted by form endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct OAuthForm<T> {
    pub params: Params,
    schema: PhantomData<fn() -> T>,
}

/// A form that could not be read: the status to answer and why.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FormError {
    pub status: StatusCode,
    pub error: OAuthError,
}

impl From<FormError> for poem::Error {
    fn from(error: FormError) -> poem::Error {
        let status = error.status;
        poem::Error::new(error, status)
    }
}

/// How long a client may take to send its body (slow clients hold a connection and memory).
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub std::time::Duration);

impl Default for BodyReadTimeout {
    fn default() -> BodyReadTimeout {
        BodyReadTimeout(std::time::Duration::from_secs(10))
    }
}

/// Reads a urlencoded form body: the right content type, at most [`MAX_BODY_BYTES`], within the
/// app's [`BodyReadTimeout`] (408 otherwise).
pub async fn read_form(request: &Request, body: poem::Body) -> Result<Params, FormError> {
    let timeout = request.data::<BodyReadTimeout>().copied().unwrap_or_default();
    let essence = media_type(request.content_type().unwrap_or_default());
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(FormError {
            status: StatusCode::BAD_REQUEST,
            error: OAuthError::InvalidRequest(format!(
                "the body must be application/x-www-form-urlencoded (RFC 6749 §3.2), not {:?}",
                if essence.is_empty() { "nothing" } else { essence }
            )),
        });
    }
    let read =
        tokio::time::timeout(timeout.0, body.into_bytes_limit(MAX_BODY_BYTES)).await.map_err(|_| {
            FormError {
                status: StatusCode::REQUEST_TIMEOUT,
                error: OAuthError::InvalidRequest(format!(
                    "the body did not arrive within {} s",
                    timeout.0.as_secs()
                )),
            }
        })?;
    let bytes = read.map_err(|error| match error {
        poem::error::ReadBodyError::PayloadTooLarge => FormError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: OAuthError::InvalidRequest(format!("the body is larger than {MAX_BODY_BYTES} bytes")),
        },
        _ => FormError {
            status: StatusCode::BAD_REQUEST,
            error: OAuthError::InvalidRequest("the body could not be read".into()),
        },
    })?;
    Params::parse(&bytes).map_err(|error| FormError { status: StatusCode::BAD_REQUEST, error })
}

impl<T: Type> Payload for OAuthForm<T> {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";

    fn check_content_type(content_type: &str) -> bool {
        media_type(content_type).eq_ignore_ascii_case(Self::CONTENT_TYPE)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> ParsePayload for OAuthForm<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let params = read_form(request, body.take()?).await?;
        Ok(OAuthForm { params, schema: PhantomData })
    }
}

poem_openapi::impl_apirequest_for_payload!(OAuthForm<T>, T: Type);
