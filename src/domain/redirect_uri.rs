//! Redirect URIs (RFC 6749 §3.1.2). Registration checks the form; at authorization time the
//! presented value must equal a registered one character for character (RFC 9700 §4.1.3: no
//! pattern or prefix matching, which is where open redirects come from), with the one exception
//! RFC 9700 §4.1.3 keeps: the port of a loopback IP redirect URI (RFC 8252 §7.3).

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

    /// The redirect URI an authorization request may use for this registered one: itself when
    /// `presented` is equal to it; for a loopback IP URI (`http://127.0.0.1` or `http://[::1]`),
    /// `presented` when it differs only in the port. RFC 8252 §7.3: "The authorization server
    /// MUST allow any port to be specified at the time of the request for loopback IP redirect
    /// URIs", since a native app gets its port from the OS when it listens; RFC 9700 §4.1.3 keeps
    /// that exception to exact matching. The rest (path, query) still matches exactly, and a
    /// host named `localhost` does not qualify (RFC 8252 §8.3).
    pub fn accepting(&self, presented: &str) -> Option<RedirectUri> {
        if self.0 == presented {
            return Some(self.clone());
        }
        let registered = without_loopback_port(&self.0)?;
        (without_loopback_port(presented)? == registered).then(|| RedirectUri(presented.to_owned()))
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

/// A loopback IP `http` URI with its port left out (`http://127.0.0.1:8000/cb` →
/// `http://127.0.0.1/cb`); `None` for any other URI, or a port that is not one.
fn without_loopback_port(uri: &str) -> Option<String> {
    let host = ["http://127.0.0.1", "http://[::1]"].into_iter().find(|host| uri.starts_with(host))?;
    let rest = &uri[host.len()..];
    let rest = match rest.strip_prefix(':') {
        None => rest,
        Some(port_and_rest) => {
            let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
            port_and_rest[..digits].parse::<u16>().ok()?;
            &port_and_rest[digits..]
        }
    };
    (rest.is_empty() || rest.starts_with(['/', '?'])).then(|| format!("{host}{rest}"))
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
    fn loopback_ip_uris_accept_any_port_and_nothing_else_differs() {
        let registered = RedirectUri::parse("http://127.0.0.1/cb?x=1").unwrap();
        let accepting = |presented: &str| registered.accepting(presented).map(|uri| uri.0);
        for presented in
            ["http://127.0.0.1/cb?x=1", "http://127.0.0.1:51234/cb?x=1", "http://127.0.0.1:1/cb?x=1"]
        {
            assert_eq!(accepting(presented).as_deref(), Some(presented), "{presented}");
        }
        for presented in [
            "http://127.0.0.1:51234/cb?x=2",
            "http://127.0.0.1:51234/cb",
            "http://127.0.0.1:51234/cb/?x=1",
            "http://127.0.0.1:70000/cb?x=1",
            "http://127.0.0.1:/cb?x=1",
            "http://127.0.0.1:80x/cb?x=1",
            "http://127.0.0.10:80/cb?x=1",
            "http://127.0.0.1.evil.example/cb?x=1",
            "http://127.0.0.1@evil.example/cb?x=1",
            "https://127.0.0.1:443/cb?x=1",
            "http://localhost:8000/cb?x=1",
        ] {
            assert_eq!(accepting(presented), None, "{presented}");
        }
        let with_port = RedirectUri::parse("http://[::1]:8000/").unwrap();
        assert!(with_port.accepting("http://[::1]:9000/").is_some());
        assert!(with_port.accepting("http://[::1]/").is_some());
        assert!(with_port.accepting("http://[::2]:9000/").is_none());
        // Other hosts match exactly, port included.
        for registered in
            ["http://localhost:8000/cb", "https://app.example.com:8443/cb", "com.example.app:/cb"]
        {
            let registered = RedirectUri::parse(registered).unwrap();
            assert!(registered.accepting(registered.as_str()).is_some());
            let other_port = registered.as_str().replace("8000", "8001").replace("8443", "8444");
            assert!(other_port == registered.as_str() || registered.accepting(&other_port).is_none());
        }
    }

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
