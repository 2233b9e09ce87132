//! Finds the e2e tests in the suite's source, so that no list has to be kept by hand: every
//! `pub async fn NAME(env: &Env) -> anyhow::Result<()>` at the top level of a module that `main.rs`
//! declares (`mod NAME;`) is a test, named `module::NAME`.
//!
//! Used by `build.rs`, which generates the list that `main.rs` includes, and checked here by unit tests
//! of the library (the build script includes this file without them: it uses only the standard
//! library).

use std::path::Path;

/// What a scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// The tests, as `module::function`, in declaration order of the modules, then in source order.
    pub tests: Vec<String>,
    /// Functions that look like tests but are not collected (not `pub`, or not at the top level).
    pub warnings: Vec<String>,
}

/// The modules that `main.rs` declares: its `mod NAME;` lines.
pub fn declared_modules(main_rs: &str) -> Vec<String> {
    main_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.split_once(';'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|name| is_ident(name))
        .collect()
}

/// Scans the suite in `dir` (the `tests` package): every `*.rs` file there besides `main.rs` and
/// `build.rs` must be a module that `main.rs` declares, and at least one test must be found.
pub fn collect(dir: &Path) -> Result<Collected, String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
    };
    let modules = declared_modules(&read("main.rs")?);
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| Some(f.strip_suffix(".rs")?.to_string()))
        .filter(|f| f != "main" && f != "build")
        .collect();
    files.sort();
    if let Some(f) = files.iter().find(|f| !modules.contains(f)) {
        return Err(format!(
            "tests/{f}.rs is not a module of the e2e suite, so its tests would never run: declare \
             `mod {f};` in tests/main.rs"
        ));
    }
    let mut out = Collected::default();
    for m in &modules {
        let found = scan(m, &read(&format!("{m}.rs"))?)?;
        out.tests.extend(found.tests);
        out.warnings.extend(found.warnings);
    }
    if out.tests.is_empty() {
        return Err(format!(
            "no e2e test found in {} (a test is `pub async fn NAME(env: &Env) -> anyhow::Result<()>`)",
            dir.display()
        ));
    }
    Ok(out)
}

/// The tests of one module's source. An error for a function that takes only `&Env` at the top level
/// but does not return `anyhow::Result<()>`.
pub fn scan(module: &str, src: &str) -> Result<Collected, String> {
    let mut out = Collected::default();
    let mut at = 0;
    while let Some(i) = src[at..].find("async fn ") {
        let start = at + i;
        at = start + "async fn ".len();
        let line_start = src[..start].rfind('\n').map_or(0, |n| n + 1);
        let prefix = &src[line_start..start];
        let item = prefix.trim().is_empty() || prefix.trim().starts_with("pub");
        if prefix.contains("//") || !item {
            continue; // in a comment, or not at the start of a function item
        }
        let Some(sig) = signature(&src[at..]) else {
            continue;
        };
        if !takes_only_env(&sig.params) {
            continue;
        }
        let name = format!("{module}::{}", sig.name);
        if prefix != "pub " {
            out.warnings.push(format!(
                "{name} looks like an e2e test but is not a `pub async fn` at the top level of \
                 tests/{module}.rs: it is not collected"
            ));
        } else if sig.ret != "-> anyhow::Result<()>" {
            return Err(format!(
                "{name} takes only `&Env` like an e2e test, but returns `{}`: a test returns \
                 `anyhow::Result<()>` (or give it another signature if it is a helper)",
                sig.ret
            ));
        } else {
            out.tests.push(name);
        }
    }
    Ok(out)
}

/// A function's name, its parameters and its return type, whitespace-normalized.
struct Signature {
    name: String,
    params: String,
    ret: String,
}

/// Parses `NAME(PARAMS) RET {` (the text after `async fn `).
fn signature(text: &str) -> Option<Signature> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let open = text.find('(')?;
    if name.is_empty() || !text[name.len()..open].trim().is_empty() {
        return None; // generics or something unexpected: not a test
    }
    let mut depth = 0;
    let mut close = None;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    let end = close + text[close..].find(['{', ';'])?;
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(Signature {
        name,
        params: norm(&text[open + 1..close]),
        ret: norm(&text[close + 1..end]),
    })
}

