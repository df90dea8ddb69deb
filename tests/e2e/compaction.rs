//! Compaction end to end: spans written through the real ingest path, merged
//! by the compactor, answered by the querier — exactly once, at every step of
//! an injected crash, with retention, and with three compactor processes
//! sharing a real S3 server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::AsArray;
use futures::TryStreamExt;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prometheus_client::registry::Registry;
use spanlake_compactor::clock::{Clock, ManualClock};
use spanlake_compactor::{Compactor, Config};
use spanlake_schemas::block::encode_block;
use spanlake_schemas::fault::{Fault, Trip, WriteOp};
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{AppendReport, BlockId, BlockMeta, Catalog, SpanBatchBuilder, Storage, TenantId};

use crate::backpressure::faulty_local;
use spanlake_test_support::wait_until;

use crate::common::{TestServer, run_spanlake, s3_flags};
use spanlake_test_support::otlp::trace;

/// (trace id, span id, kind) of a stored span.
type SpanKey = (Vec<u8>, Vec<u8>, String);

const HOUR: u64 = 3_600_000_000_000;

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A compactor config for tests: small fan-in, the injected clock.
pub(crate) fn config(clock: &Arc<ManualClock>) -> Config {
    let mut config = Config::default();
    config.plan.fan_in = 4;
    config.clock = Arc::clone(clock) as Arc<dyn Clock>;
    config
}

pub(crate) async fn compactor(storage: &Storage, config: Config) -> Compactor {
    Compactor::new(config, storage.clone(), None, &mut Registry::default()).await.unwrap()
}

/// The live blocks as a reader starting now sees them (a fresh catalog).
pub(crate) async fn live_blocks(storage: &Storage, tenant: &TenantId) -> Vec<BlockMeta> {
    let catalog = Catalog::new(storage.clone(), Duration::from_secs(120));
    catalog.refresh().await.unwrap();
    catalog.blocks(tenant, |_| true)
}

/// Every span in `blocks`, duplicates included.
async fn spans_in(storage: &Storage, tenant: &TenantId, blocks: &[BlockMeta]) -> Vec<SpanKey> {
    let mut out = Vec::new();
    for meta in blocks {
        let reader = ObjectReader::block(storage, tenant, meta);
        let stream = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader).await.unwrap().build().unwrap();
        let batches: Vec<_> = stream.try_collect().await.unwrap();
        for batch in batches {
            let traces = batch.column_by_name("trace_id").unwrap().as_fixed_size_binary();
            let spans = batch.column_by_name("span_id").unwrap().as_fixed_size_binary();
            let kinds = batch.column_by_name("kind").unwrap().as_string::<i32>();
            for row in 0..batch.num_rows() {
                out.push((traces.value(row).to_vec(), spans.value(row).to_vec(), kinds.value(row).to_owned()));
            }
        }
    }
    out
}

fn distinct(spans: &[SpanKey]) -> BTreeSet<SpanKey> {
    spans.iter().cloned().collect()
}

fn multiplicity(spans: &[SpanKey]) -> BTreeMap<SpanKey, usize> {
    let mut counts = BTreeMap::new();
    for span in spans {
        *counts.entry(span.clone()).or_default() += 1;
    }
    counts
}

/// Ingests `traces` traces two hours old (a cold window), one request each,
/// then re-sends two of them as a retrying client would. Returns the spans sent.
async fn ingest_with_retries(server: &TestServer, traces: u8) -> usize {
    let base = now_nanos() - 2 * HOUR;
    for t in 1..=traces {
        server.ingest(None, vec![trace(t, "shop", 2, base + u64::from(t) * 1_000_000)]).await;
    }
    for t in [2, 5] {
        server.ingest(None, vec![trace(t, "shop", 2, base + u64::from(t) * 1_000_000)]).await;
    }
    3 * (usize::from(traces) + 2)
}

/// What the querier answers over every stored copy (`spans_as_stored`):
/// (all spans, distinct spans).
async fn querier_counts(server: &TestServer) -> (u64, u64) {
    table_counts(server, "spans_as_stored").await
}

