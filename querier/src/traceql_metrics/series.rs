//! From aggregated cells to Tempo's series: per-function values, labels,
//! quantiles over power-of-two buckets, exemplars, second stages.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::response::MetricsAnswer;
use super::{ByField, MetricsRequest, measured_field};
use crate::traceql::ast::{MetricsFunction, SecondStage};

/// One row of the aggregate: a series' (group's) time bucket, and for
/// histograms and quantiles one power-of-two bucket of the value.
#[derive(Debug, Clone, Default)]
pub(super) struct Cell {
    pub(super) bucket: usize,
    /// The value's bucket is `(2^(power-1), 2^power]`.
    pub(super) power: Option<i32>,
    pub(super) count: u64,
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
    pub(super) sum: Option<f64>,
    /// The cell's newest span: an exemplar candidate.
    pub(super) newest: Option<Newest>,
}

/// A cell's newest span, as the aggregate found it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Newest {
    /// Its start, ns.
    pub(super) start: i64,
    pub(super) trace_id: [u8; 16],
    /// Its measured value (functions of a value).
    pub(super) value: Option<f64>,
}

/// Cells by group (`by()` values, typed JSON; `None` when the span has none).
#[derive(Debug, Default)]
pub(super) struct Collected {
    groups: HashMap<String, (Vec<Option<Value>>, Vec<Cell>)>,
}

impl Collected {
    pub(super) fn add(&mut self, labels: Vec<Option<Value>>, cell: Cell) {
        self.add_all(labels, [cell]);
    }

    /// Adds `cells` of one group.
    pub(super) fn add_all(&mut self, labels: Vec<Option<Value>>, cells: impl IntoIterator<Item = Cell>) {
        self.groups.entry(group_key(&labels)).or_insert_with(|| (labels, Vec::new())).1.extend(cells);
    }

    /// Takes the newest spans of `found`'s cells (a sample's) as the
    /// exemplar candidates of the same cells here.
    pub(super) fn take_newest(&mut self, found: Collected) {
        for (key, (_, cells)) in found.groups {
            let Some((_, mine)) = self.groups.get_mut(&key) else { continue };
            let newest: HashMap<(usize, Option<i32>), Newest> =
                cells.into_iter().filter_map(|c| Some(((c.bucket, c.power), c.newest?))).collect();
            for cell in mine {
                cell.newest = newest.get(&(cell.bucket, cell.power)).copied().or(cell.newest);
            }
        }
    }

    /// How many series the answer will hold: one per group, times the
    /// quantiles, or per power-of-two bucket present for a histogram.
    pub(super) fn series_count(&self, function: &MetricsFunction) -> usize {
        match function {
            MetricsFunction::QuantileOverTime(_, quantiles) => self.groups.len() * quantiles.len(),
            MetricsFunction::HistogramOverTime(_) => self
                .groups
                .values()
                .map(|(_, cells)| cells.iter().filter_map(|c| c.power).collect::<std::collections::BTreeSet<_>>().len())
                .sum(),
            _ => self.groups.len(),
        }
    }
}

/// The key of a group: its `by()` values as JSON text.
pub(super) fn group_key(labels: &[Option<Value>]) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

/// A label: key and OTLP-typed JSON value (`{"stringValue": "…"}`).
pub(crate) type Label = (String, Value);

/// One answered series: a value per bucket (NaN: no sample).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) labels: Vec<Label>,
    pub(crate) samples: Vec<f64>,
    pub(crate) exemplars: Vec<Exemplar>,
}

#[derive(Debug, Clone)]
pub(crate) struct Exemplar {
    pub(crate) labels: Vec<Label>,
    pub(crate) value: f64,
    pub(crate) timestamp_ms: i64,
}

pub(super) fn string(value: &str) -> Value {
    json!({ "stringValue": value })
}

pub(super) fn double(value: f64) -> Value {
    json!({ "doubleValue": value })
}

/// The labels of a group: one per `by()` value that is present; when none
/// is, the first key with the string `nil` (as Tempo).
fn group_labels(by: &[ByField], values: &[Option<Value>]) -> Vec<Label> {
    let labels: Vec<Label> = by.iter().zip(values).filter_map(|(b, v)| Some((b.key.clone(), v.clone()?))).collect();
    match (labels.is_empty(), by.first()) {
        (true, Some(first)) => vec![(first.key.clone(), string("nil"))],
        _ => labels,
    }
}

/// A span that may become an exemplar: the newest of a series' cell.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    /// The series it goes to (for quantiles: the group's first; the
    /// closest quantile is chosen once its value is known).
    series: usize,
    bucket: usize,
    span: Newest,
    group_labels: Vec<Label>,
    /// Labelled with the bucket's sample (rate, count, histogram), else with
    /// the span's own value.
    sample_valued: bool,
    /// Quantile series of its group: `series..series + quantiles`.
    quantiles: usize,
}

