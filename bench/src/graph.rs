//! `flowscope-bench graph`: edge inference rate and memory per edge of the live graph in
//! process, snapshot and feedback-loop time at 10,000 services, then `/api/graph` latency and
//! the delay from an ack to the edge showing up against the real server.
//!
//! ```text
//!  Topology (services, edges) ──> GenSpan pairs ──> Arrow batches ──> LiveGraph (in process)
//!                                        └──────> OTLP requests ──> send.rs ──> flowscope serve
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowscope_graph::{
    GraphConfig, LiveGraph, MergedWindow, feedback_loops, feedback_loops_searched,
};
use flowscope_model::{SpanBatchBuilder, SpanRecord};
use flowscope_query::graph::health::{self, BaselineFigures, Objectives};
use flowscope_query::graph::incidents;
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use serde_json::Value;

use crate::ingest::mib;
use crate::report::{Report, millis, percentile, thousands};
use crate::send::{Protocol, send_all};
use crate::server::{self, DataDir, HttpClient, Server};
use crate::spans::{Encoded, mix};
use flowscope_demo::send::Source;

/// Spans per batch, in process and per export request.
const BATCH: usize = 512;
/// Runs of each timed read, of which the median is reported.
const RUNS: usize = 5;
/// The window the UI shows by default.
const LIVE_WINDOW_NS: i64 = 15 * 60 * 1_000_000_000;
/// Bulk spans start in `[now - 2 min - spread, now - 2 min)` (`--spread`, 10 minutes by
/// default: inside the live window), outside the one-minute window the ack-to-edge probe
/// polls, so that poll stays cheap.
const SPREAD_END_AGO_NS: i64 = 2 * 60 * 1_000_000_000;
const POLL_EVERY: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The flowscope binary [default: the one next to this binary, else target-release/release/flowscope]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Spans in total (CLIENT/SERVER pairs, so rounded down to an even number)
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    #[arg(long, default_value_t = 10_000)]
    services: u64,
    /// Distinct directed edges; a multiple of --services, each service calling the same number
    #[arg(long, default_value_t = 100_000)]
    edges: u64,
    /// Ack-to-edge probes against the server
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Only the in-process measurements
    #[arg(long)]
    no_server: bool,
    /// How far back the bulk spans spread (before the last two minutes). Longer than 15
    /// minutes gives health a baseline to judge the live window against, as a running
    /// system has
    #[arg(long, default_value = "10m", value_parser = parse_spread)]
    spread: i64,
}

fn parse_spread(text: &str) -> Result<i64, String> {
    let spread = flowscope_base::parse_duration(text)?;
    i64::try_from(spread.as_nanos())
        .ok()
        .filter(|ns| *ns > 0)
        .ok_or_else(|| format!("--spread must be a positive duration such as `10m`, not `{text}`"))
}

pub fn run(args: GraphArgs) -> anyhow::Result<()> {
    let topology = Topology::new(args.services, args.edges, args.spread)?;
    let total_spans = args.spans / 2 * 2;
    if total_spans == 0 {
        bail!("--spans must be at least 2");
    }
    let mut report = Report::new("graph");
    report.add("spans", "spans", total_spans);
    report.add("services", "services", args.services);
    report.add("edges_generated", "distinct edges generated", args.edges);

    let expected_edges = in_process(&topology, total_spans, &mut report)?;
    if !args.no_server {
        against_server(&args, &topology, total_spans, expected_edges, &mut report)?;
    }
    report.print();
    Ok(())
}

