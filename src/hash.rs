//! Content hashing: a Merkle digest over a directory tree, fed by a stat cache so an
//! unchanged file is never re-read.
//!
//! An entry is (relative path, kind, executable bit, content digest): renames, mode
//! changes, empty directories and file<->directory swaps all change the root digest.
//! Symlinks hash their target text and are never followed, so nothing outside the tree
//! is read. Files are hashed in parallel (rayon) in 1 MiB chunks, so memory stays bounded
//! whatever the file size. SHA-256 comes from `sha2`, which dispatches to the CPU's SHA
//! extensions at run time when present.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::util::{hex, now_ns, sha256_hex};

pub mod git;
pub mod lfs;

/// Stream a file through SHA-256 with a fixed, per-thread buffer (1 MiB): memory stays
/// bounded whatever the file size, and small files cost no allocation.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    hash_file_stat(path).map(|(d, _)| hex(&d))
}

/// Hash a file and stat the opened file once read (fstat: no second path lookup): the
/// stat the digest is valid for, if nothing changed it while it was read.
fn hash_file_stat(path: &Path) -> std::io::Result<([u8; 32], Stat)> {
    hash_file_read(path, None).map(|r| (r.digest, r.after))
}

/// What reading a file found.
struct Read1 {
    digest: [u8; 32],
    after: Stat,
    /// Its git blob id (when asked for).
    blob: Option<git2::Oid>,
    /// The Git LFS pointer it is, when it is one (asked for with the blob id).
    pointer: Option<(String, u64)>,
}

/// Hash a file; with `blob_len` (the size its stat gave) also compute its git blob id and
/// parse it as a Git LFS pointer when small enough to be one.
fn hash_file_read(path: &Path, blob_len: Option<u64>) -> std::io::Result<Read1> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 1 << 20]);
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut blob = blob_len.map(git::BlobHasher::new);
    let mut small: Vec<u8> = Vec::new();
    let mut total = 0u64;
    BUF.with(|b| -> std::io::Result<()> {
        let mut buf = b.borrow_mut();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
            if let Some(bh) = blob.as_mut() {
                bh.update(&buf[..n]);
                if total + n as u64 <= lfs::MAX_POINTER_BYTES {
                    small.extend_from_slice(&buf[..n]);
                }
            }
            total += n as u64;
        }
    })?;
    let after = Stat::of(&f.metadata()?);
    let whole = blob_len == Some(total);
    let pointer = if whole && total <= lfs::MAX_POINTER_BYTES { lfs::lfs_pointer(&small) } else { None };
    Ok(Read1 { digest: h.finalize().into(), after, blob: blob.filter(|_| whole).and_then(|b| b.finish()), pointer })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One entry of a hashed tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
    /// Content digest (files), target-text digest (symlinks), empty for directories.
    /// A stored output keeps a symlink's target text as the object of that digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Bytes of the object (file content, symlink target text): kept for stored outputs
    /// so a lookup can check an object with one stat; absent in input trees. Not part of
    /// the root digest (the content digest already decides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A hashed tree: its root digest and sorted entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    pub root: String,
    pub entries: Vec<Entry>,
}

impl Tree {
    fn seal(mut entries: Vec<Entry>) -> Tree {
        // paths are unique: an unstable sort gives the one order
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let mut h = Sha256::new();
        h.update(b"tenon-tree-v1\n");
        // one line per entry, "{kind} {exec} {path length}:{path} {digest}\n" (the length
        // prefix leaves no separator ambiguity), hashed in large chunks
        let mut buf = Vec::with_capacity(64 * 1024);
        for e in &entries {
            let kind = match e.kind {
                Kind::File => b'f',
                Kind::Dir => b'd',
                Kind::Symlink => b'l',
            };
            buf.extend_from_slice(&[kind, b' ', b'0' + e.exec as u8, b' ']);
            buf.extend_from_slice(e.path.len().to_string().as_bytes());
            buf.push(b':');
            buf.extend_from_slice(e.path.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(e.digest.as_bytes());
            buf.push(b'\n');
            if buf.len() >= 60 * 1024 {
                h.update(&buf);
                buf.clear();
            }
        }
        h.update(&buf);
        Tree { root: hex(&h.finalize()), entries }
    }
}

/// What the stat cache remembers about one file: its key. Two stats are equal only for
/// the same inode in the same state (any write or metadata change moves `ctime`, which no
/// user can set), so the digest is keyed by the stat alone, wherever the file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// A remembered digest: valid for exactly this stat, recorded at `recorded_ns`, last
/// used by a run at `used_ns` (records unused for [`STAT_RECORD_TTL_NS`] are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRecord {
    pub stat: Stat,
    pub digest: [u8; 32],
    pub recorded_ns: i64,
    pub used_ns: i64,
    /// A hash of the path the file was hashed at: of the records of one path only the
    /// newest is kept (older ones describe content the path no longer has).
    pub path_hash: u64,
}