/// Series built, and the candidates for their exemplars.
pub(super) struct Built {
    series: Vec<Series>,
    candidates: Vec<Candidate>,
    /// Seconds per nanosecond for `duration`, else 1.
    scale: f64,
}

/// Builds the series of a (non-compare) metrics query from its cells.
pub(super) fn build(request: &MetricsRequest, by: &[ByField], collected: Collected) -> Built {
    let window = &request.window;
    let n = window.buckets();
    let function = &request.query.function;
    let scale = if measured_field(function).is_some_and(|(_, duration)| duration) { 1e-9 } else { 1.0 };
    let mut series: Vec<Series> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut per_series_budget = false;
    for (values, cells) in collected.groups.into_values() {
        let group = group_labels(by, &values);
        let cells: Vec<Cell> = cells.into_iter().filter(|c| c.bucket < n).collect();
        let mut candidate = |series: usize, cell: &Cell, sample_valued: bool, quantiles: usize| {
            if let Some(span) = cell.newest {
                candidates.push(Candidate {
                    series,
                    bucket: cell.bucket,
                    span,
                    group_labels: group.clone(),
                    sample_valued,
                    quantiles,
                });
            }
        };
        match function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => {
                let divisor = match function {
                    MetricsFunction::Rate => window.step_seconds(),
                    _ => 1.0,
                };
                let mut samples = vec![0.0; n];
                for cell in &cells {
                    samples[cell.bucket] += cell.count as f64;
                }
                samples.iter_mut().for_each(|v| *v /= divisor);
                let labels =
                    if by.is_empty() { vec![("__name__".to_owned(), string(function.name()))] } else { group.clone() };
                cells.iter().for_each(|cell| candidate(series.len(), cell, true, 0));
                series.push(Series { labels, samples, exemplars: Vec::new() });
            }
            MetricsFunction::MinOverTime(_)
            | MetricsFunction::MaxOverTime(_)
            | MetricsFunction::SumOverTime(_)
            | MetricsFunction::AvgOverTime(_) => {
                let mut acc: Vec<(f64, f64, f64, u64)> = vec![(f64::INFINITY, f64::NEG_INFINITY, 0.0, 0); n];
                for cell in &cells {
                    let a = &mut acc[cell.bucket];
                    a.0 = a.0.min(cell.min.unwrap_or(f64::INFINITY));
                    a.1 = a.1.max(cell.max.unwrap_or(f64::NEG_INFINITY));
                    a.2 += cell.sum.unwrap_or(0.0);
                    a.3 += cell.count;
                }
                let samples = acc
                    .iter()
                    .map(|&(lo, hi, total, count)| match (count, function) {
                        (0, _) => f64::NAN,
                        (_, MetricsFunction::MinOverTime(_)) => lo * scale,
                        (_, MetricsFunction::MaxOverTime(_)) => hi * scale,
                        (_, MetricsFunction::SumOverTime(_)) => total * scale,
                        _ => total / count as f64 * scale,
                    })
                    .collect();
                let labels =
                    if by.is_empty() { vec![("__name__".to_owned(), string(function.name()))] } else { group.clone() };
                cells.iter().for_each(|cell| candidate(series.len(), cell, false, 0));
                series.push(Series { labels, samples, exemplars: Vec::new() });
            }
            MetricsFunction::QuantileOverTime(_, quantiles) => {
                per_series_budget = true;
                let mut histograms: Vec<BTreeMap<i32, u64>> = vec![BTreeMap::new(); n];
                for cell in &cells {
                    if let Some(power) = cell.power {
                        *histograms[cell.bucket].entry(power).or_default() += cell.count;
                    }
                }
                let first = series.len();
                for q in quantiles {
                    let mut labels = group.clone();
                    labels.push(("p".to_owned(), double(*q)));
                    let samples = histograms.iter().map(|h| quantile(h, *q, scale)).collect();
                    series.push(Series { labels, samples, exemplars: Vec::new() });
                }
                cells.iter().for_each(|cell| candidate(first, cell, false, quantiles.len()));
            }
            MetricsFunction::HistogramOverTime(_) => {
                let mut by_power: BTreeMap<i32, (Vec<f64>, Vec<&Cell>)> = BTreeMap::new();
                for cell in &cells {
                    let Some(power) = cell.power else { continue };
                    let entry = by_power.entry(power).or_insert_with(|| (vec![0.0; n], Vec::new()));
                    entry.0[cell.bucket] += cell.count as f64;
                    entry.1.push(cell);
                }
                for (power, (samples, cells)) in by_power {
                    let mut labels = group.clone();
                    labels.push(("__bucket".to_owned(), double(2f64.powi(power) * scale)));
                    cells.into_iter().for_each(|cell| candidate(series.len(), cell, true, 0));
                    series.push(Series { labels, samples, exemplars: Vec::new() });
                }
            }
            MetricsFunction::Compare { .. } => unreachable!("compare() is answered by compare.rs"),
        }
    }
    let candidates = choose(candidates, request.exemplars, n, per_series_budget);
    Built { series, candidates, scale }
}

