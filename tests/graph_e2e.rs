//! The live graph end to end: a small event-driven system sent over OTLP/gRPC shows exactly
//! its nodes, edges, counts, errors and its feedback loop in `/api/graph`, in the SQL graph
//! tables and in the server-sent event stream; and the live graph agrees with a SQL
//! self-join over the stored spans (the oracle).

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::Server;
use common::topology::{CLIENT, SERVER, Topology};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

const TRACES: u64 = 20;

/// gateway → orders → inventory; orders → order-events → billing → orders (a loop through a
/// queue, the consumer linked to the producer across traces); orders → orders-db, a database
/// that sends no spans.
fn shop() -> Vec<ExportTraceServiceRequest> {
    shop_from(Topology::default())
}

fn shop_from(mut t: Topology) -> Vec<ExportTraceServiceRequest> {
    for i in 0..TRACES {
        t.shop_order(i);
    }
    t.requests()
}

fn graph(server: &Server) -> Value {
    reqwest::blocking::get(format!("http://{}/api/graph", server.api))
        .unwrap()
        .json()
        .unwrap()
}

type EdgeKey = (String, String, String);

fn edges_of(graph: &Value) -> BTreeMap<EdgeKey, (u64, u64)> {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = (
                e["source"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            );
            (
                key,
                (e["calls"].as_u64().unwrap(), e["errors"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// Polls `/api/graph` until `done` holds (the graph settles after the pairing TTL).
fn wait_for_graph(server: &Server, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current = graph(server);
        if done(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "the graph did not settle: {current:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn key(source: &str, target: &str, kind: &str) -> EdgeKey {
    (source.into(), target.into(), kind.into())
}

#[test]
fn a_small_event_driven_system_shows_exactly_its_graph_and_loop() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--graph-pairing-ttl", "2s"]);

    // Watch the stream from the start: the first event is the (empty) snapshot.
    let stream = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
        .get(format!("http://{}/api/graph/stream", server.api))
        .send()
        .unwrap();
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = BufReader::new(stream).lines();

    server.export(shop());
    let expected: BTreeMap<EdgeKey, (u64, u64)> = [
        (key("gateway", "orders", "sync"), (TRACES, 0)),
        (key("orders", "inventory", "sync"), (TRACES, TRACES / 5)),
        (key("orders", "orders-db", "sync"), (TRACES, 0)),
        (key("orders", "order-events", "async"), (TRACES, 0)),
        (key("order-events", "billing", "async"), (TRACES, 0)),
        (key("billing", "orders", "sync"), (TRACES, 0)),
    ]
    .into_iter()
    .collect();
    let settled = wait_for_graph(&server, |g| edges_of(g) == expected);

    let nodes = common::node_kinds(&settled);
    let want: std::collections::BTreeSet<(String, String)> = [
        ("billing", "service"),
        ("gateway", "service"),
        ("inventory", "service"),
        ("order-events", "queue"),
        ("orders", "service"),
        ("orders-db", "database"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(nodes, want);
    let loops = settled["loops"].as_array().unwrap();
    assert_eq!(loops.len(), 1, "{loops:?}");
    let mut members: Vec<&str> = loops[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["billing", "order-events", "orders"]);
    // Billing's CONSUMER starts a trace of its own, linked to orders' PRODUCER: once the
    // traces are finalized (one pairing TTL), every order's flow counts as having come back,
    // in the loop list and in SQL.
    wait_for_graph(&server, |g| g["loops"][0]["trace_loops"] == TRACES);
    assert_eq!(
        server.count("SELECT trace_loops FROM feedback_loops WHERE length = 3"),
        TRACES as i64
    );
    for edge in settled["edges"].as_array().unwrap() {
        for field in ["p50_ms", "p95_ms", "p99_ms"] {
            assert!(edge[field].as_f64().unwrap() > 0.0, "{field} of {edge}");
        }
    }
    let inventory = settled["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "inventory")
        .unwrap();
    let p50 = inventory["p50_ms"].as_f64().unwrap();
    assert!(
        (p50 - 10.0).abs() < 0.5,
        "client-observed latency of orders → inventory is 10 ms: {p50}"
    );

    // The same graph in SQL, live and through the table function.
    let rows =
        server.sql("SELECT source, target, kind, calls, errors FROM edges ORDER BY source, target")
            ["rows"]
            .clone();
    let from_sql: BTreeMap<EdgeKey, (u64, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = (
                r[0].as_str().unwrap().into(),
                r[1].as_str().unwrap().into(),
                r[2].as_str().unwrap().into(),
            );
            (key, (r[3].as_u64().unwrap(), r[4].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(from_sql, expected);
    let windowed =
        server.count("SELECT sum(calls) FROM edges_between(now() - INTERVAL '1 hour', now())");
    assert_eq!(windowed, 6 * TRACES as i64);
    assert_eq!(
        server.count("SELECT count(*) FROM feedback_loops WHERE length = 3"),
        1
    );
    assert_eq!(
        server.count("SELECT count(*) FROM nodes WHERE kind = 'database'"),
        1
    );
    // Graph and spans join in one query.
    let joined = server.count(
        "SELECT count(*) FROM spans s JOIN edges e ON s.service_name = e.source \
         WHERE e.target = 'inventory' AND s.kind = 'CLIENT' AND s.name = 'GET /stock'",
    );
    assert_eq!(joined, TRACES as i64);
    let listed = server.count("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('nodes', 'edges', 'feedback_loops')");
    assert_eq!(listed, 3);

    // The stream pushed the first snapshot, then deltas; a new edge arrives without a reload.
    // (Fresh ids: a span id seen before is a duplicate and adds nothing.)
    let mut t = Topology::starting_at(1_000_000);
    let trace = t.new_trace();
    let call = t.span(
        "gateway",
        &trace,
        None,
        CLIENT,
        "GET /promo",
        0,
        4,
        false,
        &[],
        &[],
    );
    t.span(
        "promotions",
        &trace,
        Some(&call),
        SERVER,
        "GET /promo",
        1,
        2,
        false,
        &[],
        &[],
    );
    server.export(t.requests());
    let mut saw_snapshot = false;
    let mut saw_new_edge = false;
    let mut event = String::new();
    for line in events.by_ref() {
        let line = line.unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
            saw_snapshot |= event == "snapshot";
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == "delta"
            && data.contains("\"promotions\"")
        {
            let delta: Value = serde_json::from_str(data).unwrap();
            let added = delta["edges_added"].as_array().unwrap();
            saw_new_edge = added
                .iter()
                .any(|e| e["source"] == "gateway" && e["target"] == "promotions");
            if saw_new_edge {
                break;
            }
        }
    }
    assert!(saw_snapshot, "the stream starts with a snapshot");
    assert!(saw_new_edge, "a new edge arrives as a delta");
}

#[test]
fn the_live_graph_equals_a_sql_self_join_over_the_stored_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--graph-pairing-ttl", "1s"]);
    let services = ["web", "cart", "pricing", "stock", "search", "auth"];
    let mut t = Topology::default();
    // A deterministic pseudo-random workload: call trees of depth up to 3.
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..2000 {
        let trace = t.new_trace();
        let first = services[next(services.len() as u64) as usize];
        let mut frontier = vec![(
            first,
            t.span(first, &trace, None, SERVER, "entry", 0, 30, false, &[], &[]),
        )];
        for depth in 0..3 {
            let mut children = Vec::new();
            for (service, parent) in &frontier {
                for _ in 0..next(3) {
                    let callee = services[next(services.len() as u64) as usize];
                    let error = next(10) == 0;
                    let offset = depth * 5 + 1;
                    let call = t.span(
                        service,
                        &trace,
                        Some(parent),
                        CLIENT,
                        "call",
                        offset,
                        8,
                        error,
                        &[],
                        &[],
                    );
                    let served = t.span(
                        callee,
                        &trace,
                        Some(&call),
                        SERVER,
                        "serve",
                        offset + 1,
                        5,
                        false,
                        &[],
                        &[],
                    );
                    children.push((callee, served));
                }
            }
            frontier = children;
        }
    }
    server.export(t.requests());

    let sql = "SELECT c.service_name AS source, s.service_name AS target, count(*) AS calls, \
               sum(CASE WHEN c.status_code = 'ERROR' OR s.status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors \
               FROM spans s JOIN spans c ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id \
               WHERE s.kind = 'SERVER' AND c.kind = 'CLIENT' \
               GROUP BY 1, 2 ORDER BY 1, 2";
    let oracle: BTreeMap<EdgeKey, (u64, u64)> = server.sql(sql)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = (
                r[0].as_str().unwrap().into(),
                r[1].as_str().unwrap().into(),
                "sync".to_string(),
            );
            (key, (r[2].as_u64().unwrap(), r[3].as_u64().unwrap()))
        })
        .collect();
    assert!(
        oracle.len() >= 20,
        "the workload covers most service pairs: {}",
        oracle.len()
    );
    let settled = wait_for_graph(&server, |g| edges_of(g) == oracle);
    assert_eq!(edges_of(&settled), oracle);
}

#[test]
fn the_graph_is_rebuilt_from_stored_spans_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--graph-pairing-ttl", "1s"];
    let server = Server::start(dir.path(), &args);
    server.export(shop());
    let before = edges_of(&wait_for_graph(&server, |g| edges_of(g).len() == 6));
    // A clean stop flushes every span to Parquet and empties the WAL: the graph after the
    // restart can only come from the segments.
    server.stop();
    let server = Server::start(dir.path(), &args);
    let after = wait_for_graph(&server, |g| edges_of(g) == before);
    assert_eq!(edges_of(&after), before);
    assert_eq!(after["loops"].as_array().unwrap().len(), 1);
}

/// The same requests with every time moved `by_ns` earlier.
fn moved_back(
    mut requests: Vec<ExportTraceServiceRequest>,
    by_ns: u64,
) -> Vec<ExportTraceServiceRequest> {
    for request in &mut requests {
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                for span in &mut scope.spans {
                    span.start_time_unix_nano -= by_ns;
                    span.end_time_unix_nano -= by_ns;
                }
            }
        }
    }
    requests
}

fn graph_of(server: &Server, from_ms: u64, to_ms: u64) -> Value {
    let answer = reqwest::blocking::get(format!(
        "http://{}/api/graph?from={from_ms}&to={to_ms}",
        server.api
    ))
    .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().unwrap()
}

/// What a window's graph says, without the window's own times.
fn content(graph: &Value) -> (Value, Value, Value) {
    (
        graph["nodes"].clone(),
        graph["edges"].clone(),
        graph["loops"].clone(),
    )
}

#[test]
fn a_window_older_than_the_horizon_is_rebuilt_from_stored_spans_with_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--graph-pairing-ttl", "1s", "--graph-horizon", "5m"];
    let server = Server::start(dir.path(), &args);
    // The shop twice: half an hour ago (beyond the 5-minute horizon: the live graph drops
    // its statistics) and now, with other ids.
    let base_ms = common::otlp::base_time_ns() / 1_000_000;
    let ago_ms = 30 * 60 * 1000;
    server.export(moved_back(shop(), ago_ms * 1_000_000));
    server.export(shop_from(Topology::starting_at(1_000_000)));
    let recent = (base_ms - 10_000, base_ms + 60_000);
    let old = (recent.0 - ago_ms, recent.1 - ago_ms);

    // The live graph of the recent window settles (amplification and per-trace loops come
    // after the pairing TTL) to exactly what the rebuild gives for the old one.
    let rebuilt = graph_of(&server, old.0, old.1);
    assert_eq!(edges_of(&rebuilt).len(), 6, "{rebuilt:#}");
    assert_eq!(rebuilt["loops"].as_array().unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = graph_of(&server, recent.0, recent.1);
        if content(&live) == content(&rebuilt) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "live {:#} != rebuilt {:#}",
            live["edges"],
            rebuilt["edges"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A window across the horizon: the old half rebuilt, the recent half from memory,
    // joined at a bucket edge. Every call counts once: twice the shop's calls per edge.
    let both = graph_of(&server, old.0, recent.1);
    let doubled: BTreeMap<EdgeKey, (u64, u64)> = edges_of(&rebuilt)
        .into_iter()
        .map(|(key, (calls, errors))| (key, (2 * calls, 2 * errors)))
        .collect();
    assert_eq!(edges_of(&both), doubled, "{both:#}");
    assert_eq!(
        both["nodes"].as_array().unwrap().len(),
        rebuilt["nodes"].as_array().unwrap().len()
    );
    assert_eq!(both["loops"].as_array().unwrap().len(), 1);

    // The same through SQL, and after a restart, when the spans are in Parquet only.
    let sql = format!(
        "SELECT source, target, calls FROM edges_between(to_timestamp_millis({}), to_timestamp_millis({})) ORDER BY source, target",
        old.0, old.1
    );
    let by_sql = server.sql(&sql)["rows"].clone();
    assert_eq!(by_sql.as_array().unwrap().len(), 6, "{by_sql:#}");
    server.stop();
    let server = Server::start(dir.path(), &args);
    assert_eq!(content(&graph_of(&server, old.0, old.1)), content(&rebuilt));
    assert_eq!(server.sql(&sql)["rows"], by_sql);
}

#[test]
fn the_pairing_counters_are_exposed_as_json_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--graph-pairing-ttl", "1s"]);
    // A CLIENT whose server never reports: after the TTL it is unpaired, and an edge to an
    // external node named from server.address.
    let mut t = Topology::default();
    let trace = t.new_trace();
    t.span(
        "checkout",
        &trace,
        None,
        CLIENT,
        "POST /charge",
        0,
        30,
        false,
        &[("server.address", "api.stripe.example")],
        &[],
    );
    server.export(t.requests());
    wait_for_graph(&server, |g| {
        edges_of(g).contains_key(&key("checkout", "api.stripe.example", "sync"))
    });

    let status: Value = reqwest::blocking::get(format!("http://{}/api/status", server.api))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["graph"]["spans_seen"], 1, "{status:#}");
    assert_eq!(status["graph"]["unpaired_spans"], 1, "{status:#}");
    assert_eq!(status["graph"]["virtual_calls"], 1, "{status:#}");
    assert_eq!(status["graph"]["pending_spans"], 0, "{status:#}");
    assert_eq!(status["store"]["spans_written"], 1, "{status:#}");

    let metrics = reqwest::blocking::get(format!("http://{}/metrics", server.api)).unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().unwrap();
    for line in [
        "# TYPE flowscope_graph_unpaired_spans_total counter",
        "flowscope_graph_unpaired_spans_total 1",
        "flowscope_graph_pending_spans 0",
        "flowscope_store_spans_written_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn buckets_past_the_horizon_are_kept_and_answer_old_windows_like_the_live_graph() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--graph-pairing-ttl",
        "1s",
        "--graph-bucket",
        "1s",
        "--graph-horizon",
        "10s",
    ];
    let server = Server::start(dir.path(), &args);
    // The shop, moved to have started a second ago: live for ten seconds, then trimmed.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let base_ms = common::otlp::base_time_ns() / 1_000_000;
    let ahead_ms = now_ms - 1_000 - base_ms;
    let mut requests = shop();
    for request in &mut requests {
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                for span in &mut scope.spans {
                    span.start_time_unix_nano += ahead_ms * 1_000_000;
                    span.end_time_unix_nano += ahead_ms * 1_000_000;
                }
            }
        }
    }
    server.export(requests);
    let window = (now_ms - 3_000, now_ms + 1_000);
    // Settled: all six edges, then one pairing TTL and a tick for amplification and loops.
    let deadline = Instant::now() + Duration::from_secs(5);
    while edges_of(&graph_of(&server, window.0, window.1)).len() < 6 {
        assert!(Instant::now() < deadline, "the shop's edges did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let live = graph_of(&server, window.0, window.1);
    assert_eq!(edges_of(&live).len(), 6, "{live:#}");

    // Past the horizon (no bucket left in memory) the same window comes from the kept
    // buckets, unchanged.
    let status = || -> Value {
        reqwest::blocking::get(format!("http://{}/api/status", server.api))
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while status()["graph"]["buckets"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the buckets were never trimmed: {:#}",
            status()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let kept = graph_of(&server, window.0, window.1);
    assert_eq!(content(&kept), content(&live));
    let counters = status();
    assert_eq!(
        counters["graph"]["old_windows_from_kept_buckets"], 1,
        "{counters:#}"
    );
    assert_eq!(
        counters["graph"]["old_windows_rebuilt_from_spans"], 0,
        "{counters:#}"
    );
    let files: Vec<String> = std::fs::read_dir(dir.path().join("graph"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|n| n.starts_with("buckets-"))
            && files.contains(&"covered.log".to_string()),
        "{files:?}"
    );
}

/// GETs `/api/graph` with `query` and extra headers: status, headers, body bytes.
fn get_graph(
    server: &Server,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request =
        reqwest::blocking::Client::new().get(format!("http://{}/api/graph{query}", server.api));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().unwrap().to_vec())
}

fn ids(graph: &Value) -> Vec<String> {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

fn pairs(graph: &Value) -> Vec<(String, String)> {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn filters_and_graph_questions_answer_from_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--graph-pairing-ttl", "2s"]);
    server.export(shop());
    let whole = wait_for_graph(&server, |g| edges_of(g).len() == 6);
    assert_eq!(whole["truncated"], false);
    assert_eq!(whole["totals"]["nodes"], 6);
    assert_eq!(whole["totals"]["edges"], 6);

    // A neighbourhood, each way.
    let up = server.get_json("/api/graph?focus=inventory&hops=1&direction=up");
    assert_eq!(ids(&up), owned(&["inventory", "orders"]));
    assert_eq!(pairs(&up), vec![("orders".into(), "inventory".into())]);
    let down = server.get_json("/api/graph?focus=orders&hops=1&direction=down");
    assert_eq!(
        ids(&down),
        owned(&["inventory", "order-events", "orders", "orders-db"])
    );
    assert_eq!(pairs(&down).len(), 3, "{down:#}");
    assert!(down["loops"].as_array().unwrap().is_empty());
    // Both ways, two hops from billing: what it calls and what calls it (not the gateway,
    // three hops up), the whole loop, and so the loop itself.
    let around = server.get_json("/api/graph?focus=billing&hops=2");
    assert_eq!(
        ids(&around),
        owned(&[
            "billing",
            "inventory",
            "order-events",
            "orders",
            "orders-db"
        ])
    );
    assert_eq!(around["loops"].as_array().unwrap().len(), 1);
    assert_eq!(around["totals"]["nodes"], 6);
    // The live window's judged snapshot was shared above (`wait_for_graph` asked for it); an
    // explicit window never is, so its neighbourhoods are cut from the part of the window
    // they need, and must answer the same.
    for (query, shared) in [
        ("focus=inventory&hops=1&direction=up", &up),
        ("focus=orders&hops=1&direction=down", &down),
        ("focus=billing&hops=2", &around),
    ] {
        let computed = server.get_json(&format!("/api/graph?{query}&from=1h"));
        assert_eq!(ids(&computed), ids(shared), "{query}");
        assert_eq!(pairs(&computed), pairs(shared), "{query}");
        assert_eq!(computed["loops"], shared["loops"], "{query}");
        assert_eq!(computed["totals"], shared["totals"], "{query}");
        let calls = |g: &Value| -> Vec<Value> {
            g["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["calls"].clone())
                .collect()
        };
        assert_eq!(calls(&computed), calls(shared), "{query}");
    }
    let (status, _, body) = get_graph(&server, "?focus=nope&from=1h", &[]);
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("`nope`"));

    // Kinds, top, the cap.
    let services = server.get_json("/api/graph?kinds=service");
    assert_eq!(
        ids(&services),
        owned(&["billing", "gateway", "inventory", "orders"])
    );
    assert!(
        services["loops"].as_array().unwrap().is_empty(),
        "the loop runs through a queue"
    );
    let failing = server.get_json("/api/graph?top=1&by=errors");
    assert_eq!(ids(&failing), owned(&["inventory"]));
    let capped = server.get_json("/api/graph?max_nodes=2");
    assert_eq!(capped["truncated"], true);
    assert_eq!(ids(&capped).len(), 2);
    assert_eq!(capped["totals"]["nodes"], 6);

    // Mistakes say what to do.
    let (status, _, body) = get_graph(&server, "?focus=nope", &[]);
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("`nope`"));
    for bad in [
        "?focus=orders&direction=sideways",
        "?kinds=lambda",
        "?by=errors",
        "?hops=2",
    ] {
        let (status, _, body) = get_graph(&server, bad, &[]);
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }

    // A fixed window is cacheable: the same ETag, and 304 when the client has it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let fixed = format!("?from={}&to={}", now_ms - 3_600_000, now_ms + 60_000);
    let (status, headers, plain) = get_graph(&server, &fixed, &[]);
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, _, body) = get_graph(&server, &fixed, &[("if-none-match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));
    // Gzipped for a client that accepts it, the same bytes once inflated.
    let (status, headers, gzipped) = get_graph(&server, &fixed, &[("accept-encoding", "gzip")]);
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(gzipped.as_slice()),
        &mut inflated,
    )
    .unwrap();
    assert_eq!(inflated, plain);
    assert!(gzipped.len() < plain.len());

    // Graph questions, in SQL and the API, agree with the edges.
    let rows = |sql: &str| server.sql(sql)["rows"].as_array().unwrap().clone();
    let radius = rows("SELECT node, hops, via, calls FROM blast_radius('inventory', 3)");
    let expected = serde_json::json!([
        ["orders", 1, "inventory", TRACES],
        ["billing", 2, "orders", TRACES],
        ["gateway", 2, "orders", TRACES],
        ["order-events", 3, "billing", TRACES],
    ]);
    assert_eq!(Value::Array(radius), expected);
    let direct = rows("SELECT node FROM blast_radius('orders', 1) ORDER BY node");
    let callers = rows("SELECT source FROM edges WHERE target = 'orders' ORDER BY source");
    assert_eq!(direct, callers);
    let deps = rows("SELECT node, hops FROM dependencies('gateway', 2) ORDER BY hops, node");
    assert_eq!(
        Value::Array(deps),
        serde_json::json!([
            ["orders", 1],
            ["inventory", 2],
            ["order-events", 2],
            ["orders-db", 2]
        ])
    );
    let paths = rows("SELECT nodes, hops, calls FROM paths('gateway', 'inventory', 4)");
    assert_eq!(
        Value::Array(paths),
        serde_json::json!([[["gateway", "orders", "inventory"], 2, TRACES]])
    );
    let (status, body) = server.sql_status("SELECT * FROM blast_radius('nope', 2)");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`nope`"), "{body}");
    let api = server.get_json("/api/graph/blast_radius?node=inventory&hops=3");
    assert_eq!(api["callers"].as_array().unwrap().len(), 4, "{api:#}");
    // An explicit window is never shared: its answer comes from the part of the window
    // within the hops (`judged_around`), and must be the same, each way.
    let computed = server.get_json("/api/graph/blast_radius?node=inventory&hops=3&from=1h");
    assert_eq!(computed["callers"], api["callers"], "{computed:#}");
    let shared = server.get_json("/api/graph/dependencies?node=gateway&hops=2");
    let computed = server.get_json("/api/graph/dependencies?node=gateway&hops=2&from=1h");
    assert!(
        !shared["dependencies"].as_array().unwrap().is_empty(),
        "{shared:#}"
    );
    assert_eq!(
        computed["dependencies"], shared["dependencies"],
        "{computed:#}"
    );
    let (status, _, _) = get_graph(&server, "/blast_radius?node=nope&hops=2&from=1h", &[]);
    assert_eq!(status, 404);
    let api = server.get_json("/api/graph/paths?from_node=gateway&to_node=inventory");
    assert_eq!(
        api["paths"][0]["nodes"],
        serde_json::json!(["gateway", "orders", "inventory"])
    );

    server.stop();
}

/// Nodes carry their services' namespace (and other placement attributes) as the spans'
/// resources say, and `group_by` folds them into one node per namespace, each expandable.
#[test]
fn nodes_carry_their_namespace_and_group_by_folds_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--graph-pairing-ttl", "2s"]);
    let mut requests = shop();
    for request in &mut requests {
        for resource_spans in &mut request.resource_spans {
            let resource = resource_spans.resource.as_mut().unwrap();
            let service = resource.attributes[0]
                .value
                .as_ref()
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap();
            let namespace = match service.as_str() {
                "gateway" => "edge",
                "billing" => "finance",
                _ => "shop",
            };
            resource.attributes.push(common::otlp::string_attribute(
                "service.namespace",
                namespace,
            ));
            resource.attributes.push(common::otlp::string_attribute(
                "cloud.availability_zone",
                "eu-west-1a",
            ));
        }
    }
    server.export(requests);
    let whole = wait_for_graph(&server, |g| edges_of(g).len() == 6);
    let orders = whole["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "orders")
        .unwrap();
    assert_eq!(
        orders["attributes"]["service.namespace"], "shop",
        "{orders}"
    );
    assert_eq!(
        orders["attributes"]["cloud.availability_zone"],
        "eu-west-1a"
    );
    let db = whole["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "orders-db")
        .unwrap();
    assert!(
        db.get("attributes").is_none(),
        "a database sends no spans: {db}"
    );

    // The same attributes in SQL, typed like the spans' resource attributes.
    let by_namespace = server.sql(
        "SELECT attributes['service.namespace'] AS namespace, count(*) AS services \
         FROM nodes WHERE kind = 'service' GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        by_namespace["rows"],
        serde_json::json!([["edge", 1], ["finance", 1], ["shop", 2]]),
        "{by_namespace}"
    );
    let grouped = server.get_json("/api/graph?group_by=service.namespace");
    assert_eq!(
        ids(&grouped),
        owned(&[
            "group:edge",
            "group:finance",
            "group:shop",
            "order-events",
            "orders-db"
        ])
    );
    let shop_group = grouped["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "group:shop")
        .unwrap();
    assert_eq!(shop_group["kind"], "group");
    assert_eq!(shop_group["group"]["value"], "shop");
    assert_eq!(
        shop_group["group"]["members"],
        serde_json::json!(["inventory", "orders"])
    );
    let calls_of = |graph: &Value, id: &str| -> u64 {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()["calls"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        calls_of(&grouped, "group:shop"),
        calls_of(&whole, "orders") + calls_of(&whole, "inventory")
    );
    // orders → inventory is inside the group; the other five edges fold to the groups.
    let mut folded = pairs(&grouped);
    folded.sort();
    assert_eq!(
        folded,
        vec![
            ("group:edge".into(), "group:shop".into()),
            ("group:finance".into(), "group:shop".into()),
            ("group:shop".into(), "order-events".into()),
            ("group:shop".into(), "orders-db".into()),
            ("order-events".into(), "group:finance".into()),
        ]
    );
    let whole_edges = edges_of(&whole);
    let gateway_calls = whole_edges[&("gateway".into(), "orders".into(), "sync".into())].0;
    assert_eq!(
        edges_of(&grouped)[&("group:edge".into(), "group:shop".into(), "sync".into())].0,
        gateway_calls
    );
    assert_eq!(
        grouped["loops"].as_array().unwrap().len(),
        1,
        "the loop through the queue runs between groups: {grouped:#}"
    );
    assert_eq!(grouped["totals"]["nodes"], 6);
    // The same fold in SQL: the groups' rows and the edges between them.
    let sql_nodes =
        server.sql("SELECT id, kind, calls FROM nodes_grouped('service.namespace') ORDER BY id");
    let sql_ids: Vec<String> = sql_nodes["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sql_ids, ids(&grouped), "{sql_nodes}");
    let shop_row = sql_nodes["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[0] == "group:shop")
        .unwrap();
    assert_eq!(shop_row[1], "group");
    assert_eq!(shop_row[2].as_u64(), Some(calls_of(&grouped, "group:shop")));
    let sql_edges = server.sql(
        "SELECT source, target, calls FROM edges_grouped('service.namespace', \
         now() - INTERVAL '15 minutes', now()) ORDER BY 1, 2",
    );
    let sql_pairs: Vec<(String, String)> = sql_edges["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().to_string(),
                row[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(sql_pairs, folded, "{sql_edges}");
    let (status, body) = server.sql_status("SELECT * FROM nodes_grouped(42)");
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("'service.namespace'"), "{body}");

    // A group opened in place.
    let open = server.get_json("/api/graph?group_by=service.namespace&expand=shop");
    assert_eq!(
        ids(&open),
        owned(&[
            "group:edge",
            "group:finance",
            "inventory",
            "order-events",
            "orders",
            "orders-db"
        ])
    );
    // By zone: everything that sends spans is in one.
    let zones = server.get_json("/api/graph?group_by=cloud.availability_zone&kinds=service");
    assert_eq!(ids(&zones), owned(&["group:eu-west-1a"]));

    let too_many: Vec<String> = (0..1001).map(|i| format!("ns{i}")).collect();
    let (status, _, body) = get_graph(
        &server,
        &format!("?group_by=service.namespace&expand={}", too_many.join(",")),
        &[],
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("at most 1000 groups"));
    for bad in ["?group_by=team", "?expand=shop"] {
        let (status, _, body) = get_graph(&server, bad, &[]);
        assert_eq!(status, 400, "{bad}");
        let text = String::from_utf8_lossy(&body).to_string();
        assert!(text.contains("group_by"), "{bad}: {text}");
    }
}
