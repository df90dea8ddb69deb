//! The TraceQL syntax tree.

use std::fmt;

/// A whole query: a spanset expression followed by pipeline stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub spansets: SpansetExpr,
    pub stages: Vec<Stage>,
    /// `with(most_recent=true, …)`: parsed; search answers the same with or
    /// without them (it always returns the newest matches).
    pub hints: Vec<Hint>,
}

/// A query hint: `name=value` inside a trailing `with(…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub name: String,
    pub value: Static,
}

/// A TraceQL metrics query:
/// `{ filter } | rate() by(resource.service.name) | topk(5) with(sample=true)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    /// The spans measured.
    pub spansets: SpansetExpr,
    pub function: MetricsFunction,
    /// `by(…)`: one series per distinct combination.
    pub by: Vec<FieldExpr>,
    /// Stages after the function, applied to the series in order.
    pub second: Vec<SecondStage>,
    pub hints: Vec<Hint>,
}

impl MetricsQuery {
    /// The hint `name`, if given.
    pub fn hint(&self, name: &str) -> Option<&Static> {
        self.hints.iter().rev().find(|h| h.name == name).map(|h| &h.value)
    }
}

/// The first stage of a metrics query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    Rate,
    CountOverTime,
    MinOverTime(FieldExpr),
    MaxOverTime(FieldExpr),
    SumOverTime(FieldExpr),
    AvgOverTime(FieldExpr),
    /// The field and the quantiles, each in [0, 1].
    QuantileOverTime(FieldExpr, Vec<f64>),
    HistogramOverTime(FieldExpr),
    /// `compare({selection}, top, start, end)`: attribute values of the
    /// selection against the other spans (the baseline).
    Compare {
        selection: Option<FieldExpr>,
        top: usize,
        /// Unix ns: only spans starting in `(start, end]` are the selection.
        window: Option<(i64, i64)>,
    },
}

impl MetricsFunction {
    /// The name series are labelled with (`__name__`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::CountOverTime => "count_over_time",
            Self::MinOverTime(_) => "min_over_time",
            Self::MaxOverTime(_) => "max_over_time",
            Self::SumOverTime(_) => "sum_over_time",
            Self::AvgOverTime(_) => "avg_over_time",
            Self::QuantileOverTime(..) => "quantile_over_time",
            Self::HistogramOverTime(_) => "histogram_over_time",
            Self::Compare { .. } => "compare",
        }
    }
}

/// A stage after a metrics function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SecondStage {
    /// The `k` highest series at each timestamp.
    TopK(usize),
    /// The `k` lowest series at each timestamp.
    BottomK(usize),
    /// Keeps the samples that compare true with the value (durations in seconds).
    Filter(CmpOp, f64),
}

/// A stage after `|`.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `| count() > 2`, `| avg(duration) > 20ms`
    Scalar { aggregate: Aggregate, op: CmpOp, value: Static },
    /// `| by(resource.service.name)`
    By(Vec<FieldExpr>),
    /// `| select(span.http.url, duration)`
    Select(Vec<FieldExpr>),
    /// `| coalesce()`
    Coalesce,
    /// `| { … }`: filter the spans of each spanset further
    Spanset(SpansetExpr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Count,
    Avg(FieldExpr),
    Min(FieldExpr),
    Max(FieldExpr),
    Sum(FieldExpr),
}

/// Spanset expressions: filters and their combinations.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ … }`; `None` for `{}` (every span).
    Filter(Option<FieldExpr>),
    Binary {
        op: SpansetOp,
        lhs: Box<SpansetExpr>,
        rhs: Box<SpansetExpr>,
    },
}

