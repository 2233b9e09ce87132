//! Careless and hostile clients, through the plain `temporal` CLI as anyone with access to the
//! namespace could send them: each message is refused with its reason or made harmless, the token
//! goes nowhere it should not, and no workflow task fails (every task at attempt 1).

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::FakeApi;
use stateful_tests::history::{no_failed_task, temporal};
use stateful_tests::{Env, ensure_eq, eventually, query_until};

/// Sends `name` with `input` (JSON text) through `temporal workflow signal`.
fn cli_signal(env: &Env, wid: &str, name: &str, input: &str) -> anyhow::Result<()> {
    temporal(
        env,
        &[
            "workflow", "signal", "-w", wid, "--name", name, "--input", input,
        ],
    )
    .map(|_| ())
}

/// Waits until the workflow's `rejected` list holds a rejection of `signal` whose reason contains
/// `want`.
async fn rejected_with(env: &Env, wid: &str, signal: &str, want: &str) -> anyhow::Result<()> {
    query_until(env, wid, "rejected", |v| {
        v["recent"].as_array().into_iter().flatten().any(|r| {
            r["signal"] == signal && r["reason"].as_str().is_some_and(|s| s.contains(want))
        })
    })
    .await
    .map(|_| ())
}

pub async fn hostile_signals_are_refused_with_reasons_and_no_task_fails(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(5).await?;
    let elsewhere = FakeApi::start(6).await?;
    let id = env.id("hostile");
    let wid = ops::workflow_id("User", &id);
    api.put(
        &format!("/users/{id}"),
        json!({"id": id, "name": "From the API"}),
    );
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "apiBase": api.base, "apiToken": "tok-1"}),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "From the API").await?;

    // Subscriptions the server would refuse to act on (empty subscriber, empty or foreign signal).
    cli_signal(
        env,
        &wid,
        "subscribe",
        r#"{"workflowId": "", "subscriptionId": "s"}"#,
    )?;
    rejected_with(env, &wid, "subscribe", "workflowId").await?;
    cli_signal(
        env,
        &wid,
        "subscribe",
        r#"{"workflowId": "w", "subscriptionId": "s", "signalName": ""}"#,
    )?;
    rejected_with(env, &wid, "subscribe", "signalName").await?;
    cli_signal(
        env,
        &wid,
        "subscribe",
        r#"{"workflowId": "w", "subscriptionId": "s", "signalName": "cancel"}"#,
    )?;
    rejected_with(env, &wid, "subscribe", "\"cancel\"").await?;

    // The token goes to the tree's API hosts only: not to the cloud metadata address, not to
    // another host (a real server on another loopback address, which must see no request).
    let before = ops::query(&env.client, &wid, "apiUrl").await?;
    cli_signal(
        env,
        &wid,
        "apiUrl",
        r#""http://169.254.169.254/latest/meta-data/""#,
    )?;
    rejected_with(env, &wid, "apiUrl", "169.254.169.254").await?;
    cli_signal(
        env,
        &wid,
        "apiUrl",
        &json!(format!("{}/steal", elsewhere.base)).to_string(),
    )?;
    rejected_with(env, &wid, "apiUrl", "127.0.0.6").await?;
    ensure_eq!(ops::query(&env.client, &wid, "apiUrl").await?, before);
    cli_signal(env, &wid, "refresh", "null")?;
    // A token a header cannot carry is refused, and never echoed.
    cli_signal(env, &wid, "apiToken", r#""tok\r\nX-Injected: 1""#)?;
    rejected_with(env, &wid, "apiToken", "visible ASCII").await?;
    let rejected = ops::query(&env.client, &wid, "rejected").await?;
    if rejected.to_string().contains("X-Injected") {
        bail!("a rejection echoes the token: {rejected}");
    }

    // The largest stamp there is does not freeze a field: a later plain update still wins.
    cli_signal(
        env,
        &wid,
        "update",
        &json!({"updates": {"User": {id.clone(): {"nick": "frozen"}}},
                "stamps": {"User": {id.clone(): {"nick": [u64::MAX, "x"]}}}})
        .to_string(),
    )?;
    query_until(env, &wid, "data", |v| v["nick"] == "frozen").await?;
    let answer = ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "nick": "later"}}),
    )
    .await?;
    if answer["version"].as_u64().is_none() {
        bail!("the update was not acknowledged: {answer}");
    }
    query_until(env, &wid, "data", |v| v["nick"] == "later").await?;

    if !elsewhere.all_requests().is_empty() {
        bail!("another host got requests: {:?}", elsewhere.all_requests());
    }
    if api.all_requests().iter().any(|(p, _)| p.contains("steal")) {
        bail!("the API got a request it should not have");
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );
    no_failed_task(env, &wid)?;
    Ok(())
}

