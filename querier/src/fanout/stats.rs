//! Aggregation over many parents of one operation, and the report: exact
//! percentiles (every value is kept and sorted), the degree histogram, the
//! per-edge tables and the independence model's prediction.

use std::collections::BTreeMap;

use foldhash::HashMap;

use serde::{Deserialize, Serialize};

use super::trace::{Edge, Parent};
use super::weighted::{Cdf, Runs, Weighted};

/// A per-parent call mix: (edge, calls on it), by edge.
type Mix = Vec<(Edge, u32)>;

/// Everything kept about one parent operation. The per-parent vectors
/// (`durations`, `degrees`, `traces`, `mix_of`) are in arrival order, one
/// entry per parent.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct OpStats {
    /// Each parent's duration, with its adjusted count (1 unless its trace
    /// was sampled with a known probability: `ot=th:` in its tracestate).
    durations: Weighted,
    /// Per parent with calls, its slowest call and its weight.
    max_calls: Weighted,
    #[serde(with = "super::compact::ints")]
    degrees: Vec<u32>,
    /// Each parent's trace, for exemplars: its place in the analysis' table
    /// of trace ids. A trace's parents of several operations share its id,
    /// so the id is held (and sent) once, and each parent holds 4 bytes.
    #[serde(with = "super::compact::ints")]
    traces: Vec<u32>,
    /// Each parent's call mix, an index into `mixes`.
    #[serde(with = "super::compact::ints")]
    mix_of: Vec<u32>,
    /// Distinct per-parent call mixes, for the prediction.
    mixes: Vec<Mix>,
    mix_ids: HashMap<Mix, u32>,
    before: i128,
    in_flight: i128,
    after: i128,
    #[serde(with = "super::compact::floats")]
    parallelism: Vec<f64>,
    overflow: u64,
    edges: HashMap<Edge, EdgeStats>,
    /// Buffers [`OpStats::add`] reuses from parent to parent.
    #[serde(skip)]
    scratch: AddScratch,
}

#[derive(Debug, Default)]
struct AddScratch {
    /// A parent's calls: (edge, duration, time on the critical path, error).
    calls: Vec<(Edge, i64, i64, bool)>,
    mix: Mix,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct EdgeStats {
    /// Every call's duration, with its parent's weight: a run per task.
    durations: Runs,
    #[serde(with = "super::compact::ints")]
    per_parent_max: Vec<i64>,
    /// The parent (index in the operation's per-parent vectors) of each `per_parent_max`.
    #[serde(with = "super::compact::ints")]
    per_parent_index: Vec<u32>,
    #[serde(with = "super::compact::ints")]
    per_parent_calls: Vec<u32>,
    errors: u64,
    critical: i128,
    last_finisher: u64,
}

impl OpStats {
    /// Bytes one parent adds to the statistics, besides its calls: its
    /// duration, slowest call, degree, trace, call mix and parallelism
    /// (sampled data adds 8 for two weights).
    pub(crate) const BYTES_PER_PARENT: usize = 36;
    /// Bytes a trace with parents adds: its id in the analysis' table.
    pub(crate) const BYTES_PER_TRACE: usize = 16;
    /// Bytes one call adds, at most: its duration (sampled data adds 4 for
    /// its weight), and its parent's entry on its edge when it is the only
    /// call on that edge (slowest call, parent index, count).
    pub(crate) const BYTES_PER_CALL: usize = 24;

