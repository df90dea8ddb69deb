use super::*;

const FRONT: u32 = 1;
const LEAF: u32 = 2;
const DB: u32 = 3;
const PEER: u32 = 4;

fn span(id: u64, parent: Option<u64>, service: u32, kind: Kind, start: i64, end: i64) -> SpanRow {
    SpanRow { id, parent, service, name: 10 + service, kind, start, end, error: false, peer_service: None, weight: 1.0 }
}

fn root(start: i64, end: i64) -> SpanRow {
    span(1, None, FRONT, Kind::Server, start, end)
}

fn analyze_root(spans: &[SpanRow], kinds: ChildKinds) -> Parent {
    let mut parents = analyze(spans, kinds, EdgeBy::Child, |s| s.id == 1);
    assert_eq!(parents.len(), 1);
    parents.remove(0)
}

#[test]
fn parallel_calls_split_the_parent_and_the_last_finisher_is_critical() {
    let spans =
        [root(0, 100), span(2, Some(1), LEAF, Kind::Client, 10, 50), span(3, Some(1), LEAF, Kind::Client, 10, 80)];
    let p = analyze_root(&spans, ChildKinds::Outbound);
    assert_eq!((p.duration, p.before, p.in_flight, p.after), (100, 10, 70, 20));
    assert_eq!(p.max_call(), Some(70));
    assert_eq!(p.busy, 110);
    assert_eq!(p.calls.iter().map(|c| c.critical).collect::<Vec<_>>(), vec![0, 70]);
    assert_eq!(p.last_finisher, Some((LEAF, 12)));
    assert_eq!(p.overflow, 0);
}

#[test]
fn sequential_calls_are_all_on_the_critical_path() {
    let spans = [
        root(0, 100),
        span(2, Some(1), LEAF, Kind::Client, 0, 30),
        span(3, Some(1), LEAF, Kind::Client, 30, 60),
        span(4, Some(1), DB, Kind::Client, 60, 100),
    ];
    let p = analyze_root(&spans, ChildKinds::Outbound);
    assert_eq!(p.calls.iter().map(|c| c.critical).collect::<Vec<_>>(), vec![30, 30, 40]);
    assert_eq!(p.busy, p.in_flight, "parallelism ratio 1");
    assert_eq!(p.last_finisher, Some((DB, 13)));
}

#[test]
fn children_outliving_the_parent_are_clamped_and_counted() {
    let spans = [root(0, 100), span(2, Some(1), LEAF, Kind::Client, -10, 120)];
    let p = analyze_root(&spans, ChildKinds::Outbound);
    assert_eq!(p.overflow, 1);
    assert_eq!(p.calls[0].duration, 130, "the call's own duration is kept");
    assert_eq!(p.calls[0].critical, 100, "its critical-path time is clamped");
    assert_eq!((p.before, p.in_flight, p.after), (0, 100, 0));
}

#[test]
fn async_producer_calls_count_but_stay_off_the_critical_path() {
    let spans =
        [root(0, 100), span(2, Some(1), LEAF, Kind::Producer, 90, 200), span(3, Some(1), DB, Kind::Client, 10, 60)];
    let p = analyze_root(&spans, ChildKinds::Outbound);
    assert_eq!(p.calls.len(), 2);
    assert_eq!(p.overflow, 1);
    assert_eq!(p.last_finisher, Some((DB, 13)));
    assert_eq!(p.calls.iter().map(|c| c.critical).collect::<Vec<_>>(), vec![0, 50]);
}

#[test]
fn parents_without_calls_are_kept_and_kinds_filter_children() {
    let spans = [root(0, 100), span(2, Some(1), LEAF, Kind::Internal, 10, 20)];
    let p = analyze_root(&spans, ChildKinds::Outbound);
    assert!(p.calls.is_empty());
    assert_eq!((p.before, p.in_flight, p.after, p.max_call()), (100, 0, 0, None));
    let p = analyze_root(&spans, ChildKinds::All);
    assert_eq!(p.calls.len(), 1);
    // A missing parent (a child pointing at an unknown span) is no parent at all.
    let orphan = [span(5, Some(99), LEAF, Kind::Client, 0, 1)];
    assert!(analyze(&orphan, ChildKinds::Outbound, EdgeBy::Child, |s| s.id == 99).is_empty());
}

#[test]
fn edges_resolve_to_the_callee_server_then_peer_service() {
    let mut with_peer = span(3, Some(1), LEAF, Kind::Client, 0, 10);
    with_peer.peer_service = Some(PEER);
    let spans = [
        root(0, 100),
        span(2, Some(1), LEAF, Kind::Client, 0, 10),
        span(20, Some(2), DB, Kind::Server, 1, 9),
        with_peer,
        span(4, Some(1), LEAF, Kind::Client, 0, 10),
    ];
    let parents = analyze(&spans, ChildKinds::Outbound, EdgeBy::Server, |s| s.id == 1);
    let services: Vec<u32> = parents[0].calls.iter().map(|c| c.edge.0).collect();
    assert_eq!(services, vec![DB, PEER, LEAF]);
    let parents = analyze(&spans, ChildKinds::Outbound, EdgeBy::Child, |s| s.id == 1);
    assert!(parents[0].calls.iter().all(|c| c.edge.0 == LEAF));
}

#[test]
fn many_parents_find_the_same_children_as_one_parent_alone() {
    // A root calling 12 servers, each calling 2 leaves, spans out of order:
    // every span a parent (children found through the sorted list) against
    // one parent at a time (found by scanning the trace).
    let mut spans = vec![root(0, 1_000)];
    for s in 0..12u64 {
        let server = 100 + s;
        spans.push(span(server, Some(1), LEAF, Kind::Client, 10 * s as i64, 500 + s as i64));
        for l in 0..2u64 {
            spans.push(span(1_000 + 10 * s + l, Some(server), DB, Kind::Client, 20 * s as i64, 400 + l as i64));
        }
    }
    spans.reverse();
    let all = analyze(&spans, ChildKinds::Outbound, EdgeBy::Child, |_| true);
    assert_eq!(all.len(), spans.len());
    for (parent, span) in all.iter().zip(&spans) {
        let alone = analyze(&spans, ChildKinds::Outbound, EdgeBy::Child, |s| s.id == span.id);
        assert_eq!(alone, vec![parent.clone()], "parent {}", span.id);
    }
    let root = all.iter().zip(&spans).find(|(_, s)| s.id == 1).unwrap().0;
    assert_eq!(root.calls.len(), 12);
}
