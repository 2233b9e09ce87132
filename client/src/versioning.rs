//! Worker Versioning as a client sees it: which Worker Deployment version a workflow runs on (from
//! `DescribeWorkflowExecution`'s versioning info), and the tree-wide upgrade: a `checkpoint` signal
//! to every workflow, whose continue-as-new starts the next run on the deployment's current version.

use anyhow::anyhow;
use serde_json::{Value, json};
use temporalio_client::{Client, UntypedWorkflow, WorkflowDescribeOptions};
use temporalio_common::protos::temporal::api::enums::v1::VersioningBehavior;

/// Where a workflow's latest run is, as describe reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunVersion {
    /// The latest run's id.
    pub run_id: String,
    /// True while the run is open.
    pub running: bool,
    /// `deployment:buildId`, or `unversioned` (no versioning info: an unversioned worker ran it,
    /// or no worker has completed its first task yet).
    pub version: String,
    /// `pinned`, `autoUpgrade`, or `unversioned`.
    pub behavior: String,
    /// The version a transition moves it to, while one is under way (auto-upgrade only).
    pub transition: Option<String>,
    /// The Worker Deployment's name (None: unversioned).
    pub deployment: Option<String>,
}

impl RunVersion {
    /// As JSON (`runId`, `running`, `deploymentVersion`, `versioningBehavior`, `transition`).
    pub fn to_json(&self) -> Value {
        json!({
            "runId": self.run_id,
            "running": self.running,
            "deploymentVersion": self.version,
            "versioningBehavior": self.behavior,
            "transition": self.transition,
        })
    }
}

/// The label of a version: `deployment:buildId`.
pub fn label(deployment_name: &str, build_id: &str) -> String {
    format!("{deployment_name}:{build_id}")
}

/// The deployment version of `workflow_id`'s latest run (describe's `versioning_info`).
pub async fn run_version(client: &Client, workflow_id: &str) -> anyhow::Result<RunVersion> {
    let d = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .describe(WorkflowDescribeOptions::default())
        .await
        .map_err(|e| anyhow!("cannot describe {workflow_id}: {e}"))?;
    let info = d
        .raw()
        .workflow_execution_info
        .as_ref()
        .ok_or_else(|| anyhow!("describe of {workflow_id} holds no execution info"))?;
    let run_id = info
        .execution
        .as_ref()
        .map(|e| e.run_id.clone())
        .unwrap_or_default();
    let v = info.versioning_info.as_ref();
    let deployment = v
        .and_then(|v| v.deployment_version.as_ref())
        .filter(|d| !d.build_id.is_empty())
        .map(|d| d.deployment_name.clone());
    let version = v
        .and_then(|v| v.deployment_version.as_ref())
        .filter(|d| !d.build_id.is_empty())
        .map(|d| label(&d.deployment_name, &d.build_id))
        .unwrap_or_else(|| "unversioned".to_string());
    let behavior = match v.map(|v| v.behavior()) {
        Some(VersioningBehavior::Pinned) => "pinned",
        Some(VersioningBehavior::AutoUpgrade) => "autoUpgrade",
        _ => "unversioned",
    }
    .to_string();
    let transition =
        v.and_then(|v| v.version_transition.as_ref())
            .map(|t| match &t.deployment_version {
                Some(d) if !d.build_id.is_empty() => label(&d.deployment_name, &d.build_id),
                _ => "unversioned".to_string(),
            });
    Ok(RunVersion {
        run_id,
        // WORKFLOW_EXECUTION_STATUS_RUNNING
        running: info.status == 1,
        version,
        behavior,
        transition,
        deployment,
    })
}

/// A Worker Deployment's current version, as the server routes new runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// `deployment:buildId`, or `unversioned` (the deployment routes to unversioned workers).
    pub version: String,
    /// True once the routing config has reached every task queue partition: until then, a run
    /// that continues as new may still start on the previous current version.
    pub propagated: bool,
}

/// The current version of the deployment named `deployment` (`DescribeWorkerDeployment`).
pub async fn current_version(
    client: &Client,
    namespace: &str,
    deployment: &str,
) -> anyhow::Result<Current> {
    use temporalio_common::protos::temporal::api::enums::v1::RoutingConfigUpdateState;
    use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeWorkerDeploymentRequest;
    let mut svc = client.connection().workflow_service();
    let info = svc
        .describe_worker_deployment(temporalio_client::tonic::Request::new(
            DescribeWorkerDeploymentRequest {
                namespace: namespace.into(),
                deployment_name: deployment.into(),
            },
        ))
        .await
        .map_err(|s| {
            anyhow!(
                "cannot describe the deployment {deployment}: {}",
                s.message()
            )
        })?
        .into_inner()
        .worker_deployment_info
        .unwrap_or_default();
    let version = info
        .routing_config
        .as_ref()
        .and_then(|r| r.current_deployment_version.as_ref())
        .filter(|d| !d.build_id.is_empty())
        .map(|d| label(&d.deployment_name, &d.build_id))
        .unwrap_or_else(|| "unversioned".to_string());
    Ok(Current {
        version,
        propagated: info.routing_config_update_state() != RoutingConfigUpdateState::InProgress,
    })
}
