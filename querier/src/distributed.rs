//! Queries spread over several queriers, on `datafusion-distributed` (pinned
//! exactly in the workspace; this module is the only one that uses it).
//!
//! ```text
//!  coordinating querier                          every querier (worker port)
//!  SQL ─▶ plan ─▶ SpansScanExec (all the work)   Arrow Flight: a stage's plan in,
//!         distributed planner: stages, tasks ──▶ its record batches out
//!         each task: SpansScanExec with a share of the work (pieces of blocks,
//!         trace-id bands of the blocks that can share spans)
//! ```
//!
//! The scan is the unit that divides. The coordinating querier prunes the
//! blocks and decides the pieces; each task gets whole pieces: byte ranges of
//! blocks read in parallel, and trace-id bands of blocks that can share a
//! span, each band merged in trace order so that a span stored twice is read
//! once (copies of a span share its trace, so they fall in one band).
//! Partial aggregates run where the scan runs; the coordinator merges them.
//!
//! Never a wrong answer: a query that fails while spread runs again, within
//! the same deadline: spread over the queriers left when one it used has
//! died or stopped answering (probes find it silent, and a query waiting on
//! it stops waiting), else here alone. Each
//! task runs under its own memory pool of `--sql-memory-limit`; a task stops
//! when its coordinator goes away (its streams are dropped), so the deadline
//! holds there too. Tenants: a task reads only the blocks the coordinator's
//! catalog gave it, named by tenant and block id.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use base64::Engine as _;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{AggregateUDF, LogicalPlan, ScalarUDF};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, Worker, WorkerQueryContext, WorkerResolver,
};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{
    DefaultPhysicalExtensionCodec, PhysicalExtensionCodec, PhysicalProtoConverterExtension,
};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use prost::Message;
use serde::{Deserialize, Serialize};
use spanlake_schemas::{BlockMeta, TenantId};
use url::Url;

use crate::Querier;
use crate::error::{QueryError, Result as QueryResult};
use crate::fanout::{Analysis, FanoutParams, FanoutSource, MergeRows, Parents, Part};
use crate::start_window::StartWindow;
use crate::table::{Piece, ScanSpec, Spread, Work, projected_schema, table_schema};

/// Queriers a query may spread over.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Every querier's worker address, this one's included: `http://host:port`,
    /// `dns://name:port` for every address a name resolves to (a Kubernetes
    /// headless Service), or `file:///path` for the entries in a file, one
    /// per line, read again at every refresh. Empty: every query runs locally.
    pub peers: Vec<String>,
    /// Scans of fewer block bytes run locally; each task of a spread scan
    /// gets about this many bytes or more.
    pub min_bytes: u64,
    /// A secret every querier of the cluster shares: sent with each share,
    /// and a share without it is refused (None: none is asked).
    pub secret: Option<String>,
    /// Whether Arrow batches travel between queriers LZ4-compressed (false:
    /// as they are). A spread fan-out's statistics always travel as they
    /// are: they are packed already.
    pub lz4: bool,
}

/// The header that carries [`ClusterConfig::secret`] between queriers.
const SECRET_HEADER: &str = "x-spanlake-worker-secret";

/// Whether `given` is `secret`, comparing every byte (no early exit).
fn secret_matches(secret: &str, given: &[u8]) -> bool {
    let secret = secret.as_bytes();
    secret.len() == given.len() && secret.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The headers a querier sends with each share: the cluster's secret.
fn passthrough(secret: Option<&str>) -> Result<axum::http::HeaderMap> {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(secret) = secret {
        let value = axum::http::HeaderValue::from_str(secret)
            .map_err(|_| DataFusionError::Configuration("the worker secret is not a valid header value".into()))?;
        headers.insert(SECRET_HEADER, value);
    }
    Ok(headers)
}

/// How long a peer may take to accept a connection before it is left out.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a connected peer may take to answer a probe before it is left
/// out: a process that is stopped (or whose runtime is stuck) still accepts
/// connections, its kernel completing them, but answers nothing.
const PEER_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Trace-id bands per task: a task's share of merged rows is read by this
/// many merges at once.
const BANDS_PER_TASK: usize = 2;
/// Most trace-id bands a group of blocks is cut into, however many peers:
/// each band holds a piece of every block of the group, and the plan sent
/// to the peers grows with bands × blocks.
const MAX_BANDS: usize = 64;
/// Largest request a worker accepts: a plan of one share.
const MAX_PLAN_BYTES: usize = 64 << 20;

/// The live peers: those of the configured list that answer a probe and
/// run shares of this querier's build, refreshed in the background (the
/// resolver is asked synchronously). Queries spread over them watch the
/// list, and run again (over the peers left, or here) when a peer drops
/// out of it while they run (see [`Querier::unless_a_peer_stalls`] and
/// [`Querier::spread_runs`]).
#[derive(Debug, Clone)]
pub(crate) struct Peers {
    configured: Arc<Vec<String>>,
    live: Arc<tokio::sync::watch::Sender<Vec<Url>>>,
    /// How many are live (`spanlake_querier_peers_live`).
    count: prometheus_client::metrics::gauge::Gauge,
    /// Peers that answered but will not run this querier's shares (another
    /// build), and why: each is logged when it first answers so.
    other: Arc<std::sync::Mutex<std::collections::HashMap<Url, String>>>,
    /// A connection to each peer that answered the last probe.
    channels: Arc<std::sync::Mutex<std::collections::HashMap<Url, tonic::transport::Channel>>>,
}

impl Peers {
    pub(crate) fn new(configured: Vec<String>, count: prometheus_client::metrics::gauge::Gauge) -> Self {
        let live = Arc::new(tokio::sync::watch::channel(Vec::new()).0);
        Self { configured: Arc::new(configured), live, count, other: Arc::default(), channels: Arc::default() }
    }

    pub(crate) fn live(&self) -> Vec<Url> {
        self.live.borrow().clone()
    }

    /// Resolves and probes every configured peer once, all at once: at
    /// worst (every peer silent) it takes one resolve and one probe timeout.
    pub(crate) async fn refresh(&self) {
        let mut urls = Vec::new();
        for entry in self.configured.iter() {
            urls.extend(resolve(entry).await);
        }
        // Each peer's connection is kept from one probe to the next while
        // it answers (a probe on it costs a request, not a handshake).
        let channels = std::mem::take(&mut *self.channels.lock().expect("peers lock"));
        let probes = urls.into_iter().filter_map(|url| {
            let channel = channels.get(&url).cloned().or_else(|| channel_to(&url))?;
            Some(async move { (probe(channel.clone(), SHARE_PROTOCOL).await, url, channel) })
        });
        let mut live = Vec::new();
        let mut other = std::collections::HashMap::new();
        let mut answering = std::collections::HashMap::new();
        for (probed, url, channel) in futures::future::join_all(probes).await {
            match probed {
                Probed::Live => {
                    answering.insert(url.clone(), channel);
                    live.push(url);
                }
                Probed::Silent => {}
                Probed::Other(why) => {
                    answering.insert(url.clone(), channel);
                    other.insert(url, why);
                }
            }
        }
        *self.channels.lock().expect("peers lock") = answering;
        live.sort();
        live.dedup();
        {
            let mut known = self.other.lock().expect("peers lock");
            for (url, why) in &other {
                if known.get(url) != Some(why) {
                    tracing::warn!(peer = %url, answer = %why, "a querier peer will not run this querier's shares");
                }
            }
            *known = other;
        }
        self.count.set(live.len() as i64);
        self.live.send_if_modified(|listed| {
            for gone in listed.iter().filter(|peer| !live.contains(peer)) {
                tracing::warn!(peer = %gone, "a querier peer is no longer listed: queries no longer spread to it");
            }
            for back in live.iter().filter(|peer| !listed.contains(peer)) {
                tracing::info!(peer = %back, "a querier peer answers: queries may spread to it");
            }
            let changed = *listed != live;
            *listed = live;
            changed
        });
    }

    /// Refreshes the live list every `interval`, for as long as the task runs.
    pub(crate) fn spawn_refresh(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let peers = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                peers.refresh().await;
            }
        })
    }

    /// A watch over the live list from now on.
    fn watch(&self) -> PeerWatch {
        let mut live = self.live.subscribe();
        let seen = live.borrow_and_update().clone();
        PeerWatch { live, seen }
    }
}

/// The peers listed live since a watch began, to see one drop out.
struct PeerWatch {
    live: tokio::sync::watch::Receiver<Vec<Url>>,
    seen: Vec<Url>,
}

impl PeerWatch {
    /// Resolves with a peer listed live before that a refresh has left out
    /// (it stopped answering, or its name no longer resolves to it).
    async fn dropped(&mut self) -> Url {
        loop {
            if self.live.changed().await.is_err() {
                // The list is never refreshed again: nothing can drop out.
                return std::future::pending().await;
            }
            let live = self.live.borrow_and_update().clone();
            let gone = self.seen.iter().find(|peer| !live.contains(peer)).cloned();
            self.seen = live;
            if let Some(gone) = gone {
                return gone;
            }
        }
    }
}

