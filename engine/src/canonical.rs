//! A canonical JSON form (object keys sorted, no whitespace) and a checksum of it: the same content
//! gives the same bytes and the same checksum, whatever the insertion order.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::normalize::Entities;

/// What is left to write, innermost last: values, object keys (with their `:`) and punctuation.
enum Task<'a> {
    Value(&'a Value),
    Key(&'a str),
    Byte(u8),
}

/// Writes `v` in canonical form into `out`. Iterative (an explicit stack), so any nesting is written
/// without growing the call stack.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    let mut todo = Vec::new();
    write_one(v, out, &mut todo);
    while let Some(t) = todo.pop() {
        match t {
            Task::Value(v) => write_one(v, out, &mut todo),
            Task::Key(k) => {
                write_str(k, out);
                out.push(b':');
            }
            Task::Byte(b) => out.push(b),
        }
    }
}

/// Writes a scalar, or opens a container and pushes its contents (in reverse) onto `todo`.
fn write_one<'a>(v: &'a Value, out: &mut Vec<u8>, todo: &mut Vec<Task<'a>>) {
    match v {
        Value::Object(m) => {
            out.push(b'{');
            todo.push(Task::Byte(b'}'));
            let mut fields: Vec<(&String, &Value)> = m.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, v)) in fields.into_iter().enumerate().rev() {
                todo.push(Task::Value(v));
                todo.push(Task::Key(k));
                if i > 0 {
                    todo.push(Task::Byte(b','));
                }
            }
        }
        Value::Array(items) => {
            out.push(b'[');
            todo.push(Task::Byte(b']'));
            for (i, it) in items.iter().enumerate().rev() {
                todo.push(Task::Value(it));
                if i > 0 {
                    todo.push(Task::Byte(b','));
                }
            }
        }
        Value::String(s) => write_str(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic.
    out.extend_from_slice(Value::String(s.to_string()).to_string().as_bytes());
}

/// The canonical JSON bytes of a value.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

/// The canonical JSON bytes of normalized entities.
pub fn canonical_entities(e: &Entities) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(b'{');
    // BTreeMaps iterate in key order already.
    for (i, (name, group)) in e.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(name, &mut out);
        out.extend_from_slice(b":{");
        for (j, (id, row)) in group.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_str(id, &mut out);
            out.push(b':');
            let mut keys: Vec<&String> = row.keys().collect();
            keys.sort();
            out.push(b'{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_str(k, &mut out);
                out.push(b':');
                write_canonical(&row[k], &mut out);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
    out.push(b'}');
    out
}

/// `sha256:` and the hex SHA-256 of the canonical form of the entities.
pub fn checksum(e: &Entities) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical_entities(e)))
    )
}

/// `sha256:` and the hex SHA-256 of the canonical form of any JSON value (a schema's checksum).
pub fn checksum_value(v: &Value) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(canonical_json(v))))
}

/// The first 12 hex digits of the SHA-256 of a secret: enough to tell two tokens apart, useless to
/// recover one.
pub fn fingerprint(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_is_independent_of_insertion_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":1}],"x":"s"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#
        );
    }

    #[test]
    fn entities_canonical_form_matches_the_generic_one() {
        let e: Entities =
            serde_json::from_value(json!({"U": {"2": {"z": 1, "a": "\"q\""}, "1": {}}})).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(canonical_entities(&e), canonical_json(&v));
        assert!(checksum(&e).starts_with("sha256:"));
        assert_eq!(checksum(&e).len(), 7 + 64);
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        assert_eq!(fingerprint("t1"), fingerprint("t1"));
        assert_ne!(fingerprint("t1"), fingerprint("t2"));
        assert_eq!(fingerprint("t1").len(), 12);
    }
}
