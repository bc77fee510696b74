//! Manifests and tags: GET (verified against the digest asked or claimed), HEAD, PUT,
//! DELETE, and the paged tag list.

use bytes::Bytes;
use hyper::header;
use hyper::{Method, StatusCode};

use super::transport::{BodySrc, Req};
use super::{canonical_json, content_length, header_str, parse_next_link, Client, Manifest};
use crate::oci::reference::{Digest, ManifestRef};
use crate::oci::{OciError, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, OCI_MANIFEST};

impl Client {
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
}
