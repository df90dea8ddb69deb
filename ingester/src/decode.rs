//! Request bodies to Arrow, with the memory a body costs bounded before it
//! is decoded.
//!
//! A decoded OTLP request can be far larger than its body: an empty message
//! is two bytes on the wire and a hundred in memory, so 15 MiB of empty
//! `ResourceSpans` used to cost over a gigabyte. So:
//! - Protobuf is not decoded whole. The body's wire format is walked level by
//!   level (request → resource spans → scope spans). A resource and a scope
//!   are decoded with prost, once per group. A span is never decoded into
//!   OTLP structs: `span_reader` reads its wire format into a reused
//!   [`SpanRef`] of slices of the body, which is validated and appended to
//!   the Arrow builder.
//! - Before a resource or scope is decoded, a walk of its wire format that
//!   builds nothing prices what decoding it would allocate: the Rust struct
//!   of every nested message, plus its bytes. Priced above [`MAX_EXPANSION`]
//!   times its encoded size (plus a small allowance), its spans are refused
//!   through partial success. A span is priced as it is read, by the slots
//!   its attributes, events and links take, and refused past the same bound.
//! - JSON is decoded whole (serde), after the same pricing over the whole
//!   body: a body priced above [`MAX_EXPANSION`] times its size is refused.
//!
//! Walks are loops with an explicit stack, so no input can overflow the thread
//! stack.

use std::mem::size_of;

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use spanlake_schemas::encode::{AppendReport, Capacity, Group, ResourceContext, ScopeContext, SpanBatchBuilder};
use spanlake_schemas::span_ref::SpanRef;

use crate::error::IngestError;
use span_reader::{Unread, read_span};
use wire::{Fields, MAX_NESTING, WireError, embedded, last_embedded};

mod span_reader;
mod wire;

/// Most a message may cost decoded, as a multiple of its encoded size, beyond
/// `ALLOWANCE` (1 MiB). Together with the body itself and its Arrow form, this keeps
/// a request's memory within a small multiple of its size.
pub const MAX_EXPANSION: usize = 6;

/// Most bytes a request's builder reserves up front per byte of its body.
/// The Arrow form of typical spans is 2–3 times their protobuf size; beyond
/// this, buffers grow only with rows that were validated and priced.
const RESERVE_PER_BODY_BYTE: usize = 4;

/// About the bytes a span attribute takes on the wire, to reserve for a
/// request's span attributes by its spans' bytes: a key of a dozen or two
/// bytes, a short value, and their tags (an SDK's spans hold a few, beside
/// some 80 bytes of ids, times, name and status).
const ATTRIBUTE_WIRE_BYTES: usize = 48;

/// What the resource and scope attributes copied to a request's rows may
/// take in any request, whatever its size (beyond, [`MAX_EXPANSION`] times
/// its size): 64 MiB holds a 40-attribute resource on 20,000 spans.
const COPIED_ATTRIBUTE_BYTES: usize = 64 << 20;

/// What any one message may cost decoded whatever its size: small spans
/// with a few attributes, or an array of a few thousand numbers, cost more
/// than six times their bytes, harmlessly, since one span at a time is
/// decoded.
const ALLOWANCE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Protobuf => "OTLP protobuf",
            Self::Json => "OTLP JSON",
        }
    }
}

/// A request body converted: the batch of valid spans, what happened to
/// each span, and how many attribute values were truncated.
#[derive(Debug)]
pub struct Converted {
    /// Of the grouped span schema: resource and scope columns keyed by group.
    pub batch: RecordBatch,
    pub report: AppendReport,
    pub truncated: u64,
}

/// Converts a whole request body into `builder`'s batch.
pub fn convert(
    body: &[u8],
    format: Format,
    mut builder: SpanBatchBuilder,
    max_spans: usize,
) -> Result<Converted, IngestError> {
    let mut report = AppendReport::default();
    let copies = (MAX_EXPANSION * body.len()).max(COPIED_ATTRIBUTE_BYTES) / Capacity::ATTRIBUTE_BYTES;
    builder.limit_copied_entries(copies);
    match format {
        Format::Protobuf => append_protobuf(body, &mut builder, &mut report, max_spans)?,
        Format::Json => {
            let request = decode_json(body)?;
            let all_spans = || request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans);
            let spans = all_spans().count();
            if spans > max_spans {
                return Err(IngestError::TooManySpans { spans, limit: max_spans });
            }
            let span_attributes = all_spans().map(|s| s.attributes.len()).sum();
            builder.reserve(Capacity { rows: spans, span_attributes }.at_most(RESERVE_PER_BODY_BYTE * body.len()));
            builder.append_resource_spans(&request.resource_spans, &mut report);
        }
    }
    let truncated = builder.truncated_values();
    Ok(Converted { batch: builder.finish_grouped(), report, truncated })
}

