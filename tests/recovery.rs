//! Recovery: a worker killed (SIGKILL) in the middle of a burst of updates and of a token rotation
//! through a tree; a new worker picks everything up. And `temporal workflow reset` back to an earlier
//! point.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until};

pub async fn a_worker_killed_mid_burst_and_mid_rotation_loses_and_repeats_nothing(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("{}-recover", env.task_queue);
    let mut w = WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-recover-1", &[]).await?;
    let id = env.id("recover");
    let wid = ops::workflow_id("User", &id);
    let ls: Vec<String> = (0..3).map(|i| format!("{id}-l{i}")).collect();
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "apiToken": "before",
               "data": {"id": id, "log": [], "listings": ls.iter().map(|l| json!({"id": l, "user": id})).collect::<Vec<_>>()}}),
    )
    .await?;
    for l in &ls {
        query_until(env, &format!("Listing-{l}"), "status", |v| v == "running").await?;
    }
    // The burst: 40 `$push` updates, half acknowledged (Temporal updates), half signals, from several
    // tasks at once; the worker is killed once 10 acknowledged ones have answered, and a rotation is
    // sent while it is down.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let mut tasks = Vec::new();
    for i in 0..40usize {
        let client = env.client.clone();
        let wid = wid.clone();
        let id = id.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let msg = json!({"updates": {"User": {id: {"log": [i]}}}, "strategy": "$push"});
            if i % 2 == 0 {
                if ops::update(&client, &wid, "update", &msg).await.is_ok() {
                    acked.lock().unwrap().push(i);
                }
                Ok(())
            } else {
                ops::signal(&client, &wid, "update", Some(&msg)).await
            }
        }));
    }
    eventually(Duration::from_secs(60), || async {
        let n = acked.lock().unwrap().len();
        if n >= 10 {
            Ok(())
        } else {
            Err(anyhow!("{n} acknowledged so far"))
        }
    })
    .await?;
    w.child.kill().await?; // SIGKILL
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("after"))).await?;
    let t0 = Instant::now();
    w = WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-recover-2", &[]).await?;
    eventually(Duration::from_secs(60), || async {
        ops::query(&env.client, &wid, "state").await.map(|_| ())
    })
    .await?;
    println!(
        "  recovery: state queryable {} ms after the new worker was spawned",
        t0.elapsed().as_millis()
    );
    for t in tasks {
        t.await??;
    }
    // Every signal and every acknowledged update is there exactly once.
    let data = query_until(env, &wid, "data", |v| {
        v["log"]
            .as_array()
            .is_some_and(|a| a.len() >= 20 + acked_len(&acked))
    })
    .await?;
    let mut log: Vec<u64> = data["log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    log.sort_unstable();
    let mut dedup = log.clone();
    dedup.dedup();
    if dedup.len() != log.len() {
        bail!("applied twice: {log:?}");
    }
    for i in (1..40).step_by(2) {
        if !log.contains(&(i as u64)) {
            bail!("signal {i} was lost: {log:?}");
        }
    }
    for i in acked.lock().unwrap().iter() {
        if !log.contains(&(*i as u64)) {
            bail!("acknowledged update {i} was lost: {log:?}");
        }
    }
    // The tree converges: every listing has the new token and the root's log.
    let fp = stateful_engine::fingerprint("after");
    for l in &ls {
        let lw = format!("Listing-{l}");
        query_until(env, &lw, "apiToken", |v| v["fingerprint"] == json!(fp)).await?;
    }
    let v = ops::query(&env.client, &wid, "validate").await?;
    ensure_eq!(v["ok"], json!(true));
    ops::signal(&env.client, &wid, "cancel", None).await?;
    w.stop().await;
    Ok(())
}

fn acked_len(a: &std::sync::Arc<std::sync::Mutex<Vec<usize>>>) -> usize {
    a.lock().unwrap().len()
}

/// `temporal workflow reset` back to the first workflow task, without re-applying the signals that
/// came after: the workflow is back at its start state and runs on (takes changes, answers queries).
pub async fn a_reset_workflow_goes_back_and_runs_on(env: &Env) -> anyhow::Result<()> {
    let id = env.id("reset");
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id, "n": 0}}),
    )
    .await?;
    for n in 1..=3 {
        ops::update(
            &env.client,
            &wid,
            "update",
            &json!({"data": {"id": id, "n": n}}),
        )
        .await?;
        ops::signal(
            &env.client,
            &wid,
            "update",
            Some(&json!({"data": {"id": id, "s": n}})),
        )
        .await?;
    }
    query_until(env, &wid, "data", |v| v["n"] == 3 && v["s"] == 3).await?;
    let out = tokio::process::Command::new(&env.cli)
        .args([
            "workflow",
            "reset",
            "--workflow-id",
            &wid,
            "--address",
            &env.address,
        ])
        .args([
            "--type",
            "FirstWorkflowTask",
            "--reason",
            "e2e: back to the start",
        ])
        .args(["--reapply-exclude", "All", "--yes"])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "temporal workflow reset failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    query_until(env, &wid, "data", |v| *v == json!({"id": id, "n": 0})).await?;
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "after": "reset"}}),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["after"] == "reset" && v["n"] == 0).await?;
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}
