//! A bounded local disk cache in front of object storage (`--cache-dir`, `--cache-size`).
//!
//! Only Parquet objects are cached: flowscope never rewrites one under the same name, so a
//! cached copy never goes stale and nothing needs invalidating but a delete. A file the
//! flusher uploads is put in the cache as it goes up (recent spans, the ones queried most,
//! never wait for the bucket); an object read that is not cached is answered from the
//! bucket as asked (a footer, a few column chunks) while the whole object is fetched into
//! the cache in the background, so the next query of it reads the local disk. The least
//! recently used files go past `--cache-size`. The cache outlives restarts (its folder is
//! read at start), and what it holds stays queryable while the bucket is down.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};

/// A file larger than this share of the cache is never cached: it would push out
/// everything else.
const MAX_ENTRY_SHARE: u64 = 4;

/// The cache's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the local disk.
    pub hits: u64,
    /// Reads that went to the bucket.
    pub misses: u64,
    /// Bytes of the files held.
    pub bytes: u64,
    /// Files held.
    pub files: u64,
    /// The configured bound.
    pub capacity: u64,
}

/// The files of the cache folder and their recency.
#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
    /// Objects being fetched into the cache now.
    filling: HashSet<String>,
}

struct Entry {
    size: u64,
    used: u64,
}

/// The cache folder and its bound; shared by every store of the process.
pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DiskCache({}, {} bytes)",
            self.dir.display(),
            self.capacity
        )
    }
}

fn cacheable(key: &str) -> bool {
    key.ends_with(".parquet")
}

impl DiskCache {
    /// The cache in `dir` (created if missing), holding at most `capacity` bytes; the files
    /// an earlier run left are kept, the least recently written first to go.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        collect(dir, dir, &mut found)?;
        found.sort_by_key(|(_, _, modified)| *modified);
        let mut index = Index::default();
        for (key, size, _) in found {
            index.clock += 1;
            index.bytes += size;
            let used = index.clock;
            index.entries.insert(key, Entry { size, used });
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            capacity,
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        {
            let mut index = cache.lock();
            cache.evict(&mut index);
        }
        Ok(Arc::new(cache))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        let index = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: index.bytes,
            files: index.entries.len() as u64,
            capacity: self.capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        match self.index.lock() {
            Ok(index) => index,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn file(&self, key: &str) -> PathBuf {
        // Object paths are `/`-separated parts that `object_store` has already checked
        // (never empty, `.` or `..`).
        let mut path = self.dir.clone();
        for part in key.split('/') {
            path.push(part);
        }
        path
    }

    fn max_entry(&self) -> u64 {
        self.capacity / MAX_ENTRY_SHARE
    }

    /// The size of the cached copy of `key`, marking it used.
    fn lookup(&self, key: &str) -> Option<u64> {
        let mut index = self.lock();
        index.clock += 1;
        let clock = index.clock;
        let entry = index.entries.get_mut(key)?;
        entry.used = clock;
        Some(entry.size)
    }

    /// Whether `key` should be fetched in the background now (not cached, not being
    /// fetched, small enough); claims it when so.
    fn claim_fill(&self, key: &str, size: u64) -> bool {
        if !cacheable(key) || size > self.max_entry() {
            return false;
        }
        let mut index = self.lock();
        !index.entries.contains_key(key) && index.filling.insert(key.to_string())
    }

    fn release_fill(&self, key: &str) {
        self.lock().filling.remove(key);
    }

    /// Writes `bytes` as the cached copy of `key` (a temporary file renamed into place, so
    /// a reader never sees half of it).
    fn insert(&self, key: &str, bytes: &Bytes) -> std::io::Result<()> {
        let size = bytes.len() as u64;
        if !cacheable(key) || size > self.max_entry() {
            return Ok(());
        }
        let path = self.file(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        if let Err(error) = std::fs::write(&tmp, bytes) {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        std::fs::rename(&tmp, &path)?;
        let mut index = self.lock();
        index.clock += 1;
        let used = index.clock;
        if let Some(old) = index.entries.insert(key.to_string(), Entry { size, used }) {
            index.bytes -= old.size;
        }
        index.bytes += size;
        self.evict(&mut index);
        Ok(())
    }

    fn remove(&self, key: &str) {
        let mut index = self.lock();
        if let Some(entry) = index.entries.remove(key) {
            index.bytes -= entry.size;
            let _ = std::fs::remove_file(self.file(key));
        }
    }

    /// Deletes the least recently used files until the cache is within its bound.
    fn evict(&self, index: &mut Index) {
        while index.bytes > self.capacity {
            let Some(oldest) = index
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(entry) = index.entries.remove(&oldest) {
                index.bytes -= entry.size;
                let _ = std::fs::remove_file(self.file(&oldest));
            }
        }
    }

    /// Reads `range` of the cached copy of `key` (whose size is `size`).
    fn read(&self, key: &str, range: Range<u64>) -> std::io::Result<Bytes> {
        let mut file = std::fs::File::open(self.file(key))?;
        file.seek(SeekFrom::Start(range.start))?;
        let mut buffer = vec![0; (range.end - range.start) as usize];
        file.read_exact(&mut buffer)?;
        Ok(Bytes::from(buffer))
    }
}

/// Every file under `dir` as (key relative to `root`, size, modified); leftovers of an
/// interrupted write are deleted.
fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, u64, std::time::SystemTime)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
            continue;
        }
        let Some(relative) = path.strip_prefix(root).ok().and_then(|p| p.to_str()) else {
            continue;
        };
        let key = relative.replace(std::path::MAIN_SEPARATOR, "/");
        if !cacheable(&key) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let meta = entry.metadata()?;
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        out.push((key, meta.len(), modified));
    }
    Ok(())
}

