//! `flowscope serve`: binds every listener, locks the data directory, opens the store, runs
//! until SIGINT or SIGTERM, then stops accepting, flushes memory to Parquet and exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowscope_auth::TenantId;
use flowscope_base::liveness::{Liveness, Stage, StageGuard};
use flowscope_base::memory::{self, MemoryBudget};
use flowscope_collector::{SinkError, SpanSink};
use flowscope_query::graph::GraphView;
use flowscope_query::{SpanStore, SqlEngine, SqlResources, StoreError};
use flowscope_web::{ApiState, TenantView};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::data_dir;
use crate::graph_stage;
use crate::listen;

/// The store's errors as the collector's.
fn sink_error(error: StoreError) -> SinkError {
    match error {
        StoreError::Overloaded(_, retry_after) => SinkError::Overloaded { retry_after },
        StoreError::Unavailable(message) => SinkError::Unavailable(message),
        // An I/O error on the WAL (disk full, read-only filesystem) is the machine's state,
        // not a bad request: the client should keep the spans and retry.
        StoreError::Io(error) => SinkError::Unavailable(error.to_string()),
        other => SinkError::Internal(other.to_string()),
    }
}

/// Connections the kernel may hold for a port before they are accepted (it caps this at
/// `net.core.somaxconn`, 4096 on current kernels). Tokio's default of 1024 overflowed when
/// 2,000 connections arrived at once (`tests/mixed_attack.rs`): the kernel then drops SYNs,
/// and a `/healthz` probe caught in it waited for the client's one-second SYN retry.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(name: &'static str, addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        // As std's and tokio's own bind do on Unix: a restart may bind while old
        // connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    let listener = listen().with_context(|| {
        format!("cannot listen on {addr} for {name}; pick another address with {flag}")
    })?;
    let bound = listener.local_addr()?;
    tracing::info!(service = name, addr = %bound, "listening");
    Ok(listener)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flowscope")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// One tenant's data: its own store (WAL, Parquet), graph stage and rollups, and a SQL
/// engine that sees only those. The default tenant lives at the data directory's root (the
/// layout of a server without tenants); every other under `tenants/<name>/`.
struct TenantSpace {
    tenant: TenantId,
    store: Arc<SpanStore>,
    view: TenantView,
    graph_thread: std::thread::JoinHandle<()>,
}

fn tenant_dir(data_dir: &Path, tenant: &TenantId) -> PathBuf {
    if tenant.is_default() {
        data_dir.to_path_buf()
    } else {
        data_dir.join("tenants").join(tenant.as_str())
    }
}

async fn open_tenant(
    config: &ServeConfig,
    tenant: TenantId,
    sql_resources: &SqlResources,
    liveness: &Arc<Liveness>,
) -> anyhow::Result<TenantSpace> {
    let data_dir = tenant_dir(&config.store.data_dir, &tenant);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut store_config = config.store.clone();
    store_config.data_dir = data_dir.clone();
    store_config.liveness = liveness.clone();
    // The live graph is backfilled with the stored spans of its horizon before this moment;
    // windows starting earlier come from the buckets kept past the horizon, else are
    // rebuilt from the stored spans.
    let graph_covers_from = flowscope_base::clock::now_ns()
        .saturating_sub(config.graph.horizon.as_nanos().min(i64::MAX as u128) as i64);
    let rollups = Arc::new(
        flowscope_query::graph::rollups::Rollups::open(&data_dir)
            .with_context(|| format!("cannot open {}", data_dir.join("graph").display()))?,
    );
    let keeper = graph_stage::Keeper::new(
        rollups.clone(),
        graph_covers_from,
        &config.graph,
        config.store.retention,
    );
    // The graph stage starts first: the store feeds it the spans it replays while opening.
    let graph_stage::GraphStage {
        graph,
        input: graph_input,
        thread: graph_thread,
    } = graph_stage::start(config.graph.clone(), Some(keeper), liveness)
        .context("cannot start the graph stage")?;
    let store = tokio::task::spawn_blocking(move || graph_input.open_store(store_config))
        .await?
        .with_context(|| format!("cannot open the span store in {}", data_dir.display()))?;
    let stats = store.stats();
    tracing::info!(
        %tenant,
        data_dir = %data_dir.display(),
        segments = stats.segments,
        spans_in_segments = stats.spans_in_segments,
        replayed_wal_records = stats.replayed_records,
        "span store ready"
    );
    let graph = GraphView::with_history(
        graph,
        store.clone(),
        Some(rollups),
        graph_covers_from,
        config.sql.timeout,
    )
    .with_objectives(config.objectives.clone());
    let engine = Arc::new(
        SqlEngine::with_resources(store.clone(), config.sql.clone(), sql_resources.clone())
            .context("cannot start the SQL engine")?,
    );
    flowscope_query::graph::register(&engine, &graph)
        .context("cannot register the graph tables")?;
    Ok(TenantSpace {
        tenant,
        store,
        view: TenantView { engine, graph },
        graph_thread,
    })
}

