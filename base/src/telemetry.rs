//! Labelled figures the receivers, the SQL API, the alert scheduler and the webhook delivery
//! worker count, and `/metrics` shows: one `Telemetry` per process, shared by `Arc` (built
//! by the binary and handed to each, like the memory budget). Plain counters and
//! histograms behind a mutex per family: a few hundred nanoseconds per request, never per
//! span.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The upper bounds, in seconds, of the duration histograms' buckets: from 5 ms (a query
/// over the memtable) to a minute (past `--sql-timeout`'s default of 30 s).
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A duration histogram: observations per bucket (each counted in the first bucket that
/// holds it; `/metrics` writes them cumulated), their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: [u64; DURATION_BUCKETS.len()],
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Observations at or under each bound, as Prometheus's `le` buckets count them.
    pub fn cumulative(&self) -> [u64; DURATION_BUCKETS.len()] {
        let mut total = 0;
        self.buckets.map(|n| {
            total += n;
            total
        })
    }
}

/// Counters keyed by their label values.
#[derive(Debug)]
pub struct Counters<K>(Mutex<BTreeMap<K, u64>>);

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone> Counters<K> {
    pub fn add(&self, key: K, n: u64) {
        *lock(&self.0).entry(key).or_default() += n;
    }

    pub fn snapshot(&self) -> Vec<(K, u64)> {
        lock(&self.0).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Histograms keyed by their label values.
#[derive(Debug)]
pub struct Histograms<K>(Mutex<BTreeMap<K, Histogram>>);

impl<K> Default for Histograms<K> {
    fn default() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone> Histograms<K> {
    pub fn observe(&self, key: K, duration: Duration) {
        lock(&self.0).entry(key).or_default().observe(duration);
    }

    pub fn snapshot(&self) -> Vec<(K, Histogram)> {
        lock(&self.0)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A counter is a sum: a panic elsewhere while the lock was held leaves it valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `(tenant, protocol, outcome)`: protocol `grpc` or `http`, or `local` for a part a
/// cluster node routed to its own ingester, taken in process.
pub type IngestKey = (String, &'static str, &'static str);
/// `(tenant, outcome)`.
pub type TenantOutcome = (String, &'static str);

/// Every labelled figure of the process. Tenants are names (`TenantId::as_str`): this crate
/// knows nothing of authentication.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// OTLP export requests by tenant, protocol and outcome (`accepted`, `partial`,
    /// `invalid`, `too_large`, `rate_limited`, `refused`, `failed`).
    pub ingest_requests: Counters<IngestKey>,
    /// Spans of decoded requests by tenant, protocol and outcome: `accepted` (acknowledged),
    /// `rejected` (refused in the partial success), `refused` (the whole request was).
    pub ingest_spans: Counters<IngestKey>,
    /// Requests refused before their tenant was known (no valid token, or a content type
    /// checked first), by protocol and outcome.
    pub ingest_unattributed: Counters<(&'static str, &'static str)>,
    /// `/api/sql` queries by tenant and outcome (`ok`, `invalid`, `not_allowed`,
    /// `too_expensive`, `busy`, `failed`).
    pub sql_queries: Counters<TenantOutcome>,
    /// `/api/sql` time to the answer (or its first part, when it is streamed), by tenant.
    pub sql_duration: Histograms<String>,
    /// Alert rule evaluations by tenant and outcome (`ok`, `failed`).
    pub alert_evaluations: Counters<TenantOutcome>,
    /// Alert rule evaluation time, by tenant.
    pub alert_duration: Histograms<String>,
    /// Webhook delivery attempts by tenant and outcome (`delivered`, `retry`, `failed`).
    pub webhook_attempts: Counters<TenantOutcome>,
    /// Webhook delivery attempt time (connect to answer read), by tenant.
    pub webhook_duration: Histograms<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_its_first_bucket_and_cumulates() {
        let mut histogram = Histogram::default();
        for ms in [1, 5, 6, 700, 120_000] {
            histogram.observe(Duration::from_millis(ms));
        }
        assert_eq!(histogram.count, 5);
        assert!((histogram.sum_seconds - 120.712).abs() < 1e-9);
        let cumulative = histogram.cumulative();
        assert_eq!(cumulative[0], 2, "1 ms and 5 ms are at or under 5 ms");
        assert_eq!(cumulative[1], 3);
        assert_eq!(cumulative[7], 4, "700 ms is under 1 s");
        assert_eq!(
            cumulative[DURATION_BUCKETS.len() - 1],
            4,
            "two minutes is only in +Inf, which is the count"
        );
    }

    #[test]
    fn counters_add_by_label_values() {
        let counters = Counters::default();
        counters.add(("a".to_string(), "grpc", "accepted"), 2);
        counters.add(("a".to_string(), "grpc", "accepted"), 3);
        counters.add(("b".to_string(), "http", "refused"), 1);
        assert_eq!(
            counters.snapshot(),
            vec![
                (("a".to_string(), "grpc", "accepted"), 5),
                (("b".to_string(), "http", "refused"), 1)
            ]
        );
    }
}
