//! Outbound change hooks (the entity's `onChange`, see [`stateful_engine::hook`]): what each batch
//! calls for, coalesced while a call is pending, delivered one at a time in version order, at least
//! once, and what became of each delivery.
//!
//! - **Observed** after every batch ([`Hooks::observe`]): a change of the owned entity's fields (old
//!   and new values, only the hook's `fields` when it names some), its deletion, a status change, a
//!   child started or ended. Each hook has at most one pending delivery, into which later events
//!   coalesce (a field keeps its first old value and its last new one).
//! - **Delivered** one call at a time per workflow ([`Hooks::take`]): the pending delivery with the
//!   lowest version first; never while the workflow is paused. The body carries an idempotency key
//!   (`{workflowId}:{chain}:{version}:{seq}`, the chain naming the execution: see
//!   [`Hooks::set_chain`]; the same key when a delivery is sent again, e.g. by the next run after a
//!   continue-as-new that cut a call short), also sent as the `Idempotency-Key` header.
//! - **Finished** ([`Hooks::done`]): a 2xx answer delivered it; anything else after the activity's
//!   retries refused it: counted and recorded (the `hooks` query), and the next one goes.
//!
//! Everything here is bounded: values kept per field, children listed per delivery, origins,
//! recorded refusals, and the body of a call.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stateful_engine::hook::{Hook, HookEvent, HookInclude};
use stateful_engine::normalize::Row;

use crate::Secret;

/// The largest JSON value kept for one field's old or new value; a larger one is kept as
/// `{"omittedBytes": n}`.
pub const MAX_HOOK_VALUE_BYTES: usize = 16 * 1024;
/// The largest body of one call (the `httpRequest` activity's input stays far under Temporal's
/// payload limit): past it the entity's row, then the changes' values, are left out (and said so).
pub const MAX_HOOK_BODY_BYTES: usize = 256 * 1024;
/// Children events one delivery lists (more are counted in `childrenOmitted`).
pub const MAX_HOOK_CHILDREN: usize = 100;
/// Status transitions one delivery lists (the oldest are dropped first).
pub const MAX_HOOK_STATUSES: usize = 20;
/// Origins one delivery lists.
pub const MAX_HOOK_ORIGINS: usize = 20;
/// Refused deliveries the `hooks` query keeps.
pub const MAX_HOOK_REFUSALS: usize = 20;

/// A field's values before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// Before the first change coalesced here (null: absent).
    pub old: Value,
    /// After the last one (null: removed).
    pub new: Value,
}

/// A status transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// Workflow time (ms).
    pub at: u64,
}

/// A child started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildNote {
    /// `started` or `ended`.
    pub event: String,
    /// The child's workflow id.
    pub workflow_id: String,
    /// How it ended (empty for `started`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
}

/// One delivery of one hook: the events coalesced into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The hook's index in the entity's `onChange`.
    pub hook: usize,
    /// The hook's URL template (a schema change that moves or removes the hook is noticed).
    pub url: String,
    /// Its sequence number, given when it is first sent (0 while pending).
    #[serde(default)]
    pub seq: u64,
    /// The store version before its first event.
    pub from_version: u64,
    /// The store version after its last event.
    pub version: u64,
    /// Changed fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, Diff>,
    /// The entity was deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Status transitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Transition>,
    /// Children started or ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildNote>,
    /// Children events left out (past [`MAX_HOOK_CHILDREN`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub children_omitted: u64,
    /// Where the changes came from (`client`, `api`, a workflow id).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub origins: BTreeSet<String>,
    /// Events coalesced into it.
    pub events: u64,
    /// Workflow time of its first event.
    pub since: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A refused delivery, as the `hooks` query shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// Its idempotency key.
    pub key: String,
    /// The hook's URL template.
    pub url: String,
    /// The version it carried.
    pub version: u64,
    /// Why (bounded).
    pub reason: String,
    /// Workflow time (ms).
    pub at: u64,
}

/// What the hooks hand to the next run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HooksCarry {
    /// The delivery being sent when the run handed over: sent again first, with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Delivery>,
    /// Pending deliveries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Delivery>,
    /// Sequence numbers given so far.
    #[serde(default)]
    pub seq: u64,
    /// Deliveries answered 2xx.
    #[serde(default)]
    pub delivered: u64,
    /// Deliveries refused.
    #[serde(default)]
    pub refused: u64,
    /// Events coalesced into a pending delivery.
    #[serde(default)]
    pub coalesced: u64,
    /// The last delivered: key, version, time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<Value>,
    /// Recent refusals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Refusal>,
    /// The execution chain the keys name (see [`Hooks::set_chain`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chain: String,
}

