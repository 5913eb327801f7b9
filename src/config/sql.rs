//! `flowscope-query`'s SQL part and `flowscope-web`'s: what a query may take, and what an
//! answer may hold.

use anyhow::bail;
use flowscope_query::SqlConfig;
use flowscope_web::ApiConfig;

use super::{Settings, duration, size};

/// The SQL engine's limits, SQL memory defaulting to a quarter of the memory ceiling.
pub(super) fn resolve(settings: &Settings, memory_limit: usize) -> anyhow::Result<SqlConfig> {
    let mut sql = SqlConfig::default();
    sql.timeout = duration("sql-timeout", settings.sql_timeout.clone(), sql.timeout)?;
    sql.memory_limit = size(
        "sql-memory-limit",
        settings.sql_memory_limit.clone(),
        sql.memory_limit.min(memory_limit / 4),
    )?;
    sql.max_concurrent = settings.sql_max_concurrent.unwrap_or(sql.max_concurrent);
    sql.max_concurrent_per_tenant = settings
        .sql_max_concurrent_per_tenant
        .unwrap_or(sql.max_concurrent.div_ceil(2));
    if sql.max_concurrent == 0 || sql.max_concurrent_per_tenant == 0 {
        bail!("--sql-max-concurrent and --sql-max-concurrent-per-tenant must be at least 1");
    }
    Ok(sql)
}

/// The API's answer limits.
pub(super) fn api(settings: &Settings) -> anyhow::Result<ApiConfig> {
    let mut api = ApiConfig::default();
    api.max_json_rows = settings.sql_max_rows.unwrap_or(api.max_json_rows);
    api.max_response_bytes = size(
        "sql-max-response",
        settings.sql_max_response.clone(),
        api.max_response_bytes,
    )?;
    if api.max_response_bytes < flowscope_web::SQL_FIRST_PART {
        bail!(
            "--sql-max-response must be at least {} KiB",
            flowscope_web::SQL_FIRST_PART >> 10
        );
    }
    api.allow_private_webhooks = settings.allow_private_webhooks.unwrap_or(false);
    Ok(api)
}