    /// Adds `parent`, of the trace at place `trace` in the analysis' table.
    pub(crate) fn add(&mut self, parent: &Parent, trace: u32) {
        let index = self.durations.len() as u32;
        let weight = parent.weight as f32;
        self.durations.push(parent.duration, weight);
        self.traces.push(trace);
        self.degrees.push(parent.calls.len() as u32);
        self.before += i128::from(parent.before);
        self.in_flight += i128::from(parent.in_flight);
        self.after += i128::from(parent.after);
        self.overflow += u64::from(parent.overflow);
        if let Some(max) = parent.max_call() {
            self.max_calls.push(max, weight);
        }
        if parent.in_flight > 0 {
            self.parallelism.push(parent.busy as f64 / parent.in_flight as f64);
        }
        // The calls grouped by edge (slowest last in each group): one
        // lookup per edge, and the parent's call mix in edge order.
        let mut scratch = std::mem::take(&mut self.scratch);
        let (calls, mix) = (&mut scratch.calls, &mut scratch.mix);
        calls.clear();
        calls.extend(parent.calls.iter().map(|c| (c.edge, c.duration, c.critical, c.error)));
        calls.sort_unstable_by_key(|&(edge, duration, ..)| (edge, duration));
        mix.clear();
        for group in calls.chunk_by(|a, b| a.0 == b.0) {
            let (edge, slowest) = (group[0].0, group[group.len() - 1].1);
            let stats = self.edges.entry(edge).or_default();
            for &(_, duration, critical, error) in group {
                stats.durations.push(duration, weight);
                stats.errors += u64::from(error);
                stats.critical += i128::from(critical);
            }
            stats.per_parent_calls.push(group.len() as u32);
            stats.per_parent_max.push(slowest);
            stats.per_parent_index.push(index);
            mix.push((edge, group.len() as u32));
        }
        if let Some(edge) = parent.last_finisher {
            self.edges.get_mut(&edge).expect("a call's edge").last_finisher += 1;
        }
        let id = match self.mix_ids.get(mix.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.mixes.len() as u32;
                self.mixes.push(mix.clone());
                self.mix_ids.insert(mix.clone(), id);
                id
            }
        };
        self.mix_of.push(id);
        self.scratch = scratch;
    }

    pub(crate) fn parents(&self) -> usize {
        self.durations.len()
    }

    /// Folds in the parents another task analyzed, whose service and
    /// operation names it numbered its own way: `rename` maps its numbers
    /// to this one's. Its table of traces follows this one's from
    /// `traces_before` on.
    pub(crate) fn absorb(&mut self, mut other: OpStats, rename: &dyn Fn(u32) -> u32, traces_before: u32) {
        let edge = |(service, name): Edge| (rename(service), rename(name));
        if traces_before > 0 {
            other.traces.iter_mut().for_each(|t| *t += traces_before);
        }
        if self.durations.is_empty() && self.edges.is_empty() && self.mixes.is_empty() {
            // Nothing here yet: the other's values move in, renamed, with
            // no copy of them (the largest are a value per call).
            other.edges = other.edges.into_iter().map(|(e, stats)| (edge(e), stats)).collect();
            for mix in &mut other.mixes {
                // A mix is sorted by edge; renamed edges may sort differently.
                mix.iter_mut().for_each(|(e, _)| *e = edge(*e));
                mix.sort_unstable();
            }
            other.mix_ids = other.mixes.iter().enumerate().map(|(id, mix)| (mix.clone(), id as u32)).collect();
            *self = other;
            return;
        }
        let offset = self.durations.len() as u32;
        self.durations.extend(other.durations);
        self.max_calls.extend(other.max_calls);
        extend_exact(&mut self.degrees, other.degrees);
        extend_exact(&mut self.traces, other.traces);
        let mut mix_ids = Vec::with_capacity(other.mixes.len());
        for mix in other.mixes {
            // A mix is sorted by edge; renamed edges may sort differently.
            let mut mix: Mix = mix.into_iter().map(|(e, calls)| (edge(e), calls)).collect();
            mix.sort_unstable();
            let next = self.mixes.len() as u32;
            let id = *self.mix_ids.entry(mix).or_insert_with_key(|mix| {
                self.mixes.push(mix.clone());
                next
            });
            mix_ids.push(id);
        }
        self.mix_of.reserve_exact(other.mix_of.len());
        self.mix_of.extend(other.mix_of.into_iter().map(|m| mix_ids[m as usize]));
        self.before += other.before;
        self.in_flight += other.in_flight;
        self.after += other.after;
        extend_exact(&mut self.parallelism, other.parallelism);
        self.overflow += other.overflow;
        for (e, theirs) in other.edges {
            let mine = self.edges.entry(edge(e)).or_default();
            mine.durations.append(theirs.durations);
            extend_exact(&mut mine.per_parent_max, theirs.per_parent_max);
            mine.per_parent_index.reserve_exact(theirs.per_parent_index.len());
            mine.per_parent_index.extend(theirs.per_parent_index.into_iter().map(|i| i + offset));
            extend_exact(&mut mine.per_parent_calls, theirs.per_parent_calls);
            mine.errors += theirs.errors;
            mine.critical += theirs.critical;
            mine.last_finisher += theirs.last_finisher;
        }
    }