/// A file modified this close to the moment its digest was recorded may have been
/// modified again within the same timestamp tick: such a record is not trusted (git's
/// "racy clean" rule). Two seconds covers filesystems with coarse timestamps.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// A record no run has used for this long is forgotten (its file changed or is gone, or
/// its repository is no longer built with this store; forgetting only costs a re-hash).
pub const STAT_RECORD_TTL_NS: i64 = 14 * 86_400 * 1_000_000_000;

/// A used record's `used_ns` is refreshed (which rewrites the cache) at most this often.
const STAT_REFRESH_NS: i64 = 86_400 * 1_000_000_000;

impl StatRecord {
    /// Whether this record proves the file with stat `now` still has `digest`.
    pub fn trusted_for(&self, now: &Stat) -> bool {
        self.stat == *now
            && self.stat.mtime_ns < self.recorded_ns - RACY_WINDOW_NS
            && self.stat.ctime_ns < self.recorded_ns - RACY_WINDOW_NS
    }
}

/// The 64-bit hash of a path recorded with a stat record (a collision only drops a record).
pub fn path_hash(path: &Path) -> u64 {
    let d = Sha256::digest(path.as_os_str().as_encoded_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8])).max(1)
}

/// An in-memory view of the persisted stat cache: stat -> record. New records, and old
/// ones used again after a day, are collected for the store to persist.
#[derive(Debug, Default)]
pub struct StatCache {
    known: HashMap<Stat, (StatRecord, std::sync::atomic::AtomicBool)>,
    updated: Mutex<HashMap<Stat, StatRecord>>,
    now_ns: i64,
}

impl StatCache {
    pub fn new(known: impl IntoIterator<Item = StatRecord>) -> Self {
        StatCache {
            known: known.into_iter().map(|r| (r.stat, (r, Default::default()))).collect(),
            updated: Mutex::new(HashMap::new()),
            now_ns: now_ns(),
        }
    }
    fn lookup(&self, st: &Stat) -> Option<[u8; 32]> {
        if let Some((r, used)) = self.known.get(st) {
            if r.trusted_for(st) {
                if r.used_ns < self.now_ns - STAT_REFRESH_NS {
                    used.store(true, Ordering::Relaxed);
                }
                return Some(r.digest);
            }
        }
        // hashed during this process: exact for this stat
        self.updated.lock().ok()?.get(st).map(|r| r.digest)
    }
    fn remember(&self, stat: Stat, digest: [u8; 32], path: &Path) {
        if let Ok(mut u) = self.updated.lock() {
            let now = now_ns();
            u.insert(stat, StatRecord { stat, digest, recorded_ns: now, used_ns: now, path_hash: path_hash(path) });
        }
    }
    /// Records to persist: those hashed since this cache was loaded and those whose use
    /// should be refreshed. Empty when nothing changed (a no-op run writes nothing).
    pub fn take_updates(&self) -> Vec<StatRecord> {
        let mut out: Vec<StatRecord> =
            self.updated.lock().map(|mut u| u.drain().map(|(_, r)| r).collect()).unwrap_or_default();
        for (r, used) in self.known.values() {
            if used.swap(false, Ordering::Relaxed) {
                out.push(StatRecord { used_ns: self.now_ns, ..r.clone() });
            }
        }
        out
    }
}

/// Counters for one hashing pass. Each file's digest has one source: the git index (the
/// blob memo), a Git LFS pointer, the stat cache, or reading it (`hashed_*`).
#[derive(Debug, Default)]
pub struct HashStats {
    pub files: AtomicU64,
    pub hashed_files: AtomicU64,
    pub hashed_bytes: AtomicU64,
    pub from_git_index: AtomicU64,
    pub from_lfs_pointer: AtomicU64,
    pub from_stat_cache: AtomicU64,
    /// When set ([`HashStats::record_sources`]), each file's digest source (`tenon plan -v`).
    recording: std::sync::atomic::AtomicBool,
    sources: std::sync::Mutex<Vec<(PathBuf, DigestSource)>>,
}

