//! Two tenants on one server, driven like their users would: each sends spans with its own
//! token, then every query shape we could think of, the graph, the alert rules and the
//! webhooks are asked for with the other tenant's data in the same process. Nothing of
//! `globex` may appear in anything `acme` gets back, and the other way round; wrong, missing
//! and misused tokens are refused on every door (OTLP/gRPC, OTLP/HTTP, API, dashboard login).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::otlp::numbered_request;
use common::tokens::{ACME_ADMIN, ACME_INGEST, ACME_READ, GLOBEX_INGEST, GLOBEX_READ, tokens_toml};
use common::topology::{CLIENT, SERVER, Topology};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

/// Every role for both tenants; globex's admin token is stored as its SHA-256 only.
fn tokens_file_text() -> String {
    let mut toml = tokens_toml(&[
        (ACME_INGEST, "acme", "ingest"),
        (ACME_READ, "acme", "read"),
        (ACME_ADMIN, "acme", "admin"),
        (GLOBEX_INGEST, "globex", "ingest"),
        (GLOBEX_READ, "globex", "read"),
    ]);
    toml.push_str(&format!(
        "[[token]]\nsha256 = \"{}\"\ntenant = \"globex\"\nrole = \"admin\"\n",
        sha256_hex(GLOBEX_ADMIN)
    ));
    toml
}

const GLOBEX_ADMIN: &str = "globex-admin-token-001";

const ACME_SPANS: i64 = 240 + 2 * 20;
const GLOBEX_SPANS: i64 = 400 + 2 * 30;

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn start(dir: &std::path::Path) -> Server {
    Server::start_with_tokens(
        dir,
        &tokens_file_text(),
        &["--graph-pairing-ttl", "1s", "--allow-private-webhooks"],
    )
}

/// A gateway calling a service, `calls` times, every service name prefixed by the tenant.
fn calls(tenant: &str, first_id: u64, calls: u64) -> Vec<ExportTraceServiceRequest> {
    let mut t = Topology::starting_at(first_id);
    let (gateway, service) = (format!("{tenant}-gateway"), format!("{tenant}-orders"));
    for i in 0..calls {
        let trace = t.new_trace();
        let call = t.span(
            &gateway,
            &trace,
            None,
            CLIENT,
            "POST /orders",
            i,
            5,
            false,
            &[],
            &[],
        );
        t.span(
            &service,
            &trace,
            Some(&call),
            SERVER,
            "POST /orders",
            i,
            4,
            false,
            &[],
            &[],
        );
    }
    t.requests()
}

fn export_grpc(
    server: &Server,
    metadata: &[(&'static str, &str)],
    requests: Vec<ExportTraceServiceRequest>,
) -> Result<(), tonic::Status> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .unwrap();
        for request in requests {
            let mut request = tonic::Request::new(request);
            for (name, value) in metadata {
                // Appended, so a name given twice is sent twice.
                request.metadata_mut().append(*name, value.parse().unwrap());
            }
            client.export(request).await?;
        }
        Ok(())
    })
}

fn export_http(
    server: &Server,
    headers: &[(&str, &str)],
    request: &ExportTraceServiceRequest,
) -> Response {
    let mut post = Client::new()
        .post(server.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec());
    for (name, value) in headers {
        post = post.header(*name, *value);
    }
    post.send().unwrap()
}

/// An API call with a bearer token (or none) and optional extra headers.
fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", server.api);
    let mut request = Client::new().request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn sql(server: &Server, token: &str, sql: &str) -> (u16, Value) {
    api(
        server,
        "POST",
        "/api/sql",
        Some(token),
        &[],
        Some(json!({ "sql": sql })),
    )
}

