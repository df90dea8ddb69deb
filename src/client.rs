//! Client subcommands against a running Spanlake: `spanlake sql` prints a
//! table, `spanlake trace` prints a waterfall.

use std::collections::HashMap;

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use prost::Message as _;

/// Where the query API is, and as whom to ask.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Spanlake query API URL
    #[arg(long, env = "SPANLAKE_URL", default_value = "http://127.0.0.1:3200")]
    pub url: String,
    /// Tenant sent as X-Scope-OrgID
    #[arg(long, env = "SPANLAKE_TENANT")]
    pub tenant: Option<String>,
}

impl ClientArgs {
    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.tenant {
            Some(tenant) => builder.header("x-scope-orgid", tenant),
            None => builder,
        }
    }
}

async fn fail_unless_ok(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    bail!("{status}: {body}")
}

/// Runs one SQL query and renders the rows as a table.
pub async fn sql(args: &ClientArgs, query: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let request = http
        .post(format!("{}/api/sql", args.url.trim_end_matches('/')))
        .header("accept", "application/vnd.apache.arrow.stream")
        .body(query.to_owned());
    let response = args.request(request).send().await.with_context(|| format!("connecting to {}", args.url))?;
    let bytes = fail_unless_ok(response).await?.bytes().await?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let batches: Vec<_> = reader.collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    Ok(format!("{}\n({rows} rows)", arrow::util::pretty::pretty_format_batches(&batches)?))
}

/// Fetches a trace and renders it as a waterfall.
pub async fn trace(args: &ClientArgs, id: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let request = http
        .get(format!("{}/api/traces/{id}", args.url.trim_end_matches('/')))
        .header("accept", "application/protobuf");
    let response = args.request(request).send().await.with_context(|| format!("connecting to {}", args.url))?;
    if response.status() == 404 {
        bail!("trace {id} not found");
    }
    let data = TracesData::decode(fail_unless_ok(response).await?.bytes().await?)?;
    Ok(waterfall(&data, 40))
}

/// One line per span, children under their parent, with offset, duration and a bar.
pub fn waterfall(data: &TracesData, width: usize) -> String {
    let mut spans: Vec<(String, &Span)> = Vec::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| spanlake_schemas::encode::service_name(r))
            .unwrap_or("<unknown>")
            .to_owned();
        for ss in &rs.scope_spans {
            spans.extend(ss.spans.iter().map(|s| (service.clone(), s)));
        }
    }
    if spans.is_empty() {
        return "(no spans)".into();
    }
    spans.sort_by_key(|(_, s)| (s.start_time_unix_nano, s.span_id.clone()));
    let start = spans.iter().map(|(_, s)| s.start_time_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|(_, s)| s.end_time_unix_nano).max().unwrap_or(start).max(start + 1);
    let ids: HashMap<&[u8], usize> = spans.iter().enumerate().map(|(i, (_, s))| (s.span_id.as_slice(), i)).collect();
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, (_, span)) in spans.iter().enumerate() {
        let parent = ids.get(span.parent_span_id.as_slice()).copied().filter(|p| *p != i);
        children.entry(parent).or_default().push(i);
    }
    // Depth-first from the roots (spans whose parent is absent).
    let mut order = Vec::new();
    let mut stack: Vec<(usize, usize)> =
        children.get(&None).map(|r| r.iter().rev().map(|i| (*i, 0)).collect()).unwrap_or_default();
    let mut visited = vec![false; spans.len()];
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, depth));
        if let Some(kids) = children.get(&Some(i)) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // Spans in a parent cycle (bad data) still get printed.
    order.extend((0..spans.len()).filter(|i| !visited[*i]).map(|i| (i, 0)));
    let total = (end - start) as f64;
    let labels: Vec<String> =
        order.iter().map(|(i, depth)| format!("{}{} {}", "  ".repeat(*depth), spans[*i].0, spans[*i].1.name)).collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).min(60);
    let mut out =
        format!("trace {}  {} spans  {}\n", hex::encode(&spans[0].1.trace_id), spans.len(), format_ns(end - start));
    for ((i, _), label) in order.iter().zip(labels) {
        let span = spans[*i].1;
        let offset = span.start_time_unix_nano.saturating_sub(start);
        let duration = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano);
        let from = ((offset as f64 / total) * width as f64).floor() as usize;
        let len = (((duration as f64 / total) * width as f64).round() as usize).max(1).min(width - from.min(width - 1));
        let bar = format!(
            "{}{}{}",
            " ".repeat(from.min(width - 1)),
            "█".repeat(len),
            " ".repeat(width.saturating_sub(from + len))
        );
        let status = match span.status.as_ref().map(|s| s.code) {
            Some(2) => "ERROR",
            Some(1) => "ok",
            _ => "",
        };
        let label: String = label.chars().take(label_width).collect();
        out.push_str(&format!(
            "{label:<label_width$}  {:>9}  {:>9}  |{bar}|  {status}\n",
            format!("+{}", format_ns(offset)),
            format_ns(duration)
        ));
    }
    out
}

