//! Replay: recorded histories of representative runs must replay with the current code, so a change
//! that would break running workflows fails CI. `record_histories` makes fresh ones on every run;
//! with `E2E_RECORD_HISTORIES_TO=DIR` (set by `scripts/record-histories`, which names a new
//! release's directory `tests/histories/<version>/`) they are kept there too. Committed histories
//! are never rewritten: `scripts/record-histories` refuses a version that has its set already.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use stateful_client::ops;
use stateful_tests::{Env, query_until, root};
use stateful_workflows::StatefulWorkflow;
use stateful_workflows::markers::JsonWorkflow;
use temporalio_client::{
    UntypedWorkflow, WorkflowCancelOptions, WorkflowFetchHistoryOptions, WorkflowHistory,
};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// Where fresh histories go.
pub fn fresh_dir() -> PathBuf {
    root().join("target/e2e/histories")
}

/// Where the committed fixtures are.
pub fn fixture_dir() -> PathBuf {
    root().join("tests/histories")
}

async fn save(env: &Env, wid: &str, name: &str) -> anyhow::Result<()> {
    save_from(&env.client, wid, name).await
}

/// Saves the history of the latest run of `wid` as `name`.
pub async fn save_from(
    client: &temporalio_client::Client,
    wid: &str,
    name: &str,
) -> anyhow::Result<()> {
    let json = client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    std::fs::create_dir_all(fresh_dir())?;
    std::fs::write(fresh_dir().join(format!("{name}.json")), &json)?;
    if std::env::var_os("E2E_RECORD_HISTORIES").is_some() {
        bail!(
            "E2E_RECORD_HISTORIES rewrote the committed histories; they are never re-recorded now: \
             record a new release's set with scripts/record-histories"
        );
    }
    if let Some(dir) = std::env::var_os("E2E_RECORD_HISTORIES_TO") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.json"));
        if path.exists() {
            bail!(
                "{} exists: a committed history is never re-recorded",
                path.display()
            );
        }
        std::fs::write(path, &json)?;
    }
    Ok(())
}

