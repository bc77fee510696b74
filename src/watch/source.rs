//! Sources: a directory followed with filesystem events, or a git branch followed in a
//! persistent local clone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::{build::CheckoutBuilder, Oid, Repository};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::model::Catalog;
use crate::promote::git::{callbacks, Credentials};

/// Paths a change to which never starts a reconcile in directory mode.
#[derive(Debug, Default)]
pub struct Ignored {
    /// `.git/`, the store, the ledger (`.tenon/`): whole trees.
    pub trees: Vec<PathBuf>,
    /// Promotion target files (updated after every load).
    pub files: Vec<PathBuf>,
}

impl Ignored {
    pub fn matches(&self, p: &Path) -> bool {
        self.trees.iter().any(|t| p.starts_with(t)) || self.files.iter().any(|f| p == f)
    }
}

/// Promotion target files of a catalog, relative to the repository root.
pub fn promotion_targets(cat: &Catalog) -> Vec<String> {
    cat.promotion_policies
        .iter()
        .flat_map(|p| p.spec.target.updates.iter().map(|u| u.file.trim_start_matches("./").to_string()))
        .collect()
}

/// Watch `dir` recursively; every relevant change is sent on `tx`. Native events where
/// available, else (or with `poll`) polling every `poll_interval`.
pub fn watch_dir(
    dir: &Path,
    ignored: Arc<Mutex<Ignored>>,
    tx: tokio::sync::mpsc::UnboundedSender<PathBuf>,
    poll: bool,
    poll_interval: Duration,
) -> Result<Box<dyn Watcher + Send>, String> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        let ig = ignored.lock().unwrap_or_else(|e| e.into_inner());
        for p in ev.paths {
            if !ig.matches(&p) {
                let _ = tx.send(p);
            }
        }
    };
    let cfg = notify::Config::default().with_poll_interval(poll_interval);
    let mut w: Box<dyn Watcher + Send> = if poll {
        Box::new(notify::PollWatcher::new(handler, cfg).map_err(|e| e.to_string())?)
    } else {
        let h2 = handler.clone();
        match notify::RecommendedWatcher::new(handler, cfg) {
            Ok(w) => Box::new(w),
            Err(e) => {
                tracing::warn!(error = %e, "native file events unavailable; polling instead");
                Box::new(notify::PollWatcher::new(h2, cfg).map_err(|e| e.to_string())?)
            }
        }
    };
    w.watch(dir, RecursiveMode::Recursive).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(w)
}

/// A persistent clone with a work tree that follows one branch of a remote.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub url: String,
    pub branch: String,
    /// The clone (its work tree is what gets reconciled).
    pub dir: PathBuf,
    pub credentials: Credentials,
}

/// Why the git source could not be used. URLs in it are redacted.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Another watcher holds the clone (invalid usage: two watchers of one remote and store).
    #[error("another tenon watch already follows {url} with this state directory ({})", lock.display())]
    Locked { url: String, lock: PathBuf },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("authentication to {url} failed (check the credentials; they are never printed)")]
    Auth { url: String },
    #[error("fetch {url} {branch}: {message}")]
    Fetch { url: String, branch: String, message: String },
    #[error("branch {branch} not found on {url}")]
    NoBranch { branch: String, url: String },
    /// The local clone could not be read or updated.
    #[error("{message}")]
    Git { message: String },
}

