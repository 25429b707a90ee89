//! PKCE (RFC 7636). Only `S256` is accepted: `plain` protects nothing once the authorization request
//! is observed, and RFC 9700 §2.1.1 recommends S256. A code challenge is exactly the base64url
//! encoding of a SHA-256 digest (43 characters); a verifier is 43–128 unreserved characters.

use crate::secrets::{constant_time_eq, sha256_base64url};

/// A validated `code_challenge` for method S256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeChallenge(String);

/// A validated `code_verifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge_method {0:?} is not supported; use S256")]
    UnsupportedMethod(String),
    #[error("code_challenge must be the 43-character base64url SHA-256 of the code_verifier")]
    MalformedChallenge,
    #[error(
        "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~' (RFC 7636 §4.1)"
    )]
    MalformedVerifier,
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

impl CodeChallenge {
    /// Parses `code_challenge` with its `code_challenge_method` (RFC 7636 §4.3: absent means
    /// `plain`, which this server refuses).
    pub fn parse(challenge: &str, method: Option<&str>) -> Result<CodeChallenge, PkceError> {
        match method {
            Some("S256") => {}
            Some(other) => return Err(PkceError::UnsupportedMethod(other.to_owned())),
            None => return Err(PkceError::UnsupportedMethod("plain".to_owned())),
        }
        let base64url_alphabet = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
        if challenge.len() != 43 || !challenge.bytes().all(base64url_alphabet) {
            return Err(PkceError::MalformedChallenge);
        }
        Ok(CodeChallenge(challenge.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.6: `BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge`.
    pub fn is_satisfied_by(&self, verifier: &CodeVerifier) -> bool {
        constant_time_eq(&sha256_base64url(verifier.0.as_bytes()), &self.0)
    }
}

impl CodeVerifier {
    pub fn parse(verifier: &str) -> Result<CodeVerifier, PkceError> {
        if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(is_unreserved) {
            return Err(PkceError::MalformedVerifier);
        }
        Ok(CodeVerifier(verifier.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        let verifier = CodeVerifier::parse("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        let challenge =
            CodeChallenge::parse("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", Some("S256")).unwrap();
        assert!(challenge.is_satisfied_by(&verifier));
    }

    #[test]
    fn plain_and_unknown_methods_are_refused() {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(CodeChallenge::parse(challenge, None), Err(PkceError::UnsupportedMethod("plain".into())));
        assert!(CodeChallenge::parse(challenge, Some("plain")).is_err());
        assert!(CodeChallenge::parse(challenge, Some("s256")).is_err());
    }

    #[test]
    fn verifier_length_bounds() {
        assert!(CodeVerifier::parse(&"a".repeat(42)).is_err());
        assert!(CodeVerifier::parse(&"a".repeat(43)).is_ok());
        assert!(CodeVerifier::parse(&"a".repeat(128)).is_ok());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_err());
        assert!(CodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_err());
    }

    proptest! {
        #[test]
        fn a_verifier_satisfies_only_its_own_challenge(
            verifier in "[A-Za-z0-9._~-]{43,128}",
            other in "[A-Za-z0-9._~-]{43,128}",
        ) {
            let challenge = CodeChallenge::parse(&sha256_base64url(verifier.as_bytes()), Some("S256")).unwrap();
            prop_assert!(challenge.is_satisfied_by(&CodeVerifier::parse(&verifier).unwrap()));
            if other != verifier {
                prop_assert!(!challenge.is_satisfied_by(&CodeVerifier::parse(&other).unwrap()));
            }
        }

        #[test]
        fn parsing_arbitrary_input_never_panics(input in "\\PC{0,200}", method in "\\PC{0,10}") {
            let _ = CodeVerifier::parse(&input);
            let _ = CodeChallenge::parse(&input, Some(&method));
        }
    }
}
