//! Outbound change hooks of an entity (`onChange` in the extended schema format): HTTP calls the
//! workflow that owns an entity makes when it changes, its status changes, or a child starts or ends.
//!
//! ```yaml
//! Listing:
//!   onChange:
//!     - url: "{apiBase}/hooks/listing-changed"
//!       fields: [price, title]     # only when one of these changed (default: any field)
//!       include: changes           # changes (default) | entity: the body also carries the row
//!       on: [change, status, child] # what calls it (default: [change])
//! ```
//!
//! Only the definition lives here; when and how a hook is called is decided by `stateful-core`'s
//! `hooks` module.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::json_type;

/// Hooks one entity may have.
pub const MAX_HOOKS_PER_ENTITY: usize = 8;
/// Fields one hook may name.
pub const MAX_HOOK_FIELDS: usize = 100;
/// The longest hook URL template.
pub const MAX_HOOK_URL_LEN: usize = 2_048;

/// What a hook's body carries besides the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookInclude {
    /// What changed: old and new values of the changed fields.
    #[default]
    Changes,
    /// What changed, and the entity's row as it is when the call is made.
    Entity,
}

/// What calls a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookEvent {
    /// A field of the entity changed (or the entity was deleted).
    Change,
    /// The workflow's status changed (`paused`, `unauthorized`, `completed`, ...).
    Status,
    /// A child workflow started or ended.
    Child,
}

impl HookEvent {
    /// Its name in the schema.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Change => "change",
            HookEvent::Status => "status",
            HookEvent::Child => "child",
        }
    }
}

/// One outbound hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// URL template (`{apiBase}`, `{id}`, `{entityName}`), as `apiUrl`.
    pub url: String,
    /// Called for a change only when one of these fields changed (empty: any field); the body's
    /// changes list only these.
    pub fields: Vec<String>,
    /// What the body carries.
    pub include: HookInclude,
    /// What calls it.
    pub on: BTreeSet<HookEvent>,
}

impl Hook {
    /// The hook in the extended format's JSON.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("url".into(), json!(self.url));
        if !self.fields.is_empty() {
            m.insert("fields".into(), json!(self.fields));
        }
        if self.include == HookInclude::Entity {
            m.insert("include".into(), json!("entity"));
        }
        if self.on.len() != 1 || !self.on.contains(&HookEvent::Change) {
            m.insert(
                "on".into(),
                json!(self.on.iter().map(|e| e.as_str()).collect::<Vec<_>>()),
            );
        }
        Value::Object(m)
    }
}

