//! `spanlake_cells_by(start_time, origin, step, value, keep, key)`: the
//! cells of `cells.rs`, for a query whose `by()` is at most one string
//! column, counted without DataFusion's filter or grouping.
//!
//! A metrics query's spanset filter keeps part of the spans (`kind =
//! server`: 40 % of them). As a filter above the scan, it copies every
//! column of the rows it keeps and coalesces the copies into full batches;
//! DataFusion's grouping then hashes each kept span's `by()` string. That
//! was 17 % of the CPU of the quantile query (BENCHMARKS.md). Here the
//! filter's result is an argument, `keep`: the rows it keeps are counted
//! where they are, and no column is copied. A row's group is found from its
//! string view (16 bytes, the same for the same string within a batch read
//! from a dictionary page) in a table of the batch's views; the string
//! itself is looked up once per distinct view and batch. The scan is still
//! pruned by the filter ([`crate::prune_hint`]).
//!
//! The answer, and the state merged across partitions and queriers, is two
//! lists: the groups' keys (null: the spans without one) and each group's
//! `(cell, count)` pairs.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, StringArray, StringViewArray, StructArray};
use arrow::buffer::{BooleanBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator};
use datafusion::logical_expr::{Signature, Volatility};
use datafusion::prelude::lit;
use foldhash::fast::FixedState;

use super::cells::{Counts, pairs_type, too_many_groups};

#[derive(Debug, PartialEq, Eq, Hash)]
struct CellsByUdaf {
    signature: Signature,
}

/// The aggregate function itself (for a querier that runs another's plan).
pub(crate) fn cells_by_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(CellsByUdaf { signature: Signature::any(6, Volatility::Immutable) })
}

/// The cells of the spans `keep` keeps (all when None), by `start`, `step`
/// wide from `origin`, and the power-of-two bucket of `value` when given,
/// per value of the string `key` (one group when None).
pub(super) fn cells_by(
    start: Expr,
    origin: i64,
    step: i64,
    value: Option<Expr>,
    keep: Option<Expr>,
    key: Option<Expr>,
) -> Expr {
    let null = || lit(ScalarValue::Null);
    let args = vec![
        start,
        lit(origin),
        lit(step),
        value.unwrap_or_else(null),
        keep.unwrap_or_else(null),
        key.unwrap_or_else(null),
    ];
    cells_by_udaf().call(args)
}

fn keys_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn cells_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(pairs_type(), false)))
}

/// The answer's fields: the groups' keys, and their cells.
pub(super) const KEYS: &str = "keys";
pub(super) const CELLS: &str = "cells";

fn answer_fields() -> Fields {
    Fields::from(vec![Field::new(KEYS, keys_type(), false), Field::new(CELLS, cells_type(), false)])
}

impl AggregateUDFImpl for CellsByUdaf {
    fn name(&self) -> &str {
        "spanlake_cells_by"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(answer_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}[{KEYS}]", args.name), keys_type(), true)),
            Arc::new(Field::new(format!("{}[{CELLS}]", args.name), cells_type(), true)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(KeyedCounts { counts: Counts::new(&args)?, keys: Keys::default() }))
    }
}

/// The groups' keys, numbered as they are first seen.
#[derive(Debug, Default)]
struct Keys {
    keys: Vec<Option<Box<str>>>,
    groups: HashMap<Box<str>, usize, FixedState>,
    null: Option<usize>,
    /// The group of each view seen in the current batch.
    views: HashMap<u128, usize, FixedState>,
    bytes: usize,
}

impl Keys {
    fn group_of(&mut self, key: Option<&str>) -> usize {
        let found = match key {
            None => self.null,
            Some(key) => self.groups.get(key).copied(),
        };
        found.unwrap_or_else(|| self.add(key))
    }

    #[cold]
    fn add(&mut self, key: Option<&str>) -> usize {
        let group = self.keys.len();
        let key: Option<Box<str>> = key.map(Into::into);
        match &key {
            None => self.null = Some(group),
            Some(key) => {
                self.groups.insert(key.clone(), group);
                self.bytes += 2 * key.len();
            }
        }
        self.keys.push(key);
        group
    }

    /// The group of row `row` of `key` (group 0 for all when None).
    #[inline]
    fn of_row(&mut self, key: Option<&StringViewArray>, row: usize) -> usize {
        let Some(key) = key else { return self.group_of(None) };
        if key.is_null(row) {
            return self.group_of(None);
        }
        let view = key.views()[row];
        if let Some(&group) = self.views.get(&view) {
            return group;
        }
        let group = self.group_of(Some(key.value(row)));
        self.views.insert(view, group);
        group
    }

