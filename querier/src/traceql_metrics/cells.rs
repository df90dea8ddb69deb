//! `spanlake_cells(start_time, origin, step, value)`: per group (the `by()`
//! values), how many spans fall in each cell: a time bucket and, for
//! quantiles and histograms, the power-of-two bucket of the value.
//!
//! Grouped by DataFusion, the time bucket and the power were two columns of
//! a three-column hash aggregate: two scalar functions, each an array per
//! batch, then a hash of three columns and a comparison of each per span
//! (16 % of the CPU of the quantile query, BENCHMARKS.md). Here DataFusion
//! groups by the `by()` values alone, and each span's cell is computed and
//! counted in one pass, in one table keyed by an integer.
//!
//! The result (and the state merged across partitions and queriers) is a
//! list of `(cell, count)` pairs per group: `cell = bucket · 2¹⁶ + power +
//! 2¹⁵` ([`cell_of`]). A value that is null, below 2 or not finite is in no
//! power-of-two bucket and is not counted; a count (rate) counts every span.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, TimestampNanosecondType};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::lit;

use super::buckets::{Step, pow2_of_float, pow2_of_int};
use super::one_group::OneGroup;

/// What a cell's second coordinate is: none (a count), or the power-of-two
/// bucket of an integer or of a float value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Count,
    IntPowers,
    FloatPowers,
}

impl Measure {
    fn of(value: &DataType) -> Result<Self> {
        match value {
            DataType::Null => Ok(Self::Count),
            DataType::Int64 => Ok(Self::IntPowers),
            DataType::Float64 => Ok(Self::FloatPowers),
            other => Err(DataFusionError::Internal(format!("spanlake_cells: a value of type {other}"))),
        }
    }
}

/// A power's offset in a cell number (powers of floats reach −1074).
const POWER_OFFSET: i64 = 1 << 15;
/// Buckets at or above this are not counted (a window has at most
/// [`super::window::MAX_INTERVALS`] + 1; a span outside it is not read).
const BUCKETS: i64 = 1 << 24;

/// The number of the cell of `bucket` and `power`.
fn cell_number(bucket: i64, power: Option<i64>) -> i64 {
    (bucket << 16) + power.map_or(0, |p| p + POWER_OFFSET)
}

/// The time bucket and power-of-two bucket (when `powers`) a cell number names.
pub(super) fn cell_of(number: i64, powers: bool) -> (i64, Option<i32>) {
    (number >> 16, powers.then(|| ((number & 0xffff) - POWER_OFFSET) as i32))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CellsUdaf {
    signature: Signature,
}

/// The aggregate function itself (for a querier that runs another's plan).
pub(crate) fn cells_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(CellsUdaf { signature: Signature::any(4, Volatility::Immutable) })
}

/// The cells of spans by `start` (a nanosecond timestamp), buckets `step`
/// wide from `origin`, and the power-of-two bucket of `value` when given
/// (Int64 or Float64).
pub(super) fn cells(start: Expr, origin: i64, step: i64, value: Option<Expr>) -> Expr {
    let value = value.unwrap_or(lit(ScalarValue::Null));
    cells_udaf().call(vec![start, lit(origin), lit(step), value])
}

pub(super) fn pairs_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, false)))
}

/// The literal `name` (the `index`th argument) of an aggregate.
fn literal(args: &AccumulatorArgs<'_>, index: usize, name: &str) -> Result<i64> {
    match args.exprs.get(index).and_then(|e| e.downcast_ref::<Literal>()).map(Literal::value) {
        Some(ScalarValue::Int64(Some(v))) => Ok(*v),
        _ => Err(DataFusionError::Internal(format!("spanlake_cells: {name} must be an Int64 literal"))),
    }
}

impl AggregateUDFImpl for CellsUdaf {
    fn name(&self) -> &str {
        "spanlake_cells"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(pairs_type())
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[pairs]", args.name), pairs_type(), true))])
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Counts::new(&args)?)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs<'_>) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Counts::new(&args)?))
    }
}

/// Spans counted per group and cell.
#[derive(Debug)]
pub(super) struct Counts {
    origin: i64,
    step: Step,
    measure: Measure,
    counts: CellCounts,
}

