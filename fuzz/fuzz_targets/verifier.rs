//! JWTs in the verifier, and revocation feeds: anything must be refused, never panic.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::verify::Verifier;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let pair = josekit::jws::ES256.generate_key_pair().unwrap();
        let mut jwk = josekit::jwk::KeyPair::to_jwk_public_key(&pair);
        jwk.set_key_id("k1");
        jwk.set_algorithm("ES256");
        let jwks = serde_json::json!({ "keys": [serde_json::Value::Object(jwk.as_ref().clone())] });
        Verifier::from_jwks_json(jwks.to_string().as_bytes(), "https://issuer.example", "https://api.example").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(verifier().verify(token, 1_800_000_000).is_err());
        assert!(verifier().apply_revocation_feed(token, 1_800_000_000).is_err());
    }
});
