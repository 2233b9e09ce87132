//! Effects become Temporal commands: one function per effect kind. Their outcomes (a child started,
//! ended or gone; a load finished; the refresh timer fired) are kept in [`InFlight`] and come back to
//! the run loop as typed messages for the core.

use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use serde_json::Value;
use stateful_core::{ChildEvent, ChildEventKind, ChildOutcome, Effect, Loaded, Msg, Pending};
use stateful_engine::schema::{CancellationType, ParentClosePolicy};
use temporalio_common::UntypedWorkflow;
use temporalio_common::error::{IncomingError, StartChildWorkflowExecutionFailedCause};
use temporalio_sdk::{
    ChildWorkflowCancellationType, ChildWorkflowExecutionError, ChildWorkflowOptions,
    ChildWorkflowStartError, SignalWorkflowOptions, WorkflowCancellationToken, WorkflowContext,
};

use crate::StatefulWorkflow;
use crate::describe::{DescribeActivities, describe_options};
use crate::markers::{JsonSignal, JsonWorkflow};

type Outcome = LocalBoxFuture<'static, Option<ChildEvent>>;

/// What a child start resolves to: a start failure to report, or the future of the child's result.
enum Started {
    Failed(ChildEvent),
    Running(String, u32, Outcome),
}

/// Effects in flight. Each resolves to a child event (fed back into the inbox) or nothing. Plain
/// vectors polled with the workflow's own context, not `FuturesUnordered`: its internal wakers are not
/// SDK primitives, and the SDK's nondeterminism detector rightly refuses them.
#[derive(Default)]
pub(crate) struct InFlight {
    /// Child starts not yet resolved: a run must not close before they are.
    starts: Vec<LocalBoxFuture<'static, Started>>,
    /// Results of started children: they resolve when a child ends.
    watchers: Vec<Outcome>,
    /// Signal deliveries: they resolve within a workflow task or two.
    acks: Vec<Outcome>,
    /// Cancellation requests: they resolve within a workflow task or two.
    cancels: Vec<Outcome>,
    /// Descriptions of what runs under a child's id (the `workflowType` local activity), before
    /// it is adopted: a run does not close before they are answered.
    verifies: Vec<Outcome>,
    /// The running `loadData` activity.
    pub(crate) load: Option<LocalBoxFuture<'static, Loaded>>,
    /// The periodic refresh timer, with the workflow time it was armed for.
    pub(crate) timer: Option<(u64, LocalBoxFuture<'static, ()>)>,
    /// The hook call out (one at a time).
    pub(crate) hook: Option<LocalBoxFuture<'static, crate::hooks::HookOutcome>>,
    /// Extensions (`crate::extend`): the activities of a custom worker's hooks and handlers.
    pub(crate) ext: crate::extend::Calls,
}

impl InFlight {
    /// What this run has outstanding, as Temporal counts it against its per-run limits.
    pub(crate) fn pending(&self) -> Pending {
        Pending {
            children: self.starts.len() + self.watchers.len(),
            signals: self.acks.len(),
            cancels: self.cancels.len(),
        }
    }
}

/// What woke the run loop besides new messages.
pub(crate) enum Wake {
    /// A child event (or nothing worth reporting).
    Child(Option<ChildEvent>),
    /// A load finished.
    Loaded(Loaded),
    /// The refresh timer fired.
    Timer,
    /// A hook call finished.
    Hooked(crate::hooks::HookOutcome),
    /// Extensions: an activity of a custom worker's hook or handler finished.
    Extension(crate::extend::ActivityOutcome),
}

fn event(
    wid: &str,
    generation: u32,
    kind: ChildEventKind,
    outcome: ChildOutcome,
    detail: String,
) -> ChildEvent {
    ChildEvent::new(wid, generation, kind, outcome, detail)
}

/// The last check before commands are issued: the effects whose command Temporal would accept
/// (`Effect::check`). One it would refuse (which would fail the workflow task, again on every retry,
/// or the workflow itself for a payload over the server's limit) is not issued: it is logged and
/// counted (outside replay), and a child start is reported back as a failed start, so that the
/// child does not stay "in flight" (it shows as failed). A signal is only dropped: a failed signal
/// to a child means it is gone and would restart it, and the restart would be refused again. Nothing
/// dropped here enters [`InFlight`], so what it counts stays what is really outstanding.
///
/// Replay: the core never plans such a command (this is a second line of defence), and one that an
/// earlier release issued failed its workflow task, so no recorded history holds one.
pub(crate) fn admit(ctx: &WorkflowContext<StatefulWorkflow>, effects: Vec<Effect>) -> Vec<Effect> {
    let limits = ctx.state(|s| *s.core.limits());
    let mut ok = Vec::with_capacity(effects.len());
    for e in effects {
        let Err(reason) = e.check(&limits) else {
            ok.push(e);
            continue;
        };
        if !ctx.is_replaying() {
            crate::metrics::COMMANDS_NOT_ISSUED.add(1);
            tracing::warn!(workflow_id = ctx.workflow_id(), %reason, "command not issued");
        }
        if let Effect::Start {
            workflow_id,
            generation,
            ..
        } = e
        {
            let ev = event(
                &workflow_id,
                generation,
                ChildEventKind::StartFailed,
                ChildOutcome::None,
                reason,
            );
            ctx.state_mut(|s| s.core.push(Msg::Child(ev)));
        }
    }
    ok
}

/// Runs effects: their commands are issued now; their outcomes arrive through `inflight`. Effects
/// never inherit the workflow's own cancellation: a cancelled parent must still be able to cancel its
/// children and tell its subscribers.
pub(crate) fn execute(
    ctx: &WorkflowContext<StatefulWorkflow>,
    effects: Vec<Effect>,
    inflight: &mut InFlight,
) {
    for e in effects {
        match e {
            Effect::Start { .. } => start_child(ctx, e, inflight),
            Effect::Signal {
                workflow_id,
                name,
                payload,
                child_generation,
            } => signal(ctx, workflow_id, name, payload, child_generation, inflight),
            Effect::Cancel { workflow_id } => cancel(ctx, workflow_id, inflight),
            Effect::Verify {
                workflow_id,
                generation,
            } => verify(ctx, workflow_id, generation, inflight),
        }
    }
}

/// A child's start options; its static summary and details (entity and id, place in the tree) are
/// read from its input (`crate::ui::start_metadata`: never the token).
fn child_options(
    workflow_id: &str,
    input: &Value,
    task_queue: Option<String>,
    parent_close: ParentClosePolicy,
    cancel_type: CancellationType,
) -> ChildWorkflowOptions {
    let (summary, details) = crate::ui::start_metadata(workflow_id, input);
    ChildWorkflowOptions::builder()
        .workflow_id(workflow_id.to_string())
        .static_summary(summary)
        .static_details(details)
        .maybe_task_queue(task_queue)
        .parent_close_policy(match parent_close {
            ParentClosePolicy::Abandon => temporalio_sdk::ParentClosePolicy::Abandon,
            ParentClosePolicy::RequestCancel => temporalio_sdk::ParentClosePolicy::RequestCancel,
            ParentClosePolicy::Terminate => temporalio_sdk::ParentClosePolicy::Terminate,
        })
        .cancel_type(match cancel_type {
            CancellationType::TryCancel => ChildWorkflowCancellationType::TryCancel,
            CancellationType::WaitCancellationRequested => {
                ChildWorkflowCancellationType::WaitCancellationRequested
            }
            CancellationType::WaitCancellationCompleted => {
                ChildWorkflowCancellationType::WaitCancellationCompleted
            }
            CancellationType::Abandon => ChildWorkflowCancellationType::Abandon,
        })
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// `Effect::Start`: starts the child; its start is confirmed (or refused) later, and its result is
/// watched from then on.
fn start_child(ctx: &WorkflowContext<StatefulWorkflow>, e: Effect, inflight: &mut InFlight) {
    let Effect::Start {
        workflow_id,
        generation,
        workflow_type,
        task_queue,
        input,
        parent_close,
        cancel_type,
    } = e
    else {
        return;
    };
    let opts = child_options(&workflow_id, &input, task_queue, parent_close, cancel_type);
    let c = ctx.clone();
    let trace = opentelemetry::Context::current();
    inflight.starts.push(
        async move {
            // Issued at the first poll, under the trace context of its release: that of the
            // change that asks for it (see `crate::journey`).
            let start = {
                let _trace = trace.attach();
                c.start_child_workflow(JsonWorkflow(workflow_type), input, opts)
            };
            match start.await {
                Err(ChildWorkflowStartError::StartFailed {
                    cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                    ..
                }) => Started::Failed(event(
                    &workflow_id,
                    generation,
                    ChildEventKind::AlreadyRunning,
                    ChildOutcome::None,
                    String::new(),
                )),
                Err(e) => Started::Failed(event(
                    &workflow_id,
                    generation,
                    ChildEventKind::StartFailed,
                    ChildOutcome::None,
                    e.to_string(),
                )),
                Ok(started) => {
                    let wid = workflow_id.clone();
                    let result = async move {
                        let (outcome, detail) = match started.result().await {
                            Ok(_) => (ChildOutcome::Completed, String::new()),
                            Err(ChildWorkflowExecutionError::Failed(f)) => {
                                let outcome = match f.cause() {
                                    Some(IncomingError::Cancelled(_)) => ChildOutcome::Cancelled,
                                    Some(IncomingError::Terminated(_)) => ChildOutcome::Terminated,
                                    Some(IncomingError::Timeout(_)) => ChildOutcome::TimedOut,
                                    _ => ChildOutcome::Failed,
                                };
                                (outcome, f.failure().message.clone())
                            }
                            Err(e) => (ChildOutcome::Failed, e.to_string()),
                        };
                        Some(event(
                            &wid,
                            generation,
                            ChildEventKind::Ended,
                            outcome,
                            detail,
                        ))
                    };
                    Started::Running(workflow_id, generation, result.boxed_local())
                }
            }
        }
        .boxed_local(),
    );
}

/// `Effect::Signal`: a failed delivery to a child means it is gone.
fn signal(
    ctx: &WorkflowContext<StatefulWorkflow>,
    workflow_id: String,
    name: String,
    payload: Option<Value>,
    child_generation: Option<u32>,
    inflight: &mut InFlight,
) {
    let fut = ctx.external_workflow(workflow_id.clone(), None).signal(
        JsonSignal::<UntypedWorkflow>::new(name),
        payload.unwrap_or(Value::Null),
        SignalWorkflowOptions::builder()
            .cancellation_token(WorkflowCancellationToken::new())
            .build(),
    );
    inflight.acks.push(
        async move {
            match (fut.await, child_generation) {
                (Err(e), Some(g)) => Some(event(
                    &workflow_id,
                    g,
                    ChildEventKind::SignalFailed,
                    ChildOutcome::Gone,
                    e.to_string(),
                )),
                _ => None,
            }
        }
        .boxed_local(),
    );
}

/// `Effect::Cancel`: a cancellation request.
fn cancel(ctx: &WorkflowContext<StatefulWorkflow>, workflow_id: String, inflight: &mut InFlight) {
    let handle = ctx.external_workflow(workflow_id, None);
    inflight.cancels.push(
        async move {
            let _ = handle
                .cancel(Some("its parent removed it or ended".into()))
                .await;
            None
        }
        .boxed_local(),
    );
}

/// `Effect::Verify`: the `workflowType` local activity describes what runs under the child's id;
/// its answer (or why there is none) goes back to the core, which adopts it or not.
fn verify(
    ctx: &WorkflowContext<StatefulWorkflow>,
    workflow_id: String,
    generation: u32,
    inflight: &mut InFlight,
) {
    let c = ctx.clone();
    inflight.verifies.push(
        async move {
            let answer = c
                .execute_local_activity(
                    DescribeActivities::workflow_type,
                    workflow_id.clone(),
                    describe_options(),
                )
                .await
                .map_err(|e| e.to_string());
            Some(ChildEvent::verified(&workflow_id, generation, answer))
        }
        .boxed_local(),
    );
}

/// Polls every future of `set` once; removes the ones that are done and adds their outcomes to `out`
/// (one pass: a set of a thousand children costs a thousand polls per wake-up, not per outcome).
fn poll_all(set: &mut Vec<Outcome>, cx: &mut Context<'_>, out: &mut Vec<Option<ChildEvent>>) {
    let mut i = 0;
    while i < set.len() {
        match set[i].as_mut().poll(cx) {
            Poll::Ready(x) => {
                drop(set.remove(i));
                out.push(x);
            }
            Poll::Pending => i += 1,
        }
    }
}

/// Polls the child starts once each: a started child's result joins the watchers; a failed start is
/// reported.
fn poll_starts(inflight: &mut InFlight, cx: &mut Context<'_>, out: &mut Vec<Option<ChildEvent>>) {
    let mut i = 0;
    while i < inflight.starts.len() {
        match inflight.starts[i].as_mut().poll(cx) {
            Poll::Ready(done) => {
                drop(inflight.starts.remove(i));
                out.push(Some(match done {
                    Started::Failed(ev) => ev,
                    Started::Running(wid, generation, result) => {
                        inflight.watchers.push(result);
                        event(
                            &wid,
                            generation,
                            ChildEventKind::Started,
                            ChildOutcome::None,
                            String::new(),
                        )
                    }
                }));
            }
            Poll::Pending => i += 1,
        }
    }
}

/// Every effect outcome ready now, once at least one is (never, when none is in flight): one batch
/// takes them all.
pub(crate) async fn next_outcomes(inflight: &mut InFlight) -> Vec<Wake> {
    futures::future::poll_fn(|cx| {
        let mut events = Vec::new();
        poll_starts(inflight, cx, &mut events);
        for set in [
            &mut inflight.acks,
            &mut inflight.cancels,
            &mut inflight.verifies,
            &mut inflight.watchers,
        ] {
            poll_all(set, cx, &mut events);
        }
        let mut wakes: Vec<Wake> = events.into_iter().map(Wake::Child).collect();
        if let Some(f) = inflight.load.as_mut()
            && let Poll::Ready(l) = f.as_mut().poll(cx)
        {
            inflight.load = None;
            wakes.push(Wake::Loaded(l));
        }
        if let Some((_, f)) = inflight.timer.as_mut()
            && f.as_mut().poll(cx).is_ready()
        {
            inflight.timer = None;
            wakes.push(Wake::Timer);
        }
        if let Some(f) = inflight.hook.as_mut()
            && let Poll::Ready(o) = f.as_mut().poll(cx)
        {
            inflight.hook = None;
            wakes.push(Wake::Hooked(o));
        }
        // Extensions (`crate::extend`): none without a custom worker's hooks.
        wakes.extend(inflight.ext.poll_done(cx).into_iter().map(Wake::Extension));
        if wakes.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(wakes)
        }
    })
    .await
}

/// Before a run ends: every effect has been polled (so its command is out), and every start,
/// description, signal and cancellation request is resolved. Returns the outcomes that resolved
/// meanwhile (a child's start confirmed or refused, what runs under a child's id, a child that
/// already ended, a signal that could not be delivered): the continue-as-new hands them to the
/// next run. Child watchers are dropped with the run; the
/// children keep running (they are abandoned on close, and re-attached through the carried registry).
pub(crate) async fn drain(inflight: &mut InFlight) -> Vec<ChildEvent> {
    let mut outcomes = Vec::new();
    while !inflight.starts.is_empty() {
        futures::future::poll_fn(|cx| {
            poll_starts(inflight, cx, &mut outcomes);
            if inflight.starts.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    // Descriptions are answered (the next run gets the answers, and adopts or not).
    while !inflight.verifies.is_empty() {
        futures::future::poll_fn(|cx| {
            let before = outcomes.len();
            poll_all(&mut inflight.verifies, cx, &mut outcomes);
            if outcomes.len() > before {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    futures::future::poll_fn(|cx| {
        poll_all(&mut inflight.watchers, cx, &mut outcomes);
        Poll::Ready(())
    })
    .await;
    while !(inflight.acks.is_empty() && inflight.cancels.is_empty()) {
        futures::future::poll_fn(|cx| {
            let before = outcomes.len();
            poll_all(&mut inflight.acks, cx, &mut outcomes);
            poll_all(&mut inflight.cancels, cx, &mut outcomes);
            if outcomes.len() > before {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    outcomes.into_iter().flatten().collect()
}

impl Wake {
    /// The message this wake-up puts in the inbox, if any.
    pub(crate) fn into_msg(self) -> Option<Msg> {
        match self {
            Wake::Child(ev) => ev.map(Msg::Child),
            Wake::Loaded(l) => Some(Msg::Loaded(l)),
            Wake::Timer => Some(Msg::RefreshTimer),
            Wake::Hooked(_) | Wake::Extension(_) => None,
        }
    }
}
