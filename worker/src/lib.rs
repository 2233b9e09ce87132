//! The worker: connects to Temporal (or starts a local dev server), registers `StatefulWorkflow` and
//! the activities (all of them, or the workflows or the HTTP activities only: `--mode`), serves
//! Prometheus metrics and the health endpoints (`/healthz`, `/readyz`: see [`health`]), and shuts
//! down gracefully.
//!
//! `main.rs` only parses flags; [`run`] does the work, so tests can drive it too.

pub mod auth;
pub mod codec_server;
pub mod custom;
pub mod devserver;
pub mod health;
pub mod ingress;
pub mod search_attributes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use stateful_client::codec::Codec;
use stateful_client::connect::{ConnectArgs, Resolved};
use stateful_engine::Schema;
use stateful_workflows::{
    DEFAULT_TASK_QUEUE, DescribeActivities, SchemaActivities, StatefulWorkflow,
};
use temporalio_client::{Client, WorkflowCountOptions};
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
};
use temporalio_common::worker::{
    VersioningBehavior, WorkerDeploymentOptions, WorkerDeploymentVersion,
};
use temporalio_sdk::runtime::PollerBehavior;
use temporalio_sdk::{Runtime, Worker as SdkWorker, WorkerOptions, runtime::RuntimeOptions};
use tracing::{info, warn};

use crate::custom::Extras;
pub use crate::custom::{Worker, WorkerBuilder};
use crate::devserver::{DevServer, DevServerOptions, find_cli, reachable};
use crate::health::{Health, Phase};

/// What a worker runs (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The workflows and the HTTP activities.
    Both,
    /// The workflows and the local activities they need (`workerSchema`, `workflowType`); the HTTP
    /// activities run on `--activity-task-queue`, on other workers.
    Workflows,
    /// The HTTP activities only (no workflow).
    Activities,
}

impl Mode {
    /// Its flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Both => "both",
            Mode::Workflows => "workflows",
            Mode::Activities => "activities",
        }
    }
}

/// How the worker writes its log (`--log-format`), to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (`INFO message key=value ...`).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, the event's fields, `target`, and,
    /// inside spans, `span` (the innermost) and `spans` (all, outermost first): in workflow code,
    /// the `workflow` span's `namespace`, `task_queue`, `workflow_id`, `run_id`, `workflow_type`.
    Json,
}

/// Starts the process's log subscriber: `format`, filtered by `RUST_LOG` (default: `info`, the
/// SDK core's own lines from `warn`). Workflow code logs inside a span that names its workflow
/// (see `stateful_workflows::logging`), shown before the message in text and under `spans` (and
/// `span`, while it is the innermost) in JSON.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,temporalio_sdk_core=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// What a worker polls, from its flags ([`WorkerArgs::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The queue it runs workflows from (the main task queue), unless it runs activities only.
    pub workflows: Option<String>,
    /// The queue its workflows' roots record for their HTTP activities (`None`: their own).
    pub activity_queue: Option<String>,
    /// The queues it runs HTTP activities from.
    pub http: Vec<String>,
}

/// Temporal's longest task queue name, by default (`limit.maxIDLength`).
const MAX_TASK_QUEUE_LEN: usize = 1_000;

