//! The graph in SQL: tables `nodes`, `edges`, `feedback_loops` over the live window (the last
//! 15 minutes) and table functions `nodes_between(from, to)`, `edges_between(from, to)`,
//! `feedback_loops_between(from, to)` over any window the live graph holds (its horizon, one
//! hour by default; windows older than that are not computed from stored spans yet).
//!
//! ```text
//!  SELECT ... FROM edges ──> GraphTable::scan ──> LiveGraph::snapshot(window) ──> Arrow batch
//! ```

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use flowscope_graph::{LiveGraph, Snapshot};

use crate::error::QueryError;
use crate::sql::SqlEngine;

/// The live window the plain graph tables show.
pub const LIVE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The live graph, shared by the graph stage (which writes it) and readers.
#[derive(Debug, Clone)]
pub struct GraphView(Arc<RwLock<LiveGraph>>);

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl GraphView {
    pub fn new(graph: Arc<RwLock<LiveGraph>>) -> Self {
        Self(graph)
    }

    pub fn shared(&self) -> &Arc<RwLock<LiveGraph>> {
        &self.0
    }

    /// The graph of `[from_ns, to_ns)`.
    pub fn snapshot(&self, from_ns: i64, to_ns: i64) -> Snapshot {
        match self.0.read() {
            Ok(graph) => graph.snapshot(from_ns, to_ns),
            Err(poisoned) => poisoned.into_inner().snapshot(from_ns, to_ns),
        }
    }

    /// The graph of the last `LIVE_WINDOW`.
    pub fn live(&self) -> Snapshot {
        let now = now_ns();
        self.snapshot(now - LIVE_WINDOW.as_nanos() as i64, now + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Nodes,
    Edges,
    Loops,
}

fn timestamp() -> DataType {
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
enum Window {
    Live,
    Fixed(i64, i64),
}

/// One graph table, over the live window or a fixed one.
#[derive(Debug)]
pub struct GraphTable {
    which: Which,
    graph: GraphView,
    window: Window,
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
            Window::Live => self.graph.live(),
            Window::Fixed(from, to) => self.graph.snapshot(from, to),
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

fn timestamp_argument(expr: &Expr, name: &str) -> Result<i64> {
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

impl TableFunctionImpl for GraphTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [from, to] = args.exprs() else {
            return plan_err!(
                "this function takes two timestamps: (from, to), e.g. (now() - INTERVAL '1 hour', now())"
            );
        };
        let (from, to) = (
            timestamp_argument(from, "from")?,
            timestamp_argument(to, "to")?,
        );
        if to <= from {
            return plan_err!("the window is empty: `to` must be later than `from`");
        }
        Ok(Arc::new(GraphTable {
            which: self.which,
            graph: self.graph.clone(),
            window: Window::Fixed(from, to),
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
            window: Window::Live,
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
