//! Alertmanager's semantics on the real binary and a real HTTP receiver on 127.0.0.1:
//! a group's notification carries every alert of the group and stays firing while one
//! fires, `keep_firing_for` turns a flapping series into one firing and one resolved, a
//! silence holds a notification back until it is expired, the body has Alertmanager's
//! documented webhook fields with their types, and the test notification links back.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use common::alerting::{Receiver, api, spans_named, wait_for};
use common::otlp::request;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

fn add_webhook(server: &Server, receiver: &Receiver, name: &str) -> i64 {
    let (status, created) = api(
        server,
        reqwest::Method::POST,
        "/api/webhooks",
        Some(json!({"name": name, "url": receiver.url(name)})),
    );
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().expect("a webhook id")
}

fn add_rule(server: &Server, rule: Value) -> i64 {
    let (status, created) = api(
        server,
        reqwest::Method::POST,
        "/api/alert-rules",
        Some(rule),
    );
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().expect("a rule id")
}

/// `(service, status)` of each alert of a message, in its order.
fn alerts_of(message: &Value) -> Vec<(String, String)> {
    message["alerts"]
        .as_array()
        .expect("alerts is an array")
        .iter()
        .map(|a| {
            (
                a["labels"]["service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn is_string_map(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|map| map.values().all(Value::is_string))
}

fn is_rfc3339_utc(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        let bytes = text.as_bytes();
        text.len() >= 20
            && text.ends_with('Z')
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b'T'
            && bytes[13] == b':'
    })
}

/// Every field of Alertmanager's documented webhook body (version 4), with its type, and
/// no other field: `version`, `groupKey`, `truncatedAlerts`, `status`, `receiver`,
/// `groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL`, `alerts` with
/// `status`, `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`, `fingerprint`.
fn assert_alertmanager_v4(message: &Value) {
    let object = message.as_object().expect("an object");
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "alerts",
            "commonAnnotations",
            "commonLabels",
            "externalURL",
            "groupKey",
            "groupLabels",
            "receiver",
            "status",
            "truncatedAlerts",
            "version"
        ],
        "{message}"
    );
    assert_eq!(message["version"], "4");
    assert!(
        message["groupKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("{}:{"))
    );
    assert!(message["truncatedAlerts"].is_u64(), "an integer: {message}");
    assert!(matches!(
        message["status"].as_str(),
        Some("firing" | "resolved")
    ));
    assert!(message["receiver"].as_str().is_some_and(|r| !r.is_empty()));
    for map in ["groupLabels", "commonLabels", "commonAnnotations"] {
        assert!(
            is_string_map(&message[map]),
            "{map} is a string map: {message}"
        );
    }
    assert!(
        message["externalURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http"))
    );
    for alert in message["alerts"].as_array().expect("an array") {
        let mut fields: Vec<&str> = alert
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
        assert!(matches!(
            alert["status"].as_str(),
            Some("firing" | "resolved")
        ));
        assert!(is_string_map(&alert["labels"]) && is_string_map(&alert["annotations"]));
        assert!(is_rfc3339_utc(&alert["startsAt"]), "{alert}");
        assert!(is_rfc3339_utc(&alert["endsAt"]), "{alert}");
        assert_eq!(
            alert["status"] == "firing",
            alert["endsAt"] == "0001-01-01T00:00:00Z",
            "a firing alert has not ended: {alert}"
        );
        assert!(
            alert["generatorURL"]
                .as_str()
                .is_some_and(|u| u.starts_with("http"))
        );
        assert!(
            alert["fingerprint"]
                .as_str()
                .is_some_and(|f| f.len() == 16 && f.bytes().all(|b| b.is_ascii_hexdigit())),
            "{alert}"
        );
    }
}

const OPERATION: &str = "am-e2e-charge";

/// `count` spans of `OPERATION` with status code `code` (1 OK, 2 ERROR).
fn spans(first: u64, count: u64, code: i32) -> Vec<Span> {
    spans_named(OPERATION, first, count, code)
}

#[test]
fn a_group_stays_firing_while_one_alert_fires_and_carries_both() {
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
    server.export(vec![
        request("checkout", spans(0, 3, 2)),
        request("payments", spans(100, 2, 2)),
    ]);
    // Every service is returned with its counts; `firing` says which are wrong, so a
    // resolved alert can carry the counts seen when it resolved.
    let rule_id = add_rule(
        &server,
        json!({
            "name": "charge errors",
            "sql": "SELECT service_name AS service, \
                    sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors, \
                    sum(CASE WHEN status_code = 'OK' THEN 1 ELSE 0 END) AS oks, \
                    sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) > sum(CASE WHEN status_code = 'OK' THEN 1 ELSE 0 END) AS firing \
                    FROM spans WHERE name = 'am-e2e-charge' GROUP BY service_name",
            "interval": "1s",
            "group_wait": "0s",
            "group_interval": "1s",
            "webhooks": [ops],
            "annotations": {"summary": "charges fail"},
        }),
    );
    let first = wait_for("the firing notification", &server, || {
        receiver.messages("ops").into_iter().next()
    });
    assert_alertmanager_v4(&first);
    assert_eq!(first["status"], "firing");
    assert_eq!(
        alerts_of(&first),
        pairs(&[("checkout", "firing"), ("payments", "firing")])
    );
    assert_eq!(first["groupKey"], "{}:{alertname=\"charge errors\"}");
    assert_eq!(first["groupLabels"], json!({"alertname": "charge errors"}));
    assert_eq!(first["externalURL"], "https://flowscope.example.com");
    assert_eq!(first["truncatedAlerts"], 0);
    assert_eq!(
        first["alerts"][0]["generatorURL"],
        format!("https://flowscope.example.com/#/alerts/rule/{rule_id}")
    );
    assert_eq!(
        first["alerts"][0]["annotations"]["values"],
        "errors=3 oks=0"
    );

    // checkout recovers; payments still fails: the group stays firing and carries both.
    server.export(vec![request("checkout", spans(300, 5, 1))]);
    let second = wait_for("the next notification", &server, || {
        receiver.messages("ops").get(1).cloned()
    });
    assert_alertmanager_v4(&second);
    assert_eq!(second["status"], "firing", "payments still fires: {second}");
    assert_eq!(second["groupKey"], first["groupKey"]);
    assert_eq!(
        alerts_of(&second),
        pairs(&[("payments", "firing"), ("checkout", "resolved")])
    );
    let checkout = &second["alerts"][1];
    assert_ne!(checkout["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        checkout["annotations"]["values"], "errors=3 oks=5",
        "the values observed when it resolved, not those that fired it"
    );
    assert_eq!(
        second["commonLabels"],
        json!({"alertname": "charge errors"})
    );

    // payments recovers too: the group resolves, with payments alone (checkout was told).
    server.export(vec![request("payments", spans(400, 5, 1))]);
    let third = wait_for("the resolved notification", &server, || {
        receiver.messages("ops").get(2).cloned()
    });
    assert_alertmanager_v4(&third);
    assert_eq!(third["status"], "resolved");
    assert_eq!(alerts_of(&third), pairs(&[("payments", "resolved")]));
}

/// Returned for two seconds out of four, by the clock.
const FLAPPING_SQL: &str =
    "SELECT 'flappy' AS service WHERE CAST(date_part('second', now()) AS BIGINT) % 4 < 2";

#[test]
fn a_flapping_series_with_keep_firing_for_sends_one_firing_and_one_resolved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let receiver = Receiver::start();
    let kept = add_webhook(&server, &receiver, "kept");
    let plain = add_webhook(&server, &receiver, "plain");
    let rule = |name: &str, webhook: i64, keep: &str| {
        json!({
            "name": name,
            "sql": FLAPPING_SQL,
            "interval": "1s",
            "group_wait": "0s",
            "group_interval": "1s",
            "keep_firing_for": keep,
            "webhooks": [webhook],
        })
    };
    let kept_id = add_rule(&server, rule("flappy kept", kept, "5s"));
    // The same series without keep_firing_for shows that it does flap.
    add_rule(&server, rule("flappy plain", plain, "0s"));
    wait_for(
        "the plain rule to fire, resolve and fire again",
        &server,
        || (receiver.messages("plain").len() >= 4).then_some(()),
    );
    let (_, got) = api(
        &server,
        reqwest::Method::GET,
        &format!("/api/alert-rules/{kept_id}"),
        None,
    );
    assert_eq!(got["keep_firing_for"], "5s");
    let during: Vec<Value> = receiver.messages("kept");
    assert_eq!(during.len(), 1, "one firing while it flaps: {during:?}");
    assert_eq!(during[0]["status"], "firing");

    // The series stops: five seconds later the kept alert resolves, once.
    let mut quiet = rule("flappy kept", kept, "5s");
    quiet["sql"] = json!("SELECT 'flappy' AS service WHERE false");
    let (status, body) = api(
        &server,
        reqwest::Method::PUT,
        &format!("/api/alert-rules/{kept_id}"),
        Some(quiet),
    );
    assert_eq!(status, 200, "{body}");
    let all = wait_for("the kept alert to resolve", &server, || {
        let messages = receiver.messages("kept");
        (messages.len() >= 2).then_some(messages)
    });
    let statuses: Vec<&str> = all.iter().map(|m| m["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    let (_, alerts) = api(
        &server,
        reqwest::Method::GET,
        "/api/alerts?limit=1000",
        None,
    );
    let kept_history = alerts["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["rule"] == "flappy kept")
        .count();
    assert_eq!(
        kept_history, 2,
        "one firing and one resolved transition: {alerts}"
    );
}

#[test]
fn a_silence_holds_a_notification_back_until_it_is_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let receiver = Receiver::start();
    let ops = add_webhook(&server, &receiver, "ops");
    let (status, created) = api(
        &server,
        reqwest::Method::POST,
        "/api/silences",
        Some(json!({
            "matchers": [
                {"name": "alertname", "value": "deploy watch", "isRegex": false, "isEqual": true},
                {"name": "service", "value": "check.*", "isRegex": true, "isEqual": true}
            ],
            "endsAt": "2100-01-01T00:00:00Z",
            "createdBy": "ana",
            "comment": "deploying checkout",
        })),
    );
    assert_eq!(status, 201, "{created}");
    let silence = created["id"].as_i64().expect("a silence id");
    let (_, listed) = api(&server, reqwest::Method::GET, "/api/silences", None);
    assert_eq!(
        listed["silences"][0]["status"]["state"], "active",
        "{listed}"
    );
    assert_eq!(listed["silences"][0]["matchers"][1]["isRegex"], true);

    add_rule(
        &server,
        json!({
            "name": "deploy watch",
            "sql": "SELECT 'checkout' AS service",
            "interval": "1s",
            "group_wait": "0s",
            "group_interval": "1s",
            "webhooks": [ops],
        }),
    );
    // The group's first notification is decided in the transaction that records the
    // alert firing: once the alert shows as firing, the outbox would already hold it.
    let alert = wait_for("the alert to fire", &server, || {
        let (_, alerts) = api(&server, reqwest::Method::GET, "/api/alerts", None);
        alerts["alerts"]
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|a| a["state"] == "firing")
    });
    assert_eq!(alert["silenced_by"], json!([silence]));
    let (_, deliveries) = api(
        &server,
        reqwest::Method::GET,
        &format!("/api/webhooks/{ops}/deliveries"),
        None,
    );
    assert_eq!(
        deliveries["deliveries"],
        json!([]),
        "silenced: nothing queued"
    );

    let (status, _) = api(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/silences/{silence}"),
        None,
    );
    assert_eq!(status, 204);
    let (_, got) = api(
        &server,
        reqwest::Method::GET,
        &format!("/api/silences/{silence}"),
        None,
    );
    assert_eq!(got["status"]["state"], "expired", "{got}");
    let message = wait_for("the notification after the silence", &server, || {
        receiver.messages("ops").into_iter().next()
    });
    assert_alertmanager_v4(&message);
    assert_eq!(alerts_of(&message), pairs(&[("checkout", "firing")]));
    let (_, alerts) = api(&server, reqwest::Method::GET, "/api/alerts", None);
    assert_eq!(alerts["alerts"][0]["silenced_by"], json!([]));

    let (status, refused) = api(
        &server,
        reqwest::Method::POST,
        "/api/silences",
        Some(
            json!({"matchers": [], "endsAt": "2100-01-01T00:00:00Z", "createdBy": "a", "comment": "b"}),
        ),
    );
    assert_eq!(status, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("matchers"),
        "{refused}"
    );
}

#[test]
fn the_test_notification_links_to_the_servers_own_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No --external-url: links are made from the API's bound address.
    let server = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let receiver = Receiver::start();
    let ops = add_webhook(&server, &receiver, "ops");
    let (status, _) = api(
        &server,
        reqwest::Method::POST,
        &format!("/api/webhooks/{ops}/test"),
        None,
    );
    assert_eq!(status, 202);
    let message = wait_for("the test notification", &server, || {
        receiver.messages("ops").into_iter().next()
    });
    assert_alertmanager_v4(&message);
    let base = format!("http://{}", server.api);
    assert_eq!(message["externalURL"], base.as_str());
    assert_eq!(
        message["alerts"][0]["generatorURL"],
        format!("{base}/#/alerts")
    );
}
