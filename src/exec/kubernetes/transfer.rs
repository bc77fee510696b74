//! Moving bytes between the host and a pod: the upload of the TaskRun's files, the download of
//! results and workspaces, and the write-back of what the pod changed.
//!
//! Both directions stream with bounded memory, whatever the size of the workspaces: the upload
//! is a tar generated on the fly into the exec's stdin (its exact size is computed beforehand
//! from the files' metadata, since the pod reads exactly that many bytes), the download a tar
//! unpacked to disk as it arrives from the exec's stdout.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use tokio_util::io::SyncIoBridge;

use crate::oci::tario::Exact;

use super::*;

/// Size of the pipes between tenon and an exec's streams, and of the chunks written to them
/// (each chunk is one websocket message).
const CHUNK: usize = 256 * 1024;
/// At most this much of a command's stderr is kept for its error message.
const STDERR_KEPT: usize = 64 * 1024;

/// What the upload sends: the tekton directories, the scripts and every copied volume, as a
/// list of tar entries whose exact size is known; plus, per copied volume (its stage path), the
/// files uploaded (so the write-back can tell deletions).
#[derive(Clone)]
pub(super) struct Upload {
    entries: Arc<[Entry]>,
    /// Bytes of the tar the entries make.
    pub(super) size: u64,
    pub(super) manifests: Manifests,
}

struct Entry {
    /// Path in the archive (relative to the pod's `/`).
    path: String,
    body: Body,
}

enum Body {
    Dir,
    /// A symlink made up by tenon (`tekton/steps/<index>`).
    Link(String),
    /// A script.
    Script(String),
    /// A file, directory or symlink of a host directory, as it was when the upload was
    /// planned (the send checks the file is still exactly that).
    Host {
        source: PathBuf,
        meta: std::fs::Metadata,
        link: Option<PathBuf>,
    },
}

/// Plan the upload: every entry and the tar's exact size (no file is read). The files of
/// `fetched` (host paths) are left out: the pod fetches them from a registry ([`super::registry`]);
/// they count as uploaded for the write-back.
pub(super) fn upload_plan(plan: &PodPlan, fetched: &BTreeSet<PathBuf>) -> Result<Upload, String> {
    let mut entries = Vec::new();
    let dir = |path: String| Entry { path, body: Body::Dir };
    for d in ["tekton/results", "tekton/steps", "tekton/home", "tekton/scripts", "tekton/run"] {
        entries.push(dir(d.into()));
    }
    for (i, s) in plan.steps.iter().enumerate() {
        entries.push(dir(format!("tekton/steps/{}/results", s.cname)));
        entries.push(Entry { path: format!("tekton/steps/{i}"), body: Body::Link(s.cname.clone()) });
    }
    for (file, body) in &plan.scripts {
        entries.push(Entry { path: format!("tekton/scripts/{file}"), body: Body::Script(body.clone()) });
    }
    let mut manifests = BTreeMap::new();
    for c in &plan.copied {
        let mut files = BTreeSet::new();
        if c.host.is_dir() {
            add_tree(&mut entries, &c.host, &c.stage, fetched, &mut files)
                .map_err(|e| format!("cannot read workspace {}: {e}", c.host.display()))?;
        }
        manifests.insert(c.stage.clone(), files);
    }
    let mut up = Upload { entries: entries.into(), size: 0, manifests };
    let mut counter = Counter(0);
    write_tar(&up.entries, &mut counter, false).map_err(|e| format!("cannot build the upload: {e}"))?;
    up.size = counter.0;
    Ok(up)
}

