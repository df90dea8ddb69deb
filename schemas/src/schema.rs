//! The flat span schema (one row per span), a public contract: the column
//! names below are documented in the README and read by any Parquet engine.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_NS: &str = "duration_ns";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const SERVICE_NAME: &str = "service_name";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const RESOURCE_ENTITY_REFS: &str = "resource_entity_refs";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
pub const SPAN_ATTRIBUTES: &str = "span_attributes";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const EVENTS: &str = "events";
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const LINKS: &str = "links";
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";

/// Fields of an attribute value: exactly one is set (all null for an empty
/// `AnyValue`). Arrays and key-value lists are kept as OTLP/JSON in `json`.
pub const VALUE_STR: &str = "str";
pub const VALUE_INT: &str = "int";
pub const VALUE_DOUBLE: &str = "double";
pub const VALUE_BOOL: &str = "bool";
pub const VALUE_BYTES: &str = "bytes";
pub const VALUE_JSON: &str = "json";

pub const TRACE_ID_LEN: i32 = 16;
pub const SPAN_ID_LEN: i32 = 8;

/// The struct type of one attribute value. (The schema's types are built
/// once: a request's builder finishes a dozen arrays of them.)
pub fn attribute_value_fields() -> Fields {
    static FIELDS: LazyLock<Fields> = LazyLock::new(|| {
        Fields::from(vec![
            Field::new(VALUE_STR, DataType::Utf8, true),
            Field::new(VALUE_INT, DataType::Int64, true),
            Field::new(VALUE_DOUBLE, DataType::Float64, true),
            Field::new(VALUE_BOOL, DataType::Boolean, true),
            Field::new(VALUE_BYTES, DataType::Binary, true),
            Field::new(VALUE_JSON, DataType::Utf8, true),
        ])
    });
    FIELDS.clone()
}

/// The entries field of an attribute map: `key` → typed `value`.
pub fn attribute_entries_field() -> Arc<Field> {
    static FIELD: LazyLock<Arc<Field>> = LazyLock::new(|| {
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Struct(attribute_value_fields()), true),
            ])),
            false,
        ))
    });
    FIELD.clone()
}

/// An attribute map column type.
pub fn attribute_map_type() -> DataType {
    DataType::Map(attribute_entries_field(), false)
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub fn event_fields() -> Fields {
    static FIELDS: LazyLock<Fields> = LazyLock::new(|| {
        Fields::from(vec![
            Field::new("time", timestamp_type(), false),
            Field::new("name", DataType::Utf8, false),
            Field::new("attributes", attribute_map_type(), false),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
        ])
    });
    FIELDS.clone()
}

pub fn link_fields() -> Fields {
    static FIELDS: LazyLock<Fields> = LazyLock::new(|| {
        Fields::from(vec![
            Field::new("trace_id", DataType::FixedSizeBinary(TRACE_ID_LEN), false),
            Field::new("span_id", DataType::FixedSizeBinary(SPAN_ID_LEN), false),
            Field::new("trace_state", DataType::Utf8, true),
            Field::new("attributes", attribute_map_type(), false),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
            Field::new("flags", DataType::UInt32, false),
        ])
    });
    FIELDS.clone()
}

pub fn event_item_field() -> Arc<Field> {
    static FIELD: LazyLock<Arc<Field>> =
        LazyLock::new(|| Arc::new(Field::new("item", DataType::Struct(event_fields()), false)));
    FIELD.clone()
}

pub fn link_item_field() -> Arc<Field> {
    static FIELD: LazyLock<Arc<Field>> =
        LazyLock::new(|| Arc::new(Field::new("item", DataType::Struct(link_fields()), false)));
    FIELD.clone()
}

static SPAN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let u32_field = |name: &str| Field::new(name, DataType::UInt32, false);
    Arc::new(Schema::new(vec![
        Field::new(TRACE_ID, DataType::FixedSizeBinary(TRACE_ID_LEN), false),
        Field::new(SPAN_ID, DataType::FixedSizeBinary(SPAN_ID_LEN), false),
        Field::new(PARENT_SPAN_ID, DataType::FixedSizeBinary(SPAN_ID_LEN), true),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        u32_field(FLAGS),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(KIND, DataType::Utf8, false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        Field::new(STATUS_CODE, DataType::Utf8, false),
        Field::new(STATUS_MESSAGE, DataType::Utf8, true),
        Field::new(SERVICE_NAME, DataType::Utf8, true),
        Field::new(RESOURCE_ATTRIBUTES, attribute_map_type(), false),
        u32_field(RESOURCE_DROPPED_ATTRIBUTES_COUNT),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(RESOURCE_ENTITY_REFS, DataType::Utf8, true),
        Field::new(SCOPE_NAME, DataType::Utf8, true),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        Field::new(SCOPE_ATTRIBUTES, attribute_map_type(), false),
        u32_field(SCOPE_DROPPED_ATTRIBUTES_COUNT),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(SPAN_ATTRIBUTES, attribute_map_type(), false),
        u32_field(DROPPED_ATTRIBUTES_COUNT),
        Field::new(EVENTS, DataType::List(event_item_field()), false),
        u32_field(DROPPED_EVENTS_COUNT),
        Field::new(LINKS, DataType::List(link_item_field()), false),
        u32_field(DROPPED_LINKS_COUNT),
    ]))
});

