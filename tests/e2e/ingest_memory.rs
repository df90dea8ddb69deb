//! What one OTLP request may cost the real binary: memory within a small
//! multiple of its body, bodies admitted before they are read (429 beyond
//! `--max-decoding-bytes`), and undecodable gRPC input answered
//! INVALID_ARGUMENT.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::Workload;
use tokio::io::AsyncWriteExt as _;

use crate::common::{TestServer, spawn_spanlake};
use spanlake_test_support::otlp::{request, trace};

/// How a case sends its body.
#[derive(Debug, Clone, Copy)]
enum Transport {
    HttpProtobuf,
    HttpJson,
    Grpc,
}

/// Peak RSS a fresh server process adds while answering one request with
/// `body`, in bytes; also the answer (status, body) over HTTP, or the gRPC
/// response re-encoded.
async fn added_peak(transport: Transport, body: Vec<u8>) -> (f64, u16, Bytes) {
    let dir = tempfile::TempDir::new().unwrap();
    let process = spawn_spanlake(&["--storage", dir.path().to_str().unwrap(), "--compaction", "false"]);
    let pid = process.child.id();
    let bytes_of = |field: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 1024.0
    };
    let http = reqwest::Client::new();
    let otlp = format!("http://{}/v1/traces", process.otlp_http.unwrap());
    let mut grpc = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{}", process.grpc.unwrap()),
    )
    .await
    .unwrap()
    .max_encoding_message_size(64 << 20);
    // Warm up the paths (threads, pools) with a small request, then measure.
    let warm = request(vec![trace(200, "warm", 1, now_ns())]);
    grpc.export(warm.clone()).await.unwrap();
    let (status, _) = post(&http, &otlp, "application/x-protobuf", warm.encode_to_vec()).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = bytes_of("VmRSS:");
    let (status, answer) = match transport {
        Transport::HttpProtobuf => post(&http, &otlp, "application/x-protobuf", body).await,
        Transport::HttpJson => post(&http, &otlp, "application/json", body).await,
        Transport::Grpc => {
            let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            let response = grpc.export(request).await.unwrap().into_inner();
            (200, Bytes::from(response.encode_to_vec()))
        }
    };
    (bytes_of("VmHWM:") - before, status, answer)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

async fn post(http: &reqwest::Client, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Bytes) {
    let response = http.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap())
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A resource whose attributes hold an array of `n` small integers.
fn resource_with_array(n: i64) -> Resource {
    let values = (0..n).map(|i| AnyValue { value: Some(Value::IntValue(i)) }).collect();
    let array = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) };
    Resource {
        attributes: vec![KeyValue { key: "ids".into(), value: Some(array), ..Default::default() }],
        ..Default::default()
    }
}

/// What the first request of a fresh process costs whatever its size:
/// blocking-pool threads and their allocator heaps, Parquet's column writers
/// and zstd contexts for the block it fills, each first touch of a region
/// faulting in a whole transparent huge page (measured: 9 to 46 MiB for
/// bodies of 0.2 to 1 MiB, varying from run to run).
const FIRST_USE: usize = 64 << 20;

