//! Alert rules in the metadata database: validated specs, and create, read, update, delete.

use std::collections::BTreeMap;
use std::time::Duration;

use flowscope_base::{format_duration, parse_duration};
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::AlertError;

/// The tenant every row belongs to until authentication exists.
pub const DEFAULT_TENANT: &str = "default";

/// Shortest interval a rule may run at: each run is a SQL query.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Alertmanager's defaults for a route's timers.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 60 * 60);

/// Shortest group and repeat interval: groups are flushed by the scheduler's 1s tick.
pub const MIN_GROUP_INTERVAL: Duration = Duration::from_secs(1);

/// Labels a rule may group by; `...` (Alertmanager's "every label") counts as one.
pub const MAX_GROUP_BY: usize = 32;

/// What a user asks for, before validation.
#[derive(Debug, Clone, Default)]
pub struct RuleInput {
    pub name: String,
    pub sql: String,
    /// A duration like `30s`.
    pub interval: String,
    /// A duration like `5m`; `0s` fires at the first evaluation that returns a row.
    pub for_: String,
    pub webhooks: Vec<i64>,
    pub annotations: BTreeMap<String, String>,
    /// Label names whose values split the rule's alerts into notification groups;
    /// empty groups by rule only, `["..."]` by every label.
    pub group_by: Vec<String>,
    /// Durations; `None` takes Alertmanager's default (30s, 5m, 4h) or 0s for
    /// `keep_firing_for`.
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    pub keep_firing_for: Option<String>,
}

/// A validated rule (its SQL is checked against the engine separately).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub name: String,
    pub sql: String,
    pub interval: Duration,
    pub for_: Duration,
    pub webhooks: Vec<i64>,
    pub annotations: BTreeMap<String, String>,
    /// Sorted, without duplicates and without `alertname` (every group is one rule's).
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    pub group_wait: Duration,
    /// How long a group waits after a notification before it notifies of changes.
    pub group_interval: Duration,
    /// How long before a notification that changes nothing is sent again.
    pub repeat_interval: Duration,
    /// How long an alert stays firing after its condition cleared.
    pub keep_firing_for: Duration,
}

impl RuleSpec {
    /// Whether the rule groups by every label (`group_by: ["..."]`): each alert alone.
    pub fn groups_by_all(&self) -> bool {
        self.group_by.iter().any(|name| name == "...")
    }
}

/// A stored rule and what the scheduler last did with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: i64,
    pub spec: RuleSpec,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_evaluation: Option<i64>,
    pub last_error: Option<String>,
}

impl RuleSpec {
    /// Checks everything but the SQL's plan and the webhooks' existence.
    pub fn parse(input: RuleInput) -> Result<Self, AlertError> {
        let bad = |m: String| AlertError::BadInput(m);
        let name = input.name.trim().to_string();
        if name.is_empty() || name.len() > 200 {
            return Err(bad(
                "`name` must be 1 to 200 characters, e.g. \"checkout errors\"".into(),
            ));
        }
        if input.sql.trim().is_empty() {
            return Err(bad(
                "`sql` is empty; write a query whose string columns name what is wrong, e.g. SELECT service_name, count(*) AS errors FROM spans WHERE status_code = 'ERROR' GROUP BY service_name".into(),
            ));
        }
        let duration = |field: &str, text: &str| {
            parse_duration(text).map_err(|e| {
                bad(format!(
                    "`{field}`: {e}; write a whole number and a unit (ms, s, m, h, d, w), e.g. \"30s\""
                ))
            })
        };
        let interval = duration("interval", &input.interval)?;
        if interval < MIN_INTERVAL {
            return Err(bad(format!(
                "`interval` is {}; it must be at least 1s",
                format_duration(interval)
            )));
        }
        let for_ = duration("for", &input.for_)?;
        let optional = |field: &str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => duration(field, text),
        };
        let group_wait = optional("group_wait", &input.group_wait, DEFAULT_GROUP_WAIT)?;
        let group_interval = optional(
            "group_interval",
            &input.group_interval,
            DEFAULT_GROUP_INTERVAL,
        )?;
        let repeat_interval = optional(
            "repeat_interval",
            &input.repeat_interval,
            DEFAULT_REPEAT_INTERVAL,
        )?;
        let keep_firing_for = optional("keep_firing_for", &input.keep_firing_for, Duration::ZERO)?;
        for (field, value) in [
            ("group_interval", group_interval),
            ("repeat_interval", repeat_interval),
        ] {
            if value < MIN_GROUP_INTERVAL {
                return Err(bad(format!(
                    "`{field}` is {}; it must be at least 1s",
                    format_duration(value)
                )));
            }
        }
        let group_by = group_by(input.group_by)?;
        let mut webhooks = input.webhooks;
        webhooks.sort_unstable();
        webhooks.dedup();
        if input.annotations.keys().any(|k| k.trim().is_empty()) {
            return Err(bad("`annotations` keys must not be empty".into()));
        }
        Ok(Self {
            name,
            sql: input.sql,
            interval,
            for_,
            webhooks,
            annotations: input.annotations,
            group_by,
            group_wait,
            group_interval,
            repeat_interval,
            keep_firing_for,
        })
    }
}