/// Cell numbers take 40 bits: a bucket below 2²⁴ and 16 bits of power.
const GROUP_SHIFT: u32 = 40;
/// Groups take the other 24 bits (16M groups: far more series than a
/// query's memory holds).
const MAX_GROUPS: usize = 1 << 24;
/// The first groups count in arrays of their own, at most this many bytes
/// of them in all (per partition; a small share of the default 1 GiB a
/// query may hold); the rest in one hash map.
const DENSE_BYTES: usize = 8 << 20;
const DENSE_GROUPS: usize = 4096;

/// Counts per group and cell. A group's cells are one array indexed by
/// bucket and power (`bucket · width + power`): one multiplication and an
/// add per span, 1.3 ns against 3.2 for a hash map keyed by group and cell
/// (a throwaway micro-benchmark of the bench's 4M server spans: 4 services,
/// 240 buckets, 28,800 cells). Arrays take memory for every cell of the
/// buckets a group reaches, so only the first [`DENSE_GROUPS`] groups get
/// one, within [`DENSE_BYTES`]; other groups, cells beyond the budget, and
/// powers of floats (any of 2,100) count in the hash map. A group may count
/// in both; its counts add up when taken.
#[derive(Debug)]
struct CellCounts {
    /// Cells per bucket in a group's array: 64 powers of an integer, 1 for
    /// a count, 0 when nothing is counted in arrays.
    width: usize,
    dense: Vec<Vec<u64>>,
    dense_bytes: usize,
    /// Keyed by group · 2⁴⁰ + cell number.
    sparse: std::collections::HashMap<u64, u64, foldhash::fast::FixedState>,
}

impl CellCounts {
    fn new(measure: Measure) -> Self {
        let width = match measure {
            Measure::Count => 1,
            Measure::IntPowers => 64,
            Measure::FloatPowers => 0,
        };
        Self { width, dense: Vec::new(), dense_bytes: 0, sparse: Default::default() }
    }

    /// Adds `count` spans to the cell of `bucket` and `power` (an integer's
    /// power is in 1..=63) of `group`.
    #[inline]
    fn add(&mut self, group: usize, bucket: i64, power: Option<i64>, count: u64) {
        if self.width > 0 {
            let at = bucket as usize * self.width + power.unwrap_or(0) as usize;
            if let Some(cell) = self.dense.get_mut(group).and_then(|cells| cells.get_mut(at)) {
                *cell += count;
                return;
            }
            if self.widen(group, at) {
                self.dense[group][at] += count;
                return;
            }
        }
        let cell = cell_number(bucket, power) as u64 & ((1 << GROUP_SHIFT) - 1);
        *self.sparse.entry(((group as u64) << GROUP_SHIFT) | cell).or_default() += count;
    }

    /// Makes `group`'s array reach index `at`, if the budget allows.
    #[cold]
    fn widen(&mut self, group: usize, at: usize) -> bool {
        if group >= DENSE_GROUPS {
            return false;
        }
        let had = self.dense.get(group).map_or(0, Vec::len);
        // Whole buckets, doubling, so a group reaching later buckets grows
        // its array a few times only.
        let buckets = (at / self.width + 1).max(had / self.width * 2);
        let len = buckets * self.width;
        if self.dense_bytes + (len - had) * 8 > DENSE_BYTES {
            return false;
        }
        if self.dense.len() <= group {
            self.dense.resize_with(group + 1, Vec::new);
        }
        self.dense[group].resize(len, 0);
        self.dense_bytes += (len - had) * 8;
        true
    }

    /// The `(cell number, count)` pairs of the first `groups` groups (all
    /// when None), taken out; the groups after them are renumbered from 0.
    fn take(&mut self, groups: Option<usize>) -> Vec<Vec<i64>> {
        let groups = groups.unwrap_or_else(|| {
            let sparse = self.sparse.keys().map(|k| (k >> GROUP_SHIFT) as usize + 1).max().unwrap_or(0);
            sparse.max(self.dense.len())
        });
        let mut pairs: Vec<Vec<i64>> = vec![Vec::new(); groups];
        let taken = groups.min(self.dense.len());
        for (list, cells) in pairs.iter_mut().zip(self.dense.drain(..taken)) {
            self.dense_bytes -= cells.len() * 8;
            for (at, &count) in cells.iter().enumerate().filter(|(_, count)| **count > 0) {
                let power = (self.width > 1).then_some((at % self.width) as i64);
                list.extend([cell_number((at / self.width) as i64, power), count as i64]);
            }
        }
        let sparse = std::mem::take(&mut self.sparse);
        for (key, count) in sparse {
            let (group, cell) = ((key >> GROUP_SHIFT) as usize, key & ((1 << GROUP_SHIFT) - 1));
            match pairs.get_mut(group) {
                Some(list) => list.extend([cell as i64, count as i64]),
                None => {
                    self.sparse.insert((((group - groups) as u64) << GROUP_SHIFT) | cell, count);
                }
            }
        }
        pairs
    }

