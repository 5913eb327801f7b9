//! Starts the real `flowscope` binary on free ports and talks to it like a user would.

#![allow(dead_code)]

pub mod alerting;
pub mod city;
pub mod cluster;
pub mod ingest;
pub mod otlp;
pub mod ports;
pub mod postgres;
pub mod s3;
pub mod search_traces;
pub mod spans;
pub mod tokens;
pub mod topology;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowscope_bench::launch;
use serde_json::Value;

/// A running `flowscope serve` child process.
pub struct Server {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The S3 server this one keeps its segments in, under `FLOWSCOPE_TEST_OBJECT_STORE`.
    pub s3: Option<s3::S3>,
}

/// Where the Parquet segments of a server on `data_dir` are as files: `<data>/spans`, or
/// under `FLOWSCOPE_TEST_OBJECT_STORE=s3s-fs` the bucket's folder that s3s-fs serves.
pub fn segments_dir(data_dir: &Path) -> PathBuf {
    match std::env::var("FLOWSCOPE_TEST_OBJECT_STORE").ok().as_deref() {
        Some("s3s-fs") => s3_root(data_dir)
            .join(s3::BUCKET)
            .join("test")
            .join("spans"),
        _ => data_dir.join("spans"),
    }
}

fn s3_root(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    data_dir.with_file_name(format!("{name}.s3"))
}

/// With `FLOWSCOPE_TEST_OBJECT_STORE=s3s-fs` every server a test starts keeps its segments
/// in an s3s-fs of its own, whose folder sits beside the data directory (`<data>.s3`), so
/// a restart on the same data directory finds the same bucket: the suite run against S3.
fn object_store_under_test(
    command: &mut Command,
    data_dir: &Path,
    extra: &[&str],
) -> Option<s3::S3> {
    let kind = match std::env::var("FLOWSCOPE_TEST_OBJECT_STORE").ok()?.as_str() {
        "s3s-fs" => s3::Kind::S3sFs,
        "moto" => s3::Kind::Moto,
        other => panic!("FLOWSCOPE_TEST_OBJECT_STORE={other}: use s3s-fs or moto"),
    };
    if extra.contains(&"--object-store") {
        return None;
    }
    let s3 = s3::S3::start_at(kind, s3_root(data_dir));
    command.envs(s3.env());
    command.args(["--object-store", &format!("s3://{}/test", s3::BUCKET)]);
    Some(s3)
}

/// With `FLOWSCOPE_TEST_POSTGRES` (an admin URL; scripts/test starts a PostgreSQL and sets
/// it for its second pass) every server a test starts keeps its metadata in a PostgreSQL
/// database of its own, named after the data directory, so a restart on the same data
/// directory finds the same database.
fn metadata_under_test(command: &mut Command, data_dir: &Path, extra: &[&str]) {
    let Ok(admin) = std::env::var("FLOWSCOPE_TEST_POSTGRES") else {
        return;
    };
    if admin.is_empty() || extra.contains(&"--metadata") {
        return;
    }
    let name = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        data_dir.hash(&mut hasher);
        format!("flowscope_test_{:016x}", hasher.finish())
    };
    let url = postgres::ensure_database(&admin, &name);
    command.args(["--metadata", &url]);
}

