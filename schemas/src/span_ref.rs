//! A span as borrowed slices: what [`crate::SpanBatchBuilder`] appends.
//!
//! The ingester fills a [`SpanRef`] straight from a request's wire format, so
//! no span is ever decoded into owned OTLP structs (prost allocates every
//! string and vector of a span, and that allocation was the bulk of
//! converting a request). Decoded OTLP structs (OTLP/JSON, tests, tools) are
//! borrowed into the same shape with [`SpanRef::fill_from`], so both paths
//! share one validation and one append.
//!
//! A `SpanRef` is reused from span to span: [`SpanRef::clear`] keeps its
//! vectors' capacity.

use std::borrow::Cow;
use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::encode::{InvalidSpan, MAX_VALUE_DEPTH};
use crate::schema::{SPAN_ID_LEN, TRACE_ID_LEN};

/// An attribute value. Arrays and key-value lists, stored as JSON text and
/// rare, stay OTLP values.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef<'a> {
    /// No value (or a string table index, which OTLP trace exports do not use).
    Empty,
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    Nested(Cow<'a, Value>),
}

impl<'a> ValueRef<'a> {
    /// The value of a decoded `AnyValue` (`None`: absent).
    pub fn of(value: Option<&'a AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Self::Str(s),
            Some(Value::IntValue(i)) => Self::Int(*i),
            Some(Value::DoubleValue(d)) => Self::Double(*d),
            Some(Value::BoolValue(b)) => Self::Bool(*b),
            Some(Value::BytesValue(b)) => Self::Bytes(b),
            Some(nested @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => Self::Nested(Cow::Borrowed(nested)),
            Some(Value::StringValueStrindex(_)) | None => Self::Empty,
        }
    }

    /// How deeply arrays and maps nest in it (a scalar is 0), counted
    /// without recursion.
    fn depth(&self) -> usize {
        let Self::Nested(value) = self else { return 0 };
        let mut deepest = 0;
        let mut stack = vec![(Some(value.as_ref()), 0usize)];
        while let Some((value, depth)) = stack.pop() {
            deepest = deepest.max(depth);
            match value {
                Some(Value::ArrayValue(a)) => stack.extend(a.values.iter().map(|v| (v.value.as_ref(), depth + 1))),
                Some(Value::KvlistValue(kv)) => stack
                    .extend(kv.values.iter().filter_map(|kv| kv.value.as_ref()).map(|v| (v.value.as_ref(), depth + 1))),
                _ => {}
            }
        }
        deepest
    }
}

/// One attribute of a span, event or link.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRef<'a> {
    pub key: &'a str,
    pub value: ValueRef<'a>,
}

impl<'a> AttrRef<'a> {
    pub fn of(kv: &'a KeyValue) -> Self {
        Self { key: &kv.key, value: ValueRef::of(kv.value.as_ref()) }
    }
}

/// A span event; its attributes are a range of [`SpanRef::event_attributes`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRef<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
}

/// A span link; its attributes are a range of [`SpanRef::link_attributes`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// Every field of an OTLP span, borrowed. Defaults are protobuf's (empty
/// ids and strings, zero numbers).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<AttrRef<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventRef<'a>>,
    pub event_attributes: Vec<AttrRef<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkRef<'a>>,
    pub link_attributes: Vec<AttrRef<'a>>,
    pub dropped_links_count: u32,
    pub status_code: i32,
    pub status_message: &'a str,
}

