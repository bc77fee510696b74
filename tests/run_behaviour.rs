//! Behaviour of `tenon run` against Tekton v1 semantics, end to end: every test writes a
//! small inline manifest set into a temp dir, runs the real binary and asserts on the
//! JSON RunReport (`--output json -q`). The cases that must hold on every executor are the
//! table in `tests/behaviour/cases.rs` (run here with the local executor, and on pods by
//! `tests/behaviour_k8s.rs`); this file adds what depends on where steps run.
//!
//! Expected values follow Tekton (see `shared/design/tekton-semantics.md`), not whatever
//! tenon happens to do: a failing test here is a behaviour bug in tenon.

#[path = "behaviour/cases.rs"]
mod cases;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cases::{assert_run, assert_task, report, run0, PR_TIMEOUTS, TASK_TIMEOUT};
use common::{run_yaml, task, tenon, tenon_command, Run};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number of ms: {v}"))
}

/// A temp dir holding `pipeline.yaml`, plus the private store path inside it.
fn setup(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write yaml");
    let store = dir.path().join(".store");
    (dir, store)
}

/// A running tenon whose stdout/stderr go to files, so that a leaked background process
/// holding a pipe cannot block the test.
struct Spawned {
    child: std::process::Child,
    out_path: PathBuf,
    err_path: PathBuf,
    _out_dir: tempfile::TempDir,
}

fn spawn_tenon(args: &[&str], store: &Path, envs: &[(&str, &str)]) -> Spawned {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut cmd = Command::new(common::bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", store)
        .env("TENON_STORE", store)
        .env("NO_COLOR", "1")
        // these tests are about Tekton's scheduling semantics: identical tasks must run,
        // not reuse each other's cached results (the cache has its own tests)
        .env("TENON_NO_CACHE", "true")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn tenon");
    Spawned { child, out_path, err_path, _out_dir: out_dir }
}

impl Spawned {
    /// Wait for exit; kill tenon and fail after `deadline`.
    fn wait(mut self, deadline: Duration) -> Run {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "tenon did not exit within {deadline:?}\nstderr: {}",
                    std::fs::read_to_string(&self.err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err_path).unwrap_or_default(),
        }
    }
}

/// Run tenon with extra environment variables and a hard deadline.
fn tenon_ext(args: &[&str], store: &Path, envs: &[(&str, &str)], deadline: Duration) -> Run {
    spawn_tenon(args, store, envs).wait(deadline)
}

/// `tenon run DIR --output json -q EXTRA...` with the dir's private store.
fn run_dir(dir: &Path, extra: &[&str]) -> Run {
    let d = dir.to_str().unwrap().to_string();
    let mut args = vec!["run", d.as_str(), "--output", "json", "-q"];
    args.extend_from_slice(extra);
    tenon(&args, &dir.join(".store"))
}

/// Is `pid` a live (non-zombie) `sleep` process?
fn sleep_alive(pid: u32) -> bool {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // state is the field after the parenthesised comm
    let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next().unwrap_or('?')).unwrap_or('?');
    if state == 'Z' || state == 'X' {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains("sleep")
}

/// Wait up to 1 s for `pid` to disappear; if it is still there, kill it (so the test does
/// not leak it either) and fail.
#[track_caller]
fn assert_gone(pid: u32, what: &str) {
    let t = Instant::now();
    while sleep_alive(pid) && t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if sleep_alive(pid) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("{what}: background process {pid} (sleep 300) outlived tenon");
    }
}

