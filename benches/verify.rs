//! `Verifier::verify` against josekit's raw signature check on the same token.
//!
//!     cargo bench --bench verify
//!
//! Both sides verify the same ES256 (then EdDSA, then RS256) token; the raw side only decodes
//! and checks the signature, the verifier also checks typ, alg, kid, iss, aud, exp, nbf, iat and
//! the revocation list, and builds typed claims. Printed: ns per verification and the ratio of
//! throughputs (verifier ÷ raw; the goal is ≥ 0.9). For ES256 and EdDSA the verifier's signature
//! check is aws-lc's, not josekit's (src/verify.rs), so their ratios are over 1. Rounds
//! alternate so machine noise hits both sides alike; the median round is reported.

use std::hint::black_box;
use std::time::Instant;

use josekit::jwk::KeyPair;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jws::{ES256, EdDSA, JwsHeader, JwsVerifier, RS256};
use josekit::jwt::{self, JwtPayload};
use portcullis::verify::Verifier;

const ISSUER: &str = "https://issuer.example";

fn token_and_jwks(alg: &str) -> (String, String, Box<dyn JwsVerifier>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (mut public, signer, raw): (
        josekit::jwk::Jwk,
        Box<dyn josekit::jws::JwsSigner>,
        Box<dyn JwsVerifier>,
    ) = match alg {
        "ES256" => {
            let pair = ES256.generate_key_pair().unwrap();
            let public = pair.to_jwk_public_key();
            let raw = ES256.verifier_from_jwk(&public).unwrap();
            (public, Box::new(ES256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap()), Box::new(raw))
        }
        "EdDSA" => {
            let pair = EdDSA.generate_key_pair(EdCurve::Ed25519).unwrap();
            let public = pair.to_jwk_public_key();
            let raw = EdDSA.verifier_from_jwk(&public).unwrap();
            (public, Box::new(EdDSA.signer_from_jwk(&pair.to_jwk_private_key()).unwrap()), Box::new(raw))
        }
        _ => {
            let pair = RS256.generate_key_pair(2048).unwrap();
            let public = pair.to_jwk_public_key();
            let raw = RS256.verifier_from_jwk(&public).unwrap();
            (public, Box::new(RS256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap()), Box::new(raw))
        }
    };
    public.set_key_id("k1");
    public.set_algorithm(alg);
    let mut header = JwsHeader::new();
    header.set_token_type("at+jwt");
    header.set_key_id("k1");
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": ISSUER, "sub": "0b8e6c9a-3f57-4a7e-9d0e-2b4c1f9a7e55", "client_id": "aZ3kQ9vX2mL7pR4tW8yB1cD6",
        "jti": "5f0c2a9e-7d41-4b8a-a3e6-9c1d2f7b8e04", "scope": "read write", "iat": now, "nbf": now,
        "exp": now + 900, "auth_time": now,
    });
    let payload = JwtPayload::from_map(claims.as_object().unwrap().clone()).unwrap();
    let token = jwt::encode_with_signer(&payload, &header, signer.as_ref()).unwrap();
    let jwks =
        serde_json::json!({ "keys": [serde_json::Value::Object(public.as_ref().clone())] }).to_string();
    (token, jwks, raw)
}

fn time_per_op(iterations: u32, mut op: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        op();
    }
    started.elapsed().as_nanos() as f64 / iterations as f64
}

fn main() {
    let smoke = std::env::args().any(|arg| arg == "--smoke");
    for alg in ["ES256", "EdDSA", "RS256"] {
        let (token, jwks, raw) = token_and_jwks(alg);
        let verifier = Verifier::from_jwks_json(jwks.as_bytes(), ISSUER, ISSUER).unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(verifier.verify(&token, now).is_ok());
        let (rounds, iterations) = if smoke { (1, 50) } else { (9, 3000) };
        let mut raw_ns = Vec::new();
        let mut verifier_ns = Vec::new();
        for _ in 0..rounds {
            raw_ns.push(time_per_op(iterations, || {
                black_box(jwt::decode_with_verifier(black_box(&token), raw.as_ref()).unwrap());
            }));
            verifier_ns.push(time_per_op(iterations, || {
                black_box(verifier.verify(black_box(&token), now).unwrap());
            }));
        }
        raw_ns.sort_by(f64::total_cmp);
        verifier_ns.sort_by(f64::total_cmp);
        let (raw_median, verifier_median) = (raw_ns[rounds / 2], verifier_ns[rounds / 2]);
        println!(
            "{alg}: josekit raw {raw_median:.0} ns/op, Verifier::verify {verifier_median:.0} ns/op, throughput ratio {:.3}",
            raw_median / verifier_median
        );
    }
}