    fn bytes(&self) -> usize {
        self.dense_bytes + self.dense.capacity() * 24 + self.sparse.capacity() * 17
    }
}

pub(super) fn too_many_groups(groups: usize) -> Result<()> {
    if groups >= MAX_GROUPS {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "a metrics query of {groups} groups: at most {} can be counted",
            MAX_GROUPS - 1
        )));
    }
    Ok(())
}

impl Counts {
    pub(super) fn new(args: &AccumulatorArgs<'_>) -> Result<Self> {
        let origin = literal(args, 1, "origin")?;
        let step = literal(args, 2, "step")?;
        if step <= 0 {
            return Err(DataFusionError::Internal(format!("spanlake_cells: step {step} is not positive")));
        }
        let value = args.exprs.get(3).map(|e| e.data_type(args.schema)).transpose()?.unwrap_or(DataType::Null);
        let measure = Measure::of(&value)?;
        Ok(Self { origin, step: Step::new(step), measure, counts: CellCounts::new(measure) })
    }

    /// Counts spans: `starts` (ns) and the measured `values` of `rows`,
    /// each `(row, group)`.
    pub(super) fn count_spans(
        &mut self,
        starts: &ArrayRef,
        values: &ArrayRef,
        rows: impl Iterator<Item = (usize, usize)>,
    ) -> Result<()> {
        let starts = match starts.data_type() {
            DataType::Timestamp(..) => starts.as_primitive_opt::<TimestampNanosecondType>().map(|a| a.values()),
            _ => starts.as_primitive_opt::<Int64Type>().map(|a| a.values()),
        };
        let starts = starts.ok_or_else(|| DataFusionError::Internal("spanlake_cells: start is not in ns".into()))?;
        let (origin, step) = (self.origin, self.step);
        let bucket = |row: usize| Some(step.quotient(starts[row].wrapping_sub(origin)).max(0)).filter(|b| *b < BUCKETS);
        let counts = &mut self.counts;
        match self.measure {
            Measure::Count => count_rows(counts, rows, |row| Some((bucket(row)?, None))),
            Measure::IntPowers => {
                let values = values.as_primitive::<Int64Type>();
                count_rows(counts, rows, |row| {
                    // Values below 2 are in no bucket (as Tempo).
                    let value = values.is_valid(row).then(|| values.value(row)).filter(|v| *v >= 2);
                    Some((bucket(row)?, Some(pow2_of_int(value?)?)))
                })
            }
            Measure::FloatPowers => {
                let values = values.as_primitive::<Float64Type>();
                count_rows(counts, rows, |row| {
                    let value = values.is_valid(row).then(|| values.value(row)).filter(|v| *v >= 2.0);
                    Some((bucket(row)?, Some(pow2_of_float(value?)?)))
                })
            }
        }
        Ok(())
    }

    /// The groups `emit_to` names, taken out, as lists of `(cell, count)`
    /// pairs; the groups after them are renumbered from 0.
    pub(super) fn take(&mut self, emit_to: EmitTo) -> ListArray {
        let pairs = self.counts.take(match emit_to {
            EmitTo::All => None,
            EmitTo::First(n) => Some(n),
        });
        pairs_list(pairs)
    }
}

#[cfg(test)]
impl Counts {
    /// Counts of spans (no value) in buckets `step` wide from 0.
    pub(super) fn counting(step: i64) -> Self {
        Self { origin: 0, step: Step::new(step), measure: Measure::Count, counts: CellCounts::new(Measure::Count) }
    }
}

