//! Who may do what: bearer tokens mapped to a tenant and a role, the tenant names that are
//! safe to use as directory names, and per-tenant ingest rate limits.
//!
//! ```text
//!  Authorization: Bearer <token>  ──SHA-256──> constant-time match ──> Principal { tenant, role }
//!  X-Scope-OrgID: <tenant> (optional)  ──must name the token's own tenant, else Forbidden
//!  Principal::may(Permission)  ──> ingest (OTLP) | read (SQL, graph, lists) | manage (rules, webhooks)
//!  RateLimiter::admit(tenant, spans, bytes, now) ──> Ok | wait this long
//! ```
//!
//! The crate is plain logic: time is passed in, nothing here does I/O except
//! [`Access::load`], which reads the tokens file once at start.
//!
//! **Invariant:** the tenant always comes from the credential; a tenant header can only
//! confirm it, never choose another one.

mod access;
mod limit;
mod tenant;

pub use access::{
    Access, AuthError, Permission, Principal, Role, TENANT_HEADER, TokenEntry, TokenFileError,
};
pub use limit::{KeyedBuckets, Limits, RateLimiter, TokenBucket};
pub use tenant::{DEFAULT_TENANT, TenantId};
