use super::stats::{OpStats, label};
use super::trace::{Call, Edge, Parent};

#[test]
fn percentile_labels() {
    assert_eq!(label(0.5), "p50");
    assert_eq!(label(0.99), "p99");
    assert_eq!(label(0.999), "p99.9");
    assert_eq!(label(0.9999), "p99.99");
}

fn parent(calls: &[i64]) -> Parent {
    let duration = calls.iter().copied().max().unwrap_or(0);
    Parent {
        op: (0, 1),
        duration,
        calls: calls.iter().map(|&d| Call { edge: (2, 3), duration: d, error: false, critical: 0 }).collect(),
        before: 0,
        in_flight: duration,
        after: 0,
        overflow: 0,
        last_finisher: (!calls.is_empty()).then_some((2, 3)),
        busy: calls.iter().sum(),
        weight: 1.0,
    }
}

#[test]
fn the_prediction_is_the_max_of_n_independent_calls() {
    // Calls uniform on 1..=1000 ms, two per parent, every pair once: the
    // predicted parent median is the call's sqrt(0.5) quantile, ~707 ms.
    let mut stats = OpStats::default();
    let mut trace = 0;
    for a in (1..=1000).step_by(7) {
        for b in (1..=1000).step_by(11) {
            trace += 1;
            stats.add(&parent(&[a * 1_000_000, b * 1_000_000]), trace);
        }
    }
    stats.add(&parent(&[]), 0);
    let name = |id: u32| format!("n{id}");
    let report = stats.report((0, 1), &[0.5, 0.9], &name, &ids(trace as usize + 1));
    let predicted = report.predicted_latency_ms.values["p50"].unwrap();
    assert!((predicted - 707.0).abs() < 10.0, "{predicted}");
    let observed = report.parent_latency_ms.values["p50"].unwrap();
    assert!((observed - predicted).abs() < 15.0, "{observed} vs {predicted}");
    assert_eq!(report.parents_without_calls, 1);
    assert_eq!(report.degree.histogram[&2], report.parents - 1);
    assert_eq!(report.edges.len(), 1);
    assert_eq!(report.edges[0].calls_per_parent.mean, 2.0);
    // Fewer than one value beyond a percentile: no value.
    let small = {
        let mut s = OpStats::default();
        for d in 1..=10 {
            s.add(&parent(&[d]), d as u32);
        }
        s.report((0, 1), &[0.5, 0.99], &name, &ids(11))
    };
    assert!(small.parent_latency_ms.values["p50"].is_some());
    assert!(small.parent_latency_ms.values["p99"].is_none(), "p99 of 10 values says nothing");
}

/// A table of `n` traces whose ids are their places.
fn ids(n: usize) -> Vec<u128> {
    (0..n as u128).collect()
}

#[test]
fn exemplars_are_the_parents_at_the_percentile_rank() {
    // Parent durations 1..=100 ms (one call each, as long), trace id = duration.
    let mut stats = OpStats::default();
    for d in (1..=100).rev() {
        stats.add(&parent(&[d * 1_000_000]), d as u32);
    }
    let report = stats.report((0, 1), &[0.5, 0.9, 0.999], &|id| format!("n{id}"), &ids(101));
    let picked = |label: &str| -> Vec<(String, f64)> {
        report.parent_exemplars[label].iter().map(|e| (e.trace_id.clone(), e.value_ms)).collect()
    };
    // p50: rank 0.5·99 rounds to 50 (0-based), the 51st value, and its neighbours.
    let id = |d: u128| format!("{d:032x}");
    assert_eq!(picked("p50"), [(id(50), 50.0), (id(51), 51.0), (id(52), 52.0)]);
    assert_eq!(picked("p90"), [(id(89), 89.0), (id(90), 90.0), (id(91), 91.0)]);
    assert!(!report.parent_exemplars.contains_key("p99.9"), "no exemplar where no percentile is given");
    assert_eq!(report.edges[0].edge_max_exemplars["p50"][1].trace_id, id(51));
}

#[test]
fn degree_buckets_are_exact_or_powers_of_two() {
    use super::stats::degree_ranges;
    assert_eq!(degree_ranges(&[3, 1, 3, 16]), [(1, 1), (3, 3), (16, 16)]);
    let wide: Vec<u32> = (0..=40).collect();
    assert_eq!(degree_ranges(&wide), [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63)]);
}

