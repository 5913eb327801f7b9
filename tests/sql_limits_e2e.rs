//! SQL against the real binary at its limits: a query that would make gigabytes is refused
//! before it allocates, an answer larger than `--sql-max-response` is cut at a whole row
//! while streaming, timed-out queries stop using the CPU, and one tenant at its concurrency
//! cap does not keep another's query waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::tokens::{ACME_READ, GLOBEX_READ, tokens_toml};
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// The address space the memory test gives the server: any allocation of a few GiB fails
/// (and aborts the process) instead of swapping.
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client")
}

fn post_sql(
    server: &Server,
    token: Option<&str>,
    accept: &str,
    sql: &str,
) -> reqwest::blocking::Response {
    let mut request = client()
        .post(format!("http://{}/api/sql", server.api))
        .header("accept", accept)
        .json(&json!({ "sql": sql }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().expect("POST /api/sql")
}

/// CPU-seconds the process has used (utime + stime of /proc/<pid>/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(100);
    ticks as f64 / per_second as f64
}

#[test]
fn queries_that_would_make_gigabytes_are_refused_and_big_answers_are_capped_under_the_memory_limit()
{
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_address_space(
        dir.path(),
        &["--memory-limit", "512MiB", "--sql-max-response", "32MiB"],
        ADDRESS_SPACE_KIB,
    );
    for sql in [
        "SELECT length(repeat('x', 2147483647))",
        "SELECT length(repeat('x', 500000000))",
        "SELECT max(length(repeat(CAST(value AS VARCHAR), 100000000))) FROM generate_series(1, 100)",
        "SELECT max(length(lpad(CAST(value AS VARCHAR), 10000000))) FROM generate_series(1, 100000)",
        "SELECT cardinality(range(1, 10000000000))",
    ] {
        let (status, body) = server.sql_status(sql);
        assert_eq!(status, 422, "{sql}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("would make") && message.contains("MiB"),
            "{sql}: {message}"
        );
    }

    // A constant is copied into every row of a batch: a large one is refused whether it is
    // written out or folded from smaller ones.
    let piece = "x".repeat(1500);
    for sql in [
        format!("SELECT '{piece}{piece}' FROM generate_series(1, 10)"),
        format!("SELECT '{piece}' || '{piece}' FROM generate_series(1, 10)"),
    ] {
        let (status, body) = server.sql_status(&sql);
        assert_eq!(status, 422, "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("constant"), "{message}");
    }

    // A million rows of 1 KB as CSV: streamed, and cut at a whole row below the cap.
    let started = Instant::now();
    let response = post_sql(
        &server,
        None,
        "text/csv",
        "SELECT value, lpad(CAST(value AS VARCHAR), 1000, 'x') AS wide FROM generate_series(1, 1000000)",
    );
    assert_eq!(response.status().as_u16(), 200);
    let body = response.bytes().expect("the whole capped answer");
    assert!(
        body.len() <= 32 << 20 && body.len() > 31 << 20,
        "{} bytes",
        body.len()
    );
    let text = std::str::from_utf8(&body).expect("CSV text");
    assert!(text.starts_with("value,wide\n") && text.ends_with('\n'));
    let last = text.trim_end().rsplit('\n').next().expect("a last row");
    let (value, wide) = last.split_once(',').expect("two columns");
    assert_eq!(wide.len(), 1000, "the last row is whole");
    assert!(wide.ends_with(value), "{value}");
    eprintln!("32 MiB of CSV in {:?}", started.elapsed());

    // JSON past the first part streams too, and ends cleanly with its row cap flagged.
    let response = post_sql(
        &server,
        None,
        "application/json",
        "SELECT value, lpad(CAST(value AS VARCHAR), 1000, 'x') AS wide FROM generate_series(1, 1000000)",
    );
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().expect("a whole JSON answer");
    assert_eq!(answer["rows"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(answer["truncated"], json!(true));

    // Arrow too: every batch whole, the stream properly ended, under the cap.
    let response = post_sql(
        &server,
        None,
        "application/vnd.apache.arrow.stream",
        "SELECT value, lpad(CAST(value AS VARCHAR), 1000, 'x') AS wide FROM generate_series(1, 1000000)",
    );
    assert_eq!(response.status().as_u16(), 200);
    let body = response.bytes().expect("the whole capped answer");
    assert!(body.len() <= 32 << 20, "{} bytes", body.len());
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
            .expect("an Arrow IPC stream");
    let rows: usize = reader
        .map(|batch| batch.expect("a whole batch").num_rows())
        .sum();
    assert!(rows > 20_000, "{rows} rows");

    let health = client()
        .get(format!("http://{}/healthz", server.api))
        .send()
        .expect("the server still answers");
    assert_eq!(health.status().as_u16(), 200);
    let peak_kib = server.memory_kib("VmHWM:");
    assert!(peak_kib < 512 << 10, "peak RSS {} MiB", peak_kib >> 10);
}

#[test]
fn timed_out_queries_stop_running_and_leave_the_cpu_idle() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--sql-timeout", "2s"]);
    let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let response = post_sql(
                        &server,
                        None,
                        "application/json",
                        "SELECT count(*) FROM generate_series(1, 1000000000000)",
                    );
                    let status = response.status().as_u16();
                    (status, response.text().unwrap_or_default())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &statuses {
        assert!(
            *status == 422 || *status == 503,
            "a timeout or busy: {status} {body}"
        );
    }
    assert!(
        statuses.iter().any(|(status, _)| *status == 422),
        "{statuses:?}"
    );

    // Nobody waits for those queries any more: the server must be idle.
    let before = cpu_seconds(server.pid());
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_seconds(server.pid()) - before) / window.elapsed().as_secs_f64();
    assert!(
        used < 0.3,
        "{used:.2} CPU-seconds per second after the timeouts"
    );

    let started = Instant::now();
    assert_eq!(
        server.count("SELECT count(*) FROM generate_series(1, 10)"),
        10
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// Both tenants only read.
fn tokens_file_text() -> String {
    tokens_toml(&[(ACME_READ, "acme", "read"), (GLOBEX_READ, "globex", "read")])
}

#[test]
fn a_tenant_at_its_sql_concurrency_cap_does_not_keep_another_tenant_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_tokens(
        dir.path(),
        &tokens_file_text(),
        &[
            "--sql-timeout",
            "3s",
            "--sql-max-concurrent",
            "2",
            "--sql-max-concurrent-per-tenant",
            "1",
        ],
    );
    let slow = "SELECT count(*) FROM generate_series(1, 1000000000000)";
    std::thread::scope(|scope| {
        let acme: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let response = post_sql(
                        &server,
                        Some("acme-read-token-000001"),
                        "application/json",
                        slow,
                    );
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().unwrap_or_default())
                })
            })
            .collect();
        // Give acme's two queries time to arrive; without the per-tenant cap they would hold
        // both shared permits for the whole 3 s.
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let response = post_sql(
            &server,
            Some("globex-read-token-0001"),
            "application/json",
            "SELECT count(*) FROM generate_series(1, 10)",
        );
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "globex waited {:?}",
            started.elapsed()
        );
        let mut acme: Vec<(u16, Value)> = acme.into_iter().map(|h| h.join().unwrap()).collect();
        acme.sort_by_key(|(status, _)| *status);
        assert_eq!(acme[0].0, 422, "{acme:?}");
        // acme's second query waited for acme's own permit: it is refused when its wait ends
        // (503), or, when the first one's permit came free just before that, it ran into its
        // own timeout (422); either way it never took globex's permit.
        assert!(matches!(acme[1].0, 422 | 503), "{acme:?}");
        if acme[1].0 == 503 {
            let message = acme[1].1["error"].as_str().unwrap_or_default();
            assert!(
                message.contains("this tenant") || message.contains("took the whole"),
                "{message}"
            );
        }
    });
}

#[test]
fn an_answer_that_fails_after_its_headers_were_sent_is_aborted_not_ended() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Past the first 256 KiB the headers are out; then every row divides by zero.
    let response = post_sql(
        &server,
        None,
        "text/csv",
        "SELECT value, CASE WHEN value > 200000 THEN 1 / (value - value) ELSE value END AS v FROM generate_series(1, 1000000)",
    );
    assert_eq!(response.status().as_u16(), 200, "streaming had begun");
    let body = response.bytes();
    assert!(
        body.is_err(),
        "an incomplete transfer, not a complete answer: {:?}",
        body.map(|b| b.len())
    );

    // The same failure within the first part is an exact 4xx.
    let (status, body) = server.sql_status(
        "SELECT value, CASE WHEN value > 10 THEN 1 / (value - value) ELSE value END AS v FROM generate_series(1, 1000)",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("zero"),
        "{body}"
    );
}
