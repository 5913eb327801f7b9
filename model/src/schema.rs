//! The `spans` table: one Arrow schema for storage (binary ids) and one for SQL (hex ids),
//! and a builder that turns decoded spans into a `RecordBatch` in the storage schema.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, FixedSizeBinaryBuilder,
    GenericByteBuilder, Int64Builder, ListArray, MapArray, MapBuilder, MapFieldNames, StringArray,
    StringBuilder, StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{ByteArrayType, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::ids::{SPAN_ID_LEN, TRACE_ID_LEN};

/// Column names of the `spans` table, in schema order.
pub mod columns {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const SERVICE_NAME: &str = "service_name";
    pub const START_TIME: &str = "start_time";
    pub const END_TIME: &str = "end_time";
    pub const DURATION_NS: &str = "duration_ns";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const ATTRIBUTES: &str = "attributes";
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";
    pub const FLAGS: &str = "flags";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";

    /// The id columns: binary in storage, lowercase hex in SQL.
    pub const ID_COLUMNS: [&str; 3] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID];
}

/// Timestamps are nanoseconds since the Unix epoch, in UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>`: attribute values are stored as text (numbers and booleans in their
/// canonical form, arrays and key-value lists as JSON) so any key can be indexed in SQL.
pub fn attribute_map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", attribute_map_type(), false),
    ])
}

fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attribute_map_type(), false),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(fields),
        false,
    )))
}

fn build_schema(trace_id: DataType, span_id: DataType) -> Schema {
    use columns::*;
    Schema::new(vec![
        Field::new(TRACE_ID, trace_id, false),
        Field::new(SPAN_ID, span_id.clone(), false),
        Field::new(PARENT_SPAN_ID, span_id, true),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(KIND, DataType::Utf8, false),
        Field::new(SERVICE_NAME, DataType::Utf8, false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        Field::new(STATUS_CODE, DataType::Utf8, false),
        Field::new(STATUS_MESSAGE, DataType::Utf8, true),
        Field::new(ATTRIBUTES, attribute_map_type(), false),
        Field::new(RESOURCE_ATTRIBUTES, attribute_map_type(), false),
        Field::new(SCOPE_NAME, DataType::Utf8, true),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        Field::new(EVENTS, list_of(event_fields()), false),
        Field::new(LINKS, list_of(link_fields()), false),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(DROPPED_EVENTS_COUNT, DataType::UInt32, false),
        Field::new(DROPPED_LINKS_COUNT, DataType::UInt32, false),
    ])
}

static STORAGE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(build_schema(
        DataType::FixedSizeBinary(TRACE_ID_LEN as i32),
        DataType::FixedSizeBinary(SPAN_ID_LEN as i32),
    ))
});

static SQL_SCHEMA: LazyLock<SchemaRef> =
    LazyLock::new(|| Arc::new(build_schema(DataType::Utf8, DataType::Utf8)));

/// The schema of span batches in the WAL, the memtable and Parquet: ids as fixed-size binary.
pub fn storage_schema() -> SchemaRef {
    STORAGE_SCHEMA.clone()
}

/// The schema SQL users see: the same columns, with ids as lowercase hex text.
pub fn sql_schema() -> SchemaRef {
    SQL_SCHEMA.clone()
}

/// One decoded span, borrowed from the request it came in. Ids must already be valid
/// (`ids::is_valid_*`); the builder does not check them again.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanRecord<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    /// `None` for a root span.
    pub parent_span_id: Option<&'a [u8]>,
    pub trace_state: &'a str,
    pub name: &'a str,
    /// One of `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER`, `INTERNAL`, `UNSPECIFIED`.
    pub kind: &'static str,
    pub service_name: &'a str,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    /// One of `UNSET`, `OK`, `ERROR`.
    pub status_code: &'static str,
    pub status_message: &'a str,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub flags: u32,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
}

/// A span event, with attribute values already rendered as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventRecord {
    pub time_unix_nano: i64,
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

/// A span link, ids as lowercase hex.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkRecord {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: String,
    pub attributes: Vec<(String, String)>,
}

type AttributeMapBuilder = MapBuilder<StringBuilder, StringBuilder>;
/// A span's own attributes, as bytes: checked as UTF-8 a batch at a time when it finishes
/// ([`SpanBatchBuilder::push_attribute_bytes`]).
type UncheckedMapBuilder = MapBuilder<BinaryBuilder, BinaryBuilder>;

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    }
}

