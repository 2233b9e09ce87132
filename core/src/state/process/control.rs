//! The messages that set something besides fields, each ordered by its stamp (see
//! [`crate::order`]): the token, the URL, the status, subscriptions, and children's reports; and
//! where a change came from (a late message of an ended run of a child or parent counts as coming
//! from elsewhere).

use serde_json::Value;
use stateful_engine::Stamp;
use stateful_engine::store::Batch;

use super::Step;
use crate::order::{stamp_in, stamp_in_key};
use crate::secret::Secret;
use crate::status::Status;
use crate::tree::{ChildEvent, ChildEventKind, ChildOutcome, Subscription};

impl Step<'_> {
    /// The stamp a control message is ordered by: its own (the clock moves past it), or, for an
    /// unstamped one (a client, chrono-forge), a new one made on arrival. None while legacy.
    pub(super) fn arrival(&mut self, batch: &mut Batch<'_>, given: Option<Stamp>) -> Option<Stamp> {
        if self.legacy {
            return None;
        }
        Some(match given {
            Some(s) => {
                batch.observe(s.time);
                s
            }
            None => batch.next_stamp(self.now, &self.ident.workflow_id),
        })
    }

    /// True when every message of `workflow_id`'s current run carries its incarnation: a relative of
    /// ours (a child of our type, or a parent that gave us its incarnation with its subscription)
    /// whose run we know. A chrono-forge relative sends none.
    fn speaks_incarnations(&self, workflow_id: &str) -> bool {
        self.tree.incarnation_of(workflow_id).is_some()
            && self
                .tree
                .children()
                .get(workflow_id)
                .is_none_or(|c| c.workflow_type == crate::WORKFLOW_TYPE)
    }

    /// `pause` / `resume` / `status`: the transition, unless a newer message set the status.
    pub(super) fn ordered_transition(
        &mut self,
        batch: &mut Batch<'_>,
        given: Option<Stamp>,
        from: Status,
        to: Status,
    ) {
        if let Some(s) = self.arrival(batch, given)
            && !self.status_order.accept(&s)
        {
            return;
        }
        self.transition(from, to);
    }

    /// Where a change came from: its `changeOrigin` (or `client`). A message of an ended run of a
    /// child or parent (an older incarnation than the one running now) counts as coming from
    /// elsewhere, so that what it brought reaches the run that replaced it.
    pub(super) fn source_of(&mut self, origin: Option<&str>, v: &Value) -> String {
        let Some(origin) = origin else {
            return "client".into();
        };
        if self.legacy {
            return origin.to_string();
        }
        let Ok(Some(sent)) = stamp_in_key(v, "incarnation", self.now) else {
            if self.speaks_incarnations(origin) {
                // It names a relative whose run we know, but does not carry that run's incarnation,
                // as every message of ours does: not from the tree (a client naming a relative). It
                // counts as a client's change, so that it reaches that relative too.
                return "client".into();
            }
            return origin.to_string();
        };
        let answers = stamp_in_key(v, "answers", self.now).ok().flatten();
        if self
            .tree
            .incarnation_of(origin)
            .is_some_and(|now| &sent < now)
            || self.tree.awaits_answer(origin, answers.as_ref())
        {
            return format!("{origin}#ended");
        }
        self.tree.learn_incarnation(origin, &sent);
        origin.to_string()
    }

    /// `apiToken`: a JSON string, or ours `{token, stamp}`. An older token than the one held is
    /// ignored; the same token again is no rotation (and no reload).
    pub(super) fn on_token(
        &mut self,
        batch: &mut Batch<'_>,
        payload: &Result<Value, String>,
    ) -> Result<(), String> {
        let (token, given) = match payload {
            Ok(Value::String(t)) => (t.as_str(), None),
            Ok(v @ Value::Object(m)) if m.contains_key("token") => match m.get("token") {
                Some(Value::String(t)) => (t.as_str(), stamp_in(v, self.now)?),
                _ => return Err("`apiToken`'s `token` must be a JSON string".into()),
            },
            Ok(Value::Null) => return Ok(()),
            Ok(other) => {
                return Err(format!(
                    "`apiToken` takes the token as a JSON string, found {}",
                    stateful_engine::error::json_type(other)
                ));
            }
            Err(e) => return Err(e.clone()),
        };
        if token.is_empty() {
            return Ok(());
        }
        if !self.legacy {
            crate::valid::token(token).map_err(|e| format!("`apiToken`: {e}"))?;
        }
        let stamp = self.arrival(batch, given);
        if self.api.rotate(Secret::new(token), stamp.as_ref()) {
            self.token_changed = true;
        }
        Ok(())
    }

    /// `apiUrl`: a non-empty JSON string, or ours `{url, stamp}`; an older one is ignored.
    pub(super) fn on_url(
        &mut self,
        batch: &mut Batch<'_>,
        payload: &Result<Value, String>,
    ) -> Result<(), String> {
        let (url, given) = match payload {
            Ok(Value::String(u)) if !u.is_empty() => (u.as_str(), None),
            Ok(v @ Value::Object(m)) => match m.get("url") {
                Some(Value::String(u)) if !u.is_empty() => (u.as_str(), stamp_in(v, self.now)?),
                _ => return Err("`apiUrl` takes the URL as a non-empty JSON string".into()),
            },
            Ok(_) => return Err("`apiUrl` takes the URL as a non-empty JSON string".into()),
            Err(e) => return Err(e.clone()),
        };
        if self.api.loads.hosts.is_some() {
            // A workflow of this release: an http(s) URL on one of the tree's API hosts.
            crate::valid::allowed(url, self.api.loads.hosts.as_ref())
                .map_err(|e| format!("`apiUrl`: {e}"))?;
        }
        let stamp = self.arrival(batch, given);
        if self.api.set_url(url, stamp.as_ref()) {
            self.url_changed = true;
        }
        Ok(())
    }

    /// `status`: a JSON string, or ours `{status, stamp}`.
    pub(super) fn on_status(
        &mut self,
        batch: &mut Batch<'_>,
        payload: &Result<Value, String>,
    ) -> Result<(), String> {
        let v = payload.as_ref().ok();
        let (status, given) = match v {
            Some(Value::String(s)) => (Some(s.as_str()), None),
            Some(o @ Value::Object(m)) => (
                m.get("status").and_then(Value::as_str),
                stamp_in(o, self.now).ok().flatten(),
            ),
            _ => (None, None),
        };
        match status {
            Some("running") => {
                self.ordered_transition(batch, given, Status::Paused, Status::Running)
            }
            Some("paused") => {
                self.ordered_transition(batch, given, Status::Running, Status::Paused)
            }
            Some("completed" | "complete") => self.end(Status::Completed, None),
            Some("cancelled" | "cancelling" | "cancel") => self.end(Status::Cancelled, None),
            _ => {
                return Err(
                    "`status` takes one of \"running\", \"paused\", \"completed\", \"cancelled\""
                        .into(),
                );
            }
        }
        Ok(())
    }

    pub(super) fn on_subscribe(
        &mut self,
        batch: &mut Batch<'_>,
        payload: &Result<Value, String>,
    ) -> Result<(), String> {
        let v = payload.as_ref().map_err(Clone::clone)?;
        let mut sub = serde_json::from_value::<Subscription>(v.clone())
            .map_err(|e| format!("not a subscription: {e}"))?;
        crate::valid::subscription(&sub)?;
        if let Some(i) = sub.incarnation.take() {
            sub.incarnation = Some(crate::order::admit(i, self.now)?);
        }
        let known =
            self.tree.subscriptions().iter().any(|x| {
                x.workflow_id == sub.workflow_id && x.subscription_id == sub.subscription_id
            });
        if !known && self.tree.subscriptions().len() >= crate::tree::MAX_SUBSCRIPTIONS {
            return Err(format!(
                "refused: this workflow already has {} subscriptions, the most it keeps",
                crate::tree::MAX_SUBSCRIPTIONS
            ));
        }
        let given = stamp_in(v, self.now)?;
        let stamp = self.arrival(batch, given);
        if let Some(s) = &stamp
            && !self
                .tree
                .order_subscription(&sub.workflow_id, &sub.subscription_id, s, true)
        {
            return Ok(());
        }
        match stamp {
            Some(s) => self.tree.subscribe_fresh(sub, s),
            None => {
                self.tree.subscribe(sub);
            }
        }
        Ok(())
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        batch: &mut Batch<'_>,
        payload: &Result<Value, String>,
    ) -> Result<(), String> {
        let p = payload.as_ref().ok();
        let field = |k: &str| p.and_then(|v| v.get(k)).and_then(|v| v.as_str());
        let (Some(w), Some(sid)) = (field("workflowId"), field("subscriptionId")) else {
            return Err("`unsubscribe` takes {workflowId, subscriptionId}".into());
        };
        if w.len() > stateful_engine::plan::MAX_WORKFLOW_ID_LEN
            || sid.len() > crate::valid::MAX_NAME_LEN
        {
            return Err("`unsubscribe`: its `workflowId` or `subscriptionId` is too long".into());
        }
        let given = p.map(|v| stamp_in(v, self.now)).transpose()?.flatten();
        if let Some(s) = self.arrival(batch, given)
            && !self.tree.order_subscription(w, sid, &s, false)
        {
            return Ok(());
        }
        if self.tree.unsubscribe(w, sid) {
            // No managing parent references this entity any more.
            self.end(Status::Cancelled, Some("no parent references it any more"));
        }
        Ok(())
    }

    /// A report from a child (or any publisher): `{workflowId, status, reason}`.
    pub(super) fn on_child_ended(&mut self, payload: &Result<Value, String>) -> Result<(), String> {
        let v = payload.as_ref().map_err(Clone::clone)?;
        let text = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let wid = text("workflowId");
        let reason = text("reason");
        if !self.legacy
            && self.speaks_incarnations(&wid)
            && let Some(known) = self.tree.incarnation_of(&wid)
        {
            match stamp_in_key(v, "incarnation", self.now)? {
                // An ended run of a child that was started again since.
                Some(sent) if &sent < known => return Ok(()),
                Some(_) => {}
                // Every report of ours carries the run's incarnation: this one is not from the
                // child's run (a client's). It does not detach the child.
                None => {
                    return Err(format!(
                        "ignored: a `childEnded` about `{}` must come from its own run (with its                          incarnation); a client cannot end a child this way (cancel it instead)",
                        crate::audit::clip(&wid, 200)
                    ));
                }
            }
        }
        let generation = self.tree.children().get(&wid).map_or(0, |c| c.generation);
        let outcome = if reason == "cancelled" {
            ChildOutcome::Cancelled
        } else {
            ChildOutcome::Completed
        };
        self.child_events.push(ChildEvent::new(
            &wid,
            generation,
            ChildEventKind::Reported,
            outcome,
            reason,
        ));
        Ok(())
    }
}
