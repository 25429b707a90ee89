//! `portcullis::verify`: every rejection with its own reason, key refetch, the revocation feed,
//! and the example resource server (the poem extractor) against a running server.

use std::sync::Arc;
use std::time::Duration;

use josekit::jwk::Jwk;
use josekit::jws::{ES256, HS256, JwsHeader};
use josekit::jwt::{self, JwtPayload};
use portcullis::startup::now;
use portcullis::verify::{Verifier, VerifyError};

use crate::helpers::*;

#[path = "../../examples/resource_server.rs"]
#[allow(dead_code)]
mod resource_server;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://api.example";

struct Keys {
    private: Jwk,
    public: Jwk,
}

fn key_pair(kid: &str) -> Keys {
    let pair = ES256.generate_key_pair().unwrap();
    let mut private = josekit::jwk::KeyPair::to_jwk_private_key(&pair);
    let mut public = josekit::jwk::KeyPair::to_jwk_public_key(&pair);
    for jwk in [&mut private, &mut public] {
        jwk.set_key_id(kid);
        jwk.set_algorithm("ES256");
    }
    Keys { private, public }
}

fn claims(now: i64) -> serde_json::Map<String, serde_json::Value> {
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": "client-1", "jti": "jti-1",
        "scope": "read write", "iat": now, "nbf": now, "exp": now + 300,
    })
    .as_object()
    .unwrap()
    .clone()
}

fn sign(keys: &Keys, kid: &str, typ: &str, claims: serde_json::Map<String, serde_json::Value>) -> String {
    let mut header = JwsHeader::new();
    header.set_token_type(typ);
    header.set_key_id(kid);
    let payload = JwtPayload::from_map(claims).unwrap();
    jwt::encode_with_signer(&payload, &header, &ES256.signer_from_jwk(&keys.private).unwrap()).unwrap()
}

fn verifier(keys: &Keys) -> Verifier {
    let jwks = serde_json::json!({ "keys": [serde_json::Value::Object(keys.public.as_ref().clone())] });
    Verifier::from_jwks_json(jwks.to_string().as_bytes(), ISSUER, AUDIENCE).unwrap().with_leeway(0)
}

fn b64(value: &serde_json::Value) -> String {
    portcullis::secrets::base64url(value.to_string().as_bytes())
}

#[test]
fn a_good_token_verifies_with_typed_claims_and_scope_helpers() {
    let keys = key_pair("k1");
    let now = now();
    let claims = verifier(&keys).verify(&sign(&keys, "k1", "at+jwt", claims(now)), now).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.client_id, "client-1");
    assert!(claims.has_scope("read") && claims.has_scopes(&["read", "write"]) && !claims.has_scope("admin"));
    let mut array_aud = self::claims(now);
    array_aud.insert("aud".into(), serde_json::json!(["other", AUDIENCE]));
    assert!(verifier(&keys).verify(&sign(&keys, "k1", "application/at+jwt", array_aud), now).is_ok());
}