/// (all spans, distinct spans) of `table` as the querier answers.
async fn table_counts(server: &TestServer, table: &str) -> (u64, u64) {
    server.spanlake.querier().unwrap().catalog().refresh().await.unwrap();
    let query = format!(
        "SELECT count(*) AS n, count(DISTINCT concat(encode(trace_id, 'hex'), encode(span_id, 'hex'), kind)) AS d \
         FROM {table}"
    );
    let rows = server.sql_json(None, &query).await;
    (rows[0]["n"].as_u64().unwrap(), rows[0]["d"].as_u64().unwrap())
}

/// A foreign block and a block of garbage in a cold window: the compactor
/// neither panics nor stalls. It merges the other blocks, leaves the two out
/// (counted in a metric), and retention and the sweep still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_blocks_are_left_out_and_compaction_goes_on() {
    let server = TestServer::start().await;
    let storage = spanlake::storage::open(&crate::common::test_args(&server.dir).storage).unwrap();
    let tenant = TenantId::single();
    let base = now_nanos() - 2 * HOUR;
    for t in 1..=4 {
        server.ingest(None, vec![trace(t, "shop", 2, base + u64::from(t) * 1_000_000)]).await;
    }
    let foreign = crate::bad_blocks::commit_foreign_block_at(&storage, &tenant, base).await;
    // One ingested block becomes garbage of the same length.
    let before = live_blocks(&storage, &tenant).await;
    let victim = before.iter().find(|b| b.id != foreign).unwrap().id.clone();
    let path = server.dir.path().join(format!("v1/single-tenant/blocks/{victim}.parquet"));
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; len]).unwrap();

    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let mut registry = Registry::default();
    let first = Compactor::new(config(&clock), storage.clone(), None, &mut registry).await.unwrap();
    let report = first.run_once().await.unwrap();
    assert_eq!(report.blocks_merged, 3, "the three good blocks merge: {report:?}");
    let after: Vec<BlockId> = live_blocks(&storage, &tenant).await.into_iter().map(|b| b.id).collect();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.contains(&foreign) && after.contains(&victim), "{after:?}");
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(metrics.contains("spanlake_compactor_blocks_unusable 2"), "{metrics}");
    // The next pass plans nothing more for them, and does not fail.
    let report = first.run_once().await.unwrap();
    assert_eq!((report.merges, report.failures), (0, 0), "{report:?}");
    // Retention retires them with the rest (an hour on, with one hour of retention).
    clock.advance(Duration::from_secs(2 * 3600));
    let mut retention = config(&clock);
    retention.retention = Duration::from_secs(3600);
    let later = compactor(&storage, retention).await;
    let report = later.run_once().await.unwrap();
    assert_eq!(report.blocks_expired, 3, "{report:?}");
    assert!(live_blocks(&storage, &tenant).await.is_empty());
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_blocks_hold_every_span_once_in_the_ingest_layout() {
    let server = TestServer::start().await;
    let storage = spanlake::storage::open(&crate::common::test_args(&server.dir).storage).unwrap();
    let tenant = TenantId::single();
    let sent = ingest_with_retries(&server, 12).await;
    let before = live_blocks(&storage, &tenant).await;
    let expected = distinct(&spans_in(&storage, &tenant, &before).await);
    assert_eq!(before.len(), 14, "one block per request");
    assert_eq!(expected.len(), 36);
    assert_eq!(querier_counts(&server).await, (sent as u64, 36));
    // The `spans` table counts a retried span once before compaction too.
    assert_eq!(table_counts(&server, "spans").await, (36, 36));

    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let compactor = compactor(&storage, config(&clock)).await;
    assert!(compactor.uses_leases(), "local files honour conditional creates");
    let report = compactor.run_once().await.unwrap();
    assert_eq!(report.failures, 0);
    assert_eq!(report.duplicates_dropped, 6, "{report:?}");
    // 14 ingest blocks → 4 level-1 blocks (fan-in 4) → 1 level-2 block.
    assert_eq!(report.blocks_merged, 14 + 4, "{report:?}");

    let after = live_blocks(&storage, &tenant).await;
    assert_eq!(after.len(), 1, "a cold window merges into one block: {after:?}");
    let merged = &after[0];
    assert_eq!(merged.span_count, 36);
    assert_eq!(merged.trace_count, 12);
    assert_eq!(merged.compaction_level, 2);
    assert_eq!(merged.sources.len(), 4);
    let spans = spans_in(&storage, &tenant, &after).await;
    assert_eq!(spans.len(), 36, "no duplicates left");
    assert_eq!(distinct(&spans), expected, "no span lost");
    assert_eq!(querier_counts(&server).await, (36, 36));
    for t in 1..=12u8 {
        let found = server.trace(&[t; 16]).await.expect("trace found after compaction");
        assert_eq!(spanlake_test_support::http::spans(&found).len(), 3);
    }

    // Same layout as an ingester block: sorted, page index, bloom filter, sources named.
    let reader = ObjectReader::block(&storage, &tenant, merged);
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await.unwrap();
    let metadata = builder.metadata().clone();
    let row_group = metadata.row_group(0);
    assert!(row_group.sorting_columns().is_some_and(|c| c[0].column_idx == 0));
    assert!(row_group.column(0).bloom_filter_offset().is_some(), "bloom filter on trace_id");
    assert!(metadata.column_index().is_some() && metadata.offset_index().is_some(), "page index");
    let sources = metadata.file_metadata().key_value_metadata().unwrap().iter().find(|kv| kv.key == "spanlake.sources");
    assert_eq!(
        sources.unwrap().value.as_deref().unwrap().split(',').collect::<Vec<_>>(),
        merged.sources.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );

    // Sources stay until the grace period has passed, then go. A retirement
    // is dated by its commit's id, which is real time: the pass above took
    // real seconds, so the grace period counts from those commits, not from
    // where the test's clock started.
    let files = || async { storage.list_all(&Storage::blocks_prefix(&tenant)).await.unwrap().len() };
    assert_eq!(files().await, 14 + 4 + 1);
    let (first, last) = retirements(&storage, &tenant).await;
    clock.set(first + Duration::from_secs(299));
    compactor.run_once().await.unwrap();
    assert_eq!(files().await, 14 + 4 + 1, "deleted before the grace period");
    clock.set(last + Duration::from_secs(301));
    let report = compactor.run_once().await.unwrap();
    assert_eq!(report.blocks_deleted, 14 + 4);
    assert_eq!(files().await, 1);
    assert_eq!(querier_counts(&server).await, (36, 36));
}