/// The Arrow schema of a span block.
pub fn span_schema() -> SchemaRef {
    SPAN_SCHEMA.clone()
}

/// The columns whose value every span of one resource, or one scope, shares.
pub const RESOURCE_COLUMNS: [&str; 5] =
    [SERVICE_NAME, RESOURCE_ATTRIBUTES, RESOURCE_DROPPED_ATTRIBUTES_COUNT, RESOURCE_SCHEMA_URL, RESOURCE_ENTITY_REFS];
pub const SCOPE_COLUMNS: [&str; 5] =
    [SCOPE_NAME, SCOPE_VERSION, SCOPE_ATTRIBUTES, SCOPE_DROPPED_ATTRIBUTES_COUNT, SCOPE_SCHEMA_URL];

/// The columns of an OTLP enum's names: a request's batch holds each name
/// it uses once, keyed by row.
pub const ENUM_COLUMNS: [&str; 2] = [KIND, STATUS_CODE];

static GROUPED_SPAN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields = SPAN_SCHEMA.fields().iter().map(|field| {
        let name = field.name().as_str();
        if RESOURCE_COLUMNS.contains(&name) || SCOPE_COLUMNS.contains(&name) || ENUM_COLUMNS.contains(&name) {
            let values = field.data_type().clone();
            let dictionary = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(values));
            Arc::new(Field::new(field.name(), dictionary, field.is_nullable()))
        } else {
            field.clone()
        }
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
});

/// The span schema as the ingester buffers it: each resource and scope
/// column a dictionary of the request's groups (one value per resource or
/// scope), keyed by row. A row's resource attributes are then one key, not a
/// copy of the map, until the block is written ([`crate::gather`] expands
/// them into block order). The kind and status code are dictionaries too,
/// of the names the request uses ([`ENUM_COLUMNS`]).
pub fn grouped_span_schema() -> SchemaRef {
    GROUPED_SPAN_SCHEMA.clone()
}

/// Checks that a block's schema holds every span-schema column with its
/// type, so that readers can then read columns without further checks. The
/// error names the first column that is missing or of another type.
pub fn check_block_schema(schema: &Schema) -> Result<(), String> {
    for expected in span_schema().fields() {
        match schema.field_with_name(expected.name()) {
            Err(_) => return Err(format!("column {} is missing", expected.name())),
            Ok(found) if found.data_type() != expected.data_type() => {
                return Err(format!(
                    "column {} is {}, the span schema has {}",
                    expected.name(),
                    found.data_type(),
                    expected.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Span kinds as stored in the `kind` column, indexed by the OTLP enum value.
pub const KIND_NAMES: [&str; 6] = ["unspecified", "internal", "server", "client", "producer", "consumer"];
/// Status codes as stored in the `status_code` column, indexed by the OTLP enum value.
pub const STATUS_NAMES: [&str; 3] = ["unset", "ok", "error"];

/// The stored name of an OTLP enum value; values outside the known range are
/// kept as their decimal number so that nothing is lost.
pub fn enum_name(names: &[&'static str], value: i32) -> std::borrow::Cow<'static, str> {
    match usize::try_from(value).ok().and_then(|i| names.get(i)) {
        Some(name) => std::borrow::Cow::Borrowed(name),
        None => std::borrow::Cow::Owned(value.to_string()),
    }
}

/// The OTLP enum value of a stored name (inverse of [`enum_name`]).
pub fn enum_value(names: &[&str], name: &str) -> i32 {
    match names.iter().position(|n| *n == name) {
        Some(i) => i as i32,
        None => name.parse().unwrap_or(0),
    }
}
