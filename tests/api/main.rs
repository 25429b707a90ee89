//! The one integration-test binary: the server is started in-process on port 0 and exercised over
//! HTTP, as clients and browsers use it.

mod applications;
mod authorize;
mod cli;
mod cors;
mod discovery;
mod helpers;
mod introspect;
mod metrics;
mod oidc;
mod openapi;
mod refresh;
mod resources;
mod revoke;
mod startup;
mod store;
mod token;
mod verify;
mod web;
