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

/// The block of `input`, one batch per resource, as [`batches_of`] makes them.
fn block_of(input: &[ResourceSpans], grouped: bool, mixed: bool, id: &BlockId) -> bytes::Bytes {
    encode_block(&batches_of(input, grouped, mixed), id.clone()).unwrap().parquet
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

    /// The tag summary in a block's footer (taken from its attribute maps'
    /// codes) is the builder's over the same batches, grouped or not.
    #[test]
    fn the_footer_summary_is_the_builders(input in proptest::collection::vec(resource_spans(), 1..5)) {
        for grouped in [false, true] {
            let batches = batches_of(&input, grouped, grouped);
            prop_assert_eq!(footer_summary(&batches), builder_summary(&batches));
        }
    }
}

/// The batches of `input`, one per resource, as the ingester buffers them
/// (`grouped`: resource and scope columns as dictionaries; every other batch
/// grouped when `mixed`) or plain.
fn batches_of(input: &[ResourceSpans], grouped: bool, mixed: bool) -> Vec<arrow::array::RecordBatch> {
    input
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let mut builder = SpanBatchBuilder::default();
            builder.append_resource_spans(std::slice::from_ref(rs), &mut AppendReport::default());
            if grouped && (!mixed || i % 2 == 0) { builder.finish_grouped() } else { builder.finish() }
        })
        .collect()
}

fn footer_summary(batches: &[arrow::array::RecordBatch]) -> crate::tag_summary::TagSummary {
    let block = encode_block(batches, BlockId::new()).unwrap().parquet;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(block).unwrap();
    let metadata = parquet::file::reader::FileReader::metadata(&reader);
    crate::tag_summary::TagSummary::from_footer(metadata.file_metadata()).expect("a summary in the footer")
}

fn builder_summary(batches: &[arrow::array::RecordBatch]) -> crate::tag_summary::TagSummary {
    let mut builder = crate::tag_summary::TagSummaryBuilder::default();
    batches.iter().for_each(|b| builder.add(b));
    builder.finish()
}

