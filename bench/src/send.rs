//! The benchmarks' way into the shared load client (`flowscope_demo::send`): protobuf over
//! the server's own ports, flat out until the requests run out, with a progress line that
//! also shows the server's memory.

use std::time::Instant;

use flowscope_demo::send::{self, Load, Sent, Source, Target};

pub use flowscope_demo::send::Protocol;

use crate::report::thousands;
use crate::server::{Server, memory_bytes};

/// Sends everything `source` yields over `connections` connections and waits for the acks.
pub async fn send_all(
    protocol: Protocol,
    server: &Server,
    source: Source,
    connections: usize,
    expected_spans: u64,
) -> anyhow::Result<Sent> {
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", server.grpc),
        Protocol::Http => format!("http://{}", server.http),
    };
    let target = Target::new(protocol, endpoint);
    let pid = server.pid();
    let mut last = (0, Instant::now());
    let progress = move |totals: &send::Totals| {
        let now = Instant::now();
        let recent = (totals.spans_acked - last.0) as f64 / (now - last.1).as_secs_f64();
        let average = totals.spans_acked as f64 / totals.elapsed.as_secs_f64();
        let rss = memory_bytes(pid, "VmRSS").map_or(0, |bytes| bytes >> 20);
        eprintln!(
            "  {:>6.1}s  {} of {} spans acked  {}/s now  {}/s average  {} refused  {} failed  server RSS {} MiB",
            totals.elapsed.as_secs_f64(),
            thousands(totals.spans_acked),
            thousands(expected_spans),
            thousands(recent as u64),
            thousands(average as u64),
            totals.requests_refused,
            totals.requests_failed,
            thousands(rss),
        );
        last = (totals.spans_acked, now);
    };
    Ok(send::send_all(&target, source, &Load::new(connections), progress).await?)
}
