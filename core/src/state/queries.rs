//! What the workflow answers: queries, the memo, and the loads it asks the glue to run.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use stateful_engine::{Store, checksum};

use super::{Core, api_url};
use crate::api::{LoadRequest, LoadState, batch_urls};
use crate::audit::{Audit, Checkpoint};
use crate::secret::Secret;
use crate::status::Status;
use crate::tree::Tree;

impl Core {
    /// The entity id.
    pub fn id(&self) -> &str {
        &self.ident.id
    }

    /// The entity name.
    pub fn entity(&self) -> &str {
        &self.ident.entity
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tree: children and subscriptions.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The tree, to take what the glue reports once (newly skipped children).
    pub fn tree_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// History length past which to continue as new.
    pub fn max_history(&self) -> u32 {
        self.ident.max_history
    }

    /// The task queue its HTTP activities are scheduled on (`None`: the workflow's own), as its
    /// input recorded it.
    pub fn activity_task_queue(&self) -> Option<&str> {
        self.ident.activity_task_queue.as_deref()
    }

    /// A `checkpoint` signal asked for a new run.
    pub fn checkpoint_requested(&self) -> bool {
        self.audit.checkpoint_requested()
    }

    /// Set when the state carried into this run does not match the checksum its checkpoint recorded.
    pub fn integrity_error(&self) -> Option<&str> {
        self.integrity_error.as_deref()
    }

    /// The schema as recorded (the `schema` query).
    pub fn schema_json(&self) -> &Value {
        &self.ident.schema_json
    }

    /// The managed relations of the own entity and their options (the `managedPaths` query).
    pub fn managed_paths(&self) -> Value {
        self.ident
            .schema_json
            .get(&self.ident.entity)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Ancestors' workflow ids.
    pub fn ancestors(&self) -> &[String] {
        &self.ident.ancestors
    }

    /// The status as queries and the memo show it: `unauthorized` while running with a token the API
    /// refused.
    pub fn status_str(&self) -> &'static str {
        if self.status == Status::Running && self.api.loads.state == LoadState::Unauthorized {
            "unauthorized"
        } else {
            self.status.as_str()
        }
    }

    /// The URL loads use: `apiUrl` (input or signal), or the entity's template filled in.
    pub fn api_url(&self) -> Option<String> {
        api_url(&self.ident, &self.api.loads)
    }

    /// The refresh interval in force (input, else the entity's), in ms.
    pub fn refresh_interval(&self) -> Option<u64> {
        let entity = self
            .ident
            .schema
            .as_ref()
            .and_then(|s| s.entity(&self.ident.entity).ok())
            .and_then(|d| d.refresh_interval_ms);
        self.api.loads.interval(entity)
    }

    /// The load to start now, with the token to send, if one is due (never while paused or ending).
    pub fn take_load(&mut self) -> Option<(LoadRequest, Option<Secret>)> {
        if self.status != Status::Running || !self.started {
            return None;
        }
        let url = self.api_url();
        let mut req = self.api.loads.take_load(url)?;
        req.batch = self.batch_requests();
        Some((req, self.api.token().cloned()))
    }

    /// The owned entity's hooks (`onChange`).
    fn own_hooks(&self) -> &[stateful_engine::hook::Hook] {
        self.ident
            .schema
            .as_deref()
            .and_then(|s| s.get(&self.ident.entity))
            .map_or(&[], |d| d.hooks.as_slice())
    }

    /// The next hook call to make, if one is due and none is out (never while paused: paused
    /// workflows hold their hooks until resumed). See [`crate::hooks`].
    pub fn take_hook(&mut self, now: u64) -> Option<crate::hooks::HookCall> {
        if !self.started || self.status == Status::Paused {
            return None;
        }
        let hooks = self.own_hooks().to_vec();
        if hooks.is_empty() && !self.hooks.busy() {
            return None;
        }
        let loads = &self.api.loads;
        let target = crate::hooks::Target {
            workflow_id: &self.ident.workflow_id,
            entity: &self.ident.entity,
            id: &self.ident.id,
            base: loads.base.as_deref(),
            hosts: loads.hosts.as_ref(),
            token: self.api.token.get(),
            row: self.store.get(&self.ident.entity, &self.ident.id),
            now,
        };
        self.hooks.take(&hooks, &target)
    }

    /// Names this execution chain in hook keys (its first run's id; kept when carried over).
    pub fn set_hook_chain(&mut self, first_run_id: &str) {
        self.hooks.set_chain(first_run_id);
    }

    /// A hook call's outcome (`Ok(HTTP status)`, or why the activity failed after its retries).
    pub fn hook_done(&mut self, seq: u64, outcome: Result<u16, String>, now: u64) {
        self.hooks.done(seq, outcome, &self.ident.workflow_id, now);
    }

    /// True when a hook delivery waits or is out.
    pub fn hooks_busy(&self) -> bool {
        self.hooks.busy()
    }

    /// Deliveries delivered and refused, ever.
    pub fn hook_counts(&self) -> (u64, u64) {
        self.hooks.counts()
    }

    /// The `overview` query: what a tree view shows of one workflow in one answer (status, entity
    /// and id, version, the API and the token's fingerprint, children, subscriptions), the
    /// children's registry cut to `max_children` records (`None`: all).
    pub fn overview(&self, max_children: Option<usize>) -> Value {
        json!({
            "status": self.status_str(),
            "entityName": self.ident.entity,
            "id": self.ident.id,
            "version": self.version_info(),
            "api": self.api_info(),
            "children": self.tree.children_info_within(max_children.unwrap_or(usize::MAX)),
            "subscriptions": self.subscriptions_info(),
            "hooks": {"delivered": self.hooks.counts().0, "refused": self.hooks.counts().1,
                      "busy": self.hooks.busy()},
        })
    }

    /// The `hooks` query.
    pub fn hooks_info(&self) -> Value {
        self.hooks.to_json(self.own_hooks())
    }

    /// The batch URLs of the running children whose entity has a `batchUrl`.
    fn batch_requests(&self) -> Vec<(String, String)> {
        let Some(schema) = &self.ident.schema else {
            return Vec::new();
        };
        let mut ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (_, c) in self.tree.running() {
            ids.entry(c.entity.as_str()).or_default().push(c.id.clone());
        }
        let mut out = Vec::new();
        for (entity, ids) in ids {
            if let Some(t) = schema
                .entity(entity)
                .ok()
                .and_then(|d| d.batch_url.as_deref())
            {
                for url in batch_urls(t, self.api.loads.base.as_deref(), entity, &ids) {
                    // The token goes only to the tree's API hosts.
                    if crate::valid::allowed(&url, self.api.loads.hosts.as_ref()).is_ok() {
                        out.push((entity.to_string(), url));
                    }
                }
            }
        }
        out
    }

    /// When the next periodic refresh is due (workflow time, ms), while one is scheduled.
    pub fn refresh_due(&self) -> Option<u64> {
        if self.status.is_terminal() {
            return None;
        }
        self.api.loads.next_refresh_at
    }

    /// The `api` query.
    pub fn api_info(&self) -> Value {
        let mut v = self
            .api
            .loads
            .info(self.api_url(), self.refresh_interval(), self.token_info());
        v["loadedByParent"] = json!(self.api.loaded_by_parent);
        v
    }

    /// The API token (a secret: for activities and children only, never for queries or logs).
    pub fn api_token(&self) -> Option<&Secret> {
        self.api.token()
    }

    /// What the `apiToken` query answers: a fingerprint and the rotation count, never the token.
    pub fn token_info(&self) -> Value {
        self.api.token.info()
    }

    /// The own entity, denormalized, or null.
    pub fn data(&self) -> Value {
        match &self.ident.schema {
            Some(s) => s
                .denormalize(self.store.entities(), &self.ident.entity, &self.ident.id)
                .unwrap_or(Value::Null),
            None => Value::Null,
        }
    }

    /// The normalized state.
    pub fn state(&self) -> Value {
        serde_json::to_value(self.store.entities()).unwrap_or(Value::Null)
    }

    /// The `version` query.
    pub fn version_info(&self) -> Value {
        json!({
            "version": self.store.version(),
            "checksum": checksum(self.store.entities()),
            "entities": self.store.len(),
            "changes": self.audit.changes_total(),
            "runs": self.audit.runs() + 1,
        })
    }

    /// The `pendingChanges` query: what is queued for the next batch (signal names only; payloads may
    /// hold secrets).
    pub fn pending(&self) -> Value {
        self.inbox.pending()
    }

    /// The `rejected` query.
    pub fn rejected_info(&self) -> Value {
        self.audit.rejected_info()
    }

    /// The `subscriptions` query.
    pub fn subscriptions_info(&self) -> Value {
        serde_json::to_value(self.tree.subscriptions()).unwrap_or(Value::Null)
    }

    /// The memo: entity name, id, status, and, once there is one, the last checkpoint's version and
    /// checksum (never the token).
    pub fn memo(&self) -> Vec<(&'static str, String)> {
        let mut m = vec![
            ("entityName", self.ident.entity.clone()),
            ("id", self.ident.id.clone()),
            ("status", self.status_str().to_string()),
        ];
        if let Some(c) = self.audit.last_checkpoint() {
            m.push(("checkpoint", format!("v{} {}", c.version, c.checksum)));
        }
        m
    }

    /// The last checkpoint, if any.
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.audit.last_checkpoint()
    }
}
