//! Counts the requests that reach the object store, by kind, for `/metrics` and the
//! benchmarks ("object store requests per flushed file and per query"): the wrapper sits
//! right on the S3 client, under the local disk cache, so a read the cache answers is not
//! counted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Requests sent to the object store since start.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// GETs, whole or ranged (a footer read is one or two).
    pub gets: AtomicU64,
    /// HEADs (a GET asked for metadata only).
    pub heads: AtomicU64,
    /// PUTs, and multipart uploads started.
    pub puts: AtomicU64,
    /// Objects deleted.
    pub deletes: AtomicU64,
    /// List calls.
    pub lists: AtomicU64,
    /// Copies.
    pub copies: AtomicU64,
}

/// A copy of [`RequestCounts`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestStats {
    pub gets: u64,
    pub heads: u64,
    pub puts: u64,
    pub deletes: u64,
    pub lists: u64,
    pub copies: u64,
}

impl RequestCounts {
    pub fn stats(&self) -> RequestStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RequestStats {
            gets: get(&self.gets),
            heads: get(&self.heads),
            puts: get(&self.puts),
            deletes: get(&self.deletes),
            lists: get(&self.lists),
            copies: get(&self.copies),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An [`ObjectStore`] that counts what passes to `inner`.
pub struct CountedStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<RequestCounts>,
}

impl CountedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, counts: Arc<RequestCounts>) -> Self {
        Self { inner, counts }
    }
}

impl fmt::Debug for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counted({})", self.inner)
    }
}

impl fmt::Display for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counted({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountedStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        count(&self.counts.puts);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        count(&self.counts.puts);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        count(if options.head {
            &self.counts.heads
        } else {
            &self.counts.gets
        });
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let counts = self.counts.clone();
        self.inner
            .delete_stream(
                locations
                    .map(move |location| {
                        count(&counts.deletes);
                        location
                    })
                    .boxed(),
            )
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count(&self.counts.lists);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        count(&self.counts.lists);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        count(&self.counts.copies);
        self.inner.copy_opts(from, to, options).await
    }
}