/// Where one input file's digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DigestSource {
    GitIndex,
    LfsPointer,
    StatCache,
    Hashed,
}

impl DigestSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DigestSource::GitIndex => "from git index",
            DigestSource::LfsPointer => "from LFS pointer",
            DigestSource::StatCache => "from stat cache",
            DigestSource::Hashed => "hashed",
        }
    }
}

impl HashStats {
    /// Remember each file's digest source from now on (see [`HashStats::sources`]).
    pub fn record_sources(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    /// The files whose digest sources were recorded, sorted by path.
    pub fn sources(&self) -> Vec<(PathBuf, DigestSource)> {
        let mut v = self.sources.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort();
        v
    }

    /// Count one file's digest as coming from `src`.
    fn count(&self, src: DigestSource, path: &Path) {
        let c = match src {
            DigestSource::GitIndex => &self.from_git_index,
            DigestSource::LfsPointer => &self.from_lfs_pointer,
            DigestSource::StatCache => &self.from_stat_cache,
            DigestSource::Hashed => &self.hashed_files,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            if let Ok(mut v) = self.sources.lock() {
                v.push((path.to_path_buf(), src));
            }
        }
    }
}

/// An input file that is a Git LFS pointer in the work tree (not smudged): its digest is
/// the pointer's oid, and a task that binds it needs the object fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsInput {
    /// Relative to the hashed root, as in the tree's entries.
    pub path: String,
    pub oid: String,
    pub size: u64,
}

/// Which paths of a tree count: `include` globs (empty = everything) minus `exclude`.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    /// The literal leading directories of every include pattern (`src/**/*.py` -> `src`),
    /// or `None` when some pattern can match anywhere: the walk only enters directories
    /// that lie on the way to, or inside, one of them.
    prefixes: Option<Vec<String>>,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, String> {
        let build = |pats: &[String]| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for p in pats {
                let p = p.trim().trim_start_matches("./");
                if p.is_empty() {
                    continue;
                }
                b.add(Glob::new(p).map_err(|e| format!("invalid glob {p:?}: {e}"))?);
                // `dir` and `dir/` also mean everything below it
                let dir = p.trim_end_matches('/');
                if !dir.contains(['*', '?', '[']) {
                    b.add(Glob::new(&format!("{dir}/**")).map_err(|e| format!("invalid glob {p:?}: {e}"))?);
                }
            }
            b.build().map_err(|e| e.to_string())
        };
        let include_set = if include.iter().all(|p| p.trim().is_empty()) { None } else { Some(build(include)?) };
        let prefixes = include_set.as_ref().and_then(|_| {
            let mut out = Vec::new();
            for p in include {
                let p = p.trim().trim_start_matches("./");
                if p.is_empty() {
                    continue;
                }
                let literal: Vec<&str> = p
                    .split('/')
                    .take_while(|c| !c.contains(['*', '?', '[', ']', '{', '}', '\\']))
                    .filter(|c| !c.is_empty())
                    .collect();
                // every component literal: the pattern names a path (and all below it)
                let prefix = literal.join("/");
                if prefix.is_empty() {
                    return None;
                }
                out.push(prefix);
            }
            Some(out)
        });
        Ok(Filter { include: include_set, exclude: build(exclude)?, prefixes })
    }
    pub fn everything() -> Filter {
        Filter { include: None, exclude: GlobSet::empty(), prefixes: None }
    }
    /// Whether an included path can lie at or below directory `rel`.
    fn may_contain(&self, rel: &str) -> bool {
        let Some(prefixes) = &self.prefixes else { return true };
        prefixes.iter().any(|p| {
            let (p, r) = (p.as_bytes(), rel.as_bytes());
            // `rel` is on the way to `p`, or is `p`, or lies inside it
            (p.len() >= r.len() && p.starts_with(r) && (p.len() == r.len() || p[r.len()] == b'/'))
                || (r.len() > p.len() && r.starts_with(p) && r[p.len()] == b'/')
        })
    }
    fn excluded(&self, rel: &str) -> bool {
        self.exclude.is_match(rel)
    }
    fn included(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(rel))
    }
    fn narrowed(&self) -> bool {
        self.include.is_some()
    }
}

