//! Worker Versioning (`--deployment-name`, `--build-id`): a tree is pinned to the deployment
//! version that started it, stays there when another version becomes current, and moves to the
//! current version at its next continue-as-new (a `checkpoint`, or `starter upgrade` for the whole
//! tree); `starter tree` shows each workflow's version. Workers of their own, on a queue of their
//! own, in a Worker Deployment of their own on the shared dev server.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_client::versioning::{RunVersion, run_version};
use stateful_tests::history::temporal;
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until, starter};
use stateful_workflows::StatefulWorkflow;
use temporalio_client::{
    UntypedWorkflow, WorkflowExecutionInfo, WorkflowFetchHistoryOptions, WorkflowHistory,
};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// Makes `build_id` the deployment's current version (once its worker has polled, which the
/// server needs to know the version).
pub(crate) async fn set_current(env: &Env, deployment: &str, build_id: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), || async {
        temporal(
            env,
            &[
                "worker",
                "deployment",
                "set-current-version",
                "--deployment-name",
                deployment,
                "--build-id",
                build_id,
                "--yes",
            ],
        )
        .map(|_| ())
    })
    .await
}

/// Waits until `wid`'s latest run satisfies `pred` (describe's versioning info); returns it.
async fn version_until(
    env: &Env,
    wid: &str,
    what: &str,
    pred: impl Fn(&RunVersion) -> bool,
) -> anyhow::Result<RunVersion> {
    eventually(Duration::from_secs(30), || async {
        let v = run_version(&env.client, wid).await?;
        if pred(&v) {
            Ok(v)
        } else {
            bail!("{wid} is not {what}: {v:?}")
        }
    })
    .await
}

/// The history of run `run_id` of `wid`, replayed here with the current code and saved with the
/// suite's fresh histories as `name` (`replay::replay_all` replays them again); its JSON.
pub(crate) async fn replayed(
    env: &Env,
    wid: &str,
    run_id: &str,
    name: &str,
) -> anyhow::Result<Value> {
    let namespace = env
        .client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .info()
        .namespace
        .clone();
    let handle = WorkflowExecutionInfo::builder()
        .namespace(namespace)
        .workflow_id(wid)
        .run_id(run_id)
        .build()
        .bind_untyped(env.client.clone());
    let json = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    let dir = crate::replay::fresh_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.json")), &json)?;
    let bytes = json.clone();
    // Replay is not `Send`: on a thread of its own.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let replayer = WorkflowReplayer::new(
                WorkflowReplayerOptions::new()
                    .register_workflow::<StatefulWorkflow>()?
                    .build(),
            )?;
            replayer
                .replay_workflow(WorkflowHistory::from_json(&bytes)?)
                .await?;
            Ok(())
        })
    })
    .await??;
    Ok(serde_json::from_slice(&json)?)
}