#[test]
fn every_bad_token_is_refused_with_its_reason() {
    let keys = key_pair("k1");
    let other = key_pair("k1");
    let verifier = verifier(&keys);
    let now = now();
    let good = sign(&keys, "k1", "at+jwt", claims(now));
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = claims(now);
        claims.insert(name.into(), value);
        sign(&keys, "k1", "at+jwt", claims)
    };
    let without = |name: &str| {
        let mut claims = claims(now);
        claims.remove(name);
        sign(&keys, "k1", "at+jwt", claims)
    };
    // Flip the first character of the signature: its bits are all data (the last one's are partly
    // padding, which a strict decoder refuses as malformed instead).
    let signature_start = good.rfind('.').unwrap() + 1;
    let mut tampered = good.clone();
    let first = if &good[signature_start..=signature_start] == "A" { "B" } else { "A" };
    tampered.replace_range(signature_start..=signature_start, first);
    let parts: Vec<&str> = good.split('.').collect();
    // RFC 7518 §3.4: R then S, 32 bytes each; any other length or encoding is no signature.
    let signature = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap()
    };
    let with_signature =
        |bytes: &[u8]| format!("{}.{}.{}", parts[0], parts[1], portcullis::secrets::base64url(bytes));
    let longer = [&signature[..], &[0; 8]].concat();
    let alg_none =
        format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": "k1"})), parts[1]);
    // HS256 with the public key's bytes as the "secret": the classic key-confusion attack.
    let public_bytes = keys.public.to_string();
    let mut hs_header = JwsHeader::new();
    hs_header.set_token_type("at+jwt");
    hs_header.set_key_id("k1");
    let hs256 = jwt::encode_with_signer(
        &JwtPayload::from_map(claims(now)).unwrap(),
        &hs_header,
        &HS256.signer_from_bytes(public_bytes.as_bytes()).unwrap(),
    )
    .unwrap();

    let cases: Vec<(&str, String, VerifyError)> = vec![
        ("tampered signature", tampered, VerifyError::BadSignature),
        ("wrong key", sign(&other, "k1", "at+jwt", claims(now)), VerifyError::BadSignature),
        ("signature one byte short", with_signature(&signature[..63]), VerifyError::BadSignature),
        ("signature with bytes after it", with_signature(&longer), VerifyError::BadSignature),
        ("signature of zeros (r = s = 0)", with_signature(&[0; 64]), VerifyError::BadSignature),
        ("empty signature", with_signature(&[]), VerifyError::BadSignature),
        (
            "wrong iss",
            with("iss", "https://evil.example".into()),
            VerifyError::WrongIssuer("https://evil.example".into()),
        ),
        ("wrong aud", with("aud", "https://other.example".into()), VerifyError::WrongAudience),
        ("missing aud", without("aud"), VerifyError::MissingClaim("aud")),
        ("missing exp", without("exp"), VerifyError::MissingClaim("exp")),
        ("missing iss", without("iss"), VerifyError::MissingClaim("iss")),
        (
            "fractional exp",
            with("exp", serde_json::json!((now + 300) as f64 + 0.5)),
            VerifyError::MissingClaim("exp"),
        ),
        ("expired by one second", with("exp", (now - 1).into()), VerifyError::Expired),
        ("expires now", with("exp", now.into()), VerifyError::Expired),
        ("not yet valid", with("nbf", (now + 60).into()), VerifyError::NotYetValid),
        ("issued in the future", with("iat", (now + 60).into()), VerifyError::IssuedInTheFuture),
        ("wrong typ", sign(&keys, "k1", "JWT", claims(now)), VerifyError::WrongType(Some("JWT".into()))),
        ("alg none", alg_none, VerifyError::AlgorithmNotAllowed("none".into())),
        ("HS256 with the public key", hs256, VerifyError::AlgorithmNotAllowed("HS256".into())),
        (
            "unknown kid",
            sign(&key_pair("k2"), "k2", "at+jwt", claims(now)),
            VerifyError::UnknownKey("k2".into()),
        ),
        ("malformed base64", "e30!.e30!.sig!".to_owned(), VerifyError::Malformed),
        ("not a JWS", "hello".to_owned(), VerifyError::Malformed),
        ("empty", String::new(), VerifyError::Malformed),
    ];
    for (name, token, expected) in cases {
        assert_eq!(verifier.verify(&token, now), Err(expected), "{name}");
    }
    assert!(verifier.verify(&with("exp", (now + 1).into()), now).is_ok(), "valid until exp");
    // The reasons read as sentences, for the error_description a client's developer sees.
    assert_eq!(
        VerifyError::WrongType(Some("JWT".into())).to_string(),
        "the token's typ is \"JWT\"; it must be \"at+jwt\" (RFC 9068 §2.1)"
    );
    assert_eq!(
        VerifyError::WrongType(None).to_string(),
        "the token has no typ; it must be \"at+jwt\" (RFC 9068 §2.1)"
    );
}

#[test]
fn a_jwks_key_that_is_not_a_point_on_p256_is_refused() {
    let keys = key_pair("k1");
    let mut jwk = keys.public.as_ref().clone();
    let y = jwk["y"].as_str().unwrap().to_owned();
    // Another y for the same x is not on the curve (only y and -y are).
    let flipped = match y.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", &y[1..]),
    };
    jwk.insert("y".into(), flipped.into());
    let jwks = serde_json::json!({ "keys": [serde_json::Value::Object(jwk)] });
    assert!(matches!(
        Verifier::from_jwks_json(jwks.to_string().as_bytes(), ISSUER, AUDIENCE),
        Err(VerifyError::BadJwks(_))
    ));
}

