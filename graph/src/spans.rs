//! Reads the few columns edge inference needs from a span batch in the storage schema,
//! one row at a time, without copying the batch.

use arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, Int64Array, ListArray, MapArray, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use flowscope_model::columns;
use flowscope_model::ids;

pub(crate) type TraceId = [u8; 16];
pub(crate) type SpanId = [u8; 8];

/// A span's identity across traces: links point at spans of other traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SpanKey {
    pub trace: TraceId,
    pub span: SpanId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    Server,
    Client,
    Producer,
    Consumer,
    Internal,
    Unspecified,
}

impl SpanKind {
    fn parse(text: &str) -> SpanKind {
        match text {
            "SERVER" => SpanKind::Server,
            "CLIENT" => SpanKind::Client,
            "PRODUCER" => SpanKind::Producer,
            "CONSUMER" => SpanKind::Consumer,
            "INTERNAL" => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        }
    }
}

/// The attributes edge inference reads (OpenTelemetry semantic conventions). Their first
/// letters are listed in `SpanColumns::graph_attributes`: a new key must keep to them or
/// extend that list.
pub(crate) mod keys {
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const PEER_SERVICE: &str = "peer.service";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const DB_NAME: &str = "db.name";
    pub const DB_NAMESPACE: &str = "db.namespace";
    pub const DB_SYSTEM: &str = "db.system";
    /// Summed into an edge's `bytes`.
    pub const BODY_SIZES: [&str; 3] = [
        "messaging.message.body.size",
        "http.request.body.size",
        "http.response.body.size",
    ];
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GraphAttributes<'a> {
    pub destination: Option<&'a str>,
    pub peer_service: Option<&'a str>,
    pub server_address: Option<&'a str>,
    pub db_name: Option<&'a str>,
    pub db_namespace: Option<&'a str>,
    pub db_system: Option<&'a str>,
    /// Sum of the body sizes present; `None` when the span reports none.
    pub bytes: Option<u64>,
}

/// One span, borrowed from its batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanRow<'a> {
    pub key: SpanKey,
    pub parent: Option<SpanId>,
    pub kind: SpanKind,
    pub service: &'a str,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub error: bool,
    pub attributes: GraphAttributes<'a>,
    /// Links with valid ids, in the span's order.
    pub links: Vec<SpanKey>,
}

/// Typed views of the columns; `None` when the batch is not in the storage schema.
pub(crate) struct SpanColumns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent_span_id: &'a FixedSizeBinaryArray,
    kind: &'a StringArray,
    service_name: &'a StringArray,
    start_time: &'a TimestampNanosecondArray,
    duration_ns: &'a Int64Array,
    status_code: &'a StringArray,
    attributes: &'a MapArray,
    /// The attribute map's keys and values, when they are text (as the storage schema has them).
    attribute_text: Option<(&'a StringArray, &'a StringArray)>,
    links: &'a ListArray,
    /// The resource attribute map with its text keys and values, when present.
    resource: Option<(&'a MapArray, &'a StringArray, &'a StringArray)>,
}

impl<'a> SpanColumns<'a> {
    pub fn new(batch: &'a RecordBatch) -> Option<Self> {
        let column = |name: &str| batch.column_by_name(name);
        let attributes: &MapArray = column(columns::ATTRIBUTES)?.as_map_opt()?;
        let attribute_text = attributes
            .keys()
            .as_string_opt::<i32>()
            .zip(attributes.values().as_string_opt::<i32>());
        Some(Self {
            trace_id: column(columns::TRACE_ID)?.as_fixed_size_binary_opt()?,
            span_id: column(columns::SPAN_ID)?.as_fixed_size_binary_opt()?,
            parent_span_id: column(columns::PARENT_SPAN_ID)?.as_fixed_size_binary_opt()?,
            kind: column(columns::KIND)?.as_string_opt::<i32>()?,
            service_name: column(columns::SERVICE_NAME)?.as_string_opt::<i32>()?,
            start_time: column(columns::START_TIME)?
                .as_primitive_opt::<TimestampNanosecondType>()?,
            duration_ns: column(columns::DURATION_NS)?.as_primitive_opt::<Int64Type>()?,
            status_code: column(columns::STATUS_CODE)?.as_string_opt::<i32>()?,
            attributes,
            attribute_text,
            links: column(columns::LINKS)?.as_list_opt::<i32>()?,
            resource: column(columns::RESOURCE_ATTRIBUTES)
                .and_then(|c| c.as_map_opt())
                .and_then(|map: &MapArray| {
                    Some((
                        map,
                        map.keys().as_string_opt::<i32>()?,
                        map.values().as_string_opt::<i32>()?,
                    ))
                }),
        })
    }

