//! The one write path: commit on the fetched tip and push without force (libgit2 for
//! remotes, `git push` with a lease for local repositories, so hooks run), retrying races.

use std::time::Duration;

use git2::{build::TreeUpdateBuilder, FileMode, Oid, Repository, Signature};

use super::auth::{callbacks, ssh_sign};
use super::tip::Tip;
use super::{fetch, local_path, open_cache, push_branch, GitError, Landing, Target};

/// Files to commit: (path, Some(new text)) or (path, None) to delete it.
pub(super) type Files = Vec<(String, Option<String>)>;

/// What to commit on a tip: stop with an outcome, or write / delete files.
pub(super) enum Step {
    Stop(Landing),
    Commit(Files),
}

/// The one write path of promotions, rollbacks and releases: fetch the target branch,
/// let `plan` decide on its tip, commit, and push without force; on a race fetch the new
/// tip and plan again, with backoff, up to `max_attempts`. `marker` is the file whose
/// presence on the target branch (or, in branch mode, on the pushed branch) says this
/// change is already there.
pub(super) fn commit_and_push(
    t: &Target,
    env: &str,
    id: &str,
    marker: &str,
    message: &str,
    mut plan: impl FnMut(&Tip<'_>) -> Result<Step, GitError>,
) -> Result<Landing, GitError> {
    let (repo, _lock) = open_cache(t)?;
    let push_branch = push_branch(t, env, id);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tip_oid = fetch(&repo, t, &t.branch)?;
        let tip = Tip::at(&repo, &t.branch, tip_oid)?;
        if tip.has(marker) {
            return Ok(Landing::AlreadyLanded);
        }
        if t.branch_mode {
            if let Some(b) = fetch(&repo, t, &push_branch)? {
                let proposed = Tip::at(&repo, &push_branch, Some(b))?;
                if proposed.has(marker) {
                    // merged (the branch's commit is in the target branch) but the marker
                    // was removed since: landed all the same; otherwise awaiting merge
                    let merged = tip_oid.is_some_and(|o| o == b || repo.graph_descendant_of(o, b).unwrap_or(false));
                    return Ok(if merged {
                        Landing::AlreadyLanded
                    } else {
                        Landing::Proposed { commit: b.to_string(), branch: push_branch }
                    });
                }
                return Err(GitError::Rejected {
                    branch: push_branch,
                    message: format!("the branch exists and does not hold {marker}; tenon never overwrites it"),
                });
            }
        }
        let files = match plan(&tip)? {
            Step::Stop(l) => return Ok(l),
            Step::Commit(files) => files,
        };
        let mut b = TreeUpdateBuilder::new();
        for (path, text) in &files {
            match text {
                Some(text) => {
                    let oid = repo.blob(text.as_bytes())?;
                    b.upsert(path.as_str(), oid, FileMode::Blob);
                }
                None => {
                    b.remove(path.as_str());
                }
            }
        }
        let base = match &tip.tree {
            Some(tr) => tr.clone(),
            None => {
                let empty = repo.treebuilder(None)?.write()?;
                repo.find_tree(empty)?
            }
        };
        let new_tree = repo.find_tree(b.create_updated(&repo, &base)?)?;
        let sig = Signature::now(&t.author_name, &t.author_email)?;
        let parents: Vec<&git2::Commit<'_>> = tip.commit.iter().collect();
        let commit = match &t.credentials.signing_key {
            None => repo.commit(None, &sig, &sig, message, &new_tree, &parents)?,
            Some(key) => {
                let buf = repo.commit_create_buffer(&sig, &sig, message, &new_tree, &parents)?;
                let content = std::str::from_utf8(&buf)
                    .map_err(|_| GitError::Git { message: "the commit is not UTF-8; cannot sign it".into() })?;
                repo.commit_signed(content, &ssh_sign(key, &buf)?, Some("gpgsig"))?
            }
        };
        // push: a fast-forward only (in branch mode: a new branch only); the remote's own
        // check is the compare-and-swap
        let expected_old = if t.branch_mode { None } else { tip_oid };
        let refname = format!("refs/heads/{push_branch}");
        let pushed = match local_path(&t.url) {
            // a local repository is pushed to with git itself (`git receive-pack` runs the
            // repository's pre-receive/update/post-receive hooks, as for any `git push`);
            // the lease makes the update a compare-and-swap on the branch
            Some(_) => push_local(&repo, &t.url, &refname, commit, expected_old)?,
            None => push_remote(&repo, t, &refname, commit)?,
        };
        let refusal = match pushed {
            Pushed::Done if t.branch_mode => {
                return Ok(Landing::Proposed { commit: commit.to_string(), branch: push_branch })
            }
            Pushed::Done => {
                return Ok(Landing::Landed { commit: commit.to_string(), branch: push_branch, attempts: attempt })
            }
            Pushed::Moved => None,
            Pushed::Refused(why) => Some(why),
        };
        // a refusal is a race only when the branch moved since it was read: anything else
        // (a declining hook, a protected branch, a stale lock on the remote) is permanent,
        // whatever words git's message holds
        if let Some(why) = refusal {
            let moved = fetch(&repo, t, &push_branch).map(|now| now != expected_old).unwrap_or(false);
            if !moved {
                return Err(GitError::Rejected { branch: push_branch, message: why });
            }
            tracing::debug!(branch = %push_branch, reason = %why, "the branch moved during the push; retrying");
        }
        if attempt >= t.max_attempts {
            return Ok(Landing::Conflicted { attempts: attempt });
        }
        // back off with jitter before planning again on the new tip
        let base = 50u64 << attempt.min(6);
        let jitter = crate::hash::now_ns().unsigned_abs() % base;
        std::thread::sleep(Duration::from_millis(base + jitter));
    }
}

