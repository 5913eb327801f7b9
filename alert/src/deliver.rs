//! The delivery worker: takes due notifications from the outbox, sends them signed to their
//! webhook, records each attempt and retries with backoff until delivered or out of time.
//!
//! ```text
//!  outbox (pending, due) ──worker (≤ max_in_flight at once)──> POST url
//!     2xx ──> delivered          429, 5xx, connect error, timeout ──> pending at now + backoff
//!     3xx, other 4xx, SSRF refusal, horizon passed ──> failed
//! ```
//!
//! Delivery is at least once: a crash between the receiver's answer and the commit of
//! `delivered` sends the notification again, with the same `webhook-id`.

use std::collections::{HashMap, HashSet};
use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use sqlx::AnyPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::outbox::{self, AttemptRecord, DueMessage, NextState};
use crate::redact::{redact, redact_url};
use crate::ssrf::{ForbiddenTarget, GuardedResolver};
use crate::{AlertError, Metadata, now_ms, sign, ssrf};
use flowscope_base::liveness::{Liveness, Stage};
use flowscope_base::telemetry::Telemetry;

/// How the worker delivers and when it gives up.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Connect to loopback, private and link-local addresses (`--allow-private-webhooks`).
    pub allow_private: bool,
    pub retry: RetryPolicy,
    /// The whole request, connect to last byte.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests under way at once.
    pub max_in_flight: usize,
    /// Where the worker registers and counts the errors it survives (reading the outbox, a
    /// delivery task that panicked).
    pub liveness: Arc<Liveness>,
    /// Where attempts are counted by tenant and outcome, with their duration (`/metrics`).
    pub telemetry: Arc<Telemetry>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 4,
            liveness: Liveness::new(),
            telemetry: Arc::default(),
        }
    }
}

/// Exponential backoff with jitter, bounded by a horizon counted from the notification's
/// creation (`--webhook-retry-horizon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub horizon: Duration,
    /// The first retry waits between half of this and all of it; each further one doubles.
    pub base: Duration,
    /// No wait grows past this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(24 * 3600),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
        }
    }
}

/// A cheap handle that wakes the delivery worker; every [`Metadata`] carries one.
#[derive(Debug, Clone, Default)]
pub struct DeliveryWaker(Arc<Notify>);

impl DeliveryWaker {
    pub fn wake(&self) {
        // notify_one keeps a permit when the worker is busy, so no wake-up is lost.
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// What an attempt's result asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another try, not before `after` if the receiver said so.
    Retry {
        after: Option<Duration>,
    },
    Fail,
}

/// 2xx is delivered; 429 and 5xx are worth retrying; anything else (3xx, which is never
/// followed, and other 4xx) will not get better by retrying.
pub fn verdict_for_status(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 500..=599 => Verdict::Retry { after: retry_after },
        _ => Verdict::Fail,
    }
}

/// The wait before retry number `attempts` (1 for the first retry): between half and all of
/// `base · 2^(attempts-1)`, capped, picked by `unit` in [0, 1). Equal jitter rather than full
/// jitter, so that no retry follows its failure at once.
pub fn backoff(attempts: u32, policy: &RetryPolicy, unit: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let step = policy
        .base
        .saturating_mul(1u32 << doublings)
        .min(policy.cap);
    let half = step / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// Where a notification goes after its attempt number `attempts` ended with `verdict` at
/// `now_ms`: retries wait for the backoff or the receiver's `retry-after`, whichever is
/// longer, and none is scheduled past the horizon; the last one is made at its end.
pub fn next_state(
    verdict: Verdict,
    attempts: u32,
    created_at_ms: i64,
    now_ms: i64,
    policy: &RetryPolicy,
    unit: f64,
) -> NextState {
    match verdict {
        Verdict::Delivered => NextState::Delivered,
        Verdict::Fail => NextState::Failed,
        Verdict::Retry { after } => {
            let deadline = created_at_ms.saturating_add(millis(policy.horizon));
            if now_ms >= deadline {
                return NextState::Failed;
            }
            let wait = backoff(attempts, policy, unit).max(after.unwrap_or_default());
            NextState::RetryAt(now_ms.saturating_add(millis(wait)).min(deadline))
        }
    }
}

/// A `retry-after` value: seconds, or an HTTP date counted from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The worker never sleeps longer than this, so a row written without a wake-up (by another
/// process, or before a crash) is still picked up promptly.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Of a failed response's body, this much goes into the error message.
const MAX_ERROR_BODY: usize = 512;

/// The HTTP client of the worker: no redirects, no proxy, timeouts, and, unless private
/// targets are allowed, the [`GuardedResolver`].
pub fn client(config: &DeliveryConfig) -> Result<reqwest::Client, AlertError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would connect on our behalf to whatever it resolves: the SSRF guard must
        // see the address connected to, so proxies from the environment are not used.
        .no_proxy()
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("flowscope-webhooks/", env!("CARGO_PKG_VERSION")));
    if !config.allow_private {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    builder
        .build()
        .map_err(|e| AlertError::Client(e.to_string()))
}

