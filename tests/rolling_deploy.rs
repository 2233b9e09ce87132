//! A rolling deploy with real processes (issue 15, part 5): a tree and a burst of acknowledged
//! updates on worker build A; build B, the same binary with another build id and a deliberate
//! behaviour difference behind a patch (the hidden, test-only `--test-patched-difference`: a run
//! that starts on B records the patch `test-rolling-deploy-difference` and upserts the memo field
//! `deployedBehaviour: "B"`), starts beside it; A is stopped with SIGTERM (drained).
//!
//! - **Versioned** (the recommended way): A and B are versions of one Worker Deployment; B is made
//!   current during the burst, `starter upgrade` moves the tree to B, then A goes.
//! - **Unversioned**: A and B poll one queue; A goes during the burst, and B takes over the runs A
//!   began by replaying their histories: this is where the patch matters.
//!
//! Both check that every acknowledged update's `$push` is in the tree exactly once, that no workflow
//! task failed (but a task the SDK drops at a graceful stop, excused as in `many_workers`), that the
//! difference shows exactly where the patch guarantees it (below), and that the runs A wrote replay
//! with the current code (saved for `replay::replay_all` too).
//!
//! **What the patch guarantees.** The patch is asked once, as a run starts: not replaying, only on
//! B; replaying, always, answering what the history holds. So a run's history holds the marker (and
//! the memo upsert after it) if and only if the worker that completed the run's first workflow task
//! was B; a run A began never gets it, even when B replays it and completes its later tasks; the
//! difference reaches a workflow only with a new run started on B (here: `starter upgrade`'s
//! continue-as-new), and every later run keeps the memo field (Temporal carries the memo over).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_client::versioning::run_version;
use stateful_tests::api::user_tree;
use stateful_tests::history::{run_histories, task_failures_beyond_kills, with_payloads_decoded};
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until, starter};
use stateful_workflows::{TEST_DIFFERENCE_MEMO, TEST_DIFFERENCE_PATCH};
use temporalio_client::Client;
use tokio::sync::{Semaphore, watch};

use crate::many_workers::Progress;
use crate::versioning::{replayed, set_current};
use crate::workflow::memo_of;

/// The tree: a user and its listings (no photos): 11 workflows.
const LISTINGS: usize = 10;
const WORKFLOWS: usize = 1 + LISTINGS;
/// The listings whose own workflows take changes.
const WRITING_LISTINGS: usize = 3;
/// The burst: 40 acknowledged `$push` updates in waves of 10, released as the deploy goes on.
const CHANGES: usize = 40;
const WAVE: usize = 10;
const IN_FLIGHT: usize = 4;
/// How long a SIGTERM'd worker may take to drain and exit.
const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// The burst and the deploy, at most.
const DEPLOY_WITHIN: Duration = Duration::from_secs(150);