fn git_err(e: git2::Error) -> SourceError {
    SourceError::Git { message: e.message().to_string() }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SourceError {
    let path = path.to_path_buf();
    move |source| SourceError::Io { action, path, source }
}

impl GitSource {
    pub fn new(url: &str, branch: &str, state_dir: &Path, credentials: Credentials) -> Self {
        let name = crate::hash::sha256_hex(url.as_bytes()).get(..16).unwrap_or("repo").to_string();
        GitSource {
            url: url.to_string(),
            branch: branch.to_string(),
            dir: state_dir.join("watch").join(name).join("checkout"),
            credentials,
        }
    }

    /// Hold the clone for this process: a second watcher of the same remote on the same
    /// store is refused (it would fight over the work tree).
    pub fn lock(&self) -> Result<std::fs::File, SourceError> {
        use fs4::fs_std::FileExt;
        let parent = self.dir.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let path = parent.join("watch.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match f.try_lock_exclusive() {
            Ok(true) => Ok(f),
            _ => Err(SourceError::Locked { url: redact(&self.url), lock: path }),
        }
    }

    fn open(&self) -> Result<Repository, SourceError> {
        if self.dir.join(".git").exists() {
            // a process killed mid-operation may leave git lock files; this clone is ours
            for f in ["index.lock", "HEAD.lock"] {
                let _ = std::fs::remove_file(self.dir.join(".git").join(f));
            }
            return Repository::open(&self.dir).map_err(git_err);
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let repo = Repository::init(&self.dir).map_err(git_err)?;
        repo.remote("origin", &self.url).map_err(git_err)?;
        Ok(repo)
    }

    /// Fetch the branch (incrementally); returns its tip.
    pub fn fetch(&self) -> Result<Oid, SourceError> {
        let repo = self.open()?;
        let mut remote = repo.remote_anonymous(&self.url).map_err(git_err)?;
        let mut fo = git2::FetchOptions::new();
        fo.remote_callbacks(callbacks(&self.credentials, &self.url));
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        let refspec = format!("+refs/heads/{}:{tracking}", self.branch);
        remote.fetch(&[&refspec], Some(&mut fo), None).map_err(|e| {
            if e.code() == git2::ErrorCode::Auth {
                SourceError::Auth { url: redact(&self.url) }
            } else {
                SourceError::Fetch {
                    url: redact(&self.url),
                    branch: self.branch.clone(),
                    message: e.message().to_string(),
                }
            }
        })?;
        repo.find_reference(&tracking)
            .ok()
            .and_then(|r| r.target())
            .ok_or_else(|| SourceError::NoBranch { branch: self.branch.clone(), url: redact(&self.url) })
    }

    /// Make the work tree exactly `rev`'s tree (only differing files are rewritten) with
    /// the local branch at `rev`.
    pub fn checkout(&self, rev: Oid) -> Result<(), SourceError> {
        let repo = self.open()?;
        let commit = repo.find_commit(rev).map_err(git_err)?;
        // the index is rewritten with the stat data of the files written (libgit2's default,
        // stated here because hashing relies on it): a file this checkout left alone keeps a
        // clean entry, so its digest comes from the blob memo instead of being read again
        let mut co = CheckoutBuilder::new();
        co.force().remove_untracked(true).update_index(true);
        repo.checkout_tree(commit.as_object(), Some(&mut co)).map_err(git_err)?;
        let local = format!("refs/heads/{}", self.branch);
        repo.reference(&local, rev, true, "tenon watch").map_err(git_err)?;
        repo.set_head(&local).map_err(git_err)?;
        Ok(())
    }

    /// Whether every commit in `from..to` carries a `Tenon-Promotion-Id` trailer and the
    /// range changes only `targets` and the ledger: tenon's own promotion commits.
    pub fn only_promotions(&self, from: Oid, to: Oid, targets: &[String]) -> Result<bool, SourceError> {
        let repo = self.open()?;
        if from == to || !repo.graph_descendant_of(to, from).map_err(git_err)? {
            return Ok(false);
        }
        let mut walk = repo.revwalk().map_err(git_err)?;
        walk.push(to).map_err(git_err)?;
        walk.hide(from).map_err(git_err)?;
        for oid in walk {
            let c = repo.find_commit(oid.map_err(git_err)?).map_err(git_err)?;
            if !c.message().unwrap_or("").lines().any(|l| l.starts_with("Tenon-Promotion-Id:")) {
                return Ok(false);
            }
        }
        let a = repo.find_commit(from).and_then(|c| c.tree()).map_err(git_err)?;
        let b = repo.find_commit(to).and_then(|c| c.tree()).map_err(git_err)?;
        let diff = repo.diff_tree_to_tree(Some(&a), Some(&b), None).map_err(git_err)?;
        let ledger = format!("{}/", crate::promote::LEDGER_DIR);
        let ok = diff.deltas().all(|d| {
            [d.old_file().path(), d.new_file().path()].into_iter().flatten().all(|p| {
                let p = p.to_string_lossy();
                p.starts_with(&ledger) || targets.iter().any(|t| t == &*p)
            })
        });
        Ok(ok)
    }
}

/// A URL with any user info (tokens) removed, for logs and status.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (auth, host) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((_, h)) = auth.rsplit_once('@') {
            return format!("{scheme}://***@{h}{host}");
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("https://user:tok@example.com/a/b.git"), "https://***@example.com/a/b.git");
        assert_eq!(redact("https://example.com/a.git"), "https://example.com/a.git");
        assert_eq!(redact("file:///tmp/x.git"), "file:///tmp/x.git");
    }
}
