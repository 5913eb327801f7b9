//! `flowscope-auth`'s part: the tokens, their tenants and limits, and where the API may
//! listen without them.

use std::net::SocketAddr;
use std::path::PathBuf;

use flowscope_auth::{Access, Limits, Role, TenantId, TokenEntry};

use super::{Settings, parse_size};
use anyhow::Context as _;

/// The configured tokens: the tokens file's (its path and its text as read) plus the
/// default tenant's from flags; none at all means the server is open.
/// With `demo`, and tokens configured, also `demo_token`, a token of this process only,
/// with which the built-in demo sends to the default tenant.
pub(super) fn resolve(
    settings: &Settings,
    tokens_file: Option<(PathBuf, std::io::Result<String>)>,
    demo_token: String,
    demo: bool,
) -> anyhow::Result<(Access, Option<String>)> {
    let default_limits = Limits {
        spans_per_second: settings.tenant_max_spans_per_second.filter(|n| *n > 0),
        bytes_per_second: match &settings.tenant_max_bytes_per_second {
            None => None,
            Some(text) => Some(parse_size(text).context("--tenant-max-bytes-per-second")? as u64)
                .filter(|n| *n > 0),
        },
    };
    let flag_tokens = [
        (Role::Ingest, &settings.ingest_token),
        (Role::Read, &settings.read_token),
        (Role::Admin, &settings.admin_token),
    ];
    let mut entries = Vec::new();
    for (role, token) in flag_tokens {
        if let Some(token) = token {
            let entry = TokenEntry::new(token, TenantId::default_tenant(), role)
                .map_err(|e| anyhow::anyhow!("--{}-token: {e}", role.as_str()))?;
            entries.push(entry);
        }
    }
    let open = tokens_file.is_none() && entries.is_empty();
    let demo_token = (demo && !open).then_some(demo_token);
    if let Some(token) = &demo_token {
        entries.push(
            TokenEntry::new(token, TenantId::default_tenant(), Role::Ingest)
                .map_err(anyhow::Error::msg)?,
        );
    }
    let access = match tokens_file {
        Some((path, text)) => Access::from_file(&path, text, entries, default_limits)?,
        None if open => Access::open(default_limits),
        None => {
            Access::new(entries, Default::default(), default_limits).map_err(anyhow::Error::msg)?
        }
    };
    Ok((access, demo_token))
}

/// Without tokens anyone who reaches the API is an admin: keep it on loopback.
pub(super) fn api_addr(asked: SocketAddr, access: &Access) -> SocketAddr {
    if access.is_open() && !asked.ip().is_loopback() {
        return SocketAddr::from(([127, 0, 0, 1], asked.port()));
    }
    asked
}
