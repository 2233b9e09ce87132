//! The actions, as jobs: a `POST` starts one on a task of its own and answers at once; the page
//! polls `GET /api/jobs/{id}` for its progress until it is `done` or `failed`. A job's record never
//! holds a token (a rotation's record holds the new token's fingerprint).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stateful_client::ops::{self, TokenState};
use stateful_core::Secret;
use temporalio_client::Client;

use crate::data;

/// The most jobs running at once.
const MAX_RUNNING: usize = 8;
/// The most job records kept (the oldest finished ones are forgotten).
const MAX_KEPT: usize = 200;
/// How long a pause, resume or refresh is watched.
const WATCH: Duration = Duration::from_secs(30);
/// How long a validation of a tree may take.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a rotation is watched.
const ROTATE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a job does.
pub(crate) enum Kind {
    /// `pause`, `resume` or `refresh`.
    Signal(String),
    /// The `validate` query, on the workflow or (`tree`) every workflow under it.
    Validate {
        /// The whole tree.
        tree: bool,
    },
    /// A new token for the tree under the workflow.
    Rotate(Secret),
}

impl Kind {
    fn name(&self) -> &str {
        match self {
            Kind::Signal(s) => s,
            Kind::Validate { .. } => "validate",
            Kind::Rotate(_) => "rotate",
        }
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    jobs: BTreeMap<u64, Value>,
}

/// The jobs, by id.
#[derive(Default, Clone)]
pub(crate) struct Jobs {
    inner: Arc<Mutex<Inner>>,
}

/// A running job's handle on its record.
struct Reporter {
    jobs: Jobs,
    id: u64,
    started: Instant,
}

impl Reporter {
    fn set(&self, state: &str, progress: &str, result: Option<Value>) {
        let mut g = self.jobs.lock();
        if let Some(j) = g.jobs.get_mut(&self.id) {
            j["state"] = json!(state);
            j["progress"] = json!(progress);
            j["seconds"] = json!((self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
            if let Some(r) = result {
                j["result"] = r;
            }
        }
    }

    fn progress(&self, p: &str) {
        self.set("running", p, None);
    }

    fn done(&self, p: &str, result: Value) {
        self.set("done", p, Some(result));
    }

    fn failed(&self, p: &str) {
        self.set("failed", p, None);
    }
}

/// A job whose task ends (or panics) while its record still says `running` fails, so that it never
/// counts toward [`MAX_RUNNING`] for good.
impl Drop for Reporter {
    fn drop(&mut self) {
        let running = self
            .jobs
            .lock()
            .jobs
            .get(&self.id)
            .is_some_and(|j| j["state"] == "running");
        if running {
            self.failed("the action ended unexpectedly (see the explorer's log)");
        }
    }
}

/// The error of a pass that did not end before the job's deadline.
const LATE: &str = "the tree did not answer before the deadline";

/// `f` within what is left of the time to `deadline`.
async fn by<T>(
    deadline: Instant,
    f: impl std::future::Future<Output = T>,
) -> Result<T, &'static str> {
    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), f)
        .await
        .map_err(|_| LATE)
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job's record.
    pub fn get(&self, id: u64) -> Option<Value> {
        self.lock().jobs.get(&id).cloned()
    }

    /// Starts `kind` on `wid`; answers its first record, or why it cannot start now.
    pub fn start(&self, client: Client, wid: String, kind: Kind) -> Result<Value, String> {
        let record = {
            let mut g = self.lock();
            let running = g.jobs.values().filter(|j| j["state"] == "running").count();
            if running >= MAX_RUNNING {
                return Err(format!(
                    "{running} actions are running already: wait for one to end"
                ));
            }
            while g.jobs.len() >= MAX_KEPT {
                let Some(old) = g
                    .jobs
                    .iter()
                    .find(|(_, j)| j["state"] != "running")
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                g.jobs.remove(&old);
            }
            g.next += 1;
            let id = g.next;
            let record = json!({
                "job": id,
                "action": kind.name(),
                "workflowId": wid,
                "state": "running",
                "progress": "starting",
                "seconds": 0.0,
                "result": null,
            });
            g.jobs.insert(id, record.clone());
            record
        };
        let r = Reporter {
            jobs: self.clone(),
            id: record["job"].as_u64().unwrap_or_default(),
            started: Instant::now(),
        };
        tracing::info!(workflow_id = %wid, action = kind.name(), "explorer: action");
        tokio::spawn(async move {
            match kind {
                Kind::Signal(name) => signal(&client, &wid, &name, &r).await,
                Kind::Validate { tree } => validate(&client, &wid, tree, &r).await,
                Kind::Rotate(token) => rotate(&client, &wid, token, &r).await,
            }
        });
        Ok(record)
    }
}