    /// Makes room for the per-parent values of `others` (each with the
    /// map of its name numbers to this one's) before they are absorbed one
    /// by one, so that each vector grows once to the sum: absorbed one by
    /// one into exact sizes, every vector was copied again for each
    /// analysis (a third of the coordinating querier's CPU in a spread
    /// fan-out of every parent).
    pub(crate) fn reserve_for(&mut self, others: &[(&OpStats, &[u32])]) {
        let total = |len: fn(&OpStats) -> usize| others.iter().map(|(other, _)| len(other)).sum::<usize>();
        self.durations.reserve_exact(total(|o| o.durations.len()));
        self.max_calls.reserve_exact(total(|o| o.max_calls.len()));
        self.degrees.reserve_exact(total(|o| o.degrees.len()));
        self.traces.reserve_exact(total(|o| o.traces.len()));
        self.mix_of.reserve_exact(total(|o| o.mix_of.len()));
        self.parallelism.reserve_exact(total(|o| o.parallelism.len()));
        let mut per_edge: HashMap<Edge, usize> = HashMap::default();
        for (other, renamed) in others {
            for ((service, name), stats) in &other.edges {
                let edge = (renamed[*service as usize], renamed[*name as usize]);
                *per_edge.entry(edge).or_default() += stats.per_parent_max.len();
            }
        }
        for (edge, more) in per_edge {
            let mine = self.edges.entry(edge).or_default();
            mine.per_parent_max.reserve_exact(more);
            mine.per_parent_index.reserve_exact(more);
            mine.per_parent_calls.reserve_exact(more);
        }
    }

    #[cfg(test)]
    pub(crate) fn traces_capacity(&self) -> usize {
        self.traces.capacity()
    }

    /// These statistics without their edges (their call mixes still name them).
    #[cfg(test)]
    pub(crate) fn without_edges(mut self) -> Self {
        self.edges.clear();
        self
    }

    /// Whether these statistics, received from another querier, can be read
    /// without indexing past a vector: names within `names`, traces within
    /// a table of `traces`, a value per parent in every per-parent vector,
    /// and each edge's entries of parents that exist. (A querier that
    /// decodes statistics it did not make checks them first.)
    pub(crate) fn check(&self, names: usize, traces: usize) -> Result<(), &'static str> {
        let parents = self.durations.len();
        let named = |(service, name): Edge| (service as usize) < names && (name as usize) < names;
        let per_parent = [self.degrees.len(), self.traces.len(), self.mix_of.len()];
        if per_parent.iter().any(|&len| len != parents) || !self.durations.is_whole() || !self.max_calls.is_whole() {
            return Err("a per-parent vector of another length");
        }
        if self.traces.iter().any(|&t| t as usize >= traces) {
            return Err("a trace beyond the table of traces");
        }
        if self.mix_of.iter().any(|&m| m as usize >= self.mixes.len())
            || self.mixes.iter().flatten().any(|(edge, _)| !self.edges.contains_key(edge))
        {
            return Err("a call mix that does not exist");
        }
        for (&edge, stats) in &self.edges {
            if !named(edge) {
                return Err("a called operation's name that does not exist");
            }
            let entries = stats.per_parent_index.len();
            if stats.per_parent_max.len() != entries
                || stats.per_parent_calls.len() != entries
                || stats.per_parent_index.iter().any(|&i| i as usize >= parents)
                || !stats.durations.is_whole()
            {
                return Err("an edge entry of a parent that does not exist");
            }
        }
        Ok(())
    }

    /// Sorts each edge's call durations, on the task that gathered them,
    /// so the report merges sorted runs (see [`Cdf::from_runs`]).
    pub(crate) fn sort_calls(&mut self) {
        self.edges.values_mut().for_each(|edge| edge.durations.sort());
    }

    /// Whether any parent of this operation made a call.
    pub(crate) fn has_calls(&self) -> bool {
        !self.max_calls.is_empty()
    }
}

