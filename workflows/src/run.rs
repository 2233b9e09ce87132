//! The run loop: take the start input, then apply everything that arrived in one workflow task as one
//! batch ([`run_batch`], used by the main loop and by the continue-as-new hand-over alike), until the
//! workflow ends or continues as new.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use serde_json::Value;
use stateful_core::input::StartInput;
use stateful_core::{Effect, Msg, Processed};
use stateful_engine::Schema;
use temporalio_common::data_converters::RawValue;
use temporalio_sdk::{
    ApplicationFailure, ContinueAsNewOptions, LocalActivityOptions, MemoValue, WorkflowContext,
    WorkflowResult, WorkflowTermination,
};
use temporalio_workflow::ContinueAsNewVersioningBehavior;
use tracing::{info, warn};

use crate::effects::{InFlight, Wake, admit, drain, execute, next_outcomes};
use crate::hooks::start_hook;
use crate::loading::{arm_timer, start_load};
use crate::{SchemaActivities, StatefulWorkflow, metrics, payload};

/// Workflow time in ms since the epoch.
pub(crate) fn now_ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fail(message: String) -> WorkflowTermination {
    ApplicationFailure::non_retryable(message).into()
}

/// What an acknowledged update sent while a run hands over is told (retryable: send it again).
pub const HANDING_OVER: &str =
    "retry: the workflow is continuing as new; send this update again (the next run takes it)";

/// What an acknowledged update sent to a workflow that ends is told.
pub const ENDED: &str =
    "refused: the workflow is ending (completed or cancelled) and takes no more changes";

/// The patch under which the continue-as-new hand-over upserts the memo when its last batches
/// changed the status (earlier releases did not: their histories replay without it).
const PATCH_MEMO_ON_HANDOVER: &str = "memo-on-handover";

/// The patch under which a workflow found running under a child's id (its start was refused) is
/// adopted only once the `workflowType` local activity has verified that it is of the expected
/// type; histories recorded before it adopt at once, as they ran. Asked when a batch first has
/// such a refusal to handle (so that only histories with an adoption hold its marker).
const PATCH_VERIFY_ADOPTION: &str = "verify-adoption";

/// The patch under which control messages are stamped and ordered, and a child is not sent back
/// what it added (histories recorded before it replay without it: see `stateful_core::order`).
const PATCH_ORDERED_CONTROL: &str = "ordered-control-messages";

/// The patch under which a workflow keeps the list of hosts its token may be sent to.
const PATCH_API_HOSTS: &str = "api-host-allow-list";

/// The patch under which a change from a workflow that sends no stamps (chrono-forge) is answered
/// with the winning values of what it touched, so that mixed trees converge. Asked when a batch
/// first holds such a change (so that only histories with one hold its marker).
const PATCH_ECHO_STAMPLESS: &str = "echo-stampless-peers";

/// The patch under which a workflow that Temporal cancelled ends CANCELED, as any Temporal workflow
/// does (a chrono-forge parent restarts a child only when its result is a cancellation); histories
/// recorded before it completed. Asked only when such a run ends. (The `cancel` signal still ends
/// the workflow COMPLETED, status `cancelled`: a decision of the tree, not a cancellation.)
const PATCH_CANCELLED_OUTCOME: &str = "temporal-cancel-ends-cancelled";

/// The patch under which a Temporal cancellation that arrives with other work (a signal, an update
/// in the same workflow task) is applied in the batch that applies that work. Before it, such a
/// cancellation waited for the next wake-up, and a batch that continued as new (a long history, a
/// checkpoint) ended the run without it: the new run never heard of it and the tree went on
/// running. Asked only when that happens (so that only histories where it did hold its marker).
const PATCH_CANCEL_WITH_WORK: &str = "cancel-with-work";

/// The patch under which a continued run reads the worker's schema (the `workerSchema` local
/// activity) and applies it as a `schema` message, on a worker started with
/// `--adopt-worker-schema`. Asked only by such a run outside replay, always in replay (which then
/// answers what its history holds, whatever the replaying worker's flag: see `visibility`).
const PATCH_ADOPT_WORKER_SCHEMA: &str = "adopt-worker-schema";

