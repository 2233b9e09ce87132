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

/// An API whose `/gate` answers after 200 ms (502 while `fail`), counting the requests that reach
/// it and the bearer tokens they carry; `/status/{n}` answers `n`, `/redirect?to=URL` redirects.
#[derive(Clone, Default)]
struct Gate {
    hits: Arc<AtomicUsize>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    tokens: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

impl Gate {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

async fn serve_gate(g: Gate) -> (String, u16) {
    async fn gate(State(g): State<Gate>, h: HeaderMap) -> axum::response::Response {
        g.hits.fetch_add(1, Ordering::SeqCst);
        g.tokens.lock().unwrap().push(bearer(&h));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if g.fail.load(Ordering::SeqCst) {
            StatusCode::BAD_GATEWAY.into_response()
        } else {
            axum::Json(json!({"id": "g"})).into_response()
        }
    }
    async fn status(
        State(g): State<Gate>,
        axum::extract::Path(n): axum::extract::Path<u16>,
    ) -> axum::response::Response {
        g.hits.fetch_add(1, Ordering::SeqCst);
        let headers = match n {
            429 => vec![("retry-after", "999999")],
            503 => vec![("retry-after", "Fri, 31 Dec 2100 23:59:59 GMT")],
            _ => vec![],
        };
        let mut r = StatusCode::from_u16(n).unwrap().into_response();
        for (k, v) in headers {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    }
    async fn redirect(
        State(g): State<Gate>,
        axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
    ) -> axum::response::Response {
        g.hits.fetch_add(1, Ordering::SeqCst);
        (StatusCode::FOUND, [("location", q["to"].clone())]).into_response()
    }
    let app = Router::new()
        .route("/gate", get(gate))
        .route("/status/{n}", get(status))
        .route("/redirect", get(redirect))
        .with_state(g);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), addr.port())
}

fn breaker_cfg(threshold: u32, cool_down_ms: u64) -> HttpConfig {
    HttpConfig {
        breaker_threshold: threshold,
        breaker_cool_down: Duration::from_millis(cool_down_ms),
        ..HttpConfig::default()
    }
}

/// A resolver that answers `addrs` for every name.
fn resolving_to(addrs: &[&str]) -> stateful_activities::Lookup {
    use futures::FutureExt;
    let ips: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    Arc::new(move |_name: String| {
        let ips = ips.clone();
        async move { Ok(ips) }.boxed()
    })
}

/// `n` concurrent loads of `url`.
async fn burst(
    a: &HttpActivities,
    url: &str,
    n: usize,
) -> Vec<Result<stateful_activities::LoadOutput, HttpError>> {
    let inputs: Vec<LoadInput> = (0..n).map(|_| load(url.to_string(), "t")).collect();
    futures::future::join_all(inputs.iter().map(|i| a.load(i))).await
}

fn is_circuit_open(r: &Result<stateful_activities::LoadOutput, HttpError>) -> bool {
    matches!(r, Err(HttpError::CircuitOpen { .. }))
}

#[tokio::test]
async fn after_the_cool_down_exactly_one_probe_reaches_the_host() {
    use stateful_activities::Circuit;
    let g = Gate::default();
    let (base, _) = serve_gate(g.clone()).await;
    let url = format!("{base}/gate");
    let a = HttpActivities::new(breaker_cfg(2, 400));
    g.fail(true);
    for _ in 0..2 {
        assert!(matches!(
            a.load(&load(url.clone(), "t")).await,
            Err(HttpError::Transient { status: 502, .. })
        ));
    }
    assert!(is_circuit_open(&a.load(&load(url.clone(), "t")).await));
    assert_eq!(g.hits(), 2);
    // After the cool-down, of 8 concurrent calls one probes; its success closes the circuit.
    tokio::time::sleep(Duration::from_millis(450)).await;
    g.fail(false);
    let all = burst(&a, &url, 8).await;
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 1, "{all:?}");
    assert_eq!(all.iter().filter(|r| is_circuit_open(r)).count(), 7);
    assert_eq!(g.hits(), 3, "only the probe reached the host");
    assert_eq!(a.breaker().circuit("127.0.0.1"), Circuit::Closed);
    let all = burst(&a, &url, 4).await;
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    assert_eq!(g.hits(), 7);
    // Open again; this time the probe fails, and the circuit opens for a whole cool-down.
    g.fail(true);
    for _ in 0..2 {
        let _ = a.load(&load(url.clone(), "t")).await;
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    let all = burst(&a, &url, 8).await;
    assert_eq!(
        all.iter()
            .filter(|r| matches!(r, Err(HttpError::Transient { status: 502, .. })))
            .count(),
        1,
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|r| is_circuit_open(r)).count(), 7);
    assert_eq!(g.hits(), 10);
    assert_eq!(a.breaker().circuit("127.0.0.1"), Circuit::Open);
    match a.load(&load(url.clone(), "t")).await {
        Err(HttpError::CircuitOpen { retry_in, .. }) => {
            assert!(
                retry_in > Duration::from_millis(100),
                "the cool-down restarted: {retry_in:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.hits(), 10);
}

#[tokio::test]
async fn the_breaker_tracks_a_bounded_number_of_hosts() {
    // 2,000 host names, all resolving to a closed port of 127.0.0.1: each fails and opens its circuit.
    let a = HttpActivities::with_lookup(breaker_cfg(1, 60_000), resolving_to(&["127.0.0.1"]));
    for i in 0..2_000 {
        let r = a.load(&load(format!("http://h{i}.test:1/x"), "t")).await;
        assert!(matches!(r, Err(HttpError::Network { .. })), "{r:?}");
        assert!(a.breaker().tracked_hosts() <= stateful_activities::MAX_TRACKED_HOSTS);
    }
    assert_eq!(
        a.breaker().tracked_hosts(),
        stateful_activities::MAX_TRACKED_HOSTS
    );
    assert!(is_circuit_open(
        &a.load(&load("http://h1999.test:1/x".into(), "t")).await
    ));
}

#[tokio::test]
async fn the_callers_own_errors_never_open_the_circuit() {
    let g = Gate::default();
    let (base, _) = serve_gate(g.clone()).await;
    // One failure would open it.
    let a = HttpActivities::new(breaker_cfg(1, 60_000));
    // A token that cannot be put in a header: Unauthorized (a new token heals it), no request made.
    for bad in ["bad\ntoken", "tab\there", "tökén-secret", "nul\0"] {
        let e = a
            .load(&load(format!("{base}/gate"), bad))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::MalformedToken { .. }), "{e}");
        assert_eq!(
            (e.type_name().as_str(), e.retryable()),
            ("Unauthorized", false)
        );
        assert!(e.to_string().contains("rotate the apiToken"), "{e}");
        assert!(!format!("{e} {e:?}").contains("secret"), "{e:?}");
    }
    assert_eq!(g.hits(), 0);
    // 401, 403, 404, 400, 422: the host answered.
    for s in [401, 403, 404, 400, 422] {
        let _ = a.load(&load(format!("{base}/status/{s}"), "t")).await;
    }
    assert_eq!(g.hits(), 5);
    assert!(a.breaker().open_hosts().is_empty());
    assert!(a.load(&load(format!("{base}/gate"), "t")).await.is_ok());
    // A 5xx does count.
    let _ = a.load(&load(format!("{base}/status/500"), "t")).await;
    assert!(is_circuit_open(
        &a.load(&load(format!("{base}/gate"), "t")).await
    ));
}

#[tokio::test]
async fn retry_after_is_capped() {
    let g = Gate::default();
    let (base, _) = serve_gate(g.clone()).await;
    let a = HttpActivities::new(breaker_cfg(100, 60_000));
    for s in [429, 503] {
        match a.load(&load(format!("{base}/status/{s}"), "t")).await {
            Err(HttpError::Transient { retry_after, .. }) => {
                assert_eq!(
                    retry_after,
                    Some(stateful_activities::MAX_RETRY_AFTER),
                    "{s}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        stateful_activities::MAX_RETRY_AFTER,
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn a_host_outside_the_allow_list_is_refused_before_any_request() {
    let g = Gate::default();
    let (base, port) = serve_gate(g.clone()).await;
    let listed = |hosts: &[&str]| {
        HttpActivities::new(HttpConfig {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..HttpConfig::default()
        })
    };
    let a = listed(&["api.example.com", "*.example.org"]);
    let e = a
        .load(&load(format!("{base}/gate"), "secret-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HttpError::Refused { .. })
            && e.type_name() == "BadInput"
            && !e.retryable()
            && e.to_string().contains("`127.0.0.1`")
            && e.to_string().contains("--api-allow-host"),
        "{e}"
    );
    assert_eq!(g.hits(), 0, "no request made");
    assert!(a.breaker().open_hosts().is_empty());
    // Listed (with its port, or without a port): allowed.
    for hosts in [vec![format!("127.0.0.1:{port}")], vec!["127.0.0.1".into()]] {
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        assert!(
            listed(&hosts)
                .load(&load(format!("{base}/gate"), "t"))
                .await
                .is_ok()
        );
    }
    let e = listed(&[&format!("127.0.0.1:{}", port.wrapping_add(1))])
        .load(&load(format!("{base}/gate"), "t"))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Refused { .. }), "{e}");
    // Only http and https.
    let e = HttpActivities::new(HttpConfig::default())
        .load(&load(format!("ftp://127.0.0.1:{port}/gate"), "t"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only http and https"), "{e}");
    assert_eq!(g.hits(), 2);
}

#[tokio::test]
async fn link_local_and_metadata_destinations_are_refused_unless_listed_exactly() {
    let g = Gate::default();
    let (_, port) = serve_gate(g.clone()).await;
    let a = HttpActivities::new(HttpConfig::default());
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/",
        "http://instance-data/",
    ] {
        let t0 = std::time::Instant::now();
        let e = a.load(&load(url.into(), "t")).await.unwrap_err();
        assert!(
            matches!(e, HttpError::Refused { .. })
                && e.to_string().contains("link-local or cloud-metadata"),
            "{url}: {e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "refused at once");
    }
    // A name resolving to a link-local address (among others) is refused at resolution.
    let lookup = resolving_to(&["127.0.0.1", "169.254.7.7"]);
    let url = format!("http://api.test:{port}/gate");
    let a = HttpActivities::with_lookup(HttpConfig::default(), lookup.clone());
    let e = a.load(&load(url.clone(), "t")).await.unwrap_err();
    assert!(
        matches!(e, HttpError::Refused { .. })
            && e.to_string().contains("resolves to 169.254.7.7")
            && !e.retryable(),
        "{e}"
    );
    assert!(a.breaker().open_hosts().is_empty());
    let wildcard = HttpActivities::with_lookup(
        HttpConfig {
            allowed_hosts: vec!["*.test".into()],
            ..HttpConfig::default()
        },
        lookup.clone(),
    );
    assert!(matches!(
        wildcard.load(&load(url.clone(), "t")).await,
        Err(HttpError::Refused { .. })
    ));
    assert_eq!(g.hits(), 0);
    // Listed exactly: allowed (the first address answers).
    let exact = HttpActivities::with_lookup(
        HttpConfig {
            allowed_hosts: vec!["api.test".into()],
            ..HttpConfig::default()
        },
        lookup,
    );
    assert!(exact.load(&load(url, "t")).await.is_ok());
    assert_eq!(g.hits(), 1);
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed() {
    let a_api = Gate::default();
    let (a_base, _) = serve_gate(a_api.clone()).await;
    let elsewhere = Gate::default();
    let (_, b_port) = serve_gate(elsewhere.clone()).await;
    let acts = HttpActivities::new(HttpConfig::default());
    for to in [
        format!("http://localhost:{b_port}/gate"),
        format!("http://127.0.0.1:{b_port}/gate"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let e = acts
            .load(&load(format!("{a_base}/redirect?to={to}"), "secret-token"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, HttpError::Refused { .. })
                && e.to_string()
                    .contains("redirects are followed only within the same host")
                && !e.retryable(),
            "{to}: {e}"
        );
    }
    assert_eq!(
        elsewhere.hits(),
        0,
        "the other host saw no request, so no token"
    );
    assert!(acts.breaker().open_hosts().is_empty());
    // Within the same host: followed, with the token.
    let got = acts
        .load(&load(format!("{a_base}/redirect?to=/gate"), "secret-token"))
        .await
        .unwrap();
    assert_eq!(got.data, Some(json!({"id": "g"})));
    assert_eq!(
        a_api.tokens.lock().unwrap().as_slice(),
        [Some("secret-token".to_string())]
    );
}
