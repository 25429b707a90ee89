//! Building and running the server: open the store, load or create keys, make sure the admin user
//! and the `swagger-ui` client exist, bind (port 0 allowed), serve until a shutdown signal, flush.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::Server;
use poem::listener::TcpAcceptor;

use crate::config::{ConfigError, Settings};
use crate::domain::{Client, ClientType, GrantType, RedirectUri, Scope, User};
use crate::keys::{Algorithm, KeyDirState, KeyError, KeyRing};
use crate::oauth::AuthorizationServer;
use crate::store::sled::OpenError;
use crate::store::{SharedStore, SledStore, StoreError};

/// The `swagger-ui` public client's id.
pub const SWAGGER_UI_CLIENT_ID: &str = "swagger-ui";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("could not listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("could not hash the admin password: {0}")]
    Password(String),
    #[error("PORTCULLIS_ADMIN_PASSWORD cannot be the admin's password: {0}")]
    AdminPassword(String),
}

/// A built, bound server, not yet serving.
pub struct App {
    port: u16,
    acceptor: TcpAcceptor,
    server: AuthorizationServer,
    /// The password of the `admin` user created by this start, if one was.
    pub initial_admin_password: Option<String>,
    purge_interval: Duration,
    keys_dir: std::path::PathBuf,
    key_reload_interval: Duration,
    cors_origins: crate::api::cors::CorsOrigins,
    body_read_timeout: Duration,
    idle_timeout: Duration,
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The algorithms whose keys must exist: ES256 and RS256 always (SPEC), plus the signing one.
fn required_algorithms(signing: Algorithm) -> Vec<Algorithm> {
    let mut algs = vec![Algorithm::ES256, Algorithm::RS256];
    if !algs.contains(&signing) {
        algs.push(signing);
    }
    algs
}

impl App {
    /// Builds the app on the sled store in `settings.data_dir`.
    pub async fn build(settings: Settings) -> Result<App, StartupError> {
        let store = SledStore::open(&settings.data_dir, settings.cache_bytes())?;
        App::build_with_store(settings, Arc::new(store)).await
    }