impl Server {
    /// Starts the server on `data_dir` and waits for its "ready" line (no sleeps).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_command(
            Command::new(env!("CARGO_BIN_EXE_flowscope")),
            data_dir,
            extra,
        )
    }

    /// Starts the server on `dir/data` with `tokens_toml` as its `--tokens-file`
    /// (`dir/tokens.toml`), before `extra`.
    pub fn start_with_tokens(dir: &Path, tokens_toml: &str, extra: &[&str]) -> Self {
        let tokens = dir.join("tokens.toml");
        std::fs::write(&tokens, tokens_toml).expect("write the tokens file");
        let tokens = tokens.to_str().expect("a UTF-8 path");
        let args: Vec<&str> = ["--tokens-file", tokens]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Self::start(&dir.join("data"), &args)
    }

    /// Like [`Server::start`], with the process's address space limited to `kib` KiB
    /// (`ulimit -v`): an allocation past it fails, and Rust aborts the process, instead of
    /// the machine swapping.
    pub fn start_with_address_space(data_dir: &Path, extra: &[&str], kib: u64) -> Self {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -v {kib} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_flowscope"),
        ]);
        Self::start_command(command, data_dir, extra)
    }

    /// Starts the server with `env` added to its environment: settings given this way let
    /// a regression test start a binary from before the setting existed.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowscope"));
        command.envs(env.iter().copied());
        Self::start_command(command, data_dir, extra)
    }

    /// Starts the server under an open-file limit of `limit` (soft and hard, as `ulimit -n`
    /// sets them), with `env` added to its environment.
    pub fn start_with_open_file_limit(
        data_dir: &Path,
        limit: u64,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(limit.to_string())
            .arg(env!("CARGO_BIN_EXE_flowscope"))
            .envs(env.iter().copied());
        Self::start_command(command, data_dir, extra)
    }

    fn start_command(mut command: Command, data_dir: &Path, extra: &[&str]) -> Self {
        launch::serve_on_free_ports(&mut command, data_dir, extra);
        let s3 = object_store_under_test(&mut command, data_dir, extra);
        metadata_under_test(&mut command, data_dir, extra);
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let started = launch::start_and_wait(command, Duration::from_secs(60), move |line| {
            sink.lock().expect("log").push(line);
        });
        let (child, ports) = started.unwrap_or_else(|error| {
            panic!(
                "flowscope did not become ready ({error}):\n{}",
                log.lock().expect("log").join("\n")
            )
        });
        Self {
            grpc: ports.grpc,
            http: ports.http,
            api: ports.api,
            child,
            data_dir: data_dir.to_path_buf(),
            log,
            s3,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    /// Runs SQL through `/api/sql` and returns the JSON answer; panics on an error status.
    pub fn sql(&self, sql: &str) -> Value {
        let (status, body) = self.sql_status(sql);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    pub fn sql_status(&self, sql: &str) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("http://{}/api/sql", self.api))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .expect("POST /api/sql");
        let status = response.status().as_u16();
        (status, response.json().expect("JSON body"))
    }

    /// GETs an API path (`/api/...`) and returns its JSON; panics on an error status.
    pub fn get_json(&self, path: &str) -> Value {
        let response = reqwest::blocking::Client::new()
            .get(format!("http://{}{path}", self.api))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.json().expect("JSON body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The single number a `SELECT count(*) ...` returns.
    pub fn count(&self, sql: &str) -> i64 {
        self.sql(sql)["rows"][0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql}: not a count"))
    }

    /// Sends `requests` over OTLP/gRPC one by one; each must be accepted whole.
    pub fn export(
        &self,
        requests: Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async {
            let mut client = TraceServiceClient::connect(self.grpc_url())
                .await
                .expect("the OTLP/gRPC port answers");
            for request in requests {
                let answer = client
                    .export(request)
                    .await
                    .expect("the export is accepted")
                    .into_inner();
                assert!(answer.partial_success.is_none(), "{answer:?}");
            }
        });
    }

    /// The text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        reqwest::blocking::Client::new()
            .get(format!("http://{}/metrics", self.api))
            .timeout(Duration::from_secs(5))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("metrics text")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect(field)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for a clean exit (the store flushes to Parquet).
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        assert!(
            exit.success(),
            "flowscope exited with {exit}:\n{}",
            self.log.lock().expect("log").join("\n")
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `(id, kind)` of every node of a `/api/graph` answer (or of the page's graph), sorted.
pub fn node_kinds(graph: &Value) -> std::collections::BTreeSet<(String, String)> {
    graph["nodes"]
        .as_array()
        .expect("a graph has nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().expect("a node id").to_string(),
                n["kind"].as_str().expect("a node kind").to_string(),
            )
        })
        .collect()
}
