//! Two `flowscope serve` processes on one PostgreSQL metadata database (issue 23): they
//! share alert rules, webhooks and alert state, each keeps its own spans, a rule is
//! evaluated by one of them at a time, and every notification reaches its receiver once,
//! although both delivery workers read the same outbox.
//!
//! Needs a PostgreSQL: `FLOWSCOPE_TEST_POSTGRES` (an admin URL), which `scripts/test` sets
//! in its second pass after starting one in a temporary directory. Without it the test says
//! so and passes: its first-pass twin is every other test, on SQLite.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Server;
use common::alerting::{Receiver, api, wait_for};
use common::otlp::{request, span};
use serde_json::json;

/// A database of its own in the test PostgreSQL, or `None` (said) without one.
fn shared_database() -> Option<String> {
    let Ok(admin) = std::env::var("FLOWSCOPE_TEST_POSTGRES") else {
        eprintln!(
            "FLOWSCOPE_TEST_POSTGRES is not set: nothing to share; scripts/test runs this in its PostgreSQL pass"
        );
        return None;
    };
    let name = format!(
        "flowscope_shared_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    Some(common::postgres::ensure_database(&admin, &name))
}

#[test]
fn two_servers_on_one_postgres_share_rules_and_notify_once() {
    let Some(url) = shared_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--metadata",
        url.as_str(),
        "--allow-private-webhooks",
        "--webhook-retry-base",
        "200ms",
    ];
    let a = Server::start(&dir.path().join("a"), &args);
    let b = Server::start(&dir.path().join("b"), &args);
    let receiver = Receiver::start();

    // Made through one, seen through the other.
    let (status, created) = api(
        &a,
        reqwest::Method::POST,
        "/api/webhooks",
        Some(json!({"name": "ops", "url": receiver.url("ops")})),
    );
    assert_eq!(status, 201, "{created}");
    let webhook = created["id"].as_i64().unwrap();
    let (status, listed) = api(&b, reqwest::Method::GET, "/api/webhooks", None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["webhooks"][0]["id"], webhook, "{listed}");

    // Each keeps its own spans: the catalog keys stores by node.
    let mut spans = Vec::new();
    for n in 0..20 {
        let mut one = span(n, n);
        one.name = "only-on-a".into();
        spans.push(one);
    }
    a.export(vec![request("orders", spans)]);
    assert_eq!(
        a.count("SELECT count(*) FROM spans WHERE name = 'only-on-a'"),
        20
    );
    assert_eq!(
        b.count("SELECT count(*) FROM spans"),
        0,
        "b stores none of a's spans"
    );

    // A rule that fires at once: both schedulers see it, one evaluates it, and its
    // notification is sent once.
    let (status, rule) = api(
        &b,
        reqwest::Method::POST,
        "/api/alert-rules",
        Some(json!({
            "name": "always",
            "sql": "SELECT 'checkout' AS service",
            "interval": "1s",
            "group_wait": "0s",
            "webhooks": [webhook],
        })),
    );
    assert_eq!(status, 201, "{rule}");
    // Test messages through both servers, while both workers claim from the outbox.
    let mut sent = Vec::new();
    for n in 0..20 {
        let server = if n % 2 == 0 { &a } else { &b };
        let (status, queued) = api(
            server,
            reqwest::Method::POST,
            &format!("/api/webhooks/{webhook}/test"),
            None,
        );
        assert_eq!(status, 202, "{queued}");
        sent.push(queued["msg_id"].as_str().unwrap().to_string());
    }
    wait_for("every notification", &a, || {
        let ids: BTreeMap<String, usize> =
            receiver
                .received()
                .into_iter()
                .fold(BTreeMap::new(), |mut ids, request| {
                    *ids.entry(request.id).or_default() += 1;
                    ids
                });
        (sent.iter().all(|id| ids.contains_key(id)) && ids.len() > sent.len()).then_some(())
    });
    // Five more evaluations of the rule on each server's clock: nothing more is sent.
    std::thread::sleep(Duration::from_secs(5));
    let received = receiver.received();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for request in &received {
        *per_id.entry(request.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let firing: Vec<_> = received
        .iter()
        .map(|request| request.json())
        .filter(|body| body["alerts"][0]["labels"]["alertname"] == "always")
        .collect();
    assert_eq!(
        firing.len(),
        1,
        "one firing notification, from whichever server holds the rule: {firing:?}"
    );
    assert_eq!(firing[0]["status"], "firing");
    // One server evaluated the rule, the lease holder, although both schedulers ran it
    // every second.
    let evaluations = |server: &Server| -> f64 {
        server
            .metrics_text()
            .lines()
            .filter(|line| line.starts_with("flowscope_alert_evaluations_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (on_a, on_b) = (evaluations(&a), evaluations(&b));
    assert!(
        (on_a > 0.0) != (on_b > 0.0),
        "exactly one server evaluates the rule: {on_a} on a, {on_b} on b"
    );
    // Both see the one alert.
    for server in [&a, &b] {
        let (_, alerts) = api(server, reqwest::Method::GET, "/api/alerts", None);
        assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    }
    // Membership: each lists both nodes up, and names itself.
    let cluster = |server: &Server| api(server, reqwest::Method::GET, "/api/cluster", None).1;
    let seen = cluster(&a);
    let nodes = seen["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{seen}");
    assert!(nodes.iter().all(|node| node["state"] == "up"), "{seen}");
    let a_id = seen["this_node"].as_str().unwrap().to_string();
    let b_id = cluster(&b)["this_node"].as_str().unwrap().to_string();
    assert_ne!(a_id, b_id);
    let a_api = nodes
        .iter()
        .find(|node| node["node"] == a_id.as_str())
        .unwrap()["api_addr"]
        .clone();
    assert_eq!(a_api, a.api.to_string());
    a.stop();
    let seen = cluster(&b);
    let state_of = |id: &str| {
        seen["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["node"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of(&a_id), "left", "{seen}");
    assert_eq!(state_of(&b_id), "up", "{seen}");
    b.stop();
}
