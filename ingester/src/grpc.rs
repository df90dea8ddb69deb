//! OTLP/gRPC `TraceService/Export`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;
use tonic::codec::CompressionEncoding;

use crate::service::IngestService;

#[derive(Debug, Clone)]
pub(crate) struct GrpcReceiver {
    service: Arc<IngestService>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let header = request.metadata().get("x-scope-orgid").map(|v| v.as_bytes().to_vec());
        let service = &self.service;
        let tenant = service.tenant(header.as_deref()).map_err(|e| e.to_grpc_status())?;
        let request = request.into_inner();
        let size = request.encoded_len();
        match service.export(&tenant, request, size).await {
            Ok(response) => Ok(tonic::Response::new(response)),
            Err(error) => Err(error.to_grpc_status()),
        }
    }
}

/// The gRPC service, accepting gzip and limiting decoded message size.
pub(crate) fn server(service: Arc<IngestService>) -> TraceServiceServer<GrpcReceiver> {
    let limit = service.limits.max_request_bytes;
    TraceServiceServer::new(GrpcReceiver { service })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
}
