//! Blob downloads: HEAD, and GETs verified byte by byte against the digest, resumed with
//! `Range`, into a writer or (through a writer thread) a file renamed into place.

use std::path::Path;

use bytes::Bytes;
use hyper::header;
use hyper::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::transport::Req;
use super::{content_length, Client};
use crate::oci::reference::Digest;
use crate::oci::OciError;

/// Where a downloaded blob's verified-as-it-goes chunks go.
pub(super) enum Sink<'a, W> {
    Writer(&'a mut W),
    /// A writer thread (see [`Client::pull_blob_to_file`]).
    Channel(tokio::sync::mpsc::Sender<Bytes>),
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    pub(super) async fn put(&mut self, chunk: Bytes) -> std::io::Result<()> {
        match self {
            Sink::Writer(w) => w.write_all(&chunk).await,
            Sink::Channel(tx) => tx.send(chunk).await.map_err(|_| std::io::Error::other("the writer stopped")),
        }
    }
}

impl Client {
    /// HEAD a blob: its size, or `None` when this repository does not have it.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<Option<u64>, OciError> {
        let op = "HEAD blob";
        let resp = self.send(Req::new(Method::HEAD, self.url(&format!("blobs/{digest}")), op)).await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(content_length(resp.headers()).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.error_from(resp, op, false).await),
        }
    }

    /// Stream a blob into `out`, hashing every byte; fails with `DigestMismatch` unless the
    /// bytes hash to `digest` (the registry serves tampered storage under the original digest,
    /// so `Docker-Content-Digest` proves nothing). With `expected_size`, more bytes than that
    /// abort at once. A dropped connection resumes with `Range` from the bytes already written.
    /// On error `out` holds garbage: the caller discards it ([`Client::pull_blob_to_file`] does).
    pub async fn pull_blob<W: AsyncWrite + Unpin>(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
        out: &mut W,
    ) -> Result<u64, OciError> {
        let mut sink = Sink::Writer(out);
        let n = self.pull_blob_into(digest, expected_size, &mut sink).await?;
        if let Sink::Writer(out) = sink {
            out.flush().await.map_err(|e| self.protocol("GET blob", &format!("writing the blob: {e}")))?;
        }
        Ok(n)
    }

    pub(super) async fn pull_blob_into<W: AsyncWrite + Unpin>(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
        out: &mut Sink<'_, W>,
    ) -> Result<u64, OciError> {
        let op = "GET blob";
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut failures = 0u32;
        loop {
            let mut req = Req::new(Method::GET, self.url(&format!("blobs/{digest}")), op);
            if written > 0 {
                req = req.header(header::RANGE, format!("bytes={written}-"));
            }
            let resp = self.send_following_redirects(req).await?;
            // bytes of the body to drop: a 200 to a Range request restarts at 0
            let mut skip = match resp.status() {
                StatusCode::OK => written,
                StatusCode::PARTIAL_CONTENT if written > 0 => 0,
                StatusCode::NOT_FOUND => return Err(self.not_found(format!("blob {digest}"))),
                _ => return Err(self.error_from(resp, op, false).await),
            };
            let mut body = resp.into_body();
            let result: Result<(), OciError> = async {
                while let Some(mut chunk) = self.next_chunk(&mut body, op).await? {
                    if skip > 0 {
                        let n = skip.min(chunk.len() as u64) as usize;
                        skip -= n as u64;
                        chunk = chunk.slice(n..);
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    if let Some(max) = expected_size {
                        if written + chunk.len() as u64 > max {
                            return Err(OciError::SizeMismatch {
                                registry: self.repo.registry.clone(),
                                what: format!("blob {digest}"),
                                expected: max,
                                actual: written + chunk.len() as u64,
                            });
                        }
                    }
                    if matches!(out, Sink::Writer(_)) {
                        hasher.update(&chunk);
                    }
                    written += chunk.len() as u64;
                    out.put(chunk).await.map_err(|e| self.protocol(op, &format!("writing the blob: {e}")))?;
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => break,
                Err(e) if e.is_transient() && failures < self.cfg.retries => {
                    failures += 1;
                    self.backoff(failures).await;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(size) = expected_size {
            if written != size {
                return Err(OciError::SizeMismatch {
                    registry: self.repo.registry.clone(),
                    what: format!("blob {digest}"),
                    expected: size,
                    actual: written,
                });
            }
        }
        // a writer thread hashes what it writes: the caller checks its digest
        if matches!(out, Sink::Writer(_)) {
            self.check_digest(digest, hasher)?;
        }
        Ok(written)
    }

    pub(super) fn check_digest(&self, digest: &Digest, hasher: Sha256) -> Result<(), OciError> {
        let actual = Digest::from_hasher(hasher);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                registry: self.repo.registry.clone(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Download a blob to `dest` through a sibling temporary file that is renamed into place
    /// only when the digest matches, and deleted otherwise.
    pub async fn pull_blob_to_file(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
        dest: &Path,
    ) -> Result<u64, OciError> {
        let name = dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let io = |context, source| OciError::Io { context, path: tmp.clone(), source };
        let file = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        // the socket reader only moves bytes; a thread of its own hashes, writes and syncs, so
        // neither waits for the other: a bounded queue of chunks between them keeps memory small
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
            use std::io::Write;
            let mut hasher = Sha256::new();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                w.write_all(&chunk)?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(hasher)
        });
        let mut sink: Sink<'_, tokio::io::Sink> = Sink::Channel(tx);
        let pulled = self.pull_blob_into(digest, expected_size, &mut sink).await;
        drop(sink);
        let wrote = writer.await.map_err(std::io::Error::other).and_then(|r| r);
        let result = match (pulled, wrote) {
            (Ok(n), Ok(hasher)) => match self.check_digest(digest, hasher) {
                Ok(()) => tokio::fs::rename(&tmp, dest).await.map(|_| n).map_err(|e| io("renaming into place", e)),
                Err(e) => Err(e),
            },
            // a failed write stops the download too: say why the write failed
            (_, Err(e)) => Err(io("writing", e)),
            (Err(e), Ok(_)) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}
