//! TraceQL spanset filters → DataFusion expressions over the `spans` table.
//!
//! Attribute values are structs `{str, int, double, bool, bytes, json}`; a
//! comparison picks the field that matches the literal's type, so
//! `span.http.status_code >= 500` compares numbers (int or double) and a
//! missing attribute is NULL, which never matches, `!=` included (Tempo's
//! semantics). `.x` looks at the span's attribute first, then the resource's.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions::regex::expr_fn::regexp_like;
use datafusion::logical_expr::{Expr, binary_expr, cast, col, lit, when};
use datafusion::logical_expr::{Operator, not};
use spanlake_schemas::schema as s;

use crate::error::QueryError;
use crate::traceql::ast::*;

/// Column aliases added by the search when a filter needs trace-level fields.
pub(crate) const TRACE_DURATION: &str = "__trace_duration_ns";
pub(crate) const ROOT_NAME: &str = "__root_name";
pub(crate) const ROOT_SERVICE: &str = "__root_service_name";

fn unsupported(what: impl Into<String>) -> QueryError {
    QueryError::InvalidParameter { name: "q", reason: what.into() }
}

/// Whether the filter reads trace-level intrinsics (needs the trace summary join).
pub(crate) fn needs_trace_fields(expr: &FieldExpr) -> bool {
    match expr {
        FieldExpr::Binary { lhs, rhs, .. } => needs_trace_fields(lhs) || needs_trace_fields(rhs),
        FieldExpr::Not(e) | FieldExpr::Negate(e) => needs_trace_fields(e),
        FieldExpr::Intrinsic(i) => i.is_trace_level(),
        _ => false,
    }
}

/// The whole attribute value struct (null when absent), for returning it.
pub(crate) fn attribute_struct(attribute: &Attribute) -> Result<Expr, QueryError> {
    let lookup = |column: &str| get_field(col(column), attribute.name.as_str());
    Ok(match attribute.scope {
        AttributeScope::Span => lookup(s::SPAN_ATTRIBUTES),
        AttributeScope::Resource => lookup(s::RESOURCE_ATTRIBUTES),
        AttributeScope::Instrumentation => lookup(s::SCOPE_ATTRIBUTES),
        AttributeScope::Unscoped => coalesce(vec![lookup(s::SPAN_ATTRIBUTES), lookup(s::RESOURCE_ATTRIBUTES)]),
        AttributeScope::Event | AttributeScope::Link => {
            return Err(unsupported(format!("{} attributes are not supported yet", attribute.scope.prefix())));
        }
    })
}

/// The type a comparison is made in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Number,
    Bool,
}

fn static_kind(value: &Static) -> Option<Kind> {
    match value {
        Static::Str(_) | Static::Status(_) | Static::Kind(_) => Some(Kind::Str),
        Static::Int(_) | Static::Float(_) | Static::Duration(_) => Some(Kind::Number),
        Static::Bool(_) => Some(Kind::Bool),
        Static::Nil => None,
    }
}

/// An attribute's value as a `kind`: numbers come from `int` or `double`.
fn attribute_value(attribute: &Attribute, kind: Kind) -> Result<Expr, QueryError> {
    if kind == Kind::Str && attribute.scope == AttributeScope::Resource && attribute.name == "service.name" {
        // The same string, stored once more as a plain column: no map lookup
        // per span, and statistics and dictionaries to prune by.
        return Ok(col(s::SERVICE_NAME));
    }
    let value = attribute_struct(attribute)?;
    Ok(match kind {
        Kind::Str => get_field(value, s::VALUE_STR),
        Kind::Bool => get_field(value.clone(), s::VALUE_BOOL),
        Kind::Number => coalesce(vec![
            cast(get_field(value.clone(), s::VALUE_INT), DataType::Float64),
            get_field(value, s::VALUE_DOUBLE),
        ]),
    })
}

