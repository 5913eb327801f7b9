//! End to end with real clients: the OpenTelemetry Rust SDK's OTLP exporters over gRPC and
//! HTTP/protobuf, and hand-written OTLP/JSON, into the real binary; `/api/sql` must return
//! exactly the spans sent, with kinds, statuses, durations, attributes and hex ids intact.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

struct Sent {
    trace_id: String,
    server_span_id: String,
    client_span_id: String,
}

/// Emits one SERVER span (error status, attributes) with a CLIENT child through `exporter`.
fn emit(exporter: SpanExporter, service: &str) -> Sent {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("flowscope-e2e");
    let mut server = tracer
        .span_builder("GET /checkout")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![
            KeyValue::new("http.route", "/checkout"),
            KeyValue::new("http.response.status_code", 500i64),
            KeyValue::new("retry", true),
        ])
        .start(&tracer);
    let server_context = server.span_context().clone();
    let parent = Context::current().with_remote_span_context(server_context.clone());
    let mut client = tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![KeyValue::new("db.system", "postgresql")])
        .start_with_context(&tracer, &parent);
    let client_span_id = client.span_context().span_id().to_string();
    std::thread::sleep(Duration::from_millis(3));
    client.end();
    server.set_status(Status::error("payment declined"));
    server.end();
    provider.force_flush().expect("force_flush");
    provider.shutdown().expect("shutdown");
    Sent {
        trace_id: server_context.trace_id().to_string(),
        server_span_id: server_context.span_id().to_string(),
        client_span_id,
    }
}

fn rows_for(server: &Server, service: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT name, kind, status_code, status_message, trace_id, span_id, parent_span_id, \
         attributes['http.route'], attributes['http.response.status_code'], attributes['retry'], \
         duration_ns, scope_name, resource_attributes['service.name'] \
         FROM spans WHERE service_name = '{service}' ORDER BY name"
    );
    server.sql(&sql)["rows"].as_array().expect("rows").clone()
}

fn check(server: &Server, service: &str, sent: &Sent) {
    let rows = rows_for(server, service);
    assert_eq!(rows.len(), 2, "exactly the two spans sent: {rows:?}");
    let (server_row, client_row) = (&rows[0], &rows[1]);
    assert_eq!(server_row[0], "GET /checkout");
    assert_eq!(server_row[1], "SERVER");
    assert_eq!(server_row[2], "ERROR");
    assert_eq!(server_row[3], "payment declined");
    assert_eq!(server_row[4], sent.trace_id.as_str());
    assert_eq!(server_row[5], sent.server_span_id.as_str());
    assert_eq!(server_row[6], Value::Null, "root span");
    assert_eq!(server_row[7], "/checkout");
    assert_eq!(server_row[8], "500");
    assert_eq!(server_row[9], "true");
    assert_eq!(server_row[11], "flowscope-e2e");
    assert_eq!(server_row[12], service);
    assert_eq!(client_row[0], "SELECT orders");
    assert_eq!(client_row[1], "CLIENT");
    assert_eq!(client_row[2], "UNSET");
    assert_eq!(client_row[4], sent.trace_id.as_str(), "same trace");
    assert_eq!(client_row[5], sent.client_span_id.as_str());
    assert_eq!(
        client_row[6],
        sent.server_span_id.as_str(),
        "parent is the server span"
    );
    let duration = client_row[10].as_i64().expect("duration");
    assert!(
        duration >= 3_000_000,
        "client span lasted at least 3 ms: {duration}"
    );
    // Lookup by hex id works and is exact.
    let by_id = format!(
        "SELECT count(*) FROM spans WHERE trace_id = '{}'",
        sent.trace_id
    );
    assert_eq!(server.count(&by_id), 2);
}

#[test]
fn the_rust_sdk_exports_over_grpc_and_http_and_sql_returns_exactly_its_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = runtime.enter();

    let grpc = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .build()
        .expect("grpc exporter");
    let sent_grpc = emit(grpc, "checkout-grpc");
    check(&server, "checkout-grpc", &sent_grpc);

    let http = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(server.traces_url())
        .build()
        .expect("http exporter");
    let sent_http = emit(http, "checkout-http");
    check(&server, "checkout-http", &sent_http);

    assert_eq!(server.count("SELECT count(*) FROM spans"), 4);
}

