//! Graph context for an alert whose labels name a service or an edge: its upstream and
//! downstream neighbours, the feedback loops it is in, a few example trace ids and the
//! incident it is part of (likely cause and impact, from `incidents(from, to)`), as
//! annotations. Bounded: a few names per annotation, a few alerts per notification.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow::util::display::array_value_to_string;
use flowscope_query::SqlEngine;

use crate::evaluate::Labels;

/// Names listed per annotation; past it the list ends with `, …`.
pub const MAX_NAMES: usize = 10;
/// Characters per annotation, at most.
pub const MAX_CHARS: usize = 400;
/// Example trace ids per alert.
pub const MAX_TRACES: usize = 3;
/// Alerts of one notification that get context: with [`MAX_CHARS`] per annotation, the
/// context of one notification stays under 20 KB.
pub const MAX_ALERTS_WITH_CONTEXT: usize = 10;
// Five annotations of at most MAX_CHARS on each alert that gets context: under 20 KB.
const _: () = assert!(5 * MAX_CHARS * MAX_ALERTS_WITH_CONTEXT < 20 * 1024);

/// Each context query gives up after this: context is a help, never a delay.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the labels point at in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Service(String),
    Edge { source: String, target: String },
}

/// The service or edge an alert is about: an edge when the labels have `caller` and
/// `callee` or `source` and `target`, else a service when they have `service`,
/// `service_name` or `node`.
pub fn subject_of(labels: &Labels) -> Option<Subject> {
    for (from, to) in [("caller", "callee"), ("source", "target")] {
        if let (Some(source), Some(target)) = (labels.get(from), labels.get(to)) {
            return Some(Subject::Edge {
                source: source.clone(),
                target: target.clone(),
            });
        }
    }
    ["service", "service_name", "node"]
        .iter()
        .find_map(|key| labels.get(*key))
        .map(|name| Subject::Service(name.clone()))
}

/// The SQL for each annotation of `subject`, over the live graph tables and the last
/// 15 minutes of spans (errors first, then newest).
pub fn queries(subject: &Subject) -> Vec<(&'static str, String)> {
    let limit = MAX_NAMES + 1;
    let (up_of, down_of, loop_filter, trace_service, incident_filter) = match subject {
        Subject::Service(name) => {
            let name = literal(name);
            (
                name.clone(),
                name.clone(),
                format!("array_has(nodes, {name})"),
                name.clone(),
                format!("array_has(elements, {name})"),
            )
        }
        Subject::Edge { source, target } => {
            let edge = literal(&format!("{source} -> {target}"));
            let (source, target) = (literal(source), literal(target));
            (
                source.clone(),
                target.clone(),
                format!("array_has(nodes, {source}) AND array_has(nodes, {target})"),
                source.clone(),
                format!("(array_has(elements, {edge}) OR array_has(elements, {source}))"),
            )
        }
    };
    vec![
        (
            "upstream",
            format!(
                "SELECT DISTINCT source FROM edges WHERE target = {up_of} ORDER BY source LIMIT {limit}"
            ),
        ),
        (
            "downstream",
            format!(
                "SELECT DISTINCT target FROM edges WHERE source = {down_of} ORDER BY target LIMIT {limit}"
            ),
        ),
        (
            "loops",
            format!(
                "SELECT array_to_string(nodes, ' -> ') FROM feedback_loops WHERE {loop_filter} ORDER BY calls DESC LIMIT {limit}"
            ),
        ),
        (
            "example_trace_ids",
            format!(
                "SELECT trace_id FROM spans WHERE service_name = {trace_service} \
                 AND start_time > now() - INTERVAL '15 minutes' \
                 ORDER BY CASE WHEN status_code = 'ERROR' THEN 0 ELSE 1 END, start_time DESC LIMIT {MAX_TRACES}"
            ),
        ),
        (
            "incident",
            format!(
                "SELECT summary FROM incidents(now() - INTERVAL '5 minutes', now()) \
                 WHERE {incident_filter} ORDER BY rank LIMIT 1"
            ),
        ),
    ]
}

/// `a, b, c`, or the first [`MAX_NAMES`] and `…` (the queries fetch one name more than
/// they show, to know there are more).
pub fn render(names: &[String]) -> String {
    let shown = names.iter().take(MAX_NAMES).cloned().collect::<Vec<_>>();
    let mut text = shown.join(", ");
    if names.len() > MAX_NAMES {
        text.push_str(", …");
    }
    if text.chars().count() > MAX_CHARS {
        // Long names (URLs as peer names, say) must not make the notification large.
        text = text.chars().take(MAX_CHARS - 1).collect();
        text.push('…');
    }
    text
}

/// Runs the context queries for `labels`; a query that fails leaves its annotation out.
pub async fn annotations(engine: &SqlEngine, labels: &Labels) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(subject) = subject_of(labels) else {
        return out;
    };
    for (annotation, sql) in queries(&subject) {
        match engine
            .query_within(&sql, MAX_NAMES + 1, QUERY_TIMEOUT)
            .await
        {
            Ok(output) => {
                let names = first_column(&output.batches);
                if !names.is_empty() {
                    out.insert(annotation.to_string(), render(&names));
                }
            }
            Err(error) => {
                tracing::debug!(%error, annotation, "alert context query failed");
            }
        }
    }
    out
}

fn first_column(batches: &[RecordBatch]) -> Vec<String> {
    let mut names = Vec::new();
    for batch in batches {
        let column = batch.column(0);
        for row in 0..batch.num_rows() {
            if column.is_valid(row)
                && let Ok(text) = array_value_to_string(column, row)
            {
                names.push(text);
            }
        }
    }
    names
}

/// A SQL string literal: quotes doubled, so a label value cannot end it.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_name_an_edge_before_a_service() {
        let check = |pairs: &[(&str, &str)], expected: Option<Subject>| {
            assert_eq!(subject_of(&labels(pairs)), expected, "{pairs:?}")
        };
        check(&[("service", "a")], Some(Subject::Service("a".into())));
        check(&[("service_name", "a")], Some(Subject::Service("a".into())));
        check(&[("node", "a")], Some(Subject::Service("a".into())));
        check(
            &[("caller", "a"), ("callee", "b"), ("service", "c")],
            Some(Subject::Edge {
                source: "a".into(),
                target: "b".into(),
            }),
        );
        check(
            &[("source", "a"), ("target", "b")],
            Some(Subject::Edge {
                source: "a".into(),
                target: "b".into(),
            }),
        );
        check(&[("source", "a")], None);
        check(&[("alertname", "x")], None);
    }

    #[test]
    fn label_values_cannot_escape_their_literal() {
        let sql = queries(&Subject::Service("x' OR 1=1 --".into()));
        assert!(sql[0].1.contains("'x'' OR 1=1 --'"), "{}", sql[0].1);
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let names: Vec<String> = (0..13).map(|i| format!("s{i}")).collect();
        let text = render(&names);
        assert!(text.starts_with("s0, s1"));
        assert!(text.ends_with("s9, …"), "{text}");
        assert_eq!(render(&names[..2]), "s0, s1");
        let long: Vec<String> = (0..11).map(|i| format!("{i}{}", "x".repeat(200))).collect();
        let text = render(&long);
        assert_eq!(text.chars().count(), MAX_CHARS);
        assert!(text.ends_with('…'));
    }
}
