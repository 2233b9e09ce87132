//! StatefulWorkflow driven through the client: start, strategies, deletes, bad input, status,
//! acknowledged updates, queries, memo, input errors.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_engine::Schema;
use stateful_tests::{Env, ensure_eq, eventually, query_until};
use stateful_workflows::markers::JsonWorkflow;
use temporalio_client::{WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowGetResultOptions};

fn schema() -> Schema {
    Schema::from_file(stateful_tests::root().join("tests/fixtures/schema.yaml")).unwrap()
}

fn normalized(entity: &str, data: &Value) -> Value {
    serde_json::to_value(schema().normalize(entity, data).unwrap()).unwrap()
}

/// Starts `User-{id}` with `input` merged over `{id, entityName: User}`; returns the workflow id.
pub async fn start_user(env: &Env, id: &str, extra: Value) -> anyhow::Result<String> {
    let wid = ops::workflow_id("User", id);
    let mut input = json!({"id": id, "entityName": "User"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            input[k] = v;
        }
    }
    ops::start(&env.client, &env.task_queue, &wid, input).await?;
    Ok(wid)
}

/// The memo, decoded.
pub async fn memo_of(env: &Env, wid: &str) -> anyhow::Result<Value> {
    let d = env
        .client
        .get_workflow_handle::<JsonWorkflow>(wid)
        .describe(WorkflowDescribeOptions::default())
        .await?;
    let mut out = serde_json::Map::new();
    if let Some(m) = d
        .raw()
        .workflow_execution_info
        .as_ref()
        .and_then(|i| i.memo.as_ref())
    {
        for (k, p) in &m.fields {
            out.insert(k.clone(), serde_json::from_slice(&p.data)?);
        }
    }
    Ok(Value::Object(out))
}

pub async fn result(env: &Env, wid: &str) -> anyhow::Result<Value> {
    env.client
        .get_workflow_handle::<JsonWorkflow>(wid)
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow!("{e:?}"))
}

pub async fn starts_with_data_and_with_state(env: &Env) -> anyhow::Result<()> {
    let id = env.id("start-data");
    let l1 = format!("{id}-l1");
    let data =
        json!({"id": id, "name": "Ann", "listings": [{"id": l1, "name": "Loft", "user": id}]});
    let wid = start_user(env, &id, json!({"data": data})).await?;
    let want = normalized("User", &data);
    query_until(env, &wid, "state", |v| *v == want).await?;
    ensure_eq!(ops::query(&env.client, &wid, "data").await?, data);

    let id2 = env.id("start-state");
    let l9 = format!("{id2}-l9");
    let state = json!({"User": {id2.clone(): {"id": id2, "listings": [l9]}}, "Listing": {l9.clone(): {"id": l9, "user": id2}}});
    let wid2 = start_user(env, &id2, json!({"state": state})).await?;
    query_until(env, &wid2, "state", |v| *v == state).await?;
    ensure_eq!(
        ops::query(&env.client, &wid2, "data").await?,
        json!({"id": id2, "listings": [{"id": l9, "user": id2}]})
    );
    Ok(())
}

