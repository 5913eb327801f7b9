//! `GET /api/graph`, `GET /api/graph/diff` and `GET /api/graph/stream` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flowscope_base::clock::now_ns;
use flowscope_graph::{Edge, EdgeChange, FeedbackLoop, GraphDelta, Node, Snapshot, delta, diff};
use flowscope_query::QueryError;
use flowscope_query::graph::LIVE_WINDOW;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ApiState;
use crate::auth::Reader;
use crate::error::ApiError;

/// How often the stream looks for changes; deltas are sent at most this often.
const STREAM_PERIOD: Duration = Duration::from_secs(1);

/// A point in time from a query parameter: RFC 3339 (`2026-11-29T06:00:00Z`), Unix
/// milliseconds (`1764396000000`), `now`, or a duration ago (`15m`, `2h`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(millis) = text.parse::<i64>() {
        return millis
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("time `{text}` is out of range"));
    }
    if let Ok(ago) = flowscope_base::parse_duration(text) {
        return Ok(now - ago.as_nanos().min(i64::MAX as u128) as i64);
    }
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text).map_err(|_| {
        format!("time `{text}` is not RFC 3339 (2026-11-29T06:00:00Z), Unix milliseconds, `now` or a duration ago such as `15m`")
    })
}

pub(crate) fn window(
    from: Option<&str>,
    to: Option<&str>,
    default_from_ago: Duration,
    now: i64,
) -> Result<(i64, i64), ApiError> {
    let from = match from {
        Some(text) => parse_time(text, now).map_err(ApiError::BadRequest)?,
        None => now - default_from_ago.as_nanos() as i64,
    };
    let to = match to {
        Some(text) => parse_time(text, now).map_err(ApiError::BadRequest)?,
        None => now + 1,
    };
    if to <= from {
        return Err(ApiError::BadRequest(
            "the window is empty: `to` must be later than `from`".into(),
        ));
    }
    Ok((from, to))
}

/// A node as the API writes it. The answers are serialized from these borrowed views
/// straight to bytes: building a `serde_json::Value` tree first (a map and a `String` key per
/// field) cost as much as the rest of `/api/graph` at 100,000 edges.
#[derive(Serialize)]
struct NodeJson<'a> {
    id: &'a str,
    kind: &'static str,
    calls: u64,
    errors: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    health: &'static str,
    health_reasons: &'a [String],
}

impl<'a> From<&'a Node> for NodeJson<'a> {
    fn from(node: &'a Node) -> Self {
        Self {
            id: &node.id,
            kind: node.kind.as_str(),
            calls: node.calls_in,
            errors: node.errors_in,
            p50_ms: node.p50_ms,
            p95_ms: node.p95_ms,
            p99_ms: node.p99_ms,
            health: node.health.level.as_str(),
            health_reasons: &node.health.reasons,
        }
    }
}

/// An edge as the API writes it.
#[derive(Serialize)]
struct EdgeJson<'a> {
    source: &'a str,
    target: &'a str,
    kind: &'static str,
    calls: u64,
    errors: u64,
    error_rate: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    bytes: u64,
    amplification: f64,
    trace_loops: u64,
    health: &'static str,
    health_reasons: &'a [String],
    amplified: bool,
}

impl<'a> From<&'a Edge> for EdgeJson<'a> {
    fn from(edge: &'a Edge) -> Self {
        Self {
            source: &edge.source,
            target: &edge.target,
            kind: edge.kind.as_str(),
            calls: edge.calls,
            errors: edge.errors,
            error_rate: if edge.calls == 0 {
                0.0
            } else {
                edge.errors as f64 / edge.calls as f64
            },
            p50_ms: edge.p50_ms,
            p95_ms: edge.p95_ms,
            p99_ms: edge.p99_ms,
            bytes: edge.bytes,
            amplification: edge.amplification,
            trace_loops: edge.trace_loops,
            health: edge.health.level.as_str(),
            health_reasons: &edge.health.reasons,
            amplified: edge.amplified,
        }
    }
}

/// A feedback loop as the API writes it.
#[derive(Serialize)]
struct LoopJson<'a> {
    id: &'a str,
    nodes: &'a [String],
    edges: Vec<[&'a str; 2]>,
    calls: u64,
    trace_loops: u64,
}

impl<'a> From<&'a FeedbackLoop> for LoopJson<'a> {
    fn from(feedback: &'a FeedbackLoop) -> Self {
        Self {
            id: &feedback.id,
            nodes: &feedback.nodes,
            edges: feedback
                .edges
                .iter()
                .map(|(s, t)| [s.as_str(), t.as_str()])
                .collect(),
            calls: feedback.calls,
            trace_loops: feedback.trace_loops,
        }
    }
}

/// A snapshot as the API writes it.
#[derive(Serialize)]
struct SnapshotJson<'a> {
    from: Value,
    to: Value,
    nodes: Vec<NodeJson<'a>>,
    edges: Vec<EdgeJson<'a>>,
    loops: Vec<LoopJson<'a>>,
}

