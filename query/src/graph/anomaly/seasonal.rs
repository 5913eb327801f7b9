//! `edge_seasonal([window [, days [, at]]])` and `node_seasonal(...)`: each edge's (node's)
//! figures over the last `window` against the same window of each of the `days` days before,
//! as a z-score. A day counts only where the graph has anything at all then (spans kept, the
//! system running); `days_used` says how many did.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::{Result, plan_err};

use super::args;
use super::series::{
    Metric, Point, Subject, Subjects, floats, ints, optional_floats, points_of, subject_columns,
    subject_fields, texts, timestamps,
};
use super::spc;
use crate::error::QueryError;
use crate::graph::GraphView;
use crate::graph::tables::{graph_function, timestamp};
use crate::sql::computed_table::ComputedTable;

const DAY_NS: i64 = 86_400_000_000_000;
const DEFAULT_WINDOW_NS: i64 = 3_600_000_000_000;
const DEFAULT_DAYS: i64 = 7;
const MAX_DAYS: i64 = 90;

/// One subject and metric now, against the same window of earlier days.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeasonalRow {
    pub subject: Subject,
    pub metric: Metric,
    pub value: f64,
    pub mean: Option<f64>,
    pub sigma: Option<f64>,
    pub zscore: Option<f64>,
    pub days_used: u64,
}

/// `now`'s subjects against `earlier` days (`None`: a day with no graph at all). A subject
/// absent on a day that has a graph had no calls then: zero calls and errors, no rate.
pub(crate) fn seasonal_rows(
    now: &[(Subject, Point)],
    earlier: &[Option<Vec<(Subject, Point)>>],
) -> Vec<SeasonalRow> {
    let days: Vec<HashMap<&Subject, &Point>> = earlier
        .iter()
        .flatten()
        .map(|day| day.iter().map(|(s, p)| (s, p)).collect())
        .collect();
    let absent = Point::default();
    let mut rows = Vec::new();
    for (subject, point) in now {
        for metric in Metric::ALL {
            let Some(value) = metric.of(point) else {
                continue;
            };
            let history: Vec<f64> = days
                .iter()
                .filter_map(|day| metric.of(day.get(subject).copied().unwrap_or(&absent)))
                .collect();
            let mean =
                (!history.is_empty()).then(|| history.iter().sum::<f64>() / history.len() as f64);
            let scored = spc::zscore(value, &history);
            let sigma = match (scored, history.len()) {
                (Some((_, sigma, _)), _) => Some(sigma),
                // Two or more equal days: no spread, no z-score.
                (None, n) if n >= 2 => Some(0.0),
                _ => None,
            };
            rows.push(SeasonalRow {
                subject: subject.clone(),
                metric,
                value,
                mean,
                sigma,
                zscore: scored.map(|(_, _, z)| z),
                days_used: history.len() as u64,
            });
        }
    }
    rows
}

fn schema(subjects: Subjects) -> SchemaRef {
    let mut fields = subject_fields(subjects);
    fields.extend([
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("mean", DataType::Float64, true),
        Field::new("sigma", DataType::Float64, true),
        Field::new("zscore", DataType::Float64, true),
        Field::new("days_used", DataType::Int64, false),
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ]);
    Arc::new(Schema::new(fields))
}

fn batch(subjects: Subjects, rows: &[SeasonalRow], from: i64, to: i64) -> Result<RecordBatch> {
    let named: Vec<&Subject> = rows.iter().map(|r| &r.subject).collect();
    let mut columns: Vec<ArrayRef> = subject_columns(subjects, &named);
    columns.extend([
        texts(rows.iter().map(|r| r.metric.as_str())),
        floats(rows.iter().map(|r| r.value)),
        optional_floats(rows.iter().map(|r| r.mean)),
        optional_floats(rows.iter().map(|r| r.sigma)),
        optional_floats(rows.iter().map(|r| r.zscore)),
        ints(rows.iter().map(|r| r.days_used)),
        timestamps(rows.iter().map(|_| from)),
        timestamps(rows.iter().map(|_| to)),
    ]);
    Ok(RecordBatch::try_new(schema(subjects), columns)?)
}

