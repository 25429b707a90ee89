//! Redirect URIs (RFC 6749 §3.1.2). Registration checks the form; at authorization time the
//! presented value must equal a registered one character for character (RFC 9700 §4.1.3: no
//! pattern or prefix matching, which is where open redirects come from).

use std::fmt;

/// A redirect URI accepted for registration: absolute, no fragment (RFC 6749 §3.1.2), no
/// userinfo, and not a scheme that runs code in the browser.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RedirectUri(String);

/// The longest redirect URI accepted; longer ones are refused at registration.
pub const MAX_REDIRECT_URI_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRedirectUri {
    #[error("redirect URI {0:?} is not an absolute URI")]
    NotAbsolute(String),
    #[error("redirect URI {0:?} must not contain a fragment (RFC 6749 §3.1.2)")]
    Fragment(String),
    #[error("redirect URI {0:?} must not contain user information")]
    UserInfo(String),
    #[error("redirect URI {0:?} uses a scheme that is never allowed")]
    ForbiddenScheme(String),
    #[error("redirect URI is longer than {MAX_REDIRECT_URI_LEN} characters")]
    TooLong,
}

impl RedirectUri {
    pub fn parse(input: &str) -> Result<RedirectUri, InvalidRedirectUri> {
        if input.len() > MAX_REDIRECT_URI_LEN {
            return Err(InvalidRedirectUri::TooLong);
        }
        let url = url::Url::parse(input).map_err(|_| InvalidRedirectUri::NotAbsolute(input.to_owned()))?;
        if url.fragment().is_some() || input.contains('#') {
            return Err(InvalidRedirectUri::Fragment(input.to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidRedirectUri::UserInfo(input.to_owned()));
        }
        match url.scheme() {
            "javascript" | "data" | "vbscript" | "file" | "blob" | "about" => {
                return Err(InvalidRedirectUri::ForbiddenScheme(input.to_owned()));
            }
            "http" | "https" if url.host().is_none() => {
                return Err(InvalidRedirectUri::NotAbsolute(input.to_owned()));
            }
            _ => {}
        }
        Ok(RedirectUri(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 6749 §3.1.2.3 / RFC 9700 §4.1.3: exact string comparison, nothing else.
    pub fn matches(&self, presented: &str) -> bool {
        self.0 == presented
    }

    /// The origin (`scheme://host[:port]`) for http(s) URIs, used for CORS later.
    pub fn origin(&self) -> Option<String> {
        let url = url::Url::parse(&self.0).ok()?;
        match url.origin() {
            url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
            url::Origin::Opaque(_) => None,
        }
    }

    /// This URI with `params` added to its query, keeping any query it has (RFC 6749 §3.1.2:
    /// "MUST retain the query component").
    pub fn with_query(&self, params: &[(&str, &str)]) -> String {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        for (name, value) in params {
            encoded.append_pair(name, value);
        }
        let encoded = encoded.finish();
        let separator = match self.0.find('?') {
            None => "?",
            Some(_) if self.0.ends_with('?') || self.0.ends_with('&') => "",
            Some(_) => "&",
        };
        format!("{}{separator}{encoded}", self.0)
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RedirectUri {
    type Error = InvalidRedirectUri;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        RedirectUri::parse(&value)
    }
}

impl From<RedirectUri> for String {
    fn from(uri: RedirectUri) -> String {
        uri.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_web_and_native_uris() {
        assert!(RedirectUri::parse("https://app.example.com/callback").is_ok());
        assert!(RedirectUri::parse("http://127.0.0.1:8000/cb?x=1").is_ok());
        assert!(RedirectUri::parse("com.example.app:/oauth2redirect").is_ok());
    }

    #[test]
    fn refuses_dangerous_or_malformed_uris() {
        assert!(RedirectUri::parse("/relative").is_err());
        assert!(RedirectUri::parse("https://a.example/cb#frag").is_err());
        assert!(RedirectUri::parse("https://user:pw@a.example/cb").is_err());
        assert!(RedirectUri::parse("javascript:alert(1)").is_err());
        assert!(RedirectUri::parse("data:text/html,hi").is_err());
        assert!(RedirectUri::parse(&format!("https://a.example/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn matching_is_exact() {
        let uri = RedirectUri::parse("https://app.example.com/callback").unwrap();
        assert!(uri.matches("https://app.example.com/callback"));
        for lookalike in [
            "https://app.example.com/callback/",
            "https://app.example.com/callback?x=1",
            "https://app.example.com/callback#x",
            "https://APP.example.com/callback",
            "https://app.example.com.evil.com/callback",
            "https://evil.com@app.example.com/callback",
            "https://app.example.com/callback/../evil",
            "https://app.example.com/callback%2F..",
            "http://app.example.com/callback",
        ] {
            assert!(!uri.matches(lookalike), "{lookalike} must not match");
        }
    }

    #[test]
    fn query_is_retained() {
        let uri = RedirectUri::parse("https://a.example/cb?tenant=7").unwrap();
        assert_eq!(
            uri.with_query(&[("code", "x y"), ("state", "s&t")]),
            "https://a.example/cb?tenant=7&code=x+y&state=s%26t"
        );
        let plain = RedirectUri::parse("https://a.example/cb").unwrap();
        assert_eq!(
            plain.with_query(&[("error", "access_denied")]),
            "https://a.example/cb?error=access_denied"
        );
    }

    proptest! {
        #[test]
        fn only_the_identical_string_matches(registered in "https://[a-z]{1,8}\\.example/[a-z/]{0,10}", presented in "\\PC{0,40}") {
            let uri = RedirectUri::parse(&registered).unwrap();
            prop_assert_eq!(uri.matches(&presented), presented == registered);
            prop_assert!(uri.matches(&registered));
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,100}") {
            let _ = RedirectUri::parse(&input);
        }
    }
}
