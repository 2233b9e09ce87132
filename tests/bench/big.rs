//! S11, the 1 + 10,000 tree of issue 13 (S12 is in `s12.rs`), and what both use. Each runs on a
//! release worker of its own (so that its peak RSS is the scenario's), alone: `BENCH_ONLY=s11`,
//! `BENCH_ONLY=s12` or `BENCH_ONLY=s11-s12`.
//!
//! S11: first, on a plain worker, whether a root User with 10,000 listings in its `data` is accepted
//! (it is not: its carry-over would not fit in one payload). Then, with `--compress` on the worker
//! and the client, the same root: the time until all 10,000 children run (counted by visibility),
//! until one root update renaming every listing has reached all of them, until a token rotation has
//! reached all of them (each child's query, in sweeps), and until a Temporal cancellation of the
//! root has left no child running; the worker's RSS, sampled every 200 ms.
//!
//! Every wait has a deadline, and a phase in which nothing moves for [`STALL`] stops with the
//! children it left behind (and the evidence: their pending workflow task, their history's signals
//! and timeouts, the worker's task slots); a missed target fails the run (exit code 1) after the
//! table is printed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::connect::ConnectArgs;
use stateful_client::ops;
use stateful_tests::WorkerProc;
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowCancelOptions, WorkflowCountOptions, WorkflowDescribeOptions,
};
use tokio::sync::Semaphore;

use crate::evidence::{cut, failure_message, log_summary, problems, stuck_evidence, worker_gauges};
use crate::{ms, rss_kb};

/// Children of the S11 tree.
const S11_CHILDREN: usize = 10_000;
/// Queries in flight while sweeping the children.
const SWEEP_INFLIGHT: usize = 32;
/// Deadlines of S11's phases.
const S11_START_WITHIN: Duration = Duration::from_secs(40 * 60);
/// (`BENCH_S11_PHASE_MINUTES` sets the deadline of the rename, rotation and cancel phases.)
fn phase_within() -> Duration {
    let min = std::env::var("BENCH_S11_PHASE_MINUTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(20);
    Duration::from_secs(min * 60)
}
/// A sweep or a count that has not moved for this long has stalled: what is left is stuck.
const STALL: Duration = Duration::from_secs(180);

/// What a large scenario gives back: its rows (scenario, figure) and, when a target was missed, why.
pub struct Outcome {
    pub rows: Vec<(String, String)>,
    pub failure: Option<String>,
}

/// Workflow execution statuses (temporal.api.enums.v1.WorkflowExecutionStatus).
pub(crate) fn status_name(s: i32) -> &'static str {
    match s {
        1 => "Running",
        2 => "Completed",
        3 => "Failed",
        4 => "Canceled",
        5 => "Terminated",
        6 => "ContinuedAsNew",
        7 => "TimedOut",
        _ => "Unknown",
    }
}

/// (run id, status, history length, history bytes) of a workflow's latest run.
pub(crate) async fn describe(c: &Client, wid: &str) -> anyhow::Result<(String, i32, i64, i64)> {
    let d = c
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .describe(WorkflowDescribeOptions::default())
        .await?;
    let info = d.raw().workflow_execution_info.clone().unwrap_or_default();
    Ok((
        info.execution.map(|e| e.run_id).unwrap_or_default(),
        info.status,
        info.history_length,
        info.history_size_bytes,
    ))
}

/// Workflows matching a visibility query.
async fn count(c: &Client, query: &str) -> anyhow::Result<usize> {
    Ok(
        c.count_workflows(query.to_string(), WorkflowCountOptions::default())
            .await?
            .count(),
    )
}

/// The worker's RSS, sampled every 200 ms: the peak since the last [`Rss::take`].
struct Rss {
    pid: u32,
    peak_kb: Arc<AtomicU64>,
}

