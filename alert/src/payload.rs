//! The webhook body in Alertmanager's v4 webhook shape, so receivers written for
//! Alertmanager (PagerDuty bridges, chat relays, custom handlers) accept it unchanged.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::evaluate::{Labels, Values};

/// Alertmanager writes this as the end of an alert that has not ended.
pub const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

/// The whole message, field for field as Alertmanager documents it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    /// "firing" when any alert in the message fires, else "resolved".
    pub status: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Alerts one notification lists at most; the rest are counted in `truncatedAlerts`
/// (Alertmanager's `max_alerts`), so that a rule returning thousands of rows cannot make
/// a body of megabytes.
pub const MAX_ALERTS: usize = 1_000;

/// What a notification is about: one group of one rule's alerts.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub rule_id: i64,
    pub rule_name: &'a str,
    pub rule_annotations: &'a BTreeMap<String, String>,
    /// `--external-url`: where users reach this flowscope.
    pub external_url: &'a str,
}

/// One alert of a group as a notification shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupAlert {
    pub fingerprint: String,
    pub labels: Labels,
    /// The values last observed: while firing, at the latest evaluation; once resolved,
    /// at the evaluation that resolved it.
    pub values: Values,
    /// Graph context added when it started firing.
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    /// `None` while it fires.
    pub ends_at: Option<i64>,
}

/// The notification of one group for one receiver: every alert of the group it is given
/// (its firing alerts and those resolved since the last notification), firing first,
/// at most [`MAX_ALERTS`]; status `firing` while any alert of the group fires.
pub fn message(
    source: &Source<'_>,
    receiver: &str,
    group_labels: &Labels,
    alerts: &[GroupAlert],
) -> Message {
    let generator_url = generator_url(source.external_url, source.rule_id);
    let mut ordered: Vec<&GroupAlert> = alerts.iter().collect();
    ordered.sort_by(|a, b| {
        (a.ends_at.is_some(), &a.labels, &a.fingerprint).cmp(&(
            b.ends_at.is_some(),
            &b.labels,
            &b.fingerprint,
        ))
    });
    let alerts: Vec<Alert> = ordered
        .into_iter()
        .map(|alert| {
            let mut annotations = source.rule_annotations.clone();
            if !alert.values.is_empty() {
                annotations.insert("values".into(), render_values(&alert.values));
            }
            annotations.extend(alert.annotations.clone());
            let (status, ends_at) = match alert.ends_at {
                None => ("firing", NOT_ENDED.to_string()),
                Some(ends_at) => ("resolved", rfc3339(ends_at)),
            };
            Alert {
                status: status.into(),
                labels: alert.labels.clone(),
                annotations,
                starts_at: rfc3339(alert.starts_at),
                ends_at,
                generator_url: generator_url.clone(),
                fingerprint: alert.fingerprint.clone(),
            }
        })
        .collect();
    let firing = alerts.iter().any(|alert| alert.status == "firing");
    // Like Alertmanager, the group's status and common labels are of every alert, the
    // list is cut after.
    let common_labels = common(alerts.iter().map(|a| &a.labels));
    let common_annotations = common(alerts.iter().map(|a| &a.annotations));
    let truncated = alerts.len().saturating_sub(MAX_ALERTS);
    let mut alerts = alerts;
    alerts.truncate(MAX_ALERTS);
    Message {
        version: "4".into(),
        group_key: group_key(group_labels),
        truncated_alerts: u64::try_from(truncated).unwrap_or(u64::MAX),
        status: if firing { "firing" } else { "resolved" }.into(),
        receiver: receiver.into(),
        group_labels: group_labels.clone(),
        common_labels,
        common_annotations,
        external_url: source.external_url.trim_end_matches('/').into(),
        alerts,
    }
}

/// The labels that name an alert's group: `alertname` (a group is one rule's) and the
/// rule's `group_by` labels the alert has; with `...`, every label.
pub fn group_labels(group_by: &[String], labels: &Labels) -> Labels {
    if group_by.iter().any(|name| name == "...") {
        return labels.clone();
    }
    let mut out = Labels::new();
    for name in std::iter::once("alertname").chain(group_by.iter().map(String::as_str)) {
        if let Some(value) = labels.get(name) {
            out.insert(name.to_string(), value.clone());
        }
    }
    out
}

/// Alertmanager's group key for the root route (`{}`) and the group's labels, written as
/// Prometheus writes a label set: `{}:{alertname="checkout errors", service="cart"}`.
pub fn group_key(group_labels: &Labels) -> String {
    let pairs: Vec<String> = group_labels
        .iter()
        .map(|(name, value)| format!("{name}={}", serde_json::Value::String(value.clone())))
        .collect();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

/// The rule on the dashboard's alerts page: `<external-url>/#/alerts/rule/<id>`.
pub fn generator_url(external_url: &str, rule_id: i64) -> String {
    format!(
        "{}/#/alerts/rule/{rule_id}",
        external_url.trim_end_matches('/')
    )
}

/// `calls=12 p99_ms=250.5`, in name order.
pub fn render_values(values: &Values) -> String {
    values
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, as Alertmanager's Go client parses.
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| NOT_ENDED.into())
}

