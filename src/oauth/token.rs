//! The token endpoint (RFC 6749 §3.2, §4.1.3, §4.4, §6; RFC 7636 §4.5–4.6).
//!
//! Every check that can fail runs before anything is written, so a refused request changes
//! nothing stored; the one write of a successful exchange is atomic, and the response is returned
//! only after it is flushed.

use serde::Serialize;

use super::client_auth::{authenticate, credentials};
use super::oidc::OPENID;
use super::{AuthorizationServer, OAuthError, Params};
use crate::domain::{CodeVerifier, Grant, GrantType, RefreshToken};
use crate::secrets::{random_dated_secret, token_key};
use crate::store::{Redemption, Rotation};

/// RFC 6749 §5.1 successful response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    /// OpenID Connect: when the grant includes scope `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Handles one token request. `authorization` is the raw `Authorization` header, if any.
pub async fn exchange(
    server: &AuthorizationServer,
    authorization: Option<&str>,
    params: &Params,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let grant_type = params.require("grant_type")?;
    let grant_type = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::UnsupportedGrantType(format!(
            "grant_type {grant_type:?} is not supported; use authorization_code, refresh_token or client_credentials"
        ))
    })?;
    let credentials = credentials(authorization, params)?;
    let client = authenticate(server.store.as_ref(), &credentials).await?;
    if !client.allows_grant(grant_type) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "this client is not registered for the {} grant",
            grant_type.as_str()
        )));
    }
    match grant_type {
        GrantType::AuthorizationCode => authorization_code(server, &client, params, now).await,
        GrantType::RefreshToken => refresh_token(server, &client, params, now).await,
        GrantType::ClientCredentials => client_credentials(server, &client, params, now).await,
    }
}

async fn authorization_code(
    server: &AuthorizationServer,
    client: &crate::domain::Client,
    params: &Params,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let code = params.require("code")?;
    let code_hash = token_key(code);
    let invalid = || {
        OAuthError::InvalidGrant(
            "the authorization code is invalid, expired or was issued to another client".into(),
        )
    };
    let record = server.store.code(&code_hash).await?.ok_or_else(invalid)?;
    if record.used {
        return Err(revoke_after_replay(server, client, &record.grant_id, now).await);
    }
    // RFC 6749 §4.1.3: the code must have been issued to this client, not to a deleted client of
    // the same id (`Client::issued_this`; codes of earlier releases carry no issue time)...
    let issued_to_this = record.issued_at.is_none_or(|issued_at| client.issued_this(issued_at));
    if record.client_id != client.client_id || !issued_to_this || record.expires_at <= now {
        return Err(invalid());
    }
    // ... and redirect_uri must be present and identical to the one of the authorization request.
    if params.get("redirect_uri")? != Some(record.redirect_uri.as_str()) {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri is missing or differs from the one in the authorization request".into(),
        ));
    }
    let verifier = params.get("code_verifier")?;
    match (&record.code_challenge, verifier) {
        (Some(challenge), Some(verifier)) => {
            let verifier =
                CodeVerifier::parse(verifier).map_err(|error| OAuthError::InvalidGrant(error.to_string()))?;
            if !challenge.is_satisfied_by(&verifier) {
                return Err(OAuthError::InvalidGrant(
                    "code_verifier does not match the code_challenge (RFC 7636 §4.6)".into(),
                ));
            }
        }
        (Some(_), None) => {
            return Err(OAuthError::InvalidGrant(
                "code_verifier is required: the authorization request carried a code_challenge".into(),
            ));
        }
        // RFC 9700 §2.1.1: a verifier without a challenge is a PKCE downgrade attempt.
        (None, Some(_)) => {
            return Err(OAuthError::InvalidGrant(
                "code_verifier sent, but the authorization request carried no code_challenge".into(),
            ));
        }
        (None, None) => {}
    }

    let issued_at = server.issue_time(&client.client_id, Some(&record.user_id), now).await;
    let (access_token, issued) = server.mint_access_token(
        &record.user_id,
        &client.client_id,
        &record.scope,
        Some(record.auth_time),
        issued_at,
    )?;
    let user = server.store.user(&record.user_id).await?.ok_or_else(invalid)?;
    // OIDC Core §3.1.3.3: an ID token when the request was an OpenID Connect one.
    let id_token = match record.scope.contains(OPENID) {
        true => Some(server.mint_id_token(
            client,
            &user,
            record.auth_time,
            record.nonce.as_deref(),
            &access_token,
            issued_at,
        )?),
        false => None,
    };
    let refresh = client.allows_grant(GrantType::RefreshToken).then(|| {
        let expires_at = now + server.config.refresh_token_ttl;
        let token = random_dated_secret(expires_at);
        let record = RefreshToken {
            grant_id: record.grant_id.clone(),
            client_id: client.client_id.clone(),
            scope: record.scope.clone(),
            expires_at,
            rotated: false,
        };
        (token, record)
    });
    let grant = Grant {
        id: record.grant_id.clone(),
        client_id: client.client_id.clone(),
        user_id: record.user_id.clone(),
        scope: record.scope.clone(),
        auth_time: record.auth_time,
        created_at: now,
        revoked_at: None,
        expires_at: refresh.as_ref().map_or(issued.expires_at, |(_, token)| token.expires_at),
        access_tokens: vec![issued],
    };
    let refresh_hash = refresh.as_ref().map(|(token, _)| token_key(token));
    let refresh_entry =
        refresh.as_ref().zip(refresh_hash.as_deref()).map(|((_, record), hash)| (hash, record));
    match server.store.redeem_code(&code_hash, &grant, refresh_entry, now).await? {
        Redemption::Redeemed => {}
        Redemption::AlreadyUsed { grant_id } => {
            return Err(revoke_after_replay(server, client, &grant_id, now).await);
        }
        Redemption::Unknown => return Err(invalid()),
    }
    tracing::info!(client_id = %client.client_id, grant_id = %grant.id, "exchanged an authorization code");
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: server.config.access_token_ttl,
        refresh_token: refresh.map(|(token, _)| token),
        scope: record.scope.to_string(),
        id_token,
    })
}

