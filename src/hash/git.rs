//! Digests git already names: a tracked file whose index entry shows it unmodified takes
//! its SHA-256 from a memo `git blob id -> sha256` kept in the store, instead of being read.
//!
//! An index entry is trusted only as git itself would trust it, and stricter:
//! - its stat data (size, mtime and ctime to the nanosecond, inode, file type and executable
//!   bit) must equal the file's;
//! - it must not be racily clean: an entry whose mtime or ctime is not older than the index
//!   file's own mtime may have been modified again within the same timestamp tick (when the
//!   file lies on another filesystem than the index, the margin is
//!   [`super::RACY_WINDOW_NS`], for filesystems with coarser timestamps);
//! - entries flagged assume-unchanged (`CE_VALID`), skip-worktree or intent-to-add, and
//!   conflicted (staged > 0) entries are never trusted: git does not look at those files;
//! - a memo entry is recorded only after the file was read and its bytes hashed to the entry's
//!   blob id (so the memo maps a blob to the SHA-256 of the blob's own bytes), and used only
//!   for a file of exactly the blob's size: a checkout conversion (CRLF, `ident`) changes the
//!   size. Repositories configuring filter drivers other than Git LFS, or using
//!   `working-tree-encoding`, are not read from git at all (every file is hashed as usual).
//!
//! Anything else (untracked, ignored, modified, racy files) goes through the stat cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha1::Digest as _;

use super::Stat;

/// What the store remembers about a git blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDigest {
    /// The digest tenon uses for a file with this blob's content (SHA-256 hex): of the blob's
    /// bytes, or, when the blob is a Git LFS pointer, the pointer's oid.
    pub sha256: String,
    /// Bytes `sha256` is of: the blob's length, or the LFS object's size.
    pub size: u64,
    /// The blob is a Git LFS pointer.
    pub lfs: bool,
}

/// One stage-0 index entry, relative to the hashed root.
#[derive(Debug, Clone)]
struct Facts {
    oid: git2::Oid,
    size: u32,
    ino: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    exec: bool,
    /// Not flagged assume-unchanged, skip-worktree or intent-to-add, not conflicted, a
    /// regular file.
    trusted: bool,
}

/// The index of the git work tree a hashed root lies in, as seen when hashing started.
pub struct GitView {
    entries: HashMap<String, Facts>,
    /// Entries with an mtime or ctime at or after this are racily clean (for files on the
    /// index's filesystem; [`super::RACY_WINDOW_NS`] earlier for files on another one).
    racy_from_ns: i64,
    index_dev: u64,
    memo: HashMap<git2::Oid, BlobDigest>,
    learned: Mutex<Vec<(String, BlobDigest)>>,
    /// For reading pointer blobs of smudged Git LFS files (rare: a memo miss).
    repo: Mutex<git2::Repository>,
}

fn time_ns(t: git2::IndexTime) -> i64 {
    // the index keeps 32-bit unsigned seconds
    (t.seconds() as u32 as i64) * 1_000_000_000 + t.nanoseconds() as i64
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    Stat::of(m).mtime_ns
}

