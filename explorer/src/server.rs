//! The routes: pages, fragments, JSON, server-sent events and actions, behind the explorer's checks
//! (authentication, host, the `X-Explorer` header on actions) and security headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde_json::{Value, json};
use temporalio_client::Client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::html::{self, enc};
use crate::jobs::Jobs;
use crate::{Config, data, render};

/// The most event streams open at once (more are answered 503; the browser retries).
pub const MAX_STREAMS: usize = 64;
/// How long one event stream lasts at most (the browser then reconnects).
const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// The most tree walks at once (a page waits for its turn, up to [`WALK_WAIT`]).
const MAX_WALKS: usize = 4;
const WALK_WAIT: Duration = Duration::from_secs(20);
/// The cookie that holds the explorer's session value (set by `POST /login`).
const COOKIE: &str = "stateful_explorer";
/// Failed logins from one address within [`LOGIN_WINDOW`] before `/login` answers 429.
const MAX_LOGIN_FAILURES: u32 = 10;
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// How long a tree walk for a page may take (a larger tree is shown in part, and says so).
pub const WALK_LIMIT: Duration = Duration::from_secs(30);

/// What every handler shares.
pub(crate) struct App {
    pub client: Client,
    pub config: Config,
    streams: Arc<Semaphore>,
    walks: Semaphore,
    pub jobs: Jobs,
    /// Failed logins by address: the window's start and the count.
    login_failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

type S = State<Arc<App>>;

pub(crate) fn router(client: Client, config: Config) -> Router {
    let app = Arc::new(App {
        client,
        config,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        walks: Semaphore::new(MAX_WALKS),
        jobs: Jobs::default(),
        login_failures: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(trees_page))
        .route("/tree/{wid}", get(tree_page))
        .route("/entity/{wid}", get(entity_page))
        .route("/fragment/trees", get(trees_fragment))
        .route("/fragment/tree/{wid}", get(tree_fragment))
        .route("/fragment/entity/{wid}", get(entity_fragment))
        .route("/events/trees", get(trees_events))
        .route("/events/tree/{wid}", get(tree_events))
        .route("/events/entity/{wid}", get(entity_events))
        .route("/api/trees", get(trees_json))
        .route("/api/tree/{wid}", get(tree_json))
        .route("/api/entity/{wid}", get(entity_json))
        .route("/api/jobs/{id}", get(job_json))
        .route("/api/action/{wid}/{action}", post(action))
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout))
        .route("/static/explorer.css", get(css))
        .route("/static/explorer.js", get(js))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Html(render::error_page("Not found", "There is no such page.")),
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), checks))
        .with_state(app)
}

/// The security headers every answer gets.
pub(crate) fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// True when `host` (a `Host` header) names a loopback host.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a request presents: the token of `Authorization: Bearer`, else the login cookie's value.
enum Presented {
    Token(String),
    Session(String),
}

fn presented(h: &HeaderMap) -> Option<Presented> {
    if let Some(t) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(Presented::Token(t.to_string()));
    }
    cookie(h).map(Presented::Session)
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wants_json(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/events/") || path.starts_with("/fragment/")
}

fn refuse(path: &str, status: StatusCode, message: &str) -> Response {
    if wants_json(path) {
        (status, axum::Json(json!({"error": message}))).into_response()
    } else if status == StatusCode::UNAUTHORIZED {
        (status, Html(render::login_page(message))).into_response()
    } else {
        (status, Html(render::error_page("Not allowed", message))).into_response()
    }
}

/// Host, authentication and the actions' header, then the security headers.
async fn checks(State(app): S, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if app.config.loopback {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !loopback_host(host) {
            return secure(refuse(
                &path,
                StatusCode::FORBIDDEN,
                "this explorer serves loopback host names only (localhost, 127.0.0.1, [::1])",
            ));
        }
    }
    let open = path.starts_with("/static/") || path == "/login" || path == "/logout";
    if let Some(auth) = &app.config.auth
        && !open
        && !presented(req.headers()).is_some_and(|p| match p {
            Presented::Token(t) => auth.token(&t),
            Presented::Session(v) => auth.session(&v),
        })
    {
        return secure(refuse(
            &path,
            StatusCode::UNAUTHORIZED,
            "this explorer needs its token: log in at /login (it sets a cookie), or send `Authorization: Bearer <token>`",
        ));
    }
    // The login form is the one POST a browser sends without the header (it sets nothing but the
    // caller's own cookie, and only with the token).
    if req.method() == Method::POST
        && path != "/login"
        && req
            .headers()
            .get("x-explorer")
            .and_then(|v| v.to_str().ok())
            != Some("1")
    {
        return secure(refuse(
            &path,
            StatusCode::FORBIDDEN,
            "actions need the header `X-Explorer: 1`",
        ));
    }
    secure(next.run(req).await)
}

