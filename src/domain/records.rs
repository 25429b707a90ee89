//! The records the store keeps. Secrets appear here only as SHA-256 digests; times are Unix
//! seconds so records serialize the same in every backend.

use serde::{Deserialize, Serialize};

use super::{CodeChallenge, RedirectUri, Scope};

/// RFC 6749 §2.1 client types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// Can keep a secret (a server-side web app).
    Confidential,
    /// Cannot (a SPA, a native app): must use PKCE, gets no secret.
    Public,
}

/// The grant types a client may use (RFC 6749 §4, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(name: &str) -> Option<GrantType> {
        match name {
            "authorization_code" => Some(GrantType::AuthorizationCode),
            "refresh_token" => Some(GrantType::RefreshToken),
            "client_credentials" => Some(GrantType::ClientCredentials),
            _ => None,
        }
    }

    pub const ALL: [GrantType; 3] =
        [GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials];
}

/// A registered client application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub client_type: ClientType,
    /// SHA-256 of the client secret, hex; `None` for public clients.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    /// The scopes this client may request; no `scope` parameter means all of them.
    pub scope: Scope,
    pub skip_consent: bool,
    /// The user who registered it, when registered through the pages.
    pub owner: Option<String>,
    pub created_at: i64,
    /// The algorithm of this client's ID tokens (OIDC Dynamic Client Registration
    /// `id_token_signed_response_alg`); RS256 when unset.
    #[serde(default)]
    pub id_token_signed_response_alg: Option<crate::keys::Algorithm>,
    /// Origins, besides those of the redirect URIs, allowed to call the token endpoint from a
    /// browser.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where OpenID Connect RP-initiated logout may send the user afterwards (exact match).
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<RedirectUri>,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.client_type == ClientType::Public
    }

    pub fn allows_grant(&self, grant_type: GrantType) -> bool {
        self.grant_types.contains(&grant_type)
    }

    /// The redirect URI to use for `presented`, if a registered one accepts it
    /// ([`RedirectUri::accepting`]).
    pub fn registered_redirect_uri(&self, presented: &str) -> Option<RedirectUri> {
        self.redirect_uris.iter().find_map(|uri| uri.accepting(presented))
    }

    /// Whether what was issued at `issued_at` (an access token's `iat`, a grant's creation) was
    /// issued to this client. Not if it is older than the client: then it went to a deleted
    /// client of the same id (`swagger-ui` is created again at the next start after a
    /// deletion), and was revoked with it.
    pub fn issued_this(&self, issued_at: i64) -> bool {
        issued_at >= self.created_at
    }
}

/// The longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 150;

/// Whether `username` may name a user: 1 to [`MAX_USERNAME_CHARS`] characters, none a control.
pub fn is_valid_username(username: &str) -> bool {
    !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_CHARS
        && !username.chars().any(char::is_control)
}

/// A resource owner who can sign in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Stable identifier: the `sub` of this user's tokens.
    pub id: String,
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub admin: bool,
    pub created_at: i64,
    /// OpenID Connect `email` claim (scope `email`).
    #[serde(default)]
    pub email: Option<String>,
    /// OpenID Connect `name` claim (scope `profile`).
    #[serde(default)]
    pub name: Option<String>,
    /// Bumped each time the password is replaced (`user set-password`, `/account/password`):
    /// a session started under an earlier one is over. A counter, not a time: a session
    /// started in the same second as the change is told apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session_generation: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl User {
    /// Whether `session` still stands for this user: not if the password was replaced since it
    /// started (whoever knew the old one is signed out).
    pub fn accepts(&self, session: &Session) -> bool {
        session.user_generation == self.session_generation
    }
}

/// A signed-in browser session, keyed in the store by the SHA-256 of its cookie value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub auth_time: i64,
    /// The CSRF token every form of this session must carry.
    pub csrf_token: String,
    pub expires_at: i64,
    /// The user's `session_generation` when the session started (see [`User::accepts`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_generation: u64,
}

/// An authorization code (RFC 6749 §4.1.2), keyed by [`crate::secrets::token_key`] of the code (its
/// SHA-256, led by the purge time the code carries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: String,
    pub scope: Scope,
    pub auth_time: i64,
    pub code_challenge: Option<CodeChallenge>,
    /// Every token issued from this code belongs to this grant; a replay revokes it.
    pub grant_id: String,
    pub expires_at: i64,
    /// Set atomically by the first exchange; a second exchange finds it set.
    pub used: bool,
    /// Kept after expiry until this time so that a late replay still revokes the grant.
    pub purge_at: i64,
    /// OpenID Connect: the `nonce` of the authentication request, echoed in the ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    /// When it was issued; `None` in a code of an earlier release. A code older than its client
    /// went to a deleted client of the same id, and is refused (`Client::issued_this`).
    #[serde(default)]
    pub issued_at: Option<i64>,
}

