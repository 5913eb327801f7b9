//! This process as a node of a cluster (`--roles`, issue 24): the [`Cluster`] the OTLP
//! receivers call. A receiver splits each request by trace (`flowscope_collector::route`),
//! forwards each part over gRPC to the ingester that holds the part's partitions (in
//! process when that ingester is this node: [`TakePart`]; from the
//! metadata database's `partition_leases`, refreshed every [`MAP_REFRESH`] and at once after
//! a failure), and answers the client once every part is durable; an ingester holds its
//! partitions under leases it renews every `partitions::RENEW` and admits only the parts
//! routed to it at the epochs it holds.
//!
//! Failures are never a silent drop: a part no ingester took (a partition with no live
//! ingester, an ingester restarting) is routed again with a fresh map for up to
//! `ROUTE_PATIENCE`, then the whole request is answered UNAVAILABLE (HTTP 503). The parts
//! that were taken stay taken, so a client's retry can store those spans twice (at least
//! once, as OTLP promises).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use flowscope_auth::TenantId;
use flowscope_collector::dedup::{PartIds, RequestId, part_suffix, request_id};
use flowscope_collector::route::{Batcher, Routed, split_request};
use flowscope_collector::{Cluster, CollectorError, ROUTE_HEADER, SinkError, TakePart};
use flowscope_query::metadata::MetadataDb;
use flowscope_query::{membership, partitions};
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;

use crate::config::Roles;

/// How often a receiver reads the partition map when nothing failed.
pub const MAP_REFRESH: Duration = Duration::from_secs(1);
/// How long a receiver keeps routing the parts of a request its ingesters did not take
/// (an ingester restarting, partitions moving) before it answers UNAVAILABLE: below the
/// OTel SDKs' 10 s export timeout, so that the answer reaches the client.
const ROUTE_PATIENCE: Duration = Duration::from_secs(8);
/// The pause between two rounds of routing what was not taken.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a forwarded part may take (the ingester's WAL sync included).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Who holds a partition, as a receiver last read it.
#[derive(Debug, Clone)]
struct Holder {
    node: String,
    /// The ingester's OTLP/gRPC address.
    addr: String,
    epoch: i64,
}

/// The partition map: each partition's holder, `None` where no live ingester holds it.
#[derive(Debug, Default)]
struct RouteMap {
    holders: Vec<Option<Holder>>,
}

/// What a querier's SQL engines need: the catalog, who serves queries, and the bucket
/// every ingester writes to (registered in the SQL runtime).
#[derive(Clone)]
pub struct ClusterSql {
    pub db: MetadataDb,
    pub directory: Arc<flowscope_cluster::Directory>,
    pub bucket: flowscope_query::store::objects::ObjectStorage,
    /// The cluster's secret, which tasks sent to workers carry.
    pub secret: String,
    /// Asks the other ingesters for their graph buckets, which every window merges.
    pub peers: Arc<flowscope_cluster::PeerClient>,
}

/// This node's part in the cluster.
pub struct ClusterNode {
    node: String,
    roles: Roles,
    db: MetadataDb,
    /// A receiver's map of the partitions.
    map: RwLock<Arc<RouteMap>>,
    /// Wakes the map's refresh before its time (after a failure).
    stale: Notify,
    /// Who serves queries, for this node's SQL engines (refreshed with the map).
    directory: Arc<flowscope_cluster::Directory>,
    /// An ingester's leases: partition → (epoch, lease end in unix ns).
    held: RwLock<HashMap<u32, (i64, i64)>>,
    /// Sends parts to the ingesters, the parts of concurrent requests to one ingester
    /// together.
    batcher: Arc<Batcher>,
    /// An ingester's stored parts, learned again from its WAL on replay.
    part_ids: Arc<PartIds>,
    /// This node's own query worker (`http://` its advertised OTLP/gRPC address).
    own_worker: String,
    /// When this node started, and whether it has said that no node compacts.
    started: std::time::Instant,
    warned_no_compactor: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node", &self.node)
            .field("roles", &self.roles.to_string())
            .finish()
    }
}

