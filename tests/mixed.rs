//! Mixed fleets: our `StatefulWorkflow` with a chrono-forge peer ([`ForgeWorkflow`]: another type,
//! on a task queue of its own, no stamps, last arrival wins, echo guards by `changeOrigin`, a child
//! restarted only when its result is a cancellation) as its child or as its parent. The same field
//! written at both ends at once converges, round after round; a child cancelled from outside is
//! restarted by either parent.
//!
//! [`ForgeWorkflow`]: stateful_tests::forge::ForgeWorkflow

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::forge::{spawn_forge_worker, start_forge};
use stateful_tests::history::{RUNNING, history_of, no_failed_task, run_id_of, status_of};
use stateful_tests::{Env, ensure_eq, eventually, query_until};
use stateful_workflows::markers::JsonWorkflow;
use temporalio_client::{WorkflowCancelOptions, WorkflowTerminateOptions};

/// Rounds of concurrent writes.
const ROUNDS: usize = 5;
/// How long a round may take to converge.
const ROUND_WITHIN: Duration = Duration::from_secs(20);
/// How long both ends must keep showing the same value.
const STABLE: Duration = Duration::from_millis(1500);

/// A parent `User-{u}` and its listing child `Listing-{l}`.
struct Pair {
    u: String,
    l: String,
    parent: String,
    child: String,
}

impl Pair {
    fn new(env: &Env, base: &str) -> Pair {
        let u = env.id(base);
        let l = format!("{u}-l");
        Pair {
            parent: format!("User-{u}"),
            child: format!("Listing-{l}"),
            u,
            l,
        }
    }
}

/// Spawns a `ForgeWorkflow` worker on a queue of this test's own; the queue.
fn forge_queue(env: &Env, name: &str) -> String {
    let tq = format!("forge-{}-{name}", env.tag);
    spawn_forge_worker(env.client.clone(), tq.clone());
    tq
}

/// Our `StatefulWorkflow` parent whose listing is a `ForgeWorkflow` child on `tq` (the relation
/// names the child's type and queue); waits until the child has its slice.
async fn start_rust_parent(env: &Env, p: &Pair, tq: &str) -> anyhow::Result<()> {
    let schema = stateful_engine::Schema::parse(
        &format!(
            "User: {{listings: {{entity: Listing, many: true, workflowType: ForgeWorkflow, taskQueue: {tq}}}}}\nListing: {{}}\n"
        ),
        "inline",
    )
    .map_err(|e| anyhow!("{e}"))?
    .to_json();
    ops::start(
        &env.client,
        &env.task_queue,
        &p.parent,
        json!({"id": p.u, "entityName": "User", "schema": schema,
            "data": {"id": p.u, "listings": [{"id": p.l, "title": "t0"}]}}),
    )
    .await?;
    query_until(env, &p.child, "state", |v| {
        v["Listing"][&p.l]["title"] == "t0"
    })
    .await?;
    Ok(())
}

/// A `ForgeWorkflow` parent on `tq` whose listing is our `StatefulWorkflow` child on the shared
/// worker's queue (no schema in its input: the worker's); waits until the child has its slice.
async fn start_forge_parent(env: &Env, p: &Pair, tq: &str) -> anyhow::Result<()> {
    start_forge(
        &env.client,
        tq,
        &p.parent,
        json!({"id": p.u, "entityName": "User",
            "state": {"User": {p.u.clone(): {"id": p.u, "listings": [p.l]}},
                      "Listing": {p.l.clone(): {"id": p.l, "title": "t0"}}},
            "forgeChildren": [{"entityName": "Listing", "id": p.l, "path": "listings",
                "workflowType": "StatefulWorkflow", "taskQueue": env.task_queue}]}),
    )
    .await?;
    query_until(env, &p.child, "state", |v| {
        v["Listing"][&p.l]["title"] == "t0"
    })
    .await?;
    Ok(())
}

/// The listing's title as `wid` sees it.
async fn title(env: &Env, wid: &str, l: &str) -> anyhow::Result<Value> {
    Ok(ops::query(&env.client, wid, "state").await?["Listing"][l]["title"].clone())
}

