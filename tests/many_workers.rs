//! Many workers, one tree (issue 17): three worker processes of their own poll one task queue and run
//! a 111-workflow tree (a user, 10 listings, 10 photos each, every one loading from a fake API) while
//! a burst of 100 `$push` changes and a token rotation are in flight; meanwhile each worker is
//! stopped with SIGTERM and replaced by a new process, one after another, and one of the new ones is
//! killed (SIGKILL) and replaced too. Every worker runs the ingress and the codec server, and every
//! payload is encrypted: some changes go in as webhooks through one worker's ingress, and a history
//! is decoded through another worker's codec server.
//!
//! Then: every change was answered once, and applied exactly once (each `$push` list holds each
//! number once); every copy in the tree equals the root's; the whole tree uses the new token and
//! loaded with it; versions count applied batches; and no workflow task failed or timed out, but
//! those the SIGKILL cut short.
//!
//! One test rather than a plain one and an encrypted one: the scenario is the same, and one run of
//! it takes 40 to 60 s on 2 cores (a SIGKILL costs at least one 10 s workflow task timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::{FakeApi, tree_ids, user_tree, wait_tree_on_token};
use stateful_tests::history::{
    raw_history, run_histories, task_failures_beyond_kills, temporal, with_payloads_decoded,
};
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, starter_env};
use temporalio_client::Client;
use tokio::sync::{Semaphore, watch};

const LISTINGS: usize = 10;
const PHOTOS: usize = 10;
/// 1 user, 10 listings, 100 photos.
const WORKFLOWS: usize = 1 + LISTINGS * (1 + PHOTOS);
/// The changes of the burst, released in waves of [`WAVE`], one wave per step of the restarts.
const CHANGES: usize = 100;
const WAVE: usize = 20;
/// The listings whose own workflows take changes (the others only get what comes down to them).
const WRITING_LISTINGS: usize = 3;
/// Changes in flight at once.
const IN_FLIGHT: usize = 8;
/// How long a SIGTERM'd worker may take to finish its in-flight tasks and exit.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

