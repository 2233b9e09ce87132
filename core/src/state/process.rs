//! A batch: every queued message, in arrival order, applied as one change set, then one round of
//! effects. [`Core::process`] dispatches each message to one small handler.

use serde_json::{Value, json};
use stateful_engine::store::Batch;
use stateful_engine::{Change, ChangeKind, ChangeSet, EntityRef, Schema, wire};

use super::{Core, Ident, Ordering, api_url, me, size};
use crate::answer::{loaded_change, related_change};
use crate::api::{ApiState, LoadState};
use crate::audit::Rejection;
use crate::load::{LoadOutput, Loaded};
use crate::msg::{Msg, Signal};
use crate::order::{Latest, stamp_in};
use crate::status::Status;
use crate::tree::{ChildEvent, Effect, Situation, Tree};

mod control;

/// What a batch did, for the glue to act on.
#[derive(Debug, Default)]
pub struct Processed {
    /// The change set.
    pub changes: ChangeSet,
    /// The status changed.
    pub status_changed: bool,
    /// The token changed.
    pub token_changed: bool,
    /// The API URL changed.
    pub url_changed: bool,
    /// The schema changed (a `schema` message).
    pub schema_changed: bool,
    /// Rejections of this batch (to log).
    pub rejected: Vec<Rejection>,
    /// What to do: start, signal, cancel.
    pub effects: Vec<Effect>,
}

/// The parts of [`Core`] a message may change while the store is in a batch.
struct Step<'a> {
    ident: &'a Ident,
    status: &'a mut Status,
    end_reason: &'a mut Option<String>,
    api: &'a mut ApiState,
    tree: &'a mut Tree,
    status_order: &'a mut Latest,
    legacy: bool,
    checkpoint: &'a mut bool,
    schema: &'a Schema,
    now: u64,
    version: u64,
    interval: Option<u64>,
    rejections: Vec<(Option<u64>, Rejection)>,
    ok_tickets: Vec<u64>,
    size: size::SizeStep<'a>,
    child_events: Vec<ChildEvent>,
    token_changed: bool,
    url_changed: bool,
    /// A new schema (set after the batch's messages: a `schema` message ends its batch).
    new_schema: Option<super::evolve::NewSchema>,
    /// The acknowledged `schema` update of this batch, answered with the schema it runs.
    schema_ticket: Option<u64>,
}

