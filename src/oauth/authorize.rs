//! The authorization endpoint (RFC 6749 §4.1.1–4.1.2, RFC 7636 §4.3).
//!
//! Order matters for safety: the client and the redirect URI are checked first, and while either is
//! in doubt the user sees an error page and is never redirected (§4.1.2.1; RFC 9700 §4.1). Only
//! then do errors travel back to the client through its redirect URI, with `state` and `iss`.

use super::oidc::{Prompt, id_token_hint, parse_max_age};
use super::{AuthorizationServer, OAuthError, Params};
use crate::domain::{AuthorizationCode, Client, CodeChallenge, Grant, RedirectUri, Scope, User};
use crate::secrets::{random_dated_secret, token_key};

/// A validated authorization request: the client and redirect URI are trusted from here on.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: Client,
    pub redirect_uri: RedirectUri,
    pub scope: Scope,
    pub state: Option<String>,
    pub code_challenge: Option<CodeChallenge>,
    /// OpenID Connect: echoed in the ID token.
    pub nonce: Option<String>,
    pub prompt: Prompt,
    /// OpenID Connect: the longest time since the user's last sign-in that is acceptable.
    pub max_age: Option<i64>,
    /// OpenID Connect: the `sub` of a valid `id_token_hint`, the user the client expects.
    pub hinted_subject: Option<String>,
}

/// What the user must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// Sign in (again).
    Login,
    /// Approve or deny on the consent page.
    Consent,
    /// Nothing: issue the code.
    Approve,
}

/// Whether the user approved on the consent page or consent was already on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Just approved on the consent page: remembered for next time.
    Given,
    /// Remembered, or the client skips consent.
    NotAsked,
}

/// How an invalid request ends.
#[derive(Debug)]
pub enum AuthorizeError {
    /// Client or redirect URI unknown or invalid: show this message, never redirect.
    Page(String),
    /// The request is bad but the redirect URI is trusted: send the user here.
    Redirect(ErrorRedirect),
    /// The server failed; show a generic error page.
    Server(OAuthError),
}

impl From<crate::store::StoreError> for AuthorizeError {
    fn from(error: crate::store::StoreError) -> AuthorizeError {
        AuthorizeError::Server(error.into())
    }
}

/// An error sent back to the client by redirect: where to, and the error code (for metrics).
#[derive(Debug)]
pub struct ErrorRedirect {
    pub location: String,
    pub code: &'static str,
}

/// The redirect carrying an error to the client (RFC 6749 §4.1.2.1), with `iss` (RFC 9207).
pub fn error_redirect(
    redirect_uri: &RedirectUri,
    state: Option<&str>,
    error: &OAuthError,
    issuer: &str,
) -> ErrorRedirect {
    let description = error.description();
    let mut params = vec![("error", error.code()), ("error_description", description.as_str())];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer));
    ErrorRedirect { location: redirect_uri.with_query(&params), code: error.code() }
}