fn read_pid(path: &Path) -> u32 {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("pid file {}: {e}", path.display()));
    s.trim().parse().unwrap_or_else(|e| panic!("pid file {} holds {s:?}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// 1. the shared table (tests/behaviour/cases.rs), with the local executor
// ------------------------------------------------------------------------------------------

#[test]
fn shared_cases_with_the_local_executor() {
    cases::run_table("local", &[], 4, 1);
}

// ------------------------------------------------------------------------------------------
// 2. parallelism
// ------------------------------------------------------------------------------------------

const TWO_SLEEPERS: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: sleepers
spec:
  pipelineSpec:
    tasks:
      - name: one
        taskSpec:
          steps:
            - name: nap
              image: alpine
              script: sleep 1
      - name: two
        taskSpec:
          steps:
            - name: nap
              image: alpine
              script: sleep 1
"##;

#[test]
fn independent_tasks_run_in_parallel() {
    let (run, _dir) = run_yaml(TWO_SLEEPERS, &["--parallel", "2"]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    assert_task(&r, "one", "Succeeded", "Succeeded");
    assert_task(&r, "two", "Succeeded", "Succeeded");
    let d = ms(&run0(&r)["durationMs"]);
    assert!(d >= 1000, "run took {d} ms, less than one sleep");
    assert!(d < 1900, "two independent 1 s tasks with --parallel 2 took {d} ms");
}

#[test]
fn parallel_one_serializes() {
    let (run, _dir) = run_yaml(TWO_SLEEPERS, &["--parallel", "1"]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    let d = ms(&run0(&r)["durationMs"]);
    assert!(d >= 2000, "two 1 s tasks with --parallel 1 took only {d} ms");
}

// ------------------------------------------------------------------------------------------
// 6. timeouts take the time they say (their outcomes are in the shared table)
// ------------------------------------------------------------------------------------------

#[test]
fn pipeline_task_timeout_takes_the_timeout() {
    let t0 = Instant::now();
    let (run, _dir) = run_yaml(TASK_TIMEOUT, &[]);
    let wall = t0.elapsed();
    let r = report(&run, 1);
    assert_task(&r, "slow", "TimedOut", "TaskRunTimeout");
    let d = ms(&run0(&r)["durationMs"]);
    assert!(d >= 1000 && d < 3000, "a 1s timeout run took {d} ms");
    assert!(wall < Duration::from_secs(4), "tenon took {wall:?} for a 1s timeout");
}

#[test]
fn pipelinerun_tasks_timeout_takes_the_timeout() {
    let t0 = Instant::now();
    let (run, _dir) = run_yaml(PR_TIMEOUTS, &[]);
    let wall = t0.elapsed();
    let r = report(&run, 1);
    assert_run(&r, "Failed", "PipelineRunTimeout");
    let d = ms(&run0(&r)["durationMs"]);
    assert!(d >= 1000 && d < 3500, "tasks timeout 1s, run took {d} ms");
    assert!(wall < Duration::from_secs(4), "tenon took {wall:?}");
}

// ------------------------------------------------------------------------------------------
// 7. no orphan processes
// ------------------------------------------------------------------------------------------

fn orphan_yaml(pidfile: &Path, timeout: Option<&str>, tail: &str) -> String {
    let timeout = timeout.map(|t| format!("\n        timeout: {t}")).unwrap_or_default();
    format!(
        r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: orphans
spec:
  pipelineSpec:
    tasks:
      - name: bg{timeout}
        taskSpec:
          results:
            - name: pid
          steps:
            - name: s
              image: alpine
              script: |
                sleep 300 &
                printf '%s' "$!" > {pidfile}
                printf '%s' "$!" > $(results.pid.path)
                {tail}
"##,
        pidfile = pidfile.display()
    )
}

#[test]
fn no_orphans_after_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    std::fs::write(dir.path().join("pipeline.yaml"), orphan_yaml(&pidfile, Some("1s"), "sleep 5")).unwrap();
    let d = dir.path().to_str().unwrap();
    let run = tenon_ext(
        &["run", d, "--output", "json", "-q", "--sandbox", "host"],
        &dir.path().join(".store"),
        &[],
        Duration::from_secs(30),
    );
    let pid = read_pid(&pidfile);
    assert_gone(pid, "timed-out task");
    let r = report(&run, 1);
    assert_task(&r, "bg", "TimedOut", "TaskRunTimeout");
}

#[test]
fn no_orphans_after_step_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    std::fs::write(dir.path().join("pipeline.yaml"), orphan_yaml(&pidfile, None, "echo done")).unwrap();
    let d = dir.path().to_str().unwrap();
    let t0 = Instant::now();
    let run = tenon_ext(
        &["run", d, "--output", "json", "-q", "--sandbox", "host"],
        &dir.path().join(".store"),
        &[],
        Duration::from_secs(30),
    );
    let wall = t0.elapsed();
    let pid = read_pid(&pidfile);
    assert_gone(pid, "finished task");
    // the step's main process exited at once: a background child holding stdout must
    // not keep the step (or tenon) alive, as a container ends with its main process
    assert!(wall < Duration::from_secs(5), "tenon took {wall:?} although the step ended at once");
    let r = report(&run, 0);
    assert_task(&r, "bg", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "bg")["results"], json!({"pid": pid.to_string()}));
}

/// A child that leaves the step's session and process group (`setsid`, as daemons do)
/// must not survive either: a container's processes all die with it, whatever their
/// session.
#[test]
fn no_orphans_even_when_a_step_daemonizes() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let daemon_pidfile = dir.path().join("daemon.pid");
    let tail = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 300' > /dev/null 2>&1 < /dev/null &\n                sleep 0.3\n                echo done",
        daemon_pidfile.display()
    );
    std::fs::write(dir.path().join("pipeline.yaml"), orphan_yaml(&pidfile, None, &tail)).unwrap();
    let d = dir.path().to_str().unwrap();
    let run = tenon_ext(
        &["run", d, "--output", "json", "-q", "--sandbox", "host"],
        &dir.path().join(".store"),
        &[],
        Duration::from_secs(30),
    );
    assert_gone(read_pid(&pidfile), "finished task");
    assert_gone(read_pid(&daemon_pidfile), "finished task (setsid child)");
    let r = report(&run, 0);
    assert_task(&r, "bg", "Succeeded", "Succeeded");
}

