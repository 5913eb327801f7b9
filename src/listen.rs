//! The accept layer every listener goes through (OTLP/gRPC, OTLP/HTTP, the API): a cap on
//! open connections sized from the descriptor limit, and header-read, idle and request-body
//! timeouts, so that connections nobody uses cannot take the descriptors the server needs for
//! its own files (WAL segments, Parquet, SQLite) nor keep it from answering.
//!
//! ```text
//!  TcpListener ──accept──> at its cap? ──yes──> closed at once, counted as refused
//!                               └──no──> Conn (idle timer, first-request deadline)
//!                                          ├─ gRPC: tonic (HTTP/2 keepalive pings)
//!                                          └─ HTTP: hyper (header-read timeout)
//!                                               └─ each request: ConnectInfo, body deadline (408)
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use flowscope_web::connections::ConnectionCounters;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// Descriptors kept for the server's own files whatever the connections do: the runtime's,
/// SQLite and its journal, Parquet files read by queries, `/proc` reads, webhook sockets.
const RESERVED_DESCRIPTORS: u64 = 64;
/// And per tenant: its WAL segments, the hourly Parquet files of a flush, its rollup files.
const RESERVED_PER_TENANT: u64 = 8;
/// No listener holds more connections than this unless `--max-connections` asks for more.
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// The listeners that share what the reserve leaves: OTLP/gRPC, OTLP/HTTP and the API.
const LISTENERS: u64 = 3;
/// With fewer connections per listener than this the server is of no use: refuse to start.
const MIN_CONNECTIONS: u64 = 8;
/// How long a listener waits before accepting again after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A listener at its cap or out of descriptors says so at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// An HTTP/2 PING goes unanswered at most this long before the connection is closed.
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The connection limits of every listener (`--header-read-timeout`, `--idle-timeout`,
/// `--request-body-timeout`, `--max-connections`).
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// A request head (and, on a new connection, the first request) must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
    /// A request body must have arrived whole within this of the request's start, else 408.
    pub request_body_timeout: Duration,
    /// Connections per listener asked for; `None` sizes the caps from the descriptor limit.
    pub max_connections: Option<u64>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_body_timeout: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

impl ConnectionConfig {
    /// HTTP/2 keepalive for gRPC and the API's HTTP/2: a PING after half the idle timeout
    /// without a byte from the client. A client that answers keeps its connection (the cap
    /// bounds how many such connections there are); one that does not is closed well before
    /// the idle timeout would.
    pub fn http2_keepalive(&self) -> flowscope_collector::Http2Keepalive {
        let interval = (self.idle_timeout / 2).max(Duration::from_millis(500));
        flowscope_collector::Http2Keepalive {
            interval,
            timeout: interval.min(MAX_KEEPALIVE_TIMEOUT),
        }
    }
}

/// The process's descriptor limit before and after [`raise_descriptor_limit`].
#[derive(Debug, Clone, Copy)]
pub struct DescriptorLimit {
    pub soft_before: u64,
    pub hard: u64,
    pub soft: u64,
}

/// Raises the soft limit on open descriptors to the hard limit: the soft limit is often
/// 1024 for compatibility with `select`, which nothing here uses. Sockets beyond it would
/// make `accept` and the server's own `open`s fail with EMFILE.
#[cfg(unix)]
pub fn raise_descriptor_limit() -> DescriptorLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // Linux refuses a soft limit above fs.nr_open (1,048,576 by default) even when the hard
    // limit is "unlimited".
    const UNLIMITED: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let soft_before = limit.current.unwrap_or(UNLIMITED);
    let hard = limit.maximum.unwrap_or(UNLIMITED);
    if soft_before >= hard {
        return DescriptorLimit {
            soft_before,
            hard,
            soft: soft_before,
        };
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => DescriptorLimit {
            soft_before,
            hard,
            soft: hard,
        },
        Err(error) => {
            tracing::warn!(%error, soft_before, hard, "cannot raise the open-file limit; keeping it");
            DescriptorLimit {
                soft_before,
                hard,
                soft: soft_before,
            }
        }
    }
}

#[cfg(not(unix))]
pub fn raise_descriptor_limit() -> DescriptorLimit {
    DescriptorLimit {
        soft_before: 1024,
        hard: 1024,
        soft: 1024,
    }
}

/// Descriptors this process has open now (`/proc/self/fd`); `None` where it cannot tell.
pub fn open_descriptors() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count() as u64)
}

