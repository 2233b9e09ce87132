//! One parsed schema per worker for each schema its workflows run: every workflow started with the
//! same schema (the worker's, or one its input names) shares one parsed [`Schema`] and one copy of
//! its JSON instead of parsing and holding its own (a cached workflow is that much smaller, and a
//! start skips the parse). Parsing is a pure function of the JSON, so sharing changes nothing a
//! workflow decides; an entry lives as long as a workflow holds it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde_json::Value;
use stateful_engine::Schema;

/// Distinct schemas past which entries no workflow holds any more are dropped.
const PRUNE_PAST: usize = 32;

type Entry = (Weak<Schema>, Weak<Value>);

static SHARED: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);

/// The parsed schema of `json` and its JSON, shared with every workflow of this process that runs
/// the same schema; the parse error's text otherwise.
pub(crate) fn shared(json: &Value) -> Result<(Arc<Schema>, Arc<Value>), String> {
    let key = json.to_string();
    let mut map = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((s, j)) = map.get(&key)
        && let (Some(s), Some(j)) = (s.upgrade(), j.upgrade())
    {
        return Ok((s, j));
    }
    let schema = Arc::new(Schema::from_json(json).map_err(|e| e.to_string())?);
    let value = Arc::new(json.clone());
    if map.len() >= PRUNE_PAST {
        map.retain(|_, (s, _)| s.strong_count() > 0);
    }
    map.insert(key, (Arc::downgrade(&schema), Arc::downgrade(&value)));
    Ok((schema, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(yaml: &str) -> Value {
        Schema::parse(yaml, "t").unwrap().to_json()
    }

    #[test]
    fn the_same_schema_is_parsed_once_and_shared_while_held() {
        let a = json("User: {listings: [Listing]}\nListing: {user: User}");
        let (s1, j1) = shared(&a).unwrap();
        let (s2, j2) = shared(&a.clone()).unwrap();
        assert!(Arc::ptr_eq(&s1, &s2) && Arc::ptr_eq(&j1, &j2));
        assert_eq!(*j1, a);
        let other = json("User: {}");
        let (s3, _) = shared(&other).unwrap();
        assert!(!Arc::ptr_eq(&s1, &s3));
        assert_eq!(s3.checksum(), Schema::from_json(&other).unwrap().checksum());
        // Once no workflow holds it, the next start parses it again.
        let checksum = s1.checksum();
        drop((s1, s2, j1, j2));
        let (s4, _) = shared(&a).unwrap();
        assert_eq!(s4.checksum(), checksum);
    }

    #[test]
    fn a_bad_schema_is_refused_with_the_parser_s_reason() {
        let e = shared(&serde_json::json!({"User": {"listings": ["Nowhere"]}})).unwrap_err();
        assert_eq!(
            e,
            Schema::from_json(&serde_json::json!({"User": {"listings": ["Nowhere"]}}))
                .unwrap_err()
                .to_string()
        );
    }
}