/// Appends `more` to `to`, growing `to` to the sum and not beyond (a
/// `Vec`'s own growth would double it: the values of every call twice).
pub(super) fn extend_exact<T>(to: &mut Vec<T>, more: Vec<T>) {
    to.reserve_exact(more.len());
    to.extend(more);
}

/// Percentiles with the number of values behind them. Exact: computed from
/// every value (linear interpolation between closest ranks, as
/// `percentile_cont`); a percentile is null when fewer than one value lies
/// beyond it (p99.9 of 500 values says nothing).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub exact: bool,
    #[serde(flatten)]
    pub values: BTreeMap<String, Option<f64>>,
}

/// `0.5` → `p50`, `0.999` → `p99.9`.
pub fn label(q: f64) -> String {
    let text = format!("{:.4}", q * 100.0);
    format!("p{}", text.trim_end_matches('0').trim_end_matches('.'))
}

fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (low, high) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (pos - low as f64)
}

/// Percentiles, in milliseconds, of (ns, weight) pairs: weighted when
/// `sampled` (see [`summarize_cdf`]).
fn summarize(pairs: impl Iterator<Item = (i64, f32)>, qs: &[f64], sampled: bool) -> Percentiles {
    let mut values = Weighted::default();
    pairs.for_each(|(value, weight)| values.push(value, weight));
    summarize_cdf(&Cdf::new(values), qs, sampled)
}

/// Percentiles, in milliseconds, of the values of a CDF, read where they lie
/// sorted. Exact: interpolated between the closest ranks (as
/// `percentile_cont`) unless `sampled`, then the smallest value whose
/// cumulative adjusted count reaches q of the total.
fn summarize_cdf(cdf: &Cdf, qs: &[f64], sampled: bool) -> Percentiles {
    let n = cdf.values().len();
    let values = qs
        .iter()
        .map(|&q| {
            let enough = n > 0 && (n as f64) * (1.0 - q) >= 1.0;
            let at = || if sampled { ms(cdf.weighted_quantile(q)) } else { cdf.interpolate(q, ms) };
            (label(q), enough.then(at))
        })
        .collect();
    Percentiles { count: n as u64, exact: true, values }
}

