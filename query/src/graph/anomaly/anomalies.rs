//! `edge_anomalies(bucket, baseline [, k [, from [, to]]])` and `node_anomalies(...)`: one row
//! per rule a point of a series fails, with the limits it was held to. Also the analysis
//! `*_control` shows point by point: the baseline is the `baseline` just before `from`, and
//! the rules run over baseline and watched points together, so a run may start in the
//! baseline, but only watched points (`[from, to)`) are reported.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::Expr;

use super::args;
use super::series::{
    self, Metric, Series, Subject, Subjects, floats, subject_columns, subject_fields, texts,
    timestamps,
};
use super::spc::{self, Baseline, ControlPoint, Violation};
use crate::error::QueryError;
use crate::graph::GraphView;
use crate::graph::tables::{graph_function, timestamp};
use crate::sql::computed_table::ComputedTable;

/// The watched window by default: the last 15 minutes (less the settle time).
const DEFAULT_WATCHED_NS: i64 = 15 * 60_000_000_000;
/// Limits at 3σ unless the query says otherwise.
const DEFAULT_K: f64 = 3.0;

/// What `*_control` and `*_anomalies` are asked: the buckets (baseline first) and k.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Analysis {
    pub width: i64,
    pub starts: Vec<i64>,
    /// The first this many of `starts` are the baseline.
    pub baseline_buckets: usize,
    pub k: f64,
}

pub(crate) const USAGE: &str = "write (bucket, baseline [, k [, from [, to]]]), e.g. ('1m', '1h') or ('1m', '1h', 3, now() - INTERVAL '30 minutes', now())";

pub(crate) fn parse(exprs: &[Expr], graph: &GraphView) -> Result<Analysis> {
    if exprs.len() < 2 || exprs.len() > 5 {
        return plan_err!("{USAGE}");
    }
    let width = args::series_bucket(&exprs[0], graph.bucket())?;
    let baseline = args::duration(&exprs[1], "baseline")?;
    let k = match exprs.get(2) {
        Some(expr) => args::positive_number(expr, "k", "3")?,
        None => DEFAULT_K,
    };
    let to = match exprs.get(4) {
        Some(expr) => args::timestamp(expr, "to")?,
        None => args::settled_now_ns(),
    };
    let from = match exprs.get(3) {
        Some(expr) => args::timestamp(expr, "from")?,
        None => to - DEFAULT_WATCHED_NS,
    };
    args::check_window(from, to)?;
    let watched = args::bucket_starts(from, to, width)?;
    let Some(&first) = watched.first() else {
        return plan_err!(
            "[from, to) holds no whole bucket of the series; widen the window or narrow the bucket"
        );
    };
    let mut starts = args::bucket_starts(first - baseline, first, width)?;
    let baseline_buckets = starts.len();
    if baseline_buckets < spc::MIN_BASELINE_POINTS {
        return plan_err!(
            "the baseline holds {baseline_buckets} buckets, fewer than the {} its limits need; lengthen the baseline or narrow the bucket",
            spc::MIN_BASELINE_POINTS
        );
    }
    starts.extend(watched);
    if starts.len() as i64 > args::MAX_BUCKETS {
        return plan_err!(
            "baseline and window together have {} buckets, more than {}; widen the bucket",
            starts.len(),
            args::MAX_BUCKETS
        );
    }
    Ok(Analysis {
        width,
        starts,
        baseline_buckets,
        k,
    })
}

/// One metric of one subject, analysed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chart {
    pub subject: Subject,
    pub metric: Metric,
    pub base: Baseline,
    /// The buckets where the metric is defined: (bucket index, its control point).
    pub points: Vec<(usize, ControlPoint)>,
    /// The rules failed: (bucket index, violation).
    pub violations: Vec<(usize, Violation)>,
}

