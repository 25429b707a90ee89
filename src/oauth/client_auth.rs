//! Client authentication at the token endpoint (RFC 6749 §2.3): HTTP Basic
//! (`client_secret_basic`) or body parameters (`client_secret_post`), never both at once; public
//! clients identify themselves with `client_id` alone (`none`).
//!
//! Unknown client, wrong secret and missing secret all answer `invalid_client` with the same
//! message, and an unknown client still costs one digest comparison, so neither the message nor the
//! timing tells an attacker which client ids exist.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{OAuthError, Params};
use crate::domain::Client;
use crate::secrets::secret_matches;
use crate::store::ClientStore;

/// How the client presented itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`.
    Basic { client_id: String, client_secret: String },
    /// `client_id` (and `client_secret` for confidential clients) in the body.
    Body { client_id: String, client_secret: Option<String> },
}

const AUTH_FAILED: &str = "client authentication failed: unknown client, or wrong or missing client secret";

/// A digest no secret hashes to, compared against when the client is unknown.
const DUMMY_SECRET_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Parses an `Authorization: Basic` header value (RFC 6749 §2.3.1: id and secret are
/// form-urlencoded before base64).
pub fn parse_basic(header: &str) -> Result<(String, String), OAuthError> {
    let malformed = || {
        OAuthError::InvalidClient(
            "malformed Authorization header: expected Basic base64(client_id:client_secret)".into(),
        )
    };
    let (scheme, encoded) = header.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient(format!(
            "unsupported authentication scheme {scheme:?}: use Basic, or client_id and client_secret in the body"
        )));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let (id, secret) = (form_unescape(id), form_unescape(secret));
    if id.is_empty() {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// One `application/x-www-form-urlencoded` value decoded, as `form_urlencoded` decodes one: `+`
/// is a space, `%XX` the byte XX (a `%` not followed by two hex digits stays as it is), and invalid
/// UTF-8 is replaced. Most ids and secrets hold neither `+` nor `%` and are copied as they are.
fn form_unescape(value: &str) -> String {
    if !value.contains(['+', '%']) {
        return value.to_owned();
    }
    let hex = |byte: Option<&u8>| byte.and_then(|byte| char::from(*byte).to_digit(16));
    let (bytes, mut decoded) = (value.as_bytes(), Vec::with_capacity(value.len()));
    let mut at = 0;
    while at < bytes.len() {
        match (bytes[at], hex(bytes.get(at + 1)), hex(bytes.get(at + 2))) {
            (b'+', _, _) => decoded.push(b' '),
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                at += 2;
            }
            (byte, _, _) => decoded.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Reads the client's credentials from the `Authorization` header and the body.
pub fn credentials(authorization: Option<&str>, params: &Params) -> Result<ClientCredentials, OAuthError> {
    match authorization {
        Some(header) => {
            let (client_id, client_secret) = parse_basic(header)?;
            // RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in
            // each request."
            if params.contains("client_secret") {
                return Err(OAuthError::InvalidRequest(
                    "the client authenticated twice (Basic and client_secret in the body): use one method"
                        .into(),
                ));
            }
            if let Some(body_id) = params.get("client_id")?
                && body_id != client_id
            {
                return Err(OAuthError::InvalidRequest(
                    "client_id in the body differs from the one in the Authorization header".into(),
                ));
            }
            Ok(ClientCredentials::Basic { client_id, client_secret })
        }
        None => {
            let client_id = params.get("client_id")?.ok_or_else(|| {
                OAuthError::InvalidClient(
                    "no client authentication: send Basic credentials, or client_id (and client_secret) in the body".into(),
                )
            })?;
            Ok(ClientCredentials::Body {
                client_id: client_id.to_owned(),
                client_secret: params.get("client_secret")?.map(str::to_owned),
            })
        }
    }
}

/// Authenticates the client: confidential clients must prove their secret, public clients must
/// not present one.
pub async fn authenticate(
    clients: &dyn ClientStore,
    credentials: &ClientCredentials,
) -> Result<Client, OAuthError> {
    let (client_id, secret) = match credentials {
        ClientCredentials::Basic { client_id, client_secret } => (client_id, Some(client_secret.as_str())),
        ClientCredentials::Body { client_id, client_secret } => (client_id, client_secret.as_deref()),
    };
    let Some(client) = clients.client(client_id).await? else {
        let _ = secret_matches(secret.unwrap_or_default(), DUMMY_SECRET_HASH);
        return Err(OAuthError::InvalidClient(AUTH_FAILED.into()));
    };
    match (&client.secret_hash, secret) {
        (Some(stored), Some(secret)) if secret_matches(secret, stored) => Ok(client),
        (None, None) => Ok(client),
        (None, Some(_)) => Err(OAuthError::InvalidClient(
            "this is a public client: it has no secret, send client_id alone".into(),
        )),
        _ => Err(OAuthError::InvalidClient(AUTH_FAILED.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn basic(raw: &str) -> String {
        format!("Basic {}", STANDARD.encode(raw))
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        assert_eq!(parse_basic(&basic("my%3Aapp:s%2Bcret")).unwrap(), ("my:app".into(), "s+cret".into()));
        assert_eq!(parse_basic(&basic("app:")).unwrap(), ("app".into(), "".into()));
        // `form_urlencoded`'s decoding of one value: `+`, `%XX`, a `%` without two hex digits kept,
        // invalid UTF-8 replaced; `&` and `=` are part of the value.
        assert_eq!(
            parse_basic(&basic("a+b%2fc%zz%4:x%26y=z%F0%9F%92%A9%FF")).unwrap(),
            ("a b/c%zz%4".into(), "x&y=z\u{1F4A9}\u{FFFD}".into())
        );
        assert_eq!(parse_basic(&basic("raw&id:s")).unwrap(), ("raw&id".into(), "s".into()));
    }

    proptest! {
        #[test]
        fn one_value_decodes_as_form_urlencoded_decodes_it(value in "[a-zA-Z0-9+%&=/ -]{0,40}") {
            let expected: String = form_urlencoded::parse(format!("v={}", value.replace('&', "%26")).as_bytes())
                .next().map(|(_, decoded)| decoded.into_owned()).unwrap_or_default();
            prop_assert_eq!(form_unescape(&value.replace('&', "%26")), expected);
        }
    }

    #[test]
    fn malformed_basic_is_invalid_client() {
        for header in ["Basic !!!", "Basic", "Bearer abc", &basic("no-colon"), &basic(":secret")] {
            assert_eq!(parse_basic(header).unwrap_err().code(), "invalid_client", "{header}");
        }
    }

    #[test]
    fn two_methods_at_once_are_refused() {
        let params = Params::parse(b"client_secret=x").unwrap();
        let error = credentials(Some(&basic("app:secret")), &params).unwrap_err();
        assert_eq!(error.code(), "invalid_request");
    }

    proptest! {
        #[test]
        fn parse_basic_never_panics(header in "\\PC{0,200}") {
            let _ = parse_basic(&header);
        }
    }
}
