//! `flowscope-bench sustained`: a steady rate for minutes, with the server's RSS sampled at a
//! fixed period, to show that memory stays flat under load the server can take.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use flowscope_demo::send::{self as demo_send, Load, Source, Target};
use tokio::sync::mpsc;

use crate::ingest::mib;
use crate::report::{Report, millis, percentile, thousands};
use crate::send::Protocol;
use crate::server::{self, DataDir, Server, memory_bytes};
use crate::spans::{Encoded, Generator};

const BATCH: u64 = 512;

#[derive(Debug, clap::Args)]
pub struct SustainedArgs {
    /// The flowscope binary [default: the one next to this binary, else target-release/release/flowscope]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Spans per second to hold (80% of what `ingest` measured is the figure)
    #[arg(long)]
    rate: f64,
    /// How long to hold it, e.g. 10m
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// How often the server's RSS is sampled, e.g. 10s
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    sample: Duration,
    /// Concurrent connections
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Data directory, which must be empty or absent [default: a temporary directory, removed at the end]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the temporary data directory
    #[arg(long)]
    keep: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    flowscope_base::parse_duration(text).map_err(|e| e.to_string())
}

pub fn run(args: SustainedArgs) -> anyhow::Result<()> {
    if args.rate.is_nan() || args.rate <= 0.0 || args.duration.is_zero() || args.sample.is_zero() {
        bail!("--rate, --duration and --sample must be greater than zero");
    }
    let binary = server::resolve_binary(args.server.as_deref())?;
    let data_dir = DataDir::new(args.data_dir.as_deref(), args.keep)?;
    let total = (args.rate * args.duration.as_secs_f64()) as u64 + BATCH;
    let generator = Generator {
        total_spans: total,
        batch: BATCH,
        window_ns: 1_000_000_000,
    };
    let runtime = server::runtime()?;
    let server = Server::start(&binary, data_dir.path(), &[])?;
    eprintln!(
        "holding {} spans/s for {:?} over gRPC with {} connections to {} (pid {}), RSS every {:?} ...",
        thousands(args.rate as u64),
        args.duration,
        args.connections,
        binary.display(),
        server.pid(),
        args.sample
    );
    let (requests, receiver) = mpsc::channel::<Encoded>(4 * args.connections);
    let producer = std::thread::spawn(move || {
        for index in 0..generator.requests() {
            if requests
                .blocking_send(generator.encoded(index, server::now_ns()))
                .is_err()
            {
                break;
            }
        }
    });

    // (seconds since start, RSS bytes, spans acked so far)
    let samples: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
    let pid = server.pid();
    let recorded = samples.clone();
    let mut next_sample = Duration::ZERO;
    let period = args.sample;
    let progress = move |totals: &demo_send::Totals| {
        if totals.elapsed < next_sample {
            return;
        }
        next_sample += period;
        let rss = memory_bytes(pid, "VmRSS").unwrap_or(0);
        eprintln!(
            "  {:>6.0}s  RSS {:>6} MiB  {} spans acked  {} refused  {} failed",
            totals.elapsed.as_secs_f64(),
            rss >> 20,
            thousands(totals.spans_acked),
            totals.requests_refused,
            totals.requests_failed
        );
        if let Ok(mut samples) = recorded.lock() {
            samples.push((totals.elapsed.as_secs_f64(), rss, totals.spans_acked));
        }
    };
    let mut load = Load::new(args.connections);
    load.spans_per_second = Some(args.rate);
    load.duration = Some(args.duration);
    load.progress_every = Duration::from_secs(1);
    let target = Target::new(Protocol::Grpc, format!("http://{}", server.grpc));
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let sent = runtime.block_on(demo_send::send_all(
        &target,
        Source::generated(receiver),
        &load,
        progress,
    ))?;
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = server.cpu_seconds()? - cpu_before;
    let peak_rss = server.peak_rss_bytes()?;
    drop(producer);

    let http = server::http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let counted = runtime.block_on(server.count(&http, "SELECT count(*) FROM spans"))?;
        if counted == sent.totals.spans_acked || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stopped = server.stop()?;

    let samples = samples
        .lock()
        .map_err(|_| anyhow::anyhow!("the sample list was poisoned"))?
        .clone();
    // The first minute is warm-up (buffers filling to their steady size); flat means the
    // second half holds no more than the first.
    let steady: Vec<&(f64, u64, u64)> = samples.iter().filter(|s| s.0 >= 60.0).collect();
    let half = steady.len() / 2;
    let mean = |part: &[&(f64, u64, u64)]| {
        part.iter().map(|s| s.1 as f64).sum::<f64>() / part.len().max(1) as f64
    };
    let (first, second) = (mean(&steady[..half]), mean(&steady[half..]));

    let mut report = Report::new("sustained");
    report.add_float("target_spans_per_second", "target spans/s", args.rate, 0);
    report.add_float(
        "spans_per_second",
        "achieved spans/s (acked, wall)",
        sent.totals.spans_acked as f64 / wall,
        0,
    );
    report.add_float("seconds", "seconds", wall, 0);
    report.add("spans_acked", "spans acked", sent.totals.spans_acked);
    report.add("spans_counted", "SELECT count(*) FROM spans", counted);
    report.add_refusals(&sent.totals);
    report.add_float(
        "server_cores",
        "server cores busy (CPU/wall)",
        server_cpu / wall,
        2,
    );
    report.add_float(
        "ack_p99_ms",
        "ack latency p99 (ms)",
        percentile(&sent.latencies, 99.0).map_or(0.0, millis),
        1,
    );
    report.add_float("peak_rss_mib", "server peak RSS (MiB)", mib(peak_rss), 1);
    let (low, high) = steady
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    report.add_float(
        "steady_rss_min_mib",
        "RSS after the first minute: min (MiB)",
        mib(low.min(high)),
        1,
    );
    report.add_float(
        "steady_rss_max_mib",
        "RSS after the first minute: max (MiB)",
        mib(high),
        1,
    );
    report.add_float(
        "steady_rss_first_half_mib",
        "RSS, first half of the rest: mean (MiB)",
        mib(first as u64),
        1,
    );
    report.add_float(
        "steady_rss_second_half_mib",
        "RSS, second half: mean (MiB)",
        mib(second as u64),
        1,
    );
    report.add(
        "rss_samples_mib",
        "RSS samples (MiB)",
        samples
            .iter()
            .map(|s| (s.1 >> 20).to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    report.add("server_warnings", "server WARN lines", stopped.log.warnings);
    report.add("server_errors", "server ERROR lines", stopped.log.errors);
    report.print();
    data_dir.finish();
    if counted != sent.totals.spans_acked {
        bail!(
            "the server acknowledged {} spans but SELECT count(*) finds {counted}",
            sent.totals.spans_acked
        );
    }
    Ok(())
}