/// `starter --json tree ROOT`: each workflow id with its `deploymentVersion`, depth first.
async fn tree_versions(env: &Env, root: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (ok, out, err) = starter(env, &["--json", "tree", root]).await?;
    if !ok {
        bail!("starter tree failed: {err}");
    }
    fn walk(n: &Value, out: &mut Vec<(String, String)>) {
        out.push((
            n["workflowId"].as_str().unwrap_or_default().to_string(),
            n["deploymentVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
        for c in n["children"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    let mut v = Vec::new();
    walk(&serde_json::from_str(&out)?, &mut v);
    Ok(v)
}

pub async fn a_pinned_tree_stays_on_its_version_until_a_checkpoint_moves_it_to_the_current_one(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("vers-{}", env.tag);
    let dep = format!("stateful-e2e-{}", env.tag);
    let (a, b) = (format!("{dep}:A"), format!("{dep}:B"));
    let wa = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-vers-a",
        &["--deployment-name", &dep, "--build-id", "A"],
    )
    .await?;
    wa.wait_log(&format!("deployment={dep}:A"), Duration::from_secs(5))
        .await?;
    set_current(env, &dep, "A").await?;

    // A root and its child start on A, pinned there.
    let id = env.id("vers");
    let l = format!("{id}-l1");
    let wid = ops::workflow_id("User", &id);
    let lid = ops::workflow_id("Listing", &l);
    let l2 = format!("{id}-l2");
    let lid2 = ops::workflow_id("Listing", &l2);
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User",
               "data": {"id": id, "name": "on A", "listings": [{"id": l, "user": id}]}}),
    )
    .await?;
    query_until(env, &wid, "children", |v| v["total"] == 1).await?;
    let first = version_until(env, &wid, "pinned to A", |v| {
        v.version == a && v.behavior == "pinned"
    })
    .await?;
    version_until(env, &lid, "pinned to A", |v| {
        v.version == a && v.behavior == "pinned"
    })
    .await?;

    // B becomes current: the tree stays on A, and A's worker still runs its changes.
    let wb = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-vers-b",
        &["--deployment-name", &dep, "--build-id", "B"],
    )
    .await?;
    set_current(env, &dep, "B").await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "name": "still on A",
                               "listings": [{"id": l, "user": id}, {"id": l2, "user": id}]}})),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "still on A").await?;
    // A child it starts now starts on its version, A, not on the current one.
    query_until(env, &wid, "children", |v| v["total"] == 2).await?;
    version_until(env, &lid2, "pinned to A", |v| {
        v.version == a && v.behavior == "pinned"
    })
    .await?;
    let still = run_version(&env.client, &wid).await?;
    ensure_eq!(
        (still.run_id.as_str(), still.version.as_str()),
        (first.run_id.as_str(), a.as_str())
    );
    ensure_eq!(
        tree_versions(env, &wid).await?,
        vec![
            (wid.clone(), a.clone()),
            (lid.clone(), a.clone()),
            (lid2.clone(), a.clone())
        ]
    );

    // A checkpoint (continue-as-new) moves the root to B, pinned there; its child stays on A.
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    let moved = version_until(env, &wid, "on a new run pinned to B", |v| {
        v.run_id != first.run_id && v.version == b && v.behavior == "pinned"
    })
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "still on A").await?;
    // The pinned run's history (ending in its continue-as-new) replays with the current code. (The
    // server does not record the command's `initial_versioning_behavior` in the event: the run's
    // move to B above is what shows it was sent; without it the next run stays pinned to A.)
    let h = replayed(
        env,
        &wid,
        &first.run_id,
        "versioning-pinned-continued-as-new",
    )
    .await?;
    let last = h["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    if last["attributes"]["WorkflowExecutionContinuedAsNewEventAttributes"].is_null() {
        bail!("the pinned run did not end by continuing as new: {last}");
    }
    ensure_eq!(
        tree_versions(env, &wid).await?,
        vec![
            (wid.clone(), b.clone()),
            (lid.clone(), a.clone()),
            (lid2.clone(), a.clone())
        ]
    );
    let (ok, text, err) = starter(env, &["tree", &wid]).await?;
    if !ok
        || !text.contains(&format!("on {b} (pinned)"))
        || !text.contains(&format!("on {a} (pinned)"))
    {
        bail!("starter tree does not show both versions ({err}):\n{text}");
    }

    // `starter upgrade` moves the rest of the tree; the root, already there, gets a new run too.
    let (ok, out, err) = starter(env, &["--json", "upgrade", &wid]).await?;
    if !ok {
        bail!("starter upgrade failed: {err}\n{out}");
    }
    let report: Value = serde_json::from_str(&out)?;
    ensure_eq!(report["versions"], json!({ b.clone(): 3 }));
    ensure_eq!(report["errors"], json!(0));
    ensure_eq!(
        tree_versions(env, &wid).await?,
        vec![
            (wid.clone(), b.clone()),
            (lid.clone(), b.clone()),
            (lid2.clone(), b.clone())
        ]
    );
    let after = run_version(&env.client, &wid).await?;
    if after.run_id == moved.run_id {
        bail!("starter upgrade did not continue the root as new: {after:?}");
    }
    query_until(env, &lid, "data", |v| v["id"] == json!(l)).await?;

    // Nothing is left on A: its worker can go.
    ops::signal(&env.client, &wid, "cancel", None).await?;
    wa.stop().await;
    wb.stop().await;
    Ok(())
}

/// Without the flags a worker is unversioned (the shared one): `starter tree` says so. One flag
/// without the other is refused at startup.
pub async fn an_unversioned_worker_says_so_and_half_a_version_is_refused(
    env: &Env,
) -> anyhow::Result<()> {
    let id = env.id("unvers");
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}}),
    )
    .await?;
    query_until(env, &wid, "version", |v| v["version"].as_u64() >= Some(1)).await?;
    ensure_eq!(
        tree_versions(env, &wid).await?,
        vec![(wid.clone(), "unversioned".to_string())]
    );
    let v = run_version(&env.client, &wid).await?;
    ensure_eq!(v.behavior.as_str(), "unversioned");
    ops::signal(&env.client, &wid, "cancel", None).await?;

    let tq = format!("vers-half-{}", env.tag);
    for (flags, says) in [
        (
            vec!["--build-id", "A"],
            "--build-id `A` needs --deployment-name",
        ),
        (
            vec!["--deployment-name", "D"],
            "--deployment-name `D` needs --build-id",
        ),
    ] {
        match WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-vers-half", &flags).await {
            Ok(w) => {
                w.stop().await;
                bail!("a worker started with {flags:?} alone");
            }
            Err(e) if format!("{e:#}").contains(says) => {}
            Err(e) => bail!("a worker with {flags:?} failed otherwise: {e:#}"),
        }
    }
    Ok(())
}