// ------------------------------------------------------------------------------------------
// 12. CLI contract
// ------------------------------------------------------------------------------------------

fn marker_yaml(marker: &Path) -> String {
    format!(
        r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: marker-run
spec:
  pipelineSpec:
    tasks:
      - name: touch
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: touch {}
"##,
        marker.display()
    )
}

#[test]
fn cli_unknown_run_name_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    std::fs::write(dir.path().join("pipeline.yaml"), marker_yaml(&marker)).unwrap();
    // the marker is a host path: steps see it with host paths only
    let run = run_dir(dir.path(), &["--run", "no-such-run", "--sandbox", "host"]);
    assert_eq!(run.code, 2, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(!marker.exists(), "a run was executed although --run named nothing");
    assert!(!run.stdout.contains("RunReport"), "no RunReport for a usage error: {}", run.stdout);
    assert!(run.stderr.contains("no-such-run"), "the error names the run: {}", run.stderr);

    // and the right name runs exactly that run
    let run = run_dir(dir.path(), &["--run", "marker-run", "--sandbox", "host"]);
    let r = report(&run, 0);
    assert_eq!(r["runs"].as_array().unwrap().len(), 1);
    assert!(marker.exists());
}

#[test]
fn cli_invalid_manifest_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    std::fs::write(dir.path().join("good.yaml"), marker_yaml(&marker)).unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: broken
spec:
  tasks:
    - name: a
      runAfter: [missing]
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: "true"
"##,
    )
    .unwrap();
    let run = run_dir(dir.path(), &["--sandbox", "host"]);
    assert_eq!(run.code, 2, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(!marker.exists(), "a run was executed although the directory is invalid");
    let v = run.json();
    assert_eq!(v["kind"], "ValidationReport", "{v:#}");
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().expect("errors");
    assert!(!errors.is_empty());
    assert!(
        errors.iter().any(|e| e["file"].as_str().unwrap_or("").contains("bad.yaml")
            && e["message"].as_str().unwrap_or("").contains("missing")),
        "the error names bad.yaml and the missing task: {v:#}"
    );
}

#[test]
fn cli_json_stdout_is_one_document_and_step_output_goes_to_stderr() {
    let yaml = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: chatty
spec:
  pipelineSpec:
    tasks:
      - name: hello
        taskSpec:
          steps:
            - name: say
              image: alpine
              script: |
                echo MARKER-OUT
                echo MARKER-ERR >&2
"##;
    let (dir, store) = setup(yaml);
    let d = dir.path().to_str().unwrap();
    let run = tenon(&["run", d, "--output", "json"], &store);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    // Run::json parses the whole of stdout as exactly one document
    let v = run.json();
    assert_eq!(v["kind"], "RunReport");
    assert!(run.stdout.trim_start().starts_with('{') && run.stdout.trim_end().ends_with('}'));
    assert!(!run.stdout.contains("MARKER"), "step output leaked to stdout: {}", run.stdout);
    for m in ["MARKER-OUT", "MARKER-ERR"] {
        assert!(
            run.stderr.lines().any(|l| l.starts_with("hello/say") && l.contains(m)),
            "stderr lacks a `hello/say`-prefixed line with {m}:\n{}",
            run.stderr
        );
    }
}

