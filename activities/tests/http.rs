//! The HTTP activities against a real HTTP server on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use stateful_activities::{HttpActivities, HttpConfig, HttpError, LoadInput};

#[derive(Clone, Default)]
struct Api {
    flaky_calls: Arc<AtomicUsize>,
}

fn bearer(h: &HeaderMap) -> Option<String> {
    h.get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

async fn user(h: HeaderMap) -> impl IntoResponse {
    match bearer(&h).as_deref() {
        Some("good-token") => (
            StatusCode::OK,
            axum::Json(json!({"id": "u1", "name": "Ann"})),
        )
            .into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn flaky(State(api): State<Api>) -> impl IntoResponse {
    if api.flaky_calls.fetch_add(1, Ordering::SeqCst) == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "3")],
            "busy",
        )
            .into_response()
    } else {
        axum::Json(json!({"data": {"id": "u2"}, "strategy": "$replace"})).into_response()
    }
}

async fn serve() -> String {
    let app = Router::new()
        .route("/users/u1", get(user))
        .route("/flaky", get(flaky))
        .route("/html", get(|| async { "<html>not json</html>" }))
        .route("/big", get(|| async { "x".repeat(5000) }))
        .route("/down", get(|| async { StatusCode::BAD_GATEWAY }))
        .route(
            "/list",
            get(|| async { axum::Json(json!([{"id": "a"}, {"id": "b"}])) }),
        )
        .with_state(Api::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn acts(max_body: usize, threshold: u32) -> HttpActivities {
    HttpActivities::new(HttpConfig {
        max_body_bytes: max_body,
        breaker_threshold: threshold,
        breaker_cool_down: Duration::from_secs(60),
        ..HttpConfig::default()
    })
}

fn load(url: String, token: &str) -> LoadInput {
    LoadInput {
        url,
        token: Some(stateful_activities::Secret::new(token)),
        timeout_ms: None,
    }
}

#[tokio::test]
async fn loads_with_the_bearer_token_and_classifies_failures() {
    let base = serve().await;
    let a = acts(1024, 100);
    let ok = a
        .load(&load(format!("{base}/users/u1"), "good-token"))
        .await
        .unwrap();
    assert_eq!(ok.data, Some(json!({"id": "u1", "name": "Ann"})));
    // 401: non-retryable "unauthorized", and the token is nowhere in the error.
    let e = a
        .load(&load(format!("{base}/users/u1"), "wrong-secret-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HttpError::Unauthorized { status: 401, .. }),
        "{e}"
    );
    assert!(!e.retryable());
    assert!(!format!("{e} {e:?}").contains("wrong-secret-token"));
    // 404: not found, not an error.
    let nf = a
        .load(&load(format!("{base}/users/nobody"), "good-token"))
        .await
        .unwrap();
    assert_eq!(nf.status, stateful_activities::LoadStatus::NotFound);
    // 503 with Retry-After, then success: retryable, with the delay.
    match a.load(&load(format!("{base}/flaky"), "t")).await {
        Err(HttpError::Transient {
            status: 503,
            retry_after,
            ..
        }) => assert_eq!(retry_after, Some(Duration::from_secs(3))),
        other => panic!("{other:?}"),
    }
    let again = a.load(&load(format!("{base}/flaky"), "t")).await.unwrap();
    assert_eq!(
        (again.data, again.strategy.as_deref()),
        (Some(json!({"id": "u2"})), Some("$replace"))
    );
    // Not JSON, too large: non-retryable with a clear message.
    let e = a
        .load(&load(format!("{base}/html"), "t"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HttpError::BadBody { .. }) && e.to_string().contains("not JSON"),
        "{e}"
    );
    let e = a.load(&load(format!("{base}/big"), "t")).await.unwrap_err();
    assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
    // Connection refused: retryable network error.
    let e = a
        .load(&load("http://127.0.0.1:1/x".into(), "t"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HttpError::Network { .. }) && e.retryable(),
        "{e}"
    );
    // A list is entity data too.
    let l = a.load(&load(format!("{base}/list"), "t")).await.unwrap();
    assert_eq!(l.data, Some(json!([{"id": "a"}, {"id": "b"}])));
}

#[tokio::test]
async fn a_failing_host_opens_its_circuit_and_fails_fast() {
    let base = serve().await;
    let a = acts(1024, 3);
    for _ in 0..3 {
        assert!(matches!(
            a.load(&load(format!("{base}/down"), "t")).await,
            Err(HttpError::Transient { status: 502, .. })
        ));
    }
    let e = a
        .load(&load(format!("{base}/users/u1"), "good-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::CircuitOpen { .. }), "{e}");
    assert_eq!(a.breaker().open_hosts(), ["127.0.0.1"]);
    // Errors of the caller's own making (401, 4xx) do not count against the host.
    let b = acts(1024, 2);
    for _ in 0..3 {
        let _ = b.load(&load(format!("{base}/users/u1"), "bad")).await;
    }
    assert!(b.breaker().open_hosts().is_empty());
}

#[tokio::test]
async fn generic_requests_send_method_headers_and_body() {
    let app = Router::new().route(
        "/echo",
        axum::routing::post(|h: HeaderMap, body: axum::Json<serde_json::Value>| async move {
            axum::Json(json!({"x": h.get("x-test").and_then(|v| v.to_str().ok()), "auth": bearer(&h).is_some(), "body": body.0}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let a = acts(1024, 100);
    let mut headers = BTreeMap::new();
    headers.insert("x-test".to_string(), "1".to_string());
    let got = a
        .call(
            "post",
            &format!("http://{addr}/echo"),
            Some("tok"),
            &headers,
            Some(&json!({"a": 1})),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        (200, json!({"x": "1", "auth": true, "body": {"a": 1}}))
    );
    assert!(matches!(
        a.call("B@D", "http://x/", None, &headers, None, None).await,
        Err(HttpError::BadInput(_))
    ));
}

#[tokio::test]
async fn a_batch_answers_per_url_or_fails_fast() {
    use stateful_activities::BatchInput;
    use temporalio_sdk::testing::ActivityEnvironment;
    let base = serve().await;
    let env = ActivityEnvironment::builder_with_default()
        .register_activities(acts(1024, 100))
        .build();
    let urls = vec![
        format!("{base}/users/u1"),
        format!("{base}/list"),
        format!("{base}/users/nobody"),
        format!("{base}/html"),
    ];
    let out = env
        .run(
            HttpActivities::load_batch,
            BatchInput {
                urls: urls.clone(),
                token: Some(stateful_activities::Secret::new("good-token")),
                fail_fast: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["data"], json!({"id": "u1", "name": "Ann"}));
    assert_eq!(out[1]["data"], json!([{"id": "a"}, {"id": "b"}]));
    assert_eq!(out[2]["status"], json!("notFound"));
    assert_eq!(out[3]["error"], json!("BadBody"));
    // Fail-fast: the first failure fails the activity, non-retryable as a BadBody is.
    let e = env
        .run(
            HttpActivities::load_batch,
            BatchInput {
                urls,
                token: Some(stateful_activities::Secret::new("good-token")),
                fail_fast: true,
            },
        )
        .await
        .unwrap_err();
    let text = format!("{e:?}");
    assert!(
        text.contains("BadBody") && !text.contains("good-token"),
        "{text}"
    );
}
