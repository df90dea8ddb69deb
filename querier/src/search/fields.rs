//! Values returned with matched spans: attributes and intrinsics the query
//! names (as Tempo returns them), and the fields pipeline stages aggregate or
//! group by.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray, StructArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use base64::Engine as _;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, col, lit};
use serde_json::{Value, json};
use spanlake_schemas::schema as s;

use super::compile::{self, ROOT_NAME, ROOT_SERVICE, TRACE_DURATION};
use crate::error::QueryError;
use crate::strings::Strings;
use crate::traceql::ast::{AttributeScope, FieldExpr, Intrinsic};

/// How a field's column is read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Render {
    /// An attribute value struct.
    Attribute,
    Str,
    /// Nanoseconds, shown as a Go duration (`1.5s`).
    Duration,
    /// Not read: computed from the trace's tree (`nestedSetLeft`, …).
    NestedSet(Intrinsic),
}

/// One value selected with every matched span.
#[derive(Debug, Clone)]
pub(crate) struct OutputField {
    /// The key it is reported under (`span.http.url`, `status`, …).
    pub(crate) key: String,
    pub(crate) expr: Expr,
    pub(crate) render: Render,
    /// Shown in the span's `attributes` (false for fields only stages use).
    pub(crate) shown: bool,
}

impl OutputField {
    pub(crate) fn for_expr(field: &FieldExpr, shown: bool) -> Result<Self, QueryError> {
        let (key, expr, render) = match field {
            FieldExpr::Attribute(a) => (a.to_string(), compile::attribute_struct(a)?, Render::Attribute),
            FieldExpr::Intrinsic(i) => {
                let (expr, render) = match i {
                    Intrinsic::Name => (col(s::NAME), Render::Str),
                    Intrinsic::Status => (col(s::STATUS_CODE), Render::Str),
                    Intrinsic::StatusMessage => (col(s::STATUS_MESSAGE), Render::Str),
                    Intrinsic::Kind => (col(s::KIND), Render::Str),
                    Intrinsic::Duration => (col(s::DURATION_NS), Render::Duration),
                    Intrinsic::TraceDuration => (col(TRACE_DURATION), Render::Duration),
                    Intrinsic::RootName => (col(ROOT_NAME), Render::Str),
                    Intrinsic::RootServiceName => (col(ROOT_SERVICE), Render::Str),
                    Intrinsic::InstrumentationName => (col(s::SCOPE_NAME), Render::Str),
                    Intrinsic::InstrumentationVersion => (col(s::SCOPE_VERSION), Render::Str),
                    Intrinsic::NestedSetParent | Intrinsic::NestedSetLeft | Intrinsic::NestedSetRight => {
                        (lit(ScalarValue::Int64(None)), Render::NestedSet(*i))
                    }
                    other => {
                        return Err(QueryError::InvalidParameter {
                            name: "q",
                            reason: format!("{} cannot be selected or grouped by", other.name()),
                        });
                    }
                };
                (i.name().to_owned(), expr, render)
            }
            other => {
                return Err(QueryError::InvalidParameter {
                    name: "q",
                    reason: format!("{other:?} is not a field to select or group by"),
                });
            }
        };
        Ok(Self { key, expr, render, shown })
    }

    /// Whether the field reads trace-level columns.
    pub(crate) fn needs_trace_fields(field: &FieldExpr) -> bool {
        matches!(field, FieldExpr::Intrinsic(i) if i.is_trace_level())
    }
}

/// Attributes Tempo returns with a span: those the filter references, except
/// name, duration and trace-level intrinsics.
pub(crate) fn shown_in_results(field: &FieldExpr) -> bool {
    match field {
        FieldExpr::Attribute(a) => !matches!(a.scope, AttributeScope::Event | AttributeScope::Link),
        FieldExpr::Intrinsic(i) => matches!(i, Intrinsic::Status | Intrinsic::StatusMessage | Intrinsic::Kind),
        _ => false,
    }
}

