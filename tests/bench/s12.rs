//! S12, the largest state carried over continue-as-new (issue 13): one workflow grows by
//! acknowledged updates of ~100 KB of generated photo records (`Photo` entities with text fields),
//! each followed by a `checkpoint`, until an update is refused (the state would not fit in the next
//! run's input) or a checkpoint does not bring a new run; once with a plain worker and client, once
//! with `--compress` on both. Run alone with `BENCH_ONLY=s12` (or `s11-s12`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::WorkerProc;
use temporalio_client::Client;

use crate::big::{Outcome, compressed_client, describe, status_name};
use crate::evidence::{log_summary, problems};
use crate::ms;

/// S12: bytes of JSON per update, and the most updates one pass sends (30 MB of state).
const S12_STEP_BYTES: usize = 100_000;
const S12_MAX_STEPS: usize = 300;
/// S12: how long a checkpoint may take to bring a new run.
const S12_CHECKPOINT_WITHIN: Duration = Duration::from_secs(120);

/// Both passes of S12, each on a worker of its own; pushes their rows (and a failure) to `out`.
pub async fn run(
    address: &str,
    cli: &Path,
    log_dir: &Path,
    tag: &str,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    for compress in [false, true] {
        let name = if compress { "zstd" } else { "plain" };
        eprintln!("bench: S12 (largest state carried over continue-as-new, {name})...");
        let tq = format!("bench-s12-{name}");
        let flags: &[&str] = if compress { &["--compress"] } else { &[] };
        let w = WorkerProc::start_with(
            address,
            &tq,
            log_dir,
            &format!("worker-s12-{name}"),
            flags,
            "release",
        )
        .await?;
        let c = compressed_client(address, compress).await?;
        let wid = format!("User-s12{name}{tag}");
        match s12(&c, &tq, &wid, compress).await {
            Ok(row) => out.rows.push(row),
            Err(e) => {
                eprintln!("bench: S12 ({name}) FAILED: {e:#}");
                out.rows
                    .push((format!("S12 ({name})"), format!("FAILED: {e:#}")));
                out.failure
                    .get_or_insert_with(|| format!("S12 ({name}): {e:#}"));
            }
        }
        let (found, runs) = problems(cli, address, &wid).await;
        eprintln!(
            "bench: S12 ({name}) {wid}: {runs} runs; failed/retried tasks, terminations or failures: {}",
            found.len()
        );
        for f in found.iter().take(10) {
            eprintln!("  {f}");
        }
        eprintln!(
            "bench: S12 ({name}) worker log {}:\n{}",
            w.log.display(),
            log_summary(&w.log)
        );
        let _ = ops::signal(&c, &wid, "cancel", None).await;
        w.stop().await;
    }
    Ok(())
}

/// Words for generated text.
const WORDS: &str = "the a bright quiet harbour street morning light over old town window balcony view river \
     bridge garden kitchen stone wooden floor sunny terrace close to station market beach \
     walk minutes from centre renovated spacious cosy family friendly with and near park \
     shops restaurants large small double bedroom bathroom shower sea mountain evening sunset \
     photo taken during spring summer autumn winter facing south north east west modern \
     classic tiled roof courtyard fountain trees flowers blue white yellow green red door \
     entrance hall stairs lift second third top quiet lively area neighbourhood cafe bakery \
     tram bus line airport parking garage bicycle storage high ceilings original features \
     fireplace heating air conditioning fast internet desk work space guests hosts welcome \
     clean comfortable beds linen towels view of the castle cathedral square museum gallery \
     theatre night day is was it";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn words(&mut self, n: usize) -> String {
        let words: Vec<&str> = WORDS.split_whitespace().collect();
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(words[self.below(words.len())]);
        }
        s
    }
}

/// About [`S12_STEP_BYTES`] of photo records (`Photo` entities of the fixture schema with text
/// fields; no `listing`, so no child is started), numbered from `first`; returns them and the next
/// number.
fn photos(prefix: &str, first: usize, rng: &mut Rng) -> (serde_json::Map<String, Value>, usize) {
    let mut out = serde_json::Map::new();
    let mut bytes = 0;
    let mut k = first;
    while bytes < S12_STEP_BYTES {
        let pid = format!("{prefix}-p{k}");
        let (nc, nd, nt) = (6 + rng.below(8), 40 + rng.below(60), 3 + rng.below(4));
        let caption = rng.words(nc);
        let description = rng.words(nd);
        let tags: Vec<String> = (0..nt).map(|_| rng.words(1)).collect();
        let make = ["Canon", "Nikon", "Sony", "Fujifilm"][rng.below(4)];
        let iso = [100, 200, 400, 800][rng.below(4)];
        let p = json!({
            "id": pid,
            "caption": caption,
            "description": description,
            "tags": tags,
            "takenAt": format!("2026-{:02}-{:02}T{:02}:{:02}:{:02}Z", 1 + rng.below(12), 1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60)),
            "camera": {"make": make, "model": format!("M{}", 100 + rng.below(900)), "iso": iso, "aperture": 1.4 + rng.below(14) as f64 / 2.0},
            "width": 4000 + rng.below(2000),
            "height": 3000 + rng.below(1000),
            "author": format!("{} {}", rng.words(1), rng.words(1)),
        });
        bytes += p.to_string().len() + pid.len() + 4;
        out.insert(pid, p);
        k += 1;
    }
    (out, k)
}

