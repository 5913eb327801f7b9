//! The memory ceiling's shared parts: a byte budget for OTLP requests in flight, which both
//! receivers reserve from before they read or decode, and the RSS safety net's state.
//!
//! ```text
//!  request ──admit()──> Reservation ──grow(chunk)── while reading ──grow(decoded)── before decoding
//!     │ refused: RSS over the high-water mark, or the budget is spent ──> 503 / UNAVAILABLE
//!     └── dropped when the request is answered: its bytes go back to the budget
//! ```
//!
//! It lives here, next to the span schema, because the receivers (`collector`) take from it
//! and the status page (`web`) reads it, and neither may depend on the other.

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
}

impl MemoryBudget {
    /// A budget of `in_flight_limit` bytes for requests, refusing every new request while
    /// the sampled RSS is above `high_water` (0 turns the safety net off).
    pub fn new(memory_limit: usize, in_flight_limit: usize, high_water: usize) -> Self {
        Self {
            memory_limit,
            in_flight_limit,
            high_water,
            in_flight: AtomicUsize::new(0),
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

    /// Lets a new request in, holding nothing yet, or refuses it before a byte is read.
    pub fn admit(self: &Arc<Self>) -> Result<Reservation, Refusal> {
        let rss = self.rss.load(Ordering::Relaxed);
        if self.high_water > 0 && rss > self.high_water {
            self.refused_rss.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Rss {
                rss,
                high_water: self.high_water,
            });
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        if in_flight >= self.in_flight_limit {
            self.refused_in_flight.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::InFlight {
                in_flight,
                limit: self.in_flight_limit,
            });
        }
        Ok(Reservation {
            budget: self.clone(),
            bytes: 0,
        })
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
    fn the_safety_net_refuses_above_the_high_water_mark_until_rss_falls() {
        let budget = Arc::new(MemoryBudget::new(1000, 100, 900));
        budget.record_rss(901);
        assert_eq!(
            budget.admit().map(|r| r.bytes()),
            Err(Refusal::Rss {
                rss: 901,
                high_water: 900
            })
        );
        budget.record_rss(500);
        assert!(budget.admit().is_ok());
        let figures = budget.figures();
        assert_eq!((figures.peak_rss, figures.refused_rss), (901, 1));
    }

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tflowscope\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1024 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }
}
