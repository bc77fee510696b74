//! Git LFS at run time: a TaskRun that is about to run (not a cache hit) must see the
//! real content of the LFS-tracked files in its repository workspaces, never the pointer
//! files a clone made with `GIT_LFS_SKIP_SMUDGE=1` (or without git-lfs) leaves in their place.
//!
//! Before the first attempt, the files the task reads (its repository workspaces, narrowed
//! by `tenon.dev/inputs` / `tenon.dev/exclude`) that are still pointers are fetched with
//! `git lfs pull --include=<those paths>` in their work tree, then each is checked against
//! its pointer (SHA-256 and size). When git-lfs is missing or an object cannot be fetched,
//! the TaskRun fails before it starts, naming the objects and the command that fetches them.
//! A file that is already smudged is not touched.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

use crate::hash::lfs::{
    any_lfs_pointer as lfs_pointer, MAX_POINTER_BYTES as MAX_POINTER, MIN_POINTER_BYTES as MIN_POINTER,
};

/// The reason a TaskRun fails with when its LFS objects cannot be made real.
pub const REASON: &str = "GitLFSObjectsMissing";

const NOT_INSTALLED: &str = "git-lfs is not installed";

/// Where a task reads repository files: a workspace's host root and the include and
/// exclude globs of its cache inputs (empty include: everything).
#[derive(Debug, Clone)]
pub struct Scope {
    pub root: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// A pointer file found where a task reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointer {
    pub path: PathBuf,
    pub oid: String,
    pub size: u64,
}