fn undecodable(format: Format, reason: impl std::fmt::Display) -> IngestError {
    IngestError::Undecodable { format: format.name(), reason: reason.to_string() }
}

// ---------------------------------------------------------------------------
// Protobuf, one span at a time

/// Field numbers of the three outer levels.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
const SPAN_SPAN_ID: u32 = 2;

fn append_protobuf(
    body: &[u8],
    builder: &mut SpanBatchBuilder,
    report: &mut AppendReport,
    max_spans: usize,
) -> Result<(), IngestError> {
    let wire = |e: WireError| undecodable(Format::Protobuf, e);
    // First pass: the spans and their bytes (and the outer levels' wire
    // format), to refuse a request of too many spans and size the builder.
    // Spans are not read inside: their attributes are reserved for by their
    // bytes, and more grow the buffers.
    let (mut spans, mut span_bytes) = (0, 0);
    for rs in embedded(body, REQUEST_RESOURCE_SPANS) {
        for ss in embedded(rs.map_err(wire)?, RESOURCE_SPANS_SCOPE_SPANS) {
            for span in embedded(ss.map_err(wire)?, SCOPE_SPANS_SPANS) {
                spans += 1;
                span_bytes += span.map_or(0, <[u8]>::len);
            }
        }
    }
    if spans > max_spans {
        return Err(IngestError::TooManySpans { spans, limit: max_spans });
    }
    let span_attributes = span_bytes / ATTRIBUTE_WIRE_BYTES;
    builder.reserve(Capacity { rows: spans, span_attributes }.at_most(RESERVE_PER_BODY_BYTE * body.len()));

    let (empty_resource, empty_scope) = (Resource::default(), InstrumentationScope::default());
    let mut span = SpanRef::default();
    let (mut resources, mut scopes) = (Seen::default(), Seen::default());
    for rs in embedded(body, REQUEST_RESOURCE_SPANS) {
        let rs = rs.map_err(wire)?;
        let encoded_resource = last_embedded(rs, RESOURCE_SPANS_RESOURCE).map_err(wire)?;
        let schema_url = last_string(rs, RESOURCE_SPANS_SCHEMA_URL)?;
        // A copy of a resource met before joins its group, undecoded.
        let known_resource = resources.group(encoded_resource, schema_url);
        let resource = match known_resource {
            Some(_) => Ok(None),
            None => decode_priced::<Resource>(encoded_resource, Msg::Resource)?,
        };
        let mut resource_context = match known_resource {
            Some(group) => Ok(ResourceContext::joining(group)),
            None => resource
                .as_ref()
                .map(|r| ResourceContext::new(r.as_ref().unwrap_or(&empty_resource), schema_url))
                .map_err(Clone::clone),
        };
        for ss in embedded(rs, RESOURCE_SPANS_SCOPE_SPANS) {
            let ss = ss.map_err(wire)?;
            let encoded_scope = last_embedded(ss, SCOPE_SPANS_SCOPE).map_err(wire)?;
            let scope_schema_url = last_string(ss, SCOPE_SPANS_SCHEMA_URL)?;
            let known_scope = scopes.group(encoded_scope, scope_schema_url);
            let scope = match known_scope {
                Some(_) => Ok(None),
                None => decode_priced::<InstrumentationScope>(encoded_scope, Msg::Scope)?,
            };
            let mut scope_context = match (&resource_context, &scope, known_scope) {
                (Ok(r), Ok(_), Some(group)) => Ok(ScopeContext::joining(r, group)),
                (Ok(r), Ok(s), None) => Ok(ScopeContext::new(r, s.as_ref().unwrap_or(&empty_scope), scope_schema_url)),
                (Err(e), _, _) | (_, Err(e), _) => Err(e.clone()),
            };
            for encoded in embedded(ss, SCOPE_SPANS_SPANS) {
                let encoded = encoded.map_err(wire)?;
                let read = match &scope_context {
                    Ok(_) => match read_span(encoded, &mut span) {
                        Ok(()) => Ok(()),
                        Err(Unread::Wire(e)) => return Err(wire(e)),
                        Err(Unread::Overpriced(e)) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.clone()),
                };
                match (read, &mut resource_context, &mut scope_context) {
                    (Ok(()), Ok(r), Ok(s)) => builder.append_span_in(r, s, &span, report),
                    (read, r, s) => {
                        let reason = [
                            read.err().as_deref(),
                            r.as_ref().err().map(String::as_str),
                            s.as_ref().err().map(String::as_str),
                        ]
                        .into_iter()
                        .flatten()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                        let id = last_embedded(encoded, SPAN_SPAN_ID).ok().flatten().unwrap_or_default();
                        report.reject(id, reason);
                    }
                }
            }
            if known_scope.is_none()
                && let Ok(group) = scope_context.as_ref().map(ScopeContext::group)
            {
                scopes.remember(encoded_scope, scope_schema_url, group);
            }
        }
        if known_resource.is_none()
            && let Ok(group) = resource_context.as_ref().map(ResourceContext::group)
        {
            resources.remember(encoded_resource, schema_url, group);
        }
    }
    Ok(())
}

