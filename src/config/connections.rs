//! The accept layer's part (`listen.rs`): every port's connection cap and timeouts.

use std::time::Duration;

use anyhow::bail;

use super::{Note, duration};
use crate::listen::ConnectionConfig;

/// The connection flags as given, before defaults.
pub(super) struct ConnectionFlags {
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) request_body_timeout: Option<String>,
    pub(super) max_connections: Option<u64>,
}

/// The connection limits, checked against each other and against `--sql-timeout`: a
/// connection waiting for a query's answer moves no byte, so the idle timeout must outlast
/// the longest query.
pub(super) fn connection_config(
    flags: ConnectionFlags,
    sql_timeout: Duration,
    notes: &mut Vec<Note>,
) -> anyhow::Result<ConnectionConfig> {
    let defaults = ConnectionConfig::default();
    let given_idle = flags.idle_timeout.is_some();
    let mut config = ConnectionConfig {
        header_read_timeout: duration(
            "header-read-timeout",
            flags.header_read_timeout,
            defaults.header_read_timeout,
        )?,
        idle_timeout: duration("idle-timeout", flags.idle_timeout, defaults.idle_timeout)?,
        request_body_timeout: duration(
            "request-body-timeout",
            flags.request_body_timeout,
            defaults.request_body_timeout,
        )?,
        max_connections: flags.max_connections,
    };
    if config.header_read_timeout.is_zero()
        || config.idle_timeout.is_zero()
        || config.request_body_timeout.is_zero()
    {
        bail!(
            "--header-read-timeout, --idle-timeout and --request-body-timeout must be above zero"
        );
    }
    if config.max_connections == Some(0) {
        bail!("--max-connections must be at least 1");
    }
    if config.idle_timeout <= sql_timeout {
        if given_idle {
            bail!(
                "--idle-timeout ({}s) must be longer than --sql-timeout ({}s), or connections waiting for a query's answer are closed: raise --idle-timeout",
                config.idle_timeout.as_secs_f64(),
                sql_timeout.as_secs_f64()
            );
        }
        // Only the default is in the way: keep the idle timeout half a minute past queries.
        config.idle_timeout = sql_timeout + Duration::from_secs(30);
        notes.push(Note::IdleTimeoutRaised {
            to: config.idle_timeout,
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_timeout_outlasts_the_longest_query() {
        let flags = |idle: Option<&str>, max| ConnectionFlags {
            header_read_timeout: None,
            idle_timeout: idle.map(str::to_string),
            request_body_timeout: Some("5s".into()),
            max_connections: max,
        };
        let mut notes = Vec::new();
        let mut connection_config =
            |flags, sql_timeout| connection_config(flags, sql_timeout, &mut notes);
        let config =
            connection_config(flags(None, None), Duration::from_secs(30)).expect("the defaults");
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.request_body_timeout, Duration::from_secs(5));
        assert_eq!(config.max_connections, None);
        // The default makes way for a longer --sql-timeout...
        let config = connection_config(flags(None, Some(100)), Duration::from_secs(120))
            .expect("a raised default");
        assert_eq!(config.idle_timeout, Duration::from_secs(150));
        assert_eq!(config.max_connections, Some(100));
        // ...an idle timeout asked for is refused instead, with what to do.
        let error = connection_config(flags(Some("20s"), None), Duration::from_secs(30))
            .expect_err("shorter than a query");
        assert!(
            error.to_string().contains("raise --idle-timeout"),
            "{error}"
        );
        assert!(connection_config(flags(Some("0s"), None), Duration::ZERO).is_err());
        assert!(connection_config(flags(None, Some(0)), Duration::from_secs(1)).is_err());
        // Raising the default is said in the log at start.
        assert_eq!(
            notes,
            [Note::IdleTimeoutRaised {
                to: Duration::from_secs(150)
            }]
        );
    }
}
