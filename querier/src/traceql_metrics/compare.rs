//! `compare({selection}, top, start, end)`: how the attribute values of the
//! selected spans differ from the others' (the baseline), per time bucket.
//!
//! Every span of the window is counted once per attribute it carries
//! (span, resource and instrumentation attributes, and the intrinsics
//! `name`, `status`, `kind` and `statusMessage`), on its side. The answer
//! holds, per attribute and side, the `top` values by count and the side's
//! total (`{__meta_type="…_total", <attr>="nil"}`), as Tempo labels them.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_nested::map_entries::map_entries;
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::SessionContext;
use serde_json::Value;
use spanlake_schemas::schema as s;

use super::response::MetricsAnswer;
use super::series::{Series, double, finish, string};
use super::{MetricsRequest, bucket_expr, timestamp, window_spans};
use crate::error::Result;
use crate::search::Render;
use crate::strings::Strings;
use crate::traceql::ast::FieldExpr;

/// The value columns a counted attribute value is grouped by, typed.
const VALUES: [(&str, &str); 5] = [
    ("__vs", s::VALUE_STR),
    ("__vi", s::VALUE_INT),
    ("__vd", s::VALUE_DOUBLE),
    ("__vb", s::VALUE_BOOL),
    ("__vj", s::VALUE_JSON),
];

/// Attribute maps and the prefix their keys are reported under.
const MAPS: [(&str, &str); 3] =
    [(s::SPAN_ATTRIBUTES, "span."), (s::RESOURCE_ATTRIBUTES, "resource."), (s::SCOPE_ATTRIBUTES, "instrumentation.")];

/// Intrinsics counted as attributes, and their label keys.
const INTRINSICS: [(&str, &str); 4] =
    [(s::NAME, "name"), (s::STATUS_CODE, "status"), (s::KIND, "kind"), (s::STATUS_MESSAGE, "statusMessage")];

fn null(data_type: &DataType) -> Expr {
    lit(ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null))
}

