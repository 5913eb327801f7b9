//! `flowscope-bench query`: loads spans spread over a day, restarts the server so everything
//! is read back from Parquet, and times typical queries through `/api/sql`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::ingest::mib;
use crate::report::{Report, millis, percentile, thousands};
use crate::send::{Protocol, send_all};
use crate::server::{self, DataDir, HttpClient, Server};
use crate::spans::{Encoded, Generator, SPANS_PER_TRACE};
use flowscope_demo::send::Source;

const BATCH: u64 = 512;
const CONNECTIONS: usize = 4;
const DAY_NS: u64 = 86_400 * 1_000_000_000;
/// Loading favours speed: durability per request is not what this benchmark measures.
const LOAD_FLAGS: [&str; 4] = ["--wal-sync", "never", "--flush-rows", "1000000"];

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The flowscope binary [default: the one next to this binary, else target-release/release/flowscope]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Spans to load, start times spread evenly over the last 24 hours
    #[arg(long, default_value_t = 10_000_000)]
    spans: u64,
    /// Data directory, which must be empty or absent [default: a temporary directory, removed at the end]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Times each query is run; the median is reported
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Keep the temporary data directory
    #[arg(long)]
    keep: bool,
    /// A Python with `duckdb` (and optionally `chdb`) installed: runs
    /// bench/peers/duckdb_peer.py over the same Parquet files and reports ratios
    #[arg(long)]
    peer_python: Option<PathBuf>,
}

