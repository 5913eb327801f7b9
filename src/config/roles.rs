//! `--roles`: what this process does in a cluster (issue 24). Left out, it does everything
//! on its own, as a standalone server; given, it is one node of a cluster whose nodes share
//! one metadata database (PostgreSQL).

use std::fmt;

/// The roles of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Takes OTLP from clients and routes each span to the ingester of its trace.
    pub receiver: bool,
    /// Holds partitions: WAL, memtable, flushes, the live graph of its traces.
    pub ingester: bool,
    /// Answers the API and SQL.
    pub querier: bool,
    /// Merges small files.
    pub compactor: bool,
    /// Given with `--roles`: this process is a node of a cluster.
    pub clustered: bool,
}

pub const ROLE_NAMES: [&str; 4] = ["receiver", "ingester", "querier", "compactor"];

impl Roles {
    /// A standalone server: every role, in one process, no routing.
    pub const STANDALONE: Roles = Roles {
        receiver: true,
        ingester: true,
        querier: true,
        compactor: true,
        clustered: false,
    };

    /// Parses `--roles` (`None`: standalone).
    pub fn parse(value: Option<&str>) -> anyhow::Result<Self> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Self::STANDALONE);
        };
        let mut roles = Roles {
            receiver: false,
            ingester: false,
            querier: false,
            compactor: false,
            clustered: true,
        };
        for role in value.split(',').map(str::trim) {
            match role {
                "receiver" => roles.receiver = true,
                "ingester" => roles.ingester = true,
                "querier" => roles.querier = true,
                "compactor" => roles.compactor = true,
                "all" => {
                    roles = Roles {
                        clustered: true,
                        ..Self::STANDALONE
                    }
                }
                other => anyhow::bail!(
                    "--roles: unknown role {other:?}; give a comma-separated list of {} (or all)",
                    ROLE_NAMES.join(", ")
                ),
            }
        }
        Ok(roles)
    }

    /// Checks the roles against the metadata database and object storage: a cluster's nodes
    /// must share one of each (a querier reads every ingester's files from the bucket).
    pub fn check(&self, metadata: &str, object_store: bool) -> anyhow::Result<()> {
        if self.clustered && (self.ingester || self.querier) && !object_store {
            anyhow::bail!(
                "--roles {self}: a cluster's ingesters write their files to, and its queriers                  read them from, one bucket: give --object-store s3://bucket/prefix (the same on                  every node)"
            );
        }
        if self.clustered && !metadata.contains("://") {
            anyhow::bail!(
                "--roles makes this process one node of a cluster, and a cluster's nodes share \
                 one metadata database: give --metadata postgres://user:password@host:port/database \
                 (leave --roles out to run everything in one process)"
            );
        }
        Ok(())
    }
}

impl fmt::Display for Roles {
    /// `all` for a standalone server, else the roles, comma separated (as in
    /// `cluster_nodes.roles`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.clustered {
            return f.write_str("all");
        }
        let names: Vec<&str> = [self.receiver, self.ingester, self.querier, self.compactor]
            .into_iter()
            .zip(ROLE_NAMES)
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_print_and_need_a_shared_database() {
        assert_eq!(Roles::parse(None).unwrap(), Roles::STANDALONE);
        assert_eq!(Roles::STANDALONE.to_string(), "all");
        let receiver = Roles::parse(Some("receiver")).unwrap();
        assert!(receiver.receiver && !receiver.ingester && receiver.clustered);
        assert_eq!(
            Roles::parse(Some(" ingester , querier "))
                .unwrap()
                .to_string(),
            "ingester,querier"
        );
        assert_eq!(
            Roles::parse(Some("all")).unwrap().to_string(),
            "receiver,ingester,querier,compactor"
        );
        let error = Roles::parse(Some("receiver,router"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"router\"") && error.contains("ingester"),
            "{error}"
        );
        let error = receiver
            .check("/var/lib/flowscope/metadata.sqlite", false)
            .unwrap_err();
        assert!(
            error.to_string().contains("--metadata postgres://"),
            "{error}"
        );
        receiver
            .check("postgres://u:p@127.0.0.1:5432/flowscope", false)
            .unwrap();
        let ingester = Roles::parse(Some("ingester")).unwrap();
        let error = ingester.check("postgres://u:p@h/db", false).unwrap_err();
        assert!(error.to_string().contains("--object-store"), "{error}");
        ingester.check("postgres://u:p@h/db", true).unwrap();
        Roles::STANDALONE
            .check("/x/metadata.sqlite", false)
            .unwrap();
    }
}