// ------------------------------------------------------------------------------------------
// 13. environment isolation
// ------------------------------------------------------------------------------------------

const ENV: &str = r##"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: env-run
spec:
  taskSpec:
    results:
      - name: secret
      - name: declared
      - name: home
    steps:
      - name: s
        image: alpine
        env:
          - name: DECLARED
            value: yes-declared
        script: |
          printf '%s' "${SECRET_TOKEN-unset}" > $(results.secret.path)
          printf '%s' "${DECLARED-unset}" > $(results.declared.path)
          if [ -n "${HOME-}" ]; then printf set > $(results.home.path); else printf unset > $(results.home.path); fi
"##;

#[test]
fn host_env_is_not_visible_unless_passed() {
    let (dir, store) = setup(ENV);
    let d = dir.path().to_str().unwrap();
    let envs = [("SECRET_TOKEN", "x")];
    let run = tenon_ext(&["run", d, "--output", "json", "-q"], &store, &envs, Duration::from_secs(30));
    let r = report(&run, 0);
    assert_eq!(run0(&r)["results"], json!({"secret": "unset", "declared": "yes-declared", "home": "set"}));

    // a fresh store, so that nothing from the first run can be reused
    let run = tenon_ext(
        &["run", d, "--output", "json", "-q", "--pass-env", "SECRET_TOKEN"],
        &dir.path().join(".store2"),
        &envs,
        Duration::from_secs(30),
    );
    let r = report(&run, 0);
    assert_eq!(run0(&r)["results"], json!({"secret": "x", "declared": "yes-declared", "home": "set"}));
}

// ------------------------------------------------------------------------------------------
// 16. the bundled example
// ------------------------------------------------------------------------------------------

#[test]
fn bundled_example_model_promotion() {
    let store = tempfile::tempdir().unwrap();
    let dir = common::repo_root().join("examples").join("model-promotion");
    let run = tenon(&["run", dir.to_str().unwrap(), "--output", "json", "-q"], store.path());
    let r = report(&run, 0);
    assert_eq!(r["runs"].as_array().unwrap().len(), 1);
    assert_run(&r, "Succeeded", "Succeeded");
    let res = &run0(&r)["results"];
    let acc = res["accuracy"].as_str().unwrap_or_else(|| panic!("accuracy result: {r:#}"));
    let acc: f64 = acc.trim().parse().unwrap_or_else(|e| panic!("accuracy {acc:?}: {e}"));
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
    let digest = res["model-digest"].as_str().unwrap_or_else(|| panic!("model-digest result: {r:#}"));
    assert!(digest.starts_with("sha256:"), "model-digest {digest:?}");
    assert_eq!(digest.len(), "sha256:".len() + 64, "model-digest {digest:?}");
}

// ------------------------------------------------------------------------------------------
// further Tekton semantics in the same areas
// ------------------------------------------------------------------------------------------

fn interrupt_yaml(pidfile: &Path, marker: &Path) -> String {
    format!(
        r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: intr
spec:
  pipelineSpec:
    tasks:
      - name: t
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: |
                sleep 300 &
                printf '%s' "$!" > {pidfile}
                sleep 200
      - name: after
        runAfter: [t]
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: "true"
    finally:
      - name: fin
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: touch {marker}
"##,
        pidfile = pidfile.display(),
        marker = marker.display()
    )
}

/// Ctrl-C cancels the run like `status: Cancelled`: running TaskRuns are cancelled (and
/// their processes killed), nothing new starts, finally does not run.
#[test]
fn interrupt_cancels_the_run_without_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let marker = dir.path().join("finally-ran");
    std::fs::write(dir.path().join("pipeline.yaml"), interrupt_yaml(&pidfile, &marker)).unwrap();
    let d = dir.path().to_str().unwrap();
    let sp = spawn_tenon(&["run", d, "--output", "json", "-q", "--sandbox", "host"], &dir.path().join(".store"), &[]);
    let t0 = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap_or_default().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tenon_pid = sp.child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &tenon_pid]).status();
    let run = sp.wait(Duration::from_secs(15));
    assert_gone(read_pid(&pidfile), "interrupted task");
    let r = report(&run, 1);
    assert_run(&r, "Failed", "Cancelled");
    assert_task(&r, "t", "Cancelled", "TaskRunCancelled");
    assert!(task(&r, "after").get("taskRun").is_none(), "{r:#}");
    assert!(!marker.exists(), "finally ran after a hard cancel");
    assert_eq!(run0(&r)["message"], r#"PipelineRun "intr" was cancelled"#);
}