/// A Go-style duration string: `1.5s`, `250ms`, `1m30s`, `800ns`.
pub(crate) fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n == 0 {
        return "0s".into();
    }
    let trim = |v: f64, unit: &str| {
        let text = format!("{v:.9}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{sign}{text}{unit}")
    };
    if n < 1_000 {
        format!("{sign}{n}ns")
    } else if n < 1_000_000 {
        trim(n as f64 / 1e3, "µs")
    } else if n < 1_000_000_000 {
        trim(n as f64 / 1e6, "ms")
    } else if n < 60_000_000_000 {
        trim(n as f64 / 1e9, "s")
    } else {
        let hours = n / 3_600_000_000_000;
        let minutes = (n / 60_000_000_000) % 60;
        let seconds = trim((n % 60_000_000_000) as f64 / 1e9, "s").trim_start_matches('-').to_owned();
        if hours > 0 { format!("{sign}{hours}h{minutes}m{seconds}") } else { format!("{sign}{minutes}m{seconds}") }
    }
}

/// The OTLP JSON value (`{"stringValue": …}`) of row `row`, or None when null.
pub(crate) fn render(array: &ArrayRef, render: Render, row: usize) -> Option<Value> {
    if array.is_null(row) {
        return None;
    }
    match render {
        Render::Attribute => attribute_json(array.as_struct(), row),
        Render::Str => Some(json!({ "stringValue": Strings::expect(array).value(row) })),
        Render::Duration => numeric(array, row).map(|ns| json!({ "stringValue": go_duration(ns as i64) })),
        Render::NestedSet(_) => None,
    }
}

/// A numeric reading (for aggregates): ints, doubles, durations, numeric attributes.
pub(crate) fn numeric(array: &ArrayRef, row: usize) -> Option<f64> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().value(row) as f64),
        DataType::Float64 => Some(array.as_primitive::<Float64Type>().value(row)),
        DataType::Struct(_) => {
            let value = array.as_struct();
            let int = value.column_by_name(s::VALUE_INT)?.as_primitive::<Int64Type>();
            let double = value.column_by_name(s::VALUE_DOUBLE)?.as_primitive::<Float64Type>();
            if int.is_valid(row) {
                Some(int.value(row) as f64)
            } else if double.is_valid(row) {
                Some(double.value(row))
            } else {
                None
            }
        }
        _ => arrow::compute::cast(&array.slice(row, 1), &DataType::Float64)
            .ok()
            .and_then(|a| a.as_primitive_opt::<Float64Type>().filter(|a| a.is_valid(0)).map(|a| a.value(0))),
    }
}

/// A grouping key for `by()`: the rendered value, or `nil`.
pub(crate) fn key(array: &ArrayRef, render_as: Render, row: usize) -> String {
    render(array, render_as, row).map(|v| v.to_string()).unwrap_or_else(|| "nil".into())
}

fn attribute_json(value: &StructArray, row: usize) -> Option<Value> {
    let field = |name: &str| value.column_by_name(name);
    if let Some(a) = field(s::VALUE_STR).map(|a| a.as_any().downcast_ref::<StringArray>().unwrap())
        && a.is_valid(row)
    {
        return Some(json!({ "stringValue": a.value(row) }));
    }
    if let Some(a) = field(s::VALUE_INT).map(|a| a.as_any().downcast_ref::<Int64Array>().unwrap())
        && a.is_valid(row)
    {
        return Some(json!({ "intValue": a.value(row).to_string() }));
    }
    if let Some(a) = field(s::VALUE_DOUBLE).map(|a| a.as_any().downcast_ref::<Float64Array>().unwrap())
        && a.is_valid(row)
    {
        return Some(json!({ "doubleValue": a.value(row) }));
    }
    if let Some(a) = field(s::VALUE_BOOL).map(|a| a.as_any().downcast_ref::<BooleanArray>().unwrap())
        && a.is_valid(row)
    {
        return Some(json!({ "boolValue": a.value(row) }));
    }
    if let Some(a) = field(s::VALUE_BYTES).map(|a| a.as_any().downcast_ref::<BinaryArray>().unwrap())
        && a.is_valid(row)
    {
        return Some(json!({ "bytesValue": base64::engine::general_purpose::STANDARD.encode(a.value(row)) }));
    }
    if let Some(a) = field(s::VALUE_JSON).map(|a| a.as_any().downcast_ref::<StringArray>().unwrap())
        && a.is_valid(row)
    {
        return serde_json::from_str(a.value(row)).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(800), "800ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
    }
}