/// Worker flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Runs StatefulWorkflow and its activities on a Temporal task queue."
)]
pub struct WorkerArgs {
    /// Connection settings.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Task queue to poll.
    #[arg(long, env = "STATEFUL_TASK_QUEUE", default_value = DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// What this worker runs: `both` (the workflows and the HTTP activities), `workflows` (the
    /// workflows and the local activities they need; needs `--activity-task-queue`, where other
    /// workers run the HTTP activities) or `activities` (the HTTP activities only, from
    /// `--activity-task-queue`, or from `--task-queue` without it).
    #[arg(long, env = "STATEFUL_MODE", value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// A task queue of their own for the HTTP activities (`loadData`, `loadBatch`, `httpRequest`),
    /// so that they scale, and are rate-limited, on workers of their own. A tree's root records it
    /// when it first starts, and its whole tree schedules its loads there; trees started before
    /// keep loading on the main queue. Unset: the main task queue.
    #[arg(long, env = "STATEFUL_ACTIVITY_TASK_QUEUE", value_name = "NAME")]
    pub activity_task_queue: Option<String>,
    /// Activities per second the server hands out from each queue this worker runs HTTP activities
    /// from, to all its workers together (Temporal's per-task-queue rate limit: give every worker
    /// of a queue the same value, the last poller's wins). Unset: no limit.
    #[arg(long, env = "STATEFUL_ACTIVITY_RATE_LIMIT", value_name = "PER_SECOND")]
    pub activity_rate_limit: Option<f64>,
    /// Worker Versioning: the Worker Deployment this worker belongs to, with `--build-id` (the
    /// variables the Temporal Worker Controller sets). With both, the worker polls as that
    /// deployment version: the workflows it starts are pinned to it and move to the deployment's
    /// current version at their next continue-as-new (`starter upgrade` triggers one). Without
    /// either: unversioned (the SDK's build id, a checksum of the executable).
    #[arg(long, env = "TEMPORAL_DEPLOYMENT_NAME", value_name = "NAME")]
    pub deployment_name: Option<String>,
    /// Worker Versioning: this worker's build id within `--deployment-name` (e.g. the image tag
    /// or the commit); needs `--deployment-name`.
    #[arg(long, env = "TEMPORAL_WORKER_BUILD_ID", value_name = "ID")]
    pub build_id: Option<String>,
    /// Schema file (YAML or JSON) for workflows started without a `schema` in their input.
    #[arg(long, env = "STATEFUL_SCHEMA")]
    pub schema: Option<PathBuf>,
    /// Move the workflows this worker runs to its schema (`--schema`) at their next
    /// continue-as-new: each new run reads it (the `workerSchema` local activity, recorded in its
    /// history) and applies it as a `schema` update would (checked against its state, handed down
    /// the tree; a refusal is listed by `rejected` and the run keeps its schema). For teams that
    /// deploy schema changes with the worker.
    #[arg(long, env = "STATEFUL_ADOPT_WORKER_SCHEMA")]
    pub adopt_worker_schema: bool,
    /// Test-only, hidden: exists only for the rolling-deploy e2e test (`tests/rolling_deploy.rs`),
    /// which runs this binary as "build B", with a deliberate behaviour difference behind a patch
    /// (`stateful_workflows::set_test_patched_difference`: runs started on this worker upsert the
    /// memo field `deployedBehaviour: "B"`). Never use it in production.
    #[arg(long, hide = true)]
    pub test_patched_difference: bool,
    /// Prometheus metrics address (`none` to disable).
    #[arg(long, env = "STATEFUL_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Name counters with Prometheus's `_total` suffix (`stateful_changes_applied_total`,
    /// `temporal_workflow_completed_total`, ...). Off by default: the vendored Temporal dashboards
    /// and ours query the names without it.
    #[arg(long, env = "STATEFUL_METRICS_TOTAL_SUFFIX")]
    pub metrics_total_suffix: bool,
    /// Put the unit in histogram names (`stateful_api_request_latency_milliseconds_bucket`, or
    /// `_seconds_bucket` with `--metrics-seconds`). Off by default, as the dashboards expect.
    #[arg(long, env = "STATEFUL_METRICS_UNIT_SUFFIX")]
    pub metrics_unit_suffix: bool,
    /// Record durations in seconds (as floats) instead of milliseconds; with
    /// `--metrics-unit-suffix`, Prometheus's own naming (`..._seconds_bucket`). Off by default, as
    /// the dashboards expect.
    #[arg(long, env = "STATEFUL_METRICS_SECONDS")]
    pub metrics_seconds: bool,
    /// The log's format: `text` (one line per event) or `json` (one JSON object per line).
    #[arg(long, env = "STATEFUL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Concurrent workflow-task polls. Trees start many children at once: more pollers start them
    /// in parallel instead of one after another.
    #[arg(long, default_value_t = 10)]
    pub workflow_pollers: usize,
    /// Concurrent activity-task polls.
    #[arg(long, default_value_t = 5)]
    pub activity_pollers: usize,
    /// Workflows kept in memory between tasks (sticky cache).
    #[arg(long, default_value_t = 1000)]
    pub max_cached_workflows: usize,
    /// How long a workflow's next task waits for the worker that cached it before any worker takes it.
    /// Short, so that a crashed worker's workflows move on quickly (the SDK's default is 10 s).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub sticky_timeout_ms: u64,
    /// How long in-flight activities may run on after a shutdown request.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    pub shutdown_grace: u64,
    /// Never start a local dev server; fail if Temporal is unreachable.
    #[arg(long)]
    pub no_dev_server: bool,
    /// The `temporal` CLI used for the local dev server (default: TEMPORAL_CLI, PATH, .tools/venv/bin).
    #[arg(long)]
    pub temporal_cli: Option<PathBuf>,
    /// Port of the local dev server.
    #[arg(long, default_value_t = 7233)]
    pub dev_server_port: u16,
    /// UI port of the local dev server.
    #[arg(long, default_value_t = 8233)]
    pub dev_server_ui_port: u16,
    /// Keep the local dev server's state in this SQLite file (default: in memory).
    #[arg(long)]
    pub dev_server_db: Option<PathBuf>,
    /// Register the search attributes workflows set (`StatefulEntity`, `StatefulId`,
    /// `StatefulStatus`, `StatefulRoot`, all Keyword) when the namespace lacks them (needs the
    /// operator's permission). Default: on with the local dev server the worker starts, off
    /// otherwise. Off and missing, the worker logs the `temporal operator search-attribute create`
    /// command, and workflows run without them.
    #[arg(long, env = "STATEFUL_REGISTER_SEARCH_ATTRIBUTES", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub register_search_attributes: Option<bool>,
    /// Timeout of one request to an entity API.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub api_timeout: u64,
    /// Largest API answer accepted; a larger one fails the load (`BadBody`, not retried). The default
    /// keeps one answer, wrapped in the activity's result, under Temporal's 2 MB payload limit;
    /// raising it past that needs `--compress` and a matching `--api-max-result`.
    #[arg(long, default_value_t = stateful_activities::DEFAULT_MAX_BODY_BYTES, value_name = "BYTES")]
    pub api_max_body: usize,
    /// Largest result (JSON) an HTTP activity returns; a larger one fails `ResultTooLarge` (not
    /// retried), and a batch load takes as many `loadBatch` activities as keep each result within it.
    /// The default is under Temporal's 2 MB payload limit; raise it only with `--compress` (the limit
    /// applies to the compressed payload).
    #[arg(long, default_value_t = stateful_activities::DEFAULT_MAX_RESULT_BYTES, value_name = "BYTES")]
    pub api_max_result: usize,
    /// Consecutive failures (5xx, 408, 429, timeouts, connection errors) that open an API host's
    /// circuit: loads to it then fail fast for the cool-down.
    #[arg(long, default_value_t = 5)]
    pub api_breaker_threshold: u32,
    /// How long an open circuit fails fast.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub api_breaker_cool_down: u64,
    /// Concurrent requests of one `loadBatch` activity.
    #[arg(long, default_value_t = 8)]
    pub api_batch_concurrency: usize,
    /// API hosts the HTTP activities may send requests (and the token) to: `host`, `host:port`,
    /// `*.example.com` (subdomains) or an IP address; repeat the flag or separate with commas. Unset:
    /// any host. Link-local and cloud-metadata destinations are refused unless listed exactly.
    #[arg(long = "api-allow-host", env = "STATEFUL_API_ALLOW_HOST", value_delimiter = ',',
          value_name = "HOST[:PORT]",
          value_parser = |s: &str| stateful_activities::hosts::AllowedHost::parse(s).map(|_| s.trim().to_string()))]
    pub api_allow_host: Vec<String>,
    /// Serve the HTTP ingress (POST/DELETE/GET /v1/{Entity}/{id}) on this address; off by default.
    #[arg(long, env = "STATEFUL_INGRESS", value_name = "HOST:PORT")]
    pub ingress: Option<String>,
    /// The environment variable holding the bearer token ingress callers must present.
    #[arg(long, default_value = "STATEFUL_INGRESS_TOKEN", value_name = "VAR")]
    pub ingress_token_env: String,
    /// Largest request body the ingress accepts (413 beyond). The default fits one signal in
    /// Temporal's 2 MB payload limit; raise it only with `--compress`.
    #[arg(long, default_value_t = ingress::DEFAULT_MAX_BODY, value_name = "BYTES")]
    pub ingress_max_body: usize,
    /// Requests per second the ingress takes, sustained (a token bucket; more are held back up to a
    /// second, then refused with 429); 0: no limit.
    #[arg(long, default_value_t = ingress::DEFAULT_RATE_PER_SECOND, value_name = "N")]
    pub ingress_rate_limit: u32,
    /// Requests the ingress takes at once above its rate (the bucket's size).
    #[arg(long, default_value_t = ingress::DEFAULT_BURST, value_name = "N")]
    pub ingress_rate_burst: u32,
    /// Serve the web explorer of trees (pages, live updates, actions) on this address (a host name
    /// is resolved to its first address); off by default. A loopback address needs no token unless
    /// `--explorer-token-env`'s variable is set; any other address needs it (users log in at
    /// `/login`, or send `Authorization: Bearer`).
    #[arg(long, env = "STATEFUL_EXPLORER", value_name = "HOST:PORT")]
    pub explorer: Option<String>,
    /// The environment variable holding the token the explorer's users must present.
    #[arg(long, default_value = "EXPLORER_TOKEN", value_name = "VAR")]
    pub explorer_token_env: String,
    /// Mark the explorer's login cookie `Secure` (when users reach it through a TLS proxy).
    #[arg(long)]
    pub explorer_secure_cookie: bool,
    /// The Temporal UI the explorer links to (`{url}/namespaces/{ns}/workflows/{id}`).
    #[arg(long, env = "STATEFUL_TEMPORAL_UI_URL", default_value = stateful_explorer::DEFAULT_TEMPORAL_UI, value_name = "URL")]
    pub temporal_ui_url: String,
    /// Serve Temporal's codec-server endpoints (`/encode`, `/decode`, `/{namespace}/encode`,
    /// `/{namespace}/decode`) on this address, for `temporal workflow show --codec-endpoint` and the
    /// UI; needs the codec keys or `--compress`. An address that is not a loopback one needs
    /// `--codec-server-token-env`.
    #[arg(long, env = "STATEFUL_CODEC_SERVER", value_name = "HOST:PORT")]
    pub codec_server: Option<String>,
    /// The environment variable holding a token the codec server's callers must present
    /// (`Authorization`, with or without `Bearer `); unset: no check, allowed on a loopback address
    /// only.
    #[arg(long, value_name = "VAR")]
    pub codec_server_token_env: Option<String>,
    /// More origins allowed to call the codec server from a browser (a Temporal UI elsewhere), besides
    /// the UI's usual http://localhost:8233 and http://127.0.0.1:8233, always allowed; repeat the flag
    /// or separate with commas.
    #[arg(long, value_delimiter = ',', value_name = "ORIGIN")]
    pub codec_cors_origin: Vec<String>,
    /// Largest request body the codec server accepts (413 beyond). The default takes a payload of
    /// Temporal's largest (2 MB) in JSON and base64.
    #[arg(long, default_value_t = codec_server::DEFAULT_MAX_BODY, value_name = "BYTES")]
    pub codec_server_max_body: usize,
    /// Requests per second the codec server takes, sustained (more are held back up to a second, then
    /// refused with 429); 0: no limit.
    #[arg(long, default_value_t = codec_server::DEFAULT_RATE_PER_SECOND, value_name = "N")]
    pub codec_server_rate_limit: u32,
    /// Requests the codec server takes at once above its rate.
    #[arg(long, default_value_t = codec_server::DEFAULT_BURST, value_name = "N")]
    pub codec_server_rate_burst: u32,
    /// Time limit of one request to the ingress or the codec server: a body not received within it
    /// is answered 408, an answer not ready within it 503.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub http_request_timeout: u64,
}

