//! The shared cache: cache records in an OCI registry (`--cache-repo`), the second level
//! behind the local store.
//!
//! A record is one OCI image manifest tagged `r1-<key>` ([`layout`]): its config blob is the
//! record (key, preimage, results, output trees, who made it), its layers are the output
//! objects, files of 1 MiB or more as blobs named by the SHA-256 digest tenon already uses,
//! smaller ones in one deterministic tar (a pack). Reading verifies everything: every blob
//! byte against its digest (the registry serves tampered storage under the original digest),
//! the record's key against the tag, the preimage against the key, and, with
//! `--cache-verify-key`, the signature. A record that fails a check is a miss with a warning
//! naming it; it never becomes a hit.
//!
//! Faults never fail a run: the first error that says the registry itself is unusable
//! (unreachable, timeouts, 5xx after retries, 401/403) prints one warning and turns the
//! remote off for the rest of the invocation (a circuit breaker); the run goes on with the
//! local store.

mod gitmemo;
pub mod layout;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use crate::oci::{Client, ClientConfig, CredentialSource, Digest, ManifestRef, OciError, PushOutcome, RepoUrl};
pub use crate::report::RemoteSummary;
use crate::store::{Record, Store};
use layout::{RemoteRecord, LARGE_OBJECT};

/// How to reach the shared cache (from `--cache-*` flags).
#[derive(Debug, Clone, Default)]
pub struct RemoteSettings {
    /// `oci://host[:port]/repo[?mode=ro|rw]` or `oci+http://…`.
    pub url: String,
    /// `--cache-read-only`: never write.
    pub read_only: bool,
    pub credentials_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// An OpenSSH Ed25519 private key: records pushed are signed with it.
    pub sign_key: Option<PathBuf>,
    /// OpenSSH public keys (or an allowed_signers file): records not signed by one of them
    /// are ignored.
    pub verify_key: Option<PathBuf>,
    /// How long the end of a run waits for uploads still under way.
    pub upload_timeout: std::time::Duration,
}

impl RemoteSettings {
    /// How the registry's client connects and authenticates (also the Kubernetes data
    /// plane's, which uses the same registry and credentials).
    pub fn client_config(&self) -> ClientConfig {
        let credentials = match &self.credentials_file {
            Some(f) => CredentialSource::File(f.clone()),
            None => CredentialSource::DockerConfig,
        };
        // 3 retries from 100 ms: a registry that is down costs the run 0.7 s, once
        ClientConfig {
            credentials,
            ca_file: self.ca_file.clone(),
            backoff: std::time::Duration::from_millis(100),
            ..ClientConfig::default()
        }
    }
}

/// Counters for the run report and `/metrics` (read out by [`RemoteCache::summary`]).
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// Records found and verified (a hit for the task).
    pub hits: AtomicU64,
    /// Keys the registry did not have (or had only in a form that failed a check).
    pub misses: AtomicU64,
    /// Blob bytes downloaded (verified) and uploaded.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Records published by this invocation.
    pub published: AtomicU64,
    /// Failures: registry faults and records that failed a check.
    pub errors: AtomicU64,
    /// Git blob memo rows imported before hashing, and rows the registry gained from this
    /// invocation ([`gitmemo`]).
    pub memo_rows_in: AtomicU64,
    pub memo_rows_out: AtomicU64,
}

/// A record found in the registry.
pub struct RemoteHit {
    pub record: Record,
    /// `produced by RUN on HOST, from oci://…`
    pub origin: String,
}

/// Why [`RemoteCache::checked_config`] gave no config.
enum ConfigMiss {
    /// It failed a check (the reason).
    Rejected(String),
    /// The registry failed (reported as a fault).
    Fault,
}

/// Why a remote lookup gave nothing.
enum Miss {
    /// The registry has no record for the key.
    Absent,
    /// The remote is off (down, or not asked).
    Off,
}