pub async fn applies_every_strategy(env: &Env) -> anyhow::Result<()> {
    let id = env.id("strategies");
    let wid = start_user(
        env,
        &id,
        json!({"data": {"id": id, "name": "Initial", "tags": ["a"], "n": 1}}),
    )
    .await?;
    let user = |fields: Value| json!({"updates": {"User": {id.clone(): fields}}});
    let steps: Vec<(Value, &str)> = vec![
        (
            json!({"data": {"id": id, "age": 30}, "strategy": "$merge"}),
            "$merge",
        ),
        (
            {
                let mut u = user(json!({"tags": ["b", "c"]}));
                u["strategy"] = json!("$push");
                u
            },
            "$push",
        ),
        (
            {
                let mut u = user(json!({"tags": "z"}));
                u["strategy"] = json!("$unshift");
                u
            },
            "$unshift",
        ),
        (
            {
                let mut u = user(json!({"tags": [[1, 1, "x"]]}));
                u["strategy"] = json!("$splice");
                u
            },
            "$splice",
        ),
        (
            {
                let mut u = user(json!({"n": 0}));
                u["strategy"] = json!("$unset");
                u
            },
            "$unset",
        ),
        (
            {
                let mut u = user(json!({"name": "Set"}));
                u["strategy"] = json!("$set");
                u
            },
            "$set",
        ),
    ];
    for (msg, _) in &steps {
        ops::signal(&env.client, &wid, "update", Some(msg)).await?;
    }
    let want = json!({"id": id, "name": "Set", "tags": ["z", "x", "b", "c"], "age": 30});
    query_until(env, &wid, "data", |v| *v == want).await?;
    // $replace drops the fields it does not name.
    let mut rep = user(json!({"id": id, "newField": "Replaced"}));
    rep["strategy"] = json!("$replace");
    ops::signal(&env.client, &wid, "update", Some(&rep)).await?;
    query_until(env, &wid, "data", |v| {
        *v == json!({"id": id, "newField": "Replaced"})
    })
    .await?;
    Ok(())
}

pub async fn deletes_entities(env: &Env) -> anyhow::Result<()> {
    let id = env.id("deletes");
    let (l1, l2, l3) = (format!("{id}-l1"), format!("{id}-l2"), format!("{id}-l3"));
    let data = json!({"id": id, "listings": [{"id": l1}, {"id": l2}, {"id": l3}]});
    let wid = start_user(env, &id, json!({"data": data})).await?;
    ops::signal(
        &env.client,
        &wid,
        "delete",
        Some(&json!({"data": {"id": l1}, "entityName": "Listing"})),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "delete",
        Some(&json!({"deletions": {"Listing": {l2.clone(): {}}}})),
    )
    .await?;
    let st = query_until(env, &wid, "state", |v| {
        v["Listing"].as_object().is_some_and(|m| m.len() == 1)
    })
    .await?;
    ensure_eq!(st["Listing"], json!({l3.clone(): {"id": l3}}));
    Ok(())
}

pub async fn bad_signals_never_wedge_the_workflow(env: &Env) -> anyhow::Result<()> {
    let id = env.id("bad-input");
    let wid = start_user(env, &id, json!({"data": {"id": id, "name": "Initial"}})).await?;
    // Through the temporal CLI, exactly as an operator would.
    let cli = |args: Vec<String>| {
        let out = std::process::Command::new(&env.cli)
            .args([
                "workflow",
                "signal",
                "--address",
                &env.address,
                "--namespace",
                "default",
                "--workflow-id",
                &wid,
            ])
            .args(args)
            .output();
        async move {
            let out = out?;
            if !out.status.success() {
                bail!(
                    "temporal CLI failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            anyhow::Ok(())
        }
    };
    cli(vec!["--name".into(), "update".into()]).await?;
    cli(vec![
        "--name".into(),
        "update".into(),
        "--input".into(),
        "42".into(),
    ])
    .await?;
    cli(vec![
        "--name".into(),
        "update".into(),
        "--input".into(),
        r#"{"strategy":"$nope"}"#.into(),
    ])
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": 1}, "entityName": "Nope"})),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"updates": {"Listing": {"zz": {"a": 1}}}, "strategy": "$set"})),
    )
    .await?;
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": null, "entityName": "User"})),
    )
    .await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!(42))).await?;
    // A valid update after all that still applies.
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "name": "After"}})),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "After").await?;
    let rej = query_until(env, &wid, "rejected", |v| v["total"] == 7).await?;
    let reasons: Vec<String> = rej["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for want in [
        "no payload",
        "found a number",
        "unknown strategy `$nope`",
        "unknown entity `Nope`",
        "does not exist",
        "needs `data`",
        "JSON string",
    ] {
        if !reasons.iter().any(|r| r.contains(want)) {
            bail!("no rejection mentions `{want}`: {reasons:?}");
        }
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );
    Ok(())
}

