//! `ForgeWorkflow`: a peer that behaves on the wire as chrono-forge 1.9.8's `StatefulWorkflow` does
//! (chrono-forge's `StatefulWorkflow.ts`, `store/*`), simplified to what the mixed-fleet tests need. It is
//! another workflow type, run by an in-process worker on a task queue of its own
//! ([`spawn_forge_worker`]).
//!
//! What it does, as chrono-forge does:
//! - **Input**: `{id, entityName, state?: {Entity: {id: {fields}}}, data?, subscriptions?,
//!   ancestorWorkflowIds?, apiToken?, ...}`; anything else is ignored (our `stateStamps`,
//!   `incarnation`, `schema`, ...). Harness-only, for the parent role: `forgeChildren: [{entityName,
//!   id, workflowType?, taskQueue?, path?}]`, the managed children it starts (chrono-forge derives
//!   them from its schema's relations; its managed paths have no task queue, which a standard
//!   interceptor adds in a real TypeScript worker).
//! - **State**: the normalized map, no stamps. `update` `{updates | data, entityName?,
//!   changeOrigin?, ...}` is applied with `$merge` (shallow, per entity; `stamps`, `strategy` and any
//!   other field are ignored): the last arrival wins. `delete` `{deletions, changeOrigin?}` removes
//!   those entities. `data` is taken as the own row of `entityName` (not normalized further).
//! - **One batch per message**: each signal is applied on its own, as chrono-forge's `update` and
//!   `delete` handlers do with their default `sync: true` (in the handler, when the store is idle);
//!   its origins are the message's `changeOrigin` (none when absent). The harness-only `write`
//!   signal `{updates: {Entity: {id: {field: value}}}}` is a local write (a proxy mutation), whose
//!   origin is the workflow's own id.
//! - **After a change**: (a) up, to each `update` subscription (e.g. its parent's), `update`
//!   `{updates: <changed top-level fields of each changed entity>, changeOrigin: <own id>,
//!   subscriptionId, sync?, strategy?}` unless an origin is one of its `ancestorWorkflowIds` (the
//!   upward echo guard); deletions are never sent up. (b) Down, to each managed child whose row
//!   changed, `update` `{updates: <the whole diff, each row with its id>, changeOrigin: <own id>}`
//!   unless that child's workflow id is an origin (the downward echo guard). A child whose entity
//!   was deleted is forgotten and cancelled. Never stamps.
//! - **Children**: started as `{Entity}-{id}` (type `workflowType`, default `StatefulWorkflow`, on
//!   `taskQueue`) with chrono-forge's options (parent close TERMINATE, cancellation type
//!   WAIT_CANCELLATION_REQUESTED, id reuse ALLOW_DUPLICATE, task timeout 30 s) and input `{id,
//!   entityName, state: {Entity: {id: row}}, subscriptions: [{subscriptionId, workflowId: <own id>,
//!   signalName: "update", selector: "*", parent, child, ancestorWorkflowIds, sync: false, strategy:
//!   "$merge"}], apiToken?, ancestorWorkflowIds: [...own ancestors, own id]}`. A child whose result
//!   is a cancellation is started again with its current row (only then: any other outcome is
//!   recorded and left). A child whose id is an ancestor is not started (circularity).
//! - **Token**: `apiToken` with a new non-empty token sets it and forwards it to the children.
//! - **Cancellation**: a Temporal cancellation ends it CANCELED (its children, inheriting it, are
//!   asked to cancel; parent close TERMINATE ends the rest).
//! - **Queries**: `state` (normalized), `received` (`{input, signals}`), `children` (per workflow
//!   id: entity, id, starts, outcomes, running, removed).
//!
//! Not modelled: the schema and `managedPaths` (children come from `forgeChildren`, and no child is
//! started for an entity added later), selectors other than globs, `delete` subscriptions,
//! continue-as-new, pause/resume/cancel/status signals (dropped), `loadData`, the memo.

use std::collections::{BTreeMap, BTreeSet};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use serde_json::{Map, Value, json};
use stateful_workflows::markers::{JsonSignal, JsonWorkflow};
use stateful_workflows::payload;
use temporalio_client::{Client, WorkflowStartOptions};
use temporalio_common::UntypedWorkflow;
use temporalio_common::data_converters::RawValue;
use temporalio_common::error::IncomingError;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowCancellationType, ChildWorkflowExecutionError, ChildWorkflowOptions,
    ParentClosePolicy, SignalWorkflowOptions, SyncWorkflowContext, WorkerOptions, WorkflowContext,
    WorkflowContextView, WorkflowIdReusePolicy, WorkflowResult, WorkflowTermination,
};

