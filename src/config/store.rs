//! `flowscope-query`'s store part: the WAL, flushes, retention, and the memory ceiling every
//! store and receiver shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use flowscope_base::memory::MemoryBudget;
use flowscope_query::{RequestDecoder, StoreConfig, WalSync};

use super::{MIN_MEMORY_LIMIT, Note, Settings, duration, size};

/// The store's config and the memory ceiling it was given, in bytes.
pub(super) fn resolve(
    settings: &Settings,
    data_dir: PathBuf,
    default_memory_limit: usize,
) -> anyhow::Result<(StoreConfig, usize)> {
    let wal_sync = match &settings.wal_sync {
        None => WalSync::Always,
        Some(text) => text
            .parse::<WalSync>()
            .map_err(|e| anyhow::anyhow!("--wal-sync: {e}"))?,
    };
    let mut store = StoreConfig::new(data_dir);
    store.wal_sync = wal_sync;
    // The WAL logs each OTLP/protobuf request as it arrived; replay decodes it with the
    // receivers' own decoder, so the rows come back as they were acknowledged.
    store.request_decoder = Some(RequestDecoder::new(
        flowscope_collector::decode_logged_request,
    ));
    store.retention = duration("retention", settings.retention.clone(), store.retention)?;
    store.flush_interval = duration(
        "flush-interval",
        settings.flush_interval.clone(),
        store.flush_interval,
    )?;
    store.flush_rows = settings.flush_rows.unwrap_or(store.flush_rows);
    store.compact_every = duration(
        "compact-interval",
        settings.compact_interval.clone(),
        store.compact_every,
    )?;
    let memory_limit = size(
        "memory-limit",
        settings.memory_limit.clone(),
        default_memory_limit,
    )?;
    if memory_limit < MIN_MEMORY_LIMIT {
        bail!("--memory-limit must be at least 64MiB");
    }
    let ingest_buffer = size(
        "ingest-buffer",
        settings.ingest_buffer.clone(),
        memory_limit / 8,
    )?;
    if ingest_buffer > memory_limit / 2 {
        bail!(
            "--ingest-buffer must be at most half of --memory-limit ({} MiB); raise --memory-limit or lower --ingest-buffer",
            memory_limit >> 21
        );
    }
    // Every tenant's store gets a clone of this config, so they share the one budget.
    store.memory = Arc::new(
        MemoryBudget::new(memory_limit, memory_limit / 8, memory_limit / 20 * 17)
            .with_ingest_buffer(ingest_buffer),
    );
    if store.flush_rows == 0 || store.flush_interval.is_zero() {
        bail!("--flush-rows and --flush-interval must be greater than zero");
    }
    if store.compact_every < Duration::from_secs(1) {
        bail!("--compact-interval must be at least 1s");
    }
    if store.retention < Duration::from_secs(60) {
        bail!("--retention must be at least 1m");
    }
    Ok((store, memory_limit))
}

/// `--object-store`, checked (an `s3://` address with a bucket); no I/O: the bucket is
/// first reached when the stores open.
pub(super) fn object_store(settings: &Settings) -> anyhow::Result<Option<String>> {
    let Some(url) = settings.object_store.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if url.is_empty() {
        return Ok(None);
    }
    flowscope_query::store::objects::parse_s3_url(url).map_err(anyhow::Error::msg)?;
    Ok(Some(url.to_string()))
}

/// The local disk cache of object storage: `--cache-dir` (default `DATA_DIR/cache`) and
/// `--cache-size` (default 1 GiB; 0 turns it off).
pub(super) fn object_cache(
    settings: &Settings,
    data_dir: &Path,
    object_store: bool,
    notes: &mut Vec<Note>,
) -> anyhow::Result<Option<(PathBuf, u64)>> {
    let size = match settings.cache_size.as_deref() {
        None => DEFAULT_CACHE_SIZE,
        Some(text) => super::parse_size(text).context("--cache-size")? as u64,
    };
    if !object_store {
        if settings.cache_dir.is_some() || settings.cache_size.is_some() {
            notes.push(Note::CacheWithoutObjectStore);
        }
        return Ok(None);
    }
    if size == 0 {
        return Ok(None);
    }
    let dir = settings
        .cache_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("cache"));
    Ok(Some((dir, size)))
}

