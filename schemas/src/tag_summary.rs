//! Tag summaries: which attribute keys a block holds per scope, and each
//! key's distinct values up to a bound, written into the block's Parquet
//! footer (key [`FOOTER_KEY`]) when the block is written, at ingest and at
//! compaction. Grafana's tag and tag-value requests then merge the summaries
//! of the blocks in range instead of reading spans.
//!
//! ```text
//!  span batches ──add──▶ TagSummaryBuilder ──finish──▶ TagSummary ──json──▶ footer key/value
//!   scope (map column or "intrinsic") → key → { strings, ints, floats, bools, overflowed }
//! ```
//!
//! Bounds: a key keeps at most [`MAX_VALUES_PER_KEY`] distinct values, none
//! longer than [`MAX_VALUE_BYTES`]; a scope at most [`MAX_KEYS_PER_SCOPE`]
//! keys; the whole summary at most [`MAX_SUMMARY_BYTES`] of value text. Past a
//! bound the key (or the scope's key list) is marked `overflowed`: its list
//! is then incomplete, and a reader who needs it complete reads the spans.
//! A summary lists exactly the values of the spans written, so merging the
//! summaries of blocks gives the values of their union.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashSet};

use arrow::array::{Array, AsArray, MapArray, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt32Type};
use serde::{Deserialize, Serialize};

use crate::schema as s;

/// The footer key/value key that holds a block's summary (JSON).
pub const FOOTER_KEY: &str = "spanlake.tag_summary";
/// Distinct values kept per key.
pub const MAX_VALUES_PER_KEY: usize = 256;
/// Longest value kept, in bytes; a longer one overflows its key.
pub const MAX_VALUE_BYTES: usize = 256;
/// Keys kept per scope; a longer key list overflows the scope.
pub const MAX_KEYS_PER_SCOPE: usize = 1024;
/// Value and key text kept per summary, in bytes.
pub const MAX_SUMMARY_BYTES: usize = 512 << 10;

/// The scope of the span columns with one value each (name, kind, …).
pub const INTRINSIC: &str = "intrinsic";
/// The attribute map columns summarized, by scope name.
pub const ATTRIBUTE_SCOPES: [&str; 3] = [s::RESOURCE_ATTRIBUTES, s::SPAN_ATTRIBUTES, s::SCOPE_ATTRIBUTES];
/// The intrinsic columns summarized (string columns).
pub const INTRINSIC_COLUMNS: [&str; 7] =
    [s::NAME, s::KIND, s::STATUS_CODE, s::STATUS_MESSAGE, s::SERVICE_NAME, s::SCOPE_NAME, s::SCOPE_VERSION];

/// One block's (or a union of blocks') summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagSummary {
    /// By scope: an attribute map column's name, or [`INTRINSIC`].
    pub scopes: BTreeMap<String, ScopeSummary>,
}

/// The keys of one scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopeSummary {
    pub keys: BTreeMap<String, Values>,
    /// More keys than were kept.
    #[serde(default, skip_serializing_if = "is_false", rename = "o")]
    pub overflowed: bool,
}

