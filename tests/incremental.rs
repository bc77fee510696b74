//! Incremental runs end to end: the real `tenon` binary, real files in temp dirs, the
//! cache enabled, steps on the host (`--sandbox host`: they write the scratch log outside
//! the sandbox's view). Every test has its own repository dir, store
//! dir and scratch dir (siblings in one temp dir: the store is never inside the repo).
//!
//! Expected values are what a correct content-hash cache must do; a failing assertion
//! here is a caching bug in tenon (false hit, missing/misleading reason, crash).
//!
//! About the stat cache: a digest is only trusted when the file's mtime *and ctime* are
//! more than 2 s older than the moment it was recorded (racy-clean rule). `touch -d`
//! can backdate mtime but never ctime, so tests that assert `hashedFiles == 0` wait
//! 2.1 s after writing their files before the run whose records they rely on.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::{task, tenon_command, Run};
use serde_json::Value;
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// One test's world: a repository dir (holding `pipeline.yaml`), a store and a scratch
/// dir for files outside the repository (execution logs, pid files): a
/// [`common::fixture::Fixture`] (`repo`, `store`, `scratch`, `write`) with tenon helpers.
struct World(Fixture);

impl std::ops::Deref for World {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl World {
    /// `yaml` may contain `@SCRATCH@`, replaced by the scratch dir's path.
    fn new(yaml: &str) -> World {
        World(Fixture::with_yaml(yaml))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.repo.join(rel)
    }

    /// `tenon run REPO --output json -q EXTRA...` with the cache on.
    fn run(&self, extra: &[&str]) -> (Run, Value) {
        let d = self.repo.to_str().unwrap().to_string();
        let mut args = vec!["run", d.as_str(), "--output", "json", "-q"];
        args.extend_from_slice(extra);
        let r = self.tenon(&args);
        let v = r.json();
        (r, v)
    }