/// How the descriptor limit is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// Connections each listener holds at most.
    pub per_listener: u64,
    /// Descriptors kept for the server's own files, on top of those open at start.
    pub reserved: u64,
    /// `--max-connections`, when it asked for more than the descriptors allow.
    pub lowered_from: Option<u64>,
}

/// Splits what the descriptor `limit` leaves, after those `in_use` and a reserve for the
/// server's own files, among the listeners: each gets an equal share up to 10,000, or
/// `asked` if the descriptors cover it for every listener.
pub fn plan_connections(
    limit: u64,
    in_use: u64,
    tenants: u64,
    asked: Option<u64>,
) -> anyhow::Result<ConnectionPlan> {
    let reserved = RESERVED_DESCRIPTORS + RESERVED_PER_TENANT * tenants;
    let share = limit.saturating_sub(in_use + reserved) / LISTENERS;
    if share < MIN_CONNECTIONS {
        anyhow::bail!(
            "the open-file limit ({limit}) leaves {share} connections per listener after the {in_use} descriptors open and the {reserved} kept for the server's own files: raise it (ulimit -n) to at least {}",
            in_use + reserved + LISTENERS * MIN_CONNECTIONS.max(64)
        );
    }
    let plan = match asked {
        Some(asked) if asked > share => ConnectionPlan {
            per_listener: share,
            reserved,
            lowered_from: Some(asked),
        },
        Some(asked) => ConnectionPlan {
            per_listener: asked,
            reserved,
            lowered_from: None,
        },
        None => ConnectionPlan {
            per_listener: share.min(DEFAULT_MAX_CONNECTIONS),
            reserved,
            lowered_from: None,
        },
    };
    Ok(plan)
}

/// A bound socket whose connections are capped, timed and counted.
pub struct Listener {
    listener: TcpListener,
    name: &'static str,
    limit: u64,
    counters: Arc<ConnectionCounters>,
    idle_timeout: Duration,
    /// HTTP listeners: a new connection's first request must start within this.
    first_request_timeout: Option<Duration>,
    last_warning: Option<std::time::Instant>,
}

impl Listener {
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        limit: u64,
        counters: Arc<ConnectionCounters>,
        idle_timeout: Duration,
        first_request_timeout: Option<Duration>,
    ) -> Self {
        counters.limit.store(limit, Ordering::Relaxed);
        Self {
            listener,
            name,
            limit,
            counters,
            idle_timeout,
            first_request_timeout,
            last_warning: None,
        }
    }

    /// The next connection under the cap. Connections over it are accepted and closed at
    /// once, so their clients see a refusal instead of waiting in the backlog; when the
    /// process is out of descriptors the listener backs off instead of spinning.
    pub async fn accept(&mut self) -> Conn {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if self.counters.open.load(Ordering::Relaxed) >= self.limit {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        if self.should_warn() {
                            tracing::warn!(
                                listener = self.name,
                                limit = self.limit,
                                "at the connection cap: new connections are closed at once; raise --max-connections (and ulimit -n) if these clients are legitimate"
                            );
                        }
                        continue;
                    }
                    // Latency matters more than packet count for acknowledgements and answers.
                    let _ = stream.set_nodelay(true);
                    return Conn::new(
                        stream,
                        peer,
                        self.counters.clone(),
                        self.idle_timeout,
                        self.first_request_timeout,
                    );
                }
                Err(error) if is_resource_shortage(&error) => {
                    self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if self.should_warn() {
                        tracing::warn!(listener = self.name, %error, "cannot accept connections: out of descriptors or memory; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                // The client left before it was accepted (ECONNABORTED and the like).
                Err(_) => {}
            }
        }
    }

    fn should_warn(&mut self) -> bool {
        let now = std::time::Instant::now();
        let due = self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY);
        if due {
            self.last_warning = Some(now);
        }
        due
    }

    /// The connections as the stream tonic serves.
    pub fn incoming(self) -> impl futures::Stream<Item = Result<Conn, Infallible>> {
        futures::stream::unfold(self, |mut listener| async move {
            let conn = listener.accept().await;
            Some((Ok(conn), listener))
        })
    }
}

#[cfg(unix)]
fn is_resource_shortage(error: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(error).is_some_and(|errno| {
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM].contains(&errno)
    })
}

#[cfg(not(unix))]
fn is_resource_shortage(_error: &io::Error) -> bool {
    true
}

