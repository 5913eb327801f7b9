//! `GET /api/incidents`: the window's incidents, ranked, each with its likely cause, impact,
//! start, the cause's figures before and after, the path to focus and example traces (the
//! cause's failed spans first, then its slowest, since the incident started).

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use axum::Json;
use axum::extract::Query;
use flowscope_base::clock::now_ns;
use flowscope_graph::NodeKind;
use flowscope_query::SqlEngine;
use flowscope_query::graph::incidents::{INCIDENT_WINDOW, Incident, Sample, Subject};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Reader;
use crate::error::ApiError;
use crate::graph::{nanos_json, window};

/// Incidents that get example traces: the highest ranked.
const WITH_EXAMPLES: usize = 5;
const EXAMPLES: usize = 5;
/// Examples are a help, never a delay.
const EXAMPLES_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
pub struct IncidentsParams {
    from: Option<String>,
    to: Option<String>,
}

fn sample_json(sample: &Sample) -> Value {
    let latency = |ms: f64| if ms > 0.0 { json!(ms) } else { Value::Null };
    json!({
        "calls_per_second": sample.calls_per_second,
        "error_rate": sample.error_rate,
        "p95_ms": latency(sample.p95_ms),
        "p99_ms": latency(sample.p99_ms),
    })
}

fn incident_json(incident: &Incident, (examples, examples_error): (Value, Value)) -> Value {
    let cause = &incident.cause;
    let mut subject = match &cause.subject {
        Subject::Edge {
            source,
            target,
            kind,
        } => json!({
            "kind": "edge",
            "source": source,
            "target": target,
            "edge_kind": kind.as_str(),
        }),
        Subject::Node { id } => json!({ "kind": "node", "id": id }),
    };
    subject["name"] = json!(cause.subject.name());
    subject["level"] = json!(cause.level.as_str());
    subject["reasons"] = json!(cause.reasons);
    subject["evidence"] = json!(cause.evidence);
    json!({
        "rank": incident.rank,
        "id": incident.id,
        "level": incident.level.as_str(),
        "started": nanos_json(incident.started_ns),
        "started_ms": incident.started_ns.div_euclid(1_000_000),
        "ongoing": incident.ongoing,
        "ended": incident.ended_ns.map(nanos_json),
        "cause": subject,
        "impact": {
            "calls_per_second": incident.impact.calls_per_second,
            "errors_per_second": incident.impact.errors_per_second,
            "upstream_services": incident.impact.upstream_services,
            "edges": incident.impact.edges,
            "nodes": incident.impact.nodes,
        },
        "before": incident.before.as_ref().map(sample_json),
        "after": sample_json(&incident.after),
        "path": incident.path,
        "elements": incident.elements,
        "example_traces": examples,
        "example_traces_error": examples_error,
        "summary": incident.summary,
    })
}

/// A SQL string literal: quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `queue:orders` is the queue `orders`: spans name it without the prefix.
fn bare(id: &str) -> &str {
    match id.split_once(':') {
        Some((prefix, rest)) if ["queue", "database", "external", "service"].contains(&prefix) => {
            rest
        }
        _ => id,
    }
}

const PEER_NAME: &str = "coalesce(attributes['peer.service'], attributes['server.address'], attributes['db.name'], attributes['db.namespace'], attributes['db.system'])";

/// Which spans stand for the cause (the dashboard's panel picks them the same way).
fn cause_condition(incident: &Incident, window: &str) -> String {
    let kinds = &incident.cause.kinds;
    match &incident.cause.subject {
        Subject::Node { id } => {
            let name = literal(bare(id));
            match kinds.first() {
                Some(NodeKind::Service) | None => {
                    format!("service_name = {name} AND kind IN ('SERVER', 'CONSUMER')")
                }
                Some(NodeKind::Queue) => format!(
                    "kind = 'PRODUCER' AND attributes['messaging.destination.name'] = {name}"
                ),
                Some(_) => format!("kind = 'CLIENT' AND {PEER_NAME} = {name}"),
            }
        }
        Subject::Edge { source, target, .. } => {
            let (source_kind, target_kind) = (kinds.first(), kinds.get(1));
            let (source, target) = (literal(bare(source)), literal(bare(target)));
            match (source_kind, target_kind) {
                (_, Some(NodeKind::Queue)) => format!(
                    "service_name = {source} AND kind = 'PRODUCER' AND attributes['messaging.destination.name'] = {target}"
                ),
                (Some(NodeKind::Queue), _) => format!(
                    "service_name = {target} AND kind = 'CONSUMER' AND coalesce(attributes['messaging.destination.name'], {source}) = {source}"
                ),
                (_, Some(NodeKind::Database | NodeKind::External)) => {
                    format!(
                        "service_name = {source} AND kind = 'CLIENT' AND {PEER_NAME} = {target}"
                    )
                }
                _ => format!(
                    "service_name = {target} AND kind = 'SERVER' AND parent_span_id IN (SELECT span_id FROM spans WHERE service_name = {source} AND {window})"
                ),
            }
        }
    }
}