fn intrinsic(intrinsic: Intrinsic) -> Result<(Expr, Kind), QueryError> {
    Ok(match intrinsic {
        Intrinsic::Name => (col(s::NAME), Kind::Str),
        Intrinsic::Status => (col(s::STATUS_CODE), Kind::Str),
        Intrinsic::StatusMessage => (col(s::STATUS_MESSAGE), Kind::Str),
        Intrinsic::Kind => (col(s::KIND), Kind::Str),
        Intrinsic::Duration => (cast(col(s::DURATION_NS), DataType::Float64), Kind::Number),
        Intrinsic::TraceDuration => (cast(col(TRACE_DURATION), DataType::Float64), Kind::Number),
        Intrinsic::RootName => (col(ROOT_NAME), Kind::Str),
        Intrinsic::RootServiceName => (col(ROOT_SERVICE), Kind::Str),
        Intrinsic::NestedSetParent => {
            (when(col(s::PARENT_SPAN_ID).is_null(), lit(-1.0)).otherwise(lit(0.0)).expect("valid case"), Kind::Number)
        }
        Intrinsic::InstrumentationName => (col(s::SCOPE_NAME), Kind::Str),
        Intrinsic::InstrumentationVersion => (col(s::SCOPE_VERSION), Kind::Str),
        Intrinsic::SpanId | Intrinsic::ParentId | Intrinsic::TraceId => {
            return Err(unsupported("compare ids with = only, e.g. { span:id = \"0102030405060708\" }"));
        }
        Intrinsic::EventName | Intrinsic::LinkTraceId | Intrinsic::LinkSpanId => {
            return Err(unsupported(format!(
                "{} compares with a literal, e.g. {} = \"…\"",
                intrinsic.name(),
                intrinsic.name()
            )));
        }
        Intrinsic::NestedSetLeft | Intrinsic::NestedSetRight => {
            return Err(unsupported(format!("{} can be selected, not compared", intrinsic.name())));
        }
    })
}

fn static_literal(value: &Static) -> Expr {
    match value {
        Static::Str(s) => lit(s.clone()),
        Static::Int(i) => lit(*i as f64),
        Static::Float(f) => lit(*f),
        Static::Duration(d) => lit(*d as f64),
        Static::Bool(b) => lit(*b),
        Static::Status(s) => lit(s.stored()),
        Static::Kind(k) => lit(k.stored()),
        Static::Nil => lit(ScalarValue::Null),
    }
}

/// A field as a number (Float64; null when absent or not a number):
/// durations in nanoseconds, attributes from their `int` or `double`.
pub(crate) fn numeric_value(expr: &FieldExpr) -> Result<Expr, QueryError> {
    let (value, kind) = value(expr, Kind::Number)?;
    if kind != Kind::Number {
        return Err(unsupported(format!("{expr:?} is not a number")));
    }
    Ok(cast(value, DataType::Float64))
}

/// Compiles a filter expression to a boolean DataFusion expression.
pub(crate) fn compile(expr: &FieldExpr) -> Result<Expr, QueryError> {
    match expr {
        FieldExpr::Binary { op: BinaryOp::And, lhs, rhs } => Ok(compile(lhs)?.and(compile(rhs)?)),
        FieldExpr::Binary { op: BinaryOp::Or, lhs, rhs } => Ok(compile(lhs)?.or(compile(rhs)?)),
        FieldExpr::Not(inner) => Ok(not(compile(inner)?)),
        FieldExpr::Binary { op: BinaryOp::Cmp(op), lhs, rhs } => comparison(*op, lhs, rhs),
        FieldExpr::Static(Static::Bool(b)) => Ok(lit(*b)),
        // A bare boolean attribute: `{ span.cache_hit }`
        FieldExpr::Attribute(a) => Ok(attribute_value(a, Kind::Bool)?.is_true()),
        other => Err(unsupported(format!("{other:?} is not a condition"))),
    }
}

