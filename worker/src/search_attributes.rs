//! The search attributes StatefulWorkflows set (`StatefulEntity`, `StatefulId`, `StatefulStatus`,
//! `StatefulRoot`: see [`stateful_workflows::visibility`]): at startup, the worker lists the
//! namespace's, registers the missing ones when it may (`--register-search-attributes`; on by
//! default with the embedded dev server, which also gets them at start), and otherwise logs the
//! exact `temporal operator search-attribute create` command. Its workflows set them only when they
//! exist (a workflow's upsert of an attribute the namespace lacks fails its task): it tells them
//! through [`stateful_workflows::set_search_attributes`], and checks again every
//! [`RECHECK_EVERY`] while they are missing, so that runs starting after an operator created them
//! set them.

use std::time::Duration;

use stateful_client::visibility::{self, Check};
use stateful_workflows::visibility::NAMES;
use temporalio_client::Client;
use tracing::{error, info, warn};

/// How often a worker whose namespace lacks the attributes checks again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// How long the worker waits for attributes it registered to be listed.
const REGISTERED_WITHIN: Duration = Duration::from_secs(30);

/// Makes sure the namespace has the attributes (registering the missing ones when `register`), and
/// tells this process's workflows whether it has. True when it has them.
pub async fn ensure(client: &Client, namespace: &str, register: bool) -> bool {
    // The operator API lists them with their types; a worker not allowed to call it (Temporal Cloud)
    // probes them with count queries.
    let checked = match visibility::check(client, namespace).await {
        Ok(c) => Ok(c),
        Err(e) => visibility::check_by_query(client)
            .await
            .map_err(|e2| anyhow::anyhow!("{e:#}; then {e2:#}")),
    };
    let on = match checked {
        Ok(c) if c.complete() => {
            info!(namespace, attributes = %NAMES.join(","), "search attributes present");
            true
        }
        Ok(c) if !c.wrong_type.is_empty() => {
            let wrong: Vec<String> = c
                .wrong_type
                .iter()
                .map(|(n, t)| format!("{n} ({t})"))
                .collect();
            error!(
                namespace,
                "the namespace has search attributes of ours with another type than Keyword: {}; workflows run without search attributes until they are removed (temporal operator search-attribute remove --namespace {namespace} --name NAME) and created again: {}",
                wrong.join(", "),
                visibility::create_command(namespace, &NAMES)
            );
            false
        }
        Ok(c) if register => register_missing(client, namespace, &c).await,
        Ok(c) => {
            warn!(
                namespace,
                "the namespace lacks the search attributes {}: workflows run without them (not findable by entity, id, status or root) until they are created, with: {} (or start the worker with --register-search-attributes); the worker checks again every {} s",
                c.missing.join(", "),
                visibility::create_command(namespace, &c.missing),
                RECHECK_EVERY.as_secs()
            );
            false
        }
        Err(e) => {
            warn!(
                namespace,
                "cannot list the namespace's search attributes ({e:#}): workflows run without them; to have them, create them with: {}",
                visibility::create_command(namespace, &NAMES)
            );
            false
        }
    };
    stateful_workflows::set_search_attributes(on);
    on
}

async fn register_missing(client: &Client, namespace: &str, c: &Check) -> bool {
    match visibility::register(client, namespace, &c.missing, REGISTERED_WITHIN).await {
        Ok(()) => {
            info!(namespace, attributes = %c.missing.join(","), "search attributes registered");
            true
        }
        Err(e) => {
            warn!(
                namespace,
                "cannot register the search attributes {} ({e:#}): workflows run without them until they are created, with: {}",
                c.missing.join(", "),
                visibility::create_command(namespace, &c.missing)
            );
            false
        }
    }
}

/// While the namespace lacks them, checks again every [`RECHECK_EVERY`]; once it has them, runs that
/// start from then on set them.
pub async fn recheck(client: Client, namespace: String) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        let checked = match visibility::check(&client, &namespace).await {
            Ok(c) => Ok(c),
            Err(_) => visibility::check_by_query(&client).await,
        };
        if let Ok(c) = checked
            && c.complete()
        {
            stateful_workflows::set_search_attributes(true);
            info!(
                namespace,
                "search attributes now present: workflow runs that start from now on set them"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::WorkerArgs;

    #[test]
    fn the_registration_flag_takes_no_value_a_bool_or_nothing() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["worker"];
            args.extend_from_slice(extra);
            WorkerArgs::try_parse_from(args)
                .expect("parses")
                .register_search_attributes
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["--register-search-attributes"]), Some(true));
        assert_eq!(parse(&["--register-search-attributes=false"]), Some(false));
        assert_eq!(
            parse(&["--register-search-attributes", "--no-dev-server"]),
            Some(true)
        );
    }
}
