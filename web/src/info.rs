//! `GET /api/info`: what the dashboard needs to know about this server, such as where to
//! send traces (shown on the empty page) and how far back the live graph reaches.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::ApiState;
use crate::auth::Reader;
use crate::error::ApiError;

/// Facts about the running server, fixed at start.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// The bound OTLP/gRPC address (a configured port 0 shows as the port picked).
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// The bound OTLP/HTTP address; traces go to `POST /v1/traces` on it.
    pub otlp_http_addr: Option<SocketAddr>,
    /// How far back the live graph answers `/api/graph`.
    pub graph_horizon: Duration,
    /// Where users reach this server (`--external-url`, else the API address): the base of
    /// links in alert notifications.
    pub external_url: Option<String>,
    /// This node's id (`DATA_DIR/node-id`), as `GET /api/cluster` names it.
    pub node: Option<String>,
}

pub async fn get_info(State(state): State<ApiState>, Reader(_): Reader) -> Json<Value> {
    Json(info_json(&state.info))
}

/// `GET /api/cluster`: the nodes registered in the metadata database, with their roles,
/// addresses and state (`up`, `stale`: no heartbeat for 15 s, `left`: stopped cleanly), and
/// which one answers.
pub async fn get_cluster(
    State(state): State<ApiState>,
    Reader(_): Reader,
) -> Result<Json<Value>, ApiError> {
    let nodes = flowscope_query::membership::list(state.metadata.db())
        .await
        .map_err(|error| ApiError::Alert(error.into()))?;
    let leases = flowscope_query::partitions::list(state.metadata.db())
        .await
        .map_err(|error| ApiError::Alert(error.into()))?;
    let now = flowscope_base::clock::now_ns();
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    let held_by = |node: &str| {
        leases
            .iter()
            .filter(|lease| lease.owner.as_deref() == Some(node) && lease.held_at(now))
            .count()
    };
    Ok(Json(json!({
        "this_node": state.info.node,
        "heartbeat_s": flowscope_query::membership::HEARTBEAT.as_secs(),
        "stale_after_s": flowscope_query::membership::STALE_AFTER.as_secs(),
        "nodes": nodes.iter().map(|node| json!({
            "node": node.node,
            "roles": node.roles.split(',').collect::<Vec<_>>(),
            "otlp_grpc_addr": node.otlp_grpc,
            "otlp_http_addr": node.otlp_http,
            "api_addr": node.api,
            "version": node.version,
            "started_ms": ms(node.started_ns),
            "last_heartbeat_ms": ms(node.heartbeat_ns),
            "left_ms": node.left_ns.map(ms),
            "state": node.state(now).name(),
            "partitions": held_by(&node.node),
            "unflushed_spans": node.unflushed_spans,
            // Acknowledged by a node that stopped heartbeating and not flushed: not lost
            // (its WAL has them), unavailable to queries until it returns.
            "unavailable_spans": match node.state(now) {
                flowscope_query::membership::NodeState::Stale => node.unflushed_spans,
                _ => 0,
            },
        })).collect::<Vec<_>>(),
        "partition_count": flowscope_query::partitions::PARTITIONS,
        "lease_s": flowscope_query::partitions::LEASE.as_secs(),
        // Who holds each partition; `held: false` is one whose lease ended (its last holder
        // is named: its unflushed spans are on that node).
        "partitions": leases.iter().map(|lease| json!({
            "partition": lease.part,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "held": lease.held_at(now),
            "lease_until_ms": (lease.until_ns > 0).then(|| ms(lease.until_ns)),
        })).collect::<Vec<_>>(),
    })))
}

fn info_json(info: &ServerInfo) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "otlp_grpc_addr": info.otlp_grpc_addr.map(|a| a.to_string()),
        "otlp_http_addr": info.otlp_http_addr.map(|a| a.to_string()),
        "otlp_http_path": "/v1/traces",
        "graph_horizon_s": info.graph_horizon.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_bound_addresses() {
        let info = ServerInfo {
            otlp_grpc_addr: Some(([127, 0, 0, 1], 4317).into()),
            otlp_http_addr: Some(([0, 0, 0, 0], 4318).into()),
            graph_horizon: Duration::from_secs(3600),
            external_url: None,
            node: None,
        };
        let value = info_json(&info);
        assert_eq!(value["otlp_grpc_addr"], "127.0.0.1:4317");
        assert_eq!(value["otlp_http_addr"], "0.0.0.0:4318");
        assert_eq!(value["graph_horizon_s"], 3600);
    }
}
