//! Slices of a store and the slice index (what each child workflow holds and must learn).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use stateful_engine::{Change, EntityRef, Schema, SliceIndex, Stamp, Store, Strategy, wire};

fn schema() -> Schema {
    Schema::parse(
        "User: {listings: [Listing]}\nListing: {user: User, photos: [Photo]}\nPhoto: {user: User, listing: Listing, likes: [Like]}\nLike: {user: User, photo: Photo}\n",
        "t",
    )
    .unwrap()
}

fn r(e: &str, id: &str) -> EntityRef {
    EntityRef::new(e, id)
}

fn load(s: &Schema, data: Value) -> Store {
    let mut st = Store::new();
    let m = wire::parse_update(s, "User", &json!({ "data": data })).unwrap();
    st.apply(s, &m.change, &Stamp::new(1, "User-u"), "client")
        .unwrap();
    st
}

fn tree() -> Value {
    // chrono-forge's "recursive relationships" case.
    json!({"id": "u", "listings": [
        {"id": "l1", "user": "u", "photos": [{"id": "p", "user": "u", "listing": "l1",
            "likes": [{"id": "k", "user": "u", "photo": "p"}]}]},
        {"id": "l2", "user": "u"}]})
}

#[test]
fn a_child_slice_stops_at_the_parent_entity() {
    let s = schema();
    let st = load(&s, tree());
    let mut idx = SliceIndex::new();
    let stop: BTreeSet<_> = [r("User", "u")].into();
    idx.insert(&s, &st, r("Listing", "l1"), stop.clone());
    idx.insert(&s, &st, r("Listing", "l2"), stop);
    assert_eq!(
        serde_json::to_value(idx.slice(&st, &r("Listing", "l1"))).unwrap(),
        json!({
            "Listing": {"l1": {"id": "l1", "user": "u", "photos": ["p"]}},
            "Photo": {"p": {"id": "p", "user": "u", "listing": "l1", "likes": ["k"]}},
            "Like": {"k": {"id": "k", "user": "u", "photo": "p"}}
        })
    );
    assert_eq!(
        serde_json::to_value(idx.slice(&st, &r("Listing", "l2"))).unwrap(),
        json!({"Listing": {"l2": {"id": "l2", "user": "u"}}})
    );
}

#[test]
fn a_change_reaches_exactly_the_slices_that_hold_it() {
    let s = schema();
    let mut st = load(&s, tree());
    let mut idx = SliceIndex::new();
    let stop: BTreeSet<_> = [r("User", "u")].into();
    for l in ["l1", "l2"] {
        idx.insert(&s, &st, r("Listing", l), stop.clone());
    }
    let c = Change::Upsert {
        entities: serde_json::from_value(json!({"Like": {"k": {"n": 1}}})).unwrap(),
        strategy: Strategy::Merge,
    };
    let cs = st.apply(&s, &c, &Stamp::new(2, "x"), "client").unwrap();
    let d = idx.update(&s, &st, &cs);
    assert_eq!(d.keys().collect::<Vec<_>>(), [&r("Listing", "l1")]);
    assert!(
        d[&r("Listing", "l1")]
            .changes
            .entities
            .contains_key(&r("Like", "k"))
    );
    // The parent's own entity is in no child's slice.
    let c = Change::Upsert {
        entities: serde_json::from_value(json!({"User": {"u": {"name": "x"}}})).unwrap(),
        strategy: Strategy::Merge,
    };
    let cs = st.apply(&s, &c, &Stamp::new(3, "x"), "client").unwrap();
    assert!(idx.update(&s, &st, &cs).is_empty());
}

#[test]
fn relinking_moves_entities_between_slices() {
    let s = schema();
    let mut st = load(&s, tree());
    let mut idx = SliceIndex::new();
    let stop: BTreeSet<_> = [r("User", "u")].into();
    for l in ["l1", "l2"] {
        idx.insert(&s, &st, r("Listing", l), stop.clone());
    }
    // Move photo p from l1 to l2.
    let c = Change::Upsert {
        entities: serde_json::from_value(json!({
            "Listing": {"l1": {"photos": []}, "l2": {"photos": ["p"]}},
            "Photo": {"p": {"listing": "l2"}}}))
        .unwrap(),
        strategy: Strategy::Merge,
    };
    let cs = st.apply(&s, &c, &Stamp::new(2, "x"), "client").unwrap();
    let d = idx.update(&s, &st, &cs);
    let l1 = &d[&r("Listing", "l1")];
    assert_eq!(l1.left, [r("Like", "k"), r("Photo", "p")].into());
    let l2 = &d[&r("Listing", "l2")];
    assert_eq!(l2.entered, [r("Like", "k"), r("Photo", "p")].into());
    assert_eq!(idx.members(&r("Listing", "l2")).unwrap().len(), 3);
    assert_eq!(
        idx.slices_holding(&r("Like", "k")).collect::<Vec<_>>(),
        [&r("Listing", "l2")]
    );
}

#[test]
fn an_entity_referenced_before_it_exists_joins_when_it_appears() {
    let s = schema();
    let mut st = load(
        &s,
        json!({"id": "u", "listings": [{"id": "l1", "photos": ["p9"]}]}),
    );
    let mut idx = SliceIndex::new();
    idx.insert(&s, &st, r("Listing", "l1"), [r("User", "u")].into());
    let m = wire::parse_update(
        &s,
        "User",
        &json!({"updates": {"Photo": {"p9": {"id": "p9", "likes": [{"id": "k"}]}}}}),
    )
    .unwrap();
    let c = m.change;
    let cs = st.apply(&s, &c, &Stamp::new(2, "x"), "client").unwrap();
    let d = idx.update(&s, &st, &cs);
    let delta = &d[&r("Listing", "l1")];
    assert!(delta.changes.entities.contains_key(&r("Photo", "p9")));
    assert!(delta.changes.entities.contains_key(&r("Like", "k")));
    assert!(
        idx.members(&r("Listing", "l1"))
            .unwrap()
            .contains(&r("Like", "k"))
    );
}
