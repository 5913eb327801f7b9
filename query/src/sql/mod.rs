//! The read-only SQL engine: DataFusion with the `spans` table, a sandbox, a memory pool,
//! a timeout and its own runtime.
//!
//! ```text
//!  sql ──> permits (the tenant's, then the shared ones) ──> a task on the `flowscope-sql`
//!          runtime: plan (parser recursion limit) ──> verify: no DDL, DML, COPY, SET
//!          ──> optimize, refuse oversized constants ──> execute under a memory pool and a
//!          timeout ──> batches (row cap) ──> bounded channel ──> the caller
//! ```
//!
//! The task holds the permits and is aborted when the caller drops the answer or the
//! timeout fires, so a query that nobody waits for stops running, and its permits are free
//! only once it has.
//!
//! The sandbox never enables URL tables, file-reading table functions or table factories:
//! SQL can read the tables flowscope registers and nothing else on the machine.

pub mod bounded_functions;
pub(crate) mod computed_table;
pub mod hex_id;
pub mod spans_table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::SessionStateDefaults;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::error::QueryError;
use crate::store::SpanStore;
use bounded_functions::CallLimits;
use hex_id::HexId;
use spans_table::SpansTable;

/// Limits of the SQL sandbox.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// Memory all running queries may hold together.
    pub memory_limit: usize,
    /// Wall time one query may take, from planning to its last row.
    pub timeout: Duration,
    /// Queries that may run at once, all tenants together; more wait (within their timeout).
    pub max_concurrent: usize,
    /// Queries one tenant may run at once, so that one tenant cannot hold every permit.
    pub max_concurrent_per_tenant: usize,
    /// Worker threads of the SQL runtime, apart from ingest.
    pub threads: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            memory_limit: 1 << 30,
            timeout: Duration::from_secs(30),
            max_concurrent: 4,
            max_concurrent_per_tenant: 2,
            threads: 2,
        }
    }
}

/// A query's answer: up to the requested number of rows.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than were returned.
    pub truncated: bool,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Owns the SQL runtime; shuts it down without blocking when dropped from async code.
struct SqlRuntime(Option<tokio::runtime::Runtime>);

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What every tenant's engine shares: the memory pool (`--sql-memory-limit` holds for all
/// queries together), the query runtime's threads and the concurrency permits.
#[derive(Clone)]
pub struct SqlResources {
    runtime_env: Arc<RuntimeEnv>,
    runtime: Arc<SqlRuntime>,
    permits: Arc<Semaphore>,
    limits: Arc<CallLimits>,
}

impl SqlResources {
    pub fn new(config: &SqlConfig) -> Result<Self, QueryError> {
        let internal = |e: &dyn std::fmt::Display| QueryError::Internal(e.to_string());
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            // No spilling: a query that does not fit in memory fails instead of filling the disk.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| internal(&e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("flowscope-sql")
            .on_thread_start(lower_thread_priority)
            .enable_all()
            .build()
            .map_err(|e| internal(&e))?;
        let limits = Arc::new(CallLimits::new(
            runtime_env.memory_pool.clone(),
            config.memory_limit,
        ));
        Ok(Self {
            runtime_env,
            runtime: Arc::new(SqlRuntime(Some(runtime))),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            limits,
        })
    }

    /// The runtime every query of these resources runs in (memory pool, object stores):
    /// a cluster's worker runs its tasks in it too.
    pub fn runtime_env(&self) -> &Arc<RuntimeEnv> {
        &self.runtime_env
    }

    /// Registers the functions every engine of these resources has (the id renderer, the
    /// bounded string functions) in `context`: a cluster's worker must know every function
    /// a plan it is sent may call.
    pub fn register_functions(&self, context: &SessionContext) {
        context.register_udf(HexId::udf().as_ref().clone());
        bounded_functions::register(context, &self.limits);
    }

    /// Permits free now, of the shared ones (for tests: a stopped query gives its back).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }
}