/// True when the input was written by this release or a later one (a parent's `incarnation`, a
/// carry-over's `order`): a pure function of the recorded input, so replay decides the same.
fn written_by_this_release(input: &Result<Value, String>) -> bool {
    input.as_ref().is_ok_and(|v| {
        v.get("incarnation").is_some_and(|i| !i.is_null())
            || v.get("carry").and_then(|c| c.get("order")).is_some()
    })
}

/// The workflow: start, then one batch per wake-up.
pub(crate) async fn run(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    input: RawValue,
) -> WorkflowResult<Value> {
    // A child started by this release (its input has an `incarnation`) or a run continued by it
    // (its carry-over has `order`) is ordered: only the others ask the patch, which records a
    // marker in their history (one more command than their first task needs otherwise).
    let input = payload::decode(&input);
    let legacy = !(written_by_this_release(&input) || ctx.patched(PATCH_ORDERED_CONTROL));
    ctx.state_mut(|s| s.core.set_legacy(legacy));
    // The token goes only to the tree's API hosts: a parent or an earlier run of this release
    // names them in the input; any other first run derives them (under a patch: histories recorded
    // before allow-lists replay without one).
    let hosts_given = input.as_ref().is_ok_and(|v| {
        v.get("apiHosts").is_some_and(|h| !h.is_null())
            || v.pointer("/carry/api/hosts").is_some_and(|h| !h.is_null())
    });
    let this_release = hosts_given || ctx.patched(PATCH_API_HOSTS);
    ctx.state_mut(|s| {
        s.core.set_check_hosts(this_release);
        // Histories recorded before it issue every queued signal before a hand-over; runs of this
        // release hand what waits to the next run (the same patch marks them).
        s.core.set_carry_outbox(this_release);
    });
    // Whether this run sets its search attributes: asked once, recorded as a patch marker only when
    // the worker found them in the namespace (see `crate::visibility`).
    let search_attributes = crate::visibility::decide(ctx);
    ctx.state_mut(|s| s.search_attributes = search_attributes);
    start(ctx, input).await?;
    // Hook keys name the execution chain: this run's id, unless a carried chain names the first.
    let run_id = ctx.run_id().to_string();
    ctx.state_mut(|s| s.core.set_hook_chain(&run_id));
    let mut inflight = InFlight::default();
    let first = ctx.state_mut(|s| s.core.initial_effects());
    send(ctx, first, &mut inflight);
    start_load(ctx, &mut inflight);
    arm_timer(ctx, &mut inflight);
    start_hook(ctx, &mut inflight);
    let mut cancel_requested = false;
    loop {
        let wake = temporalio_sdk::workflows::select! {
            // (`s.ext`: a custom worker's `custom` signals and updates; never without one.)
            r = ctx.wait_condition(|s| s.core.has_work() || s.ext.has_work()).fuse() => Ok(r.is_err()),
            o = next_outcomes(&mut inflight).fuse() => Err(o),
        };
        // The wait answers the work before the cancellation when both are there: the cancellation
        // is then taken from the workflow's token (under a patch: see PATCH_CANCEL_WITH_WORK).
        let cancelled = matches!(wake, Ok(true))
            || (matches!(wake, Ok(false))
                && !cancel_requested
                && ctx.cancellation_token().is_cancelled()
                && ctx.patched(PATCH_CANCEL_WITH_WORK));
        cancel_requested |= cancelled;
        match wake {
            // Temporal asked us to cancel.
            Ok(_) if cancelled => ctx.state_mut(|s| s.core.push(Msg::TemporalCancel)),
            Ok(_) => {}
            Err(wakes) => {
                if !take_outcomes(ctx, wakes, &mut inflight) {
                    // Only acknowledgements: room for what waits.
                    release(ctx, &mut inflight);
                    if ctx.state(|s| s.core.carries_outbox()) {
                        // A long fan-out lengthens the history wave by wave: past the limit, the
                        // rest goes to the next run.
                        maybe_continue_as_new(ctx, &mut inflight).await?;
                    }
                    continue;
                }
            }
        }
        let out = run_batch(ctx, &mut inflight);
        start_load(ctx, &mut inflight);
        arm_timer(ctx, &mut inflight);
        start_hook(ctx, &mut inflight);
        if out.status_changed || cancelled {
            upsert_memo(ctx);
        }
        if ctx.state(|s| s.core.status().is_terminal()) {
            // Let accepted updates see their results, and the cascade's commands go out, before the
            // run ends; no update is accepted any more.
            ctx.state_mut(|s| {
                s.core.set_draining(Some(ENDED));
                if s.core.carries_outbox() {
                    s.core.drop_signals_to_cancelled();
                }
            });
            let _ = ctx.wait_condition(|s| s.core.handlers_idle()).await;
            // Extensions: what a custom worker's handlers and hooks still have to do.
            crate::extend::before_end(ctx, &mut inflight).await;
            flush(ctx, &mut inflight).await;
            // What the hooks were called for, the ending included, is delivered before the end.
            crate::hooks::deliver_before_end(ctx, &mut inflight).await;
            let _ = drain(&mut inflight).await;
            if cancel_requested && ctx.patched(PATCH_CANCELLED_OUTCOME) {
                return Err(WorkflowTermination::cancelled());
            }
            return Ok(ctx.state(|s| s.core.data()));
        }
        maybe_continue_as_new(ctx, &mut inflight).await?;
    }
}