pub async fn a_start_input_out_of_bounds_fails_the_start_with_its_reason(
    env: &Env,
) -> anyhow::Result<()> {
    for (tag, input, want) in [
        (
            "hostile-refresh",
            json!({"refreshInterval": 18446744073709551615u64}),
            "at most 366 days",
        ),
        (
            "hostile-sub",
            json!({"subscriptions": [{"workflowId": "w", "signalName": ""}]}),
            "signalName",
        ),
        (
            "hostile-url",
            json!({"apiUrl": "file:///etc/passwd"}),
            "http://",
        ),
    ] {
        let id = env.id(tag);
        let wid = ops::workflow_id("User", &id);
        let mut full = json!({"id": id, "entityName": "User"});
        for (k, v) in input.as_object().into_iter().flatten() {
            full[k] = v.clone();
        }
        ops::start(&env.client, &env.task_queue, &wid, full).await?;
        let failure = eventually(Duration::from_secs(30), || async {
            let d: Value = serde_json::from_str(&temporal(
                env,
                &["workflow", "describe", "-w", &wid, "--output", "json"],
            )?)?;
            let status = d["workflowExecutionInfo"]["status"].to_string();
            if !status.contains("FAILED") {
                bail!("{wid} is {status}");
            }
            temporal(env, &["workflow", "show", "-w", &wid, "--output", "json"])
        })
        .await?;
        if !failure.contains(want) {
            bail!("{wid}: the failure does not say `{want}`");
        }
        no_failed_task(env, &wid)?;
    }
    Ok(())
}

pub async fn a_client_cannot_detach_a_child_or_stop_its_syncing(env: &Env) -> anyhow::Result<()> {
    let id = env.id("hostile-tree");
    let wid = ops::workflow_id("User", &id);
    let lid = format!("{id}-l");
    let child = ops::workflow_id("Listing", &lid);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User",
               "data": {"id": id, "listings": [{"id": lid, "user": id, "title": "a"}]}}),
    )
    .await?;
    query_until(env, &child, "data", |v| v["title"] == "a").await?;
    // A forged report that the child ended.
    cli_signal(
        env,
        &wid,
        "childEnded",
        &json!({"workflowId": child, "status": "completed", "reason": "completed"}).to_string(),
    )?;
    rejected_with(env, &wid, "childEnded", "own run").await?;
    // A change naming the child as its origin still reaches the child.
    cli_signal(
        env,
        &wid,
        "update",
        &json!({"updates": {"Listing": {lid.clone(): {"title": "b"}}}, "changeOrigin": child})
            .to_string(),
    )?;
    query_until(env, &child, "data", |v| v["title"] == "b").await?;
    let kids = ops::query(&env.client, &wid, "children").await?;
    ensure_eq!(kids["counts"]["running"], json!(1));
    no_failed_task(env, &wid)?;
    no_failed_task(env, &child)?;
    Ok(())
}

/// Acknowledged updates sent while the workflow continues as new again and again: each is either
/// applied in the run that accepted it, or refused as the run hands over and sent again by the
/// client to the next run. None is lost.
pub async fn no_acknowledged_update_is_lost_around_continue_as_new(
    env: &Env,
) -> anyhow::Result<()> {
    let id = env.id("hostile-can");
    let wid = ops::workflow_id("User", &id);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}, "maxHistoryLength": 100}),
    )
    .await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    let n = 60;
    let sends = (0..n).map(|i| {
        let (client, wid, id) = (env.client.clone(), wid.clone(), id.clone());
        async move {
            ops::update(
                &client,
                &wid,
                "update",
                &json!({"data": {"id": id, format!("f{i:02}"): i}}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(sends).await;
    for (i, a) in answers.iter().enumerate() {
        if let Err(e) = a {
            bail!("update {i} failed: {e:#}");
        }
    }
    let data = query_until(env, &wid, "data", |v| {
        (0..n).all(|i| v[format!("f{i:02}")] == json!(i))
    })
    .await?;
    let runs = no_failed_task(env, &wid)?;
    if runs < 2 {
        bail!("the workflow never continued as new ({runs} run): {data}");
    }
    Ok(())
}
