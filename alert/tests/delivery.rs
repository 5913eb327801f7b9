//! The delivery worker against a real HTTP receiver on a local socket: delivered once,
//! retried with the same webhook-id, not retried on 4xx, redirects not followed, a receiver
//! that comes up late still gets the notification, and the SSRF guard at connect time.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use flowscope_alert::deliver::{self, DeliveryConfig, RetryPolicy};
use flowscope_alert::webhooks::{self, WebhookInput};
use flowscope_alert::{Metadata, sign};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A status and the headers to answer with.
type Answer = (u16, Vec<(&'static str, &'static str)>);

/// A receiver that answers its n-th request with `script[n]` (then 200) and keeps them all.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Vec<Answer>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = {
        let mut received = receiver.received.lock().unwrap();
        received.push(Received {
            path: uri.path().to_string(),
            headers,
            body,
        });
        received.len() - 1
    };
    let (status, headers) = receiver.script.get(n).cloned().unwrap_or((200, Vec::new()));
    let mut response = (StatusCode::from_u16(status).unwrap(), "receiver says so").into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

impl Receiver {
    fn scripted(script: Vec<Answer>) -> Self {
        Self {
            received: Arc::default(),
            script: Arc::new(script),
        }
    }

    async fn serve(&self, listener: TcpListener) {
        let app = Router::new()
            .fallback(any(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn local_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn fast_config(allow_private: bool) -> DeliveryConfig {
    DeliveryConfig {
        allow_private,
        retry: RetryPolicy {
            horizon: Duration::from_secs(60),
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
        },
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        max_in_flight: 4,
        ..DeliveryConfig::default()
    }
}

/// A metadata file, a webhook to `url`, a test notification queued, the worker running.
struct Setup {
    metadata: Metadata,
    webhook_id: i64,
    msg_id: String,
    stop: Option<oneshot::Sender<()>>,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn setup(url: &str, config: DeliveryConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let metadata = Metadata::open(&dir.path().join("metadata.sqlite"))
        .await
        .unwrap();
    let hook = webhooks::create(
        metadata.pool(),
        "default",
        WebhookInput {
            name: "receiver".into(),
            url: url.into(),
            secret: Some(SECRET.into()),
        },
        true,
        now_ms(),
    )
    .await
    .unwrap();
    let msg_id = webhooks::enqueue_test(
        metadata.pool(),
        "default",
        hook.id,
        "http://127.0.0.1:8080",
        now_ms(),
    )
    .await
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn({
        let metadata = metadata.clone();
        async move {
            deliver::run(metadata, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        }
    });
    metadata.delivery_waker().wake();
    Setup {
        metadata,
        webhook_id: hook.id,
        msg_id,
        stop: Some(stop),
        worker,
        _dir: dir,
    }
}

impl Setup {
    /// Polls the delivery history until `done` holds (20 s at most).
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&webhooks::Delivery) -> bool,
    ) -> webhooks::Delivery {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = webhooks::deliveries(self.metadata.pool(), "default", self.webhook_id, 10)
                .await
                .unwrap();
            let delivery = list.into_iter().next().unwrap();
            if done(&delivery) {
                return delivery;
            }
            assert!(Instant::now() < deadline, "{what}: {delivery:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.worker)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn a_2xx_answer_is_delivered_once_signed_with_the_message_id() {
    let receiver = Receiver::default();
    let (listener, addr) = local_listener().await;
    receiver.serve(listener).await;
    let setup = setup(&format!("http://{addr}/hook"), fast_config(true)).await;
    let delivery = setup
        .wait_for("delivered", |d| d.state == "delivered")
        .await;
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status, Some(200));
    assert_eq!(delivery.attempt_list.len(), 1);

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/hook");
    assert_eq!(header(request, "webhook-id"), setup.msg_id);
    assert_eq!(header(request, "content-type"), "application/json");
    let timestamp: i64 = header(request, "webhook-timestamp").parse().unwrap();
    assert!((timestamp - now_ms() / 1000).abs() < 60);
    let key = sign::parse_secret(SECRET).unwrap();
    assert_eq!(
        header(request, "webhook-signature"),
        sign::signature(&key, &setup.msg_id, timestamp, &request.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "FlowscopeTest");
    setup.stop().await;
}

#[tokio::test]
async fn a_5xx_then_429_is_retried_with_the_same_webhook_id_until_a_2xx() {
    let receiver = Receiver::scripted(vec![
        (500, vec![]),
        (429, vec![("retry-after", "1")]),
        (200, vec![]),
    ]);
    let (listener, addr) = local_listener().await;
    receiver.serve(listener).await;
    let setup = setup(&format!("http://{addr}/"), fast_config(true)).await;
    let delivery = setup
        .wait_for("delivered", |d| d.state == "delivered")
        .await;
    assert_eq!(delivery.attempts, 3);
    let statuses: Vec<Option<u16>> = delivery.attempt_list.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(429), Some(200)]);
    // The receiver's retry-after of 1 s wins over the 400 ms backoff cap.
    let waited = delivery.attempt_list[2].at - delivery.attempt_list[1].at;
    assert!(waited >= 1_000, "waited {waited} ms after the 429");
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(header(request, "webhook-id"), setup.msg_id);
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_4xx_fails_at_once_and_is_not_retried() {
    let receiver = Receiver::scripted(vec![(400, vec![])]);
    let (listener, addr) = local_listener().await;
    receiver.serve(listener).await;
    let setup = setup(&format!("http://{addr}/"), fast_config(true)).await;
    let delivery = setup.wait_for("failed", |d| d.state == "failed").await;
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status, Some(400));
    let error = delivery.last_error.unwrap();
    assert!(
        error.contains("HTTP 400") && error.contains("receiver says so"),
        "{error}"
    );
    // Longer than the whole backoff cap: a retry would have come by now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1);
    setup.stop().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails() {
    let receiver = Receiver::scripted(vec![(302, vec![("location", "/elsewhere")])]);
    let (listener, addr) = local_listener().await;
    receiver.serve(listener).await;
    let setup = setup(&format!("http://{addr}/hook"), fast_config(true)).await;
    let delivery = setup.wait_for("failed", |d| d.state == "failed").await;
    assert_eq!(delivery.last_status, Some(302));
    assert!(delivery.last_error.unwrap().contains("not followed"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"]);
    setup.stop().await;
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_the_notification_once_after_backoff() {
    // A port nobody listens on: take a free one and let it go.
    let (listener, addr) = local_listener().await;
    drop(listener);
    let setup = setup(&format!("http://{addr}/"), fast_config(true)).await;
    let down = setup
        .wait_for("two refused attempts", |d| d.attempt_list.len() >= 2)
        .await;
    assert_eq!(down.state, "pending");
    assert!(
        down.attempt_list
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some())
    );
    // Backoff: never two attempts less than half the base apart.
    for pair in down.attempt_list.windows(2) {
        assert!(pair[1].at - pair[0].at >= 50, "{:?}", down.attempt_list);
    }

    let receiver = Receiver::default();
    receiver.serve(TcpListener::bind(addr).await.unwrap()).await;
    let delivery = setup
        .wait_for("delivered", |d| d.state == "delivered")
        .await;
    assert!(delivery.attempts >= 3);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "once per webhook-id");
    assert_eq!(header(&received[0], "webhook-id"), setup.msg_id);
    setup.stop().await;
}

#[tokio::test]
async fn without_the_flag_a_name_resolving_to_loopback_is_refused_when_connecting() {
    let receiver = Receiver::default();
    let (listener, addr) = local_listener().await;
    receiver.serve(listener).await;
    let setup = setup(
        &format!("http://localhost:{}/", addr.port()),
        fast_config(false),
    )
    .await;
    let delivery = setup.wait_for("failed", |d| d.state == "failed").await;
    assert_eq!(delivery.attempts, 1);
    let error = delivery.last_error.unwrap();
    assert!(error.contains("--allow-private-webhooks"), "{error}");
    assert!(receiver.received().is_empty(), "nothing connected");
    setup.stop().await;
}

#[tokio::test]
async fn without_the_flag_a_stored_loopback_literal_is_refused_before_connecting() {
    let receiver = Receiver::default();
    let (listener, addr) = local_listener().await;
    receiver.serve(listener).await;
    // Created while the flag was on, delivered after it was turned off.
    let setup = setup(
        &format!("http://0x7f.1:{}/", addr.port()),
        fast_config(false),
    )
    .await;
    let delivery = setup.wait_for("failed", |d| d.state == "failed").await;
    assert!(
        delivery
            .last_error
            .unwrap()
            .contains("--allow-private-webhooks")
    );
    assert!(receiver.received().is_empty());
    setup.stop().await;
}
