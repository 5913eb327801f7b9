//! The `spans` table: a DataFusion `TableProvider` over the memtable and Parquet segments.
//!
//! ```text
//!  filters ──> segment pruning (start_time range, service_name) ──> Parquet scan (predicate,
//!         │                                                          bloom filter on trace_id)
//!         └──> id literals turned into binary                     ─┐
//!  memtable batches ──> memory scan ───────────────────────────────┴─> union ──> ids as hex
//! ```
//!
//! Storage keeps ids as fixed-size binary; the table shows them as lowercase hex. Filters
//! are `Inexact`: DataFusion re-applies them above the scan, so pruning here only has to
//! be safe (never drop a matching row), not complete.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use flowscope_model::{columns, sql_schema, storage_schema};

use crate::sql::hex_id::HexId;
use crate::store::SpanStore;
use crate::store::segment::{Location, Segment};

/// The `spans` table.
#[derive(Debug)]
pub struct SpansTable {
    store: Arc<SpanStore>,
}

impl SpansTable {
    pub fn new(store: Arc<SpanStore>) -> Self {
        Self { store }
    }
}

fn is_id_column(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Column(column) => {
            let name = column.name.as_str();
            columns::ID_COLUMNS.iter().position(|id| *id == name)
        }
        _ => None,
    }
}

fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

fn id_literal(column: usize, text: &str) -> Option<Expr> {
    let bytes = flowscope_model::ids::from_hex(text)?;
    let len = if column == 0 { 16 } else { 8 };
    // A literal of another length can match no stored id; `false` prunes everything.
    if bytes.len() != len {
        return Some(Expr::Literal(ScalarValue::Boolean(Some(false)), None));
    }
    Some(Expr::Literal(
        ScalarValue::FixedSizeBinary(len as i32, Some(bytes)),
        None,
    ))
}

fn references_id(expr: &Expr) -> bool {
    let mut found = false;
    let _ = expr.apply(|e| {
        if is_id_column(e).is_some() {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Turns `trace_id = '<hex>'` (and `IN (...)`, either side) into a comparison with binary
/// literals that the Parquet reader can check against statistics and bloom filters.
/// Returns `None` for any other use of an id column: such a filter stays above the scan.
fn rewrite_id_filter(expr: &Expr) -> Option<Expr> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (column, text) = match (is_id_column(left), is_id_column(right)) {
                (Some(c), None) => (c, string_literal(right)?),
                (None, Some(c)) => (c, string_literal(left)?),
                _ => return None,
            };
            let literal = id_literal(column, text)?;
            if matches!(literal, Expr::Literal(ScalarValue::Boolean(_), _)) {
                return Some(literal);
            }
            let column_expr = if is_id_column(left).is_some() {
                left
            } else {
                right
            };
            Some(Expr::BinaryExpr(BinaryExpr::new(
                column_expr.clone(),
                Operator::Eq,
                Box::new(literal),
            )))
        }
        Expr::InList(list) if !list.negated => {
            let column = is_id_column(&list.expr)?;
            let mut values = Vec::new();
            for item in &list.list {
                let literal = id_literal(column, string_literal(item)?)?;
                if !matches!(literal, Expr::Literal(ScalarValue::Boolean(_), _)) {
                    values.push(literal);
                }
            }
            if values.is_empty() {
                return Some(Expr::Literal(ScalarValue::Boolean(Some(false)), None));
            }
            Some(list.expr.as_ref().clone().in_list(values, false))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => match (rewrite_or_keep(left), rewrite_or_keep(right)) {
            (Some(l), Some(r)) => Some(l.and(r)),
            (Some(one), None) | (None, Some(one)) => Some(one),
            (None, None) => None,
        },
        _ => None,
    }
}

fn rewrite_or_keep(expr: &Expr) -> Option<Expr> {
    if references_id(expr) {
        rewrite_id_filter(expr)
    } else {
        Some(expr.clone())
    }
}

/// The time range (inclusive, ns) and services that every row passing `filters` must have.
#[derive(Debug, Default, PartialEq)]
pub struct Pruning {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub services: Option<Vec<String>>,
}

fn timestamp_ns(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
            ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
            ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
            ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
            _ => None,
        },
        // `start_time > TIMESTAMP '...'` may arrive wrapped in a cast to the column's type.
        Expr::Cast(cast) => timestamp_ns(&cast.expr),
        Expr::TryCast(cast) => timestamp_ns(&cast.expr),
        _ => None,
    }
}

fn is_column(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name == name)
}