/// Every entry of a host directory, depth first in name order, a directory before what it
/// holds (`.git` at its top left out, symlinks not followed): `visit(path, relative path,
/// metadata)`.
pub(super) fn walk_tree(
    root: &Path,
    dir: &Path,
    visit: &mut dyn FnMut(PathBuf, String, std::fs::Metadata) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut list: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    list.sort_by_key(|e| e.file_name());
    for e in list {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().to_string();
        if rel == ".git" {
            continue;
        }
        let meta = std::fs::symlink_metadata(&p)?;
        let is_dir = meta.is_dir();
        visit(p.clone(), rel, meta)?;
        if is_dir {
            walk_tree(root, &p, visit)?;
        }
    }
    Ok(())
}

/// The entries of a host directory ([`walk_tree`]) but the files of `fetched`; every
/// non-directory goes into `files`.
fn add_tree(
    entries: &mut Vec<Entry>,
    root: &Path,
    stage: &str,
    fetched: &BTreeSet<PathBuf>,
    files: &mut BTreeSet<String>,
) -> std::io::Result<()> {
    walk_tree(root, root, &mut |source, rel, meta| {
        let ft = meta.file_type();
        if !ft.is_dir() {
            files.insert(rel.clone());
        }
        if fetched.contains(&source) {
            return Ok(());
        }
        let link = if ft.is_symlink() { Some(std::fs::read_link(&source)?) } else { None };
        entries.push(Entry { path: format!("{stage}/{rel}"), body: Body::Host { source, meta, link } });
        Ok(())
    })
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write the tar of `entries`. Without `real`, file contents are zeros of the planned length
/// (for the size); with it, each file is read and must still be what was planned: the same
/// file (device, inode), length, modification and change times before and after it is read.
fn write_tar(entries: &[Entry], w: &mut dyn Write, real: bool) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        match &e.body {
            Body::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_data(&mut h, &e.path, std::io::empty())?;
            }
            Body::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, &e.path, target)?;
            }
            Body::Script(body) => {
                h.set_size(body.len() as u64);
                h.set_mode(0o755);
                b.append_data(&mut h, &e.path, body.as_bytes())?;
            }
            Body::Host { source, meta, link } => {
                h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
                let ft = meta.file_type();
                if let Some(target) = link {
                    b.append_link(&mut h, &e.path, target)?;
                } else if ft.is_file() {
                    if real {
                        let f = PlannedFile::open(source, meta)?;
                        let what = format!("{} changed while it was being uploaded", source.display());
                        b.append_data(&mut h, &e.path, Exact::new(&f.file, meta.len(), what))?;
                        f.check_unchanged()?;
                    } else {
                        b.append_data(&mut h, &e.path, std::io::repeat(0).take(meta.len()))?;
                    }
                } else if ft.is_dir() {
                    b.append_data(&mut h, &e.path, std::io::empty())?;
                } else {
                    use std::os::unix::fs::FileTypeExt;
                    if ft.is_socket() {
                        return Err(std::io::Error::other(format!("{}: a socket cannot be copied", source.display())));
                    }
                    // a fifo or a device: the header only
                    let dev = meta.rdev();
                    h.set_device_major((((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32)?;
                    h.set_device_minor((((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32)?;
                    h.set_size(0);
                    b.append_data(&mut h, &e.path, std::io::empty())?;
                }
            }
        }
    }
    b.finish()
}

/// A host file being sent: it must be the file planned, unchanged, when it is opened and
/// once it has been read (a corrupt tree is never sent).
struct PlannedFile<'a> {
    file: std::fs::File,
    source: &'a Path,
    meta: &'a std::fs::Metadata,
}

impl<'a> PlannedFile<'a> {
    fn open(source: &'a Path, meta: &'a std::fs::Metadata) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(source)?;
        let f = PlannedFile { file, source, meta };
        f.check_unchanged()?;
        Ok(f)
    }

    fn check_unchanged(&self) -> std::io::Result<()> {
        let now = self.file.metadata()?;
        let (a, b) = (self.meta, &now);
        let same = a.dev() == b.dev()
            && a.ino() == b.ino()
            && a.len() == b.len()
            && (a.mtime(), a.mtime_nsec()) == (b.mtime(), b.mtime_nsec())
            && (a.ctime(), a.ctime_nsec()) == (b.ctime(), b.ctime_nsec());
        if same {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "{} changed while it was being uploaded (rerun once it is no longer written)",
                self.source.display()
            )))
        }
    }
}

