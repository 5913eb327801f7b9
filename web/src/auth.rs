//! Who is calling the API: a bearer token, or the dashboard's session cookie made by
//! logging in with a token. Every handler that touches a tenant's data takes one of the
//! extractors here ([`Reader`], [`Manager`]), so the tenant it serves comes from the
//! credential and nowhere else.
//!
//! ```text
//!  Authorization: Bearer <token> ──Access::authenticate──┐
//!  Cookie: flowscope_session=<id> ──Sessions::get────────┴─> Principal ──may(permission)?──> Caller { tenant's engine and graph }
//!  X-Scope-OrgID (optional) ──must name the caller's own tenant, else 403
//! ```
//!
//! Guessing is throttled per client address ([`LoginThrottle`]): after a burst of failed
//! logins or bad bearer tokens an address gets 429 with `Retry-After`, before its token is
//! looked at; successful logins are throttled per tenant, so one tenant's token cannot
//! churn sessions. Sessions are capped per tenant: a tenant's logins evict only its own.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowscope_auth::{AuthError, KeyedBuckets, Permission, Principal, TENANT_HEADER, TenantId};
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{ApiState, TenantView};

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "flowscope_session";
/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions a tenant keeps at most; its oldest go first. The whole table holds at most this
/// many times the number of tenants (fixed by the tokens), so a flood of logins cannot grow
/// memory, and one tenant's logins never push out another's sessions.
pub const SESSIONS_PER_TENANT: usize = 1_000;

/// Logged-in dashboard sessions, in memory: a restart logs everyone out. Keyed by the
/// SHA-256 of the cookie value, so the table holds nothing a reader could replay.
#[derive(Debug, Clone)]
pub struct Sessions(Arc<Mutex<SessionTable>>);

/// The digest of a session cookie: how the table, and an open event stream, name a session.
pub type SessionKey = [u8; 32];

/// Who logged in, and until when.
type Session = (Principal, Instant);

#[derive(Debug)]
struct SessionTable {
    per_tenant: usize,
    sessions: HashMap<SessionKey, Session>,
    /// Each tenant's sessions, oldest first (every session lives as long, so the oldest is
    /// also the first to expire).
    by_tenant: HashMap<TenantId, VecDeque<SessionKey>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(SESSIONS_PER_TENANT)
    }
}

impl Sessions {
    /// A table keeping at most `per_tenant` sessions per tenant.
    pub fn new(per_tenant: usize) -> Self {
        Self(Arc::new(Mutex::new(SessionTable {
            per_tenant: per_tenant.max(1),
            sessions: HashMap::new(),
            by_tenant: HashMap::new(),
        })))
    }

    /// A new session for `principal`, evicting its tenant's oldest if the tenant is at its
    /// cap; returns the cookie value.
    fn create(&self, principal: Principal, now: Instant) -> String {
        let mut id = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        let cookie = hex::encode(id);
        let key = digest(&cookie);
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let SessionTable {
            per_tenant,
            sessions,
            by_tenant,
        } = &mut *table;
        let order = by_tenant.entry(principal.tenant.clone()).or_default();
        while let Some(oldest) = order.front() {
            let expired = sessions
                .get(oldest)
                .is_none_or(|(_, expires)| *expires <= now);
            if !expired && order.len() < *per_tenant {
                break;
            }
            sessions.remove(oldest);
            order.pop_front();
        }
        order.push_back(key);
        sessions.insert(key, (principal, now + SESSION_LIFETIME));
        cookie
    }

    #[cfg(test)]
    fn get(&self, cookie: &str, now: Instant) -> Option<Principal> {
        self.get_key(&digest(cookie), now)
    }

    fn get_key(&self, key: &SessionKey, now: Instant) -> Option<Principal> {
        let table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match table.sessions.get(key) {
            Some((principal, expires)) if *expires > now => Some(principal.clone()),
            _ => None,
        }
    }

    /// Whether the session is still logged in (not logged out, expired or evicted).
    pub fn is_live(&self, key: &SessionKey, now: Instant) -> bool {
        self.get_key(key, now).is_some()
    }

    fn remove(&self, cookie: &str) {
        let key = digest(cookie);
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((principal, _)) = table.sessions.remove(&key)
            && let Some(order) = table.by_tenant.get_mut(&principal.tenant)
        {
            order.retain(|other| *other != key);
        }
    }
}