/// Sends each batch to the store of the tenant whose token sent it.
struct TenantSink(BTreeMap<TenantId, Arc<SpanStore>>);

impl TenantSink {
    /// Writes `batch` to `tenant`'s store, logging `request` in its WAL when there is one.
    fn send(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
        request: Option<Bytes>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        let Some(store) = self.0.get(tenant).cloned() else {
            // Every token's tenant has a store; reaching this is a bug, not a client error.
            let message = format!("no store for tenant {tenant}");
            return Box::pin(async move { Err(SinkError::Internal(message)) });
        };
        Box::pin(async move {
            match request {
                Some(request) => store.write_request(batch, request).await,
                None => store.write(batch).await,
            }
            .map_err(sink_error)
        })
    }
}

impl SpanSink for TenantSink {
    fn write(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.send(tenant, batch, None)
    }

    fn write_request(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
        request: Bytes,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.send(tenant, batch, Some(request))
    }
}

/// How often the watchdog samples the process's resident memory.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between attempts while /proc/self/status cannot be read.
const RSS_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The RSS safety net: samples /proc/self/status into the budget, which refuses requests
/// while the process is above its high-water mark. A thread of its own, so a busy runtime
/// cannot delay the samples it exists to take.
fn start_rss_watchdog(budget: Arc<MemoryBudget>, liveness: &Arc<Liveness>) -> anyhow::Result<()> {
    let guard = liveness.start(Stage::RssWatchdog);
    std::thread::Builder::new()
        .name("flowscope-rss".into())
        .spawn(move || {
            watch_rss(
                &budget,
                &guard,
                || std::fs::read_to_string("/proc/self/status"),
                |wait| {
                    std::thread::sleep(wait);
                    ControlFlow::Continue(())
                },
            );
        })
        .context("cannot start the memory watchdog")?;
    Ok(())
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

async fn serve(mut config: ServeConfig) -> anyhow::Result<()> {
    // Before any file is opened: the stores' files count against the same limit.
    let descriptors = listen::raise_descriptor_limit();
    tracing::info!(
        soft_before = descriptors.soft_before,
        hard = descriptors.hard,
        soft = descriptors.soft,
        "open-file limit"
    );
    // Every port is bound before anything is created on disk: a busy port must fail the
    // start without leaving a data directory behind. Connections wait in the backlog until
    // the servers start.
    let grpc = bind("otlp-grpc", config.otlp_grpc_addr, "--otlp-grpc-addr").await?;
    let http = bind("otlp-http", config.otlp_http_addr, "--otlp-http-addr").await?;
    let api = bind("api", config.api_addr, "--api-addr").await?;
    // Then the data directory is ours alone, before a WAL is replayed or a file opened; the
    // lock lasts until this function returns.
    let (data_dir, _data_dir_lock) = data_dir::create_and_lock(&config.store.data_dir)?;
    config.store.data_dir = data_dir.clone();
    let memory_figures = config.collector.memory.figures();
    tracing::info!(
        memory_limit_mib = memory_figures.memory_limit >> 20,
        request_budget_mib = memory_figures.in_flight_limit >> 20,
        ingest_buffer_mib = memory_figures.ingest_buffer_limit >> 20,
        high_water_mib = memory_figures.high_water >> 20,
        max_request_bytes = config.collector.max_request_bytes,
        "memory ceiling"
    );
    // Every background stage registers here; /healthz fails if one stops while we run.
    let liveness = Liveness::new();
    start_rss_watchdog(config.collector.memory.clone(), &liveness)?;
    if config.access.is_open() {
        tracing::warn!(
            api = %config.api_addr,
            "no tokens configured: anyone who reaches a port may send spans, and anyone who reaches the API is an admin, so the API listens on loopback only; give --tokens-file or --admin-token to open it to the network"
        );
    }
    // One query memory pool, runtime and set of permits for all tenants together.
    let sql_resources =
        SqlResources::new(&config.sql).context("cannot start the SQL engine's runtime")?;
    let mut spaces = Vec::new();
    for tenant in config.access.tenants() {
        spaces.push(open_tenant(&config, tenant, &sql_resources, &liveness).await?);
    }
    let tenant_views: BTreeMap<TenantId, TenantView> = spaces
        .iter()
        .map(|space| (space.tenant.clone(), space.view.clone()))
        .collect();
    let engines: flowscope_alert::scheduler::Engines = Arc::new(
        spaces
            .iter()
            .map(|space| (space.tenant.as_str().to_string(), space.view.engine.clone()))
            .collect(),
    );
    let sink: Arc<dyn SpanSink> = Arc::new(TenantSink(
        spaces
            .iter()
            .map(|space| (space.tenant.clone(), space.store.clone()))
            .collect(),
    ));

    let metadata_path = data_dir.join("metadata.sqlite");
    let metadata = flowscope_alert::Metadata::open(&metadata_path)
        .await
        .with_context(|| {
            format!(
                "cannot open the metadata database {}",
                metadata_path.display()
            )
        })?;

    // The stores, their WAL and the metadata database are open: what is left of the
    // descriptor limit, less a reserve for the files they open later, is for connections.
    let in_use = listen::open_descriptors().unwrap_or(0);
    let plan = listen::plan_connections(
        descriptors.soft,
        in_use,
        spaces.len() as u64,
        config.connections.max_connections,
    )?;
    if let Some(asked) = plan.lowered_from {
        tracing::warn!(
            asked,
            lowered_to = plan.per_listener,
            open_file_limit = descriptors.soft,
            "--max-connections is more than the open-file limit covers for three ports; lowered (raise ulimit -n for more)"
        );
    }
    tracing::info!(
        per_listener = plan.per_listener,
        descriptors_open = in_use,
        descriptors_reserved = plan.reserved,
        header_read_timeout_s = config.connections.header_read_timeout.as_secs_f64(),
        idle_timeout_s = config.connections.idle_timeout.as_secs_f64(),
        request_body_timeout_s = config.connections.request_body_timeout.as_secs_f64(),
        "connection limits"
    );
    let connections = flowscope_web::connections::Connections::default();
    let listener = |tcp, name, counters, first_request_timeout| {
        listen::Listener::new(
            tcp,
            name,
            plan.per_listener,
            counters,
            config.connections.idle_timeout,
            first_request_timeout,
        )
    };
    let http_first_request = Some(config.connections.header_read_timeout);

    let grpc_addr = grpc.local_addr()?;
    // gRPC clients may open their channel long before the first export: no first-request
    // deadline there, only the idle timeout and HTTP/2 keepalive.
    let grpc = listener(grpc, "otlp-grpc", connections.otlp_grpc.clone(), None);
    let http_addr = http.local_addr()?;
    let http = listener(
        http,
        "otlp-http",
        connections.otlp_http.clone(),
        http_first_request,
    );
    let api_addr = api.local_addr()?;
    let api = listener(api, "api", connections.api.clone(), http_first_request);

    let (stop_tx, stop_rx) = watch::channel(false);
    // One set of labelled figures: the receivers count into the collector config's, the
    // alert stages and the API share it.
    let telemetry = config.collector.telemetry.clone();
    let ready = Arc::new(AtomicBool::new(false));

    let grpc_task = tokio::spawn(flowscope_collector::serve_grpc(
        grpc.incoming(),
        sink.clone(),
        config.collector.clone(),
        stopped(stop_rx.clone()),
    ));
    let http_router = flowscope_collector::http_router(sink, config.collector.clone());
    let http_task = tokio::spawn(listen::serve_http(
        http,
        http_router,
        config.connections.clone(),
        listen::ErrorBody::Text,
        stopped(stop_rx.clone()),
    ));
    // Links in notifications point at the API address unless users reach it elsewhere.
    let external_url = config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{api_addr}"));
    let scheduler_task = tokio::spawn(flowscope_alert::scheduler::run(
        metadata.clone(),
        engines,
        flowscope_alert::scheduler::SchedulerConfig {
            liveness: liveness.clone(),
            telemetry: telemetry.clone(),
            ..flowscope_alert::scheduler::SchedulerConfig::new(external_url.clone())
        },
        stopped(stop_rx.clone()),
    ));
    // The delivery worker sends what is in the outbox, including what was left pending when
    // the last run was killed.
    let delivery_task = {
        let (metadata, stop) = (metadata.clone(), stopped(stop_rx.clone()));
        let delivery = flowscope_alert::deliver::DeliveryConfig {
            liveness: liveness.clone(),
            telemetry: telemetry.clone(),
            ..config.delivery.clone()
        };
        tokio::spawn(async move {
            if let Err(error) = flowscope_alert::deliver::run(metadata, delivery, stop).await {
                tracing::error!(%error, "the webhook delivery worker stopped; webhooks are not sent");
            }
        })
    };
    let api_state = ApiState {
        tenants: Arc::new(tenant_views),
        access: config.access.clone(),
        sessions: Default::default(),
        config: config.api.clone(),
        ready: ready.clone(),
        info: flowscope_web::ServerInfo {
            otlp_grpc_addr: Some(grpc_addr),
            otlp_http_addr: Some(http_addr),
            graph_horizon: config.graph.horizon,
            external_url: Some(external_url.clone()),
        },
        metadata,
        memory: config.collector.memory.clone(),
        connections,
        liveness: liveness.clone(),
        logins: Arc::default(),
        telemetry,
    };
    // The accept layer gives every API request its client's address (login throttling).
    let api_task = tokio::spawn(listen::serve_http(
        api,
        flowscope_web::router(api_state),
        config.connections.clone(),
        listen::ErrorBody::Json,
        stopped(stop_rx.clone()),
    ));
    if let Some(topology) = config.demo.clone() {
        // The demo is a client like any other: it reaches the gRPC port over loopback.
        let target = SocketAddr::new(
            if grpc_addr.ip().is_unspecified() {
                [127, 0, 0, 1].into()
            } else {
                grpc_addr.ip()
            },
            grpc_addr.port(),
        );
        tokio::spawn(flowscope_demo::run(
            format!("http://{target}"),
            flowscope_demo::DemoConfig {
                token: config.demo_token.clone(),
                ..flowscope_demo::DemoConfig::new(topology)
            },
            stopped(stop_rx.clone()),
        ));
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!("flowscope is ready");

    shutdown_signal().await;
    tracing::info!("shutting down: no new requests; flushing spans to Parquet");
    // Stages end from here on because they are told to: not a failed health check.
    liveness.shutting_down();
    let _ = stop_tx.send(true);
    // Requests in flight get a few seconds to finish; the store flush comes after them.
    let drain = async {
        let _ = grpc_task.await;
        let _ = http_task.await;
        let _ = api_task.await;
        let _ = scheduler_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within 10s of shutdown");
    }
    // Webhook requests under way finish within their own timeout; anything left pending is
    // sent after the next start.
    if let Err(error) = delivery_task.await {
        tracing::error!(%error, "the webhook delivery worker panicked");
    }
    let mut flushed = Ok(());
    for space in spaces {
        let TenantSpace {
            tenant,
            store,
            view,
            graph_thread,
        } = space;
        if let Err(error) = store.close().await {
            tracing::error!(%tenant, %error, "flushing spans at shutdown failed; they remain in the WAL");
            flushed = Err(anyhow::anyhow!(
                "flushing tenant {tenant}'s spans at shutdown failed; they remain in the WAL: {error}"
            ));
        }
        // The store's writer held the only sender: the graph stage ends with it.
        drop((store, view));
        let _ = tokio::task::spawn_blocking(move || graph_thread.join()).await;
    }
    flushed?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
