//! Git write-back: commit a promotion decision to a branch without ever losing,
//! duplicating or force-pushing one.
//!
//! The fast-forward push is the compare-and-swap. On a race (the remote moved) tenon
//! fetches the new tip, re-applies the declarative edits to it (no textual rebase, so no
//! conflicts), checks again whether the promotion already landed or was superseded, backs
//! off with jitter and retries, up to a limit, then reports `Conflicted`. Whether a
//! promotion landed is read from the ledger file in the branch itself
//! (`.tenon/promotions/<env>/<id>.yaml`), so a crash anywhere never produces a second commit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{build::TreeUpdateBuilder, FileMode, Oid, Repository, Signature};

use super::decide::Decision;
use super::edit::{self, Edit};
use super::LEDGER_DIR;

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("git: {message}")]
    Git { message: String },
    #[error("authentication to {url} failed (check the credentials; they are never printed)")]
    Auth { url: String },
    #[error("the remote rejected the push to {branch}: {message}")]
    Rejected { branch: String, message: String },
    #[error("{file}: {message}")]
    Edit { file: String, message: String },
}

impl From<git2::Error> for PromoteError {
    fn from(e: git2::Error) -> Self {
        if e.code() == git2::ErrorCode::Auth || e.class() == git2::ErrorClass::Ssh && e.message().contains("auth") {
            return PromoteError::Auth { url: String::new() };
        }
        PromoteError::Git { message: e.message().to_string() }
    }
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
}

pub fn ledger_path(env: &str, id: &str) -> String {
    format!("{LEDGER_DIR}/promotions/{env}/{id}.yaml")
}