/// A value-producing expression and its kind (for arithmetic operands).
fn value(expr: &FieldExpr, hint: Kind) -> Result<(Expr, Kind), QueryError> {
    match expr {
        FieldExpr::Static(s) => Ok((static_literal(s), static_kind(s).unwrap_or(hint))),
        FieldExpr::Intrinsic(i) => intrinsic(*i),
        FieldExpr::Attribute(a) => Ok((attribute_value(a, hint)?, hint)),
        FieldExpr::Negate(inner) => {
            let (e, _) = value(inner, Kind::Number)?;
            Ok((binary_expr(lit(0.0), Operator::Minus, e), Kind::Number))
        }
        FieldExpr::Binary { op, lhs, rhs } => {
            let operator = match op {
                BinaryOp::Add => Operator::Plus,
                BinaryOp::Sub => Operator::Minus,
                BinaryOp::Mul => Operator::Multiply,
                BinaryOp::Div => Operator::Divide,
                BinaryOp::Mod => Operator::Modulo,
                BinaryOp::Pow => {
                    let (l, _) = value(lhs, Kind::Number)?;
                    let (r, _) = value(rhs, Kind::Number)?;
                    return Ok((datafusion::functions::math::expr_fn::power(l, r), Kind::Number));
                }
                _ => return Ok((compile(expr)?, Kind::Bool)),
            };
            let (l, _) = value(lhs, Kind::Number)?;
            let (r, _) = value(rhs, Kind::Number)?;
            Ok((binary_expr(l, operator, r), Kind::Number))
        }
        FieldExpr::Not(_) => Ok((compile(expr)?, Kind::Bool)),
    }
}

/// The kind a comparison between `lhs` and `rhs` is made in.
fn comparison_kind(lhs: &FieldExpr, rhs: &FieldExpr) -> Result<Kind, QueryError> {
    let known = |e: &FieldExpr| match e {
        FieldExpr::Static(s) => static_kind(s),
        FieldExpr::Intrinsic(i) => intrinsic(*i).ok().map(|(_, k)| k),
        FieldExpr::Negate(_) => Some(Kind::Number),
        FieldExpr::Binary {
            op: BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow,
            ..
        } => Some(Kind::Number),
        _ => None,
    };
    Ok(known(rhs).or_else(|| known(lhs)).unwrap_or(Kind::Str))
}

/// An event or link field: the list column and the key of its values.
fn element_field(expr: &FieldExpr) -> Option<(&'static str, String)> {
    Some(match expr {
        FieldExpr::Attribute(Attribute { scope: AttributeScope::Event, name }) => (s::EVENTS, format!("attr:{name}")),
        FieldExpr::Attribute(Attribute { scope: AttributeScope::Link, name }) => (s::LINKS, format!("attr:{name}")),
        FieldExpr::Intrinsic(Intrinsic::EventName) => (s::EVENTS, "name".into()),
        FieldExpr::Intrinsic(Intrinsic::LinkTraceId) => (s::LINKS, "trace_id".into()),
        FieldExpr::Intrinsic(Intrinsic::LinkSpanId) => (s::LINKS, "span_id".into()),
        _ => return None,
    })
}

