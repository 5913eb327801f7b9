//! The protobuf `ExportTraceServiceRequest` decoded straight into the Arrow span builder,
//! borrowing strings and bytes from the request instead of building prost's structs (which
//! allocate a `String` per attribute key and value, a `Vec` per list, and are then copied
//! again into Arrow).
//!
//! It reads the encodings OTLP exporters produce. Whatever else prost accepts or refuses (a
//! singular message field sent twice, which protobuf merges; a oneof set twice; groups;
//! values nested deeper than [`MAX_VALUE_NESTING`], which the prost path refuses; every
//! malformed input) makes it stop with
//! [`Unusual`], and `decode::decode_protobuf` decodes the same bytes with prost and
//! `decode::convert` instead. So any request either gets the result the prost path gives,
//! or is handed to the prost path, error messages included. The validation and naming rules
//! are the ones in `spans.rs`, which the prost path applies too; this file knows nothing of
//! `decode.rs` (which calls it), so the two never call each other.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flowscope_model::SpanBatchBuilder;
use flowscope_model::schema::SpanRecord;

use crate::spans::{
    CheckedSpan, DecodedTraces, MAX_VALUE_NESTING, Rejection, Rejections, UNKNOWN_SERVICE,
    check_span_fields, decoded_traces, kind_name, status_name, write_json_string,
};

/// The request is not in the shape this decoder reads; decode it with prost instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unusual;

pub(crate) type Parse<T> = Result<T, Unusual>;

/// Decodes a request, or says it is [`Unusual`].
pub(crate) fn decode(body: &[u8]) -> Parse<DecodedTraces> {
    let total_spans = count_spans(body)?;
    let mut decoder = Decoder {
        builder: SpanBatchBuilder::sized_for(total_spans, body.len()),
        rejections: Rejections::default(),
        scratch: Scratch::default(),
    };
    let mut request = Reader::new(body);
    while let Some((tag, field)) = request.next()? {
        if tag == 1 {
            decoder.resource_spans(field.message()?)?;
        }
    }
    if total_spans == 0 {
        return Ok(DecodedTraces::default());
    }
    let accepted_spans = decoder.builder.len();
    // Fails if an attribute read as bytes is not UTF-8; prost then names it.
    let batch = decoder.builder.finish().map_err(|_| Unusual)?;
    Ok(decoded_traces(
        batch,
        accepted_spans,
        &decoder.rejections,
        total_spans,
    ))
}

/// Spans in the request, for the builder's capacity and the partial-success message.
fn count_spans(body: &[u8]) -> Parse<usize> {
    let mut spans = 0;
    let mut request = Reader::new(body);
    while let Some((tag, field)) = request.next()? {
        if tag != 1 {
            continue;
        }
        let mut resource_spans = Reader::new(field.message()?);
        while let Some((tag, field)) = resource_spans.next()? {
            if tag != 2 {
                continue;
            }
            let mut scope_spans = Reader::new(field.message()?);
            while let Some((tag, _)) = scope_spans.next()? {
                spans += usize::from(tag == 2);
            }
        }
    }
    Ok(spans)
}

/// Reused buffers for values that are not text on the wire (numbers, bytes, nested values)
/// and for link ids rendered as hex.
#[derive(Default)]
struct Scratch {
    value: String,
    trace_id_hex: String,
    span_id_hex: String,
}

struct Decoder {
    builder: SpanBatchBuilder,
    rejections: Rejections,
    scratch: Scratch,
}

/// A resource's attributes rendered once for all its spans, and its service name.
struct ResourceView<'a> {
    attributes: Vec<(&'a str, String)>,
    service_name: &'a str,
}

/// A scope's name and version.
#[derive(Default, Clone, Copy)]
struct ScopeView<'a> {
    name: &'a str,
    version: &'a str,
}

/// The fields of a span that are not repeated, as read from the wire.
#[derive(Default)]
struct SpanFields<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_span_id: &'a [u8],
    trace_state: &'a str,
    name: &'a str,
    kind: i32,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    flags: u32,
    dropped_attributes_count: u32,
    dropped_events_count: u32,
    dropped_links_count: u32,
    status: Option<(i32, &'a str)>,
}

impl Decoder {
    fn resource_spans(&mut self, bytes: &[u8]) -> Parse<()> {
        let resource = self.resource(container_head(bytes)?)?;
        each_contained(bytes, |scope_spans| {
            self.scope_spans(scope_spans, &resource)
        })
    }

