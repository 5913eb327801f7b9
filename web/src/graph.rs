//! `GET /api/graph`, `GET /api/graph/diff` and `GET /api/graph/stream` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flowscope_base::clock::now_ns;
use flowscope_graph::{
    DEFAULT_MAX_EDGES, DEFAULT_MAX_NODES, Direction, Edge, EdgeChange, FeedbackLoop, FilterError,
    Filtered, Focus, GraphDelta, GraphFilter, GroupBy, NODE_ATTRIBUTE_KEYS, Node, NodeKind, Rank,
    Snapshot, delta, diff,
};
use flowscope_query::QueryError;
use flowscope_query::graph::{GraphView, LIVE_WINDOW};
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

/// The window a graph question asks about, and whether it is live.
#[derive(Debug, Clone, Copy)]
struct Asked {
    from: i64,
    to: i64,
    live: bool,
}

impl Asked {
    /// Without `from` and `to`, the live window: the last 15 minutes, ending at the next
    /// bucket boundary, so it covers the same buckets, and gives the same bytes (and ETag),
    /// for as long as nothing new arrives within a bucket. Any other window is taken as
    /// written, and computed: a reader that asks for `from=1m` wants what arrived just now
    /// (the graph benchmark's ack-to-edge probes do), not a snapshot up to half a second old.
    fn of(graph: &GraphView, from: Option<&str>, to: Option<&str>) -> Result<Self, ApiError> {
        let now = now_ns();
        if from.is_none() && to.is_none() {
            let bucket = i64::try_from(graph.bucket().as_nanos()).unwrap_or(1).max(1);
            let to = (now / bucket + 1) * bucket;
            return Ok(Self {
                from: to - LIVE_WINDOW.as_nanos() as i64,
                to,
                live: true,
            });
        }
        let (from, to) = window(from, to, LIVE_WINDOW, now)?;
        Ok(Self {
            from,
            to,
            live: false,
        })
    }

    /// Whether a judged snapshot of this (live) window is shared right now, so a question
    /// costs only its filter.
    fn shared_now(&self, graph: &GraphView) -> bool {
        self.live && graph.judged_shared_if_fresh(self.from, self.to).is_some()
    }

    /// The judged snapshot of the window. A live window's is shared by the questions
    /// asked within half a second (a dashboard asks several at once, and the event stream
    /// shares it the same way); any other window is computed.
    fn judged(&self, graph: &GraphView) -> Result<Arc<Snapshot>, ApiError> {
        Ok(if self.live {
            graph.judged_shared(self.from, self.to)?
        } else {
            graph.judged(self.from, self.to)?
        })
    }
}

/// A neighbourhood's answer cut from the part of the window it needs, judged
/// ([`GraphView::judged_around`]): the same answer as the judged snapshot filtered, without
/// naming and judging the whole graph (at 100,000 edges most of a computed answer's time).
fn around_text(
    graph: &GraphView,
    asked: &Asked,
    focus: &Focus,
    filter: &GraphFilter,
) -> Result<String, ApiError> {
    let around = graph
        .judged_around(asked.from, asked.to, focus)?
        .ok_or_else(|| {
            ApiError::NotFound(FilterError::UnknownNode(focus.node.clone()).to_string())
        })?;
    let mut filtered = flowscope_graph::filter(&around.snapshot, filter)
        .map_err(|error| ApiError::NotFound(error.to_string()))?;
    filtered.total_nodes = around.total_nodes;
    filtered.total_edges = around.total_edges;
    Ok(filtered_text(&filtered))
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

/// A latency in milliseconds to the microsecond: the sketches behind it are within about 1%,
/// and the 13 digits after the point that an `f64` prints were a third of a large answer.
fn micros(ms: f64) -> f64 {
    (ms * 1_000.0).round() / 1_000.0
}

/// A ratio (error rate, amplification) to six decimals, for the same reason.
fn ratio(value: f64) -> f64 {
    (value * 1_000_000.0).round() / 1_000_000.0
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
    /// Services: their most frequent namespace, environment, zone, ... (left out when none).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    attributes: &'a std::collections::BTreeMap<String, String>,
    /// Groups (`group_by`): the attribute, its value and the member ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupJson<'a>>,
}

#[derive(Serialize)]
struct GroupJson<'a> {
    key: &'a str,
    value: &'a str,
    members: &'a [String],
}

