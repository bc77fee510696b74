//! Git LFS at run time, with real git and git-lfs (Debian's `git-lfs`): a repository whose
//! model is in LFS is pushed to a `file://` bare remote (git-lfs's standalone file
//! transfer serves the objects; no server), cloned with `GIT_LFS_SKIP_SMUDGE=1` so the
//! model is a pointer file, and run with the real `tenon` binary. A task that runs must
//! see the model's real bytes (fetched just for the paths it reads); when the object
//! cannot be fetched the TaskRun fails before it starts, naming the object and the fix.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{task, tenon_command};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PIPELINE: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: reader
  annotations:
    tenon.dev/inputs: "models/"
spec:
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: digest
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo run >> "@SCRATCH@/exec.log"
        sha256sum "$(workspaces.source.path)/models/model.bin" | cut -c1-64 | tr -d '\n' > "$(results.digest.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: lfs
spec:
  workspaces:
    - name: source
  tasks:
    - name: read
      taskRef:
        name: reader
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: lfs-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: lfs
  workspaces:
    - name: source
      emptyDir: {}
"##;

/// One test's world: `<tmp>/origin` (the author's clone, git-lfs installed in it),
/// `<tmp>/remote.git` (bare, file://, holding the LFS objects), `<tmp>/clone` (made with
/// `GIT_LFS_SKIP_SMUDGE=1`), the store and the scratch dir. HOME is `<tmp>` (no global
/// git config: the clone has no LFS filters, as on a machine where git-lfs was never set up).
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: Vec<u8>,
    other: Vec<u8>,
}

fn git_in(home: &Path, dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .output()
        .expect("git runs");
    assert!(
        o.status.success(),
        "git {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for d in ["origin", "store", "scratch"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let w = World { _tmp: tmp, model: bytes(7, 300_000), other: bytes(9, 50_000), root };
        let origin = w.root.join("origin");
        let git = |args: &[&str]| git_in(&w.root, &origin, args);
        git(&["init", "-q", "-b", "main"]);
        git(&["lfs", "install", "--local"]);
        git(&["lfs", "track", "*.bin"]);
        let write = |rel: &str, b: &[u8]| {
            let p = origin.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        };
        write("pipeline.yaml", PIPELINE.replace("@SCRATCH@", w.root.join("scratch").to_str().unwrap()).as_bytes());
        write("models/model.bin", &w.model);
        write("other/big.bin", &w.other);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "model in LFS"]);
        git_in(&w.root, &w.root, &["init", "-q", "--bare", "remote.git"]);
        git(&["remote", "add", "origin", &format!("file://{}", w.root.join("remote.git").display())]);
        git(&["push", "-q", "origin", "main"]);
        git_in(
            &w.root,
            &w.root,
            &["clone", "-q", "-b", "main", &format!("file://{}", w.root.join("remote.git").display()), "clone"],
        );
        let head = std::fs::read(w.path("models/model.bin")).unwrap();
        assert!(head.starts_with(b"version https://git-lfs.github.com/spec/v1\n"), "the clone holds a pointer");
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join("clone").join(rel)
    }

    fn run(&self) -> (i32, Value, String) {
        self.run_with(&[])
    }

    /// `tenon run` on the clone with extra environment variables.
    fn run_with(&self, env: &[(&str, &Path)]) -> (i32, Value, String) {
        let clone = self.root.join("clone");
        let o = tenon_command(&["run", clone.to_str().unwrap(), "--output", "json", "-q"], &self.root.join("store"))
            .envs(env.iter().copied())
            .env("TENON_SANDBOX", "host")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("tenon runs");
        let stdout = String::from_utf8_lossy(&o.stdout);
        let v: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&o.stderr)));
        (o.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&o.stderr).to_string())
    }

    fn runs_logged(&self) -> usize {
        std::fs::read_to_string(self.root.join("scratch/exec.log")).map(|s| s.lines().count()).unwrap_or(0)
    }
}

#[test]
fn a_task_that_runs_sees_the_lfs_object_not_its_pointer() {
    let w = World::new();
    let (code, r, err) = w.run();
    assert_eq!(code, 0, "report: {r:#}\nstderr: {err}");
    assert_eq!(w.runs_logged(), 1);
    let t = task(&r, "read");
    assert_eq!(t["status"], "Succeeded", "{r:#}");
    assert_eq!(t["results"]["digest"].as_str(), Some(sha256(&w.model).as_str()), "the task read the real model");
    assert_eq!(std::fs::read(w.path("models/model.bin")).unwrap(), w.model, "smudged in the work tree");
    // only what the task reads (tenon.dev/inputs: models/) was fetched
    let other = std::fs::read(w.path("other/big.bin")).unwrap();
    assert!(other.starts_with(b"version https://git-lfs.github.com/spec/v1\n"), "other/big.bin is still a pointer");
    assert_ne!(other, w.other);
}

#[test]
fn an_unavailable_lfs_object_fails_the_taskrun_before_it_starts() {
    let w = World::new();
    // the remote lost its LFS objects: the clone's pointers cannot be made real
    std::fs::remove_dir_all(w.root.join("remote.git/lfs/objects")).unwrap();
    let (code, r, err) = w.run();
    assert_eq!(code, 1, "a failed run\nreport: {r:#}\nstderr: {err}");
    assert_eq!(w.runs_logged(), 0, "the task never ran");
    let t = task(&r, "read");
    assert_eq!(t["status"], "Failed", "{r:#}");
    let text = format!("{t}");
    let oid = sha256(&w.model);
    for want in [
        "GitLFSObjectsMissing",
        "models/model.bin",
        &format!("oid sha256:{oid}"),
        "size 300000",
        "lfs pull --include=models/model.bin",
    ] {
        assert!(text.contains(want), "{want:?} in the task's failure: {t:#}");
    }
    assert!(!text.contains("other/big.bin"), "only the objects the task reads are named: {t:#}");
    let pointer = std::fs::read(w.path("models/model.bin")).unwrap();
    assert!(pointer.starts_with(b"version https://git-lfs.github.com/spec/v1\n"), "left as it was");
}

#[test]
fn without_git_lfs_the_taskrun_fails_before_it_starts_and_says_how_to_fix_it() {
    let w = World::new();
    // a PATH where git is found and git-lfs is not
    let bin = w.root.join("bin-without-lfs");
    std::fs::create_dir_all(&bin).unwrap();
    let git = String::from_utf8(Command::new("sh").args(["-c", "command -v git"]).output().unwrap().stdout).unwrap();
    std::os::unix::fs::symlink(git.trim(), bin.join("git")).unwrap();
    let (code, r, err) = w.run_with(&[("PATH", &bin)]);
    assert_eq!(code, 1, "a failed run\nreport: {r:#}\nstderr: {err}");
    assert_eq!(w.runs_logged(), 0, "the task never ran");
    let t = task(&r, "read");
    let text = format!("{t}");
    for want in
        ["git-lfs is not installed", "install git-lfs", "lfs pull --include=models/model.bin", &sha256(&w.model)]
    {
        assert!(text.contains(want), "{want:?} in the task's failure: {t:#}");
    }
}