fn attribute_map_builder() -> AttributeMapBuilder {
    MapBuilder::new(
        Some(map_field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

/// The sizes of the last batch this process finished, per row, so that the next batch's
/// builders can start near the size they will end at. A builder that grows by doubling copies
/// all it holds at each step and faults in fresh pages: about 4% of the server's CPU at full
/// ingest went there. A wrong guess costs what it did before (growth) or spare capacity,
/// which [`SpanBatchBuilder::sized_for`] bounds by the request's size.
mod last_shape {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The parts that grow with the data: the text columns' bytes, and each attribute map's
    /// entries, key bytes and value bytes.
    #[derive(Clone, Copy)]
    pub(super) enum Part {
        TraceState,
        Name,
        Kind,
        ServiceName,
        StatusCode,
        StatusMessage,
        ScopeName,
        ScopeVersion,
        AttributeEntries,
        AttributeKeys,
        AttributeValues,
        ResourceEntries,
        ResourceKeys,
        ResourceValues,
    }
    const PARTS: usize = Part::ResourceValues as usize + 1;

    /// Per row, in sixteenths, so that a column of a few bytes a row keeps its precision.
    static PER_ROW_16THS: [AtomicU32; PARTS] = [const { AtomicU32::new(0) }; PARTS];

    /// What `rows` rows of `part` took in the last batch, with an eighth to spare.
    pub(super) fn guess(part: Part, rows: usize) -> usize {
        let per_row = PER_ROW_16THS[part as usize].load(Ordering::Relaxed) as usize;
        let guess = rows.saturating_mul(per_row) / 16;
        guess.saturating_add(guess / 8)
    }

    pub(super) fn record(part: Part, rows: usize, size: usize) {
        if rows == 0 {
            return;
        }
        let per_row = u32::try_from(size.saturating_mul(16) / rows).unwrap_or(u32::MAX);
        PER_ROW_16THS[part as usize].store(per_row, Ordering::Relaxed);
    }
}
use last_shape::Part;

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Accumulates spans column by column and produces a `RecordBatch` in [`storage_schema`].
pub struct SpanBatchBuilder {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    service_name: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: UncheckedMapBuilder,
    resource_attributes: AttributeMapBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    events: NestedListBuilder,
    links: NestedListBuilder,
    flags: UInt32Builder,
    dropped_attributes_count: UInt32Builder,
    dropped_events_count: UInt32Builder,
    dropped_links_count: UInt32Builder,
    rows: usize,
    /// Events and links closed so far in the open row.
    row_events: usize,
    row_links: usize,
}

impl std::fmt::Debug for SpanBatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanBatchBuilder")
            .field("rows", &self.rows)
            .finish()
    }
}

impl Default for SpanBatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl SpanBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        Self::shaped(rows, None)
    }

    /// A builder for a decoded request of `rows` spans and `request_bytes` bytes, its text
    /// columns and attribute maps sized from the last batch finished (see `last_shape`). The
    /// sizes come from another request, so they are bounded: if together they would reserve
    /// more than twice the request's own bytes (what the receivers reserve in the memory
    /// budget for decoding), the builder starts as [`with_capacity`](Self::with_capacity)
    /// does and grows.
    pub fn sized_for(rows: usize, request_bytes: usize) -> Self {
        let guess = |part| last_shape::guess(part, rows);
        let text = [
            Part::TraceState,
            Part::Name,
            Part::Kind,
            Part::ServiceName,
            Part::StatusCode,
            Part::StatusMessage,
            Part::ScopeName,
            Part::ScopeVersion,
            Part::AttributeKeys,
            Part::AttributeValues,
            Part::ResourceKeys,
            Part::ResourceValues,
        ];
        // Offsets take four bytes an entry in each of a map's two string columns.
        let reserved = text.iter().map(|&part| guess(part)).sum::<usize>()
            + 8 * (guess(Part::AttributeEntries) + guess(Part::ResourceEntries));
        let bounded = reserved > 0 && reserved <= request_bytes.saturating_mul(2);
        Self::shaped(rows, bounded.then_some(&guess))
    }

    /// A builder for `rows` spans; with `guess`, its text columns and attribute maps start at
    /// the sizes it gives for each part, else at Arrow's defaults.
    fn shaped(rows: usize, guess: Option<&dyn Fn(Part) -> usize>) -> Self {
        let timestamp = || TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let text = |part| match guess {
            Some(guess) => StringBuilder::with_capacity(rows, guess(part)),
            None => StringBuilder::new(),
        };
        let map = |entries, keys, values| match guess {
            Some(guess) => MapBuilder::with_capacity(
                Some(map_field_names()),
                StringBuilder::with_capacity(guess(entries), guess(keys)),
                StringBuilder::with_capacity(guess(entries), guess(values)),
                rows,
            ),
            None => attribute_map_builder(),
        };
        let unchecked_map = |entries, keys, values| {
            let (entries, keys, values) = match guess {
                Some(guess) => (guess(entries), guess(keys), guess(values)),
                None => (0, 0, 0),
            };
            MapBuilder::with_capacity(
                Some(map_field_names()),
                BinaryBuilder::with_capacity(entries, keys),
                BinaryBuilder::with_capacity(entries, values),
                rows,
            )
        };
        Self {
            trace_id: FixedSizeBinaryBuilder::with_capacity(rows, TRACE_ID_LEN as i32),
            span_id: FixedSizeBinaryBuilder::with_capacity(rows, SPAN_ID_LEN as i32),
            parent_span_id: FixedSizeBinaryBuilder::with_capacity(rows, SPAN_ID_LEN as i32),
            trace_state: text(Part::TraceState),
            name: text(Part::Name),
            kind: text(Part::Kind),
            service_name: text(Part::ServiceName),
            start_time: timestamp(),
            end_time: timestamp(),
            duration_ns: Int64Builder::with_capacity(rows),
            status_code: text(Part::StatusCode),
            status_message: text(Part::StatusMessage),
            attributes: unchecked_map(
                Part::AttributeEntries,
                Part::AttributeKeys,
                Part::AttributeValues,
            ),
            resource_attributes: map(
                Part::ResourceEntries,
                Part::ResourceKeys,
                Part::ResourceValues,
            ),
            scope_name: text(Part::ScopeName),
            scope_version: text(Part::ScopeVersion),
            events: NestedListBuilder::default(),
            links: NestedListBuilder::default(),
            flags: UInt32Builder::with_capacity(rows),
            dropped_attributes_count: UInt32Builder::with_capacity(rows),
            dropped_events_count: UInt32Builder::with_capacity(rows),
            dropped_links_count: UInt32Builder::with_capacity(rows),
            rows: 0,
            row_events: 0,
            row_links: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one span. Ids must be valid; a wrong length is an error, not a panic.
    pub fn append<K1, V1, K2, V2>(
        &mut self,
        span: &SpanRecord<'_>,
        attributes: &[(K1, V1)],
        resource_attributes: &[(K2, V2)],
        events: &[EventRecord],
        links: &[LinkRecord],
    ) -> Result<(), ArrowError>
    where
        K1: AsRef<str>,
        V1: AsRef<str>,
        K2: AsRef<str>,
        V2: AsRef<str>,
    {
        self.begin_span(span)?;
        for (key, value) in attributes {
            self.push_attribute(key.as_ref(), value.as_ref());
        }
        for (key, value) in resource_attributes {
            self.push_resource_attribute(key.as_ref(), value.as_ref());
        }
        for event in events {
            for (key, value) in &event.attributes {
                self.push_event_attribute(key, value);
            }
            self.end_event(event.time_unix_nano, &event.name)?;
        }
        for link in links {
            for (key, value) in &link.attributes {
                self.push_link_attribute(key, value);
            }
            self.end_link(&link.trace_id, &link.span_id, &link.trace_state)?;
        }
        self.end_span()
    }

    /// Starts a row: checks the id lengths, then appends every column that is not a map or a
    /// list. The nested parts follow through the `push_*` and `end_*` calls, in any order
    /// between columns, and [`end_span`](Self::end_span) closes the row. This lets a decoder
    /// write attributes, events and links straight from the wire without collecting them.
    ///
    /// A row left unclosed leaves the columns with different lengths, so
    /// [`finish`](Self::finish) then fails instead of producing a wrong batch; a caller that
    /// gives up mid-row drops the builder.
    pub fn begin_span(&mut self, span: &SpanRecord<'_>) -> Result<(), ArrowError> {
        // Check every length before appending anything, so a bad span never leaves the
        // columns with different lengths.
        let parent_ok = span.parent_span_id.is_none_or(|p| p.len() == SPAN_ID_LEN);
        if span.trace_id.len() != TRACE_ID_LEN || span.span_id.len() != SPAN_ID_LEN || !parent_ok {
            return Err(ArrowError::InvalidArgumentError(
                "trace ids must have 16 bytes and span ids 8".into(),
            ));
        }
        self.trace_id.append_value(span.trace_id)?;
        self.span_id.append_value(span.span_id)?;
        match span.parent_span_id {
            Some(parent) => self.parent_span_id.append_value(parent)?,
            None => self.parent_span_id.append_null(),
        }
        self.trace_state.append_option(non_empty(span.trace_state));
        self.name.append_value(span.name);
        self.kind.append_value(span.kind);
        self.service_name.append_value(span.service_name);
        self.start_time.append_value(span.start_time_unix_nano);
        self.end_time.append_value(span.end_time_unix_nano);
        self.duration_ns.append_value(
            span.end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
        );
        self.status_code.append_value(span.status_code);
        self.status_message
            .append_option(non_empty(span.status_message));
        self.scope_name.append_option(non_empty(span.scope_name));
        self.scope_version
            .append_option(non_empty(span.scope_version));
        self.flags.append_value(span.flags);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);
        self.dropped_events_count
            .append_value(span.dropped_events_count);
        self.dropped_links_count
            .append_value(span.dropped_links_count);
        self.row_events = 0;
        self.row_links = 0;
        Ok(())
    }

    /// One entry of the open row's `attributes`.
    pub fn push_attribute(&mut self, key: &str, value: &str) {
        self.push_attribute_bytes(key.as_bytes(), value.as_bytes());
    }

    /// One entry of the open row's `attributes`, as bytes that should be UTF-8 text.
    /// [`finish`](Self::finish) checks all of a batch's at once (one pass over each buffer,
    /// where a check per key and value cost a decoder a tenth of its time) and fails if any
    /// is not text.
    pub fn push_attribute_bytes(&mut self, key: &[u8], value: &[u8]) {
        self.attributes.keys().append_value(key);
        self.attributes.values().append_value(value);
    }

    /// One entry of the open row's `resource_attributes`.
    pub fn push_resource_attribute(&mut self, key: &str, value: &str) {
        self.resource_attributes.keys().append_value(key);
        self.resource_attributes.values().append_value(value);
    }

    /// One attribute of the event that the next [`end_event`](Self::end_event) closes.
    pub fn push_event_attribute(&mut self, key: &str, value: &str) {
        self.events.attributes.keys().append_value(key);
        self.events.attributes.values().append_value(value);
    }

    /// Closes an event of the open row, with the attributes pushed since the last one.
    pub fn end_event(&mut self, time_unix_nano: i64, name: &str) -> Result<(), ArrowError> {
        self.events.time.append_value(time_unix_nano);
        self.events.name.append_value(name);
        self.events.attributes.append(true)?;
        self.row_events += 1;
        Ok(())
    }

    /// One attribute of the link that the next [`end_link`](Self::end_link) closes.
    pub fn push_link_attribute(&mut self, key: &str, value: &str) {
        self.links.attributes.keys().append_value(key);
        self.links.attributes.values().append_value(value);
    }

    /// Closes a link of the open row (ids as lowercase hex), with the attributes pushed
    /// since the last one.
    pub fn end_link(
        &mut self,
        trace_id_hex: &str,
        span_id_hex: &str,
        trace_state: &str,
    ) -> Result<(), ArrowError> {
        self.links.time.append_value(0);
        self.links.name.append_value(trace_id_hex);
        self.links.extra.append_value(span_id_hex);
        self.links.extra2.append_option(non_empty(trace_state));
        self.links.attributes.append(true)?;
        self.row_links += 1;
        Ok(())
    }

    /// Closes the row [`begin_span`](Self::begin_span) opened.
    pub fn end_span(&mut self) -> Result<(), ArrowError> {
        self.attributes.append(true)?;
        self.resource_attributes.append(true)?;
        self.events.end_row(self.row_events);
        self.links.end_row(self.row_links);
        self.rows += 1;
        Ok(())
    }

    /// Produces the batch and leaves the builder empty for reuse. Fails if an attribute given
    /// as bytes is not UTF-8.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.record_shape();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(text_map(self.attributes.finish())?),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.events.finish_events()?,
            self.links.finish_links()?,
            Arc::new(self.flags.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
            Arc::new(self.dropped_events_count.finish()),
            Arc::new(self.dropped_links_count.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(storage_schema(), columns)
    }
}

impl SpanBatchBuilder {
    /// Remembers this batch's sizes per row for [`sized_for`](Self::sized_for).
    fn record_shape(&mut self) {
        let rows = self.rows;
        let record = |part, size| last_shape::record(part, rows, size);
        record(Part::TraceState, value_bytes(&self.trace_state));
        record(Part::Name, value_bytes(&self.name));
        record(Part::Kind, value_bytes(&self.kind));
        record(Part::ServiceName, value_bytes(&self.service_name));
        record(Part::StatusCode, value_bytes(&self.status_code));
        record(Part::StatusMessage, value_bytes(&self.status_message));
        record(Part::ScopeName, value_bytes(&self.scope_name));
        record(Part::ScopeVersion, value_bytes(&self.scope_version));
        let attributes = &mut self.attributes;
        record(Part::AttributeEntries, attributes.keys().len());
        record(Part::AttributeKeys, value_bytes(attributes.keys()));
        record(Part::AttributeValues, value_bytes(attributes.values()));
        let resource = &mut self.resource_attributes;
        record(Part::ResourceEntries, resource.keys().len());
        record(Part::ResourceKeys, value_bytes(resource.keys()));
        record(Part::ResourceValues, value_bytes(resource.values()));
    }
}

fn value_bytes<T: ByteArrayType>(builder: &GenericByteBuilder<T>) -> usize {
    builder.values_slice().len()
}

/// A map of binary keys and values as the schema's `Map<Utf8, Utf8>`. Arrow checks each of
/// the two buffers as UTF-8 in one pass, then that every entry starts on a character.
fn text_map(map: MapArray) -> Result<MapArray, ArrowError> {
    let DataType::Map(field, ordered) = attribute_map_type() else {
        return Err(ArrowError::SchemaError("attributes are not a map".into()));
    };
    let DataType::Struct(entry_fields) = field.data_type() else {
        return Err(ArrowError::SchemaError(
            "map entries are not a struct".into(),
        ));
    };
    let (_, offsets, entries, nulls, _) = map.into_parts();
    let (_, columns, entry_nulls) = entries.into_parts();
    let text = |column: &ArrayRef| -> Result<ArrayRef, ArrowError> {
        let binary = column.as_binary_opt::<i32>().ok_or_else(|| {
            ArrowError::SchemaError(format!("map column is {}", column.data_type()))
        })?;
        Ok(Arc::new(StringArray::try_from_binary(binary.clone())?))
    };
    let [keys, values] = columns.as_slice() else {
        return Err(ArrowError::SchemaError(
            "map entries are not keys and values".into(),
        ));
    };
    let entries = StructArray::try_new(
        entry_fields.clone(),
        vec![text(keys)?, text(values)?],
        entry_nulls,
    )?;
    MapArray::try_new(field, offsets, entries, nulls, ordered)
}

/// Builds `List<Struct<...>>` for events and links by hand, because Arrow's `StructBuilder`
/// cannot hold a `MapBuilder` without dynamic dispatch on every append.
struct NestedListBuilder {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    extra: StringBuilder,
    extra2: StringBuilder,
    attributes: AttributeMapBuilder,
}

impl Default for NestedListBuilder {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            name: StringBuilder::new(),
            extra: StringBuilder::new(),
            extra2: StringBuilder::new(),
            attributes: attribute_map_builder(),
        }
    }
}

