//! `GET /api/traces/search` against the real binary fed known traces over OTLP/gRPC: each
//! search finds exactly the traces it should, the answer's SQL runs in the console to the
//! same traces, injection attempts are data, and bad input is a 400 that says what to do.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Server;
use common::search_traces::{SearchTraces, search_traces};
use serde_json::Value;

/// `application/x-www-form-urlencoded`, as a browser writes a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn search(server: &Server, params: &[(&str, &str)]) -> (u16, Value) {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let response = reqwest::blocking::Client::new()
        .get(format!(
            "http://{}/api/traces/search?{}",
            server.api,
            query.join("&")
        ))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn found(server: &Server, params: &[(&str, &str)]) -> BTreeSet<String> {
    let (status, body) = search(server, params);
    assert_eq!(status, 200, "{params:?}: {body}");
    ids(&body)
}

fn ids(body: &Value) -> BTreeSet<String> {
    body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn started() -> (tempfile::TempDir, Server, SearchTraces) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (requests, traces) = search_traces();
    server.export(requests);
    // Acknowledged spans are in SQL within a second: wait for all of them, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.count("SELECT count(*) FROM spans") < 25 {
        assert!(Instant::now() < deadline, "the spans did not arrive");
        std::thread::sleep(Duration::from_millis(100));
    }
    (dir, server, traces)
}

#[test]
fn searches_find_exactly_the_matching_traces() {
    let (_dir, server, t) = started();
    let gold = [("attributes", "customer.tier=gold")];
    assert_eq!(
        found(&server, &gold),
        set(&[&t.gold_slow, &t.gold_fast, &t.gold_failed, &t.shipping])
    );
    assert_eq!(
        found(&server, &[gold[0], ("min_duration", "100ms")]),
        set(&[&t.gold_slow, &t.gold_failed, &t.shipping])
    );
    assert_eq!(
        found(
            &server,
            &[gold[0], ("min_duration", "100ms"), ("service", "checkout")]
        ),
        set(&[&t.gold_slow, &t.gold_failed])
    );
    assert_eq!(
        found(
            &server,
            &[("attributes", "customer.tier"), ("max_duration", "100ms")]
        ),
        set(&[&t.gold_fast])
    );
    assert_eq!(
        found(&server, &[("attributes", "http.status_code>=500")]),
        set(&[&t.gold_failed])
    );
    assert_eq!(
        found(
            &server,
            &[("attributes", "http.status_code<500 customer.tier!=gold")]
        ),
        set(&[&t.silver])
    );
    assert_eq!(
        found(&server, &[("attributes", "customer.tier~^sil")]),
        set(&[&t.silver])
    );
    assert_eq!(
        found(&server, &[("status", "error"), ("service", "checkout")]),
        set(&[&t.gold_failed])
    );
    assert_eq!(
        found(
            &server,
            &[("service", "payments"), ("operation", "POST /pay")]
        ),
        set(&[&t.gold_slow])
    );
    // From and to bound where a matching span starts: an hour before the spans, nothing.
    assert_eq!(
        found(
            &server,
            &[("service", "checkout"), ("from", "2h"), ("to", "1h")]
        )
        .len(),
        0,
    );

    // Ordered and limited: the two longest with a tier, longest first, and "there may be more".
    let (status, body) = search(
        &server,
        &[
            ("attributes", "customer.tier"),
            ("order", "longest"),
            ("limit", "2"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [t.shipping.as_str(), t.gold_failed.as_str()]);
    assert_eq!(body["limited"], true);
    assert_eq!(body["limit"], 2);

    // What a trace is listed with, Jaeger's way.
    let (_, body) = search(
        &server,
        &[
            ("attributes", "customer.tier=gold"),
            ("service", "checkout"),
            ("min_duration", "290ms"),
            ("max_duration", "310ms"),
        ],
    );
    let trace = &body["traces"][0];
    assert_eq!(trace["trace_id"], t.gold_slow.as_str(), "{body}");
    assert_eq!(trace["root_service"], "checkout");
    assert_eq!(trace["root_operation"], "POST /cart");
    assert_eq!(trace["spans"], 3);
    assert_eq!(trace["errors"], 0);
    assert_eq!(
        trace["services"],
        serde_json::json!(["checkout", "payments"])
    );
    assert!(
        (trace["duration_ms"].as_f64().unwrap() - 300.0).abs() < 1e-6,
        "{trace}"
    );
    assert!(trace["start_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["limited"], false);
    let (_, body) = search(&server, &[("status", "error"), ("service", "checkout")]);
    assert_eq!(body["traces"][0]["errors"], 1, "{body}");

    // The SQL in the answer runs as it is in the console, to the same traces.
    let (_, body) = search(&server, &[gold[0], ("min_duration", "100ms")]);
    let sql = body["sql"].as_str().unwrap();
    let console = server.sql(sql);
    let console_ids: BTreeSet<String> = console["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(console_ids, ids(&body));
}

#[test]
fn injection_attempts_are_only_data() {
    let (_dir, server, t) = started();
    // The stored value with quotes in it is found by exactly that value, and by nothing else.
    assert_eq!(
        found(
            &server,
            &[("attributes", r#"customer.tier="gold' OR '1'='1""#)]
        ),
        set(&[&t.quoted])
    );
    for hostile in [
        "x' OR '1'='1",
        "checkout' OR 'a'='a",
        "'; DROP TABLE spans; --",
        "checkout'--",
        "\\' OR 1=1 --",
        "checkout\u{0}",
    ] {
        for field in ["service", "operation"] {
            let (status, body) = search(&server, &[(field, hostile)]);
            assert_eq!(status, 200, "{field}={hostile}: {body}");
            assert_eq!(ids(&body).len(), 0, "{field}={hostile} matched: {body}");
        }
        let quoted_key = format!(
            "\"{}\"=x",
            hostile.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let (status, body) = search(&server, &[("attributes", &quoted_key)]);
        assert_eq!(status, 200, "{quoted_key}: {body}");
        assert_eq!(ids(&body).len(), 0, "{quoted_key}: {body}");
    }
    // The regex operator takes a pattern, not SQL.
    let (status, body) = search(&server, &[("attributes", r#"customer.tier~"gold' OR""#)]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), set(&[&t.quoted]));
    // The store is intact.
    assert_eq!(server.count("SELECT count(*) FROM spans"), 25);
}

#[test]
fn bad_input_is_400_with_what_to_do() {
    let (_dir, server, _) = started();
    for (params, says) in [
        (
            vec![("status", "failed")],
            "`status` must be ok, error or unset",
        ),
        (
            vec![("attributes", "customer.tier~(gold")],
            "invalid regular expression",
        ),
        (
            vec![("attributes", "http.status_code>high")],
            "not a number",
        ),
        (vec![("attributes", "a=\"open")], "unterminated quote"),
        (vec![("min_duration", "100")], "needs a unit"),
        (
            vec![("min_duration", "2s"), ("max_duration", "1s")],
            "longer than",
        ),
        (vec![("limit", "0")], "from 1 to 1000"),
        (vec![("limit", "100000")], "from 1 to 1000"),
        (vec![("from", "last tuesday")], "`from`"),
        (vec![("order", "random")], "`order` must be"),
        (vec![("colour", "red")], "the parameters are"),
    ] {
        let (status, body) = search(&server, &params);
        assert_eq!(status, 400, "{params:?}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(says), "{params:?}: {message}");
    }
}
