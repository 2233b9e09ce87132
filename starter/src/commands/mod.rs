//! One function per subcommand, and what they share: the connected client, and reading JSON and
//! tokens from arguments, files and stdin.

use std::io::Read;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use stateful_client::codec::Codec;
use stateful_core::Secret;
use temporalio_client::Client;

use crate::cli::{Cli, Command, SchemaCommand, TokenCommand};

mod explorer;
mod list;
mod schema;
mod token;
mod transfer;
mod tree;
mod upgrade;
mod workflow;

/// What every subcommand gets.
pub struct Ctx {
    /// The connected client.
    pub client: Client,
    /// The payload codec (compression and encryption as configured), for payloads read by hand.
    pub codec: Codec,
    /// `--task-queue`.
    pub task_queue: String,
    /// `--json`.
    pub json: bool,
    /// The namespace.
    pub namespace: String,
}

impl Ctx {
    /// Prints `v` with `--json`, else the text.
    pub fn print(&self, v: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", text());
        }
    }
}

/// Connects and runs the subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let resolved = cli.connect.resolve()?;
    let client = resolved.connect("starter").await?;
    let namespace = resolved.namespace();
    let ctx = Ctx {
        client,
        codec: resolved.codec,
        task_queue: cli.task_queue,
        json: cli.json,
        namespace,
    };
    match cli.command {
        Command::Start(a) => workflow::start(&ctx, a).await,
        Command::Signal(a) => workflow::signal(&ctx, a).await,
        Command::Query(a) => workflow::query(&ctx, a).await,
        Command::Update(a) => workflow::update(&ctx, a).await,
        Command::Upsert(a) => workflow::upsert(&ctx, a).await,
        Command::Explorer(a) => explorer::explorer(&ctx, a).await,
        Command::Tree(a) => tree::tree(&ctx, a).await,
        Command::Upgrade(a) => upgrade::upgrade(&ctx, a).await,
        Command::List(a) => list::list(&ctx, a).await,
        Command::Validate(a) => tree::validate(&ctx, a).await,
        Command::Export(a) => transfer::export(&ctx, a).await,
        Command::Import(a) => transfer::import(&ctx, a).await,
        Command::Token {
            command: TokenCommand::Rotate(a),
        } => token::rotate(&ctx, a).await,
        Command::Schema {
            command: SchemaCommand::Apply(a),
        } => schema::apply(&ctx, a).await,
    }
}

/// JSON from an argument: inline, `@FILE`, or `-` for stdin.
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

/// A token from an environment variable or from stdin (one line); `None` when neither is asked for.
fn read_token(env: Option<&str>, stdin: bool) -> anyhow::Result<Option<Secret>> {
    if let Some(var) = env {
        let t =
            std::env::var(var).map_err(|_| anyhow!("the environment variable {var} is not set"))?;
        if t.trim().is_empty() {
            bail!("the environment variable {var} is empty");
        }
        return Ok(Some(Secret::new(t.trim())));
    }
    if stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_line(&mut s)
            .context("reading the token from stdin")?;
        if s.trim().is_empty() {
            bail!("no token on stdin");
        }
        return Ok(Some(Secret::new(s.trim())));
    }
    Ok(None)
}