impl WorkerArgs {
    /// What this worker polls, or why its flags cannot work together.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let main = self.task_queue.as_str();
        if main.trim().is_empty() {
            bail!("--task-queue is empty");
        }
        let queue = self
            .activity_task_queue
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty());
        if let Some(q) = queue
            && q.len() > MAX_TASK_QUEUE_LEN
        {
            bail!(
                "--activity-task-queue takes {} bytes: Temporal takes task queue names of at most {MAX_TASK_QUEUE_LEN}",
                q.len()
            );
        }
        if let Some(r) = self.activity_rate_limit
            && !(r.is_finite() && r > 0.0)
        {
            bail!(
                "--activity-rate-limit must be a number of activities per second above 0, not {r}"
            );
        }
        // The main queue named again is no queue of their own.
        let separate = queue.filter(|q| *q != main).map(str::to_string);
        Ok(match self.mode {
            Mode::Both => Plan {
                workflows: Some(main.to_string()),
                activity_queue: separate.clone(),
                // The main queue too: trees started before the activity queue was set load there.
                http: std::iter::once(main.to_string()).chain(separate).collect(),
            },
            Mode::Workflows => {
                let Some(q) = separate else {
                    bail!(
                        "--mode workflows runs no HTTP activity: give it --activity-task-queue NAME, a queue other than --task-queue `{main}`, and run the HTTP activities there with --mode activities (a workflow worker also takes activity tasks from its own queue, so the HTTP activities cannot stay on it)"
                    );
                };
                if self.activity_rate_limit.is_some() {
                    bail!(
                        "--activity-rate-limit is set on the workers that run the HTTP activities (--mode activities or both), not on --mode workflows"
                    );
                }
                Plan {
                    workflows: Some(main.to_string()),
                    activity_queue: Some(q),
                    http: Vec::new(),
                }
            }
            Mode::Activities => Plan {
                workflows: None,
                activity_queue: None,
                http: vec![separate.unwrap_or_else(|| main.to_string())],
            },
        })
    }

    /// The Worker Deployment version this worker polls as (`--deployment-name` and `--build-id`),
    /// `None` when unversioned, or why the flags cannot work (one without the other).
    pub fn deployment(&self) -> anyhow::Result<Option<WorkerDeploymentVersion>> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match (given(&self.deployment_name), given(&self.build_id)) {
            (None, None) => Ok(None),
            (Some(name), Some(build_id)) => {
                for (flag, v) in [("--deployment-name", &name), ("--build-id", &build_id)] {
                    if v.len() > MAX_TASK_QUEUE_LEN {
                        bail!(
                            "{flag} takes {} bytes: Temporal takes at most {MAX_TASK_QUEUE_LEN}",
                            v.len()
                        );
                    }
                }
                Ok(Some(
                    WorkerDeploymentVersion::builder()
                        .deployment_name(name)
                        .build_id(build_id)
                        .build(),
                ))
            }
            (Some(name), None) => bail!(
                "--deployment-name `{name}` needs --build-id (or TEMPORAL_WORKER_BUILD_ID): Worker Versioning takes both, or neither for an unversioned worker"
            ),
            (None, Some(id)) => bail!(
                "--build-id `{id}` needs --deployment-name (or TEMPORAL_DEPLOYMENT_NAME): Worker Versioning takes both, or neither for an unversioned worker"
            ),
        }
    }

    /// The ingress's limits (`--ingress-max-body`, `--ingress-rate-*`, `--http-request-timeout`).
    pub fn ingress_limits(&self) -> auth::HttpLimits {
        auth::HttpLimits {
            max_body: self.ingress_max_body,
            timeout: Duration::from_secs(self.http_request_timeout.max(1)),
            rate_per_second: self.ingress_rate_limit,
            burst: self.ingress_rate_burst,
            max_wait: auth::HttpLimits::DEFAULT_MAX_WAIT,
        }
    }

    /// The codec server's limits (`--codec-server-max-body`, `--codec-server-rate-*`,
    /// `--http-request-timeout`).
    pub fn codec_server_limits(&self) -> auth::HttpLimits {
        auth::HttpLimits {
            max_body: self.codec_server_max_body,
            timeout: Duration::from_secs(self.http_request_timeout.max(1)),
            rate_per_second: self.codec_server_rate_limit,
            burst: self.codec_server_rate_burst,
            max_wait: auth::HttpLimits::DEFAULT_MAX_WAIT,
        }
    }

    /// The environment variables that hold the worker's HTTP tokens (`--ingress-token-env`,
    /// `--codec-server-token-env`): removed, with [`devserver::SECRET_ENV_VARS`], from the dev
    /// server's environment.
    pub fn token_env_vars(&self) -> Vec<&str> {
        [
            self.ingress_token_env.as_str(),
            self.explorer_token_env.as_str(),
        ]
        .into_iter()
        .chain(self.codec_server_token_env.as_deref())
        .collect()
    }

    /// The HTTP activities' settings.
    pub fn http_config(&self) -> stateful_activities::HttpConfig {
        stateful_activities::HttpConfig {
            timeout: Duration::from_secs(self.api_timeout.max(1)),
            max_body_bytes: self.api_max_body,
            max_result_bytes: self.api_max_result.max(1024),
            breaker_threshold: self.api_breaker_threshold.max(1),
            breaker_cool_down: Duration::from_secs(self.api_breaker_cool_down),
            batch_concurrency: self.api_batch_concurrency.max(1),
            allowed_hosts: self.api_allow_host.clone(),
        }
    }

    /// Warnings about the API limits: a body limit whose answers cannot fit the result budget, and a
    /// result budget over Temporal's payload limit without compression.
    pub fn api_limit_warnings(&self, compress: bool) -> Vec<String> {
        let mut out = Vec::new();
        // `{"status":"ok","data":...}` around the answer.
        let wrapped = self.api_max_body.saturating_add(64);
        if wrapped > self.api_max_result {
            out.push(format!(
                "--api-max-body {} is over what fits --api-max-result {}: answers near the body limit fail ResultTooLarge",
                self.api_max_body, self.api_max_result
            ));
        }
        if self.api_max_result > stateful_activities::PAYLOAD_LIMIT_BYTES && !compress {
            out.push(format!(
                "--api-max-result {} is over Temporal's payload limit ({} bytes) and --compress is off: larger results fail at the server",
                self.api_max_result,
                stateful_activities::PAYLOAD_LIMIT_BYTES
            ));
        }
        out
    }
}

