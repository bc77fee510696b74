//! The registry data plane: a task pod's large input files come from an OCI registry, not
//! through the API server.
//!
//! With `--k8s-tenon-image` and a registry (`--cache-repo`, or `--k8s-data-registry` for the
//! address pods use), tenon plans the upload as usual, but each regular file of at least
//! [`MIN_SIZE`] in a copied volume is looked up in the registry by its SHA-256 (a HEAD; the
//! blob is the file, as the shared cache stores large outputs) and, when the registry lacks it
//! and may be written, pushed once (streamed from the file), so that later pods, runs and
//! machines reuse it. Such files are left out of the tar and listed (path, digest, size, mode,
//! time, owner) in the pod spec for an init container, [`FETCH`], which runs tenon's own image
//! (`tenon pod-fetch`, [`pod_fetch`]) and streams each blob into the pod's volume, hashing every
//! byte: a blob that does not match its digest or size fails the pod with the fetcher's message,
//! never a wrong input. Everything else (scripts, small files, directories) travels as before.
//!
//! The data plane changes only how bytes reach the pod: the files the steps see are the same,
//! byte for byte, so cache keys and outcomes are the same with and without it. A registry that
//! fails while planning costs one warning, and the files go through the tar.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use super::*;
use crate::oci::{Client, ClientConfig, CredentialSource, Digest, RepoUrl};

/// The init container that fetches the listed files.
pub const FETCH: &str = "tenon-fetch";
/// Files at least this large go through the registry (the shared cache's own threshold for a
/// blob of its own, `remote::layout::LARGE_OBJECT`).
pub const MIN_SIZE: u64 = 1 << 20;
/// The largest list (JSON bytes) the pod spec carries; files beyond it go through the tar.
const LIST_MAX: usize = 64 * 1024;
/// Where the fetcher sees the registry credentials' Secret.
const AUTH_DIR: &str = "/tenon/registry-auth";

/// One file the fetcher writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// Path relative to the pod's `/` (`tenon/ws/<volume>/...`).
    pub path: String,
    pub digest: String,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, whole seconds (as the tar would set it).
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// The shared cache's registry as tenon reaches it (`--cache-repo` and its flags).
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    pub url: String,
    /// Never write (`--cache-read-only`).
    pub read_only: bool,
    /// Credentials, CA, timeouts.
    pub config: ClientConfig,
}

/// The data plane's settings and its client (the registry as tenon reaches it).
pub struct DataPlane {
    client: Client,
    /// The repository as task pods reach it.
    pod_url: String,
    image: String,
    secret: Option<String>,
    /// Missing blobs may be pushed.
    push: bool,
    /// A registry fault turned the data plane off for this process (one warning).
    down: std::sync::atomic::AtomicBool,
}

/// What the data plane took over for one attempt.
#[derive(Default)]
pub(super) struct Offload {
    /// Host paths left out of the tar.
    pub hosts: BTreeSet<PathBuf>,
    pub list: Vec<Fetch>,
    pub bytes: u64,
    /// Bytes tenon pushed because the registry lacked them.
    pub pushed: u64,
}

impl DataPlane {
    /// The data plane of these flags, if they ask for one: `--k8s-tenon-image` and a registry
    /// (`--k8s-data-registry` for pods, `--cache-repo` for tenon; each defaults to the other).
    pub fn from_flags(args: &KubeArgs, remote: Option<&RegistryAccess>) -> Result<Option<Self>, String> {
        let pod_flag = args.data_registry.clone().filter(|u| !u.trim().is_empty());
        let host = remote.map(|r| r.url.clone()).or_else(|| pod_flag.clone());
        let Some(image) = args.tenon_image.clone().filter(|i| !i.trim().is_empty()) else {
            if pod_flag.is_some() || args.data_registry_secret.is_some() {
                return Err("--k8s-data-registry and --k8s-data-registry-secret need --k8s-tenon-image (the image with tenon for the init container that fetches the inputs)".into());
            }
            return Ok(None);
        };
        let Some(host) = host else {
            return Err("--k8s-tenon-image needs a registry: --cache-repo or --k8s-data-registry".into());
        };
        let repo = RepoUrl::parse(&host).map_err(|e| format!("--cache-repo: {e}"))?;
        let pod_url =
            RepoUrl::parse(pod_flag.as_deref().unwrap_or(&host)).map_err(|e| format!("--k8s-data-registry: {e}"))?;
        let cfg = match remote {
            Some(r) => r.config.clone(),
            None => ClientConfig { credentials: CredentialSource::DockerConfig, ..ClientConfig::default() },
        };
        let read_only = remote.is_some_and(|r| r.read_only) || repo.read_only == Some(true);
        let client = Client::new(repo, cfg).map_err(|e| format!("the data plane's registry {host}: {e}"))?;
        Ok(Some(DataPlane {
            client,
            pod_url: pod_url.to_string(),
            image,
            secret: args.data_registry_secret.clone(),
            push: !read_only,
            down: Default::default(),
        }))
    }

