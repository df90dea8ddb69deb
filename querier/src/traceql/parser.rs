//! Recursive-descent TraceQL parser.
//!
//! Precedence, lowest first: spanset `||`; spanset `&&`; structural `> < >> << ~`
//! (left-associative). Inside `{ }`: `||`; `&&`; comparisons; `+ -`; `* / %`;
//! `^`; unary `! -`.
//!
//! Limits keep every later walk of the tree (compile, evaluation, `Drop`)
//! shallow, whatever the input: nesting (parentheses, braces, unary
//! operators, `^` chains) is at most [`MAX_NESTING`] deep, and a query has at
//! most [`MAX_OPERATORS`] binary operators, so no tree is deeper than their sum.

use super::ParseError;
use super::ast::*;
use super::lexer::{Tok, tokenize};

/// Deepest nesting of parentheses, braces, unary operators and `^` chains.
pub(crate) const MAX_NESTING: usize = 64;
/// Most binary operators (spanset and field) in one query.
pub(crate) const MAX_OPERATORS: usize = 256;
/// Most tokens in one query.
pub(crate) const MAX_TOKENS: usize = 8192;

pub(crate) struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
    operators: usize,
}

impl Parser {
    pub(crate) fn new(query: &str) -> Result<Self, ParseError> {
        let tokens = tokenize(query)?;
        if tokens.len() > MAX_TOKENS {
            let at = tokens[MAX_TOKENS].1;
            return Err(ParseError::new(at, format!("query has more than the limit of {MAX_TOKENS} tokens")));
        }
        Ok(Self { tokens, pos: 0, depth: 0, operators: 0 })
    }