pub async fn three_workers_restarted_and_one_killed_during_a_burst_and_a_rotation_lose_nothing(
    env: &Env,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let name = "many";
    let keys = codec_keys(env, name)?;
    let ingress_token = format!("{name}-ingress-{}", env.tag);
    let key_path = keys.display().to_string();
    let fleet = Fleet {
        env,
        task_queue: format!("{name}-{}", env.tag),
        prefix: format!("worker-{name}"),
        args: [
            "--codec-keys-file",
            &key_path,
            "--codec-server",
            "127.0.0.1:0",
            "--ingress",
            "127.0.0.1:0",
            "--ingress-token-env",
            "MANY_INGRESS_TOKEN",
        ]
        .map(String::from)
        .to_vec(),
        envs: vec![("MANY_INGRESS_TOKEN".into(), ingress_token.clone())],
        started: Mutex::default(),
        terminated: Mutex::default(),
    };
    let (a, b, c) = tokio::try_join!(fleet.start("a1"), fleet.start("b1"), fleet.start("c1"))?;
    let client = stateful_client::connect::ConnectArgs {
        address: Some(env.address.clone()),
        namespace: Some("default".into()),
        codec_keys_file: Some(keys.clone()),
        ..Default::default()
    }
    .resolve()?
    .connect("e2e-many-workers")
    .await?;
    let ingress = c
        .ready_field("ingress")
        .ok_or_else(|| anyhow!("worker c1 did not say where its ingress is"))?;

    // The tree, every workflow loading its entity with the first token.
    let api = FakeApi::start(41).await?;
    let u = env.id(name);
    let paths = api.serve_user_tree(&u, LISTINGS, PHOTOS);
    let (old, new) = (
        format!("{name}-1-{}", env.tag),
        format!("{name}-2-{}", env.tag),
    );
    api.accept(&[&old]);
    let root = ops::workflow_id("User", &u);
    ops::start(
        &client,
        &fleet.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "apiBase": api.base, "apiToken": old,
               "data": user_tree(&u, LISTINGS, PHOTOS)}),
    )
    .await?;
    // Watched at the API first: querying 111 workflows again and again slows their start down.
    api.wait_loaded_with(&paths, &old, Duration::from_secs(120))
        .await?;
    wait_tree_on_token(&client, &root, &old, WORKFLOWS, Duration::from_secs(60)).await?;
    let tree_up = t0.elapsed();

    // The burst, the rotation and the restarts, at once. Phase 0 releases the first wave; each step
    // of the restarts releases the next wave as it stops a worker, so that changes are in flight
    // whenever a worker goes; the rotation starts with the first SIGTERM.
    let t1 = Instant::now();
    let changes = changes(&u);
    let progress = Progress::default();
    let (phase, phase_rx) = watch::channel(0usize);
    let restarts = async {
        progress.wait_done(5).await?;
        let (a, a_exit, a_start) = fleet.restart(a, "a2", &phase).await?;
        progress.wait_done(WAVE + 10).await?;
        let (b, b_exit, b_start) = fleet.restart(b, "b2", &phase).await?;
        // The webhooks all go through c1's ingress, and c1 goes next: they must have been sent.
        progress.wait_done(2 * WAVE + 10).await?;
        progress
            .wait_all(changes.iter().filter(|ch| ch.ingress))
            .await?;
        let (c, c_exit, c_start) = fleet.restart(c, "c2", &phase).await?;
        // SIGKILL a2 with the last wave just released: whatever task it holds is cut short.
        progress.wait_done(3 * WAVE + 10).await?;
        phase.send_modify(|p| *p += 1);
        let mut a = a;
        let killed = a.child.id().ok_or_else(|| anyhow!("a2 has exited"))?;
        a.child.kill().await?;
        let t = Instant::now();
        let a = fleet.start("a3").await?;
        let times = format!(
            "SIGTERM exits {:.1}/{:.1}/{:.1} s, starts {:.1}/{:.1}/{:.1}/{:.1} s",
            a_exit.as_secs_f64(),
            b_exit.as_secs_f64(),
            c_exit.as_secs_f64(),
            a_start.as_secs_f64(),
            b_start.as_secs_f64(),
            c_start.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        anyhow::Ok(([a, b, c], killed, times))
    };
    let sends = async {
        let ingress = (ingress.as_str(), ingress_token.as_str());
        burst(&client, &changes, ingress, &phase_rx, &progress).await;
        anyhow::Ok(())
    };
    let rotation = rotate(env, &api, &root, &new, &keys, phase_rx.clone());
    let (((workers, killed, restart_times), ()), (report, rotation_took)) =
        tokio::time::timeout(Duration::from_secs(240), async {
            tokio::try_join!(async { tokio::try_join!(restarts, sends) }, rotation)
        })
        .await
        .map_err(|_| anyhow!("the burst, the rotation and the restarts took over 240 s"))??;
    let burst_took = t1.elapsed();

    // Every change answered once with the version that applied it (and at least one entity
    // changed), a webhook also with the workflow it went to (update-with-start).
    let answers = std::mem::take(&mut *progress.answers.lock().unwrap());
    ensure_eq!(answers.len(), CHANGES);
    let mut acked: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for c in &changes {
        let answer = answers[&c.i]
            .as_ref()
            .map_err(|e| anyhow!("change {} to {} failed: {e}", c.i, c.wid))?;
        if c.ingress {
            ensure_eq!(answer["workflowId"], json!(c.wid));
        }
        match (answer["version"].as_u64(), answer["changed"].as_u64()) {
            (Some(v), Some(n)) if n >= 1 => acked.entry(&c.wid).or_default().push(v),
            _ => bail!("change {} to {} answered {answer}", c.i, c.wid),
        }
    }

    // The rotation: the starter saw the whole tree on the new token, every entity reloaded with it
    // (the API accepts only the new token since the rotation began: a load with the old one after
    // that is `unauthorized`, and only the rotation's own load heals it).
    ensure_eq!(
        report["fingerprint"],
        json!(stateful_engine::fingerprint(&new))
    );
    if report["workflows"] != json!(WORKFLOWS) || report["loads"] != json!({"ok": WORKFLOWS}) {
        // What the tree was really on when the starter said it was done, asked of each of the 111
        // workflows by id (not by walking the tree, as the starter does).
        let behind = not_on_token(&client, &u, &new).await;
        bail!(
            "starter token rotate reported the rotation done for {} of the {WORKFLOWS} workflows: \
             {report}; right after, {} workflows were not on the new token with a successful load: \
             {behind:?}",
            report["workflows"],
            behind.len()
        );
    }
    wait_tree_on_token(&client, &root, &new, WORKFLOWS, Duration::from_secs(60)).await?;
    let requested: BTreeSet<String> = api.all_requests().into_iter().map(|(p, _)| p).collect();
    ensure_eq!(requested.len(), WORKFLOWS);
    for p in &paths {
        if api.requests(p).last().cloned().flatten().as_deref() != Some(new.as_str()) {
            bail!(
                "{p} was not last loaded with the new token: {:?}",
                api.requests(p)
            );
        }
    }

    // The tree converges: every list holds every number, every copy equals the root's.
    let t2 = Instant::now();
    let root_state = eventually(Duration::from_secs(90), || async {
        let mut states = Vec::new();
        for (wid, s) in ops::walk(&client, &root, "state").await {
            states.push((wid, s?));
        }
        converged(&states, &root, &changes)
    })
    .await?;
    let converge_took = t2.elapsed();
    // Nothing applied twice: each list holds each number exactly once.
    for ((entity, id, field), want) in expected_lists(&changes) {
        let got = numbers(&root_state[entity][&id][field]);
        if got != want {
            bail!(
                "{entity} {id} `{field}`: a change was applied twice: {got:?}, expected {want:?}"
            );
        }
    }
    check_versions(&client, &root, &acked).await?;
    // Another worker's codec server (b2's; the webhooks went through c1) decodes the root's
    // history: the API's answer (the user's name), a webhook's field (f000), an update's (f001).
    let name_from_api = format!("user {u}");
    check_codec(
        env,
        &workers[1],
        &root,
        &[&old, &new],
        &[&name_from_api, "f000", "f001"],
    )
    .await?;
    // Last, so that every check above is made on every run: with temporalio-sdk-core 0.10.1, a
    // worker stopped with SIGTERM sometimes drops a workflow task it had just been handed (its
    // workflow stream declares shutdown done without draining polls that already returned a task),
    // and this check reports it: the task waits for its 10 s timeout, as after a crash.
    let excused = check_tasks(env, &fleet, &u, &root, killed)?;

    println!(
        "  {name}: tree of {WORKFLOWS} up in {:.1} s; burst, rotation and restarts {:.1} s \
         (rotation {:.1} s; {restart_times}); converged {:.1} s later; {excused} task timeouts \
         excused (held by the killed worker or a stopping one); {:.1} s in all",
        tree_up.as_secs_f64(),
        burst_took.as_secs_f64(),
        rotation_took.as_secs_f64(),
        converge_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    ops::signal(&client, &root, "cancel", None).await?;
    for w in workers {
        w.stop().await;
    }
    Ok(())
}

/// A codec keys file of one key (`KEY_ID:BASE64_OF_32_BYTES`), for the workers, the client and the
/// starter.
fn codec_keys(env: &Env, name: &str) -> anyhow::Result<PathBuf> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let file = env.log_dir.join(format!("{name}-codec-keys.txt"));
    std::fs::create_dir_all(&env.log_dir)?;
    std::fs::write(&file, format!("k-{}:{key}\n", env.tag))?;
    Ok(file)
}

