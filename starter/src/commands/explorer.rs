//! `explorer`: the web explorer of trees, for people who do not run a worker.

use anyhow::Context;
use serde_json::json;

use super::Ctx;
use crate::cli::ExplorerArgs;

/// `starter explorer`: serves until Ctrl-C.
pub async fn explorer(ctx: &Ctx, a: ExplorerArgs) -> anyhow::Result<()> {
    // A name (`localhost:8089`) is resolved to its first address.
    let addr = stateful_explorer::resolve(&a.listen, "--listen").await?;
    let token = stateful_explorer::token_from_env(&addr, &a.token_env, "--listen")?;
    let explorer = stateful_explorer::Explorer::new(
        ctx.client.clone(),
        stateful_explorer::Config {
            namespace: ctx.namespace.clone(),
            temporal_ui_url: a.temporal_ui_url,
            auth: token
                .as_deref()
                .map(|t| stateful_explorer::Auth::new(t, None)),
            loopback: stateful_explorer::is_loopback(&addr),
            secure_cookie: a.secure_cookie,
        },
    )?;
    let bound = stateful_explorer::serve(explorer.router(), addr).await?;
    let url = stateful_explorer::url(&bound);
    ctx.print(
        &json!({"url": url, "token": token.is_some()}),
        || {
            if token.is_some() {
                format!(
                    "explorer on {url}/ (log in once at {url}/login with the token in ${}); Ctrl-C stops it",
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