pub async fn pause_resume_and_cancel(env: &Env) -> anyhow::Result<()> {
    let id = env.id("status");
    let wid = start_user(env, &id, json!({"data": {"id": id}, "status": "paused"})).await?;
    query_until(env, &wid, "status", |v| v == "paused").await?;
    ops::signal(&env.client, &wid, "resume", None).await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    ops::signal(&env.client, &wid, "pause", None).await?;
    query_until(env, &wid, "status", |v| v == "paused").await?;
    // Changes are still recorded while paused.
    ops::signal(
        &env.client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "x": 1}})),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["x"] == 1).await?;
    ops::signal(&env.client, &wid, "cancel", None).await?;
    ensure_eq!(result(env, &wid).await?, json!({"id": id, "x": 1}));

    // A Temporal cancellation request ends it CANCELED, as any Temporal workflow (a chrono-forge
    // parent restarts a child only on that outcome); its memo says `cancelled`.
    let id2 = env.id("tcancel");
    let wid2 = start_user(env, &id2, json!({"data": {"id": id2, "y": 2}})).await?;
    query_until(env, &wid2, "data", |v| v["y"] == 2).await?;
    env.client
        .get_workflow_handle::<JsonWorkflow>(&wid2)
        .cancel(WorkflowCancelOptions::default())
        .await?;
    let got = result(env, &wid2).await;
    ensure!(
        got.as_ref()
            .is_err_and(|e| e.to_string().contains("Cancel")),
        "a Temporal cancellation ends the workflow CANCELED, got {got:?}"
    );
    ensure_eq!(
        stateful_tests::history::status_of(env, &wid2).await?,
        stateful_tests::history::CANCELED
    );
    ensure_eq!(memo_of(env, &wid2).await?["status"], json!("cancelled"));
    // `status` (chrono-forge's property signal) completes it.
    let id3 = env.id("complete");
    let wid3 = start_user(env, &id3, json!({"data": {"id": id3}})).await?;
    ops::signal(&env.client, &wid3, "status", Some(&json!("completed"))).await?;
    ensure_eq!(result(env, &wid3).await?, json!({"id": id3}));
    Ok(())
}

pub async fn acknowledged_updates_answer_or_refuse(env: &Env) -> anyhow::Result<()> {
    let id = env.id("ack");
    let wid = start_user(env, &id, json!({"data": {"id": id}})).await?;
    let v0 = query_until(env, &wid, "version", |v| v["version"] == 1).await?;
    ensure_eq!(v0["entities"], json!(1));
    let r = ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "a": 1}}),
    )
    .await?;
    ensure_eq!(r, json!({"version": 2, "changed": 1}));
    // Visible at once: the update returns after its batch ran.
    ensure_eq!(ops::query(&env.client, &wid, "data").await?["a"], json!(1));
    for (bad, want) in [
        (
            json!({"updates": {"Listing": {"zz": {"a": 1}}}, "strategy": "$set"}),
            "does not exist",
        ),
        (json!(42), "must be a JSON object"),
        (
            json!({"strategy": "$nope", "data": {"id": id}}),
            "unknown strategy",
        ),
    ] {
        match ops::update(&env.client, &wid, "update", &bad).await {
            Ok(v) => bail!("{bad} was accepted: {v}"),
            Err(e) if format!("{e:#}").contains(want) => {}
            Err(e) => bail!("{bad}: expected `{want}`, got {e:#}"),
        }
    }
    let d = ops::update(
        &env.client,
        &wid,
        "delete",
        &json!({"deletions": {"User": {id.clone(): {}}}}),
    )
    .await?;
    ensure_eq!(d["version"], json!(3));
    // Its own entity deleted: the workflow completes.
    ensure_eq!(result(env, &wid).await?, Value::Null);
    ensure_eq!(
        ops::query(&env.client, &wid, "version")
            .await
            .map(|_| ())
            .ok(),
        Some(())
    );
    Ok(())
}