/// How much lower than ingest the SQL threads run (a `nice` value): when queries keep both
/// cores busy, the receivers, the WAL writer and `/healthz` still get the CPU first, so
/// acknowledgements stay fast (measured by `tests/mixed_attack.rs`).
pub const SQL_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`SQL_NICE`] (Linux schedules threads
/// one by one, so this touches only the SQL runtime's own threads). Where it fails, queries
/// still run, at the same priority as ingest.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
        if let Err(error) =
            rustix::process::setpriority_process(Some(thread), current.saturating_add(SQL_NICE))
        {
            tracing::debug!(%error, "cannot lower the SQL thread's priority");
        }
    }
}

/// Runs user SQL against the store, read-only and bounded.
pub struct SqlEngine {
    context: SessionContext,
    resources: SqlResources,
    /// This tenant's own permits, taken before a shared one.
    tenant_permits: Arc<Semaphore>,
    config: SqlConfig,
    store: Arc<SpanStore>,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("config", &self.config)
            .finish()
    }
}

fn sandbox_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

fn classify(error: DataFusionError, config: &SqlConfig) -> QueryError {
    let root = error.find_root();
    match root {
        DataFusionError::ResourcesExhausted(message) => QueryError::TooExpensive(format!(
            "the query needed more than the {} MiB of memory queries may use ({message}); narrow the time range or aggregate before sorting",
            config.memory_limit >> 20
        )),
        DataFusionError::Internal(message) => QueryError::Internal(message.clone()),
        // Our own table providers fail with a QueryError that already says whose fault it is.
        DataFusionError::External(inner) if inner.is::<QueryError>() => {
            match inner.downcast_ref::<QueryError>() {
                Some(QueryError::Invalid(m)) => QueryError::Invalid(m.clone()),
                Some(QueryError::NotAllowed(m)) => QueryError::NotAllowed(m.clone()),
                Some(QueryError::TooExpensive(m)) => QueryError::TooExpensive(m.clone()),
                Some(QueryError::Busy(m)) => QueryError::Busy(m.clone()),
                Some(QueryError::Internal(m)) => QueryError::Internal(m.clone()),
                None => QueryError::Internal(inner.to_string()),
            }
        }
        DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::ParquetError(_) => QueryError::Internal(root.to_string()),
        _ => QueryError::Invalid(root.to_string()),
    }
}

impl SqlEngine {
    pub fn new(store: Arc<SpanStore>, config: SqlConfig) -> Result<Self, QueryError> {
        let resources = SqlResources::new(&config)?;
        Self::with_resources(store, config, resources)
    }

    /// An engine over `store` that draws on `resources`, which other engines (other
    /// tenants') may share: adding a tenant adds no memory pool, threads or permits.
    pub fn with_resources(
        store: Arc<SpanStore>,
        config: SqlConfig,
        resources: SqlResources,
    ) -> Result<Self, QueryError> {
        let spans = Arc::new(SpansTable::new(store.clone()));
        Self::with_session(store, config, resources, |builder| builder, spans)
    }

    /// An engine whose session `customize` finishes (a cluster's querier makes it plan
    /// across nodes) and whose `spans` table is `spans`; `store` is this node's own.
    pub fn with_session(
        store: Arc<SpanStore>,
        config: SqlConfig,
        resources: SqlResources,
        customize: impl FnOnce(SessionStateBuilder) -> SessionStateBuilder,
        spans: Arc<dyn TableProvider>,
    ) -> Result<Self, QueryError> {
        let internal = |e: &dyn std::fmt::Display| QueryError::Internal(e.to_string());
        let session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(config.threads.max(1))
            .with_default_catalog_and_schema("flowscope", "public");
        // Only the table functions known to read nothing from outside; later DataFusion
        // versions add read_parquet/read_csv to the defaults.
        let table_functions = SessionStateDefaults::default_table_functions()
            .into_iter()
            .filter(|f| ["generate_series", "range"].contains(&f.name()))
            .collect();
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(resources.runtime_env.clone())
            .with_default_features()
            // Defence in depth: even if DDL were allowed, no file format could be registered.
            .with_table_factories(HashMap::new())
            .with_table_function_list(table_functions);
        let state = customize(state).build();
        let context = SessionContext::new_with_state(state);
        resources.register_functions(&context);
        context
            .register_table("spans", spans)
            .map_err(|e| internal(&e))?;
        Ok(Self {
            context,
            tenant_permits: Arc::new(Semaphore::new(config.max_concurrent_per_tenant.max(1))),
            resources,
            config,
            store,
        })
    }