/// No request costs a fresh process more than 8x its (decompressed) body,
/// beyond what its first use costs: floods of empty messages, a
/// resource carrying a huge array, and ordinary requests of every size over
/// each transport. Before decoding was bounded, 15 MiB of empty
/// `ResourceSpans` cost 0.6 to 1.6 GB, and a 302 KiB request whose resource
/// held a large array cost 515 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_costs_more_than_eight_times_its_body_beyond_first_use() {
    let base_ns = now_ns();
    let mut rng = StdRng::seed_from_u64(7);
    let loadgen = |rng: &mut StdRng, traces: usize| Workload::default().request(rng, traces, base_ns);
    let mut array_resource = trace(1, "array", 10, base_ns);
    array_resource.resource = Some(resource_with_array(60_000));
    let cases: Vec<(&str, Transport, Vec<u8>, u16)> = vec![
        (
            "15 MiB of empty ResourceSpans",
            Transport::HttpProtobuf,
            request(vec![ResourceSpans::default(); 7_500_000]).encode_to_vec(),
            200,
        ),
        (
            "JSON flood of empty objects",
            Transport::HttpJson,
            format!("{{\"resourceSpans\":[{}{{}}]}}", "{},".repeat(5_000_000)).into_bytes(),
            400,
        ),
        (
            "resource with a 60k-element array",
            Transport::HttpProtobuf,
            request(vec![array_resource]).encode_to_vec(),
            200,
        ),
        ("SDK-sized request (40 traces)", Transport::Grpc, loadgen(&mut rng, 40).encode_to_vec(), 200),
        ("1 MiB loadgen request, HTTP/protobuf", Transport::HttpProtobuf, loadgen(&mut rng, 250).encode_to_vec(), 200),
        (
            "8 MiB loadgen request, HTTP/protobuf",
            Transport::HttpProtobuf,
            loadgen(&mut rng, 2_000).encode_to_vec(),
            200,
        ),
        ("8 MiB loadgen request, gRPC", Transport::Grpc, loadgen(&mut rng, 2_000).encode_to_vec(), 200),
        (
            "6 MiB loadgen request, HTTP/JSON",
            Transport::HttpJson,
            serde_json::to_vec(&loadgen(&mut rng, 600)).unwrap(),
            200,
        ),
    ];
    let (mut report, mut costs) = (Vec::new(), Vec::new());
    for (name, transport, body, expected) in cases {
        let len = body.len();
        let (added, status, answer) = added_peak(transport, body).await;
        costs.push((len, added));
        assert_eq!(status, expected, "{name}: {}", text(&answer));
        report.push(format!(
            "{name}: body {:.2} MiB, added {:.1} MiB ({:.1}x)",
            len as f64 / 1048576.0,
            added / 1048576.0,
            added / len as f64
        ));
        if name.starts_with("resource with") {
            let partial =
                ExportTraceServiceResponse::decode(answer.clone()).unwrap().partial_success.expect("refused spans");
            assert_eq!(partial.rejected_spans, 11, "{}", partial.error_message);
            assert!(partial.error_message.contains("its resource would take about"), "{}", partial.error_message);
        }
        if name.starts_with("JSON flood") {
            assert!(text(&answer).contains("more than 6x"), "{}", text(&answer));
        }
    }
    println!("{}", report.join("\n"));
    for (line, (len, added)) in report.iter().zip(&costs) {
        assert!(*added <= 8.0 * *len as f64 + FIRST_USE as f64, "{line}\n{report:#?}");
    }
}

/// Request bodies are admitted before they are read: while one request's
/// declared bytes fill `--max-decoding-bytes`, the next is refused at once
/// with a retryable 429, and the first completes when its body arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_decoding_bound_are_refused_before_they_are_read() {
    let server = TestServer::start_with(|a| a.ingester.max_decoding_bytes = 256 << 10).await;
    let base_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = StdRng::seed_from_u64(3);
    let body = Workload::default().request(&mut rng, 200, base_ns).encode_to_vec();
    assert!(body.len() > 256 << 10);
    // A slow client: headers and half the body, then a pause.
    let addr = server.spanlake.otlp_http_addr().unwrap();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let small = request(vec![trace(9, "small", 1, base_ns)]).encode_to_vec();
    let (status, text) = server.export_raw("application/x-protobuf", None, small.clone()).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("request bodies being decoded"), "{text}");
    let mut grpc = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        server.grpc_url(),
    )
    .await
    .unwrap();
    let refused = grpc.export(ExportTraceServiceRequest::decode(small.as_slice()).unwrap()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");

    slow.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut slow, &mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&answer));
    // Admission is given back: the small request now goes through.
    let (status, text) = server.export_raw("application/x-protobuf", None, small).await;
    assert_eq!(status, 200, "{text}");
    server.spanlake.shutdown().await;
}

/// Bytes that are not an export request answer INVALID_ARGUMENT over gRPC, as
/// the OTLP specification asks (prost's codec answered INTERNAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_grpc_input_answers_invalid_argument() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url()).unwrap().connect().await.unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    for garbage in [&[0x0a, 0x05, 0x01][..], &[0xff; 11], b"not protobuf at all"] {
        client.ready().await.unwrap();
        let status = client
            .unary::<Bytes, ExportTraceServiceResponse, _>(
                tonic::Request::new(Bytes::copy_from_slice(garbage)),
                path.parse().unwrap(),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{garbage:?}: {status:?}");
        assert!(status.message().contains("could not be decoded as OTLP protobuf"), "{status:?}");
    }
    server.spanlake.shutdown().await;
}

/// A client codec that sends bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