const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// `--metadata`: a `postgres://` URL, checked for form only (the server is first reached
/// when the pipeline opens), or by default the SQLite file `DATA_DIR/metadata.sqlite`.
pub(super) fn metadata(settings: &Settings, data_dir: &Path) -> anyhow::Result<String> {
    let Some(target) = settings.metadata.as_deref().map(str::trim) else {
        return Ok(data_dir.join("metadata.sqlite").display().to_string());
    };
    if target.is_empty() {
        return Ok(data_dir.join("metadata.sqlite").display().to_string());
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        bail!(
            "--metadata {target:?} is not a PostgreSQL URL; give postgres://user:password@host:port/database, \
             or leave it out for the SQLite file in --data-dir"
        );
    };
    if scheme != "postgres" && scheme != "postgresql" {
        bail!(
            "--metadata: the scheme {scheme:?} is not supported; give postgres://user:password@host:port/database, \
             or leave it out for the SQLite file in --data-dir"
        );
    }
    if rest.is_empty() || rest.starts_with('/') {
        bail!(
            "--metadata: the URL names no host; give postgres://user:password@host:port/database"
        );
    }
    Ok(target.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_store_is_an_s3_address_with_a_bucket() {
        let with = |url: &str| {
            object_store(&Settings {
                object_store: Some(url.into()),
                ..Settings::default()
            })
        };
        assert_eq!(
            with("s3://spans/team-a").expect("valid"),
            Some("s3://spans/team-a".to_string())
        );
        assert_eq!(with("").expect("empty is the local disk"), None);
        let refused = with("/var/lib/flowscope").expect_err("not s3");
        assert!(refused.to_string().contains("s3://bucket"), "{refused}");
        assert!(with("s3:///team-a").is_err(), "no bucket");
    }

    #[test]
    fn metadata_is_the_sqlite_file_in_the_data_directory_or_a_postgres_url() {
        let data = Path::new("/var/lib/flowscope");
        let with = |target: Option<&str>| {
            metadata(
                &Settings {
                    metadata: target.map(String::from),
                    ..Settings::default()
                },
                data,
            )
        };
        assert_eq!(
            with(None).expect("default"),
            "/var/lib/flowscope/metadata.sqlite"
        );
        assert_eq!(
            with(Some("postgres://flowscope:pw@db:5432/meta")).expect("url"),
            "postgres://flowscope:pw@db:5432/meta"
        );
        assert!(with(Some("postgresql://db/meta")).is_ok());
        let refused = with(Some("mysql://db/meta")).expect_err("not postgres");
        assert!(refused.to_string().contains("postgres://"), "{refused}");
        assert!(
            with(Some("/tmp/meta.sqlite")).is_err(),
            "a path is not a URL"
        );
        assert!(with(Some("postgres:///meta")).is_err(), "no host");
    }

    #[test]
    fn the_cache_defaults_to_a_gibibyte_in_the_data_directory_and_only_with_object_storage() {
        let data = Path::new("/var/lib/flowscope");
        let resolve = |dir: Option<&str>, size: Option<&str>, object_store: bool| {
            let mut notes = Vec::new();
            let settings = Settings {
                cache_dir: dir.map(PathBuf::from),
                cache_size: size.map(String::from),
                ..Settings::default()
            };
            (
                object_cache(&settings, data, object_store, &mut notes),
                notes.len(),
            )
        };
        let (cache, notes) = resolve(None, None, true);
        assert_eq!(cache.expect("default"), Some((data.join("cache"), 1 << 30)));
        assert_eq!(notes, 0);
        let (cache, _) = resolve(Some("/fast/cache"), Some("200MiB"), true);
        assert_eq!(
            cache.expect("set"),
            Some((PathBuf::from("/fast/cache"), 200 << 20))
        );
        assert_eq!(resolve(None, Some("0"), true).0.expect("off"), None);
        let (cache, notes) = resolve(None, Some("1GiB"), false);
        assert_eq!((cache.expect("ignored"), notes), (None, 1));
        assert!(resolve(None, Some("lots"), true).0.is_err());
    }
}