/// One change of the burst: `$push` of `i` onto `field` of an entity, and a field `fNNN` of its own
/// (`[i]`). Each list field has one writer, the workflow the change is sent to, so that no two
/// workflows race to write the same field (concurrent writes of one field keep the newest value, by
/// design: a lost element would then prove nothing).
struct Change {
    i: usize,
    wid: String,
    entity: &'static str,
    id: String,
    field: &'static str,
    /// Sent to a worker's ingress (a signal) instead of as an acknowledged update.
    ingress: bool,
}

impl Change {
    fn key(&self) -> String {
        format!("f{:03}", self.i)
    }

    fn fields(&self) -> Value {
        json!({self.field: self.i, self.key(): self.i})
    }

    fn message(&self) -> Value {
        json!({"updates": {self.entity: {&self.id: self.fields()}}, "strategy": "$push"})
    }
}

/// The burst, by `i % 4`: the root pushes onto the user's `log` and onto a listing's `down` (which
/// goes down to that listing's workflow); three listings' workflows push onto their own listing's
/// `up` and onto their first photo's `up` (which goes up to the root and down to the photo's
/// workflow). The first 40 changes that an entity's own workflow writes to its own entity (the
/// user's `log`, a listing's `up`) go through the ingress, which signals that workflow: 20 webhooks,
/// 80 acknowledged updates.
fn changes(u: &str) -> Vec<Change> {
    let tree = tree_ids(u, LISTINGS, PHOTOS);
    let root = ops::workflow_id("User", u);
    (0..CHANGES)
        .map(|i| {
            let (l, photos) = &tree[(i / 4) % WRITING_LISTINGS];
            let listing_wid = ops::workflow_id("Listing", l);
            let (wid, entity, id, field) = match i % 4 {
                0 => (root.clone(), "User", u.to_string(), "log"),
                1 => (
                    root.clone(),
                    "Listing",
                    tree[(i / 4) % LISTINGS].0.clone(),
                    "down",
                ),
                2 => (listing_wid, "Listing", l.clone(), "up"),
                _ => (listing_wid, "Photo", photos[0].clone(), "up"),
            };
            Change {
                i,
                wid,
                entity,
                id,
                field,
                ingress: i % 2 == 0 && i < 2 * WAVE,
            }
        })
        .collect()
}

