//! `tree` (show or cancel a hierarchy) and `validate`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use temporalio_client::{Client, UntypedWorkflow, WorkflowCancelOptions, WorkflowDescribeOptions};

use super::Ctx;
use crate::cli::{TreeArgs, ValidateArgs};

/// `starter tree`.
pub async fn tree(ctx: &Ctx, a: TreeArgs) -> anyhow::Result<()> {
    let tree = collect_tree(&ctx.client, &a.workflow_id).await;
    if a.cancel {
        cancel(ctx, &a.workflow_id, &tree).await
    } else {
        ctx.print(&tree, || render(&tree, 0));
        Ok(())
    }
}

/// `starter tree --cancel`: cancels the root and waits until every running workflow of `tree` ended.
async fn cancel(ctx: &Ctx, workflow_id: &str, tree: &Value) -> anyhow::Result<()> {
    let ids = all_ids(tree);
    ctx.client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .cancel(WorkflowCancelOptions::default())
        .await
        .map_err(|e| anyhow!("cannot cancel {workflow_id}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut running = 0;
        for id in &ids {
            if is_running(&ctx.client, id).await {
                running += 1;
            }
        }
        if !ctx.json {
            eprint!(
                "\rcancelling {} workflows: {} still running   ",
                ids.len(),
                running
            );
        }
        if running == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{running} workflows of the tree still run after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ctx.print(&json!({"cancelled": ids}), || {
        format!("\ncancelled {} workflows", ids.len())
    });
    Ok(())
}

/// `starter validate`: exit code 1 when a check finds an error.
pub async fn validate(ctx: &Ctx, a: ValidateArgs) -> anyhow::Result<()> {
    let results = if a.tree {
        ops::walk(&ctx.client, &a.workflow_id, "validate").await
    } else {
        vec![(
            a.workflow_id.clone(),
            ops::query(&ctx.client, &a.workflow_id, "validate").await,
        )]
    };
    let mut report = Vec::new();
    let mut errors = 0;
    for (wid, r) in results {
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                json!({"ok": false, "findings": [{"severity": "error", "kind": "query", "message": format!("{e:#}")}]})
            }
        };
        if v["ok"] != json!(true) {
            errors += 1;
        }
        report.push(json!({"workflowId": wid, "result": v}));
    }
    ctx.print(&json!({"ok": errors == 0, "workflows": report}), || {
        render_validation(&report, errors)
    });
    if errors > 0 {
        bail!("{errors} workflows failed validation");
    }
    Ok(())
}

/// The text form of a validation report.
fn render_validation(report: &[Value], errors: usize) -> String {
    let mut lines = Vec::new();
    for r in report {
        let v = &r["result"];
        lines.push(format!(
            "{} {}: v{} {} ({} entities)",
            if v["ok"] == json!(true) {
                "ok  "
            } else {
                "FAIL"
            },
            r["workflowId"].as_str().unwrap_or_default(),
            v["version"],
            v["checksum"].as_str().unwrap_or("-"),
            v["entities"]
        ));
        for f in v["findings"].as_array().into_iter().flatten() {
            lines.push(format!(
                "       {} {}: {}",
                f["severity"].as_str().unwrap_or_default(),
                f["kind"].as_str().unwrap_or_default(),
                f["message"].as_str().unwrap_or_default()
            ));
        }
    }
    lines.push(format!(
        "{} workflows checked, {errors} with errors",
        report.len()
    ));
    lines.join("\n")
}

/// The tree under `wid`, from each workflow's queries (breadth-first; a workflow that cannot be
/// queried shows why).
async fn collect_tree(client: &Client, wid: &str) -> Value {
    let mut node = json!({"workflowId": wid});
    for (q, key) in [
        ("entityName", "entityName"),
        ("id", "id"),
        ("status", "status"),
        ("version", "version"),
        ("apiToken", "apiToken"),
    ] {
        match ops::query(client, wid, q).await {
            Ok(v) => {
                node[key] = match key {
                    "version" => v["version"].clone(),
                    "apiToken" => v["fingerprint"].clone(),
                    _ => v,
                }
            }
            Err(e) => {
                node["error"] = json!(format!("{e:#}"));
                return node;
            }
        }
    }
    // The Worker Deployment version its run is on (describe's versioning info).
    match stateful_client::versioning::run_version(client, wid).await {
        Ok(v) => {
            node["deploymentVersion"] = json!(v.version);
            node["versioningBehavior"] = json!(v.behavior);
            if let Some(t) = v.transition {
                node["versionTransition"] = json!(t);
            }
        }
        Err(e) => node["deploymentVersion"] = json!(format!("unknown ({e:#})")),
    }
    let mut children = Vec::new();
    if let Ok(kids) = ops::query(client, wid, "children").await {
        for c in kids["children"].as_array().cloned().unwrap_or_default() {
            let cw = c["workflowId"].as_str().unwrap_or_default().to_string();
            if c["status"] == "running" {
                children.push(Box::pin(collect_tree(client, &cw)).await);
            } else {
                children.push(json!({"workflowId": cw, "entityName": c["entityName"], "id": c["id"], "status": c["status"], "ended": c["ended"]}));
            }
        }
    }
    node["children"] = json!(children);
    node
}

fn all_ids(tree: &Value) -> Vec<String> {
    let mut out = vec![tree["workflowId"].as_str().unwrap_or_default().to_string()];
    for c in tree["children"].as_array().into_iter().flatten() {
        if c["status"] == "running" {
            out.extend(all_ids(c));
        }
    }
    out
}

async fn is_running(client: &Client, wid: &str) -> bool {
    client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .describe(WorkflowDescribeOptions::default())
        .await
        .ok()
        .and_then(|d| {
            d.raw()
                .workflow_execution_info
                .as_ref()
                .map(|i| i.status == 1)
        })
        .unwrap_or(false)
}

fn render(node: &Value, depth: usize) -> String {
    let s = |k: &str| {
        node[k]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| node[k].to_string())
    };
    let mut line = format!(
        "{}{} {} [{}]",
        "  ".repeat(depth),
        s("entityName"),
        s("id"),
        s("status")
    );
    if node.get("version").is_some_and(|v| !v.is_null()) {
        line.push_str(&format!(" v{}", node["version"]));
    }
    if let Some(f) = node.get("apiToken").and_then(|v| v.as_str()) {
        line.push_str(&format!(" token {f}"));
    }
    if let Some(d) = node.get("deploymentVersion").and_then(|v| v.as_str()) {
        match node.get("versioningBehavior").and_then(|v| v.as_str()) {
            Some(b) if b != "unversioned" => line.push_str(&format!(" on {d} ({b})")),
            _ => line.push_str(&format!(" on {d}")),
        }
        if let Some(t) = node.get("versionTransition").and_then(|v| v.as_str()) {
            line.push_str(&format!(" -> {t}"));
        }
    }
    line.push_str(&format!("  ({})", s("workflowId")));
    if let Some(e) = node.get("error").and_then(|v| v.as_str()) {
        line.push_str(&format!("  unreachable: {e}"));
    }
    if let Some(e) = node.get("ended").and_then(|v| v.as_str()) {
        line.push_str(&format!("  ended: {e}"));
    }
    let mut out = vec![line];
    for c in node["children"].as_array().into_iter().flatten() {
        out.push(render(c, depth + 1));
    }
    out.join("\n")
}
