//! The memory ceiling's shared parts: a byte budget for OTLP requests in flight, which both
//! receivers reserve from before they read or decode; the ingest buffer, one budget for the
//! spans every tenant's store holds in memory; and the RSS safety net's state.
//!
//! ```text
//!  request ──admit()──> Reservation ──grow(chunk)── while reading ──grow(decoded)── before decoding
//!     │ refused: RSS over the high-water mark, or the budget is spent ──> 503 / UNAVAILABLE
//!     └── dropped when the request is answered: its bytes go back to the budget
//!  store.write ──take_buffered──> memtable ... Parquet flush ──release_buffered
//! ```
//!
//! It lives in `base`, below every crate, because the receivers (`collector`) and the
//! stores (`query`) take from it and the status page (`web`) reads it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long a client refused for memory should wait: long enough for requests in flight to
/// finish or a flush to free the memtable.
pub const RETRY_AFTER_IN_FLIGHT: Duration = Duration::from_secs(1);
pub const RETRY_AFTER_RSS: Duration = Duration::from_secs(2);

/// Why a request was refused before it was read or decoded. Both are retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Requests in flight already hold the whole in-flight budget.
    InFlight { in_flight: usize, limit: usize },
    /// The process's resident memory is above the high-water mark.
    Rss { rss: usize, high_water: usize },
}

impl Refusal {
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::InFlight { .. } => RETRY_AFTER_IN_FLIGHT,
            Refusal::Rss { .. } => RETRY_AFTER_RSS,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InFlight { in_flight, limit } => write!(
                f,
                "requests in flight hold {} of the {} MiB request budget",
                in_flight >> 20,
                limit >> 20
            ),
            Refusal::Rss { rss, high_water } => write!(
                f,
                "the process uses {} MiB, over its {} MiB high-water mark",
                rss >> 20,
                high_water >> 20
            ),
        }
    }
}

/// The in-flight request budget and the RSS safety net of one process.
#[derive(Debug)]
pub struct MemoryBudget {
    memory_limit: usize,
    in_flight_limit: usize,
    high_water: usize,
    in_flight: AtomicUsize,
    /// Requests admitted and not yet answered.
    requests: AtomicUsize,
    buffer_limit: usize,
    buffered: AtomicUsize,
    refused_buffer: AtomicU64,
    rss: AtomicUsize,
    peak_rss: AtomicUsize,
    refused_in_flight: AtomicU64,
    refused_rss: AtomicU64,
}

/// The budget's numbers, for `/api/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFigures {
    pub memory_limit: u64,
    pub high_water: u64,
    pub rss: u64,
    pub peak_rss: u64,
    pub in_flight_limit: u64,
    pub in_flight_bytes: u64,
    pub refused_in_flight: u64,
    pub refused_rss: u64,
    pub ingest_buffer_limit: u64,
    pub ingest_buffered_bytes: u64,
    pub refused_ingest_buffer: u64,
}

impl MemoryBudget {
    /// A budget of `in_flight_limit` bytes for requests; while the sampled RSS is above
    /// `high_water` (0 turns the safety net off) only one request is let in at a time.
    /// The ingest buffer is unlimited until [`MemoryBudget::with_ingest_buffer`].
    pub fn new(memory_limit: usize, in_flight_limit: usize, high_water: usize) -> Self {
        Self {
            memory_limit,
            in_flight_limit,
            high_water,
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            buffer_limit: usize::MAX,
            buffered: AtomicUsize::new(0),
            refused_buffer: AtomicU64::new(0),
            rss: AtomicUsize::new(0),
            peak_rss: AtomicUsize::new(0),
            refused_in_flight: AtomicU64::new(0),
            refused_rss: AtomicU64::new(0),
        }
    }

    /// No limits: for tests and embedders that do not care.
    pub fn unlimited() -> Self {
        Self::new(usize::MAX, usize::MAX, 0)
    }