/// A reader that counts what it yields.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// A writer that refuses to go past `limit` bytes (the pod reads exactly that many).
struct Limited<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.written + b.len() as u64 > self.limit {
            return Err(std::io::Error::other("the upload is larger than planned"));
        }
        let n = self.inner.write(b)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Upload {
    /// Write the tar: exactly [`Upload::size`] bytes, or an error (a file changed).
    fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut w = Limited { inner: w, written: 0, limit: self.size };
        write_tar(&self.entries, &mut w, true)?;
        if w.written != self.size {
            return Err(std::io::Error::other(format!(
                "the upload has {} bytes, not the {} planned",
                w.written, self.size
            )));
        }
        Ok(())
    }

    /// The whole tar in memory: for a small upload that travels in the pod spec.
    pub(super) fn bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(self.size as usize);
        self.write_to(&mut out).map_err(|e| format!("cannot build the upload: {e}"))?;
        Ok(out)
    }

    /// Send the upload into the holder, which unpacks it and then marks the pod ready.
    pub(super) async fn send(&self, pods: &Api<Pod>, pod: &str) -> Result<(), String> {
        let cmd = format!(
            "head -c {} | tar xf - -C / && echo ok > /tekton/run/ready.tmp && mv /tekton/run/ready.tmp /tekton/run/ready",
            self.size
        );
        let me = self.clone();
        let feed = move |w: &mut dyn Write| me.write_to(w);
        let started = Instant::now();
        tracing::debug!(pod, bytes = self.size, "upload started");
        exec_streams(pods, pod, HOLDER, vec!["sh".into(), "-c".into(), cmd], Some(Box::new(feed)), |r| {
            std::io::copy(r, &mut std::io::sink())
        })
        .await?;
        tracing::debug!(pod, bytes = self.size, ms = started.elapsed().as_millis() as u64, "upload sent");
        Ok(())
    }
}

/// Feeds a command's stdin (on a blocking thread).
type Feed = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

/// How an exec's message loop ended: its error, the command's status, its stderr (the first
/// [`STDERR_KEPT`] bytes).
type Pumped = (Result<(), String>, Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>, Vec<u8>);

