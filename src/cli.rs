//! The command line (SPEC "CLI"): `serve` (the default) and the admin commands `user`, `client`,
//! `keys`, `purge`. Admin commands open the store themselves; when a running server holds it they
//! fail at once with a message saying so.

use std::io::Read;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::Settings;
use crate::domain::{Client, User};
use crate::keys::KeyRing;
use crate::oauth::registration::{ClientRegistration, rotate_secret};
use crate::secrets::random_token;
use crate::startup::{App, now};
use crate::store::{Holder, SharedStore, SledStore, StoreError};

#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about = "An OAuth 2.0 authorization server with JWT access tokens")]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage client applications.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Delete expired codes, tokens and sessions now.
    Purge,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; without --password-stdin a random password is generated and printed.
    Create {
        #[arg(long, env = "PORTCULLIS_USERNAME")]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, env = "PORTCULLIS_PASSWORD_STDIN")]
        password_stdin: bool,
        #[arg(long, env = "PORTCULLIS_ADMIN")]
        admin: bool,
        /// E-mail address (OpenID Connect claim `email`, scope `email`).
        #[arg(long, env = "PORTCULLIS_EMAIL")]
        email: Option<String>,
        /// Full name (OpenID Connect claim `name`, scope `profile`).
        #[arg(long = "full-name", alias = "name", env = "PORTCULLIS_FULL_NAME")]
        name: Option<String>,
    },
    /// List users.
    List,
    /// Replace a user's password (a forgotten one, or one that leaked); without
    /// --password-stdin a random one is generated and printed. Every session signed in before
    /// is over; the user's grants and tokens are kept.
    SetPassword {
        #[arg(allow_hyphen_values = true)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, env = "PORTCULLIS_PASSWORD_STDIN")]
        password_stdin: bool,
    },
    /// Delete a user, and revoke every grant they gave: their refresh tokens stop working and
    /// their live access tokens are revoked (introspection, the revocation feed).
    Delete {
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its id and (confidential clients) its secret, shown once.
    Create {
        #[arg(long, env = "PORTCULLIS_NAME")]
        name: String,
        /// A public client (SPA, native app): no secret, PKCE required.
        #[arg(long, env = "PORTCULLIS_PUBLIC")]
        public: bool,
        /// A redirect URI (repeatable); exact match at authorization time (on 127.0.0.1 or `[::1]`, any port).
        #[arg(long = "redirect-uri", env = "PORTCULLIS_REDIRECT_URI")]
        redirect_uris: Vec<String>,
        /// A grant type (repeatable): authorization_code, refresh_token, client_credentials.
        /// Default: authorization_code and refresh_token.
        #[arg(long = "grant-type", env = "PORTCULLIS_GRANT_TYPE", value_delimiter = ',')]
        grant_types: Vec<String>,
        /// Space-separated scopes the client may request.
        #[arg(long, env = "PORTCULLIS_SCOPE", default_value = "read")]
        scope: String,
        /// Skip the consent page for this (trusted, first-party) client.
        #[arg(long, env = "PORTCULLIS_SKIP_CONSENT")]
        skip_consent: bool,
        /// Where OpenID Connect RP-initiated logout may send the user afterwards (repeatable).
        #[arg(long = "post-logout-redirect-uri", env = "PORTCULLIS_POST_LOGOUT_REDIRECT_URI")]
        post_logout_redirect_uris: Vec<String>,
        /// Algorithm of this client's OpenID Connect ID tokens: RS256 (default) or ES256.
        #[arg(long, env = "PORTCULLIS_ID_TOKEN_ALG")]
        id_token_alg: Option<String>,
    },
    /// List clients.
    List,
    /// Show one client.
    Show {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Delete a client, and revoke its tokens: its refresh tokens stop working, and the
    /// revocation feed lists the client until its last access token has expired (a day, or
    /// --access-token-ttl if longer)
    Delete {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Replace a confidential client's secret; prints the new one, shown once.
    RotateSecret {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys.
    List,
    /// Add a new active key per algorithm; old public keys stay published until their tokens expire.
    Rotate,
}

/// A command's failure: the message to print, and exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> CliError {
        CliError(match error {
            StoreError::NotFound => "not found".into(),
            StoreError::Conflict(what) => format!("{what} already exists"),
            StoreError::Backend(error) => format!("the store failed: {error}"),
        })
    }
}

fn open_store(settings: &Settings) -> Result<SharedStore, CliError> {
    let store = SledStore::open(&settings.data_dir, settings.cache_bytes())
        .map_err(|error| CliError(error.to_string()))?;
    Ok(std::sync::Arc::new(store))
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn client_json(client: &Client) -> serde_json::Value {
    json!({
        "client_id": client.client_id,
        "name": client.name,
        "client_type": client.client_type,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types.iter().map(|grant| grant.as_str()).collect::<Vec<_>>(),
        "scope": client.scope.to_string(),
        "skip_consent": client.skip_consent,
        "token_endpoint_auth_method": if client.is_public() { "none" } else { "client_secret_basic" },
        "id_token_signed_response_alg": client.id_token_signed_response_alg.map_or("RS256", |alg| alg.as_str()),
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
    })
}

/// Runs an admin command (everything but `serve`).
pub async fn run_admin(settings: &Settings, command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::User(command) => user(settings, command).await,
        Command::Client(command) => client(settings, command).await,
        Command::Keys(command) => keys(settings, command),
        Command::Purge => {
            let store = open_store(settings)?;
            let counts = store.purge_expired(now()).await?;
            print_json(&json!({
                "codes": counts.codes, "grants": counts.grants, "refresh_tokens": counts.refresh_tokens,
                "sessions": counts.sessions, "revoked_access_tokens": counts.revoked_access_tokens,
                "revoked_clients": counts.revoked_clients,
            }));
            Ok(())
        }
    }
}

async fn user(settings: &Settings, command: UserCommand) -> Result<(), CliError> {
    let store = open_store(settings)?;
    match command {
        UserCommand::Create { username, password_stdin, admin, email, name } => {
            if !crate::domain::is_valid_username(&username) {
                let max = crate::domain::MAX_USERNAME_CHARS;
                return Err(CliError(format!("--username must be 1 to {max} printable characters")));
            }
            let (password, generated) = new_password(password_stdin)?;
            let user = User {
                id: uuid::Uuid::new_v4().to_string(),
                username,
                password_hash: crate::web::password::hash(&password).map_err(CliError)?,
                admin,
                created_at: now(),
                email,
                name,
                session_generation: 0,
            };
            store.insert_user(&user).await?;
            store.flush().await?;
            let mut output = json!({
                "id": user.id, "username": user.username, "admin": user.admin, "email": user.email, "name": user.name,
            });
            if generated {
                output["password"] = json!(password);
            }
            print_json(&output);
        }
        UserCommand::SetPassword { username, password_stdin } => {
            let Some(mut user) = store.user_by_username(&username).await? else {
                return Err(CliError(format!("no user named {username:?}")));
            };
            let (password, generated) = new_password(password_stdin)?;
            user.password_hash = crate::web::password::hash(&password).map_err(CliError)?;
            user.session_generation += 1;
            // Found above, and this command holds the store alone.
            store.replace_user(&user).await?;
            store.flush().await?;
            if generated {
                print_json(&json!({ "username": user.username, "password": password }));
            }
            eprintln!("Set the password of {username:?}; every session they had is over.");
        }
        UserCommand::List => {
            let users: Vec<serde_json::Value> = store
                .users()
                .await?
                .iter()
                .map(|user| json!({ "id": user.id, "username": user.username, "admin": user.admin }))
                .collect();
            print_json(&json!(users));
        }
        UserCommand::Delete { username } => {
            let Some(user) = store.user_by_username(&username).await? else {
                return Err(CliError(format!("no user named {username:?}")));
            };
            // What the user authorized ends with them, as it would if they revoked it on the
            // authorized tokens page. Grants first: interrupted, the command can be run again.
            // Each lists at most --max-revoked-per-client access tokens one by one in the
            // revocation feed; a grant rotated more often than that within a lifetime revokes
            // the user's access tokens of its client in one entry instead, kept as long as
            // `revoked_tokens_until` says.
            let grants = store.grants_of_user(&user.id).await?;
            let list_at_most = u64::from(settings.max_revoked_per_client.max(1));
            for grant in &grants {
                let now = now();
                let tokens_until = revoked_tokens_until(settings, now);
                store.revoke_grant_bounded(&grant.id, now, list_at_most, tokens_until, Holder::User).await?;
            }
            // Found above, and this command holds the store alone.
            store.delete_user(&username).await?;
            store.flush().await?;
            eprintln!("Deleted user {username:?} and revoked the {} grant(s) they gave.", grants.len());
        }
    }
    Ok(())
}

/// Until when the access tokens a command revokes at `now` may still be valid, and the feed
/// lists what revoked them. The command cannot know the lifetime the server signs with if it was
/// given to the server only as a flag: a day at least.
fn revoked_tokens_until(settings: &Settings, now: i64) -> i64 {
    now + i64::from(settings.access_token_ttl).max(86_400)
}

/// A new password: the first line of stdin, checked against the password rule, or (false) a
/// random one. The bool says whether it was generated (and so is to be printed).
fn new_password(from_stdin: bool) -> Result<(String, bool), CliError> {
    if !from_stdin {
        return Ok((random_token(18), true));
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|error| CliError(format!("could not read stdin: {error}")))?;
    let password = input.lines().next().unwrap_or_default().to_owned();
    crate::web::password::check_new(&password).map_err(CliError)?;
    Ok((password, false))
}

async fn client(settings: &Settings, command: ClientCommand) -> Result<(), CliError> {
    let store = open_store(settings)?;
    match command {
        ClientCommand::Create {
            name,
            public,
            redirect_uris,
            grant_types,
            scope,
            skip_consent,
            id_token_alg,
            post_logout_redirect_uris,
        } => {
            let registration = ClientRegistration {
                name,
                public,
                redirect_uris,
                grant_types,
                scope,
                skip_consent,
                allowed_origins: Vec::new(),
                post_logout_redirect_uris,
                id_token_alg,
            };
            let valid = registration.validate().map_err(|error| CliError(error.to_string()))?;
            let (client, secret) = valid.into_client(None, now());
            store.insert_client(&client).await?;
            store.flush().await?;
            let mut output = client_json(&client);
            if let Some(secret) = secret {
                output["client_secret"] = json!(secret);
            }
            print_json(&output);
        }
        ClientCommand::List => {
            let clients: Vec<serde_json::Value> = store.clients().await?.iter().map(client_json).collect();
            print_json(&json!(clients));
        }
        ClientCommand::Show { client_id } => {
            let client = store
                .client(&client_id)
                .await?
                .ok_or_else(|| CliError(format!("no client {client_id:?}")))?;
            print_json(&client_json(&client));
        }
        ClientCommand::Delete { client_id } => {
            // Its tokens end with it (Django OAuth Toolkit deletes them with the application):
            // its refresh tokens fail client authentication, and its access tokens are listed
            // as revoked in the feed until the last one has expired (`revoked_tokens_until`).
            let now = now();
            let tokens_until = revoked_tokens_until(settings, now);
            store.delete_client(&client_id, now, tokens_until).await.map_err(|error| match error {
                StoreError::NotFound => CliError(format!("no client {client_id:?}")),
                other => other.into(),
            })?;
            store.flush().await?;
            eprintln!("Deleted client {client_id:?}; its tokens are revoked.");
            if client_id == crate::startup::SWAGGER_UI_CLIENT_ID {
                eprintln!(
                    "The server creates it again at its next start, as a new client that none of these tokens work with."
                );
            }
        }
        ClientCommand::RotateSecret { client_id } => {
            let mut client = store
                .client(&client_id)
                .await?
                .ok_or_else(|| CliError(format!("no client {client_id:?}")))?;
            if client.is_public() {
                return Err(CliError(format!("{client_id:?} is a public client: it has no secret")));
            }
            let secret = rotate_secret(&mut client).expect("checked: a confidential client");
            store.replace_client(&client).await?;
            store.flush().await?;
            let mut output = client_json(&client);
            output["client_secret"] = json!(secret);
            print_json(&output);
        }
    }
    Ok(())
}

fn keys(settings: &Settings, command: KeysCommand) -> Result<(), CliError> {
    let key_error = |error: crate::keys::KeyError| CliError(error.to_string());
    let mut ring = KeyRing::load(&settings.keys_dir).map_err(key_error)?;
    if let KeysCommand::Rotate = command {
        if ring.keys().is_empty() {
            return Err(CliError(format!(
                "no keys in {}: start the server once to create them",
                settings.keys_dir.display()
            )));
        }
        ring.rotate(&settings.keys_dir, now()).map_err(key_error)?;
    }
    let keys: Vec<serde_json::Value> = ring
        .keys()
        .iter()
        .map(|key| {
            json!({
                "kid": key.kid, "alg": key.alg.as_str(), "created_at": key.created_at,
                "retired_at": key.retired_at, "active": key.retired_at.is_none(),
            })
        })
        .collect();
    print_json(&json!(keys));
    Ok(())
}

/// `serve`: build, print the admin password of a first start, run until Ctrl-C or SIGTERM.
pub async fn serve(settings: Settings) -> Result<(), CliError> {
    let app = App::build(settings).await.map_err(|error| CliError(error.to_string()))?;
    if let Some(password) = &app.initial_admin_password {
        // Printed once, to the terminal, never to the log (SPEC "Running").
        println!(
            "Created user \"admin\" with password: {password}\nSign in at {}/login and keep this password safe; it is not shown again.",
            app.issuer()
        );
    }
    let shutdown =
        shutdown_signal().map_err(|error| CliError(format!("could not install signal handlers: {error}")))?;
    tracing::info!(issuer = %app.issuer(), port = app.port(), "listening");
    app.run_until_stopped(shutdown).await.map_err(|error| CliError(error.to_string()))
}

/// Ctrl-C or SIGTERM. The handlers are installed here, before the server announces itself, so
/// a signal sent right after "listening" is never lost to the default action.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
    })
}
