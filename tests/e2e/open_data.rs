//! Open data: a block written by the ingester is read by the plain `parquet`
//! crate, without Spanlake code, and its rows match what was sent.

use arrow::array::{Array, AsArray, MapArray, StructArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use opentelemetry_proto::tonic::trace::v1::Span;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use prost::Message as _;
use spanlake_test_support::otlp;

use crate::common::TestServer;

fn blocks(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let dir = root.join("v1/single-tenant/blocks");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[tokio::test]
async fn blocks_are_plain_parquet_with_the_documented_schema() {
    let server = TestServer::start().await;
    let status = |code: i64| otlp::int("http.response.status_code", code);
    // Trace ids sent out of order: the block must come back sorted.
    let spans: Vec<Span> = [3u8, 1, 2]
        .iter()
        .map(|t| Span {
            trace_id: vec![*t; 16],
            span_id: vec![*t + 10; 8],
            name: format!("op-{t}"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000 + *t as u64,
            end_time_unix_nano: 1_700_000_000_000_500_000 + *t as u64,
            attributes: vec![status(200 + *t as i64)],
            ..Default::default()
        })
        .collect();
    let request = otlp::request(vec![otlp::resource_spans(Some("billing"), Vec::new(), spans)]);
    let (status, _) = server.export_raw("application/x-protobuf", None, request.encode_to_vec()).await;
    assert_eq!(status, 200);

    let files = blocks(server.dir.path());
    assert_eq!(files.len(), 1);
    let file = std::fs::File::open(&files[0]).unwrap();

    // File-level layout: zstd, sorted by trace_id then start_time, bloom filter on trace_id.
    let reader = SerializedFileReader::new(file.try_clone().unwrap()).unwrap();
    let row_group = reader.metadata().row_group(0);
    let trace_column = row_group.column(0);
    assert_eq!(trace_column.column_path().string(), "trace_id");
    assert!(matches!(trace_column.compression(), Compression::ZSTD(_)));
    assert!(trace_column.bloom_filter_offset().is_some(), "bloom filter on trace_id");
    assert!(trace_column.statistics().is_some());
    let sorting = row_group.sorting_columns().unwrap();
    assert_eq!((sorting[0].column_idx, sorting[1].column_idx), (0, 7));

    let batches: Vec<_> =
        ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(Result::unwrap).collect();
    let batch = &batches[0];
    let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(
        names,
        [
            "trace_id",
            "span_id",
            "parent_span_id",
            "trace_state",
            "flags",
            "name",
            "kind",
            "start_time",
            "end_time",
            "duration_ns",
            "status_code",
            "status_message",
            "service_name",
            "resource_attributes",
            "resource_dropped_attributes_count",
            "resource_schema_url",
            "resource_entity_refs",
            "scope_name",
            "scope_version",
            "scope_attributes",
            "scope_dropped_attributes_count",
            "scope_schema_url",
            "span_attributes",
            "dropped_attributes_count",
            "events",
            "dropped_events_count",
            "links",
            "dropped_links_count",
        ]
    );
    assert_eq!(batch.num_rows(), 3);
    let trace_ids = batch.column_by_name("trace_id").unwrap().as_fixed_size_binary();
    let firsts: Vec<u8> = (0..3).map(|i| trace_ids.value(i)[0]).collect();
    assert_eq!(firsts, vec![1, 2, 3], "sorted by trace id");
    let names = batch.column_by_name("name").unwrap().as_string::<i32>();
    assert_eq!(names.value(0), "op-1");
    assert_eq!(batch.column_by_name("kind").unwrap().as_string::<i32>().value(0), "client");
    assert_eq!(batch.column_by_name("service_name").unwrap().as_string::<i32>().value(2), "billing");
    assert!(batch.column_by_name("parent_span_id").unwrap().is_null(0), "a root has no parent");
    let starts = batch.column_by_name("start_time").unwrap().as_primitive::<TimestampNanosecondType>();
    assert_eq!(starts.value(0), 1_700_000_000_000_000_001);
    assert_eq!(batch.column_by_name("duration_ns").unwrap().as_primitive::<Int64Type>().value(0), 500_000);
    // A numeric attribute keeps its type: span_attributes['http.response.status_code'].int
    let attributes = batch.column_by_name("span_attributes").unwrap().as_any().downcast_ref::<MapArray>().unwrap();
    let entries = attributes.value(2);
    let entries = entries.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(entries.column(0).as_string::<i32>().value(0), "http.response.status_code");
    let value = entries.column(1).as_any().downcast_ref::<StructArray>().unwrap();
    let int = value.column_by_name("int").unwrap().as_primitive::<Int64Type>();
    assert_eq!(int.value(0), 203);
    assert!(value.column_by_name("str").unwrap().is_null(0));
    server.spanlake.shutdown().await;
}
