//! Object storage for committed segments: where the Parquet files go when the store is told
//! `--object-store s3://bucket/prefix` instead of keeping them on the local disk.
//!
//! The WAL and the memtable stay local (acknowledged still means fsynced on this machine);
//! a flush writes each Parquet file to a local staging directory, uploads it with one PUT,
//! and only then writes the commit marker (also an object), so a crash between upload and
//! commit leaves an object that the next start deletes and replays from the WAL.
//!
//! The store's stages run on threads of their own and call the async `object_store` API
//! through the runtime handle given here (never from inside an async task).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::store::counted::{CountedStore, RequestCounts, RequestStats};
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use tokio::runtime::Handle;

use crate::error::StoreError;
use crate::store::cache::{CachedStore, DiskCache};

/// A bucket (or any `object_store` implementation) and the prefix under which one store
/// keeps its files.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    url: ObjectStoreUrl,
    root: ObjectPath,
    runtime: Handle,
    /// The local disk cache the store's reads go through, when there is one.
    cache: Option<Arc<DiskCache>>,
    /// The requests that reached `store` (counted under the cache).
    requests: Arc<RequestCounts>,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

/// The bucket and prefix of an `s3://bucket/prefix` address, checked without any I/O.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(format!(
            "--object-store {url:?} is not an s3:// address; use s3://bucket or s3://bucket/prefix (the local disk is the default)"
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!(
            "--object-store {url:?} names no bucket; use s3://bucket/prefix"
        ));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl ObjectStorage {
    /// S3 at `url` (`s3://bucket/prefix`), configured by the standard `AWS_*` variables
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP` for a local server). Does no I/O.
    pub fn s3(url: &str, runtime: Handle) -> Result<Self, StoreError> {
        let (bucket, prefix) = parse_s3_url(url).map_err(StoreError::Unavailable)?;
        // A request is retried for seconds, not the client's default three minutes: the
        // flusher retries a failed flush itself (and says so), and a query over a bucket
        // that is down should fail while the user still waits for it.
        let retry = object_store::RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_retry(retry);
        // A local server (s3s-fs, MinIO, moto) is addressed by path, not by a bucket host name.
        if std::env::var_os("AWS_ENDPOINT").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
        {
            builder = builder.with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot use {url}: {e}; set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT with AWS_ALLOW_HTTP=true for a local server)"
            ))
        })?;
        let url = ObjectStoreUrl::parse(format!("s3://{bucket}"))
            .map_err(|e| StoreError::Unavailable(format!("bad bucket name {bucket:?}: {e}")))?;
        Ok(Self::new(Arc::new(store), url, &prefix, runtime))
    }

    /// Any store (tests wrap one to inject faults), registered for SQL under `url`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        url: ObjectStoreUrl,
        prefix: &str,
        runtime: Handle,
    ) -> Self {
        let requests = Arc::new(RequestCounts::default());
        Self {
            store: Arc::new(CountedStore::new(store, requests.clone())),
            url,
            root: ObjectPath::from(prefix),
            runtime,
            cache: None,
            requests,
        }
    }

    /// The same bucket read through `cache` (`--cache-dir`, `--cache-size`): uploads are
    /// kept there too, and reads of what it holds never reach the bucket.
    pub fn with_cache(self, cache: Arc<DiskCache>) -> Self {
        Self {
            store: Arc::new(CachedStore::new(self.store, cache.clone())),
            cache: Some(cache),
            ..self
        }
    }

    /// The requests sent to the object store since start (all tenants' together: they
    /// share one client).
    pub fn requests(&self) -> RequestStats {
        self.requests.stats()
    }

    /// The local disk cache, when there is one.
    pub fn cache(&self) -> Option<&Arc<DiskCache>> {
        self.cache.as_ref()
    }

    /// The same bucket with `sub` (a relative path of `/`-separated parts) under the prefix:
    /// one tenant's files.
    pub fn child(&self, sub: &str) -> Self {
        let mut root = self.root.clone();
        for part in sub.split('/').filter(|p| !p.is_empty()) {
            root = root.join(part);
        }
        Self {
            root,
            ..self.clone()
        }
    }

    /// The same bucket at `address` (`s3://bucket/prefix`, as [`Self::describe`] writes
    /// it): another node's files in a cluster. `None` when it is another bucket.
    pub fn at(&self, address: &str) -> Option<Self> {
        let base = self.url.as_str().trim_end_matches('/');
        let rest = address.strip_prefix(base)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let root = ObjectPath::from(rest.trim_matches('/'));
        Some(Self {
            root,
            ..self.clone()
        })
    }

    /// `s3://bucket/prefix`, for logs and errors.
    pub fn describe(&self) -> String {
        let base = self.url.as_str().trim_end_matches('/');
        if self.root.as_ref().is_empty() {
            base.to_string()
        } else {
            format!("{base}/{}", self.root)
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn url(&self) -> &ObjectStoreUrl {
        &self.url
    }

    /// The location of `relative` (`/`-separated) under this storage's prefix.
    pub(crate) fn location(&self, relative: &str) -> ObjectPath {
        let mut at = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            at = at.join(part);
        }
        at
    }

    /// `location`'s path relative to this storage's prefix (`/`-separated), when it is
    /// under it.
    pub(crate) fn relative(&self, location: &ObjectPath) -> Option<String> {
        let parts = location.prefix_match(&self.root)?;
        Some(
            parts
                .map(|part| part.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    fn unavailable(&self, what: &str, error: impl fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("cannot {what} in {}: {error}", self.describe()))
    }

    /// Runs `future` to completion from a thread outside the runtime (a store stage, a
    /// blocking task).
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Uploads the local file `file` to `location` with one PUT; returns its size.
    pub(crate) fn upload(&self, file: &Path, location: &ObjectPath) -> Result<u64, StoreError> {
        let bytes = Bytes::from(std::fs::read(file)?);
        let len = bytes.len() as u64;
        self.block_on(self.store.put(location, PutPayload::from(bytes)))
            .map_err(|e| self.unavailable(&format!("upload {location}"), e))?;
        Ok(len)
    }

    /// Writes `bytes` to `location` (a PUT replaces an object whole: readers see the old
    /// or the new one).
    pub(crate) fn put(&self, location: &ObjectPath, bytes: Bytes) -> Result<(), StoreError> {
        self.block_on(self.store.put(location, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.unavailable(&format!("write {location}"), e))
    }

    /// The object at `location`, or `None` when there is none.
    pub(crate) fn get_if_exists(&self, location: &ObjectPath) -> Result<Option<Bytes>, StoreError> {
        let got = self.block_on(async {
            match self.store.get(location).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        });
        got.map_err(|e| self.unavailable(&format!("read {location}"), e))
    }

    /// The whole object at `location`.
    pub(crate) fn get(&self, location: &ObjectPath) -> Result<Bytes, StoreError> {
        self.get_if_exists(location)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{}/{location} is gone from object storage; a committed segment was deleted by something other than flowscope",
                self.url.as_str().trim_end_matches('/')
            ))
        })
    }

    /// Deletes `location`; deleting what is not there is not an error.
    pub(crate) fn delete(&self, location: &ObjectPath) -> Result<(), StoreError> {
        let deleted = self.block_on(async {
            match self.store.delete(location).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                other => other,
            }
        });
        deleted.map_err(|e| self.unavailable(&format!("delete {location}"), e))
    }

    /// The Parquet footer of `object`, read with ranged GETs (the file's last bytes).
    pub(crate) fn footer(&self, object: &ObjectMeta) -> Result<Arc<ParquetMetaData>, StoreError> {
        let corrupt = |e: &dyn fmt::Display| {
            StoreError::Corrupt(format!(
                "segment {}/{} has no readable Parquet footer ({e}); move it out of the bucket to start without it",
                self.url.as_str().trim_end_matches('/'),
                object.location
            ))
        };
        let location = &object.location;
        let read = |range: std::ops::Range<u64>| {
            self.block_on(self.store.get_range(location, range))
                .map_err(|e| self.unavailable(&format!("read {location}"), e))
        };
        let size = object.size;
        if size < 8 {
            return Err(corrupt(&"it is shorter than a footer"));
        }
        let tail = read(size - 8..size)?;
        let tail: &[u8; 8] = tail
            .as_ref()
            .try_into()
            .map_err(|_| corrupt(&"a short read"))?;
        let footer = FooterTail::try_new(tail).map_err(|e| corrupt(&e))?;
        let len = footer.metadata_length() as u64;
        if len + 8 > size {
            return Err(corrupt(&"its footer claims more bytes than the file has"));
        }
        let metadata = read(size - 8 - len..size - 8)?;
        ParquetMetaDataReader::decode_metadata(&metadata)
            .map(Arc::new)
            .map_err(|e| corrupt(&e))
    }

    /// Every object under `relative`.
    pub(crate) fn list(&self, relative: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = self.location(relative);
        self.block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| self.unavailable("list the segments", e))
    }
}
