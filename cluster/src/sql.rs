//! SQL across the cluster on datafusion-distributed: the only module that names the crate
//! (its API changes between major versions; this is what to rewrite on an upgrade).
//!
//! A querier plans with the `spans` table of [`ClusterSpansTable`]: one Parquet scan of
//! every node's committed files (one consistent snapshot of the catalog), and one
//! [`IngesterScanExec`] of each live ingester's spans past its committed WAL position. The
//! distributed planner cuts the plan into stages and spreads the union of the two over the
//! tasks of its stage: one task per ingester, each with that ingester's scan ([`scale_up`]),
//! run on that ingester's worker, and one task per querier (at most one per file), each with
//! a share of the files, run on a querier's worker ([`route`]). So every row is read once,
//! without a deduplication pass, and ingesters spend no CPU on the files. Every node serves
//! [`worker`] on its OTLP/gRPC port.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec,
    NetworkBoundaryExt, RouteTasksEvent, RouteTasksEventResponse, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, Worker, WorkerQueryContext,
    WorkerResolver, display_plan_ascii,
};
use flowscope_model::{sql_schema, storage_schema};
use flowscope_query::metadata::MetadataDb;
use flowscope_query::sql::spans_table::{Pruning, hex_projection, parquet_predicate, parquet_scan};
use flowscope_query::sql::{ErrorClassifier, PlanRenderer};
use flowscope_query::store::catalog;
use flowscope_query::store::objects::ObjectStorage;
use flowscope_query::{QueryError, SpanStore, SqlConfig, SqlEngine, SqlResources};
use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::memtable::{IngesterScanCodec, IngesterScanExec, LocalStores, Target};

/// Who serves queries: every live node's worker, and the live ingesters' by node id. The
/// node refreshes it from the membership (every second); planning reads it without I/O.
#[derive(Debug, Default)]
pub struct Directory {
    snapshot: RwLock<Arc<Snapshot>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every live node's worker (`http://host:port`, the OTLP/gRPC port).
    pub workers: Vec<String>,
    /// Each live ingester's worker, by node id.
    pub ingesters: BTreeMap<String, String>,
    /// Every live querier's worker: the Parquet scans run there.
    pub queriers: Vec<String>,
}

impl Directory {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn set(&self, snapshot: Snapshot) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct Resolver(Arc<Directory>);

impl WorkerResolver for Resolver {
    /// The queriers, then the ingesters: a node with both roles is listed twice, because
    /// the planner caps a stage's tasks at this list's length and the stage reading spans
    /// wants a task per querier (files) and one per ingester (memory).
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        let snapshot = self.0.get();
        let urls: Vec<&String> = if snapshot.queriers.is_empty() && snapshot.ingesters.is_empty() {
            snapshot.workers.iter().collect()
        } else {
            snapshot
                .queriers
                .iter()
                .chain(snapshot.ingesters.values())
                .collect()
        };
        if urls.is_empty() {
            return Err(DataFusionError::Execution(
                "no node of the cluster is up to run the query on".into(),
            ));
        }
        urls.into_iter().map(|url| parse_url(url)).collect()
    }
}

fn parse_url(url: &str) -> Result<Url, DataFusionError> {
    Url::parse(url).map_err(|e| DataFusionError::Execution(format!("worker address {url}: {e}")))
}

/// The `spans` table of a querier: every node's files and every live ingester's memory.
#[derive(Debug)]
pub struct ClusterSpansTable {
    db: MetadataDb,
    tenant: String,
    directory: Arc<Directory>,
    /// The bucket every ingester writes to (registered in the querier's runtime).
    bucket: ObjectStoreUrl,
}

