//! Client-side operations on StatefulWorkflows by name and JSON, shared by the worker's ingress, the starter
//! and the tests.

use anyhow::{Context, anyhow};
use serde_json::Value;
use stateful_workflows::markers::JsonWorkflow;
use stateful_workflows::{WORKFLOW_TYPE, payload, ui};
use temporalio_client::{
    Client, UntypedQuery, UntypedSignal, UntypedUpdate, UntypedWorkflow,
    WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions, WorkflowUpdateWithStartOptions,
    errors::{WorkflowUpdateError, WorkflowUpdateWithStartError},
};
use temporalio_common::data_converters::RawValue;

/// The workflow id of an entity: `{Entity}-{id}`.
pub fn workflow_id(entity: &str, id: &str) -> String {
    format!("{entity}-{id}")
}

/// Starts a StatefulWorkflow; returns its run id. Its static summary and details (what the Temporal
/// UI shows: entity and id, place in the tree) are read from `input`, never its token.
pub async fn start(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: Value,
) -> anyhow::Result<String> {
    let (summary, details) = ui::start_metadata(workflow_id, &input);
    let h = client
        .start_workflow(
            JsonWorkflow(WORKFLOW_TYPE.to_string()),
            input,
            WorkflowStartOptions::new(task_queue, workflow_id)
                .static_summary(summary)
                .static_details(details)
                .build(),
        )
        .await
        .map_err(|e| anyhow!("cannot start {workflow_id}: {e}"))?;
    Ok(h.run_id().unwrap_or_default().to_string())
}

/// Sends a signal; `None` sends it without a payload (as `pause`, `resume` and `cancel` are sent).
pub async fn signal(
    client: &Client,
    workflow_id: &str,
    name: &str,
    input: Option<&Value>,
) -> anyhow::Result<()> {
    let raw = match input {
        Some(v) => payload::encode(v),
        None => RawValue::new(vec![]),
    };
    client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .signal(
            UntypedSignal::new(name),
            raw,
            WorkflowSignalOptions::default(),
        )
        .await
        .map_err(|e| anyhow!("cannot signal `{name}` to {workflow_id}: {e}"))
}

/// Runs a query.
pub async fn query(client: &Client, workflow_id: &str, name: &str) -> anyhow::Result<Value> {
    let raw = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .query(
            UntypedQuery::new(name),
            RawValue::new(vec![]),
            WorkflowQueryOptions::default(),
        )
        .await
        .map_err(|e| anyhow!("cannot query `{name}` on {workflow_id}: {e}"))?;
    payload::decode(&raw)
        .map_err(|e| anyhow!("query `{name}` answered something that is not JSON: {e}"))
}

/// A unique update id (process id, time, counter): retries of one update reuse it, so the server
/// applies it at most once.
fn update_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "upd-{}-{t:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A change the workflow refused, with its reason: the error of [`update`] and [`update_with_start`]
/// when the workflow answered (`e.downcast_ref::<Refused>()` tells it from a failure to reach it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// How one attempt of an acknowledged update did not succeed.
enum Attempt {
    /// The workflow answered with a failure (its validator or its batch refused the change).
    Failed(String),
    /// Anything else: the server, the connection, an update that was not accepted.
    Error(String),
}

/// Runs `attempt` (given the update id to use) until the workflow answers: an update the workflow
/// refuses while it hands over to a new run (a reason starting with `retry:`) is sent again with a
/// new id, and one the server says never reached the workflow is sent again with the same id (a few
/// times each, for some 30 s).
async fn acknowledged<F, Fut>(what: impl Fn() -> String, mut attempt: F) -> anyhow::Result<Value>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<RawValue, Attempt>>,
{
    let mut id = update_id();
    let mut n = 0;
    loop {
        n += 1;
        match attempt(id.clone()).await {
            Ok(raw) => {
                return payload::decode(&raw)
                    .map_err(|e| anyhow!("the update answered something that is not JSON: {e}"));
            }
            // Refused while the run hands over (continue-as-new): the next run takes it. A
            // hand-over takes a workflow task or two: tried again for some 30 s.
            Err(Attempt::Failed(m)) if n < 40 && m.starts_with("retry:") => {
                id = update_id();
                tokio::time::sleep(std::time::Duration::from_millis((50 * n).min(1_000))).await;
            }
            Err(Attempt::Failed(m)) => return Err(Refused(m).into()),
            // Not accepted: the task carrying it failed or was lost, the run was closing (its
            // continue-as-new under way), or the workflow had as many updates in flight as the
            // server allows (10 by default). Sent again with the same id, after a pause with some
            // jitter (so that a crowd of callers does not come back at once); the next run takes it.
            Err(Attempt::Error(e)) if n < 40 && update_was_not_accepted(&e) => {
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos()) % 250);
                tokio::time::sleep(std::time::Duration::from_millis(
                    (100 * n).min(1_000) + jitter,
                ))
                .await;
            }
            Err(Attempt::Error(e)) => return Err(anyhow!("{e}")).with_context(what),
        }
    }
}