async fn signal(client: &Client, wid: &str, name: &str, r: &Reporter) {
    // What the load was before the signal, to tell a load it starts from an older one.
    let before = if name == "refresh" {
        data::query(client, wid, "api").await.ok()
    } else {
        None
    };
    r.progress(&format!("sending `{name}`"));
    if let Err(e) = data::timed("the signal", ops::signal(client, wid, name, None)).await {
        return r.failed(&format!("{e:#}"));
    }
    let deadline = Instant::now() + WATCH;
    if name == "refresh" {
        loop {
            let api = match data::query(client, wid, "api").await {
                Ok(a) => a,
                Err(e) => return r.failed(&format!("sent; then: {e:#}")),
            };
            if api["url"].is_null() {
                return r.done(
                    "sent; this workflow has no API URL, so there is nothing to load",
                    json!({"loadState": null}),
                );
            }
            let state = api["state"].as_str().unwrap_or_default().to_string();
            let busy = api["loading"] == json!(true) || !api["pending"].is_null();
            let moved = before
                .as_ref()
                .is_none_or(|b| b["loads"] != api["loads"] || b["failures"] != api["failures"]);
            if moved && !busy {
                let result = json!({"loadState": state, "lastError": api["lastError"]});
                return if state == "ok" {
                    r.done("reloaded from its API: ok", result)
                } else {
                    r.failed(&format!(
                        "the load ended `{state}`: {}",
                        api["lastError"].as_str().unwrap_or("see the API section")
                    ))
                };
            }
            if Instant::now() > deadline {
                return r.done(
                    &format!(
                        "sent; no load ended within {} s (last load: {state})",
                        WATCH.as_secs()
                    ),
                    json!({"loadState": state}),
                );
            }
            r.progress(&format!("loading (last load: {state})"));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // pause / resume: watched until every workflow of the subtree reports it.
    let want_paused = name == "pause";
    loop {
        let statuses = match by(deadline, data::statuses(client, wid)).await {
            Ok(s) => s,
            Err(m) => return r.failed(&format!("sent; then: {m}")),
        };
        let total = statuses.len();
        // Only the workflows that answered count (one that did not is neither paused nor resumed).
        let reached = statuses
            .iter()
            .filter(|(_, s)| s.as_deref().is_some_and(|s| (s == "paused") == want_paused))
            .count();
        let what = if want_paused { "paused" } else { "resumed" };
        if reached == total {
            return r.done(
                &format!("{reached}/{total} workflows of the subtree {what}"),
                json!({"workflows": total, "reached": reached}),
            );
        }
        if Instant::now() > deadline {
            return r.done(
                &format!(
                    "{reached}/{total} workflows {what} after {} s; the rest follow as the signal propagates",
                    WATCH.as_secs()
                ),
                json!({"workflows": total, "reached": reached}),
            );
        }
        r.progress(&format!(
            "{reached}/{total} workflows of the subtree {what}"
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The most failing workflows a validation's record lists.
const MAX_FAILING_LISTED: usize = 100;

async fn validate(client: &Client, wid: &str, tree: bool, r: &Reporter) {
    r.progress(if tree {
        "validating every workflow of the tree (each recomputes its checksum)"
    } else {
        "validating"
    });
    let results = if tree {
        match tokio::time::timeout(VALIDATE_TIMEOUT, data::walk_query(client, wid, "validate"))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                return r.failed(&format!(
                    "{LATE} (the tree was not validated within {} s)",
                    VALIDATE_TIMEOUT.as_secs()
                ));
            }
        }
    } else {
        vec![(wid.to_string(), data::query(client, wid, "validate").await)]
    };
    let n = results.len();
    // The record keeps the failing workflows only (the first ones), and the counts.
    let mut failing = Vec::new();
    let mut errors = 0usize;
    for (w, res) in results {
        let v = match res {
            Ok(v) => v,
            Err(e) => {
                json!({"ok": false, "findings": [{"severity": "error", "kind": "query", "message": format!("{e:#}")}]})
            }
        };
        if v["ok"] != json!(true) {
            errors += 1;
            if failing.len() < MAX_FAILING_LISTED {
                failing.push(json!({"workflowId": w, "result": v}));
            }
        }
    }
    let result = json!({
        "ok": errors == 0,
        "checked": n,
        "failing": errors,
        "workflows": failing,
        "listed": failing.len(),
    });
    if errors == 0 {
        r.done(&format!("{n} workflows checked: all valid"), result);
    } else {
        let names: Vec<_> = failing
            .iter()
            .take(10)
            .filter_map(|f| f["workflowId"].as_str())
            .collect();
        r.set(
            "failed",
            &format!(
                "{n} workflows checked, {errors} with errors: {}",
                names.join(", ")
            ),
            Some(result),
        );
    }
}

/// What `starter token rotate` does: the new token to the workflow (its subtree gets it from it),
/// then the subtree watched until every workflow reports its fingerprint and none is reloading.
async fn rotate(client: &Client, wid: &str, token: Secret, r: &Reporter) {
    let want = token.fingerprint();
    r.progress(&format!("sending the token {want}"));
    let sent = data::timed(
        "the signal",
        ops::signal(client, wid, "apiToken", Some(&json!(token.expose()))),
    )
    .await;
    drop(token);
    if let Err(e) = sent {
        return r.failed(&format!("{e:#}"));
    }
    let deadline = Instant::now() + ROTATE_TIMEOUT;
    let done = |states: &[TokenState]| {
        states
            .iter()
            .all(|s| s.fingerprint.as_deref() == Some(want.as_str()) && !(s.has_api && s.loading))
    };
    loop {
        let listed = match by(deadline, ops::token_states_listed(client, wid)).await {
            Ok(l) => l,
            Err(m) => return r.failed(&format!("sent; then: {m}")),
        };
        let states = match listed {
            Some(listed) if !done(&listed) => listed,
            _ => match by(deadline, ops::token_states(client, wid)).await {
                Ok(s) => s,
                Err(m) => return r.failed(&format!("sent; then: {m}")),
            },
        };
        let rotated = states
            .iter()
            .filter(|s| s.fingerprint.as_deref() == Some(want.as_str()))
            .count();
        let reloading = states.iter().filter(|s| s.has_api && s.loading).count();
        if rotated == states.len() && reloading == 0 {
            let mut loads = BTreeMap::<String, usize>::new();
            for s in states.iter().filter(|s| s.has_api) {
                *loads.entry(s.load_state.clone()).or_default() += 1;
            }
            let bad: Vec<_> = states
                .iter()
                .filter(|s| {
                    s.has_api && (s.load_state == "unauthorized" || s.load_state == "failed")
                })
                .map(|s| s.workflow_id.clone())
                .collect();
            let result = json!({"fingerprint": want, "workflows": states.len(), "loads": loads});
            let summary = format!(
                "{} workflows use token {want}; loads: {}",
                states.len(),
                if loads.is_empty() {
                    "none".to_string()
                } else {
                    loads
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            return if bad.is_empty() {
                r.done(&summary, result)
            } else {
                r.set(
                    "failed",
                    &format!(
                        "{summary}; could not reload with it: {}",
                        bad.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                    ),
                    Some(result),
                )
            };
        }
        if Instant::now() > deadline {
            return r.failed(&format!(
                "after {} s, {rotated}/{} workflows use token {want}, {reloading} reloading",
                ROTATE_TIMEOUT.as_secs(),
                states.len()
            ));
        }
        r.progress(&format!(
            "rotating to {want}: {rotated}/{} workflows use it, {reloading} reloading",
            states.len()
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