/// How one push attempt ended.
pub(super) enum Pushed {
    Done,
    /// The remote has commits this push does not build on: the branch moved.
    Moved,
    /// The remote refused the update; git's reason and what the remote's hooks printed.
    Refused(String),
}

/// The remote's own messages (hook output sent on git's sideband), without progress lines.
pub(super) fn remote_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .filter_map(|l| l.rsplit('\r').find(|seg| !seg.trim().is_empty()))
        .map(|l| l.trim().trim_start_matches("remote:").trim().to_string())
        .filter(|l| !l.is_empty() && !l.contains('%'))
        .take(20)
        .collect()
}

pub(super) fn with_remote_lines(why: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        why.to_string()
    } else {
        format!("{why}; the remote said: {}", lines.join(" / "))
    }
}

/// Push with libgit2 (ssh, http(s), git://). libgit2 refuses a non-fast-forward itself
/// (`NotFastForward`: the remote has commits this one does not build on); the server
/// reports a refused update through the push-update-reference status.
pub(super) fn push_remote(repo: &Repository, t: &Target, refname: &str, commit: Oid) -> Result<Pushed, GitError> {
    let mut remote = repo.remote_anonymous(&t.url)?;
    let status = std::cell::RefCell::new(None::<String>);
    let said = std::cell::RefCell::new(String::new());
    let mut cb = callbacks(&t.credentials, &t.url);
    cb.push_update_reference(|_refname, s| {
        if let Some(s) = s {
            *status.borrow_mut() = Some(s.to_string());
        }
        Ok(())
    });
    cb.sideband_progress(|data| {
        let mut said = said.borrow_mut();
        if said.len() < 16 * 1024 {
            said.push_str(&String::from_utf8_lossy(data));
        }
        true
    });
    let mut po = git2::PushOptions::new();
    po.remote_callbacks(cb);
    let r = remote.push(&[&format!("{commit}:{refname}")], Some(&mut po));
    drop(po);
    let lines = remote_lines(&said.borrow());
    match (r, status.into_inner()) {
        (Ok(()), None) => Ok(Pushed::Done),
        (Ok(()), Some(why)) => Ok(Pushed::Refused(with_remote_lines(&why, &lines))),
        (Err(e), _) if e.code() == git2::ErrorCode::Auth => Err(GitError::Auth { url: t.url.clone() }),
        (Err(e), _) if e.code() == git2::ErrorCode::NotFastForward => Ok(Pushed::Moved),
        (Err(e), Some(why)) => Ok(Pushed::Refused(with_remote_lines(&format!("{why} ({})", e.message()), &lines))),
        // the connection failed (not a refusal of the update): reported as it is
        (Err(e), None)
            if matches!(
                e.class(),
                git2::ErrorClass::Net | git2::ErrorClass::Ssh | git2::ErrorClass::Http | git2::ErrorClass::Ssl
            ) =>
        {
            Err(GitError::from(e))
        }
        (Err(e), None) => Ok(Pushed::Refused(with_remote_lines(e.message(), &lines))),
    }
}

/// Push to a repository on this machine with `git push`, so that its hooks run; the
/// lease (`--force-with-lease=REF:OLD`, empty OLD: the branch must not exist) makes the
/// update a compare-and-swap that git's receive-pack checks under the ref's lock.
pub(super) fn push_local(
    repo: &Repository,
    url: &str,
    refname: &str,
    commit: Oid,
    expected_old: Option<Oid>,
) -> Result<Pushed, GitError> {
    let lease = format!("--force-with-lease={refname}:{}", expected_old.map(|o| o.to_string()).unwrap_or_default());
    let mut cmd = std::process::Command::new("git");
    for v in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"]
    {
        cmd.env_remove(v);
    }
    let out = cmd
        .arg("--git-dir")
        .arg(repo.path())
        // --no-verify: no client-side pre-push hook (a global core.hooksPath) runs for
        // tenon's cache clone; the remote's own hooks run as always
        .args(["push", "--porcelain", "--no-progress", "--no-verify", &lease, url, &format!("{commit}:{refname}")])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| GitError::Git {
            message: format!(
                "pushing to the local repository {url} needs the git command (it runs the repository's hooks, as `git push` does), which cannot be run: {e}"
            ),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<String> =
        remote_lines(&stderr.lines().filter_map(|l| l.strip_prefix("remote:")).collect::<Vec<_>>().join("\n"));
    // `--porcelain`: `<flag>\t<from>:<to>\t<summary>` for each ref
    let line = stdout.lines().find(|l| l.split('\t').nth(1).is_some_and(|r| r.ends_with(&format!(":{refname}"))));
    match line.map(|l| (l.chars().next().unwrap_or('!'), l.split('\t').nth(2).unwrap_or("").trim())) {
        Some((' ' | '+' | '*' | '=', _)) if out.status.success() => Ok(Pushed::Done),
        Some((_, summary)) => Ok(Pushed::Refused(with_remote_lines(summary, &said))),
        None => {
            let why = stderr.lines().rfind(|l| !l.starts_with("remote:")).unwrap_or("git push failed");
            Ok(Pushed::Refused(with_remote_lines(why.trim(), &said)))
        }
    }
}