/// How fast credentials may be tried.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failed logins and bad bearer tokens a client address may send at once...
    pub failures_burst: u32,
    /// ...and then per second.
    pub failures_per_second: f64,
    /// Successful logins a tenant may make at once...
    pub logins_burst: u32,
    /// ...and then per second.
    pub logins_per_second: f64,
    /// Client addresses whose failures are remembered at most (IPv6 counted per /64).
    pub max_addresses: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            failures_burst: 10,
            failures_per_second: 1.0,
            logins_burst: 60,
            logins_per_second: 1.0,
            max_addresses: 10_000,
        }
    }
}

/// The login throttle and its counters.
#[derive(Debug)]
pub struct LoginThrottle {
    /// Failed credentials per client address.
    failures: KeyedBuckets<IpAddr>,
    /// Successful logins per tenant (tenants are fixed by the tokens: no bound needed).
    logins: KeyedBuckets<TenantId>,
    pub(crate) failed_logins: AtomicU64,
    pub(crate) failed_bearer_tokens: AtomicU64,
    pub(crate) throttled_logins: AtomicU64,
    pub(crate) throttled_bearer_tokens: AtomicU64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(LoginLimits::default())
    }
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            failures: KeyedBuckets::new(
                limits.failures_per_second,
                limits.failures_burst,
                limits.max_addresses,
            ),
            logins: KeyedBuckets::new(limits.logins_per_second, limits.logins_burst, usize::MAX),
            failed_logins: AtomicU64::new(0),
            failed_bearer_tokens: AtomicU64::new(0),
            throttled_logins: AtomicU64::new(0),
            throttled_bearer_tokens: AtomicU64::new(0),
        }
    }
}

/// The client's address as the connection gives it (never `X-Forwarded-For`, which the
/// client writes); `None` when the server was not given it, and all such clients then
/// share one bucket.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl ClientAddr {
    fn of(extensions: &Extensions) -> Self {
        Self(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr),
        )
    }

    /// The throttle's key: IPv4 as is (also when mapped into IPv6), IPv6 by its /64, which
    /// one host usually holds whole; unknown as the unspecified address.
    fn key(self) -> IpAddr {
        let Some(addr) = self.0 else {
            return IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        };
        match addr.ip() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
        }
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{}", addr.ip()),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self::of(&parts.extensions))
    }
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// A refusal: 401 with `WWW-Authenticate: Bearer`, 403, or 429 with `Retry-After` when
/// the client tried too many bad credentials. The message never says which tokens or
/// tenants exist.
#[derive(Debug)]
pub enum Refused {
    Auth(AuthError),
    /// Too many attempts: what was throttled, and how long until the next is let in.
    Throttled(&'static str, Duration),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Auth(error) => write!(f, "{error}"),
            Refused::Throttled(what, wait) => {
                write!(f, "{what}; try again in {} s", retry_after_secs(*wait))
            }
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match self {
            Refused::Auth(AuthError::Unauthenticated) => StatusCode::UNAUTHORIZED,
            Refused::Auth(AuthError::Forbidden(_)) => StatusCode::FORBIDDEN,
            Refused::Throttled(..) => StatusCode::TOO_MANY_REQUESTS,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Refused::Auth(AuthError::Unauthenticated) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Refused::Throttled(_, wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(wait)),
                );
            }
            Refused::Auth(AuthError::Forbidden(_)) => {}
        }
        response
    }
}

/// Whole seconds, rounded up and at least one, as `Retry-After` takes them.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

const TOO_MANY_FAILURES: &str = "too many failed logins or bad tokens from this address";
const TOO_MANY_LOGINS: &str = "too many logins for this tenant";