/// Continues as new when the history is long (or the server suggests it), a checkpoint was asked
/// for, or the run is full of children or payloads.
async fn maybe_continue_as_new(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    inflight: &mut InFlight,
) -> WorkflowResult<()> {
    let limit = ctx.state(|s| s.core.max_history());
    let history = ctx.history_length();
    if (ctx.continue_as_new_suggested()
        || history >= limit
        || ctx.state(|s| s.core.checkpoint_requested() || s.core.wants_new_run()))
        && ctx.state(|s| s.core.handover_allowed(history))
    {
        continue_as_new(ctx, inflight).await?;
    }
    Ok(())
}

/// Puts what resolved into the inbox (a load's result, a child event, the refresh timer when it is
/// due); false when nothing did (acknowledgements only).
fn take_outcomes(
    ctx: &WorkflowContext<StatefulWorkflow>,
    wakes: Vec<Wake>,
    inflight: &mut InFlight,
) -> bool {
    let mut queued = false;
    for w in wakes {
        match w {
            Wake::Timer => {
                let now = now_ms(ctx.workflow_time());
                if !ctx.state(|s| s.core.refresh_due().is_some_and(|d| now >= d)) {
                    // Fired for a refresh time that moved (a load ran meanwhile): re-arm.
                    arm_timer(ctx, inflight);
                    continue;
                }
                ctx.state_mut(|s| s.core.push(Msg::RefreshTimer));
            }
            Wake::Loaded(l) => {
                report_load(ctx, &l);
                ctx.state_mut(|s| s.core.push(Msg::Loaded(l)));
            }
            Wake::Child(None) => continue,
            Wake::Child(Some(ev)) => ctx.state_mut(|s| s.core.push(Msg::Child(ev))),
            Wake::Hooked(o) => {
                // Bookkeeping only: no batch.
                crate::hooks::hook_done(ctx, o, inflight);
                continue;
            }
            Wake::Extension(o) => {
                // To the custom worker's hook; what it queues is a batch of its own.
                crate::extend::activity_done(ctx, o, inflight);
                continue;
            }
        }
        queued = true;
    }
    queued
}

