//! `flowscope loadgen`: sends a simulated system's traces to an OTLP endpoint at a target rate
//! or flat out, and reports what was acknowledged, refused and lost, and what it cost the
//! client in CPU.
//!
//! ```text
//!  generator thread: Simulator::request(now) ──> Target::encode ──bounded channel──┐
//!                                                                                 v
//!  current-thread runtime: send_all (N connections, paced) ──> server; progress line every second
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use flowscope_base::clock::now_ns;
use flowscope_base::parse_duration;
use flowscope_demo::send::{
    self, Encoding, Load, Protocol, Sent, Source, Target, Totals, thousands,
};
use flowscope_demo::{Error, Simulator, Topology, cpu};
use serde_json::json;

/// Traces in the request that measures a topology's spans per trace.
const SAMPLE_TRACES: u32 = 200;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const WHAT_TO_DO: &str = "is flowscope running? start it with `flowscope serve`";

/// Flags of `flowscope loadgen`.
#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// OTLP endpoint [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http]
    #[arg(long)]
    endpoint: Option<String>,
    /// A preset (shop, city), generated:N, or the path of a topology file (see demo/README.md)
    #[arg(long, default_value = "shop")]
    topology: String,
    /// grpc or http
    #[arg(long, default_value = "grpc")]
    protocol: Protocol,
    /// protobuf or json (json only over http)
    #[arg(long, default_value = "protobuf")]
    encoding: Encoding,
    /// Compress requests with gzip
    #[arg(long)]
    gzip: bool,
    /// Concurrent connections, each with one request in flight
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Spans per second to send; 0 or absent sends flat out
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send, e.g. 30s, 5m
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Spans per request, roughly (whole traces are never split)
    #[arg(long, default_value_t = 512)]
    batch_spans: u64,
    /// Seed of the simulation [default: from the clock, so that runs do not repeat ids]
    #[arg(long)]
    seed: Option<u64>,
    /// Start the topology's scheduled incidents when the run starts, instead of on the clock
    #[arg(long)]
    incident_now: bool,
    /// Print the final report as one JSON object instead of a table
    #[arg(long)]
    json: bool,
    /// An ingest token for a server that checks tokens (sent as `authorization: Bearer`)
    #[arg(long, env = "FLOWSCOPE_LOADGEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The checked plan of a run.
struct Plan {
    target: Target,
    topology: Topology,
    load: Load,
    duration: Duration,
    batch_spans: u64,
    seed: u64,
    json: bool,
}

