//! How values without a PostgreSQL counterpart reach a PostgreSQL client:
//! binary ids as lowercase hex text (as the HTTP API shows them), maps,
//! structs and lists of them as JSON text (as `POST /api/sql` writes them).
//! One projection on top of each query's plan does it, so a client's column
//! types (`Describe`) and its rows agree.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// How a column is shown to a PostgreSQL client, when not as itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shown {
    Hex,
    Json,
}

fn shown(data_type: &DataType) -> Option<Shown> {
    match data_type {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            Some(Shown::Hex)
        }
        DataType::Map(..) | DataType::Struct(_) => Some(Shown::Json),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::FixedSizeList(item, _)
        | DataType::ListView(item)
        | DataType::LargeListView(item) => {
            // Arrays of scalars are PostgreSQL arrays; anything deeper is JSON.
            let nested = matches!(
                item.data_type(),
                DataType::Map(..)
                    | DataType::Struct(_)
                    | DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(..)
                    | DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::FixedSizeBinary(_)
            );
            nested.then_some(Shown::Json)
        }
        DataType::Dictionary(_, value) => shown(value),
        _ => None,
    }
}

/// `plan` with every column a PostgreSQL client cannot take shown as text;
/// `plan` itself when it has none.
pub(super) fn for_clients(plan: LogicalPlan) -> Result<LogicalPlan> {
    let schema = Arc::clone(plan.schema());
    if !schema.fields().iter().any(|f| shown(f.data_type()).is_some()) {
        return Ok(plan);
    }
    let columns = schema.iter().map(|(qualifier, field)| {
        let column = Expr::Column(datafusion::common::Column::new(qualifier.cloned(), field.name()));
        match shown(field.data_type()) {
            Some(how) => ScalarUDF::new_from_impl(PgText::new(how))
                .call(vec![column])
                .alias_qualified(qualifier.cloned(), field.name()),
            None => column,
        }
    });
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// The text form of one column (`pg_text`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgText {
    how: Shown,
    signature: Signature,
}

impl PgText {
    fn new(how: Shown) -> Self {
        Self { how, signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for PgText {
    fn name(&self) -> &str {
        match self.how {
            Shown::Hex => "pg_hex_text",
            Shown::Json => "pg_json_text",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else { return exec_err!("{} takes one argument", self.name()) };
        let array = value.to_array(args.number_rows)?;
        let text = match self.how {
            Shown::Hex => hex_text(&array)?,
            Shown::Json => json_text(&array)?,
        };
        Ok(ColumnarValue::Array(text))
    }
}

/// Each binary value as lowercase hex.
fn hex_text(array: &ArrayRef) -> Result<ArrayRef> {
    let binary = arrow::compute::cast(array, &DataType::LargeBinary)?;
    let binary = binary.as_binary::<i64>();
    let mut out = StringBuilder::with_capacity(binary.len(), binary.values().len() * 2);
    for value in binary.iter() {
        out.append_option(value.map(hex::encode));
    }
    Ok(Arc::new(out.finish()))
}

/// Each value as JSON, as `arrow::json` writes it (`POST /api/sql`'s form),
/// without null members: an attribute reads `{"str":"GET"}`, not every
/// typed slot of the value.
fn json_text(array: &ArrayRef) -> Result<ArrayRef> {
    let field = Field::new("v", array.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![Arc::clone(array)])?;
    let mut lines = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(false)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    lines.write(&batch)?;
    lines.finish()?;
    let lines = lines.into_inner();
    let mut out = StringBuilder::with_capacity(array.len(), lines.len());
    // One line per row: `{"v":<value>}`, or `{}` for a null value.
    for (row, line) in lines.split(|b| *b == b'\n').take(array.len()).enumerate() {
        let value = line.strip_prefix(b"{\"v\":").and_then(|l| l.strip_suffix(b"}"));
        match value {
            Some(value) if !array.is_null(row) => out.append_value(String::from_utf8_lossy(value)),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeBinaryArray, MapBuilder};

    #[test]
    fn ids_are_hex_and_maps_are_json() {
        let ids: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size([Some([0xab_u8, 1]), None].into_iter(), 2).unwrap(),
        );
        let hex = hex_text(&ids).unwrap();
        let hex = hex.as_string::<i32>();
        assert_eq!(hex.value(0), "ab01");
        assert!(hex.is_null(1));

        let mut map = MapBuilder::new(None, arrow::array::StringBuilder::new(), arrow::array::Int64Builder::new());
        map.keys().append_value("http.status_code");
        map.values().append_value(200);
        map.append(true).unwrap();
        map.append(false).unwrap();
        let map: ArrayRef = Arc::new(map.finish());
        let json = json_text(&map).unwrap();
        let json = json.as_string::<i32>();
        assert_eq!(json.value(0), r#"{"http.status_code":200}"#);
        assert!(json.is_null(1));
    }
}
