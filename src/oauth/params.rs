//! Request parameters as RFC 6749 defines them: `application/x-www-form-urlencoded` pairs where a
//! parameter sent without a value is treated as omitted (§3.1, §3.2) and none may repeat.

use super::OAuthError;

/// The longest value any single parameter may have. A longer value (a megabyte of `state`) is
/// refused when the server reads that parameter, rather than echoed into redirects and pages; an
/// unrecognized parameter with a longer value is ignored like any other (RFC 6749 §3.1).
pub const MAX_PARAM_LEN: usize = 4096;
/// Names longer than this are no parameter this server knows; see [`Params::parse`].
const MAX_NAME_LEN: usize = 256;
/// The most parameters one request may carry.
pub const MAX_PARAMS: usize = 64;

fn too_long(name: &str) -> OAuthError {
    OAuthError::InvalidRequest(format!("parameter {name} is longer than {MAX_PARAM_LEN} characters"))
}

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Names whose values were longer than [`MAX_PARAM_LEN`]: the values are dropped unread, and
    /// reading such a parameter fails. Unrecognized ones are never read, so they are ignored.
    oversized: Vec<String>,
}

impl Params {
    /// Parses a urlencoded body or query string. Invalid UTF-8 is replaced, so it can never match
    /// a registered value.
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let mut params = Params::default();
        for (name, value) in form_urlencoded::parse(input) {
            if params.pairs.len() + params.oversized.len() == MAX_PARAMS {
                return Err(OAuthError::InvalidRequest(format!(
                    "too many parameters (at most {MAX_PARAMS})"
                )));
            }
            // RFC 6749 §3.1: unrecognized parameters MUST be ignored. No parameter this server
            // reads has a name anywhere near this long, so such a pair is dropped unread, not
            // refused (the body it came in is bounded already).
            if name.len() > MAX_NAME_LEN {
                continue;
            }
            if value.len() > MAX_PARAM_LEN {
                params.oversized.push(name.into_owned());
                continue;
            }
            params.pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(params)
    }

    /// For the server's own HTML forms, where every field is one the server put there: a field
    /// with an oversized value is refused whole, so it is never silently read as absent.
    pub fn refuse_oversized(self) -> Result<Params, OAuthError> {
        match self.oversized.first() {
            Some(name) => Err(too_long(name)),
            None => Ok(self),
        }
    }

    /// Fails when `name` came with a value longer than [`MAX_PARAM_LEN`].
    fn check_length(&self, name: &str) -> Result<(), OAuthError> {
        match self.oversized.iter().any(|oversized| oversized == name) {
            true => Err(too_long(name)),
            false => Ok(()),
        }
    }

    /// The value of `name`; `None` when absent or empty. Fails when the parameter repeats
    /// (RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once").
    /// Fails too when its value is longer than [`MAX_PARAM_LEN`].
    pub fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        self.check_length(name)?;
        let mut values = self.pairs.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::InvalidRequest(format!("parameter {name} is repeated; send it once")));
        }
        Ok(first.filter(|value| !value.is_empty()))
    }

    /// Like [`Params::get`], but the parameter is required.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| OAuthError::InvalidRequest(format!("missing required parameter {name}")))
    }

    /// Every value of a parameter that may repeat (a form's checkboxes), empty ones left out.
    /// Oversized ones are left out too: it serves the server's own forms, whose oversized fields
    /// [`Params::refuse_oversized`] has refused already.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Whether `name` was sent with a value (an oversized one counts: it was sent).
    pub fn contains(&self, name: &str) -> bool {
        self.oversized.iter().any(|oversized| oversized == name)
            || self.pairs.iter().any(|(key, value)| key == name && !value.is_empty())
    }

    /// The pairs within bounds, in order; oversized ones are left out.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_values_are_omitted_and_repeats_refused() {
        let params = Params::parse(b"a=1&b=&c=x%20y&c=z").unwrap();
        assert_eq!(params.get("a").unwrap(), Some("1"));
        assert_eq!(params.get("b").unwrap(), None);
        assert_eq!(params.get("missing").unwrap(), None);
        assert!(matches!(params.get("c"), Err(OAuthError::InvalidRequest(_))));
        assert!(params.require("b").is_err());
    }

    #[test]
    fn bounds() {
        let long = format!("grant_type=x&state={}", "a".repeat(MAX_PARAM_LEN + 1));
        let params = Params::parse(long.as_bytes()).unwrap();
        let error = params.get("state").unwrap_err();
        assert!(error.description().contains("longer than 4096"), "{}", error.description());
        assert!(params.require("state").is_err());
        assert!(params.all("state").is_empty());
        assert!(params.contains("state"));
        assert_eq!(params.get("grant_type").unwrap(), Some("x"), "other parameters are read as before");
        assert_eq!(params.pairs().len(), 1, "the oversized pair is not carried anywhere");
        let at_bound = format!("state={}", "a".repeat(MAX_PARAM_LEN));
        assert_eq!(
            Params::parse(at_bound.as_bytes()).unwrap().get("state").unwrap().unwrap().len(),
            MAX_PARAM_LEN
        );
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert!(Params::parse(many.join("&").as_bytes()).is_err());
    }

    #[test]
    fn parameters_with_names_no_parameter_has_are_ignored() {
        // RFC 6749 §3.1: unrecognized parameters are ignored, however long their names.
        let body = format!("{}=1&grant_type=client_credentials", "\u{0338}".repeat(MAX_NAME_LEN));
        let params = Params::parse(body.as_bytes()).unwrap();
        assert_eq!(params.pairs().len(), 1);
        assert_eq!(params.get("grant_type").unwrap(), Some("client_credentials"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(params) = Params::parse(&input) {
                let _ = params.get("grant_type");
            }
        }
    }
}
