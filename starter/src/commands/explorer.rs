//! `explorer`: the web explorer of trees, for people who do not run a worker.

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::json;

use super::Ctx;
use crate::cli::ExplorerArgs;

/// `starter explorer`: serves until Ctrl-C.
pub async fn explorer(ctx: &Ctx, a: ExplorerArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = a
        .listen
        .parse()
        .with_context(|| format!("--listen `{}` is not host:port", a.listen))?;
    let token = stateful_explorer::token_from_env(&addr, &a.token_env, "--listen")?;
    let explorer = stateful_explorer::Explorer::new(
        ctx.client.clone(),
        stateful_explorer::Config {
            namespace: ctx.namespace.clone(),
            temporal_ui_url: a.temporal_ui_url,
            auth: token.as_deref().map(stateful_explorer::token_check),
            loopback: stateful_explorer::is_loopback(&addr),
        },
    )?;
    let bound = stateful_explorer::serve(explorer.router(), addr).await?;
    let url = stateful_explorer::url(&bound);
    ctx.print(
        &json!({"url": url, "token": token.is_some()}),
        || {
            if token.is_some() {
                format!(
                    "explorer on {url}/ (log in once with {url}/login?token=<the token in ${}>); Ctrl-C stops it",
                    a.token_env
                )
            } else {
                format!("explorer on {url}/; Ctrl-C stops it")
            }
        },
    );
    if a.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener).arg(&url).spawn() {
            eprintln!("cannot open a browser ({opener}: {e}); open {url}");
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