impl HooksCarry {
    /// True when there is nothing to hand over.
    pub fn is_empty(&self) -> bool {
        *self == HooksCarry::default()
    }
}

/// What one batch did that hooks may be called for.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    /// The owned entity's row before the batch.
    pub before: Option<&'a Row>,
    /// Its change in the batch, if any.
    pub change: Option<&'a stateful_engine::change::EntityChange>,
    /// The status before and after (`status_str`).
    pub status: Option<(&'a str, &'a str)>,
    /// Children started or ended (`started`/`ended`, workflow id, outcome).
    pub children: Vec<ChildNote>,
    /// The store versions before and after.
    pub versions: (u64, u64),
    /// Workflow time (ms).
    pub now: u64,
}

/// A call to make: the glue runs it through the `httpRequest` activity.
#[derive(Debug, Clone)]
pub struct HookCall {
    /// The delivery's sequence number (its outcome names it).
    pub seq: u64,
    /// The URL, filled in.
    pub url: String,
    /// The idempotency key (also in the body).
    pub key: String,
    /// The JSON body.
    pub body: Value,
    /// The bearer token (only to the tree's API hosts).
    pub token: Option<Secret>,
}

/// Where the call goes and who the workflow is, for [`Hooks::take`].
pub struct Target<'a> {
    /// The workflow id.
    pub workflow_id: &'a str,
    /// The entity name.
    pub entity: &'a str,
    /// The entity id.
    pub id: &'a str,
    /// `apiBase`.
    pub base: Option<&'a str>,
    /// The tree's API hosts (None: not checked, as for histories recorded before allow-lists).
    pub hosts: Option<&'a BTreeSet<String>>,
    /// The token.
    pub token: Option<&'a Secret>,
    /// The owned entity's row now.
    pub row: Option<&'a Row>,
    /// Workflow time (ms).
    pub now: u64,
}

/// One workflow's hook deliveries.
#[derive(Debug, Default)]
pub struct Hooks {
    pending: BTreeMap<usize, Delivery>,
    /// The delivery being sent, and whether its call is out.
    current: Option<(Delivery, bool)>,
    seq: u64,
    delivered: u64,
    refused: u64,
    coalesced: u64,
    last_delivered: Option<Value>,
    refusals: VecDeque<Refusal>,
    chain: String,
}

fn bounded(v: Option<&Value>) -> Value {
    match v {
        None => Value::Null,
        Some(v) => {
            let n = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            if n > MAX_HOOK_VALUE_BYTES {
                json!({ "omittedBytes": n })
            } else {
                v.clone()
            }
        }
    }
}

impl Hooks {
    /// From what the previous run handed over.
    pub fn carried(c: HooksCarry) -> Hooks {
        Hooks {
            pending: c.pending.into_iter().map(|d| (d.hook, d)).collect(),
            current: c.current.map(|d| (d, false)),
            seq: c.seq,
            delivered: c.delivered,
            refused: c.refused,
            coalesced: c.coalesced,
            last_delivered: c.last_delivered,
            refusals: c.refusals.into_iter().collect(),
            chain: c.chain,
        }
    }

    /// Names the execution chain in the keys: the first run's id (a prefix), set once when a
    /// workflow first starts and carried over continue-as-new. A workflow id used again by a new
    /// execution (a child restarted after it ended, a root started again) then never repeats an
    /// earlier execution's keys, which a receiver would drop as duplicates.
    pub fn set_chain(&mut self, first_run_id: &str) {
        if self.chain.is_empty() {
            self.chain = first_run_id.chars().take(12).collect();
        }
    }

    /// What the next run takes over (a call out now is sent again by it, with the same key).
    pub fn carry(&self) -> HooksCarry {
        HooksCarry {
            current: self.current.as_ref().map(|(d, _)| d.clone()),
            pending: self.pending.values().cloned().collect(),
            seq: self.seq,
            delivered: self.delivered,
            refused: self.refused,
            coalesced: self.coalesced,
            last_delivered: self.last_delivered.clone(),
            refusals: self.refusals.iter().cloned().collect(),
            chain: self.chain.clone(),
        }
    }

    /// True when a delivery waits or is being sent.
    pub fn busy(&self) -> bool {
        self.current.is_some() || !self.pending.is_empty()
    }

    /// True when a call is out (its outcome has not come back).
    pub fn call_out(&self) -> bool {
        self.current.as_ref().is_some_and(|(_, out)| *out)
    }