fn format_ns(ns: u64) -> String {
    match ns {
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{:.1}µs", n as f64 / 1e3),
        n if n < 1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n => format!("{:.2}s", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    fn span(id: u8, parent: Option<u8>, name: &str, start_ms: u64, dur_ms: u64) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: start_ms * 1_000_000,
            end_time_unix_nano: (start_ms + dur_ms) * 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn waterfall_nests_children_and_scales_bars() {
        let service = KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(Value::StringValue("shop".into())) }),
            ..Default::default()
        };
        let mut failing = span(3, Some(1), "pay", 50, 50);
        failing.status = Some(Status { code: 2, message: String::new() });
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![service], ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![failing, span(2, Some(1), "cart", 0, 50), span(1, None, "checkout", 0, 100)],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        let text = waterfall(&data, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("3 spans") && lines[0].contains("100.0ms"), "{text}");
        assert!(lines[1].starts_with("shop checkout"), "{text}");
        assert!(lines[1].contains("|██████████|"), "{text}");
        assert!(lines[2].starts_with("  shop cart") && lines[2].contains("|█████     |"), "{text}");
        assert!(
            lines[3].starts_with("  shop pay") && lines[3].contains("|     █████|") && lines[3].ends_with("ERROR"),
            "{text}"
        );
    }
}

/// What `spanlake fanout` asks.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Parent service
    #[arg(long, env = "SPANLAKE_FANOUT_SERVICE")]
    pub service: Option<String>,
    /// Parent operation (span name)
    #[arg(long, env = "SPANLAKE_FANOUT_OPERATION")]
    pub operation: Option<String>,
    /// Or: a TraceQL spanset filter picking the parent spans
    #[arg(long, env = "SPANLAKE_FANOUT_QUERY")]
    pub query: Option<String>,
    /// How far back from now
    #[arg(long, env = "SPANLAKE_FANOUT_SINCE", default_value = "1h", value_parser = crate::units::parse_duration)]
    pub since: std::time::Duration,
    /// Edges by the child span (child) or by the callee's server span / peer.service (server)
    #[arg(long, env = "SPANLAKE_FANOUT_EDGE", default_value = "child")]
    pub edge: String,
    /// Calls are client and producer children (outbound) or all children (all)
    #[arg(long, env = "SPANLAKE_FANOUT_CHILD_KINDS", default_value = "outbound")]
    pub child_kinds: String,
    /// Most parent operations shown
    #[arg(long, env = "SPANLAKE_FANOUT_LIMIT", default_value = "5")]
    pub limit: usize,
}

/// Asks `/api/fanout` and renders the report.
pub async fn fanout(args: &ClientArgs, fanout: &FanoutArgs) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut query = vec![
        ("start", now.saturating_sub(fanout.since.as_secs()).to_string()),
        ("end", now.to_string()),
        ("edge", fanout.edge.clone()),
        ("child_kinds", fanout.child_kinds.clone()),
        ("limit", fanout.limit.to_string()),
        ("percentiles", "0.5,0.99,0.999".into()),
    ];
    for (name, value) in [("service", &fanout.service), ("operation", &fanout.operation), ("q", &fanout.query)] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let http = reqwest::Client::new();
    let request = http.get(format!("{}/api/fanout", args.url.trim_end_matches('/'))).query(&query);
    let response = args.request(request).send().await.with_context(|| format!("connecting to {}", args.url))?;
    let report: serde_json::Value = serde_json::from_slice(&fail_unless_ok(response).await?.bytes().await?)?;
    Ok(render_fanout(&report))
}