pub(super) fn percentiles(values: impl Iterator<Item = f64>, qs: &[f64]) -> Percentiles {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    let values = qs
        .iter()
        .map(|&q| {
            let enough = n > 0 && (n as f64) * (1.0 - q) >= 1.0;
            (label(q), enough.then(|| quantile_sorted(&sorted, q)))
        })
        .collect();
    Percentiles { count: n as u64, exact: true, values }
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

#[derive(Debug, Serialize)]
pub struct Operation {
    pub service: String,
    pub operation: String,
}

#[derive(Debug, Serialize)]
pub struct Degree {
    /// Exact: calls per parent → parents.
    pub histogram: BTreeMap<u32, u64>,
    pub mean: f64,
    pub percentiles: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct TimeSplit {
    /// Shares of all parent time (they add up to 1).
    pub before_first_call: f64,
    pub calls_in_flight: f64,
    pub after_last_call: f64,
}

#[derive(Debug, Serialize)]
pub struct Exceedance {
    pub t_ms: f64,
    /// Fraction of parents slower than `t_ms`.
    pub observed: f64,
    /// 1 − mean over parents of Π_e (1 − p_e(T))^{n_e}: all calls independent, parent = slowest call.
    pub predicted: f64,
}

#[derive(Debug, Serialize)]
pub struct Amplification {
    pub q: f64,
    /// Parent q-quantile / this edge's call q-quantile.
    pub ratio: Option<f64>,
    /// The call percentile the parent's q-quantile falls at: F_e(Q_parent(q)).
    pub equivalent_child_percentile: Option<f64>,
    /// What the max-of-N model says it should be: q^(1/N), N = mean calls per parent on the edge.
    pub model_child_percentile: f64,
}

#[derive(Debug, Serialize)]
pub struct EdgeReport {
    pub child: Operation,
    pub calls: u64,
    /// Parents with at least one call on this edge, and their share of all parents.
    pub parents_calling: u64,
    pub presence: f64,
    pub calls_per_parent: CallsPerParent,
    pub child_latency_ms: Percentiles,
    /// Per parent, its slowest call on this edge.
    pub edge_max_latency_ms: Percentiles,
    /// Traces at each of those percentiles.
    pub edge_max_exemplars: Exemplars,
    pub error_rate: f64,
    /// Share of all parent time spent in this edge's calls on the critical path.
    pub critical_path_share: f64,
    /// Share of parents whose last-finishing call is on this edge.
    pub last_finisher_share: f64,
    pub amplification: Vec<Amplification>,
}

#[derive(Debug, Serialize)]
pub struct CallsPerParent {
    pub mean: f64,
    pub max: u32,
    pub histogram: BTreeMap<u32, u64>,
}

/// A trace whose value lies at a reported percentile: open it to see why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Exemplar {
    /// Hex, 32 digits.
    pub trace_id: String,
    pub value_ms: f64,
}

/// Per percentile label (`p99`), the traces at that rank (up to three).
pub type Exemplars = BTreeMap<String, Vec<Exemplar>>;

/// Parents grouped by their number of calls: how the tail grows with the
/// fan-out, observed and as the calls predict.
#[derive(Debug, Serialize)]
pub struct DegreeBucket {
    /// Calls per parent in this bucket, `min..=max` (one value when exact).
    pub min_calls: u32,
    pub max_calls: u32,
    pub parents: u64,
    pub observed_ms: Percentiles,
    pub predicted_ms: Percentiles,
}

/// The fan-out of one parent operation.
#[derive(Debug, Serialize)]
pub struct OperationReport {
    pub parent: Operation,
    /// Parent spans analyzed.
    pub parents: u64,
    /// Parents they stand for: the sum of their adjusted counts (equal to
    /// `parents` unless traces were probability-sampled).
    pub estimated_parents: f64,
    /// Whether any parent carried a sampling threshold (`ot=th:` in its
    /// tracestate); then every percentile here is weighted by adjusted count.
    pub sampled: bool,
    pub parents_without_calls: u64,
    pub overflow_children: u64,
    pub degree: Degree,
    pub parent_latency_ms: Percentiles,
    /// Traces at each parent-latency percentile.
    pub parent_exemplars: Exemplars,
    /// Parents by number of calls: exact counts, or power-of-two ranges when
    /// more than 16 distinct counts occur.
    pub degree_buckets: Vec<DegreeBucket>,
    /// Per parent, its slowest call (parents with calls).
    pub max_child_latency_ms: Percentiles,
    /// The same quantiles predicted from the calls' own distributions, as if
    /// independent and the parent were its slowest call.
    pub predicted_latency_ms: Percentiles,
    pub exceedance: Vec<Exceedance>,
    pub time_split: TimeSplit,
    /// Sum of call durations / time calls were in flight: 1 for sequential
    /// calls, about N·mean/E\[max\] for N parallel ones.
    pub parallelism_ratio: Percentiles,
    /// Share of parent time on the critical path in no call (the parent's own work).
    pub parent_self_share: f64,
    pub edges: Vec<EdgeReport>,
}

/// The most exemplars given per percentile.
const EXEMPLARS_PER_PERCENTILE: usize = 3;

/// Traces at each percentile of `pairs` (value, trace's place in
/// `traces`), sorted by value: the parent at the percentile's rank and its
/// neighbours.
fn exemplars(pairs: &[(i64, u32, f32)], traces: &[u128], qs: &[f64]) -> Exemplars {
    let n = pairs.len();
    qs.iter()
        .filter(|&&q| n > 0 && (n as f64) * (1.0 - q) >= 1.0)
        .map(|&q| {
            let rank = (q * (n - 1) as f64).round() as usize;
            let from = rank.saturating_sub(EXEMPLARS_PER_PERCENTILE / 2);
            let to = (from + EXEMPLARS_PER_PERCENTILE).min(n);
            let picked = pairs[from..to]
                .iter()
                .map(|&(value, trace, _)| Exemplar {
                    trace_id: format!("{:032x}", traces[trace as usize]),
                    value_ms: ms(value),
                })
                .collect();
            (label(q), picked)
        })
        .collect()
}

/// (value, trace's place in `traces`, weight) sorted by value, then trace
/// id: the exemplars read from it, and its CDF, from one sort. Equal values
/// are put in trace id order, not by place, so that the answer does not
/// depend on how the traces were shared out and numbered.
fn by_value(mut entries: Vec<(i64, u32, f32)>, traces: &[u128], weighted: bool) -> (Vec<(i64, u32, f32)>, Cdf) {
    entries.sort_unstable_by_key(|e| e.0);
    for equal in entries.chunk_by_mut(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
        equal.sort_unstable_by_key(|e| traces[e.1 as usize]);
    }
    let values = entries.iter().map(|e| e.0).collect();
    let weights = weighted.then(|| entries.iter().map(|e| e.2).collect());
    (entries, Cdf::from_sorted(values, weights))
}

/// Exact percentiles of values counted in a histogram (value → count), as
/// [`percentiles`] gives them from every value sorted.
pub(super) fn histogram_percentiles(histogram: &BTreeMap<u32, u64>, qs: &[f64]) -> Percentiles {
    let n: u64 = histogram.values().sum();
    // The value at rank `rank` (0-based) of the values sorted.
    let at = |rank: u64| {
        let mut seen = 0;
        for (&value, &count) in histogram {
            seen += count;
            if rank < seen {
                return f64::from(value);
            }
        }
        f64::NAN
    };
    let values = qs
        .iter()
        .map(|&q| {
            let enough = n > 0 && (n as f64) * (1.0 - q) >= 1.0;
            let value = || {
                let pos = q * (n - 1) as f64;
                let (low, high) = (at(pos.floor() as u64), at(pos.ceil() as u64));
                low + (high - low) * (pos - pos.floor())
            };
            (label(q), enough.then(value))
        })
        .collect();
    Percentiles { count: n, exact: true, values }
}

/// The prediction for a group of parents: each parent's slowest call, with
/// every call independent and drawn from its edge's distribution.
struct Prediction<'a> {
    /// Each edge's call distribution (weighted by the parents' adjusted counts).
    edges: &'a HashMap<Edge, Cdf>,
    /// Call mixes and the weight of the group's parents that have each.
    mixes: Vec<(&'a Mix, f64)>,
    /// Parents in the group (sampled, unweighted).
    parents: u64,
}

impl Prediction<'_> {
    /// F_pred(x) = mean over parents of Π_e F_e(x)^{n_e}.
    fn cdf(&self, x_ns: f64) -> f64 {
        let (mut total, mut weight) = (0.0, 0.0);
        for (mix, count) in &self.mixes {
            let product: f64 = mix.iter().map(|(edge, n)| self.edges[edge].at(x_ns).powi(*n as i32)).product();
            total += product * count;
            weight += count;
        }
        if weight > 0.0 { total / weight } else { 1.0 }
    }

    fn quantile(&self, q: f64) -> f64 {
        let upper = self.edges.values().filter_map(Cdf::max).max().unwrap_or(0) as f64;
        let (mut low, mut high) = (0.0, upper.max(1.0));
        for _ in 0..60 {
            let mid = (low + high) / 2.0;
            if self.cdf(mid) >= q { high = mid } else { low = mid }
        }
        high
    }

    fn percentiles(&self, qs: &[f64]) -> Percentiles {
        let calls = self.mixes.iter().any(|(mix, _)| !mix.is_empty());
        let values = qs
            .iter()
            .map(|&q| {
                let enough = self.parents > 0 && calls && (self.parents as f64) * (1.0 - q) >= 1.0;
                (label(q), enough.then(|| ms(self.quantile(q) as i64)))
            })
            .collect();
        Percentiles { count: self.parents, exact: true, values }
    }
}

