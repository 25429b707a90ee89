//! The binary: admin commands, the data-dir lock, serve and graceful shutdown.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use portcullis::store::UserStore;

fn portcullis(data: &std::path::Path, keys: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.env("PORTCULLIS_DATA_DIR", data).env("PORTCULLIS_KEYS_DIR", keys).env("RUST_LOG", "warn");
    command
}

fn run(command: &mut Command) -> (bool, serde_json::Value, String) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (output.status.success(), json, String::from_utf8_lossy(&output.stderr).to_string())
}

#[test]
fn client_and_user_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let (ok, created, _) = run(portcullis(&data, &keys).args([
        "client",
        "create",
        "--name",
        "Web",
        "--redirect-uri",
        "https://app.example.com/cb",
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "client_credentials",
        "--scope",
        "read write",
    ]));
    assert!(ok);
    let id = created["client_id"].as_str().unwrap().to_owned();
    assert_eq!(created["client_secret"].as_str().unwrap().len(), 43);
    assert_eq!(created["redirect_uris"][0], "https://app.example.com/cb");
    assert_eq!(created["scope"], "read write");

    let (ok, public, _) = run(portcullis(&data, &keys).args([
        "client",
        "create",
        "--name",
        "SPA",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:3000/cb",
    ]));
    assert!(ok);
    assert!(public.get("client_secret").is_none(), "public clients get no secret");

    let (ok, shown, _) = run(portcullis(&data, &keys).args(["client", "show", &id]));
    assert!(ok);
    assert!(shown.get("client_secret").is_none(), "a secret is shown once");
    let (ok, rotated, _) = run(portcullis(&data, &keys).args(["client", "rotate-secret", &id]));
    assert!(ok);
    assert_ne!(rotated["client_secret"], created["client_secret"]);
    let (ok, list, _) = run(portcullis(&data, &keys).args(["client", "list"]));
    assert!(ok);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(run(portcullis(&data, &keys).args(["client", "delete", &id])).0);
    let (ok, _, stderr) = run(portcullis(&data, &keys).args(["client", "show", &id]));
    assert!(!ok && stderr.contains("no client"));

    let (ok, _, stderr) = run(portcullis(&data, &keys).args([
        "client",
        "create",
        "--name",
        "Bad",
        "--redirect-uri",
        "https://a.example/cb#frag",
    ]));
    assert!(!ok && stderr.contains("fragment"), "{stderr}");
    let (ok, _, stderr) = run(portcullis(&data, &keys).args([
        "client",
        "create",
        "--name",
        "Bad",
        "--public",
        "--grant-type",
        "client_credentials",
    ]));
    assert!(!ok && stderr.contains("public client"), "{stderr}");

    let mut child = portcullis(&data, &keys)
        .args(["user", "create", "--username", "alice", "--password-stdin", "--admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let user: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(user.get("password").is_none());
    // Eight characters, not eight bytes: "ééé" is six bytes and three characters.
    for (password, accepted) in [("ééééééé", false), ("éééééééé", true)] {
        let mut child = portcullis(&data, &keys)
            .args(["user", "create", "--username", &format!("u{accepted}"), "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.success(), accepted, "{password}");
        if !accepted {
            assert!(String::from_utf8_lossy(&output.stderr).contains("at least 8 characters"));
        }
    }
    assert!(run(portcullis(&data, &keys).args(["user", "delete", "utrue"])).0);
    let (ok, generated, _) = run(portcullis(&data, &keys).args(["user", "create", "--username", "bob"]));
    assert!(ok && generated["password"].as_str().unwrap().len() >= 20);
    let (_, _, stderr) = run(portcullis(&data, &keys).args(["user", "create", "--username", "bob"]));
    assert!(stderr.contains("already exists"));
    let (ok, users, _) = run(portcullis(&data, &keys).args(["user", "list"]));
    assert!(ok);
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(run(portcullis(&data, &keys).args(["user", "delete", "bob"])).0);
    assert!(run(portcullis(&data, &keys).arg("purge")).0);
}

#[tokio::test]
async fn admin_commands_fail_at_once_while_a_server_holds_the_store() {
    let app = spawn_app().await;
    let started = Instant::now();
    let (ok, _, stderr) =
        run(portcullis(&app.data_dir.path().join("store"), app.keys_dir.path()).args(["user", "list"]));
    assert!(!ok);
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert!(app.server.store.users().await.unwrap().len() == 1, "the server's store is untouched");
}

#[test]
fn keys_rotate_keeps_the_old_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    portcullis::keys::KeyRing::load_or_generate(
        &keys,
        &[portcullis::keys::Algorithm::ES256, portcullis::keys::Algorithm::RS256],
        0,
    )
    .unwrap();
    let (ok, before, _) = run(portcullis(&dir.path().join("data"), &keys).args(["keys", "list"]));
    assert!(ok);
    assert_eq!(before.as_array().unwrap().len(), 2);
    let (ok, after, _) = run(portcullis(&dir.path().join("data"), &keys).args(["keys", "rotate"]));
    assert!(ok);
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 4);
    assert_eq!(after.iter().filter(|key| key["active"] == true).count(), 2);
}

/// One HTTP/1.1 request over a plain socket; returns the whole response. A server that stops
/// answering fails the test after 30 s instead of holding it.
fn http(port: u16, request: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the server answers within 30 s");
    response
}

/// A server whose stderr nobody reads goes on answering. Every request writes a log line (at the
/// default level too); were the lines written where they are made, the first request after the
/// pipe filled (64 KiB, a few hundred lines) would block on it, and every one after it.
#[test]
fn a_server_whose_log_nobody_reads_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    // Its log is kept open, and read no further than the port.
    let (served, stderr) = start(portcullis(&dir.path().join("data"), &dir.path().join("keys")));
    let port = served.port;
    let get =
        |path: &str| http(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    for _ in 0..1500 {
        let response = get("/healthz");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let metrics = get("/metrics");
    assert!(metrics.contains("\nportcullis_log_lines_dropped_total "), "{metrics}");
    let (status, _, _) = served.stop();
    assert!(status.success(), "exit 0 after SIGTERM, its last lines unread");
    drop(stderr);
}

/// A `portcullis serve` child process on a free port.
struct Served {
    child: std::process::Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
    /// The log so far, which a thread keeps reading (none when a test leaves it unread on
    /// purpose).
    log: std::sync::Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

/// Starts `portcullis serve` at `RUST_LOG=debug` and reads its log up to the line that gives
/// its port; the rest of the log is the caller's to read.
fn start(mut command: Command) -> (Served, BufReader<std::process::ChildStderr>) {
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let port = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the server exited early: {log}");
        log.push_str(&line);
        if let Some(rest) = line.split("port=").nth(1) {
            break rest.trim().parse::<u16>().unwrap();
        }
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
    (Served { child, port, stdout, log, drain: None }, stderr)
}

/// [`start`], and a thread that keeps reading the log.
fn serve(command: Command) -> Served {
    let (mut served, mut stderr) = start(command);
    let drained = served.log.clone();
    served.drain = Some(std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|read| read > 0) {
            drained.lock().unwrap().push_str(&line);
            line.clear();
        }
    }));
    served
}

