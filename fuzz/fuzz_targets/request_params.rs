//! Token and authorization request bodies: RFC 6749 parameter parsing, PKCE values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::domain::{CodeChallenge, CodeVerifier};
use portcullis::oauth::Params;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = Params::parse(data) {
        for name in ["grant_type", "code", "redirect_uri", "code_verifier", "scope", "state", "code_challenge"] {
            let _ = params.get(name);
        }
        if let Ok(Some(verifier)) = params.get("code_verifier") {
            let _ = CodeVerifier::parse(verifier);
        }
        if let Ok(Some(challenge)) = params.get("code_challenge") {
            let _ = CodeChallenge::parse(challenge, params.get("code_challenge_method").ok().flatten());
        }
    }
});
