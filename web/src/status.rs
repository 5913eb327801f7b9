//! `GET /api/status` (JSON) and `GET /metrics` (Prometheus text format): what the store and
//! the live graph are doing, from the same counters. The caller's tenant's figures, plus a
//! `process` section for what all tenants share (the memory ceiling, the listeners'
//! connections, the errors background stages survived) and an `api` section (failed and
//! throttled logins); it holds no tenant's data, only sizes and refusal counts.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::atomic::{AtomicU64, Ordering};

use flowscope_model::liveness::{Liveness, Stage};
use flowscope_model::memory::MemoryBudget;
use serde_json::{Map, Value, json};

use crate::auth::{LoginThrottle, Reader};
use crate::connections::Connections;
use crate::{ApiState, TenantView};

#[derive(Clone, Copy, PartialEq)]
enum Type {
    Counter,
    Gauge,
}

/// One figure: its JSON section and key, its metric name, type and help text.
struct Figure {
    section: &'static str,
    key: &'static str,
    kind: Type,
    help: &'static str,
    value: u64,
}

/// The memory ceiling's figures, shared by every tenant of the process.
fn process_figures(memory: &MemoryBudget) -> Vec<Figure> {
    let memory = memory.figures();
    let figure = |key, kind, help, value| Figure {
        section: "process",
        key,
        kind,
        help,
        value,
    };
    use Type::{Counter, Gauge};
    vec![
        figure(
            "memory_limit_bytes",
            Gauge,
            "The memory ceiling (--memory-limit).",
            memory.memory_limit,
        ),
        figure(
            "rss_high_water_bytes",
            Gauge,
            "Resident memory above which requests are let in one at a time.",
            memory.high_water,
        ),
        figure(
            "rss_bytes",
            Gauge,
            "Resident memory at the last sample.",
            memory.rss,
        ),
        figure(
            "peak_rss_bytes",
            Gauge,
            "Highest resident memory sampled since start.",
            memory.peak_rss,
        ),
        figure(
            "request_budget_bytes",
            Gauge,
            "Bytes OTLP requests being read and decoded may hold together.",
            memory.in_flight_limit,
        ),
        figure(
            "request_bytes",
            Gauge,
            "Bytes OTLP requests being read and decoded hold now.",
            memory.in_flight_bytes,
        ),
        figure(
            "ingest_buffer_bytes",
            Gauge,
            "Bytes of spans every tenant's store may hold in memory together (--ingest-buffer).",
            memory.ingest_buffer_limit,
        ),
        figure(
            "ingest_buffered_bytes",
            Gauge,
            "Bytes of spans all stores hold in memory now.",
            memory.ingest_buffered_bytes,
        ),
        figure(
            "refused_request_budget",
            Counter,
            "Requests refused (503 / UNAVAILABLE) because the request budget was spent.",
            memory.refused_in_flight,
        ),
        figure(
            "refused_rss",
            Counter,
            "Requests refused (503 / UNAVAILABLE) because resident memory was over the high-water mark.",
            memory.refused_rss,
        ),
        figure(
            "refused_ingest_buffer",
            Counter,
            "Writes refused (503 / UNAVAILABLE) because the ingest buffer was full.",
            memory.refused_ingest_buffer,
        ),
    ]
}

/// One listener's figure keys, spelled out because a figure's key is a `&'static str`.
struct ListenerKeys {
    open: &'static str,
    limit: &'static str,
    refused: &'static str,
    accept_errors: &'static str,
    header_read_timeouts: &'static str,
    idle_timeouts: &'static str,
    request_body_timeouts: &'static str,
}

macro_rules! listener_keys {
    ($listener:literal) => {
        ListenerKeys {
            open: concat!($listener, "_connections_open"),
            limit: concat!($listener, "_connection_limit"),
            refused: concat!($listener, "_connections_refused"),
            accept_errors: concat!($listener, "_accept_errors"),
            header_read_timeouts: concat!($listener, "_header_read_timeouts"),
            idle_timeouts: concat!($listener, "_idle_timeouts"),
            request_body_timeouts: concat!($listener, "_request_body_timeouts"),
        }
    };
}

