//! OTLP → Arrow: appends the spans of export requests to a [`SpanBatchBuilder`]
//! and finishes a `RecordBatch` with the [`span_schema`].
//!
//! Invariants checked here (a span that breaks one is rejected, the rest of
//! its request is kept): trace id is 16 bytes and not all zero, span id is 8
//! bytes and not all zero, parent span id is empty or 8 bytes, times fit a
//! signed 64-bit nanosecond timestamp.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, FixedSizeBinaryBuilder, Int64Builder, ListArray, RecordBatch,
    StringBuilder, StructArray, TimestampNanosecondBuilder, UInt32Array, UInt32Builder, new_empty_array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{Field, UInt32Type};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

use crate::attributes::{AttributeMapBuilder, empty_strings, offsets_for};
use crate::schema::{
    KIND_NAMES, SPAN_ID_LEN, STATUS_NAMES, TRACE_ID_LEN, enum_name, event_fields, event_item_field,
    grouped_span_schema, link_fields, link_item_field, span_schema,
};
use crate::span_ref::{AttrRef, SpanRef};

/// Why one span was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpan {
    #[error("trace id must be 16 bytes, got {len}")]
    TraceIdLength { len: usize },
    #[error("trace id is all zeros")]
    TraceIdZero,
    #[error("span id must be 8 bytes, got {len}")]
    SpanIdLength { len: usize },
    #[error("span id is all zeros")]
    SpanIdZero,
    #[error("parent span id must be empty or 8 bytes, got {len}")]
    ParentSpanIdLength { len: usize },
    #[error("link {index}: trace id must be 16 bytes and span id 8 bytes")]
    LinkIds { index: usize },
    #[error("{field} {value} is beyond the year 2262 (not a valid nanosecond timestamp)")]
    TimeOutOfRange { field: &'static str, value: u64 },
    #[error("{place} attribute {key:?} nests arrays and maps more than {MAX_VALUE_DEPTH} levels deep")]
    TooDeep { place: &'static str, key: String },
    #[error("{field} is {ahead_s} s in the future, more than the {slack_s} s allowed (--max-span-future)")]
    InFuture { field: &'static str, ahead_s: u64, slack_s: u64 },
    #[error(
        "its resource and scope attributes ({entries} entries) would be copied to more than {limit} entries in this \
         request; send fewer spans per request, or fewer resource attributes"
    )]
    TooManyCopies { entries: usize, limit: usize },
}

/// Most levels of arrays and maps in one attribute value. Deeper values would
/// not read back: they are stored as JSON text, and JSON readers stop at 128
/// levels (each level here is three).
pub const MAX_VALUE_DEPTH: usize = 32;

/// The first attribute of `attributes` nested too deeply to read back.
fn check_depth(place: &'static str, attributes: &[KeyValue]) -> Result<(), InvalidSpan> {
    crate::span_ref::check_depth(place, &attributes.iter().map(AttrRef::of).collect::<Vec<_>>())
}

/// What happened to the spans of the requests appended so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendReport {
    pub accepted: u64,
    pub rejected: u64,
    /// The first rejection reason, for the partial-success message.
    pub first_error: Option<String>,
}

impl AppendReport {
    /// Counts one span (named by its id) as rejected for `reason`.
    pub fn reject(&mut self, span_id: &[u8], reason: impl std::fmt::Display) {
        self.rejected += 1;
        self.first_error.get_or_insert_with(|| format!("span {}: {reason}", hex::encode(span_id)));
    }
}

/// A resource whose spans are being appended: what every row of it shares,
/// worked out once.
#[derive(Debug)]
pub struct ResourceContext<'a> {
    resource: &'a Resource,
    schema_url: &'a str,
    service: Option<&'a str>,
    entity_refs: Option<String>,
    /// Whether its attributes nest too deeply (then all its spans are refused).
    depth: Result<(), InvalidSpan>,
    /// Its attributes' group in the builder, once a span of it is appended.
    group: Option<u32>,
    /// Its attribute entries, which each of its rows will hold.
    entries: usize,
}