pub fn callbacks(c: &Credentials) -> git2::RemoteCallbacks<'_> {
    let mut cb = git2::RemoteCallbacks::new();
    let mut tries = 0;
    cb.credentials(move |_url, user, allowed| {
        tries += 1;
        if tries > 3 {
            return Err(git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Net, "authentication failed"));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(k) = &c.ssh_key {
                return git2::Cred::ssh_key(user.unwrap_or("git"), None, k, None);
            }
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(t) = &c.token {
                return git2::Cred::userpass_plaintext(c.username.as_deref().unwrap_or("x-access-token"), t);
            }
        }
        if allowed.contains(git2::CredentialType::DEFAULT) {
            return git2::Cred::default();
        }
        Err(git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Net, "no credentials configured for this remote"))
    });
    if let Some(kh) = c.known_hosts.clone() {
        cb.certificate_check(move |cert, host| {
            // strict: the host key must be in the given known_hosts file
            let Some(hk) = cert.as_hostkey() else { return Ok(git2::CertificateCheckStatus::CertificatePassthrough) };
            let Some(key) = hk.hostkey() else { return Err(git2::Error::from_str("no host key")) };
            use std::io::BufRead;
            let b64 = base64_encode(key);
            let f = std::fs::File::open(&kh).map_err(|e| git2::Error::from_str(&format!("known_hosts: {e}")))?;
            let found = std::io::BufReader::new(f).lines().map_while(Result::ok).any(|l| {
                let mut parts = l.split_whitespace();
                let hosts = parts.next().unwrap_or("");
                let _kind = parts.next();
                let k = parts.next().unwrap_or("");
                hosts.split(',').any(|h| h == host || h.trim_start_matches('[').starts_with(host)) && k == b64
            });
            if found {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::from_str(&format!("host key of {host} is not in {}", kh.display())))
            }
        });
    }
    cb
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The persistent bare clone of a target, held exclusively by this process until the
/// returned lock drops (two tenons sharing a store take turns; git's own config and ref
/// lock files would otherwise make one of them fail).
fn open_cache(t: &Target) -> Result<(Repository, std::fs::File), PromoteError> {
    use fs4::fs_std::FileExt;
    let name = crate::hash::sha256_hex(t.url.as_bytes()).get(..16).unwrap_or("repo").to_string();
    let dir = t.cache_dir.join(&name);
    let io = |e: std::io::Error| PromoteError::Git { message: format!("cannot use {}: {e}", dir.display()) };
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
fn fetch(repo: &Repository, t: &Target, branch: &str) -> Result<Option<Oid>, PromoteError> {
    let mut remote = repo.remote_anonymous(&t.url)?;
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks(&t.credentials));
    let tracking = format!("refs/tenon/remote/{branch}");
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    match remote.fetch(&[&refspec], Some(&mut fo), None) {
        Ok(()) => {}
        Err(e) if e.code() == git2::ErrorCode::Auth => return Err(PromoteError::Auth { url: t.url.clone() }),
        Err(e) if e.message().contains("couldn't find remote ref") => {
            let _ = repo.find_reference(&tracking).and_then(|mut r| r.delete());
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(repo.find_reference(&tracking).ok().and_then(|r| r.target()))
}

/// The text of `path` at the tip of the target branch (fetching first).
pub fn read_at_tip(t: &Target, path: &str) -> Result<Option<String>, PromoteError> {
    let (repo, _lock) = open_cache(t)?;
    let Some(tip) = fetch(&repo, t, &t.branch)? else { return Ok(None) };
    let tree = repo.find_commit(tip)?.tree()?;
    read_blob(&repo, &tree, path)
}

fn read_blob(repo: &Repository, tree: &git2::Tree<'_>, path: &str) -> Result<Option<String>, PromoteError> {
    match tree.get_path(Path::new(path)) {
        Ok(entry) => {
            let blob = repo.find_blob(entry.id())?;
            Ok(Some(String::from_utf8_lossy(blob.content()).to_string()))
        }
        Err(_) => Ok(None),
    }
}

/// `decidedAt` of every ledger entry of `env` at `tree`: (id, decidedAt).
fn ledger_entries(repo: &Repository, tree: &git2::Tree<'_>, env: &str) -> Vec<(String, i64)> {
    let dir = format!("{LEDGER_DIR}/promotions/{env}");
    let Ok(entry) = tree.get_path(Path::new(&dir)) else { return vec![] };
    let Ok(sub) = repo.find_tree(entry.id()) else { return vec![] };
    let mut out = Vec::new();
    for e in sub.iter() {
        let Some(name) = e.name() else { continue };
        let Some(id) = name.strip_suffix(".yaml") else { continue };
        let Ok(blob) = repo.find_blob(e.id()) else { continue };
        let text = String::from_utf8_lossy(blob.content());
        let at = text
            .lines()
            .find_map(|l| l.strip_prefix("decidedAt: "))
            .and_then(|v| v.trim().trim_matches('"').parse::<i64>().ok())
            .unwrap_or(0);
        out.push((id.to_string(), at));
    }
    out
}

/// One promotion as recorded in the ledger at the branch tip.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    pub id: String,
    pub policy: String,
    pub environment: String,
    pub subject_digest: String,
    pub subject_uri: String,
    pub previous: Option<String>,
    pub decided_at_ns: i64,
}

/// Every ledger entry at the tip of the target branch (optionally of one environment),
/// newest decision first.
pub fn ledger_at_tip(t: &Target, env: Option<&str>) -> Result<Vec<LedgerRecord>, PromoteError> {
    let (repo, _lock) = open_cache(t)?;
    let Some(tip) = fetch(&repo, t, &t.branch)? else { return Ok(vec![]) };
    let tree = repo.find_commit(tip)?.tree()?;
    let Ok(root) = tree.get_path(Path::new(&format!("{LEDGER_DIR}/promotions"))) else { return Ok(vec![]) };
    let envs = repo.find_tree(root.id())?;
    let mut out = Vec::new();
    for e in envs.iter() {
        let Some(name) = e.name() else { continue };
        if env.is_some_and(|want| want != name) {
            continue;
        }
        let Ok(sub) = repo.find_tree(e.id()) else { continue };
        for f in sub.iter() {
            let Ok(blob) = repo.find_blob(f.id()) else { continue };
            out.push(parse_ledger(&String::from_utf8_lossy(blob.content())));
        }
    }
    out.sort_by(|a, b| b.decided_at_ns.cmp(&a.decided_at_ns));
    Ok(out)
}

/// Read back a ledger entry written by [`ledger_entry`] (values are JSON strings).
fn parse_ledger(text: &str) -> LedgerRecord {
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| serde_json::from_str::<String>(v.trim()).unwrap_or_else(|_| v.trim().to_string()))
    };
    LedgerRecord {
        id: field("id: ").unwrap_or_default(),
        policy: field("policy: ").unwrap_or_default(),
        environment: field("environment: ").unwrap_or_default(),
        subject_digest: field("  digest: ").unwrap_or_default(),
        subject_uri: field("  uri: ").unwrap_or_default(),
        previous: field("previous: ").filter(|p| p != "null"),
        decided_at_ns: field("decidedAt: ").and_then(|v| v.parse().ok()).unwrap_or(0),
    }
}

