//! `spanlake_short_eq(column, 'text')`: whether each string of a column
//! equals a literal of at most 12 bytes, such as a span kind or a status.
//!
//! A string view (16 bytes) holds a string of at most 12 bytes whole, after
//! its length, and zeroes the rest. Such a string equals the literal exactly
//! when its view equals the literal's view, so the comparison is one
//! 128-bit compare per row. Arrow's general comparison takes a few branches
//! per row instead (the length, the prefix, then whether the strings are
//! inline), because a column read from a dictionary page carries a data
//! buffer: `kind = server` cost 6 % of the CPU of the quantile query
//! (BENCHMARKS.md).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringViewArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::lit;

/// Longest literal a view holds whole.
pub(crate) const MAX_LEN: usize = 12;

#[derive(Debug, PartialEq, Eq, Hash)]
struct ShortEq {
    signature: Signature,
}

pub(crate) fn short_eq_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ShortEq { signature: Signature::any(2, Volatility::Immutable) })
}

/// `column = text`, for a `text` of at most [`MAX_LEN`] bytes.
pub(crate) fn short_eq(column: Expr, text: &str) -> Expr {
    debug_assert!(text.len() <= MAX_LEN);
    short_eq_udf().call(vec![column, lit(text)])
}

/// The view of `text`, as a string view array stores it.
fn view_of(text: &str) -> u128 {
    StringViewArray::from_iter_values([text]).views()[0]
}

impl ScalarUDFImpl for ShortEq {
    fn name(&self) -> &str {
        "spanlake_short_eq"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    /// Null exactly where the column is.
    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [column, text] = args.args.as_slice() else {
            return exec_err!("spanlake_short_eq takes (column, text)");
        };
        let text = match text {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(t)) | ScalarValue::Utf8View(Some(t)) | ScalarValue::LargeUtf8(Some(t)),
            ) if t.len() <= MAX_LEN => t.clone(),
            _ => return exec_err!("spanlake_short_eq: the text must be a literal of at most {MAX_LEN} bytes"),
        };
        let column = column.to_array(args.number_rows)?;
        let equal = match column.as_string_view_opt() {
            Some(views) => {
                let target = view_of(&text);
                let values = views.views();
                BooleanArray::new(
                    BooleanBuffer::collect_bool(values.len(), |i| values[i] == target),
                    views.nulls().cloned(),
                )
            }
            // Any other string type: Arrow's comparison.
            None => {
                let text: ArrayRef = Arc::new(arrow::array::StringArray::new_scalar(text).into_inner());
                let text = arrow::compute::cast(&text, column.data_type())?;
                arrow::compute::kernels::cmp::eq(&column, &arrow::array::Scalar::new(text))?
            }
        };
        Ok(ColumnarValue::Array(Arc::new(equal)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against Arrow's comparison, on views that are inline, in a data
    /// buffer, of the same length or prefix, empty and null.
    #[test]
    fn views_compare_as_the_strings_do() {
        let strings = [
            Some("server"),
            Some("client"),
            Some("serve"),
            Some("server "),
            Some(""),
            None,
            Some("a string longer than twelve"),
            Some("unspecified"),
            Some("serverserver"),
        ];
        // Built with a data buffer, as a column read from a dictionary page is.
        let mut builder = arrow::array::StringViewBuilder::new();
        for s in strings {
            builder.append_option(s);
        }
        let column: ArrayRef = Arc::new(builder.finish());
        for text in ["server", "client", "", "unspecified", "serverserver", "x"] {
            let args = ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(Arc::clone(&column)), ColumnarValue::Scalar(ScalarValue::from(text))],
                arg_fields: vec![],
                number_rows: column.len(),
                return_field: Arc::new(Field::new("eq", DataType::Boolean, true)),
                config_options: Arc::default(),
            };
            let ColumnarValue::Array(got) =
                ShortEq { signature: Signature::any(2, Volatility::Immutable) }.invoke_with_args(args).unwrap()
            else {
                panic!("an array")
            };
            let want: BooleanArray = strings.iter().map(|s| s.map(|s| s == text)).collect();
            assert_eq!(got.as_boolean(), &want, "= {text:?}");
        }
    }
}