impl<'a> From<&'a Node> for NodeJson<'a> {
    fn from(node: &'a Node) -> Self {
        Self {
            id: &node.id,
            kind: node.kind.as_str(),
            calls: node.calls_in,
            errors: node.errors_in,
            p50_ms: micros(node.p50_ms),
            p95_ms: micros(node.p95_ms),
            p99_ms: micros(node.p99_ms),
            health: node.health.level.as_str(),
            health_reasons: &node.health.reasons,
            attributes: &node.attributes,
            group: node.group.as_ref().map(|group| GroupJson {
                key: &group.key,
                value: &group.value,
                members: &group.members,
            }),
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
                ratio(edge.errors as f64 / edge.calls as f64)
            },
            p50_ms: micros(edge.p50_ms),
            p95_ms: micros(edge.p95_ms),
            p99_ms: micros(edge.p99_ms),
            bytes: edge.bytes,
            amplification: ratio(edge.amplification),
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
    nodes: Vec<&'a str>,
    edges: Vec<[&'a str; 2]>,
    calls: u64,
    trace_loops: u64,
}

impl<'a> From<&'a FeedbackLoop> for LoopJson<'a> {
    fn from(feedback: &'a FeedbackLoop) -> Self {
        Self {
            id: &feedback.id,
            nodes: feedback.nodes.iter().map(|n| &**n).collect(),
            edges: feedback.edges.iter().map(|(s, t)| [&**s, &**t]).collect(),
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

/// The size of the whole window beside what an answer shows.
#[derive(Serialize)]
struct TotalsJson {
    nodes: usize,
    edges: usize,
}

/// A filtered snapshot as the API writes it: the snapshot's fields, whether the cap cut it,
/// and the whole window's size.
#[derive(Serialize)]
struct FilteredJson<'a> {
    #[serde(flatten)]
    snapshot: SnapshotJson<'a>,
    truncated: bool,
    totals: TotalsJson,
}

/// A filtered snapshot's JSON text.
fn filtered_text(filtered: &Filtered) -> String {
    let answer = FilteredJson {
        snapshot: SnapshotJson::from(&filtered.snapshot),
        truncated: filtered.truncated,
        totals: TotalsJson {
            nodes: filtered.total_nodes,
            edges: filtered.total_edges,
        },
    };
    serde_json::to_string(&answer).unwrap_or_else(|e| {
        json!({"error": format!("could not write the graph as JSON: {e}")}).to_string()
    })
}

/// `GET /api/graph` and `/api/graph/stream`: the window, and what to keep of it
/// (`flowscope_graph::filter`'s steps, in that order).
#[derive(Debug, Default, Deserialize)]
pub struct GraphParams {
    from: Option<String>,
    to: Option<String>,
    /// Comma-separated node kinds: service, database, queue, external.
    kinds: Option<String>,
    min_calls: Option<u64>,
    /// A node's id: only its neighbourhood.
    focus: Option<String>,
    /// Edges away from `focus` [default: 2].
    hops: Option<usize>,
    /// up, down or both [default: both].
    direction: Option<String>,
    /// Only the first n nodes by `by`.
    top: Option<usize>,
    /// calls, errors, p99 or error_rate [default: calls].
    by: Option<String>,
    /// The cap [default: 5000 nodes, 50000 edges].
    max_nodes: Option<usize>,
    max_edges: Option<usize>,
    /// A node attribute (`service.namespace`, `k8s.namespace.name`, ...): nodes folded into
    /// one group per value.
    group_by: Option<String>,
    /// Comma-separated values of `group_by` whose groups are shown as their members.
    expand: Option<String>,
}

/// The most groups `expand` may open at once.
const MAX_EXPANDED: usize = 1_000;

/// The deepest neighbourhood asked for: past this, ask for the whole graph.
const MAX_HOPS: usize = 32;

impl GraphParams {
    fn filter(&self) -> Result<GraphFilter, ApiError> {
        let kinds = match &self.kinds {
            None => None,
            Some(text) => Some(
                text.split(',')
                    .map(str::trim)
                    .filter(|kind| !kind.is_empty())
                    .map(|kind| match kind {
                        "service" => Ok(NodeKind::Service),
                        "database" => Ok(NodeKind::Database),
                        "queue" => Ok(NodeKind::Queue),
                        "external" => Ok(NodeKind::External),
                        other => Err(ApiError::BadRequest(format!(
                            "`kinds`: `{other}` is not a node kind: use service, database, queue or external, comma separated"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let direction = match self.direction.as_deref() {
            None => Direction::Both,
            Some(text) => Direction::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!("`direction`: `{text}` is not up, down or both"))
            })?,
        };
        let hops = self.hops.unwrap_or(2);
        if hops > MAX_HOPS {
            return Err(ApiError::BadRequest(format!(
                "`hops` is at most {MAX_HOPS}: leave out `focus` for the whole graph"
            )));
        }
        let focus = self.focus.as_ref().map(|node| Focus {
            node: node.clone(),
            hops,
            direction,
        });
        if focus.is_none() && (self.hops.is_some() || self.direction.is_some()) {
            return Err(ApiError::BadRequest(
                "`hops` and `direction` shape a neighbourhood: give its node with `focus`".into(),
            ));
        }
        let rank = match self.by.as_deref() {
            None => Rank::Calls,
            Some(text) => Rank::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`by`: `{text}` is not calls, errors, p99 or error_rate"
                ))
            })?,
        };
        if self.by.is_some() && self.top.is_none() {
            return Err(ApiError::BadRequest(
                "`by` ranks the nodes `top` keeps: give `top` too, e.g. top=50&by=errors".into(),
            ));
        }
        let positive = |name: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(ApiError::BadRequest(format!("`{name}` must be at least 1"))),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        let group_by = match self.group_by.as_deref().map(str::trim) {
            None | Some("") => {
                if self.expand.is_some() {
                    return Err(ApiError::BadRequest(
                        "`expand` opens groups of `group_by`: give `group_by` too, e.g. group_by=service.namespace&expand=payments".into(),
                    ));
                }
                None
            }
            Some(key) if NODE_ATTRIBUTE_KEYS.contains(&key) => {
                let expand: Vec<String> = self
                    .expand
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect();
                if expand.len() > MAX_EXPANDED {
                    return Err(ApiError::BadRequest(format!(
                        "`expand` opens at most {MAX_EXPANDED} groups: to see every node, leave out `group_by`"
                    )));
                }
                Some(GroupBy {
                    key: key.to_string(),
                    expand,
                })
            }
            Some(key) => {
                return Err(ApiError::BadRequest(format!(
                    "`group_by`: nodes carry no attribute `{key}`; use one of {}",
                    NODE_ATTRIBUTE_KEYS.join(", ")
                )));
            }
        };
        Ok(GraphFilter {
            kinds,
            group_by,
            min_calls: self.min_calls.unwrap_or(0),
            focus,
            top: match self.top {
                Some(n) => Some((positive("top", Some(n), n)?, rank)),
                None => None,
            },
            max_nodes: positive("max_nodes", self.max_nodes, DEFAULT_MAX_NODES)?,
            max_edges: positive("max_edges", self.max_edges, DEFAULT_MAX_EDGES)?,
        })
    }
}

/// Answers smaller than this are sent as they are.
const COMPRESS_ABOVE: usize = 1_024;

pub async fn get_graph(
    Reader(caller): Reader,
    Query(params): Query<GraphParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let graph = caller.view.graph.clone();
    let asked = Asked::of(&graph, params.from.as_deref(), params.to.as_deref())?;
    let filter = params.filter()?;
    // Judged and written off the runtime: at 100,000 edges the text is tens of megabytes.
    let text = tokio::task::spawn_blocking(move || {
        if let Some(focus) = &filter.focus
            && !asked.shared_now(&graph)
        {
            return around_text(&graph, &asked, focus, &filter);
        }
        let snapshot = asked.judged(&graph)?;
        let filtered = flowscope_graph::filter(&snapshot, &filter)
            .map_err(|error| ApiError::NotFound(error.to_string()))?;
        Ok::<_, ApiError>(filtered_text(&filtered))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    json_answer(text, &headers).await
}

/// A JSON answer that a client can cache and revalidate (a strong ETag: a hash of the
/// text; 304 when `If-None-Match` has it) and that is gzipped when the client accepts it.
pub(crate) async fn json_answer(text: String, headers: &HeaderMap) -> Result<Response, ApiError> {
    let etag = format!(
        "\"{:016x}\"",
        twox_hash::XxHash3_64::oneshot(text.as_bytes())
    );
    let revalidated = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let common = [
        (header::ETAG, etag),
        (header::VARY, "accept-encoding".to_string()),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if revalidated {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let gzip = text.len() > COMPRESS_ABOVE
        && headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f64>().ok())
                        == Some(0.0)
                });
                name.eq_ignore_ascii_case("gzip") && !refused
            });
    if !gzip {
        return Ok(([(header::CONTENT_TYPE, "application/json")], common, text).into_response());
    }
    // The fastest level: most of the size goes at a fraction of the time of the default.
    let body = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 8),
            flate2::Compression::fast(),
        );
        encoder.write_all(text.as_bytes())?;
        encoder.finish()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("could not gzip the answer: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_ENCODING, "gzip"),
        ],
        common,
        body,
    )
        .into_response())
}

