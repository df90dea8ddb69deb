//! The `/api/search` answer in Tempo's shape (proto3 JSON of `SearchResponse`).

use serde_json::{Map, Value, json};

use super::fields::OutputField;
use super::{Found, SearchParams, Spanset};

/// What Tempo shows when a trace's root span has not arrived.
const NO_ROOT: &str = "<root span not yet received>";

#[derive(Debug)]
pub(crate) struct SearchResponse(pub(crate) Value, pub(crate) crate::blocks::Partial);

/// Trace id as Tempo prints it in search results: hex without leading zeros.
pub(crate) fn trace_id_hex(id: &[u8]) -> String {
    let hex = hex::encode(id);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() { "0".into() } else { trimmed.to_owned() }
}

fn spanset(set: &Spanset, fields: &[OutputField], spss: usize) -> Value {
    let mut spans = set.spans.clone();
    spans.sort_by_key(|s| (s.start, s.span_id));
    let shown: Vec<Value> = spans
        .iter()
        .take(spss)
        .map(|span| {
            let attributes: Vec<Value> = fields
                .iter()
                .zip(&span.values)
                .filter(|(f, _)| f.shown)
                .filter_map(|(f, (value, _, _))| Some(json!({ "key": f.key, "value": value.clone()? })))
                .collect();
            let mut object = Map::new();
            object.insert("spanID".into(), json!(hex::encode(span.span_id)));
            if !span.name.is_empty() {
                object.insert("name".into(), json!(span.name));
            }
            object.insert("startTimeUnixNano".into(), json!(span.start.to_string()));
            object.insert("durationNanos".into(), json!(span.duration.to_string()));
            if !attributes.is_empty() {
                object.insert("attributes".into(), Value::Array(attributes));
            }
            Value::Object(object)
        })
        .collect();
    let mut object = Map::new();
    object.insert("spans".into(), Value::Array(shown));
    object.insert("matched".into(), json!(set.spans.len()));
    if !set.by.is_empty() {
        let by: Vec<Value> = set.by.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
        object.insert("attributes".into(), Value::Array(by));
    }
    Value::Object(object)
}

impl SearchResponse {
    pub(crate) fn new(
        found: Found,
        fields: &[OutputField],
        params: &SearchParams,
        total_blocks: u64,
        total_block_bytes: u64,
    ) -> Self {
        let traces: Vec<Value> = found
            .traces
            .iter()
            .map(|(id, summary, sets)| {
                let sets: Vec<Value> = sets.iter().map(|s| spanset(s, fields, params.spss)).collect();
                let mut object = Map::new();
                object.insert("traceID".into(), json!(trace_id_hex(id)));
                object.insert(
                    "rootServiceName".into(),
                    json!(summary.root_service.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| NO_ROOT.into())),
                );
                if let Some(name) = summary.root_name.as_ref().filter(|n| !n.is_empty()) {
                    object.insert("rootTraceName".into(), json!(name));
                }
                object.insert("startTimeUnixNano".into(), json!(summary.start.to_string()));
                let duration_ms = (summary.end - summary.start).max(0) / 1_000_000;
                if duration_ms > 0 {
                    object.insert("durationMs".into(), json!(duration_ms));
                }
                if let Some(first) = sets.first() {
                    object.insert("spanSet".into(), first.clone());
                }
                object.insert("spanSets".into(), Value::Array(sets));
                let stats: Map<String, Value> = summary
                    .services
                    .iter()
                    .map(|(service, (spans, errors))| {
                        let mut s = json!({ "spanCount": spans });
                        if *errors > 0 {
                            s["errorCount"] = json!(errors);
                        }
                        (service.clone(), s)
                    })
                    .collect();
                object.insert("serviceStats".into(), Value::Object(stats));
                Value::Object(object)
            })
            .collect();
        let mut metrics = Map::new();
        if found.inspected_traces > 0 {
            metrics.insert("inspectedTraces".into(), json!(found.inspected_traces));
        }
        if total_blocks > 0 {
            metrics.insert("totalBlocks".into(), json!(total_blocks));
            metrics.insert("totalBlockBytes".into(), json!(total_block_bytes.to_string()));
        }
        metrics.insert("completedJobs".into(), json!(1));
        metrics.insert("totalJobs".into(), json!(1));
        Self(json!({ "traces": traces, "metrics": metrics }), crate::blocks::Partial::default())
    }
}

#[cfg(test)]
mod tests {
    use super::trace_id_hex;

    #[test]
    fn trace_ids_lose_leading_zeros() {
        let mut id = [0u8; 16];
        id[15] = 0xab;
        assert_eq!(trace_id_hex(&id), "ab");
        id[0] = 0x0f;
        assert_eq!(trace_id_hex(&id), format!("f{}ab", "0".repeat(28)));
    }
}