/// Pointer files under each scope (symlinks are not followed; `.git` is skipped).
pub fn find_pointers(scopes: &[Scope]) -> Result<Vec<Pointer>, String> {
    let mut out = Vec::new();
    for s in scopes {
        let include = globs(&s.include)?;
        let exclude = globs(&s.exclude)?.unwrap_or_else(GlobSet::empty);
        walk(&s.root, "", &include, &exclude, &mut out)
            .map_err(|e| format!("cannot look for Git LFS pointers under {}: {e}", s.root.display()))?;
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// `tenon.dev/inputs` semantics: a glob, and a plain `dir` or `dir/` also means everything below it.
fn globs(pats: &[String]) -> Result<Option<GlobSet>, String> {
    let pats: Vec<&str> = pats.iter().map(|p| p.trim().trim_start_matches("./")).filter(|p| !p.is_empty()).collect();
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in pats {
        let dir = p.trim_end_matches('/');
        let below = (!dir.contains(['*', '?', '['])).then(|| format!("{dir}/**"));
        for g in std::iter::once(p).chain(below.as_deref()) {
            b.add(Glob::new(g).map_err(|e| format!("invalid glob {p:?}: {e}"))?);
        }
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

fn walk(
    dir: &Path,
    rel: &str,
    include: &Option<GlobSet>,
    exclude: &GlobSet,
    out: &mut Vec<Pointer>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if rel.is_empty() && name == ".git" {
            continue;
        }
        let child = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
        if exclude.is_match(&child) {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(&e.path(), &child, include, exclude, out)?;
        } else if ft.is_file()
            && include.as_ref().is_none_or(|g| g.is_match(&child))
            && (MIN_POINTER..=MAX_POINTER).contains(&e.metadata()?.len())
        {
            let mut bytes = Vec::new();
            std::fs::File::open(e.path())?.take(MAX_POINTER + 1).read_to_end(&mut bytes)?;
            if let Some((oid, size)) = lfs_pointer(&bytes) {
                out.push(Pointer { path: e.path(), oid, size });
            }
        }
    }
    Ok(())
}

/// Whether `path` holds exactly the object `p` names (streamed: the model may be large).
fn holds(path: &Path, p: &Pointer) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    if f.metadata().map(|m| m.len()).ok() != Some(p.size) {
        return false;
    }
    let mut h = Sha256::new();
    if std::io::copy(&mut f, &mut h).is_err() {
        return false;
    }
    crate::hash::hex(&h.finalize()) == p.oid
}

/// A pointer and its path relative to its work tree.
type Named = (String, Pointer);

/// One `git lfs pull` at a time in this process (it rewrites the index).
static PULL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How making the pointers real ended when it did not.
#[derive(Debug)]
pub enum Unfetched {
    /// Objects are missing: what to tell the user (paths, oids, why, the command).
    Missing(String),
    /// `cancel` fired while git-lfs ran (it was killed).
    Cancelled,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Unfetched> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Unfetched::Missing(format!("Git LFS check failed: {e}")))
}

/// Make every pointer file under `scopes` real, or say which objects are missing and how
/// to fetch them. Does nothing when there are no pointers; git-lfs is killed when `cancel` fires.
pub async fn materialize(scopes: &[Scope], cancel: &CancellationToken) -> Result<(), Unfetched> {
    let s = scopes.to_vec();
    let pointers = blocking(move || find_pointers(&s)).await?.map_err(Unfetched::Missing)?;
    if pointers.is_empty() {
        return Ok(());
    }
    // group by work tree: `git lfs pull` runs in each, with paths relative to its top
    let mut by_top: Vec<(Option<PathBuf>, Vec<Named>)> = Vec::new();
    for p in pointers {
        let top = work_tree(&p.path);
        let rel = top
            .as_ref()
            .and_then(|t| p.path.strip_prefix(t).ok())
            .map(|r| r.display().to_string())
            .unwrap_or_else(|| p.path.display().to_string());
        match by_top.iter_mut().find(|(t, _)| *t == top) {
            Some((_, v)) => v.push((rel, p)),
            None => by_top.push((top, vec![(rel, p)])),
        }
    }
    let mut problems = Vec::new();
    for (top, files) in by_top {
        let Some(top) = top else {
            problems.push(missing(&files, "they are not in a git work tree, so git-lfs cannot fetch them", None));
            continue;
        };
        let include = files.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(",");
        let fix =
            format!("git -C {} lfs pull --include={}", shell_word(&top.display().to_string()), shell_word(&include));
        let pulled = {
            let _one = PULL.lock().await;
            tokio::select! {
                r = pull(&top, &include) => r,
                _ = cancel.cancelled() => return Err(Unfetched::Cancelled),
            }
        };
        let left: Vec<Named> =
            blocking(move || files.into_iter().filter(|(_, p)| !holds(&p.path, p)).collect()).await?;
        if !left.is_empty() {
            let fix = match &pulled {
                Err(e) if e == NOT_INSTALLED => format!("install git-lfs (e.g. apt-get install git-lfs), then: {fix}"),
                _ => fix,
            };
            let why = pulled
                .err()
                .unwrap_or_else(|| "git lfs pull did not check them out with the content their pointers name".into());
            problems.push(missing(&left, &why, Some(&fix)));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Unfetched::Missing(problems.join("; ")))
    }
}

fn missing(files: &[Named], why: &str, fix: Option<&str>) -> String {
    let list: Vec<String> =
        files.iter().map(|(rel, p)| format!("{rel} (oid sha256:{}, size {})", p.oid, p.size)).collect();
    let mut m = format!(
        "{} Git LFS object(s) the task reads are only pointer files in the repository: {} ({why})",
        files.len(),
        list.join(", ")
    );
    match fix {
        Some(fix) => m.push_str(&format!("; fetch them with: {fix}")),
        None => m.push_str("; put the real files in their place"),
    }
    m
}

/// The top of the git work tree holding `path`, canonical.
fn work_tree(path: &Path) -> Option<PathBuf> {
    let repo = git2::Repository::discover(path.parent()?).ok()?;
    repo.workdir()?.canonicalize().ok()
}

/// `git lfs pull --include=PATHS` in `top`, with the LFS filters given on the command line
/// (a clone without `git lfs install` has none, and git-lfs would then fetch but not check out).
/// Killed when dropped (cancellation).
async fn pull(top: &Path, include: &str) -> Result<(), String> {
    let out = Command::new("git")
        .current_dir(top)
        .env_remove("GIT_LFS_SKIP_SMUDGE")
        // never wait for a password on a terminal nobody watches
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .args([
            "-c",
            "filter.lfs.process=git-lfs filter-process",
            "-c",
            "filter.lfs.smudge=git-lfs smudge -- %f",
            "-c",
            "filter.lfs.clean=git-lfs clean -- %f",
            "-c",
            "filter.lfs.required=true",
            "lfs",
            "pull",
            &format!("--include={include}"),
        ])
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("'lfs' is not a git command") {
        return Err(NOT_INSTALLED.into());
    }
    let last: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = last[last.len().saturating_sub(3)..].join(" / ");
    Err(format!("git lfs pull failed ({}): {tail}", out.status))
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-,=+:@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    fn ptr(body: &str) -> Vec<u8> {
        format!("version https://git-lfs.github.com/spec/v1\n{body}").into_bytes()
    }

    #[test]
    fn finds_pointers_where_the_task_reads() {
        let d = tempfile::tempdir().unwrap();
        let p = ptr(&format!("oid sha256:{OID}\nsize 1\n"));
        for f in ["models/m.bin", "other/o.bin", "models/skip/s.bin", ".git/lfs/x"] {
            std::fs::create_dir_all(d.path().join(f).parent().unwrap()).unwrap();
            std::fs::write(d.path().join(f), &p).unwrap();
        }
        std::fs::write(d.path().join("models/real.bin"), b"real content").unwrap();
        let scope = |inc: &[&str], exc: &[&str]| Scope {
            root: d.path().to_path_buf(),
            include: inc.iter().map(|s| s.to_string()).collect(),
            exclude: exc.iter().map(|s| s.to_string()).collect(),
        };
        let names = |s: Scope| -> Vec<String> {
            find_pointers(&[s])
                .unwrap()
                .iter()
                .map(|p| p.path.strip_prefix(d.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names(scope(&[], &[])), ["models/m.bin", "models/skip/s.bin", "other/o.bin"]);
        assert_eq!(names(scope(&["models/"], &["models/skip"])), ["models/m.bin"]);
        assert_eq!(names(scope(&["**/o.bin"], &[])), ["other/o.bin"]);
    }

    #[tokio::test]
    async fn outside_git_a_pointer_is_refused_with_its_object_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("m.bin"), ptr(&format!("oid sha256:{OID}\nsize 7\n"))).unwrap();
        let scope = Scope { root: d.path().to_path_buf(), include: vec![], exclude: vec![] };
        let Err(Unfetched::Missing(e)) = materialize(&[scope], &CancellationToken::new()).await else {
            panic!("a pointer outside git is refused")
        };
        assert!(e.contains(OID) && e.contains("size 7") && e.contains("not in a git work tree"), "{e}");
    }
}