/// Runs the delivery worker until `stop` completes, then lets requests under way finish
/// (each is bounded by the request timeout).
pub async fn run(
    metadata: Metadata,
    config: DeliveryConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), AlertError> {
    // Marks the worker stopped if it ends (or panics) before shutdown.
    let _alive = config.liveness.start(Stage::WebhookDelivery);
    let client = client(&config)?;
    let pool = metadata.pool().clone();
    let waker = metadata.delivery_waker();
    let config = Arc::new(config);
    let mut tasks: JoinSet<i64> = JoinSet::new();
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut task_rows: HashMap<tokio::task::Id, i64> = HashMap::new();
    tokio::pin!(stop);
    loop {
        let now = now_ms();
        let room = config.max_in_flight.saturating_sub(tasks.len());
        let mut wait = MAX_IDLE;
        if room > 0 {
            let claim_until = now.saturating_add(millis(claim_for(&config)));
            match outbox::claim(&pool, now, claim_until, room).await {
                Ok(rows) => {
                    let fresh: Vec<DueMessage> = rows
                        .into_iter()
                        .filter(|r| !in_flight.contains(&r.id))
                        .collect();
                    for row in fresh {
                        in_flight.insert(row.id);
                        let id = row.id;
                        let handle =
                            tasks.spawn(deliver(client.clone(), pool.clone(), config.clone(), row));
                        task_rows.insert(handle.id(), id);
                    }
                }
                Err(error) => {
                    config.liveness.error(Stage::WebhookDelivery);
                    tracing::warn!(%error, "cannot read the outbox; retrying")
                }
            }
            match outbox::next_due_after(&pool, now).await {
                Ok(Some(next)) => {
                    let until = Duration::from_millis(u64::try_from(next - now).unwrap_or(0));
                    wait = wait.min(until);
                }
                Ok(None) => {}
                Err(error) => {
                    config.liveness.error(Stage::WebhookDelivery);
                    tracing::warn!(%error, "cannot read the outbox; retrying")
                }
            }
        }
        tokio::select! {
            () = &mut stop => break,
            () = waker.woken() => {}
            () = tokio::time::sleep(wait) => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let task = match &done {
                    Ok((task, _)) => *task,
                    Err(error) => error.id(),
                };
                if let Some(row) = task_rows.remove(&task) {
                    in_flight.remove(&row);
                }
                if let Err(error) = done {
                    config.liveness.error(Stage::WebhookDelivery);
                    tracing::error!(%error, "a webhook delivery task failed");
                }
            }
        }
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.request_timeout + Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        // Rows left pending are sent again after the restart, with the same webhook-id.
        tasks.shutdown().await;
        let unfinished: Vec<i64> = in_flight.iter().copied().collect();
        if let Err(error) = outbox::release(&pool, &unfinished).await {
            tracing::warn!(%error, "cannot release the notifications under way; they are sent again when their claim ends");
        }
    }
    Ok(())
}

/// How long a claimed notification is this worker's: its attempt (connect and request
/// timeouts) with room to record it.
fn claim_for(config: &DeliveryConfig) -> Duration {
    config.connect_timeout + config.request_timeout + Duration::from_secs(30)
}