pub async fn queries_answer_and_never_show_the_token(env: &Env) -> anyhow::Result<()> {
    let id = env.id("queries");
    let wid = start_user(
        env,
        &id,
        json!({"data": {"id": id}, "apiToken": "tok-secret-1", "apiUrl": "http://127.0.0.1:1/users/1",
               "ancestorWorkflowIds": ["Org-o1"]}),
    )
    .await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    ensure_eq!(ops::query(&env.client, &wid, "id").await?, json!(id));
    ensure_eq!(
        ops::query(&env.client, &wid, "entityName").await?,
        json!("User")
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "apiUrl").await?,
        json!("http://127.0.0.1:1/users/1")
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "ancestorWorkflowIds").await?,
        json!(["Org-o1"])
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "subscriptions").await?,
        json!([])
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "pendingChanges").await?["count"],
        json!(0)
    );
    let tok = ops::query(&env.client, &wid, "apiToken").await?;
    ensure_eq!(
        tok["fingerprint"],
        json!(stateful_engine::fingerprint("tok-secret-1"))
    );
    ensure_eq!(tok["rotations"], json!(0));
    // Rotation: a new token counts; the same token or an empty one is ignored.
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("tok-secret-2"))).await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("tok-secret-2"))).await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!(""))).await?;
    ops::signal(
        &env.client,
        &wid,
        "apiUrl",
        Some(&json!("http://127.0.0.1:2/u")),
    )
    .await?;
    query_until(env, &wid, "apiUrl", |v| v == "http://127.0.0.1:2/u").await?;
    let tok = ops::query(&env.client, &wid, "apiToken").await?;
    ensure_eq!(
        tok["fingerprint"],
        json!(stateful_engine::fingerprint("tok-secret-2"))
    );
    ensure_eq!(tok["rotations"], json!(1));
    let v = ops::query(&env.client, &wid, "version").await?;
    if !v["checksum"].as_str().unwrap_or("").starts_with("sha256:") {
        bail!("no checksum in {v}");
    }
    match ops::query(&env.client, &wid, "nope").await {
        Ok(v) => bail!("an unknown query answered {v}"),
        Err(e) if format!("{e:#}").to_lowercase().contains("query") => {}
        Err(e) => bail!("unexpected error {e:#}"),
    }
    // No query, and not the memo, holds a token.
    let mut all = String::new();
    for q in [
        "id",
        "entityName",
        "state",
        "data",
        "status",
        "apiUrl",
        "apiToken",
        "version",
        "pendingChanges",
        "rejected",
        "recentChanges",
        "subscriptions",
        "ancestorWorkflowIds",
        "schema",
    ] {
        all.push_str(&ops::query(&env.client, &wid, q).await?.to_string());
    }
    let memo = memo_of(env, &wid).await?;
    all.push_str(&memo.to_string());
    if all.contains("tok-secret") {
        bail!("a token leaked into a query or the memo");
    }
    ensure_eq!(
        memo,
        json!({"entityName": "User", "id": id, "status": "running"})
    );
    Ok(())
}

pub async fn bad_start_input_fails_at_once_with_a_reason(env: &Env) -> anyhow::Result<()> {
    for (n, (input, want)) in [
        (json!({"entityName": "User"}), "needs `id`"),
        (json!({"id": "x"}), "needs `entityName`"),
        (json!({"id": "x", "entityName": "Nope"}), "unknown entity `Nope`"),
        (json!({"id": "x", "entityName": "User", "data": {"id": "x", "listings": [{"name": "no id"}]}}), "missing id attribute"),
        (json!(42), "must be a JSON object"),
    ]
    .into_iter()
    .enumerate()
    {
        let wid = env.id(&format!("User-badinput{n}"));
        ops::start(&env.client, &env.task_queue, &wid, input.clone()).await?;
        let err = eventually(Duration::from_secs(30), || async {
            match result(env, &wid).await {
                Ok(v) => Ok(Err(anyhow!("{input} completed with {v}"))),
                Err(e) => Ok(Ok(e.to_string())),
            }
        })
        .await??;
        if !err.contains(want) {
            bail!("{input}: expected a failure mentioning `{want}`, got {err}");
        }
    }
    Ok(())
}
