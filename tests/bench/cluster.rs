//! Cluster scenarios (S1–S10 and the raw-Temporal floor): a local dev server, the release `worker`
//! binary, and the client. Run with `scripts/bench` (builds everything in release first). The large
//! scenarios of issue 13 (S11, the 1 + 10,000 tree; S12, the largest state carried over
//! continue-as-new) are in `big.rs` and run alone (`BENCH_ONLY=s11`, `s12` or `s11-s12`).
//!
//! Method: times run from just before the start or signal call; each workflow's query is polled every
//! 50 ms, at most 8 queries in flight; every figure is the median of several runs, with its spread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::floor::FloorParent;
use stateful_tests::{WorkerProc, client, dev_server, root, temporal_cli};
use temporalio_client::{Client, WorkflowDescribeOptions};
use tokio::sync::Semaphore;
use worker::devserver::DevServer;

mod big;
mod evidence;
mod s12;

const POLL: Duration = Duration::from_millis(50);

struct Ctx {
    client: Client,
    tq: String,
    floor_tq: String,
    tag: String,
    poll: Arc<Semaphore>,
}

/// A fresh id for each workflow a scenario starts.
fn uid(c: &Ctx, prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}-{}", N.fetch_add(1, Ordering::Relaxed), c.tag)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i]
}