impl Core {
    /// Applies every queued message, in arrival order, as one batch.
    pub fn process(&mut self, now: u64) -> Processed {
        let Some(schema) = self.ident.schema.clone() else {
            return Processed::default();
        };
        let incoming: u64 = self.inbox_bytes();
        self.history_bytes += incoming;
        let overhead = self
            .size
            .near(&self.ident.limits, incoming)
            .then(|| self.carry_overhead());
        let mut msgs = self.inbox.drain();
        // A `schema` message ends its batch: what follows it is applied with the new schema, in
        // the next batch (no history recorded before `schema` holds one).
        if let Some(i) = msgs.iter().position(|m| {
            matches!(
                m,
                Msg::Wire {
                    signal: Signal::Schema,
                    ..
                }
            )
        }) {
            let rest = msgs.split_off(i + 1);
            self.inbox.prepend(rest);
        }
        let before = (self.status, self.status_str());
        // What hooks compare with: the owned row and the version before the batch (only kept when
        // the entity has hooks).
        let hooked_before = self.hooked_row();
        let version_before = self.store.version();
        let interval = self.refresh_interval();
        let mut checkpoint = false;
        let mut step = Step {
            ident: &self.ident,
            status: &mut self.status,
            end_reason: &mut self.end_reason,
            api: &mut self.api,
            tree: &mut self.tree,
            status_order: &mut self.status_order,
            legacy: self.legacy,
            checkpoint: &mut checkpoint,
            schema: &schema,
            now,
            version: self.store.version(),
            interval,
            rejections: Vec::new(),
            ok_tickets: Vec::new(),
            size: size::SizeStep {
                guard: &mut self.size,
                limits: &self.ident.limits,
                overhead,
                own_entity: &self.ident.entity,
            },
            child_events: Vec::new(),
            token_changed: false,
            url_changed: false,
            new_schema: None,
            schema_ticket: None,
        };
        let mut batch = self.store.batch(&schema);
        for msg in msgs {
            step.handle(&mut batch, msg);
        }
        let cs = batch.finish();
        let Step {
            rejections,
            ok_tickets,
            child_events,
            token_changed,
            url_changed,
            new_schema,
            schema_ticket,
            ..
        } = step;
        if checkpoint {
            self.audit.request_checkpoint();
        }
        let mut out = Processed {
            token_changed,
            url_changed,
            ..Processed::default()
        };
        self.conclude(&cs, ok_tickets, rejections, &mut out, now);
        if let Some(next) = new_schema {
            self.set_schema(next);
            out.schema_changed = true;
        }
        if let Some(t) = schema_ticket {
            self.inbox.answer(t, Ok(self.schema_info()));
        }
        out.status_changed = self.status != before.0 || self.status_str() != before.1;
        if let Some(row) = hooked_before {
            self.observe_hooks(
                &cs,
                row.as_ref(),
                before.1,
                &child_events,
                version_before,
                now,
            );
        }
        out.effects = self.plan(
            &cs,
            &child_events,
            before.0,
            token_changed,
            out.schema_changed,
            now,
        );
        out.changes = cs;
        out
    }

    /// After the messages: the own entity's deletion completes the workflow; updates get their
    /// answers; rejections are recorded; the batch joins the audit trail.
    fn conclude(
        &mut self,
        cs: &ChangeSet,
        ok_tickets: Vec<u64>,
        rejections: Vec<(Option<u64>, Rejection)>,
        out: &mut Processed,
        now: u64,
    ) {
        let own = EntityRef::new(self.ident.entity.clone(), self.ident.id.clone());
        if cs
            .entities
            .get(&own)
            .is_some_and(|c| c.kind == ChangeKind::Deleted)
            && !self.status.is_terminal()
        {
            self.status = Status::Completed;
        }
        let new_version = self.store.version();
        for t in ok_tickets {
            self.inbox
                .answer(t, Ok(json!({"version": new_version, "changed": cs.len()})));
        }
        for (ticket, r) in rejections {
            if let Some(t) = ticket {
                self.inbox.answer(t, Err(r.reason.clone()));
            }
            self.audit.reject(r.clone());
            out.rejected.push(r);
        }
        self.audit.record(cs, new_version, now);
        if self.status.is_terminal() && self.end_reason.is_none() {
            self.end_reason = Some(match self.status {
                Status::Completed => "completed".into(),
                _ => "cancel signal".into(),
            });
        }
    }

    /// The owned entity's row, when its entity has hooks (`Some(None)`: it has hooks and no row).
    fn hooked_row(&self) -> Option<Option<stateful_engine::normalize::Row>> {
        let schema = self.ident.schema.as_ref()?;
        if schema.get(&self.ident.entity)?.hooks.is_empty() {
            return None;
        }
        Some(self.store.get(&self.ident.entity, &self.ident.id).cloned())
    }

