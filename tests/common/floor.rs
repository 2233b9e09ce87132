//! The raw-Temporal floor for the benchmarks: the thinnest workflow that does what the scenarios
//! measure — a JSON value, one signal (`set`, merged in), one query (`get`), children that only
//! wait, and the fan-outs of S4–S6 (`down`: a value sent down the tree, `up`: a value sent up to the
//! root) — so every figure can be read as a ratio to what Temporal itself costs on the machine.
//!
//! It runs in a worker process of its own (the `floor-worker` binary), with the pollers, cache,
//! sticky timeout and runtime of the release `worker`, so the two are measured alike.

use std::pin::Pin;
use std::task::Poll;
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

/// Starts, signals and cancellations in flight at once: under Temporal's 2,000 pending ones per
/// workflow and its 4 MB per task completion (StatefulWorkflow keeps up to 1,000 in flight too).
const WAVE: usize = 1_000;

/// The floor workflow.
#[workflow]
#[derive(Default)]
pub struct FloorParent {
    value: serde_json::Map<String, Value>,
    done: bool,
    children: Vec<String>,
    parent: Option<String>,
    /// Messages to send on (signal name, payload, to the children or else to the parent, from
    /// which of them on), sent by the run itself, which checks its history's length after each
    /// wave and hands what is left to its next run.
    sends: Vec<(&'static str, Value, bool, usize)>,
}

/// A run continues as new past this many events (Temporal's limit is 51,200), keeping its value
/// and its children: a 1 + 10,000 tree needs it, as StatefulWorkflow does.
const MAX_HISTORY: u32 = 10_000;

/// Children a run starts before it continues as new (Temporal allows 2,000 running children per
/// run by default).
const PER_RUN: usize = 1_500;

/// Awaits every future of `futs`, at most `max` in flight (a new one starts as soon as one ends),
/// polling each with the workflow's own waker (`join_all` of more than 30 futures polls them
/// through wakers of its own, which the SDK refuses as nondeterminism).
async fn window<F: Future>(futs: impl IntoIterator<Item = F>, max: usize) {
    let mut next = futs.into_iter();
    let mut more = true;
    let mut pending: Vec<Pin<Box<F>>> = Vec::new();
    futures::future::poll_fn(|cx| {
        loop {
            while more && pending.len() < max {
                match next.next() {
                    Some(f) => pending.push(Box::pin(f)),
                    None => more = false,
                }
            }
            let before = pending.len();
            pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
            if pending.is_empty() && !more {
                return Poll::Ready(());
            }
            if pending.len() == before {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Signals `name` with `payload` to the workflows of `to` from `from` on, a wave of [`WAVE`] at a
/// time; after a wave that took the history past [`MAX_HISTORY`], stops and answers where the rest
/// starts (a run of 10,000 signals would near Temporal's 51,200 events, past which the server
/// terminates the run: the rest goes to the next run, as StatefulWorkflow does).
async fn broadcast(
    ctx: &WorkflowContext<FloorParent>,
    to: &[String],
    name: &str,
    payload: &Value,
    from: usize,
) -> Option<usize> {
    let mut i = from;
    while i < to.len() {
        let end = (i + WAVE).min(to.len());
        let handles: Vec<_> = to[i..end]
            .iter()
            .map(|w| ctx.external_workflow(w.clone(), None))
            .collect();
        let sends = handles.iter().map(|h| {
            h.signal(
                JsonSignal::<UntypedWorkflow>::new(name),
                payload.clone(),
                SignalWorkflowOptions::builder()
                    .cancellation_token(WorkflowCancellationToken::new())
                    .build(),
            )
            .map(|_| ())
        });
        window(sends, WAVE).await;
        i = end;
        if i < to.len() && ctx.history_length() > MAX_HISTORY {
            return Some(i);
        }
    }
    None
}

/// Asks every workflow of `ids` to cancel ([`WAVE`] requests in flight), then ends cancelled.
async fn cascade(ctx: &WorkflowContext<FloorParent>, ids: &[String]) -> WorkflowResult<Value> {
    let handles: Vec<_> = ids
        .iter()
        .map(|id| ctx.external_workflow(id.clone(), None))
        .collect();
    window(handles.iter().map(|h| h.cancel(None)), WAVE).await;
    Err(WorkflowTermination::cancelled())
}

#[workflow_methods]
impl FloorParent {
    /// Starts `children` children (each with `grandchildren` of its own), then waits for `done` or
    /// a Temporal cancellation (which it passes on to its children before it ends cancelled). Past
    /// [`MAX_HISTORY`] events it continues as new (`from`: the children it has started).
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
        // A run may have at most 2,000 running children (Temporal's default): it starts up to
        // PER_RUN of them and continues as new to start the rest (the children it started run on).
        let from = (input["from"].as_u64().unwrap_or(0) as usize).min(ids.len());
        let upto = (from + PER_RUN).min(ids.len());
        // All starts of a wave at once, as StatefulWorkflow does (awaiting them one by one would
        // put a round trip to the server between two children).
        let starts = ids[from..upto].iter().map(|id| {
            let opts = ChildWorkflowOptions::builder()
                .workflow_id(id.clone())
                .parent_close_policy(ParentClosePolicy::Abandon)
                .build();
            ctx.start_child_workflow(
                FloorParent::run,
                json!({"children": g, "grandchildren": 0, "level": 1, "parent": own}),
                opts,
            )
        });
        window(starts, WAVE).await;
        // A Temporal cancellation that arrived while the run was busy (starting, broadcasting) is
        // seen before any continue-as-new: a run that continued as new after the cancel request was
        // recorded would end without it, and the new run would never hear of it.
        if ctx.cancellation_token().is_cancelled() {
            return cascade(ctx, &ids[..upto]).await;
        }
        // What an earlier run had still to send.
        if let Some(pending) = input["pending"].as_array() {
            let sends = pending.iter().map(|p| {
                let name = if p["name"] == "up" { "up" } else { "down" };
                let from = p["from"].as_u64().unwrap_or(0) as usize;
                (name, p["payload"].clone(), p["down"] == true, from)
            });
            ctx.state_mut(|s| s.sends.extend(sends));
        }
        let next = |ctx: &WorkflowContext<Self>, from: usize| {
            let pending: Vec<Value> = ctx.state(|s| {
                s.sends
                    .iter()
                    .map(|(name, payload, down, from)| {
                        json!({"name": name, "payload": payload, "down": down, "from": from})
                    })
                    .collect()
            });
            json!({
                "children": n, "grandchildren": g, "level": input["level"],
                "parent": input["parent"], "from": from, "pending": pending,
                "value": ctx.state(|s| Value::Object(s.value.clone())),
            })
        };
        if upto < ids.len() {
            return match ctx.continue_as_new(next(ctx, upto), Default::default()) {
                Err(t) => Err(t),
                Ok(never) => match never {},
            };
        }
        loop {
            if ctx.cancellation_token().is_cancelled() {
                return cascade(ctx, &ids).await;
            }
            if ctx.history_length() > MAX_HISTORY {
                return match ctx.continue_as_new(next(ctx, ids.len()), Default::default()) {
                    Err(t) => Err(t),
                    Ok(never) => match never {},
                };
            }
            let woke = {
                let done = ctx.wait_condition(|s| s.done).fuse();
                let sends = ctx.wait_condition(|s| !s.sends.is_empty()).fuse();
                let cancel = ctx.cancelled().fuse();
                futures::pin_mut!(done, sends, cancel);
                futures::select! {
                    _ = done => Some(false),
                    _ = cancel => Some(true),
                    _ = sends => None,
                }
            };
            match woke {
                None => {
                    let (sends, parent) =
                        ctx.state_mut(|s| (std::mem::take(&mut s.sends), s.parent.clone()));
                    let mut sends = sends.into_iter();
                    while let Some((name, payload, down, from)) = sends.next() {
                        let to = if down {
                            ids.clone()
                        } else {
                            parent.iter().cloned().collect()
                        };
                        if let Some(rest) = broadcast(ctx, &to, name, &payload, from).await {
                            // The history is long: this one's rest, and those after it, go to the
                            // next run (the loop's top continues as new).
                            let left: Vec<_> = std::iter::once((name, payload, down, rest))
                                .chain(sends)
                                .collect();
                            ctx.state_mut(|s| s.sends.splice(0..0, left).for_each(drop));
                            break;
                        }
                    }
                }
                Some(false) => return Ok(Value::Null),
                Some(true) => return cascade(ctx, &ids).await,
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
    pub fn down(&mut self, _ctx: &mut SyncWorkflowContext<Self>, v: Value) {
        let depth = v["depth"].as_u64().unwrap_or(0);
        if let Value::Object(m) = &v["value"] {
            self.value.extend(m.clone());
        }
        if depth > 0 {
            let on = json!({"value": v["value"], "depth": depth - 1});
            self.sends.push(("down", on, true, 0));
        }
    }

    /// `{"value": {...}, "hops": n}`: merges `value`, and sends it on to the parent while `hops`
    /// > 0 (S5: a grandchild's change reaching the root, 2 hops).
    #[signal(name = "up")]
    pub fn up(&mut self, _ctx: &mut SyncWorkflowContext<Self>, v: Value) {
        let hops = v["hops"].as_u64().unwrap_or(0);
        if let Value::Object(m) = &v["value"] {
            self.value.extend(m.clone());
        }
        if hops > 0 {
            let on = json!({"value": v["value"], "hops": hops - 1});
            self.sends.push(("up", on, false, 0));
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