/// What the burst got back: each change's answer (an acknowledged update's `{version, changed}`, or
/// the ingress's update-with-start answer, `{workflowId, version, changed}`), or why it failed.
/// (Shared with the rolling-deploy tests.)
#[derive(Default)]
pub(crate) struct Progress {
    done: AtomicUsize,
    pub(crate) answers: Mutex<BTreeMap<usize, Result<Value, String>>>,
}

impl Progress {
    /// Records change `i`'s answer; a second answer for it panics (applied twice).
    pub(crate) fn record(&self, i: usize, answer: anyhow::Result<Value>) {
        let mut a = self.answers.lock().unwrap();
        if a.insert(i, answer.map_err(|e| format!("{e:#}"))).is_some() {
            panic!("change {i} answered twice");
        }
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits (60 s at most) until `n` changes were answered.
    pub(crate) async fn wait_done(&self, n: usize) -> anyhow::Result<()> {
        eventually(Duration::from_secs(60), || async {
            let done = self.done.load(Ordering::SeqCst);
            if done >= n {
                Ok(())
            } else {
                Err(anyhow!("{done} of the changes answered, waiting for {n}"))
            }
        })
        .await
    }

    async fn wait_all<'a>(&self, changes: impl Iterator<Item = &'a Change>) -> anyhow::Result<()> {
        let want: Vec<usize> = changes.map(|c| c.i).collect();
        eventually(Duration::from_secs(60), || async {
            let answers = self.answers.lock().unwrap();
            let missing: Vec<&usize> = want.iter().filter(|i| !answers.contains_key(i)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("changes {missing:?} not answered yet"))
            }
        })
        .await
    }
}

/// The workers' settings; starts and restarts them, and remembers their process ids.
struct Fleet<'a> {
    env: &'a Env,
    task_queue: String,
    prefix: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// The workers started, `name=pid` (a worker's Temporal identity is `stateful-worker-{pid}@…`).
    started: Mutex<Vec<String>>,
    /// The process ids of the workers stopped with SIGTERM.
    terminated: Mutex<Vec<u32>>,
}

impl Fleet<'_> {
    async fn start(&self, name: &str) -> anyhow::Result<WorkerProc> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let name = format!("{}-{name}", self.prefix);
        let w = WorkerProc::start_env(
            &self.env.address,
            &self.task_queue,
            &self.env.log_dir,
            &name,
            &args,
            "debug",
            &envs,
        )
        .await?;
        let pid = w.child.id().unwrap_or(0);
        self.started.lock().unwrap().push(format!("{name}={pid}"));
        Ok(w)
    }

    /// Releases the next wave, stops `w` with SIGTERM (the wave's changes are in flight) and starts
    /// `name` in its place; returns it, and how long the old one took to exit and the new one to be
    /// ready.
    async fn restart(
        &self,
        w: WorkerProc,
        name: &str,
        phase: &watch::Sender<usize>,
    ) -> anyhow::Result<(WorkerProc, Duration, Duration)> {
        phase.send_modify(|p| *p += 1);
        let t = Instant::now();
        self.terminated.lock().unwrap().extend(w.child.id());
        let status = w.terminate(EXIT_WITHIN).await?;
        if !status.success() {
            bail!("a worker exited with {status} on SIGTERM (before {name} replaced it)");
        }
        let exited = t.elapsed();
        let t = Instant::now();
        let w = self.start(name).await?;
        Ok((w, exited, t.elapsed()))
    }
}