    /// The same budget with `bytes` for the spans all stores hold in memory together.
    pub fn with_ingest_buffer(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// Lets a new request in, holding nothing yet, or refuses it before a byte is read.
    ///
    /// Above the RSS high-water mark a request is let in only when no other is in flight:
    /// the allocator may keep freed memory, so RSS can stay high with nothing to free, and
    /// refusing everything then would stop ingest for good. One request at a time still
    /// drains the store while growing memory by at most one request.
    pub fn admit(self: &Arc<Self>) -> Result<Reservation, Refusal> {
        let rss = self.rss.load(Ordering::Relaxed);
        let over_high_water = self.high_water > 0 && rss > self.high_water;
        if over_high_water {
            if self
                .requests
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                self.refused_rss.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Rss {
                    rss,
                    high_water: self.high_water,
                });
            }
        } else {
            self.requests.fetch_add(1, Ordering::SeqCst);
        }
        let reservation = Reservation {
            budget: self.clone(),
            bytes: 0,
        };
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        if in_flight >= self.in_flight_limit {
            self.refused_in_flight.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::InFlight {
                in_flight,
                limit: self.in_flight_limit,
            });
        }
        Ok(reservation)
    }

    /// Takes `bytes` of the ingest buffer for spans a store keeps in memory until they are
    /// in Parquet; refuses (with the bytes already held) when they do not fit.
    pub fn take_buffered(&self, bytes: usize) -> Result<(), usize> {
        let taken = self
            .buffered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= self.buffer_limit)
            });
        taken.map(|_| ()).inspect_err(|_| {
            self.refused_buffer.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Whether a store whose memtable holds `active_bytes` should flush it to Parquet now,
    /// before the ingest buffer fills and writes are refused: when it holds a quarter of
    /// the buffer, or a sixty-fourth while all stores together fill half of it.
    pub fn should_flush(&self, active_bytes: usize) -> bool {
        let limit = self.buffer_limit;
        limit != usize::MAX
            && (active_bytes >= limit / 4
                || (active_bytes >= limit / 64
                    && self.buffered.load(Ordering::Relaxed) >= limit / 2))
    }

    /// Counts `bytes` already in memory (spans replayed from the WAL) without refusing.
    pub fn force_buffered(&self, bytes: usize) {
        self.buffered.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Gives back ingest buffer bytes once their spans are in Parquet (or were refused).
    pub fn release_buffered(&self, bytes: usize) {
        let _ = self
            .buffered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Records a sample of the process's resident set size, in bytes.
    pub fn record_rss(&self, bytes: usize) {
        self.rss.store(bytes, Ordering::Relaxed);
        self.peak_rss.fetch_max(bytes, Ordering::Relaxed);
    }

    pub fn figures(&self) -> MemoryFigures {
        let limit = |value: usize| if value == usize::MAX { 0 } else { value as u64 };
        MemoryFigures {
            memory_limit: limit(self.memory_limit),
            high_water: self.high_water as u64,
            rss: self.rss.load(Ordering::Relaxed) as u64,
            peak_rss: self.peak_rss.load(Ordering::Relaxed) as u64,
            in_flight_limit: limit(self.in_flight_limit),
            in_flight_bytes: self.in_flight.load(Ordering::Relaxed) as u64,
            refused_in_flight: self.refused_in_flight.load(Ordering::Relaxed),
            refused_rss: self.refused_rss.load(Ordering::Relaxed),
            ingest_buffer_limit: limit(self.buffer_limit),
            ingest_buffered_bytes: self.buffered.load(Ordering::Relaxed) as u64,
            refused_ingest_buffer: self.refused_buffer.load(Ordering::Relaxed),
        }
    }

    /// Takes `bytes` if they fit under the limit; all or nothing.
    fn take(&self, bytes: usize) -> Result<(), Refusal> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= self.in_flight_limit)
            });
        match taken {
            Ok(_) => Ok(()),
            Err(in_flight) => {
                self.refused_in_flight.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::InFlight {
                    in_flight,
                    limit: self.in_flight_limit,
                })
            }
        }
    }
}

