//! A real webhook receiver on 127.0.0.1 for the alerting tests: it answers every POST to
//! `/hook` or `/hook/{name}` with one status and keeps each request as it came.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
