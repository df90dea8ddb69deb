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

/// A time as Tempo's metrics endpoints read it, in Unix ns: with a `.`,
/// float seconds (to the ms); an integer of up to 10 digits, seconds; a
/// longer one, nanoseconds; else RFC 3339.
pub(super) fn timestamp(name: &'static str, value: &str) -> Result<i64> {
    let value = value.trim();
    let bad = || {
        QueryError::invalid(name, format!("{value:?} is not a Unix time (seconds or nanoseconds) or an RFC 3339 time"))
    };
    if value.contains('.') && !value.contains('-') {
        let seconds: f64 = value.parse().map_err(|_| bad())?;
        if !seconds.is_finite() || !(0.0..=9.2e9).contains(&seconds) {
            return Err(bad());
        }
        return Ok((seconds * 1e3).round() as i64 * 1_000_000);
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let number: i64 = value.parse().map_err(|_| bad())?;
        return if value.len() <= 10 { number.checked_mul(1_000_000_000).ok_or_else(bad) } else { Ok(number) };
    }
    chrono::DateTime::parse_from_rfc3339(value).ok().and_then(|t| t.timestamp_nanos_opt()).ok_or_else(bad)
}

/// A step as Tempo reads it, in ns: a number is seconds (`30`, `0.5`),
/// else a duration (`30s`, `1m30s`, `500ms`).
pub(super) fn step(value: &str) -> Result<i64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(QueryError::invalid("step", format!("{value:?} is not a non-negative duration")));
        }
        return Ok((seconds * 1e9).round() as i64);
    }
    match traceql::parse_duration(value) {
        Some(ns) if ns >= 0 => Ok(ns),
        _ => Err(QueryError::invalid("step", format!("{value:?} is not a duration like 15s, 1m or 0.5"))),
    }
}

/// A Prometheus duration (`15m`, `1h`, `2d`, `1w`), in ns.
pub(super) fn prometheus_duration(name: &'static str, value: &str) -> Result<i64> {
    let bad = || QueryError::invalid(name, format!("{value:?} is not a duration like 15m, 1h or 1d"));
    let mut total: i64 = 0;
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, factor) = [
            ("ms", 1_000_000i64),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
            ("d", 86_400_000_000_000),
            ("w", 604_800_000_000_000),
            ("y", 31_536_000_000_000_000),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))
        .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        total = number.checked_mul(factor).and_then(|n| total.checked_add(n)).ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_as_tempo_reads_them() {
        assert_eq!(timestamp("start", "1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(timestamp("start", "1700000000123456789").unwrap(), 1_700_000_000_123_456_789);
        assert_eq!(timestamp("start", "1700000000.5").unwrap(), 1_700_000_000_500_000_000);
        assert_eq!(timestamp("start", "2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000_000_000);
        // Milliseconds are read as nanoseconds, as Tempo does.
        assert_eq!(timestamp("start", "1700000000000").unwrap(), 1_700_000_000_000);
        assert!(timestamp("start", "yesterday").unwrap_err().to_string().contains("start"));
    }

    #[test]
    fn steps_and_durations() {
        assert_eq!(step("30").unwrap(), 30_000_000_000);
        assert_eq!(step("0.5").unwrap(), 500_000_000);
        assert_eq!(step("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(step("28s").unwrap(), 28_000_000_000);
        assert!(step("1d").is_err());
        assert!(step("-5s").is_err());
        assert_eq!(prometheus_duration("since", "1h").unwrap(), 3_600_000_000_000);
        assert_eq!(prometheus_duration("since", "1d12h").unwrap(), 129_600_000_000_000);
        assert_eq!(prometheus_duration("since", "500ms").unwrap(), 500_000_000);
        assert!(prometheus_duration("since", "soon").is_err());
    }
}