    /// The keys as a list of one row, taken out.
    fn take(&mut self) -> ListArray {
        let keys = std::mem::take(self);
        let strings = StringArray::from_iter(keys.keys.iter().map(Option::as_deref));
        one_row(keys_type(), Arc::new(strings))
    }

    fn size(&self) -> usize {
        self.bytes
            + self.keys.capacity() * std::mem::size_of::<Option<Box<str>>>()
            + self.groups.capacity() * (std::mem::size_of::<(Box<str>, usize)>() + 1)
            + self.views.capacity() * (std::mem::size_of::<(u128, usize)>() + 1)
    }
}

/// `values` as the one row of a list of type `list`.
fn one_row(list: DataType, values: ArrayRef) -> ListArray {
    let DataType::List(field) = list else { unreachable!("a list type") };
    ListArray::new(field, OffsetBuffer::from_lengths([values.len()]), values, None)
}

fn wrong(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("spanlake_cells_by: {what}"))
}

/// Counts per group and cell ([`Counts`]), and the groups' keys.
#[derive(Debug)]
struct KeyedCounts {
    counts: Counts,
    keys: Keys,
}

impl KeyedCounts {
    /// The keys and the cells of every group, taken out.
    fn take(&mut self) -> [ListArray; 2] {
        let groups = self.keys.keys.len();
        let cells = self.counts.take(EmitTo::First(groups));
        [self.keys.take(), one_row(cells_type(), Arc::new(cells))]
    }
}

/// The rows a `keep` argument keeps: where it is true (all rows when it is null).
fn kept_rows(keep: &ArrayRef, rows: usize) -> Result<BooleanBuffer> {
    match keep.data_type() {
        DataType::Null => Ok(BooleanBuffer::new_set(rows)),
        DataType::Boolean => {
            let keep = keep.as_boolean();
            Ok(match keep.nulls() {
                Some(valid) => keep.values() & valid.inner(),
                None => keep.values().clone(),
            })
        }
        other => Err(wrong(&format!("keep is {other}, not a boolean"))),
    }
}

/// A `key` argument as string views (None: no key).
fn key_views(key: &ArrayRef) -> Result<Option<ArrayRef>> {
    match key.data_type() {
        DataType::Null => Ok(None),
        DataType::Utf8View => Ok(Some(Arc::clone(key))),
        DataType::Utf8 | DataType::LargeUtf8 => Ok(Some(arrow::compute::cast(key, &DataType::Utf8View)?)),
        other => Err(wrong(&format!("key is {other}, not a string"))),
    }
}

