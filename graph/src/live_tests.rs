//! Tests of the live graph: one data-driven test per inference rule (each run in arrival
//! order, in reverse, and as one batch), windows and trimming, the pairing store's bounds,
//! and the property that arrival order and batching never change the graph.

use proptest::prelude::*;

use crate::test_support::{TestSpan, batch, span, trace_id};
use crate::{GraphConfig, GraphCounters, LiveGraph, Snapshot};

const SECOND: i64 = 1_000_000_000;
/// Arrival time of the spans in the tests: after every span's start.
const NOW: i64 = 100 * SECOND;
const TTL: i64 = 30 * SECOND;
const EVERYTHING: (i64, i64) = (i64::MIN, i64::MAX);

fn whole(graph: &LiveGraph) -> Snapshot {
    graph.snapshot(EVERYTHING.0, EVERYTHING.1)
}

/// One batch per span in the given order, all at `NOW`, then past the TTL.
fn run_one_by_one<'a>(spans: impl Iterator<Item = &'a TestSpan>) -> LiveGraph {
    let mut graph = LiveGraph::new(GraphConfig::default());
    for span in spans {
        graph.ingest(&batch(std::slice::from_ref(span)), NOW);
    }
    graph.advance(NOW + TTL);
    graph
}

fn run(spans: &[TestSpan]) -> LiveGraph {
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(spans), NOW);
    graph.advance(NOW + TTL);
    graph
}

fn render_ms(ms: f64) -> String {
    format!("{ms:.1}ms")
}

/// Edges and loops, one line each; zero-valued extras are left out.
fn render_edges(snapshot: &Snapshot) -> Vec<String> {
    let mut lines: Vec<String> = snapshot
        .edges
        .iter()
        .map(|e| {
            let mut line = format!(
                "{} -> {} {} calls={} errors={} p50={}",
                e.source,
                e.target,
                e.kind.as_str(),
                e.calls,
                e.errors,
                render_ms(e.p50_ms)
            );
            if e.bytes > 0 {
                line += &format!(" bytes={}", e.bytes);
            }
            if e.amplification > 0.0 {
                line += &format!(" amp={:.1}", e.amplification);
            }
            if e.trace_loops > 0 {
                line += &format!(" trace_loops={}", e.trace_loops);
            }
            line
        })
        .collect();
    lines.extend(
        snapshot
            .loops
            .iter()
            .map(|l| format!("loop {} calls={} traces={}", l.id, l.calls, l.trace_loops)),
    );
    lines
}

fn render_nodes(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} {} in={} errors={} p50={}",
                n.id,
                n.kind.as_str(),
                n.calls_in,
                n.errors_in,
                render_ms(n.p50_ms)
            )
        })
        .collect()
}

/// The spans in arrival order, in reverse order and as one batch give `expected`.
fn check(spans: &[TestSpan], expected: &[&str]) {
    let forward = whole(&run_one_by_one(spans.iter()));
    assert_eq!(render_edges(&forward), expected, "in arrival order");
    let reversed = whole(&run_one_by_one(spans.iter().rev()));
    assert_eq!(reversed, forward, "in reverse order");
    assert_eq!(whole(&run(spans)), forward, "as one batch");
}

fn check_nodes(spans: &[TestSpan], expected: &[&str]) {
    assert_eq!(render_nodes(&whole(&run(spans))), expected);
}

fn check_counters(graph: &LiveGraph, expected: GraphCounters) {
    assert_eq!(graph.counters(), expected);
}

// ---- sync ----

#[test]
fn a_client_and_its_server_give_a_sync_edge_in_either_order() {
    check(
        &[
            span(1, 1, None, "SERVER", "gateway").lasting_ms(50),
            span(1, 2, Some(1), "CLIENT", "gateway").lasting_ms(30),
            span(1, 3, Some(2), "SERVER", "orders").lasting_ms(20),
        ],
        &["gateway -> orders sync calls=1 errors=0 p50=30.0ms amp=1.0"],
    );
}

#[test]
fn an_error_on_either_side_makes_the_call_an_error() {
    check(
        &[
            span(1, 1, None, "CLIENT", "gateway").error(),
            span(1, 2, Some(1), "SERVER", "orders"),
            span(2, 1, None, "CLIENT", "gateway"),
            span(2, 2, Some(1), "SERVER", "orders").error(),
            span(3, 1, None, "CLIENT", "gateway"),
            span(3, 2, Some(1), "SERVER", "orders"),
        ],
        &["gateway -> orders sync calls=3 errors=2 p50=10.0ms"],
    );
}

#[test]
fn a_server_under_a_non_client_span_of_another_service_is_called_by_it() {
    check(
        &[
            span(1, 1, None, "INTERNAL", "cron"),
            span(1, 2, Some(1), "SERVER", "reports").lasting_ms(7),
        ],
        &["cron -> reports sync calls=1 errors=0 p50=7.0ms amp=1.0"],
    );
}

#[test]
fn spans_within_one_service_give_no_edge() {
    let spans = [
        span(1, 1, None, "SERVER", "orders"),
        span(1, 2, Some(1), "INTERNAL", "orders"),
        span(1, 3, Some(2), "SERVER", "orders"),
        span(1, 4, Some(3), "INTERNAL", "orders"),
    ];
    check(&spans, &[]);
    check_nodes(&spans, &["orders service in=2 errors=0 p50=10.0ms"]);
}

#[test]
fn a_service_calling_itself_over_the_network_is_a_self_loop() {
    check(
        &[
            span(1, 1, None, "SERVER", "orders"),
            span(1, 2, Some(1), "CLIENT", "orders"),
            span(1, 3, Some(2), "SERVER", "orders"),
        ],
        &[
            "orders -> orders sync calls=1 errors=0 p50=10.0ms amp=1.0 trace_loops=1",
            "loop orders calls=1 traces=1",
        ],
    );
}

// ---- async ----

#[test]
fn producer_queue_consumer_by_parent() {
    check(
        &[
            span(1, 1, None, "SERVER", "orders"),
            span(1, 2, Some(1), "PRODUCER", "orders")
                .at_ms(1_000)
                .lasting_ms(2)
                .attr("messaging.destination.name", "order-events"),
            span(1, 3, Some(2), "CONSUMER", "billing")
                .at_ms(1_050)
                .lasting_ms(5)
                .attr("messaging.destination.name", "order-events"),
        ],
        &[
            "order-events -> billing async calls=1 errors=0 p50=50.0ms amp=1.0",
            "orders -> order-events async calls=1 errors=0 p50=2.0ms amp=1.0",
        ],
    );
}

#[test]
fn a_consumer_without_destination_takes_its_producers_queue() {
    check(
        &[
            span(1, 2, None, "PRODUCER", "orders")
                .at_ms(1_000)
                .attr("messaging.destination.name", "order-events"),
            span(1, 3, Some(2), "CONSUMER", "billing").at_ms(1_040),
        ],
        &[
            "order-events -> billing async calls=1 errors=0 p50=40.0ms amp=1.0",
            "orders -> order-events async calls=1 errors=0 p50=10.0ms",
        ],
    );
}