/// What a querier's shares are made of, for its peers. Bump the number
/// when a share's plan, its codec, or the analyses a share returns change
/// encoding: queriers of two builds (a rolling upgrade) then do not list
/// each other, and each spreads its queries over queriers of its own build,
/// instead of spreading, failing on the other build's peers, and running
/// again alone.
const SHARE_PROTOCOL: &str = concat!("spanlake ", env!("CARGO_PKG_VERSION"), ", shares 1");

/// A channel to the querier at `url`, connecting when first used (None
/// when `url` cannot be one).
fn channel_to(url: &Url) -> Option<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).ok()?;
    Some(endpoint.connect_timeout(PEER_CONNECT_TIMEOUT).connect_lazy())
}

/// The header a probe names its querier's [`SHARE_PROTOCOL`] in.
const PROTOCOL_HEADER: &str = "x-spanlake-share-protocol";

/// How a peer answered a probe.
#[derive(Debug, PartialEq)]
enum Probed {
    /// It runs this querier's shares.
    Live,
    /// Nothing in time: down, stopped, stuck, or cut off.
    Silent,
    /// It answered, but would not run this querier's shares (its reason).
    Other(String),
}

/// Probes a querier over `channel`: a gRPC request
/// (`/spanlake.Querier/Probe`, see [`probe::Server`]) naming `protocol`,
/// answered by the worker server's runtime, the one that runs shares,
/// without any work. A connection alone proves nothing: the kernel of a
/// stopped process still accepts it, and a connection made before it
/// stopped stays open.
async fn probe(channel: tonic::transport::Channel, protocol: &str) -> Probed {
    use tonic::codegen::http::uri::PathAndQuery;
    let asked = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.ok()?;
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert(PROTOCOL_HEADER, protocol.parse().ok()?);
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        Some(grpc.unary(request, PathAndQuery::from_static(probe::PATH), codec).await)
    };
    match tokio::time::timeout(PEER_CONNECT_TIMEOUT + PEER_ANSWER_TIMEOUT, asked).await {
        Ok(Some(Ok(_))) => Probed::Live,
        Ok(Some(Err(status))) => match status.code() {
            tonic::Code::FailedPrecondition => Probed::Other(status.message().to_owned()),
            tonic::Code::Unimplemented => Probed::Other("a querier of an older build (it has no probe)".into()),
            _ => Probed::Silent,
        },
        _ => Probed::Silent,
    }
}

/// The probe's side on the worker port.
mod probe {
    use std::task::{Context, Poll};

    use tonic::codegen::{Body, BoxFuture, Service, StdError, http};

    pub(super) const PATH: &str = "/spanlake.Querier/Probe";

    /// Answers a probe: OK when the prober's shares are of `protocol`,
    /// else FAILED_PRECONDITION naming this querier's.
    #[derive(Debug, Clone)]
    pub(super) struct Server {
        pub(super) protocol: &'static str,
    }

    impl tonic::server::NamedService for Server {
        const NAME: &'static str = "spanlake.Querier";
    }

    struct Answer(&'static str);

    impl tonic::server::UnaryService<()> for Answer {
        type Response = ();
        type Future = BoxFuture<tonic::Response<()>, tonic::Status>;

        fn call(&mut self, request: tonic::Request<()>) -> Self::Future {
            let theirs = request.metadata().get(super::PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
            let answer = match theirs {
                Some(theirs) if theirs == self.0 => Ok(tonic::Response::new(())),
                _ => Err(tonic::Status::failed_precondition(format!(
                    "a querier whose shares are {:?}, not {:?}",
                    self.0,
                    theirs.unwrap_or_default()
                ))),
            };
            Box::pin(std::future::ready(answer))
        }
    }

    impl<B> Service<http::Request<B>> for Server
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            let protocol = self.protocol;
            Box::pin(async move {
                if request.uri().path() != PATH {
                    return Ok(tonic::Status::unimplemented("no such method").into_http());
                }
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
                Ok(grpc.unary(Answer(protocol), request).await)
            })
        }
    }
}

/// The worker URLs of one configured peer: itself, one per address its
/// name resolves to (`dns://name:port`), or those of the entries listed in
/// a file, one per line (`file:///path`, read again at every refresh).
async fn resolve(entry: &str) -> Vec<Url> {
    if let Some(path) = entry.strip_prefix("file://") {
        let text = match read_peers_file(path).await {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(%error, peers = path, "cannot read the querier peers file");
                return Vec::new();
            }
        };
        let mut urls = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match check_peer(line) {
                Ok(()) if !line.starts_with("file://") => urls.extend(resolve_one(line).await),
                _ => tracing::warn!(peers = path, line, "not a peer (http://host:port or dns://name:port)"),
            }
        }
        return urls;
    }
    resolve_one(entry).await
}

/// The largest peers file read (a guard against naming something else).
const MAX_PEERS_FILE_BYTES: u64 = 1 << 20;
/// How long resolving one name may take.
const PEER_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

async fn read_peers_file(path: &str) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    tokio::fs::File::open(path).await?.take(MAX_PEERS_FILE_BYTES).read_to_string(&mut text).await?;
    Ok(text)
}

async fn resolve_one(entry: &str) -> Vec<Url> {
    match entry.strip_prefix("dns://") {
        Some(name) => match tokio::time::timeout(PEER_RESOLVE_TIMEOUT, tokio::net::lookup_host(name)).await {
            Ok(Ok(addrs)) => addrs.filter_map(|a| Url::parse(&format!("http://{a}")).ok()).collect(),
            Ok(Err(error)) => {
                tracing::warn!(%error, peer = entry, "cannot resolve a querier peer");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(peer = entry, timeout = ?PEER_RESOLVE_TIMEOUT, "resolving a querier peer timed out");
                Vec::new()
            }
        },
        None => Url::parse(entry).ok().into_iter().collect(),
    }
}

/// Checks a peer entry as given in the configuration: `http://host:port`,
/// `dns://name:port` or `file:///path`.
pub fn check_peer(entry: &str) -> std::result::Result<(), String> {
    if let Some(path) = entry.strip_prefix("file://") {
        return match path.starts_with('/') {
            true => Ok(()),
            false => Err(format!("{entry:?}: a peers file is file:///absolute/path")),
        };
    }
    if let Some(name) = entry.strip_prefix("dns://") {
        return match name.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(format!("{entry:?}: a DNS peer is dns://name:port")),
        };
    }
    let url = Url::parse(entry).map_err(|e| format!("{entry:?} is not a URL: {e}"))?;
    match (url.scheme(), url.host_str(), url.port()) {
        ("http", Some(_), Some(_)) => Ok(()),
        _ => Err(format!("{entry:?}: a peer is http://host:port, dns://name:port or file:///path")),
    }
}

impl WorkerResolver for Peers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.live())
    }
}

/// What every leaf plan of ours says the same way: its name, its fixed
/// properties (a `properties` field), no children and no expressions.
macro_rules! leaf_plan {
    ($name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }

        fn properties(&self) -> &Arc<PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            Vec::new()
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
        ) -> Result<TreeNodeRecursion> {
            Ok(TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: Arc<Self>,
            _children: Vec<Arc<dyn ExecutionPlan>>,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            Ok(self)
        }
    };
}

/// A scan of the `spans` table as one leaf, so that the distributed
/// planner can hand each task a share of its [`Work`]. It runs the plan of
/// its work and shows it as a fixed number of partitions (every task's
/// variant must have the same count): partition `i` reads the work's
/// partitions `i`, `i + n`, ….
#[derive(Debug)]
pub(crate) struct SpansScanExec {
    spec: Arc<ScanSpec>,
    work: Work,
    /// About the bytes it reads (of the columns it reads), which set how
    /// many tasks it asks for: its blocks' bytes unless told.
    reads: u64,
    /// The plan of the work, made at the first execution, in the runtime of
    /// the querier that runs it.
    inner: std::sync::OnceLock<Arc<dyn ExecutionPlan>>,
    properties: Arc<PlanProperties>,
}

