//! OTLP/gRPC `TraceService/Export`.
//!
//! tonic frames, decompresses (gzip) and bounds the message
//! (`max_decoding_message_size`); the codec hands over its bytes undecoded.
//! The ingest service then admits them and decodes one span at a time, like
//! OTLP/HTTP bodies. So undecodable input answers INVALID_ARGUMENT (prost's
//! codec would answer INTERNAL), and decoding memory is bounded by the same
//! rules on both transports.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};

use crate::decode::Format;
use crate::service::IngestService;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The `TraceService` gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct GrpcReceiver {
    service: Arc<IngestService>,
}

impl NamedService for GrpcReceiver {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

pub(crate) fn server(service: Arc<IngestService>) -> GrpcReceiver {
    GrpcReceiver { service }
}

impl<B> Service<http::Request<B>> for GrpcReceiver
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("only TraceService/Export is served").into_http())
            });
        }
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            let limit = service.limits.max_request_bytes;
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.unary(Export(service), request).await)
        })
    }
}

/// One export: the message's bytes, undecoded.
struct Export(Arc<IngestService>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move {
            let header = request.metadata().get("x-scope-orgid").map(|v| v.as_bytes().to_vec());
            let tenant = service.tenant(header.as_deref()).map_err(|e| e.to_grpc_status())?;
            let body = request.into_inner();
            let admission = service.admit(None, body.len()).map_err(|e| e.to_grpc_status())?;
            match service.export(&tenant, body, Format::Protobuf, admission).await {
                Ok(response) => Ok(tonic::Response::new(response)),
                Err(error) => Err(error.to_grpc_status()),
            }
        })
    }
}

/// Requests as bytes (decoded by the ingest service), responses with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

#[derive(Debug)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst).map_err(|e| tonic::Status::internal(format!("encoding the response: {e}")))
    }
}

#[derive(Debug)]
struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
