//! A fake entity API on a loopback address: serves JSON per path, checks bearer tokens, can answer
//! scripted failures, and records every request (path with its query string, and token) for the tests
//! to check.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stateful_client::ops;
use temporalio_client::Client;

use crate::eventually;

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

    /// Polls until it got a request with `token` for every one of `paths` (cheaper than querying
    /// every workflow of a tree while it starts).
    pub async fn wait_loaded_with(
        &self,
        paths: &[String],
        token: &str,
        within: std::time::Duration,
    ) -> anyhow::Result<()> {
        eventually(within, || async {
            let missing = paths
                .iter()
                .filter(|p| !self.requests(p).iter().any(|t| t.as_deref() == Some(token)))
                .count();
            if missing == 0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{missing} entities not loaded with the token yet"
                ))
            }
        })
        .await
    }

    /// Serves every entity of [`user_tree`]`(u, listings, photos)` at its URL in the test schema
    /// (`/users/{u}`, `/listings/{l}`, `/photos/{p}`), each with a field of its own (`name`, `title`,
    /// `caption`); returns those paths, the user's first.
    pub fn serve_user_tree(&self, u: &str, listings: usize, photos: usize) -> Vec<String> {
        let mut paths = vec![format!("/users/{u}")];
        self.put(&paths[0], json!({"id": u, "name": format!("user {u}")}));
        for (l, ps) in tree_ids(u, listings, photos) {
            let path = format!("/listings/{l}");
            self.put(&path, json!({"id": l, "title": format!("listing {l}")}));
            paths.push(path);
            for p in ps {
                let path = format!("/photos/{p}");
                self.put(&path, json!({"id": p, "caption": format!("photo {p}")}));
                paths.push(path);
            }
        }
        paths
    }
}

/// The ids of a user's listings (`{u}-l{i}`), each with the ids of its photos (`{u}-l{i}-p{j}`).
pub fn tree_ids(u: &str, listings: usize, photos: usize) -> Vec<(String, Vec<String>)> {
    (0..listings)
        .map(|i| {
            let l = format!("{u}-l{i}");
            let ps = (0..photos).map(|j| format!("{l}-p{j}")).collect();
            (l, ps)
        })
        .collect()
}

/// A user `u` with `listings` listings of `photos` photos each (ids as [`tree_ids`] names them), as
/// the nested `data` of its start input: `1 + listings * (1 + photos)` workflows once started with
/// the test schema.
pub fn user_tree(u: &str, listings: usize, photos: usize) -> Value {
    let ls: Vec<Value> = tree_ids(u, listings, photos)
        .into_iter()
        .map(|(l, ps)| {
            let photos: Vec<Value> = ps.iter().map(|p| json!({"id": p, "listing": l})).collect();
            json!({"id": l, "user": u, "photos": photos})
        })
        .collect();
    json!({"id": u, "listings": ls})
}

/// Polls until the tree under `root` has `workflows` workflows, every one on `token` (by its
/// fingerprint), with a successful last load and none loading (what `starter token rotate` waits
/// for, and its loads `ok`).
pub async fn wait_tree_on_token(
    client: &Client,
    root: &str,
    token: &str,
    workflows: usize,
    within: std::time::Duration,
) -> anyhow::Result<()> {
    let want = stateful_engine::fingerprint(token);
    eventually(within, || async {
        let states = ops::token_states(client, root).await;
        let behind: Vec<String> = states
            .iter()
            .filter(|s| {
                s.fingerprint.as_deref() != Some(want.as_str()) || s.load_state != "ok" || s.loading
            })
            .map(|s| format!("{} ({:?}, {:?})", s.workflow_id, s.error, s.load_state))
            .take(5)
            .collect();
        if states.len() == workflows && behind.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{} workflows found, not all on token {want} with a successful load: {behind:?}",
                states.len()
            ))
        }
    })
    .await
}
