//! Digests from git: clean tracked files take their SHA-256 from the blob memo, Git LFS
//! pointers are keyed by their oid, and none of git's traps (racy timestamps, edits without
//! `git add`, assume-unchanged, skip-worktree, staged changes) yields a digest other than
//! the SHA-256 of the file's actual bytes. Real repositories made with the `git` CLI (and
//! `git lfs`, with a bare `file://` remote); a few index entries are then rewritten with
//! libgit2 to make the index lie exactly as a racy or flagged entry can.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::tenon_cached;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tenon::hash::git::{BlobDigest, GitView};
use tenon::hash::{hash_tree_git, Filter, HashStats, LfsInput, StatCache, Tree};

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A temp dir with a private HOME for git (identity, `git lfs install`).
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let s = Sandbox { _tmp: tmp, root, home };
        s.git(&s.root, &["config", "--global", "user.name", "tenon test"]);
        s.git(&s.root, &["config", "--global", "user.email", "test@example.invalid"]);
        s.git(&s.root, &["config", "--global", "init.defaultBranch", "main"]);
        s
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.current_dir(dir).args(args).env("HOME", &self.home).env("GIT_CONFIG_NOSYSTEM", "1");
        c.env_remove("GIT_DIR").env_remove("GIT_INDEX_FILE").env_remove("GIT_WORK_TREE");
        c
    }

    #[track_caller]
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.cmd(dir, args).output().expect("git runs");
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// A repository `name` holding `files`, committed, with an index no entry of which is
    /// racily clean.
    fn repo(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.git(&dir, &["init", "-q"]);
        for (p, b) in files {
            write(&dir.join(p), b);
        }
        settle();
        self.git(&dir, &["add", "-A"]);
        self.git(&dir, &["commit", "-qm", "init"]);
        dir
    }
}

fn write(p: &Path, b: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b).unwrap();
}

/// Let the filesystem clock move past the files just written (its timestamps are coarse),
/// so an index written afterwards is strictly newer than them.
fn settle() {
    std::thread::sleep(Duration::from_millis(50));
}

/// One hashing pass over `dir` as tenon's planner does it, with `memo` as the store's
/// blob memo. Returns the tree, the unsmudged LFS pointers, the counters and what the
/// pass taught the memo.
struct Pass {
    tree: Tree,
    lfs: Vec<LfsInput>,
    stats: HashStats,
    learned: Vec<(String, BlobDigest)>,
}

impl Pass {
    fn digest(&self, path: &str) -> &str {
        &self.tree.entries.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("no {path}")).digest
    }
    fn count(&self, which: &str) -> u64 {
        let s = &self.stats;
        match which {
            "git" => s.from_git_index.load(Ordering::Relaxed),
            "lfs" => s.from_lfs_pointer.load(Ordering::Relaxed),
            "stat" => s.from_stat_cache.load(Ordering::Relaxed),
            "hashed" => s.hashed_files.load(Ordering::Relaxed),
            _ => unreachable!(),
        }
    }
}

fn pass(dir: &Path, memo: &HashMap<String, BlobDigest>) -> Pass {
    let mut g = GitView::open(dir).expect("a readable git work tree");
    g.set_memo(memo.clone());
    let stats = HashStats::default();
    let (tree, lfs) = hash_tree_git(dir, &Filter::everything(), &StatCache::default(), &stats, Some(&g)).unwrap();
    Pass { tree, lfs, stats, learned: g.take_learned() }
}

/// The memo after hashing `dir` once (every clean file read and learned).
fn learned_memo(dir: &Path) -> HashMap<String, BlobDigest> {
    pass(dir, &HashMap::new()).learned.into_iter().collect()
}

/// The blob id git would give `bytes`.
fn blob_id(bytes: &[u8]) -> String {
    git2::Oid::hash_object(git2::ObjectType::Blob, bytes).unwrap().to_string()
}