    /// A run that must exit `code`.
    #[track_caller]
    fn run_ok(&self, extra: &[&str], code: i32) -> Value {
        let (r, v) = self.run(extra);
        assert_eq!(r.code, code, "exit code of tenon run {extra:?}\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        v
    }

    /// `tenon ARGS` against this world's store (cache on), any subcommand. Steps run with
    /// host paths unless ARGS say `--sandbox`: they log to the scratch dir, which the
    /// sandbox does not show them.
    fn tenon(&self, args: &[&str]) -> Run {
        tenon_command(args, &self.store).env("TENON_SANDBOX", "host").output().expect("tenon runs").into()
    }

    fn plan(&self, extra: &[&str]) -> Value {
        let d = self.repo.to_str().unwrap().to_string();
        let mut args = vec!["plan", d.as_str(), "--output", "json"];
        args.extend_from_slice(extra);
        let r = self.tenon(&args);
        assert_eq!(r.code, 0, "tenon plan exit code\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        r.json()
    }

    fn cache_ls(&self) -> Value {
        let r = self.tenon(&["cache", "ls", "--output", "json"]);
        assert_eq!(r.code, 0, "cache ls: {}", r.stderr);
        r.json()
    }

    /// Lines of a scratch file, then empty it (execution logs).
    fn take_log(&self, name: &str) -> Vec<String> {
        let p = self.scratch.join(name);
        let s = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        let mut v: Vec<String> = s.lines().map(String::from).collect();
        v.sort();
        v
    }
}

fn sha_hex(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

/// The reason tenon must give for a changed input file.
fn changed(path: &str, old: &[u8], new: &[u8]) -> String {
    format!("input {path} changed (sha256 {}..->{}..)", &sha_hex(old)[..8], &sha_hex(new)[..8])
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    task(report, name)["status"].as_str().unwrap_or("")
}

fn reasons(report: &Value, name: &str) -> Vec<String> {
    task(report, name)["cacheReasons"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn result<'a>(report: &'a Value, name: &str, r: &str) -> &'a str {
    task(report, name)["results"][r].as_str().unwrap_or_else(|| panic!("no result {r} of {name}: {report:#}"))
}

/// The 8-hex uid prefix of the first run (last component of its runDir).
fn uid8(report: &Value) -> String {
    let d = run_dir(report);
    d.file_name().unwrap().to_string_lossy().to_string()
}

fn run_dir(report: &Value) -> PathBuf {
    PathBuf::from(report["runs"][0]["runDir"].as_str().unwrap_or_else(|| panic!("no runDir: {report:#}")))
}

fn hashing(report: &Value, field: &str) -> u64 {
    report["hashing"][field].as_u64().unwrap_or_else(|| panic!("no hashing.{field}: {report:#}"))
}

/// Assert every listed task's status (and that the report has no other tasks).
#[track_caller]
fn assert_statuses(report: &Value, step: &str, want: &[(&str, &str)]) {
    let got: Vec<(String, String)> = report["runs"][0]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{step}: no tasks in {report:#}"))
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or("").to_string(), t["status"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want_sorted: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted, "{step}: task statuses\nreport: {report:#}");
}

#[track_caller]
fn assert_reasons(report: &Value, name: &str, step: &str, want: &[&str]) {
    assert_eq!(reasons(report, name), want, "{step}: cacheReasons of {name}\nreport: {report:#}");
}

/// `name`'s reasons include `want` (other reasons are checked by dedicated tests).
#[track_caller]
fn assert_reason_listed(report: &Value, name: &str, step: &str, want: &str) {
    let got = reasons(report, name);
    assert!(got.iter().any(|r| r == want), "{step}: {name} reasons {got:?} lack {want:?}\nreport: {report:#}");
}

/// A Cached task: has a key, a `cachedFrom` of `run` and the matching reason.
#[track_caller]
fn assert_cached_from(report: &Value, name: &str, step: &str, from_uid8: &str) {
    let t = task(report, name);
    assert_eq!(t["status"], "Cached", "{step}: {name} status\nreport: {report:#}");
    let uid = t["cachedFrom"]["runUid"].as_str().unwrap_or_else(|| panic!("{step}: {name} has no cachedFrom: {t:#}"));
    assert!(uid.starts_with(from_uid8), "{step}: {name} cached from {uid}, want run {from_uid8}\nreport: {report:#}");
    assert_eq!(t["cachedFrom"]["run"], report["runs"][0]["name"], "{step}: {name} cachedFrom.run");
    assert!(t["cacheKey"].as_str().is_some_and(|k| k.len() == 64), "{step}: {name} cacheKey: {t:#}");
    assert_eq!(reasons(report, name).len(), 1, "{step}: {name} reasons: {t:#}");
    assert!(
        reasons(report, name)[0].starts_with("cached: produced by "),
        "{step}: {name} reason: {:?}",
        reasons(report, name)
    );
}

/// Set a path's mtime (seconds + nanoseconds) without following symlinks.
fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ },
        libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ },
    ];
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Backdate every file of `dir` to 2020-01-01 (mtime only: ctime cannot be backdated).
fn backdate_all(dir: &Path) {
    let st = Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "-h", "-d", "2020-01-01 00:00:00", "{}", "+"])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Wait out the 2 s racy window so digests recorded by the next run are trusted.
fn settle() {
    std::thread::sleep(Duration::from_millis(2100));
}

/// A tenon process whose stdout/stderr go to files.
struct Spawned {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
}

fn spawn_run(w: &World, tag: &str, extra: &[&str]) -> Spawned {
    let out = w.scratch.join(format!("{tag}.stdout"));
    let err = w.scratch.join(format!("{tag}.stderr"));
    let mut args =
        vec!["run".to_string(), w.repo.to_str().unwrap().into(), "--output".into(), "json".into(), "-q".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(common::bin())
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &w.store)
        .env("TENON_STORE", &w.store)
        .env("NO_COLOR", "1")
        .env("TENON_SANDBOX", "host")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn tenon");
    Spawned { child, out, err }
}

impl Spawned {
    fn wait(mut self, deadline: Duration) -> Run {
        let t = Instant::now();
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "tenon did not exit within {deadline:?}: {}",
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: st.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }
}

/// Host pids of every live descendant of `pid` (from /proc): the processes a tenon
/// started, so they can be killed by id after tenon itself is killed.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // fields after the parenthesised comm: state ppid ...
        let Some(pp) = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok()) else {
            continue;
        };
        parent.push((p, pp));
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(x) = frontier.pop() {
        for (c, _) in parent.iter().filter(|(_, pp)| *pp == x) {
            if !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// Lines tenon prints when the cache/store misbehaves.
#[track_caller]
fn assert_no_store_trouble(r: &Run, step: &str) {
    for bad in ["not cached:", "cache lookup failed", "could not", "cannot open", "store database error", "panicked"] {
        assert!(!r.stderr.contains(bad), "{step}: stderr mentions {bad:?}:\n{}", r.stderr);
    }
}

// ------------------------------------------------------------------------------------------
// 1. the diamond edit sequence
// ------------------------------------------------------------------------------------------

const DIAMOND: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: t-a
  annotations:
    tenon.dev/inputs: "a/"
spec:
  params:
    - name: log
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo a >> "$(params.log)"
        cat "$(workspaces.source.path)/a/in.txt" "$(workspaces.source.path)/a/big.bin" | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: t-b
  annotations:
    tenon.dev/inputs: "b/"
spec:
  params:
    - name: log
    - name: up
    - name: lr
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo b >> "$(params.log)"
        { cat "$(workspaces.source.path)/b/in.txt"; echo "$(params.up)"; echo "$(params.lr)"; } | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: t-c
  annotations:
    tenon.dev/inputs: "c/in.txt"
spec:
  params:
    - name: log
    - name: up
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo c >> "$(params.log)"
        f="$(workspaces.source.path)/c/in.txt"
        if grep -q FAIL "$f"; then echo "c: bad input" >&2; exit 3; fi
        n=`wc -l < "$f" | tr -d ' '`
        printf '%s:%s' "$(params.up)" "$n" > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: t-d
spec:
  params:
    - name: log
    - name: left
    - name: right
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo d >> "$(params.log)"
        { cat "$(workspaces.source.path)/d/in.txt"; echo "$(params.left)"; echo "$(params.right)"; } | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: diamond
  annotations:
    # t-d declares no inputs of its own: the per pipeline task override narrows them
    tenon.dev/inputs.d: "d/"
spec:
  params:
    - name: lr
      default: "0.1"
    - name: log
  workspaces:
    - name: source
  results:
    - name: out
      value: $(tasks.d.results.r)
  tasks:
    - name: a
      taskRef:
        name: t-a
      params:
        - name: log
          value: $(params.log)
      workspaces:
        - name: source
          workspace: source
    - name: b
      taskRef:
        name: t-b
      params:
        - name: log
          value: $(params.log)
        - name: up
          value: $(tasks.a.results.r)
        - name: lr
          value: $(params.lr)
      workspaces:
        - name: source
          workspace: source
    - name: c
      taskRef:
        name: t-c
      params:
        - name: log
          value: $(params.log)
        - name: up
          value: $(tasks.a.results.r)
      workspaces:
        - name: source
          workspace: source
    - name: d
      taskRef:
        name: t-d
      params:
        - name: log
          value: $(params.log)
        - name: left
          value: $(tasks.b.results.r)
        - name: right
          value: $(tasks.c.results.r)
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: diamond-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: diamond
  params:
    - name: log
      value: "@SCRATCH@/exec.log"
  workspaces:
    - name: source
      emptyDir: {}
"##;

const BIG: usize = 20 * 1024 * 1024;

#[test]
fn diamond_edit_sequence() {
    let w = World::new(DIAMOND);
    let c_orig: &[u8] = b"c1\nc2\nc3\n";
    w.write("a/in.txt", "alpha\n");
    w.write("a/big.bin", (0..BIG).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    w.write("b/in.txt", "bravo\n");
    w.write("c/in.txt", c_orig);
    w.write("d/in.txt", "delta\n");
    w.write("other/notes.txt", "not an input of anything\n");
    backdate_all(&w.repo);
    settle();

    // 1. first run: everything runs
    let r1 = w.run_ok(&[], 0);
    assert_statuses(
        &r1,
        "first run",
        &[("a", "Succeeded"), ("b", "Succeeded"), ("c", "Succeeded"), ("d", "Succeeded")],
    );
    for t in ["a", "b", "c", "d"] {
        assert_reasons(&r1, t, "first run", &["no earlier record"]);
        assert!(task(&r1, t)["cacheKey"].as_str().is_some_and(|k| k.len() == 64), "first run: {t} has no cacheKey");
    }
    assert_eq!(w.take_log("exec.log"), ["a", "b", "c", "d"]);
    assert_eq!(hashing(&r1, "files"), 5, "first run: input files seen\n{r1:#}");
    assert_eq!(hashing(&r1, "hashedFiles"), 5, "first run: every input file hashed\n{r1:#}");
    let run1 = uid8(&r1);
    let c_res1 = result(&r1, "c", "r").to_string();
    let out1 = r1["runs"][0]["results"]["out"].clone();

    // 2. no change: all Cached, nothing re-hashed (every stat record is trusted)
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "no change", &[("a", "Cached"), ("b", "Cached"), ("c", "Cached"), ("d", "Cached")]);
    for t in ["a", "b", "c", "d"] {
        assert_cached_from(&r, t, "no change", &run1);
        assert_eq!(task(&r, t)["cacheKey"], task(&r1, t)["cacheKey"], "no change: {t} key is stable");
        assert_eq!(task(&r, t)["results"], task(&r1, t)["results"], "no change: {t} results restored");
    }
    assert_eq!(r["runs"][0]["results"]["out"], out1, "no change: pipeline result");
    assert!(w.take_log("exec.log").is_empty(), "no change: nothing may execute");
    assert_eq!(hashing(&r, "files"), 5, "no change\n{r:#}");
    assert_eq!(hashing(&r, "hashedFiles"), 0, "no change: backdated files must come from the stat cache\n{r:#}");
    assert_eq!(hashing(&r, "hashedBytes"), 0, "no change\n{r:#}");

    // 3. mtime-only touch of the 20 MB input: re-hashed exactly once, all Cached
    let st = Command::new("touch").arg(w.path("a/big.bin")).status().unwrap();
    assert!(st.success());
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "touch big", &[("a", "Cached"), ("b", "Cached"), ("c", "Cached"), ("d", "Cached")]);
    assert!(w.take_log("exec.log").is_empty(), "touch big: nothing may execute");
    assert_eq!(hashing(&r, "hashedFiles"), 1, "touch big: only the touched file is re-hashed\n{r:#}");
    assert!(hashing(&r, "hashedBytes") >= BIG as u64, "touch big: hashedBytes\n{r:#}");
    assert_eq!(hashing(&r, "hashedBytes"), BIG as u64, "touch big: hashed once\n{r:#}");

    // 4. change one input of c (its line count changes): c and d run
    let c_v2: &[u8] = b"c1\nc2\nc3\nc4\n";
    w.write("c/in.txt", c_v2);
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "edit c", &[("a", "Cached"), ("b", "Cached"), ("c", "Succeeded"), ("d", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["c", "d"]);
    assert_reasons(&r, "c", "edit c", &[&changed("c/in.txt", c_orig, c_v2)]);
    let c_res2 = result(&r, "c", "r").to_string();
    assert_ne!(c_res1, c_res2);
    // (that this is d's only reason: see reasons_for_a_dependant_name_the_upstream_result_once)
    assert_reason_listed(
        &r,
        "d",
        "edit c",
        &format!("upstream result tasks.c.results.r changed ({c_res1} -> {c_res2})"),
    );
    assert_cached_from(&r, "a", "edit c", &run1);
    assert_cached_from(&r, "b", "edit c", &run1);
    let run4 = uid8(&r);

    // 5. c reruns but its result is identical (same line count): early cutoff, d Cached
    let c_v3: &[u8] = b"c1\nc2\nc3\nc5\n";
    w.write("c/in.txt", c_v3);
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "early cutoff", &[("a", "Cached"), ("b", "Cached"), ("c", "Succeeded"), ("d", "Cached")]);
    assert_eq!(w.take_log("exec.log"), ["c"]);
    assert_reasons(&r, "c", "early cutoff", &[&changed("c/in.txt", c_v2, c_v3)]);
    assert_eq!(result(&r, "c", "r"), c_res2, "early cutoff: c's result is unchanged");
    assert_cached_from(&r, "d", "early cutoff", &run4);

    // 6. change a file outside every task's inputs: nothing runs
    w.write("other/notes.txt", "edited, still not an input\n");
    let yaml = std::fs::read_to_string(w.path("pipeline.yaml")).unwrap();
    w.write("pipeline.yaml", yaml.clone() + "\n# a comment\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "edit outside", &[("a", "Cached"), ("b", "Cached"), ("c", "Cached"), ("d", "Cached")]);
    assert!(w.take_log("exec.log").is_empty(), "edit outside: nothing may execute");

    // 7. revert every change: all Cached from the first run (history, not only the last state)
    w.write("c/in.txt", c_orig);
    w.write("other/notes.txt", "not an input of anything\n");
    w.write("pipeline.yaml", &yaml);
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "revert", &[("a", "Cached"), ("b", "Cached"), ("c", "Cached"), ("d", "Cached")]);
    assert!(w.take_log("exec.log").is_empty(), "revert: nothing may execute");
    for t in ["a", "b", "c", "d"] {
        assert_cached_from(&r, t, "revert", &run1);
    }
    assert_eq!(r["runs"][0]["results"]["out"], out1, "revert: pipeline result as in the first run");

    // 8. a param only b uses: b runs (and d, whose upstream result changed); a and c Cached
    let r = w.run_ok(&["--param", "lr=0.2"], 0);
    assert_statuses(&r, "param", &[("a", "Cached"), ("b", "Succeeded"), ("c", "Cached"), ("d", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["b", "d"]);
    assert_reasons(&r, "b", "param", &["param lr changed 0.1 -> 0.2"]);
    let (b1, b2) = (result(&r1, "b", "r"), result(&r, "b", "r"));
    assert_reason_listed(&r, "d", "param", &format!("upstream result tasks.b.results.r changed ({b1} -> {b2})"));

    // 9. a failing task is not cached; its dependant is skipped
    let bad: &[u8] = b"FAIL\n";
    w.write("c/in.txt", bad);
    let r = w.run_ok(&[], 1);
    assert_statuses(&r, "failure", &[("a", "Cached"), ("b", "Cached"), ("c", "Failed"), ("d", "Skipped")]);
    assert_eq!(w.take_log("exec.log"), ["c"]);
    assert_reasons(&r, "c", "failure", &[&changed("c/in.txt", c_v3, bad)]);
    // same inputs again: the failure was not recorded, so c runs (and fails) again
    let r = w.run_ok(&[], 1);
    assert_statuses(&r, "failure again", &[("a", "Cached"), ("b", "Cached"), ("c", "Failed"), ("d", "Skipped")]);
    assert_eq!(w.take_log("exec.log"), ["c"], "failure again: a failure must never be a cache hit");
    assert!(task(&r, "c")["cachedFrom"].is_null());

    // 10. fix it (new content, 7 lines): c reruns and d runs
    let fixed: &[u8] = b"n1\nn2\nn3\nn4\nn5\nn6\nn7\n";
    w.write("c/in.txt", fixed);
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "fixed", &[("a", "Cached"), ("b", "Cached"), ("c", "Succeeded"), ("d", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["c", "d"]);
    assert!(result(&r, "c", "r").ends_with(":7"), "fixed: c result {}", result(&r, "c", "r"));
}

// ------------------------------------------------------------------------------------------
// 2. false-hit traps
// ------------------------------------------------------------------------------------------

const TRAPS: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: lister
  annotations:
    tenon.dev/inputs: "in/"
spec:
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo run >> "@SCRATCH@/exec.log"
        cd "$(workspaces.source.path)/in"
        ls -lR . | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: traps
spec:
  workspaces:
    - name: source
  tasks:
    - name: t
      taskRef:
        name: lister
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: traps-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: traps
  workspaces:
    - name: source
      emptyDir: {}
"##;

#[test]
fn false_hit_traps_rerun_the_task() {
    let w = World::new(TRAPS);
    w.write("in/data.txt", "hello\n");
    w.write("in/script.sh", "echo hi\n");
    w.write("in/other.txt", "other\n");
    w.write("in/thing", "a file for now\n");
    std::os::unix::fs::symlink("data.txt", w.path("in/link")).unwrap();

    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "first", &[("t", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["run"]);

    // a baseline check before each trap: unchanged -> Cached, nothing executes
    let baseline = |step: &str| {
        let r = w.run_ok(&[], 0);
        assert_statuses(&r, &format!("{step}: baseline"), &[("t", "Cached")]);
        assert!(w.take_log("exec.log").is_empty(), "{step}: baseline executed the task");
    };
    #[track_caller]
    fn reruns(w: &World, step: &str, want: &[&str]) {
        let r = w.run_ok(&[], 0);
        assert_statuses(&r, step, &[("t", "Succeeded")]);
        assert_eq!(w.take_log("exec.log"), ["run"], "{step}: the task must execute");
        assert_reasons(&r, "t", step, want);
    }

    // (a) same size, same mtime, new content written within the same second as the
    // recorded version (the record is racy)
    baseline("same-second rewrite");
    let p = w.path("in/data.txt");
    let m = std::fs::metadata(&p).unwrap();
    let (secs, nsec, size, ino) = (m.mtime(), m.mtime_nsec(), m.len(), m.ino());
    std::fs::write(&p, "jello\n").unwrap();
    let st = Command::new("touch").arg("-d").arg(format!("@{secs}.{nsec:09}")).arg(&p).status().unwrap();
    assert!(st.success());
    let m2 = std::fs::metadata(&p).unwrap();
    assert_eq!((m2.mtime(), m2.mtime_nsec(), m2.len(), m2.ino()), (secs, nsec, size, ino), "trap setup");
    reruns(&w, "same-second rewrite", &[&changed("in/data.txt", b"hello\n", b"jello\n")]);

    // (a') the same trap against a record old enough to be trusted: only ctime differs
    settle();
    baseline("trusted rewrite"); // re-hashes the racy record; now trusted
    let m = std::fs::metadata(&p).unwrap();
    let (secs, nsec) = (m.mtime(), m.mtime_nsec());
    std::fs::write(&p, "jelly\n").unwrap();
    set_mtime(&p, secs, nsec);
    let m2 = std::fs::metadata(&p).unwrap();
    assert_eq!((m2.mtime(), m2.mtime_nsec(), m2.len()), (secs, nsec, 6), "trap setup");
    reruns(&w, "trusted rewrite", &[&changed("in/data.txt", b"jello\n", b"jelly\n")]);

    // (b) rename within the inputs
    baseline("rename");
    std::fs::rename(w.path("in/other.txt"), w.path("in/renamed.txt")).unwrap();
    reruns(&w, "rename", &["input in/renamed.txt added", "input in/other.txt removed"]);

    // (c) chmod +x
    baseline("chmod");
    std::fs::set_permissions(w.path("in/script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    reruns(&w, "chmod", &["input in/script.sh became executable"]);

    // (d) symlink retarget (same length target, so only the target text differs)
    baseline("symlink");
    std::fs::remove_file(w.path("in/link")).unwrap();
    std::os::unix::fs::symlink("data.tx_", w.path("in/link")).unwrap();
    reruns(&w, "symlink", &["input in/link (symlink) retargeted"]);

    // (e) a file replaced by a directory of the same name
    baseline("file -> dir");
    std::fs::remove_file(w.path("in/thing")).unwrap();
    w.write("in/thing/inner.txt", "a file for now\n");
    reruns(&w, "file -> dir", &["input in/thing changed from file to dir", "input in/thing/inner.txt added"]);
    baseline("after all traps");
}

/// The file -> directory trap with a mixed-case name: the reason must name the path as
/// it is (paths are case-sensitive).
#[test]
fn file_replaced_by_directory_reason_names_the_real_path() {
    let w = World::new(TRAPS);
    w.write("in/Model.bin", "weights\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "first", &[("t", "Succeeded")]);
    std::fs::remove_file(w.path("in/Model.bin")).unwrap();
    w.write("in/Model.bin/part-0", "weights\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "file -> dir", &[("t", "Succeeded")]);
    assert_reasons(
        &r,
        "t",
        "file -> dir",
        &["input in/Model.bin changed from file to dir", "input in/Model.bin/part-0 added"],
    );
}

// ------------------------------------------------------------------------------------------
// 3. declared outputs on a shared workspace
// ------------------------------------------------------------------------------------------

const OUTPUTS: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: trainer
  annotations:
    tenon.dev/inputs: "train/"
    tenon.dev/outputs: "work:model/"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo train >> "@SCRATCH@/exec.log"
        mkdir -p "$(workspaces.work.path)/model/sub"
        { printf 'weights:'; cat "$(workspaces.source.path)/train/in.txt"; } > "$(workspaces.work.path)/model/weights.bin"
        echo '{"v":1}' > "$(workspaces.work.path)/model/sub/meta.json"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: reader
  annotations:
    tenon.dev/inputs: "down/"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
      readOnly: true
  results:
    - name: weights
    - name: meta
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo down >> "@SCRATCH@/exec.log"
        cat "$(workspaces.work.path)/model/weights.bin" > "$(results.weights.path)"
        cat "$(workspaces.work.path)/model/sub/meta.json" | tr -d '\n' > "$(results.meta.path)"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: scribbler
  annotations:
    tenon.dev/inputs: "train/"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo scratch >> "@SCRATCH@/exec.log"
        echo scribble > "$(workspaces.work.path)/scratch.txt"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: outputs
spec:
  workspaces:
    - name: source
    - name: work
  tasks:
    - name: train
      taskRef:
        name: trainer
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
    - name: down
      runAfter: [train]
      taskRef:
        name: reader
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
    - name: scratch
      taskRef:
        name: scribbler
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: outputs-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: outputs
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 16Mi
"##;

#[test]
fn declared_outputs_are_restored_and_undeclared_writes_are_not_cacheable() {
    let w = World::new(OUTPUTS);
    w.write("train/in.txt", "v1");
    w.write("down/note.txt", "reader config");

    let r1 = w.run_ok(&[], 0);
    assert_statuses(&r1, "first", &[("train", "Succeeded"), ("down", "Succeeded"), ("scratch", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["down", "scratch", "train"]);
    assert_eq!(result(&r1, "down", "weights"), "weights:v1");
    let nc = reasons(&r1, "scratch");
    assert!(
        nc.len() == 1 && nc[0].starts_with("not cacheable") && nc[0].contains("\"work\""),
        "scratch must be reported not cacheable: {nc:?}"
    );
    assert!(task(&r1, "scratch")["cacheKey"].is_null(), "an uncacheable task has no cacheKey");

    // second run: train Cached (its output restored into the new run's volume); down
    // forced, reads the restored file; scratch always runs
    let r2 = w.run_ok(&["--rerun", "down"], 0);
    assert_statuses(&r2, "second", &[("train", "Cached"), ("down", "Succeeded"), ("scratch", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["down", "scratch"]);
    assert_cached_from(&r2, "train", "second", &uid8(&r1));
    assert_reasons(&r2, "down", "second", &["forced: --rerun down"]);
    assert_eq!(result(&r2, "down", "weights"), "weights:v1", "down must see the restored output");
    assert_eq!(result(&r2, "down", "meta"), "{\"v\":1}", "nested output files are restored");
    let vol = run_dir(&r2).join("volumes/work");
    assert_eq!(std::fs::read_to_string(vol.join("model/weights.bin")).unwrap(), "weights:v1");
    let nc = reasons(&r2, "scratch");
    assert!(nc.len() == 1 && nc[0].starts_with("not cacheable"), "second: scratch reasons {nc:?}");

    // third run: nothing changed, down is Cached too (scratch still runs)
    let r3 = w.run_ok(&[], 0);
    assert_statuses(&r3, "third", &[("train", "Cached"), ("down", "Cached"), ("scratch", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["scratch"]);
    let vol = run_dir(&r3).join("volumes/work");
    assert_eq!(std::fs::read_to_string(vol.join("model/weights.bin")).unwrap(), "weights:v1");

    // train's input changes: train runs, and down (which reads train's output) runs too
    w.write("train/in.txt", "v2");
    let r4 = w.run_ok(&[], 0);
    assert_statuses(&r4, "edit", &[("train", "Succeeded"), ("down", "Succeeded"), ("scratch", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["down", "scratch", "train"]);
    assert_eq!(result(&r4, "down", "weights"), "weights:v2");
    let dr = reasons(&r4, "down");
    assert!(
        dr.len() == 1 && dr[0].starts_with("upstream output train work:model/ changed (sha256 "),
        "edit: down's reason must name train's changed output: {dr:?}"
    );
}

// ------------------------------------------------------------------------------------------
// 4. tenon plan
// ------------------------------------------------------------------------------------------

const PLAN: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: hasher
spec:
  params:
    - name: dir
    - name: extra
      default: ""
    - name: p
      default: ""
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        { cat "$(workspaces.source.path)/$(params.dir)"/*; echo "$(params.extra)"; echo "$(params.p)"; } | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: planned
  annotations:
    tenon.dev/inputs.a: "a/"
    tenon.dev/inputs.b: "b/"
    tenon.dev/inputs.c: "c/"
    tenon.dev/inputs.e: "e/"
spec:
  params:
    - name: p
      default: old
  workspaces:
    - name: source
  tasks:
    - name: a
      taskRef:
        name: hasher
      params:
        - name: dir
          value: a
      workspaces:
        - name: source
          workspace: source
    - name: b
      taskRef:
        name: hasher
      params:
        - name: dir
          value: b
        - name: extra
          value: $(tasks.a.results.r)
      workspaces:
        - name: source
          workspace: source
    - name: c
      taskRef:
        name: hasher
      params:
        - name: dir
          value: c
        - name: p
          value: $(params.p)
      workspaces:
        - name: source
          workspace: source
    - name: e
      taskRef:
        name: hasher
      params:
        - name: dir
          value: e
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: plan-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: planned
  workspaces:
    - name: source
      emptyDir: {}
"##;

fn plan_task<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["runs"][0]["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task {name} in plan {plan:#}"))
}

fn plan_reasons(plan: &Value, name: &str) -> Vec<String> {
    plan_task(plan, name)["reasons"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn plan_explains_and_runs_nothing() {
    let w = World::new(PLAN);
    for d in ["a", "b", "c", "e"] {
        w.write(&format!("{d}/in.txt"), format!("{d} v1\n"));
    }
    let r1 = w.run_ok(&[], 0);
    assert_statuses(&r1, "first", &[("a", "Succeeded"), ("b", "Succeeded"), ("c", "Succeeded"), ("e", "Succeeded")]);

    // a plan with nothing changed: all cached
    let p0 = w.plan(&[]);
    assert_eq!(p0["kind"], "Plan");
    for t in ["a", "b", "c", "e"] {
        assert_eq!(plan_task(&p0, t)["decision"], "cached", "unchanged plan: {t}\n{p0:#}");
        assert_eq!(plan_task(&p0, t)["cacheKey"], task(&r1, t)["cacheKey"], "plan key == run key for {t}");
    }

    w.write("a/in.txt", "a v2\n");
    let ls_before = w.cache_ls();
    let runs_before = list_dir(&w.store.join("runs/plan-run"));
    let p = w.plan(&["--param", "p=new"]);
    let ls_after = w.cache_ls();
    let runs_after = list_dir(&w.store.join("runs/plan-run"));

    assert_eq!(plan_task(&p, "a")["decision"], "run", "{p:#}");
    assert_eq!(plan_reasons(&p, "a"), [changed("a/in.txt", b"a v1\n", b"a v2\n")], "{p:#}");
    assert!(plan_reasons(&p, "a")[0].starts_with("input a/in.txt changed (sha256 "));
    assert!(plan_task(&p, "a")["cacheKey"].as_str().is_some_and(|k| k.len() == 64));
    assert_eq!(plan_task(&p, "b")["decision"], "run", "{p:#}");
    assert_eq!(plan_reasons(&p, "b"), ["run (after a)"], "{p:#}");
    assert_eq!(plan_task(&p, "c")["decision"], "run", "{p:#}");
    assert_eq!(plan_reasons(&p, "c"), ["param p changed old -> new"], "{p:#}");
    assert_eq!(plan_task(&p, "e")["decision"], "cached", "{p:#}");
    assert!(plan_task(&p, "e")["cachedFrom"]["runUid"].as_str().is_some_and(|u| u.starts_with(&uid8(&r1))));
    assert!(p["hashing"]["files"].as_u64().is_some(), "plan reports hashing: {p:#}");

    // planning ran nothing and recorded nothing
    assert_eq!(ls_before, ls_after, "plan changed the cache records");
    assert_eq!(runs_before, runs_after, "plan created a run directory");
    let leftovers: Vec<String> =
        list_dir(&w.store.join("tmp")).into_iter().filter(|n| n.starts_with("plan-")).collect();
    assert!(leftovers.is_empty(), "plan left scratch dirs: {leftovers:?}");

    // the run then does what the plan said, for the same reasons
    let r = w.run_ok(&["--param", "p=new"], 0);
    assert_statuses(&r, "after plan", &[("a", "Succeeded"), ("b", "Succeeded"), ("c", "Succeeded"), ("e", "Cached")]);
    assert_eq!(reasons(&r, "a"), plan_reasons(&p, "a"));
    assert_eq!(reasons(&r, "c"), plan_reasons(&p, "c"));
    assert_eq!(task(&r, "a")["cacheKey"], plan_task(&p, "a")["cacheKey"], "plan key == run key");
}

// ------------------------------------------------------------------------------------------
// 5. --no-cache and --rerun
// ------------------------------------------------------------------------------------------

const FORCE: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: counted
  annotations:
    tenon.dev/inputs: "src/"
spec:
  params:
    - name: name
    - name: up
      default: ""
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo "$(params.name)" >> "@SCRATCH@/exec.log"
        { cat "$(workspaces.source.path)/src/in.txt"; echo "$(params.up)"; } | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: forced
spec:
  workspaces:
    - name: source
  tasks:
    - name: a
      taskRef:
        name: counted
      params:
        - name: name
          value: a
      workspaces:
        - name: source
          workspace: source
    - name: b
      taskRef:
        name: counted
      params:
        - name: name
          value: b
        - name: up
          value: $(tasks.a.results.r)
      workspaces:
        - name: source
          workspace: source
    - name: c
      taskRef:
        name: counted
      params:
        - name: name
          value: c
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: forced-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: forced
  workspaces:
    - name: source
      emptyDir: {}
"##;

#[test]
fn no_cache_and_rerun_force_execution() {
    let w = World::new(FORCE);
    w.write("src/in.txt", "source\n");
    fn all(s: &str) -> Vec<(&str, &str)> {
        vec![("a", s), ("b", s), ("c", s)]
    }

    let r1 = w.run_ok(&[], 0);
    assert_statuses(&r1, "first", &all("Succeeded"));
    assert_eq!(w.take_log("exec.log"), ["a", "b", "c"]);

    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "cached", &all("Cached"));
    assert!(w.take_log("exec.log").is_empty());

    // --no-cache: everything runs, with the reason, and still has its key
    let r = w.run_ok(&["--no-cache"], 0);
    assert_statuses(&r, "--no-cache", &all("Succeeded"));
    assert_eq!(w.take_log("exec.log"), ["a", "b", "c"]);
    for t in ["a", "b", "c"] {
        assert_reasons(&r, t, "--no-cache", &["forced: --no-cache"]);
        assert_eq!(task(&r, t)["cacheKey"], task(&r1, t)["cacheKey"], "--no-cache: {t} key");
    }

    // TENON_NO_CACHE=true in the environment does the same
    let d = w.repo.to_str().unwrap().to_string();
    let env_run = common::tenon(&["run", &d, "--output", "json", "-q", "--sandbox", "host"], &w.store);
    assert_eq!(env_run.code, 0, "{}", env_run.stderr);
    let r = env_run.json();
    assert_statuses(&r, "TENON_NO_CACHE", &all("Succeeded"));
    assert_eq!(w.take_log("exec.log"), ["a", "b", "c"]);
    for t in ["a", "b", "c"] {
        assert_reasons(&r, t, "TENON_NO_CACHE", &["forced: --no-cache"]);
    }

    // --rerun a: a runs; b consumes a's (identical) result, so it stays Cached
    let r = w.run_ok(&["--rerun", "a"], 0);
    assert_statuses(&r, "--rerun a", &[("a", "Succeeded"), ("b", "Cached"), ("c", "Cached")]);
    assert_eq!(w.take_log("exec.log"), ["a"]);
    assert_reasons(&r, "a", "--rerun a", &["forced: --rerun a"]);

    // --rerun b: only b
    let r = w.run_ok(&["--rerun", "b"], 0);
    assert_statuses(&r, "--rerun b", &[("a", "Cached"), ("b", "Succeeded"), ("c", "Cached")]);
    assert_eq!(w.take_log("exec.log"), ["b"]);
    assert_reasons(&r, "b", "--rerun b", &["forced: --rerun b"]);

    // repeatable
    let r = w.run_ok(&["--rerun", "b", "--rerun", "c"], 0);
    assert_statuses(&r, "--rerun b c", &[("a", "Cached"), ("b", "Succeeded"), ("c", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["b", "c"]);

    // forced runs are recorded: the next plain run is all Cached
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "after forcing", &all("Cached"));
    assert!(w.take_log("exec.log").is_empty());
}

// ------------------------------------------------------------------------------------------
// 6. crash safety
// ------------------------------------------------------------------------------------------

const SLOW: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: slow
  annotations:
    tenon.dev/inputs: "src/"
spec:
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        echo start >> "@SCRATCH@/exec.log"
        sleep @SLEEP@
        cat "$(workspaces.source.path)/src/in.txt" | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
        echo done >> "@SCRATCH@/exec.log"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: slow
spec:
  workspaces:
    - name: source
  tasks:
    - name: t
      taskRef:
        name: slow
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: slow-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: slow
  workspaces:
    - name: source
      emptyDir: {}
"##;

#[test]
fn kill_9_mid_task_leaves_no_false_hit() {
    let w = World::new(&SLOW.replace("@SLEEP@", "2"));
    w.write("src/in.txt", "data\n");
    let log = w.scratch.join("exec.log");

    let mut sp = spawn_run(&w, "killed", &[]);
    let t = Instant::now();
    while !log.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.exists(), "the step never started: {}", std::fs::read_to_string(&sp.err).unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    assert!(sp.child.try_wait().unwrap().is_none(), "tenon ended before it could be killed");
    // SIGKILL tenon itself, then whatever it had started (by pid)
    let leftovers = descendants(sp.child.id());
    let st = Command::new("kill").args(["-9", &sp.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let _ = sp.child.wait();
    for p in leftovers {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).stderr(Stdio::null()).status();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(w.take_log("exec.log"), ["start"], "the killed run must not have finished its task");

    // the store reopens cleanly; nothing was recorded for the killed attempt
    let ls = w.cache_ls();
    assert_eq!(ls["records"].as_array().map(|a| a.len()), Some(0), "killed run left a record: {ls:#}");

    let (run2, r2) = w.run(&[]);
    assert_eq!(run2.code, 0, "after the crash: {}", run2.stderr);
    assert_no_store_trouble(&run2, "after the crash");
    assert_statuses(&r2, "after the crash", &[("t", "Succeeded")]);
    assert_reasons(&r2, "t", "after the crash", &["no earlier record"]);
    assert_eq!(w.take_log("exec.log"), ["done", "start"]);

    let (run3, r3) = w.run(&[]);
    assert_eq!(run3.code, 0, "third run: {}", run3.stderr);
    assert_no_store_trouble(&run3, "third run");
    assert_statuses(&r3, "third run", &[("t", "Cached")]);
    assert_cached_from(&r3, "t", "third run", &uid8(&r2));
    assert!(w.take_log("exec.log").is_empty());
    let v = w.tenon(&["cache", "verify"]);
    assert_eq!(v.code, 0, "verify after the crash: {}{}", v.stdout, v.stderr);
}

// ------------------------------------------------------------------------------------------
// 7. two processes on one store
// ------------------------------------------------------------------------------------------

const COUNTED: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: once
  annotations:
    tenon.dev/inputs: "src/"
spec:
  params:
    - name: counter
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        sleep 1
        echo ran >> "$(params.counter)"
        cat "$(workspaces.source.path)/src/in.txt" | sha256sum | cut -c1-16 | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: once
spec:
  params:
    - name: counter
  workspaces:
    - name: source
  tasks:
    - name: t
      taskRef:
        name: once
      params:
        - name: counter
          value: $(params.counter)
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: once-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: once
  params:
    - name: counter
      value: "@SCRATCH@/counter"
  workspaces:
    - name: source
      emptyDir: {}
"##;

#[test]
fn two_processes_on_one_store_run_a_task_once() {
    let w = World::new(COUNTED);
    w.write("src/in.txt", "data\n");
    let p1 = spawn_run(&w, "p1", &[]);
    let p2 = spawn_run(&w, "p2", &[]);
    let (a, b) = (p1.wait(Duration::from_secs(60)), p2.wait(Duration::from_secs(60)));
    assert_eq!(a.code, 0, "process 1: {}", a.stderr);
    assert_eq!(b.code, 0, "process 2: {}", b.stderr);
    assert_no_store_trouble(&a, "process 1");
    assert_no_store_trouble(&b, "process 2");
    let (ra, rb) = (a.json(), b.json());
    let counter = std::fs::read_to_string(w.scratch.join("counter")).unwrap_or_default();
    assert_eq!(counter.lines().count(), 1, "the task executed {} times in total", counter.lines().count());
    let mut st = vec![status(&ra, "t").to_string(), status(&rb, "t").to_string()];
    st.sort();
    assert_eq!(st, ["Cached", "Succeeded"], "one process runs, the other reuses\n{ra:#}\n{rb:#}");
    assert_eq!(task(&ra, "t")["results"], task(&rb, "t")["results"]);
    assert_eq!(task(&ra, "t")["cacheKey"], task(&rb, "t")["cacheKey"]);
    let ls = w.cache_ls();
    assert_eq!(ls["records"].as_array().map(|a| a.len()), Some(1), "{ls:#}");
}

// ------------------------------------------------------------------------------------------
// 8. tenon cache ls / verify / gc
// ------------------------------------------------------------------------------------------

const STORED: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: gen
  annotations:
    tenon.dev/inputs: "g/"
    tenon.dev/outputs: "work:out/"
spec:
  params:
    - name: v
  workspaces:
    - name: source
      readOnly: true
    - name: work
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        mkdir -p "$(workspaces.work.path)/out"
        printf 'payload-%s' "$(params.v)" > "$(workspaces.work.path)/out/data.txt"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: stable
  annotations:
    tenon.dev/inputs: "s/"
spec:
  workspaces:
    - name: source
      readOnly: true
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        cat "$(workspaces.source.path)/s/in.txt" | tr -d '\n' > "$(results.r.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: stored
spec:
  params:
    - name: v
      default: "1"
  workspaces:
    - name: source
    - name: work
  tasks:
    - name: gen
      taskRef:
        name: gen
      params:
        - name: v
          value: $(params.v)
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
    - name: stable
      taskRef:
        name: stable
      workspaces:
        - name: source
          workspace: source
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: stored-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: stored
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 16Mi
"##;

fn record_keys(ls: &Value) -> Vec<String> {
    let mut v: Vec<String> = ls["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records: {ls:#}"))
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn object_path(store: &Path, content: &[u8]) -> PathBuf {
    let d = sha_hex(content);
    store.join("cache/objects").join(&d[..2]).join(&d[2..])
}

#[test]
fn cache_ls_verify_gc() {
    let w = World::new(STORED);
    w.write("g/in.txt", "g\n");
    w.write("s/in.txt", "stable\n");

    let r1 = w.run_ok(&["--param", "v=1"], 0);
    assert_statuses(&r1, "v=1", &[("gen", "Succeeded"), ("stable", "Succeeded")]);
    std::thread::sleep(Duration::from_millis(20));
    let r2 = w.run_ok(&["--param", "v=2"], 0);
    assert_statuses(&r2, "v=2", &[("gen", "Succeeded"), ("stable", "Cached")]);
    let k = |r: &Value, t: &str| task(r, t)["cacheKey"].as_str().unwrap().to_string();
    let (gen1, gen2, stable) = (k(&r1, "gen"), k(&r2, "gen"), k(&r1, "stable"));
    assert_ne!(gen1, gen2);

    // ls lists every record, with run, task and output bytes
    let ls = w.cache_ls();
    assert_eq!(ls["kind"], "CacheList");
    let mut want = vec![gen1.clone(), gen2.clone(), stable.clone()];
    want.sort();
    assert_eq!(record_keys(&ls), want, "{ls:#}");
    let rec = ls["records"].as_array().unwrap().iter().find(|r| r["key"] == gen2.as_str()).unwrap();
    assert_eq!(rec["run"], "stored-run");
    assert_eq!(rec["task"], "gen");
    assert_eq!(rec["outputBytes"], 9, "payload-2 is 9 bytes: {rec:#}");
    let human = w.tenon(&["cache", "ls"]);
    assert_eq!(human.code, 0);
    assert!(human.stdout.contains(&gen2[..16]) && human.stdout.contains("3 record(s)"), "{}", human.stdout);

    let (obj1, obj2) = (object_path(&w.store, b"payload-1"), object_path(&w.store, b"payload-2"));
    assert!(obj1.is_file() && obj2.is_file(), "outputs are content-addressed under cache/objects/");

    // verify: clean
    let v = w.tenon(&["cache", "verify", "--output", "json"]);
    assert_eq!(v.code, 0, "verify on a clean store: {}{}", v.stdout, v.stderr);
    assert_eq!(v.json()["corrupt"], serde_json::json!([]));
    assert_eq!(v.json()["objects"], 2);

    // gc --older-than 0s: keeps what the latest successful run used (gen2, and stable,
    // which that run reused from the first run), removes the superseded gen1 and its object
    let g = w.tenon(&["cache", "gc", "--older-than", "0s", "--output", "json"]);
    assert_eq!(g.code, 0, "gc: {}{}", g.stdout, g.stderr);
    assert_eq!(g.json()["removedRecords"], 1, "{}", g.stdout);
    let mut kept = vec![gen2.clone(), stable.clone()];
    kept.sort();
    assert_eq!(record_keys(&w.cache_ls()), kept, "gc must keep the latest run's records");
    assert!(!obj1.exists(), "gc must remove the superseded record's object");
    assert!(obj2.exists(), "gc must keep the latest run's object");
    let r = w.run_ok(&["--param", "v=2"], 0);
    assert_statuses(&r, "after gc, v=2", &[("gen", "Cached"), ("stable", "Cached")]);
    let r = w.run_ok(&["--param", "v=1"], 0);
    assert_statuses(&r, "after gc, v=1", &[("gen", "Succeeded"), ("stable", "Cached")]);
    assert_reasons(&r, "gen", "after gc, v=1", &["param v changed 2 -> 1"]);

    // corrupt an object: verify exits 1 and names it
    let mut perm = std::fs::metadata(&obj2).unwrap().permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(&obj2, perm).unwrap();
    std::fs::write(&obj2, b"bit rot!!").unwrap();
    let v = w.tenon(&["cache", "verify"]);
    assert_eq!(v.code, 1, "verify on a corrupt store: {}{}", v.stdout, v.stderr);
    let d2 = sha_hex(b"payload-2");
    assert!(v.stdout.contains(&d2), "verify must name the corrupt object {d2}: {}", v.stdout);
    let v = w.tenon(&["cache", "verify", "--output", "json"]);
    assert_eq!(v.code, 1);
    assert_eq!(v.json()["corrupt"], serde_json::json!([d2]));
}

/// Make a stored object writable and give it `content` (bit rot, a bad disk).
fn damage(obj: &Path, content: &[u8]) {
    let mut perm = std::fs::metadata(obj).unwrap().permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(obj, perm).unwrap();
    std::fs::write(obj, content).unwrap();
}

/// The STORED pipeline run once: (world, gen's key, gen's object path, its digest).
fn stored_once() -> (World, String, PathBuf, String) {
    let w = World::new(STORED);
    w.write("g/in.txt", "g\n");
    w.write("s/in.txt", "stable\n");
    let r1 = w.run_ok(&[], 0);
    assert_statuses(&r1, "first", &[("gen", "Succeeded"), ("stable", "Succeeded")]);
    let key = task(&r1, "gen")["cacheKey"].as_str().unwrap().to_string();
    let obj = object_path(&w.store, b"payload-1");
    (w, key, obj, sha_hex(b"payload-1"))
}

#[test]
fn a_corrupt_object_is_replaced_when_its_task_reruns() {
    let (w, _, obj, d) = stored_once();
    // same-size rot: the hit's restore detects it, gen reruns with identical bytes, and
    // the object is stored again (it used to be kept because it "already exists")
    damage(&obj, b"payload-X");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "same-size rot", &[("gen", "Succeeded"), ("stable", "Cached")]);
    assert_reasons(
        &r,
        "gen",
        "same-size rot",
        &[&format!("output object missing: work:out/data.txt (sha256 {}..)", &d[..8])],
    );
    assert_eq!(std::fs::read(&obj).unwrap(), b"payload-1", "the rerun must replace the corrupt object");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "after the rerun", &[("gen", "Cached"), ("stable", "Cached")]);
    // a forced rerun (no restore) finds the damaged object when it stores its output
    for rot in [&b"payload-Z"[..], b"rot"] {
        damage(&obj, rot);
        let r = w.run_ok(&["--rerun", "gen"], 0);
        assert_statuses(&r, "forced", &[("gen", "Succeeded"), ("stable", "Cached")]);
        assert_eq!(std::fs::read(&obj).unwrap(), b"payload-1", "storing must replace an object damaged to {rot:?}");
    }
    assert_eq!(w.tenon(&["cache", "verify"]).code, 0);
}

#[test]
fn plan_says_run_when_an_output_object_is_missing_or_has_the_wrong_size() {
    let (w, _, obj, d) = stored_once();
    // plan checks objects cheaply (existence, size): no `cached` for a record it cannot restore
    damage(&obj, b"rot");
    let p = w.plan(&[]);
    assert_eq!(plan_task(&p, "gen")["decision"], "run", "{p:#}");
    assert_eq!(
        plan_reasons(&p, "gen"),
        [format!("output object corrupt (size): work:out/data.txt (sha256 {}.. is 3 bytes, recorded 9)", &d[..8])],
        "{p:#}"
    );
    assert_eq!(plan_task(&p, "stable")["decision"], "cached", "{p:#}");
    let human = w.tenon(&["plan", w.repo.to_str().unwrap()]);
    assert!(human.stdout.contains("output object corrupt (size)"), "{}", human.stdout);
    std::fs::remove_file(&obj).unwrap();
    let missing = format!("output object missing: work:out/data.txt (sha256 {}..)", &d[..8]);
    let p = w.plan(&[]);
    assert_eq!(plan_task(&p, "gen")["decision"], "run", "{p:#}");
    assert_eq!(plan_reasons(&p, "gen"), [missing.as_str()]);
    // ... the run gives the same reason, stores the object again, and the plan is cached
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "missing object", &[("gen", "Succeeded"), ("stable", "Cached")]);
    assert_reasons(&r, "gen", "missing object", &[&missing]);
    assert_eq!(std::fs::read(&obj).unwrap(), b"payload-1");
    assert_eq!(plan_task(&w.plan(&[]), "gen")["decision"], "cached");
}

#[test]
fn cache_verify_repair_removes_bad_objects_and_evicts_their_records() {
    let (w, key, obj, d) = stored_once();
    damage(&obj, b"payload-Y");
    assert_eq!(w.tenon(&["cache", "verify"]).code, 1, "plain verify only reports");
    assert_eq!(std::fs::read(&obj).unwrap(), b"payload-Y");
    let v = w.tenon(&["cache", "verify", "--repair", "--output", "json"]);
    assert_eq!(v.code, 0, "verify --repair: {}{}", v.stdout, v.stderr);
    let j = v.json();
    assert_eq!(j["corrupt"], serde_json::json!([d]), "{j:#}");
    assert_eq!(j["removedObjects"], serde_json::json!([d]), "{j:#}");
    let evicted: Vec<&str> =
        j["evictedRecords"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(evicted, [key.as_str()], "{j:#}");
    assert!(!obj.exists(), "the corrupt object is removed");
    let keys = record_keys(&w.cache_ls());
    assert!(!keys.contains(&key) && keys.len() == 1, "only the record naming it is evicted: {keys:?}");
    let v = w.tenon(&["cache", "verify", "--output", "json"]);
    assert_eq!((v.code, v.json()["corrupt"].clone()), (0, serde_json::json!([])), "after repair: {}", v.stdout);
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "after repair", &[("gen", "Succeeded"), ("stable", "Cached")]);
    // a missing object: nothing to remove, the record is evicted; the human output says so
    std::fs::remove_file(&obj).unwrap();
    let v = w.tenon(&["cache", "verify", "--repair"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(&format!("evicted record {}", &key[..16])), "{}", v.stdout);
    assert!(v.stdout.contains("repaired: 0 object(s) removed, 1 record(s) evicted"), "{}", v.stdout);
    assert_eq!(w.tenon(&["cache", "verify"]).code, 0);
}

const LINKS: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: linker
  annotations:
    tenon.dev/inputs: "m/"
    tenon.dev/outputs: "work:out/, work:top"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo link >> "@SCRATCH@/exec.log"
        v=$(cat "$(workspaces.source.path)/m/version.txt")
        o="$(workspaces.work.path)/out"
        mkdir -p "$o/bin" "$o/lib"
        printf '{"model":"%s"}' "$v" > "$o/model-$v.json"
        ln -s "model-$v.json" "$o/latest"
        printf 'lib' > "$o/lib/libfoo.so.1"
        ln -s libfoo.so.1 "$o/lib/libfoo.so"
        ln -s ../latest "$o/bin/current"
        ln -s /nonexistent/abs "$o/dangling"
        ln -s "out/model-$v.json" "$(workspaces.work.path)/top"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: user
spec:
  workspaces:
    - name: work
      readOnly: true
  results:
    - name: seen
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo use >> "@SCRATCH@/exec.log"
        w="$(workspaces.work.path)"
        printf '%s|%s|%s|%s|%s' "$(cat "$w/out/latest")" "$(readlink "$w/out/latest")" \
          "$(cat "$w/out/bin/current")" "$(cat "$w/out/lib/libfoo.so")" "$(cat "$w/top")" > "$(results.seen.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: links
spec:
  workspaces:
    - name: source
    - name: work
  tasks:
    - name: link
      taskRef:
        name: linker
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
    - name: use
      runAfter: [link]
      taskRef:
        name: user
      workspaces:
        - name: work
          workspace: work
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: links-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: links
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 16Mi
"##;

#[test]
fn symlinks_in_outputs_are_restored_with_their_exact_target() {
    let w = World::new(LINKS);
    w.write("m/version.txt", "v1");
    let seen = r#"{"model":"v1"}|model-v1.json|{"model":"v1"}|lib|{"model":"v1"}"#;
    let r1 = w.run_ok(&[], 0);
    assert_statuses(&r1, "first", &[("link", "Succeeded"), ("use", "Succeeded")]);
    assert_eq!(result(&r1, "use", "seen"), seen);
    assert_eq!(w.take_log("exec.log"), ["link", "use"]);

    // a hit restores every link as a link with the same target text (relative, nested,
    // dangling, absolute, and a declared output that is itself a link)
    let r2 = w.run_ok(&["--rerun", "use"], 0);
    assert_statuses(&r2, "hit", &[("link", "Cached"), ("use", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["use"]);
    assert_eq!(result(&r2, "use", "seen"), seen, "the consumer must see the same files after a hit");
    let vol = run_dir(&r2).join("volumes/work");
    for (link, target) in [
        ("out/latest", "model-v1.json"),
        ("out/bin/current", "../latest"),
        ("out/lib/libfoo.so", "libfoo.so.1"),
        ("out/dangling", "/nonexistent/abs"),
        ("top", "out/model-v1.json"),
    ] {
        let p = vol.join(link);
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink(), "{link} must be restored as a link");
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(target), "{link}");
    }
    let v = w.tenon(&["cache", "verify", "--output", "json"]);
    assert_eq!(v.code, 0, "verify must understand links: {}{}", v.stdout, v.stderr);
    assert_eq!(v.json()["corrupt"], serde_json::json!([]));

    // a retargeted link is a different output: the consumer reruns (no false hit)
    w.write("m/version.txt", "v2");
    let r3 = w.run_ok(&[], 0);
    assert_statuses(&r3, "v2", &[("link", "Succeeded"), ("use", "Succeeded")]);
    assert_eq!(result(&r3, "use", "seen"), seen.replace("v1", "v2"));
    let ur = reasons(&r3, "use");
    assert!(
        ur.len() == 2
            && ur[0].starts_with("upstream output link work:out/ changed (sha256 ")
            && ur[1].starts_with("upstream output link work:top changed (sha256 "),
        "{ur:?}"
    );
    // and back: the v1 record is a hit again, its links exact
    w.write("m/version.txt", "v1");
    let r4 = w.run_ok(&[], 0);
    assert_statuses(&r4, "back to v1", &[("link", "Cached"), ("use", "Cached")]);
    let r5 = w.run_ok(&["--rerun", "use"], 0);
    assert_eq!(result(&r5, "use", "seen"), seen);
}

// ------------------------------------------------------------------------------------------
// 9. results that embed workspace paths
// ------------------------------------------------------------------------------------------

const PATHS: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: where
  annotations:
    tenon.dev/inputs: "src/"
    tenon.dev/outputs: "work:x"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
  results:
    - name: path
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        cp "$(workspaces.source.path)/src/in.txt" "$(workspaces.work.path)/x"
        printf '%s' "$(workspaces.work.path)/x" > "$(results.path.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: paths
spec:
  workspaces:
    - name: source
    - name: work
  results:
    - name: where
      value: $(tasks.where.results.path)
  tasks:
    - name: where
      taskRef:
        name: where
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: paths-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: paths
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 16Mi
"##;

/// Run the PATHS pipeline three times (`--sandbox MODE`): fresh, Cached, forced fresh.
/// The Cached run's result must be what a fresh execution in that run reports.
fn portable_results(mode: &str) {
    let w = World::new(PATHS);
    w.write("src/in.txt", "content\n");
    let r1 = w.run_ok(&["--sandbox", mode], 0);
    assert_statuses(&r1, "first", &[("where", "Succeeded")]);
    let d1 = run_dir(&r1);

    let r2 = w.run_ok(&["--sandbox", mode], 0);
    assert_statuses(&r2, "second", &[("where", "Cached")]);
    let d2 = run_dir(&r2);
    assert_ne!(d1, d2);
    let got = result(&r2, "where", "path").to_string();
    assert!(!got.contains(d1.to_str().unwrap()), "the cached result points into the first run: {got}");
    assert_eq!(r2["runs"][0]["results"]["where"], got.as_str(), "pipeline result");
    // the restored output is in the second run's volume
    let host_file = d2.join("volumes/work/x");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "content\n", "restored output");

    // what a real execution in a third run says, moved to the second run's directory
    let r3 = w.run_ok(&["--sandbox", mode, "--no-cache"], 0);
    let d3 = run_dir(&r3);
    let fresh = result(&r3, "where", "path").replace(d3.to_str().unwrap(), d2.to_str().unwrap());
    assert_eq!(got, fresh, "a Cached result must equal what executing the task in this run gives");
    if mode == "host" {
        // host paths: the result names the second run's workspace
        assert_eq!(result(&r1, "where", "path"), d1.join("volumes/work/x").to_str().unwrap());
        assert_eq!(got, host_file.to_str().unwrap(), "the cached result must name the second run's workspace");
    }
}

#[test]
fn cached_results_point_into_the_current_run() {
    portable_results("host");
}

#[test]
fn cached_results_point_into_the_current_run_default_sandbox() {
    portable_results("auto");
}

// ------------------------------------------------------------------------------------------
// reasons name the cause, once
// ------------------------------------------------------------------------------------------

/// A task param bound to an upstream result changes with it: the reason is the upstream
/// result (one cause, one reason), not also "param up changed".
#[test]
fn reasons_for_a_dependant_name_the_upstream_result_once() {
    let w = World::new(DIAMOND);
    w.write("a/in.txt", "alpha\n");
    w.write("a/big.bin", "small here\n");
    w.write("b/in.txt", "bravo\n");
    w.write("c/in.txt", "c1\n");
    w.write("d/in.txt", "delta\n");
    let r1 = w.run_ok(&[], 0);
    assert_statuses(&r1, "first", &[("a", "Succeeded"), ("b", "Succeeded"), ("c", "Succeeded"), ("d", "Succeeded")]);
    w.write("c/in.txt", "c1\nc2\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "edit c", &[("a", "Cached"), ("b", "Cached"), ("c", "Succeeded"), ("d", "Succeeded")]);
    let (old, new) = (result(&r1, "c", "r"), result(&r, "c", "r"));
    // d's param `right` is `$(tasks.c.results.r)`: its change is the upstream result's
    assert_reasons(&r, "d", "edit c", &[&format!("upstream result tasks.c.results.r changed ({old} -> {new})")]);
}

const RENAMED_PARAM: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: fit
  annotations:
    tenon.dev/inputs: "src/"
spec:
  params:
    - name: lr
  steps:
    - name: s
      image: alpine
      script: |
        echo "lr=$(params.lr)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: renamed
spec:
  params:
    - name: rate
      default: "1"
  tasks:
    - name: fit
      taskRef:
        name: fit
      params:
        - name: lr
          value: $(params.rate)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: renamed-run
spec:
  pipelineRef:
    name: renamed
"##;

/// `--param rate=2` on a run whose Pipeline passes `rate` to the Task param `lr`: the
/// reason must name the param the user changed (`rate`), not only the Task's `lr`.
#[test]
fn param_reason_names_the_run_param_the_user_changed() {
    let w = World::new(RENAMED_PARAM);
    w.write("src/in.txt", "x\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "first", &[("fit", "Succeeded")]);
    let p = w.plan(&["--param", "rate=2"]);
    assert_eq!(plan_task(&p, "fit")["decision"], "run", "{p:#}");
    let got = plan_reasons(&p, "fit");
    assert!(
        got.len() == 1 && got[0].contains("rate") && got[0].contains("1 -> 2"),
        "plan must say the run param rate changed 1 -> 2, got {got:?}"
    );
}

/// A consumer of a result that embeds a workspace path: nothing changed, so on the second
/// run both tasks are Cached (the path differs between runs only by the run's own
/// workspace location, which `portable_results` already abstracts for the producer).
#[test]
fn consumer_of_a_path_result_is_cached_on_an_unchanged_rerun() {
    let consumer = r##"  tasks:
    - name: use
      taskSpec:
        params:
          - name: p
        workspaces:
          - name: work
            readOnly: true
        results:
          - name: c
        steps:
          - name: s
            image: alpine
            script: |
              echo use >> "@SCRATCH@/exec.log"
              cat "$(params.p)" > "$(results.c.path)"
      params:
        - name: p
          value: $(tasks.where.results.path)
      workspaces:
        - name: work
          workspace: work
"##;
    let yaml = PATHS.replacen("  tasks:\n", consumer, 1);
    let w = World::new(&yaml);
    w.write("src/in.txt", "content\n");
    let r1 = w.run_ok(&["--sandbox", "host"], 0);
    assert_statuses(&r1, "first", &[("where", "Succeeded"), ("use", "Succeeded")]);
    assert_eq!(result(&r1, "use", "c"), "content\n");
    assert_eq!(w.take_log("exec.log"), ["use"]);
    let r2 = w.run_ok(&["--sandbox", "host"], 0);
    assert_eq!(result(&r2, "use", "c"), "content\n");
    assert_statuses(&r2, "second", &[("where", "Cached"), ("use", "Cached")]);
    assert!(w.take_log("exec.log").is_empty(), "second: the consumer executed again");
}

const EMBEDDED: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: embedded
spec:
  workspaces:
    - name: source
  tasks:
    - name: reads
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: |
              cat "$(workspaces.source.path)/src/in.txt"
    - name: unrelated
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: |
              echo "no workspace here"
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: embedded-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: embedded
  workspaces:
    - name: source
      emptyDir: {}
"##;

/// An embedded taskSpec sees a pipeline workspace it does not bind only when it references
/// it (as in Tekton): one that never mentions the repository does not depend on its files,
/// and one that does is rerun when they change.
#[test]
fn embedded_specs_depend_only_on_workspaces_they_reference() {
    let w = World::new(EMBEDDED);
    w.write("src/in.txt", "one\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "first", &[("reads", "Succeeded"), ("unrelated", "Succeeded")]);
    w.write("src/in.txt", "two\n");
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "edit", &[("reads", "Succeeded"), ("unrelated", "Cached")]);
    assert_reason_listed(&r, "reads", "edit", &changed("src/in.txt", b"one\n", b"two\n"));
}

/// The store holds `needle` nowhere (records, preimages, run directories, logs): `grep -r`.
#[track_caller]
fn assert_store_lacks(store: &Path, needle: &str, step: &str) {
    let out = Command::new("grep").args(["-r", "-a", "-l", needle]).arg(store).output().expect("grep runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{step}: grep -r {needle} STORE must find nothing, found in:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn limits_yaml(limits: &str) -> String {
    format!(
        r##"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: sized
spec:
  taskSpec:
    steps:
      - name: s
        image: alpine
        computeResources:
          limits: {limits}
        script: |
          echo sized >> "@SCRATCH@/exec.log"
"##
    )
}

/// Kubernetes treats `computeResources.limits` as a map: listing memory before cpu is the
/// same task, so the same key (a false miss before, explained only as "cache key changed");
/// a real change names the field.
#[test]
fn map_key_order_does_not_change_the_key() {
    let w = World::new(&limits_yaml("{cpu: \"1\", memory: 1Gi}"));
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "first", &[("sized", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["sized"]);
    w.write(
        "pipeline.yaml",
        limits_yaml("{memory: 1Gi, cpu: \"1\"}").replace("@SCRATCH@", w.scratch.to_str().unwrap()),
    );
    let r = w.run_ok(&[], 0);
    assert_statuses(&r, "reordered", &[("sized", "Cached")]);
    assert!(w.take_log("exec.log").is_empty(), "reordered: the task executed again");
    w.write(
        "pipeline.yaml",
        limits_yaml("{memory: 2Gi, cpu: \"1\"}").replace("@SCRATCH@", w.scratch.to_str().unwrap()),
    );
    let p = w.plan(&[]);
    assert_eq!(plan_reasons(&p, "sized"), ["task spec changed at steps[0].computeResources.limits.memory"], "{p:#}");
}

const PARAMS_PER_TASK: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: uses-b
spec:
  params:
    - name: b
  steps:
    - name: s
      image: alpine
      script: |
        echo "ref $(params.b)" >> "@SCRATCH@/exec.log"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: per-task
spec:
  params:
    - name: a
      default: "1"
    - name: b
      default: "1"
  tasks:
    - name: ta
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: |
              echo "ta $(params.a)" >> "@SCRATCH@/exec.log"
    - name: tb
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: |
              echo "tb $(params["b"])" >> "@SCRATCH@/exec.log"
    - name: none
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: |
              echo "none" >> "@SCRATCH@/exec.log"
    - name: ref
      taskRef:
        name: uses-b
      params:
        - name: b
          value: $(params.b)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: per-task-run
spec:
  pipelineRef:
    name: per-task
"##;

/// A Pipeline param reaches every embedded taskSpec by propagation, but only a task that
/// uses it may rerun when it changes: its siblings stay Cached.
#[test]
fn a_param_reruns_only_the_tasks_that_use_it() {
    let w = World::new(PARAMS_PER_TASK);
    let r = w.run_ok(&[], 0);
    assert_statuses(
        &r,
        "first",
        &[("ta", "Succeeded"), ("tb", "Succeeded"), ("none", "Succeeded"), ("ref", "Succeeded")],
    );
    assert_eq!(w.take_log("exec.log"), ["none", "ref 1", "ta 1", "tb 1"]);
    let r = w.run_ok(&["--param", "a=2"], 0);
    assert_statuses(&r, "a=2", &[("ta", "Succeeded"), ("tb", "Cached"), ("none", "Cached"), ("ref", "Cached")]);
    assert_eq!(w.take_log("exec.log"), ["ta 2"]);
    assert_reasons(&r, "ta", "a=2", &["param a changed 1 -> 2"]);
    let r = w.run_ok(&["--param", "b=3"], 0);
    assert_statuses(&r, "b=3", &[("ta", "Cached"), ("tb", "Succeeded"), ("none", "Cached"), ("ref", "Succeeded")]);
    assert_eq!(w.take_log("exec.log"), ["ref 3", "tb 3"]);
}

fn secret_yaml(secret_data: &str) -> String {
    format!(
        r##"
apiVersion: v1
kind: Secret
metadata:
  name: creds
{secret_data}
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: uses-secret
spec:
  taskSpec:
    results:
      - name: digest
    steps:
      - name: s
        image: alpine
        env:
          - name: TOKEN
            valueFrom:
              secretKeyRef:
                name: creds
                key: token
        script: |
          printf %s "$TOKEN" | sha256sum | cut -c1-64 | tr -d '\n' > "$(results.digest.path)"
"##
    )
}

/// A Secret's value read through `env.valueFrom.secretKeyRef` never lands in the store
/// (records, preimages, run directories), in the report or in `plan`; the key follows the
/// Secret's content digest, so a changed value reruns the task (no false hit).
#[test]
fn secret_env_values_are_never_stored_and_key_by_digest() {
    let w = World::new(&secret_yaml("stringData:\n  token: S3CRET"));
    let (r, v) = w.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_statuses(&v, "first", &[("uses-secret", "Succeeded")]);
    assert_eq!(result(&v, "uses-secret", "digest"), sha_hex(b"S3CRET"), "the step sees the value");
    assert!(!r.stdout.contains("S3CRET") && !r.stderr.contains("S3CRET"), "the report shows the secret");
    assert_store_lacks(&w.store, "S3CRET", "first");
    let v = w.run_ok(&[], 0);
    assert_statuses(&v, "unchanged", &[("uses-secret", "Cached")]);
    // a new value (base64 `data:` this time) must rerun, and stays out of the store too
    w.write("pipeline.yaml", secret_yaml("data:\n  token: MFRIM1I=")); // "0TH3R"
    let p = w.tenon(&["plan", w.repo.to_str().unwrap(), "--output", "json"]);
    assert!(!p.stdout.contains("0TH3R") && !p.stderr.contains("0TH3R"), "plan shows the secret");
    assert_eq!(
        plan_reasons(&p.json(), "uses-secret"),
        ["task spec changed at steps[0].env[0].valueFrom.contentDigest"],
        "plan must name the field that changed"
    );
    let (r, v) = w.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_statuses(&v, "new value", &[("uses-secret", "Succeeded")]);
    assert_eq!(result(&v, "uses-secret", "digest"), sha_hex(b"0TH3R"));
    assert!(!r.stdout.contains("0TH3R") && !r.stderr.contains("0TH3R"), "the report shows the secret");
    assert_store_lacks(&w.store, "S3CRET", "new value");
    assert_store_lacks(&w.store, "0TH3R", "new value");
    assert_store_lacks(&w.store, "MFRIM1I=", "new value (base64)");
}

fn env_from_yaml(mode: &str) -> String {
    format!(
        r##"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  MODE: {mode}
  LEVEL: "3"
  not a name: skipped
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  PASS: hunter2
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: envfrom
spec:
  taskSpec:
    results:
      - name: seen
    stepTemplate:
      envFrom:
        - secretRef: {{name: creds}}
    steps:
      - name: s
        image: busybox
        envFrom:
          - configMapRef: {{name: settings}}
            prefix: CFG_
          - configMapRef: {{name: absent, optional: true}}
        env:
          - name: CFG_LEVEL
            value: override
        script: |
          echo run >> "@SCRATCH@/exec.log"
          printf '%s %s %s %s' "$CFG_MODE" "$CFG_LEVEL" "${{MODE:-unset}}" "${{PASS:-unset}}" > "$(results.seen.path)"
      - name: t
        image: busybox
        script: |
          printf %s "$PASS" | sha256sum | cut -c1-64 > "@SCRATCH@/pass.sha"
"##
    )
}

/// `envFrom` with the local executor: the repository's ConfigMaps/Secrets (with `prefix`,
/// `optional`, `env` winning), keyed by their content, a Secret's values never stored.
#[test]
fn env_from_reads_repository_objects_locally_and_is_keyed_by_content() {
    let w = World::new(&env_from_yaml("fast"));
    let v = w.run_ok(&[], 0);
    assert_statuses(&v, "first", &[("envfrom", "Succeeded")]);
    // stepTemplate's envFrom is replaced by the step's own list (no merge key)
    assert_eq!(result(&v, "envfrom", "seen"), "fast override unset unset");
    let pass = std::fs::read_to_string(w.scratch.join("pass.sha")).unwrap();
    assert_eq!(pass.trim(), sha_hex(b"hunter2"), "stepTemplate's envFrom: the secret's key is a variable");
    assert_eq!(w.take_log("exec.log"), ["run"]);
    assert_store_lacks(&w.store, "hunter2", "first");
    let v = w.run_ok(&[], 0);
    assert_statuses(&v, "unchanged", &[("envfrom", "Cached")]);
    assert!(w.take_log("exec.log").is_empty());
    w.write("pipeline.yaml", env_from_yaml("slow").replace("@SCRATCH@", w.scratch.to_str().unwrap()));
    let v = w.run_ok(&[], 0);
    assert_statuses(&v, "configmap changed", &[("envfrom", "Succeeded")]);
    assert_eq!(result(&v, "envfrom", "seen"), "slow override unset unset");
    let got = reasons(&v, "envfrom");
    assert!(got.len() == 1 && got[0].starts_with("task spec changed at steps[0].env["), "{got:?}");
    // a ConfigMap that is not optional and not in the repository fails the task, saying so
    let missing = env_from_yaml("fast").replace("name: absent, optional: true}", "name: absent}");
    w.write("pipeline.yaml", missing.replace("@SCRATCH@", w.scratch.to_str().unwrap()));
    let (r, v) = w.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let run = &v["runs"][0];
    assert!(
        run["message"].as_str().unwrap_or("").contains("ConfigMap \"absent\" not found in the repository"),
        "{v:#}"
    );
}

// ------------------------------------------------------------------------------------------
// symlinks never lead the cache astray
// ------------------------------------------------------------------------------------------

const LINKED: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: linked
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - name: source
      emptyDir: {}
      subPath: @SUB@
  pipelineSpec:
    workspaces: [{name: source}]
    tasks:
      - name: read
        workspaces: [{name: source, workspace: source}]
        taskSpec:
          workspaces: [{name: source, readOnly: true}]
          results: [{name: r}]
          steps:
            - name: s
              image: alpine
              script: cat $(workspaces.source.path)/@FILE@ > $(results.r.path)
"##;

/// A repository subPath that is a symlink out of the repository is refused (the key
/// would hash the link while the task reads what it points at: a stale hit forever);
/// an input tree holding a symlink that points outside it gets a warning.
#[test]
fn symlinks_out_of_the_repository_are_refused_or_warned_about() {
    let w = World::new(&LINKED.replace("@SUB@", "link").replace("@FILE@", "data.txt"));
    let outside = w.scratch.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("data.txt"), "v1").unwrap();
    std::os::unix::fs::symlink(&outside, w.path("link")).unwrap();
    let r = w.run_ok(&[], 1);
    let msg = r["runs"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("subPath \"link\" leaves the volume through a symlink"), "{r:#}");

    // a link inside the tree that points out of it: plan (and run) say so
    let w = World::new(&LINKED.replace("@SUB@", "in").replace("@FILE@", "link/data.txt"));
    w.write("in/keep.txt", "x");
    let outside = w.scratch.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("data.txt"), "v1").unwrap();
    std::os::unix::fs::symlink(&outside, w.path("in/link")).unwrap();
    let r = w.tenon(&["plan", w.repo.to_str().unwrap(), "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("symlink link -> ") && r.stderr.contains("points outside it"),
        "plan must warn about the link: {}",
        r.stderr
    );
}

const PLANT: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: planter
  annotations:
    tenon.dev/inputs: "plant/"
spec:
  workspaces: [{name: source, readOnly: true}, {name: work}]
  steps:
    - name: s
      image: alpine
      script: |
        if [ "$(cat $(workspaces.source.path)/plant/mode)" = plant ]; then
          ln -s "@SCRATCH@/hostdir" "$(workspaces.work.path)/out"
        fi
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: maker
  annotations:
    tenon.dev/inputs: "make/"
    tenon.dev/outputs: "work:out"
spec:
  workspaces: [{name: source, readOnly: true}, {name: work}]
  steps:
    - name: s
      image: alpine
      script: |
        mkdir -p "$(workspaces.work.path)/out"
        cat "$(workspaces.source.path)/make/in" > "$(workspaces.work.path)/out/f"
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: planted
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: 16Mi}}
  pipelineSpec:
    workspaces: [{name: source}, {name: work}]
    tasks:
      - name: plant
        taskRef: {name: planter}
        workspaces: [{name: source, workspace: source}, {name: work, workspace: work}]
      - name: make
        runAfter: [plant]
        taskRef: {name: maker}
        workspaces: [{name: source, workspace: source}, {name: work, workspace: work}]
"##;

/// A sandboxed task plants `work/out -> /host/dir`; the next task's output `work:out`
/// is a cache hit: restoring it must not write through the link into the host.
#[test]
fn cache_restore_never_writes_through_a_planted_symlink() {
    let w = World::new(PLANT);
    let hostdir = w.scratch.join("hostdir");
    std::fs::create_dir_all(&hostdir).unwrap();
    w.write("plant/mode", "no");
    w.write("make/in", "made");
    let r1 = w.run_ok(&["--sandbox", "bwrap"], 0);
    assert_statuses(&r1, "first", &[("plant", "Succeeded"), ("make", "Succeeded")]);

    w.write("plant/mode", "plant");
    let (r, _) = w.run(&["--sandbox", "bwrap"]);
    assert_eq!(std::fs::read_dir(&hostdir).unwrap().count(), 0, "tenon wrote into the planted link's target");
    assert!(r.stderr.contains("symlink tenon did not create"), "the refused restore is reported: {}", r.stderr);
}
