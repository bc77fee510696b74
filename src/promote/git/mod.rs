//! Git write-back: commit a promotion decision to a branch without ever losing,
//! duplicating or force-pushing one.
//!
//! The fast-forward push is the compare-and-swap. On a race (the remote moved) tenon
//! fetches the new tip, re-applies the declarative edits to it (no textual rebase, so no
//! conflicts), checks again whether the promotion already landed or was superseded, backs
//! off with jitter and retries, up to a limit, then reports `Conflicted`. Whether a
//! promotion landed is read from the ledger file in the branch itself
//! (`.tenon/promotions/<env>/<id>.yaml`), so a crash anywhere never produces a second commit.
//!
//! Submodules: `auth` (remote credentials, host-key checks, commit signing), `tip` (reading
//! the fetched branch tip), `records` (holds and the ledger entries tenon writes and reads)
//! and `push` (the one commit-and-push path, with its race handling).

mod auth;
mod push;
mod records;
mod tip;

pub use auth::callbacks;
pub use records::{ledger_at_tip, ledger_entry, release_entry, Hold, LedgerRecord};
pub use tip::Tip;

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::decide::Decision;
use super::ledger::Malformed;
use super::LEDGER_DIR;

use push::{commit_and_push, Step};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {message}")]
    Git { message: String },
    #[error("authentication to {url} failed (check the credentials; they are never printed)")]
    Auth { url: String },
    #[error("the remote rejected the push to {branch}: {message}")]
    Rejected { branch: String, message: String },
    #[error("{file}: {message}")]
    Edit { file: String, message: String },
    /// One of tenon's own documents on the branch is malformed (file:line:column).
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error("the remote's SSH host key is not trusted: {why} (tenon checks host keys strictly, against --known-hosts or else ~/.ssh/known_hosts)")]
    HostKey { why: String },
}

impl From<git2::Error> for GitError {
    fn from(e: git2::Error) -> Self {
        if e.code() == git2::ErrorCode::Auth || e.class() == git2::ErrorClass::Ssh && e.message().contains("auth") {
            return GitError::Auth { url: String::new() };
        }
        // ours (the known_hosts check) is a Certificate error; libgit2's own check of
        // ~/.ssh/known_hosts says `hostkey`
        if e.code() == git2::ErrorCode::Certificate || e.message().contains("hostkey") {
            let why = HOST_KEY_REFUSED.with(|w| w.borrow_mut().take()).unwrap_or_else(|| e.message().to_string());
            return GitError::HostKey { why };
        }
        GitError::Git { message: e.message().to_string() }
    }
}

thread_local! {
    /// Why the known_hosts check refused the last host key on this thread (libgit2
    /// replaces a certificate callback's message with a generic one; the code stays).
    static HOST_KEY_REFUSED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// How tenon authenticates to the target remote.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// HTTPS token (from an env var or file); used as the password.
    pub token: Option<String>,
    /// HTTPS user name for the token (default `x-access-token`).
    pub username: Option<String>,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file for strict host checking over SSH.
    pub known_hosts: Option<PathBuf>,
    /// SSH private key that signs tenon's commits (git's SSH signature format).
    pub signing_key: Option<PathBuf>,
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub branch: String,
    /// `direct` commits to `branch`; `branch` pushes `tenon/promote/<env>/<id12>`.
    pub branch_mode: bool,
    /// A persistent bare clone lives here (incremental fetches).
    pub cache_dir: PathBuf,
    pub credentials: Credentials,
    pub max_attempts: u32,
    pub author_name: String,
    pub author_email: String,
}

/// How a write-back ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Landing {
    /// Committed and pushed now.
    Landed { commit: String, branch: String, attempts: u32 },
    /// The ledger already has this id: nothing to do.
    AlreadyLanded,
    /// The files already hold these values: nothing to commit.
    NoChange,
    /// A later decision for this environment is already in the ledger.
    Superseded { by: String },
    /// The remote kept moving; retried `attempts` times. Try again on the next trigger.
    Conflicted { attempts: u32 },
    /// Branch mode: the promotion branch already holds this promotion; it lands when the
    /// pull request is merged.
    Proposed { commit: String, branch: String },
    /// The environment is held (a rollback placed a hold): nothing is committed until
    /// `tenon release`.
    Held { hold: Hold },
    /// `tenon release`: the environment is not held.
    NotHeld,
}

pub fn ledger_path(env: &str, id: &str) -> String {
    format!("{LEDGER_DIR}/promotions/{env}/{id}.yaml")
}

/// The hold marker of an environment (present while automatic promotion is paused).
pub fn hold_path(env: &str) -> String {
    format!("{LEDGER_DIR}/holds/{env}.yaml")
}

/// The record of a lifted hold.
pub fn release_path(env: &str, id: &str) -> String {
    format!("{LEDGER_DIR}/releases/{env}/{id}.yaml")
}

