//! One trace at a time: each parent span's outbound calls, as observations.
//!
//! For a parent P with start a_P and end e_P, its calls are its direct
//! children (by `parent_span_id`) of the chosen kinds. Children are clamped
//! to [a_P, e_P] (as Jaeger's critical path does) and counted as overflowing
//! when they had to be. The critical path is Jaeger's last-finishing-child
//! walk within one parent: take the child that ends last, then the child that
//! ends last before that one started, and so on; producer (async) calls are
//! never on it.

pub(crate) use crate::traceql::ast::KindValue as Kind;

/// One span, as the analysis needs it; names are interned ids.
#[derive(Debug, Clone)]
pub(crate) struct SpanRow {
    pub(crate) id: u64,
    pub(crate) parent: Option<u64>,
    pub(crate) service: u32,
    pub(crate) name: u32,
    pub(crate) kind: Kind,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) error: bool,
    /// `peer.service` span attribute, when read.
    pub(crate) peer_service: Option<u32>,
    /// The span's adjusted count under probability sampling (1 without a
    /// threshold in its tracestate): see [`adjusted_count`].
    pub(crate) weight: f64,
}

/// The adjusted count of a span from its W3C tracestate: OpenTelemetry's
/// probability sampling writes the rejection threshold `th` in the `ot`
/// entry (`ot=th:c` keeps a quarter of traces: each stands for 4). With no
/// threshold, or one that does not parse, 1. `th` is up to 14 hex digits,
/// trailing zeros left out: T = th·16^(14−len), kept with probability
/// (2^56 − T)/2^56.
pub(crate) fn adjusted_count(tracestate: &str) -> f64 {
    let Some(ot) = tracestate.split(',').find_map(|member| member.trim().strip_prefix("ot=")) else { return 1.0 };
    let Some(th) = ot.split(';').find_map(|field| field.strip_prefix("th:")) else { return 1.0 };
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return 1.0;
    }
    let threshold = u64::from_str_radix(th, 16).expect("hex digits") << (4 * (14 - th.len()));
    let kept = (1u64 << 56) - threshold;
    (1u64 << 56) as f64 / kept as f64
}

/// Which children count as calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ChildKinds {
    /// `client` and `producer` children only.
    Outbound,
    /// Every direct child.
    All,
}

/// What names an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum EdgeBy {
    /// The child span's (service, operation).
    Child,
    /// The callee: the service of the child's `server` child, else the child's
    /// `peer.service`, else the child's service; with the child's operation.
    Server,
}

/// An edge: (callee service, operation) as interned ids.
pub(crate) type Edge = (u32, u32);

/// One call of a parent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) edge: Edge,
    /// Its own duration, unclamped.
    pub(crate) duration: i64,
    pub(crate) error: bool,
    /// Time of this call on the parent's critical path.
    pub(crate) critical: i64,
}

/// One parent span and its calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parent {
    /// (service, operation) of the parent.
    pub(crate) op: (u32, u32),
    pub(crate) duration: i64,
    pub(crate) calls: Vec<Call>,
    /// Parent time before the first call started (clamped).
    pub(crate) before: i64,
    /// Time from the first call's start to the last call's end (clamped).
    pub(crate) in_flight: i64,
    /// Parent time after the last call ended (clamped).
    pub(crate) after: i64,
    /// Calls that started before or ended after the parent.
    pub(crate) overflow: u32,
    /// The call that finished last (of those on the critical path).
    pub(crate) last_finisher: Option<Edge>,
    /// The parent span's adjusted count (see [`adjusted_count`]).
    pub(crate) weight: f64,
    /// Sum of clamped call durations.
    pub(crate) busy: i64,
}

impl Parent {
    /// Slowest call's duration, if any.
    pub(crate) fn max_call(&self) -> Option<i64> {
        self.calls.iter().map(|c| c.duration).max()
    }
}

/// Buffers one analyzer reuses from trace to trace and parent to parent,
/// so that analyzing a trace allocates nothing once they have grown.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The parents' indexes in the trace.
    parents: Vec<u32>,
    /// (parent span id, child's index in the trace), sorted.
    children: Vec<(u64, u32)>,
    calls: Vec<u32>,
    clamped: Vec<(i64, i64)>,
    /// Synchronous calls latest-ending first: (end, start, index), reversed.
    order: Vec<std::cmp::Reverse<(i64, i64, std::cmp::Reverse<u32>)>>,
    parent: Parent,
}

/// Parents at most this many children lookups a trace's spans are scanned
/// for directly; past it they are sorted by parent once.
const SCANNED_LOOKUPS: usize = 8;

/// Finds a span's children: by scanning the trace for a few lookups, by a
/// sorted list for many.
struct Children<'a> {
    spans: &'a [SpanRow],
    sorted: Option<&'a [(u64, u32)]>,
}

impl Children<'_> {
    /// The children of span `id`, in trace order: indexes into the trace.
    fn of(&self, id: u64) -> impl Iterator<Item = usize> + '_ {
        let (scanned, sorted) = match self.sorted {
            None => {
                (Some(self.spans.iter().enumerate().filter(move |(_, s)| s.parent == Some(id)).map(|(i, _)| i)), None)
            }
            Some(sorted) => {
                let from = sorted.partition_point(|&(parent, _)| parent < id);
                (
                    None,
                    Some(sorted[from..].iter().take_while(move |&&(parent, _)| parent == id).map(|&(_, i)| i as usize)),
                )
            }
        };
        scanned.into_iter().flatten().chain(sorted.into_iter().flatten())
    }
}

