//! Webhooks through the real binary: the API, a delivery that survives SIGKILL and arrives
//! after the restart with its webhook-id and a signature Python's `hmac` verifies, and the
//! SSRF rule with and without `--allow-private-webhooks`.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::any;
use common::Server;
use serde_json::{Value, json};

/// What the receiver got: the headers that matter, and the raw body.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// An HTTP receiver on `addr` in its own runtime, answering 200 to everything.
struct Receiver {
    inbox: Inbox,
    _runtime: tokio::runtime::Runtime,
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> &'static str {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    inbox.lock().unwrap().push(Received {
        id: get("webhook-id"),
        timestamp: get("webhook-timestamp"),
        signature: get("webhook-signature"),
        body: body.to_vec(),
    });
    "ok"
}

impl Receiver {
    fn start(addr: SocketAddr) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let inbox = Inbox::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let app = Router::new()
            .fallback(any(receive))
            .with_state(inbox.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            inbox,
            _runtime: runtime,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().clone()
    }
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn api(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("http://{}{path}", server.api);
    let request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
        other => panic!("{other}"),
    };
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().expect("the API answers");
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
    };
    (status, value)
}

/// Polls `check` every 50 ms until it returns something (30 s at most).
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn latest_delivery(server: &Server, webhook: i64) -> Value {
    let (status, body) = api(
        server,
        "GET",
        &format!("/api/webhooks/{webhook}/deliveries"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["deliveries"][0].clone()
}

/// The Standard Webhooks signature computed by Python's `hmac`, not by flowscope's code.
fn python_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let script = "import base64, hashlib, hmac, sys\n\
                  key = base64.b64decode(sys.argv[1].removeprefix('whsec_'))\n\
                  signed = sys.argv[2].encode() + b'.' + sys.argv[3].encode() + b'.' + sys.stdin.buffer.read()\n\
                  print('v1,' + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode())";
    let mut child = Command::new("python3")
        .args(["-c", script, secret, id, timestamp])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

const FAST_RETRIES: [&str; 3] = ["--allow-private-webhooks", "--webhook-retry-base", "200ms"];

#[test]
fn a_pending_delivery_survives_sigkill_and_arrives_signed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_addr = free_addr();
    let server = Server::start(dir.path(), &FAST_RETRIES);
    let (status, created) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "name": "ops", "url": format!("http://{receiver_addr}/hook") })),
    );
    assert_eq!(status, 201, "{created}");
    let webhook = created["id"].as_i64().unwrap();
    let secret = created["secret"]
        .as_str()
        .expect("a generated secret, shown once")
        .to_string();
    let (status, queued) = api(
        &server,
        "POST",
        &format!("/api/webhooks/{webhook}/test"),
        None,
    );
    assert_eq!(status, 202, "{queued}");
    let msg_id = queued["msg_id"].as_str().unwrap().to_string();

    // The receiver is down: the first attempt fails and the notification waits for a retry.
    let pending = wait_for("a failed first attempt", || {
        let delivery = latest_delivery(&server, webhook);
        (delivery["attempts"].as_i64() >= Some(1)).then_some(delivery)
    });
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["msg_id"], msg_id.as_str());
    server.kill();

    let receiver = Receiver::start(receiver_addr);
    let server = Server::start(dir.path(), &FAST_RETRIES);
    let delivered = wait_for("the delivery after the restart", || {
        let delivery = latest_delivery(&server, webhook);
        (delivery["state"] == "delivered").then_some(delivery)
    });
    assert_eq!(delivered["last_status"], 200, "{delivered}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "once per webhook-id");
    let request = &received[0];
    assert_eq!(request.id, msg_id);
    assert_eq!(
        request.signature,
        python_signature(&secret, &request.id, &request.timestamp, &request.body)
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "FlowscopeTest");
    // A tampered body does not verify.
    assert_ne!(
        request.signature,
        python_signature(&secret, &request.id, &request.timestamp, b"{}")
    );
    server.stop();
}