/// Checks label names as Prometheus writes them (`[a-zA-Z_][a-zA-Z0-9_]*`) or `...`;
/// `alertname` is dropped since a group never spans two rules.
fn group_by(names: Vec<String>) -> Result<Vec<String>, AlertError> {
    if names.len() > MAX_GROUP_BY {
        return Err(AlertError::BadInput(format!(
            "`group_by` has {} labels; at most {MAX_GROUP_BY} are allowed",
            names.len()
        )));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim().to_string();
        let valid =
            name == "..."
                || name.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                }) && !name.is_empty();
        if !valid {
            return Err(AlertError::BadInput(format!(
                "`group_by` label `{name}` is not a label name; write the names of the rule's string columns, e.g. [\"service\"], or [\"...\"] to group by every label"
            )));
        }
        if name != "alertname" {
            out.push(name);
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.iter().any(|name| name == "...") {
        out = vec!["...".into()];
    }
    Ok(out)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn conflict_or(error: sqlx::Error, name: &str) -> AlertError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => AlertError::Conflict(format!(
            "an alert rule named `{name}` already exists; pick another name or update that rule"
        )),
        _ => AlertError::Database(error),
    }
}

fn not_found(id: i64) -> AlertError {
    AlertError::NotFound(format!(
        "no alert rule with id {id}; GET /api/alert-rules lists them"
    ))
}

/// Refuses webhook ids the tenant does not have, naming the first missing one.
async fn check_webhooks(
    conn: &mut AnyConnection,
    tenant: &str,
    webhooks: &[i64],
) -> Result<(), AlertError> {
    for id in webhooks {
        let found = sqlx::query("SELECT 1 FROM webhooks WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(AlertError::BadInput(format!(
                "no webhook with id {id}; create it with POST /api/webhooks or list them with GET /api/webhooks"
            )));
        }
    }
    Ok(())
}