impl Static {
    /// The literal as a user would name it in an error.
    pub fn describe(&self) -> String {
        match self {
            Self::Str(s) => format!("the string {s:?}"),
            Self::Int(i) => format!("the number {i}"),
            Self::Float(f) => format!("the number {f}"),
            Self::Duration(d) => format!("a duration of {d} ns"),
            Self::Bool(b) => format!("{b}"),
            Self::Status(s) => format!("the status {}", s.stored()),
            Self::Kind(k) => format!("the kind {}", k.stored()),
            Self::Nil => "nil".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    /// `&&`: both in the same trace; spans of both sides
    And,
    /// `||`: either; spans of both sides
    Or,
    /// `>`: rhs spans whose parent matches lhs
    Child,
    /// `<`: rhs spans that are the parent of an lhs span
    Parent,
    /// `>>`: rhs spans with an ancestor matching lhs
    Descendant,
    /// `<<`: rhs spans that are an ancestor of an lhs span
    Ancestor,
    /// `~`: rhs spans with a sibling matching lhs
    Sibling,
    /// `&>`: rhs spans whose parent matches lhs, and those parents
    UnionChild,
    /// `&<`: rhs spans that are the parent of an lhs span, and those children
    UnionParent,
    /// `&>>`: rhs spans with an ancestor matching lhs, and those ancestors
    UnionDescendant,
    /// `&<<`: rhs spans that are an ancestor of an lhs span, and those descendants
    UnionAncestor,
    /// `&~`: rhs spans with a sibling matching lhs, and those siblings
    UnionSibling,
    /// `!>`: rhs spans whose parent does not match lhs
    NotChild,
    /// `!<`: rhs spans that are not the parent of an lhs span
    NotParent,
    /// `!>>`: rhs spans with no ancestor matching lhs
    NotDescendant,
    /// `!<<`: rhs spans that are not an ancestor of an lhs span
    NotAncestor,
    /// `!~`: rhs spans with no sibling matching lhs
    NotSibling,
}

/// Expressions inside a spanset filter.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    Binary { op: BinaryOp, lhs: Box<FieldExpr>, rhs: Box<FieldExpr> },
    Not(Box<FieldExpr>),
    Negate(Box<FieldExpr>),
    Static(Static),
    Intrinsic(Intrinsic),
    Attribute(Attribute),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Cmp(CmpOp),
    And,
    Or,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Regex,
    NotRegex,
}

impl CmpOp {
    /// Whether `value op threshold` holds (regex operators never do on numbers).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Eq => value == threshold,
            Self::Neq => value != threshold,
            Self::Gt => value > threshold,
            Self::Gte => value >= threshold,
            Self::Lt => value < threshold,
            Self::Lte => value <= threshold,
            Self::Regex | Self::NotRegex => false,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Neq => "!=",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Bool(bool),
    Status(StatusValue),
    Kind(KindValue),
    Nil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusValue {
    Unset,
    Ok,
    Error,
}

impl StatusValue {
    /// The value stored in the `status_code` column.
    pub fn stored(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindValue {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl KindValue {
    /// The value stored in the `kind` column.
    pub fn stored(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }

    /// The kind a `kind` column value names (`unspecified` for anything else).
    pub fn from_stored(stored: &str) -> Self {
        [Self::Internal, Self::Server, Self::Client, Self::Producer, Self::Consumer]
            .into_iter()
            .find(|k| k.stored() == stored)
            .unwrap_or(Self::Unspecified)
    }
}

/// Built-in fields of a span or its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Duration,
    Kind,
    SpanId,
    ParentId,
    TraceId,
    TraceDuration,
    RootName,
    RootServiceName,
    /// `nestedSetParent`: in filters -1 for a root span (as Tempo) and 0
    /// otherwise; selected, its parent's `nestedSetLeft`.
    NestedSetParent,
    /// `nestedSetLeft`, `nestedSetRight`: a span's numbers in a depth-first
    /// walk of its trace (entering, leaving); only in `select()`.
    NestedSetLeft,
    NestedSetRight,
    InstrumentationName,
    InstrumentationVersion,
    EventName,
    /// `link:traceID`, `link:spanID`
    LinkTraceId,
    LinkSpanId,
}

impl Intrinsic {
    /// Whether the value depends on the whole trace, not only the span.
    pub fn is_trace_level(self) -> bool {
        matches!(self, Self::TraceDuration | Self::RootName | Self::RootServiceName)
    }

    /// The name Tempo reports it under.
    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Status => "status",
            Self::StatusMessage => "statusMessage",
            Self::Duration => "duration",
            Self::Kind => "kind",
            Self::SpanId => "span:id",
            Self::ParentId => "span:parentID",
            Self::TraceId => "trace:id",
            Self::TraceDuration => "traceDuration",
            Self::RootName => "rootName",
            Self::RootServiceName => "rootServiceName",
            Self::NestedSetParent => "nestedSetParent",
            Self::NestedSetLeft => "nestedSetLeft",
            Self::NestedSetRight => "nestedSetRight",
            Self::InstrumentationName => "instrumentation:name",
            Self::InstrumentationVersion => "instrumentation:version",
            Self::EventName => "event:name",
            Self::LinkTraceId => "link:traceID",
            Self::LinkSpanId => "link:spanID",
        }
    }
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeScope {
    Span,
    Resource,
    /// `.x`: span first, then resource
    Unscoped,
    Event,
    Link,
    Instrumentation,
}

impl AttributeScope {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Span => "span",
            Self::Resource => "resource",
            Self::Unscoped => "",
            Self::Event => "event",
            Self::Link => "link",
            Self::Instrumentation => "instrumentation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    pub scope: AttributeScope,
    pub name: String,
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        let name = if plain { self.name.clone() } else { format!("{:?}", self.name) };
        write!(f, "{}.{}", self.scope.prefix(), name)
    }
}