    /// Runs `work` on the SQL runtime's blocking threads, at the SQL threads' lower priority:
    /// CPU work an answer needs besides the query itself (encoding it as CSV, JSON or Arrow)
    /// must not take the CPU from the receivers. Encoding a CSV answer on the server's own
    /// runtime took ack p99 from 10 ms to 414 ms in `tests/mixed_attack.rs`.
    pub async fn run_beside_queries<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, QueryError> {
        let Some(runtime) = self.resources.runtime.0.as_ref() else {
            return Err(QueryError::Busy("the SQL engine is shutting down".into()));
        };
        runtime
            .spawn_blocking(work)
            .await
            .map_err(|e| QueryError::Internal(e.to_string()))
    }

    /// The store the `spans` table reads.
    pub fn store(&self) -> &Arc<SpanStore> {
        &self.store
    }

    /// Adds a table (the graph tables, later) to the SQL namespace.
    pub fn register_table(
        &self,
        name: &str,
        table: Arc<dyn TableProvider>,
    ) -> Result<(), QueryError> {
        self.context
            .register_table(name, table)
            .map(|_| ())
            .map_err(|e| QueryError::Internal(e.to_string()))
    }

    /// Adds a table function (`edges_between(from, to)`, ...) to the SQL namespace.
    pub fn register_table_function(&self, name: &str, function: Arc<dyn TableFunctionImpl>) {
        self.context.register_udtf(name, function);
    }

    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Plans one statement through the same sandbox as [`SqlEngine::query`] without running
    /// it: the planner's or the sandbox's message when it would be refused.
    pub async fn check(&self, sql: &str) -> Result<(), QueryError> {
        self.checked_plan(sql).await.map(|_| ())
    }

    /// The plan [`SqlEngine::check`] accepts, for the fuzz target (`fuzz/`) to look inside:
    /// it asserts that no accepted plan writes, changes settings or reads files.
    #[doc(hidden)]
    pub async fn checked_plan(&self, sql: &str) -> Result<LogicalPlan, QueryError> {
        let context = self.context.clone();
        let sql = sql.to_string();
        let config = self.config.clone();
        let Some(runtime) = self.resources.runtime.0.as_ref() else {
            return Err(QueryError::Busy("the SQL engine is shutting down".into()));
        };
        // Planning reads table schemas only, but it is still off the caller's workers.
        let handle = runtime.spawn(async move { plan(&context, &sql, &config).await });
        match tokio::time::timeout(self.config.timeout, handle).await {
            Ok(joined) => joined.map_err(|e| QueryError::Internal(e.to_string()))?,
            Err(_) => Err(QueryError::TooExpensive(format!(
                "planning the query took longer than the {}s limit",
                self.config.timeout.as_secs_f64()
            ))),
        }
    }

    /// Runs one read-only statement and returns at most `max_rows` rows.
    pub async fn query(&self, sql: &str, max_rows: usize) -> Result<QueryOutput, QueryError> {
        self.query_within(sql, max_rows, self.config.timeout).await
    }

