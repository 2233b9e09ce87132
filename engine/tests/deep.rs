//! Deep data never crashes: a chain of 100,000 references is denormalized (cut at
//! `DENORMALIZE_DEPTH`), sliced, checksummed, and normalized from a flat list or from data nested
//! 100,000 entities deep; bad data that deep is an error with its path, not a stack overflow.
//! Every test runs on a thread with a 2 MiB stack, what test threads and the SDK's tokio workers get.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use stateful_engine::canonical::{canonical_entities, canonical_json};
use stateful_engine::normalize::DENORMALIZE_DEPTH;
use stateful_engine::slice::reachable;
use stateful_engine::{
    Change, Entities, EntityRef, Schema, SliceIndex, Stamp, Store, Strategy, checksum,
};

const CHAIN: usize = 100_000;

/// Runs `f` on a thread with the stack of a test thread or a tokio worker (2 MiB).
fn on_2mib_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the test thread panicked")
}

fn schema() -> Schema {
    Schema::parse("Node: {next: Node}\nList: {items: [List]}", "deep").unwrap()
}

/// The chain `field`: `n0 → n1 → ... → n99999`, to-one (`Node.next`) or to-many (`List.items`).
fn chain_of(many: bool) -> BTreeMap<String, Map<String, Value>> {
    let mut group = BTreeMap::new();
    for i in 0..CHAIN {
        let mut row = Map::new();
        row.insert("id".into(), json!(format!("n{i}")));
        if i + 1 < CHAIN {
            let next = json!(format!("n{}", i + 1));
            match many {
                false => row.insert("next".into(), next),
                true => row.insert("items".into(), json!([next])),
            };
        }
        group.insert(format!("n{i}"), row);
    }
    group
}

/// Both chains, built normalized.
fn chain() -> Entities {
    [
        ("Node".to_string(), chain_of(false)),
        ("List".to_string(), chain_of(true)),
    ]
    .into()
}

fn store_of(s: &Schema, entities: Entities) -> Store {
    let mut st = Store::new();
    let change = Change::Upsert {
        entities,
        strategy: Strategy::Merge,
    };
    st.apply(s, &change, &Stamp::new(1, "t"), "t").unwrap();
    st
}

