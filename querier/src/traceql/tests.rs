use super::ast::*;
use super::parse;

fn filter(query: &str) -> FieldExpr {
    match parse(query).unwrap().spansets {
        SpansetExpr::Filter(Some(e)) => e,
        other => panic!("{other:?}"),
    }
}

fn attr(scope: AttributeScope, name: &str) -> FieldExpr {
    FieldExpr::Attribute(Attribute { scope, name: name.into() })
}

fn cmp(op: CmpOp, lhs: FieldExpr, rhs: FieldExpr) -> FieldExpr {
    FieldExpr::Binary { op: BinaryOp::Cmp(op), lhs: Box::new(lhs), rhs: Box::new(rhs) }
}

#[test]
fn parses_what_grafana_and_people_write() {
    let valid = [
        "{}",
        "{ }",
        r#"{ resource.service.name = "frontend" }"#,
        r#"{ span.http.status_code >= 500 && status = error }"#,
        r#"{ .http.method = "GET" || name =~ "GET .*" }"#,
        r#"{ span."a b" != "x" }"#,
        "{ duration > 1.5s && duration < 1h2m }",
        "{ kind = server && traceDuration > 250ms }",
        "{ rootName = \"GET /\" && rootServiceName = \"shop\" }",
        "{ span:name = \"x\" && trace:duration > 1s && span:kind = client && span:status = ok }",
        "{ .foo = nil }",
        "{ .foo != nil }",
        "{ !(.a = 1) && -(.b) < -2 }",
        "{ .n + 1 > 2 * 3 ^ 2 }",
        "{ .x = 1 } && { .y = 2 }",
        "{ .x = 1 } || { .y = 2 }",
        "{ .x = 1 } > { .y = 2 }",
        "{ .x = 1 } >> { .y = 2 } ~ { .z = 3 }",
        "({ .x = 1 } < { .y = 2 }) << {}",
        "{ status = error } | count() > 2",
        "{ } | avg(duration) > 20ms",
        "{ } | min(duration) >= 1ms | max(span.size) < 3.5",
        "{ } | sum(duration) > 1s",
        "{ } | select(span.http.url, duration)",
        "{ } | by(resource.service.name) | count() > 1",
        "{ } | coalesce()",
        "{ nestedSetParent < 0 }",
        "{ .a = `raw \\ string` }",
        "{ resource.k8s.pod-name = \"x\" }",
        "{ event.exception.type = \"Timeout\" && event:name = \"exception\" }",
    ];
    for query in valid {
        parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    }
}

