//! Token revocation (RFC 7009). The client authenticates; it may revoke only tokens issued to it.
//! `token_type_hint` decides which kind is tried first, never which kinds are tried (§2.1: the
//! server "MAY ignore the hint" and must look further when it is wrong). Unknown, malformed and
//! already expired tokens answer success (§2.2: "invalid tokens do not cause an error response").

use super::client_auth::{authenticate, credentials};
use super::{AuthorizationServer, OAuthError, Params, Revoker};
use crate::domain::Client;
use crate::secrets::token_key;

/// What a revocation did (for logs and tests; the wire answer is 200 either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// A refresh token: its whole grant is revoked, access tokens included (§2.1 SHOULD).
    RefreshToken { grant_id: String },
    /// An access token: its `jti` is remembered as revoked until its `exp`.
    AccessToken { jti: String },
    /// Unknown, malformed or already expired: nothing to do.
    Nothing,
}

pub async fn revoke(
    server: &AuthorizationServer,
    authorization: Option<&str>,
    params: &Params,
    now: i64,
) -> Result<Revocation, OAuthError> {
    let credentials = credentials(authorization, params)?;
    let client = authenticate(server.store.as_ref(), &credentials).await?;
    let token = params.require("token")?;
    let access_first = params.get("token_type_hint")? == Some("access_token");
    let outcome = if access_first {
        match revoke_access_token(server, &client, token, now).await? {
            Revocation::Nothing => revoke_refresh_token(server, &client, token, now).await?,
            done => done,
        }
    } else {
        match revoke_refresh_token(server, &client, token, now).await? {
            Revocation::Nothing => revoke_access_token(server, &client, token, now).await?,
            done => done,
        }
    };
    if outcome != Revocation::Nothing {
        server.store.flush().await?;
    }
    Ok(outcome)
}

/// §2.1: "verifies whether the token was issued to the client making the revocation request. If
/// this validation fails, the request is refused".
fn not_yours() -> OAuthError {
    OAuthError::UnauthorizedClient("this token was not issued to the authenticated client".into())
}

async fn revoke_refresh_token(
    server: &AuthorizationServer,
    client: &Client,
    token: &str,
    now: i64,
) -> Result<Revocation, OAuthError> {
    let Some(record) = server.store.refresh_token(&token_key(token)).await? else {
        return Ok(Revocation::Nothing);
    };
    if record.client_id != client.client_id {
        return Err(not_yours());
    }
    server.revoke_grant_for(client, &record.grant_id, now).await?;
    tracing::info!(client_id = %client.client_id, grant_id = %record.grant_id, "revoked a refresh token and its grant");
    Ok(Revocation::RefreshToken { grant_id: record.grant_id })
}

async fn revoke_access_token(
    server: &AuthorizationServer,
    client: &Client,
    token: &str,
    now: i64,
) -> Result<Revocation, OAuthError> {
    // Only tokens this server signed and that can still be used need remembering.
    let Ok(claims) = server.verifier.verify(token, now) else {
        return Ok(Revocation::Nothing);
    };
    if claims.client_id != client.client_id {
        return Err(not_yours());
    }
    // Revoked already (by its jti, or with every token of its client): nothing to write, and not
    // counted against the client's bound, which is about what the feed lists.
    if server.access_token_standing(&claims, now).await? != super::TokenStanding::Good {
        return Ok(Revocation::AccessToken { jti: claims.jti });
    }
    let revoker = Revoker::client_request(client, &claims.sub);
    if server.revocation_allowance(revoker, now) > 0 {
        server.store.revoke_access_token(&claims.jti, claims.exp).await?;
        server.count_listed(revoker, now, 1);
        tracing::info!(client_id = %client.client_id, jti = %claims.jti, "revoked an access token");
    } else {
        // Past the bound on tokens listed one by one in the public feed: every access token
        // issued to the client (a public client: to it for this user) until now is revoked,
        // this one included, in one entry. Its holders refresh or ask again; refresh tokens are
        // untouched.
        let issued_until = now.max(claims.iat);
        let tokens_until = claims.exp.max(issued_until + server.max_token_lifetime());
        (server.store)
            .revoke_client_tokens(&client.client_id, revoker.user_id, issued_until, tokens_until)
            .await?;
        server.note_past_bound(revoker, now, issued_until);
    }
    Ok(Revocation::AccessToken { jti: claims.jti })
}
