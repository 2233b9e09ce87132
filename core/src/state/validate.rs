//! The `validate` query: recomputes the checksum and checks the state against the schema, its own
//! references, and the children registry. Answers `{ok, version, checksum, entities, findings}`; `ok`
//! is false when a finding is an error (warnings, such as a reference to an entity this workflow does
//! not hold, are normal in a slice).

use serde_json::{Value, json};
use stateful_engine::normalize::id_key;
use stateful_engine::{EntityDef, EntityRef, Relation, Row, Schema, Store, checksum, plan};

use super::Core;
use crate::status::Status;

fn finding(severity: &str, kind: &str, message: String) -> Value {
    json!({"severity": severity, "kind": kind, "message": message})
}

impl Core {
    /// The `validate` query.
    pub fn validate_state(&self) -> Value {
        let mut findings = Vec::new();
        let sum = checksum(self.store.entities());
        self.check_checksum(&sum, &mut findings);
        let Some(schema) = self.ident.schema.as_deref() else {
            return json!({"ok": false, "findings": [finding("error", "schema", "no schema".into())]});
        };
        check_schema(&self.store, schema, &mut findings);
        if self.status == Status::Running || self.status == Status::Paused {
            self.check_children(schema, &mut findings);
        }
        let ok = !findings.iter().any(|f| f["severity"] == "error");
        json!({
            "ok": ok,
            "version": self.store.version(),
            "checksum": sum,
            "entities": self.store.len(),
            "children": self.tree.running().count(),
            "findings": findings,
        })
    }

    /// The carried state matched its checkpoint, and the state of a checkpointed version still has
    /// the checksum recorded then.
    fn check_checksum(&self, sum: &str, findings: &mut Vec<Value>) {
        if let Some(e) = &self.integrity_error {
            findings.push(finding("error", "checksum", e.clone()));
        }
        if let Some(cp) = self.audit.last_checkpoint()
            && cp.version == self.store.version()
            && cp.checksum != sum
        {
            findings.push(finding(
                "error",
                "checksum",
                format!(
                    "version {} had checksum {} at its checkpoint, and {sum} now",
                    cp.version, cp.checksum
                ),
            ));
        }
    }

    /// The children registry matches the managed relations (a warning while paused: the children
    /// catch up on resume), and no child is a workflow of another type (conflicting).
    fn check_children(&self, schema: &Schema, findings: &mut Vec<Value>) {
        let own = EntityRef::new(self.ident.entity.clone(), self.ident.id.clone());
        let (desired, _) = plan::desired_children(
            schema,
            &self.store,
            &own,
            &self.ident.workflow_id,
            &self.ident.ancestors,
        );
        let severity = if self.status == Status::Paused {
            "warning"
        } else {
            "error"
        };
        for c in &desired {
            if !self.tree.children().contains_key(&c.workflow_id) {
                findings.push(finding(
                    severity,
                    "children",
                    format!(
                        "{} {} has no child workflow ({})",
                        c.entity.entity, c.entity.id, c.workflow_id
                    ),
                ));
            }
        }
        for (wid, c) in self.tree.conflicting() {
            findings.push(finding(
                "error",
                "children",
                format!(
                    "{} {} has no child workflow: {wid} is not ours ({})",
                    c.entity,
                    c.id,
                    c.conflict.as_deref().unwrap_or("conflicting")
                ),
            ));
        }
        for (wid, c) in self.tree.running() {
            if !desired.iter().any(|d| &d.workflow_id == wid) {
                findings.push(finding(
                    severity,
                    "children",
                    format!(
                        "child {wid} runs but {} {} is no longer in a managed relation",
                        c.entity, c.id
                    ),
                ));
            }
        }
    }
}

/// Every entity is in the schema, every row's id matches its key, every relation holds ids.
pub(super) fn check_schema(store: &Store, schema: &Schema, findings: &mut Vec<Value>) {
    for (name, rows) in store.entities() {
        let Some(def) = schema.get(name) else {
            findings.push(finding(
                "error",
                "schema",
                format!("entity `{name}` is not in the schema"),
            ));
            continue;
        };
        for (id, row) in rows {
            check_row(store, name, def, id, row, findings);
        }
    }
}

fn check_row(
    store: &Store,
    name: &str,
    def: &EntityDef,
    id: &str,
    row: &Row,
    findings: &mut Vec<Value>,
) {
    if let Some(attr) = def.id_attribute.single()
        && row.get(attr).and_then(id_key).as_deref() != Some(id)
    {
        findings.push(finding(
            "error",
            "schema",
            format!(
                "{name} {id}: its `{attr}` is {}",
                row.get(attr).unwrap_or(&Value::Null)
            ),
        ));
    }
    for (field, rel) in &def.relations {
        check_relation(store, name, id, field, rel, row.get(field), findings);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_relation(
    store: &Store,
    name: &str,
    id: &str,
    field: &str,
    rel: &Relation,
    value: Option<&Value>,
    findings: &mut Vec<Value>,
) {
    let ids: Vec<&Value> = match (value, rel.many) {
        (None | Some(Value::Null), _) => return,
        (Some(Value::Array(a)), true) => a.iter().collect(),
        (Some(v), false) if !v.is_array() && !v.is_object() => vec![v],
        (Some(v), many) => {
            findings.push(finding(
                "error",
                "schema",
                format!(
                    "{name} {id}: `{field}` should hold {} of {}, found {v}",
                    if many { "a list of ids" } else { "the id" },
                    rel.target
                ),
            ));
            return;
        }
    };
    for v in ids {
        match id_key(v) {
            None => findings.push(finding(
                "error",
                "schema",
                format!("{name} {id}: `{field}` holds {v}, not an id"),
            )),
            Some(k) if store.get(&rel.target, &k).is_none() => findings.push(finding(
                "warning",
                "reference",
                format!(
                    "{name} {id}: `{field}` refers to {} {k}, which this workflow does not hold",
                    rel.target
                ),
            )),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::StartInput;
    use stateful_engine::Schema;

    fn core(data: Value) -> Core {
        let mut c = Core::default();
        let s = Schema::parse("User: {listings: [Listing]}\nListing: {user: User}", "t").unwrap();
        let js = s.to_json();
        c.start(
            StartInput::parse(&json!({"id": "u", "entityName": "User", "data": data})).unwrap(),
            s,
            js,
            "User-u".into(),
            1000,
        )
        .unwrap();
        c
    }

    #[test]
    fn a_sound_state_is_ok_and_problems_are_named() {
        let mut c = core(json!({"id": "u", "listings": [{"id": "l1", "user": "u"}]}));
        c.initial_effects();
        let v = c.validate_state();
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!(v["checksum"], json!(checksum(c.store.entities())));
        // A registry that lost its child, and a dangling reference.
        c.tree.forget_children();
        c.signal(
            crate::msg::Signal::Update,
            Ok(json!({"updates": {"Listing": {"l1": {"id": "l1", "user": "nobody"}}}})),
        );
        c.process(2000);
        c.tree.forget_children();
        let v = c.validate_state();
        assert_eq!(v["ok"], json!(false), "{v}");
        let text = v["findings"].to_string();
        assert!(text.contains("has no child workflow"), "{text}");
        assert!(text.contains("User nobody"), "{text}");
    }
}