/// Rewrite `path`'s index entry so that its stat data is the file's current stat (as if
/// git had recorded it), keeping its blob id: the index now says the file is unmodified
/// although its content is not the blob's. What remains to tell the difference is the
/// racy rule and the flags.
fn forge_stat(dir: &Path, path: &str) {
    let repo = git2::Repository::open(dir).unwrap();
    let mut index = repo.index().unwrap();
    let mut e = index.get_path(Path::new(path), 0).expect("tracked");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join(path)).unwrap();
    e.mtime = git2::IndexTime::new(m.mtime() as i32, m.mtime_nsec() as u32);
    e.ctime = git2::IndexTime::new(m.ctime() as i32, m.ctime_nsec() as u32);
    e.ino = m.ino() as u32;
    e.dev = m.dev() as u32;
    e.uid = m.uid();
    e.gid = m.gid();
    e.file_size = m.size() as u32;
    index.add(&e).unwrap();
    index.write().unwrap();
}

const A: &[u8] = b"weights v1\n";
const B: &[u8] = b"weights v2\n";

/// A repository with `f.txt` = A committed and the memo knowing A's blob (the control:
/// the memo is really used while the file is clean).
fn trap_setup(s: &Sandbox) -> (PathBuf, HashMap<String, BlobDigest>) {
    let dir = s.repo("r", &[("f.txt", A), ("other.txt", b"other\n")]);
    let memo = learned_memo(&dir);
    assert_eq!(memo.get(&blob_id(A)).map(|d| d.sha256.as_str()), Some(sha_hex(A).as_str()), "{memo:?}");
    let p = pass(&dir, &memo);
    assert_eq!((p.count("git"), p.count("hashed")), (2, 0), "clean files come from the memo");
    assert_eq!(p.digest("f.txt"), sha_hex(A));
    (dir, memo)
}

#[track_caller]
fn assert_true_digest(dir: &Path, memo: &HashMap<String, BlobDigest>, what: &str) {
    assert_true_digest_n(dir, memo, what, 1)
}

/// `from_git` files (of the two) come from the memo.
#[track_caller]
fn assert_true_digest_n(dir: &Path, memo: &HashMap<String, BlobDigest>, what: &str, from_git: u64) {
    let p = pass(dir, memo);
    let actual = std::fs::read(dir.join("f.txt")).unwrap();
    assert_eq!(p.digest("f.txt"), sha_hex(&actual), "{what}: the digest is the SHA-256 of the actual bytes");
    assert_eq!(p.count("git"), from_git, "{what}: files from the memo");
}

#[test]
fn clean_files_come_from_the_memo_on_a_fresh_clone() {
    let s = Sandbox::new();
    let files: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| (format!("d{}/f{i}.txt", i % 3), format!("{i}\n").into())).collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    let src = s.repo("src", &refs);
    let memo = learned_memo(&src);
    assert_eq!(memo.len(), 20);
    s.git(&s.root, &["clone", "-q", src.to_str().unwrap(), "clone"]);
    let clone = s.root.join("clone");
    settle();
    // refresh the clone's index (git rewrites it when entries are racily clean)
    s.git(&clone, &["status", "--porcelain"]);
    let p = pass(&clone, &memo);
    assert_eq!((p.count("git"), p.count("hashed"), p.count("stat")), (20, 0, 0));
    for (path, bytes) in &files {
        assert_eq!(p.digest(path), sha_hex(bytes), "{path}");
    }
    // the same tree as hashing every file
    let plain =
        tenon::hash::hash_tree(&clone, &Filter::everything(), &StatCache::default(), &HashStats::default()).unwrap();
    assert_eq!(p.tree, plain);
    // a sub-directory root and a single-file root
    let sub = pass(&clone.join("d1"), &memo);
    assert_eq!((sub.count("git"), sub.count("hashed")), (7, 0));
    let one = pass(&clone.join("d1/f1.txt"), &memo);
    assert_eq!((one.count("git"), one.digest("f1.txt")), (1, sha_hex(b"1\n").as_str()));
}

