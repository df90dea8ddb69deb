//! Property: merging sorted inputs (with overlaps and duplicates) yields their
//! union without duplicates, sorted by (trace_id, start_time).

use std::collections::{BTreeSet, HashSet};

use crate::{AppendReport, SpanBatchBuilder};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use futures::StreamExt;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;

use super::{SortedInput, TraceDedup, merge_sorted};

/// (trace, span id, kind, start) — the name encodes all four, to check rows come through whole.
type SpanSpec = (u8, u8, i32, u64);

fn batch(spans: &[SpanSpec]) -> RecordBatch {
    let spans = spans
        .iter()
        .map(|(t, s, k, start)| Span {
            trace_id: vec![*t; 16],
            span_id: vec![*s; 8],
            kind: *k,
            start_time_unix_nano: *start,
            name: format!("{t}-{s}-{k}-{start}"),
            ..Default::default()
        })
        .collect();
    let request =
        vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }];
    let mut builder = SpanBatchBuilder::default();
    builder.append_resource_spans(&request, &mut AppendReport::default());
    builder.finish()
}

fn input(mut spans: Vec<SpanSpec>, chunk: usize) -> (SortedInput, Vec<SpanSpec>) {
    spans.sort_by_key(|(t, _, _, start)| (*t, *start));
    let batches: Vec<_> = spans.chunks(chunk.max(1)).map(|c| Ok(batch(c))).collect();
    (futures::stream::iter(batches).boxed(), spans)
}

fn spec() -> impl Strategy<Value = SpanSpec> {
    (1u8..=5, 1u8..=8, 2i32..=3, 0u64..100)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_the_sorted_union_without_duplicates(
        inputs in proptest::collection::vec((proptest::collection::vec(spec(), 0..30), 1usize..8), 1..5),
        batch_rows in 1usize..12,
    ) {
        let mut all = Vec::new();
        let mut streams = Vec::new();
        for (spans, chunk) in inputs {
            let (stream, sorted) = input(spans, chunk);
            all.extend(sorted);
            streams.push(stream);
        }
        let mut out: Vec<RecordBatch> = Vec::new();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let stats = runtime.block_on(merge_sorted(streams, batch_rows, &mut out)).unwrap();
        prop_assert!(out.iter().all(|b| b.num_rows() <= batch_rows));

        let mut rows: Vec<(u8, u8, String, i64, String)> = Vec::new();
        for b in &out {
            let traces = b.column_by_name("trace_id").unwrap().as_fixed_size_binary();
            let spans = b.column_by_name("span_id").unwrap().as_fixed_size_binary();
            let kinds = b.column_by_name("kind").unwrap().as_string::<i32>();
            let starts = b.column_by_name("start_time").unwrap().as_primitive::<TimestampNanosecondType>();
            let names = b.column_by_name("name").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                rows.push((traces.value(i)[0], spans.value(i)[0], kinds.value(i).to_owned(), starts.value(i), names.value(i).to_owned()));
            }
        }
        // Sorted by (trace, start).
        prop_assert!(rows.windows(2).all(|w| (w[0].0, w[0].3) <= (w[1].0, w[1].3)));
        // Each (trace, span, kind) once, and exactly the input's set.
        let keys: Vec<(u8, u8, String)> = rows.iter().map(|r| (r.0, r.1, r.2.clone())).collect();
        let distinct: HashSet<_> = keys.iter().cloned().collect();
        prop_assert_eq!(distinct.len(), keys.len());
        let kind = |k: i32| if k == 2 { "server" } else { "client" }.to_owned();
        let expected: BTreeSet<(u8, u8, String)> = all.iter().map(|(t, s, k, _)| (*t, *s, kind(*k))).collect();
        prop_assert_eq!(distinct.into_iter().collect::<BTreeSet<_>>(), expected);
        // Rows come through whole: each output row is one of the input rows.
        let inputs: HashSet<String> = all.iter().map(|(t, s, k, st)| format!("{t}-{s}-{k}-{st}")).collect();
        prop_assert!(rows.iter().all(|r| inputs.contains(&r.4)));
        prop_assert_eq!(stats.rows_in as usize, all.len());
        prop_assert_eq!(stats.rows_out as usize, rows.len());
        prop_assert_eq!(stats.duplicates as usize, all.len() - rows.len());
    }
}

#[test]
fn trace_dedup_drops_second_copies_in_small_and_large_traces() {
    let mut dedup = TraceDedup::default();
    for trace in [1u128, 2] {
        // 3 spans, then 300: the second trace outgrows the list.
        let spans = if trace == 1 { 3u64 } else { 300 };
        for round in 0..2 {
            for span in 0..spans {
                assert_eq!(dedup.first(trace, (span, 2)), round == 0, "trace {trace} span {span} round {round}");
                // Same span id, other kind: another span.
                assert_eq!(dedup.first(trace, (span, 3)), round == 0);
            }
        }
    }
    // A new trace forgets the previous one's spans.
    assert!(dedup.first(3, (0, 2)));
}
