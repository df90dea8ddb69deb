//! Arrow → OTLP: rows of span batches back into `ResourceSpans`, grouped by
//! resource and then by scope in order of first appearance.

use std::collections::HashMap;

use arrow::array::{
    Array, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray, UInt32Array,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message as _;

use crate::DecodeError;
use crate::attributes::{AttributeMapReader, downcast};
use crate::schema::{self as s, KIND_NAMES, STATUS_NAMES, enum_value};

/// Typed views of the columns of one span batch.
struct Columns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent_span_id: &'a FixedSizeBinaryArray,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
    name: &'a StringArray,
    kind: &'a StringArray,
    start_time: &'a TimestampNanosecondArray,
    end_time: &'a TimestampNanosecondArray,
    status_code: &'a StringArray,
    status_message: &'a StringArray,
    resource_attributes: AttributeMapReader<'a>,
    resource_dropped: &'a UInt32Array,
    resource_schema_url: &'a StringArray,
    resource_entity_refs: &'a StringArray,
    scope_name: &'a StringArray,
    scope_version: &'a StringArray,
    scope_attributes: AttributeMapReader<'a>,
    scope_dropped: &'a UInt32Array,
    scope_schema_url: &'a StringArray,
    span_attributes: AttributeMapReader<'a>,
    dropped_attributes: &'a UInt32Array,
    events: &'a ListArray,
    dropped_events: &'a UInt32Array,
    links: &'a ListArray,
    dropped_links: &'a UInt32Array,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a T, DecodeError> {
    let array = batch.column_by_name(name).ok_or(DecodeError::MissingColumn(name))?;
    downcast(array.as_ref(), name)
}

fn map_column<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<AttributeMapReader<'a>, DecodeError> {
    let array = batch.column_by_name(name).ok_or(DecodeError::MissingColumn(name))?;
    AttributeMapReader::new(array.as_ref())
}

impl<'a> Columns<'a> {
    fn new(b: &'a RecordBatch) -> Result<Self, DecodeError> {
        Ok(Self {
            trace_id: column(b, s::TRACE_ID)?,
            span_id: column(b, s::SPAN_ID)?,
            parent_span_id: column(b, s::PARENT_SPAN_ID)?,
            trace_state: column(b, s::TRACE_STATE)?,
            flags: column(b, s::FLAGS)?,
            name: column(b, s::NAME)?,
            kind: column(b, s::KIND)?,
            start_time: column(b, s::START_TIME)?,
            end_time: column(b, s::END_TIME)?,
            status_code: column(b, s::STATUS_CODE)?,
            status_message: column(b, s::STATUS_MESSAGE)?,
            resource_attributes: map_column(b, s::RESOURCE_ATTRIBUTES)?,
            resource_dropped: column(b, s::RESOURCE_DROPPED_ATTRIBUTES_COUNT)?,
            resource_schema_url: column(b, s::RESOURCE_SCHEMA_URL)?,
            resource_entity_refs: column(b, s::RESOURCE_ENTITY_REFS)?,
            scope_name: column(b, s::SCOPE_NAME)?,
            scope_version: column(b, s::SCOPE_VERSION)?,
            scope_attributes: map_column(b, s::SCOPE_ATTRIBUTES)?,
            scope_dropped: column(b, s::SCOPE_DROPPED_ATTRIBUTES_COUNT)?,
            scope_schema_url: column(b, s::SCOPE_SCHEMA_URL)?,
            span_attributes: map_column(b, s::SPAN_ATTRIBUTES)?,
            dropped_attributes: column(b, s::DROPPED_ATTRIBUTES_COUNT)?,
            events: column(b, s::EVENTS)?,
            dropped_events: column(b, s::DROPPED_EVENTS_COUNT)?,
            links: column(b, s::LINKS)?,
            dropped_links: column(b, s::DROPPED_LINKS_COUNT)?,
        })
    }

    fn resource(&self, row: usize) -> Result<(Resource, String), DecodeError> {
        let entity_refs = match opt_str(self.resource_entity_refs, row) {
            Some(json) => {
                serde_json::from_str(json).map_err(|e| DecodeError::Json { what: "resource entity refs", source: e })?
            }
            None => Vec::new(),
        };
        let resource = Resource {
            attributes: self.resource_attributes.get(row)?,
            dropped_attributes_count: self.resource_dropped.value(row),
            entity_refs,
        };
        Ok((resource, opt_str(self.resource_schema_url, row).unwrap_or_default().to_owned()))
    }

    fn scope(&self, row: usize) -> Result<(InstrumentationScope, String), DecodeError> {
        let scope = InstrumentationScope {
            name: opt_str(self.scope_name, row).unwrap_or_default().to_owned(),
            version: opt_str(self.scope_version, row).unwrap_or_default().to_owned(),
            attributes: self.scope_attributes.get(row)?,
            dropped_attributes_count: self.scope_dropped.value(row),
        };
        Ok((scope, opt_str(self.scope_schema_url, row).unwrap_or_default().to_owned()))
    }

