//! The raw-Temporal floor for the benchmarks: the thinnest workflow that does what the scenarios
//! measure — a JSON value, one signal (`set`, merged in), one query (`get`), and children that only
//! wait — so every figure can be read as a ratio to what Temporal itself costs on the machine.

use serde_json::{Value, json};
use temporalio_client::Client;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, SyncWorkflowContext, WorkerOptions, WorkflowContext,
    WorkflowContextView, WorkflowResult, runtime::PollerBehavior,
};

/// The floor workflow.
#[workflow]
#[derive(Default)]
pub struct FloorParent {
    value: serde_json::Map<String, Value>,
    done: bool,
}

#[workflow_methods]
impl FloorParent {
    /// Starts `children` children (each with `grandchildren` of its own), then waits for `done`.
    #[run(name = "FloorParent")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: Value) -> WorkflowResult<Value> {
        let n = input["children"].as_u64().unwrap_or(0);
        let g = input["grandchildren"].as_u64().unwrap_or(0);
        let mut starts = Vec::new();
        for i in 0..n {
            let opts = ChildWorkflowOptions::builder()
                .workflow_id(format!(
                    "{}-{}{i}",
                    ctx.workflow_id(),
                    if g > 0 || input["level"].is_null() {
                        "c"
                    } else {
                        "g"
                    }
                ))
                .parent_close_policy(ParentClosePolicy::Abandon)
                .build();
            starts.push(ctx.start_child_workflow(
                FloorParent::run,
                json!({"children": g, "grandchildren": 0, "level": 1}),
                opts,
            ));
        }
        // All starts at once, as StatefulWorkflow does (awaiting them one by one would put a round trip
        // to the server between two children).
        let _ = futures::future::join_all(starts).await;
        let _ = ctx.wait_condition(|s| s.done).await;
        Ok(Value::Null)
    }

    /// Merges an object into the value.
    #[signal(name = "set")]
    pub fn set(&mut self, _ctx: &mut SyncWorkflowContext<Self>, v: Value) {
        if let Value::Object(m) = v {
            self.value.extend(m);
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

/// Runs a worker for the floor workflow on `task_queue`, on a thread of its own.
pub fn spawn_floor_worker(client: Client, task_queue: String) {
    crate::spawn_worker(client, move || {
        WorkerOptions::new(task_queue)
            .register_workflow::<FloorParent>()
            .expect("register")
            .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(10))
            .build()
    });
}
