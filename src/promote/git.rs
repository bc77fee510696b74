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

use super::decide::{Decision, RenderedUpdate};
use super::edit::{self, Edit};
use super::ledger::{self, GateDoc, HoldDoc, Malformed, RecordDoc, ReleaseDoc, SubjectDoc};
use super::LEDGER_DIR;

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

pub fn callbacks<'a>(c: &'a Credentials, url: &str) -> git2::RemoteCallbacks<'a> {
    let mut cb = git2::RemoteCallbacks::new();
    HOST_KEY_REFUSED.with(|w| w.borrow_mut().take());
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
        let port = ssh_port(url);
        cb.certificate_check(move |cert, host| {
            // strict: the host key must be trusted by the given known_hosts file
            let Some(hk) = cert.as_hostkey() else { return Ok(git2::CertificateCheckStatus::CertificatePassthrough) };
            let untrusted = |why: String| git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssh, why);
            let Some(key) = hk.hostkey() else { return Err(untrusted(format!("{host} sent no host key"))) };
            if let Err(why) = super::known_hosts::check(&kh, host, port, key) {
                HOST_KEY_REFUSED.with(|w| *w.borrow_mut() = Some(why.clone()));
                return Err(untrusted(why));
            }
            Ok(git2::CertificateCheckStatus::CertificateOk)
        });
    }
    cb
}

/// The SSH port of a remote URL (`ssh://[user@]host[:port]/path`; scp-like `host:path`
/// and everything else: 22).
fn ssh_port(url: &str) -> u16 {
    let Some((scheme, rest)) = url.split_once("://") else { return 22 };
    if !scheme.contains("ssh") {
        return 22;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => hostport.split_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
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

/// A hold placed by `tenon rollback`: automatic promotion of the environment stops until
/// `tenon release` removes it. It lives in git (`.tenon/holds/<env>.yaml`), so every
/// tenon replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub environment: String,
    /// The rollback promotion that placed it.
    pub rollback: String,
    /// The promotion whose values the rollback restored.
    pub restored: String,
    pub by: String,
    pub reason: String,
    pub held_at_ns: i64,
}

/// At most the first `n` bytes of `s` (whole characters): ids in messages.
pub fn short(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Hold {
    pub fn to_yaml(&self) -> String {
        ledger::to_yaml(&HoldDoc {
            api_version: Default::default(),
            kind: Default::default(),
            environment: self.environment.clone(),
            rollback: self.rollback.clone(),
            restored: self.restored.clone(),
            by: self.by.clone(),
            reason: self.reason.clone(),
            held_at: self.held_at_ns,
        })
    }

    /// Read a hold file (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Hold, Malformed> {
        let h: HoldDoc = ledger::parse(file, text)?;
        Ok(Hold {
            environment: h.environment,
            rollback: h.rollback,
            restored: h.restored,
            by: h.by,
            reason: h.reason,
            held_at_ns: h.held_at,
        })
    }

    /// What `tenon promote` says about an environment held by this.
    pub fn describe(&self) -> String {
        format!(
            "environment {env} is held by {by} since rollback {rb} (restored {to}{why}): automatic promotion is paused until `tenon release --env {env}`",
            env = self.environment,
            by = self.by,
            rb = short(&self.rollback, 12),
            to = short(&self.restored, 12),
            why = if self.reason.is_empty() { String::new() } else { format!("; {}", self.reason) },
        )
    }
}

/// The fetched tip of the target branch (None: the branch does not exist yet).
pub struct Tip<'r> {
    repo: &'r Repository,
    /// The branch (names files in errors: `main:.tenon/holds/prod.yaml`).
    branch: String,
    commit: Option<git2::Commit<'r>>,
    tree: Option<git2::Tree<'r>>,
}

