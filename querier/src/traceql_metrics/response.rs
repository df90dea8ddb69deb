//! The metrics answers in Tempo's JSON (`QueryRangeResponse`,
//! `QueryInstantResponse`, as gogo jsonpb writes them): lowerCamel names,
//! 64-bit integers as strings, zero values left out.

use serde_json::{Map, Value, json};

use super::MetricsRequest;
use super::series::{Exemplar, Label, Series};
use super::window::Window;
use crate::blocks::Partial;

#[derive(Debug)]
pub(crate) struct MetricsAnswer {
    pub(crate) series: Vec<Series>,
    window: Window,
    /// The series limit the answer was cut to, if it was.
    truncated: Option<usize>,
    pub(crate) inspected_spans: u64,
    pub(crate) total_blocks: u64,
    pub(crate) total_block_bytes: u64,
    pub(crate) partial: Partial,
}

fn labels(labels: &[Label]) -> Value {
    Value::Array(labels.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect())
}

fn exemplar(e: &Exemplar) -> Value {
    let mut object = Map::new();
    object.insert("labels".into(), labels(&e.labels));
    if e.value != 0.0 {
        object.insert("value".into(), json!(e.value));
    }
    object.insert("timestampMs".into(), json!(e.timestamp_ms.to_string()));
    Value::Object(object)
}

impl MetricsAnswer {
    /// `series` for `request`, cut to its series limit.
    pub(super) fn new(mut series: Vec<Series>, request: &MetricsRequest) -> Self {
        let truncated = (request.max_series > 0 && series.len() > request.max_series).then(|| {
            series.truncate(request.max_series);
            request.max_series
        });
        Self {
            series,
            window: request.window,
            truncated,
            inspected_spans: 0,
            total_blocks: 0,
            total_block_bytes: 0,
            partial: Partial::default(),
        }
    }

    fn metrics(&self) -> Value {
        json!({
            "inspectedSpans": self.inspected_spans.to_string(),
            "totalBlocks": self.total_blocks,
            "totalBlockBytes": self.total_block_bytes.to_string(),
            "completedJobs": 1,
            "totalJobs": 1,
        })
    }

    fn finish(&self, mut object: Map<String, Value>) -> Value {
        object.insert("metrics".into(), self.metrics());
        if let Some(limit) = self.truncated {
            object.insert("status".into(), json!("PARTIAL"));
            object.insert(
                "message".into(),
                json!(format!(
                    "Response exceeds maximum series limit of {limit}, a partial response is returned. Warning: the accuracy of each individual value is not guaranteed."
                )),
            );
        }
        Value::Object(object)
    }

    /// `/api/metrics/query_range`: every sample, stamped with its bucket's end.
    pub(crate) fn range_json(&self) -> Value {
        let series: Vec<Value> = self
            .series
            .iter()
            .map(|s| {
                let samples: Vec<Value> = s
                    .samples
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, v)| {
                        let stamp = self.window.stamp_ms(i).to_string();
                        if *v == 0.0 {
                            json!({ "timestampMs": stamp })
                        } else {
                            json!({ "timestampMs": stamp, "value": v })
                        }
                    })
                    .collect();
                let mut object = Map::new();
                object.insert("labels".into(), labels(&s.labels));
                object.insert("samples".into(), Value::Array(samples));
                if !s.exemplars.is_empty() {
                    object.insert("exemplars".into(), Value::Array(s.exemplars.iter().map(exemplar).collect()));
                }
                Value::Object(object)
            })
            .collect();
        let mut object = Map::new();
        object.insert("series".into(), Value::Array(series));
        self.finish(object)
    }

    /// `/api/metrics/query`: one value per series (its first sample).
    pub(crate) fn instant_json(&self) -> Value {
        let series: Vec<Value> = self
            .series
            .iter()
            .filter_map(|s| {
                let value = s.samples.iter().copied().find(|v| v.is_finite())?;
                let mut object = Map::new();
                object.insert("labels".into(), labels(&s.labels));
                if value != 0.0 {
                    object.insert("value".into(), json!(value));
                }
                Some(Value::Object(object))
            })
            .collect();
        let mut object = Map::new();
        object.insert("series".into(), Value::Array(series));
        self.finish(object)
    }
}