    /// Records what a batch calls the hooks for.
    pub fn observe(&mut self, hooks: &[Hook], o: &Observed<'_>) {
        for (i, h) in hooks.iter().enumerate() {
            let mut d = Delivery {
                hook: i,
                url: h.url.clone(),
                seq: 0,
                from_version: o.versions.0,
                version: o.versions.1,
                changes: BTreeMap::new(),
                deleted: false,
                statuses: Vec::new(),
                children: Vec::new(),
                children_omitted: 0,
                origins: BTreeSet::new(),
                events: 0,
                since: o.now,
            };
            if h.on.contains(&HookEvent::Change)
                && let Some(c) = o.change
            {
                for (f, fc) in &c.fields {
                    if !h.fields.is_empty() && !h.fields.contains(f) {
                        continue;
                    }
                    d.changes.insert(
                        f.clone(),
                        Diff {
                            old: bounded(o.before.and_then(|r| r.get(f))),
                            new: bounded(fc.value.as_ref()),
                        },
                    );
                    d.origins.insert(fc.source.to_string());
                }
                if let Some(del) = &c.deletion {
                    d.deleted = true;
                    d.origins.insert(del.source.to_string());
                }
                if !d.changes.is_empty() || d.deleted {
                    d.events += 1;
                }
            }
            if h.on.contains(&HookEvent::Status)
                && let Some((from, to)) = o.status
                && from != to
            {
                d.statuses.push(Transition {
                    from: from.to_string(),
                    to: to.to_string(),
                    at: o.now,
                });
                d.events += 1;
            }
            if h.on.contains(&HookEvent::Child) && !o.children.is_empty() {
                d.children = o.children.clone();
                d.events += 1;
            }
            if d.events > 0 {
                self.add(d);
            }
        }
    }

    fn add(&mut self, d: Delivery) {
        let Some(p) = self.pending.get_mut(&d.hook) else {
            let mut d = d;
            d.origins = d.origins.into_iter().take(MAX_HOOK_ORIGINS).collect();
            if d.children.len() > MAX_HOOK_CHILDREN {
                d.children_omitted += (d.children.len() - MAX_HOOK_CHILDREN) as u64;
                d.children.truncate(MAX_HOOK_CHILDREN);
            }
            self.pending.insert(d.hook, d);
            return;
        };
        self.coalesced += 1;
        p.version = p.version.max(d.version);
        p.events += d.events;
        for (f, diff) in d.changes {
            match p.changes.get_mut(&f) {
                Some(e) => e.new = diff.new,
                None => {
                    p.changes.insert(f, diff);
                }
            }
        }
        p.deleted |= d.deleted;
        p.statuses.extend(d.statuses);
        if p.statuses.len() > MAX_HOOK_STATUSES {
            let cut = p.statuses.len() - MAX_HOOK_STATUSES;
            p.statuses.drain(..cut);
        }
        for c in d.children {
            if p.children.len() < MAX_HOOK_CHILDREN {
                p.children.push(c);
            } else {
                p.children_omitted += 1;
            }
        }
        for o in d.origins {
            if p.origins.len() >= MAX_HOOK_ORIGINS {
                break;
            }
            p.origins.insert(o);
        }
    }

    /// The next call to make, if none is out: the delivery cut short by a hand-over first, then the
    /// pending one with the lowest version. A hook that left the schema, a URL that cannot be
    /// filled in, or a host outside the tree's API hosts refuse the delivery (recorded) and the
    /// next one is tried.
    pub fn take(&mut self, hooks: &[Hook], t: &Target<'_>) -> Option<HookCall> {
        loop {
            match &self.current {
                Some((_, true)) => return None,
                Some((_, false)) => {}
                None => {
                    let next = self
                        .pending
                        .values()
                        .min_by_key(|d| (d.from_version, d.since, d.hook))?
                        .hook;
                    let mut d = self.pending.remove(&next)?;
                    self.seq += 1;
                    d.seq = self.seq;
                    self.current = Some((d, false));
                }
            }
            let (d, out) = self.current.as_mut()?;
            let key = key_of(&self.chain, t.workflow_id, d);
            // The hook as the schema has it now (a schema change may have moved it).
            let hook = hooks
                .get(d.hook)
                .filter(|h| h.url == d.url)
                .or_else(|| hooks.iter().find(|h| h.url == d.url));
            let call = match hook {
                None => Err("the hook is no longer in the schema".to_string()),
                Some(h) => match crate::api::render(&h.url, t.base, t.entity, t.id) {
                    None => Err(format!(
                        "the hook URL `{}` needs an apiBase and the workflow has none",
                        h.url
                    )),
                    Some(url) => match crate::valid::allowed(&url, t.hosts) {
                        Err(e) => Err(e),
                        Ok(()) => Ok(HookCall {
                            seq: d.seq,
                            body: body(d, h, t, &key),
                            url,
                            key: key.clone(),
                            token: t.token.cloned(),
                        }),
                    },
                },
            };
            match call {
                Ok(c) => {
                    *out = true;
                    return Some(c);
                }
                Err(reason) => {
                    let (d, _) = self.current.take()?;
                    self.refuse(&d, key, reason, t.now);
                }
            }
        }
    }