fn count(server: &Server, token: &str, query: &str) -> i64 {
    let (status, body) = sql(server, token, query);
    assert_eq!(status, 200, "{query}: {body}");
    body["rows"][0][0].as_i64().unwrap()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every query shape we could think of; each runs as both tenants.
const QUERIES: &[&str] = &[
    "SELECT * FROM spans",
    "SELECT * FROM flowscope.public.spans",
    "SELECT service_name, count(*) FROM spans GROUP BY service_name",
    "SELECT a.service_name, b.service_name FROM spans a JOIN spans b ON a.trace_id = b.trace_id AND a.span_id = b.parent_span_id",
    "SELECT a.service_name FROM spans a FULL OUTER JOIN spans b ON a.span_id = b.span_id",
    "SELECT service_name FROM spans CROSS JOIN (SELECT 1) LIMIT 100000",
    "SELECT service_name FROM spans UNION ALL SELECT source FROM edges UNION SELECT target FROM edges",
    "SELECT service_name FROM spans EXCEPT SELECT 'nothing'",
    "SELECT * FROM spans WHERE trace_id IN (SELECT trace_id FROM spans)",
    "SELECT (SELECT max(service_name) FROM spans), (SELECT min(service_name) FROM spans)",
    "SELECT * FROM spans s WHERE EXISTS (SELECT 1 FROM spans t WHERE t.trace_id = s.trace_id)",
    "WITH x AS (SELECT * FROM spans) SELECT * FROM x",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r, spans",
    "SELECT service_name, row_number() OVER (PARTITION BY service_name) FROM spans",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM information_schema.columns",
    "SELECT * FROM information_schema.views",
    "SELECT * FROM information_schema.schemata",
    "SELECT * FROM information_schema.df_settings",
    "SELECT * FROM nodes",
    "SELECT * FROM edges",
    "SELECT * FROM feedback_loops",
    "SELECT * FROM nodes_between(now() - INTERVAL '1 day', now() + INTERVAL '1 day')",
    "SELECT * FROM edges_between(now() - INTERVAL '1 day', now() + INTERVAL '1 day')",
    "SELECT * FROM feedback_loops_between(now() - INTERVAL '1 day', now() + INTERVAL '1 day')",
    "SELECT * FROM edge_series('1m', now() - INTERVAL '1 hour', now() + INTERVAL '1 minute')",
    "SELECT * FROM node_series('1m')",
    "SELECT * FROM edge_control('1m', '1h', 3, now() - INTERVAL '1 hour', now() + INTERVAL '1 minute')",
    "SELECT * FROM edge_anomalies('1m', '1h', 0.001)",
    "SELECT * FROM node_anomalies('1m', '1h', 0.001)",
    "SELECT * FROM topology_events(now() - INTERVAL '1 hour', now() + INTERVAL '1 minute')",
    "SELECT s.service_name, e.* FROM spans s JOIN edges e ON s.service_name = e.source",
    "SELECT * FROM spans WHERE service_name LIKE 'globex%' OR service_name LIKE 'acme%'",
    "SELECT * FROM spans WHERE resource_attributes['tenant'] IS NOT NULL OR true",
];

fn assert_sees_only_its_own(server: &Server, token: &str, own: &str, other: &str) {
    let mut refused = Vec::new();
    for query in QUERIES {
        let (status, body) = sql(server, token, query);
        let text = body.to_string();
        // A shape the engine cannot run is fine; a leak is not, not even in an error.
        assert!(
            !text.contains(other),
            "{own} saw {other}'s data with {query}: {text:.400}"
        );
        if status == 200 {
            continue;
        }
        assert!(
            [400, 403, 422].contains(&status),
            "{query}: status {status}: {text:.400}"
        );
        refused.push(format!("{query}: {text:.200}"));
    }
    // Every shape runs: a test of isolation that only got errors would prove nothing.
    assert!(refused.is_empty(), "{own}: refused {refused:#?}");
    // The rows are all there, and only those: the same counts as sent.
    let own_spans = count(server, token, "SELECT count(*) FROM spans");
    let named_own = count(
        server,
        token,
        &format!("SELECT count(*) FROM spans WHERE service_name LIKE '{own}-%'"),
    );
    assert_eq!(own_spans, named_own, "{own}: every span it sees is its own");
    let (status, graph) = api(server, "GET", "/api/graph", Some(token), &[], None);
    assert_eq!(status, 200);
    let text = graph.to_string();
    assert!(text.contains(&format!("{own}-orders")), "{text:.400}");
    assert!(
        !text.contains(other),
        "{own}'s graph shows {other}: {text:.400}"
    );
    let (status, stream) = api(server, "GET", "/api/status", Some(token), &[], None);
    assert_eq!(status, 200, "{stream}");
}

#[test]
fn two_tenants_never_see_each_other_through_sql_graph_rules_or_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());

    // acme over gRPC, globex over HTTP; each confirms its own tenant in one request.
    let mut acme = vec![numbered_request("acme-orders", 0, 240)];
    acme.extend(calls("acme", 1_000_000, 20));
    let bearer = format!("Bearer {ACME_INGEST}");
    export_grpc(&server, &[("authorization", &bearer)], acme).expect("acme's spans");
    let mut globex = vec![numbered_request("globex-orders", 50_000, 400)];
    globex.extend(calls("globex", 2_000_000, 30));
    for (i, request) in globex.iter().enumerate() {
        let bearer = format!("Bearer {GLOBEX_INGEST}");
        let mut headers = vec![("authorization", bearer.as_str())];
        if i == 0 {
            headers.push(("x-scope-orgid", "globex"));
        }
        let response = export_http(&server, &headers, request);
        assert_eq!(response.status(), 200, "{:?}", response.text());
    }
    wait_until("both tenants' spans", || {
        count(&server, ACME_READ, "SELECT count(*) FROM spans") == ACME_SPANS
            && count(&server, GLOBEX_READ, "SELECT count(*) FROM spans") == GLOBEX_SPANS
    });
    wait_until("both tenants' edges", || {
        count(&server, ACME_READ, "SELECT count(*) FROM edges") > 0
            && count(&server, GLOBEX_READ, "SELECT count(*) FROM edges") > 0
    });

    assert_sees_only_its_own(&server, ACME_READ, "acme", "globex");
    assert_sees_only_its_own(&server, GLOBEX_READ, "globex", "acme");

    // Webhooks and rules: globex's exist, and acme can neither see nor touch them by id.
    let (status, hook) = api(
        &server,
        "POST",
        "/api/webhooks",
        Some(GLOBEX_ADMIN),
        &[],
        Some(json!({"name": "globex-ops", "url": "http://127.0.0.1:9/globex"})),
    );
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_i64().unwrap();
    let rule = json!({
        "name": "globex-errors",
        "sql": "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name HAVING count(*) > 1000000",
        "interval": "1m",
        "webhooks": [hook_id],
    });
    let (status, created) = api(
        &server,
        "POST",
        "/api/alert-rules",
        Some(GLOBEX_ADMIN),
        &[],
        Some(rule.clone()),
    );
    assert_eq!(status, 201, "{created}");
    let rule_id = created["id"].as_i64().unwrap();

    let mut without_webhooks = rule.clone();
    without_webhooks["webhooks"] = json!([]);
    for (method, path, body) in [
        ("GET", format!("/api/alert-rules/{rule_id}"), None),
        (
            "PUT",
            format!("/api/alert-rules/{rule_id}"),
            Some(without_webhooks.clone()),
        ),
        ("DELETE", format!("/api/alert-rules/{rule_id}"), None),
        ("GET", format!("/api/webhooks/{hook_id}"), None),
        (
            "PUT",
            format!("/api/webhooks/{hook_id}"),
            Some(json!({"name": "mine", "url": "http://127.0.0.1:9/x"})),
        ),
        ("POST", format!("/api/webhooks/{hook_id}/test"), None),
        ("GET", format!("/api/webhooks/{hook_id}/deliveries"), None),
        ("DELETE", format!("/api/webhooks/{hook_id}"), None),
    ] {
        let (status, body) = api(&server, method, &path, Some(ACME_ADMIN), &[], body);
        assert_eq!(status, 404, "acme {method} {path}: {body}");
    }
    for path in ["/api/alert-rules", "/api/webhooks", "/api/alerts"] {
        let (status, body) = api(&server, "GET", path, Some(ACME_ADMIN), &[], None);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains("globex"), "{path}: {body}");
    }
    // A rule of acme's may not name globex's webhook.
    let mut stolen = rule.clone();
    stolen["name"] = json!("acme-rule");
    let (status, body) = api(
        &server,
        "POST",
        "/api/alert-rules",
        Some(ACME_ADMIN),
        &[],
        Some(stolen),
    );
    assert_eq!(status, 400, "{body}");
    // globex's rule and webhook are untouched.
    let (status, still) = api(
        &server,
        "GET",
        &format!("/api/alert-rules/{rule_id}"),
        Some(GLOBEX_READ),
        &[],
        None,
    );
    assert_eq!(
        (status, still["name"].as_str()),
        (200, Some("globex-errors"))
    );

    // Each tenant's spans are in its own directory and survive a restart as its own.
    let data = server.data_dir.clone();
    assert!(data.join("tenants/acme").is_dir() && data.join("tenants/globex").is_dir());
    server.stop();
    let server = start(dir.path());
    assert_eq!(
        count(&server, ACME_READ, "SELECT count(*) FROM spans"),
        ACME_SPANS
    );
    assert_eq!(
        count(&server, GLOBEX_READ, "SELECT count(*) FROM spans"),
        GLOBEX_SPANS
    );
    server.stop();
}

