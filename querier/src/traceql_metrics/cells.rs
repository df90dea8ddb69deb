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

fn pairs_type() -> DataType {
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
struct Counts {
    origin: i64,
    step: Step,
    measure: Measure,
    /// Keyed by group · 2⁴⁰ + cell number.
    counts: CountTable,
}

/// Cell numbers take 40 bits: a bucket below 2²⁴ and 16 bits of power.
const GROUP_SHIFT: u32 = 40;
/// Groups take the other 24 bits (16M groups: far more series than a
/// query's memory holds).
const MAX_GROUPS: usize = 1 << 24;

/// Counts by key, in one array: open addressing, linear probing, at most
/// half full. Keys are never [`CountTable::EMPTY`] (a group below
/// [`MAX_GROUPS`] − 1 sets fewer bits). One multiplication finds a key's
/// slot; a general hash map spent a few nanoseconds more per span
/// (hashing, and its probe of a group of control bytes).
#[derive(Debug, Default)]
struct CountTable {
    slots: Vec<(u64, u64)>,
    len: usize,
}

impl CountTable {
    const EMPTY: u64 = u64::MAX;

    fn slot(&self, key: u64) -> usize {
        // Fibonacci hashing: the top bits of the product.
        let bits = self.slots.len().trailing_zeros();
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    fn add(&mut self, key: u64, count: u64) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut at = self.slot(key);
        loop {
            let slot = &mut self.slots[at];
            if slot.0 == key {
                slot.1 += count;
                return;
            }
            if slot.0 == Self::EMPTY {
                *slot = (key, count);
                self.len += 1;
                return;
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![(Self::EMPTY, 0); size]);
        self.len = 0;
        for (key, count) in old.into_iter().filter(|(key, _)| *key != Self::EMPTY) {
            self.add(key, count);
        }
    }

    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().map(|(key, _)| *key).filter(|key| *key != Self::EMPTY)
    }

    /// Every key and count, the table left empty.
    fn drain(&mut self) -> impl Iterator<Item = (u64, u64)> {
        self.len = 0;
        std::mem::take(&mut self.slots).into_iter().filter(|(key, _)| *key != Self::EMPTY)
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

fn too_many_groups(groups: usize) -> Result<()> {
    if groups >= MAX_GROUPS {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "a metrics query of {groups} groups: at most {} can be counted",
            MAX_GROUPS - 1
        )));
    }
    Ok(())
}

impl Counts {
    fn new(args: &AccumulatorArgs<'_>) -> Result<Self> {
        let origin = literal(args, 1, "origin")?;
        let step = literal(args, 2, "step")?;
        if step <= 0 {
            return Err(DataFusionError::Internal(format!("spanlake_cells: step {step} is not positive")));
        }
        let value = args.exprs.get(3).map(|e| e.data_type(args.schema)).transpose()?.unwrap_or(DataType::Null);
        Ok(Self { origin, step: Step::new(step), measure: Measure::of(&value)?, counts: CountTable::default() })
    }

    fn add(&mut self, group: usize, cell: i64, count: u64) {
        self.counts.add(((group as u64) << GROUP_SHIFT) | (cell as u64 & ((1 << GROUP_SHIFT) - 1)), count);
    }

