//! The live dependency graph: which service calls which, through which queue, to which
//! database, how often, how fast, how badly, and which loops the flow goes round.
//!
//! ```text
//!  span batch (Arrow, storage schema)
//!      │ ingest(batch, now)
//!      ▼
//!  spans.rs ── the columns inference needs, row by row
//!      │
//!      ▼
//!  pairing store (live.rs) ── CLIENT+SERVER, PRODUCER+CONSUMER (by parent or link),
//!      │  either order; a half waits until its trace is idle for the TTL
//!      │                                  advance(now) ──> unpaired CLIENT -> database/external
//!      ▼                                                   per-trace loops, amplification
//!  time buckets (window.rs) ── per edge and node: calls, errors, latency sketch (sketch.rs),
//!      │                       bytes; trimmed to the horizon, handed out by take_trimmed
//!      │                       (persist.rs encodes them for the caller to keep)
//!      ▼ snapshot(from, to)                 element_series(windows, element) (figures.rs):
//!  Snapshot { nodes, edges, loops (loops.rs:   one node's or edge's figures per window,
//!             SCCs, elementary cycles) }       straight from the buckets
//!      │
//!      └──> diff(before, after, ratio) / delta(previous, next)  (diff.rs)
//! ```
//!
//! **Invariant:** graph knows nothing of tokio, I/O or HTTP; time is always passed in
//! (the workspace test `tests/architecture.rs` checks the dependency tree).
//!
//! **Invariant:** any permutation and any batching of the same spans, all arriving within the
//! pairing TTL, give the same [`Snapshot`] once [`LiveGraph::advance`] has passed the TTL
//! (the property test in `live_tests.rs`).
//!
//! # Inference rules
//! - **sync**: a CLIENT span and a SERVER span whose parent it is give an edge client service
//!   -> server service (latency: the CLIENT's duration; error when either is ERROR; time: the
//!   CLIENT's start). A CLIENT and SERVER of the same service give a self-loop: a service
//!   calling itself over the network. A SERVER whose parent is a non-CLIENT span of another
//!   service gives an edge parent service -> server service (the SERVER's duration and start).
//!   Each SERVER span is at most one call.
//! - **async**: a PRODUCER with `messaging.destination.name` gives producer service -> queue
//!   at once. A CONSUMER gives queue -> consumer service, the queue being its own destination,
//!   else the destination of each PRODUCER it has as parent or links to; latency is consumer
//!   start - first producer start when a producer is known, else the consumer's duration.
//!   A producer without a destination gives producer service -> consumer service.
//! - **virtual nodes**: a CLIENT with `db.system` is a database call at once (databases send
//!   no SERVER spans; a SERVER span under such a CLIENT adds no second call). Any other CLIENT
//!   without a SERVER child when its trace is finalized calls an external node named from
//!   `peer.service`, `server.address`, `db.name` / `db.namespace`; with no name it only counts
//!   as `unplaced`.
//! - **names**: a queue, database or external node whose name is also another node's in the
//!   same window is shown as `"<kind>:<name>"`; services keep their names.
//! - **payload**: `messaging.message.body.size`, `http.request.body.size` and
//!   `http.response.body.size` of the calling span (else of the called span) add to `bytes`.
//! - **per-trace loops and amplification** are computed when a trace is finalized, from its
//!   span tree. A CONSUMER placed after PRODUCER spans of other traces (by span link)
//!   continues the paths that reached them, so a loop through a queue whose consumer starts a
//!   trace of its own is counted in the consumer's trace, in the bucket of the span where it
//!   closed. A trace counts each loop once: a batch consumer that calls back once is one flow
//!   that came back, however many producers its batch links to. Traces are finalized in
//!   flow order (earliest span start, then trace id), a link is followed only forward in it,
//!   and a trace whose linked producers' traces are still pending waits for them (at most
//!   their idle time plus the TTL); a span keeps at most 8 distinct paths, the smallest.
//!   Amplification is calls per calling span: the CLIENT's or PRODUCER's parent, or the
//!   PRODUCER itself for its consumers (fan-out).
//!
//! # Time
//! Edges appear as soon as both halves of a call are present; only a CLIENT without a SERVER
//! (other than a database call) and a CONSUMER whose producer never comes wait for the TTL.
//! Amplification and per-trace loops are counted when a trace is finalized, so in a live
//! window they lag by the TTL. A span arriving more than the TTL after the rest of its trace
//! went quiet is treated as a new trace and may not pair.
//!
//! # Memory
//! A pending span costs about 300 bytes (a 160-byte entry in its trace's list with the
//! list's slack, and its share of the trace's own entry and bookkeeping): the default bound of 500,000
//! pending spans is about 150 MB. An edge costs, in every bucket it has calls in, about
//! 250 bytes (a 160-byte hash-table slot with slack) plus its latency sketch: 8 bytes per
//! distinct latency bin while it uses fewer than 16, then 4 bytes per bin between its fastest
//! and slowest call (about 1 KB for calls spread over 1 ms to 100 ms). A busy edge kept for
//! the default hour of 10-second buckets is therefore up to about 450 KB: for 100,000 busy
//! edges, widen the bucket or shorten the horizon. [`LiveGraph::approximate_memory_bytes`]
//! gives the current figure.

/// The hash maps the graph stage touches several times per span (the pairing store's
/// traces, the buckets' edges and services): foldhash, seeded per map, instead of SipHash,
/// which was 5% of the whole server's CPU under full ingest.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

mod attributes;
mod diff;
mod figures;
mod filter;
mod live;
mod loops;
mod persist;
mod reach;
mod sketch;
mod spans;
mod trace_paths;
mod types;
mod window;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod test_support;

pub use attributes::{NODE_ATTRIBUTE_KEYS, NodeAttributes};
pub use diff::{
    ERROR_RATE_FLOOR, EdgeChange, GraphDelta, GraphDiff, LATENCY_FLOOR_MS, MIN_CALLS, delta, diff,
};
pub use figures::{Element, Figures, element_series};
pub use filter::{
    DEFAULT_MAX_EDGES, DEFAULT_MAX_NODES, Direction, FilterError, Filtered, Focus, GraphFilter,
    GroupBy, Rank, filter, group_id,
};
pub use live::{LiveGraph, MergedWindow, Window};
pub use loops::{MAX_CYCLES_PER_COMPONENT, feedback_loops, feedback_loops_searched};
pub use persist::StoredBucket;
pub use reach::{GraphPath, MAX_PATHS, Reach, blast_radius, dependencies, paths};
pub use sketch::{LatencySketch, RELATIVE_ACCURACY};
pub use types::{
    Edge, EdgeKind, FeedbackLoop, GraphConfig, GraphCounters, Health, HealthLevel, Node, NodeGroup,
    NodeKind, Snapshot,
};
pub use window::Around;