/// Runs an acknowledged update; `Err` carries the workflow's reason ([`Refused`]) when it refused
/// the change.
///
/// The server aborts an update that was not yet accepted when the workflow task carrying it fails or is
/// superseded (for example by a continue-as-new); such an update was not applied, and it is retried
/// (a few times, with the same update id). An update the workflow refuses while it hands over to a
/// new run (a reason starting with `retry:`) is sent again, a few times.
pub async fn update(
    client: &Client,
    workflow_id: &str,
    name: &str,
    input: &Value,
) -> anyhow::Result<Value> {
    acknowledged(
        || format!("update `{name}` on {workflow_id}"),
        |id| async move {
            client
                .get_workflow_handle::<UntypedWorkflow>(workflow_id)
                .execute_update(
                    UntypedUpdate::new(name),
                    payload::encode(input),
                    WorkflowExecuteUpdateOptions::builder()
                        .update_id(id)
                        .build(),
                )
                .await
                .map_err(|e| match e {
                    WorkflowUpdateError::Failed(f) => Attempt::Failed(f.message.clone()),
                    e => Attempt::Error(e.to_string()),
                })
        },
    )
    .await
}

/// Starts the workflow with `input` when it is not running and runs the acknowledged update `name`
/// on it, in one call (Temporal's update-with-start, workflow id conflict policy `USE_EXISTING`);
/// answers what the workflow answered (`{version, changed}` for `update`), or its reason
/// ([`Refused`]). Retried as [`update`] is. The workflow starts with the static summary and details
/// [`start`] gives it.
///
/// A workflow that this call started stays running when the workflow refuses the change (the start
/// and the update are one request, not one transaction).
pub async fn update_with_start(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: &Value,
    name: &str,
    change: &Value,
) -> anyhow::Result<Value> {
    let (summary, details) = ui::start_metadata(workflow_id, input);
    acknowledged(
        || format!("update-with-start `{name}` on {workflow_id}"),
        |id| {
            let opts = WorkflowUpdateWithStartOptions::new(
                task_queue,
                workflow_id,
                WorkflowIdConflictPolicy::UseExisting,
            )
            .static_summary(summary.clone())
            .static_details(details.clone())
            .update_id(id)
            .build();
            async move {
                client
                    .execute_update_with_start_workflow(
                        UntypedWorkflow::new(WORKFLOW_TYPE),
                        payload::encode(input),
                        UntypedUpdate::<UntypedWorkflow>::new(name),
                        payload::encode(change),
                        opts,
                    )
                    .await
                    .map_err(|e| match e {
                        WorkflowUpdateWithStartError::Update(WorkflowUpdateError::Failed(f)) => {
                            Attempt::Failed(f.message.clone())
                        }
                        e => Attempt::Error(e.to_string()),
                    })
            }
        },
    )
    .await
}

/// True for the server's answers that say an update never reached the workflow, so that sending it
/// again (same update id) cannot apply it twice: the workflow task carrying it failed, the run was
/// closing (its continue-as-new under way), or the update was aborted because the task that
/// accepted it was lost (a speculative task the server dropped: "Workflow task not found" when the
/// worker completes it), or the workflow had as many updates in flight as the server allows
/// (RESOURCE_EXHAUSTED "limit on number of concurrent in-flight updates has been reached"). A
/// StatefulWorkflow accepts and completes an update in one task, so a lost task applied nothing.
fn update_was_not_accepted(error: &str) -> bool {
    error.contains("unexpected workflow task failure")
        || error.contains("workflow is closing")
        || error.contains("workflow update was aborted")
        || error.contains("concurrent in-flight updates")
}

/// One workflow's token and load state, as `starter token rotate` watches it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenState {
    /// Workflow id.
    pub workflow_id: String,
    /// The token's fingerprint (never the token).
    pub fingerprint: Option<String>,
    /// True when the workflow loads from an API.
    pub has_api: bool,
    /// The last load's state (`ok`, `unauthorized`, `failed`, ...).
    pub load_state: String,
    /// True while a load runs or is due.
    pub loading: bool,
    /// Why it could not be queried, if it could not.
    pub error: Option<String>,
}

