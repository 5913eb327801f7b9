//! The durable outbox: a notification is a row, written in the same transaction as the
//! alert state change that caused it, and delivered (and retried) from there.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqliteConnection;

use crate::AlertError;

/// Adds a notification for `webhook_id` to the outbox, due now, and returns its message id
/// (the `webhook-id` header, the same on every retry). Call it inside the transaction that
/// records the state change, then wake the delivery worker after the commit.
pub async fn enqueue(
    conn: &mut SqliteConnection,
    tenant: &str,
    webhook_id: i64,
    kind: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<String, AlertError> {
    let msg_id = new_message_id(now_ms);
    sqlx::query(
        "INSERT INTO outbox (tenant, msg_id, webhook_id, kind, body, created_at, next_attempt_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
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
}
