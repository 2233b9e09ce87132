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
                partial: false,
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
                partial: false,
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

/// An API of `n` entities of `pad` bytes each: `/e/{i}`; `/huge` answers `bytes` of a JSON string,
/// `/grows` a body under 64 KiB whose numbers re-serialize 4 times longer.
async fn serve_sized(pad: usize, huge: usize) -> String {
    let app = Router::new()
        .route(
            "/e/{i}",
            get(
                move |axum::extract::Path(i): axum::extract::Path<u32>| async move {
                    axum::Json(json!({"id": i, "pad": "x".repeat(pad)}))
                },
            ),
        )
        .route(
            "/huge",
            get(move || async move { format!("\"{}\"", "y".repeat(huge - 2)) }),
        )
        .route(
            "/grows",
            get(|| async { format!("[{}1e9]", "1e9,".repeat(16_000)) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn env_with(cfg: HttpConfig) -> temporalio_sdk::testing::ActivityEnvironment {
    temporalio_sdk::testing::ActivityEnvironment::builder_with_default()
        .register_activities(HttpActivities::new(cfg))
        .build()
}

#[tokio::test]
async fn the_default_body_limit_keeps_one_answer_within_the_payload_limit() {
    use stateful_core::load::{DEFAULT_MAX_RESULT_BYTES, PAYLOAD_LIMIT_BYTES, json_len};
    let cfg = HttpConfig::default();
    assert!(cfg.max_body_bytes <= 1_900_000);
    assert!(cfg.max_result_bytes < PAYLOAD_LIMIT_BYTES);
    assert_eq!(cfg.max_result_bytes, DEFAULT_MAX_RESULT_BYTES);
    let base = serve_sized(10, cfg.max_body_bytes).await;
    let env = env_with(cfg.clone());
    // The largest answer accepted, as `loadData`'s result: within the result budget.
    let out = env
        .run(HttpActivities::load_data, load(format!("{base}/huge"), "t"))
        .await
        .unwrap();
    assert!(json_len(&out) <= cfg.max_result_bytes, "{}", json_len(&out));
    // One byte more is refused before it is read to the end.
    let over = serve_sized(10, cfg.max_body_bytes + 1).await;
    let e = HttpActivities::new(cfg)
        .load(&load(format!("{over}/huge"), "t"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HttpError::BadBody { .. }) && !e.retryable(),
        "{e}"
    );
}

#[tokio::test]
async fn a_result_over_the_budget_fails_clearly_and_is_not_retried() {
    let base = serve_sized(10, 100).await;
    // `/grows` is under the body limit, but its result is 4 times longer: over the budget.
    let env = env_with(HttpConfig {
        max_body_bytes: 64 * 1024,
        max_result_bytes: 100_000,
        ..HttpConfig::default()
    });
    let e = env
        .run(
            HttpActivities::load_data,
            load(format!("{base}/grows"), "secret-token"),
        )
        .await
        .unwrap_err();
    let text = format!("{e:?}");
    assert!(
        text.contains("ResultTooLarge")
            && text.contains("limit: 100000")
            && text.contains("non_retryable: true")
            && !text.contains("secret-token"),
        "{text}"
    );
    let e = env
        .run(
            HttpActivities::http_request,
            stateful_activities::RequestInput {
                method: "GET".into(),
                url: format!("{base}/grows"),
                headers: BTreeMap::new(),
                body: None,
                token: None,
                timeout_ms: None,
            },
        )
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("ResultTooLarge"), "{e:?}");
}

#[tokio::test]
async fn a_partial_batch_answers_the_urls_that_fit_and_a_whole_one_refuses_more() {
    use stateful_activities::BatchInput;
    use stateful_core::load::{BatchLoad, json_len};
    let base = serve_sized(1_000, 100).await;
    let limit = 10_000;
    let env = env_with(HttpConfig {
        max_result_bytes: limit,
        ..HttpConfig::default()
    });
    let urls: Vec<String> = (0..25).map(|i| format!("{base}/e/{i}")).collect();
    let batch = |urls: Vec<String>, partial: bool| BatchInput {
        urls,
        token: None,
        fail_fast: true,
        partial,
    };
    // Whole: 25 answers of 1 KB do not fit 10 KB.
    let e = env
        .run(HttpActivities::load_batch, batch(urls.clone(), false))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("ResultTooLarge"), "{e:?}");
    // Partial: the first answers that fit, in order.
    let out = env
        .run(HttpActivities::load_batch, batch(urls.clone(), true))
        .await
        .unwrap();
    assert!((5..25).contains(&out.len()), "{}", out.len());
    assert!(json_len(&out) <= limit);
    assert_eq!(out[0]["data"]["id"], json!(0));
    // A workflow's batch load over several activities: every URL answered, each result within.
    let mut plan = BatchLoad::new(
        urls[0].clone(),
        urls[1..]
            .iter()
            .map(|u| ("E".to_string(), u.clone()))
            .collect(),
    );
    while let Some(input) = plan.next_input(None) {
        let out = env.run(HttpActivities::load_batch, input).await.unwrap();
        assert!(json_len(&out) <= limit);
        plan.take(out).unwrap();
    }
    assert!(plan.activities() >= 3, "{}", plan.activities());
    let stateful_core::load::Loaded::Many { own, related } = plan.finish() else {
        panic!("a batch");
    };
    assert_eq!(own.data.unwrap()["id"], json!(0));
    let ids: Vec<_> = related
        .iter()
        .map(|(_, o)| o.data.as_ref().unwrap()["id"].clone())
        .collect();
    assert_eq!(ids, (1..25).map(|i| json!(i)).collect::<Vec<_>>());
    // One answer larger than the whole budget fails, partial or not.
    let e = env
        .run(
            HttpActivities::load_batch,
            batch(vec![format!("{base}/grows")], true),
        )
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("ResultTooLarge"), "{e:?}");
}
