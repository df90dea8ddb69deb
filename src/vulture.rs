//! `spanlake vulture`: a consistency checker for a running cluster, in the
//! spirit of Tempo's vulture.
//!
//! It writes small traces continuously through the OTLP endpoints (gRPC),
//! and remembers those that were acknowledged. After `--read-delay` it reads
//! each one back by id from every query URL, and finds it by TraceQL search.
//! Each span must come back exactly once:
//!
//! - **missing**: an acknowledged span that is still not answered after
//!   `--give-up-after` (a durability failure);
//! - **duplicated**: a span answered more than once (a de-duplication failure);
//! - **unexpected**: a span in the trace that was never written;
//! - **late**: a span missing at the first read but answered before giving up
//!   (visibility slower than `--read-delay`);
//! - **search missing**: a complete trace that search does not find.
//!
//! Every outcome is a Prometheus counter (`/metrics` on `--metrics-addr`) and
//! every failure a log line with the trace id. With `--duration`, it stops
//! writing after that long, settles every trace, prints a summary and exits
//! non-zero if any span was missing, duplicated or unexpected.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData, span};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message as _;
use rand::Rng;
use tonic::transport::Channel;

use crate::units::parse_duration;

/// The service name of every span the vulture writes.
pub const SERVICE: &str = "spanlake-vulture";

/// Flags of `spanlake vulture`.
#[derive(Debug, Clone, clap::Args)]
pub struct VultureArgs {
    /// OTLP/gRPC endpoints to write to, tried in turn (repeat, or comma-separate)
    #[arg(long, env = "SPANLAKE_VULTURE_ENDPOINT", value_delimiter = ',', default_value = "http://127.0.0.1:4317")]
    pub endpoint: Vec<String>,
    /// Query API base URLs to read from; every one must answer every trace (repeat, or comma-separate)
    #[arg(long, env = "SPANLAKE_VULTURE_QUERY_URL", value_delimiter = ',', default_value = "http://127.0.0.1:3200")]
    pub query_url: Vec<String>,
    /// Tenant sent as X-Scope-OrgID on writes and reads
    #[arg(long, env = "SPANLAKE_VULTURE_TENANT")]
    pub tenant: Option<String>,
    /// Time between two written traces
    #[arg(long, env = "SPANLAKE_VULTURE_WRITE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub write_interval: Duration,
    /// How long after its acknowledgement a trace is first read back
    #[arg(long, env = "SPANLAKE_VULTURE_READ_DELAY", default_value = "15s", value_parser = parse_duration)]
    pub read_delay: Duration,
    /// A span still not answered this long after its acknowledgement is missing
    #[arg(long, env = "SPANLAKE_VULTURE_GIVE_UP_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub give_up_after: Duration,
    /// Stop writing after this long, settle every trace, print a summary and
    /// exit (non-zero on any missing, duplicated or unexpected span); default: run forever
    #[arg(long, env = "SPANLAKE_VULTURE_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Where to serve /metrics
    #[arg(long, env = "SPANLAKE_VULTURE_METRICS_ADDR", default_value = "0.0.0.0:3201")]
    pub metrics_addr: SocketAddr,
}