impl<'a> SpanRef<'a> {
    /// Resets every field, keeping the vectors' capacity.
    pub fn clear(&mut self) {
        let (mut attributes, mut events, mut event_attributes, mut links, mut link_attributes) = (
            std::mem::take(&mut self.attributes),
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.event_attributes),
            std::mem::take(&mut self.links),
            std::mem::take(&mut self.link_attributes),
        );
        attributes.clear();
        events.clear();
        event_attributes.clear();
        links.clear();
        link_attributes.clear();
        *self = Self { attributes, events, event_attributes, links, link_attributes, ..Self::default() };
    }

    /// Borrows a decoded span (replacing what this held).
    pub fn fill_from(&mut self, span: &'a Span) {
        self.clear();
        self.attributes.extend(span.attributes.iter().map(AttrRef::of));
        for event in &span.events {
            let start = self.event_attributes.len();
            self.event_attributes.extend(event.attributes.iter().map(AttrRef::of));
            self.events.push(EventRef {
                time_unix_nano: event.time_unix_nano,
                name: &event.name,
                attributes: start..self.event_attributes.len(),
                dropped_attributes_count: event.dropped_attributes_count,
            });
        }
        for link in &span.links {
            let start = self.link_attributes.len();
            self.link_attributes.extend(link.attributes.iter().map(AttrRef::of));
            self.links.push(LinkRef {
                trace_id: &link.trace_id,
                span_id: &link.span_id,
                trace_state: &link.trace_state,
                attributes: start..self.link_attributes.len(),
                dropped_attributes_count: link.dropped_attributes_count,
                flags: link.flags,
            });
        }
        self.trace_id = &span.trace_id;
        self.span_id = &span.span_id;
        self.trace_state = &span.trace_state;
        self.parent_span_id = &span.parent_span_id;
        self.flags = span.flags;
        self.name = &span.name;
        self.kind = span.kind;
        self.start_time_unix_nano = span.start_time_unix_nano;
        self.end_time_unix_nano = span.end_time_unix_nano;
        self.dropped_attributes_count = span.dropped_attributes_count;
        self.dropped_events_count = span.dropped_events_count;
        self.dropped_links_count = span.dropped_links_count;
        (self.status_code, self.status_message) =
            span.status.as_ref().map_or((0, ""), |s| (s.code, s.message.as_str()));
    }

    /// Checks the invariants a span must meet to be stored.
    pub fn validate(&self) -> Result<(), InvalidSpan> {
        if self.trace_id.len() != TRACE_ID_LEN as usize {
            return Err(InvalidSpan::TraceIdLength { len: self.trace_id.len() });
        }
        if self.trace_id.iter().all(|b| *b == 0) {
            return Err(InvalidSpan::TraceIdZero);
        }
        if self.span_id.len() != SPAN_ID_LEN as usize {
            return Err(InvalidSpan::SpanIdLength { len: self.span_id.len() });
        }
        if self.span_id.iter().all(|b| *b == 0) {
            return Err(InvalidSpan::SpanIdZero);
        }
        if !self.parent_span_id.is_empty() && self.parent_span_id.len() != SPAN_ID_LEN as usize {
            return Err(InvalidSpan::ParentSpanIdLength { len: self.parent_span_id.len() });
        }
        for (field, value) in
            [("start_time_unix_nano", self.start_time_unix_nano), ("end_time_unix_nano", self.end_time_unix_nano)]
        {
            if value > i64::MAX as u64 {
                return Err(InvalidSpan::TimeOutOfRange { field, value });
            }
        }
        for (index, link) in self.links.iter().enumerate() {
            if link.trace_id.len() != TRACE_ID_LEN as usize || link.span_id.len() != SPAN_ID_LEN as usize {
                return Err(InvalidSpan::LinkIds { index });
            }
        }
        for event in &self.events {
            if event.time_unix_nano > i64::MAX as u64 {
                return Err(InvalidSpan::TimeOutOfRange { field: "event time_unix_nano", value: event.time_unix_nano });
            }
            check_depth("event", &self.event_attributes[event.attributes.clone()])?;
        }
        check_depth("span", &self.attributes)?;
        for link in &self.links {
            check_depth("link", &self.link_attributes[link.attributes.clone()])?;
        }
        Ok(())
    }
}

/// The first attribute of `attributes` nested too deeply to read back.
pub(crate) fn check_depth(place: &'static str, attributes: &[AttrRef<'_>]) -> Result<(), InvalidSpan> {
    match attributes.iter().find(|a| a.value.depth() > MAX_VALUE_DEPTH) {
        Some(a) => Err(InvalidSpan::TooDeep { place, key: a.key.to_owned() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut value = Value::IntValue(1);
        for level in 0..levels {
            let inner = AnyValue { value: Some(value) };
            value = if level % 2 == 0 {
                Value::ArrayValue(ArrayValue { values: vec![inner] })
            } else {
                Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue { key: "k".into(), value: Some(inner), ..Default::default() }],
                })
            };
        }
        value
    }

    #[test]
    fn depth_counts_levels_of_arrays_and_maps() {
        assert_eq!(ValueRef::Int(1).depth(), 0);
        for levels in [1, 2, 5, MAX_VALUE_DEPTH + 1] {
            assert_eq!(ValueRef::Nested(Cow::Owned(nested(levels))).depth(), levels);
        }
        let empty = Value::ArrayValue(ArrayValue { values: vec![AnyValue::default()] });
        assert_eq!(ValueRef::Nested(Cow::Owned(empty)).depth(), 1);
    }

    #[test]
    fn a_cleared_span_is_the_default() {
        let span = Span {
            trace_id: vec![1; 16],
            name: "n".into(),
            attributes: vec![KeyValue { key: "k".into(), ..Default::default() }],
            events: vec![Default::default()],
            links: vec![Default::default()],
            ..Default::default()
        };
        let mut view = SpanRef::default();
        view.fill_from(&span);
        assert_eq!((view.attributes.len(), view.events.len(), view.links.len()), (1, 1, 1));
        view.clear();
        assert_eq!(view, SpanRef::default());
    }
}
