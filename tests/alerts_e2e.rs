//! Alert rules end to end on the real binary and a real HTTP receiver: a rule over spans we
//! send fires for the right label sets, each notification is an Alertmanager v4 body whose
//! Standard Webhooks signature Python's `hmac` verifies, and the resolved notification follows
//! when later spans clear the condition.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::Server;
use common::alerting::{Receiver, api, spans_named, wait_for};
use common::otlp::request;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Deserialize;
use serde_json::{Value, json};

/// Alertmanager's documented webhook body (v4), field for field; unknown fields refused so
/// that a renamed field fails here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AlertmanagerMessage {
    version: String,
    group_key: String,
    #[allow(dead_code)]
    truncated_alerts: u64,
    status: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    common_labels: BTreeMap<String, String>,
    #[allow(dead_code)]
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: String,
    alerts: Vec<AlertmanagerAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AlertmanagerAlert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

const OPERATION: &str = "alert-e2e-charge";

/// Fires per service while its `OPERATION` spans hold more errors than successes.
const RULE_SQL: &str = "SELECT service_name AS service, \
     sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors \
     FROM spans WHERE name = 'alert-e2e-charge' GROUP BY service_name \
     HAVING sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) > sum(CASE WHEN status_code = 'OK' THEN 1 ELSE 0 END)";

/// `count` spans of `OPERATION` with status code `code` (1 OK, 2 ERROR).
fn spans(first: u64, count: u64, code: i32) -> Vec<Span> {
    spans_named(OPERATION, first, count, code)
}

/// The Standard Webhooks signature computed by Python's `hmac` module: an implementation
/// independent of the server's.
fn python_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use std::io::Write;
    let script = "import sys, hmac, hashlib, base64\n\
        key = base64.b64decode(sys.argv[1].removeprefix('whsec_'))\n\
        body = sys.stdin.buffer.read()\n\
        mac = hmac.new(key, f'{sys.argv[2]}.{sys.argv[3]}.'.encode() + body, hashlib.sha256)\n\
        print('v1,' + base64.b64encode(mac.digest()).decode(), end='')";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, id, timestamp])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test needs it)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Creates a webhook named `name` pointing at the receiver, and returns its id.
fn add_webhook(server: &Server, receiver: &Receiver, name: &str) -> i64 {
    let (status, created) = api(
        server,
        reqwest::Method::POST,
        "/api/webhooks",
        Some(json!({"name": name, "url": receiver.url(name), "secret": SECRET})),
    );
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().expect("a webhook id")
}

/// The alert notifications `name` received, once each (a retry repeats its webhook-id),
/// in the order they were created (message ids sort by creation), signatures checked.
fn delivered(receiver: &Receiver, name: &str) -> Vec<AlertmanagerMessage> {
    let mut seen = BTreeMap::new();
    for request in receiver.received() {
        if request.path != format!("/hook/{name}") {
            continue;
        }
        assert_eq!(
            request.signature,
            python_signature(SECRET, &request.id, &request.timestamp, &request.body),
            "the signature verifies with an independent HMAC"
        );
        let message: AlertmanagerMessage =
            serde_json::from_slice(&request.body).unwrap_or_else(|e| {
                panic!(
                    "not an Alertmanager v4 message ({e}): {}",
                    String::from_utf8_lossy(&request.body)
                )
            });
        seen.insert(request.id, message);
    }
    seen.into_values().collect()
}

/// Waits until both receivers have `count` notifications, and returns them.
fn wait_delivered(
    server: &Server,
    receiver: &Receiver,
    names: &[&str],
    count: usize,
) -> Vec<Vec<AlertmanagerMessage>> {
    wait_for(&format!("{count} notifications each"), server, || {
        let all: Vec<_> = names.iter().map(|n| delivered(receiver, n)).collect();
        all.iter().all(|m| m.len() >= count).then_some(all)
    })
}

