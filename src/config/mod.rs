//! The one typed configuration: command-line flags, `FLOWSCOPE_*` environment variables and
//! an optional TOML file, validated once and split into each crate's own config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

mod access;
mod alert;
mod collector;
mod connections;
mod graph;
mod roles;
mod sql;
mod store;

use anyhow::Context;
use flowscope_alert::DeliveryConfig;
use flowscope_auth::Access;
use flowscope_base::parse_duration;
use flowscope_collector::CollectorConfig;
use flowscope_demo::Topology;
use flowscope_graph::GraphConfig;
use flowscope_query::graph::health::Objective;
use flowscope_query::{SqlConfig, StoreConfig};
use flowscope_web::ApiConfig;
use rand::RngCore as _;
use serde::Deserialize;

use crate::listen::ConnectionConfig;
use connections::ConnectionFlags;
pub use roles::Roles;

/// Flags of `flowscope serve`. Each also reads an environment variable; a flag given on the
/// command line wins over the variable, which wins over the config file.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Also run a simulated event-driven system (a shop with a queue, a feedback loop and a
    /// scheduled incident) that sends its traces to this server over OTLP/gRPC
    #[arg(long, env = "FLOWSCOPE_DEMO")]
    demo: bool,
    /// The system `--demo` simulates: a preset (shop, city), generated:N or a topology
    /// file; implies `--demo` [default: shop]
    #[arg(long, env = "FLOWSCOPE_DEMO_TOPOLOGY")]
    demo_topology: Option<String>,
    /// TOML file with any of the settings below (snake_case keys, e.g. `data_dir = "/var/lib/flowscope"`).
    #[arg(long, env = "FLOWSCOPE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the write-ahead log and Parquet segments [default: ./flowscope-data]
    #[arg(long, env = "FLOWSCOPE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep Parquet segments in object storage: s3://bucket/prefix, configured by the
    /// standard AWS_* variables (AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP=true for a local server); the WAL stays in
    /// --data-dir [default: segments on the local disk, in --data-dir]
    #[arg(long, env = "FLOWSCOPE_OBJECT_STORE")]
    object_store: Option<String>,
    /// With --object-store: the folder of the local disk cache of Parquet files (uploads
    /// are kept there, reads fill it) [default: DATA_DIR/cache]
    #[arg(long, env = "FLOWSCOPE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// With --object-store: the most the local disk cache holds, least recently used files
    /// going first; 0 turns it off [default: 1GiB]
    #[arg(long, env = "FLOWSCOPE_CACHE_SIZE")]
    cache_size: Option<String>,
    /// The metadata database (catalog of files, alert rules, webhooks, alert state, the
    /// outbox): a PostgreSQL URL (postgres://user:password@host:port/database), which
    /// several processes can share [default: DATA_DIR/metadata.sqlite]
    #[arg(long, env = "FLOWSCOPE_METADATA")]
    metadata: Option<String>,
    /// Run as one node of a cluster with these roles, comma separated: receiver (takes OTLP
    /// and routes each trace to its ingester), ingester (holds partitions of the trace
    /// space), querier, compactor, or all. Needs --metadata postgres://… shared by the
    /// nodes [default: everything in one standalone process]
    #[arg(long, env = "FLOWSCOPE_ROLES")]
    roles: Option<String>,
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
    /// How often small Parquet files of past hours are merged (by the store itself, or in a
    /// cluster by the nodes with the `compactor` role) [default: 5m]
    #[arg(long, env = "FLOWSCOPE_COMPACT_INTERVAL")]
    compact_interval: Option<String>,
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

/// The settings as a TOML file holds them; [`Settings::merge`] puts the flags over them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    data_dir: Option<PathBuf>,
    object_store: Option<String>,
    cache_dir: Option<PathBuf>,
    cache_size: Option<String>,
    metadata: Option<String>,
    roles: Option<String>,
    otlp_grpc_addr: Option<SocketAddr>,
    otlp_http_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    retention: Option<String>,
    max_request_size: Option<String>,
    wal_sync: Option<String>,
    flush_interval: Option<String>,
    flush_rows: Option<usize>,
    compact_interval: Option<String>,
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

