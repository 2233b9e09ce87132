//! Big trees and big states: thousands of children, oversized inputs, long ids, deep data. Each test
//! checks that the workflow keeps running with no failed workflow task in any of its runs, and that
//! the data is right.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::history::no_failed_task;
use stateful_tests::{Env, ensure_eq, eventually, query_until};

/// The children of `wid`: how many it knows, how many run, how many wait to start (the `children`
/// query's counts: its list may be cut short).
async fn children_by_status(env: &Env, wid: &str) -> anyhow::Result<(u64, u64, u64)> {
    let kids = ops::query(&env.client, wid, "children").await?;
    let count = |k: &str| kids["counts"][k].as_u64().unwrap_or(0);
    let total = kids["total"]
        .as_u64()
        .ok_or_else(|| anyhow!("no children total: {kids}"))?;
    Ok((total, count("running"), count("queued")))
}

/// 2,100 listings added by one update: more child starts than Temporal lets a run have pending
/// (2,000) and more bytes than one workflow task may carry. The starts leave in waves, the run
/// hands what it has no room for to the next one, and every child runs with its slice.
pub async fn an_update_adding_2100_children_starts_every_one_in_waves(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("big");
    let root = format!("User-{u}");
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "data": {"id": u, "name": "big"}}),
    )
    .await?;
    let n: u64 = 2_100;
    let ids: Vec<String> = (0..n).map(|i| format!("{u}-l{i}")).collect();
    let rows: serde_json::Map<String, Value> = ids
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.clone(),
                json!({"id": l, "name": format!("listing {i}"), "user": u}),
            )
        })
        .collect();
    ops::update(
        &env.client,
        &root,
        "update",
        &json!({"updates": {"User": {u.clone(): {"listings": ids}}, "Listing": rows}}),
    )
    .await?;
    // Generous: 2,100 workflows start on a dev server that the other tests share.
    let t0 = std::time::Instant::now();
    eventually(Duration::from_secs(540), || async {
        let (all, running, queued) = children_by_status(env, &root).await?;
        if all == n && running == n && queued == 0 {
            Ok(())
        } else {
            bail!("{running} of {n} children running, {queued} queued ({all} known)")
        }
    })
    .await?;
    eprintln!(
        "2,100 children running after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // A few children, first, middle and last, run with their slice.
    for i in [0, n / 2, n - 1] {
        let l = format!("{u}-l{i}");
        let st = ops::query(&env.client, &format!("Listing-{l}"), "state").await?;
        ensure_eq!(st["Listing"][&l]["name"], json!(format!("listing {i}")));
    }
    let runs = no_failed_task(env, &root)?;
    if runs < 3 {
        bail!("{n} children took {runs} runs; at most 1,000 children a run means at least 3");
    }
    Ok(())
}

/// Listing rows of about `bytes` bytes of text in all, under ids `{prefix}{i}`.
fn listings(prefix: &str, count: usize, bytes: usize) -> serde_json::Map<String, Value> {
    let words = [
        "catalogue",
        "description",
        "of",
        "a",
        "listing",
        "with",
        "words",
        "and",
        "more",
    ];
    (0..count)
        .map(|i| {
            let text: Vec<&str> = (0..bytes / count / 6)
                .map(|j| words[(i * 7 + j * 13) % words.len()])
                .collect();
            let id = format!("{prefix}{i}");
            (id.clone(), json!({"id": id, "text": text.join(" ")}))
        })
        .collect()
}