/// At most the first `n` bytes of `s` (whole characters): ids in messages.
pub fn short(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The filesystem path of a local remote (`file://` URL or a plain path).
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    (url.starts_with('/') && !url.contains("://")).then(|| PathBuf::from(url))
}

/// Where a change with this id is pushed: the target branch, or in branch mode its own
/// branch `tenon/promote/<env>/<id12>` (for a pull request).
pub fn push_branch(t: &Target, env: &str, id: &str) -> String {
    if t.branch_mode {
        format!("tenon/promote/{env}/{}", short(id, 12))
    } else {
        t.branch.clone()
    }
}

/// The persistent bare clone of a target, held exclusively by this process until the
/// returned lock drops (two tenons sharing a store take turns; git's own config and ref
/// lock files would otherwise make one of them fail).
fn open_cache(t: &Target) -> Result<(Repository, std::fs::File), GitError> {
    use fs4::fs_std::FileExt;
    let name = crate::hash::sha256_hex(t.url.as_bytes()).get(..16).unwrap_or("repo").to_string();
    let dir = t.cache_dir.join(&name);
    let io = |e: std::io::Error| GitError::Git { message: format!("cannot use {}: {e}", dir.display()) };
    std::fs::create_dir_all(&t.cache_dir).map_err(io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(t.cache_dir.join(format!("{name}.lock")))
        .map_err(io)?;
    lock.lock_exclusive().map_err(io)?;
    // Holding the lock, nothing else uses this clone: lock files left by a process that
    // was killed mid-operation are stale, and a clone killed before it had a HEAD is
    // started again.
    if dir.join("HEAD").exists() {
        remove_stale_locks(&dir);
        return Ok((Repository::open_bare(&dir)?, lock));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = t.cache_dir.join(format!("{name}.init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    Repository::init_bare(&tmp)?;
    std::fs::rename(&tmp, &dir).map_err(io)?;
    Ok((Repository::open_bare(&dir)?, lock))
}

fn remove_stale_locks(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_stale_locks(&p);
        } else if p.extension().is_some_and(|x| x == "lock") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Fetch `branch`; returns its tip (None when the branch does not exist yet).
fn fetch(repo: &Repository, t: &Target, branch: &str) -> Result<Option<Oid>, GitError> {
    let mut remote = repo.remote_anonymous(&t.url)?;
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks(&t.credentials, &t.url));
    let tracking = format!("refs/tenon/remote/{branch}");
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    match remote.fetch(&[&refspec], Some(&mut fo), None) {
        Ok(()) => {}
        Err(e) if e.code() == git2::ErrorCode::Auth => return Err(GitError::Auth { url: t.url.clone() }),
        Err(e) if e.message().contains("couldn't find remote ref") => {
            let _ = repo.find_reference(&tracking).and_then(|mut r| r.delete());
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(repo.find_reference(&tracking).ok().and_then(|r| r.target()))
}

/// The text of `path` at the tip of the target branch (fetching first).
pub fn read_at_tip(t: &Target, path: &str) -> Result<Option<String>, GitError> {
    let (repo, _lock) = open_cache(t)?;
    let Some(tip) = fetch(&repo, t, &t.branch)? else { return Ok(None) };
    let tree = repo.find_commit(tip)?.tree()?;
    read_blob(&repo, &tree, path)
}

fn read_blob(repo: &Repository, tree: &git2::Tree<'_>, path: &str) -> Result<Option<String>, GitError> {
    match tree.get_path(Path::new(path)) {
        Ok(entry) => {
            let blob = repo.find_blob(entry.id())?;
            Ok(Some(String::from_utf8_lossy(blob.content()).to_string()))
        }
        Err(_) => Ok(None),
    }
}

/// Write a decision back: commit the edits and the ledger entry on the branch tip and
/// push without force, retrying races. `decided_at_ns` orders decisions: a newer one in
/// the ledger supersedes this one. A hold on the environment stops it (`Held`), except
/// for a rollback, which places `hold` itself (committed even when the files already hold
/// its values).
pub fn write_back(
    t: &Target,
    d: &Decision,
    message: &str,
    decided_at_ns: i64,
    source_revision: &str,
    place_hold: Option<&Hold>,
) -> Result<Landing, GitError> {
    let ledger = ledger_path(&d.environment, &d.id);
    commit_and_push(t, &d.environment, &d.id, &ledger, message, |tip| {
        if let Some(s) = tip.superseded(&d.environment, decided_at_ns)? {
            return Ok(Step::Stop(s));
        }
        if let (None, Some(hold)) = (place_hold, tip.hold(&d.environment)?) {
            return Ok(Step::Stop(Landing::Held { hold }));
        }
        // re-render the declarative edits onto this tip
        let (mut files, changed) = tip.render(&t.branch, &d.updates)?;
        if !changed && place_hold.is_none() {
            return Ok(Step::Stop(Landing::NoChange));
        }
        let previous = tip.latest(&d.environment)?;
        files.push((ledger.clone(), Some(ledger_entry(d, decided_at_ns, previous.as_deref(), source_revision))));
        if let Some(h) = place_hold {
            files.push((hold_path(&d.environment), Some(h.to_yaml())));
        }
        Ok(Step::Commit(files))
    })
}

/// Remove the hold placed by rollback `hold.rollback`, recording the release.
pub fn write_release(
    t: &Target,
    id: &str,
    hold: &Hold,
    by: &str,
    message: &str,
    decided_at_ns: i64,
) -> Result<Landing, GitError> {
    let record = release_path(&hold.environment, id);
    commit_and_push(t, &hold.environment, id, &record, message, |tip| match tip.hold(&hold.environment)? {
        None => Ok(Step::Stop(Landing::NotHeld)),
        // a newer rollback placed another hold meanwhile: releasing it needs a new look
        Some(h) if h.rollback != hold.rollback => Ok(Step::Stop(Landing::Superseded { by: h.rollback })),
        Some(_) => Ok(Step::Commit(vec![
            (hold_path(&hold.environment), None),
            (record.clone(), Some(release_entry(id, hold, by, decided_at_ns))),
        ])),
    })
}

/// The hold on `env` at the tip of the target branch.
pub fn hold_at_tip(t: &Target, env: &str) -> Result<Option<Hold>, GitError> {
    let path = hold_path(env);
    match read_at_tip(t, &path)? {
        Some(text) => Ok(Some(Hold::parse(&format!("{}:{path}", t.branch), &text)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promote::decide::RenderedUpdate;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let o = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@e", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A hold that appears after `tenon promote` looked is still honoured by the write
    /// path itself (it re-reads the tip on every attempt); a rollback places its own.
    #[test]
    fn the_write_path_honours_a_hold_on_the_tip() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(work.join(".tenon/holds")).unwrap();
        std::fs::write(work.join("deploy.yaml"), "image: \"old\"\n").unwrap();
        let hold = Hold {
            environment: "prod".into(),
            rollback: "r".repeat(64),
            restored: "a".repeat(64),
            by: "alice".into(),
            reason: "bad".into(),
            held_at_ns: 1,
        };
        std::fs::write(work.join(".tenon/holds/prod.yaml"), hold.to_yaml()).unwrap();
        git(tmp.path(), &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "init"]);
        let remote = tmp.path().join("remote.git");
        git(tmp.path(), &["clone", "-q", "--bare", work.to_str().unwrap(), remote.to_str().unwrap()]);
        let before = git(&remote, &["rev-parse", "main"]);
        let t = Target {
            url: format!("file://{}", remote.display()),
            branch: "main".into(),
            branch_mode: false,
            cache_dir: tmp.path().join("cache"),
            credentials: Credentials::default(),
            max_attempts: 3,
            author_name: "tenon".into(),
            author_email: "tenon@localhost".into(),
        };
        let d = Decision {
            policy: "p".into(),
            environment: "prod".into(),
            subject_uri: "u".into(),
            subject_digest: "sha256:1".into(),
            gates: vec![],
            promote: true,
            updates: vec![RenderedUpdate { file: "deploy.yaml".into(), path: "image".into(), value: "new".into() }],
            id: "b".repeat(64),
            message: "promote".into(),
            trailers: vec![],
            restores: None,
        };
        let held = write_back(&t, &d, "promote\n", 10, "rev", None).unwrap();
        assert_eq!(held, Landing::Held { hold: hold.clone() });
        assert_eq!(git(&remote, &["rev-parse", "main"]), before, "nothing pushed while held");
        // a rollback replaces the hold and commits
        let mut rb = d.clone();
        rb.id = "c".repeat(64);
        rb.restores = Some("a".repeat(64));
        let new_hold = Hold { rollback: rb.id.clone(), held_at_ns: 11, ..hold };
        let landed = write_back(&t, &rb, "rollback\n", 11, "rollback", Some(&new_hold)).unwrap();
        assert!(matches!(landed, Landing::Landed { .. }), "{landed:?}");
        assert_eq!(git(&remote, &["show", "main:deploy.yaml"]), "image: \"new\"");
        assert_eq!(git(&remote, &["show", "main:.tenon/holds/prod.yaml"]), new_hold.to_yaml().trim_end());
        // the earlier decision (10) is now older than the rollback (11): superseded
        let mut late = d.clone();
        late.id = "d".repeat(64);
        assert_eq!(
            write_back(&t, &late, "promote\n", 10, "rev", None).unwrap(),
            Landing::Superseded { by: rb.id.clone() }
        );
        // release: the hold goes; a second release finds nothing held
        let rel = write_release(&t, &"e".repeat(64), &new_hold, "bob", "release\n", 12).unwrap();
        assert!(matches!(rel, Landing::Landed { .. }), "{rel:?}");
        assert!(hold_at_tip(&t, "prod").unwrap().is_none());
        assert_eq!(write_release(&t, &"f".repeat(64), &new_hold, "bob", "release\n", 13).unwrap(), Landing::NotHeld);
    }
}
