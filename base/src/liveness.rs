//! Which background stages are alive and how many errors each has survived: one registry
//! per process, shared by the stores, the graph stages, the alert tasks and the watchdog,
//! read by `/healthz`, `/api/status` and `/metrics`.
//!
//! A stage holds a [`StageGuard`] for as long as it runs; the guard's `Drop` marks it
//! stopped, so a stage that returns early and one that panics (the guard is dropped while
//! unwinding) both count. Once the process is shutting down ([`Liveness::shutting_down`]),
//! stages ending is expected and nothing is marked. In `base` because every crate may depend
//! on it and none of the stages may depend on another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The kinds of background stage. Per-tenant stages (a store's WAL writer and flusher, a
/// graph stage) share their kind's counters: the figures are the process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The RSS sampler (`/proc/self/status`).
    RssWatchdog,
    /// A store's WAL writer thread.
    WalWriter,
    /// A store's Parquet flusher thread.
    Flusher,
    /// A tenant's graph stage thread.
    Graph,
    /// Writes the graph buckets trimmed at the horizon to disk (runs on the graph stage).
    GraphKeeper,
    /// The alert scheduler task.
    AlertScheduler,
    /// The webhook delivery worker task.
    WebhookDelivery,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::RssWatchdog,
        Stage::WalWriter,
        Stage::Flusher,
        Stage::Graph,
        Stage::GraphKeeper,
        Stage::AlertScheduler,
        Stage::WebhookDelivery,
    ];

    /// The stage's name, as `/healthz` reports it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::RssWatchdog => "rss_watchdog",
            Stage::WalWriter => "wal_writer",
            Stage::Flusher => "flusher",
            Stage::Graph => "graph",
            Stage::GraphKeeper => "graph_keeper",
            Stage::AlertScheduler => "alert_scheduler",
            Stage::WebhookDelivery => "webhook_delivery",
        }
    }

    /// The key of its error counter in `/api/status` (`flowscope_process_<key>_total`).
    pub fn errors_key(self) -> &'static str {
        match self {
            Stage::RssWatchdog => "rss_watchdog_errors",
            Stage::WalWriter => "wal_writer_errors",
            Stage::Flusher => "flusher_errors",
            Stage::Graph => "graph_errors",
            Stage::GraphKeeper => "graph_keeper_errors",
            Stage::AlertScheduler => "alert_scheduler_errors",
            Stage::WebhookDelivery => "webhook_delivery_errors",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The registry: per kind of stage, errors survived and instances that stopped while the
/// process ran.
#[derive(Debug, Default)]
pub struct Liveness {
    errors: [AtomicU64; Stage::ALL.len()],
    stopped: [AtomicU64; Stage::ALL.len()],
    shutting_down: AtomicBool,
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a running stage; keep the guard for as long as the stage runs.
    pub fn start(self: &Arc<Self>, stage: Stage) -> StageGuard {
        StageGuard {
            liveness: self.clone(),
            stage,
        }
    }

    /// Counts one error `stage` survived (logged by the stage itself).
    pub fn error(&self, stage: Stage) {
        self.errors[stage.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Errors `stage` has survived since start.
    pub fn errors(&self, stage: Stage) -> u64 {
        self.errors[stage.index()].load(Ordering::Relaxed)
    }

    /// From now on stages end because they are told to: no longer a failure.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The kinds of stage of which some instance stopped while the process ran.
    pub fn stopped(&self) -> Vec<Stage> {
        Stage::ALL
            .into_iter()
            .filter(|stage| self.stopped[stage.index()].load(Ordering::SeqCst) > 0)
            .collect()
    }

    /// Instances of every kind that stopped while the process ran.
    pub fn stopped_count(&self) -> u64 {
        self.stopped
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .sum()
    }
}

/// Held by a running stage; dropping it (a return or a panic) before shutdown marks the
/// stage stopped.
#[derive(Debug)]
pub struct StageGuard {
    liveness: Arc<Liveness>,
    stage: Stage,
}

impl StageGuard {
    /// Counts one error the stage survived.
    pub fn error(&self) {
        self.liveness.error(self.stage);
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if self.liveness.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        // A panic is printed by the panic hook and a stage that returns logs why; `model`
        // has no logging crate.
        self.liveness.stopped[self.stage.index()].fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_that_returns_or_panics_before_shutdown_is_stopped_and_after_is_not() {
        let liveness = Liveness::new();
        let guard = liveness.start(Stage::Graph);
        guard.error();
        assert_eq!(liveness.errors(Stage::Graph), 1);
        assert!(liveness.stopped().is_empty());
        drop(guard);
        assert_eq!(liveness.stopped(), vec![Stage::Graph]);

        let panicking = liveness.clone();
        let result = std::thread::spawn(move || {
            let _guard = panicking.start(Stage::Flusher);
            panic!("a stage's bug");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(liveness.stopped(), vec![Stage::Flusher, Stage::Graph]);

        liveness.shutting_down();
        drop(liveness.start(Stage::WalWriter));
        assert_eq!(liveness.stopped_count(), 2);
    }
}