impl SpansScanExec {
    pub(crate) fn try_new(spec: Arc<ScanSpec>, work: Work) -> Result<Self> {
        let schema: SchemaRef = projected_schema(spec.projection.as_ref())?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(spec.partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let reads = work.bytes();
        Ok(Self { spec, work, reads, inner: std::sync::OnceLock::new(), properties })
    }

    /// The same scan, known to read about `bytes`.
    pub(crate) fn reading(self, bytes: u64) -> Self {
        Self { reads: bytes, ..self }
    }

    /// This scan's work cut into `tasks` shares of about equal bytes.
    fn shares(&self, tasks: usize) -> Vec<Work> {
        let tasks = tasks.max(1);
        let total = self.work.bytes();
        // Pieces read in parallel are cut into byte ranges of at most a
        // quarter of a task's share, so a few large blocks still spread.
        let most = (total / (tasks as u64 * 4)).max(1);
        enum Unit {
            Parallel(Piece),
            Merge(Vec<Piece>),
        }
        let mut units: Vec<(u64, Unit)> = Vec::new();
        for piece in &self.work.parallel {
            for part in piece.cut(piece.bytes.div_ceil(most)) {
                units.push((part.bytes, Unit::Parallel(part)));
            }
        }
        for merge in &self.work.merges {
            units.push((merge.iter().map(|p| p.bytes).sum(), Unit::Merge(merge.clone())));
        }
        units.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        let mut shares: Vec<(u64, Work)> = vec![(0, Work::default()); tasks];
        for (bytes, unit) in units {
            let lightest = shares.iter_mut().min_by_key(|(load, _)| *load).expect("at least one task");
            lightest.0 += bytes;
            match unit {
                Unit::Parallel(piece) => lightest.1.parallel.push(piece),
                Unit::Merge(pieces) => lightest.1.merges.push(pieces),
            }
        }
        shares.into_iter().map(|(_, work)| work).collect()
    }
}

impl DisplayAs for SpansScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SpansScanExec: tenant={}, parallel pieces={}, merges={}, bytes={}",
            self.spec.tenant,
            self.work.parallel.len(),
            self.work.merges.len(),
            self.work.bytes()
        )
    }
}

impl ExecutionPlan for SpansScanExec {
    leaf_plan!("SpansScanExec");

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = match self.inner.get() {
            Some(inner) => Arc::clone(inner),
            None => {
                let planned = self.spec.plan(&self.work, context.runtime_env().as_ref())?;
                Arc::clone(self.inner.get_or_init(|| planned))
            }
        };
        let step = self.spec.partitions.max(1);
        let count = inner.output_partitioning().partition_count();
        let parts: Vec<usize> = (partition..count).step_by(step).collect();
        // Each inner partition starts only when the one before it has ended.
        let stream = futures::stream::iter(parts)
            .map(move |part| match inner.execute(part, Arc::clone(&context)) {
                Ok(stream) => stream.boxed(),
                Err(error) => futures::stream::once(async move { Err(error) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), stream)))
    }
}

/// What every share of a spread fan-out analysis gets: the tenant, the
/// request, which spans are parents, and the blocks to read (decided by the
/// coordinating querier, as for a scan).
#[derive(Debug)]
pub(crate) struct FanoutShare {
    tenant: TenantId,
    params: FanoutParams,
    parents: Parents,
    blocks: Vec<BlockMeta>,
    /// The bands of the merge of split traces, as the coordinating querier
    /// counted them (so that every task cuts the same ones).
    bands: Option<u32>,
    /// The key under which a task that runs on the coordinating querier
    /// hands its analysis over in memory (see [`HandOff`]).
    hand_off: Option<u128>,
}

/// Analyses that fan-out tasks handed over, whole, to the query that
/// coordinates them in this process: by the query's key, then by part.
type HandedOver = std::collections::HashMap<u128, std::collections::BTreeMap<u32, Analysis>>;
static HANDED_OVER: std::sync::LazyLock<std::sync::Mutex<HandedOver>> = std::sync::LazyLock::new(Default::default);

/// A spread fan-out's place for the analyses of its tasks that run on this
/// querier, the coordinating one. The engine runs one of the query's tasks
/// here too, and sends its output over Flight like any other's: encoding
/// that analysis, sending it to this process and decoding it took a
/// quarter of the coordinating querier's CPU in a fan-out of every parent.
/// Such a task hands its analysis over in memory instead. The key is
/// random, and registered only here, so a task on any other querier finds
/// no place under it and sends its analysis. The place goes when the query
/// ends, with whatever is in it.
struct HandOff(u128);

impl HandOff {
    fn register() -> Self {
        let key = rand::random::<u128>();
        HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Default::default());
        Self(key)
    }

    /// The analyses handed over so far, by part.
    fn take(&self) -> std::collections::BTreeMap<u32, Analysis> {
        let mut handed = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner());
        handed.get_mut(&self.0).map(std::mem::take).unwrap_or_default()
    }
}

impl Drop for HandOff {
    fn drop(&mut self) {
        let left = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
        // Dropped outside the lock: an analysis gives its memory back to its pool.
        drop(left);
    }
}

/// Hands `analysis` (of part `part`) over to the query of `key` when that
/// query is coordinated in this process; gives it back otherwise.
fn hand_over(key: u128, part: u32, analysis: Analysis) -> std::result::Result<(), Analysis> {
    let mut handed = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner());
    match handed.get_mut(&key) {
        Some(place) => {
            place.insert(part, analysis);
            Ok(())
        }
        None => Err(analysis),
    }
}

/// A fan-out analysis as one leaf. The work is the blocks' pieces that hold
/// their traces whole, each read once, and the bands of trace ids that
/// merge the traces split over blocks (see [`Part`]); each partition of
/// each task does every `tasks × partitions`-th of them, so each trace is
/// analyzed whole, once, and each page is read by one task (cutting every
/// block by trace-id range instead read the pages at each range's edges
/// twice, and opened every block's column chunks in every task). Each
/// partition sends what it found, serialized, in chunks; the coordinating
/// querier merges the analyses into one report. A task's partitions share
/// one memory pool of the per-query limit. (The partitions also make the
/// planner put a network boundary above the leaf: a plan of one partition
/// would run whole on the coordinating querier.)
#[derive(Debug)]
pub(crate) struct FanoutExec {
    share: Arc<FanoutShare>,
    /// This task, and how many there are.
    task: (usize, usize),
    partitions: usize,
    /// The rows to merge, found once for the task's partitions.
    merge_rows: Arc<MergeRows>,
    /// The task's pool, made at its first execution, where it runs.
    pool: std::sync::OnceLock<Arc<dyn datafusion::execution::memory_pool::MemoryPool>>,
    properties: Arc<PlanProperties>,
}

/// Columns of a [`FanoutExec`]'s output: the part of the work whose
/// analysis this is ([`Part::index`], unique over tasks and partitions);
/// the chunk's number, and the chunk of the serialized analysis.
const FANOUT_PART: &str = "part";
const FANOUT_SEQ: &str = "seq";
/// Named for the statistics' encoding ([`crate::fanout`]'s `compact`), and
/// renamed whenever it changes: queriers of two builds then never decode
/// each other's analyses (a spread fan-out between them fails, and runs on
/// the querier asked), where the wrong decoder could read numbers that are
/// not there. `chunk` was the varint encoding; `packed` packs bits;
/// `traced` holds each trace id once, in a table, and each parent's place in it.
const FANOUT_CHUNK: &str = "traced";
/// The chunk number of the one row, with no bytes, that says a part's
/// analysis was handed over in memory (see [`HandOff`]).
const HANDED_OVER_SEQ: u32 = u32::MAX;
/// Most partitions (parts of its work analyzed at once) a fan-out task runs.
const MAX_FANOUT_PARTITIONS: usize = 256;
/// Most tasks a fan-out is cut into (far more than queriers answer).
const MAX_FANOUT_TASKS: usize = 4096;
/// Bytes of an analysis per record batch, well below gRPC's message limits.
const FANOUT_CHUNK_BYTES: usize = 1 << 20;

fn fanout_schema() -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new(FANOUT_PART, DataType::UInt32, false),
        Field::new(FANOUT_SEQ, DataType::UInt32, false),
        Field::new(FANOUT_CHUNK, DataType::Binary, false),
    ]))
}

impl FanoutExec {
    pub(crate) fn new(share: Arc<FanoutShare>, task: (usize, usize), partitions: usize) -> Self {
        let partitions = partitions.max(2);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(fanout_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        let task = (task.0, task.1.max(1));
        let merge_rows = Arc::default();
        Self { share, task, partitions, merge_rows, pool: std::sync::OnceLock::new(), properties }
    }

    /// The part of the work partition `partition` does.
    fn part(&self, partition: usize) -> Part {
        let (task, tasks) = self.task;
        Part { index: task + tasks * partition, count: tasks * self.partitions, bands: self.share.bands }
    }
}

impl DisplayAs for FanoutExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FanoutExec: tenant={}, blocks={}, task={} of {}, partitions={}",
            self.share.tenant,
            self.share.blocks.len(),
            self.task.0,
            self.task.1,
            self.partitions
        )
    }
}

