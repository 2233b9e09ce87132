//! Outbound change hooks: the call the core says is due (`Core::take_hook`), made through the
//! `httpRequest` activity, one at a time; its outcome goes back to the core (`Core::hook_done`). The
//! decisions (what is called, coalescing, order, keys, refusals) are the core's: see
//! `stateful_core::hooks`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use stateful_core::hooks::HookCall;
use temporalio_sdk::{ActivityOptions, WorkflowContext};
use tracing::{info, warn};

use crate::StatefulWorkflow;
use crate::effects::InFlight;
use crate::run::now_ms;

/// A hook call in flight: its sequence number and outcome (`Ok(HTTP status)` or why it failed).
pub(crate) type HookOutcome = (u64, Result<u16, String>);

/// Hook calls retry transient failures (5xx, 408, 429, timeouts, connection errors) for about ten
/// minutes (12 attempts, backoff from 1 s to 2 min); the kinds retrying cannot fix
/// (`FailureKind::NON_RETRYABLE`: 4xx, a refused host, ...) end the delivery at once, refused.
fn hook_options(task_queue: Option<String>, summary: String) -> ActivityOptions {
    crate::loading::http_options(
        task_queue,
        summary,
        Duration::from_secs(1),
        Duration::from_secs(120),
        12,
    )
}

/// Starts the next hook call, if one is due and none is out.
pub(crate) fn start_hook(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    if inflight.hook.is_some() {
        return;
    }
    let now = now_ms(ctx.workflow_time());
    let Some(call) = ctx.state_mut(|s| s.core.take_hook(now)) else {
        report_refusals(ctx);
        return;
    };
    report_refusals(ctx);
    if !ctx.is_replaying() {
        info!(
            workflow_id = ctx.workflow_id(),
            url = %crate::ui::safe_url(&call.url),
            key = %call.key,
            "calling a hook"
        );
    }
    let queue = ctx.state(|s| s.core.activity_task_queue().map(str::to_string));
    inflight.hook = Some(call_hook(ctx.clone(), call, queue));
}

fn call_hook(
    c: WorkflowContext<StatefulWorkflow>,
    call: HookCall,
    queue: Option<String>,
) -> LocalBoxFuture<'static, HookOutcome> {
    async move {
        let summary = format!("hook POST {}", crate::ui::safe_url(&call.url));
        let headers = BTreeMap::from([("Idempotency-Key".to_string(), call.key.clone())]);
        let got = c
            .execute_activity(
                stateful_activities::HttpActivities::http_request,
                stateful_activities::RequestInput {
                    method: "POST".into(),
                    url: call.url,
                    headers,
                    body: Some(call.body),
                    token: call.token,
                    timeout_ms: None,
                },
                hook_options(queue, summary),
            )
            .await;
        let outcome = match got {
            Ok(out) => Ok(out.status),
            Err(e) => Err(crate::loading::failure_text(&e, "the hook call timed out")),
        };
        (call.seq, outcome)
    }
    .boxed_local()
}

/// A finished call: its outcome to the core, counted and logged; then the next call.
pub(crate) fn hook_done(
    ctx: &WorkflowContext<StatefulWorkflow>,
    (seq, outcome): HookOutcome,
    inflight: &mut InFlight,
) {
    let now = now_ms(ctx.workflow_time());
    if !ctx.is_replaying() {
        match &outcome {
            Ok(s) if (200..300).contains(s) => {
                info!(
                    workflow_id = ctx.workflow_id(),
                    status = s,
                    "hook delivered"
                )
            }
            Ok(s) => warn!(
                workflow_id = ctx.workflow_id(),
                status = s,
                "hook refused the delivery"
            ),
            Err(e) => warn!(workflow_id = ctx.workflow_id(), error = %e, "hook delivery failed"),
        }
    }
    ctx.state_mut(|s| s.core.hook_done(seq, outcome, now));
    report_refusals(ctx);
    start_hook(ctx, inflight);
}

/// Counts what the core delivered or refused since the last report (refusals happen in the core
/// too: a hook that left the schema, a host outside the tree's API hosts).
fn report_refusals(ctx: &WorkflowContext<StatefulWorkflow>) {
    let (delivered, refused) = ctx.state(|s| s.core.hook_counts());
    let (seen_d, seen_r) = ctx.state(|s| s.hooks_reported);
    if ctx.is_replaying() {
        ctx.state_mut(|s| s.hooks_reported = (delivered, refused));
        return;
    }
    crate::metrics::HOOKS_DELIVERED.add(delivered.saturating_sub(seen_d));
    crate::metrics::HOOKS_REFUSED.add(refused.saturating_sub(seen_r));
    ctx.state_mut(|s| s.hooks_reported = (delivered, refused));
}

/// Before a run ends: what waits is delivered (each delivery within its activity's retries).
pub(crate) async fn deliver_before_end(
    ctx: &WorkflowContext<StatefulWorkflow>,
    inflight: &mut InFlight,
) {
    start_hook(ctx, inflight);
    while let Some(f) = inflight.hook.take() {
        let outcome = f.await;
        hook_done(ctx, outcome, inflight);
    }
}
