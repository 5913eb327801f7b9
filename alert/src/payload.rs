//! The webhook body in Alertmanager's v4 webhook shape, so receivers written for
//! Alertmanager (PagerDuty bridges, chat relays, custom handlers) accept it unchanged.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::evaluate::{Labels, Transition, Values};

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

/// What a notification is about: one rule's evaluation.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub rule_name: &'a str,
    pub rule_sql: &'a str,
    pub rule_annotations: &'a BTreeMap<String, String>,
    /// `--external-url`: where users reach this flowscope.
    pub external_url: &'a str,
}

/// The notification for one receiver of the changes of one evaluation, with extra
/// annotations (graph context) by fingerprint. `None` when nothing changed.
pub fn message(
    source: &Source<'_>,
    receiver: &str,
    transitions: &[Transition],
    extra: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<Message> {
    if transitions.is_empty() {
        return None;
    }
    let generator_url = generator_url(source.external_url, source.rule_sql);
    let alerts: Vec<Alert> = transitions
        .iter()
        .map(|transition| {
            let instance = transition.instance();
            let mut annotations = source.rule_annotations.clone();
            if !instance.values.is_empty() {
                annotations.insert("values".into(), render_values(&instance.values));
            }
            if let Some(more) = extra.get(&instance.fingerprint) {
                annotations.extend(more.clone());
            }
            let (status, ends_at) = match transition {
                Transition::Firing(_) => ("firing", NOT_ENDED.to_string()),
                Transition::Resolved { ends_at, .. } => ("resolved", rfc3339(*ends_at)),
            };
            Alert {
                status: status.into(),
                labels: instance.labels.clone(),
                annotations,
                starts_at: rfc3339(instance.active_since),
                ends_at,
                generator_url: generator_url.clone(),
                fingerprint: instance.fingerprint.clone(),
            }
        })
        .collect();
    let firing = alerts.iter().any(|alert| alert.status == "firing");
    Some(Message {
        version: "4".into(),
        group_key: group_key(source.rule_name),
        truncated_alerts: 0,
        status: if firing { "firing" } else { "resolved" }.into(),
        receiver: receiver.into(),
        group_labels: BTreeMap::from([("alertname".into(), source.rule_name.into())]),
        common_labels: common(alerts.iter().map(|a| &a.labels)),
        common_annotations: common(alerts.iter().map(|a| &a.annotations)),
        external_url: source.external_url.trim_end_matches('/').into(),
        alerts,
    })
}

/// Alertmanager's group key for a route grouped by alert name: stable per rule.
pub fn group_key(rule_name: &str) -> String {
    format!(
        "{{}}:{{alertname={}}}",
        serde_json::Value::String(rule_name.into())
    )
}

/// The dashboard's SQL console with the rule's query in it (`#/sql?q=...`).
pub fn generator_url(external_url: &str, sql: &str) -> String {
    format!(
        "{}/#/sql?q={}",
        external_url.trim_end_matches('/'),
        percent_encode(sql)
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

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{Instance, State};

    fn instance(service: &str, state: State) -> Instance {
        let labels: Labels = [("alertname", "slow"), ("service", service), ("env", "prod")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Instance {
            fingerprint: crate::evaluate::fingerprint(&labels),
            labels,
            values: Values::from([("p99_ms".into(), 812.5)]),
            state,
            active_since: 1_764_417_600_000,
            fired_at: Some(1_764_417_660_000),
            last_seen: 1_764_417_660_000,
        }
    }

    #[test]
    fn a_message_has_every_alertmanager_v4_field() {
        let annotations = BTreeMap::from([("summary".to_string(), "p99 too high".to_string())]);
        let source = Source {
            rule_name: "slow",
            rule_sql: "SELECT 'a' AS service",
            rule_annotations: &annotations,
            external_url: "https://flowscope.example.com/",
        };
        let firing = instance("checkout", State::Firing);
        let extra = BTreeMap::from([(
            firing.fingerprint.clone(),
            BTreeMap::from([("upstream".to_string(), "frontend".to_string())]),
        )]);
        let transitions = vec![
            Transition::Firing(firing.clone()),
            Transition::Resolved {
                instance: instance("payments", State::Firing),
                ends_at: 1_764_417_720_000,
            },
        ];
        let message = message(&source, "ops", &transitions, &extra).unwrap();
        let json = serde_json::to_value(&message).unwrap();
        for field in [
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(json["version"], "4");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["groupKey"], "{}:{alertname=\"slow\"}");
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
        assert_eq!(first["status"], "firing");
        assert_eq!(first["startsAt"], "2025-11-29T12:00:00.000Z");
        assert_eq!(first["endsAt"], NOT_ENDED);
        assert_eq!(first["annotations"]["upstream"], "frontend");
        assert_eq!(
            first["generatorURL"],
            "https://flowscope.example.com/#/sql?q=SELECT%20%27a%27%20AS%20service"
        );
        assert_eq!(first["fingerprint"], firing.fingerprint);
        let second = &json["alerts"][1];
        assert_eq!(second["status"], "resolved");
        assert_eq!(second["endsAt"], "2025-11-29T12:02:00.000Z");
        assert!(second["annotations"].get("upstream").is_none());
    }

    #[test]
    fn only_resolved_alerts_make_a_resolved_message_and_no_change_makes_none() {
        let annotations = BTreeMap::new();
        let source = Source {
            rule_name: "slow",
            rule_sql: "SELECT 1",
            rule_annotations: &annotations,
            external_url: "http://127.0.0.1:8080",
        };
        let resolved = vec![Transition::Resolved {
            instance: instance("a", State::Firing),
            ends_at: 0,
        }];
        let message = message(&source, "ops", &resolved, &BTreeMap::new()).unwrap();
        assert_eq!(message.status, "resolved");
        assert_eq!(message.receiver, "ops");
        assert!(super::message(&source, "ops", &[], &BTreeMap::new()).is_none());
    }
}
