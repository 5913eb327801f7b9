//! One graph merged from all (issue 24): every ingester holds the live graph of the traces
//! routed to it, and a querier merges their buckets of any window with its own (counters
//! add, latency sketches merge), so loops, health, incidents, diffs and the event stream are
//! computed on the graph of the whole system.
//!
//! ```text
//!  querier: GraphView::window ──> PeerGraphs::buckets ──POST GRAPH_PATH──> each other
//!           (own buckets merged     (one task per ingester,  (gRPC port,   ingester:
//!            with the peers')        a runtime of its own)    cluster's     GraphView::own_buckets
//!                                                             secret)       (live, kept or rebuilt)
//! ```
//!
//! The request is JSON (`tenant`, `from_ns`, `to_ns`); the answer is the buckets as the
//! graph's own persistence writes them (`StoredBucket::encode`), each after its length (u32,
//! little-endian). A bucket that has not changed since the last answer keeps its place in
//! memory, so health's cached baselines stay valid across reads.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flowscope_graph::StoredBucket;
use flowscope_query::QueryError;
use flowscope_query::graph::GraphView;
use flowscope_query::graph::view::GraphPeers;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::sql::{Directory, SECRET_HEADER, carries_secret};

/// Where an ingester answers for its graph, on its gRPC port beside the query worker.
pub const GRAPH_PATH: &str = "/flowscope.cluster.v1.Graph/Buckets";
/// How long an ingester may take to answer (a window past its horizon is rebuilt from its
/// stored spans, which the SQL timeout bounds there).
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Buckets kept by (node, start) so that unchanged ones stay the same allocation.
const KEPT_BUCKETS: usize = 50_000;

#[derive(Debug, Serialize, Deserialize)]
struct BucketsRequest {
    tenant: String,
    from_ns: i64,
    to_ns: i64,
}

/// An ingester's side: each tenant's graph, and the cluster's secret every request carries.
#[derive(Clone)]
pub struct GraphServer {
    graphs: Arc<BTreeMap<String, GraphView>>,
    secret: Arc<str>,
}

impl GraphServer {
    pub fn new(graphs: BTreeMap<String, GraphView>, secret: &str) -> Self {
        Self {
            graphs: Arc::new(graphs),
            secret: secret.into(),
        }
    }

    /// The route to mount on the node's gRPC port (`tonic::service::Routes::axum_router_mut`).
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route(GRAPH_PATH, axum::routing::post(answer))
            .with_state(self)
    }
}

async fn answer(State(server): State<GraphServer>, headers: HeaderMap, body: Bytes) -> Response {
    if !carries_secret(&headers, &server.secret) {
        return (
            StatusCode::UNAUTHORIZED,
            "this request does not carry the cluster's secret",
        )
            .into_response();
    }
    let request: BucketsRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let Some(graph) = server.graphs.get(&request.tenant).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            format!("this node has no tenant {:?}", request.tenant),
        )
            .into_response();
    };
    let found =
        tokio::task::spawn_blocking(move || graph.own_buckets(request.from_ns, request.to_ns))
            .await;
    match found {
        Ok(Ok(buckets)) => {
            let mut out = Vec::new();
            for bucket in &buckets {
                let encoded = bucket.encode();
                out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
                out.extend_from_slice(&encoded);
            }
            (
                [(http::header::CONTENT_TYPE, "application/octet-stream")],
                out,
            )
                .into_response()
        }
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// The buckets of an answer, in its order.
fn decode(mut bytes: &[u8]) -> Result<Vec<(u64, Bytes)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("a bucket's length is cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err("a bucket is cut short".into());
        }
        let (bucket, rest) = rest.split_at(len);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bucket.hash(&mut hasher);
        out.push((hasher.finish(), Bytes::copy_from_slice(bucket)));
        bytes = rest;
    }
    Ok(out)
}

/// A runtime of the peers' own: graph reads are blocking calls made from any thread (a
/// blocking task, a SQL stream), so the requests run where no caller can be waiting on them.
struct PeerRuntime(Option<tokio::runtime::Runtime>);

impl Drop for PeerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the tenants' [`PeerGraphs`] share: the runtime, the channels to the ingesters and
/// who they are.
pub struct PeerClient {
    node: String,
    directory: Arc<Directory>,
    secret: String,
    runtime: PeerRuntime,
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("node", &self.node)
            .finish()
    }
}