#[test]
fn adjusted_counts_come_from_the_sampling_threshold() {
    use super::trace::adjusted_count;
    assert_eq!(adjusted_count(""), 1.0);
    assert_eq!(adjusted_count("vendor=x"), 1.0);
    assert_eq!(adjusted_count("ot=th:0"), 1.0);
    assert_eq!(adjusted_count("ot=th:8"), 2.0);
    assert_eq!(adjusted_count("vendor=x,ot=rv:abcdef;th:c"), 4.0);
    assert_eq!(adjusted_count("ot=th:fd70a4"), 1.0 / (1.0 - f64::from(0xfd70a4u32) / f64::from(1u32 << 24)));
    assert_eq!(adjusted_count("ot=th:zz"), 1.0, "not hex");
    assert_eq!(adjusted_count("ot=th:123456789abcdef0"), 1.0, "too long");
}

#[test]
fn weighted_parents_stand_for_their_adjusted_counts() {
    // 100 fast parents (10 ms) each standing for 9, 100 slow ones (100 ms):
    // 900 + 100 parents, so the weighted p50 and p89 are fast, p91 slow.
    let mut stats = OpStats::default();
    for i in 0..200u32 {
        let (d, weight) = if i < 100 { (10, 9.0) } else { (100, 1.0) };
        let mut p = parent(&[d * 1_000_000]);
        p.weight = weight;
        stats.add(&p, i);
    }
    let report = stats.report((0, 1), &[0.5, 0.89, 0.91], &|id| format!("n{id}"), &ids(200));
    assert!(report.sampled);
    assert_eq!(report.parents, 200);
    assert_eq!(report.estimated_parents, 1000.0);
    let v = |l: &str| report.parent_latency_ms.values[l].unwrap();
    assert_eq!((v("p50"), v("p89"), v("p91")), (10.0, 10.0, 100.0));
    // The calls and the prediction are weighted alike.
    assert_eq!(report.edges[0].child_latency_ms.values["p50"], Some(10.0));
    assert_eq!(report.predicted_latency_ms.values["p50"].map(f64::round), Some(10.0));
    assert!(report.predicted_latency_ms.values["p91"].unwrap() > 99.0);
}

#[test]
fn statistics_absorbed_from_another_task_under_other_names_report_the_same() {
    // Parents calling edge a = (2, 3) and b = (4, 5), in varying mixes.
    let make = |i: i64, a: Edge, b: Edge| {
        let mut p = parent(&[]);
        for (k, edge) in [a, b].into_iter().enumerate().take(1 + (i % 2) as usize) {
            let duration = (i * 7 + k as i64 * 13) % 50 * 1_000_000 + 1_000_000;
            p.calls.push(Call { edge, duration, error: i % 5 == 0, critical: duration / 2 });
        }
        p.calls.extend((0..(i % 3)).map(|j| Call {
            edge: a,
            duration: (j + 1) * 3_000_000,
            error: false,
            critical: 0,
        }));
        p.duration = p.max_call().unwrap_or(0) + i * 1_000;
        p.in_flight = p.duration;
        p.busy = p.calls.iter().map(|c| c.duration).sum();
        p.last_finisher = Some(a);
        p
    };
    let (a, b) = ((2, 3), (4, 5));
    let mut all = OpStats::default();
    for i in 0..200 {
        all.add(&make(i, a, b), i as u32);
    }
    let first = || {
        let mut first = OpStats::default();
        for i in 0..100 {
            first.add(&make(i, a, b), i as u32);
        }
        first
    };
    // The other task numbered the same names 9, 8 (for 2, 3) and 7, 6 (for
    // 4, 5): its edges sort the other way round.
    let second = || {
        let mut second = OpStats::default();
        // Its own table of traces: places 0.. for ids 100..
        for i in 100..200 {
            second.add(&make(i, (9, 8), (7, 6)), i as u32 - 100);
        }
        second
    };
    let rename = |id| match id {
        9 => 2,
        8 => 3,
        7 => 4,
        6 => 5,
        other => other,
    };
    let name = |id: u32| format!("n{id}");
    let qs = [0.5, 0.9, 0.99];
    // Tables of traces: the first task's then the second's, or the other way round.
    let (in_order, second_first): (Vec<u128>, Vec<u128>) = ((0..200).collect(), (100..200).chain(0..100).collect());
    let report =
        |stats: OpStats, traces: &[u128]| serde_json::to_value(stats.report((0, 1), &qs, &name, traces)).unwrap();
    let mut copied = first();
    copied.absorb(second(), &rename, 100);
    // Into empty statistics the other's values move, renamed.
    let mut moved = OpStats::default();
    moved.absorb(second(), &rename, 0);
    moved.absorb(first(), &|id| id, 100);
    // The second task's statistics sent over the wire (compact, bincode),
    // sorted first as a task sends them.
    let mut sent = second();
    sent.sort_calls();
    let sent: OpStats = bincode::deserialize(&bincode::serialize(&sent).unwrap()).unwrap();
    let mut received = first();
    received.absorb(sent, &rename, 100);
    // Into room made for the other first, as the report merges.
    let mut roomy = first();
    let other = second();
    let renamed: Vec<u32> = (0..10).map(rename).collect();
    roomy.reserve_for(&[(&other, renamed.as_slice())]);
    let capacity = roomy.traces_capacity();
    assert_eq!(capacity, 200, "room for both tasks' parents");
    roomy.absorb(other, &rename, 100);
    assert_eq!(roomy.traces_capacity(), capacity, "not grown again");
    let all = report(all, &in_order);
    assert_eq!(report(copied, &in_order), all);
    // And in another order: the report's last digits do not move either.
    assert_eq!(report(moved, &second_first), all);
    assert_eq!(report(received, &in_order), all);
    assert_eq!(report(roomy, &in_order), all);
}