/// The control charts of every subject and metric of `series`: limits from the first
/// `baseline_buckets` buckets, skipped where those hold too few defined values.
pub(crate) fn charts(series: &Series, baseline_buckets: usize, k: f64) -> Vec<Chart> {
    let mut charts = Vec::new();
    for (subject, points) in &series.points {
        for metric in Metric::ALL {
            let present: Vec<(usize, f64)> = points
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().and_then(|p| metric.of(p)).map(|v| (i, v)))
                .collect();
            let in_baseline: Vec<f64> = present
                .iter()
                .filter(|(i, _)| *i < baseline_buckets)
                .map(|(_, v)| *v)
                .collect();
            let Some(base) = spc::baseline(&in_baseline) else {
                continue;
            };
            let values: Vec<f64> = present.iter().map(|(_, v)| *v).collect();
            let chart = spc::control(&values, base, k);
            let violations = spc::violations(&values, base, k)
                .into_iter()
                .map(|v| (present[v.index].0, v))
                .collect();
            charts.push(Chart {
                subject: subject.clone(),
                metric,
                base,
                points: present.iter().map(|(i, _)| *i).zip(chart).collect(),
                violations,
            });
        }
    }
    charts
}

/// What an analysis found: the series and their charts, the first `baseline_buckets`
/// buckets the baseline.
pub(crate) struct Analysed {
    pub series: Series,
    pub charts: Vec<Chart>,
    pub baseline_buckets: usize,
}

pub(crate) fn analyse(
    graph: &GraphView,
    subjects: Subjects,
    analysis: &Analysis,
) -> Result<Analysed, QueryError> {
    let series = series::collect(graph, subjects, analysis.starts.clone(), analysis.width)?;
    let charts = charts(&series, analysis.baseline_buckets, analysis.k);
    Ok(Analysed {
        series,
        charts,
        baseline_buckets: analysis.baseline_buckets,
    })
}

fn schema(subjects: Subjects) -> SchemaRef {
    let mut fields = vec![Field::new("bucket_start", timestamp(), false)];
    fields.extend(subject_fields(subjects));
    fields.push(Field::new("metric", DataType::Utf8, false));
    fields.push(Field::new("rule", DataType::Utf8, false));
    for name in ["value", "mean", "sigma", "lower", "upper"] {
        fields.push(Field::new(name, DataType::Float64, false));
    }
    Arc::new(Schema::new(fields))
}

/// The violations at watched buckets, by bucket, then subject, metric and rule.
fn batch(subjects: Subjects, analysed: &Analysed) -> Result<RecordBatch> {
    let (series, charts) = (&analysed.series, &analysed.charts);
    let baseline_buckets = analysed.baseline_buckets;
    let mut rows: Vec<(usize, &Chart, &Violation)> = charts
        .iter()
        .flat_map(|c| c.violations.iter().map(move |(i, v)| (*i, c, v)))
        .filter(|(i, _, _)| *i >= baseline_buckets)
        .collect();
    rows.sort_by(|a, b| {
        (a.0, &a.1.subject, a.1.metric, a.2.rule).cmp(&(b.0, &b.1.subject, b.1.metric, b.2.rule))
    });
    let mut columns: Vec<ArrayRef> = vec![timestamps(rows.iter().map(|r| series.starts[r.0]))];
    let named: Vec<&Subject> = rows.iter().map(|r| &r.1.subject).collect();
    columns.extend(subject_columns(subjects, &named));
    columns.push(texts(rows.iter().map(|r| r.1.metric.as_str())));
    columns.push(texts(rows.iter().map(|r| r.2.rule.as_str())));
    columns.push(floats(rows.iter().map(|r| r.2.value)));
    columns.push(floats(rows.iter().map(|r| r.1.base.mean)));
    columns.push(floats(rows.iter().map(|r| r.1.base.sigma)));
    columns.push(floats(rows.iter().map(|r| r.2.lower)));
    columns.push(floats(rows.iter().map(|r| r.2.upper)));
    Ok(RecordBatch::try_new(schema(subjects), columns)?)
}

pub(crate) fn function(graph: &GraphView, subjects: Subjects) -> Arc<dyn TableFunctionImpl> {
    analysis_function(graph, subjects, schema, batch)
}

/// The rows an analysis shows.
pub(crate) type AnalysisRows = fn(Subjects, &Analysed) -> Result<RecordBatch>;

