//! `edge_series(bucket [, from [, to]])` and `node_series(...)`: the graph cut into buckets,
//! one row per bucket and edge (node) with calls, errors, error rate, p50 and p99. Also the
//! series the other anomaly functions analyse, and the columns that name an edge or a node.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::TimestampNanosecondArray;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::{Result, plan_err};
use flowscope_graph::{NodeKind, Snapshot};

use super::args;
use crate::error::QueryError;
use crate::graph::GraphView;
use crate::graph::tables::{graph_function, timestamp};
use crate::sql::computed_table::ComputedTable;

/// The default window of a series: the last hour.
pub(crate) const DEFAULT_SERIES_WINDOW_NS: i64 = 3_600_000_000_000;

/// Whether a function's rows are about edges or about nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subjects {
    Edges,
    Nodes,
}

/// One edge (source, target, kind) or one node (id, kind), as the graph tables name them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Subject {
    Edge {
        source: String,
        target: String,
        kind: &'static str,
    },
    Node {
        id: String,
        kind: &'static str,
    },
}

impl Subject {
    /// The values of [`subject_fields`], in order.
    pub(crate) fn names(&self) -> Vec<&str> {
        match self {
            Subject::Edge {
                source,
                target,
                kind,
            } => vec![source, target, kind],
            Subject::Node { id, kind } => vec![id, kind],
        }
    }
}

/// What one bucket says about one subject.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Point {
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Latency is measured: edges, and services (other nodes send no spans of their own).
    pub has_latency: bool,
}

/// The figures a series is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Metric {
    Calls,
    Errors,
    ErrorRate,
    P50Ms,
    P99Ms,
}

impl Metric {
    pub(crate) const ALL: [Metric; 5] = [
        Metric::Calls,
        Metric::Errors,
        Metric::ErrorRate,
        Metric::P50Ms,
        Metric::P99Ms,
    ];

    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Metric::Calls => "calls",
            Metric::Errors => "errors",
            Metric::ErrorRate => "error_rate",
            Metric::P50Ms => "p50_ms",
            Metric::P99Ms => "p99_ms",
        }
    }

    /// The metric in a bucket; `None` when it is undefined there: a rate or latency of no
    /// calls. A subject missing from a bucket is `Point::default()`: zero calls, zero errors.
    pub(crate) fn of(&self, point: &Point) -> Option<f64> {
        let measured = point.calls > 0;
        match self {
            Metric::Calls => Some(point.calls as f64),
            Metric::Errors => Some(point.errors as f64),
            Metric::ErrorRate => measured.then(|| point.errors as f64 / point.calls as f64),
            Metric::P50Ms => (measured && point.has_latency).then_some(point.p50_ms),
            Metric::P99Ms => (measured && point.has_latency).then_some(point.p99_ms),
        }
    }
}

/// The subjects of one graph window with their figures.
pub(crate) fn points_of(snapshot: &Snapshot, subjects: Subjects) -> Vec<(Subject, Point)> {
    match subjects {
        Subjects::Edges => snapshot
            .edges
            .iter()
            .map(|e| {
                let subject = Subject::Edge {
                    source: e.source.clone(),
                    target: e.target.clone(),
                    kind: e.kind.as_str(),
                };
                let point = Point {
                    calls: e.calls,
                    errors: e.errors,
                    p50_ms: e.p50_ms,
                    p99_ms: e.p99_ms,
                    has_latency: true,
                };
                (subject, point)
            })
            .collect(),
        Subjects::Nodes => snapshot
            .nodes
            .iter()
            .map(|n| {
                let subject = Subject::Node {
                    id: n.id.clone(),
                    kind: n.kind.as_str(),
                };
                let point = Point {
                    calls: n.calls_in,
                    errors: n.errors_in,
                    p50_ms: n.p50_ms,
                    p99_ms: n.p99_ms,
                    has_latency: n.kind == NodeKind::Service,
                };
                (subject, point)
            })
            .collect(),
    }
}

/// Every subject seen in any bucket, with a point per bucket: `None` where the graph had
/// nothing at all (the system not running, or its spans gone), so such a time is no data
/// rather than a drop to zero; `Point::default()` where the graph had others but not it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Series {
    pub starts: Vec<i64>,
    pub points: BTreeMap<Subject, Vec<Option<Point>>>,
}

impl Series {
    /// The series of subjects over consecutive windows, given each window's points (`None`
    /// for a window whose graph was empty).
    pub(crate) fn from_buckets(
        starts: Vec<i64>,
        buckets: Vec<Option<Vec<(Subject, Point)>>>,
    ) -> Self {
        let observed: Vec<Option<Point>> = buckets
            .iter()
            .map(|b| b.as_ref().map(|_| Point::default()))
            .collect();
        let mut points: BTreeMap<Subject, Vec<Option<Point>>> = BTreeMap::new();
        for (i, bucket) in buckets.into_iter().enumerate() {
            for (subject, point) in bucket.into_iter().flatten() {
                points.entry(subject).or_insert_with(|| observed.clone())[i] = Some(point);
            }
        }
        Self { starts, points }
    }
}

/// One graph window per bucket, `[start, start + width)`, as `edges_between` answers it.
pub(crate) fn snapshots(
    graph: &GraphView,
    starts: &[i64],
    width: i64,
) -> Result<Vec<Arc<Snapshot>>, QueryError> {
    starts
        .iter()
        .map(|&start| graph.snapshot(start, start + width))
        .collect()
}

pub(crate) fn collect(
    graph: &GraphView,
    subjects: Subjects,
    starts: Vec<i64>,
    width: i64,
) -> Result<Series, QueryError> {
    let windows = snapshots(graph, &starts, width)?;
    let buckets = windows
        .iter()
        .map(|s| (!s.nodes.is_empty()).then(|| points_of(s, subjects)))
        .collect();
    Ok(Series::from_buckets(starts, buckets))
}