/// `GET /api/graph/blast_radius` and `/api/graph/dependencies`.
#[derive(Debug, Deserialize)]
pub struct ReachParams {
    node: Option<String>,
    hops: Option<usize>,
    from: Option<String>,
    to: Option<String>,
}

/// The most links a question follows (as in SQL).
const MAX_REACH_HOPS: usize = 32;

#[derive(Serialize)]
struct ReachJson<'a> {
    node: &'a str,
    kind: &'static str,
    hops: usize,
    via: &'a str,
    calls: u64,
    errors: u64,
}

async fn reach_answer(
    caller: &crate::auth::Caller,
    params: ReachParams,
    headers: &HeaderMap,
    up: bool,
) -> Result<Response, ApiError> {
    let Some(node) = params.node else {
        return Err(ApiError::BadRequest(
            "give the node with `node`, e.g. ?node=checkout&hops=2".into(),
        ));
    };
    let hops = params.hops.unwrap_or(2);
    if !(1..=MAX_REACH_HOPS).contains(&hops) {
        return Err(ApiError::BadRequest(format!(
            "`hops` is from 1 to {MAX_REACH_HOPS}"
        )));
    }
    let graph = caller.view.graph.clone();
    let asked = Asked::of(&graph, params.from.as_deref(), params.to.as_deref())?;
    let text = tokio::task::spawn_blocking(move || {
        // Who is within `hops` of the node needs only that part of the window, unless a
        // judged snapshot of it is shared already (as for `focus`).
        let snapshot = if asked.shared_now(&graph) {
            asked.judged(&graph)?
        } else {
            let focus = Focus {
                node: node.clone(),
                hops,
                direction: if up { Direction::Up } else { Direction::Down },
            };
            let around = graph
                .judged_around(asked.from, asked.to, &focus)?
                .ok_or_else(|| {
                    ApiError::NotFound(FilterError::UnknownNode(node.clone()).to_string())
                })?;
            Arc::new(around.snapshot)
        };
        let found = if up {
            flowscope_graph::blast_radius(&snapshot, &node, hops)
        } else {
            flowscope_graph::dependencies(&snapshot, &node, hops)
        }
        .map_err(|error| ApiError::NotFound(error.to_string()))?;
        let rows: Vec<ReachJson> = found
            .iter()
            .map(|r| ReachJson {
                node: &r.node,
                kind: r.kind.as_str(),
                hops: r.hops,
                via: &r.via,
                calls: r.calls,
                errors: r.errors,
            })
            .collect();
        let key = if up { "callers" } else { "dependencies" };
        Ok::<_, ApiError>(
            json!({
                "from": nanos_json(snapshot.from_ns),
                "to": nanos_json(snapshot.to_ns),
                "node": node,
                "hops": hops,
                key: rows,
            })
            .to_string(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    json_answer(text, headers).await
}

/// Who calls `node`, directly or through others: what is at stake if it fails.
pub async fn get_blast_radius(
    Reader(caller): Reader,
    Query(params): Query<ReachParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reach_answer(&caller, params, &headers, true).await
}

/// What `node` calls, directly or through others.
pub async fn get_dependencies(
    Reader(caller): Reader,
    Query(params): Query<ReachParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reach_answer(&caller, params, &headers, false).await
}

/// `GET /api/graph/paths`.
#[derive(Debug, Deserialize)]
pub struct PathsParams {
    from_node: Option<String>,
    to_node: Option<String>,
    max_hops: Option<usize>,
    from: Option<String>,
    to: Option<String>,
}

/// The longest path looked for (as in SQL).
const MAX_PATH_HOPS: usize = 10;

/// The simple paths from `from_node` to `to_node`, busiest first.
pub async fn get_paths(
    Reader(caller): Reader,
    Query(params): Query<PathsParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (Some(from_node), Some(to_node)) = (params.from_node, params.to_node) else {
        return Err(ApiError::BadRequest(
            "give both ends with `from_node` and `to_node`, e.g. ?from_node=frontend&to_node=payments&max_hops=4".into(),
        ));
    };
    let hops = params.max_hops.unwrap_or(4);
    if !(1..=MAX_PATH_HOPS).contains(&hops) {
        return Err(ApiError::BadRequest(format!(
            "`max_hops` is from 1 to {MAX_PATH_HOPS}"
        )));
    }
    let graph = caller.view.graph.clone();
    let asked = Asked::of(&graph, params.from.as_deref(), params.to.as_deref())?;
    let text = tokio::task::spawn_blocking(move || {
        let snapshot = asked.judged(&graph)?;
        let found = flowscope_graph::paths(&snapshot, &from_node, &to_node, hops)
            .map_err(|error| ApiError::NotFound(error.to_string()))?;
        let paths: Vec<Value> = found
            .iter()
            .map(|p| {
                json!({
                    "nodes": p.nodes,
                    "hops": p.nodes.len() - 1,
                    "calls": p.calls,
                    "errors": p.errors,
                    "p99_ms": p.p99_ms,
                })
            })
            .collect();
        Ok::<_, ApiError>(
            json!({
                "from": nanos_json(snapshot.from_ns),
                "to": nanos_json(snapshot.to_ns),
                "from_node": from_node,
                "to_node": to_node,
                "paths": paths,
            })
            .to_string(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    json_answer(text, &headers).await
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
///
/// It takes `/api/graph`'s filters (not its window: the stream is the live window): every
/// snapshot is filtered before it is compared, so deltas are those of what is shown. A
/// `focus` not in the graph yet gives an empty graph until it appears.
pub async fn stream(
    State(state): State<ApiState>,
    Reader(caller): Reader,
    Query(params): Query<GraphParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if params.from.is_some() || params.to.is_some() {
        return Err(ApiError::BadRequest(
            "the stream is the live window: leave out `from` and `to` (GET /api/graph answers any window)".into(),
        ));
    }
    let filter = Arc::new(params.filter()?);
    let graph = caller.view.graph.clone();
    let session = caller.session.map(|key| (state.sessions.clone(), key));
    let events = futures::stream::unfold(
        (None::<Arc<Snapshot>>, graph, session),
        move |(previous, graph, session)| {
            let filter = filter.clone();
            async move {
                loop {
                    if previous.is_some() {
                        tokio::time::sleep(STREAM_PERIOD).await;
                    }
                    if let Some((sessions, key)) = &session
                        && !sessions.is_live(key, Instant::now())
                    {
                        return None;
                    }
                    let (reader, filter) = (graph.clone(), filter.clone());
                    let next = match tokio::task::spawn_blocking(move || {
                        let live = reader.live_shared();
                        flowscope_graph::filter(&live, &filter).unwrap_or_else(|_| Filtered {
                            snapshot: Snapshot {
                                from_ns: live.from_ns,
                                to_ns: live.to_ns,
                                ..Snapshot::default()
                            },
                            total_nodes: live.nodes.len(),
                            total_edges: live.edges.len(),
                            truncated: false,
                        })
                    })
                    .await
                    {
                        Ok(next) => next,
                        Err(_) => return None,
                    };
                    let event = match &previous {
                        None => Event::default()
                            .event("snapshot")
                            .data(filtered_text(&next)),
                        Some(previous) => {
                            let change = delta(previous, &next.snapshot);
                            if change.is_empty() {
                                continue;
                            }
                            Event::default()
                                .event("delta")
                                .data(delta_json(&change).to_string())
                        }
                    };
                    return Some((Ok(event), (Some(Arc::new(next.snapshot)), graph, session)));
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn figures_are_written_to_the_microsecond_and_a_missing_one_stays_missing() {
        assert_eq!(micros(2.372265231759661), 2.372);
        assert_eq!(micros(0.0004), 0.0);
        assert!(micros(f64::NAN).is_nan());
        assert_eq!(ratio(1.0 / 3.0), 0.333333);
        assert_eq!(
            serde_json::to_string(&serde_json::json!(micros(1.5))).unwrap(),
            "1.5"
        );
    }

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
    /// them (the `Value` tree it replaced is spelled out here), and the filter's two.
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
                attributes: Default::default(),
                group: None,
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
                nodes: vec!["checkout".into(), "inventory".into()].into(),
                edges: vec![
                    ("checkout".into(), "inventory".into()),
                    ("inventory".into(), "checkout".into()),
                ]
                .into(),
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
        let filtered = Filtered {
            snapshot: snapshot.clone(),
            total_nodes: 7,
            total_edges: 9,
            truncated: true,
        };
        let mut written: Value = serde_json::from_str(&filtered_text(&filtered)).unwrap();
        let written_map = written.as_object_mut().unwrap();
        assert_eq!(written_map.remove("truncated"), Some(json!(true)));
        assert_eq!(
            written_map.remove("totals"),
            Some(json!({"nodes": 7, "edges": 9}))
        );
        assert_eq!(written, expected);
        assert_eq!(
            json!(NodeJson::from(&snapshot.nodes[0])),
            expected["nodes"][0]
        );
        assert_eq!(edge_json(&snapshot.edges[0]), expected["edges"][0]);
    }
}