    /// Like [`SqlEngine::query`] with its own time limit (at most the engine's): alert rules
    /// give up by their next interval.
    pub async fn query_within(
        &self,
        sql: &str,
        max_rows: usize,
        timeout: Duration,
    ) -> Result<QueryOutput, QueryError> {
        let timeout = timeout.min(self.config.timeout);
        let deadline = Instant::now() + timeout;
        let collect = async {
            let mut stream = self.stream_until(sql, max_rows, deadline, timeout).await?;
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
            Ok(QueryOutput {
                schema: stream.schema(),
                batches,
                truncated: stream.truncated(),
            })
        };
        // The task stops itself at the deadline; this is for a runtime too busy to run it.
        // Either way the stream is dropped, which aborts the task.
        match tokio::time::timeout_at(deadline + TIMEOUT_GRACE, collect).await {
            Ok(result) => result,
            Err(_) => Err(too_slow(timeout)),
        }
    }

    /// Runs one read-only statement and hands its batches over as they are made, at most
    /// `max_rows` rows, within the engine's timeout (which also runs while the caller reads).
    /// Dropping the stream stops the query.
    pub async fn query_stream(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<QueryStream, QueryError> {
        let timeout = self.config.timeout;
        self.stream_until(sql, max_rows, Instant::now() + timeout, timeout)
            .await
    }

    async fn stream_until(
        &self,
        sql: &str,
        max_rows: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<QueryStream, QueryError> {
        let permits = self.permits(deadline, timeout).await?;
        let Some(runtime) = self.resources.runtime.0.as_ref() else {
            return Err(QueryError::Busy("the SQL engine is shutting down".into()));
        };
        let (sender, mut receiver) = mpsc::channel(STREAM_DEPTH);
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let context = self.context.clone();
        let sql = sql.to_string();
        let config = self.config.clone();
        let limits = self.resources.limits.clone();
        let task_outcome = outcome.clone();
        let task = runtime.spawn(async move {
            // Held for as long as the query runs: an aborted task drops them only once its
            // work has stopped (DataFusion's operators yield to the runtime, see
            // `EnsureCooperative`), so the permits count queries that really run.
            let _permits = permits;
            let work = run(&context, &sql, max_rows, &config, &limits, &sender);
            let result = match tokio::time::timeout_at(deadline, work).await {
                Ok(result) => result,
                Err(_) => Err(too_slow(timeout)),
            };
            if let Ok(mut slot) = task_outcome.lock() {
                *slot = Some(result);
            }
        });
        let task = AbortOnDrop(task);
        // The schema comes first, once the query is planned; if it does not, the outcome
        // says why.
        let first = tokio::time::timeout_at(deadline + TIMEOUT_GRACE, receiver.recv()).await;
        let schema = match first {
            Ok(Some(Piece::Schema(schema))) => schema,
            Ok(_) => {
                drop(task);
                return Err(match take(&outcome) {
                    Some(Err(error)) => error,
                    _ => QueryError::Internal("the query stopped before it was planned".into()),
                });
            }
            Err(_) => return Err(too_slow(timeout)),
        };
        Ok(QueryStream {
            schema,
            receiver,
            outcome,
            truncated: false,
            finished: false,
            _task: task,
        })
    }

    /// This tenant's permit, then a shared one, waiting at most until `deadline`.
    async fn permits(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<[OwnedSemaphorePermit; 2], QueryError> {
        let shutting_down = |_| QueryError::Busy("the SQL engine is shutting down".into());
        let tenant = tokio::time::timeout_at(deadline, self.tenant_permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                QueryError::Busy(format!(
                    "this tenant already runs {} SQL queries, the most it may run at once, and none finished within {}s; retry later or make the queries cheaper",
                    self.config.max_concurrent_per_tenant.max(1),
                    timeout.as_secs_f64()
                ))
            })?
            .map_err(shutting_down)?;
        let shared = tokio::time::timeout_at(deadline, self.resources.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                QueryError::Busy(format!(
                    "the server already runs {} SQL queries, the most it runs at once, and none finished within {}s; retry later",
                    self.config.max_concurrent.max(1),
                    timeout.as_secs_f64()
                ))
            })?
            .map_err(shutting_down)?;
        // A permit that came free at the deadline leaves no time to run: answering "busy"
        // says what happened better than a timeout of a query that never started.
        if Instant::now() >= deadline {
            return Err(QueryError::Busy(format!(
                "the SQL queries running before this one took the whole {}s limit; retry later",
                timeout.as_secs_f64()
            )));
        }
        Ok([tenant, shared])
    }

    /// The resources this engine draws on (for tests).
    pub fn resources(&self) -> &SqlResources {
        &self.resources
    }
}

/// How long past its deadline a caller waits for the query's own timeout to answer before
/// it gives up itself (only when the SQL runtime is too busy to run the task).
const TIMEOUT_GRACE: Duration = Duration::from_millis(500);

/// Batches made ahead of the reader: a slow reader slows the query instead of piling up
/// batches in memory.
const STREAM_DEPTH: usize = 2;

/// How the query's task ended: `Ok(truncated)` or why it failed; `None` while it runs (or
/// if it was aborted).
type Outcome = Arc<Mutex<Option<Result<bool, QueryError>>>>;

fn take(outcome: &Outcome) -> Option<Result<bool, QueryError>> {
    outcome.lock().ok().and_then(|mut slot| slot.take())
}

fn too_slow(timeout: Duration) -> QueryError {
    QueryError::TooExpensive(format!(
        "the query ran longer than the {}s limit; narrow it, e.g. WHERE start_time > now() - INTERVAL '1 hour'",
        timeout.as_secs_f64()
    ))
}

/// What the query's task sends: the schema once planned, then the batches.
enum Piece {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

/// Aborts the query's task when the caller lets go of its answer.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running query's answer, batch by batch. Dropping it stops the query.
pub struct QueryStream {
    schema: SchemaRef,
    receiver: mpsc::Receiver<Piece>,
    outcome: Outcome,
    truncated: bool,
    finished: bool,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch; `None` once every row was given (then [`QueryStream::truncated`]
    /// says whether rows were left out). An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        if self.finished {
            return None;
        }
        match self.receiver.recv().await {
            Some(Piece::Batch(batch)) => Some(Ok(batch)),
            Some(Piece::Schema(_)) => Some(Err(QueryError::Internal(
                "the query sent its schema twice".into(),
            ))),
            None => {
                self.finished = true;
                match take(&self.outcome) {
                    Some(Ok(truncated)) => {
                        self.truncated = truncated;
                        None
                    }
                    Some(Err(error)) => Some(Err(error)),
                    None => Some(Err(QueryError::Internal(
                        "the query stopped before its last row".into(),
                    ))),
                }
            }
        }
    }