/// RFC 6749 §4.1.2: a code used twice is refused, and what it issued is revoked.
async fn revoke_after_replay(
    server: &AuthorizationServer,
    client: &crate::domain::Client,
    grant_id: &str,
    now: i64,
) -> OAuthError {
    tracing::warn!(%grant_id, "authorization code replayed: revoking every token issued from it");
    if let Err(error) = revoke_grant(server, client, grant_id, now).await {
        return error;
    }
    OAuthError::InvalidGrant(
        "the authorization code was already used; the tokens issued from it are now revoked".into(),
    )
}

/// Revoked on a request of `client`: counted against its bound on tokens listed in the feed.
async fn revoke_grant(
    server: &AuthorizationServer,
    client: &crate::domain::Client,
    grant_id: &str,
    now: i64,
) -> Result<(), OAuthError> {
    server.revoke_grant_for(client, grant_id, now).await?;
    server.store.flush().await?;
    Ok(())
}

async fn refresh_token(
    server: &AuthorizationServer,
    client: &crate::domain::Client,
    params: &Params,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let presented = params.require("refresh_token")?;
    let old_hash = token_key(presented);
    let invalid = || {
        OAuthError::InvalidGrant(
            "the refresh token is invalid, expired, revoked or was issued to another client".into(),
        )
    };
    let old = server.store.refresh_token(&old_hash).await?.ok_or_else(invalid)?;
    // RFC 6749 §6: bound to the client it was issued to.
    if old.client_id != client.client_id {
        return Err(invalid());
    }
    if old.rotated {
        return Err(revoke_after_reuse(server, client, &old.grant_id, now).await);
    }
    if old.expires_at <= now {
        return Err(invalid());
    }
    let grant = server.store.grant(&old.grant_id).await?.ok_or_else(invalid)?;
    if grant.revoked_at.is_some() || !client.issued_this(grant.created_at) {
        return Err(invalid());
    }
    let user = server.store.user(&grant.user_id).await?.ok_or_else(invalid)?;
    // RFC 6749 §6: the requested scope may narrow, never widen, the original grant.
    let scope = super::requested_scope(params.get("scope")?, &old.scope)?;
    let issued_at = server.issue_time(&client.client_id, Some(&grant.user_id), now).await;
    let (access_token, issued) = server.mint_access_token(
        &grant.user_id,
        &client.client_id,
        &scope,
        Some(grant.auth_time),
        issued_at,
    )?;
    // OIDC Core §12.2: a refreshed ID token, without nonce, keeping auth_time.
    let id_token = match scope.contains(OPENID) {
        true => Some(server.mint_id_token(client, &user, grant.auth_time, None, &access_token, issued_at)?),
        false => None,
    };
    let expires_at = now + server.config.refresh_token_ttl;
    let new_token = random_dated_secret(expires_at);
    // RFC 6749 §6: the new refresh token keeps the scope of the one it replaces.
    let new_record = RefreshToken {
        grant_id: old.grant_id.clone(),
        client_id: client.client_id.clone(),
        scope: old.scope.clone(),
        expires_at,
        rotated: false,
    };
    match server
        .store
        .rotate_refresh_token(&old_hash, &token_key(&new_token), &new_record, &issued, now)
        .await?
    {
        Rotation::Rotated => {}
        Rotation::AlreadyRotated { grant_id } => {
            return Err(revoke_after_reuse(server, client, &grant_id, now).await);
        }
        Rotation::Invalid => return Err(invalid()),
    }
    tracing::info!(client_id = %client.client_id, grant_id = %old.grant_id, "rotated a refresh token");
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: server.config.access_token_ttl,
        refresh_token: Some(new_token),
        scope: scope.to_string(),
        id_token,
    })
}

/// RFC 9700 §4.14.2: a rotated refresh token presented again means two parties hold it; revoke
/// the whole family.
async fn revoke_after_reuse(
    server: &AuthorizationServer,
    client: &crate::domain::Client,
    grant_id: &str,
    now: i64,
) -> OAuthError {
    tracing::warn!(%grant_id, "rotated refresh token reused: revoking its whole grant");
    if let Err(error) = revoke_grant(server, client, grant_id, now).await {
        return error;
    }
    OAuthError::InvalidGrant(
        "the refresh token was already used; every token of this grant is now revoked".into(),
    )
}

async fn client_credentials(
    server: &AuthorizationServer,
    client: &crate::domain::Client,
    params: &Params,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    // RFC 6749 §4.4: "The client credentials grant type MUST only be used by confidential clients."
    if client.is_public() {
        return Err(OAuthError::UnauthorizedClient("public clients cannot use client_credentials".into()));
    }
    let scope = super::requested_scope(params.get("scope")?, &client.scope)?;
    let issued_at = server.issue_time(&client.client_id, None, now).await;
    let (access_token, _) =
        server.mint_access_token(&client.client_id, &client.client_id, &scope, None, issued_at)?;
    // RFC 6749 §4.4.3: "A refresh token SHOULD NOT be included."
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: server.config.access_token_ttl,
        refresh_token: None,
        scope: scope.to_string(),
        id_token: None,
    })
}
