//! Connections nobody uses cannot take the server down (issue 19, defect 2): every port caps
//! its connections from the open-file limit and closes the ones that send nothing, send a
//! request head or body too slowly, or sit idle.
//!
//! The limits are set through `FLOWSCOPE_*` variables, not flags, so each test also runs
//! against a binary from before they existed, and fails there on what it checks.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Server;
use prost::Message as _;

/// The `process` section's figure `key` from `/metrics`.
fn metric(server: &Server, key: &str) -> u64 {
    let text = server.metrics_text();
    let name = format!("flowscope_process_{key}");
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name || metric == format!("{name}_total"))
                .then(|| value.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Reads from `stream` until the server closes it (EOF or reset), for at most `limit`;
/// returns how long that took and what was read.
fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        assert!(
            start.elapsed() < limit,
            "the server kept the connection open for {limit:?}"
        );
        match stream.read(&mut buf) {
            Ok(0) => return (start.elapsed(), received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (start.elapsed(), received),
        }
    }
}

fn export_body() -> Vec<u8> {
    common::otlp::numbered_request("connections", 0, 5).encode_to_vec()
}

/// POSTs one OTLP/HTTP export and returns its status, or `None` if the connection failed.
fn http_export(server: &Server) -> Option<u16> {
    reqwest::blocking::Client::new()
        .post(server.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(export_body())
        .timeout(Duration::from_secs(2))
        .send()
        .ok()
        .map(|response| response.status().as_u16())
}

#[test]
fn three_hundred_idle_connections_under_a_256_descriptor_limit_starve_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_open_file_limit(
        dir.path(),
        256,
        &[("FLOWSCOPE_HEADER_READ_TIMEOUT", "2s")],
        &[],
    );
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.http).expect("connect to OTLP/HTTP"))
        .collect();

    // The API still answers at once: its own share of descriptors is untouched.
    let start = Instant::now();
    let health = reqwest::blocking::Client::new()
        .get(format!("http://{}/healthz", server.api))
        .timeout(Duration::from_secs(2))
        .send();
    assert!(
        matches!(&health, Ok(response) if response.status() == 200),
        "/healthz with 300 idle connections open: {health:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));

    // Ingest goes on: over gRPC at once, over HTTP once the idle connections holding its
    // share are closed at the header-read timeout (until then a new one is closed at once,
    // which exporters retry).
    server.export(vec![common::otlp::numbered_request("connections", 100, 5)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acknowledged = false;
    while Instant::now() < deadline {
        if http_export(&server) == Some(200) {
            acknowledged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(acknowledged, "no OTLP/HTTP export acknowledged within 10s");
    assert_eq!(server.count("SELECT count(*) FROM spans"), 10);

    let limit = metric(&server, "otlp_http_connection_limit");
    assert!((8..100).contains(&limit), "cap under a 256 limit: {limit}");
    assert!(metric(&server, "otlp_http_connections_refused") >= 300 - limit);
    assert!(metric(&server, "otlp_http_header_read_timeouts") >= limit);
    assert_eq!(metric(&server, "otlp_http_accept_errors"), 0);
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
    drop(idle);
}

#[test]
fn a_silent_connection_and_a_slow_request_head_are_closed_at_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_with_env(dir.path(), &[("FLOWSCOPE_HEADER_READ_TIMEOUT", "1s")], &[]);
    for addr in [server.http, server.api] {
        let mut silent = TcpStream::connect(addr).unwrap();
        let (after, _) = wait_for_close(&mut silent, Duration::from_secs(5));
        assert!(
            after >= Duration::from_millis(800),
            "{addr}: closed after {after:?}"
        );

        // A request head a byte every 200 ms never completes: closed at the same timeout.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let head =
            b"POST /v1/traces HTTP/1.1\r\nHost: flowscope\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n";
        let start = Instant::now();
        let mut closed = false;
        for byte in head.iter().cycle() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{addr}: a slow head kept the connection open"
            );
            if slow.write_all(&[*byte]).is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 1024];
            match slow.read(&mut buf) {
                Ok(_) => {
                    closed = true;
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed);
        let after = start.elapsed();
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(4)).contains(&after),
            "{addr}: slow head closed after {after:?}"
        );
    }
    assert_eq!(metric(&server, "otlp_http_header_read_timeouts"), 2);
    assert_eq!(metric(&server, "api_header_read_timeouts"), 2);
    // The server still takes requests.
    assert_eq!(http_export(&server), Some(200));
}

/// Sends `request` and reads the answer's head (up to the blank line).
fn answer_head(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("an answer");
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // HTTP/1.1's header timer also runs between requests; set it long to see the idle one.
    let server = Server::start_with_env(
        dir.path(),
        &[
            ("FLOWSCOPE_HEADER_READ_TIMEOUT", "30s"),
            ("FLOWSCOPE_IDLE_TIMEOUT", "2s"),
            ("FLOWSCOPE_SQL_TIMEOUT", "1s"),
        ],
        &[],
    );
    let mut stream = TcpStream::connect(server.api).unwrap();
    let head = answer_head(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: flowscope\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (after, _) = wait_for_close(&mut stream, Duration::from_secs(6));
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(5)).contains(&after),
        "idle keep-alive connection closed after {after:?}"
    );
    assert_eq!(metric(&server, "api_idle_timeouts"), 1);
}

#[test]
fn a_grpc_connection_that_sends_nothing_is_closed_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[
            ("FLOWSCOPE_IDLE_TIMEOUT", "2s"),
            ("FLOWSCOPE_SQL_TIMEOUT", "1s"),
        ],
        &[],
    );
    let mut stream = TcpStream::connect(server.grpc).unwrap();
    // The server's HTTP/2 SETTINGS arrive, then nothing: the connection is idle.
    let (after, _) = wait_for_close(&mut stream, Duration::from_secs(6));
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(5)).contains(&after),
        "silent gRPC connection closed after {after:?}"
    );
    assert_eq!(metric(&server, "otlp_grpc_idle_timeouts"), 1);
    // A real client is served as before.
    server.export(vec![common::otlp::numbered_request("connections", 0, 5)]);
}

#[test]
fn a_request_body_slower_than_the_request_body_timeout_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_with_env(dir.path(), &[("FLOWSCOPE_REQUEST_BODY_TIMEOUT", "1s")], &[]);
    let cases: [(SocketAddr, &[u8]); 2] = [
        (
            server.http,
            b"POST /v1/traces HTTP/1.1\r\nHost: flowscope\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n0123456789",
        ),
        (
            server.api,
            b"POST /api/sql HTTP/1.1\r\nHost: flowscope\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"sql\": \"SEL",
        ),
    ];
    for (addr, request) in cases {
        let mut stream = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        let head = answer_head(&mut stream, request);
        let after = start.elapsed();
        assert!(head.starts_with("HTTP/1.1 408"), "{addr}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(4)).contains(&after),
            "{addr}: 408 after {after:?}"
        );
    }
    assert_eq!(metric(&server, "otlp_http_request_body_timeouts"), 1);
    assert_eq!(metric(&server, "api_request_body_timeouts"), 1);
    assert_eq!(http_export(&server), Some(200));
}