#[test]
fn edited_without_git_add_is_read() {
    let s = Sandbox::new();
    let (dir, memo) = trap_setup(&s);
    // same size, same mtime as before (ctime moves: no user can set it)
    let f = dir.join("f.txt");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, B).unwrap();
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
    assert_true_digest(&dir, &memo, "edited without git add");
}

#[test]
fn racily_clean_entries_are_read() {
    let s = Sandbox::new();
    let (dir, memo) = trap_setup(&s);
    // naturally racy: rewritten with the same size right after `git add` (within the
    // timestamp tick, when the machine is fast enough: then only the racy rule tells)
    write(&dir.join("f.txt"), A);
    s.git(&dir, &["add", "f.txt"]);
    std::fs::write(dir.join("f.txt"), B).unwrap();
    assert_true_digest(&dir, &memo, "rewritten right after git add");
    // forged: the entry's stat equals the file's, its mtime lies after the index's own
    // (a file written in the tick the index was written in)
    write(&dir.join("f.txt"), A);
    settle();
    s.git(&dir, &["add", "f.txt"]);
    let f = dir.join("f.txt");
    std::fs::write(&f, B).unwrap();
    let future = SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(future).unwrap();
    settle();
    forge_stat(&dir, "f.txt");
    assert_true_digest(&dir, &memo, "stat equal, mtime not older than the index");
    // forged: the index file's mtime is older than the entry's ctime
    write(&dir.join("f.txt"), B);
    settle();
    forge_stat(&dir, "f.txt");
    let index = dir.join(".git/index");
    let past = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&index).unwrap().set_modified(past).unwrap();
    // (every entry is racy now: other.txt is read too)
    assert_true_digest_n(&dir, &memo, "stat equal, ctime not older than the index", 0);
    // control: the same forged entry with an index written later is trusted (the memo
    // is used: the entry is exactly what git would call clean)
    settle();
    forge_stat(&dir, "f.txt");
    let p = pass(&dir, &memo);
    assert_eq!(p.count("git"), 2, "a forged but non-racy entry is trusted, as git trusts it");
}

#[test]
fn assume_unchanged_and_skip_worktree_are_not_trusted() {
    for (flag, letter) in [("--assume-unchanged", 'h'), ("--skip-worktree", 'S')] {
        let s = Sandbox::new();
        let (dir, memo) = trap_setup(&s);
        s.git(&dir, &["update-index", flag, "f.txt"]);
        // edited, its mtime an hour back (git would smudge an entry of the index's second),
        // and the entry's stat forged to match (libgit2 keeps the flag)
        let f = dir.join("f.txt");
        std::fs::write(&f, B).unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(past).unwrap();
        settle();
        forge_stat(&dir, "f.txt");
        let ls = s.git(&dir, &["ls-files", "-v", "f.txt"]);
        assert!(ls.starts_with(letter), "{flag}: {ls}");
        // git itself sees no change
        let st = s.cmd(&dir, &["diff", "--quiet"]).status().unwrap();
        assert!(st.success(), "{flag}: git diff sees no change");
        assert_true_digest(&dir, &memo, flag);
    }
}

#[test]
fn staged_but_not_committed_is_the_staged_content() {
    let s = Sandbox::new();
    let (dir, memo) = trap_setup(&s);
    write(&dir.join("f.txt"), B);
    settle();
    s.git(&dir, &["add", "f.txt"]);
    let p = pass(&dir, &memo);
    assert_eq!(p.digest("f.txt"), sha_hex(B));
    assert_eq!(p.count("hashed"), 1, "a blob the memo does not know is read");
    assert!(p.learned.iter().any(|(b, d)| *b == blob_id(B) && d.sha256 == sha_hex(B)), "{:?}", p.learned);
    let memo2: HashMap<_, _> = memo.into_iter().chain(p.learned).collect();
    let p = pass(&dir, &memo2);
    assert_eq!((p.digest("f.txt"), p.count("git")), (sha_hex(B).as_str(), 2));
}