/// A relative `--store` (resolved against the working directory) works for tasks with
/// workspaces, in both sandbox modes that this machine offers: steps run elsewhere, so the
/// state directory must not be used as a relative path.
#[test]
fn relative_store_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("repo")).unwrap();
    std::fs::write(
        dir.path().join("repo/run.yaml"),
        r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: ws}
spec:
  workspaces: [{name: w, emptyDir: {}}]
  taskSpec:
    workspaces: [{name: w}]
    results: [{name: out}]
    steps:
      - name: s
        image: busybox
        script: |
          echo hi > $(workspaces.w.path)/f
          cat $(workspaces.w.path)/f > $(results.out.path)
"#,
    )
    .unwrap();
    for sandbox in ["host", "auto"] {
        let r: Run = tenon_command(
            &["run", "repo", "--store", "st", "--sandbox", sandbox, "--output", "json", "-q"],
            &dir.path().join("home"),
        )
        .env_remove("TENON_STORE")
        .current_dir(dir.path())
        .output()
        .unwrap()
        .into();
        assert_eq!(r.code, 0, "--sandbox {sandbox}: {}", r.stderr);
        let j = r.json();
        assert_eq!(task(&j, "ws")["results"]["out"], "hi\n", "--sandbox {sandbox}: {j:#}");
        assert!(dir.path().join("st/cache").exists(), "the store is where --store says");
    }
}

// ------------------------------------------------------------------------------------------
// the bwrap sandbox: what a step sees, and no step outlives tenon
// ------------------------------------------------------------------------------------------

/// Under `--sandbox bwrap` a step sees what an image would provide, read-only, and its
/// own pod paths: not /root, not the host's temp directories, not the store; it cannot
/// write to /usr or the host's /tmp; python3 from /usr/bin works.
#[test]
fn bwrap_sandbox_shows_a_step_an_image_not_the_host() {
    let (dir, store) = setup("");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let probe = format!("tenon-sandbox-probe-{}", std::process::id());
    let yaml = format!(
        r##"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: probe
  annotations: {{tenon.dev/repo-workspace: source}}
spec:
  workspaces: [{{name: source, emptyDir: {{}}}}]
  taskSpec:
    workspaces: [{{name: source, readOnly: true}}]
    results: [{{name: seen}}, {{name: py}}]
    steps:
      - name: s
        image: alpine
        script: |
          seen=""
          [ -e /root ] && seen="$seen root"
          cat {outside}/secret.txt >/dev/null 2>&1 && seen="$seen outside-read"
          touch {outside}/planted 2>/dev/null && seen="$seen outside-write"
          ls {store} >/dev/null 2>&1 && seen="$seen store"
          [ -f $(workspaces.source.path)/pipeline.yaml ] || seen="$seen no-repo"
          [ -n "$(ls -A $(workspaces.source.path)/.store)" ] && seen="$seen store-in-repo"
          touch /usr/{probe} 2>/dev/null && seen="$seen usr-write"
          touch /etc/{probe} 2>/dev/null && seen="$seen etc-write"
          [ -e /etc/shadow ] && seen="$seen shadow"
          touch /tmp/{probe} || seen="$seen no-tmp"
          echo data > /tekton/home/f || seen="$seen no-home"
          printf '%s' "${{seen:-none}}" > $(results.seen.path)
      - name: p
        image: python
        script: |
          #!/usr/bin/env python3
          import ssl, sys
          open("$(results.py.path)", "w").write(sys.executable)
"##,
        outside = outside.path().display(),
        store = store.display(),
    );
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let run = run_dir(dir.path(), &["--sandbox", "bwrap"]);
    let r = report(&run, 0);
    assert_eq!(run0(&r)["results"], json!({"seen": "none", "py": "/usr/bin/python3"}), "{r:#}");
    assert!(!outside.path().join("planted").exists());
    assert!(!Path::new("/tmp").join(&probe).exists(), "the step's /tmp is the host's /tmp");
    assert!(!Path::new("/usr").join(&probe).exists());
}