/// The distinct values of one key, by type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Values {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", rename = "s")]
    pub strings: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", rename = "i")]
    pub ints: BTreeSet<i64>,
    /// `f64::to_bits` of each value.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", rename = "f")]
    pub floats: BTreeSet<u64>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", rename = "b")]
    pub bools: BTreeSet<bool>,
    /// More values than were kept (too many, or one too long).
    #[serde(default, skip_serializing_if = "is_false", rename = "o")]
    pub overflowed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Values {
    pub fn len(&self) -> usize {
        self.strings.len() + self.ints.len() + self.floats.len() + self.bools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `other`'s values (a union: no bound applies).
    fn union(&mut self, other: &Values) {
        self.overflowed |= other.overflowed;
        self.strings.extend(other.strings.iter().cloned());
        self.ints.extend(&other.ints);
        self.floats.extend(&other.floats);
        self.bools.extend(&other.bools);
    }
}

impl TagSummary {
    /// The summary in a block's footer, if it has one that parses.
    pub fn from_footer(metadata: &parquet::file::metadata::FileMetaData) -> Option<Self> {
        let text = metadata.key_value_metadata()?.iter().find(|kv| kv.key == FOOTER_KEY)?.value.as_deref()?;
        serde_json::from_str(text).ok()
    }

    /// The footer key/value holding this summary.
    pub fn to_footer(&self) -> parquet::file::metadata::KeyValue {
        let json = serde_json::to_string(self).expect("a summary serializes");
        parquet::file::metadata::KeyValue::new(FOOTER_KEY.to_owned(), json)
    }

    /// Adds every key and value of `other` (a union: no bound applies, the
    /// result is exactly as complete as its parts).
    pub fn merge(&mut self, other: &TagSummary) {
        for (name, scope) in &other.scopes {
            let into = self.scopes.entry(name.clone()).or_default();
            into.overflowed |= scope.overflowed;
            for (key, values) in &scope.keys {
                into.keys.entry(key.clone()).or_default().union(values);
            }
        }
    }
}

/// An attribute value as the summary keeps it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TagValue<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Gathers a summary from span batches (any order, any split).
#[derive(Debug, Default)]
pub struct TagSummaryBuilder {
    scopes: BTreeMap<&'static str, ScopeBuilder>,
    bytes: usize,
}

// While building: sets and maps with a fast, randomly seeded hasher; the
// bounds cap every set, so no input can make them large.
#[derive(Debug, Default)]
struct ScopeBuilder {
    /// Each key's place in `keys`.
    places: HashMap<String, usize>,
    keys: Vec<(String, ValuesBuilder)>,
    overflowed: bool,
}

#[derive(Debug, Default)]
struct ValuesBuilder {
    strings: HashSet<String>,
    ints: HashSet<i64>,
    floats: HashSet<u64>,
    bools: [bool; 2],
    overflowed: bool,
}

impl ValuesBuilder {
    fn len(&self) -> usize {
        self.strings.len() + self.ints.len() + self.floats.len() + self.bools.iter().filter(|b| **b).count()
    }

    fn full(&mut self, bytes: &mut usize, adding: usize) -> bool {
        if self.len() >= MAX_VALUES_PER_KEY || *bytes + adding > MAX_SUMMARY_BYTES {
            self.overflowed = true;
        }
        self.overflowed
    }

    fn add_str(&mut self, value: &str, bytes: &mut usize) {
        if self.overflowed || self.strings.contains(value) {
            return;
        }
        if value.len() > MAX_VALUE_BYTES {
            self.overflowed = true;
        }
        if !self.full(bytes, value.len()) {
            *bytes += value.len();
            self.strings.insert(value.to_owned());
        }
    }

    fn add_int(&mut self, value: i64, bytes: &mut usize) {
        if !self.overflowed && !self.ints.contains(&value) && !self.full(bytes, 8) {
            *bytes += 8;
            self.ints.insert(value);
        }
    }

    fn add_float(&mut self, value: f64, bytes: &mut usize) {
        let bits = value.to_bits();
        if !self.overflowed && !self.floats.contains(&bits) && !self.full(bytes, 8) {
            *bytes += 8;
            self.floats.insert(bits);
        }
    }

    fn add_bool(&mut self, value: bool) {
        self.bools[usize::from(value)] = true;
    }

    fn finish(self) -> Values {
        Values {
            strings: self.strings.into_iter().collect(),
            ints: self.ints.into_iter().collect(),
            floats: self.floats.into_iter().collect(),
            bools: [false, true].into_iter().filter(|b| self.bools[usize::from(*b)]).collect(),
            overflowed: self.overflowed,
        }
    }
}

impl ScopeBuilder {
    /// The place of `key`'s values, or `None` when the scope has no room for
    /// it. Either answer stays the same for the builder's life: a key once
    /// placed keeps its place, and a scope once overflowed places no more.
    fn place(&mut self, key: &str, bytes: &mut usize) -> Option<usize> {
        if let Some(&place) = self.places.get(key) {
            return Some(place);
        }
        if self.overflowed
            || self.keys.len() >= MAX_KEYS_PER_SCOPE
            || key.len() > MAX_VALUE_BYTES
            || *bytes + key.len() > MAX_SUMMARY_BYTES
        {
            self.overflowed = true;
            return None;
        }
        *bytes += key.len();
        self.places.insert(key.to_owned(), self.keys.len());
        self.keys.push((key.to_owned(), ValuesBuilder::default()));
        Some(self.keys.len() - 1)
    }

    /// The values of `key`, or `None` when the scope has no room for it.
    fn key(&mut self, key: &str, bytes: &mut usize) -> Option<&mut ValuesBuilder> {
        let place = self.place(key, bytes)?;
        Some(&mut self.keys[place].1)
    }
}

/// One intrinsic column's values being added to a summary.
pub(crate) struct IntrinsicValues<'b> {
    key: &'b mut ValuesBuilder,
    bytes: &'b mut usize,
}

