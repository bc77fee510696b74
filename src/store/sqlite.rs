//! Opening the SQLite store, its record queries and the `Store` implementation.

use super::*;

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

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_file(&self, key: &str) -> Result<(PathBuf, std::fs::File)> {
        let p = self.root.join("locks").join(format!("{key}.lock"));
        let f = open_lock_file(&p).map_err(write_error(&p))?;
        Ok((p, f))
    }

    pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_path_buf(), source }
    }

    pub(super) fn row_to_record(
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

    pub(super) fn decode(raw: (String, String, String, String, i64, i64, String, String, String)) -> Result<Record> {
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

    /// Promotions not finished (decided but not landed, or conflicted), oldest first:
    /// (id, decision JSON, decided_ns).
    pub fn unfinished_promotions(&self) -> Result<Vec<(String, String, i64)>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT id, decision, decided_ns FROM promotions WHERE state IN ('Decided', 'Conflicted') ORDER BY decided_ns")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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

    fn blob_digests(&self, blobs: &[String]) -> Result<HashMap<String, hash::git::BlobDigest>> {
        let conn = self.conn();
        let mut out = HashMap::new();
        // a few hundred ids per query: one statement per chunk, not one per file
        for chunk in blobs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut st =
                conn.prepare(&format!("SELECT blob, sha256, size, lfs FROM git_blobs WHERE blob IN ({marks})"))?;
            let rows = st.query_map(rusqlite::params_from_iter(chunk), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    hash::git::BlobDigest {
                        sha256: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        lfs: r.get::<_, i64>(3)? != 0,
                    },
                ))
            })?;
            for row in rows {
                let (b, d) = row?;
                // a damaged row is no memo entry
                if is_digest(&d.sha256) {
                    out.insert(b, d);
                }
            }
        }
        Ok(out)
    }

    fn save_blob_digests(&self, rows: &[(String, hash::git::BlobDigest)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO git_blobs (blob, sha256, size, lfs) VALUES (?1, ?2, ?3, ?4)")?;
            for (b, d) in rows {
                st.execute(params![b, d.sha256, d.size as i64, d.lfs as i64])?;
            }
        }
        cap_git_blobs(&tx, super::MAX_GIT_BLOBS)?;
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

impl StateStore for SqliteStore {
    fn record_decision(&self, id: &str, policy: &str, env: &str, decision: &str) -> Result<i64> {
        let conn = self.conn();
        let now = hash::now_ns();
        conn.execute(
            "INSERT OR IGNORE INTO promotions (id, policy, environment, state, decision, decided_ns, updated_ns) VALUES (?1, ?2, ?3, 'Decided', ?4, ?5, ?5)",
            params![id, policy, env, decision, now],
        )?;
        Ok(conn.query_row("SELECT decided_ns FROM promotions WHERE id = ?1", [id], |r| r.get(0))?)
    }

    fn set_promotion_state(&self, id: &str, state: PromotionState, detail: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE promotions SET state = ?2, detail = ?3, updated_ns = ?4 WHERE id = ?1",
            params![id, state.as_str(), detail, hash::now_ns()],
        )?;
        Ok(())
    }

    fn record_reconciled(&self, source: &str, revision: &str, outcome: ReconcileOutcome) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO watch_revisions (source, revision, outcome, finished_ns) VALUES (?1, ?2, ?3, ?4)",
            params![source, revision, outcome.as_str(), hash::now_ns()],
        )?;
        Ok(())
    }

    fn reconciled_outcome(&self, source: &str, revision: &str) -> Result<Option<ReconcileOutcome>> {
        let outcome: Option<String> = self
            .conn()
            .query_row(
                "SELECT outcome FROM watch_revisions WHERE source = ?1 AND revision = ?2",
                params![source, revision],
                |r| r.get(0),
            )
            .optional()?;
        outcome
            .map(|o| {
                ReconcileOutcome::parse(&o).ok_or_else(|| StoreError::Corrupt {
                    key: format!("{source} {revision}"),
                    message: format!("unknown reconcile outcome {o:?}"),
                })
            })
            .transpose()
    }

    fn last_reconciled(&self, source: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT revision FROM watch_revisions WHERE source = ?1 ORDER BY finished_ns DESC LIMIT 1",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn latest_run_results(&self, run: &str) -> Result<Option<(String, RunResults)>> {
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
        let mut out: RunResults = BTreeMap::new();
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
}

/// Keep the git blob memo at most `cap` rows: past it, the rows learned longest ago go (down
/// to 90% of the cap; a row replaced when learned again is new). A row that goes costs one
/// file read when it is next needed.
pub(super) fn cap_git_blobs(conn: &rusqlite::Connection, cap: i64) -> Result<()> {
    let rows: i64 = conn.query_row("SELECT count(*) FROM git_blobs", [], |r| r.get(0))?;
    if rows > cap {
        conn.execute(
            "DELETE FROM git_blobs WHERE rowid IN (SELECT rowid FROM git_blobs ORDER BY rowid LIMIT ?1)",
            [rows - cap * 9 / 10],
        )?;
    }
    Ok(())
}
