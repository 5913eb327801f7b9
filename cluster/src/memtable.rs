//! `IngesterScanExec`: the spans one ingester holds past a WAL position (its memory, and
//! files it committed after the querier read the catalog), read where they are: the plan
//! node is sent to that ingester's worker and executed there, against its own store.
//!
//! Together with the Parquet scan of the files the querier's catalog snapshot named, every
//! row is read exactly once: a file is in the snapshot iff its WAL position is at most the
//! node's committed position `since` in that snapshot; this scan reads the frozen memtables
//! and the files past `since`, and the active memtable (always past any commit).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use flowscope_model::storage_schema;
use flowscope_query::SpanStore;
use flowscope_query::sql::spans_table::{files_by_place, parquet_scan};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

/// One ingester to read: its node id, its worker's URL and the committed WAL position the
/// querier's catalog snapshot gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub node: String,
    pub url: String,
    pub since: u64,
}

/// This node's stores, by tenant, for the plans sent to its worker (a session extension).
#[derive(Debug, Default)]
pub struct LocalStores {
    pub node: String,
    pub stores: BTreeMap<String, Arc<SpanStore>>,
}

/// What is sent over the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    tenant: String,
    projection: Vec<usize>,
    targets: Vec<Target>,
}

/// The scan of the ingesters in `targets` (one per task once distributed).
#[derive(Debug, Clone)]
pub struct IngesterScanExec {
    tenant: String,
    projection: Vec<usize>,
    targets: Vec<Target>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl IngesterScanExec {
    pub fn try_new(tenant: String, projection: Vec<usize>, targets: Vec<Target>) -> Result<Self> {
        let schema = Arc::new(storage_schema().project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            tenant,
            projection,
            targets,
            schema,
            properties,
        })
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn projection(&self) -> &[usize] {
        &self.projection
    }

    /// The batches and files of `store` past `since`, projected.
    fn read_local(
        &self,
        store: &SpanStore,
        since: u64,
        context: &Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let view = store.view();
        let mut batches: Vec<RecordBatch> = Vec::new();
        for frozen in view.frozen.iter().filter(|f| f.wal_seq > since) {
            for batch in &frozen.batches {
                batches.push(batch.project(&self.projection)?);
            }
        }
        for batch in &view.memory {
            batches.push(batch.project(&self.projection)?);
        }
        let memory = futures::stream::iter(batches.into_iter().map(Ok));
        // Files committed after the querier's snapshot: read here, as the memory they were.
        let places = files_by_place(
            view.segments.iter().filter(|s| s.wal_seq > since),
            &context.runtime_env(),
        );
        let mut files = Vec::new();
        for (url, list) in places {
            let scan = parquet_scan(
                &context.runtime_env(),
                url,
                list,
                &self.projection,
                None,
                1,
                None,
            )?;
            for partition in 0..scan.properties().partitioning.partition_count() {
                files.push(scan.execute(partition, context.clone())?);
            }
        }
        let files = futures::stream::iter(files).flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            memory.chain(files).map_err(DataFusionError::from),
        )))
    }
}

impl DisplayAs for IngesterScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{}@{}>{}", t.node, t.url, t.since))
            .collect();
        write!(
            f,
            "IngesterScanExec: tenant={}, ingesters=[{}]",
            self.tenant,
            targets.join(", ")
        )
    }
}

impl ExecutionPlan for IngesterScanExec {
    fn name(&self) -> &str {
        "IngesterScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // A task without an ingester (the padding of a lone one) reads nothing.
        if self.targets.is_empty() {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::empty(),
            )));
        }
        let [target] = self.targets.as_slice() else {
            return Err(DataFusionError::Execution(format!(
                "a scan of {} ingesters cannot run in one task; the query plan keeps it from being spread over the cluster",
                self.targets.len()
            )));
        };
        let Some(local) = context.session_config().get_extension::<LocalStores>() else {
            return Err(DataFusionError::Execution(format!(
                "the scan of ingester {} ran on a node that holds no stores",
                target.node
            )));
        };
        if local.node != target.node {
            return Err(DataFusionError::Execution(format!(
                "the scan of ingester {} was routed to node {}",
                target.node, local.node
            )));
        }
        let Some(store) = local.stores.get(&self.tenant) else {
            return Err(DataFusionError::Execution(format!(
                "ingester {} has no store of tenant {}",
                target.node, self.tenant
            )));
        };
        self.read_local(store, target.since, &context)
    }
}

/// Sends [`IngesterScanExec`] as JSON (tenant, projection, targets).
#[derive(Debug)]
pub struct IngesterScanCodec;

impl PhysicalExtensionCodec for IngesterScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wire: Wire = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("IngesterScanExec: {e}")))?;
        Ok(Arc::new(IngesterScanExec::try_new(
            wire.tenant,
            wire.projection,
            wire.targets,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = node.downcast_ref::<IngesterScanExec>() else {
            return Err(DataFusionError::Internal(format!(
                "IngesterScanCodec cannot encode {}",
                node.name()
            )));
        };
        let wire = Wire {
            tenant: scan.tenant.clone(),
            projection: scan.projection.clone(),
            targets: scan.targets.clone(),
        };
        serde_json::to_writer(buf, &wire)
            .map_err(|e| DataFusionError::Internal(format!("IngesterScanExec: {e}")))
    }
}
