//! What one idle workflow's state costs in memory: the heap a started `Core` holds for a small
//! User (the benchmark's S7 workflow), counted by a global allocator, and that the parsed schema
//! is shared, not copied, between the workflows that run it.
//!
//! (A worker caches up to `--max-cached-workflows` workflows: this is the part of each that is
//! ours; the SDK's own per-run state is measured by the benchmark, against the floor.)

use std::alloc::System;
use std::sync::Arc;

use serde_json::{Value, json};
use stateful_core::Core;
use stateful_core::input::StartInput;
use stateful_engine::Schema;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A started core of the S7 benchmark's idle User, as the workflow glue starts it.
fn idle_core(i: usize, schema: &Arc<Schema>, schema_json: &Arc<Value>) -> Core {
    let id = format!("idle{i}");
    let input = json!({"id": id, "entityName": "User", "data": {"id": id, "name": "idle", "n": i}});
    let start = StartInput::parse(&input).expect("a start input");
    let mut core = Core::default();
    core.set_check_hosts(true);
    core.set_carry_outbox(true);
    core.start(
        start,
        schema.clone(),
        schema_json.clone(),
        format!("User-{id}"),
        1_700_000_000_000,
    )
    .expect("started");
    core.set_hook_chain("0b5c2c6a-6bd3-4f4e-9a55-000000000000");
    let _ = core.initial_effects();
    core
}

/// Bytes allocated and not freed since `region` began.
fn live(region: &Region<System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated
}

/// One test in this binary: the counter is process-wide.
#[test]
fn an_idle_workflow_holds_little_and_shares_its_schema() {
    let text = include_str!("../../tests/fixtures/schema.yaml");
    let region = Region::new(GLOBAL);
    let schema = Arc::new(Schema::parse(text, "schema.yaml").expect("the fixture schema"));
    let schema_json = Arc::new(schema.to_json());
    let schema_bytes = live(&region);

    const N: usize = 200;
    let region = Region::new(GLOBAL);
    let cores: Vec<Core> = (0..N)
        .map(|i| idle_core(i, &schema, &schema_json))
        .collect();
    let per = live(&region) as f64 / N as f64;
    eprintln!(
        "footprint: {per:.0} bytes per idle workflow's Core ({} KB of parsed schema and its JSON, shared: {} holders)",
        schema_bytes / 1024,
        Arc::strong_count(&schema)
    );
    // Every core holds the one schema (and its JSON), none a copy of its own.
    assert_eq!(Arc::strong_count(&schema), N + 1);
    assert_eq!(Arc::strong_count(&schema_json), N + 1);
    // Small next to the SDK's own per-run state (see BENCHMARKS.md, S7): what is ours stays
    // under 8 KB for this workflow.
    assert!(
        per < 8.0 * 1024.0,
        "an idle workflow's Core takes {per:.0} bytes"
    );
    drop(cores);
}