/// Reads the input and the schema (from the input, or recorded by the `workerSchema` local activity),
/// and starts the core. A bad input ends the workflow with a reason.
async fn start(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    input: Result<Value, String>,
) -> WorkflowResult<()> {
    let input = input.map_err(|e| fail(format!("bad workflow input: {e}")))?;
    let mut start =
        StartInput::parse(&input).map_err(|e| fail(format!("bad workflow input: {e}")))?;
    if input.pointer("/limits/compressed").is_none() {
        // A root's first run: whether payloads are compressed is this worker's setting, recorded
        // from now on in the inputs it writes (children, continue-as-new).
        start.limits.compressed = crate::payload_compression();
        // So is the HTTP activities' task queue, unless the input names one. Read here only: a
        // read at each scheduling would follow whatever worker replays it. Unset, nothing is
        // written, and the commands are what they always were.
        if start.carry.is_none() && start.activity_task_queue.is_none() {
            start.activity_task_queue = crate::activity_task_queue();
        }
    }
    let schema_json = match start.schema.take() {
        Some(s) => s,
        None => ctx
            .execute_local_activity(
                SchemaActivities::worker_schema,
                (),
                LocalActivityOptions::builder()
                    .start_to_close_timeout(Duration::from_secs(10))
                    // Not cancelled with the workflow: a Temporal cancellation requested before
                    // the first task is applied once the run has started (it ends CANCELED, with
                    // its cascade), not turned into a failed start. (Replaying a run recorded when
                    // it was, the marker's answer is the cancellation, as it was then.)
                    .cancellation_token(temporalio_sdk::WorkflowCancellationToken::new())
                    .build(),
            )
            .await
            .map_err(|e| fail(format!("could not read the worker's schema: {e}")))?,
    };
    if schema_json.is_null() {
        return Err(fail(
            "no schema: start the worker with --schema FILE (or STATEFUL_SCHEMA), or put `schema` in the input"
                .into(),
        ));
    }
    // Parsed once per worker and shared by the workflows that run it.
    let (schema, schema_json) =
        crate::schemas::shared(&schema_json).map_err(|e| fail(format!("bad schema: {e}")))?;
    let wid = ctx.workflow_id().to_string();
    let now = now_ms(ctx.workflow_time());
    let continued = start.carry.is_some();
    ctx.state_mut(|s| s.core.start(start, schema, schema_json, wid, now))
        .map_err(|e| fail(format!("bad workflow input: {e}")))?;
    if continued
        && (ctx.is_replaying() || crate::adopt_worker_schema())
        && ctx.patched(PATCH_ADOPT_WORKER_SCHEMA)
    {
        adopt_worker_schema(ctx).await;
    }
    upsert_memo(ctx);
    // Test-only (the rolling-deploy test's "build B", `crate::set_test_patched_difference`): a
    // command difference behind a patch, asked once as the run starts. Not replaying, asked only on
    // such a worker; replaying, always asked, and answers what the history recorded: a run that
    // started elsewhere replays without the marker and never upserts it.
    if (ctx.is_replaying() || crate::test_patched_difference())
        && ctx.patched(crate::TEST_DIFFERENCE_PATCH)
    {
        let _ = ctx.upsert_memo([(
            crate::TEST_DIFFERENCE_MEMO.to_string(),
            Some(MemoValue::new(Value::from("B"))),
        )]);
    }
    if let Some(e) = ctx.state(|s| s.core.integrity_error().map(str::to_string))
        && !ctx.is_replaying()
    {
        tracing::error!(workflow_id = ctx.workflow_id(), error = %e, "integrity check failed");
    }
    show_details(ctx);
    Ok(())
}

/// A continued run on a worker started with `--adopt-worker-schema`: the worker's schema (read by
/// the `workerSchema` local activity, so recorded) is queued as a `schema` message when it differs
/// from the one the run has; the first batch checks and applies it, and hands it down the tree.
async fn adopt_worker_schema(ctx: &mut WorkflowContext<StatefulWorkflow>) {
    let read = ctx
        .execute_local_activity(
            SchemaActivities::worker_schema,
            (),
            LocalActivityOptions::builder()
                .start_to_close_timeout(Duration::from_secs(10))
                // Not cancelled with the workflow (see `start`).
                .cancellation_token(temporalio_sdk::WorkflowCancellationToken::new())
                .build(),
        )
        .await;
    let Ok(worker) = read else {
        return;
    };
    let Ok(parsed) = Schema::from_json(&worker) else {
        return;
    };
    if ctx.state(|s| s.core.schema_checksum()) != Some(parsed.checksum()) {
        ctx.state_mut(|s| s.core.signal(stateful_core::Signal::Schema, Ok(worker)));
    }
}