impl ClusterSpansTable {
    /// What the scan reads: the files of the catalog snapshot (in the bucket) and one
    /// target per live ingester, at its committed position in that snapshot.
    async fn plan_inputs(
        &self,
        pruning: &Pruning,
    ) -> Result<(Vec<PartitionedFile>, Vec<Target>), DataFusionError> {
        let snapshot = catalog::cluster_files(&self.db, &self.tenant)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let directory = self.directory.get();
        let bucket = self.bucket.as_str().trim_end_matches('/');
        let mut files = Vec::new();
        let mut targets = Vec::new();
        let mut seen = BTreeSet::new();
        for node in snapshot {
            if let Some(url) = directory.ingesters.get(&node.node) {
                targets.push(Target {
                    node: node.node.clone(),
                    url: url.clone(),
                    since: node.committed_wal_seq,
                });
            }
            seen.insert(node.node.clone());
            let Some(root) = node.location.strip_prefix(bucket) else {
                if !node.files.is_empty() {
                    tracing::warn!(node = %node.node, location = %node.location, "a node's files are not in the cluster's bucket; queries skip them");
                }
                continue;
            };
            let root = root.trim_matches('/');
            for file in node
                .files
                .iter()
                .filter(|f| pruning.keeps_file(f.min_start_ns, f.max_start_ns, f.services.as_ref()))
            {
                let path = if root.is_empty() {
                    file.path.clone()
                } else {
                    format!("{root}/{}", file.path)
                };
                files.push(PartitionedFile::new(path, file.bytes));
            }
        }
        // Ingesters that have not committed a flush yet hold everything in memory.
        for (node, url) in &directory.ingesters {
            if !seen.contains(node) {
                targets.push(Target {
                    node: node.clone(),
                    url: url.clone(),
                    since: 0,
                });
            }
        }
        targets.sort_by(|a, b| a.node.cmp(&b.node));
        Ok((files, targets))
    }
}

#[async_trait]
impl TableProvider for ClusterSpansTable {
    fn schema(&self) -> SchemaRef {
        sql_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = storage_schema();
        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        let pruning = Pruning::from_filters(filters);
        let (files, targets) = self.plan_inputs(&pruning).await?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            inputs.push(parquet_scan(
                state.runtime_env(),
                self.bucket.clone(),
                files,
                &projection,
                parquet_predicate(state, filters)?,
                state.config().target_partitions().max(1),
                if filters.is_empty() { limit } else { None },
            )?);
        }
        if !targets.is_empty() {
            inputs.push(Arc::new(IngesterScanExec::try_new(
                self.tenant.clone(),
                projection.clone(),
                targets,
            )?));
        }
        let input: Arc<dyn ExecutionPlan> = match inputs.len() {
            0 => Arc::new(EmptyExec::new(Arc::new(schema.project(&projection)?))),
            1 => inputs.remove(0),
            _ => UnionExec::try_new(inputs)?,
        };
        let exprs = hex_projection(&input, state)?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

/// The ingesters' scan asks for one task per ingester, and no more: each task reads one.
/// One ingester alone gets a second, empty task: a stage of one task is run by the querier
/// itself, and that ingester's memory is not there.
fn task_count(scan: &IngesterScanExec) -> usize {
    scan.targets().len().max(2)
}

/// The Parquet scan of the bucket, if `plan` is one.
fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

fn desired(ev: DesiredTaskCountEvent) -> Option<Result<DesiredTaskCountEventResponse>> {
    if let Some(scan) = ev.plan.downcast_ref::<IngesterScanExec>() {
        return Some(Ok(DesiredTaskCountEventResponse::maximum(task_count(scan))));
    }
    // The files are spread over the queriers, a share each (at most a task per file).
    let files: usize = file_scan(ev.plan)?
        .file_groups
        .iter()
        .map(|group| group.len())
        .sum();
    let queriers = ev
        .session_config
        .get_extension::<FallbackWorker>()
        .map(|directory| directory.0.get().queriers.len())
        .unwrap_or(1);
    Some(Ok(DesiredTaskCountEventResponse::maximum(
        queriers.min(files).max(1),
    )))
}
fn scale_up(ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let scan = ev.plan.downcast_ref::<IngesterScanExec>()?;
    let built = (|| {
        if ev.task_count < scan.targets().len() {
            return Err(DataFusionError::Plan(format!(
                "this query reads the spans of {} ingesters in a part of the plan that runs as {} task(s); rewrite it so that the spans are aggregated or filtered before they are joined with another table",
                scan.targets().len(),
                ev.task_count
            )));
        }
        let mut variants: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for index in 0..ev.task_count {
            let targets = scan.targets().get(index).cloned().into_iter().collect();
            variants.push(Arc::new(IngesterScanExec::try_new(
                scan.tenant().to_string(),
                scan.projection().to_vec(),
                targets,
            )?));
        }
        DistributedLeafExec::try_new(Arc::clone(ev.plan), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf)))
    })();
    Some(built)
}