#[test]
fn a_producer_without_destination_is_joined_to_its_consumer() {
    check(
        &[
            span(1, 2, None, "PRODUCER", "orders").at_ms(1_000),
            span(1, 3, Some(2), "CONSUMER", "billing").at_ms(1_020),
        ],
        &["orders -> billing async calls=1 errors=0 p50=20.0ms amp=1.0"],
    );
}

#[test]
fn a_batch_consumer_finds_its_producers_by_link() {
    check(
        &[
            span(1, 1, None, "SERVER", "orders"),
            span(1, 2, Some(1), "PRODUCER", "orders")
                .at_ms(1_000)
                .attr("messaging.destination.name", "order-events"),
            span(2, 2, None, "PRODUCER", "returns")
                .at_ms(1_010)
                .attr("messaging.destination.name", "order-events"),
            span(3, 2, None, "PRODUCER", "audit").at_ms(1_030),
            // One consumer span for a batch of three messages, in its own trace.
            span(9, 1, None, "CONSUMER", "billing")
                .at_ms(1_100)
                .link(1, 2)
                .link(2, 2)
                .link(3, 2),
        ],
        &[
            "audit -> billing async calls=1 errors=0 p50=70.0ms",
            "order-events -> billing async calls=1 errors=0 p50=100.0ms",
            "orders -> order-events async calls=1 errors=0 p50=10.0ms amp=1.0",
            "returns -> order-events async calls=1 errors=0 p50=10.0ms",
        ],
    );
}

#[test]
fn a_consumer_arriving_before_its_producer_waits_for_it() {
    let producer = span(1, 2, None, "PRODUCER", "orders")
        .at_ms(1_000)
        .attr("messaging.destination.name", "order-events");
    let consumer = span(2, 1, None, "CONSUMER", "billing")
        .at_ms(1_200)
        .attr("messaging.destination.name", "order-events")
        .link(1, 2);
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(std::slice::from_ref(&consumer)), NOW);
    assert_eq!(render_edges(&whole(&graph)), Vec::<String>::new());
    graph.ingest(&batch(std::slice::from_ref(&producer)), NOW + SECOND);
    // Both halves present: the publish -> consume latency is known at once, before the TTL.
    assert_eq!(
        render_edges(&whole(&graph)),
        [
            "order-events -> billing async calls=1 errors=0 p50=200.0ms",
            "orders -> order-events async calls=1 errors=0 p50=10.0ms",
        ]
    );
}

#[test]
fn a_consumer_whose_producer_never_comes_is_placed_at_the_ttl() {
    let consumer = span(2, 1, None, "CONSUMER", "billing")
        .lasting_ms(8)
        .attr("messaging.destination.name", "order-events")
        .link(1, 2);
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(&[consumer]), NOW);
    graph.advance(NOW + TTL - 1);
    assert_eq!(render_edges(&whole(&graph)), Vec::<String>::new());
    graph.advance(NOW + TTL);
    assert_eq!(
        render_edges(&whole(&graph)),
        ["order-events -> billing async calls=1 errors=0 p50=8.0ms"]
    );
    assert_eq!(graph.counters().unpaired_expired, 1);
}

// ---- virtual nodes ----

#[test]
fn a_database_client_is_an_edge_to_a_database_node_at_once() {
    let spans = [
        span(1, 1, None, "SERVER", "orders"),
        span(1, 2, Some(1), "CLIENT", "orders")
            .attr("db.system", "postgresql")
            .attr("db.name", "orders_db")
            .lasting_ms(3),
        span(1, 3, Some(1), "CLIENT", "orders").attr("db.system", "redis"),
    ];
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(&spans), NOW);
    let expected = [
        "orders -> orders_db sync calls=1 errors=0 p50=3.0ms",
        "orders -> redis sync calls=1 errors=0 p50=10.0ms",
    ];
    assert_eq!(render_edges(&whole(&graph)), expected, "before the TTL");
    check(
        &spans,
        &[
            "orders -> orders_db sync calls=1 errors=0 p50=3.0ms amp=1.0",
            "orders -> redis sync calls=1 errors=0 p50=10.0ms amp=1.0",
        ],
    );
    check_nodes(
        &spans,
        &[
            "orders service in=1 errors=0 p50=10.0ms",
            "orders_db database in=1 errors=0 p50=0.0ms",
            "redis database in=1 errors=0 p50=0.0ms",
        ],
    );
}

#[test]
fn a_database_named_like_a_service_gets_a_prefix() {
    check(
        &[
            span(1, 1, None, "SERVER", "orders"),
            span(1, 2, Some(1), "CLIENT", "orders")
                .attr("db.system", "postgresql")
                .attr("db.namespace", "orders"),
        ],
        &["orders -> database:orders sync calls=1 errors=0 p50=10.0ms amp=1.0"],
    );
}

#[test]
fn a_client_whose_server_never_reports_calls_an_external_node_after_the_ttl() {
    let spans = [
        span(1, 1, None, "CLIENT", "checkout").attr("server.address", "api.stripe.com"),
        span(2, 1, None, "CLIENT", "checkout")
            .attr("server.address", "10.0.0.7")
            .attr("peer.service", "fraud-check"),
    ];
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(&spans), NOW);
    graph.advance(NOW + TTL - 1);
    assert_eq!(render_edges(&whole(&graph)), Vec::<String>::new());
    check(
        &spans,
        &[
            "checkout -> api.stripe.com sync calls=1 errors=0 p50=10.0ms",
            "checkout -> fraud-check sync calls=1 errors=0 p50=10.0ms",
        ],
    );
    check_nodes(
        &spans,
        &[
            "api.stripe.com external in=1 errors=0 p50=0.0ms",
            "checkout service in=0 errors=0 p50=0.0ms",
            "fraud-check external in=1 errors=0 p50=0.0ms",
        ],
    );
}

#[test]
fn a_client_with_nothing_to_name_its_peer_is_only_counted() {
    let graph = run(&[span(1, 1, None, "CLIENT", "checkout")]);
    assert_eq!(render_edges(&whole(&graph)), Vec::<String>::new());
    let counters = graph.counters();
    assert_eq!(
        (
            counters.unpaired_expired,
            counters.unplaced,
            counters.virtual_edges
        ),
        (1, 1, 0)
    );
}

#[test]
fn a_queue_named_like_a_service_gets_a_prefix() {
    check(
        &[
            span(1, 1, None, "PRODUCER", "orders").attr("messaging.destination.name", "billing"),
            span(1, 2, Some(1), "CONSUMER", "billing").at_ms(1_010),
        ],
        &[
            "orders -> queue:billing async calls=1 errors=0 p50=10.0ms",
            "queue:billing -> billing async calls=1 errors=0 p50=10.0ms amp=1.0",
        ],
    );
}

