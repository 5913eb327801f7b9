//! The one typed configuration: command-line flags, `FLOWSCOPE_*` environment variables and
//! an optional TOML file, validated once and split into each crate's own config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, bail};
use flowscope_alert::{DeliveryConfig, RetryPolicy};
use flowscope_auth::{Access, Limits, Role, TenantId, TokenEntry};
use flowscope_base::memory::MemoryBudget;
use flowscope_base::parse_duration;
use flowscope_collector::CollectorConfig;
use flowscope_demo::Topology;
use flowscope_graph::GraphConfig;
use flowscope_query::graph::health::Objective;
use flowscope_query::{RequestDecoder, SqlConfig, StoreConfig, WalSync};
use flowscope_web::ApiConfig;
use rand::RngCore as _;
use serde::Deserialize;

use crate::listen::ConnectionConfig;

/// Flags of `flowscope serve`. Each also reads an environment variable; a flag given on the
/// command line wins over the variable, which wins over the config file.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Also run a simulated event-driven system (a shop with a queue, a feedback loop and a
    /// scheduled incident) that sends its traces to this server over OTLP/gRPC
    #[arg(long, env = "FLOWSCOPE_DEMO")]
    demo: bool,
    /// The system `--demo` simulates: a preset (shop, city) or a topology file; implies
    /// `--demo` [default: shop]
    #[arg(long, env = "FLOWSCOPE_DEMO_TOPOLOGY")]
    demo_topology: Option<String>,
    /// TOML file with any of the settings below (snake_case keys, e.g. `data_dir = "/var/lib/flowscope"`).
    #[arg(long, env = "FLOWSCOPE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the write-ahead log and Parquet segments [default: ./flowscope-data]
    #[arg(long, env = "FLOWSCOPE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address; port 0 picks a free port [default: 0.0.0.0:4317]
    #[arg(long, env = "FLOWSCOPE_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address (POST /v1/traces) [default: 0.0.0.0:4318]
    #[arg(long, env = "FLOWSCOPE_OTLP_HTTP_ADDR")]
    otlp_http_addr: Option<SocketAddr>,
    /// API and dashboard listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "FLOWSCOPE_API_ADDR")]
    api_addr: Option<SocketAddr>,
    /// Delete spans that started longer ago than this, e.g. 7d, 12h [default: 7d]
    #[arg(long, env = "FLOWSCOPE_RETENTION")]
    retention: Option<String>,
    /// Largest OTLP request accepted, after decompression, e.g. 64MiB [default: 64MiB]
    #[arg(long, env = "FLOWSCOPE_MAX_REQUEST_SIZE")]
    max_request_size: Option<String>,
    /// `always`: fsync the WAL before acknowledging (survives power loss); `never`: write
    /// before acknowledging, fsync when a segment is sealed (survives a crash) [default: always]
    #[arg(long, env = "FLOWSCOPE_WAL_SYNC")]
    wal_sync: Option<String>,
    /// Flush in-memory spans to Parquet at least this often [default: 60s]
    #[arg(long, env = "FLOWSCOPE_FLUSH_INTERVAL")]
    flush_interval: Option<String>,
    /// Flush in-memory spans to Parquet once this many are waiting [default: 262144]
    #[arg(long, env = "FLOWSCOPE_FLUSH_ROWS")]
    flush_rows: Option<usize>,
    /// The memory ceiling, e.g. 2GiB: the request budget (1/8), the ingest buffer (1/8) and
    /// SQL memory (1/4, unless given) and the RSS high-water mark (85%) are derived from
    /// it; past them ingest answers 503 / UNAVAILABLE with a retry delay
    /// [default: 3/4 of the machine's or cgroup's memory, at most 4GiB]
    #[arg(long, env = "FLOWSCOPE_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// Memory for spans waiting to be flushed, all tenants together; past it ingest answers
    /// "retry later" [default: 1/8 of --memory-limit]
    #[arg(long, env = "FLOWSCOPE_INGEST_BUFFER")]
    ingest_buffer: Option<String>,
    /// Longest a SQL query may run [default: 30s]
    #[arg(long, env = "FLOWSCOPE_SQL_TIMEOUT")]
    sql_timeout: Option<String>,
    /// Memory all running SQL queries may use together [default: 1GiB]
    #[arg(long, env = "FLOWSCOPE_SQL_MEMORY_LIMIT")]
    sql_memory_limit: Option<String>,
    /// Rows in a JSON answer of /api/sql; more sets "truncated": true [default: 10000]
    #[arg(long, env = "FLOWSCOPE_SQL_MAX_ROWS")]
    sql_max_rows: Option<usize>,
    /// Bytes in one /api/sql answer, e.g. 64MiB; JSON then ends with "truncated": true, CSV
    /// at a whole row, Arrow at a whole batch [default: 256MiB]
    #[arg(long, env = "FLOWSCOPE_SQL_MAX_RESPONSE")]
    sql_max_response: Option<String>,
    /// SQL queries that may run at once, all tenants together; more wait within their
    /// timeout, then answer 503 [default: 4]
    #[arg(long, env = "FLOWSCOPE_SQL_MAX_CONCURRENT")]
    sql_max_concurrent: Option<usize>,
    /// SQL queries one tenant may run at once, so that one tenant cannot take every
    /// permit [default: half of --sql-max-concurrent, rounded up]
    #[arg(long, env = "FLOWSCOPE_SQL_MAX_CONCURRENT_PER_TENANT")]
    sql_max_concurrent_per_tenant: Option<usize>,
    /// How long a span waits for its other half (client for server, producer for consumer)
    /// before a lone CLIENT span becomes an edge to a database or external node [default: 30s]
    #[arg(long, env = "FLOWSCOPE_GRAPH_PAIRING_TTL")]
    graph_pairing_ttl: Option<String>,
    /// Width of the live graph's statistics buckets: its finest time window [default: 10s]
    #[arg(long, env = "FLOWSCOPE_GRAPH_BUCKET")]
    graph_bucket: Option<String>,
    /// How long the live graph keeps its buckets in memory [default: 1h]
    #[arg(long, env = "FLOWSCOPE_GRAPH_HORIZON")]
    graph_horizon: Option<String>,
    /// Where users reach this flowscope, for the links in alert notifications (externalURL,
    /// generatorURL), e.g. https://flowscope.example.com [default: http://<api-addr>]
    #[arg(long, env = "FLOWSCOPE_EXTERNAL_URL")]
    external_url: Option<String>,
    /// Let webhooks target loopback, private, link-local and unique-local addresses (refused
    /// by default: a webhook URL must not reach into the network flowscope runs in)
    #[arg(long, env = "FLOWSCOPE_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Keep retrying a webhook notification this long after it was created [default: 24h]
    #[arg(long, env = "FLOWSCOPE_WEBHOOK_RETRY_HORIZON")]
    webhook_retry_horizon: Option<String>,
    /// The first webhook retry waits about this long; each further one doubles, up to 10m.
    /// Small values are for tests [default: 1s]
    #[arg(long, env = "FLOWSCOPE_WEBHOOK_RETRY_BASE", hide = true)]
    webhook_retry_base: Option<String>,
    /// TOML file of tokens, each mapped to a tenant and a role (ingest, read, admin), and
    /// per-tenant rate limits; see README "Authentication and tenants". Without any token
    /// flowscope is open and keeps its API on loopback
    #[arg(long, env = "FLOWSCOPE_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// A token that may send spans to the default tenant (at least 16 characters; prefer the
    /// environment variable, which `ps` does not show)
    #[arg(long, env = "FLOWSCOPE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// A token that may read the default tenant's spans, graph and alert rules
    #[arg(long, env = "FLOWSCOPE_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// A token that may do everything for the default tenant, rules and webhooks included
    #[arg(long, env = "FLOWSCOPE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Spans per second each tenant may send, unless its [tenant.NAME] entry says otherwise;
    /// more is answered 429 / RESOURCE_EXHAUSTED with a retry delay [default: unlimited]
    #[arg(long, env = "FLOWSCOPE_TENANT_MAX_SPANS_PER_SECOND")]
    tenant_max_spans_per_second: Option<u64>,
    /// Bytes per second (after decompression) each tenant may send, e.g. 16MiB [default: unlimited]
    #[arg(long, env = "FLOWSCOPE_TENANT_MAX_BYTES_PER_SECOND")]
    tenant_max_bytes_per_second: Option<String>,
    /// OTLP/HTTP and the API close a connection whose request head has not arrived this long
    /// after it opened, or after the previous answer on HTTP/1.1 keep-alive [default: 10s]
    #[arg(long, env = "FLOWSCOPE_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<String>,
    /// Every port closes a connection on which no byte has moved either way for this long;
    /// must be longer than --sql-timeout [default: 60s]
    #[arg(long, env = "FLOWSCOPE_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// OTLP/HTTP and the API answer 408 to a request whose body has not arrived whole this
    /// long after the request started [default: 30s]
    #[arg(long, env = "FLOWSCOPE_REQUEST_BODY_TIMEOUT")]
    request_body_timeout: Option<String>,
    /// Connections each port holds at once; more are closed as they arrive. Lowered, with a
    /// warning, when the open-file limit cannot cover it [default: the open-file limit, less
    /// a reserve for the server's own files, split among the three ports, at most 10000 each]
    #[arg(long, env = "FLOWSCOPE_MAX_CONNECTIONS")]
    max_connections: Option<u64>,
    /// How the log on stderr is written: `text` (coloured only when stderr is a terminal
    /// and NO_COLOR is unset) or `json` (one object per line) [default: text]
    #[arg(long, env = "FLOWSCOPE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