/// An access token issued inside a grant, remembered so that revoking the grant can revoke it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedAccessToken {
    pub jti: String,
    pub expires_at: i64,
}

/// Everything issued from one authorization code: the refresh-token family (RFC 9700 §4.14.2)
/// and the access tokens minted along the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    /// The scope the user approved; refresh tokens of this grant keep it.
    pub scope: Scope,
    pub auth_time: i64,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The access tokens issued in this grant. The memory store lists them all here; the sled
    /// store lists only the exchange's and keeps those of rotations in a tree of their own (one
    /// small record per token), so that a rotation does not rewrite a list that grows with every
    /// refresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_tokens: Vec<IssuedAccessToken>,
    /// When the newest token of the grant expires; the record can go after that.
    pub expires_at: i64,
}

impl Grant {
    /// A new id for a grant of `user_id`: a UUID (version 8, RFC 9562 §5.8) made of the user's
    /// [`Grant::id_prefix`] (32 bits), the time in milliseconds (48 bits, the version and
    /// variant bits set between them) and 42 random bits. A store keyed by grant id then holds a
    /// user's grants in one range of keys, which the authorized-applications page and `user
    /// delete` read instead of every grant, and a user's new grants land at the end of that range
    /// (recent pages, not a random page of a tree of every grant). A grant id is a reference,
    /// never a credential: every lookup by id is checked against the signed-in user, and the
    /// prefix, a digest of the user id, tells nothing the grant record does not.
    pub fn new_id(user_id: &str) -> String {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
            & ((1 << 48) - 1);
        let mut random = [0u8; 8];
        crate::secrets::fill_random(&mut random);
        let random = u64::from_be_bytes(random) >> 22; // 42 bits
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&Self::tag(user_id));
        bytes[4..6].copy_from_slice(&((millis >> 32) as u16).to_be_bytes());
        bytes[6..8].copy_from_slice(&(0x8000 | ((millis >> 20) & 0x0fff) as u16).to_be_bytes());
        let low = (0b10 << 62) | ((millis & 0xf_ffff) << 42) | random;
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        uuid::Uuid::from_bytes(bytes).to_string()
    }

    /// How the ids [`Grant::new_id`] makes for `user_id` begin: the first 32 bits of the SHA-256
    /// of the user id, in hex. Other users' ids may begin so too (one in 2^32), and grants of
    /// earlier releases (UUIDv7) begin otherwise: what reads a user's grants by this prefix checks
    /// each grant's user and finds the others another way.
    pub fn id_prefix(user_id: &str) -> String {
        crate::secrets::hex(&Self::tag(user_id))
    }

    fn tag(user_id: &str) -> [u8; 4] {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(user_id.as_bytes());
        [digest[0], digest[1], digest[2], digest[3]]
    }

    /// Records a newly issued access token, forgetting the ones already expired.
    pub fn remember_access_token(&mut self, token: IssuedAccessToken, now: i64) {
        self.access_tokens.retain(|issued| issued.expires_at > now);
        self.expires_at = self.expires_at.max(token.expires_at);
        self.access_tokens.push(token);
    }
}

/// A refresh token, keyed by [`crate::secrets::token_key`] of the token (its SHA-256, led by the
/// expiry the token carries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub grant_id: String,
    pub client_id: String,
    pub scope: Scope,
    pub expires_at: i64,
    /// Set when the token has been exchanged for a new one; presenting it again is reuse.
    pub rotated: bool,
}

#[cfg(test)]
mod tests {
    use super::Grant;

    #[test]
    fn grant_ids_begin_with_their_users_prefix_and_follow_each_other() {
        let ids: Vec<String> = (0..1000).map(|_| Grant::new_id("user-a")).collect();
        for id in &ids {
            let uuid = uuid::Uuid::try_parse(id).unwrap();
            assert_eq!(uuid.get_version_num(), 8, "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(uuid.to_string(), *id, "the canonical form the store compacts to 16 bytes");
            assert!(id.starts_with(&Grant::id_prefix("user-a")), "{id}");
        }
        // The time in milliseconds, read back from around the version and variant bits: in
        // creation order (a user's new grants land at the end of the range); no two ids alike.
        let millis = |id: &str| {
            let bytes = uuid::Uuid::try_parse(id).unwrap().into_bytes();
            let high = u64::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            let middle = u64::from(u16::from_be_bytes([bytes[6], bytes[7]]) & 0x0fff);
            let low = (u64::from_be_bytes(bytes[8..].try_into().unwrap()) >> 42) & 0xf_ffff;
            (high << 32) | (middle << 20) | low
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        assert!((now as u64).abs_diff(millis(&ids[999])) < 60_000, "{} against {now}", millis(&ids[999]));
        assert!(ids.windows(2).all(|pair| millis(&pair[0]) <= millis(&pair[1])));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert_ne!(Grant::id_prefix("user-a"), Grant::id_prefix("user-b"));
        assert_eq!(Grant::id_prefix("user-a").len(), 8);
    }
}
