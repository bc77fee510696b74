//! The git blob memo in the shared cache: a fresh clone on another machine reads no file
//! that any tenon writing to the same registry already hashed.
//!
//! The store's memo maps a git blob id to the SHA-256 tenon uses for a file with that
//! blob's content ([`crate::hash::git`]). After a run, tenon publishes the rows of the blobs
//! in its index under the tag `g1-<tree id of HEAD>`, merged with what that tag already
//! holds. Before hashing, a tenon whose store lacks rows for blobs of its index looks up the
//! memos of `HEAD`'s tree and of its first-parent ancestors' trees, newest first, until
//! every blob is covered (a new commit shares most of its blobs with its parent).
//!
//! Trust: a memo row decides a cache key exactly as a digest does, so it is trusted exactly
//! as a record is. With `--cache-verify-key`, a memo must carry a signature by one of those
//! keys (SSHSIG over the tree id and the config digest), else it is ignored with a warning.
//! Every byte read is checked against its digest; rows are taken only for blobs this
//! repository has, and must agree with them: a Git LFS row's blob must be a pointer with
//! that oid and size, any other row's size must be the blob's. A row never overrides what
//! the store learned itself, and the file is still stat-checked against its index entry
//! as for a local row (an edited, racy, assume-unchanged or skip-worktree file is read).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::layout::{self, MEMO_ARTIFACT_TYPE, MEMO_CONFIG_TYPE, MEMO_TAG_PREFIX};
use super::{ConfigMiss, RemoteCache};
use crate::hash::git::{self, BlobDigest};
use crate::oci::{Digest, ManifestRef, OciError};
use crate::store::Store;

/// How many trees (`HEAD` and its first-parent ancestors) a lookup tries.
pub const MEMO_DEPTH: usize = 8;
const MEMO_FORMAT: u32 = 1;

/// The config document of a memo.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct MemoDoc {
    format: u32,
    tree: String,
    blobs: BTreeMap<String, MemoRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct MemoRow {
    sha256: String,
    size: u64,
    #[serde(default)]
    lfs: bool,
}

impl MemoRow {
    fn of(d: &BlobDigest) -> MemoRow {
        MemoRow { sha256: d.sha256.clone(), size: d.size, lfs: d.lfs }
    }
    fn digest(&self) -> BlobDigest {
        BlobDigest { sha256: self.sha256.clone(), size: self.size, lfs: self.lfs }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMemoManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    config: RawConfig,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    media_type: String,
    digest: String,
    size: u64,
}

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parse a memo's config and check it is the memo of `tree`, with well-formed rows only.
fn parse_doc(bytes: &[u8], tree: &str) -> Result<MemoDoc, String> {
    let doc: MemoDoc = serde_json::from_slice(bytes).map_err(|e| format!("not a git memo: {e}"))?;
    if doc.format != MEMO_FORMAT {
        return Err(format!("memo format {} (this tenon reads {MEMO_FORMAT})", doc.format));
    }
    if doc.tree != tree {
        return Err(format!("it is the memo of tree {}, not of {tree}", doc.tree));
    }
    if let Some((b, _)) = doc.blobs.iter().find(|(b, r)| !is_hex(b, &[40, 64]) || !is_hex(&r.sha256, &[64])) {
        return Err(format!("malformed row for blob {:?}", b.chars().take(64).collect::<String>()));
    }
    Ok(doc)
}

fn memo_tag(tree: &str) -> Result<ManifestRef, OciError> {
    ManifestRef::tag(&format!("{MEMO_TAG_PREFIX}{tree}"))
}

/// The manifest of a memo (canonical JSON).
fn memo_manifest(tree: &str, config: &Digest, config_size: u64, signature: Option<&str>) -> Result<Bytes, String> {
    let empty = layout::EMPTY_JSON;
    let mut annotations = serde_json::Map::new();
    annotations.insert(layout::TREE_ANNOTATION.into(), tree.into());
    annotations.insert(layout::CREATED_ANNOTATION.into(), layout::rfc3339(crate::hash::now_ns()).into());
    if let Some(s) = signature {
        annotations.insert(layout::SIGNATURE_ANNOTATION.into(), s.into());
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::OCI_MANIFEST,
        "artifactType": MEMO_ARTIFACT_TYPE,
        "config": {"mediaType": MEMO_CONFIG_TYPE, "digest": config.to_string(), "size": config_size},
        "layers": [{"mediaType": layout::EMPTY_TYPE, "digest": Digest::of_bytes(empty).to_string(), "size": empty.len()}],
        "annotations": annotations,
    });
    crate::oci::canonical_json(&m).map(Bytes::from)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Option<T> + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok().flatten()
}

