//! A PostgreSQL server of a test's own: `initdb` in a temporary directory, started on a free
//! loopback port with `pg_ctl`, stopped and started again at will (an outage), and removed
//! with the test. As root it runs as the `postgres` user (PostgreSQL refuses root).
//! `scripts/test` installs the server binaries; `pg_config --bindir` or Debian's
//! `/usr/lib/postgresql/*/bin` finds them.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
}

fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"));
    from_pg_config
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").exists())
        .expect("PostgreSQL's server binaries (initdb, pg_ctl): scripts/test installs them (apt-get install postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// A new cluster (superuser `flowscope`, trust on loopback), started.
    pub fn start() -> Self {
        let bindir = bindir();
        let dir = tempfile::Builder::new()
            .prefix("flowscope-pg-")
            .tempdir_in("/tmp")
            .expect("a temporary directory");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let port = super::ports::helper_port();
        let mut pg = Self {
            bindir,
            dir,
            port,
            running: false,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "flowscope",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg.resume();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `tool` of the server's binaries, as the `postgres` user when this runs as root.
    fn command(&self, tool: &str) -> Command {
        let program = self.bindir.join(tool);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bindir.join(tool);
        let output = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (again) on the same port and data.
    pub fn resume(&mut self) {
        let data = self.data();
        let socket_dir = self.dir.path().to_str().unwrap().to_string();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        self.running = true;
    }

    /// Stops the server at once (clients' connections are cut): an outage.
    pub fn stop(&mut self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        self.running = false;
    }

    /// The admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://flowscope@127.0.0.1:{}/postgres", self.port)
    }

    /// A new database `name` (created now) and its URL.
    pub fn database(&self, name: &str) -> String {
        ensure_database(&self.admin_url(), name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The URL of database `name` in the server `admin` names, created if missing; callable
/// from a test inside a runtime or not (the work runs on a thread of its own).
pub fn ensure_database(admin: &str, name: &str) -> String {
    let (admin, name) = (admin.to_string(), name.to_string());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(flowscope_query::metadata::ensure_database(&admin, &name))
    })
    .join()
    .expect("the database helper")
    .unwrap_or_else(|error| panic!("create the test's PostgreSQL database: {error}"))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
                .output();
        }
    }
}