/// Run a command in a container, streaming: `feed` writes its stdin and `drain` reads its
/// stdout, each on a blocking thread through pipes of [`CHUNK`] bytes, so memory stays bounded
/// whatever the size of the streams. Returns what `drain` returns; a command that fails gives
/// its status and stderr.
///
/// The websocket loop (the `channel.k8s.io` protocol: one channel byte, then the data) is
/// tenon's own rather than kube-rs's `AttachedProcess`, which cuts stdin into 4 KiB messages:
/// stdin goes in messages of up to [`CHUNK`] bytes, about three times faster through the API
/// server. The protocol of these clusters cannot close stdin: the command reads exactly the
/// number of bytes it is told (`head -c N`), and stdin is simply never closed.
pub(super) async fn exec_streams<T: Send + 'static>(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    cmd: Vec<String>,
    feed: Option<Feed>,
    drain: impl FnOnce(&mut dyn Read) -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    use futures::SinkExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message;
    let ap = AttachParams::default().container(container).stdin(feed.is_some()).stdout(true).stderr(true);
    let what = |e: &dyn std::fmt::Display| format!("exec in {pod}/{container}: {e}");
    let req = kube::core::Request::new(pods.resource_url()).exec(pod, cmd, &ap).map_err(|e| what(&e))?;
    let conn = pods.clone().into_client().connect(req).await.map_err(|e| what(&kube_msg(&e)))?;
    let (mut ws_tx, mut ws_rx) = conn.into_stream().split();
    let (stdin_r, stdin_w) = tokio::io::simplex(CHUNK);
    let (stdout_r, mut stdout_w) = tokio::io::simplex(CHUNK);
    let has_stdin = feed.is_some();
    let pump = tokio::spawn(async move {
        let mut stdin = tokio_util::io::ReaderStream::with_capacity(stdin_r, CHUNK);
        let mut stdin_open = has_stdin;
        let (mut status, mut err) = (None, Vec::new());
        let end = loop {
            tokio::select! {
                m = ws_rx.next() => match m {
                    Some(Ok(Message::Binary(b))) if b.len() > 1 => match b[0] {
                        1 => if let Err(e) = stdout_w.write_all(&b[1..]).await {
                            break Err(format!("exec stdout: {e}"));
                        },
                        2 => err.extend_from_slice(&b[1..(1 + STDERR_KEPT.saturating_sub(err.len())).min(b.len())]),
                        3 => {
                            status = serde_json::from_slice(&b[1..]).ok();
                            break Ok(());
                        }
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Err(format!("exec stream: {e}")),
                    None => break Ok(()),
                },
                c = stdin.next(), if stdin_open => match c {
                    Some(Ok(bytes)) => {
                        let mut v = Vec::with_capacity(bytes.len() + 1);
                        v.push(0u8);
                        v.extend_from_slice(&bytes);
                        if let Err(e) = ws_tx.send(Message::binary(v)).await {
                            break Err(format!("exec stdin: {e}"));
                        }
                    }
                    Some(Err(e)) => break Err(format!("exec stdin: {e}")),
                    None => stdin_open = false,
                },
            }
        };
        let _ = stdout_w.shutdown().await;
        (end, status, err) as Pumped
    });
    let writer = async {
        match feed {
            Some(feed) => {
                let w = SyncIoBridge::new(stdin_w);
                tokio::task::spawn_blocking(move || {
                    let mut w = std::io::BufWriter::with_capacity(CHUNK, w);
                    feed(&mut w).and_then(|_| w.flush())
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
            }
            None => Ok(()),
        }
    };
    let stdout = SyncIoBridge::new(stdout_r);
    let reader = tokio::task::spawn_blocking(move || {
        let mut r = std::io::BufReader::with_capacity(CHUNK, stdout);
        let out = drain(&mut r)?;
        // the rest (tar's end padding) must be read for the stream to reach its status
        std::io::copy(&mut r, &mut std::io::sink())?;
        Ok::<_, std::io::Error>(out)
    });
    let fed = writer.await;
    if fed.is_err() {
        // the command waits for bytes that will never come
        pump.abort();
    }
    let (out, pumped) = tokio::join!(reader, pump);
    let (end, st, err) = pumped.unwrap_or_else(|_| (Ok(()), None, Vec::new()));
    let err = String::from_utf8_lossy(&err).trim().to_string();
    if let Some(s) = st.filter(|s| s.status.as_deref() == Some("Failure")) {
        return Err(format!("command in {pod}/{container} failed: {} {err}", s.message.unwrap_or_default()));
    }
    fed.map_err(|e| format!("exec stdin: {e}"))?;
    end?;
    out.map_err(|e| format!("exec stdout: {e}"))?.map_err(|e| format!("exec stdout: {e}"))
}

/// Run a command in a container, feeding `input`; returns stdout (stderr in the error).
pub(super) async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    cmd: Vec<String>,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let feed = input.map(|b| {
        let b = b.to_vec();
        Box::new(move |w: &mut dyn Write| w.write_all(&b)) as Feed
    });
    exec_streams(pods, pod, container, cmd, feed, |r| {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    })
    .await
}

impl KubernetesExecutor {
    /// Read the results, step directories and written-back workspaces of the pod into `dir`,
    /// unpacking the tar as it arrives (the tar crate's unpacking keeps every entry inside
    /// `dir`: no `..`, no absolute path, no write through a symlink).
    pub(super) async fn download(&self, name: &str, plan: &PodPlan, dir: &Path) -> Result<PathBuf, String> {
        let mut cmd = vec!["tar".to_string(), "cf".into(), "-".into(), "-C".into(), "/".into()];
        cmd.push("tekton/results".into());
        cmd.push("tekton/steps".into());
        for c in plan.copied.iter().filter(|c| c.write_back) {
            cmd.push(c.stage.clone());
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let to = dir.to_path_buf();
        let started = Instant::now();
        let bytes = exec_streams(&self.pods, name, HOLDER, cmd, None, move |r| {
            let mut counted = Counted { inner: r, n: 0 };
            let mut ar = tar::Archive::new(&mut counted);
            ar.set_preserve_permissions(true);
            ar.set_overwrite(true);
            ar.unpack(&to).map_err(|e| std::io::Error::other(format!("cannot unpack the pod's files: {e}")))?;
            Ok(counted.n)
        })
        .await?;
        tracing::debug!(pod = name, bytes, ms = started.elapsed().as_millis() as u64, "download unpacked");
        Ok(dir.to_path_buf())
    }
}

/// Apply the pod's copy of a workspace to the host directory: new or changed files are
/// written (unchanged ones are left alone, so parallel tasks writing different files of a
/// shared workspace do not clobber each other), files uploaded and then deleted in the pod
/// are deleted.
pub(super) fn write_back(from: &Path, to: &Path, uploaded: &BTreeSet<String>) -> std::io::Result<()> {
    let mut present = BTreeSet::new();
    if from.is_dir() {
        copy_changed(from, from, to, &mut present)?;
    }
    for rel in uploaded {
        if !present.contains(rel) {
            let p = to.join(rel);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

/// Move the changed files of `dir` (under `root`, the unpacked copy, which is consumed) to
/// the same place under `to`; records every non-directory seen in `present`.
pub(super) fn copy_changed(root: &Path, dir: &Path, to: &Path, present: &mut BTreeSet<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        let dest = to.join(&rel);
        let ft = e.file_type()?;
        if ft.is_dir() {
            // never follow a symlink on the host side: a step could aim it outside the workspace
            if !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::remove_file(&dest);
                std::fs::create_dir_all(&dest)?;
            }
            copy_changed(root, &p, to, present)?;
            continue;
        }
        present.insert(rel.to_string_lossy().to_string());
        if ft.is_symlink() {
            let target = std::fs::read_link(&p)?;
            if std::fs::read_link(&dest).ok().as_ref() != Some(&target) {
                let _ = std::fs::remove_file(&dest);
                std::os::unix::fs::symlink(&target, &dest)?;
            }
            continue;
        }
        let dest_is_file = std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file());
        if dest_is_file && same_content(&p, &dest)? {
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dest);
        move_file(&p, &dest)?;
    }
    Ok(())
}

/// Whether two files hold the same bytes (read in chunks).
fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = read_full(&mut fa, &mut x)?;
        if n != read_full(&mut fb, &mut y)? || x[..n] != y[..n] {
            return Ok(false);
        }
        if n < CHUNK {
            return Ok(true);
        }
    }
}