#[test]
fn hand_written_otlp_json_is_accepted_per_the_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The spans are from November 2023: a retention that keeps them (the receivers refuse
    // spans older than it).
    let server = Server::start(dir.path(), &["--retention", "5200w"]);
    // Upper-case hex ids, enums as integers, 64-bit ints as strings and numbers, an unknown
    // field, events and a link.
    let body = serde_json::json!({
        "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "inventory" } }] },
            "unknownField": 1,
            "scopeSpans": [{
                "scope": { "name": "hand", "version": "1.0" },
                "spans": [
                    {
                        "traceId": "5B8EFFF798038103D269B633813FC60C",
                        "spanId": "EEE19B7EC3C1B174",
                        "name": "reserve",
                        "kind": 5,
                        "startTimeUnixNano": "1700000000000000000",
                        "endTimeUnixNano": 1700000000250000000u64,
                        "attributes": [
                            { "key": "items", "value": { "intValue": "3" } },
                            { "key": "ratio", "value": { "doubleValue": 0.5 } },
                            { "key": "tags", "value": { "arrayValue": { "values": [{ "stringValue": "a" }, { "intValue": 2 }] } } }
                        ],
                        "events": [{ "timeUnixNano": "1700000000100000000", "name": "picked", "attributes": [] }],
                        "links": [{ "traceId": "0AF7651916CD43DD8448EB211C80319C", "spanId": "B7AD6B7169203331" }],
                        "status": { "code": 1 }
                    },
                    {
                        "traceId": "5b8efff798038103d269b633813fc60c",
                        "spanId": "eee19b7ec3c1b175",
                        "parentSpanId": "eee19b7ec3c1b174",
                        "name": "write",
                        "kind": 3,
                        "startTimeUnixNano": 1700000000010000000u64,
                        "endTimeUnixNano": "1700000000020000000"
                    }
                ]
            }]
        }]
    });
    let response = reqwest::blocking::Client::new()
        .post(server.traces_url())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("POST /v1/traces");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("application/json")
    );
    let answer: Value = response.json().expect("json answer");
    assert!(
        answer.get("partialSuccess").is_none(),
        "full success leaves partialSuccess unset: {answer}"
    );

    let rows = server.sql(
        "SELECT name, kind, status_code, trace_id, span_id, parent_span_id, duration_ns, \
         attributes['items'], attributes['ratio'], attributes['tags'], scope_name, scope_version, \
         cardinality(events), links[1]['trace_id'], start_time \
         FROM spans ORDER BY name",
    )["rows"]
        .as_array()
        .expect("rows")
        .clone();
    assert_eq!(rows.len(), 2);
    let reserve = &rows[0];
    assert_eq!(reserve[0], "reserve");
    assert_eq!(reserve[1], "CONSUMER");
    assert_eq!(reserve[2], "OK");
    assert_eq!(
        reserve[3], "5b8efff798038103d269b633813fc60c",
        "ids are shown as lowercase hex"
    );
    assert_eq!(reserve[4], "eee19b7ec3c1b174");
    assert_eq!(reserve[6], 250_000_000);
    assert_eq!(reserve[7], "3");
    assert_eq!(reserve[8], "0.5");
    assert_eq!(reserve[9], "[\"a\",2]");
    assert_eq!(reserve[10], "hand");
    assert_eq!(reserve[11], "1.0");
    assert_eq!(reserve[12], 1);
    assert_eq!(reserve[13], "0af7651916cd43dd8448eb211c80319c");
    assert!(
        reserve[14]
            .as_str()
            .expect("time")
            .starts_with("2023-11-14T22:13:20"),
        "{}",
        reserve[14]
    );
    let write = &rows[1];
    assert_eq!(write[1], "CLIENT");
    assert_eq!(write[2], "UNSET");
    assert_eq!(write[5], "eee19b7ec3c1b174");
    assert_eq!(write[6], 10_000_000);
}

#[test]
fn sql_answers_csv_and_arrow_and_refuses_writes_with_4xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--sql-max-rows", "3"]);
    let client = reqwest::blocking::Client::new();
    let url = format!("http://{}/api/sql", server.api);
    let query = serde_json::json!({ "sql": "SELECT value FROM generate_series(1, 5)" });

    let json: Value = client
        .post(&url)
        .json(&query)
        .send()
        .expect("json")
        .json()
        .expect("body");
    assert_eq!(json["columns"][0]["name"], "value");
    assert_eq!(json["rows"].as_array().expect("rows").len(), 3);
    assert_eq!(json["truncated"], true);

    let csv = client
        .post(&url)
        .header("accept", "text/csv")
        .json(&query)
        .send()
        .expect("csv");
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    assert_eq!(csv.text().expect("text"), "value\n1\n2\n3\n4\n5\n");

    let arrow = client
        .post(&url)
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&query)
        .send()
        .expect("arrow");
    let bytes = arrow.bytes().expect("bytes");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .expect("ipc");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 5);

    for (sql, status) in [
        ("DROP TABLE spans", 403),
        ("INSERT INTO spans SELECT * FROM spans", 403),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", 403),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            403,
        ),
        ("SELECT * FROM '/etc/passwd'", 400),
        ("SELECT * FROM read_csv('/etc/passwd')", 400),
        ("SELEC 1", 400),
    ] {
        let (got, body) = server.sql_status(sql);
        assert_eq!(got, status, "{sql}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{sql}: {body}"
        );
    }
    let response = client
        .post(&url)
        .body("not json")
        .header("content-type", "application/json")
        .send()
        .expect("bad body");
    assert_eq!(response.status().as_u16(), 400);
}