/// Past the summary's bounds (values per key, keys per scope, bytes in
/// all), which entries made it in depends on the order they were met: the
/// footer's summary still equals the builder's, over batches that cross
/// every bound in every attribute scope.
#[test]
fn the_footer_summary_is_the_builders_past_every_bound() {
    use crate::tag_summary::{MAX_KEYS_PER_SCOPE, MAX_VALUE_BYTES, MAX_VALUES_PER_KEY};
    let kv = |key: String, value: Value| KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let mut input = Vec::new();
    for r in 0..12usize {
        // Long values, many per key, and more keys than a scope keeps.
        let attributes = |salt: usize, n: usize| -> Vec<KeyValue> {
            (0..n)
                .map(|k| {
                    let value = match (k + salt) % 4 {
                        0 => Value::StringValue(format!("{salt}-{k}-{}", "v".repeat((k * 7) % MAX_VALUE_BYTES + 1))),
                        1 => Value::IntValue((salt * 100_000 + k) as i64),
                        2 => Value::DoubleValue((salt * 7 + k) as f64 / 3.0),
                        _ => Value::BoolValue(k % 3 == 0),
                    };
                    kv(format!("key.{}", (k * 31 + salt) % (MAX_KEYS_PER_SCOPE + 40)), value)
                })
                .collect()
        };
        let spans = (0..40usize)
            .map(|i| Span {
                trace_id: [(r as u64 + 1).to_be_bytes(), (i as u64 + 1).to_be_bytes()].concat(),
                span_id: ((r * 1000 + i) as u64 + 1).to_be_bytes().to_vec(),
                name: format!("op-{}", i % MAX_VALUES_PER_KEY),
                attributes: attributes(r * 40 + i, 30 + i % 7),
                ..Default::default()
            })
            .collect();
        input.push(ResourceSpans {
            resource: Some(Resource { attributes: attributes(r, 200), ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { attributes: attributes(r + 5, 90), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    for grouped in [false, true] {
        let batches = batches_of(&input, grouped, false);
        let summary = builder_summary(&batches);
        let scopes = &summary.scopes;
        // The bounds were crossed.
        assert!(
            scopes.values().any(|s| s.overflowed) || scopes.values().any(|s| s.keys.values().any(|v| v.overflowed))
        );
        assert_eq!(footer_summary(&batches), summary, "grouped: {grouped}");
    }
}

/// The intrinsic columns (span names, status messages, service and scope
/// names and versions) past the bound on values per key: which values made
/// it in depends on the order they were met, across batches, across a
/// grouped column's groups and across a plain column's rows. The footer's
/// summary (taken from the columns' codes) still equals the builder's.
#[test]
fn the_footer_summary_is_the_builders_past_the_intrinsic_bounds() {
    use crate::tag_summary::MAX_VALUES_PER_KEY;
    let resources: Vec<ResourceSpans> = (0..400usize)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    // Scattered, and some repeated: 389 distinct of 400.
                    value: Some(AnyValue { value: Some(Value::StringValue(format!("svc-{}", (r * 37) % 389))) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("scope-{}", (r * 53) % 397),
                    version: format!("{}.{}", r % 7, (r * 11) % 101),
                    ..Default::default()
                }),
                spans: (0..2usize)
                    .map(|i| {
                        let n = r * 2 + i;
                        Span {
                            trace_id: [(n as u64 * 7919 % 800 + 1).to_be_bytes(), 1u64.to_be_bytes()].concat(),
                            span_id: (n as u64 + 1).to_be_bytes().to_vec(),
                            name: format!("op-{}", (n * 131) % 599),
                            status: Some(Status { message: format!("failed {}", (n * 17) % 311), code: 2 }),
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    for grouped in [false, true] {
        // Batches of 80 resources each.
        let batches: Vec<_> = resources
            .chunks(80)
            .map(|chunk| {
                let mut builder = SpanBatchBuilder::default();
                builder.append_resource_spans(chunk, &mut AppendReport::default());
                if grouped { builder.finish_grouped() } else { builder.finish() }
            })
            .collect();
        let summary = builder_summary(&batches);
        let intrinsic = &summary.scopes[crate::tag_summary::INTRINSIC];
        let columns = [crate::schema::NAME, crate::schema::STATUS_MESSAGE, crate::schema::SERVICE_NAME];
        for column in columns.into_iter().chain([crate::schema::SCOPE_NAME]) {
            assert!(intrinsic.keys[column].overflowed, "{column}: more than {MAX_VALUES_PER_KEY} values");
        }
        assert_eq!(footer_summary(&batches), summary, "grouped: {grouped}");
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

    // In events and links too (their columns are made at the first one),
    // and counted across finishes, as the maps count them.
    let mut with_lists = request.clone();
    let span = &mut with_lists[0].scope_spans[0].spans[0];
    let attr = span.attributes[0].clone();
    span.events = vec![span::Event { name: "e".into(), attributes: vec![attr.clone()], ..Default::default() }];
    span.links = vec![span::Link {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        attributes: vec![attr.clone(), attr],
        ..Default::default()
    }];
    builder.append_resource_spans(&with_lists, &mut AppendReport::default());
    assert_eq!(builder.truncated_values(), 1 + 4);
    let out = batch_to_resource_spans(&builder.finish()).unwrap();
    assert_eq!(builder.truncated_values(), 1 + 4);
    let span = &out[0].scope_spans[0].spans[0];
    let text = |kv: &KeyValue| kv.value.as_ref().unwrap().value.clone();
    assert_eq!(text(&span.events[0].attributes[0]), Some(Value::StringValue("éé".into())));
    assert_eq!(text(&span.links[0].attributes[1]), Some(Value::StringValue("éé".into())));
}

/// A block of `resources` resources of `spans` spans each, every span its
/// own trace (so block order interleaves the resources), with resource and
/// scope attributes of every value type, some empty, some many.
fn interleaved_resources(resources: usize, spans: usize) -> Vec<ResourceSpans> {
    let value = |r: usize, k: usize| match (r + k) % 7 {
        0 => Value::StringValue(format!("value-{r}-{k}")),
        1 => Value::IntValue((r * 1000 + k) as i64 - 500),
        2 => Value::DoubleValue(r as f64 / (k + 1) as f64),
        3 => Value::BoolValue(r.is_multiple_of(2)),
        4 => Value::BytesValue(vec![r as u8, k as u8]),
        5 => Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::IntValue(r as i64)) }] }),
        _ => Value::StringValue("shared".into()),
    };
    let attributes = |r: usize, n: usize| -> Vec<KeyValue> {
        (0..n)
            .map(|k| KeyValue {
                key: format!("key.{}", (r + k) % 9),
                // Every fifth entry has no value (an unset AnyValue).
                value: Some(AnyValue { value: (k % 5 != 4).then(|| value(r, k)) }),
                ..Default::default()
            })
            .collect()
    };
    let mut trace = 0u64;
    (0..resources)
        .map(|r| ResourceSpans {
            resource: Some(Resource { attributes: attributes(r, [0, 1, 6, 40][r % 4]), ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("scope-{}", r % 3),
                    attributes: attributes(r + 1, r % 3),
                    ..Default::default()
                }),
                spans: (0..spans)
                    .map(|_| {
                        trace += 1;
                        // Trace ids scattered over the id space by a multiplicative hash.
                        let id = trace.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1);
                        Span {
                            trace_id: [id.to_be_bytes(), trace.to_be_bytes()].concat(),
                            span_id: trace.to_be_bytes().to_vec(),
                            name: "op".into(),
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// The block's rows as Arrow's Parquet reader reads them: all of them, or
/// the rows `selection` picks by the page index.
fn read_block(
    parquet: bytes::Bytes,
    selection: Option<parquet::arrow::arrow_reader::RowSelection>,
) -> arrow::array::RecordBatch {
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    let options = ArrowReaderOptions::new().with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(parquet, options).unwrap();
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    // Without the file's key-value metadata (the block's tag summary).
    let schema = std::sync::Arc::new(builder.schema().as_ref().clone().with_metadata(Default::default()));
    let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap().with_schema(schema.clone()).unwrap()).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// The block of `input` as the ingester writes it (one grouped batch), and
/// the same rows written whole by Arrow's Parquet writer with the block's
/// properties.
fn both_ways(input: &[ResourceSpans]) -> (bytes::Bytes, bytes::Bytes) {
    use parquet::arrow::ArrowWriter;
    let mut builder = SpanBatchBuilder::default();
    builder.append_resource_spans(input, &mut AppendReport::default());
    let grouped = builder.finish_grouped();
    builder.append_resource_spans(input, &mut AppendReport::default());
    let plain = builder.finish();
    let rows = plain.num_rows();
    let ours = encode_block(&[grouped], BlockId::new()).unwrap().parquet;
    let sorted = crate::block::sort_spans(&[plain]).unwrap();
    let mut theirs = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut theirs, sorted.schema(), Some(crate::block::writer_properties(rows))).unwrap();
    writer.write(&sorted).unwrap();
    writer.close().unwrap();
    (ours, bytes::Bytes::from(theirs))
}

/// The metadata of leaf `path` in the block's first row group, and its pages in the offset index.
fn leaf_of(parquet: &bytes::Bytes, path: &str) -> (parquet::file::metadata::ColumnChunkMetaData, usize) {
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        parquet.clone(),
        parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap();
    let metadata = builder.metadata();
    let group = metadata.row_group(0);
    let leaf = (0..group.num_columns()).find(|&i| group.column(i).column_path().string() == path).unwrap();
    let pages = metadata.offset_index().expect("an offset index")[0][leaf].page_locations().len();
    (group.column(leaf).clone(), pages)
}

/// `ours` reads back as `theirs`, whole and through the page index with a
/// row selection over `rows` rows.
fn assert_reads_alike(ours: bytes::Bytes, theirs: bytes::Bytes, rows: usize) {
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let whole = read_block(ours.clone(), None);
    assert_eq!(whole.num_rows(), rows);
    assert_eq!(whole, read_block(theirs.clone(), None));
    let selection = || {
        Some(RowSelection::from(vec![
            RowSelector::skip(rows * 3 / 8),
            RowSelector::select(rows / 5),
            RowSelector::skip(rows / 12),
            RowSelector::select(rows / 8),
        ]))
    };
    let picked = read_block(ours, selection());
    assert_eq!(picked.num_rows(), rows / 5 + rows / 8);
    assert_eq!(picked, read_block(theirs, selection()));
}

/// The attribute maps written by hand (`map_column`) read back, whole and
/// through the page index, exactly as the same rows written by Arrow's
/// Parquet writer: over several pages, with resources of no, one and many
/// entries, every value type, and unset values.
#[test]
fn hand_written_attribute_maps_read_as_arrows_writer_writes_them() {
    let (ours, theirs) = both_ways(&interleaved_resources(40, 600));
    // Several data pages in each hand-written leaf, each in the offset index.
    let (_, pages) = leaf_of(&ours, "resource_attributes.key_value.value.str");
    assert_eq!(pages, 3, "24,000 rows in pages of 8,192");
    assert_reads_alike(ours, theirs, 24_000);
}

/// Maps of string values only (and unset ones): their five other value
/// leaves hold no value, and are written from the levels and pages of the
/// first of them; over several pages whose levels differ, they read back as
/// Arrow's writer writes them.
#[test]
fn value_leaves_without_values_read_as_arrows_writer_writes_them() {
    let mut input = interleaved_resources(40, 600);
    let attributes = input.iter_mut().flat_map(|r| {
        let resource = r.resource.iter_mut().flat_map(|r| &mut r.attributes);
        resource.chain(r.scope_spans.iter_mut().flat_map(|s| s.scope.iter_mut().flat_map(|s| &mut s.attributes)))
    });
    for (n, attribute) in attributes.enumerate() {
        if let Some(value) = attribute.value.as_mut().filter(|v| v.value.is_some()) {
            value.value = Some(Value::StringValue(format!("text-{}", n % 13)));
        }
    }
    let (ours, theirs) = both_ways(&input);
    let (int, pages) = leaf_of(&ours, "resource_attributes.key_value.value.int");
    assert_eq!(pages, 3, "24,000 rows in pages of 8,192");
    assert!(int.dictionary_page_offset().is_none(), "no value, no dictionary");
    assert_reads_alike(ours, theirs, 24_000);
}

/// A leaf whose distinct values outgrow the dictionary page limit (1 MiB)
/// is written PLAIN, as Parquet's writer falls back, and reads back alike.
#[test]
fn a_leaf_past_the_dictionary_limit_is_written_plain() {
    let mut input = interleaved_resources(15, 600);
    let mut n = 0;
    for span in input.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
        n += 1;
        let text = format!("{n:06}-{}", "q".repeat(200));
        span.attributes.push(KeyValue {
            key: "db.query.text".into(),
            value: Some(AnyValue { value: Some(Value::StringValue(text)) }),
            ..Default::default()
        });
    }
    let (ours, theirs) = both_ways(&input);
    let (plain, pages) = leaf_of(&ours, "span_attributes.key_value.value.str");
    assert!(plain.dictionary_page_offset().is_none(), "9,000 distinct 207-byte values: no dictionary");
    assert_eq!(pages, 2);
    let (keys, _) = leaf_of(&ours, "span_attributes.key_value.key");
    assert!(keys.dictionary_page_offset().is_some(), "one key: a dictionary");
    assert_reads_alike(ours, theirs, 9_000);
}

/// Spans whose flat columns exercise the statistics: names of every length
/// around the 64-byte truncation, with characters that cannot be
/// incremented within their width (U+007F, U+FFFF, U+10FFFF) at the cut;
/// counts past `i32::MAX` (unsigned order); status messages only in the
/// upper half of the trace-id space (so whole pages are null); no trace
/// state at all; grouped resource and scope columns of several values.
fn statistics_spans(resources: usize, spans: usize) -> Vec<ResourceSpans> {
    let names = [
        "op".to_owned(),
        "a".repeat(64),
        format!("{}\u{7f}\u{7f}", "b".repeat(62)),
        format!("{}é{}", "c".repeat(62), "d".repeat(9)),
        format!("{}\u{ffff}tail", "e".repeat(61)),
        format!("{}\u{10ffff}\u{10ffff}", "f".repeat(60)),
        "\u{10ffff}".repeat(20),
        "zzz".into(),
        String::new(),
    ];
    let counts = [0u32, 1, 7, 3_000_000_000, u32::MAX, 2_147_483_647, 2_147_483_648];
    let mut n = 0u64;
    (0..resources)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue(format!("{}-{r}", names[1 + r % 5]))) }),
                    ..Default::default()
                }],
                dropped_attributes_count: counts[r % counts.len()],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: names[(r + 3) % names.len()].clone(),
                    version: format!("{r}.0"),
                    dropped_attributes_count: counts[(r + 1) % counts.len()],
                    ..Default::default()
                }),
                spans: (0..spans)
                    .map(|i| {
                        n += 1;
                        let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1);
                        let upper = id >> 63 == 1;
                        let start = 1_700_000_000_000_000_000 + (n * 7919 % 100_000) * 1000;
                        Span {
                            trace_id: [id.to_be_bytes(), n.to_be_bytes()].concat(),
                            span_id: n.to_be_bytes().to_vec(),
                            parent_span_id: if i % 4 == 0 { Vec::new() } else { id.to_le_bytes().to_vec() },
                            start_time_unix_nano: start,
                            end_time_unix_nano: start + (i as u64 % 13) * 1_000_000,
                            name: names[(i * 7 + r) % names.len()].clone(),
                            kind: (i % 6) as i32,
                            flags: counts[i % counts.len()],
                            dropped_attributes_count: counts[(i / 3) % counts.len()],
                            dropped_events_count: u32::from(i % 11 == 0),
                            status: Some(Status {
                                message: if upper && i % 3 == 0 {
                                    names[i % names.len()].clone()
                                } else {
                                    String::new()
                                },
                                code: (i % 3) as i32,
                            }),
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// A column index page by page as (null page, minimum, maximum, nulls),
/// and its boundary order, the way both writers' indexes compare.
type IndexPages = (Option<parquet::basic::BoundaryOrder>, Vec<(bool, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)>);

fn index_pages(index: &parquet::file::page_index::column_index::ColumnIndexMetaData) -> IndexPages {
    use parquet::file::page_index::column_index::ColumnIndexMetaData as Index;
    if let Index::NONE = index {
        return (None, Vec::new());
    }
    let pages = (0..index.num_pages() as usize)
        .map(|i| {
            let (min, max) = match index {
                Index::INT32(x) => {
                    (x.min_value(i).map(|v| v.to_le_bytes().to_vec()), x.max_value(i).map(|v| v.to_le_bytes().to_vec()))
                }
                Index::INT64(x) => {
                    (x.min_value(i).map(|v| v.to_le_bytes().to_vec()), x.max_value(i).map(|v| v.to_le_bytes().to_vec()))
                }
                Index::BYTE_ARRAY(x) | Index::FIXED_LEN_BYTE_ARRAY(x) => {
                    (x.min_value(i).map(<[u8]>::to_vec), x.max_value(i).map(<[u8]>::to_vec))
                }
                other => panic!("not a flat column's index: {other:?}"),
            };
            (index.is_null_page(i), min, max, index.null_count(i))
        })
        .collect();
    (index.get_boundary_order(), pages)
}

/// The flat columns written by hand (`flat_column`: the strings and counts;
/// `plain_column`: the ids, times and durations) carry the statistics
/// Arrow's writer gives the same rows: the chunk's minimum, maximum, null
/// count and exactness, and the column index page by page (minimum and
/// maximum as truncated at 64 bytes, null pages, null counts, boundary
/// order), which queries prune by; and `trace_id` the same bloom filter.
/// And they read back alike.
#[test]
fn hand_written_flat_columns_carry_arrows_statistics() {
    let (ours, theirs) = both_ways(&statistics_spans(23, 1000));
    let metadata = |parquet: &bytes::Bytes| {
        ParquetRecordBatchReaderBuilder::try_new_with_options(
            parquet.clone(),
            parquet::arrow::arrow_reader::ArrowReaderOptions::new()
                .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
        )
        .unwrap()
        .metadata()
        .clone()
    };
    let (mine, arrows) = (metadata(&ours), metadata(&theirs));
    let flat = crate::schema::span_schema()
        .fields()
        .iter()
        .filter(|f| crate::flat_column::handles(f.data_type()) || crate::plain_column::handles(f.data_type()))
        .map(|f| f.name().clone())
        .collect::<Vec<_>>();
    assert_eq!(flat.len(), 23, "the span schema's strings, counts, ids and times");
    let group = mine.row_group(0);
    let mut compared = 0;
    for leaf in 0..group.num_columns() {
        let path = group.column(leaf).column_path().string();
        if !flat.contains(&path) {
            continue;
        }
        let (a, b) = (group.column(leaf), arrows.row_group(0).column(leaf));
        assert_eq!(a.statistics(), b.statistics(), "{path}: chunk statistics");
        let index = |m: &parquet::file::metadata::ParquetMetaData| m.column_index().map(|i| index_pages(&i[0][leaf]));
        assert_eq!(index(&mine), index(&arrows), "{path}: column index");
        let pages = |m: &parquet::file::metadata::ParquetMetaData| {
            m.offset_index().unwrap()[0][leaf].page_locations().iter().map(|p| p.first_row_index).collect::<Vec<_>>()
        };
        assert_eq!(pages(&mine), pages(&arrows), "{path}: pages");
        compared += 1;
    }
    assert_eq!(compared, 23);
    let bloom = |parquet: &bytes::Bytes| {
        use parquet::file::reader::FileReader;
        let properties = parquet::file::properties::ReaderProperties::builder().set_read_bloom_filter(true).build();
        let options =
            parquet::file::serialized_reader::ReadOptionsBuilder::new().with_reader_properties(properties).build();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new_with_options(parquet.clone(), options).unwrap();
        let group = reader.get_row_group(0).unwrap();
        let mut bits = Vec::new();
        group.get_column_bloom_filter(0).expect("a bloom filter on trace_id").write_bitset(&mut bits).unwrap();
        bits
    };
    assert_eq!(bloom(&ours), bloom(&theirs), "trace_id's bloom filter");
    // The cases the spans were made for are there.
    let stats = |path: &str| {
        let leaf = (0..group.num_columns()).find(|&i| group.column(i).column_path().string() == path).unwrap();
        (group.column(leaf).statistics().unwrap().clone(), index_pages(&mine.column_index().unwrap()[0][leaf]))
    };
    let (message, message_pages) = stats("status_message");
    assert!(message_pages.1.iter().any(|p| p.0) && message_pages.1.iter().any(|p| !p.0), "null and non-null pages");
    assert!(!message.min_is_exact(), "a minimum truncated");
    let (services, _) = stats("service_name");
    assert!(!services.max_is_exact(), "a maximum truncated, its last character incremented");
    assert_eq!(services.max_bytes_opt(), Some(format!("{}g", "f".repeat(59)).as_bytes()));
    assert_eq!(stats("trace_state").0.null_count_opt(), Some(23_000));
    let (counts, _) = stats("dropped_attributes_count");
    assert_eq!(counts.max_bytes_opt(), Some(&u32::MAX.to_le_bytes()[..]), "unsigned order");
    let (parents, parent_pages) = stats("parent_span_id");
    assert_eq!(parents.null_count_opt(), Some(23_000 / 4), "roots have no parent");
    assert_eq!(parent_pages.0, Some(parquet::basic::BoundaryOrder::UNORDERED));
    assert_eq!(stats("trace_id").1.0, Some(parquet::basic::BoundaryOrder::ASCENDING), "sorted by trace id");
    assert_reads_alike(ours, theirs, 23_000);
}
