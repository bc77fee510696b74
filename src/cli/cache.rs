//! `tenon cache` and `tenon remote`: the local store and the OCI remote cache.

use super::*;

/// The shared cache named by `--cache-repo`, or a usage error.
pub(super) fn remote_cache(a: &RemoteArgs) -> Result<crate::remote::RemoteCache, Error> {
    let s = a.settings().ok_or_else(|| Error::Usage("this needs --cache-repo URL (or TENON_CACHE_REPO)".into()))?;
    crate::remote::RemoteCache::new(&s).map_err(|message| ReconcileError::RemoteCache { message }.into())
}

/// A registry failure in a cache command: tenon could not work (exit 3), credentials never shown.
pub(super) fn registry_error(e: crate::oci::OciError) -> Error {
    Error::Registry { source: e }
}

pub(super) async fn remote_ls(a: &RemoteArgs, output: OutputFormat) -> Result<Outcome, Error> {
    let r = remote_cache(a)?;
    let list = r.list_records().await.map_err(registry_error)?;
    match output {
        OutputFormat::Json => print_json(
            &serde_json::json!({"apiVersion": API_VERSION, "kind": "RemoteCacheList", "repository": r.url(), "records": list}),
        )?,
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{:16}  {:24}  {:24}  {:>12}  {:6}  CREATED", "KEY", "RUN", "TASK", "SIZE", "SIGNED");
            for e in &list {
                let _ = writeln!(
                    out,
                    "{:16}  {:24}  {:24}  {:>12}  {:6}  {}{}",
                    &e.key[..16],
                    e.run,
                    e.task,
                    e.size,
                    if e.signed { "yes" } else { "no" },
                    e.created,
                    e.problem.as_ref().map(|p| format!("  (unusable: {p})")).unwrap_or_default()
                );
            }
            let _ = writeln!(out, "{} record(s) in {}", list.len(), r.url());
        }
    }
    Ok(Outcome::Ok)
}

pub(super) async fn remote_gc(a: &GcArgs) -> Result<Outcome, Error> {
    let Some(age) = a.older_than else {
        return Err(Error::Usage("cache gc --remote needs --older-than DURATION".into()));
    };
    let r = remote_cache(&a.remote_args)?;
    let protected = match open_store(a.store.store.as_ref()) {
        Ok(s) => s.protected_keys().map_err(|e| Error::Store(e.to_string()))?,
        Err(_) => Default::default(),
    };
    let cut = std::time::SystemTime::now() - age;
    let list = r.list_records().await.map_err(registry_error)?;
    let (mut deleted, mut kept, mut freed) = (Vec::new(), 0usize, 0u64);
    for e in &list {
        let old = e.created_time().is_some_and(|t| t < cut);
        if !old || protected.contains(&e.key) {
            kept += 1;
            continue;
        }
        let d = crate::oci::Digest::parse(&e.digest).map_err(registry_error)?;
        r.delete(&d).await.map_err(registry_error)?;
        freed += e.size;
        deleted.push(e.key.clone());
    }
    match a.store.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "RemoteCacheGc", "repository": r.url(),
            "deletedRecords": deleted, "keptRecords": kept, "unreferencedBytes": freed,
        }))?,
        OutputFormat::Human => {
            let _ = writeln!(
                std::io::stdout(),
                "deleted {} record(s) from {} ({} bytes of layers may now be unreferenced), kept {kept}; the registry frees the blobs in its own garbage collection (Distribution: `registry garbage-collect --delete-untagged CONFIG` with the registry stopped or read-only)",
                deleted.len(),
                r.url(),
                freed
            );
        }
    }
    Ok(Outcome::Ok)
}

pub(super) async fn remote_push(a: &RemoteStoreArgs) -> Result<Outcome, Error> {
    let r = Arc::new(remote_cache(&a.remote)?);
    let s = open_store(a.store.store.as_ref())?;
    let keys = s.protected_keys().map_err(|e| Error::Store(e.to_string()))?;
    let keys = crate::remote::present(&s, &keys);
    let store: Arc<dyn crate::store::Store> = Arc::new(s);
    let mut ok = 0usize;
    for k in &keys {
        if r.publish(k, &store).await {
            ok += 1;
        }
    }
    let sum = r.finish().await;
    match a.store.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CachePush", "records": keys.len(), "inRegistry": ok, "remoteCache": sum,
        }))?,
        OutputFormat::Human => {
            let _ = writeln!(
                std::io::stdout(),
                "{ok} of {} record(s) are in {} now ({} pushed, {} bytes uploaded)",
                keys.len(),
                sum.url,
                sum.published,
                sum.bytes_out
            );
        }
    }
    Ok(if ok == keys.len() { Outcome::Ok } else { Outcome::RunFailed })
}

pub(super) fn open_store(dir: Option<&PathBuf>) -> Result<SqliteStore, Error> {
    reconcile::open_store(&dir.cloned().unwrap_or_else(default_store))
}

pub(super) async fn cache_cmd(c: CacheCommand) -> Result<Outcome, Error> {
    match c {
        CacheCommand::Ls(a) if a.remote => remote_ls(&a.remote_args, a.store.output).await,
        CacheCommand::Gc(a) if a.remote => remote_gc(&a).await,
        CacheCommand::Push(a) => remote_push(&a).await,
        CacheCommand::Pull(a) => pull_cmd(a).await,
        CacheCommand::Ls(a) => cache_ls(&a.store),
        CacheCommand::Gc(a) => cache_gc(&a),
        CacheCommand::Verify(a) => cache_verify(&a),
        CacheCommand::Reset(a) => cache_reset(&a),
    }
}