    fn span(&self, row: usize) -> Result<Span, DecodeError> {
        let status_code = enum_value(&STATUS_NAMES, self.status_code.value(row));
        let status_message = opt_str(self.status_message, row).unwrap_or_default();
        let status = (status_code != 0 || !status_message.is_empty())
            .then(|| Status { code: status_code, message: status_message.to_owned() });
        Ok(Span {
            trace_id: self.trace_id.value(row).to_vec(),
            span_id: self.span_id.value(row).to_vec(),
            trace_state: opt_str(self.trace_state, row).unwrap_or_default().to_owned(),
            parent_span_id: if self.parent_span_id.is_valid(row) {
                self.parent_span_id.value(row).to_vec()
            } else {
                Vec::new()
            },
            flags: self.flags.value(row),
            name: self.name.value(row).to_owned(),
            kind: enum_value(&KIND_NAMES, self.kind.value(row)),
            start_time_unix_nano: self.start_time.value(row) as u64,
            end_time_unix_nano: self.end_time.value(row) as u64,
            attributes: self.span_attributes.get(row)?,
            dropped_attributes_count: self.dropped_attributes.value(row),
            events: self.events(row)?,
            dropped_events_count: self.dropped_events.value(row),
            links: self.links(row)?,
            dropped_links_count: self.dropped_links.value(row),
            status,
        })
    }

    fn events(&self, row: usize) -> Result<Vec<span::Event>, DecodeError> {
        let list = self.events.value(row);
        let items = downcast::<StructArray>(list.as_ref(), "events")?;
        let time = downcast::<TimestampNanosecondArray>(items.column(0).as_ref(), "event time")?;
        let name = downcast::<StringArray>(items.column(1).as_ref(), "event name")?;
        let attributes = AttributeMapReader::new(items.column(2).as_ref())?;
        let dropped = downcast::<UInt32Array>(items.column(3).as_ref(), "event dropped")?;
        (0..items.len())
            .map(|i| {
                Ok(span::Event {
                    time_unix_nano: time.value(i) as u64,
                    name: name.value(i).to_owned(),
                    attributes: attributes.get(i)?,
                    dropped_attributes_count: dropped.value(i),
                })
            })
            .collect()
    }

    fn links(&self, row: usize) -> Result<Vec<span::Link>, DecodeError> {
        let list = self.links.value(row);
        let items = downcast::<StructArray>(list.as_ref(), "links")?;
        let trace_id = downcast::<FixedSizeBinaryArray>(items.column(0).as_ref(), "link trace id")?;
        let span_id = downcast::<FixedSizeBinaryArray>(items.column(1).as_ref(), "link span id")?;
        let trace_state = downcast::<StringArray>(items.column(2).as_ref(), "link trace state")?;
        let attributes = AttributeMapReader::new(items.column(3).as_ref())?;
        let dropped = downcast::<UInt32Array>(items.column(4).as_ref(), "link dropped")?;
        let flags = downcast::<UInt32Array>(items.column(5).as_ref(), "link flags")?;
        (0..items.len())
            .map(|i| {
                Ok(span::Link {
                    trace_id: trace_id.value(i).to_vec(),
                    span_id: span_id.value(i).to_vec(),
                    trace_state: opt_str(trace_state, i).unwrap_or_default().to_owned(),
                    attributes: attributes.get(i)?,
                    dropped_attributes_count: dropped.value(i),
                    flags: flags.value(i),
                })
            })
            .collect()
    }
}

fn opt_str(array: &StringArray, row: usize) -> Option<&str> {
    array.is_valid(row).then(|| array.value(row))
}

/// Collects rows into `ResourceSpans` grouped by (resource, schema url) and
/// (scope, schema url).
#[derive(Default)]
pub struct ResourceSpansCollector {
    groups: Vec<ResourceSpans>,
    resource_index: HashMap<Vec<u8>, usize>,
    scope_index: HashMap<(usize, Vec<u8>), usize>,
}

impl std::fmt::Debug for ResourceSpansCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceSpansCollector").field("resources", &self.groups.len()).finish()
    }
}

impl ResourceSpansCollector {
    /// Adds the rows of `batch` for which `keep(row)` holds.
    pub fn add_batch(&mut self, batch: &RecordBatch, mut keep: impl FnMut(usize) -> bool) -> Result<(), DecodeError> {
        let columns = Columns::new(batch)?;
        for row in 0..batch.num_rows() {
            if !keep(row) {
                continue;
            }
            let (resource, resource_url) = columns.resource(row)?;
            let mut key = resource.encode_to_vec();
            key.extend_from_slice(resource_url.as_bytes());
            let r = *self.resource_index.entry(key).or_insert_with(|| {
                self.groups.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: Vec::new(),
                    schema_url: resource_url,
                });
                self.groups.len() - 1
            });
            let (scope, scope_url) = columns.scope(row)?;
            let mut key = scope.encode_to_vec();
            key.extend_from_slice(scope_url.as_bytes());
            let group = &mut self.groups[r];
            let sc = *self.scope_index.entry((r, key)).or_insert_with(|| {
                group.scope_spans.push(ScopeSpans { scope: Some(scope), spans: Vec::new(), schema_url: scope_url });
                group.scope_spans.len() - 1
            });
            group.scope_spans[sc].spans.push(columns.span(row)?);
        }
        Ok(())
    }

    pub fn finish(self) -> Vec<ResourceSpans> {
        self.groups
    }
}

/// All rows of `batch` as `ResourceSpans`.
pub fn batch_to_resource_spans(batch: &RecordBatch) -> Result<Vec<ResourceSpans>, DecodeError> {
    let mut collector = ResourceSpansCollector::default();
    collector.add_batch(batch, |_| true)?;
    Ok(collector.finish())
}

/// The durations column, for callers that only need it.
pub fn durations(batch: &RecordBatch) -> Result<&Int64Array, DecodeError> {
    column(batch, s::DURATION_NS)
}