async fn login_form(State(app): S) -> Response {
    if app.config.auth.is_none() {
        return Redirect::to("/").into_response();
    }
    Html(render::login_page("Paste the explorer's token.")).into_response()
}

/// The value of `key` in a form-encoded body (`+` as a space, percent-decoded).
fn form_value(body: &[u8], key: &str) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

impl App {
    /// True when `ip` failed to log in too often lately.
    fn login_blocked(&self, ip: IpAddr) -> bool {
        let g = self
            .login_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        g.get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < LOGIN_WINDOW && *n >= MAX_LOGIN_FAILURES)
    }

    fn login_failed(&self, ip: IpAddr) {
        let mut g = self
            .login_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if g.len() > 10_000 {
            g.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
        }
        let e = g.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= LOGIN_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

/// `POST /login` (a form with `token`): sets the session cookie and goes to `/` (303); at most
/// [`MAX_LOGIN_FAILURES`] failures a minute from one address.
async fn login(State(app): S, req: Request) -> Response {
    let Some(auth) = &app.config.auth else {
        return Redirect::to("/").into_response();
    };
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if app.login_blocked(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from_static("60"))],
            Html(render::login_page(
                "Too many failed logins from your address: try again in a minute.",
            )),
        )
            .into_response();
    }
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    match form_value(&body, "token") {
        Some(t) if auth.token(t.trim()) => {
            let mut r = Redirect::to("/").into_response();
            let secure = if app.config.secure_cookie {
                "; Secure"
            } else {
                ""
            };
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
                auth.session_cookie()
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        _ => {
            app.login_failed(ip);
            (
                StatusCode::UNAUTHORIZED,
                Html(render::login_page("Wrong or missing token.")),
            )
                .into_response()
        }
    }
}

async fn logout() -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "stateful_explorer=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn css() -> Response {
    let mut css = String::from(html::CSS);
    for l in 0..=40 {
        css.push_str(&format!(
            "ul.outline li.lvl-{l} {{ padding-left: {}rem; }}\n",
            f64::from(l) * 1.2
        ));
    }
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        html::JS,
    )
        .into_response()
}

/// `entity` and `status` from the query string (empty ones as none), and `closed=1` (closed
/// workflows too).
fn filters(q: &HashMap<String, String>) -> (Option<String>, Option<String>, bool) {
    let f = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    (
        f("entity"),
        f("status"),
        f("closed").as_deref() == Some("1"),
    )
}

fn failure_page(title: &str, e: &anyhow::Error) -> Response {
    let status = if data::not_found(e) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    let msg = if status == StatusCode::NOT_FOUND {
        format!("No such workflow: {e:#}")
    } else {
        format!("{e:#}")
    };
    (status, Html(render::error_page(title, &msg))).into_response()
}

fn failure_json(e: &anyhow::Error) -> Response {
    let status = if data::not_found(e) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, axum::Json(json!({"error": format!("{e:#}")}))).into_response()
}

async fn trees_page(State(app): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let (entity, status, closed) = filters(&q);
    match data::trees(&app.client, entity.as_deref(), status.as_deref(), closed).await {
        Ok(t) => Html(render::trees_page(
            &t,
            entity.as_deref(),
            status.as_deref(),
            closed,
        ))
        .into_response(),
        Err(e) => failure_page("Trees", &e),
    }
}

