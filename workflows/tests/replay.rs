//! The committed histories in `tests/histories/` (recorded by earlier releases) replay with the
//! current workflow code, without a server: the proof that running workflows survive a change. The
//! e2e suite replays them too, with the histories it records on every run.

use std::path::PathBuf;

use stateful_workflows::StatefulWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

#[tokio::test]
async fn committed_histories_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/histories");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 5,
        "history fixtures missing in {}",
        dir.display()
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
        let bytes = std::fs::read(p).expect("read");
        let h = WorkflowHistory::from_json(&bytes).expect("a history");
        if let Err(e) = replayer.replay_workflow(h).await {
            failures.push(format!("{}: {e:#}", p.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
