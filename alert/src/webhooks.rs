//! Webhooks: where notifications go, with their signing secrets, and the history of what
//! was delivered to each.

use sqlx::AnyPool;

use crate::outbox;
use crate::{AlertError, sign, ssrf};

/// A webhook as the API shows it: the secret itself never leaves the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub has_secret: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a client sends to create or replace a webhook.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub name: String,
    pub url: String,
    /// `whsec_<base64>`. On create, `None` generates one; on update, `None` keeps the old one.
    pub secret: Option<String>,
}

/// A created webhook, and its secret if flowscope generated it: shown this once only.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: i64,
    pub generated_secret: Option<String>,
}

/// One notification to a webhook and every attempt to deliver it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub msg_id: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub attempt_list: Vec<outbox::AttemptRecord>,
}

const MAX_NAME_CHARS: usize = 200;
const MAX_URL_CHARS: usize = 2048;

/// Checks name, URL (including the SSRF rule for IP literals) and secret.
fn validate(input: &WebhookInput, allow_private: bool) -> Result<(), AlertError> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AlertError::BadInput(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if input.url.len() > MAX_URL_CHARS {
        return Err(AlertError::BadInput(format!(
            "url must be at most {MAX_URL_CHARS} characters"
        )));
    }
    ssrf::check_url(&input.url, allow_private)?;
    if let Some(secret) = &input.secret {
        sign::parse_secret(secret)?;
    }
    Ok(())
}

fn unique_name(error: sqlx::Error, name: &str) -> AlertError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => AlertError::Conflict(format!(
            "a webhook named `{name}` already exists; pick another name or PUT to change it"
        )),
        _ => AlertError::Database(error),
    }
}

fn not_found(id: i64) -> AlertError {
    AlertError::NotFound(format!(
        "no webhook with id {id}; GET /api/webhooks lists them"
    ))
}

pub async fn create(
    pool: &AnyPool,
    tenant: &str,
    input: WebhookInput,
    allow_private: bool,
    now_ms: i64,
) -> Result<Created, AlertError> {
    validate(&input, allow_private)?;
    let generated_secret = match input.secret {
        Some(_) => None,
        None => Some(sign::generate_secret()),
    };
    let secret = input.secret.as_ref().or(generated_secret.as_ref());
    let name = input.name.trim();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO webhooks (tenant, name, url, secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(tenant)
    .bind(name)
    .bind(&input.url)
    .bind(secret)
    .bind(now_ms)
    .bind(now_ms)
    .fetch_one(pool)
    .await
    .map_err(|e| unique_name(e, name))?;
    Ok(Created {
        id,
        generated_secret,
    })
}

/// `has_secret` as 0 or 1: the one form SQLite and PostgreSQL both answer.
type WebhookRow = (i64, String, String, i64, i64, i64);

fn webhook((id, name, url, has_secret, created_at, updated_at): WebhookRow) -> Webhook {
    Webhook {
        id,
        name,
        url,
        has_secret: has_secret != 0,
        created_at,
        updated_at,
    }
}

pub async fn list(pool: &AnyPool, tenant: &str) -> Result<Vec<Webhook>, AlertError> {
    let rows: Vec<WebhookRow> = sqlx::query_as(
        "SELECT id, name, url, CASE WHEN secret IS NULL THEN 0 ELSE 1 END, created_at, updated_at
         FROM webhooks WHERE tenant = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(webhook).collect())
}

pub async fn get(pool: &AnyPool, tenant: &str, id: i64) -> Result<Webhook, AlertError> {
    let row: Option<WebhookRow> = sqlx::query_as(
        "SELECT id, name, url, CASE WHEN secret IS NULL THEN 0 ELSE 1 END, created_at, updated_at
         FROM webhooks WHERE tenant = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(webhook).ok_or_else(|| not_found(id))
}

/// Replaces name and URL, and the secret if one is given.
pub async fn update(
    pool: &AnyPool,
    tenant: &str,
    id: i64,
    input: WebhookInput,
    allow_private: bool,
    now_ms: i64,
) -> Result<Webhook, AlertError> {
    validate(&input, allow_private)?;
    let name = input.name.trim();
    let updated = sqlx::query(
        "UPDATE webhooks SET name = $1, url = $2, secret = coalesce($3, secret), updated_at = $4
         WHERE tenant = $5 AND id = $6",
    )
    .bind(name)
    .bind(&input.url)
    .bind(&input.secret)
    .bind(now_ms)
    .bind(tenant)
    .bind(id)
    .execute(pool)
    .await
    .map_err(|e| unique_name(e, name))?;
    if updated.rows_affected() == 0 {
        return Err(not_found(id));
    }
    get(pool, tenant, id).await
}

/// Deletes the webhook and, with it, its notifications and their history.
pub async fn delete(pool: &AnyPool, tenant: &str, id: i64) -> Result<(), AlertError> {
    let deleted = sqlx::query("DELETE FROM webhooks WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(pool)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

/// Enqueues a test notification (Alertmanager webhook v4 shape, alert `FlowscopeTest`,
/// firing) to webhook `id`; returns its message id. The caller wakes the worker.
pub async fn enqueue_test(
    pool: &AnyPool,
    tenant: &str,
    id: i64,
    external_url: &str,
    now_ms: i64,
) -> Result<String, AlertError> {
    let hook = get(pool, tenant, id).await?;
    let body = test_notification(&hook.name, external_url, now_ms);
    let mut conn = pool.acquire().await?;
    outbox::enqueue(&mut conn, tenant, id, "test", &body, now_ms).await
}

/// The body of a test notification: what Alertmanager would send for one firing alert,
/// its links to the dashboard's alerts page at `external_url`.
pub fn test_notification(receiver: &str, external_url: &str, now_ms: i64) -> Vec<u8> {
    let external_url = external_url.trim_end_matches('/');
    let starts_at = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let labels = serde_json::json!({ "alertname": "FlowscopeTest", "severity": "none" });
    let annotations = serde_json::json!({
        "summary": "a test notification from flowscope: this webhook receives alerts"
    });
    let body = serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"FlowscopeTest\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": { "alertname": "FlowscopeTest" },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": format!("{external_url}/#/alerts"),
            "fingerprint": format!("{:016x}", now_ms),
        }],
    });
    body.to_string().into_bytes()
}

