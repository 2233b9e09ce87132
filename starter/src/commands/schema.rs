//! `schema apply`: send a new schema to the root of a tree (an acknowledged update: refused with
//! the reasons, or applied and handed down the tree) and wait until every workflow runs it.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::json;
use stateful_client::ops;
use stateful_engine::Schema;

use super::Ctx;
use crate::cli::SchemaApplyArgs;

/// `starter schema apply`.
pub async fn apply(ctx: &Ctx, a: SchemaApplyArgs) -> anyhow::Result<()> {
    let root = a.workflow_id;
    let schema = Schema::from_file(&a.file).map_err(|e| anyhow!("{e}"))?;
    let want = schema.checksum();
    let answer = match ops::update(&ctx.client, &root, "schema", &schema.to_json()).await {
        Ok(v) => v,
        Err(e) => match e.downcast_ref::<ops::Refused>() {
            Some(r) => bail!("{root} refused the schema: {}", r.0),
            None => return Err(e),
        },
    };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.timeout_secs);
    loop {
        let answers = ops::walk(&ctx.client, &root, "schema").await;
        let runs = |r: &anyhow::Result<serde_json::Value>| {
            r.as_ref()
                .is_ok_and(|v| v["checksum"].as_str() == Some(&want))
        };
        let done = answers.iter().filter(|(_, r)| runs(r)).count();
        if !ctx.json {
            eprint!(
                "\rapplying schema {want}: {done}/{} workflows run it   ",
                answers.len()
            );
        }
        if done == answers.len() {
            let secs = t0.elapsed().as_secs_f64();
            ctx.print(
                &json!({"rootWorkflowId": root, "checksum": want, "version": answer["version"], "workflows": answers.len(), "seconds": secs}),
                || {
                    format!(
                        "\n{} workflows run schema {want} (version {}) after {secs:.1} s",
                        answers.len(),
                        answer["version"]
                    )
                },
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut late = Vec::new();
            for (wid, r) in answers.iter().filter(|(_, r)| !runs(r)) {
                let why = match r {
                    Err(e) => format!("{e:#}"),
                    // A workflow below the root that refused the schema says why.
                    Ok(v) => ops::query(&ctx.client, wid, "rejected")
                        .await
                        .ok()
                        .and_then(|rj| {
                            rj["recent"].as_array()?.iter().rev().find_map(|x| {
                                (x["signal"] == "schema")
                                    .then(|| x["reason"].as_str().map(str::to_string))?
                            })
                        })
                        .unwrap_or_else(|| format!("runs {}", v["checksum"])),
                };
                late.push(format!("{wid} ({why})"));
            }
            bail!(
                "after {} s, {} workflows do not run the new schema: {}",
                a.timeout_secs,
                late.len(),
                late.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