/// Items 1 and 2: ingest, advance, memory, snapshot and loops, all on this thread.
fn in_process(topology: &Topology, total_spans: u64, report: &mut Report) -> anyhow::Result<u64> {
    let now = now_ns();
    eprintln!(
        "building {} spans into Arrow batches of {BATCH} ...",
        thousands(total_spans)
    );
    let spans = topology.spans(total_spans, now);
    let batches = spans
        .chunks(BATCH)
        .map(|chunk| arrow_batch(topology, chunk))
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(spans);

    let config = GraphConfig::default();
    let ttl_ns = i64::try_from(config.pairing_ttl.as_nanos()).unwrap_or(i64::MAX);
    let rss_before = server::memory_bytes(std::process::id(), "VmRSS")?;
    eprintln!("ingesting ...");
    let mut graph = LiveGraph::new(config);
    let cpu_before = server::thread_cpu_seconds()?;
    let started = Instant::now();
    // Each batch arrives a microsecond after the one before, as real batches arrive at
    // distinct times: with one `now` for all, a full pairing store evicts traces in trace id
    // order rather than the least recently active first, and splits pairs being read.
    let mut arrival = now;
    for batch in &batches {
        graph.ingest(batch, arrival);
        arrival += 1_000;
    }
    graph.advance(arrival + ttl_ns + 1_000_000_000);
    let wall = started.elapsed().as_secs_f64();
    let cpu = server::thread_cpu_seconds()? - cpu_before;
    let rebuild = rebuild_from_store(&batches, now)?;
    drop(batches);
    let rss_after = server::memory_bytes(std::process::id(), "VmRSS")?;
    let memory = graph.approximate_memory_bytes() as u64;
    let counters = graph.counters();

    eprintln!("snapshots and loops ...");
    let (snapshot, snapshot_time) = median_of(|| graph.snapshot(now - LIVE_WINDOW_NS, now + 1));
    // What a reader holds the graph's lock for: the merge of the window's buckets.
    let (_, window_time) = median_of(|| graph.window(now - LIVE_WINDOW_NS, now + 1));
    // As `GraphView` reads the live window: a kept merge brought up to date after each new
    // batch (512 spans of fresh traces in the newest bucket, as live traffic arrives), so
    // only the changed bucket is taken away and added again. The batch's ingest is timed
    // too: the graph stage copies the newest bucket the kept merge holds before changing it.
    let fresh = topology.spans_at(
        BATCH as u64 * RUNS as u64,
        1 << 40,
        now - 2_000_000_000,
        1_000_000_000,
    );
    let mut fresh = fresh
        .chunks(BATCH)
        .map(|chunk| arrow_batch(topology, chunk))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = graph.window(now - LIVE_WINDOW_NS, now + 1);
    let mut kept = MergedWindow::new(&first);
    drop(first);
    // After the advance above, as the server's clock would be.
    arrival += ttl_ns + 2_000_000_000;
    let mut ingest_times = Vec::with_capacity(RUNS);
    let (kept_snapshot, kept_time) = median_of(|| {
        if let Some(batch) = fresh.pop() {
            let started = Instant::now();
            arrival += 1_000;
            graph.ingest(&batch, arrival);
            ingest_times.push(started.elapsed());
        }
        let window = graph.window(now - LIVE_WINDOW_NS, now + 1);
        kept.update(&window);
        kept.snapshot(&window)
    });
    // The same without the loops (the figures `judged_in_detail` and incidents read): in
    // this synthetic ring each listed loop is thousands of nodes long, and building the 100
    // of them is most of what is left.
    let window = graph.window(now - LIVE_WINDOW_NS, now + 1);
    let (_, kept_figures_time) = median_of(|| kept.figures(&window));
    drop(window);
    ingest_times.sort_unstable();
    let fresh_ingest_time = ingest_times.get(ingest_times.len() / 2).copied();
    let (loops, loops_time) = median_of(|| feedback_loops_searched(&snapshot.edges));
    // As readers get them: the edge set's cycles kept from an earlier read, figures fresh.
    let (_, kept_loops_time) = median_of(|| feedback_loops(&snapshot.edges));
    let edges = snapshot.edges.len() as u64;

    // Health and incidents as `GraphView` does them: the baseline's twelve 5-minute
    // sub-windows (computed once, then cached by the server), the judgement of the window,
    // and the grouping of its unhealthy elements.
    let step = 5 * 60 * 1_000_000_000i64;
    let end = (now - LIVE_WINDOW_NS).div_euclid(step) * step;
    let started = Instant::now();
    let baseline: Vec<std::sync::Arc<BaselineFigures>> = (1..=12)
        .rev()
        .map(|back| {
            let from = end - back * step;
            std::sync::Arc::new(BaselineFigures::of(
                &graph.window(from, from + step).figures(),
            ))
        })
        .collect();
    let baseline_time = started.elapsed();
    let objectives = Objectives::default();
    // Judged in place on copies made beforehand: the copy of 100,000 edges is not the
    // judgement's cost (the server judges the snapshot it has just built).
    let mut copies: Vec<_> = (0..RUNS).map(|_| snapshot.clone()).collect();
    let ((judged, own), judge_time) = median_of(|| {
        let mut judged = copies.pop().unwrap_or_else(|| snapshot.clone());
        let own = health::judge_snapshot(&mut judged, &baseline, &objectives);
        (judged, own)
    });
    let (drafts, group_time) = median_of(|| incidents::group(&judged, &own));
    // The dashboard's first question at this size: the judged snapshot folded by namespace
    // (what `GET /api/graph?group_by=service.namespace` answers, before its JSON).
    let grouping = flowscope_graph::GraphFilter {
        group_by: Some(flowscope_graph::GroupBy {
            key: "service.namespace".into(),
            expand: Vec::new(),
        }),
        ..flowscope_graph::GraphFilter::default()
    };
    let (folded, fold_time) = median_of(|| flowscope_graph::filter(&judged, &grouping));
    let folded_nodes = folded.map_or(0, |f| f.snapshot.nodes.len() as u64);
    // The generated traffic is too thin per edge (a few calls an hour) for health to judge
    // any element unhealthy, so grouping is also timed with every 100th edge marked failing:
    // 1,000 anomalous edges at the default size, far more than a real incident has.
    let mut stressed = judged.clone();
    for edge in stressed.edges.iter_mut().step_by(100) {
        edge.health.level = flowscope_graph::HealthLevel::Failing;
    }
    let marked = stressed.edges.iter().step_by(100).count() as u64;
    let (stressed_drafts, stressed_time) = median_of(|| incidents::group(&stressed, &own));
    let unhealthy = judged
        .edges
        .iter()
        .filter(|e| e.health.level != flowscope_graph::HealthLevel::Ok)
        .count() as u64;

    report.add_float(
        "ingest_spans_per_cpu_second",
        "ingest+advance: spans per CPU-second (1 thread)",
        total_spans as f64 / cpu.max(f64::EPSILON),
        0,
    );
    report.add_float(
        "ingest_spans_per_second",
        "ingest+advance: spans/s (wall)",
        total_spans as f64 / wall,
        0,
    );
    report.add_float("ingest_cpu_seconds", "ingest+advance CPU (s)", cpu, 2);
    report.add("edges_inferred", "calls inferred", counters.edges_inferred);
    report.add(
        "evicted_spans",
        "spans evicted (pairing store full)",
        counters.evicted,
    );
    report.add(
        "unpaired_spans",
        "spans unpaired at expiry",
        counters.unpaired_expired,
    );
    report.add("buckets", "statistics buckets", counters.buckets);
    report.add_float(
        "graph_memory_mib",
        "approximate_memory_bytes (MiB)",
        mib(memory),
        1,
    );
    report.add_float(
        "memory_bytes_per_edge",
        "approximate memory per edge (bytes)",
        memory as f64 / edges.max(1) as f64,
        0,
    );
    report.add_float(
        "rss_growth_mib",
        "RSS growth, batches freed (MiB)",
        (rss_after as f64 - rss_before as f64) / (1024.0 * 1024.0),
        1,
    );
    report.add_float(
        "rss_growth_bytes_per_edge",
        "RSS growth per edge (bytes)",
        (rss_after as f64 - rss_before as f64) / edges.max(1) as f64,
        0,
    );
    report.add(
        "snapshot_nodes",
        "snapshot nodes",
        snapshot.nodes.len() as u64,
    );
    report.add("snapshot_edges", "snapshot edges", edges);
    report.add(
        "snapshot_loops",
        "snapshot loops",
        snapshot.loops.len() as u64,
    );
    report.add_float(
        "snapshot_15m_ms",
        "snapshot(last 15 min), median of 5 (ms)",
        millis(snapshot_time),
        1,
    );
    report.add_float(
        "snapshot_15m_kept_ms",
        "snapshot(last 15 min) from the kept merge, brought up to date after a 512-span batch, median of 5 (ms)",
        millis(kept_time),
        1,
    );
    report.add_float(
        "snapshot_15m_kept_figures_ms",
        "the same, figures without loops, median of 5 (ms)",
        millis(kept_figures_time),
        1,
    );
    report.add(
        "snapshot_15m_kept_edges",
        "edges of that snapshot",
        kept_snapshot.edges.len() as u64,
    );
    if let Some(time) = fresh_ingest_time {
        report.add_float(
            "ingest_batch_while_kept_ms",
            "ingest of that 512-span batch (copies the bucket the merge holds), median (ms)",
            millis(time),
            1,
        );
    }
    report.add_float(
        "window_under_lock_15m_ms",
        "of which under the read lock (taking the buckets), median of 5 (ms)",
        millis(window_time),
        1,
    );
    report.add("feedback_loops", "feedback_loops count", loops.len() as u64);
    report.add_float(
        "health_baseline_ms",
        "health: the baseline's 12 sub-windows, once (ms)",
        millis(baseline_time),
        1,
    );
    report.add_float(
        "health_judge_15m_ms",
        "health: judging the 15-min snapshot, median of 5 (ms)",
        millis(judge_time),
        1,
    );
    report.add("unhealthy_edges", "edges not ok", unhealthy);
    report.add_float(
        "group_fold_15m_ms",
        "the judged snapshot folded by service.namespace (filter, no JSON), median of 5 (ms)",
        millis(fold_time),
        1,
    );
    report.add(
        "group_fold_nodes",
        "nodes of the folded answer",
        folded_nodes,
    );
    report.add_float(
        "incidents_group_ms",
        "incidents: grouping and causes, median of 5 (ms)",
        millis(group_time),
        1,
    );
    report.add("incident_groups", "incidents found", drafts.len() as u64);
    report.add(
        "incidents_stress_edges",
        "incidents, stressed: edges marked failing",
        marked,
    );
    report.add_float(
        "incidents_stress_group_ms",
        "incidents, stressed: grouping and causes, median of 5 (ms)",
        millis(stressed_time),
        1,
    );
    report.add(
        "incidents_stress_groups",
        "incidents, stressed: incidents found",
        stressed_drafts.len() as u64,
    );
    let (rebuilt, rebuild_spans, rebuild_time) = rebuild;
    anyhow::ensure!(
        rebuilt.edges.len() == snapshot.edges.len(),
        "the graph rebuilt from stored spans has {} edges, the live one {}",
        rebuilt.edges.len(),
        snapshot.edges.len()
    );
    report.add_float(
        "rebuild_15m_ms",
        "rebuild of the last 15 min from Parquet (ms)",
        millis(rebuild_time),
        1,
    );
    report.add_float(
        "rebuild_spans_per_second",
        "rebuild: stored spans read and inferred per second",
        rebuild_spans as f64 / rebuild_time.as_secs_f64().max(f64::EPSILON),
        0,
    );
    report.add_float(
        "feedback_loops_ms",
        "feedback_loops(edges), cycles searched, median of 5 (ms)",
        millis(loops_time),
        1,
    );
    report.add_float(
        "feedback_loops_kept_ms",
        "feedback_loops(edges), the edge set's cycles kept, median of 5 (ms)",
        millis(kept_loops_time),
        1,
    );
    Ok(edges)
}