impl Pruning {
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut pruning = Self::default();
        for filter in filters {
            for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
                pruning.add(conjunct);
            }
        }
        pruning
    }

    fn add(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, value) = if is_column(left, columns::START_TIME) {
                    (*op, right.as_ref())
                } else if is_column(right, columns::START_TIME) {
                    match op.swap() {
                        Some(swapped) => (swapped, left.as_ref()),
                        None => return,
                    }
                } else {
                    if *op == Operator::Eq {
                        self.add_service(left, right);
                    }
                    return;
                };
                let Some(ns) = timestamp_ns(value) else {
                    return;
                };
                match op {
                    Operator::Gt | Operator::GtEq | Operator::Eq => {
                        self.from = Some(self.from.map_or(ns, |f| f.max(ns)))
                    }
                    _ => {}
                }
                match op {
                    Operator::Lt | Operator::LtEq | Operator::Eq => {
                        self.to = Some(self.to.map_or(ns, |t| t.min(ns)))
                    }
                    _ => {}
                }
            }
            Expr::Between(between)
                if !between.negated && is_column(&between.expr, columns::START_TIME) =>
            {
                if let (Some(low), Some(high)) =
                    (timestamp_ns(&between.low), timestamp_ns(&between.high))
                {
                    self.from = Some(self.from.map_or(low, |f| f.max(low)));
                    self.to = Some(self.to.map_or(high, |t| t.min(high)));
                }
            }
            Expr::InList(list) if !list.negated && is_column(&list.expr, columns::SERVICE_NAME) => {
                let names: Option<Vec<String>> = list
                    .list
                    .iter()
                    .map(|e| string_literal(e).map(str::to_string))
                    .collect();
                if let Some(names) = names {
                    self.services = Some(names);
                }
            }
            _ => {}
        }
    }

    fn add_service(&mut self, left: &Expr, right: &Expr) {
        let name = if is_column(left, columns::SERVICE_NAME) {
            string_literal(right)
        } else if is_column(right, columns::SERVICE_NAME) {
            string_literal(left)
        } else {
            None
        };
        if let Some(name) = name {
            self.services = Some(vec![name.to_string()]);
        }
    }

    pub fn keeps(&self, segment: &Segment) -> bool {
        segment.overlaps(self.from, self.to)
            && self
                .services
                .as_ref()
                .is_none_or(|services| segment.may_contain_service(services))
    }

    /// Whether a file of spans starting in `[min_start_ns, max_start_ns]`, with `services`
    /// (`None`: too many to list), may hold a row the filters keep.
    pub fn keeps_file(
        &self,
        min_start_ns: i64,
        max_start_ns: i64,
        services: Option<&std::collections::BTreeSet<String>>,
    ) -> bool {
        self.from.is_none_or(|from| max_start_ns >= from)
            && self.to.is_none_or(|to| min_start_ns <= to)
            && match (&self.services, services) {
                (Some(wanted), Some(listed)) => wanted.iter().any(|s| listed.contains(s)),
                _ => true,
            }
    }
}

pub fn parquet_predicate(
    state: &dyn Session,
    filters: &[Expr],
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let kept: Vec<Expr> = filters.iter().filter_map(rewrite_or_keep).collect();
    let Some(predicate) = conjunction(kept) else {
        return Ok(None);
    };
    let df_schema = DFSchema::try_from(storage_schema())?;
    // A filter this rewrite cannot express on the stored types is simply not pushed down.
    Ok(state.create_physical_expr(predicate, &df_schema).ok())
}

pub fn hex_projection(
    input: &Arc<dyn ExecutionPlan>,
    state: &dyn Session,
) -> Result<Vec<(Arc<dyn PhysicalExpr>, String)>> {
    let schema = input.schema();
    let hex = HexId::udf();
    let config = Arc::new(state.config_options().clone());
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), index));
            let expr: Arc<dyn PhysicalExpr> =
                if matches!(field.data_type(), DataType::FixedSizeBinary(_)) {
                    Arc::new(ScalarFunctionExpr::try_new(
                        hex.clone(),
                        vec![column],
                        &schema,
                        config.clone(),
                    )?)
                } else {
                    column
                };
            Ok((expr, field.name().clone()))
        })
        .collect()
}

/// `segments` grouped by the place they are in, one scan each: the local disk, or a bucket
/// (an object store, registered with `runtime` under its URL).
pub fn files_by_place<'a>(
    segments: impl Iterator<Item = &'a Arc<Segment>>,
    runtime: &RuntimeEnv,
) -> Vec<(ObjectStoreUrl, Vec<PartitionedFile>)> {
    let mut places: Vec<(ObjectStoreUrl, Vec<PartitionedFile>)> = Vec::new();
    for segment in segments {
        let (url, file) = match &segment.location {
            Location::File(path) => (
                ObjectStoreUrl::local_filesystem(),
                PartitionedFile::new(path.to_string_lossy(), segment.bytes),
            ),
            Location::Object(objects, location) => {
                runtime.register_object_store(objects.url().as_ref(), objects.store().clone());
                (
                    objects.url().clone(),
                    PartitionedFile::new(location.to_string(), segment.bytes),
                )
            }
        };
        match places.iter_mut().find(|(known, _)| *known == url) {
            Some((_, files)) => files.push(file),
            None => places.push((url, vec![file])),
        }
    }
    places
}

