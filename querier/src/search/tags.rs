//! `tags=` search (logfmt, Tempo's pre-TraceQL form) as a TraceQL query:
//! every `key=value` must match, as a case-insensitive substring of the
//! attribute's text (or equal to its number).

use crate::error::QueryError;
use crate::traceql::ast::*;

/// Most `key=value` pairs in one `tags=` search (each becomes a condition
/// of one `&&` chain, so this bounds the depth of the query).
pub(crate) const MAX_TAG_PAIRS: usize = 64;

fn pairs(tags: &str) -> Result<Vec<(String, String)>, QueryError> {
    let invalid = |reason: String| QueryError::InvalidParameter { name: "tags", reason };
    let mut out = Vec::new();
    let mut rest = tags.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| invalid(format!("expected key=value at {rest:?}")))?;
        let key = rest[..eq].trim().to_owned();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(invalid(format!("invalid key in {rest:?}")));
        }
        rest = &rest[eq + 1..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(|| invalid("unterminated quoted value".into()))?;
            let value = quoted[..end].to_owned();
            rest = &quoted[end + 1..];
            value
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let value = rest[..end].to_owned();
            rest = &rest[end..];
            value
        };
        out.push((key, value));
        if out.len() > MAX_TAG_PAIRS {
            return Err(invalid(format!("more than the limit of {MAX_TAG_PAIRS} key=value pairs")));
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

fn condition(key: &str, value: &str) -> FieldExpr {
    let regex = |field: FieldExpr| FieldExpr::Binary {
        op: BinaryOp::Cmp(CmpOp::Regex),
        lhs: Box::new(field),
        rhs: Box::new(FieldExpr::Static(Static::Str(format!("(?i){}", regex::escape(value))))),
    };
    match key {
        "name" => regex(FieldExpr::Intrinsic(Intrinsic::Name)),
        "status.code" | "status" => regex(FieldExpr::Intrinsic(Intrinsic::Status)),
        _ => {
            let scope = if key == "service.name" { AttributeScope::Resource } else { AttributeScope::Unscoped };
            let attribute = FieldExpr::Attribute(Attribute { scope, name: key.to_owned() });
            let text = regex(attribute.clone());
            match value.parse::<f64>() {
                Ok(number) => FieldExpr::Binary {
                    op: BinaryOp::Or,
                    lhs: Box::new(text),
                    rhs: Box::new(FieldExpr::Binary {
                        op: BinaryOp::Cmp(CmpOp::Eq),
                        lhs: Box::new(attribute),
                        rhs: Box::new(FieldExpr::Static(Static::Float(number))),
                    }),
                },
                Err(_) => text,
            }
        }
    }
}

/// The TraceQL query equivalent to a `tags=` search.
pub(crate) fn tags_query(tags: &str) -> Result<Query, QueryError> {
    let filter = pairs(tags)?.into_iter().map(|(k, v)| condition(&k, &v)).reduce(|a, b| FieldExpr::Binary {
        op: BinaryOp::And,
        lhs: Box::new(a),
        rhs: Box::new(b),
    });
    Ok(Query { spansets: SpansetExpr::Filter(filter), stages: Vec::new(), hints: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_pairs() {
        assert_eq!(
            pairs(r#"service.name="my shop" http.status_code=500  name=GET"#).unwrap(),
            vec![
                ("service.name".into(), "my shop".into()),
                ("http.status_code".into(), "500".into()),
                ("name".into(), "GET".into())
            ]
        );
        assert!(pairs("novalue").is_err());
        assert!(pairs(r#"a="unterminated"#).is_err());
        assert!(tags_query("").unwrap().spansets == SpansetExpr::Filter(None));
        let many = "a=1 ".repeat(MAX_TAG_PAIRS);
        assert!(pairs(&many).is_ok());
        let error = pairs(&format!("{many} b=2")).unwrap_err().to_string();
        assert!(error.contains("limit of 64"), "{error}");
    }
}