/// Every listener's connections: open, cap, refused, and closed by each timeout. gRPC has no
/// header-read or body timeout (HTTP/2 keepalive and the idle timeout cover it).
fn connection_figures(connections: &Connections) -> Vec<Figure> {
    use Type::{Counter, Gauge};
    let listeners = [
        (listener_keys!("otlp_grpc"), &connections.otlp_grpc, false),
        (listener_keys!("otlp_http"), &connections.otlp_http, true),
        (listener_keys!("api"), &connections.api, true),
    ];
    let mut figures = Vec::new();
    for (keys, counters, http) in listeners {
        let mut figure = |key, kind, help, value: &AtomicU64| {
            figures.push(Figure {
                section: "process",
                key,
                kind,
                help,
                value: value.load(Ordering::Relaxed),
            })
        };
        figure(keys.open, Gauge, "Connections open now.", &counters.open);
        figure(
            keys.limit,
            Gauge,
            "Most connections the listener holds at once (--max-connections).",
            &counters.limit,
        );
        figure(
            keys.refused,
            Counter,
            "Connections closed at once because the listener was at its cap.",
            &counters.refused,
        );
        figure(
            keys.accept_errors,
            Counter,
            "Accepts that failed for lack of descriptors or memory.",
            &counters.accept_errors,
        );
        figure(
            keys.idle_timeouts,
            Counter,
            "Connections closed after no byte moved either way for --idle-timeout.",
            &counters.idle_timeouts,
        );
        if http {
            figure(
                keys.header_read_timeouts,
                Counter,
                "Connections closed because a request head did not arrive within --header-read-timeout.",
                &counters.header_read_timeouts,
            );
            figure(
                keys.request_body_timeouts,
                Counter,
                "Requests answered 408 because their body did not arrive within --request-body-timeout.",
                &counters.request_body_timeouts,
            );
        }
    }
    figures
}

/// The background stages' figures, shared by every tenant of the process.
fn liveness_figures(liveness: &Liveness) -> Vec<Figure> {
    let mut figures: Vec<Figure> = Stage::ALL
        .into_iter()
        .map(|stage| Figure {
            section: "process",
            key: stage.errors_key(),
            kind: Type::Counter,
            help: stage_errors_help(stage),
            value: liveness.errors(stage),
        })
        .collect();
    figures.push(Figure {
        section: "process",
        key: "stages_stopped",
        kind: Type::Gauge,
        help: "Background stages that stopped while the server runs (/healthz answers 503).",
        value: liveness.stopped_count(),
    });
    figures
}

fn stage_errors_help(stage: Stage) -> &'static str {
    match stage {
        Stage::RssWatchdog => "Failed reads of /proc/self/status by the RSS watchdog (retried).",
        Stage::WalWriter => "WAL group commits and seals that failed (refused or retried).",
        Stage::Flusher => {
            "Parquet flushes, WAL deletions and retention deletions that failed (retried)."
        }
        Stage::Graph => "Errors the graph stages survived.",
        Stage::GraphKeeper => {
            "Graph buckets that could not be kept on disk, and failed retention of them."
        }
        Stage::AlertScheduler => {
            "Alert rule reads, failure records and evaluations that failed or panicked."
        }
        Stage::WebhookDelivery => "Outbox reads that failed and delivery tasks that panicked.",
    }
}

/// Login and bearer token figures, for the whole process (a failed login has no tenant).
fn login_figures(logins: &LoginThrottle) -> Vec<Figure> {
    let figure = |key, help, value: &AtomicU64| Figure {
        section: "api",
        key,
        kind: Type::Counter,
        help,
        value: value.load(Ordering::Relaxed),
    };
    vec![
        figure(
            "failed_logins",
            "POST /api/login with a token that is not valid (401).",
            &logins.failed_logins,
        ),
        figure(
            "failed_bearer_tokens",
            "API requests with a bearer token that is not valid (401).",
            &logins.failed_bearer_tokens,
        ),
        figure(
            "throttled_logins",
            "POST /api/login refused 429: too many failures from the address or logins of the tenant.",
            &logins.throttled_logins,
        ),
        figure(
            "throttled_bearer_tokens",
            "API requests with a bearer token refused 429: too many bad tokens from the address.",
            &logins.throttled_bearer_tokens,
        ),
    ]
}

fn figures(view: &TenantView, state: &ApiState) -> Vec<Figure> {
    let mut figures = tenant_figures(view);
    figures.extend(process_figures(&state.memory));
    figures.extend(connection_figures(&state.connections));
    figures.extend(liveness_figures(&state.liveness));
    figures.extend(login_figures(&state.logins));
    figures
}