/// Bytes one request holds in the budget; they go back when it is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `more` bytes before they are allocated, or refuses the request.
    pub fn grow(&mut self, more: usize) -> Result<(), Refusal> {
        self.budget.take(more)?;
        self.bytes += more;
        Ok(())
    }

    /// Reserves up to `total` bytes in all, or refuses the request.
    pub fn grow_to(&mut self, total: usize) -> Result<(), Refusal> {
        match total.checked_sub(self.bytes) {
            Some(more) if more > 0 => self.grow(more),
            _ => Ok(()),
        }
    }

    /// Holds exactly `total` bytes from now on, without refusing: for memory already
    /// allocated (a decoded batch), which the budget must count whatever the limit says.
    pub fn set(&mut self, total: usize) {
        if total >= self.bytes {
            self.budget
                .in_flight
                .fetch_add(total - self.bytes, Ordering::SeqCst);
        } else {
            self.budget
                .in_flight
                .fetch_sub(self.bytes - total, Ordering::SeqCst);
        }
        self.bytes = total;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .in_flight
            .fetch_sub(self.bytes, Ordering::SeqCst);
        self.budget.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The resident set size in `/proc/<pid>/status` (`VmRSS:  1234 kB`), in bytes.
/// (`/proc/self/statm` counts pages, and the page size is not known without libc.)
pub fn parse_vm_rss(status: &str) -> Option<usize> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_all_or_nothing_and_come_back_on_drop() {
        let budget = Arc::new(MemoryBudget::new(1000, 100, 0));
        let mut a = budget.admit().expect("admitted");
        a.grow(60).expect("fits");
        let mut b = budget.admit().expect("admitted");
        assert_eq!(
            b.grow(41),
            Err(Refusal::InFlight {
                in_flight: 60,
                limit: 100
            })
        );
        b.grow(40).expect("fits exactly");
        assert!(matches!(budget.admit(), Err(Refusal::InFlight { .. })));
        drop(a);
        assert_eq!(budget.figures().in_flight_bytes, 40);
        b.grow_to(30).expect("already holds more");
        b.set(10);
        assert_eq!(budget.figures().in_flight_bytes, 10);
        drop(b);
        let figures = budget.figures();
        assert_eq!((figures.in_flight_bytes, figures.refused_in_flight), (0, 2));
    }

    #[test]
    fn set_counts_allocated_memory_even_over_the_limit() {
        let budget = Arc::new(MemoryBudget::new(1000, 100, 0));
        let mut a = budget.admit().expect("admitted");
        a.set(150);
        assert_eq!(budget.figures().in_flight_bytes, 150);
        assert!(budget.admit().is_err(), "the budget is spent");
        drop(a);
        assert!(budget.admit().is_ok());
    }

    #[test]
    fn above_the_high_water_mark_one_request_at_a_time_until_rss_falls() {
        let budget = Arc::new(MemoryBudget::new(1000, 100, 900));
        budget.record_rss(901);
        let alone = budget.admit().expect("nothing else in flight: let in");
        assert_eq!(
            budget.admit().map(|r| r.bytes()),
            Err(Refusal::Rss {
                rss: 901,
                high_water: 900
            })
        );
        drop(alone);
        let again = budget.admit().expect("alone again");
        budget.record_rss(500);
        let second = budget.admit().expect("below the mark: concurrent again");
        drop((again, second));
        let figures = budget.figures();
        assert_eq!((figures.peak_rss, figures.refused_rss), (901, 1));
    }

    #[test]
    fn the_ingest_buffer_is_one_budget_for_every_store() {
        let budget = MemoryBudget::unlimited().with_ingest_buffer(100);
        budget.take_buffered(60).expect("first store");
        assert_eq!(
            budget.take_buffered(41),
            Err(60),
            "a second store shares it"
        );
        budget.force_buffered(50);
        budget.release_buffered(110);
        budget.take_buffered(100).expect("all freed");
        let pressure = MemoryBudget::unlimited().with_ingest_buffer(128);
        assert!(pressure.should_flush(32) && !pressure.should_flush(31));
        pressure.force_buffered(64);
        assert!(pressure.should_flush(2) && !pressure.should_flush(1));
        assert!(!MemoryBudget::unlimited().should_flush(usize::MAX - 1));
        let figures = budget.figures();
        assert_eq!(
            (
                figures.ingest_buffer_limit,
                figures.ingest_buffered_bytes,
                figures.refused_ingest_buffer
            ),
            (100, 100, 1)
        );
    }

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tflowscope\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1024 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }
}