#[test]
fn builds_the_expected_tree() {
    assert_eq!(
        filter(r#"{ resource.service.name = "frontend" && duration > 1.5s }"#),
        FieldExpr::Binary {
            op: BinaryOp::And,
            lhs: Box::new(cmp(
                CmpOp::Eq,
                attr(AttributeScope::Resource, "service.name"),
                FieldExpr::Static(Static::Str("frontend".into()))
            )),
            rhs: Box::new(cmp(
                CmpOp::Gt,
                FieldExpr::Intrinsic(Intrinsic::Duration),
                FieldExpr::Static(Static::Duration(1_500_000_000))
            )),
        }
    );
    assert_eq!(
        filter("{ .a = 1 || .b = 2 && .c = 3 }"),
        FieldExpr::Binary {
            op: BinaryOp::Or,
            lhs: Box::new(cmp(CmpOp::Eq, attr(AttributeScope::Unscoped, "a"), FieldExpr::Static(Static::Int(1)))),
            rhs: Box::new(FieldExpr::Binary {
                op: BinaryOp::And,
                lhs: Box::new(cmp(CmpOp::Eq, attr(AttributeScope::Unscoped, "b"), FieldExpr::Static(Static::Int(2)))),
                rhs: Box::new(cmp(CmpOp::Eq, attr(AttributeScope::Unscoped, "c"), FieldExpr::Static(Static::Int(3)))),
            }),
        }
    );
    assert_eq!(
        filter("{ duration > 1h2m3s }"),
        cmp(
            CmpOp::Gt,
            FieldExpr::Intrinsic(Intrinsic::Duration),
            FieldExpr::Static(Static::Duration(3_723_000_000_000))
        )
    );
    assert_eq!(
        filter("{ span.\"a b\" = -2 }"),
        cmp(CmpOp::Eq, attr(AttributeScope::Span, "a b"), FieldExpr::Static(Static::Int(-2)))
    );
    // Structural operators are left-associative, below && and ||.
    let q = parse("{ .a = 1 } > { .b = 2 } && { .c = 3 }").unwrap();
    match q.spansets {
        SpansetExpr::Binary { op: SpansetOp::And, lhs, .. } => {
            assert!(matches!(*lhs, SpansetExpr::Binary { op: SpansetOp::Child, .. }))
        }
        other => panic!("{other:?}"),
    }
    let q = parse("{ } | count() > 2 | by(resource.service.name)").unwrap();
    assert_eq!(q.stages[0], Stage::Scalar { aggregate: Aggregate::Count, op: CmpOp::Gt, value: Static::Int(2) });
    assert_eq!(q.stages[1], Stage::By(vec![attr(AttributeScope::Resource, "service.name")]));
}

#[test]
fn errors_name_the_position() {
    let cases = [
        ("{ .a = }", 7, "unexpected '}'"),
        ("{ .a = 1", 8, "expected '}' to close the spanset filter"),
        ("{ foo = 1 }", 2, "unknown identifier \"foo\""),
        ("{ .a = \"x }", 7, "unterminated string"),
        ("{ .a =~ \"(\" }", 5, "invalid regular expression"),
        ("{ duration > 5parsecs }", 13, "unknown duration unit"),
        ("{ span:bogus = 1 }", 2, "unknown intrinsic span:bogus"),
        (".a = 1", 0, "expected a spanset filter"),
        ("{ .a = 1 } | rate()", 13, "metrics function"),
        ("{ .a = 1 } | frobnicate()", 13, "unknown pipeline function"),
        ("{ .a = 1 } extra", 11, "unexpected \"extra\""),
        ("{ . = 1 }", 2, "attribute name expected"),
        ("{ .a = 1 } & { }", 11, "a lone '&'"),
        ("{ .a # 1 }", 5, "unexpected character '#'"),
    ];
    for (query, offset, message) in cases {
        let error = parse(query).expect_err(query);
        assert_eq!(error.offset, offset, "{query}: {error}");
        assert!(error.message.contains(message), "{query}: {error}");
        assert!(error.to_string().starts_with(&format!("parse error at column {}", offset + 1)));
    }
}

/// Queries at the limits parse; one step beyond answers an error naming the
/// limit; far beyond (what used to overflow the stack) errors just the same.
#[test]
fn nesting_and_operator_limits_are_errors_not_overflows() {
    use super::parser::{MAX_NESTING, MAX_OPERATORS, MAX_TOKENS};
    let nested_parens = |n: usize| format!("{}{{ .a = 1 }}{}", "(".repeat(n), ")".repeat(n));
    let nested_not = |n: usize| format!("{{ {}true }}", "!".repeat(n));
    let nested_field = |n: usize| format!("{{ {}.a = 1{} }}", "(".repeat(n), ")".repeat(n));
    let and_chain = |n: usize| format!("{{ {} }}", vec![".a = 1"; n].join(" && "));
    let spanset_or = |n: usize| vec!["{}"; n].join(" || ");
    let power = |n: usize| format!("{{ .a = {} }}", vec!["2"; n].join(" ^ "));
    // Within the limits (the outer filter and spanset take two levels).
    parse(&nested_parens(MAX_NESTING - 2)).unwrap();
    parse(&nested_not(MAX_NESTING - 3)).unwrap();
    parse(&and_chain(MAX_OPERATORS / 2)).unwrap();
    parse(&spanset_or(MAX_OPERATORS)).unwrap();
    for (query, limit) in [
        (nested_parens(MAX_NESTING), "levels"),
        (nested_not(MAX_NESTING), "levels"),
        (nested_field(MAX_NESTING), "levels"),
        (power(MAX_NESTING + 1), "levels"),
        (and_chain(MAX_OPERATORS), "operators"),
        (spanset_or(MAX_OPERATORS + 2), "operators"),
        (nested_parens(4000), "levels"),
        (nested_not(4000), "levels"),
        (nested_parens(100_000), "tokens"),
        (nested_not(100_000), "tokens"),
        (spanset_or(100_000), "tokens"),
        (and_chain(100_000), "tokens"),
        (format!("{{}} | select({})", vec![".a"; MAX_TOKENS].join(", ")), "tokens"),
    ] {
        let error = parse(&query).expect_err(&query[..query.len().min(60)]).to_string();
        assert!(error.contains("limit of") && error.contains(limit), "{error}");
    }
}

mod fuzz {
    use proptest::prelude::*;

    use super::super::parse;

    /// Pieces of TraceQL, so that random sequences get deep into the parser.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "(",
        ")",
        "!",
        "-",
        "&&",
        "||",
        ">",
        ">>",
        "<",
        "<<",
        "~",
        "=",
        "!=",
        "=~",
        "!~",
        "^",
        "+",
        "*",
        "/",
        "%",
        "|",
        ",",
        ".a",
        "span.b",
        "resource.service.name",
        "\"x\"",
        "1",
        "1.5",
        "10ms",
        "true",
        "nil",
        "status",
        "error",
        "kind",
        "server",
        "duration",
        "name",
        "count()",
        "avg(",
        "by(",
        "select(",
        "coalesce()",
        "with(",
        "rate()",
        "span:id",
        "trace:id",
        "event:name",
        "&>",
        "!>",
        "&>>",
        "!~",
        "quantile_over_time(duration, 0.5",
        "histogram_over_time(",
        "compare({",
        "count_over_time()",
        "topk(2)",
        "by(resource.service.name)",
        "sample=true)",
        "nestedSetLeft",
        "link:traceID",
        "event.x",
        " ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random token soup never panics (it parses or names an error).
        #[test]
        fn random_queries_never_panic(pieces in prop::collection::vec(prop::sample::select(PIECES), 0..200)) {
            let query = pieces.concat();
            let _ = parse(&query);
            let _ = crate::traceql::parse_metrics(&query);
        }

        /// Arbitrary text, including non-ASCII and control characters.
        #[test]
        fn arbitrary_text_never_panics(query in "\\PC{0,300}") {
            let _ = parse(&query);
            let _ = crate::traceql::parse_metrics(&query);
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// A random piece repeated thousands of times (deep or long input)
        /// answers at once with an error or a query, never an overflow.
        #[test]
        fn repeated_pieces_never_overflow(piece in prop::sample::select(PIECES), n in 1000usize..20_000) {
            let _ = parse(&piece.repeat(n));
            let _ = parse(&format!("{{ {} }}", piece.repeat(n)));
            let _ = crate::traceql::parse_metrics(&format!("{{ }} | rate() by({})", piece.repeat(n)));
        }
    }
}

#[test]
fn type_mismatches_are_errors_with_a_position() {
    for (query, column, expected) in [
        ("{ status = 5 }", 10, "status compares with a status"),
        ("{ kind = 5 }", 8, "kind compares with a span kind"),
        ("{ duration = \"x\" }", 12, "duration compares with a duration"),
        ("{ 5 = status }", 5, "status compares with a status"),
        ("{ name = true }", 8, "name compares with a string"),
        ("{ status = \"error\" }", 10, "not the string"),
    ] {
        let error = parse(query).expect_err(query);
        assert_eq!(error.offset + 1, column, "{query}: {error}");
        assert!(error.message.contains(expected), "{query}: {error}");
    }
    for fine in
        ["{ status = error }", "{ kind != server }", "{ duration > 5 }", "{ duration > 1.5s }", "{ name = nil }"]
    {
        parse(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
}

#[test]
fn parses_the_metrics_queries_drilldown_sends() {
    use crate::traceql::parse_metrics;
    for q in [
        "{nestedSetParent<0 && true} | rate()  with(sample=true)",
        "{nestedSetParent<0 && true && status=error} | rate()  with(sample=true)",
        "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)",
        "{nestedSetParent<0 && true && resource.service.name != nil} | rate() by(resource.service.name)",
        "{nestedSetParent<0 && true && span.http.route != nil} | quantile_over_time(duration, 0.5, 0.9, 0.99) by(span.http.route)",
        "{nestedSetParent<0 && true} | compare({status = error}, 10)",
        "{nestedSetParent<0 && true} | compare({duration >= 100ms && duration <= 2s}, 10, 1700000000000000000, 1700000600000000000)",
        "{nestedSetParent < 0 && status = error} | count_over_time() by (resource.service.name)",
        "{} | rate()",
        "{ kind = server } | avg_over_time(duration) by(name) | topk(3)",
        "{ } | max_over_time(span.http.response.size) > 100 with(exemplars=false)",
        "{ span.db.system.name != \"\" } | sum_over_time(duration) | bottomk(2)",
    ] {
        parse_metrics(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    let parsed = parse_metrics(
        "{ kind = server } | quantile_over_time(duration, 0.5, 0.99) by(resource.service.name) with(sample=0.1)",
    )
    .unwrap();
    assert_eq!(
        parsed.function,
        MetricsFunction::QuantileOverTime(FieldExpr::Intrinsic(Intrinsic::Duration), vec![0.5, 0.99])
    );
    assert_eq!(parsed.by, vec![attr(AttributeScope::Resource, "service.name")]);
    assert_eq!(parsed.hint("sample"), Some(&Static::Float(0.1)));
    let compare = parse_metrics("{} | compare({status = error}, 5, 10, 20)").unwrap();
    assert!(matches!(compare.function, MetricsFunction::Compare { top: 5, window: Some((10, 20)), .. }));
    let filtered = parse_metrics("{} | rate() > 2ms").unwrap();
    assert_eq!(filtered.second, vec![SecondStage::Filter(CmpOp::Gt, 0.002)]);
}

#[test]
fn bad_metrics_queries_say_what_is_wrong() {
    use crate::traceql::parse_metrics;
    for (q, message) in [
        ("{ }", "not a metrics query"),
        ("{ } | count() > 2", "unknown metrics function \"count\""),
        ("{ } | quantile_over_time(duration, 1.5)", "not between 0 and 1"),
        ("{ } | quantile_over_time(duration)", "at least one quantile"),
        ("{ } | compare({status = error}, 0)", "between 1 and 1000"),
        ("{ } | compare({status = error}, 10, 20, 10)", "end must be after start"),
        ("{ } | compare({status = error}, 10, 20)", "both start and end"),
        ("{ } | compare({status = error}) | topk(2)", "cannot follow compare"),
        ("{ } | rate() by(a, b)", "attributes need a scope"),
        ("{ } | rate() with(sample)", "'=' after the hint name"),
        ("{ } | rate() | topk(0)", "above 0"),
    ] {
        let error = parse_metrics(q).unwrap_err().to_string();
        assert!(error.contains(message), "{q}: {error}");
    }
}

#[test]
fn search_takes_hints() {
    let q = parse("{ status = error } with(most_recent=true)").unwrap();
    assert_eq!(q.hints, vec![Hint { name: "most_recent".into(), value: Static::Bool(true) }]);
}

#[test]
fn union_and_negated_structural_operators() {
    for (query, op) in [
        ("{ .a = 1 } &> { }", SpansetOp::UnionChild),
        ("{ .a = 1 } &< { }", SpansetOp::UnionParent),
        ("{ .a = 1 } &>> { }", SpansetOp::UnionDescendant),
        ("{ .a = 1 } &<< { }", SpansetOp::UnionAncestor),
        ("{ .a = 1 } &~ { }", SpansetOp::UnionSibling),
        ("{ .a = 1 } !> { }", SpansetOp::NotChild),
        ("{ .a = 1 } !< { }", SpansetOp::NotParent),
        ("{ .a = 1 } !>> { }", SpansetOp::NotDescendant),
        ("{ .a = 1 } !<< { }", SpansetOp::NotAncestor),
        ("{ .a = 1 } !~ { }", SpansetOp::NotSibling),
    ] {
        match parse(query).unwrap_or_else(|e| panic!("{query}: {e}")).spansets {
            SpansetExpr::Binary { op: got, .. } => assert_eq!(got, op, "{query}"),
            other => panic!("{query}: {other:?}"),
        }
    }
    // Drilldown's structure tab.
    let q = "({ resource.service.name = \"a\" } &>> { kind = server }) || ({ resource.service.name = \"a\" }) \
             | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)";
    parse(q).unwrap_or_else(|e| panic!("{e}"));
}