/// The cause's spans since the incident started: failed first, then slowest.
fn examples_sql(incident: &Incident, to_ns: i64) -> String {
    let window = format!(
        "start_time >= to_timestamp_nanos({}) AND start_time < to_timestamp_nanos({})",
        incident.started_ns, to_ns
    );
    let condition = cause_condition(incident, &window);
    format!(
        "SELECT trace_id, service_name, name, duration_ns / 1e6 AS duration_ms, status_code = 'ERROR' AS error \
         FROM spans WHERE {window} AND {condition} \
         ORDER BY CASE WHEN status_code = 'ERROR' THEN 0 ELSE 1 END, duration_ns DESC LIMIT {EXAMPLES}"
    )
}

/// The example rows, or why there are none (the SQL failed or took too long).
async fn examples(engine: &SqlEngine, incident: &Incident, to_ns: i64) -> (Value, Value) {
    let sql = examples_sql(incident, to_ns);
    match engine.query_within(&sql, EXAMPLES, EXAMPLES_TIMEOUT).await {
        Ok(output) => (Value::Array(example_rows(&output.batches)), Value::Null),
        Err(error) => {
            tracing::debug!(%error, "incident example traces failed");
            (json!([]), json!(error.to_string()))
        }
    }
}

/// `{trace_id, service, name, duration_ms, error}` per row of the examples' query.
fn example_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut rows = Vec::new();
    for batch in batches {
        let text = |column: usize, row: usize| {
            array_value_to_string(batch.column(column), row).unwrap_or_default()
        };
        for row in 0..batch.num_rows() {
            if batch.num_columns() < 5 {
                break;
            }
            rows.push(json!({
                "trace_id": text(0, row),
                "service": text(1, row),
                "name": text(2, row),
                "duration_ms": text(3, row).parse::<f64>().ok(),
                "error": text(4, row) == "true",
            }));
        }
    }
    rows
}

/// The incidents of `from`/`to` (the last five minutes by default), ranked.
pub async fn get_incidents(
    Reader(caller): Reader,
    Query(params): Query<IncidentsParams>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ns();
    let graph = caller.view.graph.clone();
    // The live window (no `from` or `to`, or `from=5m` up to now) is shared by every reader.
    let live = params.to.as_deref().is_none_or(|to| to.trim() == "now")
        && params
            .from
            .as_deref()
            .is_none_or(|from| flowscope_base::parse_duration(from).ok() == Some(INCIDENT_WINDOW));
    let (from, to, incidents) = if live {
        tokio::task::spawn_blocking(move || graph.live_incidents(now))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
    } else {
        let (from, to) = window(
            params.from.as_deref(),
            params.to.as_deref(),
            INCIDENT_WINDOW,
            now,
        )?;
        let found = tokio::task::spawn_blocking(move || graph.incidents(from, to))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        (from, to, std::sync::Arc::new(found))
    };
    let mut answer = Vec::with_capacity(incidents.len());
    for incident in incidents.iter() {
        let examples = if incident.rank <= WITH_EXAMPLES {
            examples(&caller.view.engine, incident, to).await
        } else {
            (json!([]), Value::Null)
        };
        answer.push(incident_json(incident, examples));
    }
    Ok(Json(json!({
        "from": nanos_json(from),
        "to": nanos_json(to),
        "incidents": answer,
    })))
}
