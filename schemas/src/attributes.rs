//! Attribute maps: OTLP `KeyValue` lists ⇄ Arrow `Map<Utf8, Struct{str,int,double,bool,bytes,json}>`.
//!
//! Scalar values keep their type in their own struct field, so a numeric
//! attribute compares numerically in SQL (`span_attributes['http.status_code'].int >= 500`).
//! Arrays and key-value lists are stored as OTLP/JSON text in `json`; an empty
//! `AnyValue` is an entry whose fields are all null.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Float64Array, Float64Builder,
    Int64Array, Int64Builder, MapArray, StringArray, StringBuilder, StructArray, new_empty_array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Fields};
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value};
use serde_json::json;

use crate::schema::{attribute_entries_field, attribute_value_fields};
use crate::span_ref::{AttrRef, ValueRef};

/// The typed value columns of an attribute entry, in the schema's order.
const STR: usize = 0;
const INT: usize = 1;
const DOUBLE: usize = 2;
const BOOL: usize = 3;
const BYTES: usize = 4;
const JSON: usize = 5;

/// Builds one attribute-map column, one map per row.
///
/// The entry columns are made at the first entry: most maps of a request
/// hold none (its scopes', its events' and links'), and a request's batch
/// is finished and dropped once per request, so a map without entries
/// costs its offsets alone and shares one empty entries array.
#[derive(Debug)]
pub struct AttributeMapBuilder {
    offsets: Vec<i32>,
    entries: i32,
    /// The entry columns, once an entry arrives; sized for this many entries.
    columns: Option<Box<EntryColumns>>,
    capacity: usize,
    /// Longest stored string or bytes value; longer ones are truncated.
    max_value_len: usize,
    truncated: u64,
}

/// The keys and typed values of a map column's entries.
#[derive(Debug)]
struct EntryColumns {
    keys: StringBuilder,
    str_values: StringBuilder,
    int_values: Int64Builder,
    double_values: Float64Builder,
    bool_values: BooleanBuilder,
    bytes_values: BinaryBuilder,
    json_values: StringBuilder,
    /// Entries each typed value column (str, int, double, bool, bytes, json)
    /// is still to get as nulls: an entry is null in all but one, so nulls
    /// are appended a run at a time, when the column next gets a value (or
    /// at finish), instead of one slot per entry per column.
    pending_nulls: [usize; 6],
}

impl EntryColumns {
    /// Each entry takes a slot in every typed value column, so only strings
    /// are sized for their bytes; bytes and JSON values are rare and grow.
    fn with_capacity(entries: usize) -> Self {
        let strings = || StringBuilder::with_capacity(entries, entries * crate::encode::Capacity::STRING_BYTES);
        Self {
            keys: strings(),
            str_values: strings(),
            int_values: Int64Builder::with_capacity(entries),
            double_values: Float64Builder::with_capacity(entries),
            bool_values: BooleanBuilder::with_capacity(entries),
            bytes_values: BinaryBuilder::with_capacity(entries, 0),
            json_values: StringBuilder::with_capacity(entries, 0),
            pending_nulls: [0; 6],
        }
    }

    /// Appends the nulls typed value column `column` is owed.
    fn flush_nulls(&mut self, column: usize) {
        let n = std::mem::take(&mut self.pending_nulls[column]);
        if n == 0 {
            return;
        }
        match column {
            STR => self.str_values.append_nulls(n),
            INT => self.int_values.append_nulls(n),
            DOUBLE => self.double_values.append_nulls(n),
            BOOL => self.bool_values.append_nulls(n),
            BYTES => self.bytes_values.append_nulls(n),
            _ => self.json_values.append_nulls(n),
        }
    }

    fn finish(mut self) -> StructArray {
        (STR..=JSON).for_each(|column| self.flush_nulls(column));
        let values = StructArray::new(
            attribute_value_fields(),
            vec![
                Arc::new(self.str_values.finish()) as ArrayRef,
                Arc::new(self.int_values.finish()),
                Arc::new(self.double_values.finish()),
                Arc::new(self.bool_values.finish()),
                Arc::new(self.bytes_values.finish()),
                Arc::new(self.json_values.finish()),
            ],
            None,
        );
        StructArray::new(entry_fields(), vec![Arc::new(self.keys.finish()) as ArrayRef, Arc::new(values)], None)
    }
}

