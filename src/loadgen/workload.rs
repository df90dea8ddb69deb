//! Trace generation: service trees with known latency distributions.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status::StatusCode};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp, LogNormal};

/// A latency distribution: `fixed:5ms`, `exp:10ms` (mean), `lognormal:10ms:1.0` (median, sigma).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    Exponential { mean: Duration },
    LogNormal { median: Duration, sigma: f64 },
}

impl Latency {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(':');
        let kind = parts.next().unwrap_or_default();
        let duration = |p: Option<&str>| crate::units::parse_duration(p.ok_or("missing duration")?);
        let latency = match kind {
            "fixed" => Self::Fixed(duration(parts.next())?),
            "exp" => Self::Exponential { mean: duration(parts.next())? },
            "lognormal" => {
                let median = duration(parts.next())?;
                let sigma = parts.next().unwrap_or("1.0").parse().map_err(|_| format!("bad sigma in {text:?}"))?;
                Self::LogNormal { median, sigma }
            }
            _ => return Err(format!("{text:?}: use fixed:5ms, exp:10ms or lognormal:10ms:1.0")),
        };
        Ok(latency)
    }

    /// One sample in nanoseconds (at least 1).
    pub fn sample(&self, rng: &mut StdRng) -> u64 {
        let ns = match *self {
            Self::Fixed(d) => d.as_nanos() as f64,
            Self::Exponential { mean } => Exp::new(1.0 / mean.as_nanos() as f64).expect("positive mean").sample(rng),
            Self::LogNormal { median, sigma } => {
                LogNormal::new((median.as_nanos() as f64).ln(), sigma).expect("valid lognormal").sample(rng)
            }
        };
        ns.round().max(1.0) as u64
    }
}

/// How a parent issues its fan-out calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FanoutMode {
    Parallel,
    Sequential,
}

/// Which traces to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A web shop: frontend → cart (+redis), N parallel product lookups (+postgres), payment
    Shop,
    /// frontend `GET /search` → N `leaf.Search` client calls (each with a server span in `leaf`),
    /// leaf latency from --leaf-latency; parent = own work + fan-out + post
    Fanout,
}

/// Workload parameters.
#[derive(Debug, Clone)]
pub struct Workload {
    pub scenario: Scenario,
    /// Fan-out degree (the maximum when `random_fanout`).
    pub fanout: usize,
    /// Draw N uniformly from 1..=fanout per trace.
    pub random_fanout: bool,
    pub mode: FanoutMode,
    /// Latency of each fan-out leaf call.
    pub leaf_latency: Latency,
    /// Parent's own work before the fan-out.
    pub pre_latency: Option<Latency>,
    /// Parent's own work after the fan-out.
    pub post: Duration,
    /// Probability that a leaf call fails (and its callers report the error).
    pub error_rate: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            scenario: Scenario::Shop,
            fanout: 4,
            random_fanout: true,
            mode: FanoutMode::Parallel,
            leaf_latency: Latency::LogNormal { median: Duration::from_millis(8), sigma: 0.6 },
            pre_latency: None,
            post: Duration::ZERO,
            error_rate: 0.01,
        }
    }
}

/// Builds the spans of one trace, grouped by service.
struct TraceBuilder<'a> {
    rng: &'a mut StdRng,
    trace_id: Vec<u8>,
    by_service: BTreeMap<&'static str, Vec<Span>>,
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(value: &str) -> Value {
    Value::StringValue(value.into())
}

/// Network time between a client span and its server span, each way.
const NETWORK_NS: u64 = 150_000;

