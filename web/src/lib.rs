//! The HTTP API on the API address: health, SQL, the graph and the dashboard.
//!
//! ```text
//!  GET  /, /assets/...  ──> the dashboard (static files embedded in the binary)
//!  GET  /api/info ──> where OTLP is received, how far back the live graph reaches
//!  GET  /healthz  ──> 200 once the store has replayed its WAL; 503 if a background stage stopped
//!  POST /api/sql  ──> SqlEngine ──> JSON {columns, rows, truncated} | CSV | Arrow IPC stream
//!  GET  /api/graph[/diff|/stream] ──> GraphView (live graph) ──> JSON | server-sent events
//!  GET  /api/graph/series ──> GraphView::element_series (one element's buckets) ──> JSON
//!  GET  /api/graph/{blast_radius,dependencies,paths} ──> flowscope_graph::reach ──> JSON
//!  GET  /api/traces/search ──> SQL over spans (built from the search, shown) ──> JSON traces
//!  GET  /api/status, /metrics ──> store and graph counters ──> JSON | Prometheus text
//!  /api/alert-rules[/{id}], GET /api/alerts ──> alert rules (SQL planned first) and state
//!  /api/webhooks[/{id}[/test|/deliveries]] ──> flowscope_alert::webhooks ──> SQLite metadata
//! ```
//!
//! JSON for the browser is made here and nowhere else; every error becomes
//! `{"error": "..."}` with a status chosen in exactly one place ([`error::ApiError`]).
//!
//! Every route states who may call it: `/healthz`, the dashboard's files and `/api/login`
//! are open; everything else takes a [`auth::Reader`] or [`auth::Manager`] extractor, which
//! answers 401/403 before the handler runs and gives it the caller's tenant's engine and
//! graph: a handler cannot reach another tenant's data because it is never handed it.

mod alerts;
mod assets;
pub mod auth;
pub mod connections;
pub mod error;
mod graph;
mod incidents;
mod info;
#[cfg(test)]
mod router_tests;
mod search;
mod search_sql;
mod series;
mod sql;
mod status;
mod webhooks;

pub use info::ServerInfo;
/// Bytes of a SQL answer kept before its headers are sent (the least `--sql-max-response`).
pub use sql::FIRST_PART as SQL_FIRST_PART;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;

use flowscope_auth::{Access, TenantId};
use flowscope_base::liveness::Liveness;
use flowscope_query::SqlEngine;
use flowscope_query::graph::GraphView;

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Rows a JSON answer may hold; more sets `"truncated": true`.
    pub max_json_rows: usize,
    /// Rows a CSV or Arrow answer may hold.
    pub max_export_rows: usize,
    /// Bytes one `/api/sql` answer may hold (`--sql-max-response`); the answer is cut at a
    /// whole row (JSON, CSV) or batch (Arrow) below it.
    pub max_response_bytes: usize,
    /// Accept webhooks whose URL is a loopback, private or link-local address
    /// (`--allow-private-webhooks`); the delivery worker applies the same rule when connecting.
    pub allow_private_webhooks: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_json_rows: 10_000,
            max_export_rows: 1_000_000,
            max_response_bytes: 256 << 20,
            allow_private_webhooks: false,
        }
    }
}

/// One tenant's data as the API reads it: its SQL engine (over its own store and graph
/// tables only) and its live graph.
#[derive(Debug, Clone)]
pub struct TenantView {
    pub engine: Arc<SqlEngine>,
    pub graph: GraphView,
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Every tenant's data; handlers see only the caller's, through [`auth::Caller`].
    pub tenants: Arc<BTreeMap<TenantId, TenantView>>,
    /// The tokens, or none (open: everyone is the default tenant's admin).
    pub access: Arc<Access>,
    /// The dashboard's logged-in sessions.
    pub sessions: auth::Sessions,
    pub config: ApiConfig,
    pub ready: Arc<AtomicBool>,
    pub info: ServerInfo,
    /// Webhooks, alert rules, alert state and the delivery outbox.
    pub metadata: flowscope_alert::Metadata,
    /// The process's memory ceiling, shared by every tenant: shown in the status figures.
    pub memory: Arc<flowscope_base::memory::MemoryBudget>,
    /// Every listener's connection counters, kept by the accept layer: shown in the status
    /// figures.
    pub connections: connections::Connections,
    /// The background stages: a stopped one fails `/healthz`; their errors are figures.
    pub liveness: Arc<Liveness>,
    /// Failed and throttled logins per client address and per tenant.
    pub logins: Arc<auth::LoginThrottle>,
    /// Ingest, SQL, alert evaluation and webhook delivery figures by tenant (`/metrics`).
    pub telemetry: Arc<flowscope_base::telemetry::Telemetry>,
}

/// SQL text is small; a larger body is a mistake or an attack.
const MAX_SQL_BODY: usize = 1 << 20;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/whoami", get(auth::whoami))
        .route("/api/status", get(status::get_status))
        .route("/metrics", get(status::get_metrics))
        .route("/api/info", get(info::get_info))
        .route("/api/cluster", get(info::get_cluster))
        .route("/api/graph", get(graph::get_graph))
        .route("/api/graph/diff", get(graph::get_diff))
        .route("/api/graph/stream", get(graph::stream))
        .route("/api/graph/series", get(series::get_series))
        .route("/api/graph/blast_radius", get(graph::get_blast_radius))
        .route("/api/graph/dependencies", get(graph::get_dependencies))
        .route("/api/graph/paths", get(graph::get_paths))
        .route("/api/incidents", get(incidents::get_incidents))
        .route("/api/traces/search", get(search::search_traces))
        .route(
            "/api/sql",
            post(sql::run_sql).layer(DefaultBodyLimit::max(MAX_SQL_BODY)),
        )
        .merge(alerts::routes())
        .merge(webhooks::routes())
        .merge(assets::routes())
        .with_state(state)
}

/// 200 `ok` once ready; 503 while starting, and for good once a background stage stopped
/// (returned or panicked) while the server runs, with a JSON body naming the stages (by
/// kind only: the endpoint is open, so no tenant is named; the log says which).
async fn healthz(State(state): State<ApiState>) -> Response {
    if !state.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    let stopped = state.liveness.stopped();
    if stopped.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let names: Vec<&str> = stopped.iter().map(|stage| stage.name()).collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({
            "status": "failing",
            "stopped": names,
            "error": format!(
                "background stages stopped: {}; the server's log says why; restart it",
                names.join(", ")
            ),
        })),
    )
        .into_response()
}