/// Names never part of any input tree.
const ALWAYS_SKIPPED: &[&str] = &[".git"];

/// Hash the tree under `root` (a file or directory), entries relative to it.
pub fn hash_tree(root: &Path, filter: &Filter, cache: &StatCache, stats: &HashStats) -> std::io::Result<Tree> {
    hash_tree_git(root, filter, cache, stats, None).map(|(t, _)| t)
}

/// [`hash_tree`], taking what it can from `git` (the index of the work tree `root` lies
/// in, see [`git::GitView`]); also returns the inputs that are unsmudged Git LFS pointers.
pub fn hash_tree_git(
    root: &Path,
    filter: &Filter,
    cache: &StatCache,
    stats: &HashStats,
    git: Option<&git::GitView>,
) -> std::io::Result<(Tree, Vec<LfsInput>)> {
    let meta = std::fs::symlink_metadata(root)?;
    let mut found: Found = Vec::new();
    let is_dir = meta.is_dir();
    if is_dir {
        walk(root, "", filter, &mut found)?;
    } else {
        let name = root.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let kind = if meta.file_type().is_symlink() { Kind::Symlink } else { Kind::File };
        found.push(Found1 { rel: name, kind, stat: Some(Stat::of(&meta)), mode: meta.mode() });
    }
    // absolute paths are built only for the files that must be read
    let abs = |rel: &str| if is_dir { root.join(rel) } else { root.to_path_buf() };
    let entries: Vec<std::io::Result<(Entry, Option<LfsInput>)>> = found
        .into_par_iter()
        .map(|f| {
            let Found1 { rel, kind, stat, mode } = f;
            match kind {
                Kind::Dir => {
                    Ok((Entry { path: rel, kind: Kind::Dir, exec: false, digest: String::new(), size: None }, None))
                }
                Kind::Symlink => {
                    let target = std::fs::read_link(abs(&rel))?;
                    let digest = sha256_hex(target.as_os_str().as_encoded_bytes());
                    Ok((Entry { path: rel, kind: Kind::Symlink, exec: false, digest, size: None }, None))
                }
                Kind::File => {
                    stats.files.fetch_add(1, Ordering::Relaxed);
                    let st = stat.expect("files carry their stat");
                    let exec = mode & 0o111 != 0;
                    let (digest, pointer) = match git.filter(|g| g.tracked(&rel)) {
                        Some(g) => tracked_digest(g, &abs, &rel, st, exec, cache, stats)?,
                        None => (hex(&cached_digest(&abs(&rel), st, cache, stats)?), None),
                    };
                    let lfs = pointer.map(|(oid, size)| LfsInput { path: rel.clone(), oid, size });
                    Ok((Entry { path: rel, kind: Kind::File, exec, digest, size: None }, lfs))
                }
            }
        })
        .collect();
    let mut lfs = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let (e, p) = e?;
        out.push(e);
        lfs.extend(p);
    }
    lfs.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok((Tree::seal(out), lfs))
}

/// A file's digest from the stat cache, or by reading it (and remembering it).
fn cached_digest(path: &Path, st: Stat, cache: &StatCache, stats: &HashStats) -> std::io::Result<[u8; 32]> {
    if let Some(d) = cache.lookup(&st) {
        stats.count(DigestSource::StatCache, path);
        return Ok(d);
    }
    let (d, after) = hash_file_stat(path)?;
    count_read(stats, st.size, path);
    // remember only a stable stat: the inode the walk saw (not one renamed over it since),
    // unchanged while it was read
    if after == st {
        cache.remember(st, d, path);
    }
    Ok(d)
}

