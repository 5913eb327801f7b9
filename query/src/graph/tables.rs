//! The graph in SQL: tables `nodes`, `edges`, `feedback_loops` over the live window (the last
//! 15 minutes) and table functions `nodes_between(from, to)`, `edges_between(from, to)`,
//! `feedback_loops_between(from, to)` over any window: the live graph answers windows in its
//! horizon (one hour by default), older ones are rebuilt from the stored spans (`history.rs`)
//! with the same code, so both give the same answer. Also the argument checks the graph's
//! other table functions share.
//!
//! ```text
//!  SELECT ... FROM edges ──> GraphTable::scan ──> GraphView::judged(window) ──> Arrow batch
//! ```

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use flowscope_graph::Snapshot;

use crate::error::QueryError;
use crate::graph::GraphView;
use crate::sql::SqlEngine;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Nodes,
    Edges,
    Loops,
}

pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn schema_of(which: Which) -> SchemaRef {
    let window = [
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ];
    let mut fields = match which {
        Which::Nodes => vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("calls", DataType::Int64, false),
            Field::new("errors", DataType::Int64, false),
            Field::new("error_rate", DataType::Float64, false),
            Field::new("p50_ms", DataType::Float64, false),
            Field::new("p95_ms", DataType::Float64, false),
            Field::new("p99_ms", DataType::Float64, false),
            Field::new("health", DataType::Utf8, false),
            Field::new("health_reason", DataType::Utf8, false),
        ],
        Which::Edges => vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("calls", DataType::Int64, false),
            Field::new("errors", DataType::Int64, false),
            Field::new("error_rate", DataType::Float64, false),
            Field::new("p50_ms", DataType::Float64, false),
            Field::new("p95_ms", DataType::Float64, false),
            Field::new("p99_ms", DataType::Float64, false),
            Field::new("bytes", DataType::Int64, false),
            Field::new("amplification", DataType::Float64, false),
            Field::new("trace_loops", DataType::Int64, false),
            Field::new("health", DataType::Utf8, false),
            Field::new("health_reason", DataType::Utf8, false),
            Field::new("amplified", DataType::Boolean, false),
        ],
        Which::Loops => vec![
            Field::new("id", DataType::Utf8, false),
            Field::new(
                "nodes",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("length", DataType::Int64, false),
            Field::new("calls", DataType::Int64, false),
            Field::new("trace_loops", DataType::Int64, false),
        ],
    };
    fields.extend(window);
    Arc::new(Schema::new(fields))
}

fn rate(errors: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    }
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn texts(values: impl Iterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn ints(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        values.map(|v| v.min(i64::MAX as u64) as i64),
    ))
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn batch_of(which: Which, snapshot: &Snapshot) -> Result<RecordBatch> {
    let schema = schema_of(which);
    let mut columns: Vec<ArrayRef> = match which {
        Which::Nodes => {
            let n = &snapshot.nodes;
            vec![
                strings(n.iter().map(|x| x.id.as_str())),
                strings(n.iter().map(|x| x.kind.as_str())),
                ints(n.iter().map(|x| x.calls_in)),
                ints(n.iter().map(|x| x.errors_in)),
                floats(n.iter().map(|x| rate(x.errors_in, x.calls_in))),
                floats(n.iter().map(|x| x.p50_ms)),
                floats(n.iter().map(|x| x.p95_ms)),
                floats(n.iter().map(|x| x.p99_ms)),
                strings(n.iter().map(|x| x.health.level.as_str())),
                texts(n.iter().map(|x| x.health.reasons.join("; "))),
            ]
        }
        Which::Edges => {
            let e = &snapshot.edges;
            vec![
                strings(e.iter().map(|x| x.source.as_str())),
                strings(e.iter().map(|x| x.target.as_str())),
                strings(e.iter().map(|x| x.kind.as_str())),
                ints(e.iter().map(|x| x.calls)),
                ints(e.iter().map(|x| x.errors)),
                floats(e.iter().map(|x| rate(x.errors, x.calls))),
                floats(e.iter().map(|x| x.p50_ms)),
                floats(e.iter().map(|x| x.p95_ms)),
                floats(e.iter().map(|x| x.p99_ms)),
                ints(e.iter().map(|x| x.bytes)),
                floats(e.iter().map(|x| x.amplification)),
                ints(e.iter().map(|x| x.trace_loops)),
                strings(e.iter().map(|x| x.health.level.as_str())),
                texts(e.iter().map(|x| x.health.reasons.join("; "))),
                Arc::new(BooleanArray::from_iter(e.iter().map(|x| Some(x.amplified)))),
            ]
        }
        Which::Loops => {
            let l = &snapshot.loops;
            let mut nodes = ListBuilder::new(StringBuilder::new());
            for lp in l {
                for node in &lp.nodes {
                    nodes.values().append_value(node);
                }
                nodes.append(true);
            }
            vec![
                strings(l.iter().map(|x| x.id.as_str())),
                Arc::new(nodes.finish()),
                ints(l.iter().map(|x| x.nodes.len() as u64)),
                ints(l.iter().map(|x| x.calls)),
                ints(l.iter().map(|x| x.trace_loops)),
            ]
        }
    };
    let rows = columns.first().map_or(0, |c| c.len());
    let window = |ns: i64| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(vec![ns; rows]).with_timezone("UTC"))
    };
    columns.push(window(snapshot.from_ns));
    columns.push(window(snapshot.to_ns));
    // The list column's item field must match the schema exactly.
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[derive(Debug, Clone, Copy)]
enum TableWindow {
    Live,
    Fixed(i64, i64),
}

