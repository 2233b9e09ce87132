//! Outbound change hooks (`onChange` in the schema) against a real HTTP receiver on a loopback
//! address: order, coalescing, idempotency keys, retries on 5xx, a refused hook that does not block,
//! paused workflows holding their hooks, the token only as a bearer header.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::history::task_failures;
use stateful_tests::{Env, ensure_eq, eventually, query_until, root};

/// One call the receiver got.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    key: Option<String>,
    token: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    script: BTreeMap<String, VecDeque<u16>>,
    delay: Duration,
}

/// A hook receiver: records every call; answers scripted statuses first, then 204.
#[derive(Clone)]
struct Sink {
    base: String,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(State(s): State<Sink>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let call = Call {
        path: uri.path().to_string(),
        key: header("idempotency-key"),
        token: header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string)),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let (status, delay) = {
        let mut i = s.inner.lock().unwrap();
        let status = i
            .script
            .get_mut(&call.path)
            .and_then(VecDeque::pop_front)
            .unwrap_or(204);
        i.calls.push(call);
        (status, i.delay)
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        .into_response()
}

impl Sink {
    async fn start(octet: u8) -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.{octet}:0")).await?;
        let s = Sink {
            base: format!("http://{}", listener.local_addr()?),
            inner: Arc::default(),
        };
        let app = Router::new().fallback(receive).with_state(s.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(s)
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        let i = self.inner.lock().unwrap();
        i.calls.iter().filter(|c| c.path == path).cloned().collect()
    }

    fn script(&self, path: &str, statuses: &[u16]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .insert(path.into(), statuses.iter().copied().collect());
    }

    fn delay(&self, d: Duration) {
        self.inner.lock().unwrap().delay = d;
    }
}

/// The tests' schema with these hooks on User.
fn schema(hooks: Value) -> anyhow::Result<Value> {
    let mut s =
        stateful_engine::Schema::from_file(root().join("tests/fixtures/schema.yaml"))?.to_json();
    s["User"]["onChange"] = hooks;
    // Checked as the workflow will check it.
    stateful_engine::Schema::from_json(&s)?;
    Ok(s)
}

async fn start_user(env: &Env, id: &str, sink: &Sink, hooks: Value) -> anyhow::Result<String> {
    let wid = ops::workflow_id("User", id);
    let input = json!({"id": id, "entityName": "User", "schema": schema(hooks)?,
                       "apiBase": sink.base, "apiToken": "hook-secret-7f3a9c",
                       "data": {"id": id, "name": "start", "price": 0}});
    ops::start(&env.client, &env.task_queue, &wid, input).await?;
    Ok(wid)
}

async fn no_task_failure(env: &Env, wid: &str) -> anyhow::Result<()> {
    let (failed, _) = task_failures(env, wid)?;
    if !failed.is_empty() {
        bail!("{wid} had failed workflow tasks: {failed:#?}");
    }
    Ok(())
}

/// 25 changes sent at once to a receiver that answers slowly: every delivery is in version order,
/// later changes coalesce while one is out, the last value arrives, each delivery has its own
/// idempotency key (header and body), and the token goes only in the bearer header.
pub async fn hooks_deliver_changes_in_order_coalesced_with_keys(env: &Env) -> anyhow::Result<()> {
    let sink = Sink::start(71).await?;
    sink.delay(Duration::from_millis(400));
    let id = env.id("hooks-order");
    let wid = start_user(
        env,
        &id,
        &sink,
        json!([{"url": "{apiBase}/hooks/user/{id}", "fields": ["price"]}]),
    )
    .await?;
    let path = format!("/hooks/user/{id}");
    for n in 1..=25 {
        ops::signal(
            &env.client,
            &wid,
            "update",
            Some(&json!({"data": {"id": id, "price": n}})),
        )
        .await?;
    }
    let calls = eventually(Duration::from_secs(60), || async {
        let calls = sink.calls(&path);
        match calls.last() {
            Some(c) if c.body["changes"]["price"]["new"] == json!(25) => Ok(calls),
            _ => Err(anyhow!(
                "{} calls so far, not the last value yet",
                calls.len()
            )),
        }
    })
    .await?;
    if calls.len() >= 25 {
        bail!("{} calls for 25 changes: nothing coalesced", calls.len());
    }
    let mut last = 0;
    let mut keys = std::collections::BTreeSet::new();
    for c in &calls {
        let v = c.body["version"].as_u64().unwrap_or_default();
        if v <= last {
            bail!("version {v} after {last}: not in order ({calls:#?})");
        }
        last = v;
        ensure_eq!(c.key.as_deref(), c.body["idempotencyKey"].as_str());
        if !keys.insert(c.key.clone()) {
            bail!("the key {:?} came twice", c.key);
        }
        ensure_eq!(c.token.as_deref(), Some("hook-secret-7f3a9c"));
        if c.body.to_string().contains("hook-secret") {
            bail!("the token is in a hook body: {}", c.body);
        }
        ensure_eq!(c.body["workflowId"], json!(wid));
    }
    // The first call says where it started from; the coalesced ones keep the first old value.
    ensure_eq!(calls[0].body["changes"]["price"]["old"], json!(0));
    let info = query_until(env, &wid, "hooks", |v| v["delivered"] == json!(calls.len())).await?;
    if info["coalesced"].as_u64().unwrap_or_default() == 0 {
        bail!("nothing coalesced: {info}");
    }
    ensure_eq!(info["refused"], json!(0));
    let log = std::fs::read_to_string(env.log_dir.join("worker.log"))?;
    if log.contains("hook-secret-7f3a9c") {
        bail!("the token is in the worker log");
    }
    no_task_failure(env, &wid).await?;
    crate::replay::save_from(&env.client, &wid, "hooks-delivered").await
}

/// A receiver answering 503 twice gets the same delivery a third time (same key) and it is
/// delivered; a hook answering 400 is refused, recorded with its reason, and does not block the
/// workflow nor the other hook.
pub async fn a_5xx_is_retried_and_a_refused_hook_does_not_block(env: &Env) -> anyhow::Result<()> {
    let sink = Sink::start(72).await?;
    let id = env.id("hooks-retry");
    let ok = format!("/hooks/ok/{id}");
    let bad = format!("/hooks/bad/{id}");
    sink.script(&ok, &[503, 503]);
    sink.script(&bad, &[400, 400, 400]);
    let wid = start_user(
        env,
        &id,
        &sink,
        json!([{"url": "{apiBase}/hooks/bad/{id}", "fields": ["name"]},
               {"url": "{apiBase}/hooks/ok/{id}", "fields": ["price"]}]),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "name": "first", "price": 1}})),
    )
    .await?;
    let calls = eventually(Duration::from_secs(60), || async {
        let calls = sink.calls(&ok);
        if calls.len() >= 3 {
            Ok(calls)
        } else {
            Err(anyhow!("{} calls of the retried hook", calls.len()))
        }
    })
    .await?;
    ensure_eq!(calls.len(), 3);
    if calls.iter().any(|c| c.key != calls[0].key) {
        bail!("a retry changed the key: {calls:#?}");
    }
    let info = query_until(env, &wid, "hooks", |v| {
        v["delivered"] == json!(1) && v["refused"] == json!(1)
    })
    .await?;
    ensure_eq!(sink.calls(&bad).len(), 1);
    let reason = info["refusals"][0]["reason"].as_str().unwrap_or_default();
    if !reason.contains("400") {
        bail!("the refusal does not say why: {info}");
    }
    // The workflow goes on: a later change is applied and delivered.
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "price": 2}})),
    )
    .await?;
    query_until(env, &wid, "hooks", |v| v["delivered"] == json!(2)).await?;
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );
    no_task_failure(env, &wid).await
}