// ---- loops, amplification, bytes ----

/// orders -> topic -> billing -> orders in one trace.
fn loop_through_a_queue(trace: u8) -> Vec<TestSpan> {
    vec![
        span(trace, 1, None, "SERVER", "orders"),
        span(trace, 2, Some(1), "PRODUCER", "orders").attr("messaging.destination.name", "topic"),
        span(trace, 3, Some(2), "CONSUMER", "billing").at_ms(1_020),
        span(trace, 4, Some(3), "CLIENT", "billing").at_ms(1_021),
        span(trace, 5, Some(4), "SERVER", "orders").at_ms(1_022),
    ]
}

#[test]
fn a_loop_through_a_queue_is_found_with_its_nodes_in_order() {
    let spans = loop_through_a_queue(1);
    check(
        &spans,
        &[
            "billing -> orders sync calls=1 errors=0 p50=10.0ms amp=1.0 trace_loops=1",
            "orders -> topic async calls=1 errors=0 p50=10.0ms amp=1.0 trace_loops=1",
            "topic -> billing async calls=1 errors=0 p50=20.0ms amp=1.0 trace_loops=1",
            "loop billing -> orders -> topic calls=1 traces=1",
        ],
    );
    let snapshot = whole(&run(&spans));
    assert_eq!(
        snapshot.loops[0]
            .nodes
            .iter()
            .map(|n| &**n)
            .collect::<Vec<_>>(),
        ["billing", "orders", "topic"]
    );
}

/// orders -> topic -> billing -> orders as one flow over two traces: billing's CONSUMER
/// starts a trace of its own, linked to orders' PRODUCER (how Kafka and most SDKs trace it).
fn loop_across_a_link(producer_trace: u8, consumer_trace: u8, at_ms: i64) -> Vec<TestSpan> {
    let (p, c) = (producer_trace, consumer_trace);
    vec![
        span(p, 1, None, "SERVER", "orders").at_ms(at_ms),
        span(p, 2, Some(1), "PRODUCER", "orders")
            .at_ms(at_ms)
            .attr("messaging.destination.name", "topic"),
        span(c, 1, None, "CONSUMER", "billing")
            .link(p, 2)
            .at_ms(at_ms + 20),
        span(c, 2, Some(1), "CLIENT", "billing").at_ms(at_ms + 21),
        span(c, 3, Some(2), "SERVER", "orders").at_ms(at_ms + 22),
    ]
}

/// The spans shuffled and batched in many ways (all within the TTL) give the graph they give
/// as one batch.
fn check_any_order(spans: &[TestSpan]) {
    let reference = whole(&run(spans));
    for shuffle_seed in 0..16 {
        for cuts in [&[][..], &[1], &[2, 7], &[3, 5, 11, 12]] {
            let shuffled = whole(&run_shuffled(spans, shuffle_seed, cuts));
            assert_eq!(shuffled, reference, "seed {shuffle_seed}, cuts {cuts:?}");
        }
    }
}

#[test]
fn a_loop_through_a_queue_whose_consumer_links_to_its_producer_counts_the_flows_that_came_back() {
    let spans = [
        loop_across_a_link(1, 2, 1_000),
        loop_across_a_link(3, 4, 2_000),
        loop_across_a_link(5, 6, 3_000),
    ]
    .concat();
    check(
        &spans,
        &[
            "billing -> orders sync calls=3 errors=0 p50=10.0ms amp=1.0 trace_loops=3",
            "orders -> topic async calls=3 errors=0 p50=10.0ms amp=1.0 trace_loops=3",
            "topic -> billing async calls=3 errors=0 p50=20.0ms trace_loops=3",
            "loop billing -> orders -> topic calls=3 traces=3",
        ],
    );
    check_any_order(&spans);
}

#[test]
fn a_loop_across_traces_is_counted_in_the_bucket_where_it_closed() {
    // The flow starts in one bucket (10 s) and comes back in the next.
    let spans = loop_across_a_link(1, 2, 9_990);
    let graph = run(&spans);
    let came_back = |from, to| -> u64 {
        let snapshot = graph.snapshot(from, to);
        snapshot.loops.iter().map(|l| l.trace_loops).sum()
    };
    assert_eq!(came_back(0, 10 * SECOND), 0);
    assert_eq!(came_back(10 * SECOND, 20 * SECOND), 1);
}

#[test]
fn a_flow_going_round_through_two_queues_and_three_traces_counts_once() {
    // orders -> q1 -> billing -> q2 -> shipping -> orders, each consumer in a trace of its own.
    let spans = [
        span(1, 1, None, "SERVER", "orders"),
        span(1, 2, Some(1), "PRODUCER", "orders").attr("messaging.destination.name", "q1"),
        span(2, 1, None, "CONSUMER", "billing")
            .link(1, 2)
            .at_ms(1_020),
        span(2, 2, Some(1), "PRODUCER", "billing")
            .at_ms(1_021)
            .attr("messaging.destination.name", "q2"),
        span(3, 1, None, "CONSUMER", "shipping")
            .link(2, 2)
            .at_ms(1_040),
        span(3, 2, Some(1), "CLIENT", "shipping").at_ms(1_041),
        span(3, 3, Some(2), "SERVER", "orders").at_ms(1_042),
    ];
    let snapshot = whole(&run(&spans));
    let loops: Vec<String> = snapshot
        .loops
        .iter()
        .map(|l| format!("{} traces={}", l.id, l.trace_loops))
        .collect();
    assert_eq!(
        loops,
        ["billing -> q2 -> shipping -> orders -> q1 traces=1"]
    );
    check_any_order(&spans);
}

#[test]
fn a_batch_consumer_that_calls_back_once_is_one_flow_that_came_back() {
    // Three orders publish; billing takes the three messages in one CONSUMER span and tells
    // orders once: one call went round, so one flow came back, not three.
    let mut spans = Vec::new();
    for trace in 1..=3u8 {
        spans.push(span(trace, 1, None, "SERVER", "orders").at_ms(1_000 + i64::from(trace)));
        spans.push(
            span(trace, 2, Some(1), "PRODUCER", "orders")
                .at_ms(1_000 + i64::from(trace))
                .attr("messaging.destination.name", "topic"),
        );
    }
    spans.extend([
        span(9, 1, None, "CONSUMER", "billing")
            .at_ms(1_050)
            .link(1, 2)
            .link(2, 2)
            .link(3, 2),
        span(9, 2, Some(1), "CLIENT", "billing").at_ms(1_051),
        span(9, 3, Some(2), "SERVER", "orders").at_ms(1_052),
    ]);
    let snapshot = whole(&run(&spans));
    assert_eq!(snapshot.loops.len(), 1);
    assert_eq!(snapshot.loops[0].trace_loops, 1);
    check_any_order(&spans);
}