/// A trace the cluster acknowledged: what must come back.
#[derive(Debug, Clone)]
pub struct Written {
    pub trace_id: [u8; 16],
    pub span_ids: Vec<[u8; 8]>,
    /// Its number in this vulture's run (a searchable attribute).
    pub seq: u64,
    /// When it was acknowledged.
    pub acknowledged: Instant,
    /// Its spans' time range, Unix nanoseconds (for search's window).
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What one read of a trace found, span by span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCheck {
    /// Written spans answered exactly once.
    pub once: usize,
    pub missing: usize,
    /// Written spans answered more than once.
    pub duplicated: usize,
    /// Spans answered that were never written.
    pub unexpected: usize,
}

impl SpanCheck {
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

/// Writes the vulture's traces: one run id (a resource attribute), numbered
/// traces, gRPC endpoints tried in turn.
#[derive(Debug)]
pub struct Writer {
    run: String,
    next_seq: u64,
    clients: Vec<TraceServiceClient<Channel>>,
    next_client: usize,
    tenant: Option<String>,
}

impl Writer {
    /// Clients for `endpoints` (connected lazily: an endpoint that is down
    /// now may answer later).
    pub fn new(endpoints: &[String], tenant: Option<String>) -> anyhow::Result<Self> {
        if endpoints.is_empty() {
            bail!("the vulture needs at least one --endpoint");
        }
        let clients = endpoints
            .iter()
            .map(|endpoint| {
                let channel = Channel::from_shared(endpoint.clone())
                    .with_context(|| format!("invalid endpoint {endpoint}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(30))
                    .connect_lazy();
                Ok(TraceServiceClient::new(channel))
            })
            .collect::<anyhow::Result<_>>()?;
        let run = format!("{:016x}", rand::rng().random::<u64>());
        Ok(Self { run, next_seq: 0, clients, next_client: 0, tenant })
    }

    /// This run's id (the `vulture.run` resource attribute of its spans).
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// Writes the next trace, trying each endpoint once; `Ok` only when
    /// one acknowledged it in full.
    pub async fn write(&mut self) -> anyhow::Result<Written> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (request, mut written) = trace(&self.run, seq);
        let mut last_error = None;
        for _ in 0..self.clients.len() {
            let count = self.clients.len();
            let client = &mut self.clients[self.next_client];
            self.next_client = (self.next_client + 1) % count;
            let mut call = tonic::Request::new(request.clone());
            if let Some(tenant) = &self.tenant {
                call.metadata_mut().insert("x-scope-orgid", tenant.parse().context("tenant is not a header value")?);
            }
            match client.export(call).await {
                Ok(response) => {
                    let rejected = response.into_inner().partial_success.map_or(0, |p| p.rejected_spans);
                    if rejected != 0 {
                        bail!("trace {} had {rejected} span(s) rejected", hex::encode(written.trace_id));
                    }
                    written.acknowledged = Instant::now();
                    return Ok(written);
                }
                Err(status) => last_error = Some(status),
            }
        }
        let status = last_error.expect("at least one endpoint");
        bail!(
            "no endpoint acknowledged trace {}: {:?}: {}",
            hex::encode(written.trace_id),
            status.code(),
            status.message()
        )
    }
}

fn string(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(Value::StringValue(value)) }), ..Default::default() }
}

/// Trace `seq` of run `run`: a root and 1 to 5 children, each carrying
/// `vulture.seq`, timed just before now.
fn trace(run: &str, seq: u64) -> (ExportTraceServiceRequest, Written) {
    let mut rng = rand::rng();
    let trace_id: [u8; 16] = rng.random();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64;
    let start = now - 50_000_000;
    let children = rng.random_range(1..=5usize);
    let root_id: [u8; 8] = rng.random();
    let mut spans = Vec::with_capacity(children + 1);
    let seq_attr = KeyValue {
        key: "vulture.seq".into(),
        value: Some(AnyValue { value: Some(Value::IntValue(seq as i64)) }),
        ..Default::default()
    };
    let make = |id: [u8; 8], parent: Option<[u8; 8]>, name: String, offset: u64, length: u64| Span {
        trace_id: trace_id.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: if parent.is_none() { span::SpanKind::Server } else { span::SpanKind::Client } as i32,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + length,
        attributes: vec![seq_attr.clone()],
        ..Default::default()
    };
    spans.push(make(root_id, None, "vulture-root".into(), 0, 40_000_000));
    for child in 0..children {
        let id: [u8; 8] = rng.random();
        spans.push(make(id, Some(root_id), format!("vulture-call-{child}"), 1_000_000 * (child as u64 + 1), 5_000_000));
    }
    let span_ids = spans.iter().map(|s| s.span_id.as_slice().try_into().expect("8 bytes")).collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", SERVICE.into()), string("vulture.run", run.into())],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "spanlake-vulture".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let written =
        Written { trace_id, span_ids, seq, acknowledged: Instant::now(), start_ns: start, end_ns: start + 40_000_000 };
    (request, written)
}

/// Reads `written` back by id from the query API at `base` and counts its
/// spans: each written span must be there exactly once.
pub async fn check_by_id(
    http: &reqwest::Client,
    base: &str,
    tenant: Option<&str>,
    written: &Written,
) -> anyhow::Result<SpanCheck> {
    let url = format!("{}/api/traces/{}", base.trim_end_matches('/'), hex::encode(written.trace_id));
    let mut request = http.get(&url).header("accept", "application/protobuf");
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let answered: Vec<Vec<u8>> = match response.status().as_u16() {
        404 => Vec::new(),
        200 => {
            let data = TracesData::decode(response.bytes().await?).with_context(|| format!("decoding {url}"))?;
            data.resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .map(|s| s.span_id)
                .collect()
        }
        status => bail!("GET {url}: {status}: {}", response.text().await.unwrap_or_default()),
    };
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for id in &answered {
        *counts.entry(id.as_slice()).or_default() += 1;
    }
    let mut check = SpanCheck::default();
    for id in &written.span_ids {
        match counts.remove(id.as_slice()) {
            None => check.missing += 1,
            Some(1) => check.once += 1,
            Some(_) => check.duplicated += 1,
        }
    }
    check.unexpected = counts.values().sum();
    Ok(check)
}

