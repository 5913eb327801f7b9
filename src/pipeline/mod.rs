//! The pipeline of `flowscope serve`: every stage of the server is started here, in order,
//! and stopped here, in the reverse of the order data flows through them. A role of a
//! cluster later is a subset of this list.
//!
//! | stage | runs on | its input, and the bound on it | owns | stops |
//! |---|---|---|---|---|
//! | RSS watchdog | thread `flowscope-rss` | `/proc/self/status`, every 100 ms | the budget's RSS figure | with the process |
//! | graph stage (a tenant) | thread `flowscope-graph` | committed batches, 256 queued (the store's writer waits) | writes to the `LiveGraph`; its `Keeper` writes rollups | when the store's writer, its only sender, is gone |
//! | store writer (a tenant) | thread `flowscope-wal` | writes, a bounded command queue and the memory budget | the WAL and the active memtable | `SpanStore::close` |
//! | flusher (a tenant) | thread `flowscope-flush` | frozen memtables, at most 4 (`FLUSH_QUEUE`: the writer freezes only below it) | Parquet files, their commit in the catalog, retention, compaction (in a cluster: taking the compactor's merges in) | after the writer, at `close` |
//! | compactor (`compactor` role) | thread `flowscope-compactor` | every node's catalog rows, every `--compact-interval`; at most 4 groups of `--flush-rows` rows per node and tenant a round | merged files and their swap into the owners' catalog rows | stop signal (looked at every 200 ms), between rounds |
//! | OTLP/gRPC, OTLP/HTTP, API | tasks | connections, `--max-connections` per port | their requests | stop signal, then 10 s to drain |
//! | alert scheduler (querier role) | task | the rules in the metadata database | rule evaluation, the outbox | stop signal, drained with the servers |
//! | cluster leases, map (`--roles`) | tasks | the metadata database, every 2 s / 1 s | an ingester's partition leases; a receiver's map and the query directory | stop signal; leases given back at drain |
//! | delivery worker | task | the outbox | webhook requests | stop signal, after the servers |
//! | demo (`--demo`) | task | its simulator | one OTLP client | stop signal |
//!
//! [`open`] binds every port, locks the data directory, starts the watchdog and opens each
//! tenant (its graph stage first, then its store, opened by the graph stage's input, which
//! sends it the stored spans of its horizon, then the WAL's replayed ones); nothing
//! is served yet, connections wait in the listen backlog. [`Opened::start`] starts the
//! servers and the alert stages. [`Running::drain`] stops accepting, lets requests finish,
//! stops the delivery worker, then flushes each store and lets its graph stage end.

mod cluster;
mod rss;
mod tenant;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use flowscope_alert::Metadata;
use flowscope_auth::TenantId;
use flowscope_base::liveness::{Liveness, Stage};
use flowscope_collector::SpanSink;
use flowscope_collector::dedup::PartIds;
use flowscope_query::SqlResources;
use flowscope_query::metadata::MetadataDb;
use flowscope_web::{ApiState, TenantView};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use flowscope_query::store::cache::DiskCache;
use flowscope_query::store::objects::ObjectStorage;

use crate::config::ServeConfig;
use crate::data_dir::{self, DataDirLock};
use crate::listen::{self, DescriptorLimit};
use tenant::{TenantSink, TenantSpace};

/// How long requests in flight may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Everything opened and nothing served: the ports are bound, the data directory is ours,
/// the stores have replayed their WAL into their graphs.
pub struct Opened {
    config: ServeConfig,
    descriptors: DescriptorLimit,
    ports: [TcpListener; 3],
    _data_dir_lock: DataDirLock,
    /// This node's id (`DATA_DIR/node-id`), its name in leases.
    node_id: String,
    liveness: Arc<Liveness>,
    spaces: Vec<TenantSpace>,
    metadata: Metadata,
    sql_resources: SqlResources,
    /// The bucket of `--object-store`, for a cluster node's query worker.
    bucket: Option<ObjectStorage>,
    /// A cluster node's directory of who serves queries (`--roles`).
    directory: Option<Arc<flowscope_cluster::Directory>>,
    /// The cluster's secret, which its query workers ask of every task.
    secret: Option<String>,
    /// The forwarded parts this node has stored (an ingester's), learned again on replay.
    part_ids: Arc<PartIds>,
}

/// Client requests whose stored parts an ingester remembers (about 40 bytes each): minutes
/// of retries at hundreds of requests a second.
const PART_IDS_KEPT: usize = 256 * 1024;