    /// Decide which files of the copied volumes the init container fetches (see the module
    /// doc). Never files of a Secret: those never leave tenon but through the API server.
    pub(super) async fn offload(&self, req: &TaskRunRequest, plan: &PodPlan) -> Offload {
        let mut out = Offload::default();
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return out;
        }
        let secret_hosts = secret_hosts(req);
        let mut candidates = Vec::new();
        for c in plan.copied.iter().filter(|c| !secret_hosts.contains(&c.host) && c.host.is_dir()) {
            if let Err(e) = large_files(&c.host, &c.stage, &mut candidates) {
                tracing::warn!(dir = %c.host.display(), error = %e, "data plane: cannot list the workspace; it goes through the tar");
            }
        }
        let mut list_bytes = 2;
        for (host, path, meta) in candidates {
            let digest = match hash_unchanged(&host, &meta).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(file = %host.display(), error = %e, "data plane: not offloaded");
                    continue;
                }
            };
            let f = Fetch {
                path,
                digest: digest.to_string(),
                size: meta.len(),
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
                uid: meta.uid(),
                gid: meta.gid(),
            };
            list_bytes += serde_json::to_string(&f).map(|s| s.len() + 1).unwrap_or(LIST_MAX);
            if list_bytes > LIST_MAX {
                break;
            }
            match self.ensure(&digest, &host, meta.len()).await {
                Ok(None) => continue,
                Ok(Some(pushed)) => {
                    out.pushed += pushed;
                    out.bytes += f.size;
                    out.hosts.insert(host);
                    out.list.push(f);
                }
                Err(e) => {
                    self.down.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(registry = %self.client.repo(), error = %e, "data plane: the registry failed; inputs go through the API server");
                    break;
                }
            }
        }
        out
    }

    /// Make sure the registry has the blob: the bytes pushed (0 when it had it), or `None`
    /// when it lacks it and may not be written (the file then goes through the tar).
    async fn ensure(&self, digest: &Digest, host: &Path, size: u64) -> Result<Option<u64>, crate::oci::OciError> {
        match self.client.blob_exists(digest).await? {
            Some(n) if n == size => return Ok(Some(0)),
            _ if !self.push => return Ok(None),
            _ => {}
        }
        self.client.push_blob_file(digest, host, &[]).await?;
        Ok(Some(size))
    }

    /// Add the fetcher to the pod: an init container of tenon's image that writes the listed
    /// files into the copied volumes (mounted where the holder sees them).
    pub(super) fn add_fetcher(
        &self,
        pod: &mut Pod,
        plan: &PodPlan,
        list: &[Fetch],
        pull_policy: &str,
    ) -> Result<(), String> {
        let list = serde_json::to_string(list).map_err(|e| format!("cannot encode the fetch list: {e}"))?;
        let mut mounts: Vec<Value> =
            plan.copied.iter().map(|c| json!({"name": c.volume, "mountPath": format!("/{}", c.stage)})).collect();
        let mut args = vec!["pod-fetch".to_string(), "--registry".into(), self.pod_url.clone()];
        let spec = pod.spec.as_mut().ok_or("the pod has no spec")?;
        if let Some(secret) = &self.secret {
            let vol = json!({"name": "tenon-registry-auth", "secret": {"secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}});
            spec.volumes.get_or_insert_with(Vec::new).push(serde_json::from_value(vol).map_err(|e| e.to_string())?);
            mounts.push(json!({"name": "tenon-registry-auth", "mountPath": AUTH_DIR, "readOnly": true}));
            args.extend(["--credentials-file".into(), format!("{AUTH_DIR}/config.json")]);
        }
        args.extend(["--list".into(), list]);
        let c = json!({
            "name": FETCH,
            "image": self.image,
            "imagePullPolicy": pull_policy,
            "args": args,
            "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        });
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(serde_json::from_value(c).map_err(|e| format!("invalid fetcher container: {e}"))?);
        Ok(())
    }
}

/// After the steps, before written-back workspaces are read: each fetched input of such a
/// workspace that still holds exactly the fetched blob (the holder hashes it in the pod) is
/// removed from the pod, so it does not travel back through the API; returns their pod paths
/// (`tenon/ws/...`). The host copy is that blob already. A file changed, replaced by a
/// symlink or gone is read back as usual. An error means some files may have been removed
/// without tenon learning which: the read-back cannot be trusted, and the attempt fails
/// rather than delete a host file that is only missing from the pod.
pub(super) async fn drop_unchanged(
    pods: &Api<Pod>,
    pod: &str,
    plan: &PodPlan,
    list: &[Fetch],
) -> Result<BTreeSet<String>, String> {
    let stages: Vec<String> = plan.copied.iter().filter(|c| c.write_back).map(|c| format!("{}/", c.stage)).collect();
    let mine: Vec<&Fetch> = list.iter().filter(|f| stages.iter().any(|s| f.path.starts_with(s.as_str()))).collect();
    if mine.is_empty() {
        return Ok(BTreeSet::new());
    }
    // the script goes in on stdin (no length limit; an exec here cannot close stdin, so the
    // shell is given exactly its length to read); a path only ever appears single-quoted,
    // and the output names files by their index, whatever their names hold
    let mut script = String::new();
    for (i, f) in mine.iter().enumerate() {
        let p = format!("'{}'", format!("/{}", f.path).replace('\'', "'\\''"));
        let hex = f.digest.strip_prefix("sha256:").unwrap_or(&f.digest);
        script.push_str(&format!(
            "if [ -f {p} ] && [ ! -L {p} ] && [ \"$(sha256sum < {p})\" = \"{hex}  -\" ]; then rm -f {p} && echo {i}; fi\n"
        ));
    }
    script.push_str("echo end\n");
    let started = std::time::Instant::now();
    // hashing runs at hundreds of MB/s; a holder far slower than 20 MB/s is broken
    let bytes: u64 = mine.iter().map(|f| f.size).sum();
    let limit = std::time::Duration::from_secs(60 + bytes / (20 << 20));
    let check = super::transfer::exec(pods, pod, HOLDER, read_exactly(script.len()), Some(script.as_bytes()));
    let out = tokio::time::timeout(limit, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {limit:?}")))
        .map_err(|e| format!("cannot compare the fetched inputs with the registry's: {e}"))?;
    let out = String::from_utf8_lossy(&out);
    if out.lines().last() != Some("end") {
        return Err("the comparison of the fetched inputs did not finish".into());
    }
    let kept: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .filter_map(|i| mine.get(i).map(|f| f.path.clone()))
        .collect();
    tracing::debug!(
        pod,
        unchanged = kept.len(),
        of = mine.len(),
        ms = started.elapsed().as_millis() as u64,
        "data plane: unchanged inputs not read back"
    );
    Ok(kept)
}

/// `sh` running the script that is the next `n` bytes of its stdin.
fn read_exactly(n: usize) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("head -c {n} | sh")]
}

/// Why the fetcher failed, if it did: its exit code and message (the tail of its log).
pub(super) fn fetch_failed(st: &k8s_openapi::api::core::v1::PodStatus, pod: &str) -> Option<String> {
    let c = st.init_container_statuses.iter().flatten().find(|c| c.name == FETCH)?;
    let t = c.state.as_ref()?.terminated.as_ref().filter(|t| t.exit_code != 0)?;
    let msg = t.message.as_deref().unwrap_or_default().trim();
    Some(format!(
        "pod {pod}: the init container {FETCH} could not fetch the inputs from the registry (exit code {}): {}",
        t.exit_code,
        if msg.is_empty() { "no message" } else { msg }
    ))
}

/// The host directories of Secret workspaces and Secret volumes.
fn secret_hosts(req: &TaskRunRequest) -> BTreeSet<PathBuf> {
    let mut out: BTreeSet<PathBuf> =
        req.workspaces.iter().filter(|w| w.kind.starts_with("secret")).filter_map(|w| w.path.clone()).collect();
    for v in req.spec.volumes.iter().filter(|v| v.get("secret").is_some()) {
        if let Some(h) = v.get("name").and_then(Value::as_str).and_then(|n| req.volumes.get(n)) {
            out.insert(h.clone());
        }
    }
    out
}

/// The regular files of at least [`MIN_SIZE`] under `root`, as the tar would list them
/// ([`walk_tree`]): (host path, pod path, metadata).
fn large_files(root: &Path, stage: &str, out: &mut Vec<(PathBuf, String, std::fs::Metadata)>) -> std::io::Result<()> {
    walk_tree(root, root, &mut |p, rel, meta| {
        // a name that is not UTF-8 stays in the tar (the list is JSON text)
        if meta.is_file() && meta.len() >= MIN_SIZE && p.to_str().is_some() {
            out.push((p, format!("{stage}/{rel}"), meta));
        }
        Ok(())
    })
}

/// The file's SHA-256, if it is still the file `meta` describes before and after it is read.
async fn hash_unchanged(host: &Path, meta: &std::fs::Metadata) -> std::io::Result<Digest> {
    let (host, meta) = (host.to_path_buf(), meta.clone());
    tokio::task::spawn_blocking(move || {
        let same = |m: &std::fs::Metadata| {
            m.dev() == meta.dev()
                && m.ino() == meta.ino()
                && m.len() == meta.len()
                && (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
                    == (meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec())
        };
        let hex = crate::hash::hash_file(&host)?;
        if !same(&std::fs::symlink_metadata(&host)?) {
            return Err(std::io::Error::other(format!("{} changed while it was hashed", host.display())));
        }
        Digest::parse(&format!("sha256:{hex}")).map_err(std::io::Error::other)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `tenon pod-fetch`: write every listed file under `/`, each streamed from the registry and
/// verified (SHA-256 and size) as it arrives; a file is renamed into place only once it
/// matched. Memory stays bounded by the download's chunk queue.
pub async fn pod_fetch(registry: &str, credentials: Option<&Path>, list: &str) -> Result<(), String> {
    let list: Vec<Fetch> = serde_json::from_str(list).map_err(|e| format!("--list: not a fetch list: {e}"))?;
    let repo = RepoUrl::parse(registry).map_err(|e| format!("--registry: {e}"))?;
    let credentials = match credentials {
        Some(f) => CredentialSource::File(f.to_path_buf()),
        None => CredentialSource::Anonymous,
    };
    let client =
        Client::new(repo, ClientConfig { credentials, ..ClientConfig::default() }).map_err(|e| e.to_string())?;
    for f in &list {
        fetch_one(&client, f, Path::new("/")).await.map_err(|e| format!("{}: {e}", f.path))?;
    }
    Ok(())
}

async fn fetch_one(client: &Client, f: &Fetch, root: &Path) -> Result<(), String> {
    let rel = Path::new(&f.path);
    let safe = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))
        && f.path.starts_with("tenon/")
        && rel.file_name().is_some();
    if !safe {
        return Err("not a path under tenon/ without `..`".into());
    }
    let digest = Digest::parse(&f.digest).map_err(|e| e.to_string())?;
    let dest = root.join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let started = Instant::now();
    client.pull_blob_to_file(&digest, Some(f.size), &dest).await.map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dest.display()))?;
    let when = std::time::UNIX_EPOCH + Duration::from_secs(f.mtime.max(0) as u64);
    std::fs::File::options()
        .write(true)
        .open(&dest)
        .and_then(|h| h.set_modified(when))
        .map_err(|e| format!("cannot set the time of {}: {e}", dest.display()))?;
    // as tar run by root keeps the owner; a non-root fetcher keeps its own
    let _ = std::os::unix::fs::chown(&dest, Some(f.uid), Some(f.gid));
    let secs = started.elapsed().as_secs_f64();
    println!("fetched {} ({} bytes, {}) in {secs:.1} s", f.path, f.size, f.digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_plane_needs_both_an_image_and_a_registry() {
        let remote =
            |url: &str, read_only| RegistryAccess { url: url.into(), read_only, config: ClientConfig::default() };
        let args = |image: Option<&str>, data: Option<&str>| KubeArgs {
            tenon_image: image.map(String::from),
            data_registry: data.map(String::from),
            ..Default::default()
        };
        let cache = remote("oci+http://127.0.0.1:5000/tenon/cache", false);
        assert!(DataPlane::from_flags(&args(None, None), Some(&cache)).unwrap().is_none(), "off without an image");
        let e = DataPlane::from_flags(&args(None, Some("oci+http://10.0.0.1:5000/x")), None).err().unwrap();
        assert!(e.contains("need --k8s-tenon-image"), "{e}");
        let e = DataPlane::from_flags(&args(Some("tenon:1"), None), None).err().unwrap();
        assert!(e.contains("needs a registry"), "{e}");
        let d = DataPlane::from_flags(&args(Some("tenon:1"), None), Some(&cache)).unwrap().unwrap();
        assert_eq!((d.pod_url.as_str(), d.push), ("oci+http://127.0.0.1:5000/tenon/cache", true));
        let pods = Some("oci+http://10.0.0.1:5000/tenon/cache");
        let d = DataPlane::from_flags(&args(Some("tenon:1"), pods), Some(&remote(&cache.url, true))).unwrap().unwrap();
        assert_eq!((d.pod_url.as_str(), d.push), ("oci+http://10.0.0.1:5000/tenon/cache", false), "read-only: no push");
        let d = DataPlane::from_flags(&args(Some("tenon:1"), pods), None).unwrap().unwrap();
        assert_eq!(d.client.repo().to_string(), "oci+http://10.0.0.1:5000/tenon/cache", "one URL for both");
        let e = DataPlane::from_flags(&args(Some("tenon:1"), Some("http://x/y")), Some(&cache)).err().unwrap();
        assert!(e.contains("--k8s-data-registry"), "{e}");
    }

    #[test]
    fn only_large_regular_files_with_utf8_names_go_through_the_registry() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let big = vec![7u8; MIN_SIZE as usize];
        std::fs::create_dir_all(root.join("d/.git")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("d/model.bin"), &big).unwrap();
        std::fs::write(root.join("d/.git/pack"), &big).unwrap();
        std::fs::write(root.join(".git/pack"), &big).unwrap();
        std::fs::write(root.join("small"), &big[1..]).unwrap();
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad-\xff")), &big).unwrap();
        std::os::unix::fs::symlink("d/model.bin", root.join("link")).unwrap();
        let mut out = Vec::new();
        large_files(root, "tenon/ws/ws-a", &mut out).unwrap();
        let paths: Vec<&str> = out.iter().map(|(_, p, _)| p.as_str()).collect();
        // .git only at the top is left out, as the tar leaves it out
        assert_eq!(paths, ["tenon/ws/ws-a/d/.git/pack", "tenon/ws/ws-a/d/model.bin"]);
    }

    #[test]
    fn the_fetcher_refuses_paths_outside_the_volumes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = Client::new(RepoUrl::parse("oci+http://127.0.0.1:9/x").unwrap(), ClientConfig::default()).unwrap();
        let t = tempfile::tempdir().unwrap();
        for path in ["tenon/../etc/passwd", "/tenon/ws/a", "etc/passwd", "tenon/ws/./a/../../b", "tenon"] {
            let f = Fetch {
                path: path.into(),
                digest: format!("sha256:{}", "0".repeat(64)),
                size: 1,
                mode: 0o644,
                mtime: 0,
                uid: 0,
                gid: 0,
            };
            let e = rt.block_on(fetch_one(&client, &f, t.path())).unwrap_err();
            assert!(e.contains("not a path under tenon/"), "{path}: {e}");
        }
    }
}
