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

/// Whether `d` can name an object (64 lowercase hex digits): anything else (a record of
/// an older format, a damaged row) must never become a path under `objects/`.
fn is_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

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

impl SqliteStore {
    pub fn open(root: &Path) -> Result<SqliteStore> {
        let err =
            |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open { path: root.to_path_buf(), source: e };
        // owner-only: records, objects and run history may hold what a task produced
        for d in ["", "objects", "locks", "tmp"] {
            make_private_dir(&root.join(d)).map_err(|e| err(Box::new(e)))?;
        }
        let db = root.join("tenon.db");
        // SQLite gives the -wal and -shm files the database file's mode: create it 0600
        private_file(&db).map_err(|e| err(Box::new(e)))?;
        for f in ["tenon.db-wal", "tenon.db-shm"] {
            let p = root.join(f);
            if p.exists() {
                private_file(&p).map_err(|e| err(Box::new(e)))?;
            }
        }
        let conn = Connection::open(&db).map_err(|e| err(Box::new(e)))?;
        BUSY_DB.get_or_init(|| db.clone());
        conn.busy_handler(Some(busy_wait)).map_err(|e| err(Box::new(e)))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| err(Box::new(e)))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| err(Box::new(e)))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(Box::new(e)))?;
        let fmt: Option<String> = conn
            .query_row("SELECT v FROM meta WHERE k = 'format'", [], |r| r.get(0))
            .optional()
            .map_err(|e| err(Box::new(e)))?;
        match fmt.as_deref() {
            None => {
                conn.execute("INSERT OR IGNORE INTO meta (k, v) VALUES ('format', ?1)", [STORE_FORMAT])
                    .map_err(|e| err(Box::new(e)))?;
            }
            Some(STORE_FORMAT) => {}
            Some(other) => {
                return Err(err(format!(
                    "store format {other} is not supported by this tenon (expects {STORE_FORMAT}); use another --store"
                )
                .into()))
            }
        }
        Ok(SqliteStore { root: root.to_path_buf(), conn: Mutex::new(conn) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_file(&self, key: &str) -> Result<(PathBuf, std::fs::File)> {
        let p = self.root.join("locks").join(format!("{key}.lock"));
        let f = open_lock_file(&p).map_err(write_error(&p))?;
        Ok((p, f))
    }

    pub fn object_path(&self, digest: &str) -> PathBuf {
        let (a, b) = digest.split_at(2.min(digest.len()));
        self.root.join("objects").join(a).join(b)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_path_buf(), source }
    }

    fn row_to_record(
        row: &rusqlite::Row<'_>,
    ) -> rusqlite::Result<(String, String, String, String, i64, i64, String, String, String)> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        ))
    }

    fn decode(raw: (String, String, String, String, i64, i64, String, String, String)) -> Result<Record> {
        let (key, run, run_uid, task, created_ns, duration_ms, pre, res, outs) = raw;
        let corrupt = |m: String| StoreError::Corrupt { key: key.clone(), message: m };
        Ok(Record {
            preimage: serde_json::from_str(&pre).map_err(|e| corrupt(e.to_string()))?,
            results: serde_json::from_str(&res).map_err(|e| corrupt(e.to_string()))?,
            outputs: serde_json::from_str(&outs).map_err(|e| corrupt(e.to_string()))?,
            key: key.clone(),
            run,
            run_uid,
            task,
            created_ns,
            duration_ms: duration_ms as u64,
        })
    }

    /// Record a promotion decision before touching git. A decision already recorded
    /// keeps its original time (the ledger's `decidedAt` is written once). Returns it.
    pub fn record_decision(&self, id: &str, policy: &str, env: &str, decision: &str) -> Result<i64> {
        let conn = self.conn();
        let now = hash::now_ns();
        conn.execute(
            "INSERT OR IGNORE INTO promotions (id, policy, environment, state, decision, decided_ns, updated_ns) VALUES (?1, ?2, ?3, 'Decided', ?4, ?5, ?5)",
            params![id, policy, env, decision, now],
        )?;
        Ok(conn.query_row("SELECT decided_ns FROM promotions WHERE id = ?1", [id], |r| r.get(0))?)
    }

    pub fn set_promotion_state(&self, id: &str, state: &str, detail: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE promotions SET state = ?2, detail = ?3, updated_ns = ?4 WHERE id = ?1",
            params![id, state, detail, hash::now_ns()],
        )?;
        Ok(())
    }

    /// Promotions not finished (decided but not landed, or conflicted), oldest first:
    /// (id, decision JSON, decided_ns).
    pub fn unfinished_promotions(&self) -> Result<Vec<(String, String, i64)>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT id, decision, decided_ns FROM promotions WHERE state IN ('Decided', 'Conflicted') ORDER BY decided_ns")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// `tenon watch`: remember that `revision` of `source` was reconciled (so a restart
    /// does not redo it).
    pub fn record_reconciled(&self, source: &str, revision: &str, outcome: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO watch_revisions (source, revision, outcome, finished_ns) VALUES (?1, ?2, ?3, ?4)",
            params![source, revision, outcome, hash::now_ns()],
        )?;
        Ok(())
    }

    /// `tenon watch`: the outcome recorded for `revision` of `source`, if it was reconciled.
    pub fn reconciled_outcome(&self, source: &str, revision: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT outcome FROM watch_revisions WHERE source = ?1 AND revision = ?2",
                params![source, revision],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// `tenon watch`: the revision of `source` reconciled last.
    pub fn last_reconciled(&self, source: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT revision FROM watch_revisions WHERE source = ?1 ORDER BY finished_ns DESC LIMIT 1",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Results of the latest successful run of `run`: (uid, task -> results).
    pub fn latest_run_results(
        &self,
        run: &str,
    ) -> Result<Option<(String, BTreeMap<String, BTreeMap<String, ParamValue>>)>> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT uid, keys FROM runs WHERE run = ?1 AND ok = 1 ORDER BY finished_ns DESC LIMIT 1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((uid, keys)) = row else { return Ok(None) };
        let keys: Vec<String> = serde_json::from_str(&keys).unwrap_or_default();
        let mut out: BTreeMap<String, BTreeMap<String, ParamValue>> = BTreeMap::new();
        for k in keys {
            if let Some(rec) = self.get(&k)? {
                // matrix children `t[0]` aggregate like the engine does: skip them here
                if !rec.task.contains('[') {
                    out.insert(rec.task.clone(), rec.results.clone());
                }
            }
        }
        Ok(Some((uid, out)))
    }

    /// Records, newest first.
    pub fn list(&self) -> Result<Vec<RecordInfo>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT key, run, task, created_ns, duration_ms, outputs FROM records ORDER BY created_ns DESC")?;
        let rows = st.query_map([], |r| {
            let outs: String = r.get(5)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                outs,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, run, task, created_ns, duration_ms, outs) = row?;
            let sets: Vec<OutputSet> = serde_json::from_str(&outs).unwrap_or_default();
            let output_bytes =
                sets.iter().flat_map(|s| s.tree.entries.iter()).map(|e| self.object_size(&e.digest)).sum();
            out.push(RecordInfo { key, run, task, created_ns, duration_ms: duration_ms as u64, output_bytes });
        }
        Ok(out)
    }

    fn object_size(&self, digest: &str) -> u64 {
        if !is_digest(digest) {
            return 0;
        }
        std::fs::metadata(self.object_path(digest)).map(|m| m.len()).unwrap_or(0)
    }

    /// (run name, run directory name) of the latest successful run of each name: retention
    /// keeps their directories.
    pub fn latest_successful_runs(&self) -> Result<BTreeSet<(String, String)>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT r.run, r.uid FROM runs r WHERE r.ok = 1 AND r.finished_ns = (SELECT MAX(finished_ns) FROM runs x WHERE x.run = r.run AND x.ok = 1)",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = BTreeSet::new();
        for row in rows {
            let (run, uid) = row?;
            let dir = uid.chars().take(8).collect();
            out.insert((run, dir));
        }
        Ok(out)
    }

    /// Keys the latest successful run of each PipelineRun/TaskRun used.
    pub fn protected_keys(&self) -> Result<BTreeSet<String>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT r.keys FROM runs r WHERE r.ok = 1 AND r.finished_ns = (SELECT MAX(finished_ns) FROM runs x WHERE x.run = r.run AND x.ok = 1)",
        )?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut keys = BTreeSet::new();
        for row in rows {
            let list: Vec<String> = serde_json::from_str(&row?).unwrap_or_default();
            keys.extend(list);
        }
        Ok(keys)
    }

    /// Delete records older than `older_than_ns` and, oldest first, until stored objects
    /// fit in `max_bytes`; never what the latest successful run of a PipelineRun used.
    /// Then remove objects no record names. Returns (records removed, bytes freed).
    pub fn gc(&self, older_than_ns: Option<i64>, max_bytes: Option<u64>) -> Result<(usize, u64)> {
        let protected = self.protected_keys()?;
        let mut infos = self.list()?;
        infos.reverse(); // oldest first
        let mut doomed: Vec<String> = Vec::new();
        if let Some(cut) = older_than_ns {
            doomed.extend(
                infos.iter().filter(|i| i.created_ns < cut && !protected.contains(&i.key)).map(|i| i.key.clone()),
            );
        }
        if let Some(max) = max_bytes {
            let mut total: u64 = self.objects_size()?;
            for i in &infos {
                if total <= max {
                    break;
                }
                if protected.contains(&i.key) || doomed.contains(&i.key) {
                    continue;
                }
                doomed.push(i.key.clone());
                total = total.saturating_sub(i.output_bytes);
            }
        }
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            for k in &doomed {
                tx.execute("DELETE FROM records WHERE key = ?1", [k])?;
            }
            tx.commit()?;
        }
        let mut freed = self.sweep_objects()?;
        freed += self.prune_trees()?;
        // temporary files left by processes that died mid-store
        let tmp = self.root.join("tmp");
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in std::fs::read_dir(&tmp).map_err(Self::io(&tmp))?.flatten() {
            if let Ok(m) = e.metadata() {
                if m.modified().is_ok_and(|t| t < hour_ago) {
                    freed += m.len();
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok((doomed.len(), freed))
    }

    fn objects_size(&self) -> Result<u64> {
        let mut total = 0;
        for p in self.all_objects()? {
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }

    fn all_objects(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let dir = self.root.join("objects");
        for a in std::fs::read_dir(&dir).map_err(Self::io(&dir))?.flatten() {
            if let Ok(rd) = std::fs::read_dir(a.path()) {
                out.extend(rd.flatten().map(|e| e.path()));
            }
        }
        Ok(out)
    }

    fn referenced_objects(&self) -> Result<BTreeSet<String>> {
        Ok(self.object_refs()?.into_keys().collect())
    }

    /// Every object a record names -> the keys of the records naming it. A symlink of an
    /// older output format names the digest of its target text, never stored: not an object.
    fn object_refs(&self) -> Result<BTreeMap<String, BTreeSet<String>>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT key, outputs FROM records")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in rows {
            let (key, outs) = row?;
            let sets: Vec<OutputSet> = serde_json::from_str(&outs).unwrap_or_default();
            for s in sets {
                for e in s.tree.entries {
                    let object =
                        e.kind == hash::Kind::File || (e.kind == hash::Kind::Symlink && s.format == OUTPUT_FORMAT);
                    if object && is_digest(&e.digest) {
                        refs.entry(e.digest).or_default().insert(key.clone());
                    }
                }
            }
        }
        Ok(refs)
    }

    /// Drop remembered input trees that no record's preimage names (they only serve to
    /// explain misses against those records). Returns the bytes of JSON removed.
    fn prune_trees(&self) -> Result<u64> {
        let mut conn = self.conn();
        let mut keep = BTreeSet::new();
        {
            let mut st = conn.prepare("SELECT preimage FROM records")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            for row in rows {
                let v: serde_json::Value = serde_json::from_str(&row?).unwrap_or_default();
                for field in ["inputs", "upstream_outputs", "upstreamOutputs"] {
                    if let Some(m) = v.get(field).and_then(|m| m.as_object()) {
                        keep.extend(m.values().filter_map(|d| d.as_str()).map(str::to_string));
                    }
                }
            }
        }
        let tx = conn.transaction()?;
        let mut doomed = Vec::new();
        {
            let mut st = tx.prepare("SELECT root, length(entries) FROM trees")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (root, len) = row?;
                if !keep.contains(&root) {
                    doomed.push((root, len));
                }
            }
        }
        let mut freed = 0u64;
        for (root, len) in &doomed {
            tx.execute("DELETE FROM trees WHERE root = ?1", [root])?;
            freed += (*len).max(0) as u64;
        }
        tx.commit()?;
        Ok(freed)
    }

    fn sweep_objects(&self) -> Result<u64> {
        let keep = self.referenced_objects()?;
        let mut freed = 0;
        for p in self.all_objects()? {
            let digest = format!(
                "{}{}",
                p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
                p.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
            );
            if !keep.contains(&digest) {
                freed += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                let _ = std::fs::remove_file(&p);
            }
        }
        Ok(freed)
    }

    /// Re-hash every stored object (file contents and symlink target texts alike);
    /// returns the digests whose content does not match.
    pub fn verify(&self) -> Result<(usize, Vec<String>)> {
        let mut bad = Vec::new();
        let objs = self.all_objects()?;
        for p in &objs {
            let want = format!(
                "{}{}",
                p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
                p.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
            );
            match hash::hash_file(p) {
                Ok(got) if got == want => {}
                _ => bad.push(want),
            }
        }
        // records naming missing objects are corrupt too
        for d in self.referenced_objects()? {
            if !self.object_path(&d).exists() && !bad.contains(&d) {
                bad.push(d);
            }
        }
        Ok((objs.len(), bad))
    }

    /// `cache verify --repair`: remove the `bad` objects [`verify`](Self::verify) found
    /// and evict the records naming them (a later run stores them again). Returns the
    /// objects removed and the records evicted.
    pub fn repair(&self, bad: &[String]) -> Result<(Vec<String>, Vec<RecordInfo>)> {
        let refs = self.object_refs()?;
        let doomed: BTreeSet<&String> = bad.iter().filter_map(|d| refs.get(d)).flatten().collect();
        let evicted: Vec<RecordInfo> = self.list()?.into_iter().filter(|i| doomed.contains(&i.key)).collect();
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            for i in &evicted {
                tx.execute("DELETE FROM records WHERE key = ?1", [&i.key])?;
            }
            tx.commit()?;
        }
        let mut removed = Vec::new();
        for d in bad.iter().filter(|d| is_digest(d)) {
            let p = self.object_path(d);
            match std::fs::remove_file(&p) {
                Ok(()) => removed.push(d.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { path: p, source: e }),
            }
        }
        Ok((removed, evicted))
    }

    /// Why a record's outputs cannot be restored, if so: another output format, or an
    /// object missing or of the wrong size. Cheap (one stat per object, no read): the
    /// content is checked when it is restored.
    fn output_problem(&self, rec: &Record) -> Option<String> {
        for set in &rec.outputs {
            if set.format != OUTPUT_FORMAT {
                return Some(format!(
                    "output {}:{} was recorded by an older tenon (output format {}; this one reads {OUTPUT_FORMAT}, which keeps symlink targets and object sizes)",
                    set.workspace, set.path, set.format
                ));
            }
            for e in set.tree.entries.iter().filter(|e| e.kind != hash::Kind::Dir) {
                let label = entry_label(set, e);
                if !is_digest(&e.digest) {
                    return Some(format!("output object missing: {label} names no object"));
                }
                match std::fs::symlink_metadata(self.object_path(&e.digest)) {
                    Err(_) => return Some(format!("output object missing: {label} (sha256 {}..)", &e.digest[..8])),
                    Ok(m) if !m.is_file() || e.size != Some(m.len()) => {
                        return Some(format!(
                            "output object corrupt (size): {label} (sha256 {}.. is {} bytes, recorded {})",
                            &e.digest[..8],
                            m.len(),
                            e.size.map_or("none".into(), |s| s.to_string())
                        ))
                    }
                    Ok(_) => {}
                }
            }
        }
        None
    }

    /// The record of `key` as stored, whether or not its objects are intact.
    fn get_any(&self, key: &str) -> Result<Option<Record>> {
        let raw = self
            .conn()
            .prepare_cached(
                "SELECT key, run, run_uid, task, created_ns, duration_ms, preimage, results, outputs FROM records WHERE key = ?1",
            )?
            .query_row([key], Self::row_to_record)
            .optional()?;
        raw.map(Self::decode).transpose()
    }

    /// Whether the object at `dest` is present and holds `digest`: its size first (no
    /// read when it differs), then its content.
    fn object_sound(dest: &Path, digest: &str, size: u64) -> bool {
        match std::fs::symlink_metadata(dest) {
            Ok(m) if m.is_file() && m.len() == size => hash::hash_file(dest).is_ok_and(|d| d == digest),
            _ => false,
        }
    }

    /// A fresh name under `tmp/` for an object being written.
    fn tmp_path(&self, digest: &str) -> PathBuf {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root.join("tmp").join(format!("{}-{n}-{}", std::process::id(), &digest[..16]))
    }

    /// Store a symlink's target text as the object named by its digest (what the Merkle
    /// digest of a tree already hashes); returns (digest, size).
    fn store_link(&self, src: &Path) -> Result<(String, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let target = std::fs::read_link(src).map_err(Self::io(src))?;
        let text = target.as_os_str().as_bytes();
        let digest = hash::sha256_hex(text);
        let dest = self.object_path(&digest);
        if Self::object_sound(&dest, &digest, text.len() as u64) {
            return Ok((digest, text.len() as u64));
        }
        self.install(&digest, &dest, |tmp| std::fs::write(tmp, text).map_err(write_error(tmp)))?;
        Ok((digest, text.len() as u64))
    }

    /// The target text of a stored symlink, checked against its digest (a damaged object
    /// is removed: the next run that produces it stores it again).
    fn link_target(&self, e: &hash::Entry) -> Result<std::ffi::OsString> {
        use std::io::Read;
        use std::os::unix::ffi::OsStringExt;
        let corrupt = |m: String| StoreError::Corrupt { key: e.digest.clone(), message: m };
        if !is_digest(&e.digest) {
            return Err(corrupt(format!("symlink {} names no stored target (an older output format)", e.path)));
        }
        let obj = self.object_path(&e.digest);
        let mut text = Vec::new();
        // a target is at most PATH_MAX bytes: a larger object is damaged, never read whole
        let f = std::fs::File::open(&obj).map_err(Self::io(&obj))?;
        f.take(64 * 1024).read_to_end(&mut text).map_err(Self::io(&obj))?;
        if hash::sha256_hex(&text) != e.digest {
            let _ = std::fs::remove_file(&obj);
            return Err(corrupt(format!(
                "stored target of symlink {} does not match its digest (run `tenon cache verify`)",
                e.path
            )));
        }
        Ok(std::ffi::OsString::from_vec(text))
    }

    /// Returns (digest, size). An object already present is checked (size, then content)
    /// before it is reused: a damaged one is replaced by the fresh copy.
    fn store_file(&self, src: &Path) -> Result<(String, u64)> {
        let digest = hash::hash_file(src).map_err(Self::io(src))?;
        let dest = self.object_path(&digest);
        let size = std::fs::metadata(src).map_err(Self::io(src))?.len();
        if Self::object_sound(&dest, &digest, size) {
            return Ok((digest, size));
        }
        if dest.exists() {
            tracing::warn!(object = %digest, "replacing a corrupt stored object");
        }
        self.install(&digest, &dest, |tmp| {
            reflink_copy::reflink_or_copy(src, tmp).map_err(write_error(tmp))?;
            // the source may have changed while we copied: the object must match its name
            let got = hash::hash_file(tmp).map_err(Self::io(tmp))?;
            let stored = std::fs::metadata(tmp).map_err(Self::io(tmp))?.len();
            if got != digest || stored != size {
                return Err(StoreError::Io {
                    path: src.to_path_buf(),
                    source: std::io::Error::other("file changed while it was being stored"),
                });
            }
            Ok(())
        })?;
        Ok((digest, size))
    }

    /// Write the object `digest` to a fresh temporary file with `fill` (which checks what it
    /// wrote), then make it the object at `dest` (renamed over any damaged one). On any
    /// failure the temporary file is removed: a full disk must not fill up further.
    fn install(&self, digest: &str, dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let tmp = self.tmp_path(digest);
        let placed = fill(&tmp).and_then(|()| {
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(write_error(&tmp))?;
            use std::os::unix::fs::PermissionsExt;
            // read-only, owner-only
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400));
            if let Some(parent) = dest.parent() {
                make_private_dir(parent).map_err(write_error(parent))?;
            }
            std::fs::rename(&tmp, dest).map_err(write_error(dest))
        });
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }
}

