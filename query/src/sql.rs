//! The read-only SQL engine: DataFusion with the `spans` table, a sandbox, a memory pool,
//! a timeout and its own runtime.
//!
//! ```text
//!  sql ──> plan (parser recursion limit) ──> verify: no DDL, DML, COPY, SET ──> execute on
//!          the `flowscope-sql` runtime under a memory pool and a timeout ──> batches (row cap)
//! ```
//!
//! The sandbox never enables URL tables, file-reading table functions or table factories:
//! SQL can read the tables flowscope registers and nothing else on the machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::SessionStateDefaults;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::error::QueryError;
use crate::hex_id::HexId;
use crate::store::SpanStore;
use crate::table::SpansTable;

/// Limits of the SQL sandbox.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// Memory all running queries may hold together.
    pub memory_limit: usize,
    /// Wall time one query may take, from planning to its last row.
    pub timeout: Duration,
    /// Queries that may run at once; more wait (within their timeout).
    pub max_concurrent: usize,
    /// Worker threads of the SQL runtime, apart from ingest.
    pub threads: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            memory_limit: 1 << 30,
            timeout: Duration::from_secs(30),
            max_concurrent: 4,
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
            .enable_all()
            .build()
            .map_err(|e| internal(&e))?;
        Ok(Self {
            runtime_env,
            runtime: Arc::new(SqlRuntime(Some(runtime))),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
        })
    }
}

/// Runs user SQL against the store, read-only and bounded.
pub struct SqlEngine {
    context: SessionContext,
    resources: SqlResources,
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
            .with_table_function_list(table_functions)
            .build();
        let context = SessionContext::new_with_state(state);
        context.register_udf(HexId::udf().as_ref().clone());
        context
            .register_table("spans", Arc::new(SpansTable::new(store.clone())))
            .map_err(|e| internal(&e))?;
        Ok(Self {
            context,
            resources,
            config,
            store,
        })
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
        let too_slow = || {
            QueryError::TooExpensive(format!(
                "the query ran longer than the {}s limit; narrow it, e.g. WHERE start_time > now() - INTERVAL '1 hour'",
                timeout.as_secs_f64()
            ))
        };
        let work = async {
            let _permit = self
                .resources
                .permits
                .acquire()
                .await
                .map_err(|_| QueryError::Busy("the SQL engine is shutting down".into()))?;
            let context = self.context.clone();
            let sql = sql.to_string();
            let config = self.config.clone();
            let Some(runtime) = self.resources.runtime.0.as_ref() else {
                return Err(QueryError::Busy("the SQL engine is shutting down".into()));
            };
            let mut handle =
                runtime.spawn(async move { run(&context, &sql, max_rows, &config).await });
            // Dropping the handle would not stop the query: abort it if our caller gives up.
            let outcome = tokio::time::timeout(timeout, &mut handle).await;
            match outcome {
                Ok(joined) => joined.map_err(|e| QueryError::Internal(e.to_string()))?,
                Err(_) => {
                    handle.abort();
                    Err(too_slow())
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(too_slow()),
        }
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

async fn run(
    context: &SessionContext,
    sql: &str,
    max_rows: usize,
    config: &SqlConfig,
) -> Result<QueryOutput, QueryError> {
    let plan = plan(context, sql, config).await?;
    let frame = context
        .execute_logical_plan(plan)
        .await
        .map_err(|e| classify(e, config))?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = frame
        .execute_stream()
        .await
        .map_err(|e| classify(e, config))?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| classify(e, config))?;
        if rows + batch.num_rows() > max_rows {
            batches.push(batch.slice(0, max_rows - rows));
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok(QueryOutput {
        schema,
        batches,
        truncated,
    })
}