/// The resources (or scopes) of a request whose spans have a group of rows
/// in its batch, by their encoding and schema URL. A Collector forwards a
/// service's resource with each trace, so a request of ten traces can hold
/// one resource ten times: it is decoded once, and its spans share one
/// group. At most [`Seen::MOST`] are remembered, so a request of countless
/// distinct resources holds no more than that.
#[derive(Default)]
struct Seen<'b> {
    groups: foldhash::HashMap<(Option<&'b [u8]>, &'b str), Group>,
}

impl<'b> Seen<'b> {
    const MOST: usize = 1024;

    fn group(&self, encoded: Option<&'b [u8]>, schema_url: &'b str) -> Option<Group> {
        self.groups.get(&(encoded, schema_url)).copied()
    }

    fn remember(&mut self, encoded: Option<&'b [u8]>, schema_url: &'b str, group: Option<Group>) {
        if let Some(group) = group
            && self.groups.len() < Self::MOST
        {
            self.groups.insert((encoded, schema_url), group);
        }
    }
}

/// Decodes `encoded` (absent: `None`) once its price is within bounds.
/// `Ok(Err(reason))` when it is priced too high (its spans are refused);
/// `Err` when it is not valid protobuf (the request is refused).
fn decode_priced<M: prost::Message + Default>(
    encoded: Option<&[u8]>,
    msg: Msg,
) -> Result<Result<Option<M>, String>, IngestError> {
    let Some(encoded) = encoded else { return Ok(Ok(None)) };
    let cost = decoded_cost(encoded, msg).map_err(|e| undecodable(Format::Protobuf, e))?;
    if cost > MAX_EXPANSION * encoded.len() + ALLOWANCE {
        return Ok(Err(format!(
            "its {} would take about {cost} bytes decoded from {} bytes, more than {MAX_EXPANSION}x (many tiny values)",
            msg.name(),
            encoded.len()
        )));
    }
    M::decode(encoded).map(|m| Ok(Some(m))).map_err(|e| undecodable(Format::Protobuf, e))
}

fn last_string(message: &[u8], number: u32) -> Result<&str, IngestError> {
    let bytes = last_embedded(message, number).map_err(|e| undecodable(Format::Protobuf, e))?.unwrap_or_default();
    wire::utf8(bytes, number).map_err(|e| undecodable(Format::Protobuf, e))
}

