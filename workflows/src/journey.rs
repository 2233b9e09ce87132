//! A change's journey as one trace. With tracing on (the SDK's `OpenTelemetryPlugin`), a signal or
//! update handler runs under a span whose parent came in the message's `_tracer-data` header; the
//! run loop applies messages in batches from the main workflow future, whose context is the run's
//! (`RunWorkflow`). So that the signals and child starts a change causes continue its sender's trace,
//! the handlers note the context of the first message of a batch, and [`crate::run`] issues that
//! batch's commands under it (the plugin injects the current context into each outgoing command's
//! header). Commands released later, as acknowledgements make room, carry the run's context.
//!
//! Nothing here changes a command: only headers and spans differ, and Temporal's determinism
//! checks compare neither. With tracing off there is no active span, and nothing is noted.

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt as _;

/// The trace context of the first message queued since the last batch.
#[derive(Default)]
pub(crate) struct Journey(Option<Context>);

impl Journey {
    /// Notes the current context (a handler's), unless a message of this batch did already.
    pub(crate) fn note(&mut self) {
        if self.0.is_none() {
            let cx = Context::current();
            if cx.has_active_span() {
                self.0 = Some(cx);
            }
        }
    }

    /// The noted context, for the batch that applies the messages.
    pub(crate) fn take(&mut self) -> Option<Context> {
        self.0.take()
    }
}