    /// Records what this batch calls the entity's hooks for.
    fn observe_hooks(
        &mut self,
        cs: &ChangeSet,
        before: Option<&stateful_engine::normalize::Row>,
        status_before: &str,
        events: &[ChildEvent],
        version_before: u64,
        now: u64,
    ) {
        let Some(schema) = self.ident.schema.clone() else {
            return;
        };
        let Some(def) = schema.get(&self.ident.entity) else {
            return;
        };
        let own = EntityRef::new(self.ident.entity.clone(), self.ident.id.clone());
        let children = events
            .iter()
            .filter_map(|e| {
                let event = match e.event {
                    crate::ChildEventKind::Started => "started",
                    crate::ChildEventKind::Ended => "ended",
                    _ => return None,
                };
                Some(crate::hooks::ChildNote {
                    event: event.into(),
                    workflow_id: e.workflow_id.clone(),
                    outcome: serde_json::to_value(e.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                })
            })
            .collect();
        let status_after = self.status_str();
        let observed = crate::hooks::Observed {
            before,
            change: cs.entities.get(&own),
            status: Some((status_before, status_after)),
            children,
            versions: (version_before, self.store.version()),
            now,
        };
        self.hooks.observe(&def.hooks, &observed);
    }

    /// The batch's effects, from the one planner.
    fn plan(
        &mut self,
        cs: &ChangeSet,
        events: &[ChildEvent],
        before: Status,
        token_changed: bool,
        schema_changed: bool,
        now: u64,
    ) -> Vec<Effect> {
        // A fresh stamp for what this batch sends that sets something (subscriptions).
        let control = (!self.legacy).then(|| self.store.next_stamp(now, &self.ident.workflow_id));
        let order = Ordering::new(
            self.legacy,
            self.status,
            &self.status_order,
            control.as_ref(),
        );
        let Some(me) = me(&self.ident, &self.store, &self.api, order) else {
            return Vec::new();
        };
        let situation = Situation {
            before,
            status: self.status,
            end_reason: self.end_reason.as_deref().unwrap_or_default(),
            token_changed,
            schema_changed,
        };
        let effects = self.tree.effects(&me, cs, events, situation);
        if self.status == Status::Running {
            // Planned: a removed relation's children were removed as it said.
            self.ident.previous_schema = None;
        }
        effects
    }
}

impl Step<'_> {
    fn reject(&mut self, msg: &Msg, reason: String) {
        // The update's answer, the log and the `rejected` list get the same, bounded reason.
        let reason = crate::audit::clip(&reason, crate::audit::MAX_REASON);
        self.rejections.push((
            msg.ticket(),
            Rejection {
                signal: msg.name().to_string(),
                reason,
                time: self.now,
                version: self.version,
            },
        ));
    }

    /// One message: the dispatcher.
    fn handle(&mut self, batch: &mut Batch<'_>, msg: Msg) {
        let result = match &msg {
            Msg::Wire {
                signal, payload, ..
            } => self.on_signal(batch, *signal, payload, msg.ticket()),
            Msg::Loaded(l) => self.on_loaded(batch, l),
            Msg::Child(ev) => {
                self.child_events.push(ev.clone());
                Ok(())
            }
            Msg::RefreshTimer => self.on_refresh(false),
            Msg::TemporalCancel => {
                self.end(Status::Cancelled, Some("cancelled"));
                Ok(())
            }
        };
        if let Err(reason) = result {
            self.reject(&msg, reason);
        }
    }

    fn on_signal(
        &mut self,
        batch: &mut Batch<'_>,
        signal: Signal,
        payload: &Result<Value, String>,
        ticket: Option<u64>,
    ) -> Result<(), String> {
        match signal {
            Signal::Update | Signal::Delete | Signal::State => {
                self.on_change(batch, signal, payload)?;
                self.ok_tickets.extend(ticket);
                Ok(())
            }
            Signal::ApiToken => self.on_token(batch, payload),
            Signal::ApiUrl => self.on_url(batch, payload),
            Signal::Checkpoint => {
                *self.checkpoint = true;
                Ok(())
            }
            Signal::Refresh => self.on_refresh(true),
            // Control signals take no argument; whatever came with them is ignored.
            Signal::Pause => {
                let given = payload
                    .as_ref()
                    .ok()
                    .and_then(|v| stamp_in(v, self.now).ok().flatten());
                self.ordered_transition(batch, given, Status::Running, Status::Paused);
                Ok(())
            }
            Signal::Resume => {
                let given = payload
                    .as_ref()
                    .ok()
                    .and_then(|v| stamp_in(v, self.now).ok().flatten());
                self.ordered_transition(batch, given, Status::Paused, Status::Running);
                Ok(())
            }
            Signal::Cancel => {
                self.end(Status::Cancelled, None);
                Ok(())
            }
            Signal::Status => self.on_status(batch, payload),
            Signal::Subscribe => self.on_subscribe(batch, payload),
            Signal::Unsubscribe => self.on_unsubscribe(batch, payload),
            Signal::ChildEnded => self.on_child_ended(payload),
            Signal::Schema => self.on_schema(batch, payload, ticket),
        }
    }

