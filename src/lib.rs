//! portcullis: an OAuth 2.0 authorization server whose access tokens are signed JWTs (RFC 9068),
//! so resource servers verify them offline against the published JWKS.
//!
//! The crate is one library plus a thin binary. The protocol lives in [`oauth`] and [`domain`] and
//! knows nothing of HTTP or storage engines; [`api`] and [`web`] are the HTTP adapters (poem);
//! [`store`] holds the storage traits with a sled and an in-memory implementation. See
//! ARCHITECTURE.md for the map and the invariants.

pub mod secrets;
#[cfg(feature = "verify")]
pub mod verify;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod idle;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod oauth;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod throttle;
#[cfg(feature = "server")]
pub mod web;