impl TraceBuilder<'_> {
    fn span_id(&mut self) -> Vec<u8> {
        self.rng.random_range(1..=u64::MAX).to_be_bytes().to_vec()
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        service: &'static str,
        name: &str,
        kind: SpanKind,
        id: Vec<u8>,
        parent: Option<&[u8]>,
        start: u64,
        end: u64,
        attributes: Vec<KeyValue>,
        error: bool,
    ) {
        let status = error.then(|| Status { code: StatusCode::Error as i32, message: "upstream failure".into() });
        self.by_service.entry(service).or_default().push(Span {
            trace_id: self.trace_id.clone(),
            span_id: id,
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status,
            flags: 0x100 | 1,
            ..Default::default()
        });
    }

    /// A client call from `caller` to `callee` lasting `server_ns` on the
    /// server, with an optional database call inside; returns (end, error).
    #[allow(clippy::too_many_arguments)]
    fn rpc(
        &mut self,
        parent: &[u8],
        caller: &'static str,
        callee: &'static str,
        operation: &str,
        start: u64,
        server_ns: u64,
        error: bool,
        attributes: Vec<KeyValue>,
    ) -> u64 {
        let client_id = self.span_id();
        let server_id = self.span_id();
        let server_start = start + NETWORK_NS;
        let server_end = server_start + server_ns;
        let end = server_end + NETWORK_NS;
        let mut client_attrs = attributes.clone();
        client_attrs.push(kv("server.address", s(callee)));
        client_attrs.push(kv("peer.service", s(callee)));
        self.push(
            caller,
            operation,
            SpanKind::Client,
            client_id.clone(),
            Some(parent),
            start,
            end,
            client_attrs,
            error,
        );
        self.push(
            callee,
            operation,
            SpanKind::Server,
            server_id,
            Some(&client_id),
            server_start,
            server_end,
            attributes,
            error,
        );
        end
    }

    fn finish(self, resources: &Resources) -> Vec<ResourceSpans> {
        self.by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(resources.get(service)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "spanlake-loadgen".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect()
    }
}

/// Resource attributes per service.
pub(crate) struct Resources;

impl Resources {
    fn get(&self, service: &'static str) -> Resource {
        Resource {
            attributes: vec![
                kv("service.name", s(service)),
                kv("service.version", s("1.4.2")),
                kv("deployment.environment.name", s("production")),
                kv("host.name", s(&format!("{service}-7f9c4b-1"))),
                kv("telemetry.sdk.language", s("rust")),
                kv("telemetry.sdk.name", s("opentelemetry")),
            ],
            ..Default::default()
        }
    }
}

impl Workload {
    /// One export request holding `traces` traces starting around `now_ns`.
    pub fn request(&self, rng: &mut StdRng, traces: usize, now_ns: u64) -> ExportTraceServiceRequest {
        let mut resource_spans = Vec::new();
        for _ in 0..traces {
            let trace_id = rng.random_range(1..=u128::MAX).to_be_bytes().to_vec();
            let mut builder = TraceBuilder { rng, trace_id, by_service: BTreeMap::new() };
            match self.scenario {
                Scenario::Shop => self.shop(&mut builder, now_ns),
                Scenario::Fanout => self.fanout_trace(&mut builder, now_ns),
            }
            resource_spans.extend(builder.finish(&Resources));
        }
        ExportTraceServiceRequest { resource_spans }
    }

    fn degree(&self, rng: &mut StdRng) -> usize {
        if self.random_fanout { rng.random_range(1..=self.fanout.max(1)) } else { self.fanout }
    }

