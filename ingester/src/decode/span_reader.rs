//! One span from its wire format into a [`SpanRef`], without decoding it
//! into OTLP structs: ids, strings and scalar values are borrowed from the
//! request body, so reading a span allocates nothing once the `SpanRef`'s
//! vectors have grown. Arrays and key-value lists in attribute values (rare)
//! are decoded with prost, after pricing.
//!
//! The result is exactly what prost would decode (the oracle test below
//! holds it to that on mutated requests): the same fields, the last
//! occurrence of a singular field, repeated status messages merged, and
//! every wire error prost raises raised here too.
//!
//! Memory: a span's entries (attributes, events, links) each cost a slot in
//! the `SpanRef` and in every Arrow column they fill, whatever their bytes.
//! Reading stops, and the span is refused, once that cost passes
//! [`MAX_EXPANSION`] times the span's size (plus [`ALLOWANCE`]).

use std::borrow::Cow;
use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use spanlake_schemas::span_ref::{AttrRef, EventRef, LinkRef, SpanRef, ValueRef};

use super::wire::{Fields, Wire, WireError, utf8};
use super::{ALLOWANCE, MAX_EXPANSION, Msg, decoded_cost};

/// What one attribute costs beyond its bytes: its `AttrRef`, and its slot in
/// the key column and the six typed value columns (offsets, numbers, bits).
const ENTRY_COST: usize = size_of::<AttrRef<'static>>() + 4 + 4 + 8 + 8 + 1 + 4 + 4;
/// What one event costs beyond its bytes and attributes.
const EVENT_COST: usize = size_of::<EventRef<'static>>() + 8 + 4 + 4 + 4 + 4;
/// What one link costs beyond its bytes and attributes.
const LINK_COST: usize = size_of::<LinkRef<'static>>() + 16 + 8 + 4 + 4 + 4 + 4 + 4;

/// Span field numbers (opentelemetry/proto/trace/v1/trace.proto).
mod field {
    pub(super) const TRACE_ID: u32 = 1;
    pub(super) const SPAN_ID: u32 = 2;
    pub(super) const TRACE_STATE: u32 = 3;
    pub(super) const PARENT_SPAN_ID: u32 = 4;
    pub(super) const NAME: u32 = 5;
    pub(super) const KIND: u32 = 6;
    pub(super) const START: u32 = 7;
    pub(super) const END: u32 = 8;
    pub(super) const ATTRIBUTES: u32 = 9;
    pub(super) const DROPPED_ATTRIBUTES: u32 = 10;
    pub(super) const EVENTS: u32 = 11;
    pub(super) const DROPPED_EVENTS: u32 = 12;
    pub(super) const LINKS: u32 = 13;
    pub(super) const DROPPED_LINKS: u32 = 14;
    pub(super) const STATUS: u32 = 15;
    pub(super) const FLAGS: u32 = 16;
}

/// A span whose entries cost more than its size allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overpriced {
    pub(crate) cost: usize,
    pub(crate) size: usize,
}

impl std::fmt::Display for Overpriced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its span would take more than {} bytes decoded from {} bytes, more than {MAX_EXPANSION}x (many tiny values)",
            self.cost, self.size
        )
    }
}

/// The cost so far of reading one span, against its bound.
struct Budget {
    cost: usize,
    limit: usize,
    size: usize,
}

impl Budget {
    fn spend(&mut self, cost: usize) -> Result<(), Overpriced> {
        self.cost = self.cost.saturating_add(cost);
        if self.cost > self.limit { Err(Overpriced { cost: self.cost, size: self.size }) } else { Ok(()) }
    }
}

/// Why a span was not read: its wire format is invalid (the request is
/// refused, as prost would refuse it), or it costs too much (the span is).
#[derive(Debug)]
pub(crate) enum Unread {
    Wire(WireError),
    Overpriced(Overpriced),
}

impl From<WireError> for Unread {
    fn from(e: WireError) -> Self {
        Unread::Wire(e)
    }
}

impl From<Overpriced> for Unread {
    fn from(e: Overpriced) -> Self {
        Unread::Overpriced(e)
    }
}

/// Reads the span encoded in `encoded` into `span` (replacing what it held).
pub(crate) fn read_span<'a>(encoded: &'a [u8], span: &mut SpanRef<'a>) -> Result<(), Unread> {
    span.clear();
    let mut budget =
        Budget { cost: encoded.len(), limit: MAX_EXPANSION * encoded.len() + ALLOWANCE, size: encoded.len() };
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (field::TRACE_ID, Wire::Bytes(b)) => span.trace_id = b,
            (field::SPAN_ID, Wire::Bytes(b)) => span.span_id = b,
            (field::TRACE_STATE, Wire::Bytes(b)) => span.trace_state = utf8(b, number)?,
            (field::PARENT_SPAN_ID, Wire::Bytes(b)) => span.parent_span_id = b,
            (field::NAME, Wire::Bytes(b)) => span.name = utf8(b, number)?,
            (field::KIND, Wire::Varint(v)) => span.kind = v as i32,
            (field::START, Wire::Fixed64(v)) => span.start_time_unix_nano = v,
            (field::END, Wire::Fixed64(v)) => span.end_time_unix_nano = v,
            (field::ATTRIBUTES, Wire::Bytes(b)) => {
                budget.spend(ENTRY_COST)?;
                span.attributes.push(read_attribute(b, &mut budget)?);
            }
            (field::DROPPED_ATTRIBUTES, Wire::Varint(v)) => span.dropped_attributes_count = v as u32,
            (field::EVENTS, Wire::Bytes(b)) => {
                budget.spend(EVENT_COST)?;
                read_event(b, span, &mut budget)?;
            }
            (field::DROPPED_EVENTS, Wire::Varint(v)) => span.dropped_events_count = v as u32,
            (field::LINKS, Wire::Bytes(b)) => {
                budget.spend(LINK_COST)?;
                read_link(b, span, &mut budget)?;
            }
            (field::DROPPED_LINKS, Wire::Varint(v)) => span.dropped_links_count = v as u32,
            (field::STATUS, Wire::Bytes(b)) => read_status(b, span)?,
            (field::FLAGS, Wire::Fixed32(v)) => span.flags = v,
            (1..=16, _) => return Err(WireError::FieldType(number).into()),
            _ => {}
        }
    }
    Ok(())
}

