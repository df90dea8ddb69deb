//! The transport-independent ingest path: tenant, limits, admission of the
//! body's bytes, decoding and conversion to Arrow, group commit, and the OTLP
//! partial-success answer.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use spanlake_schemas::encode::{AppendReport, SpanBatchBuilder};
use spanlake_schemas::tenant::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Limits;
use crate::buffer::Pipeline;
use crate::decode::{self, Format};
use crate::error::{IngestError, Result};
use crate::metrics::{Metrics, TenantLabel};

/// Bodies larger than this are converted on the blocking pool.
pub(crate) const INLINE_DECODE_BYTES: usize = 256 << 10;

#[derive(Debug)]
pub(crate) struct IngestService {
    pub(crate) limits: Limits,
    pub(crate) multi_tenant: bool,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) metrics: Arc<Metrics>,
    /// Bytes of request bodies being read, decompressed or converted, in
    /// permits of one byte, up to `limits.max_decoding_bytes`.
    decoding: Arc<Semaphore>,
}

/// Bytes of one request admitted for reading and decoding; given back when
/// its spans have entered the buffers (whose own bounds take over) or it failed.
#[derive(Debug)]
pub(crate) struct Admission(OwnedSemaphorePermit);

impl IngestService {
    pub(crate) fn new(limits: Limits, multi_tenant: bool, pipeline: Arc<Pipeline>, metrics: Arc<Metrics>) -> Self {
        let permits = limits.max_decoding_bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Self { limits, multi_tenant, pipeline, metrics, decoding: Arc::new(Semaphore::new(permits)) }
    }

    /// The tenant of a request from its `X-Scope-OrgID` header value.
    pub(crate) fn tenant(&self, header: Option<&[u8]>) -> Result<TenantId> {
        Ok(TenantId::from_header(self.multi_tenant, header)?)
    }

    /// Admits `bytes` more of a request body for reading and decoding, or
    /// refuses at once (retryable) when the bodies in hand already hold the
    /// limit. Never waits: overload is an answer, not a queue.
    pub(crate) fn admit(&self, admission: Option<Admission>, bytes: usize) -> Result<Admission> {
        let permits = bytes.min(self.limits.max_decoding_bytes).min(u32::MAX as usize) as u32;
        match Arc::clone(&self.decoding).try_acquire_many_owned(permits) {
            Ok(mut permit) => {
                if let Some(Admission(held)) = admission {
                    permit.merge(held);
                }
                Ok(Admission(permit))
            }
            Err(_) => {
                self.metrics.refused("decoding_full");
                Err(IngestError::Overloaded {
                    scope: "request bodies being decoded",
                    retry_after: std::time::Duration::from_secs(1),
                })
            }
        }
    }

    /// Decodes `body` (admitted by the transport that read it), stores its
    /// valid spans durably and answers with partial success for the rest.
    pub(crate) async fn export(
        &self,
        tenant: &TenantId,
        body: Bytes,
        format: Format,
        admission: Admission,
    ) -> Result<ExportTraceServiceResponse> {
        self.metrics.bytes_received.inc_by(body.len() as u64);
        let max_len = self.limits.max_attribute_value_bytes;
        let future = self.limits.max_span_future;
        let max_spans = self.limits.max_spans_per_request;
        let large = body.len() > INLINE_DECODE_BYTES;
        let convert = move || {
            let mut builder = SpanBatchBuilder::new(max_len);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            builder.refuse_after((now + future).as_nanos().min(i64::MAX as u128) as i64, future);
            decode::convert(&body, format, builder, max_spans)
        };
        let converted = if large {
            tokio::task::spawn_blocking(convert).await.expect("span conversion panicked")
        } else {
            convert()
        };
        let converted = converted.inspect_err(|error| match error {
            IngestError::TooManySpans { .. } => self.metrics.refused("too_many_spans"),
            IngestError::Expands { .. } => self.metrics.refused("expands"),
            _ => {}
        })?;
        let (report, truncated) = (converted.report, converted.truncated);
        let label = TenantLabel { tenant: tenant.to_string() };
        self.metrics.spans_rejected.get_or_create(&label).inc_by(report.rejected);
        self.metrics.attribute_values_truncated.inc_by(truncated);
        if converted.batch.num_rows() > 0 {
            let durable = self.pipeline.submit(tenant, converted.batch).await?;
            drop(admission);
            match durable.await {
                Ok(Ok(())) => {}
                _ => return Err(IngestError::Unavailable { retry_after: std::time::Duration::from_secs(1) }),
            }
        }
        self.metrics.spans_received.get_or_create(&label).inc_by(report.accepted);
        Ok(partial_success(&report, truncated, max_len))
    }
}

fn partial_success(report: &AppendReport, truncated: u64, max_len: usize) -> ExportTraceServiceResponse {
    let mut message = report.first_error.clone().map(|first| {
        format!("{} of {} spans rejected; first: {first}", report.rejected, report.rejected + report.accepted)
    });
    if truncated > 0 {
        let warning = format!("{truncated} attribute values truncated to {max_len} bytes");
        message = Some(match message {
            Some(m) => format!("{m}; {warning}"),
            None => warning,
        });
    }
    ExportTraceServiceResponse {
        partial_success: message
            .map(|error_message| ExportTracePartialSuccess { rejected_spans: report.rejected as i64, error_message }),
    }
}
