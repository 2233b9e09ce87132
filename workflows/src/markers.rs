//! Workflow and signal definitions by name, with JSON inputs, for clients and for workflow code that
//! addresses other workflows by their type or signal name.

use std::marker::PhantomData;

use serde_json::Value;
use temporalio_common::{
    HasWorkflowDefinition, SignalDefinition, UntypedWorkflow, WorkflowDefinition,
};

/// A workflow type by name with JSON input and output.
pub struct JsonWorkflow(pub String);

impl WorkflowDefinition for JsonWorkflow {
    type Input = Value;
    type Output = Value;
    fn name(&self) -> &str {
        &self.0
    }
}

impl HasWorkflowDefinition for JsonWorkflow {
    type Run = Self;
}

/// A signal by name with a JSON input.
pub struct JsonSignal<W = UntypedWorkflow>(pub String, PhantomData<W>);

impl<W> JsonSignal<W> {
    /// The signal `name`.
    pub fn new(name: impl Into<String>) -> Self {
        JsonSignal(name.into(), PhantomData)
    }
}

impl<W: WorkflowDefinition> SignalDefinition for JsonSignal<W> {
    type Workflow = W;
    type Input = Value;
    fn name(&self) -> &str {
        &self.0
    }
}