/// S12 on task queue `tq`: grows `wid`'s state by ~100 KB per update, with a checkpoint after each,
/// until an update is refused or a checkpoint fails; returns its row.
async fn s12(c: &Client, tq: &str, wid: &str, compress: bool) -> anyhow::Result<(String, String)> {
    let name = if compress {
        "with --compress"
    } else {
        "no compression"
    };
    let id = wid.trim_start_matches("User-").to_string();
    ops::start(
        c,
        tq,
        wid,
        json!({"id": id, "entityName": "User", "data": {"id": id, "name": "s12"}}),
    )
    .await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next = 0;
    // The last state that carried over: (state JSON bytes, entities, carried run's history bytes,
    // checkpoint ms, updates).
    let mut carried: Option<(usize, u64, i64, f64, usize)> = None;
    let mut stop = String::new();
    for step in 1..=S12_MAX_STEPS {
        let (batch, n) = photos(&id, next, &mut rng);
        next = n;
        let upd = json!({"updates": {"Photo": batch}});
        if let Err(e) = ops::update(c, wid, "update", &upd).await {
            let e = format!("{e:#}");
            // The workflow's refusal (`refused: ...`: the state would not fit in the next run's
            // input) is the limit; anything else is reported as it is.
            if let Some(why) = e.strip_prefix("refused: ") {
                stop = format!(
                    "update {step} refused: {}",
                    why.trim_start_matches("refused: ")
                );
                break;
            }
            stop = format!("update {step} failed: {e}");
            break;
        }
        let state_len = match ops::query(c, wid, "state").await {
            Ok(v) => v.to_string().len(),
            Err(e) => {
                stop = format!("after update {step}, the `state` query fails: {e:#}");
                break;
            }
        };
        let version = ops::query(c, wid, "version").await?;
        let entities = version["entities"].as_u64().unwrap_or(0);
        let runs = version["runs"].as_u64().unwrap_or(0);
        let (before, ..) = describe(c, wid).await?;
        let t0 = Instant::now();
        ops::signal(c, wid, "checkpoint", None).await?;
        let outcome = loop {
            let (run, status, _, bytes) = describe(c, wid).await?;
            if status != 1 {
                break Err(format!("the workflow is {}", status_name(status)));
            }
            if run != before {
                let took = ms(t0.elapsed());
                // The new run answers, on its next run number.
                match ops::query(c, wid, "version").await {
                    Ok(v) if v["runs"].as_u64() == Some(runs + 1) => break Ok((bytes, took)),
                    Ok(v) => break Err(format!("the new run answers `version` {v}")),
                    Err(e) => break Err(format!("the new run does not answer: {e:#}")),
                }
            }
            if t0.elapsed() > S12_CHECKPOINT_WITHIN {
                break Err(format!("no new run within {S12_CHECKPOINT_WITHIN:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match outcome {
            Ok((bytes, took)) => {
                eprintln!(
                    "bench: S12 ({name}) step {step}: {state_len} bytes of state, {entities} entities, carried ({bytes} bytes in the new run's history) in {took:.0} ms"
                );
                carried = Some((state_len, entities, bytes, took, step));
            }
            Err(why) => {
                stop = format!(
                    "checkpoint after update {step} ({:.2} MB of state, {entities} entities) failed: {why}",
                    state_len as f64 / 1e6
                );
                break;
            }
        }
    }
    if stop.is_empty() {
        stop = format!("no limit within {S12_MAX_STEPS} updates");
    }
    eprintln!("bench: S12 ({name}): {stop}");
    let (len, entities, bytes, took, steps) =
        carried.ok_or_else(|| anyhow!("not even the first state carried over: {stop}"))?;
    Ok((
        format!("S12 largest state carried over continue-as-new, {name}"),
        format!(
            "{:.2} MB of state JSON ({entities} entities, {steps} updates of ~100 KB); the new run's history {:.2} MB; that checkpoint {took:.0} ms; next: {stop}",
            len as f64 / 1e6,
            bytes as f64 / 1e6
        ),
    ))
}
