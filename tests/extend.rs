//! A custom worker in Rust (`examples/custom-worker`, built on `worker::Worker::builder()`), on a
//! task queue of its own: its hook on `Listing` sees a price change, keeps `priceHistory`, calls
//! its own activity `priceAlert` and writes the answer back as `lastAlert`; its custom query,
//! signal and acknowledged update (`custom`, `{name, args}`) answer through the SDK client and the
//! `temporal` CLI; unknown names are refused with the known ones; a new worker process replays the
//! history the hook wrote; the hook keeps working across a continue-as-new; no workflow task fails.

use std::process::Command;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::history::task_failures;
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until};
use stateful_workflows::payload;
use temporalio_client::{UntypedQuery, UntypedWorkflow, WorkflowQueryOptions};

/// The `custom` query with its envelope.
async fn custom_query(env: &Env, wid: &str, input: Value) -> anyhow::Result<Value> {
    let raw = env
        .client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .query(
            UntypedQuery::new("custom"),
            payload::encode(&input),
            WorkflowQueryOptions::default(),
        )
        .await
        .map_err(|e| anyhow!("custom query {input} on {wid}: {e}"))?;
    payload::decode(&raw).map_err(|e| anyhow!("not JSON: {e}"))
}

/// The prices of `priceHistory`, oldest first.
fn prices(v: &Value) -> Vec<Value> {
    v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["price"].clone())
        .collect()
}

pub async fn a_custom_rust_worker_runs_its_hook_activity_and_handlers(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("extend-{}", env.tag);
    let w = WorkerProc::start_bin(
        "custom-worker",
        &env.address,
        &tq,
        &env.log_dir,
        "worker-custom",
        &[],
        "debug",
        &[],
    )
    .await?;
    w.wait_log("custom worker", std::time::Duration::from_secs(5))
        .await?;

    let l = env.id("ext");
    let wid = ops::workflow_id("Listing", &l);
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": l, "entityName": "Listing", "data": {"id": l, "title": "Flat", "price": 100}}),
    )
    .await?;

    // A client's price change: the hook keeps the price and calls `priceAlert`, whose answer
    // comes back as `lastAlert`.
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": l, "price": 120}}),
    )
    .await?;
    let data = query_until(env, &wid, "data", |v| v["lastAlert"]["to"] == json!(120)).await?;
    ensure_eq!(data["lastAlert"]["from"], json!(100));
    ensure_eq!(data["lastAlert"]["alert"], json!("price up"));
    ensure_eq!(data["lastAlert"]["listing"], json!(l));
    let h = custom_query(env, &wid, json!({"name": "priceHistory"})).await?;
    ensure_eq!(prices(&h), vec![json!(120)]);
    ensure_eq!(h["price"], json!(120));

    // The custom update: lowers the price, answers it; the hook sees it as any change.
    let answer = ops::update(
        &env.client,
        &wid,
        "custom",
        &json!({"name": "discount", "args": {"percent": 10}}),
    )
    .await?;
    ensure_eq!(answer, json!({"from": 120.0, "to": 108.0}));
    query_until(env, &wid, "data", |v| v["lastAlert"]["to"] == json!(108.0)).await?;
    let h = custom_query(env, &wid, json!({"name": "priceHistory"})).await?;
    ensure_eq!(prices(&h), vec![json!(120), json!(108.0)]);
    // Its own refusal, as an update's error.
    let refused = ops::update(
        &env.client,
        &wid,
        "custom",
        &json!({"name": "discount", "args": {"percent": 120}}),
    )
    .await;
    match refused {
        Err(e) if format!("{e:#}").contains("between 0 and 100") => {}
        other => bail!("a discount of 120% answered {other:?}"),
    }

    let h = custom_query(
        env,
        &wid,
        json!({"name": "priceHistory", "args": {"last": 1}}),
    )
    .await?;
    ensure_eq!(prices(&h), vec![json!(108.0)]);

    // Through the temporal CLI, as the README shows.
    let out = Command::new(&env.cli)
        .args([
            "workflow",
            "query",
            "--workflow-id",
            &wid,
            "--type",
            "custom",
        ])
        .args([
            "--input",
            r#"{"name": "priceHistory", "args": {"last": 1}}"#,
        ])
        .args(["--address", &env.address, "--namespace", "default"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || !text.contains("108") {
        bail!(
            "temporal workflow query --type custom: {}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Unknown names: refused, naming the known ones.
    match custom_query(env, &wid, json!({"name": "nope"})).await {
        Err(e) if e.to_string().contains("priceHistory") => {}
        other => bail!("an unknown custom query answered {other:?}"),
    }
    match ops::update(&env.client, &wid, "custom", &json!({"name": "nope"})).await {
        Err(e) if format!("{e:#}").contains("discount") => {}
        other => bail!("an unknown custom update answered {other:?}"),
    }

    // A new worker process: the workflow's history (the hook's activities, the custom update)
    // replays on it before its next task, deterministically (no failed task below).
    w.stop().await;
    let w = WorkerProc::start_bin(
        "custom-worker",
        &env.address,
        &tq,
        &env.log_dir,
        "worker-custom-2",
        &[],
        "debug",
        &[],
    )
    .await?;

    // The custom signal.
    ops::signal(
        &env.client,
        &wid,
        "custom",
        Some(&json!({"name": "clearHistory"})),
    )
    .await?;
    eventually(std::time::Duration::from_secs(20), || async {
        let h = custom_query(env, &wid, json!("priceHistory")).await?;
        if prices(&h).is_empty() {
            Ok(())
        } else {
            bail!("priceHistory not cleared: {h}")
        }
    })
    .await?;

    // Across a continue-as-new: the state carries what the hook kept, and the hook goes on.
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    query_until(env, &wid, "checkpoints", |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await?;
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": l, "price": 90}}),
    )
    .await?;
    let data = query_until(env, &wid, "data", |v| v["lastAlert"]["to"] == json!(90)).await?;
    ensure_eq!(data["lastAlert"]["alert"], json!("price down"));
    let h = custom_query(env, &wid, json!({"name": "priceHistory"})).await?;
    ensure_eq!(prices(&h), vec![json!(90)]);

    let (failed, runs) = task_failures(env, &wid)?;
    if !failed.is_empty() {
        bail!("{wid}: failed workflow tasks over {runs} runs: {failed:?}");
    }
    if runs < 2 {
        bail!("{wid}: the checkpoint did not continue as new ({runs} run)");
    }
    w.stop().await;
    Ok(())
}