/// The ledger entry recorded with a promotion.
pub fn ledger_entry(d: &Decision, decided_at_ns: i64, previous: Option<&str>, source_revision: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut y = String::new();
    y.push_str("apiVersion: tenon.dev/v1alpha1\nkind: PromotionRecord\n");
    y.push_str(&format!("id: {}\npolicy: {}\nenvironment: {}\n", q(&d.id), q(&d.policy), q(&d.environment)));
    y.push_str(&format!("subject:\n  uri: {}\n  digest: {}\n", q(&d.subject_uri), q(&d.subject_digest)));
    y.push_str("gates:\n");
    for g in &d.gates {
        y.push_str(&format!(
            "  - result: {}\n    operator: {}\n    threshold: {}\n    observed: {}\n    passed: {}\n",
            q(&g.result),
            q(&g.operator),
            q(&g.threshold),
            q(g.observed.as_deref().unwrap_or("").trim_end_matches('\n')),
            g.passed
        ));
    }
    y.push_str("updates:\n");
    for u in &d.updates {
        y.push_str(&format!("  - file: {}\n    path: {}\n    value: {}\n", q(&u.file), q(&u.path), q(&u.value)));
    }
    y.push_str(&format!("sourceRevision: {}\n", q(source_revision)));
    y.push_str(&format!("previous: {}\n", previous.map(q).unwrap_or_else(|| "null".into())));
    y.push_str(&format!("decidedAt: {decided_at_ns}\n"));
    y
}

/// The filesystem path of a local remote (`file://` URL or a plain path).
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    (url.starts_with('/') && !url.contains("://")).then(|| PathBuf::from(url))
}

/// Move `refname` in the local repository at `path` from `old` (None: must not exist)
/// to `new`, atomically; then drop the temporary `incoming` ref.
fn cas_local(path: &Path, refname: &str, new: Oid, old: Option<Oid>, incoming: &str) -> Result<(), git2::Error> {
    let repo = Repository::open(path)?;
    let res = match old {
        Some(o) => repo.reference_matching(refname, new, true, o, "tenon promote").map(|_| ()),
        None => repo.reference(refname, new, false, "tenon promote").map(|_| ()),
    };
    if let Ok(mut r) = repo.find_reference(incoming) {
        let _ = r.delete();
    }
    res.map_err(|e| git2::Error::from_str(&format!("failed to update ref (the branch moved): {}", e.message())))
}

