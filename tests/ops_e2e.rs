//! A server that behaves like production software (issue 21, item 5): one process per data
//! directory, nothing created before the ports are bound, logs without colour codes in a
//! file and as JSON lines on request.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// `flowscope serve` on `data_dir` with loopback ports (each replaced by `addrs` where given),
/// run until it exits by itself (at most a minute): its status and its stderr.
fn serve_until_exit(data_dir: &Path, addrs: [&str; 3]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowscope"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--otlp-grpc-addr", addrs[0], "--otlp-http-addr", addrs[1]])
        .args(["--api-addr", addrs[2]])
        .env("FLOWSCOPE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start flowscope");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "flowscope did not exit:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).expect("read stderr"))
}

const ANY_PORTS: [&str; 3] = ["127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"];

#[test]
fn a_second_server_on_the_same_data_directory_refuses_to_start_naming_the_holders_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Server::start(dir.path(), &[]);
    first.export(vec![common::otlp::numbered_request("checkout", 1, 5)]);

    let (status, stderr) = serve_until_exit(dir.path(), ANY_PORTS);
    assert!(!status.success(), "the second server must fail: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "names the holder's pid {}: {stderr}",
        first.pid()
    );
    assert!(
        stderr.contains("--data-dir") && stderr.contains("stop that process first"),
        "says what to do: {stderr}"
    );
    assert!(
        !stderr.contains("span store ready") && !stderr.contains("flowscope is ready"),
        "refused before opening the store: {stderr}"
    );
    let pid_in_file = std::fs::read_to_string(dir.path().join("flowscope.lock")).expect("lock");
    assert_eq!(pid_in_file.trim(), first.pid().to_string());

    // The first one kept serving, its spans and WAL untouched by the second.
    assert_eq!(first.count("SELECT count(*) FROM spans"), 5);
    first.export(vec![common::otlp::numbered_request("checkout", 6, 5)]);
    assert_eq!(first.count("SELECT count(*) FROM spans"), 10);
    first.stop();

    // Once it has stopped, the directory is free again.
    let again = Server::start(dir.path(), &[]);
    assert_eq!(again.count("SELECT count(*) FROM spans"), 10);
    again.stop();
}

#[test]
fn a_busy_port_fails_the_start_naming_the_port_and_creates_no_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("never-created");
    // The API port is bound last: the two OTLP ports are bound by then, and still nothing
    // may be on disk.
    let busy = TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let busy_addr: SocketAddr = busy.local_addr().expect("addr");
    let api = busy_addr.to_string();
    let (status, stderr) = serve_until_exit(&data_dir, ["127.0.0.1:0", "127.0.0.1:0", &api]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&api) && stderr.contains("--api-addr"),
        "names the port and the flag: {stderr}"
    );
    assert!(
        !data_dir.exists(),
        "the data directory was created before the port failed: {stderr}"
    );
    drop(busy);
}

/// Starts `flowscope serve` with stderr going to `log` (a file, not a terminal) and waits
/// for the ready line in it: the API address it logged, and the child.
fn start_logging_to_file(
    data_dir: &Path,
    log: &Path,
    extra: &[&str],
) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowscope"));
    let mut child = flowscope_bench::launch::serve_on_free_ports(&mut command, data_dir, extra)
        // Colour must stay off because stderr is a file, not because the caller asked.
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start flowscope");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("flowscope is ready") {
            let api = text
                .lines()
                .filter(|line| line.contains("listening") && line.contains("api"))
                .find_map(|line| {
                    line.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '=')
                        .find_map(|word| word.parse::<SocketAddr>().ok())
                })
                .expect("the API address is logged");
            return (child, api.to_string());
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("flowscope exited with {status}:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "flowscope did not become ready:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: std::process::Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    assert!(child.wait().expect("wait").success());
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("flowscope.log");
    let (child, api) = start_logging_to_file(&dir.path().join("data"), &log, &[]);
    // A failed query logs a warning with fields, the kind of line that was coloured.
    let _ = reqwest::blocking::Client::new()
        .post(format!("http://{api}/api/sql"))
        .json(&serde_json::json!({"sql": "SELECT nope FROM spans"}))
        .send()
        .expect("POST /api/sql");
    stop(child);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains("\u{1b}["), "colour codes in a file:\n{text}");
}

#[test]
fn log_format_json_writes_one_object_per_line_with_level_and_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("flowscope.log");
    let (child, _api) =
        start_logging_to_file(&dir.path().join("data"), &log, &["--log-format", "json"]);
    stop(child);
    let text = std::fs::read_to_string(&log).expect("log");
    let mut messages = Vec::new();
    for line in text.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        let level = object["level"].as_str().expect("a level");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        messages.push(object["message"].as_str().expect("a message").to_string());
        assert!(!line.contains("\u{1b}["), "{line}");
    }
    assert!(
        messages.iter().any(|m| m == "flowscope is ready"),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
    // The event's fields sit beside the message, as log shippers index them.
    let listening: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|object| object["message"] == "listening")
        .collect();
    assert_eq!(listening.len(), 3, "{text}");
    assert!(
        listening.iter().any(|object| object["service"] == "api"),
        "{text}"
    );

    // The same from the config file's `log_format`.
    let config = dir.path().join("flowscope.toml");
    std::fs::write(&config, "log_format = \"json\"\n").expect("config");
    let log = dir.path().join("from-file.log");
    let (child, _api) = start_logging_to_file(
        &dir.path().join("data"),
        &log,
        &["--config", config.to_str().expect("utf-8 path")],
    );
    stop(child);
    let text = std::fs::read_to_string(&log).expect("log");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
    }
}
