//! `upgrade`: move a tree to the Worker Deployment's current version. Workflows are pinned to the
//! version that ran their first task; each gets a `checkpoint` signal, and its continue-as-new
//! starts the next run on the deployment's current version (`run.rs`), where it is pinned again.
//! The server answers `set-current-version` before the new routing has reached every task queue
//! partition: the upgrade waits for it first, and checkpoints again (up to [`MAX_CHECKPOINTS`]
//! times) a workflow whose new run still started on another version than the current one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_client::versioning::{Current, RunVersion, current_version, run_version};
use temporalio_client::Client;

use super::Ctx;
use crate::cli::UpgradeArgs;

/// Workflows signalled or described at once.
const CONCURRENCY: usize = 32;

/// Checkpoints one workflow gets at most (the first, and again while its new run landed on another
/// version than the deployment's current one).
const MAX_CHECKPOINTS: u32 = 5;

/// How long the upgrade waits for the deployment's routing to reach every task queue partition
/// before it checkpoints anyway (what lands on the old version is checkpointed again).
const ROUTING_WAIT: Duration = Duration::from_secs(20);

/// One workflow of the tree.
struct Node {
    workflow_id: String,
    /// Its run when the checkpoint was sent.
    before: Option<RunVersion>,
    /// Its run once it moved (or ended).
    after: Option<RunVersion>,
    error: Option<String>,
    /// Checkpoints sent.
    checkpoints: u32,
}

