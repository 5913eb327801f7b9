//! A server under everything at once, as issue 19 asks: steady ingest from the OpenTelemetry
//! Rust SDK's OTLP/gRPC exporter while, on every port, 2,000 idle connections and a slowloris
//! (a request a byte a second) hold sockets, two tenants run SQL that keeps timing out or
//! asks for too much, and a client guesses tokens at the login. Throughout, ingest must keep
//! being acknowledged (p99 under 100 ms), `/healthz` must answer, resident memory must stay
//! under `--memory-limit`, and afterwards every acknowledged span must be stored.
//!
//! `mixed_attack_for_twenty_seconds` runs in CI; the ten-minute run BENCHMARKS.md reports is
//! `cargo test --test mixed_attack -- --ignored --nocapture` (`FLOWSCOPE_MIXED_RUN_SECS`
//! changes its length).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::Server;
use common::tokens::{ACME_INGEST, ACME_READ, GLOBEX_READ, tokens_toml};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

/// acme sends and reads; globex only reads.
fn tokens_file_text() -> String {
    tokens_toml(&[
        (ACME_INGEST, "acme", "ingest"),
        (ACME_READ, "acme", "read"),
        (GLOBEX_READ, "globex", "read"),
    ])
}

const MEMORY_LIMIT_MIB: u64 = 512;
const IDLE_PER_PORT: usize = 2_000;
const SLOWLORIS_PER_PORT: usize = 20;
const EXPORTS_PER_SECOND: u64 = 10;
const SPANS_PER_EXPORT: u64 = 100;
const SERVICE: &str = "steady-ingest";

/// What the run saw; printed for BENCHMARKS.md and checked by the tests.
// Some fields are only printed (`{:#?}`), which the dead-code lint does not count as a read.
#[allow(dead_code)]
#[derive(Debug, Default)]
struct Report {
    seconds: f64,
    exports: u64,
    acked_spans: u64,
    refused_exports: u64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
    longest_gap_between_acks_ms: f64,
    healthz_probes: u64,
    healthz_failures: u64,
    healthz_max_ms: f64,
    sql_queries: u64,
    sql_statuses: Vec<(u16, u64)>,
    bad_logins: u64,
    bad_login_statuses: Vec<(u16, u64)>,
    idle_reconnects: u64,
    slowloris_reconnects: u64,
    peak_rss_mib: u64,
    stored_of_acked: u64,
    server_cpu_seconds: f64,
}

fn tally(statuses: &Mutex<Vec<(u16, u64)>>, status: u16) {
    let mut statuses = statuses.lock().unwrap();
    match statuses.iter_mut().find(|(s, _)| *s == status) {
        Some((_, n)) => *n += 1,
        None => statuses.push((status, 1)),
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A connection that is open and has not been closed by the server.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    stream.set_nonblocking(true).ok();
    let open = match stream.peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).ok();
    open
}