    /// More rows existed than were given (known once [`QueryStream::next`] gave `None`).
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

/// Parses and plans `sql`, then refuses anything but a read-only query.
async fn plan(
    context: &SessionContext,
    sql: &str,
    config: &SqlConfig,
) -> Result<LogicalPlan, QueryError> {
    let plan = context
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(|e| classify(e, config))?;
    sandbox_options().verify_plan(&plan).map_err(|e| {
        QueryError::NotAllowed(format!(
            "{}; flowscope SQL is read-only: only queries (SELECT, WITH, EXPLAIN, SHOW) run",
            e.find_root()
        ))
    })?;
    Ok(plan)
}

/// Names errors only an engine's own parts know (a session config extension): a cluster's
/// querier says a node did not answer, where [`classify`] would call it the query's fault.
pub struct ErrorClassifier(pub Arc<ClassifyError>);

/// Classifies an error, or leaves it to [`classify`] with `None`.
pub type ClassifyError = dyn Fn(&DataFusionError) -> Option<QueryError> + Send + Sync;

impl std::fmt::Debug for ErrorClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorClassifier")
    }
}

/// [`classify`], after the session's own [`ErrorClassifier`] when it has one.
fn classify_with(
    error: DataFusionError,
    config: &SqlConfig,
    own: Option<&ErrorClassifier>,
) -> QueryError {
    match own.and_then(|own| (own.0)(&error)) {
        Some(classified) => classified,
        None => classify(error, config),
    }
}