#[test]
fn a_rule_fires_for_the_right_services_and_resolves_when_its_condition_clears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            "--external-url",
            "https://flowscope.example.com/",
            "--allow-private-webhooks",
        ],
    );
    let receiver = Receiver::start();
    let ops = add_webhook(&server, &receiver, "ops");
    let chat = add_webhook(&server, &receiver, "chat");
    let names = ["ops", "chat"];

    // checkout and payments fail, cart succeeds.
    server.export(vec![
        request("checkout", spans(0, 3, 2)),
        request("payments", spans(100, 2, 2)),
        request("cart", spans(200, 4, 1)),
    ]);
    let (status, created) = api(
        &server,
        reqwest::Method::POST,
        "/api/alert-rules",
        Some(json!({
            "name": "charge errors",
            "sql": RULE_SQL,
            "interval": "1s",
            "for": "0s",
            "group_wait": "0s",
            "group_interval": "1s",
            "webhooks": [ops, chat],
            "annotations": {"summary": "charges fail"},
        })),
    );
    assert_eq!(status, 201, "{created}");
    let rule_id = created["id"].as_i64().expect("an id");

    let fired = wait_delivered(&server, &receiver, &names, 1);
    for (name, messages) in names.iter().zip(&fired) {
        assert_eq!(messages.len(), 1, "one message per webhook: {messages:?}");
        assert_eq!(messages[0].receiver, *name);
    }
    let message = &fired[0][0];
    assert_eq!(message.version, "4");
    assert_eq!(message.status, "firing");
    assert_eq!(message.group_key, "{}:{alertname=\"charge errors\"}");
    assert_eq!(message.group_labels["alertname"], "charge errors");
    assert_eq!(message.common_labels["alertname"], "charge errors");
    assert_eq!(message.external_url, "https://flowscope.example.com");
    let mut services: Vec<&str> = message
        .alerts
        .iter()
        .map(|a| a.labels["service"].as_str())
        .collect();
    services.sort_unstable();
    assert_eq!(
        services,
        ["checkout", "payments"],
        "cart succeeds, so it does not fire"
    );
    for alert in &message.alerts {
        assert_eq!(alert.status, "firing");
        assert_eq!(alert.ends_at, "0001-01-01T00:00:00Z");
        assert_eq!(alert.annotations["summary"], "charges fail");
        assert!(
            alert.annotations["values"].starts_with("errors="),
            "{alert:?}"
        );
        assert!(alert.starts_at.ends_with('Z'), "{}", alert.starts_at);
        assert_eq!(alert.fingerprint.len(), 16);
        assert_eq!(
            alert.generator_url,
            format!("https://flowscope.example.com/#/alerts/rule/{rule_id}")
        );
    }
    // Examples list failing traces first: checkout's three are its three errors (spans
    // 0, 1 and 2, whose trace ids end in their number plus one).
    let checkout = message
        .alerts
        .iter()
        .find(|a| a.labels["service"] == "checkout")
        .expect("checkout fires");
    let mut examples: Vec<&str> = checkout.annotations["example_trace_ids"]
        .split(", ")
        .collect();
    examples.sort_unstable();
    assert_eq!(
        examples,
        [
            "00000000000000000000000000000001",
            "00000000000000000000000000000002",
            "00000000000000000000000000000003"
        ]
    );

    let (_, alerts) = api(&server, reqwest::Method::GET, "/api/alerts", None);
    let current = alerts["alerts"].as_array().expect("alerts");
    assert_eq!(current.len(), 2, "{alerts}");
    assert!(current.iter().all(|a| a["state"] == "firing"));

    // checkout recovers: more successes than errors. payments keeps failing, so the
    // group's notification stays firing and carries both.
    server.export(vec![request("checkout", spans(300, 5, 1))]);
    let resolved = wait_delivered(&server, &receiver, &names, 2);
    for messages in &resolved {
        assert_eq!(messages.len(), 2, "{messages:?}");
        let message = &messages[1];
        assert_eq!(message.status, "firing");
        let alerts: Vec<(&str, &str)> = message
            .alerts
            .iter()
            .map(|a| (a.labels["service"].as_str(), a.status.as_str()))
            .collect();
        assert_eq!(alerts, [("payments", "firing"), ("checkout", "resolved")]);
        let alert = &message.alerts[1];
        assert_ne!(alert.ends_at, "0001-01-01T00:00:00Z");
    }
    let (_, alerts) = api(&server, reqwest::Method::GET, "/api/alerts", None);
    let current = alerts["alerts"].as_array().expect("alerts");
    assert_eq!(current.len(), 1, "{alerts}");
    assert_eq!(current[0]["labels"]["service"], "payments");
    let history = alerts["history"].as_array().expect("history");
    assert_eq!(history[0]["status"], "resolved", "newest first: {alerts}");

    let (status, rule) = api(
        &server,
        reqwest::Method::GET,
        &format!("/api/alert-rules/{rule_id}"),
        None,
    );
    assert_eq!(status, 200);
    assert!(rule["last_evaluation"].is_string(), "{rule}");
    assert_eq!(rule["last_error"], Value::Null);

    // An edited rule takes effect without a restart: now only checkout is returned, so
    // checkout fires again and payments resolves, in one message per webhook.
    let (status, body) = api(
        &server,
        reqwest::Method::PUT,
        &format!("/api/alert-rules/{rule_id}"),
        Some(json!({
            "name": "charge errors",
            "sql": "SELECT 'checkout' AS service",
            "interval": "1s",
            "group_wait": "0s",
            "group_interval": "1s",
            "webhooks": [ops, chat],
        })),
    );
    assert_eq!(status, 200, "{body}");
    let edited = wait_delivered(&server, &receiver, &names, 3);
    let message = &edited[0][2];
    assert_eq!(
        message.status, "firing",
        "any firing alert makes the message firing"
    );
    let mut changes: Vec<(&str, &str)> = message
        .alerts
        .iter()
        .map(|a| (a.labels["service"].as_str(), a.status.as_str()))
        .collect();
    changes.sort_unstable();
    assert_eq!(changes, [("checkout", "firing"), ("payments", "resolved")]);

    // Deleting the rule resolves what it had firing.
    let (status, _) = api(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/alert-rules/{rule_id}"),
        None,
    );
    assert_eq!(status, 204);
    let deleted = wait_delivered(&server, &receiver, &names, 4);
    let last = &deleted[1][3];
    assert_eq!(last.status, "resolved");
    assert_eq!(last.alerts[0].labels["service"], "checkout");
    let (_, alerts) = api(&server, reqwest::Method::GET, "/api/alerts", None);
    assert_eq!(alerts["alerts"], json!([]));
}