/// Holds `count` connections to each address that send nothing, opening a new one whenever
/// the server closes one, as an attacker would.
fn hold_idle(
    addrs: Vec<SocketAddr>,
    count: usize,
    stop: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
) {
    let mut held: Vec<(SocketAddr, Option<TcpStream>)> = addrs
        .iter()
        .flat_map(|addr| std::iter::repeat_n(*addr, count))
        .map(|addr| {
            (
                addr,
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok(),
            )
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for (addr, stream) in held.iter_mut() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if stream.as_ref().is_some_and(still_open) {
                continue;
            }
            reconnects.fetch_add(1, Ordering::Relaxed);
            *stream = TcpStream::connect_timeout(addr, Duration::from_millis(500)).ok();
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Sends a request one byte a second on `count` connections to each address, reconnecting
/// when the server gives up on one.
fn slowloris(
    addrs: Vec<(SocketAddr, &'static [u8])>,
    count: usize,
    stop: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
) {
    let mut conns: Vec<(SocketAddr, &[u8], usize, Option<TcpStream>)> = addrs
        .iter()
        .flat_map(|(addr, text)| std::iter::repeat_n((*addr, *text), count))
        .map(|(addr, text)| (addr, text, 0, TcpStream::connect(addr).ok()))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for (addr, text, sent, stream) in conns.iter_mut() {
            let ok = stream
                .as_mut()
                .is_some_and(|s| s.write_all(&text[*sent % text.len()..][..1]).is_ok());
            if ok {
                *sent += 1;
            } else {
                reconnects.fetch_add(1, Ordering::Relaxed);
                *sent = 0;
                *stream = TcpStream::connect_timeout(addr, Duration::from_millis(500)).ok();
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn span_data(trace: u128, n: u64, now: SystemTime) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(n + 1),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: "POST /orders".into(),
        start_time: now - Duration::from_millis(3),
        end_time: now,
        attributes: vec![
            KeyValue::new("http.route", "/orders"),
            KeyValue::new("http.response.status_code", 200i64),
        ],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Ok,
        instrumentation_scope: InstrumentationScope::builder("mixed-attack").build(),
    }
}

struct Ingest {
    latencies_ms: Vec<f64>,
    acked: HashSet<u64>,
    refused: u64,
    longest_gap: Duration,
}

/// Steady ingest through the SDK's exporter, one export at a time at a fixed pace; each
/// export's time is its acknowledgement latency (the exporter retries nothing here).
async fn steady_ingest(grpc: String, stop: Arc<AtomicBool>) -> Ingest {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        "authorization",
        format!("Bearer {ACME_INGEST}").parse().unwrap(),
    );
    let mut exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(grpc)
        .with_metadata(metadata)
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("gRPC exporter");
    exporter.set_resource(&Resource::builder().with_service_name(SERVICE).build());
    let mut ingest = Ingest {
        latencies_ms: Vec::new(),
        acked: HashSet::new(),
        refused: 0,
        longest_gap: Duration::ZERO,
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / EXPORTS_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0u64;
    let mut last_ack = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let now = SystemTime::now();
        let ids: Vec<u64> = (next..next + SPANS_PER_EXPORT).collect();
        next += SPANS_PER_EXPORT;
        let batch = ids
            .iter()
            .map(|&n| span_data(u128::from(n / 10 + 1), n, now))
            .collect();
        let started = Instant::now();
        let result = exporter.export(batch).await;
        let took = started.elapsed();
        match result {
            Ok(()) => {
                ingest.latencies_ms.push(took.as_secs_f64() * 1e3);
                ingest.acked.extend(ids);
                ingest.longest_gap = ingest.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
            }
            Err(error) => {
                ingest.refused += 1;
                eprintln!("export refused: {error}");
            }
        }
    }
    ingest
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// SQL that keeps hitting a limit: a query that outlives `--sql-timeout`, a string far
/// larger than SQL memory, and an export of more rows than an answer may carry.
fn heavy_sql(
    api: SocketAddr,
    token: &'static str,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    statuses: Arc<Mutex<Vec<(u16, u64)>>>,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let shapes = [
        (
            "SELECT count(*) FROM generate_series(1, 1000000000000)",
            "application/json",
        ),
        ("SELECT length(repeat('x', 2147483647))", "application/json"),
        (
            "SELECT v, repeat('y', 200) FROM generate_series(1, 50000000) AS t(v)",
            "text/csv",
        ),
        (
            "SELECT s.name, count(*) FROM spans s JOIN spans t ON s.trace_id = t.trace_id GROUP BY s.name",
            "application/json",
        ),
    ];
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (sql, accept) = shapes[n % shapes.len()];
        n += 1;
        let answer = client
            .post(format!("http://{api}/api/sql"))
            .bearer_auth(token)
            .header("accept", accept)
            .json(&serde_json::json!({ "sql": sql }))
            .send();
        queries.fetch_add(1, Ordering::Relaxed);
        match answer {
            // Read the body through so an answer's size counts, then drop it.
            Ok(mut response) => {
                let status = response.status().as_u16();
                let _ = std::io::copy(&mut response, &mut std::io::sink());
                tally(&statuses, status);
            }
            Err(_) => tally(&statuses, 0),
        }
    }
}

fn bad_logins(
    api: SocketAddr,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    statuses: Arc<Mutex<Vec<(u16, u64)>>>,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let answer = client
            .post(format!("http://{api}/api/login"))
            .json(&serde_json::json!({ "token": format!("guessed-token-{n:012}") }))
            .send();
        count.fetch_add(1, Ordering::Relaxed);
        tally(&statuses, answer.map(|r| r.status().as_u16()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/healthz` on a fresh connection every 200 ms: (probes, failures, slowest ms).
fn probe_health(api: SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64, f64) {
    let (mut probes, mut failures, mut slowest) = (0u64, 0u64, 0f64);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let healthy = TcpStream::connect_timeout(&api, Duration::from_secs(2))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                stream.write_all(
                    b"GET /healthz HTTP/1.1\r\nHost: flowscope\r\nConnection: close\r\n\r\n",
                )?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer)?;
                Ok(answer.starts_with(b"HTTP/1.1 200"))
            })
            .unwrap_or(false);
        probes += 1;
        if !healthy {
            failures += 1;
            eprintln!("/healthz failed after {:?}", started.elapsed());
        }
        slowest = slowest.max(started.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(200));
    }
    (probes, failures, slowest)
}

/// The span ids (as numbers) of the steady ingest that the store holds. The attack's last
/// queries may still be finishing, so a refusal is retried for a few seconds.
fn stored_ids(server: &Server) -> HashSet<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = reqwest::blocking::Client::new()
            .post(format!("http://{}/api/sql", server.api))
            .bearer_auth(ACME_READ)
            .header("accept", "text/csv")
            .json(&serde_json::json!({
                "sql": format!("SELECT span_id FROM spans WHERE service_name = '{SERVICE}'")
            }))
            .send()
            .expect("POST /api/sql");
        let status = response.status().as_u16();
        let body = response.text().unwrap();
        if status == 200 {
            return body
                .lines()
                .skip(1)
                .map(|hex| u64::from_str_radix(hex.trim(), 16).expect("a span id") - 1)
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the stored spans cannot be read after the attack: {status} {body}"
        );
        eprintln!("reading the stored spans: {status} {body}; again");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn mixed_run(duration: Duration) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_tokens(
        dir.path(),
        &tokens_file_text(),
        &[
            "--memory-limit",
            &format!("{MEMORY_LIMIT_MIB}MiB"),
            "--sql-timeout",
            "2s",
            "--flush-interval",
            "5s",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_seconds(server.pid());
    let idle_reconnects = Arc::new(AtomicU64::new(0));
    let slowloris_reconnects = Arc::new(AtomicU64::new(0));
    let sql_queries = Arc::new(AtomicU64::new(0));
    let sql_statuses = Arc::new(Mutex::new(Vec::new()));
    let logins = Arc::new(AtomicU64::new(0));
    let login_statuses = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    {
        let (addrs, stop, reconnects) = (
            vec![server.grpc, server.http, server.api],
            stop.clone(),
            idle_reconnects.clone(),
        );
        threads.push(std::thread::spawn(move || {
            hold_idle(addrs, IDLE_PER_PORT, stop, reconnects)
        }));
    }
    {
        const HTTP1: &[u8] = b"POST /v1/traces HTTP/1.1\r\nHost: flowscope\r\nContent-Type: application/x-protobuf\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        const HTTP2: &[u8] =
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let (addrs, stop, reconnects) = (
            vec![
                (server.grpc, HTTP2),
                (server.http, HTTP1),
                (server.api, HTTP1),
            ],
            stop.clone(),
            slowloris_reconnects.clone(),
        );
        threads.push(std::thread::spawn(move || {
            slowloris(addrs, SLOWLORIS_PER_PORT, stop, reconnects)
        }));
    }
    for token in [ACME_READ, GLOBEX_READ] {
        let (api, stop, queries, statuses) = (
            server.api,
            stop.clone(),
            sql_queries.clone(),
            sql_statuses.clone(),
        );
        threads.push(std::thread::spawn(move || {
            heavy_sql(api, token, stop, queries, statuses)
        }));
    }
    {
        let (api, stop, count, statuses) = (
            server.api,
            stop.clone(),
            logins.clone(),
            login_statuses.clone(),
        );
        threads.push(std::thread::spawn(move || {
            bad_logins(api, stop, count, statuses)
        }));
    }
    let health = {
        let (api, stop) = (server.api, stop.clone());
        std::thread::spawn(move || probe_health(api, stop))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ingest = runtime.spawn(steady_ingest(server.grpc_url(), stop.clone()));
    let started = Instant::now();
    let mut peak_rss_kib = 0;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss_kib = peak_rss_kib.max(server.memory_kib("VmRSS:"));
        let seconds = started.elapsed().as_secs();
        if seconds.is_multiple_of(30) {
            eprintln!(
                "{seconds}s: rss {} MiB, sql {} queries, {} bad logins",
                server.memory_kib("VmRSS:") >> 10,
                sql_queries.load(Ordering::Relaxed),
                logins.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ingest = runtime.block_on(ingest).unwrap();
    let (healthz_probes, healthz_failures, healthz_max_ms) = health.join().unwrap();
    for thread in threads {
        thread.join().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu_seconds = cpu_seconds(server.pid()) - cpu_before;
    peak_rss_kib = peak_rss_kib.max(server.memory_kib("VmHWM:"));
    let stored = stored_ids(&server);
    let stored_of_acked = ingest.acked.iter().filter(|id| stored.contains(id)).count() as u64;
    let mut latencies = ingest.latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let report = Report {
        seconds,
        exports: latencies.len() as u64 + ingest.refused,
        acked_spans: ingest.acked.len() as u64,
        refused_exports: ingest.refused,
        ack_p50_ms: percentile(&latencies, 0.5),
        ack_p99_ms: percentile(&latencies, 0.99),
        ack_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        longest_gap_between_acks_ms: ingest.longest_gap.as_secs_f64() * 1e3,
        healthz_probes,
        healthz_failures,
        healthz_max_ms,
        sql_queries: sql_queries.load(Ordering::Relaxed),
        sql_statuses: sql_statuses.lock().unwrap().clone(),
        bad_logins: logins.load(Ordering::Relaxed),
        bad_login_statuses: login_statuses.lock().unwrap().clone(),
        idle_reconnects: idle_reconnects.load(Ordering::Relaxed),
        slowloris_reconnects: slowloris_reconnects.load(Ordering::Relaxed),
        peak_rss_mib: peak_rss_kib >> 10,
        stored_of_acked,
        server_cpu_seconds,
    };
    eprintln!("{report:#?}");
    report
}

fn check(report: &Report) {
    assert!(
        report.acked_spans > 0,
        "nothing was acknowledged: {report:?}"
    );
    assert_eq!(
        report.stored_of_acked, report.acked_spans,
        "every acknowledged span is stored: {report:?}"
    );
    assert!(
        report.refused_exports * 100 <= report.exports,
        "at most 1% of exports refused: {report:?}"
    );
    assert!(
        report.ack_p99_ms < 100.0,
        "ack p99 under 100 ms: {report:?}"
    );
    assert!(
        report.longest_gap_between_acks_ms < 2_000.0,
        "ingest never stalls for 2 s: {report:?}"
    );
    assert_eq!(
        report.healthz_failures, 0,
        "/healthz answers throughout: {report:?}"
    );
    assert!(
        report.peak_rss_mib < MEMORY_LIMIT_MIB,
        "peak RSS under --memory-limit: {report:?}"
    );
    assert!(
        report.sql_queries > 0 && report.bad_logins > 0,
        "{report:?}"
    );
}

#[test]
fn mixed_attack_for_twenty_seconds() {
    check(&mixed_run(Duration::from_secs(20)));
}

/// The ten-minute run of BENCHMARKS.md: `cargo test --test mixed_attack -- --ignored --nocapture`.
#[test]
#[ignore = "ten minutes; run on demand for BENCHMARKS.md"]
fn mixed_attack_for_ten_minutes() {
    let seconds = std::env::var("FLOWSCOPE_MIXED_RUN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    check(&mixed_run(Duration::from_secs(seconds)));
}