    fn transition(&mut self, from: Status, to: Status) {
        if *self.status == from {
            *self.status = to;
        }
    }

    /// Ends the workflow unless it is ending already.
    fn end(&mut self, status: Status, reason: Option<&str>) {
        if !self.status.is_terminal() {
            *self.status = status;
            if let Some(r) = reason {
                *self.end_reason = Some(r.into());
            }
        }
    }

    fn on_change(
        &mut self,
        batch: &mut Batch<'_>,
        signal: Signal,
        payload: &Result<Value, String>,
    ) -> Result<(), String> {
        let v = payload.as_ref().map_err(Clone::clone)?;
        let entity = &self.ident.entity;
        let mut inc = match signal {
            Signal::Update => wire::parse_update(self.schema, entity, v),
            Signal::Delete => wire::parse_delete(self.schema, entity, v),
            _ => wire::parse_state(self.schema, v),
        }
        .map_err(|e| e.to_string())?;
        super::check_ids(self.schema, batch.store(), self.ident, &inc.change)?;
        if let Some(o) = &inc.origin
            && o.len() > crate::order::MAX_ORIGIN_LEN
        {
            return Err(format!(
                "`changeOrigin` takes {} bytes, more than the {} a workflow id may",
                o.len(),
                crate::order::MAX_ORIGIN_LEN
            ));
        }
        let stamp = batch.next_stamp(self.now, &self.ident.workflow_id);
        let source = self.source_of(inc.origin.as_deref(), v);
        if let (Change::Writes(w), false) = (&mut inc.change, self.legacy) {
            if source == "client" {
                // A client's stamps are not trusted: its writes are ordered by their arrival.
                w.restamp(&stamp);
            } else {
                if w.longest_origin() > crate::order::MAX_ORIGIN_LEN {
                    return Err(format!(
                        "a stamp's origin is longer than the {} bytes a workflow id may take",
                        crate::order::MAX_ORIGIN_LEN
                    ));
                }
                w.clamp(self.now.saturating_add(crate::order::MAX_SKEW_MS));
            }
        }
        let bytes = crate::outbox::json_len(v);
        self.size
            .admit(self.schema, batch, &inc.change, &stamp, &source, bytes)?;
        batch
            .apply(&inc.change, &stamp, &source)
            .map_err(|e| e.to_string())?;
        // A workflow that sends no stamps (chrono-forge) is answered with what won here.
        if !self.legacy && source != "client" && !source.ends_with("#ended") {
            match &inc.change {
                Change::Upsert { entities, .. } => {
                    for (e, rows) in entities {
                        for id in rows.keys() {
                            self.tree.note_stampless(
                                &source,
                                EntityRef::new(e.clone(), id.clone()),
                                false,
                            );
                        }
                    }
                }
                Change::Delete { refs } => {
                    for r in refs {
                        self.tree.note_stampless(&source, r.clone(), true);
                    }
                }
                Change::SetState { .. } | Change::Writes(_) => {}
            }
        }
        Ok(())
    }

