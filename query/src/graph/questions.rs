//! Graph questions in SQL (issue 25), over the live window or any `(from, to)`:
//!
//! - `blast_radius(node, hops [, from, to])`: who calls `node`, directly or through others,
//!   within `hops` links: what breaks or slows down if it fails;
//! - `dependencies(node, hops [, from, to])`: what `node` calls, the same way;
//! - `paths(from_node, to_node, max_hops [, from, to])`: the simple paths between two nodes
//!   and the traffic each carries.
//!
//! The answers come from `flowscope_graph::{blast_radius, dependencies, paths}` on the
//! window's snapshot, the same graph `/api/graph` shows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use flowscope_graph::{Reach, Snapshot};

use crate::error::QueryError;
use crate::graph::GraphView;
use crate::graph::tables::{graph_function, timestamp, window_arguments};
use crate::sql::SqlEngine;
use crate::sql::computed_table::ComputedTable;

/// The most links a question may follow: past this, a 10,000-node graph is all reached.
const MAX_HOPS: i64 = 32;
/// The longest path `paths` looks for: the number of paths grows as the degree to this power.
const MAX_PATH_HOPS: i64 = 10;

fn constant(expr: &Expr, name: &str, example: &str) -> Result<ScalarValue> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    match simplifier.simplify(expr.clone())? {
        Expr::Literal(value, _) => Ok(value),
        other => plan_err!("{name} must be a constant such as {example}, not {other}"),
    }
}

fn node_argument(expr: &Expr, name: &str) -> Result<String> {
    match constant(expr, name, "'checkout'")? {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)) => Ok(text),
        other => plan_err!("{name} must be a node's id as text, such as 'checkout', not {other}"),
    }
}

fn hops_argument(expr: &Expr, name: &str, max: i64) -> Result<usize> {
    let value = constant(expr, name, "2")?;
    match value.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(hops))) if (1..=max).contains(&hops) => Ok(hops as usize),
        _ => plan_err!("{name} must be a whole number from 1 to {max}, not {value}"),
    }
}

/// The window of a question: the live one, or the last two arguments.
fn window_of(args: &[Expr], usage: &str) -> Result<Option<(i64, i64)>> {
    match args {
        [] => Ok(None),
        [_, _] => Ok(Some(window_arguments(args, usage)?)),
        _ => plan_err!("{usage}"),
    }
}

fn snapshot(graph: &GraphView, window: Option<(i64, i64)>) -> Result<Arc<Snapshot>, QueryError> {
    match window {
        None => Ok(graph.live()),
        Some((from, to)) => graph.snapshot(from, to),
    }
}

fn window_columns(columns: &mut Vec<ArrayRef>, rows: usize, snapshot: &Snapshot) {
    for ns in [snapshot.from_ns, snapshot.to_ns] {
        columns.push(Arc::new(
            TimestampNanosecondArray::from(vec![ns; rows]).with_timezone("UTC"),
        ));
    }
}

fn window_fields() -> [Field; 2] {
    [
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ]
}

fn reach_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("node", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("hops", DataType::Int64, false),
        Field::new("via", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
    ];
    fields.extend(window_fields());
    Arc::new(Schema::new(fields))
}

fn reach_batch(found: &[Reach], snapshot: &Snapshot) -> Result<RecordBatch, QueryError> {
    let int = |v: u64| v.min(i64::MAX as u64) as i64;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            found.iter().map(|r| r.node.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            found.iter().map(|r| r.kind.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            found.iter().map(|r| r.hops as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            found.iter().map(|r| r.via.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            found.iter().map(|r| int(r.calls)),
        )),
        Arc::new(Int64Array::from_iter_values(
            found.iter().map(|r| int(r.errors)),
        )),
    ];
    window_columns(&mut columns, found.len(), snapshot);
    RecordBatch::try_new(reach_schema(), columns).map_err(|e| QueryError::Internal(e.to_string()))
}

fn paths_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("rank", DataType::Int64, false),
        Field::new("hops", DataType::Int64, false),
        Field::new(
            "nodes",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("p99_ms", DataType::Float64, false),
    ];
    fields.extend(window_fields());
    Arc::new(Schema::new(fields))
}

fn unknown(error: flowscope_graph::FilterError) -> QueryError {
    QueryError::Invalid(error.to_string())
}

/// Registers `blast_radius`, `dependencies` and `paths`.
pub fn register(engine: &SqlEngine, graph: &GraphView) {
    for (name, up) in [("blast_radius", true), ("dependencies", false)] {
        let function = graph_function(graph, move |graph, args| {
            let usage = format!(
                "{name} takes (node, hops) or (node, hops, from, to), e.g. {name}('checkout', 2)"
            );
            let [node, hops, window @ ..] = args else {
                return plan_err!("{usage}");
            };
            let node = node_argument(node, "node")?;
            let hops = hops_argument(hops, "hops", MAX_HOPS)?;
            let window = window_of(window, &usage)?;
            let graph = graph.clone();
            let table = ComputedTable::new(reach_schema(), move || {
                let snapshot = snapshot(&graph, window)?;
                let found = if up {
                    flowscope_graph::blast_radius(&snapshot, &node, hops)
                } else {
                    flowscope_graph::dependencies(&snapshot, &node, hops)
                }
                .map_err(unknown)?;
                reach_batch(&found, &snapshot)
            });
            Ok(table as _)
        });
        engine.register_table_function(name, function);
    }
    let function = graph_function(graph, |graph, args| {
        let usage = "paths takes (from_node, to_node, max_hops) or (from_node, to_node, max_hops, from, to), e.g. paths('frontend', 'payments', 4)";
        let [from_node, to_node, hops, window @ ..] = args else {
            return plan_err!("{usage}");
        };
        let from_node = node_argument(from_node, "from_node")?;
        let to_node = node_argument(to_node, "to_node")?;
        let hops = hops_argument(hops, "max_hops", MAX_PATH_HOPS)?;
        let window = window_of(window, usage)?;
        let graph = graph.clone();
        let table = ComputedTable::new(paths_schema(), move || {
            let snapshot = snapshot(&graph, window)?;
            let found =
                flowscope_graph::paths(&snapshot, &from_node, &to_node, hops).map_err(unknown)?;
            let mut nodes = ListBuilder::new(StringBuilder::new());
            for path in &found {
                for node in &path.nodes {
                    nodes.values().append_value(node);
                }
                nodes.append(true);
            }
            let int = |v: u64| v.min(i64::MAX as u64) as i64;
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(1..=found.len() as i64)),
                Arc::new(Int64Array::from_iter_values(
                    found.iter().map(|p| p.nodes.len() as i64 - 1),
                )),
                Arc::new(nodes.finish()),
                Arc::new(Int64Array::from_iter_values(
                    found.iter().map(|p| int(p.calls)),
                )),
                Arc::new(Int64Array::from_iter_values(
                    found.iter().map(|p| int(p.errors)),
                )),
                Arc::new(Float64Array::from_iter_values(
                    found.iter().map(|p| p.p99_ms),
                )),
            ];
            window_columns(&mut columns, found.len(), &snapshot);
            RecordBatch::try_new(paths_schema(), columns)
                .map_err(|e| QueryError::Internal(e.to_string()))
        });
        Ok(table as _)
    });
    engine.register_table_function("paths", function);
}
