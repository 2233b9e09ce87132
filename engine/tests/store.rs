//! Store, strategies, change sets: golden cases equivalent to chrono-forge's `entities.test.ts`, adapted
//! where we deliberately differ (typed errors instead of throws, atomic changes, stamps).

use serde_json::{Value, json};
use stateful_engine::{
    Change, ChangeKind, Entities, EntityRef, Error, Schema, Stamp, Store, Strategy, checksum, wire,
};

fn schema() -> Schema {
    Schema::parse(
        r#"
User: {listings: [Listing], profile: Profile, friends: [User]}
Listing: {user: User, photos: [Photo]}
Photo: {listing: Listing, likes: [Like]}
Like: {photo: Photo, user: User}
Profile: {user: User}
"#,
        "test",
    )
    .unwrap()
}

fn ents(v: Value) -> Entities {
    serde_json::from_value(v).unwrap()
}

fn upsert(v: Value, strategy: Strategy) -> Change {
    Change::Upsert {
        entities: ents(v),
        strategy,
    }
}

struct T {
    s: Schema,
    st: Store,
    now: u64,
}

impl T {
    fn new() -> T {
        T {
            s: schema(),
            st: Store::new(),
            now: 1000,
        }
    }
    fn apply(&mut self, c: Change) -> Result<stateful_engine::ChangeSet, Error> {
        self.now += 1;
        let stamp = self.st.next_stamp(self.now, "W");
        self.st.apply(&self.s, &c, &stamp, "client")
    }
    fn state(&self) -> Value {
        serde_json::to_value(self.st.entities()).unwrap()
    }
}

#[test]
fn merge_creates_missing_entities_and_merges_shallowly() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "name": "A", "meta": {"a": 1, "b": 2}}}}),
        Strategy::Merge,
    ))
    .unwrap();
    let cs = t
        .apply(upsert(
            json!({"User": {"1": {"meta": {"a": 9}, "age": 3}}}),
            Strategy::Merge,
        ))
        .unwrap();
    assert_eq!(
        t.state(),
        json!({"User": {"1": {"id": "1", "name": "A", "meta": {"a": 9}, "age": 3}}})
    );
    let c = &cs.entities[&EntityRef::new("User", "1")];
    assert_eq!(c.kind, ChangeKind::Updated);
    assert_eq!(c.fields.keys().collect::<Vec<_>>(), ["age", "meta"]);
    assert_eq!(&*c.fields["age"].source, "client");
}

#[test]
fn merge_adds_the_id_field_when_missing() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"7": {"name": "A"}}}),
        Strategy::Merge,
    ))
    .unwrap();
    assert_eq!(t.state(), json!({"User": {"7": {"id": "7", "name": "A"}}}));
}

#[test]
fn replace_removes_fields_not_given() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "name": "Initial", "age": 30}}}),
        Strategy::Merge,
    ))
    .unwrap();
    let cs = t
        .apply(upsert(
            json!({"User": {"1": {"id": "1", "newField": "Replaced"}}}),
            Strategy::Replace,
        ))
        .unwrap();
    assert_eq!(
        t.state(),
        json!({"User": {"1": {"id": "1", "newField": "Replaced"}}})
    );
    let c = &cs.entities[&EntityRef::new("User", "1")];
    assert_eq!(c.fields["name"].value, None);
    assert_eq!(c.fields["newField"].value, Some(json!("Replaced")));
    // $replace of a missing entity creates it (chrono-forge throws when the group is missing).
    t.apply(upsert(
        json!({"Profile": {"p": {"x": 1}}}),
        Strategy::Replace,
    ))
    .unwrap();
    assert_eq!(t.state()["Profile"], json!({"p": {"id": "p", "x": 1}}));
}

#[test]
fn set_needs_an_existing_entity() {
    let mut t = T::new();
    let e = t
        .apply(upsert(json!({"User": {"1": {"name": "x"}}}), Strategy::Set))
        .unwrap_err();
    assert!(matches!(e, Error::EntityNotFound { .. }), "{e}");
    assert!(e.to_string().contains("$set on User `1`"), "{e}");
    t.apply(upsert(json!({"User": {"1": {"id": "1"}}}), Strategy::Merge))
        .unwrap();
    t.apply(upsert(
        json!({"User": {"1": {"tags": ["a"]}}}),
        Strategy::Set,
    ))
    .unwrap();
    assert_eq!(t.state()["User"]["1"]["tags"], json!(["a"]));
}