    /// `schema`: a new schema, checked against the state as it is at this point of the batch; an
    /// older one than the schema held (ours, stamped) is ignored, and so is the same schema again.
    fn on_schema(
        &mut self,
        batch: &mut Batch<'_>,
        payload: &Result<Value, String>,
        ticket: Option<u64>,
    ) -> Result<(), String> {
        let v = payload.as_ref().map_err(Clone::clone)?;
        if let Some(given) = super::evolve::given_stamp(v, self.now)?
            && !self.ident.schema_order.would_accept(&given)
        {
            self.schema_ticket = ticket;
            return Ok(());
        }
        let mut next = super::evolve::prepare(self.ident, batch.store(), self.legacy, v, self.now)?;
        self.schema_ticket = ticket;
        if next.json == *self.ident.schema_json
            || Some(next.schema.checksum()) == self.ident.schema.as_deref().map(Schema::checksum)
        {
            return Ok(());
        }
        next.stamp = self.arrival(batch, next.stamp.take());
        self.new_schema = Some(next);
        Ok(())
    }

    /// `refresh` (asked) or the refresh timer: load now, when there is an API to load from.
    fn on_refresh(&mut self, asked: bool) -> Result<(), String> {
        let has_url = api_url(self.ident, &self.api.loads).is_some();
        if has_url {
            self.api
                .loads
                .want(if asked { "refresh" } else { "refreshInterval" });
            if !asked && self.api.loads.hosts.is_some() {
                // The next period starts now, whether or not the load can start now (one runs
                // already, or the workflow is paused): the timer is never armed in the past, which
                // would fire it again at once. (A workflow of an earlier release, which holds no
                // host list, keeps its recorded timers.)
                self.api.loads.next_refresh_at = self.interval.map(|i| self.now.saturating_add(i));
            }
            return Ok(());
        }
        if asked {
            return Err(
                "no API to load from: set `apiUrl`, or `apiBase` with an entity `apiUrl` template"
                    .into(),
            );
        }
        self.api.loads.next_refresh_at = self.interval.map(|i| self.now.saturating_add(i));
        Ok(())
    }

    /// A finished load: its bookkeeping, then its answers merged with origin `api`. An answer that
    /// does not apply fails the load with a clear reason and changes nothing of its own.
    fn on_loaded(&mut self, batch: &mut Batch<'_>, loaded: &Loaded) -> Result<(), String> {
        self.api.loads.finish(loaded, self.now, self.interval);
        let entity = self.ident.entity.as_str();
        let outputs: Vec<(&str, &LoadOutput)> = match loaded {
            Loaded::Ok(o) => vec![(entity, o)],
            Loaded::Many { own, related } => std::iter::once((entity, own))
                .chain(related.iter().map(|(e, o)| (e.as_str(), o)))
                .collect(),
            Loaded::Error { .. } => Vec::new(),
        };
        let mut failures = Vec::new();
        for (i, (entity, output)) in outputs.into_iter().enumerate() {
            let change = if i == 0 {
                loaded_change(self.schema, entity, &self.ident.id, output)
            } else {
                related_change(self.schema, entity, output)
            };
            let applied = change.and_then(|c| match c {
                None => Ok(()),
                Some(change) => {
                    let stamp = batch.next_stamp(self.now, &self.ident.workflow_id);
                    let bytes = crate::outbox::json_len(
                        &serde_json::to_value(output).unwrap_or(Value::Null),
                    );
                    self.size
                        .admit(self.schema, batch, &change, &stamp, "api", bytes)?;
                    batch
                        .apply(&change, &stamp, "api")
                        .map_err(|e| format!("the API's data does not apply: {e}"))
                }
            });
            if let Err(reason) = applied {
                failures.push(reason);
            }
        }
        if let Some(first) = failures.first() {
            self.api.loads.state = LoadState::Failed;
            self.api.loads.last_error = Some(first.clone());
        }
        let msg = Msg::Loaded(loaded.clone());
        for reason in failures {
            self.reject(&msg, reason);
        }
        Ok(())
    }
}
