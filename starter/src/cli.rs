//! The starter's flags and subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use stateful_client::connect::ConnectArgs;

#[derive(Parser)]
#[command(
    name = "starter",
    version,
    about = "Start and drive StatefulWorkflows."
)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Task queue of the workers.
    #[arg(long, global = true, env = "STATEFUL_TASK_QUEUE", default_value = stateful_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the workflow of an entity (workflow id `{Entity}-{id}`).
    Start(StartArgs),
    /// Send a signal: update, delete, state, apiToken, apiUrl, pause, resume, cancel.
    Signal(SignalArgs),
    /// Run a query: state, data, status, version, apiToken, rejected, pendingChanges, ...
    Query(QueryArgs),
    /// Print the hierarchy under a workflow (entity, id, status, version, token fingerprint).
    Tree(TreeArgs),
    /// Worker Versioning: move every workflow of a tree to the deployment's current version (each
    /// gets a `checkpoint`, and its continue-as-new starts the next run there); waits, with progress,
    /// until every one runs a new run, and prints the versions they run on.
    Upgrade(UpgradeArgs),
    /// List workflows through Temporal's visibility by their search attributes (entity, status,
    /// tree root): a table, or one JSON array with --json.
    List(ListArgs),
    /// Check a workflow's state (checksum, schema, references, children registry); `--tree` checks every
    /// workflow under it. Exit code 1 when a check finds an error.
    Validate(ValidateArgs),
    /// Write the whole tree under a root (states and settings, never tokens unless --with-tokens) as
    /// JSON to stdout (or --output FILE).
    Export(ExportArgs),
    /// Recreate an exported tree (on the namespace and cluster given by the connection flags) and wait
    /// until every workflow is at its exported state.
    Import(ImportArgs),
    /// API tokens: `token rotate <rootWorkflowId>`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Schemas of running trees: `schema apply <rootWorkflowId> --file new.yaml`.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Apply a change and wait for the new state version (update, delete or state).
    Update(UpdateArgs),
    /// Start the workflow of an entity when it is not running (with the `start` flags) and apply an
    /// `update` to it, in one call (Temporal's update-with-start); prints the new state version, or
    /// the reason the workflow refused the change (exit code 1).
    Upsert(UpsertArgs),
    /// Serve the web explorer of trees (roots, hierarchies, entities, live updates, actions) until
    /// Ctrl-C; prints its URL.
    Explorer(ExplorerArgs),
}

#[derive(Args)]
pub struct StartArgs {
    /// Entity name, e.g. User.
    #[arg(long)]
    pub entity: String,
    /// Entity id.
    #[arg(long)]
    pub id: String,
    /// The entity's data: inline JSON, `@FILE`, or `-` for stdin.
    #[arg(long)]
    pub data: Option<String>,
    /// Normalized state instead of data: inline JSON, `@FILE`, or `-`.
    #[arg(long, conflicts_with = "data")]
    pub state: Option<String>,
    /// Read the API token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Read the API token from stdin (one line).
    #[arg(long, conflicts_with = "token_env")]
    pub token_stdin: bool,
    /// API URL of the entity (default: its schema's `apiUrl` template, filled with --api-base).
    #[arg(long)]
    pub api_url: Option<String>,
    /// Base URL for the schema's URL templates (`{apiBase}`); handed down to every descendant.
    #[arg(long)]
    pub api_base: Option<String>,
    /// A host the tree's token may be sent to (repeat for more). Default: the hosts of --api-base,
    /// --api-url and the schema's URL templates; an `apiUrl` signal naming another host is refused.
    #[arg(long = "api-host", value_name = "HOST")]
    pub api_hosts: Vec<String>,
    /// Reload from the API this often (e.g. 30s, 5m; default: the entity's `refreshInterval`).
    #[arg(long)]
    pub refresh_interval: Option<String>,
    /// Schema file to carry in the input (default: the worker's).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Start paused.
    #[arg(long)]
    pub paused: bool,
    /// Limits the tree keeps under, for a cluster whose Temporal limits differ from the defaults
    /// (`{"maxChildrenPerRun": 1000, "maxPendingSignals": 1000, "maxPendingCancels": 1000,
    /// "maxTaskBytes": 2500000, "maxPayloadBytes": 2000000}`, each optional): inline JSON, `@FILE`
    /// or `-`. Handed down to every descendant.
    #[arg(long)]
    pub limits: Option<String>,
    /// Workflow id (default `{Entity}-{id}`).
    #[arg(long)]
    pub workflow_id: Option<String>,
}

#[derive(Args)]
pub struct SignalArgs {
    /// Workflow id, e.g. User-u1.
    pub workflow_id: String,
    /// Signal name.
    pub name: String,
    /// Payload: inline JSON, `@FILE`, or `-`. For apiToken use --token-env or --token-stdin.
    pub payload: Option<String>,
    /// apiToken: read the token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// apiToken: read the token from stdin.
    #[arg(long, conflicts_with = "token_env")]
    pub token_stdin: bool,
}