impl Accumulator for KeyedCounts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [starts, _origin, _step, measured, keep, key] = values else {
            return Err(wrong("takes (start_time, origin, step, value, keep, key)"));
        };
        let kept = kept_rows(keep, starts.len())?;
        let key = key_views(key)?;
        let key = key.as_ref().map(|k| k.as_string_view());
        let keys = &mut self.keys;
        keys.views.clear();
        let rows = kept.set_indices().map(|row| (row, keys.of_row(key, row)));
        self.counts.count_spans(starts, measured, rows)?;
        too_many_groups(self.keys.keys.len())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [keys, cells] = states else { return Err(wrong("merges keys and cells")) };
        let (Some(keys), Some(cells)) = (keys.as_list_opt::<i32>(), cells.as_list_opt::<i32>()) else {
            return Err(wrong("a state that is not two lists"));
        };
        for row in (0..keys.len()).filter(|&row| keys.is_valid(row) && cells.is_valid(row)) {
            let (row_keys, row_cells) = (keys.value(row), cells.value(row));
            let row_keys = row_keys.as_string_opt::<i32>().ok_or_else(|| wrong("keys that are not strings"))?;
            if row_keys.len() != row_cells.len() {
                return Err(wrong("a state with more keys than cells, or fewer"));
            }
            let groups: Vec<usize> = (0..row_keys.len())
                .map(|i| self.keys.group_of(row_keys.is_valid(i).then(|| row_keys.value(i))))
                .collect();
            let total = self.keys.keys.len();
            too_many_groups(total)?;
            self.counts.merge_batch(&[row_cells], &groups, total)?;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let columns: Vec<ArrayRef> = self.take().into_iter().map(|l| Arc::new(l) as ArrayRef).collect();
        Ok(ScalarValue::Struct(Arc::new(StructArray::try_new(answer_fields(), columns, None)?)))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.take().into_iter().map(|list| ScalarValue::List(Arc::new(list))).collect())
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.counts.size() + self.keys.size()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Int64Array, NullArray};
    use arrow::datatypes::Int64Type;

    use super::*;
    use crate::traceql_metrics::cells::cell_of;

    /// A group's key and its `(bucket, count)` pairs.
    type Group = (Option<String>, Vec<(i64, i64)>);

    /// The groups of a state or answer, sorted.
    fn groups(keys: &ArrayRef, cells: &ArrayRef) -> Vec<Group> {
        let (keys, cells) = (keys.as_list::<i32>().value(0), cells.as_list::<i32>().value(0));
        let (keys, cells) = (keys.as_string::<i32>(), cells.as_list::<i32>());
        let mut got: Vec<_> = (0..keys.len())
            .map(|i| {
                let pairs = cells.value(i);
                let mut pairs: Vec<_> = pairs
                    .as_primitive::<Int64Type>()
                    .values()
                    .chunks_exact(2)
                    .map(|p| (cell_of(p[0], false).0, p[1]))
                    .collect();
                pairs.sort();
                (keys.is_valid(i).then(|| keys.value(i).to_owned()), pairs)
            })
            .collect();
        got.sort();
        got
    }

    fn counting() -> KeyedCounts {
        KeyedCounts { counts: Counts::counting(10), keys: Keys::default() }
    }

    /// The kept rows counted by key (views inline and in a buffer, nulls),
    /// the rest not; two states merge to the sums.
    #[test]
    fn kept_rows_are_counted_by_key_and_states_merge() {
        let long = "a service name longer than twelve bytes";
        let mut builder = arrow::array::StringViewBuilder::new();
        for key in [Some("a"), Some(long), Some("a"), None, Some(long), Some("b")] {
            builder.append_option(key);
        }
        let key: ArrayRef = Arc::new(builder.finish());
        let starts: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 13, 14, 25, 26]));
        let keep: ArrayRef =
            Arc::new(BooleanArray::from(vec![Some(true), Some(true), Some(true), Some(true), Some(true), None]));
        let args = |starts: &ArrayRef, keep: &ArrayRef, key: &ArrayRef| {
            let nulls: ArrayRef = Arc::new(NullArray::new(starts.len()));
            let (origin, step): (ArrayRef, ArrayRef) =
                (Arc::new(Int64Array::from(vec![0; 6])), Arc::new(Int64Array::from(vec![10; 6])));
            vec![Arc::clone(starts), origin, step, nulls, Arc::clone(keep), Arc::clone(key)]
        };
        let mut one = counting();
        one.update_batch(&args(&starts, &keep, &key)).unwrap();
        let want = vec![
            (None, vec![(1, 1)]),
            (Some("a".to_owned()), vec![(0, 1), (1, 1)]),
            (Some(long.to_owned()), vec![(0, 1), (2, 1)]),
        ];
        let state: Vec<ArrayRef> = one.state().unwrap().iter().map(|s| s.to_array().unwrap()).collect();
        assert_eq!(groups(&state[0], &state[1]), want);
        // Another partition's state, the keys first seen in another order.
        let mut other = counting();
        let key: ArrayRef =
            Arc::new(StringArray::from(vec![Some("b"), Some(long), None, Some("a"), Some("a"), Some("a")]));
        let all: ArrayRef = Arc::new(NullArray::new(6));
        other.update_batch(&args(&starts, &all, &key)).unwrap();
        let other_state: Vec<ArrayRef> = other.state().unwrap().iter().map(|s| s.to_array().unwrap()).collect();
        let mut merged = counting();
        merged.merge_batch(&state).unwrap();
        merged.merge_batch(&other_state).unwrap();
        let ScalarValue::Struct(answer) = merged.evaluate().unwrap() else { panic!("a struct") };
        let want = vec![
            (None, vec![(1, 2)]),
            (Some("a".to_owned()), vec![(0, 1), (1, 2), (2, 2)]),
            (Some(long.to_owned()), vec![(0, 2), (2, 1)]),
            (Some("b".to_owned()), vec![(0, 1)]),
        ];
        assert_eq!(groups(answer.column(0), answer.column(1)), want);
    }
}