/// Whether TraceQL search at `base` finds `written` (by its run and number).
pub async fn found_by_search(
    http: &reqwest::Client,
    base: &str,
    tenant: Option<&str>,
    run: &str,
    written: &Written,
) -> anyhow::Result<bool> {
    let query = format!("{{ resource.vulture.run = \"{run}\" && span.vulture.seq = {} }}", written.seq);
    let (start, end) = (written.start_ns / 1_000_000_000, written.end_ns / 1_000_000_000 + 1);
    let url = format!("{}/api/search", base.trim_end_matches('/'));
    let mut request = http.get(&url).query(&[
        ("q", query.as_str()),
        ("start", &start.to_string()),
        ("end", &end.to_string()),
        ("limit", "20"),
    ]);
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    let body: serde_json::Value = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    let wanted = hex::encode(written.trace_id);
    let wanted = wanted.trim_start_matches('0');
    Ok(body["traces"].as_array().is_some_and(|traces| {
        traces.iter().any(|t| t["traceID"].as_str().is_some_and(|id| id.trim_start_matches('0') == wanted))
    }))
}

/// The vulture's counters, labelled by query URL where they concern a read.
#[derive(Debug, Default)]
struct Metrics {
    traces_written: Counter,
    write_errors: Counter,
    read_errors: Family<Vec<(String, String)>, Counter>,
    spans_checked: Family<Vec<(String, String)>, Counter>,
    spans_missing: Family<Vec<(String, String)>, Counter>,
    spans_duplicated: Family<Vec<(String, String)>, Counter>,
    spans_unexpected: Family<Vec<(String, String)>, Counter>,
    spans_late: Family<Vec<(String, String)>, Counter>,
    traces_search_missing: Family<Vec<(String, String)>, Counter>,
    traces_unchecked: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    fn register(self: &Arc<Self>, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("spanlake_vulture");
        r.register("traces_written", "Traces the cluster acknowledged", self.traces_written.clone());
        r.register("write_errors", "Traces no endpoint acknowledged", self.write_errors.clone());
        r.register("read_errors", "Reads that failed (retried)", self.read_errors.clone());
        r.register("spans_checked", "Spans settled", self.spans_checked.clone());
        r.register("spans_missing", "Acknowledged spans never answered", self.spans_missing.clone());
        r.register("spans_duplicated", "Spans answered more than once", self.spans_duplicated.clone());
        r.register("spans_unexpected", "Spans answered but never written", self.spans_unexpected.clone());
        r.register("spans_late", "Spans answered only after the read delay", self.spans_late.clone());
        r.register("traces_search_missing", "Complete traces search did not find", self.traces_search_missing.clone());
        r.register("traces_unchecked", "Traces no read succeeded on before giving up", self.traces_unchecked.clone());
    }
}

/// Totals of a run, over every query URL.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub traces_written: u64,
    pub write_errors: u64,
    pub spans_checked: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub late: u64,
    pub search_missing: u64,
    /// Traces no read succeeded on before giving up (the querier failed).
    pub unchecked: u64,
}

/// One trace waiting to be settled at one query URL.
#[derive(Debug)]
struct Pending {
    written: Written,
    url: usize,
    /// Reads so far that found it incomplete.
    misses: u32,
    by_id_done: bool,
}