fn count_read(stats: &HashStats, bytes: u64, path: &Path) {
    stats.count(DigestSource::Hashed, path);
    stats.hashed_bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// The Git LFS pointer a small file is, read whole (at most [`lfs::MAX_POINTER_BYTES`]).
fn read_pointer(path: &Path, st: &Stat) -> std::io::Result<Option<(String, u64)>> {
    if !(lfs::MIN_POINTER_BYTES..=lfs::MAX_POINTER_BYTES).contains(&st.size) {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(st.size as usize + 1);
    std::fs::File::open(path)?.take(lfs::MAX_POINTER_BYTES + 1).read_to_end(&mut buf)?;
    Ok(lfs::lfs_pointer(&buf))
}

/// The digest (hex) of a tracked file, and the Git LFS pointer it is when it is one (its
/// digest is then the pointer's oid). When its index entry shows it clean the digest comes
/// from the blob memo; otherwise it is read (or taken from the stat cache), and a read
/// whose bytes hash to the index entry's blob id teaches the memo.
fn tracked_digest(
    g: &git::GitView,
    abs: &dyn Fn(&str) -> PathBuf,
    rel: &str,
    st: Stat,
    exec: bool,
    cache: &StatCache,
    stats: &HashStats,
) -> std::io::Result<(String, Option<(String, u64)>)> {
    let path = abs(rel);
    let pointer_hit =
        |oid: String, pointer: Option<(String, u64)>| -> std::io::Result<(String, Option<(String, u64)>)> {
            stats.count(DigestSource::LfsPointer, &path);
            Ok((oid, pointer))
        };
    let clean = g.clean(rel, &st, exec);
    if let Some(blob) = clean {
        if let Some(m) = g.memo(&blob) {
            if m.lfs {
                // the pointer itself (not smudged), or the object it names
                match read_pointer(&path, &st)? {
                    Some(p) if p.0 == m.sha256 => return pointer_hit(m.sha256.clone(), Some(p)),
                    None if st.size == m.size => return pointer_hit(m.sha256.clone(), None),
                    _ => {}
                }
            } else if m.size == st.size {
                stats.count(DigestSource::GitIndex, &path);
                return Ok((m.sha256.clone(), None));
            }
        } else if st.size > lfs::MAX_POINTER_BYTES {
            // a smudged Git LFS object: its blob is the pointer naming its SHA-256
            if let Some((oid, size)) = g.pointer_blob(blob).filter(|(_, n)| *n == st.size) {
                g.learn(blob, git::BlobDigest { sha256: oid.clone(), size, lfs: true });
                return pointer_hit(oid, None);
            }
        }
    }
    // read it, or take it from the stat cache
    if let Some(d) = cache.lookup(&st) {
        if let Some(p) = read_pointer(&path, &st)? {
            return pointer_hit(p.0.clone(), Some(p));
        }
        stats.count(DigestSource::StatCache, &path);
        return Ok((hex(&d), None));
    }
    let r = hash_file_read(&path, Some(st.size))?;
    count_read(stats, st.size, &path);
    let stable = r.after == st;
    if stable {
        cache.remember(st, r.digest, &path);
    }
    let index_blob = g.blob_of(rel);
    if stable && r.blob.is_some() && r.blob == index_blob {
        let learned = match &r.pointer {
            Some((oid, size)) => git::BlobDigest { sha256: oid.clone(), size: *size, lfs: true },
            None => git::BlobDigest { sha256: hex(&r.digest), size: st.size, lfs: false },
        };
        if let Some(b) = index_blob {
            g.learn(b, learned);
        }
    }
    match r.pointer {
        Some(p) => pointer_hit(p.0.clone(), Some(p)),
        None => Ok((hex(&r.digest), None)),
    }
}

/// One path found by the walk: its kind, and for files and symlinks their stat and mode.
struct Found1 {
    rel: String,
    kind: Kind,
    stat: Option<Stat>,
    mode: u32,
}

type Found = Vec<Found1>;

/// Walk `dir`, appending what the filter selects (in no particular order: the tree is
/// sorted when sealed); subdirectories are walked in parallel (stat calls dominate).
/// Directories are recognised by the entry's type (no stat); files are stat-ed relative
/// to the open directory.
fn walk(dir: &Path, rel: &str, filter: &Filter, out: &mut Found) -> std::io::Result<()> {
    let mut subdirs: Vec<(PathBuf, String)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let Ok(e) = e else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if rel.is_empty() && ALWAYS_SKIPPED.contains(&name.as_ref()) {
            continue;
        }
        let child = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
        if filter.excluded(&child) {
            continue;
        }
        let ft = match e.file_type() {
            Ok(ft) => ft,
            Err(_) => e.metadata()?.file_type(),
        };
        if ft.is_dir() {
            if filter.may_contain(&child) {
                subdirs.push((e.path(), child.clone()));
            }
            if !filter.narrowed() || filter.included(&child) {
                out.push(Found1 { rel: child, kind: Kind::Dir, stat: None, mode: 0 });
            }
        } else if filter.included(&child) {
            if ft.is_symlink() {
                out.push(Found1 { rel: child, kind: Kind::Symlink, stat: None, mode: 0 });
            } else {
                if !ft.is_file() {
                    // reading a fifo would block, a device has no stable content
                    return Err(std::io::Error::other(format!(
                        "{child} is not a regular file, directory or symlink (fifo, socket or device): exclude it with the tenon.dev/exclude annotation"
                    )));
                }
                let m = e.metadata()?;
                out.push(Found1 { rel: child, kind: Kind::File, stat: Some(Stat::of(&m)), mode: m.mode() });
            }
        }
    }
    match subdirs.len() {
        0 => Ok(()),
        1 => walk(&subdirs[0].0, &subdirs[0].1, filter, out),
        _ => {
            let walked: Vec<std::io::Result<Found>> = subdirs
                .par_iter()
                .map(|(abs, child)| {
                    let mut v = Vec::new();
                    walk(abs, child, filter, &mut v).map(|_| v)
                })
                .collect();
            for w in walked {
                out.extend(w?);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(dir: &Path) -> Tree {
        hash_tree(dir, &Filter::everything(), &StatCache::default(), &HashStats::default()).unwrap()
    }

    #[test]
    fn known_digest() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn every_kind_of_change_changes_the_root() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("a"), "1").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/b"), "2").unwrap();
        let mut seen = vec![tree(p).root];
        let mut check = |what: &str| {
            let r = tree(p).root;
            assert!(!seen.contains(&r), "{what} did not change the root digest");
            seen.push(r);
        };
        std::fs::write(p.join("a"), "1'").unwrap();
        check("content");
        std::fs::rename(p.join("a"), p.join("a2")).unwrap();
        check("rename");
        std::fs::set_permissions(p.join("a2"), std::fs::Permissions::from_mode(0o755)).unwrap();
        check("chmod +x");
        std::fs::create_dir(p.join("empty")).unwrap();
        check("empty dir");
        std::os::unix::fs::symlink("a2", p.join("link")).unwrap();
        check("symlink");
        std::fs::remove_file(p.join("link")).unwrap();
        std::os::unix::fs::symlink("sub/b", p.join("link")).unwrap();
        check("symlink retarget");
        std::fs::remove_dir(p.join("empty")).unwrap();
        std::fs::write(p.join("empty"), "").unwrap();
        check("dir replaced by file");
        // .git is never an input
        let before = tree(p).root;
        std::fs::create_dir(p.join(".git")).unwrap();
        std::fs::write(p.join(".git/HEAD"), "x").unwrap();
        assert_eq!(tree(p).root, before);
    }

    #[test]
    fn same_content_elsewhere_same_root() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("x")).unwrap();
            std::fs::write(d.join("x/f"), "same").unwrap();
        }
        assert_eq!(tree(a.path()).root, tree(b.path()).root);
    }

    #[test]
    fn filters_narrow_and_exclude() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::create_dir_all(p.join("docs")).unwrap();
        std::fs::write(p.join("src/a.py"), "a").unwrap();
        std::fs::write(p.join("src/a.pyc"), "junk").unwrap();
        std::fs::write(p.join("docs/x.md"), "d").unwrap();
        let f = Filter::new(&["src".into()], &["**/*.pyc".into()]).unwrap();
        let t = hash_tree(p, &f, &StatCache::default(), &HashStats::default()).unwrap();
        let paths: Vec<&str> = t.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["src", "src/a.py"]);
        assert!(Filter::new(&["[".into()], &[]).is_err());
    }

    #[test]
    fn walk_enters_only_directories_an_include_can_reach() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["model/model.bin"], "model", true),
            (&["model/model.bin"], "data", false),
            (&["model/model.bin"], "mod", false),
            (&["model/model.bin"], "model/model.bin", true),
            (&["src/**/*.py"], "src", true),
            (&["src/**/*.py"], "src/deep/er", true),
            (&["src/**/*.py"], "srcx", false),
            (&["a/b/*.csv"], "a", true),
            (&["a/b/*.csv"], "a/c", false),
            (&["**/*.py"], "anything", true),
            (&["*.txt"], "dir", true),
            (&["data", "conf/x"], "conf", true),
            (&["data", "conf/x"], "other", false),
            (&["./data/"], "data/sub", true),
        ];
        for (inc, dir, want) in cases {
            let f = Filter::new(&inc.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]).unwrap();
            assert_eq!(f.may_contain(dir), *want, "include {inc:?}, dir {dir}");
        }
        assert!(Filter::everything().may_contain("x"));
        // pruning never changes what a filter selects
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in ["src/a/b.py", "src/c.py", "data/x.csv", "data/y/z.csv", "m/model.bin", "top.txt"] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), f).unwrap();
        }
        let paths = |inc: &[&str]| {
            let f = Filter::new(&inc.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]).unwrap();
            let t = hash_tree(p, &f, &StatCache::default(), &HashStats::default()).unwrap();
            t.entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>()
        };
        assert_eq!(paths(&["src/**/*.py"]), vec!["src/a/b.py", "src/c.py"]);
        assert_eq!(paths(&["m/model.bin", "data/y"]), vec!["data/y", "data/y/z.csv", "m/model.bin"]);
        assert_eq!(paths(&["**/*.csv"]), vec!["data/x.csv", "data/y/z.csv"]);
    }

    #[test]
    fn stat_cache_trusts_only_old_exact_records() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "one").unwrap();
        let st = Stat::of(&std::fs::metadata(&f).unwrap());
        let bogus = [7u8; 32];
        let rec = StatRecord {
            stat: st,
            digest: bogus,
            recorded_ns: st.mtime_ns + 10,
            used_ns: st.mtime_ns + 10,
            path_hash: path_hash(&f),
        };
        // racy: recorded right after the write -> not trusted, re-hashed
        let cache = StatCache::new([rec.clone()]);
        let stats = HashStats::default();
        let t = hash_tree(d.path(), &Filter::everything(), &cache, &stats).unwrap();
        assert_eq!(t.entries[0].digest, sha256_hex(b"one"));
        assert_eq!(stats.hashed_files.load(Ordering::Relaxed), 1);
        // ... and the fresh digest is what gets persisted
        let ups = cache.take_updates();
        assert_eq!(ups.len(), 1);
        assert_eq!(hex(&ups[0].digest), sha256_hex(b"one"));
        // old exact record: trusted (the bogus digest proves the file was not read)
        let recorded = st.mtime_ns.max(st.ctime_ns) + RACY_WINDOW_NS + 1;
        let old = StatRecord { recorded_ns: recorded, used_ns: now_ns(), ..rec };
        let cache = StatCache::new([old.clone()]);
        let stats = HashStats::default();
        let t = hash_tree(d.path(), &Filter::everything(), &cache, &stats).unwrap();
        assert_eq!(t.entries[0].digest, hex(&bogus));
        assert_eq!(stats.hashed_files.load(Ordering::Relaxed), 0);
        assert!(cache.take_updates().is_empty(), "a no-op pass persists nothing");
        // a record last used long ago is refreshed when used again
        let stale = StatCache::new([StatRecord { used_ns: 0, ..old.clone() }]);
        hash_tree(d.path(), &Filter::everything(), &stale, &HashStats::default()).unwrap();
        let ups = stale.take_updates();
        assert!(ups.len() == 1 && ups[0].used_ns > 0 && ups[0].digest == bogus, "{ups:?}");
        // same size, new content, any stat difference -> re-hashed
        std::fs::write(&f, "two").unwrap();
        let t = hash_tree(d.path(), &Filter::everything(), &cache, &HashStats::default()).unwrap();
        assert_eq!(t.entries[0].digest, sha256_hex(b"two"));
    }

    #[test]
    fn special_files_are_an_error_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        let ok = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "mkfifo");
        let err = hash_tree(d.path(), &Filter::everything(), &StatCache::default(), &HashStats::default()).unwrap_err();
        assert!(err.to_string().contains("pipe is not a regular file"), "{err}");
        // excluded: fine
        let f = Filter::new(&[], &["pipe".into()]).unwrap();
        assert!(hash_tree(d.path(), &f, &StatCache::default(), &HashStats::default()).is_ok());
    }
}