/// One batch: everything queued is applied, what it did is reported (metrics and logs, outside
/// replay), and its effects become commands.
fn run_batch(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) -> Processed {
    if ctx.state(|s| s.core.adoption_mode_needed()) {
        let verify = ctx.patched(PATCH_VERIFY_ADOPTION);
        ctx.state_mut(|s| s.core.set_verify_adoption(verify));
    }
    if ctx.state(|s| s.core.echo_mode_needed()) {
        let echo = ctx.patched(PATCH_ECHO_STAMPLESS);
        ctx.state_mut(|s| s.core.set_echo_peers(echo));
    }
    let now = now_ms(ctx.workflow_time());
    // The trace of the first message this batch applies (tracing on): its commands continue it.
    let journey = ctx.state_mut(|s| s.journey.take());
    // Extensions: a custom worker's `custom` messages run, and its hooks see the batch (nothing
    // without one).
    let before = crate::extend::before_batch(ctx, inflight);
    let mut out = ctx.state_mut(|s| s.core.process(now));
    crate::extend::after_batch(ctx, before, &mut out, inflight);
    show_details(ctx);
    let skipped = ctx.state_mut(|s| s.core.tree_mut().take_newly_skipped());
    let conflicting = ctx.state_mut(|s| s.core.tree_mut().take_newly_conflicting());
    if !ctx.is_replaying() {
        report(ctx, &out);
        for s in skipped {
            info!(workflow_id = ctx.workflow_id(), child = %s.workflow_id, reason = %s.reason, "child not started");
        }
        for (child, reason) in conflicting {
            warn!(workflow_id = ctx.workflow_id(), %child, %reason, "child conflicting: not adopted");
        }
    }
    let _trace = journey.map(opentelemetry::Context::attach);
    send(ctx, std::mem::take(&mut out.effects), inflight);
    out
}

/// Queues a batch's effects and issues the first wave of what waits.
fn send(ctx: &WorkflowContext<StatefulWorkflow>, effects: Vec<Effect>, inflight: &mut InFlight) {
    ctx.state_mut(|s| s.core.enqueue(effects));
    release(ctx, inflight);
}

/// Issues the next wave of queued effects: as many as the workflow's limits allow given what is in
/// flight and what this workflow task sent already (see `stateful_core::outbox`).
fn release(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    let task = u64::from(ctx.history_length());
    let pending = inflight.pending();
    let wave = ctx.state_mut(|s| s.core.release(pending, task));
    // The last check: what Temporal would refuse is not issued.
    let wave = admit(ctx, wave);
    if wave.is_empty() {
        return;
    }
    if !ctx.is_replaying() {
        report_effects(ctx, &wave);
    }
    execute(ctx, wave, inflight);
}

/// Before a run ends or hands over: issues what waits in the outbox (all but child starts, which a
/// next run takes over), wave by wave as acknowledgements make room. Outcomes that arrive meanwhile
/// go into the inbox.
async fn flush(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    flush_until(ctx, inflight, |_| false).await
}

/// [`flush`], stopping early once `enough` holds (checked before each wave).
async fn flush_until(
    ctx: &WorkflowContext<StatefulWorkflow>,
    inflight: &mut InFlight,
    enough: impl Fn(&stateful_core::Core) -> bool,
) {
    while !ctx.state(|s| s.core.outbox_settled() || enough(&s.core)) {
        for w in next_outcomes(inflight).await {
            match w {
                Wake::Hooked(o) => crate::hooks::hook_done(ctx, o, inflight),
                Wake::Extension(o) => crate::extend::activity_done(ctx, o, inflight),
                w => {
                    if let Some(m) = w.into_msg() {
                        ctx.state_mut(|s| s.core.push(m));
                    }
                }
            }
        }
        release(ctx, inflight);
    }
}

/// True when the next run's input has room for what waits in the outbox (runs of this release
/// hand it over; see `Core::set_carry_outbox`).
fn next_run_takes_the_outbox(core: &stateful_core::Core) -> bool {
    core.carries_outbox() && core.carry_size() <= core.limits().max_payload_bytes
}

/// The current details the Temporal UI shows (entity and id, status, version, last change), served
/// by the SDK through the `__temporal_workflow_metadata` query: not a command, so replay is
/// unchanged. Set after every batch (and in replay too, so that a workflow rebuilt from its history
/// shows them).
fn show_details(ctx: &WorkflowContext<StatefulWorkflow>) {
    let details = ctx.state(|s| {
        crate::ui::current_details(
            s.core.entity(),
            s.core.id(),
            s.core.status_str(),
            s.core.store().version(),
            s.core.audit().last_change(),
        )
    });
    ctx.set_current_details(details);
}