/// The batches written to a span store (WAL without fsync) and flushed to Parquet, then the
/// last 15 minutes rebuilt from it as `/api/graph` does for windows past the horizon.
fn rebuild_from_store(
    batches: &[RecordBatch],
    now: i64,
) -> anyhow::Result<(flowscope_graph::Snapshot, u64, Duration)> {
    eprintln!("writing the spans to a span store and rebuilding the window from Parquet ...");
    let dir = tempfile::tempdir()?;
    let mut config = flowscope_query::StoreConfig::new(dir.path());
    config.wal_sync = flowscope_query::WalSync::Never;
    let store = flowscope_query::SpanStore::open(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        for batch in batches {
            store.write(batch.clone()).await?;
        }
        store.flush().await
    })?;
    let started = Instant::now();
    let (window, stats) = flowscope_query::graph::history::rebuild(
        &store.view(),
        &GraphConfig::default(),
        now - LIVE_WINDOW_NS,
        now + 1,
        Duration::from_secs(600),
    )?;
    let snapshot = window.into_snapshot();
    let elapsed = started.elapsed();
    runtime.block_on(store.close())?;
    Ok((snapshot, stats.spans_read, elapsed))
}

/// Items 3 and 4: load the same topology through OTLP/gRPC, time `/api/graph`, then probe.
fn against_server(
    args: &GraphArgs,
    topology: &Topology,
    total_spans: u64,
    expected_edges: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let binary = server::resolve_binary(args.server.as_deref())?;
    let data_dir = DataDir::new(None, false)?;
    let now = now_ns();
    let requests: Vec<Encoded> = topology
        .spans(total_spans, now)
        .chunks(BATCH)
        .map(|chunk| otlp_request(topology, chunk))
        .collect();
    let server = Server::start(&binary, data_dir.path(), &[])?;
    eprintln!(
        "sending {} spans to {} (pid {}) over grpc ...",
        thousands(total_spans),
        binary.display(),
        server.pid()
    );
    let runtime = server::runtime()?;
    let http = server::http_client();
    let sent = runtime.block_on(send_all(
        Protocol::Grpc,
        &server,
        Source::ready(requests),
        4,
        total_spans,
    ))?;
    if sent.totals.spans_acked != total_spans {
        bail!(
            "the server acked {} of {} spans (first failure: {:?})",
            sent.totals.spans_acked,
            total_spans,
            sent.first_failure
        );
    }
    let graph_url = format!("http://{}/api/graph", server.api);
    // Every edge is visible in a window covering the whole spread (the default 15 minutes
    // holds all of them only when the spread fits in it).
    // Uncapped: every node and edge (the default answer keeps the busiest 5,000 / 50,000).
    let all_url = format!(
        "http://{}/api/graph?from={}ms&max_nodes=1000000&max_edges=10000000",
        server.api,
        (args.spread + SPREAD_END_AGO_NS) / 1_000_000 + 60_000
    );
    let whole_url = format!(
        "http://{}/api/graph?max_nodes=1000000&max_edges=10000000",
        server.api
    );
    let focus_url = format!("http://{}/api/graph?focus=svc-00042&hops=2", server.api);
    let grouped_url = format!("http://{}/api/graph?group_by=service.namespace", server.api);
    let waited = Instant::now();
    loop {
        let body = runtime.block_on(get(&http, &all_url))?;
        let edges = edge_count(&body)?;
        if edges >= expected_edges {
            break;
        }
        if waited.elapsed() > LOAD_TIMEOUT {
            bail!(
                "/api/graph shows {edges} edges, not {expected_edges}, {LOAD_TIMEOUT:?} after the last ack"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let visible_after = waited.elapsed();

    // The default answer (capped), the whole graph, and a neighbourhood. The live window's
    // judged snapshot is shared by requests within half a second of its computation: each
    // request is timed a second after the one before (so each computes it from the kept
    // merge), and again back to back after a first request (shared: the filter and the text).
    let timed = |url: &str, spaced: bool| -> anyhow::Result<(Vec<Duration>, usize)> {
        let mut latencies = Vec::with_capacity(RUNS);
        let mut size = 0;
        if !spaced {
            runtime.block_on(get(&http, url))?;
        }
        for _ in 0..RUNS {
            if spaced {
                std::thread::sleep(Duration::from_secs(1));
            }
            let started = Instant::now();
            let body = runtime.block_on(get(&http, url))?;
            latencies.push(started.elapsed());
            size = body.len();
        }
        latencies.sort_unstable();
        Ok((latencies, size))
    };
    let (latencies, size) = timed(&graph_url, true)?;
    let (whole_latencies, whole_size) = timed(&whole_url, true)?;
    let (focus_latencies, focus_size) = timed(&focus_url, true)?;
    let (grouped_latencies, grouped_size) = timed(&grouped_url, true)?;
    let (shared_latencies, _) = timed(&graph_url, false)?;
    let (focus_shared_latencies, _) = timed(&focus_url, false)?;
    let (grouped_shared_latencies, _) = timed(&grouped_url, false)?;

    // Incidents: a window given explicitly is computed on every request; the live one (no
    // window) is computed at most every 5 s and shared, so it is timed after a first call.
    // A build from before incidents (compared with this one for /api/graph) answers 404:
    // then both incident figures are left at 0 and the run goes on.
    let served = runtime.block_on(status_of(
        &http,
        &format!("http://{}/api/incidents", server.api),
    ))? != hyper::StatusCode::NOT_FOUND;
    if !served {
        eprintln!("this server has no /api/incidents: its figures are reported as 0");
    }
    let mut computed = Vec::with_capacity(RUNS);
    let mut incidents = 0;
    for _ in 0..RUNS {
        if !served {
            break;
        }
        let to_ms = now_ns() / 1_000_000;
        let url = format!(
            "http://{}/api/incidents?from={}&to={to_ms}",
            server.api,
            to_ms - 5 * 60 * 1000
        );
        let started = Instant::now();
        let body = runtime.block_on(get(&http, &url))?;
        computed.push(started.elapsed());
        let answer: Value =
            serde_json::from_slice(&body).context("/api/incidents did not answer JSON")?;
        incidents = answer["incidents"].as_array().map_or(0, Vec::len);
    }
    computed.sort_unstable();
    let live_url = format!("http://{}/api/incidents", server.api);
    if served {
        runtime.block_on(get(&http, &live_url))?;
    }
    let mut shared = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        if !served {
            break;
        }
        let started = Instant::now();
        runtime.block_on(get(&http, &live_url))?;
        shared.push(started.elapsed());
    }
    shared.sort_unstable();

    eprintln!("{} ack-to-edge probes ...", args.probes);
    let delays = runtime.block_on(probe(&server, &http, args.probes))?;
    let rss = server::memory_bytes(server.pid(), "VmRSS")?;
    let stopped = server.stop()?;
    data_dir.finish();

    let quantile = |sorted: &[Duration], p| percentile(sorted, p).map_or(0.0, millis);
    report.add_float(
        "server_load_spans_per_second",
        "server: spans/s acked while loading",
        sent.totals.spans_acked as f64 / sent.wall.as_secs_f64(),
        0,
    );
    report.add_float(
        "server_all_edges_visible_ms",
        "server: last ack to all edges in /api/graph (ms)",
        millis(visible_after),
        0,
    );
    report.add_float(
        "api_graph_p50_ms",
        "GET /api/graph, median of 5 (ms)",
        quantile(&latencies, 50.0),
        1,
    );
    report.add(
        "api_graph_bytes",
        "GET /api/graph response bytes",
        size as u64,
    );
    report.add_float(
        "api_graph_whole_p50_ms",
        "GET /api/graph uncapped (every node and edge), median of 5 (ms)",
        quantile(&whole_latencies, 50.0),
        1,
    );
    report.add(
        "api_graph_whole_bytes",
        "GET /api/graph uncapped response bytes",
        whole_size as u64,
    );
    report.add_float(
        "api_graph_focus_p50_ms",
        "GET /api/graph?focus=svc-00042&hops=2, median of 5 (ms)",
        quantile(&focus_latencies, 50.0),
        1,
    );
    report.add_float(
        "api_graph_shared_p50_ms",
        "GET /api/graph, back to back (judged snapshot shared), median of 5 (ms)",
        quantile(&shared_latencies, 50.0),
        1,
    );
    report.add_float(
        "api_graph_focus_shared_p50_ms",
        "GET /api/graph?focus=svc-00042&hops=2, back to back (shared), median of 5 (ms)",
        quantile(&focus_shared_latencies, 50.0),
        1,
    );
    report.add_float(
        "api_graph_grouped_shared_p50_ms",
        "GET /api/graph?group_by=service.namespace, back to back (shared), median of 5 (ms)",
        quantile(&grouped_shared_latencies, 50.0),
        1,
    );
    report.add(
        "api_graph_focus_bytes",
        "GET /api/graph?focus=…&hops=2 response bytes",
        focus_size as u64,
    );
    report.add_float(
        "api_graph_grouped_p50_ms",
        "GET /api/graph?group_by=service.namespace, median of 5 (ms)",
        quantile(&grouped_latencies, 50.0),
        1,
    );
    report.add(
        "api_graph_grouped_bytes",
        "GET /api/graph?group_by=service.namespace response bytes",
        grouped_size as u64,
    );
    report.add_float(
        "api_incidents_computed_p50_ms",
        "GET /api/incidents, last 5 min given as from/to (computed), median of 5 (ms)",
        quantile(&computed, 50.0),
        1,
    );
    report.add_float(
        "api_incidents_live_p50_ms",
        "GET /api/incidents, live (shared for 5 s), median of 5 (ms)",
        quantile(&shared, 50.0),
        1,
    );
    report.add(
        "incidents_found",
        "incidents found in the last 5 min",
        incidents as u64,
    );
    report.add_float(
        "server_rss_mib",
        "server RSS after probes (MiB)",
        mib(rss),
        1,
    );
    report.add("probes", "ack-to-edge probes", delays.len() as u64);
    report.add_float(
        "ack_to_edge_p50_ms",
        "ack-to-edge p50 (ms, 20 ms polls)",
        quantile(&delays, 50.0),
        1,
    );
    report.add_float(
        "ack_to_edge_p99_ms",
        "ack-to-edge p99 (ms, 20 ms polls)",
        quantile(&delays, 99.0),
        1,
    );
    report.add_float(
        "ack_to_edge_max_ms",
        "ack-to-edge max (ms, 20 ms polls)",
        quantile(&delays, 100.0),
        1,
    );
    report.add("server_warnings", "server WARN lines", stopped.log.warnings);
    report.add("server_errors", "server ERROR lines", stopped.log.errors);
    for line in &stopped.log.notable {
        eprintln!("server: {line}");
    }
    Ok(())
}

/// Sends one fresh CLIENT/SERVER pair at a time and polls the last minute of the graph until
/// its edge appears; the delays are sorted.
async fn probe(server: &Server, http: &HttpClient, probes: usize) -> anyhow::Result<Vec<Duration>> {
    let url = format!("http://{}/api/graph?from=1m", server.api);
    let mut delays = Vec::with_capacity(probes);
    for probe in 0..probes {
        let caller = format!("probe-{probe}-caller");
        let callee = format!("probe-{probe}-callee");
        let now = now_ns();
        let trace = PROBE_TRACES + probe as u64;
        let pair = [
            GenSpan::new(trace, 2 * trace, None, Kind::Client, 0, now),
            GenSpan::new(trace, 2 * trace + 1, Some(2 * trace), Kind::Server, 1, now),
        ];
        let request = encode_request(&pair, |service| {
            if service == 0 {
                caller.as_str()
            } else {
                callee.as_str()
            }
        });
        let sent = send_all(Protocol::Grpc, server, Source::ready(vec![request]), 1, 2).await?;
        let acked = Instant::now();
        if sent.totals.spans_acked != 2 {
            bail!("probe {probe} was not acked: {:?}", sent.first_failure);
        }
        loop {
            let body = get(http, &url).await?;
            if has_edge(&body, &caller, &callee)? {
                delays.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > PROBE_TIMEOUT {
                bail!("the edge {caller} -> {callee} did not appear within {PROBE_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    delays.sort_unstable();
    Ok(delays)
}

/// Trace numbers of probes, far above any the bulk load uses.
const PROBE_TRACES: u64 = 1 << 40;

/// Services `0..services`, each calling `edges / services` others at fixed offsets; offset 1
/// joins them all in one ring, so the graph is one big strongly connected component.
#[derive(Debug)]
struct Topology {
    names: Vec<String>,
    out_degree: u64,
    stride: u64,
    spread_ns: i64,
}

impl Topology {
    fn new(services: u64, edges: u64, spread_ns: i64) -> anyhow::Result<Self> {
        if services < 2 || edges == 0 || !edges.is_multiple_of(services) {
            bail!("--edges must be a positive multiple of --services, and --services at least 2");
        }
        let out_degree = edges / services;
        if out_degree > services - 1 {
            bail!("--edges allows at most --services - 1 calls per service");
        }
        Ok(Self {
            names: (0..services).map(|s| format!("svc-{s:05}")).collect(),
            out_degree,
            stride: (services - 1) / out_degree,
            spread_ns,
        })
    }

    fn edge_count(&self) -> u64 {
        self.names.len() as u64 * self.out_degree
    }

    /// Edge `edge` as (caller, callee); distinct edges for distinct numbers below the count.
    fn edge(&self, edge: u64) -> (u64, u64) {
        let services = self.names.len() as u64;
        let source = edge / self.out_degree;
        let offset = 1 + (edge % self.out_degree) * self.stride;
        (source, (source + offset) % services)
    }

    fn name(&self, service: u64) -> &str {
        self.names
            .get(service as usize)
            .map_or("unknown", String::as_str)
    }

    /// `total` spans as traces of 1 to 4 CLIENT/SERVER pairs (2 to 8 spans), pair `p` of the
    /// run on edge `p % edges`, so every edge is used; each CLIENT after a trace's first is
    /// the child of the previous pair's SERVER. Starts spread over the spread window.
    fn spans(&self, total: u64, now: i64) -> Vec<GenSpan> {
        self.spans_at(
            total,
            0,
            now - SPREAD_END_AGO_NS - self.spread_ns,
            self.spread_ns,
        )
    }

    /// [`Topology::spans`] with traces numbered from `first_trace`, starting in
    /// `[first_start, first_start + spread)`.
    fn spans_at(
        &self,
        total: u64,
        first_trace: u64,
        first_start: i64,
        spread: i64,
    ) -> Vec<GenSpan> {
        let mut spans = Vec::with_capacity(total as usize);
        let (mut trace, mut pair) = (first_trace, 0u64);
        while (spans.len() as u64) < total {
            let pairs = 1 + trace % 4;
            // About `total / 5` traces (5 spans on average) spread evenly over the window.
            let offset =
                i128::from(trace - first_trace) * 5 * i128::from(spread) / i128::from(total);
            let trace_start = first_start + offset.min(i128::from(spread)) as i64;
            let mut parent = None;
            for step in 0..pairs {
                if spans.len() as u64 >= total {
                    break;
                }
                let (caller, callee) = self.edge(pair % self.edge_count());
                let client_id = 2 * pair;
                let start = trace_start + step as i64 * 1_000_000;
                spans.push(GenSpan::new(
                    trace,
                    client_id,
                    parent,
                    Kind::Client,
                    caller,
                    start,
                ));
                spans.push(GenSpan::new(
                    trace,
                    client_id + 1,
                    Some(client_id),
                    Kind::Server,
                    callee,
                    start + 100_000,
                ));
                parent = Some(client_id + 1);
                pair += 1;
            }
            trace += 1;
        }
        spans
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Server,
}

/// One generated span; ids are derived from its trace and span numbers.
#[derive(Debug, Clone, Copy)]
struct GenSpan {
    trace: u64,
    span: u64,
    parent: Option<u64>,
    kind: Kind,
    service: u64,
    start_ns: i64,
    duration_ns: i64,
}

impl GenSpan {
    fn new(
        trace: u64,
        span: u64,
        parent: Option<u64>,
        kind: Kind,
        service: u64,
        start_ns: i64,
    ) -> Self {
        let duration_ns = 1_000_000 + (mix(span) % 20_000_000) as i64;
        Self {
            trace,
            span,
            parent,
            kind,
            service,
            start_ns,
            duration_ns,
        }
    }
}

fn arrow_batch(topology: &Topology, spans: &[GenSpan]) -> anyhow::Result<RecordBatch> {
    let mut builder = SpanBatchBuilder::with_capacity(spans.len());
    let no_attributes: [(&str, &str); 0] = [];
    for span in spans {
        let (trace, id) = (trace_id(span.trace), span_id(span.span));
        let parent = span.parent.map(span_id);
        let service = topology.name(span.service);
        // The namespace the spans sent to the server carry too (`otlp_request`).
        let namespace = format!("ns-{:03}", span.service / 50);
        let record = SpanRecord {
            trace_id: &trace,
            span_id: &id,
            parent_span_id: parent.as_ref().map(|p| p.as_slice()),
            name: "call",
            kind: match span.kind {
                Kind::Client => "CLIENT",
                Kind::Server => "SERVER",
            },
            service_name: service,
            start_time_unix_nano: span.start_ns,
            end_time_unix_nano: span.start_ns + span.duration_ns,
            status_code: "UNSET",
            ..SpanRecord::default()
        };
        builder
            .append(
                &record,
                &no_attributes,
                &[("service.name", service), ("service.namespace", &namespace)],
                &[],
                &[],
            )
            .context("cannot append a generated span")?;
    }
    builder.finish().context("cannot finish a generated batch")
}

fn otlp_request(topology: &Topology, spans: &[GenSpan]) -> Encoded {
    encode_request(spans, |service| topology.name(service))
}

/// One export request, spans grouped by service into resources as SDKs send them.
fn encode_request<'a>(spans: &[GenSpan], name: impl Fn(u64) -> &'a str) -> Encoded {
    let mut by_service: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
    for span in spans {
        let start = u64::try_from(span.start_ns).unwrap_or(0);
        by_service.entry(span.service).or_default().push(Span {
            trace_id: trace_id(span.trace).to_vec(),
            span_id: span_id(span.span).to_vec(),
            parent_span_id: span.parent.map(|p| span_id(p).to_vec()).unwrap_or_default(),
            name: "call".into(),
            kind: match span.kind {
                Kind::Client => 3,
                Kind::Server => 2,
            },
            start_time_unix_nano: start,
            end_time_unix_nano: start + u64::try_from(span.duration_ns).unwrap_or(0),
            ..Span::default()
        });
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text_attribute("service.name", name(service)),
                    // Namespaces of 50 services, as a large system is split into teams'.
                    text_attribute("service.namespace", &format!("ns-{:03}", service / 50)),
                    text_attribute("deployment.environment.name", "bench"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        })
        .collect();
    let request = ExportTraceServiceRequest { resource_spans };
    Encoded {
        body: Bytes::from(request.encode_to_vec()),
        spans: spans.len() as u64,
    }
}

fn trace_id(trace: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix(trace).to_be_bytes());
    id[8..].copy_from_slice(&mix(trace ^ 0x5a5a_5a5a_5a5a_5a5a).to_be_bytes());
    id
}

fn span_id(span: u64) -> [u8; 8] {
    mix(span.wrapping_add(1 << 41)).to_be_bytes()
}

fn now_ns() -> i64 {
    i64::try_from(server::now_ns()).unwrap_or(i64::MAX)
}

/// Runs `work` `RUNS` times and returns the last result and the median time.
fn median_of<T>(mut work: impl FnMut() -> T) -> (T, Duration) {
    let mut times = Vec::with_capacity(RUNS);
    let mut result = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let value = work();
        times.push(started.elapsed());
        result = Some(value);
    }
    times.sort_unstable();
    let median = times[RUNS / 2];
    match result {
        Some(value) => (value, median),
        None => (work(), median),
    }
}

/// The status `url` answers, its body read and dropped.
async fn status_of(client: &HttpClient, url: &str) -> anyhow::Result<hyper::StatusCode> {
    Ok(fetch(client, url).await?.0)
}

/// `url`'s status and body.
async fn fetch(client: &HttpClient, url: &str) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("cannot build a request to {url}"))?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("GET {url} failed"))?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

async fn get(client: &HttpClient, url: &str) -> anyhow::Result<Bytes> {
    let (status, body) = fetch(client, url).await?;
    if !status.is_success() {
        bail!(
            "GET {url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(body)
}

fn edges_of(body: &[u8]) -> anyhow::Result<Vec<Value>> {
    let mut graph: Value =
        serde_json::from_slice(body).context("/api/graph did not answer JSON")?;
    match graph["edges"].take() {
        Value::Array(edges) => Ok(edges),
        _ => bail!("/api/graph answered without an edges array"),
    }
}

fn edge_count(body: &[u8]) -> anyhow::Result<u64> {
    Ok(edges_of(body)?.len() as u64)
}

fn has_edge(body: &[u8], source: &str, target: &str) -> anyhow::Result<bool> {
    Ok(edges_of(body)?
        .iter()
        .any(|edge| edge["source"] == source && edge["target"] == target))
}

/// A resource attribute with a text value.
fn text_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}
