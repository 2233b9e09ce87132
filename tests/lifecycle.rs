//! Batching and continue-as-new, each with workers of their own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::{Env, WorkerProc, client, dev_server, ensure_eq, eventually};
use temporalio_client::WorkflowCountOptions;
use tokio::sync::Semaphore;

pub async fn signals_of_one_task_apply_as_one_batch(env: &Env) -> anyhow::Result<()> {
    // No worker polls this queue yet: the start and every signal wait in history, and the first
    // workflow task delivers them together.
    let tq = format!("batch-{}", env.tag);
    let id = env.id("batch");
    let wid = format!("User-{id}");
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}}),
    )
    .await?;
    for i in 0..5 {
        ops::signal(
            &env.client,
            &wid,
            "update",
            Some(&json!({"data": {"id": id, format!("f{i}"): i}})),
        )
        .await?;
    }
    ops::signal(&env.client, &wid, "update", Some(&json!(42))).await?;
    let w = WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-batch", &[]).await?;
    let recent = eventually(Duration::from_secs(30), || async {
        let r = ops::query(&env.client, &wid, "recentChanges").await?;
        if r.as_array().map(Vec::len) == Some(2) {
            Ok(r)
        } else {
            bail!("recentChanges: {r}")
        }
    })
    .await?;
    // One record for the initial data, one for the batch of five updates.
    ensure_eq!(recent[0]["version"], json!(1));
    ensure_eq!(recent[1]["version"], json!(2));
    ensure_eq!(recent[1]["updated"], json!(1));
    let v = ops::query(&env.client, &wid, "data").await?;
    ensure_eq!(
        v,
        json!({"id": id, "f0": 0, "f1": 1, "f2": 2, "f3": 3, "f4": 4})
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "rejected").await?["total"],
        json!(1)
    );
    w.stop().await;
    Ok(())
}

/// A Temporal cancellation that arrives in the same workflow task as other work, one of which asks
/// the run to continue as new (a checkpoint), ends the workflow CANCELED in that run: it is not
/// handed over (the next run would never hear of it, and the tree would go on running).
pub async fn a_cancellation_before_the_first_task_or_with_a_checkpoint_ends_the_workflow_cancelled(
    env: &Env,
) -> anyhow::Result<()> {
    // No worker polls this queue yet: the start, the signals and the cancellation request wait in
    // history, and the first workflow task delivers them together.
    let tq = format!("cancel-with-work-{}", env.tag);
    let id = env.id("cwork");
    let wid = format!("User-{id}");
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}}),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "x": 1}})),
    )
    .await?;
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    env.client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(&wid)
        .cancel(temporalio_client::WorkflowCancelOptions::default())
        .await?;
    // And one cancelled before its first task with nothing else to do: it reads the worker's
    // schema as it starts (a local activity), which the cancellation must not fail.
    let id2 = env.id("cfirst");
    let wid2 = format!("User-{id2}");
    ops::start(
        &env.client,
        &tq,
        &wid2,
        json!({"id": id2, "entityName": "User", "data": {"id": id2}}),
    )
    .await?;
    env.client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(&wid2)
        .cancel(temporalio_client::WorkflowCancelOptions::default())
        .await?;
    let w = WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-cwork", &[]).await?;
    let ended = ended_with_its_first_run(env, &wid).await;
    let ended2 = ended_with_its_first_run(env, &wid2).await;
    w.stop().await;
    // CANCELED, in its first run: no continue-as-new took the cancellation away, and no failed
    // start either.
    for (wid, ended) in [(&wid, ended), (&wid2, ended2)] {
        let ended = ended?;
        if ended == (stateful_tests::history::CANCELED, true) {
            stateful_tests::history::no_failed_task(env, wid)?;
            continue;
        }
        let shown = stateful_tests::history::temporal(env, &["workflow", "show", "-w", wid])?;
        let tail: String = shown.lines().rev().take(12).collect::<Vec<_>>().join("\n");
        bail!(
            "{wid} ended (status, in its first run) = {ended:?}, not CANCELED in its first run; its history ends:\n{tail}"
        );
    }
    Ok(())
}

/// Once `wid` no longer runs (waiting up to 30 s): its status, and whether it is its first run.
async fn ended_with_its_first_run(env: &Env, wid: &str) -> anyhow::Result<(i32, bool)> {
    eventually(Duration::from_secs(30), || async {
        let (status, first) = stateful_tests::history::status_in_first_run(env, wid).await?;
        if status == stateful_tests::history::RUNNING {
            bail!("{wid} still running (in its first run: {first})")
        }
        Ok((status, first))
    })
    .await
}

