//! `/metrics` (Prometheus text format) and structured logs.

use crate::helpers::*;

#[tokio::test]
async fn metrics_count_requests_tokens_errors_and_store_size() {
    let app = spawn_app().await;
    let client = app.confidential_client().await;
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some(&client)).await.status(), 200);
    let wrong = TestClient { id: client.id.clone(), secret: Some("wrong".into()) };
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some(&wrong)).await.status(), 401);
    // RFC 6750 refusals at protected resources count too (only they answer these codes).
    assert_eq!(app.hello(Some("garbage")).await.status(), 401);
    let write = app.client_credentials_token(&client, Some("write")).await;
    assert_eq!(app.hello(Some(&write)).await.status(), 403);
    // So do the errors /o/authorize sends back by redirect.
    let mut params = app.authorization_params(&client, None);
    params.push(("prompt", "none"));
    assert!(location(&app.authorize(&params).await).contains("error=login_required"));

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert!(value("portcullis_http_requests_total{route=\"/o/token\",status=\"200\"}") >= 1.0);
    assert!(value("portcullis_http_requests_total{route=\"/o/token\",status=\"401\"}") >= 1.0);
    assert!(value("portcullis_http_request_duration_seconds_count{route=\"/o/token\"}") >= 2.0);
    assert!(value("portcullis_tokens_issued_total{grant_type=\"client_credentials\"}") >= 1.0);
    assert!(value("portcullis_oauth_errors_total{error=\"invalid_client\"}") >= 1.0);
    assert!(value("portcullis_oauth_errors_total{error=\"invalid_token\"}") >= 1.0);
    assert!(value("portcullis_oauth_errors_total{error=\"insufficient_scope\"}") >= 1.0);
    assert!(value("portcullis_oauth_errors_total{error=\"login_required\"}") >= 1.0);
    assert!(value("portcullis_store_size_bytes") > 0.0);
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (_, number) = line.rsplit_once(' ').unwrap();
        assert!(number.parse::<f64>().is_ok(), "every sample has a number: {line}");
    }
}
