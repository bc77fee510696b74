//! The async registry client: one repository, HTTP/1.1 over hyper (rustls on ring for HTTPS).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use super::auth::{parse_challenge, Challenge, CredentialSource, Credentials};
use super::reference::{Digest, ManifestRef, RepoUrl};
use super::{OciError, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, OCI_MANIFEST};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
type Http = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// How the client connects, authenticates, times out, retries and uploads.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub credentials: CredentialSource,
    /// A PEM file of extra CA certificates (added to the system roots).
    pub ca_file: Option<PathBuf>,
    /// TCP connect (and TLS handshake start) limit.
    pub connect_timeout: Duration,
    /// A request fails when no byte moved in either direction for this long.
    pub idle_timeout: Duration,
    /// Extra attempts after a 5xx, 429 or connection error (idempotent steps only).
    pub retries: u32,
    /// First back-off; doubled each attempt.
    pub backoff: Duration,
    /// Blobs up to this size go up in one streamed PUT; larger ones in PATCH chunks.
    pub monolithic_max: u64,
    /// The size of each PATCH chunk.
    pub chunk_size: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            credentials: CredentialSource::DockerConfig,
            ca_file: None,
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(200),
            monolithic_max: 64 << 20,
            chunk_size: 32 << 20,
        }
    }
}

/// A manifest as fetched: the exact bytes (whose SHA-256 is `digest`) and their media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

impl Manifest {
    /// Parse as an OCI image manifest.
    pub fn image_manifest(&self) -> Result<oci_spec::image::ImageManifest, String> {
        serde_json::from_slice(&self.bytes).map_err(|e| format!("not an OCI image manifest: {e}"))
    }
}

/// What a blob push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The repository already had it (HEAD 200): nothing sent.
    Existed,
    /// Mounted from another repository of the same registry: nothing sent.
    Mounted,
    /// Uploaded.
    Uploaded,
}

enum BodySrc {
    Empty,
    Bytes(Bytes),
    File { path: PathBuf, offset: u64, len: u64 },
}

struct Req<'a> {
    method: Method,
    url: String,
    headers: Vec<(header::HeaderName, String)>,
    body: BodySrc,
    op: &'a str,
    /// Replay after a transient failure (false for PATCH: 2.8 appends whatever arrives).
    retry: bool,
}

impl<'a> Req<'a> {
    fn new(method: Method, url: String, op: &'a str) -> Self {
        Req { method, url, headers: Vec::new(), body: BodySrc::Empty, op, retry: true }
    }
    fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The last time bytes moved, for the idle timeout.
struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress { start: Instant::now(), last_ms: AtomicU64::new(0) })
    }
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Default)]
struct AuthState {
    /// The registry asked for Basic: send it up front from now on.
    basic: bool,
    /// The last bearer token obtained (sent up front; a new challenge replaces it).
    bearer: Option<String>,
}

/// A client for one repository of one registry. Cheap to share behind an `Arc`; requests may run
/// concurrently.
pub struct Client {
    repo: RepoUrl,
    http: Http,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    cfg: ClientConfig,
}

const IO_CHUNK: usize = 256 << 10;

/// Where a downloaded blob's verified-as-it-goes chunks go.
enum Sink<'a, W> {
    Writer(&'a mut W),
    /// A writer thread (see [`Client::pull_blob_to_file`]).
    Channel(tokio::sync::mpsc::Sender<Bytes>),
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn put(&mut self, chunk: Bytes) -> std::io::Result<()> {
        match self {
            Sink::Writer(w) => w.write_all(&chunk).await,
            Sink::Channel(tx) => tx.send(chunk).await.map_err(|_| std::io::Error::other("the writer stopped")),
        }
    }
}
const ERROR_BODY_CAP: usize = 64 << 10;

impl Client {
    /// Build a client for `repo`. Reads credentials and CA files now; opens no connection.
    pub fn new(repo: RepoUrl, cfg: ClientConfig) -> Result<Client, OciError> {
        let creds = cfg.credentials.resolve(&repo.registry)?;
        let tls = tls_config(&repo, cfg.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Client { repo, http, creds, auth: Mutex::new(AuthState::default()), cfg })
    }