impl<'a> ResourceContext<'a> {
    pub fn new(resource: &'a Resource, schema_url: &'a str) -> Self {
        Self {
            resource,
            schema_url,
            service: service_name(resource),
            entity_refs: (!resource.entity_refs.is_empty()).then(|| entity_refs_json(resource)),
            depth: check_depth("resource", &resource.attributes),
            group: None,
            entries: resource.attributes.len(),
        }
    }

    /// The group of rows this resource's spans have in the builder, once
    /// one of them is appended.
    pub fn group(&self) -> Option<Group> {
        self.group.map(|id| Group { id, entries: self.entries })
    }

    /// A resource equal to one whose spans went to `group` of the same
    /// builder: its spans join that group, and its columns are not appended
    /// again. (Equal resources, same encoding and schema URL, make equal
    /// columns; a group exists only once a span passed the depth check.)
    pub fn joining(group: Group) -> ResourceContext<'static> {
        static NONE: LazyLock<Resource> = LazyLock::new(Resource::default);
        ResourceContext {
            resource: &NONE,
            schema_url: "",
            service: None,
            entity_refs: None,
            depth: Ok(()),
            group: Some(group.id),
            entries: group.entries,
        }
    }
}

/// A scope (within a resource) whose spans are being appended.
#[derive(Debug)]
pub struct ScopeContext<'a> {
    scope: &'a InstrumentationScope,
    schema_url: &'a str,
    /// Whether its, or its resource's, attributes nest too deeply.
    depth: Result<(), InvalidSpan>,
    group: Option<u32>,
    entries: usize,
}

/// A group of a builder's rows that share a resource, or a scope: its
/// number, and the attribute entries each of its rows holds.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    id: u32,
    entries: usize,
}

impl<'a> ScopeContext<'a> {
    pub fn new(resource: &ResourceContext<'_>, scope: &'a InstrumentationScope, schema_url: &'a str) -> Self {
        let depth = resource.depth.clone().and_then(|()| check_depth("scope", &scope.attributes));
        Self { scope, schema_url, depth, group: None, entries: scope.attributes.len() }
    }

    /// The group of rows this scope's spans have in the builder, once one
    /// of them is appended.
    pub fn group(&self) -> Option<Group> {
        self.group.map(|id| Group { id, entries: self.entries })
    }

    /// A scope equal to one whose spans went to `group` of the same builder,
    /// within `resource`: its spans join that group (as
    /// [`ResourceContext::joining`]).
    pub fn joining(resource: &ResourceContext<'_>, group: Group) -> ScopeContext<'static> {
        static NONE: LazyLock<InstrumentationScope> = LazyLock::new(InstrumentationScope::default);
        ScopeContext {
            scope: &NONE,
            schema_url: "",
            depth: resource.depth.clone(),
            group: Some(group.id),
            entries: group.entries,
        }
    }
}

/// Accumulates spans as Arrow columns.
#[derive(Debug)]
pub struct SpanBatchBuilder {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: EnumNames<6>,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration: Int64Builder,
    status_code: EnumNames<3>,
    status_message: StringBuilder,
    // Resource and scope columns: one value per group, and each row's group.
    resource_groups: Groups,
    service_name: StringBuilder,
    resource_attributes: AttributeMapBuilder,
    resource_dropped: UInt32Builder,
    resource_schema_url: StringBuilder,
    resource_entity_refs: StringBuilder,
    scope_groups: Groups,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttributeMapBuilder,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
    span_attributes: AttributeMapBuilder,
    dropped_attributes: UInt32Builder,
    events: ListBuilder<EventColumns>,
    dropped_events: UInt32Builder,
    links: ListBuilder<LinkColumns>,
    dropped_links: UInt32Builder,
    rows: usize,
    /// Latest start or end accepted (Unix ns), and the slack it allows past now, in s.
    latest: Option<(i64, u64)>,
    max_attribute_value_len: usize,
    /// Most resource and scope attribute entries the rows may hold once
    /// copied to every row (see [`Self::limit_copied_entries`]).
    max_copied_entries: usize,
}

/// How many rows, and span attributes over those rows, a
/// [`SpanBatchBuilder`] is sized for. Strings are sized at
/// [`Capacity::STRING_BYTES`] per value; longer ones grow the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub rows: usize,
    pub span_attributes: usize,
}