/// Runs the worker until `shutdown` completes (or a fatal error).
pub async fn run(
    args: WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(args, shutdown, Extras::default()).await
}

/// [`run`], with what a custom worker adds ([`Worker::builder`]): its default schema and its
/// activities.
pub(crate) async fn run_with(
    args: WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    extras: Extras,
) -> anyhow::Result<()> {
    let plan = args.plan()?;
    args.deployment()?;
    let schema = match &args.schema {
        Some(p) => {
            let s = Schema::from_file(p).map_err(|e| anyhow!("{e}"))?;
            info!(file = %p.display(), entities = s.entities().len(), "schema loaded");
            Some(s)
        }
        // A custom worker's own schema, unless `--schema` names another.
        None if extras.schema.is_some() => extras.schema.clone(),
        None if plan.workflows.is_some() => {
            warn!("no --schema: only workflows that carry `schema` in their input can start");
            None
        }
        None => None,
    };
    // Metrics and health first: `/healthz` answers while the worker connects.
    let health = Health::new();
    let served = serve_metrics(&args, health.clone()).await?;
    let mut resolved = args.connect.resolve()?;
    let mut dev_server = None;
    if !resolved.address_configured && !reachable("localhost:7233") {
        if args.no_dev_server {
            bail!(
                "no Temporal server is configured and none answers at localhost:7233 (set TEMPORAL_ADDRESS or --address)"
            );
        }
        let cli = find_cli(args.temporal_cli.as_deref())?;
        let opts = DevServerOptions {
            port: args.dev_server_port,
            ui_port: Some(args.dev_server_ui_port),
            namespace: resolved.namespace(),
            db_file: args.dev_server_db.clone(),
            extra_args: Vec::new(),
            show_output: false,
        };
        // The dev server does not inherit the worker's secrets (codec keys, tokens, credentials).
        let srv = DevServer::start_without(&cli, &opts, &args.token_env_vars()).await?;
        info!(
            address = %srv.address,
            ui = srv.ui.as_deref().unwrap_or("-"),
            "no Temporal server configured: started a local dev server ({})",
            cli.display()
        );
        resolved.profile.address = Some(srv.address.clone());
        dev_server = Some(srv);
    }
    let identity = format!("stateful-worker-{}@{}", std::process::id(), hostname());
    let client = connect_with_retry(&resolved, &identity).await?;
    health.set_phase(Phase::Starting);
    if plan.workflows.is_some() {
        // Before the first workflow task: whether runs set their search attributes.
        let register = args
            .register_search_attributes
            .unwrap_or(dev_server.is_some());
        let namespace = resolved.namespace();
        if !search_attributes::ensure(&client, &namespace, register).await {
            tokio::spawn(search_attributes::recheck(client.clone(), namespace));
        }
    }
    let result = run_with_client(
        &args, &plan, client, &resolved, schema, served, shutdown, &extras,
    )
    .await;
    health.set_phase(Phase::Stopped);
    if let Some(srv) = dev_server {
        srv.stop().await;
    }
    result
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn connect_with_retry(resolved: &Resolved, identity: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = resolved.connect(identity).await?;
            client
                .count_workflows("", WorkflowCountOptions::default())
                .await
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("namespace `{}` does not answer", resolved.namespace()))?;
            anyhow::Ok(client)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The metrics and health server, once it runs: the SDK's meter, the address it bound and the
/// worker's health.
struct Served {
    meter: Option<Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>>,
    bound: Option<SocketAddr>,
    health: Arc<Health>,
}

#[allow(clippy::too_many_arguments)]
async fn run_with_client(
    args: &WorkerArgs,
    plan: &Plan,
    client: Client,
    resolved: &Resolved,
    schema: Option<Schema>,
    served: Served,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    extras: &Extras,
) -> anyhow::Result<()> {
    let codec = resolved.codec.clone();
    for w in args.api_limit_warnings(codec.compress) {
        warn!("{w}");
    }
    let Served {
        meter,
        bound: metrics_bound,
        health,
    } = served;
    let namespace = resolved.namespace();
    if let Some(m) = &meter
        && let Some(queue) = &plan.workflows
    {
        tokio::spawn(export_workflow_metrics(
            m.clone(),
            namespace.clone(),
            queue.clone(),
        ));
    }
    let telemetry = TelemetryOptions::builder().maybe_metrics(meter.clone());
    let runtime_opts = RuntimeOptions::builder()
        .telemetry_options(telemetry.build())
        .build()
        .map_err(|e| anyhow!(e))?;
    let runtime = Runtime::from_current_tokio(runtime_opts)?;
    let mut options = worker_options(
        args,
        plan,
        schema.as_ref(),
        meter.as_ref(),
        &client,
        &namespace,
    )?;
    // A custom worker's activities run where the HTTP activities run.
    extras.register(plan, &mut options);
    let codec_bound = serve_codec(args, &codec).await?;
    stateful_workflows::set_payload_compression(codec.compress);
    stateful_workflows::set_adopt_worker_schema(args.adopt_worker_schema && schema.is_some());
    // Test-only (hidden flag): the rolling-deploy test's build B.
    stateful_workflows::set_test_patched_difference(args.test_patched_difference);
    // The queue a tree's root records for its HTTP activities when it first starts.
    stateful_workflows::set_activity_task_queue(plan.activity_queue.clone());
    let ingress_bound = serve_ingress(args, &client, schema.as_ref()).await?;
    let explorer_bound = serve_explorer(args, &client, &namespace).await?;
    let mut workers = options
        .into_iter()
        .map(|o| SdkWorker::new(&runtime, client.clone(), o))
        .collect::<Result<Vec<_>, _>>()?;
    let stops: Vec<_> = workers.iter().map(|w| w.shutdown_handle()).collect();
    let draining = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Not ready from now on: an orchestrator sends nothing new our way while we drain.
        draining.set_phase(Phase::Draining);
        info!("shutting down: finishing in-flight tasks");
        for stop in &stops {
            stop();
        }
    });
    health.set_detail(serde_json::json!({
        "mode": args.mode.as_str(),
        "workflowTaskQueue": plan.workflows,
        "activityTaskQueues": plan.http,
    }));
    let activity_queue = plan
        .activity_queue
        .clone()
        .or_else(|| plan.http.last().cloned())
        .unwrap_or_else(|| args.task_queue.clone());
    info!(
        address = %resolved.address(),
        namespace = %resolved.namespace(),
        task_queue = %args.task_queue,
        mode = %args.mode.as_str(),
        activity_task_queue = %activity_queue,
        deployment = %args.deployment()?.map(|v| format!("{}:{}", v.deployment_name, v.build_id)).unwrap_or_else(|| "unversioned".into()),
        metrics = %metrics_bound.map(|a| format!("http://{a}/metrics")).unwrap_or_else(|| "off".into()),
        health = %metrics_bound.map(|a| format!("http://{a}/readyz")).unwrap_or_else(|| "off".into()),
        ingress = %ingress_bound.map(|a| format!("http://{a}/v1")).unwrap_or_else(|| "off".into()),
        explorer = %explorer_bound.as_ref().map(stateful_explorer::url).unwrap_or_else(|| "off".into()),
        encryption = %codec.aes.as_ref().map(|c| format!("aes-256-gcm key {}", c.current_key())).unwrap_or_else(|| "off".into()),
        compression = %if codec.compress { "zstd" } else { "off" },
        codec_server = %codec_bound.map(|a| format!("http://{a}")).unwrap_or_else(|| "off".into()),
        "worker ready"
    );
    // The SDK starts polling as soon as `run` is polled (after its namespace check); from then on
    // a probe checks every few seconds that Temporal answers.
    health.set_phase(Phase::Polling);
    tokio::spawn(health::probe(client.clone(), health.clone()));
    // The futures of `run` are not `Send`: they run together on this task.
    match workers.as_mut_slice() {
        [w] => w.run().await?,
        [a, b] => {
            tokio::try_join!(a.run(), b.run())?;
        }
        _ => bail!("a worker runs one or two SDK workers"),
    }
    info!("worker stopped");
    Ok(())
}

