//! The `workflowType` local activity: what runs under a workflow id (DescribeWorkflowExecution of
//! its latest run), so that a parent adopts a workflow found running under a child's id only when it
//! is of the expected type (see `stateful_core::tree`, `Effect::Verify`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use stateful_core::Described;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, UntypedWorkflow, WorkflowDescribeOptions};
use temporalio_common::RetryPolicy;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_macros::activities;
use temporalio_sdk::LocalActivityOptions;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Describes workflows with the worker's client.
pub struct DescribeActivities {
    client: Client,
}

impl DescribeActivities {
    /// With the worker's (connected) client.
    pub fn new(client: Client) -> DescribeActivities {
        DescribeActivities { client }
    }
}

#[activities]
impl DescribeActivities {
    /// The type of the workflow that runs (or last ran) under `workflow_id`, and whether it runs;
    /// no workflow with that id is an answer too (`workflowType: null`). Other errors (the server
    /// unreachable, no permission) fail the attempt, and are retried.
    #[activity(name = "workflowType")]
    pub async fn workflow_type(
        self: Arc<Self>,
        _ctx: ActivityContext,
        workflow_id: String,
    ) -> Result<Described, ActivityError> {
        let d = match self
            .client
            .get_workflow_handle::<UntypedWorkflow>(&workflow_id)
            .describe(WorkflowDescribeOptions::default())
            .await
        {
            Ok(d) => d,
            Err(WorkflowInteractionError::NotFound(_)) => {
                return Ok(Described {
                    workflow_type: None,
                    running: false,
                    status: "notFound".into(),
                });
            }
            Err(e) => return Err(anyhow!("describing {workflow_id}: {e}").into()),
        };
        let info = d
            .raw()
            .workflow_execution_info
            .as_ref()
            .ok_or_else(|| anyhow!("describing {workflow_id}: no execution info"))?;
        let status = WorkflowExecutionStatus::try_from(info.status)
            .unwrap_or(WorkflowExecutionStatus::Unspecified);
        Ok(Described {
            workflow_type: info.r#type.as_ref().map(|t| t.name.clone()),
            running: status == WorkflowExecutionStatus::Running,
            status: status
                .as_str_name()
                .trim_start_matches("WORKFLOW_EXECUTION_STATUS_")
                .to_lowercase(),
        })
    }
}

/// A description takes one call: a few attempts within a minute (the answer is recorded in
/// history; a workflow that cannot be described is not adopted).
pub(crate) fn describe_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .schedule_to_close_timeout(Duration::from_secs(60))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(5)
                .build(),
        )
        .cancellation_token(temporalio_sdk::WorkflowCancellationToken::new())
        .build()
}
