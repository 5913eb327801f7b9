//! `GET /api/graph`, `GET /api/graph/diff` and `GET /api/graph/stream` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use flowscope_base::clock::now_ns;
use flowscope_graph::{Edge, EdgeChange, FeedbackLoop, GraphDelta, Node, Snapshot, delta, diff};
use flowscope_query::QueryError;
use flowscope_query::graph_tables::LIVE_WINDOW;
use futures::Stream;
use serde::Deserialize;
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

fn node_json(node: &Node) -> Value {
    json!({
        "id": node.id,
        "kind": node.kind.as_str(),
        "calls": node.calls_in,
        "errors": node.errors_in,
        "p50_ms": node.p50_ms,
        "p95_ms": node.p95_ms,
        "p99_ms": node.p99_ms,
        "health": node.health.level.as_str(),
        "health_reasons": node.health.reasons,
    })
}

fn edge_json(edge: &Edge) -> Value {
    json!({
        "source": edge.source,
        "target": edge.target,
        "kind": edge.kind.as_str(),
        "calls": edge.calls,
        "errors": edge.errors,
        "error_rate": if edge.calls == 0 { 0.0 } else { edge.errors as f64 / edge.calls as f64 },
        "p50_ms": edge.p50_ms,
        "p95_ms": edge.p95_ms,
        "p99_ms": edge.p99_ms,
        "bytes": edge.bytes,
        "amplification": edge.amplification,
        "trace_loops": edge.trace_loops,
        "health": edge.health.level.as_str(),
        "health_reasons": edge.health.reasons,
        "amplified": edge.amplified,
    })
}

fn loop_json(feedback: &FeedbackLoop) -> Value {
    json!({
        "id": feedback.id,
        "nodes": feedback.nodes,
        "edges": feedback.edges.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>(),
        "calls": feedback.calls,
        "trace_loops": feedback.trace_loops,
    })
}

pub(crate) fn nanos_json(ns: i64) -> Value {
    json!(
        arrow::temporal_conversions::timestamp_ns_to_datetime(ns)
            .map(|t| format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S%.3f")))
    )
}

pub fn snapshot_json(snapshot: &Snapshot) -> Value {
    json!({
        "from": nanos_json(snapshot.from_ns),
        "to": nanos_json(snapshot.to_ns),
        "nodes": snapshot.nodes.iter().map(node_json).collect::<Vec<_>>(),
        "edges": snapshot.edges.iter().map(edge_json).collect::<Vec<_>>(),
        "loops": snapshot.loops.iter().map(loop_json).collect::<Vec<_>>(),
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
) -> Result<Json<Value>, ApiError> {
    let (from, to) = window(
        params.from.as_deref(),
        params.to.as_deref(),
        LIVE_WINDOW,
        now_ns(),
    )?;
    let graph = caller.view.graph.clone();
    let snapshot = tokio::task::spawn_blocking(move || graph.judged(from, to))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(snapshot_json(&snapshot)))
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
                        .data(snapshot_json(&next).to_string()),
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
}