/// The serving pipeline, until [`Running::drain`].
pub struct Running {
    stop: watch::Sender<bool>,
    liveness: Arc<Liveness>,
    /// Stopped with the stop signal and given [`DRAIN`] together: the three servers and the
    /// alert scheduler.
    servers: Vec<JoinHandle<()>>,
    delivery: JoinHandle<()>,
    /// Registers this node, heartbeats, and marks it left when stopped.
    membership: JoinHandle<()>,
    /// A cluster node's leases (given back when stopped) and partition map.
    cluster_tasks: Vec<JoinHandle<()>>,
    spaces: Vec<TenantSpace>,
    _data_dir_lock: DataDirLock,
}

/// Binds, locks, and opens every tenant's store and graph.
pub async fn open(mut config: ServeConfig) -> anyhow::Result<Opened> {
    for note in &config.notes {
        note.log();
    }
    // Before any file is opened: the stores' files count against the same limit.
    let descriptors = listen::raise_descriptor_limit();
    tracing::info!(
        soft_before = descriptors.soft_before,
        hard = descriptors.hard,
        soft = descriptors.soft,
        "open-file limit"
    );
    // Every port is bound before anything is created on disk: a busy port must fail the
    // start without leaving a data directory behind. Connections wait in the backlog until
    // the servers start.
    let ports = [
        listen::bind("otlp-grpc", config.otlp_grpc_addr, "--otlp-grpc-addr").await?,
        listen::bind("otlp-http", config.otlp_http_addr, "--otlp-http-addr").await?,
        listen::bind("api", config.api_addr, "--api-addr").await?,
    ];
    // Then the data directory is ours alone, before a WAL is replayed or a file opened; the
    // lock lasts until the pipeline is drained.
    let (data_dir, data_dir_lock) = data_dir::create_and_lock(&config.store.data_dir)?;
    config.store.data_dir = data_dir.clone();
    let node_id = flowscope_query::store::catalog::node_id(&data_dir)
        .with_context(|| format!("cannot read or write {}/node-id", data_dir.display()))?;
    let memory_figures = config.collector.memory.figures();
    tracing::info!(
        memory_limit_mib = memory_figures.memory_limit >> 20,
        request_budget_mib = memory_figures.in_flight_limit >> 20,
        ingest_buffer_mib = memory_figures.ingest_buffer_limit >> 20,
        high_water_mib = memory_figures.high_water >> 20,
        max_request_bytes = config.collector.max_request_bytes,
        "memory ceiling"
    );
    // Every background stage registers here; /healthz fails if one stops while we run.
    let liveness = Liveness::new();
    let budget = config.collector.memory.clone();
    let guard = liveness.start(Stage::RssWatchdog);
    std::thread::Builder::new()
        .name("flowscope-rss".into())
        .spawn(move || rss::run(&budget, &guard))
        .context("cannot start the memory watchdog")?;
    if config.access.is_open() {
        tracing::warn!(
            api = %config.api_addr,
            "no tokens configured: anyone who reaches a port may send spans, and anyone who reaches the API is an admin, so the API listens on loopback only; give --tokens-file or --admin-token to open it to the network"
        );
    }
    // A cluster's ingester learns the parts it stored from its WAL as it replays it, so a
    // part sent again after a crash is not stored twice (`flowscope_collector::dedup`).
    let part_ids = Arc::new(PartIds::new(PART_IDS_KEPT));
    if config.roles.clustered && config.roles.ingester {
        let ids = part_ids.clone();
        config.store.request_decoder = Some(flowscope_query::RequestDecoder::new(
            move |request: &[u8]| {
                ids.note_logged(request);
                flowscope_collector::decode_logged_request(request)
            },
        ));
    }
    // One query memory pool, runtime and set of permits for all tenants together.
    let sql_resources =
        SqlResources::new(&config.sql).context("cannot start the SQL engine's runtime")?;
    // Segments in object storage when asked; the bucket is first reached as the stores
    // open (each lists its segments there).
    let objects = match &config.object_store {
        None => None,
        Some(url) => {
            // Each ingester of a cluster writes under a prefix of its own: file names are
            // its WAL positions, which other nodes' files share, and a store adopts what
            // its prefix lists.
            let url = if config.roles.clustered {
                format!("{}/nodes/{node_id}", url.trim_end_matches('/'))
            } else {
                url.clone()
            };
            let mut objects = ObjectStorage::s3(&url, tokio::runtime::Handle::current())?;
            tracing::info!(object_store = %objects.describe(), "Parquet segments go to object storage; the WAL stays in the data directory");
            if let Some((dir, size)) = &config.object_cache {
                let cache = DiskCache::open(dir, *size).with_context(|| {
                    format!(
                        "cannot use {} as the cache of object storage; give --cache-dir a writable folder, or --cache-size 0",
                        dir.display()
                    )
                })?;
                let held = cache.stats();
                tracing::info!(
                    cache_dir = %dir.display(),
                    cache_size_mib = size >> 20,
                    held_files = held.files,
                    held_mib = held.bytes >> 20,
                    "Parquet files uploaded and read are kept in a local disk cache"
                );
                objects = objects.with_cache(cache);
            }
            Some(objects)
        }
    };
    // The metadata database holds the catalog of every store's committed files: open it
    // before the stores.
    let metadata_db = MetadataDb::open(&config.metadata).await.with_context(|| {
        let hint = if config.metadata.contains("://") {
            " (is the PostgreSQL server running and reachable from here, and are the URL's \
             user, password and database right? see --metadata)"
        } else {
            ""
        };
        format!(
            "cannot open the metadata database {}{hint}",
            flowscope_query::metadata::redact_url(&config.metadata)
        )
    })?;
    tracing::info!(
        metadata = metadata_db.describe(),
        backend = ?metadata_db.backend(),
        "metadata database opened"
    );
    let local_metadata = data_dir.join("metadata.sqlite");
    if metadata_db.backend() == flowscope_query::metadata::Backend::Postgres
        && local_metadata.exists()
    {
        tracing::warn!(
            file = %local_metadata.display(),
            "the metadata database is PostgreSQL now; the alert rules, webhooks and alert \
             state in the local SQLite file are not copied to it (recreate them through the \
             API); stored spans are found again"
        );
    }
    let metadata = Metadata::new(metadata_db);
    // A cluster's nodes serve queries together: a querier plans `spans` over all of them.
    let directory = config
        .roles
        .clustered
        .then(flowscope_cluster::Directory::new);
    let secret = match &directory {
        Some(_) => Some(
            flowscope_query::membership::cluster_secret(metadata.db())
                .await
                .context("cannot read the cluster's secret from the metadata database")?,
        ),
        None => None,
    };
    let cluster_sql = match (&directory, &objects, &secret) {
        (Some(directory), Some(objects), Some(secret)) if config.roles.querier => {
            Some(cluster::ClusterSql {
                db: metadata.db().clone(),
                directory: directory.clone(),
                bucket: objects.clone(),
                secret: secret.clone(),
                peers: flowscope_cluster::PeerClient::new(&node_id, directory.clone(), secret)
                    .context("cannot start the client of the other ingesters' graphs")?,
            })
        }
        _ => None,
    };
    let mut spaces = Vec::new();
    for tenant in config.access.tenants() {
        spaces.push(
            tenant::open(
                &config,
                tenant,
                objects.as_ref(),
                &metadata,
                &node_id,
                &sql_resources,
                &liveness,
                cluster_sql.as_ref(),
            )
            .await?,
        );
    }
    Ok(Opened {
        config,
        descriptors,
        ports,
        _data_dir_lock: data_dir_lock,
        node_id,
        liveness,
        spaces,
        metadata,
        sql_resources,
        bucket: objects,
        directory,
        secret,
        part_ids,
    })
}