/// `starter upgrade`.
pub async fn upgrade(ctx: &Ctx, a: UpgradeArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.timeout_secs);
    let client = &ctx.client;
    wait_routed(ctx, &a.workflow_id, deadline).await;
    let walked = ops::walk(&ctx.client, &a.workflow_id, "status").await;
    let mut nodes: Vec<Node> = futures::stream::iter(walked)
        .map(|(wid, answer)| async move {
            let mut n = Node {
                workflow_id: wid,
                before: None,
                after: None,
                error: None,
                checkpoints: 1,
            };
            if let Err(e) = answer {
                n.error = Some(format!("{e:#}"));
                return n;
            }
            match send_checkpoint(client, &n.workflow_id).await {
                Ok(before) => n.before = Some(before),
                Err(e) => n.error = Some(format!("{e:#}")),
            }
            n
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let total = nodes.len();
    loop {
        let pending: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].error.is_none() && nodes[i].after.is_none())
            .collect();
        let checked: Vec<(usize, anyhow::Result<RunVersion>)> =
            futures::stream::iter(pending.iter().copied())
                .map(|i| {
                    let wid = nodes[i].workflow_id.clone();
                    async move { (i, run_version(client, &wid).await) }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        for (i, now) in checked {
            if let (Ok(now), Some(before)) = (now, &nodes[i].before)
                && moved(before, &now)
            {
                nodes[i].after = Some(now);
            }
        }
        // A new run that started on another version than the deployment's current one (the
        // routing had not reached its partition yet): checkpointed again.
        let (again, waiting) = left_behind(ctx, &nodes).await;
        for i in again {
            let n = &mut nodes[i];
            if n.checkpoints >= MAX_CHECKPOINTS {
                let on = n.after.take().map(|a| a.version).unwrap_or_default();
                n.error = Some(format!(
                    "still started on {on} after {MAX_CHECKPOINTS} checkpoints (is a worker of the current version polling its task queue?)"
                ));
                continue;
            }
            n.checkpoints += 1;
            match send_checkpoint(client, &n.workflow_id).await {
                Ok(before) => {
                    n.before = Some(before);
                    n.after = None;
                }
                Err(e) => n.error = Some(format!("{e:#}")),
            }
        }
        let done = nodes.iter().filter(|n| n.after.is_some()).count();
        let failed = nodes.iter().filter(|n| n.error.is_some()).count();
        if !ctx.json {
            eprint!("\rupgrading {total} workflows: {done} on a new run, {failed} unreachable   ");
        }
        if done + failed == total {
            if waiting > 0 && !ctx.json {
                eprint!(
                    "\n{waiting} workflows started on another version than the current one while its routing still propagates: run `starter upgrade` again once it has"
                );
            }
            break;
        }
        if Instant::now() > deadline {
            for n in nodes
                .iter_mut()
                .filter(|n| n.error.is_none() && n.after.is_none())
            {
                n.error = Some(format!(
                    "did not continue as new within {} s (its pinned version's workers must run to take the checkpoint)",
                    a.timeout_secs
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report(ctx, &a.workflow_id, &nodes, t0.elapsed().as_secs_f64())
}

/// Waits (at most [`ROUTING_WAIT`], and never past `deadline`) until the routing of the root's
/// deployment has reached every task queue partition; an unversioned root waits for nothing.
async fn wait_routed(ctx: &Ctx, root: &str, deadline: Instant) {
    let Ok(Some(deployment)) = run_version(&ctx.client, root).await.map(|r| r.deployment) else {
        return;
    };
    let until = (Instant::now() + ROUTING_WAIT).min(deadline);
    loop {
        match current_version(&ctx.client, &ctx.namespace, &deployment).await {
            Ok(Current {
                propagated: true, ..
            }) => return,
            Ok(c) => {
                if !ctx.json {
                    eprint!(
                        "\rwaiting for {deployment}'s routing to {} to reach every task queue partition   ",
                        c.version
                    );
                }
            }
            // No deployment to ask (an older server, missing permissions): the checkpoints and
            // the checks below still run.
            Err(_) => return,
        }
        if Instant::now() > until {
            if !ctx.json {
                eprintln!(
                    "\nthe routing is still propagating: upgrading anyway (what lands on the old version is checkpointed again)"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The nodes whose new run started on another version than their deployment's current one, to
/// checkpoint again once that routing has propagated; and how many such nodes wait for it.
async fn left_behind(ctx: &Ctx, nodes: &[Node]) -> (Vec<usize>, usize) {
    let mut current: BTreeMap<String, Option<Current>> = BTreeMap::new();
    let mut again = Vec::new();
    let mut waiting = 0;
    for (i, n) in nodes.iter().enumerate() {
        let Some(after) = &n.after else { continue };
        let Some(dep) = after.deployment.clone() else {
            continue;
        };
        if !after.running || after.run_id == n.before.as_ref().map_or("", |b| b.run_id.as_str()) {
            continue;
        }
        if !current.contains_key(&dep) {
            let c = match current_version(&ctx.client, &ctx.namespace, &dep).await {
                Ok(c) => Some(c),
                Err(e) => {
                    // On stderr even with --json (the report goes to stdout).
                    eprintln!(
                        "\n{e:#}: workflows left on an older version are not checkpointed again"
                    );
                    None
                }
            };
            current.insert(dep.clone(), c);
        }
        if let Some(Some(c)) = current.get(&dep)
            && c.version != "unversioned"
            && c.version != after.version
        {
            if c.propagated {
                again.push(i);
            } else {
                waiting += 1;
            }
        }
    }
    (again, waiting)
}

/// Its run before, and the `checkpoint` signal sent (a workflow that already ended gets none).
async fn send_checkpoint(client: &Client, wid: &str) -> anyhow::Result<RunVersion> {
    let before = run_version(client, wid).await?;
    if before.running {
        ops::signal(client, wid, "checkpoint", None).await?;
    }
    Ok(before)
}

/// True once a new run has run its first task (on a versioned worker, where it is then pinned;
/// unversioned before and after: any new run), or the workflow ended.
fn moved(before: &RunVersion, now: &RunVersion) -> bool {
    if now.run_id == before.run_id {
        return !now.running;
    }
    now.transition.is_none() && (now.version != "unversioned" || before.version == "unversioned")
}

fn report(ctx: &Ctx, root: &str, nodes: &[Node], secs: f64) -> anyhow::Result<()> {
    let mut versions = BTreeMap::<String, usize>::new();
    let mut rows = Vec::new();
    for n in nodes {
        if let Some(after) = &n.after {
            *versions.entry(after.version.clone()).or_default() += 1;
        }
        rows.push(json!({
            "workflowId": n.workflow_id,
            "from": n.before.as_ref().map(RunVersion::to_json),
            "to": n.after.as_ref().map(RunVersion::to_json),
            "error": n.error,
        }));
    }
    let errors: Vec<&Node> = nodes.iter().filter(|n| n.error.is_some()).collect();
    let out: Value = json!({
        "rootWorkflowId": root,
        "workflows": rows,
        "versions": versions,
        "errors": errors.len(),
        "seconds": secs,
    });
    ctx.print(&out, || {
        let mut lines = vec![format!(
            "\n{} of {} workflows continued as new in {secs:.1} s; now on: {}",
            nodes.len() - errors.len(),
            nodes.len(),
            if versions.is_empty() {
                "-".to_string()
            } else {
                versions
                    .iter()
                    .map(|(v, k)| format!("{v} ({k})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )];
        for n in &errors {
            lines.push(format!(
                "  {}: {}",
                n.workflow_id,
                n.error.as_deref().unwrap_or_default()
            ));
        }
        lines.join("\n")
    });
    if !errors.is_empty() {
        bail!("{} workflows of the tree were not upgraded", errors.len());
    }
    Ok(())
}
