//! Tenant names: they become directory names under the data directory, so only a small,
//! path-safe alphabet is allowed (Loki's rule, narrowed).

use std::fmt;
use std::sync::Arc;

/// The tenant of a server without tokens, and of every row written before tenants existed.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant name, in bytes.
const MAX_LEN: usize = 150;

/// A validated tenant name: 1–150 bytes of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(format!(
                "tenant `{}` must be 1 to {MAX_LEN} bytes long",
                text.escape_debug()
            ));
        }
        if text == "." || text == ".." {
            return Err(format!(
                "tenant `{text}` is not allowed: it names a directory"
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "tenant `{}` has the character `{}`; use letters, digits, `.`, `_` and `-`",
                text.escape_debug(),
                bad.escape_debug()
            ));
        }
        Ok(Self(text.into()))
    }

    /// The tenant of a server without tokens.
    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        &*self.0 == DEFAULT_TENANT
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::TenantId;

    #[test]
    fn path_safe_names_are_accepted() {
        for name in ["default", "shop", "team-a", "a.b_c", "A1", &"x".repeat(150)] {
            assert_eq!(
                TenantId::parse(name).map(|t| t.to_string()),
                Ok(name.to_string())
            );
        }
    }

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a\\b",
            "a b",
            "tenant\0",
            "ümlaut",
            "a:b",
            &"x".repeat(151),
        ] {
            assert!(TenantId::parse(name).is_err(), "{name:?} was accepted");
        }
    }
}
