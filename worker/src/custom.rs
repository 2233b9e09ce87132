//! A custom worker: the stock worker (the same `StatefulWorkflow`, flags, servers and activities)
//! with a team's own Rust code, built as its own binary:
//!
//! ```no_run
//! use serde_json::{Value, json};
//! use stateful_workflows::extend::{EntityHook, HookCx};
//!
//! struct Audit;
//!
//! impl EntityHook for Audit {
//!     fn on_change(&self, cx: &mut HookCx<'_>) {
//!         if cx.changed("price") {
//!             cx.activity("priceAlert", json!({"id": cx.id()}));
//!         }
//!     }
//! }
//!
//! # async fn main_() -> anyhow::Result<()> {
//! worker::Worker::builder()
//!     .schema_file("schema.yaml")
//!     .hook("Listing", Audit)
//!     .query("price", |q, _args| Ok(q.get("price").cloned().unwrap_or(Value::Null)))
//!     // .activities(MyActivities::default())
//!     .run()
//!     .await
//! # }
//! ```
//!
//! The hooks and handlers are workflow code (deterministic: see `stateful_workflows::extend`); the
//! activities are not. The builder's [`WorkerBuilder::run`] parses the stock worker's flags
//! ([`WorkerArgs`]), so a custom worker is configured and deployed as the stock one.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::Parser;
use serde_json::Value;
use stateful_engine::Schema;
use stateful_workflows::extend::{EntityHook, Extensions, HookCx, QueryCx};
use temporalio_sdk::WorkerOptions;
use temporalio_sdk::activities::ActivityImplementer;

use crate::{Plan, WorkerArgs};

type Register = Arc<dyn Fn(&mut WorkerOptions) + Send + Sync>;

/// What a custom worker adds to [`crate::run`]: a default schema and activities.
#[derive(Clone, Default)]
pub(crate) struct Extras {
    /// The schema used when `--schema` names none.
    pub(crate) schema: Option<Schema>,
    /// Registers the custom activities on an SDK worker.
    activities: Vec<Register>,
}

impl Extras {
    /// Registers the custom activities on every SDK worker that runs the HTTP activities (the
    /// queues of `plan.http`): a workflow's activities go to the queue its loads go to.
    pub(crate) fn register(&self, plan: &Plan, options: &mut [WorkerOptions]) {
        for o in options.iter_mut() {
            if plan.http.contains(&o.task_queue) {
                for r in &self.activities {
                    r(o);
                }
            }
        }
    }
}

/// A custom worker: see [`Worker::builder`].
pub struct Worker;

impl Worker {
    /// Starts describing a custom worker: its schema, hooks, custom handlers and activities.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }
}

/// Builds and runs a custom worker ([`Worker::builder`]).
#[derive(Default)]
pub struct WorkerBuilder {
    ext: Extensions,
    extras: Extras,
    args: Option<WorkerArgs>,
    schema_error: Option<String>,
}

impl WorkerBuilder {
    /// The schema of workflows started without one (the stock worker's `--schema`, which, given,
    /// replaces it).
    pub fn schema(mut self, schema: Schema) -> Self {
        self.extras.schema = Some(schema);
        self
    }

    /// [`schema`](Self::schema), read from a YAML or JSON file (an error is reported by `run`).
    pub fn schema_file(mut self, path: impl AsRef<Path>) -> Self {
        match Schema::from_file(path.as_ref()) {
            Ok(s) => self.extras.schema = Some(s),
            Err(e) => self.schema_error = Some(format!("{}: {e}", path.as_ref().display())),
        }
        self
    }

    /// [`schema`](Self::schema), from the text of a schema file (e.g. `include_str!`).
    pub fn schema_text(mut self, text: &str, source: &str) -> Self {
        match Schema::parse(text, source) {
            Ok(s) => self.extras.schema = Some(s),
            Err(e) => self.schema_error = Some(format!("{source}: {e}")),
        }
        self
    }

    /// Adds a hook on `entity`'s workflows (hooks of one entity run in the order added).
    pub fn hook(mut self, entity: impl Into<String>, hook: impl EntityHook) -> Self {
        self.ext = self.ext.hook(entity, hook);
        self
    }