/// Adds one to the cell `cell(row)` names (its bucket and power; None: the
/// row is not counted) of each row's group.
#[inline]
fn count_rows(
    counts: &mut CellCounts,
    rows: impl Iterator<Item = (usize, usize)>,
    cell: impl Fn(usize) -> Option<(i64, Option<i64>)>,
) {
    for (row, group) in rows {
        if let Some((bucket, power)) = cell(row) {
            counts.add(group, bucket, power, 1);
        }
    }
}

/// The rows of `groups` that `filter` (an aggregate's `FILTER`) keeps, each
/// with its group.
fn kept<'a>(groups: &'a [usize], filter: Option<&'a BooleanArray>) -> impl Iterator<Item = (usize, usize)> + 'a {
    let keeps = move |row: usize| filter.is_none_or(|f| f.is_valid(row) && f.value(row));
    groups.iter().copied().enumerate().filter(move |&(row, _)| keeps(row))
}

/// Lists of `(cell, count)` pairs as a list array.
fn pairs_list(pairs: Vec<Vec<i64>>) -> ListArray {
    let offsets = OffsetBuffer::from_lengths(pairs.iter().map(Vec::len));
    let values = Int64Array::from(pairs.into_iter().flatten().collect::<Vec<i64>>());
    ListArray::new(Arc::new(Field::new_list_field(DataType::Int64, false)), offsets, Arc::new(values), None)
}

fn wrong(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("spanlake_cells: {what}"))
}

/// The starts and the measured values of the aggregate's arguments.
fn arguments(values: &[ArrayRef]) -> Result<(&ArrayRef, &ArrayRef)> {
    match values {
        [starts, _origin, _step, measured] => Ok((starts, measured)),
        _ => Err(wrong("takes (start_time, origin, step, value)")),
    }
}