/// A failure to write `path` in the store (a full disk, a read-only filesystem): tenon's
/// own failure, exit 3.
fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Write { path, source }
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        // a record whose objects are gone or damaged, or that this tenon cannot restore
        // exactly, is not a hit (`unusable` says why)
        Ok(self.get_any(key)?.filter(|rec| self.output_problem(rec).is_none()))
    }

    fn unusable(&self, key: &str) -> Result<Option<String>> {
        Ok(self.get_any(key)?.and_then(|rec| self.output_problem(&rec)))
    }

    fn put(&self, rec: &Record) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR REPLACE INTO records (key, run, run_uid, task, created_ns, duration_ms, preimage, results, outputs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                rec.key,
                rec.run,
                rec.run_uid,
                rec.task,
                rec.created_ns,
                rec.duration_ms as i64,
                rec.preimage.to_string(),
                serde_json::to_string(&rec.results).unwrap_or_default(),
                serde_json::to_string(&rec.outputs).unwrap_or_default(),
            ],
        )?;
        Ok(())
    }

    fn latest_for(&self, run: &str, task: &str) -> Result<Option<Record>> {
        let raw = self
            .conn()
            .prepare_cached(
                "SELECT key, run, run_uid, task, created_ns, duration_ms, preimage, results, outputs FROM records WHERE run = ?1 AND task = ?2 ORDER BY created_ns DESC LIMIT 1",
            )?
            .query_row([run, task], Self::row_to_record)
            .optional()?;
        raw.map(Self::decode).transpose()
    }

    fn store_output(&self, src: &Path) -> Result<Tree> {
        let meta = std::fs::symlink_metadata(src).map_err(Self::io(src))?;
        let mut entries = Vec::new();
        if meta.is_dir() {
            let cache = hash::StatCache::default();
            let t = hash::hash_tree(src, &hash::Filter::everything(), &cache, &hash::HashStats::default())
                .map_err(Self::io(src))?;
            for e in t.entries {
                let (digest, size) = match e.kind {
                    hash::Kind::File => self.store_file(&src.join(&e.path))?,
                    hash::Kind::Symlink => self.store_link(&src.join(&e.path))?,
                    hash::Kind::Dir => {
                        entries.push(e);
                        continue;
                    }
                };
                entries.push(hash::Entry { digest, size: Some(size), ..e });
            }
        } else if meta.file_type().is_symlink() {
            let (digest, size) = self.store_link(src)?;
            entries.push(hash::Entry {
                path: String::new(),
                kind: hash::Kind::Symlink,
                exec: false,
                digest,
                size: Some(size),
            });
        } else {
            use std::os::unix::fs::PermissionsExt;
            let (digest, size) = self.store_file(src)?;
            entries.push(hash::Entry {
                path: String::new(),
                kind: hash::Kind::File,
                exec: meta.permissions().mode() & 0o111 != 0,
                digest,
                size: Some(size),
            });
        }
        let mut h = sha2::Sha256::new();
        use sha2::Digest;
        for e in &entries {
            h.update(format!("{:?} {} {}:{} {}\n", e.kind, e.exec as u8, e.path.len(), e.path, e.digest).as_bytes());
        }
        Ok(Tree { root: hash::hex(&h.finalize()), entries })
    }

    fn restore_output(&self, tree: &Tree, dest: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // Never through a symlink tenon did not create (an earlier task may have planted
        // `out -> /somewhere`): every directory from `dest`'s parent down is a real one.
        let (top, name) = match (dest.parent(), dest.file_name()) {
            (Some(top), Some(name)) => (top, Path::new(name)),
            _ => (dest, Path::new("")),
        };
        std::fs::create_dir_all(top).map_err(Self::io(top))?;
        for e in &tree.entries {
            let rel = if e.path.is_empty() { name.to_path_buf() } else { name.join(&e.path) };
            let target = top.join(&rel);
            let dirs = if e.kind == hash::Kind::Dir { rel.as_path() } else { rel.parent().unwrap_or(Path::new("")) };
            create_dirs_nofollow(top, dirs).map_err(Self::io(&target))?;
            match e.kind {
                hash::Kind::Dir => {}
                hash::Kind::Symlink => {
                    let text = self.link_target(e)?;
                    let _ = std::fs::remove_file(&target);
                    std::os::unix::fs::symlink(&text, &target).map_err(Self::io(&target))?;
                }
                hash::Kind::File => {
                    let obj = self.object_path(&e.digest);
                    let _ = std::fs::remove_file(&target);
                    reflink_copy::reflink_or_copy(&obj, &target).map_err(Self::io(&obj))?;
                    // a corrupted object must never be restored as if it were the output
                    let got = hash::hash_file(&target).map_err(Self::io(&target))?;
                    if got != e.digest {
                        let _ = std::fs::remove_file(&target);
                        // evicted: the record is a miss from now on, and a rerun stores it again
                        let _ = std::fs::remove_file(&obj);
                        return Err(StoreError::Corrupt {
                            key: e.digest.clone(),
                            message: format!(
                                "stored object for {} does not match its digest (run `tenon cache verify`)",
                                e.path
                            ),
                        });
                    }
                    let mode = if e.exec { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                        .map_err(Self::io(&target))?;
                }
            }
        }
        Ok(())
    }

    fn stat_cache(&self) -> Result<Vec<StatRecord>> {
        let blob: Option<Vec<u8>> =
            self.conn().query_row("SELECT data FROM stat_blob WHERE id = 1", [], |r| r.get(0)).optional()?;
        Ok(blob.map(|b| decode_stats(&b)).unwrap_or_default())
    }

    fn save_stats(&self, updates: &[StatRecord]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        // read-modify-write in one immediate transaction: concurrent tenons lose nothing
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let blob: Option<Vec<u8>> =
            tx.query_row("SELECT data FROM stat_blob WHERE id = 1", [], |r| r.get(0)).optional()?;
        let mut all: HashMap<hash::Stat, StatRecord> =
            blob.map(|b| decode_stats(&b)).unwrap_or_default().into_iter().map(|r| (r.stat, r)).collect();
        for r in updates {
            let keep_used = all.get(&r.stat).map_or(0, |o| o.used_ns);
            all.insert(r.stat, StatRecord { used_ns: r.used_ns.max(keep_used), ..r.clone() });
        }
        // one record per path (the newest: older ones describe content the path no longer
        // has), and none that no run has used for a while: the blob stays the size of the
        // trees being built
        let mut newest: HashMap<u64, i64> = HashMap::with_capacity(all.len());
        for r in all.values() {
            let n = newest.entry(r.path_hash).or_insert(r.recorded_ns);
            *n = (*n).max(r.recorded_ns);
        }
        let horizon = hash::now_ns() - hash::STAT_RECORD_TTL_NS;
        all.retain(|_, r| {
            r.used_ns >= horizon && (r.path_hash == 0 || newest.get(&r.path_hash) == Some(&r.recorded_ns))
        });
        tx.execute("INSERT OR REPLACE INTO stat_blob (id, data) VALUES (1, ?1)", [encode_stats(all.values())])?;
        tx.commit()?;
        Ok(())
    }

    fn put_tree(&self, tree: &Tree) -> Result<()> {
        // a tree is immutable by its digest: skip the (possibly large) encoding when known
        let known: Option<i64> = self
            .conn()
            .prepare_cached("SELECT 1 FROM trees WHERE root = ?1")?
            .query_row([&tree.root], |r| r.get(0))
            .optional()?;
        if known.is_some() {
            return Ok(());
        }
        self.conn().execute(
            "INSERT OR IGNORE INTO trees (root, entries) VALUES (?1, ?2)",
            params![tree.root, serde_json::to_string(&tree.entries).unwrap_or_default()],
        )?;
        Ok(())
    }

    fn get_tree(&self, root: &str) -> Result<Option<Tree>> {
        let raw: Option<String> = self
            .conn()
            .prepare_cached("SELECT entries FROM trees WHERE root = ?1")?
            .query_row([root], |r| r.get(0))
            .optional()?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()).map(|entries| Tree { root: root.to_string(), entries }))
    }

    fn record_run(&self, run: &str, uid: &str, ok: bool, keys: &[String]) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO runs (run, uid, finished_ns, ok, keys) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run, uid, hash::now_ns(), ok as i64, serde_json::to_string(keys).unwrap_or_default()],
        )?;
        Ok(())
    }

    fn lock_key(&self, key: &str) -> Result<KeyLock> {
        use fs4::fs_std::FileExt;
        let (p, f) = self.lock_file(key)?;
        f.lock_exclusive().map_err(Self::io(&p))?;
        Ok(KeyLock { _file: f })
    }

    fn object_file(&self, digest: &str, size: u64) -> Option<PathBuf> {
        if !is_digest(digest) {
            return None;
        }
        let p = self.object_path(digest);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.len() == size => Some(p),
            _ => None,
        }
    }

    fn import_object(&self, digest: &str, size: u64, src: &Path) -> Result<()> {
        if !is_digest(digest) {
            return Err(StoreError::Corrupt { key: digest.to_string(), message: "not an object digest".into() });
        }
        let got = std::fs::symlink_metadata(src).map_err(Self::io(src))?;
        if !got.is_file() || got.len() != size {
            return Err(StoreError::Corrupt {
                key: digest.to_string(),
                message: format!("object of {} bytes where {size} were expected", got.len()),
            });
        }
        let dest = self.object_path(digest);
        self.install(digest, &dest, |tmp| std::fs::rename(src, tmp).map_err(write_error(tmp)))
    }

    fn scratch_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn try_lock_key(&self, key: &str) -> Result<Option<KeyLock>> {
        use fs4::fs_std::FileExt;
        let (p, f) = self.lock_file(key)?;
        match f.try_lock_exclusive() {
            Ok(true) => Ok(Some(KeyLock { _file: f })),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_blob_round_trips() {
        use sha2::{Digest, Sha256};
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(d.path()).unwrap();
        let now = hash::now_ns();
        let rec = |n: i64, used: i64| StatRecord {
            stat: Stat { dev: 1, ino: n as u64, size: 3, mtime_ns: n, ctime_ns: n + 1 },
            digest: Sha256::digest(n.to_le_bytes()).into(),
            recorded_ns: n + 2,
            used_ns: used,
            path_hash: 100 + n as u64,
        };
        s.save_stats(&[rec(1, now), rec(2, now), rec(3, now - hash::STAT_RECORD_TTL_NS - 1)]).unwrap();
        // a newer record for the same stat replaces it, keeping the latest use
        s.save_stats(&[StatRecord { recorded_ns: 99, ..rec(1, now - 5) }]).unwrap();
        let mut m = s.stat_cache().unwrap();
        m.sort_by_key(|r| r.stat.ino);
        assert_eq!(m.len(), 2, "the record unused for longer than the TTL is gone: {m:?}");
        assert_eq!(m[0], StatRecord { recorded_ns: 99, ..rec(1, now) });
        assert_eq!(m[1], rec(2, now));
        // the same path rewritten: only its newest record stays (no growth per edit)
        for k in 10..20 {
            s.save_stats(&[StatRecord { path_hash: 102, ..rec(k, now) }]).unwrap();
        }
        let m = s.stat_cache().unwrap();
        let of_path: Vec<_> = m.iter().filter(|r| r.path_hash == 102).collect();
        assert_eq!(of_path.len(), 1, "{of_path:?}");
        assert_eq!(of_path[0].stat.ino, 19);
        assert_eq!(m.len(), 2);
        // an unknown or torn blob decodes to nothing (a re-hash, never a wrong digest)
        assert!(decode_stats(b"TSC1\0\0").is_empty());
        let mut torn = encode_stats([rec(1, now)].iter());
        torn.pop();
        assert!(decode_stats(&torn).is_empty());
    }

    fn rec(key: &str, run: &str, created: i64) -> Record {
        Record {
            key: key.into(),
            run: run.into(),
            run_uid: "u".into(),
            task: "t".into(),
            created_ns: created,
            duration_ms: 5,
            preimage: serde_json::json!({"v": 1}),
            results: BTreeMap::from([("r".to_string(), ParamValue::Str("x\n".into()))]),
            outputs: vec![],
        }
    }

    #[test]
    fn records_round_trip_in_a_real_sqlite_file() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(d.path()).unwrap();
        assert!(s.get("k").unwrap().is_none());
        s.put(&rec("k", "run", 1)).unwrap();
        drop(s);
        let s = SqliteStore::open(d.path()).unwrap();
        let r = s.get("k").unwrap().unwrap();
        assert_eq!(r, rec("k", "run", 1));
        s.put(&rec("k2", "run", 2)).unwrap();
        assert_eq!(s.latest_for("run", "t").unwrap().unwrap().key, "k2");
    }

    /// A store in a temp dir holding one output: `m/model.bin` = "weights".
    fn stored_model() -> (tempfile::TempDir, SqliteStore, Tree) {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("store")).unwrap();
        let src = d.path().join("out");
        std::fs::create_dir_all(src.join("m")).unwrap();
        std::fs::write(src.join("m/model.bin"), b"weights").unwrap();
        let tree = s.store_output(&src).unwrap();
        (d, s, tree)
    }

    /// An earlier task may plant `out -> /host/dir` (or a link deeper down): restoring
    /// must not write through it into the host directory.
    #[test]
    fn restore_never_writes_through_a_planted_symlink() {
        let (d, s, tree) = stored_model();
        let host = d.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        // the output directory itself is a planted link
        std::os::unix::fs::symlink(&host, ws.join("out")).unwrap();
        let err = s.restore_output(&tree, &ws.join("out")).unwrap_err();
        let cause = std::error::Error::source(&err).map(|c| c.to_string()).unwrap_or_default();
        assert!(cause.contains("symlink tenon did not create"), "{err}: {cause}");
        // a directory inside it is one
        std::fs::remove_file(ws.join("out")).unwrap();
        std::fs::create_dir_all(ws.join("out")).unwrap();
        std::os::unix::fs::symlink(&host, ws.join("out/m")).unwrap();
        assert!(s.restore_output(&tree, &ws.join("out")).is_err());
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "restore wrote into the link's target");
        // without planted links, the same restore works
        std::fs::remove_file(ws.join("out/m")).unwrap();
        s.restore_output(&tree, &ws.join("out")).unwrap();
        assert_eq!(std::fs::read(ws.join("out/m/model.bin")).unwrap(), b"weights");
    }

    #[test]
    fn outputs_are_content_addressed_and_restored_as_copies() {
        let (d, s, tree) = stored_model();
        assert!(s.object_path(&hash::sha256_hex(b"weights")).exists());
        let dest = d.path().join("restored");
        s.restore_output(&tree, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("m/model.bin")).unwrap(), b"weights");
        // modifying the restored copy never corrupts the store
        std::fs::write(dest.join("m/model.bin"), b"tampered").unwrap();
        assert_eq!(std::fs::read(s.object_path(&hash::sha256_hex(b"weights"))).unwrap(), b"weights");
        let (n, bad) = s.verify().unwrap();
        assert_eq!((n, bad.len()), (1, 0));
    }

    #[test]
    fn gc_keeps_what_the_latest_successful_run_used() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(d.path()).unwrap();
        s.put(&rec("old", "run", 1)).unwrap();
        s.put(&rec("kept", "run", 2)).unwrap();
        s.record_run("run", "u1", true, &["kept".into()]).unwrap();
        let (removed, _) = s.gc(Some(i64::MAX), None).unwrap();
        assert_eq!(removed, 1);
        assert!(s.get("old").unwrap().is_none());
        assert!(s.get("kept").unwrap().is_some());
    }

    #[test]
    fn gc_prunes_input_trees_no_record_names() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(d.path()).unwrap();
        let tree = |root: &str| Tree { root: root.into(), entries: vec![] };
        for t in ["used", "gone", "upstream"] {
            s.put_tree(&tree(t)).unwrap();
        }
        let mut r = rec("k", "run", 1);
        r.preimage = serde_json::json!({"inputs": {"source": "used"}, "upstreamOutputs": {"a w:m": "upstream"}});
        s.put(&r).unwrap();
        s.record_run("run", "u1", true, &["k".into()]).unwrap();
        s.gc(Some(0), None).unwrap();
        assert!(s.get_tree("used").unwrap().is_some());
        assert!(s.get_tree("upstream").unwrap().is_some());
        assert!(s.get_tree("gone").unwrap().is_none(), "a tree no record names is pruned");
    }

    #[test]
    fn verify_reports_corruption_and_missing_objects_are_no_hit() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(d.path().join("st").as_path()).unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"data").unwrap();
        let tree = s.store_output(&f).unwrap();
        let mut r = rec("k", "run", 1);
        r.outputs =
            vec![OutputSet { workspace: "w".into(), path: "f".into(), tree: tree.clone(), format: OUTPUT_FORMAT }];
        s.put(&r).unwrap();
        let obj = s.object_path(&tree.entries[0].digest);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&obj, b"rot").unwrap();
        assert_eq!(s.verify().unwrap().1, vec![tree.entries[0].digest.clone()]);
        std::fs::remove_file(&obj).unwrap();
        assert!(s.get("k").unwrap().is_none(), "a record whose objects are gone must not hit");
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
    }

    #[test]
    fn store_files_are_owner_only_and_an_existing_store_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("st");
        // a store an older tenon left world-readable
        drop(SqliteStore::open(&root).unwrap());
        for (p, m) in [("", 0o755), ("objects", 0o755), ("tmp", 0o777), ("locks", 0o755), ("tenon.db", 0o644)] {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        let s = SqliteStore::open(&root).unwrap();
        s.put(&rec("k", "run", 1)).unwrap();
        s.save_stats(&[]).unwrap();
        let f = d.path().join("out");
        std::fs::write(&f, b"secret output").unwrap();
        let tree = s.store_output(&f).unwrap();
        let _lock = s.lock_key("abc").unwrap();
        let obj = s.object_path(&tree.entries[0].digest);
        for dir in
            [root.clone(), root.join("objects"), root.join("tmp"), root.join("locks"), obj.parent().unwrap().into()]
        {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        // the -wal and -shm files exist while the store is open
        for file in ["tenon.db", "tenon.db-wal", "tenon.db-shm", "locks/abc.lock"] {
            assert_eq!(mode(&root.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&obj), 0o400, "objects are read-only, owner-only");
    }

    #[test]
    fn a_failed_object_write_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("st")).unwrap();
        let f = d.path().join("out");
        std::fs::write(&f, b"data").unwrap();
        // the object's directory cannot be created (a file is in the way): the write fails
        // after the temporary copy was made
        let digest = hash::sha256_hex(b"data");
        std::fs::write(d.path().join("st/objects").join(&digest[..2]), b"").unwrap();
        let e = s.store_output(&f).unwrap_err();
        assert!(e.is_store_failure(), "{e}");
        assert!(e.to_string().contains("File exists") || e.to_string().contains("Not a directory"), "{e}");
        assert_eq!(std::fs::read_dir(d.path().join("st/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn symlinks_in_outputs_round_trip_with_their_exact_target() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("store")).unwrap();
        let src = d.path().join("out");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("model-v1.json"), b"{}").unwrap();
        symlink("model-v1.json", src.join("latest")).unwrap();
        symlink("../latest", src.join("bin/current")).unwrap();
        symlink("/nonexistent/abs", src.join("dangling")).unwrap();
        let tree = s.store_output(&src).unwrap();
        let dest = d.path().join("restored");
        s.restore_output(&tree, &dest).unwrap();
        for (link, target) in
            [("latest", "model-v1.json"), ("bin/current", "../latest"), ("dangling", "/nonexistent/abs")]
        {
            assert_eq!(std::fs::read_link(dest.join(link)).unwrap(), Path::new(target), "{link}");
        }
        assert_eq!(std::fs::read(dest.join("bin/current")).unwrap(), b"{}");
        // a declared output that is itself a link
        let top = d.path().join("top");
        symlink("out/model-v1.json", &top).unwrap();
        let top_tree = s.store_output(&top).unwrap();
        s.restore_output(&top_tree, &d.path().join("top2")).unwrap();
        assert_eq!(std::fs::read_link(d.path().join("top2")).unwrap(), Path::new("out/model-v1.json"));
        // targets are objects like contents: verify checks them and finds nothing wrong
        let mut r = rec("k", "run", 1);
        r.outputs = vec![
            OutputSet { workspace: "w".into(), path: "out/".into(), tree: tree.clone(), format: OUTPUT_FORMAT },
            OutputSet { workspace: "w".into(), path: "top".into(), tree: top_tree, format: OUTPUT_FORMAT },
        ];
        s.put(&r).unwrap();
        assert!(s.get("k").unwrap().is_some());
        assert_eq!(s.verify().unwrap(), (5, vec![]));
        // the root tells a link from a file with its target as content, and a retarget
        let root = |p: &Path| s.store_output(p).unwrap().root;
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"model-v1.json").unwrap();
        symlink("model-v1.json", &b).unwrap();
        let link_root = root(&b);
        assert_ne!(root(&a), link_root, "a link and a file holding its target text");
        std::fs::remove_file(&b).unwrap();
        symlink("model-v2.json", &b).unwrap();
        assert_ne!(root(&b), link_root, "a retargeted link");
    }

    #[test]
    fn storing_again_replaces_a_corrupt_object() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("store")).unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"weights").unwrap();
        let tree = s.store_output(&f).unwrap();
        let obj = s.object_path(&tree.entries[0].digest);
        for rot in [&b"weighTs"[..], b"w"] {
            std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&obj, rot).unwrap();
            assert_eq!(s.store_output(&f).unwrap(), tree);
            assert_eq!(std::fs::read(&obj).unwrap(), b"weights", "a damaged object ({rot:?}) must be replaced");
        }
        assert_eq!(s.verify().unwrap(), (1, vec![]));
    }

    #[test]
    fn a_record_that_cannot_be_restored_is_a_miss_that_says_why() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("store")).unwrap();
        let src = d.path().join("m");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("w.bin"), b"weights").unwrap();
        let tree = s.store_output(&src).unwrap();
        let digest = hash::sha256_hex(b"weights");
        let mut r = rec("k", "run", 1);
        r.outputs = vec![OutputSet { workspace: "work".into(), path: "m/".into(), tree, format: OUTPUT_FORMAT }];
        s.put(&r).unwrap();
        assert!(s.get("k").unwrap().is_some());
        assert_eq!(s.unusable("k").unwrap(), None);
        assert_eq!(s.unusable("nothing").unwrap(), None);
        let obj = s.object_path(&digest);
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&obj, b"rot").unwrap();
        assert!(s.get("k").unwrap().is_none(), "a wrong-size object is no hit");
        assert_eq!(
            s.unusable("k").unwrap().as_deref(),
            Some(
                format!(
                    "output object corrupt (size): work:m/w.bin (sha256 {}.. is 3 bytes, recorded 7)",
                    &digest[..8]
                )
                .as_str()
            )
        );
        std::fs::remove_file(&obj).unwrap();
        assert!(s.get("k").unwrap().is_none());
        assert_eq!(
            s.unusable("k").unwrap().as_deref(),
            Some(format!("output object missing: work:m/w.bin (sha256 {}..)", &digest[..8]).as_str())
        );
        // a record of the older format (a link kept as raw target text) is a miss, and
        // its text never becomes a path under objects/
        let old = hash::Entry {
            path: String::new(),
            kind: hash::Kind::Symlink,
            exec: false,
            digest: "../../outside".into(),
            size: None,
        };
        let mut r = rec("old", "run", 2);
        r.outputs = vec![OutputSet {
            workspace: "work".into(),
            path: "latest".into(),
            tree: Tree { root: "x".into(), entries: vec![old.clone()] },
            format: 0,
        }];
        s.put(&r).unwrap();
        assert!(s.get("old").unwrap().is_none());
        let why = s.unusable("old").unwrap().unwrap();
        assert!(why.contains("output format 0"), "{why}");
        let tree = Tree { root: "x".into(), entries: vec![old] };
        assert!(s.restore_output(&tree, &d.path().join("dest")).is_err());
        assert_eq!(s.verify().unwrap().1, vec![digest.clone()], "only the missing object, not the old link");
    }

    #[test]
    fn key_lock_is_exclusive_across_handles() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(d.path()).unwrap();
        let g = s.lock_key("abc").unwrap();
        let p = d.path().join("locks/abc.lock");
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        use fs4::fs_std::FileExt;
        assert!(!f.try_lock_exclusive().unwrap_or(false), "second lock must not be granted while held");
        assert!(s.try_lock_key("abc").unwrap().is_none(), "try_lock_key must not wait, nor take a held lock");
        drop(g);
        assert!(f.try_lock_exclusive().unwrap());
        drop(f);
        assert!(s.try_lock_key("abc").unwrap().is_some());
    }
}