    /// Runs one level of recursive descent under the nesting limit.
    fn nested<T>(&mut self, parse: impl FnOnce(&mut Self) -> Result<T, ParseError>) -> Result<T, ParseError> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(format!("query nests deeper than the limit of {MAX_NESTING} levels")));
        }
        self.depth += 1;
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    /// Counts one binary operator against the limit.
    fn operator(&mut self) -> Result<(), ParseError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(self.error(format!("query has more than the limit of {MAX_OPERATORS} operators")));
        }
        Ok(())
    }

    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].0
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].0
    }

    fn offset(&self) -> usize {
        self.tokens[self.pos].1
    }

    fn next(&mut self) -> Tok {
        let tok = self.tokens[self.pos].0.clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(self.offset(), message)
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.error(format!("expected {what}, found {}", self.peek().describe())))
        }
    }

    pub(crate) fn query(&mut self) -> Result<Query, ParseError> {
        let spansets = self.spanset_or()?;
        let mut stages = Vec::new();
        while *self.peek() == Tok::Pipe {
            self.next();
            stages.push(self.stage()?);
        }
        let hints = self.hints()?;
        self.end()?;
        Ok(Query { spansets, stages, hints })
    }

    fn end(&self) -> Result<(), ParseError> {
        if *self.peek() != Tok::Eof {
            return Err(self.error(format!("unexpected {} after the query", self.peek().describe())));
        }
        Ok(())
    }

    /// A trailing `with(name=value, …)`, or nothing.
    fn hints(&mut self) -> Result<Vec<Hint>, ParseError> {
        let mut hints = Vec::new();
        if !matches!(self.peek(), Tok::Ident(word) if word == "with") {
            return Ok(hints);
        }
        self.next();
        self.expect(Tok::LParen, "'(' after with")?;
        loop {
            let Tok::Ident(name) = self.next() else {
                return Err(self.error("expected a hint name, e.g. with(sample=true)"));
            };
            self.expect(Tok::Eq, "'=' after the hint name")?;
            let value = match self.next() {
                Tok::Ident(word) if word == "true" => Static::Bool(true),
                Tok::Ident(word) if word == "false" => Static::Bool(false),
                Tok::Int(i) => Static::Int(i),
                Tok::Float(f) => Static::Float(f),
                Tok::Duration(d) => Static::Duration(d),
                Tok::Str(s) => Static::Str(s),
                other => return Err(self.error(format!("hint {name} needs a value, found {}", other.describe()))),
            };
            hints.push(Hint { name, value });
            if hints.len() > 32 {
                return Err(self.error("more than 32 hints"));
            }
            match self.next() {
                Tok::Comma => continue,
                Tok::RParen => return Ok(hints),
                other => return Err(self.error(format!("expected ',' or ')' in with(…), found {}", other.describe()))),
            }
        }
    }

    /// A metrics query: a spanset expression, `|`, a metrics function with
    /// its optional `by(…)`, second stages, hints.
    pub(crate) fn metrics_query(&mut self) -> Result<MetricsQuery, ParseError> {
        let spansets = self.spanset_or()?;
        if *self.peek() != Tok::Pipe {
            return Err(self.error("not a metrics query: add a metrics function, e.g. { } | rate()"));
        }
        self.next();
        let at = self.offset();
        let Tok::Ident(name) = self.next() else {
            return Err(ParseError::new(at, "expected a metrics function such as rate() after '|'"));
        };
        let function = self.metrics_function(&name, at)?;
        let mut by = Vec::new();
        if matches!(self.peek(), Tok::Ident(word) if word == "by") {
            if matches!(function, MetricsFunction::Compare { .. }) {
                return Err(self.error("compare() takes no by()"));
            }
            self.next();
            by = self.field_list()?;
            if by.len() > 5 {
                return Err(self.error("by() takes at most 5 fields"));
            }
        }
        let mut second = Vec::new();
        loop {
            if let Some(op) = self.cmp_op() {
                self.next();
                let value = self.scalar()?;
                second.push(SecondStage::Filter(op, value));
                continue;
            }
            if *self.peek() != Tok::Pipe {
                break;
            }
            self.next();
            let at = self.offset();
            let stage = match self.next() {
                Tok::Ident(word) if word == "topk" || word == "bottomk" => {
                    self.expect(Tok::LParen, "'('")?;
                    let Tok::Int(k) = self.next() else { return Err(self.error(format!("{word}() takes a count"))) };
                    self.expect(Tok::RParen, "')'")?;
                    if k <= 0 {
                        return Err(ParseError::new(at, format!("{word}() needs a count above 0")));
                    }
                    if matches!(function, MetricsFunction::Compare { .. }) {
                        return Err(ParseError::new(at, format!("{word}() cannot follow compare()")));
                    }
                    let k = k as usize;
                    if word == "topk" { SecondStage::TopK(k) } else { SecondStage::BottomK(k) }
                }
                other => {
                    return Err(ParseError::new(
                        at,
                        format!("expected topk() or bottomk(), found {}", other.describe()),
                    ));
                }
            };
            second.push(stage);
        }
        let hints = self.hints()?;
        self.end()?;
        Ok(MetricsQuery { spansets, function, by, second, hints })
    }

    /// `(f, …)` of by() and select().
    fn field_list(&mut self) -> Result<Vec<FieldExpr>, ParseError> {
        self.expect(Tok::LParen, "'('")?;
        let mut fields = vec![self.field_or()?];
        while *self.peek() == Tok::Comma {
            self.next();
            fields.push(self.field_or()?);
        }
        self.expect(Tok::RParen, "')'")?;
        Ok(fields)
    }

    /// A number or duration after a comparison; durations in seconds.
    fn scalar(&mut self) -> Result<f64, ParseError> {
        let negative = *self.peek() == Tok::Minus;
        if negative {
            self.next();
        }
        let value = match self.next() {
            Tok::Int(i) => i as f64,
            Tok::Float(f) => f,
            Tok::Duration(d) => d as f64 / 1e9,
            other => return Err(self.error(format!("expected a number or duration, found {}", other.describe()))),
        };
        Ok(if negative { -value } else { value })
    }

    fn metrics_function(&mut self, name: &str, at: usize) -> Result<MetricsFunction, ParseError> {
        self.expect(Tok::LParen, "'('")?;
        let function = match name {
            "rate" => MetricsFunction::Rate,
            "count_over_time" => MetricsFunction::CountOverTime,
            "min_over_time" => MetricsFunction::MinOverTime(self.field_or()?),
            "max_over_time" => MetricsFunction::MaxOverTime(self.field_or()?),
            "sum_over_time" => MetricsFunction::SumOverTime(self.field_or()?),
            "avg_over_time" => MetricsFunction::AvgOverTime(self.field_or()?),
            "histogram_over_time" => MetricsFunction::HistogramOverTime(self.field_or()?),
            "quantile_over_time" => {
                let field = self.field_or()?;
                let mut quantiles = Vec::new();
                while *self.peek() == Tok::Comma {
                    self.next();
                    let q = self.scalar()?;
                    if !(0.0..=1.0).contains(&q) {
                        return Err(self.error(format!("quantile {q} is not between 0 and 1")));
                    }
                    quantiles.push(q);
                    if quantiles.len() > 100 {
                        return Err(self.error("quantile_over_time() takes at most 100 quantiles"));
                    }
                }
                if quantiles.is_empty() {
                    return Err(self.error("quantile_over_time() needs at least one quantile, e.g. (duration, 0.9)"));
                }
                MetricsFunction::QuantileOverTime(field, quantiles)
            }
            "compare" => self.compare()?,
            other => {
                return Err(ParseError::new(
                    at,
                    format!(
                        "unknown metrics function {other:?}: use rate, count_over_time, min_over_time, max_over_time, sum_over_time, avg_over_time, quantile_over_time, histogram_over_time or compare"
                    ),
                ));
            }
        };
        self.expect(Tok::RParen, "')' to close the metrics function")?;
        Ok(function)
    }

    /// The arguments of `compare({selection}[, top[, start, end]])`.
    fn compare(&mut self) -> Result<MetricsFunction, ParseError> {
        let selection = match self.spanset_primary()? {
            SpansetExpr::Filter(filter) => filter,
            SpansetExpr::Binary { .. } => return Err(self.error("compare() takes one spanset filter { … }")),
        };
        let mut numbers = Vec::new();
        while *self.peek() == Tok::Comma {
            self.next();
            match self.next() {
                Tok::Int(i) if numbers.len() < 3 => numbers.push(i),
                other => {
                    return Err(
                        self.error(format!("compare() takes (filter, top, start, end), found {}", other.describe()))
                    );
                }
            }
        }
        let top = numbers.first().copied().unwrap_or(10);
        if !(1..=1000).contains(&top) {
            return Err(self.error(format!("compare() top must be between 1 and 1000, not {top}")));
        }
        let window = match numbers.as_slice() {
            [_] | [] => None,
            [_, start, end] if end > start => Some((*start, *end)),
            [_, _, _] => return Err(self.error("compare() end must be after start (Unix nanoseconds)")),
            _ => return Err(self.error("compare() takes both start and end, or neither")),
        };
        Ok(MetricsFunction::Compare { selection, top: top as usize, window })
    }

    fn spanset_or(&mut self) -> Result<SpansetExpr, ParseError> {
        self.nested(Self::spanset_or_inner)
    }

    fn spanset_or_inner(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_and()?;
        while *self.peek() == Tok::OrOr {
            self.next();
            self.operator()?;
            let rhs = self.spanset_and()?;
            lhs = SpansetExpr::Binary { op: SpansetOp::Or, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_structural()?;
        while *self.peek() == Tok::AndAnd {
            self.next();
            self.operator()?;
            let rhs = self.spanset_structural()?;
            lhs = SpansetExpr::Binary { op: SpansetOp::And, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    fn spanset_structural(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_primary()?;
        loop {
            let op = match self.peek() {
                Tok::Gt => SpansetOp::Child,
                Tok::Lt => SpansetOp::Parent,
                Tok::Descendant => SpansetOp::Descendant,
                Tok::Ancestor => SpansetOp::Ancestor,
                Tok::Tilde => SpansetOp::Sibling,
                Tok::UnionChild => SpansetOp::UnionChild,
                Tok::UnionParent => SpansetOp::UnionParent,
                Tok::UnionDescendant => SpansetOp::UnionDescendant,
                Tok::UnionAncestor => SpansetOp::UnionAncestor,
                Tok::UnionSibling => SpansetOp::UnionSibling,
                // `!~` between spansets is "not sibling", not a regex.
                Tok::NotRegex => SpansetOp::NotSibling,
                Tok::Not => {
                    let op = match self.peek_at(1) {
                        Tok::Gt => SpansetOp::NotChild,
                        Tok::Lt => SpansetOp::NotParent,
                        Tok::Descendant => SpansetOp::NotDescendant,
                        Tok::Ancestor => SpansetOp::NotAncestor,
                        Tok::Tilde => SpansetOp::NotSibling,
                        _ => return Ok(lhs),
                    };
                    self.next();
                    op
                }
                _ => return Ok(lhs),
            };
            self.next();
            self.operator()?;
            let rhs = self.spanset_primary()?;
            lhs = SpansetExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn spanset_primary(&mut self) -> Result<SpansetExpr, ParseError> {
        match self.peek() {
            Tok::LBrace => {
                self.next();
                if *self.peek() == Tok::RBrace {
                    self.next();
                    return Ok(SpansetExpr::Filter(None));
                }
                let expr = self.field_or()?;
                self.expect(Tok::RBrace, "'}' to close the spanset filter")?;
                Ok(SpansetExpr::Filter(Some(expr)))
            }
            Tok::LParen => {
                self.next();
                let inner = self.spanset_or()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            other => Err(self.error(format!("expected a spanset filter '{{ … }}', found {}", other.describe()))),
        }
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        if *self.peek() == Tok::LBrace || *self.peek() == Tok::LParen {
            return Ok(Stage::Spanset(self.spanset_or()?));
        }
        let Tok::Ident(name) = self.peek().clone() else {
            return Err(self.error(format!("expected a pipeline stage, found {}", self.peek().describe())));
        };
        self.next();
        match name.as_str() {
            "count" | "avg" | "min" | "max" | "sum" => {
                self.expect(Tok::LParen, "'('")?;
                let aggregate = if name == "count" {
                    Aggregate::Count
                } else {
                    let field = self.field_or()?;
                    match name.as_str() {
                        "avg" => Aggregate::Avg(field),
                        "min" => Aggregate::Min(field),
                        "max" => Aggregate::Max(field),
                        _ => Aggregate::Sum(field),
                    }
                };
                self.expect(Tok::RParen, "')'")?;
                let op = self.cmp_op().ok_or_else(|| self.error(format!("expected a comparison after {name}()")))?;
                self.next();
                let negative = *self.peek() == Tok::Minus;
                if negative {
                    self.next();
                }
                let value = match (self.next(), negative) {
                    (Tok::Int(i), n) => Static::Int(if n { -i } else { i }),
                    (Tok::Float(f), n) => Static::Float(if n { -f } else { f }),
                    (Tok::Duration(d), n) => Static::Duration(if n { -d } else { d }),
                    (other, _) => {
                        return Err(self.error(format!("expected a number or duration, found {}", other.describe())));
                    }
                };
                Ok(Stage::Scalar { aggregate, op, value })
            }
            "by" | "select" => {
                let fields = self.field_list()?;
                Ok(if name == "by" { Stage::By(fields) } else { Stage::Select(fields) })
            }
            "coalesce" => {
                self.expect(Tok::LParen, "'('")?;
                self.expect(Tok::RParen, "')'")?;
                Ok(Stage::Coalesce)
            }
            "rate"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "avg_over_time"
            | "sum_over_time"
            | "quantile_over_time"
            | "histogram_over_time"
            | "compare" => Err(ParseError::new(
                self.tokens[self.pos - 1].1,
                format!("{name}() is a TraceQL metrics function: use /api/metrics/query_range"),
            )),
            other => Err(ParseError::new(self.tokens[self.pos - 1].1, format!("unknown pipeline function {other:?}"))),
        }
    }

    fn cmp_op(&self) -> Option<CmpOp> {
        Some(match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Neq => CmpOp::Neq,
            Tok::Gt => CmpOp::Gt,
            Tok::Gte => CmpOp::Gte,
            Tok::Lt => CmpOp::Lt,
            Tok::Lte => CmpOp::Lte,
            Tok::Regex => CmpOp::Regex,
            Tok::NotRegex => CmpOp::NotRegex,
            _ => return None,
        })
    }

    fn binary(op: BinaryOp, lhs: FieldExpr, rhs: FieldExpr) -> FieldExpr {
        FieldExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }
    }

    fn field_or(&mut self) -> Result<FieldExpr, ParseError> {
        self.nested(Self::field_or_inner)
    }

    fn field_or_inner(&mut self) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.field_and()?;
        while *self.peek() == Tok::OrOr {
            self.next();
            self.operator()?;
            lhs = Self::binary(BinaryOp::Or, lhs, self.field_and()?);
        }
        Ok(lhs)
    }

    fn field_and(&mut self) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.field_cmp()?;
        while *self.peek() == Tok::AndAnd {
            self.next();
            self.operator()?;
            lhs = Self::binary(BinaryOp::And, lhs, self.field_cmp()?);
        }
        Ok(lhs)
    }

    fn field_cmp(&mut self) -> Result<FieldExpr, ParseError> {
        let lhs = self.field_sum()?;
        let Some(op) = self.cmp_op() else { return Ok(lhs) };
        let at = self.offset();
        self.next();
        self.operator()?;
        let rhs = self.field_sum()?;
        if let Some(mismatch) = type_mismatch(&lhs, &rhs).or_else(|| type_mismatch(&rhs, &lhs)) {
            return Err(ParseError::new(at, mismatch));
        }
        if matches!(op, CmpOp::Regex | CmpOp::NotRegex) {
            match &rhs {
                FieldExpr::Static(Static::Str(pattern)) => {
                    regex::Regex::new(pattern).map_err(|e| {
                        let reason = e.to_string();
                        let reason = reason.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
                        ParseError::new(at, format!("invalid regular expression {pattern:?}: {reason}"))
                    })?;
                }
                _ => return Err(ParseError::new(at, format!("{} needs a string pattern on its right", op.symbol()))),
            }
        }
        Ok(Self::binary(BinaryOp::Cmp(op), lhs, rhs))
    }

    fn field_sum(&mut self) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.field_product()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinaryOp::Add,
                Tok::Minus => BinaryOp::Sub,
                _ => return Ok(lhs),
            };
            self.next();
            self.operator()?;
            lhs = Self::binary(op, lhs, self.field_product()?);
        }
    }

    fn field_product(&mut self) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.field_power()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinaryOp::Mul,
                Tok::Slash => BinaryOp::Div,
                Tok::Percent => BinaryOp::Mod,
                _ => return Ok(lhs),
            };
            self.next();
            self.operator()?;
            lhs = Self::binary(op, lhs, self.field_power()?);
        }
    }

    fn field_power(&mut self) -> Result<FieldExpr, ParseError> {
        let lhs = self.field_unary()?;
        if *self.peek() == Tok::Caret {
            self.next();
            self.operator()?;
            let rhs = self.nested(Self::field_power)?;
            return Ok(Self::binary(BinaryOp::Pow, lhs, rhs));
        }
        Ok(lhs)
    }

    fn field_unary(&mut self) -> Result<FieldExpr, ParseError> {
        match self.peek() {
            Tok::Not => {
                self.next();
                Ok(FieldExpr::Not(Box::new(self.nested(Self::field_unary)?)))
            }
            Tok::Minus => {
                self.next();
                Ok(match self.nested(Self::field_unary)? {
                    FieldExpr::Static(Static::Int(i)) => FieldExpr::Static(Static::Int(-i)),
                    FieldExpr::Static(Static::Float(f)) => FieldExpr::Static(Static::Float(-f)),
                    FieldExpr::Static(Static::Duration(d)) => FieldExpr::Static(Static::Duration(-d)),
                    other => FieldExpr::Negate(Box::new(other)),
                })
            }
            _ => self.field_primary(),
        }
    }

    fn field_primary(&mut self) -> Result<FieldExpr, ParseError> {
        let at = self.offset();
        let tok = self.next();
        Ok(match tok {
            Tok::LParen => {
                let inner = self.field_or()?;
                self.expect(Tok::RParen, "')'")?;
                inner
            }
            Tok::Str(s) => FieldExpr::Static(Static::Str(s)),
            Tok::Int(i) => FieldExpr::Static(Static::Int(i)),
            Tok::Float(f) => FieldExpr::Static(Static::Float(f)),
            Tok::Duration(d) => FieldExpr::Static(Static::Duration(d)),
            Tok::Attr(a) => FieldExpr::Attribute(a),
            Tok::Scoped(scope, field) => FieldExpr::Intrinsic(
                scoped_intrinsic(&scope, &field)
                    .ok_or_else(|| ParseError::new(at, format!("unknown intrinsic {scope}:{field}")))?,
            ),
            Tok::Ident(word) => keyword(&word).ok_or_else(|| {
                ParseError::new(
                    at,
                    format!("unknown identifier {word:?}: attributes need a scope, e.g. .{word} or span.{word}"),
                )
            })?,
            Tok::Eof => return Err(ParseError::new(at, "unexpected end of query")),
            other => return Err(ParseError::new(at, format!("unexpected {}", other.describe()))),
        })
    }
}

