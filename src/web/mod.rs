//! The HTML side: login, logout, the authorization endpoint with its consent page, and the
//! session and CSRF machinery they share. Pages never redirect to a URI that has not been checked
//! (login's `next` must be a local path; authorization errors go to registered redirect URIs only).
//!
//! Sessions: a random 256-bit id in an HttpOnly, SameSite=Lax cookie (Secure when the issuer is
//! https), stored as its SHA-256; a new id at every login (no session fixation). CSRF: each
//! session has a token every form carries; the login form, which has no session yet, uses a
//! double-submit cookie.

use askama::Template;
use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Body, Request, Response, handler};

use crate::api::read_form;
use crate::domain::{Session, User};
use crate::oauth::authorize::{self, AuthorizeError, Consent, Interaction};
use crate::oauth::{AuthorizationServer, OAuthError, Params};
use crate::secrets::{constant_time_eq, hash_secret, random_secret};
use crate::startup::now;

pub mod account;
pub mod applications;
pub mod end_session;
pub mod password;

pub(crate) const SESSION_COOKIE: &str = "portcullis_session";
const LOGIN_CSRF_COOKIE: &str = "portcullis_login_csrf";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf_token: &'a str,
    next: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    client_name: &'a str,
    username: &'a str,
    scopes: Vec<&'a str>,
    redirect_uri: &'a str,
    csrf_token: &'a str,
    fields: Vec<(&'a str, String)>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    username: Option<&'a str>,
    csrf_token: &'a str,
}

/// An HTML response with the headers every page carries: no framing (clickjacking), no Referer
/// (codes and state in URLs must not leak to third parties), no caching.
pub(crate) fn html(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(body) => Response::builder()
            .status(status)
            .content_type("text/html; charset=utf-8")
            .header(
                "Content-Security-Policy",
                "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
            )
            .header("X-Frame-Options", "DENY")
            .header("Referrer-Policy", "no-referrer")
            .header("X-Content-Type-Options", "nosniff")
            .header(header::CACHE_CONTROL, "no-store")
            .body(body),
        Err(error) => {
            tracing::error!(%error, "could not render a page");
            Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR).body("could not render the page")
        }
    }
}

pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, ErrorPage { title, message })
}

/// A form posted from one of the server's own pages, or the error page that answers a bad one.
pub(crate) async fn read_page_form(request: &Request, body: Body) -> Result<Params, Response> {
    page_fields(read_form_or_page(request, body).await?).map_err(|page| *page)
}

/// A posted form, or the error page that answers one that cannot be read.
async fn read_form_or_page(request: &Request, body: Body) -> Result<Params, Response> {
    read_form(request, body)
        .await
        .map_err(|failure| error_page(failure.status, "Bad request", &failure.error.description()))
}

/// The fields of a form one of the server's own pages posted. Every field is one the page put
/// there, so an oversized one is refused, not ignored.
fn page_fields(params: Params) -> Result<Params, Box<Response>> {
    params
        .refuse_oversized()
        .map_err(|error| Box::new(error_page(StatusCode::BAD_REQUEST, "Bad request", &error.description())))
}

pub(crate) fn server_error_page(error: &OAuthError) -> Response {
    if let OAuthError::Server(cause) = error {
        tracing::error!(error = %cause, "page failed inside the server");
    }
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not complete the request. Try again in a moment.",
    )
}

pub(crate) fn redirect(status: StatusCode, location: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .header("Referrer-Policy", "no-referrer")
        .finish()
}

fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

