//! Writing to a registry: what it already holds (one HEAD per manifest or blob), blob uploads
//! streamed from another registry's response, and manifests pushed byte for byte.
//!
//! A blob upload is the sequence docker and crane use everywhere (ECR, Harbor, Artifactory,
//! GitLab, distribution): `POST /v2/<name>/blobs/uploads/`, the whole blob in one `PATCH` to the
//! returned location, then `PUT <location>?digest=<digest>`. The `PATCH` body is fed from the
//! source's download through a small bounded channel, so memory stays flat whatever the blob's
//! size; the source's size and sha256 are checked on the way, and the last chunk is held back
//! until they are, so a damaged download never completes an upload.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response};
use tokio::sync::mpsc;

use crate::registry_client::{
    ACCEPT_MANIFESTS, Access, BlobCheck, Call, DOCKER_CONTENT_DIGEST, Descriptor, FetchError,
    Payload, RawManifest, Reference, RegistryClient, Target, Timeouts, TransportKind, header_text,
    transport_error,
};

/// Chunks in flight between the source download and the upload.
const CHANNEL_CHUNKS: usize = 8;

/// Which side of a copy failed: the registry read from, or the one written to.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("source: {0}")]
    Source(FetchError),
    #[error("destination: {0}")]
    Destination(FetchError),
}