#[test]
fn a_consumer_trace_idle_before_its_producer_trace_waits_for_its_paths() {
    // The producer's trace gets one more span 20 s later: the consumer's trace is idle for
    // the TTL first, and waits for the producer's trace instead of missing its path.
    let spans = loop_across_a_link(1, 2, 1_000);
    let late = span(1, 9, Some(1), "INTERNAL", "orders").at_ms(1_030);
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(&spans), NOW);
    graph.ingest(&batch(std::slice::from_ref(&late)), NOW + 20 * SECOND);
    graph.advance(NOW + TTL);
    assert_eq!(
        graph.counters().pending_traces,
        2,
        "the consumer's trace waits"
    );
    graph.advance(NOW + 20 * SECOND + TTL);
    assert_eq!(graph.counters().pending_traces, 0);
    let snapshot = whole(&graph);
    assert_eq!(snapshot.loops[0].trace_loops, 1);
    assert_eq!(snapshot, whole(&run(&[spans, vec![late]].concat())));
}

#[test]
fn links_pointing_both_ways_between_two_traces_do_not_make_them_wait_for_each_other() {
    // Each trace's consumer links to the other's producer: only the link from the earlier
    // trace to the later one carries a path, and both are finalized at the TTL.
    let spans = [
        span(1, 1, None, "SERVER", "orders").at_ms(1_000),
        span(1, 2, Some(1), "PRODUCER", "orders")
            .at_ms(1_001)
            .attr("messaging.destination.name", "topic"),
        span(1, 3, Some(1), "CONSUMER", "orders")
            .at_ms(1_060)
            .link(2, 2),
        span(2, 1, None, "CONSUMER", "billing")
            .at_ms(1_020)
            .link(1, 2),
        span(2, 2, Some(1), "PRODUCER", "billing")
            .at_ms(1_021)
            .attr("messaging.destination.name", "topic"),
    ];
    let graph = run(&spans);
    assert_eq!(graph.counters().pending_traces, 0);
    check_any_order(&spans);
}
#[test]
fn a_trace_that_returns_to_a_service_counts_as_a_trace_loop() {
    let a_to_b_to_a = |trace| {
        vec![
            span(trace, 1, None, "SERVER", "a"),
            span(trace, 2, Some(1), "CLIENT", "a"),
            span(trace, 3, Some(2), "SERVER", "b"),
            span(trace, 4, Some(3), "CLIENT", "b"),
            span(trace, 5, Some(4), "SERVER", "a"),
        ]
    };
    let a_to_b = vec![
        span(3, 1, None, "CLIENT", "a"),
        span(3, 2, Some(1), "SERVER", "b"),
    ];
    let spans: Vec<TestSpan> = [a_to_b_to_a(1), a_to_b_to_a(2), a_to_b].concat();
    check(
        &spans,
        &[
            "a -> b sync calls=3 errors=0 p50=10.0ms amp=1.0 trace_loops=2",
            "b -> a sync calls=2 errors=0 p50=10.0ms amp=1.0 trace_loops=2",
            "loop a -> b calls=2 traces=2",
        ],
    );
}

/// One `a` server span making `calls` calls to `b`.
fn retry_storm(trace: u8, calls: u8) -> Vec<TestSpan> {
    let mut spans = vec![span(trace, 1, None, "SERVER", "a")];
    for call in 0..calls {
        let client = 10 + call;
        spans.push(span(trace, client, Some(1), "CLIENT", "a"));
        spans.push(span(trace, client + 100, Some(client), "SERVER", "b").error());
    }
    spans
}

#[test]
fn a_retry_storm_shows_as_amplification() {
    check(
        &retry_storm(1, 5),
        &["a -> b sync calls=5 errors=5 p50=10.0ms amp=5.0"],
    );
    check(
        &[retry_storm(1, 5), retry_storm(2, 1)].concat(),
        &["a -> b sync calls=6 errors=6 p50=10.0ms amp=3.0"],
    );
}

#[test]
fn a_trace_of_many_spans_pairs_them_in_any_order() {
    // 41 spans: more than a trace scans through, so they are found through its index.
    let spans = retry_storm(1, 20);
    let expected = ["a -> b sync calls=20 errors=20 p50=10.0ms amp=20.0"];
    check(&spans, &expected);
    let servers_first: Vec<TestSpan> = spans.iter().rev().cloned().collect();
    check(&servers_first, &expected);
}

#[test]
fn body_sizes_add_up_on_the_edge() {
    check(
        &[
            span(1, 1, None, "CLIENT", "web")
                .attr("http.request.body.size", "100")
                .attr("http.response.body.size", "20"),
            span(1, 2, Some(1), "SERVER", "api").attr("http.request.body.size", "999"),
            // No size on the client: the server's counts.
            span(2, 1, None, "CLIENT", "web"),
            span(2, 2, Some(1), "SERVER", "api").attr("http.response.body.size", "7"),
            span(3, 1, None, "PRODUCER", "api")
                .attr("messaging.destination.name", "jobs")
                .attr("messaging.message.body.size", "512"),
            // No size on the consumer: the producer's counts.
            span(3, 2, Some(1), "CONSUMER", "worker").at_ms(1_001),
        ],
        &[
            "api -> jobs async calls=1 errors=0 p50=10.0ms bytes=512",
            "jobs -> worker async calls=1 errors=0 p50=1.0ms bytes=512 amp=1.0",
            "web -> api sync calls=2 errors=0 p50=10.0ms bytes=127",
        ],
    );
}

// ---- windows, horizon, pairing store ----

#[test]
fn a_window_merges_the_buckets_that_start_in_it() {
    // Calls at 5 s, 15 s and 25 s, lasting 10, 20 and 30 ms; buckets of 10 s.
    let spans: Vec<TestSpan> = (0..3u8)
        .flat_map(|i| {
            let start = 5_000 + 10_000 * i64::from(i);
            let lasting = 10 * (i64::from(i) + 1);
            [
                span(i + 1, 1, None, "CLIENT", "a")
                    .at_ms(start)
                    .lasting_ms(lasting),
                span(i + 1, 2, Some(1), "SERVER", "b").at_ms(start),
            ]
        })
        .collect();
    let graph = run(&spans);
    let calls = |from_s: i64, to_s: i64| -> Vec<u64> {
        graph
            .snapshot(from_s * SECOND, to_s * SECOND)
            .edges
            .iter()
            .map(|e| e.calls)
            .collect()
    };
    assert_eq!(calls(0, 10), [1]);
    assert_eq!(calls(10, 30), [2]);
    assert_eq!(calls(0, 30), [3]);
    assert_eq!(
        calls(12, 20),
        Vec::<u64>::new(),
        "no bucket starts in [12 s, 20 s)"
    );
    assert_eq!(calls(30, 10), Vec::<u64>::new(), "an empty window");

    // Quantiles are taken at rank floor(q * (calls - 1)) of the merged buckets.
    let p50 =
        |from_s: i64, to_s: i64| graph.snapshot(from_s * SECOND, to_s * SECOND).edges[0].p50_ms;
    let close = |value: f64, exact: f64| (value - exact).abs() <= exact * 0.01;
    assert!(close(p50(0, 10), 10.0), "{}", p50(0, 10));
    assert!(close(p50(20, 30), 30.0), "{}", p50(20, 30));
    assert!(close(p50(0, 30), 20.0), "{}", p50(0, 30));
    let merged = graph.snapshot(10 * SECOND, 30 * SECOND);
    assert!(close(merged.edges[0].p50_ms, 20.0) && close(merged.edges[0].p99_ms, 20.0));
    assert_eq!((merged.from_ns, merged.to_ns), (10 * SECOND, 30 * SECOND));
}