/// The principal of a request, from its bearer token, else its session cookie (whose key
/// comes with it).
fn principal(parts: &Parts, state: &ApiState) -> Result<(Principal, Option<SessionKey>), Refused> {
    let headers = &parts.headers;
    // Every value: a request that sends the header twice is refused, not judged by one.
    let tenant_header = || {
        headers
            .get_all(TENANT_HEADER)
            .iter()
            .map(HeaderValue::as_bytes)
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if state.access.is_open() {
        return state
            .access
            .authenticate(authorization, tenant_header())
            .map(|principal| (principal, None))
            .map_err(Refused::Auth);
    }
    if authorization.is_some() {
        // A valid token is always let in, even from an address that is being throttled:
        // machine clients (Prometheus, scripts) often share an address (a proxy, a NAT) with
        // whoever is guessing, and tokens of at least 16 random characters are not guessed
        // at any rate. Only failures are throttled: past the burst they get 429, not 401.
        let client = ClientAddr::of(&parts.extensions);
        let throttle = &state.logins;
        return match state.access.authenticate(authorization, tenant_header()) {
            Ok(principal) => Ok((principal, None)),
            Err(AuthError::Unauthenticated) => {
                let now = Instant::now();
                let wait = throttle.failures.wait(&client.key(), now);
                if !wait.is_zero() {
                    throttle
                        .throttled_bearer_tokens
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Refused::Throttled(TOO_MANY_FAILURES, wait));
                }
                throttle.failures.take(&client.key(), now);
                throttle
                    .failed_bearer_tokens
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%client, "api request with an invalid bearer token");
                Err(Refused::Auth(AuthError::Unauthenticated))
            }
            Err(other) => Err(Refused::Auth(other)),
        };
    }
    let key = session_cookie(headers).map(digest);
    let principal = key
        .and_then(|key| state.sessions.get_key(&key, Instant::now()))
        .ok_or(Refused::Auth(AuthError::Unauthenticated))?;
    // The same rule as for tokens: the header may only confirm the session's tenant.
    principal.confirm(tenant_header()).map_err(Refused::Auth)?;
    Ok((principal, key))
}

/// An authenticated caller and its tenant's data.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub view: TenantView,
    /// The session the caller came with, if it came with a cookie rather than a token: a
    /// long-lived answer (an event stream) ends when it does.
    pub session: Option<SessionKey>,
}

impl Caller {
    pub fn tenant(&self) -> &str {
        self.principal.tenant.as_str()
    }

    fn of(parts: &Parts, state: &ApiState, permission: Permission) -> Result<Self, Refused> {
        let (principal, session) = principal(parts, state)?;
        if !principal.may(permission) {
            return Err(Refused::Auth(AuthError::Forbidden(match permission {
                Permission::Manage => "alert rules and webhooks need an admin token",
                Permission::Read | Permission::Ingest => "this token may not read",
            })));
        }
        let view = state
            .tenants
            .get(&principal.tenant)
            .cloned()
            .ok_or_else(|| {
                tracing::error!(tenant = %principal.tenant, "a token's tenant has no store");
                Refused::Auth(AuthError::Unauthenticated)
            })?;
        Ok(Self {
            principal,
            view,
            session,
        })
    }
}

/// A caller who may read its tenant's spans, graph, rules and webhooks.
pub struct Reader(pub Caller);

impl FromRequestParts<ApiState> for Reader {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Refused> {
        Caller::of(parts, state, Permission::Read).map(Reader)
    }
}

/// A caller who may also change its tenant's alert rules and webhooks.
pub struct Manager(pub Caller);

