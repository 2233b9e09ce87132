//! Integration tests against a real Temporal dev server (started from the `temporal` CLI) and the real
//! `worker` binary. Run with `scripts/test`; `cargo test -p stateful-tests --test e2e -- NAME` runs the
//! tests whose name contains NAME.

mod api; // loading from an entity API, token rotation, no token leaks
mod cli;
mod durable; // checkpoints, validation // the temporal CLI and the starter binary, as a user runs them
mod lifecycle; // batching and continue-as-new, with workers of their own
mod recovery; // SIGKILL of the worker mid-burst and mid-rotation; temporal workflow reset
mod replay; // recorded histories replay with the current code
mod tree; // managed children and subscriptions
mod workflow; // StatefulWorkflow's signals, updates, queries, status and input errors

use std::process::ExitCode;
use std::sync::Arc;

use stateful_tests::{Env, TestFn, WorkerProc, client, dev_server, root, run_all, temporal_cli};

macro_rules! tests {
    ($($path:path),* $(,)?) => {
        vec![$((stringify!($path), (|env| Box::pin($path(env))) as TestFn)),*]
    };
}

fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(real_main())
}

async fn real_main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests = tests![
        workflow::starts_with_data_and_with_state,
        workflow::applies_every_strategy,
        workflow::deletes_entities,
        workflow::bad_signals_never_wedge_the_workflow,
        workflow::pause_resume_and_cancel,
        workflow::acknowledged_updates_answer_or_refuse,
        workflow::queries_answer_and_never_show_the_token,
        workflow::bad_start_input_fails_at_once_with_a_reason,
        cli::temporal_cli_drives_a_workflow,
        cli::starter_starts_signals_queries_and_updates,
        cli::starter_tree_shows_and_cancels_a_hierarchy,
        cli::worker_binary_starts_a_dev_server_serves_metrics_and_stops_on_sigterm,
        lifecycle::signals_of_one_task_apply_as_one_batch,
        lifecycle::continue_as_new_loses_nothing,
        lifecycle::a_restarted_worker_with_another_schema_does_not_change_running_workflows,
        replay::record_histories,
        tree::three_listings_start_three_children_holding_their_slices,
        tree::nested_levels_hold_exactly_their_slices_and_changes_bubble_up,
        tree::a_root_change_reaches_exactly_the_affected_children,
        tree::a_burst_at_every_level_converges_and_goes_quiet,
        tree::concurrent_writes_of_one_field_converge_by_stamp,
        tree::removing_a_listing_cancels_that_child_only,
        tree::a_child_ended_from_outside_is_restarted_with_current_state_and_token,
        tree::cancel_cascades_and_pause_resume_reach_descendants,
        tree::continue_as_new_keeps_children_running,
        tree::a_shared_entity_has_one_workflow_adopted_by_its_second_parent,
        tree::any_workflow_can_subscribe_with_a_selector,
        tree::a_child_of_another_type_on_another_queue_gets_the_same_input_and_signals,
        api::loads_at_start_and_on_refresh_url_change_and_rotation,
        api::a_three_level_tree_rotates_with_the_starter_and_reloads_with_the_new_token,
        api::unauthorized_shows_in_the_status_and_rotation_heals,
        api::transient_failures_are_retried_and_unusable_answers_fail_clearly,
        api::not_found_keeps_the_data_or_deletes_the_entity,
        api::the_refresh_interval_keeps_loading_across_continue_as_new,
        api::no_token_in_logs_queries_or_failures,
        api::the_ingress_takes_webhook_changes_and_refuses_bad_ones,
        api::api_requests_and_the_circuit_show_in_metrics,
        api::a_parent_loads_its_children_in_one_batch_request,
        durable::a_checkpoint_hands_the_state_to_a_new_run_with_its_checksum,
        durable::starter_validate_checks_a_whole_tree,
        durable::the_payload_codec_keeps_tokens_and_data_out_of_the_raw_history,
        durable::export_then_import_into_another_namespace_recreates_the_tree,
        recovery::a_worker_killed_mid_burst_and_mid_rotation_loses_and_repeats_nothing,
        recovery::a_reset_workflow_goes_back_and_runs_on,
    ];
    let setup = async {
        let cli = temporal_cli()?;
        let log_dir = root().join("target/e2e/logs");
        let _ = std::fs::remove_dir_all(root().join("target/e2e/histories"));
        // A second namespace, for the export/import round trip.
        let srv = dev_server(&cli, &["--namespace", "e2e-import"]).await?;
        let c = client(&srv.address).await?;
        let task_queue = "e2e".to_string();
        let ingress_token = "e2e-ingress-token";
        let worker = WorkerProc::start_env(
            &srv.address,
            &task_queue,
            &log_dir,
            "worker",
            &[
                "--ingress",
                "127.0.0.1:0",
                "--ingress-token-env",
                "E2E_INGRESS_TOKEN",
            ],
            "debug",
            &[("E2E_INGRESS_TOKEN", ingress_token)],
        )
        .await?;
        let ingress = worker
            .ready_field("ingress")
            .ok_or_else(|| anyhow::anyhow!("the worker did not say where its ingress is"))?;
        let metrics = worker
            .ready_field("metrics")
            .ok_or_else(|| anyhow::anyhow!("the worker did not say where its metrics are"))?;
        let tag = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        let env = Env {
            client: c,
            address: srv.address.clone(),
            task_queue,
            cli,
            tag,
            log_dir,
            ingress: (ingress, ingress_token.to_string()),
            metrics,
        };
        anyhow::Ok((srv, worker, env))
    };
    let (srv, worker, env) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            println!("e2e setup FAILED: {e:#}\n\n0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "e2e: dev server {} , worker log {}",
        env.address,
        worker.log.display()
    );
    let env = Arc::new(env);
    let (mut passed, mut failed) = run_all(env.clone(), tests, &filters).await;
    if filters.is_empty()
        || filters
            .iter()
            .any(|f| "replay::replay_all".contains(f.as_str()))
    {
        let replayed =
            tokio::time::timeout(std::time::Duration::from_secs(120), replay::replay_all()).await;
        match replayed
            .unwrap_or_else(|_| Err(anyhow::anyhow!("replay did not finish within 120 s")))
        {
            Ok(n) => {
                println!("test replay::replay_all ... ok ({n} histories)");
                passed += 1;
            }
            Err(e) => {
                println!("test replay::replay_all ... FAILED\n{e:#}\n");
                failed += 1;
            }
        }
    }
    worker.stop().await;
    srv.stop().await;
    println!("\n{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
