//! Adopt only what is ours: a parent whose child's start is refused because a workflow with the
//! child's id already runs adopts it only once the `workflowType` local activity has verified that
//! it is a StatefulWorkflow (or the relation's declared type). A workflow of another type is
//! reported conflicting, and is sent nothing (no signal, no token) and never cancelled.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::history::{RUNNING, status_of};
use stateful_tests::history::{no_failed_task, temporal};
use stateful_tests::{Env, ensure_eq, eventually, query_until};
use stateful_workflows::markers::JsonWorkflow;
use temporalio_client::WorkflowCancelOptions;

/// The events of `wid`'s latest run (the CLI's JSON), with their types normalized
/// (`WORKFLOWEXECUTIONSIGNALED`, whatever the CLI's spelling).
fn events(env: &Env, wid: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let show = temporal(env, &["workflow", "show", "-w", wid, "--output", "json"])?;
    let h: Value = serde_json::from_str(&show)?;
    Ok(h["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let t = e["eventType"]
                .as_str()
                .unwrap_or_default()
                .to_uppercase()
                .replace('_', "");
            (t, e.clone())
        })
        .collect())
}

/// The decoded payloads (`data`, base64 in the CLI's JSON) of the markers of `events`.
fn marker_payloads(events: &[(String, Value)]) -> Vec<String> {
    use base64::Engine;
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("data", Value::String(b)) => {
                            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b) {
                                out.push(String::from_utf8_lossy(&bytes).into_owned());
                            }
                        }
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (t, e) in events {
        if t.ends_with("MARKERRECORDED") {
            walk(e, &mut out);
        }
    }
    out
}

fn count(events: &[(String, Value)], kind: &str) -> usize {
    events.iter().filter(|(t, _)| t.ends_with(kind)).count()
}

/// The `children` query's record of `child`.
fn record<'a>(children: &'a Value, child: &str) -> Option<&'a Value> {
    children["children"]
        .as_array()?
        .iter()
        .find(|c| c["workflowId"] == child)
}

