//! `/account/password`: a signed-in user replaces their password, or signs every other browser
//! out (`/account/sign-out-others`). The current password is asked
//! again (a session left open is not enough to take the account over) and its failures are
//! throttled as sign-ins are; the change ends every other session of the user
//! (`User::session_generation`), and this browser gets a fresh session.

use askama::Template;
use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Body, Request, Response, handler};

use super::password::{self, MIN_PASSWORD_CHARS};
use super::{html, read_page_form, server_error_page, signed_in_or_login, start_session};
use crate::domain::User;
use crate::oauth::{AuthorizationServer, OAuthError};

#[derive(Template)]
#[template(path = "account_password.html")]
struct PasswordPage<'a> {
    username: &'a str,
    csrf_token: &'a str,
    min_chars: usize,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "account_done.html")]
struct DonePage<'a> {
    title: &'a str,
    message: &'a str,
}

fn form(status: StatusCode, user: &User, csrf_token: &str, error: Option<&str>) -> Response {
    let page = PasswordPage { username: &user.username, csrf_token, min_chars: MIN_PASSWORD_CHARS, error };
    html(status, page)
}

#[handler]
pub async fn password_get(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    match signed_in_or_login(server, request).await {
        Ok((session, user)) => form(StatusCode::OK, &user, &session.csrf_token, None),
        Err(response) => response,
    }
}

#[handler]
pub async fn password_post(
    request: &Request,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (session, mut user) = match signed_in_or_login(server, request).await {
        Ok(signed_in) => signed_in,
        Err(response) => return response,
    };
    let params = match read_page_form(request, body).await {
        Ok(params) => params,
        Err(page) => return page,
    };
    let field = |name| params.get(name).ok().flatten().unwrap_or_default().to_owned();
    let refuse = |status, error| form(status, &user, &session.csrf_token, Some(error));
    if !super::csrf_ok(&params, &session) {
        return refuse(StatusCode::FORBIDDEN, "The form expired. Please try again.");
    }
    let (current, new) = (field("current_password"), field("new_password"));
    if new != field("new_password_again") {
        return refuse(StatusCode::BAD_REQUEST, "The two new passwords differ.");
    }
    if let Err(rule) = password::check_new(&new) {
        return refuse(StatusCode::BAD_REQUEST, &format!("The new password is refused: {rule}."));
    }
    // The current password is checked as a sign-in is: throttled before it is checked.
    let throttle = super::PasswordThrottle::new(request, &user.username);
    if let Err(seconds) = throttle.check() {
        let message = format!("Too many wrong passwords. Try again in {seconds} seconds.");
        return super::with_retry_after(refuse(StatusCode::TOO_MANY_REQUESTS, &message), seconds);
    }
    let stored = user.password_hash.clone();
    let checked = tokio::task::spawn_blocking(move || {
        password::verify(&current, Some(&stored)).then(|| password::hash(&new))
    })
    .await;
    let hash = match checked {
        Ok(Some(Ok(hash))) => hash,
        Ok(None) => {
            throttle.failed();
            return refuse(StatusCode::UNAUTHORIZED, "The current password is wrong.");
        }
        Ok(Some(Err(error))) => return server_error_page(&OAuthError::server(std::io::Error::other(error))),
        Err(error) => return server_error_page(&OAuthError::server(error)),
    };
    throttle.succeeded();
    user.password_hash = hash;
    end_other_sessions(
        server,
        request,
        user,
        "user changed their password",
        "Password changed",
        "Your password was changed. Every other browser signed in as you has been signed out.",
    )
    .await
}

/// Signs every other browser of the user out, keeping the password.
#[handler]
pub async fn sign_out_others(
    request: &Request,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    // Signed out, back to the page after signing in (this address only takes a POST).
    let (session, user) = match super::current_session(server, request).await {
        Ok(Some((_, session, user))) => (session, user),
        Ok(None) => return super::redirect(StatusCode::FOUND, "/login?next=%2Faccount%2Fpassword"),
        Err(error) => return server_error_page(&error),
    };
    let params = match read_page_form(request, body).await {
        Ok(params) => params,
        Err(page) => return page,
    };
    if !super::csrf_ok(&params, &session) {
        return form(
            StatusCode::FORBIDDEN,
            &user,
            &session.csrf_token,
            Some("The form expired. Please try again."),
        );
    }
    end_other_sessions(
        server,
        request,
        user,
        "user signed out their other sessions",
        "Signed out elsewhere",
        "Every other browser signed in as you has been signed out.",
    )
    .await
}

/// Stores `user` (with whatever changed) under a new session generation, which ends every
/// session they had, then gives this browser a fresh one, logs `event`, and says `title` and
/// `message`.
async fn end_other_sessions(
    server: &AuthorizationServer,
    request: &Request,
    mut user: User,
    event: &str,
    title: &str,
    message: &str,
) -> Response {
    user.session_generation += 1;
    if let Err(error) = server.store.replace_user(&user).await {
        return server_error_page(&error.into());
    }
    let session_cookie = match start_session(server, request, &user).await {
        Ok(session_cookie) => session_cookie,
        Err(error) => return server_error_page(&error),
    };
    tracing::info!(user_id = %user.id, "{event}");
    let mut response = html(StatusCode::OK, DonePage { title, message });
    if let Ok(value) = session_cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