/// EdDSA tokens: Ed25519 keys are checked by aws-lc, Ed448 keys (RFC 8037 allows them, aws-lc
/// has none) by josekit; both accept the right signature and refuse a changed one.
#[test]
fn eddsa_tokens_verify_on_ed25519_and_ed448_keys() {
    use josekit::jwk::alg::ed::EdCurve;
    use josekit::jws::EdDSA;
    let now = now();
    for curve in [EdCurve::Ed25519, EdCurve::Ed448] {
        let pair = EdDSA.generate_key_pair(curve).unwrap();
        let mut public = josekit::jwk::KeyPair::to_jwk_public_key(&pair);
        public.set_key_id("ed");
        public.set_algorithm("EdDSA");
        let mut header = JwsHeader::new();
        header.set_token_type("at+jwt");
        header.set_key_id("ed");
        let payload = JwtPayload::from_map(claims(now)).unwrap();
        let signer = EdDSA.signer_from_jwk(&josekit::jwk::KeyPair::to_jwk_private_key(&pair)).unwrap();
        let token = jwt::encode_with_signer(&payload, &header, &signer).unwrap();
        let jwks = serde_json::json!({ "keys": [serde_json::Value::Object(public.as_ref().clone())] });
        let verifier = Verifier::from_jwks_json(jwks.to_string().as_bytes(), ISSUER, AUDIENCE).unwrap();
        assert_eq!(verifier.verify(&token, now).unwrap().sub, "user-1", "{curve:?}");
        let signature_start = token.rfind('.').unwrap() + 1;
        let mut tampered = token.clone();
        let first = if &token[signature_start..=signature_start] == "A" { "B" } else { "A" };
        tampered.replace_range(signature_start..=signature_start, first);
        assert_eq!(verifier.verify(&tampered, now), Err(VerifyError::BadSignature), "{curve:?}");
        // A signature of another length is refused, not read past.
        let short = &token[..token.len() - 4];
        assert!(verifier.verify(short, now).is_err(), "{curve:?}");
    }
    // An Ed25519 key whose x is not 32 bytes is no key.
    let short_x = serde_json::json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
        "x": portcullis::secrets::base64url(&[7; 31]),
    }] });
    assert!(matches!(
        Verifier::from_jwks_json(short_x.to_string().as_bytes(), ISSUER, AUDIENCE),
        Err(VerifyError::BadJwks(_))
    ));
}

#[test]
fn leeway_is_configurable() {
    let keys = key_pair("k1");
    let now = now();
    let mut claims = claims(now);
    claims.insert("exp".into(), (now - 5).into());
    let token = sign(&keys, "k1", "at+jwt", claims);
    assert_eq!(verifier(&keys).verify(&token, now), Err(VerifyError::Expired));
    assert!(verifier(&keys).with_leeway(10).verify(&token, now).is_ok());
}

#[test]
fn the_algorithm_allowlist_is_enforced() {
    let keys = key_pair("k1");
    let now = now();
    let token = sign(&keys, "k1", "at+jwt", claims(now));
    let rs256_only = verifier(&keys).with_algorithms(&[portcullis::verify::Algorithm::RS256]);
    assert_eq!(rs256_only.verify(&token, now), Err(VerifyError::AlgorithmNotAllowed("ES256".into())));
}

#[tokio::test]
async fn from_issuer_fetches_keys_and_refetches_for_an_unknown_kid_at_most_once_per_interval() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let verifier = Verifier::from_issuer(&app.address, &app.address)
        .await
        .unwrap()
        .with_refetch_interval(Duration::from_secs(3600));
    assert!(verifier.verify(&app.client_credentials_token(&client, None).await, now()).is_ok());

    let rotate = |app: &TestApp| {
        let mut ring = portcullis::keys::KeyRing::load(app.keys_dir.path()).unwrap();
        ring.rotate(app.keys_dir.path(), now()).unwrap();
        app.server.install_keys(ring).unwrap();
    };
    rotate(&app);
    let after_rotation = app.client_credentials_token(&client, None).await;
    assert!(matches!(verifier.verify(&after_rotation, now()), Err(VerifyError::UnknownKey(_))));
    assert!(
        verifier.verify_refreshing_keys(&after_rotation, now()).await.is_ok(),
        "one refetch finds the new key"
    );

    rotate(&app);
    let after_second_rotation = app.client_credentials_token(&client, None).await;
    assert!(
        matches!(
            verifier.verify_refreshing_keys(&after_second_rotation, now()).await,
            Err(VerifyError::UnknownKey(_))
        ),
        "no second refetch within the interval"
    );
}

