//! Reading string columns whichever way they arrive.
//!
//! The `spans` table gives its top-level string columns as views
//! (`Utf8View`, see [`crate::table::table_schema`]); a block read directly,
//! nested values and what functions return are plain `Utf8`. Code that reads
//! query results takes either through [`Strings`].

use arrow::array::{Array, AsArray, StringArray, StringViewArray};
use arrow::datatypes::DataType;

/// A string column, plain or of views.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Strings<'a> {
    Plain(&'a StringArray),
    Views(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    /// `array` as strings, or None when it holds something else.
    pub(crate) fn of(array: &'a dyn Array) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Self::Plain(array.as_string::<i32>())),
            DataType::Utf8View => Some(Self::Views(array.as_string_view())),
            _ => None,
        }
    }

    /// `array` as strings; the column's type was fixed by the query that
    /// made it, so another type is a bug.
    pub(crate) fn expect(array: &'a dyn Array) -> Self {
        Self::of(array).unwrap_or_else(|| panic!("a string column, got {}", array.data_type()))
    }

    /// The value at `row` (empty when null).
    pub(crate) fn value(&self, row: usize) -> &'a str {
        match self {
            Self::Plain(a) => a.value(row),
            Self::Views(a) => a.value(row),
        }
    }

    /// The value at `row`, or None when null.
    pub(crate) fn get(&self, row: usize) -> Option<&'a str> {
        self.is_valid(row).then(|| self.value(row))
    }

    pub(crate) fn is_valid(&self, row: usize) -> bool {
        match self {
            Self::Plain(a) => a.is_valid(row),
            Self::Views(a) => a.is_valid(row),
        }
    }

    pub(crate) fn is_null(&self, row: usize) -> bool {
        !self.is_valid(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_and_views_read_alike() {
        let values = [Some("server"), None, Some("a name longer than twelve bytes")];
        let plain = StringArray::from(values.to_vec());
        let views = StringViewArray::from(values.to_vec());
        for array in [&plain as &dyn Array, &views] {
            let strings = Strings::expect(array);
            assert_eq!((0..3).map(|row| strings.get(row)).collect::<Vec<_>>(), values);
            assert!(strings.is_null(1));
        }
        assert!(Strings::of(&arrow::array::Int64Array::from(vec![1])).is_none());
    }
}