/// Buckets of calls per parent: every distinct count when there are at most
/// 16, else power-of-two ranges (0, 1, 2–3, 4–7, …).
pub(super) fn degree_ranges(degrees: &[u32]) -> Vec<(u32, u32)> {
    let distinct: std::collections::BTreeSet<u32> = degrees.iter().copied().collect();
    if distinct.len() <= 16 {
        return distinct.into_iter().map(|d| (d, d)).collect();
    }
    let ranges: std::collections::BTreeSet<(u32, u32)> = distinct
        .into_iter()
        .map(|d| match d {
            0 => (0, 0),
            d => {
                let low = 1u32 << (31 - d.leading_zeros());
                (low, low.saturating_mul(2).saturating_sub(1))
            }
        })
        .collect();
    ranges.into_iter().collect()
}

impl OpStats {
    /// Parents (indices) grouped by degree, each group's observed and
    /// predicted percentiles.
    fn degree_buckets(
        &self,
        qs: &[f64],
        cdfs: &HashMap<Edge, Cdf>,
        rank: &[u32],
        all_parents: &Percentiles,
    ) -> Vec<DegreeBucket> {
        degree_ranges(&self.degrees)
            .into_iter()
            .map(|(min, max)| {
                let members: Vec<usize> =
                    (0..self.degrees.len()).filter(|&i| (min..=max).contains(&self.degrees[i])).collect();
                let mut counts: HashMap<u32, f64> = HashMap::default();
                for &i in &members {
                    *counts.entry(self.mix_of[i]).or_default() += f64::from(self.durations.weight(i));
                }
                let mut counts: Vec<(u32, f64)> = counts.into_iter().collect();
                counts.sort_unstable_by_key(|&(mix, _)| rank[mix as usize]);
                let prediction = Prediction {
                    edges: cdfs,
                    mixes: counts.into_iter().map(|(mix, n)| (&self.mixes[mix as usize], n)).collect(),
                    parents: members.len() as u64,
                };
                DegreeBucket {
                    min_calls: min,
                    max_calls: max,
                    parents: members.len() as u64,
                    // Every parent in one bucket (calls per parent do not
                    // vary): their percentiles are known already.
                    observed_ms: match members.len() == self.durations.len() {
                        true => all_parents.clone(),
                        false => summarize(
                            members.iter().map(|&i| (self.durations.values()[i], self.durations.weight(i))),
                            qs,
                            self.durations.is_weighted(),
                        ),
                    },
                    predicted_ms: prediction.percentiles(qs),
                }
            })
            .collect()
    }

