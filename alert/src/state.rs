//! Alert state in the metadata database: a rule's instances, its history, its
//! notification groups, and the transactions that record an evaluation and send a
//! group's notification.
//!
//! Notifications follow Alertmanager's aggregation groups: a rule's alerts are grouped
//! by `alertname` and the rule's `group_by` labels; a group is notified `group_wait`
//! after it began, then looked at every `group_interval`, and notified when an alert
//! started firing or resolved since its last notification, or when `repeat_interval` has
//! passed; every notification lists all the group's firing alerts and those resolved
//! since the last one. Silenced alerts are left out before this decision.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::AlertError;
use crate::evaluate::{Evaluation, Instance, Labels, State, Transition, Values};
use crate::outbox;
use crate::payload::{self, GroupAlert, Source};
use crate::rules::{self, Rule};
use crate::silences::{self, ActiveSilences};

/// The outbox `kind` of an alert notification.
pub const KIND: &str = "alert";

/// Annotations added to some alerts of a notification (graph context), by fingerprint.
pub type Extra = BTreeMap<String, BTreeMap<String, String>>;

/// What one committed evaluation or flush wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    pub transitions: usize,
    /// Outbox message ids, one per webhook of the rule for each group notified.
    pub messages: Vec<String>,
}

/// The instances (pending and firing) a rule had after its last committed evaluation.
pub async fn instances(pool: &AnyPool, rule_id: i64) -> Result<Vec<Instance>, AlertError> {
    let rows = sqlx::query(
        "SELECT fingerprint, labels, annotations, \"values\", state, active_since, fired_at, last_seen
         FROM alert_instances WHERE rule_id = $1 ORDER BY fingerprint",
    )
    .bind(rule_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(instance_of).collect()
}

fn instance_of(row: &sqlx::any::AnyRow) -> Result<Instance, AlertError> {
    let labels: String = row.try_get("labels")?;
    let annotations: String = row.try_get("annotations")?;
    let values: String = row.try_get("values")?;
    let state: String = row.try_get("state")?;
    Ok(Instance {
        fingerprint: row.try_get("fingerprint")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        values: serde_json::from_str(&values).unwrap_or_default(),
        // The table's CHECK allows only these two.
        state: State::parse(&state).unwrap_or(State::Pending),
        active_since: row.try_get("active_since")?,
        fired_at: row.try_get("fired_at")?,
        last_seen: row.try_get("last_seen")?,
        annotations: serde_json::from_str(&annotations).unwrap_or_default(),
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// Takes SQLite's write lock by touching the rule's row first; false when the rule is gone
/// (deleted, or another tenant's).
async fn lock_rule(
    conn: &mut AnyConnection,
    tenant: &str,
    rule_id: i64,
) -> Result<bool, AlertError> {
    let touched = sqlx::query(
        "UPDATE alert_rules SET last_evaluation = last_evaluation WHERE id = $1 AND tenant = $2",
    )
    .bind(rule_id)
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    Ok(touched.rows_affected() > 0)
}

/// Records an evaluation of `rule` at `now_ms` and sends the notifications of its groups
/// that are due, all in one transaction: its instances are replaced, its transitions
/// appended to the history, a resolved alert kept for its group's next notification, a
/// group begun for an alert that fires in none. A rule deleted meanwhile records nothing.
pub async fn commit(
    pool: &AnyPool,
    tenant: &str,
    rule: &Rule,
    evaluation: &Evaluation,
    extra: &Extra,
    external_url: &str,
    now_ms: i64,
) -> Result<Committed, AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    // Writing first takes SQLite's write lock before anything is read.
    let marked = sqlx::query(
        "UPDATE alert_rules SET last_evaluation = $1, last_error = NULL WHERE id = $2 AND tenant = $3",
    )
    .bind(now_ms)
    .bind(rule.id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    if marked.rows_affected() == 0 {
        return Ok(Committed::default());
    }
    sqlx::query("DELETE FROM alert_instances WHERE rule_id = $1")
        .bind(rule.id)
        .execute(&mut *tx)
        .await?;
    let mut firing_groups: BTreeMap<String, Labels> = BTreeMap::new();
    for instance in &evaluation.instances {
        let annotations = extra
            .get(&instance.fingerprint)
            .unwrap_or(&instance.annotations);
        sqlx::query(
            "INSERT INTO alert_instances
               (rule_id, fingerprint, labels, annotations, \"values\", state, active_since, fired_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(rule.id)
        .bind(&instance.fingerprint)
        .bind(json(&instance.labels))
        .bind(json(annotations))
        .bind(json(&instance.values))
        .bind(instance.state.as_str())
        .bind(instance.active_since)
        .bind(instance.fired_at)
        .bind(instance.last_seen)
        .execute(&mut *tx)
        .await?;
        if instance.state == State::Firing {
            let labels = payload::group_labels(&rule.spec.group_by, &instance.labels);
            firing_groups.insert(payload::group_key(&labels), labels);
        }
    }
    record_history(&mut tx, tenant, rule, &evaluation.transitions, now_ms).await?;
    for transition in &evaluation.transitions {
        match transition {
            Transition::Firing(instance) => {
                // Alertmanager keeps one alert per fingerprint: firing again replaces
                // the resolved one not yet notified.
                sqlx::query("DELETE FROM alert_resolved WHERE rule_id = $1 AND fingerprint = $2")
                    .bind(rule.id)
                    .bind(&instance.fingerprint)
                    .execute(&mut *tx)
                    .await?;
            }
            Transition::Resolved { instance, ends_at } => {
                keep_resolved(&mut tx, rule.id, instance, *ends_at).await?;
            }
        }
    }
    // Every firing alert has a group (also one that fired before groups existed).
    for (key, labels) in &firing_groups {
        sqlx::query(
            "INSERT INTO alert_groups (rule_id, group_key, group_labels, created_at, next_flush_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rule_id, group_key) DO NOTHING",
        )
        .bind(rule.id)
        .bind(key)
        .bind(json(labels))
        .bind(now_ms)
        .bind(now_ms.saturating_add(millis(rule.spec.group_wait)))
        .execute(&mut *tx)
        .await?;
    }
    let messages = flush_in(&mut tx, tenant, rule, external_url, now_ms).await?;
    tx.commit().await?;
    Ok(Committed {
        transitions: evaluation.transitions.len(),
        messages,
    })
}

/// Sends the notifications of `rule`'s groups that are due at `now_ms`, in one
/// transaction with the groups' notification log, so a restart neither repeats nor
/// loses one.
pub async fn flush(
    pool: &AnyPool,
    tenant: &str,
    rule: &Rule,
    external_url: &str,
    now_ms: i64,
) -> Result<Committed, AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    if !lock_rule(&mut tx, tenant, rule.id).await? {
        return Ok(Committed::default());
    }
    let messages = flush_in(&mut tx, tenant, rule, external_url, now_ms).await?;
    tx.commit().await?;
    Ok(Committed {
        transitions: 0,
        messages,
    })
}

/// When each rule's next group is due, by rule id: what the scheduler polls.
pub async fn next_flushes(pool: &AnyPool) -> Result<BTreeMap<i64, i64>, AlertError> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT rule_id, min(next_flush_at) FROM alert_groups GROUP BY rule_id")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Deletes a rule; its firing alerts are resolved now and every group whose receivers
/// were told something fires is notified, in the same transaction, so a receiver is never
/// left with an alert nothing will end.
pub async fn delete_rule(
    pool: &AnyPool,
    tenant: &str,
    id: i64,
    external_url: &str,
    now_ms: i64,
) -> Result<Committed, AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    if !lock_rule(&mut tx, tenant, id).await? {
        return Err(AlertError::NotFound(format!(
            "no alert rule with id {id}; GET /api/alert-rules lists them"
        )));
    }
    let rule = rules::get_in(&mut tx, tenant, id).await?;
    let rows = sqlx::query(
        "SELECT fingerprint, labels, annotations, \"values\", state, active_since, fired_at, last_seen
         FROM alert_instances WHERE rule_id = $1 AND state = 'firing' ORDER BY fingerprint",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let transitions = rows
        .iter()
        .map(|row| {
            instance_of(row).map(|instance| Transition::Resolved {
                instance,
                ends_at: now_ms,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    record_history(&mut tx, tenant, &rule, &transitions, now_ms).await?;
    for transition in &transitions {
        if let Transition::Resolved { instance, ends_at } = transition {
            keep_resolved(&mut tx, id, instance, *ends_at).await?;
        }
    }
    sqlx::query("DELETE FROM alert_instances WHERE rule_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // Every group is due now: the rule will not be there to wait for its interval.
    sqlx::query("UPDATE alert_groups SET next_flush_at = $1 WHERE rule_id = $2")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let messages = flush_in(&mut tx, tenant, &rule, external_url, now_ms).await?;
    sqlx::query("DELETE FROM alert_rules WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Committed {
        transitions: transitions.len(),
        messages,
    })
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Keeps a resolved alert for its group's next notification.
async fn keep_resolved(
    conn: &mut AnyConnection,
    rule_id: i64,
    instance: &Instance,
    ends_at: i64,
) -> Result<(), AlertError> {
    sqlx::query(
        "INSERT INTO alert_resolved
           (rule_id, fingerprint, labels, annotations, \"values\", starts_at, ends_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (rule_id, fingerprint) DO UPDATE SET labels = excluded.labels,
           annotations = excluded.annotations, \"values\" = excluded.\"values\",
           starts_at = excluded.starts_at, ends_at = excluded.ends_at",
    )
    .bind(rule_id)
    .bind(&instance.fingerprint)
    .bind(json(&instance.labels))
    .bind(json(&instance.annotations))
    .bind(json(&instance.values))
    .bind(instance.active_since)
    .bind(ends_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends `transitions` to the history.
async fn record_history(
    conn: &mut AnyConnection,
    tenant: &str,
    rule: &Rule,
    transitions: &[Transition],
    now_ms: i64,
) -> Result<(), AlertError> {
    for transition in transitions {
        let instance = transition.instance();
        let (status, ends_at) = match transition {
            Transition::Firing(_) => ("firing", None),
            Transition::Resolved { ends_at, .. } => ("resolved", Some(*ends_at)),
        };
        sqlx::query(
            "INSERT INTO alert_history
               (rule_id, rule_name, tenant, fingerprint, labels, \"values\", status, starts_at, ends_at, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(rule.id)
        .bind(&rule.spec.name)
        .bind(tenant)
        .bind(&instance.fingerprint)
        .bind(json(&instance.labels))
        .bind(json(&instance.values))
        .bind(status)
        .bind(instance.active_since)
        .bind(ends_at)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A group's notification log: what its last notification said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotificationLog {
    pub notified_at: Option<i64>,
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
}

/// Alertmanager's decision (its dedup stage) whether a group is notified at a flush, given
/// the fingerprints of its alerts that are firing and resolved, silenced ones left out.
pub fn needs_notification(
    log: &NotificationLog,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    repeat_interval_ms: i64,
    now_ms: i64,
) -> bool {
    let Some(notified_at) = log.notified_at else {
        // Never notified: only a firing alert is news.
        return !firing.is_empty();
    };
    if !firing.is_subset(&log.firing) {
        return true;
    }
    if firing.is_empty() {
        // Everything resolved: news only if the receiver was told something fires.
        return !log.firing.is_empty();
    }
    if !resolved.is_subset(&log.resolved) {
        return true;
    }
    now_ms.saturating_sub(notified_at) >= repeat_interval_ms
}

/// The group that is due: its row in `alert_groups`.
struct DueGroup {
    key: String,
    labels: Labels,
    next_flush_at: i64,
    log: NotificationLog,
}

/// Flushes `rule`'s due groups on `conn`, inside the caller's transaction.
async fn flush_in(
    conn: &mut AnyConnection,
    tenant: &str,
    rule: &Rule,
    external_url: &str,
    now_ms: i64,
) -> Result<Vec<String>, AlertError> {
    let due = due_groups(conn, rule.id, now_ms).await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut alerts: BTreeMap<String, Vec<GroupAlert>> = BTreeMap::new();
    for alert in group_alerts(conn, rule.id).await? {
        let key = payload::group_key(&payload::group_labels(&rule.spec.group_by, &alert.labels));
        alerts.entry(key).or_default().push(alert);
    }
    let silences = silences::active(conn, tenant, now_ms).await?;
    let webhooks: Vec<(i64, String)> = sqlx::query_as(
        "SELECT w.id, w.name FROM alert_rule_webhooks l JOIN webhooks w ON w.id = l.webhook_id
         WHERE l.rule_id = $1 ORDER BY w.id",
    )
    .bind(rule.id)
    .fetch_all(&mut *conn)
    .await?;
    let source = Source {
        rule_id: rule.id,
        rule_name: &rule.spec.name,
        rule_annotations: &rule.spec.annotations,
        external_url,
    };
    let interval = millis(rule.spec.group_interval).max(1);
    let mut messages = Vec::new();
    for group in due {
        let members = alerts.remove(&group.key).unwrap_or_default();
        let shown = unsilenced(&members, &silences, &group.log);
        let firing: BTreeSet<String> = shown
            .iter()
            .filter(|a| a.ends_at.is_none())
            .map(|a| a.fingerprint.clone())
            .collect();
        let resolved: BTreeSet<String> = shown
            .iter()
            .filter(|a| a.ends_at.is_some())
            .map(|a| a.fingerprint.clone())
            .collect();
        // An empty notification tells nothing: a group whose every alert is silenced waits.
        let notify = !shown.is_empty()
            && needs_notification(
                &group.log,
                &firing,
                &resolved,
                millis(rule.spec.repeat_interval),
                now_ms,
            );
        // A group whose every alert is silenced sends nothing, but forgets what it said,
        // so an alert still firing when the silence ends is notified again.
        if notify || shown.is_empty() {
            let log = NotificationLog {
                notified_at: if notify {
                    Some(now_ms)
                } else {
                    group.log.notified_at
                },
                firing: firing.clone(),
                resolved: resolved.clone(),
            };
            if notify {
                for (webhook, name) in &webhooks {
                    let message = payload::message(&source, name, &group.labels, &shown);
                    let body = serde_json::to_vec(&message).map_err(|e| {
                        AlertError::BadInput(format!("cannot encode the alert notification: {e}"))
                    })?;
                    messages.push(
                        outbox::enqueue(&mut *conn, tenant, *webhook, KIND, &body, now_ms).await?,
                    );
                }
            }
            write_log(conn, rule.id, &group.key, &log).await?;
        }
        // Resolved alerts are dropped from the group once a flush has seen them, as
        // Alertmanager drops them after a notification.
        for alert in members.iter().filter(|a| a.ends_at.is_some()) {
            sqlx::query("DELETE FROM alert_resolved WHERE rule_id = $1 AND fingerprint = $2")
                .bind(rule.id)
                .bind(&alert.fingerprint)
                .execute(&mut *conn)
                .await?;
        }
        if members.iter().all(|a| a.ends_at.is_some()) {
            // Nothing fires any more: the group ends, and a new alert begins a new one.
            sqlx::query("DELETE FROM alert_groups WHERE rule_id = $1 AND group_key = $2")
                .bind(rule.id)
                .bind(&group.key)
                .execute(&mut *conn)
                .await?;
            continue;
        }
        // Ticks every group_interval from the first flush; after a pause, from now.
        let mut next = group.next_flush_at.saturating_add(interval);
        if next <= now_ms {
            next = now_ms.saturating_add(interval);
        }
        sqlx::query(
            "UPDATE alert_groups SET next_flush_at = $1 WHERE rule_id = $2 AND group_key = $3",
        )
        .bind(next)
        .bind(rule.id)
        .bind(&group.key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(messages)
}

/// The alerts a notification may show: not silenced, except that a resolved alert the
/// receiver was told fires is always shown, so no incident is left open.
fn unsilenced(
    members: &[GroupAlert],
    silences: &ActiveSilences,
    log: &NotificationLog,
) -> Vec<GroupAlert> {
    members
        .iter()
        .filter(|alert| {
            (alert.ends_at.is_some() && log.firing.contains(&alert.fingerprint))
                || silences.silenced_by(&alert.labels).is_empty()
        })
        .cloned()
        .collect()
}

async fn due_groups(
    conn: &mut AnyConnection,
    rule_id: i64,
    now_ms: i64,
) -> Result<Vec<DueGroup>, AlertError> {
    let rows = sqlx::query(
        "SELECT group_key, group_labels, next_flush_at, notified_at, notified_firing, notified_resolved
         FROM alert_groups WHERE rule_id = $1 AND next_flush_at <= $2 ORDER BY group_key",
    )
    .bind(rule_id)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    let set =
        |text: String| -> BTreeSet<String> { serde_json::from_str(&text).unwrap_or_default() };
    rows.iter()
        .map(|row| {
            let labels: String = row.try_get("group_labels")?;
            Ok(DueGroup {
                key: row.try_get("group_key")?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                next_flush_at: row.try_get("next_flush_at")?,
                log: NotificationLog {
                    notified_at: row.try_get("notified_at")?,
                    firing: set(row.try_get("notified_firing")?),
                    resolved: set(row.try_get("notified_resolved")?),
                },
            })
        })
        .collect()
}

async fn write_log(
    conn: &mut AnyConnection,
    rule_id: i64,
    key: &str,
    log: &NotificationLog,
) -> Result<(), AlertError> {
    sqlx::query(
        "UPDATE alert_groups SET notified_at = $1, notified_firing = $2, notified_resolved = $3
         WHERE rule_id = $4 AND group_key = $5",
    )
    .bind(log.notified_at)
    .bind(json(&log.firing))
    .bind(json(&log.resolved))
    .bind(rule_id)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The rule's firing alerts and those resolved since their group's last notification.
async fn group_alerts(
    conn: &mut AnyConnection,
    rule_id: i64,
) -> Result<Vec<GroupAlert>, AlertError> {
    let rows = sqlx::query(
        "SELECT fingerprint, labels, annotations, \"values\", active_since AS starts_at, NULL AS ends_at
         FROM alert_instances WHERE rule_id = $1 AND state = 'firing'
         UNION ALL
         SELECT fingerprint, labels, annotations, \"values\", starts_at, ends_at
         FROM alert_resolved WHERE rule_id = $2",
    )
    .bind(rule_id)
    .bind(rule_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let labels: String = row.try_get("labels")?;
            let annotations: String = row.try_get("annotations")?;
            let values: String = row.try_get("values")?;
            Ok(GroupAlert {
                fingerprint: row.try_get("fingerprint")?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                values: serde_json::from_str(&values).unwrap_or_default(),
                annotations: serde_json::from_str(&annotations).unwrap_or_default(),
                starts_at: row.try_get("starts_at")?,
                ends_at: row.try_get("ends_at")?,
            })
        })
        .collect()
}

/// A pending or firing instance, with its rule's name.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentAlert {
    pub rule_id: i64,
    pub rule_name: String,
    pub instance: Instance,
}

/// Every pending and firing instance of the tenant, firing first, then oldest first.
pub async fn current(pool: &AnyPool, tenant: &str) -> Result<Vec<CurrentAlert>, AlertError> {
    let rows = sqlx::query(
        "SELECT r.id AS rule_id, r.name AS rule_name, i.fingerprint, i.labels, i.annotations,
                i.\"values\", i.state, i.active_since, i.fired_at, i.last_seen
         FROM alert_instances i JOIN alert_rules r ON r.id = i.rule_id
         WHERE r.tenant = $1
         ORDER BY i.state = 'pending', i.active_since, r.id, i.fingerprint",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CurrentAlert {
                rule_id: row.try_get("rule_id")?,
                rule_name: row.try_get("rule_name")?,
                instance: instance_of(row)?,
            })
        })
        .collect()
}

/// One firing or resolved transition.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub rule_id: i64,
    pub rule_name: String,
    pub fingerprint: String,
    pub labels: Labels,
    pub values: Values,
    /// "firing" or "resolved".
    pub status: String,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub at: i64,
}

/// The tenant's `limit` latest transitions, newest first.
pub async fn history(
    pool: &AnyPool,
    tenant: &str,
    limit: u32,
) -> Result<Vec<HistoryEntry>, AlertError> {
    let rows = sqlx::query(
        "SELECT rule_id, rule_name, fingerprint, labels, \"values\", status, starts_at, ends_at, at
         FROM alert_history WHERE tenant = $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let labels: String = row.try_get("labels")?;
            let values: String = row.try_get("values")?;
            Ok(HistoryEntry {
                rule_id: row.try_get("rule_id")?,
                rule_name: row.try_get("rule_name")?,
                fingerprint: row.try_get("fingerprint")?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                values: serde_json::from_str(&values).unwrap_or_default(),
                status: row.try_get("status")?,
                starts_at: row.try_get("starts_at")?,
                ends_at: row.try_get("ends_at")?,
                at: row.try_get("at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;
    use crate::evaluate::{Row, evaluate};
    use crate::payload::Message;
    use crate::rules::{self, DEFAULT_TENANT, RuleInput, RuleSpec};

    fn rows(services: &[&str]) -> Vec<Row> {
        services
            .iter()
            .map(|s| Row {
                labels: Labels::from([("service".to_string(), s.to_string())]),
                values: Values::from([("errors".to_string(), 3.0)]),
                firing: true,
            })
            .collect()
    }

    /// Loads, evaluates and commits like the scheduler, with the rows given.
    async fn step(metadata: &Metadata, rule_id: i64, services: &[&str], now: i64) -> Committed {
        let pool = metadata.pool();
        let rule = rules::get(pool, DEFAULT_TENANT, rule_id).await.unwrap();
        let previous = instances(pool, rule_id).await.unwrap();
        let evaluation = evaluate(
            &rule.spec.name,
            &previous,
            &rows(services),
            now,
            rule.spec.for_.as_millis() as i64,
            rule.spec.keep_firing_for.as_millis() as i64,
        );
        commit(
            pool,
            DEFAULT_TENANT,
            &rule,
            &evaluation,
            &Extra::new(),
            "http://flowscope.test",
            now,
        )
        .await
        .unwrap()
    }

    async fn outbox_messages(metadata: &Metadata) -> Vec<(i64, Message)> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT webhook_id, body FROM outbox WHERE kind = 'alert' ORDER BY id")
                .fetch_all(metadata.pool())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, body)| (id, serde_json::from_slice(&body).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_restart_neither_repeats_firing_nor_loses_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.sqlite");
        let metadata = Metadata::open(&path).await.unwrap();
        for (id, name) in [(1, "ops"), (2, "chat")] {
            sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES ($1, $2, 'https://example.com/', 0, 0)")
                .bind(id)
                .bind(name)
                .execute(metadata.pool())
                .await
                .unwrap();
        }
        let spec = RuleSpec::parse(RuleInput {
            name: "errors".into(),
            sql: "SELECT 'a' AS service".into(),
            interval: "10s".into(),
            for_: "10s".into(),
            webhooks: vec![1, 2],
            group_wait: Some("0s".into()),
            group_interval: Some("10s".into()),
            ..RuleInput::default()
        })
        .unwrap();
        let rule_id = rules::create(metadata.pool(), DEFAULT_TENANT, &spec, 0)
            .await
            .unwrap();

        assert_eq!(
            step(&metadata, rule_id, &["a", "b"], 0)
                .await
                .messages
                .len(),
            0
        );
        let fired = step(&metadata, rule_id, &["a", "b"], 10_000).await;
        assert_eq!(fired.transitions, 2);
        assert_eq!(fired.messages.len(), 2, "one message per webhook");
        metadata.pool().close().await;
        drop(metadata);

        // The process restarts: state comes back from the file with the outbox.
        let metadata = Metadata::open(&path).await.unwrap();
        let again = step(&metadata, rule_id, &["a", "b"], 20_000).await;
        assert_eq!(
            again,
            Committed::default(),
            "no second firing after a restart"
        );
        let resolved = step(&metadata, rule_id, &["b"], 30_000).await;
        assert_eq!(resolved.transitions, 1);
        metadata.pool().close().await;
        drop(metadata);

        let metadata = Metadata::open(&path).await.unwrap();
        let messages = outbox_messages(&metadata).await;
        assert_eq!(messages.len(), 4);
        let (webhook, firing) = &messages[0];
        assert_eq!(*webhook, 1);
        assert_eq!(firing.status, "firing");
        assert_eq!(firing.receiver, "ops");
        assert_eq!(messages[1].1.receiver, "chat");
        let services: Vec<&str> = firing
            .alerts
            .iter()
            .map(|a| a.labels["service"].as_str())
            .collect();
        assert_eq!(services.len(), 2);
        assert!(services.contains(&"a") && services.contains(&"b"));
        // The group's notification carries both alerts, and b still fires.
        let (_, last) = &messages[3];
        assert_eq!(last.status, "firing");
        let alerts: Vec<(&str, &str)> = last
            .alerts
            .iter()
            .map(|a| (a.labels["service"].as_str(), a.status.as_str()))
            .collect();
        assert_eq!(alerts, [("b", "firing"), ("a", "resolved")]);
        assert_eq!(last.alerts[1].ends_at, payload::rfc3339(30_000));

        let now = current(metadata.pool(), DEFAULT_TENANT).await.unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].instance.labels["service"], "b");
        assert_eq!(now[0].instance.state, State::Firing);
        let past = history(metadata.pool(), DEFAULT_TENANT, 10).await.unwrap();
        let statuses: Vec<&str> = past.iter().map(|h| h.status.as_str()).collect();
        assert_eq!(statuses, ["resolved", "firing", "firing"], "newest first");
    }

    #[tokio::test]
    async fn deleting_a_firing_rule_resolves_its_alerts_in_the_same_transaction() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (1, 'ops', 'https://example.com/', 0, 0)")
            .execute(metadata.pool())
            .await
            .unwrap();
        let spec = RuleSpec::parse(RuleInput {
            name: "errors".into(),
            sql: "SELECT 'a' AS service".into(),
            interval: "1s".into(),
            for_: "5s".into(),
            webhooks: vec![1],
            group_wait: Some("0s".into()),
            ..RuleInput::default()
        })
        .unwrap();
        let id = rules::create(metadata.pool(), DEFAULT_TENANT, &spec, 0)
            .await
            .unwrap();
        step(&metadata, id, &["a", "b"], 0).await;
        step(&metadata, id, &["a", "b", "c"], 5_000).await;
        let deleted = delete_rule(metadata.pool(), DEFAULT_TENANT, id, "http://x", 6_000)
            .await
            .unwrap();
        assert_eq!(deleted.transitions, 2, "a and b fire, c is pending");
        let messages = outbox_messages(&metadata).await;
        let last = &messages.last().unwrap().1;
        assert_eq!(last.status, "resolved");
        let mut services: Vec<&str> = last
            .alerts
            .iter()
            .map(|a| a.labels["service"].as_str())
            .collect();
        services.sort_unstable();
        assert_eq!(services, ["a", "b"]);
        assert!(
            current(metadata.pool(), DEFAULT_TENANT)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            delete_rule(metadata.pool(), DEFAULT_TENANT, id, "http://x", 7_000).await,
            Err(AlertError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn an_evaluation_of_a_deleted_rule_records_nothing() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let spec = RuleSpec::parse(RuleInput {
            name: "gone".into(),
            sql: "SELECT 1".into(),
            interval: "1s".into(),
            for_: "0s".into(),
            ..RuleInput::default()
        })
        .unwrap();
        let id = rules::create(metadata.pool(), DEFAULT_TENANT, &spec, 0)
            .await
            .unwrap();
        let rule = rules::get(metadata.pool(), DEFAULT_TENANT, id)
            .await
            .unwrap();
        delete_rule(metadata.pool(), DEFAULT_TENANT, id, "http://x", 0)
            .await
            .unwrap();
        let evaluation = evaluate("gone", &[], &rows(&["a"]), 0, 0, 0);
        let committed = commit(
            metadata.pool(),
            DEFAULT_TENANT,
            &rule,
            &evaluation,
            &Extra::new(),
            "http://x",
            0,
        )
        .await
        .unwrap();
        assert_eq!(committed, Committed::default());
        assert!(
            history(metadata.pool(), DEFAULT_TENANT, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A webhook `ops` (id 1) and a rule over it with `input`'s timers.
    async fn rule_with(metadata: &Metadata, input: RuleInput) -> i64 {
        sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (1, 'ops', 'https://example.com/', 0, 0) ON CONFLICT DO NOTHING")
            .execute(metadata.pool())
            .await
            .unwrap();
        let spec = RuleSpec::parse(RuleInput {
            name: "errors".into(),
            sql: "SELECT 'a' AS service".into(),
            interval: "1s".into(),
            for_: "0s".into(),
            webhooks: vec![1],
            ..input
        })
        .unwrap();
        rules::create(metadata.pool(), DEFAULT_TENANT, &spec, 0)
            .await
            .unwrap()
    }

    async fn flush_at(metadata: &Metadata, rule_id: i64, now: i64) -> Committed {
        let rule = rules::get(metadata.pool(), DEFAULT_TENANT, rule_id)
            .await
            .unwrap();
        flush(metadata.pool(), DEFAULT_TENANT, &rule, "http://x", now)
            .await
            .unwrap()
    }

    /// (status, [(service, status)]) of each alert notification, oldest first.
    async fn summaries(metadata: &Metadata) -> Vec<(String, Vec<(String, String)>)> {
        outbox_messages(metadata)
            .await
            .into_iter()
            .map(|(_, m)| {
                let alerts = m
                    .alerts
                    .iter()
                    .map(|a| (a.labels["service"].clone(), a.status.clone()))
                    .collect();
                (m.status, alerts)
            })
            .collect()
    }

    fn summary(status: &str, alerts: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
        (
            status.into(),
            alerts
                .iter()
                .map(|(s, t)| (s.to_string(), t.to_string()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn group_wait_gathers_group_interval_batches_and_repeat_interval_resends() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let id = rule_with(
            &metadata,
            RuleInput {
                group_wait: Some("5s".into()),
                group_interval: Some("10s".into()),
                repeat_interval: Some("60s".into()),
                ..RuleInput::default()
            },
        )
        .await;
        assert!(
            step(&metadata, id, &["a"], 0).await.messages.is_empty(),
            "group_wait"
        );
        assert!(
            step(&metadata, id, &["a", "b"], 3_000)
                .await
                .messages
                .is_empty()
        );
        assert_eq!(
            step(&metadata, id, &["a", "b"], 5_000).await.messages.len(),
            1
        );
        // c fires at 6s: told at the next tick of group_interval, 15s, not before.
        assert!(
            step(&metadata, id, &["a", "b", "c"], 6_000)
                .await
                .messages
                .is_empty()
        );
        assert!(flush_at(&metadata, id, 14_000).await.messages.is_empty());
        assert_eq!(flush_at(&metadata, id, 15_000).await.messages.len(), 1);
        // Nothing changes: silent until repeat_interval (60s after 15s).
        assert!(flush_at(&metadata, id, 25_000).await.messages.is_empty());
        assert!(flush_at(&metadata, id, 65_000).await.messages.is_empty());
        assert_eq!(flush_at(&metadata, id, 75_000).await.messages.len(), 1);
        // Everything resolves: one resolved notification, and the group ends.
        step(&metadata, id, &[], 80_000).await;
        assert_eq!(flush_at(&metadata, id, 85_000).await.messages.len(), 1);
        assert!(next_flushes(metadata.pool()).await.unwrap().is_empty());
        assert_eq!(
            summaries(&metadata).await,
            [
                summary("firing", &[("a", "firing"), ("b", "firing")]),
                summary(
                    "firing",
                    &[("a", "firing"), ("b", "firing"), ("c", "firing")]
                ),
                summary(
                    "firing",
                    &[("a", "firing"), ("b", "firing"), ("c", "firing")]
                ),
                summary(
                    "resolved",
                    &[("a", "resolved"), ("b", "resolved"), ("c", "resolved")]
                ),
            ]
        );
    }

    #[tokio::test]
    async fn group_by_labels_make_one_group_per_value() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let id = rule_with(
            &metadata,
            RuleInput {
                group_wait: Some("0s".into()),
                group_by: vec!["service".into()],
                ..RuleInput::default()
            },
        )
        .await;
        assert_eq!(step(&metadata, id, &["a", "b"], 0).await.messages.len(), 2);
        let keys: Vec<String> = outbox_messages(&metadata)
            .await
            .into_iter()
            .map(|(_, m)| m.group_key)
            .collect();
        assert_eq!(
            keys,
            [
                "{}:{alertname=\"errors\", service=\"a\"}",
                "{}:{alertname=\"errors\", service=\"b\"}"
            ]
        );
    }

    #[tokio::test]
    async fn a_silenced_alert_is_not_sent_until_its_silence_expires() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let id = rule_with(
            &metadata,
            RuleInput {
                group_wait: Some("0s".into()),
                group_interval: Some("1s".into()),
                ..RuleInput::default()
            },
        )
        .await;
        let silence = crate::silences::create(
            metadata.pool(),
            DEFAULT_TENANT,
            &crate::silences::SilenceInput {
                matchers: vec![crate::silences::Matcher {
                    name: "service".into(),
                    value: "b".into(),
                    is_regex: false,
                    is_equal: true,
                }],
                starts_at: None,
                ends_at: 1_000_000,
                created_by: "test".into(),
                comment: "b is being deployed".into(),
            },
            0,
        )
        .await
        .unwrap();
        step(&metadata, id, &["b"], 0).await;
        step(&metadata, id, &["a", "b"], 1_000).await;
        step(&metadata, id, &["a", "b"], 2_000).await;
        crate::silences::expire(metadata.pool(), DEFAULT_TENANT, silence, 2_500)
            .await
            .unwrap();
        step(&metadata, id, &["a", "b"], 3_000).await;
        assert_eq!(
            summaries(&metadata).await,
            [
                summary("firing", &[("a", "firing")]),
                summary("firing", &[("a", "firing"), ("b", "firing")]),
            ],
            "b alone sends nothing, a is sent without b, b follows the silence's end"
        );
    }

    #[test]
    fn the_dedup_decision_is_alertmanagers() {
        let set = |fps: &[&str]| fps.iter().map(|f| f.to_string()).collect::<BTreeSet<_>>();
        let log = |at: Option<i64>, firing: &[&str], resolved: &[&str]| NotificationLog {
            notified_at: at,
            firing: set(firing),
            resolved: set(resolved),
        };
        let check =
            |log: NotificationLog, firing: &[&str], resolved: &[&str], now: i64, expected: bool| {
                assert_eq!(
                    needs_notification(&log, &set(firing), &set(resolved), 100, now),
                    expected,
                    "{log:?} firing {firing:?} resolved {resolved:?} at {now}"
                );
            };
        check(log(None, &[], &[]), &["a"], &[], 0, true);
        check(log(None, &[], &[]), &[], &["a"], 0, false);
        check(log(Some(0), &["a"], &[]), &["a", "b"], &[], 1, true);
        check(log(Some(0), &["a", "b"], &[]), &["a"], &["b"], 1, true);
        check(log(Some(0), &["a"], &["b"]), &["a"], &["b"], 1, false);
        check(log(Some(0), &["a"], &[]), &["a"], &[], 100, true);
        check(log(Some(0), &["a"], &[]), &[], &["a"], 1, true);
        check(log(Some(0), &[], &["a"]), &[], &["a", "b"], 1, false);
    }
}