impl ClusterNode {
    pub fn new(
        node: String,
        roles: Roles,
        db: MetadataDb,
        directory: Arc<flowscope_cluster::Directory>,
        part_ids: Arc<PartIds>,
        own_worker: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            roles,
            db,
            directory,
            map: RwLock::default(),
            stale: Notify::new(),
            held: RwLock::default(),
            batcher: Batcher::new(FORWARD_TIMEOUT),
            part_ids,
            own_worker,
            started: std::time::Instant::now(),
            warned_no_compactor: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Warns, once a minute has passed since this node started and until one appears, when
    /// ingesters are up and no live node has the `compactor` role: ingesters of a cluster
    /// merge none of their small files themselves.
    fn check_compactors(&self, nodes: &HashMap<String, membership::NodeRecord>) {
        use std::sync::atomic::Ordering;
        let has = |node: &membership::NodeRecord, role: &str| {
            node.roles.split(',').any(|r| r.trim() == role)
        };
        let compactor = self.roles.compactor || nodes.values().any(|n| has(n, "compactor"));
        let ingesters = nodes.values().any(|n| has(n, "ingester"));
        if compactor || !ingesters {
            self.warned_no_compactor.store(false, Ordering::Relaxed);
        } else if self.started.elapsed() > Duration::from_secs(60)
            && !self.warned_no_compactor.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "no live node of the cluster has the compactor role: ingesters do not merge their small files themselves, so they pile up in the bucket and queries slow down; start a node with --roles compactor (or add it to one's roles)"
            );
        }
    }

    /// An ingester's leases: renewed and balanced every `partitions::RENEW` until `stop`,
    /// then given back so that the other ingesters take them at once.
    pub async fn hold_partitions(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(partitions::RENEW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut had = 0usize;
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {
                    let now = flowscope_base::clock::now_ns();
                    let balanced = async {
                        let live = partitions::live_ingesters(&self.db, now).await?;
                        partitions::balance(&self.db, &self.node, live, now).await
                    };
                    match balanced.await {
                        Ok(leases) => {
                            if leases.len() != had {
                                tracing::info!(partitions = leases.len(), of = partitions::PARTITIONS, "this ingester's partitions changed");
                                had = leases.len();
                            }
                            *self.held.write().unwrap_or_else(PoisonError::into_inner) = leases
                                .into_iter()
                                .map(|lease| (lease.part, (lease.epoch, lease.until_ns)))
                                .collect();
                        }
                        // The leases held end on their own at their time: admit checks it.
                        Err(error) => tracing::warn!(%error, "cannot renew this ingester's partition leases in the metadata database; trying again"),
                    }
                }
            }
        }
        self.held
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if let Err(error) = partitions::release_all(&self.db, &self.node).await {
            tracing::warn!(%error, "cannot give back this ingester's partitions; the others take them when the leases end");
        }
    }

    /// A receiver's map: read every [`MAP_REFRESH`], or at once when a route failed.
    pub async fn follow_map(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.refresh_map().await {
                tracing::warn!(%error, "cannot read the partition map from the metadata database; routing with the last one");
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(MAP_REFRESH) => {}
                () = self.stale.notified() => {}
            }
        }
    }

    async fn refresh_map(&self) -> Result<(), sqlx::Error> {
        let now = flowscope_base::clock::now_ns();
        let nodes: HashMap<String, membership::NodeRecord> = membership::list(&self.db)
            .await?
            .into_iter()
            .filter(|node| node.state(now) == membership::NodeState::Up)
            .map(|node| (node.node.clone(), node))
            .collect();
        // Queries run on every live node that holds data or serves queries; the ingesters'
        // own memory is read on them.
        let mut snapshot = flowscope_cluster::Snapshot::default();
        for node in nodes.values() {
            let Some(addr) = node.otlp_grpc.as_deref() else {
                continue;
            };
            let roles: Vec<&str> = node.roles.split(',').map(str::trim).collect();
            let url = format!("http://{addr}");
            if roles.contains(&"ingester") {
                snapshot.ingesters.insert(node.node.clone(), url.clone());
            }
            if roles.contains(&"querier") {
                snapshot.queriers.push(url.clone());
            }
            if roles.contains(&"ingester") || roles.contains(&"querier") {
                snapshot.workers.push(url);
            }
        }
        // This node serves its own queries from its first moment, before its registration
        // is read back: a querier that started a moment ago would otherwise see the one
        // ingester as the only worker, and a plan of one worker is not spread, so that
        // ingester's memory would be read on the querier, where it is not.
        if self.roles.ingester {
            snapshot
                .ingesters
                .entry(self.node.clone())
                .or_insert_with(|| self.own_worker.clone());
        }
        if (self.roles.ingester || self.roles.querier)
            && !snapshot.workers.contains(&self.own_worker)
        {
            snapshot.workers.push(self.own_worker.clone());
        }
        if self.roles.querier && !snapshot.queriers.contains(&self.own_worker) {
            snapshot.queriers.push(self.own_worker.clone());
        }
        snapshot.workers.sort();
        snapshot.queriers.sort();
        self.check_compactors(&nodes);
        self.directory.set(snapshot);
        let mut holders = vec![None; partitions::PARTITIONS as usize];
        for lease in partitions::list(&self.db).await? {
            if !lease.held_at(now) {
                continue;
            }
            let Some(node) = lease.owner.as_deref().and_then(|owner| nodes.get(owner)) else {
                continue;
            };
            let Some(addr) = node.otlp_grpc.clone() else {
                continue;
            };
            if let Some(slot) = holders.get_mut(lease.part as usize) {
                *slot = Some(Holder {
                    node: node.node.clone(),
                    addr,
                    epoch: lease.epoch,
                });
            }
        }
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(RouteMap { holders });
        Ok(())
    }

    /// Routes `request` with the current map: Ok with the rejected spans and their messages,
    /// or the first failure and the bytes of every part that was not taken.
    async fn route_once(
        &self,
        tenant: &TenantId,
        id: RequestId,
        headers: &[(HeaderName, HeaderValue)],
        request: &Bytes,
        local: &Arc<dyn TakePart>,
    ) -> (Routed, Result<(), (CollectorError, Vec<Bytes>)>) {
        let map = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Destinations: one per ingester in the map, and the last for partitions nobody holds.
        let mut nodes: Vec<&Holder> = Vec::new();
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        let mut dest_of_part = vec![usize::MAX; map.holders.len()];
        for (part, holder) in map.holders.iter().enumerate() {
            if let Some(holder) = holder {
                let next = nodes.len();
                let index = *index_of.entry(holder.node.as_str()).or_insert(next);
                if index == next {
                    nodes.push(holder);
                }
                dest_of_part[part] = index;
            }
        }
        let unheld = nodes.len();
        let mut parts_of = vec![0u64; unheld + 1];
        let seed = partitions::tenant_seed(tenant.as_str());
        // A request's spans come trace by trace: the last trace's partition is kept.
        let mut last: ([u8; 16], u32) = ([0; 16], u32::MAX);
        let split = split_request(request, unheld + 1, |trace_id| {
            let part = match <[u8; 16]>::try_from(trace_id) {
                Ok(id) if last.1 != u32::MAX && id == last.0 => last.1,
                Ok(id) => {
                    last = (id, partitions::partition_in(seed, trace_id));
                    last.1
                }
                Err(_) => partitions::partition_in(seed, trace_id),
            };
            let dest = match dest_of_part.get(part as usize) {
                Some(&dest) if dest != usize::MAX => dest,
                _ => unheld,
            };
            parts_of[dest] |= 1 << part;
            dest
        });
        let parts = match split {
            Ok(parts) => parts,
            Err(error) => return (Routed::default(), Err((error, Vec::new()))),
        };
        if parts[unheld].is_some() {
            let missing: Vec<String> = (0..partitions::PARTITIONS)
                .filter(|p| parts_of[unheld] & (1 << p) != 0)
                .map(|p| p.to_string())
                .collect();
            let error = CollectorError::Sink(SinkError::Unavailable(format!(
                "no live ingester holds partition {} of this request's traces yet",
                missing.join(", ")
            )));
            // Nothing was sent: all of it is routed again.
            return (Routed::default(), Err((error, vec![request.clone()])));
        }
        let sends = parts.iter().enumerate().filter_map(|(dest, part)| {
            let part = part.as_ref()?;
            let holder = nodes[dest];
            let route: Vec<String> = (0..partitions::PARTITIONS)
                .filter(|p| parts_of[dest] & (1 << p) != 0)
                .filter_map(|p| {
                    map.holders[p as usize]
                        .as_ref()
                        .map(|h| format!("{p}:{}", h.epoch))
                })
                .collect();
            let route = route.join(",");
            let mark = part_suffix(id, parts_of[dest]);
            // This node's own partitions are taken in process: no loopback call.
            let here = self.roles.ingester && holder.node == self.node;
            Some(async move {
                let answer = if here {
                    local
                        .take(&holder.node, headers, route, part.request.clone(), mark)
                        .await
                } else {
                    self.batcher
                        .forward(
                            &holder.node,
                            &holder.addr,
                            route,
                            headers,
                            part.request.clone(),
                            mark,
                            id,
                        )
                        .await
                };
                (part.request.clone(), answer)
            })
        });
        let mut rejected = Routed::default();
        let mut failed: Option<CollectorError> = None;
        let mut untaken = Vec::new();
        for (request, answer) in futures::future::join_all(sends).await {
            match answer {
                Ok(routed) => rejected.add(routed),
                Err(error) => {
                    untaken.push(request);
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            None => (rejected, Ok(())),
            Some(error) => (rejected, Err((error, untaken))),
        }
    }
}

/// The [`Cluster`] the receivers call: routes run as `'static` futures, so they hold the
/// node's `Arc`.
#[derive(Debug, Clone)]
pub struct ClusterHandle(pub Arc<ClusterNode>);

impl Cluster for ClusterHandle {
    /// A receiver routes what clients send it, and so does a node that holds no
    /// partitions (a querier or compactor reached by a client); an ingester alone takes it.
    fn routes(&self) -> bool {
        super::node_routes(self.0.roles)
    }

    fn route(
        &self,
        tenant: &TenantId,
        headers: Vec<(HeaderName, HeaderValue)>,
        request: Bytes,
        local: Arc<dyn TakePart>,
    ) -> BoxFuture<'static, Result<Routed, CollectorError>> {
        let this = self.0.clone();
        let tenant = tenant.clone();
        Box::pin(async move {
            // Every part of every try names the client's request, so an ingester stores
            // each (request, partition) once however often it is sent.
            let id = request_id(tenant.as_str(), &request);
            let deadline = tokio::time::Instant::now() + ROUTE_PATIENCE;
            let mut routed = Routed::default();
            let mut pending = vec![request];
            loop {
                let mut untaken = Vec::new();
                let mut failure = None;
                for part in pending {
                    let (more, result) =
                        this.route_once(&tenant, id, &headers, &part, &local).await;
                    routed.add(more);
                    if let Err((error, parts)) = result {
                        // A malformed part or refused credentials: retrying cannot help.
                        if parts.is_empty() || error.retry_after().is_none() {
                            return Err(error);
                        }
                        untaken.extend(parts);
                        failure.get_or_insert(error);
                    }
                }
                let Some(error) = failure else {
                    return Ok(routed);
                };
                // An ingester restarting, or partitions moving: what was taken stays taken
                // (a client's retry would store it twice), and what was not is routed again
                // with a fresh map until the patience runs out.
                if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(error);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                this.stale.notify_one();
                if let Err(error) = this.refresh_map().await {
                    tracing::warn!(%error, "cannot read the partition map");
                }
                pending = untaken;
            }
        })
    }

    fn admit(&self, route: &str) -> Result<(), CollectorError> {
        self.0.admit(route)
    }

    fn part_ids(&self) -> &PartIds {
        &self.0.part_ids
    }

    fn partition_of(&self, tenant: &TenantId, trace_id: &[u8]) -> u32 {
        partitions::partition_of(tenant.as_str(), trace_id)
    }
}

