//! Router-level tests of what guards the API as a whole: login throttling, event streams
//! ending with their session, and `/healthz` failing when a background stage stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use flowscope_auth::{Access, Limits, Role, TenantId, TokenEntry};
use flowscope_base::liveness::{Liveness, Stage};
use flowscope_graph::{GraphConfig, LiveGraph};
use flowscope_query::graph::GraphView;
use flowscope_query::{SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::auth::{LoginLimits, LoginThrottle, Sessions};
use crate::{ApiState, TenantView};

const ACME_READ: &str = "acme-read-token-0123456789";
const BANK_ADMIN: &str = "bank-admin-token-0123456789";

fn tenant_view(dir: &std::path::Path) -> TenantView {
    let mut config = StoreConfig::new(dir);
    config.wal_sync = WalSync::Never;
    let store = SpanStore::open(config).unwrap();
    let engine = Arc::new(SqlEngine::new(store.clone(), SqlConfig::default()).unwrap());
    let live = Arc::new(RwLock::new(LiveGraph::new(GraphConfig::default())));
    let graph = GraphView::with_history(live, store, None, 0, Duration::from_secs(5));
    flowscope_query::graph::register(&engine, &graph).unwrap();
    TenantView { engine, graph }
}

/// A ready server with two tenants, acme (a read token) and bank (an admin token).
async fn two_tenants(dir: &std::path::Path, limits: LoginLimits) -> ApiState {
    let (acme, bank) = (
        TenantId::parse("acme").unwrap(),
        TenantId::parse("bank").unwrap(),
    );
    let access = Access::new(
        vec![
            TokenEntry::new(ACME_READ, acme.clone(), Role::Read).unwrap(),
            TokenEntry::new(BANK_ADMIN, bank.clone(), Role::Admin).unwrap(),
        ],
        BTreeMap::new(),
        Limits::default(),
    )
    .unwrap();
    let tenants = [
        (acme, tenant_view(&dir.join("acme"))),
        (bank, tenant_view(&dir.join("bank"))),
    ];
    ApiState {
        tenants: Arc::new(tenants.into()),
        access: Arc::new(access),
        sessions: Sessions::default(),
        config: crate::ApiConfig::default(),
        ready: Arc::new(true.into()),
        info: crate::ServerInfo::default(),
        metadata: flowscope_alert::Metadata::open_in_memory().await.unwrap(),
        memory: Arc::new(flowscope_base::memory::MemoryBudget::unlimited()),
        liveness: Liveness::new(),
        logins: Arc::new(LoginThrottle::new(limits)),
        telemetry: Default::default(),
        connections: Default::default(),
    }
}

fn from(client: &str, mut request: Request<Body>) -> Request<Body> {
    let addr: SocketAddr = client.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

fn login_request(client: &str, token: &str) -> Request<Body> {
    from(
        client,
        Request::post("/api/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({ "token": token }).to_string()))
            .unwrap(),
    )
}

async fn send(state: &ApiState, request: Request<Body>) -> Response<Body> {
    crate::router(state.clone()).oneshot(request).await.unwrap()
}

async fn text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn session_cookie(response: &Response<Body>) -> String {
    let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// Issue 19 (7): 100 wrong tokens were answered 401 in 0.24 s, with no delay and no 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_logins_from_one_address_get_429_with_retry_after_and_a_right_token_works_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LoginLimits {
        failures_burst: 10,
        failures_per_second: 5.0,
        ..LoginLimits::default()
    };
    let state = two_tenants(dir.path(), limits).await;
    let attacker = "192.0.2.7:40000";
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..100 {
        let response = send(&state, login_request(attacker, &format!("guess-{i}"))).await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && retry_after.is_none() {
            retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            let body: Value = serde_json::from_str(&text(response).await).unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(error.contains("try again in 1 s"), "{error}");
        }
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("no wrong login was throttled");
    assert_eq!(first_429, 10, "{statuses:?}");
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED)
    );
    assert!(
        statuses[10..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS)
    );
    let retry_after: u64 = retry_after
        .expect("a 429 without Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);

    // While throttled, even the right token is not looked at from that address; another
    // address is not affected.
    let response = send(&state, login_request(attacker, ACME_READ)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = send(&state, login_request("198.51.100.1:1", BANK_ADMIN)).await;
    assert_eq!(response.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = send(&state, login_request(attacker, ACME_READ)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = session_cookie(&response);

    let metrics = send(
        &state,
        Request::get("/metrics")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let metrics = text(metrics).await;
    assert!(
        metrics.contains("\nflowscope_api_failed_logins_total 10\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nflowscope_api_throttled_logins_total 91\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bearer_tokens_from_one_address_are_throttled_and_a_good_token_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let state = two_tenants(dir.path(), LoginLimits::default()).await;
    let status_with = |client: &str, token: &str| {
        from(
            client,
            Request::get("/api/whoami")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
    };
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = send(&state, status_with("192.0.2.9:1", &format!("guess-{i}"))).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10..], [429; 2]);
    let response = send(&state, status_with("192.0.2.9:2", "guess-12")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    // A good token from the same address (a scraper behind the guesser's proxy) still
    // passes: only failures are throttled.
    let response = send(&state, status_with("192.0.2.9:2", ACME_READ)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&state, status_with("[2001:db8::1]:3", ACME_READ)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_logs_in_too_often_gets_429_and_the_other_tenant_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LoginLimits {
        logins_burst: 3,
        logins_per_second: 0.1,
        ..LoginLimits::default()
    };
    let state = two_tenants(dir.path(), limits).await;
    for _ in 0..3 {
        let response = send(&state, login_request("192.0.2.1:1", ACME_READ)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = send(&state, login_request("192.0.2.2:1", ACME_READ)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "10");
    let response = send(&state, login_request("192.0.2.2:1", BANK_ADMIN)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Issue 19 (6): deltas kept arriving on a stream whose session had logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_stream_opened_with_a_cookie_ends_when_its_session_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let state = two_tenants(dir.path(), LoginLimits::default()).await;
    let response = send(&state, login_request("192.0.2.1:1", ACME_READ)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = session_cookie(&response);
    let response = send(
        &state,
        Request::get("/api/graph/stream")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: snapshot"));

    let logout = send(
        &state,
        Request::post("/api/logout")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let logged_out = Instant::now();
    // The stream ends (no more frames) within about a period; keep-alives come every 15 s,
    // so nothing else arrives before.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its session");
    assert!(logged_out.elapsed() < Duration::from_millis(2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_naming_a_background_stage_that_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let state = two_tenants(dir.path(), LoginLimits::default()).await;
    let health = || Request::get("/healthz").body(Body::empty()).unwrap();
    let _watchdog = state.liveness.start(Stage::RssWatchdog);
    let graph = state.liveness.start(Stage::Graph);
    let response = send(&state, health()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "ok\n");

    // A graph stage thread that panics drops its guard while unwinding.
    let _ = std::thread::spawn(move || {
        let _graph = graph;
        panic!("a bug in the graph stage");
    })
    .join();
    let response = send(&state, health()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(body["stopped"], json!(["graph"]));
    assert!(body["error"].as_str().unwrap().contains("graph"));
}