#[test]
fn wrong_missing_and_misused_tokens_are_refused_on_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let request = numbered_request("acme-orders", 0, 4);
    let acme = format!("Bearer {ACME_INGEST}");

    // OTLP/gRPC: missing or unknown → UNAUTHENTICATED; another tenant's header or a read
    // token → PERMISSION_DENIED. None of the answers names a tenant.
    for (metadata, code) in [
        (vec![], tonic::Code::Unauthenticated),
        (
            vec![("authorization", "Bearer acme-ingest-token-0002")],
            tonic::Code::Unauthenticated,
        ),
        (
            vec![("authorization", "Basic YWNtZQ==")],
            tonic::Code::Unauthenticated,
        ),
        (
            vec![
                ("authorization", acme.as_str()),
                ("x-scope-orgid", "globex"),
            ],
            tonic::Code::PermissionDenied,
        ),
        (
            vec![("authorization", "Bearer acme-read-token-000001")],
            tonic::Code::PermissionDenied,
        ),
        // More than one tenant value, even the token's own twice: only the first was checked.
        (
            vec![
                ("authorization", acme.as_str()),
                ("x-scope-orgid", "acme"),
                ("x-scope-orgid", "acme"),
            ],
            tonic::Code::PermissionDenied,
        ),
        (
            vec![
                ("authorization", acme.as_str()),
                ("x-scope-orgid", "acme,globex"),
            ],
            tonic::Code::PermissionDenied,
        ),
    ] {
        let status = export_grpc(&server, &metadata, vec![request.clone()]).expect_err("refused");
        assert_eq!(status.code(), code, "{metadata:?}: {status:?}");
        assert!(!status.message().contains("globex") && !status.message().contains("acme"));
    }
    // OTLP/HTTP: the same as 401 (with WWW-Authenticate) and 403.
    for (headers, code) in [
        (vec![], 401),
        (vec![("authorization", "Bearer nope-nope-nope-nope")], 401),
        (
            vec![
                ("authorization", acme.as_str()),
                ("x-scope-orgid", "globex"),
            ],
            403,
        ),
        (
            vec![("authorization", "Bearer globex-read-token-0001")],
            403,
        ),
        (
            vec![
                ("authorization", acme.as_str()),
                ("x-scope-orgid", "acme"),
                ("x-scope-orgid", "globex"),
            ],
            403,
        ),
        (
            vec![
                ("authorization", acme.as_str()),
                ("x-scope-orgid", "acme, acme"),
            ],
            403,
        ),
    ] {
        let response = export_http(&server, &headers, &request);
        assert_eq!(response.status().as_u16(), code, "{headers:?}");
        if code == 401 {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
    }
    assert_eq!(
        count(&server, ACME_READ, "SELECT count(*) FROM spans"),
        0,
        "nothing refused was stored"
    );

    // The API: reads need a read token, changes an admin token, and X-Scope-OrgID may only
    // confirm the token's tenant.
    for (token, headers, method, path, code) in [
        (None, vec![], "POST", "/api/sql", 401),
        (
            Some("not-a-token-at-all-xx"),
            vec![],
            "POST",
            "/api/sql",
            401,
        ),
        (None, vec![], "GET", "/api/graph", 401),
        (None, vec![], "GET", "/api/graph/stream", 401),
        (None, vec![], "GET", "/api/status", 401),
        (None, vec![], "GET", "/metrics", 401),
        (None, vec![], "GET", "/api/info", 401),
        (None, vec![], "GET", "/api/alert-rules", 401),
        (None, vec![], "GET", "/api/webhooks", 401),
        (Some(ACME_INGEST), vec![], "POST", "/api/sql", 403),
        (Some(ACME_READ), vec![], "POST", "/api/alert-rules", 403),
        (Some(ACME_READ), vec![], "GET", "/api/webhooks", 403),
        (
            Some(ACME_READ),
            vec![("x-scope-orgid", "globex")],
            "POST",
            "/api/sql",
            403,
        ),
        (
            Some(ACME_READ),
            vec![("x-scope-orgid", "acme")],
            "POST",
            "/api/sql",
            200,
        ),
        (
            Some(ACME_READ),
            vec![("x-scope-orgid", "acme"), ("x-scope-orgid", "acme")],
            "POST",
            "/api/sql",
            403,
        ),
        (
            Some(ACME_READ),
            vec![("x-scope-orgid", "acme,globex")],
            "POST",
            "/api/sql",
            403,
        ),
        (Some(ACME_READ), vec![], "GET", "/api/info", 200),
    ] {
        let body = (method == "POST").then(|| json!({"sql": "SELECT 1"}));
        let (status, answer) = api(&server, method, path, token, &headers, body);
        assert_eq!(
            status, code,
            "{token:?} {headers:?} {method} {path}: {answer}"
        );
        assert!(!answer.to_string().contains("globex"), "{answer}");
    }
    // What needs no token: health and the dashboard's files (its data needs a login).
    for path in ["/healthz", "/", "/assets/js/api.js"] {
        let status = Client::new()
            .get(format!("http://{}{path}", server.api))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }

    // The dashboard's login: a read token becomes an HttpOnly, SameSite=Strict cookie.
    let login = |token: &str| {
        Client::new()
            .post(format!("http://{}/api/login", server.api))
            .json(&json!({ "token": token }))
            .send()
            .unwrap()
    };
    assert_eq!(login("acme-read-token-000002").status(), 401);
    assert_eq!(
        login(ACME_INGEST).status(),
        403,
        "an ingest token cannot read"
    );
    let response = login(ACME_READ);
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(ACME_READ), "the cookie is not the token");
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = |method: &str, path: &str, extra: Option<(&str, &str)>| {
        let mut request = Client::new()
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", server.api),
            )
            .header("cookie", &session);
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        if method == "POST" {
            request = request.json(&json!({"sql": "SELECT count(*) FROM spans"}));
        }
        request.send().unwrap()
    };
    let whoami: Value = with_cookie("GET", "/api/whoami", None).json().unwrap();
    assert_eq!(
        whoami,
        json!({"tenant": "acme", "role": "read", "open": false})
    );
    assert_eq!(with_cookie("POST", "/api/sql", None).status(), 200);
    assert_eq!(
        with_cookie("POST", "/api/sql", Some(("x-scope-orgid", "globex"))).status(),
        403
    );
    assert_eq!(with_cookie("POST", "/api/logout", None).status(), 204);
    assert_eq!(
        with_cookie("POST", "/api/sql", None).status(),
        401,
        "logged out"
    );
    server.stop();
}

