//! An aggregate without groups, as one group of a [`GroupsAccumulator`]:
//! the metrics aggregate functions (`newest.rs`, `cells.rs`) implement the
//! grouped form only, and DataFusion asks for this one when a query has no
//! `GROUP BY`.

use arrow::array::{Array, ArrayRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

/// `G` over group 0 alone.
#[derive(Debug)]
pub(super) struct OneGroup<G>(pub(super) G);

/// The value of group 0 in `array`: null when nothing reached it.
fn first(array: &ArrayRef) -> Result<ScalarValue> {
    match array.is_empty() {
        true => ScalarValue::try_from(array.data_type()),
        false => ScalarValue::try_from_array(array, 0),
    }
}

impl<G: GroupsAccumulator + Sync + std::fmt::Debug> Accumulator for OneGroup<G> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        self.0.update_batch(values, &vec![0; rows], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states.first().map_or(0, |v| v.len());
        self.0.merge_batch(states, &vec![0; rows], 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        first(&self.0.evaluate(EmitTo::All)?)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.state(EmitTo::All)?.iter().map(first).collect()
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.size()
    }
}
