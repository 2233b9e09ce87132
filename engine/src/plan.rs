//! Planning what a workflow sends: which child workflows its entity's managed relations call for, and,
//! for a change set, the stamped `update` / `delete` messages each copy (a child, a parent, any
//! subscriber) must receive — never what came from that copy itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::change::{ChangeSet, Stamp};
use crate::normalize::{EntityRef, composite_key, id_key};
use crate::schema::{IdAttribute, Managed, Schema};
use crate::store::Store;

/// A child workflow the own entity calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    /// `{Entity}-{id}` (or `{Entity}-{id}-{parentId}`).
    pub workflow_id: String,
    /// The child's own entity.
    pub entity: EntityRef,
    /// The relation field of the parent entity that holds it.
    pub field: String,
    /// How it is managed.
    pub managed: Managed,
}

/// A child that is not started, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    /// The workflow id it would have.
    pub workflow_id: String,
    /// Why it is not started.
    pub reason: String,
}

/// How deep a tree of workflows may grow: a workflow with this many ancestors starts no children
/// (they are skipped with the reason). Each level's input holds the ids of all the levels above it.
pub const MAX_TREE_DEPTH: usize = 100;

/// The longest workflow id Temporal accepts by default (`limit.maxIDLength`): a child whose id would
/// be longer is not started, and a change that would introduce one is refused.
pub const MAX_WORKFLOW_ID_LEN: usize = 1_000;

/// The reason a child is not started when its workflow id is too long.
fn too_long(wid: &str) -> String {
    format!(
        "its workflow id would be {} bytes long; Temporal accepts at most {MAX_WORKFLOW_ID_LEN}",
        wid.len()
    )
}

/// Refuses a change that writes an entity whose child workflow (through a managed relation of the
/// own entity) would have an id longer than [`MAX_WORKFLOW_ID_LEN`]: the reason names the entity.
/// Entities are checked as the change writes them (with the stored row for id attributes the change
/// does not carry).
pub fn check_child_ids(
    schema: &Schema,
    store: &Store,
    own: &EntityRef,
    entities: &crate::normalize::Entities,
) -> Result<(), String> {
    let Some(def) = schema.get(&own.entity) else {
        return Ok(());
    };
    for rel in def.relations.values().filter(|r| r.managed.auto_start) {
        for (id, row) in entities.get(&rel.target).into_iter().flatten() {
            let key = match &rel.managed.id_attribute {
                None => Some(id.clone()),
                Some(IdAttribute::Single(a)) => row
                    .get(a)
                    .or_else(|| store.get(&rel.target, id).and_then(|r| r.get(a)))
                    .and_then(id_key),
                Some(IdAttribute::Composite(attrs)) => {
                    let mut merged = store.get(&rel.target, id).cloned().unwrap_or_default();
                    merged.extend(row.clone());
                    composite_key(&merged, attrs).ok()
                }
            };
            let Some(key) = key else { continue };
            let wid = child_id(&rel.target, &key, &rel.managed, &own.id);
            if wid.len() > MAX_WORKFLOW_ID_LEN {
                let mut shown = id.clone();
                shown.truncate(40);
                return Err(format!(
                    "{}:{shown}… would run as a child workflow whose id is {} bytes long; Temporal \
                     accepts at most {MAX_WORKFLOW_ID_LEN}: shorten its id",
                    rel.target,
                    wid.len()
                ));
            }
        }
    }
    Ok(())
}

fn child_id(target: &str, key: &str, managed: &Managed, parent_id: &str) -> String {
    if managed.include_parent_id {
        format!("{target}-{key}-{parent_id}")
    } else {
        format!("{target}-{key}")
    }
}