/// `field op value` over a span's events or links: true when some event
/// (link) has a value that satisfies it (`!= nil`: when some has one).
fn element_comparison(op: CmpOp, (column, key): (&'static str, String), value: &Static) -> Result<Expr, QueryError> {
    use super::element_values::{ValueKind, element_values};
    use datafusion::functions_nested::expr_fn::{array_has, array_length, array_max, array_min, array_remove_all};
    let values = |kind| element_values(kind).call(vec![col(column), lit(key.clone())]);
    let some = |list: Expr| array_length(list).gt(lit(0u64));
    let (kind, literal) = match value {
        Static::Nil => {
            let present =
                some(values(ValueKind::Str)).or(some(values(ValueKind::Number))).or(some(values(ValueKind::Bool)));
            return match op {
                CmpOp::Eq => Ok(not(present)),
                CmpOp::Neq => Ok(present),
                _ => Err(unsupported("nil can only be compared with = or !=")),
            };
        }
        Static::Str(text) => {
            // Ids compare as lowercase hex, left-padded as they are stored.
            let text = match key.as_str() {
                "trace_id" => format!("{:0>32}", text.to_lowercase()),
                "span_id" => format!("{:0>16}", text.to_lowercase()),
                _ => text.clone(),
            };
            (ValueKind::Str, lit(text))
        }
        Static::Int(i) => (ValueKind::Number, lit(*i as f64)),
        Static::Float(f) => (ValueKind::Number, lit(*f)),
        Static::Duration(d) => (ValueKind::Number, lit(*d as f64)),
        Static::Bool(b) => (ValueKind::Bool, lit(*b)),
        other => {
            return Err(unsupported(format!(
                "event and link fields compare with strings, numbers or booleans, not {}",
                other.describe()
            )));
        }
    };
    let list = values(kind);
    Ok(match op {
        CmpOp::Eq => array_has(list, literal),
        CmpOp::Neq => some(array_remove_all(list, literal)),
        CmpOp::Gt if kind == ValueKind::Number => array_max(list).gt(literal),
        CmpOp::Gte if kind == ValueKind::Number => array_max(list).gt_eq(literal),
        CmpOp::Lt if kind == ValueKind::Number => array_min(list).lt(literal),
        CmpOp::Lte if kind == ValueKind::Number => array_min(list).lt_eq(literal),
        _ => {
            return Err(unsupported(format!(
                "event and link fields support =, != and (for numbers) < <= > >=, not {}",
                op.symbol()
            )));
        }
    })
}

/// `kind` or `status` equal (or not) to one of their values: the string
/// views compared whole (`short_eq.rs`).
fn enum_comparison(op: CmpOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Option<Expr> {
    let (field, value) = match (lhs, rhs) {
        (FieldExpr::Intrinsic(i), FieldExpr::Static(v)) | (FieldExpr::Static(v), FieldExpr::Intrinsic(i)) => (i, v),
        _ => return None,
    };
    let column = match field {
        Intrinsic::Kind => s::KIND,
        Intrinsic::Status => s::STATUS_CODE,
        _ => return None,
    };
    let text = match value {
        Static::Kind(k) => k.stored(),
        Static::Status(status) => status.stored(),
        _ => return None,
    };
    if text.len() > super::short_eq::MAX_LEN {
        return None;
    }
    let equal = super::short_eq::short_eq(col(column), text);
    match op {
        CmpOp::Eq => Some(equal),
        CmpOp::Neq => Some(not(equal)),
        _ => None,
    }
}

fn comparison(op: CmpOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Result<Expr, QueryError> {
    if let (Some(field), FieldExpr::Static(value)) = (element_field(lhs), rhs) {
        return element_comparison(op, field, value);
    }
    if let (FieldExpr::Static(value), Some(field)) = (lhs, element_field(rhs)) {
        let flipped = match op {
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Gte => CmpOp::Lte,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Lte => CmpOp::Gte,
            other => other,
        };
        return element_comparison(flipped, field, value);
    }
    if let Some(compared) = enum_comparison(op, lhs, rhs) {
        return Ok(compared);
    }
    // Existence: `x = nil` / `x != nil`.
    if let (FieldExpr::Attribute(a), FieldExpr::Static(Static::Nil))
    | (FieldExpr::Static(Static::Nil), FieldExpr::Attribute(a)) = (lhs, rhs)
    {
        let present = attribute_struct(a)?.is_not_null();
        return match op {
            CmpOp::Eq => Ok(not(present)),
            CmpOp::Neq => Ok(present),
            _ => Err(unsupported("nil can only be compared with = or !=")),
        };
    }
    let kind = comparison_kind(lhs, rhs)?;
    let (l, _) = value(lhs, kind)?;
    let (r, _) = value(rhs, kind)?;
    if matches!(op, CmpOp::Regex | CmpOp::NotRegex) {
        let matched = regexp_like(l.clone(), r, None);
        return Ok(match op {
            CmpOp::Regex => matched,
            // A missing value does not match !~ either.
            _ => l.is_not_null().and(not(matched)),
        });
    }
    let operator = match op {
        CmpOp::Eq => Operator::Eq,
        CmpOp::Neq => Operator::NotEq,
        CmpOp::Gt => Operator::Gt,
        CmpOp::Gte => Operator::GtEq,
        CmpOp::Lt => Operator::Lt,
        CmpOp::Lte => Operator::LtEq,
        CmpOp::Regex | CmpOp::NotRegex => unreachable!("handled above"),
    };
    Ok(binary_expr(l, operator, r))
}