    /// A call's outcome: `Ok(status)` when the activity answered, `Err(reason)` when it failed
    /// after its retries. Only 2xx delivers.
    pub fn done(&mut self, seq: u64, outcome: Result<u16, String>, workflow_id: &str, now: u64) {
        let Some((d, true)) = &self.current else {
            return;
        };
        if d.seq != seq {
            return;
        }
        let Some((d, _)) = self.current.take() else {
            return;
        };
        let key = key_of(&self.chain, workflow_id, &d);
        match outcome {
            Ok(s) if (200..300).contains(&s) => {
                self.delivered += 1;
                self.last_delivered = Some(json!({"key": key, "version": d.version, "at": now}));
            }
            Ok(s) => self.refuse(&d, key, format!("the hook answered HTTP {s}"), now),
            Err(e) => self.refuse(&d, key, e, now),
        }
    }

    fn refuse(&mut self, d: &Delivery, key: String, reason: String, now: u64) {
        self.refused += 1;
        if self.refusals.len() >= MAX_HOOK_REFUSALS {
            self.refusals.pop_front();
        }
        self.refusals.push_back(Refusal {
            key,
            url: d.url.clone(),
            version: d.version,
            reason: crate::audit::clip(&reason, crate::audit::MAX_REASON),
            at: now,
        });
    }

    /// Counts: delivered, refused.
    pub fn counts(&self) -> (u64, u64) {
        (self.delivered, self.refused)
    }

    /// The `hooks` query: the entity's hooks, what waits, what is out, what became of deliveries.
    pub fn to_json(&self, hooks: &[Hook]) -> Value {
        json!({
            "hooks": hooks.iter().map(Hook::to_json).collect::<Vec<_>>(),
            "pending": self.pending.values().map(|d| json!({
                "hook": d.url, "fromVersion": d.from_version, "version": d.version,
                "events": d.events, "since": d.since,
            })).collect::<Vec<_>>(),
            "current": self.current.as_ref().map(|(d, out)| json!({
                "hook": d.url, "seq": d.seq, "version": d.version, "sent": out,
            })),
            "delivered": self.delivered,
            "refused": self.refused,
            "coalesced": self.coalesced,
            "lastDelivered": self.last_delivered,
            "refusals": self.refusals,
        })
    }
}

/// A delivery's idempotency key: `{workflowId}:{chain}:{version}:{seq}` (`{workflowId}:{version}:
/// {seq}` without a chain).
fn key_of(chain: &str, workflow_id: &str, d: &Delivery) -> String {
    if chain.is_empty() {
        format!("{workflow_id}:{}:{}", d.version, d.seq)
    } else {
        format!("{workflow_id}:{chain}:{}:{}", d.version, d.seq)
    }
}

/// The body of a call, within [`MAX_HOOK_BODY_BYTES`]: the row goes first, then the values.
fn body(d: &Delivery, h: &Hook, t: &Target<'_>, key: &str) -> Value {
    let mut m = Map::new();
    m.insert("idempotencyKey".into(), json!(key));
    m.insert("workflowId".into(), json!(t.workflow_id));
    m.insert("entity".into(), json!(t.entity));
    m.insert("id".into(), json!(t.id));
    m.insert("version".into(), json!(d.version));
    m.insert("fromVersion".into(), json!(d.from_version));
    m.insert("events".into(), json!(d.events));
    m.insert("since".into(), json!(d.since));
    m.insert("sentAt".into(), json!(t.now));
    if !d.changes.is_empty() {
        m.insert("changes".into(), json!(d.changes));
    }
    if d.deleted {
        m.insert("deleted".into(), json!(true));
    }
    if !d.statuses.is_empty() {
        m.insert("statuses".into(), json!(d.statuses));
    }
    if !d.children.is_empty() || d.children_omitted > 0 {
        m.insert("children".into(), json!(d.children));
        if d.children_omitted > 0 {
            m.insert("childrenOmitted".into(), json!(d.children_omitted));
        }
    }
    m.insert("origins".into(), json!(d.origins));
    if h.include == HookInclude::Entity {
        m.insert("data".into(), t.row.map_or(Value::Null, |r| json!(r)));
    }
    let size = |m: &Map<String, Value>| serde_json::to_vec(m).map_or(usize::MAX, |b| b.len());
    if size(&m) > MAX_HOOK_BODY_BYTES && m.remove("data").is_some() {
        m.insert("dataOmitted".into(), json!(true));
    }
    if size(&m) > MAX_HOOK_BODY_BYTES && m.remove("changes").is_some() {
        m.insert(
            "changesOmitted".into(),
            json!(d.changes.keys().take(100).collect::<Vec<_>>()),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests;