    /// Counts spans: `starts` (ns), the measured `values`, of rows `groups`.
    fn count_spans(
        &mut self,
        starts: &ArrayRef,
        values: &ArrayRef,
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let starts = match starts.data_type() {
            DataType::Timestamp(..) => starts.as_primitive_opt::<TimestampNanosecondType>().map(|a| a.values()),
            _ => starts.as_primitive_opt::<Int64Type>().map(|a| a.values()),
        };
        let starts = starts.ok_or_else(|| DataFusionError::Internal("spanlake_cells: start is not in ns".into()))?;
        let skip = |row: usize| filter.is_some_and(|f| !f.is_valid(row) || !f.value(row));
        let (origin, step) = (self.origin, self.step);
        let bucket = |row: usize| Some(step.quotient(starts[row].wrapping_sub(origin)).max(0)).filter(|b| *b < BUCKETS);
        match self.measure {
            Measure::Count => {
                for (row, &group) in groups.iter().enumerate() {
                    if let (false, Some(bucket)) = (skip(row), bucket(row)) {
                        self.add(group, cell_number(bucket, None), 1);
                    }
                }
            }
            Measure::IntPowers => {
                let values = values.as_primitive::<Int64Type>();
                for (row, &group) in groups.iter().enumerate() {
                    // Values below 2 are in no bucket (as Tempo).
                    let power =
                        values.is_valid(row).then(|| values.value(row)).filter(|v| *v >= 2).and_then(pow2_of_int);
                    if let (false, Some(bucket), Some(power)) = (skip(row), bucket(row), power) {
                        self.add(group, cell_number(bucket, Some(power)), 1);
                    }
                }
            }
            Measure::FloatPowers => {
                let values = values.as_primitive::<Float64Type>();
                for (row, &group) in groups.iter().enumerate() {
                    let power =
                        values.is_valid(row).then(|| values.value(row)).filter(|v| *v >= 2.0).and_then(pow2_of_float);
                    if let (false, Some(bucket), Some(power)) = (skip(row), bucket(row), power) {
                        self.add(group, cell_number(bucket, Some(power)), 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// The groups `emit_to` names, taken out, as lists of `(cell, count)`
    /// pairs; the groups after them are renumbered from 0.
    fn take(&mut self, emit_to: EmitTo) -> ListArray {
        let groups = match emit_to {
            EmitTo::All => self.counts.keys().map(|k| (k >> GROUP_SHIFT) as usize + 1).max().unwrap_or(0),
            EmitTo::First(n) => n,
        };
        let mut pairs: Vec<Vec<i64>> = vec![Vec::new(); groups];
        let mut kept = CountTable::default();
        for (key, count) in self.counts.drain() {
            let group = (key >> GROUP_SHIFT) as usize;
            let cell = (key & ((1 << GROUP_SHIFT) - 1)) as i64;
            match pairs.get_mut(group) {
                Some(list) => list.extend([cell, count as i64]),
                None => {
                    kept.add((((group - groups) as u64) << GROUP_SHIFT) | cell as u64, count);
                }
            }
        }
        self.counts = kept;
        let offsets = OffsetBuffer::from_lengths(pairs.iter().map(Vec::len));
        let values = Int64Array::from(pairs.into_iter().flatten().collect::<Vec<i64>>());
        ListArray::new(Arc::new(Field::new_list_field(DataType::Int64, false)), offsets, Arc::new(values), None)
    }
}

fn wrong(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("spanlake_cells: {what}"))
}

impl GroupsAccumulator for Counts {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let [starts, _origin, _step, measured] = values else {
            return Err(wrong("takes (start_time, origin, step, value)"));
        };
        too_many_groups(total)?;
        self.count_spans(starts, measured, groups, filter)
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
                self.add(group, pair[0], pair[1].max(0) as u64);
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
        let [starts, _origin, _step, measured] = values else {
            return Err(wrong("takes (start_time, origin, step, value)"));
        };
        let mut single = Self { counts: CountTable::default(), ..*self };
        let rows: Vec<usize> = (0..starts.len()).collect();
        single.count_spans(starts, measured, &rows, filter)?;
        let mut pairs = vec![None; rows.len()];
        for (key, _) in single.counts.drain() {
            pairs[(key >> GROUP_SHIFT) as usize] = Some((key & ((1 << GROUP_SHIFT) - 1)) as i64);
        }
        let offsets = OffsetBuffer::from_lengths(pairs.iter().map(|p| if p.is_some() { 2 } else { 0 }));
        let values = Int64Array::from(pairs.into_iter().flatten().flat_map(|cell| [cell, 1]).collect::<Vec<i64>>());
        let list =
            ListArray::new(Arc::new(Field::new_list_field(DataType::Int64, false)), offsets, Arc::new(values), None);
        Ok(vec![Arc::new(list)])
    }

    fn size(&self) -> usize {
        // A key, a count and a control byte per slot.
        std::mem::size_of::<Self>() + self.counts.bytes()
    }
}

/// The same for an aggregate without groups.
#[derive(Debug)]
struct OneGroup(Counts);

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        GroupsAccumulator::update_batch(&mut self.0, values, &vec![0; rows], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states.first().map_or(0, |v| v.len());
        GroupsAccumulator::merge_batch(&mut self.0, states, &vec![0; rows], 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let all = self.0.take(EmitTo::All);
        if all.is_empty() {
            return ScalarValue::try_from(pairs_type());
        }
        ScalarValue::try_from_array(&all, 0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn size(&self) -> usize {
        self.0.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(measure: Measure) -> Counts {
        Counts { origin: 0, step: Step::new(10), measure, counts: CountTable::default() }
    }

    fn pairs(list: &ListArray, row: usize) -> Vec<(i64, Option<i32>, i64)> {
        let values = list.value(row);
        let mut got: Vec<_> = values
            .as_primitive::<Int64Type>()
            .values()
            .chunks_exact(2)
            .map(|p| {
                let (bucket, power) = cell_of(p[0], true);
                (bucket, power, p[1])
            })
            .collect();
        got.sort();
        got
    }

    /// Spans counted by group, time bucket and power; emitting the first
    /// groups renumbers the rest; a state merges back to the same counts.
    #[test]
    fn cells_are_counted_emitted_and_merged() {
        let mut c = counts(Measure::IntPowers);
        let starts: ArrayRef = Arc::new(Int64Array::from(vec![0, 5, 15, 15, 25, 31, 99]));
        let values: ArrayRef =
            Arc::new(Int64Array::from(vec![Some(2), Some(3), Some(4), Some(1), None, Some(1 << 40), Some(5)]));
        c.count_spans(&starts, &values, &[0, 0, 1, 1, 2, 2, 2], None).unwrap();
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

    /// The table keeps every key's count as it grows.
    #[test]
    fn the_table_keeps_every_count_as_it_grows() {
        let mut table = CountTable::default();
        for round in 0..3u64 {
            for key in 0..5_000u64 {
                table.add(key * 65_537 + (key << 40), round + 1);
            }
        }
        let mut got: Vec<(u64, u64)> = table.drain().collect();
        got.sort();
        assert_eq!(got.len(), 5_000);
        assert!(got.iter().all(|&(_, count)| count == 6));
    }
}