/// The children that the own entity's managed relations call for (autoStart only, stored entities
/// only), in a stable order,
/// and those skipped because they would close a cycle (their id is the workflow's own or an
/// ancestor's).
pub fn desired_children(
    schema: &Schema,
    store: &Store,
    own: &EntityRef,
    own_workflow_id: &str,
    ancestors: &[String],
) -> (Vec<ChildSpec>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    let (Some(def), Some(row)) = (schema.get(&own.entity), store.get(&own.entity, &own.id)) else {
        return (out, skipped);
    };
    for (field, rel) in &def.relations {
        if !rel.managed.auto_start {
            continue;
        }
        let ids: Vec<String> = match row.get(field) {
            Some(Value::Array(items)) => items.iter().filter_map(id_key).collect(),
            Some(v) => id_key(v).into_iter().collect(),
            None => Vec::new(),
        };
        for id in ids {
            let Some(wid) =
                child_workflow_id(schema, store, &rel.target, &id, &rel.managed, &own.id)
            else {
                continue;
            };
            if ancestors.len() + 1 >= MAX_TREE_DEPTH {
                skipped.push(Skipped {
                    workflow_id: wid.chars().take(80).collect(),
                    reason: format!(
                        "the tree is {} workflows deep here, the most it may be",
                        ancestors.len() + 1
                    ),
                });
                continue;
            }
            if wid.len() > MAX_WORKFLOW_ID_LEN {
                let mut shown = wid.clone();
                shown.truncate(80);
                skipped.push(Skipped {
                    reason: too_long(&wid),
                    workflow_id: shown,
                });
                continue;
            }
            if wid == own_workflow_id || ancestors.contains(&wid) {
                skipped.push(Skipped {
                    workflow_id: wid,
                    reason: "circular: it is this workflow or one of its ancestors".into(),
                });
                continue;
            }
            // A dangling id (the entity was deleted, or is not loaded yet) calls for no child.
            if store.get(&rel.target, &id).is_none() {
                continue;
            }
            if seen.insert(wid.clone()) {
                out.push(ChildSpec {
                    workflow_id: wid,
                    entity: EntityRef::new(rel.target.clone(), id),
                    field: field.clone(),
                    managed: rel.managed.clone(),
                });
            }
        }
    }
    skipped.sort();
    skipped.dedup();
    (out, skipped)
}

/// The workflow id of the child managing `target`/`id`: `{Entity}-{id}`, `{Entity}-{id}-{parentId}`,
/// or with the relation's composite id (which needs the child's row).
pub fn child_workflow_id(
    schema: &Schema,
    store: &Store,
    target: &str,
    id: &str,
    managed: &Managed,
    parent_id: &str,
) -> Option<String> {
    let key = match &managed.id_attribute {
        Some(IdAttribute::Composite(attrs)) => composite_key(store.get(target, id)?, attrs).ok()?,
        Some(IdAttribute::Single(a)) => store.get(target, id)?.get(a).and_then(id_key)?,
        None => id.to_string(),
    };
    let _ = schema;
    Some(child_id(target, &key, managed, parent_id))
}

/// A subscription selector: `*`, `Entity`, `Entity.*`, `Entity.id`, `Entity.*.field`, ... Parts are
/// matched against `Entity.id.field`; `*` matches any one part (a lone `*` matches everything) and
/// a shorter selector matches everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<String>);

impl Selector {
    /// Parses a selector (`*` when empty).
    pub fn parse(s: &str) -> Selector {
        let s = s.trim();
        if s.is_empty() || s == "*" {
            return Selector(Vec::new());
        }
        Selector(s.split('.').map(str::to_string).collect())
    }

    fn part(&self, i: usize, v: &str) -> bool {
        self.0.get(i).is_none_or(|p| p == "*" || p == v)
    }

    /// True when the selector takes this entity's field.
    pub fn matches_field(&self, r: &EntityRef, field: &str) -> bool {
        self.part(0, &r.entity) && self.part(1, &r.id) && self.part(2, field)
    }

    /// True when the selector takes this entity's deletion.
    pub fn matches_entity(&self, r: &EntityRef) -> bool {
        self.part(0, &r.entity) && self.part(1, &r.id)
    }
}

/// The `update` and `delete` messages for one receiver (chrono-forge's payloads plus `stamps`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outgoing {
    /// `{updates, stamps, changeOrigin}`, when there are field writes.
    pub update: Option<Value>,
    /// `{deletions, stamps, changeOrigin}`, when there are deletions.
    pub delete: Option<Value>,
}

impl Outgoing {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.update.is_none() && self.delete.is_none()
    }
}

