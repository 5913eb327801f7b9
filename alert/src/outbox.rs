//! The durable outbox: a notification is a row, written in the same transaction as the
//! alert state change that caused it, and delivered (and retried) from there.

use std::sync::atomic::{AtomicU64, Ordering};

use flowscope_query::metadata::Backend;
use sqlx::{AnyConnection, AnyPool};

use crate::AlertError;

/// A pending notification whose attempt is due, with where and how to send it.
#[derive(Debug, Clone)]
pub struct DueMessage {
    pub id: i64,
    pub msg_id: String,
    pub body: Vec<u8>,
    pub created_at: i64,
    pub attempts: u32,
    pub url: String,
    pub secret: Option<String>,
    /// Whose notification it is: the delivery figures are the tenant's.
    pub tenant: String,
}

/// What one delivery attempt found, as recorded in `delivery_attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub at: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// Where a notification goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    Delivered,
    /// Try again at this time (unix ms).
    RetryAt(i64),
    Failed,
}

/// Adds a notification for `webhook_id` to the outbox, due now, and returns its message id
/// (the `webhook-id` header, the same on every retry). Call it inside the transaction that
/// records the state change, then wake the delivery worker after the commit.
pub async fn enqueue(
    conn: &mut AnyConnection,
    tenant: &str,
    webhook_id: i64,
    kind: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<String, AlertError> {
    let msg_id = new_message_id(now_ms);
    sqlx::query(
        "INSERT INTO outbox (tenant, msg_id, webhook_id, kind, body, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(&msg_id)
    .bind(webhook_id)
    .bind(kind)
    .bind(body)
    .bind(now_ms)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(msg_id)
}

/// id, msg_id, body, created_at, attempts, url, secret.
type DueRow = (
    i64,
    String,
    Vec<u8>,
    i64,
    i64,
    String,
    Option<String>,
    String,
);

/// Claims the pending notifications due at `now_ms`, oldest due first, at most `limit`,
/// until `claim_until_ms`: no other delivery worker on the same metadata database takes
/// them meanwhile (PostgreSQL: `FOR UPDATE SKIP LOCKED`, then the claim is written; SQLite's
/// write transaction is exclusive). [`record_attempt`] ends the claim; a worker that dies
/// with it leaves the row due again when the claim ends.
pub async fn claim(
    pool: &AnyPool,
    now_ms: i64,
    claim_until_ms: i64,
    limit: usize,
) -> Result<Vec<DueMessage>, AlertError> {
    let skip_locked = match crate::metadata::backend_of(pool) {
        Backend::Postgres => " FOR UPDATE OF o SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let select = format!(
        "SELECT o.id, o.msg_id, o.body, o.created_at, o.attempts, w.url, w.secret, o.tenant
         FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
         WHERE o.state = 'pending' AND o.next_attempt_at <= $1 AND o.claimed_until <= $2
         ORDER BY o.next_attempt_at, o.id
         LIMIT $3{skip_locked}"
    );
    let mut tx = crate::metadata::begin_write(pool).await?;
    let rows: Vec<DueRow> = sqlx::query_as(sqlx::AssertSqlSafe(select))
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
    for row in &rows {
        sqlx::query("UPDATE outbox SET claimed_until = $1 WHERE id = $2")
            .bind(claim_until_ms)
            .bind(row.0)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, msg_id, body, created_at, attempts, url, secret, tenant)| DueMessage {
                id,
                msg_id,
                body,
                created_at,
                attempts: u32::try_from(attempts).unwrap_or(0),
                url,
                secret,
                tenant,
            },
        )
        .collect())
}