/// The fields of an attribute map's entries struct.
fn entry_fields() -> Fields {
    let DataType::Struct(fields) = attribute_entries_field().data_type().clone() else {
        unreachable!("attribute entries are a struct")
    };
    fields
}

/// Entries of no attribute at all, shared by every map column that has none.
fn no_entries() -> StructArray {
    static NO_ENTRIES: LazyLock<StructArray> =
        LazyLock::new(|| new_empty_array(attribute_entries_field().data_type()).as_struct().clone());
    NO_ENTRIES.clone()
}

impl AttributeMapBuilder {
    /// A builder whose buffers start empty and grow.
    pub fn new(max_value_len: usize) -> Self {
        Self::with_capacity(max_value_len, 0, 0)
    }

    /// A builder sized for `rows` maps holding `entries` attributes in all.
    pub fn with_capacity(max_value_len: usize, rows: usize, entries: usize) -> Self {
        Self { offsets: offsets_for(rows), entries: 0, columns: None, capacity: entries, max_value_len, truncated: 0 }
    }

    /// Appends one row holding `attributes`.
    pub fn append(&mut self, attributes: &[KeyValue]) {
        for kv in attributes {
            self.append_entry(&AttrRef::of(kv));
        }
        self.offsets.push(self.entries);
    }

    /// Appends one row holding `attributes`.
    pub fn append_refs(&mut self, attributes: &[AttrRef<'_>]) {
        for attribute in attributes {
            self.append_entry(attribute);
        }
        self.offsets.push(self.entries);
    }

    /// How many values were truncated to the length limit so far.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    fn append_entry(&mut self, attribute: &AttrRef<'_>) {
        let capacity = self.capacity;
        let c = self.columns.get_or_insert_with(|| Box::new(EntryColumns::with_capacity(capacity)));
        c.keys.append_value(attribute.key);
        self.entries += 1;
        let typed = match &attribute.value {
            ValueRef::Str(v) => {
                c.flush_nulls(STR);
                c.str_values.append_value(truncate_str(v, self.max_value_len, &mut self.truncated));
                STR
            }
            ValueRef::Int(v) => {
                c.flush_nulls(INT);
                c.int_values.append_value(*v);
                INT
            }
            ValueRef::Double(v) => {
                c.flush_nulls(DOUBLE);
                c.double_values.append_value(*v);
                DOUBLE
            }
            ValueRef::Bool(v) => {
                c.flush_nulls(BOOL);
                c.bool_values.append_value(*v);
                BOOL
            }
            ValueRef::Bytes(v) => {
                let keep = if v.len() > self.max_value_len {
                    self.truncated += 1;
                    &v[..self.max_value_len]
                } else {
                    v
                };
                c.flush_nulls(BYTES);
                c.bytes_values.append_value(keep);
                BYTES
            }
            ValueRef::Nested(nested) => {
                let text = capped_json(nested, self.max_value_len, &mut self.truncated);
                c.flush_nulls(JSON);
                c.json_values.append_value(text);
                JSON
            }
            ValueRef::Empty => usize::MAX,
        };
        for (column, pending) in c.pending_nulls.iter_mut().enumerate() {
            *pending += usize::from(column != typed);
        }
    }

    pub fn finish(&mut self) -> MapArray {
        let entries = self.columns.take().map_or_else(no_entries, |c| c.finish());
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        self.entries = 0;
        MapArray::new(attribute_entries_field(), OffsetBuffer::new(offsets.into()), entries, None::<NullBuffer>, false)
    }
}

/// A string builder that allocates nothing until a value arrives.
pub(crate) fn empty_strings() -> StringBuilder {
    StringBuilder::with_capacity(0, 0)
}

/// List offsets with room for `rows` rows, holding the first offset.
pub(crate) fn offsets_for(rows: usize) -> Vec<i32> {
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0);
    offsets
}