/// Parses an entity's `onChange`: one hook (a map) or a list of them. The error says what is wrong.
pub fn parse_hooks(v: &Value) -> Result<Vec<Hook>, String> {
    let items: Vec<&Value> = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        other => {
            return Err(format!(
                "expected a hook (`{{url: ...}}`) or a list of hooks, found {}",
                json_type(other)
            ));
        }
    };
    if items.len() > MAX_HOOKS_PER_ENTITY {
        return Err(format!(
            "at most {MAX_HOOKS_PER_ENTITY} hooks per entity, found {}",
            items.len()
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_hook(item).map_err(|m| format!("hook {}: {m}", i + 1)))
        .collect()
}

fn parse_hook(v: &Value) -> Result<Hook, String> {
    let Value::Object(m) = v else {
        return Err(format!("expected a map with `url`, found {}", json_type(v)));
    };
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "url" | "fields" | "include" | "on"))
    {
        return Err(format!(
            "unknown key `{k}` (a hook has `url`, `fields`, `include` and `on`)"
        ));
    }
    let url = match m.get("url") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(format!(
                "`url` must be a URL template string, found {}",
                json_type(other)
            ));
        }
        None => return Err("`url` is missing".into()),
    };
    if url.len() > MAX_HOOK_URL_LEN {
        return Err(format!(
            "`url` is {} bytes long; at most {MAX_HOOK_URL_LEN}",
            url.len()
        ));
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://")
        || lower.starts_with("https://")
        || url.starts_with("{apiBase}"))
    {
        return Err(format!(
            "`url` must start with http://, https:// or {{apiBase}}, found `{}`",
            url.chars().take(80).collect::<String>()
        ));
    }
    let fields = match m.get("fields") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            if a.len() > MAX_HOOK_FIELDS {
                return Err(format!(
                    "`fields` lists at most {MAX_HOOK_FIELDS} names, found {}",
                    a.len()
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for f in a {
                match f {
                    Value::String(s) if !s.trim().is_empty() && s.len() <= 256 => {
                        if !out.contains(s) {
                            out.push(s.clone());
                        }
                    }
                    other => {
                        return Err(format!(
                            "`fields` lists field names (1 to 256 bytes), found {other}"
                        ));
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(format!(
                "`fields` must be a list of field names, found {}",
                json_type(other)
            ));
        }
    };
    let include = match m.get("include") {
        None | Some(Value::Null) => HookInclude::Changes,
        Some(Value::String(s)) if s == "changes" => HookInclude::Changes,
        Some(Value::String(s)) if s == "entity" => HookInclude::Entity,
        Some(other) => {
            return Err(format!(
                "`include` is \"changes\" or \"entity\", found {other}"
            ));
        }
    };
    let on = match m.get("on") {
        None | Some(Value::Null) => BTreeSet::from([HookEvent::Change]),
        Some(v) => {
            let names: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::String(_) => vec![v],
                other => {
                    return Err(format!(
                        "`on` lists events (change, status, child), found {}",
                        json_type(other)
                    ));
                }
            };
            let mut on = BTreeSet::new();
            for n in names {
                on.insert(match n.as_str() {
                    Some("change") => HookEvent::Change,
                    Some("status") => HookEvent::Status,
                    Some("child") => HookEvent::Child,
                    _ => {
                        return Err(format!(
                            "`on` lists events (change, status, child), found {n}"
                        ));
                    }
                });
            }
            if on.is_empty() {
                return Err("`on` lists no event".into());
            }
            on
        }
    };
    Ok(Hook {
        url,
        fields,
        include,
        on,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_parses_with_its_defaults_and_round_trips() {
        let h = parse_hooks(&json!({"url": "{apiBase}/hooks/x"})).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].on, BTreeSet::from([HookEvent::Change]));
        assert_eq!(h[0].include, HookInclude::Changes);
        assert!(h[0].fields.is_empty());
        assert_eq!(h[0].to_json(), json!({"url": "{apiBase}/hooks/x"}));
        let full = json!([{"url": "https://h.test/x", "fields": ["price", "title"],
                           "include": "entity", "on": ["change", "status", "child"]}]);
        let h = parse_hooks(&full).unwrap();
        assert_eq!(parse_hooks(&json!([h[0].to_json()])).unwrap(), h);
    }

    #[test]
    fn bad_hooks_are_refused_with_a_reason() {
        for (v, says) in [
            (json!("x"), "expected a hook"),
            (json!([{"fields": []}]), "`url` is missing"),
            (json!([{"url": "ftp://x"}]), "must start with"),
            (
                json!([{"url": "http://x", "extra": 1}]),
                "unknown key `extra`",
            ),
            (json!([{"url": "http://x", "fields": [1]}]), "field names"),
            (json!([{"url": "http://x", "include": "all"}]), "`include`"),
            (json!([{"url": "http://x", "on": ["created"]}]), "`on`"),
            (json!([{"url": "http://x", "on": []}]), "no event"),
            (
                json!([{"url": format!("http://x/{}", "a".repeat(3000))}]),
                "bytes long",
            ),
            (
                json!(vec![json!({"url": "http://x"}); 9]),
                "at most 8 hooks",
            ),
        ] {
            let e = parse_hooks(&v).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
    }
}
