//! The pages Django OAuth Toolkit users know: `/o/applications/` (a signed-in user registers,
//! views, edits, deletes their own applications and rotates their secrets; the admin sees all)
//! and `/o/authorized_tokens/` (the user's grants, each revocable). Every form carries the
//! session's CSRF token; an application that is not the user's is answered 404, as if it did not
//! exist.

use askama::Template;
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Body, Request, Response, handler};

use super::{csrf_ok, error_page, html, read_page_form, redirect, server_error_page, signed_in_or_login};
use crate::domain::{Client, GrantType, Session, User};
use crate::oauth::registration::{ClientRegistration, rotate_secret};
use crate::oauth::{AuthorizationServer, OAuthError, Params, Revoker};
use crate::startup::now;

struct ApplicationSummary {
    client_id: String,
    name: String,
    kind: &'static str,
}

#[derive(Template)]
#[template(path = "applications.html")]
struct ApplicationsPage {
    applications: Vec<ApplicationSummary>,
    /// The next page of every client, for the admin, when there is one.
    next_page: Option<String>,
    /// Whether this is a later page (a link back to the first).
    later_page: bool,
    /// The admin's list: every application, not only theirs.
    every: bool,
}

/// Applications on one page of the admin's list of every client.
pub const APPLICATIONS_PER_PAGE: usize = 100;

#[derive(Template)]
#[template(path = "application_form.html")]
struct ApplicationFormPage<'a> {
    title: &'a str,
    action: &'a str,
    cancel: &'a str,
    csrf_token: &'a str,
    creating: bool,
    admin: bool,
    form: &'a ClientRegistration,
    grant_choices: Vec<(&'static str, &'static str, bool)>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "application.html")]
struct ApplicationPage<'a> {
    client: &'a Client,
    kind: &'static str,
    grants: String,
    secret: Option<&'a str>,
    csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage<'a> {
    title: &'a str,
    message: &'a str,
    action: &'a str,
    button: &'a str,
    cancel: &'a str,
    csrf_token: &'a str,
}

struct GrantSummary {
    id: String,
    client_name: String,
    scope: String,
    created: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "authorized_tokens.html")]
struct AuthorizedTokensPage {
    grants: Vec<GrantSummary>,
    csrf_token: String,
}

fn kind(client: &Client) -> &'static str {
    if client.is_public() { "public" } else { "confidential" }
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
        .map(|text| text.replace('T', " ").trim_end_matches('Z').to_owned() + " UTC")
        .unwrap_or_default()
}

/// The user may see and change this client: theirs, or the user is an admin.
fn may_manage(user: &User, client: &Client) -> bool {
    user.admin || client.owner.as_deref() == Some(user.id.as_str())
}

fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such application",
        "There is no application with that id among yours.",
    )
}

fn forged() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "The form expired or did not come from this server. Go back, reload and try again.",
    )
}

/// The client `client_id` if the signed-in user may manage it.
async fn managed_client(
    server: &AuthorizationServer,
    user: &User,
    client_id: &str,
) -> Result<Client, Response> {
    match server.store.client(client_id).await {
        Ok(Some(client)) if may_manage(user, &client) => Ok(client),
        Ok(_) => Err(not_found()),
        Err(error) => Err(server_error_page(&error.into())),
    }
}

/// The common start of every page of one application: a signed-in user who may manage it.
async fn managed_page(
    server: &AuthorizationServer,
    request: &Request,
    client_id: &str,
) -> Result<(Session, User, Client), Response> {
    let (session, user) = signed_in_or_login(server, request).await?;
    let client = managed_client(server, &user, client_id).await?;
    Ok((session, user, client))
}

/// The common start of every POST: a signed-in user, the posted form, its CSRF token checked.
async fn signed_in_form(
    server: &AuthorizationServer,
    request: &Request,
    body: Body,
) -> Result<(Session, User, Params), Response> {
    let (session, user) = signed_in_or_login(server, request).await?;
    let params = posted_form(request, body, &session).await?;
    Ok((session, user, params))
}

/// A posted form whose CSRF token is the session's.
async fn posted_form(request: &Request, body: Body, session: &Session) -> Result<Params, Response> {
    let params = read_page_form(request, body).await?;
    if !csrf_ok(&params, session) {
        return Err(forged());
    }
    Ok(params)
}

/// The common start of every POST on one application: a signed-in user who may manage it, and
/// the posted form with its CSRF token checked.
async fn managed_form(
    server: &AuthorizationServer,
    request: &Request,
    client_id: &str,
    body: Body,
) -> Result<(Session, User, Client, Params), Response> {
    let (session, user, client) = managed_page(server, request, client_id).await?;
    let params = posted_form(request, body, &session).await?;
    Ok((session, user, client, params))
}