/// A paused workflow holds its hooks (status hooks included) until it is resumed; the ending
/// (`completed`) is delivered before the workflow ends.
pub async fn paused_workflows_hold_hooks_and_the_end_is_delivered(env: &Env) -> anyhow::Result<()> {
    let sink = Sink::start(73).await?;
    let id = env.id("hooks-paused");
    let changes = format!("/hooks/c/{id}");
    let life = format!("/hooks/life/{id}");
    let wid = start_user(
        env,
        &id,
        &sink,
        json!([{"url": "{apiBase}/hooks/c/{id}", "include": "entity"},
               {"url": "{apiBase}/hooks/life/{id}", "on": ["status"]}]),
    )
    .await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    ops::signal(&env.client, &wid, "pause", None).await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "name": "while paused"}})),
    )
    .await?;
    let held = query_until(env, &wid, "hooks", |v| {
        v["pending"].as_array().is_some_and(|p| p.len() == 2)
    })
    .await?;
    ensure_eq!(held["current"], Value::Null);
    ensure_eq!(sink.calls(&changes).len(), 0);
    ensure_eq!(sink.calls(&life).len(), 0);
    ops::signal(&env.client, &wid, "resume", None).await?;
    let got = eventually(Duration::from_secs(30), || async {
        let c = sink.calls(&changes);
        let l = sink.calls(&life);
        if c.len() == 1 && l.len() == 1 {
            Ok((c, l))
        } else {
            Err(anyhow!("{} change and {} status calls", c.len(), l.len()))
        }
    })
    .await?;
    ensure_eq!(
        got.0[0].body["changes"]["name"]["new"],
        json!("while paused")
    );
    ensure_eq!(got.0[0].body["data"]["name"], json!("while paused"));
    let statuses: Vec<(Value, Value)> = got.1[0].body["statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["from"].clone(), t["to"].clone()))
        .collect();
    ensure_eq!(
        statuses,
        vec![
            (json!("running"), json!("paused")),
            (json!("paused"), json!("running"))
        ]
    );
    // The end is delivered before the workflow completes.
    ops::signal(&env.client, &wid, "cancel", None).await?;
    eventually(Duration::from_secs(30), || async {
        let l = sink.calls(&life);
        if l.len() == 2 {
            Ok(())
        } else {
            Err(anyhow!("{} status calls", l.len()))
        }
    })
    .await?;
    let end = &sink.calls(&life)[1];
    ensure_eq!(
        end.body["statuses"]
            .as_array()
            .and_then(|a| a.last())
            .map(|t| t["to"].clone()),
        Some(json!("cancelled"))
    );
    no_task_failure(env, &wid).await?;
    // Paused, resumed, ended, with hooks delivered before the end: replayed by `replay_all`.
    crate::replay::save_from(&env.client, &wid, "hooks-paused-end").await
}