/// The metrics and health server on `--metrics-addr` (`none`: off): the SDK's Prometheus exporter
/// (with the `--metrics-*` naming options) on a loopback port of its own, and, on that address,
/// `/metrics` (passed through from it), `/healthz` and `/readyz` (see [`health`]).
async fn serve_metrics(args: &WorkerArgs, health: Arc<Health>) -> anyhow::Result<Served> {
    let addr = args.metrics_addr.as_str();
    if addr == "none" {
        return Ok(Served {
            meter: None,
            bound: None,
            health,
        });
    }
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics-addr `{addr}` is not host:port"))?;
    // It serves `/metrics` only and keeps its registry to itself: it stays on loopback, behind
    // the server below.
    let exporter = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .counters_total_suffix(args.metrics_total_suffix)
            .unit_suffix(args.metrics_unit_suffix)
            .use_seconds_for_durations(args.metrics_seconds)
            .build(),
    )
    .context("cannot start the SDK's metrics exporter on 127.0.0.1")?;
    let bound = health::serve(addr, health.clone(), Some(exporter.bound_addr)).await?;
    Ok(Served {
        meter: Some(exporter.meter as Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>),
        bound: Some(bound),
        health,
    })
}

/// The SDK workers' options, one per task queue the worker polls: on the main queue,
/// StatefulWorkflow, the schema and `workflowType` (with the worker's client) local activities,
/// and the HTTP activities when it runs them there; on the activity queue, the HTTP activities.
/// Pollers, cache, sticky timeout, the activity rate limit, graceful shutdown.
fn worker_options(
    args: &WorkerArgs,
    plan: &Plan,
    schema: Option<&Schema>,
    meter: Option<&Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>>,
    client: &Client,
    namespace: &str,
) -> anyhow::Result<Vec<WorkerOptions>> {
    // One instance per SDK worker: its connection pool and circuit breaker, and its metrics labelled
    // with the namespace and the queue it polls.
    let http = |queue: &str| {
        let h = stateful_activities::HttpActivities::new(args.http_config());
        match meter {
            Some(m) => h.with_metrics(
                stateful_activities::Metrics::new(m.clone()).with_scope(namespace, queue),
            ),
            None => h,
        }
    };
    let grace = Duration::from_secs(args.shutdown_grace);
    let activity_pollers = PollerBehavior::SimpleMaximum(args.activity_pollers.max(1));
    // Worker Versioning: every SDK worker of the process polls as the same deployment version
    // (the workflow queue and the activity queue alike); workflows are pinned to the version
    // that runs their first task, and move at a continue-as-new (`run.rs`). Unversioned: the
    // SDK's default (a build id from the executable's checksum, no versioning).
    let deployment = args.deployment()?.map(|version| {
        WorkerDeploymentOptions::new(version)
            .use_worker_versioning(true)
            .default_versioning_behavior(VersioningBehavior::Pinned)
            .build()
    });
    let mut out = Vec::new();
    if let Some(queue) = &plan.workflows {
        let mut o = WorkerOptions::new(queue.clone())
            .register_workflow::<StatefulWorkflow>()?
            .register_activities(SchemaActivities::new(schema))
            // `workflowType`: what runs under a child's id, before it is adopted.
            .register_activities(DescribeActivities::new(client.clone()));
        let runs_http = plan.http.contains(queue);
        if runs_http {
            o = o.register_activities(http(queue));
        }
        // Without the HTTP activities, the SDK still polls this queue for activity tasks (it does
        // whenever activities, local ones included, are registered): one poller is enough.
        let pollers = if runs_http {
            activity_pollers
        } else {
            PollerBehavior::SimpleMaximum(1)
        };
        out.push(
            o.workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(
                args.workflow_pollers.max(2),
            ))
            .activity_task_poller_behavior(pollers)
            .max_cached_workflows(args.max_cached_workflows)
            .sticky_queue_schedule_to_start_timeout(Duration::from_millis(
                args.sticky_timeout_ms.max(100),
            ))
            .maybe_max_task_queue_activities_per_second(
                args.activity_rate_limit.filter(|_| runs_http),
            )
            .graceful_shutdown_period(grace)
            .maybe_deployment_options(deployment.clone())
            .build(),
        );
    }
    for queue in plan
        .http
        .iter()
        .filter(|q| plan.workflows.as_ref() != Some(*q))
    {
        out.push(
            WorkerOptions::new(queue.clone())
                .register_activities(http(queue))
                .activity_task_poller_behavior(activity_pollers)
                .maybe_max_task_queue_activities_per_second(args.activity_rate_limit)
                .graceful_shutdown_period(grace)
                .maybe_deployment_options(deployment.clone())
                .build(),
        );
    }
    Ok(out)
}