impl GroupsAccumulator for Counts {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let (starts, measured) = arguments(values)?;
        too_many_groups(total)?;
        self.count_spans(starts, measured, kept(groups, filter))
    }

    fn merge_batch(&mut self, values: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        let [pairs] = values else { return Err(wrong("merges one list of pairs")) };
        too_many_groups(total)?;
        let pairs = pairs.as_list_opt::<i32>().ok_or_else(|| wrong("a state that is not a list"))?;
        for (row, &group) in groups.iter().enumerate() {
            if pairs.is_null(row) {
                continue;
            }
            let list = pairs.value(row);
            let list = list.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong("pairs that are not Int64"))?;
            for pair in list.values().chunks_exact(2) {
                let (bucket, power) = cell_of(pair[0], self.measure != Measure::Count);
                if (0..BUCKETS).contains(&bucket) {
                    self.counts.add(group, bucket, power.map(i64::from), pair[1].max(0) as u64);
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(self.take(emit_to)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(self.take(emit_to))])
    }

    /// Each row as a state of its own: a list of its one cell, or empty
    /// where the row is not counted.
    fn convert_to_state(&self, values: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let (starts, measured) = arguments(values)?;
        let mut single = Self { counts: CellCounts::new(self.measure), ..*self };
        let rows: Vec<usize> = (0..starts.len()).collect();
        single.count_spans(starts, measured, kept(&rows, filter))?;
        let mut pairs = single.counts.take(Some(rows.len()));
        // Each row counted once at most: `(cell, 1)`, or nothing.
        pairs.resize(rows.len(), Vec::new());
        let list = pairs_list(pairs);
        Ok(vec![Arc::new(list)])
    }

    fn size(&self) -> usize {
        // A key, a count and a control byte per slot.
        std::mem::size_of::<Self>() + self.counts.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(measure: Measure) -> Counts {
        Counts { origin: 0, step: Step::new(10), measure, counts: CellCounts::new(measure) }
    }

    /// `(cell, count)` pairs as (bucket, power, count), sorted.
    fn decoded(pairs: &[i64]) -> Vec<(i64, Option<i32>, i64)> {
        let mut got: Vec<_> = pairs
            .chunks_exact(2)
            .map(|p| {
                let (bucket, power) = cell_of(p[0], true);
                (bucket, power, p[1])
            })
            .collect();
        got.sort();
        got
    }

    fn pairs(list: &ListArray, row: usize) -> Vec<(i64, Option<i32>, i64)> {
        decoded(list.value(row).as_primitive::<Int64Type>().values())
    }

    /// Spans counted by group, time bucket and power; emitting the first
    /// groups renumbers the rest; a state merges back to the same counts.
    #[test]
    fn cells_are_counted_emitted_and_merged() {
        let mut c = counts(Measure::IntPowers);
        let starts: ArrayRef = Arc::new(Int64Array::from(vec![0, 5, 15, 15, 25, 31, 99]));
        let values: ArrayRef =
            Arc::new(Int64Array::from(vec![Some(2), Some(3), Some(4), Some(1), None, Some(1 << 40), Some(5)]));
        c.count_spans(&starts, &values, kept(&[0, 0, 1, 1, 2, 2, 2], None)).unwrap();
        // 2 → 2¹, 3 → 2²; 1 and null are in no bucket.
        let first = c.take(EmitTo::First(1));
        assert_eq!(pairs(&first, 0), [(0, Some(1), 1), (0, Some(2), 1)]);
        let rest = c.take(EmitTo::All);
        assert_eq!(rest.len(), 2);
        assert_eq!(pairs(&rest, 0), [(1, Some(2), 1)]);
        assert_eq!(pairs(&rest, 1), [(3, Some(40), 1), (9, Some(3), 1)]);
        let mut merged = counts(Measure::IntPowers);
        let state: ArrayRef = Arc::new(rest);
        merged.merge_batch(&[Arc::clone(&state)], &[0, 0], 1).unwrap();
        merged.merge_batch(&[state], &[0, 0], 1).unwrap();
        let all = merged.take(EmitTo::All);
        assert_eq!(pairs(&all, 0), [(1, Some(2), 2), (3, Some(40), 2), (9, Some(3), 2)]);
    }

    /// Without groups: nothing counted is null; counted spans, their cells;
    /// the state merges into another.
    #[test]
    fn one_group_answers_null_until_it_counts() {
        use datafusion::logical_expr::Accumulator;
        let mut one = OneGroup(counts(Measure::Count));
        assert!(one.evaluate().unwrap().is_null());
        let starts: ArrayRef = Arc::new(Int64Array::from(vec![3, 14, 15]));
        let values: ArrayRef = Arc::new(arrow::array::NullArray::new(3));
        let [origin, step]: [ArrayRef; 2] =
            [Arc::new(Int64Array::from(vec![0; 3])), Arc::new(Int64Array::from(vec![10; 3]))];
        one.update_batch(&[starts, origin, step, values]).unwrap();
        let state: Vec<ArrayRef> = one.state().unwrap().iter().map(|s| s.to_array().unwrap()).collect();
        let mut other = OneGroup(counts(Measure::Count));
        other.merge_batch(&state).unwrap();
        let ScalarValue::List(list) = other.evaluate().unwrap() else { panic!("a list") };
        let got: Vec<_> = decoded(list.value(0).as_primitive::<Int64Type>().values())
            .into_iter()
            .map(|(bucket, _, count)| (bucket, count))
            .collect();
        assert_eq!(got, [(0, 1), (1, 2)]);
    }

    /// Past the arrays' budget, and beyond their groups, cells count in
    /// the hash map; taken, a group's counts from both add up.
    #[test]
    fn cells_beyond_the_arrays_count_in_the_map() {
        let mut cells = CellCounts::new(Measure::IntPowers);
        // One group's array reaches the budget (16,384 buckets of 64
        // powers); buckets past it count in the map.
        let reach = (DENSE_BYTES / 8 / 64) as i64;
        for bucket in [0, 1, reach - 1, reach, reach + 1, 3 * reach] {
            cells.add(0, bucket, Some(5), 2);
            cells.add(0, bucket, Some(5), 1);
        }
        cells.add(DENSE_GROUPS + 3, 7, Some(63), 4);
        assert!(cells.dense_bytes <= DENSE_BYTES && !cells.sparse.is_empty());
        let pairs = cells.take(None);
        assert_eq!(pairs.len(), DENSE_GROUPS + 4);
        let want: Vec<_> = [0, 1, reach - 1, reach, reach + 1, 3 * reach].map(|b| (b, Some(5), 3)).to_vec();
        assert_eq!(decoded(&pairs[0]), want);
        assert_eq!(pairs[DENSE_GROUPS + 3], [cell_number(7, Some(63)), 4]);
        assert_eq!((cells.dense_bytes, cells.sparse.len()), (0, 0));
    }
}
