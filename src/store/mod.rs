//! The record seam: cache records, results and content-addressed outputs.
//!
//! The embedded store is one directory: `tenon.db` (SQLite, WAL) for records, the stat
//! cache and run history; `objects/ab/cdef...` for output files named by their SHA-256;
//! `locks/` for per-key advisory locks. Crash safety: objects are written to a temporary
//! file and renamed into place before the record that names them is committed, and only
//! successful task runs are recorded, in one transaction, so a `kill -9` at any moment
//! leaves nothing that can cause a false hit. Two processes on one store serialize on the
//! per-key lock (released by the kernel if a holder dies) and on SQLite's own locking.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::hash::{self, Stat, StatRecord, Tree};
use crate::model::ParamValue;

mod gc;
mod objects;
mod sqlite;
mod state;
#[cfg(test)]
mod tests;

pub use state::{PromotionState, ReconcileOutcome, RunResults, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // every message carries its cause: these errors are shown with `{e}`, never chained
    #[error("cannot open the store at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// tenon could not write into its own store (a full disk, a read-only filesystem).
    #[error("cannot write {} in the store: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
}

impl StoreError {
    /// The store itself failed (it cannot be opened, read or written: a full disk, a
    /// locked or broken database), as opposed to a problem with what was given to it.
    /// A run that meets one cannot be recorded: tenon exits 3.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, StoreError::Open { .. } | StoreError::Db(_) | StoreError::Write { .. })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Files a task declared as outputs, one set per `workspace:path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSet {
    pub workspace: String,
    pub path: String,
    pub tree: Tree,
    /// [`OUTPUT_FORMAT`] of the tree (absent: 0, before it was versioned). A set of
    /// another format is never restored: its record is a miss, with that reason.
    #[serde(default)]
    pub format: u32,
}

/// How stored output trees are written. 2: a symlink's target text is an object (named
/// by the digest of the text) and every file or link entry records its object's size.
/// Before (0), a nested symlink kept only the digest of its target text, so it could not
/// be restored.
pub const OUTPUT_FORMAT: u32 = 2;

// Whether `d` can name an object (64 lowercase hex digits): anything else (a record of an
// older format, a damaged row) must never become a path under `objects/`.
use crate::util::is_sha256_hex as is_digest;

/// `workspace:path` of one entry of an output set, for messages.
fn entry_label(set: &OutputSet, e: &hash::Entry) -> String {
    match e.path.as_str() {
        "" => format!("{}:{}", set.workspace, set.path),
        p => format!("{}:{}/{p}", set.workspace, set.path.trim_end_matches('/')),
    }
}

/// A successful task run, reusable by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub key: String,
    /// The PipelineRun/TaskRun object that produced it, and that run's uid.
    pub run: String,
    pub run_uid: String,
    /// The pipeline task (or TaskRun) name.
    pub task: String,
    pub created_ns: i64,
    pub duration_ms: u64,
    /// The full key preimage, kept so a later miss can be explained field by field.
    pub preimage: serde_json::Value,
    pub results: BTreeMap<String, ParamValue>,
    pub outputs: Vec<OutputSet>,
}

/// A summary row for `tenon cache ls`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordInfo {
    pub key: String,
    pub run: String,
    pub task: String,
    pub created_ns: i64,
    pub duration_ms: u64,
    pub output_bytes: u64,
}

/// The store seam.
/// The git blob memo keeps this many rows (about 150 bytes each on disk); past it, the rows
/// learned longest ago go.
pub const MAX_GIT_BLOBS: i64 = 1_000_000;

pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Record>>;
    /// Commit a successful record (its output objects must already be stored).
    fn put(&self, rec: &Record) -> Result<()>;
    /// The most recent record of `task` in `run`, to explain a miss.
    fn latest_for(&self, run: &str, task: &str) -> Result<Option<Record>>;
    /// Copy files into content-addressed storage; returns the tree of what was stored.
    fn store_output(&self, src: &Path) -> Result<Tree>;
    /// Restore a stored tree at `dest` (copies, never links: tasks may modify them).
    fn restore_output(&self, tree: &Tree, dest: &Path) -> Result<()>;
    /// Stat cache for files under `prefix`.
    fn stat_cache(&self) -> Result<Vec<StatRecord>>;
    /// Merge new or refreshed records into the persisted stat cache (records unused for
    /// [`hash::STAT_RECORD_TTL_NS`] are dropped).
    fn save_stats(&self, updates: &[StatRecord]) -> Result<()>;
    /// The memo rows (git blob id -> digest) of these blob ids that the store has.
    fn blob_digests(&self, blobs: &[String]) -> Result<HashMap<String, hash::git::BlobDigest>>;
    /// Remember blob digests (each learned by reading a file whose bytes hash to the blob id,
    /// or read from a verified shared-cache memo). At most [`MAX_GIT_BLOBS`] rows are kept.
    fn save_blob_digests(&self, rows: &[(String, hash::git::BlobDigest)]) -> Result<()>;
    /// Remember a tree's entries (for explanations), by root digest.
    fn put_tree(&self, tree: &Tree) -> Result<()>;
    fn get_tree(&self, root: &str) -> Result<Option<Tree>>;
    /// Record which keys a finished run used (gc keeps the latest successful one).
    fn record_run(&self, run: &str, uid: &str, ok: bool, keys: &[String]) -> Result<()>;
    /// Hold an exclusive lock on `key` until the guard drops (blocks while another
    /// process holds it).
    fn lock_key(&self, key: &str) -> Result<KeyLock>;
    /// Why the record of `key`, when there is one, is not a hit (`get` says none): an
    /// output object missing or of the wrong size, or an older output format.
    fn unusable(&self, key: &str) -> Result<Option<String>>;
    /// The lock on `key` if no other process holds it (`None` when one does): callers
    /// poll, so that a wait can be cancelled.
    fn try_lock_key(&self, key: &str) -> Result<Option<KeyLock>>;
    /// The stored object `digest` when it is present with `size` bytes (one stat: what a
    /// lookup trusts), for reading it (the shared cache uploads it from there).
    fn object_file(&self, digest: &str, size: u64) -> Option<PathBuf>;
    /// Make the file `src` (already checked to hash to `digest` by whoever wrote it, e.g.
    /// a verified download) the object `digest`: moved, not copied. Its size must be `size`.
    fn import_object(&self, digest: &str, size: u64, src: &Path) -> Result<()>;
    /// A directory on the store's filesystem for temporary files (renames into the store
    /// from there are atomic).
    fn scratch_dir(&self) -> PathBuf;
}

/// An advisory lock held on one key.
pub struct KeyLock {
    _file: std::fs::File,
}

