//! A store wrapper that counts requests and injects failures: multipart parts that fail after
//! a budget (an upload cut off midway) and ranged reads that return corrupted bytes.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use adaptive_registry::RegistryStore;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

#[derive(Debug, Default)]
pub struct Counters {
    pub parts_uploaded: AtomicUsize,
    pub ranged_gets: AtomicUsize,
    /// Parts allowed before every further part fails; `usize::MAX` for no limit.
    pub parts_before_failure: AtomicUsize,
    /// Parts allowed before every further part hangs forever (a process about to be killed);
    /// `usize::MAX` for no limit.
    pub parts_before_stall: AtomicUsize,
    /// This many ranged reads return corrupted bytes.
    pub corrupt_ranged_gets: AtomicUsize,
    gets_in_flight: AtomicUsize,
    max_gets_in_flight: AtomicUsize,
}

impl Counters {
    pub fn parts_uploaded(&self) -> usize {
        self.parts_uploaded.load(Ordering::SeqCst)
    }

    pub fn ranged_gets(&self) -> usize {
        self.ranged_gets.load(Ordering::SeqCst)
    }

    /// The most ranged reads that were ever outstanding at once.
    pub fn max_gets_in_flight(&self) -> usize {
        self.max_gets_in_flight.load(Ordering::SeqCst)
    }
}

struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> Self {
        let now = counters.gets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_gets_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.gets_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
}

/// Wraps the backend's store; returns the wrapped location and its counters.
pub fn instrument(store: &RegistryStore) -> (RegistryStore, Arc<Counters>) {
    let counters = Arc::new(Counters {
        parts_before_failure: AtomicUsize::new(usize::MAX),
        parts_before_stall: AtomicUsize::new(usize::MAX),
        ..Counters::default()
    });
    let wrapped = InstrumentedStore {
        inner: Arc::clone(store.object_store()),
        counters: Arc::clone(&counters),
    };
    (store.with_object_store(Arc::new(wrapped)), counters)
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

fn injected(message: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "instrumented",
        source: message.to_owned().into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(InstrumentedUpload {
            inner,
            counters: Arc::clone(&self.counters),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.range.is_none() {
            return self.inner.get_opts(location, options).await;
        }
        self.counters.ranged_gets.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight::enter(&self.counters);
        let corrupt = self
            .counters
            .corrupt_ranged_gets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        let result = self.inner.get_opts(location, options).await?;
        if !corrupt {
            return Ok(result);
        }
        let GetResult {
            meta,
            range,
            attributes,
            payload,
        } = result;
        let original = GetResult {
            meta: meta.clone(),
            range: range.clone(),
            attributes: attributes.clone(),
            payload,
        };
        let mut bytes = original.bytes().await?.to_vec();
        if let Some(first) = bytes.first_mut() {
            *first ^= 0xff;
        }
        let stream = futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed();
        Ok(GetResult {
            meta,
            range,
            attributes,
            payload: GetResultPayload::Stream(stream),
        })
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[derive(Debug)]
struct InstrumentedUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<Counters>,
}

#[async_trait::async_trait]
impl MultipartUpload for InstrumentedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let allowed = self
            .counters
            .parts_before_failure
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if !allowed {
            return Box::pin(async { Err(injected("injected part failure")) });
        }
        let stalled = self
            .counters
            .parts_before_stall
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_err();
        if stalled {
            return Box::pin(futures::future::pending());
        }
        self.counters.parts_uploaded.fetch_add(1, Ordering::SeqCst);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
