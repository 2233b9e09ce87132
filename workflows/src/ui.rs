//! What the Temporal UI (and `temporal workflow describe`) shows of a StatefulWorkflow: the static
//! summary and details given at start (entity and id; place in the tree), the current details kept
//! up to date by the run (status, version, last change), and the summaries of its commands (which URL
//! a load reads, which child a start runs).
//!
//! Every text is built from fields that never hold the token (entity, ids, status, version, change
//! counts, a URL without its query string or credentials) and is bounded.
//!
//! Replay: summaries and details are user metadata on commands, which sdk-core does not compare
//! with the recorded events (only ids and types are checked), and current details are not a command
//! at all; histories recorded before them replay unchanged.

use serde_json::Value;
use stateful_core::audit::{ChangeRecord, clip};

/// Longest static summary (the UI shows one line).
pub const MAX_SUMMARY: usize = 200;
/// Longest static or current details.
pub const MAX_DETAILS: usize = 1_000;
/// Longest id quoted in a summary or details.
const MAX_ID: usize = 120;

/// The static summary and details of a workflow started with `input` under `workflow_id`:
/// `User u1`, and its place in the tree (root, parent, depth) from `ancestorWorkflowIds`.
pub fn start_metadata(workflow_id: &str, input: &Value) -> (String, String) {
    let text = |k: &str| match input.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "?".to_string(),
    };
    let entity = text("entityName");
    let id = text("id");
    let summary = clip(
        &format!("{} {}", clip(&entity, MAX_ID), clip(&id, MAX_ID)),
        MAX_SUMMARY,
    );
    let ancestors: Vec<&str> = input
        .get("ancestorWorkflowIds")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let place = match (ancestors.first(), ancestors.last()) {
        (Some(root), Some(parent)) => format!(
            "root: {}\nparent: {}\ndepth: {}",
            clip(root, MAX_ID),
            clip(parent, MAX_ID),
            ancestors.len()
        ),
        _ => "root: this workflow\nparent: none\ndepth: 0".to_string(),
    };
    let details = format!(
        "StatefulWorkflow of {} {}\nworkflow: {}\n{place}",
        clip(&entity, MAX_ID),
        clip(&id, MAX_ID),
        clip(workflow_id, MAX_ID)
    );
    (summary, clip(&details, MAX_DETAILS))
}

/// The current details: the entity and id (a run continued as new has no static summary: the SDK's
/// continue-as-new options carry none), status, state version, and the last applied change (its
/// version, workflow time, what it did and where it came from).
pub fn current_details(
    entity: &str,
    id: &str,
    status: &str,
    version: u64,
    last: Option<&ChangeRecord>,
) -> String {
    let mut s = format!(
        "{} {}\nstatus: {status}\nversion: {version}",
        clip(entity, MAX_ID),
        clip(id, MAX_ID)
    );
    match last {
        Some(c) => {
            s.push_str(&format!(
                "\nlast change: v{} at {} ({} added, {} updated, {} deleted)",
                c.version,
                iso_utc(c.time),
                c.added,
                c.updated,
                c.deleted
            ));
            if !c.sources.is_empty() {
                let from: Vec<String> = c.sources.iter().take(3).map(|o| clip(o, MAX_ID)).collect();
                s.push_str(&format!("\nfrom: {}", from.join(", ")));
                if c.sources.len() > 3 {
                    s.push_str(&format!(" and {} more", c.sources.len() - 3));
                }
            }
        }
        None => s.push_str("\nlast change: none yet"),
    }
    clip(&s, MAX_DETAILS)
}

/// A URL as a summary may show it: scheme, host and path only (no credentials, query string nor
/// fragment: a token may travel there).
pub fn safe_url(url: &str) -> String {
    let cut = url.find(['?', '#']).map_or(url, |i| &url[..i]);
    let (scheme, rest) = match cut.find("://") {
        Some(i) => (&cut[..i + 3], &cut[i + 3..]),
        None => ("", cut),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    clip(&format!("{scheme}{host}{path}"), MAX_SUMMARY - 60)
}

/// The summary of a `loadData` activity.
pub fn load_summary(url: &str) -> String {
    format!("load {}", safe_url(url))
}

/// The summary of a `loadBatch` activity: its first URL and how many it asks.
pub fn batch_summary(url: &str, urls: usize) -> String {
    if urls <= 1 {
        format!("load batch {}", safe_url(url))
    } else {
        format!("load batch of {urls} URLs, first {}", safe_url(url))
    }
}

/// Workflow time (ms since the epoch) as `YYYY-MM-DDTHH:MM:SSZ`.
fn iso_utc(ms: u64) -> String {
    let secs = ms / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_metadata_names_the_entity_and_its_place_never_the_token() {
        let (s, d) = start_metadata(
            "User-u1",
            &json!({"id": "u1", "entityName": "User", "apiToken": "secret-token"}),
        );
        assert_eq!(s, "User u1");
        assert!(
            d.contains("root: this workflow") && d.contains("depth: 0"),
            "{d}"
        );
        assert!(!d.contains("secret") && !s.contains("secret"));
        let (s, d) = start_metadata(
            "Photo-p1",
            &json!({"id": "p1", "entityName": "Photo", "apiToken": "secret-token",
                    "ancestorWorkflowIds": ["User-u1", "Listing-l1"]}),
        );
        assert_eq!(s, "Photo p1");
        assert!(
            d.contains("root: User-u1")
                && d.contains("parent: Listing-l1")
                && d.contains("depth: 2"),
            "{d}"
        );
        assert!(!d.contains("secret"));
        // Bounded, whatever the ids.
        let long = "x".repeat(5_000);
        let (s, d) = start_metadata(
            &long,
            &json!({"id": long, "entityName": long, "ancestorWorkflowIds": [long, long]}),
        );
        assert!(s.len() <= MAX_SUMMARY + 20 && d.len() <= MAX_DETAILS + 20);
    }

    #[test]
    fn urls_lose_credentials_query_and_fragment() {
        assert_eq!(
            safe_url("https://user:pw@api.example.com:8443/users/1?token=abc#x"),
            "https://api.example.com:8443/users/1"
        );
        assert_eq!(safe_url("http://h/p?q"), "http://h/p");
        assert_eq!(safe_url("http://h"), "http://h");
        assert_eq!(load_summary("http://a@h/u/1"), "load http://h/u/1");
        assert!(batch_summary("http://h/u/1?t=s", 3).contains("3 URLs"));
        assert!(!batch_summary("http://h/u/1?t=s", 3).contains("t=s"));
        assert!(load_summary(&format!("http://h/{}", "p".repeat(5_000))).len() <= MAX_SUMMARY);
    }

    #[test]
    fn current_details_say_status_version_and_last_change() {
        assert_eq!(
            current_details("User", "u1", "running", 0, None),
            "User u1\nstatus: running\nversion: 0\nlast change: none yet"
        );
        let c = ChangeRecord {
            version: 3,
            time: 1_764_523_993_000,
            sources: vec!["User-u1".into()],
            added: 1,
            updated: 2,
            deleted: 0,
            entities: vec![],
        };
        let d = current_details("User", "u1", "paused", 3, Some(&c));
        assert!(
            d.contains("status: paused") && d.contains("version: 3"),
            "{d}"
        );
        assert!(
            d.contains("last change: v3 at 2025-11-30T17:33:13Z (1 added, 2 updated, 0 deleted)"),
            "{d}"
        );
        assert!(d.contains("from: User-u1"), "{d}");
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