    pub fn repo(&self) -> &RepoUrl {
        &self.repo
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{}", self.repo.base(), self.repo.repository, tail)
    }

    /// `GET /v2/`: reachable, and the credentials (if any) are accepted.
    pub async fn ping(&self) -> Result<(), OciError> {
        let op = "ping";
        let resp = self.send(Req::new(Method::GET, format!("{}/v2/", self.repo.base()), op)).await?;
        if resp.status() == StatusCode::OK {
            return Ok(());
        }
        Err(self.error_from(resp, op, false).await)
    }

    // ---- manifests ----------------------------------------------------------------------

    /// GET a manifest by tag or digest, with the explicit OCI `Accept` (without it Distribution
    /// 2.8 answers 404 for an OCI manifest). `None` when absent. The body is hashed: by digest it
    /// must match; by tag it must match `Docker-Content-Digest` when the registry sends one.
    pub async fn get_manifest(&self, r: &ManifestRef) -> Result<Option<Manifest>, OciError> {
        let op = "GET manifest";
        let req = Req::new(Method::GET, self.url(&format!("manifests/{}", r.as_str())), op)
            .header(header::ACCEPT, MANIFEST_ACCEPT);
        let resp = self.send(req).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.error_from(resp, op, false).await),
        }
        let media_type = header_str(resp.headers(), header::CONTENT_TYPE).unwrap_or(OCI_MANIFEST).to_string();
        let claimed = header_str(resp.headers(), "docker-content-digest").map(str::to_string);
        let bytes = self.read_capped(resp, MAX_MANIFEST_BYTES, op).await?;
        let digest = Digest::of_bytes(&bytes);
        let expected = match r {
            ManifestRef::Digest(d) => Some(d.to_string()),
            ManifestRef::Tag(_) => claimed,
        };
        if let Some(exp) = expected {
            if exp != digest.as_str() {
                return Err(OciError::DigestMismatch {
                    registry: self.repo.registry.clone(),
                    expected: format!("manifest {exp}"),
                    actual: digest.to_string(),
                });
            }
        }
        Ok(Some(Manifest { digest, media_type, bytes }))
    }

    /// HEAD a manifest: its digest and size, or `None`.
    pub async fn head_manifest(&self, r: &ManifestRef) -> Result<Option<(Digest, u64)>, OciError> {
        let op = "HEAD manifest";
        let req = Req::new(Method::HEAD, self.url(&format!("manifests/{}", r.as_str())), op)
            .header(header::ACCEPT, MANIFEST_ACCEPT);
        let resp = self.send(req).await?;
        match resp.status() {
            StatusCode::OK => {
                let size = content_length(resp.headers()).unwrap_or(0);
                let digest = match (header_str(resp.headers(), "docker-content-digest"), r) {
                    (Some(d), _) => Digest::parse(d).map_err(|_| self.protocol(op, "bad Docker-Content-Digest"))?,
                    (None, ManifestRef::Digest(d)) => d.clone(),
                    (None, ManifestRef::Tag(_)) => return Err(self.protocol(op, "no Docker-Content-Digest")),
                };
                Ok(Some((digest, size)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.error_from(resp, op, false).await),
        }
    }

    /// PUT a manifest under a tag or its digest; returns its digest. Blobs it names must be
    /// pushed first (2.8: 400 MANIFEST_BLOB_UNKNOWN otherwise). At most 4 MiB (2.8's limit).
    pub async fn put_manifest(&self, r: &ManifestRef, media_type: &str, bytes: Bytes) -> Result<Digest, OciError> {
        let op = "PUT manifest";
        let digest = Digest::of_bytes(&bytes);
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(OciError::SizeMismatch {
                registry: self.repo.registry.clone(),
                what: "manifest larger than the registry accepts".into(),
                expected: MAX_MANIFEST_BYTES,
                actual: bytes.len() as u64,
            });
        }
        if let ManifestRef::Digest(d) = r {
            if *d != digest {
                return Err(OciError::DigestMismatch {
                    registry: self.repo.registry.clone(),
                    expected: d.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let mut req = Req::new(Method::PUT, self.url(&format!("manifests/{}", r.as_str())), op)
            .header(header::CONTENT_TYPE, media_type);
        req.body = BodySrc::Bytes(bytes);
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.error_from(resp, op, true).await);
        }
        if let Some(d) = header_str(resp.headers(), "docker-content-digest") {
            if d != digest.as_str() {
                return Err(self.protocol(op, &format!("registry stored {d}, tenon sent {digest}")));
            }
        }
        Ok(digest)
    }

    /// Serialise and PUT an OCI image manifest.
    pub async fn put_image_manifest(
        &self,
        r: &ManifestRef,
        manifest: &oci_spec::image::ImageManifest,
    ) -> Result<Digest, OciError> {
        let bytes = canonical_json(manifest).map_err(|e| self.protocol("PUT manifest", &e))?;
        self.put_manifest(r, OCI_MANIFEST, Bytes::from(bytes)).await
    }

    /// DELETE a manifest by digest (2.8 refuses deletes by tag with 400); its tags go with it.
    pub async fn delete_manifest(&self, digest: &Digest) -> Result<(), OciError> {
        let op = "DELETE manifest";
        let resp = self.send(Req::new(Method::DELETE, self.url(&format!("manifests/{digest}")), op)).await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(self.not_found(format!("manifest {digest}"))),
            _ => Err(self.error_from(resp, op, true).await),
        }
    }

    /// All tags of the repository (paged with `n`/`last`, following `Link`). An unknown
    /// repository has no tags.
    pub async fn list_tags(&self) -> Result<Vec<String>, OciError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let op = "GET tags";
        let mut out: Vec<String> = Vec::new();
        let mut url = self.url("tags/list?n=1000");
        for _ in 0..100_000 {
            let resp = self.send(Req::new(Method::GET, url.clone(), op)).await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(out),
                _ => return Err(self.error_from(resp, op, false).await),
            }
            let next = header_str(resp.headers(), header::LINK).and_then(parse_next_link);
            let body = self.read_capped(resp, 16 << 20, op).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| self.protocol(op, &e.to_string()))?;
            let tags = page.tags.unwrap_or_default();
            let last = tags.last().cloned();
            out.extend(tags);
            url = match (next, last) {
                (Some(n), _) if n.starts_with('/') => format!("{}{n}", self.repo.base()),
                (Some(n), _) => n,
                (None, _) => return Ok(out),
            };
        }
        Err(self.protocol(op, "tag listing never ends"))
    }

    // ---- blobs --------------------------------------------------------------------------

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

    async fn pull_blob_into<W: AsyncWrite + Unpin>(
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

    fn check_digest(&self, digest: &Digest, hasher: Sha256) -> Result<(), OciError> {
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

    async fn upload(&self, mut loc: String, digest: &Digest, path: &Path, len: u64) -> Result<(), OciError> {
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

    async fn start_upload(&self, mount: Option<(&Digest, &str)>) -> Result<Start, OciError> {
        let op = "POST blob upload";
        let mut url = self.url("blobs/uploads/");
        if let Some((d, from)) = mount {
            super::reference::validate_repository(from)
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

    fn location(&self, resp: &Response<Incoming>, op: &str) -> Result<String, OciError> {
        let loc = header_str(resp.headers(), header::LOCATION).ok_or_else(|| self.protocol(op, "no Location"))?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.repo.base())
        } else {
            return Err(self.protocol(op, "relative Location"));
        })
    }

    async fn expect_status(&self, req: Req<'_>, want: StatusCode) -> Result<Response<Incoming>, OciError> {
        let op = req.op;
        let resp = self.send(req).await?;
        if resp.status() == want {
            Ok(resp)
        } else {
            Err(self.error_from(resp, op, true).await)
        }
    }

    // ---- transport ----------------------------------------------------------------------

    /// Send with authentication (one challenge round) and retries with back-off for transient
    /// failures (5xx, 429, connection errors, timeouts) when the request is replayable.
    async fn send(&self, req: Req<'_>) -> Result<Response<Incoming>, OciError> {
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

    async fn send_following_redirects(&self, req: Req<'_>) -> Result<Response<Incoming>, OciError> {
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

    async fn send_once(&self, req: &Req<'_>) -> Result<Response<Incoming>, OciError> {
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

    async fn with_idle_timeout<F: std::future::Future>(
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

    async fn body(&self, src: &BodySrc, progress: &Arc<Progress>) -> Result<Body, OciError> {
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

    async fn next_chunk(&self, body: &mut Incoming, op: &str) -> Result<Option<Bytes>, OciError> {
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

    async fn read_capped(&self, resp: Response<Incoming>, cap: u64, op: &str) -> Result<Bytes, OciError> {
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

    async fn backoff(&self, attempt: u32) {
        let base = self.cfg.backoff.saturating_mul(1 << attempt.min(6).saturating_sub(1));
        // a little jitter so that parallel clients do not retry in lockstep
        let jitter = Duration::from_millis(u64::from(std::process::id() ^ attempt.wrapping_mul(7919)) % 50);
        tokio::time::sleep(base + jitter).await;
    }

    // ---- authentication -----------------------------------------------------------------

    fn auth_header(&self) -> Option<String> {
        let st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &st.bearer {
            return Some(format!("Bearer {t}"));
        }
        match (&self.creds, st.basic) {
            (Some(c), true) => Some(c.basic_header()),
            _ => None,
        }
    }

    /// Answer a 401's challenge; `false` when there is nothing more to try.
    async fn answer_challenge(&self, challenge: Option<Challenge>, op: &str) -> Result<bool, OciError> {
        match challenge {
            Some(Challenge::Basic) => {
                let mut st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
                if self.creds.is_none() || st.basic {
                    return Ok(false);
                }
                st.basic = true;
                Ok(true)
            }
            Some(Challenge::Bearer { realm, service, scope }) => {
                let token = self.fetch_token(&realm, service.as_deref(), scope.as_deref(), op).await?;
                self.auth.lock().unwrap_or_else(|e| e.into_inner()).bearer = Some(token);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The token flow: `GET realm?service=…&scope=…`, with Basic credentials when there are any
    /// (anonymous tokens otherwise). The answer is `{"token": …}` or `{"access_token": …}`.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        op: &str,
    ) -> Result<String, OciError> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(self.protocol(op, "bearer realm is not an http(s) URL"));
        }
        if self.repo.scheme == "https" && realm.starts_with("http://") {
            return Err(self.protocol(op, "bearer realm over plain HTTP refused for an HTTPS registry"));
        }
        let mut url = realm.to_string();
        for (k, v) in [("service", service), ("scope", scope)] {
            if let Some(v) = v {
                url = with_query(&url, k, &pct_encode(v));
            }
        }
        let mut b = Request::builder().method(Method::GET).uri(&url);
        if let Some(c) = &self.creds {
            let mut v = HeaderValue::from_str(&c.basic_header())
                .map_err(|_| self.protocol(op, "credentials are not a valid header"))?;
            v.set_sensitive(true);
            b = b.header(header::AUTHORIZATION, v);
        }
        let request = b
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(|e| self.protocol(op, &format!("building the token request: {e}")))?;
        let progress = Progress::new();
        let resp = self
            .with_idle_timeout(self.http.request(request), &progress, op)
            .await?
            .map_err(|e| self.transport_error(op, &e))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(OciError::Unauthorized {
                    registry: self.repo.registry.clone(),
                    op: op.to_string(),
                    detail: self.who() + " (token service refused them)",
                })
            }
            s => return Err(self.protocol(op, &format!("token service answered HTTP {}", s.as_u16()))),
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = self.read_capped(resp, 1 << 20, op).await?;
        let t: Token =
            serde_json::from_slice(&body).map_err(|_| self.protocol(op, "token service answer is not JSON"))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.protocol(op, "token service gave no token"))
    }

    fn who(&self) -> String {
        match &self.creds {
            None => format!("no credentials for {} (anonymous)", self.repo.registry),
            Some(_) => format!("the credentials for {} were rejected", self.repo.registry),
        }
    }

    // ---- errors -------------------------------------------------------------------------

    /// Turn a non-success response into an error: the status decides the variant; the body's
    /// `{"errors": [{"code", "message"}]}` gives the detail (bounded, never headers).
    async fn error_from(&self, resp: Response<Incoming>, op: &str, write: bool) -> OciError {
        let status = resp.status();
        let registry = self.repo.registry.clone();
        let op_s = op.to_string();
        match status {
            StatusCode::UNAUTHORIZED => return OciError::Unauthorized { registry, op: op_s, detail: self.who() },
            StatusCode::METHOD_NOT_ALLOWED if write => return OciError::ReadOnly { registry, op: op_s },
            _ => {}
        }
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorItem>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorItem {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let body = self.read_capped(resp, ERROR_BODY_CAP as u64, op).await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<Errors>(&body) {
            Ok(e) if !e.errors.is_empty() => (e.errors[0].code.clone(), e.errors[0].message.clone()),
            _ => (String::new(), String::new()),
        };
        let message: String = message.chars().filter(|c| !c.is_control()).take(200).collect();
        if status == StatusCode::FORBIDDEN {
            return OciError::Forbidden { registry, op: op_s, detail: if message.is_empty() { code } else { message } };
        }
        OciError::Registry { registry, op: op_s, status: status.as_u16(), code, message }
    }

    fn transport_error(&self, op: &str, e: &(dyn std::error::Error + 'static)) -> OciError {
        let mut reason = e.to_string();
        let mut timed_out = false;
        let mut src = e.source();
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            src = s.source();
        }
        if timed_out {
            return OciError::Timeout {
                registry: self.repo.registry.clone(),
                op: op.to_string(),
                after: self.cfg.connect_timeout,
            };
        }
        OciError::Unreachable { registry: self.repo.registry.clone(), op: op.to_string(), reason }
    }

    fn protocol(&self, op: &str, reason: &str) -> OciError {
        OciError::Protocol { registry: self.repo.registry.clone(), op: op.to_string(), reason: reason.to_string() }
    }

    fn not_found(&self, what: String) -> OciError {
        OciError::NotFound { registry: self.repo.registry.clone(), what }
    }
}

enum Start {
    Mounted,
    Session(String),
}

fn tls_config(repo: &RepoUrl, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, OciError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if repo.scheme == "https" {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(ca) = ca_file {
        let bad = |reason: String| OciError::Tls { reason: format!("CA file {}: {reason}", ca.display()) };
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
            roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no PEM certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OciError::Tls { reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// JSON with every object's keys sorted: `oci-spec` keeps annotations in a `HashMap`, whose
/// order changes from run to run, and the same manifest must always give the same digest.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let v = serde_json::to_value(value).map_err(|e| e.to_string())?;
    serde_json::to_vec(&sort(v)).map_err(|e| e.to_string())
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// The end of an upload's `Range: 0-N` header.
fn range_end(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::RANGE)?.trim().trim_start_matches("bytes=").split_once('-')?.1.parse().ok()
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<url>; rel="next"` from a `Link` header.
fn parse_next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            with_query("/v2/a/blobs/uploads/u?_state=x", "digest", "sha256:1"),
            "/v2/a/blobs/uploads/u?_state=x&digest=sha256:1"
        );
        assert_eq!(with_query("/u", "digest", "d"), "/u?digest=d");
        assert_eq!(pct_encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(
            parse_next_link("</v2/a/tags/list?n=2&last=b>; rel=\"next\""),
            Some("/v2/a/tags/list?n=2&last=b".into())
        );
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("0-1048575"));
        assert_eq!(range_end(&h), Some(1048575));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [{"y": 1, "x": 2}], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&v).unwrap()).unwrap(),
            r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn accept_header_names_oci_types_explicitly() {
        assert!(MANIFEST_ACCEPT.contains("application/vnd.oci.image.manifest.v1+json"));
        assert!(!MANIFEST_ACCEPT.contains("*/*"));
    }
}
