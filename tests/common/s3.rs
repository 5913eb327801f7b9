//! Real S3 servers on loopback for the object-storage tests: `s3s-fs` (S3 over a folder)
//! and `moto_server`, each on a free port with its own state; `scripts/test` installs both.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "flowscope";
const ACCESS_KEY: &str = "flowscope-test";
const SECRET_KEY: &str = "flowscope-test-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3sFs,
    Moto,
}

/// A running S3 server with the bucket [`BUCKET`] created.
pub struct S3 {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The folder s3s-fs serves (objects are files under `<root>/<bucket>/`).
    pub root: Option<PathBuf>,
    child: Option<Child>,
}

impl S3 {
    /// Starts `kind` with its state under `dir`, and creates the bucket.
    pub fn start(kind: Kind, dir: &Path) -> Self {
        Self::start_at(kind, dir.join("s3"))
    }

    /// Starts `kind` with its state (s3s-fs: its folder) at `root`, and creates the bucket.
    pub fn start_at(kind: Kind, root: PathBuf) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], super::ports::helper_port()));
        let root = (kind == Kind::S3sFs).then_some(root);
        let mut s3 = Self {
            kind,
            addr,
            root,
            child: None,
        };
        s3.resume();
        match kind {
            Kind::S3sFs => {}
            Kind::Moto => {
                // moto takes an unsigned CreateBucket.
                let status = reqwest::blocking::Client::new()
                    .put(format!("http://{addr}/{BUCKET}"))
                    .send()
                    .expect("CreateBucket on moto")
                    .status();
                assert!(status.is_success(), "CreateBucket: {status}");
            }
        }
        s3
    }

    /// Starts the server again on the same port and state (s3s-fs: the same folder).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.addr.port().to_string();
        let mut command = match self.kind {
            Kind::S3sFs => {
                let root = self.root.as_ref().expect("s3s-fs has a folder");
                std::fs::create_dir_all(root.join(BUCKET)).expect("the bucket's folder");
                let mut command = Command::new("s3s-fs");
                command
                    .args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(root);
                command
            }
            Kind::Moto => {
                let mut command = Command::new("moto_server");
                command.args(["-H", "127.0.0.1", "-p", &port]);
                command
            }
        };
        let log = std::env::temp_dir().join(format!("flowscope-test-s3-{port}.log"));
        let stderr = std::fs::File::create(&log).expect("the S3 server's log file");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {:?} ({e}); scripts/test installs it",
                    self.kind
                )
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "{:?} on {} exited ({status}) before it listened:\n{said}",
                    self.kind, self.addr
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not listen on {}",
                self.kind,
                self.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
    }

    /// Stops the server (SIGKILL): the bucket is unreachable until [`S3::resume`].
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The environment a client of this server needs: the standard `AWS_*` variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }

    /// The keys of the objects under `prefix`, read from the server (s3s-fs: its folder;
    /// moto: an unsigned ListObjectsV2, which moto takes).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = match self.kind {
            Kind::S3sFs => {
                let bucket = self.root.as_ref().expect("folder").join(BUCKET);
                let mut found = Vec::new();
                collect(&bucket, &bucket, &mut found);
                found
            }
            Kind::Moto => {
                let body = reqwest::blocking::get(format!(
                    "http://{}/{BUCKET}?list-type=2&prefix={prefix}",
                    self.addr
                ))
                .expect("ListObjectsV2")
                .text()
                .expect("XML");
                body.split("<Key>")
                    .skip(1)
                    .filter_map(|rest| rest.split("</Key>").next())
                    .map(str::to_string)
                    .collect()
            }
        };
        keys.retain(|k| k.starts_with(prefix));
        keys.sort();
        keys
    }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(base, &path, out);
        } else if let Ok(relative) = path.strip_prefix(base) {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.pause();
    }
}
