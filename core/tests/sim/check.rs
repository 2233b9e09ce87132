//! The properties checked when the network is drained, and the echo check of every batch.

use std::collections::BTreeSet;

use serde_json::Value;
use stateful_core::{Core, Effect};
use stateful_engine::{ChangeSet, EntityRef, slice};

use crate::world::World;

impl World {
    /// A batch's update or delete to `to` (not a catch-up) carries nothing that came from `to`.
    pub(crate) fn check_echo(&mut self, from: &str, effects: &[Effect], changes: &ChangeSet) {
        for e in effects {
            let Effect::Signal {
                workflow_id: to,
                name,
                payload: Some(payload),
                ..
            } = e
            else {
                continue;
            };
            if !matches!(name.as_str(), "update" | "delete") || payload.get("catchUp").is_some() {
                continue;
            }
            let mut found = Vec::new();
            for (entity, group) in payload
                .get("stamps")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                for (id, fields) in group.as_object().into_iter().flatten() {
                    let r = EntityRef::new(entity.as_str(), id.as_str());
                    let Some(c) = changes.entities.get(&r) else {
                        continue;
                    };
                    let back = match fields {
                        Value::Object(f) => f
                            .keys()
                            .any(|k| c.fields.get(k).is_some_and(|fc| &*fc.source == to)),
                        _ => c.deletion.as_ref().is_some_and(|d| &*d.source == to),
                    };
                    if back {
                        found.push(r.to_string());
                    }
                }
            }
            if !found.is_empty() {
                self.problems.push(format!(
                    "echo: {from} sent {to} back what came from it ({name} of {})",
                    found.join(", ")
                ));
            }
        }
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        let mut problems = std::mem::take(&mut self.problems);
        let Some(root) = self.nodes.get(&self.root) else {
            return Err("the root ended".into());
        };
        let token = root.core.api_token().map(|t| t.expose().to_string());
        let status = root.core.status();
        // The tree: what the root's registry reaches, and theirs (a subtree whose parent was
        // terminated and not restarted is abandoned, as Temporal's parent-close policy says).
        let mut tree = vec![self.root.clone()];
        let mut seen: BTreeSet<String> = tree.iter().cloned().collect();
        while let Some(wid) = tree.pop() {
            let node = &self.nodes[&wid];
            let t = node.core.api_token().map(|t| t.expose().to_string());
            if t != token {
                problems.push(format!("{wid} holds token {t:?}, the root {token:?}"));
            }
            if node.core.status() != status {
                problems.push(format!(
                    "{wid} is {:?}, the root {status:?}",
                    node.core.status()
                ));
            }
            for (child, rec) in node.core.tree().running() {
                match self.nodes.get(child) {
                    None => problems.push(format!("{wid} believes {child} runs, and it does not")),
                    Some(c) => {
                        problems.extend(self.slice_differences(
                            &wid,
                            &node.core,
                            child,
                            &c.core,
                            rec.entity.as_str(),
                            rec.id.as_str(),
                        ));
                        if seen.insert(child.clone()) {
                            tree.push(child.clone());
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.truncate(12);
            Err(problems.join("\n"))
        }
    }

    /// Where the child's copy of its slice differs from its parent's.
    pub(crate) fn slice_differences(
        &self,
        pw: &str,
        parent: &Core,
        cw: &str,
        child: &Core,
        entity: &str,
        id: &str,
    ) -> Vec<String> {
        let own: BTreeSet<EntityRef> = [EntityRef::new(parent.entity(), parent.id())].into();
        let members = slice::reachable(
            &self.schema,
            parent.store().entities(),
            &EntityRef::new(entity, id),
            &own,
        );
        let mut out = Vec::new();
        for r in members {
            let (a, b) = (
                parent.store().get(&r.entity, &r.id),
                child.store().get(&r.entity, &r.id),
            );
            if a != b {
                out.push(format!(
                    "{cw} and its parent {pw} differ on {r}: {b:?} / {a:?}"
                ));
            }
        }
        out
    }
}
