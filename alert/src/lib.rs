//! Alert rules, their scheduler, and webhook delivery through a durable outbox.
//!
//! ```text
//!  alert rule (SQL, interval, for) ──every interval──> SqlEngine (read-only sandbox, own timeout)
//!    rows ──> instances keyed by their string columns ──returned for `for`──> firing
//!      ──condition gone for `keep_firing_for`──> resolved
//!    firing and resolved alerts ──> groups (rule + `group_by` labels) ──group_wait, then every
//!      group_interval, minus silenced alerts, if changed or repeat_interval passed──> notification
//!    each notification is written to the outbox in the same SQLite transaction as the group's
//!      notification log
//!  outbox ──delivery worker──> webhook (Standard Webhooks signature, SSRF-checked connect, retries)
//!  metadata (webhooks, rules, alert state, outbox): SQLite in the data directory, schema in migrations/
//! ```
//!
//! Evaluation and payload building are plain functions over values with time passed in;
//! the scheduler and the delivery worker are the only tasks, and they meet only in SQLite.

pub mod context;
pub mod deliver;
pub mod error;
pub mod evaluate;
pub mod metadata;
pub mod outbox;
pub mod payload;
pub mod redact;
pub mod rules;
pub mod scheduler;
pub mod sign;
pub mod silences;
pub mod ssrf;
pub mod state;
pub mod webhooks;

pub use deliver::{DeliveryConfig, DeliveryWaker, RetryPolicy};
pub use error::AlertError;
pub use metadata::Metadata;

/// Unix milliseconds now. Only the edges read the clock (the scheduler, the delivery worker,
/// the API handlers); evaluation, payloads and retry decisions take the time as an argument.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