#[tokio::test]
async fn the_revocation_feed_is_signed_cacheable_and_makes_offline_verifiers_refuse_revoked_tokens() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let tokens = app.tokens_for(&client).await;
    let access = tokens["access_token"].as_str().unwrap();

    let feed_url = app.url("/o/revoked_tokens");
    let first = app.http.get(&feed_url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "public, max-age=10");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let unchanged = app.http.get(&feed_url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(unchanged.status(), 304);

    let verifier = Arc::new(Verifier::from_issuer(&app.address, &app.address).await.unwrap());
    let poller = verifier.poll_revocations(&feed_url, Duration::from_millis(200));
    assert!(verifier.verify(access, now()).is_ok());

    assert_eq!(app.revoke(&client, access, None).await.status(), 200);
    let changed = app.http.get(&feed_url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(changed.status(), 200, "a revocation changes the feed");
    let feed = changed.text().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while verifier.verify(access, now()).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the offline verifier never saw the revocation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(verifier.verify(access, now()), Err(VerifyError::Revoked));
    poller.abort();

    // A tampered or foreign feed is refused and changes nothing.
    let fresh = Verifier::from_issuer(&app.address, &app.address).await.unwrap();
    let signature_start = feed.rfind('.').unwrap() + 1;
    let mut tampered = feed.clone();
    let first = if &feed[signature_start..=signature_start] == "A" { "B" } else { "A" };
    tampered.replace_range(signature_start..=signature_start, first);
    assert_eq!(fresh.apply_revocation_feed(&tampered, now()), Err(VerifyError::BadSignature));
    assert!(fresh.verify(access, now()).is_ok());
    assert!(matches!(fresh.apply_revocation_feed(access, now()), Err(VerifyError::WrongType(_))));
    assert_eq!(fresh.apply_revocation_feed(&feed, now()), Ok(1));
    assert_eq!(fresh.verify(access, now()), Err(VerifyError::Revoked));
}

/// The feed is kept between requests (its lists grow with revocations and it is public), but never
/// past a change: a revocation is in the next one, and an entry that expired is gone from it.
#[tokio::test]
async fn the_revocation_feed_is_kept_until_a_revocation_or_an_expiry_changes_it() {
    let app = spawn_app_with(|settings| settings.access_token_ttl = 2, None).await;
    let client = app.confidential_client().await;
    let feed_url = app.url("/o/revoked_tokens");
    let fetch = || async {
        let response = app.http.get(&feed_url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let payload = jws_payload(&response.text().await.unwrap());
        let jtis: Vec<String> = payload["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["jti"].as_str().unwrap().into())
            .collect();
        (etag, jtis)
    };
    let jti = |token: &str| jws_payload(token)["jti"].as_str().unwrap().to_owned();
    let (empty, listed) = fetch().await;
    assert!(listed.is_empty());
    assert_eq!(fetch().await, (empty.clone(), vec![]), "the same bytes while nothing changes");

    let token = app.client_credentials_token(&client, None).await;
    assert_eq!(app.revoke(&client, &token, None).await.status(), 200);
    let (revoked, listed) = fetch().await;
    assert_eq!(listed, vec![jti(&token)], "the revocation is in the very next feed");
    assert_ne!(revoked, empty);
    // The token lives 2 s; once it has expired, the feed no longer lists it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (etag, listed) = fetch().await;
        if listed.is_empty() {
            assert_ne!(etag, revoked);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the expired token stayed in the feed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A poller asks with the `ETag` of the feed it applied last, and keeps that feed on a 304: a
/// poll of an unchanged feed does not download it (megabytes, when many tokens are revoked).
#[tokio::test]
async fn the_revocation_poller_revalidates_the_feed_instead_of_downloading_it_again() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let token = app.client_credentials_token(&client, None).await;
    assert_eq!(app.revoke(&client, &token, None).await.status(), 200);
    let feed = app.http.get(app.url("/o/revoked_tokens")).send().await.unwrap().text().await.unwrap();
    // A feed server that records the `If-None-Match` of every request.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let recorded = seen.clone();
    let feed_server = poem::endpoint::make_sync(move |request: poem::Request| {
        let tag = request.header("if-none-match").map(str::to_owned);
        recorded.lock().unwrap().push(tag.clone());
        match tag.as_deref() == Some("\"v1\"") {
            true => poem::Response::builder().status(poem::http::StatusCode::NOT_MODIFIED).finish(),
            false => poem::Response::builder().header("etag", "\"v1\"").body(feed.clone()),
        }
    });
    let url = serve(feed_server);
    let verifier = Arc::new(Verifier::from_issuer(&app.address, &app.address).await.unwrap());
    let poller = verifier.poll_revocations(&url, Duration::from_millis(50));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "the poller did not poll");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poller.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], None, "the first poll has nothing to revalidate");
    assert!(seen[1..].iter().all(|tag| tag.as_deref() == Some("\"v1\"")), "{seen:?}");
    assert_eq!(verifier.verify(&token, now()), Err(VerifyError::Revoked), "the feed applied first holds");
}

/// Serves `endpoint` on a free port; returns its base URL.
fn serve(endpoint: impl poem::Endpoint + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let acceptor = poem::listener::TcpAcceptor::from_std(listener).unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(endpoint));
    format!("http://{address}")
}

