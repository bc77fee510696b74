//! The async registry client: one repository, HTTP/1.1 over hyper (rustls on ring for HTTPS).
//!
//! `mod.rs` owns the client's configuration, its construction (TLS roots) and the small
//! header and URL helpers; `manifests` (get, head, put, delete, tags), `blobs` (verified
//! downloads), `upload` (mounts, monolithic and chunked pushes), `transport` (sending with
//! authentication, retries, redirects and the idle timeout), `token` (answering a 401's
//! challenge) and `errors` (registry answers turned into `OciError`) each add to `Client`.

mod blobs;
mod errors;
mod manifests;
mod token;
mod transport;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::header::{self, HeaderMap};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::auth::{CredentialSource, Credentials};
use super::reference::{Digest, RepoUrl};
use super::OciError;

use token::AuthState;
use transport::Req;

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
    use hyper::header::HeaderValue;

    use super::*;
    use crate::oci::MANIFEST_ACCEPT;

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
