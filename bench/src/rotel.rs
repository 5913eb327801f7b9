//! rotel, a Rust OTLP collector, as the ingest peer: the same requests sent to it with its
//! `blackhole` exporter (receive, decode, batch, discard). What it spends per span is the
//! cost of an OTLP receiver that keeps nothing; flowscope also makes every span durable,
//! queryable and part of the graph. `pip install rotel` ships the binary as `rotel-agent`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowscope_demo::cpu;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `rotel-agent start --exporter blackhole`, killed on drop.
pub struct Rotel {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Rotel {
    pub fn start(binary: &Path) -> anyhow::Result<Self> {
        let (grpc, http) = (free_port()?, free_port()?);
        let child = Command::new(binary)
            .args(["start", "--exporter", "blackhole"])
            .arg("--otlp-grpc-endpoint")
            .arg(grpc.to_string())
            .arg("--otlp-http-endpoint")
            .arg(http.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (install it with `pip install rotel`; the binary is site-packages/rotel/rotel-agent)",
                    binary.display()
                )
            })?;
        let mut rotel = Self { child, grpc, http };
        let started = Instant::now();
        while TcpStream::connect(grpc).is_err() || TcpStream::connect(http).is_err() {
            if let Some(status) = rotel.child.try_wait()? {
                bail!("{} exited before listening: {status}", binary.display());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not listen on {grpc} and {http} within {READY_TIMEOUT:?}",
                    binary.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(rotel)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        Ok(cpu::process_cpu_seconds(self.pid())?)
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
