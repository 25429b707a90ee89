//! `Authorization: Basic` headers and client credential extraction.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::oauth::Params;
use portcullis::oauth::client_auth::{credentials, parse_basic};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = parse_basic(header);
        let _ = credentials(Some(header), &Params::default());
    }
});