/// Validates an authorization request (from the query of GET, or the consent form's POST).
pub async fn validate(
    server: &AuthorizationServer,
    params: &Params,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |message: String| AuthorizeError::Page(message);
    // 1. The client: without a known client nothing else can be trusted.
    let client_id = params.get("client_id").map_err(|error| page(error.description()))?.ok_or_else(|| {
        page("The request has no client_id. The application that sent you here is misconfigured.".into())
    })?;
    let client = server.store.client(client_id).await?.ok_or_else(|| {
        page(format!("Unknown client {client_id:?}. The application that sent you here is not registered."))
    })?;
    // 2. The redirect URI: exact match against the registered list (any port on a loopback IP,
    // RFC 8252 §7.3), and required.
    let presented = params
        .get("redirect_uri")
        .map_err(|error| page(error.description()))?
        .ok_or_else(|| page("The request has no redirect_uri. The application must send one of its registered redirect URIs.".into()))?;
    let redirect_uri = client.registered_redirect_uri(presented).ok_or_else(|| {
        page(format!(
            "The redirect URI {presented:?} is not registered for {}. Nothing was sent to it.",
            client.name
        ))
    })?;

    // From here on, errors go back to the client.
    let state = params.get("state").ok().flatten().map(str::to_owned);
    let issuer = server.config.issuer.clone();
    let redirect = |error: OAuthError| {
        AuthorizeError::Redirect(error_redirect(&redirect_uri, state.as_deref(), &error, &issuer))
    };
    // A repeated or oversized state is not echoed (there is no one value, or it is too long to
    // carry); the error still goes back to the client (RFC 6749 §4.1.2.1).
    params.get("state").map_err(&redirect)?;
    // Parameters this server does not support but cannot ignore: the request they stand for is
    // not the one it would serve. Discovery says so too (`request_parameter_supported`,
    // `request_uri_parameter_supported`: false; `response_modes_supported`: query). `contains`,
    // not `get`: a request object is often longer than a parameter may be.
    if params.contains("request") {
        return Err(redirect(OAuthError::RequestNotSupported(
            "request objects are not supported (request_parameter_supported is false): send the parameters themselves"
                .into(),
        )));
    }
    if params.contains("request_uri") {
        return Err(redirect(OAuthError::RequestUriNotSupported(
            "request_uri is not supported (request_uri_parameter_supported is false): send the parameters themselves"
                .into(),
        )));
    }
    match params.get("response_mode").map_err(&redirect)? {
        None | Some("query") => {}
        // The response would not come back the way the client waits for it.
        Some(other) => {
            return Err(redirect(OAuthError::InvalidRequest(format!(
                "response_mode {other:?} is not supported; use query (the default for response_type code)"
            ))));
        }
    }
    match params.get("response_type").map_err(&redirect)? {
        Some("code") => {}
        Some(other) => {
            return Err(redirect(OAuthError::UnsupportedResponseType(format!(
                "response_type {other:?} is not supported; use code"
            ))));
        }
        None => {
            return Err(redirect(OAuthError::InvalidRequest(
                "missing required parameter response_type".into(),
            )));
        }
    }
    if !client.allows_grant(crate::domain::GrantType::AuthorizationCode) {
        return Err(redirect(OAuthError::UnauthorizedClient(
            "this client is not registered for the authorization_code grant".into(),
        )));
    }
    // SPEC: no silent narrowing.
    let scope =
        super::requested_scope(params.get("scope").map_err(&redirect)?, &client.scope).map_err(&redirect)?;
    let code_challenge = match params.get("code_challenge").map_err(&redirect)? {
        Some(challenge) => {
            let method = params.get("code_challenge_method").map_err(&redirect)?;
            Some(
                CodeChallenge::parse(challenge, method)
                    .map_err(|error| redirect(OAuthError::InvalidRequest(error.to_string())))?,
            )
        }
        // The client believes it is using PKCE; issuing a code without a challenge would leave
        // it unprotected with no sign of it (Authlib refuses this too).
        None if params.contains("code_challenge_method") => {
            return Err(redirect(OAuthError::InvalidRequest(
                "code_challenge_method was sent without code_challenge: send both (RFC 7636 §4.3)".into(),
            )));
        }
        None if client.is_public() => {
            // RFC 7636 §4.4.1, RFC 9700 §2.1.1: public clients must use PKCE.
            return Err(redirect(OAuthError::InvalidRequest(
                "code_challenge is required for public clients (PKCE with S256, RFC 7636)".into(),
            )));
        }
        None => None,
    };
    let prompt = Prompt::parse(params.get("prompt").map_err(&redirect)?).map_err(&redirect)?;
    let max_age = parse_max_age(params.get("max_age").map_err(&redirect)?).map_err(&redirect)?;
    let nonce = params.get("nonce").map_err(&redirect)?.map(str::to_owned);
    // OIDC Core §3.1.2.1: a hint names the user the client expects; one this server did not
    // issue names no one the server can trust.
    let hinted_subject = match params.get("id_token_hint").map_err(&redirect)? {
        None => None,
        Some(hint) => Some(id_token_hint(server, hint).map_err(&redirect)?.1),
    };
    Ok(AuthorizationRequest {
        client,
        redirect_uri,
        scope,
        state,
        code_challenge,
        nonce,
        prompt,
        max_age,
        hinted_subject,
    })
}