#[test]
fn private_targets_are_refused_without_the_flag_and_delivered_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for url in [
        "http://127.1:9/",
        "http://2130706433:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://[::ffff:0:127.0.0.1]:9/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/?token=s3cret",
    ] {
        let (status, body) = api(
            &server,
            "POST",
            "/api/webhooks",
            Some(json!({ "name": "private", "url": url })),
        );
        assert_eq!(status, 400, "{url}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("--allow-private-webhooks"), "{error}");
        assert!(!error.contains("s3cret"), "the query is redacted: {error}");
    }

    // A name that resolves to loopback passes creation; the connect is refused.
    let receiver_addr = free_addr();
    let receiver = Receiver::start(receiver_addr);
    let url = format!("http://localhost:{}/", receiver_addr.port());
    let (status, created) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "name": "local", "url": url })),
    );
    assert_eq!(status, 201, "{created}");
    let webhook = created["id"].as_i64().unwrap();
    api(
        &server,
        "POST",
        &format!("/api/webhooks/{webhook}/test"),
        None,
    );
    let failed = wait_for("the refused delivery", || {
        let delivery = latest_delivery(&server, webhook);
        (delivery["state"] == "failed").then_some(delivery)
    });
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("--allow-private-webhooks"), "{error}");
    assert_eq!(failed["attempt_list"].as_array().unwrap().len(), 1);
    assert!(receiver.received().is_empty(), "nothing connected");
    server.stop();

    let server = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let (status, _) = api(
        &server,
        "POST",
        &format!("/api/webhooks/{webhook}/test"),
        None,
    );
    assert_eq!(status, 202);
    wait_for("the delivery with the flag", || {
        let delivery = latest_delivery(&server, webhook);
        (delivery["state"] == "delivered").then_some(())
    });
    assert_eq!(receiver.received().len(), 1);
    let (status, _) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "name": "literal", "url": "http://127.1:9/" })),
    );
    assert_eq!(status, 201);
    server.stop();
}

#[test]
fn the_webhooks_api_creates_lists_changes_and_deletes_without_showing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, created) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "name": "ops", "url": "https://alerts.example.com/hook", "secret": secret })),
    );
    assert_eq!(status, 201, "{created}");
    assert!(
        created.get("secret").is_none(),
        "a given secret is not echoed"
    );
    let id = created["id"].as_i64().unwrap();

    let (status, conflict) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "name": "ops", "url": "https://other.example.com/" })),
    );
    assert_eq!(status, 409, "{conflict}");
    let (status, _) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "name": "x", "url": "https://x.example/", "secret": "short" })),
    );
    assert_eq!(status, 400);
    let (status, _) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(json!({ "url": "https://x.example/" })),
    );
    assert_eq!(status, 400, "a name is required");

    let (status, list) = api(&server, "GET", "/api/webhooks", None);
    assert_eq!(status, 200);
    let hooks = list["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["has_secret"], true);
    assert!(!list.to_string().contains("whsec_"), "{list}");

    let (status, changed) = api(
        &server,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(json!({ "name": "ops-2", "url": "https://alerts.example.com/v2" })),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "ops-2");
    assert_eq!(changed["has_secret"], true, "PUT without a secret keeps it");
    let (status, one) = api(&server, "GET", &format!("/api/webhooks/{id}"), None);
    assert_eq!(
        (status, one["url"].as_str()),
        (200, Some("https://alerts.example.com/v2"))
    );
    assert!(!one.to_string().contains("whsec_"));

    let (status, deliveries) = api(
        &server,
        "GET",
        &format!("/api/webhooks/{id}/deliveries"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(deliveries["deliveries"].as_array().unwrap().len(), 0);

    let (status, _) = api(&server, "DELETE", &format!("/api/webhooks/{id}"), None);
    assert_eq!(status, 204);
    for (method, path) in [
        ("GET", format!("/api/webhooks/{id}")),
        ("DELETE", format!("/api/webhooks/{id}")),
        ("POST", format!("/api/webhooks/{id}/test")),
        ("GET", format!("/api/webhooks/{id}/deliveries")),
    ] {
        let (status, body) = api(&server, method, &path, None);
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = api(
        &server,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(json!({ "name": "gone", "url": "https://x.example/" })),
    );
    assert_eq!(status, 404);
    server.stop();
}