/// Write a decision back: commit the edits and the ledger entry on the branch tip and
/// push without force, retrying races. `decided_at_ns` orders decisions: a newer one in
/// the ledger supersedes this one.
pub fn write_back(
    t: &Target,
    d: &Decision,
    message: &str,
    decided_at_ns: i64,
    source_revision: &str,
) -> Result<Landing, PromoteError> {
    let (repo, _lock) = open_cache(t)?;
    let ledger = ledger_path(&d.environment, &d.id);
    let push_branch = if t.branch_mode {
        format!("tenon/promote/{}/{}", d.environment, &d.id[..12.min(d.id.len())])
    } else {
        t.branch.clone()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tip = fetch(&repo, t, &t.branch)?;
        let tip_commit = match tip {
            Some(oid) => Some(repo.find_commit(oid)?),
            None => None,
        };
        let tree = match &tip_commit {
            Some(c) => Some(c.tree()?),
            None => None,
        };
        if let Some(tree) = &tree {
            if tree.get_path(Path::new(&ledger)).is_ok() {
                return Ok(Landing::AlreadyLanded);
            }
            let entries = ledger_entries(&repo, tree, &d.environment);
            if let Some((by, _)) = entries.iter().filter(|(_, at)| *at > decided_at_ns).max_by_key(|(_, at)| *at) {
                return Ok(Landing::Superseded { by: by.clone() });
            }
        }
        if t.branch_mode {
            // a promotion branch already pushed for this id: the pull request is open
            if fetch(&repo, t, &push_branch)?.is_some() {
                return Ok(Landing::AlreadyLanded);
            }
        }
        // re-render the declarative edits onto this tip
        let mut files: Vec<(String, String)> = Vec::new();
        let mut changed = false;
        let mut by_file: Vec<(String, Vec<Edit>)> = Vec::new();
        for u in &d.updates {
            match by_file.iter_mut().find(|(f, _)| f == &u.file) {
                Some((_, v)) => v.push(Edit { path: u.path.clone(), value: u.value.clone() }),
                None => by_file.push((u.file.clone(), vec![Edit { path: u.path.clone(), value: u.value.clone() }])),
            }
        }
        for (file, edits) in by_file {
            let text = match &tree {
                Some(tr) => read_blob(&repo, tr, &file)?,
                None => None,
            }
            .ok_or_else(|| PromoteError::Edit {
                file: file.clone(),
                message: format!("not found on branch {}", t.branch),
            })?;
            let (new, did) = edit::apply(&text, &edits)
                .map_err(|e| PromoteError::Edit { file: file.clone(), message: e.to_string() })?;
            changed |= did;
            files.push((file, new));
        }
        if !changed {
            return Ok(Landing::NoChange);
        }
        let previous = tree.as_ref().and_then(|tr| {
            ledger_entries(&repo, tr, &d.environment).into_iter().max_by_key(|(_, at)| *at).map(|(id, _)| id)
        });
        files.push((ledger.clone(), ledger_entry(d, decided_at_ns, previous.as_deref(), source_revision)));
        let mut b = TreeUpdateBuilder::new();
        for (path, text) in &files {
            let oid = repo.blob(text.as_bytes())?;
            b.upsert(path.as_str(), oid, FileMode::Blob);
        }
        let base = match &tree {
            Some(tr) => tr.clone(),
            None => {
                let empty = repo.treebuilder(None)?.write()?;
                repo.find_tree(empty)?
            }
        };
        let new_tree = repo.find_tree(b.create_updated(&repo, &base)?)?;
        let sig = Signature::now(&t.author_name, &t.author_email)?;
        let parents: Vec<&git2::Commit<'_>> = tip_commit.iter().collect();
        let commit = repo.commit(None, &sig, &sig, message, &new_tree, &parents)?;
        // push: a fast-forward only; the remote's own check is the compare-and-swap
        let mut remote = repo.remote_anonymous(&t.url)?;
        let rejection = std::cell::RefCell::new(None::<String>);
        let mut cb = callbacks(&t.credentials);
        cb.push_update_reference(|_refname, status| {
            if let Some(s) = status {
                *rejection.borrow_mut() = Some(s.to_string());
            }
            Ok(())
        });
        let mut po = git2::PushOptions::new();
        po.remote_callbacks(cb);
        let (pushed, rejected) = match local_path(&t.url) {
            // libgit2's local transport checks fast-forward and then writes the ref
            // without a compare-and-swap, so a concurrent push could be overwritten:
            // send the objects to a ref of our own, then move the branch with an atomic
            // compare-and-swap on the repository's lock files (the ones git uses too)
            Some(path) => {
                // unique per process and attempt: concurrent promoters never share it
                let incoming =
                    format!("refs/tenon/incoming/{}-{}-{attempt}", &d.id[..16.min(d.id.len())], std::process::id());
                let r = remote.push(&[&format!("+{commit}:{incoming}")], Some(&mut po));
                let rej = rejection.borrow().clone();
                match (r, rej) {
                    (Ok(()), None) => {
                        (cas_local(&path, &format!("refs/heads/{push_branch}"), commit, tip, &incoming), None)
                    }
                    other => other,
                }
            }
            None => {
                let refspec = format!("{commit}:refs/heads/{push_branch}");
                let r = remote.push(&[&refspec], Some(&mut po));
                (r, rejection.borrow().clone())
            }
        };
        match (pushed, rejected) {
            (Ok(()), None) => {
                return Ok(Landing::Landed { commit: commit.to_string(), branch: push_branch, attempts: attempt })
            }
            (Err(e), _) if e.code() == git2::ErrorCode::Auth => return Err(PromoteError::Auth { url: t.url.clone() }),
            (res, why) => {
                let why = why.or_else(|| res.err().map(|e| e.message().to_string())).unwrap_or_default();
                let race = [
                    "already exists",
                    "non-fast-forward",
                    "fetch first",
                    "lock",
                    "stale",
                    "incorrect old value",
                    "not present",
                    "cannot",
                    "failed to update ref",
                    "rejected",
                ]
                .iter()
                .any(|k| why.to_lowercase().contains(k))
                    && !why.contains("protected");
                if !race {
                    return Err(PromoteError::Rejected { branch: push_branch, message: why });
                }
                if attempt >= t.max_attempts {
                    return Ok(Landing::Conflicted { attempts: attempt });
                }
                // back off with jitter before re-applying on the new tip
                let base = 50u64 << attempt.min(6);
                let jitter = crate::hash::now_ns().unsigned_abs() % base;
                std::thread::sleep(Duration::from_millis(base + jitter));
            }
        }
    }
}
