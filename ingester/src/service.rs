//! The transport-independent ingest path: tenant, limits, validation,
//! conversion to Arrow, group commit, and the OTLP partial-success answer.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use spanlake_schemas::encode::{AppendReport, SpanBatchBuilder};
use spanlake_schemas::tenant::TenantId;

use crate::Limits;
use crate::buffer::Pipeline;
use crate::error::{IngestError, Result};
use crate::metrics::{Metrics, TenantLabel};

/// Requests with more spans than this are converted on the blocking pool.
const INLINE_CONVERSION_SPANS: usize = 512;

#[derive(Debug)]
pub(crate) struct IngestService {
    pub(crate) limits: Limits,
    pub(crate) multi_tenant: bool,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) metrics: Arc<Metrics>,
}

impl IngestService {
    /// The tenant of a request from its `X-Scope-OrgID` header value.
    pub(crate) fn tenant(&self, header: Option<&[u8]>) -> Result<TenantId> {
        Ok(TenantId::from_header(self.multi_tenant, header)?)
    }

    /// Stores the valid spans of `request` durably and answers with partial
    /// success for the rest.
    pub(crate) async fn export(
        &self,
        tenant: &TenantId,
        request: ExportTraceServiceRequest,
        body_bytes: usize,
    ) -> Result<ExportTraceServiceResponse> {
        self.metrics.bytes_received.inc_by(body_bytes as u64);
        let spans: usize = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        if spans > self.limits.max_spans_per_request {
            self.metrics.refused("too_many_spans");
            return Err(IngestError::TooManySpans { spans, limit: self.limits.max_spans_per_request });
        }
        let max_len = self.limits.max_attribute_value_bytes;
        let future = self.limits.max_span_future;
        let convert = move || {
            let mut builder = SpanBatchBuilder::new(max_len);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            builder.refuse_after((now + future).as_nanos().min(i64::MAX as u128) as i64, future);
            let mut report = AppendReport::default();
            builder.append_resource_spans(&request.resource_spans, &mut report);
            let truncated = builder.truncated_values();
            (builder.finish(), report, truncated)
        };
        let (batch, report, truncated) = if spans > INLINE_CONVERSION_SPANS {
            tokio::task::spawn_blocking(convert).await.expect("span conversion panicked")
        } else {
            convert()
        };
        let label = TenantLabel { tenant: tenant.to_string() };
        self.metrics.spans_rejected.get_or_create(&label).inc_by(report.rejected);
        self.metrics.attribute_values_truncated.inc_by(truncated);
        if batch.num_rows() > 0 {
            let durable = self.pipeline.submit(tenant, batch).await?;
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