#[test]
fn unset_removes_fields_but_never_the_id() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "a": 1, "b": 2}}}),
        Strategy::Merge,
    ))
    .unwrap();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "a": null}}}),
        Strategy::Unset,
    ))
    .unwrap();
    assert_eq!(t.state(), json!({"User": {"1": {"id": "1", "b": 2}}}));
}

#[test]
fn push_unshift_and_their_errors() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "items": [1], "name": "n"}}}),
        Strategy::Merge,
    ))
    .unwrap();
    t.apply(upsert(
        json!({"User": {"1": {"items": [2, 3]}}}),
        Strategy::Push,
    ))
    .unwrap();
    t.apply(upsert(
        json!({"User": {"1": {"items": 4, "fresh": 1}}}),
        Strategy::Push,
    ))
    .unwrap();
    t.apply(upsert(
        json!({"User": {"1": {"items": [0]}}}),
        Strategy::Unshift,
    ))
    .unwrap();
    assert_eq!(t.state()["User"]["1"]["items"], json!([0, 1, 2, 3, 4]));
    // An undefined field counts as [].
    assert_eq!(t.state()["User"]["1"]["fresh"], json!([1]));
    let before = t.state();
    let e = t
        .apply(upsert(
            json!({"User": {"1": {"items": [5], "name": 1}}}),
            Strategy::Push,
        ))
        .unwrap_err();
    assert!(
        e.to_string().contains("expected an array, found a string"),
        "{e}"
    );
    assert!(e.to_string().contains("`name`"), "{e}");
    // Atomic: `items` was not pushed either.
    assert_eq!(t.state(), before);
}

#[test]
fn splice_like_javascript() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "a": [1, 2, 3, 4, 5]}}}),
        Strategy::Merge,
    ))
    .unwrap();
    t.apply(upsert(
        json!({"User": {"1": {"a": [[5, 0, 99]]}}}),
        Strategy::Splice,
    ))
    .unwrap();
    assert_eq!(t.state()["User"]["1"]["a"], json!([1, 2, 3, 4, 5, 99]));
    t.apply(upsert(
        json!({"User": {"1": {"a": [[0, 1], [-1, 1, 7, 8]]}}}),
        Strategy::Splice,
    ))
    .unwrap();
    assert_eq!(t.state()["User"]["1"]["a"], json!([2, 3, 4, 5, 7, 8]));
    t.apply(upsert(
        json!({"User": {"1": {"a": [[1]]}}}),
        Strategy::Splice,
    ))
    .unwrap();
    assert_eq!(t.state()["User"]["1"]["a"], json!([2]));
    for bad in [json!(3), json!([3]), json!([["x"]]), json!([[]])] {
        let e = t
            .apply(upsert(json!({"User": {"1": {"a": bad}}}), Strategy::Splice))
            .unwrap_err();
        assert!(matches!(e, Error::BadSplice { .. }), "{e}");
    }
}

#[test]
fn unknown_strategy_is_a_typed_error() {
    let e: Error = "$invalidStrategy".parse::<Strategy>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown strategy `$invalidStrategy` (expected one of $merge, $replace, $set, $unset, $push, $unshift, $splice)"
    );
}

#[test]
fn delete_removes_only_the_named_entities() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1"}, "2": {"id": "2"}}, "Profile": {"p": {"id": "p"}}}),
        Strategy::Merge,
    ))
    .unwrap();
    let cs = t
        .apply(Change::Delete {
            refs: [EntityRef::new("User", "1"), EntityRef::new("User", "9")].into(),
        })
        .unwrap();
    assert_eq!(
        t.state(),
        json!({"User": {"2": {"id": "2"}}, "Profile": {"p": {"id": "p"}}})
    );
    let c = &cs.entities[&EntityRef::new("User", "1")];
    assert_eq!(c.kind, ChangeKind::Deleted);
    assert_eq!(c.previous.as_ref().unwrap()["id"], json!("1"));
    // Deleting something absent changes nothing and is not an error.
    assert_eq!(cs.len(), 1);
    // Deleting every entity of a group leaves no empty group behind.
    t.apply(Change::Delete {
        refs: [EntityRef::new("Profile", "p")].into(),
    })
    .unwrap();
    assert!(t.state().get("Profile").is_none());
}