/// TaskRun `t` with one alpine step `s`; `fields` are more fields of the step (YAML).
fn one_step_taskrun(fields: &str) -> String {
    let fields = fields.replace('\n', "\n        ");
    format!(
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: t}}\nspec:\n  taskSpec:\n    steps:\n      - name: s\n        image: alpine\n        {fields}\n"
    )
}

/// A program outside what the sandbox shows is refused with a reason, not run as
/// "exit 1", and a PATH entry the sandbox does not show is skipped.
#[test]
fn bwrap_sandbox_refuses_host_programs_it_does_not_show() {
    let outside = tempfile::tempdir().unwrap();
    let tool = outside.path().join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (dir, _) = setup(&one_step_taskrun(&format!("onError: continue\ncommand: [\"{}\"]", tool.display())));
    let run = run_dir(dir.path(), &["--sandbox", "bwrap"]);
    let r = report(&run, 1);
    let msg = task(&r, "t")["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("the sandbox shows steps only /usr"), "{r:#}");
    assert!(msg.contains("--sandbox host"), "{msg}");
}

/// Live processes whose command line is `sleep <arg>`.
fn sleeps_with(arg: &str) -> Vec<u32> {
    let needle = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == needle.as_bytes()) && sleep_alive(*pid)
        })
        .collect()
}

/// `kill -9` of tenon leaves no step process behind, with host paths and in the bwrap
/// sandbox: the step's own process and a background child of it.
#[test]
fn no_step_outlives_a_killed_tenon() {
    for (sandbox, arg) in [("host", "311.25"), ("bwrap", "311.75")] {
        let (dir, store) = setup(&one_step_taskrun(&format!("script: |\n  sleep {arg} &\n  exec sleep {arg}")));
        let d = dir.path().to_str().unwrap();
        let mut sp = spawn_tenon(&["run", d, "--output", "json", "-q", "--sandbox", sandbox], &store, &[]);
        let t0 = Instant::now();
        while sleeps_with(arg).len() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(20), "--sandbox {sandbox}: the step never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        sp.child.kill().unwrap();
        sp.child.wait().unwrap();
        let t1 = Instant::now();
        while !sleeps_with(arg).is_empty() && t1.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = sleeps_with(arg);
        for pid in &left {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        assert!(left.is_empty(), "--sandbox {sandbox}: step processes {left:?} outlived a killed tenon");
    }
}

/// Without the sandbox (bubblewrap unusable: here a TENON_BWRAP that does not exist),
/// a task that writes to Tekton's pod paths is told why they are missing: once on stderr
/// when such a task starts, and in the failed step's reason, naming the fix.
#[test]
fn pod_paths_without_the_sandbox_say_why() {
    let yaml = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: pods}
spec:
  pipelineSpec:
    tasks:
      - name: a
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: echo stuff > /tekton/home/stuff
      - name: b
        taskSpec:
          steps:
            - name: s
              image: alpine
              workingDir: /workspace/src
              script: "true"
      - name: plain
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: exit 3
"##;
    let (dir, store) = setup(yaml);
    let d = dir.path().to_str().unwrap();
    let run = tenon_ext(
        &["run", d, "--output", "json", "-q"],
        &store,
        &[("TENON_BWRAP", "/nonexistent/bwrap")],
        Duration::from_secs(30),
    );
    let r = report(&run, 1);
    for (t, path) in [("a", "/tekton/home/stuff"), ("b", "/workspace/src")] {
        let msg = task(&r, t)["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(&format!("{path}: Tekton's pod paths exist only in the bwrap sandbox")), "{t}: {msg}");
        assert!(msg.contains("/nonexistent/bwrap") && msg.contains("apt-get install bubblewrap"), "{t}: {msg}");
    }
    let plain = task(&r, "plain")["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(plain, "\"step-s\" exited with code 3", "a task without pod paths gets no hint");
    let warnings = run.stderr.lines().filter(|l| l.starts_with("! ") && l.contains("Tekton's pod paths exist only"));
    assert_eq!(warnings.count(), 1, "said once: {}", run.stderr);
}