impl Capacity {
    /// Bytes reserved per string value (span names, service names, attribute
    /// keys and values are mostly shorter).
    pub const STRING_BYTES: usize = 24;
    /// About what one row reserves: three strings with their offsets, three
    /// ids, three times, and seven counts, offsets and group keys.
    const ROW_BYTES: usize = 3 * (Self::STRING_BYTES + 4) + 32 + 3 * 8 + 7 * 4;
    /// About what one attribute reserves: key and string value with their
    /// offsets, an int, a double, two more offsets and a bool.
    pub const ATTRIBUTE_BYTES: usize = 2 * (Self::STRING_BYTES + 4) + 8 + 8 + 2 * 4 + 1;

    /// About how many bytes a builder of this capacity reserves.
    pub fn bytes(self) -> usize {
        self.rows
            .saturating_mul(Self::ROW_BYTES)
            .saturating_add(self.span_attributes.saturating_mul(Self::ATTRIBUTE_BYTES))
    }

    /// This capacity, scaled down to reserve at most about `limit` bytes.
    /// Counts read from a request are trusted only as far as its size: a
    /// body of empty spans or empty attributes must not reserve for values
    /// it does not hold (validated rows still grow the buffers).
    pub fn at_most(self, limit: usize) -> Self {
        let bytes = self.bytes();
        if bytes <= limit {
            return self;
        }
        let scale = |count: usize| (count as u128 * limit as u128 / bytes as u128) as usize;
        Self { rows: scale(self.rows), span_attributes: scale(self.span_attributes) }
    }
}

impl Default for SpanBatchBuilder {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl SpanBatchBuilder {
    /// `max_attribute_value_len`: string and bytes attribute values longer
    /// than this many bytes are truncated (and counted). The buffers start
    /// empty and grow; see [`Self::with_capacity`].
    pub fn new(max_attribute_value_len: usize) -> Self {
        Self::with_capacity(max_attribute_value_len, Capacity::default())
    }

    /// A builder whose buffers hold `capacity` without growing. A finished
    /// batch keeps its buffers' capacity for as long as it is buffered, so
    /// sizing them to the request keeps a small request's batch small.
    pub fn with_capacity(max_attribute_value_len: usize, capacity: Capacity) -> Self {
        let Capacity { rows, span_attributes } = capacity;
        let strings = || StringBuilder::with_capacity(rows, rows * Capacity::STRING_BYTES);
        let ids = |len| FixedSizeBinaryBuilder::with_capacity(rows, len);
        let timestamps = || TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
        Self {
            trace_id: ids(TRACE_ID_LEN),
            span_id: ids(SPAN_ID_LEN),
            parent_span_id: ids(SPAN_ID_LEN),
            trace_state: empty_strings(),
            flags: UInt32Builder::with_capacity(rows),
            name: strings(),
            kind: EnumNames::new(&KIND_NAMES, rows),
            start_time: timestamps(),
            end_time: timestamps(),
            duration: Int64Builder::with_capacity(rows),
            status_code: EnumNames::new(&STATUS_NAMES, rows),
            status_message: empty_strings(),
            resource_groups: Groups::with_rows(rows),
            service_name: empty_strings(),
            resource_attributes: AttributeMapBuilder::new(max_attribute_value_len),
            resource_dropped: UInt32Builder::new(),
            resource_schema_url: empty_strings(),
            resource_entity_refs: empty_strings(),
            scope_groups: Groups::with_rows(rows),
            scope_name: empty_strings(),
            scope_version: empty_strings(),
            scope_attributes: AttributeMapBuilder::new(max_attribute_value_len),
            scope_dropped: UInt32Builder::new(),
            scope_schema_url: empty_strings(),
            span_attributes: AttributeMapBuilder::with_capacity(max_attribute_value_len, rows, span_attributes),
            dropped_attributes: UInt32Builder::with_capacity(rows),
            events: ListBuilder::new(max_attribute_value_len, rows),
            dropped_events: UInt32Builder::with_capacity(rows),
            links: ListBuilder::new(max_attribute_value_len, rows),
            dropped_links: UInt32Builder::with_capacity(rows),
            rows: 0,
            latest: None,
            max_attribute_value_len,
            max_copied_entries: usize::MAX,
        }
    }

