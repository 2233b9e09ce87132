//! A fake entity API on a loopback address: serves JSON per path, checks bearer tokens, can answer
//! scripted failures, and records every request (path with its query string, and token) for the tests
//! to check.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// 200 with this raw body.
    Raw(String),
}

#[derive(Default)]
struct Inner {
    tokens: BTreeSet<String>,
    data: BTreeMap<String, Value>,
    script: BTreeMap<String, VecDeque<Reply>>,
    log: Vec<(String, Option<String>)>,
}

/// The fake API. Every test binds its own loopback address (`127.0.0.N`), so that the worker's
/// per-host circuit breaker keeps tests apart.
#[derive(Clone)]
pub struct FakeApi {
    /// `http://127.0.0.N:PORT`
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

fn bearer(h: &HeaderMap) -> Option<String> {
    h.get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

async fn handle(State(api): State<FakeApi>, uri: Uri, h: HeaderMap) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let token = bearer(&h);
    let mut inner = api.inner.lock().unwrap();
    inner.log.push((path.clone(), token.clone()));
    if !inner.tokens.is_empty() && !token.as_ref().is_some_and(|t| inner.tokens.contains(t)) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(r) = inner.script.get_mut(&path).and_then(|q| q.pop_front()) {
        return match r {
            Reply::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
            Reply::Raw(body) => (StatusCode::OK, body).into_response(),
        };
    }
    match inner.data.get(&path) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl FakeApi {
    /// Serves on `127.0.0.{octet}` (any free port).
    pub async fn start(octet: u8) -> anyhow::Result<FakeApi> {
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.".to_string() + &octet.to_string(), 0)).await?;
        let addr = listener.local_addr()?;
        let api = FakeApi {
            base: format!("http://{addr}"),
            inner: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(api)
    }

    /// Accept only these tokens (none: accept any request).
    pub fn accept(&self, tokens: &[&str]) {
        self.inner.lock().unwrap().tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Serve `body` at `path`.
    pub fn put(&self, path: &str, body: Value) {
        self.inner
            .lock()
            .unwrap()
            .data
            .insert(path.to_string(), body);
    }

    /// Answer the next requests of `path` with these replies first.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .script
            .insert(path.to_string(), replies.into());
    }

    /// The requests of `path` so far, with the token each carried.
    pub fn requests(&self, path: &str) -> Vec<Option<String>> {
        self.inner
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Every request so far.
    pub fn all_requests(&self) -> Vec<(String, Option<String>)> {
        self.inner.lock().unwrap().log.clone()
    }
}
