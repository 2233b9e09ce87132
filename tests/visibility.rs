//! Search attributes (`StatefulEntity`, `StatefulId`, `StatefulStatus`, `StatefulRoot`): a tree is
//! found through visibility with `temporal workflow list --query` and `starter list`, its status
//! changes show up; a namespace that lacks them runs workflows without them, and a worker allowed to
//! registers them.

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_client::visibility::check_by_query;
use stateful_tests::api::FakeApi;
use stateful_tests::history::{no_failed_task, temporal};
use stateful_tests::{Env, WorkerProc, client_in, ensure_eq, eventually, query_until, starter};
use stateful_workflows::visibility::NAMES;

/// Visibility is eventually consistent: how long a change may take to be listed.
const LISTED_WITHIN: Duration = Duration::from_secs(30);

/// The workflow ids `temporal workflow list --query QUERY` shows (namespace `default`), sorted.
fn listed(env: &Env, query: &str) -> anyhow::Result<Vec<String>> {
    let out = temporal(env, &["workflow", "list", "--query", query, "-o", "json"])?;
    ids_of(&out)
}

fn ids_of(json_out: &str) -> anyhow::Result<Vec<String>> {
    let v: Value = if json_out.trim().is_empty() {
        json!([])
    } else {
        serde_json::from_str(json_out)?
    };
    let mut ids: Vec<String> = v
        .as_array()
        .ok_or_else(|| anyhow!("not a JSON array: {json_out}"))?
        .iter()
        .filter_map(|w| w["execution"]["workflowId"].as_str().map(String::from))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Polls `temporal workflow list --query QUERY` until it shows exactly `want`.
async fn listed_until(env: &Env, query: &str, want: &[&str]) -> anyhow::Result<()> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually(LISTED_WITHIN, || async {
        let got = listed(env, query)?;
        if got == want {
            Ok(())
        } else {
            bail!("`{query}` lists {got:?}, not {want:?}")
        }
    })
    .await
}

/// `starter --json list ARGS`, parsed, sorted by workflow id.
async fn starter_list(env: &Env, args: &[&str]) -> anyhow::Result<(Vec<Value>, String)> {
    let mut all = vec!["--json", "list"];
    all.extend_from_slice(args);
    let (ok, out, err) = starter(env, &all).await?;
    if !ok {
        bail!("starter {all:?} failed: {out}{err}");
    }
    let mut v: Vec<Value> = serde_json::from_str::<Value>(&out)?
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("`starter list` printed no JSON array: {out}"))?;
    v.sort_by(|a, b| a["workflowId"].as_str().cmp(&b["workflowId"].as_str()));
    Ok((v, err))
}

