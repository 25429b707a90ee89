//! Redirect URI registration and matching, scope parsing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::domain::{RedirectUri, Scope};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(uri) = RedirectUri::parse(text) {
            assert!(uri.matches(text));
            let _ = uri.with_query(&[("code", text), ("state", text)]);
            let _ = uri.origin();
        }
        if let Ok(scope) = Scope::parse(text) {
            assert_eq!(Scope::parse(&scope.to_string()).unwrap(), scope);
        }
    }
});
