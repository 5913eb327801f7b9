//! Starts `flowscope serve` as a child process on free ports and waits for its ready line:
//! the one start-and-wait of the benchmarks (`server.rs`) and of the root crate's end-to-end
//! tests (`tests/common`), which take this crate as a dev-dependency for it. Readiness is
//! the server's own "flowscope is ready" log line, never a sleep.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The three ports a started server logged it listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
}

/// Why a server did not become ready.
#[derive(Debug)]
pub enum StartError {
    /// The process could not be started.
    Spawn(std::io::Error),
    /// It closed its stderr (it exited) before its ready line.
    Exited,
    /// No ready line within the time given.
    Timeout(Duration),
    /// It became ready without logging a listening line for this service.
    NoAddress(&'static str),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(error) => write!(f, "cannot start flowscope: {error}"),
            StartError::Exited => f.write_str("flowscope exited before it became ready"),
            StartError::Timeout(waited) => {
                write!(f, "flowscope did not become ready within {waited:?}")
            }
            StartError::NoAddress(service) => {
                write!(f, "flowscope did not log a listening line for {service}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Adds `serve` on `data_dir` with every port on `127.0.0.1:0`, then `extra`, to `command`
/// (the binary, or a shell that execs it), with info logs and no colour.
pub fn serve_on_free_ports<'c>(
    command: &'c mut Command,
    data_dir: &Path,
    extra: &[&str],
) -> &'c mut Command {
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("FLOWSCOPE_LOG", "info")
        .env("NO_COLOR", "1")
}

/// Spawns `command` with stdout discarded and stderr read by a thread that hands every line
/// (colour codes removed) to `on_line`, for as long as the server runs, and waits up to
/// `timeout` for the ready line. On an error the child is killed and reaped; what it logged
/// has gone to `on_line`.
pub fn start_and_wait(
    mut command: Command,
    timeout: Duration,
    mut on_line: impl FnMut(String) + Send + 'static,
) -> Result<(Child, Ports), StartError> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(StartError::Spawn)?;
    let Some(stderr) = child.stderr.take() else {
        stop(child);
        return Err(StartError::Exited);
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut addrs = Vec::new();
        let mut announced = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let plain = strip_ansi(&line);
            if let Some(listening) = listening(&plain) {
                addrs.push(listening);
            }
            if !announced && plain.contains("flowscope is ready") {
                announced = true;
                let _ = ready_tx.send(Some(addrs.clone()));
            }
            on_line(plain);
        }
        if !announced {
            let _ = ready_tx.send(None);
        }
    });
    let addrs = match ready_rx.recv_timeout(timeout) {
        Ok(Some(addrs)) => addrs,
        Ok(None) => {
            stop(child);
            return Err(StartError::Exited);
        }
        Err(_) => {
            stop(child);
            return Err(StartError::Timeout(timeout));
        }
    };
    let find = |service: &'static str| {
        addrs
            .iter()
            .find(|(name, _)| name == service)
            .map(|(_, addr)| *addr)
            .ok_or(StartError::NoAddress(service))
    };
    let ports = match (find("otlp-grpc"), find("otlp-http"), find("api")) {
        (Ok(grpc), Ok(http), Ok(api)) => Ports { grpc, http, api },
        (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
            stop(child);
            return Err(error);
        }
    };
    Ok((child, ports))
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The service and address of a `listening service="api" addr=127.0.0.1:8080` line.
fn listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let service = field(line, "service=")?.trim_matches('"').to_string();
    let addr = field(line, "addr=")?.parse().ok()?;
    Some((service, addr))
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

/// `line` without ANSI escape sequences (colour codes).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_are_read_up_to_the_next_space() {
        let line = "2025-01-01T00:00:00Z  INFO flowscope::serve: listening service=\"api\" addr=127.0.0.1:8080";
        assert_eq!(field(line, "addr="), Some("127.0.0.1:8080"));
        assert_eq!(field(line, "service="), Some("\"api\""));
        assert_eq!(field(line, "port="), None);
        assert_eq!(
            listening(line),
            Some(("api".to_string(), SocketAddr::from(([127, 0, 0, 1], 8080))))
        );
    }

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m listening"),
            " INFO listening"
        );
    }
}
