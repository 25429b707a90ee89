//! POST /o/revoke_token (RFC 7009) and POST /o/introspect (RFC 7662) as OpenAPI operations.

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::Tag;
use super::errors::OAuthErrorBody;
use super::form::{FormError, OAuthForm};
use super::token::{TokenEndpointAuth, client_authorization};
use crate::oauth::introspect::Introspection;
use crate::oauth::{AuthorizationServer, OAuthError};
use crate::startup::now;

/// A revocation or introspection request.
#[derive(Debug, Object)]
pub struct TokenRequestByValue {
    /// The access token or refresh token (RFC 6749 §3.1: an empty value counts as missing).
    #[oai(validator(min_length = 1))]
    pub token: String,
    /// `access_token` or `refresh_token`: which kind to look for first.
    pub token_type_hint: Option<String>,
    /// The client id, when not authenticating with Basic.
    pub client_id: Option<String>,
    /// The client secret of a confidential client not using Basic.
    pub client_secret: Option<String>,
}

/// RFC 7662 §2.2. Only `active` is present for an inactive token.
#[derive(Debug, Object)]
pub struct IntrospectionBody {
    /// Whether the token is valid now.
    pub active: bool,
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub client_id: Option<String>,
    /// `Bearer` for access tokens.
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub nbf: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub username: Option<String>,
}

impl From<Introspection> for IntrospectionBody {
    fn from(found: Introspection) -> IntrospectionBody {
        IntrospectionBody {
            active: found.active,
            scope: found.scope,
            client_id: found.client_id,
            token_type: found.token_type,
            exp: found.exp,
            iat: found.iat,
            nbf: found.nbf,
            sub: found.sub,
            aud: found.aud,
            iss: found.iss,
            jti: found.jti,
            username: found.username,
        }
    }
}

const NO_STORE: &str = "no-store";

