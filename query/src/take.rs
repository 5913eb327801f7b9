//! Rows of a span batch in a new order: arrow's `take`, except for lists and maps.
//!
//! Arrow's `take` copies a list or map row by row through `MutableArrayData`, a dynamic
//! call per row and per nested column; for the flusher's sort that was 7% of the server's
//! CPU (attributes, resource attributes, events and links are all nested). Here a list is
//! taken by expanding each row's offsets into child indices and taking the children once,
//! column by column, which arrow does with its fast paths for strings and primitives.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, MapArray, OffsetSizeTrait, RecordBatch,
    StructArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::take;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// The rows of `batch` at `indices`, in that order (the same result as
/// `arrow::compute::take_record_batch`).
pub fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| take_array(column, indices))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

fn take_array(array: &ArrayRef, indices: &UInt32Array) -> Result<ArrayRef, ArrowError> {
    // Null lists and null indices are rare here (the span schema has neither); arrow's own
    // take handles them.
    if array.null_count() > 0 || indices.null_count() > 0 {
        return take(array, indices, None);
    }
    match array.data_type() {
        DataType::List(_) => take_list(array.as_list::<i32>(), indices),
        DataType::LargeList(_) => take_list(array.as_list::<i64>(), indices),
        DataType::Map(_, _) => take_map(array.as_map(), indices),
        DataType::Struct(_) => take_struct(array.as_struct(), indices),
        _ => take(array, indices, None),
    }
}

fn take_struct(array: &StructArray, indices: &UInt32Array) -> Result<ArrayRef, ArrowError> {
    let columns = array
        .columns()
        .iter()
        .map(|column| take_array(column, indices))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(StructArray::try_new(
        array.fields().clone(),
        columns,
        None,
    )?))
}

/// The offsets of the taken rows and the child indices they cover, in order.
fn child_indices<O: OffsetSizeTrait>(
    offsets: &OffsetBuffer<O>,
    indices: &UInt32Array,
) -> Result<(OffsetBuffer<O>, UInt32Array), ArrowError> {
    let too_long = || ArrowError::ComputeError("a list's children exceed u32 indices".into());
    let mut lengths = Vec::with_capacity(indices.len());
    let mut children = Vec::new();
    for &row in indices.values() {
        let row = row as usize;
        let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        lengths.push(end - start);
        let start = u32::try_from(start).map_err(|_| too_long())?;
        let end = u32::try_from(end).map_err(|_| too_long())?;
        children.extend(start..end);
    }
    Ok((
        OffsetBuffer::<O>::from_lengths(lengths),
        UInt32Array::from(children),
    ))
}

fn take_list<O: OffsetSizeTrait>(
    array: &GenericListArray<O>,
    indices: &UInt32Array,
) -> Result<ArrayRef, ArrowError> {
    let (DataType::List(field) | DataType::LargeList(field)) = array.data_type() else {
        return take(array, indices, None);
    };
    let (offsets, children) = child_indices(array.offsets(), indices)?;
    let values = take_array(array.values(), &children)?;
    Ok(Arc::new(GenericListArray::<O>::try_new(
        field.clone(),
        offsets,
        values,
        None,
    )?))
}

fn take_map(array: &MapArray, indices: &UInt32Array) -> Result<ArrayRef, ArrowError> {
    let DataType::Map(field, ordered) = array.data_type() else {
        return take(array, indices, None);
    };
    let (offsets, children) = child_indices(array.offsets(), indices)?;
    let entries: ArrayRef = Arc::new(array.entries().clone());
    let entries = take_array(&entries, &children)?;
    Ok(Arc::new(MapArray::try_new(
        field.clone(),
        offsets,
        entries.as_struct().clone(),
        None,
        *ordered,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::compute::take_record_batch;
    use flowscope_model::SpanBatchBuilder;
    use flowscope_model::schema::{EventRecord, LinkRecord, SpanRecord};
    use proptest::prelude::*;

    /// Spans with 0–3 attributes, 0–2 events (with 0–1 attributes each) and 0–1 links, so
    /// every nested column has rows of different lengths, including empty ones.
    fn nested_batch(spans: usize) -> RecordBatch {
        let mut builder = SpanBatchBuilder::with_capacity(spans);
        for i in 0..spans {
            let span = [1, 2, 3, 4, 5, 6, 7, i as u8 + 1];
            let record = SpanRecord {
                trace_id: &[9; 16],
                span_id: &span,
                name: ["a", "bb", "ccc"][i % 3],
                kind: "SERVER",
                service_name: ["checkout", "payments"][i % 2],
                start_time_unix_nano: 1_000 * i as i64,
                end_time_unix_nano: 1_000 * i as i64 + 5,
                status_code: "UNSET",
                ..SpanRecord::default()
            };
            let attributes: Vec<(String, String)> = (0..i % 4)
                .map(|a| (format!("key{a}"), format!("value{i}.{a}")))
                .collect();
            let events: Vec<EventRecord> = (0..i % 3)
                .map(|e| EventRecord {
                    time_unix_nano: e as i64,
                    name: format!("event{e}"),
                    attributes: (0..e).map(|a| (format!("k{a}"), i.to_string())).collect(),
                })
                .collect();
            let links: Vec<LinkRecord> = (0..i % 2)
                .map(|_| LinkRecord {
                    trace_id: "5b8efff798038103d269b633813fc60c".into(),
                    span_id: "eee19b7ec3c1b174".into(),
                    trace_state: String::new(),
                    attributes: vec![("link".into(), i.to_string())],
                })
                .collect();
            let resource = [("service.name", record.service_name)];
            if let Err(error) = builder.append(&record, &attributes, &resource, &events, &links) {
                panic!("the test span is valid: {error}");
            }
        }
        match builder.finish() {
            Ok(batch) => batch,
            Err(error) => panic!("the test batch builds: {error}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any selection of rows, in any order and with repeats, equals arrow's take, also
        /// from a slice (offsets that do not start at zero).
        #[test]
        fn take_rows_equals_arrows_take(
            rows in proptest::collection::vec(0u32..40, 0..120),
            skip in 0usize..10,
        ) {
            let batch = nested_batch(50).slice(skip, 40);
            let indices = UInt32Array::from(rows);
            let ours = take_rows(&batch, &indices).expect("take_rows");
            let arrows = take_record_batch(&batch, &indices).expect("take");
            prop_assert_eq!(ours, arrows);
        }
    }
}