/// Polls `query` on `wid` every 50 ms (through the shared 8-slot limiter) until `pred`.
async fn poll_until(
    c: &Ctx,
    wid: &str,
    query: &str,
    pred: impl Fn(&Value) -> bool,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (ok, last) = {
            let _p = c.poll.acquire().await?;
            match ops::query(&c.client, wid, query).await {
                Ok(v) => (pred(&v), v.to_string()),
                Err(e) => (false, format!("{e:#}")),
            }
        };
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{wid}: `{query}` not as expected within {within:?}; last answer: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls many workflows at once until each satisfies `pred`.
async fn poll_all(
    c: &Arc<Ctx>,
    wids: Vec<String>,
    query: &'static str,
    pred: fn(&str, &Value) -> bool,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in wids {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let w2 = w.clone();
            poll_until(
                &c,
                &w,
                query,
                move |v| pred(&w2, v),
                Duration::from_secs(300),
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn s1(c: &Ctx, ack: bool) -> anyhow::Result<(f64, f64, String)> {
    let id = uid(c, if ack { "s1a" } else { "s1s" });
    let wid = format!("User-{id}");
    ops::start(
        &c.client,
        &c.tq,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}}),
    )
    .await?;
    poll_until(
        c,
        &wid,
        "status",
        |v| v == "running",
        Duration::from_secs(30),
    )
    .await?;
    let mut lat = Vec::new();
    for i in 0..200 {
        let msg = json!({"data": {"id": id, "n": i}});
        let t0 = Instant::now();
        if ack {
            ops::update(&c.client, &wid, "update", &msg).await?;
        } else {
            ops::signal(&c.client, &wid, "update", Some(&msg)).await?;
            poll_until(c, &wid, "data", |v| v["n"] == i, Duration::from_secs(30)).await?;
        }
        lat.push(ms(t0.elapsed()));
    }
    Ok((pct(&lat, 0.5), pct(&lat, 0.95), wid))
}

async fn s2(c: &Arc<Ctx>, workflows: usize, per: usize) -> anyhow::Result<f64> {
    let run = uid(c, &format!("s2x{workflows}-"));
    let mut wids = Vec::new();
    for w in 0..workflows {
        let id = format!("{run}-{w}");
        let wid = format!("User-{id}");
        ops::start(
            &c.client,
            &c.tq,
            &wid,
            json!({"id": id, "entityName": "User", "data": {"id": id}}),
        )
        .await?;
        wids.push((id, wid));
    }
    for (_, wid) in &wids {
        poll_until(
            c,
            wid,
            "status",
            |v| v == "running",
            Duration::from_secs(60),
        )
        .await?;
    }
    let sem = Arc::new(Semaphore::new(32));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..per {
        for (id, wid) in &wids {
            let (c, sem, id, wid) = (c.clone(), sem.clone(), id.clone(), wid.clone());
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire().await?;
                ops::signal(
                    &c.client,
                    &wid,
                    "update",
                    Some(&json!({"data": {"id": id, format!("f{i}"): i}})),
                )
                .await
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    let need = per + 1;
    for (_, wid) in &wids {
        poll_until(
            c,
            wid,
            "data",
            move |v| v.as_object().map(|m| m.len()) == Some(need),
            Duration::from_secs(300),
        )
        .await?;
    }
    let took = t0.elapsed().as_secs_f64();
    // Leave nothing running behind (S7's peak is measured after S2).
    for (_, wid) in &wids {
        ops::signal(&c.client, wid, "cancel", None).await?;
    }
    Ok((workflows * per) as f64 / took)
}

fn tree_data(id: &str, listings: usize, photos: usize) -> Value {
    json!({"id": id, "listings": (0..listings).map(|l| {
        let lid = format!("{id}-l{l}");
        json!({"id": lid, "user": id, "name": "x", "photos": (0..photos).map(|p| json!({"id": format!("{lid}-p{p}"), "listing": lid})).collect::<Vec<_>>()})
    }).collect::<Vec<_>>()})
}

fn tree_ids(id: &str, listings: usize, photos: usize) -> (Vec<String>, Vec<String>) {
    let mut ls = Vec::new();
    let mut ps = Vec::new();
    for l in 0..listings {
        let lid = format!("{id}-l{l}");
        for p in 0..photos {
            ps.push(format!("Photo-{lid}-p{p}"));
        }
        ls.push(format!("Listing-{lid}"));
    }
    (ls, ps)
}

fn holds_own(wid: &str, v: &Value) -> bool {
    let (entity, id) = wid.split_once('-').unwrap_or_default();
    v[entity].get(id).is_some()
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2026-11-21T15:31:52.646924173Z`).
fn parse_time(t: &str) -> Option<f64> {
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut hms = time.split(':');
    let (h, mi, sec) = (
        hms.next()?.parse::<f64>().ok()?,
        hms.next()?.parse::<f64>().ok()?,
        hms.next()?.parse::<f64>().ok()?,
    );
    Some(((days * 86_400) as f64 + h * 3600.0 + mi * 60.0 + sec) * 1000.0)
}

/// The events of `wid`'s latest run: (time in ms, attributes' type, e.g. `WorkflowTaskStartedEventAttributes`).
async fn events(c: &Ctx, wid: &str) -> anyhow::Result<Vec<(f64, String)>> {
    let raw = c
        .client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid)
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    let h: Value = serde_json::from_slice(&raw)?;
    Ok(h["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let t = parse_time(e["event_time"].as_str()?)?;
            let kind = e["attributes"].as_object()?.keys().next()?.clone();
            Some((t, kind))
        })
        .collect())
}

/// S3 from the histories' event times (undisturbed by polling): from the root's start to the last
/// first-workflow-task completion among `all` (root first).
async fn start_from_history(c: &Ctx, all: &[String]) -> anyhow::Result<f64> {
    let mut first = f64::MAX;
    let mut last: f64 = 0.0;
    for (i, w) in all.iter().enumerate() {
        let ev = events(c, w).await?;
        if i == 0 {
            first = ev.first().map(|e| e.0).unwrap_or(f64::MAX);
        }
        let done = ev
            .iter()
            .find(|e| e.1 == "WorkflowTaskCompletedEventAttributes")
            .map(|e| e.0)
            .ok_or_else(|| anyhow!("{w} never completed a workflow task"))?;
        last = last.max(done);
    }
    Ok(last - first)
}

/// For every signal of `wid`'s history: the time from its workflow task being scheduled to being
/// started (the delay issue 7 asks about), in signal order.
async fn signal_task_delays(c: &Ctx, wid: &str) -> anyhow::Result<Vec<f64>> {
    let ev = events(c, wid).await?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < ev.len() {
        if ev[i].1 == "WorkflowExecutionSignaledEventAttributes" {
            let sched = ev[i..]
                .iter()
                .find(|e| e.1 == "WorkflowTaskScheduledEventAttributes");
            let started = ev[i..]
                .iter()
                .find(|e| e.1 == "WorkflowTaskStartedEventAttributes");
            if let (Some(a), Some(b)) = (sched, started) {
                out.push(b.0 - a.0);
            }
        }
        i += 1;
    }
    Ok(out)
}

/// What a tree scenario measured: times in ms (`start`, `start_history`, `down`, `up`, `token`),
/// and the fan-outs' splits per level from the histories.
#[derive(Debug, Default)]
struct Fanout {
    times: BTreeMap<&'static str, f64>,
    down: Vec<Hop>,
    up: Vec<Hop>,
    token: Vec<Hop>,
}

/// S3–S6 on one tree of ours.
async fn tree(c: &Arc<Ctx>, run: usize, listings: usize, photos: usize) -> anyhow::Result<Fanout> {
    let id = format!("t{listings}x{photos}-{run}-{}", c.tag);
    let root = format!("User-{id}");
    let (ls, ps) = tree_ids(&id, listings, photos);
    let mut all: Vec<String> = vec![root.clone()];
    all.extend(ls.iter().cloned());
    all.extend(ps.iter().cloned());
    let mut out = Fanout::default();
    let t0 = Instant::now();
    ops::start(&c.client, &c.tq, &root, json!({"id": id, "entityName": "User", "apiToken": "bench-1", "data": tree_data(&id, listings, photos)})).await?;
    poll_all(c, all.clone(), "state", holds_own).await?;
    out.times.insert("start", ms(t0.elapsed()));
    if photos > 0 {
        // From the histories: only for the 111-workflow tree (a 1 + 1,000 root continues as new
        // while it starts its children, and its latest run may not have completed a task yet).
        out.times
            .insert("start_history", start_from_history(c, &all).await?);
    }
    if photos > 0 {
        // S4: one root update renaming every listing.
        let upd: serde_json::Map<String, Value> = (0..listings)
            .map(|l| (format!("{id}-l{l}"), json!({"name": "renamed"})))
            .collect();
        let since = now_ms();
        let t0 = Instant::now();
        ops::signal(
            &c.client,
            &root,
            "update",
            Some(&json!({"updates": {"Listing": upd}})),
        )
        .await?;
        poll_all(c, ls.clone(), "data", |_, v| v["name"] == "renamed").await?;
        out.times.insert("down", ms(t0.elapsed()));
        out.down = hop_split(c, &[vec![root.clone()], ls.clone()], since).await?;
        // S5: a photo change reaches the root.
        let p0 = format!("{id}-l0-p0");
        let since = now_ms();
        let t0 = Instant::now();
        ops::signal(
            &c.client,
            &format!("Photo-{p0}"),
            "update",
            Some(&json!({"data": {"id": p0, "caption": "up"}, "entityName": "Photo"})),
        )
        .await?;
        poll_until(
            c,
            &root,
            "state",
            |v| v["Photo"][&p0]["caption"] == "up",
            Duration::from_secs(60),
        )
        .await?;
        out.times.insert("up", ms(t0.elapsed()));
        out.up = hop_split(
            c,
            &[
                vec![format!("Photo-{p0}")],
                vec![ls[0].clone()],
                vec![root.clone()],
            ],
            since,
        )
        .await?;
        // S6: a token rotation reaches every descendant.
        let since = now_ms();
        let t0 = Instant::now();
        ops::signal(&c.client, &root, "apiToken", Some(&json!("bench-2"))).await?;
        poll_all(c, all[1..].to_vec(), "apiToken", |_, v| {
            v["fingerprint"] == json!(stateful_engine::fingerprint("bench-2"))
        })
        .await?;
        out.times.insert("token", ms(t0.elapsed()));
        out.token = hop_split(c, &[vec![root.clone()], ls.clone(), ps.clone()], since).await?;
    }
    // Leave nothing running behind.
    ops::signal(&c.client, &root, "cancel", None).await?;
    Ok(out)
}

/// Starts a floor workflow with `children` children of `grandchildren` each.
async fn start_floor(c: &Ctx, wid: &str, children: u64, grandchildren: u64) -> anyhow::Result<()> {
    c.client
        .start_workflow(
            FloorParent::run,
            json!({"children": children, "grandchildren": grandchildren}),
            temporalio_client::WorkflowStartOptions::new(c.floor_tq.clone(), wid.to_string())
                .build(),
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

async fn floor_s1(c: &Ctx) -> anyhow::Result<(f64, f64)> {
    let wid = uid(c, "floor-s1-");
    start_floor(c, &wid, 0, 0).await?;
    let mut lat = Vec::new();
    for i in 0..200 {
        let t0 = Instant::now();
        ops::signal(&c.client, &wid, "set", Some(&json!({"n": i}))).await?;
        poll_until(c, &wid, "get", |v| v["n"] == i, Duration::from_secs(30)).await?;
        lat.push(ms(t0.elapsed()));
    }
    ops::signal(&c.client, &wid, "done", Some(&json!(true))).await?;
    Ok((pct(&lat, 0.5), pct(&lat, 0.95)))
}

/// S2 on the floor: `workflows` floor workflows take `per` `set` signals each, 32 in flight.
async fn floor_s2(c: &Arc<Ctx>, workflows: usize, per: usize) -> anyhow::Result<f64> {
    let run = uid(c, &format!("floor-s2x{workflows}-"));
    let wids: Vec<String> = (0..workflows).map(|w| format!("{run}-{w}")).collect();
    for wid in &wids {
        start_floor(c, wid, 0, 0).await?;
    }
    for wid in &wids {
        poll_until(c, wid, "get", |v| v.is_object(), Duration::from_secs(60)).await?;
    }
    let sem = Arc::new(Semaphore::new(32));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..per {
        for wid in &wids {
            let (c, sem, wid) = (c.clone(), sem.clone(), wid.clone());
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire().await?;
                ops::signal(&c.client, &wid, "set", Some(&json!({format!("f{i}"): i}))).await
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    for wid in &wids {
        poll_until(
            c,
            wid,
            "get",
            move |v| v.as_object().map(|m| m.len()) == Some(per),
            Duration::from_secs(300),
        )
        .await?;
    }
    let took = t0.elapsed().as_secs_f64();
    for wid in &wids {
        ops::signal(&c.client, wid, "done", Some(&json!(true))).await?;
    }
    Ok((workflows * per) as f64 / took)
}

/// Milliseconds since the epoch by this machine's clock (the local dev server's events use it too).
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One level of a fan-out, from the histories' event times (see [`hop_split`]).
#[derive(Debug, Clone, Copy)]
struct Hop {
    /// When the last workflow of the level had received the message (its signal event), ms from
    /// the first level's signal.
    arrived: f64,
    /// When the last workflow of the level had applied it (the workflow task that took the signal
    /// completed), ms from the first level's signal.
    applied: f64,
    /// The median workflow task at this level, scheduled → started (waiting for a poller).
    wait: f64,
    /// The median workflow task at this level, started → completed (the worker's time).
    task: f64,
}

/// Where a message's time goes through a fan-out: `levels[0]` is the workflow the client signalled
/// at `since` (ms since the epoch, this machine's clock), `levels[k]` the workflows the message
/// reaches after k hops. Each workflow's first signal at or after `since`, and the workflow task
/// that took it.
async fn hop_split(c: &Ctx, levels: &[Vec<String>], since: f64) -> anyhow::Result<Vec<Hop>> {
    let mut out = Vec::new();
    let mut origin = None;
    for level in levels {
        let (mut arrived, mut applied, mut waits, mut tasks) = (0f64, 0f64, vec![], vec![]);
        for wid in level {
            let ev = events(c, wid).await?;
            let i = ev
                .iter()
                .position(|e| e.0 >= since && e.1 == "WorkflowExecutionSignaledEventAttributes")
                .ok_or_else(|| anyhow!("{wid}: no signal after the message was sent"))?;
            let find = |kind: &str| {
                ev[i..]
                    .iter()
                    .find(|e| e.1 == kind)
                    .map(|e| e.0)
                    .ok_or_else(|| anyhow!("{wid}: no {kind} after the signal"))
            };
            let (sched, started, done) = (
                find("WorkflowTaskScheduledEventAttributes")?,
                find("WorkflowTaskStartedEventAttributes")?,
                find("WorkflowTaskCompletedEventAttributes")?,
            );
            let o = *origin.get_or_insert(ev[i].0);
            arrived = arrived.max(ev[i].0 - o);
            applied = applied.max(done - o);
            waits.push(started - sched);
            tasks.push(done - started);
        }
        out.push(Hop {
            arrived,
            applied,
            wait: pct(&waits, 0.5),
            task: pct(&tasks, 0.5),
        });
    }
    Ok(out)
}

/// The medians over runs of each level's figures, as a table cell: `names[k]` for level k.
fn hops_cell(runs: &[Vec<Hop>], names: &[&str]) -> String {
    if runs.is_empty() {
        return "–".into();
    }
    let levels = runs.iter().map(Vec::len).min().unwrap_or(0);
    (0..levels)
        .map(|k| {
            let f = |g: fn(&Hop) -> f64| med(&runs.iter().map(|r| g(&r[k])).collect::<Vec<_>>());
            format!(
                "{}: applied +{:.1} (arrived +{:.1}; task wait {:.1}, run {:.1})",
                names.get(k).copied().unwrap_or("?"),
                f(|h| h.applied),
                f(|h| h.arrived),
                f(|h| h.wait),
                f(|h| h.task),
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// S3–S6 on the floor: a `listings` × `photos` tree of floor workflows; the same fan-outs as
/// [`tree`] (`down` with depth 1 to the children, `up` with 2 hops from a grandchild to the root,
/// `down` with depth 2 to every descendant), polled alike.
async fn floor_tree(
    c: &Arc<Ctx>,
    run: usize,
    listings: usize,
    photos: usize,
) -> anyhow::Result<Fanout> {
    let wid = format!("floor-t{listings}x{photos}-{run}-{}", c.tag);
    let children: Vec<String> = (0..listings).map(|i| format!("{wid}-c{i}")).collect();
    let grandchildren: Vec<String> = children
        .iter()
        .flat_map(|ch| (0..photos).map(move |j| format!("{ch}-g{j}")))
        .collect();
    let mut all = vec![wid.clone()];
    all.extend(children.iter().cloned());
    all.extend(grandchildren.iter().cloned());
    let mut out = Fanout::default();
    let t0 = Instant::now();
    start_floor(c, &wid, listings as u64, photos as u64).await?;
    poll_all(c, all.clone(), "get", |_, v| v.is_object()).await?;
    out.times.insert("start", ms(t0.elapsed()));
    if photos > 0 {
        // From the histories: only for the 111-workflow tree (a 1 + 1,000 root continues as new
        // while it starts its children, and its latest run may not have completed a task yet).
        out.times
            .insert("start_history", start_from_history(c, &all).await?);
    }
    if photos > 0 {
        let since = now_ms();
        let t0 = Instant::now();
        let msg = json!({"value": {"name": "renamed"}, "depth": 1});
        ops::signal(&c.client, &wid, "down", Some(&msg)).await?;
        poll_all(c, children.clone(), "get", |_, v| v["name"] == "renamed").await?;
        out.times.insert("down", ms(t0.elapsed()));
        out.down = hop_split(c, &[vec![wid.clone()], children.clone()], since).await?;
        let g0 = grandchildren[0].clone();
        let since = now_ms();
        let t0 = Instant::now();
        let msg = json!({"value": {"caption": "up"}, "hops": 2});
        ops::signal(&c.client, &g0, "up", Some(&msg)).await?;
        poll_until(
            c,
            &wid,
            "get",
            |v| v["caption"] == "up",
            Duration::from_secs(60),
        )
        .await?;
        out.times.insert("up", ms(t0.elapsed()));
        out.up = hop_split(
            c,
            &[vec![g0], vec![children[0].clone()], vec![wid.clone()]],
            since,
        )
        .await?;
        let since = now_ms();
        let t0 = Instant::now();
        let msg = json!({"value": {"token": "bench-2"}, "depth": 2});
        ops::signal(&c.client, &wid, "down", Some(&msg)).await?;
        poll_all(c, all[1..].to_vec(), "get", |_, v| v["token"] == "bench-2").await?;
        out.times.insert("token", ms(t0.elapsed()));
        out.token = hop_split(
            c,
            &[vec![wid.clone()], children.clone(), grandchildren.clone()],
            since,
        )
        .await?;
    }
    // Leave nothing running behind: a Temporal cancellation, passed down the tree.
    c.client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid.clone())
        .cancel(Default::default())
        .await
        .map_err(|e| anyhow!("cancelling {wid}: {e}"))?;
    Ok(out)
}

/// S8: a workflow with `maxHistoryLength` 1,000 takes 1,000 updates (32 signals in flight): how many
/// times it continued as new, and whether every update is there.
async fn s8_continue_as_new(c: &Arc<Ctx>) -> anyhow::Result<(u64, bool)> {
    let id = uid(c, "can");
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &c.client,
        &c.tq,
        &wid,
        json!({"id": id, "entityName": "User", "maxHistoryLength": 1000, "data": {"id": id}}),
    )
    .await?;
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = c.clone();
        let wid = wid.clone();
        let id = id.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await?;
            ops::signal(
                &c.client,
                &wid,
                "update",
                Some(&json!({"data": {"id": id, format!("f{i}"): i}})),
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    poll_until(
        c,
        &wid,
        "data",
        |v| v.as_object().map(|m| m.len()) == Some(1001),
        Duration::from_secs(120),
    )
    .await?;
    let runs = ops::query(&c.client, &wid, "version").await?["runs"]
        .as_u64()
        .unwrap_or(0);
    let data = ops::query(&c.client, &wid, "data").await?;
    let complete = (0..1000).all(|i| data[format!("f{i}")] == json!(i));
    ops::signal(&c.client, &wid, "cancel", None).await?;
    Ok((runs.saturating_sub(1), complete))
}

/// S7: RSS of a worker of its own (cache 11,000) holding `n` idle workflows, started 32 at a time;
/// waits until its `sticky_cache_size` gauge says they are all cached. Returns its RSS then, in MB.
async fn s7_idle(c: &Ctx, w: &WorkerProc, tq: &str, from: usize, to: usize) -> anyhow::Result<f64> {
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in from..to {
        let client = c.client.clone();
        let tq = tq.to_string();
        let id = format!("idle{i}-{}", c.tag);
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await?;
            ops::start(
                &client,
                &tq,
                &ops::workflow_id("User", &id),
                json!({"id": id, "entityName": "User", "data": {"id": id, "name": "idle", "n": i}}),
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let metrics = w
        .ready_field("metrics")
        .ok_or_else(|| anyhow!("the idle worker has no metrics address"))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = reqwest::get(&metrics).await?.text().await?;
        let cached: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("temporal_sticky_cache_size") || l.starts_with("sticky_cache_size")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if cached >= to as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {cached} of {to} idle workflows cached after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(rss_kb(w.child.id().unwrap_or(0), "VmRSS:") as f64 / 1024.0)
}

/// S6 with an API: the 111-tree loads from a local HTTP API (every workflow its own URL); a rotation
/// at the root: time until all 111 use the new token and have reloaded with it (the API checks it).
async fn s6_with_api(c: &Arc<Ctx>, run: usize) -> anyhow::Result<f64> {
    let api = stateful_tests::api::FakeApi::start(20 + run as u8).await?;
    let id = format!("api{run}-{}", c.tag);
    let root = format!("User-{id}");
    let (ls, ps) = tree_ids(&id, 10, 10);
    api.put(&format!("/users/{id}"), json!({"id": id, "name": "api"}));
    for w in ls.iter().chain(ps.iter()) {
        let (entity, eid) = w.split_once('-').unwrap_or_default();
        let path = format!("/{}s/{eid}", entity.to_lowercase());
        api.put(&path, json!({"id": eid, "loaded": true}));
    }
    api.accept(&["bench-api-1"]);
    let mut all: Vec<String> = vec![root.clone()];
    all.extend(ls.iter().cloned());
    all.extend(ps.iter().cloned());
    ops::start(&c.client, &c.tq, &root, json!({"id": id, "entityName": "User", "apiToken": "bench-api-1", "apiBase": api.base, "data": tree_data(&id, 10, 10)})).await?;
    poll_all(c, all.clone(), "api", |_, v| {
        v["state"] == "ok" && v["pending"].is_null()
    })
    .await?;
    api.accept(&["bench-api-2"]);
    let t0 = Instant::now();
    ops::signal(&c.client, &root, "apiToken", Some(&json!("bench-api-2"))).await?;
    poll_all(c, all, "api", |_, v| {
        v["token"]["fingerprint"] == json!(stateful_engine::fingerprint("bench-api-2"))
            && v["state"] == "ok"
            && v["pending"].is_null()
            && v["loading"] == json!(false)
            && v["loads"].as_u64() >= Some(2)
    })
    .await?;
    let took = ms(t0.elapsed());
    ops::signal(&c.client, &root, "cancel", None).await?;
    Ok(took)
}

/// S7 on the floor: like [`s7_idle`], on a `floor-worker` of its own; a workflow counts as cached
/// once it answers its query (its first task is done and the cache holds all of them).
async fn s7_floor_idle(
    c: &Ctx,
    w: &WorkerProc,
    tq: &str,
    from: usize,
    to: usize,
) -> anyhow::Result<f64> {
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in from..to {
        let (client, tq, sem) = (c.client.clone(), tq.to_string(), sem.clone());
        let wid = format!("floor-idle{i}-{}", c.tag);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await?;
            client
                .start_workflow(
                    FloorParent::run,
                    json!({"children": 0, "grandchildren": 0, "value": {"name": "idle", "n": i}}),
                    temporalio_client::WorkflowStartOptions::new(tq, wid.clone()).build(),
                )
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let deadline = Instant::now() + Duration::from_secs(600);
            while ops::query(&client, &wid, "get").await.is_err() {
                if Instant::now() > deadline {
                    bail!("{wid} did not answer within 600 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(rss_kb(w.child.id().unwrap_or(0), "VmRSS:") as f64 / 1024.0)
}

/// S7's row: a worker of ours and a floor worker, each of its own with an 11,000-workflow cache,
/// holding 1,000 then `idle` idle workflows: RSS per cached workflow.
async fn s7_rows(
    ctx: &Arc<Ctx>,
    address: &str,
    log_dir: &std::path::Path,
    idle: usize,
) -> anyhow::Result<(String, String, String)> {
    eprintln!("bench: S7 (RSS per cached idle workflow, up to {idle})...");
    let first = idle.min(1000);
    let itq = "idle".to_string();
    let iw = WorkerProc::start_with(
        address,
        &itq,
        log_dir,
        "worker-idle",
        &["--max-cached-workflows", "11000"],
        "release",
    )
    .await?;
    let ours = s7_cell(&iw, first, idle, |from, to| {
        s7_idle(ctx, &iw, &itq, from, to)
    })
    .await?;
    iw.stop().await;
    let ftq = "floor-idle".to_string();
    let fw = WorkerProc::start_bin(
        "floor-worker",
        address,
        &ftq,
        log_dir,
        "floor-worker-idle",
        &["--max-cached-workflows", "11000"],
        "release",
        &[],
    )
    .await?;
    let floor = s7_cell(&fw, first, idle, |from, to| {
        s7_floor_idle(ctx, &fw, &ftq, from, to)
    })
    .await?;
    fw.stop().await;
    Ok(("S7 worker RSS per cached idle workflow".into(), ours, floor))
}

/// One S7 cell: the RSS per cached workflow of worker `w` once `fill(0, first)` has cached `first`
/// idle workflows, then `fill(first, idle)` up to `idle` (`fill` returns the RSS then, in MB).
async fn s7_cell<F, Fut>(
    w: &WorkerProc,
    first: usize,
    idle: usize,
    fill: F,
) -> anyhow::Result<String>
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let per = |base: f64, at: f64, n: usize| (at - base) * 1024.0 / n as f64;
    let base = rss_kb(w.child.id().unwrap_or(0), "VmRSS:") as f64 / 1024.0;
    let at1k = fill(0, first).await?;
    let mut cells = vec![format!(
        "{:.1} KB each at {first} ({base:.0} → {at1k:.0} MB)",
        per(base, at1k, first)
    )];
    if idle > first {
        let at_n = fill(first, idle).await?;
        cells.push(format!(
            "{:.1} KB each at {idle} ({at_n:.0} MB)",
            per(base, at_n, idle)
        ));
    }
    Ok(cells.join("; "))
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn med(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

/// A cell from the runs' figures and the runs that failed: the median and spread in `unit`, then
/// what failed (with the laggard's last answer, which the failure names).
fn cell(v: &[f64], errs: &[String], unit: &str) -> String {
    let mut out = if v.is_empty() {
        String::new()
    } else {
        format!("{:.0} {unit} ({})", med(v), spread(v))
    };
    for e in errs {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&cut_cell(e));
    }
    if out.is_empty() { "–".into() } else { out }
}

/// A failure as it fits a table cell: one line, at most 300 characters, no `|`.
fn cut_cell(e: &str) -> String {
    let one: String = e.replace(['\n', '|'], " ");
    match one.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

/// The leading number of a cell (`1,146 updates/s (…)` → 1146) and its unit.
fn figure(cell: &str) -> Option<(f64, &str)> {
    let mut words = cell.split_whitespace();
    let n = words.next()?.replace(',', "").parse::<f64>().ok()?;
    let mut unit = words.next()?;
    if unit == "/" {
        // `p50 / p95 ms`: the unit follows the second figure.
        words.next()?;
        unit = words.next()?;
    }
    Some((n, unit))
}

/// The table of `rows`, with "ours ÷ floor" where both cells have a figure in the same unit.
fn table(rows: &[(String, String, String)]) -> String {
    let mut t = String::from(
        "| scenario | ours | raw-Temporal floor | ours ÷ floor |\n|---|---|---|---|\n",
    );
    for (a, b, f) in rows {
        let ratio = match (figure(b), figure(f)) {
            (Some((x, u)), Some((y, v))) if u == v && y > 0.0 => format!("{:.2}", x / y),
            _ => "–".into(),
        };
        t.push_str(&format!("| {a} | {b} | {f} | {ratio} |\n"));
    }
    t
}

fn spread(v: &[f64]) -> String {
    format!("{:.0}–{:.0}", pct(v, 0.0), pct(v, 1.0))
}

/// A partial run (`BENCH_ONLY`): prints its rows and stops the worker and the dev server, leaving
/// BENCHMARKS.md alone.
async fn print_and_stop(
    rows: &[(String, String, String)],
    workers: Vec<WorkerProc>,
    srv: Option<DevServer>,
) -> anyhow::Result<()> {
    print!("{}", table(rows));
    for w in workers {
        w.stop().await;
    }
    if let Some(srv) = srv {
        srv.stop().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // BENCH_ADDRESS: an existing cluster (namespace `default`) instead of a local dev server.
    let srv = match std::env::var("BENCH_ADDRESS") {
        Ok(_) => None,
        Err(_) => {
            // BENCH_SERVER_DC="key=value key2=value2": more dynamic config for the local dev server
            // (which always gets the worker's low-latency settings; BENCH_SERVER_DEFAULTS=1 starts it
            // with the server's defaults instead, as the reference figures were measured).
            let dc = std::env::var("BENCH_SERVER_DC").unwrap_or_default();
            let mut extra = Vec::new();
            for kv in dc.split_whitespace() {
                extra.push("--dynamic-config-value");
                extra.push(kv);
            }
            if std::env::var("BENCH_SERVER_DEFAULTS").is_ok() {
                // Undo the low-latency default: the server's own value.
                extra.push("--dynamic-config-value");
                extra.push("history.transferProcessorMaxPollRPS=20");
            }
            Some(dev_server(&temporal_cli()?, &extra).await?)
        }
    };
    let address = match &srv {
        Some(s) => s.address.clone(),
        None => std::env::var("BENCH_ADDRESS")?,
    };
    let c = client(&address).await?;
    let log_dir = root().join("target/bench");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if matches!(only.as_str(), "s11" | "s12" | "s11-s12" | "s11-floor") {
        // The large scenarios, each on a worker of its own: printed, BENCHMARKS.md left alone.
        let tag = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        let out = big::run(&only, &address, &c, &temporal_cli()?, &log_dir, &tag).await?;
        for (a, b) in &out.rows {
            println!("| {a} | {b} |");
        }
        if let Some(srv) = srv {
            srv.stop().await;
        }
        if let Some(f) = out.failure {
            bail!("a target was missed: {f}");
        }
        return Ok(());
    }
    let tq = "bench".to_string();
    let w = WorkerProc::start_with(&address, &tq, &log_dir, "worker", &[], "release").await?;
    let pid = w.child.id().unwrap_or(0);
    let floor_tq = "floor".to_string();
    // The floor in a worker process of its own, with our worker's pollers, cache and runtime.
    let fw = WorkerProc::start_bin(
        "floor-worker",
        &address,
        &floor_tq,
        &log_dir,
        "floor-worker",
        &[],
        "release",
        &[],
    )
    .await?;
    let floor_pid = fw.child.id().unwrap_or(0);
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let ctx = Arc::new(Ctx {
        client: c,
        tq,
        floor_tq,
        tag,
        poll: Arc::new(Semaphore::new(8)),
    });
    eprintln!(
        "bench: Temporal at {address}, release worker pid {pid}, floor worker pid {floor_pid}, {runs} runs per figure"
    );

    let mut rows: Vec<(String, String, String)> = Vec::new();
    if let Some(n) = std::env::var("BENCH_ONLY").ok().and_then(|v| {
        v.strip_prefix("s7")
            .map(|n| n.trim_start_matches('-').parse::<usize>().unwrap_or(1000))
    }) {
        // S7 alone (`s7` or `s7-N`: N idle workflows, 1,000 by default): printed.
        rows.push(s7_rows(&ctx, &address, &log_dir, n).await?);
        return print_and_stop(&rows, vec![w, fw], srv).await;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("s6api") {
        for r in 0..runs {
            let t = s6_with_api(&ctx, r).await;
            println!("S6 with an API, run {r}: {t:?}");
        }
        w.stop().await;
        fw.stop().await;
        return Ok(());
    }
    let (mut p50, mut p95, mut ap50, mut ap95, mut fp50, mut fp95) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut s1_wid = String::new();
    let (mut early, mut late) = (vec![], vec![]);
    for _ in 0..runs {
        eprintln!("bench: S1 (200 sequential updates)...");
        let (a, b, w) = s1(&ctx, false).await?;
        let delays = signal_task_delays(&ctx, &w).await?;
        early.extend(delays.iter().take(20).copied());
        late.extend(delays.iter().skip(80).copied());
        s1_wid = w;
        p50.push(a);
        p95.push(b);
        let (a, b, _) = s1(&ctx, true).await?;
        ap50.push(a);
        ap95.push(b);
        let (a, b) = floor_s1(&ctx).await?;
        fp50.push(a);
        fp95.push(b);
    }
    rows.push((
        "S1 update → visible, p50 / p95 (signal + poll)".into(),
        format!("{:.1} / {:.1} ms", med(&p50), med(&p95)),
        format!("{:.1} / {:.1} ms", med(&fp50), med(&fp95)),
    ));
    rows.push((
        "S1 signal's workflow task, scheduled → started (history), p50: rounds 1–20 / 81–200"
            .into(),
        format!("{:.1} / {:.1} ms", pct(&early, 0.5), pct(&late, 0.5)),
        "–".into(),
    ));
    rows.push((
        "S1 acknowledged update, p50 / p95".into(),
        format!("{:.1} / {:.1} ms", med(&ap50), med(&ap95)),
        "–".into(),
    ));
    if std::env::var("BENCH_ONLY").as_deref() == Ok("s1") {
        return print_and_stop(&rows, vec![w, fw], srv).await;
    }
    let (mut t1, mut t20, mut tf, mut tf20) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        eprintln!("bench: S2 (throughput)...");
        t1.push(s2(&ctx, 1, 500).await?);
        t20.push(s2(&ctx, 20, 100).await?);
        tf.push(floor_s2(&ctx, 1, 500).await?);
        tf20.push(floor_s2(&ctx, 20, 100).await?);
    }
    rows.push((
        "S2 500 updates, 32 signals in flight".into(),
        format!("{:.0} updates/s ({})", med(&t1), spread(&t1)),
        format!("{:.0} updates/s ({})", med(&tf), spread(&tf)),
    ));
    rows.push((
        "S2 20 workflows × 100 updates".into(),
        format!("{:.0} updates/s ({})", med(&t20), spread(&t20)),
        format!("{:.0} updates/s ({})", med(&tf20), spread(&tf20)),
    ));
    // S3–S6: ours and the floor's, run after run; a failed run is reported in its rows.
    let (mut ours, mut floors) = (Vec::new(), Vec::new());
    let (mut ours_err, mut floor_err) = (Vec::new(), Vec::new());
    for r in 0..runs {
        eprintln!("bench: S3–S6 (111-workflow tree), run {r}...");
        match tree(&ctx, r, 10, 10).await {
            Ok(t) => ours.push(t),
            Err(e) => {
                eprintln!("bench: S3–S6 run {r} failed: {e:#}");
                ours_err.push(format!("run {r} failed: {e:#}"));
            }
        }
        eprintln!("bench: S3–S6 on the floor, run {r}...");
        match floor_tree(&ctx, r, 10, 10).await {
            Ok(t) => floors.push(t),
            Err(e) => {
                eprintln!("bench: S3–S6 on the floor, run {r} failed: {e:#}");
                floor_err.push(format!("run {r} failed: {e:#}"));
            }
        }
    }
    let times = |v: &[Fanout], k: &str| -> Vec<f64> {
        v.iter().filter_map(|t| t.times.get(k).copied()).collect()
    };
    let last = |v: &[Fanout], g: fn(&Fanout) -> &Vec<Hop>| -> Vec<f64> {
        v.iter()
            .filter_map(|t| g(t).last().map(|h| h.applied))
            .collect()
    };
    for (name, key) in [
        ("S3 111-workflow tree start (polled)", "start"),
        (
            "S3 111-workflow tree start (histories' event times)",
            "start_history",
        ),
        ("S4 root rename reaches 10 listings (polled)", "down"),
        ("S5 photo change reaches the root (polled)", "up"),
        (
            "S6 token rotation reaches 110 descendants (polled)",
            "token",
        ),
    ] {
        rows.push((
            name.into(),
            cell(&times(&ours, key), &ours_err, "ms"),
            cell(&times(&floors, key), &floor_err, "ms"),
        ));
    }
    for (name, g, levels) in [
        (
            "S4 rename, from event times: the last listing applied",
            (|t: &Fanout| &t.down) as fn(&Fanout) -> &Vec<Hop>,
            ["root", "listings", ""],
        ),
        (
            "S5 photo change, from event times: the root applied",
            |t: &Fanout| &t.up,
            ["photo", "listing", "root"],
        ),
        (
            "S6 rotation, from event times: the last photo applied",
            |t: &Fanout| &t.token,
            ["root", "listings", "photos"],
        ),
    ] {
        rows.push((
            name.into(),
            cell(&last(&ours, g), &ours_err, "ms"),
            cell(&last(&floors, g), &floor_err, "ms"),
        ));
        let split =
            |v: &[Fanout]| hops_cell(&v.iter().map(|t| g(t).clone()).collect::<Vec<_>>(), &levels);
        rows.push((
            format!("{} per level, ms from the first signal", &name[..2]),
            split(&ours),
            split(&floors),
        ));
    }
    let mut s6a = vec![];
    let mut s6a_err = Vec::new();
    let api_runs = if std::env::var("BENCH_ONLY").as_deref() == Ok("s1-s6-no-api") {
        0
    } else {
        runs
    };
    for r in 0..api_runs {
        eprintln!("bench: S6 with an API (111 workflows reload)...");
        match s6_with_api(&ctx, r).await {
            Ok(t) => s6a.push(t),
            Err(e) => {
                eprintln!("bench: S6 with an API failed: {e:#}");
                s6a_err.push(format!("run {r} failed: {e:#}"));
            }
        }
    }
    rows.push((
        "S6 with an API: all 111 use the new token and have reloaded with it".into(),
        cell(&s6a, &s6a_err, "ms"),
        "–".into(),
    ));
    let peak = rss_kb(pid, "VmHWM:");
    rows.push((
        "S7 worker peak RSS after S1–S6 (before the 1 + 1,000 tree)".into(),
        format!("{:.0} MB", peak as f64 / 1024.0),
        format!("{:.0} MB", rss_kb(floor_pid, "VmHWM:") as f64 / 1024.0),
    ));
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v.starts_with("s1-s6")) {
        // S1–S6 only (a before/after comparison): printed, BENCHMARKS.md left alone.
        return print_and_stop(&rows, vec![w, fw], srv).await;
    }
    let (mut big, mut big_err, mut fbig, mut fbig_err) = (vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        eprintln!("bench: S3 (1 + 1,000), run {r}...");
        match tree(&ctx, 100 + r, 1000, 0).await {
            Ok(t) => big.push(t.times["start"]),
            Err(e) => big_err.push(format!("run {r} failed: {e:#}")),
        }
        eprintln!("bench: S3 (1 + 1,000) on the floor, run {r}...");
        match floor_tree(&ctx, 100 + r, 1000, 0).await {
            Ok(t) => fbig.push(t.times["start"]),
            Err(e) => fbig_err.push(format!("run {r} failed: {e:#}")),
        }
    }
    rows.push((
        "S3 1 + 1,000 tree start (polled)".into(),
        cell(&big, &big_err, "ms"),
        cell(&fbig, &fbig_err, "ms"),
    ));
    // S2 at scale: 1,000 workflows × 20 updates.
    let (mut t1k, mut t1k_err, mut ft1k, mut ft1k_err) = (vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        eprintln!("bench: S2 1,000 workflows × 20 updates, run {r}...");
        match s2(&ctx, 1000, 20).await {
            Ok(t) => t1k.push(t),
            Err(e) => t1k_err.push(format!("run {r} failed: {e:#}")),
        }
        match floor_s2(&ctx, 1000, 20).await {
            Ok(t) => ft1k.push(t),
            Err(e) => ft1k_err.push(format!("run {r} failed: {e:#}")),
        }
    }
    rows.push((
        "S2 1,000 workflows × 20 updates".into(),
        cell(&t1k, &t1k_err, "updates/s"),
        cell(&ft1k, &ft1k_err, "updates/s"),
    ));
    // S8: history cost per applied update, from the S1 workflows.
    let d = ctx
        .client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(s1_wid.clone())
        .describe(WorkflowDescribeOptions::default())
        .await?;
    let (len, size) = (
        d.history_length() as f64,
        d.raw()
            .workflow_execution_info
            .as_ref()
            .map(|i| i.history_size_bytes)
            .unwrap_or(0) as f64,
    );
    rows.push((
        "S8 history per applied update (S1 workflow)".into(),
        format!("{:.1} events, {:.0} bytes", len / 201.0, size / 201.0),
        "–".into(),
    ));

    eprintln!("bench: S8 (continue-as-new every 1,000 events)...");
    let (cans, complete) = s8_continue_as_new(&ctx).await?;
    rows.push((
        "S8 continue-as-new: 1,000 updates at maxHistoryLength 1,000".into(),
        format!(
            "{cans} runs handed over, {}; at the default 10,000 events: one every ~{:.0} updates",
            if complete {
                "all 1,000 updates kept"
            } else {
                "UPDATES MISSING"
            },
            10_000.0 / (len / 201.0)
        ),
        "–".into(),
    ));
    let idle: usize = std::env::var("BENCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if idle > 0 {
        rows.push(s7_rows(&ctx, &address, &log_dir, idle).await?);
    }
    // S9: checkpoints of the S1 workflow (200 fields): from the `checkpoint` signal until the new run
    // has started (its run id, polled with `describe` every 5 ms: a query would land on the closed run
    // and replay its whole history).
    eprintln!("bench: S9 (checkpoints)...");
    let run_of = |wid: String| {
        let client = ctx.client.clone();
        async move {
            let d = client
                .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid)
                .describe(WorkflowDescribeOptions::default())
                .await?;
            let info = d.raw().workflow_execution_info.clone().unwrap_or_default();
            anyhow::Ok((
                info.execution.map(|e| e.run_id).unwrap_or_default(),
                info.status,
            ))
        }
    };
    let mut cps = Vec::new();
    for _ in 0..(10 * runs) {
        let (before, _) = run_of(s1_wid.clone()).await?;
        let t0 = Instant::now();
        ops::signal(&ctx.client, &s1_wid, "checkpoint", None).await?;
        loop {
            let (now, status) = run_of(s1_wid.clone()).await?;
            if now != before && status == 1 {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("a checkpoint of {s1_wid} took over 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cps.push(ms(t0.elapsed()));
        // Let the new run's first task finish before the next checkpoint.
        ops::query(&ctx.client, &s1_wid, "version").await?;
    }
    rows.push((
        "S9 checkpoint (signal → new run started), p50 / p95".into(),
        format!("{:.1} / {:.1} ms", pct(&cps, 0.5), pct(&cps, 0.95)),
        "–".into(),
    ));
    // S10: recovery: the worker is killed (SIGKILL) and a new one spawned; time until the S1 workflow
    // and a tree root answer `state` again.
    eprintln!("bench: S10 (recovery after SIGKILL)...");
    let mut w = w;
    let mut rec = Vec::new();
    let probe = ops::workflow_id("User", &format!("t10x10-0-{}", ctx.tag));
    for _ in 0..runs {
        w.child.kill().await?;
        let t0 = Instant::now();
        w = WorkerProc::start_with(&address, &ctx.tq, &log_dir, "worker", &[], "release").await?;
        for wid in [&s1_wid, &probe] {
            while ops::query(&ctx.client, wid, "state").await.is_err() {
                if t0.elapsed() > Duration::from_secs(60) {
                    bail!("{wid} did not answer within 60 s of the new worker's start");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        rec.push(ms(t0.elapsed()));
    }
    rows.push((
        "S10 recovery: new worker spawned → state queryable again".into(),
        format!("{:.0} ms ({})", med(&rec), spread(&rec)),
        "–".into(),
    ));

    let table = table(&rows);
    println!("{table}");
    let machine = format!(
        "{} cores, {} GB RAM, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()))
            .unwrap_or(0)
            / 1024
            / 1024,
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |s| s.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    let section = format!(
        "<!-- cluster:start -->\nMeasured {} on {machine}; {}, one release worker, {runs} runs per figure (median, range in brackets).\n\n{table}<!-- cluster:end -->",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        if srv.is_some() {
            "local dev server (temporal CLI 1.9.1 = server 1.32.0)".to_string()
        } else {
            format!("the cluster at {address}")
        }
    );
    let path = root().join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (
        doc.find("<!-- cluster:start -->"),
        doc.find("<!-- cluster:end -->"),
    ) {
        (Some(a), Some(b)) => format!(
            "{}{}{}",
            &doc[..a],
            section,
            &doc[b + "<!-- cluster:end -->".len()..]
        ),
        _ => format!("{doc}\n{section}\n"),
    };
    std::fs::write(&path, new)?;
    eprintln!("bench: wrote the cluster section of {}", path.display());
    w.stop().await;
    fw.stop().await;
    if let Some(srv) = srv {
        srv.stop().await;
    }
    Ok(())
}