#[test]
fn buckets_older_than_the_horizon_are_dropped() {
    let config = GraphConfig {
        horizon: std::time::Duration::from_secs(100),
        ..GraphConfig::default()
    };
    let mut graph = LiveGraph::new(config);
    assert_eq!(graph.horizon_start_ns(), None);
    let call_at = |trace: u8, ms: i64| {
        [
            span(trace, 1, None, "CLIENT", "a").at_ms(ms),
            span(trace, 2, Some(1), "SERVER", "b").at_ms(ms),
        ]
    };
    graph.ingest(&batch(&call_at(1, 5_000)), 6 * SECOND);
    graph.ingest(&batch(&call_at(2, 95_000)), 96 * SECOND);
    assert_eq!(graph.horizon_start_ns(), Some(0));
    // Now 130 s: keep the buckets from 30 s on.
    graph.advance(130 * SECOND);
    assert_eq!(graph.horizon_start_ns(), Some(90 * SECOND));
    assert_eq!(graph.snapshot(0, 200 * SECOND).edges[0].calls, 1);
    assert_eq!(graph.counters().buckets, 1);
    // A straggler from before the horizon is dropped and counted, not resurrected.
    graph.ingest(&batch(&call_at(3, 20_000)), 131 * SECOND);
    graph.advance(131 * SECOND + TTL);
    assert_eq!(graph.snapshot(0, 200 * SECOND).edges[0].calls, 1);
    assert_eq!(graph.horizon_start_ns(), Some(90 * SECOND));
    assert_eq!(
        graph.counters().late_events,
        3,
        "two span starts and one call"
    );
}

#[test]
fn a_full_pairing_store_evicts_the_least_recently_active_trace() {
    let config = GraphConfig {
        max_pending_spans: 4,
        ..GraphConfig::default()
    };
    let mut graph = LiveGraph::new(config);
    // Trace 1: a CLIENT still waiting for its server; evicted, it becomes an external call.
    graph.ingest(
        &batch(&[span(1, 1, None, "CLIENT", "a").attr("server.address", "b.internal")]),
        NOW,
    );
    for trace in 2..=3 {
        graph.ingest(
            &batch(&[
                span(trace, 1, None, "CLIENT", "a"),
                span(trace, 2, Some(1), "SERVER", "b"),
            ]),
            NOW + i64::from(trace),
        );
    }
    check_counters(
        &graph,
        GraphCounters {
            spans_seen: 5,
            edges_inferred: 3,
            virtual_edges: 1,
            pending_spans: 4,
            pending_traces: 2,
            unpaired_expired: 1,
            evicted: 1,
            traces_finalized: 1,
            buckets: 1,
            ..GraphCounters::default()
        },
    );
    assert_eq!(
        render_edges(&whole(&graph)),
        [
            "a -> b sync calls=2 errors=0 p50=10.0ms",
            "a -> b.internal sync calls=1 errors=0 p50=10.0ms",
        ]
    );
}

#[test]
fn pairing_entries_expire_after_the_ttl_and_are_counted() {
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(
        &batch(&[
            span(1, 1, None, "CLIENT", "a"),
            span(2, 5, Some(4), "SERVER", "b"),
            span(3, 1, None, "PRODUCER", "c"),
        ]),
        NOW,
    );
    graph.advance(NOW + TTL - 1);
    assert_eq!(
        (
            graph.counters().pending_spans,
            graph.counters().unpaired_expired
        ),
        (3, 0)
    );
    graph.advance(NOW + TTL);
    check_counters(
        &graph,
        GraphCounters {
            spans_seen: 3,
            unpaired_expired: 3,
            unplaced: 1,
            traces_finalized: 3,
            buckets: 1,
            ..GraphCounters::default()
        },
    );
}

#[test]
fn activity_in_a_trace_keeps_its_spans_waiting() {
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(&[span(1, 1, None, "SERVER", "a")]), NOW);
    graph.ingest(
        &batch(&[span(1, 2, Some(1), "CLIENT", "a")]),
        NOW + 20 * SECOND,
    );
    graph.advance(NOW + TTL);
    assert_eq!(graph.counters().pending_traces, 1);
    graph.ingest(
        &batch(&[span(1, 3, Some(2), "SERVER", "b")]),
        NOW + 40 * SECOND,
    );
    graph.advance(NOW + 40 * SECOND + TTL);
    assert_eq!(
        render_edges(&whole(&graph)),
        ["a -> b sync calls=1 errors=0 p50=10.0ms amp=1.0"]
    );
    assert_eq!(graph.counters().unpaired_expired, 0);
}

#[test]
fn a_span_seen_twice_counts_once() {
    let spans = [
        span(1, 1, None, "CLIENT", "a"),
        span(1, 2, Some(1), "SERVER", "b"),
    ];
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch(&spans), NOW);
    graph.ingest(&batch(&spans), NOW + 1);
    graph.advance(NOW + 1 + TTL);
    assert_eq!(
        render_edges(&whole(&graph)),
        ["a -> b sync calls=1 errors=0 p50=10.0ms"]
    );
    assert_eq!(graph.counters().duplicate_spans, 2);
}

#[test]
fn rows_that_are_not_spans_are_rejected() {
    let mut builder = flowscope_model::SpanBatchBuilder::default();
    let record = flowscope_model::SpanRecord {
        trace_id: &[0; 16],
        span_id: &[1; 8],
        kind: "SERVER",
        status_code: "UNSET",
        ..flowscope_model::SpanRecord::default()
    };
    builder
        .append(
            &record,
            &[] as &[(&str, &str)],
            &[] as &[(&str, &str)],
            &[],
            &[],
        )
        .expect("append");
    let zero_trace = builder.finish().expect("batch");

    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("x", arrow::datatypes::DataType::Int64, false),
    ]));
    let column: arrow::array::ArrayRef =
        std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2]));
    let other_schema =
        arrow::record_batch::RecordBatch::try_new(schema, vec![column]).expect("batch");

    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&zero_trace, NOW);
    graph.ingest(&other_schema, NOW);
    assert_eq!(graph.counters().rows_rejected, 3);
    assert_eq!(graph.counters().spans_seen, 0);
    assert_ne!(trace_id(1), [0; 16]);
}