pub async fn versioned_rolling_deploy_moves_a_tree_under_a_burst_to_build_b_with_its_patch(
    env: &Env,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let tq = format!("roll-v-{}", env.tag);
    let dep = format!("stateful-roll-{}", env.tag);
    let b_label = format!("{dep}:B");
    let wa = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-roll-v-a",
        &["--deployment-name", &dep, "--build-id", "A"],
    )
    .await?;
    let a_pid = wa.child.id().ok_or_else(|| anyhow!("worker A exited"))?;
    set_current(env, &dep, "A").await?;
    let tree = Tree::start(env, &tq, "roll-v").await?;
    // The runs A began: replayed at the end.
    let root_a_run = run_version(&env.client, &tree.root).await?.run_id;
    let listing0 = tree.listings[0].clone();
    let listing_a_run = run_version(&env.client, &listing0).await?.run_id;
    let tree_up = t0.elapsed();

    let t1 = Instant::now();
    let changes = changes(&tree.u);
    let progress = Progress::default();
    let (phase, phase_rx) = watch::channel(0usize);
    let deploy = async {
        progress.wait_done(5).await?;
        // B starts beside A and becomes current while the first wave is answered.
        let wb = WorkerProc::start(
            &env.address,
            &tq,
            &env.log_dir,
            "worker-roll-v-b",
            &[
                "--deployment-name",
                &dep,
                "--build-id",
                "B",
                "--test-patched-difference",
            ],
        )
        .await?;
        let b_pid = wb.child.id().ok_or_else(|| anyhow!("worker B exited"))?;
        set_current(env, &dep, "B").await?;
        // The routing reaches every task queue partition some time after `set-current-version`
        // answers (a second or two; over 30 s once on a loaded server): `starter upgrade` waits
        // for it, and checkpoints again what still lands on A.
        phase.send_modify(|p| *p += 1);
        progress.wait_done(WAVE + 3).await?;
        // The upgrade with the second wave in flight: updates refused while a run hands over are
        // sent again (ops::update) and land on the new run, on B.
        phase.send_modify(|p| *p += 1);
        let mut passes = 0;
        let report: Value = loop {
            passes += 1;
            let (ok, out, err) = starter(env, &["--json", "upgrade", &tree.root]).await?;
            if !ok {
                bail!("starter upgrade failed: {err}\n{out}");
            }
            let report: Value = serde_json::from_str(&out)?;
            // A run that continued as new while the routing still propagated (the starter waits
            // for it up to 20 s, and checkpoints again what landed on A once it has) may be left
            // on A: the upgrade is run again, as README "Upgrading" says.
            if report["versions"] == json!({ b_label.clone(): WORKFLOWS }) {
                break report;
            }
            if passes == 4 {
                bail!(
                    "starter upgrade left the tree on {} after {passes} passes (want all {WORKFLOWS} on {b_label})\nits stderr: {err}\nits report: {out}",
                    report["versions"]
                );
            }
            eprintln!(
                "  rolling (versioned): upgrade pass {passes} left {}; again",
                report["versions"]
            );
        };
        ensure_eq!(report["errors"], json!(0));
        // A goes with the last waves in flight: nothing is pinned to it any more.
        phase.send_modify(|p| *p += 1);
        let status = wa.terminate(EXIT_WITHIN).await?;
        if !status.success() {
            bail!("worker A exited with {status} on SIGTERM");
        }
        phase.send_modify(|p| *p += 1);
        anyhow::Ok((wb, b_pid))
    };
    let sends = async {
        burst(&env.client, &changes, &phase_rx, &progress).await;
        anyhow::Ok(())
    };
    let ((wb, b_pid), ()) =
        tokio::time::timeout(DEPLOY_WITHIN, async { tokio::try_join!(deploy, sends) })
            .await
            .map_err(|_| anyhow!("the burst and the deploy took over {DEPLOY_WITHIN:?}"))??;
    let deploy_took = t1.elapsed();

    check_answers(&progress, &changes)?;
    exactly_once(&env.client, &tree, &changes).await?;
    // Every workflow runs on B (describe), with B's difference: the upgrade's new run started on B.
    for wid in tree.all() {
        let v = run_version(&env.client, &wid).await?;
        ensure_eq!(
            (wid.as_str(), v.version.as_str()),
            (wid.as_str(), b_label.as_str())
        );
        memo_says_b(env, &wid).await?;
    }
    let a_id = format!("stateful-worker-{a_pid}@");
    let b_id = format!("stateful-worker-{b_pid}@");
    for wid in tree.all() {
        let runs = runs_of(env, &wid)?;
        patch_where_guaranteed(&wid, &runs, &b_id)?;
        // Its first run began on A (pinned there until the upgrade), its latest on B.
        let (first, last) = (&runs[0], &runs[runs.len() - 1]);
        if !first.first_by.starts_with(&a_id) || !last.first_by.starts_with(&b_id) || !last.marker {
            bail!("{wid} did not move from A to B with the patch: {runs:?}");
        }
    }
    let excused = no_task_failed(env, &tree, &[a_pid])?;
    // A's runs (each ended by the upgrade's continue-as-new) and B's replay with the current code,
    // which runs without the flag: a replay answers the patch from the history.
    replayed(env, &tree.root, &root_a_run, "rolling-versioned-root-on-a").await?;
    replayed(
        env,
        &listing0,
        &listing_a_run,
        "rolling-versioned-listing-on-a",
    )
    .await?;
    let root_b_run = run_version(&env.client, &tree.root).await?.run_id;
    replayed(env, &tree.root, &root_b_run, "rolling-versioned-root-on-b").await?;

    println!(
        "  rolling (versioned): tree of {WORKFLOWS} up in {:.1} s; burst, B current, upgrade and \
         A's stop {:.1} s; {excused} task timeouts excused; {:.1} s in all",
        tree_up.as_secs_f64(),
        deploy_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    ops::signal(&env.client, &tree.root, "cancel", None).await?;
    wb.stop().await;
    Ok(())
}

