//! Blob pushes: existence checks, cross-repository mounts, and uploads (one streamed PUT,
//! or PATCH chunks resent only when the session shows none of a chunk arrived).

use std::path::Path;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Response, StatusCode};

use super::transport::{BodySrc, Req};
use super::{header_str, range_end, with_query, Client, PushOutcome};
use crate::oci::reference::Digest;
use crate::oci::OciError;

pub(super) enum Start {
    Mounted,
    Session(String),
}

impl Client {
    /// Try to mount `digest` from `from_repository` of the same registry. `Ok(true)`: mounted.
    /// `Ok(false)`: not mounted (the session the registry opened is abandoned; 2.8 purges it).
    pub async fn mount_blob(&self, digest: &Digest, from_repository: &str) -> Result<bool, OciError> {
        Ok(matches!(self.start_upload(Some((digest, from_repository))).await?, Start::Mounted))
    }

    /// Push a small in-memory blob (a config, a record) unless it exists; returns its digest.
    pub async fn push_blob_bytes(&self, bytes: Bytes) -> Result<(Digest, PushOutcome), OciError> {
        let digest = Digest::of_bytes(&bytes);
        if self.blob_exists(&digest).await?.is_some() {
            return Ok((digest, PushOutcome::Existed));
        }
        let op = "PUT blob";
        let Start::Session(loc) = self.start_upload(None).await? else { unreachable!("no mount asked") };
        let mut req = Req::new(Method::PUT, with_query(&loc, "digest", digest.as_str()), op)
            .header(header::CONTENT_TYPE, "application/octet-stream");
        req.body = BodySrc::Bytes(bytes);
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.error_from(resp, op, true).await);
        }
        Ok((digest, PushOutcome::Uploaded))
    }

    /// Push the file at `path`, whose SHA-256 is `digest` (the registry verifies it: 400
    /// DIGEST_INVALID otherwise). Skips a blob the repository has (HEAD), then tries a mount from
    /// each of `mount_from`, then uploads: one streamed PUT up to `monolithic_max`, else PATCH
    /// chunks of `chunk_size` and a closing PUT. Memory stays bounded by the I/O chunk
    /// (256 KiB), whatever the file size. A failed chunk is resent only when the session's
    /// status shows nothing of it arrived (2.8 appends whatever arrives, whatever
    /// `Content-Range` says); otherwise the upload restarts, at most `retries` times.
    pub async fn push_blob_file(
        &self,
        digest: &Digest,
        path: &Path,
        mount_from: &[&str],
    ) -> Result<PushOutcome, OciError> {
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| OciError::Io { context: "reading", path: path.to_path_buf(), source: e })?
            .len();
        if self.blob_exists(digest).await?.is_some() {
            return Ok(PushOutcome::Existed);
        }
        let mut loc = None;
        for from in mount_from {
            match self.start_upload(Some((digest, from))).await? {
                Start::Mounted => return Ok(PushOutcome::Mounted),
                Start::Session(l) => loc = Some(l),
            }
        }
        let mut attempt = 0;
        loop {
            let session = match loc.take() {
                Some(l) => l,
                None => match self.start_upload(None).await? {
                    Start::Session(l) => l,
                    Start::Mounted => unreachable!("no mount asked"),
                },
            };
            match self.upload(session, digest, path, len).await {
                Ok(()) => return Ok(PushOutcome::Uploaded),
                Err(e)
                    if (e.is_transient() || matches!(e, OciError::Protocol { .. })) && attempt < self.cfg.retries =>
                {
                    attempt += 1;
                    // it may have landed before the connection broke
                    if self.blob_exists(digest).await?.is_some() {
                        return Ok(PushOutcome::Uploaded);
                    }
                    self.backoff(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) async fn upload(&self, mut loc: String, digest: &Digest, path: &Path, len: u64) -> Result<(), OciError> {
        let close = |loc: &str, body: BodySrc, n: u64| {
            let mut req = Req::new(Method::PUT, with_query(loc, "digest", digest.as_str()), "PUT blob")
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, n.to_string());
            req.body = body;
            req.retry = false;
            req
        };
        if len <= self.cfg.monolithic_max {
            let req = close(&loc, BodySrc::File { path: path.to_path_buf(), offset: 0, len }, len);
            return self.expect_status(req, StatusCode::CREATED).await.map(drop);
        }
        let op = "PATCH blob";
        let mut offset = 0u64;
        let mut resent = false;
        while offset < len {
            let n = self.cfg.chunk_size.min(len - offset);
            let mut req = Req::new(Method::PATCH, loc.clone(), op)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, n.to_string())
                .header(header::CONTENT_RANGE, format!("{}-{}", offset, offset + n - 1));
            req.body = BodySrc::File { path: path.to_path_buf(), offset, len: n };
            req.retry = false;
            match self.expect_status(req, StatusCode::ACCEPTED).await {
                Ok(resp) => {
                    let end = range_end(resp.headers());
                    if end != Some(offset + n - 1) {
                        return Err(
                            self.protocol(op, &format!("upload Range {end:?} after sending up to {}", offset + n - 1))
                        );
                    }
                    loc = self.location(&resp, op)?;
                    offset += n;
                    resent = false;
                }
                Err(e) if e.is_transient() && !resent => {
                    // Resend only if the session shows none of this chunk arrived. (2.8 answers
                    // `0-0` for an empty session, and refuses a stale `_state` once bytes were
                    // appended: both end here in a restart, which is always safe.)
                    let status = self.send(Req::new(Method::GET, loc.clone(), "GET upload status")).await?;
                    let end =
                        if status.status() == StatusCode::NO_CONTENT { range_end(status.headers()) } else { None };
                    let have = end.map_or(0, |e| e + 1);
                    if status.status() != StatusCode::NO_CONTENT || have != offset {
                        return Err(e);
                    }
                    resent = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.expect_status(close(&loc, BodySrc::Empty, 0), StatusCode::CREATED).await.map(drop)
    }

    pub(super) async fn start_upload(&self, mount: Option<(&Digest, &str)>) -> Result<Start, OciError> {
        let op = "POST blob upload";
        let mut url = self.url("blobs/uploads/");
        if let Some((d, from)) = mount {
            crate::oci::reference::validate_repository(from)
                .map_err(|reason| OciError::InvalidReference { input: from.to_string(), reason })?;
            url = format!("{url}?mount={d}&from={from}");
        }
        let resp = self.send(Req::new(Method::POST, url, op).header(header::CONTENT_LENGTH, "0")).await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Start::Mounted),
            StatusCode::ACCEPTED => Ok(Start::Session(self.location(&resp, op)?)),
            _ => Err(self.error_from(resp, op, true).await),
        }
    }

    pub(super) fn location(&self, resp: &Response<Incoming>, op: &str) -> Result<String, OciError> {
        let loc = header_str(resp.headers(), header::LOCATION).ok_or_else(|| self.protocol(op, "no Location"))?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.repo.base())
        } else {
            return Err(self.protocol(op, "relative Location"));
        })
    }
}