/// What a batch did, as metrics and log lines (never the token: only its fingerprint).
fn report(ctx: &WorkflowContext<StatefulWorkflow>, out: &Processed) {
    use metrics as m;
    let wid = ctx.workflow_id();
    m::REJECTED_INPUTS.add(out.rejected.len() as u64);
    if !out.changes.is_empty() {
        m::CHANGES_APPLIED.add(1);
        m::ENTITIES_CHANGED.add(out.changes.len() as u64);
    }
    for r in &out.rejected {
        warn!(workflow_id = wid, signal = %r.signal, reason = %r.reason, "rejected input");
    }
    if !out.changes.is_empty() {
        info!(
            workflow_id = wid,
            entities = out.changes.len(),
            origins = %out.changes.sources().iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
            version = ctx.state(|s| s.core.store().version()),
            "applied changes"
        );
    }
    if out.schema_changed {
        let checksum = ctx.state(|s| s.core.schema_checksum().unwrap_or_default());
        info!(workflow_id = wid, %checksum, "schema changed");
    }
    if out.token_changed {
        let fingerprint = ctx.state(|s| s.core.token_info()["fingerprint"].clone());
        info!(workflow_id = wid, %fingerprint, "api token rotated");
    }
}

/// What a wave issues, as metrics and log lines.
fn report_effects(ctx: &WorkflowContext<StatefulWorkflow>, wave: &[Effect]) {
    use metrics as m;
    let wid = ctx.workflow_id();
    for e in wave {
        match e {
            Effect::Start { generation, .. } if *generation > 1 => m::CHILDREN_RESTARTED.add(1),
            Effect::Start { .. } => m::CHILDREN_STARTED.add(1),
            Effect::Cancel { .. } => m::CHILDREN_CANCELLED.add(1),
            Effect::Signal { .. } => m::SIGNALS_SENT.add(1),
            Effect::Verify { .. } => {}
        }
        match e {
            Effect::Start {
                workflow_id,
                generation,
                ..
            } => info!(workflow_id = wid, child = %workflow_id, generation, "starting child"),
            Effect::Cancel { workflow_id } => {
                info!(workflow_id = wid, child = %workflow_id, "cancelling child")
            }
            Effect::Verify { workflow_id, .. } => {
                info!(workflow_id = wid, child = %workflow_id, "a workflow already runs under the child's id: verifying its type")
            }
            Effect::Signal { .. } => {}
        }
    }
}

/// A finished load, as a metric and a log line (outside replay).
fn report_load(ctx: &WorkflowContext<StatefulWorkflow>, l: &stateful_core::Loaded) {
    if ctx.is_replaying() {
        return;
    }
    metrics::load(l.outcome());
    match l {
        stateful_core::Loaded::Ok(o) | stateful_core::Loaded::Many { own: o, .. } => {
            info!(
                workflow_id = ctx.workflow_id(),
                status = o.status.as_str(),
                "loaded from the API"
            )
        }
        stateful_core::Loaded::Error { kind, message } => {
            warn!(workflow_id = ctx.workflow_id(), %kind, error = %message, "load from the API failed")
        }
    }
}

/// Upserts the memo, and the search attributes that changed (when this run sets them: see
/// `crate::visibility`).
pub(crate) fn upsert_memo(ctx: &WorkflowContext<StatefulWorkflow>) {
    let memo = ctx.state(|s| s.core.memo());
    let _ = ctx.upsert_memo(memo.into_iter().map(|(k, v)| (k, Some(MemoValue::new(v)))));
    crate::visibility::upsert(ctx);
}