    fn resource<'a>(&mut self, bytes: &'a [u8]) -> Parse<ResourceView<'a>> {
        let mut view = ResourceView {
            attributes: Vec::new(),
            service_name: UNKNOWN_SERVICE,
        };
        let mut service_name_seen = false;
        let mut fields = Reader::new(bytes);
        while let Some((tag, field)) = fields.next()? {
            match tag {
                1 => {
                    let (key, value) = read_key_value(field.message()?, &mut self.scratch.value)?;
                    // Like `decode::service_name`: the first `service.name` decides.
                    if key == "service.name" && !service_name_seen {
                        service_name_seen = true;
                        if let Some(name) = value.wire_string().filter(|name| !name.is_empty()) {
                            view.service_name = name;
                        }
                    }
                    view.attributes
                        .push((key, value.text(&self.scratch.value).to_owned()));
                }
                2 => {
                    field.varint()?;
                }
                3 => entity_ref(field.message()?)?,
                _ => {}
            }
        }
        Ok(view)
    }

    fn scope_spans(&mut self, bytes: &[u8], resource: &ResourceView<'_>) -> Parse<()> {
        let scope = self.scope(container_head(bytes)?)?;
        each_contained(bytes, |span| self.span(span, resource, scope))
    }

    /// The scope's name and version; its attributes have no column but must be valid.
    fn scope<'a>(&mut self, bytes: &'a [u8]) -> Parse<ScopeView<'a>> {
        let mut view = ScopeView::default();
        let mut fields = Reader::new(bytes);
        while let Some((tag, field)) = fields.next()? {
            match tag {
                1 => view.name = field.string()?,
                2 => view.version = field.string()?,
                3 => {
                    read_key_value(field.message()?, &mut self.scratch.value)?;
                }
                4 => {
                    field.varint()?;
                }
                _ => {}
            }
        }
        Ok(view)
    }

    fn span(
        &mut self,
        bytes: &[u8],
        resource: &ResourceView<'_>,
        scope: ScopeView<'_>,
    ) -> Parse<()> {
        let span = span_fields(bytes)?;
        let checked = match check_span_fields(
            span.trace_id,
            span.span_id,
            span.parent_span_id,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        ) {
            Ok(checked) => checked,
            Err(reason) => {
                self.rejections.add(reason);
                // A rejected span's attributes, events and links must still be valid
                // protobuf, or prost would refuse the whole request.
                return span_repeated_fields(bytes, None, &mut self.scratch);
            }
        };
        let CheckedSpan {
            parent_span_id,
            start_time_unix_nano,
            end_time_unix_nano,
        } = checked;
        let (status_code, status_message) = span.status.map_or(("UNSET", ""), |(code, message)| {
            (status_name(code), message)
        });
        let record = SpanRecord {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id,
            trace_state: span.trace_state,
            name: span.name,
            kind: kind_name(span.kind),
            service_name: resource.service_name,
            start_time_unix_nano,
            end_time_unix_nano,
            status_code,
            status_message,
            scope_name: scope.name,
            scope_version: scope.version,
            flags: span.flags,
            dropped_attributes_count: span.dropped_attributes_count,
            dropped_events_count: span.dropped_events_count,
            dropped_links_count: span.dropped_links_count,
        };
        if let Err(error) = self.builder.begin_span(&record) {
            // `begin_span` checks before it appends, so the builder is still whole.
            tracing::error!(%error, "a validated span could not be appended to the batch");
            self.rejections.add(Rejection::Unstorable);
            return span_repeated_fields(bytes, None, &mut self.scratch);
        }
        span_repeated_fields(bytes, Some(&mut self.builder), &mut self.scratch)?;
        for (key, value) in &resource.attributes {
            self.builder.push_resource_attribute(key, value);
        }
        // Only a bug fails here, mid-row; the prost path then decides.
        self.builder.end_span().map_err(|_| Unusual)
    }
}

/// Field 1 of a `ResourceSpans` or `ScopeSpans`, the two messages of the same shape: the
/// resource or scope that field 2's scope spans or spans belong to (it may follow them on
/// the wire, so it is read first), with field 2 checked to be messages and field 3, the
/// schema URL, a string.
fn container_head(bytes: &[u8]) -> Parse<&[u8]> {
    let mut head = None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            1 => set_once(&mut head, field.message()?)?,
            2 => {
                field.message()?;
            }
            3 => {
                field.string()?;
            }
            _ => {}
        }
    }
    Ok(head.unwrap_or_default())
}

/// Reads each message of field 2 of a `ResourceSpans` or `ScopeSpans`, in wire order.
fn each_contained(bytes: &[u8], mut read: impl FnMut(&[u8]) -> Parse<()>) -> Parse<()> {
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        if tag == 2 {
            read(field.message()?)?;
        }
    }
    Ok(())
}

/// Reads a span's non-repeated fields, checking the wire types of the repeated ones.
fn span_fields(bytes: &[u8]) -> Parse<SpanFields<'_>> {
    let mut span = SpanFields::default();
    let mut status = None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            1 => span.trace_id = field.bytes()?,
            2 => span.span_id = field.bytes()?,
            3 => span.trace_state = field.string()?,
            4 => span.parent_span_id = field.bytes()?,
            5 => span.name = field.string()?,
            6 => span.kind = field.int32()?,
            7 => span.start_time_unix_nano = field.fixed64()?,
            8 => span.end_time_unix_nano = field.fixed64()?,
            9 | 11 | 13 => {
                field.message()?;
            }
            10 => span.dropped_attributes_count = field.uint32()?,
            12 => span.dropped_events_count = field.uint32()?,
            14 => span.dropped_links_count = field.uint32()?,
            15 => set_once(&mut status, field.message()?)?,
            16 => span.flags = field.fixed32()?,
            _ => {}
        }
    }
    if let Some(bytes) = status {
        let mut code = 0;
        let mut message = "";
        let mut fields = Reader::new(bytes);
        while let Some((tag, field)) = fields.next()? {
            match tag {
                2 => message = field.string()?,
                3 => code = field.int32()?,
                _ => {}
            }
        }
        span.status = Some((code, message));
    }
    Ok(span)
}

