//! Garbage collection, verification and repair of the store.

use super::*;

impl SqliteStore {
    pub(super) fn object_size(&self, digest: &str) -> u64 {
        if !is_digest(digest) {
            return 0;
        }
        std::fs::metadata(self.object_path(digest)).map(|m| m.len()).unwrap_or(0)
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

    pub(super) fn objects_size(&self) -> Result<u64> {
        let mut total = 0;
        for p in self.all_objects()? {
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }

    pub(super) fn all_objects(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let dir = self.root.join("objects");
        for a in std::fs::read_dir(&dir).map_err(Self::io(&dir))?.flatten() {
            if let Ok(rd) = std::fs::read_dir(a.path()) {
                out.extend(rd.flatten().map(|e| e.path()));
            }
        }
        Ok(out)
    }

    pub(super) fn referenced_objects(&self) -> Result<BTreeSet<String>> {
        Ok(self.object_refs()?.into_keys().collect())
    }

    /// Every object a record names -> the keys of the records naming it. A symlink of an
    /// older output format names the digest of its target text, never stored: not an object.
    pub(super) fn object_refs(&self) -> Result<BTreeMap<String, BTreeSet<String>>> {
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
    pub(super) fn prune_trees(&self) -> Result<u64> {
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

    pub(super) fn sweep_objects(&self) -> Result<u64> {
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
    pub(super) fn output_problem(&self, rec: &Record) -> Option<String> {
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
    pub(super) fn get_any(&self, key: &str) -> Result<Option<Record>> {
        let raw = self
            .conn()
            .prepare_cached(
                "SELECT key, run, run_uid, task, created_ns, duration_ms, preimage, results, outputs FROM records WHERE key = ?1",
            )?
            .query_row([key], Self::row_to_record)
            .optional()?;
        raw.map(Self::decode).transpose()
    }
}