/// Two oversized inputs (an acknowledged update and a signal) and then a `checkpoint`: both inputs
/// are refused with a bounded reason, the state is kept, and the workflow continues as new.
pub async fn oversized_inputs_are_refused_and_the_workflow_still_continues_as_new(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("oversized");
    let root = format!("User-{u}");
    // Listings that are not children (autoStart: false): the state alone is what grows.
    let schema = json!({"User": {"listings": {"entity": "Listing", "many": true, "autoStart": false}},
                        "Listing": {}});
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "schema": schema, "data": {"id": u, "name": "big"}}),
    )
    .await?;
    let first = listings("a", 200, 1_000_000);
    ops::update(
        &env.client,
        &root,
        "update",
        &json!({"updates": {"Listing": first}}),
    )
    .await?;
    let second = listings("b", 200, 1_200_000);
    let refused = ops::update(
        &env.client,
        &root,
        "update",
        &json!({"updates": {"Listing": second}}),
    )
    .await;
    let reason = format!(
        "{:#}",
        refused
            .err()
            .ok_or_else(|| anyhow!("a 1.2 MB update on a 1 MB state was accepted"))?
    );
    if !reason.contains("more than the 1800000 bytes a state may take") {
        bail!("the refusal does not say why: {reason}");
    }
    ops::signal(
        &env.client,
        &root,
        "update",
        Some(&json!({"updates": {"Listing": listings("c", 200, 1_200_000)}})),
    )
    .await?;
    ops::signal(&env.client, &root, "checkpoint", None).await?;
    eventually(Duration::from_secs(60), || async {
        let v = ops::query(&env.client, &root, "version").await?;
        if v["runs"].as_u64() >= Some(2) {
            Ok(())
        } else {
            bail!("not continued as new yet: {v}")
        }
    })
    .await?;
    let rejected = ops::query(&env.client, &root, "rejected").await?;
    let recent = rejected["recent"].as_array().cloned().unwrap_or_default();
    ensure_eq!(recent.len(), 2);
    for r in &recent {
        let reason = r["reason"].as_str().unwrap_or_default();
        if reason.len() > 600 || !reason.contains("refused") {
            bail!(
                "rejection reason not bounded or not clear: {} bytes",
                reason.len()
            );
        }
    }
    let state = ops::query(&env.client, &root, "state").await?;
    ensure_eq!(state["Listing"].as_object().map(|m| m.len()), Some(200));
    ensure_eq!(state["Listing"]["a0"]["id"], json!("a0"));
    // Still running and changeable.
    ops::update(
        &env.client,
        &root,
        "update",
        &json!({"updates": {"User": {u.clone(): {"name": "after"}}}}),
    )
    .await?;
    no_failed_task(env, &root)?;
    Ok(())
}

/// An entity whose child workflow id would be longer than Temporal's 1,000 bytes: the change that
/// brings it is refused with the reason; arriving as stamped writes (another copy's), it is skipped
/// with the reason and its siblings start.
pub async fn a_too_long_child_id_is_refused_and_its_siblings_run(env: &Env) -> anyhow::Result<()> {
    let u = env.id("longid");
    let root = format!("User-{u}");
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "data": {"id": u, "listings": [{"id": format!("{u}-a"), "user": u}]}}),
    )
    .await?;
    let long = format!("{u}-{}", "x".repeat(1_000));
    let refused = ops::update(
        &env.client,
        &root,
        "update",
        &json!({"updates": {"User": {u.clone(): {"listings": [format!("{u}-a"), long.clone()]}},
                            "Listing": {long.clone(): {"id": long}}}}),
    )
    .await;
    let reason = format!(
        "{:#}",
        refused
            .err()
            .ok_or_else(|| anyhow!("the long id was accepted"))?
    );
    if !reason.contains("shorten its id") {
        bail!("unclear refusal: {reason}");
    }
    // The same as another copy's stamped writes: not refusable, so the planner skips it.
    let b = format!("{u}-b");
    let t = 4_000_000_000_000u64;
    ops::signal(
        &env.client,
        &root,
        "update",
        Some(&json!({
            "updates": {"User": {u.clone(): {"listings": [format!("{u}-a"), b.clone(), long.clone()]}},
                        "Listing": {b.clone(): {"id": b}, long.clone(): {"id": long}}},
            "stamps": {"User": {u.clone(): {"listings": [t, "elsewhere"]}},
                       "Listing": {b.clone(): {"id": [t, "elsewhere"]}, long.clone(): {"id": [t, "elsewhere"]}}},
            "changeOrigin": "elsewhere"
        })),
    )
    .await?;
    eventually(Duration::from_secs(30), || async {
        let kids = ops::query(&env.client, &root, "children").await?;
        let running = kids["children"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "running")
            .count();
        let skipped = kids["skipped"].to_string();
        if running == 2 && skipped.contains("Temporal accepts at most 1000") {
            Ok(())
        } else {
            bail!("{running} children running, skipped: {skipped}")
        }
    })
    .await?;
    for l in [format!("{u}-a"), b] {
        query_until(env, &format!("Listing-{l}"), "status", |v| v == "running").await?;
    }
    no_failed_task(env, &root)?;
    Ok(())
}