impl Settings {
    /// The flags (each already over its environment variable) over the file's settings.
    fn merge(args: ServeArgs, file: Settings) -> Settings {
        // The logger was set up from these before (`ServeArgs::log_format`); the file's
        // value was checked when it was parsed.
        Settings {
            data_dir: args.data_dir.or(file.data_dir),
            object_store: args.object_store.or(file.object_store),
            cache_dir: args.cache_dir.or(file.cache_dir),
            cache_size: args.cache_size.or(file.cache_size),
            metadata: args.metadata.or(file.metadata),
            roles: args.roles.or(file.roles),
            otlp_grpc_addr: args.otlp_grpc_addr.or(file.otlp_grpc_addr),
            otlp_http_addr: args.otlp_http_addr.or(file.otlp_http_addr),
            api_addr: args.api_addr.or(file.api_addr),
            retention: args.retention.or(file.retention),
            max_request_size: args.max_request_size.or(file.max_request_size),
            wal_sync: args.wal_sync.or(file.wal_sync),
            flush_interval: args.flush_interval.or(file.flush_interval),
            flush_rows: args.flush_rows.or(file.flush_rows),
            compact_interval: args.compact_interval.or(file.compact_interval),
            memory_limit: args.memory_limit.or(file.memory_limit),
            ingest_buffer: args.ingest_buffer.or(file.ingest_buffer),
            sql_timeout: args.sql_timeout.or(file.sql_timeout),
            sql_memory_limit: args.sql_memory_limit.or(file.sql_memory_limit),
            sql_max_rows: args.sql_max_rows.or(file.sql_max_rows),
            sql_max_response: args.sql_max_response.or(file.sql_max_response),
            sql_max_concurrent: args.sql_max_concurrent.or(file.sql_max_concurrent),
            sql_max_concurrent_per_tenant: args
                .sql_max_concurrent_per_tenant
                .or(file.sql_max_concurrent_per_tenant),
            graph_pairing_ttl: args.graph_pairing_ttl.or(file.graph_pairing_ttl),
            graph_bucket: args.graph_bucket.or(file.graph_bucket),
            graph_horizon: args.graph_horizon.or(file.graph_horizon),
            demo: Some(args.demo || file.demo.unwrap_or(false)),
            demo_topology: args.demo_topology.or(file.demo_topology),
            external_url: args.external_url.or(file.external_url),
            allow_private_webhooks: Some(
                args.allow_private_webhooks || file.allow_private_webhooks.unwrap_or(false),
            ),
            webhook_retry_horizon: args.webhook_retry_horizon.or(file.webhook_retry_horizon),
            webhook_retry_base: args.webhook_retry_base.or(file.webhook_retry_base),
            tokens_file: args.tokens_file.or(file.tokens_file),
            ingest_token: args.ingest_token.or(file.ingest_token),
            read_token: args.read_token.or(file.read_token),
            admin_token: args.admin_token.or(file.admin_token),
            tenant_max_spans_per_second: args
                .tenant_max_spans_per_second
                .or(file.tenant_max_spans_per_second),
            tenant_max_bytes_per_second: args
                .tenant_max_bytes_per_second
                .or(file.tenant_max_bytes_per_second),
            header_read_timeout: args.header_read_timeout.or(file.header_read_timeout),
            idle_timeout: args.idle_timeout.or(file.idle_timeout),
            request_body_timeout: args.request_body_timeout.or(file.request_body_timeout),
            max_connections: args.max_connections.or(file.max_connections),
            log_format: args.log_format.or(file.log_format),
            objective: file.objective,
        }
    }
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
    /// Where Parquet segments go (`s3://bucket/prefix`); `None`: the local disk.
    pub object_store: Option<String>,
    /// The local disk cache of object storage: its folder and bound; `None` without
    /// object storage or with `--cache-size 0`.
    pub object_cache: Option<(PathBuf, u64)>,
    /// The metadata database: a PostgreSQL URL, or the SQLite file's path
    /// (`DATA_DIR/metadata.sqlite` by default).
    pub metadata: String,
    /// What this process does: everything (standalone) or its roles in a cluster.
    pub roles: Roles,
    /// What resolving changed on its own, for the log.
    pub notes: Vec<Note>,
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
            toml::from_str::<Settings>(&text).ok()?.log_format
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
                toml::from_str::<Settings>(&text).ok()?.memory_limit
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

fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// What resolving takes from outside the arguments, read apart so that resolving itself
/// ([`ServeConfig::from_inputs`]) reads nothing: the config file merged under the flags,
/// the data directory made absolute, the files they name and the machine's memory.
pub struct Inputs {
    settings: Settings,
    data_dir: PathBuf,
    default_memory_limit: usize,
    /// The tokens file's path and its text, or the error reading it.
    tokens_file: Option<(PathBuf, std::io::Result<String>)>,
    /// The demo's topology when the demo is on, or why it cannot be loaded.
    demo: Option<Result<Topology, flowscope_demo::Error>>,
    /// A fresh random token, the demo's when tokens are configured.
    random_token: String,
}

impl Inputs {
    /// Reads the config file the arguments name (failing if it cannot be read or parsed),
    /// the files it and they name, and the machine's memory.
    pub fn read(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str::<Settings>(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => Settings::default(),
        };
        let settings = Settings::merge(args, file);
        let data_dir = settings
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./flowscope-data"));
        // Nothing is created here: `serve` creates, resolves and locks the directory only
        // once its ports are bound (`data_dir::create_and_lock`).
        let data_dir = std::path::absolute(&data_dir)
            .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
        let tokens_file = settings.tokens_file.clone().map(|path| {
            let text = std::fs::read_to_string(&path);
            (path, text)
        });
        let demo = (settings.demo == Some(true) || settings.demo_topology.is_some())
            .then(|| Topology::load(settings.demo_topology.as_deref().unwrap_or("shop")));
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        Ok(Self {
            settings,
            data_dir,
            default_memory_limit: default_memory_limit(),
            tokens_file,
            demo,
            random_token: hex::encode(bytes),
        })
    }
}

/// What resolving changed on its own, logged when the server starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// `--max-request-size` was more than the memory ceiling allows a request.
    RequestSizeLowered { asked: usize, lowered_to: usize },
    /// The default `--idle-timeout` was not longer than `--sql-timeout`.
    IdleTimeoutRaised { to: Duration },
    /// `--cache-dir` or `--cache-size` without `--object-store`: nothing to cache.
    CacheWithoutObjectStore,
}

