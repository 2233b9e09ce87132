//! Checks of the fields a message or a start input brings, before anything uses them: tokens, URLs
//! and their hosts, subscriptions. Every check says what is wrong, so that the message is rejected
//! with that reason (never a failed workflow task, a loop, or a command the server refuses).

use std::collections::BTreeSet;

use serde_json::Value;
use stateful_engine::plan::{MAX_TREE_DEPTH, MAX_WORKFLOW_ID_LEN};

use crate::tree::Subscription;

/// The longest token taken (bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The longest URL (`apiUrl`, `apiBase`) taken (bytes).
pub const MAX_URL_LEN: usize = 2_048;
/// The longest host name taken (DNS: 253).
pub const MAX_HOST_LEN: usize = 253;
/// The most hosts an `apiHosts` list may name.
pub const MAX_HOSTS: usize = 100;
/// The longest subscription id, selector or `Entity:id` reference taken (bytes).
pub const MAX_NAME_LEN: usize = 1_000;

/// A token as it goes into an `Authorization: Bearer` header: visible ASCII only (no spaces, no
/// control characters), at most [`MAX_TOKEN_LEN`] bytes. The reason never holds the token.
pub fn token(t: &str) -> Result<(), String> {
    if t.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "the token takes {} bytes, more than the {MAX_TOKEN_LEN} taken",
            t.len()
        ));
    }
    if let Some(i) = t.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "the token holds a character a header cannot carry (at byte {i}): only visible ASCII is taken"
        ));
    }
    Ok(())
}