impl NestedListBuilder {
    fn end_row(&mut self, items: usize) {
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + items as i32);
    }

    fn take_offsets(&mut self) -> OffsetBuffer<i32> {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        OffsetBuffer::new(offsets.into())
    }

    fn finish_events(&mut self) -> Result<ArrayRef, ArrowError> {
        let fields = event_fields();
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.attributes.finish()),
        ];
        self.finish_list(fields, children)
    }

    fn finish_links(&mut self) -> Result<ArrayRef, ArrowError> {
        let fields = link_fields();
        // Links have no time; the time builder only keeps lengths aligned.
        self.time.finish();
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.name.finish()),
            Arc::new(self.extra.finish()),
            Arc::new(self.extra2.finish()),
            Arc::new(self.attributes.finish()),
        ];
        self.finish_list(fields, children)
    }

    fn finish_list(
        &mut self,
        fields: Fields,
        children: Vec<ArrayRef>,
    ) -> Result<ArrayRef, ArrowError> {
        let items = StructArray::try_new(fields.clone(), children, None)?;
        let item_field = Arc::new(Field::new("item", DataType::Struct(fields), false));
        let list = ListArray::try_new(item_field, self.take_offsets(), Arc::new(items), None)?;
        Ok(Arc::new(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    fn span<'a>(trace: &'a [u8], id: &'a [u8], parent: Option<&'a [u8]>) -> SpanRecord<'a> {
        SpanRecord {
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            name: "GET /orders",
            kind: "SERVER",
            service_name: "orders",
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_500,
            status_code: "OK",
            ..SpanRecord::default()
        }
    }

    #[test]
    fn builds_a_batch_in_the_storage_schema() {
        let mut builder = SpanBatchBuilder::default();
        let event = EventRecord {
            time_unix_nano: 2_000,
            name: "retry".into(),
            attributes: vec![("attempt".into(), "2".into())],
        };
        let link = LinkRecord {
            trace_id: "ab".repeat(16),
            span_id: "cd".repeat(8),
            ..LinkRecord::default()
        };
        builder
            .append(
                &span(&[1; 16], &[2; 8], None),
                &[("http.route", "/orders")],
                &[("service.name", "orders")],
                &[event],
                &[],
            )
            .expect("append root");
        builder
            .append(
                &span(&[1; 16], &[3; 8], Some(&[2; 8])),
                &[] as &[(&str, &str)],
                &[("service.name", "orders")],
                &[],
                &[link],
            )
            .expect("append child");
        let batch = builder.finish().expect("finish");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), storage_schema());
        let parent = batch
            .column_by_name(columns::PARENT_SPAN_ID)
            .expect("parent column");
        assert!(parent.is_null(0) && parent.is_valid(1));
        let duration = batch
            .column_by_name(columns::DURATION_NS)
            .expect("duration");
        assert_eq!(
            duration
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            2_500
        );
        let events = batch
            .column_by_name(columns::EVENTS)
            .expect("events")
            .as_list::<i32>();
        assert_eq!((events.value_length(0), events.value_length(1)), (1, 0));
        let links = batch
            .column_by_name(columns::LINKS)
            .expect("links")
            .as_list::<i32>();
        assert_eq!((links.value_length(0), links.value_length(1)), (0, 1));
        assert!(builder.is_empty(), "finish leaves the builder empty");
    }

    /// `rows` spans of `attributes` attributes of `value_len` bytes each, built by `builder`.
    fn batch_of(
        mut builder: SpanBatchBuilder,
        rows: u8,
        attributes: usize,
        value_len: usize,
    ) -> RecordBatch {
        let value = "v".repeat(value_len);
        let pairs: Vec<(String, &str)> = (0..attributes)
            .map(|i| (format!("key.{i}"), value.as_str()))
            .collect();
        for id in 1..=rows {
            builder
                .append(
                    &span(&[1; 16], &[id; 8], None),
                    &pairs,
                    &[("service.name", "orders")],
                    &[],
                    &[],
                )
                .expect("append");
        }
        builder.finish().expect("finish")
    }

    #[test]
    fn a_builder_sized_from_another_batch_builds_the_same_batch() {
        // Whatever the last batch looked like (much larger or much smaller rows, or a guess
        // refused as too large for the request), the sizes change capacity only.
        for (last, next) in [((2, 40, 500), (200, 3, 8)), ((200, 1, 1), (3, 40, 500))] {
            batch_of(SpanBatchBuilder::default(), last.0, last.1, last.2);
            let (rows, attributes, value_len) = next;
            for request_bytes in [0, 64, 1 << 20] {
                let sized = batch_of(
                    SpanBatchBuilder::sized_for(usize::from(rows), request_bytes),
                    rows,
                    attributes,
                    value_len,
                );
                let plain = batch_of(SpanBatchBuilder::default(), rows, attributes, value_len);
                assert_eq!(
                    sized, plain,
                    "after {last:?}, {next:?} of {request_bytes} bytes"
                );
            }
        }
    }

    #[test]
    fn a_wrong_id_length_is_an_error_not_a_panic() {
        let mut builder = SpanBatchBuilder::default();
        let result = builder.append(
            &span(&[1; 15], &[2; 8], None),
            &[] as &[(&str, &str)],
            &[] as &[(&str, &str)],
            &[],
            &[],
        );
        assert!(result.is_err());
    }

    #[test]
    fn sql_schema_differs_only_in_id_types() {
        let (storage, sql) = (storage_schema(), sql_schema());
        for (a, b) in storage.fields().iter().zip(sql.fields()) {
            assert_eq!(a.name(), b.name());
            if !columns::ID_COLUMNS.contains(&a.name().as_str()) {
                assert_eq!(a.data_type(), b.data_type(), "{}", a.name());
            }
        }
    }
}
