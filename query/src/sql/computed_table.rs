//! A table whose one batch is computed when it is scanned, on a blocking thread: what every
//! graph table and table function returns once its arguments are checked, since a window
//! older than the live graph may be rebuilt from the stored spans (seconds, not
//! microseconds).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::QueryError;

type Compute = dyn Fn() -> Result<RecordBatch, QueryError> + Send + Sync;

/// A schema known at planning and the work that fills it at execution.
pub(crate) struct ComputedTable {
    schema: SchemaRef,
    compute: Arc<Compute>,
}

impl std::fmt::Debug for ComputedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputedTable")
            .field("schema", &self.schema)
            .finish()
    }
}

impl ComputedTable {
    pub(crate) fn new(
        schema: SchemaRef,
        compute: impl Fn() -> Result<RecordBatch, QueryError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            schema,
            compute: Arc::new(compute),
        })
    }
}

#[async_trait]
impl TableProvider for ComputedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let compute = self.compute.clone();
        let batch = tokio::task::spawn_blocking(move || compute())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