impl Note {
    pub fn log(&self) {
        match self {
            Note::RequestSizeLowered { asked, lowered_to } => tracing::warn!(
                max_request_size_mib = asked >> 20,
                lowered_to_mib = lowered_to >> 20,
                "--max-request-size is more than --memory-limit allows a request; lowered"
            ),
            Note::IdleTimeoutRaised { to } => tracing::info!(
                idle_timeout_s = to.as_secs_f64(),
                "--idle-timeout raised past --sql-timeout"
            ),
            Note::CacheWithoutObjectStore => tracing::warn!(
                "--cache-dir and --cache-size only apply with --object-store (segments on the local disk need no cache); ignored"
            ),
        }
    }
}

impl ServeConfig {
    /// Reads the inputs the arguments name and resolves them.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        Self::from_inputs(Inputs::read(args)?)
    }

    /// The configuration, checked, from what was read: no I/O. Each crate's part is
    /// resolved in the module named after it, in the order the checks have always run.
    pub fn from_inputs(inputs: Inputs) -> anyhow::Result<Self> {
        let Inputs {
            settings,
            data_dir,
            default_memory_limit,
            tokens_file,
            demo,
            random_token,
        } = inputs;
        let mut notes = Vec::new();
        let (store, memory_limit) = store::resolve(&settings, data_dir, default_memory_limit)?;
        let object_store = store::object_store(&settings)?;
        let object_cache = store::object_cache(
            &settings,
            &store.data_dir,
            object_store.is_some(),
            &mut notes,
        )?;
        let metadata = store::metadata(&settings, &store.data_dir)?;
        let roles = Roles::parse(settings.roles.as_deref())?;
        roles.check(&metadata, object_store.is_some())?;
        let demo = demo.transpose().context("--demo-topology")?;
        let (access, demo_token) =
            access::resolve(&settings, tokens_file, random_token, demo.is_some())?;
        let access = Arc::new(access);
        let mut collector =
            collector::resolve(&settings, &access, &store, memory_limit, &mut notes)?;
        let sql = sql::resolve(&settings, memory_limit)?;
        let connections = connections::connection_config(
            ConnectionFlags {
                header_read_timeout: settings.header_read_timeout.clone(),
                idle_timeout: settings.idle_timeout.clone(),
                request_body_timeout: settings.request_body_timeout.clone(),
                max_connections: settings.max_connections,
            },
            sql.timeout,
            &mut notes,
        )?;
        collector.http2_keepalive = Some(connections.http2_keepalive());
        let api = sql::api(&settings)?;
        let delivery = alert::delivery(&settings)?;
        let graph = graph::resolve(&settings, memory_limit, access.tenants().len())?;
        let external_url = alert::external_url(&settings)?;
        let objectives = graph::objectives(settings.objective)?;

        Ok(Self {
            objectives,
            demo,
            external_url,
            delivery,
            graph,
            otlp_grpc_addr: settings
                .otlp_grpc_addr
                .unwrap_or_else(|| default_addr("0.0.0.0:4317")),
            otlp_http_addr: settings
                .otlp_http_addr
                .unwrap_or_else(|| default_addr("0.0.0.0:4318")),
            api_addr: access::api_addr(
                settings
                    .api_addr
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
            object_store,
            object_cache,
            metadata,
            roles,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_auth::{Role, TenantId};
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