#[test]
fn untracked_and_ignored_files_are_hashed_as_usual() {
    let s = Sandbox::new();
    let (dir, memo) = trap_setup(&s);
    write(&dir.join(".gitignore"), b"ignored.txt\n");
    write(&dir.join("ignored.txt"), A);
    write(&dir.join("untracked.txt"), A);
    let p = pass(&dir, &memo);
    assert_eq!(p.count("git"), 2);
    assert_eq!(p.count("hashed"), 3);
    assert_eq!(p.digest("ignored.txt"), sha_hex(A));
    assert!(p.learned.is_empty(), "only tracked files teach the memo: {:?}", p.learned);
}

#[test]
fn checkout_conversions_never_reuse_a_blob_digest() {
    // CRLF on checkout: the file's bytes are not the blob's (its size differs)
    let s = Sandbox::new();
    let src = s.repo("src", &[("t.txt", b"a\nb\n")]);
    let memo = learned_memo(&src);
    s.git(&s.root, &["-c", "core.autocrlf=true", "clone", "-q", src.to_str().unwrap(), "crlf"]);
    let crlf = s.root.join("crlf");
    s.git(&crlf, &["config", "core.autocrlf", "true"]);
    settle();
    s.git(&crlf, &["status", "--porcelain"]);
    let bytes = std::fs::read(crlf.join("t.txt")).unwrap();
    assert_eq!(bytes, b"a\r\nb\r\n");
    let p = pass(&crlf, &memo);
    assert_eq!((p.digest("t.txt"), p.count("git")), (sha_hex(&bytes).as_str(), 0));
    assert!(p.learned.is_empty(), "converted bytes do not hash to the blob id");
    // a custom filter driver: the repository is not read from git at all
    s.git(&src, &["config", "filter.rot.smudge", "cat"]);
    assert!(GitView::open(&src).is_none());
}

// ------------------------------------------------------------------------------------------
// Git LFS
// ------------------------------------------------------------------------------------------

