//! `start`, `signal`, `query`, `update` and `upsert`: one workflow at a time.

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;

use super::{Ctx, read_json, read_token};
use crate::cli::{QueryArgs, SignalArgs, StartArgs, UpdateArgs, UpsertArgs};

/// The signals `starter signal` sends.
const SIGNALS: &[&str] = &[
    "update",
    "delete",
    "state",
    "apiToken",
    "apiUrl",
    "refresh",
    "checkpoint",
    "pause",
    "resume",
    "cancel",
    "status",
];

/// `starter start`.
pub async fn start(ctx: &Ctx, a: StartArgs) -> anyhow::Result<()> {
    let (wid, input) = start_input(a)?;
    let run_id = ops::start(&ctx.client, &ctx.task_queue, &wid, input).await?;
    ctx.print(&json!({"workflowId": wid, "runId": run_id}), || {
        format!(
            "started {wid} (run {run_id}) on task queue {}",
            ctx.task_queue
        )
    });
    Ok(())
}

/// `starter upsert`: update-with-start. A refused change is an error with the workflow's reason.
pub async fn upsert(ctx: &Ctx, a: UpsertArgs) -> anyhow::Result<()> {
    let payload = read_json(&a.payload, "the payload")?;
    let (wid, input) = start_input(a.start)?;
    let v = ops::update_with_start(
        &ctx.client,
        &ctx.task_queue,
        &wid,
        &input,
        "update",
        &payload,
    )
    .await?;
    ctx.print(
        &json!({"workflowId": wid, "version": v["version"], "changed": v["changed"]}),
        || {
            format!(
                "applied to {wid}: version {} ({} entities changed)",
                v["version"], v["changed"]
            )
        },
    );
    Ok(())
}

/// The workflow id and start input the `start` flags describe.
fn start_input(a: StartArgs) -> anyhow::Result<(String, Value)> {
    let wid = a
        .workflow_id
        .unwrap_or_else(|| ops::workflow_id(&a.entity, &a.id));
    let mut input = json!({"id": a.id, "entityName": a.entity});
    if let Some(d) = a.data {
        input["data"] = read_json(&d, "--data")?;
    }
    if let Some(s) = a.state {
        input["state"] = read_json(&s, "--state")?;
    }
    if let Some(t) = read_token(a.token_env.as_deref(), a.token_stdin)? {
        input["apiToken"] = json!(t.expose());
    }
    if let Some(u) = a.api_url {
        input["apiUrl"] = json!(u);
    }
    if let Some(b) = a.api_base {
        input["apiBase"] = json!(b);
    }
    if !a.api_hosts.is_empty() {
        let hosts = json!(a.api_hosts);
        stateful_core::valid::hosts(&hosts).map_err(|e| anyhow!("--api-host: {e}"))?;
        input["apiHosts"] = hosts;
    }
    if let Some(r) = a.refresh_interval {
        input["refreshInterval"] = json!(r);
    }
    if let Some(p) = a.schema {
        let s = stateful_engine::Schema::from_file(&p).map_err(|e| anyhow!("{e}"))?;
        input["schema"] = s.to_json();
    }
    if a.paused {
        input["status"] = json!("paused");
    }
    if let Some(l) = a.limits {
        let v = read_json(&l, "--limits")?;
        stateful_core::Limits::parse(Some(&v)).map_err(|e| anyhow!("--limits: {e}"))?;
        input["limits"] = v;
    }
    Ok((wid, input))
}

/// `starter signal`.
pub async fn signal(ctx: &Ctx, a: SignalArgs) -> anyhow::Result<()> {
    let SignalArgs {
        workflow_id,
        name,
        payload,
        token_env,
        token_stdin,
    } = a;
    if !SIGNALS.contains(&name.as_str()) {
        bail!("unknown signal `{name}` (one of: {})", SIGNALS.join(", "));
    }
    let value = match name.as_str() {
        "apiToken" => {
            if payload.is_some() {
                bail!("pass the token with --token-env VAR or --token-stdin, never as an argument");
            }
            let t = read_token(token_env.as_deref(), token_stdin)?
                .ok_or_else(|| anyhow!("apiToken needs --token-env VAR or --token-stdin"))?;
            Some(json!(t.expose()))
        }
        "pause" | "resume" | "cancel" | "refresh" | "checkpoint" => None,
        "apiUrl" | "status" => Some(match payload {
            Some(p) => serde_json::from_str(&p).unwrap_or(Value::String(p)),
            None => bail!("`{name}` needs a value"),
        }),
        _ => Some(read_json(
            &payload
                .ok_or_else(|| anyhow!("`{name}` needs a JSON payload (inline, @FILE or -)"))?,
            "the payload",
        )?),
    };
    ops::signal(&ctx.client, &workflow_id, &name, value.as_ref()).await?;
    ctx.print(
        &json!({"workflowId": workflow_id, "signal": name, "sent": true}),
        || format!("sent `{name}` to {workflow_id}"),
    );
    Ok(())
}

/// `starter query`.
pub async fn query(ctx: &Ctx, a: QueryArgs) -> anyhow::Result<()> {
    let v = ops::query(&ctx.client, &a.workflow_id, &a.name).await?;
    ctx.print(&v, || serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

/// `starter update`.
pub async fn update(ctx: &Ctx, a: UpdateArgs) -> anyhow::Result<()> {
    let payload = read_json(&a.payload, "the payload")?;
    let v = ops::update(&ctx.client, &a.workflow_id, &a.name, &payload).await?;
    ctx.print(&v, || {
        format!(
            "applied to {}: version {} ({} entities changed)",
            a.workflow_id, v["version"], v["changed"]
        )
    });
    Ok(())
}