impl Built {
    /// Attaches the chosen exemplars, applies the second stages and
    /// finishes the answer.
    pub(super) fn finish(mut self, request: &MetricsRequest) -> MetricsAnswer {
        for candidate in std::mem::take(&mut self.candidates) {
            let value = if candidate.sample_valued {
                self.series[candidate.series].samples[candidate.bucket]
            } else {
                match candidate.span.value {
                    Some(v) => v * self.scale,
                    None => continue,
                }
            };
            // A quantile's exemplar goes to the quantile closest to its value.
            let series = (candidate.series..candidate.series + candidate.quantiles.max(1))
                .min_by(|a, b| {
                    let distance = |i: usize| (self.series[i].samples[candidate.bucket] - value).abs();
                    distance(*a).total_cmp(&distance(*b))
                })
                .unwrap_or(candidate.series);
            let trace = crate::search::trace_id_hex(&candidate.span.trace_id);
            let mut labels = vec![("trace:id".to_owned(), string(&trace))];
            labels.extend(candidate.group_labels);
            if value.is_finite() {
                self.series[series].exemplars.push(Exemplar {
                    labels,
                    value,
                    timestamp_ms: candidate.span.start / 1_000_000,
                });
            }
        }
        for s in &mut self.series {
            s.exemplars.sort_by_key(|e| e.timestamp_ms);
        }
        MetricsAnswer::new(finish(self.series, &request.query.second), request)
    }
}

/// Chooses up to `budget` candidates spread over time, as Tempo does:
/// `budget / 2` stretches of the window with at most two each; the budget
/// holds for the whole answer, or per series (`per_series`, quantiles).
fn choose(mut candidates: Vec<Candidate>, budget: usize, buckets: usize, per_series: bool) -> Vec<Candidate> {
    if budget == 0 || buckets == 0 {
        return Vec::new();
    }
    let stretches = (budget / 2).max(1);
    candidates.sort_by_key(|c| (c.bucket, c.series, c.span.start));
    let mut in_stretch: HashMap<(usize, usize), usize> = HashMap::new();
    let mut placed: HashMap<usize, usize> = HashMap::new();
    candidates.retain(|candidate| {
        let owner = if per_series { candidate.series } else { usize::MAX };
        let stretch = candidate.bucket * stretches / buckets;
        let used = in_stretch.entry((owner, stretch)).or_default();
        let total = placed.entry(owner).or_default();
        if *used >= 2 || *total >= budget {
            return false;
        }
        *used += 1;
        *total += 1;
        true
    });
    candidates
}

/// The `q` quantile of a histogram over power-of-two buckets, interpolated
/// as Tempo does: in the bucket where the rank falls, geometrically between
/// the previous bucket's upper bound (half its own for the first) and its
/// own. Empty: 0.
pub(super) fn quantile(histogram: &BTreeMap<i32, u64>, q: f64, scale: f64) -> f64 {
    let total: u64 = histogram.values().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    // In exponents, where the bounds are whole numbers.
    let mut below = 0u64;
    let mut previous: Option<i32> = None;
    for (&power, &count) in histogram {
        if below + count >= rank {
            let lower = f64::from(previous.unwrap_or(power - 1));
            let fraction = (rank - below) as f64 / count as f64;
            return 2f64.powf(lower + (f64::from(power) - lower) * fraction) * scale;
        }
        below += count;
        previous = Some(power);
    }
    previous.map_or(0.0, |p| 2f64.powi(p) * scale)
}

/// Applies the second stages, drops series without a sample, and sorts
/// them as Tempo does (by label count, then keys and values).
pub(super) fn finish(mut series: Vec<Series>, stages: &[SecondStage]) -> Vec<Series> {
    for stage in stages {
        match *stage {
            SecondStage::TopK(k) => keep_ranked(&mut series, k, true),
            SecondStage::BottomK(k) => keep_ranked(&mut series, k, false),
            SecondStage::Filter(op, threshold) => {
                for s in &mut series {
                    for v in &mut s.samples {
                        if !v.is_nan() && !op.holds(*v, threshold) {
                            *v = f64::NAN;
                        }
                    }
                }
            }
        }
        series.retain(|s| s.samples.iter().any(|v| !v.is_nan()));
    }
    series.retain(|s| s.samples.iter().any(|v| !v.is_nan()));
    series.sort_by_cached_key(sort_key);
    series
}

