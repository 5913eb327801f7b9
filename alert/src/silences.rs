//! Silences as Alertmanager has them: label matchers (equal or not, literal or regular
//! expression) and a time range; an alert whose labels match every matcher of an active
//! silence is not notified. Stored per tenant in the metadata database; expiring a
//! silence ends it now, and an expired silence is kept so the alerts page can show it.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::AlertError;
use crate::evaluate::Labels;

/// Matchers one silence may have.
pub const MAX_MATCHERS: usize = 64;
/// Bytes of a matcher's value, a comment or a `createdBy`.
pub const MAX_TEXT: usize = 4_096;
/// Compiled size of one matcher's regular expression: a pattern from the API must not
/// cost the scheduler much memory or time per alert.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// One matcher, in Alertmanager's API shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    /// False negates the matcher (`!=`, `!~`).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// What a user asks for, before validation; times are unix ms.
#[derive(Debug, Clone)]
pub struct SilenceInput {
    pub matchers: Vec<Matcher>,
    /// `None` starts now.
    pub starts_at: Option<i64>,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: i64,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a silence stands at a given time, named as Alertmanager names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }
}

impl Silence {
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms >= self.ends_at {
            SilenceState::Expired
        } else if now_ms < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }
}

/// A matcher ready to test labels: regular expressions anchored, as Alertmanager's are.
#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    is_equal: bool,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Literal(String),
    Regex(Regex),
}

impl Compiled {
    fn of(matcher: &Matcher) -> Result<Self, String> {
        let test = if matcher.is_regex {
            let regex = RegexBuilder::new(&format!("^(?:{})$", matcher.value))
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?;
            Test::Regex(regex)
        } else {
            Test::Literal(matcher.value.clone())
        };
        Ok(Self {
            name: matcher.name.clone(),
            is_equal: matcher.is_equal,
            test,
        })
    }

    /// A missing label matches as the empty value, as in Prometheus and Alertmanager.
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let hit = match &self.test {
            Test::Literal(literal) => literal == value,
            Test::Regex(regex) => regex.is_match(value),
        };
        hit == self.is_equal
    }
}

/// The silences active at one time, compiled: what the notifications and the alerts list
/// ask whether labels are silenced.
#[derive(Debug, Clone, Default)]
pub struct ActiveSilences {
    silences: Vec<(i64, Vec<Compiled>)>,
}

impl ActiveSilences {
    /// The ids of the silences that mute `labels`, ascending.
    pub fn silenced_by(&self, labels: &Labels) -> Vec<i64> {
        self.silences
            .iter()
            .filter(|(_, matchers)| matchers.iter().all(|m| m.matches(labels)))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.silences.is_empty()
    }
}

/// Checks a silence as Alertmanager's API does, and returns its start (now when none
/// was given or it is in the past).
fn validate(input: &SilenceInput, now_ms: i64) -> Result<i64, AlertError> {
    let bad = |m: String| Err(AlertError::BadInput(m));
    if input.matchers.is_empty() {
        return bad(
            "`matchers` is empty; a silence needs at least one, e.g. [{\"name\": \"service\", \"value\": \"checkout\", \"isRegex\": false, \"isEqual\": true}]".into(),
        );
    }
    if input.matchers.len() > MAX_MATCHERS {
        return bad(format!(
            "a silence has at most {MAX_MATCHERS} matchers, this one has {}",
            input.matchers.len()
        ));
    }
    let mut compiled = Vec::with_capacity(input.matchers.len());
    for matcher in &input.matchers {
        if !is_label_name(&matcher.name) {
            return bad(format!(
                "matcher name `{}` is not a label name; write a name like `service` or `alertname`",
                matcher.name
            ));
        }
        if matcher.value.len() > MAX_TEXT {
            return bad(format!(
                "the value of matcher `{}` is longer than {MAX_TEXT} bytes",
                matcher.name
            ));
        }
        compiled.push(Compiled::of(matcher).map_err(|e| {
            AlertError::BadInput(format!(
                "matcher `{}`: `{}` is not a regular expression: {e}",
                matcher.name, matcher.value
            ))
        })?);
    }
    // A silence whose matchers all match an empty label set would silence every alert.
    if compiled.iter().all(|m| m.matches(&Labels::new())) {
        return bad(
            "these matchers match every alert (each matches an empty value); add one that needs a value, e.g. {\"name\": \"alertname\", \"value\": \"checkout errors\"}".into(),
        );
    }
    for (field, text) in [
        ("createdBy", &input.created_by),
        ("comment", &input.comment),
    ] {
        if text.trim().is_empty() {
            return bad(format!(
                "`{field}` is empty; say who silences and why, as Alertmanager requires"
            ));
        }
        if text.len() > MAX_TEXT {
            return bad(format!("`{field}` is longer than {MAX_TEXT} bytes"));
        }
    }
    let starts_at = input.starts_at.unwrap_or(now_ms).max(now_ms);
    if input.ends_at <= now_ms {
        return bad("`endsAt` is in the past; give a time to come, e.g. two hours from now".into());
    }
    if input.ends_at <= starts_at {
        return bad("`endsAt` must be after `startsAt`".into());
    }
    Ok(starts_at)
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
}

