//! `flowscope-bench`: on-demand benchmarks that start the real `flowscope` server and drive it
//! like production clients would.
//!
//! ```text
//!  spans.rs (generate + encode) ──> send.rs (N gRPC/HTTP connections) ──> flowscope serve
//!        │                                                                  │ server.rs: /proc, SIGTERM
//!        └──> decode_protobuf on one thread (the decode-only ceiling)       └──> /api/sql (query.rs)
//! ```
//!
//! `ingest` measures acknowledged spans per second and per server CPU-second; `query` loads
//! millions of spans and times typical SQL against them after a restart; `graph` times edge
//! inference, snapshots and loops in process, then `/api/graph` and ack-to-edge delay.

mod graph;
mod ingest;
mod query;
mod report;
mod rotel;
mod send;
mod server;
mod spans;
mod sustained;

use clap::Parser as _;

#[derive(Debug, clap::Parser)]
#[command(name = "flowscope-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Send spans flat out and measure throughput, CPU, latency, memory and bytes on disk
    Ingest(ingest::IngestArgs),
    /// Load spans spread over 24 hours, restart, and time typical queries
    Query(query::QueryArgs),
    /// Edge inference rate, memory per edge, snapshot and loop time, /api/graph latency, ack-to-edge delay
    Graph(graph::GraphArgs),
    /// Hold a steady rate for minutes and sample the server's RSS: does memory stay flat?
    Sustained(sustained::SustainedArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest(args) => ingest::run(args),
        Command::Query(args) => query::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Sustained(args) => sustained::run(args),
    }
}