/// Runs the vulture until `--duration` ends (forever without it).
pub async fn run(args: VultureArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = Arc::clone(&registry);
            async move {
                let mut text = String::new();
                prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode");
                text
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut writer = Writer::new(&args.endpoint, args.tenant.clone())?;
    tracing::info!(run = writer.run_id(), endpoints = ?args.endpoint, query_urls = ?args.query_url, "vulture started");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut next_write = Instant::now();
    loop {
        let writing = args.duration.is_none_or(|d| started.elapsed() < d);
        if !writing && pending.is_empty() {
            break;
        }
        if writing && Instant::now() >= next_write {
            next_write += args.write_interval;
            match writer.write().await {
                Ok(written) => {
                    metrics.traces_written.inc();
                    summary.traces_written += 1;
                    for url in 0..args.query_url.len() {
                        pending.push_back(Pending { written: written.clone(), url, misses: 0, by_id_done: false });
                    }
                }
                Err(error) => {
                    metrics.write_errors.inc();
                    summary.write_errors += 1;
                    tracing::warn!(%error, "write not acknowledged (not expected back)");
                }
            }
        }
        settle_due(&args, &http, writer.run_id(), &metrics, &mut summary, &mut pending).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{summary:#?}");
    if summary.missing + summary.duplicated + summary.unexpected + summary.unchecked > 0 {
        bail!(
            "{} missing, {} duplicated, {} unexpected span(s), {} trace(s) unchecked; see the log",
            summary.missing,
            summary.duplicated,
            summary.unexpected,
            summary.unchecked
        );
    }
    Ok(())
}

/// Reads every pending trace that is due (acknowledged at least
/// `--read-delay` ago, re-read every read delay while incomplete) and settles
/// it: complete, or missing once `--give-up-after` has passed.
async fn settle_due(
    args: &VultureArgs,
    http: &reqwest::Client,
    run: &str,
    metrics: &Metrics,
    summary: &mut Summary,
    pending: &mut VecDeque<Pending>,
) {
    let tenant = args.tenant.as_deref();
    let mut keep = VecDeque::with_capacity(pending.len());
    while let Some(mut item) = pending.pop_front() {
        let age = item.written.acknowledged.elapsed();
        let due = args.read_delay * (item.misses + 1);
        if age < due.min(args.give_up_after) {
            keep.push_back(item);
            continue;
        }
        let base = &args.query_url[item.url];
        let labels = vec![("query_url".to_owned(), base.clone())];
        let trace_id = hex::encode(item.written.trace_id);
        let giving_up = age >= args.give_up_after;
        if !item.by_id_done {
            let check = match check_by_id(http, base, tenant, &item.written).await {
                Ok(check) => check,
                Err(error) => {
                    metrics.read_errors.get_or_create(&labels).inc();
                    if giving_up {
                        // Settled as unchecked: a querier that never answers
                        // must not keep the trace (and a busy retry) forever.
                        metrics.traces_unchecked.get_or_create(&labels).inc();
                        summary.unchecked += 1;
                        tracing::error!(%error, trace_id, query_url = base, "trace could not be read until giving up");
                    } else {
                        tracing::warn!(%error, trace_id, "read failed; retrying");
                        item.misses += 1;
                        keep.push_back(item);
                    }
                    continue;
                }
            };
            if check.missing > 0 && !giving_up {
                item.misses += 1;
                keep.push_back(item);
                continue;
            }
            let spans = item.written.span_ids.len() as u64;
            metrics.spans_checked.get_or_create(&labels).inc_by(spans);
            summary.spans_checked += spans;
            let failures = [
                (check.missing, &metrics.spans_missing, &mut summary.missing, "acknowledged spans missing"),
                (check.duplicated, &metrics.spans_duplicated, &mut summary.duplicated, "spans answered more than once"),
                (check.unexpected, &metrics.spans_unexpected, &mut summary.unexpected, "spans never written answered"),
            ];
            for (count, counter, total, what) in failures {
                if count > 0 {
                    counter.get_or_create(&labels).inc_by(count as u64);
                    *total += count as u64;
                    tracing::error!(trace_id, query_url = base, spans = count, after = ?age, "{what}");
                }
            }
            if check.missing == 0 && item.misses > 0 {
                metrics.spans_late.get_or_create(&labels).inc_by(spans);
                summary.late += spans;
                tracing::warn!(trace_id, query_url = base, after = ?age, "trace complete only after the read delay");
            }
            item.by_id_done = true;
            if check.missing > 0 {
                continue; // no search check for a trace that is not there
            }
        }
        match found_by_search(http, base, tenant, run, &item.written).await {
            Ok(true) => {}
            Ok(false) | Err(_) if !giving_up => {
                item.misses += 1;
                keep.push_back(item);
            }
            Ok(false) => {
                metrics.traces_search_missing.get_or_create(&labels).inc();
                summary.search_missing += 1;
                tracing::error!(trace_id, query_url = base, "search does not find a complete trace");
            }
            Err(error) => {
                metrics.read_errors.get_or_create(&labels).inc();
                metrics.traces_search_missing.get_or_create(&labels).inc();
                summary.search_missing += 1;
                tracing::error!(%error, trace_id, query_url = base, "search failed until giving up");
            }
        }
    }
    *pending = keep;
}