/// What one task of a stage reads, found by walking its plan as the task will run it.
#[derive(Debug, Default, PartialEq, Eq)]
struct TaskReads {
    /// The ingester whose memory it reads (its worker).
    ingester: Option<String>,
    /// Its share of the files: the index among the file scan's tasks.
    files: Option<usize>,
}

/// Sends each task of a stage that reads spans where its data is: a task reading an
/// ingester's memory to that ingester, a task reading a share of the files to a querier (the
/// shares round the queriers), and a task reading neither to a querier. Stages that read no
/// spans keep the engine's own routing.
fn route(ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
    let routed = (|| {
        let mut reads = Vec::with_capacity(ev.task_count);
        for index in 0..ev.task_count {
            let mut task = TaskReads::default();
            task_reads(ev.plan, index, &mut task)?;
            reads.push(task);
        }
        if reads
            .iter()
            .all(|task| task.ingester.is_none() && task.files.is_none())
        {
            return Ok(None);
        }
        let directory = ev
            .task_ctx
            .session_config()
            .get_extension::<FallbackWorker>()
            .map(|worker| worker.0.get())
            .unwrap_or_default();
        let queriers: &[String] = if directory.queriers.is_empty() {
            &directory.workers
        } else {
            &directory.queriers
        };
        let mut urls = Vec::with_capacity(ev.task_count);
        for (index, task) in reads.into_iter().enumerate() {
            let url = match (task.ingester, task.files) {
                (Some(ingester), _) => Some(ingester),
                (None, Some(share)) => queriers.get(share % queriers.len().max(1)).cloned(),
                (None, None) => queriers.get(index % queriers.len().max(1)).cloned(),
            };
            let Some(url) = url else {
                return Err(DataFusionError::Execution(
                    "no querier is up to run a part of the query on".into(),
                ));
            };
            urls.push(parse_url(&url)?);
        }
        Ok(Some(RouteTasksEventResponse::new(urls)))
    })();
    routed.transpose()
}

/// Walks `plan` as task `index` runs it (down to the stage's network boundaries), noting
/// what it reads into `reads`.
fn task_reads(plan: &Arc<dyn ExecutionPlan>, index: usize, reads: &mut TaskReads) -> Result<()> {
    if let Some(leaf) = plan.downcast_ref::<DistributedLeafExec>() {
        let variant = leaf.variants().get(index).unwrap_or(leaf.original());
        return task_reads(variant, index, reads);
    }
    if let Some(scan) = plan.downcast_ref::<IngesterScanExec>() {
        if let Some(target) = scan.targets().first() {
            reads.ingester.get_or_insert_with(|| target.url.clone());
        }
        return Ok(());
    }
    if file_scan(plan).is_some() {
        reads.files.get_or_insert(index);
        return Ok(());
    }
    if plan.name() == "ChildrenIsolatorUnionExec" {
        let children = plan.children();
        let tasks = isolated_children(plan)?;
        let Some(mine) = tasks.get(index) else {
            return Err(DataFusionError::Internal(format!(
                "a union spread over {} tasks has no part for task {index}",
                tasks.len()
            )));
        };
        for &(child, child_index, _) in mine {
            if let Some(child) = children.get(child) {
                task_reads(child, child_index, reads)?;
            }
        }
        return Ok(());
    }
    for child in plan.children() {
        if !child.is_network_boundary() {
            task_reads(child, index, reads)?;
        }
    }
    Ok(())
}