fn tenant_figures(view: &TenantView) -> Vec<Figure> {
    let store = view.engine.store().stats();
    let (graph, graph_bytes) = view.graph.counters();
    let (from_kept, from_spans) = view.graph.history_counters();
    let figure = |section, key, kind, help, value| Figure {
        section,
        key,
        kind,
        help,
        value,
    };
    use Type::{Counter, Gauge};
    vec![
        figure(
            "store",
            "spans_written",
            Counter,
            "Spans made durable since start.",
            store.spans_written,
        ),
        figure(
            "store",
            "spans_in_memory",
            Gauge,
            "Spans in the memtable, not yet in Parquet.",
            store.spans_in_memory,
        ),
        figure(
            "store",
            "buffered_bytes",
            Gauge,
            "Bytes of spans held in memory (the ingest budget counts these).",
            store.buffered_bytes,
        ),
        figure(
            "store",
            "segments",
            Gauge,
            "Parquet segment files.",
            store.segments,
        ),
        figure(
            "store",
            "segment_bytes",
            Gauge,
            "Bytes of Parquet segment files.",
            store.segment_bytes,
        ),
        figure(
            "store",
            "spans_in_segments",
            Gauge,
            "Spans in Parquet segment files.",
            store.spans_in_segments,
        ),
        figure(
            "store",
            "replayed_wal_records",
            Counter,
            "WAL records replayed at start.",
            store.replayed_records,
        ),
        figure(
            "graph",
            "spans_seen",
            Counter,
            "Spans the live graph took in.",
            graph.spans_seen,
        ),
        figure(
            "graph",
            "rows_rejected",
            Counter,
            "Rows that were not valid spans.",
            graph.rows_rejected,
        ),
        figure(
            "graph",
            "duplicate_spans",
            Counter,
            "Spans seen again while the first copy was pending (client retries).",
            graph.duplicate_spans,
        ),
        figure(
            "graph",
            "calls_inferred",
            Counter,
            "Calls added to edges.",
            graph.edges_inferred,
        ),
        figure(
            "graph",
            "virtual_calls",
            Counter,
            "Calls to database and external nodes.",
            graph.virtual_edges,
        ),
        figure(
            "graph",
            "pending_spans",
            Gauge,
            "Spans waiting in the pairing store.",
            graph.pending_spans,
        ),
        figure(
            "graph",
            "pending_traces",
            Gauge,
            "Traces with spans in the pairing store.",
            graph.pending_traces,
        ),
        figure(
            "graph",
            "unpaired_spans",
            Counter,
            "Spans whose other half never came within the pairing TTL.",
            graph.unpaired_expired,
        ),
        figure(
            "graph",
            "unplaced_spans",
            Counter,
            "Spans that gave no edge at all (nothing names their peer).",
            graph.unplaced,
        ),
        figure(
            "graph",
            "evicted_spans",
            Counter,
            "Spans finalized early because the pairing store was full.",
            graph.evicted,
        ),
        figure(
            "graph",
            "traces_finalized",
            Counter,
            "Traces finalized (idle for the pairing TTL, or evicted).",
            graph.traces_finalized,
        ),
        figure(
            "graph",
            "late_events",
            Counter,
            "Statistics older than the horizon already trimmed: dropped.",
            graph.late_events,
        ),
        figure(
            "graph",
            "buckets",
            Gauge,
            "Statistics buckets in memory.",
            graph.buckets,
        ),
        figure(
            "graph",
            "memory_bytes",
            Gauge,
            "Approximate heap bytes of the live graph.",
            graph_bytes as u64,
        ),
        figure(
            "graph",
            "old_windows_from_kept_buckets",
            Counter,
            "Windows past the horizon answered from buckets kept on disk.",
            from_kept,
        ),
        figure(
            "graph",
            "old_windows_rebuilt_from_spans",
            Counter,
            "Windows past the horizon rebuilt from stored spans.",
            from_spans,
        ),
    ]
}

/// `{"store": {...}, "graph": {...}, "process": {...}}`, every figure under its plain name.
/// The caller's tenant's figures.
pub async fn get_status(State(state): State<ApiState>, Reader(caller): Reader) -> Json<Value> {
    let mut sections: Map<String, Value> = Map::new();
    for figure in figures(&caller.view, &state) {
        let section = sections.entry(figure.section).or_insert_with(|| json!({}));
        section[figure.key] = json!(figure.value);
    }
    Json(Value::Object(sections))
}

/// The same figures as Prometheus metrics: `flowscope_<section>_<key>`, counters with
/// `_total`.
pub async fn get_metrics(
    State(state): State<ApiState>,
    Reader(caller): Reader,
) -> impl IntoResponse {
    let mut text = String::new();
    for figure in figures(&caller.view, &state) {
        let (kind, suffix) = match figure.kind {
            Type::Counter => ("counter", "_total"),
            Type::Gauge => ("gauge", ""),
        };
        let name = format!("flowscope_{}_{}{suffix}", figure.section, figure.key);
        text.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {}\n",
            figure.help, figure.value
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