    /// Sizes the buffers of a builder that holds nothing yet for `capacity`
    /// (Arrow's byte builders cannot reserve in place). Once a row is
    /// appended this does nothing.
    pub fn reserve(&mut self, capacity: Capacity) {
        if self.rows == 0 && self.truncated_values() == 0 {
            let (latest, max_copied_entries) = (self.latest, self.max_copied_entries);
            *self = Self::with_capacity(self.max_attribute_value_len, capacity);
            (self.latest, self.max_copied_entries) = (latest, max_copied_entries);
        }
    }

    /// Rows appended since the last finish.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Attribute values truncated so far (all maps).
    pub fn truncated_values(&self) -> u64 {
        self.resource_attributes.truncated()
            + self.scope_attributes.truncated()
            + self.span_attributes.truncated()
            + self.events.truncated()
            + self.links.truncated()
    }

    /// Refuses spans that start or end after `latest` (Unix ns), `slack` past
    /// now: a far-future span would keep its block, and every block merged
    /// with it, past retention.
    pub fn refuse_after(&mut self, latest: i64, slack: std::time::Duration) {
        self.latest = Some((latest, slack.as_secs()));
    }

    /// Refuses spans once the resource and scope attributes copied to the
    /// rows would exceed `entries`. Each row holds its resource's and scope's
    /// whole maps, so a small body (a resource of thousands of attributes,
    /// then many small spans) could otherwise expand without bound.
    pub fn limit_copied_entries(&mut self, entries: usize) {
        self.max_copied_entries = entries;
    }

    fn check_not_future(&self, span: &SpanRef<'_>) -> Result<(), InvalidSpan> {
        let Some((latest, slack_s)) = self.latest else { return Ok(()) };
        for (field, value) in
            [("start_time_unix_nano", span.start_time_unix_nano), ("end_time_unix_nano", span.end_time_unix_nano)]
        {
            let value = value as i64; // validated: fits
            if value > latest {
                let ahead_s = (value - latest) as u64 / 1_000_000_000 + slack_s;
                return Err(InvalidSpan::InFuture { field, ahead_s, slack_s });
            }
        }
        Ok(())
    }

    /// Appends every valid span of `resource_spans`; invalid spans are counted
    /// in the report and skipped. Resource and scope attributes are converted
    /// once per group (and only for groups that hold a valid span), then
    /// shared by the group's rows.
    pub fn append_resource_spans(&mut self, resource_spans: &[ResourceSpans], report: &mut AppendReport) {
        let empty_resource = Resource::default();
        let empty_scope = InstrumentationScope::default();
        let mut view = SpanRef::default();
        for rs in resource_spans {
            let mut resource = ResourceContext::new(rs.resource.as_ref().unwrap_or(&empty_resource), &rs.schema_url);
            for ss in &rs.scope_spans {
                let mut scope = ScopeContext::new(&resource, ss.scope.as_ref().unwrap_or(&empty_scope), &ss.schema_url);
                for span in &ss.spans {
                    view.fill_from(span);
                    self.append_span_in(&mut resource, &mut scope, &view, report);
                }
            }
        }
    }