/// How `EXPLAIN` shows a physical plan, for an engine whose planner is not DataFusion's
/// own (a session config extension; without it `EXPLAIN` is DataFusion's).
pub struct PlanRenderer(pub Arc<RenderPlan>);

/// Renders a physical plan as text.
pub type RenderPlan = dyn Fn(&dyn ExecutionPlan) -> String + Send + Sync;

impl std::fmt::Debug for PlanRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanRenderer")
    }
}

/// Plans, checks and runs `sql`, sending the schema and then each batch to `sender`;
/// `Ok(truncated)` once done.
async fn run(
    context: &SessionContext,
    sql: &str,
    max_rows: usize,
    config: &SqlConfig,
    limits: &CallLimits,
    sender: &mpsc::Sender<Piece>,
) -> Result<bool, QueryError> {
    let plan = plan(context, sql, config).await?;
    let state = context.state();
    let own = state.config().get_extension::<ErrorClassifier>();
    let classify = |e| classify_with(e, config, own.as_deref());
    let optimized = state.optimize(&plan).map_err(classify)?;
    check_constants(&optimized, limits)?;
    let schema = Arc::new(optimized.schema().as_arrow().clone());
    let stream = match (&optimized, state.config().get_extension::<PlanRenderer>()) {
        // DataFusion's EXPLAIN plans with its own planner, not the session's: an engine that
        // plans otherwise (a cluster's querier) shows the plan it really runs.
        (LogicalPlan::Explain(explain), Some(renderer))
            if explain.logical_optimization_succeeded =>
        {
            let physical = state
                .query_planner()
                .create_physical_plan(&explain.plan, &state)
                .await
                .map_err(classify)?;
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec!["logical_plan", "physical_plan"])),
                    Arc::new(StringArray::from(vec![
                        explain.plan.display_indent().to_string(),
                        (renderer.0)(physical.as_ref()),
                    ])),
                ],
            )
            .map_err(|e| QueryError::Internal(e.to_string()))?;
            let stream = futures::stream::iter([Ok(batch)]);
            Box::pin(RecordBatchStreamAdapter::new(schema.clone(), stream))
                as datafusion::execution::SendableRecordBatchStream
        }
        _ => {
            let physical = state
                .query_planner()
                .create_physical_plan(&optimized, &state)
                .await
                .map_err(classify)?;
            datafusion::physical_plan::execute_stream(physical, state.task_ctx())
                .map_err(classify)?
        }
    };
    let mut stream = stream;
    let stopped = || QueryError::Internal("the caller stopped reading".into());
    sender
        .send(Piece::Schema(schema))
        .await
        .map_err(|_| stopped())?;
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(classify)?;
        if rows + batch.num_rows() > max_rows {
            let rest = batch.slice(0, max_rows - rows);
            if rest.num_rows() > 0 {
                sender
                    .send(Piece::Batch(rest))
                    .await
                    .map_err(|_| stopped())?;
            }
            return Ok(true);
        }
        rows += batch.num_rows();
        if batch.num_rows() > 0 {
            sender
                .send(Piece::Batch(batch))
                .await
                .map_err(|_| stopped())?;
        }
    }
    Ok(false)
}

/// Refuses a plan holding a constant larger than a constant may be: a projected constant is
/// copied into every row of every batch, outside the memory pool. Constants come from the
/// SQL text or from folding calls of constants (`'a' || 'b'`, `repeat('x', 10)`).
fn check_constants(plan: &LogicalPlan, limits: &CallLimits) -> Result<(), QueryError> {
    let mut largest = 0usize;
    let visit = |expr: &Expr| {
        if let Expr::Literal(value, _) = expr {
            largest = largest.max(value.size());
        }
        Ok(TreeNodeRecursion::Continue)
    };
    let mut visit = visit;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| expr.apply(&mut visit))?;
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| QueryError::Internal(e.to_string()))?;
    if largest > limits.max_constant_bytes {
        return Err(limits.constant_too_large(largest));
    }
    Ok(())
}