    /// Builds the app on any store (tests use the in-memory one).
    pub async fn build_with_store(settings: Settings, store: SharedStore) -> Result<App, StartupError> {
        let listener = std::net::TcpListener::bind(&settings.listen)
            .map_err(|source| StartupError::Bind { address: settings.listen.clone(), source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartupError::Bind { address: settings.listen.clone(), source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address: settings.listen.clone(), source })?;
        let acceptor = TcpAcceptor::from_std(listener)
            .map_err(|source| StartupError::Bind { address: settings.listen.clone(), source })?;
        let cors_origins = settings
            .cors_origin
            .iter()
            .map(|origin| {
                crate::api::cors::normalize_origin(origin)
                    .filter(|normalized| normalized == origin.trim_end_matches('/'))
                    .ok_or_else(|| ConfigError::CorsOrigin(origin.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = settings.oauth_config(&format!("http://{local}"))?;
        let keys =
            KeyRing::load_or_generate(&settings.keys_dir, &required_algorithms(config.signing_alg), now())?;
        let server = AuthorizationServer::new(config, store, keys)
            .map_err(|error| StartupError::Keys(KeyError::Generate(error.to_string())))?;
        // Before the first request: see `load_cutoffs`.
        server.load_cutoffs(now()).await?;
        let initial_admin_password = bootstrap(&server).await?;
        Ok(App {
            port: local.port(),
            acceptor,
            server,
            initial_admin_password,
            purge_interval: Settings::seconds(settings.purge_interval),
            keys_dir: settings.keys_dir.clone(),
            cors_origins: crate::api::cors::CorsOrigins(cors_origins),
            body_read_timeout: Settings::seconds(settings.body_read_timeout),
            idle_timeout: Settings::seconds(settings.idle_timeout),
            key_reload_interval: Settings::seconds(settings.key_reload_interval),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn issuer(&self) -> &str {
        &self.server.config.issuer
    }

    pub fn authorization_server(&self) -> &AuthorizationServer {
        &self.server
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish (up to 10 s) and
    /// flushes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reload = tokio::spawn(reload_keys_in_background(
            self.server.clone(),
            self.keys_dir.clone(),
            self.key_reload_interval,
        ));
        let purge = tokio::spawn(purge_in_background(self.server.store.clone(), self.purge_interval));
        // Our idle timeout rather than poem's: see `crate::idle` for why.
        let acceptor = crate::idle::IdleClosingAcceptor::new(self.acceptor, self.idle_timeout);
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                crate::api::routes(
                    self.server.clone(),
                    self.cors_origins,
                    crate::api::form::BodyReadTimeout(self.body_read_timeout),
                ),
                shutdown,
                Some(Duration::from_secs(10)),
            )
            .await;
        purge.abort();
        reload.abort();
        if let Err(error) = self.server.store.flush().await {
            tracing::error!(%error, "could not flush the store at shutdown");
        }
        tracing::info!("stopped");
        result
    }
}

/// Deletes expired codes, tokens and sessions periodically (sled has no TTL of its own).
async fn purge_in_background(store: SharedStore, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match store.purge_expired(now()).await {
            Ok(counts) if counts.total() > 0 => {
                crate::api::metrics::METRICS.record_purged(&counts);
                tracing::info!(?counts, "purged expired records");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "background purge failed"),
        }
    }
}

/// Picks up keys rotated by `portcullis keys rotate` while the server runs: the new key signs,
/// the retired one stays published until its tokens expire.
///
/// The keys are read again only when the directory's key files changed (`KeyDirState`), and off
/// the async workers: reading an RS256 key takes about 1.7 ms, which every tick used to take from
/// the requests of one worker. Key files that cannot be used are logged once per change of the
/// directory, not every tick.
async fn reload_keys_in_background(server: AuthorizationServer, dir: std::path::PathBuf, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let mut seen: Option<KeyDirState> = None;
    loop {
        ticker.tick().await;
        let fingerprint = |ring: &KeyRing| -> Vec<(String, Option<i64>)> {
            ring.keys().iter().map(|key| (key.kid.clone(), key.retired_at)).collect()
        };
        let (task_dir, seen_before) = (dir.clone(), seen.clone());
        let read = tokio::task::spawn_blocking(move || {
            let state = KeyRing::dir_state(&task_dir)?;
            if seen_before.as_ref() == Some(&state) {
                return Ok(None);
            }
            Ok::<_, KeyError>(Some((state, KeyRing::load(&task_dir))))
        })
        .await;
        let (state, loaded) = match read {
            Ok(Ok(Some(changed))) => changed,
            Ok(Ok(None)) => continue,
            Ok(Err(error)) => {
                tracing::error!(%error, "could not read the keys directory; keeping the loaded keys");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the key reload task failed; keeping the loaded keys");
                continue;
            }
        };
        seen = Some(state);
        let ring = match loaded {
            Ok(ring) => ring,
            Err(error) => {
                tracing::error!(%error, "could not reload the keys directory; keeping the loaded keys");
                continue;
            }
        };
        let current = server.keys();
        if fingerprint(&ring) == fingerprint(&current) {
            continue;
        }
        if ring.active(server.config.signing_alg).is_none() {
            tracing::error!(alg = %server.config.signing_alg, "the keys directory has no active signing key; keeping the loaded keys");
            continue;
        }
        match server.install_keys(ring) {
            Ok(()) => {
                let kid = server.keys().active(server.config.signing_alg).map(|key| key.kid.clone());
                tracing::info!(kid = ?kid, "reloaded signing keys");
            }
            Err(error) => tracing::error!(%error, "could not use the reloaded keys"),
        }
    }
}

/// SPEC "At every start": an admin user when there is none, and the `swagger-ui` client whose
/// redirect URI follows the issuer. Returns the generated admin password, if any.
async fn bootstrap(server: &AuthorizationServer) -> Result<Option<String>, StartupError> {
    let store = &server.store;
    let mut generated = None;
    if !store.users().await?.iter().any(|user| user.admin) {
        let (password, printed) = match std::env::var("PORTCULLIS_ADMIN_PASSWORD") {
            Ok(password) if !password.is_empty() => {
                crate::web::password::check_new(&password).map_err(StartupError::AdminPassword)?;
                (password, false)
            }
            _ => (crate::secrets::random_token(18), true),
        };
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: "admin".into(),
            password_hash: crate::web::password::hash(&password).map_err(StartupError::Password)?,
            admin: true,
            created_at: now(),
            email: None,
            name: None,
            session_generation: 0,
        };
        match store.insert_user(&user).await {
            Ok(()) => {
                tracing::info!("created the admin user");
                if printed {
                    generated = Some(password);
                }
            }
            Err(StoreError::Conflict(_)) => {
                tracing::warn!(
                    "no admin user exists and the username \"admin\" is taken by a non-admin user: create one with `portcullis user create --admin`"
                );
            }
            Err(error) => return Err(error.into()),
        }
    }
    let redirect = RedirectUri::parse(&format!("{}/docs/oauth2-redirect.html", server.config.issuer))
        .expect("config::validate_issuer admits only issuers that make a valid redirect URI");
    // Every scope this server knows, so that Swagger UI can try each endpoint.
    let swagger_scope = Scope::parse("openid profile email read write").expect("static scope");
    match store.client(SWAGGER_UI_CLIENT_ID).await? {
        Some(mut client)
            if client.redirect_uris != vec![redirect.clone()] || client.scope != swagger_scope =>
        {
            client.redirect_uris = vec![redirect];
            client.scope = swagger_scope;
            store.replace_client(&client).await?;
        }
        Some(_) => {}
        None => {
            // After a deletion (`client delete swagger-ui`), a new client: created after the
            // second of the deletion, so that every token of the deleted one, issued up to that
            // second and refused by the revocation feed, predates it here too
            // (`Client::issued_this`).
            let now = now();
            let deleted = store.revoked_clients(now).await?;
            let deleted = deleted.iter().find(|deleted| deleted.client_id == SWAGGER_UI_CLIENT_ID);
            let created_at = deleted.map_or(now, |deleted| now.max(deleted.deleted_at + 1));
            // A deletion cut short by a crash may have left consents to the deleted one behind.
            store.forget_client_consents(SWAGGER_UI_CLIENT_ID).await?;
            store
                .insert_client(&Client {
                    client_id: SWAGGER_UI_CLIENT_ID.into(),
                    name: "Swagger UI".into(),
                    client_type: ClientType::Public,
                    secret_hash: None,
                    redirect_uris: vec![redirect],
                    grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                    scope: swagger_scope,
                    skip_consent: false,
                    owner: None,
                    id_token_signed_response_alg: None,
                    allowed_origins: Vec::new(),
                    post_logout_redirect_uris: Vec::new(),
                    created_at,
                })
                .await?;
        }
    }
    store.flush().await?;
    Ok(generated)
}