    /// Appends `span` of `resource` and `scope` if it is valid; otherwise
    /// counts it as rejected in `report`. For decoders that read one span at
    /// a time.
    pub fn append_span_in(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: &mut ScopeContext<'_>,
        span: &SpanRef<'_>,
        report: &mut AppendReport,
    ) {
        let valid = span.validate().and_then(|()| self.check_not_future(span));
        if let Err(e) = valid.and_then(|()| scope.depth.clone()) {
            report.reject(span.span_id, e);
            return;
        }
        // Each row will hold its resource's and scope's attributes once the
        // block is written: bound what that expansion takes.
        let entries = resource.entries + scope.entries;
        if self.resource_groups.copied + self.scope_groups.copied + entries > self.max_copied_entries {
            report.reject(span.span_id, InvalidSpan::TooManyCopies { entries, limit: self.max_copied_entries });
            return;
        }
        report.accepted += 1;
        self.append_span(span);
        let resource_group = *resource.group.get_or_insert_with(|| {
            let r = resource.resource;
            self.service_name.append_option(resource.service);
            self.resource_attributes.append(&r.attributes);
            self.resource_dropped.append_value(r.dropped_attributes_count);
            self.resource_schema_url.append_option(non_empty(resource.schema_url));
            self.resource_entity_refs.append_option(resource.entity_refs.as_deref());
            self.resource_groups.add(r.attributes.len())
        });
        let scope_group = *scope.group.get_or_insert_with(|| {
            let s = scope.scope;
            self.scope_name.append_option(non_empty(&s.name));
            self.scope_version.append_option(non_empty(&s.version));
            self.scope_attributes.append(&s.attributes);
            self.scope_dropped.append_value(s.dropped_attributes_count);
            self.scope_schema_url.append_option(non_empty(scope.schema_url));
            self.scope_groups.add(s.attributes.len())
        });
        self.resource_groups.append(resource_group);
        self.scope_groups.append(scope_group);
    }

    /// Appends the span's own columns (the caller adds resource and scope).
    fn append_span(&mut self, span: &SpanRef<'_>) {
        self.rows += 1;
        append_fixed(&mut self.trace_id, span.trace_id);
        append_fixed(&mut self.span_id, span.span_id);
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            append_fixed(&mut self.parent_span_id, span.parent_span_id);
        }
        self.trace_state.append_option(non_empty(span.trace_state));
        self.flags.append_value(span.flags);
        self.name.append_value(span.name);
        self.kind.append(span.kind);
        let (start, end) = (span.start_time_unix_nano as i64, span.end_time_unix_nano as i64);
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration.append_value(end.saturating_sub(start));
        self.status_code.append(span.status_code);
        self.status_message.append_option(non_empty(span.status_message));
        self.span_attributes.append_refs(&span.attributes);
        self.dropped_attributes.append_value(span.dropped_attributes_count);
        self.events.append(span.events.len(), |events| events.append(span));
        self.dropped_events.append_value(span.dropped_events_count);
        self.links.append(span.links.len(), |links| links.append(span));
        self.dropped_links.append_value(span.dropped_links_count);
    }

    /// Finishes the rows appended so far into a batch of the
    /// [`span_schema`] and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        expand_groups(&self.finish_grouped()).expect("grouped columns expand")
    }

    /// Finishes the rows appended so far into a batch of the
    /// [`grouped_span_schema`] (resource and scope columns as dictionaries of
    /// their groups) and resets the builder. What the ingester buffers.
    pub fn finish_grouped(&mut self) -> RecordBatch {
        self.rows = 0;
        let resource = self.resource_groups.finish();
        let scope = self.scope_groups.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            self.kind.finish(),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration.finish()),
            self.status_code.finish(),
            Arc::new(self.status_message.finish()),
            dictionary(&resource, Arc::new(self.service_name.finish())),
            dictionary(&resource, Arc::new(self.resource_attributes.finish())),
            dictionary(&resource, Arc::new(self.resource_dropped.finish())),
            dictionary(&resource, Arc::new(self.resource_schema_url.finish())),
            dictionary(&resource, Arc::new(self.resource_entity_refs.finish())),
            dictionary(&scope, Arc::new(self.scope_name.finish())),
            dictionary(&scope, Arc::new(self.scope_version.finish())),
            dictionary(&scope, Arc::new(self.scope_attributes.finish())),
            dictionary(&scope, Arc::new(self.scope_dropped.finish())),
            dictionary(&scope, Arc::new(self.scope_schema_url.finish())),
            Arc::new(self.span_attributes.finish()),
            Arc::new(self.dropped_attributes.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.dropped_events.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.dropped_links.finish()),
        ];
        RecordBatch::try_new(grouped_span_schema(), columns).expect("builder columns match the grouped span schema")
    }
}

