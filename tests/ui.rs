//! What the Temporal UI shows, through the `temporal` CLI: each workflow's static summary and details
//! (entity and id, place in the tree), its current details (status, version, last change), and the
//! summaries of child starts and loads. Never the token.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::FakeApi;
use stateful_tests::history::{history_of, run_id_of, temporal};
use stateful_tests::{Env, ensure_eq, eventually, query_until};

const TOKEN: &str = "ui-secret-token-9f3";

/// `temporal workflow describe -o json`: the static summary and details of `wid`, and the whole
/// answer (to check that the token is nowhere in it).
fn described(env: &Env, wid: &str) -> anyhow::Result<(String, String, String)> {
    let out = temporal(
        env,
        &["workflow", "describe", "-w", wid, "--output", "json"],
    )?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("describe {wid}: {out}"))?;
    let m = &v["executionConfig"]["userMetadata"];
    Ok((
        m["summary"].as_str().unwrap_or_default().to_string(),
        m["details"].as_str().unwrap_or_default().to_string(),
        out,
    ))
}

/// `temporal workflow metadata -o json`: the current details (the SDK answers the
/// `__temporal_workflow_metadata` query).
fn current_details(env: &Env, wid: &str) -> anyhow::Result<String> {
    let out = temporal(
        env,
        &["workflow", "metadata", "-w", wid, "--output", "json"],
    )?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("metadata {wid}: {out}"))?;
    // The CLI prints the query's answer (`{"queryResult": [{"currentDetails": ...}]}`).
    let d = v["queryResult"][0]["currentDetails"]
        .as_str()
        .or_else(|| v["currentDetails"].as_str());
    Ok(d.unwrap_or_default().to_string())
}