fn registration_from_form(
    params: &Params,
    creating: bool,
    admin: bool,
    existing: Option<&Client>,
) -> ClientRegistration {
    let text = |name: &str| params.get(name).ok().flatten().unwrap_or_default().to_owned();
    let lines = |name: &str| text(name).lines().map(str::to_owned).collect::<Vec<_>>();
    ClientRegistration {
        name: text("name"),
        public: match existing {
            Some(client) if !creating => client.is_public(),
            _ => text("client_type") == "public",
        },
        redirect_uris: lines("redirect_uris"),
        grant_types: params.all("grant_type").into_iter().map(str::to_owned).collect(),
        scope: text("scope"),
        // Only admins may let a client skip consent (SPEC: consent skipping for admins only).
        skip_consent: match (admin, existing) {
            (true, _) => params.contains("skip_consent"),
            (false, Some(client)) => client.skip_consent,
            (false, None) => false,
        },
        allowed_origins: lines("allowed_origins"),
        post_logout_redirect_uris: lines("post_logout_redirect_uris"),
        id_token_alg: existing
            .and_then(|client| client.id_token_signed_response_alg)
            .map(|alg| alg.as_str().to_owned()),
    }
}

fn registration_of(client: &Client) -> ClientRegistration {
    ClientRegistration {
        name: client.name.clone(),
        public: client.is_public(),
        redirect_uris: client.redirect_uris.iter().map(|uri| uri.as_str().to_owned()).collect(),
        grant_types: client.grant_types.iter().map(|grant| grant.as_str().to_owned()).collect(),
        scope: client.scope.to_string(),
        skip_consent: client.skip_consent,
        allowed_origins: client.allowed_origins.clone(),
        post_logout_redirect_uris: client
            .post_logout_redirect_uris
            .iter()
            .map(|uri| uri.as_str().to_owned())
            .collect(),
        id_token_alg: client.id_token_signed_response_alg.map(|alg| alg.as_str().to_owned()),
    }
}

