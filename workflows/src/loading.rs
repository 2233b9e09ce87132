//! Loads from the entity's API (the `loadData` / `loadBatch` activities) and the periodic refresh
//! timer, when the core says one is due.

use std::time::Duration;

use futures::FutureExt;
use stateful_core::api::LoadRequest;
use stateful_core::load::BatchLoad;
use stateful_core::{FailureKind, Loaded, Secret};
use temporalio_common::error::IncomingError;
use temporalio_common::protos::temporal::api::common::v1::RetryPolicy;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, TimerOptions, WorkflowCancellationToken,
    WorkflowContext,
};
use tracing::info;

use crate::StatefulWorkflow;
use crate::effects::InFlight;
use crate::run::now_ms;

/// Loads retry transient failures (5xx, 408, 429 with `Retry-After`, timeouts, connection errors)
/// with backoff, up to 6 attempts; the kinds retrying cannot fix are named once, by
/// [`FailureKind::NON_RETRYABLE`]. They run on `task_queue`, the queue the workflow's input
/// recorded (`activityTaskQueue`), or, without one, on the workflow's own. `summary` says in the UI
/// which URL is loaded (never its query string nor credentials: `crate::ui::safe_url`).
fn load_options(task_queue: Option<String>, summary: String) -> ActivityOptions {
    http_options(
        task_queue,
        summary,
        Duration::from_millis(500),
        Duration::from_secs(30),
        6,
    )
}

/// The options of an HTTP activity (a load, a hook call): 30 s per attempt, backoff doubling from
/// `initial` to `max`, `attempts` in all, never retrying [`FailureKind::NON_RETRYABLE`].
pub(crate) fn http_options(
    task_queue: Option<String>,
    summary: String,
    initial: Duration,
    max: Duration,
    attempts: i32,
) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .maybe_task_queue(task_queue)
        .summary(summary)
        .retry_policy(RetryPolicy {
            initial_interval: Some(initial.try_into().unwrap_or_default()),
            backoff_coefficient: 2.0,
            maximum_interval: Some(max.try_into().unwrap_or_default()),
            maximum_attempts: attempts,
            non_retryable_error_types: FailureKind::NON_RETRYABLE
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
        })
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Starts the `loadData` activity (or `loadBatch`, with children's batch URLs: as many as needed so
/// that each result fits the payload limit) when one is due. What is left after retries is reported
/// to the workflow, which keeps running and loads again on the next trigger.
pub(crate) fn start_load(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    if inflight.load.is_some() {
        return;
    }
    let Some((LoadRequest { url, reason, batch }, token)) = ctx.state_mut(|s| s.core.take_load())
    else {
        return;
    };
    if !ctx.is_replaying() {
        info!(workflow_id = ctx.workflow_id(), %url, %reason, batch = batch.len(), "loading from the API");
    }
    // Recorded in the input (a root's first run took it from the worker): deterministic.
    let queue = ctx.state(|s| s.core.activity_task_queue().map(str::to_string));
    let c = ctx.clone();
    inflight.load = Some(load(c, url, token, batch, queue).boxed_local());
}

async fn load(
    c: WorkflowContext<StatefulWorkflow>,
    url: String,
    token: Option<Secret>,
    batch: Vec<(String, String)>,
    queue: Option<String>,
) -> Loaded {
    let done = if batch.is_empty() {
        let summary = crate::ui::load_summary(&url);
        c.execute_activity(
            stateful_activities::HttpActivities::load_data,
            stateful_activities::LoadInput {
                url,
                token,
                timeout_ms: None,
            },
            load_options(queue, summary),
        )
        .await
        .map(Loaded::Ok)
    } else {
        load_batch(&c, BatchLoad::new(url, batch), token.as_ref(), queue).await
    };
    done.unwrap_or_else(|e| failure(&e))
}

/// A batch load in as many `loadBatch` activities as their results need, one after another: each is
/// asked for the URLs not answered yet and answers those that fit the worker's result budget
/// ([`BatchLoad`] decides, from the activities' results only). A failed activity fails the load.
async fn load_batch(
    c: &WorkflowContext<StatefulWorkflow>,
    mut plan: BatchLoad,
    token: Option<&Secret>,
    queue: Option<String>,
) -> Result<Loaded, ActivityExecutionError> {
    while let Some(input) = plan.next_input(token) {
        let summary = crate::ui::batch_summary(
            input.urls.first().map(String::as_str).unwrap_or_default(),
            input.urls.len(),
        );
        let answers = c
            .execute_activity(
                stateful_activities::HttpActivities::load_batch,
                input,
                load_options(queue.clone(), summary),
            )
            .await?;
        if let Err(message) = plan.take(answers) {
            return Ok(Loaded::Error {
                kind: FailureKind::Failed,
                message,
            });
        }
    }
    if plan.activities() > 1 && !c.is_replaying() {
        info!(
            workflow_id = c.workflow_id(),
            activities = plan.activities(),
            "batch load split to keep each result within the payload limit"
        );
    }
    Ok(plan.finish())
}

/// An activity's failure as one line: `Type: message` for an application failure, `timed_out` for
/// a timeout, the error itself otherwise (hook calls and a custom worker's activities report it).
pub(crate) fn failure_text(e: &ActivityExecutionError, timed_out: &str) -> String {
    match e.cause() {
        Some(IncomingError::Application(app)) => format!(
            "{}: {}",
            app.type_name().unwrap_or("Failed"),
            app.failure()
                .map(|f| f.message.clone())
                .unwrap_or_else(|| e.to_string())
        ),
        Some(IncomingError::Timeout(_)) => timed_out.to_string(),
        _ => e.to_string(),
    }
}

/// A load activity's failure, as the workflow reports it: its type and message.
fn failure(e: &ActivityExecutionError) -> Loaded {
    let (kind, message) = match e.cause() {
        Some(IncomingError::Application(app)) => (
            FailureKind::from(app.type_name().unwrap_or("Failed").to_string()),
            app.failure()
                .map(|f| f.message.clone())
                .unwrap_or_else(|| e.to_string()),
        ),
        Some(IncomingError::Timeout(_)) => (FailureKind::Timeout, "the load timed out".to_string()),
        _ => (FailureKind::Failed, e.to_string()),
    };
    Loaded::Error { kind, message }
}

/// Arms the refresh timer for the next refresh, unless it is armed already.
pub(crate) fn arm_timer(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    let Some(due) = ctx.state(|s| s.core.refresh_due()) else {
        return;
    };
    if inflight.timer.as_ref().is_some_and(|(at, _)| *at <= due) {
        // Armed for this time or earlier: when it fires early, it is re-armed.
        return;
    }
    let now = now_ms(ctx.workflow_time());
    let wait = Duration::from_millis(due.saturating_sub(now).max(1));
    let c = ctx.clone();
    inflight.timer = Some((
        due,
        async move {
            let _ = c
                .timer(
                    TimerOptions::builder(wait)
                        .summary("refresh from the API".to_string())
                        .build(),
                )
                .await;
        }
        .boxed_local(),
    ));
}