#[test]
fn service_nodes_count_their_server_and_consumer_spans() {
    check_nodes(
        &[
            span(1, 1, None, "SERVER", "orders").lasting_ms(40),
            span(1, 2, Some(1), "CONSUMER", "orders")
                .lasting_ms(40)
                .attr("messaging.destination.name", "jobs")
                .error(),
            span(1, 3, Some(1), "CLIENT", "orders"),
            span(2, 1, None, "INTERNAL", "cron"),
        ],
        &[
            "cron service in=0 errors=0 p50=0.0ms",
            "jobs queue in=0 errors=0 p50=0.0ms",
            "orders service in=2 errors=1 p50=40.0ms",
        ],
    );
}

// ---- any order, any batching ----

/// A small deterministic generator (splitmix64), so a failing case is reproducible from
/// its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SERVICES: [&str; 5] = ["gateway", "orders", "billing", "inventory", "shipping"];
const TOPICS: [&str; 2] = ["order-events", "billing"];

/// Builds traces of sync calls (with and without CLIENT spans), async hops by parent and by
/// link (the consumer in a trace of its own), database and external calls and retries.
pub(crate) struct Workload {
    random: Random,
    spans: Vec<TestSpan>,
    next_span: Vec<u8>,
    next_trace: u8,
}

impl Workload {
    fn new(seed: u64) -> Self {
        Self {
            random: Random(seed),
            spans: Vec::new(),
            next_span: vec![1; 256],
            next_trace: 1,
        }
    }

    fn new_trace(&mut self) -> u8 {
        let trace = self.next_trace;
        self.next_trace += 1;
        trace
    }

    fn add(
        &mut self,
        trace: u8,
        parent: Option<u8>,
        kind: &'static str,
        service: &str,
        start_ms: i64,
    ) -> u8 {
        let id = self.next_span[trace as usize];
        self.next_span[trace as usize] += 1;
        let mut new = span(trace, id, parent, kind, service)
            .at_ms(start_ms)
            .lasting_ms(1 + self.random.below(60) as i64);
        if self.random.below(8) == 0 {
            new = new.error();
        }
        if self.random.below(4) == 0 {
            new = new.attr(
                "http.request.body.size",
                &self.random.below(1000).to_string(),
            );
        }
        self.spans.push(new);
        id
    }

    fn attr(&mut self, key: &str, value: &str) {
        if let Some(last) = self.spans.pop() {
            self.spans.push(last.attr(key, value));
        }
    }

    fn link(&mut self, trace: u8, span: u8) {
        if let Some(last) = self.spans.pop() {
            self.spans.push(last.link(trace, span));
        }
    }

    /// Hops out of span `from` of `service`, down to `depth` more levels.
    fn hops(&mut self, trace: u8, from: u8, service: &str, start_ms: i64, depth: u32) {
        if depth == 0 || self.next_span[trace as usize] > 200 || self.next_trace > 120 {
            return;
        }
        for _ in 0..self.random.below(3) {
            let start = start_ms + self.random.below(5_000) as i64;
            let callee = self.random.pick(&SERVICES);
            match self.random.below(8) {
                0 | 1 => {
                    let client = self.add(trace, Some(from), "CLIENT", service, start);
                    let server = self.add(trace, Some(client), "SERVER", callee, start + 1);
                    self.hops(trace, server, callee, start + 1, depth - 1);
                }
                2 => {
                    let server = self.add(trace, Some(from), "SERVER", callee, start);
                    self.hops(trace, server, callee, start, depth - 1);
                }
                3 => {
                    let topic = self.random.pick(&TOPICS);
                    let producer = self.add(trace, Some(from), "PRODUCER", service, start);
                    if self.random.below(4) != 0 {
                        self.attr("messaging.destination.name", topic);
                    }
                    let consumer = self.add(trace, Some(producer), "CONSUMER", callee, start + 20);
                    if self.random.below(2) == 0 {
                        self.attr("messaging.destination.name", topic);
                    }
                    self.hops(trace, consumer, callee, start + 20, depth - 1);
                }
                4 => {
                    let producer = self.add(trace, Some(from), "PRODUCER", service, start);
                    let topic = self.random.pick(&TOPICS);
                    self.attr("messaging.destination.name", topic);
                    let consumer_trace = self.new_trace();
                    let consumer = self.add(consumer_trace, None, "CONSUMER", callee, start + 30);
                    self.link(trace, producer);
                    self.hops(consumer_trace, consumer, callee, start + 30, depth - 1);
                }
                5 => {
                    self.add(trace, Some(from), "CLIENT", service, start);
                    self.attr("db.system", "postgresql");
                    let name = self.random.pick(&["orders", "ledger"]);
                    self.attr("db.name", name);
                }
                6 => {
                    self.add(trace, Some(from), "CLIENT", service, start);
                    match self.random.below(3) {
                        0 => self.attr("server.address", "api.example.com"),
                        1 => self.attr("peer.service", "billing"),
                        _ => {}
                    }
                }
                _ => {
                    for retry in 0..3 {
                        let client = self.add(trace, Some(from), "CLIENT", service, start + retry);
                        self.add(trace, Some(client), "SERVER", callee, start + retry + 1);
                    }
                }
            }
        }
    }

    pub(crate) fn traces(seed: u64, count: usize) -> Vec<TestSpan> {
        let mut workload = Workload::new(seed);
        for _ in 0..count {
            let trace = workload.new_trace();
            let service = workload.random.pick(&SERVICES);
            let start = workload.random.below(40_000) as i64;
            let root = workload.add(trace, None, "SERVER", service, start);
            workload.hops(trace, root, service, start, 3);
        }
        workload.spans
    }
}