impl Rss {
    fn start(pid: u32) -> Rss {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let p = peak_kb.clone();
        tokio::spawn(async move {
            loop {
                p.fetch_max(rss_kb(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Rss { pid, peak_kb }
    }

    /// The peak since the last call, in MB (and starts a new period).
    fn take(&self) -> f64 {
        let now = rss_kb(self.pid, "VmRSS:");
        self.peak_kb.swap(now, Ordering::Relaxed).max(now) as f64 / 1024.0
    }

    /// The process's peak over its whole life (VmHWM), in MB.
    fn hwm(&self) -> f64 {
        rss_kb(self.pid, "VmHWM:") as f64 / 1024.0
    }
}

/// How a sweep ended: the time (from its `t0`) at which the last workflow was seen to be as expected,
/// the number of sweeps, and those never seen so (with their last answer) when it stalled.
struct Swept {
    last_ms: f64,
    sweeps: usize,
    stuck: Vec<(String, String)>,
}

/// Queries every workflow of `wids` (at most [`SWEEP_INFLIGHT`] at once) in sweeps, each sweep asking
/// only those not yet seen to satisfy `pred`, until all do, or until none has come for [`STALL`] or
/// `within` has passed (then the rest are returned as stuck).
async fn sweep_until(
    c: &Client,
    wids: &[String],
    query: &'static str,
    pred: Arc<dyn Fn(&Value) -> bool + Send + Sync>,
    t0: Instant,
    within: Duration,
) -> anyhow::Result<Swept> {
    let sem = Arc::new(Semaphore::new(SWEEP_INFLIGHT));
    let mut pending: Vec<String> = wids.to_vec();
    let mut last_ms: f64 = 0.0;
    let mut sweeps = 0;
    let mut shown = Instant::now();
    let mut progress = (pending.len(), Instant::now());
    loop {
        sweeps += 1;
        let mut set = tokio::task::JoinSet::new();
        for w in pending.drain(..) {
            let (c, sem, pred) = (c.clone(), sem.clone(), pred.clone());
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                let r = ops::query(&c, &w, query).await;
                let seen = ms(t0.elapsed());
                match r {
                    Ok(v) if pred(&v) => (w, Ok(seen)),
                    Ok(v) => (w, Err(cut(v.to_string(), 200))),
                    Err(e) => (w, Err(cut(format!("{e:#}"), 300))),
                }
            });
        }
        let mut answers = Vec::new();
        while let Some(r) = set.join_next().await {
            let (w, r) = r?;
            match r {
                Ok(seen) => last_ms = last_ms.max(seen),
                Err(answer) => {
                    answers.push((w.clone(), answer));
                    pending.push(w);
                }
            }
        }
        if pending.is_empty() {
            return Ok(Swept {
                last_ms,
                sweeps,
                stuck: Vec::new(),
            });
        }
        if pending.len() < progress.0 {
            progress = (pending.len(), Instant::now());
        } else if progress.1.elapsed() > STALL {
            answers.sort();
            return Ok(Swept {
                last_ms,
                sweeps,
                stuck: answers,
            });
        }
        if t0.elapsed() > within {
            eprintln!(
                "bench: S11 `{query}`: {} of {} pending at the deadline ({within:?})",
                pending.len(),
                wids.len()
            );
            answers.sort();
            return Ok(Swept {
                last_ms,
                sweeps,
                stuck: answers,
            });
        }
        if shown.elapsed() > Duration::from_secs(20) {
            eprintln!(
                "bench: S11 `{query}`: {} of {} pending after {:.0} s",
                pending.len(),
                wids.len(),
                t0.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the scenarios that `which` names (`s11`, `s12` or `s11-s12`).
pub async fn run(
    which: &str,
    address: &str,
    client: &Client,
    cli: &Path,
    log_dir: &Path,
    tag: &str,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome {
        rows: Vec::new(),
        failure: None,
    };
    if which.contains("floor") {
        floor_s11(address, client, log_dir, tag, &mut out).await?;
    }
    if which == "s11" || which == "s11-s12" {
        eprintln!("bench: S11 without compression (is the 1 + 10,000 root accepted?)...");
        let probe = s11_plain_probe(client, cli, address, log_dir, tag).await?;
        eprintln!("bench: S11 without compression: {probe}");
        out.rows
            .push(("S11 without compression (plain worker)".into(), probe));
        // A sticky cache larger than the workflows the tree keeps busy at once: with a full cache,
        // temporalio-sdk-core 0.10.1 can drop a buffered run's activation ("Extra buffered run
        // should not have produced an activation") and that workflow's task never completes (seen
        // in the earlier S11 runs; README "Scaling out"). BENCH_S11_CACHE overrides it.
        // BENCH_S11_WORKER_ARGS adds worker options (e.g. `--sticky-timeout-ms 10000`).
        let cache = std::env::var("BENCH_S11_CACHE").unwrap_or_else(|_| "12000".into());
        let extra = std::env::var("BENCH_S11_WORKER_ARGS").unwrap_or_default();
        eprintln!(
            "bench: S11 (1 + 10,000 tree, --compress, --max-cached-workflows {cache} {extra})..."
        );
        let mut args = vec!["--compress", "--max-cached-workflows", &cache];
        args.extend(extra.split_whitespace());
        let w = WorkerProc::start_with(
            address,
            "bench-s11",
            log_dir,
            "worker-s11",
            &args,
            "release",
        )
        .await?;
        let zc = compressed_client(address, true).await?;
        let id = format!("big{tag}");
        let r = s11(&zc, cli, address, &w, &id, &mut out.rows).await;
        let root = format!("User-{id}");
        if let Err(e) = r {
            eprintln!("bench: S11 FAILED: {e:#}");
            let (found, runs) = problems(cli, address, &root).await;
            eprintln!(
                "bench: S11 root {root}: {runs} runs, {} failed/retried tasks, terminations or failures:",
                found.len()
            );
            for f in found.iter().take(20) {
                eprintln!("  {f}");
            }
            out.rows.push(("S11".into(), format!("FAILED: {e:#}")));
            out.failure = Some(format!("S11: {e:#}"));
        }
        eprintln!(
            "bench: S11 worker log {}:\n{}",
            w.log.display(),
            log_summary(&w.log)
        );
        w.stop().await;
    }
    if which.contains("s12") {
        crate::s12::run(address, cli, log_dir, tag, &mut out).await?;
    }
    Ok(out)
}

/// A client whose payload codec compresses (`compress`) or not.
pub(crate) async fn compressed_client(address: &str, compress: bool) -> anyhow::Result<Client> {
    let args = ConnectArgs {
        address: Some(address.to_string()),
        namespace: Some("default".into()),
        compress,
        ..Default::default()
    };
    args.resolve()?.connect("bench-big").await
}

/// The 1 + 10,000 root on a worker without compression: refused at start (its carry-over would not
/// fit in one payload), or, if accepted, cancelled again. Returns what happened.
async fn s11_plain_probe(
    c: &Client,
    cli: &Path,
    address: &str,
    log_dir: &Path,
    tag: &str,
) -> anyhow::Result<String> {
    let w = WorkerProc::start_with(
        address,
        "bench-s11-plain",
        log_dir,
        "worker-s11-plain",
        &[],
        "release",
    )
    .await?;
    let id = format!("bigplain{tag}");
    let root = format!("User-{id}");
    let data = json!({"id": id, "name": "big", "listings": (0..S11_CHILDREN).map(|i| listing(&id, i)).collect::<Vec<_>>()});
    ops::start(
        c,
        "bench-s11-plain",
        &root,
        json!({"id": id, "entityName": "User", "data": data}),
    )
    .await?;
    let t0 = Instant::now();
    let running_q =
        format!("WorkflowId STARTS_WITH 'Listing-{id}-l' AND ExecutionStatus = 'Running'");
    let said = loop {
        let (_, status, _, _) = describe(c, &root).await?;
        if status != 1 {
            let why = failure_message(cli, address, &root)
                .await
                .unwrap_or_default();
            break format!("the root ends {} at once: {why}", status_name(status));
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let running = count(c, &running_q).await?;
            c.get_workflow_handle::<UntypedWorkflow>(&root)
                .cancel(WorkflowCancelOptions::default())
                .await?;
            let t1 = Instant::now();
            while count(c, &running_q).await? > 0 {
                if t1.elapsed() > phase_within() {
                    bail!(
                        "the plain probe's children still run {:?} after its cancellation",
                        phase_within()
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            break format!(
                "the root runs ({running} children after 60 s); cancelled, not measured"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    w.stop().await;
    Ok(said)
}

/// A listing of about 100 bytes of JSON.
fn listing(id: &str, i: usize) -> Value {
    let city = ["Lisbon", "Porto", "Faro", "Braga"][i % 4];
    json!({"id": format!("{id}-l{i}"), "user": id, "name": format!("listing {i}"),
           "city": city, "price": 50 + (i * 37) % 950})
}

/// S11 on the worker `w` (task queue `bench-s11`); pushes its rows as it goes.
/// A query of a workflow that may be busy (a root with 10,000 children answers between long
/// workflow tasks, and the client's call can time out meanwhile): tried again for up to a minute.
async fn query_patiently(c: &Client, wid: &str, query: &str) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    loop {
        match ops::query(c, wid, query).await {
            Ok(v) => return Ok(v),
            Err(e) if t0.elapsed() > Duration::from_secs(60) => {
                return Err(e.context(format!("`{query}` on {wid}, tried for 60 s")));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

async fn s11(
    c: &Client,
    cli: &Path,
    address: &str,
    w: &WorkerProc,
    id: &str,
    rows: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let n = S11_CHILDREN;
    let root = format!("User-{id}");
    let prefix = format!("Listing-{id}-l");
    let kids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let rss = Rss::start(w.child.id().unwrap_or(0));
    let base = rss.take();
    let data = json!({"id": id, "name": "big", "listings": (0..n).map(|i| listing(id, i)).collect::<Vec<_>>()});
    let input = json!({"id": id, "entityName": "User", "apiToken": "s11-1", "data": data});
    let input_len = input.to_string().len();
    let running_q = format!("WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Running'");
    let all_q = format!("WorkflowId STARTS_WITH '{prefix}'");

    // Start: all 10,000 children running (visibility), the root still running.
    let t0 = Instant::now();
    ops::start(c, "bench-s11", &root, input).await?;
    let mut shown = Instant::now();
    let started = loop {
        let running = count(c, &running_q).await?;
        if running >= n {
            break ms(t0.elapsed());
        }
        let (_, status, len, _) = describe(c, &root).await?;
        if status != 1 {
            bail!(
                "start: the root is {} after {:.0} s, with {running} of {n} children running",
                status_name(status),
                t0.elapsed().as_secs_f64()
            );
        }
        if shown.elapsed() > Duration::from_secs(30) {
            let runs = ops::query(c, &root, "version")
                .await
                .map(|v| v["runs"].to_string())
                .unwrap_or_else(|e| format!("? ({e:#})"));
            eprintln!(
                "bench: S11 start: {running} of {n} children running after {:.0} s (root: run {runs}, {len} events in this run)",
                t0.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
        if t0.elapsed() > S11_START_WITHIN {
            bail!("start: only {running} of {n} children running after {S11_START_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let total = count(c, &all_q).await?;
    let runs = query_patiently(c, &root, "version").await?["runs"].clone();
    rows.push((
        "S11 1 + 10,000 tree start: all 10,000 children running (visibility count)".into(),
        format!(
            "{:.1} s ({:.0} children/s); root input {:.2} MB; root on run {runs}; {total} child executions in all",
            started / 1000.0,
            n as f64 / (started / 1000.0),
            input_len as f64 / 1e6
        ),
    ));
    let start_rss = rss.take();
    // Each child holds its slice (first, middle, last), and the root's `children` query.
    for i in [0, n / 2, n - 1] {
        let l = format!("{id}-l{i}");
        let st = query_patiently(c, &kids[i], "state").await?;
        if st["Listing"][&l]["name"] != json!(format!("listing {i}")) {
            bail!("start: {} does not hold its listing: {st}", kids[i]);
        }
    }
    let children = match ops::query(c, &root, "children").await {
        Ok(v) => {
            let list = v["children"].as_array().cloned().unwrap_or_default();
            let running = list
                .iter()
                .filter(|c| c["status"] == "running" && c["queued"] != json!(true))
                .count();
            format!(
                "answers {:.2} MB: {} children, {running} running and started",
                v.to_string().len() as f64 / 1e6,
                list.len()
            )
        }
        Err(e) => format!("fails: {e:#}"),
    };
    eprintln!("bench: S11 the root's `children` query {children}");
    rows.push(("S11 the root's `children` query".into(), children));

    // Rename: one root update renaming every listing (the children's slices hold their listing, not
    // the root's User: a child's slice stops at its parent's entity).
    let upd: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("{id}-l{i}"), json!({"name": "renamed"})))
        .collect();
    let t0 = Instant::now();
    ops::signal(
        c,
        &root,
        "update",
        Some(&json!({"updates": {"Listing": upd}})),
    )
    .await?;
    let swept = sweep_until(
        c,
        &kids,
        "data",
        Arc::new(|v: &Value| v["name"] == "renamed"),
        t0,
        phase_within(),
    )
    .await
    .map_err(|e| anyhow!("rename: {e:#}"))?;
    rows.push((
        "S11 one root update renaming all 10,000 listings reaches every child (polled)".into(),
        phase_figure(&swept, n),
    ));
    let mut missed = report_stuck("rename", &swept, cli, address, w).await;
    let rename_rss = rss.take();

    // Token rotation at the root reaches every child.
    let fp = json!(stateful_engine::fingerprint("s11-2"));
    let t0 = Instant::now();
    ops::signal(c, &root, "apiToken", Some(&json!("s11-2"))).await?;
    let swept = sweep_until(
        c,
        &kids,
        "apiToken",
        Arc::new(move |v: &Value| v["fingerprint"] == fp),
        t0,
        phase_within(),
    )
    .await
    .map_err(|e| anyhow!("rotation: {e:#}"))?;
    rows.push((
        "S11 token rotation reaches all 10,000 children (polled)".into(),
        phase_figure(&swept, n),
    ));
    missed.extend(report_stuck("rotation", &swept, cli, address, w).await);
    let rotate_rss = rss.take();

    // Cascade cancel: a Temporal cancellation of the root, until no child runs.
    let t0 = Instant::now();
    c.get_workflow_handle::<UntypedWorkflow>(&root)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    let mut shown = Instant::now();
    let mut progress = (usize::MAX, Instant::now());
    let cancelled = loop {
        let running = count(c, &running_q).await?;
        let (_, status, _, _) = describe(c, &root).await?;
        if running == 0 && status != 1 {
            break ms(t0.elapsed());
        }
        if running < progress.0 {
            progress = (running, Instant::now());
        } else if progress.1.elapsed() > STALL || t0.elapsed() > phase_within() {
            let left = list_running(c, &running_q).await;
            for e in stuck_evidence(cli, address, &left).await {
                eprintln!("bench: S11 cancel, still running: {e}");
            }
            eprintln!("bench: S11 cancel: worker {}", worker_gauges(w).await);
            missed.push(format!(
                "cancel: {running} of {n} children still running after {:.0} s, the last {:.0} s without one ending (root {}; e.g. {:?})",
                t0.elapsed().as_secs_f64(),
                progress.1.elapsed().as_secs_f64(),
                status_name(status),
                left.first()
            ));
            break ms(t0.elapsed());
        }
        if shown.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "bench: S11 cancel: {running} children still running after {:.0} s (root {})",
                t0.elapsed().as_secs_f64(),
                status_name(status)
            );
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let cancel_rss = rss.take();
    let mut ended = Vec::new();
    for s in [
        "Running",
        "Canceled",
        "Completed",
        "Terminated",
        "Failed",
        "TimedOut",
    ] {
        let k = count(c, &format!("{all_q} AND ExecutionStatus = '{s}'")).await?;
        if k > 0 {
            ended.push(format!("{k} {s}"));
        }
    }
    let (_, root_status, _, _) = describe(c, &root).await?;
    rows.push((
        "S11 cascade cancel (Temporal cancellation of the root) until no child runs".into(),
        format!(
            "{:.1} s; children: {}; root {}",
            cancelled / 1000.0,
            ended.join(", "),
            status_name(root_status)
        ),
    ));
    let (found, root_runs) = problems(cli, address, &root).await;
    rows.push((
        "S11 root: runs, failed or retried workflow tasks".into(),
        format!("{root_runs} runs, {} problems", found.len()),
    ));
    for f in found.iter().take(20) {
        eprintln!("bench: S11 root: {f}");
    }
    rows.push((
        "S11 worker RSS: idle / peak during start, rename, rotation, cancel / VmHWM".into(),
        format!(
            "{base:.0} / {start_rss:.0}, {rename_rss:.0}, {rotate_rss:.0}, {cancel_rss:.0} / {:.0} MB",
            rss.hwm()
        ),
    ));
    if !missed.is_empty() {
        bail!("targets missed: {}", missed.join("; "));
    }
    if !found.is_empty() {
        bail!(
            "the root had {} failed or retried workflow tasks, terminations or failures",
            found.len()
        );
    }
    Ok(())
}

/// A phase's figure: the time until the last child was seen, or how many were reached and how many
/// are stuck.
fn phase_figure(swept: &Swept, n: usize) -> String {
    if swept.stuck.is_empty() {
        format!("{:.1} s ({} sweeps)", swept.last_ms / 1000.0, swept.sweeps)
    } else {
        format!(
            "NOT ALL: {} of {n} within {:.1} s; {} never reached (nothing moved for {} s, or the phase's deadline passed: {})",
            n - swept.stuck.len(),
            swept.last_ms / 1000.0,
            swept.stuck.len(),
            STALL.as_secs(),
            swept
                .stuck
                .iter()
                .take(5)
                .map(|(w, _)| w.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Prints the evidence about a phase's stuck children; returns the missed target, if any.
async fn report_stuck(
    phase: &str,
    swept: &Swept,
    cli: &Path,
    address: &str,
    w: &WorkerProc,
) -> Vec<String> {
    if swept.stuck.is_empty() {
        return Vec::new();
    }
    for (wid, answer) in swept.stuck.iter().take(5) {
        eprintln!("bench: S11 {phase}: {wid} answers {answer}");
    }
    let wids: Vec<String> = swept.stuck.iter().map(|(w, _)| w.clone()).collect();
    for e in stuck_evidence(cli, address, &wids).await {
        eprintln!("bench: S11 {phase}, stuck: {e}");
    }
    eprintln!("bench: S11 {phase}: worker {}", worker_gauges(w).await);
    vec![format!(
        "{phase}: {} of {} children never reached",
        swept.stuck.len(),
        S11_CHILDREN
    )]
}

/// Up to 5 workflow ids that a visibility query lists.
async fn list_running(c: &Client, query: &str) -> Vec<String> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut stream = c.list_workflows(
        query.to_string(),
        temporalio_client::WorkflowListOptions::default(),
    );
    while let Some(Ok(e)) = stream.next().await {
        out.push(e.id().to_string());
        if out.len() == 5 {
            break;
        }
    }
    out
}

/// S11 on the raw-Temporal floor (`BENCH_ONLY=s11-floor`): a floor root with 10,000 children on a
/// `floor-worker` of its own (the same cache as S11's worker), the same phases: all children
/// running, a value sent down to all of them (twice: the rename and the rotation), a Temporal
/// cancellation of the root until no child runs; the floor worker's RSS.
async fn floor_s11(
    address: &str,
    c: &Client,
    log_dir: &Path,
    tag: &str,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let n = S11_CHILDREN;
    let cache = std::env::var("BENCH_S11_CACHE").unwrap_or_else(|_| "12000".into());
    eprintln!("bench: S11 on the floor (1 + 10,000, --max-cached-workflows {cache})...");
    let w = WorkerProc::start_bin(
        "floor-worker",
        address,
        "floor-s11",
        log_dir,
        "floor-worker-s11",
        &["--max-cached-workflows", &cache],
        "release",
        &[],
    )
    .await?;
    let rss = Rss::start(w.child.id().unwrap_or(0));
    let base = rss.take();
    let root = format!("floor-big{tag}");
    let prefix = format!("{root}-c");
    let kids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let running_q = format!("WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Running'");
    let t0 = Instant::now();
    c.start_workflow(
        stateful_tests::floor::FloorParent::run,
        json!({"children": n, "grandchildren": 0}),
        temporalio_client::WorkflowStartOptions::new("floor-s11".to_string(), root.clone()).build(),
    )
    .await
    .map_err(|e| anyhow!("starting the floor root: {e}"))?;
    let mut shown = Instant::now();
    let started = loop {
        let running = count(c, &running_q).await?;
        if running >= n {
            break ms(t0.elapsed());
        }
        if shown.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "bench: S11 floor start: {running} of {n} children running after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
        if t0.elapsed() > S11_START_WITHIN {
            bail!("floor start: only {running} of {n} children running after {S11_START_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    out.rows.push((
        "S11 floor: all 10,000 children running (visibility count)".into(),
        format!(
            "{:.1} s ({:.0} children/s)",
            started / 1000.0,
            n as f64 / (started / 1000.0)
        ),
    ));
    let start_rss = rss.take();
    let mut peaks = Vec::new();
    for (phase, key, value) in [
        ("a value down to all (the rename)", "name", "renamed"),
        (
            "a second value down to all (the rotation)",
            "token",
            "s11-2",
        ),
    ] {
        let t0 = Instant::now();
        ops::signal(
            c,
            &root,
            "down",
            Some(&json!({"value": {key: value}, "depth": 1})),
        )
        .await?;
        let swept = sweep_until(
            c,
            &kids,
            "get",
            Arc::new(move |v: &Value| v[key] == value),
            t0,
            phase_within(),
        )
        .await?;
        out.rows.push((
            format!("S11 floor: {phase} reaches every child (polled)"),
            phase_figure(&swept, n),
        ));
        if !swept.stuck.is_empty() {
            out.failure = Some(format!(
                "S11 floor: {phase}: {} children never reached",
                swept.stuck.len()
            ));
        }
        peaks.push(rss.take());
    }
    let t0 = Instant::now();
    c.get_workflow_handle::<UntypedWorkflow>(&root)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    let mut progress = (usize::MAX, Instant::now());
    let cancelled = loop {
        let running = count(c, &running_q).await?;
        let (_, status, len, _) = describe(c, &root).await?;
        if running == 0 && status != 1 {
            break format!(
                "{:.1} s; root {}",
                t0.elapsed().as_secs_f64(),
                status_name(status)
            );
        }
        if running < progress.0 {
            progress = (running, Instant::now());
        } else if progress.1.elapsed() > STALL || t0.elapsed() > phase_within() {
            out.failure = Some(format!(
                "S11 floor: cancel: {running} children still running"
            ));
            break format!(
                "NOT ALL: {running} of {n} still running after {:.0} s (the root {}, {len} events in its latest run)",
                t0.elapsed().as_secs_f64(),
                status_name(status)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    out.rows.push((
        "S11 floor: cascade cancel (Temporal cancellation of the root) until no child runs".into(),
        cancelled,
    ));
    out.rows.push((
        "S11 floor worker RSS: idle / peak during start, rename, rotation, cancel / VmHWM".into(),
        format!(
            "{base:.0} / {start_rss:.0}, {:.0}, {:.0}, {:.0} / {:.0} MB",
            peaks[0],
            peaks[1],
            rss.take(),
            rss.hwm()
        ),
    ));
    w.stop().await;
    Ok(())
}