/// Which children each task of a union spread over tasks (the engine's
/// `ChildrenIsolatorUnionExec`) runs, as (child, its task index, its task count). The
/// engine keeps that map to itself and shows it only in the plan's text, `t0:[c0(0/2), c1]
/// t1:[c0(1/2)]`; a test below holds this reading to the engine's output.
fn isolated_children(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<Vec<(usize, usize, usize)>>> {
    let text = displayable(plan.as_ref()).one_line().to_string();
    let unreadable = || {
        DataFusionError::Internal(format!(
            "cannot read the tasks of a union from its description: {text}"
        ))
    };
    let mut tasks = Vec::new();
    for group in text.split('[').skip(1) {
        let inner = group.split(']').next().ok_or_else(unreadable)?;
        let mut children = Vec::new();
        for item in inner.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let item = item.strip_prefix('c').ok_or_else(unreadable)?;
            let (child, share) = match item.split_once('(') {
                Some((child, share)) => (child, Some(share.trim_end_matches(')'))),
                None => (item, None),
            };
            let child: usize = child.parse().map_err(|_| unreadable())?;
            let (index, count) = match share.and_then(|s| s.split_once('/')) {
                Some((i, n)) => (
                    i.parse().map_err(|_| unreadable())?,
                    n.parse().map_err(|_| unreadable())?,
                ),
                None if share.is_none() => (0, 1),
                None => return Err(unreadable()),
            };
            children.push((child, index, count));
        }
        tasks.push(children);
    }
    if tasks.is_empty() {
        return Err(unreadable());
    }
    Ok(tasks)
}

/// A worker the query could not reach (refused, reset, gone): a retryable answer (503)
/// that says why, where the engine would call it the query's fault (400).
fn unreachable_node(error: &DataFusionError) -> Option<QueryError> {
    let DataFusionError::External(inner) = error.find_root() else {
        return None;
    };
    let status = inner.downcast_ref::<tonic::Status>()?;
    (status.code() == tonic::Code::Unavailable).then(|| {
        QueryError::Busy(format!(
            "a node of the cluster did not answer ({}); it may be restarting or have left (GET /api/cluster lists the nodes): retry in a few seconds",
            status.message()
        ))
    })
}

/// The directory, as a session extension the routing reads.
#[derive(Debug)]
struct FallbackWorker(Arc<Directory>);

/// The header every task sent to a worker carries: the cluster's secret
/// (`membership::cluster_secret`). The worker listens on the OTLP/gRPC port, which clients
/// reach; without the secret it runs nothing.
pub(crate) const SECRET_HEADER: &str = "x-flowscope-cluster-secret";

fn secret_headers(secret: &str) -> Result<HeaderMap, DataFusionError> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(secret)
        .map_err(|e| DataFusionError::Configuration(format!("the cluster secret: {e}")))?;
    headers.insert(SECRET_HEADER, value);
    Ok(headers)
}

