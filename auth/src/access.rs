//! Bearer tokens, roles and the principal a request acts as.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limit::Limits;
use crate::tenant::TenantId;

/// The header a client may send to say which tenant it means (Tempo's and Loki's name). It
/// must name the token's own tenant; it never selects another.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Send spans over OTLP, nothing else.
    Ingest,
    /// Read: SQL, the graph, alert rules and webhooks (never their secrets).
    Read,
    /// Everything: read, manage alert rules and webhooks, and send spans.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "role `{}` is unknown; use ingest, read or admin",
                other.escape_debug()
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// What a request needs to be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// OTLP export.
    Ingest,
    /// Any API read.
    Read,
    /// Creating, changing or deleting alert rules and webhooks.
    Manage,
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub role: Role,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        matches!(
            (self.role, permission),
            (Role::Admin, _) | (Role::Read, Permission::Read) | (Role::Ingest, Permission::Ingest)
        )
    }

    /// A tenant header may only name the principal's own tenant (clients that always send
    /// one keep working); naming another is refused, never followed. `tenant_header` is
    /// every value the request carries: more than one (the header sent twice, or values
    /// joined by a comma, which HTTP treats alike) is refused, whatever they name, since
    /// a proxy or a later reader may take another value than the one checked here.
    pub fn confirm<'h>(
        &self,
        tenant_header: impl IntoIterator<Item = &'h [u8]>,
    ) -> Result<(), AuthError> {
        let mut values = tenant_header.into_iter();
        let Some(asked) = values.next() else {
            return Ok(());
        };
        if values.next().is_some() || asked.contains(&b',') {
            return Err(AuthError::Forbidden(SEVERAL_TENANTS));
        }
        if asked.trim_ascii() != self.tenant.as_str().as_bytes() {
            return Err(AuthError::Forbidden(WRONG_TENANT));
        }
        Ok(())
    }
}

/// Why a request was not let in. The messages are fixed: they never say whether a token or
/// a tenant exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, a malformed header or a token nobody issued: HTTP 401, gRPC UNAUTHENTICATED.
    #[error("missing or invalid bearer token: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    /// A valid token asking for what its role or tenant does not allow: HTTP 403, gRPC
    /// PERMISSION_DENIED.
    #[error("{0}")]
    Forbidden(&'static str),
}

const WRONG_TENANT: &str = "this token cannot act for the tenant named in X-Scope-OrgID";
const SEVERAL_TENANTS: &str =
    "X-Scope-OrgID is sent more than once or with several values: send it once, naming one tenant";

/// One token as configured: its SHA-256 (the token itself is not kept), tenant and role.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    digest: [u8; 32],
    principal: Principal,
}