/// Resolves once the pipeline is told to stop.
/// Registers this node in the metadata database's membership, heartbeats every
/// `membership::HEARTBEAT` (with the spans its `stores` hold unflushed) until `stop`, then
/// marks it left. A database that cannot be
/// reached is logged and tried again at the next beat: membership never stops the server.
async fn membership(
    db: flowscope_query::metadata::MetadataDb,
    stores: Vec<Arc<flowscope_query::SpanStore>>,
    record: flowscope_query::membership::NodeRecord,
    stop: impl std::future::Future<Output = ()>,
) {
    use flowscope_query::membership;
    let mut registered = false;
    let mut beat = tokio::time::interval(membership::HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = beat.tick() => {
                let now = flowscope_base::clock::now_ns();
                let unflushed: u64 = stores.iter().map(|store| store.stats().spans_in_memory).sum();
                let done = if registered {
                    membership::heartbeat(&db, &record.node, now, i64::try_from(unflushed).unwrap_or(i64::MAX)).await
                } else {
                    membership::register(&db, &record).await
                };
                match done {
                    Ok(()) => registered = true,
                    Err(error) => tracing::warn!(%error, "cannot write this node's heartbeat to the metadata database; trying again"),
                }
            }
        }
    }
    if registered
        && let Err(error) =
            membership::leave(&db, &record.node, flowscope_base::clock::now_ns()).await
    {
        tracing::warn!(%error, "cannot mark this node as left in the metadata database");
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Opened {
    /// Starts the servers and the alert stages; from here on flowscope is ready.
    pub fn start(self) -> anyhow::Result<Running> {
        let Opened {
            config,
            descriptors,
            ports: [grpc, http, api],
            _data_dir_lock,
            node_id,
            liveness,
            spaces,
            metadata,
            sql_resources,
            bucket,
            directory,
            secret,
            part_ids,
        } = self;
        let membership_db = metadata.db().clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        // A node of a cluster: the receivers route through it, and it holds partitions
        // (ingester) or follows who holds them (receiver).
        let mut config = config;
        let mut cluster_tasks = Vec::new();
        let mut worker = None;
        if let Some(directory) = directory {
            let node = cluster::ClusterNode::new(
                node_id.clone(),
                config.roles,
                metadata.db().clone(),
                directory,
                part_ids,
                format!("http://{}", advertised(grpc.local_addr()?)),
            );
            if config.roles.ingester {
                cluster_tasks.push(tokio::spawn(
                    node.clone().hold_partitions(stopped(stop_rx.clone())),
                ));
            }
            if node_routes(config.roles) || config.roles.querier {
                cluster_tasks.push(tokio::spawn(
                    node.clone().follow_map(stopped(stop_rx.clone())),
                ));
            }
            config.collector.cluster = Some(Arc::new(cluster::ClusterHandle(node)));
            // Every node runs the query tasks queriers send it, on its gRPC port: an
            // ingester reads its own memory there.
            let stores = flowscope_cluster::LocalStores {
                node: node_id.clone(),
                stores: spaces
                    .iter()
                    .map(|space| (space.tenant.as_str().to_string(), space.store.clone()))
                    .collect(),
            };
            let service = flowscope_cluster::worker(
                stores,
                sql_resources.clone(),
                bucket.as_ref(),
                secret.clone().unwrap_or_default(),
            )
            .into_worker_server();
            let mut routes = tonic::service::Routes::new(service);
            // Beside it, each tenant's graph buckets, which queriers merge into one graph.
            let graphs = flowscope_cluster::GraphServer::new(
                spaces
                    .iter()
                    .map(|space| (space.tenant.as_str().to_string(), space.view.graph.clone()))
                    .collect(),
                secret.as_deref().unwrap_or_default(),
            );
            let router = std::mem::take(routes.axum_router_mut());
            *routes.axum_router_mut() = router.merge(graphs.router());
            worker = Some(routes);
            if config.roles.compactor
                && let Some(bucket) = bucket.clone()
            {
                cluster::start_compactor(
                    flowscope_query::store::compactor::ClusterCompactor::new(
                        metadata.db().clone(),
                        bucket,
                        config.store.data_dir.join("compactor"),
                        config.store.flush_rows as u64,
                        config.store.flush_interval,
                        tokio::runtime::Handle::current(),
                    ),
                    config.store.compact_every,
                    stop_rx.clone(),
                )?;
            }
        }
        let tenant_views: BTreeMap<TenantId, TenantView> = spaces
            .iter()
            .map(|space| (space.tenant.clone(), space.view.clone()))
            .collect();
        let engines: flowscope_alert::scheduler::Engines = Arc::new(
            spaces
                .iter()
                .map(|space| (space.tenant.as_str().to_string(), space.view.engine.clone()))
                .collect(),
        );
        let sink: Arc<dyn SpanSink> = Arc::new(TenantSink(
            spaces
                .iter()
                .map(|space| (space.tenant.clone(), space.store.clone()))
                .collect(),
        ));

        // The stores, their WAL and the metadata database are open: what is left of the
        // descriptor limit, less a reserve for the files they open later, is for connections.
        let in_use = listen::open_descriptors().unwrap_or(0);
        let plan = listen::plan_connections(
            descriptors.soft,
            in_use,
            spaces.len() as u64,
            config.connections.max_connections,
        )?;
        if let Some(asked) = plan.lowered_from {
            tracing::warn!(
                asked,
                lowered_to = plan.per_listener,
                open_file_limit = descriptors.soft,
                "--max-connections is more than the open-file limit covers for three ports; lowered (raise ulimit -n for more)"
            );
        }
        tracing::info!(
            per_listener = plan.per_listener,
            descriptors_open = in_use,
            descriptors_reserved = plan.reserved,
            header_read_timeout_s = config.connections.header_read_timeout.as_secs_f64(),
            idle_timeout_s = config.connections.idle_timeout.as_secs_f64(),
            request_body_timeout_s = config.connections.request_body_timeout.as_secs_f64(),
            "connection limits"
        );
        let connections = flowscope_web::connections::Connections::default();
        let listener = |tcp, name, counters, first_request_timeout| {
            listen::Listener::new(
                tcp,
                name,
                plan.per_listener,
                counters,
                config.connections.idle_timeout,
                first_request_timeout,
            )
        };
        let http_first_request = Some(config.connections.header_read_timeout);

        let grpc_addr = grpc.local_addr()?;
        // gRPC clients may open their channel long before the first export: no first-request
        // deadline there, only the idle timeout and HTTP/2 keepalive.
        let grpc = listener(grpc, "otlp-grpc", connections.otlp_grpc.clone(), None);
        let http_addr = http.local_addr()?;
        let http = listener(
            http,
            "otlp-http",
            connections.otlp_http.clone(),
            http_first_request,
        );
        let api_addr = api.local_addr()?;
        let api = listener(api, "api", connections.api.clone(), http_first_request);

        // One set of labelled figures: the receivers count into the collector config's, the
        // alert stages and the API share it.
        let telemetry = config.collector.telemetry.clone();
        let ready = Arc::new(AtomicBool::new(false));

        let grpc_server = flowscope_collector::serve_grpc(
            grpc.incoming(),
            sink.clone(),
            config.collector.clone(),
            worker,
            stopped(stop_rx.clone()),
        );
        // Its end is awaited only for the drain, as the other servers' are.
        let grpc_task = tokio::spawn(async move {
            let _ = grpc_server.await;
        });
        let http_router = flowscope_collector::http_router(sink, config.collector.clone());
        let http_task = tokio::spawn(listen::serve_http(
            http,
            http_router,
            config.connections.clone(),
            listen::ErrorBody::Text,
            stopped(stop_rx.clone()),
        ));
        // Links in notifications point at the API address unless users reach it elsewhere.
        let external_url = config
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{api_addr}"));
        // Rules are evaluated by queriers only: in a cluster, another node's SQL sees only
        // its own spans. Each rule is still evaluated by one querier at a time (its lease).
        let mut servers = Vec::new();
        if config.roles.querier {
            servers.push(tokio::spawn(flowscope_alert::scheduler::run(
                metadata.clone(),
                engines,
                flowscope_alert::scheduler::SchedulerConfig {
                    liveness: liveness.clone(),
                    telemetry: telemetry.clone(),
                    owner: node_id.clone(),
                    ..flowscope_alert::scheduler::SchedulerConfig::new(external_url.clone())
                },
                stopped(stop_rx.clone()),
            )));
        }
        // The delivery worker sends what is in the outbox, including what was left pending
        // when the last run was killed.
        let delivery = {
            let (metadata, stop) = (metadata.clone(), stopped(stop_rx.clone()));
            let delivery = flowscope_alert::deliver::DeliveryConfig {
                liveness: liveness.clone(),
                telemetry: telemetry.clone(),
                ..config.delivery.clone()
            };
            tokio::spawn(async move {
                if let Err(error) = flowscope_alert::deliver::run(metadata, delivery, stop).await {
                    tracing::error!(%error, "the webhook delivery worker stopped; webhooks are not sent");
                }
            })
        };
        let api_state = ApiState {
            tenants: Arc::new(tenant_views),
            access: config.access.clone(),
            sessions: Default::default(),
            config: config.api.clone(),
            ready: ready.clone(),
            info: flowscope_web::ServerInfo {
                otlp_grpc_addr: Some(grpc_addr),
                otlp_http_addr: Some(http_addr),
                graph_horizon: config.graph.horizon,
                external_url: Some(external_url.clone()),
                node: Some(node_id.clone()),
            },
            metadata,
            memory: config.collector.memory.clone(),
            connections,
            liveness: liveness.clone(),
            logins: Arc::default(),
            telemetry,
        };
        // The accept layer gives every API request its client's address (login throttling).
        let api_task = tokio::spawn(listen::serve_http(
            api,
            flowscope_web::router(api_state),
            config.connections.clone(),
            listen::ErrorBody::Json,
            stopped(stop_rx.clone()),
        ));
        if let Some(topology) = config.demo.clone() {
            // The demo is a client like any other: it reaches the gRPC port over loopback.
            let target = SocketAddr::new(
                if grpc_addr.ip().is_unspecified() {
                    [127, 0, 0, 1].into()
                } else {
                    grpc_addr.ip()
                },
                grpc_addr.port(),
            );
            tokio::spawn(flowscope_demo::run(
                format!("http://{target}"),
                flowscope_demo::DemoConfig {
                    token: config.demo_token.clone(),
                    ..flowscope_demo::DemoConfig::new(topology)
                },
                stopped(stop_rx.clone()),
            ));
        }
        let membership = tokio::spawn(membership(
            membership_db,
            spaces.iter().map(|space| space.store.clone()).collect(),
            flowscope_query::membership::NodeRecord {
                node: node_id,
                roles: config.roles.to_string(),
                otlp_grpc: Some(advertised(grpc_addr)),
                otlp_http: Some(advertised(http_addr)),
                api: Some(advertised(api_addr)),
                version: env!("CARGO_PKG_VERSION").into(),
                started_ns: flowscope_base::clock::now_ns(),
                heartbeat_ns: flowscope_base::clock::now_ns(),
                left_ns: None,
                unflushed_spans: 0,
            },
            stopped(stop_rx.clone()),
        ));
        ready.store(true, Ordering::SeqCst);
        tracing::info!("flowscope is ready");
        Ok(Running {
            stop: stop_tx,
            liveness,
            servers: [grpc_task, http_task, api_task]
                .into_iter()
                .chain(servers)
                .collect(),
            delivery,
            membership,
            cluster_tasks,
            spaces,
            _data_dir_lock,
        })
    }
}

/// Whether a node with `roles` routes what clients send it (see `ClusterHandle::routes`).
fn node_routes(roles: crate::config::Roles) -> bool {
    roles.receiver || !roles.ingester
}

/// The address other nodes reach a listener at: the bound one, or for a wildcard bind
/// (0.0.0.0, ::) this machine's host name with the port.
fn advertised(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", addr.port())
}

impl Running {
    /// Stops accepting, lets requests in flight finish, then flushes every store to Parquet
    /// and lets its graph stage end. An error means some spans were left in the WAL (the
    /// next start replays them).
    pub async fn drain(self) -> anyhow::Result<()> {
        let Running {
            stop,
            liveness,
            servers,
            delivery,
            membership,
            cluster_tasks,
            spaces,
            _data_dir_lock,
        } = self;
        tracing::info!("shutting down: no new requests; flushing spans to Parquet");
        // Stages end from here on because they are told to: not a failed health check.
        liveness.shutting_down();
        let _ = stop.send(true);
        // Requests in flight get a few seconds to finish; the store flush comes after them.
        let drain = async {
            for server in servers {
                let _ = server.await;
            }
        };
        if tokio::time::timeout(DRAIN, drain).await.is_err() {
            tracing::warn!("some requests did not finish within 10s of shutdown");
        }
        // Webhook requests under way finish within their own timeout; anything left pending
        // is sent after the next start.
        if let Err(error) = delivery.await {
            tracing::error!(%error, "the webhook delivery worker panicked");
        }
        if tokio::time::timeout(Duration::from_secs(5), membership)
            .await
            .is_err()
        {
            tracing::warn!(
                "could not mark this node as left in time; it shows as stale after 15 s"
            );
        }
        for task in cluster_tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "could not give back this ingester's partitions in time; the others take them when the leases end"
                );
            }
        }
        let mut flushed = Ok(());
        for space in spaces {
            let TenantSpace {
                tenant,
                store,
                view,
                graph_thread,
            } = space;
            if let Err(error) = store.close().await {
                tracing::error!(%tenant, %error, "flushing spans at shutdown failed; they remain in the WAL");
                flushed = Err(anyhow::anyhow!(
                    "flushing tenant {tenant}'s spans at shutdown failed; they remain in the WAL: {error}"
                ));
            }
            // The store's writer held the only sender: the graph stage ends with it.
            drop((store, view));
            let _ = tokio::task::spawn_blocking(move || graph_thread.join()).await;
        }
        flushed?;
        tracing::info!("stopped");
        Ok(())
    }
}
