//! Tag summaries (issue #16): every block carries its attribute keys and
//! values in its footer, and Grafana's tag requests answer from them. They
//! stay exact through ingest, compaction and retention; a key with more
//! values than a summary keeps, and a block written without a summary, are
//! read from the spans, within `--max-tag-scan-bytes`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::Span;
use parquet::arrow::ArrowWriter;
use serde_json::{Value as Json, json};
use spanlake_compactor::clock::ManualClock;
use spanlake_schemas::block::writer_properties;
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::tag_summary::{MAX_VALUES_PER_KEY, TagSummary};
use spanlake_schemas::{AppendReport, BlockId, BlockMeta, SpanBatchBuilder, Storage, TenantId};
use spanlake_test_support::otlp::{int, resource_spans, string, trace};

use crate::common::TestServer;
use crate::compaction::{compactor, config, live_blocks, write_block_received_at};

const HOUR: u64 = 3_600_000_000_000;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The summary in a stored block's footer.
async fn footer_summary(storage: &Storage, tenant: &TenantId, meta: &BlockMeta) -> Option<TagSummary> {
    let reader = ObjectReader::block(storage, tenant, meta);
    let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader).await.unwrap();
    TagSummary::from_footer(builder.metadata().file_metadata())
}

async fn get(server: &TestServer, path: &str, params: &[(&str, &str)]) -> (Json, Option<String>) {
    server.spanlake.querier().unwrap().catalog().refresh().await.unwrap();
    let response = server.http.get(server.query_url(path)).query(params).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let partial = response.headers().get("x-spanlake-partial").map(|v| v.to_str().unwrap().to_owned());
    (serde_json::from_str(&response.text().await.unwrap()).unwrap(), partial)
}

/// Every range: the last 30 days.
fn range() -> [(&'static str, String); 2] {
    let now = nanos(SystemTime::now()) / 1_000_000_000;
    [("start", (now - 30 * 24 * 3600).to_string()), ("end", (now + 60).to_string())]
}

async fn values(server: &TestServer, tag: &str) -> (Vec<String>, Option<String>) {
    let range = range();
    let params: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (body, partial) = get(server, &format!("/api/v2/search/tag/{tag}/values"), &params).await;
    let values =
        body["tagValues"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap().to_owned()).collect();
    (values, partial)
}

async fn tag_names(server: &TestServer) -> BTreeSet<String> {
    let range = range();
    let params: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (body, partial) = get(server, "/api/search/tags", &params).await;
    assert_eq!(partial, None);
    body["tagNames"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Blocks from ingest, merged by the compactor, then one expired by
/// retention: the answers follow exactly, and the merged block's summary is
/// the union of its sources'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_stay_exact_through_ingest_compaction_and_retention() {
    let server = TestServer::start().await;
    let storage = spanlake::storage::open(&crate::common::test_args(&server.dir).storage).unwrap();
    let tenant = TenantId::single();
    let now = SystemTime::now();
    let two_hours_ago = nanos(now) - 2 * HOUR;
    // Three requests, three blocks, in a window that is cold (compactable).
    for (t, service) in [(1u8, "cart"), (2, "shop"), (3, "shop")] {
        let mut spans = trace(t, service, 1, two_hours_ago + u64::from(t) * 1_000_000);
        spans.scope_spans[0].spans[1].attributes.push(string("color", ["red", "blue", "green"][usize::from(t) - 1]));
        server.ingest(None, vec![spans]).await;
    }
    // A block 20 days old, received then: retention takes it.
    let day = 24 * 3600;
    let old = now - Duration::from_secs(20 * day);
    let mut old_trace = trace(9, "legacy", 1, nanos(old));
    old_trace.scope_spans[0].spans[0].attributes.push(int("old.only", 1));
    write_block_received_at(&storage, TenantId::single().as_str(), old, old_trace).await;

    let blocks = live_blocks(&storage, &tenant).await;
    assert_eq!(blocks.len(), 4);
    let mut union = TagSummary::default();
    for meta in &blocks {
        let summary = footer_summary(&storage, &tenant, meta).await.expect("every block has a summary");
        union.merge(&summary);
    }
    async fn expect_all(server: &TestServer, with_old: bool) {
        {
            let (services, partial) = values(server, "resource.service.name").await;
            let mut expected = vec!["cart", "legacy", "shop"];
            if !with_old {
                expected.retain(|s| *s != "legacy");
            }
            assert_eq!(services, strings(&expected));
            assert_eq!(partial, None);
            assert_eq!(values(server, "span.color").await.0, strings(&["blue", "green", "red"]));
            let (limited, _) = get(server, "/api/v2/search/tag/span.color/values", &[("limit", "2")]).await;
            assert_eq!(
                limited["tagValues"],
                json!([{"type": "string", "value": "blue"}, {"type": "string", "value": "green"}])
            );
            let (limited, _) = get(server, "/api/search/tags", &[("limit", "1")]).await;
            assert_eq!(limited["tagNames"].as_array().unwrap().len(), 1);
            assert_eq!(values(server, ".db.system.name").await.0, strings(&["postgresql"]));
            assert_eq!(values(server, "span.http.response.status_code").await.0, strings(&["200", "500"]));
            assert_eq!(values(server, "status").await.0, strings(&["error", "unset"]));
            let names = tag_names(server).await;
            assert_eq!(names.contains("old.only"), with_old, "{names:?}");
            assert!(names.contains("color") && names.contains("service.name"), "{names:?}");
        }
    }
    expect_all(&server, true).await;

    // One compactor pass merges the three cold blocks of two hours ago, and
    // retention (14 days by default) expires the 20-day-old one.
    let clock = Arc::new(ManualClock::new(now));
    let compactor = compactor(&storage, config(&clock)).await;
    let report = compactor.run_once().await.unwrap();
    assert_eq!((report.blocks_merged, report.blocks_expired), (3, 1), "{report:?}");
    let left = live_blocks(&storage, &tenant).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].compaction_level > 0);
    let mut sources = TagSummary::default();
    for meta in blocks.iter().filter(|b| b.min_time_unix_nano as u64 > nanos(old) + HOUR) {
        sources.merge(&footer_summary(&storage, &tenant, meta).await.unwrap());
    }
    assert_ne!(sources, union, "the expired block had keys of its own");
    assert_eq!(footer_summary(&storage, &tenant, &left[0]).await.unwrap(), sources);
    expect_all(&server, false).await;
    server.spanlake.shutdown().await;
}