/// A store failure in a cache command.
fn db(e: crate::store::StoreError) -> Error {
    Error::Store(e.to_string())
}

/// `tenon cache ls`: the local store's records, newest first.
fn cache_ls(a: &StoreArgs) -> Result<Outcome, Error> {
    let s = open_store(a.store.as_ref())?;
    let list = s.list().map_err(db)?;
    match a.output {
        OutputFormat::Json => {
            print_json(&serde_json::json!({"apiVersion": API_VERSION, "kind": "CacheList", "records": list}))?
        }
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:16}  {:24}  {:24}  {:>10}  {:>12}  CREATED",
                "KEY", "RUN", "TASK", "DURATION", "OUTPUTS"
            );
            for r in &list {
                let created = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(r.created_ns.max(0) as u64),
                );
                let _ = writeln!(
                    out,
                    "{:16}  {:24}  {:24}  {:>9.1}s  {:>12}  {created}",
                    &r.key[..16],
                    r.run,
                    r.task,
                    r.duration_ms as f64 / 1000.0,
                    r.output_bytes
                );
            }
            let _ = writeln!(out, "{} record(s)", list.len());
        }
    }
    Ok(Outcome::Ok)
}

/// `tenon cache gc`: drop records by age or total size, and prune run directories.
fn cache_gc(a: &GcArgs) -> Result<Outcome, Error> {
    if a.older_than.is_none() && a.max_size.is_none() && a.keep_runs.is_none() {
        return Err(Error::Usage("cache gc needs --older-than DURATION, --max-size SIZE and/or --keep-runs N".into()));
    }
    let state_dir = a.store.store.clone().unwrap_or_else(default_store);
    let s = open_store(Some(&state_dir))?;
    let (n, freed) = if a.older_than.is_some() || a.max_size.is_some() {
        let cut = a.older_than.map(|d| crate::hash::now_ns() - d.as_nanos() as i64);
        s.gc(cut, a.max_size).map_err(db)?
    } else {
        (0, 0)
    };
    let keep = a.keep_runs.unwrap_or(crate::retention::DEFAULT_KEEP_RUNS);
    let runs = reconcile::prune_run_dirs(&state_dir, &s, keep);
    match a.store.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CacheGc", "removedRecords": n, "freedBytes": freed,
            "removedRunDirs": runs.removed, "freedRunDirBytes": runs.freed_bytes,
        }))?,
        OutputFormat::Human => {
            let _ = writeln!(
                std::io::stdout(),
                "removed {n} record(s), freed {freed} bytes; removed {} run director{} (keeping {keep} per run), freed {} bytes",
                runs.removed,
                if runs.removed == 1 { "y" } else { "ies" },
                runs.freed_bytes
            );
        }
    }
    Ok(Outcome::Ok)
}

/// `tenon cache verify [--repair]`: re-hash every object; with `--repair` remove the bad
/// ones and evict the records that name them.
fn cache_verify(a: &VerifyArgs) -> Result<Outcome, Error> {
    let s = open_store(a.store.store.as_ref())?;
    let (n, bad) = s.verify().map_err(db)?;
    let (removed, evicted) = if a.repair { s.repair(&bad).map_err(db)? } else { Default::default() };
    match a.store.output {
        OutputFormat::Json => {
            let mut v =
                serde_json::json!({"apiVersion": API_VERSION, "kind": "CacheVerify", "objects": n, "corrupt": bad});
            if a.repair {
                v["removedObjects"] = serde_json::json!(removed);
                v["evictedRecords"] = serde_json::json!(evicted);
            }
            print_json(&v)?
        }
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            for b in &bad {
                let _ = writeln!(out, "corrupt or missing: sha256:{b}");
            }
            let _ = writeln!(out, "{n} object(s) checked, {} corrupt", bad.len());
            if a.repair {
                for d in &removed {
                    let _ = writeln!(out, "removed object sha256:{d}");
                }
                for r in &evicted {
                    let _ =
                        writeln!(out, "evicted record {} ({} {}): it reruns next time", &r.key[..16], r.run, r.task);
                }
                let _ =
                    writeln!(out, "repaired: {} object(s) removed, {} record(s) evicted", removed.len(), evicted.len());
            }
        }
    }
    Ok(if bad.is_empty() || a.repair { Outcome::Ok } else { Outcome::RunFailed })
}

/// `tenon cache reset`: move the store aside.
fn cache_reset(a: &StoreArgs) -> Result<Outcome, Error> {
    let state_dir = a.store.clone().unwrap_or_else(default_store);
    let moved = reconcile::reset_store(&state_dir)?;
    match a.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CacheReset",
            "movedTo": moved.as_ref().map(|p| p.display().to_string()),
        }))?,
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            let _ = match &moved {
                Some(p) => writeln!(
                    out,
                    "moved the store {} aside to {}; the next run starts with an empty cache",
                    state_dir.join("cache").display(),
                    p.display()
                ),
                None => writeln!(out, "no store at {}: nothing to reset", state_dir.join("cache").display()),
            };
        }
    }
    Ok(Outcome::Ok)
}