    /// Issues `n` calls from `start`, in parallel or in sequence; each call's
    /// duration comes from `call(builder, start)`; returns when the last ends.
    fn fan_out(
        &self,
        b: &mut TraceBuilder<'_>,
        n: usize,
        start: u64,
        mut call: impl FnMut(&mut TraceBuilder<'_>, u64) -> u64,
    ) -> u64 {
        let mut end = start;
        for _ in 0..n {
            let call_start = match self.mode {
                FanoutMode::Parallel => start,
                FanoutMode::Sequential => end,
            };
            end = end.max(call(b, call_start));
        }
        end
    }

    fn fanout_trace(&self, b: &mut TraceBuilder<'_>, now: u64) {
        let root = b.span_id();
        let pre = self.pre_latency.map(|l| l.sample(b.rng)).unwrap_or(0);
        let n = self.degree(b.rng);
        let calls_start = now + pre;
        let mut failed = false;
        let calls_end = self.fan_out(b, n, calls_start, |b, start| {
            let latency = self.leaf_latency.sample(b.rng);
            let error = b.rng.random_bool(self.error_rate);
            failed |= error;
            let client_id = b.span_id();
            let server_id = b.span_id();
            let end = start + latency;
            let attrs = vec![kv("rpc.system", s("grpc")), kv("rpc.method", s("Search")), kv("peer.service", s("leaf"))];
            b.push(
                "frontend",
                "leaf.Search",
                SpanKind::Client,
                client_id.clone(),
                Some(&root),
                start,
                end,
                attrs,
                error,
            );
            // The server span sits inside the client span (network time excluded).
            let inner = latency / 10;
            b.push(
                "leaf",
                "leaf.Search",
                SpanKind::Server,
                server_id,
                Some(&client_id),
                start + inner / 2,
                end - inner / 2,
                vec![],
                error,
            );
            end
        });
        let end = calls_end + self.post.as_nanos() as u64;
        let attrs = vec![
            kv("http.request.method", s("GET")),
            kv("http.route", s("/search")),
            kv("http.response.status_code", Value::IntValue(if failed { 500 } else { 200 })),
            kv("search.fanout", Value::IntValue(n as i64)),
        ];
        b.push("frontend", "GET /search", SpanKind::Server, root, None, now, end, attrs, failed);
    }

    fn shop(&self, b: &mut TraceBuilder<'_>, now: u64) {
        let root = b.span_id();
        let user = b.rng.random_range(1..5000);
        let mut t = now + Latency::Exponential { mean: Duration::from_micros(300) }.sample(b.rng);
        let mut failed = false;

        // 1. cart, which reads redis
        let cart_ns = Latency::LogNormal { median: Duration::from_millis(2), sigma: 0.5 }.sample(b.rng);
        let redis_ns = Latency::Exponential { mean: Duration::from_micros(400) }.sample(b.rng);
        let cart_attrs = vec![
            kv("http.request.method", s("GET")),
            kv("http.route", s("/cart/{user}")),
            kv("url.path", s(&format!("/cart/{user}"))),
            kv("http.response.status_code", Value::IntValue(200)),
        ];
        let cart_start = t;
        t = b.rpc(&root, "frontend", "cart", "GET /cart/{user}", cart_start, cart_ns + redis_ns, false, cart_attrs);
        if let Some(server) = b.by_service.get("cart").and_then(|v| v.last()).map(|s| s.span_id.clone()) {
            let start = cart_start + NETWORK_NS + cart_ns / 2;
            let db = vec![
                kv("db.system.name", s("redis")),
                kv("db.operation.name", s("HGETALL")),
                kv("db.namespace", s("0")),
            ];
            let id = b.span_id();
            b.push("cart", "HGETALL", SpanKind::Client, id, Some(&server), start, start + redis_ns, db, false);
        }

        // 2. product lookups, fanned out
        let n = self.degree(b.rng);
        t = self.fan_out(b, n, t, |b, start| {
            let latency = self.leaf_latency.sample(b.rng);
            let error = b.rng.random_bool(self.error_rate);
            failed |= error;
            let product = b.rng.random_range(1..200);
            let attrs = vec![
                kv("rpc.system", s("grpc")),
                kv("rpc.service", s("catalog.ProductCatalog")),
                kv("rpc.method", s("GetProduct")),
                kv("product.id", Value::IntValue(product)),
            ];
            let end = b.rpc(
                &root,
                "frontend",
                "product-catalog",
                "catalog.ProductCatalog/GetProduct",
                start,
                latency,
                error,
                attrs,
            );
            if let Some(server) = b.by_service.get("product-catalog").and_then(|v| v.last()).map(|s| s.span_id.clone())
            {
                let db_ns = latency * 6 / 10;
                let db_start = start + NETWORK_NS + latency / 5;
                let db = vec![
                    kv("db.system.name", s("postgresql")),
                    kv("db.operation.name", s("SELECT")),
                    kv("db.collection.name", s("products")),
                    kv("db.query.text", s("SELECT id, name, price FROM products WHERE id = $1")),
                ];
                let id = b.span_id();
                b.push(
                    "product-catalog",
                    "SELECT products",
                    SpanKind::Client,
                    id,
                    Some(&server),
                    db_start,
                    db_start + db_ns,
                    db,
                    false,
                );
            }
            end
        });

        // 3. payment
        let pay_ns = Latency::LogNormal { median: Duration::from_millis(25), sigma: 0.4 }.sample(b.rng);
        let pay_error = b.rng.random_bool(self.error_rate);
        failed |= pay_error;
        let pay_attrs = vec![
            kv("http.request.method", s("POST")),
            kv("http.route", s("/charge")),
            kv("http.response.status_code", Value::IntValue(if pay_error { 502 } else { 200 })),
        ];
        t = b.rpc(&root, "frontend", "payment", "POST /charge", t, pay_ns, pay_error, pay_attrs);

        let end = t + Latency::Exponential { mean: Duration::from_micros(200) }.sample(b.rng);
        let attrs = vec![
            kv("http.request.method", s("POST")),
            kv("http.route", s("/api/checkout")),
            kv("url.path", s("/api/checkout")),
            kv("http.response.status_code", Value::IntValue(if failed { 500 } else { 200 })),
            kv("user.id", Value::IntValue(user)),
            kv("enduser.premium", Value::BoolValue(user % 7 == 0)),
        ];
        b.push("frontend", "POST /api/checkout", SpanKind::Server, root, None, now, end, attrs, failed);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn parses_latencies() {
        assert_eq!(Latency::parse("fixed:5ms"), Ok(Latency::Fixed(Duration::from_millis(5))));
        assert_eq!(Latency::parse("exp:10ms"), Ok(Latency::Exponential { mean: Duration::from_millis(10) }));
        assert_eq!(
            Latency::parse("lognormal:10ms:2"),
            Ok(Latency::LogNormal { median: Duration::from_millis(10), sigma: 2.0 })
        );
        assert!(Latency::parse("gauss:1ms").is_err());
    }

    #[test]
    fn exponential_samples_have_the_requested_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        let latency = Latency::Exponential { mean: Duration::from_millis(10) };
        let n = 100_000;
        let mean = (0..n).map(|_| latency.sample(&mut rng) as f64).sum::<f64>() / n as f64;
        // standard error of the mean is 10ms / sqrt(n) ≈ 0.03 ms
        assert!((mean / 1e6 - 10.0).abs() < 0.15, "mean {mean}");
    }

    #[test]
    fn parallel_fanout_parent_is_the_slowest_call() {
        let workload = Workload {
            scenario: Scenario::Fanout,
            fanout: 10,
            random_fanout: false,
            error_rate: 0.0,
            leaf_latency: Latency::Exponential { mean: Duration::from_millis(10) },
            ..Workload::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let request = workload.request(&mut rng, 1, 1_000_000_000);
        let spans: Vec<&Span> =
            request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert_eq!(spans.len(), 21);
        let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
        let children: Vec<_> = spans.iter().filter(|s| s.parent_span_id == root.span_id).collect();
        assert_eq!(children.len(), 10);
        let slowest = children.iter().map(|c| c.end_time_unix_nano).max().unwrap();
        assert_eq!(root.end_time_unix_nano, slowest);
        assert!(children.iter().all(|c| c.start_time_unix_nano == root.start_time_unix_nano));
    }
}
