//! The `flowscope` binary: command line, configuration, and the wiring of every crate.
//!
//! ```text
//!  flowscope serve ──> config (flags > env > TOML file > defaults)
//!      ├── bind every port, then create and lock the data directory (data_dir.rs)
//!      ├── SpanStore::open (replays the WAL before the servers start)
//!      ├── listen: connection caps and timeouts on every port
//!      ├── OTLP/gRPC  :4317 ─┐
//!      ├── OTLP/HTTP  :4318 ─┴─> StoreSink ──> SpanStore
//!      ├── API        :8080 ──> SqlEngine ──> SpanStore
//!      └── --demo: flowscope_demo::run ──> its own OTLP/gRPC port
//!  flowscope loadgen ──> flowscope_demo: Simulator ──> send (N connections) ──> any OTLP endpoint
//! ```

mod config;
mod data_dir;
mod listen;
mod loadgen;
mod pipeline;
mod serve;

use clap::{Parser, Subcommand};
use config::LogFormat;

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

/// glibc's malloc settings for a server that must stay under `--memory-limit`, scaled to it:
/// - two arenas instead of eight per core (each keeps the memory freed in it);
/// - a fixed mmap threshold, so freed large buffers go back to the system instead of raising
///   the threshold and staying in an arena: a 1024th of the limit, from 512 KiB to 4 MiB;
/// - a trim threshold eight times that, the free memory an arena may keep at its top.
///
/// Measured under overload with a 256 MiB limit (`tests/overload.rs`): resident memory
/// settled at 270 MiB with the defaults; peak 211-216 MiB with a 128 KiB threshold, 236 MiB
/// with 512 KiB, 249 MiB with 1 MiB. At full ingest (`flowscope-bench ingest`, 4 GiB limit,
/// BENCHMARKS.md) 128 KiB made every 512-span request's buffers fresh pages to map and zero
/// (102k spans per server CPU-second against 118-130k with 512 KiB or 1 MiB); at 512 KiB
/// with glibc's 128 KiB trim threshold the flusher's Parquet pages and column chunks were
/// still mapped, zeroed and returned on every flush (270k page faults per 2M spans, 5% of
/// the CPU); 4 MiB and 32 MiB there left 110-135k, the first touches of its memory.
#[cfg(target_os = "linux")]
fn malloc_settings(memory_limit: Option<usize>) -> [(&'static str, usize); 3] {
    const MIN_MMAP_THRESHOLD: usize = 512 << 10;
    const MAX_MMAP_THRESHOLD: usize = 4 << 20;
    let mmap_threshold = memory_limit.map_or(MIN_MMAP_THRESHOLD, |limit| {
        (limit / 1024).clamp(MIN_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)
    });
    [
        ("MALLOC_ARENA_MAX", 2),
        ("MALLOC_MMAP_THRESHOLD_", mmap_threshold),
        ("MALLOC_TRIM_THRESHOLD_", 8 * mmap_threshold),
    ]
}

/// glibc reads its malloc settings from the environment only at start, and setting
/// variables in a running process is unsafe, so `serve` starts itself again with them
/// (same process id); if that fails it carries on with the defaults. Settings the user
/// gave are kept.
#[cfg(target_os = "linux")]
fn reexec_with_malloc_settings(memory_limit: Option<usize>) {
    use std::os::unix::process::CommandExt as _;
    let settings = malloc_settings(memory_limit);
    if settings
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
    for (name, value) in settings {
        if std::env::var_os(name).is_none() {
            command.env(name, value.to_string());
        }
    }
    let error = command.exec();
    eprintln!("flowscope: cannot restart with malloc settings ({error}); using the defaults");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(target_os = "linux")]
    if let Command::Serve(args) = &cli.command {
        reexec_with_malloc_settings(args.memory_limit());
    }
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format(),
        Command::Loadgen(_) => LogFormat::Text,
    };
    start_logging(log_format);
    let result = match cli.command {
        Command::Serve(args) => config::ServeConfig::resolve(*args).and_then(serve::run),
        Command::Loadgen(args) => loadgen::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            match log_format {
                // A log shipper reading JSON lines gets the reason as one of them.
                LogFormat::Json => {
                    tracing::error!(error = %format!("{error:#}"), "flowscope stopped")
                }
                LogFormat::Text => eprintln!("flowscope: {error:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The logger on stderr, filtered by `FLOWSCOPE_LOG` (default `info`). Colour codes only go
/// to a terminal, and not when `NO_COLOR` is set (no-color.org): in a file or a pipe to a
/// log collector they are noise.
fn start_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let logger = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
            logger.with_ansi(colour).init();
        }
        // The event's fields at the top level beside `level` and `message`, as log shippers
        // index them; JSON has no colour.
        LogFormat::Json => logger.json().flatten_event(true).with_ansi(false).init(),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::malloc_settings;

    #[test]
    fn malloc_settings_scale_with_the_memory_limit() {
        let mmap = |limit| malloc_settings(limit)[1].1;
        // The overload test's 256 MiB keeps the 512 KiB it was measured with.
        assert_eq!(mmap(Some(256 << 20)), 512 << 10);
        assert_eq!(mmap(None), 512 << 10);
        assert_eq!(mmap(Some(2 << 30)), 2 << 20);
        assert_eq!(mmap(Some(4 << 30)), 4 << 20);
        assert_eq!(mmap(Some(64 << 30)), 4 << 20);
        for limit in [None, Some(64 << 20), Some(4 << 30)] {
            let [arenas, (_, mmap), (name, trim)] = malloc_settings(limit);
            assert_eq!(arenas, ("MALLOC_ARENA_MAX", 2));
            assert_eq!((name, trim), ("MALLOC_TRIM_THRESHOLD_", 8 * mmap));
        }
    }
}