impl FromRequestParts<ApiState> for Manager {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Refused> {
        Caller::of(parts, state, Permission::Manage).map(Manager)
    }
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /api/login {"token": "..."}`: a session cookie for a token that may read.
///
/// A client address with too many failed logins, or a tenant with too many logins, gets
/// 429 and `Retry-After`; the address's check comes before the token is looked at.
pub async fn login(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    Json(login): Json<Login>,
) -> Response {
    if state.access.is_open() {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": "this server has no tokens configured, so there is nothing to log in to"
            })),
        )
            .into_response();
    }
    let throttle = &state.logins;
    let now = Instant::now();
    let wait = throttle.failures.wait(&client.key(), now);
    if !wait.is_zero() {
        throttle.throttled_logins.fetch_add(1, Ordering::Relaxed);
        return Refused::Throttled(TOO_MANY_FAILURES, wait).into_response();
    }
    let Some(principal) = state.access.principal_of(&login.token) else {
        throttle.failures.take(&client.key(), now);
        throttle.failed_logins.fetch_add(1, Ordering::Relaxed);
        // Never the token, nor any part of it: a typo of a real token is nearly the token.
        tracing::warn!(%client, "failed login: the token is not valid");
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "this token is not valid" })),
        )
            .into_response();
    };
    if !principal.may(Permission::Read) {
        return Refused::Auth(AuthError::Forbidden(
            "this token may only send spans; log in with a read or admin token",
        ))
        .into_response();
    }
    let wait = throttle.logins.wait(&principal.tenant, now);
    if !wait.is_zero() {
        throttle.throttled_logins.fetch_add(1, Ordering::Relaxed);
        return Refused::Throttled(TOO_MANY_LOGINS, wait).into_response();
    }
    throttle.logins.take(&principal.tenant, now);
    let body = whoami_body(&principal, false);
    let cookie = state.sessions.create(principal, now);
    // Secure when the request reached us over HTTPS through a proxy that says so; a
    // browser drops Secure cookies on plain http:// addresses other than localhost.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let value = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /api/logout`: forgets the session and clears the cookie.
pub async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(cookie) = session_cookie(&headers) {
        state.sessions.remove(cookie);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "flowscope_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// `GET /api/whoami`: the caller's tenant and role, and whether the server is open.
pub async fn whoami(State(state): State<ApiState>, Reader(caller): Reader) -> Response {
    Json(whoami_body(&caller.principal, state.access.is_open())).into_response()
}

fn whoami_body(principal: &Principal, open: bool) -> serde_json::Value {
    serde_json::json!({
        "tenant": principal.tenant.as_str(),
        "role": principal.role.as_str(),
        "open": open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_auth::{Role, TenantId};

    fn principal(tenant: &str) -> Principal {
        Principal {
            tenant: TenantId::parse(tenant).unwrap(),
            role: Role::Read,
        }
    }

    #[test]
    fn sessions_expire_and_are_stored_only_as_digests() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let cookie = sessions.create(principal("acme"), now);
        assert_eq!(cookie.len(), 64);
        assert_eq!(sessions.get(&cookie, now).unwrap(), principal("acme"));
        assert!(sessions.get(&cookie, now + SESSION_LIFETIME).is_none());
        assert!(sessions.get("0".repeat(64).as_str(), now).is_none());
        let stored = sessions.0.lock().unwrap();
        assert!(!stored.sessions.contains_key(cookie.as_bytes()));
        assert!(stored.sessions.contains_key(&digest(&cookie)));
    }

    /// Issue 19 (5): 10,000 logins with one tenant's token logged the other tenant out.
    #[test]
    fn one_tenants_logins_evict_only_its_own_sessions_oldest_first() {
        let sessions = Sessions::default();
        let now = Instant::now();
        // The other tenant's admin logged in first: the oldest session of all.
        let bank = sessions.create(principal("bank"), now);
        let first_acme = sessions.create(principal("acme"), now + Duration::from_millis(1));
        let mut last_acme = String::new();
        for i in 2..10_002 {
            last_acme = sessions.create(principal("acme"), now + Duration::from_millis(i));
        }
        let later = now + Duration::from_secs(11);
        assert_eq!(sessions.get(&bank, later), Some(principal("bank")));
        assert_eq!(sessions.get(&last_acme, later), Some(principal("acme")));
        assert_eq!(sessions.get(&first_acme, later), None);
    }

    #[test]
    fn a_tenant_at_its_cap_keeps_its_newest_sessions_and_logouts_free_room() {
        let sessions = Sessions::new(3);
        let now = Instant::now();
        let cookies: Vec<String> = (0..4)
            .map(|_| sessions.create(principal("acme"), now))
            .collect();
        assert_eq!(sessions.get(&cookies[0], now), None);
        assert!(cookies[1..].iter().all(|c| sessions.get(c, now).is_some()));
        // A logout makes room: the next login evicts nobody.
        sessions.remove(&cookies[1]);
        let fifth = sessions.create(principal("acme"), now);
        for cookie in [&cookies[2], &cookies[3], &fifth] {
            assert!(sessions.get(cookie, now).is_some());
        }
        assert_eq!(sessions.0.lock().unwrap().sessions.len(), 3);
    }

    #[test]
    fn the_throttle_key_is_the_address_ipv4_mapped_as_ipv4_and_ipv6_by_its_slash_64() {
        let key = |addr: &str| ClientAddr(Some(addr.parse().unwrap())).key().to_string();
        assert_eq!(key("192.0.2.7:5000"), "192.0.2.7");
        assert_eq!(key("[::ffff:192.0.2.7]:5000"), "192.0.2.7");
        assert_eq!(
            key("[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:1"),
            "2001:db8:1:2::"
        );
        assert_eq!(ClientAddr(None).key().to_string(), "::");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; flowscope_session=abc123; other=1"),
        );
        assert_eq!(session_cookie(&headers), Some("abc123"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("flowscope_sessionx=1"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}