    /// Registers the custom signal `name` (sent as the `custom` signal, `{"name", "args"}`).
    pub fn signal(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&mut HookCx<'_>, Value) + Send + Sync + 'static,
    ) -> Self {
        self.ext = self.ext.signal(name, f);
        self
    }

    /// Registers the custom acknowledged update `name` (sent as the `custom` update).
    pub fn update(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&mut HookCx<'_>, Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.ext = self.ext.update(name, f);
        self
    }

    /// Registers the custom query `name` (sent as the `custom` query).
    pub fn query(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&QueryCx<'_>, Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.ext = self.ext.query(name, f);
        self
    }

    /// Registers activities (an SDK `#[activities]` type) on every SDK worker of the process that
    /// runs the HTTP activities (`--mode both` or `activities`), after ours: one named as ours
    /// (`loadData`, ...) replaces it.
    pub fn activities<A>(mut self, activities: A) -> Self
    where
        A: ActivityImplementer + Clone + Send + Sync + 'static,
    {
        self.extras.activities.push(Arc::new(move |o| {
            o.register_activities(activities.clone());
        }));
        self
    }

    /// The worker's flags (default: parsed from the command line by [`run`](Self::run)).
    pub fn args(mut self, args: WorkerArgs) -> Self {
        self.args = Some(args);
        self
    }

    /// The hooks and handlers registered so far.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// Runs the worker as the stock binary does: flags from the command line (unless
    /// [`args`](Self::args) gave them), the log, OpenTelemetry (when the `OTEL_*` variables ask for
    /// it), until SIGINT or SIGTERM. For a binary's `main`.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let args = self.args.take().unwrap_or_else(WorkerArgs::parse);
        crate::init_logging(args.log_format);
        let tracing = stateful_client::telemetry::init("stateful-worker")?;
        let result = self.args(args).run_until(crate::shutdown_signal()).await;
        if let Some(t) = tracing {
            t.shutdown(Duration::from_secs(5)).await;
        }
        result
    }

    /// Runs the worker until `shutdown` completes, without touching the log or tracing setup (the
    /// caller's). Installs the hooks and handlers for the process: once per process.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if let Some(e) = self.schema_error.take() {
            anyhow::bail!("bad schema: {e}");
        }
        let args = self.args.take().unwrap_or_else(WorkerArgs::parse);
        let described = self.ext.describe();
        stateful_workflows::extend::install(self.ext).map_err(|e| anyhow!(e))?;
        tracing::info!(extensions = %described, "custom worker");
        crate::run_with(args, shutdown, self.extras).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Noop;
    impl EntityHook for Noop {
        fn on_change(&self, _cx: &mut HookCx<'_>) {}
    }

    #[test]
    fn the_builder_collects_hooks_handlers_and_a_schema() {
        let b = Worker::builder()
            .schema_text("Listing: {}\n", "test")
            .hook("Listing", Noop)
            .signal("s", |_, _| {})
            .update("u", |_, _| Ok(Value::Null))
            .query("q", |_, _| Ok(Value::Null));
        assert_eq!(
            b.extensions().describe(),
            json!({"hooks": {"Listing": 1}, "signals": ["s"], "updates": ["u"], "queries": ["q"]})
        );
        assert!(b.extras.schema.is_some() && b.schema_error.is_none());
        let bad = Worker::builder().schema_text("Listing: [", "bad.yaml");
        assert!(bad.schema_error.unwrap().starts_with("bad.yaml"));
    }

    #[test]
    fn activities_go_where_the_http_activities_run() {
        let plan = Plan {
            workflows: Some("main".into()),
            activity_queue: Some("http".into()),
            http: vec!["http".into()],
        };
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let extras = Extras {
            schema: None,
            activities: vec![Arc::new(move |o: &mut WorkerOptions| {
                seen.lock().unwrap().push(o.task_queue.clone())
            })],
        };
        let mut options = vec![
            WorkerOptions::new("main").build(),
            WorkerOptions::new("http").build(),
        ];
        extras.register(&plan, &mut options);
        assert_eq!(*calls.lock().unwrap(), vec!["http".to_string()]);
    }
}