pub(crate) fn set_cookie(server: &AuthorizationServer, name: &str, value: &str, max_age: i64) -> String {
    let secure = if server.config.issuer.starts_with("https://") { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// The signed-in user of this request, with the session's id hash.
pub(crate) async fn current_session(
    server: &AuthorizationServer,
    request: &Request,
) -> Result<Option<(String, Session, User)>, OAuthError> {
    let Some(id) = cookie(request, SESSION_COOKIE) else {
        return Ok(None);
    };
    let id_hash = hash_secret(&id);
    let Some(session) = server.store.session(&id_hash, now()).await? else {
        return Ok(None);
    };
    let Some(user) = server.store.user(&session.user_id).await? else {
        return Ok(None);
    };
    if !user.accepts(&session) {
        return Ok(None); // signed in with a password since replaced
    }
    Ok(Some((id_hash, session, user)))
}

/// The signed-in user, or the response that sends the browser to sign in and come back here.
pub(crate) async fn signed_in_or_login(
    server: &AuthorizationServer,
    request: &Request,
) -> Result<(Session, User), Response> {
    match current_session(server, request).await {
        Ok(Some((_, session, user))) => Ok((session, user)),
        Ok(None) => {
            let here =
                request.original_uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/").to_owned();
            let login = format!(
                "/login?{}",
                form_urlencoded::Serializer::new(String::new()).append_pair("next", &here).finish()
            );
            Err(redirect(StatusCode::FOUND, &login))
        }
        Err(error) => Err(server_error_page(&error)),
    }
}

/// Only local paths are followed after login: never `//host` or `/\host`, and nothing with
/// whitespace, control characters or backslashes, which browsers strip or rewrite into
/// `//host` (open redirect, RFC 9700 §4.11).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control()) =>
        {
            path
        }
        _ => "/",
    }
}

