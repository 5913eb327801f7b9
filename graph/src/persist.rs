//! Buckets as bytes, so the statistics of windows past the horizon can be kept (by the
//! caller, on disk) instead of rebuilt from spans. The format is private to flowscope and
//! versioned by its magic; a reader refuses anything else.
//!
//! ```text
//!  "FSB1" | start_ns i64 | edges: n, (edge key, stats)* | services: n, (name, stats)*
//!        | trace loops: n, (cycle, count)*          all integers little-endian
//! ```

use std::sync::Arc;

use crate::sketch::LatencySketch;
use crate::types::{EdgeKind, NodeKind};
use crate::window::{Bucket, EdgeKey, EdgeStats, NodeKey, NodeStats};

const MAGIC: &[u8; 4] = b"FSB1";

/// One bucket that left the live graph's horizon: its start and its statistics.
#[derive(Debug, Clone)]
pub struct StoredBucket {
    pub(crate) start_ns: i64,
    pub(crate) bucket: Arc<Bucket>,
}

impl StoredBucket {
    pub fn start_ns(&self) -> i64 {
        self.start_ns
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.bucket.edges.len() * 96);
        out.extend_from_slice(MAGIC);
        put_i64(&mut out, self.start_ns);
        put_len(&mut out, self.bucket.edges.len());
        for (key, stats) in &self.bucket.edges {
            put_node(&mut out, &key.source);
            put_node(&mut out, &key.target);
            out.push(match key.kind {
                EdgeKind::Sync => 0,
                EdgeKind::Async => 1,
            });
            for value in [
                stats.calls,
                stats.errors,
                stats.bytes,
                stats.amplified_calls,
                stats.callers,
            ] {
                put_u64(&mut out, value);
            }
            stats.latency.encode(&mut out);
        }
        put_len(&mut out, self.bucket.services.len());
        for (name, stats) in &self.bucket.services {
            put_str(&mut out, name);
            put_u64(&mut out, stats.calls_in);
            put_u64(&mut out, stats.errors_in);
            stats.latency.encode(&mut out);
        }
        put_len(&mut out, self.bucket.trace_loops.len());
        for (cycle, count) in &self.bucket.trace_loops {
            put_len(&mut out, cycle.len());
            for node in cycle {
                put_node(&mut out, node);
            }
            put_u64(&mut out, *count);
        }
        out
    }

    /// The bucket `encode` wrote, or what is wrong with `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut input = Reader { bytes, at: 0 };
        if input.take(4)? != MAGIC {
            return Err("not a flowscope graph bucket (bad magic)".into());
        }
        let start_ns = input.i64()?;
        let mut bucket = Bucket::default();
        for _ in 0..input.len()? {
            let source = input.node()?;
            let target = input.node()?;
            let kind = match input.u8()? {
                0 => EdgeKind::Sync,
                1 => EdgeKind::Async,
                other => return Err(format!("unknown edge kind {other}")),
            };
            let stats = EdgeStats {
                calls: input.u64()?,
                errors: input.u64()?,
                bytes: input.u64()?,
                amplified_calls: input.u64()?,
                callers: input.u64()?,
                latency: LatencySketch::decode(&mut input)?,
            };
            bucket.edges.insert(
                EdgeKey {
                    source,
                    target,
                    kind,
                },
                stats,
            );
        }
        for _ in 0..input.len()? {
            let name: Arc<str> = Arc::from(input.str()?);
            let stats = NodeStats {
                calls_in: input.u64()?,
                errors_in: input.u64()?,
                latency: LatencySketch::decode(&mut input)?,
            };
            bucket.services.insert(name, stats);
        }
        for _ in 0..input.len()? {
            let cycle = (0..input.len()?)
                .map(|_| input.node())
                .collect::<Result<Vec<_>, _>>()?;
            let count = input.u64()?;
            bucket.trace_loops.insert(cycle, count);
        }
        if input.at != bytes.len() {
            return Err(format!("{} bytes after the bucket", bytes.len() - input.at));
        }
        Ok(Self {
            start_ns,
            bucket: Arc::new(bucket),
        })
    }
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_node(out: &mut Vec<u8>, node: &NodeKey) {
    out.push(match node.kind {
        NodeKind::Service => 0,
        NodeKind::Database => 1,
        NodeKind::Queue => 2,
        NodeKind::External => 3,
        // Groups exist only in answers, never in a bucket.
        NodeKind::Group => 4,
    });
    put_str(out, &node.name);
}

/// Reads what the `put_*` functions wrote, refusing to run past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count of items that follow: each item takes at least one byte, so a count above
    /// the bytes left is corruption, not a reason to allocate.
    pub fn len(&mut self) -> Result<usize, String> {
        let len = self.u32()? as usize;
        if len > self.bytes.len() - self.at {
            return Err(format!("a count of {len} at byte {} is too large", self.at));
        }
        Ok(len)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| e.to_string())
    }

    fn node(&mut self) -> Result<NodeKey, String> {
        let kind = match self.u8()? {
            0 => NodeKind::Service,
            1 => NodeKind::Database,
            2 => NodeKind::Queue,
            3 => NodeKind::External,
            other => return Err(format!("unknown node kind {other}")),
        };
        Ok(NodeKey {
            kind,
            name: Arc::from(self.str()?),
        })
    }
}
