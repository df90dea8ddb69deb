//! OTLP → Arrow → Parquet → Arrow → OTLP keeps every field (property test).

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use prost::Message as _;

use crate::block::{BlockId, encode_block};
use crate::decode::batch_to_resource_spans;
use crate::encode::{AppendReport, SpanBatchBuilder};

fn scalar() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        ".{0,12}".prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Some(Value::BytesValue(b))),
    ]
}

fn any_value() -> impl Strategy<Value = Option<Value>> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| Some(Value::ArrayValue(ArrayValue {
                values: values.into_iter().map(|value| AnyValue { value }).collect()
            }))),
            proptest::collection::vec(("[a-z.]{1,6}", inner), 0..4).prop_map(|kvs| Some(Value::KvlistValue(
                KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value: Some(AnyValue { value }), ..Default::default() })
                        .collect()
                }
            ))),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(("[a-z_.]{1,10}", any_value()), 0..5).prop_map(|kvs| {
        kvs.into_iter()
            .map(|(key, value)| KeyValue { key, value: Some(AnyValue { value }), ..Default::default() })
            .collect()
    })
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len).prop_filter("non-zero id", |v| v.iter().any(|b| *b != 0))
}

fn time() -> impl Strategy<Value = u64> {
    0..=i64::MAX as u64
}

fn event() -> impl Strategy<Value = span::Event> {
    (time(), ".{0,8}", attributes(), any::<u32>()).prop_map(|(time_unix_nano, name, attributes, dropped)| span::Event {
        time_unix_nano,
        name,
        attributes,
        dropped_attributes_count: dropped,
    })
}

fn link() -> impl Strategy<Value = span::Link> {
    (id(16), id(8), "[a-z=,]{0,8}", attributes(), any::<u32>(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped, flags)| span::Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count: dropped,
            flags,
        },
    )
}

prop_compose! {
    fn a_span()(
        trace_id in id(16), span_id in id(8),
        parent in prop_oneof![Just(Vec::new()), id(8)],
        trace_state in "[a-z0-9=,]{0,10}", flags in any::<u32>(), name in ".{0,16}",
        kind in 0..8i32, start in time(), end in time(), attributes in attributes(),
        dropped in (any::<u32>(), any::<u32>(), any::<u32>()),
        events in proptest::collection::vec(event(), 0..3),
        links in proptest::collection::vec(link(), 0..3),
        status in (0..4i32, ".{0,8}"),
    ) -> Span {
        let status = (status.0 != 0 || !status.1.is_empty()).then_some(Status { code: status.0, message: status.1 });
        Span {
            trace_id, span_id, trace_state, parent_span_id: parent, flags, name, kind,
            start_time_unix_nano: start, end_time_unix_nano: end, attributes,
            dropped_attributes_count: dropped.0, events, dropped_events_count: dropped.1,
            links, dropped_links_count: dropped.2, status,
        }
    }
}

prop_compose! {
    fn resource_spans()(
        service in proptest::option::of("[a-z-]{1,8}"), attributes in attributes(),
        dropped in any::<u32>(), schema_url in "[a-z:/.]{0,10}",
        entity in proptest::option::of(("[a-z.]{1,6}", proptest::collection::vec("[a-z.]{1,6}", 0..3))),
        scopes in proptest::collection::vec(
            ("[a-z.]{0,8}", "[0-9.]{0,5}", attributes(), any::<u32>(), "[a-z:/.]{0,10}",
             proptest::collection::vec(a_span(), 1..4)), 1..3),
    ) -> ResourceSpans {
        let mut attributes = attributes;
        if let Some(service) = service {
            attributes.push(KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(Value::StringValue(service)) }),
                ..Default::default()
            });
        }
        let entity_refs = entity.into_iter().map(|(r#type, id_keys)| EntityRef {
            schema_url: String::new(), r#type, id_keys, description_keys: vec!["d".into()],
        }).collect();
        ResourceSpans {
            resource: Some(Resource { attributes, dropped_attributes_count: dropped, entity_refs }),
            scope_spans: scopes.into_iter().map(|(name, version, attributes, dropped, url, spans)| ScopeSpans {
                scope: Some(InstrumentationScope { name, version, attributes, dropped_attributes_count: dropped }),
                spans,
                schema_url: url,
            }).collect(),
            schema_url,
        }
    }
}