/// The columns naming a subject: `source, target, kind` or `node, kind`.
pub(crate) fn subject_fields(subjects: Subjects) -> Vec<Field> {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    match subjects {
        Subjects::Edges => vec![text("source"), text("target"), text("kind")],
        Subjects::Nodes => vec![text("node"), text("kind")],
    }
}

pub(crate) fn subject_columns(subjects: Subjects, rows: &[&Subject]) -> Vec<ArrayRef> {
    (0..subject_fields(subjects).len())
        .map(|i| {
            let values = rows.iter().map(|s| s.names().get(i).copied().unwrap_or(""));
            Arc::new(StringArray::from_iter_values(values)) as ArrayRef
        })
        .collect()
}

pub(crate) fn timestamps(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

pub(crate) fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

pub(crate) fn optional_floats(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}

pub(crate) fn ints(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        values.map(|v| v.min(i64::MAX as u64) as i64),
    ))
}

pub(crate) fn texts<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn schema(subjects: Subjects) -> SchemaRef {
    let mut fields = vec![Field::new("bucket_start", timestamp(), false)];
    fields.extend(subject_fields(subjects));
    fields.extend([
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("error_rate", DataType::Float64, true),
        Field::new("p50_ms", DataType::Float64, true),
        Field::new("p99_ms", DataType::Float64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The rows of a series: one per bucket and subject present in it, by bucket then subject.
fn batch(subjects: Subjects, windows: &[(i64, Vec<(Subject, Point)>)]) -> Result<RecordBatch> {
    let rows: Vec<(i64, &Subject, &Point)> = windows
        .iter()
        .flat_map(|(start, points)| points.iter().map(move |(s, p)| (*start, s, p)))
        .collect();
    let mut columns = vec![timestamps(rows.iter().map(|r| r.0))];
    let named: Vec<&Subject> = rows.iter().map(|r| r.1).collect();
    columns.extend(subject_columns(subjects, &named));
    columns.push(ints(rows.iter().map(|r| r.2.calls)));
    columns.push(ints(rows.iter().map(|r| r.2.errors)));
    for metric in [Metric::ErrorRate, Metric::P50Ms, Metric::P99Ms] {
        columns.push(optional_floats(rows.iter().map(|r| metric.of(r.2))));
    }
    Ok(RecordBatch::try_new(schema(subjects), columns)?)
}

pub(crate) fn function(graph: &GraphView, subjects: Subjects) -> Arc<dyn TableFunctionImpl> {
    graph_function(graph, move |graph, exprs| {
        if exprs.is_empty() || exprs.len() > 3 {
            return plan_err!(
                "write (bucket [, from [, to]]), e.g. ('1m') or ('1m', now() - INTERVAL '6 hours', now())"
            );
        }
        let width = args::series_bucket(&exprs[0], graph.bucket())?;
        let to = match exprs.get(2) {
            Some(expr) => args::timestamp(expr, "to")?,
            None => flowscope_base::clock::now_ns(),
        };
        let from = match exprs.get(1) {
            Some(expr) => args::timestamp(expr, "from")?,
            None => to - DEFAULT_SERIES_WINDOW_NS,
        };
        args::check_window(from, to)?;
        let starts = args::bucket_starts(from, to, width)?;
        let graph = graph.clone();
        Ok(ComputedTable::new(schema(subjects), move || {
            let windows = snapshots(&graph, &starts, width)?;
            let rows: Vec<(i64, Vec<(Subject, Point)>)> = starts
                .iter()
                .zip(&windows)
                .map(|(start, snapshot)| (*start, points_of(snapshot, subjects)))
                .collect();
            batch(subjects, &rows).map_err(|e| QueryError::Internal(e.to_string()))
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(source: &str) -> Subject {
        Subject::Edge {
            source: source.into(),
            target: "db".into(),
            kind: "sync",
        }
    }

    fn calls(calls: u64, errors: u64) -> Point {
        Point {
            calls,
            errors,
            p50_ms: 5.0,
            p99_ms: 9.0,
            has_latency: true,
        }
    }

    #[test]
    fn absent_subjects_are_zero_calls_and_empty_graphs_no_data() {
        let series = Series::from_buckets(
            vec![0, 60, 120],
            vec![
                Some(vec![(edge("a"), calls(4, 1))]),
                Some(vec![(edge("b"), calls(2, 0))]),
                Some(vec![(edge("a"), calls(2, 2))]),
                None,
            ],
        );
        let a = &series.points[&edge("a")];
        let values = |metric: Metric| {
            a.iter()
                .map(|p| p.as_ref().and_then(|p| metric.of(p)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(Metric::Calls),
            [Some(4.0), Some(0.0), Some(2.0), None]
        );
        assert_eq!(
            values(Metric::Errors),
            [Some(1.0), Some(0.0), Some(2.0), None]
        );
        assert_eq!(
            values(Metric::ErrorRate),
            [Some(0.25), None, Some(1.0), None]
        );
        assert_eq!(values(Metric::P99Ms), [Some(9.0), None, Some(9.0), None]);
        assert_eq!(series.points[&edge("b")][0], Some(Point::default()));
        // A bucket whose graph was empty is no data, not zero calls.
        assert_eq!(series.points[&edge("b")][3], None);
        // A queue's latency is not measured: no p50 even with calls.
        let queue = Point {
            has_latency: false,
            ..calls(3, 0)
        };
        assert_eq!(Metric::P50Ms.of(&queue), None);
    }
}
