//! OTLP export over gRPC, HTTP/protobuf or HTTP/JSON with retries on
//! retryable answers (429, 502, 503, 504; RESOURCE_EXHAUSTED, UNAVAILABLE).

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, anyhow};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::LoadgenArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

#[derive(Debug, Clone)]
pub(super) enum Client {
    Grpc { client: TraceServiceClient<Channel>, tenant: Option<String> },
    Http { client: reqwest::Client, url: String, json: bool, gzip: bool, tenant: Option<String> },
}

/// The result of one request after retries: spans rejected, or the error.
#[derive(Debug)]
pub struct SendOutcome {
    pub result: anyhow::Result<u64>,
    pub retries: u32,
}

enum Attempt {
    Done(u64),
    Retry(Duration, String),
    Fatal(String),
}

impl Client {
    pub(super) async fn connect(args: &LoadgenArgs) -> anyhow::Result<Self> {
        let tenant = args.tenant.clone();
        Ok(match args.protocol {
            Protocol::Grpc => {
                let endpoint = args.endpoint.clone().unwrap_or_else(|| "http://127.0.0.1:4317".into());
                let channel = Channel::from_shared(endpoint.clone())
                    .with_context(|| format!("invalid endpoint {endpoint}"))?
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {endpoint}"))?;
                let mut client = TraceServiceClient::new(channel).max_decoding_message_size(64 << 20);
                if args.gzip {
                    client =
                        client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
                }
                Self::Grpc { client, tenant }
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let endpoint = args.endpoint.clone().unwrap_or_else(|| "http://127.0.0.1:4318".into());
                let url = if endpoint.ends_with("/v1/traces") {
                    endpoint
                } else {
                    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                };
                Self::Http {
                    client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
                    url,
                    json: args.protocol == Protocol::HttpJson,
                    gzip: args.gzip,
                    tenant,
                }
            }
        })
    }

    pub(super) async fn send_with_retries(&self, request: &ExportTraceServiceRequest, max_retries: u32) -> SendOutcome {
        let mut retries = 0;
        loop {
            match self.send(request).await {
                Attempt::Done(rejected) => return SendOutcome { result: Ok(rejected), retries },
                Attempt::Fatal(message) => return SendOutcome { result: Err(anyhow!(message)), retries },
                Attempt::Retry(delay, message) => {
                    if retries >= max_retries {
                        return SendOutcome {
                            result: Err(anyhow!("gave up after {retries} retries: {message}")),
                            retries,
                        };
                    }
                    retries += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn send(&self, request: &ExportTraceServiceRequest) -> Attempt {
        match self {
            Self::Grpc { client, tenant } => {
                let mut req = tonic::Request::new(request.clone());
                if let Some(tenant) = tenant {
                    match tenant.parse() {
                        Ok(value) => {
                            req.metadata_mut().insert("x-scope-orgid", value);
                        }
                        Err(_) => return Attempt::Fatal(format!("tenant {tenant:?} is not a valid header value")),
                    }
                }
                match client.clone().export(req).await {
                    Ok(response) => Attempt::Done(rejected(&response.into_inner())),
                    Err(status) => match status.code() {
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Aborted => {
                            Attempt::Retry(grpc_retry_delay(&status), status.message().to_owned())
                        }
                        _ => Attempt::Fatal(format!("{:?}: {}", status.code(), status.message())),
                    },
                }
            }
            Self::Http { client, url, json, gzip, tenant } => {
                let (body, content_type) = if *json {
                    (serde_json::to_vec(request).expect("request serializes"), "application/json")
                } else {
                    (request.encode_to_vec(), "application/x-protobuf")
                };
                let mut builder = client.post(url).header("content-type", content_type);
                let body = if *gzip {
                    builder = builder.header("content-encoding", "gzip");
                    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    encoder.write_all(&body).expect("in-memory write");
                    encoder.finish().expect("in-memory write")
                } else {
                    body
                };
                if let Some(tenant) = tenant {
                    builder = builder.header("x-scope-orgid", tenant);
                }
                let response = match builder.body(body).send().await {
                    Ok(response) => response,
                    Err(error) => return Attempt::Retry(Duration::from_millis(500), error.to_string()),
                };
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let bytes = response.bytes().await.unwrap_or_default();
                match status {
                    200 => {
                        let decoded: Option<ExportTraceServiceResponse> = if *json {
                            serde_json::from_slice(&bytes).ok()
                        } else {
                            ExportTraceServiceResponse::decode(bytes.as_ref()).ok()
                        };
                        Attempt::Done(decoded.map(|r| rejected(&r)).unwrap_or(0))
                    }
                    429 | 502 | 503 | 504 => Attempt::Retry(
                        retry_after.unwrap_or(Duration::from_millis(500)),
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                    ),
                    _ => Attempt::Fatal(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))),
                }
            }
        }
    }
}

fn rejected(response: &ExportTraceServiceResponse) -> u64 {
    response.partial_success.as_ref().map(|p| p.rejected_spans.max(0) as u64).unwrap_or(0)
}

fn grpc_retry_delay(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt;
    status.get_details_retry_info().and_then(|info| info.retry_delay).unwrap_or(Duration::from_millis(500))
}
