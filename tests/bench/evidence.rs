//! Evidence for the large scenarios (S11, S12) when a target is missed: failed or retried workflow
//! tasks and terminations in every run of a workflow, the pending workflow task and history of the
//! workflows left behind, the worker's gauges and its log's warnings.

use std::path::Path;

use anyhow::{anyhow, bail};
use serde_json::Value;
use stateful_tests::WorkerProc;

/// `s` cut to at most `n` bytes, at a character boundary.
pub(crate) fn cut(mut s: String, n: usize) -> String {
    if s.len() > n {
        let mut i = n;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
    s
}

/// Failed or retried workflow tasks, terminations and failures in every run of `wid` (through the
/// `temporal` CLI, which lists closed runs too), and its number of runs.
pub(crate) async fn problems(cli: &Path, address: &str, wid: &str) -> (Vec<String>, usize) {
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(cli)
            .args(&args)
            .args(["--address", address, "--namespace", "default"])
            .output()
            .await
            .map_err(|e| anyhow!("temporal: {e}"))?;
        if !out.status.success() {
            bail!(
                "temporal {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        anyhow::Ok(serde_json::from_slice::<Value>(&out.stdout)?)
    };
    let list = match run(vec![
        "workflow".into(),
        "list".into(),
        "--query".into(),
        format!("WorkflowId = '{wid}'"),
        "--output".into(),
        "json".into(),
    ])
    .await
    {
        Ok(v) => v,
        Err(e) => return (vec![format!("cannot list the runs of {wid}: {e:#}")], 0),
    };
    let runs: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["execution"]["runId"].as_str().map(str::to_string))
        .collect();
    let mut found = Vec::new();
    for r in &runs {
        let h = match run(["workflow", "show", "-w", wid, "-r", r, "--output", "json"]
            .map(String::from)
            .to_vec())
        .await
        {
            Ok(h) => h,
            Err(e) => {
                found.push(format!("run {r}: cannot show its history: {e:#}"));
                continue;
            }
        };
        for e in h["events"].as_array().into_iter().flatten() {
            let t = e["eventType"].as_str().unwrap_or_default().to_uppercase();
            let attempt = e["workflowTaskScheduledEventAttributes"]["attempt"]
                .as_u64()
                .unwrap_or(1);
            let bad = ["FAILED", "TERMINATED", "TIMED_OUT"]
                .iter()
                .any(|k| t.contains(k))
                && !t.contains("CHILD_WORKFLOW");
            if bad || attempt > 1 {
                let attrs: String = e
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.ends_with("Attributes"))
                    .map(|(_, v)| v.to_string())
                    .collect();
                found.push(cut(
                    format!(
                        "run {r}, event {} {t} (attempt {attempt}): {attrs}",
                        e["eventId"]
                    ),
                    700,
                ));
            }
        }
    }
    (found, runs.len())
}

/// The worker log's WARN and ERROR lines: how many, and the first few distinct messages.
pub(crate) fn log_summary(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    for level in ["ERROR", "WARN"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!(" {level} ")))
            .collect();
        let mut seen: Vec<String> = Vec::new();
        for l in &lines {
            // The message without the time stamp, cut to a readable length.
            let m = cut(
                l.split_once(level)
                    .map_or(*l, |(_, m)| m)
                    .trim()
                    .to_string(),
                300,
            );
            if !seen
                .iter()
                .any(|s| s.chars().take(80).eq(m.chars().take(80)))
            {
                seen.push(m);
            }
            if seen.len() == 5 {
                break;
            }
        }
        out.push(format!("{} {level} lines", lines.len()));
        out.extend(seen.into_iter().map(|m| format!("  {level}: {m}")));
    }
    out.join("\n")
}

/// Evidence about workflows that never got there: each one's pending workflow task (state,
/// attempt) and the signals and timeouts of its history (through the `temporal` CLI).
pub(crate) async fn stuck_evidence(cli: &Path, address: &str, wids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for w in wids.iter().take(5) {
        let run = |args: Vec<&str>| {
            tokio::process::Command::new(cli)
                .args(args)
                .args(["-w", w, "--output", "json"])
                .args(["--address", address, "--namespace", "default"])
                .output()
        };
        let pending = match run(vec!["workflow", "describe"]).await {
            Ok(o) => serde_json::from_slice::<Value>(&o.stdout)
                .map(|d| d["pendingWorkflowTask"].to_string())
                .unwrap_or_default(),
            Err(e) => format!("describe failed: {e}"),
        };
        let events: Vec<String> = match run(vec!["workflow", "show"]).await {
            Ok(o) => serde_json::from_slice::<Value>(&o.stdout)
                .ok()
                .and_then(|h| h["events"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|e| {
                    let t = e["eventType"].as_str().unwrap_or_default();
                    t.contains("SIGNALED") || t.contains("TIMED_OUT") || t.contains("FAILED")
                })
                .map(|e| {
                    format!(
                        "{} {} {}{}",
                        e["eventId"].as_str().unwrap_or_default(),
                        e["eventTime"].as_str().unwrap_or_default(),
                        e["eventType"]
                            .as_str()
                            .unwrap_or_default()
                            .trim_start_matches("EVENT_TYPE_"),
                        e["workflowExecutionSignaledEventAttributes"]["signalName"]
                            .as_str()
                            .map(|s| format!(" {s}"))
                            .unwrap_or_else(|| {
                                e["workflowTaskTimedOutEventAttributes"]["timeoutType"]
                                    .as_str()
                                    .map(|s| format!(" {s}"))
                                    .unwrap_or_default()
                            })
                    )
                })
                .collect(),
            Err(e) => vec![format!("show failed: {e}")],
        };
        out.push(format!(
            "{w}: pending workflow task {pending}; history: {}",
            events.join(", ")
        ));
    }
    out
}

/// The worker's workflow-task slots in use and its sticky cache (from its metrics).
pub(crate) async fn worker_gauges(w: &WorkerProc) -> String {
    let Some(url) = w.ready_field("metrics") else {
        return "no metrics address".into();
    };
    let text = match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return format!("metrics: {e}"),
    };
    let get = |name: &str, filter: &str| -> String {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next())
            .collect::<Vec<_>>()
            .join("+")
    };
    format!(
        "workflow task slots used {}, sticky cache size {}, forced evictions {}, task failures {}",
        get("temporal_worker_task_slots_used", "WorkflowWorker"),
        get("temporal_sticky_cache_size", ""),
        get("temporal_sticky_cache_total_forced_eviction", ""),
        get("temporal_workflow_task_execution_failed", "")
    )
}

/// The message of the failure that closed `wid`'s latest run, if it failed.
pub(crate) async fn failure_message(cli: &Path, address: &str, wid: &str) -> Option<String> {
    let out = tokio::process::Command::new(cli)
        .args(["workflow", "show", "-w", wid, "--output", "json"])
        .args(["--address", address, "--namespace", "default"])
        .output()
        .await
        .ok()?;
    let h: Value = serde_json::from_slice(&out.stdout).ok()?;
    h["events"].as_array()?.iter().rev().find_map(|e| {
        e["workflowExecutionFailedEventAttributes"]["failure"]["message"]
            .as_str()
            .map(str::to_string)
    })
}
