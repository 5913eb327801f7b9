//! `edge_control(bucket, baseline [, k [, from [, to]]])` and `node_control(...)`: the control
//! chart of every edge (node) and metric, point by point: the value, the baseline's mean and
//! σ, the limits, the EWMA with its limits and both CUSUMs. What a chart draws, and the
//! numbers behind every row of `*_anomalies`.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::Result;

use super::anomalies::{Analysed, Chart, analysis_function};
use super::series::{
    Subject, Subjects, floats, subject_columns, subject_fields, texts, timestamps,
};
use super::spc::ControlPoint;
use crate::graph::GraphView;
use crate::graph::tables::timestamp;

const STATISTICS: [&str; 12] = [
    "value",
    "mean",
    "sigma",
    "lower",
    "upper",
    "ewma",
    "ewma_lower",
    "ewma_upper",
    "cusum_high",
    "cusum_low",
    "cusum_limit",
    "in_baseline",
];

fn schema(subjects: Subjects) -> SchemaRef {
    let mut fields = vec![Field::new("bucket_start", timestamp(), false)];
    fields.extend(subject_fields(subjects));
    fields.push(Field::new("metric", DataType::Utf8, false));
    for name in STATISTICS {
        let kind = if name == "in_baseline" {
            DataType::Boolean
        } else {
            DataType::Float64
        };
        fields.push(Field::new(name, kind, false));
    }
    Arc::new(Schema::new(fields))
}

/// Every defined point of every chart, baseline included, by subject, metric and bucket.
fn batch(subjects: Subjects, analysed: &Analysed) -> Result<RecordBatch> {
    let (series, charts) = (&analysed.series, &analysed.charts);
    let baseline_buckets = analysed.baseline_buckets;
    let rows: Vec<(usize, &Chart, &ControlPoint)> = charts
        .iter()
        .flat_map(|c| c.points.iter().map(move |(i, p)| (*i, c, p)))
        .collect();
    let mut columns: Vec<ArrayRef> = vec![timestamps(rows.iter().map(|r| series.starts[r.0]))];
    let named: Vec<&Subject> = rows.iter().map(|r| &r.1.subject).collect();
    columns.extend(subject_columns(subjects, &named));
    columns.push(texts(rows.iter().map(|r| r.1.metric.as_str())));
    let statistic =
        |pick: fn(&Chart, &ControlPoint) -> f64| floats(rows.iter().map(|r| pick(r.1, r.2)));
    columns.extend([
        statistic(|_, p| p.value),
        statistic(|c, _| c.base.mean),
        statistic(|c, _| c.base.sigma),
        statistic(|_, p| p.lower),
        statistic(|_, p| p.upper),
        statistic(|_, p| p.ewma),
        statistic(|_, p| p.ewma_lower),
        statistic(|_, p| p.ewma_upper),
        statistic(|_, p| p.cusum_high),
        statistic(|_, p| p.cusum_low),
        statistic(|_, p| p.cusum_limit),
    ]);
    columns.push(Arc::new(BooleanArray::from_iter(
        rows.iter().map(|r| Some(r.0 < baseline_buckets)),
    )));
    Ok(RecordBatch::try_new(schema(subjects), columns)?)
}

pub(crate) fn function(graph: &GraphView, subjects: Subjects) -> Arc<dyn TableFunctionImpl> {
    analysis_function(graph, subjects, schema, batch)
}