pub struct RemoteCache {
    client: Client,
    /// How the client was built (for the clients of model repositories).
    cfg: ClientConfig,
    url: String,
    read_only: bool,
    signer: Option<crate::oci::sign::Signer>,
    verifier: Option<crate::oci::sign::Verifier>,
    /// Circuit breaker: the registry failed in a way that says it is unusable.
    down: AtomicBool,
    /// Writes were refused (read-only registry, credentials that may only pull).
    no_writes: AtomicBool,
    pub stats: RemoteStats,
    warnings: Mutex<Vec<String>>,
    uploads: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    host: String,
    upload_timeout: std::time::Duration,
    /// Git memos read or written by this invocation, by tree id.
    memos_seen: Mutex<std::collections::HashMap<String, gitmemo::MemoDoc>>,
}

/// How many blobs move at once for one record.
const BLOB_CONCURRENCY: usize = 8;
/// The largest record config read (a listing of many files is big, not this big).
const MAX_CONFIG_BYTES: u64 = 64 << 20;

impl RemoteCache {
    /// Build the client (reads credential and CA files; opens no connection). Errors are
    /// usage errors: a malformed URL, an unreadable key or CA file.
    pub fn new(s: &RemoteSettings) -> Result<RemoteCache, String> {
        let repo = RepoUrl::parse(&s.url).map_err(|e| format!("--cache-repo: {e}"))?;
        let read_only = s.read_only || repo.read_only == Some(true);
        let cfg = s.client_config();
        let url = repo.to_string();
        let client = Client::new(repo, cfg.clone()).map_err(|e| format!("--cache-repo {url}: {e}"))?;
        let signer = match &s.sign_key {
            Some(p) => Some(crate::oci::sign::Signer::load(p).map_err(|e| format!("--cache-sign-key: {e}"))?),
            None => None,
        };
        let verifier = match &s.verify_key {
            Some(p) => Some(crate::oci::sign::Verifier::load(p).map_err(|e| format!("--cache-verify-key: {e}"))?),
            None => None,
        };
        Ok(RemoteCache {
            client,
            cfg,
            url,
            read_only,
            signer,
            verifier,
            down: AtomicBool::new(false),
            no_writes: AtomicBool::new(false),
            stats: RemoteStats::default(),
            warnings: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
            host: hostname(),
            upload_timeout: if s.upload_timeout.is_zero() {
                std::time::Duration::from_secs(600)
            } else {
                s.upload_timeout
            },
            memos_seen: Mutex::new(Default::default()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The repository a pipeline task's published models go to: `<cache repository>/<task>`
    /// (the task name lower-cased, other characters than `[a-z0-9]` as `-`).
    fn model_repo_url(&self, task: &str) -> RepoUrl {
        let mut name: String =
            task.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        name = name.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-");
        if name.is_empty() {
            name = "model".into();
        }
        let base = self.client.repo();
        base.with_repository(&format!("{}/{name}", base.repository)).unwrap_or_else(|_| base.clone())
    }

    /// [`RemoteCache::model_repo_url`] as text (part of a publishing task's key).
    pub fn model_repo(&self, task: &str) -> String {
        self.model_repo_url(task).to_string()
    }

    /// Publish the file or directory `local` (a task's declared output) as a KitOps
    /// ModelKit named after `task`; returns its durable reference `oci://host/repo@sha256:…`.
    /// The kit is built deterministically (the same files give the same digest), so a
    /// repeated publish is a few HEADs. Read-only: nothing is pushed, and the reference is
    /// returned only if the registry already has that kit.
    pub async fn publish_model(&self, task: &str, local: &Path, scratch: &Path) -> Result<String, String> {
        use crate::oci::modelkit;
        if self.is_down() {
            return Err(format!("the shared cache {} is unavailable", self.url));
        }
        let repo = self.model_repo_url(task);
        let name = repo.repository.rsplit('/').next().unwrap_or("model").to_string();
        let path = local.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
        let layer = modelkit::KitLayer::from_path(modelkit::LayerKind::Model, &path, local)?;
        let input = modelkit::KitInput {
            package: modelkit::KitPackage { name, ..Default::default() },
            layers: vec![layer],
            created: None,
            annotations: Default::default(),
        };
        let work = scratch.join(scratch_name("kit", task));
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let result = async {
            let w = work.clone();
            let kit =
                tokio::task::spawn_blocking(move || modelkit::build(&input, &w)).await.map_err(|e| e.to_string())??;
            let client = Client::new(repo.clone(), self.cfg.clone()).map_err(|e| e.to_string())?;
            if self.read_only || self.no_writes.load(Ordering::SeqCst) {
                return match client.head_manifest(&ManifestRef::Digest(kit.digest.clone())).await {
                    Ok(Some(_)) => Ok(modelkit::reference(&repo, &kit.digest)),
                    Ok(None) => Err(format!("not publishing (read-only), and {repo} has no ModelKit {}", kit.digest)),
                    Err(e) => Err(e.to_string()),
                };
            }
            // tagged, so a registry's `garbage-collect --delete-untagged` keeps what was promoted
            let tag = format!("k1-{}", kit.digest.hex());
            let d = modelkit::publish(&client, &kit, Some(&tag)).await.map_err(|e| e.to_string())?;
            Ok(modelkit::reference(&repo, &d))
        }
        .await;
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// Print (through tracing, on stderr) and keep a warning for the report.
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
    }

    /// Count a failure; trip the breaker when it says the registry is unusable. `what`
    /// names the record or operation.
    fn fault(&self, what: &str, e: &OciError) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if registry_unusable(e) {
            if !self.down.swap(true, Ordering::SeqCst) {
                self.warn(format!("remote cache {} unavailable: {e}; continuing with the local store", self.url));
            }
        } else {
            self.warn(format!("remote cache {}: {what}: {e}", self.url));
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// The record of `key` from the registry, verified, but no output data (planning).
    pub async fn peek(&self, key: &str) -> Option<RemoteHit> {
        self.lookup(key, None).await
    }

    /// Find `key` in the registry and import it into `store`: the output objects (verified),
    /// the output trees and the record. Afterwards the key is a local hit.
    pub async fn fetch(&self, key: &str, store: &Arc<dyn Store>) -> Option<RemoteHit> {
        self.lookup(key, Some(store)).await
    }

    async fn lookup(&self, key: &str, import_into: Option<&Arc<dyn Store>>) -> Option<RemoteHit> {
        let (rec, manifest, origin) = match self.read_record(key).await {
            Ok(found) => found,
            Err(miss) => {
                if let Miss::Absent = miss {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                }
                return None;
            }
        };
        if let Some(store) = import_into {
            if let Err(m) = self.import(&rec, &manifest, store).await {
                // a blob that fails after the retries (cut short, damaged) costs this record
                // only: the next lookup finds out whether the registry as a whole is gone
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.warn(format!("remote cache {}: record r1-{key} not used: {m}", self.url));
                return None;
            }
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(RemoteHit { record: rec.record, origin })
    }

    /// GET the manifest and the config of `key`'s record and check them.
    async fn read_record(&self, key: &str) -> Result<(RemoteRecord, layout::RecordManifest, String), Miss> {
        if self.is_down() {
            return Err(Miss::Off);
        }
        let tag = match ManifestRef::tag(&layout::record_tag(key)) {
            Ok(t) => t,
            Err(_) => return Err(Miss::Absent),
        };
        let m = match self.client.get_manifest(&tag).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Miss::Absent),
            Err(e) => {
                self.fault(&format!("looking up r1-{key}"), &e);
                return Err(if self.is_down() { Miss::Off } else { Miss::Absent });
            }
        };
        let reject = |why: String| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.warn(format!("remote cache {}: record r1-{key} ignored: {why}", self.url));
            Miss::Absent
        };
        let manifest = layout::RecordManifest::parse(&m.bytes, key).map_err(reject)?;
        let config = &manifest.config;
        let msg = crate::oci::sign::record_message(key, config.digest.as_str());
        let what = format!("record r1-{key}");
        let buf =
            match self.checked_config(&what, &config.digest, config.size, manifest.signature.as_deref(), &msg).await {
                Ok(b) => b,
                Err(ConfigMiss::Rejected(why)) => return Err(reject(why)),
                Err(ConfigMiss::Fault) => return Err(if self.is_down() { Miss::Off } else { Miss::Absent }),
            };
        let rec = RemoteRecord::parse(&buf, key, &manifest).map_err(reject)?;
        let uid = &rec.record.run_uid;
        let origin = format!(
            "produced by {} ({}) on {}, from {}",
            rec.record.run,
            uid.get(..8).unwrap_or(uid),
            if rec.producer.host.is_empty() { "an unnamed host" } else { &rec.producer.host },
            self.url
        );
        Ok((rec, manifest, origin))
    }

    /// The config blob of a shared artifact (`what`, for messages), after the checks every
    /// one gets: at most [`MAX_CONFIG_BYTES`], signed over `msg` by a trusted key when
    /// `--cache-verify-key` is set, every byte checked against `digest`.
    async fn checked_config(
        &self,
        what: &str,
        digest: &Digest,
        size: u64,
        signature: Option<&str>,
        msg: &[u8],
    ) -> Result<Vec<u8>, ConfigMiss> {
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigMiss::Rejected(format!("its config is {size} bytes (at most {MAX_CONFIG_BYTES})")));
        }
        if let Some(v) = &self.verifier {
            match signature {
                None => {
                    return Err(ConfigMiss::Rejected(
                        "it is not signed and --cache-verify-key requires a signature".into(),
                    ))
                }
                Some(sig) => {
                    if let Err(e) = v.verify(msg, sig) {
                        return Err(ConfigMiss::Rejected(format!("its signature does not verify: {e}")));
                    }
                }
            }
        }
        let mut buf = Vec::with_capacity(size as usize);
        match self.client.pull_blob(digest, Some(size), &mut buf).await {
            Ok(n) => {
                self.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
                Ok(buf)
            }
            Err(e) => {
                self.fault(&format!("{what}: reading its config"), &e);
                Err(ConfigMiss::Fault)
            }
        }
    }

    /// Download what the local store lacks, verified, then commit trees and record.
    async fn import(
        &self,
        rec: &RemoteRecord,
        manifest: &layout::RecordManifest,
        store: &Arc<dyn Store>,
    ) -> Result<(), String> {
        let missing: BTreeMap<String, u64> =
            rec.objects().into_iter().filter(|(d, size)| store.object_file(d, *size).is_none()).collect();
        let scratch = store.scratch_dir();
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        // large objects: one blob each, straight into the store
        let large: Vec<(String, u64)> =
            manifest.objects.iter().filter_map(|d| missing.get(d.hex()).map(|s| (d.hex().to_string(), *s))).collect();
        let mut jobs: Vec<Job> = large.into_iter().map(|(hex, size)| Job::Object(hex, size)).collect();
        for p in &rec.packs {
            if p.objects.iter().any(|o| missing.contains_key(o)) {
                jobs.push(Job::Pack(p.clone()));
            }
        }
        let results: Vec<Result<(), String>> = futures::stream::iter(jobs)
            .map(|job| self.import_job(job, &missing, store, &scratch))
            .buffer_unordered(BLOB_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            r?;
        }
        for (d, size) in &missing {
            if store.object_file(d, *size).is_none() {
                return Err(format!("object {d} is named by the record but no layer holds it"));
            }
        }
        let (store, record) = (store.clone(), rec.record.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            for set in &record.outputs {
                store.put_tree(&set.tree).map_err(|e| e.to_string())?;
            }
            store.put(&record).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot record it in the local store: {e}"))
    }

    async fn import_job(
        &self,
        job: Job,
        missing: &BTreeMap<String, u64>,
        store: &Arc<dyn Store>,
        scratch: &Path,
    ) -> Result<(), String> {
        match job {
            Job::Object(hex, size) => {
                let digest = Digest::from_hex(&hex).map_err(|e| e.to_string())?;
                let tmp = scratch.join(scratch_name("remote", &hex[..16]));
                let got = self.client.pull_blob_to_file(&digest, Some(size), &tmp).await.map_err(|e| e.to_string())?;
                self.stats.bytes_in.fetch_add(got, Ordering::Relaxed);
                let (store, tmp2) = (store.clone(), tmp.clone());
                let placed = tokio::task::spawn_blocking(move || {
                    store.import_object(&hex, size, &tmp2).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                let _ = std::fs::remove_file(&tmp);
                placed
            }
            Job::Pack(p) => {
                let digest = Digest::parse(&p.digest).map_err(|e| e.to_string())?;
                let tmp = scratch.join(scratch_name("remote-pack", &digest.hex()[..16]));
                let got =
                    self.client.pull_blob_to_file(&digest, Some(p.size), &tmp).await.map_err(|e| e.to_string())?;
                self.stats.bytes_in.fetch_add(got, Ordering::Relaxed);
                let expected: BTreeMap<String, u64> =
                    p.objects.iter().filter_map(|o| missing.get(o).map(|s| (o.clone(), *s))).collect();
                let (store, tmp2, scratch) = (store.clone(), tmp.clone(), scratch.to_path_buf());
                let placed = tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let f = std::fs::File::open(&tmp2).map_err(|e| e.to_string())?;
                    crate::oci::pack::unpack(std::io::BufReader::new(f), &expected, &scratch, |hex, file| {
                        let size = expected.get(hex).copied().unwrap_or(0);
                        store.import_object(hex, size, file).map_err(std::io::Error::other)
                    })
                    .map(|_| ())
                    .map_err(|e| format!("pack {}: {e}", p.digest))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                let _ = std::fs::remove_file(&tmp);
                placed
            }
        }
    }

    /// Publish `key`'s local record in the background; [`RemoteCache::finish`] waits.
    pub fn publish_later(self: &Arc<Self>, key: String, store: Arc<dyn Store>) {
        if !self.may_write() {
            return;
        }
        let me = self.clone();
        let h = tokio::spawn(async move {
            me.publish(&key, &store).await;
        });
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).push(h);
    }

    /// Whether this invocation writes (says once why not).
    fn may_write(&self) -> bool {
        if self.read_only {
            if !self.no_writes.swap(true, Ordering::SeqCst) {
                self.warn(format!("remote cache {}: not publishing (read-only)", self.url));
            }
            return false;
        }
        !self.is_down() && !self.no_writes.load(Ordering::SeqCst)
    }

    /// Publish the local record of `key` (objects, config, manifest last). The first writer
    /// wins: an existing tag is left alone. Returns whether it is in the registry now.
    pub async fn publish(&self, key: &str, store: &Arc<dyn Store>) -> bool {
        if !self.may_write() {
            return false;
        }
        let (s, k) = (store.clone(), key.to_string());
        let rec = match tokio::task::spawn_blocking(move || s.get(&k)).await {
            Ok(Ok(Some(rec))) => rec,
            _ => return false,
        };
        let mut result = self.publish_record(&rec, store).await;
        if matches!(&result, Err(OciError::Registry { code, .. }) if code == "MANIFEST_BLOB_UNKNOWN") {
            // a garbage collection raced the push and took a blob: push the record again,
            // once (every blob is HEAD-checked and re-sent when gone)
            result = self.publish_record(&rec, store).await;
        }
        match result {
            Ok(true) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(false) => true,
            Err(e) => {
                self.write_failed(&format!("publishing r1-{key}"), &e);
                false
            }
        }
    }

    /// A write failed: refused writes (read-only, no permission) stop further writes with
    /// one warning; anything else is a fault.
    fn write_failed(&self, what: &str, e: &OciError) {
        if matches!(e, OciError::ReadOnly { .. } | OciError::Forbidden { .. } | OciError::Unauthorized { .. }) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if !self.no_writes.swap(true, Ordering::SeqCst) {
                self.warn(format!(
                    "remote cache {}: cannot publish ({e}); reading from it goes on, nothing more is pushed",
                    self.url
                ));
            }
        } else {
            self.fault(what, e);
        }
    }

    /// `Ok(false)`: the tag already existed.
    async fn publish_record(&self, rec: &Record, store: &Arc<dyn Store>) -> Result<bool, OciError> {
        let tag = ManifestRef::tag(&layout::record_tag(&rec.key))?;
        if self.client.head_manifest(&tag).await?.is_some() {
            return Ok(false);
        }
        let objects = layout::record_objects(rec);
        let mut layers: Vec<layout::Layer> = Vec::new();
        let mut small: Vec<(String, u64)> = Vec::new();
        let io = |path: PathBuf| {
            move |e: std::io::Error| OciError::Io { context: "reading a stored object", path: path.clone(), source: e }
        };
        let mut large = Vec::new();
        for (hex, size) in &objects {
            let Some(path) = store.object_file(hex, *size) else {
                let p = PathBuf::from(hex);
                return Err(io(p)(std::io::Error::new(std::io::ErrorKind::NotFound, "object missing from the store")));
            };
            if *size >= LARGE_OBJECT {
                large.push((Digest::from_hex(hex)?, *size, path));
            } else {
                small.push((hex.clone(), *size));
            }
        }
        // large objects: HEAD-skip, then streamed uploads, a few at once
        let pushed: Vec<Result<(layout::Layer, u64), OciError>> = futures::stream::iter(large)
            .map(|(d, size, path)| async move {
                let out = self.client.push_blob_file(&d, &path, &[]).await?;
                let sent = if out == PushOutcome::Uploaded { size } else { 0 };
                Ok((layout::Layer::object(d, size), sent))
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .collect()
            .await;
        for p in pushed {
            let (layer, sent) = p?;
            self.stats.bytes_out.fetch_add(sent, Ordering::Relaxed);
            layers.push(layer);
        }
        let mut packs = Vec::new();
        if !small.is_empty() {
            let scratch = store.scratch_dir();
            let tmp = scratch.join(scratch_name("publish-pack", &rec.key[..16]));
            let (s, sm, t) = (store.clone(), small.clone(), tmp.clone());
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<(Digest, u64)> {
                let f = std::fs::File::create(&t)?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                let r = crate::oci::pack::write_pack(
                    &sm,
                    |hex, size| {
                        let p = s.object_file(hex, size).ok_or_else(|| std::io::Error::other("object missing"))?;
                        std::fs::File::open(p)
                    },
                    &mut w,
                )?;
                use std::io::Write;
                w.flush()?;
                Ok(r)
            })
            .await
            .map_err(|e| io(tmp.clone())(std::io::Error::other(e.to_string())))?
            .map_err(io(tmp.clone()));
            let (d, size) = match written {
                Ok(x) => x,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let out = self.client.push_blob_file(&d, &tmp, &[]).await;
            let _ = std::fs::remove_file(&tmp);
            if out? == PushOutcome::Uploaded {
                self.stats.bytes_out.fetch_add(size, Ordering::Relaxed);
            }
            let mut objs: Vec<String> = small.iter().map(|(h, _)| h.clone()).collect();
            objs.sort();
            objs.dedup();
            packs.push(layout::PackRef { digest: d.to_string(), size, objects: objs });
            layers.push(layout::Layer::pack(d, size));
        }
        let remote = RemoteRecord {
            format: layout::RECORD_FORMAT,
            record: rec.clone(),
            producer: layout::Producer { tenon: env!("CARGO_PKG_VERSION").into(), host: self.host.clone() },
            packs,
        };
        let config = Bytes::from(crate::oci::canonical_json(&remote).map_err(|e| OciError::Protocol {
            registry: self.client.repo().registry.clone(),
            op: "encoding a record".into(),
            reason: e,
        })?);
        let (config_digest, _) = self.client.push_blob_bytes(config.clone()).await?;
        if layers.is_empty() {
            self.client.push_blob_bytes(Bytes::from_static(layout::EMPTY_JSON)).await?;
        }
        let signature = match &self.signer {
            Some(s) => Some(
                s.sign(&crate::oci::sign::record_message(&rec.key, config_digest.as_str()))
                    .map_err(|e| OciError::Protocol { registry: "-".into(), op: "signing".into(), reason: e })?,
            ),
            None => None,
        };
        let manifest = layout::manifest_bytes(rec, &config_digest, config.len() as u64, &layers, signature.as_deref())
            .map_err(|e| OciError::Protocol { registry: "-".into(), op: "encoding a manifest".into(), reason: e })?;
        self.client.put_manifest(&tag, crate::oci::OCI_MANIFEST, manifest).await?;
        Ok(true)
    }

    /// Wait for background uploads (at most the upload timeout), then summarise.
    pub async fn finish(&self) -> RemoteSummary {
        let handles: Vec<_> = std::mem::take(&mut *self.uploads.lock().unwrap_or_else(|p| p.into_inner()));
        let n = handles.len();
        if n > 0 {
            let all = futures::future::join_all(handles);
            if tokio::time::timeout(self.upload_timeout, all).await.is_err() {
                self.warn(format!(
                    "remote cache {}: uploads still running after {:?}; the records not yet published are left out",
                    self.url, self.upload_timeout
                ));
            }
        }
        self.summary()
    }

    pub fn summary(&self) -> RemoteSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteSummary {
            url: self.url.clone(),
            read_only: self.read_only,
            hits: g(&self.stats.hits),
            misses: g(&self.stats.misses),
            bytes_in: g(&self.stats.bytes_in),
            bytes_out: g(&self.stats.bytes_out),
            published: g(&self.stats.published),
            errors: g(&self.stats.errors),
            git_memo_rows_in: g(&self.stats.memo_rows_in),
            git_memo_rows_out: g(&self.stats.memo_rows_out),
            unavailable: self.is_down(),
            warnings: self.warnings.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Every record tag in the repository (`cache ls --remote`, `gc --remote`).
    pub async fn list_records(&self) -> Result<Vec<layout::RemoteEntry>, OciError> {
        let tags = self.client.list_tags().await?;
        let keys: Vec<String> = tags.iter().filter_map(|t| layout::key_of_tag(t)).collect();
        let found: Vec<Result<Option<layout::RemoteEntry>, OciError>> = futures::stream::iter(keys)
            .map(|key| async move {
                let tag = ManifestRef::tag(&layout::record_tag(&key))?;
                let Some(m) = self.client.get_manifest(&tag).await? else { return Ok(None) };
                Ok(Some(layout::RemoteEntry::from_manifest(&key, &m.digest, &m.bytes)))
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for f in found {
            if let Some(e) = f? {
                out.push(e);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Delete one record's manifest (its tag goes with it).
    pub async fn delete(&self, digest: &Digest) -> Result<(), OciError> {
        if self.read_only {
            return Err(OciError::ReadOnly { registry: self.client.repo().registry.clone(), op: "DELETE".into() });
        }
        self.client.delete_manifest(digest).await
    }
}

enum Job {
    Object(String, u64),
    Pack(layout::PackRef),
}

/// Errors that say the registry as a whole is unusable for this invocation.
fn registry_unusable(e: &OciError) -> bool {
    matches!(
        e,
        OciError::Unreachable { .. }
            | OciError::Timeout { .. }
            | OciError::Unauthorized { .. }
            | OciError::Forbidden { .. }
            | OciError::Tls { .. }
            | OciError::Credentials { .. }
    ) || e.is_transient()
}

/// A name for a temporary file or directory in the store's scratch directory that no other
/// process, and no concurrent task of this one, uses: `<prefix>-<pid>-<seq>-<label>`.
fn scratch_name(prefix: &str, label: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let label: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{prefix}-{}-{n}-{label}", std::process::id())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The set of record keys the local store holds that `keys` names (for `cache push`).
pub fn present(store: &dyn Store, keys: &BTreeSet<String>) -> Vec<String> {
    keys.iter().filter(|k| matches!(store.get(k), Ok(Some(_)))).cloned().collect()
}
