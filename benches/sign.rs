//! The server's JWT signing against josekit's, for each algorithm.
//!
//!     cargo bench --bench sign
//!
//! Both sides sign the same access-token claims with the same key into a compact JWS: the
//! server's side is `KeyRing::sign_claims` (aws-lc for ES256 and EdDSA, josekit for RS256;
//! src/keys.rs says why), the other `josekit::jwt::encode_with_signer` with josekit's signer of
//! the same PEM key, as the benchmark's reference endpoint signs (bench/reference.rs). Printed:
//! µs per token and the ratio of throughputs (server ÷ josekit). Rounds alternate so machine
//! noise hits both sides alike; the median round is reported.

use std::hint::black_box;
use std::time::Instant;

use josekit::jws::{ES256, EdDSA, JwsHeader, JwsSigner, RS256};
use josekit::jwt::{self, JwtPayload};
use portcullis::keys::{Algorithm, KeyRing};

fn time_per_op(iterations: u32, mut op: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        op();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

/// josekit's signer of the PEM key the key ring wrote for `alg`.
fn josekit_signer(dir: &std::path::Path, alg: Algorithm) -> Box<dyn JwsSigner> {
    let prefix = format!("{}-", alg.as_str().to_lowercase());
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_str().unwrap().starts_with(&prefix))
        .unwrap();
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let pem = file["private_key_pem"].as_str().unwrap().as_bytes();
    match alg {
        Algorithm::ES256 => Box::new(ES256.signer_from_pem(pem).unwrap()),
        Algorithm::EdDSA => Box::new(EdDSA.signer_from_pem(pem).unwrap()),
        Algorithm::RS256 => Box::new(RS256.signer_from_pem(pem).unwrap()),
    }
}

fn main() {
    let smoke = std::env::args().any(|arg| arg == "--smoke");
    let dir = tempfile::tempdir().unwrap();
    let all = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];
    let ring = KeyRing::load_or_generate(dir.path(), &all, 1_800_000_000).unwrap();
    let claims = serde_json::json!({
        "iss": "https://issuer.example", "aud": "https://issuer.example",
        "sub": "0b8e6c9a-3f57-4a7e-9d0e-2b4c1f9a7e55", "client_id": "aZ3kQ9vX2mL7pR4tW8yB1cD6",
        "jti": "5f0c2a9e-7d41-4b8a-a3e6-9c1d2f7b8e04", "scope": "read write", "iat": 1_800_000_000,
        "nbf": 1_800_000_000, "exp": 1_800_000_900,
    });
    let payload = JwtPayload::from_map(claims.as_object().unwrap().clone()).unwrap();
    for alg in all {
        let theirs = josekit_signer(dir.path(), alg);
        let mut header = JwsHeader::new();
        header.set_token_type("at+jwt");
        header.set_key_id(&ring.active(alg).unwrap().kid);
        let (rounds, iterations) = match (smoke, alg) {
            (true, _) => (1, 20),
            (false, Algorithm::RS256) => (9, 300),
            (false, _) => (9, 5000),
        };
        // Once each first: aws-lc sets its random generator up on the first ES256 signature.
        jwt::encode_with_signer(&payload, &header, theirs.as_ref()).unwrap();
        ring.sign_claims(alg, "at+jwt", &claims).unwrap();
        let (mut server_us, mut josekit_us) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            josekit_us.push(time_per_op(iterations, || {
                black_box(jwt::encode_with_signer(black_box(&payload), &header, theirs.as_ref()).unwrap());
            }));
            server_us.push(time_per_op(iterations, || {
                black_box(ring.sign_claims(alg, "at+jwt", black_box(&claims)).unwrap());
            }));
        }
        server_us.sort_by(f64::total_cmp);
        josekit_us.sort_by(f64::total_cmp);
        let (server, josekit) = (server_us[rounds / 2], josekit_us[rounds / 2]);
        println!(
            "{:<5}: josekit {josekit:7.1} µs/token, KeyRing::sign_claims {server:7.1} µs/token, throughput ratio {:.3}",
            alg.as_str(),
            josekit / server
        );
    }
}