    /// The service name at `row` (no other column read).
    pub fn service(&self, row: usize) -> Option<&'a str> {
        text(self.service_name, row)
    }

    /// The resource attributes of `row` a node carries
    /// ([`crate::attributes::NODE_ATTRIBUTE_KEYS`]), as (key index, value), into `out`.
    pub fn node_attributes(&self, row: usize, out: &mut Vec<(u8, &'a str)>) {
        out.clear();
        let Some((map, names, values)) = self.resource else {
            return;
        };
        if map.is_null(row) {
            return;
        }
        let offsets = map.value_offsets();
        let (first, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        for entry in first..end {
            let Some(name) = text(names, entry) else {
                continue;
            };
            let Some(key) = crate::attributes::NODE_ATTRIBUTE_KEYS
                .iter()
                .position(|k| *k == name)
            else {
                continue;
            };
            if let Some(value) = text(values, entry).filter(|v| !v.is_empty()) {
                out.push((key as u8, value));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.trace_id.len()
    }

    /// The span at `row`; `None` when its ids are missing or invalid.
    pub fn row(&self, row: usize) -> Option<SpanRow<'a>> {
        let trace = fixed_id::<16>(self.trace_id, row)?;
        let span = fixed_id::<8>(self.span_id, row)?;
        if !ids::is_valid_trace_id(&trace) || !ids::is_valid_span_id(&span) {
            return None;
        }
        let parent = fixed_id::<8>(self.parent_span_id, row).filter(|p| ids::is_valid_span_id(p));
        Some(SpanRow {
            key: SpanKey { trace, span },
            parent,
            kind: SpanKind::parse(text(self.kind, row).unwrap_or("")),
            service: text(self.service_name, row).unwrap_or(""),
            start_ns: value_or_zero(self.start_time.is_valid(row), || self.start_time.value(row)),
            duration_ns: value_or_zero(self.duration_ns.is_valid(row), || {
                self.duration_ns.value(row)
            }),
            error: text(self.status_code, row) == Some("ERROR"),
            attributes: self.graph_attributes(row),
            links: self.links_of(row),
        })
    }

    fn graph_attributes(&self, row: usize) -> GraphAttributes<'a> {
        let mut found = GraphAttributes::default();
        let Some((names, values)) = self.attribute_text else {
            return found;
        };
        if self.attributes.is_null(row) {
            return found;
        }
        let offsets = self.attributes.value_offsets();
        let (first, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        // Names are compared as bytes, straight from the keys' buffer: most attributes are
        // none of these, and neither their names nor their values are looked at further.
        let (name_offsets, name_bytes) = (names.value_offsets(), names.value_data());
        for entry in first..end {
            let name = &name_bytes[name_offsets[entry] as usize..name_offsets[entry + 1] as usize];
            // Every key read here starts with one of these letters (a test holds the list to
            // the keys), which spares `client.address`, `http.route`, ... a compare.
            if !matches!(name.first(), Some(b'm' | b'p' | b's' | b'd' | b'h')) {
                continue;
            }
            let slot = match name {
                _ if name == keys::DESTINATION.as_bytes() => &mut found.destination,
                _ if name == keys::PEER_SERVICE.as_bytes() => &mut found.peer_service,
                _ if name == keys::SERVER_ADDRESS.as_bytes() => &mut found.server_address,
                _ if name == keys::DB_NAME.as_bytes() => &mut found.db_name,
                _ if name == keys::DB_NAMESPACE.as_bytes() => &mut found.db_namespace,
                _ if name == keys::DB_SYSTEM.as_bytes() => &mut found.db_system,
                _ if keys::BODY_SIZES.iter().any(|key| name == key.as_bytes()) => {
                    if let Some(Ok(size)) = text(values, entry).map(|v| v.trim().parse::<u64>()) {
                        found.bytes = Some(found.bytes.unwrap_or(0).saturating_add(size));
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(value) = text(values, entry).filter(|v| !v.is_empty()) {
                *slot = Some(value);
            }
        }
        found
    }

    fn links_of(&self, row: usize) -> Vec<SpanKey> {
        if self.links.is_null(row) || self.links.value_length(row) == 0 {
            return Vec::new();
        }
        let items = self.links.values().as_struct();
        let (Some(trace_ids), Some(span_ids)) = (
            items
                .column_by_name("trace_id")
                .and_then(|c| c.as_string_opt::<i32>()),
            items
                .column_by_name("span_id")
                .and_then(|c| c.as_string_opt::<i32>()),
        ) else {
            return Vec::new();
        };
        let offsets = self.links.value_offsets();
        let (first, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        (first..end)
            .filter_map(|item| {
                let trace: TraceId = hex_id(text(trace_ids, item)?)?;
                let span: SpanId = hex_id(text(span_ids, item)?)?;
                (ids::is_valid_trace_id(&trace) && ids::is_valid_span_id(&span))
                    .then_some(SpanKey { trace, span })
            })
            .collect()
    }
}

fn text(array: &StringArray, row: usize) -> Option<&str> {
    array.is_valid(row).then(|| array.value(row))
}

fn value_or_zero(valid: bool, value: impl FnOnce() -> i64) -> i64 {
    if valid { value() } else { 0 }
}

fn fixed_id<const N: usize>(array: &FixedSizeBinaryArray, row: usize) -> Option<[u8; N]> {
    if array.is_null(row) {
        return None;
    }
    array.value(row).try_into().ok()
}

fn hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    ids::from_hex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{batch, span};

    fn check(spans: &[crate::test_support::TestSpan], expected: &[Option<&str>]) {
        let batch = batch(spans);
        let columns = SpanColumns::new(&batch).expect("storage schema");
        let rendered: Vec<Option<String>> = (0..columns.len())
            .map(|row| columns.row(row).map(|r| render(&r)))
            .collect();
        let expected: Vec<Option<String>> =
            expected.iter().map(|e| e.map(str::to_string)).collect();
        assert_eq!(rendered, expected);
    }

    fn render(row: &SpanRow<'_>) -> String {
        let a = &row.attributes;
        format!(
            "{} {:?} parent={} kind={:?} start={} duration={} error={} dest={:?} peer={:?} address={:?} db={:?}/{:?}/{:?} bytes={:?} links={}",
            row.key.span[7],
            row.key.trace[15],
            row.parent.map_or("-".to_string(), |p| p[7].to_string()),
            row.kind,
            row.start_ns,
            row.duration_ns,
            row.error,
            a.destination,
            a.peer_service,
            a.server_address,
            a.db_system,
            a.db_name,
            a.db_namespace,
            a.bytes,
            row.links
                .iter()
                .map(|l| format!("{}:{}", l.trace[15], l.span[7]))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    #[test]
    fn reads_ids_kinds_times_and_status() {
        check(
            &[
                span(1, 1, None, "SERVER", "orders").at_ms(5).lasting_ms(2),
                span(1, 2, Some(1), "CLIENT", "orders").error(),
                span(1, 3, Some(1), "weird", "orders"),
            ],
            &[
                Some(
                    "1 1 parent=- kind=Server start=5000000 duration=2000000 error=false dest=None peer=None address=None db=None/None/None bytes=None links=",
                ),
                Some(
                    "2 1 parent=1 kind=Client start=1000000000 duration=10000000 error=true dest=None peer=None address=None db=None/None/None bytes=None links=",
                ),
                Some(
                    "3 1 parent=1 kind=Unspecified start=1000000000 duration=10000000 error=false dest=None peer=None address=None db=None/None/None bytes=None links=",
                ),
            ],
        );
    }

    #[test]
    fn reads_graph_attributes_and_sums_body_sizes() {
        check(
            &[span(1, 1, None, "CLIENT", "orders")
                .attr("db.system", "postgresql")
                .attr("db.name", "orders")
                .attr("server.address", "pg.internal")
                .attr("peer.service", "")
                .attr("http.request.body.size", "100")
                .attr("http.response.body.size", "20")
                .attr("messaging.message.body.size", "not a number")],
            &[Some(
                "1 1 parent=- kind=Client start=1000000000 duration=10000000 error=false dest=None peer=None address=Some(\"pg.internal\") db=Some(\"postgresql\")/Some(\"orders\")/None bytes=Some(120) links=",
            )],
        );
    }

    #[test]
    fn reads_links_and_skips_bad_ones() {
        check(
            &[span(2, 5, None, "CONSUMER", "billing")
                .attr("messaging.destination.name", "orders-topic")
                .link(1, 3)
                .raw_link("zz", "0102030405060708")
                .raw_link(&"00".repeat(16), "0102030405060708")
                .link(1, 4)],
            &[Some(
                "5 2 parent=- kind=Consumer start=1000000000 duration=10000000 error=false dest=Some(\"orders-topic\") peer=None address=None db=None/None/None bytes=None links=1:3,1:4",
            )],
        );
    }

    #[test]
    fn every_key_read_starts_with_a_letter_the_reader_checks() {
        let mut all = vec![
            keys::DESTINATION,
            keys::PEER_SERVICE,
            keys::SERVER_ADDRESS,
            keys::DB_NAME,
            keys::DB_NAMESPACE,
            keys::DB_SYSTEM,
        ];
        all.extend(keys::BODY_SIZES);
        for key in all {
            let batch = batch(&[span(1, 1, None, "CLIENT", "orders").attr(key, "7")]);
            let columns = SpanColumns::new(&batch).expect("storage schema");
            let read = columns.row(0).expect("valid span").attributes;
            assert_ne!(read, GraphAttributes::default(), "{key} is skipped");
        }
    }

    #[test]
    fn a_batch_in_another_schema_is_refused() {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::empty());
        let batch = RecordBatch::new_empty(schema);
        assert!(SpanColumns::new(&batch).is_none());
    }
}