async fn link_webhooks(
    conn: &mut AnyConnection,
    rule_id: i64,
    webhooks: &[i64],
) -> Result<(), AlertError> {
    sqlx::query("DELETE FROM alert_rule_webhooks WHERE rule_id = $1")
        .bind(rule_id)
        .execute(&mut *conn)
        .await?;
    for webhook in webhooks {
        sqlx::query("INSERT INTO alert_rule_webhooks (rule_id, webhook_id) VALUES ($1, $2)")
            .bind(rule_id)
            .bind(webhook)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn annotations_json(spec: &RuleSpec) -> String {
    serde_json::to_string(&spec.annotations).unwrap_or_else(|_| "{}".into())
}

fn group_by_json(spec: &RuleSpec) -> String {
    serde_json::to_string(&spec.group_by).unwrap_or_else(|_| "[]".into())
}

/// Stores a new rule and returns its id.
pub async fn create(
    pool: &AnyPool,
    tenant: &str,
    spec: &RuleSpec,
    now_ms: i64,
) -> Result<i64, AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    check_webhooks(&mut tx, tenant, &spec.webhooks).await?;
    let id: i64 = sqlx::query(
        "INSERT INTO alert_rules (tenant, name, sql, interval_ms, for_ms, annotations, group_by,
                group_wait_ms, group_interval_ms, repeat_interval_ms, keep_firing_for_ms,
                created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(tenant)
    .bind(&spec.name)
    .bind(&spec.sql)
    .bind(millis(spec.interval))
    .bind(millis(spec.for_))
    .bind(annotations_json(spec))
    .bind(group_by_json(spec))
    .bind(millis(spec.group_wait))
    .bind(millis(spec.group_interval))
    .bind(millis(spec.repeat_interval))
    .bind(millis(spec.keep_firing_for))
    .bind(now_ms)
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| conflict_or(e, &spec.name))?
    .try_get(0)?;
    link_webhooks(&mut tx, id, &spec.webhooks).await?;
    tx.commit().await?;
    Ok(id)
}

/// Replaces a rule's spec; its alert state is kept (instances are keyed by their labels).
pub async fn update(
    pool: &AnyPool,
    tenant: &str,
    id: i64,
    spec: &RuleSpec,
    now_ms: i64,
) -> Result<(), AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    check_webhooks(&mut tx, tenant, &spec.webhooks).await?;
    let updated = sqlx::query(
        "UPDATE alert_rules SET name = $1, sql = $2, interval_ms = $3, for_ms = $4, annotations = $5,
                group_by = $6, group_wait_ms = $7, group_interval_ms = $8, repeat_interval_ms = $9,
                keep_firing_for_ms = $10, updated_at = $11, last_error = NULL
         WHERE id = $12 AND tenant = $13",
    )
    .bind(&spec.name)
    .bind(&spec.sql)
    .bind(millis(spec.interval))
    .bind(millis(spec.for_))
    .bind(annotations_json(spec))
    .bind(group_by_json(spec))
    .bind(millis(spec.group_wait))
    .bind(millis(spec.group_interval))
    .bind(millis(spec.repeat_interval))
    .bind(millis(spec.keep_firing_for))
    .bind(now_ms)
    .bind(id)
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .map_err(|e| conflict_or(e, &spec.name))?;
    if updated.rows_affected() == 0 {
        return Err(not_found(id));
    }
    link_webhooks(&mut tx, id, &spec.webhooks).await?;
    tx.commit().await?;
    Ok(())
}

/// The columns [`rule_of`] reads, as a literal so queries stay static strings.
macro_rules! rule_columns {
    () => {
        "id, name, sql, interval_ms, for_ms, annotations, group_by, group_wait_ms, group_interval_ms, \
         repeat_interval_ms, keep_firing_for_ms, created_at, updated_at, last_evaluation, last_error"
    };
}

async fn webhooks_of(conn: &mut AnyConnection, rule_id: i64) -> Result<Vec<i64>, AlertError> {
    let rows = sqlx::query(
        "SELECT webhook_id FROM alert_rule_webhooks WHERE rule_id = $1 ORDER BY webhook_id",
    )
    .bind(rule_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(AlertError::from))
        .collect()
}

