//! Per-tenant ingest rate limits: a token bucket on spans and one on (decompressed) bytes.
//!
//! A bucket holds up to one second of its rate. A request is admitted while the bucket is
//! not empty and then takes all it needs, even into debt; the debt is repaid before the
//! next request is admitted. So a request larger than a second's allowance still passes
//! (rarely), and over any stretch of time the rate holds.

use std::collections::HashMap;
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
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` per second.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            level: rate as f64,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.rate);
        self.updated = now;
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
}