/// The newest `limit` notifications to webhook `id`, newest first, with their attempts.
pub async fn deliveries(
    pool: &AnyPool,
    tenant: &str,
    id: i64,
    limit: u32,
) -> Result<Vec<Delivery>, AlertError> {
    get(pool, tenant, id).await?;
    type Row = (
        i64,
        String,
        String,
        String,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, msg_id, kind, state, attempts, created_at, next_attempt_at, finished_at,
                last_status, last_error
         FROM outbox WHERE tenant = $1 AND webhook_id = $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for (
        outbox_id,
        msg_id,
        kind,
        state,
        attempts,
        created_at,
        next_attempt_at,
        finished_at,
        last_status,
        last_error,
    ) in rows
    {
        let attempt_rows: Vec<(i64, Option<i64>, Option<String>, i64)> = sqlx::query_as(
            "SELECT at, status, error, duration_ms FROM delivery_attempts
             WHERE outbox_id = $1 ORDER BY id",
        )
        .bind(outbox_id)
        .fetch_all(pool)
        .await?;
        deliveries.push(Delivery {
            id: outbox_id,
            msg_id,
            kind,
            next_attempt_at: (state == "pending").then_some(next_attempt_at),
            state,
            attempts,
            created_at,
            finished_at,
            last_status,
            last_error,
            attempt_list: attempt_rows
                .into_iter()
                .map(|(at, status, error, duration_ms)| outbox::AttemptRecord {
                    at,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    error,
                    duration_ms,
                })
                .collect(),
        });
    }
    Ok(deliveries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    fn input(name: &str, url: &str, secret: Option<&str>) -> WebhookInput {
        WebhookInput {
            name: name.into(),
            url: url.into(),
            secret: secret.map(str::to_string),
        }
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[tokio::test]
    async fn create_list_update_delete_and_the_secret_stays_inside() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        let a = create(
            pool,
            "default",
            input("a", "https://a.example/", Some(SECRET)),
            false,
            1,
        )
        .await
        .unwrap();
        assert!(a.generated_secret.is_none());
        let b = create(
            pool,
            "default",
            input("b", "https://b.example/", None),
            false,
            2,
        )
        .await
        .unwrap();
        let generated = b.generated_secret.unwrap();
        assert!(sign::parse_secret(&generated).is_ok());

        let conflict = create(
            pool,
            "default",
            input("a", "https://c.example/", None),
            false,
            3,
        )
        .await;
        assert!(
            matches!(conflict, Err(AlertError::Conflict(_))),
            "{conflict:?}"
        );

        let all = list(pool, "default").await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|w| w.has_secret));
        assert!(list(pool, "other").await.unwrap().is_empty());

        // PUT without a secret keeps it.
        let changed = update(
            pool,
            "default",
            a.id,
            input("a2", "https://a2.example/", None),
            false,
            9,
        )
        .await
        .unwrap();
        assert_eq!(
            (changed.name.as_str(), changed.url.as_str()),
            ("a2", "https://a2.example/")
        );
        assert_eq!(changed.updated_at, 9);
        let (secret,): (String,) = sqlx::query_as("SELECT secret FROM webhooks WHERE id = $1")
            .bind(a.id)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(secret, SECRET);

        assert!(matches!(
            update(
                pool,
                "default",
                999,
                input("x", "https://x.example/", None),
                false,
                9
            )
            .await,
            Err(AlertError::NotFound(_))
        ));
        assert!(matches!(
            update(
                pool,
                "default",
                a.id,
                input("b", "https://x.example/", None),
                false,
                9
            )
            .await,
            Err(AlertError::Conflict(_))
        ));
        delete(pool, "default", a.id).await.unwrap();
        assert!(matches!(
            get(pool, "default", a.id).await,
            Err(AlertError::NotFound(_))
        ));
        assert!(matches!(
            delete(pool, "default", a.id).await,
            Err(AlertError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn bad_names_urls_secrets_and_private_literals_are_refused() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        let refused = |result: Result<Created, AlertError>| match result {
            Err(AlertError::BadInput(m) | AlertError::Forbidden(m)) => m,
            other => panic!("accepted: {other:?}"),
        };
        let m = refused(
            create(
                pool,
                "default",
                input(" ", "https://a.example/", None),
                false,
                1,
            )
            .await,
        );
        assert!(m.contains("name"), "{m}");
        let m = refused(
            create(
                pool,
                "default",
                input("a", "ftp://a.example/", None),
                false,
                1,
            )
            .await,
        );
        assert!(m.contains("http"), "{m}");
        let m = refused(
            create(
                pool,
                "default",
                input("a", "https://a.example/", Some("hunter2")),
                false,
                1,
            )
            .await,
        );
        assert!(m.contains("whsec_"), "{m}");
        let m = refused(
            create(
                pool,
                "default",
                input("a", "http://127.1:9/", None),
                false,
                1,
            )
            .await,
        );
        assert!(m.contains("--allow-private-webhooks"), "{m}");
        assert!(
            create(
                pool,
                "default",
                input("a", "http://127.1:9/", None),
                true,
                1
            )
            .await
            .is_ok()
        );
        // Hostnames are checked when connecting, not here.
        assert!(
            create(
                pool,
                "default",
                input("b", "http://localhost:9/", None),
                false,
                1
            )
            .await
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_test_notification_is_queued_in_alertmanager_shape_and_listed() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        let hook = create(
            pool,
            "default",
            input("ops", "https://a.example/", None),
            false,
            1,
        )
        .await
        .unwrap();
        let first = enqueue_test(pool, "default", hook.id, "http://127.0.0.1:8080", 1_000)
            .await
            .unwrap();
        let second = enqueue_test(pool, "default", hook.id, "http://127.0.0.1:8080", 2_000)
            .await
            .unwrap();
        let listed = deliveries(pool, "default", hook.id, 10).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|d| d.msg_id.as_str()).collect();
        assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
        assert_eq!(listed[0].state, "pending");
        assert_eq!(listed[0].next_attempt_at, Some(2_000));
        assert!(listed[0].attempt_list.is_empty());
        assert_eq!(
            deliveries(pool, "default", hook.id, 1).await.unwrap().len(),
            1
        );
        assert!(matches!(
            enqueue_test(pool, "default", 999, "http://x", 1).await,
            Err(AlertError::NotFound(_))
        ));

        let body: serde_json::Value = serde_json::from_slice(&test_notification(
            "ops",
            "https://flowscope.example.com/",
            1_614_265_330_000,
        ))
        .unwrap();
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["receiver"], "ops");
        assert_eq!(body["alerts"][0]["labels"]["alertname"], "FlowscopeTest");
        assert_eq!(body["alerts"][0]["startsAt"], "2021-02-25T15:02:10.000Z");
        assert_eq!(body["externalURL"], "https://flowscope.example.com");
        assert_eq!(
            body["alerts"][0]["generatorURL"],
            "https://flowscope.example.com/#/alerts"
        );
    }
}
