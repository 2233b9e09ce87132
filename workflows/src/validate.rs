//! The `validate` query: recomputes the checksum and checks the state against the schema, its own
//! references, and the children registry. Answers `{ok, version, checksum, entities, findings}`; `ok`
//! is false when a finding is an error (warnings, such as a reference to an entity this workflow does
//! not hold, are normal in a slice).

use serde_json::{Value, json};
use stateful_engine::normalize::id_key;
use stateful_engine::{EntityRef, checksum, plan};

use crate::core::{Core, Status};
use crate::tree::ChildStatus;

fn finding(severity: &str, kind: &str, message: String) -> Value {
    json!({"severity": severity, "kind": kind, "message": message})
}

impl Core {
    /// The `validate` query.
    pub fn validate_state(&self) -> Value {
        let mut findings = Vec::new();
        let entities = self.store.entities();
        let sum = checksum(entities);
        if let Some(e) = &self.integrity_error {
            findings.push(finding("error", "checksum", e.clone()));
        }
        if let Some(cp) = self.checkpoints.back()
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
        let Some(schema) = self.schema.as_deref() else {
            return json!({"ok": false, "findings": [finding("error", "schema", "no schema".into())]});
        };
        for (name, rows) in entities {
            let Some(def) = schema.get(name) else {
                findings.push(finding(
                    "error",
                    "schema",
                    format!("entity `{name}` is not in the schema"),
                ));
                continue;
            };
            for (id, row) in rows {
                if let Some(attr) = def.id_attribute.single()
                    && row.get(attr).and_then(id_key).as_deref() != Some(id.as_str())
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
                    let ids: Vec<&Value> = match (row.get(field), rel.many) {
                        (None | Some(Value::Null), _) => continue,
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
                            continue;
                        }
                    };
                    for v in ids {
                        match id_key(v) {
                            None => findings.push(finding(
                                "error",
                                "schema",
                                format!("{name} {id}: `{field}` holds {v}, not an id"),
                            )),
                            Some(k) if self.store.get(&rel.target, &k).is_none() => {
                                findings.push(finding(
                                    "warning",
                                    "reference",
                                    format!("{name} {id}: `{field}` refers to {} {k}, which this workflow does not hold", rel.target),
                                ))
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        if self.status == Status::Running || self.status == Status::Paused {
            let own = EntityRef::new(self.entity.clone(), self.id.clone());
            let (desired, _) = plan::desired_children(
                schema,
                &self.store,
                &own,
                &self.workflow_id,
                &self.ancestors,
            );
            let severity = if self.status == Status::Paused {
                "warning"
            } else {
                "error"
            };
            for c in &desired {
                if !self.tree.children.contains_key(&c.workflow_id) {
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
            for (wid, c) in &self.tree.children {
                if c.status == ChildStatus::Running
                    && !desired.iter().any(|d| &d.workflow_id == wid)
                {
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
        let ok = !findings.iter().any(|f| f["severity"] == "error");
        json!({
            "ok": ok,
            "version": self.store.version(),
            "checksum": sum,
            "entities": self.store.len(),
            "children": self.tree.children.values().filter(|c| c.status == ChildStatus::Running).count(),
            "findings": findings,
        })
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
        c.tree.children.clear();
        c.enqueue(
            crate::core::MsgKind::Update,
            Ok(json!({"updates": {"Listing": {"l1": {"id": "l1", "user": "nobody"}}}})),
            false,
        );
        c.process(2000);
        c.tree.children.clear();
        let v = c.validate_state();
        assert_eq!(v["ok"], json!(false), "{v}");
        let text = v["findings"].to_string();
        assert!(text.contains("has no child workflow"), "{text}");
        assert!(text.contains("User nobody"), "{text}");
    }
}
