//! `starter`: start, signal, query and update StatefulWorkflows.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use worker::connect::ConnectArgs;
use worker::ops;

mod transfer;

#[derive(Parser)]
#[command(
    name = "starter",
    version,
    about = "Start and drive StatefulWorkflows."
)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Task queue of the workers.
    #[arg(long, global = true, env = "STATEFUL_TASK_QUEUE", default_value = stateful_workflows::DEFAULT_TASK_QUEUE)]
    task_queue: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the workflow of an entity (workflow id `{Entity}-{id}`).
    Start {
        /// Entity name, e.g. User.
        #[arg(long)]
        entity: String,
        /// Entity id.
        #[arg(long)]
        id: String,
        /// The entity's data: inline JSON, `@FILE`, or `-` for stdin.
        #[arg(long)]
        data: Option<String>,
        /// Normalized state instead of data: inline JSON, `@FILE`, or `-`.
        #[arg(long, conflicts_with = "data")]
        state: Option<String>,
        /// Read the API token from this environment variable.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// Read the API token from stdin (one line).
        #[arg(long, conflicts_with = "token_env")]
        token_stdin: bool,
        /// API URL of the entity (default: its schema's `apiUrl` template, filled with --api-base).
        #[arg(long)]
        api_url: Option<String>,
        /// Base URL for the schema's URL templates (`{apiBase}`); handed down to every descendant.
        #[arg(long)]
        api_base: Option<String>,
        /// Reload from the API this often (e.g. 30s, 5m; default: the entity's `refreshInterval`).
        #[arg(long)]
        refresh_interval: Option<String>,
        /// Schema file to carry in the input (default: the worker's).
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Start paused.
        #[arg(long)]
        paused: bool,
        /// Workflow id (default `{Entity}-{id}`).
        #[arg(long)]
        workflow_id: Option<String>,
    },
    /// Send a signal: update, delete, state, apiToken, apiUrl, pause, resume, cancel.
    Signal {
        /// Workflow id, e.g. User-u1.
        workflow_id: String,
        /// Signal name.
        name: String,
        /// Payload: inline JSON, `@FILE`, or `-`. For apiToken use --token-env or --token-stdin.
        payload: Option<String>,
        /// apiToken: read the token from this environment variable.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// apiToken: read the token from stdin.
        #[arg(long, conflicts_with = "token_env")]
        token_stdin: bool,
    },
    /// Run a query: state, data, status, version, apiToken, rejected, pendingChanges, ...
    Query {
        /// Workflow id.
        workflow_id: String,
        /// Query name.
        name: String,
    },
    /// Print the hierarchy under a workflow (entity, id, status, version, token fingerprint).
    Tree {
        /// Root workflow id.
        workflow_id: String,
        /// Cancel the whole tree (the root's cancellation cascades) and wait until every workflow ended.
        #[arg(long)]
        cancel: bool,
    },
    /// Check a workflow's state (checksum, schema, references, children registry); `--tree` checks every
    /// workflow under it. Exit code 1 when a check finds an error.
    Validate {
        /// Workflow id.
        workflow_id: String,
        /// Check the whole tree under it.
        #[arg(long)]
        tree: bool,
    },
    /// Write the whole tree under a root (states and settings, never tokens unless --with-tokens) as
    /// JSON to stdout (or --output FILE).
    Export {
        /// Root workflow id.
        workflow_id: String,
        /// Include the root's API token (read from its history).
        #[arg(long)]
        with_tokens: bool,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Recreate an exported tree (on the namespace and cluster given by the connection flags) and wait
    /// until every workflow is at its exported state.
    Import {
        /// The export: a file, or `-` for stdin.
        file: String,
        /// Use this environment variable's token instead of the export's.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// API tokens: `token rotate <rootWorkflowId>`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Apply a change and wait for the new state version (update, delete or state).
    Update {
        /// Workflow id.
        workflow_id: String,
        /// Payload: inline JSON, `@FILE`, or `-`.
        payload: String,
        /// Which change: update, delete or state.
        #[arg(long, default_value = "update")]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Send a new token to the root of a tree and wait until every workflow of the tree uses it (and
    /// has reloaded its data with it, for those that load from an API).
    Rotate {
        /// Root workflow id.
        workflow_id: String,
        /// Read the token from this environment variable.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// Read the token from stdin (one line).
        #[arg(long, conflicts_with = "token_env")]
        token_stdin: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

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

fn read_json(arg: &str, what: &str) -> anyhow::Result<Value> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {what} file {path}"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("{what} is not valid JSON: {e} (give inline JSON, @FILE or -)"))
}

fn read_token(env: Option<&str>, stdin: bool) -> anyhow::Result<Option<String>> {
    if let Some(var) = env {
        let t =
            std::env::var(var).map_err(|_| anyhow!("the environment variable {var} is not set"))?;
        if t.trim().is_empty() {
            bail!("the environment variable {var} is empty");
        }
        return Ok(Some(t.trim().to_string()));
    }
    if stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_line(&mut s)
            .context("reading the token from stdin")?;
        if s.trim().is_empty() {
            bail!("no token on stdin");
        }
        return Ok(Some(s.trim().to_string()));
    }
    Ok(None)
}

fn print(json_out: bool, v: &Value, text: impl FnOnce() -> String) {
    if json_out {
        println!("{v}");
    } else {
        println!("{}", text());
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let resolved = cli.connect.resolve()?;
    let client = resolved.connect("starter").await?;
    match cli.command {
        Command::Start {
            entity,
            id,
            data,
            state,
            token_env,
            token_stdin,
            api_url,
            api_base,
            refresh_interval,
            schema,
            paused,
            workflow_id,
        } => {
            let wid = workflow_id.unwrap_or_else(|| ops::workflow_id(&entity, &id));
            let mut input = json!({"id": id, "entityName": entity});
            if let Some(d) = data {
                input["data"] = read_json(&d, "--data")?;
            }
            if let Some(s) = state {
                input["state"] = read_json(&s, "--state")?;
            }
            if let Some(t) = read_token(token_env.as_deref(), token_stdin)? {
                input["apiToken"] = json!(t);
            }
            if let Some(u) = api_url {
                input["apiUrl"] = json!(u);
            }
            if let Some(b) = api_base {
                input["apiBase"] = json!(b);
            }
            if let Some(r) = refresh_interval {
                input["refreshInterval"] = json!(r);
            }
            if let Some(p) = schema {
                let s = stateful_engine::Schema::from_file(&p).map_err(|e| anyhow!("{e}"))?;
                input["schema"] = s.to_json();
            }
            if paused {
                input["status"] = json!("paused");
            }
            let run_id = ops::start(&client, &cli.task_queue, &wid, input).await?;
            print(
                cli.json,
                &json!({"workflowId": wid, "runId": run_id}),
                || {
                    format!(
                        "started {wid} (run {run_id}) on task queue {}",
                        cli.task_queue
                    )
                },
            );
        }
        Command::Signal {
            workflow_id,
            name,
            payload,
            token_env,
            token_stdin,
        } => {
            if !SIGNALS.contains(&name.as_str()) {
                bail!("unknown signal `{name}` (one of: {})", SIGNALS.join(", "));
            }
            let value = match name.as_str() {
                "apiToken" => {
                    if payload.is_some() {
                        bail!(
                            "pass the token with --token-env VAR or --token-stdin, never as an argument"
                        );
                    }
                    let t = read_token(token_env.as_deref(), token_stdin)?.ok_or_else(|| {
                        anyhow!("apiToken needs --token-env VAR or --token-stdin")
                    })?;
                    Some(json!(t))
                }
                "pause" | "resume" | "cancel" | "refresh" | "checkpoint" => None,
                "apiUrl" | "status" => Some(match payload {
                    Some(p) => serde_json::from_str(&p).unwrap_or(Value::String(p)),
                    None => bail!("`{name}` needs a value"),
                }),
                _ => Some(read_json(
                    &payload.ok_or_else(|| {
                        anyhow!("`{name}` needs a JSON payload (inline, @FILE or -)")
                    })?,
                    "the payload",
                )?),
            };
            ops::signal(&client, &workflow_id, &name, value.as_ref()).await?;
            print(
                cli.json,
                &json!({"workflowId": workflow_id, "signal": name, "sent": true}),
                || format!("sent `{name}` to {workflow_id}"),
            );
        }
        Command::Query { workflow_id, name } => {
            let v = ops::query(&client, &workflow_id, &name).await?;
            print(cli.json, &v, || {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            });
        }
        Command::Tree {
            workflow_id,
            cancel,
        } => {
            let tree = collect_tree(&client, &workflow_id).await;
            if cancel {
                let ids = all_ids(&tree);
                client
                    .get_workflow_handle::<temporalio_client::UntypedWorkflow>(&workflow_id)
                    .cancel(temporalio_client::WorkflowCancelOptions::default())
                    .await
                    .map_err(|e| anyhow!("cannot cancel {workflow_id}: {e}"))?;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                loop {
                    let mut running = 0;
                    for id in &ids {
                        if is_running(&client, id).await {
                            running += 1;
                        }
                    }
                    if !cli.json {
                        eprint!(
                            "\rcancelling {} workflows: {} still running   ",
                            ids.len(),
                            running
                        );
                    }
                    if running == 0 {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("{running} workflows of the tree still run after 120 s");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                print(cli.json, &json!({"cancelled": ids}), || {
                    format!("\ncancelled {} workflows", ids.len())
                });
            } else {
                print(cli.json, &tree, || render(&tree, 0));
            }
        }
        Command::Export {
            workflow_id,
            with_tokens,
            output,
        } => {
            let v = transfer::export(
                &client,
                resolved.codec.as_ref(),
                &workflow_id,
                with_tokens,
                !cli.json,
            )
            .await?;
            let text = serde_json::to_string_pretty(&v)?;
            match output {
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
        }
        Command::Import {
            file,
            token_env,
            timeout_secs,
        } => {
            let export = read_json(
                &if file == "-" {
                    file
                } else {
                    format!("@{file}")
                },
                "the export",
            )?;
            let token = read_token(token_env.as_deref(), false)?;
            let report = transfer::import(
                &client,
                &cli.task_queue,
                &export,
                token,
                std::time::Duration::from_secs(timeout_secs),
                !cli.json,
            )
            .await?;
            print(cli.json, &report, || {
                format!(
                    "imported {} workflows under {} ({} needed a merge beyond their parent's slice)",
                    report["workflows"], report["root"], report["merged"]
                )
            });
        }
        Command::Validate { workflow_id, tree } => {
            let results = if tree {
                ops::walk(&client, &workflow_id, "validate").await
            } else {
                vec![(
                    workflow_id.clone(),
                    ops::query(&client, &workflow_id, "validate").await,
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
            print(
                cli.json,
                &json!({"ok": errors == 0, "workflows": report}),
                || {
                    let mut lines = Vec::new();
                    for r in &report {
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
                },
            );
            if errors > 0 {
                bail!("{errors} workflows failed validation");
            }
        }
        Command::Token {
            command:
                TokenCommand::Rotate {
                    workflow_id,
                    token_env,
                    token_stdin,
                    timeout_secs,
                },
        } => {
            let token = read_token(token_env.as_deref(), token_stdin)?
                .ok_or_else(|| anyhow!("the new token: give --token-env VAR or --token-stdin"))?;
            let want = stateful_engine::fingerprint(&token);
            ops::signal(&client, &workflow_id, "apiToken", Some(&json!(token))).await?;
            drop(token);
            let t0 = std::time::Instant::now();
            let deadline = t0 + std::time::Duration::from_secs(timeout_secs);
            let states = loop {
                let states = ops::token_states(&client, &workflow_id).await;
                let rotated = states
                    .iter()
                    .filter(|s| s.fingerprint.as_deref() == Some(want.as_str()))
                    .count();
                let reloading = states.iter().filter(|s| s.has_api && s.loading).count();
                if !cli.json {
                    eprint!(
                        "\rrotating to {want}: {rotated}/{} workflows use it, {reloading} reloading   ",
                        states.len()
                    );
                }
                if rotated == states.len() && reloading == 0 {
                    break states;
                }
                if std::time::Instant::now() > deadline {
                    let late: Vec<_> = states
                        .iter()
                        .filter(|s| s.fingerprint.as_deref() != Some(want.as_str()) || s.loading)
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
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            let loaded: Vec<_> = states.iter().filter(|s| s.has_api).collect();
            let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
            for s in &loaded {
                *by_state.entry(s.load_state.as_str()).or_default() += 1;
            }
            let secs = t0.elapsed().as_secs_f64();
            print(
                cli.json,
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
        }
        Command::Update {
            workflow_id,
            payload,
            name,
        } => {
            let v = ops::update(
                &client,
                &workflow_id,
                &name,
                &read_json(&payload, "the payload")?,
            )
            .await?;
            print(cli.json, &v, || {
                format!(
                    "applied to {workflow_id}: version {} ({} entities changed)",
                    v["version"], v["changed"]
                )
            });
        }
    }
    Ok(())
}

/// The tree under `wid`, from each workflow's queries (breadth-first; a workflow that cannot be
/// queried shows why).
async fn collect_tree(client: &temporalio_client::Client, wid: &str) -> Value {
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

async fn is_running(client: &temporalio_client::Client, wid: &str) -> bool {
    client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid)
        .describe(temporalio_client::WorkflowDescribeOptions::default())
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_out = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_out {
                println!("{}", json!({"error": format!("{e:#}")}));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