/// The log's format on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, `target` and the event's
    /// own fields, for log shippers.
    Json,
}

/// The same settings as a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    otlp_grpc_addr: Option<SocketAddr>,
    otlp_http_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    retention: Option<String>,
    max_request_size: Option<String>,
    wal_sync: Option<String>,
    flush_interval: Option<String>,
    flush_rows: Option<usize>,
    memory_limit: Option<String>,
    ingest_buffer: Option<String>,
    sql_timeout: Option<String>,
    sql_memory_limit: Option<String>,
    sql_max_rows: Option<usize>,
    sql_max_response: Option<String>,
    sql_max_concurrent: Option<usize>,
    sql_max_concurrent_per_tenant: Option<usize>,
    graph_pairing_ttl: Option<String>,
    graph_bucket: Option<String>,
    graph_horizon: Option<String>,
    demo: Option<bool>,
    demo_topology: Option<String>,
    external_url: Option<String>,
    allow_private_webhooks: Option<bool>,
    webhook_retry_horizon: Option<String>,
    webhook_retry_base: Option<String>,
    tokens_file: Option<PathBuf>,
    ingest_token: Option<String>,
    read_token: Option<String>,
    admin_token: Option<String>,
    tenant_max_spans_per_second: Option<u64>,
    tenant_max_bytes_per_second: Option<String>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    request_body_timeout: Option<String>,
    max_connections: Option<u64>,
    log_format: Option<LogFormat>,
    /// `[[objective]]` tables: what the operator expects of a service or an edge.
    #[serde(default)]
    objective: Vec<ObjectiveFile>,
}

