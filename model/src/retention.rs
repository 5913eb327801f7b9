//! The retention horizon as the receivers and WAL replay apply it: the cutoff time, and the
//! spans of a batch that started before it.
//!
//! Retention deletes whole Parquet segments once their newest span is past the horizon, so a
//! span that arrives already past it would be acknowledged and then deleted at the next
//! check. The receivers refuse such spans instead (OTLP partial success), and replay drops
//! them from a logged request, which holds every span the client sent: time only moves
//! forward, so replay drops at least what the receiver refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, BooleanArray, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::schema::columns;

/// The earliest start time, in nanoseconds since the epoch, that `retention` keeps at `now`.
pub fn retention_cutoff_ns(now: SystemTime, retention: Duration) -> i64 {
    let now_ns = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
    });
    let retention_ns = i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX);
    now_ns.saturating_sub(retention_ns)
}

/// A batch split at the retention cutoff.
#[derive(Debug)]
pub struct Retained {
    /// The rows that started at or after the cutoff, in their order; `None` when none did.
    pub batch: Option<RecordBatch>,
    /// The rows that started before it.
    pub expired: usize,
}

/// Keeps the rows of a storage-schema `batch` that started at or after `cutoff_ns`. A batch
/// with nothing expired comes back as it is, without a copy.
pub fn retain_started_since(batch: RecordBatch, cutoff_ns: i64) -> Result<Retained, ArrowError> {
    let starts = batch
        .column_by_name(columns::START_TIME)
        .and_then(|column| column.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| {
            ArrowError::SchemaError("a span batch has no start_time timestamp column".into())
        })?;
    let expired = starts
        .values()
        .iter()
        .filter(|start| **start < cutoff_ns)
        .count();
    if expired == 0 {
        return Ok(Retained {
            batch: (batch.num_rows() > 0).then_some(batch),
            expired,
        });
    }
    if expired == batch.num_rows() {
        return Ok(Retained {
            batch: None,
            expired,
        });
    }
    let keep: BooleanArray = starts
        .values()
        .iter()
        .map(|start| Some(*start >= cutoff_ns))
        .collect();
    Ok(Retained {
        batch: Some(filter_record_batch(&batch, &keep)?),
        expired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SpanBatchBuilder, SpanRecord};

    fn batch_starting_at(starts: &[i64]) -> RecordBatch {
        let mut builder = SpanBatchBuilder::with_capacity(starts.len());
        for (i, start) in starts.iter().enumerate() {
            let span_id = [1, 2, 3, 4, 5, 6, 7, i as u8 + 1];
            let record = SpanRecord {
                trace_id: &[7; 16],
                span_id: &span_id,
                name: "op",
                kind: "SERVER",
                service_name: "svc",
                start_time_unix_nano: *start,
                end_time_unix_nano: *start + 1,
                status_code: "UNSET",
                ..SpanRecord::default()
            };
            builder
                .append::<&str, &str, &str, &str>(&record, &[], &[], &[], &[])
                .expect("a valid span");
        }
        builder.finish().expect("a batch")
    }

    fn starts(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column_by_name(columns::START_TIME)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .expect("start_time")
            .values()
            .to_vec()
    }

    #[test]
    fn spans_before_the_cutoff_are_split_off_and_the_rest_keep_their_order() {
        let retained =
            retain_started_since(batch_starting_at(&[50, 0, 100, 99, 100]), 100).expect("split");
        assert_eq!(retained.expired, 3);
        assert_eq!(starts(&retained.batch.expect("two kept")), [100, 100]);

        let all = retain_started_since(batch_starting_at(&[100, 200]), 100).expect("split");
        assert_eq!(all.expired, 0);
        assert_eq!(starts(&all.batch.expect("both kept")), [100, 200]);

        let none = retain_started_since(batch_starting_at(&[0, 1]), 100).expect("split");
        assert_eq!(none.expired, 2);
        assert!(none.batch.is_none());
    }

    #[test]
    fn the_cutoff_is_now_less_retention_and_saturates() {
        let now = UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(
            retention_cutoff_ns(now, Duration::from_secs(4)),
            6_000_000_000
        );
        assert_eq!(
            retention_cutoff_ns(now, Duration::from_secs(u64::MAX)),
            10_000_000_000 - i64::MAX
        );
    }
}