/// An object store whose Parquet reads go through a [`DiskCache`].
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    cache: Arc<DiskCache>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, cache: Arc<DiskCache>) -> Self {
        Self { inner, cache }
    }
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({:?}, {:?})", self.inner, self.cache)
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cached in {}", self.inner, self.cache.dir.display())
    }
}

fn cache_error(error: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "cache",
        source: Box::new(error),
    }
}

/// Whether `options` ask for the object as it is now and nothing else: what a cached copy
/// of an object that never changes can answer.
fn plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let key = location.to_string();
        let keep = cacheable(&key) && payload.content_length() as u64 <= self.cache.max_entry();
        let bytes = keep.then(|| {
            let mut whole = BytesMut::with_capacity(payload.content_length());
            for chunk in payload.iter() {
                whole.extend_from_slice(chunk);
            }
            whole.freeze()
        });
        let result = self.inner.put_opts(location, payload, opts).await?;
        if let Some(bytes) = bytes {
            // Written through: the flusher's uploads are the spans queried most.
            let cache = self.cache.clone();
            if let Err(error) = blocking(move || cache.insert(&key, &bytes)).await {
                tracing::warn!(%error, %location, "cannot write an uploaded file to the local cache");
            }
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.cache.remove(location.as_ref());
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.to_string();
        if !plain(&options) || !cacheable(&key) {
            return self.inner.get_opts(location, options).await;
        }
        if let Some(size) = self.cache.lookup(&key) {
            let range = match &options.range {
                Some(range) => range.as_range(size).map_err(cache_error)?,
                None => 0..size,
            };
            let (cache, read_key, read_range) = (self.cache.clone(), key.clone(), range.clone());
            match blocking(move || cache.read(&read_key, read_range)).await {
                Ok(bytes) => {
                    self.cache.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(GetResult {
                        payload: GetResultPayload::Stream(
                            futures::stream::once(async move { Ok(bytes) }).boxed(),
                        ),
                        meta: ObjectMeta {
                            location: location.clone(),
                            last_modified: chrono::DateTime::UNIX_EPOCH,
                            size,
                            e_tag: None,
                            version: None,
                        },
                        range,
                        attributes: Attributes::default(),
                    });
                }
                // Gone under us (evicted, deleted by hand): read the bucket instead.
                Err(_) => self.cache.remove(&key),
            }
        }
        self.cache.misses.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.get_opts(location, options).await?;
        if self.cache.claim_fill(&key, result.meta.size) {
            let (inner, cache, location) =
                (self.inner.clone(), self.cache.clone(), location.clone());
            // Bounded work: one GET and one file write, whoever waits for it.
            tokio::spawn(async move {
                let fetched = match inner.get(&location).await {
                    Ok(whole) => whole.bytes().await,
                    Err(error) => Err(error),
                };
                match fetched {
                    Ok(bytes) => {
                        let (fill, fill_key) = (cache.clone(), key.clone());
                        if let Err(error) = blocking(move || fill.insert(&fill_key, &bytes)).await {
                            tracing::warn!(%error, %location, "cannot write a file to the local cache");
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, %location, "cannot fetch a file into the local cache")
                    }
                }
                cache.release_fill(&key);
            });
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let cache = self.cache.clone();
        self.inner
            .delete_stream(locations)
            .map(move |deleted| {
                if let Ok(location) = &deleted {
                    cache.remove(location.as_ref());
                }
                deleted
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.cache.remove(to.as_ref());
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn key(name: &str) -> ObjectPath {
        ObjectPath::from(format!("prefix/spans/date=2026-12-06/hour=17/{name}"))
    }

    async fn wait_for_fill(cache: &DiskCache, files: u64) {
        for _ in 0..200 {
            if cache.stats().files >= files {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the background fill never finished: {:?}", cache.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_and_reads_are_kept_and_answered_without_the_bucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(InMemory::new());
        let cache = DiskCache::open(dir.path(), 1 << 20).expect("cache");
        let store = CachedStore::new(inner.clone(), cache.clone());

        store
            .put(&key("a.parquet"), Bytes::from_static(b"0123456789").into())
            .await
            .expect("put");
        // Only in the bucket: read once from it, then fetched whole in the background.
        inner
            .put(&key("b.parquet"), Bytes::from_static(b"abcdefghij").into())
            .await
            .expect("put");
        let got = store.get_range(&key("b.parquet"), 2..5).await.expect("get");
        assert_eq!(&got[..], b"cde");
        wait_for_fill(&cache, 2).await;

        // The bucket loses both: the cache still answers, ranges and suffixes included.
        inner.delete(&key("a.parquet")).await.expect("delete");
        inner.delete(&key("b.parquet")).await.expect("delete");
        assert_eq!(
            &store.get_range(&key("a.parquet"), 3..6).await.expect("get")[..],
            b"345"
        );
        let tail = store
            .get_opts(
                &key("b.parquet"),
                GetOptions {
                    range: Some(object_store::GetRange::Suffix(4)),
                    ..Default::default()
                },
            )
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&tail[..], b"ghij");
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.files, stats.bytes),
            (2, 1, 2, 20)
        );

        // A delete through the cache drops the copy too.
        store.delete(&key("a.parquet")).await.expect("delete");
        assert_eq!(cache.stats().files, 1);
        assert!(store.get(&key("a.parquet")).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_least_recently_used_files_go_past_the_bound_and_the_rest_outlive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(InMemory::new());
        // Room for four 100-byte files (an entry may take a quarter).
        let cache = DiskCache::open(dir.path(), 400).expect("cache");
        let store = CachedStore::new(inner.clone(), cache.clone());
        for name in ["1", "2", "3", "4"] {
            store
                .put(&key(&format!("{name}.parquet")), vec![b'x'; 100].into())
                .await
                .expect("put");
        }
        // 1 is read again: 2 is now the least recently used.
        store.get(&key("1.parquet")).await.expect("get");
        store
            .put(&key("5.parquet"), vec![b'y'; 100].into())
            .await
            .expect("put");
        let held: Vec<bool> = ["1", "2", "3", "4", "5"]
            .iter()
            .map(|name| {
                cache
                    .file(key(&format!("{name}.parquet")).as_ref())
                    .exists()
            })
            .collect();
        assert_eq!(held, [true, false, true, true, true]);
        assert_eq!(cache.stats().bytes, 400);
        // Too big for the cache: uploaded, not kept.
        store
            .put(&key("big.parquet"), vec![b'z'; 101].into())
            .await
            .expect("put");
        assert_eq!(cache.stats().files, 4);
        drop(store);

        let again = DiskCache::open(dir.path(), 400).expect("reopen");
        assert_eq!((again.stats().files, again.stats().bytes), (4, 400));
        let smaller = DiskCache::open(dir.path(), 200).expect("reopen smaller");
        assert_eq!(smaller.stats().files, 2, "shrunk to the new bound at start");
    }
}
