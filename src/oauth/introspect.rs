//! Token introspection (RFC 7662). The caller must authenticate as a confidential client (a
//! resource server registered as one); public clients cannot prove who they are, so they may not
//! ask. Any token that is expired, revoked, malformed, unknown, or meant for another audience is
//! simply `active: false`, with nothing else said (§2.2). So is a token whose client has been
//! deleted (its refresh tokens no longer work at the token endpoint, and resource servers that
//! ask should not honour its access tokens), and a refresh token whose user has been.

use serde::Serialize;

use super::client_auth::{authenticate, credentials};
use super::{AuthorizationServer, OAuthError, Params};
use crate::secrets::token_key;

/// RFC 7662 §2.2 response.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

pub async fn introspect(
    server: &AuthorizationServer,
    authorization: Option<&str>,
    params: &Params,
    now: i64,
) -> Result<Introspection, OAuthError> {
    let credentials = credentials(authorization, params)?;
    let caller = authenticate(server.store.as_ref(), &credentials).await?;
    if caller.is_public() {
        return Err(OAuthError::InvalidClient(
            "introspection needs a confidential client: public clients cannot authenticate".into(),
        ));
    }
    let token = params.require("token")?;
    let refresh_first = params.get("token_type_hint")? == Some("refresh_token");
    let found = if refresh_first {
        match refresh_token(server, token, now).await? {
            Some(found) => Some(found),
            None => access_token(server, token, now).await?,
        }
    } else {
        match access_token(server, token, now).await? {
            Some(found) => Some(found),
            None => refresh_token(server, token, now).await?,
        }
    };
    Ok(found.unwrap_or_default())
}

async fn access_token(
    server: &AuthorizationServer,
    token: &str,
    now: i64,
) -> Result<Option<Introspection>, OAuthError> {
    // The verifier checks signature, typ, iss, aud (another audience is inactive), exp, nbf.
    let Ok(claims) = server.verifier.verify(token, now) else { return Ok(None) };
    if server.access_token_standing(&claims, now).await? != super::TokenStanding::Good {
        return Ok(None);
    }
    let username = match server.store.user(&claims.sub).await? {
        Some(user) => Some(user.username),
        None => None,
    };
    Ok(Some(Introspection {
        active: true,
        scope: Some(claims.scope),
        client_id: Some(claims.client_id),
        token_type: Some("Bearer".into()),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        nbf: Some(claims.nbf),
        sub: Some(claims.sub),
        aud: Some(server.config.audience.clone()),
        iss: Some(claims.iss),
        jti: Some(claims.jti),
        username,
    }))
}

async fn refresh_token(
    server: &AuthorizationServer,
    token: &str,
    now: i64,
) -> Result<Option<Introspection>, OAuthError> {
    let Some(record) = server.store.refresh_token(&token_key(token)).await? else { return Ok(None) };
    if record.rotated || record.expires_at <= now {
        return Ok(None);
    }
    let Some(grant) = server.store.grant(&record.grant_id).await? else { return Ok(None) };
    if grant.revoked_at.is_some() {
        return Ok(None);
    }
    match server.store.client(&record.client_id).await? {
        Some(client) if client.issued_this(grant.created_at) => {}
        _ => return Ok(None), // the client is gone: nobody can present the token any more
    }
    let username = server.store.user(&grant.user_id).await?.map(|user| user.username);
    if username.is_none() {
        return Ok(None); // the user is gone: the token no longer works
    }
    Ok(Some(Introspection {
        active: true,
        scope: Some(record.scope.to_string()),
        client_id: Some(record.client_id),
        exp: Some(record.expires_at),
        sub: Some(grant.user_id),
        iss: Some(server.config.issuer.clone()),
        username,
        ..Introspection::default()
    }))
}