fn sort_key(series: &Series) -> (usize, Vec<(String, String)>) {
    (series.labels.len(), series.labels.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
}

/// At each timestamp, keeps the `k` highest (or lowest) series; ties go
/// to the series that sorts first.
fn keep_ranked(series: &mut [Series], k: usize, highest: bool) {
    let n = series.first().map_or(0, |s| s.samples.len());
    let keys: Vec<_> = series.iter().map(sort_key).collect();
    for bucket in 0..n {
        let mut ranked: Vec<usize> = (0..series.len()).filter(|i| !series[*i].samples[bucket].is_nan()).collect();
        ranked.sort_by(|a, b| {
            let (va, vb) = (series[*a].samples[bucket], series[*b].samples[bucket]);
            let order = if highest { vb.total_cmp(&va) } else { va.total_cmp(&vb) };
            order.then_with(|| keys[*a].cmp(&keys[*b]))
        });
        for i in ranked.into_iter().skip(k) {
            series[i].samples[bucket] = f64::NAN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(buckets: &[(i32, u64)]) -> BTreeMap<i32, u64> {
        buckets.iter().copied().collect()
    }

    #[test]
    fn quantiles_interpolate_between_powers_of_two_as_tempo_does() {
        // 10 spans at 2^20 ns and 10 at 2^22 ns (about 1 ms and 4 ms).
        let h = histogram(&[(20, 10), (22, 10)]);
        let s = |p: i32| 2f64.powi(p) * 1e-9;
        // p50: rank 10 is the last of the first bucket: its upper bound.
        assert!((quantile(&h, 0.5, 1e-9) - s(20)).abs() < 1e-15);
        // p75: rank 15, half way into the second bucket, whose lower bound
        // is the previous bucket's upper bound: 2^(20 + (22-20)·0.5) = 2^21.
        assert!((quantile(&h, 0.75, 1e-9) - s(21)).abs() < 1e-15);
        // p5: rank 1 of 10 in the first bucket, from half its bound: 2^(19 + 0.1).
        assert!((quantile(&h, 0.05, 1e-9) - 2f64.powf(19.1) * 1e-9).abs() < 1e-15);
        assert!((quantile(&h, 1.0, 1e-9) - s(22)).abs() < 1e-15);
        assert_eq!(quantile(&BTreeMap::new(), 0.9, 1e-9), 0.0);
    }

    fn series(name: &str, samples: &[f64]) -> Series {
        Series { labels: vec![("x".into(), string(name))], samples: samples.to_vec(), exemplars: Vec::new() }
    }

    #[test]
    fn topk_keeps_the_highest_series_at_each_timestamp() {
        let out = finish(
            vec![series("a", &[1.0, 5.0]), series("b", &[2.0, 1.0]), series("c", &[3.0, 0.5])],
            &[SecondStage::TopK(1)],
        );
        let names: Vec<_> = out.iter().map(|s| s.labels[0].1["stringValue"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(out[0].samples[0].is_nan() && out[0].samples[1] == 5.0);
        assert!(out[1].samples[0] == 3.0 && out[1].samples[1].is_nan());
        let out = finish(vec![series("a", &[1.0, 5.0]), series("b", &[2.0, 1.0])], &[SecondStage::BottomK(1)]);
        assert_eq!(out.len(), 2);
        let out = finish(
            vec![series("a", &[1.0, 5.0]), series("b", &[2.0, 1.0])],
            &[SecondStage::Filter(crate::traceql::ast::CmpOp::Gt, 4.0)],
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].samples[0].is_nan());
    }

    #[test]
    fn exemplars_are_spread_over_time_within_the_budget() {
        let candidates = (0..100)
            .flat_map(|b| {
                (0..3).map(move |i| Candidate {
                    series: 0,
                    bucket: b,
                    span: Newest { start: (b * 10 + i) as i64, trace_id: [0; 16], value: None },
                    group_labels: Vec::new(),
                    sample_valued: true,
                    quantiles: 0,
                })
            })
            .collect();
        let stamps: Vec<i64> = choose(candidates, 10, 100, false).iter().map(|c| c.span.start).collect();
        // Five stretches of 20 buckets, two exemplars each.
        assert_eq!(stamps, [0, 1, 200, 201, 400, 401, 600, 601, 800, 801]);
    }
}
