//! Tokens files (`--tokens-file`) for the tests that run several tenants on one server.

use std::fmt::Write as _;

pub const ACME_INGEST: &str = "acme-ingest-token-0001";
pub const ACME_READ: &str = "acme-read-token-000001";
pub const ACME_ADMIN: &str = "acme-admin-token-00001";
pub const GLOBEX_INGEST: &str = "globex-ingest-token-01";
pub const GLOBEX_READ: &str = "globex-read-token-0001";

/// The TOML of a tokens file with one `[[token]]` entry, given in clear, per
/// `(token, tenant, role)`.
pub fn tokens_toml(tokens: &[(&str, &str, &str)]) -> String {
    let mut toml = String::new();
    for (token, tenant, role) in tokens {
        let _ = writeln!(
            toml,
            "[[token]]\ntoken = \"{token}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\n"
        );
    }
    toml
}
