//! OpenID Connect RP-Initiated Logout 1.0: `/o/logout` (the `end_session_endpoint`). A relying
//! party sends the user here with `id_token_hint`, `client_id`, `post_logout_redirect_uri` and
//! `state`. The redirect URI must be one the client registered (exact match), or the user sees a
//! page and goes nowhere. Without a valid hint for the signed-in user, the user confirms first
//! (a form with the session's CSRF token), so that a third-party page cannot sign users out.

use askama::Template;
use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Body, Request, Response, handler};

use super::{SESSION_COOKIE, current_session, error_page, html, redirect, server_error_page, set_cookie};
use crate::domain::Client;
use crate::oauth::oidc::id_token_hint;
use crate::oauth::{AuthorizationServer, Params};

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    client_name: Option<&'a str>,
    csrf_token: &'a str,
    fields: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

/// The logout request, checked: the client (if named) and where to go afterwards.
struct LogoutRequest {
    client: Option<Client>,
    /// The validated post-logout redirect with `state` added.
    destination: Option<String>,
    /// The `sub` of a valid `id_token_hint`.
    hinted_subject: Option<String>,
    state: Option<String>,
}

/// Refusals are pages, boxed: a `Response` is too large to pass around in every `Err`.
async fn check(server: &AuthorizationServer, params: &Params) -> Result<LogoutRequest, Box<Response>> {
    let invalid = |message: String| {
        Box::new(error_page(StatusCode::BAD_REQUEST, "This sign-out request is invalid", &message))
    };
    let get = |name: &str| params.get(name).map_err(|error| invalid(error.description()));
    // RP-Initiated Logout §4: after a failed validation the OP "MUST NOT perform post-logout
    // redirection": a hint that does not validate refuses the request.
    let hint = match get("id_token_hint")? {
        None => None,
        Some(hint) => Some(id_token_hint(server, hint).map_err(|error| {
            invalid(format!("The application's {}. Nothing was done.", error.description()))
        })?),
    };
    let client_id = match (get("client_id")?, &hint) {
        (Some(client_id), Some((aud, _))) if client_id != aud => {
            return Err(invalid("client_id differs from the audience of id_token_hint".into()));
        }
        (Some(client_id), _) => Some(client_id.to_owned()),
        (None, Some((aud, _))) => Some(aud.clone()),
        (None, None) => None,
    };
    let client = match &client_id {
        Some(client_id) => match server.store.client(client_id).await {
            Ok(Some(client)) => Some(client),
            Ok(None) => return Err(invalid(format!("Unknown client {client_id:?}."))),
            Err(error) => return Err(Box::new(server_error_page(&error.into()))),
        },
        None => None,
    };
    let state = get("state")?.map(str::to_owned);
    let destination = match get("post_logout_redirect_uri")? {
        None => None,
        Some(presented) => {
            let registered = client
                .as_ref()
                .and_then(|client| client.post_logout_redirect_uris.iter().find(|uri| uri.matches(presented)))
                .ok_or_else(|| {
                    invalid(format!(
                        "The post-logout redirect URI {presented:?} is not registered for this client (send client_id or id_token_hint). Nothing was sent to it."
                    ))
                })?;
            Some(match &state {
                Some(state) => registered.with_query(&[("state", state)]),
                None => registered.as_str().to_owned(),
            })
        }
    };
    Ok(LogoutRequest { client, destination, hinted_subject: hint.map(|(_, sub)| sub), state })
}

fn signed_out(server: &AuthorizationServer, destination: Option<&str>) -> Response {
    let mut response = match destination {
        Some(location) => redirect(StatusCode::SEE_OTHER, location),
        None => html(
            StatusCode::OK,
            MessagePage { title: "Signed out", message: "You are signed out of portcullis." },
        ),
    };
    if let Ok(value) = set_cookie(server, SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn end(server: &AuthorizationServer, request: &Request, params: Params, confirmed: bool) -> Response {
    let logout = match check(server, &params).await {
        Ok(logout) => logout,
        Err(page) => return *page,
    };
    let session = match current_session(server, request).await {
        Ok(session) => session,
        Err(error) => return server_error_page(&error),
    };
    let Some((id_hash, session, user)) = session else {
        return signed_out(server, logout.destination.as_deref()); // nobody to sign out
    };
    let hint_is_this_user = logout.hinted_subject.as_deref() == Some(user.id.as_str());
    if !(hint_is_this_user || (confirmed && super::csrf_ok(&params, &session))) {
        let mut fields: Vec<(&'static str, String)> = Vec::new();
        if let Some(client) = &logout.client {
            fields.push(("client_id", client.client_id.clone()));
        }
        if let Some(uri) = params.get("post_logout_redirect_uri").ok().flatten() {
            fields.push(("post_logout_redirect_uri", uri.to_owned()));
        }
        if let Some(state) = &logout.state {
            fields.push(("state", state.clone()));
        }
        let status = if confirmed { StatusCode::FORBIDDEN } else { StatusCode::OK };
        let client_name = logout.client.as_ref().map(|client| client.name.as_str());
        return html(status, LogoutPage { client_name, csrf_token: &session.csrf_token, fields });
    }
    if let Err(error) = server.store.delete_session(&id_hash).await {
        return server_error_page(&error.into());
    }
    if let Err(error) = server.store.flush().await {
        return server_error_page(&error.into());
    }
    tracing::info!(user_id = %user.id, "user signed out (RP-initiated)");
    signed_out(server, logout.destination.as_deref())
}

#[handler]
pub async fn end_session_get(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    match Params::parse(request.uri().query().unwrap_or_default().as_bytes()) {
        Ok(params) => end(server, request, params, false).await,
        Err(error) => {
            error_page(StatusCode::BAD_REQUEST, "This sign-out request is invalid", &error.description())
        }
    }
}

#[handler]
pub async fn end_session_post(
    request: &Request,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    // A protocol endpoint a relying party posts to (RP-Initiated Logout §2: GET and POST), not
    // only this server's confirmation form, which always carries its csrf_token: a parameter it
    // does not read is ignored, whatever its length (RFC 6749 §3.1).
    match crate::api::read_form(request, body).await {
        // A relying party's request: its errors answered here, as the GET's would be.
        Ok(params) if !params.contains("csrf_token") => match check(server, &params).await {
            Ok(_) => super::as_get("/o/logout", &params),
            Err(page) => *page,
        },
        Ok(params) => end(server, request, params, true).await,
        Err(failure) => {
            error_page(failure.status, "This sign-out request is invalid", &failure.error.description())
        }
    }
}
