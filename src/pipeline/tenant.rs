//! One tenant's part of the pipeline: its store, the graph stage fed by it, its rollups,
//! `GraphView` and SQL engine; and the sink that routes each acknowledged batch to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowscope_alert::metadata::Metadata;
use flowscope_auth::TenantId;
use flowscope_base::liveness::{Liveness, Stage};
use flowscope_collector::{SinkError, SpanSink};
use flowscope_query::graph::GraphView;
use flowscope_query::graph::stage::{GraphStage, Keeper};
use flowscope_query::store::catalog::Catalog;
use flowscope_query::store::objects::ObjectStorage;
use flowscope_query::{SpanStore, SqlEngine, SqlResources, StoreError};
use flowscope_web::TenantView;
use futures::future::BoxFuture;

use crate::config::ServeConfig;

/// The store's errors as the collector's.
fn sink_error(error: StoreError) -> SinkError {
    match error {
        StoreError::Overloaded(_, retry_after) => SinkError::Overloaded { retry_after },
        StoreError::Unavailable(message) => SinkError::Unavailable(message),
        // An I/O error on the WAL (disk full, read-only filesystem) is the machine's state,
        // not a bad request: the client should keep the spans and retry.
        StoreError::Io(error) => SinkError::Unavailable(error.to_string()),
        other => SinkError::Internal(other.to_string()),
    }
}

/// One tenant's data: its own store (WAL, Parquet), graph stage and rollups, and a SQL
/// engine that sees only those. The default tenant lives at the data directory's root (the
/// layout of a server without tenants); every other under `tenants/<name>/`.
pub struct TenantSpace {
    pub tenant: TenantId,
    pub store: Arc<SpanStore>,
    pub view: TenantView,
    pub graph_thread: std::thread::JoinHandle<()>,
}

fn tenant_dir(data_dir: &Path, tenant: &TenantId) -> PathBuf {
    if tenant.is_default() {
        data_dir.to_path_buf()
    } else {
        data_dir.join("tenants").join(tenant.as_str())
    }
}