/// Reads a span's attributes, events and links in wire order, into the open row of
/// `builder`, or only checking them when there is none.
fn span_repeated_fields(
    bytes: &[u8],
    mut builder: Option<&mut SpanBatchBuilder>,
    scratch: &mut Scratch,
) -> Parse<()> {
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            9 => {
                let (key, value) = read_attribute(field.message()?, &mut scratch.value)?;
                if let Some(builder) = builder.as_deref_mut() {
                    builder.push_attribute_bytes(key, value.unwrap_or(scratch.value.as_bytes()));
                } else {
                    // Nothing will check these bytes later.
                    text(key)?;
                    value.map(text).transpose()?;
                }
            }
            11 => event(field.message()?, builder.as_deref_mut(), scratch)?,
            13 => link(field.message()?, builder.as_deref_mut(), scratch)?,
            _ => {}
        }
    }
    Ok(())
}

fn event(
    bytes: &[u8],
    mut builder: Option<&mut SpanBatchBuilder>,
    scratch: &mut Scratch,
) -> Parse<()> {
    let mut time_unix_nano = 0;
    let mut name = "";
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            1 => time_unix_nano = field.fixed64()?,
            2 => name = field.string()?,
            3 => read_nested_attribute(
                field.message()?,
                builder.as_deref_mut(),
                scratch,
                SpanBatchBuilder::push_event_attribute,
            )?,
            4 => {
                field.varint()?;
            }
            _ => {}
        }
    }
    if let Some(builder) = builder {
        // Clamped as in `decode::events`: a late event does not cost the span.
        let time = i64::try_from(time_unix_nano).unwrap_or(i64::MAX);
        builder.end_event(time, name).map_err(|_| Unusual)?;
    }
    Ok(())
}

fn link(
    bytes: &[u8],
    mut builder: Option<&mut SpanBatchBuilder>,
    scratch: &mut Scratch,
) -> Parse<()> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut trace_state = "";
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            1 => trace_id = field.bytes()?,
            2 => span_id = field.bytes()?,
            3 => trace_state = field.string()?,
            4 => read_nested_attribute(
                field.message()?,
                builder.as_deref_mut(),
                scratch,
                SpanBatchBuilder::push_link_attribute,
            )?,
            5 => {
                field.varint()?;
            }
            6 => {
                field.fixed32()?;
            }
            _ => {}
        }
    }
    if let Some(builder) = builder {
        write_hex(trace_id, &mut scratch.trace_id_hex);
        write_hex(span_id, &mut scratch.span_id_hex);
        builder
            .end_link(&scratch.trace_id_hex, &scratch.span_id_hex, trace_state)
            .map_err(|_| Unusual)?;
    }
    Ok(())
}

/// Reads an attribute of an event or a link, and `push`es it into the open row of
/// `builder` when there is one.
fn read_nested_attribute(
    bytes: &[u8],
    builder: Option<&mut SpanBatchBuilder>,
    scratch: &mut Scratch,
    push: fn(&mut SpanBatchBuilder, &str, &str),
) -> Parse<()> {
    let (key, value) = read_key_value(bytes, &mut scratch.value)?;
    if let Some(builder) = builder {
        push(builder, key, value.text(&scratch.value));
    }
    Ok(())
}

/// `EntityRef` has no column; its strings must still be valid UTF-8.
fn entity_ref(bytes: &[u8]) -> Parse<()> {
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        if (1..=4).contains(&tag) {
            field.string()?;
        }
    }
    Ok(())
}

fn write_hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// An attribute value rendered as text: borrowed from the wire, a constant, or written into
/// the caller's scratch string.
#[derive(Debug, Clone, Copy)]
enum Rendered<'a> {
    /// A `string_value`, as it came.
    WireString(&'a str),
    Constant(&'static str),
    InScratch,
}

impl<'a> Rendered<'a> {
    fn text<'s>(self, scratch: &'s str) -> &'s str
    where
        'a: 's,
    {
        match self {
            Rendered::WireString(text) => text,
            Rendered::Constant(text) => text,
            Rendered::InScratch => scratch,
        }
    }

    fn wire_string(self) -> Option<&'a str> {
        match self {
            Rendered::WireString(text) => Some(text),
            _ => None,
        }
    }
}

/// A `KeyValue`'s key and value message, neither checked. A key sent twice is [`Unusual`]:
/// prost checks both as UTF-8, and keeps the last.
fn key_value_fields(bytes: &[u8]) -> Parse<(&[u8], Option<&[u8]>)> {
    let mut key = None;
    let mut value = None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            1 => set_once(&mut key, field.bytes()?)?,
            2 => set_once(&mut value, field.message()?)?,
            3 => {
                field.int32()?;
            }
            _ => {}
        }
    }
    Ok((key.unwrap_or_default(), value))
}

/// A `KeyValue`: its key, and its value rendered as `decode::render_value` does.
fn read_key_value<'a>(bytes: &'a [u8], scratch: &mut String) -> Parse<(&'a str, Rendered<'a>)> {
    let (key, value) = key_value_fields(bytes)?;
    let value = match value {
        Some(bytes) => any_value(bytes)?,
        None => WireValue::Empty,
    };
    Ok((text(key)?, render(value, scratch)?))
}