/// The groups (resources, or scopes) of a builder's rows: how many, the
/// attribute entries each holds, and each row's group.
#[derive(Debug)]
struct Groups {
    rows: Vec<u32>,
    entries: Vec<usize>,
    /// Entries the rows appended so far will hold once expanded.
    copied: usize,
}

impl Groups {
    fn with_rows(rows: usize) -> Self {
        Self { rows: Vec::with_capacity(rows), entries: Vec::new(), copied: 0 }
    }

    /// A new group of `entries` attribute entries; returns its number.
    fn add(&mut self, entries: usize) -> u32 {
        self.entries.push(entries);
        (self.entries.len() - 1) as u32
    }

    fn append(&mut self, group: u32) {
        self.copied += self.entries[group as usize];
        self.rows.push(group);
    }

    /// Each row's group, as dictionary keys; resets. The keys are shared by
    /// the group's columns, and each column counts them in its memory size,
    /// so they keep no spare capacity.
    fn finish(&mut self) -> UInt32Array {
        self.entries.clear();
        self.copied = 0;
        let mut rows = std::mem::take(&mut self.rows);
        rows.shrink_to_fit();
        UInt32Array::from(rows)
    }
}

/// The names of an OTLP enum's values for a request's rows: a dictionary of
/// the names the rows use, in the order first met, keyed by row. A span's
/// kind and status are one of a few names: a key per row, where a string
/// per row was copied, and then compared and looked up again to write the
/// block. A value outside the known names is kept as its number
/// ([`enum_name`]).
#[derive(Debug)]
struct EnumNames<const N: usize> {
    names: &'static [&'static str; N],
    keys: Vec<u32>,
    /// Each known value's key, once met.
    known: [Option<u32>; N],
    /// Keys of values outside the known names.
    others: foldhash::HashMap<i32, u32>,
    values: StringBuilder,
}

impl<const N: usize> EnumNames<N> {
    fn new(names: &'static [&'static str; N], rows: usize) -> Self {
        Self {
            names,
            keys: Vec::with_capacity(rows),
            known: [None; N],
            others: Default::default(),
            // The known names, at most, and their bytes.
            values: StringBuilder::with_capacity(N, N * 12),
        }
    }

    fn append(&mut self, value: i32) {
        let Self { names, keys, known, others, values } = self;
        let mut add = |name: &str| {
            values.append_value(name);
            arrow::array::ArrayBuilder::len(values) as u32 - 1
        };
        let key = match usize::try_from(value).ok().and_then(|i| known.get_mut(i)) {
            Some(key) => *key.get_or_insert_with(|| add(names[value as usize])),
            None => *others.entry(value).or_insert_with(|| add(&enum_name(&names[..], value))),
        };
        keys.push(key);
    }

    /// The rows' names as a dictionary; resets.
    fn finish(&mut self) -> ArrayRef {
        self.known = [None; N];
        self.others.clear();
        let keys = UInt32Array::from(std::mem::take(&mut self.keys));
        dictionary(&keys, Arc::new(self.values.finish()))
    }
}

fn dictionary(keys: &UInt32Array, values: ArrayRef) -> ArrayRef {
    Arc::new(DictionaryArray::<UInt32Type>::try_new(keys.clone(), values).expect("every row's group exists"))
}