/// When the first and the last commit that retired blocks of `tenant` were made.
async fn retirements(storage: &Storage, tenant: &TenantId) -> (SystemTime, SystemTime) {
    let mut dates = Vec::new();
    for path in storage.list_commits(tenant, None).await.unwrap() {
        let record = storage.read_commit(&path).await.unwrap();
        if !record.removed.is_empty() {
            dates.push(UNIX_EPOCH + Duration::from_nanos(record.id.created_unix_nanos() as u64));
        }
    }
    (*dates.iter().min().expect("a commit retired blocks"), *dates.iter().max().unwrap())
}

/// Where a compactor dies, as a [`Trip`]: after the n-th write of a kind to a path.
fn crash_points() -> Vec<(&'static str, Trip)> {
    let trip = |pattern: &str, op, after| Trip { pattern: pattern.into(), op, after };
    vec![
        ("before upload (holding the lease)", trip("/leases/", WriteOp::Put, 1)),
        ("after upload, before commit", trip("/blocks/", WriteOp::Put, 1)),
        ("after commit, before releasing the lease", trip("/commits/", WriteOp::Put, 1)),
        ("during deletion of retired sources", trip("/blocks/", WriteOp::Delete, 3)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_loses_and_doubles_nothing() {
    for (step, trip) in crash_points() {
        let (faulty, storage, dir) = faulty_local();
        let server = TestServer::start_on(storage.clone(), dir, |_| {}).await;
        let tenant = TenantId::single();
        let sent = ingest_with_retries(&server, 8).await;
        let blocks = live_blocks(&storage, &tenant).await;
        let ingested = spans_in(&storage, &tenant, &blocks).await;
        let expected = distinct(&ingested);

        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let first = compactor(&storage, config(&clock)).await;
        let deleting = trip.op == WriteOp::Delete;
        if deleting {
            // Merge first; the crash comes while deleting the sources after the grace period.
            assert_eq!(first.run_once().await.unwrap().failures, 0);
            clock.set(retirements(&storage, &tenant).await.1 + Duration::from_secs(301));
        }
        faulty.trip(trip);
        let crashed = first.run_once().await;
        assert!(faulty.failing(), "{step}: the crash point was reached");
        assert!(crashed.is_err() || crashed.as_ref().unwrap().failures > 0, "{step}: {crashed:?}");
        drop(first);

        // The store as the crash left it: every span exactly as often as some consistent state.
        faulty.set(Fault::None);
        let (all, unique) = querier_counts(&server).await;
        assert_eq!(unique as usize, expected.len(), "{step}: a span is missing");
        assert!(all as usize == sent || all == unique, "{step}: {all} spans answered, {sent} sent, {unique} distinct");
        let live = spans_in(&storage, &tenant, &live_blocks(&storage, &tenant).await).await;
        assert_eq!(distinct(&live), expected, "{step}");

        // A fresh compactor (after the dead one's lease expired) finishes the work.
        clock.advance(Duration::from_secs(121));
        let second = compactor(&storage, config(&clock)).await;
        assert_eq!(second.run_once().await.unwrap().failures, 0, "{step}");
        clock.advance(Duration::from_secs(301));
        assert_eq!(second.run_once().await.unwrap().failures, 0, "{step}");
        let live_blocks_now = live_blocks(&storage, &tenant).await;
        assert_eq!(live_blocks_now.len(), 1, "{step}");
        let live = spans_in(&storage, &tenant, &live_blocks_now).await;
        assert_eq!(live.len(), expected.len(), "{step}: duplicates left");
        assert_eq!(distinct(&live), expected, "{step}");
        assert_eq!(querier_counts(&server).await, (expected.len() as u64, expected.len() as u64), "{step}");
        let files = storage.list_all(&Storage::blocks_prefix(&tenant)).await.unwrap();
        assert_eq!(files.len(), 1, "{step}: retired and orphaned files are deleted: {files:?}");
        server.spanlake.shutdown().await;
    }
}

/// Writes `spans` as one block received at `ingested` (as an ingester then would have).
pub(crate) async fn write_block_received_at(
    storage: &Storage,
    tenant: &str,
    ingested: SystemTime,
    spans: ResourceSpans,
) {
    let mut builder = SpanBatchBuilder::default();
    builder.append_resource_spans(&[spans], &mut AppendReport::default());
    let block = encode_block(&[builder.finish()], BlockId::at(ingested)).unwrap();
    let tenant = TenantId::new(tenant).unwrap();
    storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
    let record = CommitRecord { id: BlockId::new(), added: vec![block.meta], removed: vec![] };
    storage.commit(&tenant, &record).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_old_blocks_per_tenant_and_keeps_the_rest() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let storage = spanlake::storage::open(&crate::common::test_args(&server.dir).storage).unwrap();
    let now = SystemTime::now();
    let ago = |secs: u64| now - Duration::from_secs(secs);
    let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let (hour, day) = (3600, 24 * 3600);
    // Tenant "a": spans 20 and 10 days old, received then; spans 20 days old
    // received an hour ago (a replay); spans an hour old. Tenant "b": 2 days old.
    write_block_received_at(&storage, "a", ago(20 * day), trace(1, "shop", 1, ns(ago(20 * day)))).await;
    write_block_received_at(&storage, "a", ago(10 * day), trace(2, "shop", 1, ns(ago(10 * day)))).await;
    write_block_received_at(&storage, "a", ago(hour), trace(3, "shop", 1, ns(ago(20 * day)))).await;
    write_block_received_at(&storage, "a", ago(hour), trace(4, "shop", 1, ns(ago(hour)))).await;
    write_block_received_at(&storage, "b", ago(2 * day), trace(5, "shop", 1, ns(ago(2 * day)))).await;
    let traces = |tenant: &'static str| {
        let server = &server;
        async move {
            server.spanlake.querier().unwrap().catalog().refresh().await.unwrap();
            let mut found = vec![];
            for t in 1..=5u8 {
                let addr = server.spanlake.http_addr();
                if spanlake_test_support::http::fetch_trace(&server.http, addr, &[t; 16], Some(tenant)).await.is_some()
                {
                    found.push(t);
                }
            }
            found
        }
    };
    assert_eq!(traces("a").await, vec![1, 2, 3, 4]);
    assert_eq!(traces("b").await, vec![5]);

    let clock = Arc::new(ManualClock::new(now));
    let mut config = config(&clock);
    config.tenant_retention.insert(TenantId::new("b").unwrap(), Duration::from_secs(day));
    let compactor = compactor(&storage, config).await;
    let report = compactor.run_once().await.unwrap();
    assert_eq!(report.blocks_expired, 2, "a's 20-day-old block and b's 2-day-old one (1-day retention)");
    assert_eq!(traces("a").await, vec![2, 3, 4]);
    assert!(traces("b").await.is_empty());

    // Five days on, the 10-day-old trace crosses 14 days; the replayed and recent ones stay.
    clock.advance(Duration::from_secs(5 * day));
    compactor.run_once().await.unwrap();
    assert_eq!(traces("a").await, vec![3, 4]);
    // A query over the boundary answers exactly what is left.
    let rows = server.sql_json(Some("a"), "SELECT count(*) AS n FROM spans").await;
    assert_eq!(rows[0]["n"], 4);
    // Expired files are deleted after the grace period.
    clock.advance(Duration::from_secs(301));
    compactor.run_once().await.unwrap();
    let files = storage.list_all(&Storage::blocks_prefix(&TenantId::new("a").unwrap())).await.unwrap();
    assert_eq!(files.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_compactor_processes_share_one_s3_store_while_loadgen_writes() {
    use crate::common::spawn_spanlake;
    let root = tempfile::TempDir::new().unwrap();
    let s3 = crate::storage::start_s3(root.path()).await;
    let storage_args = crate::storage::s3_args(s3, "compaction");
    let storage = spanlake::storage::open(&storage_args).unwrap();
    assert!(spanlake_compactor::lease::probe(&storage).await.unwrap(), "s3s-fs honours If-None-Match");
    let flags = s3_flags(&storage_args);
    let args = |extra: &[&str]| -> Vec<String> { extra.iter().map(|s| s.to_string()).chain(flags.clone()).collect() };

    let ingester_args = args(&["run", "ingester", "--min-flush-interval", "100ms"]);
    let ingester = spawn_spanlake(&ingester_args.iter().map(String::as_str).collect::<Vec<_>>());
    let compactor_args = args(&[
        "run",
        "compactor",
        "--compaction-interval",
        "200ms",
        "--compaction-window",
        "3s",
        "--compaction-cold-after",
        "1s",
        "--compaction-fan-in",
        "2",
    ]);
    let compactor_args: Vec<&str> = compactor_args.iter().map(String::as_str).collect();
    let compactors: Vec<_> = (0..3).map(|_| spawn_spanlake(&compactor_args)).collect();

    // Bounded load: 6 s at 100 traces/s, on loopback.
    let endpoint = format!("http://{}", ingester.grpc.unwrap());
    let args = ["loadgen", "--endpoint", &endpoint, "--rate", "100", "--duration", "6s", "--quiet"];
    let loadgen = run_spanlake(args.map(String::from).to_vec(), Duration::from_secs(60)).await;
    assert!(loadgen.status.success(), "{}", String::from_utf8_lossy(&loadgen.stderr));

    // Wait until every window has settled into one block.
    let tenant = TenantId::single();
    wait_until("every window is compacted into one block", Duration::from_secs(60), || async {
        let live = live_blocks(&storage, &tenant).await;
        spanlake_compactor::plan::by_window(live, Duration::from_secs(3)).values().all(|w| w.len() == 1)
    })
    .await;
    let live = live_blocks(&storage, &tenant).await;
    drop(compactors);
    drop(ingester);

    // No block was retired twice, so none was merged twice.
    let mut commits = Vec::new();
    for path in storage.list_commits(&tenant, None).await.unwrap() {
        commits.push(storage.read_commit(&path).await.unwrap());
    }
    let mut retired = BTreeMap::new();
    for commit in &commits {
        for id in &commit.removed {
            *retired.entry(id.clone()).or_insert(0) += 1;
        }
    }
    assert!(!retired.is_empty(), "the compactors merged something");
    assert!(retired.values().all(|n| *n == 1), "a block was retired twice: {retired:?}");

    // Exactly the spans that were acknowledged (the ingest blocks), none doubled.
    let ingested: Vec<BlockMeta> =
        commits.iter().flat_map(|c| c.added.iter()).filter(|b| b.compaction_level == 0).cloned().collect();
    let ingested = spans_in(&storage, &tenant, &ingested).await;
    let answered = spans_in(&storage, &tenant, &live).await;
    assert!(ingested.len() > 3000, "loadgen wrote {} spans", ingested.len());
    assert_eq!(distinct(&answered), distinct(&ingested), "a span was lost");
    let (sent, kept) = (multiplicity(&ingested), multiplicity(&answered));
    assert!(kept.iter().all(|(span, n)| *n <= sent[span]), "a span was doubled");
    assert!(live.len() <= 4, "6 s of 3 s windows settle into at most 4 blocks, not {}", live.len());

    // Who did the work: the holders named in the windows' newest lease generations.
    let mut owners = BTreeSet::new();
    for lease in storage.list_all(&Storage::leases_prefix(&tenant, "")).await.unwrap() {
        if let Some(bytes) = storage.get_if_exists(&lease.location).await.unwrap() {
            let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            owners.insert(record["owner"].as_str().unwrap().to_owned());
        }
    }
    let merges = commits.iter().filter(|c| !c.removed.is_empty()).count();
    eprintln!(
        "{merges} merges of {} blocks by {} compactors; {} spans ingested, {} live blocks",
        retired.len(),
        owners.len(),
        ingested.len(),
        live.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_process_compacts_in_the_background_and_reports_metrics() {
    let server = TestServer::start_with(|a| {
        a.all_in_one.compaction = true;
        a.compactor.compaction_interval = Duration::from_millis(200);
        a.compactor.compaction_fan_in = 4;
    })
    .await;
    let sent = ingest_with_retries(&server, 6).await;
    let catalog = server.spanlake.querier().unwrap().catalog();
    // The compactor's commits reach the querier at once (no refresh needed).
    wait_until("compacted in the background", Duration::from_secs(30), || async {
        catalog.blocks(&TenantId::single(), |_| true).len() == 1
    })
    .await;
    assert_eq!(querier_counts(&server).await, (18, 18), "{sent} sent, 18 distinct");
    // Gauges are set at the end of a pass, a moment after its commit is visible: wait for them.
    let settled = |metrics: &str| {
        let levels: Vec<&str> = metrics.lines().filter(|l| l.starts_with("spanlake_compactor_blocks{")).collect();
        levels.len() == 1 && levels[0].ends_with("} 1") && metrics.contains("spanlake_compactor_pending_merges 0")
    };
    let metrics =
        || async { server.http.get(server.query_url("/metrics")).send().await.unwrap().text().await.unwrap() };
    wait_until("the gauges settle", Duration::from_secs(30), || async { settled(&metrics().await) }).await;
    let metrics = metrics().await;
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("spanlake_compactor_merges_total") >= 2.0);
    assert_eq!(value("spanlake_compactor_duplicates_dropped_total"), 6.0);
    assert!(value("spanlake_compactor_written_bytes_total") > 0.0);
    // One live block (at whichever level the passes, racing ingest, brought it to), nothing pending.
    assert!(metrics.contains("spanlake_compactor_lag_seconds 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_once_runs_one_pass_and_exits() {
    let server = TestServer::start().await;
    ingest_with_retries(&server, 6).await;
    let dir = server.dir.path().to_str().unwrap().to_owned();
    let args = ["compact", "--once", "--storage", &dir, "--compaction-fan-in", "4"];
    let output = run_spanlake(args.map(String::from).to_vec(), Duration::from_secs(60)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("merges: 3"), "8 blocks → 2 → 1: {stdout}");
    assert!(stdout.contains("duplicates_dropped: 6"), "{stdout}");
    assert_eq!(querier_counts(&server).await, (18, 18));
    assert_eq!(server.spanlake.querier().unwrap().catalog().blocks(&TenantId::single(), |_| true).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_let_old_commits_go_without_changing_what_readers_see() {
    let dir = tempfile::TempDir::new().unwrap();
    let storage =
        spanlake::storage::open(&spanlake::storage::StorageArgs::local(dir.path().to_str().unwrap())).unwrap();
    let tenant = TenantId::single();
    let now = SystemTime::now();
    let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    // Two hours of history, one commit a minute (ids stamped then), then a fresh one.
    for minute in 0..120u64 {
        let at = now - Duration::from_secs(7200 - minute * 60);
        let spans = trace((minute % 250) as u8 + 1, "shop", 1, ns(at));
        let mut builder = SpanBatchBuilder::default();
        builder.append_resource_spans(&[spans], &mut AppendReport::default());
        let block = encode_block(&[builder.finish()], BlockId::at(at)).unwrap();
        storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
        let record = CommitRecord { id: BlockId::at(at), added: vec![block.meta], removed: vec![] };
        storage.commit(&tenant, &record).await.unwrap();
    }
    write_block_received_at(&storage, "single-tenant", now, trace(251, "shop", 1, ns(now))).await;
    // The history above was stored just now, whatever its ids say: a commit
    // goes only once the store dates it a lookback before the listing the
    // checkpoint reflects. A 1 s lookback (the same for every process), and
    // a wait, make that true.
    let lookback = Duration::from_secs(1);
    let early_reader = Catalog::new(storage.clone(), lookback);
    early_reader.refresh().await.unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let mut config = config(&clock);
    config.commit_lookback = lookback;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let compactor = compactor(&storage, config).await;
    let report = compactor.run_once().await.unwrap();
    assert_eq!((report.checkpoints, report.commits_deleted), (1, 0), "{report:?}");
    // The running reader refreshes during the grace period below (every few
    // seconds in a querier), so it has read the merges before they can go.
    early_reader.refresh().await.unwrap();
    // A checkpoint a grace period old lets the commits it covers go (the
    // interval is 10 min; ids carry real time, a little past `now`).
    clock.advance(Duration::from_secs(700));
    let report = compactor.run_once().await.unwrap();
    assert_eq!(report.checkpoints, 1);
    let commits_left = storage.list_commits(&tenant, None).await.unwrap().len();
    // All of the two hours of history (the fresh commit is within twice the lookback).
    assert!(report.commits_deleted >= 116, "{report:?}, {commits_left} commits left");

    // A new reader (from the checkpoint) and one that was running all along
    // agree with the compactor on what is live, and so on every span.
    let expected = spans_in(&storage, &tenant, &compactor_live(&storage, &tenant).await).await;
    let fresh = live_blocks(&storage, &tenant).await;
    early_reader.refresh().await.unwrap();
    let early = early_reader.blocks(&tenant, |_| true);
    assert_eq!(fresh, early);
    assert_eq!(distinct(&spans_in(&storage, &tenant, &fresh).await), distinct(&expected));
    assert_eq!(distinct(&expected).len(), 121 * 2);
}

/// The live set by reading the whole remaining commit log over the newest checkpoint.
async fn compactor_live(storage: &Storage, tenant: &TenantId) -> Vec<BlockMeta> {
    let checkpoint = storage.newest_checkpoint(tenant).await.unwrap().expect("a checkpoint");
    let mut live: BTreeMap<BlockId, BlockMeta> = checkpoint.live.into_iter().map(|b| (b.id.clone(), b)).collect();
    let mut removed: BTreeSet<BlockId> = checkpoint.removed.into_iter().map(|(b, _)| b).collect();
    for path in storage.list_commits(tenant, None).await.unwrap() {
        let record = storage.read_commit(&path).await.unwrap();
        removed.extend(record.removed.iter().cloned());
        live.extend(record.added.into_iter().map(|b| (b.id.clone(), b)));
    }
    live.into_values().filter(|b| !removed.contains(&b.id)).collect()
}

/// A commit whose block never landed (its ingester died between the two puts
/// it makes at once) does not stall its window: once the block is older than
/// the lookback, the compactor retires it and merges the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_block_that_never_landed_is_retired_and_the_window_merges() {
    let dir = tempfile::TempDir::new().unwrap();
    let storage =
        spanlake::storage::open(&spanlake::storage::StorageArgs::local(dir.path().to_str().unwrap())).unwrap();
    let tenant = TenantId::single();
    let now = SystemTime::now();
    let at = now - Duration::from_secs(2 * 3600);
    let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    for t in 1..=4u8 {
        write_block_received_at(&storage, "single-tenant", at, trace(t, "shop", 1, ns(at))).await;
    }
    // The lost block: same window, committed, never written.
    let mut builder = SpanBatchBuilder::default();
    builder.append_resource_spans(&[trace(5, "shop", 1, ns(at))], &mut AppendReport::default());
    let lost = encode_block(&[builder.finish()], BlockId::at(at)).unwrap().meta;
    storage
        .commit(&tenant, &CommitRecord { id: BlockId::new(), added: vec![lost.clone()], removed: vec![] })
        .await
        .unwrap();

    let clock = Arc::new(ManualClock::new(now));
    let compactor = compactor(&storage, config(&clock)).await;
    let mut merged = false;
    for _ in 0..3 {
        let report = compactor.run_once().await.unwrap();
        merged |= report.merges > 0;
    }
    assert!(merged, "the window merged");
    let live = live_blocks(&storage, &tenant).await;
    assert!(live.iter().all(|b| b.id != lost.id), "the lost block is retired: {live:?}");
    assert_eq!(distinct(&spans_in(&storage, &tenant, &live).await).len(), 4 * 2);
}

/// A commit that lands while a sweep is listing does not make its block look
/// orphaned. The sweep judges an upload by when its listing of the commit log
/// began: judged by when it reached the file, a sweep that ran longer than the
/// grace period deleted blocks committed meanwhile (the chaos test found
/// acknowledged spans lost that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lands_during_a_sweep_keeps_its_block() {
    let (faulty, storage, _dir) = crate::backpressure::faulty_local();
    let tenant = TenantId::single();
    // A commit log that is not empty, so that only full listings list it all.
    write_block_received_at(&storage, tenant.as_str(), SystemTime::now(), trace(1, "shop", 1, now_nanos())).await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let config = config(&clock);
    let grace = config.grace;
    let compactor = compactor(&storage, config).await;
    compactor.run_once().await.unwrap();

    // An ingester's upload has landed; its commit is on its way, and lands
    // while the sweep reads the commit log, which takes longer than the grace.
    let mut builder = SpanBatchBuilder::default();
    builder.append_resource_spans(&[trace(2, "shop", 1, now_nanos())], &mut AppendReport::default());
    let block = encode_block(&[builder.finish()], BlockId::new()).unwrap();
    storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
    let record = CommitRecord { id: BlockId::new(), added: vec![block.meta.clone()], removed: vec![] };
    let (late_storage, late_tenant, late_clock) = (storage.clone(), tenant.clone(), Arc::clone(&clock));
    faulty.after_listing(
        "commits",
        Box::new(move || {
            Box::pin(async move {
                late_storage.commit(&late_tenant, &record).await.unwrap();
                late_clock.advance(grace + Duration::from_secs(1));
            })
        }),
    );
    compactor.run_once().await.unwrap();

    let path = Storage::block_path(&tenant, &block.meta.id);
    assert!(storage.get_if_exists(&path).await.unwrap().is_some(), "the sweep deleted a block committed while it ran");
    assert!(live_blocks(&storage, &tenant).await.iter().any(|b| b.id == block.meta.id));
}
