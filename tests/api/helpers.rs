//! `spawn_app()` and a `TestApp` with one method per endpoint, so tests read as protocol steps.

use std::sync::Arc;

use portcullis::config::Settings;
use portcullis::domain::{Client, ClientType, GrantType, RedirectUri, Scope, User};
use portcullis::oauth::AuthorizationServer;
use portcullis::secrets::{hash_secret, random_secret, random_token, sha256_base64url};
use portcullis::startup::{App, now};
use portcullis::store::{SharedStore, SledStore};

pub const REDIRECT_URI: &str = "https://app.example.com/callback";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub address: String,
    pub bound_port: u16,
    /// Keeps cookies, never follows redirects.
    pub browser: reqwest::Client,
    /// No cookies: an API client.
    pub http: reqwest::Client,
    pub server: AuthorizationServer,
    pub admin_password: String,
    pub data_dir: tempfile::TempDir,
    pub keys_dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

pub struct ClientOptions {
    pub public: bool,
    pub grant_types: Vec<GrantType>,
    pub scope: &'static str,
    pub skip_consent: bool,
    pub redirect_uris: Vec<&'static str>,
    /// The user who registered it on the applications pages (None: the operator, by the CLI).
    pub owner: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            public: false,
            grant_types: vec![
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::ClientCredentials,
            ],
            scope: "read write",
            skip_consent: false,
            redirect_uris: vec![REDIRECT_URI],
            owner: None,
        }
    }
}

pub fn pkce_pair() -> (String, String) {
    let verifier = random_token(48);
    let challenge = sha256_base64url(verifier.as_bytes());
    (verifier, challenge)
}

/// A client that keeps cookies and does not follow redirects, as a test's browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs `username` in on the server at `base` in a new browser; returns the browser (holding
/// the session cookie) and the status of the sign-in (303 when it worked).
pub async fn sign_in(base: &str, username: &str, password: &str) -> (reqwest::Client, u16) {
    let browser = browser();
    let page = browser.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_field(&page, "csrf_token").unwrap();
    let form = [("csrf_token", csrf.as_str()), ("next", "/"), ("username", username), ("password", password)];
    let status = browser.post(format!("{base}/login")).form(&form).send().await.unwrap().status().as_u16();
    (browser, status)
}

/// A server on the sled store in a fresh temp dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, None).await
}

/// A server with adjusted settings, on the sled store or the given one.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings), store: Option<SharedStore>) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_directories(data_dir.path().join("store"), keys_dir.path().to_owned());
    adjust(&mut settings);
    let store: SharedStore = match store {
        Some(store) => store,
        None => Arc::new(SledStore::open(&settings.data_dir, 8 * 1024 * 1024).unwrap()),
    };
    let app = App::build_with_store(settings, store).await.expect("the app builds");
    let address = app.issuer().to_owned();
    let bound_port = app.port();
    let server = app.authorization_server().clone();
    let admin_password = app.initial_admin_password.clone().expect("a first start creates the admin");
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address,
        bound_port,
        browser: browser(),
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        server,
        admin_password,
        data_dir,
        keys_dir,
    }
}

/// The payload of a compact JWS (an access token, the revocation feed) as JSON, unverified.
pub fn jws_payload(jws: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jws.split('.').nth(1).expect("a compact JWS");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&payload).expect("a JSON payload")
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded_parse(query).into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

fn form_urlencoded_parse(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

pub fn location(response: &reqwest::Response) -> String {
    response.headers().get("location").expect("a Location header").to_str().unwrap().to_owned()
}

/// The value of the hidden input `name` in an HTML page.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

/// Every hidden input of a form, in order, HTML-unescaped.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('"')?;
            let value = rest.strip_prefix(" value=\"")?.split('"').next()?;
            Some((name.to_owned(), unescape(value)))
        })
        .collect()
}