/// One `[[objective]]`: a service's own figures (calls into it), or with `target` those of
/// its calls to `target`. Breaching one makes the element at least degraded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectiveFile {
    service: String,
    target: Option<String>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// A fraction: 0.01 is 1%.
    error_rate: Option<f64>,
}

/// The objectives of the config file, checked.
fn objectives(given: Vec<ObjectiveFile>) -> anyhow::Result<Vec<Objective>> {
    given
        .into_iter()
        .map(|o| {
            let what = match &o.target {
                Some(target) => format!("objective for {} -> {target}", o.service),
                None => format!("objective for {}", o.service),
            };
            if o.service.is_empty() || o.target.as_deref() == Some("") {
                bail!("an objective's `service` and `target` must not be empty");
            }
            if o.p95_ms.is_none() && o.p99_ms.is_none() && o.error_rate.is_none() {
                bail!("{what} sets nothing: give p95_ms, p99_ms or error_rate");
            }
            for (name, value) in [("p95_ms", o.p95_ms), ("p99_ms", o.p99_ms)] {
                if let Some(value) = value
                    && !(value > 0.0 && value.is_finite())
                {
                    bail!("{what}: {name} must be a number of milliseconds above 0");
                }
            }
            if let Some(rate) = o.error_rate
                && !(0.0..1.0).contains(&rate)
            {
                bail!("{what}: error_rate is a fraction from 0 up to 1, e.g. 0.01 for 1%");
            }
            Ok(Objective {
                service: o.service,
                target: o.target,
                p95_ms: o.p95_ms,
                p99_ms: o.p99_ms,
                error_rate: o.error_rate,
            })
        })
        .collect()
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub store: StoreConfig,
    pub collector: CollectorConfig,
    pub sql: SqlConfig,
    pub api: ApiConfig,
    pub graph: GraphConfig,
    /// The simulated system to run against this server, if any.
    pub demo: Option<Topology>,
    /// Where users reach this server; `None` means the bound API address.
    pub external_url: Option<String>,
    /// The webhook delivery worker.
    pub delivery: DeliveryConfig,
    /// The tokens (none: open) and per-tenant limits, shared with the receivers and the API.
    pub access: Arc<Access>,
    /// The token the built-in demo sends with, when tokens are configured.
    pub demo_token: Option<String>,
    /// Every listener's connection cap and timeouts.
    pub connections: ConnectionConfig,
    /// What health judges nodes and edges against besides their own baselines.
    pub objectives: Vec<Objective>,
}

/// The configured tokens: the tokens file's plus the default tenant's from flags; none at
/// all means the server is open.
/// With `demo`, and tokens configured, also a token of this process only, with which the
/// built-in demo sends to the default tenant.
fn access(
    tokens_file: Option<PathBuf>,
    flag_tokens: [(Role, Option<String>); 3],
    default_limits: Limits,
    demo: bool,
) -> anyhow::Result<(Access, Option<String>)> {
    let mut entries = Vec::new();
    for (role, token) in flag_tokens {
        if let Some(token) = token {
            let entry = TokenEntry::new(&token, TenantId::default_tenant(), role)
                .map_err(|e| anyhow::anyhow!("--{}-token: {e}", role.as_str()))?;
            entries.push(entry);
        }
    }
    let open = tokens_file.is_none() && entries.is_empty();
    let demo_token = (demo && !open).then(|| {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    });
    if let Some(token) = &demo_token {
        entries.push(
            TokenEntry::new(token, TenantId::default_tenant(), Role::Ingest)
                .map_err(anyhow::Error::msg)?,
        );
    }
    let access = match tokens_file {
        Some(path) => Access::load(&path, entries, default_limits)?,
        None if open => Access::open(default_limits),
        None => {
            Access::new(entries, Default::default(), default_limits).map_err(anyhow::Error::msg)?
        }
    };
    Ok((access, demo_token))
}

/// Without tokens anyone who reaches the API is an admin: keep it on loopback.
fn api_addr(asked: SocketAddr, access: &Access) -> SocketAddr {
    if access.is_open() && !asked.ip().is_loopback() {
        return SocketAddr::from(([127, 0, 0, 1], asked.port()));
    }
    asked
}

const MIN_MEMORY_LIMIT: usize = 64 << 20;
/// Memory of one span in the live graph's pairing store (measured: 78 MB for 288,000).
const PENDING_SPAN_BYTES: usize = 300;
const MAX_DEFAULT_MEMORY_LIMIT: usize = 4 << 30;

impl ServeArgs {
    /// The `--log-format` these arguments resolve to, read before the logger starts (so
    /// before the rest is resolved); a config file that cannot be read gives the default
    /// here, and [`ServeConfig::resolve`] then reports it.
    pub fn log_format(&self) -> LogFormat {
        if let Some(format) = self.log_format {
            return format;
        }
        let from_file = self.config.as_ref().and_then(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            toml::from_str::<FileConfig>(&text).ok()?.log_format
        });
        from_file.unwrap_or_default()
    }

    /// The `--memory-limit` these arguments resolve to, read before anything else runs (the
    /// allocator's settings depend on it); `None` if they do not resolve, which
    /// [`ServeConfig::resolve`] then reports.
    pub fn memory_limit(&self) -> Option<usize> {
        let from_file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).ok()?;
                toml::from_str::<FileConfig>(&text).ok()?.memory_limit
            }
            None => None,
        };
        let text = self.memory_limit.clone().or(from_file);
        size("memory-limit", text, default_memory_limit()).ok()
    }
}