/// The fixed five queries, in flowscope's dialect; `bench/peers/duckdb_peer.py` has the same
/// five, by the same names, in DuckDB's.
fn queries(end: &str, trace_id: &str) -> [(&'static str, String); 5] {
    let t = format!("TIMESTAMP '{end}'");
    let parent =
        "FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id";
    [
        (
            "count_by_service_1h",
            format!("SELECT service_name, count(*) AS spans FROM spans WHERE start_time >= {t} - INTERVAL '1 hour' GROUP BY service_name ORDER BY service_name"),
        ),
        (
            "p99_by_edge_1h",
            format!("SELECT p.service_name AS caller, c.service_name AS callee, c.name, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY c.duration_ns) AS p99_ns, count(*) AS calls {parent} WHERE c.start_time >= {t} - INTERVAL '1 hour' AND p.start_time >= {t} - INTERVAL '61 minutes' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
        ),
        (
            "error_rate_series_24h",
            "SELECT date_trunc('hour', start_time) AS hour, count(*) AS spans, avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate FROM spans GROUP BY 1 ORDER BY 1".to_string(),
        ),
        (
            "service_pairs_6h",
            format!("SELECT p.service_name AS caller, c.service_name AS callee, count(*) AS calls, sum(CASE WHEN c.status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors {parent} WHERE c.start_time >= {t} - INTERVAL '6 hours' AND p.start_time >= {t} - INTERVAL '361 minutes' GROUP BY 1, 2 ORDER BY 1, 2"),
        ),
        (
            "trace_lookup",
            format!("SELECT * FROM spans WHERE trace_id = '{trace_id}'"),
        ),
    ]
}

fn rfc3339(ns: i64) -> anyhow::Result<String> {
    let time = arrow::temporal_conversions::timestamp_ns_to_datetime(ns)
        .with_context(|| format!("{ns} ns is not a time"))?;
    Ok(format!("{}Z", time.format("%Y-%m-%dT%H:%M:%S")))
}

/// Runs the DuckDB/chDB peer script over the same files and adds its figures, with ratios
/// (peer time / flowscope time: above 1 means flowscope is faster).
#[allow(clippy::too_many_arguments)]
fn peer(
    python: &std::path::Path,
    data_dir: &std::path::Path,
    end: &str,
    trace_id: &str,
    runs: usize,
    timed: &[(&str, Timed)],
    parquet_bytes: u64,
    spans: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/duckdb_peer.py");
    eprintln!(
        "running the peers: {} {} ...",
        python.display(),
        script.display()
    );
    let output = std::process::Command::new(python)
        .arg(&script)
        .arg(data_dir)
        .args([
            "--end",
            end,
            "--trace-id",
            trace_id,
            "--runs",
            &runs.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); is duckdb installed? `{} -m pip install duckdb chdb`",
            script.display(),
            output.status,
            python.display()
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} did not print JSON", script.display()))?;
    report.add(
        "duckdb_version",
        "DuckDB version",
        answer["duckdb_version"].clone(),
    );
    for (name, ours) in timed {
        let theirs = &answer["queries"][*name];
        let (Some(their_ms), Some(their_rows)) =
            (theirs["median_ms"].as_f64(), theirs["rows"].as_u64())
        else {
            bail!("the peer did not time {name}: {answer}");
        };
        if their_rows != ours.rows as u64 {
            bail!(
                "{name}: DuckDB returned {their_rows} rows, flowscope {}: the queries differ",
                ours.rows
            );
        }
        let our_ms = percentile(&ours.times, 50.0).map_or(0.0, millis);
        report.add_float(
            format!("{name}_duckdb_median_ms"),
            format!("{name}: DuckDB median (ms)"),
            their_ms,
            1,
        );
        report.add_float(
            format!("{name}_duckdb_ratio"),
            format!("{name}: DuckDB time / flowscope time"),
            their_ms / our_ms.max(f64::EPSILON),
            2,
        );
    }
    let per_span = |bytes: u64| bytes as f64 / spans.max(1) as f64;
    report.add_float(
        "flowscope_bytes_per_span",
        "storage: flowscope Parquet bytes per span",
        per_span(parquet_bytes),
        1,
    );
    for (key, label) in [
        ("duckdb_storage", "DuckDB native"),
        ("chdb_storage", "ClickHouse MergeTree (chDB)"),
    ] {
        match answer[key]["bytes"].as_u64() {
            Some(bytes) => report.add_float(
                format!("{key}_bytes_per_span"),
                format!("storage: {label} bytes per span"),
                per_span(bytes),
                1,
            ),
            None => report.add(
                format!("{key}_error"),
                format!("storage: {label}"),
                answer[key].clone(),
            ),
        }
    }
    Ok(())
}

/// What one query returned and how long it took, over all runs.
struct Timed {
    times: Vec<Duration>,
    rows: usize,
    first_value: serde_json::Value,
    /// The sum of the second column, when every row has a count there.
    total: Option<u64>,
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    if args.spans == 0 || args.runs == 0 {
        bail!("--spans and --runs must be greater than zero");
    }
    let binary = server::resolve_binary(args.server.as_deref())?;
    let data_dir = DataDir::new(args.data_dir.as_deref(), args.keep)?;
    let generator = Generator {
        total_spans: args.spans,
        batch: BATCH,
        window_ns: DAY_NS,
    };
    let runtime = server::runtime()?;

    let server = Server::start(&binary, data_dir.path(), &LOAD_FLAGS)?;
    eprintln!(
        "loading {} spans over gRPC with {CONNECTIONS} connections into {} (pid {}, {}) ...",
        thousands(args.spans),
        data_dir.path().display(),
        server.pid(),
        LOAD_FLAGS.join(" ")
    );
    let (requests, receiver) = mpsc::channel::<Encoded>(2 * CONNECTIONS);
    // Requests are built while sending, since 10M encoded spans would take gigabytes; each
    // window ends at the moment its request is built, so the newest spans are always recent.
    let producer = std::thread::spawn(move || -> anyhow::Result<f64> {
        let started = server::thread_cpu_seconds()?;
        for index in 0..generator.requests() {
            if requests
                .blocking_send(generator.encoded(index, server::now_ns()))
                .is_err()
            {
                break;
            }
        }
        Ok(server::thread_cpu_seconds()? - started)
    });
    let server_cpu_before = server.cpu_seconds()?;
    let source = Source::generated(receiver);
    let sent = runtime.block_on(send_all(
        Protocol::Grpc,
        &server,
        source,
        CONNECTIONS,
        args.spans,
    ))?;
    let load_server_cpu = server.cpu_seconds()? - server_cpu_before;
    let load_peak_rss = server.peak_rss_bytes()?;
    let generation_cpu = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))??;
    if let Some(failure) = &sent.first_failure {
        eprintln!("first failure while loading: {failure}");
    }
    eprintln!(
        "  loaded {} spans in {:.1}s; stopping to flush everything to Parquet ...",
        thousands(sent.totals.spans_acked),
        sent.wall.as_secs_f64()
    );
    let load_stopped = server.stop()?;
    let (parquet_bytes, parquet_files) =
        server::dir_size(&data_dir.path().join("spans"), ".parquet")?;

    let restart_started = Instant::now();
    let server = Server::start(&binary, data_dir.path(), &[])?;
    let restart = restart_started.elapsed();
    eprintln!(
        "restarted with default flags in {:.2}s; timing queries, {} runs each ...",
        restart.as_secs_f64(),
        args.runs
    );
    let trace = args.spans / SPANS_PER_TRACE / 2;
    let trace_id = generator.trace_id_hex(trace);
    let trace_spans = (args.spans - trace * SPANS_PER_TRACE).min(SPANS_PER_TRACE);
    let http = server::http_client();
    // Every window ends at the newest span (rounded up to the second), written out, so a
    // peer run later over the same files answers exactly the same question.
    let newest = runtime.block_on(server.sql(
        &http,
        "SELECT CAST(max(start_time) AS BIGINT) AS ns FROM spans",
    ))?;
    let newest_ns = newest["rows"][0][0]
        .as_i64()
        .with_context(|| format!("no newest span: {newest}"))?;
    let end = rfc3339(newest_ns.div_euclid(1_000_000_000) * 1_000_000_000 + 1_000_000_000)?;
    let mut timed = Vec::new();
    for (name, sql) in queries(&end, &trace_id) {
        let result = runtime.block_on(time_query(&server, &http, &sql, args.runs))?;
        eprintln!(
            "  {name}: median {:.1} ms, {} rows",
            percentile(&result.times, 50.0).map_or(0.0, millis),
            result.rows
        );
        timed.push((name, result));
    }
    let query_peak_rss = server.peak_rss_bytes()?;
    let query_stopped = server.stop()?;

    let mut report = Report::new("query");
    report.add(
        "spans_loaded",
        "spans loaded (acked)",
        sent.totals.spans_acked,
    );
    report.add("load_flags", "load server flags", LOAD_FLAGS.join(" "));
    report.add_float(
        "load_seconds",
        "load wall time (s)",
        sent.wall.as_secs_f64(),
        1,
    );
    report.add_float(
        "load_spans_per_second",
        "load spans/s (wall)",
        sent.totals.spans_acked as f64 / sent.wall.as_secs_f64(),
        0,
    );
    report.add_float(
        "load_server_cpu_seconds",
        "load server CPU (s)",
        load_server_cpu,
        1,
    );
    report.add_float(
        "load_client_generation_cpu_seconds",
        "load client CPU generating requests (s)",
        generation_cpu,
        1,
    );
    report.add(
        "load_requests_refused",
        "load requests refused, then retried",
        sent.totals.requests_refused,
    );
    report.add(
        "load_requests_failed",
        "load requests failed",
        sent.totals.requests_failed,
    );
    report.add_float(
        "load_ack_p99_ms",
        "load ack latency p99 (ms)",
        percentile(&sent.latencies, 99.0).map_or(0.0, millis),
        1,
    );
    report.add_float(
        "load_server_peak_rss_mib",
        "load server peak RSS (MiB)",
        mib(load_peak_rss),
        1,
    );
    report.add_float(
        "load_shutdown_seconds",
        "SIGTERM to exit after load, final flush (s)",
        load_stopped.shutdown.as_secs_f64(),
        2,
    );
    report.add("parquet_files", "parquet files", parquet_files);
    report.add("parquet_bytes", "parquet bytes", parquet_bytes);
    report.add_float(
        "parquet_bytes_per_span",
        "parquet bytes per span",
        parquet_bytes as f64 / sent.totals.spans_acked.max(1) as f64,
        1,
    );
    report.add_float(
        "restart_seconds",
        "restart to ready (s)",
        restart.as_secs_f64(),
        2,
    );
    report.add("runs", "runs per query", args.runs);
    for (name, result) in &timed {
        add_query(&mut report, name, result);
    }
    report.add("trace_id", "trace looked up", trace_id.clone());
    report.add("window_end", "windows end at", end.clone());
    report.add_float(
        "query_server_peak_rss_mib",
        "query server peak RSS (MiB)",
        mib(query_peak_rss),
        1,
    );
    report.add(
        "server_warnings",
        "server WARN lines (load + queries)",
        load_stopped.log.warnings + query_stopped.log.warnings,
    );
    report.add(
        "server_errors",
        "server ERROR lines (load + queries)",
        load_stopped.log.errors + query_stopped.log.errors,
    );
    if let Some(python) = &args.peer_python {
        peer(
            python,
            data_dir.path(),
            &end,
            &trace_id,
            args.runs,
            &timed,
            parquet_bytes,
            sent.totals.spans_acked,
            &mut report,
        )?;
    }
    report.print();
    data_dir.finish();

    for line in load_stopped
        .log
        .notable
        .iter()
        .chain(&query_stopped.log.notable)
    {
        eprintln!("server: {line}");
    }
    check(&timed, sent.totals.spans_acked, trace_spans)
}

