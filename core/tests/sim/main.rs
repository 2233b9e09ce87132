//! A deterministic simulation of whole trees, without Temporal: one decision core per workflow,
//! wired by a simulated network that delays, reorders and interleaves every message (signals, start
//! confirmations, child outcomes), driven by a seed. Clients write at every level, add and remove
//! entities, rotate the token, pause and resume the root; workflows continue as new; children are
//! terminated from outside and restarted. After every run the network is drained and the properties
//! are checked:
//!
//! - quiescence: the network empties and no workflow has work left, within a bound;
//! - every child holds the same values as its parent for its slice;
//! - every workflow holds the root's token and status;
//! - every child its parent's registry says is running exists;
//! - nothing is sent back to where it came from (an update never carries, to a workflow, a write
//!   that workflow made, except in a catch-up, which is a whole stamped slice).
//!
//! A failing seed is printed; `SIM_SEED=N cargo test -p stateful-core --test sim` replays it alone,
//! `SIM_SEEDS=N` runs more seeds. Seeds of bugs found are kept in `REGRESSIONS`.

mod actions;
mod check;
mod mixed;
mod world;

use world::World;

pub(crate) const SCHEMA: &str = "User: {listings: [Listing]}\nListing: {photos: [Photo], user: User}\nPhoto: {listing: Listing}";

/// Seeds that found bugs (kept as regression cases; seeds below 3,000 run anyway): a child restarted
/// in the batch that brought an entity into its slice (6853...), late messages of ended runs of a
/// child or parent (9198, 20483, 21941, 27179 (a start refused during a continue-as-new), ...),
/// adoptions that lost track of the adopted run (4114, 12405, ...).
const REGRESSIONS: &[u64] = &[
    4114, 6853, 9198, 12405, 14340, 18050, 20483, 21191, 21941, 26752, 27179, 27853, 30379, 39803,
];

/// splitmix64: small, fast, and the same everywhere.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Runs one world; returns how many runs continued as new because they had started as many
/// children as their limits allow.
fn run_seed(seed: u64) -> Result<u64, String> {
    let mut w = World::new(seed);
    let steps = 100 + w.rng.below(300);
    w.run(steps).map_err(|e| format!("seed {seed}: {e}"))?;
    Ok(w.full_runs)
}

#[test]
fn trees_converge_whatever_the_delivery_order() {
    if let Ok(s) = std::env::var("SIM_SEED") {
        let seed: u64 = s.parse().expect("SIM_SEED is a number");
        let full = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{full} runs continued as new for want of room");
        return;
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let from: u64 = std::env::var("SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut failures = Vec::new();
    let mut full_runs = 0;
    for seed in REGRESSIONS.iter().copied().chain(from..from + n) {
        match run_seed(seed) {
            Ok(f) => full_runs += f,
            Err(e) => failures.push(e),
        }
        if failures.len()
            >= std::env::var("SIM_MAX_FAILURES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5)
        {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds (replay one with SIM_SEED=N cargo test -p stateful-core --test sim):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // The paced worlds did what they are there for: runs full of children handed the rest over.
    assert!(
        n < 100 || full_runs > n / 10,
        "only {full_runs} runs continued as new for want of room in {n} worlds"
    );
    eprintln!("{full_runs} runs continued as new for want of room");
}