/// A span's own attribute as [`read_key_value`] reads it, except that the key and a string
/// value are not checked as UTF-8 here: [`SpanBatchBuilder::push_attribute_bytes`] checks a
/// whole batch of them at once. Any other value is rendered into `scratch` (`None`).
fn read_attribute<'a>(
    bytes: &'a [u8],
    scratch: &mut String,
) -> Parse<(&'a [u8], Option<&'a [u8]>)> {
    let (key, value) = key_value_fields(bytes)?;
    let Some(value) = value else {
        return Ok((key, Some(&[])));
    };
    if let Some(text) = string_value_bytes(value)? {
        return Ok((key, Some(text)));
    }
    Ok(match render(any_value(value)?, scratch)? {
        Rendered::WireString(text) => (key, Some(text.as_bytes())),
        Rendered::Constant(text) => (key, Some(text.as_bytes())),
        Rendered::InScratch => (key, None),
    })
}

/// The bytes of an `AnyValue` that holds only a `string_value`, unchecked; `None` for any
/// other value, which [`any_value`] then reads (and refuses, if it is malformed).
fn string_value_bytes(bytes: &[u8]) -> Parse<Option<&[u8]>> {
    let mut text = None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match (tag, field) {
            (1, Field::LengthDelimited(bytes)) if text.is_none() => text = Some(bytes),
            (1..=8, _) => return Ok(None),
            _ => {}
        }
    }
    Ok(text)
}

/// One `AnyValue` as read from the wire; nested lists stay unread until rendered.
#[derive(Debug, Clone, Copy)]
enum WireValue<'a> {
    Empty,
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(&'a [u8]),
    Kvlist(&'a [u8]),
    Bytes(&'a [u8]),
    StringIndex,
}

fn any_value(bytes: &[u8]) -> Parse<WireValue<'_>> {
    let mut value = None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        let read = match tag {
            1 => WireValue::String(field.string()?),
            2 => WireValue::Bool(field.varint()? != 0),
            // Two's complement, as prost reads an int64.
            3 => WireValue::Int(field.varint()? as i64),
            4 => WireValue::Double(f64::from_bits(field.fixed64()?)),
            5 => WireValue::Array(field.message()?),
            6 => WireValue::Kvlist(field.message()?),
            7 => WireValue::Bytes(field.bytes()?),
            8 => {
                field.int32()?;
                WireValue::StringIndex
            }
            _ => continue,
        };
        // A oneof set twice: prost keeps the last or merges; leave that to prost.
        set_once(&mut value, read)?;
    }
    Ok(value.unwrap_or(WireValue::Empty))
}

/// The top-level rendering of `decode::render_value`.
fn render<'a>(value: WireValue<'a>, scratch: &mut String) -> Parse<Rendered<'a>> {
    scratch.clear();
    Ok(match value {
        WireValue::Empty | WireValue::StringIndex => Rendered::Constant(""),
        WireValue::String(text) => Rendered::WireString(text),
        WireValue::Bool(flag) => Rendered::Constant(if flag { "true" } else { "false" }),
        WireValue::Int(number) => {
            // The text `Display` writes, without the formatting machinery: two of every
            // span's attributes are numbers in a typical HTTP span.
            scratch.push_str(itoa::Buffer::new().format(number));
            Rendered::InScratch
        }
        WireValue::Double(number) => {
            let _ = write!(scratch, "{number}");
            Rendered::InScratch
        }
        WireValue::Bytes(bytes) => {
            BASE64.encode_string(bytes, scratch);
            Rendered::InScratch
        }
        WireValue::Array(_) | WireValue::Kvlist(_) => {
            write_json(value, scratch, 1)?;
            Rendered::InScratch
        }
    })
}

/// The nested rendering of `decode::write_json`: compact JSON, keys in wire order. `level`
/// counts as `decode::MAX_VALUE_NESTING` does (the attribute's value is level 1); a deeper
/// value is left to the prost path, which refuses the request.
fn write_json(value: WireValue<'_>, out: &mut String, level: usize) -> Parse<()> {
    if level > MAX_VALUE_NESTING {
        return Err(Unusual);
    }
    match value {
        WireValue::Empty | WireValue::StringIndex => out.push_str("null"),
        WireValue::String(text) => write_json_string(text, out),
        WireValue::Bool(flag) => out.push_str(if flag { "true" } else { "false" }),
        WireValue::Int(number) => {
            let _ = write!(out, "{number}");
        }
        WireValue::Double(number) if number.is_finite() => {
            let _ = write!(out, "{number}");
        }
        WireValue::Double(number) => write_json_string(&number.to_string(), out),
        WireValue::Bytes(bytes) => write_json_string(&BASE64.encode(bytes), out),
        WireValue::Array(bytes) => write_json_list(bytes, out, ['[', ']'], |item, out| {
            write_json(any_value(item)?, out, level + 1)
        })?,
        WireValue::Kvlist(bytes) => write_json_list(bytes, out, ['{', '}'], |entry, out| {
            let (key, value) = nested_key_value(entry)?;
            write_json_string(key, out);
            out.push(':');
            write_json(value, out, level + 1)
        })?,
    }
    Ok(())
}

/// Writes the messages of field 1 of an `ArrayValue` (its values) or a `KeyValueList` (its
/// entries) with `write_item`, separated by commas and between the `brackets`.
fn write_json_list(
    bytes: &[u8],
    out: &mut String,
    brackets: [char; 2],
    mut write_item: impl FnMut(&[u8], &mut String) -> Parse<()>,
) -> Parse<()> {
    let [open, close] = brackets;
    out.push(open);
    let mut first = true;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        if tag != 1 {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_item(field.message()?, out)?;
    }
    out.push(close);
    Ok(())
}

