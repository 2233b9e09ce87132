//! The log context of workflow code: every line a run logs (`run`, `effects`, `loading`) is written
//! inside a span that names its workflow: `namespace`, `task_queue`, `workflow_id`, `run_id` and
//! `workflow_type`. The worker shows it before the message in text (`workflow{namespace=...}: ...`)
//! and in the `spans` list of each JSON line (`--log-format json`; `span` too while it is the
//! innermost).
//!
//! A span is no command: it changes nothing a workflow does, in replay or not (lines themselves are
//! written outside replay only). It never holds the token, nor anything from the input.

use temporalio_sdk::WorkflowContext;

/// The span a run of `ctx`'s workflow logs in. At the `ERROR` level, so that it is on whenever any
/// line of workflow code is (a `RUST_LOG=warn` keeps the context of the warnings).
pub(crate) fn span<W>(ctx: &WorkflowContext<W>) -> tracing::Span {
    tracing::error_span!(
        "workflow",
        namespace = ctx.namespace(),
        task_queue = ctx.task_queue(),
        workflow_id = ctx.workflow_id(),
        run_id = ctx.run_id(),
        // The only type this crate registers (`#[run(name = ...)]` in `stateful`).
        workflow_type = stateful_core::WORKFLOW_TYPE,
    )
}
