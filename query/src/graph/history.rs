//! Graphs of windows older than the live graph's horizon, rebuilt from the stored spans by
//! the live graph's own code, so both answer a window the same way.
//!
//! ```text
//!  View (segments in arrival order, then memory) ──> spans starting in [from - ttl, to + ttl)
//!      ──> LiveGraph::for_window(from, to)  (one bucket; pairing as live, clock from the spans)
//!      ──> Snapshot of [from, to)
//! ```
//!
//! The graph is fed in the order the spans arrived (segments by WAL sequence, then the
//! memtable), with a clock that follows the spans' end times, so traces are finalized as
//! they were live. Spans up to one pairing TTL either side of the window are read too: a
//! call in the window may have its other half just outside it.

use std::fs::File;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, Scalar, TimestampNanosecondArray};
use arrow::compute::kernels::{boolean, cmp};
use arrow::compute::{filter_record_batch, max};
use flowscope_graph::{GraphConfig, LiveGraph, Window};
use flowscope_model::columns;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{QueryError, StoreError};
use crate::store::View;
use crate::store::segment::Segment;

/// The columns edge inference reads; the others are not decoded.
const GRAPH_COLUMNS: [&str; 11] = [
    columns::TRACE_ID,
    columns::SPAN_ID,
    columns::PARENT_SPAN_ID,
    columns::KIND,
    columns::SERVICE_NAME,
    columns::START_TIME,
    columns::END_TIME,
    columns::DURATION_NS,
    columns::STATUS_CODE,
    columns::ATTRIBUTES,
    columns::LINKS,
];

/// The rows of `batch` whose start time lies in `[from_ns, to_ns)`; `None` when none do.
pub(crate) fn starting_in(
    batch: &RecordBatch,
    from_ns: i64,
    to_ns: i64,
) -> Result<Option<RecordBatch>, StoreError> {
    let start = batch
        .column_by_name(columns::START_TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| StoreError::Corrupt("a span batch has no start_time column".into()))?;
    let bound =
        |ns: i64| Scalar::new(TimestampNanosecondArray::from(vec![ns]).with_timezone("UTC"));
    let keep = boolean::and(
        &cmp::gt_eq(start, &bound(from_ns))?,
        &cmp::lt(start, &bound(to_ns))?,
    )?;
    if keep.true_count() == 0 {
        return Ok(None);
    }
    if keep.true_count() == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    Ok(Some(filter_record_batch(batch, &keep)?))
}

/// Reads the spans of one segment that start in `[from_ns, to_ns)`, only `wanted` columns
/// (all when `None`), batch by batch; `visit` returns `false` to stop early.
pub(crate) fn read_segment(
    segment: &Segment,
    wanted: Option<&[&str]>,
    from_ns: i64,
    to_ns: i64,
    visit: &mut dyn FnMut(RecordBatch) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let file = File::open(&segment.path)?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    if let Some(wanted) = wanted {
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    for batch in builder.build()? {
        if let Some(kept) = starting_in(&batch?, from_ns, to_ns)?
            && !visit(kept)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every stored span starting in `[from_ns, to_ns)`, in arrival order: committed segments by
/// WAL sequence, then the memtable. `visit` returns `false` to stop early.
pub(crate) fn read_range(
    view: &View,
    wanted: Option<&[&str]>,
    from_ns: i64,
    to_ns: i64,
    visit: &mut dyn FnMut(RecordBatch) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut segments: Vec<_> = view
        .segments
        .iter()
        .filter(|s| s.overlaps(Some(from_ns), Some(to_ns.saturating_sub(1))))
        .collect();
    segments.sort_by_key(|s| (s.wal_seq, s.min_start_ns));
    for segment in segments {
        if !read_segment(segment, wanted, from_ns, to_ns, visit)? {
            return Ok(());
        }
    }
    for batch in view.memory_batches() {
        let Some(kept) = starting_in(&batch, from_ns, to_ns)? else {
            continue;
        };
        let kept = match wanted {
            None => kept,
            Some(wanted) => {
                let indices: Vec<usize> = wanted
                    .iter()
                    .filter_map(|name| kept.schema().index_of(name).ok())
                    .collect();
                kept.project(&indices)?
            }
        };
        if !visit(kept)? {
            return Ok(());
        }
    }
    Ok(())
}

/// How much a rebuild read, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    pub spans_read: u64,
}

/// The graph of `[from_ns, to_ns)` computed from the stored spans, giving up with
/// `TooExpensive` after `time_limit`: its buckets, to become a snapshot or to be joined with
/// a more recent window from memory.
pub fn rebuild(
    view: &View,
    config: &GraphConfig,
    from_ns: i64,
    to_ns: i64,
    time_limit: Duration,
) -> Result<(Window, RebuildStats), QueryError> {
    let started = Instant::now();
    let ttl_ns = i64::try_from(config.pairing_ttl.as_nanos()).unwrap_or(i64::MAX);
    let mut graph = LiveGraph::for_window(config.clone(), from_ns, to_ns);
    let mut stats = RebuildStats::default();
    // The clock: the latest end time seen, as if each span arrived when it ended.
    let mut clock = i64::MIN;
    let mut timed_out = false;
    let mut feed = |batch: RecordBatch| -> Result<bool, StoreError> {
        if started.elapsed() > time_limit {
            timed_out = true;
            return Ok(false);
        }
        let latest_end = batch
            .column_by_name(columns::END_TIME)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .and_then(max);
        clock = clock.max(latest_end.unwrap_or(clock));
        stats.spans_read += batch.num_rows() as u64;
        graph.ingest(&batch, clock);
        graph.advance(clock);
        Ok(true)
    };
    read_range(
        view,
        Some(&GRAPH_COLUMNS),
        from_ns.saturating_sub(ttl_ns),
        to_ns.saturating_add(ttl_ns),
        &mut feed,
    )
    .map_err(|e| QueryError::Internal(e.to_string()))?;
    if timed_out {
        return Err(QueryError::TooExpensive(format!(
            "rebuilding the graph of this window from stored spans took longer than {}s \
             ({} spans read); choose a shorter window",
            time_limit.as_secs(),
            stats.spans_read
        )));
    }
    // Everything read: let every trace finish as if the pairing TTL had passed.
    graph.advance(clock.max(to_ns).saturating_add(ttl_ns.saturating_mul(2)));
    Ok((graph.window(from_ns, to_ns), stats))
}