/// Why a repository is not read from git (its checkouts may transform blob bytes in ways
/// that keep their size), or `None` when it may be.
fn unsupported(repo: &git2::Repository, index: &git2::Index) -> Option<String> {
    let cfg = repo.config().ok()?;
    if let Ok(mut it) = cfg.entries(Some(r"^filter\..*\.(clean|smudge|process)$")) {
        while let Some(Ok(e)) = it.next() {
            let name = e.name().unwrap_or("");
            if name.strip_prefix("filter.").and_then(|r| r.rsplit_once('.')).map(|(d, _)| d) != Some("lfs") {
                return Some(format!("filter driver {name} is configured"));
            }
        }
    }
    let mut texts: Vec<Vec<u8>> = Vec::new();
    for e in index.iter() {
        if e.path.rsplit(|b| *b == b'/').next() == Some(b".gitattributes") {
            if let Ok(b) = repo.find_blob(e.id) {
                texts.push(b.content().to_vec());
            }
            if let Some(w) = repo.workdir() {
                texts.push(std::fs::read(w.join(String::from_utf8_lossy(&e.path).as_ref())).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read(repo.path().join("info/attributes")).unwrap_or_default());
    if let Ok(p) = cfg.get_path("core.attributesFile") {
        texts.push(std::fs::read(p).unwrap_or_default());
    }
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(x) = xdg {
        texts.push(std::fs::read(x.join("git/attributes")).unwrap_or_default());
    }
    if texts.iter().any(|t| t.windows(21).any(|w| w == b"working-tree-encoding")) {
        return Some("working-tree-encoding is used".into());
    }
    None
}

/// A stage-0 regular file not flagged assume-unchanged (`CE_VALID`), skip-worktree or
/// intent-to-add: git itself looks at such a file (a conflicted path, with several
/// entries, is not trusted either; [`GitView::open`] sees to that).
fn trusted_entry(e: &git2::IndexEntry) -> bool {
    let stage = (e.flags >> 12) & 3;
    let assume_valid = e.flags & 0x8000 != 0;
    let skip_or_intent = e.flags_extended & (0x4000 | 0x2000) != 0;
    let regular = e.mode == 0o100644 || e.mode == 0o100755;
    stage == 0 && !assume_valid && !skip_or_intent && regular
}

impl GitView {
    /// The index entries below `root` (a directory, or a single file), when `root` lies in
    /// a git work tree whose index can be read consistently. `None` means: hash as usual.
    pub fn open(root: &Path) -> Option<GitView> {
        let repo = git2::Repository::discover(root).ok()?;
        let workdir = std::fs::canonicalize(repo.workdir()?).ok()?;
        let meta = std::fs::symlink_metadata(root).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
        let croot = std::fs::canonicalize(root).ok()?;
        let rel = croot.strip_prefix(&workdir).ok()?.to_str()?.to_string();
        let index_path = repo.path().join("index");
        let before = std::fs::metadata(&index_path).ok()?;
        let index = repo.index().ok()?;
        let after = std::fs::metadata(&index_path).ok()?;
        if Stat::of(&before) != Stat::of(&after) {
            tracing::debug!("the git index changed while read: inputs are hashed");
            return None;
        }
        if let Some(why) = unsupported(&repo, &index) {
            tracing::debug!(repo = %workdir.display(), "inputs are hashed, not read from git: {why}");
            return None;
        }
        let racy_from_ns = mtime_ns(&before);
        let index_dev = Stat::of(&before).dev;
        let mut entries = HashMap::new();
        for e in index.iter() {
            let Ok(path) = String::from_utf8(e.path.clone()) else { continue };
            let key = if meta.is_dir() {
                if rel.is_empty() {
                    path
                } else {
                    match path.strip_prefix(&rel).and_then(|p| p.strip_prefix('/')) {
                        Some(p) => p.to_string(),
                        None => continue,
                    }
                }
            } else if path == rel {
                croot.file_name()?.to_str()?.to_string()
            } else {
                continue;
            };
            let facts = Facts {
                oid: e.id,
                size: e.file_size,
                ino: e.ino,
                mtime_ns: time_ns(e.mtime),
                ctime_ns: time_ns(e.ctime),
                exec: e.mode == 0o100755,
                trusted: trusted_entry(&e),
            };
            // a conflicted path has several entries: none of them is trusted
            match entries.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(facts);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    o.get_mut().trusted = false;
                }
            }
        }
        Some(GitView {
            entries,
            racy_from_ns,
            index_dev,
            memo: HashMap::new(),
            learned: Mutex::new(Vec::new()),
            repo: Mutex::new(repo),
        })
    }

    /// Whether `rel` is tracked (has an index entry).
    pub fn tracked(&self, rel: &str) -> bool {
        self.entries.contains_key(rel)
    }

    /// Blob ids of the trusted entries: the memo rows worth loading.
    pub fn blob_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.values().filter(|f| f.trusted).map(|f| f.oid.to_string()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Use these memo rows (blob id -> digest), as the store has them.
    pub fn set_memo(&mut self, memo: HashMap<String, BlobDigest>) {
        self.memo = memo.into_iter().filter_map(|(k, v)| Some((git2::Oid::from_str(&k).ok()?, v))).collect();
    }

    /// Memo rows learned while hashing, to persist.
    pub fn take_learned(&self) -> Vec<(String, BlobDigest)> {
        self.learned.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
    }

    /// The blob id of `rel` when its index entry is trusted and shows the file (with stat
    /// `st`, executable bit `exec`) unmodified, not racily.
    pub fn clean(&self, rel: &str, st: &Stat, exec: bool) -> Option<git2::Oid> {
        let f = self.entries.get(rel)?;
        let same = f.trusted
            && f.size == st.size as u32
            && f.ino == st.ino as u32
            && f.mtime_ns == st.mtime_ns
            && f.ctime_ns == st.ctime_ns
            && f.exec == exec;
        // a file on another filesystem than the index may have coarser timestamps
        let from = self.racy_from_ns - if st.dev == self.index_dev { 0 } else { super::RACY_WINDOW_NS };
        let racy = f.mtime_ns >= from || f.ctime_ns >= from;
        (same && !racy).then_some(f.oid)
    }

    /// The blob id of `rel`'s index entry, trusted or not.
    pub fn blob_of(&self, rel: &str) -> Option<git2::Oid> {
        self.entries.get(rel).map(|f| f.oid)
    }

    pub fn memo(&self, oid: &git2::Oid) -> Option<&BlobDigest> {
        self.memo.get(oid)
    }

    pub fn learn(&self, oid: git2::Oid, d: BlobDigest) {
        if let Ok(mut l) = self.learned.lock() {
            l.push((oid.to_string(), d));
        }
    }

    /// When blob `oid` is a Git LFS pointer: its (oid, size).
    pub fn pointer_blob(&self, oid: git2::Oid) -> Option<(String, u64)> {
        let repo = self.repo.lock().ok()?;
        let odb = repo.odb().ok()?;
        let (len, kind) = odb.read_header(oid).ok()?;
        if kind != git2::ObjectType::Blob || len as u64 > super::lfs::MAX_POINTER_BYTES {
            return None;
        }
        let obj = odb.read(oid).ok()?;
        super::lfs::lfs_pointer(obj.data())
    }
}

/// What the shared cache's memo of a repository is about (`--cache-repo`): the work tree
/// `dir` lies in, read as [`GitView::open`] reads it.
#[derive(Debug, Clone)]
pub struct MemoScope {
    /// Tree ids of `HEAD` and of its first-parent ancestors, newest first: the memo is
    /// published under `HEAD`'s, and looked up under each in turn (a new commit shares
    /// most blobs with its parent).
    pub trees: Vec<String>,
    /// Blob ids of the index's trusted entries: the memo rows worth having.
    pub blobs: Vec<String>,
}

/// The memo scope of the work tree `dir` lies in, with at most `depth` trees; `None` when
/// `dir` is not in a work tree with a commit whose files tenon may read from git.
pub fn memo_scope(dir: &Path, depth: usize) -> Option<MemoScope> {
    let repo = git2::Repository::discover(dir).ok()?;
    repo.workdir()?;
    let index = repo.index().ok()?;
    if unsupported(&repo, &index).is_some() {
        return None;
    }
    let mut blobs: Vec<String> = index.iter().filter(trusted_entry).map(|e| e.id.to_string()).collect();
    blobs.sort_unstable();
    blobs.dedup();
    let mut trees = Vec::new();
    let mut commit = repo.head().ok()?.peel_to_commit().ok();
    while let Some(c) = commit.take() {
        if trees.len() >= depth {
            break;
        }
        trees.push(c.tree_id().to_string());
        commit = c.parent(0).ok();
    }
    (!trees.is_empty()).then_some(MemoScope { trees, blobs })
}

/// The rows of `rows` that may be trusted in the repository `dir` lies in: a Git LFS row's
/// blob must be a pointer with that oid and size. Another row is used only for a file whose
/// size is the row's (and whose clean index entry names the blob), so its size needs no
/// check here. Rows read from elsewhere are filtered so before they are stored (the SHA-256
/// itself cannot be checked without reading the file: that is what a signature on the memo
/// is for).
pub fn consistent_rows(dir: &Path, rows: Vec<(String, BlobDigest)>) -> Vec<(String, BlobDigest)> {
    let Some(repo) = git2::Repository::discover(dir).ok() else { return Vec::new() };
    let Ok(odb) = repo.odb() else { return Vec::new() };
    rows.into_iter()
        .filter(|(blob, d)| {
            if !d.lfs {
                return true;
            }
            let Ok(oid) = git2::Oid::from_str(blob) else { return false };
            let Ok((len, kind)) = odb.read_header(oid) else { return false };
            kind == git2::ObjectType::Blob
                && len as u64 <= super::lfs::MAX_POINTER_BYTES
                && odb
                    .read(oid)
                    .ok()
                    .and_then(|o| super::lfs::lfs_pointer(o.data()))
                    .is_some_and(|(oid, size)| oid == d.sha256 && size == d.size)
        })
        .collect()
}

/// Git's blob id of a byte stream, fed as it is read.
pub struct BlobHasher(sha1::Sha1);

impl BlobHasher {
    pub fn new(len: u64) -> Self {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        BlobHasher(h)
    }
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub fn finish(self) -> Option<git2::Oid> {
        git2::Oid::from_bytes(&self.0.finalize()).ok()
    }
}
