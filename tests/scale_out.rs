//! Running beyond one machine: a workflow-only worker and an activity-only worker on a task queue
//! of its own (`--mode`, `--activity-task-queue`), the health endpoints (`/healthz`, `/readyz`),
//! and the graceful drain on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use axum::extract::Path;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::FakeApi;
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until};
use temporalio_client::{UntypedWorkflow, WorkflowFetchHistoryOptions};

/// `GET http://{base}{path}`: status and body.
async fn get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let c = reqwest::Client::builder().no_proxy().build()?;
    let r = c
        .get(format!("{base}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The worker's metrics and health server (`http://HOST:PORT`), from its `worker ready` line.
fn health_base(w: &WorkerProc) -> anyhow::Result<String> {
    let m = w
        .ready_field("metrics")
        .ok_or_else(|| anyhow!("no metrics address in the `worker ready` line"))?;
    Ok(m.trim_end_matches("/metrics").to_string())
}

/// `/healthz` answers 200, `/readyz` 200 once the worker polls (with its mode), `/metrics` the
/// SDK's metrics.
async fn healthy_and_ready(w: &WorkerProc, mode: &str) -> anyhow::Result<()> {
    let base = health_base(w)?;
    let (s, body) = get(&base, "/healthz").await?;
    ensure_eq!((s, body.as_str()), (200, r#"{"status":"alive"}"#));
    let ready = eventually(Duration::from_secs(20), || async {
        let (s, body) = get(&base, "/readyz").await?;
        if s == 200 {
            Ok(serde_json::from_str::<Value>(&body)?)
        } else {
            bail!("/readyz: {s} {body}")
        }
    })
    .await?;
    ensure_eq!(ready["status"], json!("ready"));
    ensure_eq!(ready["mode"], json!(mode));
    let (s, body) = get(&base, "/metrics").await?;
    if s != 200 || !body.contains("temporal_") {
        bail!("/metrics: {s} {}", &body[..body.len().min(300)]);
    }
    Ok(())
}

/// The task queues of the activities scheduled in `wid`'s history (latest run), by activity type.
async fn activity_queues(env: &Env, wid: &str) -> anyhow::Result<Vec<(String, String)>> {
    let json = env
        .client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    let h: Value = serde_json::from_slice(&json)?;
    Ok(h["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let a = &e["attributes"]["ActivityTaskScheduledEventAttributes"];
            Some((
                a["activity_type"]["name"].as_str()?.to_string(),
                a["task_queue"]["name"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Sends SIGTERM to a worker.
fn sigterm(w: &WorkerProc) -> anyhow::Result<()> {
    let pid = w
        .child
        .id()
        .ok_or_else(|| anyhow!("the worker has no pid"))?;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?
        .success();
    if !ok {
        bail!("kill -TERM {pid} failed");
    }
    Ok(())
}

/// An API whose answers take `delay`: a load is in flight for that long. Counts its requests.
async fn slow_api(delay: Duration) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(move |Path(id): Path<String>| {
            let hits = counted.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                axum::Json(json!({"id": id, "name": "Loaded while draining"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.41:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, hits))
}

pub async fn workflow_and_activity_workers_of_their_own_scale_apart_and_drain_on_sigterm(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("scale-{}", env.tag);
    let aq = format!("scale-http-{}", env.tag);
    let workflows = ["--mode", "workflows", "--activity-task-queue", &aq];
    let activities = ["--mode", "activities", "--activity-task-queue", &aq];
    let wf = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-scale-wf",
        &workflows,
    )
    .await?;
    let act = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-scale-act",
        &activities,
    )
    .await?;
    healthy_and_ready(&wf, "workflows").await?;
    healthy_and_ready(&act, "activities").await?;

    // A root with a listing: both load through the activity worker (the workflow worker runs no
    // HTTP activity), on the activity queue the root recorded and handed down.
    let api = FakeApi::start(40).await?;
    let u = env.id("scale");
    let l = format!("{u}-l1");
    let (user_path, listing_path) = (format!("/users/{u}"), format!("/listings/{l}"));
    api.put(&user_path, json!({"id": u, "name": "From the API"}));
    api.put(
        &listing_path,
        json!({"id": l, "title": "Listing from the API"}),
    );
    let wid = ops::workflow_id("User", &u);
    let lwid = ops::workflow_id("Listing", &l);
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": u, "entityName": "User", "apiBase": api.base,
               "data": {"id": u, "listings": [{"id": l, "user": u}]}}),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "From the API").await?;
    query_until(env, &lwid, "data", |v| v["title"] == "Listing from the API").await?;
    for w in [&wid, &lwid] {
        let scheduled = activity_queues(env, w).await?;
        if scheduled.is_empty() || scheduled.iter().any(|(_, q)| *q != aq) {
            bail!("{w}: activities not all on {aq}: {scheduled:?}");
        }
    }

    // SIGTERM while a load is in flight: /readyz says `draining` at once, the load finishes, then
    // the worker exits.
    let (slow, hits) = slow_api(Duration::from_secs(3)).await?;
    let s = env.id("scale-slow");
    let swid = ops::workflow_id("User", &s);
    ops::start(
        &env.client,
        &tq,
        &swid,
        json!({"id": s, "entityName": "User", "apiBase": slow}),
    )
    .await?;
    eventually(Duration::from_secs(20), || async {
        if hits.load(Ordering::SeqCst) > 0 {
            Ok(())
        } else {
            bail!("the slow load has not started")
        }
    })
    .await?;
    let act_health = health_base(&act)?;
    sigterm(&act)?;
    let draining = eventually(Duration::from_secs(2), || async {
        let (s, body) = get(&act_health, "/readyz").await?;
        if s == 503 && body.contains("draining") {
            Ok(body)
        } else {
            bail!("/readyz: {s} {body}")
        }
    })
    .await?;
    let (s, _) = get(&act_health, "/healthz").await?;
    ensure_eq!(s, 200);
    let mut act = act;
    let status = tokio::time::timeout(Duration::from_secs(30), act.child.wait())
        .await
        .context("the activity worker did not exit within 30 s of SIGTERM")??;
    if !status.success() {
        bail!("the activity worker exited with {status} on SIGTERM");
    }
    act.wait_log("worker stopped", Duration::from_secs(1))
        .await?;
    query_until(env, &swid, "data", |v| v["name"] == "Loaded while draining")
        .await
        .with_context(|| format!("the load in flight at SIGTERM (readyz said {draining})"))?;
    ensure_eq!(hits.load(Ordering::SeqCst), 1);

    // No activity worker: the workflows still run and answer, and a load waits.
    api.put(&user_path, json!({"id": u, "name": "Refreshed"}));
    ops::signal(&env.client, &wid, "refresh", None).await?;
    query_until(env, &wid, "api", |v| v["loading"] == true).await?;
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": u, "note": "applied without an activity worker"}}),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let data = ops::query(&env.client, &wid, "data").await?;
    ensure_eq!(data["name"], json!("From the API"));
    ensure_eq!(data["note"], json!("applied without an activity worker"));
    ensure_eq!(api.requests(&user_path).len(), 1);
    ensure_eq!(
        ops::query(&env.client, &wid, "api").await?["loading"],
        json!(true)
    );

    // An activity worker again: the load that waited completes.
    let act2 = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-scale-act2",
        &activities,
    )
    .await?;
    healthy_and_ready(&act2, "activities").await?;
    query_until(env, &wid, "data", |v| v["name"] == "Refreshed").await?;
    ensure_eq!(api.requests(&user_path).len(), 2);
    act2.stop().await;
    wf.stop().await;
    Ok(())
}
