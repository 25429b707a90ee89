//! Discovery (RFC 8414 §2, OpenID Connect Discovery 1.0 §3) and the JWKS (RFC 7517).

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::Tag;
use crate::oauth::AuthorizationServer;
use crate::startup::now;

/// Authorization server metadata: what exists now, nothing more.
#[derive(Debug, Object)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint: String,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub jwks_uri: String,
    /// Not registered by an RFC: the signed list of revoked access tokens for offline verifiers.
    pub revoked_tokens_endpoint: String,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: authorization responses carry `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    pub userinfo_endpoint: String,
    /// OpenID Connect RP-Initiated Logout.
    pub end_session_endpoint: String,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub claims_supported: Vec<String>,
    pub claims_parameter_supported: bool,
    pub request_parameter_supported: bool,
    /// OIDC Discovery: the default is true, so say no.
    pub request_uri_parameter_supported: bool,
    pub prompt_values_supported: Vec<String>,
    pub service_documentation: String,
}

/// A public JSON Web Key (RFC 7517 §4, RFC 7518 §6).
#[derive(Debug, Object, serde::Deserialize)]
pub struct PublicJwk {
    /// Key type: `EC`, `RSA` or `OKP`.
    pub kty: String,
    /// RFC 7638 thumbprint of the key.
    pub kid: String,
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    #[serde(rename = "use")]
    pub key_use: String,
    #[oai(skip_serializing_if_is_none)]
    pub crv: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub x: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub y: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub n: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub e: Option<String>,
}

/// A JWK Set: every public key whose tokens can still be valid.
#[derive(Debug, Object, serde::Deserialize)]
pub struct JwkSet {
    pub keys: Vec<PublicJwk>,
}

#[derive(ApiResponse)]
pub enum MetadataResponse {
    #[oai(status = 200)]
    Ok(Json<ServerMetadata>, #[oai(header = "Cache-Control")] String),
}

#[derive(ApiResponse)]
pub enum JwksResponse {
    #[oai(status = 200)]
    Ok(Json<JwkSet>, #[oai(header = "Cache-Control")] String),
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn metadata(server: &AuthorizationServer) -> MetadataResponse {
    let issuer = &server.config.issuer;
    MetadataResponse::Ok(
        Json(ServerMetadata {
            issuer: issuer.clone(),
            authorization_endpoint: format!("{issuer}/o/authorize"),
            token_endpoint: format!("{issuer}/o/token"),
            revocation_endpoint: format!("{issuer}/o/revoke_token"),
            revocation_endpoint_auth_methods_supported: strings(&[
                "client_secret_basic",
                "client_secret_post",
                "none",
            ]),
            introspection_endpoint: format!("{issuer}/o/introspect"),
            // Public clients cannot prove who they are, so they may not introspect.
            introspection_endpoint_auth_methods_supported: strings(&[
                "client_secret_basic",
                "client_secret_post",
            ]),
            jwks_uri: format!("{issuer}/.well-known/jwks.json"),
            revoked_tokens_endpoint: format!("{issuer}/o/revoked_tokens"),
            response_types_supported: strings(&["code"]),
            response_modes_supported: strings(&["query"]),
            grant_types_supported: strings(&["authorization_code", "refresh_token", "client_credentials"]),
            scopes_supported: strings(&["openid", "profile", "email", "read", "write"]),
            token_endpoint_auth_methods_supported: strings(&[
                "client_secret_basic",
                "client_secret_post",
                "none",
            ]),
            code_challenge_methods_supported: strings(&["S256"]),
            authorization_response_iss_parameter_supported: true,
            userinfo_endpoint: format!("{issuer}/o/userinfo"),
            end_session_endpoint: format!("{issuer}/o/logout"),
            subject_types_supported: strings(&["public"]),
            id_token_signing_alg_values_supported: strings(&["RS256", "ES256"]),
            claims_supported: strings(&[
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "at_hash",
                "name",
                "preferred_username",
                "email",
                "email_verified",
            ]),
            claims_parameter_supported: false,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
            prompt_values_supported: strings(&["none", "login", "consent", "select_account"]),
            service_documentation: format!("{issuer}/docs"),
        }),
        "public, max-age=300".into(),
    )
}

pub struct WellKnownApi;

#[OpenApi]
impl WellKnownApi {
    /// Authorization server metadata (RFC 8414)
    #[oai(
        path = "/.well-known/oauth-authorization-server",
        method = "get",
        tag = "Tag::Discovery",
        operation_id = "oauthAuthorizationServerMetadata"
    )]
    async fn oauth_metadata(&self, server: poem::web::Data<&AuthorizationServer>) -> MetadataResponse {
        metadata(server.0)
    }

    /// OpenID Connect discovery document
    ///
    /// The same metadata at the path OpenID Connect clients look for.
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        tag = "Tag::Discovery",
        operation_id = "openidConfiguration"
    )]
    async fn openid_configuration(&self, server: poem::web::Data<&AuthorizationServer>) -> MetadataResponse {
        metadata(server.0)
    }

    /// Public signing keys (JWKS)
    ///
    /// Verify access tokens offline: pick the key by the token's `kid`, check the signature with
    /// that key's `alg` only.
    #[oai(path = "/.well-known/jwks.json", method = "get", tag = "Tag::Discovery", operation_id = "jwks")]
    async fn jwks(&self, server: poem::web::Data<&AuthorizationServer>) -> JwksResponse {
        let value = server.keys().jwks(now(), server.max_token_lifetime());
        // Our own keys always have these members; a key that did not would be left out.
        let set = serde_json::from_value(value).unwrap_or(JwkSet { keys: Vec::new() });
        // Short caching: a rotated key must reach verifiers well before the old one goes.
        JwksResponse::Ok(Json(set), "public, max-age=60".into())
    }
}