/// Runs `name` on every running workflow of the tree under `root` (found through the `children`
/// query), one level at a time, the workflows of a level concurrently; in breadth-first order.
pub async fn walk(client: &Client, root: &str, name: &str) -> Vec<(String, anyhow::Result<Value>)> {
    let mut out = Vec::new();
    let mut level = vec![root.to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while !level.is_empty() {
        let nodes = futures::future::join_all(level.iter().map(|wid| async move {
            let (answer, kids) = match query(client, wid, name).await {
                // A workflow whose children cannot be listed is reported as an error (its
                // subtree is not walked): a caller never takes a part of the tree for the whole.
                Ok(v) => match query(client, wid, "children").await {
                    Ok(k) => (Ok(v), Some(k)),
                    Err(e) => (
                        Err(anyhow!(
                            "its children could not be listed, so its subtree was not walked: {e:#}"
                        )),
                        None,
                    ),
                },
                Err(e) => (Err(e), None),
            };
            (wid.clone(), answer, kids)
        }))
        .await;
        let mut next = Vec::new();
        for (wid, answer, kids) in nodes {
            if !seen.insert(wid.clone()) {
                continue;
            }
            for c in kids
                .as_ref()
                .and_then(|k| k["children"].as_array())
                .into_iter()
                .flatten()
            {
                if c["status"] == "running"
                    && let Some(w) = c["workflowId"].as_str()
                {
                    next.push(w.to_string());
                }
            }
            out.push((wid, answer));
        }
        level = next;
    }
    out
}

/// The token and load state of every running workflow of the tree under `root`.
pub async fn token_states(client: &Client, root: &str) -> Vec<TokenState> {
    walk(client, root, "api")
        .await
        .into_iter()
        .map(|(wid, api)| token_state(wid, api))
        .collect()
}

/// One workflow's [`TokenState`] from its `api` query's answer.
fn token_state(workflow_id: String, api: anyhow::Result<Value>) -> TokenState {
    match api {
        Ok(v) => TokenState {
            workflow_id,
            fingerprint: v["token"]["fingerprint"].as_str().map(str::to_string),
            has_api: !v["url"].is_null(),
            load_state: v["state"].as_str().unwrap_or_default().to_string(),
            loading: v["loading"] == Value::Bool(true) || !v["pending"].is_null(),
            error: None,
        },
        Err(e) => TokenState {
            workflow_id,
            fingerprint: None,
            has_api: false,
            load_state: String::new(),
            loading: false,
            error: Some(format!("{e:#}")),
        },
    }
}

/// How many workflows [`token_states_listed`] queries at once.
const LISTED_QUERIES_AT_ONCE: usize = 32;

/// The most workflows [`token_states_listed`] takes from visibility (a larger tree is walked).
const LISTED_MAX: usize = 20_000;

/// The token states of the running workflows whose `StatefulRoot` is `root`, found with one
/// visibility listing and queried all at once (32 at a time) instead of level by level, with no
/// `children` queries: cheaper than [`token_states`] for a deep or wide tree. `None` when
/// visibility cannot answer for this tree (the namespace lacks the search attributes, `root` is
/// not the root of a tree, the tree is larger than 20,000, or the listing fails). Visibility lags
/// behind by up to a second or so and lists the tree as its root started it (not a workflow adopted
/// from another tree): whoever decides on it confirms with [`token_states`].
pub async fn token_states_listed(client: &Client, root: &str) -> Option<Vec<TokenState>> {
    use futures::StreamExt;
    let q = crate::visibility::query(&crate::visibility::Filter {
        root: Some(root.to_string()),
        open: true,
        ..Default::default()
    });
    let (listed, more) = crate::visibility::list(client, &q, LISTED_MAX).await.ok()?;
    if more || !listed.iter().any(|l| l.workflow_id == root) {
        return None;
    }
    Some(
        futures::stream::iter(listed)
            .map(|l| async move {
                let api = query(client, &l.workflow_id, "api").await;
                token_state(l.workflow_id, api)
            })
            .buffer_unordered(LISTED_QUERIES_AT_ONCE)
            .collect()
            .await,
    )
}

/// Sends a signal, starting the workflow with `input` first when it is not running (signal-with-start);
/// returns the run id that got the signal. A workflow it starts gets the summary and details
/// [`start`] gives.
pub async fn signal_with_start(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: Value,
    name: &str,
    payload: &Value,
) -> anyhow::Result<String> {
    let (summary, details) = ui::start_metadata(workflow_id, &input);
    let h = client
        .signal_with_start_workflow(
            JsonWorkflow(WORKFLOW_TYPE.to_string()),
            input,
            stateful_workflows::markers::JsonSignal::<JsonWorkflow>::new(name),
            payload.clone(),
            WorkflowStartOptions::new(task_queue, workflow_id)
                .static_summary(summary)
                .static_details(details)
                .build(),
        )
        .await
        .map_err(|e| anyhow!("cannot signal-with-start `{name}` to {workflow_id}: {e}"))?;
    Ok(h.run_id().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::update_was_not_accepted;

    #[test]
    fn only_answers_that_never_reached_the_workflow_are_retried() {
        assert!(update_was_not_accepted(
            "Server error: code: 'Some resource has been exhausted', message: \"workflow operation can not be applied because workflow is closing\""
        ));
        assert!(update_was_not_accepted(
            "update was aborted: unexpected workflow task failure"
        ));
        assert!(update_was_not_accepted(
            "Server error: code: 'The service is currently unavailable', message: \"workflow update was aborted\""
        ));
        assert!(update_was_not_accepted(
            "Server error: code: 'Some resource has been exhausted', message: \"limit on number of concurrent in-flight updates has been reached (10)\""
        ));
        assert!(!update_was_not_accepted("workflow not found for ID: x"));
        assert!(!update_was_not_accepted("deadline exceeded"));
    }
}