/// Undoes HTML escaping as a browser would (askama writes numeric entities).
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find(';') else {
            break;
        };
        let entity = &rest[start + 1..start + end];
        let decoded = match entity {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => entity.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()).and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[start..=start + end]),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn create_client(&self, options: ClientOptions) -> TestClient {
        let secret = (!options.public).then(random_secret);
        let client = Client {
            client_id: random_token(12),
            name: "Test App".into(),
            client_type: if options.public { ClientType::Public } else { ClientType::Confidential },
            secret_hash: secret.as_deref().map(hash_secret),
            redirect_uris: options.redirect_uris.iter().map(|uri| RedirectUri::parse(uri).unwrap()).collect(),
            grant_types: options.grant_types,
            scope: Scope::parse(options.scope).unwrap(),
            skip_consent: options.skip_consent,
            owner: options.owner,
            id_token_signed_response_alg: None,
            allowed_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            created_at: now(),
        };
        self.server.store.insert_client(&client).await.unwrap();
        TestClient { id: client.client_id, secret }
    }

    pub async fn confidential_client(&self) -> TestClient {
        self.create_client(ClientOptions::default()).await
    }

    pub async fn public_client(&self) -> TestClient {
        self.create_client(ClientOptions {
            public: true,
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            ..ClientOptions::default()
        })
        .await
    }

    pub async fn create_user(&self, username: &str) -> User {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.into(),
            password_hash: portcullis::web::password::hash(PASSWORD).unwrap(),
            admin: false,
            created_at: now(),
            email: None,
            name: None,
            session_generation: 0,
        };
        self.server.store.insert_user(&user).await.unwrap();
        user
    }

    /// GET /login then POST it; returns the POST's response.
    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.login_with_next(username, password, "/").await
    }

    pub async fn login_with_next(&self, username: &str, password: &str, next: &str) -> reqwest::Response {
        let page = self.browser.get(self.url("/login")).send().await.unwrap().text().await.unwrap();
        let csrf = hidden_field(&page, "csrf_token").expect("the login form has a CSRF token");
        self.browser
            .post(self.url("/login"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("next", next),
                ("username", username),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
    }

    pub async fn login_admin(&self) {
        let response = self.login("admin", &self.admin_password.clone()).await;
        assert_eq!(response.status(), 303, "admin signs in");
    }

    pub async fn authorize(&self, params: &[(&str, &str)]) -> reqwest::Response {
        self.browser.get(self.url("/o/authorize")).query(params).send().await.unwrap()
    }

    /// Answers the consent page `html` with `button` ("allow" or "deny").
    pub async fn answer_consent(&self, html: &str, button: &str) -> reqwest::Response {
        let mut form = hidden_fields(html);
        form.push((button.into(), button.into()));
        self.browser.post(self.url("/o/authorize")).form(&form).send().await.unwrap()
    }

    /// Standard authorization request parameters for `client`.
    pub fn authorization_params<'a>(
        &self,
        client: &'a TestClient,
        challenge: Option<&'a str>,
    ) -> Vec<(&'a str, &'a str)> {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("state", "state-123"),
        ];
        if let Some(challenge) = challenge {
            params.push(("code_challenge", challenge));
            params.push(("code_challenge_method", "S256"));
        }
        params
    }

    /// Signs in as admin (if needed), approves, returns the code from the redirect.
    pub async fn login_and_consent(
        &self,
        client: &TestClient,
        challenge: Option<&str>,
        extra: &[(&str, &str)],
    ) -> String {
        let mut params = self.authorization_params(client, challenge);
        params.extend_from_slice(extra);
        let mut response = self.authorize(&params).await;
        if response.status() == 302 && location(&response).starts_with("/login") {
            self.login_admin().await;
            response = self.authorize(&params).await;
        }
        let response = if response.status() == 200 {
            let html = response.text().await.unwrap();
            self.answer_consent(&html, "allow").await
        } else {
            response
        };
        assert!(response.status().is_redirection(), "approval redirects, got {}", response.status());
        let location = location(&response);
        assert!(location.starts_with(REDIRECT_URI), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("state-123"));
        query_param(&location, "code").expect("a code in the redirect")
    }

    /// POST /o/token with `form`, authenticating with Basic when `basic` is given.
    pub async fn token(&self, form: &[(&str, &str)], basic: Option<&TestClient>) -> reqwest::Response {
        let mut request = self.http.post(self.url("/o/token")).form(form);
        if let Some(client) = basic {
            request = request.basic_auth(&client.id, client.secret.as_deref());
        }
        request.send().await.unwrap()
    }

    /// The access token of a client_credentials grant for `client` (Basic auth), with `scope` if
    /// given.
    pub async fn client_credentials_token(&self, client: &TestClient, scope: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(scope.map(|scope| ("scope", scope)));
        let response = self.token(&form, Some(client)).await;
        assert_eq!(response.status(), 200, "client_credentials for {}", client.id);
        let body: serde_json::Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Code exchange for a confidential client (Basic auth).
    pub async fn exchange_code(
        &self,
        client: &TestClient,
        code: &str,
        verifier: Option<&str>,
    ) -> reqwest::Response {
        let mut form =
            vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT_URI)];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        if client.secret.is_some() {
            self.token(&form, Some(client)).await
        } else {
            form.push(("client_id", &client.id));
            self.token(&form, None).await
        }
    }

    /// A full code flow; returns the token response JSON.
    pub async fn tokens_for(&self, client: &TestClient) -> serde_json::Value {
        let (verifier, challenge) = pkce_pair();
        let code = self.login_and_consent(client, Some(&challenge), &[]).await;
        let response = self.exchange_code(client, &code, Some(&verifier)).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn refresh(
        &self,
        client: &TestClient,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> reqwest::Response {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        if client.secret.is_some() {
            self.token(&form, Some(client)).await
        } else {
            form.push(("client_id", &client.id));
            self.token(&form, None).await
        }
    }

    pub async fn hello(&self, access_token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url("/api/hello"));
        if let Some(token) = access_token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

/// The `Authorization: Basic` value of a confidential client (RFC 6749 §2.3.1).
pub fn basic_header(client: &TestClient) -> String {
    use base64::Engine;
    let credentials = format!("{}:{}", client.id, client.secret.as_deref().unwrap_or_default());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

/// Asserts an RFC 6749 §5.2 error response and returns its JSON.
pub async fn assert_oauth_error(response: reqwest::Response, status: u16, error: &str) -> serde_json::Value {
    assert_eq!(response.status(), status, "status for {error}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].as_str().is_some_and(|description| !description.is_empty()));
    body
}

impl TestApp {
    /// The port the server listens on (the issuer may name another host).
    pub fn server_port(&self) -> u16 {
        self.bound_port
    }
}