/// A chain of 10,000 references (each node's `next` is the following node): the `data` query
/// answers, cut at 32 levels where the next node stays an id.
pub async fn a_deep_chain_of_references_is_queried(env: &Env) -> anyhow::Result<()> {
    let u = env.id("chain");
    let wid = format!("Node-{u}-0");
    let schema = json!({"Node": {"next": {"entity": "Node", "autoStart": false}}});
    let n = 10_000;
    let nodes: serde_json::Map<String, Value> = (0..n)
        .map(|i| {
            let id = format!("{u}-{i}");
            let next = if i + 1 < n {
                json!(format!("{u}-{}", i + 1))
            } else {
                Value::Null
            };
            (id.clone(), json!({"id": id, "next": next}))
        })
        .collect();
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": format!("{u}-0"), "entityName": "Node", "schema": schema, "state": {"Node": nodes}}),
    )
    .await?;
    let data = eventually(Duration::from_secs(30), || async {
        let d = ops::query(&env.client, &wid, "data").await?;
        if d.is_null() {
            bail!("no data yet")
        }
        Ok(d)
    })
    .await?;
    let mut at = &data;
    for _ in 0..32 {
        at = &at["next"];
    }
    ensure_eq!(at["id"], json!(format!("{u}-32")));
    ensure_eq!(at["next"], json!(format!("{u}-33")));
    no_failed_task(env, &wid)?;
    Ok(())
}

/// A fan-out longer than a run: 150 children, at most 20 signals in flight and a run ending past
/// 200 history events. A rename of every listing and a token rotation leave the root in waves; each
/// run issues what its history has room for and hands the rest to the next one (the carry-over's
/// `outbox`), so no run comes near Temporal's history limit however many children there are. Then a
/// Temporal cancellation of the root ends every child.
pub async fn a_fan_out_longer_than_a_run_is_handed_from_run_to_run(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("fan");
    let root = format!("User-{u}");
    let n: usize = 150;
    let ids: Vec<String> = (0..n).map(|i| format!("{u}-l{i}")).collect();
    let listings: Vec<Value> = ids
        .iter()
        .map(|l| json!({"id": l, "name": "first", "user": u}))
        .collect();
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "apiToken": "fan-1", "maxHistoryLength": 200,
               "limits": {"maxPendingSignals": 20},
               "data": {"id": u, "name": "fan", "listings": listings}}),
    )
    .await?;
    let kids: Vec<String> = ids.iter().map(|l| format!("Listing-{l}")).collect();
    let all_children = |what: &'static str, pred: fn(&Value) -> bool, query: &'static str| {
        let kids = kids.clone();
        async move {
            eventually(Duration::from_secs(240), || async {
                let mut behind = 0;
                for k in &kids {
                    match ops::query(&env.client, k, query).await {
                        Ok(v) if pred(&v) => {}
                        _ => behind += 1,
                    }
                }
                if behind == 0 {
                    Ok(())
                } else {
                    bail!("{behind} of {n} children without {what}")
                }
            })
            .await
        }
    };
    all_children("their listing", |v| v["name"] == "first", "data").await?;
    let renamed: serde_json::Map<String, Value> = ids
        .iter()
        .map(|l| (l.clone(), json!({"name": "renamed"})))
        .collect();
    ops::signal(
        &env.client,
        &root,
        "update",
        Some(&json!({"updates": {"Listing": renamed}})),
    )
    .await?;
    all_children("the rename", |v| v["name"] == "renamed", "data").await?;
    ops::signal(&env.client, &root, "apiToken", Some(&json!("fan-2"))).await?;
    all_children(
        "the new token",
        |v| v["fingerprint"] == json!(stateful_engine::fingerprint("fan-2")),
        "apiToken",
    )
    .await?;
    let runs = no_failed_task(env, &root)?;
    if runs < 4 {
        bail!("the root took {runs} runs: a 200-event run cannot have sent 450 messages");
    }
    // Every run stayed short: the largest is far below Temporal's 51,200 events.
    let longest = stateful_tests::history::longest_run(env, &root)?;
    if longest > 2_000 {
        bail!("a run of the root took {longest} events");
    }
    env.client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(&root)
        .cancel(temporalio_client::WorkflowCancelOptions::default())
        .await?;
    eventually(Duration::from_secs(240), || async {
        let mut running = 0;
        for k in &kids {
            if stateful_tests::history::status_of(env, k).await? == stateful_tests::history::RUNNING
            {
                running += 1;
            }
        }
        if running == 0 {
            Ok(())
        } else {
            bail!("{running} of {n} children still run")
        }
    })
    .await?;
    no_failed_task(env, &root)?;
    Ok(())
}
