//! Parsed newtypes and stored records, in RFC nouns. Nothing here knows HTTP or a storage engine;
//! a value of one of these types has already been validated, so code that holds one need not
//! check it again.

pub mod pkce;
pub mod records;
pub mod redirect_uri;
pub mod scope;

pub use pkce::{CodeChallenge, CodeVerifier};
pub use records::{
    AuthorizationCode, Client, ClientType, Grant, GrantType, IssuedAccessToken, MAX_USERNAME_CHARS,
    RefreshToken, Session, User, is_valid_username,
};
pub use redirect_uri::RedirectUri;
pub use scope::Scope;