pub async fn a_tree_is_found_by_entity_id_status_and_root_and_its_status_changes_show(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("vis");
    // One listing's id holds a quote: the queries quote it safely.
    let (l0, l1) = (format!("{u}-l0"), format!("{u}-o'l1"));
    let root = format!("User-{u}");
    let (w0, w1) = (format!("Listing-{l0}"), format!("Listing-{l1}"));
    let data = json!({"id": u, "listings": [{"id": l0, "user": u}, {"id": l1, "user": u}]});
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "data": data}),
    )
    .await?;
    for w in [&w0, &w1] {
        query_until(env, w, "status", |v| v == "running").await?;
    }

    // The temporal CLI, the way the README shows it.
    let tree = format!("StatefulRoot = '{root}'");
    listed_until(env, &tree, &[&root, &w0, &w1]).await?;
    listed_until(
        env,
        &format!("StatefulEntity = 'User' AND StatefulId = '{u}' AND StatefulStatus = 'running'"),
        &[&root],
    )
    .await?;
    listed_until(
        env,
        &format!("{tree} AND StatefulEntity = 'Listing' AND ExecutionStatus = 'Running'"),
        &[&w0, &w1],
    )
    .await?;

    // `starter list`: the attributes' values.
    let (found, _) = starter_list(env, &["--entity", "Listing", "--root", &root]).await?;
    ensure_eq!(
        found,
        vec![
            json!({"workflowId": w0, "executionStatus": "Running", "entity": "Listing", "id": l0,
                   "status": "running", "root": root}),
            json!({"workflowId": w1, "executionStatus": "Running", "entity": "Listing", "id": l1,
                   "status": "running", "root": root}),
        ]
    );
    // A value with a quote, quoted by the starter.
    let (found, _) = starter_list(env, &["--id", &l1]).await?;
    ensure_eq!(found.len(), 1);
    ensure_eq!(found[0]["workflowId"], json!(w1));
    // The limit, and the note that more match.
    let (found, err) = starter_list(env, &["--root", &root, "--limit", "2"]).await?;
    ensure_eq!(found.len(), 2);
    if !err.contains("more than 2 workflows match") {
        bail!("`starter list --limit 2` did not say that more match: {err}");
    }
    // The text table.
    let (ok, text, err) = starter(env, &["list", "--root", &root, "--entity", "User"]).await?;
    if !ok || !text.starts_with("WORKFLOW ID") || !text.contains(&format!("{root}  User")) {
        bail!("`starter list` printed:\n{text}{err}");
    }

    // Pausing the root reaches its descendants; visibility follows.
    ops::signal(&env.client, &root, "pause", None).await?;
    for w in [&root, &w0, &w1] {
        query_until(env, w, "status", |v| v == "paused").await?;
    }
    listed_until(
        env,
        &format!("{tree} AND StatefulStatus = 'paused'"),
        &[&root, &w0, &w1],
    )
    .await?;
    eventually(LISTED_WITHIN, || async {
        let (found, _) = starter_list(env, &["--root", &root, "--status", "paused"]).await?;
        if found.len() == 3 && found.iter().all(|w| w["status"] == "paused") {
            Ok(())
        } else {
            bail!("`starter list --status paused` shows {found:?}")
        }
    })
    .await?;
    listed_until(env, &format!("{tree} AND StatefulStatus = 'running'"), &[]).await?;
    ops::signal(&env.client, &root, "resume", None).await?;
    listed_until(
        env,
        &format!("{tree} AND StatefulStatus = 'running'"),
        &[&root, &w0, &w1],
    )
    .await?;
    for w in [&root, &w0, &w1] {
        no_failed_task(env, w)?;
    }
    Ok(())
}

pub async fn an_api_that_refuses_the_token_lists_the_workflow_as_unauthorized_until_rotation(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(16).await?;
    let id = env.id("vis-401");
    api.put(&format!("/users/{id}"), json!({"id": id, "name": "Ann"}));
    api.accept(&["good"]);
    let wid = format!("User-{id}");
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "apiBase": api.base, "apiToken": "expired"}),
    )
    .await?;
    query_until(env, &wid, "status", |v| v == "unauthorized").await?;
    // The README's example.
    let unauthorized =
        format!("StatefulEntity='User' AND StatefulStatus='unauthorized' AND StatefulId='{id}'");
    listed_until(env, &unauthorized, &[&wid]).await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("good"))).await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    listed_until(env, &unauthorized, &[]).await?;
    listed_until(
        env,
        &format!("StatefulEntity='User' AND StatefulStatus='running' AND StatefulId='{id}'"),
        &[&wid],
    )
    .await?;
    no_failed_task(env, &wid)?;
    Ok(())
}