/// Polls both ends until they show the same title, one of `allowed`, for [`STABLE`]; that title.
async fn settle(env: &Env, p: &Pair, allowed: &[Value]) -> anyhow::Result<Value> {
    let deadline = Instant::now() + ROUND_WITHIN;
    let mut since: Option<Instant> = None;
    loop {
        let x = title(env, &p.parent, &p.l).await?;
        let y = title(env, &p.child, &p.l).await?;
        if x == y && allowed.contains(&x) {
            let t = *since.get_or_insert_with(Instant::now);
            if t.elapsed() >= STABLE {
                return Ok(x);
            }
        } else {
            since = None;
        }
        if Instant::now() > deadline {
            bail!(
                "parent {x}, child {y} (not equal and stable within {ROUND_WITHIN:?}; written: {allowed:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`ROUNDS`] rounds: the title written at the parent (by `at_parent`) and at the child (by
/// `at_child`) at once, then both ends must converge. Every round runs; the error lists the
/// rounds that did not converge.
async fn rounds(env: &Env, p: &Pair, at_parent: &str, at_child: &str) -> anyhow::Result<()> {
    let mut diverged = Vec::new();
    for k in 0..ROUNDS {
        let (a, b) = (format!("parent-{k}"), format!("child-{k}"));
        let to_parent = json!({"updates": {"Listing": {p.l.clone(): {"title": a}}}});
        let to_child = json!({"updates": {"Listing": {p.l.clone(): {"title": b}}}});
        let (r1, r2) = tokio::join!(
            ops::signal(&env.client, &p.parent, at_parent, Some(&to_parent)),
            ops::signal(&env.client, &p.child, at_child, Some(&to_child)),
        );
        r1?;
        r2?;
        if let Err(e) = settle(env, p, &[json!(a), json!(b)]).await {
            // Convergence with a peer that applies whatever arrives last holds when the messages
            // between the two arrive in the order they were sent (README, "Mixed fleets"):
            // a round whose messages Temporal delivered out of order is reported, not failed.
            match delivered_out_of_order(env, p, &[&a, &b]).await? {
                Some(how) => eprintln!("  mixed: round {k} excused: {how} ({e:#})"),
                None => diverged.push(format!("round {k}: {e:#}")),
            }
        }
    }
    if !diverged.is_empty() {
        bail!(
            "{} of {ROUNDS} rounds did not converge:\n{}",
            diverged.len(),
            diverged.join("\n")
        );
    }
    ensure_eq!(
        title(env, &p.parent, &p.l).await?,
        title(env, &p.child, &p.l).await?
    );
    Ok(())
}

/// Whether a message between the two ends about this round's titles (`titles`) arrived after a
/// later one from the same sender: the sender's stamps of the title (ours; the ForgeWorkflow's carry
/// none, so only what ours sent is checked, at the ForgeWorkflow's end) go back in arrival order.
async fn delivered_out_of_order(
    env: &Env,
    p: &Pair,
    titles: &[&str],
) -> anyhow::Result<Option<String>> {
    for forge in [&p.child, &p.parent] {
        let got = ops::query(&env.client, forge, "received").await;
        let Ok(got) = got else {
            continue;
        };
        let mut last: Option<(u64, String)> = None;
        for s in got["signals"].as_array().into_iter().flatten() {
            let row = &s["payload"]["updates"]["Listing"][&p.l];
            let Some(title) = row["title"].as_str().filter(|t| titles.contains(t)) else {
                continue;
            };
            let Some(t) = s["payload"]["stamps"]["Listing"][&p.l]["title"][0].as_u64() else {
                continue;
            };
            if let Some((before, was)) = &last
                && t < *before
            {
                return Ok(Some(format!(
                    "{forge} got {title:?} (stamped {t}) after {was:?} (stamped {before}), sent before it"
                )));
            }
            last = Some((t, title.to_string()));
        }
    }
    Ok(None)
}

/// Terminates what a test started, the parents first (a child terminated first would be restarted);
/// what already ended is skipped.
async fn cleanup(env: &Env, wids: &[&str]) {
    for w in wids {
        let _ = env
            .client
            .get_workflow_handle::<JsonWorkflow>(*w)
            .terminate(
                WorkflowTerminateOptions::builder()
                    .reason("test done")
                    .build(),
            )
            .await;
    }
}

/// How run `run` of `wid` closed (`COMPLETED`, `CANCELED`, `TERMINATED`, ...), or `None` while it
/// runs.
fn closed_as(env: &Env, wid: &str, run: &str) -> anyhow::Result<Option<String>> {
    let h = history_of(env, wid, run)?;
    const CLOSED: [&str; 6] = [
        "COMPLETED",
        "CANCELED",
        "FAILED",
        "TERMINATED",
        "TIMEDOUT",
        "CONTINUEDASNEW",
    ];
    for e in h["events"].as_array().into_iter().flatten().rev() {
        let t = e["eventType"]
            .as_str()
            .unwrap_or_default()
            .to_uppercase()
            .replace('_', "");
        if let Some(k) = CLOSED
            .iter()
            .find(|k| t.ends_with(&format!("WORKFLOWEXECUTION{k}")))
        {
            return Ok(Some(k.to_string()));
        }
    }
    Ok(None)
}

/// Waits until run `run` of `wid` is closed; how it closed.
async fn wait_closed(env: &Env, wid: &str, run: &str) -> anyhow::Result<String> {
    eventually(Duration::from_secs(30), || async {
        closed_as(env, wid, run)?.ok_or_else(|| anyhow!("run {run} of {wid} still runs"))
    })
    .await
}

/// Waits until `wid` runs again, in a run other than `before`.
async fn restarted(env: &Env, wid: &str, before: &str, within: Duration) -> anyhow::Result<()> {
    eventually(within, || async {
        let r = run_id_of(env, wid).await?;
        if r != before && status_of(env, wid).await? == RUNNING {
            Ok(())
        } else {
            bail!("{wid} not restarted yet (latest run {r})")
        }
    })
    .await
}

/// Cancels `wid`'s latest run from outside (as `temporal workflow cancel` does); its run id.
async fn cancel_from_outside(env: &Env, wid: &str) -> anyhow::Result<String> {
    let before = run_id_of(env, wid).await?;
    env.client
        .get_workflow_handle::<JsonWorkflow>(wid)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    Ok(before)
}

fn no_failed_tasks(env: &Env, wids: &[&str]) -> anyhow::Result<()> {
    for w in wids {
        no_failed_task(env, w)?;
    }
    Ok(())
}

pub async fn a_rust_parent_and_a_forge_child_converge_on_concurrent_writes(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = forge_queue(env, "rp");
    let p = Pair::new(env, "mixrp");
    let res = async {
        start_rust_parent(env, &p, &tq).await?;
        // At the parent, a client's `update`; at the child, a local write.
        rounds(env, &p, "update", "write").await?;
        no_failed_tasks(env, &[&p.parent, &p.child])?;
        // Ours, answering a stamp-less peer (the `echo-stampless-peers` patch): replayed by
        // `replay::replay_all`, and kept in a release's set by scripts/record-histories.
        crate::replay::save_from(&env.client, &p.parent, "mixed-rust-parent").await
    }
    .await;
    cleanup(env, &[&p.parent, &p.child]).await;
    res
}

pub async fn a_forge_parent_and_a_rust_child_converge_on_concurrent_writes(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = forge_queue(env, "fp");
    let p = Pair::new(env, "mixfp");
    let res = async {
        start_forge_parent(env, &p, &tq).await?;
        // At the parent, a local write; at the child, a client's `update`.
        rounds(env, &p, "write", "update").await?;
        no_failed_tasks(env, &[&p.parent, &p.child])?;
        crate::replay::save_from(&env.client, &p.child, "mixed-rust-child").await
    }
    .await;
    cleanup(env, &[&p.parent, &p.child]).await;
    res
}

pub async fn a_child_cancelled_from_outside_is_restarted_by_either_parent(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = forge_queue(env, "cancel");
    // (a) Our parent, a forge child.
    let a = Pair::new(env, "mixca");
    let ra = async {
        start_rust_parent(env, &a, &tq).await?;
        let current = json!({"updates": {"Listing": {a.l.clone(): {"title": "current"}}}});
        ops::signal(&env.client, &a.parent, "update", Some(&current)).await?;
        query_until(env, &a.child, "state", |v| {
            v["Listing"][&a.l]["title"] == "current"
        })
        .await?;
        let before = cancel_from_outside(env, &a.child).await?;
        let how = wait_closed(env, &a.child, &before).await?;
        if how != "CANCELED" {
            bail!("(a) the forge child's run ended {how}, not CANCELED (a harness fault)");
        }
        restarted(env, &a.child, &before, Duration::from_secs(30))
            .await
            .map_err(|e| e.context("(a) our parent did not restart its cancelled forge child"))?;
        query_until(env, &a.child, "state", |v| {
            v["Listing"][&a.l]["title"] == "current"
        })
        .await
        .map_err(|e| e.context("(a) the restarted forge child lacks the current state"))?;
        no_failed_tasks(env, &[&a.parent, &a.child])
    }
    .await;
    cleanup(env, &[&a.parent, &a.child]).await;
    // (b) A forge parent, our child.
    let b = Pair::new(env, "mixcb");
    let rb = async {
        start_forge_parent(env, &b, &tq).await?;
        let current = json!({"updates": {"Listing": {b.l.clone(): {"title": "current"}}}});
        ops::signal(&env.client, &b.parent, "write", Some(&current)).await?;
        query_until(env, &b.child, "state", |v| {
            v["Listing"][&b.l]["title"] == "current"
        })
        .await?;
        let before = cancel_from_outside(env, &b.child).await?;
        let how = wait_closed(env, &b.child, &before).await?;
        // What the forge parent saw of that run (it restarts only a cancellation).
        let seen = query_until(env, &b.parent, "children", |v| {
            v[&b.child]["outcomes"]
                .as_array()
                .is_some_and(|o| !o.is_empty())
        })
        .await?[&b.child]
            .clone();
        if how != "CANCELED" {
            bail!(
                "(b) our child cancelled from outside ended {how}, not CANCELED: the forge parent \
                 recorded {} and does not restart it ({seen})",
                seen["outcomes"]
            );
        }
        restarted(env, &b.child, &before, Duration::from_secs(30))
            .await
            .map_err(|e| {
                e.context(format!(
                    "(b) the forge parent did not restart our child ({seen})"
                ))
            })?;
        query_until(env, &b.child, "state", |v| {
            v["Listing"][&b.l]["title"] == "current"
        })
        .await
        .map_err(|e| e.context("(b) our restarted child lacks the current state"))?;
        query_until(env, &b.parent, "children", |v| v[&b.child]["starts"] == 2).await?;
        no_failed_tasks(env, &[&b.parent, &b.child])
    }
    .await;
    cleanup(env, &[&b.parent, &b.child]).await;
    match (ra, rb) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(x), Err(y)) => bail!("{x:#}\n\nand\n\n{y:#}"),
    }
}