/// A test that fails half way leaves no server running.
impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    /// SIGTERM, wait for the exit (at most 15 s), return the status, the whole log and what
    /// stdout still held.
    fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(drain) = self.drain.take() {
            drain.join().unwrap();
        }
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut stdout).unwrap();
        (status, log, stdout)
    }
}

#[test]
fn serve_prints_the_admin_password_logs_no_secrets_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let (ok, client, _) = run(portcullis(&data, &keys).args([
        "client",
        "create",
        "--name",
        "M2M",
        "--grant-type",
        "client_credentials",
    ]));
    assert!(ok);
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    let mut served = serve(portcullis(&data, &keys));
    let mut line = String::new();
    served.stdout.read_line(&mut line).unwrap();
    assert!(line.contains("Created user \"admin\" with password: "), "{line}");
    let password = line.trim().rsplit(' ').next().unwrap().to_owned();
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={secret}",
        client["client_id"].as_str().unwrap()
    );
    let response = http(
        served.port,
        &format!(
            "POST /o/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let access_token =
        response.split("\"access_token\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    let (status, log, _) = served.stop();
    assert!(status.success(), "exit 0 after SIGTERM");
    assert!(log.contains("/o/token"), "requests are logged: {log}");
    for secret_value in [&password, &secret, &access_token] {
        assert!(!log.contains(secret_value.as_str()), "a secret reached the log");
    }
    let (ok, users, _) = run(portcullis(&data, &keys).args(["user", "list"]));
    assert!(ok, "the store opens cleanly after shutdown");
    assert_eq!(users[0]["username"], "admin");
}

#[tokio::test]
async fn the_admin_password_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let mut command = portcullis(&data, &keys);
    command.env("PORTCULLIS_ADMIN_PASSWORD", "from the environment");
    let (status, _, stdout) = serve(command).stop();
    assert!(!stdout.contains("password"), "a password from the environment is not printed: {stdout}");
    assert!(status.success());
    let store = portcullis::store::SledStore::open(&data, 4 * 1024 * 1024).unwrap();
    let admin = store.user_by_username("admin").await.unwrap().expect("the admin exists");
    assert!(portcullis::web::password::verify("from the environment", Some(&admin.password_hash)));
}

/// A store where carol authorized two applications, `app` and `other`: for each a grant
/// (`grant-app`, `grant-other`) with a refresh token (`refresh-app`, ...) and a live access token
/// (`jti-app`, ...). Returns the time it was made.
async fn seed_carols_grants(data: &std::path::Path) -> i64 {
    use portcullis::domain::{AuthorizationCode, Grant, IssuedAccessToken, RefreshToken, Scope, User};
    use portcullis::oauth::registration::ClientRegistration;
    use portcullis::store::{ClientStore, GrantStore, Maintenance};
    let now = portcullis::startup::now();
    let scope = Scope::parse("read").unwrap();
    let store = portcullis::store::SledStore::open(data, 4 * 1024 * 1024).unwrap();
    let carol = User {
        id: "carol-id".into(),
        username: "carol".into(),
        password_hash: "x".into(),
        admin: false,
        created_at: now,
        email: None,
        name: None,
        session_generation: 0,
    };
    store.insert_user(&carol).await.unwrap();
    for name in ["app", "other"] {
        let registration = ClientRegistration {
            name: name.into(),
            public: false,
            redirect_uris: vec!["https://app.example/cb".into()],
            grant_types: vec![],
            scope: "read".into(),
            skip_consent: false,
            allowed_origins: vec![],
            id_token_alg: None,
            post_logout_redirect_uris: vec![],
        };
        let (client, _) = registration.validate().unwrap().into_client(None, now);
        store.insert_client(&portcullis::domain::Client { client_id: name.into(), ..client }).await.unwrap();
        let code = AuthorizationCode {
            client_id: name.into(),
            redirect_uri: "https://app.example/cb".into(),
            user_id: carol.id.clone(),
            scope: scope.clone(),
            auth_time: now,
            code_challenge: None,
            grant_id: format!("grant-{name}"),
            expires_at: now + 60,
            used: false,
            purge_at: now + 3600,
            nonce: None,
            issued_at: None,
        };
        store.insert_code(&format!("code-{name}"), &code).await.unwrap();
        let grant = Grant {
            id: format!("grant-{name}"),
            client_id: name.into(),
            user_id: carol.id.clone(),
            scope: scope.clone(),
            auth_time: now,
            created_at: now,
            revoked_at: None,
            access_tokens: vec![IssuedAccessToken { jti: format!("jti-{name}"), expires_at: now + 900 }],
            expires_at: now + 3600,
        };
        let refresh = RefreshToken {
            grant_id: grant.id.clone(),
            client_id: name.into(),
            scope: scope.clone(),
            expires_at: now + 3600,
            rotated: false,
        };
        let (code_key, refresh_key) = (format!("code-{name}"), format!("refresh-{name}"));
        store.redeem_code(&code_key, &grant, Some((&refresh_key, &refresh)), now).await.unwrap();
    }
    store.flush().await.unwrap();
    now
}

#[tokio::test]
async fn deleting_a_user_revokes_the_grants_they_gave() {
    use portcullis::store::{GrantStore, RefreshTokenStore, RevokedTokenStore};
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let now = seed_carols_grants(&data).await;
    let (ok, _, stderr) = run(portcullis(&data, &keys).args(["user", "delete", "carol"]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("revoked the 2 grant"), "{stderr}");

    let store = portcullis::store::SledStore::open(&data, 4 * 1024 * 1024).unwrap();
    assert!(store.user_by_username("carol").await.unwrap().is_none());
    for name in ["app", "other"] {
        let grant = store.grant(&format!("grant-{name}")).await.unwrap().unwrap();
        assert!(grant.revoked_at.is_some(), "the refresh token stops");
        let jti = format!("jti-{name}");
        assert!(store.is_access_token_revoked(&jti, now).await.unwrap(), "introspection and the feed see it");
        let refresh = store.refresh_token(&format!("refresh-{name}")).await.unwrap();
        assert!(refresh.is_some(), "kept, as any revoked grant's");
    }
}

/// `user delete` lists at most --max-revoked-per-client access tokens per grant in the feed: a
/// grant with more revokes the user's access tokens of its client in one entry instead.
#[tokio::test]
async fn deleting_a_user_lists_a_bounded_number_of_tokens_per_grant() {
    use portcullis::store::{GrantStore, RefreshTokenStore, RevokedTokenStore};
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let now = seed_carols_grants(&data).await;
    {
        // A second unexpired access token in carol's grant of "app".
        let store = portcullis::store::SledStore::open(&data, 4 * 1024 * 1024).unwrap();
        let old = store.refresh_token("refresh-app").await.unwrap().unwrap();
        let rotated =
            portcullis::domain::IssuedAccessToken { jti: "jti-app-2".into(), expires_at: now + 900 };
        let rotation = store.rotate_refresh_token("refresh-app", "refresh-app-2", &old, &rotated, now).await;
        assert_eq!(rotation.unwrap(), portcullis::store::Rotation::Rotated);
    }
    let command = portcullis(&data, &keys)
        .env("PORTCULLIS_MAX_REVOKED_PER_CLIENT", "1")
        .args(["user", "delete", "carol"])
        .output()
        .unwrap();
    assert!(command.status.success(), "{}", String::from_utf8_lossy(&command.stderr));

    let store = portcullis::store::SledStore::open(&data, 4 * 1024 * 1024).unwrap();
    assert!(store.grant("grant-app").await.unwrap().unwrap().revoked_at.is_some());
    for jti in ["jti-app", "jti-app-2"] {
        assert!(!store.is_access_token_revoked(jti, now).await.unwrap(), "{jti} not listed");
    }
    let entries = store.revoked_user_tokens(now).await.unwrap();
    assert!(
        matches!(entries.as_slice(), [entry] if entry.client_id == "app" && entry.issued_until >= now
            && entry.tokens_until >= now + 86_400),
        "{entries:?}"
    );
    assert_eq!(
        store.tokens_revoked_until("app", &entries[0].user_id, now).await.unwrap(),
        Some(entries[0].issued_until)
    );
    assert!(store.revoked_clients(now).await.unwrap().is_empty(), "not the client's tokens");
    assert!(store.is_access_token_revoked("jti-other", now).await.unwrap(), "within the bound: listed");
}

#[tokio::test]
async fn deleting_a_client_revokes_its_tokens() {
    use portcullis::store::{ClientStore, GrantStore, RevokedTokenStore};
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let now = seed_carols_grants(&data).await;
    let (ok, _, stderr) = run(portcullis(&data, &keys).args(["client", "delete", "app"]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("its tokens are revoked"), "{stderr}");
    let (ok, _, stderr) = run(portcullis(&data, &keys).args(["client", "delete", "app"]));
    assert!(!ok && stderr.contains("no client \"app\""), "{stderr}");

    let store = portcullis::store::SledStore::open(&data, 4 * 1024 * 1024).unwrap();
    assert!(store.client("app").await.unwrap().is_none());
    // Listed in the feed for at least a day: the command cannot know the server's token lifetime.
    let listed = store.revoked_clients(now).await.unwrap();
    assert!(
        matches!(listed.as_slice(), [deleted] if deleted.client_id == "app"
            && deleted.tokens_until >= now + 86_400 && (now..now + 60).contains(&deleted.deleted_at)),
        "{listed:?}"
    );
    assert!(store.client("other").await.unwrap().is_some());
    assert!(store.grant("grant-other").await.unwrap().unwrap().revoked_at.is_none());
}

#[tokio::test]
async fn set_password_replaces_it_and_ends_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let create = portcullis(&data, &keys)
        .args(["user", "create", "--username", "dora", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn();
    let mut create = create.unwrap();
    create.stdin.take().unwrap().write_all(b"old password 1\n").unwrap();
    assert!(create.wait().unwrap().success());

    let served = serve(portcullis(&data, &keys));
    let base = format!("http://127.0.0.1:{}", served.port);
    let (browser, status) = sign_in(&base, "dora", "old password 1").await;
    assert_eq!(status, 303);
    let page = browser.get(format!("{base}/o/authorized_tokens/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "signed in");
    served.stop();

    // A password that breaks the rule changes nothing; a good one replaces the old.
    let mut short = portcullis(&data, &keys);
    short
        .args(["user", "set-password", "dora", "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut short = short.spawn().unwrap();
    short.stdin.take().unwrap().write_all(b"short\n").unwrap();
    assert!(!short.wait().unwrap().success());
    let (ok, _, stderr) = run(portcullis(&data, &keys).args(["user", "set-password", "nobody"]));
    assert!(!ok && stderr.contains("no user named \"nobody\""), "{stderr}");
    let (ok, printed, stderr) = run(portcullis(&data, &keys).args(["user", "set-password", "dora"]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("every session they had is over"), "{stderr}");
    let generated = printed["password"].as_str().expect("a generated password is printed").to_owned();

    let served = serve(portcullis(&data, &keys));
    let base = format!("http://127.0.0.1:{}", served.port);
    let page = browser.get(format!("{base}/o/authorized_tokens/")).send().await.unwrap();
    assert_eq!(page.status(), 302, "the old session is over");
    assert!(location(&page).starts_with("/login"), "{}", location(&page));
    assert_eq!(sign_in(&base, "dora", "old password 1").await.1, 401, "the old password is refused");
    let (browser, status) = sign_in(&base, "dora", &generated).await;
    assert_eq!(status, 303, "the new password works");
    assert_eq!(browser.get(format!("{base}/o/authorized_tokens/")).send().await.unwrap().status(), 200);
    served.stop();
}

#[test]
fn a_bad_issuer_stops_the_start_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    for (issuer, expected) in [
        ("https://user@auth.example", "must not contain user information"),
        ("https://Auth.Example", "write it as https://auth.example"),
    ] {
        let (ok, stderr) = refused_start(portcullis(&data, &keys).args(["serve", "--issuer", issuer]));
        assert!(!ok && stderr.contains(expected), "{issuer}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn out_of_range_settings_stop_the_start_with_a_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let huge = u64::MAX.to_string();
    for (flag, value, expected) in [
        ("--cache-mb", "0", "--cache-mb"),
        ("--cache-mb", huge.as_str(), "--cache-mb"),
        ("--idle-timeout", huge.as_str(), "--idle-timeout"),
        ("--idle-timeout", "0", "--idle-timeout"),
        ("--body-read-timeout", "0", "--body-read-timeout"),
        ("--purge-interval", "0", "--purge-interval"),
        ("--max-revoked-per-client", "0", "--max-revoked-per-client"),
        ("--max-applications-per-user", "0", "--max-applications-per-user"),
        ("--max-applications-per-user", huge.as_str(), "--max-applications-per-user"),
        ("--max-revoked-per-client", huge.as_str(), "--max-revoked-per-client"),
        ("--key-reload-interval", huge.as_str(), "--key-reload-interval"),
        ("--audience", "", "--audience"),
    ] {
        let (ok, stderr) = refused_start(portcullis(&data, &keys).args(["serve", flag, value]));
        assert!(!ok && stderr.contains(expected), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
}

/// Runs a `serve` expected to refuse to start: its success and stderr, or a failure if it is
/// still running after 15 s (it started after all).
fn refused_start(command: &mut Command) -> (bool, String) {
    let mut child = command
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[test]
fn an_admin_password_from_the_environment_that_breaks_the_rules_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let (ok, stderr) =
        refused_start(portcullis(&data, &keys).arg("serve").env("PORTCULLIS_ADMIN_PASSWORD", "short"));
    assert!(!ok, "the server must not start with an admin password the CLI would refuse");
    assert!(stderr.contains("PORTCULLIS_ADMIN_PASSWORD") && stderr.contains("at least 8"), "{stderr}");
    let (_, users, _) = run(portcullis(&data, &keys).args(["user", "list"]));
    assert_eq!(users, serde_json::json!([]), "no admin was created");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = portcullis(&dir.path().join("data"), &dir.path().join("keys"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let listening = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the server exited early");
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if object["fields"]["message"] == "listening" {
            break object;
        }
    };
    assert!(listening["fields"]["port"].as_u64().is_some());
    assert!(listening["level"] == "INFO" && listening["timestamp"].is_string());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// `client delete swagger-ui`, then a start: the server creates swagger-ui again, as a new
/// client. None of what the deleted one was given works with it (access and refresh tokens,
/// the user's consent), and the revocation feed lists the deleted one.
#[tokio::test]
async fn swagger_ui_deleted_comes_back_at_the_next_start_as_a_new_client() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    // One issuer for both starts (the port changes): the tokens stay this issuer's.
    let issuer = "http://portcullis.test";
    let start = || {
        let mut command = portcullis(&data, &keys);
        command.env("PORTCULLIS_ISSUER", issuer).env("PORTCULLIS_ADMIN_PASSWORD", "admin password 1");
        serve(command)
    };
    let redirect_uri = format!("{issuer}/docs/oauth2-redirect.html");
    let (verifier, challenge) = pkce_pair();
    let params = [
        ("response_type", "code"),
        ("client_id", "swagger-ui"),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", "read"),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];

    let served = start();
    let base = format!("http://127.0.0.1:{}", served.port);
    let (browser, status) = sign_in(&base, "admin", "admin password 1").await;
    assert_eq!(status, 303);
    let consent = browser.get(format!("{base}/o/authorize")).query(&params).send().await.unwrap();
    assert_eq!(consent.status(), 200, "the consent page");
    let mut form = hidden_fields(&consent.text().await.unwrap());
    form.push(("allow".into(), "allow".into()));
    let approved = browser.post(format!("{base}/o/authorize")).form(&form).send().await.unwrap();
    let code = query_param(&location(&approved), "code").expect("a code");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("client_id", "swagger-ui"),
        ("code_verifier", verifier.as_str()),
    ];
    let http = reqwest::Client::new();
    let tokens: serde_json::Value =
        http.post(format!("{base}/o/token")).form(&exchange).send().await.unwrap().json().await.unwrap();
    let (access, refresh) =
        (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    let remembered = browser.get(format!("{base}/o/authorize")).query(&params).send().await.unwrap();
    assert_eq!(remembered.status(), 302, "the consent is remembered");
    assert!(served.stop().0.success());

    let (ok, _, stderr) = run(portcullis(&data, &keys).args(["client", "delete", "swagger-ui"]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("creates it again at its next start, as a new client"), "{stderr}");

    let served = start();
    let base = format!("http://127.0.0.1:{}", served.port);
    let hello = http.get(format!("{base}/api/hello")).bearer_auth(access).send().await.unwrap();
    assert_eq!(hello.status(), 401);
    let body: serde_json::Value = hello.json().await.unwrap();
    assert_eq!(body["error_description"], "the token's client has been deleted");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", "swagger-ui")];
    let refreshed = http.post(format!("{base}/o/token")).form(&form).send().await.unwrap();
    assert_eq!(refreshed.status(), 400, "the deleted client's refresh token");
    assert_eq!(refreshed.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant");
    let (browser, _) = sign_in(&base, "admin", "admin password 1").await;
    let asked = browser.get(format!("{base}/o/authorize")).query(&params).send().await.unwrap();
    assert_eq!(asked.status(), 200, "consent is asked again");
    let feed = http.get(format!("{base}/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
    let payload = jws_payload(&feed);
    assert_eq!(payload["revoked_clients"][0]["client_id"], "swagger-ui", "{payload}");
    let deleted_at = payload["revoked_clients"][0]["deleted_at"].as_i64().unwrap();
    assert!(served.stop().0.success());

    let store = portcullis::store::SledStore::open(&data, 4 * 1024 * 1024).unwrap();
    let again = portcullis::store::ClientStore::client(&store, "swagger-ui").await.unwrap().unwrap();
    assert!(again.created_at > deleted_at, "created after the second of the deletion");
}
