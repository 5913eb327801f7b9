//! What the alerting tests share: a real webhook receiver on 127.0.0.1 (it answers every
//! POST to `/hook` or `/hook/{name}` with one status and keeps each request as it came), the
//! JSON API called as a user would, a bounded wait, and spans that fail or succeed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::Server;
use super::otlp::span;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Inbox = Arc<Mutex<Vec<Received>>>;

pub struct Receiver {
    pub addr: std::net::SocketAddr,
    inbox: Inbox,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    /// A receiver answering 200.
    pub fn start() -> Self {
        Self::answering(StatusCode::OK)
    }

    /// A receiver answering `status` to every POST.
    pub fn answering(status: StatusCode) -> Self {
        async fn receive(
            State((inbox, status)): State<(Inbox, StatusCode)>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, &'static str) {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            inbox.lock().unwrap().push(Received {
                path: uri.path().to_string(),
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                body: body.to_vec(),
            });
            (status, "received")
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let inbox: Inbox = Default::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .route("/hook/{name}", axum::routing::post(receive))
            .with_state((inbox.clone(), status));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            inbox,
            _runtime: runtime,
        }
    }

    /// The URL of webhook `name` on this receiver.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/hook/{name}", self.addr)
    }

    /// Every request so far, in arrival order (retries included).
    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().clone()
    }

    /// Every body so far as JSON, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.received().iter().map(Received::json).collect()
    }

    /// The bodies webhook `name` received, once per `webhook-id` (a retry repeats it), in
    /// the order they were created (message ids sort by creation).
    pub fn messages(&self, name: &str) -> Vec<Value> {
        let path = format!("/hook/{name}");
        let mut seen = BTreeMap::new();
        for request in self.received() {
            if request.path == path {
                seen.insert(request.id.clone(), request.json());
            }
        }
        seen.into_values().collect()
    }
}

/// Calls the JSON API: `(status, body)`, the body `Null` when it is not JSON.
pub fn api(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut request = client.request(method, format!("http://{}{path}", server.api));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().expect("the API answers");
    let status = response.status().as_u16();
    let text = response.text().expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls until `ready` returns something, for at most 60 s; the server's log on failure.
pub fn wait_for<T>(what: &str, server: &Server, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            server.log.lock().expect("log").join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `count` spans named `operation` with status code `code` (1 OK, 2 ERROR).
pub fn spans_named(operation: &str, first: u64, count: u64, code: i32) -> Vec<Span> {
    (first..first + count)
        .map(|n| {
            let mut span = span(n, n);
            span.name = operation.into();
            span.status = Some(Status {
                code,
                message: String::new(),
            });
            span
        })
        .collect()
}