impl IntrinsicValues<'_> {
    pub(crate) fn add(&mut self, value: &str) {
        self.key.add_str(value, self.bytes);
    }
}

impl TagSummaryBuilder {
    /// Adds the keys and values of a batch of the span schema; columns it
    /// lacks are left out.
    pub fn add(&mut self, batch: &RecordBatch) {
        // A grouped column (a dictionary: the ingester's resource and scope
        // columns) is summarized by its values, each group once.
        let column = |name: &str| {
            let column = batch.column_by_name(name)?;
            Some(match column.as_dictionary_opt::<UInt32Type>() {
                Some(grouped) => grouped.values(),
                None => column,
            })
        };
        for scope in ATTRIBUTE_SCOPES {
            if let Some(map) = column(scope).and_then(|c| c.as_map_opt()) {
                self.add_map(scope, map);
            }
        }
        self.add_intrinsics(batch);
    }

    /// Adds the intrinsic columns of a batch (what [`Self::add`] adds after
    /// the attribute maps).
    pub(crate) fn add_intrinsics(&mut self, batch: &RecordBatch) {
        for name in INTRINSIC_COLUMNS {
            let Some(column) = batch.column_by_name(name) else { continue };
            let column = match column.as_dictionary_opt::<UInt32Type>() {
                Some(grouped) => grouped.values(),
                None => column,
            };
            if let Some(values) = column.as_string_opt::<i32>() {
                self.add_intrinsic(name, values);
            }
        }
    }

    /// Lists `scope` (one of [`ATTRIBUTE_SCOPES`]), with no keys yet: what
    /// [`Self::add`] does for each map of a batch, whatever it holds.
    pub(crate) fn add_scope(&mut self, scope: &'static str) {
        self.scopes.entry(scope).or_default();
    }

    /// Adds one attribute entry of `scope` (one of [`ATTRIBUTE_SCOPES`]):
    /// its key, and its value when it has a string, integer, float or
    /// boolean. Adding an entry again changes nothing, so a caller may pass
    /// each distinct entry once, in the order [`Self::add`] meets them.
    pub(crate) fn add_entry(&mut self, scope: &'static str, key: &str, value: Option<TagValue<'_>>) {
        let scope = self.scopes.entry(scope).or_default();
        let Some(place) = scope.place(key, &mut self.bytes) else { return };
        let key = &mut scope.keys[place].1;
        if key.overflowed {
            return;
        }
        match value {
            Some(TagValue::Str(v)) => key.add_str(v, &mut self.bytes),
            Some(TagValue::Int(v)) => key.add_int(v, &mut self.bytes),
            Some(TagValue::Float(v)) => key.add_float(v, &mut self.bytes),
            Some(TagValue::Bool(v)) => key.add_bool(v),
            None => {}
        }
    }

