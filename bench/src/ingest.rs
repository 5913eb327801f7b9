//! `flowscope-bench ingest`: how many spans per second and per server CPU-second the server
//! acknowledges durably, against how fast this machine can merely decode them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use flowscope_collector::{decode_protobuf, decode_protobuf_with_prost};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::report::{Report, millis, percentile, thousands};
use crate::send::{Protocol, send_all};
use crate::server::{self, DataDir, Server};
use crate::spans::{Encoded, Generator};
use flowscope_demo::send::Source;

/// Spans decoded for the decode-only figure (or all of them, if fewer).
const DECODE_SAMPLE_SPANS: u64 = 500_000;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The flowscope binary [default: the one next to this binary, else target-release/release/flowscope]
    #[arg(long)]
    server: Option<PathBuf>,
    /// grpc or http
    #[arg(long, default_value = "grpc")]
    protocol: Protocol,
    /// Spans to send in total
    #[arg(long, default_value_t = 2_000_000)]
    spans: u64,
    /// Spans per export request
    #[arg(long, default_value_t = 512)]
    batch: u64,
    /// Concurrent connections, each with one request in flight
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, value_enum, default_value_t = WalSync::Always)]
    wal_sync: WalSync,
    /// Data directory, which must be empty or absent [default: a temporary directory, removed at the end]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the temporary data directory
    #[arg(long)]
    keep: bool,
    /// rotel's `rotel-agent` binary (`pip install rotel`): the same requests are then also
    /// sent to rotel discarding them (blackhole exporter), and the costs compared
    #[arg(long)]
    rotel: Option<PathBuf>,
    /// A PostgreSQL database (postgres://…) for a cluster of two processes: an ingester and a
    /// receiver (`--roles`), the spans sent to the receiver; the server figures are then the
    /// two processes summed (the cost of routing, against a standalone run). A cluster's
    /// ingester needs object storage: set FLOWSCOPE_OBJECT_STORE and the AWS_* variables
    #[arg(long)]
    cluster_metadata: Option<String>,
    /// With --cluster-metadata: `split` is a receiver and an ingester (every span crosses
    /// loopback gRPC); `combined` is two nodes that each receive and ingest
    /// (`--roles receiver,ingester,querier`), the connections shared between them, so each
    /// takes its own partitions' parts in process and forwards the rest to the other
    #[arg(long, value_enum, default_value_t = ClusterLayout::Split)]
    cluster_layout: ClusterLayout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClusterLayout {
    Split,
    Combined,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WalSync {
    Always,
    Never,
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.spans == 0 || args.batch == 0 {
        bail!("--spans and --batch must be greater than zero");
    }
    let binary = server::resolve_binary(args.server.as_deref())?;
    let data_dir = DataDir::new(args.data_dir.as_deref(), args.keep)?;
    let generator = Generator {
        total_spans: args.spans,
        batch: args.batch,
        window_ns: 3_600 * 1_000_000_000,
    };

    eprintln!(
        "generating {} spans in {} requests of {} ...",
        thousands(args.spans),
        thousands(generator.requests()),
        args.batch
    );
    let started = Instant::now();
    let end_ns = server::now_ns();
    let requests: Vec<Encoded> = (0..generator.requests())
        .map(|index| generator.encoded(index, end_ns))
        .collect();
    let encoded_bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    eprintln!(
        "  generated in {:.1}s, {:.0} protobuf bytes per span",
        started.elapsed().as_secs_f64(),
        encoded_bytes as f64 / args.spans as f64
    );

    // The baseline keeps the definition every earlier run used: prost's generated types,
    // then `convert` to Arrow. The server's own decoder and prost alone are shown beside it.
    // It is measured before and after the server's run, and so is rotel: this shared
    // machine drifts by 10-20% within a minute, and the mean of both sides cancels a drift
    // that is steady over the run.
    let decode_before = decode_only(&requests, decode_protobuf_with_prost)?;
    eprintln!(
        "decode only (prost + convert, one thread): {} spans per CPU-second",
        thousands(decode_before as u64)
    );
    let prost_rate = decode_only(&requests, |body| {
        ExportTraceServiceRequest::decode(body)
            .map(|_| flowscope_collector::DecodedTraces::default())
            .map_err(|error| flowscope_collector::CollectorError::InvalidRequest(error.to_string()))
    })?;
    eprintln!(
        "prost decode alone into its generated types: {} spans per CPU-second",
        thousands(prost_rate as u64)
    );
    let server_decoder_rate = decode_only(&requests, decode_protobuf)?;
    eprintln!(
        "the server's decoder (decode_protobuf): {} spans per CPU-second",
        thousands(server_decoder_rate as u64)
    );

    let runtime = server::runtime()?;
    let rotel_before = match &args.rotel {
        Some(binary) => Some(rotel_discarding(binary, &runtime, requests.clone(), &args)?),
        None => None,
    };

    let wal_sync = match args.wal_sync {
        WalSync::Always => "always",
        WalSync::Never => "never",
    };
    let protocol = args.protocol.to_string();
    let (server, receiver) = match &args.cluster_metadata {
        None => (
            Server::start(&binary, data_dir.path(), &["--wal-sync", wal_sync])?,
            None,
        ),
        Some(url) => {
            if std::env::var_os("FLOWSCOPE_OBJECT_STORE").is_none() {
                bail!(
                    "--cluster-metadata: a cluster's ingester writes to object storage; set FLOWSCOPE_OBJECT_STORE=s3://bucket/prefix and the AWS_* variables (BENCHMARKS.md shows s3s-fs on loopback)"
                );
            }
            let (first, second, ingesters) = match args.cluster_layout {
                ClusterLayout::Split => ("ingester", "receiver", 1),
                ClusterLayout::Combined => {
                    ("receiver,ingester,querier", "receiver,ingester,querier", 2)
                }
            };
            let ingester = Server::start(
                &binary,
                data_dir.path(),
                &["--wal-sync", wal_sync, "--metadata", url, "--roles", first],
            )?;
            let receiver = Server::start(
                &binary,
                &data_dir.path().join("receiver"),
                &["--wal-sync", wal_sync, "--metadata", url, "--roles", second],
            )?;
            runtime.block_on(wait_for_partitions(&receiver, ingesters))?;
            eprintln!(
                "cluster ({:?}): pid {} ({second}) and pid {} ({first})",
                args.cluster_layout,
                receiver.pid(),
                ingester.pid()
            );
            (ingester, Some(receiver))
        }
    };
    let target = receiver.as_ref().unwrap_or(&server);
    let cluster_cpu = |server: &Server| -> anyhow::Result<f64> {
        Ok(server.cpu_seconds()?
            + match &receiver {
                Some(receiver) => receiver.cpu_seconds()?,
                None => 0.0,
            })
    };
    eprintln!(
        "sending to {} (pid {}) over {protocol} with {} connections, wal-sync {wal_sync} ...",
        binary.display(),
        server.pid(),
        args.connections
    );
    let server_cpu_before = cluster_cpu(&server)?;
    let receiver_cpu_before = match &receiver {
        Some(receiver) => receiver.cpu_seconds()?,
        None => 0.0,
    };
    let client_cpu_before = server::own_cpu_seconds()?;
    // Kept for the references measured after the server's run (`Bytes` clones share).
    let kept_requests = requests.clone();
    let source = Source::ready(requests);
    let sent = match (&receiver, args.cluster_layout) {
        (Some(receiver), ClusterLayout::Combined) => {
            // Half the requests (and connections) to each node, as a client's load
            // balancer would spread them.
            let (mut left, mut right) = (Vec::new(), Vec::new());
            for (index, request) in kept_requests.iter().enumerate() {
                if index % 2 == 0 {
                    left.push(request.clone());
                } else {
                    right.push(request.clone());
                }
            }
            drop(source);
            let half = (args.connections / 2).max(1);
            let (a, b) = runtime.block_on(async {
                tokio::join!(
                    send_all(
                        args.protocol,
                        &server,
                        Source::ready(left),
                        half,
                        args.spans / 2
                    ),
                    send_all(
                        args.protocol,
                        receiver,
                        Source::ready(right),
                        half,
                        args.spans / 2
                    ),
                )
            });
            both(a?, b?)
        }
        _ => runtime.block_on(send_all(
            args.protocol,
            target,
            source,
            args.connections,
            args.spans,
        ))?,
    };
    let server_cpu = cluster_cpu(&server)? - server_cpu_before;
    let receiver_cpu = match &receiver {
        Some(receiver) => receiver.cpu_seconds()? - receiver_cpu_before,
        None => 0.0,
    };
    let client_cpu = server::own_cpu_seconds()? - client_cpu_before;
    let peak_rss = server.peak_rss_bytes()?;
    let rss = server::memory_bytes(server.pid(), "VmRSS")?;

    let http = server::http_client();
    let counted = runtime.block_on(server.count(&http, "SELECT count(*) FROM spans"))?;
    let receiver_stopped = receiver.map(Server::stop).transpose()?;
    let stopped = server.stop()?;
    let (parquet_bytes, parquet_files) =
        server::dir_size(&data_dir.path().join("spans"), ".parquet")?;
    let (wal_bytes, wal_files) = server::dir_size(&data_dir.path().join("wal"), "")?;
    let decode_after = decode_only(&kept_requests, decode_protobuf_with_prost)?;
    eprintln!(
        "decode only again, after the server's run: {} spans per CPU-second",
        thousands(decode_after as u64)
    );
    let decode_rate = (decode_before + decode_after) / 2.0;

    let wall = sent.wall.as_secs_f64();
    let server_rate = sent.totals.spans_acked as f64 / server_cpu;
    let quantile = |p| percentile(&sent.latencies, p).map_or(0.0, millis);
    let mut report = Report::new("ingest");
    report.add("protocol", "protocol", protocol);
    report.add("wal_sync", "wal sync", wal_sync);
    report.add("connections", "connections", args.connections);
    report.add("batch", "spans per request", args.batch);
    report.add("spans_sent", "spans sent", args.spans);
    report.add("spans_acked", "spans acked", sent.totals.spans_acked);
    report.add(
        "spans_rejected",
        "spans rejected (partial success or for good)",
        sent.totals.spans_rejected,
    );
    report.add_refusals(&sent.totals);
    report.add_float("wall_seconds", "wall time (s)", wall, 2);
    report.add_float(
        "spans_per_second",
        "spans/s (wall)",
        sent.totals.spans_acked as f64 / wall,
        0,
    );
    report.add_float(
        "server_cpu_seconds",
        "server CPU while sending (s)",
        server_cpu,
        2,
    );
    if let Some(receiver_stopped) = &receiver_stopped {
        report.add_float(
            "receiver_cpu_seconds",
            match args.cluster_layout {
                ClusterLayout::Split => "of which the receiver (s)",
                ClusterLayout::Combined => "of which the second node (s)",
            },
            receiver_cpu,
            2,
        );
        report.add(
            "receiver_warnings",
            "receiver WARN lines",
            receiver_stopped.log.warnings,
        );
    }
    report.add_float(
        "server_cores",
        "server cores busy (CPU/wall)",
        server_cpu / wall,
        2,
    );
    report.add_float(
        "spans_per_server_cpu_second",
        "spans per server CPU-second",
        server_rate,
        0,
    );
    report.add_float(
        "client_cpu_seconds",
        "client CPU while sending (s)",
        client_cpu,
        2,
    );
    report.add_float("ack_p50_ms", "ack latency p50 (ms)", quantile(50.0), 2);
    report.add_float("ack_p99_ms", "ack latency p99 (ms)", quantile(99.0), 2);
    report.add_float("ack_max_ms", "ack latency max (ms)", quantile(100.0), 2);
    report.add_float(
        "server_peak_rss_mib",
        "server peak RSS, VmHWM (MiB)",
        mib(peak_rss),
        1,
    );
    report.add_float(
        "server_rss_after_send_mib",
        "server RSS when sending ended (MiB)",
        mib(rss),
        1,
    );
    report.add_float(
        "decode_only_spans_per_cpu_second",
        "decode only: spans per CPU-second (mean of both sides)",
        decode_rate,
        0,
    );
    report.add_float(
        "decode_only_before_spans_per_cpu_second",
        "decode only before the server's run",
        decode_before,
        0,
    );
    report.add_float(
        "decode_only_after_spans_per_cpu_second",
        "decode only after the server's run",
        decode_after,
        0,
    );
    report.add_float(
        "server_vs_decode_only",
        "server ÷ decode-only per CPU-second",
        server_rate / decode_rate,
        3,
    );
    report.add_float(
        "prost_decode_alone_spans_per_cpu_second",
        "prost decode alone (no Arrow): spans per CPU-second",
        prost_rate,
        0,
    );
    report.add_float(
        "server_decoder_spans_per_cpu_second",
        "the server's decoder (decode_protobuf): spans per CPU-second",
        server_decoder_rate,
        0,
    );
    if let (Some(binary), Some((before_rate, before_wall_rate))) = (&args.rotel, rotel_before) {
        let (after_rate, after_wall_rate) =
            rotel_discarding(binary, &runtime, kept_requests, &args)?;
        let rotel_rate = (before_rate + after_rate) / 2.0;
        let rotel_wall_rate = (before_wall_rate + after_wall_rate) / 2.0;
        report.add_float(
            "rotel_spans_per_cpu_second",
            "rotel (blackhole): spans per CPU-second (mean of both sides)",
            rotel_rate,
            0,
        );
        report.add_float(
            "rotel_before_spans_per_cpu_second",
            "rotel before the server's run",
            before_rate,
            0,
        );
        report.add_float(
            "rotel_after_spans_per_cpu_second",
            "rotel after the server's run",
            after_rate,
            0,
        );
        report.add_float(
            "rotel_spans_per_second",
            "rotel (blackhole): spans/s (wall)",
            rotel_wall_rate,
            0,
        );
        report.add_float(
            "server_vs_rotel",
            "server ÷ rotel per CPU-second",
            server_rate / rotel_rate,
            3,
        );
    }
    report.add("spans_counted", "SELECT count(*) FROM spans", counted);
    report.add_float(
        "shutdown_seconds",
        "SIGTERM to exit, final flush (s)",
        stopped.shutdown.as_secs_f64(),
        2,
    );
    report.add_float(
        "server_lifetime_cpu_seconds",
        "server CPU over its whole life (s)",
        stopped.lifetime_cpu_seconds,
        2,
    );
    report.add("parquet_files", "parquet files", parquet_files);
    report.add("parquet_bytes", "parquet bytes", parquet_bytes);
    report.add_float(
        "parquet_bytes_per_span",
        "parquet bytes per span",
        parquet_bytes as f64 / counted.max(1) as f64,
        1,
    );
    report.add_float(
        "protobuf_bytes_per_span",
        "protobuf bytes per span (wire)",
        encoded_bytes as f64 / args.spans as f64,
        1,
    );
    report.add("wal_files_after_stop", "wal files after stop", wal_files);
    report.add("wal_bytes_after_stop", "wal bytes after stop", wal_bytes);
    report.add("server_warnings", "server WARN lines", stopped.log.warnings);
    report.add("server_errors", "server ERROR lines", stopped.log.errors);
    report.print();
    data_dir.finish();

    for line in &stopped.log.notable {
        eprintln!("server: {line}");
    }
    if let Some(failure) = &sent.first_failure {
        eprintln!("first failure: {failure}");
    }
    if counted != sent.totals.spans_acked {
        bail!(
            "the server acknowledged {} spans but SELECT count(*) finds {}",
            sent.totals.spans_acked,
            counted
        );
    }
    Ok(())
}

/// Waits until the receiver's map has every partition held (the ingester took them all).
/// Waits until `ingesters` nodes hold the 64 partitions in equal shares.
async fn wait_for_partitions(receiver: &Server, ingesters: u64) -> anyhow::Result<()> {
    let client = server::http_client();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let url = format!("http://{}/api/cluster", receiver.api);
        let held: Vec<u64> = match server::get_json(&client, &url).await {
            Ok(cluster) => cluster["nodes"].as_array().map_or(Vec::new(), |nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n["partitions"].as_u64())
                    .filter(|held| *held > 0)
                    .collect()
            }),
            Err(_) => Vec::new(),
        };
        if held.len() as u64 == ingesters && held.iter().all(|held| *held == 64 / ingesters) {
            // The receiver reads the map every second.
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the ingesters did not share the partitions within 30 s: {held:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The same requests, same protocol and connections, to rotel discarding them: its spans per
/// CPU-second and per second of wall time.
fn rotel_discarding(
    binary: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    requests: Vec<Encoded>,
    args: &IngestArgs,
) -> anyhow::Result<(f64, f64)> {
    use flowscope_demo::send::{self as demo_send, Load, Target};
    let rotel = crate::rotel::Rotel::start(binary)?;
    let endpoint = match args.protocol {
        Protocol::Grpc => format!("http://{}", rotel.grpc),
        Protocol::Http => format!("http://{}", rotel.http),
    };
    eprintln!(
        "sending the same requests to rotel (pid {}, blackhole exporter) at {endpoint} ...",
        rotel.pid()
    );
    let target = Target::new(args.protocol, endpoint);
    let cpu_before = rotel.cpu_seconds()?;
    let sent = runtime.block_on(demo_send::send_all(
        &target,
        Source::ready(requests),
        &Load::new(args.connections),
        |_| {},
    ))?;
    let cpu = rotel.cpu_seconds()? - cpu_before;
    let acked = sent.totals.spans_acked;
    if acked != args.spans {
        bail!(
            "rotel acknowledged {acked} of {} spans ({:?})",
            args.spans,
            sent.first_failure
        );
    }
    Ok((acked as f64 / cpu, acked as f64 / sent.wall.as_secs_f64()))
}

/// Spans per CPU-second of `decode` on one thread. With `decode_protobuf_with_prost` (prost,
/// then conversion to Arrow) it is the decode-only baseline: the ceiling for a server that
/// also has to write, sync and flush what it decodes.
fn decode_only(
    requests: &[Encoded],
    decode: impl Fn(
        &[u8],
    )
        -> Result<flowscope_collector::DecodedTraces, flowscope_collector::CollectorError>
    + Sync,
) -> anyhow::Result<f64> {
    let mut sample = Vec::new();
    let mut sample_spans = 0;
    for request in requests {
        if sample_spans >= DECODE_SAMPLE_SPANS {
            break;
        }
        sample.push(request);
        sample_spans += request.spans;
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Warm the allocator and caches so the measurement is of the steady state.
                for request in sample.iter().take(10) {
                    decode(&request.body).context("a generated request does not decode")?;
                }
                let started = server::thread_cpu_seconds()?;
                for request in &sample {
                    let decoded =
                        decode(&request.body).context("a generated request does not decode")?;
                    if decoded.rejected_spans > 0 {
                        bail!(
                            "the generator made spans the server rejects: {}",
                            decoded.error_message
                        );
                    }
                }
                let cpu = server::thread_cpu_seconds()? - started;
                Ok(sample_spans as f64 / cpu.max(f64::EPSILON))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the decode thread panicked"))?
    })
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Two halves of one run sent at once: totals added, the wall time the longer one.
fn both(
    a: flowscope_demo::send::Sent,
    b: flowscope_demo::send::Sent,
) -> flowscope_demo::send::Sent {
    let (x, y) = (a.totals, b.totals);
    let totals = flowscope_demo::send::Totals {
        elapsed: x.elapsed.max(y.elapsed),
        requests_sent: x.requests_sent + y.requests_sent,
        requests_acked: x.requests_acked + y.requests_acked,
        requests_refused: x.requests_refused + y.requests_refused,
        retries: x.retries + y.retries,
        requests_rejected: x.requests_rejected + y.requests_rejected,
        requests_failed: x.requests_failed + y.requests_failed,
        spans_sent: x.spans_sent + y.spans_sent,
        spans_acked: x.spans_acked + y.spans_acked,
        spans_rejected: x.spans_rejected + y.spans_rejected,
        spans_failed: x.spans_failed + y.spans_failed,
    };
    let mut latencies = a.latencies;
    latencies.extend(b.latencies);
    latencies.sort_unstable();
    flowscope_demo::send::Sent {
        wall: a.wall.max(b.wall),
        totals,
        first_failure: a.first_failure.or(b.first_failure),
        latencies,
    }
}
