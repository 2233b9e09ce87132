//! Durable state operations: checkpoints and validation.

use anyhow::bail;
use serde_json::{Value, json};
use stateful_tests::{Env, bin, ensure_eq, query_until};
use worker::ops;

pub async fn a_checkpoint_hands_the_state_to_a_new_run_with_its_checksum(
    env: &Env,
) -> anyhow::Result<()> {
    let id = env.id("checkpoint");
    let wid = ops::workflow_id("User", &id);
    let data =
        json!({"id": id, "name": "Ann", "listings": [{"id": format!("{id}-l1"), "user": id}]});
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": data}),
    )
    .await?;
    let before = query_until(env, &wid, "version", |v| v["version"].as_u64() >= Some(1)).await?;
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    let cps = query_until(env, &wid, "checkpoints", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await?;
    let cp = &cps[0];
    ensure_eq!(cp["checksum"], before["checksum"]);
    ensure_eq!(cp["version"], before["version"]);
    ensure_eq!(cp["reason"], json!("checkpoint"));
    let after = ops::query(&env.client, &wid, "version").await?;
    ensure_eq!(after["runs"], json!(2));
    ensure_eq!(after["checksum"], before["checksum"]);
    ensure_eq!(ops::query(&env.client, &wid, "data").await?, data);
    let memo = crate::workflow::memo_of(env, &wid).await?;
    let want = format!(
        "v{} {}",
        cp["version"],
        cp["checksum"].as_str().unwrap_or_default()
    );
    ensure_eq!(memo["checkpoint"], json!(want));
    let v = ops::query(&env.client, &wid, "validate").await?;
    ensure_eq!(v["ok"], json!(true));
    // The child kept running through the checkpoint: still one, same run.
    ensure_eq!(v["children"], json!(1));
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}

pub async fn starter_validate_checks_a_whole_tree(env: &Env) -> anyhow::Result<()> {
    let id = env.id("validate");
    let wid = ops::workflow_id("User", &id);
    let ls: Vec<String> = (0..2).map(|i| format!("{id}-l{i}")).collect();
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id, "listings": ls.iter().map(|l| json!({"id": l, "user": id, "photos": [{"id": format!("{l}-p"), "listing": l}]})).collect::<Vec<_>>()}}),
    )
    .await?;
    for l in &ls {
        query_until(env, &format!("Photo-{l}-p"), "status", |v| v == "running").await?;
    }
    let out = tokio::process::Command::new(bin("starter")?)
        .args([
            "--address",
            &env.address,
            "--namespace",
            "default",
            "--json",
        ])
        .args(["validate", &wid, "--tree"])
        .output()
        .await?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    if !out.status.success() || report["ok"] != json!(true) {
        bail!(
            "validate failed: {report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure_eq!(report["workflows"].as_array().map(Vec::len), Some(5));
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}