#[derive(Default)]
struct Builder {
    updates: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    ustamps: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    deletions: BTreeMap<String, BTreeMap<String, Value>>,
    dstamps: BTreeMap<String, BTreeMap<String, Value>>,
}

impl Builder {
    fn field(&mut self, r: &EntityRef, f: &str, value: Option<&Value>, stamp: &Stamp) {
        let st = json!([stamp.time, &*stamp.origin]);
        self.ustamps
            .entry(r.entity.clone())
            .or_default()
            .entry(r.id.clone())
            .or_default()
            .insert(f.to_string(), st);
        let row = self
            .updates
            .entry(r.entity.clone())
            .or_default()
            .entry(r.id.clone())
            .or_default();
        if let Some(v) = value {
            row.insert(f.to_string(), v.clone());
        }
    }

    fn delete(&mut self, r: &EntityRef, stamp: &Stamp) {
        self.deletions
            .entry(r.entity.clone())
            .or_default()
            .insert(r.id.clone(), json!({}));
        self.dstamps
            .entry(r.entity.clone())
            .or_default()
            .insert(r.id.clone(), json!([stamp.time, &*stamp.origin]));
    }

    fn finish(self, origin: &str) -> Outgoing {
        let mut out = Outgoing::default();
        if !self.ustamps.is_empty() {
            out.update = Some(
                json!({"updates": self.updates, "stamps": self.ustamps, "changeOrigin": origin}),
            );
        }
        if !self.dstamps.is_empty() {
            out.delete = Some(
                json!({"deletions": self.deletions, "stamps": self.dstamps, "changeOrigin": origin}),
            );
        }
        out
    }
}

/// Who receives a message, and what of a change set concerns it.
pub struct Audience<'a> {
    /// The receiver's workflow id: what came from it is not sent back.
    pub receiver: &'a str,
    /// Only these entities (a child's slice), or all.
    pub within: Option<&'a BTreeSet<EntityRef>>,
    /// Entities that just joined the receiver's slice: their whole stamped rows are sent.
    pub entered: &'a BTreeSet<EntityRef>,
    /// What the receiver subscribed to.
    pub selector: &'a Selector,
    /// Leave out of the entered rows the fields whose change came from the receiver (it has them:
    /// a child that adds an entity is not sent it back). Off for workflows that replay histories
    /// recorded before this rule.
    pub skip_own_entered: bool,
    /// The receiver holds every write it made (it was never restarted: a continued-as-new run keeps
    /// its state), so the entered rows' fields whose stamp it made are left out too.
    pub receiver_holds_own_writes: bool,
}

/// What `to.receiver` must learn of `cs`: the fields and deletions whose source is not the receiver,
/// restricted as `to` says, plus the whole stamped rows of what entered its slice. `origin` is this
/// workflow's id.
pub fn outgoing(
    store: &Store,
    schema: &Schema,
    cs: &ChangeSet,
    origin: &str,
    to: &Audience<'_>,
) -> Outgoing {
    let Audience {
        receiver,
        within,
        entered,
        selector,
        skip_own_entered,
        receiver_holds_own_writes,
    } = *to;
    let mut b = Builder::default();
    for (r, c) in &cs.entities {
        if within.is_some_and(|w| !w.contains(r)) || entered.contains(r) {
            continue;
        }
        if let Some(d) = &c.deletion
            && &*d.source != receiver
            && selector.matches_entity(r)
        {
            b.delete(r, &d.stamp);
        }
        for (f, fc) in &c.fields {
            if &*fc.source != receiver && selector.matches_field(r, f) {
                b.field(r, f, fc.value.as_ref(), &fc.stamp);
            }
        }
    }
    for r in entered {
        let from_receiver = |f: &str, stamp: &Stamp| {
            (receiver_holds_own_writes && &*stamp.origin == receiver)
                || (skip_own_entered
                    && cs
                        .entities
                        .get(r)
                        .and_then(|c| c.fields.get(f))
                        .is_some_and(|fc| &*fc.source == receiver))
        };
        full_row(store, schema, r, selector, &from_receiver, &mut b);
    }
    b.finish(origin)
}