/// Every span with its resource and scope, as protobuf bytes, sorted: a
/// comparison that ignores grouping and order and treats NaN bit-exactly.
fn flatten(resource_spans: &[ResourceSpans]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for rs in resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let single = ResourceSpans {
                    resource: rs.resource.clone(),
                    schema_url: rs.schema_url.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        schema_url: ss.schema_url.clone(),
                        spans: vec![span.clone()],
                    }],
                };
                out.push(single.encode_to_vec());
            }
        }
    }
    out.sort();
    out
}

fn roundtrip_through_parquet(input: &[ResourceSpans]) -> Vec<ResourceSpans> {
    let mut builder = SpanBatchBuilder::default();
    let mut report = AppendReport::default();
    builder.append_resource_spans(input, &mut report);
    assert_eq!(report.rejected, 0, "{:?}", report.first_error);
    let block = encode_block(&[builder.finish()], BlockId::new()).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(block.parquet).unwrap().build().unwrap();
    let mut output = Vec::new();
    for batch in reader {
        output.extend(batch_to_resource_spans(&batch.unwrap()).unwrap());
    }
    output
}

/// The block of `input`, one batch per resource, as the ingester buffers
/// them (`grouped`: resource and scope columns as dictionaries; every other
/// batch grouped when `mixed`) or plain.
fn block_of(input: &[ResourceSpans], grouped: bool, mixed: bool, id: &BlockId) -> bytes::Bytes {
    let batches: Vec<_> = input
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let mut builder = SpanBatchBuilder::default();
            builder.append_resource_spans(std::slice::from_ref(rs), &mut AppendReport::default());
            if grouped && (!mixed || i % 2 == 0) { builder.finish_grouped() } else { builder.finish() }
        })
        .collect();
    encode_block(&batches, id.clone()).unwrap().parquet
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn otlp_roundtrips_through_parquet(input in proptest::collection::vec(resource_spans(), 1..4)) {
        let output = roundtrip_through_parquet(&input);
        prop_assert_eq!(flatten(&output), flatten(&input));
    }

    /// Grouped batches (the ingester's) make the very same block, byte for
    /// byte, as plain ones, alone or mixed with them.
    #[test]
    fn grouped_batches_make_the_same_block(input in proptest::collection::vec(resource_spans(), 1..5)) {
        let id = BlockId::new();
        let plain = block_of(&input, false, false, &id);
        prop_assert!(plain == block_of(&input, true, false, &id), "grouped");
        prop_assert!(plain == block_of(&input, true, true, &id), "mixed");
    }
}

#[test]
fn invalid_ids_are_rejected_and_the_rest_kept() {
    let good = Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "ok".into(), ..Default::default() };
    let zero_trace = Span { trace_id: vec![0; 16], ..good.clone() };
    let short_span = Span { span_id: vec![1; 4], ..good.clone() };
    let bad_parent = Span { parent_span_id: vec![1; 3], ..good.clone() };
    let request = vec![ResourceSpans {
        scope_spans: vec![ScopeSpans { spans: vec![good, zero_trace, short_span, bad_parent], ..Default::default() }],
        ..Default::default()
    }];
    let mut builder = SpanBatchBuilder::default();
    let mut report = AppendReport::default();
    builder.append_resource_spans(&request, &mut report);
    assert_eq!((report.accepted, report.rejected), (1, 3));
    assert!(report.first_error.unwrap().contains("trace id is all zeros"));
    assert_eq!(builder.finish().num_rows(), 1);
}

#[test]
fn long_attribute_values_are_truncated_at_a_char_boundary() {
    let attr = KeyValue {
        key: "k".into(),
        value: Some(AnyValue { value: Some(Value::StringValue("ééééé".into())) }),
        ..Default::default()
    };
    let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], attributes: vec![attr], ..Default::default() };
    let request = vec![ResourceSpans {
        scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
        ..Default::default()
    }];
    let mut builder = SpanBatchBuilder::new(5);
    builder.append_resource_spans(&request, &mut AppendReport::default());
    assert_eq!(builder.truncated_values(), 1);
    let out = batch_to_resource_spans(&builder.finish()).unwrap();
    let value = &out[0].scope_spans[0].spans[0].attributes[0].value;
    assert_eq!(value.as_ref().unwrap().value, Some(Value::StringValue("éé".into())));
}
