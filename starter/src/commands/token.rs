//! `token rotate`: send a new token to the root of a tree and wait until the whole tree uses it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::json;
use stateful_client::ops::{self, TokenState};

use super::{Ctx, read_token};
use crate::cli::RotateArgs;

/// `starter token rotate`.
pub async fn rotate(ctx: &Ctx, a: RotateArgs) -> anyhow::Result<()> {
    let workflow_id = a.workflow_id;
    let token = read_token(a.token_env.as_deref(), a.token_stdin)?
        .ok_or_else(|| anyhow!("the new token: give --token-env VAR or --token-stdin"))?;
    let want = token.fingerprint();
    ops::signal(
        &ctx.client,
        &workflow_id,
        "apiToken",
        Some(&json!(token.expose())),
    )
    .await?;
    drop(token);
    let t0 = Instant::now();
    let states = wait_rotated(ctx, &workflow_id, &want, t0, a.timeout_secs).await?;
    let loaded: Vec<_> = states.iter().filter(|s| s.has_api).collect();
    let mut by_state = BTreeMap::<&str, usize>::new();
    for s in &loaded {
        *by_state.entry(s.load_state.as_str()).or_default() += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    ctx.print(
        &json!({"rootWorkflowId": workflow_id, "fingerprint": want, "workflows": states.len(), "loads": by_state, "seconds": secs}),
        || {
            let loads = by_state
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "\n{} workflows use token {want} after {secs:.1} s; {} reloaded from their API ({})",
                states.len(),
                loaded.len(),
                if loads.is_empty() {
                    "none".into()
                } else {
                    loads
                }
            )
        },
    );
    if let Some(bad) = loaded
        .iter()
        .find(|s| s.load_state == "unauthorized" || s.load_state == "failed")
    {
        bail!(
            "{} (and maybe others) could not reload with the new token: {}; see its `api` query",
            bad.workflow_id,
            bad.load_state
        );
    }
    Ok(())
}

/// Polls the tree under `root` until every workflow reports the token of fingerprint `want` and none
/// is reloading; fails after `timeout_secs` (counted from `t0`) naming the late ones.
async fn wait_rotated(
    ctx: &Ctx,
    root: &str,
    want: &str,
    t0: Instant,
    timeout_secs: u64,
) -> anyhow::Result<Vec<TokenState>> {
    let deadline = t0 + Duration::from_secs(timeout_secs);
    let done = |states: &[TokenState]| {
        states
            .iter()
            .all(|s| s.fingerprint.as_deref() == Some(want) && !(s.has_api && s.loading))
    };
    loop {
        // While visibility shows work left, it is what is polled (one listing, every workflow
        // queried at once); the walk of the tree (level by level, authoritative: adopted
        // workflows, children too new for visibility) decides when it looks done, or when
        // visibility cannot answer.
        let states = match ops::token_states_listed(&ctx.client, root).await {
            Some(listed) if !done(&listed) => listed,
            _ => ops::token_states(&ctx.client, root).await,
        };
        let rotated = states
            .iter()
            .filter(|s| s.fingerprint.as_deref() == Some(want))
            .count();
        let reloading = states.iter().filter(|s| s.has_api && s.loading).count();
        if !ctx.json {
            eprint!(
                "\rrotating to {want}: {rotated}/{} workflows use it, {reloading} reloading   ",
                states.len()
            );
        }
        if rotated == states.len() && reloading == 0 {
            return Ok(states);
        }
        if Instant::now() > deadline {
            let late: Vec<_> = states
                .iter()
                .filter(|s| s.fingerprint.as_deref() != Some(want) || s.loading)
                .map(|s| match &s.error {
                    Some(e) => format!("{} ({e})", s.workflow_id),
                    None => s.workflow_id.clone(),
                })
                .collect();
            bail!(
                "after {timeout_secs} s, {} workflows do not report the new token or are still reloading: {}",
                late.len(),
                late.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
