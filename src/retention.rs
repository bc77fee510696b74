//! Run directories (`<state>/runs/<run>/<id>/`): locked while their run is in progress and
//! pruned to the most recent `--keep-runs` per PipelineRun/TaskRun name afterwards (at the
//! end of `tenon run`, of each `tenon watch` reconcile, and by `tenon cache gc`). A run
//! directory holds copies of restored outputs and step logs; without retention every run,
//! even an all-cached one, would keep its copies forever. `<state>/pvc/` is never touched.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fs4::fs_std::FileExt;

/// Run directories kept per run name when nothing else is said (`--keep-runs`, `TENON_KEEP_RUNS`).
pub const DEFAULT_KEEP_RUNS: usize = 5;

/// Held (locked) by the process running a run, for as long as the run is in progress.
const LOCK_FILE: &str = ".tenon-run.lock";

/// A run directory that must not be pruned: its run is in progress. Dropping it ends the
/// run: Secret material materialized in the directory is removed then.
pub struct RunDirGuard {
    dir: PathBuf,
    _lock: Option<File>,
}

impl RunDirGuard {
    /// Lock `dir` (a new run's directory) for this process.
    pub fn acquire(dir: &Path) -> RunDirGuard {
        // (created once, never truncated: its time is when the run started)
        let lock = crate::store::open_lock_file(&dir.join(LOCK_FILE)).ok().filter(|f| f.lock_exclusive().is_ok());
        RunDirGuard { dir: dir.to_path_buf(), _lock: lock }
    }
}

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        scrub_secrets(&self.dir);
    }
}

/// Directories holding materialized Secret data, removed when their run ends.
static SECRET_DIRS: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Remember `dir` (materialized Secret data of a run) for [`scrub_secrets`].
pub fn register_secret_dir(dir: &Path) {
    SECRET_DIRS.lock().unwrap_or_else(|e| e.into_inner()).insert(dir.to_path_buf());
}

/// Remove the Secret material materialized under `run_dir` (its run has ended).
pub fn scrub_secrets(run_dir: &Path) {
    let dirs: Vec<PathBuf> = {
        let mut set = SECRET_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        let mine: Vec<PathBuf> = set.iter().filter(|d| d.starts_with(run_dir)).cloned().collect();
        for d in &mine {
            set.remove(d);
        }
        mine
    };
    for d in dirs {
        if let Err(e) = remove_tree(&d) {
            tracing::warn!(dir = %d.display(), error = %e, "could not remove Secret material");
        }
    }
}

/// What [`prune_runs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub freed_bytes: u64,
}

/// Keep the `keep` most recently started run directories of each run name under
/// `<state_dir>/runs` and those in `protect` (run name, directory name), and any whose run
/// is still in progress (in this or another process); remove the others.
pub fn prune_runs(state_dir: &Path, keep: usize, protect: &BTreeSet<(String, String)>) -> std::io::Result<Pruned> {
    let runs = state_dir.join("runs");
    let mut out = Pruned::default();
    let names = match std::fs::read_dir(&runs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names.flatten() {
        if !name.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let run = name.file_name().to_string_lossy().to_string();
        let mut dirs: Vec<(SystemTime, PathBuf, String)> = std::fs::read_dir(name.path())?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let p = e.path();
                (started(&p), p, e.file_name().to_string_lossy().to_string())
            })
            .collect();
        // newest first
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (at, dir, id) in dirs.into_iter().skip(keep) {
            if protect.contains(&(run.clone(), id)) || in_progress(&dir, at) {
                continue;
            }
            let size = tree_size(&dir);
            if remove_tree(&dir).is_ok() {
                out.removed += 1;
                out.freed_bytes += size;
            } else {
                tracing::warn!(dir = %dir.display(), "could not remove an old run directory");
            }
        }
    }
    Ok(out)
}

/// When a run directory's run started (its lock file's time; the directory's for runs of
/// an older tenon).
fn started(dir: &Path) -> SystemTime {
    let t = |p: &Path| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    t(&dir.join(LOCK_FILE)).or_else(|| t(dir)).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A run in progress holds the directory's lock; a directory created in the last minute
/// without one may be a run between creating its directory and locking it.
fn in_progress(dir: &Path, started: SystemTime) -> bool {
    match File::open(dir.join(LOCK_FILE)) {
        Ok(f) => !matches!(f.try_lock_exclusive(), Ok(true)),
        Err(_) => SystemTime::now().duration_since(started).unwrap_or_default() < Duration::from_secs(60),
    }
}

/// Bytes of the regular files under `dir` (symlinks not followed).
pub fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Remove a tree, making directories writable first when a step left them read-only.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    std::fs::remove_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_runs_of_each_name_and_those_in_progress() {
        let d = tempfile::tempdir().unwrap();
        let mk = |run: &str, id: &str, age_s: u64| {
            let p = d.path().join("runs").join(run).join(id);
            std::fs::create_dir_all(p.join("taskruns")).unwrap();
            std::fs::write(p.join("taskruns/out"), vec![0u8; 1000]).unwrap();
            let f = File::create(p.join(LOCK_FILE)).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
            p
        };
        for i in 0..6 {
            mk("a", &format!("a{i}"), 100 - i * 10);
        }
        mk("b", "b0", 500);
        let busy = mk("a", "busy", 1000);
        let _held = RunDirGuard::acquire(&busy);
        let protect = BTreeSet::from([("a".to_string(), "a0".to_string())]);
        let p = prune_runs(d.path(), 2, &protect).unwrap();
        let left = |run: &str| {
            let mut v: Vec<String> = std::fs::read_dir(d.path().join("runs").join(run))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(left("a"), ["a0", "a4", "a5", "busy"], "the 2 newest, the protected one, the one in progress");
        assert_eq!(left("b"), ["b0"]);
        assert_eq!(p, Pruned { removed: 3, freed_bytes: 3000 });
    }
}
