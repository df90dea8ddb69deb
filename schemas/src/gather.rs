//! Gathering rows of many arrays, a range at a time: how a block's nested
//! columns are put in block order.
//!
//! `arrow::compute::interleave` takes one (array, row) pair per row; for a
//! map or list it expands every row into one pair per entry, then gathers
//! each leaf entry by entry. But a row's entries are contiguous in every
//! leaf, so here each row's entries are copied as one range: one slice copy
//! per leaf and row instead of an indexed copy per entry. Adjacent ranges of
//! one array are copied together.

use std::sync::Arc;

use arrow::array::BooleanBufferBuilder;
use arrow::array::{
    Array, ArrayData, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray,
    GenericByteArray, ListArray, MapArray, MutableArrayData, PrimitiveArray, StructArray, UInt32Array, make_array,
    new_null_array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    BinaryType, ByteArrayType, DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampNanosecondType,
    UInt32Type, Utf8Type,
};
use arrow::error::ArrowError;

/// Rows `start..end` of the array numbered `array`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub array: usize,
    pub start: usize,
    pub end: usize,
}

impl Rows {
    fn len(self) -> usize {
        self.end - self.start
    }
}

/// Appends `rows` to `ranges`, extending the last range when `rows` follows it.
pub fn push(ranges: &mut Vec<Rows>, rows: Rows) {
    match ranges.last_mut() {
        Some(last) if last.array == rows.array && last.end == rows.start => last.end = rows.end,
        _ if rows.start == rows.end => {}
        _ => ranges.push(rows),
    }
}

/// The rows `ranges` name, in order, as one array of `arrays`' type.
/// `arrays` must not be empty, and must all have one type.
pub fn gather(arrays: &[&dyn Array], ranges: &[Rows]) -> Result<ArrayRef, ArrowError> {
    let len = ranges.iter().map(|r| r.len()).sum();
    let data_type = arrays[0].data_type();
    let leaf =
        !matches!(data_type, DataType::Struct(_) | DataType::Map(..) | DataType::List(_) | DataType::Dictionary(..));
    if leaf && arrays.iter().all(|a| a.null_count() == a.len()) {
        return Ok(new_null_array(data_type, len));
    }
    match data_type {
        DataType::Utf8 => bytes::<Utf8Type>(arrays, ranges, len),
        DataType::Binary => bytes::<BinaryType>(arrays, ranges, len),
        DataType::Int32 => primitive::<Int32Type>(arrays, ranges, len),
        DataType::Int64 => primitive::<Int64Type>(arrays, ranges, len),
        DataType::UInt32 => primitive::<UInt32Type>(arrays, ranges, len),
        DataType::Float64 => primitive::<Float64Type>(arrays, ranges, len),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => primitive::<TimestampNanosecondType>(arrays, ranges, len),
        DataType::Boolean => boolean(arrays, ranges, len),
        DataType::FixedSizeBinary(width) => fixed_size(arrays, ranges, len, *width),
        DataType::Struct(_) => structs(arrays, ranges, len),
        DataType::Map(..) => maps(arrays, ranges, len),
        DataType::List(_) => lists(arrays, ranges, len),
        DataType::Dictionary(key, _) if **key == DataType::UInt32 => dictionaries(arrays, ranges, len),
        _ => any(arrays, ranges, len),
    }
}