impl ClusterNode {
    fn admit(&self, route: &str) -> Result<(), CollectorError> {
        if !self.roles.ingester {
            return Err(CollectorError::Sink(SinkError::Unavailable(
                "this node is not an ingester".into(),
            )));
        }
        let now = flowscope_base::clock::now_ns();
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        for item in route.split(',').filter(|item| !item.is_empty()) {
            let parsed = item.split_once(':').and_then(|(part, epoch)| {
                Some((part.parse::<u32>().ok()?, epoch.parse::<i64>().ok()?))
            });
            let Some((part, epoch)) = parsed else {
                return Err(CollectorError::InvalidRequest(format!(
                    "{ROUTE_HEADER}: {item:?} is not partition:epoch"
                )));
            };
            match held.get(&part) {
                Some((held_epoch, until)) if *held_epoch == epoch && *until >= now => {}
                _ => {
                    return Err(CollectorError::Sink(SinkError::Unavailable(format!(
                        "this ingester does not hold partition {part} at epoch {epoch}; route again"
                    ))));
                }
            }
        }
        Ok(())
    }
}

/// Starts the compactor of a node with the `compactor` role on a thread of its own: a
/// round over every node's files every `every` (`--compact-interval`), the first one
/// `every` after the start, until `stop`.
pub fn start_compactor(
    compactor: flowscope_query::store::compactor::ClusterCompactor,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::thread::Builder::new()
        .name("flowscope-compactor".into())
        .spawn(move || {
            let tick = Duration::from_millis(200).min(every);
            let mut waited = Duration::ZERO;
            while !*stop.borrow() {
                std::thread::sleep(tick);
                waited += tick;
                if waited < every {
                    continue;
                }
                waited = Duration::ZERO;
                match compactor.round() {
                    Ok(round) if round.merged > 0 || round.failed > 0 => tracing::info!(
                        merged = round.merged,
                        files = round.files,
                        failed = round.failed,
                        "compactor: round done"
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "compactor: cannot read the catalog; trying again next round")
                    }
                }
            }
        })
        .context("cannot start the compactor")?;
    Ok(())
}