/// One attempt on one notification, recorded; returns the outbox row id.
async fn deliver(
    client: reqwest::Client,
    pool: AnyPool,
    config: Arc<DeliveryConfig>,
    row: DueMessage,
) -> i64 {
    let at = now_ms();
    let started = Instant::now();
    let (status, verdict, error) = attempt(&client, &config, &row, at).await;
    let outcome = match verdict {
        Verdict::Delivered => "delivered",
        Verdict::Retry { .. } => "retry",
        Verdict::Fail => "failed",
    };
    let telemetry = &config.telemetry;
    telemetry
        .webhook_attempts
        .add((row.tenant.clone(), outcome), 1);
    telemetry
        .webhook_duration
        .observe(row.tenant.clone(), started.elapsed());
    let attempts = row.attempts.saturating_add(1);
    let next = next_state(
        verdict,
        attempts,
        row.created_at,
        now_ms(),
        &config.retry,
        rand::rng().random::<f64>(),
    );
    let record = AttemptRecord {
        at,
        status,
        error: error.clone(),
        duration_ms: millis(started.elapsed()),
    };
    let last_error = match (next, &error) {
        (NextState::Failed, Some(error)) if matches!(verdict, Verdict::Retry { .. }) => {
            Some(format!(
                "{error}; gave up after {attempts} attempts: the retry horizon of {}s passed",
                config.retry.horizon.as_secs()
            ))
        }
        _ => error,
    };
    match next {
        NextState::Delivered => {
            tracing::info!(msg_id = %row.msg_id, attempts, "webhook delivered");
        }
        NextState::RetryAt(when) => tracing::info!(
            msg_id = %row.msg_id, attempts, retry_in_ms = when - at,
            error = last_error.as_deref().unwrap_or(""), "webhook delivery failed; will retry"
        ),
        NextState::Failed => tracing::warn!(
            msg_id = %row.msg_id, attempts,
            error = last_error.as_deref().unwrap_or(""), "webhook delivery failed for good"
        ),
    }
    if let Err(error) =
        outbox::record_attempt(&pool, row.id, &record, next, last_error.as_deref()).await
    {
        // The row stays pending and due: it is sent again, with the same webhook-id.
        tracing::error!(%error, msg_id = %row.msg_id, "cannot record a webhook delivery attempt");
    }
    row.id
}

/// Sends `row` once: the status if an answer came, the verdict, and what went wrong.
async fn attempt(
    client: &reqwest::Client,
    config: &DeliveryConfig,
    row: &DueMessage,
    at_ms: i64,
) -> (Option<u16>, Verdict, Option<String>) {
    // IP-literal hosts do not pass through the resolver: check them here, on every attempt,
    // so a webhook created before the flag was removed is refused too.
    let url = match ssrf::check_url(&row.url, config.allow_private) {
        Ok(url) => url,
        Err(error) => return (None, Verdict::Fail, Some(error.to_string())),
    };
    let timestamp_s = at_ms.div_euclid(1000);
    let mut request = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", &row.msg_id)
        .header("webhook-timestamp", timestamp_s.to_string());
    if let Some(secret) = &row.secret {
        match sign::parse_secret(secret) {
            Ok(key) => {
                request = request.header(
                    "webhook-signature",
                    sign::signature(&key, &row.msg_id, timestamp_s, &row.body),
                );
            }
            Err(error) => return (None, Verdict::Fail, Some(error.to_string())),
        }
    }
    let response = match request.body(row.body.clone()).send().await {
        Ok(response) => response,
        Err(error) => return request_failed(error, config),
    };
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let verdict = verdict_for_status(status, retry_after);
    if verdict == Verdict::Delivered {
        return (Some(status), verdict, None);
    }
    // The receiver's redirect target may carry a credential of its own (a signed URL).
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|location| match response.url().join(location) {
            Ok(absolute) => redact(absolute),
            Err(_) => redact_url(location),
        });
    let body = capped_body(response).await;
    let mut message = format!("HTTP {status}");
    if let Some(location) = location {
        message.push_str(&format!(" (redirect to {location} not followed)"));
    }
    if !body.is_empty() {
        message.push_str(": ");
        message.push_str(&body);
    }
    (Some(status), verdict, Some(message))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// A connection or timeout error is worth retrying; an SSRF refusal from the resolver is not.
/// The message shows the URL redacted: reqwest's own writes it whole, query and all.
fn request_failed(
    error: reqwest::Error,
    config: &DeliveryConfig,
) -> (Option<u16>, Verdict, Option<String>) {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(forbidden) = cause.downcast_ref::<ForbiddenTarget>() {
            return (None, Verdict::Fail, Some(forbidden.to_string()));
        }
        source = cause.source();
    }
    let message = if error.is_timeout() {
        format!("no answer within {}s", config.request_timeout.as_secs_f64())
    } else {
        error_chain(error)
    };
    (None, Verdict::Retry { after: None }, Some(message))
}

