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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowscope_auth::{AuthError, Permission, Principal, TENANT_HEADER};
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{ApiState, TenantView};

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "flowscope_session";
/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first (a flood of logins cannot grow memory).
const MAX_SESSIONS: usize = 10_000;

/// Logged-in dashboard sessions, in memory: a restart logs everyone out. Keyed by the
/// SHA-256 of the cookie value, so the table holds nothing a reader could replay.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<[u8; 32], Session>>>);

/// Who logged in, and until when.
type Session = (Principal, Instant);

impl Sessions {
    /// A new session for `principal`; returns the cookie value.
    fn create(&self, principal: Principal, now: Instant) -> String {
        let mut id = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        let cookie = hex::encode(id);
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, (_, expires)| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(key, _)| *key)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(digest(&cookie), (principal, now + SESSION_LIFETIME));
        cookie
    }

    fn get(&self, cookie: &str, now: Instant) -> Option<Principal> {
        let sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(&digest(cookie)) {
            Some((principal, expires)) if *expires > now => Some(principal.clone()),
            _ => None,
        }
    }

    fn remove(&self, cookie: &str) {
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&digest(cookie));
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

/// A refusal: 401 with `WWW-Authenticate: Bearer`, or 403. The message never says which
/// tokens or tenants exist.
#[derive(Debug)]
pub struct Refused(AuthError);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match self.0 {
            AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.0.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The principal of a request, from its bearer token, else its session cookie.
fn principal(headers: &HeaderMap, state: &ApiState) -> Result<Principal, AuthError> {
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
    if authorization.is_some() || state.access.is_open() {
        return state.access.authenticate(authorization, tenant_header());
    }
    let principal = session_cookie(headers)
        .and_then(|cookie| state.sessions.get(cookie, Instant::now()))
        .ok_or(AuthError::Unauthenticated)?;
    // The same rule as for tokens: the header may only confirm the session's tenant.
    principal.confirm(tenant_header())?;
    Ok(principal)
}

/// An authenticated caller and its tenant's data.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub view: TenantView,
}

impl Caller {
    pub fn tenant(&self) -> &str {
        self.principal.tenant.as_str()
    }

    fn of(parts: &Parts, state: &ApiState, permission: Permission) -> Result<Self, Refused> {
        let principal = principal(&parts.headers, state).map_err(Refused)?;
        if !principal.may(permission) {
            return Err(Refused(AuthError::Forbidden(match permission {
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
                Refused(AuthError::Unauthenticated)
            })?;
        Ok(Self { principal, view })
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
pub async fn login(
    State(state): State<ApiState>,
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
    let Some(principal) = state.access.principal_of(&login.token) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "this token is not valid" })),
        )
            .into_response();
    };
    if !principal.may(Permission::Read) {
        return Refused(AuthError::Forbidden(
            "this token may only send spans; log in with a read or admin token",
        ))
        .into_response();
    }
    let body = whoami_body(&principal, false);
    let cookie = state.sessions.create(principal, Instant::now());
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
        assert!(!stored.contains_key(cookie.as_bytes()));
        assert!(stored.contains_key(&digest(&cookie)));
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