/// `[[[...[0]...]]]`, `depth` arrays deep, built without recursion.
fn nested_arrays(depth: usize) -> Value {
    let mut v = json!(0);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// Drops a value of any depth without recursion (serde_json's own drop recurses once per level).
fn drop_flat(v: Value) {
    let mut todo = vec![v];
    while let Some(mut v) = todo.pop() {
        match &mut v {
            Value::Array(items) => todo.append(items),
            Value::Object(m) => todo.extend(std::mem::take(m).into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[test]
fn denormalize_answers_a_chain_of_100000_references_cut_at_the_depth_limit() {
    on_2mib_stack(|| {
        let (s, e) = (schema(), chain());
        let data = s.denormalize(&e, "Node", "n0").unwrap();
        let list = s.denormalize(&e, "List", "n0").unwrap();
        let (mut cur, mut via_items) = (&data, &list);
        for level in 0..DENORMALIZE_DEPTH {
            assert_eq!(cur["id"], json!(format!("n{level}")));
            assert_eq!(via_items["id"], json!(format!("n{level}")));
            cur = &cur["next"];
            via_items = &via_items["items"][0];
        }
        // The entity at level DENORMALIZE_DEPTH is expanded; its relations are the cut-off ids.
        assert_eq!(cur["id"], json!(format!("n{DENORMALIZE_DEPTH}")));
        assert_eq!(cur["next"], json!(format!("n{}", DENORMALIZE_DEPTH + 1)));
        assert_eq!(
            via_items["items"],
            json!([format!("n{}", DENORMALIZE_DEPTH + 1)])
        );
        // The answers serialize, and read back within serde_json's 128-level limit.
        for v in [&data, &list] {
            let text = serde_json::to_string(v).unwrap();
            assert_eq!(&serde_json::from_str::<Value>(&text).unwrap(), v);
        }
        // From the other end: nothing to expand.
        let last = format!("n{}", CHAIN - 1);
        assert_eq!(
            s.denormalize(&e, "Node", &last).unwrap(),
            json!({"id": last})
        );
    });
}

#[test]
fn slices_of_a_chain_of_100000_references_are_computed_and_updated() {
    on_2mib_stack(|| {
        let s = schema();
        let st = store_of(&s, chain());
        let root = EntityRef::new("Node", "n0");
        assert_eq!(
            reachable(&s, st.entities(), &root, &BTreeSet::new()).len(),
            CHAIN
        );
        let mut idx = SliceIndex::new();
        idx.insert(&s, &st, root.clone(), BTreeSet::new());
        assert_eq!(idx.members(&root).unwrap().len(), CHAIN);
        // Cutting the chain in the middle: the second half leaves the slice.
        let mut st = st;
        let mut cut = Map::new();
        cut.insert("next".into(), Value::Null);
        let change = Change::Upsert {
            entities: [("Node".into(), [("n49999".into(), cut)].into())].into(),
            strategy: Strategy::Merge,
        };
        let cs = st.apply(&s, &change, &Stamp::new(2, "t"), "t").unwrap();
        let deltas = idx.update(&s, &st, &cs);
        assert_eq!(deltas[&root].left.len(), CHAIN / 2);
        assert_eq!(idx.members(&root).unwrap().len(), CHAIN / 2);
    });
}

#[test]
fn checksums_and_canonical_forms_of_a_chain_of_100000_references() {
    on_2mib_stack(|| {
        let e = chain();
        let sum = checksum(&e);
        assert!(sum.starts_with("sha256:"), "{sum}");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(canonical_entities(&e), canonical_json(&v));
    });
}

#[test]
fn canonical_json_writes_any_nesting_without_recursion() {
    on_2mib_stack(|| {
        let v = nested_arrays(CHAIN);
        let bytes = canonical_json(&v);
        // Dropped before asserting: a failed assertion would drop it recursively while unwinding.
        drop_flat(v);
        let mut expected = vec![b'['; CHAIN];
        expected.push(b'0');
        expected.resize(2 * CHAIN + 1, b']');
        assert!(
            bytes == expected,
            "not the canonical form of {CHAIN} nested arrays"
        );
    });
}

#[test]
fn a_flat_list_of_100000_rows_normalizes_into_the_chain() {
    on_2mib_stack(|| {
        let s = schema();
        let e = chain();
        for name in ["Node", "List"] {
            let rows: Vec<Value> = e[name].values().cloned().map(Value::Object).collect();
            let n = s.normalize_owned(name, Value::Array(rows)).unwrap();
            assert_eq!(n[name], e[name]);
        }
    });
}

/// `{"id": "n0", "next": {"id": "n1", "next": ...}}` (to-many: `"items": [{...}]`), `depth` entities
/// deep, the last one's relation holding `leaf` if given; built without recursion.
fn nested_chain(depth: usize, many: bool, leaf: Option<Value>) -> Value {
    let field = if many { "items" } else { "next" };
    // Not `json!` around `v`: it serializes its arguments (a copy, recursively).
    let entity = |i: usize, inner: Option<Value>| {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(format!("n{i}")));
        if let Some(inner) = inner {
            m.insert(field.into(), inner);
        }
        Value::Object(m)
    };
    let mut v = entity(depth - 1, leaf);
    for i in (0..depth - 1).rev() {
        let inner = if many { Value::Array(vec![v]) } else { v };
        v = entity(i, Some(inner));
    }
    v
}

#[test]
fn normalize_takes_apart_data_nested_100000_entities_deep() {
    on_2mib_stack(|| {
        let (s, e) = (schema(), chain());
        for (name, many) in [("Node", false), ("List", true)] {
            let n = s
                .normalize_owned(name, nested_chain(CHAIN, many, None))
                .unwrap();
            assert_eq!(n[name], e[name]);
        }
        // Borrowed data gives the same (at a depth serde_json's own clone and drop can take).
        let v = nested_chain(500, false, None);
        let n = s.normalize("Node", &v);
        drop_flat(v);
        assert_eq!(n.unwrap()["Node"].len(), 500);
    });
}

#[test]
fn bad_data_100000_entities_deep_is_an_error_with_its_path() {
    on_2mib_stack(|| {
        let s = schema();
        for (name, many, step) in [("Node", false, ".next"), ("List", true, ".items[0]")] {
            // The last entity's relation holds `true`.
            let v = nested_chain(CHAIN, many, Some(json!(true)));
            let e = s.normalize_owned(name, v).unwrap_err().to_string();
            let field = if many { "items" } else { "next" };
            let at = format!("{name} at data{}.{field}: ", step.repeat(CHAIN - 1));
            assert!(e.starts_with(&at), "{}", &e[e.len() - 200..]);
            assert!(
                e.ends_with("or null, found a boolean"),
                "{}",
                &e[e.len() - 200..]
            );
        }
    });
}