#[derive(Args)]
pub struct QueryArgs {
    /// Workflow id.
    pub workflow_id: String,
    /// Query name.
    pub name: String,
}

#[derive(Args)]
pub struct TreeArgs {
    /// Root workflow id.
    pub workflow_id: String,
    /// Cancel the whole tree (the root's cancellation cascades) and wait until every workflow ended.
    #[arg(long)]
    pub cancel: bool,
    /// How to print the tree: `text` (an indented outline), `json` (the same as --json), `dot` (a
    /// Graphviz digraph: `starter tree ROOT --format dot | dot -Tsvg > tree.svg`) or `mermaid` (a
    /// Mermaid flowchart, for Markdown). In a graph, a workflow shared by several parents is drawn
    /// once with an edge from each, and subscriptions are dashed. Default: `text`, or `json` with
    /// --json.
    #[arg(long, value_enum)]
    pub format: Option<TreeFormat>,
}

/// `starter tree --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TreeFormat {
    /// An indented outline (the default).
    Text,
    /// The collected tree as one JSON value (the same as --json).
    Json,
    /// A Graphviz digraph.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

#[derive(Args)]
pub struct UpgradeArgs {
    /// Root workflow id.
    pub workflow_id: String,
    /// Give up after this many seconds (the workflows that did not move are listed).
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this entity (`StatefulEntity`), e.g. User.
    #[arg(long)]
    pub entity: Option<String>,
    /// Only this entity id (`StatefulId`).
    #[arg(long)]
    pub id: Option<String>,
    /// Only this status (`StatefulStatus`): running, paused, unauthorized, cancelled, completed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only the workflows of the tree under this root workflow id (`StatefulRoot`), the root
    /// included.
    #[arg(long, value_name = "WORKFLOW_ID")]
    pub root: Option<String>,
    /// Only workflows still running (closed ones are listed too otherwise).
    #[arg(long)]
    pub open: bool,
    /// List at most this many (and say when more match).
    #[arg(long, default_value_t = 1_000)]
    pub limit: usize,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Workflow id.
    pub workflow_id: String,
    /// Check the whole tree under it.
    #[arg(long)]
    pub tree: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Root workflow id.
    pub workflow_id: String,
    /// Include the root's API token (read from its history).
    #[arg(long)]
    pub with_tokens: bool,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The export: a file, or `-` for stdin.
    pub file: String,
    /// Use this environment variable's token instead of the export's.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Workflow id.
    pub workflow_id: String,
    /// Payload: inline JSON, `@FILE`, or `-`.
    pub payload: String,
    /// Which change: update, delete or state.
    #[arg(long, default_value = "update")]
    pub name: String,
}

#[derive(Args)]
pub struct UpsertArgs {
    /// The `update` to apply: inline JSON, `@FILE`, or `-` (e.g. `{"data": {"id": "u1", "name":
    /// "Ann"}}` or `{"updates": {"User": {"u1": {"name": "Ann"}}}}`).
    pub payload: String,
    /// How the workflow is started when it is not running (entity, id, data, token, ...).
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Send a new token to the root of a tree and wait until every workflow of the tree uses it (and
    /// has reloaded its data with it, for those that load from an API).
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    /// Root workflow id.
    pub workflow_id: String,
    /// Read the token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Read the token from stdin (one line).
    #[arg(long, conflicts_with = "token_env")]
    pub token_stdin: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Send a new schema (a schema file, either format) to the root of a tree, and wait, with
    /// progress, until every workflow of the tree runs it (reports its checksum). A refused schema
    /// (a change that is not allowed, or a state that does not fit it) is an error with the
    /// reasons (exit code 1).
    Apply(SchemaApplyArgs),
}

#[derive(Args)]
pub struct SchemaApplyArgs {
    /// Root workflow id.
    pub workflow_id: String,
    /// The new schema (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Give up after this many seconds (the workflows that do not run it are listed, with why).
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Args)]
pub struct ExplorerArgs {
    /// The address to serve on. A loopback address needs no token unless --token-env's variable
    /// is set; any other address needs it.
    #[arg(long, default_value = "127.0.0.1:8089", value_name = "HOST:PORT")]
    pub listen: String,
    /// The environment variable holding the token the explorer's users must present.
    #[arg(long, default_value = "EXPLORER_TOKEN", value_name = "VAR")]
    pub token_env: String,
    /// The Temporal UI the explorer links to (`{url}/namespaces/{ns}/workflows/{id}`).
    #[arg(
        long,
        env = "STATEFUL_TEMPORAL_UI_URL",
        default_value = "http://localhost:8233",
        value_name = "URL"
    )]
    pub temporal_ui_url: String,
    /// Mark the login cookie `Secure` (when users reach the explorer through a TLS proxy).
    #[arg(long)]
    pub secure_cookie: bool,
    /// Open the explorer in a browser (`xdg-open`, or `open` on macOS).
    #[arg(long)]
    pub open: bool,
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