fn grant_choices(form: &ClientRegistration) -> Vec<(&'static str, &'static str, bool)> {
    let chosen = |grant: GrantType| {
        form.grant_types.iter().any(|name| name == grant.as_str())
            || (form.grant_types.is_empty() && grant != GrantType::ClientCredentials)
    };
    vec![
        ("authorization_code", "Authorization code (users sign in)", chosen(GrantType::AuthorizationCode)),
        ("refresh_token", "Refresh token", chosen(GrantType::RefreshToken)),
        (
            "client_credentials",
            "Client credentials (machine to machine; confidential only)",
            chosen(GrantType::ClientCredentials),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    status: StatusCode,
    title: &str,
    action: &str,
    cancel: &str,
    session: &Session,
    user: &User,
    creating: bool,
    form: &ClientRegistration,
    error: Option<&str>,
) -> Response {
    html(
        status,
        ApplicationFormPage {
            title,
            action,
            cancel,
            csrf_token: &session.csrf_token,
            creating,
            admin: user.admin,
            form,
            grant_choices: grant_choices(form),
            error,
        },
    )
}

fn detail_page(client: &Client, secret: Option<&str>, session: &Session) -> Response {
    let grants = client.grant_types.iter().map(|grant| grant.as_str()).collect::<Vec<_>>().join(", ");
    html(
        StatusCode::OK,
        ApplicationPage { client, kind: kind(client), grants, secret, csrf_token: &session.csrf_token },
    )
}

#[handler]
pub async fn list(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    let (_, user) = match signed_in_or_login(server, request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // The admin sees every client, a page at a time (`?after=` the last client id of the page
    // before); a user their own, read without reading every client.
    let after = Params::parse(request.uri().query().unwrap_or_default().as_bytes())
        .ok()
        .and_then(|query| query.get("after").ok().flatten().map(str::to_owned));
    let clients = match user.admin {
        true => server.store.clients_after(after.as_deref(), APPLICATIONS_PER_PAGE + 1).await,
        false => server.store.clients_of_owner(&user.id).await,
    };
    let mut clients = match clients {
        Ok(clients) => clients,
        Err(error) => return server_error_page(&error.into()),
    };
    let mut next_page = None;
    if user.admin && clients.len() > APPLICATIONS_PER_PAGE {
        clients.truncate(APPLICATIONS_PER_PAGE);
        let last = clients.last().map(|client| client.client_id.as_str()).unwrap_or_default();
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("after", last).finish();
        next_page = Some(format!("/o/applications/?{query}"));
    }
    let applications = clients
        .iter()
        .filter(|client| may_manage(&user, client))
        .map(|client| ApplicationSummary {
            client_id: client.client_id.clone(),
            name: client.name.clone(),
            kind: kind(client),
        })
        .collect();
    html(
        StatusCode::OK,
        ApplicationsPage {
            applications,
            next_page,
            later_page: user.admin && after.is_some(),
            every: user.admin,
        },
    )
}

/// The registration form, as first shown or again with what was typed and the problem with it.
fn new_application_page(
    status: StatusCode,
    session: &Session,
    user: &User,
    form: &ClientRegistration,
    error: Option<&str>,
) -> Response {
    let (action, cancel) = ("/o/applications/register/", "/o/applications/");
    form_page(status, "New application", action, cancel, session, user, true, form, error)
}

#[handler]
pub async fn register_form(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    let (session, user) = match signed_in_or_login(server, request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let form = ClientRegistration { scope: "read".into(), ..ClientRegistration::default() };
    new_application_page(StatusCode::OK, &session, &user, &form, None)
}

#[handler]
pub async fn register(request: &Request, body: Body, Data(server): Data<&AuthorizationServer>) -> Response {
    let (session, user, params) = match signed_in_form(server, request, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let form = registration_from_form(&params, true, user.admin, None);
    let valid = match form.validate() {
        Ok(valid) => valid,
        Err(problem) => {
            return new_application_page(StatusCode::BAD_REQUEST, &session, &user, &form, Some(&problem.0));
        }
    };
    // A bound on what one user adds to the store (each client brings its records, its users'
    // grants and the revocations of its own bound, beside its owner's). Counted before the
    // insert: two registrations racing may reach one more. Admins, who run the server, are not
    // bounded.
    let max = server.config.max_applications_per_user;
    if !user.admin {
        match server.store.clients_of_owner(&user.id).await {
            Ok(registered) if registered.len() >= max as usize => {
                let count = match registered.len() {
                    1 => "1 application".to_owned(),
                    n => format!("{n} applications"),
                };
                let problem = format!(
                    "You have registered {count}, the most this server allows one user. Delete one you no longer use, or ask its administrator to raise the limit (--max-applications-per-user)."
                );
                return new_application_page(StatusCode::CONFLICT, &session, &user, &form, Some(&problem));
            }
            Ok(_) => {}
            Err(error) => return server_error_page(&error.into()),
        }
    }
    let (client, secret) = valid.into_client(Some(user.id.clone()), now());
    if let Err(error) = server.store.insert_client(&client).await {
        return server_error_page(&error.into());
    }
    if let Err(error) = server.store.flush().await {
        return server_error_page(&error.into());
    }
    tracing::info!(client_id = %client.client_id, user_id = %user.id, "registered an application");
    // The secret is shown on this response only; it is never put in a URL.
    detail_page(&client, secret.as_deref(), &session)
}

#[handler]
pub async fn detail(
    request: &Request,
    Path(client_id): Path<String>,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    match managed_page(server, request, &client_id).await {
        Ok((session, _, client)) => detail_page(&client, None, &session),
        Err(response) => response,
    }
}

#[handler]
pub async fn update_form(
    request: &Request,
    Path(client_id): Path<String>,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (session, user, client) = match managed_page(server, request, &client_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let action = format!("/o/applications/{}/update/", client.client_id);
    let cancel = format!("/o/applications/{}/", client.client_id);
    form_page(
        StatusCode::OK,
        &format!("Edit {}", client.name),
        &action,
        &cancel,
        &session,
        &user,
        false,
        &registration_of(&client),
        None,
    )
}

#[handler]
pub async fn update(
    request: &Request,
    Path(client_id): Path<String>,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (session, user, mut client, params) = match managed_form(server, request, &client_id, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let form = registration_from_form(&params, false, user.admin, Some(&client));
    match form.validate() {
        Ok(valid) => valid.apply_to(&mut client),
        Err(problem) => {
            let action = format!("/o/applications/{}/update/", client.client_id);
            let cancel = format!("/o/applications/{}/", client.client_id);
            return form_page(
                StatusCode::BAD_REQUEST,
                &format!("Edit {}", client.name),
                &action,
                &cancel,
                &session,
                &user,
                false,
                &form,
                Some(&problem.0),
            );
        }
    }
    if let Err(error) = save(server, &client).await {
        return server_error_page(&error);
    }
    redirect(StatusCode::SEE_OTHER, &format!("/o/applications/{}/", client.client_id))
}

async fn save(server: &AuthorizationServer, client: &Client) -> Result<(), OAuthError> {
    server.store.replace_client(client).await?;
    server.store.flush().await?;
    Ok(())
}

#[handler]
pub async fn rotate(
    request: &Request,
    Path(client_id): Path<String>,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (session, _, mut client, _) = match managed_form(server, request, &client_id, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(secret) = rotate_secret(&mut client) else {
        return error_page(StatusCode::BAD_REQUEST, "No secret", "A public client has no secret to rotate.");
    };
    if let Err(error) = save(server, &client).await {
        return server_error_page(&error);
    }
    tracing::info!(client_id = %client.client_id, "rotated a client secret");
    detail_page(&client, Some(&secret), &session)
}

#[handler]
pub async fn delete_form(
    request: &Request,
    Path(client_id): Path<String>,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (session, _, client) = match managed_page(server, request, &client_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut message = format!(
        "{} will stop working at once: every token issued to it is revoked, and its users will have \
         to authorize a new application.",
        client.name
    );
    if client.client_id == crate::startup::SWAGGER_UI_CLIENT_ID {
        message.push_str(
            " The server creates it again at its next start, as a new application that none of \
             these tokens work with.",
        );
    }
    html(
        StatusCode::OK,
        ConfirmPage {
            title: &format!("Delete {}?", client.name),
            message: &message,
            action: &format!("/o/applications/{}/delete/", client.client_id),
            button: "Delete",
            cancel: &format!("/o/applications/{}/", client.client_id),
            csrf_token: &session.csrf_token,
        },
    )
}

#[handler]
pub async fn delete(
    request: &Request,
    Path(client_id): Path<String>,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (_, _, client, _) = match managed_form(server, request, &client_id, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let deleted = async {
        // Its access tokens are revoked with it (listed in the revocation feed until the last
        // one has expired).
        let now = now();
        server.store.delete_client(&client.client_id, now, now + server.max_token_lifetime()).await?;
        server.store.flush().await?;
        Ok::<_, OAuthError>(())
    };
    if let Err(error) = deleted.await {
        return server_error_page(&error);
    }
    tracing::info!(client_id = %client.client_id, "deleted an application");
    redirect(StatusCode::SEE_OTHER, "/o/applications/")
}

#[handler]
pub async fn authorized_tokens(request: &Request, Data(server): Data<&AuthorizationServer>) -> Response {
    let (session, user) = match signed_in_or_login(server, request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = now();
    let grants = match server.store.grants_of_user(&user.id).await {
        Ok(grants) => grants,
        Err(error) => return server_error_page(&error.into()),
    };
    let mut summaries = Vec::new();
    for grant in grants.into_iter().filter(|grant| grant.expires_at > now) {
        let client_name = match server.store.client(&grant.client_id).await {
            Ok(Some(client)) if client.issued_this(grant.created_at) => client.name,
            // The application was deleted (and perhaps another of the same id created since):
            // the grant's tokens no longer work.
            Ok(_) => continue,
            Err(error) => return server_error_page(&error.into()),
        };
        summaries.push(GrantSummary {
            id: grant.id,
            client_name,
            scope: grant.scope.to_string(),
            created: date(grant.created_at),
            expires: date(grant.expires_at),
        });
    }
    html(StatusCode::OK, AuthorizedTokensPage { grants: summaries, csrf_token: session.csrf_token })
}

/// Revokes one grant of the signed-in user: its refresh tokens and access tokens, and the
/// remembered consent, so that the application must ask again.
#[handler]
pub async fn revoke_grant(
    request: &Request,
    Path(grant_id): Path<String>,
    body: Body,
    Data(server): Data<&AuthorizationServer>,
) -> Response {
    let (_, user, _) = match signed_in_form(server, request, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let grant = match server.store.grant(&grant_id).await {
        Ok(Some(grant)) if grant.user_id == user.id => grant,
        Ok(_) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such authorization",
                "There is no such authorization among yours.",
            );
        }
        Err(error) => return server_error_page(&error.into()),
    };
    let revoked = async {
        // Counted against the user's own bound for this client, never the client's: a user's
        // withdrawals must not be able to revoke other users' tokens.
        server.revoke_grant_as(Revoker::user(&grant.client_id, &user.id), &grant.id, now()).await?;
        server.store.forget_consent(&user.id, &grant.client_id).await?;
        server.store.flush().await?;
        Ok::<_, OAuthError>(())
    };
    if let Err(error) = revoked.await {
        return server_error_page(&error);
    }
    tracing::info!(grant_id = %grant.id, client_id = %grant.client_id, "user revoked a grant");
    redirect(StatusCode::SEE_OTHER, "/o/authorized_tokens/")
}