fn not_found(id: i64) -> AlertError {
    AlertError::NotFound(format!(
        "no silence with id {id}; GET /api/silences lists them"
    ))
}

/// Stores a new silence and returns its id.
pub async fn create(
    pool: &AnyPool,
    tenant: &str,
    input: &SilenceInput,
    now_ms: i64,
) -> Result<i64, AlertError> {
    let starts_at = validate(input, now_ms)?;
    let matchers = serde_json::to_string(&input.matchers)
        .map_err(|e| AlertError::BadInput(format!("cannot store the matchers: {e}")))?;
    let mut tx = crate::metadata::begin_write(pool).await?;
    let id: i64 = sqlx::query(
        "INSERT INTO silences (tenant, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(tenant)
    .bind(matchers)
    .bind(starts_at)
    .bind(input.ends_at)
    .bind(input.created_by.trim())
    .bind(&input.comment)
    .bind(now_ms)
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    tx.commit().await?;
    Ok(id)
}

fn silence_of(row: &sqlx::any::AnyRow) -> Result<Silence, AlertError> {
    let matchers: String = row.try_get("matchers")?;
    Ok(Silence {
        id: row.try_get("id")?,
        matchers: serde_json::from_str(&matchers).unwrap_or_default(),
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        created_by: row.try_get("created_by")?,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Every silence of the tenant, newest first.
pub async fn list(pool: &AnyPool, tenant: &str) -> Result<Vec<Silence>, AlertError> {
    let rows = sqlx::query(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at
         FROM silences WHERE tenant = $1 ORDER BY id DESC",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(silence_of).collect()
}

/// One silence of the tenant.
pub async fn get(pool: &AnyPool, tenant: &str, id: i64) -> Result<Silence, AlertError> {
    let row = sqlx::query(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at
         FROM silences WHERE id = $1 AND tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| not_found(id))?;
    silence_of(&row)
}

/// Ends a silence now (a pending one never starts); an expired one stays as it was.
pub async fn expire(pool: &AnyPool, tenant: &str, id: i64, now_ms: i64) -> Result<(), AlertError> {
    let mut tx = crate::metadata::begin_write(pool).await?;
    let found = sqlx::query(
        "UPDATE silences SET starts_at = CASE WHEN starts_at < $1 THEN starts_at ELSE $1 END,
                ends_at = CASE WHEN ends_at < $2 THEN ends_at ELSE $2 END,
                updated_at = CASE WHEN ends_at > $3 THEN $4 ELSE updated_at END
         WHERE id = $5 AND tenant = $6",
    )
    .bind(now_ms)
    .bind(now_ms)
    .bind(now_ms)
    .bind(now_ms)
    .bind(id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    if found.rows_affected() == 0 {
        return Err(not_found(id));
    }
    tx.commit().await?;
    Ok(())
}

/// The tenant's silences active at `now_ms`, compiled, read on `conn` (the transaction
/// of a notification, so a silence and the notification it stops agree).
pub async fn active(
    conn: &mut AnyConnection,
    tenant: &str,
    now_ms: i64,
) -> Result<ActiveSilences, AlertError> {
    let rows = sqlx::query(
        "SELECT id, matchers FROM silences
         WHERE tenant = $1 AND starts_at <= $2 AND ends_at > $3 ORDER BY id",
    )
    .bind(tenant)
    .bind(now_ms)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut silences = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let matchers: String = row.try_get("matchers")?;
        let matchers: Vec<Matcher> = serde_json::from_str(&matchers).unwrap_or_default();
        // Stored matchers were checked when created; one that no longer compiles (a regex
        // engine change) silences nothing rather than everything.
        let compiled: Result<Vec<Compiled>, String> = matchers.iter().map(Compiled::of).collect();
        match compiled {
            Ok(compiled) if !compiled.is_empty() => silences.push((id, compiled)),
            _ => tracing::warn!(
                silence = id,
                "a stored silence has matchers that do not compile; it silences nothing"
            ),
        }
    }
    Ok(ActiveSilences { silences })
}

/// [`active`] on a connection of the pool.
pub async fn active_now(
    pool: &AnyPool,
    tenant: &str,
    now_ms: i64,
) -> Result<ActiveSilences, AlertError> {
    let mut conn = pool.acquire().await?;
    active(&mut conn, tenant, now_ms).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    fn matcher(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn input(matchers: Vec<Matcher>) -> SilenceInput {
        SilenceInput {
            matchers,
            starts_at: None,
            ends_at: 10_000,
            created_by: "ana".into(),
            comment: "deploying checkout".into(),
        }
    }

    #[test]
    fn matchers_follow_alertmanager_equal_regex_negated_and_missing_labels() {
        let check = |m: Matcher, pairs: &[(&str, &str)], expected: bool| {
            let compiled = Compiled::of(&m).unwrap();
            assert_eq!(
                compiled.matches(&labels(pairs)),
                expected,
                "{m:?} on {pairs:?}"
            );
        };
        check(
            matcher("service", "checkout", false, true),
            &[("service", "checkout")],
            true,
        );
        check(
            matcher("service", "checkout", false, true),
            &[("service", "cart")],
            false,
        );
        check(
            matcher("service", "checkout", false, false),
            &[("service", "cart")],
            true,
        );
        // Anchored: `check` does not match `checkout`.
        check(
            matcher("service", "check", true, true),
            &[("service", "checkout")],
            false,
        );
        check(
            matcher("service", "check.*", true, true),
            &[("service", "checkout")],
            true,
        );
        check(
            matcher("service", "cart|pay.*", true, false),
            &[("service", "payments")],
            false,
        );
        // A missing label is the empty value.
        check(matcher("env", "", false, true), &[("service", "a")], true);
        check(matcher("env", "prod", false, false), &[], true);
    }

    #[test]
    fn silences_are_validated_as_alertmanager_does() {
        let refused = |input: SilenceInput, says: &str| match validate(&input, 1_000) {
            Err(AlertError::BadInput(message)) => assert!(message.contains(says), "{message}"),
            other => panic!("accepted: {other:?}"),
        };
        refused(input(vec![]), "`matchers` is empty");
        refused(
            input(vec![matcher("9x", "a", false, true)]),
            "not a label name",
        );
        refused(
            input(vec![matcher("service", "(", true, true)]),
            "not a regular expression",
        );
        refused(
            input(vec![matcher("service", ".*", true, true)]),
            "match every alert",
        );
        refused(
            SilenceInput {
                ends_at: 500,
                ..input(vec![matcher("service", "a", false, true)])
            },
            "in the past",
        );
        refused(
            SilenceInput {
                comment: " ".into(),
                ..input(vec![matcher("service", "a", false, true)])
            },
            "`comment`",
        );
        // A start in the past starts now.
        let ok = SilenceInput {
            starts_at: Some(0),
            ..input(vec![matcher("service", "a", false, true)])
        };
        assert_eq!(validate(&ok, 1_000).unwrap(), 1_000);
    }

    #[tokio::test]
    async fn active_silences_mute_matching_labels_until_expired() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        let id = create(
            pool,
            "default",
            &input(vec![
                matcher("alertname", "errors", false, true),
                matcher("service", "check.*", true, true),
            ]),
            1_000,
        )
        .await
        .unwrap();
        let other_tenant = create(
            pool,
            "other",
            &input(vec![matcher("service", "cart", false, true)]),
            1_000,
        )
        .await
        .unwrap();
        let muted = labels(&[("alertname", "errors"), ("service", "checkout")]);
        let cart = labels(&[("alertname", "errors"), ("service", "cart")]);
        let active = active_now(pool, "default", 2_000).await.unwrap();
        assert_eq!(active.silenced_by(&muted), [id]);
        assert!(
            active.silenced_by(&cart).is_empty(),
            "the other tenant's silence"
        );
        assert!(
            active_now(pool, "default", 10_000)
                .await
                .unwrap()
                .is_empty(),
            "ended"
        );

        expire(pool, "default", id, 3_000).await.unwrap();
        let silence = get(pool, "default", id).await.unwrap();
        assert_eq!(silence.ends_at, 3_000);
        assert_eq!(silence.state(3_000), SilenceState::Expired);
        assert!(active_now(pool, "default", 3_000).await.unwrap().is_empty());
        assert!(matches!(
            expire(pool, "default", other_tenant, 3_000).await,
            Err(AlertError::NotFound(_))
        ));
        assert_eq!(list(pool, "default").await.unwrap().len(), 1);
    }
}