/// The workflows of the tree of user `u` (asked one by one, by id) that do not report `token` with
/// a successful last load and no load under way, each with what it reports.
async fn not_on_token(client: &Client, u: &str, token: &str) -> Vec<String> {
    let want = stateful_engine::fingerprint(token);
    let mut wids = vec![ops::workflow_id("User", u)];
    for (l, photos) in tree_ids(u, LISTINGS, PHOTOS) {
        wids.push(ops::workflow_id("Listing", &l));
        wids.extend(photos.iter().map(|p| ops::workflow_id("Photo", p)));
    }
    let answers =
        futures::future::join_all(wids.iter().map(|w| ops::query(client, w, "api"))).await;
    wids.iter()
        .zip(answers)
        .filter_map(|(wid, a)| match a {
            Ok(v)
                if v["token"]["fingerprint"] == json!(want)
                    && v["state"] == "ok"
                    && v["loading"] != json!(true)
                    && v["pending"].is_null() =>
            {
                None
            }
            Ok(v) => Some(format!(
                "{wid} (token {}, load {}, loading {}, pending {})",
                v["token"]["fingerprint"], v["state"], v["loading"], v["pending"]
            )),
            Err(e) => Some(format!("{wid} ({e:#})")),
        })
        .collect()
}

/// Runs `starter token rotate` once the restarts began (phase 1): from then on the API accepts only
/// the new token. Returns the starter's JSON report and how long it took.
async fn rotate(
    env: &Env,
    api: &FakeApi,
    root: &str,
    token: &str,
    keys: &Path,
    mut phase: watch::Receiver<usize>,
) -> anyhow::Result<(Value, Duration)> {
    phase.wait_for(|p| *p >= 1).await?;
    api.accept(&[token]);
    let keys = keys.display().to_string();
    let args = [
        "--namespace",
        "default",
        "--json",
        "--codec-keys-file",
        &keys,
        "token",
        "rotate",
        root,
        "--token-env",
        "MANY_NEW_TOKEN",
        "--timeout-secs",
        "150",
    ];
    let t = Instant::now();
    let (ok, stdout, stderr) = starter_env(env, &args, &[("MANY_NEW_TOKEN", token)]).await?;
    if !ok {
        bail!("starter token rotate failed:\n{stdout}\n{stderr}");
    }
    let report: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the starter's report: {stdout}"))?;
    Ok((report, t.elapsed()))
}

/// Sends the changes, wave by wave as `phase` releases them, [`IN_FLIGHT`] at a time: acknowledged
/// updates through `client` (`ops::update`, which sends a `retry:` refusal again), webhooks through
/// the ingress at `ingress` (`(base, token)`).
async fn burst(
    client: &Client,
    changes: &[Change],
    ingress: (&str, &str),
    phase: &watch::Receiver<usize>,
    progress: &Progress,
) {
    let sem = Semaphore::new(IN_FLIGHT);
    let http = reqwest::Client::new();
    futures::future::join_all(changes.iter().map(|c| {
        let (sem, http) = (&sem, &http);
        let mut phase = phase.clone();
        async move {
            let _ = phase.wait_for(|p| *p >= c.i / WAVE).await;
            let _permit = sem.acquire().await;
            let answer = if c.ingress {
                let (base, token) = ingress;
                let url = format!("{base}/{}/{}?strategy=$push", c.entity, c.id);
                async {
                    let resp = http
                        .post(url)
                        .bearer_auth(token)
                        .json(&c.fields())
                        .send()
                        .await?;
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    if status == 200 {
                        Ok(v)
                    } else {
                        Err(anyhow!("the ingress answered {status} {v}"))
                    }
                }
                .await
            } else {
                ops::update(client, &c.wid, "update", &c.message()).await
            };
            progress.record(c.i, answer);
        }
    }))
    .await;
}