impl ExecutionPlan for FanoutExec {
    leaf_plan!("FanoutExec");

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions {
            return internal_err!("FanoutExec has {} partitions, asked for {partition}", self.partitions);
        }
        let part = self.part(partition);
        let Some(source) = context.session_config().get_extension::<FanoutSource>() else {
            return internal_err!("this session cannot read blocks for a fan-out analysis");
        };
        let pool = Arc::clone(self.pool.get_or_init(|| source.pool()));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let analyzers = cores.div_ceil(self.partitions);
        let (share, merge_rows) = (Arc::clone(&self.share), Arc::clone(&self.merge_rows));
        let analysis = async move {
            let found = source
                .analyze(
                    &share.tenant,
                    &share.params,
                    &share.parents,
                    &share.blocks,
                    analyzers,
                    part,
                    &merge_rows,
                    pool,
                )
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let schema = fanout_schema();
            let handed = match share.hand_off {
                None => Err(found),
                Some(key) => hand_over(key, part.index as u32, found),
            };
            let found = match handed {
                Err(found) => found,
                Ok(()) => {
                    source.handed_over.inc();
                    let columns: Vec<arrow::array::ArrayRef> = vec![
                        Arc::new(arrow::array::UInt32Array::from(vec![part.index as u32])),
                        Arc::new(arrow::array::UInt32Array::from(vec![HANDED_OVER_SEQ])),
                        Arc::new(arrow::array::BinaryArray::from(vec![&[] as &[u8]])),
                    ];
                    let batch = arrow::array::RecordBatch::try_new(schema, columns);
                    return Ok(futures::stream::iter(vec![batch.map_err(Into::into)]));
                }
            };
            let batches = analysis_batches(part.index as u32, &found);
            drop(found);
            let batches: Vec<Result<arrow::array::RecordBatch>> = match batches {
                Ok(batches) => batches.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            };
            Ok::<_, DataFusionError>(futures::stream::iter(batches))
        };
        let stream = futures::stream::once(analysis).map(|result| match result {
            Ok(batches) => batches.boxed(),
            Err(error) => futures::stream::once(async move { Err(error) }).boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(fanout_schema(), stream.flatten())))
    }
}

/// The analysis of part `part` as record batches: its bincode in chunks of
/// [`FANOUT_CHUNK_BYTES`].
fn analysis_batches(part: u32, analysis: &Analysis) -> Result<Vec<arrow::array::RecordBatch>> {
    // Written straight out: `bincode::serialize` first runs every encoder
    // once more, to size its buffer.
    let mut bytes = Vec::new();
    bincode::serialize_into(&mut bytes, analysis)
        .map_err(|e| DataFusionError::Internal(format!("encoding a fan-out analysis: {e}")))?;
    // Each chunk a slice of the one buffer, not a copy.
    let bytes = arrow::buffer::Buffer::from_vec(bytes);
    let schema = fanout_schema();
    (0..bytes.len())
        .step_by(FANOUT_CHUNK_BYTES)
        .enumerate()
        .map(|(seq, at)| {
            let len = FANOUT_CHUNK_BYTES.min(bytes.len() - at);
            let offsets = arrow::buffer::OffsetBuffer::from_lengths([len]);
            let chunk = arrow::array::BinaryArray::try_new(offsets, bytes.slice_with_length(at, len), None)?;
            let columns: Vec<arrow::array::ArrayRef> = vec![
                Arc::new(arrow::array::UInt32Array::from(vec![part])),
                Arc::new(arrow::array::UInt32Array::from(vec![seq as u32])),
                Arc::new(chunk),
            ];
            Ok(arrow::array::RecordBatch::try_new(Arc::clone(&schema), columns)?)
        })
        .collect()
}

/// A fan-out share as it travels: JSON, the matched parents as base64 of
/// their bincode (a TraceQL parent filter can select many spans).
#[derive(Serialize, Deserialize)]
struct WireFanout {
    tenant: String,
    params: FanoutParams,
    any: bool,
    service: Option<String>,
    operation: Option<String>,
    matched: Option<String>,
    blocks: Vec<BlockMeta>,
    #[serde(default)]
    bands: Option<u32>,
    #[serde(default)]
    hand_off: Option<u128>,
    task: (usize, usize),
    partitions: usize,
}

fn encode_fanout(fanout: &FanoutExec, buf: &mut Vec<u8>) -> Result<()> {
    let share = &fanout.share;
    let (mut any, mut service, mut operation, mut matched) = (false, None, None, None);
    match &share.parents {
        Parents::Any => any = true,
        Parents::Op { service: s, operation: o } => (service, operation) = (s.clone(), o.clone()),
        Parents::Matched(set) => {
            let bytes = bincode::serialize(set.as_ref())
                .map_err(|e| DataFusionError::Internal(format!("encoding fan-out parents: {e}")))?;
            matched = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    let wire = WireFanout {
        tenant: share.tenant.to_string(),
        params: share.params.clone(),
        any,
        service,
        operation,
        matched,
        blocks: share.blocks.clone(),
        bands: share.bands,
        hand_off: share.hand_off,
        task: fanout.task,
        partitions: fanout.partitions,
    };
    serde_json::to_writer(buf, &wire).map_err(|e| DataFusionError::Internal(format!("encoding a fan-out share: {e}")))
}

fn decode_fanout(buf: &[u8]) -> Result<FanoutExec> {
    let wire: WireFanout =
        serde_json::from_slice(buf).map_err(|e| DataFusionError::Internal(format!("decoding a fan-out share: {e}")))?;
    let tenant = TenantId::new(&wire.tenant).map_err(|e| DataFusionError::Internal(e.to_string()))?;
    let parents = match (wire.any, wire.matched) {
        (true, _) => Parents::Any,
        (false, Some(text)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| DataFusionError::Internal(format!("decoding fan-out parents: {e}")))?;
            let set = bincode::deserialize(&bytes)
                .map_err(|e| DataFusionError::Internal(format!("decoding fan-out parents: {e}")))?;
            Parents::Matched(Arc::new(set))
        }
        (false, None) => Parents::Op { service: wire.service, operation: wire.operation },
    };
    let (task, tasks) = wire.task;
    if task >= tasks || tasks > MAX_FANOUT_TASKS {
        return internal_err!("a fan-out share for task {task} of {tasks}");
    }
    let share = FanoutShare {
        tenant,
        params: wire.params,
        parents,
        blocks: wire.blocks,
        bands: wire.bands,
        hand_off: wire.hand_off,
    };
    // A share from another querier says how many partitions to run: at
    // most a few hundred, whatever it says.
    Ok(FanoutExec::new(Arc::new(share), wire.task, wire.partitions.min(MAX_FANOUT_PARTITIONS)))
}

/// A table that is one physical plan, so that a plan built here goes
/// through the session's planner (and the distributed planner in it).
#[derive(Debug)]
struct PlanTable(Arc<dyn ExecutionPlan>);

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for PlanTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::clone(&self.0))
    }
}

/// Most bytes of matched parents a spread fan-out sends with each share:
/// beyond it, the analysis runs here.
const MAX_FANOUT_PARENTS_BYTES: usize = 16 << 20;

impl Querier {
    /// A fan-out analysis spread over the live peers, each analyzing its
    /// part of the blocks' pieces and of the merge's bands of trace ids: the
    /// analyses of the parts, or None when it runs here instead: no two
    /// live peers, too few bytes, a block not indexed or not sorted by trace
    /// id (its split traces cannot be cut into bands), too many matched
    /// parents to send, or failures while spread (see [`Querier::spread_runs`]).
    pub(crate) async fn spread_fanout(
        &self,
        tenant: &TenantId,
        params: &FanoutParams,
        parents: &Parents,
        blocks: &[BlockMeta],
    ) -> QueryResult<Option<Vec<Analysis>>> {
        // One task's worth runs here, without the trip through a plan.
        let bytes: u64 = blocks.iter().map(|b| b.size_bytes).sum();
        if bytes.div_ceil(self.config.cluster.min_bytes.max(1)) < 2 {
            return Ok(None);
        }
        if let Parents::Matched(set) = parents
            && set.len() * 24 > MAX_FANOUT_PARENTS_BYTES
        {
            return Ok(None);
        }
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let sorted = match self.blocks.trace_indexes(tenant, blocks, parallelism).await {
            Some(indexes) => indexes.iter().all(|i| i.first_row_from(0).is_some()),
            None => false,
        };
        if !sorted {
            return Ok(None);
        }
        let bands = crate::fanout::merge_band_count(blocks);
        let partitions = self.partitions().min(MAX_FANOUT_PARTITIONS);
        let run = |mut ctx: SessionContext| async move {
            // The analyses travel compact already (see `fanout::compact`):
            // compressing them again would cost more CPU than it saves bytes.
            ctx.set_distributed_compression(None)?;
            let hand_off = HandOff::register();
            let share = FanoutShare {
                tenant: tenant.clone(),
                params: params.clone(),
                parents: parents.clone(),
                blocks: blocks.to_vec(),
                bands: Some(bands),
                hand_off: Some(hand_off.0),
            };
            let leaf = Arc::new(FanoutExec::new(Arc::new(share), (0, 1), partitions));
            let frame = ctx.read_table(Arc::new(PlanTable(leaf)))?;
            let (batches, held) = crate::memory::collect_counted(
                &ctx,
                frame,
                "the fan-out analyses of the queriers",
                "narrow the time range or the parents",
            )
            .await?;
            let mut analyses = join_analyses(&batches, hand_off.take())?;
            if let Some(first) = analyses.first_mut() {
                first.held.push(held);
            }
            Ok::<_, QueryError>(analyses)
        };
        Ok(self.spread_runs(None, run).await?.map(|(analyses, _)| analyses))
    }
}