fn rule_of(row: &sqlx::any::AnyRow, webhooks: Vec<i64>) -> Result<Rule, AlertError> {
    let duration = |column: &str| -> Result<Duration, AlertError> {
        let ms: i64 = row.try_get(column)?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    };
    let annotations: String = row.try_get("annotations")?;
    let group_by: String = row.try_get("group_by")?;
    Ok(Rule {
        id: row.try_get("id")?,
        spec: RuleSpec {
            name: row.try_get("name")?,
            sql: row.try_get("sql")?,
            interval: duration("interval_ms")?,
            for_: duration("for_ms")?,
            webhooks,
            annotations: serde_json::from_str(&annotations).unwrap_or_default(),
            group_by: serde_json::from_str(&group_by).unwrap_or_default(),
            group_wait: duration("group_wait_ms")?,
            group_interval: duration("group_interval_ms")?,
            repeat_interval: duration("repeat_interval_ms")?,
            keep_firing_for: duration("keep_firing_for_ms")?,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_evaluation: row.try_get("last_evaluation")?,
        last_error: row.try_get("last_error")?,
    })
}

/// One rule of the tenant.
pub async fn get(pool: &AnyPool, tenant: &str, id: i64) -> Result<Rule, AlertError> {
    let mut conn = pool.acquire().await?;
    get_in(&mut conn, tenant, id).await
}

/// One rule of the tenant, read on `conn` (inside a transaction, say).
pub async fn get_in(conn: &mut AnyConnection, tenant: &str, id: i64) -> Result<Rule, AlertError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        rule_columns!(),
        " FROM alert_rules WHERE id = $1 AND tenant = $2"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found(id))?;
    let webhooks = webhooks_of(conn, id).await?;
    rule_of(&row, webhooks)
}

/// Every rule of the tenant, by id.
pub async fn list(pool: &AnyPool, tenant: &str) -> Result<Vec<Rule>, AlertError> {
    let mut conn = pool.acquire().await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        rule_columns!(),
        " FROM alert_rules WHERE tenant = $1 ORDER BY id"
    ))
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    let mut rules = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let webhooks = webhooks_of(&mut conn, id).await?;
        rules.push(rule_of(row, webhooks)?);
    }
    Ok(rules)
}