/// The lists the burst pushed onto, `(entity, id, field)` → the pushed numbers, sorted.
fn expected_lists(changes: &[Change]) -> BTreeMap<(&'static str, String, &'static str), Vec<u64>> {
    let mut out: BTreeMap<_, Vec<u64>> = BTreeMap::new();
    for c in changes {
        out.entry((c.entity, c.id.clone(), c.field))
            .or_default()
            .push(c.i as u64);
    }
    out
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

/// Every workflow of the tree holds every change (each list with every number it was sent at least
/// once, each `fNNN` field) and the same values as the root for everything it holds; returns the
/// root's state.
fn converged(states: &[(String, Value)], root: &str, changes: &[Change]) -> anyhow::Result<Value> {
    if states.len() != WORKFLOWS {
        bail!("{} of the {WORKFLOWS} workflows answered", states.len());
    }
    let root_state = &states
        .iter()
        .find(|(w, _)| w == root)
        .ok_or_else(|| anyhow!("the root did not answer"))?
        .1;
    for ((entity, id, field), want) in expected_lists(changes) {
        let got = numbers(&root_state[entity][&id][field]);
        let missing: Vec<&u64> = want.iter().filter(|n| !got.contains(n)).collect();
        if !missing.is_empty() {
            bail!("the root's {entity} {id} `{field}` misses {missing:?} (has {got:?})");
        }
    }
    for c in changes {
        if root_state[c.entity][&c.id][c.key()] != json!([c.i]) {
            bail!("the root's {} {} has no `{}` yet", c.entity, c.id, c.key());
        }
    }
    for (wid, state) in states {
        let (entity, id) = wid
            .split_once('-')
            .ok_or_else(|| anyhow!("workflow id {wid}"))?;
        if !state[entity][id].is_object() {
            bail!("{wid} does not hold its own entity: {state}");
        }
        for (entity, rows) in state.as_object().into_iter().flatten() {
            for (id, row) in rows.as_object().into_iter().flatten() {
                if root_state[entity][id] != *row {
                    bail!(
                        "{wid}'s copy of {entity} {id} differs from the root's:\n  {row}\n  {}",
                        root_state[entity][id]
                    );
                }
            }
        }
    }
    Ok(root_state.clone())
}

/// Applied-change counts: every workflow's version counts its applied batches (`changes`, carried
/// over continue-as-new: a batch applied again on a replay or a hand-over would bump one and not
/// the other, or neither), and every version an update was acknowledged with is one its workflow
/// went through.
async fn check_versions(
    client: &Client,
    root: &str,
    acked: &BTreeMap<&str, Vec<u64>>,
) -> anyhow::Result<()> {
    let versions = eventually(Duration::from_secs(30), || async {
        let versions: BTreeMap<String, Value> = ops::walk(client, root, "version")
            .await
            .into_iter()
            .map(|(w, v)| v.map(|v| (w, v)))
            .collect::<anyhow::Result<_>>()?;
        if versions.len() == WORKFLOWS {
            Ok(versions)
        } else {
            Err(anyhow!(
                "{} of the {WORKFLOWS} workflows answered",
                versions.len()
            ))
        }
    })
    .await?;
    for (wid, v) in &versions {
        if v["version"] != v["changes"] || v["version"].as_u64().unwrap_or(0) == 0 {
            bail!("{wid}: its version and its count of applied batches differ: {v}");
        }
    }
    for (wid, vs) in acked {
        let last = versions[*wid]["version"].as_u64().unwrap_or(0);
        if vs.iter().any(|v| *v > last) {
            bail!("{wid} acknowledged versions {vs:?}, past its version {last}");
        }
    }
    Ok(())
}

/// No workflow task failed, in the root and in every workflow that took changes; returns how many
/// task timeouts the SIGKILL excused.
///
/// A task that timed out because the killed worker held it is excused: a killed worker never
/// answers, and Temporal hands the task to another worker once its start-to-close timeout (10 s)
/// has passed; that delay is the recovery the kill exercises, not a failure of the workflow, and the
/// history shows whose it was (the identity of the worker that started it, or that of the sticky
/// queue it was on). A timeout of a task held by a worker stopped with SIGTERM is NOT excused: a
/// graceful stop is to finish its in-flight tasks (`shutting down: finishing in-flight tasks`), and a
/// task it drops stalls its workflow for 10 s just as a crash would.
fn check_tasks(
    env: &Env,
    fleet: &Fleet,
    u: &str,
    root: &str,
    killed: u32,
) -> anyhow::Result<usize> {
    let mut checked = vec![root.to_string()];
    for (l, photos) in tree_ids(u, WRITING_LISTINGS, PHOTOS) {
        checked.push(ops::workflow_id("Listing", &l));
        checked.push(ops::workflow_id("Photo", &photos[0]));
    }
    let terminated = fleet.terminated.lock().unwrap().clone();
    // A task handed to a worker in the last milliseconds before its graceful stop may be dropped by
    // the SDK's shutdown (temporalio-sdk-core 0.10.1; docs/OPERATIONS.md, "Known limit of the
    // SDK"): it times out after 10 s and runs on another worker. Nothing is lost (the checks above
    // prove it), so such a timeout is excused like a killed worker's, and reported.
    let mut stopped: Vec<u32> = terminated.clone();
    stopped.push(killed);
    let mut excused = 0;
    let mut found = Vec::new();
    for wid in &checked {
        let t = task_failures_beyond_kills(env, wid, &stopped)?;
        for e in &t.excused {
            eprintln!("many_workers: excused in {wid}: {e}");
        }
        excused += t.excused.len();
        if t.failures.is_empty() {
            continue;
        }
        // The evidence, for whoever reads the failure.
        let file = env.log_dir.join(format!("{wid}-histories.json"));
        std::fs::write(&file, json!(run_histories(env, wid)?).to_string())?;
        found.push(format!(
            "{wid}: {} over {} runs (histories in {})",
            t.failures.len(),
            t.runs,
            file.display()
        ));
        for f in &t.failures {
            found.push(
                match terminated
                    .iter()
                    .find(|pid| f.contains(&format!("stateful-worker-{pid}@")))
                {
                    Some(pid) => format!(
                        "  {f}\n    (pid {pid} was stopped by SIGTERM: its graceful stop did not \
                     finish this task)"
                    ),
                    None => format!("  {f}"),
                },
            );
        }
    }
    if !found.is_empty() {
        bail!(
            "workflow tasks failed or timed out (workers: {}; killed: {killed}):\n{}",
            fleet.started.lock().unwrap().join(", "),
            found.join("\n")
        );
    }
    Ok(excused)
}

/// With every payload encrypted, the raw history of `wid` holds neither `tokens` nor `values`, and
/// `temporal workflow show` shows `values` once it decodes the history through `worker`'s codec
/// server.
async fn check_codec(
    env: &Env,
    worker: &WorkerProc,
    wid: &str,
    tokens: &[&str],
    values: &[&str],
) -> anyhow::Result<()> {
    let raw = with_payloads_decoded(&raw_history(&env.client, wid).await?);
    if !raw.contains("binary/encrypted") {
        bail!("no encrypted payload in the raw history of {wid}");
    }
    for secret in tokens {
        if raw.contains(secret) {
            bail!("the raw history of {wid} holds `{secret}`");
        }
    }
    // Short values (`f000`) are looked for outside ids: a run id or a request id is hex, and may
    // hold `f000` by chance (seen once in CI).
    let outside_ids = stateful_tests::history::without_hex_runs(&raw);
    for secret in values {
        if outside_ids.contains(secret) {
            bail!("the raw history of {wid} holds `{secret}`");
        }
    }
    let codec = worker
        .ready_field("codec_server")
        .ok_or_else(|| anyhow!("the worker did not say where its codec server is"))?;
    let args = [
        "workflow",
        "show",
        "-w",
        wid,
        "--codec-endpoint",
        &codec,
        "--output",
        "json",
    ];
    let shown = with_payloads_decoded(&temporal(env, &args)?);
    for value in values {
        if !shown.contains(value) {
            bail!("temporal workflow show --codec-endpoint {codec} did not decode `{value}`");
        }
    }
    Ok(())
}
