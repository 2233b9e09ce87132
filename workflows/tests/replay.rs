//! The committed histories replay with the current workflow code, without a server: the proof that
//! running workflows survive a change. Each release's set lives in `tests/histories/<version>/`
//! (recorded once, by `scripts/record-histories`, never again) and `tests/histories/SHA256SUMS`
//! lists every file with its checksum: a history edited or re-recorded to make a change pass fails
//! here (and `scripts/check-histories` fails a commit that edits a line of `SHA256SUMS`). The e2e
//! suite replays them too, with the histories it records on every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stateful_workflows::StatefulWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/histories")
}

/// Every `*.json` under `tests/histories/<version>/`, as `<version>/<name>.json`, sorted.
fn committed() -> Vec<String> {
    let dir = histories_dir();
    let mut out = Vec::new();
    for version in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let version = version.expect("a directory entry").path();
        if !version.is_dir() {
            continue;
        }
        let name = version.file_name().unwrap().to_string_lossy().to_string();
        for f in std::fs::read_dir(&version).expect("a version's directory") {
            let p = f.expect("a directory entry").path();
            if p.extension().is_some_and(|e| e == "json") {
                out.push(format!(
                    "{name}/{}",
                    p.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    out.sort();
    out
}

/// `SHA256SUMS`: path → checksum (the `sha256sum` format).
fn sums() -> BTreeMap<String, String> {
    let p = histories_dir().join("SHA256SUMS");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sum, path) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("not a `sha256sum` line in SHA256SUMS: {l}"));
            (path.to_string(), sum.to_string())
        })
        .collect()
}

fn sha256(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn committed_histories_are_never_changed() {
    let listed = sums();
    let found = committed();
    let mut problems = Vec::new();
    for f in &found {
        match listed.get(f) {
            None => problems.push(format!(
                "{f} is not in SHA256SUMS: add a release's histories with `scripts/record-histories`"
            )),
            Some(want) if *want != sha256(&histories_dir().join(f)) => problems.push(format!(
                "{f} was changed: a committed history is never edited nor re-recorded (guard the change with `ctx.patched`, see CONTRIBUTING.md)"
            )),
            Some(_) => {}
        }
    }
    for f in listed.keys() {
        if !found.contains(f) {
            problems.push(format!(
                "{f} is listed in SHA256SUMS and missing: never delete a committed history"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The carry-over inputs in the committed histories (a continued run's start, a continue-as-new)
/// decode with this release: every earlier version of `Carry` still does.
#[test]
fn carried_inputs_of_every_release_decode() {
    use stateful_core::input::{CARRY_VERSION, StartInput};
    use temporalio_common::protos::temporal::api::history::v1::History;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let mut n = 0;
    for p in committed() {
        let bytes = std::fs::read(histories_dir().join(&p)).expect("read");
        let h: History = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{p}: {e}"));
        for e in &h.events {
            let input = match &e.attributes {
                Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => a.input.as_ref(),
                Some(Attributes::WorkflowExecutionContinuedAsNewEventAttributes(a)) => {
                    a.input.as_ref()
                }
                _ => None,
            };
            for payload in input.iter().flat_map(|i| &i.payloads) {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload.data) else {
                    continue;
                };
                if v.get("carry").is_none() {
                    continue;
                }
                let input = StartInput::parse(&v).unwrap_or_else(|e| panic!("{p}: {e}"));
                let version = input.carry.expect("a carry").version;
                assert!(version <= CARRY_VERSION, "{p}: carry version {version}");
                n += 1;
            }
        }
    }
    assert!(n >= 1, "no carried input in the committed histories");
}

#[tokio::test]
async fn committed_histories_replay() {
    let paths = committed();
    let versions: std::collections::BTreeSet<&str> =
        paths.iter().filter_map(|p| p.split('/').next()).collect();
    assert!(
        paths.len() >= 5 && !versions.is_empty(),
        "history fixtures missing in {}",
        histories_dir().display()
    );
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<StatefulWorkflow>()
            .expect("register")
            .build(),
    )
    .expect("replayer");
    let mut failures = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(histories_dir().join(p)).expect("read");
        let h = WorkflowHistory::from_json(&bytes).expect("a history");
        if let Err(e) = replayer.replay_workflow(h).await {
            failures.push(format!("{p}: {e:#}"));
        }
    }
    assert!(
        failures.is_empty(),
        "histories of earlier releases no longer replay (versions {versions:?}):\n{}",
        failures.join("\n")
    );
}