    /// The report; `name` turns interned ids back into strings, and
    /// `traces` is the table of trace ids the parents' places point into.
    pub(crate) fn report(
        mut self,
        op: (u32, u32),
        qs: &[f64],
        name: &dyn Fn(u32) -> String,
        traces: &[u128],
    ) -> OperationReport {
        let sampled = self.durations.is_weighted();
        // Each edge's calls move into its CDF, sorted once; the percentiles
        // below read them from there.
        let cdfs: HashMap<Edge, Cdf> =
            self.edges.iter_mut().map(|(edge, s)| (*edge, Cdf::from_runs(std::mem::take(&mut s.durations)))).collect();
        // The prediction sums over call mixes in an order of their names, so
        // that its last digits do not depend on which task saw a mix first.
        let mut by_name: Vec<u32> = (0..self.mixes.len() as u32).collect();
        let named = |mix: u32| -> Vec<(String, String, u32)> {
            self.mixes[mix as usize].iter().map(|&((service, op), n)| (name(service), name(op), n)).collect()
        };
        by_name.sort_by_cached_key(|&mix| named(mix));
        let mut rank = vec![0u32; self.mixes.len()];
        for (at, &mix) in by_name.iter().enumerate() {
            rank[mix as usize] = at as u32;
        }
        let parents_by_duration = self.durations.pairs().zip(&self.traces).map(|((d, w), &t)| (d, t, w)).collect();
        let (by_duration, parent_cdf) = by_value(parents_by_duration, traces, sampled);
        let parent_exemplars = exemplars(&by_duration, traces, qs);
        drop(by_duration);
        let parent_latency = summarize_cdf(&parent_cdf, qs, sampled);
        let degree_buckets = self.degree_buckets(qs, &cdfs, &rank, &parent_latency);
        let estimated_parents = self.durations.total_weight();
        let parents = self.durations.len() as u64;
        let total_time: i128 = self.durations.values().iter().map(|&d| i128::from(d)).sum::<i128>().max(1);
        let mut histogram = BTreeMap::new();
        for &d in &self.degrees {
            *histogram.entry(d).or_insert(0u64) += 1;
        }

        let mut mix_weights = vec![0f64; self.mixes.len()];
        for (i, &mix) in self.mix_of.iter().enumerate() {
            mix_weights[mix as usize] += f64::from(self.durations.weight(i));
        }
        let mixes = by_name.iter().map(|&mix| (&self.mixes[mix as usize], mix_weights[mix as usize])).collect();
        let everyone = Prediction { edges: &cdfs, mixes, parents };
        let predicted = everyone.percentiles(qs);

        let exceedance = parent_latency
            .values
            .values()
            .flatten()
            .map(|&t_ms| {
                let t = t_ms * 1e6;
                Exceedance { t_ms, observed: 1.0 - parent_cdf.at(t), predicted: 1.0 - everyone.cdf(t) }
            })
            .collect();

        let mut edge_reports: Vec<EdgeReport> = self
            .edges
            .iter()
            .map(|(edge, stats)| {
                let calls = cdfs[edge].values().len() as u64;
                let parents_calling = stats.per_parent_calls.len() as u64;
                let mean_calls = calls as f64 / parents_calling.max(1) as f64;
                let mut per_parent = BTreeMap::new();
                for &n in &stats.per_parent_calls {
                    *per_parent.entry(n).or_insert(0u64) += 1;
                }
                let edge_cdf = &cdfs[edge];
                // Per parent, its slowest call on this edge, with its trace.
                let slowest = stats.per_parent_max.iter().zip(&stats.per_parent_index).map(|(&max, &i)| {
                    let i = i as usize;
                    (max, self.traces[i], self.durations.weight(i))
                });
                let (edge_max, edge_max_cdf) = by_value(slowest.collect(), traces, sampled);
                let amplification = qs
                    .iter()
                    .map(|&q| {
                        let parent_q = parent_latency.values[&label(q)].map(|v| v * 1e6);
                        let child_q = (calls > 0).then(|| edge_cdf.interpolate(q, |d| d as f64));
                        Amplification {
                            q,
                            ratio: parent_q.zip(child_q).filter(|(_, c)| *c > 0.0).map(|(p, c)| p / c),
                            equivalent_child_percentile: parent_q.map(|p| edge_cdf.at(p)),
                            model_child_percentile: q.powf(1.0 / mean_calls.max(1.0)),
                        }
                    })
                    .collect();
                EdgeReport {
                    child: Operation { service: name(edge.0), operation: name(edge.1) },
                    calls,
                    parents_calling,
                    presence: parents_calling as f64 / parents.max(1) as f64,
                    calls_per_parent: CallsPerParent {
                        mean: mean_calls,
                        max: stats.per_parent_calls.iter().copied().max().unwrap_or(0),
                        histogram: per_parent,
                    },
                    child_latency_ms: summarize_cdf(edge_cdf, qs, sampled),
                    edge_max_latency_ms: summarize_cdf(&edge_max_cdf, qs, sampled),
                    edge_max_exemplars: exemplars(&edge_max, traces, qs),
                    error_rate: stats.errors as f64 / calls.max(1) as f64,
                    critical_path_share: (stats.critical as f64) / total_time as f64,
                    last_finisher_share: stats.last_finisher as f64 / parents.max(1) as f64,
                    amplification,
                }
            })
            .collect();
        edge_reports.sort_by(|a, b| b.critical_path_share.total_cmp(&a.critical_path_share));
        let critical: i128 = self.edges.values().map(|e| e.critical).sum();
        let degree_mean = self.degrees.iter().map(|&d| f64::from(d)).sum::<f64>() / parents.max(1) as f64;
        OperationReport {
            parent: Operation { service: name(op.0), operation: name(op.1) },
            parents,
            estimated_parents,
            sampled,
            parents_without_calls: histogram.get(&0).copied().unwrap_or(0),
            overflow_children: self.overflow,
            degree: Degree { mean: degree_mean, percentiles: histogram_percentiles(&histogram, qs), histogram },
            max_child_latency_ms: summarize(self.max_calls.pairs(), qs, sampled),
            parent_latency_ms: parent_latency,
            parent_exemplars,
            degree_buckets,
            predicted_latency_ms: predicted,
            exceedance,
            time_split: TimeSplit {
                before_first_call: self.before as f64 / total_time as f64,
                calls_in_flight: self.in_flight as f64 / total_time as f64,
                after_last_call: self.after as f64 / total_time as f64,
            },
            parallelism_ratio: percentiles(self.parallelism.iter().copied(), qs),
            parent_self_share: 1.0 - critical as f64 / total_time as f64,
            edges: edge_reports,
        }
    }
}
