//! The reference for `bench/run.sh`: the least a token endpoint can do on this stack. A bare
//! poem endpoint that parses the same form, checks the client by comparing a SHA-256 digest, and
//! signs the same RFC 9068 claims with ES256 through josekit (signer built once). Every figure
//! of the benchmark is also printed as a ratio to this one, measured in the same run.
//!
//!     cargo run --release --example bench_reference -- 127.0.0.1:18081

use std::sync::Arc;

use josekit::jws::alg::ecdsa::EcdsaJwsSigner;
use josekit::jws::{ES256, JwsHeader};
use josekit::jwt::{self, JwtPayload};
use poem::listener::TcpListener;
use poem::web::{Data, Form, Json};
use poem::{EndpointExt, Route, Server, handler, post};
use sha2::{Digest, Sha256};

#[derive(serde::Deserialize)]
struct TokenForm {
    grant_type: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
}

struct Reference {
    signer: EcdsaJwsSigner,
    secret_digest: [u8; 32],
}

#[handler]
fn token(
    Form(form): Form<TokenForm>,
    Data(state): Data<&Arc<Reference>>,
) -> poem::Result<Json<serde_json::Value>> {
    let digest: [u8; 32] = Sha256::digest(form.client_secret.as_bytes()).into();
    if form.grant_type != "client_credentials" || digest != state.secret_digest {
        return Err(poem::Error::from_status(poem::http::StatusCode::UNAUTHORIZED));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let scope = form.scope.unwrap_or_else(|| "read write".into());
    let mut payload = JwtPayload::new();
    for (name, value) in [
        ("iss", serde_json::json!("http://127.0.0.1:18080")),
        ("sub", serde_json::json!(form.client_id)),
        ("aud", serde_json::json!("http://127.0.0.1:18080")),
        ("exp", serde_json::json!(now + 900)),
        ("nbf", serde_json::json!(now)),
        ("iat", serde_json::json!(now)),
        ("jti", serde_json::json!(uuid::Uuid::new_v4().to_string())),
        ("client_id", serde_json::json!(form.client_id)),
        ("scope", serde_json::json!(scope)),
    ] {
        payload.set_claim(name, Some(value)).unwrap();
    }
    let mut header = JwsHeader::new();
    header.set_token_type("at+jwt");
    header.set_key_id("reference");
    let access_token = jwt::encode_with_signer(&payload, &header, &state.signer).unwrap();
    Ok(Json(
        serde_json::json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": 900, "scope": scope }),
    ))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18081".into());
    let pair = ES256.generate_key_pair().unwrap();
    let state = Arc::new(Reference {
        signer: ES256.signer_from_der(pair.to_der_private_key()).unwrap(),
        secret_digest: Sha256::digest(b"reference-secret").into(),
    });
    Server::new(TcpListener::bind(listen)).run(Route::new().at("/token", post(token)).data(state)).await
}
