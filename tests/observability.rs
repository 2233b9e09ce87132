//! What an operator reads: the worker's JSON log (`--log-format json`), and the labels and names of
//! its Prometheus series (`namespace`, `task_queue`, `--metrics-*`).

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::FakeApi;
use stateful_tests::history::{RUNNING, status_of};
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until};

/// Waits until `wid`'s run has ended.
async fn ended(env: &Env, wid: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), || async {
        match status_of(env, wid).await? {
            RUNNING => bail!("{wid} still runs"),
            _ => Ok(()),
        }
    })
    .await
}

/// With `--log-format json`, every line of the worker's log is one JSON object; the lines of
/// workflow code name their workflow (namespace, task queue, workflow id, run id, type) in `span`;
/// the token is in none of them.
pub async fn json_logs_parse_line_by_line_and_name_the_workflow(env: &Env) -> anyhow::Result<()> {
    let tq = format!("obs-json-{}", env.tag);
    let w = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-json",
        &["--log-format", "json"],
    )
    .await?;
    let id = env.id("obs-json");
    let l = format!("{id}-l1");
    let secret = format!("SECRET-{}-json", env.tag);
    let wid = ops::workflow_id("User", &id);
    let run_id = ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "apiToken": secret,
               "data": {"id": id, "listings": [{"id": l, "user": id}]}}),
    )
    .await?;
    // A child start (an INFO line) and a rejected input (a WARN line) of the root.
    query_until(env, &wid, "children", |v| v["total"] == 1).await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"strategy": "$nope"})),
    )
    .await?;
    query_until(env, &wid, "rejected", |v| v["total"] == 1).await?;
    w.wait_log("rejected input", Duration::from_secs(30))
        .await?;
    ops::signal(&env.client, &wid, "cancel", None).await?;
    ended(env, &wid).await?;
    let text = std::fs::read_to_string(&w.log)?;
    w.stop().await;

    let mut lines = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("line {} of the log is not JSON ({e}): {line}", n + 1))?;
        for key in ["timestamp", "level", "message", "target"] {
            if !v.get(key).is_some_and(Value::is_string) {
                bail!("line {} has no `{key}`: {line}", n + 1);
            }
        }
        lines.push(v);
    }
    if text.contains(&secret) {
        bail!("the JSON log holds the token");
    }
    // Every line of workflow code names its workflow: the `workflow` span, among its spans (other
    // spans may enclose it, or be entered inside it).
    let workflow_span = |v: &Value| -> Value {
        v["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "workflow"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let ours: Vec<(&Value, Value)> = lines
        .iter()
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("stateful_workflows"))
        })
        .map(|v| (v, workflow_span(v)))
        .collect();
    for (v, s) in &ours {
        for key in [
            "namespace",
            "task_queue",
            "workflow_id",
            "run_id",
            "workflow_type",
        ] {
            if !s.get(key).is_some_and(Value::is_string) {
                bail!("a line of workflow code has no span.{key}: {v}");
            }
        }
    }
    let root: Vec<&(&Value, Value)> = ours
        .iter()
        .filter(|(_, s)| s["workflow_id"] == wid.as_str())
        .collect();
    for message in ["starting child", "rejected input"] {
        let Some((_, s)) = root.iter().find(|(v, _)| v["message"] == message) else {
            bail!("no `{message}` line of {wid}; its lines: {root:?}");
        };
        ensure_eq!(
            s,
            &json!({"name": "workflow", "namespace": "default", "task_queue": tq,
                   "workflow_id": wid, "run_id": run_id, "workflow_type": "StatefulWorkflow"})
        );
    }
    let (rejected, _) = root
        .iter()
        .find(|(v, _)| v["message"] == "rejected input")
        .ok_or_else(|| anyhow!("no rejected input"))?;
    ensure_eq!(rejected["level"], json!("WARN"));
    ensure_eq!(rejected["signal"], json!("update"));
    Ok(())
}

/// Our series carry the worker's `namespace` and `task_queue`, and the `--metrics-*` flags give
/// them Prometheus's names: `_total` on counters, durations in seconds with the unit in the name.
pub async fn metrics_carry_namespace_and_task_queue_and_follow_the_naming_flags(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(60).await?;
    let tq = format!("obs-metrics-{}", env.tag);
    let w = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-metrics-names",
        &[
            "--metrics-total-suffix",
            "--metrics-unit-suffix",
            "--metrics-seconds",
        ],
    )
    .await?;
    let metrics = w
        .ready_field("metrics")
        .ok_or_else(|| anyhow!("the worker did not say where its metrics are"))?;
    let id = env.id("obs-metrics");
    api.put(
        &format!("/users/{id}"),
        json!({"id": id, "name": "Metered"}),
    );
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "apiBase": api.base}),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "Metered").await?;
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "x": 1}}),
    )
    .await?;
    let scope = "namespace=\"default\"";
    let queue = format!("task_queue=\"{tq}\"");
    let text = eventually(Duration::from_secs(15), || async {
        let text = reqwest::get(&metrics).await?.text().await?;
        let has = |name: &str, more: &str| {
            text.lines().any(|l| {
                l.starts_with(name)
                    && l.contains(scope)
                    && l.contains(&queue)
                    && l.contains(more)
                    && !l.trim_end().ends_with(" 0")
            })
        };
        if has("stateful_changes_applied_total{", "")
            && has("stateful_loads_total{", "outcome=\"ok\"")
            && has("stateful_api_requests_total{", "host=\"127.0.0.60\"")
            && has(
                "stateful_api_request_latency_seconds_bucket{",
                "le=\"+Inf\"",
            )
        {
            Ok(text)
        } else {
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("stateful_"))
                .collect();
            Err(anyhow!("not all our series yet: {ours:?}"))
        }
    })
    .await?;
    // Every sample of ours carries both labels, and no name is left without its suffix.
    for l in text.lines().filter(|l| l.starts_with("stateful_")) {
        if !l.contains(scope) || !l.contains(&queue) {
            bail!("a series without namespace and task_queue: {l}");
        }
        let name = l.split(['{', ' ']).next().unwrap_or_default();
        let named = name.ends_with("_total")
            || name.starts_with("stateful_api_request_latency_seconds_")
            || name == "stateful_api_circuit_open";
        if !named {
            bail!("{name} has no Prometheus suffix (a counter without _total?): {l}");
        }
    }
    ops::signal(&env.client, &wid, "cancel", None).await?;
    ended(env, &wid).await?;
    w.stop().await;
    Ok(())
}