/// The `temporal` CLI on `namespace`; its standard output.
fn temporal_in(env: &Env, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&env.cli)
        .args(args)
        .args(["--address", &env.address, "--namespace", namespace])
        .output()?;
    if !out.status.success() {
        bail!(
            "temporal {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The failed workflow tasks in `wid`'s history on `namespace`.
fn failed_tasks_in(env: &Env, namespace: &str, wid: &str) -> anyhow::Result<Vec<String>> {
    let out = temporal_in(
        env,
        namespace,
        &["workflow", "show", "-w", wid, "-o", "json"],
    )?;
    let h: Value = serde_json::from_str(&out)?;
    Ok(h["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["eventType"]
                .as_str()
                .unwrap_or_default()
                .to_uppercase()
                .contains("WORKFLOW_TASK_FAILED")
        })
        .map(|e| e["workflowTaskFailedEventAttributes"].to_string())
        .collect())
}

pub async fn without_the_attributes_workflows_run_without_them_until_a_worker_registers_them(
    env: &Env,
) -> anyhow::Result<()> {
    // A namespace created after the dev server started has none of them.
    let ns = format!("vis-{}", env.tag);
    temporal_in(env, &ns, &["operator", "namespace", "create"])?;
    let queue = format!("vis-{}", env.tag);
    let log_dir = env.log_dir.join("visibility");
    let worker = WorkerProc::start(
        &env.address,
        &queue,
        &log_dir,
        "no-attributes",
        &["--namespace", &ns],
    )
    .await?;
    let command = format!(
        "temporal operator search-attribute create --namespace {ns} --name StatefulEntity --type Keyword --name StatefulId --type Keyword --name StatefulStatus --type Keyword --name StatefulRoot --type Keyword"
    );
    worker.wait_log(&command, Duration::from_secs(10)).await?;
    let c = client_in(&env.address, &ns).await?;
    let u1 = env.id("nosa");
    let w1 = format!("User-{u1}");
    ops::start(
        &c,
        &queue,
        &w1,
        json!({"id": u1, "entityName": "User", "data": {"id": u1, "name": "Ann"}}),
    )
    .await?;
    eventually(Duration::from_secs(30), || async {
        let v = ops::query(&c, &w1, "status").await?;
        if v == "running" {
            Ok(())
        } else {
            bail!("{w1} is {v}")
        }
    })
    .await?;
    ensure_eq!(failed_tasks_in(env, &ns, &w1)?, Vec::<String>::new());
    // Without the operator API, count queries tell the same.
    ensure_eq!(check_by_query(&c).await?.missing, NAMES.to_vec());
    worker.stop().await;

    // A worker allowed to registers them; runs that start from then on set them, and the run that
    // started without them replays (and goes on) without them.
    let worker = WorkerProc::start(
        &env.address,
        &queue,
        &log_dir,
        "registers-attributes",
        &["--namespace", &ns, "--register-search-attributes"],
    )
    .await?;
    worker
        .wait_log("search attributes registered", Duration::from_secs(10))
        .await?;
    ensure_eq!(check_by_query(&c).await?.missing, Vec::<&str>::new());
    let u2 = env.id("withsa");
    let w2 = format!("User-{u2}");
    ops::start(
        &c,
        &queue,
        &w2,
        json!({"id": u2, "entityName": "User", "data": {"id": u2, "name": "Bob"}}),
    )
    .await?;
    ops::signal(&c, &w1, "pause", None).await?;
    eventually(Duration::from_secs(30), || async {
        let v = ops::query(&c, &w1, "status").await?;
        if v == "paused" {
            Ok(())
        } else {
            bail!("{w1} is {v}")
        }
    })
    .await?;
    eventually(LISTED_WITHIN, || async {
        let out = temporal_in(
            env,
            &ns,
            &[
                "workflow",
                "list",
                "--query",
                "StatefulEntity = 'User'",
                "-o",
                "json",
            ],
        )?;
        let got = ids_of(&out)?;
        if got == [w2.clone()] {
            Ok(())
        } else {
            bail!("`StatefulEntity = 'User'` lists {got:?} in {ns}")
        }
    })
    .await?;
    for w in [&w1, &w2] {
        ensure_eq!(failed_tasks_in(env, &ns, w)?, Vec::<String>::new());
    }
    worker.stop().await;
    Ok(())
}
