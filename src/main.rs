//! The `flowscope` binary: command line, configuration, and the wiring of every crate.
//!
//! ```text
//!  flowscope serve ──> config (flags > env > TOML file > defaults)
//!      ├── SpanStore::open (replays the WAL before anything listens)
//!      ├── OTLP/gRPC  :4317 ─┐
//!      ├── OTLP/HTTP  :4318 ─┴─> StoreSink ──> SpanStore
//!      ├── API        :8080 ──> SqlEngine ──> SpanStore
//!      └── --demo: flowscope_demo::run ──> its own OTLP/gRPC port
//!  flowscope loadgen ──> flowscope_demo: Simulator ──> send (N connections) ──> any OTLP endpoint
//! ```

mod config;
mod graph_stage;
mod loadgen;
mod serve;

use clap::{Parser, Subcommand};

/// flowscope: system-wide flow observability. OTLP traces in; a live dependency graph,
/// SQL and alerts out.
#[derive(Debug, Parser)]
#[command(name = "flowscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, the span store, the SQL API.
    Serve(Box<config::ServeArgs>),
    /// Send a simulated system's traces to an OTLP endpoint and report what was acknowledged.
    Loadgen(Box<loadgen::LoadgenArgs>),
}

/// glibc's malloc settings for a server that must stay under `--memory-limit`: two arenas
/// instead of eight per core (each keeps the memory freed in it), and a fixed mmap threshold
/// so freed large buffers (request bodies, big Arrow batches) go back to the system instead
/// of raising the threshold and staying in an arena. Measured under overload with a 256 MiB
/// limit (`tests/overload.rs`): resident memory settled at 270 MiB with the defaults; peak
/// 211-216 MiB with a 128 KiB threshold, 236 MiB with 512 KiB, 249 MiB with 1 MiB. At full
/// ingest (`flowscope-bench ingest`, BENCHMARKS.md) 128 KiB made every 512-span request's
/// buffers fresh pages to map and zero: 102k spans per server CPU-second against 118-130k
/// with 512 KiB or 1 MiB. 512 KiB keeps both.
const MALLOC_SETTINGS: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "2"),
    ("MALLOC_MMAP_THRESHOLD_", "524288"),
];

/// glibc reads its malloc settings from the environment only at start, and setting
/// variables in a running process is unsafe, so `serve` starts itself again with them
/// (same process id); if that fails it carries on with the defaults. Settings the user
/// gave are kept.
#[cfg(target_os = "linux")]
fn reexec_with_malloc_settings() {
    use std::os::unix::process::CommandExt as _;
    if MALLOC_SETTINGS
        .iter()
        .all(|(name, _)| std::env::var_os(name).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for (name, value) in MALLOC_SETTINGS {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    let error = command.exec();
    eprintln!("flowscope: cannot restart with malloc settings ({error}); using the defaults");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(target_os = "linux")]
    if matches!(cli.command, Command::Serve(_)) {
        reexec_with_malloc_settings();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => config::ServeConfig::resolve(*args).and_then(serve::run),
        Command::Loadgen(args) => loadgen::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flowscope: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