impl<'r> Tip<'r> {
    fn at(repo: &'r Repository, branch: &str, oid: Option<Oid>) -> Result<Tip<'r>, GitError> {
        let commit = match oid {
            Some(o) => Some(repo.find_commit(o)?),
            None => None,
        };
        let tree = match &commit {
            Some(c) => Some(c.tree()?),
            None => None,
        };
        Ok(Tip { repo, branch: branch.to_string(), commit, tree })
    }

    pub fn read(&self, path: &str) -> Result<Option<String>, GitError> {
        match &self.tree {
            Some(t) => read_blob(self.repo, t, path),
            None => Ok(None),
        }
    }

    fn has(&self, path: &str) -> bool {
        self.tree.as_ref().is_some_and(|t| t.get_path(Path::new(path)).is_ok())
    }

    /// `decidedAt` of every ledger entry of `env`: (id, decidedAt).
    fn ledger(&self, env: &str) -> Result<Vec<(String, i64)>, GitError> {
        let Some(tree) = &self.tree else { return Ok(vec![]) };
        let mut out = Vec::new();
        for (id, path, text) in yaml_files(self.repo, tree, &format!("{LEDGER_DIR}/promotions/{env}")) {
            let r: RecordDoc = ledger::parse(&format!("{}:{path}", self.branch), &text)?;
            out.push((id, r.decided_at));
        }
        Ok(out)
    }

    /// The newest ledger entry decided after `decided_at_ns`.
    fn superseded(&self, env: &str, decided_at_ns: i64) -> Result<Option<Landing>, GitError> {
        let entries = self.ledger(env)?;
        Ok(entries
            .into_iter()
            .filter(|(_, at)| *at > decided_at_ns)
            .max_by_key(|(_, at)| *at)
            .map(|(by, _)| Landing::Superseded { by }))
    }

    /// The newest ledger entry of `env`.
    fn latest(&self, env: &str) -> Result<Option<String>, GitError> {
        Ok(self.ledger(env)?.into_iter().max_by_key(|(_, at)| *at).map(|(id, _)| id))
    }

    pub fn hold(&self, env: &str) -> Result<Option<Hold>, GitError> {
        let path = hold_path(env);
        match self.read(&path)? {
            Some(text) => Ok(Some(Hold::parse(&format!("{}:{path}", self.branch), &text)?)),
            None => Ok(None),
        }
    }

    /// The declarative edits applied to their files here: (path, new text) of each file,
    /// and whether any value changed.
    fn render(&self, branch: &str, updates: &[RenderedUpdate]) -> Result<(Files, bool), GitError> {
        let mut by_file: Vec<(String, Vec<Edit>)> = Vec::new();
        for u in updates {
            let e = Edit { path: u.path.clone(), value: u.value.clone() };
            match by_file.iter_mut().find(|(f, _)| f == &u.file) {
                Some((_, v)) => v.push(e),
                None => by_file.push((u.file.clone(), vec![e])),
            }
        }
        let (mut files, mut changed) = (Vec::new(), false);
        for (file, edits) in by_file {
            let text = self.read(&file)?.ok_or_else(|| GitError::Edit {
                file: file.clone(),
                message: format!("not found on branch {branch}"),
            })?;
            let (new, did) = edit::apply(&text, &edits)
                .map_err(|e| GitError::Edit { file: file.clone(), message: e.to_string() })?;
            changed |= did;
            files.push((file, Some(new)));
        }
        Ok((files, changed))
    }
}

/// The `.yaml` files directly in `dir` of `tree`: (name without `.yaml`, path, text).
fn yaml_files(repo: &Repository, tree: &git2::Tree<'_>, dir: &str) -> Vec<(String, String, String)> {
    let Ok(entry) = tree.get_path(Path::new(dir)) else { return vec![] };
    let Ok(sub) = repo.find_tree(entry.id()) else { return vec![] };
    sub.iter()
        .filter_map(|e| {
            let name = e.name()?;
            let id = name.strip_suffix(".yaml")?.to_string();
            let blob = repo.find_blob(e.id()).ok()?;
            Some((id, format!("{dir}/{name}"), String::from_utf8_lossy(blob.content()).to_string()))
        })
        .collect()
}

/// The subdirectory names of `dir` in `tree`.
fn subdirs(repo: &Repository, tree: &git2::Tree<'_>, dir: &str) -> Vec<String> {
    let Ok(entry) = tree.get_path(Path::new(dir)) else { return vec![] };
    let Ok(sub) = repo.find_tree(entry.id()) else { return vec![] };
    sub.iter().filter(|e| e.kind() == Some(git2::ObjectType::Tree)).filter_map(|e| e.name().map(String::from)).collect()
}

/// One ledger entry at the branch tip: a promotion, a rollback (itself a promotion) or
/// the release of a hold.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    pub id: String,
    /// `promotion`, `rollback` or `release`.
    pub kind: String,
    pub policy: String,
    pub environment: String,
    pub subject_digest: String,
    pub subject_uri: String,
    pub previous: Option<String>,
    pub decided_at_ns: i64,
    /// A rollback: the promotion whose values it restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<String>,
    /// A release: the rollback whose hold it lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The field values the promotion set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<RenderedUpdate>,
}

/// What the target branch records: every ledger entry (optionally of one environment),
/// newest first, and the holds in place.
pub fn ledger_at_tip(t: &Target, env: Option<&str>) -> Result<(Vec<LedgerRecord>, Vec<Hold>), GitError> {
    let (repo, _lock) = open_cache(t)?;
    let Some(tip) = fetch(&repo, t, &t.branch)? else { return Ok((vec![], vec![])) };
    let tree = repo.find_commit(tip)?.tree()?;
    let file = |path: &str| format!("{}:{path}", t.branch);
    let mut out = Vec::new();
    let root = format!("{LEDGER_DIR}/promotions");
    for e in subdirs(&repo, &tree, &root).into_iter().filter(|e| env.is_none_or(|want| want == e)) {
        for (_, path, text) in yaml_files(&repo, &tree, &format!("{root}/{e}")) {
            out.push(record_of(ledger::parse(&file(&path), &text)?));
        }
    }
    let root = format!("{LEDGER_DIR}/releases");
    for e in subdirs(&repo, &tree, &root).into_iter().filter(|e| env.is_none_or(|want| want == e)) {
        for (_, path, text) in yaml_files(&repo, &tree, &format!("{root}/{e}")) {
            out.push(release_of(ledger::parse(&file(&path), &text)?));
        }
    }
    out.sort_by(|a, b| b.decided_at_ns.cmp(&a.decided_at_ns));
    let mut holds = Vec::new();
    for (e, path, text) in yaml_files(&repo, &tree, &format!("{LEDGER_DIR}/holds")) {
        if env.is_none_or(|want| want == e) {
            holds.push(Hold::parse(&file(&path), &text)?);
        }
    }
    Ok((out, holds))
}

