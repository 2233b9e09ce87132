//! Finding StatefulWorkflows through Temporal's visibility: the namespace's search attributes (checked
//! and registered by the worker at startup), list queries built from filters with their values
//! quoted safely, and listing.
//!
//! The attributes and what a workflow writes into them are in [`stateful_workflows::visibility`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use stateful_workflows::WORKFLOW_TYPE;
use stateful_workflows::visibility::{ENTITY, ID, NAMES, ROOT, STATUS, TYPE};
use temporalio_client::{Client, WorkflowCountOptions};
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, ListSearchAttributesRequest,
};

/// `value` as a string literal of Temporal's list queries: in single quotes, with `\` and `'`
/// escaped by a backslash (the query parser decodes `\\` and `\'`; every other character stands for
/// itself inside the quotes), so that no value can end the literal early. (Measured on the dev
/// server, whose visibility is SQL: a quote matches; a value holding a backslash does not, with any
/// escaping: its SQL visibility writes the parsed literal back with backslashes doubled.)
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// What `starter list` filters on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `StatefulEntity`.
    pub entity: Option<String>,
    /// `StatefulId`.
    pub id: Option<String>,
    /// `StatefulStatus`.
    pub status: Option<String>,
    /// `StatefulRoot`: every workflow of one tree (its root included).
    pub root: Option<String>,
    /// Only workflows still running (`ExecutionStatus = 'Running'`); otherwise closed ones too.
    pub open: bool,
}

/// The list query of `f`: StatefulWorkflows (not the runs that continued as new, whose workflow's
/// latest run is listed too) whose attributes equal the given values.
pub fn query(f: &Filter) -> String {
    let mut parts = vec![
        format!("WorkflowType = {}", quote(WORKFLOW_TYPE)),
        "ExecutionStatus != 'ContinuedAsNew'".to_string(),
    ];
    if f.open {
        parts.push("ExecutionStatus = 'Running'".to_string());
    }
    for (name, value) in [
        (ENTITY.name(), &f.entity),
        (ID.name(), &f.id),
        (STATUS.name(), &f.status),
        (ROOT.name(), &f.root),
    ] {
        if let Some(v) = value {
            parts.push(format!("{name} = {}", quote(v)));
        }
    }
    parts.join(" AND ")
}

/// One workflow as visibility shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its workflow id.
    pub workflow_id: String,
    /// Temporal's status of its latest run (`Running`, `Completed`, ...).
    pub execution_status: String,
    /// `StatefulEntity` (`None` when the workflow has none: started before they existed).
    pub entity: Option<String>,
    /// `StatefulId`.
    pub id: Option<String>,
    /// `StatefulStatus`.
    pub status: Option<String>,
    /// `StatefulRoot`.
    pub root: Option<String>,
}

impl Listed {
    /// As JSON (`workflowId`, `executionStatus`, `entity`, `id`, `status`, `root`).
    pub fn to_json(&self) -> Value {
        json!({
            "workflowId": self.workflow_id,
            "executionStatus": self.execution_status,
            "entity": self.entity,
            "id": self.id,
            "status": self.status,
            "root": self.root,
        })
    }
}

/// Up to `limit` workflows matching `query`, and whether more match. Through the raw
/// `ListWorkflowExecutions` RPC, reading only what visibility indexes (ids, status, search
/// attributes, never encoded): the SDK's `list_workflows` decodes every memo with the client's codec,
/// and one encrypted memo the client holds no keys for would fail the whole page.
pub async fn list(
    client: &Client,
    query: &str,
    limit: usize,
) -> anyhow::Result<(Vec<Listed>, bool)> {
    use temporalio_client::NamespacedClient;
    use temporalio_common::protos::temporal::api::workflowservice::v1::ListWorkflowExecutionsRequest;
    let mut out = Vec::new();
    let mut token = Vec::new();
    loop {
        let mut svc = client.connection().workflow_service();
        let page = svc
            .list_workflow_executions(temporalio_client::tonic::Request::new(
                ListWorkflowExecutionsRequest {
                    namespace: client.namespace(),
                    page_size: limit.saturating_add(1).min(1_000) as i32,
                    next_page_token: token,
                    query: query.to_string(),
                },
            ))
            .await
            .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
            .with_context(|| format!("listing `{query}`"))?
            .into_inner();
        for w in page.executions {
            if out.len() == limit {
                return Ok((out, true));
            }
            let keyword = |name: &str| -> Option<String> {
                let p = w.search_attributes.as_ref()?.indexed_fields.get(name)?;
                serde_json::from_slice::<String>(&p.data).ok()
            };
            // As the SDK's listing names it (`Running`, `ContinuedAsNew`, ...).
            let status = temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus::try_from(w.status)
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|_| "Unspecified".to_string());
            out.push(Listed {
                workflow_id: w
                    .execution
                    .as_ref()
                    .map(|e| e.workflow_id.clone())
                    .unwrap_or_default(),
                execution_status: status,
                entity: keyword(ENTITY.name()),
                id: keyword(ID.name()),
                status: keyword(STATUS.name()),
                root: keyword(ROOT.name()),
            });
        }
        if page.next_page_token.is_empty() {
            return Ok((out, false));
        }
        token = page.next_page_token;
    }
}