/// Whether a plan of `ctx` (a spread session) was spread over two queriers or more.
fn spread_used(ctx: &SessionContext) -> impl Fn() -> bool + use<> {
    let used = ctx.state().config().get_extension::<Spread>().map(|s| Arc::clone(&s.used));
    move || used.as_ref().is_some_and(|u| u.load(std::sync::atomic::Ordering::Relaxed))
}

/// The analyses in `batches`, by part: the chunks of each joined in order
/// and decoded, or for a part whose analysis was handed over in memory, that
/// analysis (from `handed`).
fn join_analyses(
    batches: &[arrow::array::RecordBatch],
    mut handed: std::collections::BTreeMap<u32, Analysis>,
) -> QueryResult<Vec<Analysis>> {
    use arrow::array::AsArray;
    use arrow::datatypes::UInt32Type;
    let mut chunks: std::collections::BTreeMap<(u32, u32), &[u8]> = std::collections::BTreeMap::new();
    for batch in batches {
        let column =
            |name: &str| batch.column_by_name(name).ok_or(QueryError::Internal("a fan-out analysis lacks a column"));
        let parts = column(FANOUT_PART)?.as_primitive::<UInt32Type>();
        let seqs = column(FANOUT_SEQ)?.as_primitive::<UInt32Type>();
        let data = column(FANOUT_CHUNK)?.as_binary::<i32>();
        for row in 0..batch.num_rows() {
            chunks.insert((parts.value(row), seqs.value(row)), data.value(row));
        }
    }
    let mut analyses = std::collections::BTreeMap::new();
    for ((part, _), _) in chunks.extract_if(.., |&(_, seq), _| seq == HANDED_OVER_SEQ) {
        let analysis = handed.remove(&part).ok_or(QueryError::Internal("a fan-out analysis handed over is lost"))?;
        analyses.insert(part, analysis);
    }
    // Each analysis' bytes in one buffer of its size (grown chunk by chunk,
    // it was copied again at every doubling).
    let mut sizes: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for ((part, _), chunk) in &chunks {
        *sizes.entry(*part).or_default() += chunk.len();
    }
    let mut bytes = Vec::new();
    let mut chunks = chunks.into_iter().peekable();
    while let Some(((part, _), chunk)) = chunks.next() {
        if bytes.is_empty() {
            bytes.reserve_exact(sizes.get(&part).copied().unwrap_or(0));
        }
        bytes.extend_from_slice(chunk);
        if chunks.peek().is_none_or(|((next_part, _), _)| *next_part != part) {
            let analysis: Analysis = bincode::deserialize(&bytes)
                .map_err(|e| QueryError::Execution(format!("decoding a fan-out analysis: {e}")))?;
            analysis.check().map_err(|e| QueryError::Execution(format!("a fan-out analysis with {e}")))?;
            analyses.insert(part, analysis);
            bytes.clear();
        }
    }
    Ok(analyses.into_values().collect())
}

/// How many tasks a spread scan asks for: one per `min_bytes` of blocks
/// (the planner caps it at the live queriers). A Parquet scan of the stock
/// kind stays whole: the table made it because its scan was not worth
/// spreading (the engine would otherwise split its files by their size).
fn desired_tasks(event: DesiredTaskCountEvent<'_>) -> Option<Result<DesiredTaskCountEventResponse>> {
    let Some(bytes) = spread_bytes(event.plan) else {
        return is_file_scan(event.plan).then(|| Ok(DesiredTaskCountEventResponse::maximum(1)));
    };
    let min_bytes = event.session_config.get_extension::<Spread>().map_or(1, |s| s.min_bytes.max(1));
    let tasks = bytes.div_ceil(min_bytes).max(1) as usize;
    Some(Ok(if tasks == 1 {
        DesiredTaskCountEventResponse::maximum(1)
    } else {
        DesiredTaskCountEventResponse::desired(tasks)
    }))
}

/// The bytes a leaf that may spread reads (a scan the table chose to
/// spread, a fan-out analysis), or None for any other plan.
fn spread_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    match (plan.downcast_ref::<SpansScanExec>(), plan.downcast_ref::<FanoutExec>()) {
        (Some(scan), _) => Some(scan.reads),
        (None, Some(fanout)) => Some(fanout.share.blocks.iter().map(|b| b.size_bytes).sum()),
        (None, None) => None,
    }
}

/// Whether `plan` scans files through DataFusion's own data source.
fn is_file_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    plan.downcast_ref::<DataSourceExec>()
        .is_some_and(|source| source.data_source().downcast_ref::<FileScanConfig>().is_some())
}