/// The ledger record of a promotion or rollback entry.
fn record_of(r: RecordDoc) -> LedgerRecord {
    LedgerRecord {
        id: r.id,
        kind: if r.restores.is_some() { "rollback" } else { "promotion" }.into(),
        policy: r.policy,
        environment: r.environment,
        subject_digest: r.subject.digest,
        subject_uri: r.subject.uri,
        previous: r.previous,
        decided_at_ns: r.decided_at,
        restores: r.restores,
        releases: None,
        by: None,
        updates: r.updates,
    }
}

/// The ledger record of a release entry.
fn release_of(r: ReleaseDoc) -> LedgerRecord {
    LedgerRecord {
        id: r.id,
        kind: "release".into(),
        policy: String::new(),
        environment: r.environment,
        subject_digest: String::new(),
        subject_uri: String::new(),
        previous: None,
        decided_at_ns: r.decided_at,
        restores: None,
        releases: Some(r.releases),
        by: Some(r.by),
        updates: vec![],
    }
}

/// The ledger entry recorded with a promotion.
pub fn ledger_entry(d: &Decision, decided_at_ns: i64, previous: Option<&str>, source_revision: &str) -> String {
    ledger::to_yaml(&RecordDoc {
        api_version: Default::default(),
        kind: Default::default(),
        id: d.id.clone(),
        policy: d.policy.clone(),
        environment: d.environment.clone(),
        restores: d.restores.clone(),
        subject: SubjectDoc { uri: d.subject_uri.clone(), digest: d.subject_digest.clone() },
        gates: d
            .gates
            .iter()
            .map(|g| GateDoc {
                result: g.result.clone(),
                operator: g.operator.clone(),
                threshold: g.threshold.clone(),
                observed: g.observed.as_deref().unwrap_or("").trim_end_matches('\n').to_string(),
                passed: g.passed,
            })
            .collect(),
        updates: d.updates.clone(),
        source_revision: source_revision.to_string(),
        previous: previous.map(String::from),
        decided_at: decided_at_ns,
    })
}

/// The record of a release (`.tenon/releases/<env>/<id>.yaml`).
pub fn release_entry(id: &str, hold: &Hold, by: &str, decided_at_ns: i64) -> String {
    ledger::to_yaml(&ReleaseDoc {
        api_version: Default::default(),
        kind: Default::default(),
        id: id.to_string(),
        environment: hold.environment.clone(),
        releases: hold.rollback.clone(),
        by: by.to_string(),
        decided_at: decided_at_ns,
    })
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

/// Files to commit: (path, Some(new text)) or (path, None) to delete it.
type Files = Vec<(String, Option<String>)>;

/// What to commit on a tip: stop with an outcome, or write / delete files.
enum Step {
    Stop(Landing),
    Commit(Files),
}

/// The one write path of promotions, rollbacks and releases: fetch the target branch,
/// let `plan` decide on its tip, commit, and push without force; on a race fetch the new
/// tip and plan again, with backoff, up to `max_attempts`. `marker` is the file whose
/// presence on the target branch (or, in branch mode, on the pushed branch) says this
/// change is already there.
fn commit_and_push(
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
enum Pushed {
    Done,
    /// The remote has commits this push does not build on: the branch moved.
    Moved,
    /// The remote refused the update; git's reason and what the remote's hooks printed.
    Refused(String),
}

/// The remote's own messages (hook output sent on git's sideband), without progress lines.
fn remote_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .filter_map(|l| l.rsplit('\r').find(|seg| !seg.trim().is_empty()))
        .map(|l| l.trim().trim_start_matches("remote:").trim().to_string())
        .filter(|l| !l.is_empty() && !l.contains('%'))
        .take(20)
        .collect()
}

fn with_remote_lines(why: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        why.to_string()
    } else {
        format!("{why}; the remote said: {}", lines.join(" / "))
    }
}

/// Push with libgit2 (ssh, http(s), git://). libgit2 refuses a non-fast-forward itself
/// (`NotFastForward`: the remote has commits this one does not build on); the server
/// reports a refused update through the push-update-reference status.
fn push_remote(repo: &Repository, t: &Target, refname: &str, commit: Oid) -> Result<Pushed, GitError> {
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
fn push_local(
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

/// An SSH signature of `data` in git's format (`ssh-keygen -Y sign -n git`, as git does
/// with gpg.format=ssh).
fn ssh_sign(key: &Path, data: &[u8]) -> Result<String, GitError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fail = |m: String| GitError::Git { message: format!("cannot sign with {}: {m}", key.display()) };
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "git", "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("ssh-keygen: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || !text.contains("BEGIN SSH SIGNATURE") {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(err.lines().last().unwrap_or("ssh-keygen failed").to_string()));
    }
    Ok(text)
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