/// A `KeyValue` inside a key-value list, its value left unrendered.
fn nested_key_value(bytes: &[u8]) -> Parse<(&str, WireValue<'_>)> {
    let mut key = "";
    let mut value = None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, field)) = fields.next()? {
        match tag {
            1 => key = field.string()?,
            2 => set_once(&mut value, field.message()?)?,
            3 => {
                field.int32()?;
            }
            _ => {}
        }
    }
    let value = match value {
        Some(bytes) => any_value(bytes)?,
        None => WireValue::Empty,
    };
    Ok((key, value))
}

/// A singular message field (or oneof) seen twice is merged by protobuf: not ours to read.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Parse<()> {
    if slot.replace(value).is_some() {
        return Err(Unusual);
    }
    Ok(())
}

/// One field's value by wire type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    LengthDelimited(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Field<'a> {
    fn varint(self) -> Parse<u64> {
        match self {
            Field::Varint(value) => Ok(value),
            _ => Err(Unusual),
        }
    }

    /// An `int32` or enum: prost keeps the low 32 bits.
    fn int32(self) -> Parse<i32> {
        self.varint().map(|value| value as i32)
    }

    /// A `uint32`: prost keeps the low 32 bits.
    fn uint32(self) -> Parse<u32> {
        self.varint().map(|value| value as u32)
    }

    fn fixed64(self) -> Parse<u64> {
        match self {
            Field::Fixed64(value) => Ok(value),
            _ => Err(Unusual),
        }
    }

    fn fixed32(self) -> Parse<u32> {
        match self {
            Field::Fixed32(value) => Ok(value),
            _ => Err(Unusual),
        }
    }

    pub(crate) fn bytes(self) -> Parse<&'a [u8]> {
        match self {
            Field::LengthDelimited(bytes) => Ok(bytes),
            _ => Err(Unusual),
        }
    }

    pub(crate) fn message(self) -> Parse<&'a [u8]> {
        self.bytes()
    }

    fn string(self) -> Parse<&'a str> {
        text(self.bytes()?)
    }
}

/// Prost refuses a string field that is not UTF-8.
fn text(bytes: &[u8]) -> Parse<&str> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| Unusual)
}