fn full_row(
    store: &Store,
    schema: &Schema,
    r: &EntityRef,
    selector: &Selector,
    skip: &dyn Fn(&str, &Stamp) -> bool,
    b: &mut Builder,
) {
    let (Some(row), Some(meta)) = (store.get(&r.entity, &r.id), store.meta(&r.entity, &r.id))
    else {
        return;
    };
    let id_attr = schema.get(&r.entity).and_then(|d| d.id_attribute.single());
    let zero = Stamp::new(0, "");
    for (f, v) in row {
        let stamp = if id_attr == Some(f.as_str()) {
            meta.alive.as_ref().unwrap_or(&zero)
        } else {
            meta.stamps.get(f).unwrap_or(&zero)
        };
        if !selector.matches_field(r, f) || skip(f, stamp) {
            continue;
        }
        b.field(r, f, Some(v), stamp);
    }
}

/// What a peer that keeps no stamps (a chrono-forge workflow) is sent back after it wrote `touched`
/// here: the whole current rows of those that exist (as `selector` allows), and the deletion (with
/// its tombstone's stamp) of those that do not, unless the peer deleted them itself (`true`). From
/// `origin`, this workflow. Such a peer applies whatever arrives last: answering each of its
/// messages with the winning values makes both copies end equal (see the core's `echo`).
pub fn echo(
    store: &Store,
    schema: &Schema,
    touched: &BTreeMap<EntityRef, bool>,
    selector: &Selector,
    origin: &str,
) -> Outgoing {
    let mut b = Builder::default();
    for (r, peer_deleted) in touched {
        if store.get(&r.entity, &r.id).is_some() {
            full_row(store, schema, r, selector, &|_, _| false, &mut b);
        } else if !peer_deleted
            && selector.matches_entity(r)
            && let Some(tomb) = store.meta(&r.entity, &r.id).and_then(|m| m.tomb.as_ref())
        {
            b.delete(r, tomb);
        }
    }
    b.finish(origin)
}

