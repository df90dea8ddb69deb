//! TraceQL: the query language of Grafana Tempo, parsed here and compiled to
//! DataFusion plans by the search engine.

pub mod ast;
mod lexer;
mod parser;

use std::fmt;

pub use ast::{MetricsQuery, Query};

/// A query that does not parse, with the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the query.
    pub offset: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> Self {
        Self { offset, message: message.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parse error at column {}: {}", self.offset + 1, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a TraceQL query.
pub fn parse(query: &str) -> Result<Query, ParseError> {
    parser::Parser::new(query)?.query()
}

/// Parses a TraceQL metrics query (`{ … } | rate() by(…)`).
pub fn parse_metrics(query: &str) -> Result<MetricsQuery, ParseError> {
    parser::Parser::new(query)?.metrics_query()
}

#[cfg(test)]
mod tests;

/// A duration written as in TraceQL or Go (`100ms`, `1.5s`, `1h2m`), in nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    match lexer::tokenize(text.trim()).ok()?.as_slice() {
        [(lexer::Tok::Duration(ns), _), (lexer::Tok::Eof, _)] => Some(*ns),
        [(lexer::Tok::Int(0), _), (lexer::Tok::Eof, _)] => Some(0),
        _ => None,
    }
}
