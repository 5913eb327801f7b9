//! Runs the real `flowscope serve` as a child process: start on free ports, read its
//! resource use from /proc, query it over /api/sql, stop it with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use flowscope_bench::launch;
use flowscope_demo::cpu;
use http_body_util::{BodyExt as _, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A plain HTTP/1.1 client; each one keeps its own connections alive between requests.
pub type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// How long a start may take; a restart on millions of spans reads every segment's footer.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Server log lines kept for error messages.
const LOG_TAIL: usize = 40;
/// WARN and ERROR lines kept for the report.
const NOTABLE_LINES: usize = 20;

/// A running `flowscope serve`.
pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    log: Arc<Mutex<Log>>,
}

/// What the server wrote to stderr that is worth showing.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub tail: Vec<String>,
    /// The first WARN and ERROR lines.
    pub notable: Vec<String>,
    pub warnings: usize,
    pub errors: usize,
}

/// The server's own figures at the end of its life.
#[derive(Debug)]
pub struct Stopped {
    /// From SIGTERM to exit: the final flush to Parquet.
    pub shutdown: Duration,
    /// CPU over the whole life of the process, final flush included.
    pub lifetime_cpu_seconds: f64,
    pub log: Log,
}

impl Server {
    /// Starts `binary serve` on `data_dir` with free ports and waits for its ready line.
    pub fn start(binary: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        launch::serve_on_free_ports(&mut command, data_dir, extra).stdin(Stdio::null());
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = log.clone();
        let started = launch::start_and_wait(command, READY_TIMEOUT, move |line| {
            record(&sink, line);
        });
        let (child, ports) = match started {
            Ok(started) => started,
            Err(error) => bail!(
                "{error} ({}); its log ends:\n{}",
                binary.display(),
                lock(&log).tail.join("\n")
            ),
        };
        Ok(Self {
            grpc: ports.grpc,
            http: ports.http,
            api: ports.api,
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU the server has used so far, all threads.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        Ok(cpu::process_cpu_seconds(self.pid())?)
    }

    /// Peak resident memory so far (VmHWM).
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        memory_bytes(self.pid(), "VmHWM")
    }

    /// Runs `sql` through `/api/sql` and returns the JSON answer.
    pub async fn sql(&self, client: &HttpClient, sql: &str) -> anyhow::Result<Value> {
        let request = serde_json::to_vec(&serde_json::json!({ "sql": sql }))?;
        let url = format!("http://{}/api/sql", self.api);
        let (status, body) = post(client, &url, "application/json", Bytes::from(request))
            .await
            .with_context(|| format!("POST /api/sql failed for `{sql}`"))?;
        if status != StatusCode::OK {
            bail!(
                "/api/sql answered `{sql}` with {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("/api/sql answered `{sql}` with a body that is not JSON"))
    }

    /// The single number a `SELECT count(*) ...` returns.
    pub async fn count(&self, client: &HttpClient, sql: &str) -> anyhow::Result<u64> {
        let body = self.sql(client, sql).await?;
        body["rows"][0][0]
            .as_u64()
            .with_context(|| format!("`{sql}` did not return a count: {body}"))
    }

    pub fn log(&self) -> Log {
        lock(&self.log).clone()
    }

    /// SIGTERM, then waits for a clean exit, by which time memory is flushed to Parquet.
    pub fn stop(mut self) -> anyhow::Result<Stopped> {
        let children_before = cpu::children_cpu_seconds()?;
        let started = Instant::now();
        // `kill(1)` rather than `kill(2)`: the workspace forbids the unsafe a syscall needs.
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill to send SIGTERM to the server")?;
        if !sent.success() {
            bail!("kill -TERM {} failed with {sent}", self.pid());
        }
        let exit = self.child.wait().context("cannot wait for the server")?;
        let shutdown = started.elapsed();
        let log = self.log();
        if !exit.success() {
            bail!(
                "flowscope exited with {exit} after SIGTERM; its log ends:\n{}",
                log.tail.join("\n")
            );
        }
        Ok(Stopped {
            shutdown,
            lifetime_cpu_seconds: cpu::children_cpu_seconds()? - children_before,
            log,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached on an error path or after `stop`, where the child has already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary: `--server` if given, else the `flowscope` built next to this binary
/// (same target directory), else `target-release/release/flowscope` in the workspace.
pub fn resolve_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return path
            .canonicalize()
            .with_context(|| format!("--server {} does not exist", path.display()));
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("flowscope")));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target-release/release/flowscope");
    sibling
        .into_iter()
        .chain([workspace])
        .find(|path| path.is_file())
        .context("no flowscope binary found next to flowscope-bench or in target-release/release; build it with `cargo build --release -p flowscope` or pass --server")
}

/// The server's data directory: given by the user, or temporary and removed at the end.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    temporary: Option<tempfile::TempDir>,
}

impl DataDir {
    /// `given` must be empty or absent, so that counts in it are this run's alone.
    pub fn new(given: Option<&Path>, keep: bool) -> anyhow::Result<Self> {
        if let Some(path) = given {
            let in_use = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some());
            if in_use {
                bail!(
                    "--data-dir {} is not empty; give an empty or new directory",
                    path.display()
                );
            }
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            return Ok(Self {
                path: path.to_path_buf(),
                temporary: None,
            });
        }
        let temporary = tempfile::Builder::new()
            .prefix("flowscope-bench-")
            .tempdir()
            .context("cannot create a temporary data directory")?;
        if keep {
            return Ok(Self {
                path: temporary.keep(),
                temporary: None,
            });
        }
        Ok(Self {
            path: temporary.path().to_path_buf(),
            temporary: Some(temporary),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes a temporary directory, or says where the data was left.
    pub fn finish(self) {
        match self.temporary {
            Some(temporary) => {
                if let Err(error) = temporary.close() {
                    eprintln!("cannot remove {}: {error}", self.path.display());
                }
            }
            None => eprintln!("data left in {}", self.path.display()),
        }
    }
}

/// The client's runtime: one thread is plenty for a client that only moves encoded bytes, and
/// leaves the other core to the server.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Wall-clock time in Unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// Bytes and count of the files under `dir` whose name ends with `suffix` (all files for "").
pub fn dir_size(dir: &Path, suffix: &str) -> anyhow::Result<(u64, usize)> {
    let mut bytes = 0;
    let mut files = 0;
    if !dir.exists() {
        return Ok((0, 0));
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if entry.file_name().to_string_lossy().ends_with(suffix) {
                bytes += metadata.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// A memory figure of /proc/PID/status, such as VmRSS or VmHWM, in bytes.
pub fn memory_bytes(pid: u32, name: &str) -> anyhow::Result<u64> {
    let status = read_proc(&format!("/proc/{pid}/status"))?;
    status_kib(&status, name)
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}

/// A new HTTP/1.1 client.
pub fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `url` and returns its JSON answer.
pub async fn get_json(client: &HttpClient, url: &str) -> anyhow::Result<Value> {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("cannot build a request to {url}"))?;
    let response = client.request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer JSON"))
}

/// POSTs `body` and returns the status and the whole answer.
pub async fn post(
    client: &HttpClient,
    url: &str,
    content_type: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .with_context(|| format!("cannot build a request to {url}"))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub use cpu::{own_cpu_seconds, thread_cpu_seconds};

fn read_proc(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
}

/// A `Name:   1234 kB` line of /proc/PID/status, in KiB.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Keeps a line of the server's log: in the tail, and among the notable ones if it is a
/// warning or an error.
fn record(log: &Mutex<Log>, line: String) {
    let mut log = lock(log);
    let warning = line.contains(" WARN ");
    let error = line.contains(" ERROR ");
    log.warnings += usize::from(warning);
    log.errors += usize::from(error);
    if (warning || error) && log.notable.len() < NOTABLE_LINES {
        log.notable.push(line.clone());
    }
    if log.tail.len() == LOG_TAIL {
        log.tail.remove(0);
    }
    log.tail.push(line);
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    // A panic in the reader thread leaves the log usable: it only ever appends.
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_kib_and_other_names_do_not_match() {
        let status = "Name:\tflowscope\nVmPeak:\t 900 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(524_288));
        assert_eq!(status_kib(status, "VmRSS"), Some(1000));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(status_kib(status, "Vm"), None);
    }
}