pub struct SqliteStore {
    root: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
  key TEXT PRIMARY KEY, run TEXT NOT NULL, run_uid TEXT NOT NULL, task TEXT NOT NULL,
  created_ns INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
  preimage TEXT NOT NULL, results TEXT NOT NULL, outputs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_task ON records (run, task, created_ns);
CREATE TABLE IF NOT EXISTS stat_blob (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS trees (root TEXT PRIMARY KEY, entries TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS git_blobs (blob TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, lfs INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS promotions (
  id TEXT PRIMARY KEY, policy TEXT NOT NULL, environment TEXT NOT NULL, state TEXT NOT NULL,
  decision TEXT NOT NULL, decided_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS runs (
  run TEXT NOT NULL, uid TEXT NOT NULL, finished_ns INTEGER NOT NULL, ok INTEGER NOT NULL, keys TEXT NOT NULL,
  PRIMARY KEY (run, uid));
CREATE TABLE IF NOT EXISTS watch_revisions (
  source TEXT NOT NULL, revision TEXT NOT NULL, outcome TEXT NOT NULL, finished_ns INTEGER NOT NULL,
  PRIMARY KEY (source, revision));
";

pub const STORE_FORMAT: &str = "1";

/// How long a statement waits for a database another process has locked
/// (`TENON_DB_BUSY_TIMEOUT`, a duration such as `30s` or `500ms`; default 30 s).
pub fn busy_timeout() -> std::time::Duration {
    std::env::var("TENON_DB_BUSY_TIMEOUT")
        .ok()
        .and_then(|v| {
            humantime::parse_duration(v.trim())
                .ok()
                .or_else(|| v.trim().parse().ok().map(std::time::Duration::from_secs))
        })
        .unwrap_or(std::time::Duration::from_secs(30))
}

/// The database the busy handler names in its messages (one store per process).
static BUSY_DB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

thread_local! {
    /// When the current wait for a locked database started, and when it was last reported.
    static BUSY_SINCE: std::cell::Cell<(std::time::Instant, Option<std::time::Instant>)> =
        std::cell::Cell::new((std::time::Instant::now(), None));
}

/// SQLite's busy handler: wait for a database another process has locked, saying so on
/// stderr after a second (and every 5 s, naming the lock holder when the kernel tells),
/// up to [`busy_timeout`]. `n` counts the calls of this wait (0 on the first).
fn busy_wait(n: i32) -> bool {
    use std::time::Duration;
    let now = std::time::Instant::now();
    let timeout = busy_timeout();
    let (since, said) = if n == 0 { (now, None) } else { BUSY_SINCE.with(|c| c.get()) };
    let waited = now - since;
    let db = BUSY_DB.get().cloned().unwrap_or_default();
    if waited >= timeout {
        tracing::warn!(
            "gave up waiting for the store database {} after {:.1}s (TENON_DB_BUSY_TIMEOUT)",
            db.display(),
            waited.as_secs_f64()
        );
        return false;
    }
    let mut said = said;
    if waited >= Duration::from_secs(1).min(timeout / 2) && said.is_none_or(|t| now - t >= Duration::from_secs(5)) {
        let holder = lock_holder(&db).map(|h| format!(", locked by {h}")).unwrap_or_default();
        tracing::warn!(
            "waiting for the store database {}{holder} (waited {:.1}s of {:.1}s; TENON_DB_BUSY_TIMEOUT sets the limit)",
            db.display(),
            waited.as_secs_f64(),
            timeout.as_secs_f64(),
        );
        said = Some(now);
    }
    BUSY_SINCE.with(|c| c.set((since, said)));
    let pause = Duration::from_millis((5u64 << n.clamp(0, 5) as u32).min(100));
    std::thread::sleep(pause.min(timeout.saturating_sub(waited)).max(Duration::from_millis(1)));
    true
}

/// The process holding a lock on `db` (SQLite locks its files with POSIX record locks: the
/// `-shm` file in WAL mode, the database file otherwise), as `pid N (command name)`, read
/// from `/proc/locks`. (Never by opening the files: closing any descriptor of a file drops
/// every POSIX lock this process holds on it, SQLite's own included.)
fn lock_holder(db: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let me = std::process::id();
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    for p in [shm.as_path(), db] {
        let Ok(m) = std::fs::metadata(p) else { continue };
        let id = format!("{:02x}:{:02x}:{}", libc::major(m.dev()), libc::minor(m.dev()), m.ino());
        // `1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 120 120` (waiters are marked `->`)
        let holders = locks
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() >= 8 && f[1] != "->" && f[5] == id && f[4].parse::<u32>().is_ok_and(|pid| pid != me));
        // a writer blocks us; failing one, any other process's lock
        let mut holders: Vec<Vec<&str>> = holders.collect();
        holders.sort_by_key(|f| f[3] != "WRITE");
        if let Some(pid) = holders.first().map(|f| f[4].to_string()) {
            // the command name only: another program's arguments may hold credentials
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmd = cmd.trim();
            return Some(if cmd.is_empty() { format!("pid {pid}") } else { format!("pid {pid} ({cmd})") });
        }
    }
    None
}

/// Create `dir` (and missing parents) owner-only, and tighten it if it exists. A directory
/// this user does not own (a volume's mount point, e.g. a PVC with an `fsGroup`) is left as
/// it is, with a warning: what tenon creates inside it is owner-only anyway.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o7777 != 0o700 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            // SAFETY: geteuid has no preconditions
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && meta.uid() != unsafe { libc::geteuid() } => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(
                    || tracing::warn!(dir = %dir.display(), "cannot make a directory owned by another user owner-only"),
                );
            }
            r => r?,
        }
    }
    Ok(())
}