#[test]
fn a_tenant_over_its_rate_limit_is_told_to_retry_and_others_are_not_slowed() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!(
        "{}\n[tenant.globex]\nmax_spans_per_second = 100\n",
        tokens_file_text()
    );
    let server = Server::start_with_tokens(dir.path(), &tokens, &[]);
    let globex = format!("Bearer {GLOBEX_INGEST}");
    // 100 spans/s with a one-second burst: the first 150 pass, the next 150 wait.
    let first = export_http(
        &server,
        &[("authorization", &globex)],
        &numbered_request("globex-a", 0, 150),
    );
    assert_eq!(first.status(), 200);
    let over = export_http(
        &server,
        &[("authorization", &globex)],
        &numbered_request("globex-a", 150, 150),
    );
    assert_eq!(over.status(), 429);
    let wait: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&wait), "Retry-After {wait}");
    let status = export_grpc(
        &server,
        &[("authorization", &globex)],
        vec![numbered_request("globex-a", 300, 150)],
    )
    .expect_err("still over");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(!status.details().is_empty(), "RetryInfo is attached");
    // acme has no limit and is not slowed by globex's.
    let acme = format!("Bearer {ACME_INGEST}");
    export_grpc(
        &server,
        &[("authorization", &acme)],
        vec![numbered_request("acme-a", 0, 2_000)],
    )
    .expect("acme");
    // After the wait, globex's retry of the refused spans is accepted.
    std::thread::sleep(Duration::from_secs(wait + 1));
    let retried = export_http(
        &server,
        &[("authorization", &globex)],
        &numbered_request("globex-a", 150, 150),
    );
    assert_eq!(retried.status(), 200);
    wait_until("the accepted spans", || {
        count(&server, GLOBEX_READ, "SELECT count(*) FROM spans") == 300
            && count(&server, ACME_READ, "SELECT count(*) FROM spans") == 2_000
    });
    server.stop();
}

#[test]
fn without_tokens_the_server_is_open_says_so_and_acts_as_the_default_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("no tokens configured"), "{log}");
    server.export(vec![numbered_request("solo", 0, 10)]);
    let (status, whoami) = api(&server, "GET", "/api/whoami", None, &[], None);
    assert_eq!(status, 200);
    assert_eq!(
        whoami,
        json!({"tenant": "default", "role": "admin", "open": true})
    );
    let (status, _) = api(
        &server,
        "GET",
        "/api/whoami",
        None,
        &[("x-scope-orgid", "other")],
        None,
    );
    assert_eq!(
        status, 403,
        "even open, a header cannot choose another tenant"
    );
    wait_until("the spans", || {
        server.count("SELECT count(*) FROM spans") == 10
    });
    assert!(
        !server.data_dir.join("tenants").exists(),
        "the default tenant keeps the root layout"
    );
    server.stop();
}
