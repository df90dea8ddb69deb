//! The wire reader against prost as the oracle: every body prost decodes
//! reads to the same span, and every body prost refuses is refused.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};

use super::*;

/// What prost makes of `encoded`, as the builder would see it.
fn through_prost(encoded: &[u8]) -> Option<String> {
    let span = Span::decode(encoded).ok()?;
    let mut view = SpanRef::default();
    view.fill_from(&span);
    Some(format!("{view:?}"))
}

/// What the wire reader makes of it.
fn through_wire(encoded: &[u8]) -> Option<String> {
    let mut view = SpanRef::default();
    match read_span(encoded, &mut view) {
        Ok(()) => Some(format!("{view:?}")),
        Err(Unread::Wire(_)) => None,
        Err(Unread::Overpriced(e)) => panic!("a small span priced too high: {e}"),
    }
}

fn agree(encoded: &[u8]) {
    assert_eq!(through_wire(encoded), through_prost(encoded), "{encoded:02x?}");
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// A span with every field set, and every kind of value.
fn seed() -> Span {
    let nested = Value::KvlistValue(KeyValueList {
        values: vec![kv(
            "a",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(Value::StringValue("x".into())) }, AnyValue::default()],
            }),
        )],
    });
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        trace_state: "k=v".into(),
        parent_span_id: vec![3; 8],
        flags: 0x301,
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_005_000_000,
        attributes: vec![
            kv("s", Value::StringValue("v".into())),
            kv("i", Value::IntValue(-7)),
            kv("d", Value::DoubleValue(2.5)),
            kv("b", Value::BoolValue(true)),
            kv("y", Value::BytesValue(vec![0, 1, 2])),
            kv("n", nested),
            KeyValue { key: "empty".into(), ..Default::default() },
        ],
        dropped_attributes_count: 3,
        events: vec![span::Event {
            time_unix_nano: 1_700_000_000_001_000_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", Value::IntValue(2))],
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 4,
        links: vec![span::Link {
            trace_id: vec![4; 16],
            span_id: vec![5; 8],
            trace_state: "a=b".into(),
            attributes: vec![kv("l", Value::StringValue("w".into()))],
            dropped_attributes_count: 2,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status { code: 2, message: "boom".into() }),
    }
}

#[test]
fn a_span_with_every_field_reads_as_prost_decodes_it() {
    let encoded = seed().encode_to_vec();
    agree(&encoded);
    let mut view = SpanRef::default();
    read_span(&encoded, &mut view).unwrap();
    assert_eq!((view.attributes.len(), view.events.len(), view.links.len()), (7, 1, 1));
    assert!(matches!(view.attributes[5].value, ValueRef::Nested(_)));
}

/// A key, as prost would write it.
fn key(number: u32, wire_type: u32) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(number << 3 | wire_type), &mut out);
    out
}

fn delimited(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = key(number, 2);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

#[test]
fn repeated_and_unusual_encodings_read_as_prost_decodes_them() {
    let base = seed().encode_to_vec();
    let array = AnyValue {
        value: Some(Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::IntValue(1)) }] })),
    }
    .encode_to_vec();
    let int = AnyValue { value: Some(Value::IntValue(9)) }.encode_to_vec();
    let attribute = |values: &[&[u8]]| {
        let mut kv = delimited(1, b"k");
        values.iter().for_each(|v| kv.extend(delimited(2, v)));
        delimited(9, &kv)
    };
    let status = |bytes: &[u8]| delimited(15, bytes);
    let cases: Vec<Vec<u8>> = vec![
        // The last name wins; a second status merges into the first.
        [base.clone(), delimited(5, b"second")].concat(),
        [base.clone(), status(&delimited(2, b"only the message"))].concat(),
        [base.clone(), status(&[0x18, 0x01])].concat(),
        // Values set twice: the last variant wins, nested ones merge.
        [base.clone(), attribute(&[&array, &int])].concat(),
        [base.clone(), attribute(&[&int, &array])].concat(),
        [base.clone(), attribute(&[&array, &array])].concat(),
        [base.clone(), attribute(&[&array, &[]])].concat(),
        // Unknown fields, groups among them, are skipped.
        [base.clone(), delimited(99, b"unknown"), vec![0xab, 0x06, 0x08, 0x01, 0xac, 0x06]].concat(),
        // Wrong wire types for known fields; invalid UTF-8, even overwritten.
        [base.clone(), key(7, 0), vec![1]].concat(),
        [base.clone(), key(1, 0), vec![1]].concat(),
        [delimited(5, &[0xff]), base.clone()].concat(),
        [base.clone(), status(&[0x10, 0x01])].concat(),
        // Truncated, an end of group alone, a varint too long.
        base[..base.len() - 1].to_vec(),
        [base.clone(), vec![0x0c]].concat(),
        [base.clone(), key(6, 0), vec![0xff; 10], vec![0x01]].concat(),
    ];
    for case in &cases {
        agree(case);
    }
}

/// A field of each wire type (varint, fixed64, bytes, fixed32).
fn each_wire_type(number: u32) -> [Vec<u8>; 4] {
    [
        [key(number, 0), vec![0x01]].concat(),
        [key(number, 1), vec![0x01; 8]].concat(),
        delimited(number, b"ab"),
        [key(number, 5), vec![0x01; 4]].concat(),
    ]
}

#[test]
fn every_field_of_every_message_with_every_wire_type_reads_as_prost_decodes_it() {
    let base = seed().encode_to_vec();
    let in_attribute = |field: &[u8]| delimited(9, &[delimited(1, b"k"), field.to_vec()].concat());
    let in_value = |field: &[u8]| in_attribute(&delimited(2, field));
    let mut cases = 0;
    for number in 1..=17 {
        for field in each_wire_type(number) {
            for wrapped in [
                field.clone(),
                delimited(11, &field),
                delimited(13, &field),
                delimited(15, &field),
                in_attribute(&field),
                in_value(&field),
            ] {
                agree(&[base.clone(), wrapped].concat());
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 17 * 4 * 6);
}

#[test]
fn a_span_of_many_tiny_values_is_refused_before_it_is_read_whole() {
    let span = Span { attributes: vec![KeyValue::default(); 100_000], ..seed() };
    let encoded = span.encode_to_vec();
    let mut view = SpanRef::default();
    let Err(Unread::Overpriced(e)) = read_span(&encoded, &mut view) else { panic!("read whole") };
    assert!(e.cost <= MAX_EXPANSION * encoded.len() + ALLOWANCE + ENTRY_COST, "{e}");
    assert!(view.attributes.len() < 100_000 / 3, "{} attributes read", view.attributes.len());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// A valid span with bytes flipped, inserted or cut anywhere reads as
    /// prost decodes it, or is refused as prost refuses it.
    #[test]
    fn mutated_spans_read_as_prost_decodes_them(
        edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0..3u8), 1..6)
    ) {
        let mut body = seed().encode_to_vec();
        crate::decode::mutate(&mut body, edits);
        agree(&body);
    }

    /// Arbitrary bytes too.
    #[test]
    fn arbitrary_bytes_read_as_prost_decodes_them(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        agree(&body);
    }
}