/// Walks the fields of one message.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// What is left to read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// The next field's number and value, `None` at the end. Groups, reserved wire types,
    /// field number 0 and truncation are all [`Unusual`].
    ///
    /// Always inlined: called for every field of every attribute, as a call it returned its
    /// result through memory and took a quarter of the decoder's time; inlined, each caller's
    /// `match` on the field number folds into it (a 512-span request decodes about 29% faster).
    #[inline(always)]
    pub(crate) fn next(&mut self) -> Parse<Option<(u32, Field<'a>)>> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| Unusual)?;
        let tag = key >> 3;
        if tag == 0 {
            return Err(Unusual);
        }
        let field = match key & 0x7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.array()?)),
            2 => {
                let length = usize::try_from(self.varint()?).map_err(|_| Unusual)?;
                Field::LengthDelimited(self.take(length)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.array()?)),
            _ => return Err(Unusual),
        };
        Ok(Some((tag, field)))
    }

    /// Keys, lengths and small numbers take one byte: read those without the loop.
    #[inline(always)]
    fn varint(&mut self) -> Parse<u64> {
        match self.bytes.split_first() {
            Some((&byte, rest)) if byte < 0x80 => {
                self.bytes = rest;
                Ok(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Parse<u64> {
        let mut value = 0u64;
        for (index, byte) in self.bytes.iter().copied().enumerate().take(10) {
            // The tenth byte holds bit 63 only; prost refuses anything more.
            if index == 9 && byte > 1 {
                return Err(Unusual);
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                self.bytes = &self.bytes[index + 1..];
                return Ok(value);
            }
        }
        Err(Unusual)
    }

    fn take(&mut self, length: usize) -> Parse<&'a [u8]> {
        if length > self.bytes.len() {
            return Err(Unusual);
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Parse<[u8; N]> {
        let taken = self.take(N)?;
        taken.try_into().map_err(|_| Unusual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_protobuf_with_prost;
    use crate::test_support::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
        any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use prost::Message as _;

    /// What a decode gave, in a form two decodes can be compared by.
    fn outcome(
        result: Result<DecodedTraces, crate::CollectorError>,
    ) -> Result<(Option<arrow::record_batch::RecordBatch>, usize, i64, String), String> {
        result
            .map(|decoded| {
                (
                    decoded.batch,
                    decoded.accepted_spans,
                    decoded.rejected_spans,
                    decoded.error_message,
                )
            })
            .map_err(|error| error.to_string())
    }

    /// The fast path reads `body` itself and gives exactly what prost and `convert` give.
    fn check_read_like_prost(body: &[u8]) {
        let fast = decode(body).expect("the wire decoder reads this request itself");
        let reference = decode_protobuf_with_prost(body);
        assert_eq!(outcome(Ok(fast)), outcome(reference));
    }

    /// The fast path steps aside, and `decode_protobuf` gives prost's answer.
    fn check_left_to_prost(body: &[u8]) {
        assert_eq!(decode(body).err(), Some(Unusual));
        assert_eq!(
            outcome(crate::decode::decode_protobuf(body)),
            outcome(decode_protobuf_with_prost(body))
        );
    }

    fn length_delimited(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    /// Unknown fields of every wire type prost skips.
    fn unknown_fields() -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let mut out = Vec::new();
        encode_key(100, WireType::Varint, &mut out);
        encode_varint(u64::MAX, &mut out);
        encode_key(101, WireType::ThirtyTwoBit, &mut out);
        out.extend_from_slice(&[1, 2, 3, 4]);
        encode_key(102, WireType::SixtyFourBit, &mut out);
        out.extend_from_slice(&[0xff; 8]);
        out.extend(length_delimited(
            103,
            b"\xff not utf-8 is fine in an unknown field",
        ));
        out
    }

    fn rich_span(id: u8) -> Span {
        let mut span = valid_span(id);
        span.parent_span_id = vec![7; 8];
        span.attributes = vec![
            key_value("http.method", "GET"),
            KeyValue {
                key: "n".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(-3)),
                }),
                key_strindex: 0,
            },
        ];
        span.events = vec![span::Event {
            time_unix_nano: u64::MAX,
            name: "late".into(),
            attributes: vec![key_value("k", "v")],
            dropped_attributes_count: 1,
        }];
        span.links = vec![span::Link {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 3],
            trace_state: "t=1".into(),
            attributes: vec![key_value("why", "batch")],
            dropped_attributes_count: 2,
            flags: 1,
        }];
        span.status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        span
    }

    fn resource(service: &str) -> Resource {
        Resource {
            attributes: vec![key_value("service.name", service), key_value("host", "a")],
            dropped_attributes_count: 0,
            entity_refs: vec![EntityRef {
                schema_url: "s".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                description_keys: vec![],
            }],
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_the_resource_may_follow_its_scopes() {
        let mut span_bytes = rich_span(1).encode_to_vec();
        span_bytes.extend(unknown_fields());
        let scope = InstrumentationScope {
            name: "lib".into(),
            version: "1".into(),
            attributes: vec![key_value("scope.attr", "x")],
            dropped_attributes_count: 0,
        };
        let mut scope_spans = length_delimited(2, &span_bytes);
        scope_spans.extend(unknown_fields());
        scope_spans.extend(length_delimited(1, &scope.encode_to_vec()));
        scope_spans.extend(length_delimited(2, &rich_span(2).encode_to_vec()));
        let mut resource_spans = length_delimited(2, &scope_spans);
        resource_spans.extend(length_delimited(1, &resource("cart").encode_to_vec()));
        resource_spans.extend(unknown_fields());
        let mut body = unknown_fields();
        body.extend(length_delimited(1, &resource_spans));
        check_read_like_prost(&body);
        let decoded = decode(&body).expect("read");
        let batch = decoded.batch.expect("two spans");
        assert_eq!(batch.num_rows(), 2);
        assert_strings(&batch, 1, &[("service_name", "cart")]);
        assert_strings(&batch, 0, &[("scope_name", "lib")]);
        assert_eq!(
            links_column(&batch, 0),
            vec![(
                "ab".repeat(16),
                "cdcdcd".to_string(),
                Some("t=1".to_string()),
                vec![("why".to_string(), "batch".to_string())]
            )]
        );
        assert_eq!(events_column(&batch, 0)[0].0, i64::MAX, "late events clamp");
    }

    #[test]
    fn the_first_service_name_attribute_decides() {
        let int_name = KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(5)),
            }),
            key_strindex: 0,
        };
        for attributes in [
            vec![int_name.clone(), key_value("service.name", "late")],
            vec![
                key_value("service.name", ""),
                key_value("service.name", "x"),
            ],
            vec![key_value("service.name", "first"), int_name],
        ] {
            let mut request = request_with(vec![valid_span(1)]);
            request.resource_spans[0].resource = Some(Resource {
                attributes,
                ..Resource::default()
            });
            check_read_like_prost(&request.encode_to_vec());
        }
    }

    #[test]
    fn what_prost_merges_or_refuses_is_left_to_prost() {
        let request = request_with(vec![rich_span(1)]);
        let encoded = request.encode_to_vec();
        let resource_bytes = resource("a").encode_to_vec();
        let scope_spans = length_delimited(2, &rich_span(1).encode_to_vec());

        // The resource twice: protobuf merges the two.
        let mut resource_spans = length_delimited(1, &resource_bytes);
        resource_spans.extend(length_delimited(1, &resource("b").encode_to_vec()));
        resource_spans.extend(length_delimited(2, &scope_spans));
        check_left_to_prost(&length_delimited(1, &resource_spans));

        // A oneof set twice in one value: the last wins in prost.
        let mut any_value = AnyValue {
            value: Some(Value::StringValue("a".into())),
        }
        .encode_to_vec();
        any_value.extend(
            AnyValue {
                value: Some(Value::IntValue(1)),
            }
            .encode_to_vec(),
        );
        let mut pair = length_delimited(1, b"k");
        pair.extend(length_delimited(2, &any_value));
        let mut span_bytes = valid_span(1).encode_to_vec();
        span_bytes.extend(length_delimited(9, &pair));
        let body = length_delimited(1, &length_delimited(2, &length_delimited(2, &span_bytes)));
        check_left_to_prost(&body);

        // A group in an unknown field: prost skips it.
        let mut with_group = encoded.clone();
        with_group.extend([0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]); // field 100 start, 1: 1, end
        check_left_to_prost(&with_group);

        // Invalid UTF-8 in a rejected span's attribute, and in scope attributes: prost
        // refuses the whole request.
        let mut rejected = valid_span(1);
        rejected.trace_id = vec![0; 16];
        rejected.attributes = vec![key_value("k", "\u{e9}")];
        for mut request in [
            request_with(vec![rejected]),
            request_with(vec![valid_span(2)]),
        ] {
            request.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
                attributes: vec![key_value("s", "\u{e9}")],
                ..InstrumentationScope::default()
            });
            let mut body = request.encode_to_vec();
            let at = body.iter().rposition(|byte| *byte == 0xc3).expect("é");
            body[at] = 0xff;
            check_left_to_prost(&body);
            assert!(crate::decode::decode_protobuf(&body).is_err());
        }

        // Truncated, and a wrong wire type for a known field.
        check_left_to_prost(&encoded[..encoded.len() - 1]);
        let mut wrong_type = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::Varint, &mut wrong_type);
        wrong_type.push(1);
        check_left_to_prost(&wrong_type);
    }

    #[test]
    fn span_attributes_are_checked_as_text_a_batch_at_a_time() {
        // Text beyond ASCII is read here, as prost reads it.
        let mut span = valid_span(1);
        span.attributes = vec![
            key_value("gr\u{f6}\u{df}e", "\u{65e5}\u{672c}"),
            key_value("", ""),
        ];
        check_read_like_prost(&request_with(vec![span, valid_span(2)]).encode_to_vec());

        // A span whose own attributes are not UTF-8: checked when the batch is finished, and
        // prost refuses the request, whether the bad bytes are a key or a value.
        let string_value = |text: &[u8]| length_delimited(1, text);
        let attribute = |key: &[u8], value: &[u8]| {
            let mut pair = length_delimited(1, key);
            pair.extend(length_delimited(2, &string_value(value)));
            length_delimited(9, &pair)
        };
        let body_with = |attributes: &[Vec<u8>]| {
            let mut first = valid_span(1).encode_to_vec();
            for attribute in attributes {
                first.extend(attribute);
            }
            let mut spans = length_delimited(2, &first);
            spans.extend(length_delimited(2, &valid_span(2).encode_to_vec()));
            length_delimited(1, &length_delimited(2, &spans))
        };
        for attributes in [
            vec![attribute(b"k", b"v"), attribute(b"\xff", b"v")],
            vec![attribute(b"k", b"v\xc3")],
            // Each half of "\u{e9}" alone: together the keys' buffer is valid UTF-8, but an
            // entry starts inside a character.
            vec![attribute(b"a\xc3", b"v"), attribute(b"\xa9b", b"v")],
            vec![attribute(b"k", b"a\xc3"), attribute(b"k", b"\xa9b")],
        ] {
            let body = body_with(&attributes);
            check_left_to_prost(&body);
            assert!(crate::decode::decode_protobuf(&body).is_err());
        }
        // A key sent twice, the first not UTF-8: prost checks both, so the last alone must
        // not decide.
        let mut pair = length_delimited(1, b"\xff");
        pair.extend(length_delimited(1, b"k"));
        pair.extend(length_delimited(2, &string_value(b"v")));
        let body = body_with(&[length_delimited(9, &pair)]);
        check_left_to_prost(&body);
        assert!(crate::decode::decode_protobuf(&body).is_err());
        // The same bytes, valid once the halves are one character.
        check_read_like_prost(&body_with(&[attribute(b"a\xc3\xa9b", b"v\xc3\xa9")]));
    }

    #[test]
    fn deeply_nested_values_are_left_to_prost() {
        let mut value = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        // 32 arrays around an integer: the integer is level MAX_VALUE_NESTING + 1.
        for _ in 0..MAX_VALUE_NESTING {
            value = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let mut span = valid_span(1);
        span.attributes = vec![KeyValue {
            key: "deep".into(),
            value: Some(value),
            key_strindex: 0,
        }];
        check_left_to_prost(&request_with(vec![span]).encode_to_vec());
    }

    #[test]
    fn values_at_the_nesting_limit_are_read_here_and_deeper_ones_refused_by_prost_anywhere() {
        let attribute = |levels| KeyValue {
            key: "deep".into(),
            value: Some(nested_value(levels)),
            key_strindex: 0,
        };
        // The places a trace request holds attributes: span, event, link, resource, scope.
        let requests = |levels: usize| {
            let mut span = valid_span(1);
            span.attributes = vec![attribute(levels)];
            let mut in_event = valid_span(2);
            in_event.events = vec![span::Event {
                attributes: vec![attribute(levels)],
                ..span::Event::default()
            }];
            let mut in_link = valid_span(3);
            in_link.links = vec![span::Link {
                attributes: vec![attribute(levels)],
                ..span::Link::default()
            }];
            let mut in_resource = request_with(vec![valid_span(4)]);
            in_resource.resource_spans[0].resource = Some(Resource {
                attributes: vec![attribute(levels)],
                ..Resource::default()
            });
            let mut in_scope = request_with(vec![valid_span(5)]);
            in_scope.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
                attributes: vec![attribute(levels)],
                ..InstrumentationScope::default()
            });
            [
                request_with(vec![span]),
                request_with(vec![in_event]),
                request_with(vec![in_link]),
                in_resource,
                in_scope,
            ]
        };
        for request in requests(MAX_VALUE_NESTING) {
            check_read_like_prost(&request.encode_to_vec());
        }
        for request in requests(MAX_VALUE_NESTING + 1) {
            let body = request.encode_to_vec();
            check_left_to_prost(&body);
            assert_eq!(
                crate::decode::decode_protobuf(&body)
                    .err()
                    .map(|e| e.to_string()),
                Some(crate::decode::nesting_error().to_string()),
                "{request:?}"
            );
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("service.name".to_string()),
            "[a-z.]{1,8}",
            any::<String>(),
        ]
    }

    fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            Just(None),
            text().prop_map(|text| Some(Value::StringValue(text))),
            any::<bool>().prop_map(|flag| Some(Value::BoolValue(flag))),
            any::<i64>().prop_map(|number| Some(Value::IntValue(number))),
            any::<f64>().prop_map(|number| Some(Value::DoubleValue(number))),
            vec(any::<u8>(), 0..6).prop_map(|bytes| Some(Value::BytesValue(bytes))),
            any::<i32>().prop_map(|index| Some(Value::StringValueStrindex(index))),
        ]
        .prop_map(|value| AnyValue { value });
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values })),
                }),
                vec((text(), option::of(inner)), 0..4).prop_map(|entries| AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: entries
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value,
                                key_strindex: 0,
                            })
                            .collect(),
                    })),
                }),
            ]
        })
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        vec(
            (text(), option::of(any_value()), any::<i32>()).prop_map(
                |(key, value, key_strindex)| KeyValue {
                    key,
                    value,
                    key_strindex,
                },
            ),
            0..4,
        )
    }

    fn id(valid_len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => vec(any::<u8>(), valid_len),
            1 => Just(vec![0; valid_len]),
            1 => vec(any::<u8>(), 0..20),
        ]
    }

    fn time() -> impl Strategy<Value = u64> {
        prop_oneof![4 => 0u64..2_000, 1 => any::<u64>()]
    }

    fn event() -> impl Strategy<Value = span::Event> {
        (time(), text(), attributes(), any::<u32>()).prop_map(
            |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            },
        )
    }

    fn link() -> impl Strategy<Value = span::Link> {
        (
            id(16),
            id(8),
            text(),
            attributes(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                    span::Link {
                        trace_id,
                        span_id,
                        trace_state,
                        attributes,
                        dropped_attributes_count,
                        flags,
                    }
                },
            )
    }

    fn span() -> impl Strategy<Value = Span> {
        let ids = (
            id(16),
            id(8),
            prop_oneof![Just(Vec::new()), id(8)],
            text(),
            text(),
        );
        let times = (-1i32..7, time(), time(), any::<u32>());
        let nested = (
            attributes(),
            vec(event(), 0..3),
            vec(link(), 0..3),
            option::of((-1i32..4, text())),
            (any::<u32>(), any::<u32>(), any::<u32>()),
        );
        (ids, times, nested).prop_map(
            |(
                (trace_id, span_id, parent_span_id, trace_state, name),
                (kind, start_time_unix_nano, end_time_unix_nano, flags),
                (attributes, events, links, status, dropped),
            )| Span {
                trace_id,
                span_id,
                parent_span_id,
                trace_state,
                name,
                kind,
                start_time_unix_nano,
                end_time_unix_nano,
                flags,
                attributes,
                dropped_attributes_count: dropped.0,
                events,
                dropped_events_count: dropped.1,
                links,
                dropped_links_count: dropped.2,
                status: status.map(|(code, message)| Status { message, code }),
            },
        )
    }

    fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let scope = (text(), text(), attributes(), any::<u32>()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            },
        );
        let scope_spans = (option::of(scope), vec(span(), 0..4), text()).prop_map(
            |(scope, spans, schema_url)| ScopeSpans {
                scope,
                spans,
                schema_url,
            },
        );
        let entity_ref =
            (text(), text(), vec(text(), 0..2)).prop_map(|(schema_url, r#type, id_keys)| {
                EntityRef {
                    schema_url,
                    r#type,
                    id_keys: id_keys.clone(),
                    description_keys: id_keys,
                }
            });
        let resource = (attributes(), any::<u32>(), vec(entity_ref, 0..2)).prop_map(
            |(attributes, dropped_attributes_count, entity_refs)| Resource {
                attributes,
                dropped_attributes_count,
                entity_refs,
            },
        );
        let resource_spans = (option::of(resource), vec(scope_spans, 0..3), text()).prop_map(
            |(resource, scope_spans, schema_url)| ResourceSpans {
                resource,
                scope_spans,
                schema_url,
            },
        );
        vec(resource_spans, 0..3)
            .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_prost_encoded_request_decodes_as_prost_and_convert_do(request in request()) {
            let body = request.encode_to_vec();
            let fast = decode(&body);
            prop_assert!(fast.is_ok(), "prost's own encoding is never unusual");
            prop_assert_eq!(outcome(fast.map_err(|_| crate::CollectorError::Internal(String::new()))), outcome(decode_protobuf_with_prost(&body)));
        }

        #[test]
        fn a_damaged_request_gets_the_answer_prost_gives(
            request in request(),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut body = request.encode_to_vec();
            if !body.is_empty() {
                for (at, byte) in flips {
                    let at = at.index(body.len());
                    body[at] = byte;
                }
            }
            prop_assert_eq!(
                outcome(crate::decode::decode_protobuf(&body)),
                outcome(decode_protobuf_with_prost(&body))
            );
        }
    }
}