/// The fan-out report as text: per edge, then observed against predicted.
pub fn render_fanout(report: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let ms = |v: &serde_json::Value| v.as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
    let pct = |v: &serde_json::Value| v.as_f64().map_or_else(|| "-".to_owned(), |v| format!("{:.1} %", v * 100.0));
    let mut out = String::new();
    let operations = report["operations"].as_array().cloned().unwrap_or_default();
    if operations.is_empty() {
        return "no parent spans with calls in this time range\n".into();
    }
    for op in operations {
        let _ = writeln!(
            out,
            "{} / {}: {} parents, {} calls per parent on average, {} without calls",
            op["parent"]["service"].as_str().unwrap_or(""),
            op["parent"]["operation"].as_str().unwrap_or(""),
            op["parents"],
            op["degree"]["mean"].as_f64().map_or("-".into(), |m| format!("{m:.1}")),
            op["parents_without_calls"],
        );
        let _ = writeln!(
            out,
            "  {:<40} {:>8} {:>11} {:>11} {:>14} {:>9}",
            "edge", "calls/p", "child p50", "child p99", "slowest p99", "crit.path"
        );
        for edge in op["edges"].as_array().cloned().unwrap_or_default() {
            let name = format!(
                "{} / {}",
                edge["child"]["service"].as_str().unwrap_or(""),
                edge["child"]["operation"].as_str().unwrap_or("")
            );
            let _ = writeln!(
                out,
                "  {:<40} {:>8} {:>11} {:>11} {:>14} {:>9}",
                name,
                edge["calls_per_parent"]["mean"].as_f64().map_or("-".into(), |m| format!("{m:.1}")),
                ms(&edge["child_latency_ms"]["p50"]),
                ms(&edge["child_latency_ms"]["p99"]),
                ms(&edge["edge_max_latency_ms"]["p99"]),
                pct(&edge["critical_path_share"]),
            );
        }
        let _ = writeln!(
            out,
            "  {:<10} {:>12} {:>12} {:>14}  a trace there",
            "parent", "observed", "predicted", "slowest call"
        );
        for label in ["p50", "p99", "p99.9"] {
            let exemplar = op["parent_exemplars"][label][0]["trace_id"].as_str().unwrap_or("-");
            let _ = writeln!(
                out,
                "  {:<10} {:>12} {:>12} {:>14}  {exemplar}",
                label,
                ms(&op["parent_latency_ms"][label]),
                ms(&op["predicted_latency_ms"][label]),
                ms(&op["max_child_latency_ms"][label]),
            );
        }
        let buckets = op["degree_buckets"].as_array().cloned().unwrap_or_default();
        if buckets.len() > 1 {
            let _ = writeln!(
                out,
                "  {:<10} {:>8} {:>12} {:>12} {:>12} {:>12}",
                "calls", "parents", "p50", "p50 pred.", "p99", "p99 pred."
            );
            for bucket in buckets {
                let (min, max) = (bucket["min_calls"].as_u64().unwrap_or(0), bucket["max_calls"].as_u64().unwrap_or(0));
                let calls = if min == max { min.to_string() } else { format!("{min}-{max}") };
                let _ = writeln!(
                    out,
                    "  {:<10} {:>8} {:>12} {:>12} {:>12} {:>12}",
                    calls,
                    bucket["parents"],
                    ms(&bucket["observed_ms"]["p50"]),
                    ms(&bucket["predicted_ms"]["p50"]),
                    ms(&bucket["observed_ms"]["p99"]),
                    ms(&bucket["predicted_ms"]["p99"]),
                );
            }
        }
        let _ = writeln!(
            out,
            "  parent's own share of its critical path: {}; parallelism (busy / in flight) p50: {}\n",
            pct(&op["parent_self_share"]),
            op["parallelism_ratio"]["p50"].as_f64().map_or("-".into(), |m| format!("{m:.2}")),
        );
    }
    out
}