/// Why comparing intrinsic `field` with literal `value` can never be true
/// (a type error, as Tempo reports it), if it is one.
fn type_mismatch(field: &FieldExpr, value: &FieldExpr) -> Option<String> {
    let (FieldExpr::Intrinsic(intrinsic), FieldExpr::Static(value)) = (field, value) else { return None };
    let expected = match intrinsic {
        Intrinsic::Status => "a status (ok, error or unset)",
        Intrinsic::Kind => "a span kind (server, client, producer, consumer, internal or unspecified)",
        Intrinsic::Duration | Intrinsic::TraceDuration => "a duration, e.g. 100ms",
        Intrinsic::Name
        | Intrinsic::StatusMessage
        | Intrinsic::RootName
        | Intrinsic::RootServiceName
        | Intrinsic::InstrumentationName
        | Intrinsic::InstrumentationVersion
        | Intrinsic::EventName => "a string",
        _ => return None,
    };
    let fits = match (intrinsic, value) {
        (_, Static::Nil) => true,
        (Intrinsic::Status, Static::Status(_)) | (Intrinsic::Kind, Static::Kind(_)) => true,
        (Intrinsic::Duration | Intrinsic::TraceDuration, Static::Duration(_) | Static::Int(_) | Static::Float(_)) => {
            true
        }
        (Intrinsic::Status | Intrinsic::Kind | Intrinsic::Duration | Intrinsic::TraceDuration, _) => false,
        (_, Static::Str(_)) => true,
        _ => false,
    };
    (!fits).then(|| format!("{} compares with {expected}, not {}", intrinsic.name(), value.describe()))
}