/// `env: &Env` (any binding name, an optional trailing comma, `Env` maybe by its full path).
fn takes_only_env(params: &str) -> bool {
    let params = params.trim().trim_end_matches(',').trim();
    let Some((binding, ty)) = params.split_once(':') else {
        return false;
    };
    let ty = ty.split_whitespace().collect::<String>();
    is_ident(binding.trim()) && (ty == "&Env" || ty == "&stateful_tests::Env")
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::{collect, declared_modules, scan};

    /// The tests that `tests/main.rs` listed by hand before they were collected: none may get lost.
    const LISTED_BY_HAND: &[&str] = &[
        "workflow::starts_with_data_and_with_state",
        "workflow::applies_every_strategy",
        "workflow::deletes_entities",
        "workflow::bad_signals_never_wedge_the_workflow",
        "workflow::pause_resume_and_cancel",
        "workflow::acknowledged_updates_answer_or_refuse",
        "workflow::queries_answer_and_never_show_the_token",
        "workflow::bad_start_input_fails_at_once_with_a_reason",
        "cli::temporal_cli_drives_a_workflow",
        "cli::starter_starts_signals_queries_and_updates",
        "cli::starter_tree_shows_and_cancels_a_hierarchy",
        "cli::worker_binary_starts_a_dev_server_serves_metrics_and_stops_on_sigterm",
        "lifecycle::signals_of_one_task_apply_as_one_batch",
        "lifecycle::continue_as_new_loses_nothing",
        "lifecycle::a_restarted_worker_with_another_schema_does_not_change_running_workflows",
        "replay::record_histories",
        "tree::three_listings_start_three_children_holding_their_slices",
        "tree::nested_levels_hold_exactly_their_slices_and_changes_bubble_up",
        "tree::a_root_change_reaches_exactly_the_affected_children",
        "tree::a_burst_at_every_level_converges_and_goes_quiet",
        "tree::concurrent_writes_of_one_field_converge_by_stamp",
        "tree::removing_a_listing_cancels_that_child_only",
        "tree::a_child_ended_from_outside_is_restarted_with_current_state_and_token",
        "tree::cancel_cascades_and_pause_resume_reach_descendants",
        "tree::continue_as_new_keeps_children_running",
        "tree::a_shared_entity_has_one_workflow_adopted_by_its_second_parent",
        "tree::any_workflow_can_subscribe_with_a_selector",
        "tree::a_child_of_another_type_on_another_queue_gets_the_same_input_and_signals",
        "api::loads_at_start_and_on_refresh_url_change_and_rotation",
        "api::a_three_level_tree_rotates_with_the_starter_and_reloads_with_the_new_token",
        "api::unauthorized_shows_in_the_status_and_rotation_heals",
        "api::transient_failures_are_retried_and_unusable_answers_fail_clearly",
        "api::not_found_keeps_the_data_or_deletes_the_entity",
        "api::the_refresh_interval_keeps_loading_across_continue_as_new",
        "api::no_token_in_logs_queries_or_failures",
        "api::the_ingress_takes_webhook_changes_and_refuses_bad_ones",
        "api::api_requests_and_the_circuit_show_in_metrics",
        "api::a_parent_loads_its_children_in_one_batch_request",
        "durable::a_checkpoint_hands_the_state_to_a_new_run_with_its_checksum",
        "durable::starter_validate_checks_a_whole_tree",
        "durable::the_payload_codec_keeps_tokens_and_data_out_of_the_raw_history",
        "durable::export_then_import_into_another_namespace_recreates_the_tree",
        "recovery::a_worker_killed_mid_burst_and_mid_rotation_loses_and_repeats_nothing",
        "recovery::a_reset_workflow_goes_back_and_runs_on",
    ];

    /// The list that `build.rs` generated for the e2e binary.
    const GENERATED: &[&str] = include!(concat!(env!("OUT_DIR"), "/e2e_names.rs"));

    #[test]
    fn every_env_test_of_the_suite_is_collected_once() {
        let dir = crate::root().join("tests");
        let now = collect(&dir).unwrap();
        assert_eq!(now.warnings, Vec::<String>::new());
        // The generated list is the suite as it is now.
        assert_eq!(GENERATED, now.tests.as_slice());
        let mut unique = now.tests.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), now.tests.len(), "a test is collected twice");
        for t in LISTED_BY_HAND {
            assert!(now.tests.iter().any(|n| n == t), "{t} is not collected");
        }
        // Every `pub async fn` of a suite module that takes only `&Env` is collected, counted without
        // the collector's parser: one whose parameter list is `(env: &Env)` on one line or alone on
        // the next.
        let mut by_text = Vec::new();
        for m in declared_modules(&std::fs::read_to_string(dir.join("main.rs")).unwrap()) {
            let src = std::fs::read_to_string(dir.join(format!("{m}.rs"))).unwrap();
            let lines: Vec<&str> = src.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let Some(rest) = l.strip_prefix("pub async fn ") else {
                    continue;
                };
                let (name, params) = rest.split_once('(').unwrap();
                let params = if params.trim().is_empty() {
                    format!("{}{}", lines[i + 1].trim(), lines[i + 2].trim())
                } else {
                    params.to_string()
                };
                if params.starts_with("env: &Env)") || params.starts_with("env: &Env,)") {
                    by_text.push(format!("{m}::{name}"));
                }
            }
        }
        assert_eq!(by_text, now.tests);
    }

    #[test]
    fn the_collector_finds_tests_and_only_tests() {
        let src = r#"
pub async fn one(env: &Env) -> anyhow::Result<()> {
    Ok(())
}

pub async fn two_lines(
    env: &Env,
) -> anyhow::Result<()> {
    Ok(())
}

/// pub async fn in_a_comment(env: &Env) -> anyhow::Result<()> {
pub async fn helper(env: &Env, id: &str) -> anyhow::Result<String> {
    todo!()
}

async fn private(env: &Env) -> anyhow::Result<()> {
    Ok(())
}

mod inner {
    pub async fn nested(_env: &Env) -> anyhow::Result<()> {
        Ok(())
    }
}

pub async fn no_env() -> anyhow::Result<usize> {
    Ok(1)
}
"#;
        let found = scan("m", src).unwrap();
        assert_eq!(found.tests, ["m::one", "m::two_lines"]);
        assert_eq!(found.warnings.len(), 2, "{:?}", found.warnings);
        assert!(found.warnings[0].contains("m::private"));
        assert!(found.warnings[1].contains("m::nested"));
        let bad = scan("m", "pub async fn t(env: &Env) -> anyhow::Result<usize> {}").unwrap_err();
        assert!(bad.contains("returns `-> anyhow::Result<usize>`"), "{bad}");
        assert_eq!(
            declared_modules("mod api; // loads\nmod cli;\nuse x;\npub mod no;\n"),
            ["api", "cli"]
        );
    }
}