async fn time_query(
    server: &Server,
    http: &HttpClient,
    sql: &str,
    runs: usize,
) -> anyhow::Result<Timed> {
    let mut times = Vec::with_capacity(runs);
    let mut answer = serde_json::Value::Null;
    for _ in 0..runs {
        let started = Instant::now();
        answer = server.sql(http, sql).await?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    let rows = answer["rows"]
        .as_array()
        .with_context(|| format!("`{sql}` answered without rows: {answer}"))?;
    Ok(Timed {
        times,
        total: rows
            .iter()
            .map(|row| row.get(1).and_then(|v| v.as_u64()))
            .sum(),
        rows: rows.len(),
        first_value: rows
            .first()
            .and_then(|row| row.get(0))
            .cloned()
            .unwrap_or_default(),
    })
}

fn add_query(report: &mut Report, name: &str, result: &Timed) {
    let figure = |p| percentile(&result.times, p).map_or(0.0, millis);
    report.add_float(
        format!("{name}_median_ms"),
        format!("{name}: median (ms)"),
        figure(50.0),
        1,
    );
    report.add_float(
        format!("{name}_min_ms"),
        format!("{name}: min (ms)"),
        figure(0.0),
        1,
    );
    report.add_float(
        format!("{name}_max_ms"),
        format!("{name}: max (ms)"),
        figure(100.0),
        1,
    );
    report.add(
        format!("{name}_rows"),
        format!("{name}: rows returned"),
        result.rows,
    );
    if name != "trace_lookup" {
        let value = result.first_value.clone();
        report.add(
            format!("{name}_value"),
            format!("{name}: first value"),
            value,
        );
    }
}

/// The answers must match what was loaded, or the timings are of the wrong thing.
fn check(timed: &[(&str, Timed)], loaded: u64, trace_spans: u64) -> anyhow::Result<()> {
    for (name, result) in timed {
        match *name {
            "error_rate_series_24h" if result.total != Some(loaded) => bail!(
                "the hourly series counts {:?} spans, but {loaded} were acknowledged",
                result.total
            ),
            "trace_lookup" if result.rows as u64 != trace_spans => bail!(
                "the trace lookup found {} spans, expected {trace_spans}",
                result.rows
            ),
            _ => {}
        }
    }
    Ok(())
}
