//! OTLP traces in the JSON encoding Tempo answers with (gogo jsonpb): ids in
//! base64, enums by name, 64-bit integers as strings, zero values omitted.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use serde_json::{Map, Value, json};
use spanlake_schemas::attributes::any_value_to_json;

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// Builds a JSON object, leaving out zero values as jsonpb does.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(mut self, key: &str, value: &str) -> Self {
        if !value.is_empty() {
            self.0.insert(key.into(), json!(value));
        }
        self
    }
    fn bytes(mut self, key: &str, value: &[u8]) -> Self {
        if !value.is_empty() {
            self.0.insert(key.into(), json!(BASE64.encode(value)));
        }
        self
    }
    fn u32(mut self, key: &str, value: u32) -> Self {
        if value != 0 {
            self.0.insert(key.into(), json!(value));
        }
        self
    }
    fn u64_string(mut self, key: &str, value: u64) -> Self {
        if value != 0 {
            self.0.insert(key.into(), json!(value.to_string()));
        }
        self
    }
    fn enum_name(mut self, key: &str, names: &[&str], value: i32) -> Self {
        if value != 0 {
            let name = usize::try_from(value).ok().and_then(|i| names.get(i));
            self.0.insert(key.into(), name.map_or_else(|| json!(value), |n| json!(n)));
        }
        self
    }
    fn list(mut self, key: &str, values: Vec<Value>) -> Self {
        if !values.is_empty() {
            self.0.insert(key.into(), Value::Array(values));
        }
        self
    }
    fn obj(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.0.insert(key.into(), value);
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

pub fn key_values(attributes: &[KeyValue]) -> Vec<Value> {
    attributes
        .iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref()).map(any_value_to_json);
            Obj::default().str("key", &kv.key).obj("value", Some(value.unwrap_or(json!({})))).done()
        })
        .collect()
}

fn resource(resource: &Resource) -> Value {
    let entity_refs =
        resource.entity_refs.iter().map(|e| serde_json::to_value(e).expect("entity ref serializes")).collect();
    Obj::default()
        .list("attributes", key_values(&resource.attributes))
        .u32("droppedAttributesCount", resource.dropped_attributes_count)
        .list("entityRefs", entity_refs)
        .done()
}

fn scope(scope: &InstrumentationScope) -> Value {
    Obj::default()
        .str("name", &scope.name)
        .str("version", &scope.version)
        .list("attributes", key_values(&scope.attributes))
        .u32("droppedAttributesCount", scope.dropped_attributes_count)
        .done()
}

fn event(event: &span::Event) -> Value {
    Obj::default()
        .u64_string("timeUnixNano", event.time_unix_nano)
        .str("name", &event.name)
        .list("attributes", key_values(&event.attributes))
        .u32("droppedAttributesCount", event.dropped_attributes_count)
        .done()
}

fn link(link: &span::Link) -> Value {
    Obj::default()
        .bytes("traceId", &link.trace_id)
        .bytes("spanId", &link.span_id)
        .str("traceState", &link.trace_state)
        .list("attributes", key_values(&link.attributes))
        .u32("droppedAttributesCount", link.dropped_attributes_count)
        .u32("flags", link.flags)
        .done()
}

pub fn span(span: &Span) -> Value {
    let status = span
        .status
        .as_ref()
        .map(|s| Obj::default().str("message", &s.message).enum_name("code", &STATUS_CODES, s.code).done());
    Obj::default()
        .bytes("traceId", &span.trace_id)
        .bytes("spanId", &span.span_id)
        .str("traceState", &span.trace_state)
        .bytes("parentSpanId", &span.parent_span_id)
        .u32("flags", span.flags)
        .str("name", &span.name)
        .enum_name("kind", &SPAN_KINDS, span.kind)
        .u64_string("startTimeUnixNano", span.start_time_unix_nano)
        .u64_string("endTimeUnixNano", span.end_time_unix_nano)
        .list("attributes", key_values(&span.attributes))
        .u32("droppedAttributesCount", span.dropped_attributes_count)
        .list("events", span.events.iter().map(event).collect())
        .u32("droppedEventsCount", span.dropped_events_count)
        .list("links", span.links.iter().map(link).collect())
        .u32("droppedLinksCount", span.dropped_links_count)
        .obj("status", status.filter(|s| s.as_object().is_some_and(|o| !o.is_empty())))
        .done()
}

fn scope_spans(ss: &ScopeSpans) -> Value {
    Obj::default()
        .obj("scope", ss.scope.as_ref().map(scope))
        .list("spans", ss.spans.iter().map(span).collect())
        .str("schemaUrl", &ss.schema_url)
        .done()
}

pub fn resource_spans(rs: &ResourceSpans) -> Value {
    Obj::default()
        .obj("resource", rs.resource.as_ref().map(resource))
        .list("scopeSpans", rs.scope_spans.iter().map(scope_spans).collect())
        .str("schemaUrl", &rs.schema_url)
        .done()
}
