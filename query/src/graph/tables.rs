//! The graph in SQL: tables `nodes`, `edges`, `feedback_loops` over the live window (the last
//! 15 minutes) and table functions `nodes_between(from, to)`, `edges_between(from, to)`,
//! `feedback_loops_between(from, to)` over any window: the live graph answers windows in its
//! horizon (one hour by default), older ones are rebuilt from the stored spans (`history.rs`)
//! with the same code, so both give the same answer. Also the argument checks the graph's
//! other table functions share.
//!
//! ```text
//!  SELECT ... FROM edges ──> ComputedTable (scanned on a blocking thread) ──> GraphView::live
//!      or GraphView::judged(window) ──> Arrow batch
//! ```

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use flowscope_graph::Snapshot;

use crate::error::QueryError;
use crate::graph::GraphView;
use crate::sql::SqlEngine;
use crate::sql::computed_table::ComputedTable;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Nodes,
    Edges,
    Loops,
}

pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The figures of a node or an edge, in the order both tables show them.
fn figure_fields() -> Vec<Field> {
    let mut fields = vec![
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
    ];
    for name in ["error_rate", "p50_ms", "p95_ms", "p99_ms"] {
        fields.push(Field::new(name, DataType::Float64, false));
    }
    fields
}

fn health_fields() -> Vec<Field> {
    vec![
        Field::new("health", DataType::Utf8, false),
        Field::new("health_reason", DataType::Utf8, false),
    ]
}

fn schema_of(which: Which) -> SchemaRef {
    let window = [
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ];
    let mut fields = match which {
        Which::Nodes => [
            vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
            ],
            figure_fields(),
            health_fields(),
            // A service's most frequent namespace, environment, zone, ... (empty for the
            // other kinds), typed as `spans.resource_attributes`.
            vec![Field::new(
                "attributes",
                flowscope_model::schema::attribute_map_type(),
                false,
            )],
        ]
        .concat(),
        Which::Edges => [
            vec![
                Field::new("source", DataType::Utf8, false),
                Field::new("target", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
            ],
            figure_fields(),
            vec![
                Field::new("bytes", DataType::Int64, false),
                Field::new("amplification", DataType::Float64, false),
                Field::new("trace_loops", DataType::Int64, false),
            ],
            health_fields(),
            vec![Field::new("amplified", DataType::Boolean, false)],
        ]
        .concat(),
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

/// One map per node, in the type of `spans.resource_attributes`.
fn attribute_maps<'a>(
    maps: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
) -> Result<ArrayRef> {
    use arrow::array::{MapBuilder, MapFieldNames};
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    };
    let mut builder = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for map in maps {
        for (key, value) in map {
            builder.keys().append_value(key);
            builder.values().append_value(value);
        }
        builder.append(true)?;
    }
    Ok(Arc::new(builder.finish()))
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
                attribute_maps(n.iter().map(|x| x.attributes.as_ref()))?,
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
                for node in lp.nodes.iter() {
                    nodes.values().append_value(node);
                }
                nodes.append(true);
            }
            vec![
                strings(l.iter().map(|x| &*x.id)),
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

/// One graph table over the live window, or over `(from, to)`.
fn graph_table(which: Which, graph: &GraphView, window: Option<(i64, i64)>) -> Arc<ComputedTable> {
    let graph = graph.clone();
    ComputedTable::new(schema_of(which), move || {
        let snapshot = match window {
            None => graph.live(),
            Some((from, to)) => graph.judged(from, to)?,
        };
        batch_of(which, &snapshot).map_err(|e| QueryError::Internal(e.to_string()))
    })
}

/// A table function over the graph: `plan` checks the call's arguments when the query is
/// planned and returns the table that computes its rows when scanned.
pub(crate) struct GraphFunction<P> {
    graph: GraphView,
    plan: P,
}

impl<P> std::fmt::Debug for GraphFunction<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphFunction")
            .field("graph", &self.graph)
            .finish()
    }
}