/// The `temporal` command that creates `names` (all [`TYPE`]) in `namespace`.
pub fn create_command(namespace: &str, names: &[&str]) -> String {
    let mut cmd = format!(
        "temporal operator search-attribute create --namespace {}",
        shell_word(namespace)
    );
    for n in names {
        cmd.push_str(&format!(" --name {n} --type {TYPE}"));
    }
    cmd
}

/// `s` as one shell word (quoted when it holds anything but letters, digits and `-_.`).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What the namespace has of our search attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Those it lacks.
    pub missing: Vec<&'static str>,
    /// Those it has with another type than `Keyword` (name, type): a workflow's upsert would fail.
    pub wrong_type: Vec<(&'static str, String)>,
}

impl Check {
    /// True when every attribute is there with its type.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.wrong_type.is_empty()
    }
}

/// Compares the namespace's custom search attributes (name → type) with ours.
pub fn compare(custom: &HashMap<String, i32>) -> Check {
    let mut missing = Vec::new();
    let mut wrong_type = Vec::new();
    for name in NAMES {
        match custom.get(name) {
            None => missing.push(name),
            Some(&t) if t == IndexedValueType::Keyword as i32 => {}
            Some(&t) => wrong_type.push((
                name,
                IndexedValueType::try_from(t)
                    .map(|t| t.as_str_name().to_string())
                    .unwrap_or_else(|_| t.to_string()),
            )),
        }
    }
    Check {
        missing,
        wrong_type,
    }
}

/// Lists the namespace's custom search attributes and compares them with ours.
pub async fn check(client: &Client, namespace: &str) -> anyhow::Result<Check> {
    let mut svc = client.connection().operator_service();
    let resp = svc
        .list_search_attributes(temporalio_client::tonic::Request::new(
            ListSearchAttributesRequest {
                namespace: namespace.to_string(),
            },
        ))
        .await
        .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
        .with_context(|| format!("listing the search attributes of namespace `{namespace}`"))?
        .into_inner();
    Ok(compare(&resp.custom_attributes))
}

/// [`check`] without the operator API (which a namespace's workers may not be allowed to call, e.g.
/// on Temporal Cloud): a count query on each attribute (`StatefulEntity = ''`), which the server
/// refuses as an invalid query when the namespace lacks it (or has it with a type whose values are not
/// strings). Other errors (the server does not answer) are errors.
pub async fn check_by_query(client: &Client) -> anyhow::Result<Check> {
    let mut missing = Vec::new();
    for name in NAMES {
        let q = format!("{name} = ''");
        match client
            .count_workflows(q.as_str(), WorkflowCountOptions::default())
            .await
        {
            Ok(_) => {}
            Err(temporalio_client::errors::ClientError::Rpc(s))
                if s.code() == temporalio_client::tonic::Code::InvalidArgument =>
            {
                missing.push(name)
            }
            Err(e) => return Err(anyhow!("{e}")).with_context(|| format!("counting `{q}`")),
        }
    }
    Ok(Check {
        missing,
        wrong_type: Vec::new(),
    })
}