impl RegistryClient {
    /// The digest `reference`'s tag points at, or `None` when the registry has no such manifest.
    /// One HEAD (a GET only if the registry does not say the digest).
    pub async fn manifest_digest(
        &mut self,
        reference: &Reference,
    ) -> Result<Option<String>, FetchError> {
        let path = format!("manifests/{}", reference.tag);
        let call = Call::new(Method::HEAD, Target::Path(&path)).header(ACCEPT, ACCEPT_MANIFESTS);
        match self.call(reference, Access::Push, call).await {
            Ok(response) => match header_text(response.headers(), DOCKER_CONTENT_DIGEST) {
                Some(digest) => Ok(Some(digest)),
                None => Ok(Some(
                    self.manifest_bytes(reference, Access::Push).await?.digest,
                )),
            },
            Err(FetchError::Status { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Whether `reference`'s repository already holds the blob `digest`.
    pub async fn has_blob(
        &mut self,
        reference: &Reference,
        digest: &str,
    ) -> Result<bool, FetchError> {
        let path = format!("blobs/{digest}");
        match self
            .call(
                reference,
                Access::Push,
                Call::new(Method::HEAD, Target::Path(&path)),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(FetchError::Status { status: 404, .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Uploads `blob` into `destination`'s repository from `source`, the response of the
    /// source registry's blob GET. `progress` gets the bytes the destination took so far.
    pub async fn upload_blob(
        &mut self,
        destination: &Reference,
        blob: &Descriptor,
        source: Response,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), UploadError> {
        let started = self
            .call(
                destination,
                Access::Push,
                Call::new(Method::POST, Target::Path("blobs/uploads/")).header(CONTENT_LENGTH, "0"),
            )
            .await
            .map_err(UploadError::Destination)?;
        let location = upload_location(&started).map_err(UploadError::Destination)?;

        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let failure = Arc::new(Mutex::new(None));
        let taken = Arc::new(AtomicU64::new(0));
        let feeder = tokio::spawn(feed(source, blob.clone(), sender, failure.clone()));
        let body = reqwest::Body::wrap(UploadBody {
            chunks: receiver,
            remaining: blob.size,
            taken: taken.clone(),
        });
        let call = Call::new(Method::PATCH, Target::Location(&location))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, blob.size.to_string())
            .payload(Payload::Stream(Some(body)));
        let timeouts = self.timeouts();
        let patched = tokio::select! {
            patched = self.call(destination, Access::Push, call) => patched,
            stalled = watch(&taken, blob.size, timeouts, progress) => Err(stalled),
        };
        feeder.abort();
        if let Some(err) = failure.lock().expect("not poisoned").take() {
            return Err(UploadError::Source(err));
        }
        let patched = patched.map_err(UploadError::Destination)?;
        let location = upload_location(&patched).unwrap_or(location);

        let mut url =
            reqwest::Url::parse(&self.location_url(destination, &location)).map_err(|e| {
                UploadError::Destination(FetchError::BadArtifact(format!(
                    "unusable upload location {location}: {e}"
                )))
            })?;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let call =
            Call::new(Method::PUT, Target::Location(url.as_str())).header(CONTENT_LENGTH, "0");
        let committed = self
            .call(destination, Access::Push, call)
            .await
            .map_err(UploadError::Destination)?;
        if let Some(digest) = header_text(committed.headers(), DOCKER_CONTENT_DIGEST)
            && digest != blob.digest
        {
            return Err(UploadError::Destination(FetchError::DigestMismatch {
                expected: blob.digest.clone(),
                actual: digest,
            }));
        }
        Ok(())
    }

    /// Pushes `manifest`'s exact bytes as `destination`'s tag, with `media_type`.
    pub async fn put_manifest(
        &mut self,
        destination: &Reference,
        manifest: &RawManifest,
        media_type: &str,
    ) -> Result<(), FetchError> {
        let path = format!("manifests/{}", destination.tag);
        let call = Call::new(Method::PUT, Target::Path(&path))
            .header(CONTENT_TYPE, media_type)
            .payload(Payload::Bytes(manifest.bytes.clone()));
        let response = self.call(destination, Access::Push, call).await?;
        match header_text(response.headers(), DOCKER_CONTENT_DIGEST) {
            Some(digest) if digest != manifest.digest => Err(FetchError::DigestMismatch {
                expected: manifest.digest.clone(),
                actual: digest,
            }),
            _ => Ok(()),
        }
    }
}

fn upload_location(response: &Response) -> Result<String, FetchError> {
    header_text(response.headers(), LOCATION).ok_or_else(|| {
        FetchError::BadArtifact(format!(
            "the registry answered {} to an upload without a Location",
            response.status().as_u16()
        ))
    })
}

/// Reads the source blob into the channel, checking size and digest; the last chunk goes only
/// once both are right. A source failure is recorded in `failure` before the upload body fails,
/// so the caller can tell it from a destination failure.
async fn feed(
    mut source: Response,
    blob: Descriptor,
    chunks: mpsc::Sender<Result<Bytes, io::Error>>,
    failure: Arc<Mutex<Option<FetchError>>>,
) {
    let mut check = BlobCheck::new(&blob);
    let mut held: Option<Bytes> = None;
    let verdict = loop {
        match source.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(err) = check.update(&chunk) {
                    break Err(err);
                }
                if let Some(previous) = held.replace(chunk)
                    && chunks.send(Ok(previous)).await.is_err()
                {
                    return; // the upload ended first
                }
            }
            Ok(None) => break check.finish(),
            Err(err) => break Err(transport_error(err)),
        }
    };
    match verdict {
        Ok(()) => {
            if let Some(last) = held {
                let _ = chunks.send(Ok(last)).await;
            }
        }
        Err(err) => {
            *failure.lock().expect("not poisoned") = Some(err);
            let _ = chunks
                .send(Err(io::Error::other("the source download failed")))
                .await;
        }
    }
}

/// Fails when the destination takes no bytes for twice the read timeout, or gives no answer
/// within four read timeouts of the last byte; reports progress meanwhile. Never returns
/// otherwise.
async fn watch(
    taken: &AtomicU64,
    size: u64,
    timeouts: Timeouts,
    progress: &mut dyn FnMut(u64),
) -> FetchError {
    let mut last = 0;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = taken.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
            progress(now);
        }
        let (limit, what) = if now >= size {
            (
                timeouts.read * 4,
                format!("no answer after uploading {size} bytes"),
            )
        } else {
            (
                timeouts.read * 2,
                format!("the upload stalled after {now} of {size} bytes"),
            )
        };
        if since.elapsed() > limit {
            return FetchError::Transport(
                format!("{what} for {}s", limit.as_secs()),
                TransportKind::Timeout,
            );
        }
    }
}

/// The `PATCH` body: the chunks [`feed`] sends, counted as the connection takes them.
struct UploadBody {
    chunks: mpsc::Receiver<Result<Bytes, io::Error>>,
    remaining: u64,
    taken: Arc<AtomicU64>,
}

impl http_body::Body for UploadBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let length = chunk.len() as u64;
                self.remaining = self.remaining.saturating_sub(length);
                self.taken.fetch_add(length, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