// What every tenant shares, passed as it is: a struct of references would only rename it.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    config: &ServeConfig,
    tenant: TenantId,
    objects: Option<&ObjectStorage>,
    metadata: &Metadata,
    node_id: &str,
    sql_resources: &SqlResources,
    liveness: &Arc<Liveness>,
    cluster_sql: Option<&super::cluster::ClusterSql>,
) -> anyhow::Result<TenantSpace> {
    let data_dir = tenant_dir(&config.store.data_dir, &tenant);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut store_config = config.store.clone();
    store_config.data_dir = data_dir.clone();
    store_config.liveness = liveness.clone();
    // In object storage a tenant's segments sit under the prefix as its data directory
    // sits under --data-dir.
    store_config.objects = objects.map(|objects| {
        if tenant.is_default() {
            objects.clone()
        } else {
            objects.child(&format!("tenants/{}", tenant.as_str()))
        }
    });
    // A cluster's files in the bucket are merged by its compactor (the `compactor` role),
    // not by each ingester: the store takes the merges in from the catalog.
    store_config.compacted_elsewhere = config.roles.clustered && objects.is_some();
    // Each tenant's files are its rows in the one catalog of the metadata database.
    store_config.catalog = Some(Catalog::new(
        metadata.db().clone(),
        node_id,
        tenant.as_str(),
        tokio::runtime::Handle::current(),
    ));
    // The live graph is backfilled with the stored spans of its horizon before this moment;
    // windows starting earlier come from the buckets kept past the horizon, else are
    // rebuilt from the stored spans.
    let graph_covers_from = flowscope_base::clock::now_ns()
        .saturating_sub(config.graph.horizon.as_nanos().min(i64::MAX as u128) as i64);
    // With object storage, complete hours of kept graph buckets move to the bucket too.
    let sealed_to = store_config
        .objects
        .clone()
        .zip(store_config.catalog.clone());
    let rollups = Arc::new(
        flowscope_query::graph::rollups::Rollups::open_with(&data_dir, sealed_to)
            .with_context(|| format!("cannot open {}", data_dir.join("graph").display()))?,
    );
    let keeper = Keeper::new(
        rollups.clone(),
        graph_covers_from,
        &config.graph,
        config.store.retention,
    );
    // The graph stage starts first: its input opens the store, which feeds it the stored
    // spans of its horizon and those it replays. Registered in `liveness`, it is marked
    // stopped if its thread ends (or panics) before shutdown.
    let GraphStage {
        graph,
        input: graph_input,
        runner,
    } = GraphStage::new(config.graph.clone(), Some(keeper));
    let alive = liveness.start(Stage::Graph);
    let graph_thread = std::thread::Builder::new()
        .name("flowscope-graph".into())
        .spawn(move || runner.run(&alive))
        .context("cannot start the graph stage")?;
    let (store, stages) = tokio::task::spawn_blocking(move || graph_input.open_store(store_config))
        .await?
        .with_context(|| format!("cannot open the span store in {}", data_dir.display()))?;
    // The store's writer and flusher, each on a thread of its own; `SpanStore::close` waits
    // for both to end.
    for stage in stages.into_array() {
        let name = stage.thread_name();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || stage.run())
            .with_context(|| format!("cannot start the store's {name} thread"))?;
    }
    let stats = store.stats();
    tracing::info!(
        %tenant,
        data_dir = %data_dir.display(),
        segments = stats.segments,
        spans_in_segments = stats.spans_in_segments,
        replayed_wal_records = stats.replayed_records,
        "span store ready"
    );
    let graph = GraphView::with_history(
        graph,
        store.clone(),
        Some(rollups),
        graph_covers_from,
        config.sql.timeout,
    )
    .with_objectives(config.objectives.clone());
    // A cluster's querier merges the other ingesters' graphs into every window it reads.
    let graph = match cluster_sql {
        Some(cluster) => graph.with_peers(cluster.peers.for_tenant(tenant.as_str())),
        None => graph,
    };
    // A cluster's querier plans `spans` over every node; any other node reads its own.
    let engine = match cluster_sql {
        Some(cluster) => flowscope_cluster::engine(
            store.clone(),
            config.sql.clone(),
            sql_resources.clone(),
            cluster.db.clone(),
            tenant.as_str().to_string(),
            cluster.directory.clone(),
            &cluster.bucket,
            &cluster.secret,
        ),
        None => SqlEngine::with_resources(store.clone(), config.sql.clone(), sql_resources.clone()),
    };
    let engine = Arc::new(engine.context("cannot start the SQL engine")?);
    flowscope_query::graph::register(&engine, &graph)
        .context("cannot register the graph tables")?;
    Ok(TenantSpace {
        tenant,
        store,
        view: TenantView { engine, graph },
        graph_thread,
    })
}

/// Sends each batch to the store of the tenant whose token sent it.
pub struct TenantSink(pub BTreeMap<TenantId, Arc<SpanStore>>);

impl TenantSink {
    /// Writes `batch` to `tenant`'s store, logging `request` in its WAL when there is one.
    fn send(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
        request: Option<Bytes>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        let Some(store) = self.0.get(tenant).cloned() else {
            // Every token's tenant has a store; reaching this is a bug, not a client error.
            let message = format!("no store for tenant {tenant}");
            return Box::pin(async move { Err(SinkError::Internal(message)) });
        };
        Box::pin(async move {
            match request {
                Some(request) => store.write_request(batch, request).await,
                None => store.write(batch).await,
            }
            .map_err(sink_error)
        })
    }
}

impl SpanSink for TenantSink {
    fn write(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.send(tenant, batch, None)
    }

    fn write_request(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
        request: Bytes,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.send(tenant, batch, Some(request))
    }
}