/// The codec server (`--codec-server`), if asked for: the address it bound. It needs something to
/// serve: the codec keys, compression, or both.
async fn serve_codec(args: &WorkerArgs, codec: &Codec) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = &args.codec_server else {
        return Ok(None);
    };
    if !codec.is_on() {
        bail!(
            "--codec-server needs the codec keys (--codec-keys-file or STATEFUL_CODEC_KEYS) or compression (--compress or STATEFUL_CODEC_COMPRESS=zstd)"
        );
    }
    let codec = codec.clone();
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--codec-server `{addr}` is not host:port"))?;
    let token = match &args.codec_server_token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t),
            _ => {
                bail!("--codec-server-token-env: the environment variable {var} is unset or empty")
            }
        },
        None => None,
    };
    let opts = codec_server::Options {
        token,
        cors_origins: args.codec_cors_origin.clone(),
        limits: args.codec_server_limits(),
    };
    let bound = codec_server::serve(codec, addr, opts).await?;
    Ok(Some(bound))
}

/// The HTTP ingress (`--ingress`), if asked for: the address it bound.
async fn serve_ingress(
    args: &WorkerArgs,
    client: &Client,
    schema: Option<&Schema>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = &args.ingress else {
        return Ok(None);
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--ingress `{addr}` is not host:port"))?;
    let token = std::env::var(&args.ingress_token_env).unwrap_or_default();
    if token.trim().is_empty() {
        bail!(
            "--ingress needs a bearer token for its callers in the environment variable {} (it is unset or empty)",
            args.ingress_token_env
        );
    }
    let ing = ingress::Ingress::new(
        client.clone(),
        args.task_queue.clone(),
        schema.cloned().map(Arc::new),
        token.trim(),
    )
    .with_limits(args.ingress_limits());
    Ok(Some(ing.serve(addr).await?))
}

/// The web explorer (`--explorer`), if asked for: the address it bound. Its requests go through the
/// ingress's limits (rate, body, time) and its token check.
async fn serve_explorer(
    args: &WorkerArgs,
    client: &Client,
    namespace: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = &args.explorer else {
        return Ok(None);
    };
    let addr = stateful_explorer::resolve(addr, "--explorer").await?;
    let token = stateful_explorer::token_from_env(&addr, &args.explorer_token_env, "--explorer")?;
    let auth = token.map(|t| {
        let check = auth::BearerToken::new(&t);
        let check =
            Arc::new(move |given: &str| check.matches(given)) as stateful_explorer::TokenCheck;
        stateful_explorer::Auth::new(&t, Some(check))
    });
    let explorer = stateful_explorer::Explorer::new(
        client.clone(),
        stateful_explorer::Config {
            namespace: namespace.to_string(),
            temporal_ui_url: args.temporal_ui_url.clone(),
            auth,
            loopback: stateful_explorer::is_loopback(&addr),
            secure_cookie: args.explorer_secure_cookie,
        },
    )?;
    // A tree page walks the whole tree (some 5 queries a workflow): a large one takes longer than
    // an ingress request may.
    let limits = auth::HttpLimits {
        max_body: 64 * 1024,
        timeout: Duration::from_secs(args.http_request_timeout.max(120)),
        ..args.ingress_limits()
    };
    // The guard's own answers (429, 413, 503) get the explorer's security headers too.
    let router = stateful_explorer::with_security_headers(auth::guard(
        explorer.router(),
        limits,
        "explorer",
    ));
    Ok(Some(stateful_explorer::serve(router, addr).await?))
}

/// Exports the workflows' process-wide counters (see `stateful_workflows::metrics`) every second,
/// labelled with the namespace and the task queue the worker runs its workflows from (one pair per
/// process: the label values are bounded).
async fn export_workflow_metrics(
    meter: Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>,
    namespace: String,
    task_queue: String,
) {
    use stateful_workflows::metrics as wm;
    use temporalio_common::telemetry::metrics::{MetricKeyValue, MetricParameters, NewAttributes};
    let p = |name: &'static str, description: &'static str| {
        MetricParameters::builder()
            .name(name)
            .description(description)
            .build()
    };
    let plain: Vec<_> = wm::all()
        .into_iter()
        .map(|(name, description, count)| (meter.counter(p(name, description)), count, 0u64))
        .collect();
    let loads = meter.counter(p("stateful_loads", "Loads from entity APIs, by outcome"));
    let scope = || {
        [
            MetricKeyValue::new("namespace", namespace.clone()),
            MetricKeyValue::new("task_queue", task_queue.clone()),
        ]
    };
    let load_attrs: Vec<_> = wm::LOADS
        .iter()
        .map(|(k, c)| {
            let kvs = scope()
                .into_iter()
                .chain([MetricKeyValue::new("outcome", *k)]);
            (meter.new_attributes(NewAttributes::from(kvs)), c)
        })
        .collect();
    let scoped = meter.new_attributes(NewAttributes::from(scope()));
    let mut plain = plain;
    let mut load_seen = vec![0u64; load_attrs.len()];
    loop {
        for (counter, count, seen) in plain.iter_mut() {
            let now = count.get();
            counter.add(now - *seen, &scoped);
            *seen = now;
        }
        for ((attrs, count), seen) in load_attrs.iter().zip(load_seen.iter_mut()) {
            let now = count.get();
            loads.add(now - *seen, attrs);
            *seen = now;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_http_servers_limits_default_and_parse() {
        let args = WorkerArgs::parse_from(["worker"]);
        let ing = args.ingress_limits();
        assert_eq!(ing.max_body, 2 * 1024 * 1024);
        assert_eq!((ing.rate_per_second, ing.burst), (100, 200));
        assert_eq!(ing.timeout, Duration::from_secs(30));
        let codec = args.codec_server_limits();
        assert_eq!(codec.max_body, 4 * 1024 * 1024);
        assert_eq!((codec.rate_per_second, codec.burst), (1000, 2000));
        assert!(args.codec_cors_origin.is_empty());
        assert_eq!(
            args.token_env_vars(),
            ["STATEFUL_INGRESS_TOKEN", "EXPLORER_TOKEN"]
        );
        let set = WorkerArgs::parse_from([
            "worker",
            "--codec-cors-origin",
            "https://a.example,https://b.example",
            "--codec-cors-origin",
            "https://c.example",
            "--codec-server-token-env",
            "CODEC_TOKEN",
            "--ingress-rate-limit",
            "0",
            "--http-request-timeout",
            "5",
        ]);
        assert_eq!(
            set.codec_cors_origin,
            [
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        assert_eq!(
            set.token_env_vars(),
            ["STATEFUL_INGRESS_TOKEN", "EXPLORER_TOKEN", "CODEC_TOKEN"]
        );
        assert_eq!(set.ingress_limits().rate_per_second, 0);
        assert_eq!(set.codec_server_limits().timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_api_limits_default_within_the_payload_limit_and_warn_when_raised_alone() {
        let args = WorkerArgs::parse_from(["worker"]);
        let cfg = args.http_config();
        assert!(cfg.max_body_bytes <= 1_900_000);
        assert!(cfg.max_result_bytes < stateful_activities::PAYLOAD_LIMIT_BYTES);
        assert!(args.api_limit_warnings(false).is_empty());
        let raised = WorkerArgs::parse_from(["worker", "--api-max-body", "4194304"]);
        let w = raised.api_limit_warnings(true);
        assert!(w.len() == 1 && w[0].contains("ResultTooLarge"), "{w:?}");
        let both = WorkerArgs::parse_from([
            "worker",
            "--api-max-body",
            "4194304",
            "--api-max-result",
            "4300000",
        ]);
        assert!(both.api_limit_warnings(true).is_empty());
        let w = both.api_limit_warnings(false);
        assert!(w.len() == 1 && w[0].contains("--compress"), "{w:?}");
    }

    #[test]
    fn the_log_format_and_the_metric_names_default_to_text_and_the_dashboards_names() {
        let args = WorkerArgs::parse_from(["worker"]);
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(!args.metrics_total_suffix && !args.metrics_unit_suffix && !args.metrics_seconds);
        let set = WorkerArgs::parse_from([
            "worker",
            "--log-format",
            "json",
            "--metrics-total-suffix",
            "--metrics-unit-suffix",
            "--metrics-seconds",
        ]);
        assert_eq!(set.log_format, LogFormat::Json);
        assert!(set.metrics_total_suffix && set.metrics_unit_suffix && set.metrics_seconds);
        assert!(WorkerArgs::try_parse_from(["worker", "--log-format", "yaml"]).is_err());
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        WorkerArgs::parse_from(std::iter::once("worker").chain(args.iter().copied())).plan()
    }

    #[test]
    fn the_modes_poll_what_they_run_and_refuse_what_cannot_work() {
        let q = |s: &str| s.to_string();
        // Default: everything on the main queue, as before.
        let p = plan(&[]).unwrap();
        assert_eq!(p.workflows, Some(q("stateful")));
        assert_eq!((p.activity_queue, p.http), (None, vec![q("stateful")]));
        // Both, with a queue of their own: the roots record it; the main queue's HTTP activities
        // (trees started before) still run here.
        let p = plan(&["--activity-task-queue", "http"]).unwrap();
        assert_eq!(p.activity_queue, Some(q("http")));
        assert_eq!(p.http, [q("stateful"), q("http")]);
        // The main queue named again is no queue of their own.
        let p = plan(&["--activity-task-queue", "stateful"]).unwrap();
        assert_eq!((p.activity_queue, p.http), (None, vec![q("stateful")]));
        // Workflows only: no HTTP activity, a queue of their own required.
        let p = plan(&["--mode", "workflows", "--activity-task-queue", "http"]).unwrap();
        assert_eq!(p.workflows, Some(q("stateful")));
        assert_eq!(p.activity_queue, Some(q("http")));
        assert!(p.http.is_empty());
        for bad in [
            &["--mode", "workflows"][..],
            &["--mode", "workflows", "--activity-task-queue", "stateful"],
            &["--mode", "workflows", "--activity-task-queue", "  "],
        ] {
            let e = plan(bad).unwrap_err().to_string();
            assert!(e.contains("--activity-task-queue"), "{bad:?}: {e}");
        }
        let e = plan(&[
            "--mode",
            "workflows",
            "--activity-task-queue",
            "http",
            "--activity-rate-limit",
            "5",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--mode activities or both"), "{e}");
        // Activities only: from their queue, or from the main one without it.
        let p = plan(&["--mode", "activities", "--activity-task-queue", "http"]).unwrap();
        assert_eq!((p.workflows, p.http), (None, vec![q("http")]));
        let p = plan(&["--mode", "activities"]).unwrap();
        assert_eq!(p.http, [q("stateful")]);
        // Bounds.
        for bad in ["0", "-1", "NaN", "inf"] {
            let flag = format!("--activity-rate-limit={bad}");
            let e = plan(&[&flag]).unwrap_err().to_string();
            assert!(e.contains("above 0"), "{bad}: {e}");
        }
        let long = "q".repeat(1_001);
        let e = plan(&["--activity-task-queue", &long])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1000"), "{e}");
        assert!(
            WorkerArgs::try_parse_from(["worker", "--mode", "sometimes"]).is_err(),
            "an unknown mode is a usage error"
        );
    }

    #[test]
    fn a_deployment_version_takes_both_flags_or_neither() {
        let deployment = |args: &[&str]| {
            WorkerArgs::parse_from(std::iter::once("worker").chain(args.iter().copied()))
                .deployment()
        };
        assert!(deployment(&[]).unwrap().is_none(), "unversioned by default");
        let v = deployment(&["--deployment-name", "stateful", "--build-id", "0.3.0"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (v.deployment_name.as_str(), v.build_id.as_str()),
            ("stateful", "0.3.0")
        );
        // Blank values are none (an empty variable).
        assert!(
            deployment(&["--deployment-name", " ", "--build-id", ""])
                .unwrap()
                .is_none()
        );
        let e = deployment(&["--build-id", "0.3.0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --deployment-name"), "{e}");
        let e = deployment(&["--deployment-name", "stateful"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --build-id"), "{e}");
    }
}
