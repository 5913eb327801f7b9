//! Per-tenant ingest rate limits: a token bucket on spans and one on (decompressed) bytes.
//!
//! A bucket holds up to one second of its rate. A request is admitted while the bucket is
//! not empty and then takes all it needs, even into debt; the debt is repaid before the
//! next request is admitted. So a request larger than a second's allowance still passes
//! (rarely), and over any stretch of time the rate holds.
//!
//! [`KeyedBuckets`] is the same bucket for counting events per key (failed logins per
//! client address, logins per tenant) with a burst of its own and a bounded table.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tenant::TenantId;

/// A tenant's ingest limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub spans_per_second: Option<u64>,
    pub bytes_per_second: Option<u64>,
}

/// One token bucket, with the time passed in.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` per second.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self::with_burst(rate as f64, rate as f64, now)
    }

    /// A full bucket of `burst` refilled at `rate` per second.
    pub fn with_burst(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            level: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// Whether the bucket is full at `now`: then it is no different from a new one.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= self.burst
    }

    /// How long until the bucket admits a request, zero if now.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.level > 0.0 {
            Duration::ZERO
        } else {
            // Wait until the debt is repaid and a little is in the bucket.
            Duration::from_secs_f64((-self.level + 1.0) / self.rate)
        }
    }

    /// How long until the bucket holds `amount` whole, zero if now: for events that each
    /// take one token and must not run into debt (a failed login).
    pub fn wait_for(&mut self, amount: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.level >= amount {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((amount - self.level) / self.rate)
        }
    }

    /// Takes `amount` (after [`TokenBucket::wait`] said zero).
    pub fn take(&mut self, amount: u64) {
        self.level -= amount as f64;
    }
}

#[derive(Debug)]
struct Buckets {
    limits: Limits,
    spans: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl Buckets {
    /// Full buckets for `limits`.
    fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            spans: limits.spans_per_second.map(|r| TokenBucket::new(r, now)),
            bytes: limits.bytes_per_second.map(|r| TokenBucket::new(r, now)),
        }
    }
}