/// What comes next for a valid request (OIDC Core §3.1.2.1 `prompt` and `max_age`; remembered
/// consent). `signed_in` is the user and the time they signed in, if a session exists.
pub async fn next_interaction(
    server: &AuthorizationServer,
    request: &AuthorizationRequest,
    signed_in: Option<(&User, i64)>,
    now: i64,
) -> Result<Interaction, AuthorizeError> {
    let redirect_error = |error: OAuthError| {
        AuthorizeError::Redirect(error_redirect(
            &request.redirect_uri,
            request.state.as_deref(),
            &error,
            &server.config.issuer,
        ))
    };
    let Some((user, auth_time)) = signed_in else {
        if request.prompt.none {
            return Err(redirect_error(OAuthError::LoginRequired("the user is not signed in".into())));
        }
        return Ok(Interaction::Login);
    };
    // OIDC Core §3.1.2.1: with `prompt=none` the answer is about the hinted user or none ("it
    // SHOULD return an error, such as login_required"); otherwise the user signs in again, as
    // whoever they choose (the return after sign-in drops the hint: no loop).
    if request.hinted_subject.as_deref().is_some_and(|hinted| hinted != user.id) {
        if request.prompt.none {
            return Err(redirect_error(OAuthError::LoginRequired(
                "the signed-in user is not the one id_token_hint names".into(),
            )));
        }
        return Ok(Interaction::Login);
    }
    let too_old = request.max_age.is_some_and(|max_age| now - auth_time > max_age);
    if request.prompt.login || too_old {
        if request.prompt.none {
            return Err(redirect_error(OAuthError::LoginRequired(
                "the sign-in is older than max_age".into(),
            )));
        }
        return Ok(Interaction::Login);
    }
    let remembered = server.store.consented_scope(&user.id, &request.client.client_id).await?;
    let consented = remembered.is_some_and(|approved| request.scope.is_subset_of(&approved));
    if request.client.skip_consent || (consented && !request.prompt.consent) {
        return Ok(Interaction::Approve);
    }
    if request.prompt.none {
        return Err(redirect_error(OAuthError::ConsentRequired(
            "the user has not approved this client".into(),
        )));
    }
    Ok(Interaction::Consent)
}

/// The user approved: stores a single-use code and returns where to send the user.
pub async fn approve(
    server: &AuthorizationServer,
    request: &AuthorizationRequest,
    user: &User,
    auth_time: i64,
    consent: Consent,
    now: i64,
) -> Result<String, OAuthError> {
    if consent == Consent::Given {
        server.store.remember_consent(&user.id, &request.client.client_id, &request.scope).await?;
    }
    let expires_at = now + server.config.code_ttl;
    // A replay after the code expired is still recognised (and revokes the grant) for as long as
    // the access tokens issued from it can live.
    let purge_at = expires_at + server.config.access_token_ttl;
    // 256 random bits; RFC 6749 §10.10 asks for codes that cannot be guessed. The purge time in
    // front lets the store find the code when it may forget it.
    let code = random_dated_secret(purge_at);
    let record = AuthorizationCode {
        client_id: request.client.client_id.clone(),
        redirect_uri: request.redirect_uri.as_str().to_owned(),
        user_id: user.id.clone(),
        scope: request.scope.clone(),
        auth_time,
        code_challenge: request.code_challenge.clone(),
        // Led by the user's prefix, then time-ordered (see `Grant::new_id`).
        grant_id: Grant::new_id(&user.id),
        expires_at,
        used: false,
        purge_at,
        nonce: request.nonce.clone(),
        issued_at: Some(now),
    };
    server.store.insert_code(&token_key(&code), &record).await?; // durable on return
    tracing::info!(client_id = %request.client.client_id, grant_id = %record.grant_id, "issued an authorization code");
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = &request.state {
        params.push(("state", state));
    }
    params.push(("iss", &server.config.issuer));
    Ok(request.redirect_uri.with_query(&params))
}

/// The user said no (RFC 6749 §4.1.2.1 `access_denied`).
pub fn deny(server: &AuthorizationServer, request: &AuthorizationRequest) -> ErrorRedirect {
    error_redirect(
        &request.redirect_uri,
        request.state.as_deref(),
        &OAuthError::AccessDenied("the user denied the request".into()),
        &server.config.issuer,
    )
}
