//! A trace id as one 128-bit number, so that the aggregate can carry each
//! cell's exemplar trace along (`last_value(… ORDER BY start_time)`):
//! DataFusion keeps such values per group in a flat primitive array, but
//! falls back to a value per group and row-by-row work for 16-byte ids.
//!
//! `trace_bits(trace_id)`: the id's 16 bytes, big-endian, as a `Decimal128`
//! (a container only: the number is never shown, and may exceed 38 digits).

use std::sync::Arc;

use arrow::array::{Array, AsArray, Decimal128Array};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

const TYPE: DataType = DataType::Decimal128(38, 0);

#[derive(Debug, PartialEq, Eq, Hash)]
struct TraceBits {
    signature: Signature,
}

impl ScalarUDFImpl for TraceBits {
    fn name(&self) -> &str {
        "trace_bits"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ids] = args.args.as_slice() else {
            return Err(DataFusionError::Internal("trace_bits takes one trace id".into()));
        };
        let ids = ids.to_array(args.number_rows)?;
        let ids = ids.as_fixed_size_binary_opt().filter(|a| a.value_length() == 16).ok_or_else(|| {
            DataFusionError::Internal(format!("trace_bits takes 16-byte ids, not {}", ids.data_type()))
        })?;
        let bits: Decimal128Array =
            (0..ids.len()).map(|row| ids.is_valid(row).then(|| i128::from_be_bytes(bytes16(ids.value(row))))).collect();
        Ok(ColumnarValue::Array(Arc::new(bits.with_data_type(TYPE))))
    }
}

fn bytes16(value: &[u8]) -> [u8; 16] {
    value.try_into().expect("16-byte value, checked by the caller")
}

/// `trace_bits(id)`.
pub(super) fn trace_bits(id: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(TraceBits {
        signature: Signature::new(TypeSignature::Exact(vec![DataType::FixedSizeBinary(16)]), Volatility::Immutable),
    });
    udf.call(vec![id])
}

/// The trace id back from its bits.
pub(super) fn trace_id(bits: i128) -> [u8; 16] {
    bits.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use arrow::array::{FixedSizeBinaryArray, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use datafusion::prelude::{SessionContext, col};

    use super::*;

    #[tokio::test]
    async fn a_trace_id_comes_back_from_its_bits() {
        let ids = [[0xffu8; 16], [0u8; 16], *b"0123456789abcdef"];
        let array = FixedSizeBinaryArray::try_from_iter(ids.iter()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::FixedSizeBinary(16), false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(array)]).unwrap();
        let ctx = SessionContext::new();
        let rows = ctx.read_batch(batch).unwrap().select(vec![trace_bits(col("id"))]).unwrap().collect().await.unwrap();
        let bits = rows[0].column(0).as_primitive::<arrow::datatypes::Decimal128Type>();
        let back: Vec<[u8; 16]> = bits.values().iter().map(|b| trace_id(*b)).collect();
        assert_eq!(back, ids);
    }
}