pub async fn continue_as_new_loses_nothing(env: &Env) -> anyhow::Result<()> {
    // A server of its own that suggests continue-as-new after 40 history events.
    let srv = dev_server(
        &env.cli,
        &[
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=40",
        ],
    )
    .await?;
    let c = client(&srv.address).await?;
    let tq = "can";
    let w = WorkerProc::start(&srv.address, tq, &env.log_dir, "worker-can", &[]).await?;
    let id = "can1";
    let wid = "User-can1";
    ops::start(
        &c,
        tq,
        wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}, "apiToken": "can-token"}),
    )
    .await?;
    ops::signal(&c, wid, "update", Some(&json!("not an object"))).await?;
    // 150 updates, 8 in flight at a time, a third of them acknowledged; each sets its own field, so
    // a lost one shows.
    let sem = Arc::new(Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..150 {
        let (c, sem) = (c.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await?;
            let msg = json!({"data": {"id": id, format!("f{i:03}"): i}});
            if i % 3 == 0 {
                ops::update(&c, wid, "update", &msg).await.map(|_| ())
            } else {
                ops::signal(&c, wid, "update", Some(&msg)).await
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let data = eventually(Duration::from_secs(60), || async {
        let d = ops::query(&c, wid, "data").await?;
        let n = d.as_object().map(|m| m.len()).unwrap_or(0);
        if n == 151 {
            Ok(d)
        } else {
            bail!("{} of 151 fields so far", n)
        }
    })
    .await?;
    for i in 0..150 {
        ensure_eq!(data[format!("f{i:03}")], json!(i));
    }
    let version = ops::query(&c, wid, "version").await?;
    let runs = version["runs"].as_u64().unwrap_or(0);
    if runs < 3 {
        bail!("expected several continues-as-new, the workflow is on run {runs}: {version}");
    }
    let n = c
        .count_workflows(
            &format!("WorkflowId = '{wid}' AND ExecutionStatus = 'ContinuedAsNew'"),
            WorkflowCountOptions::default(),
        )
        .await?
        .count();
    ensure_eq!(n as u64, runs - 1);
    // The token, its rotation count, the rejections and the status came along.
    let tok = ops::query(&c, wid, "apiToken").await?;
    ensure_eq!(
        tok["fingerprint"],
        json!(stateful_engine::fingerprint("can-token"))
    );
    ensure_eq!(ops::query(&c, wid, "rejected").await?["total"], json!(1));
    ensure_eq!(ops::query(&c, wid, "status").await?, Value::from("running"));
    // And it still works after the switches.
    ops::update(
        &c,
        wid,
        "update",
        &json!({"data": {"id": id, "after": true}}),
    )
    .await?;
    // A run that started from a carry-over, for the replay tests (ended first: only complete
    // histories replay).
    ops::signal(&c, wid, "cancel", None).await?;
    eventually(Duration::from_secs(30), || async {
        let n = c
            .count_workflows(
                &format!("WorkflowId = '{wid}' AND ExecutionStatus = 'Completed'"),
                WorkflowCountOptions::default(),
            )
            .await?
            .count();
        if n == 1 {
            Ok(())
        } else {
            bail!("not completed yet")
        }
    })
    .await?;
    crate::replay::save_from(&c, wid, "continued-as-new-run").await?;
    w.stop().await;
    srv.stop().await;
    Ok(())
}

pub async fn a_restarted_worker_with_another_schema_does_not_change_running_workflows(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("pin-{}", env.tag);
    let id = env.id("pin");
    let wid = format!("User-{id}");
    let w = WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-pin-a", &[]).await?;
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}}),
    )
    .await?;
    let original = eventually(Duration::from_secs(30), || async {
        let s = ops::query(&env.client, &wid, "schema").await?;
        // (`{checksum, version, stamp, entities, schema}`: null fields until the worker's schema
        // is read.)
        if s["checksum"].is_string() {
            Ok(s)
        } else {
            bail!("no schema yet")
        }
    })
    .await?;
    w.stop().await;
    // Another schema, in which a User has no managed listings.
    let other = env.log_dir.join(format!("other-schema-{}.yaml", env.tag));
    std::fs::write(&other, "User: {}\nListing: {}\n")?;
    let w2 = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-pin-b",
        &["--schema", other.to_str().unwrap()],
    )
    .await?;
    let l = format!("{id}-l");
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "listings": [{"id": l, "user": id}]}})),
    )
    .await?;
    // Still the schema it started with: the listing is normalized out and gets its child.
    eventually(Duration::from_secs(30), || async {
        let st = ops::query(&env.client, &wid, "state").await?;
        if st["Listing"][&l].is_object() {
            Ok(())
        } else {
            bail!("state {st}")
        }
    })
    .await?;
    ensure_eq!(ops::query(&env.client, &wid, "schema").await?, original);
    eventually(Duration::from_secs(30), || async {
        let v = ops::query(&env.client, &format!("Listing-{l}"), "status").await?;
        if v == "running" { Ok(()) } else { bail!("{v}") }
    })
    .await?;
    w2.stop().await;
    Ok(())
}
