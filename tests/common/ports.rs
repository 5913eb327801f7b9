//! Ports for the helper servers the tests start (S3 servers, PostgreSQL).
//!
//! A port taken with `bind(127.0.0.1:0)` and released is in the kernel's ephemeral range,
//! which it hands to the next `bind(:0)` of any process: a flowscope server of a parallel
//! test can take it in the seconds a Python or PostgreSQL server needs to start, and the
//! helper then fails to bind while the wait for its port connects to someone else's. So
//! the helpers' ports come from below the ephemeral range, never twice in one process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range the helpers choose from.
const SPAN: u32 = 8_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port that is free now, outside the kernel's ephemeral range, and not handed
/// out before by this process.
pub fn helper_port() -> u16 {
    let low = ephemeral_low().saturating_sub(1);
    let base = low.saturating_sub(SPAN).max(1024);
    let span = low - base;
    // Test binaries run one after another, each with its own pid: start where this pid
    // points, so that two binaries (or two runs) rarely walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2_654_435_761)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = (base + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {base}..{low}");
}

/// The low end of `net.ipv4.ip_local_port_range` (32768 where it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
