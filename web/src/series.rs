//! `GET /api/graph/series`: one node's or edge's calls, errors and latency per step, read
//! straight from the graph's buckets (what the panel's sparklines draw), with no SQL planning
//! and no scan of spans.

use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use flowscope_base::clock::now_ns;
use flowscope_graph::{EdgeKind, Element, Figures};
use flowscope_query::graph::LIVE_WINDOW;
use flowscope_query::graph::anomaly::whole_buckets;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Reader;
use crate::error::ApiError;
use crate::graph::{nanos_json, window};

/// A series has at most this many points: each is a graph window of its own.
pub const MAX_POINTS: i64 = 360;
/// Without a `step`, the finest whole number of graph buckets giving at most this many.
const DEFAULT_POINTS: i64 = 90;

const WHICH: &str = "say which element: `node=<id>`, or `source=<id>&target=<id>` (and `kind=sync` or `kind=async` to take one kind of call) for an edge, with the ids `/api/graph` gives";

#[derive(Debug, Deserialize)]
pub struct SeriesParams {
    node: Option<String>,
    source: Option<String>,
    target: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

/// The element the parameters name, or what to send instead.
fn element_of(params: &SeriesParams) -> Result<Element, ApiError> {
    let bad = |message: &str| ApiError::BadRequest(message.to_string());
    match (&params.node, &params.source, &params.target) {
        (Some(id), None, None) => {
            if params.kind.is_some() {
                return Err(bad(
                    "`kind` is for edges; a node is named by `node=<id>` alone",
                ));
            }
            Ok(Element::Node { id: id.clone() })
        }
        (None, Some(source), Some(target)) => {
            let kind = match params.kind.as_deref() {
                None | Some("") => None,
                Some("sync") => Some(EdgeKind::Sync),
                Some("async") => Some(EdgeKind::Async),
                Some(_) => return Err(bad("`kind` must be `sync` or `async`")),
            };
            Ok(Element::Edge {
                source: source.clone(),
                target: target.clone(),
                kind,
            })
        }
        _ => Err(bad(WHICH)),
    }
}

fn duration_text(ns: i64) -> String {
    flowscope_base::duration::format_duration(Duration::from_nanos(ns.max(0) as u64))
}

/// The step: `step` if given (a whole number of graph buckets, at most [`MAX_POINTS`] of it
/// in the window), else the finest such step giving at most [`DEFAULT_POINTS`].
fn step_of(text: Option<&str>, bucket_ns: i64, span_ns: i64) -> Result<i64, ApiError> {
    let bucket = duration_text(bucket_ns);
    let Some(text) = text else {
        let buckets = (span_ns / bucket_ns).max(1);
        let per_step = buckets / DEFAULT_POINTS + i64::from(buckets % DEFAULT_POINTS != 0);
        return Ok(per_step.max(1).saturating_mul(bucket_ns));
    };
    let step = flowscope_base::parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .filter(|ns| *ns > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`step` must be a duration such as `{bucket}` or `1m`, not `{text}`"
            ))
        })?;
    if step % bucket_ns != 0 {
        return Err(ApiError::BadRequest(format!(
            "`step` must be a whole multiple of the graph's {bucket} buckets (--graph-bucket), e.g. `{bucket}` or `1m`"
        )));
    }
    Ok(step)
}

/// The finest step, in whole buckets, that cuts `[from, to)` into at most [`MAX_POINTS`].
fn least_step(from: i64, to: i64, bucket_ns: i64) -> i64 {
    let per_point = to.saturating_sub(from) / MAX_POINTS;
    let mut step = (per_point / bucket_ns).max(1).saturating_mul(bucket_ns);
    while whole_buckets(from, to, step).1 > MAX_POINTS {
        step = step.saturating_add(bucket_ns);
    }
    step
}

/// `null` where the graph had nothing (no data), else the figure.
fn column(series: &[Option<Figures>], figure: impl Fn(&Figures) -> Option<Value>) -> Value {
    Value::Array(
        series
            .iter()
            .map(|f| f.as_ref().and_then(&figure).unwrap_or(Value::Null))
            .collect(),
    )
}