/// The workflow type name.
pub const FORGE_WORKFLOW: &str = "ForgeWorkflow";

/// What a signal asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Update,
    Delete,
    Write,
    Token,
}

/// A managed child.
#[derive(Debug, Clone, Default)]
struct Managed {
    entity: String,
    id: String,
    path: String,
    workflow_type: String,
    task_queue: Option<String>,
    starts: u32,
    outcomes: Vec<String>,
    running: bool,
    /// Its entity was deleted: forgotten (not restarted, not updated).
    removed: bool,
}

/// A command to issue after a change.
enum Out {
    Signal(String, &'static str, Value),
    Cancel(String),
}

/// The chrono-forge stand-in.
#[workflow]
#[derive(Default)]
pub struct ForgeWorkflow {
    wid: String,
    entity: String,
    id: String,
    input: Value,
    state: Map<String, Value>,
    ancestors: Vec<String>,
    subscriptions: Vec<Value>,
    token: Option<String>,
    inbox: Vec<(Kind, Value)>,
    received: Vec<Value>,
    children: BTreeMap<String, Managed>,
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// chrono-forge's selector match (`*` matches anything, dots included; anchored at both ends).
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// `$merge` of a normalized change into `state` (shallow, per entity).
fn merge(state: &mut Map<String, Value>, updates: &Map<String, Value>) {
    for (entity, rows) in updates {
        let Some(rows) = rows.as_object() else {
            continue;
        };
        let group = state
            .entry(entity.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !group.is_object() {
            *group = Value::Object(Map::new());
        }
        let group = group.as_object_mut().expect("an object");
        for (id, fields) in rows {
            match (group.get_mut(id), fields) {
                (Some(Value::Object(row)), Value::Object(f)) => {
                    for (k, v) in f {
                        row.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    group.insert(id.clone(), fields.clone());
                }
            }
        }
    }
}

/// The changed top-level fields of each added or updated entity (`detailedDiff`'s added and
/// updated, cut at the top-level key), and the deleted entities.
fn diff(
    prev: &Map<String, Value>,
    new: &Map<String, Value>,
) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut updates = Map::new();
    for (entity, rows) in new {
        for (id, row) in rows.as_object().into_iter().flatten() {
            let before = prev.get(entity).and_then(|g| g.get(id));
            let mut changed = Map::new();
            match (before, row) {
                (Some(Value::Object(b)), Value::Object(r)) => {
                    for (k, v) in r {
                        if b.get(k) != Some(v) {
                            changed.insert(k.clone(), v.clone());
                        }
                    }
                }
                (Some(b), r) if b == r => {}
                (_, Value::Object(r)) => changed = r.clone(),
                _ => {}
            }
            if !changed.is_empty() {
                updates
                    .entry(entity.clone())
                    .or_insert_with(|| Value::Object(Map::new()))[id] = Value::Object(changed);
            }
        }
    }
    let mut deleted = Vec::new();
    for (entity, rows) in prev {
        for id in rows.as_object().into_iter().flatten().map(|(id, _)| id) {
            if new.get(entity).and_then(|g| g.get(id)).is_none() {
                deleted.push((entity.clone(), id.clone()));
            }
        }
    }
    (updates, deleted)
}

impl ForgeWorkflow {
    fn init(&mut self, wid: &str, input: Value) {
        self.wid = wid.to_string();
        self.id = input.get("id").and_then(str_of).unwrap_or_default();
        self.entity = input["entityName"].as_str().unwrap_or_default().to_string();
        if let Some(s) = input.get("state").and_then(Value::as_object) {
            self.state = s.clone();
        } else if let Some(d) = input.get("data").filter(|d| d.is_object()) {
            let id = d
                .get("id")
                .and_then(str_of)
                .unwrap_or_else(|| self.id.clone());
            self.state = json!({self.entity.clone(): {id: d}})
                .as_object()
                .cloned()
                .unwrap_or_default();
        }
        self.ancestors = input["ancestorWorkflowIds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        self.subscriptions = input["subscriptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        self.token = input["apiToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        for c in input["forgeChildren"].as_array().into_iter().flatten() {
            let entity = c["entityName"].as_str().unwrap_or_default().to_string();
            let Some(id) = c.get("id").and_then(str_of) else {
                continue;
            };
            let wid = format!("{entity}-{id}");
            if self.ancestors.contains(&wid) {
                // chrono-forge: "Circular dependency detected", skipped.
                continue;
            }
            self.children.insert(
                wid,
                Managed {
                    path: c["path"].as_str().unwrap_or("children").to_string(),
                    workflow_type: c["workflowType"]
                        .as_str()
                        .unwrap_or("StatefulWorkflow")
                        .to_string(),
                    task_queue: c["taskQueue"].as_str().map(str::to_string),
                    entity,
                    id,
                    ..Managed::default()
                },
            );
        }
        self.input = input;
    }

    fn receive(&mut self, name: &str, kind: Kind, input: RawValue) {
        let v = payload::decode(&input).unwrap_or(Value::Null);
        self.received
            .push(json!({"signal": name, "payload": v.clone()}));
        if !v.is_null() {
            self.inbox.push((kind, v));
        }
    }

    fn row(&self, entity: &str, id: &str) -> Option<&Value> {
        self.state.get(entity).and_then(|g| g.get(id))
    }

    /// A managed child's start input (chrono-forge's `startChildWorkflow` args), counting the start.
    fn child_input(&mut self, wid: &str) -> Option<(Managed, Value)> {
        let row = {
            let m = self.children.get(wid)?;
            self.row(&m.entity, &m.id)?.clone()
        };
        let me = format!("{}:{}", self.entity, self.id);
        let mut ancestors = self.ancestors.clone();
        ancestors.push(self.wid.clone());
        let (own_wid, own_ancestors, token) =
            (self.wid.clone(), self.ancestors.clone(), self.token.clone());
        let m = self.children.get_mut(wid)?;
        m.starts += 1;
        m.running = true;
        let mut input = json!({
            "id": m.id,
            "entityName": m.entity,
            "state": {m.entity.clone(): {m.id.clone(): row}},
            "subscriptions": [{
                "subscriptionId": format!("{me}.{}:{}", m.path, m.id),
                "workflowId": own_wid,
                "signalName": "update",
                "selector": "*",
                "parent": me,
                "child": format!("{}:{}", m.entity, m.id),
                "ancestorWorkflowIds": own_ancestors,
                "sync": false,
                "strategy": "$merge",
            }],
            "ancestorWorkflowIds": ancestors,
        });
        if let Some(t) = token {
            input["apiToken"] = json!(t);
        }
        Some((m.clone(), input))
    }

    /// Applies one message; the commands its change calls for.
    fn apply(&mut self, kind: Kind, msg: &Value) -> Vec<Out> {
        if kind == Kind::Token {
            let Some(t) = msg.as_str().filter(|t| !t.is_empty()) else {
                return Vec::new();
            };
            if self.token.as_deref() == Some(t) {
                return Vec::new();
            }
            self.token = Some(t.to_string());
            return self
                .children
                .iter()
                .filter(|(_, m)| !m.removed)
                .map(|(w, _)| Out::Signal(w.clone(), "apiToken", json!(t)))
                .collect();
        }
        let prev = self.state.clone();
        let mut origins = BTreeSet::new();
        if kind == Kind::Write {
            origins.insert(self.wid.clone());
        } else if let Some(o) = msg["changeOrigin"].as_str() {
            origins.insert(o.to_string());
        }
        match kind {
            Kind::Update | Kind::Write => {
                let updates = match msg.get("data").filter(|d| d.is_object()) {
                    Some(d) => {
                        let entity = msg["entityName"].as_str().unwrap_or(&self.entity);
                        let id = d.get("id").and_then(str_of).unwrap_or_default();
                        json!({entity: {id: d}})
                    }
                    None => msg["updates"].clone(),
                };
                if let Some(u) = updates.as_object() {
                    merge(&mut self.state, u);
                }
            }
            Kind::Delete => {
                for (entity, ids) in msg["deletions"].as_object().into_iter().flatten() {
                    if let Some(g) = self.state.get_mut(entity).and_then(Value::as_object_mut) {
                        for id in ids.as_object().into_iter().flatten().map(|(id, _)| id) {
                            g.remove(id);
                        }
                    }
                }
            }
            Kind::Token => {}
        }
        let (updates, deleted) = diff(&prev, &self.state);
        let mut out = Vec::new();
        // Down: each managed child whose row changed, unless the change came from it.
        let mut down = updates.clone();
        for rows in down.values_mut() {
            for (id, fields) in rows.as_object_mut().into_iter().flatten() {
                if let Some(f) = fields.as_object_mut() {
                    f.insert("id".into(), json!(id));
                }
            }
        }
        for (wid, m) in self.children.iter_mut() {
            if m.removed {
                continue;
            }
            if deleted.contains(&(m.entity.clone(), m.id.clone())) {
                m.removed = true;
                out.push(Out::Cancel(wid.clone()));
                continue;
            }
            if origins.contains(wid) {
                continue;
            }
            let before = prev.get(&m.entity).and_then(|g| g.get(&m.id));
            let now = self.state.get(&m.entity).and_then(|g| g.get(&m.id));
            if before != now && !down.is_empty() {
                out.push(Out::Signal(
                    wid.clone(),
                    "update",
                    json!({"updates": down, "changeOrigin": self.wid}),
                ));
            }
        }
        // Up: every update subscription, unless an ancestor is among the origins.
        if !updates.is_empty() && !origins.iter().any(|o| self.ancestors.contains(o)) {
            for sub in &self.subscriptions {
                if sub["signalName"] != "update" {
                    continue;
                }
                let Some(to) = sub["workflowId"].as_str() else {
                    continue;
                };
                let selector = sub["selector"].as_str().unwrap_or("*");
                let mut picked = Map::new();
                for (entity, rows) in &updates {
                    for (id, fields) in rows.as_object().into_iter().flatten() {
                        for (k, v) in fields.as_object().into_iter().flatten() {
                            if glob(selector, &format!("{entity}.{id}.{k}")) {
                                picked
                                    .entry(entity.clone())
                                    .or_insert_with(|| json!({}))
                                    .as_object_mut()
                                    .expect("an object")
                                    .entry(id.clone())
                                    .or_insert_with(|| json!({}))[k] = v.clone();
                            }
                        }
                    }
                }
                if picked.is_empty() {
                    continue;
                }
                let mut m = json!({"updates": picked, "changeOrigin": self.wid,
                    "subscriptionId": sub["subscriptionId"]});
                for k in ["sync", "strategy"] {
                    if let Some(v) = sub.get(k) {
                        m[k] = v.clone();
                    }
                }
                out.push(Out::Signal(to.to_string(), "update", m));
            }
        }
        out
    }
}

/// What is in flight: child runs (each resolves to its workflow id and outcome) and signal or
/// cancellation deliveries (their errors are dropped, as chrono-forge logs them).
#[derive(Default)]
struct Flight {
    children: Vec<LocalBoxFuture<'static, (String, String)>>,
    sends: Vec<LocalBoxFuture<'static, ()>>,
}

/// Every child outcome ready now, once one is (deliveries are polled on the way).
async fn next_ended(flight: &mut Flight) -> Vec<(String, String)> {
    futures::future::poll_fn(|cx| {
        flight
            .sends
            .retain_mut(|f| f.as_mut().poll(cx).is_pending());
        let mut done = Vec::new();
        let mut i = 0;
        while i < flight.children.len() {
            match flight.children[i].as_mut().poll(cx) {
                Poll::Ready(x) => {
                    drop(flight.children.remove(i));
                    done.push(x);
                }
                Poll::Pending => i += 1,
            }
        }
        if done.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(done)
        }
    })
    .await
}

/// Starts (or starts again) a managed child with its current row, and watches its result.
fn start_child(ctx: &WorkflowContext<ForgeWorkflow>, wid: &str, flight: &mut Flight) {
    let Some((m, input)) = ctx.state_mut(|s| s.child_input(wid)) else {
        return;
    };
    let opts = ChildWorkflowOptions::builder()
        .workflow_id(wid.to_string())
        .maybe_task_queue(m.task_queue.clone())
        .parent_close_policy(ParentClosePolicy::Terminate)
        .cancel_type(ChildWorkflowCancellationType::WaitCancellationRequested)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .task_timeout(Duration::from_secs(30))
        .build();
    let c = ctx.clone();
    let wid = wid.to_string();
    flight.children.push(
        async move {
            let outcome = match c
                .start_child_workflow(JsonWorkflow(m.workflow_type), input, opts)
                .await
            {
                Err(e) => format!("startFailed: {e}"),
                Ok(started) => match started.result().await {
                    Ok(_) => "completed".to_string(),
                    Err(ChildWorkflowExecutionError::Failed(f)) => match f.cause() {
                        Some(IncomingError::Cancelled(_)) => "cancelled".to_string(),
                        Some(IncomingError::Terminated(_)) => "terminated".to_string(),
                        Some(IncomingError::Timeout(_)) => "timedOut".to_string(),
                        _ => format!("failed: {}", f.failure().message),
                    },
                    Err(e) => format!("failed: {e}"),
                },
            };
            (wid, outcome)
        }
        .boxed_local(),
    );
}

fn issue(ctx: &WorkflowContext<ForgeWorkflow>, out: Vec<Out>, flight: &mut Flight) {
    for o in out {
        match o {
            Out::Signal(to, name, payload) => {
                let f = ctx.external_workflow(to, None).signal(
                    JsonSignal::<UntypedWorkflow>::new(name),
                    payload,
                    SignalWorkflowOptions::default(),
                );
                flight.sends.push(
                    async move {
                        let _ = f.await;
                    }
                    .boxed_local(),
                );
            }
            Out::Cancel(to) => {
                let h = ctx.external_workflow(to, None);
                flight.sends.push(
                    async move {
                        let _ = h.cancel(Some("its entity was deleted".into())).await;
                    }
                    .boxed_local(),
                );
            }
        }
    }
}

#[workflow_methods]
impl ForgeWorkflow {
    /// Starts its managed children, then applies each message as it comes, until Temporal cancels it.
    #[run(name = "ForgeWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: RawValue) -> WorkflowResult<Value> {
        let input = payload::decode(&input).unwrap_or(Value::Null);
        let wid = ctx.workflow_id().to_string();
        ctx.state_mut(|s| s.init(&wid, input));
        let mut flight = Flight::default();
        for w in ctx.state(|s| s.children.keys().cloned().collect::<Vec<_>>()) {
            start_child(ctx, &w, &mut flight);
        }
        loop {
            let wake = temporalio_sdk::workflows::select! {
                r = ctx.wait_condition(|s| !s.inbox.is_empty()).fuse() => Ok(r.is_err()),
                e = next_ended(&mut flight).fuse() => Err(e),
            };
            match wake {
                Ok(true) => return Err(WorkflowTermination::cancelled()),
                Ok(false) => {
                    for (kind, msg) in ctx.state_mut(|s| std::mem::take(&mut s.inbox)) {
                        let out = ctx.state_mut(|s| s.apply(kind, &msg));
                        issue(ctx, out, &mut flight);
                    }
                }
                Err(ended) => {
                    for (w, outcome) in ended {
                        let restart = ctx.state_mut(|s| {
                            let Some(m) = s.children.get_mut(&w) else {
                                return false;
                            };
                            m.running = false;
                            m.outcomes.push(outcome.clone());
                            outcome == "cancelled" && !m.removed
                        });
                        // chrono-forge restarts a child only when its result is a cancellation
                        // (and it is not itself being cancelled).
                        if restart && !ctx.cancellation_token().is_cancelled() {
                            start_child(ctx, &w, &mut flight);
                        }
                    }
                }
            }
        }
    }

    /// `update`: `{updates | data, entityName?, changeOrigin?, ...}`, merged.
    #[signal(name = "update")]
    pub fn update(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.receive("update", Kind::Update, input);
    }

    /// `delete`: `{deletions, changeOrigin?}`.
    #[signal(name = "delete")]
    pub fn delete(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.receive("delete", Kind::Delete, input);
    }

    /// Harness-only: a local write `{updates}` (chrono-forge's proxy mutation), origin = own id.
    #[signal(name = "write")]
    pub fn write(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.receive("write", Kind::Write, input);
    }

    /// `apiToken`: a new token, forwarded to the children.
    #[signal(name = "apiToken")]
    pub fn api_token(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.receive("apiToken", Kind::Token, input);
    }

    /// The normalized state.
    #[query(name = "state")]
    pub fn q_state(&self, _ctx: &WorkflowContextView) -> Value {
        Value::Object(self.state.clone())
    }

    /// Its input and every signal it received.
    #[query(name = "received")]
    pub fn q_received(&self, _ctx: &WorkflowContextView) -> Value {
        json!({"input": self.input, "signals": self.received})
    }

    /// The managed children: how many times each was started, and how each run ended.
    #[query(name = "children")]
    pub fn q_children(&self, _ctx: &WorkflowContextView) -> Value {
        Value::Object(
            self.children
                .iter()
                .map(|(w, m)| {
                    (
                        w.clone(),
                        json!({"entityName": m.entity, "id": m.id, "workflowType": m.workflow_type,
                            "taskQueue": m.task_queue, "starts": m.starts, "outcomes": m.outcomes,
                            "running": m.running, "removed": m.removed}),
                    )
                })
                .collect(),
        )
    }
}

/// Runs a worker for `ForgeWorkflow` on `task_queue`, on a thread of its own (the SDK's worker
/// future is not `Send`), until the process ends.
pub fn spawn_forge_worker(client: Client, task_queue: String) {
    crate::spawn_worker(client, move || {
        WorkerOptions::new(task_queue)
            .register_workflow::<ForgeWorkflow>()
            .expect("register")
            .build()
    });
}

/// Starts a `ForgeWorkflow` (a root: started by a client) on `task_queue`; its run id.
pub async fn start_forge(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: Value,
) -> anyhow::Result<String> {
    let h = client
        .start_workflow(
            JsonWorkflow(FORGE_WORKFLOW.to_string()),
            input,
            WorkflowStartOptions::new(task_queue, workflow_id).build(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot start {workflow_id}: {e}"))?;
    Ok(h.run_id().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_chrono_forge_selectors() {
        assert!(glob("*", "Listing.l1.title"));
        assert!(glob("Listing.*", "Listing.l1.title"));
        assert!(!glob("User.*", "Listing.l1.title"));
        assert!(glob("Listing.l1.title", "Listing.l1.title"));
    }

    #[test]
    fn echo_guards_and_merge() {
        let mut f = ForgeWorkflow::default();
        f.init(
            "Listing-l",
            json!({"id": "l", "entityName": "Listing",
                "state": {"Listing": {"l": {"id": "l", "title": "a", "n": 1}}},
                "subscriptions": [{"workflowId": "User-u", "subscriptionId": "s", "signalName": "update", "selector": "*"}],
                "ancestorWorkflowIds": ["User-u"]}),
        );
        // From the parent: applied, not sent back up.
        let out = f.apply(
            Kind::Update,
            &json!({"updates": {"Listing": {"l": {"title": "p"}}}, "changeOrigin": "User-u", "stamps": {}}),
        );
        assert!(out.is_empty());
        assert_eq!(
            f.state["Listing"]["l"],
            json!({"id": "l", "title": "p", "n": 1})
        );
        // A local write: sent up, the changed field only.
        let out = f.apply(
            Kind::Write,
            &json!({"updates": {"Listing": {"l": {"title": "c"}}}}),
        );
        let [Out::Signal(to, "update", m)] = out.as_slice() else {
            panic!("one update up");
        };
        assert_eq!(to, "User-u");
        assert_eq!(
            *m,
            json!({"updates": {"Listing": {"l": {"title": "c"}}}, "changeOrigin": "Listing-l", "subscriptionId": "s"})
        );
        // The same value again: no change, nothing sent.
        assert!(
            f.apply(
                Kind::Write,
                &json!({"updates": {"Listing": {"l": {"title": "c"}}}})
            )
            .is_empty()
        );
    }

    #[test]
    fn a_parent_sends_down_except_to_the_origin() {
        let mut f = ForgeWorkflow::default();
        f.init(
            "User-u",
            json!({"id": "u", "entityName": "User",
                "state": {"User": {"u": {"id": "u", "listings": ["a", "b"]}},
                          "Listing": {"a": {"id": "a"}, "b": {"id": "b"}}},
                "forgeChildren": [{"entityName": "Listing", "id": "a"}, {"entityName": "Listing", "id": "b"}]}),
        );
        let (_, input) = f.child_input("Listing-a").unwrap();
        assert_eq!(input["state"], json!({"Listing": {"a": {"id": "a"}}}));
        assert_eq!(input["ancestorWorkflowIds"], json!(["User-u"]));
        assert_eq!(input["subscriptions"][0]["workflowId"], "User-u");
        let out = f.apply(
            Kind::Update,
            &json!({"updates": {"Listing": {"a": {"t": 1}, "b": {"t": 2}}}, "changeOrigin": "Listing-a"}),
        );
        let [Out::Signal(to, "update", m)] = out.as_slice() else {
            panic!("one update down");
        };
        assert_eq!(to, "Listing-b");
        assert_eq!(
            m["updates"],
            json!({"Listing": {"a": {"id": "a", "t": 1}, "b": {"id": "b", "t": 2}}})
        );
        let out = f.apply(
            Kind::Delete,
            &json!({"deletions": {"Listing": {"b": {}}}, "changeOrigin": "x"}),
        );
        assert!(matches!(out.as_slice(), [Out::Cancel(w)] if w == "Listing-b"));
        assert!(f.children["Listing-b"].removed);
    }
}