/// Children started and ended call a hook with `on: [child]`: two listings start two children, a
/// removed listing's child is ended (the `cancel` signal completes it) and its end delivered.
pub async fn children_started_and_ended_call_child_hooks(env: &Env) -> anyhow::Result<()> {
    let sink = Sink::start(74).await?;
    let id = env.id("hooks-children");
    let path = format!("/hooks/kids/{id}");
    let wid = ops::workflow_id("User", &id);
    let (l1, l2) = (format!("{id}-l1"), format!("{id}-l2"));
    let input = json!({"id": id, "entityName": "User",
        "schema": schema(json!([{"url": "{apiBase}/hooks/kids/{id}", "on": ["child"]}]))?,
        "apiBase": sink.base,
        "data": {"id": id, "listings": [{"id": l1, "user": id}, {"id": l2, "user": id}]}});
    ops::start(&env.client, &env.task_queue, &wid, input).await?;
    let events = |c: &[Call]| -> Vec<(String, String)> {
        c.iter()
            .flat_map(|c| c.body["children"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                (
                    e["event"].as_str().unwrap_or_default().to_string(),
                    e["workflowId"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let (w1, w2) = (
        ops::workflow_id("Listing", &l1),
        ops::workflow_id("Listing", &l2),
    );
    eventually(Duration::from_secs(30), || async {
        let mut got = events(&sink.calls(&path));
        got.sort();
        let want = vec![
            ("started".to_string(), w1.clone()),
            ("started".to_string(), w2.clone()),
        ];
        if got == want {
            Ok(())
        } else {
            Err(anyhow!("child events so far: {got:?}"))
        }
    })
    .await?;
    // The second listing leaves the relation: its child is cancelled, and its end is delivered.
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "listings": [l1]}, "strategy": "$set"})),
    )
    .await?;
    let ended = eventually(Duration::from_secs(30), || async {
        let calls = sink.calls(&path);
        let ended: Vec<Value> = calls
            .iter()
            .flat_map(|c| c.body["children"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["event"] == "ended")
            .collect();
        if ended.is_empty() {
            Err(anyhow!("no end delivered yet: {:?}", events(&calls)))
        } else {
            Ok(ended)
        }
    })
    .await?;
    ensure_eq!(ended.len(), 1);
    ensure_eq!(ended[0]["workflowId"], json!(w2));
    // Removed children are ended by the `cancel` signal, which completes their execution.
    ensure_eq!(ended[0]["outcome"], json!("completed"));
    no_task_failure(env, &wid).await
}

/// A continue-as-new while a call is out: the next run sends that delivery again with the same key
/// (the receiver may see it twice: at least once), then what waited; nothing is lost.
pub async fn hooks_survive_continue_as_new(env: &Env) -> anyhow::Result<()> {
    let sink = Sink::start(75).await?;
    sink.delay(Duration::from_millis(1500));
    let id = env.id("hooks-can");
    let path = format!("/hooks/can/{id}");
    let wid = start_user(
        env,
        &id,
        &sink,
        json!([{"url": "{apiBase}/hooks/can/{id}", "fields": ["price"]}]),
    )
    .await?;
    let price = |n: u64| json!({"data": {"id": id, "price": n}});
    ops::signal(&env.client, &wid, "update", Some(&price(1))).await?;
    // The first call is out (the receiver holds it 1.5 s): hand over now, and change again.
    eventually(Duration::from_secs(30), || async {
        if sink.calls(&path).is_empty() {
            Err(anyhow!("no call yet"))
        } else {
            Ok(())
        }
    })
    .await?;
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    ops::signal(&env.client, &wid, "update", Some(&price(2))).await?;
    query_until(env, &wid, "version", |v| v["runs"].as_u64() >= Some(2)).await?;
    let calls = eventually(Duration::from_secs(60), || async {
        let calls = sink.calls(&path);
        if calls
            .iter()
            .any(|c| c.body["changes"]["price"]["new"] == json!(2))
        {
            Ok(calls)
        } else {
            Err(anyhow!("{} calls, price 2 not delivered yet", calls.len()))
        }
    })
    .await?;
    // Every delivery's key names one content: a key seen twice is the same delivery sent again.
    let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
    for c in &calls {
        let k = c.key.clone().unwrap_or_default();
        let content = json!([c.body["version"], c.body["changes"]]);
        if let Some(prev) = by_key.insert(k.clone(), content.clone())
            && prev != content
        {
            bail!("key {k} named two contents: {prev} and {content}");
        }
    }
    ensure_eq!(
        calls[0].body["changes"]["price"],
        json!({"old": 0, "new": 1})
    );
    no_task_failure(env, &wid).await
}