fn plan(args: LoadgenArgs) -> anyhow::Result<Plan> {
    let endpoint = args.endpoint.unwrap_or_else(|| match args.protocol {
        Protocol::Grpc => "http://127.0.0.1:4317".into(),
        Protocol::Http => "http://127.0.0.1:4318".into(),
    });
    let target = Target {
        protocol: args.protocol,
        endpoint,
        encoding: args.encoding,
        gzip: args.gzip,
        token: args.token,
    };
    target.check()?;
    let duration =
        parse_duration(&args.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    if duration.is_zero() {
        bail!("--duration must be above zero, e.g. 30s");
    }
    if args.connections == 0 || args.batch_spans == 0 {
        bail!("--connections and --batch-spans must be at least 1");
    }
    let rate = match args.rate {
        Some(rate) if !(rate.is_finite() && rate >= 0.0) => {
            bail!("--rate is spans per second, 0 or more; got {rate}")
        }
        Some(rate) if rate > 0.0 => Some(rate),
        _ => None,
    };
    let mut topology = Topology::load(&args.topology)?;
    if args.incident_now {
        if topology.incident_count() == 0 {
            bail!(
                "--incident-now: topology '{}' schedules no incidents (see demo/README.md for the [[incidents]] table)",
                args.topology
            );
        }
        topology.start_incidents_at(now_ns());
    }
    let mut load = Load::new(args.connections);
    load.spans_per_second = rate;
    load.duration = Some(duration);
    load.progress_every = PROGRESS_EVERY;
    Ok(Plan {
        target,
        topology,
        load,
        duration,
        batch_spans: args.batch_spans,
        seed: args.seed.unwrap_or_else(|| now_ns() as u64),
        json: args.json,
    })
}

pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let plan = plan(args)?;
    let traces_per_request = traces_per_request(&plan);
    eprintln!(
        "loadgen: {} over {} ({}{}) to {} with {} connections, {} for {}, about {} spans per request",
        plan.topology.name,
        plan.target.protocol,
        plan.target.encoding,
        if plan.target.gzip { ", gzip" } else { "" },
        plan.target.endpoint,
        plan.load.connections,
        plan.load
            .spans_per_second
            .map_or("flat out".to_string(), |rate| format!(
                "{} spans/s",
                thousands(rate as u64)
            )),
        flowscope_base::format_duration(plan.duration),
        plan.batch_spans,
    );

    // A client that only moves encoded bytes needs one thread; generation has its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (requests, receiver) = tokio::sync::mpsc::channel(2 * plan.load.connections);
    let generator = {
        let mut simulator = Simulator::new(plan.topology.clone(), plan.seed);
        let target = plan.target.clone();
        std::thread::Builder::new()
            .name("loadgen-generator".into())
            .spawn(move || -> Result<(), Error> {
                loop {
                    let request = simulator.request(now_ns(), traces_per_request);
                    if requests.blocking_send(target.encode(&request)?).is_err() {
                        return Ok(());
                    }
                }
            })
            .context("cannot start the generator thread")?
    };

    let cpu_before = cpu::own_cpu_seconds()?;
    let stop = plan.load.stop.clone();
    let sent = runtime.block_on(async {
        tokio::spawn(stop_on_ctrl_c(stop));
        send::send_all(
            &plan.target,
            Source::generated(receiver),
            &plan.load,
            progress_line(),
        )
        .await
    });
    let cpu_seconds = cpu::own_cpu_seconds()? - cpu_before;
    let sent = match sent {
        Ok(sent) => sent,
        Err(error @ Error::Unreachable { .. }) => bail!("{error}; {WHAT_TO_DO}"),
        Err(error) => return Err(error.into()),
    };
    match generator.join() {
        Ok(result) => result.context("generating requests failed")?,
        Err(_) => bail!("the generator thread panicked"),
    }

    let report = report(&plan, &sent, cpu_seconds);
    if plan.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    if let Some(failure) = &sent.first_failure {
        eprintln!("first failure: {failure}");
    }
    let refused_token = sent.first_failure.as_deref().is_some_and(|failure| {
        ["Unauthenticated", "PermissionDenied", " 401", " 403"]
            .iter()
            .any(|code| failure.contains(code))
    });
    if sent.totals.spans_acked == 0 && refused_token {
        bail!(
            "{} checks tokens and refused ours; pass an ingest token with --token (or FLOWSCOPE_LOADGEN_TOKEN)",
            plan.target.endpoint
        );
    }
    if sent.totals.spans_acked == 0 {
        bail!(
            "nothing was acknowledged by {}; {WHAT_TO_DO}",
            plan.target.endpoint
        );
    }
    Ok(())
}

/// Root traces per request for about `--batch-spans` spans, measured on a sample, since a
/// trace's size depends on the topology, its chances and its incidents.
fn traces_per_request(plan: &Plan) -> u32 {
    let mut sample = Simulator::new(plan.topology.clone(), plan.seed ^ 0x5A5A);
    let spans = send::span_count(&sample.request(now_ns(), SAMPLE_TRACES));
    let per_trace = (spans as f64 / f64::from(SAMPLE_TRACES)).max(1.0);
    (plan.batch_spans as f64 / per_trace)
        .round()
        .clamp(1.0, 100_000.0) as u32
}

async fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("loadgen: stopping (Ctrl-C); waiting for the answers in flight");
        stop.store(true, Ordering::Relaxed);
    }
}

