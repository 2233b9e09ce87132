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
/// `WorkflowExecutionStatus::Canceled`.
pub const CANCELED: i32 = 4;

/// What `describe` says of `wid`'s latest run.
async fn execution_info(
    env: &Env,
    wid: &str,
) -> anyhow::Result<
    Option<temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo>,
> {
    let d = env
        .client
        .get_workflow_handle::<JsonWorkflow>(wid)
        .describe(WorkflowDescribeOptions::default())
        .await?;
    Ok(d.raw().workflow_execution_info.clone())
}

/// The status of `wid`'s latest run (see [`RUNNING`]).
pub async fn status_of(env: &Env, wid: &str) -> anyhow::Result<i32> {
    Ok(execution_info(env, wid).await?.map_or(0, |i| i.status))
}

/// The status of `wid`'s latest run, and whether it is the first run (no continue-as-new before).
pub async fn status_in_first_run(env: &Env, wid: &str) -> anyhow::Result<(i32, bool)> {
    let info = execution_info(env, wid).await?.unwrap_or_default();
    let run = info.execution.as_ref().map(|e| e.run_id.as_str());
    Ok((info.status, run == Some(info.first_run_id.as_str())))
}

/// The run id of `wid`'s latest run.
pub async fn run_id_of(env: &Env, wid: &str) -> anyhow::Result<String> {
    Ok(execution_info(env, wid)
        .await?
        .and_then(|i| i.execution)
        .map(|e| e.run_id)
        .unwrap_or_default())
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
    let runs = runs_of(env, wid)?;
    if runs.is_empty() {
        bail!("no run of {wid} is listed");
    }
    let mut failed = Vec::new();
    for run in &runs {
        let h = history_of(env, wid, run)?;
        for e in h["events"].as_array().into_iter().flatten() {
            let t = e["eventType"].as_str().unwrap_or_default().to_uppercase();
            // A task retried after a failure (or a start-to-close timeout) is scheduled again with
            // its attempt counted up; a sticky queue's schedule-to-start timeout (a busy worker)
            // is not a failure and keeps attempt 1.
            let attempt = e["workflowTaskScheduledEventAttributes"]["attempt"]
                .as_u64()
                .unwrap_or(1);
            // A task whose completion closed the run (continue-as-new) while a new event (a
            // client's signal) arrived is refused by the server as `UnhandledCommand` and runs
            // again at once with that event, at attempt 1: Temporal's way of never losing a
            // message at a close, not a failure of the workflow code.
            let unhandled = e["workflowTaskFailedEventAttributes"]["cause"]
                .as_str()
                .is_some_and(|c| c.contains("UNHANDLED_COMMAND"));
            if (t.contains("WORKFLOW_TASK_FAILED") && !unhandled) || attempt > 1 {
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

/// The run ids of `wid`, newest first (as `temporal workflow list` shows them).
pub fn runs_of(env: &Env, wid: &str) -> anyhow::Result<Vec<String>> {
    let list = temporal(
        env,
        &[
            "workflow",
            "list",
            "--query",
            &format!("WorkflowId = {}", stateful_client::visibility::quote(wid)),
            "--output",
            "json",
        ],
    )?;
    Ok(serde_json::from_str::<Value>(&list)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["execution"]["runId"].as_str().map(str::to_string))
        .collect())
}

/// The history of one run (`temporal workflow show --output json`).
pub fn history_of(env: &Env, wid: &str, run: &str) -> anyhow::Result<Value> {
    let show = temporal(
        env,
        &["workflow", "show", "-w", wid, "-r", run, "--output", "json"],
    )?;
    Ok(serde_json::from_str(&show)?)
}

/// The number of events in the longest run of `wid` so far.
pub fn longest_run(env: &Env, wid: &str) -> anyhow::Result<usize> {
    let mut longest = 0;
    for run in runs_of(env, wid)? {
        let h = history_of(env, wid, &run)?;
        longest = longest.max(h["events"].as_array().map_or(0, Vec::len));
    }
    Ok(longest)
}

/// The history of every run of `wid` ([`history_of`]), in the order of [`runs_of`] (the latest
/// first).
pub fn run_histories(env: &Env, wid: &str) -> anyhow::Result<Vec<Value>> {
    let runs = runs_of(env, wid)?;
    if runs.is_empty() {
        bail!("no run of {wid} is listed");
    }
    runs.iter().map(|run| history_of(env, wid, run)).collect()
}

/// What [`task_failures_beyond_kills`] found in the histories of a workflow.
#[derive(Debug, Default)]
pub struct TaskTrouble {
    /// Failed workflow tasks, tasks that timed out without a killed worker to blame, and attempts
    /// above 1 that none of those explains.
    pub failures: Vec<String>,
    /// Tasks that timed out (start-to-close) because the worker that had started them was killed.
    pub excused: Vec<String>,
    /// The workflow's runs.
    pub runs: usize,
}

/// Like [`task_failures`], but a workflow task that timed out (start-to-close) in the hands of a
/// worker process in `killed` is excused, and so is the attempt 2 that follows it: a killed worker
/// never answers the task it held, and Temporal gives it to another worker once the task's timeout
/// has passed. Whose hands: the identity of the worker that started the task
/// (`stateful-worker-{pid}@…`), or, where the server recorded none (seen on some timed-out tasks),
/// the owner of the sticky queue the task was on (`{identity}-{uuid}`: only that worker polls it).
/// Every failed task (but `UnhandledCommand`, as for [`task_failures`]), any other timeout (but a
/// sticky queue's schedule-to-start timeout, which is not a failure) and any attempt above 1 that
/// none of these explains is a failure.
pub fn task_failures_beyond_kills(
    env: &Env,
    wid: &str,
    killed: &[u32],
) -> anyhow::Result<TaskTrouble> {
    let histories = run_histories(env, wid)?;
    let mut out = TaskTrouble {
        runs: histories.len(),
        ..Default::default()
    };
    let num = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok());
    let killed: Vec<String> = killed
        .iter()
        .map(|pid| format!("stateful-worker-{pid}@"))
        .collect();
    for h in &histories {
        // Event id → who started that task, or whose sticky queue that task was scheduled on.
        let mut started_by = std::collections::BTreeMap::new();
        let mut sticky_of = std::collections::BTreeMap::new();
        // The outcome of the latest task that did not complete: excused (a kill) or a failure.
        let mut last: Option<bool> = None;
        for e in h["events"].as_array().into_iter().flatten() {
            let t = e["eventType"].as_str().unwrap_or_default().to_uppercase();
            let id = num(&e["eventId"]).unwrap_or(0);
            let kind = t.rsplit("WORKFLOW_TASK_").next().unwrap_or_default();
            if !t.contains("WORKFLOW_TASK_") {
                continue;
            }
            match kind {
                "SCHEDULED" => {
                    let a = &e["workflowTaskScheduledEventAttributes"];
                    if a["taskQueue"]["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .ends_with("STICKY")
                    {
                        let name = a["taskQueue"]["name"].as_str().unwrap_or_default();
                        sticky_of.insert(id, name.to_string());
                    }
                    let attempt = a["attempt"].as_u64().unwrap_or(1);
                    if attempt > 1 && last.is_none() {
                        out.failures.push(format!(
                            "event {id} {t} (attempt {attempt}) with no failure before it"
                        ));
                    }
                }
                "STARTED" => {
                    let who = e["workflowTaskStartedEventAttributes"]["identity"]
                        .as_str()
                        .unwrap_or_default();
                    started_by.insert(id, who.to_string());
                }
                "COMPLETED" => last = None,
                "FAILED" => {
                    let a = &e["workflowTaskFailedEventAttributes"];
                    if a["cause"]
                        .as_str()
                        .is_some_and(|c| c.contains("UNHANDLED_COMMAND"))
                    {
                        last = None;
                        continue;
                    }
                    let mut text = format!(
                        "event {id} {t}: {} {} (identity {})",
                        a["cause"], a["failure"]["message"], a["identity"]
                    );
                    text.truncate(600);
                    out.failures.push(text);
                    last = Some(false);
                }
                "TIMED_OUT" => {
                    let a = &e["workflowTaskTimedOutEventAttributes"];
                    let timeout = a["timeoutType"]
                        .as_str()
                        .unwrap_or_default()
                        .to_uppercase()
                        .replace('_', "");
                    if timeout.contains("SCHEDULETOSTART") {
                        // A sticky queue nobody polls any more: the task goes to the normal queue.
                        continue;
                    }
                    let who = num(&a["startedEventId"])
                        .and_then(|s| started_by.get(&s))
                        .filter(|who| !who.is_empty())
                        .or_else(|| num(&a["scheduledEventId"]).and_then(|s| sticky_of.get(&s)))
                        .cloned()
                        .unwrap_or_default();
                    let text = format!("event {id} {t} ({timeout}) of a task started by {who}");
                    if timeout.contains("STARTTOCLOSE") && killed.iter().any(|k| who.starts_with(k))
                    {
                        out.excused.push(text);
                        last = Some(true);
                    } else {
                        out.failures.push(text);
                        last = Some(false);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The raw history of `wid`'s latest run as JSON, as the client fetches it (payloads as they are
/// stored: base64, and encrypted when the codec encrypts).
pub async fn raw_history(client: &temporalio_client::Client, wid: &str) -> anyhow::Result<String> {
    let json = client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid)
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    Ok(String::from_utf8_lossy(&json).into_owned())
}

/// `text` (a history as JSON, as `temporal workflow show` or the client print it) with every string
/// of it that is base64 decoded and appended: payloads' `data` are base64.
pub fn with_payloads_decoded(text: &str) -> String {
    use base64::Engine;
    let mut out = text.to_string();
    for piece in text.split('"') {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(piece) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

/// `text` with every run of 8 or more hexadecimal digits and dashes (ids: run ids, request ids,
/// checksums) replaced by `#`.
pub fn without_hex_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 8 {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod scrub_tests {
    #[test]
    fn ids_go_and_short_values_stay() {
        let t = r#"{"runId":"01a22e73-dbf9-7e41-f000-244309d38c9d","f000":"v"}"#;
        let s = super::without_hex_runs(t);
        assert!(s.contains("\"f000\""), "{s}");
        assert!(!s.contains("dbf9"), "{s}");
    }
}