fn keyword(word: &str) -> Option<FieldExpr> {
    use FieldExpr::{Intrinsic as I, Static as S};
    Some(match word {
        "true" => S(Static::Bool(true)),
        "false" => S(Static::Bool(false)),
        "nil" => S(Static::Nil),
        "ok" => S(Static::Status(StatusValue::Ok)),
        "error" => S(Static::Status(StatusValue::Error)),
        "unset" => S(Static::Status(StatusValue::Unset)),
        "server" => S(Static::Kind(KindValue::Server)),
        "client" => S(Static::Kind(KindValue::Client)),
        "producer" => S(Static::Kind(KindValue::Producer)),
        "consumer" => S(Static::Kind(KindValue::Consumer)),
        "internal" => S(Static::Kind(KindValue::Internal)),
        "unspecified" => S(Static::Kind(KindValue::Unspecified)),
        "name" => I(Intrinsic::Name),
        "status" => I(Intrinsic::Status),
        "statusMessage" => I(Intrinsic::StatusMessage),
        "duration" => I(Intrinsic::Duration),
        "kind" => I(Intrinsic::Kind),
        "traceDuration" => I(Intrinsic::TraceDuration),
        "rootName" => I(Intrinsic::RootName),
        "rootServiceName" => I(Intrinsic::RootServiceName),
        "nestedSetParent" => I(Intrinsic::NestedSetParent),
        "nestedSetLeft" => I(Intrinsic::NestedSetLeft),
        "nestedSetRight" => I(Intrinsic::NestedSetRight),
        _ => return None,
    })
}

fn scoped_intrinsic(scope: &str, field: &str) -> Option<Intrinsic> {
    Some(match (scope, field) {
        ("span", "name") => Intrinsic::Name,
        ("span", "status") => Intrinsic::Status,
        ("span", "statusMessage") => Intrinsic::StatusMessage,
        ("span", "duration") => Intrinsic::Duration,
        ("span", "kind") => Intrinsic::Kind,
        ("span", "id") => Intrinsic::SpanId,
        ("span", "parentID") => Intrinsic::ParentId,
        ("trace", "duration") => Intrinsic::TraceDuration,
        ("trace", "rootName") => Intrinsic::RootName,
        ("trace", "rootService") => Intrinsic::RootServiceName,
        ("trace", "id") => Intrinsic::TraceId,
        ("event", "name") => Intrinsic::EventName,
        ("link", "traceID") => Intrinsic::LinkTraceId,
        ("link", "spanID") => Intrinsic::LinkSpanId,
        ("instrumentation", "name") => Intrinsic::InstrumentationName,
        ("instrumentation", "version") => Intrinsic::InstrumentationVersion,
        _ => return None,
    })
}
