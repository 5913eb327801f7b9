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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