/// The validity of the gathered rows (`None` when all are valid).
fn nulls(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Option<NullBuffer> {
    if arrays.iter().all(|a| a.null_count() == 0) {
        return None;
    }
    let mut bits = BooleanBufferBuilder::new(len);
    for r in ranges {
        match arrays[r.array].nulls() {
            Some(n) => bits.append_packed_range(n.offset() + r.start..n.offset() + r.end, n.validity()),
            None => bits.append_n(r.len(), true),
        }
    }
    Some(NullBuffer::new(bits.finish()))
}

fn primitive<T: ArrowPrimitiveType>(
    arrays: &[&dyn Array],
    ranges: &[Rows],
    len: usize,
) -> Result<ArrayRef, ArrowError> {
    let typed: Vec<&PrimitiveArray<T>> = arrays.iter().map(|a| a.as_primitive::<T>()).collect();
    let mut values = Vec::with_capacity(len);
    for r in ranges {
        values.extend_from_slice(&typed[r.array].values()[r.start..r.end]);
    }
    let array = PrimitiveArray::<T>::try_new(values.into(), nulls(arrays, ranges, len))?;
    Ok(Arc::new(array.with_data_type(arrays[0].data_type().clone())))
}

fn boolean(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Result<ArrayRef, ArrowError> {
    let mut bits = BooleanBufferBuilder::new(len);
    for r in ranges {
        let values = arrays[r.array].as_boolean().values();
        bits.append_packed_range(values.offset() + r.start..values.offset() + r.end, values.values());
    }
    Ok(Arc::new(BooleanArray::new(bits.finish(), nulls(arrays, ranges, len))))
}

fn fixed_size(arrays: &[&dyn Array], ranges: &[Rows], len: usize, width: i32) -> Result<ArrayRef, ArrowError> {
    let w = width as usize;
    let mut values = Vec::with_capacity(len * w);
    for r in ranges {
        let array: &FixedSizeBinaryArray = arrays[r.array].as_fixed_size_binary();
        values.extend_from_slice(&array.value_data()[r.start * w..r.end * w]);
    }
    Ok(Arc::new(FixedSizeBinaryArray::try_new(width, values.into(), nulls(arrays, ranges, len))?))
}

/// New offsets for the gathered rows of arrays with `offsets`, and the
/// ranges of their values (entries) those rows hold.
fn offsets_and_values<'a>(
    offsets: impl Fn(usize) -> &'a [i32],
    ranges: &[Rows],
    len: usize,
) -> Result<(OffsetBuffer<i32>, Vec<Rows>), ArrowError> {
    let mut gathered = Vec::with_capacity(len + 1);
    gathered.push(0i32);
    let mut values = Vec::with_capacity(ranges.len());
    let mut total = 0usize;
    for r in ranges {
        let o = offsets(r.array);
        let (start, end) = (o[r.start] as usize, o[r.end] as usize);
        let shift = i32::try_from(total).map_err(|_| ArrowError::OffsetOverflowError(total))? - o[r.start];
        gathered.extend(o[r.start + 1..=r.end].iter().map(|x| x + shift));
        total += end - start;
        push(&mut values, Rows { array: r.array, start, end });
    }
    i32::try_from(total).map_err(|_| ArrowError::OffsetOverflowError(total))?;
    Ok((OffsetBuffer::new(gathered.into()), values))
}

fn bytes<T: ByteArrayType<Offset = i32>>(
    arrays: &[&dyn Array],
    ranges: &[Rows],
    len: usize,
) -> Result<ArrayRef, ArrowError> {
    let typed: Vec<&GenericByteArray<T>> = arrays.iter().map(|a| a.as_bytes::<T>()).collect();
    let (offsets, spans) = offsets_and_values(|a| typed[a].value_offsets(), ranges, len)?;
    let mut values = Vec::with_capacity(spans.iter().map(|s| s.len()).sum());
    for s in &spans {
        values.extend_from_slice(&typed[s.array].value_data()[s.start..s.end]);
    }
    Ok(Arc::new(GenericByteArray::<T>::try_new(offsets, values.into(), nulls(arrays, ranges, len))?))
}

fn structs(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Result<ArrayRef, ArrowError> {
    let typed: Vec<&StructArray> = arrays.iter().map(|a| a.as_struct()).collect();
    let children = (0..typed[0].num_columns())
        .map(|i| gather(&typed.iter().map(|s| s.column(i).as_ref()).collect::<Vec<_>>(), ranges))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = typed[0].fields().clone();
    Ok(Arc::new(StructArray::try_new_with_length(fields, children, nulls(arrays, ranges, len), len)?))
}

fn maps(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Result<ArrayRef, ArrowError> {
    let DataType::Map(field, ordered) = arrays[0].data_type() else { unreachable!("matched by gather") };
    let typed: Vec<&MapArray> = arrays.iter().map(|a| a.as_map()).collect();
    let (offsets, entries) = offsets_and_values(|a| typed[a].value_offsets(), ranges, len)?;
    let entries = gather(&typed.iter().map(|m| m.entries() as &dyn Array).collect::<Vec<_>>(), &entries)?;
    let map =
        MapArray::try_new(field.clone(), offsets, entries.as_struct().clone(), nulls(arrays, ranges, len), *ordered)?;
    Ok(Arc::new(map))
}

fn lists(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Result<ArrayRef, ArrowError> {
    let DataType::List(field) = arrays[0].data_type() else { unreachable!("matched by gather") };
    let typed: Vec<&ListArray> = arrays.iter().map(|a| a.as_list::<i32>()).collect();
    // Lists with no item in any batch (most blocks' events and links).
    if typed.iter().all(|l| l.values().is_empty()) {
        let items = typed[0].values().slice(0, 0);
        return Ok(Arc::new(ListArray::try_new(
            field.clone(),
            OffsetBuffer::new_zeroed(len),
            items,
            nulls(arrays, ranges, len),
        )?));
    }
    let (offsets, items) = offsets_and_values(|a| typed[a].value_offsets(), ranges, len)?;
    let items = gather(&typed.iter().map(|l| l.values().as_ref()).collect::<Vec<_>>(), &items)?;
    Ok(Arc::new(ListArray::try_new(field.clone(), offsets, items, nulls(arrays, ranges, len))?))
}

/// The values the rows' keys name, gathered: a dictionary comes out as an
/// array of its values' type. Keys must not be null.
fn dictionaries(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Result<ArrayRef, ArrowError> {
    let typed: Vec<&DictionaryArray<UInt32Type>> = arrays.iter().map(|a| a.as_dictionary::<UInt32Type>()).collect();
    let keys: Vec<&UInt32Array> = typed.iter().map(|d| d.keys()).collect();
    let values = value_rows(&keys, ranges, len)?;
    gather(&typed.iter().map(|d| d.values().as_ref()).collect::<Vec<_>>(), &values)
}

/// The rows of a dictionary's values that the rows `ranges` of dictionaries
/// with `keys` name, in order: gathering the values by them gathers the
/// dictionaries. Columns that share their keys (a resource's columns) share
/// these rows. Keys must not be null.
pub fn value_rows(keys: &[&UInt32Array], ranges: &[Rows], len: usize) -> Result<Vec<Rows>, ArrowError> {
    if keys.iter().any(|k| k.null_count() > 0) {
        return Err(ArrowError::InvalidArgumentError("cannot gather a dictionary with null keys".into()));
    }
    let mut values = Vec::with_capacity(len);
    for r in ranges {
        for &key in &keys[r.array].values()[r.start..r.end] {
            push(&mut values, Rows { array: r.array, start: key as usize, end: key as usize + 1 });
        }
    }
    Ok(values)
}

/// `array`, with a dictionary expanded to its values (anything else as is).
pub fn plain(array: &dyn Array) -> Result<ArrayRef, ArrowError> {
    match array.data_type() {
        DataType::Dictionary(..) => gather(&[array], &[Rows { array: 0, start: 0, end: array.len() }]),
        _ => Ok(make_array(array.to_data())),
    }
}

/// Any other type, through Arrow's generic (and slower) copy.
fn any(arrays: &[&dyn Array], ranges: &[Rows], len: usize) -> Result<ArrayRef, ArrowError> {
    let data: Vec<ArrayData> = arrays.iter().map(|a| a.to_data()).collect();
    let mut gathered = MutableArrayData::new(data.iter().collect(), true, len);
    for r in ranges {
        gathered.try_extend(r.array, r.start, r.end)?;
    }
    Ok(make_array(gathered.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    /// Gathering by ranges gives what `interleave` gives row by row, for
    /// every column of the span schema, including sliced inputs.
    #[test]
    fn agrees_with_interleave_on_every_span_column() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::trace::v1::Span;
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
        let attribute = |key: &str, value: Value| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        };
        let batch = |seed: u8, n: usize| {
            let spans = (0..n)
                .map(|i| {
                    let i8 = i as u8;
                    let attributes = (0..i % 4)
                        .map(|k| match k {
                            0 => attribute("s", Value::StringValue(format!("v{seed}-{i}"))),
                            1 => attribute("i", Value::IntValue(i as i64)),
                            2 => attribute("b", Value::BoolValue(i % 2 == 0)),
                            _ => attribute("d", Value::DoubleValue(i as f64)),
                        })
                        .collect();
                    Span {
                        trace_id: vec![seed + 1; 16],
                        span_id: vec![i8 + 1; 8],
                        parent_span_id: if i % 3 == 0 { vec![] } else { vec![7; 8] },
                        name: format!("op{i}"),
                        start_time_unix_nano: 1000 + i as u64,
                        end_time_unix_nano: 2000 + i as u64,
                        attributes,
                        events: (0..i % 2)
                            .map(|_| Event {
                                name: "e".into(),
                                attributes: vec![attribute("x", Value::IntValue(1))],
                                ..Default::default()
                            })
                            .collect(),
                        links: (0..i % 3 / 2)
                            .map(|_| Link { trace_id: vec![3; 16], span_id: vec![4; 8], ..Default::default() })
                            .collect(),
                        ..Default::default()
                    }
                })
                .collect();
            crate::encode::batch_of(spans)
        };
        let (a, b) = (batch(1, 9), batch(2, 12).slice(2, 9));
        let rows: Vec<(usize, usize)> = vec![(1, 3), (0, 0), (0, 1), (0, 2), (1, 0), (0, 8), (1, 8), (1, 1), (0, 5)];
        let mut ranges = Vec::new();
        for &(array, row) in &rows {
            push(&mut ranges, Rows { array, start: row, end: row + 1 });
        }
        assert_eq!(ranges.len(), 7, "(0, 0..3) is one range");
        for column in 0..a.num_columns() {
            let arrays = [a.column(column).as_ref(), b.column(column).as_ref()];
            let expected = arrow::compute::interleave(&arrays, &rows).unwrap();
            let got = gather(&arrays, &ranges).unwrap();
            assert_eq!(got.to_data(), expected.to_data(), "column {}", a.schema().field(column).name());
        }
    }

    #[test]
    fn nulls_and_empty_ranges() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("zz")]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>, None]));
        let arrays = [a.as_ref(), b.as_ref()];
        let ranges = [Rows { array: 1, start: 0, end: 2 }, Rows { array: 0, start: 1, end: 3 }];
        let got = gather(&arrays, &ranges).unwrap();
        assert_eq!(got.as_string::<i32>(), &StringArray::from(vec![None, None, None, Some("zz")]));
        assert_eq!(gather(&arrays, &[]).unwrap().len(), 0);
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![None::<i64>, None]));
        assert_eq!(gather(&[ints.as_ref()], &[Rows { array: 0, start: 0, end: 2 }]).unwrap().null_count(), 2);
    }
}