/// Hands over to a new run: applies whatever is still arriving (as any batch) and lets accepted
/// updates answer, then records the checkpoint and continues as new with the carry-over. Returns
/// (`Ok`) only when the next run's input would be too large: the run then goes on.
async fn continue_as_new(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    inflight: &mut InFlight,
) -> WorkflowResult<()> {
    let mut status_changed = false;
    let mut memo_done = false;
    let outcomes = loop {
        status_changed |= run_batch(ctx, inflight).status_changed;
        if ctx.state(|s| s.core.inbox_empty() && s.core.handlers_idle() && s.ext.idle()) {
            if crate::extend::calls_out(inflight) {
                // Extensions: a custom worker's activities finish in this run (their results go
                // to its hooks, whose updates make one more batch).
                crate::extend::settle_some(ctx, inflight).await;
                continue;
            }
            if !ctx.state(|s| s.core.outbox_settled() || next_run_takes_the_outbox(&s.core)) {
                // Signals and cancellations still wait for room: issue them before handing over
                // (a run of this release issues only as many as the next run's input has no room
                // for).
                flush_until(ctx, inflight, next_run_takes_the_outbox).await;
                continue;
            }
            // From here on an acknowledged update is refused (its sender retries it on the next
            // run) rather than accepted and left unanswered when this run ends.
            ctx.state_mut(|s| s.core.set_draining(Some(HANDING_OVER)));
            if status_changed && !memo_done && ctx.patched(PATCH_MEMO_ON_HANDOVER) {
                upsert_memo(ctx);
                memo_done = true;
            }
            let outcomes = drain(inflight).await;
            if ctx.state(|s| s.core.handlers_idle() && s.ext.idle()) {
                break outcomes;
            }
            // One was accepted as draining began: it is answered in this run, with what resolved.
            for ev in outcomes {
                ctx.state_mut(|s| s.core.push(Msg::Child(ev)));
            }
            continue;
        }
        let _ = ctx
            .wait_condition(|s| {
                !s.core.inbox_empty()
                    || s.ext.has_work()
                    || (s.core.handlers_idle() && s.ext.idle())
            })
            .await;
    };
    // A Temporal cancellation that arrived while this run was getting ready to hand over is not
    // handed over (the next run would never hear of it): the run goes back to its loop, which
    // applies it (see PATCH_CANCEL_WITH_WORK), with what resolved meanwhile.
    if ctx.cancellation_token().is_cancelled() && ctx.patched(PATCH_CANCEL_WITH_WORK) {
        for ev in outcomes {
            ctx.state_mut(|s| s.core.push(Msg::Child(ev)));
        }
        return Ok(());
    }
    // What resolved while draining (a start confirmed or refused: an adoption to make) is not lost:
    // the next run gets it in its inbox.
    ctx.state_mut(|s| s.core.hand_over(outcomes));
    let (size, max) = ctx.state(|s| (s.core.carry_size(), s.core.limits().max_payload_bytes));
    if size > max {
        // The size guard should have made this impossible: go on in this run rather than send a
        // command the server refuses, and try again later.
        let history = ctx.history_length();
        if !ctx.is_replaying() {
            tracing::error!(
                workflow_id = ctx.workflow_id(),
                size,
                max,
                "the next run's input is too large: continuing in this run"
            );
        }
        ctx.state_mut(|s| {
            s.core.defer_handover(history + 1_000);
            s.core.set_draining(None);
        });
        return Ok(());
    }
    let run_id = ctx.run_id().to_string();
    let now = now_ms(ctx.workflow_time());
    let cp = ctx.state_mut(|s| s.core.checkpoint(&run_id, now));
    let next = ctx.state_mut(|s| s.core.carry_input());
    if !ctx.is_replaying() {
        metrics::CHECKPOINTS.add(1);
        info!(workflow_id = ctx.workflow_id(), version = cp.version, checksum = %cp.checksum, reason = %cp.reason, "checkpoint: continuing as new");
    }
    // Worker Versioning: a run is pinned to the deployment version that ran its first task; the
    // next one starts on the deployment's current version (and is pinned there). No effect on an
    // unversioned worker. Not compared on replay: sdk-core matches the continue-as-new event by
    // its type only, so histories recorded before this replay unchanged.
    let options = ContinueAsNewOptions::builder()
        .initial_versioning_behavior(ContinueAsNewVersioningBehavior::AutoUpgrade)
        .build();
    ctx.continue_as_new(payload::encode(&next), options)?;
    unreachable!("continue_as_new always returns Err")
}
