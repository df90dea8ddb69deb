//! Chaos on a cluster of processes: three ingesters, two queriers and two
//! compactors on one S3 server on loopback, under loadgen's load and the
//! vulture's writes, while random processes are killed with SIGKILL and
//! restarted. Then, with the vulture's checks: every acknowledged span is
//! answered exactly once by every querier, compaction converges, and no block
//! that a live commit names is missing. Bounded: 20 s of chaos, a minute to
//! converge.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spanlake::vulture::{self, SpanCheck, Written};
use spanlake_schemas::{Storage, TenantId};
use spanlake_test_support::process::Spawned;
use spanlake_test_support::wait_until;

use crate::common::{s3_flags, spawn_spanlake};

/// How long processes are killed for.
const CHAOS: Duration = Duration::from_secs(20);
/// Time between two kills.
const KILL_EVERY: Duration = Duration::from_millis(1500);
/// The compaction window of the cluster (short, so that a run spans several).
const WINDOW: Duration = Duration::from_secs(5);

/// One process of the cluster, restarted with the same arguments (an
/// ingester on the same OTLP port, so that its clients find it again).
struct Member {
    role: &'static str,
    args: Vec<String>,
    process: Spawned,
}

impl Member {
    fn start(role: &'static str, args: Vec<String>) -> Self {
        let process = spawn_spanlake(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut args = args;
        if let Some(grpc) = process.grpc {
            args.extend(["--otlp-grpc-addr".to_owned(), grpc.to_string()]);
        }
        Self { role, args, process }
    }

    fn kill_and_restart(&mut self) {
        self.process.child.kill().expect("SIGKILL");
        self.process.child.wait().expect("reaped");
        self.process = spawn_spanlake(&self.args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    fn query_url(&self) -> String {
        format!("http://{}", self.process.http)
    }
}

/// Checks every written trace against `querier` until each is answered
/// exactly once, or `timeout` passes; returns the last check of each.
async fn settle(http: &reqwest::Client, querier: &str, written: &[Written], timeout: Duration) -> Vec<SpanCheck> {
    use futures::StreamExt;
    let deadline = Instant::now() + timeout;
    let mut checks = vec![SpanCheck { missing: usize::MAX, ..SpanCheck::default() }; written.len()];
    loop {
        let pending: Vec<usize> = (0..written.len()).filter(|&i| !checks[i].complete()).collect();
        let found: Vec<(usize, Option<SpanCheck>)> = futures::stream::iter(pending)
            .map(|i| async move { (i, vulture::check_by_id(http, querier, None, &written[i]).await.ok()) })
            .buffer_unordered(8)
            .collect()
            .await;
        for (i, check) in found {
            if let Some(check) = check {
                checks[i] = check;
            }
        }
        if checks.iter().all(SpanCheck::complete) || Instant::now() > deadline {
            return checks;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn assert_exactly_once(storage: &Storage, checks: &[SpanCheck], written: &[Written], querier: &str, when: &str) {
    let failed: Vec<(&SpanCheck, &Written)> = checks.iter().zip(written).filter(|(c, _)| !c.complete()).collect();
    if failed.is_empty() {
        return;
    }
    let mut report = Vec::new();
    for (check, trace) in failed.iter().take(5) {
        report.push(format!("{}: {check:?}; {}", hex::encode(trace.trace_id), where_is(storage, trace).await));
    }
    panic!("{when}, querier {querier} does not answer every span once ({} traces): {report:#?}", failed.len());
}

/// Where a trace's spans are in the store: which block files hold them, and
/// whether a fresh catalog has those blocks live.
async fn where_is(storage: &Storage, trace: &Written) -> String {
    use arrow::array::AsArray;
    use futures::TryStreamExt;
    let tenant = TenantId::single();
    let live: std::collections::BTreeSet<_> = live_blocks(storage, &tenant).await.into_iter().map(|b| b.id).collect();
    let mut found = Vec::new();
    for object in storage.list_all(&Storage::blocks_prefix(&tenant)).await.unwrap() {
        let reader = spanlake_schemas::reader::ObjectReader::new(
            storage.object_store().clone(),
            object.location.clone(),
            object.size,
        );
        let Ok(builder) = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader).await else { continue };
        let batches: Vec<_> = builder.build().unwrap().try_collect().await.unwrap_or_default();
        let rows: usize = batches
            .iter()
            .map(|b| {
                let ids = b.column_by_name("trace_id").unwrap().as_fixed_size_binary();
                (0..b.num_rows()).filter(|&r| ids.value(r) == trace.trace_id).count()
            })
            .sum();
        if rows > 0 {
            let id = spanlake_schemas::storage::id_in(&object.location, "parquet");
            let is_live = id.as_ref().is_some_and(|id| live.contains(id));
            found.push(format!("{} ({rows} rows, live: {is_live})", object.location));
        }
    }
    format!("in blocks {found:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_processes_lose_and_double_nothing() {
    let root = tempfile::TempDir::new().unwrap();
    let s3 = crate::storage::start_s3(root.path()).await;
    let storage_args = crate::storage::s3_args(s3, "chaos");
    let storage = spanlake::storage::open(&storage_args).unwrap();
    let flags = s3_flags(&storage_args);
    // Every process shares the lookback (a commit whose block never landed
    // is retired once older than it).
    let args = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(flags.clone())
            .chain(["--commit-lookback".into(), "10s".into()])
            .collect()
    };
    let window = format!("{}s", WINDOW.as_secs());
    let mut cluster: Vec<Member> = Vec::new();
    for _ in 0..3 {
        cluster.push(Member::start("ingester", args(&["run", "ingester", "--min-flush-interval", "400ms"])));
    }
    for _ in 0..2 {
        cluster.push(Member::start("querier", args(&["run", "querier", "--refresh-interval", "200ms"])));
    }
    for _ in 0..2 {
        let compactor = args(&[
            "run",
            "compactor",
            "--compaction-interval",
            "300ms",
            "--compaction-window",
            &window,
            "--compaction-cold-after",
            "1s",
            "--compaction-fan-in",
            "8",
            "--compactor-lease-ttl",
            "3s",
            // Above the ingesters' flush timeout (5 s): an upload's commit
            // lands within it, and a sweep judges orphans by it.
            "--deletion-grace",
            "10s",
            "--checkpoint-interval",
            "3s",
        ]);
        cluster.push(Member::start("compactor", compactor));
    }
    let endpoints: Vec<String> = cluster.iter().filter_map(|m| m.process.grpc.map(|a| format!("http://{a}"))).collect();

    // Background load: one loadgen per ingester, bounded in time, retrying.
    let load_for = format!("{}s", CHAOS.as_secs() + 2);
    let mut loadgens: Vec<Child> = endpoints
        .iter()
        .map(|endpoint| {
            Command::new(env!("CARGO_BIN_EXE_spanlake"))
                .args(["loadgen", "--endpoint", endpoint, "--rate", "60", "--concurrency", "2", "--batch", "5"])
                .args(["--duration", &load_for, "--max-retries", "20", "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("loadgen starts")
        })
        .collect();

    // The vulture's writers: four at once, each trace to the next ingester
    // (another one when that one is down).
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                let mut writer = vulture::Writer::new(&endpoints, None).unwrap();
                let (mut written, mut failed) = (Vec::new(), 0);
                let started = Instant::now();
                while started.elapsed() < CHAOS {
                    match writer.write().await {
                        Ok(trace) => written.push(trace),
                        Err(_) => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (written, failed, writer.run_id().to_owned())
            })
        })
        .collect();

    // Chaos: kill -9 a random process, restart it, again.
    let seed = rand::random::<u64>();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < CHAOS {
        tokio::time::sleep(KILL_EVERY).await;
        let victim = rng.random_range(0..cluster.len());
        let member = &mut cluster[victim];
        *kills.entry(member.role).or_default() += 1;
        tokio::task::block_in_place(|| member.kill_and_restart());
    }
    let (mut written, mut write_failures, mut runs) = (Vec::new(), 0, Vec::new());
    for writer in writers {
        let (traces, failed, run) = writer.await.unwrap();
        runs.push((run, traces.len()));
        written.extend(traces);
        write_failures += failed;
    }
    for loadgen in &mut loadgens {
        let deadline = Instant::now() + Duration::from_secs(60);
        while loadgen.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "loadgen stops by itself");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(written.len() > 100, "the vulture wrote {} traces ({write_failures} not acknowledged)", written.len());

    // Every acknowledged span, exactly once, from every querier.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let queriers: Vec<String> = cluster.iter().filter(|m| m.role == "querier").map(Member::query_url).collect();
    for querier in &queriers {
        let checks = settle(&http, querier, &written, Duration::from_secs(30)).await;
        assert_exactly_once(&storage, &checks, &written, querier, "after the chaos").await;
    }

    // Compaction converges: every window in one block, and every block a
    // live commit names is there.
    let tenant = TenantId::single();
    wait_until("compaction converges and every live block exists", Duration::from_secs(90), || async {
        let live = live_blocks(&storage, &tenant).await;
        let mut all_there = true;
        for meta in &live {
            let path = Storage::block_path(&tenant, &meta.id);
            all_there &= storage.object_store().head(&path).await.is_ok();
        }
        all_there && spanlake_compactor::plan::by_window(live, WINDOW).values().all(|w| w.len() == 1)
    })
    .await;

    // And still exactly once, from every querier, after compaction; search
    // finds a sample of the traces.
    let spans: usize = written.iter().map(|w| w.span_ids.len()).sum();
    for querier in &queriers {
        let checks = settle(&http, querier, &written, Duration::from_secs(30)).await;
        assert_exactly_once(&storage, &checks, &written, querier, "after compaction").await;
        let (run, count) = &runs[0];
        for trace in written.iter().take(*count).step_by(count / 10) {
            let found = vulture::found_by_search(&http, querier, None, run, trace).await.unwrap();
            assert!(found, "querier {querier} finds trace {} by search", hex::encode(trace.trace_id));
        }
    }
    eprintln!(
        "chaos (seed {seed}): {} kills {kills:?} over {:?}; {} traces ({spans} spans) acknowledged, {write_failures} \
         not; each answered exactly once by {} queriers, before and after compaction",
        kills.values().sum::<usize>(),
        CHAOS,
        written.len(),
        queriers.len()
    );
}

/// The live blocks as a reader starting now sees them (a fresh catalog).
async fn live_blocks(storage: &Storage, tenant: &TenantId) -> Vec<spanlake_schemas::BlockMeta> {
    let catalog = spanlake_schemas::Catalog::new(storage.clone(), Duration::from_secs(10));
    catalog.refresh().await.unwrap();
    catalog.blocks(tenant, |_| true)
}