/// Ends the claims on rows `ids` without an attempt (the worker is stopping): they are due
/// again at once, for the next worker.
pub async fn release(pool: &AnyPool, ids: &[i64]) -> Result<(), AlertError> {
    for id in ids {
        sqlx::query("UPDATE outbox SET claimed_until = 0 WHERE id = $1 AND state = 'pending'")
            .bind(id)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The earliest time after `now_ms` at which a pending notification falls due (or its
/// claim ends).
pub async fn next_due_after(pool: &AnyPool, now_ms: i64) -> Result<Option<i64>, AlertError> {
    let (next,): (Option<i64>,) = sqlx::query_as(
        "SELECT min(due) FROM (
             SELECT CASE WHEN claimed_until > next_attempt_at THEN claimed_until
                         ELSE next_attempt_at END AS due
             FROM outbox WHERE state = 'pending') pending
         WHERE due > $1",
    )
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    Ok(next)
}

/// Records an attempt on outbox row `id` and moves the row to `next`, in one transaction.
/// A row deleted meanwhile (its webhook was deleted) is left alone.
pub async fn record_attempt(
    pool: &AnyPool,
    id: i64,
    attempt: &AttemptRecord,
    next: NextState,
    last_error: Option<&str>,
) -> Result<(), AlertError> {
    let (state, next_attempt_at, finished_at) = match next {
        NextState::Delivered => ("delivered", None, Some(attempt.at)),
        NextState::RetryAt(at) => ("pending", Some(at), None),
        NextState::Failed => ("failed", None, Some(attempt.at)),
    };
    let mut tx = crate::metadata::begin_write(pool).await?;
    let updated = sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, state = $1, claimed_until = 0,
             next_attempt_at = coalesce($2, next_attempt_at), finished_at = $3,
             last_status = $4, last_error = $5
         WHERE id = $6 AND state = 'pending'",
    )
    .bind(state)
    .bind(next_attempt_at)
    .bind(finished_at)
    .bind(attempt.status.map(i64::from))
    .bind(last_error)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 1 {
        sqlx::query(
            "INSERT INTO delivery_attempts (outbox_id, at, status, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(attempt.at)
        .bind(attempt.status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `msg_` followed by the time and a process-unique counter mixed with the process id:
/// unique across restarts because the time moves on, and sortable by creation.
fn new_message_id(now_ms: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "msg_{now_ms:013x}{:05x}{count:06x}",
        std::process::id() & 0xf_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    #[tokio::test]
    async fn enqueued_notifications_get_distinct_ids_and_are_due_now() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let mut conn = metadata.pool().acquire().await.unwrap();
        sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (7, 'a', 'https://example.com/', 0, 0)")
            .execute(&mut *conn)
            .await
            .unwrap();
        let first = enqueue(&mut conn, "default", 7, "test", b"{}", 1_000)
            .await
            .unwrap();
        let second = enqueue(&mut conn, "default", 7, "test", b"{}", 1_000)
            .await
            .unwrap();
        assert_ne!(first, second);
        let (due,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM outbox WHERE state = 'pending' AND next_attempt_at <= 1000",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(due, 2);
    }

    #[tokio::test]
    async fn due_rows_come_oldest_first_and_an_attempt_moves_them_on() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        sqlx::query("INSERT INTO webhooks (id, name, url, secret, created_at, updated_at) VALUES (7, 'a', 'https://example.com/', 'whsec_x', 0, 0)")
            .execute(pool)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let late = enqueue(&mut conn, "default", 7, "test", b"late", 2_000)
            .await
            .unwrap();
        let early = enqueue(&mut conn, "default", 7, "test", b"early", 1_000)
            .await
            .unwrap();
        drop(conn);
        assert!(claim(pool, 999, 1_999, 10).await.unwrap().is_empty());
        let rows = claim(pool, 5_000, 6_000, 10).await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.msg_id.as_str()).collect();
        assert_eq!(ids, [early.as_str(), late.as_str()]);
        assert_eq!(rows[0].secret.as_deref(), Some("whsec_x"));
        assert!(
            claim(pool, 5_000, 6_000, 10).await.unwrap().is_empty(),
            "claimed rows are not handed out twice"
        );
        assert_eq!(next_due_after(pool, 5_000).await.unwrap(), Some(6_000));
        assert_eq!(
            claim(pool, 6_000, 7_000, 1).await.unwrap().len(),
            1,
            "a claim whose worker died ends"
        );

        let attempt = AttemptRecord {
            at: 5_000,
            status: Some(503),
            error: Some("HTTP 503".into()),
            duration_ms: 3,
        };
        record_attempt(
            pool,
            rows[0].id,
            &attempt,
            NextState::RetryAt(9_000),
            Some("HTTP 503"),
        )
        .await
        .unwrap();
        record_attempt(
            pool,
            rows[1].id,
            &attempt,
            NextState::Failed,
            Some("HTTP 503"),
        )
        .await
        .unwrap();
        assert!(claim(pool, 8_999, 9_999, 10).await.unwrap().is_empty());
        assert_eq!(next_due_after(pool, 5_000).await.unwrap(), Some(9_000));
        let again = claim(pool, 9_000, 10_000, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        // A finished row takes no more attempts.
        record_attempt(pool, rows[1].id, &attempt, NextState::Delivered, None)
            .await
            .unwrap();
        let (attempts,): (i64,) = sqlx::query_as("SELECT count(*) FROM delivery_attempts")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(attempts, 2);
    }

    /// Two workers claiming at once (two processes on one PostgreSQL, under scripts/test's
    /// PostgreSQL pass; one SQLite file otherwise) never get the same row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_share_out_the_rows_without_overlap() {
        let metadata = Metadata::open_in_memory().await.unwrap();
        let pool = metadata.pool();
        sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (7, 'a', 'https://example.com/', 0, 0)")
            .execute(pool)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        for _ in 0..60 {
            enqueue(&mut conn, "default", 7, "test", b"{}", 1_000)
                .await
                .unwrap();
        }
        drop(conn);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let pool = pool.clone();
            workers.spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..40 {
                    let rows = claim(&pool, 2_000, 60_000, 3).await.unwrap();
                    mine.extend(rows.into_iter().map(|row| row.id));
                    tokio::task::yield_now().await;
                }
                mine
            });
        }
        let mut all = Vec::new();
        while let Some(mine) = workers.join_next().await {
            all.extend(mine.unwrap());
        }
        let unique: std::collections::BTreeSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a row was claimed twice");
        assert_eq!(unique.len(), 60, "every row was claimed");
    }
}