/// The error and its causes, its URL redacted.
fn error_chain(error: reqwest::Error) -> String {
    let url = error.url().cloned();
    let error = error.without_url();
    let mut message = error.to_string();
    if let Some(url) = url {
        message.push_str(&format!(" for url ({})", redact(url)));
    }
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// At most [`MAX_ERROR_BODY`] bytes of the body, as text: enough to say why, never a flood.
async fn capped_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&body).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        horizon: Duration::from_secs(3600),
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };

    #[test]
    fn backoff_doubles_between_half_and_all_of_each_step_up_to_the_cap() {
        let check = |attempts, unit, expected_ms| {
            assert_eq!(
                backoff(attempts, &POLICY, unit),
                Duration::from_millis(expected_ms),
                "attempt {attempts} at {unit}"
            );
        };
        check(1, 0.0, 500);
        check(1, 1.0, 1_000);
        check(2, 0.0, 1_000);
        check(3, 0.5, 3_000);
        check(7, 1.0, 60_000);
        check(7, 0.0, 30_000);
        check(200, 1.0, 60_000);
    }

    #[test]
    fn statuses_sort_into_delivered_retry_and_fail() {
        let after = Some(Duration::from_secs(7));
        for (status, expected) in [
            (200, Verdict::Delivered),
            (204, Verdict::Delivered),
            (301, Verdict::Fail),
            (302, Verdict::Fail),
            (400, Verdict::Fail),
            (401, Verdict::Fail),
            (404, Verdict::Fail),
            (410, Verdict::Fail),
            (429, Verdict::Retry { after }),
            (500, Verdict::Retry { after }),
            (503, Verdict::Retry { after }),
        ] {
            assert_eq!(verdict_for_status(status, after), expected, "{status}");
        }
    }

    #[test]
    fn retries_wait_for_retry_after_and_stop_at_the_horizon() {
        let retry = Verdict::Retry { after: None };
        assert_eq!(
            next_state(retry, 1, 0, 10_000, &POLICY, 1.0),
            NextState::RetryAt(11_000)
        );
        let after = Verdict::Retry {
            after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            next_state(after, 1, 0, 10_000, &POLICY, 1.0),
            NextState::RetryAt(40_000)
        );
        // The last retry is made when the horizon ends, and nothing after it.
        assert_eq!(
            next_state(retry, 9, 0, 3_599_000, &POLICY, 1.0),
            NextState::RetryAt(3_600_000)
        );
        assert_eq!(
            next_state(retry, 10, 0, 3_600_000, &POLICY, 1.0),
            NextState::Failed
        );
        assert_eq!(
            next_state(Verdict::Fail, 1, 0, 10, &POLICY, 0.5),
            NextState::Failed
        );
        assert_eq!(
            next_state(Verdict::Delivered, 3, 0, 10, &POLICY, 0.5),
            NextState::Delivered
        );
    }

    #[tokio::test]
    async fn a_failed_delivery_records_and_logs_the_url_without_its_credentials() {
        // A port nobody listens on: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = DeliveryConfig {
            allow_private: true,
            ..DeliveryConfig::default()
        };
        let row = DueMessage {
            id: 1,
            msg_id: "msg_1".into(),
            body: b"{}".to_vec(),
            created_at: 0,
            attempts: 0,
            url: format!("http://alice:pa55word@127.0.0.1:{port}/hook?token=s3cret#frag"),
            secret: None,
            tenant: "default".into(),
        };
        let client = client(&config).expect("a client");
        let (status, verdict, error) = attempt(&client, &config, &row, 0).await;
        assert_eq!((status, verdict), (None, Verdict::Retry { after: None }));
        // This string is what the attempt row, the outbox's last error and the log line get.
        let error = error.expect("an error message");
        // reqwest moves userinfo into an Authorization header, so the URL it reports has none.
        assert!(
            error.contains(&format!("127.0.0.1:{port}/hook?<redacted>#<redacted>")),
            "{error}"
        );
        for secret in ["s3cret", "pa55word", "alice", "frag"] {
            assert!(!error.contains(secret), "{secret} in {error}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