/// The OTLP messages below a span or resource that decoding allocates, with
/// the fields that hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Msg {
    /// The message held by field `number`, and whether the field is repeated
    /// (each element then costs its struct in a vector).
    fn child(self, number: u32) -> Option<(Msg, bool)> {
        use Msg::*;
        Some(match (self, number) {
            (ResourceSpans, 1) => (Resource, false),
            (ResourceSpans, 2) => (ScopeSpans, true),
            (Resource, 1) => (KeyValue, true),
            (ScopeSpans, 1) => (Scope, false),
            (ScopeSpans, 2) => (Span, true),
            (Scope, 3) => (KeyValue, true),
            (Span, 9) => (KeyValue, true),
            (Span, 11) => (Event, true),
            (Span, 13) => (Link, true),
            (Span, 15) => (Status, false),
            (Event, 3) | (Link, 4) | (KeyValueList, 1) => (KeyValue, true),
            (KeyValue, 2) => (AnyValue, false),
            (AnyValue, 5) => (ArrayValue, false),
            (AnyValue, 6) => (KeyValueList, false),
            (ArrayValue, 1) => (AnyValue, true),
            _ => return None,
        })
    }

    /// The same, by OTLP/JSON key (lowerCamelCase, or the proto name).
    fn json_child(self, key: &str) -> Option<(Msg, bool)> {
        use Msg::*;
        let number = match (self, key) {
            (ResourceSpans, "resource") | (ScopeSpans, "scope") | (KeyValueList, "values") => 1,
            (ArrayValue, "values") => 1,
            (ResourceSpans, "scopeSpans" | "scope_spans") | (ScopeSpans, "spans") => 2,
            (Resource, "attributes") => 1,
            (Scope | Event, "attributes") => 3,
            (Span, "attributes") => 9,
            (Span, "events") => 11,
            (Span, "links") => 13,
            (Span, "status") => 15,
            (Link, "attributes") => 4,
            (KeyValue, "value") => 2,
            (AnyValue, "arrayValue" | "array_value") => 5,
            (AnyValue, "kvlistValue" | "kvlist_value") => 6,
            _ => return None,
        };
        self.child(number)
    }

    /// What one decoded instance occupies inline.
    fn size(self) -> usize {
        match self {
            Msg::ResourceSpans => size_of::<ResourceSpans>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::ScopeSpans => size_of::<ScopeSpans>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::Span => size_of::<Span>(),
            Msg::Event => size_of::<span::Event>(),
            Msg::Link => size_of::<span::Link>(),
            Msg::Status => size_of::<Status>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::ArrayValue => size_of::<ArrayValue>(),
            Msg::KeyValueList => size_of::<KeyValueList>() + size_of::<any_value::Value>(),
        }
    }

    /// What one more element of a repeated field costs: its struct, twice
    /// (a vector grows by doubling).
    fn element_cost(self) -> usize {
        2 * self.size()
    }

    fn name(self) -> &'static str {
        match self {
            Msg::Resource => "resource",
            Msg::Scope => "scope",
            _ => "span",
        }
    }
}

/// What decoding `encoded` as `msg` would allocate, walked without building
/// anything: every nested message's struct, plus the bytes (strings and ids
/// are copied).
fn decoded_cost(encoded: &[u8], msg: Msg) -> Result<usize, WireError> {
    let mut cost = msg.size() + encoded.len();
    let mut stack = vec![(msg, Fields::new(encoded))];
    while let Some((msg, fields)) = stack.last_mut() {
        let msg = *msg;
        let Some(field) = fields.next() else {
            stack.pop();
            continue;
        };
        let (number, value) = field?;
        if let (Some(bytes), Some((child, repeated))) = (value.bytes(), msg.child(number)) {
            if repeated {
                cost += child.element_cost();
            }
            if stack.len() >= MAX_NESTING {
                return Err(WireError::TooDeep);
            }
            stack.push((child, Fields::new(bytes)));
        }
    }
    Ok(cost)
}

// ---------------------------------------------------------------------------
// JSON: priced whole, then decoded whole

fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, IngestError> {
    let cost = json_cost(body).map_err(|e| undecodable(Format::Json, e))?;
    if cost > MAX_EXPANSION * body.len() + ALLOWANCE {
        return Err(IngestError::Expands { cost, size: body.len(), factor: MAX_EXPANSION });
    }
    serde_json::from_slice(body).map_err(|e| undecodable(Format::Json, e))
}

/// What decoding an OTLP/JSON body would allocate (as [`decoded_cost`]).
fn json_cost(body: &[u8]) -> Result<usize, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut cost = size_of::<ExportTraceServiceRequest>() + body.len();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    json::Request { cost: &mut cost }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(cost)
}

/// serde seeds that walk OTLP/JSON by the schema of [`Msg`], counting.
/// serde_json bounds their recursion (128 levels), so they cannot overflow
/// the stack.
mod json {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::Msg;

