//! `starter export` and `starter import`: move a whole tree to another namespace or cluster.
//!
//! The export holds, per workflow of the tree (root first): entity, id, status, normalized state,
//! API settings, schema, version and checksum; tokens only with `--with-tokens` (read from the root's
//! history: its start input and `apiToken` signals, decrypted and decompressed by the codec). The
//! import starts the root with its state and settings (its children are then started by it, with their
//! slices), waits until every exported workflow runs, merges into each one whatever its export holds
//! beyond what it got, and checks that every workflow reaches the exported checksum.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_core::Secret;
use temporalio_client::{Client, UntypedWorkflow, WorkflowFetchHistoryOptions};

/// The export format's name and version.
pub const FORMAT: &str = "stateful-export/1";

/// Exports the tree under `root`.
pub async fn export(
    client: &Client,
    codec: &stateful_client::codec::Codec,
    root: &str,
    with_tokens: bool,
    progress: bool,
) -> anyhow::Result<Value> {
    let nodes = ops::walk(client, root, "version").await;
    let mut workflows = Vec::new();
    for (i, (wid, version)) in nodes.into_iter().enumerate() {
        if progress {
            eprint!("\rexporting workflow {}: {wid}   ", i + 1);
        }
        let version = version.with_context(|| format!("cannot export {wid}"))?;
        let q = |name: &'static str| {
            let wid = wid.clone();
            async move { ops::query(client, &wid, name).await }
        };
        let api = q("api").await?;
        let mut w = json!({
            "workflowId": wid,
            "entityName": q("entityName").await?,
            "id": q("id").await?,
            "status": q("status").await?,
            "state": q("state").await?,
            "schema": schema_of(q("schema").await?),
            "version": version["version"],
            "checksum": version["checksum"],
            "apiBase": api["apiBase"],
            "apiUrl": api["explicitUrl"],
            "refreshInterval": api["refreshInterval"],
            "tokenFingerprint": api["token"]["fingerprint"],
        });
        if with_tokens && i == 0 {
            w["apiToken"] = json!(latest_token(client, codec, &wid).await?);
        }
        workflows.push(w);
    }
    if progress {
        eprintln!();
    }
    Ok(json!({
        "format": FORMAT,
        "root": root,
        "exportedAt": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "withTokens": with_tokens,
        "workflows": workflows,
    }))
}

/// The root's current token, from its run's history: the start input's `apiToken`, then every
/// non-empty `apiToken` signal.
async fn latest_token(
    client: &Client,
    codec: &stateful_client::codec::Codec,
    wid: &str,
) -> anyhow::Result<Option<String>> {
    let raw = client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .map_err(|e| anyhow!("cannot read the history of {wid}: {e}"))?;
    let h: Value = serde_json::from_slice(&raw)?;
    let decode = |payloads: &Value| -> Option<Value> {
        let p = payloads.get("payloads")?.get(0)?;
        let p = stateful_client::codec::payload_from_json(p).ok()?;
        let p = codec.decode_payload(p).ok()?;
        serde_json::from_slice(&p.data).ok()
    };
    let mut token = None;
    // The SDK's JSON form: `{"events": [{"attributes": {"WorkflowExecutionStartedEventAttributes": ...}}]}`.
    for ev in h["events"].as_array().into_iter().flatten() {
        let ev = &ev["attributes"];
        if let Some(a) = ev.get("WorkflowExecutionStartedEventAttributes")
            && let Some(t) =
                decode(&a["input"]).and_then(|v| v["apiToken"].as_str().map(str::to_string))
            && !t.is_empty()
        {
            token = Some(t);
        }
        if let Some(a) = ev.get("WorkflowExecutionSignaledEventAttributes")
            && a["signal_name"] == "apiToken"
            && let Some(Value::String(t)) = decode(&a["input"])
            && !t.is_empty()
        {
            token = Some(t);
        }
    }
    Ok(token)
}

/// Imports an export: starts its root on `task_queue`, and brings every workflow to its exported
/// state. Returns a report.
pub async fn import(
    client: &Client,
    task_queue: &str,
    export: &Value,
    token: Option<Secret>,
    timeout: Duration,
    progress: bool,
) -> anyhow::Result<Value> {
    if export["format"] != FORMAT {
        bail!(
            "not a `{FORMAT}` export (its `format` is {})",
            export["format"]
        );
    }
    let workflows = export["workflows"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| anyhow!("the export holds no workflows"))?;
    let root = &workflows[0];
    let root_id = root["workflowId"]
        .as_str()
        .ok_or_else(|| anyhow!("the export's first workflow has no workflowId"))?;
    let mut input = json!({
        "id": root["id"],
        "entityName": root["entityName"],
        "state": root["state"],
        "schema": root["schema"],
    });
    if root["status"] == "paused" {
        input["status"] = json!("paused");
    }
    for k in ["apiBase", "apiUrl", "refreshInterval"] {
        if !root[k].is_null() {
            input[k] = root[k].clone();
        }
    }
    if let Some(t) = token.or_else(|| root["apiToken"].as_str().map(Secret::new)) {
        input["apiToken"] = json!(t.expose());
    }
    ops::start(client, task_queue, root_id, input).await?;
    // Every exported workflow runs, and holds at least what it held.
    let want: BTreeMap<&str, &Value> = workflows
        .iter()
        .filter_map(|w| Some((w["workflowId"].as_str()?, w)))
        .collect();
    let merged = converge(client, root_id, &want, timeout, progress).await?;
    Ok(json!({"root": root_id, "workflows": want.len(), "merged": merged}))
}

/// Waits until every workflow of `want` is at its exported checksum, merging into each child (once)
/// what its export holds beyond the slice its parent started it with; returns how many needed that.
async fn converge(
    client: &Client,
    root_id: &str,
    want: &BTreeMap<&str, &Value>,
    timeout: Duration,
    progress: bool,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut merged = std::collections::BTreeSet::new();
    loop {
        let mut matching = 0;
        for (wid, w) in want {
            let Ok(v) = ops::query(client, wid, "version").await else {
                continue;
            };
            if v["checksum"] == w["checksum"] {
                matching += 1;
                continue;
            }
            // Started by its parent with its slice: merge whatever else its export holds, once.
            if *wid != root_id && merged.insert(wid.to_string()) {
                ops::signal(
                    client,
                    wid,
                    "update",
                    Some(&json!({"updates": w["state"], "strategy": "$merge"})),
                )
                .await?;
            }
        }
        if progress {
            eprint!(
                "\rimporting {root_id}: {matching}/{} workflows at their exported state   ",
                want.len()
            );
        }
        if matching == want.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "after {timeout:?}, {} of {} workflows are not at their exported state (see `starter validate {root_id} --tree`)",
                want.len() - matching,
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if progress {
        eprintln!();
    }
    Ok(merged.len())
}

/// The schema in a `schema` query's answer: `{checksum, version, ..., schema}`, or, from a worker
/// of an earlier release, the schema itself (a checksum is a string, which no entity's definition
/// is).
fn schema_of(answer: serde_json::Value) -> serde_json::Value {
    if answer["checksum"].is_string() && answer["schema"].is_object() {
        return answer["schema"].clone();
    }
    answer
}