/// Whether `headers` carry `secret`, compared in constant time.
pub(crate) fn carries_secret(headers: &HeaderMap, secret: &str) -> bool {
    let Some(given) = headers.get(SECRET_HEADER) else {
        return false;
    };
    let (given, secret) = (given.as_bytes(), secret.as_bytes());
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A querier's SQL engine for `tenant`: `spans` is the whole cluster's, planned by
/// datafusion-distributed. `bucket` is the object store every ingester writes to;
/// `store` is this node's own (for the engine's other tables); `secret` goes with every
/// task to the workers.
#[allow(clippy::too_many_arguments)]
pub fn engine(
    store: Arc<SpanStore>,
    config: SqlConfig,
    resources: SqlResources,
    db: MetadataDb,
    tenant: String,
    directory: Arc<Directory>,
    bucket: &ObjectStorage,
    secret: &str,
) -> Result<SqlEngine, QueryError> {
    let headers = secret_headers(secret).map_err(|e| QueryError::Internal(e.to_string()))?;
    // Every node's files are read through this node's client of the bucket (and its cache).
    resources
        .runtime_env()
        .register_object_store(bucket.url().as_ref(), bucket.store().clone());
    let spans = Arc::new(ClusterSpansTable {
        db,
        tenant,
        directory: directory.clone(),
        bucket: bucket.url().clone(),
    });
    let customize = move |builder: SessionStateBuilder| {
        let mut builder = builder
            .with_distributed_worker_resolver(Resolver(directory.clone()))
            .with_distributed_user_codec(IngesterScanCodec)
            .with_distributed_desired_task_count_handler(desired)
            .with_distributed_scale_up_leaf_node_handler(scale_up)
            .with_distributed_route_tasks_handler(route);
        // The union of the files and the ingesters is spread over its stage's tasks: a
        // task reads one ingester's memory (on it) or a share of the files (on a querier).
        if let Err(error) = builder.set_distributed_children_isolator_unions(true) {
            tracing::warn!(%error, "cannot spread unions over tasks in distributed plans");
        }
        if let Err(error) = builder.set_distributed_passthrough_headers(headers) {
            tracing::error!(%error, "cannot send the cluster secret to the workers; their answers will be refusals");
        }
        if let Some(config) = builder.config().as_mut() {
            config.set_extension(Arc::new(FallbackWorker(directory)));
            // A node that does not answer is the cluster's state, not the query's fault.
            config.set_extension(Arc::new(ErrorClassifier(Arc::new(unreachable_node))));
            // EXPLAIN shows the stages, their tasks and what each reads.
            config.set_extension(Arc::new(PlanRenderer(Arc::new(
                |plan: &dyn ExecutionPlan| display_plan_ascii(plan, false),
            ))));
        }
        builder.with_distributed_planner()
    };
    SqlEngine::with_session(store, config, resources, customize, spans)
}

/// The worker every node serves on its OTLP/gRPC port: it runs the tasks queriers send,
/// against `stores` (this node's, by tenant) for the ingesters' scans, with the functions
/// of `resources` and in its runtime (memory pool, object stores: `bucket` is registered).
/// It runs only tasks that carry `secret`.
pub fn worker(
    stores: LocalStores,
    resources: SqlResources,
    bucket: Option<&ObjectStorage>,
    secret: String,
) -> Worker {
    // The files a querier hands this worker are in the cluster's bucket.
    if let Some(bucket) = bucket {
        resources
            .runtime_env()
            .register_object_store(bucket.url().as_ref(), bucket.store().clone());
    }
    let stores = Arc::new(stores);
    let runtime = resources.runtime_env().clone();
    Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let stores = stores.clone();
        let resources = resources.clone();
        let secret = secret.clone();
        async move {
            // Before a byte of the plan is decoded: only the cluster's queriers may send one.
            if !carries_secret(&ctx.headers, &secret) {
                return Err(DataFusionError::Execution(
                    "refused: this task does not carry the cluster's secret; query workers run tasks from the cluster's queriers only".into(),
                ));
            }
            let mut builder = ctx.builder;
            if let Some(config) = builder.config().as_mut() {
                config.set_distributed_user_codec(IngesterScanCodec);
                config.set_extension(stores);
                // Tasks this one starts on other workers (shuffles) carry it on.
                config.set_distributed_passthrough_headers(secret_headers(&secret)?)?;
            }
            let context = SessionContext::new_with_state(builder.build());
            resources.register_functions(&context);
            Ok(context.state())
        }
    })
    .with_runtime_env(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;

    struct One(String);

    impl WorkerResolver for One {
        fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
            Ok(vec![parse_url(&self.0)?, parse_url(&self.0)?])
        }
    }

    /// A coordinator whose every leaf asks for two tasks, so that the plan reaches the
    /// worker at `url`, sending `secret` (or nothing).
    async fn count_through(url: &str, secret: Option<&str>) -> Result<i64, DataFusionError> {
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_distributed_worker_resolver(One(url.to_string()))
            .with_distributed_desired_task_count_handler(2usize);
        if let Some(secret) = secret {
            builder.set_distributed_passthrough_headers(secret_headers(secret)?)?;
        }
        let context = SessionContext::new_with_state(builder.with_distributed_planner().build());
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>()))],
        )?;
        let table = MemTable::try_new(schema, vec![vec![batch.clone()], vec![batch]])?;
        context.register_table("t", Arc::new(table))?;
        let batches = context
            .sql("SELECT n % 7 AS k, count(*) AS c FROM t GROUP BY 1")
            .await?
            .collect()
            .await?;
        Ok(batches.iter().map(|b| b.num_rows() as i64).sum())
    }

    #[tokio::test]
    async fn a_worker_runs_no_task_without_the_clusters_secret() {
        let resources = SqlResources::new(&SqlConfig::default()).unwrap();
        let service = worker(LocalStores::default(), resources, None, "s3cret".repeat(8))
            .into_worker_server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let refused = count_through(&url, None).await.unwrap_err().to_string();
        assert!(refused.contains("cluster's secret"), "{refused}");
        let wrong = count_through(&url, Some(&"x".repeat(48)))
            .await
            .unwrap_err();
        assert!(wrong.to_string().contains("cluster's secret"), "{wrong}");
        assert_eq!(
            count_through(&url, Some(&"s3cret".repeat(8)))
                .await
                .unwrap(),
            7
        );
        server.abort();
    }

    struct Four;

    impl WorkerResolver for Four {
        fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
            (0..4)
                .map(|port| parse_url(&format!("http://127.0.0.1:{}", 1000 + port)))
                .collect()
        }
    }

    /// The reading of a spread union's tasks holds to what this version of the engine
    /// plans: every child's shares are there, each once, in the tasks the stage has.
    #[tokio::test]
    async fn the_tasks_of_a_spread_union_are_read_from_the_engines_plan() {
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_distributed_worker_resolver(Four)
            .with_distributed_desired_task_count_handler(2usize);
        builder
            .set_distributed_children_isolator_unions(true)
            .unwrap();
        let context = SessionContext::new_with_state(builder.with_distributed_planner().build());
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>()))],
        )
        .unwrap();
        for name in ["t", "u"] {
            let table = MemTable::try_new(
                schema.clone(),
                vec![vec![batch.clone()], vec![batch.clone()]],
            )
            .unwrap();
            context.register_table(name, Arc::new(table)).unwrap();
        }
        let plan = context
            .sql("SELECT n % 7 AS k, count(*) FROM (SELECT n FROM t UNION ALL SELECT n FROM u) GROUP BY 1")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let plan_copy = plan.clone();
        let mut unions = Vec::new();
        let mut stack = vec![plan];
        while let Some(node) = stack.pop() {
            if node.name() == "ChildrenIsolatorUnionExec"
                && !unions.iter().any(|u| Arc::ptr_eq(u, &node))
            {
                unions.push(node.clone());
            }
            stack.extend(node.children().into_iter().cloned());
        }
        assert_eq!(
            unions.len(),
            1,
            "one spread union: {}",
            display_plan_ascii(plan_copy.as_ref(), false)
        );
        let tasks = isolated_children(&unions[0]).unwrap();
        // Each table wants two tasks, and four workers let the union have them.
        assert_eq!(tasks.len(), 4, "{tasks:?}");
        for child in 0..2 {
            let shares: Vec<(usize, usize)> = tasks
                .iter()
                .flatten()
                .filter(|(c, _, _)| *c == child)
                .map(|&(_, index, count)| (index, count))
                .collect();
            let count = shares.first().map(|s| s.1).unwrap();
            let mut indices: Vec<usize> = shares.iter().map(|s| s.0).collect();
            indices.sort();
            assert_eq!(
                indices,
                (0..count).collect::<Vec<_>>(),
                "child {child}: {tasks:?}"
            );
            assert!(shares.iter().all(|s| s.1 == count));
        }
        assert_eq!(
            isolated_children(&unions[0]).unwrap(),
            tasks,
            "the same reading twice"
        );
    }

    #[test]
    fn a_node_that_does_not_answer_is_a_retryable_error() {
        let refused =
            DataFusionError::External(Box::new(tonic::Status::unavailable("tcp connect error")));
        let wrapped = DataFusionError::Context("stage 1".into(), Box::new(refused));
        match unreachable_node(&wrapped) {
            Some(QueryError::Busy(message)) => {
                assert!(message.contains("tcp connect error"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let refused_secret =
            DataFusionError::External(Box::new(tonic::Status::permission_denied("no secret")));
        assert!(unreachable_node(&refused_secret).is_none());
        assert!(unreachable_node(&DataFusionError::Plan("no such column".into())).is_none());
    }

    #[test]
    fn workers_take_only_tasks_with_the_secret() {
        let secret = "a".repeat(64);
        let headers = secret_headers(&secret).unwrap();
        assert!(carries_secret(&headers, &secret));
        assert!(!carries_secret(&HeaderMap::new(), &secret));
        let wrong = secret_headers(&"b".repeat(64)).unwrap();
        assert!(!carries_secret(&wrong, &secret));
        let short = secret_headers("a").unwrap();
        assert!(!carries_secret(&short, &secret));
    }
}