    fn add_intrinsic(&mut self, column: &str, values: &StringArray) {
        let Some(mut key) = self.intrinsic(column) else { return };
        // Runs of equal values (spans sorted by trace share names) are looked up once.
        let mut last: Option<&str> = None;
        for value in values.iter().flatten() {
            if last != Some(value) {
                key.add(value);
                last = Some(value);
            }
        }
    }

    /// The values of intrinsic string column `column`, its key listed
    /// first (what [`Self::add`] does for each such column of a batch,
    /// whatever it holds); `None` past the bound on keys. Adding a value
    /// again changes nothing, so a caller may pass each distinct value
    /// once, in the order `add` meets them.
    pub(crate) fn intrinsic(&mut self, column: &str) -> Option<IntrinsicValues<'_>> {
        let scope = self.scopes.entry(INTRINSIC).or_default();
        let key = scope.key(column, &mut self.bytes)?;
        Some(IntrinsicValues { key, bytes: &mut self.bytes })
    }

    fn add_map(&mut self, scope_name: &'static str, map: &MapArray) {
        let scope = self.scopes.entry(scope_name).or_default();
        let entries = map.entries();
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_struct();
        let field = |name: &str| values.column_by_name(name);
        let strings = field(s::VALUE_STR).and_then(|c| c.as_string_opt::<i32>());
        let ints = field(s::VALUE_INT).and_then(|c| c.as_primitive_opt::<Int64Type>());
        let floats = field(s::VALUE_DOUBLE).and_then(|c| c.as_primitive_opt::<Float64Type>());
        let bools = field(s::VALUE_BOOL).and_then(|c| c.as_boolean_opt());
        // Rows of one resource or scope repeat its attributes: a row whose
        // entries equal the previous row's adds nothing, and comparing is
        // cheaper than looking each entry up.
        let same = |a: usize, b: usize| {
            fn equal<T: PartialEq>(valid: (bool, bool), value: impl Fn(usize) -> T, a: usize, b: usize) -> bool {
                valid.0 == valid.1 && (!valid.0 || value(a) == value(b))
            }
            keys.value(a) == keys.value(b)
                && values.is_valid(a) == values.is_valid(b)
                && strings.is_none_or(|c| equal((c.is_valid(a), c.is_valid(b)), |i| c.value(i), a, b))
                && ints.is_none_or(|c| equal((c.is_valid(a), c.is_valid(b)), |i| c.value(i), a, b))
                && floats.is_none_or(|c| equal((c.is_valid(a), c.is_valid(b)), |i| c.value(i).to_bits(), a, b))
                && bools.is_none_or(|c| equal((c.is_valid(a), c.is_valid(b)), |i| c.value(i), a, b))
        };
        // Only the entries of the batch's rows count (a sliced batch shares
        // its entries with rows outside it).
        let offsets = map.value_offsets();
        let mut previous: Option<(usize, usize)> = None;
        // By an entry's position in its row: the last entry seen there, and
        // its key's place. Spans of one kind list the same keys in the same
        // order, so a key is looked up by comparing it with the one before
        // at its position, and an entry equal to that one adds nothing.
        let mut recent: Vec<(usize, Option<usize>)> = Vec::new();
        for row in 0..map.len() {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            if let Some((before, before_end)) = previous
                && before_end - before == end - start
                && (0..end - start).all(|j| same(before + j, start + j))
            {
                continue;
            }
            previous = Some((start, end));
            for (position, i) in (start..end).enumerate() {
                let place = match recent.get(position) {
                    Some(&(seen, _)) if same(seen, i) => continue,
                    Some(&(seen, place)) if keys.value(seen) == keys.value(i) => place,
                    _ => scope.place(keys.value(i), &mut self.bytes),
                };
                match recent.get_mut(position) {
                    Some(slot) => *slot = (i, place),
                    None => recent.push((i, place)),
                }
                let Some(place) = place else { continue };
                let key = &mut scope.keys[place].1;
                if key.overflowed || values.is_null(i) {
                    continue;
                }
                if let Some(c) = strings.filter(|c| c.is_valid(i)) {
                    key.add_str(c.value(i), &mut self.bytes);
                } else if let Some(c) = ints.filter(|c| c.is_valid(i)) {
                    key.add_int(c.value(i), &mut self.bytes);
                } else if let Some(c) = floats.filter(|c| c.is_valid(i)) {
                    key.add_float(c.value(i), &mut self.bytes);
                } else if let Some(c) = bools.filter(|c| c.is_valid(i)) {
                    key.add_bool(c.value(i));
                }
            }
        }
    }

    pub fn finish(self) -> TagSummary {
        TagSummary {
            scopes: self
                .scopes
                .into_iter()
                .map(|(name, scope)| {
                    let keys = scope.keys.into_iter().map(|(k, v)| (k, v.finish())).collect();
                    (name.to_owned(), ScopeSummary { keys, overflowed: scope.overflowed })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpanBatchBuilder;
    use crate::encode::AppendReport;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
    }

    fn batch(spans: Vec<Span>, service: &str) -> RecordBatch {
        let mut builder = SpanBatchBuilder::new(1024);
        let resource = Resource {
            attributes: vec![kv("service.name", Value::StringValue(service.into()))],
            ..Resource::default()
        };
        let request = ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        };
        builder.append_resource_spans(&[request], &mut AppendReport::default());
        builder.finish()
    }

    fn span(i: u8, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("op{}", i % 2),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes,
            ..Span::default()
        }
    }

    #[test]
    fn keys_and_typed_values_per_scope() {
        let spans = vec![
            span(1, vec![kv("http.route", Value::StringValue("/a".into())), kv("n", Value::IntValue(7))]),
            span(2, vec![kv("ratio", Value::DoubleValue(0.5)), kv("ok", Value::BoolValue(true))]),
        ];
        let mut builder = TagSummaryBuilder::default();
        builder.add(&batch(spans, "shop"));
        let summary = builder.finish();
        let span_scope = &summary.scopes[s::SPAN_ATTRIBUTES];
        assert_eq!(span_scope.keys["http.route"].strings, BTreeSet::from(["/a".to_owned()]));
        assert_eq!(span_scope.keys["n"].ints, BTreeSet::from([7]));
        assert_eq!(span_scope.keys["ratio"].floats, BTreeSet::from([0.5f64.to_bits()]));
        assert_eq!(span_scope.keys["ok"].bools, BTreeSet::from([true]));
        assert_eq!(summary.scopes[s::RESOURCE_ATTRIBUTES].keys["service.name"].strings.len(), 1);
        let names = &summary.scopes[INTRINSIC].keys[s::NAME].strings;
        assert_eq!(names, &BTreeSet::from(["op0".to_owned(), "op1".to_owned()]));
        assert!(!span_scope.overflowed && !span_scope.keys.values().any(|v| v.overflowed));
        // The footer form round-trips.
        let footer = summary.to_footer();
        let parsed: TagSummary = serde_json::from_str(footer.value.as_deref().unwrap()).unwrap();
        assert_eq!(parsed, summary);
    }

    #[test]
    fn rows_that_repeat_the_previous_attributes_add_nothing_new() {
        let mut builder = SpanBatchBuilder::new(1024);
        let resources: Vec<ResourceSpans> = ["a", "a", "b", "a"]
            .iter()
            .enumerate()
            .map(|(i, service)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue((*service).into()))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(i as u8 + 1, vec![]),
                        span(i as u8 + 10, vec![kv("n", Value::IntValue(i as i64))]),
                    ],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
            .collect();
        builder.append_resource_spans(&resources, &mut AppendReport::default());
        let mut summary = TagSummaryBuilder::default();
        summary.add(&builder.finish());
        let summary = summary.finish();
        let services = &summary.scopes[s::RESOURCE_ATTRIBUTES].keys["service.name"].strings;
        assert_eq!(services, &BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        assert_eq!(summary.scopes[s::SPAN_ATTRIBUTES].keys["n"].ints, BTreeSet::from([0, 1, 2, 3]));
    }

    /// Spans that list keys in changing orders, with values of changing
    /// types, that repeat or not: the summary holds exactly each key's
    /// values, whatever was looked up by position and skipped as a repeat.
    #[test]
    fn keys_in_any_order_and_repeated_values_are_summarized_exactly() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let mut expected: BTreeMap<String, Values> = BTreeMap::new();
            let spans: Vec<Span> = (1..rng.random_range(2..40u8))
                .map(|i| {
                    let mut keys: Vec<usize> = (0..rng.random_range(0..5)).map(|_| rng.random_range(0..6)).collect();
                    keys.dedup();
                    let attributes = keys
                        .into_iter()
                        .map(|k| {
                            let key = format!("k{k}");
                            let values = expected.entry(key.clone()).or_default();
                            let value = match rng.random_range(0..4) {
                                0 => {
                                    let v = format!("v{}", rng.random_range(0..3));
                                    values.strings.insert(v.clone());
                                    Value::StringValue(v)
                                }
                                1 => {
                                    let v = rng.random_range(0..3);
                                    values.ints.insert(v);
                                    Value::IntValue(v)
                                }
                                2 => {
                                    let v = f64::from(rng.random_range(0..3u8));
                                    values.floats.insert(v.to_bits());
                                    Value::DoubleValue(v)
                                }
                                _ => {
                                    let v = rng.random_bool(0.5);
                                    values.bools.insert(v);
                                    Value::BoolValue(v)
                                }
                            };
                            kv(&key, value)
                        })
                        .collect();
                    span(i, attributes)
                })
                .collect();
            let mut builder = TagSummaryBuilder::default();
            builder.add(&batch(spans, "shop"));
            let summary = builder.finish();
            let got = summary.scopes.get(s::SPAN_ATTRIBUTES).map(|scope| scope.keys.clone()).unwrap_or_default();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn merging_summaries_equals_summarizing_the_union() {
        let a = batch(vec![span(1, vec![kv("k", Value::StringValue("x".into()))])], "a");
        let b = batch(vec![span(2, vec![kv("k", Value::StringValue("y".into())), kv("j", Value::IntValue(1))])], "b");
        let one = |batches: &[&RecordBatch]| {
            let mut builder = TagSummaryBuilder::default();
            batches.iter().for_each(|batch| builder.add(batch));
            builder.finish()
        };
        let mut merged = one(&[&a]);
        merged.merge(&one(&[&b]));
        assert_eq!(merged, one(&[&a, &b]));
    }

    #[test]
    fn past_a_bound_a_key_overflows() {
        let spans: Vec<Span> = (0..=MAX_VALUES_PER_KEY as u32)
            .map(|i| span(1, vec![kv("user", Value::IntValue(i64::from(i))), kv("fixed", Value::IntValue(1))]))
            .collect();
        let long = span(2, vec![kv("text", Value::StringValue("x".repeat(MAX_VALUE_BYTES + 1)))]);
        let mut builder = TagSummaryBuilder::default();
        builder.add(&batch(spans, "shop"));
        builder.add(&batch(vec![long], "shop"));
        let summary = builder.finish();
        let keys = &summary.scopes[s::SPAN_ATTRIBUTES].keys;
        assert!(keys["user"].overflowed);
        assert_eq!(keys["user"].len(), MAX_VALUES_PER_KEY);
        assert!(!keys["fixed"].overflowed);
        assert!(keys["text"].overflowed && keys["text"].is_empty());
        // Too many keys overflow the scope.
        let many: Vec<KeyValue> =
            (0..=MAX_KEYS_PER_SCOPE).map(|i| kv(&format!("k{i}"), Value::BoolValue(true))).collect();
        let mut builder = TagSummaryBuilder::default();
        builder.add(&batch(vec![span(3, many)], "shop"));
        let summary = builder.finish();
        assert!(summary.scopes[s::SPAN_ATTRIBUTES].overflowed);
        assert_eq!(summary.scopes[s::SPAN_ATTRIBUTES].keys.len(), MAX_KEYS_PER_SCOPE);
    }
}