pub async fn record_histories(env: &Env) -> anyhow::Result<()> {
    // 1. Data, every kind of message, an acknowledged and a refused update, pause/resume, cancel.
    let id = env.id("rec1");
    let l1 = format!("{id}-l1");
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "apiToken": "rec-token",
        "data": {"id": id, "name": "Ann", "listings": [{"id": l1, "user": id}]}}),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": l1, "name": "Loft"}, "entityName": "Listing"})),
    )
    .await?;
    ops::signal(&env.client, &wid, "update", None).await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"updates": {"User": {id.clone(): {"tags": ["a"]}}}, "strategy": "$push"})),
    )
    .await?;
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "age": 3}}),
    )
    .await?;
    let _ = ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"updates": {"Listing": {"zz": {"a": 1}}}, "strategy": "$set"}),
    )
    .await;
    ops::signal(
        &env.client,
        &wid,
        "delete",
        Some(&json!({"deletions": {"Listing": {l1.clone(): {}}}})),
    )
    .await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("rec-token-2"))).await?;
    ops::signal(
        &env.client,
        &wid,
        "apiUrl",
        Some(&json!("http://127.0.0.1:9/u")),
    )
    .await?;
    ops::signal(&env.client, &wid, "pause", None).await?;
    ops::signal(&env.client, &wid, "resume", None).await?;
    query_until(env, &wid, "apiToken", |v| v["rotations"] == 1).await?;
    ops::signal(&env.client, &wid, "cancel", None).await?;
    crate::workflow::result(env, &wid).await?;
    save(env, &wid, "signals-updates-cancel").await?;

    // 2. Started with its schema in the input (no local activity), ended by a Temporal cancellation.
    let id = env.id("rec2");
    let wid = ops::workflow_id("User", &id);
    let schema =
        stateful_engine::Schema::from_file(root().join("tests/fixtures/schema.yaml"))?.to_json();
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "schema": schema,
        "state": {"User": {id.clone(): {"id": id}}}}),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "state",
        Some(&json!({"User": {id.clone(): {"id": id, "v": 2}}})),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["v"] == 2).await?;
    env.client
        .get_workflow_handle::<JsonWorkflow>(&wid)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    // It ends CANCELED (its result is the cancellation).
    let _ = crate::workflow::result(env, &wid).await;
    save(env, &wid, "state-and-temporal-cancel").await?;

    // 3. A bad input that fails the workflow at once.
    let wid = env.id("User-rec3");
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"entityName": "User"}),
    )
    .await?;
    let _ = crate::workflow::result(env, &wid).await;
    save(env, &wid, "bad-input").await?;

    // 4. Loads from an API: at start, after a rotation (a 401 first), on `refresh`.
    let api = stateful_tests::api::FakeApi::start(9).await?;
    let id = env.id("rec4");
    let wid = ops::workflow_id("User", &id);
    api.put(&format!("/users/{id}"), json!({"id": id, "name": "Loaded"}));
    api.accept(&["rec-good"]);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "apiBase": api.base, "apiToken": "rec-bad"}),
    )
    .await?;
    query_until(env, &wid, "status", |v| v == "unauthorized").await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("rec-good"))).await?;
    query_until(env, &wid, "data", |v| v["name"] == "Loaded").await?;
    api.put(
        &format!("/users/{id}"),
        json!({"id": id, "name": "Refreshed"}),
    );
    ops::signal(&env.client, &wid, "refresh", None).await?;
    query_until(env, &wid, "data", |v| v["name"] == "Refreshed").await?;
    ops::signal(&env.client, &wid, "cancel", None).await?;
    crate::workflow::result(env, &wid).await?;
    save(env, &wid, "api-loads").await?;

    // 5. A tree: children started with their slices, a change down, a change up, a listing
    //    removed (its child ends), a child cancelled from outside (restarted), and the root
    //    cancelled by Temporal (the cascade). The root's and a child's histories are kept.
    let u = env.id("rec5");
    let (l1, l2) = (format!("{u}-l1"), format!("{u}-l2"));
    let root_wid = ops::workflow_id("User", &u);
    let (c1, c2) = (format!("Listing-{l1}"), format!("Listing-{l2}"));
    ops::start(
        &env.client,
        &env.task_queue,
        &root_wid,
        json!({"id": u, "entityName": "User", "apiToken": "rec-tree",
        "data": {"id": u, "listings": [{"id": l1, "user": u, "name": "a"}, {"id": l2, "user": u}]}}),
    )
    .await?;
    query_until(env, &c1, "status", |v| v == "running").await?;
    query_until(env, &c2, "status", |v| v == "running").await?;
    ops::signal(
        &env.client,
        &root_wid,
        "update",
        Some(&json!({"updates": {"Listing": {l1.clone(): {"name": "down"}}}})),
    )
    .await?;
    query_until(env, &c1, "data", |v| v["name"] == "down").await?;
    ops::signal(
        &env.client,
        &c1,
        "update",
        Some(&json!({"updates": {"Listing": {l1.clone(): {"price": 7}}}})),
    )
    .await?;
    query_until(env, &root_wid, "state", |v| v["Listing"][&l1]["price"] == 7).await?;
    ops::signal(
        &env.client,
        &root_wid,
        "update",
        Some(&json!({"updates": {"User": {u.clone(): {"listings": [l1]}}}, "strategy": "$set"})),
    )
    .await?;
    crate::workflow::result(env, &c2).await?;
    let before = stateful_tests::history::run_id_of(env, &c1).await?;
    env.client
        .get_workflow_handle::<JsonWorkflow>(&c1)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    stateful_tests::eventually(Duration::from_secs(30), || async {
        let r = stateful_tests::history::run_id_of(env, &c1).await?;
        if r != before && ops::query(&env.client, &c1, "data").await?["name"] == "down" {
            Ok(())
        } else {
            bail!("not restarted yet")
        }
    })
    .await?;
    env.client
        .get_workflow_handle::<JsonWorkflow>(&root_wid)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    let _ = crate::workflow::result(env, &root_wid).await;
    let _ = crate::workflow::result(env, &c1).await;
    save(env, &root_wid, "tree-root").await?;
    save(env, &c1, "tree-child").await?;
    Ok(())
}

/// The histories in `dir` and, for the committed fixtures, in each release's directory below it.
fn histories_in(dir: &Path) -> anyhow::Result<Vec<(String, WorkflowHistory)>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        if p.is_dir() {
            paths.extend(
                std::fs::read_dir(&p)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "json")),
            );
        } else if p.extension().is_some_and(|e| e == "json") {
            paths.push(p);
        }
    }
    paths.sort();
    for p in paths {
        let bytes = std::fs::read(&p)?;
        let h = WorkflowHistory::from_json(&bytes)
            .with_context(|| format!("{} is not a history", p.display()))?;
        out.push((p.display().to_string(), h));
    }
    Ok(out)
}

/// Replays the committed fixtures and the fresh histories (on the calling task: replay is `!Send`).
pub async fn replay_all() -> anyhow::Result<usize> {
    let fixtures = histories_in(&fixture_dir())?;
    if fixtures.is_empty() {
        bail!(
            "no history fixtures in {}: record a release's set with `scripts/record-histories`",
            fixture_dir().display()
        );
    }
    let fresh = histories_in(&fresh_dir())?;
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<StatefulWorkflow>()?
            .build(),
    )?;
    let mut n = 0;
    for (name, h) in fixtures.into_iter().chain(fresh) {
        replayer
            .replay_workflow(h)
            .await
            .with_context(|| format!("replaying {name}"))?;
        n += 1;
    }
    Ok(n)
}