    pub(super) struct Request<'c> {
        pub(super) cost: &'c mut usize,
    }

    impl<'de> DeserializeSeed<'de> for Request<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(RequestVisitor(self.cost))
        }
    }

    struct RequestVisitor<'c>(&'c mut usize);

    impl<'de> Visitor<'de> for RequestVisitor<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an OTLP export request object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "resourceSpans" || key == "resource_spans" {
                    map.next_value_seed(Node { msg: Msg::ResourceSpans, repeated: true, cost: self.0 })?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    /// A message (or, when `repeated`, a list of them) of type `msg`.
    struct Node<'c> {
        msg: Msg,
        repeated: bool,
        cost: &'c mut usize,
    }

    impl<'de> DeserializeSeed<'de> for Node<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Node<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an OTLP {:?}", self.msg)
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            if !self.repeated {
                return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
            }
            loop {
                *self.cost += self.msg.element_cost();
                let element = Node { msg: self.msg, repeated: false, cost: &mut *self.cost };
                if seq.next_element_seed(element)?.is_none() {
                    *self.cost -= self.msg.element_cost();
                    return Ok(());
                }
            }
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            if self.repeated {
                return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
            }
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match self.msg.json_child(&key) {
                    Some((msg, repeated)) => map.next_value_seed(Node { msg, repeated, cost: &mut *self.cost })?,
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// For fuzzing tests: `body` with a byte changed (kind 0), inserted (1) or
/// cut from (otherwise) at each edit's place.
#[cfg(test)]
fn mutate(body: &mut Vec<u8>, edits: Vec<(usize, u8, u8)>) {
    for (at, byte, kind) in edits {
        let at = at % (body.len() + 1);
        match kind {
            0 if at < body.len() => body[at] = byte,
            1 => body.insert(at, byte),
            _ => body.truncate(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
    use prost::Message as _;

    use super::*;

    fn request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest { resource_spans }
    }

    #[test]
    fn empty_messages_are_priced_far_above_their_bytes() {
        let body = request(vec![ResourceSpans::default(); 10_000]).encode_to_vec();
        assert_eq!(body.len(), 20_000);
        let span = Span {
            attributes: vec![KeyValue::default(); 10_000],
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            ..Default::default()
        };
        let encoded = span.encode_to_vec();
        let cost = decoded_cost(&encoded, Msg::Span).unwrap();
        assert!(cost > 20 * encoded.len(), "{cost} for {} bytes", encoded.len());
    }

    #[test]
    fn json_and_protobuf_price_alike() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /".into(),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(any_value::Value::IntValue(1)) }; 100],
                    })),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = request(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span.clone(); 3], ..Default::default() }],
            ..Default::default()
        }]);
        let structs = |cost: usize, bytes: usize| cost - bytes;
        let proto = request.encode_to_vec();
        let json = serde_json::to_vec(&request).unwrap();
        let from_json = structs(json_cost(&json).unwrap(), json.len());
        let span_bytes = span.encode_to_vec();
        let per_span = structs(decoded_cost(&span_bytes, Msg::Span).unwrap(), span_bytes.len());
        // The JSON walk prices the same structs as the protobuf one, plus the
        // outer levels and each span's second slot in its vector.
        let most = 3 * (per_span + Msg::Span.size())
            + 2 * (Msg::ResourceSpans.size() + Msg::ScopeSpans.size())
            + size_of::<ExportTraceServiceRequest>();
        assert!(from_json >= 3 * per_span, "{from_json} vs 3 × {per_span}");
        assert!(from_json <= most, "{from_json} vs {most}; proto {}", proto.len());
    }

    #[test]
    fn a_span_priced_too_high_is_refused_and_the_rest_kept() {
        let good = Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        };
        let tiny_values = Span { span_id: vec![2; 8], attributes: vec![KeyValue::default(); 100_000], ..good.clone() };
        let body = request(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![good, tiny_values], ..Default::default() }],
            ..Default::default()
        }])
        .encode_to_vec();
        let converted = convert(&body, Format::Protobuf, SpanBatchBuilder::default(), 10).unwrap();
        assert_eq!((converted.report.accepted, converted.report.rejected), (1, 1));
        let reason = converted.report.first_error.unwrap();
        assert!(reason.starts_with("span 0202020202020202: its span would take more than"), "{reason}");
        assert_eq!(converted.batch.num_rows(), 1);
    }

    #[test]
    fn a_flood_of_empty_resource_spans_costs_nothing_and_json_is_refused() {
        let body = request(vec![ResourceSpans::default(); 100_000]).encode_to_vec();
        let converted = convert(&body, Format::Protobuf, SpanBatchBuilder::default(), 10).unwrap();
        assert_eq!(converted.batch.num_rows(), 0);
        let json = format!("{{\"resourceSpans\":[{}{{}}]}}", "{},".repeat(100_000));
        let error = convert(json.as_bytes(), Format::Json, SpanBatchBuilder::default(), 10).unwrap_err();
        assert!(matches!(error, IngestError::Expands { .. }), "{error}");
    }

    #[test]
    fn counts_in_a_request_reserve_no_more_than_its_size_allows() {
        let empty_attributes = Span { attributes: vec![KeyValue::default(); 200_000], ..Default::default() };
        for spans in [vec![Span::default(); 100_000], vec![empty_attributes]] {
            let body = request(vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }])
            .encode_to_vec();
            let converted = convert(&body, Format::Protobuf, SpanBatchBuilder::default(), 100_000).unwrap();
            assert_eq!(converted.batch.num_rows(), 0);
            let held = converted.batch.get_array_memory_size();
            assert!(
                held <= RESERVE_PER_BODY_BYTE * body.len() + (64 << 10),
                "{held} bytes for a {}-byte body",
                body.len()
            );
        }
    }

    #[test]
    fn a_large_resource_copied_to_many_spans_is_refused_past_a_bound() {
        let resource = Resource {
            attributes: (0..10_000).map(|i| KeyValue { key: format!("k{i}"), ..Default::default() }).collect(),
            ..Default::default()
        };
        let spans = (1..=20_000u64)
            .map(|i| Span {
                trace_id: [i.to_be_bytes(), [1; 8]].concat(),
                span_id: i.to_be_bytes().to_vec(),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                ..Default::default()
            })
            .collect();
        let body = request(vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }])
        .encode_to_vec();
        let converted = convert(&body, Format::Protobuf, SpanBatchBuilder::default(), 100_000).unwrap();
        let (accepted, rejected) = (converted.report.accepted, converted.report.rejected);
        assert!(accepted > 0 && rejected > 0 && accepted + rejected == 20_000, "{accepted} + {rejected}");
        let reason = converted.report.first_error.unwrap();
        assert!(reason.contains("resource and scope attributes (10000 entries)"), "{reason}");
        // The batch keeps the resource once; its block copies it to every row.
        let grouped = converted.batch.column_by_name("resource_attributes").unwrap().get_array_memory_size();
        let held = spanlake_schemas::encode::expanded_memory_size(&converted.batch);
        assert!(grouped < held / 20, "{grouped} bytes of resource attributes grouped, {held} expanded");
        assert!(held <= 2 * COPIED_ATTRIBUTE_BYTES, "{held} bytes held for a {}-byte body", body.len());
        let plain = spanlake_schemas::encode::expand_groups(&converted.batch).unwrap().get_array_memory_size();
        assert!(held >= plain / 2 && held <= plain * 2, "{held} bytes counted, {plain} expanded");
    }

    /// As a Collector forwards them: each trace's spans under their own
    /// copy of their service's resource. Copies are decoded once and share
    /// a group, and the batch holds what decoding every copy would give.
    #[test]
    fn a_resource_repeated_in_a_request_is_one_group() {
        let kv = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        };
        let resource = |service: &str| Resource { attributes: vec![kv("service.name", service)], ..Default::default() };
        let scope = |name: &str| InstrumentationScope { name: name.into(), ..Default::default() };
        // Span `i` of trace `t`; trace 0's first copy of "a" holds only an
        // invalid span (no trace id), so its copy after decodes again.
        let span = |t: u8, i: u8| Span {
            trace_id: if t == 0 && i == 0 { vec![] } else { vec![t + 1; 16] },
            span_id: vec![t + 1, i + 1, 0, 0, 0, 0, 0, 1],
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        };
        let resource_spans = |service: &str, schema_url: &str, library: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(resource(service)),
            scope_spans: vec![ScopeSpans { scope: Some(scope(library)), spans, ..Default::default() }],
            schema_url: schema_url.into(),
        };
        let mut copies = vec![resource_spans("a", "", "lib", vec![span(0, 0)])];
        for t in 0..40 {
            copies.push(resource_spans("a", "", "lib", vec![span(t, 1), span(t, 2)]));
            copies.push(resource_spans("b", "", "lib", vec![span(t, 3)]));
            copies.push(resource_spans("b", "v2", "other", vec![span(t, 4)]));
        }
        let body = request(copies);
        let protobuf = convert(&body.encode_to_vec(), Format::Protobuf, SpanBatchBuilder::default(), 1000).unwrap();
        let json =
            convert(&serde_json::to_vec(&body).unwrap(), Format::Json, SpanBatchBuilder::default(), 1000).unwrap();
        assert_eq!((protobuf.report.accepted, protobuf.report.rejected), (160, 1));
        let groups = |batch: &RecordBatch, column: &str| {
            use arrow::array::AsArray;
            let dictionary = batch.column_by_name(column).unwrap().as_dictionary::<arrow::datatypes::UInt32Type>();
            dictionary.values().len()
        };
        // "a", "b", and "b" of another schema URL; "lib" and "other".
        assert_eq!(groups(&protobuf.batch, "resource_attributes"), 3);
        assert_eq!(groups(&protobuf.batch, "scope_name"), 2);
        assert_eq!(groups(&json.batch, "resource_attributes"), 120, "JSON decodes each copy");
        let expand = |batch: &RecordBatch| spanlake_schemas::encode::expand_groups(batch).unwrap();
        assert_eq!(expand(&protobuf.batch), expand(&json.batch));
        // The buffer counts what the rows take expanded, not the spare room
        // of the few groups' buffers on every row.
        let held = spanlake_schemas::encode::expanded_memory_size(&protobuf.batch);
        let plain = expand(&protobuf.batch).get_array_memory_size();
        assert!(held >= plain / 2 && held <= plain * 2, "{held} bytes counted, {plain} expanded");
    }

    #[test]
    fn malformed_wire_format_is_an_error_not_a_panic() {
        for body in [&[0x0a, 0x05, 0x01][..], &[0xff; 11], &[0x0b], &[0x00, 0x00], &[0x0a, 0x80]] {
            let result = convert(body, Format::Protobuf, SpanBatchBuilder::default(), 10);
            assert!(matches!(result, Err(IngestError::Undecodable { .. })), "{body:?}: {result:?}");
        }
    }

    /// A valid request with every kind of nested value, for mutation.
    fn seed_request() -> Vec<u8> {
        let kv = |key: &str, value: any_value::Value| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        };
        let nested = any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv(
                "a",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(any_value::Value::StringValue("x".into())) }; 3],
                }),
            )],
        });
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "GET /".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![kv("s", any_value::Value::StringValue("v".into())), kv("n", nested)],
            events: vec![span::Event {
                name: "e".into(),
                attributes: vec![kv("i", any_value::Value::IntValue(1))],
                ..Default::default()
            }],
            links: vec![span::Link { trace_id: vec![4; 16], span_id: vec![5; 8], ..Default::default() }],
            status: Some(Status { code: 2, message: "boom".into() }),
            ..Default::default()
        };
        request(vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", any_value::Value::StringValue("svc".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "lib".into(), ..Default::default() }),
                spans: vec![span.clone(), span],
                schema_url: "u".into(),
            }],
            schema_url: "r".into(),
        }])
        .encode_to_vec()
    }

    /// Converts `body` both ways; it must answer, never panic, and whatever it
    /// accepts must be a valid batch.
    fn survives(body: &[u8]) {
        for format in [Format::Protobuf, Format::Json] {
            if let Ok(converted) = convert(body, format, SpanBatchBuilder::new(1024), 1000) {
                assert_eq!(converted.batch.num_rows() as u64, converted.report.accepted);
            }
        }
    }

    #[test]
    fn the_seed_request_converts_whole() {
        let converted = convert(&seed_request(), Format::Protobuf, SpanBatchBuilder::default(), 10).unwrap();
        assert_eq!((converted.report.accepted, converted.report.rejected), (2, 0), "{:?}", converted.report);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Fuzzing: arbitrary bytes never panic either decoder.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            survives(&body);
        }

        /// Fuzzing: a valid request with bytes flipped, inserted or cut
        /// anywhere (lengths and tags included) never panics.
        #[test]
        fn mutated_requests_never_panic(
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0..3u8), 1..8)
        ) {
            let mut body = seed_request();
            mutate(&mut body, edits);
            survives(&body);
        }

        /// Fuzzing the JSON path: valid OTLP/JSON cut or with a byte changed.
        #[test]
        fn mutated_json_never_panics(at in proptest::prelude::any::<usize>(), byte in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<bool>()) {
            let request = ExportTraceServiceRequest::decode(seed_request().as_slice()).unwrap();
            let mut body = serde_json::to_vec(&request).unwrap();
            let at = at % body.len();
            if cut { body.truncate(at) } else { body[at] = byte }
            survives(&body);
        }
    }
}
