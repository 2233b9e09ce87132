//! The raw-Temporal floor for the benchmarks: the thinnest workflow that does what the scenarios
//! measure — a JSON value, one signal (`set`, merged in), one query (`get`), children that only
//! wait, and the fan-outs of S4–S6 (`down`: a value sent down the tree, `up`: a value sent up to the
//! root) — so every figure can be read as a ratio to what Temporal itself costs on the machine.
//!
//! It runs in a worker process of its own (the `floor-worker` binary), with the pollers, cache,
//! sticky timeout and runtime of the release `worker`, so the two are measured alike.

use std::time::Duration;

use futures::FutureExt;
use serde_json::{Value, json};
use stateful_workflows::markers::JsonSignal;
use temporalio_common::UntypedWorkflow;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, SignalWorkflowOptions, SyncWorkflowContext,
    WorkerOptions, WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination, runtime::PollerBehavior,
};

/// Starts, signals and cancellations issued per workflow task: under Temporal's 2,000 pending ones
/// per workflow and its 4 MB per task completion (what StatefulWorkflow paces by too).
const WAVE: usize = 500;

/// The floor workflow.
#[workflow]
#[derive(Default)]
pub struct FloorParent {
    value: serde_json::Map<String, Value>,
    done: bool,
    children: Vec<String>,
    parent: Option<String>,
    /// Fan-outs sent on so far (the run checks its history's length after each).
    sent: u64,
}

/// A run continues as new past this many events (Temporal's limit is 51,200), keeping its value
/// and its children: a 1 + 10,000 tree needs it, as StatefulWorkflow does.
const MAX_HISTORY: u32 = 10_000;

/// Signals `name` with `payload` to every workflow of `to`, [`WAVE`] at a time.
async fn broadcast(ctx: &WorkflowContext<FloorParent>, to: &[String], name: &str, payload: Value) {
    for wave in to.chunks(WAVE) {
        let handles: Vec<_> = wave
            .iter()
            .map(|w| ctx.external_workflow(w.clone(), None))
            .collect();
        let sends: Vec<_> = handles
            .iter()
            .map(|h| {
                h.signal(
                    JsonSignal::<UntypedWorkflow>::new(name),
                    payload.clone(),
                    SignalWorkflowOptions::builder()
                        .cancellation_token(WorkflowCancellationToken::new())
                        .build(),
                )
                .map(|_| ())
            })
            .collect();
        futures::future::join_all(sends).await;
    }
}