/// A block of `rows` rows as the merge sees it: its metadata and a footer
/// (any Parquet footer: the bands read only the row selections).
fn merged_block(rows: u64, ranges: Vec<std::ops::Range<u32>>, index: crate::trace_index::TraceIndex) -> super::ToMerge {
    use std::sync::Arc;
    let column = arrow::array::Int64Array::from(vec![1i64]);
    let batch = arrow::array::RecordBatch::try_from_iter([("x", Arc::new(column) as arrow::array::ArrayRef)]).unwrap();
    let mut file = tempfile::tempfile().unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file.try_clone().unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::io::Seek::rewind(&mut file).unwrap();
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new();
    let footer = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, options).unwrap();
    let block = spanlake_schemas::BlockMeta {
        id: spanlake_schemas::block::BlockId::new(),
        min_time_unix_nano: 0,
        max_time_unix_nano: 1,
        min_trace_id: "00".repeat(16),
        max_trace_id: "ff".repeat(16),
        span_count: rows,
        size_bytes: 1,
        compaction_level: 0,
        sources: Vec::new(),
        trace_count: 1,
        ingested_unix_nano: 0,
    };
    super::ToMerge { block, footer, ranges: Some((ranges, Arc::new(index))) }
}

#[test]
#[allow(clippy::single_range_in_vec_init)] // lists of row ranges that hold one
fn split_traces_are_merged_in_bands_of_trace_ids_each_trace_in_one() {
    use crate::trace_index::tests::index;
    // Traces 0x01…, 0x80… and 0xfe… (ids [n; 16]) lie in both blocks.
    let a = index(&[&[(1, 1, "server"), (1, 2, "client"), (0x80, 1, "server"), (0xfe, 1, "server")]]);
    let b = index(&[&[(1, 3, "client"), (0x80, 2, "client"), (0xfe, 2, "client"), (0xfe, 3, "client")]]);
    let to_merge = || vec![merged_block(4, vec![0..4], a.clone()), merged_block(4, vec![0..4], b.clone())];
    let selected = |bands: &[Vec<super::Piece>]| -> Vec<Vec<usize>> {
        bands.iter().map(|band| band.iter().map(|p| p.2.as_ref().map_or(4, |s| s.row_count())).collect()).collect()
    };
    // Within the budget (8 rows, far below a band's): one band, every row to merge.
    assert_eq!(selected(&super::merge_bands(to_merge(), None)), vec![vec![4, 4]]);
    assert_eq!(selected(&super::merge_bands(to_merge(), Some(1))), vec![vec![4, 4]]);
    // Two bands: ids below 0x80 (trace 1), then the rest (traces 0x80 and 0xfe).
    assert_eq!(selected(&super::merge_bands(to_merge(), Some(2))), vec![vec![2, 1], vec![2, 3]]);
    // Four bands, the empty one (ids 0x40… to 0x7f…) kept in its place.
    let four = vec![vec![2, 1], vec![], vec![1, 1], vec![1, 2]];
    assert_eq!(selected(&super::merge_bands(to_merge(), Some(4))), four);
}