/// The pairs every map has with the same value.
fn common<'a>(mut maps: impl Iterator<Item = &'a Labels>) -> BTreeMap<String, String> {
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut shared = first.clone();
    for map in maps {
        shared.retain(|key, value| map.get(key) == Some(value));
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(service: &str, ends_at: Option<i64>) -> GroupAlert {
        let labels: Labels = [("alertname", "slow"), ("service", service), ("env", "prod")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GroupAlert {
            fingerprint: crate::evaluate::fingerprint(&labels),
            labels,
            values: Values::from([("p99_ms".into(), 812.5)]),
            annotations: BTreeMap::new(),
            starts_at: 1_764_417_600_000,
            ends_at,
        }
    }

    fn source(annotations: &BTreeMap<String, String>) -> Source<'_> {
        Source {
            rule_id: 7,
            rule_name: "slow",
            rule_annotations: annotations,
            external_url: "https://flowscope.example.com/",
        }
    }

    #[test]
    fn a_message_has_every_alertmanager_v4_field_with_its_type() {
        let annotations = BTreeMap::from([("summary".to_string(), "p99 too high".to_string())]);
        let mut firing = alert("checkout", None);
        firing
            .annotations
            .insert("upstream".into(), "frontend".into());
        let resolved = alert("payments", Some(1_764_417_720_000));
        let group = Labels::from([("alertname".to_string(), "slow".to_string())]);
        // Given resolved first: the message lists firing alerts first.
        let message = message(
            &source(&annotations),
            "ops",
            &group,
            &[resolved.clone(), firing.clone()],
        );
        let json = serde_json::to_value(&message).unwrap();
        let object = json.as_object().unwrap();
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
            "exactly Alertmanager's documented fields"
        );
        assert_eq!(json["version"], "4");
        assert!(json["truncatedAlerts"].is_u64());
        assert_eq!(json["truncatedAlerts"], 0);
        assert_eq!(json["status"], "firing", "one alert fires");
        assert_eq!(json["groupKey"], "{}:{alertname=\"slow\"}");
        assert_eq!(
            json["groupLabels"],
            serde_json::json!({"alertname": "slow"})
        );
        assert_eq!(json["externalURL"], "https://flowscope.example.com");
        assert_eq!(
            json["commonLabels"],
            serde_json::json!({"alertname": "slow", "env": "prod"})
        );
        assert_eq!(
            json["commonAnnotations"],
            serde_json::json!({"summary": "p99 too high", "values": "p99_ms=812.5"})
        );
        let first = &json["alerts"][0];
        let mut alert_fields: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        alert_fields.sort_unstable();
        assert_eq!(
            alert_fields,
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
        assert_eq!(first["status"], "firing");
        assert_eq!(first["labels"]["service"], "checkout");
        assert_eq!(first["startsAt"], "2025-11-29T12:00:00.000Z");
        assert_eq!(first["endsAt"], NOT_ENDED);
        assert_eq!(first["annotations"]["upstream"], "frontend");
        assert_eq!(
            first["generatorURL"],
            "https://flowscope.example.com/#/alerts/rule/7"
        );
        assert_eq!(first["fingerprint"], firing.fingerprint);
        let second = &json["alerts"][1];
        assert_eq!(second["status"], "resolved");
        assert_eq!(second["endsAt"], "2025-11-29T12:02:00.000Z");
        assert!(second["annotations"].get("upstream").is_none());
    }

    #[test]
    fn only_resolved_alerts_make_a_resolved_message_and_long_groups_are_truncated() {
        let annotations = BTreeMap::new();
        let group = Labels::from([("alertname".to_string(), "slow".to_string())]);
        let resolved = message(&source(&annotations), "ops", &group, &[alert("a", Some(5))]);
        assert_eq!(resolved.status, "resolved");
        assert_eq!(resolved.receiver, "ops");

        let many: Vec<GroupAlert> = (0..MAX_ALERTS + 5)
            .map(|i| alert(&format!("s{i}"), None))
            .collect();
        let cut = message(&source(&annotations), "ops", &group, &many);
        assert_eq!(cut.alerts.len(), MAX_ALERTS);
        assert_eq!(cut.truncated_alerts, 5);
    }

    #[test]
    fn groups_are_named_by_alertname_and_the_group_by_labels_an_alert_has() {
        let labels: Labels = [("alertname", "r"), ("service", "cart"), ("env", "prod")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let by = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            group_key(&group_labels(&names, &labels))
        };
        assert_eq!(by(&[]), "{}:{alertname=\"r\"}");
        assert_eq!(
            by(&["service", "zone"]),
            "{}:{alertname=\"r\", service=\"cart\"}",
            "a label the alert lacks is left out"
        );
        assert_eq!(
            by(&["..."]),
            "{}:{alertname=\"r\", env=\"prod\", service=\"cart\"}"
        );
    }
}
