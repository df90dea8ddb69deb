//! The two bucket numbers a metrics aggregate groups by, as scalar
//! functions over whole arrays: the time bucket of a span's start, and the
//! power-of-two bucket of a measured value.
//!
//! As expressions of DataFusion's own functions they cost a cast, checked
//! arithmetic and a floating-point `log2`/`ceil` per span, each its own pass
//! and array (about 7 % and 6 % of two metrics queries' CPU, BENCHMARKS.md).
//! Here each is one pass.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampNanosecondType};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::lit;

/// `spanlake_time_bucket(start_time, origin, step)`: `(start_time − origin) / step`
/// in nanoseconds, the quotient truncated (as `/` on integers).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

/// `spanlake_pow2_bucket(value)`: the exponent of the smallest power of two
/// at or above `value`, `ceil(log2(value))`: exact on integers, as
/// `ceil(log2(x))` on floats; null where it is not finite.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Pow2Bucket {
    signature: Signature,
}

pub(crate) fn time_bucket_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(TimeBucket { signature: Signature::any(3, Volatility::Immutable) })
}

pub(crate) fn pow2_bucket_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Pow2Bucket { signature: Signature::any(1, Volatility::Immutable) })
}

/// The time bucket of `start` (a nanosecond timestamp) from `origin`, `step` wide.
pub(crate) fn time_bucket(start: Expr, origin: i64, step: i64) -> Expr {
    time_bucket_udf().call(vec![start, lit(origin), lit(step)])
}

/// The power-of-two bucket of `value` (Int64 or Float64).
pub(crate) fn pow2_bucket(value: Expr) -> Expr {
    pow2_bucket_udf().call(vec![value])
}

fn literal_i64(value: &ColumnarValue, name: &str) -> Result<i64> {
    match value {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) => Ok(*v),
        _ => exec_err!("spanlake_time_bucket: {name} must be an Int64 literal"),
    }
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "spanlake_time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [start, origin, step] = args.args.as_slice() else {
            return exec_err!("spanlake_time_bucket takes (start_time, origin, step)");
        };
        let (origin, step) = (literal_i64(origin, "origin")?, literal_i64(step, "step")?);
        if step <= 0 {
            return exec_err!("spanlake_time_bucket: step must be positive, not {step}");
        }
        let start = start.to_array(args.number_rows)?;
        let Some(start) = start.as_primitive_opt::<TimestampNanosecondType>() else {
            return exec_err!("spanlake_time_bucket: start_time is {}, not a nanosecond timestamp", start.data_type());
        };
        let step = Step::new(step);
        let buckets: Int64Array = start.unary(|t| step.quotient(t.wrapping_sub(origin)));
        Ok(ColumnarValue::Array(Arc::new(buckets)))
    }
}

/// A positive divisor used for every span of a query: a multiplication by
/// its reciprocal, corrected to the exact quotient, costs about 60 % of the
/// CPU's integer division (17 ms against 28 for 10M values, in a throwaway
/// micro-benchmark).
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    step: i64,
    reciprocal: f64,
}

impl Step {
    /// Numerators and divisors below this are divided by the reciprocal:
    /// the float quotient is then within one of the exact one, and
    /// `quotient × step` cannot overflow.
    const FAST: i64 = 1 << 52;

    pub(super) fn new(step: i64) -> Self {
        Self { step, reciprocal: 1.0 / step as f64 }
    }

    /// `n / step`, truncated as integer `/` is.
    pub(super) fn quotient(&self, n: i64) -> i64 {
        if (0..Self::FAST).contains(&n) && self.step < Self::FAST {
            let q = (n as f64 * self.reciprocal) as i64;
            let rest = n - q * self.step;
            q - i64::from(rest < 0) + i64::from(rest >= self.step)
        } else {
            n / self.step
        }
    }
}

/// `ceil(log2(x))` of an integer: exact; null below 1.
pub(super) fn pow2_of_int(x: i64) -> Option<i64> {
    (x >= 1).then(|| i64::from(64 - (x - 1).leading_zeros()))
}

/// `ceil(log2(x))` of a float, null where not finite (or below 0).
pub(super) fn pow2_of_float(x: f64) -> Option<i64> {
    let exponent = x.log2().ceil();
    exponent.is_finite().then_some(exponent as i64)
}

impl ScalarUDFImpl for Pow2Bucket {
    fn name(&self) -> &str {
        "spanlake_pow2_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else { return exec_err!("spanlake_pow2_bucket takes one argument") };
        let value = value.to_array(args.number_rows)?;
        let exponents: Int64Array = match value.data_type() {
            DataType::Int64 => value.as_primitive::<Int64Type>().iter().map(|x| x.and_then(pow2_of_int)).collect(),
            DataType::Float64 => {
                value.as_primitive::<Float64Type>().iter().map(|x| x.and_then(pow2_of_float)).collect()
            }
            other => return exec_err!("spanlake_pow2_bucket: {other} is not Int64 or Float64"),
        };
        Ok(ColumnarValue::Array(Arc::new(exponents) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotients_by_the_reciprocal_are_exact() {
        let steps = [1i64, 2, 3, 7, 1_000, 15_000_000_000, 86_400_000_000_000, (1 << 52) - 1, 1 << 52, i64::MAX];
        let edges = [0i64, 1, 2, (1 << 52) - 1, 1 << 52, i64::MAX, -1, -15_000_000_001, i64::MIN];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for &step in &steps {
            let divisor = Step::new(step);
            let check = |n: i64| assert_eq!(divisor.quotient(n), n / step, "{n} / {step}");
            for &n in &edges {
                check(n);
            }
            // Multiples near the top of the fast range, where the float
            // quotient of an exact multiple can fall just below it.
            let top = Step::FAST / step;
            for k in [1i64, 2, 3, 1_000, 240, 1 << 20, top / 3, top - 2, top - 1, top] {
                let multiple = k.saturating_mul(step);
                for n in [multiple, multiple.saturating_sub(1), multiple.saturating_add(1)] {
                    check(n);
                }
            }
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                check((x >> (x % 40)) as i64 & ((1 << 53) - 1));
            }
        }
    }

    #[test]
    fn integer_exponents_are_exact_and_match_the_float_form() {
        for x in [1i64, 2, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 1 << 40, (1 << 40) + 1, 9_007_199_254_740_991] {
            let float = (x as f64).log2().ceil() as i64;
            assert_eq!(pow2_of_int(x), Some(float), "{x}");
            assert_eq!(pow2_of_float(x as f64), Some(float), "{x}");
        }
        assert_eq!(pow2_of_int(0), None);
        assert_eq!(pow2_of_int(-5), None);
        assert_eq!(pow2_of_float(f64::INFINITY), None);
        assert_eq!(pow2_of_float(0.0), None);
        assert_eq!(pow2_of_float(f64::NAN), None);
        assert_eq!(pow2_of_float(2.5), Some(2));
    }
}
