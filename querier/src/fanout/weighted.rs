//! Values with adjusted counts, stored for what most data is: unsampled.
//!
//! A parent's adjusted count is 1 unless its trace was sampled with a known
//! probability. A weight beside every duration doubles what a call takes
//! (16 bytes with alignment against 8), for a weight that is nearly always
//! 1, so [`Weighted`] holds the weights only from the first value whose
//! weight is not 1, and [`Cdf`] its running total only then.

/// Values in arrival order, with their weights when any is not 1.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Weighted {
    #[serde(with = "super::compact::ints")]
    values: Vec<i64>,
    /// One per value, once a weight other than 1 arrived.
    weights: Option<Vec<f32>>,
}

impl Weighted {
    pub(super) fn push(&mut self, value: i64, weight: f32) {
        if weight != 1.0 && self.weights.is_none() {
            self.weights = Some(vec![1.0; self.values.len()]);
        }
        if let Some(weights) = &mut self.weights {
            weights.push(weight);
        }
        self.values.push(value);
    }

    /// Sorts the values (each weight moving with its value), so that values
    /// of several tasks, each sorted, are sorted again as a merge of runs.
    pub(super) fn sort(&mut self) {
        match self.weights.take() {
            None => self.values.sort_unstable(),
            Some(weights) => {
                let mut pairs: Vec<(i64, f32)> = self.values.iter().copied().zip(weights).collect();
                pairs.sort_unstable_by_key(|p| p.0);
                self.values = pairs.iter().map(|p| p.0).collect();
                self.weights = Some(pairs.into_iter().map(|p| p.1).collect());
            }
        }
    }

    /// Whether there is a weight per value, if any (received statistics
    /// are checked before they are read).
    pub(super) fn is_whole(&self) -> bool {
        self.weights.as_ref().is_none_or(|w| w.len() == self.values.len())
    }

    /// Appends `other`'s values after these.
    pub(super) fn extend(&mut self, other: Weighted) {
        match (&mut self.weights, other.weights) {
            (None, None) => {}
            (Some(mine), None) => {
                mine.reserve_exact(other.values.len());
                mine.resize(mine.len() + other.values.len(), 1.0);
            }
            (mine @ None, Some(theirs)) => {
                let mut weights = Vec::with_capacity(self.values.len() + theirs.len());
                weights.resize(self.values.len(), 1.0);
                weights.extend(theirs);
                *mine = Some(weights);
            }
            (Some(mine), Some(theirs)) => super::stats::extend_exact(mine, theirs),
        }
        super::stats::extend_exact(&mut self.values, other.values);
    }

    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// Makes room for `more` values (and their weights, if weighted).
    pub(super) fn reserve_exact(&mut self, more: usize) {
        self.values.reserve_exact(more);
        if let Some(weights) = &mut self.weights {
            weights.reserve_exact(more);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(super) fn values(&self) -> &[i64] {
        &self.values
    }

    /// Whether any value has a weight other than 1.
    pub(super) fn is_weighted(&self) -> bool {
        self.weights.is_some()
    }

    pub(super) fn weight(&self, i: usize) -> f32 {
        self.weights.as_ref().map_or(1.0, |w| w[i])
    }

    /// (value, weight) in arrival order.
    pub(super) fn pairs(&self) -> impl Iterator<Item = (i64, f32)> + '_ {
        (0..self.values.len()).map(|i| (self.values[i], self.weight(i)))
    }

    /// The sum of the weights.
    pub(super) fn total_weight(&self) -> f64 {
        match &self.weights {
            None => self.values.len() as f64,
            Some(weights) => weights.iter().map(|&w| f64::from(w)).sum(),
        }
    }
}

/// Values gathered by several tasks: one run per task, each sorted on its
/// task (see [`Runs::sort`]), merged once into a [`Cdf`]. Absorbing another
/// task's values takes its runs over without copying them.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Runs {
    runs: Vec<Weighted>,
}

impl Runs {
    /// Adds a value to the last run.
    pub(super) fn push(&mut self, value: i64, weight: f32) {
        if self.runs.is_empty() {
            self.runs.push(Weighted::default());
        }
        self.runs.last_mut().expect("a run").push(value, weight);
    }

    /// Sorts each run.
    pub(super) fn sort(&mut self) {
        self.runs.iter_mut().for_each(Weighted::sort);
    }

    /// Whether every run has a weight per value, if any.
    pub(super) fn is_whole(&self) -> bool {
        self.runs.iter().all(Weighted::is_whole)
    }

    /// Takes `other`'s runs over.
    pub(super) fn append(&mut self, other: Runs) {
        self.runs.extend(other.runs.into_iter().filter(|run| !run.is_empty()));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.runs.iter().map(Weighted::len).sum()
    }
}