/// A repository with `model.bin` in Git LFS and `a.txt`, pushed to a bare `file://`
/// remote; returns (remote URL, the model's bytes).
fn lfs_remote(s: &Sandbox) -> (String, Vec<u8>) {
    s.git(&s.root, &["lfs", "install"]);
    let model: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let src = s.root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    s.git(&src, &["init", "-q"]);
    s.git(&src, &["lfs", "track", "*.bin"]);
    write(&src.join("model.bin"), &model);
    write(&src.join("a.txt"), b"a\n");
    write(&src.join("pipeline.yaml"), PIPELINE.as_bytes());
    s.git(&src, &["add", "-A"]);
    s.git(&src, &["commit", "-qm", "model"]);
    let bare = s.root.join("remote.git");
    s.git(&s.root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let url = format!("file://{}", bare.display());
    s.git(&src, &["remote", "add", "origin", &url]);
    s.git(&src, &["push", "-q", "origin", "main"]);
    (url, model)
}

fn clone(s: &Sandbox, url: &str, name: &str, skip_smudge: bool) -> PathBuf {
    let mut c = s.cmd(&s.root, &["clone", "-q", url, name]);
    if skip_smudge {
        c.env("GIT_LFS_SKIP_SMUDGE", "1");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "clone: {}", String::from_utf8_lossy(&o.stderr));
    let dir = s.root.join(name);
    settle();
    s.git(&dir, &["status", "--porcelain"]);
    dir
}

#[test]
fn lfs_pointer_clone_and_smudged_clone_have_the_same_digests() {
    let s = Sandbox::new();
    let (url, model) = lfs_remote(&s);
    let oid = sha_hex(&model);
    let smudged = clone(&s, &url, "smudged", false);
    let pointers = clone(&s, &url, "pointers", true);
    assert_eq!(std::fs::read(smudged.join("model.bin")).unwrap(), model);
    let ptext = std::fs::read(pointers.join("model.bin")).unwrap();
    assert_eq!(tenon::hash::lfs::lfs_pointer(&ptext), Some((oid.clone(), model.len() as u64)));

    let memo = HashMap::new();
    let a = pass(&smudged, &memo);
    let b = pass(&pointers, &memo);
    assert_eq!(a.digest("model.bin"), oid);
    assert_eq!(b.digest("model.bin"), oid);
    assert_eq!(a.tree.root, b.tree.root, "same keys from a pointer-only clone");
    // the smudged model is keyed from its pointer blob, not read
    assert_eq!((a.count("lfs"), a.stats.hashed_bytes.load(Ordering::Relaxed) < 10_000), (1, true));
    assert!(a.lfs.is_empty(), "the smudged clone has the object");
    assert_eq!(b.count("lfs"), 1);
    assert_eq!(b.lfs, vec![LfsInput { path: "model.bin".into(), oid: oid.clone(), size: model.len() as u64 }]);
    // with the learned memo: from the memo, still keyed by the pointer
    let memo: HashMap<_, _> = a.learned.into_iter().chain(b.learned).collect();
    let a2 = pass(&smudged, &memo);
    let b2 = pass(&pointers, &memo);
    assert_eq!((a2.tree.root.as_str(), b2.tree.root.as_str()), (a.tree.root.as_str(), a.tree.root.as_str()));
    assert_eq!((a2.count("hashed"), b2.count("hashed")), (0, 0));
    assert_eq!(b2.lfs.len(), 1);
    // an edited model is read and keyed by its bytes
    let mut edited = model.clone();
    edited[0] ^= 1;
    write(&smudged.join("model.bin"), &edited);
    assert_eq!(pass(&smudged, &memo).digest("model.bin"), sha_hex(&edited));
}

#[test]
fn a_committed_pointer_text_is_keyed_by_its_oid() {
    // a pointer committed as a plain file (no `git lfs`): tracked, so keyed by its oid;
    // the same text untracked is hashed as it is
    let oid = sha_hex(b"the model");
    let text = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 9\n");
    let s = Sandbox::new();
    let dir = s.repo("r", &[("m.bin", text.as_bytes())]);
    write(&dir.join("untracked.bin"), text.as_bytes());
    let p = pass(&dir, &HashMap::new());
    assert_eq!(p.digest("m.bin"), oid);
    assert_eq!(p.digest("untracked.bin"), sha_hex(text.as_bytes()));
    assert_eq!(p.lfs, vec![LfsInput { path: "m.bin".into(), oid: oid.clone(), size: 9 }]);
}

// ------------------------------------------------------------------------------------------
// end to end: `tenon plan` on fresh clones
// ------------------------------------------------------------------------------------------

const PIPELINE: &str = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: p-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - name: source
      emptyDir: {}
  taskSpec:
    workspaces:
      - name: source
    steps:
      - name: s
        image: busybox
        script: wc -c $(workspaces.source.path)/model.bin
"#;

fn plan(dir: &Path, store: &Path) -> Value {
    let r = tenon_cached(&["plan", dir.to_str().unwrap(), "--output", "json"], store);
    assert_eq!(r.code, 0, "plan: {}\n{}", r.stdout, r.stderr);
    r.json()
}

fn key(plan: &Value) -> String {
    let t = plan["runs"][0]["tasks"].as_array().and_then(|t| t.first()).cloned().unwrap_or_default();
    t["cacheKey"].as_str().unwrap_or_else(|| panic!("no cacheKey: {plan:#}")).to_string()
}

#[test]
fn plan_on_fresh_clones_reads_nothing_git_names() {
    let s = Sandbox::new();
    let (url, _) = lfs_remote(&s);
    let store = s.root.join("store");
    let one = clone(&s, &url, "one", false);
    let p1 = plan(&one, &store);
    let h = &p1["plan"]["hashing"];
    let h = if h.is_null() { &p1["hashing"] } else { h };
    assert_eq!(h["files"], 4, "{p1:#}");
    assert_eq!(h["fromLfsPointer"], 1, "{p1:#}");
    // a second fresh clone, same store: nothing is read
    let two = clone(&s, &url, "two", false);
    let p2 = plan(&two, &store);
    let h2 = if p2["hashing"].is_null() { &p2["plan"]["hashing"] } else { &p2["hashing"] };
    assert_eq!((h2["hashedFiles"].as_u64(), h2["fromGitIndex"].as_u64()), (Some(0), Some(3)), "{p2:#}");
    assert_eq!(key(&p1), key(&p2));
    // a pointer-only clone with another, empty store plans the same key
    let three = clone(&s, &url, "three", true);
    let p3 = plan(&three, &s.root.join("store3"));
    assert_eq!(key(&p3), key(&p1), "a GIT_LFS_SKIP_SMUDGE clone plans the same key");
}

#[test]
fn an_index_on_another_filesystem_gets_a_racy_margin() {
    // a linked work tree on /dev/shm (tmpfs), its index in the repository's git dir in the
    // temp dir: timestamps of two filesystems may differ in granularity, so entries less
    // than 2 s older than the index are read
    let shm = Path::new("/dev/shm");
    use std::os::unix::fs::MetadataExt;
    let s = Sandbox::new();
    let other_fs = std::fs::metadata(shm).map(|m| m.dev() != std::fs::metadata(&s.root).unwrap().dev());
    assert!(matches!(other_fs, Ok(true)), "this test needs /dev/shm on another filesystem than the temp dir");
    let main = s.repo("r", &[("other.txt", b"other\n")]);
    let tmp = tempfile::tempdir_in(shm).unwrap();
    let wt = tmp.path().join("wt");
    s.git(&main, &["worktree", "add", "-q", wt.to_str().unwrap()]);
    write(&wt.join("f.txt"), A);
    settle();
    s.git(&wt, &["add", "f.txt"]);
    let memo: HashMap<String, BlobDigest> =
        [(blob_id(A), BlobDigest { sha256: sha_hex(A), size: A.len() as u64, lfs: false })].into();
    let p = pass(&wt, &memo);
    assert_eq!(p.digest("f.txt"), sha_hex(A));
    assert_eq!(p.count("git"), 0, "within 2 s of the index: read");
    // once the index is older by more than the margin, the memo is used
    std::thread::sleep(Duration::from_millis(2100));
    // (rewritten whether or not git finds anything to refresh)
    s.git(&wt, &["update-index", "--really-refresh", "--force-write-index"]);
    let p = pass(&wt, &memo);
    assert_eq!((p.count("git"), p.digest("f.txt")), (1, sha_hex(A).as_str()), "f.txt from the memo");
}

/// `tenon plan -v` names each input digest's source; without `-v` the output has no such
/// lines (and `--output json` no `sources`).
#[test]
fn plan_v_says_where_each_digest_came_from() {
    let s = Sandbox::new();
    let (url, _) = lfs_remote(&s);
    let store = s.root.join("store");
    let one = clone(&s, &url, "one", false);
    let human = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["plan", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = tenon_cached(&args, &store);
        assert_eq!(r.code, 0, "plan: {}\n{}", r.stdout, r.stderr);
        r.stdout
    };
    let line = |out: &str, path: &str| -> String {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{path} ")))
            .unwrap_or_else(|| panic!("no line for {path}:\n{out}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    // an empty store: the small tracked files are read, the model keyed by its pointer
    let out = human(&one, &["-v"]);
    assert_eq!(line(&out, "a.txt"), "hashed", "{out}");
    assert_eq!(line(&out, "model.bin"), "from LFS pointer", "{out}");
    // a second fresh clone: what git names comes from the memo
    let two = clone(&s, &url, "two", false);
    let out = human(&two, &["-v"]);
    assert_eq!(line(&out, "a.txt"), "from git index", "{out}");
    assert_eq!(line(&out, "pipeline.yaml"), "from git index", "{out}");
    assert_eq!(line(&out, "model.bin"), "from LFS pointer", "{out}");
    // an untracked file goes through the stat cache: hashed, then from the stat cache
    write(&two.join("notes.txt"), b"untracked\n");
    // past the stat cache's racy window ([`tenon::hash::RACY_WINDOW_NS`])
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(line(&human(&two, &["-v"]), "notes.txt"), "hashed");
    assert_eq!(line(&human(&two, &["-v"]), "notes.txt"), "from stat cache");
    // without -v: the counts only
    let out = human(&two, &[]);
    assert!(!out.contains("from git index\n"), "{out}");
    let j = plan(&two, &store);
    assert!(j["hashing"].get("sources").is_none(), "{j:#}");
    let r = tenon_cached(&["plan", two.to_str().unwrap(), "-v", "--output", "json"], &store);
    let j = r.json();
    let srcs = j["hashing"]["sources"].as_array().unwrap_or_else(|| panic!("{j:#}"));
    assert!(srcs.iter().any(|e| e["path"] == "a.txt" && e["source"] == "from git index"), "{j:#}");
}

// ------------------------------------------------------------------------------------------
// the memo through the shared cache (`--cache-repo`)
// ------------------------------------------------------------------------------------------

fn with_remote(cmd: &str, dir: &Path, store: &Path, extra: &[&str]) -> Value {
    let mut args = vec![cmd, dir.to_str().unwrap(), "--output", "json"];
    args.extend_from_slice(extra);
    let r = tenon_cached(&args, store);
    assert_eq!(r.code, 0, "{cmd}: {}\n{}", r.stdout, r.stderr);
    r.json()
}

fn hashing(v: &Value) -> (u64, u64, u64) {
    let h = &v["hashing"];
    let n = |k: &str| h[k].as_u64().unwrap_or_else(|| panic!("no hashing.{k}: {v:#}"));
    (n("hashedFiles"), n("fromGitIndex"), n("fromLfsPointer"))
}

#[test]
fn a_fresh_clone_on_another_machine_reads_no_file_another_tenon_hashed() {
    let Some(reg) = common::registry::Registry::start(common::registry::Variant::Plain) else { return };
    let url = reg.url("tenon/cache");
    let s = Sandbox::new();
    let (remote, _) = lfs_remote(&s);
    // machine A runs and publishes its records and its memo
    let a = clone(&s, &remote, "a", false);
    let ra = with_remote("run", &a, &s.root.join("store-a"), &["--cache-repo", &url]);
    assert_eq!(hashing(&ra), (3, 0, 1), "A reads what it never saw: {ra:#}");
    assert_eq!(ra["remoteCache"]["gitMemoRowsOut"], 4, "{:#}", ra["remoteCache"]);
    // machine B: a fresh clone, an empty store; nothing is read, the task is cached
    let b = clone(&s, &remote, "b", false);
    let pb = with_remote("plan", &b, &s.root.join("store-b"), &["--cache-repo", &url]);
    assert_eq!(hashing(&pb), (0, 3, 1), "{pb:#}");
    assert_eq!(pb["remoteCache"]["gitMemoRowsIn"], 4, "{pb:#}");
    assert_eq!(pb["runs"][0]["tasks"][0]["decision"], "cached", "{pb:#}");
    let rb = with_remote("run", &b, &s.root.join("store-b"), &["--cache-repo", &url]);
    assert_eq!(hashing(&rb), (0, 3, 1), "{rb:#}");
    assert_eq!(rb["runs"][0]["tasks"][0]["status"], "Cached", "{rb:#}");
    // B's store has the rows now: the memo is not asked again, and B adds nothing to it
    assert_eq!(rb["remoteCache"]["gitMemoRowsIn"], 0, "{rb:#}");
    assert_eq!(rb["remoteCache"]["gitMemoRowsOut"], 0, "{rb:#}");
    // the traps stay closed: an edit without `git add` (same size) is read and misses
    write(&b.join("a.txt"), b"b\n");
    let pe = with_remote("plan", &b, &s.root.join("store-b"), &["--cache-repo", &url]);
    assert_eq!(hashing(&pe), (1, 2, 1), "{pe:#}");
    assert_ne!(pe["runs"][0]["tasks"][0]["decision"], "cached", "{pe:#}");
    // a new commit: its parent's memo covers every blob but the new one
    s.git(&b, &["commit", "-qam", "edit"]);
    settle();
    s.git(&b, &["status", "--porcelain"]);
    let pc = with_remote("plan", &b, &s.root.join("store-c"), &["--cache-repo", &url]);
    assert_eq!(pc["remoteCache"]["gitMemoRowsIn"], 3, "{pc:#}");
    assert_eq!(hashing(&pc), (1, 2, 1), "{pc:#}");
}

#[test]
fn a_memo_is_used_only_when_signed_by_a_trusted_key() {
    let Some(reg) = common::registry::Registry::start(common::registry::Variant::Plain) else { return };
    let url = reg.url("tenon/signed");
    let s = Sandbox::new();
    let (remote, _) = lfs_remote(&s);
    let (key, public) = common::keygen(&s.root, "ci");
    let (_, stranger) = common::keygen(&s.root, "stranger");
    let (key, public, stranger) = (key.to_str().unwrap(), public.to_str().unwrap(), stranger.to_str().unwrap());
    let a = clone(&s, &remote, "a", false);
    with_remote("run", &a, &s.root.join("store-a"), &["--cache-repo", &url, "--cache-sign-key", key]);
    let b = clone(&s, &remote, "b", false);
    // another key: the memo is ignored, with a warning, and the files are read
    let p = with_remote("plan", &b, &s.root.join("store-b"), &["--cache-repo", &url, "--cache-verify-key", stranger]);
    assert_eq!(hashing(&p), (3, 0, 1), "{p:#}");
    let warnings = p["remoteCache"]["warnings"].to_string();
    assert!(warnings.contains("git memo g1-") && warnings.contains("signature"), "{warnings}\n{p:#}");
    // the signer's key: every row is taken
    let p = with_remote("plan", &b, &s.root.join("store-c"), &["--cache-repo", &url, "--cache-verify-key", public]);
    assert_eq!(hashing(&p), (0, 3, 1), "{p:#}");
    assert_eq!(p["remoteCache"]["gitMemoRowsIn"], 4, "{p:#}");
}

#[test]
fn memo_rows_from_elsewhere_must_agree_with_the_repositorys_blobs() {
    use tenon::hash::git::consistent_rows;
    let s = Sandbox::new();
    let oid = sha_hex(b"the model");
    let pointer = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 9\n");
    let dir = s.repo("r", &[("a.txt", b"abc"), ("m.bin", pointer.as_bytes())]);
    let (a, m) = (blob_id(b"abc"), blob_id(pointer.as_bytes()));
    let row = |blob: &str, sha256: &str, size: u64, lfs: bool| {
        (blob.to_string(), BlobDigest { sha256: sha256.into(), size, lfs })
    };
    let good = vec![row(&a, &sha_hex(b"abc"), 3, false), row(&m, &oid, 9, true)];
    assert_eq!(consistent_rows(&dir, good.clone()), good);
    let bad = vec![
        row(&m, &sha_hex(b"other"), 9, true), // not the pointer's oid
        row(&m, &oid, 10, true),              // not the pointer's size
        row(&a, &sha_hex(b"abc"), 3, true),   // not a pointer
    ];
    assert_eq!(consistent_rows(&dir, bad), vec![]);
    // any other row is used only for a file of its size: a row with another size (and a
    // false digest) is stored, but the file is read
    let lying = row(&a, &sha_hex(b"lie"), 4, false);
    assert_eq!(consistent_rows(&dir, vec![lying.clone()]), vec![lying.clone()]);
    let p = pass(&dir, &HashMap::from([lying]));
    assert_eq!(p.digest("a.txt"), sha_hex(b"abc"));
    assert_eq!(p.count("hashed"), 2);
}