pub async fn unversioned_rolling_deploy_hands_a_runs_to_b_without_the_patch_until_a_new_run(
    env: &Env,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let tq = format!("roll-u-{}", env.tag);
    let wa = WorkerProc::start(&env.address, &tq, &env.log_dir, "worker-roll-u-a", &[]).await?;
    let a_pid = wa.child.id().ok_or_else(|| anyhow!("worker A exited"))?;
    let tree = Tree::start(env, &tq, "roll-u").await?;
    let root_a_run = run_version(&env.client, &tree.root).await?.run_id;
    let tree_up = t0.elapsed();

    let t1 = Instant::now();
    let changes = changes(&tree.u);
    let progress = Progress::default();
    let (phase, phase_rx) = watch::channel(0usize);
    let deploy = async {
        progress.wait_done(5).await?;
        // B polls the same queue beside A; then A goes with the second wave in flight, and B takes
        // over every run A began, replaying its history first.
        let wb = WorkerProc::start(
            &env.address,
            &tq,
            &env.log_dir,
            "worker-roll-u-b",
            &["--test-patched-difference"],
        )
        .await?;
        let b_pid = wb.child.id().ok_or_else(|| anyhow!("worker B exited"))?;
        phase.send_modify(|p| *p += 1);
        progress.wait_done(WAVE + 3).await?;
        phase.send_modify(|p| *p += 1);
        let status = wa.terminate(EXIT_WITHIN).await?;
        if !status.success() {
            bail!("worker A exited with {status} on SIGTERM");
        }
        phase.send_modify(|p| *p += 2);
        anyhow::Ok((wb, b_pid))
    };
    let sends = async {
        burst(&env.client, &changes, &phase_rx, &progress).await;
        anyhow::Ok(())
    };
    let ((wb, b_pid), ()) =
        tokio::time::timeout(DEPLOY_WITHIN, async { tokio::try_join!(deploy, sends) })
            .await
            .map_err(|_| anyhow!("the burst and the deploy took over {DEPLOY_WITHIN:?}"))??;
    let deploy_took = t1.elapsed();

    check_answers(&progress, &changes)?;
    exactly_once(&env.client, &tree, &changes).await?;
    let a_id = format!("stateful-worker-{a_pid}@");
    let b_id = format!("stateful-worker-{b_pid}@");
    // Every run so far began on A: none holds the marker or shows the difference, though B
    // completed tasks of them (the root's and the writing listings', after A was gone: replays).
    for wid in tree.all() {
        let runs = runs_of(env, &wid)?;
        patch_where_guaranteed(&wid, &runs, &b_id)?;
        if runs
            .iter()
            .any(|r| !r.first_by.starts_with(&a_id) || r.marker)
        {
            bail!("{wid} has a run that did not begin on A without the patch: {runs:?}");
        }
        if memo_of(env, &wid)
            .await?
            .get(TEST_DIFFERENCE_MEMO)
            .is_some()
        {
            bail!("{wid} shows B's difference in a run A began");
        }
    }
    for wid in tree.writers() {
        let runs = runs_of(env, &wid)?;
        if !runs
            .iter()
            .any(|r| r.completed_by.iter().any(|w| w.starts_with(&b_id)))
        {
            bail!("B completed no task of {wid}: it replayed nothing of A's: {runs:?}");
        }
    }

    // A new run of every workflow (`starter upgrade` continues each as new, unversioned too)
    // starts on B, not replaying: it records the marker and shows the difference; the runs before
    // it still hold none.
    let (ok, out, err) = starter(env, &["--json", "upgrade", &tree.root]).await?;
    if !ok {
        bail!("starter upgrade failed: {err}\n{out}");
    }
    ensure_eq!(serde_json::from_str::<Value>(&out)?["errors"], json!(0));
    for wid in tree.all() {
        memo_says_b(env, &wid).await?;
        let runs = runs_of(env, &wid)?;
        patch_where_guaranteed(&wid, &runs, &b_id)?;
        let last = &runs[runs.len() - 1];
        if runs.len() < 2 || !last.marker || !last.first_by.starts_with(&b_id) {
            bail!("{wid}'s new run did not begin on B with the patch: {runs:?}");
        }
        if runs[..runs.len() - 1].iter().any(|r| r.marker) {
            bail!("{wid}: a run before the new one holds the marker: {runs:?}");
        }
    }
    // The tree still takes changes on B, once each.
    let more = ops::update(
        &env.client,
        &tree.root,
        "update",
        &json!({"updates": {"User": {&tree.u: {"after": 1}}}, "strategy": "$push"}),
    )
    .await?;
    if more["changed"].as_u64() < Some(1) {
        bail!("an update after the deploy answered {more}");
    }
    query_until(env, &tree.root, "state", |s| {
        s["User"][&tree.u]["after"] == json!([1])
    })
    .await?;
    let excused = no_task_failed(env, &tree, &[a_pid])?;
    // The run A began, B replayed and ended (continue-as-new), and B's own run, replay here with
    // the current code (no flag).
    replayed(
        env,
        &tree.root,
        &root_a_run,
        "rolling-unversioned-root-on-a",
    )
    .await?;
    let root_b_run = run_version(&env.client, &tree.root).await?.run_id;
    replayed(
        env,
        &tree.root,
        &root_b_run,
        "rolling-unversioned-root-on-b",
    )
    .await?;

    println!(
        "  rolling (unversioned): tree of {WORKFLOWS} up in {:.1} s; burst and A's stop {:.1} s; \
         {excused} task timeouts excused; {:.1} s in all",
        tree_up.as_secs_f64(),
        deploy_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    ops::signal(&env.client, &tree.root, "cancel", None).await?;
    wb.stop().await;
    Ok(())
}

/// A user with [`LISTINGS`] listings, every listing's workflow running.
struct Tree {
    u: String,
    root: String,
    listings: Vec<String>,
}

impl Tree {
    async fn start(env: &Env, tq: &str, base: &str) -> anyhow::Result<Tree> {
        let u = env.id(base);
        let root = ops::workflow_id("User", &u);
        ops::start(
            &env.client,
            tq,
            &root,
            json!({"id": u, "entityName": "User", "data": user_tree(&u, LISTINGS, 0)}),
        )
        .await?;
        let listings: Vec<String> = (0..LISTINGS)
            .map(|i| ops::workflow_id("Listing", &format!("{u}-l{i}")))
            .collect();
        for l in &listings {
            query_until(env, l, "status", |v| v == "running").await?;
        }
        Ok(Tree { u, root, listings })
    }

    fn all(&self) -> Vec<String> {
        std::iter::once(self.root.clone())
            .chain(self.listings.iter().cloned())
            .collect()
    }

    /// The workflows the burst sends changes to.
    fn writers(&self) -> Vec<String> {
        std::iter::once(self.root.clone())
            .chain(self.listings[..WRITING_LISTINGS].iter().cloned())
            .collect()
    }
}

/// One change: `$push` of `i` onto `field` of an entity, sent to the workflow that owns it (one
/// writer per list: a lost or doubled element then shows).
struct Change {
    i: usize,
    wid: String,
    entity: &'static str,
    id: String,
    field: &'static str,
}

/// Even changes push onto the user's `log` at the root; odd ones onto a writing listing's `up` at
/// the listing's own workflow (which hands it up to the root).
fn changes(u: &str) -> Vec<Change> {
    (0..CHANGES)
        .map(|i| {
            if i % 2 == 0 {
                Change {
                    i,
                    wid: ops::workflow_id("User", u),
                    entity: "User",
                    id: u.to_string(),
                    field: "log",
                }
            } else {
                let l = format!("{u}-l{}", (i / 2) % WRITING_LISTINGS);
                Change {
                    i,
                    wid: ops::workflow_id("Listing", &l),
                    entity: "Listing",
                    id: l,
                    field: "up",
                }
            }
        })
        .collect()
}

/// Sends the changes as acknowledged updates, wave `i / WAVE` once `phase` reaches it,
/// [`IN_FLIGHT`] at a time.
async fn burst(
    client: &Client,
    changes: &[Change],
    phase: &watch::Receiver<usize>,
    progress: &Progress,
) {
    let sem = Semaphore::new(IN_FLIGHT);
    futures::future::join_all(changes.iter().map(|c| {
        let sem = &sem;
        let mut phase = phase.clone();
        async move {
            let _ = phase.wait_for(|p| *p >= c.i / WAVE).await;
            let _permit = sem.acquire().await;
            let message =
                json!({"updates": {c.entity: {&c.id: {c.field: c.i}}}, "strategy": "$push"});
            progress.record(c.i, ops::update(client, &c.wid, "update", &message).await);
        }
    }))
    .await;
}

/// Every change was acknowledged, with the version that applied it.
fn check_answers(progress: &Progress, changes: &[Change]) -> anyhow::Result<()> {
    let answers = progress.answers.lock().unwrap();
    ensure_eq!(answers.len(), changes.len());
    for c in changes {
        let a = answers[&c.i]
            .as_ref()
            .map_err(|e| anyhow!("change {} to {} failed: {e}", c.i, c.wid))?;
        if a["version"].as_u64().is_none() || a["changed"].as_u64() < Some(1) {
            bail!("change {} to {} answered {a}", c.i, c.wid);
        }
    }
    Ok(())
}

fn numbers(v: &Value) -> Vec<u64> {
    let mut n: Vec<u64> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    n.sort_unstable();
    n
}

/// Each list holds each number it was sent exactly once: at the root (every list), and at each
/// writing listing's own workflow (its `up`).
async fn exactly_once(client: &Client, tree: &Tree, changes: &[Change]) -> anyhow::Result<()> {
    let mut want: BTreeMap<(String, String, &str), Vec<u64>> = BTreeMap::new();
    for c in changes {
        want.entry((c.wid.clone(), c.id.clone(), c.field))
            .or_default()
            .push(c.i as u64);
    }
    let entity = |wid: &str| wid.split_once('-').map_or("", |(e, _)| e).to_string();
    eventually(Duration::from_secs(30), || async {
        let root = ops::query(client, &tree.root, "state").await?;
        for ((wid, id, field), nums) in &want {
            let e = entity(wid);
            let at_root = numbers(&root[&e][id][*field]);
            if at_root.len() > nums.len() {
                // More than sent: applied twice (no wait makes that right).
                return Ok(Err(anyhow!(
                    "the root's {e} {id} `{field}` holds a change twice: {at_root:?}, sent {nums:?}"
                )));
            }
            if at_root != *nums {
                bail!("the root's {e} {id} `{field}` is {at_root:?}, expected {nums:?}");
            }
            if wid != &tree.root {
                let own = ops::query(client, wid, "state").await?;
                let got = numbers(&own[&e][id][*field]);
                if got.len() > nums.len() {
                    return Ok(Err(anyhow!(
                        "{wid}'s `{field}` holds a change twice: {got:?}, sent {nums:?}"
                    )));
                }
                if got != *nums {
                    bail!("{wid}'s `{field}` is {got:?}, expected {nums:?}");
                }
            }
        }
        Ok(Ok(()))
    })
    .await?
}

/// Waits until `wid`'s memo shows B's difference (`deployedBehaviour: "B"`; its new run upserts it
/// in its first task).
async fn memo_says_b(env: &Env, wid: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), || async {
        let m = memo_of(env, wid).await?;
        if m[TEST_DIFFERENCE_MEMO] == json!("B") {
            Ok(())
        } else {
            bail!("{wid}'s memo does not show B's difference: {m}")
        }
    })
    .await
}

