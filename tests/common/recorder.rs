//! `RecorderWorkflow`: another workflow type, on another task queue, that records its input and every
//! signal it receives — a stand-in for a foreign member of a mixed fleet (e.g. a chrono-forge child).

use serde_json::{Value, json};
use stateful_workflows::payload;
use temporalio_client::Client;
use temporalio_common::data_converters::RawValue;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    SyncWorkflowContext, WorkerOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The recorder.
#[workflow]
#[derive(Default)]
pub struct RecorderWorkflow {
    input: Value,
    got: Vec<Value>,
    done: bool,
}

impl RecorderWorkflow {
    fn record(&mut self, name: &str, input: RawValue) {
        self.got.push(
            json!({"signal": name, "payload": payload::decode(&input).unwrap_or(Value::Null)}),
        );
    }
}

#[workflow_methods]
impl RecorderWorkflow {
    /// Records the input, then waits for `cancel` (or a cancellation request).
    #[run(name = "RecorderWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: RawValue) -> WorkflowResult<Value> {
        let v = payload::decode(&input).unwrap_or(Value::Null);
        ctx.state_mut(|s| s.input = v);
        let _ = ctx.wait_condition(|s| s.done).await;
        Ok(Value::Null)
    }
    /// Recorded.
    #[signal(name = "update")]
    pub fn update(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.record("update", input);
    }
    /// Recorded.
    #[signal(name = "delete")]
    pub fn delete(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.record("delete", input);
    }
    /// Recorded.
    #[signal(name = "apiToken")]
    pub fn api_token(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.record("apiToken", input);
    }
    /// Recorded.
    #[signal(name = "pause")]
    pub fn pause(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.record("pause", input);
    }
    /// Recorded.
    #[signal(name = "resume")]
    pub fn resume(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.record("resume", input);
    }
    /// Recorded; ends the recorder.
    #[signal(name = "cancel")]
    pub fn cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.record("cancel", input);
        self.done = true;
    }
    /// Its input and what it received.
    #[query(name = "received")]
    pub fn received(&self, _ctx: &WorkflowContextView) -> Value {
        json!({"input": self.input, "signals": self.got})
    }
}

/// Runs a worker for `RecorderWorkflow` on `task_queue`, on a thread of its own (the SDK's worker
/// future is not `Send`), until the process ends.
pub fn spawn_recorder_worker(client: Client, task_queue: String) {
    crate::spawn_worker(client, move || {
        WorkerOptions::new(task_queue)
            .register_workflow::<RecorderWorkflow>()
            .expect("register")
            .build()
    });
}