impl<'a> From<&'a Snapshot> for SnapshotJson<'a> {
    fn from(snapshot: &'a Snapshot) -> Self {
        Self {
            from: nanos_json(snapshot.from_ns),
            to: nanos_json(snapshot.to_ns),
            nodes: snapshot.nodes.iter().map(NodeJson::from).collect(),
            edges: snapshot.edges.iter().map(EdgeJson::from).collect(),
            loops: snapshot.loops.iter().map(LoopJson::from).collect(),
        }
    }
}

fn node_json(node: &Node) -> Value {
    json!(NodeJson::from(node))
}

fn edge_json(edge: &Edge) -> Value {
    json!(EdgeJson::from(edge))
}

fn loop_json(feedback: &FeedbackLoop) -> Value {
    json!(LoopJson::from(feedback))
}

pub(crate) fn nanos_json(ns: i64) -> Value {
    json!(
        arrow::temporal_conversions::timestamp_ns_to_datetime(ns)
            .map(|t| format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S%.3f")))
    )
}

/// The snapshot's JSON text, written without a `Value` tree in between.
pub fn snapshot_text(snapshot: &Snapshot) -> String {
    serde_json::to_string(&SnapshotJson::from(snapshot)).unwrap_or_else(|e| {
        // Only a map with non-string keys fails, and there is none here.
        json!({"error": format!("could not write the graph as JSON: {e}")}).to_string()
    })
}

fn change_json(change: &EdgeChange) -> Value {
    json!({ "before": edge_json(&change.before), "after": edge_json(&change.after), "reasons": change.reasons })
}

fn delta_json(delta: &GraphDelta) -> Value {
    json!({
        "edges_added": delta.added.iter().map(edge_json).collect::<Vec<_>>(),
        "edges_changed": delta.changed.iter().map(edge_json).collect::<Vec<_>>(),
        "edges_removed": delta.removed.iter().map(|(s, t, k)| json!({"source": s, "target": t, "kind": k.as_str()})).collect::<Vec<_>>(),
        "nodes_added": delta.nodes_added.iter().map(node_json).collect::<Vec<_>>(),
        "nodes_changed": delta.nodes_changed.iter().map(node_json).collect::<Vec<_>>(),
        "nodes_removed": delta.nodes_removed,
        "loops": delta.loops.as_ref().map(|loops| loops.iter().map(loop_json).collect::<Vec<_>>()),
    })
}

#[derive(Debug, Deserialize)]
pub struct WindowParams {
    from: Option<String>,
    to: Option<String>,
}

pub async fn get_graph(
    Reader(caller): Reader,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let (from, to) = window(
        params.from.as_deref(),
        params.to.as_deref(),
        LIVE_WINDOW,
        now_ns(),
    )?;
    let graph = caller.view.graph.clone();
    // Judged and written off the runtime: at 100,000 edges the text is tens of megabytes.
    let text = tokio::task::spawn_blocking(move || {
        graph
            .judged(from, to)
            .map(|snapshot| snapshot_text(&snapshot))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DiffParams {
    before_from: Option<String>,
    before_to: Option<String>,
    after_from: Option<String>,
    after_to: Option<String>,
    ratio: Option<f64>,
}

/// Compares two windows. Defaults: `after` is the last 15 minutes, `before` the 15 minutes
/// before it, `ratio` 2 (a change means doubled or halved).
pub async fn get_diff(
    Reader(caller): Reader,
    Query(params): Query<DiffParams>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ns();
    let (after_from, after_to) = window(
        params.after_from.as_deref(),
        params.after_to.as_deref(),
        LIVE_WINDOW,
        now,
    )?;
    let span = after_to - after_from;
    let before_from = match params.before_from.as_deref() {
        Some(text) => parse_time(text, now).map_err(ApiError::BadRequest)?,
        None => after_from - span,
    };
    let before_to = match params.before_to.as_deref() {
        Some(text) => parse_time(text, now).map_err(ApiError::BadRequest)?,
        None => after_from,
    };
    if before_to <= before_from {
        return Err(ApiError::BadRequest("the `before` window is empty".into()));
    }
    let ratio = params.ratio.unwrap_or(2.0);
    if !(ratio > 1.0 && ratio.is_finite()) {
        return Err(ApiError::BadRequest(
            "`ratio` must be a number above 1, e.g. 2 for doubled or halved".into(),
        ));
    }
    let graph = caller.view.graph.clone();
    let changes = tokio::task::spawn_blocking(move || {
        let before = graph.snapshot(before_from, before_to)?;
        let after = graph.snapshot(after_from, after_to)?;
        Ok::<_, QueryError>(diff(&before, &after, ratio))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({
        "before": { "from": nanos_json(before_from), "to": nanos_json(before_to) },
        "after": { "from": nanos_json(after_from), "to": nanos_json(after_to) },
        "ratio": ratio,
        "nodes_appeared": changes.appeared_nodes,
        "nodes_vanished": changes.vanished_nodes,
        "edges_appeared": changes.appeared_edges.iter().map(edge_json).collect::<Vec<_>>(),
        "edges_vanished": changes.vanished_edges.iter().map(edge_json).collect::<Vec<_>>(),
        "edges_changed": changes.changed_edges.iter().map(change_json).collect::<Vec<_>>(),
    })))
}

/// The live graph as server-sent events: one `snapshot` event, then a `delta` event at most
/// once a second whenever something changed. A stream opened with a session cookie ends
/// within a period of its session ending (logged out, expired or evicted): the cookie no
/// longer opens anything, so neither may a stream it opened.
pub async fn stream(
    State(state): State<ApiState>,
    Reader(caller): Reader,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let graph = caller.view.graph.clone();
    let session = caller.session.map(|key| (state.sessions.clone(), key));
    let events = futures::stream::unfold(
        (None::<Arc<Snapshot>>, graph, session),
        |(previous, graph, session)| async move {
            loop {
                if previous.is_some() {
                    tokio::time::sleep(STREAM_PERIOD).await;
                }
                if let Some((sessions, key)) = &session
                    && !sessions.is_live(key, Instant::now())
                {
                    return None;
                }
                let reader = graph.clone();
                let next = match tokio::task::spawn_blocking(move || reader.live_shared()).await {
                    Ok(next) => next,
                    Err(_) => return None,
                };
                let event = match &previous {
                    None => Event::default()
                        .event("snapshot")
                        .data(snapshot_text(&next)),
                    Some(previous) => {
                        let change = delta(previous, &next);
                        if change.is_empty() {
                            continue;
                        }
                        Event::default()
                            .event("delta")
                            .data(delta_json(&change).to_string())
                    }
                };
                return Some((Ok(event), (Some(next), graph, session)));
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        let now = 1_764_396_000_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("15m", now), Ok(now - 900_000_000_000));
        assert_eq!(
            parse_time("1764396000000", now),
            Ok(1_764_396_000_000_000_000)
        );
        assert_eq!(
            parse_time("2025-11-29T06:00:00Z", now),
            Ok(1_764_396_000_000_000_000)
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    /// The snapshot's text has every field, named and valued as the API has always written
    /// them (the `Value` tree it replaced is spelled out here).
    #[test]
    fn a_snapshot_is_written_with_every_field() {
        use flowscope_graph::{EdgeKind, Health, HealthLevel, NodeKind};
        let slow = Health {
            level: HealthLevel::Degraded,
            reasons: vec!["p95 400 ms above its limit 150 ms\n(baseline 100 ms)".into()],
        };
        let snapshot = Snapshot {
            from_ns: 1_764_396_000_000_000_000,
            to_ns: 1_764_396_900_000_000_000,
            nodes: vec![Node {
                id: "checkout".into(),
                kind: NodeKind::Service,
                calls_in: 10,
                errors_in: 1,
                p50_ms: 1.5,
                p95_ms: f64::NAN,
                p99_ms: 3.0,
                health: slow.clone(),
            }],
            edges: vec![Edge {
                source: "checkout".into(),
                target: "inventory".into(),
                kind: EdgeKind::Async,
                calls: 4,
                errors: 1,
                p50_ms: 2.0,
                p95_ms: 400.0,
                p99_ms: 480.0,
                bytes: 7,
                amplification: 1.25,
                trace_loops: 2,
                health: slow,
                amplified: true,
            }],
            loops: vec![FeedbackLoop {
                id: "checkout -> inventory".into(),
                nodes: vec!["checkout".into(), "inventory".into()],
                edges: vec![
                    ("checkout".into(), "inventory".into()),
                    ("inventory".into(), "checkout".into()),
                ],
                calls: 3,
                trace_loops: 1,
            }],
        };
        let reasons = ["p95 400 ms above its limit 150 ms\n(baseline 100 ms)"];
        let expected = json!({
            "from": "2025-11-29T06:00:00.000Z",
            "to": "2025-11-29T06:15:00.000Z",
            "nodes": [{
                "id": "checkout", "kind": "service", "calls": 10, "errors": 1,
                "p50_ms": 1.5, "p95_ms": null, "p99_ms": 3.0,
                "health": "degraded", "health_reasons": reasons,
            }],
            "edges": [{
                "source": "checkout", "target": "inventory", "kind": "async", "calls": 4,
                "errors": 1, "error_rate": 0.25, "p50_ms": 2.0, "p95_ms": 400.0,
                "p99_ms": 480.0, "bytes": 7, "amplification": 1.25, "trace_loops": 2,
                "health": "degraded", "health_reasons": reasons, "amplified": true,
            }],
            "loops": [{
                "id": "checkout -> inventory", "nodes": ["checkout", "inventory"],
                "edges": [["checkout", "inventory"], ["inventory", "checkout"]],
                "calls": 3, "trace_loops": 1,
            }],
        });
        let written: Value = serde_json::from_str(&snapshot_text(&snapshot)).unwrap();
        assert_eq!(written, expected);
        assert_eq!(
            json!(NodeJson::from(&snapshot.nodes[0])),
            expected["nodes"][0]
        );
        assert_eq!(edge_json(&snapshot.edges[0]), expected["edges"][0]);
    }
}