impl TokenEntry {
    pub fn new(token: &str, tenant: TenantId, role: Role) -> Result<Self, String> {
        if token.trim().len() < 16 || token.trim() != token {
            return Err(
                "a token must be at least 16 characters with no surrounding spaces; generate one with `openssl rand -hex 32`".into(),
            );
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
            principal: Principal { tenant, role },
        })
    }

    /// An entry from the hex SHA-256 of a token, for files that should not hold tokens.
    pub fn from_sha256(hex_digest: &str, tenant: TenantId, role: Role) -> Result<Self, String> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
            "sha256 must be 64 hex digits: the output of `printf %s TOKEN | sha256sum`".to_string()
        })?;
        Ok(Self {
            digest,
            principal: Principal { tenant, role },
        })
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// A tokens file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the tokens file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The tokens file as written (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenLine>,
    #[serde(default)]
    tenant: BTreeMap<String, TenantLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    token: Option<String>,
    sha256: Option<String>,
    tenant: String,
    role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantLine {
    max_spans_per_second: Option<u64>,
    max_bytes_per_second: Option<SizeValue>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Who may do what: the configured tokens (none means the server is open) and each
/// tenant's ingest limits.
#[derive(Debug, Clone)]
pub struct Access {
    entries: Vec<TokenEntry>,
    limits: BTreeMap<TenantId, Limits>,
    default_limits: Limits,
}

impl Access {
    /// No tokens: every request acts as the default tenant's admin.
    pub fn open(default_limits: Limits) -> Self {
        Self {
            entries: Vec::new(),
            limits: BTreeMap::new(),
            default_limits,
        }
    }

    /// The given tokens; `limits` overrides `default_limits` per tenant.
    pub fn new(
        entries: Vec<TokenEntry>,
        limits: BTreeMap<TenantId, Limits>,
        default_limits: Limits,
    ) -> Result<Self, String> {
        for (i, entry) in entries.iter().enumerate() {
            if entries[..i].iter().any(|e| e.digest == entry.digest) {
                return Err(format!(
                    "a token is listed twice (the second time for tenant `{}`); every token must be unique",
                    entry.principal.tenant
                ));
            }
        }
        let tenants: BTreeSet<&TenantId> = entries.iter().map(|e| &e.principal.tenant).collect();
        if let Some(unknown) = limits.keys().find(|t| !tenants.contains(t)) {
            return Err(format!(
                "limits are set for tenant `{unknown}`, which no token belongs to"
            ));
        }
        Ok(Self {
            entries,
            limits,
            default_limits,
        })
    }

    /// Reads a tokens file and adds `extra` entries (from flags).
    pub fn load(
        path: &Path,
        extra: Vec<TokenEntry>,
        default_limits: Limits,
    ) -> Result<Self, TokenFileError> {
        Self::from_file(path, std::fs::read_to_string(path), extra, default_limits)
    }

    /// [`Access::load`] from the file's text as it was read (or the error reading it), for
    /// a caller that does its reading apart from resolving.
    pub fn from_file(
        path: &Path,
        text: std::io::Result<String>,
        extra: Vec<TokenEntry>,
        default_limits: Limits,
    ) -> Result<Self, TokenFileError> {
        let text = text.map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| TokenFileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: TokensFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::new();
        for (n, line) in file.token.iter().enumerate() {
            let at = |e: String| invalid(format!("token entry {}: {e}", n + 1));
            let tenant = TenantId::parse(&line.tenant).map_err(at)?;
            let role = Role::parse(&line.role).map_err(at)?;
            let entry = match (&line.token, &line.sha256) {
                (Some(token), None) => TokenEntry::new(token, tenant, role),
                (None, Some(digest)) => TokenEntry::from_sha256(digest, tenant, role),
                _ => Err("give exactly one of `token` and `sha256`".to_string()),
            }
            .map_err(at)?;
            entries.push(entry);
        }
        entries.extend(extra);
        if entries.is_empty() {
            return Err(invalid(
                "it lists no tokens; add a [[token]] entry with token, tenant and role".into(),
            ));
        }
        let mut limits = BTreeMap::new();
        for (name, line) in file.tenant {
            let at = |e: String| invalid(format!("[tenant.{name}]: {e}"));
            let tenant = TenantId::parse(&name).map_err(at)?;
            let bytes = match line.max_bytes_per_second {
                None => default_limits.bytes_per_second,
                Some(SizeValue::Bytes(n)) => Some(n),
                Some(SizeValue::Text(text)) => {
                    Some(flowscope_base::parse_size(&text).map_err(at)? as u64)
                }
            };
            let spans = line
                .max_spans_per_second
                .or(default_limits.spans_per_second);
            limits.insert(
                tenant,
                Limits {
                    spans_per_second: spans.filter(|n| *n > 0),
                    bytes_per_second: bytes.filter(|n| *n > 0),
                },
            );
        }
        Self::new(entries, limits, default_limits).map_err(invalid)
    }

    /// True when no token is configured: anyone who reaches a port acts as the default
    /// tenant's admin.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every tenant a token belongs to (the default tenant alone when open).
    pub fn tenants(&self) -> BTreeSet<TenantId> {
        if self.is_open() {
            return BTreeSet::from([TenantId::default_tenant()]);
        }
        self.entries
            .iter()
            .map(|e| e.principal.tenant.clone())
            .collect()
    }

    /// The ingest limits of a tenant.
    pub fn limits(&self, tenant: &TenantId) -> Limits {
        self.limits
            .get(tenant)
            .copied()
            .unwrap_or(self.default_limits)
    }

    /// The principal of a request, from its `Authorization` value and every value of its
    /// tenant header ([`Principal::confirm`]).
    pub fn authenticate<'h>(
        &self,
        authorization: Option<&[u8]>,
        tenant_header: impl IntoIterator<Item = &'h [u8]>,
    ) -> Result<Principal, AuthError> {
        let principal = if self.is_open() {
            Principal {
                tenant: TenantId::default_tenant(),
                role: Role::Admin,
            }
        } else {
            let token = authorization
                .and_then(bearer_token)
                .ok_or(AuthError::Unauthenticated)?;
            self.find(token).ok_or(AuthError::Unauthenticated)?
        };
        principal.confirm(tenant_header)?;
        Ok(principal)
    }

    /// The principal of a bare token (the dashboard's login form).
    pub fn principal_of(&self, token: &str) -> Option<Principal> {
        if self.is_open() {
            return None;
        }
        self.find(token.trim().as_bytes())
    }

    /// Compares the token's digest with every entry's in constant time, so the time taken
    /// says nothing about how close a guess came.
    fn find(&self, token: &[u8]) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.principal.clone());
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (the scheme in any case), or `None`.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP_INGEST: &str = "shop-ingest-0123456789";
    const SHOP_READ: &str = "shop-read-0123456789ab";
    const BANK_ADMIN: &str = "bank-admin-0123456789a";

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn access() -> Access {
        Access::new(
            vec![
                TokenEntry::new(SHOP_INGEST, tenant("shop"), Role::Ingest).unwrap(),
                TokenEntry::new(SHOP_READ, tenant("shop"), Role::Read).unwrap(),
                TokenEntry::new(BANK_ADMIN, tenant("bank"), Role::Admin).unwrap(),
            ],
            BTreeMap::new(),
            Limits::default(),
        )
        .unwrap()
    }

    fn auth(access: &Access, header: &str, tenant: Option<&str>) -> Result<Principal, AuthError> {
        access.authenticate(Some(header.as_bytes()), tenant.map(str::as_bytes))
    }

    #[test]
    fn a_token_acts_as_its_own_tenant_and_role() {
        let access = access();
        let p = auth(&access, &format!("Bearer {SHOP_READ}"), None).unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("shop", Role::Read));
        let p = auth(&access, &format!("bearer   {BANK_ADMIN} "), Some("bank")).unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("bank", Role::Admin));
    }

    #[test]
    fn missing_malformed_or_unknown_tokens_get_the_same_answer() {
        let access = access();
        for header in [
            "".to_string(),
            "Bearer".to_string(),
            "Bearer ".to_string(),
            format!("Basic {SHOP_READ}"),
            format!("Bearer{SHOP_READ}"),
            format!("Bearer {SHOP_READ}x"),
            format!("Bearer {}", &SHOP_READ[1..]),
            SHOP_READ.to_string(),
        ] {
            assert_eq!(
                auth(&access, &header, None),
                Err(AuthError::Unauthenticated),
                "{header:?}"
            );
        }
        assert_eq!(
            access.authenticate(None, None),
            Err(AuthError::Unauthenticated)
        );
    }

    #[test]
    fn a_tenant_header_can_only_confirm_the_tokens_tenant() {
        let access = access();
        let header = format!("Bearer {SHOP_READ}");
        assert!(auth(&access, &header, Some("shop")).is_ok());
        for other in ["bank", "nobody", "", "shop|bank"] {
            assert_eq!(
                auth(&access, &header, Some(other)),
                Err(AuthError::Forbidden(WRONG_TENANT)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_tenant_header_with_several_values_is_refused_whatever_they_name() {
        let access = access();
        let header = format!("Bearer {SHOP_READ}");
        let several: [&[&str]; 5] = [
            &["shop", "bank"],
            &["shop", "shop"],
            &["bank", "shop"],
            &["shop,bank"],
            &["shop, shop"],
        ];
        for values in several {
            let values = values.iter().map(|value| value.as_bytes());
            assert_eq!(
                access.authenticate(Some(header.as_bytes()), values.clone()),
                Err(AuthError::Forbidden(SEVERAL_TENANTS)),
                "{:?}",
                values.collect::<Vec<_>>()
            );
        }
        // A session confirms its tenant by the same rule.
        let principal = auth(&access, &header, None).unwrap();
        assert_eq!(
            principal.confirm([b"shop".as_slice(), b"shop"]),
            Err(AuthError::Forbidden(SEVERAL_TENANTS))
        );
        assert_eq!(principal.confirm([b"shop".as_slice()]), Ok(()));
    }

    #[test]
    fn roles_grant_exactly_their_permissions() {
        let p = |role| Principal {
            tenant: tenant("shop"),
            role,
        };
        use Permission::*;
        assert!(p(Role::Ingest).may(Ingest));
        assert!(!p(Role::Ingest).may(Read) && !p(Role::Ingest).may(Manage));
        assert!(p(Role::Read).may(Read));
        assert!(!p(Role::Read).may(Ingest) && !p(Role::Read).may(Manage));
        assert!(
            p(Role::Admin).may(Ingest) && p(Role::Admin).may(Read) && p(Role::Admin).may(Manage)
        );
    }

    #[test]
    fn an_open_server_acts_as_the_default_admin() {
        let access = Access::open(Limits::default());
        let p = access.authenticate(None, None).unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("default", Role::Admin));
        assert_eq!(
            access.authenticate(None, Some(b"other".as_slice())),
            Err(AuthError::Forbidden(WRONG_TENANT))
        );
        assert_eq!(access.principal_of("anything-at-all-here"), None);
    }

    #[test]
    fn the_tokens_file_is_read_with_limits_and_hashed_tokens() {
        let dir = std::env::temp_dir().join(format!("flowscope-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.toml");
        let digest = hex::encode(Sha256::digest(BANK_ADMIN.as_bytes()));
        std::fs::write(
            &path,
            format!(
                r#"
[[token]]
token = "{SHOP_INGEST}"
tenant = "shop"
role = "ingest"

[[token]]
sha256 = "{digest}"
tenant = "bank"
role = "admin"

[tenant.shop]
max_spans_per_second = 500
max_bytes_per_second = "1MiB"
"#
            ),
        )
        .unwrap();
        let defaults = Limits {
            spans_per_second: Some(9),
            bytes_per_second: None,
        };
        let access = Access::load(&path, Vec::new(), defaults).unwrap();
        assert_eq!(
            access
                .tenants()
                .iter()
                .map(TenantId::as_str)
                .collect::<Vec<_>>(),
            ["bank", "shop"]
        );
        assert_eq!(
            access.limits(&tenant("shop")),
            Limits {
                spans_per_second: Some(500),
                bytes_per_second: Some(1 << 20)
            }
        );
        assert_eq!(access.limits(&tenant("bank")), defaults);
        assert_eq!(
            auth(&access, &format!("Bearer {BANK_ADMIN}"), None)
                .unwrap()
                .tenant
                .as_str(),
            "bank"
        );

        for (text, expected) in [
            ("", "lists no tokens"),
            (
                "[[token]]\ntoken = \"short\"\ntenant = \"a\"\nrole = \"read\"",
                "at least 16",
            ),
            (
                "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"../x\"\nrole = \"read\"",
                "tenant `../x`",
            ),
            (
                "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nrole = \"root\"",
                "role `root`",
            ),
            (
                "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nrole = \"read\"\n[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"b\"\nrole = \"read\"",
                "listed twice",
            ),
            (
                "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nrole = \"read\"\n[tenant.b]\nmax_spans_per_second = 1",
                "no token belongs to",
            ),
            (
                "[[token]]\ntenant = \"a\"\nrole = \"read\"",
                "exactly one of",
            ),
            ("[[tokens]]\ntenant = \"a\"", "unknown field"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Access::load(&path, Vec::new(), Limits::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{text:?} gave {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