/// Every rule of every tenant, with its tenant: what the scheduler runs.
pub async fn list_all(pool: &AnyPool) -> Result<Vec<(String, Rule)>, AlertError> {
    let mut conn = pool.acquire().await?;
    let rows = sqlx::query(concat!(
        "SELECT tenant, ",
        rule_columns!(),
        " FROM alert_rules ORDER BY id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut rules = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let webhooks = webhooks_of(&mut conn, id).await?;
        rules.push((row.try_get("tenant")?, rule_of(row, webhooks)?));
    }
    Ok(rules)
}

/// Records a failed evaluation (the SQL failed or timed out); the alert state is untouched.
pub async fn record_failure(
    pool: &AnyPool,
    id: i64,
    now_ms: i64,
    error: &str,
) -> Result<(), AlertError> {
    sqlx::query("UPDATE alert_rules SET last_evaluation = $1, last_error = $2 WHERE id = $3")
        .bind(now_ms)
        .bind(error)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Takes (or renews) rule `id`'s lease for `owner` until `until_ms`: succeeds when nobody
/// holds it, `owner` already does, or the holder's lease ended before `now_ms`. Only the
/// holder evaluates the rule and sends its groups' notifications, so several processes on
/// one metadata database never do either twice at once. One statement: atomic on both
/// backends.
pub async fn take_lease(
    pool: &AnyPool,
    id: i64,
    owner: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool, AlertError> {
    let taken = sqlx::query(
        "UPDATE alert_rules SET lease_owner = $1, lease_until = $2
         WHERE id = $3 AND (lease_owner IS NULL OR lease_owner = $4 OR lease_until < $5)",
    )
    .bind(owner)
    .bind(until_ms)
    .bind(id)
    .bind(owner)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    #[tokio::test]
    async fn one_process_holds_a_rules_lease_until_it_ends() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        let id = create(pool, "default", &RuleSpec::parse(input("r")).unwrap(), 0)
            .await
            .unwrap();
        assert!(take_lease(pool, id, "a", 1_000, 31_000).await.unwrap());
        assert!(
            !take_lease(pool, id, "b", 2_000, 32_000).await.unwrap(),
            "held by a"
        );
        assert!(
            take_lease(pool, id, "a", 30_000, 60_000).await.unwrap(),
            "a renews"
        );
        assert!(!take_lease(pool, id, "b", 59_000, 89_000).await.unwrap());
        assert!(
            take_lease(pool, id, "b", 60_001, 90_000).await.unwrap(),
            "a stopped renewing: b takes over"
        );
        assert!(!take_lease(pool, id, "a", 61_000, 91_000).await.unwrap());
        let before = get(pool, "default", id).await.unwrap();
        assert_eq!(before.updated_at, 0, "a lease is not an edit of the rule");
        assert!(
            !take_lease(pool, id + 1, "a", 0, 1).await.unwrap(),
            "no such rule"
        );
    }

    fn input(name: &str) -> RuleInput {
        RuleInput {
            name: name.into(),
            sql: "SELECT 'a' AS service".into(),
            interval: "30s".into(),
            for_: "1m".into(),
            webhooks: vec![],
            annotations: BTreeMap::from([("summary".into(), "too many errors".into())]),
            ..RuleInput::default()
        }
    }

    fn refused(input: RuleInput, says: &str) {
        match RuleSpec::parse(input) {
            Err(AlertError::BadInput(message)) => assert!(message.contains(says), "{message}"),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn specs_are_validated_with_messages_that_say_the_format() {
        let spec = RuleSpec::parse(input("r")).unwrap();
        assert_eq!(spec.interval, Duration::from_secs(30));
        assert_eq!(spec.for_, Duration::from_secs(60));
        refused(
            RuleInput {
                interval: "500ms".into(),
                ..input("r")
            },
            "at least 1s",
        );
        refused(
            RuleInput {
                for_: "five minutes".into(),
                ..input("r")
            },
            "e.g. \"30s\"",
        );
        refused(
            RuleInput {
                sql: " ".into(),
                ..input("r")
            },
            "`sql` is empty",
        );
        refused(input(""), "`name`");
    }

    #[tokio::test]
    async fn rules_round_trip_keep_every_field_and_refuse_duplicates_and_unknown_webhooks() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (3, 'ops', 'https://example.com/', 0, 0)")
            .execute(pool)
            .await
            .unwrap();
        let spec = RuleSpec::parse(RuleInput {
            webhooks: vec![3],
            ..input("errors")
        })
        .unwrap();
        let id = create(pool, DEFAULT_TENANT, &spec, 10).await.unwrap();
        let rule = get(pool, DEFAULT_TENANT, id).await.unwrap();
        assert_eq!(rule.spec, spec);
        assert_eq!(rule.created_at, 10);

        match create(pool, DEFAULT_TENANT, &spec, 11).await {
            Err(AlertError::Conflict(message)) => assert!(message.contains("errors")),
            other => panic!("duplicate accepted: {other:?}"),
        }
        let unknown = RuleSpec::parse(RuleInput {
            webhooks: vec![3, 99],
            ..input("other")
        })
        .unwrap();
        match create(pool, DEFAULT_TENANT, &unknown, 12).await {
            Err(AlertError::BadInput(message)) => assert!(message.contains("99"), "{message}"),
            other => panic!("unknown webhook accepted: {other:?}"),
        }
        assert_eq!(list(pool, DEFAULT_TENANT).await.unwrap().len(), 1);

        let changed = RuleSpec {
            webhooks: vec![],
            sql: "SELECT 'b' AS service".into(),
            ..spec.clone()
        };
        update(pool, DEFAULT_TENANT, id, &changed, 20)
            .await
            .unwrap();
        assert_eq!(get(pool, DEFAULT_TENANT, id).await.unwrap().spec, changed);
        assert!(matches!(
            get(pool, DEFAULT_TENANT, id + 1).await,
            Err(AlertError::NotFound(_))
        ));
    }
}
