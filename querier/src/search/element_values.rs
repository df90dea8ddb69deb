//! Values of a span's events or links, as a list per span, for TraceQL's
//! `event:name`, `event.<attr>`, `link:traceID`, `link:spanID` and
//! `link.<attr>`: a filter on them holds when some event (link) satisfies it.
//!
//! `element_values_<kind>(events|links, key)`: for each span, the values of
//! `key` over its events (links) that have one, as `List<Utf8>`,
//! `List<Float64>` or `List<Boolean>`. `key` is `name`, `trace_id` or
//! `span_id` (hex), or `attr:<attribute>`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, FixedSizeBinaryArray, Float64Builder, ListBuilder, StringBuilder,
    StructArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use spanlake_schemas::schema as s;

/// The type of the values listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ValueKind {
    Str,
    Number,
    Bool,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ElementValues {
    kind: ValueKind,
    name: &'static str,
    signature: Signature,
}

/// The function listing values of `kind`.
pub(crate) fn element_values(kind: ValueKind) -> ScalarUDF {
    let name = match kind {
        ValueKind::Str => "element_values_str",
        ValueKind::Number => "element_values_number",
        ValueKind::Bool => "element_values_bool",
    };
    ScalarUDF::new_from_impl(ElementValues { kind, name, signature: Signature::any(2, Volatility::Immutable) })
}

fn item_type(kind: ValueKind) -> DataType {
    match kind {
        ValueKind::Str => DataType::Utf8,
        ValueKind::Number => DataType::Float64,
        ValueKind::Bool => DataType::Boolean,
    }
}

/// One value, read from element `at` of the events' (links') structs.
enum Value {
    Str(String),
    Number(f64),
    Bool(bool),
}

fn read(elements: &StructArray, at: usize, key: &str, kind: ValueKind) -> Option<Value> {
    if let Some(attribute) = key.strip_prefix("attr:") {
        let map = elements.column_by_name("attributes")?.as_map_opt()?;
        if map.is_null(at) {
            return None;
        }
        let entries = map.value(at);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_struct();
        let i = (0..keys.len()).find(|i| keys.value(*i) == attribute)?;
        let field = |name: &str| values.column_by_name(name).filter(|c| c.is_valid(i));
        return match kind {
            ValueKind::Str => field(s::VALUE_STR).map(|c| Value::Str(c.as_string::<i32>().value(i).to_owned())),
            ValueKind::Number => field(s::VALUE_INT)
                .map(|c| c.as_primitive::<Int64Type>().value(i) as f64)
                .or_else(|| field(s::VALUE_DOUBLE).map(|c| c.as_primitive::<Float64Type>().value(i)))
                .map(Value::Number),
            ValueKind::Bool => field(s::VALUE_BOOL).map(|c| Value::Bool(c.as_boolean().value(i))),
        };
    }
    let column = elements.column_by_name(key)?;
    if column.is_null(at) || kind != ValueKind::Str {
        return None;
    }
    match column.data_type() {
        DataType::Utf8 => Some(Value::Str(column.as_string::<i32>().value(at).to_owned())),
        DataType::FixedSizeBinary(_) => {
            let ids = column.as_any().downcast_ref::<FixedSizeBinaryArray>()?;
            Some(Value::Str(hex::encode(ids.value(at))))
        }
        _ => None,
    }
}

impl ScalarUDFImpl for ElementValues {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new("item", item_type(self.kind), true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [list, key] = args.args.as_slice() else {
            return Err(DataFusionError::Internal("element_values takes (list, key)".into()));
        };
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(key))) = key else {
            return Err(DataFusionError::Internal("element_values needs a literal key".into()));
        };
        let list = list.to_array(args.number_rows)?;
        let list = list.as_list_opt::<i32>().ok_or_else(|| DataFusionError::Internal("not a list".into()))?;
        let elements = list.values().as_struct();
        let out: ArrayRef = match self.kind {
            ValueKind::Str => {
                Arc::new(collect(list, elements, key, self.kind, ListBuilder::new(StringBuilder::new()), |b, v| {
                    if let Value::Str(s) = v {
                        b.values().append_value(s);
                    }
                }))
            }
            ValueKind::Number => {
                Arc::new(collect(list, elements, key, self.kind, ListBuilder::new(Float64Builder::new()), |b, v| {
                    if let Value::Number(n) = v {
                        b.values().append_value(n);
                    }
                }))
            }
            ValueKind::Bool => {
                Arc::new(collect(list, elements, key, self.kind, ListBuilder::new(BooleanBuilder::new()), |b, v| {
                    if let Value::Bool(x) = v {
                        b.values().append_value(x);
                    }
                }))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Per span, the present values of its elements.
fn collect<B: arrow::array::ArrayBuilder>(
    list: &arrow::array::ListArray,
    elements: &StructArray,
    key: &str,
    kind: ValueKind,
    mut builder: ListBuilder<B>,
    push: impl Fn(&mut ListBuilder<B>, Value),
) -> arrow::array::ListArray {
    let offsets = list.value_offsets();
    for row in 0..list.len() {
        if list.is_valid(row) {
            for at in offsets[row] as usize..offsets[row + 1] as usize {
                if let Some(value) = read(elements, at, key, kind) {
                    push(&mut builder, value);
                }
            }
        }
        builder.append(true);
    }
    builder.finish()
}