/// The table function whose calls `plan` answers.
pub(crate) fn graph_function<P>(graph: &GraphView, plan: P) -> Arc<dyn TableFunctionImpl>
where
    P: Fn(&GraphView, &[Expr]) -> Result<Arc<dyn TableProvider>> + Send + Sync + 'static,
{
    Arc::new(GraphFunction {
        graph: graph.clone(),
        plan,
    })
}

impl<P> TableFunctionImpl for GraphFunction<P>
where
    P: Fn(&GraphView, &[Expr]) -> Result<Arc<dyn TableProvider>> + Send + Sync + 'static,
{
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        (self.plan)(&self.graph, args.exprs())
    }
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
pub(crate) fn window_arguments(args: &[Expr], usage: &str) -> Result<(i64, i64)> {
    let [from, to] = args else {
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

/// One table of the graph folded by the resource attribute `key` (as `GET /api/graph?
/// group_by=key` folds it, uncapped), over the live window or `(from, to)`.
fn grouped_table(
    which: Which,
    graph: &GraphView,
    key: String,
    window: Option<(i64, i64)>,
) -> Arc<ComputedTable> {
    let graph = graph.clone();
    ComputedTable::new(schema_of(which), move || {
        let snapshot = match window {
            None => graph.live(),
            Some((from, to)) => graph.judged(from, to)?,
        };
        let fold = flowscope_graph::GraphFilter {
            group_by: Some(flowscope_graph::GroupBy {
                key: key.clone(),
                expand: Vec::new(),
            }),
            max_nodes: usize::MAX,
            max_edges: usize::MAX,
            ..flowscope_graph::GraphFilter::default()
        };
        let folded = flowscope_graph::filter(&snapshot, &fold)
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        batch_of(which, &folded.snapshot).map_err(|e| QueryError::Internal(e.to_string()))
    })
}

/// A constant text argument, such as a resource attribute's name.
fn text_argument(expr: &Expr, name: &str, example: &str) -> Result<String> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    match simplifier.simplify(expr.clone())? {
        Expr::Literal(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
            _,
        ) if !text.is_empty() => Ok(text),
        other => plan_err!("{name} must be a constant text such as {example}, not {other}"),
    }
}

/// Registers `nodes`, `edges`, `feedback_loops` and their `*_between` table functions, and
/// `nodes_grouped` and `edges_grouped`.
pub fn register(engine: &SqlEngine, graph: &GraphView) -> Result<(), QueryError> {
    for (name, which) in [
        ("nodes", Which::Nodes),
        ("edges", Which::Edges),
        ("feedback_loops", Which::Loops),
    ] {
        engine.register_table(name, graph_table(which, graph, None))?;
        // `edges_between(from, to)` and its siblings: the graph of a fixed window.
        let function = graph_function(graph, move |graph, args| {
            let window = window_arguments(args, "this function takes two timestamps")?;
            Ok(graph_table(which, graph, Some(window)))
        });
        engine.register_table_function(&format!("{name}_between"), function);
    }
    // `nodes_grouped(key [, from, to])`, `edges_grouped(...)`: the graph folded into the
    // groups of a resource attribute (namespace, team, zone ...), as the dashboard opens a
    // large system; the same columns as `nodes` and `edges`, a group's id `group:<value>`.
    for (name, which) in [
        ("nodes_grouped", Which::Nodes),
        ("edges_grouped", Which::Edges),
    ] {
        let function = graph_function(graph, move |graph, args| {
            let usage =
                format!("{name} takes (key) or (key, from, to), e.g. {name}('service.namespace')");
            let [key, window @ ..] = args else {
                return plan_err!("{usage}");
            };
            let key = text_argument(key, "key", "'service.namespace'")?;
            let window = match window {
                [] => None,
                [_, _] => Some(window_arguments(window, &usage)?),
                _ => return plan_err!("{usage}"),
            };
            Ok(grouped_table(which, graph, key, window) as _)
        });
        engine.register_table_function(name, function);
    }
    Ok(())
}