/// What `batch` takes once its grouped columns are expanded to every row
/// (as [`expand_groups`] and the block's gather do): memory bounds count
/// this, not the grouped batch's own size, since writing the block expands
/// each row's resource attributes. A group's map counts once per row of it,
/// by its entries.
pub fn expanded_memory_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| match column.as_dictionary_opt::<UInt32Type>() {
            None => column.get_array_memory_size(),
            Some(grouped) => {
                let per_group = group_sizes(grouped.values().as_ref());
                grouped.keys().values().iter().map(|&key| per_group.get(key as usize).copied().unwrap_or(0)).sum()
            }
        })
        .sum()
}

/// The bytes each value of `values` (a grouped column's groups) takes
/// once gathered: by the bytes the values use, not their buffers' spare
/// capacity (a builder's buffers hold 1,024 values at least, and a request
/// whose rows share a few groups would count that spare room on every row).
fn group_sizes(values: &dyn Array) -> Vec<usize> {
    let total = values.to_data().get_slice_memory_size().unwrap_or_else(|_| values.get_array_memory_size());
    let slots = |count: usize| total.div_ceil(count.max(1));
    if let Some(map) = values.as_map_opt() {
        let per_entry = slots(map.entries().len());
        map.value_offsets().windows(2).map(|w| (w[1] - w[0]) as usize * per_entry + 4).collect()
    } else if let Some(strings) = values.as_string_opt::<i32>() {
        (0..strings.len()).map(|i| strings.value_length(i) as usize + 5).collect()
    } else {
        vec![slots(values.len()); values.len()]
    }
}

/// `batch` with its dictionary columns expanded to their values: a batch
/// of the [`grouped_span_schema`] as one of the [`span_schema`].
pub fn expand_groups(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns =
        batch.columns().iter().map(|column| crate::gather::plain(column.as_ref())).collect::<Result<_, _>>()?;
    RecordBatch::try_new(span_schema(), columns)
}

/// The batch of `spans`, under one resource and scope without attributes
/// (invalid spans left out): for tests and tools.
pub fn batch_of(spans: Vec<Span>) -> RecordBatch {
    let request = [ResourceSpans {
        scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    }];
    let mut builder = SpanBatchBuilder::default();
    builder.append_resource_spans(&request, &mut AppendReport::default());
    builder.finish()
}

