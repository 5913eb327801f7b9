//! Membership: each process registers in the metadata database's `cluster_nodes` at start,
//! heartbeats every [`HEARTBEAT`] while it runs and marks itself left on a clean stop, so
//! every process on one database (PostgreSQL) can say which nodes there are and which are
//! alive (`GET /api/cluster`). The foundation of the cluster (issue 24): partitions will be
//! leased to the nodes listed here.

use std::time::Duration;

use sqlx::Row;

use crate::metadata::MetadataDb;

/// How often a running node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node whose last heartbeat is older than this is stale (stopped without saying so, or
/// cut off from the database).
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// One node's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    /// What it runs: `all` (every role) until roles can be split.
    pub roles: String,
    pub otlp_grpc: Option<String>,
    pub otlp_http: Option<String>,
    pub api: Option<String>,
    pub version: String,
    pub started_ns: i64,
    pub heartbeat_ns: i64,
    pub left_ns: Option<i64>,
    /// The spans it held unflushed at its last heartbeat.
    pub unflushed_spans: i64,
}

/// A node's state as of `now_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Up,
    /// No heartbeat for [`STALE_AFTER`].
    Stale,
    /// Stopped cleanly.
    Left,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Stale => "stale",
            Self::Left => "left",
        }
    }
}

impl NodeRecord {
    pub fn state(&self, now_ns: i64) -> NodeState {
        if self.left_ns.is_some() {
            return NodeState::Left;
        }
        let stale = i64::try_from(STALE_AFTER.as_nanos()).unwrap_or(i64::MAX);
        if now_ns.saturating_sub(self.heartbeat_ns) > stale {
            NodeState::Stale
        } else {
            NodeState::Up
        }
    }
}

/// Registers `record` (again, after a restart: the row is replaced, `left_ns` cleared).
pub async fn register(db: &MetadataDb, record: &NodeRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cluster_nodes (node, roles, otlp_grpc, otlp_http, api, version, started_ns, \
         heartbeat_ns, left_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) \
         ON CONFLICT (node) DO UPDATE SET roles = excluded.roles, \
         otlp_grpc = excluded.otlp_grpc, otlp_http = excluded.otlp_http, api = excluded.api, \
         version = excluded.version, started_ns = excluded.started_ns, \
         heartbeat_ns = excluded.heartbeat_ns, left_ns = NULL",
    )
    .bind(&record.node)
    .bind(&record.roles)
    .bind(&record.otlp_grpc)
    .bind(&record.otlp_http)
    .bind(&record.api)
    .bind(&record.version)
    .bind(record.started_ns)
    .bind(record.heartbeat_ns)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Writes `node`'s heartbeat, with the spans it holds unflushed.
pub async fn heartbeat(
    db: &MetadataDb,
    node: &str,
    now_ns: i64,
    unflushed_spans: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE cluster_nodes SET heartbeat_ns = $1, left_ns = NULL, unflushed_spans = $2 \
         WHERE node = $3",
    )
    .bind(now_ns)
    .bind(unflushed_spans)
    .bind(node)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Marks `node` left (a clean stop).
pub async fn leave(db: &MetadataDb, node: &str, now_ns: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE cluster_nodes SET left_ns = $1 WHERE node = $2")
        .bind(now_ns)
        .bind(node)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The cluster's shared secret: written once, at random, by the first node that asks;
/// every node reads the same one. Query workers refuse tasks that do not carry it.
pub async fn cluster_secret(db: &MetadataDb) -> Result<String, sqlx::Error> {
    let fresh: String = {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    };
    sqlx::query(
        "INSERT INTO cluster_settings (name, value) VALUES ('secret', $1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&fresh)
    .execute(db.pool())
    .await?;
    let row = sqlx::query("SELECT value FROM cluster_settings WHERE name = 'secret'")
        .fetch_one(db.pool())
        .await?;
    Ok(row.get(0))
}

/// Every node ever registered, by start time.
pub async fn list(db: &MetadataDb) -> Result<Vec<NodeRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT node, roles, otlp_grpc, otlp_http, api, version, started_ns, heartbeat_ns, \
         left_ns, unflushed_spans FROM cluster_nodes ORDER BY started_ns, node",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| NodeRecord {
            node: row.get(0),
            roles: row.get(1),
            otlp_grpc: row.get(2),
            otlp_http: row.get(3),
            api: row.get(4),
            version: row.get(5),
            started_ns: row.get(6),
            heartbeat_ns: row.get(7),
            left_ns: row.get(8),
            unflushed_spans: row.get(9),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nodes_register_heartbeat_leave_and_go_stale() {
        let db = MetadataDb::open_for_tests()
            .await
            .expect("metadata database");
        let second = 1_000_000_000i64;
        let record = |node: &str, at: i64| NodeRecord {
            node: node.into(),
            roles: "all".into(),
            otlp_grpc: Some("127.0.0.1:4317".into()),
            otlp_http: None,
            api: Some("127.0.0.1:8080".into()),
            version: "0.1.0".into(),
            started_ns: at,
            heartbeat_ns: at,
            left_ns: None,
            unflushed_spans: 0,
        };
        register(&db, &record("a", 100 * second)).await.unwrap();
        register(&db, &record("b", 101 * second)).await.unwrap();
        heartbeat(&db, "a", 120 * second, 42).await.unwrap();
        let nodes = list(&db).await.unwrap();
        assert_eq!(nodes.len(), 2);
        let now = 121 * second;
        assert_eq!(nodes[0].state(now), NodeState::Up, "a heartbeated 1 s ago");
        assert_eq!(nodes[0].unflushed_spans, 42);
        assert_eq!(nodes[1].state(now), NodeState::Stale, "b 20 s ago");
        leave(&db, "a", now).await.unwrap();
        assert_eq!(list(&db).await.unwrap()[0].state(now), NodeState::Left);
        // A restart registers again: up, not left.
        register(&db, &record("a", 130 * second)).await.unwrap();
        let a = list(&db)
            .await
            .unwrap()
            .into_iter()
            .find(|n| n.node == "a")
            .unwrap();
        assert_eq!(a.state(131 * second), NodeState::Up);
        assert_eq!(a.started_ns, 130 * second);
        let secret = cluster_secret(&db).await.unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(
            cluster_secret(&db).await.unwrap(),
            secret,
            "one secret for every node"
        );
    }
}