pub(crate) fn function(graph: &GraphView, subjects: Subjects) -> Arc<dyn TableFunctionImpl> {
    graph_function(graph, move |graph, exprs| {
        if exprs.len() > 3 {
            return plan_err!(
                "write ([window [, days [, at]]]), e.g. () or ('1h', 7) or ('1h', 7, TIMESTAMP '2026-11-29T12:00:00Z')"
            );
        }
        let window = match exprs.first() {
            Some(expr) => args::duration(expr, "window")?,
            None => DEFAULT_WINDOW_NS,
        };
        let days = match exprs.get(1) {
            Some(expr) => args::positive_number(expr, "days", "7")?,
            None => DEFAULT_DAYS as f64,
        };
        if days.fract() != 0.0 || days > MAX_DAYS as f64 {
            return plan_err!("days must be a whole number from 1 to {MAX_DAYS}, e.g. 7");
        }
        if window > DAY_NS {
            return plan_err!("window must be at most a day, e.g. '1h'");
        }
        let at = match exprs.get(2) {
            Some(expr) => args::timestamp(expr, "at")?,
            None => args::settled_now_ns(),
        };
        let graph = graph.clone();
        Ok(ComputedTable::new(schema(subjects), move || {
            let now = graph.snapshot(at - window, at)?;
            let mut earlier = Vec::new();
            for day in 1..=days as i64 {
                let end = at - day * DAY_NS;
                let then = graph.snapshot(end - window, end)?;
                earlier.push((!then.nodes.is_empty()).then(|| points_of(&then, subjects)));
            }
            let rows = seasonal_rows(&points_of(&now, subjects), &earlier);
            batch(subjects, &rows, at - window, at).map_err(|e| QueryError::Internal(e.to_string()))
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Subject {
        Subject::Node {
            id: id.into(),
            kind: "service",
        }
    }

    fn calls(calls: u64) -> Point {
        Point {
            calls,
            errors: 0,
            p50_ms: 3.0,
            p99_ms: 6.0,
            has_latency: true,
        }
    }

    #[test]
    fn against_the_days_that_have_a_graph() {
        // Now 160 calls; earlier days 80, 100, (no graph at all), 120, and one where the graph
        // exists but `orders` was silent (0). History 80, 100, 120, 0: mean 75,
        // squares 25 + 625 + 2025 + 5625 = 8300, σ = √(8300/3) = 52.599; z = 85/52.599 = 1.616.
        let day = |n: Option<u64>| -> Option<Vec<(Subject, Point)>> {
            Some(match n {
                Some(c) => vec![(node("orders"), calls(c)), (node("gateway"), calls(1))],
                None => vec![(node("gateway"), calls(1))],
            })
        };
        let earlier = [
            day(Some(80)),
            day(Some(100)),
            None,
            day(Some(120)),
            day(None),
        ];
        let rows = seasonal_rows(&[(node("orders"), calls(160))], &earlier);
        let of = |metric: Metric| rows.iter().find(|r| r.metric == metric).unwrap();
        let row = of(Metric::Calls);
        assert_eq!((row.value, row.mean, row.days_used), (160.0, Some(75.0), 4));
        let sigma = (8300.0_f64 / 3.0).sqrt();
        assert!((row.sigma.unwrap() - sigma).abs() < 1e-9, "{row:?}");
        assert!((row.zscore.unwrap() - 85.0 / sigma).abs() < 1e-9, "{row:?}");
        // Latency only where there were calls: three days, all 3 ms, no spread, no z-score.
        let p50 = of(Metric::P50Ms);
        assert_eq!(
            (p50.days_used, p50.mean, p50.sigma, p50.zscore),
            (3, Some(3.0), Some(0.0), None)
        );
        // With no history at all: the value, nothing to compare it with.
        let alone = seasonal_rows(&[(node("orders"), calls(5))], &[None, None]);
        assert!(
            alone
                .iter()
                .all(|r| r.days_used == 0 && r.zscore.is_none() && r.mean.is_none())
        );
    }
}