/// Token buckets per tenant.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<TenantId, Buckets>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a request of `spans` spans and `bytes` bytes for `tenant` under `limits`, or
    /// says how long to wait before retrying. A refused request takes nothing.
    pub fn admit(
        &self,
        tenant: &TenantId,
        limits: Limits,
        spans: u64,
        bytes: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        if limits.spans_per_second.is_none() && limits.bytes_per_second.is_none() {
            return Ok(());
        }
        let mut all = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let buckets = all
            .entry(tenant.clone())
            .or_insert_with(|| Buckets::new(limits, now));
        if buckets.limits != limits {
            *buckets = Buckets::new(limits, now);
        }
        let wait = [buckets.spans.as_mut(), buckets.bytes.as_mut()]
            .into_iter()
            .flatten()
            .map(|bucket| bucket.wait(now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(bucket) = buckets.spans.as_mut() {
            bucket.take(spans);
        }
        if let Some(bucket) = buckets.bytes.as_mut() {
            bucket.take(bytes);
        }
        Ok(())
    }
}

/// A token bucket per key for events (one token each), at most `max_keys` of them. When the
/// table is full, buckets that have refilled are dropped first (a full bucket is the same
/// as none), then the fullest: a flood of new keys pushes out the keys that have spent the
/// least, never grows the table.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// Buckets of `burst` events refilled at `per_second`, for at most `max_keys` keys.
    pub fn new(per_second: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: per_second.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How long `key` must wait before its next event is admitted, zero if now. Takes
    /// nothing.
    pub fn wait(&self, key: &K, now: Instant) -> Duration {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets
            .get_mut(key)
            .map_or(Duration::ZERO, |bucket| bucket.wait_for(1.0, now))
    }

    /// Spends one event of `key`'s bucket.
    pub fn take(&self, key: &K, now: Instant) {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            buckets.retain(|_, bucket| !bucket.is_full(now));
            if buckets.len() >= self.max_keys
                && let Some(fullest) = buckets
                    .iter()
                    .max_by(|a, b| a.1.level.total_cmp(&b.1.level))
                    .map(|(key, _)| key.clone())
            {
                buckets.remove(&fullest);
            }
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::with_burst(self.rate, self.burst, now));
        bucket.refill(now);
        bucket.take(1);
    }

    /// Keys in the table (for tests and figures).
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    const SPANS_100: Limits = Limits {
        spans_per_second: Some(100),
        bytes_per_second: None,
    };

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        let shop = tenant("shop");
        // 100 spans/s: a full bucket admits 10 requests of 10 at once, not an 11th.
        for _ in 0..10 {
            assert_eq!(limiter.admit(&shop, SPANS_100, 10, 0, t0), Ok(()));
        }
        let wait = limiter.admit(&shop, SPANS_100, 10, 0, t0).unwrap_err();
        // Empty bucket: one span's worth (10 ms) until it holds something again.
        assert_eq!(wait, Duration::from_millis(10));
        // 100 ms later, 10 spans have been refilled.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.admit(&shop, SPANS_100, 10, 0, t1), Ok(()));
        assert!(limiter.admit(&shop, SPANS_100, 10, 0, t1).is_err());
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_once_and_is_repaid() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        let shop = tenant("shop");
        assert_eq!(limiter.admit(&shop, SPANS_100, 300, 0, t0), Ok(()));
        // 200 spans of debt plus one: 2.01 s.
        let wait = limiter.admit(&shop, SPANS_100, 1, 0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(2010));
        assert!(
            limiter
                .admit(&shop, SPANS_100, 1, 0, t0 + Duration::from_millis(2000))
                .is_err()
        );
        assert_eq!(
            limiter.admit(&shop, SPANS_100, 1, 0, t0 + Duration::from_millis(2011)),
            Ok(())
        );
    }

    #[test]
    fn bytes_and_spans_both_bind_and_tenants_are_separate() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        let both = Limits {
            spans_per_second: Some(1_000),
            bytes_per_second: Some(1_000),
        };
        let (shop, bank) = (tenant("shop"), tenant("bank"));
        assert_eq!(limiter.admit(&shop, both, 1, 1_000, t0), Ok(()));
        // Bytes are spent; spans are not, but the request still waits.
        assert!(limiter.admit(&shop, both, 1, 1, t0).is_err());
        // Another tenant has its own buckets.
        assert_eq!(limiter.admit(&bank, both, 1, 1_000, t0), Ok(()));
        // Unlimited tenants are never refused.
        for _ in 0..1000 {
            assert_eq!(
                limiter.admit(&shop, Limits::default(), 1_000_000, 1 << 30, t0),
                Ok(())
            );
        }
    }

    #[test]
    fn keyed_buckets_admit_a_burst_then_the_rate_and_keep_the_table_bounded() {
        let t0 = Instant::now();
        let buckets = KeyedBuckets::new(1.0, 10, 3);
        for _ in 0..10 {
            assert_eq!(buckets.wait(&"a", t0), Duration::ZERO);
            buckets.take(&"a", t0);
        }
        // Ten spent: one more second for the next.
        assert_eq!(buckets.wait(&"a", t0), Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(buckets.wait(&"a", t1), Duration::ZERO);
        buckets.take(&"a", t1);
        assert!(!buckets.wait(&"a", t1).is_zero());
        // Another key has a bucket of its own.
        assert_eq!(buckets.wait(&"b", t1), Duration::ZERO);
        buckets.take(&"b", t1);
        buckets.take(&"c", t1);
        // A fourth key pushes out the fullest (b or c, one event spent), never "a".
        buckets.take(&"d", t1);
        assert_eq!(buckets.len(), 3);
        assert!(!buckets.wait(&"a", t1).is_zero());
        // Long after, every bucket is full again and makes room for new keys at once.
        let later = t1 + Duration::from_secs(60);
        for key in ["e", "f", "g"] {
            buckets.take(&key, later);
        }
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets.wait(&"a", later), Duration::ZERO);
    }
}
