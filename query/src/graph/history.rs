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

use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, TimestampNanosecondArray};
use arrow::compute::max;
use flowscope_graph::{GraphConfig, LiveGraph, Window};
use flowscope_model::columns;

use crate::error::{QueryError, StoreError};
use crate::store::View;
use crate::store::read::read_range;

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