#[test]
fn alerts_about_a_service_or_an_edge_carry_its_neighbours_loops_and_traces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let receiver = Receiver::start();
    let ops = add_webhook(&server, &receiver, "ops");
    let mut shop = common::topology::Topology::default();
    for i in 0..10 {
        shop.shop_order(i);
    }
    server.export(shop.requests());
    wait_for("the shop's six edges", &server, || {
        (server.count("SELECT count(*) FROM edges") == 6).then_some(())
    });

    let create = |name: &str, sql: &str| {
        let (status, body) = api(
            &server,
            reqwest::Method::POST,
            "/api/alert-rules",
            Some(
                json!({"name": name, "sql": sql, "interval": "1s", "group_wait": "0s", "webhooks": [ops]}),
            ),
        );
        assert_eq!(status, 201, "{body}");
    };
    create("orders watch", "SELECT 'orders' AS service");
    // A rule over the graph itself: every edge with errors (orders -> inventory fails).
    create(
        "failing edges",
        "SELECT source, target, errors FROM edges WHERE errors > 0",
    );
    let messages = wait_delivered(&server, &receiver, &["ops"], 2).remove(0);
    let alert_of = |rule: &str| {
        messages
            .iter()
            .find(|m| m.group_labels["alertname"] == rule)
            .map(|m| &m.alerts[0])
            .unwrap_or_else(|| panic!("no notification of {rule}: {messages:?}"))
    };

    let service = alert_of("orders watch");
    assert_eq!(service.annotations["upstream"], "billing, gateway");
    assert_eq!(
        service.annotations["downstream"],
        "inventory, order-events, orders-db"
    );
    let loop_text = &service.annotations["loops"];
    for member in ["orders", "order-events", "billing"] {
        assert!(loop_text.contains(member), "{loop_text}");
    }
    assert_eq!(
        service.annotations["example_trace_ids"].split(", ").count(),
        3
    );

    let edge = alert_of("failing edges");
    assert_eq!(edge.labels["source"], "orders");
    assert_eq!(edge.labels["target"], "inventory");
    assert_eq!(edge.annotations["upstream"], "billing, gateway");
    assert!(
        !edge.annotations.contains_key("downstream"),
        "inventory calls nothing: {:?}",
        edge.annotations
    );
    assert!(
        !edge.annotations.contains_key("loops"),
        "inventory is in no loop"
    );
}
