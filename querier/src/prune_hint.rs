//! `spanlake_prunes_by(filter)`: true for every row. Given to a scan of
//! `spans`, its `filter` prunes blocks, row groups and pages by their
//! statistics, as any filter does. The scan keeps every row `filter` keeps
//! (and may drop others, where it decodes through a row filter).
//!
//! For a plan that applies a filter itself, to the rows it reads: the
//! metrics aggregate that takes the spanset filter as an argument
//! (`traceql_metrics/cells_by.rs`). A filter above the scan would copy
//! every column of the rows it keeps; this one still lets the scan skip
//! what the filter rules out.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

const NAME: &str = "spanlake_prunes_by";

#[derive(Debug, PartialEq, Eq, Hash)]
struct PrunesBy {
    signature: Signature,
}

pub(crate) fn prunes_by_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(PrunesBy { signature: Signature::exact(vec![DataType::Boolean], Volatility::Immutable) })
}

/// A filter that keeps every row, and prunes the scan by `filter`.
pub(crate) fn prunes_by(filter: Expr) -> Expr {
    prunes_by_udf().call(vec![filter])
}

/// The filter `expr` prunes by, when it is [`prunes_by`].
pub(crate) fn pruning_filter(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == NAME => args.first(),
        _ => None,
    }
}

impl ScalarUDFImpl for PrunesBy {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, false)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 1 {
            return exec_err!("{NAME} takes one filter");
        }
        Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
    }
}
