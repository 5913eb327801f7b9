//! Alert state in the metadata database: a rule's instances, its history, and the one
//! transaction that records an evaluation together with the notifications it causes.

use std::collections::BTreeMap;

use sqlx::{Row as _, SqliteConnection, SqlitePool};

use crate::AlertError;
use crate::evaluate::{Evaluation, Instance, Labels, State, Transition, Values};
use crate::outbox;
use crate::payload::{self, Source};
use crate::rules::{self, Rule};

/// The outbox `kind` of an alert notification.
pub const KIND: &str = "alert";

/// Annotations added to some alerts of a notification (graph context), by fingerprint.
pub type Extra = BTreeMap<String, BTreeMap<String, String>>;

/// What one committed evaluation wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    pub transitions: usize,
    /// Outbox message ids, one per webhook of the rule when anything changed.
    pub messages: Vec<String>,
}

/// The instances (pending and firing) a rule had after its last committed evaluation.
pub async fn instances(pool: &SqlitePool, rule_id: i64) -> Result<Vec<Instance>, AlertError> {
    let rows = sqlx::query(
        "SELECT fingerprint, labels, \"values\", state, active_since, fired_at, last_seen
         FROM alert_instances WHERE rule_id = ? ORDER BY fingerprint",
    )
    .bind(rule_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(instance_of).collect()
}

fn instance_of(row: &sqlx::sqlite::SqliteRow) -> Result<Instance, AlertError> {
    let labels: String = row.try_get("labels")?;
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
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// Records an evaluation of `rule` at `now_ms`: replaces its instances, appends its
/// transitions to the history, and enqueues one Alertmanager message per webhook of the
/// rule holding every transition, all in one transaction. A rule deleted meanwhile
/// records nothing.
pub async fn commit(
    pool: &SqlitePool,
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
        "UPDATE alert_rules SET last_evaluation = ?, last_error = NULL WHERE id = ? AND tenant = ?",
    )
    .bind(now_ms)
    .bind(rule.id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    if marked.rows_affected() == 0 {
        return Ok(Committed::default());
    }
    sqlx::query("DELETE FROM alert_instances WHERE rule_id = ?")
        .bind(rule.id)
        .execute(&mut *tx)
        .await?;
    for instance in &evaluation.instances {
        sqlx::query(
            "INSERT INTO alert_instances
               (rule_id, fingerprint, labels, \"values\", state, active_since, fired_at, last_seen)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(rule.id)
        .bind(&instance.fingerprint)
        .bind(json(&instance.labels))
        .bind(json(&instance.values))
        .bind(instance.state.as_str())
        .bind(instance.active_since)
        .bind(instance.fired_at)
        .bind(instance.last_seen)
        .execute(&mut *tx)
        .await?;
    }
    let messages = record_transitions(
        &mut tx,
        tenant,
        rule,
        &evaluation.transitions,
        extra,
        external_url,
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(Committed {
        transitions: evaluation.transitions.len(),
        messages,
    })
}

/// Deletes a rule; its firing instances are resolved now, with their notifications, in the
/// same transaction, so a receiver is never left with an alert nothing will end.
pub async fn delete_rule(
    pool: &SqlitePool,
    tenant: &str,
    id: i64,
    external_url: &str,
    now_ms: i64,
) -> Result<Committed, AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    // Writing first takes SQLite's write lock before anything is read.
    let touched = sqlx::query(
        "UPDATE alert_rules SET last_evaluation = last_evaluation WHERE id = ? AND tenant = ?",
    )
    .bind(id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    if touched.rows_affected() == 0 {
        return Err(AlertError::NotFound(format!(
            "no alert rule with id {id}; GET /api/alert-rules lists them"
        )));
    }
    let rule = rules::get_in(&mut tx, tenant, id).await?;
    let rows = sqlx::query(
        "SELECT fingerprint, labels, \"values\", state, active_since, fired_at, last_seen
         FROM alert_instances WHERE rule_id = ? AND state = 'firing' ORDER BY fingerprint",
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
    let messages = record_transitions(
        &mut tx,
        tenant,
        &rule,
        &transitions,
        &Extra::new(),
        external_url,
        now_ms,
    )
    .await?;
    sqlx::query("DELETE FROM alert_rules WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Committed {
        transitions: transitions.len(),
        messages,
    })
}

/// Appends `transitions` to the history and enqueues one message per webhook of `rule`.
async fn record_transitions(
    conn: &mut SqliteConnection,
    tenant: &str,
    rule: &Rule,
    transitions: &[Transition],
    extra: &Extra,
    external_url: &str,
    now_ms: i64,
) -> Result<Vec<String>, AlertError> {
    for transition in transitions {
        let instance = transition.instance();
        let (status, ends_at) = match transition {
            Transition::Firing(_) => ("firing", None),
            Transition::Resolved { ends_at, .. } => ("resolved", Some(*ends_at)),
        };
        sqlx::query(
            "INSERT INTO alert_history
               (rule_id, rule_name, tenant, fingerprint, labels, \"values\", status, starts_at, ends_at, at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    let mut messages = Vec::new();
    if transitions.is_empty() {
        return Ok(messages);
    }
    let webhooks = sqlx::query(
        "SELECT w.id, w.name FROM alert_rule_webhooks l JOIN webhooks w ON w.id = l.webhook_id
         WHERE l.rule_id = ? ORDER BY w.id",
    )
    .bind(rule.id)
    .fetch_all(&mut *conn)
    .await?;
    let source = Source {
        rule_name: &rule.spec.name,
        rule_sql: &rule.spec.sql,
        rule_annotations: &rule.spec.annotations,
        external_url,
    };
    for webhook in &webhooks {
        let id: i64 = webhook.try_get("id")?;
        let name: String = webhook.try_get("name")?;
        let Some(message) = payload::message(&source, &name, transitions, extra) else {
            continue;
        };
        let body = serde_json::to_vec(&message).map_err(|e| {
            AlertError::BadInput(format!("cannot encode the alert notification: {e}"))
        })?;
        messages.push(outbox::enqueue(&mut *conn, tenant, id, KIND, &body, now_ms).await?);
    }
    Ok(messages)
}

/// A pending or firing instance, with its rule's name.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentAlert {
    pub rule_id: i64,
    pub rule_name: String,
    pub instance: Instance,
}

/// Every pending and firing instance of the tenant, firing first, then oldest first.
pub async fn current(pool: &SqlitePool, tenant: &str) -> Result<Vec<CurrentAlert>, AlertError> {
    let rows = sqlx::query(
        "SELECT r.id AS rule_id, r.name AS rule_name, i.fingerprint, i.labels, i.\"values\",
                i.state, i.active_since, i.fired_at, i.last_seen
         FROM alert_instances i JOIN alert_rules r ON r.id = i.rule_id
         WHERE r.tenant = ?
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
    pool: &SqlitePool,
    tenant: &str,
    limit: u32,
) -> Result<Vec<HistoryEntry>, AlertError> {
    let rows = sqlx::query(
        "SELECT rule_id, rule_name, fingerprint, labels, \"values\", status, starts_at, ends_at, at
         FROM alert_history WHERE tenant = ? ORDER BY at DESC, id DESC LIMIT ?",
    )
    .bind(tenant)
    .bind(limit)
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
            sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (?, ?, 'https://example.com/', 0, 0)")
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
            annotations: BTreeMap::new(),
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
        let (_, last) = &messages[3];
        assert_eq!(last.status, "resolved");
        assert_eq!(last.alerts.len(), 1);
        assert_eq!(last.alerts[0].labels["service"], "a");
        assert_eq!(last.alerts[0].ends_at, payload::rfc3339(30_000));

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
        let evaluation = evaluate("gone", &[], &rows(&["a"]), 0, 0);
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
}