/// A `Status`, merged into what earlier occurrences set (protobuf's rule
/// for a singular message).
fn read_status<'a>(encoded: &'a [u8], span: &mut SpanRef<'a>) -> Result<(), WireError> {
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (2, Wire::Bytes(b)) => span.status_message = utf8(b, number)?,
            (3, Wire::Varint(v)) => span.status_code = v as i32,
            (2 | 3, _) => return Err(WireError::FieldType(number)),
            _ => {}
        }
    }
    Ok(())
}

fn read_event<'a>(encoded: &'a [u8], span: &mut SpanRef<'a>, budget: &mut Budget) -> Result<(), Unread> {
    let mut event = EventRef { attributes: span.event_attributes.len()..0, ..Default::default() };
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Wire::Fixed64(v)) => event.time_unix_nano = v,
            (2, Wire::Bytes(b)) => event.name = utf8(b, number)?,
            (3, Wire::Bytes(b)) => {
                budget.spend(ENTRY_COST)?;
                span.event_attributes.push(read_attribute(b, budget)?);
            }
            (4, Wire::Varint(v)) => event.dropped_attributes_count = v as u32,
            (1..=4, _) => return Err(WireError::FieldType(number).into()),
            _ => {}
        }
    }
    event.attributes.end = span.event_attributes.len();
    span.events.push(event);
    Ok(())
}

fn read_link<'a>(encoded: &'a [u8], span: &mut SpanRef<'a>, budget: &mut Budget) -> Result<(), Unread> {
    let mut link = LinkRef { attributes: span.link_attributes.len()..0, ..Default::default() };
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Wire::Bytes(b)) => link.trace_id = b,
            (2, Wire::Bytes(b)) => link.span_id = b,
            (3, Wire::Bytes(b)) => link.trace_state = utf8(b, number)?,
            (4, Wire::Bytes(b)) => {
                budget.spend(ENTRY_COST)?;
                span.link_attributes.push(read_attribute(b, budget)?);
            }
            (5, Wire::Varint(v)) => link.dropped_attributes_count = v as u32,
            (6, Wire::Fixed32(v)) => link.flags = v,
            (1..=6, _) => return Err(WireError::FieldType(number).into()),
            _ => {}
        }
    }
    link.attributes.end = span.link_attributes.len();
    span.links.push(link);
    Ok(())
}

/// A `KeyValue`. A nested value (array or key-value list) is decoded with
/// prost, which also merges repeated nested values as protobuf says.
fn read_attribute<'a>(encoded: &'a [u8], budget: &mut Budget) -> Result<AttrRef<'a>, Unread> {
    let mut attribute = AttrRef { key: "", value: ValueRef::Empty };
    // Whether a nested value was seen, and whether the last value set was one.
    let (mut nested, mut last_nested) = (false, false);
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Wire::Bytes(b)) => attribute.key = utf8(b, number)?,
            (2, Wire::Bytes(b)) => read_any_value(b, &mut attribute.value, &mut nested, &mut last_nested)?,
            (3, Wire::Varint(_)) => {} // key_strindex: profiles only
            (1..=3, _) => return Err(WireError::FieldType(number).into()),
            _ => {}
        }
    }
    if nested {
        budget.spend(decoded_cost(encoded, Msg::KeyValue)?)?;
        let decoded = KeyValue::decode(encoded).map_err(WireError::from)?;
        if last_nested && let Some(value) = decoded.value.and_then(|v| v.value) {
            attribute.value = ValueRef::Nested(Cow::Owned(value));
        }
    }
    Ok(attribute)
}

/// An `AnyValue`'s oneof, over what earlier occurrences set: the last
/// variant on the wire wins.
fn read_any_value<'a>(
    encoded: &'a [u8],
    value: &mut ValueRef<'a>,
    nested: &mut bool,
    last_nested: &mut bool,
) -> Result<(), WireError> {
    let mut fields = Fields::new(encoded);
    while let Some((number, wire)) = fields.next_field()? {
        let scalar = match (number, wire) {
            (1, Wire::Bytes(b)) => ValueRef::Str(utf8(b, number)?),
            (2, Wire::Varint(v)) => ValueRef::Bool(v != 0),
            (3, Wire::Varint(v)) => ValueRef::Int(v as i64),
            (4, Wire::Fixed64(v)) => ValueRef::Double(f64::from_bits(v)),
            (5 | 6, Wire::Bytes(_)) => {
                (*nested, *last_nested) = (true, true);
                continue;
            }
            (7, Wire::Bytes(b)) => ValueRef::Bytes(b),
            (8, Wire::Varint(_)) => ValueRef::Empty, // string_value_strindex: profiles only
            (1..=8, _) => return Err(WireError::FieldType(number)),
            _ => continue,
        };
        *value = scalar;
        *last_nested = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