/// Read until `buf` is full or the end of the file; the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Move an unpacked file to its host place (a rename, or a copy across file systems), keeping
/// its mode; its times become the write-back's, as a write would give.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::rename(from, to).is_err() {
        std::fs::copy(from, to)?;
    }
    let c = std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path; null times mean "now"
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(host: &Path) -> PodPlan {
        PodPlan {
            steps: vec![],
            sidecars: vec![],
            skipped: BTreeSet::new(),
            copied: vec![Copied {
                volume: "ws-a".into(),
                stage: "tenon/ws/ws-a".into(),
                host: host.to_path_buf(),
                write_back: true,
            }],
            claims: vec![],
            scripts: vec![("script-0".into(), "#!/bin/sh\necho hi\n".into())],
        }
    }

    #[test]
    fn the_upload_has_its_planned_size_and_unpacks_to_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let long = "d".repeat(60);
        std::fs::create_dir_all(host.join(&long).join(&long)).unwrap();
        std::fs::create_dir_all(host.join(".git")).unwrap();
        std::fs::write(host.join(".git/HEAD"), "x").unwrap();
        std::fs::write(host.join("empty"), "").unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(host.join(&long).join(&long).join("big.bin"), &big).unwrap();
        std::os::unix::fs::symlink("empty", host.join("link")).unwrap();
        std::os::unix::fs::symlink("x".repeat(150), host.join("longlink")).unwrap();
        let up = upload_plan(&plan_of(&host), &BTreeSet::new()).unwrap();
        let mut bytes = Vec::new();
        up.write_to(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, up.size);
        let out = t.path().join("pod");
        tar::Archive::new(bytes.as_slice()).unpack(&out).unwrap();
        let ws = out.join("tenon/ws/ws-a");
        assert_eq!(std::fs::read(ws.join(&long).join(&long).join("big.bin")).unwrap(), big);
        assert_eq!(std::fs::read(ws.join("empty")).unwrap(), b"");
        assert_eq!(std::fs::read_link(ws.join("link")).unwrap(), Path::new("empty"));
        assert_eq!(std::fs::read_link(ws.join("longlink")).unwrap(), Path::new(&"x".repeat(150)));
        assert!(!ws.join(".git").exists(), ".git is not uploaded");
        assert_eq!(std::fs::read(out.join("tekton/scripts/script-0")).unwrap(), b"#!/bin/sh\necho hi\n");
        let files: Vec<&str> = up.manifests["tenon/ws/ws-a"].iter().map(String::as_str).collect();
        assert_eq!(files, [format!("{long}/{long}/big.bin").as_str(), "empty", "link", "longlink"]);
    }

    #[test]
    fn a_file_that_changes_after_planning_fails_the_upload() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        let f = host.join("model.bin");
        // grown, rewritten in place with the same size, shrunk, replaced, deleted
        type Change = fn(&Path);
        let changes: [(&str, Change); 5] = [
            ("grown", |f| std::fs::OpenOptions::new().append(true).open(f).unwrap().write_all(b"more").unwrap()),
            ("same size", |f| {
                std::thread::sleep(Duration::from_millis(20));
                std::fs::OpenOptions::new().write(true).open(f).unwrap().write_all(b"XXXX").unwrap()
            }),
            ("shrunk", |f| std::fs::OpenOptions::new().write(true).open(f).unwrap().set_len(3).unwrap()),
            ("replaced", |f| {
                std::fs::remove_file(f).unwrap();
                std::fs::write(f, vec![7u8; 100_000]).unwrap()
            }),
            ("deleted", |f| std::fs::remove_file(f).unwrap()),
        ];
        for (what, change) in changes {
            std::fs::write(&f, vec![1u8; 100_000]).unwrap();
            let up = upload_plan(&plan_of(&host), &BTreeSet::new()).unwrap();
            change(&f);
            let mut bytes = Vec::new();
            let e = up.write_to(&mut bytes).expect_err(what);
            assert!(bytes.len() as u64 <= up.size, "{what}: never more than planned");
            if what != "deleted" {
                assert!(e.to_string().contains("changed while it was being uploaded"), "{what}: {e}");
            }
        }
    }

    #[test]
    fn same_content_compares_every_chunk() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let mut x = vec![5u8; CHUNK * 2 + 10];
        std::fs::write(&a, &x).unwrap();
        std::fs::write(&b, &x).unwrap();
        assert!(same_content(&a, &b).unwrap());
        x[CHUNK + 3] = 6;
        std::fs::write(&b, &x).unwrap();
        assert!(!same_content(&a, &b).unwrap());
        std::fs::write(&b, &x[..10]).unwrap();
        assert!(!same_content(&a, &b).unwrap());
    }
}