/// Analyzes one trace's spans; `is_parent` picks the parent spans, and
/// `each` receives each parent in turn (the same buffer, refilled).
pub(crate) fn analyze_with(
    spans: &[SpanRow],
    kinds: ChildKinds,
    edge_by: EdgeBy,
    mut is_parent: impl FnMut(&SpanRow) -> bool,
    scratch: &mut Scratch,
    mut each: impl FnMut(&Parent),
) {
    let Scratch { parents, children, calls, clamped, order, parent } = scratch;
    parents.clear();
    parents.extend(spans.iter().enumerate().filter(|(_, s)| is_parent(s)).map(|(i, _)| i as u32));
    if parents.is_empty() {
        return;
    }
    // A parent's lookup, and with edges named by the server its calls' too.
    let sorted = match edge_by == EdgeBy::Child && parents.len() <= SCANNED_LOOKUPS {
        true => None,
        false => {
            children.clear();
            children.extend(spans.iter().enumerate().filter_map(|(i, s)| s.parent.map(|p| (p, i as u32))));
            children.sort_unstable();
            Some(children.as_slice())
        }
    };
    let children = Children { spans, sorted };
    let counts = |kind: Kind| match kinds {
        ChildKinds::Outbound => matches!(kind, Kind::Client | Kind::Producer),
        ChildKinds::All => true,
    };
    for span in parents.iter().map(|&i| &spans[i as usize]) {
        calls.clear();
        calls.extend(children.of(span.id).filter(|&i| counts(spans[i].kind)).map(|i| i as u32));
        let edge_of = |call: &SpanRow| -> Edge {
            let service = match edge_by {
                EdgeBy::Child => call.service,
                EdgeBy::Server => children
                    .of(call.id)
                    .map(|i| &spans[i])
                    .find(|g| g.kind == Kind::Server)
                    .map(|g| g.service)
                    .or(call.peer_service)
                    .unwrap_or(call.service),
            };
            (service, call.name)
        };
        fill_parent(parent, span, spans, calls, clamped, order, edge_of);
        each(parent);
    }
}

/// Analyzes one trace's spans; `is_parent` picks the parent spans.
#[cfg(test)]
pub(crate) fn analyze(
    spans: &[SpanRow],
    kinds: ChildKinds,
    edge_by: EdgeBy,
    is_parent: impl FnMut(&SpanRow) -> bool,
) -> Vec<Parent> {
    let mut parents = Vec::new();
    analyze_with(spans, kinds, edge_by, is_parent, &mut Scratch::default(), |p| parents.push(p.clone()));
    parents
}

/// Refills `out` with parent `span` and its `calls` (indexes into `spans`).
fn fill_parent(
    out: &mut Parent,
    span: &SpanRow,
    spans: &[SpanRow],
    calls: &[u32],
    clamped: &mut Vec<(i64, i64)>,
    order: &mut Vec<std::cmp::Reverse<(i64, i64, std::cmp::Reverse<u32>)>>,
    edge_of: impl Fn(&SpanRow) -> Edge,
) {
    let (a, e) = (span.start, span.end.max(span.start));
    let call = |i: u32| &spans[i as usize];
    let clamp = |c: &SpanRow| (c.start.clamp(a, e), c.end.clamp(a, e).max(c.start.clamp(a, e)));
    out.calls.clear();
    out.calls.extend(calls.iter().map(|&i| {
        let c = call(i);
        Call { edge: edge_of(c), duration: (c.end - c.start).max(0), error: c.error, critical: 0 }
    }));
    let overflow = calls.iter().map(|&i| call(i)).filter(|c| c.start < a || c.end > e).count() as u32;
    clamped.clear();
    clamped.extend(calls.iter().map(|&i| clamp(call(i))));
    let first = clamped.iter().map(|c| c.0).min();
    let last = clamped.iter().map(|c| c.1).max();
    let (before, in_flight, after) = match (first, last) {
        (Some(first), Some(last)) => (first - a, last - first, e - last),
        _ => (e - a, 0, 0),
    };
    let busy = clamped.iter().map(|(s, t)| t - s).sum();

    // Jaeger's walk, over synchronous calls only: latest end first, then
    // latest start, then first in the trace.
    use std::cmp::Reverse;
    order.clear();
    order.extend(
        (0..calls.len() as u32)
            .filter(|&i| call(calls[i as usize]).kind != Kind::Producer)
            .map(|i| Reverse((clamped[i as usize].1, clamped[i as usize].0, Reverse(i)))),
    );
    order.sort_unstable();
    let last_finisher = order.first().map(|&Reverse((.., Reverse(i)))| out.calls[i as usize].edge);
    let mut cursor = e;
    for &Reverse((end, start, Reverse(i))) in order.iter() {
        if end <= cursor && end > start {
            out.calls[i as usize].critical = end - start;
            cursor = start;
        }
    }
    out.op = (span.service, span.name);
    out.duration = e - a;
    out.before = before;
    out.in_flight = in_flight;
    out.after = after;
    out.overflow = overflow;
    out.last_finisher = last_finisher;
    out.busy = busy;
    out.weight = span.weight;
}

#[cfg(test)]
mod tests;
