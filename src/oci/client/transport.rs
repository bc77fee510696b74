//! Sending a request: the body (bytes or a file range, streamed), authentication, retries
//! with back-off, redirects, and the idle timeout on every byte moved.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{header_str, Body, Client, IO_CHUNK};
use crate::oci::auth::parse_challenge;
use crate::oci::OciError;

pub(super) enum BodySrc {
    Empty,
    Bytes(Bytes),
    File { path: PathBuf, offset: u64, len: u64 },
}

pub(super) struct Req<'a> {
    pub(super) method: Method,
    pub(super) url: String,
    pub(super) headers: Vec<(header::HeaderName, String)>,
    pub(super) body: BodySrc,
    pub(super) op: &'a str,
    /// Replay after a transient failure (false for PATCH: 2.8 appends whatever arrives).
    pub(super) retry: bool,
}

impl<'a> Req<'a> {
    pub(super) fn new(method: Method, url: String, op: &'a str) -> Self {
        Req { method, url, headers: Vec::new(), body: BodySrc::Empty, op, retry: true }
    }
    pub(super) fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The last time bytes moved, for the idle timeout.
pub(super) struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Arc<Progress> {
        Arc::new(Progress { start: Instant::now(), last_ms: AtomicU64::new(0) })
    }
    pub(super) fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(super) fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Client {
    pub(super) async fn expect_status(&self, req: Req<'_>, want: StatusCode) -> Result<Response<Incoming>, OciError> {
        let op = req.op;
        let resp = self.send(req).await?;
        if resp.status() == want {
            Ok(resp)
        } else {
            Err(self.error_from(resp, op, true).await)
        }
    }

    /// Send with authentication (one challenge round) and retries with back-off for transient
    /// failures (5xx, 429, connection errors, timeouts) when the request is replayable.
    pub(super) async fn send(&self, req: Req<'_>) -> Result<Response<Incoming>, OciError> {
        let mut attempt = 0u32;
        let mut challenged = false;
        loop {
            let result = self.send_once(&req).await;
            match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let challenge = header_str(resp.headers(), header::WWW_AUTHENTICATE).and_then(parse_challenge);
                    if !self.answer_challenge(challenge, req.op).await? {
                        return Ok(resp);
                    }
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS)
                        && req.retry
                        && attempt < self.cfg.retries =>
                {
                    attempt += 1;
                    drop(resp);
                    self.backoff(attempt).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_transient() && req.retry && attempt < self.cfg.retries => {
                    attempt += 1;
                    self.backoff(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) async fn send_following_redirects(&self, req: Req<'_>) -> Result<Response<Incoming>, OciError> {
        let Req { method, mut url, headers, op, .. } = req;
        for _ in 0..5 {
            let r = Req {
                method: method.clone(),
                url: url.clone(),
                headers: headers.clone(),
                body: BodySrc::Empty,
                op,
                retry: true,
            };
            let resp = self.send(r).await?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let target = self.location(&resp, op)?;
            if self.repo.scheme == "https" && target.starts_with("http://") {
                return Err(self.protocol(op, "redirect from HTTPS to plain HTTP refused"));
            }
            url = target;
        }
        Err(self.protocol(op, "too many redirects"))
    }

    pub(super) async fn send_once(&self, req: &Req<'_>) -> Result<Response<Incoming>, OciError> {
        let progress = Progress::new();
        let body = self.body(&req.body, &progress).await?;
        let mut b = Request::builder().method(req.method.clone()).uri(&req.url);
        let same_origin = req.url.starts_with(&format!("{}/", self.repo.base()));
        if same_origin {
            if let Some(value) = self.auth_header() {
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| self.protocol(req.op, "credentials are not a valid header"))?;
                v.set_sensitive(true);
                b = b.header(header::AUTHORIZATION, v);
            }
        }
        b = b.header(header::USER_AGENT, concat!("tenon/", env!("CARGO_PKG_VERSION")));
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        let request = b.body(body).map_err(|e| self.protocol(req.op, &format!("building the request: {e}")))?;
        self.with_idle_timeout(self.http.request(request), &progress, req.op)
            .await?
            .map_err(|e| self.transport_error(req.op, &e))
    }

    pub(super) async fn with_idle_timeout<F: std::future::Future>(
        &self,
        fut: F,
        progress: &Progress,
        op: &str,
    ) -> Result<F::Output, OciError> {
        tokio::pin!(fut);
        let tick = Duration::from_millis(100).min(self.cfg.idle_timeout);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                _ = tokio::time::sleep(tick) => {
                    if progress.idle() > self.cfg.idle_timeout {
                        return Err(OciError::Timeout { registry: self.repo.registry.clone(), op: op.to_string(), after: self.cfg.idle_timeout });
                    }
                }
            }
        }
    }

    pub(super) async fn body(&self, src: &BodySrc, progress: &Arc<Progress>) -> Result<Body, OciError> {
        Ok(match src {
            BodySrc::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            BodySrc::Bytes(b) => Full::new(b.clone()).map_err(|never| match never {}).boxed_unsync(),
            BodySrc::File { path, offset, len } => {
                let io = |source| OciError::Io { context: "reading", path: path.clone(), source };
                let mut f = tokio::fs::File::open(path).await.map_err(io)?;
                f.seek(std::io::SeekFrom::Start(*offset)).await.map_err(io)?;
                let state = (f, *len, progress.clone());
                let stream = futures::stream::try_unfold(state, |(mut f, left, p)| async move {
                    if left == 0 {
                        return Ok(None);
                    }
                    let mut buf = vec![0u8; (left.min(IO_CHUNK as u64)) as usize];
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file shrank during upload",
                        ));
                    }
                    buf.truncate(n);
                    p.touch();
                    Ok(Some((Frame::data(Bytes::from(buf)), (f, left - n as u64, p))))
                });
                StreamBody::new(stream).boxed_unsync()
            }
        })
    }

    pub(super) async fn next_chunk(&self, body: &mut Incoming, op: &str) -> Result<Option<Bytes>, OciError> {
        loop {
            match tokio::time::timeout(self.cfg.idle_timeout, body.frame()).await {
                Err(_) => {
                    return Err(OciError::Timeout {
                        registry: self.repo.registry.clone(),
                        op: op.to_string(),
                        after: self.cfg.idle_timeout,
                    })
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(self.transport_error(op, &e)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    pub(super) async fn read_capped(&self, resp: Response<Incoming>, cap: u64, op: &str) -> Result<Bytes, OciError> {
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut body, op).await? {
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(OciError::SizeMismatch {
                    registry: self.repo.registry.clone(),
                    what: format!("{op} response larger than allowed"),
                    expected: cap,
                    actual: (out.len() + chunk.len()) as u64,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    pub(super) async fn backoff(&self, attempt: u32) {
        let base = self.cfg.backoff.saturating_mul(1 << attempt.min(6).saturating_sub(1));
        // a little jitter so that parallel clients do not retry in lockstep
        let jitter = Duration::from_millis(u64::from(std::process::id() ^ attempt.wrapping_mul(7919)) % 50);
        tokio::time::sleep(base + jitter).await;
    }
}