/// One node's or edge's series: `?node=<id>` or `?source=<id>&target=<id>[&kind=sync|async]`,
/// over `from`/`to` (the last 15 minutes by default) in steps of `step` (a whole number of
/// graph buckets; by default the finest giving at most 90 points). Steps are aligned to
/// multiples of `step` since the Unix epoch, and only whole steps are answered, as
/// `edge_series` and `node_series` cut them; each step's figures are that window's graph
/// row. Columns, one value per step: `start_ms`, `calls`, `errors`, `error_rate`, `p50_ms`,
/// `p95_ms`, `p99_ms`; `null` where the graph was empty (no data), and latency and error
/// rate also where the element had no calls or its latency is not measured.
pub async fn get_series(
    Reader(caller): Reader,
    Query(params): Query<SeriesParams>,
) -> Result<Json<Value>, ApiError> {
    let element = element_of(&params)?;
    let (from, to) = window(
        params.from.as_deref(),
        params.to.as_deref(),
        LIVE_WINDOW,
        now_ns(),
    )?;
    let graph = caller.view.graph.clone();
    let bucket_ns = i64::try_from(graph.bucket().as_nanos())
        .unwrap_or(i64::MAX)
        .max(1);
    let step = step_of(params.step.as_deref(), bucket_ns, to.saturating_sub(from))?;
    let (first, count) = whole_buckets(from, to, step);
    if count > MAX_POINTS {
        let least = duration_text(least_step(from, to, bucket_ns));
        return Err(ApiError::BadRequest(format!(
            "this asks for {count} points, more than the {MAX_POINTS} a series may have; send a `step` of at least {least} or a shorter window"
        )));
    }
    let starts: Vec<i64> = (0..count).map(|i| first + i * step).collect();
    let moved = starts.clone();
    let answer = tokio::task::spawn_blocking(move || {
        graph
            .element_series(&element, &moved, step)
            .map(|s| (s, element))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (series, element) = answer?;
    let latency = |value: fn(&Figures) -> f64| {
        move |f: &Figures| (f.calls > 0 && f.has_latency).then(|| json!(value(f)))
    };
    let subject = match &element {
        Element::Node { id } => json!({ "node": id }),
        Element::Edge {
            source,
            target,
            kind,
        } => json!({ "source": source, "target": target, "kind": kind.map(|k| k.as_str()) }),
    };
    Ok(Json(json!({
        "element": subject,
        "from": nanos_json(from),
        "to": nanos_json(to),
        "step_s": step as f64 / 1e9,
        "start_ms": starts.iter().map(|s| s.div_euclid(1_000_000)).collect::<Vec<_>>(),
        "calls": column(&series, |f| Some(json!(f.calls))),
        "errors": column(&series, |f| Some(json!(f.errors))),
        "error_rate": column(&series, |f| (f.calls > 0).then(|| json!(f.errors as f64 / f.calls as f64))),
        "p50_ms": column(&series, latency(|f| f.p50_ms)),
        "p95_ms": column(&series, latency(|f| f.p95_ms)),
        "p99_ms": column(&series, latency(|f| f.p99_ms)),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn the_step_is_a_whole_number_of_buckets() {
        let bucket = 10 * SECOND;
        // 15 minutes of 10 s buckets: 90 points of 10 s; an hour: 90 of 40 s.
        assert_eq!(step_of(None, bucket, 900 * SECOND).unwrap(), 10 * SECOND);
        assert_eq!(step_of(None, bucket, 3600 * SECOND).unwrap(), 40 * SECOND);
        assert_eq!(step_of(None, bucket, SECOND).unwrap(), 10 * SECOND);
        assert_eq!(step_of(Some("1m"), bucket, 0).unwrap(), 60 * SECOND);
        for (text, says) in [
            ("15s", "whole multiple of the graph's 10s buckets"),
            ("soon", "`step` must be a duration"),
            ("0s", "`step` must be a duration"),
        ] {
            let refused = step_of(Some(text), bucket, 900 * SECOND).unwrap_err();
            assert!(refused.to_string().contains(says), "{text}: {refused}");
        }
    }

    #[test]
    fn the_least_step_suggested_fits_the_window() {
        let bucket = 10 * SECOND;
        // A day, and a day and a nanosecond (`to` defaults to just after now): 4 minutes.
        assert_eq!(least_step(0, 86_400 * SECOND, bucket), 240 * SECOND);
        assert_eq!(least_step(-1, 86_400 * SECOND, bucket), 240 * SECOND);
        assert_eq!(
            least_step(5 * SECOND, 3_605 * SECOND + 1, bucket),
            10 * SECOND
        );
    }

    #[test]
    fn an_element_is_a_node_or_an_edge_never_both() {
        let params =
            |node: Option<&str>, source: Option<&str>, target: Option<&str>, kind| SeriesParams {
                node: node.map(String::from),
                source: source.map(String::from),
                target: target.map(String::from),
                kind,
                from: None,
                to: None,
                step: None,
            };
        assert_eq!(
            element_of(&params(Some("a"), None, None, None)).unwrap(),
            Element::Node { id: "a".into() }
        );
        assert_eq!(
            element_of(&params(None, Some("a"), Some("b"), Some("async".into()))).unwrap(),
            Element::Edge {
                source: "a".into(),
                target: "b".into(),
                kind: Some(EdgeKind::Async)
            }
        );
        for wrong in [
            params(None, None, None, None),
            params(Some("a"), Some("b"), None, None),
            params(None, Some("a"), None, None),
        ] {
            let refused = element_of(&wrong).unwrap_err().to_string();
            assert!(refused.contains("say which element"), "{refused}");
        }
        let refused = element_of(&params(None, Some("a"), Some("b"), Some("both".into())));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("`sync` or `async`")
        );
    }
}