/// Three quarters of the memory this process may use (its cgroup's limit, else the
/// machine's), at most 4GiB: SQL memory then keeps its 1GiB default on a large machine (the
/// ingest buffer gets 512MiB), and both shrink on a small one.
fn default_memory_limit() -> usize {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    let available = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => return MAX_DEFAULT_MEMORY_LIMIT,
    };
    (available / 4 * 3).clamp(MIN_MEMORY_LIMIT, MAX_DEFAULT_MEMORY_LIMIT)
}

/// Parses `64MiB`, `1GiB`, `512KiB`, `1GB` or a plain number of bytes.
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    flowscope_base::parse_size(text).map_err(anyhow::Error::msg)
}

fn duration(name: &str, text: Option<String>, default: Duration) -> anyhow::Result<Duration> {
    match text {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|e| anyhow::anyhow!("--{name}: {e}")),
    }
}

fn size(name: &str, text: Option<String>, default: usize) -> anyhow::Result<usize> {
    match text {
        None => Ok(default),
        Some(text) => parse_size(&text).with_context(|| format!("--{name}")),
    }
}

/// An absolute http(s) URL without a trailing slash, so links can be appended to it.
fn external_url(text: &str) -> anyhow::Result<String> {
    let url = text.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url.to_string()),
        _ => bail!(
            "--external-url `{text}` must be an absolute http(s) URL, e.g. https://flowscope.example.com"
        ),
    }
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./flowscope-data"));
        // Nothing is created here: `serve` creates, resolves and locks the directory only
        // once its ports are bound (`data_dir::create_and_lock`).
        let data_dir = std::path::absolute(&data_dir)
            .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;

        let wal_sync = match args.wal_sync.or(file.wal_sync) {
            None => WalSync::Always,
            Some(text) => text
                .parse::<WalSync>()
                .map_err(|e| anyhow::anyhow!("--wal-sync: {e}"))?,
        };
        let mut store = StoreConfig::new(data_dir);
        store.wal_sync = wal_sync;
        // The WAL logs each OTLP/protobuf request as it arrived; replay decodes it with the
        // receivers' own decoder, so the rows come back as they were acknowledged.
        store.request_decoder = Some(RequestDecoder::new(|request| {
            flowscope_collector::decode::decode_protobuf(request)
                .map(|decoded| decoded.batch)
                .map_err(|error| error.to_string())
        }));
        store.retention = duration(
            "retention",
            args.retention.or(file.retention),
            store.retention,
        )?;
        store.flush_interval = duration(
            "flush-interval",
            args.flush_interval.or(file.flush_interval),
            store.flush_interval,
        )?;
        store.flush_rows = args
            .flush_rows
            .or(file.flush_rows)
            .unwrap_or(store.flush_rows);
        let memory_limit = size(
            "memory-limit",
            args.memory_limit.or(file.memory_limit),
            default_memory_limit(),
        )?;
        if memory_limit < MIN_MEMORY_LIMIT {
            bail!("--memory-limit must be at least 64MiB");
        }
        let ingest_buffer = size(
            "ingest-buffer",
            args.ingest_buffer.or(file.ingest_buffer),
            memory_limit / 8,
        )?;
        if ingest_buffer > memory_limit / 2 {
            bail!(
                "--ingest-buffer must be at most half of --memory-limit ({} MiB); raise --memory-limit or lower --ingest-buffer",
                memory_limit >> 21
            );
        }
        let memory = Arc::new(
            MemoryBudget::new(memory_limit, memory_limit / 8, memory_limit / 20 * 17)
                .with_ingest_buffer(ingest_buffer),
        );
        // Every tenant's store gets a clone of this config, so they share the one budget.
        store.memory = memory.clone();
        if store.flush_rows == 0 || store.flush_interval.is_zero() {
            bail!("--flush-rows and --flush-interval must be greater than zero");
        }
        if store.retention < Duration::from_secs(60) {
            bail!("--retention must be at least 1m");
        }

        let demo_topology = args.demo_topology.or(file.demo_topology);
        let demo = if args.demo || file.demo.unwrap_or(false) || demo_topology.is_some() {
            let topology = Topology::load(demo_topology.as_deref().unwrap_or("shop"))
                .context("--demo-topology")?;
            Some(topology)
        } else {
            None
        };

        let (access, demo_token) = access(
            args.tokens_file.or(file.tokens_file),
            [
                (Role::Ingest, args.ingest_token.or(file.ingest_token)),
                (Role::Read, args.read_token.or(file.read_token)),
                (Role::Admin, args.admin_token.or(file.admin_token)),
            ],
            Limits {
                spans_per_second: args
                    .tenant_max_spans_per_second
                    .or(file.tenant_max_spans_per_second)
                    .filter(|n| *n > 0),
                bytes_per_second: match args
                    .tenant_max_bytes_per_second
                    .or(file.tenant_max_bytes_per_second)
                {
                    None => None,
                    Some(text) => {
                        Some(parse_size(&text).context("--tenant-max-bytes-per-second")? as u64)
                            .filter(|n| *n > 0)
                    }
                },
            },
            demo.is_some(),
        )?;
        let access = Arc::new(access);
        let mut collector = CollectorConfig {
            max_request_bytes: size(
                "max-request-size",
                args.max_request_size.or(file.max_request_size),
                64 << 20,
            )?,
            access: access.clone(),
            memory: memory.clone(),
            retention: Some(store.retention),
            ..CollectorConfig::default()
        };
        if collector.max_request_bytes < 1024 {
            bail!("--max-request-size must be at least 1KiB");
        }
        // A request holds a few times its size while it is read and decoded; one that can
        // never fit in the request budget must be refused for good (413), not answered
        // "retry later" forever.
        let fits = memory_limit / 8 / flowscope_collector::REQUEST_MEMORY_FACTOR;
        if collector.max_request_bytes > fits {
            tracing::warn!(
                max_request_size_mib = collector.max_request_bytes >> 20,
                lowered_to_mib = fits >> 20,
                "--max-request-size is more than --memory-limit allows a request; lowered"
            );
            collector.max_request_bytes = fits;
        }

        let mut sql = SqlConfig::default();
        sql.timeout = duration(
            "sql-timeout",
            args.sql_timeout.or(file.sql_timeout),
            sql.timeout,
        )?;
        sql.memory_limit = size(
            "sql-memory-limit",
            args.sql_memory_limit.or(file.sql_memory_limit),
            sql.memory_limit.min(memory_limit / 4),
        )?;
        sql.max_concurrent = args
            .sql_max_concurrent
            .or(file.sql_max_concurrent)
            .unwrap_or(sql.max_concurrent);
        sql.max_concurrent_per_tenant = args
            .sql_max_concurrent_per_tenant
            .or(file.sql_max_concurrent_per_tenant)
            .unwrap_or(sql.max_concurrent.div_ceil(2));
        if sql.max_concurrent == 0 || sql.max_concurrent_per_tenant == 0 {
            bail!("--sql-max-concurrent and --sql-max-concurrent-per-tenant must be at least 1");
        }
        let connections = connection_config(
            ConnectionFlags {
                header_read_timeout: args.header_read_timeout.or(file.header_read_timeout),
                idle_timeout: args.idle_timeout.or(file.idle_timeout),
                request_body_timeout: args.request_body_timeout.or(file.request_body_timeout),
                max_connections: args.max_connections.or(file.max_connections),
            },
            sql.timeout,
        )?;
        collector.http2_keepalive = Some(connections.http2_keepalive());
        let allow_private_webhooks =
            args.allow_private_webhooks || file.allow_private_webhooks.unwrap_or(false);
        let mut api = ApiConfig::default();
        api.max_json_rows = args
            .sql_max_rows
            .or(file.sql_max_rows)
            .unwrap_or(api.max_json_rows);
        api.max_response_bytes = size(
            "sql-max-response",
            args.sql_max_response.or(file.sql_max_response),
            api.max_response_bytes,
        )?;
        if api.max_response_bytes < flowscope_web::SQL_FIRST_PART {
            bail!(
                "--sql-max-response must be at least {} KiB",
                flowscope_web::SQL_FIRST_PART >> 10
            );
        }
        api.allow_private_webhooks = allow_private_webhooks;

        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            horizon: duration(
                "webhook-retry-horizon",
                args.webhook_retry_horizon.or(file.webhook_retry_horizon),
                defaults.horizon,
            )?,
            base: duration(
                "webhook-retry-base",
                args.webhook_retry_base.or(file.webhook_retry_base),
                defaults.base,
            )?,
            cap: defaults.cap,
        };
        if retry.horizon.is_zero() || retry.base.is_zero() || retry.base > retry.cap {
            bail!(
                "--webhook-retry-horizon must be above zero and --webhook-retry-base between 1ms and {}s",
                retry.cap.as_secs()
            );
        }
        let delivery = DeliveryConfig {
            allow_private: allow_private_webhooks,
            retry,
            ..DeliveryConfig::default()
        };

        let mut graph = GraphConfig::default();
        graph.pairing_ttl = duration(
            "graph-pairing-ttl",
            args.graph_pairing_ttl.or(file.graph_pairing_ttl),
            graph.pairing_ttl,
        )?;
        graph.bucket = duration(
            "graph-bucket",
            args.graph_bucket.or(file.graph_bucket),
            graph.bucket,
        )?;
        graph.horizon = duration(
            "graph-horizon",
            args.graph_horizon.or(file.graph_horizon),
            graph.horizon,
        )?;
        if graph.bucket < Duration::from_secs(1)
            || graph.horizon < graph.bucket
            || graph.pairing_ttl.is_zero()
        {
            bail!(
                "--graph-bucket must be at least 1s, --graph-horizon at least one bucket, --graph-pairing-ttl above zero"
            );
        }

        // The pairing store holds about PENDING_SPAN_BYTES per span waiting for its other
        // half; all tenants' graphs together get an eighth of the memory ceiling.
        let tenants = access.tenants().len().max(1);
        graph.max_pending_spans = graph
            .max_pending_spans
            .min(memory_limit / 8 / PENDING_SPAN_BYTES / tenants)
            .max(1000);

        let external_url = match args.external_url.or(file.external_url) {
            None => None,
            Some(url) => Some(external_url(&url)?),
        };

        let objectives = objectives(file.objective)?;

        // The logger was set up from these before (`ServeArgs::log_format`); the file's
        // value was checked when it was parsed.
        let _ = (args.log_format, file.log_format);

        Ok(Self {
            objectives,
            demo,
            external_url,
            delivery,
            graph,
            otlp_grpc_addr: args
                .otlp_grpc_addr
                .or(file.otlp_grpc_addr)
                .unwrap_or_else(|| default_addr("0.0.0.0:4317")),
            otlp_http_addr: args
                .otlp_http_addr
                .or(file.otlp_http_addr)
                .unwrap_or_else(|| default_addr("0.0.0.0:4318")),
            api_addr: api_addr(
                args.api_addr
                    .or(file.api_addr)
                    .unwrap_or_else(|| default_addr("127.0.0.1:8080")),
                &access,
            ),
            access,
            demo_token,
            store,
            collector,
            sql,
            api,
            connections,
        })
    }
}