/// The summaries of the events of `event_type` (e.g. `EVENT_TYPE_ACTIVITY_TASK_SCHEDULED`) in the
/// latest run of `wid`.
async fn summaries(env: &Env, wid: &str, event_type: &str) -> anyhow::Result<Vec<String>> {
    let run = run_id_of(env, wid).await?;
    let h = history_of(env, wid, &run)?;
    Ok(h["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["eventType"].as_str() == Some(event_type))
        .map(|e| payload_text(&e["userMetadata"]["summary"]))
        .collect())
}

/// A `json/plain` payload as `temporal workflow show --output json` prints it (base64 `data`), or a
/// string already decoded: its text; empty when there is none.
fn payload_text(p: &Value) -> String {
    use base64::Engine;
    if let Some(s) = p.as_str() {
        return s.to_string();
    }
    p["data"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A root, a child and a grandchild: each shows its entity and id as its summary and its place in
/// the tree as its details (`temporal workflow describe`); the parent's history names each child it
/// starts; the current details follow status, version and the last change.
pub async fn describe_shows_summaries_place_in_the_tree_and_current_details(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("ui");
    let l = format!("{u}-l1");
    let p = format!("{u}-p1");
    let root = format!("User-{u}");
    let listing = format!("Listing-{l}");
    let photo = format!("Photo-{p}");
    let data = json!({"id": u, "name": "Ann", "listings": [{"id": l, "user": u, "photos": [{"id": p, "listing": l}]}]});
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "apiToken": TOKEN, "data": data}),
    )
    .await?;
    query_until(env, &photo, "status", |v| v == "running").await?;

    let (summary, details, all) = described(env, &root)?;
    ensure_eq!(summary, format!("User {u}"));
    for want in [
        "root: this workflow",
        "parent: none",
        "depth: 0",
        root.as_str(),
    ] {
        if !details.contains(want) {
            bail!("the root's details lack `{want}`: {details:?}");
        }
    }
    if all.contains(TOKEN) {
        bail!("describe of the root shows the token");
    }
    let (summary, details, _) = described(env, &listing)?;
    ensure_eq!(summary, format!("Listing {l}"));
    if !(details.contains(&format!("root: {root}"))
        && details.contains(&format!("parent: {root}"))
        && details.contains("depth: 1"))
    {
        bail!("the listing's details: {details:?}");
    }
    let (summary, details, all) = described(env, &photo)?;
    ensure_eq!(summary, format!("Photo {p}"));
    if !(details.contains(&format!("root: {root}"))
        && details.contains(&format!("parent: {listing}"))
        && details.contains("depth: 2"))
    {
        bail!("the photo's details: {details:?}");
    }
    if all.contains(TOKEN) {
        bail!("describe of the grandchild shows the token");
    }
    // The parents' histories say which child each start runs.
    ensure_eq!(
        summaries(
            env,
            &root,
            "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED"
        )
        .await?,
        vec![format!("Listing {l}")]
    );
    ensure_eq!(
        summaries(
            env,
            &listing,
            "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED"
        )
        .await?,
        vec![format!("Photo {p}")]
    );

    // Current details: status, version and the last change, kept up to date.
    let d = current_details(env, &root)?;
    if !(d.starts_with(&format!("User {u}\nstatus: running\nversion: "))
        && d.contains("last change: v"))
    {
        bail!("the root's current details: {d:?}");
    }
    let answer = ops::update(
        &env.client,
        &root,
        "update",
        &json!({"data": {"id": u, "name": "Bea"}}),
    )
    .await?;
    let v = answer["version"]
        .as_u64()
        .ok_or_else(|| anyhow!("no version in {answer}"))?;
    eventually(Duration::from_secs(20), || async {
        let d = current_details(env, &root)?;
        if d.contains(&format!("version: {v}\n")) && d.contains(&format!("last change: v{v} at ")) {
            Ok(())
        } else {
            bail!("the current details do not show version {v}: {d:?}")
        }
    })
    .await?;
    ops::signal(&env.client, &root, "pause", None).await?;
    eventually(Duration::from_secs(20), || async {
        let d = current_details(env, &root)?;
        if d.contains("status: paused") {
            Ok(())
        } else {
            bail!("the current details do not show the pause: {d:?}")
        }
    })
    .await?;
    let d = current_details(env, &photo)?;
    if !d.starts_with(&format!("Photo {p}\nstatus: ")) || d.contains(TOKEN) {
        bail!("the grandchild's current details: {d:?}");
    }
    // A continue-as-new: the next run shows its current details again, naming the entity (a run
    // continued as new has no static summary: the SDK's continue-as-new options carry none).
    let before = run_id_of(env, &root).await?;
    ops::signal(&env.client, &root, "checkpoint", None).await?;
    eventually(Duration::from_secs(30), || async {
        let run = run_id_of(env, &root).await?;
        let d = current_details(env, &root)?;
        if run != before
            && d.starts_with(&format!("User {u}\nstatus: paused\n"))
            && d.contains(&format!("last change: v{v} at "))
        {
            Ok(())
        } else {
            bail!("after the checkpoint (run {run}): {d:?}")
        }
    })
    .await?;
    Ok(())
}

/// A workflow that loads from an API: its history names the URL each load reads, without the query
/// string (where a key may travel) and never with the token.
pub async fn load_activities_say_which_url_they_load(env: &Env) -> anyhow::Result<()> {
    let api = FakeApi::start(23).await?;
    let id = env.id("ui-load");
    let path = format!("/users/{id}?sig=query-secret");
    api.put(&path, json!({"id": id, "name": "Loaded"}));
    api.accept(&[TOKEN]);
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "apiToken": TOKEN,
               "apiUrl": format!("{}{path}", api.base)}),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "Loaded").await?;
    let loads = summaries(env, &wid, "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED").await?;
    ensure_eq!(loads, vec![format!("load {}/users/{id}", api.base)]);
    if loads
        .iter()
        .any(|s| s.contains("query-secret") || s.contains(TOKEN))
    {
        bail!("a load's summary shows a secret: {loads:?}");
    }
    // The refresh timer, when the entity refreshes, says what it waits for (none armed here: no
    // refresh interval).
    let (summary, _, _) = described(env, &wid)?;
    ensure_eq!(summary, format!("User {id}"));
    Ok(())
}
