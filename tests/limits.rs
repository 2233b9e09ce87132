//! Big trees and big states: thousands of children, oversized inputs, long ids, deep data. Each test
//! checks that the workflow keeps running with no failed workflow task in any of its runs, and that
//! the data is right.

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::{Env, ensure_eq, eventually};

fn temporal(env: &Env, args: &[&str]) -> anyhow::Result<String> {
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
fn task_failures(env: &Env, wid: &str) -> anyhow::Result<(Vec<String>, usize)> {
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
fn no_failed_task(env: &Env, wid: &str) -> anyhow::Result<usize> {
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

/// The children of `wid` by status (`queued` counted apart from `running`).
async fn children_by_status(env: &Env, wid: &str) -> anyhow::Result<(usize, usize, usize)> {
    let kids = ops::query(&env.client, wid, "children").await?;
    let list = kids["children"]
        .as_array()
        .ok_or_else(|| anyhow!("no children list: {kids}"))?;
    let queued = list.iter().filter(|c| c["queued"] == json!(true)).count();
    let running = list.iter().filter(|c| c["status"] == "running").count() - queued;
    Ok((list.len(), running, queued))
}

/// 2,100 listings added by one update: more child starts than Temporal lets a run have pending
/// (2,000) and more bytes than one workflow task may carry. The starts leave in waves, the run
/// hands what it has no room for to the next one, and every child runs with its slice.
pub async fn an_update_adding_2100_children_starts_every_one_in_waves(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("big");
    let root = format!("User-{u}");
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "data": {"id": u, "name": "big"}}),
    )
    .await?;
    let n = 2_100;
    let ids: Vec<String> = (0..n).map(|i| format!("{u}-l{i}")).collect();
    let rows: serde_json::Map<String, Value> = ids
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.clone(),
                json!({"id": l, "name": format!("listing {i}"), "user": u}),
            )
        })
        .collect();
    ops::update(
        &env.client,
        &root,
        "update",
        &json!({"updates": {"User": {u.clone(): {"listings": ids}}, "Listing": rows}}),
    )
    .await?;
    eventually(Duration::from_secs(240), || async {
        let (all, running, queued) = children_by_status(env, &root).await?;
        if all == n && running == n && queued == 0 {
            Ok(())
        } else {
            bail!("{running} of {n} children running, {queued} queued ({all} known)")
        }
    })
    .await?;
    // A few children, first, middle and last, run with their slice.
    for i in [0, n / 2, n - 1] {
        let l = format!("{u}-l{i}");
        let st = ops::query(&env.client, &format!("Listing-{l}"), "state").await?;
        ensure_eq!(st["Listing"][&l]["name"], json!(format!("listing {i}")));
    }
    let runs = no_failed_task(env, &root)?;
    if runs < 3 {
        bail!("{n} children took {runs} runs; at most 1,000 children a run means at least 3");
    }
    Ok(())
}