/// A table function that runs the analysis its arguments ask for (`parse`) and shows it as
/// `rows`: `*_anomalies` and `*_control`.
pub(crate) fn analysis_function(
    graph: &GraphView,
    subjects: Subjects,
    schema: fn(Subjects) -> SchemaRef,
    rows: AnalysisRows,
) -> Arc<dyn TableFunctionImpl> {
    graph_function(graph, move |graph, args| {
        let analysis = parse(args, graph)?;
        let graph = graph.clone();
        Ok(ComputedTable::new(schema(subjects), move || {
            let analysed = analyse(&graph, subjects, &analysis)?;
            rows(subjects, &analysed).map_err(|e| QueryError::Internal(e.to_string()))
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::anomaly::series::Point;
    use crate::graph::anomaly::spc::Rule;

    fn edge(source: &str) -> Subject {
        Subject::Edge {
            source: source.into(),
            target: "payments".into(),
            kind: "sync",
        }
    }

    fn point(calls: u64, errors: u64) -> Point {
        Point {
            calls,
            errors,
            p50_ms: 4.0,
            p99_ms: 8.0,
            has_latency: true,
        }
    }

    #[test]
    fn a_burst_is_flagged_on_its_edge_only_and_only_when_watched() {
        // Ten baseline buckets: `burst` fails 0, 1, 0, 1, ... of 10 calls (errors mean 0.5,
        // σ = √(10 · 0.25 / 9) = 0.527, so 3σ limits are -1.08..2.08); `quiet` never fails.
        // Then three watched buckets in which `burst` fails 6 of 10.
        let errors = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 6, 6, 6];
        let buckets = errors
            .iter()
            .map(|&e| {
                Some(vec![
                    (edge("burst"), point(10, e)),
                    (edge("quiet"), point(10, 0)),
                ])
            })
            .collect();
        let series = Series::from_buckets((0..13).collect(), buckets);
        let charts = charts(&series, 10, 3.0);
        let flagged: Vec<(usize, &str, &str, Rule)> = charts
            .iter()
            .flat_map(|c| c.violations.iter().map(move |(i, v)| (*i, c, v)))
            .filter(|(i, _, _)| *i >= 10)
            .map(|(i, c, v)| {
                let Subject::Edge { source, .. } = &c.subject else {
                    unreachable!()
                };
                (i, source.as_str(), c.metric.as_str(), v.rule)
            })
            .collect();
        for bucket in 10..13 {
            for metric in ["errors", "error_rate"] {
                let hit = (bucket, "burst", metric, Rule::BeyondLimits);
                assert!(flagged.contains(&hit), "{hit:?} not in {flagged:?}");
            }
        }
        assert!(flagged.iter().all(|f| f.1 == "burst"), "{flagged:?}");
        // Calls and latency never moved: no rule fires on them.
        assert!(
            flagged
                .iter()
                .all(|f| ["errors", "error_rate"].contains(&f.2)),
            "{flagged:?}"
        );
        let errors_chart = charts
            .iter()
            .find(|c| c.subject == edge("burst") && c.metric == Metric::Errors)
            .unwrap();
        assert!((errors_chart.base.mean - 0.5).abs() < 1e-9);
        assert!((errors_chart.base.sigma - (2.5_f64 / 9.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn too_short_a_baseline_has_no_limits() {
        let buckets = (0..6)
            .map(|e| Some(vec![(edge("a"), point(10, e))]))
            .collect();
        let series = Series::from_buckets((0..6).collect(), buckets);
        // Four baseline buckets: fewer than MIN_BASELINE_POINTS.
        assert!(charts(&series, 4, 3.0).is_empty());
    }

    #[test]
    fn time_before_the_system_ran_is_no_baseline() {
        // Ten baseline buckets, the first six with an empty graph (the server was not running):
        // four defined values are too few for limits, so the first busy minutes are not
        // flagged as a jump from zero.
        let buckets = (0..12)
            .map(|i| (i >= 6).then(|| vec![(edge("a"), point(10 + i % 2, 0))]))
            .collect();
        let series = Series::from_buckets((0..12).collect(), buckets);
        assert!(charts(&series, 10, 3.0).is_empty());
    }
}