#[tokio::test]
async fn the_example_resource_server_protects_its_endpoint_with_the_extractor() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let verifier = Arc::new(Verifier::from_issuer(&app.address, &app.address).await.unwrap());
    let hello = format!("{}/hello", serve(resource_server::app(verifier)));

    let read = app.client_credentials_token(&client, Some("read")).await;
    let response = app.http.get(&hello).bearer_auth(&read).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), format!("Hello, {}!", client.id));
    let bearer = format!("Bearer {read}");
    let response = app
        .http
        .get(&hello)
        .header("authorization", bearer.as_str())
        .header("authorization", bearer.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "two Authorization headers (RFC 6750 §3.1 invalid_request)");
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_request\""));

    let response = app.http.get(&hello).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"api\"");

    let response = app.http.get(&hello).bearer_auth("garbage").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));

    let write = app.client_credentials_token(&client, Some("write")).await;
    let response = app.http.get(&hello).bearer_auth(&write).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"read\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn the_extractor_takes_a_form_body_token_and_leaves_the_body_to_the_handler() {
    #[poem::handler]
    fn echo(token: portcullis::verify::poem::VerifiedToken, body: String) -> String {
        format!("{} {body}", token.0.client_id)
    }
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    let verifier = Arc::new(Verifier::from_issuer(&app.address, &app.address).await.unwrap());
    let routes = poem::Route::new().at("/echo", poem::post(echo).get(echo).put(echo));
    let url = format!("{}/echo", serve(poem::EndpointExt::data(routes, verifier)));
    let token = &app.client_credentials_token(&client, None).await;
    let form = |body: String| {
        app.http
            .request(reqwest::Method::POST, &url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };

    // RFC 6750 §2.2: a form's access_token, and the handler still reads the whole body.
    let body = format!("note=hi&access_token={token}");
    let response = form(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), format!("{} {body}", client.id));
    // With the token in the header, a form without one still arrives whole.
    let response = form("note=hi".into()).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), format!("{} note=hi", client.id));
    // RFC 6750 §2, §3.1: the token both in the header and in the form is invalid_request, even
    // when both are the same good token.
    for body in [format!("note=hi&access_token={token}"), "access_token=other".into()] {
        let response = form(body).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("error=\"invalid_request\""), "{challenge}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("both in the Authorization header and in the form body")
        );
    }
    // A form larger than the 64 KiB searched is left unread for the handler, whole.
    let large =
        format!("note={}&access_token={token}", "a".repeat(portcullis::verify::poem::MAX_FORM_BODY_BYTES));
    let response = form(large.clone()).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), format!("{} {large}", client.id));
    // A repeated token is invalid_request; an empty one is no token.
    let response = form(format!("access_token={token}&access_token={token}")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_request"));
    let response = form("access_token=".into()).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"api\"");
    let response = form("access_token=garbage".into()).send().await.unwrap();
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    // Not with GET (§2.2 "MUST NOT"), and not from a body that is not a form.
    let body = format!("access_token={token}");
    let response = app
        .http
        .get(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a GET's body is not read");
    let response =
        app.http.post(&url).header("content-type", "text/plain").body(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), 401, "only a form body is read");
    let response = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(body.clone())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a body that is not a form carries no second token");
    let response = app
        .http
        .put(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "any method with a body");
}

mod never_panics {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Arbitrary strings, and JWS-shaped strings with arbitrary (often valid base64) parts.
        #[test]
        fn the_verifier_refuses_garbage_without_panicking(
            garbage in "\\PC{0,400}",
            header in "[A-Za-z0-9_-]{0,80}",
            payload in "[A-Za-z0-9_-]{0,200}",
            signature in "[A-Za-z0-9_-]{0,100}",
        ) {
            let keys = super::key_pair("k1");
            let verifier = super::verifier(&keys);
            let now = portcullis::startup::now();
            prop_assert!(verifier.verify(&garbage, now).is_err());
            let shaped = format!("{header}.{payload}.{signature}");
            prop_assert!(verifier.verify(&shaped, now).is_err());
            prop_assert!(verifier.apply_revocation_feed(&garbage, now).is_err());
        }
    }
}