#[test]
fn degree_percentiles_from_the_histogram_equal_those_of_every_value() {
    let degrees: Vec<u32> = (0..1_000u32).map(|i| (i * 7919) % 23 + u32::from(i % 10 == 0) * 40).collect();
    let mut histogram = std::collections::BTreeMap::new();
    for &d in &degrees {
        *histogram.entry(d).or_insert(0u64) += 1;
    }
    let qs = [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
    let from_values = super::stats::percentiles(degrees.iter().map(|&d| f64::from(d)), &qs);
    assert_eq!(super::stats::histogram_percentiles(&histogram, &qs), from_values);
    let empty = std::collections::BTreeMap::new();
    assert_eq!(super::stats::histogram_percentiles(&empty, &qs).values["p50"], None);
}

#[test]
fn parts_over_tasks_and_partitions_take_each_piece_once() {
    // Three tasks of two partitions: part index = task + 3 × partition.
    let parts: Vec<super::Part> = (0..3)
        .flat_map(|task| {
            (0..2).map(move |partition| super::Part { index: task + 3 * partition, count: 6, bands: Some(2) })
        })
        .collect();
    for piece in 0..100 {
        assert_eq!(parts.iter().filter(|p| p.takes(piece)).count(), 1, "piece {piece}");
    }
    // Fewer bands than parts: one per part.
    assert!(parts.iter().all(|p| p.merge_bands() == Some(6)));
    assert_eq!(super::Part::WHOLE.merge_bands(), None);
}

#[test]
fn merge_bands_are_counted_for_the_blocks_whose_trace_ids_overlap() {
    let block = |min: u8, max: u8, rows: u64| spanlake_schemas::BlockMeta {
        min_trace_id: format!("{min:02x}").repeat(16),
        max_trace_id: format!("{max:02x}").repeat(16),
        span_count: rows,
        ..merged_block(1, Vec::new(), crate::trace_index::tests::index(&[&[(1, 1, "server")]])).block
    };
    let million = super::MERGE_BAND_ROWS;
    // Apart: nothing to merge, one band.
    assert_eq!(super::merge_band_count(&[block(0x00, 0x10, 3 * million), block(0x20, 0x30, 3 * million)]), 1);
    // The second and third overlap (in either order); the first is apart.
    let blocks = [block(0x50, 0x90, 2 * million), block(0x00, 0x10, 5 * million), block(0x60, 0x70, 2 * million)];
    assert_eq!(super::merge_band_count(&blocks), 4);
    // One block inside another that ends far beyond the next.
    let blocks = [block(0x00, 0xf0, million), block(0x10, 0x20, million), block(0x30, 0x40, million)];
    assert_eq!(super::merge_band_count(&blocks), 3);
}

/// Statistics another querier sent are checked before they are read: a
/// place beyond the table of traces, or a name that does not exist, is an
/// error (the query then runs on the querier asked), never a panic.
#[test]
fn received_statistics_that_point_past_their_tables_are_refused() {
    let with = |stats: OpStats, names: &[&str], traces: usize| super::Analysis {
        names: names.iter().map(|n| n.to_string()).collect(),
        ops: vec![((0, 1), stats)],
        traces: ids(traces),
        ..super::Analysis::default()
    };
    let stats = || {
        let mut stats = OpStats::default();
        stats.add(&parent(&[5_000_000]), 3);
        stats
    };
    let analysis = |names: &[&str], traces: usize| with(stats(), names, traces);
    // The parent (names 0, 1) calls the edge of names 2, 3.
    let names = ["svc", "op", "child", "call"];
    assert_eq!(analysis(&names, 4).check(), Ok(()));
    assert_eq!(analysis(&names, 3).check(), Err("a trace beyond the table of traces".into()));
    assert_eq!(analysis(&names[..3], 4).check(), Err("a called operation's name that does not exist".into()));
    assert_eq!(analysis(&names[..1], 4).check(), Err("an operation's name that does not exist".into()));
    // A call mix of an edge with no statistics (the prediction reads each mix's edges).
    assert_eq!(with(stats().without_edges(), &names, 4).check(), Err("a call mix that does not exist".into()));
    // The same through the wire format: decoded whole, then refused.
    let sent = bincode::serialize(&analysis(&names, 2)).unwrap();
    let received: super::Analysis = bincode::deserialize(&sent).unwrap();
    assert!(received.check().is_err());
}