async fn trees_fragment(State(app): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let (entity, status, closed) = filters(&q);
    match data::trees(&app.client, entity.as_deref(), status.as_deref(), closed).await {
        Ok(t) => Html(render::trees_fragment(
            &t,
            entity.as_deref(),
            status.as_deref(),
            closed,
        ))
        .into_response(),
        Err(e) => failure_json(&e),
    }
}

async fn trees_json(State(app): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let (entity, status, closed) = filters(&q);
    match data::trees(&app.client, entity.as_deref(), status.as_deref(), closed).await {
        Ok(t) => axum::Json(t.to_json()).into_response(),
        Err(e) => failure_json(&e),
    }
}

/// Walks a tree within the explorer's limit of walks at once; `Err` when the root does not answer
/// (the error says whether it exists).
async fn walk(app: &App, wid: &str) -> anyhow::Result<crate::graph::Graph> {
    let _permit = tokio::time::timeout(WALK_WAIT, app.walks.acquire())
        .await
        .map_err(|_| anyhow::anyhow!("too many trees are being walked: try again in a moment"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let g = data::tree(&app.client, wid, tokio::time::Instant::now() + WALK_LIMIT).await;
    if let Some(root) = g.get(wid)
        && root.status == "unreachable"
    {
        anyhow::bail!(
            "{}",
            root.error
                .clone()
                .unwrap_or_else(|| "it does not answer".into())
        );
    }
    Ok(g)
}

async fn tree_page(State(app): S, Path(wid): Path<String>) -> Response {
    match walk(&app, &wid).await {
        Ok(g) => Html(render::tree_page(&g)).into_response(),
        Err(e) => failure_page(&format!("Tree {wid}"), &e),
    }
}

async fn tree_fragment(State(app): S, Path(wid): Path<String>) -> Response {
    match walk(&app, &wid).await {
        Ok(g) => Html(render::tree_fragment(&g)).into_response(),
        Err(e) => failure_json(&e),
    }
}

async fn tree_json(State(app): S, Path(wid): Path<String>) -> Response {
    match walk(&app, &wid).await {
        Ok(g) => axum::Json(g.to_json()).into_response(),
        Err(e) => failure_json(&e),
    }
}

/// `{ui}/namespaces/{ns}/workflows/{wid}`.
pub(crate) fn ui_link(config: &Config, wid: &str) -> String {
    format!(
        "{}/namespaces/{}/workflows/{}",
        config.temporal_ui_url.trim().trim_end_matches('/'),
        enc(&config.namespace),
        enc(wid)
    )
}

async fn entity_page(State(app): S, Path(wid): Path<String>) -> Response {
    match data::entity(&app.client, &wid).await {
        Ok(e) => Html(render::entity_page(&e, &ui_link(&app.config, &wid))).into_response(),
        Err(e) => failure_page(&wid, &e),
    }
}

async fn entity_fragment(State(app): S, Path(wid): Path<String>) -> Response {
    match data::entity(&app.client, &wid).await {
        Ok(e) => Html(render::entity_fragment(&e)).into_response(),
        Err(e) => failure_json(&e),
    }
}

async fn entity_json(State(app): S, Path(wid): Path<String>) -> Response {
    match data::entity(&app.client, &wid).await {
        Ok(e) => {
            let mut v = e.to_json();
            v["temporalUiUrl"] = json!(ui_link(&app.config, &wid));
            axum::Json(v).into_response()
        }
        Err(e) => failure_json(&e),
    }
}

/// An event stream that polls `stamp` every `every` and says `changed` when it differs from the
/// last one (`ready` first), at most once every `min_gap`. It holds `permit` (one of [`MAX_STREAMS`]) and ends after
/// [`STREAM_LIFETIME`]; it polls only while the client reads it (dropped with the connection), so
/// no poller outlives its page.
fn poll_stream<F, Fut>(
    permit: OwnedSemaphorePermit,
    every: Duration,
    min_gap: Duration,
    stamp: F,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    let started = Instant::now();
    futures::stream::unfold(
        (permit, stamp, None::<String>, None::<Instant>),
        move |(permit, mut stamp, last, sent)| async move {
            let first = last.is_none();
            let mut last = last;
            loop {
                if !first {
                    tokio::time::sleep(every).await;
                    if let Some(sent) = sent {
                        tokio::time::sleep(min_gap.saturating_sub(sent.elapsed())).await;
                    }
                }
                if started.elapsed() > STREAM_LIFETIME {
                    return None;
                }
                let now = stamp().await;
                if first {
                    let ev = Event::default()
                        .event("ready")
                        .data("ready")
                        .retry(Duration::from_secs(3));
                    return Some((Ok(ev), (permit, stamp, Some(now), None)));
                }
                if last.as_deref() != Some(now.as_str()) {
                    last = Some(now);
                    let ev = Event::default().event("changed").data("changed");
                    return Some((Ok(ev), (permit, stamp, last, Some(Instant::now()))));
                }
            }
        },
    )
}

#[allow(clippy::result_large_err)]
fn stream_permit(app: &App) -> Result<OwnedSemaphorePermit, Response> {
    app.streams.clone().try_acquire_owned().map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"error": format!("too many live views open (at most {MAX_STREAMS})")}),
            ),
        )
            .into_response()
    })
}