/// Two sorted runs merged into one (weights with their values).
fn merge(a: Weighted, b: Weighted) -> Weighted {
    if !a.is_weighted() && !b.is_weighted() {
        return Weighted { values: merge_values(&a.values, &b.values), weights: None };
    }
    let (mut values, mut weights) = (Vec::with_capacity(a.len() + b.len()), Vec::with_capacity(a.len() + b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let from_a = a.values[i] <= b.values[j];
        let (run, at) = if from_a { (&a, &mut i) } else { (&b, &mut j) };
        values.push(run.values[*at]);
        weights.push(run.weight(*at));
        *at += 1;
    }
    for (run, from) in [(&a, i), (&b, j)] {
        values.extend_from_slice(&run.values[from..]);
        weights.extend((from..run.len()).map(|k| run.weight(k)));
    }
    Weighted { values, weights: Some(weights) }
}

/// Two sorted runs of values merged into one, without a branch on which
/// run a value comes from: runs of durations interleave at random, so such
/// a branch guesses wrong about half the time.
fn merge_values(a: &[i64], b: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let from_a = x <= y;
        out.push(if from_a { x } else { y });
        i += usize::from(from_a);
        j += usize::from(!from_a);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// An empirical CDF over weighted values: the values sorted, with the
/// running total of their weights when they are weighted.
#[derive(Debug, Default)]
pub(super) struct Cdf {
    values: Vec<i64>,
    cumulative: Option<Vec<f64>>,
}

impl Cdf {
    /// The CDF of `weighted`, sorted here. Equal values may come in any
    /// order: the CDF is read at the bounds of their run.
    pub(super) fn new(mut weighted: Weighted) -> Self {
        weighted.sort();
        let Weighted { values, weights } = weighted;
        Self::from_sorted(values, weights)
    }

    /// The CDF of `values`, sorted, with their weights (None: all 1).
    pub(super) fn from_sorted(values: Vec<i64>, weights: Option<Vec<f32>>) -> Self {
        debug_assert!(values.is_sorted());
        let cumulative = weights.map(|weights| {
            let mut total = 0.0;
            weights
                .iter()
                .map(|&w| {
                    total += f64::from(w);
                    total
                })
                .collect()
        });
        Self { values, cumulative }
    }

    /// The CDF of the values of `runs`: runs merged pairwise (each value
    /// copied once per level, ⌈log₂ runs⌉ levels), each run sorted first
    /// unless it already is.
    pub(super) fn from_runs(runs: Runs) -> Self {
        let mut runs: Vec<Weighted> = runs.runs;
        for run in &mut runs {
            if !run.values.is_sorted() {
                run.sort();
            }
        }
        while runs.len() > 1 {
            let mut merged = Vec::with_capacity(runs.len().div_ceil(2));
            let mut pairs = runs.into_iter();
            while let Some(a) = pairs.next() {
                merged.push(match pairs.next() {
                    Some(b) => merge(a, b),
                    None => a,
                });
            }
            runs = merged;
        }
        let Weighted { values, weights } = runs.pop().unwrap_or_default();
        Self::from_sorted(values, weights)
    }

    /// The values, sorted.
    pub(super) fn values(&self) -> &[i64] {
        &self.values
    }

    /// Weighted fraction of values at or below `x`.
    pub(super) fn at(&self, x: f64) -> f64 {
        if self.values.is_empty() {
            return 1.0;
        }
        let below = self.values.partition_point(|&v| (v as f64) <= x);
        match (&self.cumulative, below) {
            (_, 0) => 0.0,
            (None, i) => i as f64 / self.values.len() as f64,
            (Some(cumulative), i) => cumulative[i - 1] / cumulative[cumulative.len() - 1],
        }
    }

    pub(super) fn max(&self) -> Option<i64> {
        self.values.last().copied()
    }

    /// The value at quantile `q` (of a non-empty CDF) interpolated between
    /// the closest ranks, as `percentile_cont`, weights aside. `scale` maps
    /// a value before interpolating.
    pub(super) fn interpolate(&self, q: f64, scale: impl Fn(i64) -> f64) -> f64 {
        let pos = q * (self.values.len() - 1) as f64;
        let (low, high) = (pos.floor() as usize, pos.ceil() as usize);
        let (a, b) = (scale(self.values[low]), scale(self.values[high]));
        a + (b - a) * (pos - low as f64)
    }

    /// The smallest value (of a non-empty CDF) whose cumulative weight
    /// reaches `q` of the total.
    pub(super) fn weighted_quantile(&self, q: f64) -> i64 {
        let n = self.values.len();
        let at = match &self.cumulative {
            Some(cumulative) => cumulative.partition_point(|&c| c < q * cumulative[n - 1]),
            // Every weight 1: the cumulative weight of value i is i + 1, and
            // the integers below x number ceil(x) - 1.
            None => ((q * n as f64).ceil() as usize).saturating_sub(1),
        };
        self.values[at.min(n - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_sorted_apart_give_the_cdf_of_the_whole() {
        // Three tasks' values, each sorted on its task, then appended.
        let parts =
            [[(50, 1.0), (10, 2.0), (30, 1.0)], [(20, 4.0), (60, 1.0), (40, 1.0)], [(35, 1.0), (5, 1.0), (50, 3.0)]];
        let mut runs = Weighted::default();
        let mut whole = Weighted::default();
        for part in parts {
            let mut run = Weighted::default();
            for (value, weight) in part {
                run.push(value, weight);
                whole.push(value, weight);
            }
            run.sort();
            assert!(run.values().is_sorted());
            runs.extend(run);
        }
        let (runs, whole) = (Cdf::new(runs), Cdf::new(whole));
        assert_eq!(runs.values(), whole.values());
        for x in [0.0, 10.0, 30.0, 50.0, 60.0] {
            assert_eq!(runs.at(x), whole.at(x), "weights moved with their values, at {x}");
        }
        assert_eq!(runs.at(10.0), 3.0 / 15.0, "5 (weight 1) and 10 (weight 2) of 15");
    }

    #[test]
    fn runs_merged_give_the_cdf_of_the_whole() {
        // Runs of several tasks, some weighted, one unsorted (never sorted
        // on its task), one empty.
        let parts: [&[(i64, f32)]; 5] = [
            &[(50, 1.0), (10, 1.0), (30, 1.0)],
            &[(20, 4.0), (60, 1.0), (40, 1.0), (10, 2.0)],
            &[],
            &[(35, 1.0), (5, 1.0), (50, 3.0)],
            &[(7, 1.0), (7, 1.0), (70, 1.0)],
        ];
        let mut all = Runs::default();
        let mut whole = Weighted::default();
        for (at, part) in parts.into_iter().enumerate() {
            let mut run = Runs::default();
            for &(value, weight) in part {
                run.push(value, weight);
                whole.push(value, weight);
            }
            if at != 3 {
                run.sort();
            }
            all.append(run);
        }
        assert_eq!(all.len(), whole.len());
        let (merged, whole) = (Cdf::from_runs(all), Cdf::new(whole));
        assert_eq!(merged.values(), whole.values());
        assert_eq!(merged.cumulative, whole.cumulative);
        assert_eq!(Cdf::from_runs(Runs::default()).values(), [] as [i64; 0]);
    }

    #[test]
    fn unweighted_runs_merge_in_order() {
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 54) as i64
        };
        for (n, m) in [(0, 0), (0, 5), (5, 0), (1000, 999), (3, 2000)] {
            let mut a: Vec<i64> = (0..n).map(|_| next()).collect();
            let mut b: Vec<i64> = (0..m).map(|_| next()).collect();
            a.sort_unstable();
            b.sort_unstable();
            let mut whole = [a.clone(), b.clone()].concat();
            whole.sort_unstable();
            assert_eq!(merge_values(&a, &b), whole, "{n} and {m} values");
        }
    }

    #[test]
    fn weights_are_kept_only_from_the_first_that_is_not_one() {
        let mut unsampled = Weighted::default();
        unsampled.push(30, 1.0);
        unsampled.push(10, 1.0);
        assert!(!unsampled.is_weighted());
        let mut sampled = Weighted::default();
        sampled.push(20, 1.0);
        sampled.push(40, 4.0);
        assert!(sampled.is_weighted());
        let mut all = Weighted::default();
        all.extend(unsampled);
        all.extend(sampled);
        assert_eq!(all.pairs().collect::<Vec<_>>(), [(30, 1.0), (10, 1.0), (20, 1.0), (40, 4.0)]);
        assert_eq!(all.total_weight(), 7.0);

        let cdf = Cdf::new(all);
        assert_eq!(cdf.values(), [10, 20, 30, 40]);
        assert_eq!(cdf.at(20.0), 2.0 / 7.0);
        assert_eq!(cdf.at(5.0), 0.0);
        // Half the weight is reached only at 40 (weight 4 of 7).
        assert_eq!(cdf.weighted_quantile(0.5), 40);
        assert_eq!(cdf.weighted_quantile(0.2), 20);
    }

    #[test]
    fn unweighted_quantiles_interpolate_between_ranks() {
        let mut values = Weighted::default();
        for v in [40, 10, 30, 20] {
            values.push(v, 1.0);
        }
        let cdf = Cdf::new(values);
        assert_eq!(cdf.at(25.0), 0.5);
        assert_eq!(cdf.interpolate(0.5, |v| v as f64), 25.0);
        assert_eq!(cdf.interpolate(1.0, |v| v as f64), 40.0);
        // As the weighted method reads weights of 1: the smallest value
        // whose count reaches q of all.
        for (q, expected) in [(0.0, 10), (0.25, 10), (0.26, 20), (0.5, 20), (0.75, 30), (0.99, 40), (1.0, 40)] {
            assert_eq!(cdf.weighted_quantile(q), expected, "q={q}");
        }
        assert_eq!(cdf.max(), Some(40));
    }
}
