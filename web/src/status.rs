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

use flowscope_base::liveness::{Liveness, Stage};
use flowscope_base::memory::MemoryBudget;
use serde_json::{Map, Value, json};

use flowscope_base::telemetry::{DURATION_BUCKETS, Histogram, Telemetry};

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
            "pending_flushes",
            Gauge,
            "Memtables sealed and waiting to be written to Parquet (uploaded, with --object-store): how far behind flushes are.",
            store.pending_flushes,
        ),
        figure(
            "cache",
            "hits",
            Counter,
            "Reads of Parquet in object storage answered from the local disk cache (shared by all tenants).",
            store.cache.hits,
        ),
        figure(
            "cache",
            "misses",
            Counter,
            "Reads of Parquet that went to object storage (shared by all tenants).",
            store.cache.misses,
        ),
        figure(
            "cache",
            "bytes",
            Gauge,
            "Bytes of Parquet files held in the local disk cache (shared by all tenants).",
            store.cache.bytes,
        ),
        figure(
            "cache",
            "capacity_bytes",
            Gauge,
            "The local disk cache's bound, --cache-size (0: no cache).",
            store.cache.capacity,
        ),
        figure(
            "object_store",
            "get_requests",
            Counter,
            "GET requests sent to object storage, whole or ranged (shared by all tenants; reads the local cache answers are not counted).",
            store.requests.gets,
        ),
        figure(
            "object_store",
            "put_requests",
            Counter,
            "PUT requests (and multipart uploads) sent to object storage (shared by all tenants).",
            store.requests.puts,
        ),
        figure(
            "object_store",
            "delete_requests",
            Counter,
            "Objects deleted in object storage (shared by all tenants).",
            store.requests.deletes,
        ),
        figure(
            "object_store",
            "list_requests",
            Counter,
            "LIST requests sent to object storage (shared by all tenants).",
            store.requests.lists,
        ),
        figure(
            "object_store",
            "head_requests",
            Counter,
            "HEAD requests sent to object storage (shared by all tenants).",
            store.requests.heads,
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
/// `_total`; then the labelled families of [`Telemetry`] (the caller's tenant's series
/// only) and `flowscope_build_info`.
pub async fn get_metrics(
    State(state): State<ApiState>,
    Reader(caller): Reader,
) -> impl IntoResponse {
    let mut text = String::new();
    labelled_families(
        &mut text,
        &state.telemetry,
        caller.principal.tenant.as_str(),
    );
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

/// `{name="value",...}` with values escaped as the text format asks (backslash, quote,
/// newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

fn counter_family<K>(
    text: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (K, u64)>,
    label_pairs: impl Fn(&K) -> Vec<(&'static str, String)>,
) {
    header(text, name, "counter", help);
    for (key, value) in samples {
        let pairs = label_pairs(&key);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        text.push_str(&format!("{name}{} {value}\n", labels(&pairs)));
    }
}

fn histogram_family(text: &mut String, name: &str, help: &str, samples: &[(String, Histogram)]) {
    header(text, name, "histogram", help);
    for (tenant, histogram) in samples {
        for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.cumulative()) {
            let le = bound.to_string();
            text.push_str(&format!(
                "{name}_bucket{} {count}\n",
                labels(&[("tenant", tenant), ("le", &le)])
            ));
        }
        text.push_str(&format!(
            "{name}_bucket{} {}\n",
            labels(&[("tenant", tenant), ("le", "+Inf")]),
            histogram.count
        ));
        let tenant = labels(&[("tenant", tenant)]);
        text.push_str(&format!("{name}_sum{tenant} {}\n", histogram.sum_seconds));
        text.push_str(&format!("{name}_count{tenant} {}\n", histogram.count));
    }
}

/// The labelled families: ingest by protocol and outcome, SQL, alert evaluation and webhook
/// delivery, each by tenant and only `tenant`'s series; requests refused before any tenant
/// was known (they hold no tenant's data); and the build.
fn labelled_families(text: &mut String, telemetry: &Telemetry, tenant: &str) {
    let ingest = |counters: &flowscope_base::telemetry::Counters<_>| {
        counters
            .snapshot()
            .into_iter()
            .filter(|((t, _, _), _): &((String, &str, &str), u64)| t == tenant)
            .collect::<Vec<_>>()
    };
    let ingest_labels = |(t, protocol, outcome): &(String, &str, &str)| {
        vec![
            ("tenant", t.clone()),
            ("protocol", protocol.to_string()),
            ("outcome", outcome.to_string()),
        ]
    };
    counter_family(
        text,
        "flowscope_ingest_requests_total",
        "OTLP export requests answered, by tenant, protocol (grpc, http) and outcome (accepted, partial, invalid, too_large, rate_limited, refused, failed).",
        ingest(&telemetry.ingest_requests),
        ingest_labels,
    );
    counter_family(
        text,
        "flowscope_ingest_spans_total",
        "Spans of decoded export requests, by tenant, protocol and outcome (accepted, rejected in the partial success, refused with their request).",
        ingest(&telemetry.ingest_spans),
        ingest_labels,
    );
    counter_family(
        text,
        "flowscope_ingest_unattributed_requests_total",
        "OTLP export requests refused before their tenant was known, by protocol and outcome (unauthenticated, forbidden, invalid).",
        telemetry.ingest_unattributed.snapshot(),
        |(protocol, outcome)| {
            vec![
                ("protocol", protocol.to_string()),
                ("outcome", outcome.to_string()),
            ]
        },
    );
    let by_outcome = |counters: &flowscope_base::telemetry::Counters<(String, &'static str)>| {
        counters
            .snapshot()
            .into_iter()
            .filter(|((t, _), _)| t == tenant)
            .collect::<Vec<_>>()
    };
    let outcome_labels = |(t, outcome): &(String, &str)| {
        vec![("tenant", t.clone()), ("outcome", outcome.to_string())]
    };
    let own = |histograms: &flowscope_base::telemetry::Histograms<String>| {
        histograms
            .snapshot()
            .into_iter()
            .filter(|(t, _)| t == tenant)
            .collect::<Vec<_>>()
    };
    let queries = by_outcome(&telemetry.sql_queries);
    let errors: u64 = queries
        .iter()
        .filter(|((_, outcome), _)| *outcome != "ok")
        .map(|(_, n)| n)
        .sum();
    counter_family(
        text,
        "flowscope_sql_queries_total",
        "POST /api/sql queries answered, by tenant and outcome (ok, invalid, not_allowed, too_expensive, busy, failed).",
        queries,
        outcome_labels,
    );
    counter_family(
        text,
        "flowscope_sql_query_errors_total",
        "POST /api/sql queries that did not answer ok, by tenant.",
        [(tenant.to_string(), errors)],
        |t| vec![("tenant", t.clone())],
    );
    histogram_family(
        text,
        "flowscope_sql_query_duration_seconds",
        "Time from a POST /api/sql request to its answer (or the first part of a streamed one), by tenant.",
        &own(&telemetry.sql_duration),
    );
    let evaluations = by_outcome(&telemetry.alert_evaluations);
    let failures: u64 = evaluations
        .iter()
        .filter(|((_, outcome), _)| *outcome != "ok")
        .map(|(_, n)| n)
        .sum();
    counter_family(
        text,
        "flowscope_alert_evaluations_total",
        "Alert rule evaluations, by tenant and outcome (ok, failed).",
        evaluations,
        outcome_labels,
    );
    counter_family(
        text,
        "flowscope_alert_evaluation_failures_total",
        "Alert rule evaluations that failed (the rule's SQL or recording its state), by tenant.",
        [(tenant.to_string(), failures)],
        |t| vec![("tenant", t.clone())],
    );
    histogram_family(
        text,
        "flowscope_alert_evaluation_duration_seconds",
        "Time to evaluate an alert rule and commit its state, by tenant.",
        &own(&telemetry.alert_duration),
    );
    counter_family(
        text,
        "flowscope_webhook_delivery_attempts_total",
        "Webhook delivery attempts, by tenant and outcome (delivered, retry, failed).",
        by_outcome(&telemetry.webhook_attempts),
        outcome_labels,
    );
    histogram_family(
        text,
        "flowscope_webhook_delivery_duration_seconds",
        "Time of one webhook delivery attempt, connect to answer, by tenant.",
        &own(&telemetry.webhook_duration),
    );
    header(
        text,
        "flowscope_build_info",
        "gauge",
        "The running build: always 1, with its version and compiler as labels.",
    );
    text.push_str(&format!(
        "flowscope_build_info{} 1\n",
        labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("rustc", env!("FLOWSCOPE_RUSTC_VERSION")),
        ])
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_asks() {
        assert_eq!(
            labels(&[("tenant", "a\"b\\c\nd"), ("le", "+Inf")]),
            "{tenant=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"}"
        );
    }

    #[test]
    fn a_caller_sees_its_own_tenants_series_only() {
        let telemetry = Telemetry::default();
        telemetry
            .ingest_requests
            .add(("acme".into(), "grpc", "accepted"), 2);
        telemetry
            .ingest_requests
            .add(("globex".into(), "http", "accepted"), 5);
        telemetry
            .sql_duration
            .observe("acme".into(), std::time::Duration::from_millis(30));
        let mut text = String::new();
        labelled_families(&mut text, &telemetry, "acme");
        assert!(text.contains(
            "flowscope_ingest_requests_total{tenant=\"acme\",protocol=\"grpc\",outcome=\"accepted\"} 2\n"
        ));
        assert!(!text.contains("globex"), "{text}");
        assert!(text.contains(
            "flowscope_sql_query_duration_seconds_bucket{tenant=\"acme\",le=\"0.05\"} 1\n"
        ));
        assert!(text.contains("flowscope_sql_query_duration_seconds_count{tenant=\"acme\"} 1\n"));
        assert!(text.contains("flowscope_build_info{version=\""), "{text}");
    }
}