fn sse<St>(stream: St) -> Response
where
    St: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}

async fn entity_events(State(app): S, Path(wid): Path<String>) -> Response {
    let permit = match stream_permit(&app) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let client = app.client.clone();
    let every = Duration::from_secs(2);
    sse(poll_stream(permit, every, every, move || {
        let (client, wid) = (client.clone(), wid.clone());
        async move { data::entity_stamp(&client, &wid).await }
    }))
}

async fn tree_events(State(app): S, Path(wid): Path<String>) -> Response {
    let permit = match stream_permit(&app) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let client = app.client.clone();
    let (every, gap) = (Duration::from_secs(3), Duration::from_secs(10));
    sse(poll_stream(permit, every, gap, move || {
        let (client, wid) = (client.clone(), wid.clone());
        async move { data::tree_stamp(&client, &wid).await }
    }))
}

async fn trees_events(State(app): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let permit = match stream_permit(&app) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (entity, status, closed) = filters(&q);
    let client = app.client.clone();
    let every = Duration::from_secs(5);
    sse(poll_stream(permit, every, every, move || {
        let (client, entity, status) = (client.clone(), entity.clone(), status.clone());
        async move { data::trees_stamp(&client, entity.as_deref(), status.as_deref(), closed).await }
    }))
}

async fn job_json(State(app): S, Path(id): Path<u64>) -> Response {
    match app.jobs.get(id) {
        Some(j) => axum::Json(j).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such job (jobs are kept for a while, then forgotten)"})),
        )
            .into_response(),
    }
}

async fn action(
    State(app): S,
    Path((wid, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": m}))).into_response();
    // The body is parsed here, never echoed: a parse error names no part of it (it may hold a
    // token).
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return bad("the body must be a JSON object"),
        }
    };
    let kind = match action.as_str() {
        "pause" | "resume" | "refresh" => crate::jobs::Kind::Signal(action.clone()),
        "validate" => crate::jobs::Kind::Validate {
            tree: body["tree"] != json!(false),
        },
        "rotate" => match body["token"].as_str().map(str::trim) {
            Some(t) if !t.is_empty() => crate::jobs::Kind::Rotate(stateful_core::Secret::new(t)),
            _ => return bad("rotate needs {\"token\": \"<the new token>\"}"),
        },
        _ => return bad("the action is one of pause, resume, refresh, validate, rotate"),
    };
    match app.jobs.start(app.client.clone(), wid, kind) {
        Ok(v) => (StatusCode::ACCEPTED, axum::Json(v)).into_response(),
        Err(m) => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": m})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognized() {
        for h in [
            "localhost",
            "localhost:8089",
            "127.0.0.1:1",
            "[::1]:80",
            "app.localhost",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "evil.example:8089",
            "127.0.0.1.evil.example",
            "[::2]:1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; stateful_explorer=t%3Bx%20y"),
        );
        assert!(matches!(presented(&h), Some(Presented::Session(v)) if v == "t;x y"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer zz"));
        assert!(matches!(presented(&h), Some(Presented::Token(t)) if t == "zz"));
        assert!(presented(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_login_form_is_decoded() {
        assert_eq!(
            form_value(b"a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_value(b"a=1", "token"), None);
    }
}