/// A stamped copy of some entities, as the `state` and `stateStamps` of a child's start input.
pub fn stamped_slice(
    store: &Store,
    schema: &Schema,
    members: &BTreeSet<EntityRef>,
) -> (Value, Value) {
    let mut b = Builder::default();
    for r in members {
        full_row(
            store,
            schema,
            r,
            &Selector::parse("*"),
            &|_, _| false,
            &mut b,
        );
    }
    (json!(b.updates), json!(b.ustamps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Change;
    use crate::wire;

    fn schema() -> Schema {
        Schema::parse(
            "User: {listings: [Listing], profile: {entity: Profile, autoStart: false}}\nListing: {user: User, photos: [Photo]}\nPhoto: {listing: Listing}\nProfile: {}",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn children_follow_managed_relations_and_skip_cycles() {
        let s = schema();
        let mut st = Store::new();
        let m = wire::parse_update(
            &s,
            "User",
            &json!({"data": {"id": "u", "profile": {"id": "p"}, "listings": [{"id": "l1", "user": "u"}, {"id": "l2"}]}}),
        )
        .unwrap();
        st.apply(&s, &m.change, &Stamp::new(1, "w"), "c").unwrap();
        let (kids, skipped) =
            desired_children(&s, &st, &EntityRef::new("User", "u"), "User-u", &[]);
        let ids: Vec<_> = kids.iter().map(|k| k.workflow_id.as_str()).collect();
        assert_eq!(
            ids,
            ["Listing-l1", "Listing-l2"],
            "profile has autoStart: false"
        );
        assert!(skipped.is_empty());
        // From the listing's side, the back-reference to its parent is a cycle.
        let (kids, skipped) = desired_children(
            &s,
            &st,
            &EntityRef::new("Listing", "l1"),
            "Listing-l1",
            &["User-u".into()],
        );
        assert!(kids.is_empty());
        assert_eq!(skipped[0].workflow_id, "User-u");
        // A listing whose workflow id would be too long for Temporal is skipped with the reason;
        // its sibling is not.
        let long = "x".repeat(MAX_WORKFLOW_ID_LEN);
        let m = wire::parse_update(
            &s,
            "User",
            &json!({"data": {"id": "u", "listings": [{"id": "l1"}, {"id": long}]}}),
        )
        .unwrap();
        st.apply(&s, &m.change, &Stamp::new(2, "w"), "c").unwrap();
        let (kids, skipped) =
            desired_children(&s, &st, &EntityRef::new("User", "u"), "User-u", &[]);
        assert_eq!(kids.len(), 1);
        assert!(skipped[0].reason.contains("at most 1000"), "{skipped:?}");
    }

    #[test]
    fn child_ids_with_parent_id_and_composite_ids() {
        let s = Schema::parse(
            "Org: {teams: {entity: Team, many: true, includeParentId: true}, members: {entity: Member, many: true, idAttribute: [dept, id]}}\nTeam: {}\nMember: {}",
            "t",
        )
        .unwrap();
        let mut st = Store::new();
        let m = wire::parse_update(
            &s,
            "Org",
            &json!({"data": {"id": "o", "teams": [{"id": "t1"}], "members": [{"id": "m1", "dept": "ops"}]}}),
        )
        .unwrap();
        st.apply(&s, &m.change, &Stamp::new(1, "w"), "c").unwrap();
        let (kids, _) = desired_children(&s, &st, &EntityRef::new("Org", "o"), "Org-o", &[]);
        let ids: Vec<_> = kids.iter().map(|k| k.workflow_id.as_str()).collect();
        assert_eq!(ids, ["Member-ops-m1", "Team-t1-o"]);
        // A dangling id calls for no child.
        let del = Change::Delete {
            refs: [EntityRef::new("Team", "t1")].into(),
        };
        st.apply(&s, &del, &Stamp::new(2, "w"), "c").unwrap();
        let (kids, _) = desired_children(&s, &st, &EntityRef::new("Org", "o"), "Org-o", &[]);
        assert_eq!(kids.len(), 1);
    }

    #[test]
    fn outgoing_skips_what_came_from_the_receiver_and_applies_selectors() {
        let s = schema();
        let mut st = Store::new();
        let mut b = st.batch(&s);
        let c1 = Change::Upsert {
            entities: serde_json::from_value(json!({"Listing": {"l1": {"name": "a", "size": 1}}}))
                .unwrap(),
            strategy: Default::default(),
        };
        let c2 = Change::Upsert {
            entities: serde_json::from_value(json!({"Listing": {"l1": {"color": "red"}}})).unwrap(),
            strategy: Default::default(),
        };
        b.apply(&c1, &Stamp::new(5, "Listing-l1"), "Listing-l1")
            .unwrap();
        b.apply(&c2, &Stamp::new(6, "User-u"), "client").unwrap();
        let cs = b.finish();
        let none = BTreeSet::new();
        let all = Selector::parse("*");
        let aud = |receiver, selector| Audience {
            receiver,
            within: None,
            entered: &none,
            selector,
            skip_own_entered: true,
            receiver_holds_own_writes: false,
        };
        let to_child = outgoing(&st, &s, &cs, "User-u", &aud("Listing-l1", &all));
        let upd = to_child.update.unwrap();
        assert_eq!(upd["updates"]["Listing"]["l1"], json!({"color": "red"}));
        assert_eq!(
            upd["stamps"]["Listing"]["l1"]["color"],
            json!([6, "User-u"])
        );
        assert_eq!(upd["changeOrigin"], json!("User-u"));
        let names_sel = Selector::parse("Listing.*.name");
        let names = outgoing(&st, &s, &cs, "User-u", &aud("Other-1", &names_sel));
        assert_eq!(
            names.update.unwrap()["updates"]["Listing"]["l1"],
            json!({"name": "a"})
        );
        let photo_sel = Selector::parse("Photo");
        assert!(outgoing(&st, &s, &cs, "User-u", &aud("x", &photo_sel)).is_empty());
        // What a receiver gets reproduces the change on its copy.
        let mut copy = Store::new();
        let msg = outgoing(&st, &s, &cs, "o", &aud("x", &all)).update.unwrap();
        let m = wire::parse_update(&s, "User", &msg).unwrap();
        copy.apply(&s, &m.change, &Stamp::new(7, "x"), "o").unwrap();
        assert_eq!(copy.entities(), st.entities());
    }
}