/// One graph table, over the live window or a fixed one.
#[derive(Debug)]
pub struct GraphTable {
    which: Which,
    graph: GraphView,
    window: TableWindow,
}

#[async_trait]
impl TableProvider for GraphTable {
    fn schema(&self) -> SchemaRef {
        schema_of(self.which)
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
        let snapshot = match self.window {
            TableWindow::Live => self.graph.live(),
            TableWindow::Fixed(from, to) => {
                // A window older than the horizon is rebuilt from Parquet: off the runtime.
                let graph = self.graph.clone();
                tokio::task::spawn_blocking(move || graph.judged(from, to))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        };
        let batch = batch_of(self.which, &snapshot)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// `edges_between(from, to)` and its siblings: the graph of a fixed window.
#[derive(Debug)]
pub struct GraphTableFunction {
    which: Which,
    graph: GraphView,
}

pub(crate) fn timestamp_argument(expr: &Expr, name: &str) -> Result<i64> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    let value = match simplifier.simplify(expr.clone())? {
        Expr::Literal(value, _) => value,
        other => {
            return plan_err!(
                "{name} must be a constant timestamp such as now() - INTERVAL '1 hour', not {other}"
            );
        }
    };
    match value.cast_to(&timestamp())? {
        ScalarValue::TimestampNanosecond(Some(ns), _) => Ok(ns),
        _ => plan_err!("{name} must be a timestamp, e.g. TIMESTAMP '2026-11-29T06:00:00Z'"),
    }
}

/// A table function's `(from, to)` window in unix ns: two constant timestamps, `to` later.
/// `usage` is what the error says the function takes, e.g. "incidents takes two timestamps".
pub(crate) fn window_arguments(args: &TableFunctionArgs, usage: &str) -> Result<(i64, i64)> {
    let [from, to] = args.exprs() else {
        return plan_err!("{usage}: (from, to), e.g. (now() - INTERVAL '1 hour', now())");
    };
    let (from, to) = (
        timestamp_argument(from, "from")?,
        timestamp_argument(to, "to")?,
    );
    if to <= from {
        return plan_err!("the window is empty: `to` must be later than `from`");
    }
    Ok((from, to))
}

impl TableFunctionImpl for GraphTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (from, to) = window_arguments(&args, "this function takes two timestamps")?;
        Ok(Arc::new(GraphTable {
            which: self.which,
            graph: self.graph.clone(),
            window: TableWindow::Fixed(from, to),
        }))
    }
}

/// Registers `nodes`, `edges`, `feedback_loops` and their `*_between` table functions.
pub fn register(engine: &SqlEngine, graph: &GraphView) -> Result<(), QueryError> {
    for (name, which) in [
        ("nodes", Which::Nodes),
        ("edges", Which::Edges),
        ("feedback_loops", Which::Loops),
    ] {
        let table = GraphTable {
            which,
            graph: graph.clone(),
            window: TableWindow::Live,
        };
        engine.register_table(name, Arc::new(table))?;
        let function = GraphTableFunction {
            which,
            graph: graph.clone(),
        };
        engine.register_table_function(&format!("{name}_between"), Arc::new(function));
    }
    Ok(())
}
