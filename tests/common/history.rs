//! What a workflow's history says, through the `temporal` CLI as a user runs it: failed workflow
//! tasks and task attempts above 1, in every run.

use std::process::Command;

use anyhow::bail;
use serde_json::Value;

use stateful_workflows::markers::JsonWorkflow;
use temporalio_client::WorkflowDescribeOptions;

use crate::Env;

/// The status number of a running workflow execution (`WorkflowExecutionStatus::Running`).
pub const RUNNING: i32 = 1;

/// The status of `wid`'s latest run (see [`RUNNING`]).
pub async fn status_of(env: &Env, wid: &str) -> anyhow::Result<i32> {
    let d = env
        .client
        .get_workflow_handle::<JsonWorkflow>(wid)
        .describe(WorkflowDescribeOptions::default())
        .await?;
    Ok(d.raw()
        .workflow_execution_info
        .as_ref()
        .map(|i| i.status)
        .unwrap_or(0))
}

/// Runs the `temporal` CLI against the tests' dev server (namespace `default`); its standard output.
pub fn temporal(env: &Env, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&env.cli)
        .args(args)
        .args(["--address", &env.address, "--namespace", "default"])
        .output()?;
    if !out.status.success() {
        bail!(
            "temporal {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Failed workflow tasks and task attempts above 1 in every run of `wid` so far (each with its cause), and the
/// number of runs.
pub fn task_failures(env: &Env, wid: &str) -> anyhow::Result<(Vec<String>, usize)> {
    let list = temporal(
        env,
        &[
            "workflow",
            "list",
            "--query",
            &format!("WorkflowId = '{wid}'"),
            "--output",
            "json",
        ],
    )?;
    let runs: Vec<String> = serde_json::from_str::<Value>(&list)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["execution"]["runId"].as_str().map(str::to_string))
        .collect();
    if runs.is_empty() {
        bail!("no run of {wid} is listed");
    }
    let mut failed = Vec::new();
    for run in &runs {
        let show = temporal(
            env,
            &["workflow", "show", "-w", wid, "-r", run, "--output", "json"],
        )?;
        let h: Value = serde_json::from_str(&show)?;
        for e in h["events"].as_array().into_iter().flatten() {
            let t = e["eventType"].as_str().unwrap_or_default().to_uppercase();
            // A task retried after a failure (or a start-to-close timeout) is scheduled again with
            // its attempt counted up; a sticky queue's schedule-to-start timeout (a busy worker)
            // is not a failure and keeps attempt 1.
            let attempt = e["workflowTaskScheduledEventAttributes"]["attempt"]
                .as_u64()
                .unwrap_or(1);
            if t.contains("WORKFLOW_TASK_FAILED") || attempt > 1 {
                let a = e
                    .get("workflowTaskFailedEventAttributes")
                    .cloned()
                    .unwrap_or(Value::Null);
                let mut text = format!(
                    "event {} {t} (attempt {attempt}): {} {}",
                    e["eventId"], a["cause"], a["failure"]["message"]
                );
                text.truncate(600);
                failed.push(text);
            }
        }
    }
    Ok((failed, runs.len()))
}

/// Checks that `wid` never failed a workflow task; returns its number of runs.
pub fn no_failed_task(env: &Env, wid: &str) -> anyhow::Result<usize> {
    let (failed, runs) = task_failures(env, wid)?;
    if !failed.is_empty() {
        bail!(
            "{wid}: {} failed workflow tasks over {runs} runs:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(runs)
}