/// Registers `names` (all `Keyword`) in `namespace`, then waits (up to `within`) until the namespace
/// lists them.
pub async fn register(
    client: &Client,
    namespace: &str,
    names: &[&'static str],
    within: Duration,
) -> anyhow::Result<()> {
    let mut svc = client.connection().operator_service();
    svc.add_search_attributes(temporalio_client::tonic::Request::new(
        AddSearchAttributesRequest {
            search_attributes: names
                .iter()
                .map(|n| (n.to_string(), IndexedValueType::Keyword as i32))
                .collect(),
            namespace: namespace.to_string(),
        },
    ))
    .await
    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
    .with_context(|| format!("adding search attributes to namespace `{namespace}`"))?;
    let deadline = Instant::now() + within;
    loop {
        let c = check(client, namespace).await?;
        if c.missing.iter().all(|m| !names.contains(m)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "namespace `{namespace}` still lacks {} {within:?} after adding them",
                c.missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_with_backslash_escapes() {
        assert_eq!(quote("User"), "'User'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("o'brien"), r"'o\'brien'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
        // A quote after a backslash cannot close the literal: both are escaped.
        assert_eq!(quote(r"x\' OR 1=1 --"), r"'x\\\' OR 1=1 --'");
        assert_eq!(quote("\"double\" é"), "'\"double\" é'");
    }

    /// Undoes [`quote`] as the query parser reads a literal: the value, and what follows it.
    fn unquote(s: &str) -> (String, &str) {
        assert!(s.starts_with('\''));
        let mut out = String::new();
        let mut it = s.char_indices().skip(1);
        while let Some((i, c)) = it.next() {
            match c {
                '\\' => out.push(it.next().expect("an escaped character").1),
                '\'' => return (out, &s[i + 1..]),
                c => out.push(c),
            }
        }
        panic!("unterminated literal {s}");
    }

    #[test]
    fn a_quoted_value_reads_back_whole_and_ends_where_it_should() {
        for v in [
            "",
            "plain",
            "o'brien",
            r"\",
            r"\'",
            "''",
            r"a\\'b",
            "x' OR StatefulId='y",
        ] {
            let quoted = quote(v);
            let (back, rest) = unquote(&quoted);
            assert_eq!(back, v);
            assert_eq!(rest, "", "{v}");
        }
    }

    #[test]
    fn the_query_names_the_type_skips_continued_runs_and_adds_each_filter() {
        assert_eq!(
            query(&Filter::default()),
            "WorkflowType = 'StatefulWorkflow' AND ExecutionStatus != 'ContinuedAsNew'"
        );
        let q = query(&Filter {
            entity: Some("User".into()),
            id: Some("u'1".into()),
            status: Some("unauthorized".into()),
            root: Some("User-u'1".into()),
            open: true,
        });
        assert_eq!(
            q,
            r"WorkflowType = 'StatefulWorkflow' AND ExecutionStatus != 'ContinuedAsNew' AND ExecutionStatus = 'Running' AND StatefulEntity = 'User' AND StatefulId = 'u\'1' AND StatefulStatus = 'unauthorized' AND StatefulRoot = 'User-u\'1'"
        );
    }

    #[test]
    fn the_create_command_names_each_attribute_with_its_type() {
        assert_eq!(
            create_command("default", &NAMES),
            "temporal operator search-attribute create --namespace default --name StatefulEntity --type Keyword --name StatefulId --type Keyword --name StatefulStatus --type Keyword --name StatefulRoot --type Keyword"
        );
        assert_eq!(
            create_command("my ns", &["StatefulRoot"]),
            "temporal operator search-attribute create --namespace 'my ns' --name StatefulRoot --type Keyword"
        );
    }

    #[test]
    fn the_namespace_check_finds_missing_and_mistyped_attributes() {
        let mut custom = HashMap::new();
        custom.insert(
            "StatefulEntity".to_string(),
            IndexedValueType::Keyword as i32,
        );
        custom.insert("StatefulStatus".to_string(), IndexedValueType::Text as i32);
        custom.insert("Other".to_string(), IndexedValueType::Int as i32);
        let c = compare(&custom);
        assert_eq!(c.missing, ["StatefulId", "StatefulRoot"]);
        assert_eq!(
            c.wrong_type,
            [("StatefulStatus", "INDEXED_VALUE_TYPE_TEXT".to_string())]
        );
        assert!(!c.complete());
        for n in NAMES {
            custom.insert(n.to_string(), IndexedValueType::Keyword as i32);
        }
        assert!(compare(&custom).complete());
    }
}