/// Cuts `value` to at most `max` bytes at a character boundary, counting cuts.
fn truncate_str<'a>(value: &'a str, max: usize, truncated: &mut u64) -> &'a str {
    if value.len() <= max {
        return value;
    }
    *truncated += 1;
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Reads the attribute maps of a map column back into OTLP key-values.
#[derive(Debug)]
pub struct AttributeMapReader<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    str_values: &'a StringArray,
    int_values: &'a Int64Array,
    double_values: &'a Float64Array,
    bool_values: &'a BooleanArray,
    bytes_values: &'a BinaryArray,
    json_values: &'a StringArray,
}

impl<'a> AttributeMapReader<'a> {
    /// `array` must have the attribute map type.
    pub fn new(array: &'a dyn Array) -> Result<Self, crate::DecodeError> {
        let map = downcast::<MapArray>(array, "attribute map")?;
        let keys = downcast::<StringArray>(map.keys().as_ref(), "attribute key")?;
        let values = downcast::<StructArray>(map.values().as_ref(), "attribute value")?;
        let column = |i: usize| values.column(i).as_ref();
        Ok(Self {
            map,
            keys,
            str_values: downcast(column(0), "str value")?,
            int_values: downcast(column(1), "int value")?,
            double_values: downcast(column(2), "double value")?,
            bool_values: downcast(column(3), "bool value")?,
            bytes_values: downcast(column(4), "bytes value")?,
            json_values: downcast(column(5), "json value")?,
        })
    }

    /// The attributes of row `row`.
    pub fn get(&self, row: usize) -> Result<Vec<KeyValue>, crate::DecodeError> {
        let offsets = self.map.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        (start..end)
            .map(|i| {
                Ok(KeyValue {
                    key: self.keys.value(i).to_owned(),
                    value: Some(AnyValue { value: self.value(i)? }),
                    ..Default::default()
                })
            })
            .collect()
    }

    fn value(&self, i: usize) -> Result<Option<Value>, crate::DecodeError> {
        Ok(if self.str_values.is_valid(i) {
            Some(Value::StringValue(self.str_values.value(i).to_owned()))
        } else if self.int_values.is_valid(i) {
            Some(Value::IntValue(self.int_values.value(i)))
        } else if self.double_values.is_valid(i) {
            Some(Value::DoubleValue(self.double_values.value(i)))
        } else if self.bool_values.is_valid(i) {
            Some(Value::BoolValue(self.bool_values.value(i)))
        } else if self.bytes_values.is_valid(i) {
            Some(Value::BytesValue(self.bytes_values.value(i).to_vec()))
        } else if self.json_values.is_valid(i) {
            let text = self.json_values.value(i);
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| crate::DecodeError::Json { what: "attribute value", source: e })?;
            json_to_any_value(&json).ok_or(crate::DecodeError::Malformed("attribute json value"))?
        } else {
            None
        })
    }
}

pub(crate) fn downcast<'a, T: 'static>(array: &'a dyn Array, what: &'static str) -> Result<&'a T, crate::DecodeError> {
    array.as_any().downcast_ref::<T>().ok_or(crate::DecodeError::Malformed(what))
}

