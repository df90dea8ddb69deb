//! `newest_span(start, trace_id, value)`: per group, the span that starts
//! last: its start (ns), trace id and value, as a struct. The aggregate
//! carries each cell's exemplar candidate this way, in one pass.
//!
//! DataFusion's `last_value(… ORDER BY …)` would do it with one aggregate
//! per field, each comparing rows through its generic ordering machinery,
//! and 16-byte ids would first have to become some primitive type. This
//! keeps three flat arrays per group and compares one integer per row. Of
//! spans that start together, the first seen stays.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int64Array, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};

use super::one_group::OneGroup;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature, TypeSignature, Volatility,
};

/// Fields of the result.
pub(super) const START: &str = "start";
pub(super) const TRACE: &str = "trace";
pub(super) const VALUE: &str = "value";

fn fields() -> Fields {
    Fields::from(vec![
        Field::new(START, DataType::Int64, false),
        Field::new(TRACE, DataType::FixedSizeBinary(16), false),
        Field::new(VALUE, DataType::Float64, true),
    ])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NewestSpan {
    signature: Signature,
}

/// `newest_span(start ns, trace_id, value)`.
pub(super) fn newest_span(start: Expr, trace_id: Expr, value: Expr) -> Expr {
    newest_span_udaf().call(vec![start, trace_id, value])
}

/// The aggregate function itself (for a querier that runs another's plan).
pub(crate) fn newest_span_udaf() -> AggregateUDF {
    let signature = Signature::new(
        TypeSignature::Exact(vec![DataType::Int64, DataType::FixedSizeBinary(16), DataType::Float64]),
        Volatility::Immutable,
    );
    AggregateUDF::new_from_impl(NewestSpan { signature })
}

impl AggregateUDFImpl for NewestSpan {
    fn name(&self) -> &str {
        "newest_span"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(fields()))
    }

    fn state_fields(&self, _args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        // The state is the result's fields, each nullable (a group not yet seen).
        Ok(fields().iter().map(|f| Arc::new(f.as_ref().clone().with_nullable(true))).collect())
    }

    fn accumulator(&self, _args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Groups::default())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs<'_>) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs<'_>) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::default()))
    }
}

/// Per group: the newest start seen (`i64::MIN`: none yet), its trace and value.
#[derive(Debug, Default)]
struct Groups {
    starts: Vec<i64>,
    traces: Vec<[u8; 16]>,
    values: Vec<Option<f64>>,
}

impl Groups {
    /// The groups `emit_to` names, taken out: starts (null where unseen), traces, values.
    fn take(&mut self, emit_to: EmitTo) -> (Int64Array, FixedSizeBinaryArray, Float64Array) {
        let starts = emit_to.take_needed(&mut self.starts);
        let traces = emit_to.take_needed(&mut self.traces);
        let values = emit_to.take_needed(&mut self.values);
        let seen = NullBuffer::from(starts.iter().map(|&s| s != i64::MIN).collect::<Vec<_>>());
        let traces = FixedSizeBinaryArray::try_new(16, traces.into_iter().flatten().collect::<Vec<u8>>().into(), None)
            .expect("16 bytes per group");
        (Int64Array::new(starts.into(), Some(seen)), traces, values.into_iter().collect())
    }
}

fn wrong(argument: &str, array: &ArrayRef) -> DataFusionError {
    DataFusionError::Internal(format!("newest_span: {argument} of type {}", array.data_type()))
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let [starts, traces, measured] = values else {
            return Err(DataFusionError::Internal("newest_span takes (start, trace_id, value)".into()));
        };
        let starts = starts.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong("start", starts))?;
        let traces = traces.as_fixed_size_binary_opt().filter(|t| t.value_length() == 16);
        let traces = traces.ok_or_else(|| wrong("trace_id", &values[1]))?;
        let measured = measured.as_primitive_opt::<Float64Type>().ok_or_else(|| wrong("value", measured))?;
        self.starts.resize(total, i64::MIN);
        self.traces.resize(total, [0; 16]);
        self.values.resize(total, None);
        for (row, &group) in groups.iter().enumerate() {
            if !starts.is_valid(row) || !traces.is_valid(row) || filter.is_some_and(|f| !f.value(row)) {
                continue;
            }
            let start = starts.value(row);
            if start > self.starts[group] {
                self.starts[group] = start;
                self.traces[group] = traces.value(row).try_into().expect("16-byte id, checked above");
                self.values[group] = measured.is_valid(row).then(|| measured.value(row));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        self.update_batch(values, groups, None, total)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (starts, traces, values) = self.take(emit_to);
        let seen = starts.nulls().cloned();
        let columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::new(starts.values().clone(), None)), Arc::new(traces), Arc::new(values)];
        Ok(Arc::new(StructArray::try_new(fields(), columns, seen)?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (starts, traces, values) = self.take(emit_to);
        Ok(vec![Arc::new(starts), Arc::new(traces), Arc::new(values)])
    }

    /// Each row as a state of its own: its start is null where the row does not count.
    fn convert_to_state(&self, values: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let [starts, traces, measured] = values else {
            return Err(DataFusionError::Internal("newest_span takes (start, trace_id, value)".into()));
        };
        let counted = NullBuffer::union(starts.logical_nulls().as_ref(), traces.logical_nulls().as_ref());
        let filtered = filter.map(|f| NullBuffer::new(arrow::compute::prep_null_mask_filter(f).values().clone()));
        let counted = NullBuffer::union(counted.as_ref(), filtered.as_ref());
        let starts = starts.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong("start", starts))?;
        Ok(vec![Arc::new(Int64Array::new(starts.values().clone(), counted)), Arc::clone(traces), Arc::clone(measured)])
    }

    fn size(&self) -> usize {
        self.starts.capacity() * 8 + self.traces.capacity() * 16 + self.values.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::RecordBatch;
    use arrow::datatypes::Schema;
    use datafusion::prelude::{SessionContext, col};

    use super::*;

    /// Groups `a` (spans at 5 and 9, the latter twice) and `b` (one at 7):
    /// the newest of each, the first of those that start together.
    #[tokio::test]
    async fn each_group_keeps_its_newest_span() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("start", DataType::Int64, false),
            Field::new("trace", DataType::FixedSizeBinary(16), false),
            Field::new("value", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::StringArray::from(vec!["a", "b", "a", "a"])),
            Arc::new(Int64Array::from(vec![5, 7, 9, 9])),
            Arc::new(FixedSizeBinaryArray::try_from_iter([[1u8; 16], [2; 16], [3; 16], [4; 16]].iter()).unwrap()),
            Arc::new(Float64Array::from(vec![Some(0.5), None, Some(3.0), Some(4.0)])),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let ctx = SessionContext::new();
        let newest = newest_span(col("start"), col("trace"), col("value")).alias("n");
        let rows = ctx
            .read_batch(batch)
            .unwrap()
            .aggregate(vec![col("g")], vec![newest])
            .unwrap()
            .sort(vec![col("g").sort(true, false)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n = rows[0].column(1).as_struct();
        let starts = n.column_by_name(START).unwrap().as_primitive::<Int64Type>();
        let traces = n.column_by_name(TRACE).unwrap().as_fixed_size_binary();
        let values = n.column_by_name(VALUE).unwrap().as_primitive::<Float64Type>();
        assert_eq!(starts.values().to_vec(), [9, 7]);
        assert_eq!((traces.value(0), traces.value(1)), (&[3u8; 16][..], &[2u8; 16][..]));
        assert_eq!((values.value(0), values.is_null(1)), (3.0, true));
    }
}