fn progress_line() -> impl FnMut(&Totals) + Send + 'static {
    let mut last = (0u64, Duration::ZERO);
    move |totals: &Totals| {
        let seconds = (totals.elapsed - last.1).as_secs_f64().max(f64::EPSILON);
        let rate = (totals.spans_acked - last.0) as f64 / seconds;
        eprintln!(
            "  {:>5.1}s  sent {} spans  acked {}  refused {}  rejected {}  failed {}  {} spans/s",
            totals.elapsed.as_secs_f64(),
            thousands(totals.spans_sent),
            thousands(totals.spans_acked),
            totals.requests_refused,
            totals.requests_rejected,
            totals.requests_failed,
            thousands(rate as u64),
        );
        last = (totals.spans_acked, totals.elapsed);
    }
}

/// The final report as JSON; the table is printed from the same object.
fn report(plan: &Plan, sent: &Sent, cpu_seconds: f64) -> serde_json::Value {
    let totals = &sent.totals;
    // A paced run ends at its duration even when its last request went out a little earlier.
    let seconds = sent.wall.max(plan.duration).as_secs_f64();
    let latency_ms = |p| {
        send::percentile(&sent.latencies, p).map_or(0.0, |d| round(d.as_secs_f64() * 1000.0, 2))
    };
    json!({
        "topology": plan.topology.name,
        "endpoint": plan.target.endpoint,
        "protocol": plan.target.protocol.to_string(),
        "encoding": plan.target.encoding.to_string(),
        "gzip": plan.target.gzip,
        "connections": plan.load.connections,
        "target_spans_per_second": plan.load.spans_per_second,
        "seconds": round(seconds, 2),
        "requests_sent": totals.requests_sent,
        "requests_acked": totals.requests_acked,
        "requests_refused_retryable": totals.requests_refused,
        "retries": totals.retries,
        "requests_rejected": totals.requests_rejected,
        "requests_failed": totals.requests_failed,
        "spans_sent": totals.spans_sent,
        "spans_acked": totals.spans_acked,
        "spans_rejected": totals.spans_rejected,
        "spans_failed": totals.spans_failed,
        "spans_per_second": (totals.spans_acked as f64 / seconds).round() as u64,
        "ack_p50_ms": latency_ms(50.0),
        "ack_p99_ms": latency_ms(99.0),
        "client_cpu_seconds": round(cpu_seconds, 2),
        "spans_per_client_cpu_second": if cpu_seconds > 0.0 {
            json!((totals.spans_acked as f64 / cpu_seconds).round() as u64)
        } else {
            serde_json::Value::Null
        },
    })
}

/// The rows of the human table: `(JSON key, label)`, in order.
const TABLE: [(&str, &str); 19] = [
    ("topology", "topology"),
    ("endpoint", "endpoint"),
    ("protocol", "protocol"),
    ("encoding", "encoding"),
    ("seconds", "seconds"),
    ("requests_sent", "requests sent"),
    ("requests_acked", "requests acknowledged"),
    ("requests_refused_retryable", "requests refused (retryable)"),
    ("retries", "retries"),
    ("requests_rejected", "requests rejected for good"),
    ("requests_failed", "requests failed (no answer)"),
    ("spans_sent", "spans sent"),
    ("spans_acked", "spans acknowledged"),
    ("spans_rejected", "spans rejected"),
    ("spans_per_second", "achieved spans/s"),
    ("ack_p50_ms", "ack latency p50 (ms)"),
    ("ack_p99_ms", "ack latency p99 (ms)"),
    ("client_cpu_seconds", "client CPU (s)"),
    ("spans_per_client_cpu_second", "spans per client CPU-second"),
];

fn print_table(report: &serde_json::Value) {
    let width = TABLE
        .iter()
        .map(|(_, label)| label.len())
        .max()
        .unwrap_or(0);
    for (key, label) in TABLE {
        let value = &report[key];
        let text = match (value.as_u64(), value.as_str()) {
            (Some(whole), _) => thousands(whole),
            (None, Some(text)) => text.to_string(),
            _ if value.is_null() => "-".to_string(),
            _ => value.to_string(),
        };
        println!("  {label:<width$}  {text}");
    }
    if report["gzip"].as_bool() == Some(true) {
        println!("  {:<width$}  yes", "gzip");
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
