//! Settings: one struct, parsed from flags with `PORTCULLIS_*` environment fallbacks, validated at
//! start so that bad configuration fails before anything listens.

use std::path::PathBuf;

use crate::keys::Algorithm;
use crate::oauth::OAuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningAlg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl From<SigningAlg> for Algorithm {
    fn from(alg: SigningAlg) -> Algorithm {
        match alg {
            SigningAlg::Es256 => Algorithm::ES256,
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::EdDsa => Algorithm::EdDSA,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server and store settings (every command)")]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: String,
    /// Issuer identifier (https, or http on loopback); default: `http://<listen>`.
    #[arg(long, env = "PORTCULLIS_ISSUER", global = true)]
    pub issuer: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "PORTCULLIS_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Directory of the signing keys (private keys, mode 0600).
    #[arg(long, env = "PORTCULLIS_KEYS_DIR", default_value = "./keys", global = true)]
    pub keys_dir: PathBuf,
    /// Access token lifetime in seconds.
    #[arg(long, env = "PORTCULLIS_ACCESS_TOKEN_TTL", default_value_t = 900, global = true)]
    pub access_token_ttl: u32,
    /// Access tokens that one confidential client's revocations, or revocations of one user's
    /// tokens of a client (by a public client, or the user withdrawing an authorization), may
    /// list one by one in the revocation feed within an access-token lifetime; past that, they
    /// revoke all of the client's (or that user's of the client) access tokens issued until
    /// then, in one entry, so that the public feed stays bounded. One user's revocations across
    /// every client (theirs, and those of the confidential clients they registered) count
    /// against the same bound once more.
    #[arg(long, env = "PORTCULLIS_MAX_REVOKED_PER_CLIENT", default_value_t = 10_000, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_revoked_per_client: u32,
    /// Applications one user (not an admin) may register on the applications pages. Each is a
    /// client of its own, with its records and its users' grants, so without a cap one user
    /// could grow the store without bound.
    #[arg(long, env = "PORTCULLIS_MAX_APPLICATIONS_PER_USER", default_value_t = 100, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_applications_per_user: u32,
    /// Refresh token lifetime in seconds (30 days).
    #[arg(long, env = "PORTCULLIS_REFRESH_TOKEN_TTL", default_value_t = 2_592_000, global = true)]
    pub refresh_token_ttl: u32,
    /// Authorization code lifetime in seconds.
    #[arg(long, env = "PORTCULLIS_CODE_TTL", default_value_t = 60, global = true)]
    pub code_ttl: u32,
    /// Login session lifetime in seconds.
    #[arg(long, env = "PORTCULLIS_SESSION_TTL", default_value_t = 28_800, global = true)]
    pub session_ttl: u32,
    /// The `aud` of access tokens; default: the issuer.
    #[arg(long, env = "PORTCULLIS_AUDIENCE", global = true)]
    pub audience: Option<String>,
    /// Algorithm that signs access tokens.
    #[arg(long, env = "PORTCULLIS_SIGNING_ALG", value_enum, default_value = "ES256", global = true)]
    pub signing_alg: SigningAlg,
    /// Origins allowed to call the JSON endpoints from a browser (repeatable; env: comma-separated).
    #[arg(long, env = "PORTCULLIS_CORS_ORIGIN", value_delimiter = ',', global = true)]
    pub cors_origin: Vec<String>,
    /// Store cache size in MiB.
    #[arg(long, env = "PORTCULLIS_CACHE_MB", default_value_t = 64, global = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CACHE_MB))]
    pub cache_mb: u64,
    /// Seconds between background purges of expired records.
    #[arg(long, env = "PORTCULLIS_PURGE_INTERVAL", default_value_t = 300, global = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    pub purge_interval: u64,
    /// Seconds a client may take to send a request body (slower ones get 408).
    #[arg(long, env = "PORTCULLIS_BODY_READ_TIMEOUT", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    pub body_read_timeout: u64,
    /// Seconds a connection may stay silent, or a request go unanswered from its first byte,
    /// before the connection is closed.
    #[arg(long, env = "PORTCULLIS_IDLE_TIMEOUT", default_value_t = 60, global = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    pub idle_timeout: u64,
    /// Log lines as text or as JSON (one object per line).
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Seconds between checks of the keys directory for rotated keys.
    #[arg(long, env = "PORTCULLIS_KEY_RELOAD_INTERVAL", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    pub key_reload_interval: u64,
}

/// The largest store cache, in MiB (1 TiB): its size in bytes must fit in a u64.
pub const MAX_CACHE_MB: u64 = 1 << 20;
/// The longest interval or timeout, in seconds (a year): a deadline must fit in an `Instant`.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--issuer {0:?}: {1}")]
    Issuer(String, &'static str),
    #[error("--issuer {0:?}: write it as {1} (the issuer is compared character for character)")]
    IssuerNotCanonical(String, String),
    #[error("--audience {0:?}: must name the resource servers, e.g. https://api.example.com")]
    Audience(String),
    #[error("--{0} must be at least 1 second")]
    Ttl(&'static str),
    #[error("--cors-origin {0:?} is not an origin: write scheme://host[:port], without a path")]
    CorsOrigin(String),
}

/// The issuer as RFC 8414 §2 wants it: https (http allowed for development), no query or
/// fragment, no trailing slash.
pub fn validate_issuer(issuer: &str) -> Result<String, ConfigError> {
    // Every URL this server builds starts with it, and must stay within the bounds it enforces
    // (a redirect URI has at most 2048 characters).
    if issuer.len() > 1024 {
        return Err(ConfigError::Issuer(issuer.into(), "is longer than 1024 characters"));
    }
    let url =
        url::Url::parse(issuer).map_err(|_| ConfigError::Issuer(issuer.into(), "not an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::Issuer(issuer.into(), "must be an https (or http) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::Issuer(issuer.into(), "must not have a query or fragment (RFC 8414 §2)"));
    }
    if url.host().is_none() {
        return Err(ConfigError::Issuer(issuer.into(), "must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::Issuer(issuer.into(), "must not contain user information"));
    }
    // Clients compare `iss` with the issuer they know character for character (RFC 8414 §3.3,
    // RFC 9207 §2.4), and it leads every URL this server sends (headers included), so it is
    // taken only in the form the URL standard writes it: no spaces, ASCII (a host in its
    // punycode form), lower-case scheme and host, no default port.
    let canonical = url.as_str().trim_end_matches('/');
    let issuer = issuer.trim_end_matches('/');
    if issuer != canonical {
        return Err(ConfigError::IssuerNotCanonical(issuer.into(), canonical.into()));
    }
    Ok(issuer.to_owned())
}

impl Settings {
    /// The protocol settings, for an issuer known once the listener is bound.
    pub fn oauth_config(&self, default_issuer: &str) -> Result<OAuthConfig, ConfigError> {
        let issuer = validate_issuer(self.issuer.as_deref().unwrap_or(default_issuer))?;
        if let Some(audience) = &self.audience {
            // Verifiers compare it with their own name; an empty one matches nothing useful.
            if audience.trim().is_empty() || audience.chars().any(char::is_control) {
                return Err(ConfigError::Audience(audience.clone()));
            }
        }
        for (name, value) in [
            ("access-token-ttl", self.access_token_ttl),
            ("refresh-token-ttl", self.refresh_token_ttl),
            ("code-ttl", self.code_ttl),
            ("session-ttl", self.session_ttl),
        ] {
            if value == 0 {
                return Err(ConfigError::Ttl(name));
            }
        }
        Ok(OAuthConfig {
            audience: self.audience.clone().unwrap_or_else(|| issuer.clone()),
            issuer,
            access_token_ttl: self.access_token_ttl.into(),
            refresh_token_ttl: self.refresh_token_ttl.into(),
            code_ttl: self.code_ttl.into(),
            session_ttl: self.session_ttl.into(),
            signing_alg: self.signing_alg.into(),
            max_revoked_per_client: self.max_revoked_per_client.max(1),
            max_applications_per_user: self.max_applications_per_user.max(1),
        })
    }

    /// An interval or timeout setting as a `Duration`, within the bounds the CLI enforces (for
    /// settings built in code).
    pub fn seconds(value: u64) -> std::time::Duration {
        std::time::Duration::from_secs(value.clamp(1, MAX_SECONDS))
    }

    /// The store cache in bytes, within the bounds the CLI enforces (for settings built in code).
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb.clamp(1, MAX_CACHE_MB) * 1024 * 1024
    }

    /// Defaults, for tests and embedding: port 0, the given directories.
    pub fn for_directories(data_dir: PathBuf, keys_dir: PathBuf) -> Settings {
        Settings {
            listen: "127.0.0.1:0".into(),
            issuer: None,
            data_dir,
            keys_dir,
            access_token_ttl: 900,
            max_revoked_per_client: 10_000,
            max_applications_per_user: 100,
            refresh_token_ttl: 2_592_000,
            code_ttl: 60,
            session_ttl: 28_800,
            audience: None,
            signing_alg: SigningAlg::Es256,
            cors_origin: Vec::new(),
            cache_mb: 16,
            purge_interval: 300,
            key_reload_interval: 10,
            log_format: LogFormat::Text,
            body_read_timeout: 10,
            idle_timeout: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ConfigError, validate_issuer};

    #[test]
    fn issuers_are_taken_only_as_urls_written_in_their_standard_form() {
        for (given, taken) in [
            ("https://auth.example.com", "https://auth.example.com"),
            ("https://auth.example.com/", "https://auth.example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://example.com/auth", "https://example.com/auth"),
        ] {
            assert_eq!(validate_issuer(given).unwrap(), taken);
        }
        let long = format!("https://x.example/{}", "a".repeat(2048));
        for refused in
            ["ftp://x", "127.0.0.1:8080", "http://x?y=1", "http://x#f", "https://user@x.example", &long]
        {
            assert!(matches!(validate_issuer(refused), Err(ConfigError::Issuer(..))), "{refused}");
        }
        // Not refused for nothing: the message says how to write it.
        for (given, canonical) in [
            (" http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://bücher.example", "http://xn--bcher-kva.example"),
            ("http://x.example/a b", "http://x.example/a%20b"),
            ("HTTPS://Auth.Example.com", "https://auth.example.com"),
            ("https://auth.example.com:443", "https://auth.example.com"),
        ] {
            let error = validate_issuer(given).unwrap_err();
            assert!(
                matches!(&error, ConfigError::IssuerNotCanonical(_, written) if written == canonical),
                "{given}"
            );
            assert!(error.to_string().contains(&format!("write it as {canonical}")), "{error}");
        }
    }
}