/// The spans shuffled, and the batch boundaries `cuts` sorted, with both ends.
fn shuffled_and_cut(
    spans: &[TestSpan],
    shuffle_seed: u64,
    cuts: &[usize],
) -> (Vec<TestSpan>, Vec<usize>) {
    let mut shuffled = spans.to_vec();
    let mut random = Random(shuffle_seed);
    for i in (1..shuffled.len()).rev() {
        let j = random.below(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| c % (shuffled.len() + 1))
        .chain([0, shuffled.len()])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    (shuffled, cuts)
}

/// The spans shuffled, cut into batches at `cuts`, arriving over a few seconds with
/// `advance` calls in between (all within the TTL), then past the TTL.
fn run_shuffled(spans: &[TestSpan], shuffle_seed: u64, cuts: &[usize]) -> LiveGraph {
    let (shuffled, cuts) = shuffled_and_cut(spans, shuffle_seed, cuts);
    let mut graph = LiveGraph::new(GraphConfig::default());
    let mut now = NOW;
    for pair in cuts.windows(2) {
        graph.ingest(&batch(&shuffled[pair[0]..pair[1]]), now);
        now += SECOND / 2;
        graph.advance(now);
    }
    graph.advance(now + TTL);
    graph
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_order_and_batching_give_the_same_graph(
        seed in any::<u64>(),
        traces in 1usize..6,
        shuffle_seed in any::<u64>(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let spans = Workload::traces(seed, traces);
        let reference = run(&spans);
        let shuffled = run_shuffled(&spans, shuffle_seed, &cuts);
        let expected = whole(&reference);
        let found = whole(&shuffled);
        prop_assert_eq!(&found.nodes, &expected.nodes);
        prop_assert_eq!(&found.edges, &expected.edges);
        prop_assert_eq!(&found.loops, &expected.loops);
        prop_assert_eq!(shuffled.counters(), reference.counters());
        // Every window, not only the whole one: stats land in the same buckets.
        for from_s in (0..50).step_by(10) {
            let window = (from_s * SECOND, (from_s + 10) * SECOND);
            prop_assert_eq!(
                shuffled.snapshot(window.0, window.1),
                reference.snapshot(window.0, window.1)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A cluster's graph: each ingester's graph holds the traces routed to it, and a querier
    /// merges their windows' buckets. With no link between traces (links across ingesters
    /// are not paired), the merged window is the one graph of all the spans.
    #[test]
    fn windows_of_graphs_split_by_trace_merge_into_the_whole_graph(
        seed in any::<u64>(),
        traces in 1usize..8,
    ) {
        let spans: Vec<TestSpan> = Workload::traces(seed, traces)
            .into_iter()
            .map(|mut s| {
                s.links.clear();
                s
            })
            .collect();
        let (even, odd): (Vec<TestSpan>, Vec<TestSpan>) =
            spans.iter().cloned().partition(|s| s.trace % 2 == 0);
        let reference = run(&spans);
        let (a, b) = (run(&even), run(&odd));
        for (from, to) in [EVERYTHING, (10 * SECOND, 30 * SECOND)] {
            let merged = a.window(from, to).merge(b.window(from, to));
            let stored = crate::Window::from_stored(from, to, &merged.stored());
            let expected = reference.snapshot(from, to);
            prop_assert_eq!(&merged.into_snapshot(), &expected);
            prop_assert_eq!(&stored.into_snapshot(), &expected);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A kept merge brought up to date from window to window (buckets taken away, changed by
    /// new spans, added) answers what a fresh merge of each window answers, ranges of the
    /// latency sketches included.
    #[test]
    fn a_merged_window_brought_up_to_date_equals_a_fresh_merge(
        seed in any::<u64>(),
        traces in 1usize..8,
        shuffle_seed in any::<u64>(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        windows in prop::collection::vec((0i64..50, 1i64..50), 1..6),
    ) {
        let (spans, cuts) = shuffled_and_cut(&Workload::traces(seed, traces), shuffle_seed, &cuts);
        let mut graph = LiveGraph::new(GraphConfig::default());
        let mut merged: Option<crate::MergedWindow> = None;
        let mut now = NOW;
        for (step, pair) in cuts.windows(2).enumerate() {
            graph.ingest(&batch(&spans[pair[0]..pair[1]]), now);
            now += SECOND / 2;
            graph.advance(now);
            // The random windows, then windows sliding a bucket at a time (which take one
            // bucket away and add one).
            let slides = (0..4).map(|k| (k * 10, 30));
            for (from_s, width_s) in windows.iter().copied().skip(step % windows.len()).chain(slides) {
                let window = graph.window(from_s * SECOND, (from_s + width_s) * SECOND);
                let kept = merged.get_or_insert_with(|| crate::MergedWindow::new(&window));
                kept.update(&window);
                prop_assert!(kept.equals_a_fresh_merge_of(&window));
                prop_assert_eq!(kept.snapshot(&window), window.clone().into_snapshot());
                prop_assert_eq!(kept.figures(&window), window.figures());
            }
        }
        graph.advance(now + TTL);
        let window = graph.window(EVERYTHING.0, EVERYTHING.1);
        if let Some(kept) = merged.as_mut() {
            kept.update(&window);
            prop_assert!(kept.equals_a_fresh_merge_of(&window));
            prop_assert_eq!(kept.snapshot(&window), window.into_snapshot());
        }
    }
}

#[test]
fn the_workload_generator_exercises_every_rule() {
    // Guards the property test against a generator that silently stops producing the
    // interesting cases.
    let spans = Workload::traces(7, 40);
    let graph = run(&spans);
    let snapshot = whole(&graph);
    let kinds: std::collections::BTreeSet<&str> =
        snapshot.nodes.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["database", "external", "queue", "service"]
    );
    assert!(
        snapshot
            .edges
            .iter()
            .any(|e| e.kind == crate::EdgeKind::Async)
    );
    assert!(!snapshot.loops.is_empty());
    assert!(spans.iter().any(|s| !s.links.is_empty()));
    let counters = graph.counters();
    assert!(counters.unplaced > 0 && counters.virtual_edges > 0);
    // Some flows go round across a link (a consumer continuing its producer's path).
    let came_back =
        |snapshot: &Snapshot| -> u64 { snapshot.loops.iter().map(|l| l.trace_loops).sum() };
    let unlinked: Vec<TestSpan> = spans
        .iter()
        .cloned()
        .map(|mut s| {
            s.links.clear();
            s
        })
        .collect();
    assert!(came_back(&snapshot) > came_back(&whole(&run(&unlinked))));
}

/// The same spans as [`run_shuffled`], into a one-window graph of `[from, to)`.
fn run_for_window(spans: &[TestSpan], from: i64, to: i64) -> LiveGraph {
    let mut graph = LiveGraph::for_window(GraphConfig::default(), from, to);
    graph.ingest(&batch(spans), NOW);
    graph.advance(NOW + TTL);
    graph
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_one_window_graph_answers_its_window_like_the_live_graph(
        seed in any::<u64>(),
        traces in 1usize..8,
        from_ms in -5_000i64..45_000,
        length_ms in 1i64..50_000,
    ) {
        // Windows of any alignment: the bucket rule must be the same in both.
        let spans = Workload::traces(seed, traces);
        let (from, to) = (from_ms * 1_000_000, (from_ms + length_ms) * 1_000_000);
        let live = run(&spans).snapshot(from, to);
        let rebuilt = run_for_window(&spans, from, to);
        prop_assert_eq!(rebuilt.snapshot(from, to), live);
        prop_assert!(rebuilt.counters().buckets <= 1);
    }
}

#[test]
fn a_one_window_graph_keeps_nothing_outside_its_window() {
    let spans = Workload::traces(11, 30);
    let graph = run_for_window(&spans, 10 * SECOND, 20 * SECOND);
    assert_eq!(graph.counters().late_events, 0);
    assert!(whole(&graph).edges.iter().all(|e| e.calls > 0));
    let (everything, window) = (whole(&graph), graph.snapshot(10 * SECOND, 20 * SECOND));
    assert_eq!(
        (everything.edges, everything.nodes),
        (window.edges, window.nodes),
        "everything it holds is in its window"
    );
    let live = run(&spans);
    assert!(
        whole(&live).edges.iter().map(|e| e.calls).sum::<u64>()
            > whole(&graph).edges.iter().map(|e| e.calls).sum::<u64>()
    );
}

#[test]
fn trimmed_buckets_survive_encoding_and_answer_like_the_live_graph() {
    let spans = Workload::traces(5, 40);
    let mut graph = run(&spans);
    let (from, to) = (-10 * SECOND, 60 * SECOND);
    let live = graph.snapshot(from, to);
    assert!(!live.edges.is_empty() && !live.loops.is_empty());
    // Far past the horizon: every bucket is trimmed, and handed out once.
    graph.advance(NOW + 10 * 3600 * SECOND);
    assert!(graph.snapshot(from, to).edges.is_empty());
    let trimmed = graph.take_trimmed();
    assert!(graph.take_trimmed().is_empty());
    let decoded: Vec<crate::StoredBucket> = trimmed
        .iter()
        .map(|b| crate::StoredBucket::decode(&b.encode()).unwrap())
        .collect();
    let rebuilt = crate::Window::from_stored(from, to, &decoded).into_snapshot();
    assert_eq!(rebuilt, live);
}

#[test]
fn a_damaged_bucket_is_refused_not_misread() {
    let spans = Workload::traces(6, 10);
    let mut graph = run(&spans);
    graph.advance(NOW + 10 * 3600 * SECOND);
    let bytes = graph.take_trimmed()[0].encode();
    for cut in [0, 3, 12, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            crate::StoredBucket::decode(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut wrong = bytes.clone();
    wrong[0] = b'X';
    assert!(crate::StoredBucket::decode(&wrong).is_err());
}

#[test]
fn service_nodes_carry_their_resources_most_frequent_namespace_and_zone() {
    use flowscope_model::{SpanBatchBuilder, SpanRecord};
    let mut builder = SpanBatchBuilder::default();
    for (i, (service, namespace)) in [("a", "shop"), ("a", "shop"), ("b", "billing"), ("a", "old")]
        .into_iter()
        .enumerate()
    {
        let trace = crate::test_support::trace_id(i as u8 + 1);
        let id = crate::test_support::span_id(1);
        let record = SpanRecord {
            trace_id: &trace,
            span_id: &id,
            name: "op",
            kind: "SERVER",
            service_name: service,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_010_000_000,
            status_code: "UNSET",
            ..SpanRecord::default()
        };
        builder
            .append(
                &record,
                &[] as &[(&str, &str)],
                &[
                    ("service.name", service),
                    ("service.namespace", namespace),
                    ("cloud.availability_zone", "z1"),
                    ("unrelated", "x"),
                ],
                &[],
                &[],
            )
            .unwrap();
    }
    let batch = builder.finish().unwrap();
    let mut graph = LiveGraph::new(GraphConfig::default());
    graph.ingest(&batch, 1_000_000_000);
    graph.advance(1_000_000_000);
    let snapshot = graph.snapshot(0, i64::MAX);
    let a = snapshot.nodes.iter().find(|n| n.id == "a").unwrap();
    assert_eq!(
        a.attributes.get("service.namespace").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        a.attributes
            .get("cloud.availability_zone")
            .map(String::as_str),
        Some("z1")
    );
    assert!(!a.attributes.contains_key("unrelated"));
    let b = snapshot.nodes.iter().find(|n| n.id == "b").unwrap();
    assert_eq!(
        b.attributes.get("service.namespace").map(String::as_str),
        Some("billing")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A neighbourhood filtered from the part of the window that `around` gives is what the
    /// same filter cuts from the whole snapshot: nodes, edges, loops, figures and totals.
    #[test]
    fn a_neighbourhood_from_around_equals_the_whole_snapshot_filtered(
        seed in any::<u64>(),
        traces in 1usize..30,
        pick in any::<prop::sample::Index>(),
        hops in 0usize..4,
        direction in prop::sample::select(vec![
            crate::Direction::Up, crate::Direction::Down, crate::Direction::Both,
        ]),
        min_calls in prop::sample::select(vec![0u64, 0, 2]),
        top in prop::option::of(1usize..6),
        services_only in any::<bool>(),
    ) {
        let graph = run(&Workload::traces(seed, traces));
        let window = graph.window(EVERYTHING.0, EVERYTHING.1);
        let whole = window.clone().into_snapshot();
        prop_assume!(!whole.nodes.is_empty());
        let node = whole.nodes[pick.index(whole.nodes.len())].id.clone();
        let filter = crate::GraphFilter {
            kinds: services_only.then(|| vec![crate::NodeKind::Service]),
            min_calls,
            focus: Some(crate::Focus { node: node.clone(), hops, direction }),
            top: top.map(|n| (n, crate::Rank::Calls)),
            ..crate::GraphFilter::default()
        };
        let kept = crate::MergedWindow::new(&window);
        let around = kept.around(&window, filter.focus.as_ref().expect("focus"));
        let around = around.expect("the node is in the window");
        let mut got = crate::filter(&around.snapshot, &filter).expect("filter");
        got.total_nodes = around.total_nodes;
        got.total_edges = around.total_edges;
        let expected = crate::filter(&whole, &filter).expect("filter");
        prop_assert_eq!(got, expected);
        let unknown = crate::Focus { node: "no-such-node".into(), hops, direction };
        prop_assert!(kept.around(&window, &unknown).is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Blast radius and dependencies answered from the part of the window `around` gives
    /// for that way and those hops are what the whole snapshot answers.
    #[test]
    fn reach_from_around_equals_reach_over_the_whole_snapshot(
        seed in any::<u64>(),
        traces in 1usize..30,
        pick in any::<prop::sample::Index>(),
        hops in 1usize..5,
        up in any::<bool>(),
    ) {
        let graph = run(&Workload::traces(seed, traces));
        let window = graph.window(EVERYTHING.0, EVERYTHING.1);
        let whole = window.clone().into_snapshot();
        prop_assume!(!whole.nodes.is_empty());
        let node = whole.nodes[pick.index(whole.nodes.len())].id.clone();
        let direction = if up { crate::Direction::Up } else { crate::Direction::Down };
        let focus = crate::Focus { node: node.clone(), hops, direction };
        let kept = crate::MergedWindow::new(&window);
        let part = kept.around(&window, &focus).expect("the node is in the window").snapshot;
        let reach = |snapshot: &Snapshot| {
            if up {
                crate::blast_radius(snapshot, &node, hops)
            } else {
                crate::dependencies(snapshot, &node, hops)
            }
        };
        prop_assert_eq!(reach(&part), reach(&whole));
    }
}