/// Open (creating it owner-only, never truncating it) a file that is only locked.
pub fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)
}

/// Create `file` owner-only (0600) if missing, and tighten it if it exists.
fn private_file(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A failure to write `path` in the store (a full disk, a read-only filesystem): tenon's
/// own failure, exit 3.
fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Write { path, source }
}

/// The stat cache as one compact blob (fast to load: one row, no per-file SQL):
/// per entry `path_len:u32 path dev ino size mtime ctime recorded (8 bytes each) digest(32)`.
const STAT_MAGIC: &[u8; 4] = b"TSC3";
/// dev, ino, size, mtime_ns, ctime_ns, recorded_ns, used_ns, path hash, then the digest.
const STAT_RECORD_LEN: usize = 8 * 8 + 32;

/// Create `base/rel` as real directories without following a symlink on the way: a
/// symlink (or a file) where a directory belongs is an error, as writing through it would
/// write wherever it points.
fn create_dirs_nofollow(base: &Path, rel: &Path) -> std::io::Result<()> {
    let mut p = base.to_path_buf();
    for c in rel.components() {
        let std::path::Component::Normal(c) = c else {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain relative path"));
        };
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what =
                    if m.file_type().is_symlink() { "a symlink tenon did not create" } else { "not a directory" };
                return Err(std::io::Error::other(format!("{} is {what}: not restoring through it", p.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&p) {
                Ok(()) => {}
                // created meanwhile: fine if it is a directory (checked by the next lstat)
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !std::fs::symlink_metadata(&p)?.is_dir() {
                        return Err(std::io::Error::other(format!("{} is not a directory", p.display())));
                    }
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn encode_stats<'a>(records: impl ExactSizeIterator<Item = &'a StatRecord>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + records.len() * STAT_RECORD_LEN);
    out.extend_from_slice(STAT_MAGIC);
    for r in records {
        let s = &r.stat;
        for v in [
            s.dev as i64,
            s.ino as i64,
            s.size as i64,
            s.mtime_ns,
            s.ctime_ns,
            r.recorded_ns,
            r.used_ns,
            r.path_hash as i64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&r.digest);
    }
    out
}

/// Decode the stat blob; anything else (an older format, a torn blob) decodes to nothing,
/// which only costs a re-hash.
fn decode_stats(b: &[u8]) -> Vec<StatRecord> {
    if b.len() < 4 || &b[..4] != STAT_MAGIC || !(b.len() - 4).is_multiple_of(STAT_RECORD_LEN) {
        return Vec::new();
    }
    b[4..]
        .chunks_exact(STAT_RECORD_LEN)
        .map(|c| {
            let v = |k: usize| i64::from_le_bytes(c[8 * k..8 * k + 8].try_into().unwrap_or([0; 8]));
            StatRecord {
                stat: Stat { dev: v(0) as u64, ino: v(1) as u64, size: v(2) as u64, mtime_ns: v(3), ctime_ns: v(4) },
                recorded_ns: v(5),
                used_ns: v(6),
                path_hash: v(7) as u64,
                digest: c[64..96].try_into().unwrap_or([0; 32]),
            }
        })
        .collect()
}