#[test]
fn set_state_replaces_everything() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "x": 1}, "2": {"id": "2"}}}),
        Strategy::Merge,
    ))
    .unwrap();
    let cs = t
        .apply(Change::SetState {
            entities: ents(
                json!({"User": {"2": {"id": "2", "y": 2}}, "Profile": {"p": {"id": "p"}}}),
            ),
        })
        .unwrap();
    assert_eq!(
        t.state(),
        json!({"User": {"2": {"id": "2", "y": 2}}, "Profile": {"p": {"id": "p"}}})
    );
    assert_eq!(
        cs.entities[&EntityRef::new("User", "1")].kind,
        ChangeKind::Deleted
    );
    assert_eq!(
        cs.entities[&EntityRef::new("User", "2")].kind,
        ChangeKind::Updated
    );
    assert_eq!(
        cs.entities[&EntityRef::new("Profile", "p")].kind,
        ChangeKind::Added
    );
}

#[test]
fn equal_values_are_no_change_and_do_not_bump_the_version() {
    let mut t = T::new();
    t.apply(upsert(
        json!({"User": {"1": {"id": "1", "n": 1}}}),
        Strategy::Merge,
    ))
    .unwrap();
    assert_eq!(t.st.version(), 1);
    let cs = t
        .apply(upsert(json!({"User": {"1": {"n": 1}}}), Strategy::Merge))
        .unwrap();
    assert!(cs.is_empty());
    assert_eq!(t.st.version(), 1);
}

#[test]
fn a_batch_is_one_change_set_and_rejects_changes_one_by_one() {
    let s = schema();
    let mut st = Store::new();
    let mut b = st.batch(&s);
    let st1 = Stamp::new(1, "W");
    b.apply(
        &upsert(
            json!({"User": {"1": {"id": "1", "age": 25}}}),
            Strategy::Merge,
        ),
        &st1,
        "a",
    )
    .unwrap();
    assert!(
        b.apply(
            &upsert(json!({"User": {"9": {"x": 1}}}), Strategy::Set),
            &Stamp::new(2, "W"),
            "b"
        )
        .is_err()
    );
    b.apply(
        &upsert(json!({"User": {"1": {"age": 30}}}), Strategy::Merge),
        &Stamp::new(3, "W"),
        "c",
    )
    .unwrap();
    b.apply(
        &upsert(json!({"User": {"1": {"age": 35}}}), Strategy::Merge),
        &Stamp::new(4, "W"),
        "d",
    )
    .unwrap();
    let cs = b.finish();
    assert_eq!(st.version(), 1);
    let c = &cs.entities[&EntityRef::new("User", "1")];
    assert_eq!(c.kind, ChangeKind::Added);
    assert_eq!(c.fields["age"].value, Some(json!(35)));
    assert_eq!(&*c.fields["age"].source, "d");
    assert_eq!(c.fields["age"].stamp, Stamp::new(4, "W"));
}

#[test]
fn added_then_deleted_in_one_batch_is_no_change() {
    let s = schema();
    let mut st = Store::new();
    let mut b = st.batch(&s);
    b.apply(
        &upsert(json!({"User": {"1": {"id": "1"}}}), Strategy::Merge),
        &Stamp::new(1, "W"),
        "a",
    )
    .unwrap();
    b.apply(
        &Change::Delete {
            refs: [EntityRef::new("User", "1")].into(),
        },
        &Stamp::new(2, "W"),
        "a",
    )
    .unwrap();
    assert!(b.finish().is_empty());
    assert!(st.is_empty());
}

#[test]
fn last_writer_wins_by_stamp_not_arrival() {
    let s = schema();
    let base = json!({"User": {"1": {"id": "1", "name": "base"}}});
    let w_old = upsert(json!({"User": {"1": {"name": "old"}}}), Strategy::Merge);
    let w_new = upsert(json!({"User": {"1": {"name": "new"}}}), Strategy::Merge);
    let mut a = Store::new();
    let mut b = Store::new();
    for st in [&mut a, &mut b] {
        st.apply(
            &s,
            &upsert(base.clone(), Strategy::Merge),
            &Stamp::new(1, "root"),
            "x",
        )
        .unwrap();
    }
    a.apply(&s, &w_old, &Stamp::new(5, "child"), "child")
        .unwrap();
    a.apply(&s, &w_new, &Stamp::new(6, "root"), "root").unwrap();
    b.apply(&s, &w_new, &Stamp::new(6, "root"), "root").unwrap();
    let cs = b
        .apply(&s, &w_old, &Stamp::new(5, "child"), "child")
        .unwrap();
    assert!(cs.is_empty(), "an older write loses");
    assert_eq!(a.entities(), b.entities());
    assert_eq!(a.get("User", "1").unwrap()["name"], json!("new"));
    // Ties on time are broken by origin.
    a.apply(&s, &w_old, &Stamp::new(7, "a"), "x").unwrap();
    a.apply(&s, &w_new, &Stamp::new(7, "b"), "x").unwrap();
    b.apply(&s, &w_new, &Stamp::new(7, "b"), "x").unwrap();
    b.apply(&s, &w_old, &Stamp::new(7, "a"), "x").unwrap();
    assert_eq!(a.entities(), b.entities());
    assert_eq!(a.get("User", "1").unwrap()["name"], json!("new"));
}