#[workflow_methods]
impl FloorParent {
    /// Starts `children` children (each with `grandchildren` of its own), then waits for `done` or
    /// a Temporal cancellation (which it passes on to its children before it ends cancelled). Past
    /// [`MAX_HISTORY`] events it continues as new (`adopt`: its children are already started).
    #[run(name = "FloorParent")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: Value) -> WorkflowResult<Value> {
        let n = input["children"].as_u64().unwrap_or(0);
        let g = input["grandchildren"].as_u64().unwrap_or(0);
        let own = ctx.workflow_id().to_string();
        let kind = if g > 0 || input["level"].is_null() {
            "c"
        } else {
            "g"
        };
        let ids: Vec<String> = (0..n).map(|i| format!("{own}-{kind}{i}")).collect();
        ctx.state_mut(|s| {
            s.parent = input["parent"].as_str().map(str::to_string);
            s.children = ids.clone();
            if let Some(v) = input["value"].as_object() {
                s.value = v.clone();
            }
        });
        if input["adopt"] != json!(true) {
            // All starts of a wave at once, as StatefulWorkflow does (awaiting them one by one
            // would put a round trip to the server between two children).
            for wave in ids.chunks(WAVE) {
                let starts: Vec<_> = wave
                    .iter()
                    .map(|id| {
                        let opts = ChildWorkflowOptions::builder()
                            .workflow_id(id.clone())
                            .parent_close_policy(ParentClosePolicy::Abandon)
                            .build();
                        ctx.start_child_workflow(
                            FloorParent::run,
                            json!({"children": g, "grandchildren": 0, "level": 1, "parent": own}),
                            opts,
                        )
                    })
                    .collect();
                let _ = futures::future::join_all(starts).await;
            }
        }
        let mut seen = ctx.state(|s| s.sent);
        loop {
            if ctx.history_length() > MAX_HISTORY && ctx.all_handlers_finished() {
                let next = json!({
                    "children": n, "grandchildren": g, "level": input["level"],
                    "parent": input["parent"], "adopt": true,
                    "value": ctx.state(|s| Value::Object(s.value.clone())),
                });
                return match ctx.continue_as_new(next, Default::default()) {
                    Err(t) => Err(t),
                    Ok(never) => match never {},
                };
            }
            let woke = {
                let done = ctx.wait_condition(|s| s.done).fuse();
                let sent = ctx.wait_condition(|s| s.sent != seen).fuse();
                let cancel = ctx.cancelled().fuse();
                futures::pin_mut!(done, sent, cancel);
                futures::select! {
                    _ = done => Some(false),
                    _ = cancel => Some(true),
                    _ = sent => None,
                }
            };
            match woke {
                None => seen = ctx.state(|s| s.sent),
                Some(false) => return Ok(Value::Null),
                Some(true) => {
                    for wave in ids.chunks(WAVE) {
                        let handles: Vec<_> = wave
                            .iter()
                            .map(|id| ctx.external_workflow(id.clone(), None))
                            .collect();
                        let cancels: Vec<_> = handles.iter().map(|h| h.cancel(None)).collect();
                        futures::future::join_all(cancels).await;
                    }
                    return Err(WorkflowTermination::cancelled());
                }
            }
        }
    }

    /// Merges an object into the value.
    #[signal(name = "set")]
    pub fn set(&mut self, _ctx: &mut SyncWorkflowContext<Self>, v: Value) {
        if let Value::Object(m) = v {
            self.value.extend(m);
        }
    }

    /// `{"value": {...}, "depth": n}`: merges `value`, and sends it on to the children while
    /// `depth` > 0 (S4: depth 1, a rename reaching the 10 children; S6: depth 2, a value reaching
    /// the 110 descendants).
    #[signal(name = "down")]
    pub async fn down(ctx: &mut WorkflowContext<Self>, v: Value) {
        let depth = v["depth"].as_u64().unwrap_or(0);
        let value = v["value"].clone();
        let children = ctx.state_mut(|s| {
            if let Value::Object(m) = &value {
                s.value.extend(m.clone());
            }
            s.children.clone()
        });
        if depth > 0 {
            broadcast(
                ctx,
                &children,
                "down",
                json!({"value": value, "depth": depth - 1}),
            )
            .await;
        }
        ctx.state_mut(|s| s.sent += 1);
    }

    /// `{"value": {...}, "hops": n}`: merges `value`, and sends it on to the parent while `hops`
    /// > 0 (S5: a grandchild's change reaching the root, 2 hops).
    #[signal(name = "up")]
    pub async fn up(ctx: &mut WorkflowContext<Self>, v: Value) {
        let hops = v["hops"].as_u64().unwrap_or(0);
        let value = v["value"].clone();
        let parent = ctx.state_mut(|s| {
            if let Value::Object(m) = &value {
                s.value.extend(m.clone());
            }
            s.parent.clone()
        });
        if let Some(p) = parent.filter(|_| hops > 0) {
            broadcast(ctx, &[p], "up", json!({"value": value, "hops": hops - 1})).await;
        }
    }

    /// Ends it.
    #[signal(name = "done")]
    pub fn done(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _v: Value) {
        self.done = true;
    }

    /// The value.
    #[query(name = "get")]
    pub fn get(&self, _ctx: &WorkflowContextView) -> Value {
        Value::Object(self.value.clone())
    }
}

/// The floor worker's options on `task_queue`: those of the release `worker` with its defaults
/// (10 workflow-task pollers, `max_cached` workflows, a 1 s sticky timeout).
pub fn floor_worker_options(task_queue: String, max_cached: usize) -> WorkerOptions {
    WorkerOptions::new(task_queue)
        .register_workflow::<FloorParent>()
        .expect("register")
        .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(10))
        .max_cached_workflows(max_cached)
        .sticky_queue_schedule_to_start_timeout(Duration::from_millis(1000))
        .build()
}
