//! Property tests: round trips, change-set replay, convergence, and no panics on any input.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use stateful_engine::{Change, EntityRef, Schema, Stamp, Store, Strategy as Strat, checksum, wire};

fn schema() -> Schema {
    Schema::parse(
        "User: {listings: [Listing], best: Listing}\nListing: {user: User, photos: [Photo]}\nPhoto: {listing: Listing}\n",
        "t",
    )
    .unwrap()
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
}

fn fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("f[a-c]", scalar(), 0..3).prop_map(|m| m.into_iter().collect())
}

/// A tree of User → Listings → Photos with unique ids (so no entity appears twice).
fn user_tree() -> impl Strategy<Value = Value> {
    (
        fields(),
        prop::collection::vec((fields(), prop::collection::vec(fields(), 0..3)), 0..4),
    )
        .prop_map(|(uf, listings)| {
            let mut u = uf;
            u.insert("id".into(), json!("u"));
            let ls: Vec<Value> = listings
                .into_iter()
                .enumerate()
                .map(|(i, (lf, photos))| {
                    let mut l = lf;
                    l.insert("id".into(), json!(format!("l{i}")));
                    l.insert("user".into(), json!("u"));
                    let ps: Vec<Value> = photos
                        .into_iter()
                        .enumerate()
                        .map(|(j, pf)| {
                            let mut p = pf;
                            p.insert("id".into(), json!(j as i64 + 100 * i as i64));
                            p.insert("listing".into(), json!(format!("l{i}")));
                            Value::Object(p)
                        })
                        .collect();
                    l.insert("photos".into(), Value::Array(ps));
                    Value::Object(l)
                })
                .collect();
            u.insert("listings".into(), Value::Array(ls));
            Value::Object(u)
        })
}

fn arb_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("data".to_string()),
                    Just("updates".to_string()),
                    Just("strategy".to_string()),
                    Just("listings".to_string()),
                    Just("User".to_string()),
                    Just("stamps".to_string()),
                    Just("deletions".to_string()),
                    "[a-z]{1,3}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_strategy() -> impl Strategy<Value = Strat> {
    prop_oneof![
        Just(Strat::Merge),
        Just(Strat::Replace),
        Just(Strat::Set),
        Just(Strat::Unset),
        Just(Strat::Push),
        Just(Strat::Unshift),
        Just(Strat::Splice),
    ]
}

/// A random change on a small id space, so that changes collide.
fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (arb_strategy(), "[12]", fields()).prop_map(|(strategy, id, f)| Change::Upsert {
            entities: [("User".to_string(), [(id, f)].into_iter().collect())].into_iter().collect(),
            strategy,
        }),
        1 => "[12]".prop_map(|id| Change::Delete { refs: [EntityRef::new("User", id)].into() }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn normalize_then_denormalize_returns_the_input(data in user_tree()) {
        let s = schema();
        let n = s.normalize("User", &data).unwrap();
        prop_assert_eq!(s.denormalize(&n, "User", "u").unwrap(), data);
    }

    #[test]
    fn replaying_a_change_set_on_the_old_store_gives_the_new_store(
        changes in prop::collection::vec(arb_change(), 1..12)
    ) {
        let s = schema();
        let mut st = Store::new();
        let half = changes.len() / 2;
        for (i, c) in changes[..half].iter().enumerate() {
            let _ = st.apply(&s, c, &Stamp::new(i as u64 + 1, "w"), "w");
        }
        let old = st.clone();
        let mut b = st.batch(&s);
        for (i, c) in changes[half..].iter().enumerate() {
            let _ = b.apply(c, &Stamp::new(100 + i as u64, "w"), "w");
        }
        let cs = b.finish();
        let mut replay = old;
        replay.apply(&s, &Change::Writes(cs.to_writes()), &Stamp::new(1000, "w"), "peer").unwrap();
        prop_assert_eq!(replay.entities(), st.entities());
        prop_assert_eq!(checksum(replay.entities()), checksum(st.entities()));
    }

    #[test]
    fn stores_fed_the_same_stamped_writes_in_any_order_end_equal(
        changes in prop::collection::vec(arb_change(), 1..10),
        seed in any::<u64>(),
    ) {
        // Each change is made at its own origin on a copy of the same base, then its change set is
        // delivered to two replicas in two different orders.
        let s = schema();
        let mut base = Store::new();
        base.apply(&s, &Change::Upsert {
            entities: serde_json::from_value(json!({"User": {"1": {"id": "1", "fa": [1]}, "2": {"id": "2"}}})).unwrap(),
            strategy: Strat::Merge,
        }, &Stamp::new(1, "base"), "base").unwrap();
        let mut writes = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let mut origin = base.clone();
            let stamp = Stamp::new(10 + (i as u64 % 3), &format!("o{i}"));
            if let Ok(cs) = origin.apply(&s, c, &stamp, "x") {
                writes.push(Change::Writes(cs.to_writes()));
            }
        }
        let mut order: Vec<usize> = (0..writes.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut a = base.clone();
        let mut b = base.clone();
        for w in &writes {
            a.apply(&s, w, &Stamp::new(50, "a"), "peer").unwrap();
        }
        for &i in &order {
            b.apply(&s, &writes[i], &Stamp::new(50, "b"), "peer").unwrap();
        }
        prop_assert_eq!(a.entities(), b.entities());
    }

    #[test]
    fn no_input_makes_anything_panic(v in arb_json(), strategy in "\\$?[a-z]{0,7}") {
        let s = schema();
        let mut st = Store::new();
        let _ = s.normalize("User", &v);
        let _ = stateful_engine::Schema::from_json(&v);
        let _ = strategy.parse::<Strat>();
        for parsed in [wire::parse_update(&s, "User", &v), wire::parse_delete(&s, "User", &v), wire::parse_state(&s, &v)]
            .into_iter()
            .flatten()
        {
            let _ = st.apply(&s, &parsed.change, &Stamp::new(1, "w"), "w");
        }
        if let Some(m) = v.as_object() {
            for (k, val) in m {
                let mut upd = Map::new();
                upd.insert(k.clone(), val.clone());
                let c = Change::Upsert {
                    entities: [("User".to_string(), [("1".to_string(), upd)].into_iter().collect())].into_iter().collect(),
                    strategy: Strat::Splice,
                };
                let _ = st.apply(&s, &c, &Stamp::new(2, "w"), "w");
            }
        }
        let _ = s.denormalize(st.entities(), "User", "1");
        let _ = checksum(st.entities());
    }
}