/// A scan of stored span files (storage schema, `projection` of its columns) in the object
/// store registered under `url`, in up to `partitions` groups, with `predicate` pushed
/// into the Parquet reader: the one way a `spans` scan reads files, on one node or in a
/// cluster.
pub fn parquet_scan(
    runtime: &Arc<RuntimeEnv>,
    url: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
    projection: &[usize],
    predicate: Option<Arc<dyn PhysicalExpr>>,
    partitions: usize,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    // Footers and page indexes are read once per file and kept (bounded) in the runtime's
    // metadata cache: a remote file's are two ranged GETs saved per query.
    let reader = CachedParquetFileReaderFactory::new(
        runtime.object_store(&url)?,
        runtime.cache_manager.get_file_metadata_cache(),
    );
    let mut source =
        ParquetSource::new(storage_schema()).with_parquet_file_reader_factory(Arc::new(reader));
    if let Some(predicate) = predicate {
        source = source.with_predicate(predicate);
    }
    let mut groups = vec![Vec::new(); partitions.max(1).min(files.len().max(1))];
    for (i, file) in files.into_iter().enumerate() {
        let slot = i % groups.len();
        groups[slot].push(file);
    }
    let config = FileScanConfigBuilder::new(url, Arc::new(source))
        .with_projection_indices(Some(projection.to_vec()))?
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

#[async_trait]
impl TableProvider for SpansTable {
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
        let view = self.store.view();
        let pruning = Pruning::from_filters(filters);
        let partitions = state.config().target_partitions().max(1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let memory = view.memory_batches();
        if !memory.is_empty() {
            let mut parts = vec![Vec::new(); partitions.min(memory.len())];
            for (i, batch) in memory.into_iter().enumerate() {
                let slot = i % parts.len();
                parts[slot].push(batch);
            }
            inputs.push(MemorySourceConfig::try_new_exec(
                &parts,
                schema.clone(),
                Some(projection.clone()),
            )?);
        }

        let places = files_by_place(
            view.segments.iter().filter(|s| pruning.keeps(s)),
            state.runtime_env(),
        );
        for (url, files) in places {
            inputs.push(parquet_scan(
                state.runtime_env(),
                url,
                files,
                &projection,
                parquet_predicate(state, filters)?,
                partitions,
                if filters.is_empty() { limit } else { None },
            )?);
        }

        let input: Arc<dyn ExecutionPlan> = if inputs.is_empty() {
            Arc::new(EmptyExec::new(Arc::new(schema.project(&projection)?)))
        } else {
            UnionExec::try_new(inputs)?
        };
        let exprs = hex_projection(&input, state)?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    }

    fn check_pruning(filters: Vec<Expr>, expected: Pruning) {
        assert_eq!(Pruning::from_filters(&filters), expected);
    }

    #[test]
    fn pruning_reads_time_ranges_and_services_from_filters() {
        check_pruning(
            vec![col("start_time").gt(ts(100))],
            Pruning {
                from: Some(100),
                ..Pruning::default()
            },
        );
        check_pruning(
            vec![
                ts(500)
                    .gt(col("start_time"))
                    .and(col("start_time").gt_eq(ts(100))),
            ],
            Pruning {
                from: Some(100),
                to: Some(500),
                ..Pruning::default()
            },
        );
        check_pruning(
            vec![col("service_name").eq(lit("orders"))],
            Pruning {
                services: Some(vec!["orders".into()]),
                ..Pruning::default()
            },
        );
        check_pruning(vec![col("end_time").gt(ts(100))], Pruning::default());
        check_pruning(
            vec![col("start_time").gt(ts(1)).or(col("name").eq(lit("x")))],
            Pruning::default(),
        );
    }

    #[test]
    fn id_filters_become_binary_and_other_id_uses_stay_above_the_scan() {
        let hex = "5b8efff798038103d269b633813fc60c";
        let rewritten = rewrite_or_keep(&col("trace_id").eq(lit(hex))).expect("rewritten");
        let bytes = flowscope_model::ids::from_hex(hex).expect("hex");
        assert_eq!(
            rewritten,
            col("trace_id").eq(lit(ScalarValue::FixedSizeBinary(16, Some(bytes))))
        );
        assert_eq!(
            rewrite_or_keep(&col("span_id").eq(lit("abc"))),
            None,
            "odd-length hex is not an id: keep the filter above the scan"
        );
        assert_eq!(
            rewrite_or_keep(&col("span_id").eq(lit("abcd"))),
            Some(lit(false)),
            "a 2-byte id matches nothing"
        );
        assert_eq!(rewrite_or_keep(&col("trace_id").like(lit("5b%"))), None);
        let name = col("name").eq(lit("GET"));
        assert_eq!(rewrite_or_keep(&name), Some(name));
    }
}