/// What one run's history says of the deploy.
#[derive(Debug)]
struct Run {
    /// The identity of the worker that completed the run's first workflow task.
    first_by: String,
    /// The identities that completed its workflow tasks, in order.
    completed_by: Vec<String>,
    /// It holds the marker of [`TEST_DIFFERENCE_PATCH`].
    marker: bool,
    /// It upserted the memo field [`TEST_DIFFERENCE_MEMO`].
    memo_upsert: bool,
}

/// Every run of `wid`, oldest first.
fn runs_of(env: &Env, wid: &str) -> anyhow::Result<Vec<Run>> {
    let mut out = Vec::new();
    for h in run_histories(env, wid)?.into_iter().rev() {
        let mut run = Run {
            first_by: String::new(),
            completed_by: Vec::new(),
            marker: false,
            memo_upsert: false,
        };
        for e in h["events"].as_array().into_iter().flatten() {
            let t = e["eventType"]
                .as_str()
                .unwrap_or_default()
                .to_uppercase()
                .replace('_', "");
            if t.contains("WORKFLOWTASKCOMPLETED") {
                let who = e["workflowTaskCompletedEventAttributes"]["identity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                run.completed_by.push(who);
            } else if t.contains("MARKERRECORDED") {
                run.marker |= with_payloads_decoded(&e.to_string()).contains(TEST_DIFFERENCE_PATCH);
            } else if t.contains("PROPERTIESMODIFIED") {
                run.memo_upsert |= e.to_string().contains(TEST_DIFFERENCE_MEMO);
            }
        }
        run.first_by = run.completed_by.first().cloned().unwrap_or_default();
        out.push(run);
    }
    if out.is_empty() {
        bail!("no run of {wid}");
    }
    Ok(out)
}

/// The patch's guarantee, run by run: the marker, and the memo upsert with it, exactly in the runs
/// whose first workflow task B (`b_id`) completed.
fn patch_where_guaranteed(wid: &str, runs: &[Run], b_id: &str) -> anyhow::Result<()> {
    for (n, r) in runs.iter().enumerate() {
        let on_b = r.first_by.starts_with(b_id);
        if r.marker != on_b || r.memo_upsert != on_b {
            bail!(
                "{wid}, run {n}: marker {}, memo upsert {}, but its first task was completed by {} \
                 (B is {b_id}): {runs:?}",
                r.marker,
                r.memo_upsert,
                r.first_by
            );
        }
    }
    Ok(())
}

/// No workflow task of the tree failed (a nondeterminism error would be one) or timed out, but one
/// that a worker stopped with SIGTERM dropped (`many_workers`' excuse); how many were excused.
fn no_task_failed(env: &Env, tree: &Tree, stopped: &[u32]) -> anyhow::Result<usize> {
    let mut excused = 0;
    let mut found = Vec::new();
    for wid in tree.all() {
        let t = task_failures_beyond_kills(env, &wid, stopped)?;
        for e in &t.excused {
            eprintln!("rolling_deploy: excused in {wid}: {e}");
        }
        excused += t.excused.len();
        found.extend(t.failures.iter().map(|f| format!("{wid}: {f}")));
    }
    if !found.is_empty() {
        bail!("workflow tasks failed or timed out:\n{}", found.join("\n"));
    }
    Ok(excused)
}