/// The host of an `http`/`https` URL, lower-cased, without port or user info; an error says why the
/// URL is not one the API can be loaded from.
pub fn host_of(url: &str) -> Result<String, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "the URL takes {} bytes, more than the {MAX_URL_LEN} taken",
            url.len()
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL holds spaces or control characters".into());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "`{}` is not an http:// or https:// URL",
                crate::audit::clip(url, 100)
            )
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => format!("[{h}]"),
            None => return Err("the URL's IPv6 host is not closed by `]`".into()),
        }
    } else {
        hostport.split(':').next().unwrap_or_default().to_string()
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{}` has no host", crate::audit::clip(url, 100)));
    }
    if host.len() > MAX_HOST_LEN {
        return Err("the URL's host is longer than 253 bytes".into());
    }
    Ok(host)
}

/// An `apiHosts` list: host names (or `host:port`, whose port is ignored), at most [`MAX_HOSTS`].
pub fn hosts(v: &Value) -> Result<BTreeSet<String>, String> {
    let Value::Array(items) = v else {
        return Err("`apiHosts` must be an array of host names".into());
    };
    if items.len() > MAX_HOSTS {
        return Err(format!(
            "`apiHosts` names {} hosts, more than the {MAX_HOSTS} taken",
            items.len()
        ));
    }
    items
        .iter()
        .map(|h| match h {
            Value::String(s) if !s.is_empty() => host_of(&format!("http://{s}/"))
                .map_err(|e| format!("`apiHosts`: `{}`: {e}", crate::audit::clip(s, 100))),
            _ => Err("`apiHosts` must hold non-empty host names".into()),
        })
        .collect()
}

/// The hosts a URL template names outright (one that starts with `{apiBase}` names none).
pub fn template_host(template: &str) -> Option<String> {
    host_of(template).ok().filter(|h| !h.contains('{'))
}

/// Says whether a URL may be loaded (and sent the token) under `allowed` (`None`: no list, as
/// workflows of earlier releases ran).
pub fn allowed(url: &str, allowed: Option<&BTreeSet<String>>) -> Result<(), String> {
    let Some(set) = allowed else {
        return Ok(());
    };
    let host = host_of(url)?;
    match set {
        set if !set.contains(&host) => Err(format!(
            "refused: the token is not sent to `{host}`, a host outside this tree's API hosts ({}); \
             start the root with `apiHosts` naming it, or with an `apiBase` on it",
            if set.is_empty() {
                "none: the root was started without an API".to_string()
            } else {
                let some: Vec<&str> = set.iter().take(5).map(String::as_str).collect();
                let more = set.len().saturating_sub(5);
                some.join(", ")
                    + &if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
            }
        )),
        _ => Ok(()),
    }
}

fn bounded(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "`{what}` takes {} bytes, more than the {max} taken",
            s.len()
        ));
    }
    Ok(())
}

/// A subscription's shape: a subscriber workflow id (non-empty, within Temporal's id limit), a
/// `signalName` of `update` or `delete`, and bounded names and lists.
pub fn subscription(s: &Subscription) -> Result<(), String> {
    if s.workflow_id.is_empty() {
        return Err("a subscription needs `workflowId` (the subscriber)".into());
    }
    bounded("workflowId", &s.workflow_id, MAX_WORKFLOW_ID_LEN)?;
    if !matches!(s.signal_name.as_str(), "update" | "delete") {
        return Err(format!(
            "a subscription's `signalName` must be \"update\" or \"delete\", found \"{}\"",
            crate::audit::clip(&s.signal_name, 100)
        ));
    }
    bounded("subscriptionId", &s.subscription_id, MAX_NAME_LEN)?;
    bounded("selector", &s.selector, MAX_NAME_LEN)?;
    for (k, v) in [("parent", &s.parent), ("child", &s.child)] {
        if let Some(v) = v {
            bounded(k, v, MAX_NAME_LEN)?;
        }
    }
    if s.ancestor_workflow_ids.len() > MAX_TREE_DEPTH {
        return Err(format!(
            "a subscription's `ancestorWorkflowIds` holds {} ids, more than the tree depth of {MAX_TREE_DEPTH}",
            s.ancestor_workflow_ids.len()
        ));
    }
    for a in &s.ancestor_workflow_ids {
        bounded("ancestorWorkflowIds", a, MAX_WORKFLOW_ID_LEN)?;
    }
    if let Some(i) = &s.incarnation {
        bounded("incarnation", &i.origin, MAX_WORKFLOW_ID_LEN)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_of_urls() {
        for (u, h) in [
            ("http://Example.com/x", "example.com"),
            ("https://a.b:8443", "a.b"),
            ("http://user:pw@evil.test/x", "evil.test"),
            ("http://good.test@evil.test/", "evil.test"),
            ("http://[::1]:80/", "[::1]"),
            ("http://127.0.0.1:9/u", "127.0.0.1"),
            ("http://h?q=1", "h"),
        ] {
            assert_eq!(host_of(u).unwrap(), h, "{u}");
        }
        for u in [
            "ftp://x/",
            "file:///etc/passwd",
            "http:///x",
            "http://a b/",
            "http://[::1/",
            "x",
            "",
        ] {
            assert!(host_of(u).is_err(), "{u}");
        }
        assert!(host_of(&format!("http://h/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn allow_lists() {
        let set = hosts(&json!(["api.test:8080", "Other.Test"])).unwrap();
        assert!(allowed("https://api.test/u/1", Some(&set)).is_ok());
        assert!(allowed("http://other.test:1/", Some(&set)).is_ok());
        let e = allowed("http://169.254.169.254/latest", Some(&set)).unwrap_err();
        assert!(
            e.contains("169.254.169.254") && e.contains("apiHosts"),
            "{e}"
        );
        assert!(allowed("http://x/", None).is_ok());
        assert!(allowed("http://x/", Some(&BTreeSet::new())).is_err());
        assert!(hosts(&json!([""])).is_err());
        assert!(hosts(&json!("h")).is_err());
        assert!(hosts(&json!(vec!["h"; MAX_HOSTS + 1])).is_err());
        assert_eq!(template_host("{apiBase}/u/{id}"), None);
        assert_eq!(
            template_host("https://api.test/u/{id}"),
            Some("api.test".into())
        );
    }

    #[test]
    fn tokens() {
        assert!(token("eyJhbGciOi.J9-_~+/=").is_ok());
        for bad in ["a b", "a\nb", "é", "\u{0}"] {
            let e = token(bad).unwrap_err();
            assert!(!e.contains(bad), "the reason must not echo the token");
        }
        assert!(token(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    #[test]
    fn subscriptions() {
        let sub = |v: Value| serde_json::from_value::<Subscription>(v).unwrap();
        assert!(subscription(&sub(json!({"workflowId": "w", "subscriptionId": "s"}))).is_ok());
        for (v, want) in [
            (json!({"workflowId": ""}), "workflowId"),
            (json!({"workflowId": "w", "signalName": ""}), "signalName"),
            (
                json!({"workflowId": "w", "signalName": "cancel"}),
                "signalName",
            ),
            (json!({"workflowId": "x".repeat(1001)}), "workflowId"),
            (
                json!({"workflowId": "w", "selector": "s".repeat(1001)}),
                "selector",
            ),
        ] {
            let e = subscription(&sub(v.clone())).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
