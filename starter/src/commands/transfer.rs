//! `export` and `import` (the work is in [`crate::transfer`]).

use std::time::Duration;

use anyhow::Context;

use super::{Ctx, read_json, read_token};
use crate::cli::{ExportArgs, ImportArgs};

/// `starter export`.
pub async fn export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<()> {
    let v = crate::transfer::export(
        &ctx.client,
        &ctx.codec,
        &a.workflow_id,
        a.with_tokens,
        !ctx.json,
    )
    .await?;
    let text = serde_json::to_string_pretty(&v)?;
    match a.output {
        Some(p) => {
            std::fs::write(&p, text + "\n")
                .with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!(
                "exported {} workflows to {}",
                v["workflows"].as_array().map_or(0, Vec::len),
                p.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// `starter import`.
pub async fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let export = read_json(
        &if a.file == "-" {
            a.file
        } else {
            format!("@{}", a.file)
        },
        "the export",
    )?;
    let token = read_token(a.token_env.as_deref(), false)?;
    let report = crate::transfer::import(
        &ctx.client,
        &ctx.task_queue,
        &export,
        token,
        Duration::from_secs(a.timeout_secs),
        !ctx.json,
    )
    .await?;
    ctx.print(&report, || {
        format!(
            "imported {} workflows under {} ({} needed a merge beyond their parent's slice)",
            report["workflows"], report["root"], report["merged"]
        )
    });
    Ok(())
}