/// A key with more distinct values than a summary keeps is read from the
/// spans, with the right answer; a block written without a summary too. Past
/// `--max-tag-scan-bytes` the newest blocks answer and the response says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_key_falls_back_to_a_bounded_scan() {
    let users = MAX_VALUES_PER_KEY as i64 + 44;
    let spans = |first: i64, base: u64| -> Vec<Span> {
        (first..first + users)
            .map(|u| Span {
                trace_id: [&u.to_be_bytes()[..], &[3u8; 8]].concat(),
                span_id: (u + 1).to_be_bytes().to_vec(),
                name: "checkout".into(),
                start_time_unix_nano: base + u as u64,
                end_time_unix_nano: base + u as u64 + 1_000,
                attributes: vec![int("user.id", u), string("tier", if u % 2 == 0 { "gold" } else { "free" })],
                ..Span::default()
            })
            .collect()
    };
    let now = nanos(SystemTime::now());
    let expected = |from: i64| -> Vec<String> {
        let mut all: Vec<i64> = (from..from + users).collect();
        all.sort_by_key(|u| u.to_string());
        all.iter().map(|u| u.to_string()).collect()
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let server = TestServer::start().await;
    server.ingest(None, vec![resource_spans(Some("shop"), vec![], spans(0, now - HOUR))]).await;
    let (found, partial) = values(&server, "span.user.id").await;
    assert_eq!(sorted(found), expected(0));
    assert_eq!(partial, None);
    assert_eq!(values(&server, "span.tier").await.0, strings(&["free", "gold"]));

    // A block written without a summary (as before summaries existed) is read.
    let storage = spanlake::storage::open(&crate::common::test_args(&server.dir).storage).unwrap();
    let mut builder = SpanBatchBuilder::default();
    let mut legacy = spans(1000, now - 2 * HOUR);
    legacy.truncate(3);
    legacy[0].attributes[1] = string("tier", "legacy");
    builder.append_resource_spans(&[resource_spans(Some("old"), vec![], legacy)], &mut AppendReport::default());
    let batch = spanlake_schemas::block::sort_spans(&[builder.finish()]).unwrap();
    let described = spanlake_schemas::block::encode_block(std::slice::from_ref(&batch), BlockId::new()).unwrap().meta;
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(writer_properties(3))).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let meta = BlockMeta { size_bytes: bytes.len() as u64, ..described };
    let tenant = TenantId::single();
    storage.put_block(&tenant, &meta, bytes.into()).await.unwrap();
    storage
        .commit(&tenant, &CommitRecord { id: BlockId::new(), added: vec![meta.clone()], removed: vec![] })
        .await
        .unwrap();
    assert_eq!(footer_summary(&storage, &tenant, &meta).await, None);
    assert_eq!(values(&server, "span.tier").await, (strings(&["free", "gold", "legacy"]), None));
    assert_eq!(values(&server, "resource.service.name").await.0, strings(&["old", "shop"]));
    server.spanlake.shutdown().await;

    // One byte to read: only the newest block of those to read answers, and
    // the response says the answer is partial.
    let server = TestServer::start_with(|a| a.querier.max_tag_scan_bytes = 1).await;
    server.ingest(None, vec![resource_spans(Some("shop"), vec![], spans(0, now - 2 * HOUR))]).await;
    server.ingest(None, vec![resource_spans(Some("shop"), vec![], spans(5000, now - HOUR))]).await;
    // The newest block is read in full; of the older one, the values its
    // summary kept before it overflowed.
    let (found, partial) = values(&server, "span.user.id").await;
    let found: BTreeSet<String> = found.into_iter().collect();
    assert!(expected(5000).iter().all(|u| found.contains(u)), "{partial:?}");
    assert_eq!(found.len(), users as usize + MAX_VALUES_PER_KEY);
    assert!(found.iter().all(|u| expected(0).contains(u) || expected(5000).contains(u)));
    let partial = partial.expect("a partial answer");
    assert!(partial.contains("--max-tag-scan-bytes") && partial.contains("newest 1 of 2"), "{partial}");
    // Keys within the bound still answer from the summaries, in full.
    assert_eq!(values(&server, "span.tier").await, (strings(&["free", "gold"]), None));
    let with_filter = {
        let range = range();
        let mut params: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
        params.push(("q", "{ span.tier = \"gold\" }"));
        get(&server, "/api/v2/search/tag/span.tier/values", &params).await
    };
    assert_eq!(with_filter.0["tagValues"], json!([{"type": "string", "value": "gold"}]));
    assert!(with_filter.1.is_some(), "a filtered read is bounded too");
    server.spanlake.shutdown().await;
}