fn value_type(field: &str) -> DataType {
    match field {
        s::VALUE_INT => DataType::Int64,
        s::VALUE_DOUBLE => DataType::Float64,
        s::VALUE_BOOL => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

pub(super) async fn compare(
    ctx: &SessionContext,
    request: &MetricsRequest,
    filter: Option<&FieldExpr>,
    selection: Option<&FieldExpr>,
    top: usize,
    selected: Option<(i64, i64)>,
) -> Result<MetricsAnswer> {
    let window = &request.window;
    let mut is_selected = match selection {
        Some(selection) => crate::search::compile_filter(selection)?,
        None => lit(true),
    };
    if let Some((from, to)) = selected {
        let start = col(s::START_TIME);
        is_selected = is_selected.and(start.clone().gt(timestamp(from))).and(start.lt_eq(timestamp(to)));
    }
    let mut columns = vec![bucket_expr(window).alias("__t"), is_selected.is_true().alias("__sel")];
    columns.extend(MAPS.iter().map(|(map, _)| col(*map)));
    columns.extend(INTRINSICS.iter().map(|(column, _)| col(*column)));
    let base = window_spans(ctx, request, filter).await?.select(columns)?;
    let mut counted: Option<DataFrame> = None;
    let mut add = |frame: DataFrame| -> Result<()> {
        counted = Some(match counted.take() {
            Some(all) => all.union(frame)?,
            None => frame,
        });
        Ok(())
    };
    for (map, prefix) in MAPS {
        let entries = base
            .clone()
            .select(vec![col("__t"), col("__sel"), map_entries(col(map)).alias("__e")])?
            .unnest_columns(&["__e"])?;
        let value = || get_field(col("__e"), "value");
        let mut row =
            vec![col("__t"), col("__sel"), concat(vec![lit(prefix), get_field(col("__e"), "key")]).alias("__k")];
        row.extend(VALUES.iter().map(|(alias, field)| get_field(value(), *field).alias(*alias)));
        add(entries.select(row)?)?;
    }
    for (column, key) in INTRINSICS {
        let mut row = vec![col("__t"), col("__sel"), lit(key).alias("__k")];
        row.extend(VALUES.iter().map(|(alias, field)| match *field {
            s::VALUE_STR => cast(col(column), DataType::Utf8).alias(*alias),
            other => null(&value_type(other)).alias(*alias),
        }));
        add(base.clone().filter(col(column).is_not_null())?.select(row)?)?;
    }
    let counted = counted.expect("attribute sources");
    let mut groups = vec![col("__sel"), col("__k")];
    groups.extend(VALUES.iter().map(|(alias, _)| col(*alias)));
    groups.push(col("__t"));
    let (batches, _held) = crate::memory::collect_counted(
        ctx,
        counted.aggregate(groups, vec![count(lit(1)).alias("__n")])?,
        "the attribute values this comparison counts",
        "narrow the time range or the filter",
    )
    .await?;
    // Every attribute value seen is a series until the top N are picked.
    let _series = super::hold_series(ctx, distinct_values(&batches), window.buckets())?;
    let series = build(&batches, window.buckets(), top);
    Ok(MetricsAnswer::new(finish(series, &[]), request))
}

/// How many (side, attribute, value) the counted rows hold: the rows
/// without their time bucket.
fn distinct_values(batches: &[RecordBatch]) -> usize {
    use datafusion::common::hash_utils::{RandomState, create_hashes};
    let state = RandomState::with_seed(0);
    let mut seen = std::collections::HashSet::new();
    for batch in batches {
        let columns: Vec<&arrow::array::ArrayRef> = (0..2 + VALUES.len()).map(|i| batch.column(i)).collect();
        let mut hashes = vec![0u64; batch.num_rows()];
        if create_hashes(columns, &state, &mut hashes).is_err() {
            // Unhashable (never for these types): every row, an upper bound.
            return batches.iter().map(RecordBatch::num_rows).sum();
        }
        seen.extend(hashes);
    }
    seen.len()
}

/// Counts per bucket of one attribute value on one side.
type Counts = HashMap<(String, String), (Value, Vec<f64>)>;

fn build(batches: &[RecordBatch], buckets: usize, top: usize) -> Vec<Series> {
    // (side, attribute) → value key → (typed value, counts per bucket)
    let mut sides: HashMap<(bool, String), Counts> = HashMap::new();
    for batch in batches {
        let selected = batch.column(0).as_boolean();
        let keys = Strings::expect(batch.column(1));
        let values: Vec<_> = (0..VALUES.len()).map(|i| batch.column(2 + i)).collect();
        let bucket = batch.column(2 + VALUES.len()).as_primitive::<Int64Type>();
        let counts = batch.column(3 + VALUES.len()).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let b = bucket.value(row).max(0) as usize;
            if b >= buckets || keys.is_null(row) {
                continue;
            }
            let Some(value) = typed(&values, row) else { continue };
            let key = (keys.value(row).to_owned(), value.to_string());
            let side = sides.entry((selected.value(row), key.0.clone())).or_default();
            let entry = side.entry(key).or_insert_with(|| (value, vec![0.0; buckets]));
            entry.1[b] += counts.value(row) as f64;
        }
    }
    let mut series = Vec::new();
    for ((selected, attribute), values) in sides {
        let (name, total_name) =
            if selected { ("selection", "selection_total") } else { ("baseline", "baseline_total") };
        let mut total = vec![0.0; buckets];
        let mut ranked: Vec<(f64, (Value, Vec<f64>))> = values
            .into_values()
            .map(|(value, counts)| {
                counts.iter().enumerate().for_each(|(i, c)| total[i] += c);
                (counts.iter().sum(), (value, counts))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.0.to_string().cmp(&b.1.0.to_string())));
        for (_, (value, samples)) in ranked.into_iter().take(top) {
            let labels = vec![("__meta_type".to_owned(), string(name)), (attribute.clone(), value)];
            series.push(Series { labels, samples, exemplars: Vec::new() });
        }
        let labels = vec![("__meta_type".to_owned(), string(total_name)), (attribute, string("nil"))];
        series.push(Series { labels, samples: total, exemplars: Vec::new() });
    }
    series
}

/// The typed OTLP JSON of the value columns at `row`.
fn typed(values: &[&arrow::array::ArrayRef], row: usize) -> Option<Value> {
    let [text, int, float, boolean, json_text] = values else { return None };
    if text.is_valid(row) {
        return crate::search::render_value(text, Render::Str, row);
    }
    if int.is_valid(row) {
        return Some(serde_json::json!({ "intValue": int.as_primitive::<Int64Type>().value(row).to_string() }));
    }
    if float.is_valid(row) {
        return Some(double(float.as_primitive::<arrow::datatypes::Float64Type>().value(row)));
    }
    if boolean.is_valid(row) {
        return Some(serde_json::json!({ "boolValue": boolean.as_boolean().value(row) }));
    }
    if json_text.is_valid(row) {
        return serde_json::from_str(json_text.as_string::<i32>().value(row)).ok();
    }
    None
}