/// The connection flags as given, before defaults.
struct ConnectionFlags {
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    request_body_timeout: Option<String>,
    max_connections: Option<u64>,
}

/// The connection limits, checked against each other and against `--sql-timeout`: a
/// connection waiting for a query's answer moves no byte, so the idle timeout must outlast
/// the longest query.
fn connection_config(
    flags: ConnectionFlags,
    sql_timeout: Duration,
) -> anyhow::Result<ConnectionConfig> {
    let defaults = ConnectionConfig::default();
    let given_idle = flags.idle_timeout.is_some();
    let mut config = ConnectionConfig {
        header_read_timeout: duration(
            "header-read-timeout",
            flags.header_read_timeout,
            defaults.header_read_timeout,
        )?,
        idle_timeout: duration("idle-timeout", flags.idle_timeout, defaults.idle_timeout)?,
        request_body_timeout: duration(
            "request-body-timeout",
            flags.request_body_timeout,
            defaults.request_body_timeout,
        )?,
        max_connections: flags.max_connections,
    };
    if config.header_read_timeout.is_zero()
        || config.idle_timeout.is_zero()
        || config.request_body_timeout.is_zero()
    {
        bail!(
            "--header-read-timeout, --idle-timeout and --request-body-timeout must be above zero"
        );
    }
    if config.max_connections == Some(0) {
        bail!("--max-connections must be at least 1");
    }
    if config.idle_timeout <= sql_timeout {
        if given_idle {
            bail!(
                "--idle-timeout ({}s) must be longer than --sql-timeout ({}s), or connections waiting for a query's answer are closed: raise --idle-timeout",
                config.idle_timeout.as_secs_f64(),
                sql_timeout.as_secs_f64()
            );
        }
        // Only the default is in the way: keep the idle timeout half a minute past queries.
        config.idle_timeout = sql_timeout + Duration::from_secs(30);
        tracing::info!(
            idle_timeout_s = config.idle_timeout.as_secs_f64(),
            "--idle-timeout raised past --sql-timeout"
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB").ok(), Some(64 << 20));
        assert_eq!(parse_size("1GiB").ok(), Some(1 << 30));
        assert_eq!(parse_size("1500").ok(), Some(1500));
        assert_eq!(parse_size("2MB").ok(), Some(2_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    /// `text` as the config file: the objectives resolved, or the error.
    fn resolve_objectives(text: &str) -> Result<Vec<Objective>, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flowscope.toml");
        std::fs::write(&file, text).expect("write");
        let args = ServeArgs {
            config: Some(file),
            data_dir: Some(dir.path().join("data")),
            ..ServeArgs::default()
        };
        ServeConfig::resolve(args)
            .map(|c| c.objectives)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn objectives_come_from_objective_tables_and_are_checked() {
        let found = resolve_objectives(
            "[[objective]]\nservice = \"payments\"\np95_ms = 300\nerror_rate = 0.01\n\n\
             [[objective]]\nservice = \"payments\"\ntarget = \"card-processor\"\np99_ms = 800\n",
        )
        .expect("valid objectives");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].p95_ms, Some(300.0));
        assert_eq!(found[0].error_rate, Some(0.01));
        assert_eq!(found[1].target.as_deref(), Some("card-processor"));
        let error = |text: &str| resolve_objectives(text).expect_err(text);
        assert!(error("[[objective]]\nservice = \"a\"\np95 = 3\n").contains("unknown field"));
        assert!(error("[[objective]]\nservice = \"a\"\n").contains("sets nothing"));
        assert!(error("[[objective]]\nservice = \"a\"\nerror_rate = 5\n").contains("fraction"));
        assert!(error("[[objective]]\nservice = \"a\"\np99_ms = -1\n").contains("above 0"));
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flowscope.toml");
        std::fs::write(
            &file,
            "retention = \"2d\"\nsql_max_rows = 5\napi_addr = \"127.0.0.1:9999\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file),
            data_dir: Some(dir.path().join("data")),
            sql_max_rows: Some(7),
            ..ServeArgs::default()
        };
        let config = ServeConfig::resolve(args).expect("resolve");
        assert_eq!(config.api.max_json_rows, 7, "flag beats file");
        assert_eq!(
            config.store.retention,
            Duration::from_secs(2 * 86_400),
            "file beats default"
        );
        assert_eq!(
            config.api_addr,
            "127.0.0.1:9999".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            config.otlp_grpc_addr,
            "0.0.0.0:4317".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(config.collector.max_request_bytes, 64 << 20);
        assert!(config.store.data_dir.is_absolute());
        assert!(
            !dir.path().join("data").exists(),
            "serve creates the data directory once its ports are bound, not the config"
        );
        assert_eq!(config.external_url, None, "the API address, once bound");
        assert!(!config.delivery.allow_private && !config.api.allow_private_webhooks);
        assert_eq!(
            config.delivery.retry.horizon,
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn the_log_format_comes_from_the_flag_or_the_file_and_is_text_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flowscope.toml");
        std::fs::write(&file, "log_format = \"json\"\n").expect("write");
        let args = |flag: Option<LogFormat>, config: bool| ServeArgs {
            config: config.then(|| file.clone()),
            data_dir: Some(dir.path().join("data")),
            log_format: flag,
            ..ServeArgs::default()
        };
        for (flag, config, expected) in [
            (None, false, LogFormat::Text),
            (None, true, LogFormat::Json),
            (Some(LogFormat::Text), true, LogFormat::Text),
            (Some(LogFormat::Json), false, LogFormat::Json),
        ] {
            assert_eq!(args(flag, config).log_format(), expected);
            ServeConfig::resolve(args(flag, config)).expect("the file's key is known");
        }
        std::fs::write(&file, "log_format = \"xml\"\n").expect("write");
        let error = format!(
            "{:#}",
            ServeConfig::resolve(args(None, true)).expect_err("xml")
        );
        assert!(
            error.contains("log_format") || error.contains("xml"),
            "{error}"
        );
    }

    #[test]
    fn the_idle_timeout_outlasts_the_longest_query() {
        let flags = |idle: Option<&str>, max| ConnectionFlags {
            header_read_timeout: None,
            idle_timeout: idle.map(str::to_string),
            request_body_timeout: Some("5s".into()),
            max_connections: max,
        };
        let config =
            connection_config(flags(None, None), Duration::from_secs(30)).expect("the defaults");
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.request_body_timeout, Duration::from_secs(5));
        assert_eq!(config.max_connections, None);
        // The default makes way for a longer --sql-timeout...
        let config = connection_config(flags(None, Some(100)), Duration::from_secs(120))
            .expect("a raised default");
        assert_eq!(config.idle_timeout, Duration::from_secs(150));
        assert_eq!(config.max_connections, Some(100));
        // ...an idle timeout asked for is refused instead, with what to do.
        let error = connection_config(flags(Some("20s"), None), Duration::from_secs(30))
            .expect_err("shorter than a query");
        assert!(
            error.to_string().contains("raise --idle-timeout"),
            "{error}"
        );
        assert!(connection_config(flags(Some("0s"), None), Duration::ZERO).is_err());
        assert!(connection_config(flags(None, Some(0)), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn without_tokens_the_api_stays_on_loopback_and_with_them_it_may_leave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = ServeConfig::resolve(ServeArgs {
            data_dir: Some(dir.path().join("data")),
            api_addr: Some("0.0.0.0:8088".parse().expect("addr")),
            ..ServeArgs::default()
        })
        .expect("resolve");
        assert!(open.access.is_open());
        assert_eq!(open.api_addr, "127.0.0.1:8088".parse().expect("addr"));

        let closed = ServeConfig::resolve(ServeArgs {
            data_dir: Some(dir.path().join("data")),
            api_addr: Some("0.0.0.0:8088".parse().expect("addr")),
            read_token: Some("a-read-token-of-length".into()),
            tenant_max_bytes_per_second: Some("1MiB".into()),
            demo: true,
            ..ServeArgs::default()
        })
        .expect("resolve");
        assert!(!closed.access.is_open());
        assert_eq!(closed.api_addr, "0.0.0.0:8088".parse().expect("addr"));
        let tenant = TenantId::default_tenant();
        assert_eq!(
            closed.access.limits(&tenant).bytes_per_second,
            Some(1 << 20)
        );
        // The demo gets an ingest token of its own, which may send but not read.
        let demo = closed.demo_token.as_deref().expect("a demo token");
        let principal = closed
            .access
            .authenticate(Some(format!("Bearer {demo}").as_bytes()), None)
            .expect("the demo's token is accepted");
        assert_eq!(principal.role, Role::Ingest);

        let short = ServeConfig::resolve(ServeArgs {
            data_dir: Some(dir.path().join("data")),
            admin_token: Some("short".into()),
            ..ServeArgs::default()
        });
        let message = format!("{:#}", short.expect_err("a short token is refused"));
        assert!(message.contains("--admin-token"), "{message}");
    }

    #[test]
    fn the_memory_limit_read_before_start_is_the_one_resolve_finds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flowscope.toml");
        std::fs::write(&file, "memory_limit = \"1GiB\"\n").expect("write config");
        let args = |flag: Option<&str>, config: Option<&Path>| ServeArgs {
            data_dir: Some(dir.path().join("data")),
            memory_limit: flag.map(str::to_string),
            config: config.map(Path::to_path_buf),
            ..ServeArgs::default()
        };
        for (flag, config, expected) in [
            (Some("512MiB"), None, 512 << 20),
            (Some("512MiB"), Some(file.as_path()), 512 << 20),
            (None, Some(file.as_path()), 1 << 30),
            (None, None, default_memory_limit()),
        ] {
            let early = args(flag, config).memory_limit();
            let resolved = ServeConfig::resolve(args(flag, config)).expect("resolve");
            assert_eq!(early, Some(expected));
            assert_eq!(
                resolved.collector.memory.figures().memory_limit,
                expected as u64
            );
        }
        assert_eq!(args(Some("lots"), None).memory_limit(), None);
        assert_eq!(
            args(None, Some(&dir.path().join("missing.toml"))).memory_limit(),
            None
        );
    }

    #[test]
    fn the_memory_limit_splits_into_the_request_budget_ingest_buffer_and_sql_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolve = |limit: &str, buffer: Option<&str>| {
            ServeConfig::resolve(ServeArgs {
                data_dir: Some(dir.path().into()),
                memory_limit: Some(limit.into()),
                ingest_buffer: buffer.map(str::to_string),
                ..ServeArgs::default()
            })
        };
        let config = resolve("256MiB", None).expect("resolve");
        let figures = config.collector.memory.figures();
        assert_eq!(figures.memory_limit, 256 << 20);
        assert_eq!(figures.in_flight_limit, 32 << 20);
        assert_eq!(figures.ingest_buffer_limit, 32 << 20);
        assert_eq!(figures.high_water, (256 << 20) / 20 * 17);
        assert_eq!(config.sql.memory_limit, 64 << 20);
        assert!(
            Arc::ptr_eq(&config.collector.memory, &config.store.memory),
            "receivers and stores take from one budget"
        );
        assert_eq!(
            config.collector.max_request_bytes,
            (32 << 20) / 4,
            "a request must fit in the request budget"
        );
        let error = format!(
            "{:#}",
            resolve("256MiB", Some("200MiB")).expect_err("too big")
        );
        assert!(error.contains("--ingest-buffer"), "{error}");
        let error = format!("{:#}", resolve("1MiB", None).expect_err("too small"));
        assert!(error.contains("--memory-limit"), "{error}");
        assert!(default_memory_limit() >= MIN_MEMORY_LIMIT);
        assert!(default_memory_limit() <= MAX_DEFAULT_MEMORY_LIMIT);
    }

    #[test]
    fn sql_concurrency_and_answer_size_come_from_flags_with_a_per_tenant_half_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolve = |shared: Option<usize>, per_tenant: Option<usize>, response: Option<&str>| {
            ServeConfig::resolve(ServeArgs {
                data_dir: Some(dir.path().into()),
                sql_max_concurrent: shared,
                sql_max_concurrent_per_tenant: per_tenant,
                sql_max_response: response.map(str::to_string),
                ..ServeArgs::default()
            })
        };
        let defaults = resolve(None, None, None).expect("resolve");
        assert_eq!(
            (
                defaults.sql.max_concurrent,
                defaults.sql.max_concurrent_per_tenant
            ),
            (4, 2)
        );
        assert_eq!(defaults.api.max_response_bytes, 256 << 20);
        let odd = resolve(Some(5), None, Some("64MiB")).expect("resolve");
        assert_eq!(
            (odd.sql.max_concurrent, odd.sql.max_concurrent_per_tenant),
            (5, 3)
        );
        assert_eq!(odd.api.max_response_bytes, 64 << 20);
        let one = resolve(Some(1), None, None).expect("resolve");
        assert_eq!(one.sql.max_concurrent_per_tenant, 1);
        let error = format!(
            "{:#}",
            resolve(Some(0), None, None).expect_err("zero permits")
        );
        assert!(error.contains("--sql-max-concurrent"), "{error}");
        let error = format!(
            "{:#}",
            resolve(None, None, Some("1KiB")).expect_err("too small")
        );
        assert!(error.contains("--sql-max-response"), "{error}");
    }

    #[test]
    fn the_external_url_must_be_absolute_and_loses_its_trailing_slash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolve = |url: &str| {
            ServeConfig::resolve(ServeArgs {
                data_dir: Some(dir.path().into()),
                external_url: Some(url.into()),
                ..ServeArgs::default()
            })
        };
        assert_eq!(
            resolve("https://flowscope.example.com/")
                .expect("resolve")
                .external_url
                .as_deref(),
            Some("https://flowscope.example.com")
        );
        let error = format!(
            "{:#}",
            resolve("flowscope.example.com").expect_err("relative")
        );
        assert!(error.contains("--external-url"), "{error}");
    }

    #[test]
    fn webhook_settings_come_from_flags_or_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flowscope.toml");
        std::fs::write(
            &file,
            "allow_private_webhooks = true\nwebhook_retry_horizon = \"2h\"\n",
        )
        .expect("write");
        let config = ServeConfig::resolve(ServeArgs {
            config: Some(file),
            data_dir: Some(dir.path().join("data")),
            webhook_retry_base: Some("50ms".into()),
            ..ServeArgs::default()
        })
        .expect("resolve");
        assert!(config.delivery.allow_private && config.api.allow_private_webhooks);
        assert_eq!(config.delivery.retry.horizon, Duration::from_secs(7200));
        assert_eq!(config.delivery.retry.base, Duration::from_millis(50));

        let error = ServeConfig::resolve(ServeArgs {
            data_dir: Some(dir.path().join("data")),
            webhook_retry_horizon: Some("0s".into()),
            ..ServeArgs::default()
        })
        .expect_err("a zero horizon");
        assert!(format!("{error:#}").contains("--webhook-retry-horizon"));
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "retension = \"2d\"\n").expect("write");
        let args = ServeArgs {
            config: Some(file),
            data_dir: Some(dir.path().into()),
            ..ServeArgs::default()
        };
        let error = format!("{:#}", ServeConfig::resolve(args).expect_err("unknown key"));
        assert!(error.contains("retension"), "{error}");

        let args = ServeArgs {
            wal_sync: Some("sometimes".into()),
            data_dir: Some(dir.path().into()),
            ..ServeArgs::default()
        };
        let error = format!("{:#}", ServeConfig::resolve(args).expect_err("bad policy"));
        assert!(
            error.contains("--wal-sync") && error.contains("always"),
            "{error}"
        );
    }

    #[test]
    fn the_demo_runs_the_shop_unless_a_topology_is_named_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolve = |demo: bool, topology: Option<&str>| {
            ServeConfig::resolve(ServeArgs {
                data_dir: Some(dir.path().into()),
                demo,
                demo_topology: topology.map(str::to_string),
                ..ServeArgs::default()
            })
        };
        let name = |demo: bool, topology: Option<&str>| {
            resolve(demo, topology)
                .expect("resolve")
                .demo
                .map(|topology| topology.name)
        };
        assert_eq!(name(false, None), None);
        assert_eq!(name(true, None).as_deref(), Some("shop"));
        assert_eq!(
            name(false, Some("city")).as_deref(),
            Some("city"),
            "implies --demo"
        );

        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[[services]]\nname = \"a\"\n").expect("write");
        let error = format!(
            "{:#}",
            resolve(true, file.to_str()).expect_err("a topology without entries")
        );
        assert!(
            error.contains("--demo-topology") && error.contains("bad.toml"),
            "{error}"
        );
    }
}