fn append_fixed(builder: &mut FixedSizeBinaryBuilder, value: &[u8]) {
    builder.append_value(value).expect("length checked by validate_span");
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The resource's `service.name` string attribute, if any.
pub fn service_name(resource: &Resource) -> Option<&str> {
    resource.attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn entity_refs_json(resource: &Resource) -> String {
    serde_json::to_string(&resource.entity_refs).expect("entity refs serialize")
}

/// The offsets of a list column of a request's spans (events, or links),
/// and its items' columns once an item arrives. Events and links are rare:
/// a request without any shares one empty items array, and its batch
/// holds the offsets alone.
#[derive(Debug)]
struct ListBuilder<I> {
    offsets: Vec<i32>,
    items: Option<Box<I>>,
    max_value_len: usize,
    /// Values truncated in the items of lists already finished.
    truncated: u64,
}

/// The columns of a list's items.
trait Items {
    /// The items' fields, as the span schema has them.
    fn item_field() -> Arc<Field>;
    fn new(max_value_len: usize) -> Self;
    fn truncated(&self) -> u64;
    fn finish(self) -> StructArray;
    /// Items of none, shared by every list column of this kind that has none.
    fn none() -> ArrayRef;
}

impl<I: Items> ListBuilder<I> {
    /// Sized for `rows` spans; items themselves are rare, so their buffers grow.
    fn new(max_value_len: usize, rows: usize) -> Self {
        Self { offsets: offsets_for(rows), items: None, max_value_len, truncated: 0 }
    }

    /// Appends one span's list of `len` items, `append` adding them.
    fn append(&mut self, len: usize, append: impl FnOnce(&mut I)) {
        if len > 0 {
            let max_value_len = self.max_value_len;
            append(self.items.get_or_insert_with(|| Box::new(I::new(max_value_len))));
        }
        self.offsets.push(self.offsets.last().unwrap() + len as i32);
    }

    fn truncated(&self) -> u64 {
        self.truncated + self.items.as_ref().map_or(0, |items| items.truncated())
    }

    fn finish(&mut self) -> ListArray {
        self.truncated = self.truncated();
        let values = self.items.take().map_or_else(I::none, |items| Arc::new(items.finish()));
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        ListArray::new(I::item_field(), OffsetBuffer::new(offsets.into()), values, None)
    }
}

#[derive(Debug)]
struct EventColumns {
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttributeMapBuilder,
    dropped: UInt32Builder,
}

impl EventColumns {
    fn append(&mut self, span: &SpanRef<'_>) {
        for event in &span.events {
            self.time.append_value(event.time_unix_nano as i64);
            self.name.append_value(event.name);
            self.attributes.append_refs(&span.event_attributes[event.attributes.clone()]);
            self.dropped.append_value(event.dropped_attributes_count);
        }
    }
}

impl Items for EventColumns {
    fn item_field() -> Arc<Field> {
        event_item_field()
    }

    fn new(max_value_len: usize) -> Self {
        Self {
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            name: empty_strings(),
            attributes: AttributeMapBuilder::new(max_value_len),
            dropped: UInt32Builder::new(),
        }
    }

    fn truncated(&self) -> u64 {
        self.attributes.truncated()
    }

    fn finish(mut self) -> StructArray {
        StructArray::new(
            event_fields(),
            vec![
                Arc::new(self.time.finish()) as ArrayRef,
                Arc::new(self.name.finish()),
                Arc::new(self.attributes.finish()),
                Arc::new(self.dropped.finish()),
            ],
            None,
        )
    }

    fn none() -> ArrayRef {
        static NONE: LazyLock<ArrayRef> = LazyLock::new(|| new_empty_array(event_item_field().data_type()));
        NONE.clone()
    }
}

#[derive(Debug)]
struct LinkColumns {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    attributes: AttributeMapBuilder,
    dropped: UInt32Builder,
    flags: UInt32Builder,
}

impl LinkColumns {
    fn append(&mut self, span: &SpanRef<'_>) {
        for link in &span.links {
            append_fixed(&mut self.trace_id, link.trace_id);
            append_fixed(&mut self.span_id, link.span_id);
            self.trace_state.append_option(non_empty(link.trace_state));
            self.attributes.append_refs(&span.link_attributes[link.attributes.clone()]);
            self.dropped.append_value(link.dropped_attributes_count);
            self.flags.append_value(link.flags);
        }
    }
}

impl Items for LinkColumns {
    fn item_field() -> Arc<Field> {
        link_item_field()
    }

    fn new(max_value_len: usize) -> Self {
        Self {
            trace_id: FixedSizeBinaryBuilder::new(TRACE_ID_LEN),
            span_id: FixedSizeBinaryBuilder::new(SPAN_ID_LEN),
            trace_state: empty_strings(),
            attributes: AttributeMapBuilder::new(max_value_len),
            dropped: UInt32Builder::new(),
            flags: UInt32Builder::new(),
        }
    }

    fn truncated(&self) -> u64 {
        self.attributes.truncated()
    }

    fn finish(mut self) -> StructArray {
        StructArray::new(
            link_fields(),
            vec![
                Arc::new(self.trace_id.finish()) as ArrayRef,
                Arc::new(self.span_id.finish()),
                Arc::new(self.trace_state.finish()),
                Arc::new(self.attributes.finish()),
                Arc::new(self.dropped.finish()),
                Arc::new(self.flags.finish()),
            ],
            None,
        )
    }

    fn none() -> ArrayRef {
        static NONE: LazyLock<ArrayRef> = LazyLock::new(|| new_empty_array(link_item_field().data_type()));
        NONE.clone()
    }
}
