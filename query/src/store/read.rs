//! Stored spans read by start time outside SQL, batch by batch: what the graph's rebuilds
//! of old windows and its backfill after a restart read. They see the store only through
//! these and [`View`].

use std::fs::File;

use arrow::array::{RecordBatch, Scalar, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::{boolean, cmp};
use flowscope_model::columns;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::StoreError;
use crate::store::View;
use crate::store::segment::{Location, Segment};

/// The rows of `batch` whose start time lies in `[from_ns, to_ns)`; `None` when none do.
fn starting_in(
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
    match &segment.location {
        Location::File(path) => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
            read_parquet(builder, wanted, from_ns, to_ns, visit)
        }
        Location::Object(objects, location) => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(objects.get(location)?)?;
            read_parquet(builder, wanted, from_ns, to_ns, visit)
        }
    }
}

fn read_parquet<T: parquet::file::reader::ChunkReader + 'static>(
    mut builder: ParquetRecordBatchReaderBuilder<T>,
    wanted: Option<&[&str]>,
    from_ns: i64,
    to_ns: i64,
    visit: &mut dyn FnMut(RecordBatch) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
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
