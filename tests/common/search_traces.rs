//! Known traces for the trace search and the trace view: six checkout-like traces whose
//! attributes, durations and statuses make each search's answer exact, one trace whose
//! critical path is known by hand, and the shop's producer and consumer traces.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::topology::{CLIENT, INTERNAL, SERVER, SpanRef, Topology};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace ids (hex) of [`search_traces`], by the name the tests use.
pub struct SearchTraces {
    /// checkout, gold, 300 ms, a call to payments.
    pub gold_slow: String,
    /// checkout, gold, 80 ms.
    pub gold_fast: String,
    /// checkout, silver, 400 ms.
    pub silver: String,
    /// checkout, gold, 500 ms, failed with HTTP 500; a multi-line attribute and an exception event.
    pub gold_failed: String,
    /// shipping, gold, 600 ms.
    pub shipping: String,
    /// checkout, 250 ms, tier `gold' OR '1'='1`: an injection attempt stored as data.
    pub quoted: String,
    /// The critical-path trace: its spans by letter, as hex ids.
    pub critical: String,
    pub critical_spans: Vec<(&'static str, String)>,
    /// The shop's first order (producer) and the billing trace that links to it (consumer).
    pub producer: String,
    pub consumer: String,
}

/// A multi-line attribute value, as a stack trace is.
pub const STACK: &str = "java.lang.IllegalStateException: card declined\n\tat Checkout.pay(Checkout.java:42)\n\tat Checkout.run(Checkout.java:7)";

/// A new trace whose root is a SERVER span `POST /cart` of `service`.
fn root(
    t: &mut Topology,
    service: &str,
    offset: u64,
    ms: u64,
    error: bool,
    attrs: &[(&str, &str)],
) -> (Vec<u8>, SpanRef) {
    let trace = t.new_trace();
    let span = t.span(
        service,
        &trace,
        None,
        SERVER,
        "POST /cart",
        offset,
        ms,
        error,
        attrs,
        &[],
    );
    (trace, span)
}

pub fn search_traces() -> (Vec<ExportTraceServiceRequest>, SearchTraces) {
    let mut t = Topology::starting_at(5_000_000);
    let (gold_slow, span) = root(
        &mut t,
        "checkout",
        0,
        300,
        false,
        &[("customer.tier", "gold"), ("http.status_code", "200")],
    );
    let call = t.span(
        "checkout",
        &gold_slow,
        Some(&span),
        CLIENT,
        "POST /pay",
        10,
        200,
        false,
        &[],
        &[],
    );
    t.span(
        "payments",
        &gold_slow,
        Some(&call),
        SERVER,
        "POST /pay",
        11,
        198,
        false,
        &[],
        &[],
    );
    let (gold_fast, _) = root(
        &mut t,
        "checkout",
        10,
        80,
        false,
        &[("customer.tier", "gold"), ("http.status_code", "200")],
    );
    let (silver, _) = root(
        &mut t,
        "checkout",
        20,
        400,
        false,
        &[("customer.tier", "silver"), ("http.status_code", "200")],
    );
    let (gold_failed, span) = root(
        &mut t,
        "checkout",
        30,
        500,
        true,
        &[
            ("customer.tier", "gold"),
            ("http.status_code", "500"),
            ("exception.stacktrace", STACK),
        ],
    );
    t.event(
        "checkout",
        &span,
        "exception",
        400,
        &[("exception.message", "card declined")],
    );
    let (shipping, _) = root(
        &mut t,
        "shipping",
        40,
        600,
        false,
        &[("customer.tier", "gold")],
    );
    let (quoted, _) = root(
        &mut t,
        "checkout",
        50,
        250,
        false,
        &[("customer.tier", "gold' OR '1'='1")],
    );

    // A [0,100] with children B [5,40] (C [6,30], D [10,38]), E [20,60] (F [25,55]) and
    // G [70,90]: the path is A, G, E, F (B ends inside E, so it never blocks A).
    let critical = t.new_trace();
    let a = t.span(
        "planner",
        &critical,
        None,
        SERVER,
        "A",
        1000,
        100,
        false,
        &[],
        &[],
    );
    let b = t.span(
        "planner",
        &critical,
        Some(&a),
        INTERNAL,
        "B",
        1005,
        35,
        false,
        &[],
        &[],
    );
    let c = t.span(
        "planner",
        &critical,
        Some(&b),
        INTERNAL,
        "C",
        1006,
        24,
        false,
        &[],
        &[],
    );
    let d = t.span(
        "planner",
        &critical,
        Some(&b),
        INTERNAL,
        "D",
        1010,
        28,
        false,
        &[],
        &[],
    );
    let e = t.span(
        "planner",
        &critical,
        Some(&a),
        INTERNAL,
        "E",
        1020,
        40,
        false,
        &[],
        &[],
    );
    let f = t.span(
        "planner",
        &critical,
        Some(&e),
        INTERNAL,
        "F",
        1025,
        30,
        false,
        &[],
        &[],
    );
    let g = t.span(
        "planner",
        &critical,
        Some(&a),
        INTERNAL,
        "G",
        1070,
        20,
        false,
        &[],
        &[],
    );
    t.event("planner", &f, "cache miss", 1040, &[]);
    let critical_spans = [
        ("A", &a),
        ("B", &b),
        ("C", &c),
        ("D", &d),
        ("E", &e),
        ("F", &f),
        ("G", &g),
    ]
    .iter()
    .map(|(name, span)| (*name, hex(&span.span_id)))
    .collect();

    let order = t.shop_order(0);
    let ids = SearchTraces {
        gold_slow: hex(&gold_slow),
        gold_fast: hex(&gold_fast),
        silver: hex(&silver),
        gold_failed: hex(&gold_failed),
        shipping: hex(&shipping),
        quoted: hex(&quoted),
        critical: hex(&critical),
        critical_spans,
        producer: hex(&order.trace),
        consumer: hex(&order.billing_trace),
    };
    (t.requests(), ids)
}
