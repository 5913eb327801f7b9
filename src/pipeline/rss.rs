//! The RSS watchdog: the memory budget's safety net, fed from the kernel's own count.

use std::ops::ControlFlow;
use std::time::Duration;

use flowscope_base::liveness::StageGuard;
use flowscope_base::memory::{self, MemoryBudget};

/// How often the watchdog samples the process's resident memory.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between attempts while /proc/self/status cannot be read.
const RSS_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The RSS safety net: samples /proc/self/status into the budget, which refuses requests
/// while the process is above its high-water mark. It runs on a thread of its own
/// (`pipeline::open` starts it), so a busy runtime cannot delay the samples it exists to take.
pub fn run(budget: &MemoryBudget, guard: &StageGuard) {
    watch_rss(
        budget,
        guard,
        || std::fs::read_to_string("/proc/self/status"),
        |wait| {
            std::thread::sleep(wait);
            ControlFlow::Continue(())
        },
    );
}

/// The watchdog's loop, with the reading and the waiting passed in. A failed read (no
/// descriptor left, say) is logged when it starts and when it ends, counted every time, and
/// retried after a growing wait: the safety net is back as soon as the file can be read.
fn watch_rss(
    budget: &MemoryBudget,
    guard: &StageGuard,
    mut read: impl FnMut() -> std::io::Result<String>,
    mut sleep: impl FnMut(Duration) -> ControlFlow<()>,
) {
    let mut over = false;
    let mut failures = 0u64;
    loop {
        let sampled = read()
            .map_err(|error| error.to_string())
            .and_then(|status| {
                memory::parse_vm_rss(&status).ok_or_else(|| "no VmRSS line".to_string())
            });
        let wait = match sampled {
            Ok(rss) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        "reading /proc/self/status again: the RSS safety net is back"
                    );
                    failures = 0;
                }
                record_rss(budget, rss, &mut over);
                RSS_SAMPLE_EVERY
            }
            Err(error) => {
                guard.error();
                if failures == 0 {
                    tracing::warn!(%error, "cannot read /proc/self/status: the RSS safety net is off until it can; retrying");
                }
                failures += 1;
                // 100 ms, 200 ms, ... up to 2 s.
                RSS_SAMPLE_EVERY
                    .saturating_mul(1 << failures.min(5))
                    .min(RSS_MAX_BACKOFF)
            }
        };
        if sleep(wait).is_break() {
            return;
        }
    }
}

fn record_rss(budget: &MemoryBudget, rss: usize, over: &mut bool) {
    budget.record_rss(rss);
    let high_water = budget.figures().high_water as usize;
    if (rss > high_water) != *over {
        *over = rss > high_water;
        if *over {
            tracing::warn!(
                rss_mib = rss >> 20,
                high_water_mib = high_water >> 20,
                "memory above its high-water mark: one request at a time until it falls"
            );
        } else {
            tracing::info!(rss_mib = rss >> 20, "memory back under its high-water mark");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_base::liveness::{Liveness, Stage};

    fn status(rss_kib: usize) -> std::io::Result<String> {
        Ok(format!("Name:\tflowscope\nVmRSS:\t{rss_kib} kB\n"))
    }

    #[test]
    fn the_rss_watchdog_goes_on_after_a_failed_read_and_backs_off_while_failing() {
        let budget = MemoryBudget::new(1 << 30, 1 << 20, 0);
        let liveness = Liveness::new();
        let guard = liveness.start(Stage::RssWatchdog);
        // One good read, three failed ones (no descriptor left), then good ones again.
        let mut reads = vec![
            status(1000),
            Err(std::io::Error::other("too many open files")),
            Err(std::io::Error::other("too many open files")),
            Ok("Name:\tflowscope\n".to_string()),
            status(2000),
            status(3000),
        ]
        .into_iter();
        let mut waits = Vec::new();
        let mut rss_seen = Vec::new();
        watch_rss(
            &budget,
            &guard,
            || reads.next().unwrap_or_else(|| status(3000)),
            |wait| {
                waits.push(wait);
                rss_seen.push(budget.figures().rss);
                if waits.len() == 6 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        assert_eq!(
            rss_seen,
            [1000u64, 1000, 1000, 1000, 2000, 3000].map(|kib| kib * 1024)
        );
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(100), ms(100)]
        );
        assert_eq!(liveness.errors(Stage::RssWatchdog), 3);
        assert!(liveness.stopped().is_empty());
    }
}