#[test]
fn delete_and_concurrent_writes_converge() {
    let s = schema();
    let base = upsert(
        json!({"User": {"1": {"id": "1", "a": 1, "b": 1}}}),
        Strategy::Merge,
    );
    let old_write = upsert(json!({"User": {"1": {"a": 2}}}), Strategy::Merge);
    let new_write = upsert(json!({"User": {"1": {"b": 3}}}), Strategy::Merge);
    let del = Change::Delete {
        refs: [EntityRef::new("User", "1")].into(),
    };
    let ops = [
        (old_write, Stamp::new(5, "x")),
        (del, Stamp::new(7, "y")),
        (new_write, Stamp::new(9, "z")),
    ];
    let mut results = Vec::new();
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let mut st = Store::new();
        st.apply(&s, &base, &Stamp::new(1, "w"), "w").unwrap();
        for i in order {
            st.apply(&s, &ops[i].0, &ops[i].1, "src").unwrap();
        }
        results.push(st);
    }
    for r in &results[1..] {
        assert_eq!(r.entities(), results[0].entities());
    }
    // The delete wins over older fields; the newer write survives it.
    assert_eq!(
        serde_json::to_value(results[0].entities()).unwrap(),
        json!({"User": {"1": {"id": "1", "b": 3}}})
    );
}

#[test]
fn change_set_replayed_on_the_old_store_gives_the_new_store() {
    let s = schema();
    let mut st = Store::new();
    st.apply(
        &s,
        &upsert(
            json!({"User": {"1": {"id": "1", "a": [1], "b": 2}}, "Profile": {"p": {"id": "p"}}}),
            Strategy::Merge,
        ),
        &Stamp::new(1, "w"),
        "w",
    )
    .unwrap();
    let old = st.clone();
    let mut b = st.batch(&s);
    b.apply(
        &upsert(json!({"User": {"1": {"a": [2]}}}), Strategy::Push),
        &Stamp::new(2, "w"),
        "w",
    )
    .unwrap();
    b.apply(
        &upsert(json!({"User": {"1": {"b": 0}}}), Strategy::Unset),
        &Stamp::new(3, "w"),
        "w",
    )
    .unwrap();
    b.apply(
        &Change::Delete {
            refs: [EntityRef::new("Profile", "p")].into(),
        },
        &Stamp::new(4, "w"),
        "w",
    )
    .unwrap();
    b.apply(
        &upsert(json!({"User": {"2": {"id": "2"}}}), Strategy::Merge),
        &Stamp::new(5, "w"),
        "w",
    )
    .unwrap();
    let cs = b.finish();
    let mut replay = old.clone();
    replay
        .apply(
            &s,
            &Change::Writes(cs.to_writes()),
            &Stamp::new(5, "w"),
            "peer",
        )
        .unwrap();
    assert_eq!(replay.entities(), st.entities());
    assert_eq!(checksum(replay.entities()), checksum(st.entities()));
}

#[test]
fn hybrid_clock_never_goes_back() {
    let mut st = Store::new();
    let a = st.next_stamp(100, "w");
    let b = st.next_stamp(50, "w");
    let c = st.next_stamp(500, "w");
    assert!(a < b && b < c);
    assert_eq!(c.time, 500);
    // A forged stamp at the end of time: the clock stays there (no overflow, no panic).
    st.observe_time(u64::MAX);
    assert_eq!(st.next_stamp(600, "w").time, u64::MAX);
    assert_eq!(st.clock(), u64::MAX);
}

#[test]
fn store_survives_a_json_round_trip_with_stamps() {
    let s = schema();
    let mut st = Store::new();
    st.apply(
        &s,
        &upsert(json!({"User": {"1": {"id": 1, "a": 1}}}), Strategy::Merge),
        &Stamp::new(3, "w"),
        "w",
    )
    .unwrap();
    st.apply(
        &s,
        &Change::Delete {
            refs: [EntityRef::new("User", "2")].into(),
        },
        &Stamp::new(4, "w"),
        "w",
    )
    .unwrap();
    let json = serde_json::to_string(&st).unwrap();
    let back: Store = serde_json::from_str(&json).unwrap();
    assert_eq!(back, st);
    assert_eq!(
        back.get("User", "1").unwrap()["id"],
        json!(1),
        "numeric ids stay numbers"
    );
}

