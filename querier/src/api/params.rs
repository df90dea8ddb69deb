//! Parsers of query-string parameters, each naming the parameter it rejects.
//! A leaf module: it imports nothing above it.

use serde::Deserialize;

use crate::error::{QueryError, Result};
use crate::traceql;

/// `start` and `end` in Unix seconds.
#[derive(Debug, Deserialize)]
pub(super) struct TimeRange {
    start: Option<String>,
    end: Option<String>,
}

impl TimeRange {
    /// `[start, end]` in Unix nanoseconds from Unix-seconds parameters.
    pub(super) fn to_nanos(&self) -> Result<(i64, i64)> {
        unix_seconds_range(&self.start, &self.end)
    }
}

/// `[start, end]` in Unix nanoseconds from `start`/`end` parameters in Unix
/// seconds (the end second included); open ends are unbounded.
pub(super) fn unix_seconds_range(start: &Option<String>, end: &Option<String>) -> Result<(i64, i64)> {
    let parse = |name: &'static str, value: &Option<String>| -> Result<Option<i64>> {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<u32>()
                    .map(|s| s as i64 * 1_000_000_000)
                    .map_err(|_| QueryError::invalid(name, format!("{v:?} is not a Unix time in seconds")))
            })
            .transpose()
    };
    let (from, to) = (parse("start", start)?, parse("end", end)?);
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(QueryError::invalid("end", "end must be after start"));
    }
    Ok((from.unwrap_or(0), to.map(|t| t + 999_999_999).unwrap_or(i64::MAX)))
}

/// A non-negative integer parameter, absent when empty.
pub(super) fn number(name: &'static str, value: &Option<String>) -> Result<Option<u64>> {
    non_empty(value)
        .map(|v| {
            v.parse::<u64>().map_err(|_| QueryError::invalid(name, format!("{v:?} is not a non-negative integer")))
        })
        .transpose()
}

/// A duration parameter (`100ms`, `1.5s`), in nanoseconds, absent when empty.
pub(super) fn duration(name: &'static str, value: &Option<String>) -> Result<Option<i64>> {
    non_empty(value)
        .map(|v| {
            traceql::parse_duration(&v)
                .ok_or_else(|| QueryError::invalid(name, format!("{v:?} is not a duration like 100ms or 1.5s")))
        })
        .transpose()
}

/// The trimmed value, or `None` when absent or blank.
pub(super) fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}