/// An accepted connection: a TCP stream that fails its reads and writes with `TimedOut`
/// once no byte has moved either way for the idle timeout, or, on HTTP listeners, when no
/// request has started within the header-read timeout of the accept. It gives back its slot
/// under the cap when dropped.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    counters: Arc<ConnectionCounters>,
    idle_timeout: Duration,
    last_activity: Instant,
    /// Until the first request starts: when the connection is closed if none has.
    first_request_deadline: Option<Instant>,
    first_request: Arc<AtomicBool>,
    timer: Pin<Box<Sleep>>,
    timed_out: bool,
}

impl Conn {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        counters: Arc<ConnectionCounters>,
        idle_timeout: Duration,
        first_request_timeout: Option<Duration>,
    ) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let first_request_deadline = first_request_timeout.map(|timeout| now + timeout);
        let idle_deadline = now + idle_timeout;
        let first = first_request_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
        Self {
            stream,
            peer,
            counters,
            idle_timeout,
            last_activity: now,
            first_request_deadline,
            first_request: Arc::new(AtomicBool::new(false)),
            timer: Box::pin(tokio::time::sleep_until(first)),
            timed_out: false,
        }
    }

    /// Polled only while a read or write waits: the timer is reset lazily, when it fires,
    /// not on every byte.
    fn poll_timeouts(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.timed_out {
            return Poll::Ready(timed_out_error("the connection timed out"));
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(deadline) = self.first_request_deadline {
                if self.first_request.load(Ordering::Relaxed) {
                    self.first_request_deadline = None;
                } else if now >= deadline {
                    self.timed_out = true;
                    self.counters
                        .header_read_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(timed_out_error(
                        "no request arrived within the header-read timeout",
                    ));
                }
            }
            let idle_deadline = self.last_activity + self.idle_timeout;
            if now >= idle_deadline {
                self.timed_out = true;
                self.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(timed_out_error("the connection was idle too long"));
            }
            let next = self
                .first_request_deadline
                .map_or(idle_deadline, |d| d.min(idle_deadline));
            self.timer.as_mut().reset(next);
        }
    }

    fn moved(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last_activity = Instant::now();
        }
    }

    fn on_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.poll_timeouts(cx) {
            Poll::Ready(error) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out_error(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, message)
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.moved(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.on_pending(cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.on_pending(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.on_pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// What an HTTP listener's refusals look like.
#[derive(Debug, Clone, Copy)]
pub enum ErrorBody {
    /// Plain text (OTLP/HTTP).
    Text,
    /// `{"error": "..."}`, as every API error.
    Json,
}

/// Serves `router` over HTTP/1.1 and HTTP/2 (cleartext) on the listener's connections until
/// `shutdown` resolves; then stops accepting and lets the connections finish their requests.
pub async fn serve_http(
    mut listener: Listener,
    router: Router,
    config: ConnectionConfig,
    errors: ErrorBody,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer also runs while a keep-alive connection waits for its next
    // request, so on HTTP/1.1 a connection idle between requests lasts at most this long.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let keepalive = config.http2_keepalive();
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout);
    let builder = Arc::new(builder);
    let counters = listener.counters.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver; the sender sees them all gone when it closes.
    let (drained_tx, drained_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            counters: counters.clone(),
            body_timeout: config.request_body_timeout,
            errors,
        };
        let (stop, drained) = (stop_rx.clone(), drained_rx.clone());
        tokio::spawn(async move {
            connection.serve(conn, stop).await;
            drop(drained);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(drained_rx);
    drained_tx.closed().await;
}

/// What one HTTP connection's task needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    counters: Arc<ConnectionCounters>,
    body_timeout: Duration,
    errors: ErrorBody,
}

impl Connection {
    async fn serve(self, conn: Conn, mut stop: watch::Receiver<bool>) {
        let peer = conn.peer;
        let first_request = conn.first_request.clone();
        let Connection {
            builder,
            router,
            counters,
            body_timeout,
            errors,
        } = self;
        let request_counters = counters.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            let router = router.clone();
            let counters = request_counters.clone();
            async move {
                let timed_out = Arc::new(AtomicBool::new(false));
                let deadline = Instant::now() + body_timeout;
                let mut request = request.map(|body| {
                    Body::new(DeadlineBody {
                        body,
                        deadline,
                        timer: None,
                        timed_out: timed_out.clone(),
                    })
                });
                // Handlers that care who is calling (login throttling) read the peer here.
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = router.oneshot(request).await;
                if timed_out.load(Ordering::Relaxed) {
                    counters
                        .request_body_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok::<_, Infallible>(body_timeout_response(body_timeout, errors));
                }
                response
            }
        });
        let connection = builder.serve_connection(TokioIo::new(conn), service);
        tokio::pin!(connection);
        let stopping = async {
            // The guard `wait_for` returns must not live across an await.
            let _ = stop.wait_for(|stop| *stop).await.is_ok();
        };
        let finished = tokio::select! {
            result = connection.as_mut() => Some(result),
            () = stopping => None,
        };
        let result = match finished {
            Some(result) => result,
            None => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            // A request head cut off by hyper's timer; a first request that never came and
            // idle connections are counted by `Conn` itself.
            if error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                counters
                    .header_read_timeouts
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// 408 with `Connection: close`: the rest of the body may still be on its way.
fn body_timeout_response(timeout: Duration, errors: ErrorBody) -> Response<Body> {
    let message = format!(
        "the request body did not arrive within {}s (--request-body-timeout): send it faster or in smaller requests",
        timeout.as_secs_f64()
    );
    let (content_type, body) = match errors {
        ErrorBody::Text => ("text/plain; charset=utf-8", message + "\n"),
        ErrorBody::Json => (
            "application/json",
            serde_json::json!({ "error": message }).to_string(),
        ),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes before its last frame arrived, and
/// says so in `timed_out` so the answer becomes 408 whatever the handler made of the error.
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    /// Made the first time the body has to wait, so a body that is already there costs no
    /// timer.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(timed_out_error(
                "the request body did not arrive in time",
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Connections the kernel may hold for a port before they are accepted (it caps this at
/// `net.core.somaxconn`, 4096 on current kernels). Tokio's default of 1024 overflowed when
/// 2,000 connections arrived at once (`tests/mixed_attack.rs`): the kernel then drops SYNs,
/// and a `/healthz` probe caught in it waited for the client's one-second SYN retry.
const LISTEN_BACKLOG: u32 = 4096;

pub async fn bind(name: &'static str, addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_limit_is_split_among_the_listeners_after_the_reserve() {
        // 20,000 descriptors, 40 open, one tenant: 72 kept, the rest in three shares.
        let plan = plan_connections(20_000, 40, 1, None).expect("a plan");
        assert_eq!(plan.reserved, 72);
        assert_eq!(plan.per_listener, (20_000 - 40 - 72) / 3);
        assert_eq!(plan.lowered_from, None);
        // A large limit stops at 10,000 per listener unless more is asked for.
        let plan = plan_connections(1 << 20, 40, 1, None).expect("a plan");
        assert_eq!(plan.per_listener, 10_000);
        let plan = plan_connections(1 << 20, 40, 1, Some(50_000)).expect("a plan");
        assert_eq!(plan.per_listener, 50_000);
        // Asking for more than the descriptors cover is lowered, and says so.
        let plan = plan_connections(1024, 40, 2, Some(5_000)).expect("a plan");
        assert_eq!(plan.per_listener, (1024 - 40 - 80) / 3);
        assert_eq!(plan.lowered_from, Some(5_000));
        // Each tenant keeps a few more descriptors for its own files.
        let one = plan_connections(1024, 40, 1, None).expect("a plan");
        let ten = plan_connections(1024, 40, 10, None).expect("a plan");
        assert_eq!(ten.reserved - one.reserved, 9 * RESERVED_PER_TENANT);
    }

    /// Login throttling keys on the peer address: every API request must carry it.
    #[tokio::test]
    async fn every_request_carries_its_peer_address_and_shutdown_drains_idle_connections() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        let counters = Arc::new(ConnectionCounters::default());
        let listener = Listener::new(
            tcp,
            "api",
            8,
            counters.clone(),
            Duration::from_secs(60),
            Some(Duration::from_secs(10)),
        );
        let router = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_http(
            listener,
            router,
            ConnectionConfig::default(),
            ErrorBody::Json,
            async move {
                let mut stop_rx = stop_rx;
                let _ = stop_rx.wait_for(|stop| *stop).await.is_ok();
            },
        ));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let local = client.local_addr().expect("local address");
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).ends_with(&local.to_string()) {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert_eq!(counters.open.load(Ordering::Relaxed), 1);
        // The keep-alive connection is idle: shutdown closes it instead of waiting for it.
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("serve_http returns once its idle connections are closed")
            .expect("no panic");
        assert_eq!(client.read(&mut buf).await.expect("EOF"), 0);
        assert_eq!(counters.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_limit_that_leaves_no_room_for_connections_is_refused_with_what_to_do() {
        let error = plan_connections(100, 40, 1, None).expect_err("too few descriptors");
        assert!(error.to_string().contains("ulimit -n"), "{error}");
    }
}
