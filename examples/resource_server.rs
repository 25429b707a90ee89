//! A resource server that protects `GET /hello` with portcullis access tokens, verified offline:
//! the keys come from the issuer once at start, revocations from its signed feed every 30 s.
//!
//!     cargo run --example resource_server -- http://127.0.0.1:8080 127.0.0.1:3000
//!     curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/hello

use std::sync::Arc;
use std::time::Duration;

use poem::listener::TcpListener;
use poem::{EndpointExt, Route, Server, get, handler};
use portcullis::verify::Verifier;
use portcullis::verify::poem::VerifiedToken;

#[handler]
fn hello(token: VerifiedToken) -> poem::Result<String> {
    let claims = token.require_scope("read")?; // 403 insufficient_scope without it
    Ok(format!("Hello, {}!", claims.sub))
}

/// The whole app: one route, and the verifier the extractor uses.
pub fn app(verifier: Arc<Verifier>) -> impl poem::Endpoint {
    Route::new().at("/hello", get(hello)).data(verifier)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let listen = std::env::args().nth(2).unwrap_or_else(|| "127.0.0.1:3000".into());
    // The audience of portcullis tokens is the issuer unless the server sets --audience.
    let verifier = Arc::new(Verifier::from_issuer(&issuer, &issuer).await?);
    verifier.poll_revocations(&format!("{issuer}/o/revoked_tokens"), Duration::from_secs(30));
    Server::new(TcpListener::bind(listen)).run(app(verifier)).await?;
    Ok(())
}