impl RemoteCache {
    /// Before hashing `dir`: import into `store` the memo rows it lacks for the blobs of the
    /// index of the work tree `dir` lies in (nothing when it has them all, or `dir` is not
    /// in a git work tree). Returns the number of rows imported.
    pub async fn pull_git_memo(&self, dir: &Path, store: &Arc<dyn Store>) -> usize {
        if self.is_down() {
            return 0;
        }
        let t0 = std::time::Instant::now();
        let (d, s) = (dir.to_path_buf(), store.clone());
        let Some((trees, mut missing)) = blocking(move || {
            let scope = git::memo_scope(&d, MEMO_DEPTH)?;
            let have = s.blob_digests(&scope.blobs).ok()?;
            let missing: BTreeSet<String> = scope.blobs.into_iter().filter(|b| !have.contains_key(b)).collect();
            Some((scope.trees, missing))
        })
        .await
        else {
            return 0;
        };
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, missing = missing.len(), "git memo: scope read");
        let mut found = Vec::new();
        for tree in &trees {
            if missing.is_empty() || self.is_down() {
                break;
            }
            let Some(doc) = self.read_memo(tree).await else { continue };
            for (blob, row) in doc.blobs {
                if missing.remove(&blob) {
                    found.push((blob, row.digest()));
                }
            }
        }
        if found.is_empty() {
            return 0;
        }
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, rows = found.len(), "git memo: fetched");
        let (d, s) = (dir.to_path_buf(), store.clone());
        let offered = found.len();
        let n = blocking(move || {
            let rows = git::consistent_rows(&d, found);
            s.save_blob_digests(&rows).ok()?;
            Some(rows.len())
        })
        .await
        .unwrap_or(0);
        if n < offered {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.warn(format!(
                "remote cache {}: {} git memo rows ignored: they disagree with this repository's blobs",
                self.url,
                offered - n
            ));
        }
        self.stats.memo_rows_in.fetch_add(n as u64, Ordering::Relaxed);
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, rows = n, "git memo: imported");
        n
    }

    /// The memo of `tree`, verified; `None` when absent or when it fails a check (warned).
    async fn read_memo(&self, tree: &str) -> Option<MemoDoc> {
        if let Some(doc) = self.memos_seen.lock().unwrap_or_else(|p| p.into_inner()).get(tree) {
            return Some(doc.clone());
        }
        let tag = memo_tag(tree).ok()?;
        let m = match self.client.get_manifest(&tag).await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(e) => {
                self.fault(&format!("looking up the git memo {MEMO_TAG_PREFIX}{tree}"), &e);
                return None;
            }
        };
        let reject = |why: String| -> Option<MemoDoc> {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.warn(format!("remote cache {}: git memo {MEMO_TAG_PREFIX}{tree} ignored: {why}", self.url));
            None
        };
        let raw: RawMemoManifest = match serde_json::from_slice(&m.bytes) {
            Ok(r) => r,
            Err(e) => return reject(format!("not a memo manifest: {e}")),
        };
        if raw.artifact_type.as_deref().unwrap_or(&raw.config.media_type) != MEMO_ARTIFACT_TYPE
            || raw.config.media_type != MEMO_CONFIG_TYPE
        {
            return reject(format!("its config type {:?} is not {MEMO_CONFIG_TYPE}", raw.config.media_type));
        }
        let digest = match Digest::parse(&raw.config.digest) {
            Ok(d) => d,
            Err(e) => return reject(format!("config digest: {e}")),
        };
        let msg = crate::oci::sign::memo_message(tree, digest.as_str());
        let signature = raw.annotations.get(layout::SIGNATURE_ANNOTATION).map(String::as_str);
        let what = format!("git memo {MEMO_TAG_PREFIX}{tree}");
        let buf = match self.checked_config(&what, &digest, raw.config.size, signature, &msg).await {
            Ok(b) => b,
            Err(ConfigMiss::Rejected(why)) => return reject(why),
            Err(ConfigMiss::Fault) => return None,
        };
        match parse_doc(&buf, tree) {
            Ok(doc) => {
                self.memos_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(tree.to_string(), doc.clone());
                Some(doc)
            }
            Err(why) => reject(why),
        }
    }

    /// After a run: publish the memo rows `store` has for the blobs of the index of the work
    /// tree `dir` lies in, under `HEAD`'s tree, merged with the memo already there (nothing
    /// is pushed when that memo has them all). Returns the rows the registry gained.
    pub async fn push_git_memo(&self, dir: &Path, store: &Arc<dyn Store>) -> usize {
        if !self.may_write() {
            return 0;
        }
        let (d, s) = (dir.to_path_buf(), store.clone());
        let Some((tree, ours)) = blocking(move || {
            let scope = git::memo_scope(&d, 1)?;
            let rows = s.blob_digests(&scope.blobs).ok()?;
            Some((scope.trees.into_iter().next()?, rows))
        })
        .await
        else {
            return 0;
        };
        if ours.is_empty() {
            return 0;
        }
        let mut doc = self.read_memo(&tree).await.unwrap_or_else(|| MemoDoc {
            format: MEMO_FORMAT,
            tree: tree.clone(),
            blobs: BTreeMap::new(),
        });
        let mut gained = 0;
        for (blob, d) in &ours {
            let row = MemoRow::of(d);
            if doc.blobs.get(blob) != Some(&row) {
                // what this store learned itself wins over a row read from elsewhere
                doc.blobs.insert(blob.clone(), row);
                gained += 1;
            }
        }
        if gained == 0 || self.is_down() {
            return 0;
        }
        match self.put_memo(&doc).await {
            Ok(()) => {
                self.memos_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(tree, doc);
                self.stats.memo_rows_out.fetch_add(gained as u64, Ordering::Relaxed);
                gained
            }
            Err(e) => {
                self.write_failed(&format!("publishing the git memo {MEMO_TAG_PREFIX}{tree}"), &e);
                0
            }
        }
    }

    async fn put_memo(&self, doc: &MemoDoc) -> Result<(), OciError> {
        let proto = |op: &str, reason: String| OciError::Protocol { registry: "-".into(), op: op.into(), reason };
        let config = Bytes::from(crate::oci::canonical_json(doc).map_err(|e| proto("encoding a git memo", e))?);
        let size = config.len() as u64;
        let (digest, _) = self.client.push_blob_bytes(config).await?;
        self.client.push_blob_bytes(Bytes::from_static(layout::EMPTY_JSON)).await?;
        let signature = match &self.signer {
            Some(s) => Some(
                s.sign(&crate::oci::sign::memo_message(&doc.tree, digest.as_str())).map_err(|e| proto("signing", e))?,
            ),
            None => None,
        };
        let manifest = memo_manifest(&doc.tree, &digest, size, signature.as_deref())
            .map_err(|e| proto("encoding a manifest", e))?;
        self.client.put_manifest(&memo_tag(&doc.tree)?, crate::oci::OCI_MANIFEST, manifest).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_document_is_checked_against_its_tree_and_its_rows() {
        let tree = "a".repeat(40);
        let row = MemoRow { sha256: "b".repeat(64), size: 3, lfs: false };
        let doc = MemoDoc { format: 1, tree: tree.clone(), blobs: BTreeMap::from([("c".repeat(40), row.clone())]) };
        let bytes = crate::oci::canonical_json(&doc).unwrap();
        assert_eq!(parse_doc(&bytes, &tree).unwrap(), doc);
        let other = "d".repeat(40);
        assert!(parse_doc(&bytes, &other).unwrap_err().contains("not of"));
        let mut bad = doc.clone();
        bad.blobs.insert("../x".into(), row.clone());
        assert!(parse_doc(&crate::oci::canonical_json(&bad).unwrap(), &tree).unwrap_err().contains("malformed"));
        let mut bad = doc.clone();
        bad.blobs.insert("e".repeat(40), MemoRow { sha256: "B".repeat(64), ..row });
        assert!(parse_doc(&crate::oci::canonical_json(&bad).unwrap(), &tree).is_err());
        let mut later = doc;
        later.format = 2;
        assert!(parse_doc(&crate::oci::canonical_json(&later).unwrap(), &tree).unwrap_err().contains("format 2"));
        assert!(parse_doc(b"{", &tree).is_err());
    }
}