impl PeerClient {
    /// The client of node `node` (left out of the ingesters it asks: its own graph is read
    /// in memory).
    pub fn new(node: &str, directory: Arc<Directory>, secret: &str) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowscope-graph-peers")
            .enable_all()
            .build()?;
        Ok(Arc::new(Self {
            node: node.to_string(),
            directory,
            secret: secret.to_string(),
            runtime: PeerRuntime(Some(runtime)),
            channels: Mutex::default(),
        }))
    }

    /// One tenant's peers, for its `GraphView::with_peers`.
    pub fn for_tenant(self: &Arc<Self>, tenant: &str) -> Arc<PeerGraphs> {
        Arc::new(PeerGraphs {
            client: self.clone(),
            tenant: tenant.to_string(),
            kept: Mutex::default(),
        })
    }

    fn channel(&self, url: &str) -> Result<tonic::transport::Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|error| format!("{url}: {error}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}

/// One tenant's view of the other ingesters' graphs.
#[derive(Debug)]
pub struct PeerGraphs {
    client: Arc<PeerClient>,
    tenant: String,
    /// The last answer's buckets by (node, start): the hash of their bytes and the bucket.
    kept: Mutex<HashMap<(String, i64), (u64, StoredBucket)>>,
}

async fn ask(
    channel: tonic::transport::Channel,
    url: String,
    secret: String,
    body: Vec<u8>,
) -> Result<Bytes, String> {
    let request = http::Request::post(format!("{url}{GRAPH_PATH}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(SECRET_HEADER, secret)
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(body),
        )))
        .map_err(|error| error.to_string())?;
    let call = async move {
        let response = channel
            .oneshot(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
        }
    };
    match tokio::time::timeout(PEER_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer in {PEER_TIMEOUT:?}")),
    }
}

impl GraphPeers for PeerGraphs {
    fn buckets(&self, from_ns: i64, to_ns: i64) -> Result<Vec<StoredBucket>, QueryError> {
        let client = &self.client;
        let ingesters: Vec<(String, String)> = client
            .directory
            .get()
            .ingesters
            .iter()
            .filter(|(node, _)| **node != client.node)
            .map(|(node, url)| (node.clone(), url.clone()))
            .collect();
        if ingesters.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::to_vec(&BucketsRequest {
            tenant: self.tenant.clone(),
            from_ns,
            to_ns,
        })
        .map_err(|error| QueryError::Internal(error.to_string()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let Some(runtime) = client.runtime.0.as_ref() else {
            return Err(QueryError::Internal(
                "the graph's peer client is closed".into(),
            ));
        };
        for (node, url) in ingesters {
            let tx = tx.clone();
            let channel = client.channel(&url);
            let (secret, body) = (client.secret.clone(), body.clone());
            runtime.spawn(async move {
                let answer = match channel {
                    Ok(channel) => ask(channel, url, secret, body).await,
                    Err(error) => Err(error),
                };
                let _ = tx.send((node, answer));
            });
        }
        drop(tx);
        let mut found = Vec::new();
        // Every task sends once, each within its timeout: the loop ends when they all have.
        // The cache is locked only to look up and to insert, never while waiting for a peer:
        // concurrent readers of this tenant's graph must not queue behind a slow ingester.
        for (node, answer) in rx {
            let answer = answer.and_then(|bytes| decode(&bytes)).map_err(|error| {
                QueryError::Internal(format!(
                    "ingester {node} did not give its graph buckets: {error}"
                ))
            })?;
            let mut fresh = Vec::new();
            {
                let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
                for (hash, bytes) in answer {
                    // The start is the first field after the magic: an unchanged bucket is
                    // not decoded again.
                    let start = bytes
                        .get(4..12)
                        .and_then(|start| <[u8; 8]>::try_from(start).ok())
                        .map(i64::from_le_bytes);
                    let key = start.map(|start| (node.clone(), start));
                    if let Some((same, earlier)) = key.as_ref().and_then(|key| kept.get(key))
                        && *same == hash
                    {
                        found.push(earlier.clone());
                        continue;
                    }
                    fresh.push((hash, bytes));
                }
            }
            let mut decoded = Vec::with_capacity(fresh.len());
            for (hash, bytes) in fresh {
                let bucket = StoredBucket::decode(&bytes).map_err(|error| {
                    QueryError::Internal(format!("ingester {node} sent a bad bucket: {error}"))
                })?;
                decoded.push((hash, bucket));
            }
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            for (hash, bucket) in decoded {
                kept.insert((node.clone(), bucket.start_ns()), (hash, bucket.clone()));
                found.push(bucket);
            }
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() > KEPT_BUCKETS {
            // Keep the newest half: readers ask mostly for recent windows.
            let mut starts: Vec<i64> = kept.keys().map(|(_, start)| *start).collect();
            starts.sort_unstable();
            let cut = starts[starts.len() / 2];
            kept.retain(|(_, start), _| *start >= cut);
        }
        Ok(found)
    }
}