/// The error answers shared by both endpoints (RFC 6749 §5.2, RFC 7009 §2.2.1).
macro_rules! client_endpoint_response {
    ($name:ident, $handler:literal, $ok:ty, $ok_doc:literal) => {
        #[derive(ApiResponse)]
        #[oai(bad_request_handler = $handler)]
        pub enum $name {
            #[doc = $ok_doc]
            #[oai(status = 200)]
            Ok($ok, #[oai(header = "Cache-Control")] String),
            /// `invalid_request`, or `unauthorized_client` when the token belongs to another client.
            #[oai(status = 400)]
            BadRequest(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
            /// `invalid_client`: unknown client, wrong or missing secret.
            #[oai(status = 401)]
            Unauthorized(
                Json<OAuthErrorBody>,
                #[oai(header = "WWW-Authenticate")] String,
                #[oai(header = "Cache-Control")] String,
            ),
            /// `invalid_request`: the body did not arrive in time.
            #[oai(status = 408)]
            RequestTimeout(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
            /// `invalid_request`: the body is larger than 64 KiB.
            #[oai(status = 413)]
            PayloadTooLarge(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
            /// `server_error`.
            #[oai(status = 500)]
            ServerError(Json<OAuthErrorBody>, #[oai(header = "Cache-Control")] String),
        }

        impl From<&OAuthError> for $name {
            fn from(error: &OAuthError) -> $name {
                let body = Json(OAuthErrorBody::from(error));
                match error {
                    OAuthError::InvalidClient(_) => $name::Unauthorized(
                        body,
                        "Basic realm=\"portcullis\", charset=\"UTF-8\"".into(),
                        NO_STORE.into(),
                    ),
                    OAuthError::Server(_) => $name::ServerError(body, NO_STORE.into()),
                    _ => $name::BadRequest(body, NO_STORE.into()),
                }
            }
        }

        impl From<poem::Error> for $name {
            fn from(error: poem::Error) -> $name {
                match error.downcast_ref::<FormError>() {
                    Some(form) if form.status == poem::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        $name::PayloadTooLarge(Json(OAuthErrorBody::from(&form.error)), NO_STORE.into())
                    }
                    Some(form) if form.status == poem::http::StatusCode::REQUEST_TIMEOUT => {
                        $name::RequestTimeout(Json(OAuthErrorBody::from(&form.error)), NO_STORE.into())
                    }
                    Some(form) => $name::from(&form.error),
                    None => $name::from(&OAuthError::InvalidRequest(format!(
                        "the body must be application/x-www-form-urlencoded: {error}"
                    ))),
                }
            }
        }
    };
}

client_endpoint_response!(
    RevokeResponse,
    "revoke_unreadable",
    Json<serde_json::Value>,
    "Revoked, or the token was unknown or already invalid (RFC 7009 §2.2): the body is `{}`."
);
client_endpoint_response!(
    IntrospectResponse,
    "introspect_unreadable",
    Json<IntrospectionBody>,
    "The token's state."
);

fn revoke_unreadable(error: poem::Error) -> RevokeResponse {
    RevokeResponse::from(error)
}

fn introspect_unreadable(error: poem::Error) -> IntrospectResponse {
    IntrospectResponse::from(error)
}

pub struct RevocationApi;

#[OpenApi]
impl RevocationApi {
    /// Revoke a token (RFC 7009)
    ///
    /// A refresh token revokes its whole grant, access tokens included; an access token is
    /// refused by this server (introspection, `/api/hello`) until it expires. Offline verifiers
    /// cannot see it: keep access tokens short-lived.
    #[oai(path = "/o/revoke_token", method = "post", tag = "Tag::OAuth", operation_id = "revokeToken")]
    async fn revoke(
        &self,
        request: &Request,
        server: poem::web::Data<&AuthorizationServer>,
        _auth: TokenEndpointAuth,
        body: OAuthForm<TokenRequestByValue>,
    ) -> RevokeResponse {
        let authorization = match client_authorization(request) {
            Ok(authorization) => authorization,
            Err(error) => return RevokeResponse::from(&error),
        };
        match crate::oauth::revoke::revoke(server.0, authorization, &body.params, now()).await {
            Ok(_) => RevokeResponse::Ok(Json(serde_json::json!({})), NO_STORE.into()),
            Err(error) => RevokeResponse::from(&error),
        }
    }

    /// Introspect a token (RFC 7662)
    ///
    /// For resource servers registered as confidential clients. Expired, revoked, malformed,
    /// unknown and other-audience tokens, and tokens of a deleted client, are `{"active": false}`.
    #[oai(path = "/o/introspect", method = "post", tag = "Tag::OAuth", operation_id = "introspect")]
    async fn introspect(
        &self,
        request: &Request,
        server: poem::web::Data<&AuthorizationServer>,
        _auth: TokenEndpointAuth,
        body: OAuthForm<TokenRequestByValue>,
    ) -> IntrospectResponse {
        let authorization = match client_authorization(request) {
            Ok(authorization) => authorization,
            Err(error) => return IntrospectResponse::from(&error),
        };
        match crate::oauth::introspect::introspect(server.0, authorization, &body.params, now()).await {
            Ok(found) => IntrospectResponse::Ok(Json(found.into()), NO_STORE.into()),
            Err(error) => IntrospectResponse::from(&error),
        }
    }
}

/// The last signed revocation feed. The feed is public and its lists grow with revocations (a
/// client may revoke every token it gets), so a request must not cost a read of them: while
/// the store's [`crate::store::RevokedTokenStore::revocations_version`], the signing key and
/// the time of the soonest expiry in the lists say nothing changed, every request gets the same
/// bytes. Otherwise one request reads the lists again (on the blocking pool), the others wait
/// for it under the lock, and the feed is signed anew only if the lists did change, so that its
/// bytes and its `ETag` stay the same while nothing changes.
#[derive(Default)]
pub struct FeedCache(tokio::sync::Mutex<Option<CachedFeed>>);

pub struct CachedFeed {
    version: u64,
    kid: String,
    /// The soonest `exp` in the lists: from then on, the lists are shorter.
    valid_until: i64,
    list: Vec<(String, i64)>,
    clients: Vec<crate::store::DeletedClient>,
    users: Vec<crate::store::RevokedUserTokens>,
    signed: std::sync::Arc<SignedFeed>,
}

pub struct SignedFeed {
    jws: String,
    etag: String,
}

/// How long caches may keep the feed: part of the staleness bound verifiers get.
pub const FEED_MAX_AGE_SECONDS: u32 = 10;

#[derive(ApiResponse)]
pub enum FeedResponse {
    /// A compact JWS (`typ: revocation-list+jwt`) signed with the server's active key; its
    /// payload is `{"iss", "iat", "revoked": [{"jti", "exp"}], "revoked_clients": [{"client_id",
    /// "deleted_at", "exp"}], "revoked_subjects": [{"client_id", "sub", "issued_until",
    /// "exp"}]}`: every revoked access token that has not expired; every client, deleted or past
    /// `--max-revoked-per-client`, whose access tokens issued up to `deleted_at` (all revoked)
    /// may not all have expired before `exp`; and every user (`sub`) whose access tokens of a
    /// client issued up to `issued_until` were all revoked, past the same bound, and may not all
    /// have expired before `exp` (`revoked_clients` and `revoked_subjects` are absent when
    /// empty).
    #[oai(status = 200, content_type = "application/jwt")]
    Ok(
        poem_openapi::payload::PlainText<String>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// Unchanged since the `If-None-Match` ETag.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String, #[oai(header = "Cache-Control")] String),
    /// `server_error`.
    #[oai(status = 500)]
    ServerError(Json<OAuthErrorBody>),
}

async fn signed_feed(
    server: &AuthorizationServer,
    cache: &FeedCache,
) -> Result<std::sync::Arc<SignedFeed>, OAuthError> {
    let mut cached = cache.0.lock().await;
    let now = now();
    // Read before the lists: a revocation landing while they are read changes it again.
    let version = server.store.revocations_version();
    let keys = server.keys();
    let alg = server.config.signing_alg;
    let kid = keys.active(alg).map(|key| key.kid.clone()).unwrap_or_default();
    let unchanged = |feed: &CachedFeed| feed.kid == kid && now < feed.valid_until;
    if let Some(feed) = cached.as_ref().filter(|feed| feed.version == version && unchanged(feed)) {
        return Ok(feed.signed.clone());
    }
    let list = server.store.revoked_access_tokens(now).await?;
    let clients = server.store.revoked_clients(now).await?;
    let users = server.store.revoked_user_tokens(now).await?;
    let valid_until = (list.iter().map(|(_, exp)| *exp))
        .chain(clients.iter().map(|client| client.tokens_until))
        .chain(users.iter().map(|user| user.tokens_until))
        .min()
        .unwrap_or(i64::MAX);
    let same = |feed: &CachedFeed| {
        feed.kid == kid && feed.list == list && feed.clients == clients && feed.users == users
    };
    if let Some(feed) = cached.as_mut().filter(|feed| same(feed)) {
        (feed.version, feed.valid_until) = (version, valid_until);
        return Ok(feed.signed.clone());
    }
    // Serialized, signed and hashed on the blocking pool too: megabytes, for a long list.
    let issuer = server.config.issuer.clone();
    let (list, clients, users, signed) = tokio::task::spawn_blocking(move || {
        let feed = crate::verify::RevocationFeed {
            iss: issuer,
            iat: now,
            revoked: list
                .iter()
                .map(|(jti, exp)| crate::verify::RevokedToken { jti: jti.clone(), exp: *exp })
                .collect(),
            revoked_clients: clients
                .iter()
                .map(|client| crate::verify::RevokedClient {
                    client_id: client.client_id.clone(),
                    deleted_at: client.deleted_at,
                    exp: client.tokens_until,
                })
                .collect(),
            revoked_subjects: users
                .iter()
                .map(|user| crate::verify::RevokedSubject {
                    client_id: user.client_id.clone(),
                    sub: user.user_id.clone(),
                    issued_until: user.issued_until,
                    exp: user.tokens_until,
                })
                .collect(),
        };
        let payload = serde_json::to_vec(&feed).map_err(OAuthError::server)?;
        let jws = keys.sign_bytes(alg, crate::verify::REVOCATION_FEED_TYPE, &payload)?;
        let etag = format!("\"{}\"", crate::secrets::sha256_base64url(jws.as_bytes()));
        Ok::<_, OAuthError>((list, clients, users, std::sync::Arc::new(SignedFeed { jws, etag })))
    })
    .await
    .map_err(OAuthError::server)??;
    *cached = Some(CachedFeed { version, kid, valid_until, list, clients, users, signed: signed.clone() });
    Ok(signed)
}

pub struct RevocationFeedApi;

#[OpenApi]
impl RevocationFeedApi {
    /// Revoked access tokens (signed feed)
    ///
    /// For offline verifiers: poll it to refuse revoked tokens without asking the server about
    /// each one. Signed with the JWKS keys, so it may be relayed through caches; supports
    /// `If-None-Match`. A verifier polling every N seconds refuses a revoked token at most
    /// N + 10 seconds after its revocation.
    #[oai(path = "/o/revoked_tokens", method = "get", tag = "Tag::Discovery", operation_id = "revokedTokens")]
    async fn feed(
        &self,
        server: poem::web::Data<&AuthorizationServer>,
        cache: poem::web::Data<&std::sync::Arc<FeedCache>>,
        #[oai(name = "If-None-Match")] if_none_match: poem_openapi::param::Header<Option<String>>,
    ) -> FeedResponse {
        let cache_control = format!("public, max-age={FEED_MAX_AGE_SECONDS}");
        match signed_feed(server.0, cache.0).await {
            Ok(feed)
                if if_none_match
                    .0
                    .as_deref()
                    .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == feed.etag)) =>
            {
                FeedResponse::NotModified(feed.etag.clone(), cache_control)
            }
            Ok(feed) => FeedResponse::Ok(
                poem_openapi::payload::PlainText(feed.jws.clone()),
                feed.etag.clone(),
                cache_control,
            ),
            Err(error) => FeedResponse::ServerError(Json(OAuthErrorBody::from(&error))),
        }
    }
}