/// OTLP/JSON of a value (proto3 JSON: 64-bit ints as strings, bytes base64,
/// non-finite doubles as `"NaN"`, `"Infinity"`, `"-Infinity"`).
pub fn any_value_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::StringValue(s) => json!({ "stringValue": s }),
        Value::BoolValue(b) => json!({ "boolValue": b }),
        Value::IntValue(i) => json!({ "intValue": i.to_string() }),
        Value::DoubleValue(d) => json!({ "doubleValue": double_to_json(*d) }),
        Value::BytesValue(b) => {
            json!({ "bytesValue": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        Value::ArrayValue(a) => {
            let values: Vec<_> = a.values.iter().map(optional_value_to_json).collect();
            json!({ "arrayValue": { "values": values } })
        }
        Value::KvlistValue(kv) => {
            let values: Vec<_> = kv
                .values
                .iter()
                .map(|kv| {
                    json!({ "key": kv.key, "value": kv.value.as_ref().map(optional_value_to_json).unwrap_or(json!({})) })
                })
                .collect();
            json!({ "kvlistValue": { "values": values } })
        }
        Value::StringValueStrindex(i) => json!({ "stringValueStrindex": i }),
    }
}

/// The OTLP/JSON text of an array or map value, at most `max` bytes: past it,
/// the longest run of leading elements that fits (still valid JSON, each
/// element whole), counted in `truncated`.
fn capped_json(value: &Value, max: usize, truncated: &mut u64) -> String {
    let full = any_value_to_json(value).to_string();
    if full.len() <= max {
        return full;
    }
    *truncated += 1;
    let (wrapper, elements): (&str, Vec<serde_json::Value>) = match value {
        Value::ArrayValue(a) => ("arrayValue", a.values.iter().map(optional_value_to_json).collect()),
        Value::KvlistValue(kv) => (
            "kvlistValue",
            kv.values
                .iter()
                .map(|kv| json!({ "key": kv.key, "value": kv.value.as_ref().map(optional_value_to_json).unwrap_or(json!({})) }))
                .collect(),
        ),
        _ => return full,
    };
    let mut kept: Vec<serde_json::Value> = Vec::new();
    let mut len = format!("{{\"{wrapper}\":{{\"values\":[]}}}}").len();
    for element in elements {
        let element_len = element.to_string().len() + usize::from(!kept.is_empty());
        if len + element_len > max {
            break;
        }
        len += element_len;
        kept.push(element);
    }
    json!({ wrapper: { "values": kept } }).to_string()
}

fn optional_value_to_json(value: &AnyValue) -> serde_json::Value {
    value.value.as_ref().map(any_value_to_json).unwrap_or(json!({}))
}

fn double_to_json(d: f64) -> serde_json::Value {
    if d.is_nan() {
        json!("NaN")
    } else if d.is_infinite() {
        json!(if d > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(d)
    }
}

/// Inverse of [`any_value_to_json`]; `None` when the JSON is not an OTLP value.
/// An empty object is an empty value (`Some(None)`).
pub fn json_to_any_value(json: &serde_json::Value) -> Option<Option<Value>> {
    let object = json.as_object()?;
    let Some((key, inner)) = object.iter().next() else {
        return Some(None);
    };
    let value = match key.as_str() {
        "stringValue" => Value::StringValue(inner.as_str()?.to_owned()),
        "boolValue" => Value::BoolValue(inner.as_bool()?),
        "intValue" => Value::IntValue(match inner {
            serde_json::Value::String(s) => s.parse().ok()?,
            other => other.as_i64()?,
        }),
        "doubleValue" => Value::DoubleValue(match inner {
            serde_json::Value::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => other.parse().ok()?,
            },
            other => other.as_f64()?,
        }),
        "bytesValue" => Value::BytesValue(base64::engine::general_purpose::STANDARD.decode(inner.as_str()?).ok()?),
        "arrayValue" => {
            let values = match inner.get("values") {
                Some(values) => values
                    .as_array()?
                    .iter()
                    .map(|v| json_to_any_value(v).map(|value| AnyValue { value }))
                    .collect::<Option<Vec<_>>>()?,
                None => Vec::new(),
            };
            Value::ArrayValue(ArrayValue { values })
        }
        "kvlistValue" => {
            let values = match inner.get("values") {
                Some(values) => values
                    .as_array()?
                    .iter()
                    .map(|kv| {
                        Some(KeyValue {
                            key: kv.get("key")?.as_str()?.to_owned(),
                            value: Some(AnyValue { value: json_to_any_value(kv.get("value")?)? }),
                            ..Default::default()
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
                None => Vec::new(),
            };
            Value::KvlistValue(KeyValueList { values })
        }
        "stringValueStrindex" => Value::StringValueStrindex(i32::try_from(inner.as_i64()?).ok()?),
        _ => return None,
    };
    Some(Some(value))
}