#[handler]
pub async fn stylesheet() -> Response {
    Response::builder()
        .content_type("text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(include_str!("../../templates/portcullis.css"))
}

#[handler]
pub async fn index(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    match current_session(server, request).await {
        Ok(Some((_, session, user))) => html(
            StatusCode::OK,
            IndexPage { username: Some(&user.username), csrf_token: &session.csrf_token },
        ),
        Ok(None) => html(StatusCode::OK, IndexPage { username: None, csrf_token: "" }),
        Err(error) => server_error_page(&error),
    }
}

fn login_page(
    server: &AuthorizationServer,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let csrf_token = random_secret();
    let mut response = html(status, LoginPage { csrf_token: &csrf_token, next, username, error });
    if let Ok(value) = set_cookie(server, LOGIN_CSRF_COOKIE, &csrf_token, 3600).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[handler]
pub async fn login_get(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    let params = Params::parse(request.uri().query().unwrap_or_default().as_bytes()).unwrap_or_default();
    let next = safe_next(params.get("next").ok().flatten());
    login_page(server, StatusCode::OK, next, &login_hint(next).unwrap_or_default(), None)
}

/// The username to suggest when signing in for an authorization request that names one in
/// `login_hint` (OpenID Connect Core §3.1.2.1). Only a suggestion: the user may change it.
fn login_hint(next: &str) -> Option<String> {
    let query = next.strip_prefix("/o/authorize?")?;
    let params = Params::parse(query.as_bytes()).ok()?;
    let hint = params.get("login_hint").ok().flatten()?;
    crate::domain::is_valid_username(hint).then(|| hint.to_owned())
}

#[handler]
pub async fn login_post(request: &Request, body: Body, Data(server): Data<&AuthorizationServer>) -> Response {
    let params = match read_page_form(request, body).await {
        Ok(params) => params,
        Err(page) => return page,
    };
    let next = safe_next(params.get("next").ok().flatten()).to_owned();
    let presented_csrf = params.get("csrf_token").ok().flatten().unwrap_or_default();
    let expected_csrf = cookie(request, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected_csrf.is_empty() || !constant_time_eq(presented_csrf, &expected_csrf) {
        return login_page(
            server,
            StatusCode::FORBIDDEN,
            &next,
            "",
            Some("The form expired. Please sign in again."),
        );
    }
    let username = params.get("username").ok().flatten().unwrap_or_default().to_owned();
    let password = params.get("password").ok().flatten().unwrap_or_default().to_owned();
    let throttle = PasswordThrottle::new(request, &username);
    if let Err(seconds) = throttle.check() {
        let message = format!("Too many failed sign-ins. Try again in {seconds} seconds.");
        let page = login_page(server, StatusCode::TOO_MANY_REQUESTS, &next, &username, Some(&message));
        return with_retry_after(page, seconds);
    }
    let user = match server.store.user_by_username(&username).await {
        Ok(user) => user,
        Err(error) => return server_error_page(&error.into()),
    };
    let stored = user.as_ref().map(|user| user.password_hash.clone());
    let verified = tokio::task::spawn_blocking(move || password::verify(&password, stored.as_deref()))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        throttle.failed();
        // The same message whether the username exists or not.
        return login_page(
            server,
            StatusCode::UNAUTHORIZED,
            &next,
            &username,
            Some("Wrong username or password."),
        );
    };
    throttle.succeeded();
    let session_cookie = match start_session(server, request, &user).await {
        Ok(session_cookie) => session_cookie,
        Err(error) => return server_error_page(&error),
    };
    tracing::info!(user_id = %user.id, "user signed in");
    let mut response = redirect(StatusCode::SEE_OTHER, &next);
    for value in [session_cookie, set_cookie(server, LOGIN_CSRF_COOKIE, "", 0)] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Whether a form posted by a signed-in browser carries its session's CSRF token.
pub(crate) fn csrf_ok(params: &Params, session: &Session) -> bool {
    constant_time_eq(params.get("csrf_token").ok().flatten().unwrap_or_default(), &session.csrf_token)
}

/// `response` with `Retry-After: seconds` (a throttled password check).
pub(crate) fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = seconds.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The sign-in throttle as one password check meets it (the sign-in form, the password page):
/// against brute force, the username and the client's address, checked before the password is.
pub(crate) struct PasswordThrottle {
    throttles: Option<std::sync::Arc<crate::throttle::Throttles>>,
    /// The username's key first, then the address's.
    keys: Vec<String>,
}

impl PasswordThrottle {
    pub(crate) fn new(request: &Request, username: &str) -> PasswordThrottle {
        let mut keys = vec![format!("user:{username}")];
        if let Some(address) = request.remote_addr().as_socket_addr() {
            keys.push(format!("ip:{}", address.ip()));
        }
        PasswordThrottle {
            throttles: request.data::<std::sync::Arc<crate::throttle::Throttles>>().cloned(),
            keys,
        }
    }

    /// Whole seconds to wait (for `Retry-After`) while either key is blocked.
    pub(crate) fn check(&self) -> Result<(), u64> {
        match &self.throttles {
            Some(throttles) => throttles
                .login
                .check(&self.keys, std::time::Instant::now())
                .map_err(crate::throttle::retry_after_seconds),
            None => Ok(()),
        }
    }

    pub(crate) fn failed(&self) {
        if let Some(throttles) = &self.throttles {
            throttles.login.failure(&self.keys, std::time::Instant::now());
        }
    }

    /// Clears the username's failures, never the address's.
    pub(crate) fn succeeded(&self) {
        if let Some(throttles) = &self.throttles {
            throttles.login.success(&self.keys[..1]);
        }
    }
}

/// Signs `user` in in this browser: its previous session (if any) is dropped and a new one,
/// with a fresh id (no session fixation), is stored durably. Returns the `Set-Cookie` value.
pub(crate) async fn start_session(
    server: &AuthorizationServer,
    request: &Request,
    user: &User,
) -> Result<String, OAuthError> {
    let id = random_secret();
    let now = now();
    let session = Session {
        user_id: user.id.clone(),
        auth_time: now,
        csrf_token: random_secret(),
        expires_at: now + server.config.session_ttl,
        user_generation: user.session_generation,
    };
    if let Some(old) = cookie(request, SESSION_COOKIE) {
        let _ = server.store.delete_session(&hash_secret(&old)).await;
    }
    server.store.insert_session(&hash_secret(&id), &session).await?;
    server.store.flush().await?;
    Ok(set_cookie(server, SESSION_COOKIE, &id, server.config.session_ttl))
}

#[handler]
pub async fn logout(request: &Request, body: Body, Data(server): Data<&AuthorizationServer>) -> Response {
    let params = match read_page_form(request, body).await {
        Ok(params) => params,
        Err(page) => return page,
    };
    match current_session(server, request).await {
        Ok(Some((id_hash, session, _))) => {
            if !csrf_ok(&params, &session) {
                return error_page(
                    StatusCode::FORBIDDEN,
                    "Form expired",
                    "The sign-out form expired. Go back, reload and try again.",
                );
            }
            if let Err(error) = server.store.delete_session(&id_hash).await {
                return server_error_page(&error.into());
            }
            let _ = server.store.flush().await;
        }
        Ok(None) => {}
        Err(error) => return server_error_page(&error),
    }
    let mut response = redirect(StatusCode::SEE_OTHER, "/login");
    if let Ok(value) = set_cookie(server, SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// An error sent back to the client, counted like the JSON endpoints' errors.
fn error_redirect(status: StatusCode, error: authorize::ErrorRedirect) -> Response {
    crate::api::metrics::METRICS.record_oauth_error(error.code);
    redirect(status, &error.location)
}

fn authorize_error(error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Page(message) => {
            error_page(StatusCode::BAD_REQUEST, "This authorization request is invalid", &message)
        }
        AuthorizeError::Redirect(error) => error_redirect(StatusCode::FOUND, error),
        AuthorizeError::Server(error) => server_error_page(&error),
    }
}

/// A relying party's POST to a protocol endpoint at `path`, answered with a 303 to the same
/// request as a GET. The browser sent the POST from the relying party's page, so the
/// `SameSite=Lax` session cookie did not come with it; the browser follows the 303 with a
/// top-level GET, which carries the cookie, so the request sees who is signed in, as a GET
/// would. For a request already validated: a value too long to carry (over 4096 characters)
/// is then one the endpoint does not read, ignored by the GET too, and is left out.
pub(crate) fn as_get(path: &str, params: &Params) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params.pairs() {
        query.append_pair(name, value);
    }
    redirect(StatusCode::SEE_OTHER, &format!("{path}?{}", query.finish()))
}

/// The parameters that travel from the authorization request through the consent form.
const CARRIED_PARAMS: [&str; 8] = [
    "nonce",
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// The authorization request to come back to after signing in: the same parameters, less what
/// the sign-in itself satisfies (`prompt=login`, `max_age`, and `id_token_hint`: the user chose
/// whom to sign in as), so the return does not loop.
fn return_query_after_login(params: &Params) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params.pairs() {
        match name.as_str() {
            "max_age" | "id_token_hint" => {}
            "prompt" => {
                let rest: Vec<&str> =
                    value.split(' ').filter(|item| *item != "login" && !item.is_empty()).collect();
                if !rest.is_empty() {
                    query.append_pair(name, &rest.join(" "));
                }
            }
            _ => {
                query.append_pair(name, value);
            }
        }
    }
    query.finish()
}

/// GET /o/authorize: validate, then sign in if needed, then consent (or skip it).
#[handler]
pub async fn authorize_get(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    let query = request.uri().query().unwrap_or_default();
    let params = match Params::parse(query.as_bytes()) {
        Ok(params) => params,
        Err(error) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This authorization request is invalid",
                &error.description(),
            );
        }
    };
    let authorization = match authorize::validate(server, &params).await {
        Ok(authorization) => authorization,
        Err(error) => return authorize_error(error),
    };
    let signed_in = match current_session(server, request).await {
        Ok(found) => found,
        Err(error) => return server_error_page(&error),
    };
    let user_and_time = signed_in.as_ref().map(|(_, session, user)| (user, session.auth_time));
    let interaction = match authorize::next_interaction(server, &authorization, user_and_time, now()).await {
        Ok(interaction) => interaction,
        Err(error) => return authorize_error(error),
    };
    let (session, user) = match (interaction, signed_in) {
        (Interaction::Login, _) | (_, None) => {
            let next = format!("/o/authorize?{}", return_query_after_login(&params));
            let login = format!(
                "/login?{}",
                form_urlencoded::Serializer::new(String::new()).append_pair("next", &next).finish()
            );
            return redirect(StatusCode::FOUND, &login);
        }
        (_, Some((_, session, user))) => (session, user),
    };
    if interaction == Interaction::Approve {
        return match authorize::approve(
            server,
            &authorization,
            &user,
            session.auth_time,
            Consent::NotAsked,
            now(),
        )
        .await
        {
            Ok(location) => redirect(StatusCode::FOUND, &location),
            Err(error) => server_error_page(&error),
        };
    }
    let scope = authorization.scope.to_string();
    let mut fields: Vec<(&str, String)> = Vec::new();
    for name in CARRIED_PARAMS {
        let value = match name {
            "scope" => Some(scope.clone()),
            _ => params.get(name).ok().flatten().map(str::to_owned),
        };
        if let Some(value) = value {
            fields.push((name, value));
        }
    }
    html(
        StatusCode::OK,
        ConsentPage {
            client_name: &authorization.client.name,
            username: &user.username,
            scopes: authorization.scope.iter().collect(),
            redirect_uri: authorization.redirect_uri.as_str(),
            csrf_token: &session.csrf_token,
            fields,
        },
    )
}

/// POST /o/authorize: the consent form, or an authorization request sent as a form (OpenID
/// Connect Core §3.1.2.1: the endpoint MUST support POST). The consent form always carries its
/// `csrf_token` and a button; a form with none of them is an authorization request.
#[handler]
pub async fn authorize_post(
    request: &Request,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let params = match read_form_or_page(request, body).await {
        Ok(params) => params,
        Err(page) => return page,
    };
    if !["csrf_token", "allow", "deny"].iter().any(|name| params.contains(name)) {
        // Its errors are answered here, as the GET's would be; a valid request goes on as that GET.
        return match authorize::validate(server, &params).await {
            Ok(_) => as_get("/o/authorize", &params),
            Err(error) => authorize_error(error),
        };
    }
    match page_fields(params) {
        Ok(params) => consent(request, server, &params).await,
        Err(page) => *page,
    }
}

/// The answer to the consent page. The request is validated again from the posted fields.
async fn consent(request: &Request, server: &AuthorizationServer, params: &Params) -> Response {
    let (_, session, user) = match current_session(server, request).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Signed out",
                "Your session ended before you answered. Go back to the application and start again.",
            );
        }
        Err(error) => return server_error_page(&error),
    };
    let presented = params.get("csrf_token").ok().flatten().unwrap_or_default();
    if !constant_time_eq(presented, &session.csrf_token) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            "The consent form expired or did not come from this server. Go back to the application and start again.",
        );
    }
    let authorization = match authorize::validate(server, params).await {
        Ok(authorization) => authorization,
        Err(error) => return authorize_error(error),
    };
    let allow = params.contains("allow");
    let deny = params.contains("deny");
    if allow == deny {
        return error_page(StatusCode::BAD_REQUEST, "No answer", "Press either Allow or Deny.");
    }
    if deny {
        tracing::info!(client_id = %authorization.client.client_id, "user denied an authorization request");
        return error_redirect(StatusCode::SEE_OTHER, authorize::deny(server, &authorization));
    }
    match authorize::approve(server, &authorization, &user, session.auth_time, Consent::Given, now()).await {
        Ok(location) => redirect(StatusCode::SEE_OTHER, &location),
        Err(error) => server_error_page(&error),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn request_with_cookie(header: &str) -> Option<poem::Request> {
        let value = poem::http::HeaderValue::from_str(header).ok()?;
        Some(poem::Request::builder().header(poem::http::header::COOKIE, value).finish())
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let request = request_with_cookie("a=1; portcullis_session=abc; portcullis_session_x=zzz").unwrap();
        assert_eq!(super::cookie(&request, "portcullis_session").as_deref(), Some("abc"));
        assert_eq!(super::cookie(&request, "missing"), None);
    }

    proptest! {
        #[test]
        fn cookie_parsing_never_panics(header in "[ -~]{0,300}", name in "[a-z_]{1,20}") {
            if let Some(request) = request_with_cookie(&header) {
                let _ = super::cookie(&request, &name);
            }
        }

        #[test]
        fn safe_next_only_returns_local_paths(next in "\\PC{0,100}") {
            let chosen = super::safe_next(Some(&next));
            prop_assert!(chosen == "/" || (chosen.starts_with('/') && !chosen.starts_with("//")));
            prop_assert!(!chosen.contains('\\') && !chosen.chars().any(char::is_whitespace));
        }
    }
}