pub async fn a_workflow_of_another_type_under_a_childs_id_is_conflicting_and_left_alone(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("adoptx");
    let l = format!("{u}-l1");
    let child = format!("Listing-{l}");
    let root = format!("User-{u}");
    // An impostor under the id the listing's child gets: a workflow of another type, on a task
    // queue nobody polls (it stays running, its first workflow task never taken).
    temporal(
        env,
        &[
            "workflow",
            "start",
            "--type",
            "Impostor",
            "--task-queue",
            &format!("nobody-{u}"),
            "--workflow-id",
            &child,
        ],
    )?;
    ensure_eq!(status_of(env, &child).await?, RUNNING);
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "apiToken": "adoption-secret",
               "data": {"id": u, "name": "Ann"}}),
    )
    .await?;
    // The listing joins the user: its child's start is refused (the impostor runs), the parent
    // describes what runs, and finds an `Impostor`.
    ops::signal(
        &env.client,
        &root,
        "update",
        Some(&json!({"data": {"id": u, "listings": [{"id": l, "user": u, "title": "Loft"}]}})),
    )
    .await?;
    let kids = query_until(env, &root, "children", |v| {
        v["counts"]["conflicting"] == json!(1)
    })
    .await?;
    let rec = record(&kids, &child).ok_or_else(|| anyhow!("{child} not listed: {kids}"))?;
    ensure_eq!(rec["status"], json!("conflicting"));
    ensure_eq!(rec["adopted"], json!(false));
    let reason = rec["conflict"].as_str().unwrap_or_default();
    if !(reason.contains("`Impostor`") && reason.contains("`StatefulWorkflow`")) {
        bail!("the conflict does not name the types: {rec}");
    }
    let v = ops::query(&env.client, &root, "validate").await?;
    ensure_eq!(v["ok"], json!(false));
    let findings = v["findings"].to_string();
    if !(findings.contains(&child) && findings.contains("Impostor")) {
        bail!("validate does not report the conflict: {v}");
    }
    // A change of the listing and a token rotation: nothing reaches the impostor.
    ops::signal(
        &env.client,
        &root,
        "update",
        Some(&json!({"data": {"id": l, "title": "Loft by the sea"}, "entityName": "Listing"})),
    )
    .await?;
    ops::signal(
        &env.client,
        &root,
        "apiToken",
        Some(&json!("adoption-secret-2")),
    )
    .await?;
    query_until(env, &root, "data", |v| {
        v["listings"][0]["title"] == "Loft by the sea"
    })
    .await?;
    query_until(env, &root, "apiToken", |v| {
        v["rotations"].as_u64() >= Some(1)
    })
    .await?;
    // The parent cancelled: the cascade leaves the impostor alone.
    env.client
        .get_workflow_handle::<JsonWorkflow>(&root)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    eventually(Duration::from_secs(30), || async {
        if status_of(env, &root).await? == RUNNING {
            bail!("{root} still running")
        }
        Ok(())
    })
    .await?;
    ensure_eq!(status_of(env, &child).await?, RUNNING);
    let ev = events(env, &child)?;
    ensure_eq!(count(&ev, "WORKFLOWEXECUTIONSTARTED"), 1);
    ensure_eq!(count(&ev, "WORKFLOWEXECUTIONSIGNALED"), 0);
    ensure_eq!(count(&ev, "WORKFLOWEXECUTIONCANCELREQUESTED"), 0);
    // Nothing of the parent's, and never the token, is in the impostor's history.
    let text = serde_json::to_string(&ev.iter().map(|(_, e)| e).collect::<Vec<_>>())?;
    if text.contains(&root) || text.contains("adoption-secret") {
        bail!("the impostor's history holds something of the parent's: {text}");
    }
    // The parent decided in its own history, and none of its workflow tasks failed.
    let markers = marker_payloads(&events(env, &root)?);
    if !markers.iter().any(|m| m.contains("verify-adoption")) {
        bail!("no `verify-adoption` patch marker in the parent's history: {markers:?}");
    }
    if !markers.iter().any(|m| m.contains("Impostor")) {
        bail!("no recorded `workflowType` answer in the parent's history: {markers:?}");
    }
    no_failed_task(env, &root)?;
    // Its history replays with this code (the suite's final test replays what was saved).
    crate::replay::save_from(&env.client, &root, "adoption-conflicting").await?;
    temporal(
        env,
        &[
            "workflow",
            "terminate",
            "-w",
            &child,
            "--reason",
            "test over",
        ],
    )?;
    Ok(())
}

pub async fn a_stateful_workflow_found_running_is_verified_then_adopted(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("adoptok");
    let l = format!("{u}-l1");
    let child = format!("Listing-{l}");
    let root = format!("User-{u}");
    // The listing's workflow runs already (started on its own).
    ops::start(
        &env.client,
        &env.task_queue,
        &child,
        json!({"id": l, "entityName": "Listing", "data": {"id": l, "title": "Cabin"}}),
    )
    .await?;
    query_until(env, &child, "status", |v| v == "running").await?;
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "apiToken": "adopted-token",
               "data": {"id": u, "listings": [{"id": l, "user": u}]}}),
    )
    .await?;
    let kids = query_until(env, &root, "children", |v| {
        record(v, &child).is_some_and(|r| r["adopted"] == true)
    })
    .await?;
    ensure_eq!(kids["counts"]["running"], json!(1));
    // Adopted: subscribed to, and given the token.
    query_until(env, &child, "subscriptions", |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|s| s["workflowId"] == json!(root)))
    })
    .await?;
    query_until(env, &child, "apiToken", |v| {
        v["fingerprint"] == json!(stateful_engine::fingerprint("adopted-token"))
    })
    .await?;
    // And it holds the parent's slice (its `user`), and the parent its title.
    query_until(env, &child, "state", |v| {
        v["Listing"][&l]["user"] == json!(u)
    })
    .await?;
    query_until(env, &root, "state", |v| {
        v["Listing"][&l]["title"] == "Cabin"
    })
    .await?;
    let v = ops::query(&env.client, &root, "validate").await?;
    ensure_eq!(v["ok"], json!(true));
    no_failed_task(env, &root)?;
    crate::replay::save_from(&env.client, &root, "adoption-verified").await?;
    Ok(())
}