/// One variant of the scan per task, each with its share of the work.
fn scale_up(event: ScaleUpLeafNodeEvent<'_>) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let variants: Result<Vec<Arc<dyn ExecutionPlan>>> =
        match (event.plan.downcast_ref::<SpansScanExec>(), event.plan.downcast_ref::<FanoutExec>()) {
            (Some(scan), _) => scan
                .shares(event.task_count)
                .into_iter()
                .map(|work| {
                    Ok(Arc::new(SpansScanExec::try_new(Arc::clone(&scan.spec), work)?) as Arc<dyn ExecutionPlan>)
                })
                .collect(),
            (None, Some(fanout)) => Ok((0..event.task_count)
                .map(|task| {
                    let tasks = (task, event.task_count);
                    Arc::new(FanoutExec::new(Arc::clone(&fanout.share), tasks, fanout.partitions))
                        as Arc<dyn ExecutionPlan>
                })
                .collect()),
            (None, None) => return None,
        };
    if event.task_count > 1
        && let Some(spread) = event.session_config.get_extension::<Spread>()
    {
        spread.used.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Some(
        variants
            .and_then(|variants| DistributedLeafExec::try_new(Arc::clone(event.plan), variants))
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// A scan as it travels to another querier.
#[derive(Serialize, Deserialize)]
struct WireScan {
    tenant: String,
    projection: Option<Vec<usize>>,
    /// The pruning predicate, as DataFusion's protobuf `PhysicalExprNode`, base64.
    predicate: Option<String>,
    row_filter: bool,
    limit: Option<usize>,
    pruning: bool,
    partitions: usize,
    /// The span starts answered exactly (absent: none).
    #[serde(default)]
    window: Option<StartWindow>,
    parallel: Vec<WirePiece>,
    merges: Vec<Vec<WirePiece>>,
}

#[derive(Serialize, Deserialize)]
struct WirePiece {
    block: BlockMeta,
    /// Row selection as (skip, count) runs.
    rows: Option<Vec<(bool, usize)>>,
    range: Option<(u64, u64)>,
    bytes: u64,
    /// Absent: filtered by the window like a block across its edge.
    #[serde(default)]
    in_window: bool,
}

impl From<&Piece> for WirePiece {
    fn from(piece: &Piece) -> Self {
        Self {
            block: piece.block.clone(),
            rows: piece.rows.as_ref().map(|rows| rows.iter().map(|s| (s.skip, s.row_count)).collect()),
            range: piece.range.as_ref().map(|r| (r.start, r.end)),
            bytes: piece.bytes,
            in_window: piece.in_window,
        }
    }
}

impl From<WirePiece> for Piece {
    fn from(wire: WirePiece) -> Self {
        let selector =
            |(skip, count): (bool, usize)| if skip { RowSelector::skip(count) } else { RowSelector::select(count) };
        Piece {
            block: wire.block,
            rows: wire.rows.map(|runs| RowSelection::from(runs.into_iter().map(selector).collect::<Vec<_>>())),
            range: wire.range.map(|(start, end)| start..end),
            bytes: wire.bytes,
            in_window: wire.in_window,
        }
    }
}

/// The first byte of an encoded leaf: which one it is.
const SCAN: u8 = 0;
const FANOUT: u8 = 1;

/// Encodes and decodes [`SpansScanExec`] and [`FanoutExec`] for the trip between queriers.
#[derive(Debug)]
pub(crate) struct SpansScanCodec;

impl PhysicalExtensionCodec for SpansScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return internal_err!("a Spanlake leaf has no inputs, got {}", inputs.len());
        }
        let (kind, buf) = buf.split_first().ok_or_else(|| DataFusionError::Internal("an empty plan node".into()))?;
        if *kind == FANOUT {
            return Ok(Arc::new(decode_fanout(buf)?));
        }
        let wire: WireScan =
            serde_json::from_slice(buf).map_err(|e| DataFusionError::Internal(format!("decoding a scan: {e}")))?;
        let tenant = TenantId::new(&wire.tenant).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        let predicate = match wire.predicate {
            Some(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| DataFusionError::Internal(format!("decoding a scan's predicate: {e}")))?;
                let node = datafusion_proto::protobuf::PhysicalExprNode::decode(bytes.as_slice())
                    .map_err(|e| DataFusionError::Internal(format!("decoding a scan's predicate: {e}")))?;
                let codec = DefaultPhysicalExtensionCodec {};
                Some(parse_physical_expr(&node, ctx, table_schema().as_ref(), &codec)?)
            }
            None => None,
        };
        let spec = ScanSpec {
            tenant,
            projection: wire.projection,
            predicate,
            row_filter: wire.row_filter,
            limit: wire.limit,
            pruning: wire.pruning,
            partitions: wire.partitions,
            window: wire.window,
        };
        let work = Work {
            parallel: wire.parallel.into_iter().map(Piece::from).collect(),
            merges: wire.merges.into_iter().map(|m| m.into_iter().map(Piece::from).collect()).collect(),
        };
        Ok(Arc::new(SpansScanExec::try_new(Arc::new(spec), work)?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(fanout) = node.downcast_ref::<FanoutExec>() {
            buf.push(FANOUT);
            return encode_fanout(fanout, buf);
        }
        let Some(scan) = node.downcast_ref::<SpansScanExec>() else {
            return internal_err!("expected SpansScanExec or FanoutExec, got {}", node.name());
        };
        buf.push(SCAN);
        // A predicate that cannot travel is left out: it only prunes, and
        // the plan above the scan applies the filters again.
        let predicate = scan.spec.predicate.as_ref().and_then(|p| {
            let node = serialize_physical_expr(p, &DefaultPhysicalExtensionCodec {}).ok()?;
            Some(base64::engine::general_purpose::STANDARD.encode(node.encode_to_vec()))
        });
        let wire = WireScan {
            tenant: scan.spec.tenant.to_string(),
            projection: scan.spec.projection.clone(),
            predicate,
            row_filter: scan.spec.row_filter,
            limit: scan.spec.limit,
            pruning: scan.spec.pruning,
            partitions: scan.spec.partitions,
            window: scan.spec.window,
            parallel: scan.work.parallel.iter().map(WirePiece::from).collect(),
            merges: scan.work.merges.iter().map(|m| m.iter().map(WirePiece::from).collect()).collect(),
        };
        serde_json::to_writer(buf, &wire).map_err(|e| DataFusionError::Internal(format!("encoding a scan: {e}")))
    }
}

impl Querier {
    /// Serves the tasks other queriers send (Arrow Flight over gRPC) on
    /// `listener` until `stop` resolves, on the query runtime. Each task
    /// runs in a session of its own, with this querier's store, footer
    /// cache and a memory pool of `--sql-memory-limit`.
    pub async fn serve_workers(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> QueryResult<()> {
        let querier = Arc::downgrade(self);
        let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
            let querier = querier.upgrade();
            async move {
                let Some(querier) = querier else {
                    return Err(DataFusionError::Execution("the querier is stopping".into()));
                };
                let secret = querier.config.cluster.secret.as_deref();
                if let Some(secret) = secret {
                    let given = ctx.headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
                    if !secret_matches(secret, given) {
                        tracing::warn!("refused a share of a query: its worker secret does not match this querier's");
                        return Err(DataFusionError::Execution(
                            "refused: the worker secret does not match (--worker-secret)".into(),
                        ));
                    }
                }
                querier.metrics.worker_tasks.inc();
                let runtime = querier.runtime().map_err(|e| DataFusionError::External(Box::new(e)))?;
                // Shares of later stages read from other queriers: with the secret too.
                let mut state = ctx
                    .builder
                    .with_runtime_env(runtime)
                    .with_distributed_user_codec(SpansScanCodec)
                    .with_distributed_passthrough_headers(passthrough(secret)?)?
                    .build();
                // Fan-out shares read blocks as this querier does.
                state.config_mut().set_extension(Arc::new(querier.fanout_source()));
                let (scalars, aggregates) = functions();
                for function in scalars {
                    state.register_udf(function)?;
                }
                for function in aggregates {
                    state.register_udaf(function)?;
                }
                Ok(state)
            }
        });
        // Requests carry plans (kilobytes); record batches flow the other way.
        let service = worker.into_worker_server().max_decoding_message_size(MAX_PLAN_BYTES);
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .add_service(probe::Server { protocol: SHARE_PROTOCOL })
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop);
        self.executor
            .run(async move {
                server.await.map_err(|e| crate::QueryError::Execution(format!("the worker server failed: {e}")))
            })
            .await
    }

    /// Runs `work` in a session over `tenant`'s tables whose large scans
    /// spread over the live peers (again over those left, when one of them
    /// died or stopped answering), and in a session of this querier alone
    /// when that fails, or when there are not two live peers. Returns
    /// whether a plan was spread.
    /// Without `tenant`, the sessions hold no tables: for a plan that holds
    /// its own.
    pub(crate) async fn spread_or_here<T, F, Fut>(&self, tenant: Option<&TenantId>, work: F) -> QueryResult<(T, bool)>
    where
        F: Fn(SessionContext) -> Fut,
        Fut: std::future::Future<Output = QueryResult<T>>,
    {
        if let Some(answer) = self.spread_runs(tenant, &work).await? {
            return Ok(answer);
        }
        let ctx = match tenant {
            Some(tenant) => self.session(tenant).await?,
            None => SessionContext::new_with_config_rt(self.session_config(), self.runtime()?),
        };
        Ok((work(ctx).await?, false))
    }

    /// Runs `work` of a spread session to its end, unless a querier drops
    /// out of the live list while it runs and `used` says the work was
    /// spread: then an error naming that querier, so that the query runs
    /// again without it. A querier that stops answering (stopped, stuck,
    /// cut off) would otherwise hold every share it was given, and each
    /// query spread to it, until the query's deadline; the next refresh's
    /// probe finds it silent, within `--refresh-interval` and the probe's
    /// timeout. (Work not spread yet plans over the peers live when it
    /// spreads.)
    async fn unless_a_peer_stalls<T>(
        &self,
        work: impl std::future::Future<Output = QueryResult<T>>,
        used: &impl Fn() -> bool,
    ) -> QueryResult<T> {
        let Some(peers) = &self.peers else { return work.await };
        let mut watch = peers.watch();
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return result,
                peer = watch.dropped() => if used() {
                    return Err(QueryError::Execution(format!(
                        "the querier at {peer} stopped answering while the query was spread to it"
                    )));
                },
            }
        }
    }

    /// Runs `work` in a session whose large scans spread over the live
    /// peers: its answer and whether it was spread, or None when it is to
    /// run here instead (not two live peers, or the spread run failed).
    /// A run that fails once a querier it may have used has left the live
    /// list (it died or stopped answering) runs once more, spread over the
    /// queriers left; one that fails otherwise runs here, where the answer
    /// or the error is certain. The query's own limits stop it here too, so
    /// their errors stand.
    async fn spread_runs<T, F, Fut>(&self, tenant: Option<&TenantId>, work: F) -> QueryResult<Option<(T, bool)>>
    where
        F: Fn(SessionContext) -> Fut,
        Fut: std::future::Future<Output = QueryResult<T>>,
    {
        for again in [false, true] {
            let Some(peers) = &self.peers else { return Ok(None) };
            let started = peers.live();
            let Some(ctx) = self.spread_session(tenant).await? else { return Ok(None) };
            let used = spread_used(&ctx);
            match self.unless_a_peer_stalls(work(ctx), &used).await {
                Ok(answer) => {
                    if used() {
                        self.metrics.spread("ok");
                    }
                    return Ok(Some((answer, used())));
                }
                Err(error @ (QueryError::MemoryLimit(_) | QueryError::Timeout { .. })) => return Err(error),
                Err(_) if !used() => return Ok(None),
                Err(error) if !again && self.lost_a_peer(&started).await => {
                    tracing::warn!(%error, "a query spread over queriers failed; spreading it over those left");
                    self.metrics.spread("spread_again");
                }
                Err(error) => {
                    tracing::warn!(%error, "a query spread over queriers failed; running it here");
                    self.metrics.spread("ran_locally");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Whether a querier of `started` has left the live list (probed again
    /// now, unless one has already), with two queriers still live.
    async fn lost_a_peer(&self, started: &[Url]) -> bool {
        let Some(peers) = &self.peers else { return false };
        let gone = |live: &[Url]| started.iter().any(|peer| !live.contains(peer));
        if !gone(&peers.live()) {
            peers.refresh().await;
        }
        let live = peers.live();
        gone(&live) && live.len() >= 2
    }

    /// A session over `tenant`'s tables whose large scans spread over the
    /// live peers; None when there are not two of them.
    async fn spread_session(&self, tenant: Option<&TenantId>) -> QueryResult<Option<SessionContext>> {
        let Some(peers) = &self.peers else { return Ok(None) };
        let live = peers.live().len();
        if live < 2 {
            return Ok(None);
        }
        let spread = Spread {
            min_bytes: self.config.cluster.min_bytes.max(1),
            bands: (live * BANDS_PER_TASK * self.partitions()).min(MAX_BANDS),
            used: Arc::default(),
        };
        let config: SessionConfig =
            self.session_config().with_extension(Arc::new(spread)).with_extension(Arc::new(self.fanout_source()));
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(self.runtime()?)
            .with_distributed_worker_resolver(peers.clone())
            .with_distributed_passthrough_headers(passthrough(self.config.cluster.secret.as_deref())?)?
            .with_query_planner(Arc::new(AlreadyPlanned))
            .with_distributed_planner()
            .with_distributed_user_codec(SpansScanCodec)
            .with_distributed_desired_task_count_handler(desired_tasks)
            .with_distributed_scale_up_leaf_node_handler(scale_up)
            // What each querier's part did travels back only for EXPLAIN
            // ANALYZE (see `Querier::sql_in`): every spread plan paid for it.
            .with_distributed_metrics_collection(false)?;
        let distributed = builder.query_planner().take().expect("the distributed planner");
        let state = builder.with_query_planner(Arc::new(SpreadWhenWorthIt { distributed })).build();
        let mut ctx = SessionContext::new_with_state(state);
        if !self.config.cluster.lz4 {
            ctx.set_distributed_compression(None)?;
        }
        if let Some(tenant) = tenant {
            self.register_tables(&ctx, tenant).await?;
        }
        Ok(Some(ctx))
    }
}

/// The query planner of a spread session. A plan goes to the engine's
/// distributed planner only when one of its leaves asks for two tasks or
/// more (a large scan, a fan-out analysis); any other runs here as planned.
/// (The engine would cut it into stages of one task each all the same, and
/// place each on any querier: work sent away for no parallelism.)
#[derive(Debug)]
struct SpreadWhenWorthIt {
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
}

tokio::task_local! {
    /// The plan [`SpreadWhenWorthIt`] made, for the distributed planner to spread.
    static PLANNED: Arc<dyn ExecutionPlan>;
}

#[async_trait::async_trait]
impl QueryPlanner for SpreadWhenWorthIt {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default().create_physical_plan(logical, session).await?;
        let min_bytes = session.config().get_extension::<Spread>().map_or(u64::MAX, |s| s.min_bytes.max(1));
        let spreads = plan.exists(|node| Ok(spread_bytes(node).is_some_and(|b| b.div_ceil(min_bytes) >= 2)))?;
        if !spreads {
            return Ok(plan);
        }
        PLANNED.scope(plan, self.distributed.create_physical_plan(logical, session)).await
    }
}

/// The planner under the distributed one: the plan [`SpreadWhenWorthIt`]
/// made (the distributed planner plans nothing itself), or a new one.
#[derive(Debug)]
struct AlreadyPlanned;

#[async_trait::async_trait]
impl QueryPlanner for AlreadyPlanned {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match PLANNED.try_with(Arc::clone) {
            Ok(plan) => Ok(plan),
            Err(_) => DefaultPhysicalPlanner::default().create_physical_plan(logical, session).await,
        }
    }
}

/// Spanlake's own functions that plans may hold, for a querier that runs
/// another's plan (they travel by name).
fn functions() -> (Vec<Arc<ScalarUDF>>, Vec<Arc<AggregateUDF>>) {
    use crate::search::{ValueKind, element_values};
    let mut scalars =
        [ValueKind::Str, ValueKind::Number, ValueKind::Bool].map(|k| Arc::new(element_values(k))).to_vec();
    scalars.extend(crate::traceql_metrics::bucket_functions().map(Arc::new));
    scalars.push(Arc::new(crate::search::short_eq_udf()));
    scalars.push(Arc::new(crate::prune_hint::prunes_by_udf()));
    let aggregates = [
        crate::traceql_metrics::newest_span_udaf(),
        crate::traceql_metrics::cells_udaf(),
        crate::traceql_metrics::cells_by_udaf(),
    ];
    (scalars, aggregates.map(Arc::new).to_vec())
}

#[cfg(test)]
mod tests {
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;
    use spanlake_schemas::block::BlockId;

    use super::*;

    fn block(size_bytes: u64) -> BlockMeta {
        BlockMeta {
            id: BlockId::new(),
            min_time_unix_nano: 1,
            max_time_unix_nano: 2,
            min_trace_id: "00".repeat(16),
            max_trace_id: "ff".repeat(16),
            span_count: 10,
            size_bytes,
            compaction_level: 0,
            sources: Vec::new(),
            trace_count: 1,
            ingested_unix_nano: 0,
        }
    }

    fn scan(work: Work) -> SpansScanExec {
        let spec = ScanSpec {
            tenant: TenantId::new("team-a").unwrap(),
            projection: Some(vec![0, 2]),
            predicate: Some(Arc::new(BinaryExpr::new(
                Arc::new(Column::new("name", 5)),
                datafusion::logical_expr::Operator::Eq,
                Arc::new(Literal::new("GET /".into())),
            ))),
            row_filter: true,
            limit: None,
            pruning: true,
            partitions: 2,
            window: Some(StartWindow { from: Some(5), to: None }),
        };
        SpansScanExec::try_new(Arc::new(spec), work).unwrap()
    }

    #[test]
    fn a_scan_travels_whole() {
        let rows = RowSelection::from(vec![RowSelector::skip(3), RowSelector::select(4), RowSelector::skip(3)]);
        let selected =
            Piece { rows: Some(rows), range: Some(10..400), bytes: 300, in_window: true, ..Piece::whole(block(1000)) };
        let work = Work {
            parallel: vec![Piece::whole(block(500)), selected.clone()],
            merges: vec![vec![selected, Piece::whole(block(70))]],
        };
        let sent = scan(work);
        let mut buf = Vec::new();
        let node: Arc<dyn ExecutionPlan> = Arc::new(scan(sent.work.clone()));
        SpansScanCodec.try_encode(node, &mut buf, &DefaultPhysicalProtoConverter {}).unwrap();
        let task = TaskContext::default();
        let got = SpansScanCodec.try_decode(&buf, &[], &task, &DefaultPhysicalProtoConverter {}).unwrap();
        let got = got.downcast_ref::<SpansScanExec>().unwrap();
        assert_eq!(got.work, sent.work);
        assert_eq!(format!("{:?}", got.spec.predicate), format!("{:?}", sent.spec.predicate));
        assert_eq!(got.spec.tenant.as_str(), "team-a");
        assert_eq!(got.spec.window, sent.spec.window);
        assert_eq!(got.schema(), sent.schema());
        assert_eq!(got.properties().output_partitioning().partition_count(), 2);
    }

    #[test]
    fn a_fanout_share_travels_whole_with_its_matched_parents() {
        let params = FanoutParams {
            start: 1,
            end: 2,
            service: None,
            operation: None,
            traceql: Some("{ kind = server }".into()),
            percentiles: vec![0.5, 0.99],
            child_kinds: crate::fanout::ChildKinds::All,
            edge_by: crate::fanout::EdgeBy::Server,
            limit: 7,
        };
        let matched: std::collections::HashSet<(u128, u64)> = [(u128::MAX, 1), (3, u64::MAX)].into();
        let share = FanoutShare {
            tenant: TenantId::new("team-a").unwrap(),
            params,
            parents: Parents::Matched(Arc::new(matched.clone())),
            blocks: vec![block(10), block(20)],
            bands: Some(17),
            hand_off: Some(u128::MAX - 5),
        };
        let node: Arc<dyn ExecutionPlan> = Arc::new(FanoutExec::new(Arc::new(share), (1, 4), 3));
        let mut buf = Vec::new();
        SpansScanCodec.try_encode(node, &mut buf, &DefaultPhysicalProtoConverter {}).unwrap();
        let task = TaskContext::default();
        let got = SpansScanCodec.try_decode(&buf, &[], &task, &DefaultPhysicalProtoConverter {}).unwrap();
        let got = got.downcast_ref::<FanoutExec>().unwrap();
        assert_eq!((got.task, got.share.bands, got.share.hand_off), ((1, 4), Some(17), Some(u128::MAX - 5)));
        // Partition 2 of task 1 of 4, of 3 partitions each.
        assert_eq!(got.part(2), Part { index: 9, count: 12, bands: Some(17) });
        assert_eq!(got.partitions, 3);
        assert_eq!(got.share.blocks.len(), 2);
        assert_eq!(got.share.params.percentiles, [0.5, 0.99]);
        assert_eq!(got.share.params.limit, 7);
        assert!(matches!(&got.share.parents, Parents::Matched(set) if **set == matched));

        // A share asking for more partitions than any querier runs gets the most.
        let wire = String::from_utf8(buf[1..].to_vec()).unwrap();
        assert!(wire.contains("\"partitions\":3"), "{wire}");
        let mut hostile = vec![FANOUT];
        hostile.extend(wire.replace("\"partitions\":3", &format!("\"partitions\":{}", usize::MAX)).into_bytes());
        let got = SpansScanCodec.try_decode(&hostile, &[], &task, &DefaultPhysicalProtoConverter {}).unwrap();
        assert_eq!(got.downcast_ref::<FanoutExec>().unwrap().partitions, MAX_FANOUT_PARTITIONS);
        // A task beyond the tasks, or more tasks than any fan-out has, is refused.
        assert!(wire.contains("\"task\":[1,4]"), "{wire}");
        for bad in ["[4,4]", "[0,0]", &format!("[1,{}]", usize::MAX)] {
            let mut hostile = vec![FANOUT];
            hostile.extend(wire.replace("\"task\":[1,4]", &format!("\"task\":{bad}")).into_bytes());
            assert!(
                SpansScanCodec.try_decode(&hostile, &[], &task, &DefaultPhysicalProtoConverter {}).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_analysis_travels_whole_in_chunks() {
        let schema = fanout_schema();
        let batch = |part: u32, seq: u32, chunk: &[u8]| {
            let columns: Vec<arrow::array::ArrayRef> = vec![
                Arc::new(arrow::array::UInt32Array::from(vec![part])),
                Arc::new(arrow::array::UInt32Array::from(vec![seq])),
                Arc::new(arrow::array::BinaryArray::from(vec![chunk])),
            ];
            arrow::array::RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()
        };
        // Three parts, each analysis different and in two chunks, the
        // chunks arriving interleaved.
        let sent = [
            (1, Analysis::named(&["checkout", "GET /cart"], 11)),
            (9, Analysis::named(&["cart"], 2_000_000)),
            (12, Analysis::named(&["payment", "POST /pay", "SELECT"], 7)),
        ];
        let halves: Vec<(Vec<u8>, Vec<u8>)> = sent
            .iter()
            .map(|(_, analysis)| {
                let bytes = bincode::serialize(analysis).unwrap();
                let (head, tail) = bytes.split_at(bytes.len() / 2);
                (head.to_vec(), tail.to_vec())
            })
            .collect();
        let batches = [
            batch(12, 1, &halves[2].1),
            batch(1, 0, &halves[0].0),
            batch(9, 1, &halves[1].1),
            batch(12, 0, &halves[2].0),
            batch(9, 0, &halves[1].0),
            batch(1, 1, &halves[0].1),
        ];
        let got: Vec<String> =
            join_analyses(&batches, Default::default()).unwrap().iter().map(|a| format!("{a:?}")).collect();
        let expected: Vec<String> = sent.iter().map(|(_, a)| format!("{a:?}")).collect();
        assert_eq!(got, expected, "each analysis whole, in the order of its part");

        // Part 5's analysis was handed over in memory: it takes its place
        // among the parts; one said handed over but not here is an error.
        let handed = || std::collections::BTreeMap::from([(5, Analysis::named(&["handed"], 3))]);
        let mut with_handed = batches.to_vec();
        with_handed.push(batch(5, HANDED_OVER_SEQ, &[]));
        let got: Vec<String> =
            join_analyses(&with_handed, handed()).unwrap().iter().map(|a| format!("{a:?}")).collect();
        let mut expected = expected;
        expected.insert(1, format!("{:?}", Analysis::named(&["handed"], 3)));
        assert_eq!(got, expected);
        assert!(join_analyses(&with_handed, Default::default()).is_err());

        // An analysis from a querier of an earlier build, in its encoding.
        for earlier in ["chunk", "packed"] {
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new(FANOUT_PART, arrow::datatypes::DataType::UInt32, false),
                arrow::datatypes::Field::new(FANOUT_SEQ, arrow::datatypes::DataType::UInt32, false),
                arrow::datatypes::Field::new(earlier, arrow::datatypes::DataType::Binary, false),
            ]));
            let columns: Vec<arrow::array::ArrayRef> = vec![
                Arc::new(arrow::array::UInt32Array::from(vec![1])),
                Arc::new(arrow::array::UInt32Array::from(vec![0])),
                Arc::new(arrow::array::BinaryArray::from(vec![halves[0].0.as_slice()])),
            ];
            let older = arrow::array::RecordBatch::try_new(schema, columns).unwrap();
            assert!(join_analyses(&[older], Default::default()).is_err(), "{earlier}: never decoded as this build's");
        }
    }

    #[test]
    fn a_large_analysis_is_cut_into_chunks_and_joined_whole() {
        // Names of 2.5 MiB: three chunks, the last a part of one.
        let long = "n".repeat(5 * FANOUT_CHUNK_BYTES / 2);
        let analysis = Analysis::named(&[long.as_str(), "cart"], 12);
        let batches = analysis_batches(4, &analysis).unwrap();
        assert_eq!(batches.len(), 3);
        let joined = join_analyses(&batches, Default::default()).unwrap();
        assert_eq!(format!("{:?}", joined), format!("{:?}", [analysis]));
    }

    #[test]
    fn an_analysis_is_handed_over_only_to_a_query_coordinated_here() {
        let place = HandOff::register();
        assert!(hand_over(place.0, 3, Analysis::named(&["here"], 1)).is_ok());
        // Another key (a query coordinated by another querier) has no place here.
        let elsewhere = place.0.wrapping_add(1);
        assert!(hand_over(elsewhere, 4, Analysis::named(&["there"], 1)).is_err());
        let taken = place.take();
        assert_eq!(taken.keys().copied().collect::<Vec<_>>(), [3]);
        assert!(place.take().is_empty(), "taken once");
        let key = place.0;
        drop(place);
        assert!(hand_over(key, 3, Analysis::named(&["late"], 1)).is_err(), "the place goes with its query");
    }

    #[test]
    fn shares_hold_all_the_work_once_and_keep_each_merge_whole() {
        let merges: Vec<Vec<Piece>> =
            (0..5).map(|i| vec![Piece::whole(block(10 + i)), Piece::whole(block(20))]).collect();
        let work = Work { parallel: vec![Piece::whole(block(900)), Piece::whole(block(50))], merges };
        let scan = scan(work.clone());
        let shares = scan.shares(3);
        assert_eq!(shares.len(), 3);
        let total: u64 = shares.iter().map(Work::bytes).sum();
        assert!(total.abs_diff(work.bytes()) < 10, "{total} against {}", work.bytes());
        let mut merges: Vec<Vec<Piece>> = shares.iter().flat_map(|s| s.merges.clone()).collect();
        merges.sort_by_key(|m| m[0].bytes);
        assert_eq!(merges, work.merges, "each merge goes whole to one task");
        // The large block is cut into byte ranges that cover it once.
        let mut ranges: Vec<std::ops::Range<u64>> = shares
            .iter()
            .flat_map(|s| &s.parallel)
            .filter(|p| p.block.size_bytes == 900)
            .map(|p| p.range.clone().unwrap())
            .collect();
        ranges.sort_by_key(|r| r.start);
        assert!(ranges.len() > 1);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, 900);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        let loads: Vec<u64> = shares.iter().map(Work::bytes).collect();
        let (least, most) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(most - least <= 300, "balanced: {loads:?}");
    }

    /// A probe finds a querier of its build live, one of another build
    /// other (naming that build), and a process that hangs up at once or
    /// never answers (a stopped one: its kernel accepts connections) silent.
    #[tokio::test]
    async fn a_probe_tells_live_other_and_silent_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(probe::Server { protocol: "spanlake 1, shares 1" })
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let server = tokio::spawn(server);
        let channel = channel_to(&url).unwrap();
        assert_eq!(probe(channel.clone(), "spanlake 1, shares 1").await, Probed::Live);
        assert_eq!(probe(channel.clone(), "spanlake 1, shares 1").await, Probed::Live, "again on the same connection");
        match probe(channel, "spanlake 1, shares 2").await {
            Probed::Other(why) => assert!(why.contains("\"spanlake 1, shares 1\""), "{why}"),
            other => panic!("{other:?}"),
        }
        server.abort();

        let hangs_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", hangs_up.local_addr().unwrap())).unwrap();
        let hang_up = tokio::spawn(async move {
            while let Ok((connection, _)) = hangs_up.accept().await {
                drop(connection);
            }
        });
        assert_eq!(probe(channel_to(&url).unwrap(), SHARE_PROTOCOL).await, Probed::Silent);
        hang_up.abort();

        // Accepted by the kernel (the listen backlog), never read.
        let never = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", never.local_addr().unwrap())).unwrap();
        assert_eq!(probe(channel_to(&url).unwrap(), SHARE_PROTOCOL).await, Probed::Silent);
        drop(never);
    }

    #[test]
    fn the_secret_must_match_whole() {
        assert!(secret_matches("s3cr3t", b"s3cr3t"));
        for wrong in [&b""[..], b"s3cr3", b"s3cr3tt", b"S3cr3t"] {
            assert!(!secret_matches("s3cr3t", wrong));
        }
    }

    #[test]
    fn peers_are_urls_names_or_a_file() {
        for ok in ["http://10.0.0.1:3201", "dns://spanlake-querier-workers:3201", "file:///etc/spanlake/peers"] {
            check_peer(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["10.0.0.1:3201", "http://host", "dns://name", "file://relative", "https://x:1/"] {
            assert!(check_peer(bad).is_err(), "{bad}");
        }
    }
}