#[test]
fn wire_update_with_data_and_with_updates() {
    let s = schema();
    let m = wire::parse_update(
        &s,
        "User",
        &json!({"data": {"id": "u", "listings": [{"id": "l"}]}}),
    )
    .unwrap();
    match m.change {
        Change::Upsert { entities, strategy } => {
            assert_eq!(strategy, Strategy::Merge);
            assert!(entities["Listing"].contains_key("l"));
        }
        other => panic!("{other:?}"),
    }
    let m = wire::parse_update(
        &s,
        "User",
        &json!({"updates": {"Listing": {"l": {"name": "x", "photos": [{"id": "p"}]}}}, "strategy": "$set",
                "changeOrigin": "User-u", "subscriptionId": "s1"}),
    )
    .unwrap();
    assert_eq!(m.origin.as_deref(), Some("User-u"));
    assert_eq!(m.subscription_id.as_deref(), Some("s1"));
    match m.change {
        Change::Upsert { entities, strategy } => {
            assert_eq!(strategy, Strategy::Set);
            assert_eq!(entities["Listing"]["l"]["photos"], json!(["p"]));
            assert!(entities["Photo"].contains_key("p"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wire_rejects_bad_messages_with_reasons() {
    let s = schema();
    let cases = [
        (json!(42), "must be a JSON object"),
        (json!(null), "must be a JSON object"),
        (json!({}), "needs `data`"),
        (json!({"data": null, "entityName": "User"}), "needs `data`"),
        (
            json!({"strategy": "$nope", "data": {"id": 1}}),
            "unknown strategy `$nope`",
        ),
        (
            json!({"strategy": 3, "data": {"id": 1}}),
            "`strategy` must be a string",
        ),
        (
            json!({"data": {"id": 1}, "entityName": "Nope"}),
            "unknown entity `Nope`",
        ),
        (json!({"updates": {"Nope": {}}}), "unknown entity `Nope`"),
        (
            json!({"updates": {"User": {"1": 5}}}),
            "must be a JSON object",
        ),
        (json!({"data": {"name": "no id"}}), "missing id attribute"),
        (
            json!({"updates": {"User": {"1": {"a": 1}}}, "stamps": {"User": {"1": {}}}}),
            "has no stamp",
        ),
    ];
    for (msg, want) in cases {
        let e = wire::parse_update(&s, "User", &msg).unwrap_err();
        assert!(e.to_string().contains(want), "{msg}: {e}");
    }
    assert!(wire::parse_delete(&s, "User", &json!("x")).is_err());
    assert!(wire::parse_delete(&s, "User", &json!({})).is_err());
    assert!(wire::parse_state(&s, &json!([1])).is_err());
}

#[test]
fn wire_delete_removes_the_whole_normalized_graph() {
    let s = schema();
    let m = wire::parse_delete(
        &s,
        "User",
        &json!({"data": {"id": "u", "listings": [{"id": "l"}]}}),
    )
    .unwrap();
    assert_eq!(
        m.change,
        Change::Delete {
            refs: [EntityRef::new("Listing", "l"), EntityRef::new("User", "u")].into()
        }
    );
    let m = wire::parse_delete(
        &s,
        "User",
        &json!({"deletions": {"Listing": {"l": {"id": "l"}}}}),
    )
    .unwrap();
    assert_eq!(
        m.change,
        Change::Delete {
            refs: [EntityRef::new("Listing", "l")].into()
        }
    );
}

#[test]
fn wire_stamped_updates_carry_unsets() {
    let s = schema();
    let mut st = Store::new();
    st.apply(
        &s,
        &upsert(
            json!({"User": {"1": {"id": "1", "a": 1, "b": 2}}}),
            Strategy::Merge,
        ),
        &Stamp::new(1, "w"),
        "w",
    )
    .unwrap();
    let m = wire::parse_update(
        &s,
        "User",
        &json!({"updates": {"User": {"1": {"id": "1", "a": 5}}},
                "stamps": {"User": {"1": {"a": [9, "peer"], "b": [9, "peer"]}}}}),
    )
    .unwrap();
    st.apply(&s, &m.change, &Stamp::new(10, "w"), "peer")
        .unwrap();
    assert_eq!(
        serde_json::to_value(st.entities()).unwrap(),
        json!({"User": {"1": {"id": "1", "a": 5}}})
    );
    assert_eq!(st.clock(), 10);
}
