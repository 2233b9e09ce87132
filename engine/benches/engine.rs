//! Engine benchmarks (no Temporal): the figures in BENCHMARKS.md come from here.
//! Run: `cargo bench -p stateful-engine --bench engine`.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use stateful_engine::{Change, EntityRef, Schema, SliceIndex, Stamp, Store, Strategy};

fn schema() -> Schema {
    Schema::parse(
        "User: {listings: [Listing]}\nListing: {user: User, photos: [Photo]}\nPhoto: {listing: Listing}\nItem: {}\n",
        "bench",
    )
    .unwrap()
}

/// chrono-forge's perf-test entity: `{id, name, items: [5 numbers], metadata: {createdAt, updatedAt}}`.
fn items(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"id": i.to_string(), "name": format!("Entity {i}"), "items": [1, 2, 3, 4, 5],
                       "metadata": {"createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00Z"}})
            })
            .collect(),
    )
}

fn store_of(s: &Schema, n: usize) -> Store {
    let mut st = Store::new();
    let entities = s.normalize("Item", &items(n)).unwrap();
    st.apply(
        s,
        &Change::Upsert {
            entities,
            strategy: Strategy::Merge,
        },
        &Stamp::new(1, "w"),
        "w",
    )
    .unwrap();
    st
}

fn normalize(c: &mut Criterion) {
    let s = schema();
    for n in [1_000, 10_000] {
        let data = items(n);
        c.bench_function(&format!("normalize {n} entities"), |b| {
            b.iter_batched(
                || data.clone(),
                |d| black_box(s.normalize_owned("Item", d).unwrap()),
                BatchSize::LargeInput,
            )
        });
    }
}

fn single_update(c: &mut Criterion) {
    let s = schema();
    for n in [10_000, 100_000] {
        let mut st = store_of(&s, n);
        let change = Change::Upsert {
            entities: serde_json::from_value(json!({"Item": {"1": {"name": "Updated"}}})).unwrap(),
            strategy: Strategy::Merge,
        };
        let mut t = 10u64;
        c.bench_function(
            &format!("single-entity $merge + change set, {n}-entity store"),
            |b| {
                b.iter(|| {
                    t += 1;
                    let stamp = Stamp::new(t, "w");
                    black_box(st.apply(&s, &change, &stamp, "client").unwrap())
                })
            },
        );
    }
}

fn batch_update(c: &mut Criterion) {
    let s = schema();
    let mut st = store_of(&s, 10_000);
    let entities = serde_json::from_value(Value::Object(
        [(
            "Item".to_string(),
            Value::Object(
                (0..1000)
                    .map(|i| (i.to_string(), json!({"name": format!("n{i}")})))
                    .collect(),
            ),
        )]
        .into_iter()
        .collect(),
    ))
    .unwrap();
    let change = Change::Upsert {
        entities,
        strategy: Strategy::Merge,
    };
    let mut t = 10u64;
    c.bench_function(
        "1,000-entity $merge batch + change set, 10,000-entity store",
        |b| {
            b.iter(|| {
                t += 1;
                black_box(
                    st.apply(&s, &change, &Stamp::new(t, "w"), "client")
                        .unwrap(),
                )
            })
        },
    );
}

/// A User with 1,000 Listings, each with 2 Photos; one slice per Listing.
fn tree(s: &Schema) -> (Store, SliceIndex) {
    let listings: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"id": format!("l{i}"), "user": "u", "name": "x",
                        "photos": [{"id": format!("p{i}a"), "listing": format!("l{i}")},
                                   {"id": format!("p{i}b"), "listing": format!("l{i}")}]})
        })
        .collect();
    let mut st = Store::new();
    let entities = s
        .normalize("User", &json!({"id": "u", "listings": listings}))
        .unwrap();
    st.apply(
        s,
        &Change::Upsert {
            entities,
            strategy: Strategy::Merge,
        },
        &Stamp::new(1, "w"),
        "w",
    )
    .unwrap();
    let mut idx = SliceIndex::new();
    let stop: BTreeSet<_> = [EntityRef::new("User", "u")].into();
    for i in 0..1000 {
        idx.insert(
            s,
            &st,
            EntityRef::new("Listing", format!("l{i}")),
            stop.clone(),
        );
    }
    (st, idx)
}

fn slices(c: &mut Criterion) {
    let s = schema();
    let (mut st, mut idx) = tree(&s);
    let root = EntityRef::new("Listing", "l500");
    c.bench_function("slice of one child out of 1,000", |b| {
        b.iter(|| black_box(idx.slice(&st, &root)))
    });
    let change = Change::Upsert {
        entities: serde_json::from_value(json!({"Photo": {"p500a": {"name": "y"}}})).unwrap(),
        strategy: Strategy::Merge,
    };
    let mut t = 10u64;
    c.bench_function(
        "slices of 1,000 children after one change (apply + index update)",
        |b| {
            b.iter(|| {
                t += 1;
                let cs = st
                    .apply(&s, &change, &Stamp::new(t, "w"), "client")
                    .unwrap();
                black_box(idx.update(&s, &st, &cs))
            })
        },
    );
}

fn convergence(c: &mut Criterion) {
    let s = schema();
    let a = store_of(&s, 10_000);
    let mut b2 = a.clone();
    let change = Change::Upsert {
        entities: serde_json::from_value(Value::Object(
            [(
                "Item".to_string(),
                Value::Object(
                    (0..1000)
                        .map(|i| (i.to_string(), json!({"name": format!("b{i}")})))
                        .collect(),
                ),
            )]
            .into_iter()
            .collect(),
        ))
        .unwrap(),
        strategy: Strategy::Merge,
    };
    let cs = b2.apply(&s, &change, &Stamp::new(5, "b"), "b").unwrap();
    let writes = Change::Writes(cs.to_writes());
    c.bench_function(
        "convergence merge of 1,000 stamped writes into a 10,000-entity store",
        |b| {
            b.iter_batched(
                || a.clone(),
                |mut st| black_box(st.apply(&s, &writes, &Stamp::new(6, "a"), "b").unwrap()),
                BatchSize::LargeInput,
            )
        },
    );
}

criterion_group!(
    benches,
    normalize,
    single_update,
    batch_update,
    slices,
    convergence
);
criterion_main!(benches);
