//! Behaviour of `tenon run` against Tekton v1 semantics, end to end: every test writes a
//! small inline manifest set into a temp dir, runs the real binary and asserts on the
//! JSON RunReport (`--output json -q`).
//!
//! Expected values follow Tekton (see `shared/design/tekton-semantics.md`), not whatever
//! tenon happens to do: a failing test here is a behaviour bug in tenon.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_yaml, task, tenon, tenon_command, Run};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// The first run of a report.
fn run0(report: &Value) -> &Value {
    &report["runs"][0]
}

/// Names of all task entries of the first run, in report order.
fn task_names(report: &Value) -> Vec<String> {
    run0(report)["tasks"]
        .as_array()
        .map(|ts| ts.iter().map(|t| t["name"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number of ms: {v}"))
}

/// Assert a task's status and reason, printing the whole report on mismatch.
#[track_caller]
fn assert_task(report: &Value, name: &str, status: &str, reason: &str) {
    let t = task(report, name);
    assert_eq!(
        (t["status"].as_str(), t["reason"].as_str()),
        (Some(status), Some(reason)),
        "task {name}: status/reason\nreport: {report:#}"
    );
}

/// Assert the first run's status and reason.
#[track_caller]
fn assert_run(report: &Value, status: &str, reason: &str) {
    let r = run0(report);
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some(status), Some(reason)),
        "run status/reason\nreport: {report:#}"
    );
}

/// Parse the report and check the exit code that goes with it.
#[track_caller]
fn report(run: &Run, code: i32) -> Value {
    let v = run.json();
    assert_eq!(run.code, code, "exit code\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    v
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
// 1. DAG order, result passing, verbatim results, pipeline results
// ------------------------------------------------------------------------------------------

const CHAIN: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: chain
spec:
  workspaces:
    - name: shared
  results:
    - name: greeting
      value: $(tasks.b.results.y-out)
    - name: raw
      value: $(tasks.a.results.x)
    - name: order
      value: $(tasks.c.results.order)
    - name: joined
      value: "$(tasks.a.results.x)+$(tasks.c.results.order)"
  tasks:
    # declared first on purpose: order must come from the DAG, not from the file
    - name: c
      runAfter: [b]
      workspaces:
        - name: shared
      taskSpec:
        workspaces:
          - name: shared
        results:
          - name: order
        steps:
          - name: s
            image: alpine
            script: |
              echo c >> $(workspaces.shared.path)/order
              tr '\n' ' ' < $(workspaces.shared.path)/order > $(results.order.path)
    - name: b
      params:
        - name: in
          value: $(tasks.a.results.x)
      workspaces:
        - name: shared
      taskSpec:
        params:
          - name: in
        workspaces:
          - name: shared
        results:
          - name: y-out
        steps:
          - name: s
            image: alpine
            script: |
              echo b >> $(workspaces.shared.path)/order
              printf '%s|' "$(params.in)" > $(results.y-out.path)
    - name: a
      workspaces:
        - name: shared
      taskSpec:
        workspaces:
          - name: shared
        results:
          - name: x
        steps:
          - name: s
            image: alpine
            script: |
              sleep 0.2
              echo from-a-stdout
              echo a >> $(workspaces.shared.path)/order
              echo hello > $(results.x.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: chain-run
spec:
  pipelineRef:
    name: chain
  workspaces:
    - name: shared
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 1Mi
"##;

#[test]
fn dag_order_result_passing_and_pipeline_results() {
    let (run, _dir) = run_yaml(CHAIN, &[]);
    let r = report(&run, 0);
    assert_eq!(r["apiVersion"], "tenon.dev/v1alpha1");
    assert_eq!(r["kind"], "RunReport");
    assert_eq!(r["runs"].as_array().unwrap().len(), 1);
    let pr = run0(&r);
    assert_eq!(pr["name"], "chain-run");
    assert_eq!(pr["kind"], "PipelineRun");
    assert_eq!(pr["pipeline"], "chain");
    assert_run(&r, "Succeeded", "Succeeded");

    for t in ["a", "b", "c"] {
        assert_task(&r, t, "Succeeded", "Succeeded");
        assert_eq!(task(&r, t)["attempts"], 1);
        assert_eq!(task(&r, t)["taskRun"], format!("chain-run-{t}"));
    }
    // the volumeClaimTemplate workspace is shared by the run's tasks, and each task
    // appended its name after its parents finished
    assert_eq!(task(&r, "c")["results"], json!({"order": "a b c "}));
    // results are verbatim: `echo` keeps its newline
    assert_eq!(task(&r, "a")["results"], json!({"x": "hello\n"}));
    assert_eq!(task(&r, "b")["results"], json!({"y-out": "hello\n|"}));
    assert_eq!(
        pr["results"],
        json!({
            "greeting": "hello\n|",
            "raw": "hello\n",
            "order": "a b c ",
            "joined": "hello\n+a b c ",
        })
    );

    let step = &task(&r, "a")["steps"][0];
    assert_eq!(step["name"], "s");
    assert_eq!(step["terminationReason"], "Completed");
    assert_eq!(step["exitCode"], 0);
    let log = step["log"].as_str().expect("step log path");
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("log {log}: {e}"));
    assert!(text.contains("from-a-stdout"), "step log {log} lacks the step's stdout: {text:?}");
    // with -q, step output is not streamed
    assert!(!run.stderr.contains("from-a-stdout"), "-q still streamed step output: {}", run.stderr);

    assert_eq!(pr["message"], "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0");
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
// 3. when expressions and skip propagation
// ------------------------------------------------------------------------------------------

const WHEN: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: gated
spec:
  params:
    - name: flag
      default: "no"
  tasks:
    - name: gate
      when:
        - input: $(params.flag)
          operator: in
          values: ["yes"]
      taskSpec:
        results:
          - name: r
        steps:
          - name: s
            image: alpine
            script: printf ran > $(results.r.path)
    - name: after-only
      runAfter: [gate]
      taskSpec:
        results:
          - name: r
        steps:
          - name: s
            image: alpine
            script: printf ran > $(results.r.path)
    - name: consumer
      params:
        - name: v
          value: $(tasks.gate.results.r)
      taskSpec:
        params:
          - name: v
        steps:
          - name: s
            image: alpine
            script: echo "$(params.v)"
    - name: grandchild
      runAfter: [consumer]
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: echo grandchild
    - name: notin-true
      when:
        - input: $(params.flag)
          operator: notin
          values: ["yes", "maybe"]
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: "true"
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: gated-run
spec:
  pipelineRef:
    name: gated
"##;

#[test]
fn when_false_skips_and_propagates_like_tekton() {
    let (run, _dir) = run_yaml(WHEN, &[]);
    let r = report(&run, 0);
    assert_task(&r, "gate", "Skipped", "When Expressions evaluated to false");
    // runAfter-only children of a when-skipped task still run
    assert_task(&r, "after-only", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "after-only")["results"], json!({"r": "ran"}));
    // a task consuming the skipped task's result is skipped
    assert_task(&r, "consumer", "Skipped", "Results were missing");
    // and that skip (not a when skip) cascades through runAfter
    assert_task(&r, "grandchild", "Skipped", "Parent Tasks were skipped");
    assert_task(&r, "notin-true", "Succeeded", "Succeeded");
    for t in ["gate", "consumer", "grandchild"] {
        assert!(task(&r, t).get("taskRun").is_none(), "skipped task {t} must have no TaskRun: {r:#}");
        assert_eq!(task(&r, t)["attempts"], 0, "skipped task {t} made attempts");
    }
    // something was skipped and nothing failed
    assert_run(&r, "Succeeded", "Completed");
    assert_eq!(run0(&r)["message"], "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 3");
}

#[test]
fn when_true_runs_the_whole_chain() {
    let (run, _dir) = run_yaml(WHEN, &["--param", "flag=yes"]);
    let r = report(&run, 0);
    for t in ["gate", "after-only", "consumer", "grandchild"] {
        assert_task(&r, t, "Succeeded", "Succeeded");
    }
    assert_task(&r, "notin-true", "Skipped", "When Expressions evaluated to false");
    assert_run(&r, "Succeeded", "Completed");
}

// ------------------------------------------------------------------------------------------
// 4. failure: stopping, downstream skipped, finally sees statuses
// ------------------------------------------------------------------------------------------

const FAILING: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: failing
spec:
  tasks:
    - name: ok
      taskSpec:
        results:
          - name: r
        steps:
          - name: s
            image: alpine
            script: |
              sleep 0.5
              printf finished > $(results.r.path)
    - name: bad
      taskSpec:
        results:
          - name: early
        steps:
          - name: boom
            image: alpine
            script: |
              printf written-before-failing > $(results.early.path)
              echo boom
              exit 1
          - name: never
            image: alpine
            script: echo never
    - name: down
      runAfter: [bad]
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: echo should-not-run
  finally:
    - name: fin
      params:
        - name: agg
          value: $(tasks.status)
        - name: bad
          value: $(tasks.bad.status)
        - name: ok
          value: $(tasks.ok.status)
        - name: down
          value: $(tasks.down.status)
      taskSpec:
        params:
          - name: agg
          - name: bad
          - name: ok
          - name: down
        results:
          - name: seen
        steps:
          - name: s
            image: alpine
            script: |
              printf '%s %s %s %s' "$(params.agg)" "$(params.bad)" "$(params.ok)" "$(params.down)" > $(results.seen.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: failing-run
spec:
  pipelineRef:
    name: failing
"##;

#[test]
fn failing_task_stops_the_run_and_finally_still_runs() {
    let (run, _dir) = run_yaml(FAILING, &["--parallel", "4"]);
    let r = report(&run, 1);
    assert_run(&r, "Failed", "Failed");
    // `ok` was already running when `bad` failed: a stopping run lets it finish
    assert_task(&r, "ok", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "ok")["results"], json!({"r": "finished"}));
    assert_task(&r, "bad", "Failed", "Failed");
    assert_task(&r, "down", "Skipped", "PipelineRun was stopping");
    assert!(task(&r, "down").get("taskRun").is_none());

    let bad = task(&r, "bad");
    assert_eq!(bad["attempts"], 1);
    assert_eq!(bad["steps"][0]["name"], "boom");
    assert_eq!(bad["steps"][0]["exitCode"], 1);
    assert_eq!(bad["steps"][0]["terminationReason"], "Error");
    // later steps of a failed TaskRun do not run
    assert_eq!(bad["steps"][1]["name"], "never");
    assert_eq!(bad["steps"][1]["terminationReason"], "Skipped");
    // a result written before the failure is still collected
    assert_eq!(bad["results"], json!({"early": "written-before-failing"}));

    let fin = task(&r, "fin");
    assert_eq!(fin["finally"], true, "fin is a finally task: {r:#}");
    assert_task(&r, "fin", "Succeeded", "Succeeded");
    assert_eq!(fin["results"], json!({"seen": "Failed Failed Succeeded None"}));
    assert!(task(&r, "ok").get("finally").is_none(), "`finally` is only set on finally tasks");

    assert_eq!(run0(&r)["message"], "Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 1");
}

// ------------------------------------------------------------------------------------------
// 5. retries
// ------------------------------------------------------------------------------------------

const RETRIES: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: retrying
spec:
  pipelineSpec:
    tasks:
      - name: flaky
        retries: 1
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: |
                if [ "$(context.task.retry-count)" = "0" ]; then
                  echo first attempt fails
                  exit 1
                fi
                printf 'ok on retry %s' "$(context.task.retry-count)" > $(results.r.path)
      - name: always
        runAfter: [flaky]
        retries: 2
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: |
                echo "attempt $(context.task.retry-count)"
                exit 1
"##;

#[test]
fn retries_rerun_failed_attempts() {
    let (run, _dir) = run_yaml(RETRIES, &[]);
    let r = report(&run, 1);
    assert_task(&r, "flaky", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "flaky")["attempts"], 2);
    assert_eq!(task(&r, "flaky")["results"], json!({"r": "ok on retry 1"}));
    // retries reuse the TaskRun name
    assert_eq!(task(&r, "flaky")["taskRun"], "retrying-flaky");
    assert_task(&r, "always", "Failed", "Failed");
    assert_eq!(task(&r, "always")["attempts"], 3);
    assert_run(&r, "Failed", "Failed");
    assert_eq!(run0(&r)["message"], "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0");
}

const RETRY_REF: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: flaky-task
spec:
  results:
    - name: r
  steps:
    - name: s
      image: alpine
      script: |
        if [ "$(context.task.retry-count)" = "0" ]; then exit 1; fi
        printf 'retry %s' "$(context.task.retry-count)" > $(results.r.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: retry-ref
spec:
  pipelineSpec:
    tasks:
      - name: flaky
        retries: 2
        taskRef:
          name: flaky-task
"##;

/// `$(context.task.retry-count)` is substituted for referenced Tasks too (the TaskRun
/// reconciler's ApplyContexts does it for every TaskSpec).
#[test]
fn retry_count_in_referenced_task() {
    let (run, _dir) = run_yaml(RETRY_REF, &[]);
    let r = report(&run, 0);
    assert_task(&r, "flaky", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "flaky")["attempts"], 2);
    assert_eq!(task(&r, "flaky")["results"], json!({"r": "retry 1"}));
}

// ------------------------------------------------------------------------------------------
// 6. timeouts
// ------------------------------------------------------------------------------------------

const TASK_TIMEOUT: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: to-run
spec:
  pipelineSpec:
    tasks:
      - name: slow
        timeout: 1s
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: sleep 5
            - name: after
              image: alpine
              script: echo never
"##;

#[test]
fn pipeline_task_timeout() {
    let t0 = Instant::now();
    let (run, _dir) = run_yaml(TASK_TIMEOUT, &[]);
    let wall = t0.elapsed();
    let r = report(&run, 1);
    assert_task(&r, "slow", "TimedOut", "TaskRunTimeout");
    assert_eq!(task(&r, "slow")["attempts"], 1);
    assert_run(&r, "Failed", "Failed");
    let d = ms(&run0(&r)["durationMs"]);
    assert!(d >= 1000 && d < 3000, "a 1s timeout run took {d} ms");
    assert!(wall < Duration::from_secs(4), "tenon took {wall:?} for a 1s timeout");
    let steps = task(&r, "slow")["steps"].as_array().cloned().unwrap_or_default();
    assert_ne!(steps.first().map(|s| s["terminationReason"].clone()), Some(json!("Completed")), "{r:#}");
    assert_eq!(task(&r, "slow")["message"], r#"TaskRun "to-run-slow" failed to finish within "1s""#);
}

const PR_TIMEOUTS: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: budget
spec:
  timeouts:
    pipeline: 10s
    tasks: 1s
  pipelineSpec:
    tasks:
      - name: long
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: sleep 5
      - name: next
        runAfter: [long]
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: echo never
    finally:
      - name: cleanup
        params:
          - name: st
            value: $(tasks.long.status)
          - name: why
            value: $(tasks.long.reason)
          - name: agg
            value: $(tasks.status)
        taskSpec:
          params:
            - name: st
            - name: why
            - name: agg
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf 'cleaned %s %s %s' "$(params.st)" "$(params.why)" "$(params.agg)" > $(results.r.path)
"##;

#[test]
fn pipelinerun_tasks_timeout_still_runs_finally() {
    let t0 = Instant::now();
    let (run, _dir) = run_yaml(PR_TIMEOUTS, &[]);
    let wall = t0.elapsed();
    let r = report(&run, 1);
    assert_run(&r, "Failed", "PipelineRunTimeout");
    assert_task(&r, "cleanup", "Succeeded", "Succeeded");
    // a child cancelled by the tasks timeout counts as failed for $(tasks.*.status)
    assert_eq!(task(&r, "cleanup")["results"], json!({"r": "cleaned Failed TaskRunCancelled Failed"}));
    assert_eq!(task(&r, "cleanup")["finally"], true);
    let long = task(&r, "long");
    assert!(
        long["status"] == "Cancelled" || long["status"] == "TimedOut",
        "long should be stopped by the tasks timeout: {r:#}"
    );
    assert_task(&r, "next", "Skipped", "PipelineRun Tasks timeout has been reached");
    let d = ms(&run0(&r)["durationMs"]);
    assert!(d >= 1000 && d < 3500, "tasks timeout 1s, run took {d} ms");
    assert!(wall < Duration::from_secs(4), "tenon took {wall:?}");
    // Tekton cancels the running child with "TaskRun cancelled as the PipelineRun it
    // belongs to has timed out." and its condition reason is TaskRunCancelled.
    assert_eq!(long["reason"], "TaskRunCancelled", "{r:#}");
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
// 8. onError
// ------------------------------------------------------------------------------------------

const TASK_ON_ERROR: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: tolerant
spec:
  pipelineSpec:
    tasks:
      - name: flaky
        onError: continue
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: exit 1
      - name: after
        runAfter: [flaky]
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: "true"
    finally:
      - name: fin
        params:
          - name: st
            value: $(tasks.flaky.status)
          - name: why
            value: $(tasks.flaky.reason)
        taskSpec:
          params:
            - name: st
            - name: why
          results:
            - name: seen
          steps:
            - name: s
              image: alpine
              script: printf '%s %s' "$(params.st)" "$(params.why)" > $(results.seen.path)
"##;

#[test]
fn pipeline_task_on_error_continue() {
    let (run, _dir) = run_yaml(TASK_ON_ERROR, &[]);
    let r = report(&run, 0);
    assert_task(&r, "flaky", "Failed", "FailureIgnored");
    assert_task(&r, "after", "Succeeded", "Succeeded");
    assert_task(&r, "fin", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "fin")["results"], json!({"seen": "Failed FailureIgnored"}));
    assert_run(&r, "Succeeded", "Succeeded");
}

const STEP_ON_ERROR: &str = r##"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: step-tolerant
spec:
  taskSpec:
    results:
      - name: r
    steps:
      - name: fails
        image: alpine
        onError: continue
        script: exit 3
      - name: next
        image: alpine
        script: printf reached > $(results.r.path)
"##;

#[test]
fn step_on_error_continue() {
    let (run, _dir) = run_yaml(STEP_ON_ERROR, &[]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    assert_eq!(run0(&r)["kind"], "TaskRun");
    assert_eq!(run0(&r)["results"], json!({"r": "reached"}));
    let t = &run0(&r)["tasks"][0];
    assert_eq!(t["status"], "Succeeded", "{r:#}");
    assert_eq!(t["steps"][0]["name"], "fails");
    assert_eq!(t["steps"][0]["terminationReason"], "Continued");
    assert_eq!(t["steps"][0]["exitCode"], 3);
    assert_eq!(t["steps"][1]["name"], "next");
    assert_eq!(t["steps"][1]["terminationReason"], "Completed");
    assert_eq!(t["steps"][1]["exitCode"], 0);
}

const STEP_ON_ERROR_START_FAILURE: &str = r##"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: cannot-start
spec:
  taskSpec:
    steps:
      - name: missing-interpreter
        image: alpine
        onError: continue
        script: |
          #!/nonexistent/interpreter
          echo unreachable
      - name: next
        image: alpine
        script: echo next
"##;

/// onError: continue covers a non-zero exit only; a step that cannot start still fails.
#[test]
fn step_on_error_continue_does_not_cover_start_failure() {
    let (run, _dir) = run_yaml(STEP_ON_ERROR_START_FAILURE, &[]);
    let r = report(&run, 1);
    assert_run(&r, "Failed", "Failed");
    let t = &run0(&r)["tasks"][0];
    assert_eq!(t["status"], "Failed", "{r:#}");
    assert_ne!(t["steps"][0]["terminationReason"], "Continued", "{r:#}");
}

// ------------------------------------------------------------------------------------------
// 9. matrix
// ------------------------------------------------------------------------------------------

const MATRIX: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: mx
spec:
  pipelineSpec:
    results:
      - name: all
        type: array
        value: $(tasks.t.results.r[*])
    tasks:
      - name: t
        matrix:
          params:
            - name: os
              value: [linux, mac]
            - name: arch
              value: [amd64, arm64]
        taskSpec:
          params:
            - name: os
            - name: arch
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf '%s/%s' "$(params.os)" "$(params.arch)" > $(results.r.path)
      - name: collect
        params:
          - name: all
            value: $(tasks.t.results.r[*])
        taskSpec:
          params:
            - name: all
              type: array
          results:
            - name: joined
            - name: second
          steps:
            - name: s
              image: alpine
              args: ["$(params.all[*])"]
              script: |
                printf '%s,' "$@" > $(results.joined.path)
                printf '%s' "$(params.all[1])" > $(results.second.path)
"##;

#[test]
fn matrix_fan_out_order_and_aggregation() {
    let (run, _dir) = run_yaml(MATRIX, &[]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    // the first matrix param varies fastest
    let want = ["linux/amd64", "mac/amd64", "linux/arm64", "mac/arm64"];
    for (i, combo) in want.iter().enumerate() {
        let name = format!("t[{i}]");
        assert_task(&r, &name, "Succeeded", "Succeeded");
        assert_eq!(task(&r, &name)["results"], json!({"r": combo}), "{name}");
        assert_eq!(task(&r, &name)["taskRun"], format!("mx-t-{i}"), "{name}");
    }
    assert!(!task_names(&r).contains(&"t[4]".to_string()), "only 4 combinations: {:?}", task_names(&r));
    assert_task(&r, "collect", "Succeeded", "Succeeded");
    assert_eq!(
        task(&r, "collect")["results"],
        json!({"joined": "linux/amd64,mac/amd64,linux/arm64,mac/arm64,", "second": "mac/amd64"})
    );
    assert_eq!(run0(&r)["results"], json!({"all": want}));
}

const MATRIX_INCLUDE: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: mxi
spec:
  pipelineSpec:
    tasks:
      - name: t
        matrix:
          params:
            - name: os
              value: [linux, mac]
          include:
            - name: mac-extra
              params:
                - name: os
                  value: mac
                - name: flag
                  value: "-x"
            - name: windows
              params:
                - name: os
                  value: windows
                - name: flag
                  value: "-w"
        taskSpec:
          params:
            - name: os
            - name: flag
              default: none
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf '%s:%s' "$(params.os)" "$(params.flag)" > $(results.r.path)
"##;

#[test]
fn matrix_include_adds_params_and_combinations() {
    let (run, _dir) = run_yaml(MATRIX_INCLUDE, &[]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    // include entry sharing os=mac merges into that combination; an entry matching
    // nothing is appended as a new combination
    let want = ["linux:none", "mac:-x", "windows:-w"];
    for (i, combo) in want.iter().enumerate() {
        let name = format!("t[{i}]");
        assert_task(&r, &name, "Succeeded", "Succeeded");
        assert_eq!(task(&r, &name)["results"], json!({"r": combo}), "{name}");
    }
    assert!(!task_names(&r).contains(&"t[3]".to_string()), "3 combinations: {:?}", task_names(&r));
}

const MATRIX_EMPTY: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: mxe
spec:
  params:
    - name: oses
      type: array
  tasks:
    - name: t
      matrix:
        params:
          - name: os
            value: $(params.oses[*])
      taskSpec:
        params:
          - name: os
        steps:
          - name: s
            image: alpine
            script: echo "$(params.os)"
    - name: other
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: "true"
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: mxe-run
spec:
  pipelineRef:
    name: mxe
  params:
    - name: oses
      value: []
"##;

#[test]
fn matrix_with_empty_array_is_skipped() {
    let (run, _dir) = run_yaml(MATRIX_EMPTY, &[]);
    let r = report(&run, 0);
    assert_task(&r, "t", "Skipped", "Matrix Parameters have an empty array");
    assert_task(&r, "other", "Succeeded", "Succeeded");
    assert!(!task_names(&r).contains(&"t[0]".to_string()), "{:?}", task_names(&r));
    assert_run(&r, "Succeeded", "Completed");
}

// ------------------------------------------------------------------------------------------
// 10. array and object params and results
// ------------------------------------------------------------------------------------------

const ARRAYS_OBJECTS: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: shapes
spec:
  params:
    - name: arr
      type: array
      default: [a, "b c", d]
    - name: obj
      type: object
      properties:
        k1: {type: string}
        k2: {type: string}
      default:
        k1: v1
        k2: v2
  results:
    - name: list
      type: array
      value: $(tasks.produce.results.list[*])
    - name: port
      value: $(tasks.produce.results.cfg.port)
  tasks:
    - name: use-params
      params:
        - name: arr
          value: $(params.arr[*])
        - name: obj
          value: $(params.obj[*])
      taskSpec:
        params:
          - name: arr
            type: array
          - name: obj
            type: object
            properties:
              k1: {type: string}
              k2: {type: string}
        results:
          - name: spliced
          - name: wrapped
          - name: second
          - name: key
        steps:
          - name: splice
            image: alpine
            args: ["$(params.arr[*])"]
            script: |
              printf '<%s>' "$@" > $(results.spliced.path)
          - name: wrap
            image: alpine
            command: [sh, -c, 'printf "<%s>" "$@" > "$0"']
            args: ["$(results.wrapped.path)", "x", "$(params.arr[*])", "y"]
          - name: index
            image: alpine
            script: |
              printf '%s' "$(params.arr[1])" > $(results.second.path)
              printf '%s+%s' "$(params.obj.k1)" "$(params.obj.k2)" > $(results.key.path)
    - name: produce
      taskSpec:
        results:
          - name: list
            type: array
          - name: cfg
            type: object
            properties:
              host: {type: string}
              port: {type: string}
        steps:
          - name: s
            image: alpine
            script: |
              printf '["x","y z"]' > $(results.list.path)
              printf '{"host":"h","port":"80"}' > $(results.cfg.path)
    - name: consume
      params:
        - name: items
          value: $(tasks.produce.results.list[*])
        - name: first
          value: $(tasks.produce.results.list[0])
        - name: host
          value: $(tasks.produce.results.cfg.host)
      taskSpec:
        params:
          - name: items
            type: array
          - name: first
          - name: host
        results:
          - name: out
        steps:
          - name: s
            image: alpine
            args: ["$(params.items[*])"]
            script: |
              printf '%s|' "$#" "$@" "$(params.first)" "$(params.host)" > $(results.out.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: shapes-run
spec:
  pipelineRef:
    name: shapes
  params:
    - name: obj
      value:
        k2: override
"##;

#[test]
fn array_and_object_params_and_results() {
    let (run, _dir) = run_yaml(ARRAYS_OBJECTS, &[]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    assert_eq!(
        task(&r, "use-params")["results"],
        json!({
            "spliced": "<a><b c><d>",
            "wrapped": "<x><a><b c><d><y>",
            "second": "b c",
            // object keys not supplied by the run come from the default, key by key
            "key": "v1+override",
        })
    );
    assert_eq!(task(&r, "produce")["results"], json!({"list": ["x", "y z"], "cfg": {"host": "h", "port": "80"}}));
    assert_eq!(task(&r, "consume")["results"], json!({"out": "2|x|y z|x|h|"}));
    assert_eq!(run0(&r)["results"], json!({"list": ["x", "y z"], "port": "80"}));
}

// ------------------------------------------------------------------------------------------
// 11. embedded specs and param propagation
// ------------------------------------------------------------------------------------------

const EMBEDDED: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: emb
spec:
  params:
    - name: p1
      value: from-run
    - name: p2
      value: from-run
    - name: p5
      value: only-in-run
  pipelineSpec:
    params:
      - name: p1
      - name: p2
      - name: p3
        default: from-pipeline-default
      - name: p5
    results:
      - name: all
        value: $(tasks.t.results.all)
    tasks:
      - name: t
        params:
          - name: p1
            value: from-task
        taskSpec:
          params:
            - name: p1
              default: embedded-default
            - name: p2
              default: embedded-default
            - name: p3
              default: embedded-default
            - name: p4
              default: embedded-default
          results:
            - name: all
            - name: ctx
          steps:
            - name: s
              image: alpine
              script: |
                printf '%s %s %s %s %s' "$(params.p1)" "$(params.p2)" "$(params.p3)" "$(params.p4)" "$(params.p5)" > $(results.all.path)
                printf '%s %s %s %s' "$(context.pipelineRun.name)" "$(context.pipeline.name)" "$(context.taskRun.name)" "$(context.task.name)" > $(results.ctx.path)
"##;

#[test]
fn embedded_specs_and_param_propagation_precedence() {
    let (run, _dir) = run_yaml(EMBEDDED, &[]);
    let r = report(&run, 0);
    assert_run(&r, "Succeeded", "Succeeded");
    let pr = run0(&r);
    assert_eq!(pr["name"], "emb");
    assert!(pr["pipeline"].is_null(), "embedded pipelineSpec has no Pipeline name: {r:#}");
    // pipeline-task param > pipeline (run) value > pipeline default > embedded default;
    // pipeline params are visible in the embedded taskSpec without being declared
    let want = "from-task from-run from-pipeline-default embedded-default only-in-run";
    assert_eq!(task(&r, "t")["results"]["all"], want, "{r:#}");
    assert_eq!(pr["results"], json!({"all": want}));
    // context.pipeline.name is the PipelineRun name for an embedded pipelineSpec and
    // context.task.name the TaskRun name for an embedded taskSpec
    assert_eq!(task(&r, "t")["results"]["ctx"], "emb emb emb-t emb-t", "{r:#}");
}

// ------------------------------------------------------------------------------------------
// 12. CLI contract
// ------------------------------------------------------------------------------------------

const PARAMS: &str = r##"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: echo
spec:
  params:
    - name: msg
      default: from-default
    - name: words
      type: array
      default: [one]
  results:
    - name: msg
      value: $(tasks.say.results.msg)
  tasks:
    - name: say
      params:
        - name: msg
          value: $(params.msg)
        - name: words
          value: $(params.words[*])
      taskSpec:
        params:
          - name: msg
          - name: words
            type: array
        results:
          - name: msg
        steps:
          - name: s
            image: alpine
            args: ["$(params.words[*])"]
            script: |
              printf '%s' "$(params.msg)" > $(results.msg.path)
              printf '%s;' "$@" >> $(results.msg.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: echo-run
spec:
  pipelineRef:
    name: echo
  params:
    - name: msg
      value: from-run
"##;

#[test]
fn cli_param_overrides_run_params() {
    let (run, _dir) = run_yaml(PARAMS, &[]);
    let r = report(&run, 0);
    assert_eq!(run0(&r)["results"], json!({"msg": "from-runone;"}));

    let (run, _dir) = run_yaml(PARAMS, &["--param", "msg=from-cli", "--param", r#"words=["a b","c"]"#]);
    let r = report(&run, 0);
    assert_eq!(task(&r, "say")["results"], json!({"msg": "from-clia b;c;"}));
    assert_eq!(run0(&r)["results"], json!({"msg": "from-clia b;c;"}));
}

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
// 14. result size cap
// ------------------------------------------------------------------------------------------

const BIG_RESULT: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: big
spec:
  pipelineSpec:
    tasks:
      - name: t
        taskSpec:
          results:
            - name: blob
          steps:
            - name: s
              image: alpine
              script: |
                head -c 5000 /dev/zero | tr '\0' a > $(results.blob.path)
"##;

#[test]
fn result_size_cap() {
    let (run, _dir) = run_yaml(BIG_RESULT, &[]);
    let r = report(&run, 1);
    assert_task(&r, "t", "Failed", "TaskRunResultLargerThanAllowedLimit");
    assert_run(&r, "Failed", "Failed");

    let (run, _dir) = run_yaml(BIG_RESULT, &["--max-result-size", "8192"]);
    let r = report(&run, 0);
    assert_task(&r, "t", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "t")["results"]["blob"], "a".repeat(5000));
}

// ------------------------------------------------------------------------------------------
// 15. standalone TaskRun
// ------------------------------------------------------------------------------------------

const TASKRUN: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: greet
spec:
  params:
    - name: who
    - name: greeting
      default: hello
  workspaces:
    - name: scratch
  results:
    - name: out
    - name: names
  steps:
    - name: write
      image: alpine
      script: |
        printf '%s, %s' "$(params.greeting)" "$(params.who)" > $(workspaces.scratch.path)/msg
    - name: read
      image: alpine
      script: |
        cat $(workspaces.scratch.path)/msg > $(results.out.path)
        printf '%s %s' "$(context.task.name)" "$(context.taskRun.name)" > $(results.names.path)
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: greet-run
spec:
  taskRef:
    name: greet
  params:
    - name: who
      value: world
  workspaces:
    - name: scratch
      emptyDir: {}
"##;

#[test]
fn standalone_taskrun_with_taskref_params_and_emptydir() {
    let (run, _dir) = run_yaml(TASKRUN, &[]);
    let r = report(&run, 0);
    let tr = run0(&r);
    assert_eq!(tr["name"], "greet-run");
    assert_eq!(tr["kind"], "TaskRun");
    assert!(tr["pipeline"].is_null());
    assert_run(&r, "Succeeded", "Succeeded");
    assert_eq!(tr["results"], json!({"out": "hello, world", "names": "greet greet-run"}));
    let t = &tr["tasks"][0];
    assert_eq!(t["status"], "Succeeded");
    assert_eq!(t["attempts"], 1);
    let steps: Vec<_> = t["steps"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(steps, vec![json!("write"), json!("read")]);
    assert_eq!(tr["message"], "All Steps have completed executing");
}

// ------------------------------------------------------------------------------------------
// 15b. substitution phases: single pass each, in Tekton's order
// ------------------------------------------------------------------------------------------

// Each step writes a param's substituted text verbatim (single quotes keep the shell away)
// into a result. The values carry references: the param phase must insert them as data,
// while the later phases (context, paths, workspaces, pipeline results) still apply.
const TASKRUN_INJECTION: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: echo-params
spec:
  params:
    - name: secret
    - name: inj
    - name: dq
    - name: ctx
    - name: retry
    - name: res
    - name: wsp
    - name: def
      default: "$(params.inj)+d"
    - name: arr
      type: array
  workspaces:
    - name: w
  results: [{name: inj}, {name: dq}, {name: ctx}, {name: retry}, {name: res}, {name: wsp}, {name: def}, {name: arr}]
  steps:
    - name: s
      image: alpine
      script: |
        printf '%s' '$(params.inj)' > $(results.inj.path)
        printf '%s' '$(params.dq)' > $(results.dq.path)
        printf '%s' '$(params.ctx)' > $(results.ctx.path)
        printf '%s' '$(params.retry)' > $(results.retry.path)
        printf '%s' '$(params.res)' > $(results.res.path)
        printf '%s' '$(params.wsp)' > $(results.wsp.path)
        printf '%s' '$(params.def)' > $(results.def.path)
    - name: a
      image: alpine
      command: ["sh", "-c", 'printf "%s|" "$@" > "$0"', "$(results.arr.path)", "$(params.arr[*])"]
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: tr-inj
spec:
  taskRef:
    name: echo-params
  params:
    - name: secret
      value: S3CRET
    - name: inj
      value: harmless
    - name: dq
      value: '$(params["secret"]) $(inputs.params.secret)'
    - name: ctx
      value: "$(context.taskRun.name)/$(context.task.name)"
    - name: retry
      value: "$(context.task.retry-count)"
    - name: res
      value: "$(results.res.path)"
    - name: wsp
      value: "$(workspaces.w.bound):$(workspaces.w.path)"
    - name: arr
      value: ["$(params.secret)", "$(context.taskRun.name)"]
  workspaces:
    - name: w
      emptyDir: {}
"##;

#[test]
fn taskrun_param_values_are_substituted_once_per_phase() {
    // `--param` is how a caller (or a webhook) supplies a value: it must not read `secret`
    let (run, _dir) = run_yaml(TASKRUN_INJECTION, &["--param", "inj=$(params.secret)"]);
    let r = report(&run, 0);
    let res = &run0(&r)["results"];
    let text = |k: &str| res[k].as_str().unwrap_or_else(|| panic!("result {k}: {r:#}")).to_string();
    let rows: [(&str, &str); 6] = [
        // the param phase inserts a value as data, in every spelling
        ("inj", "$(params.secret)"),
        ("dq", "$(params[\"secret\"]) $(inputs.params.secret)"),
        // a default gets the value it names, which is not scanned again
        ("def", "$(params.secret)+d"),
        // array splicing: the spliced elements go through the context phase, not the param one
        ("arr", "$(params.secret)|tr-inj|"),
        // the context phase comes after the param phase, so it applies to inserted text
        ("ctx", "tr-inj/echo-params"),
        ("retry", "0"),
    ];
    for (k, want) in rows {
        assert_eq!(text(k), want, "result {k}\nreport: {r:#}");
    }
    // so do the result-path and workspace phases
    let path = text("res");
    assert!(path.ends_with("/results/res") && !path.contains("$("), "res: {path:?}");
    let wsp = text("wsp");
    assert!(wsp.starts_with("true:/") && !wsp.contains("$("), "wsp: {wsp:?}");
    assert!(!r.to_string().contains("S3CRET|") && !text("inj").contains("S3CRET"), "{r:#}");
}

const PIPELINE_INJECTION: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: show
spec:
  params:
    - name: v
  results:
    - name: out
  steps:
    - name: s
      image: alpine
      script: |
        printf '%s' '$(params.v)' > $(results.out.path)
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: inj
spec:
  workspaces:
    - name: w
  params:
    - name: secret
    - name: inj
    - name: ctx
    - name: ws
    - name: res
      default: "$(tasks.first.results.out)"
    - name: def
      default: "$(params.inj)+d"
    - name: arr
      type: array
    - name: tp-inj
  tasks:
    - name: first
      taskRef: {name: show}
      params: [{name: v, value: first-out}]
    - name: inj
      taskRef: {name: show}
      params: [{name: v, value: "$(params.inj)"}]
    - name: ctx
      taskRef: {name: show}
      params: [{name: v, value: "$(params.ctx)"}]
    - name: ws
      taskRef: {name: show}
      params: [{name: v, value: "$(params.ws)"}]
    - name: res
      runAfter: [first]
      taskRef: {name: show}
      params: [{name: v, value: "$(params.res)"}]
    - name: def
      taskRef: {name: show}
      params: [{name: v, value: "$(params.def)"}]
    - name: arr
      params: [{name: a, value: ["$(params.arr[*])"]}]
      taskSpec:
        params: [{name: a, type: array}]
        results: [{name: out}]
        steps:
          - name: s
            image: alpine
            command: ["sh", "-c", 'printf "%s|" "$@" > "$0"', "$(results.out.path)", "$(params.a[*])"]
    - name: prop
      params: [{name: tp, value: TP}]
      taskSpec:
        params: [{name: tp}]
        results: [{name: out}]
        steps:
          - name: s
            image: alpine
            script: |
              printf '%s' '$(params.inj)|$(params.tp-inj)' > $(results.out.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: inj-run
spec:
  pipelineRef: {name: inj}
  workspaces:
    - name: w
      emptyDir: {}
  params:
    - name: secret
      value: S3CRET
    - name: inj
      value: harmless
    - name: ctx
      value: "$(context.pipelineRun.name)|$(context.taskRun.name)"
    - name: ws
      value: "$(workspaces.w.bound)"
    - name: arr
      value: ["$(params.secret)", "$(context.pipelineRun.name)"]
    - name: tp-inj
      value: "$(params.tp)"
"##;

#[test]
fn pipelinerun_param_values_are_substituted_once_per_phase() {
    let (run, _dir) = run_yaml(PIPELINE_INJECTION, &["--param", "inj=$(params.secret)"]);
    let r = report(&run, 0);
    let rows: [(&str, &str); 7] = [
        // a pipeline param's value goes through the pipeline's param phase and then the
        // TaskRun's as data: `$(params.secret)` stays literal
        ("inj", "$(params.secret)"),
        ("def", "$(params.secret)+d"),
        // the pipeline's later phases apply to it: context, workspaces, results of other
        // tasks; the TaskRun's context phase too
        ("ctx", "inj-run|inj-run-ctx"),
        ("ws", "true"),
        ("res", "first-out"),
        ("arr", "$(params.secret)|inj-run|"),
        // an embedded spec gets the pipeline's params propagated in the pipeline's param
        // phase, and the task's own params in the TaskRun's: Tekton runs the second over
        // the first's output, so a propagated `$(params.tp)` reads the task's own param,
        // while a pipeline param (`secret`) is out of the task's reach
        ("prop", "$(params.secret)|TP"),
    ];
    for (name, want) in rows {
        assert_eq!(task(&r, name)["results"]["out"], want, "task {name}\nreport: {r:#}");
    }
    assert!(!r.to_string().contains("S3CRET|") && !r.to_string().contains("\"S3CRET\""), "{r:#}");
    // a result reference is refused in a `--param` value as in a PipelineRun's params: the
    // results phase would otherwise read another task's result for whoever sets it
    let (run, _dir) = run_yaml(PIPELINE_INJECTION, &["--param", "inj=$(tasks.first.results.out)"]);
    assert_eq!(run.code, 2, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("result references are not allowed"), "{}", run.stderr);
}

// Tekton inlines a StepAction before the TaskRun's phases: a step's params get the task's
// params, the action's params go into its body, then the TaskRun's param and context
// phases run over the whole spec, the inlined body included.
const STEPACTION_PHASES: &str = r##"
apiVersion: tekton.dev/v1alpha1
kind: StepAction
metadata:
  name: say
spec:
  params:
    - name: msg
  image: alpine
  script: |
    printf '%s' '$(params.msg)|$(context.taskRun.name)' > $(results.out.path)
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: tr-sa
spec:
  params:
    - name: secret
      value: S3CRET
    - name: inj
      value: "$(params.secret)"
  taskSpec:
    params:
      - name: secret
      - name: inj
    results:
      - name: out
    steps:
      - name: s
        ref:
          name: say
        params:
          - name: msg
            value: "$(params.inj)"
"##;

#[test]
fn stepaction_bodies_get_the_taskrun_phases_after_inlining() {
    let (run, _dir) = run_yaml(STEPACTION_PHASES, &[]);
    let r = report(&run, 0);
    // the context phase reaches the inlined body; and, as in Tekton, the TaskRun's param
    // phase runs over the action's output, so a param value that reached the body through
    // a step param is read as a reference there
    assert_eq!(run0(&r)["results"]["out"], "S3CRET|tr-sa", "{r:#}");
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

const RETRY_TIMEOUT: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: rt
spec:
  pipelineSpec:
    tasks:
      - name: t
        timeout: 1s
        retries: 1
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: |
                if [ "$(context.task.retry-count)" = "0" ]; then sleep 5; fi
                printf 'done %s' "$(context.task.retry-count)" > $(results.r.path)
"##;

/// A timed-out attempt is retried, and the retry gets a fresh timeout.
#[test]
fn timed_out_attempt_is_retried() {
    let (run, _dir) = run_yaml(RETRY_TIMEOUT, &[]);
    let r = report(&run, 0);
    assert_task(&r, "t", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "t")["attempts"], 2);
    assert_eq!(task(&r, "t")["results"], json!({"r": "done 1"}));
    assert_run(&r, "Succeeded", "Succeeded");
}

const WHEN_VERBATIM: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: verb
spec:
  pipelineSpec:
    tasks:
      - name: a
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: echo yes > $(results.r.path)
      - name: exact
        when:
          - input: $(tasks.a.results.r)
            operator: in
            values: ["yes"]
        taskSpec:
          results:
            - name: out
          steps:
            - name: s
              image: alpine
              script: printf x > $(results.out.path)
      - name: newline
        when:
          - input: $(tasks.a.results.r)
            operator: in
            values: ["yes\n"]
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: "true"
    finally:
      - name: agg
        params:
          - name: s
            value: $(tasks.status)
        taskSpec:
          params:
            - name: s
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf '%s' "$(params.s)" > $(results.r.path)
      - name: uses-skipped
        params:
          - name: v
            value: $(tasks.exact.results.out)
        taskSpec:
          params:
            - name: v
          steps:
            - name: s
              image: alpine
              script: "true"
"##;

/// `when` compares exact strings (a result written by echo ends in a newline); a finally
/// task needing a skipped task's result is skipped; `$(tasks.status)` is Completed.
#[test]
fn when_compares_results_verbatim_and_finally_skips_on_missing_results() {
    let (run, _dir) = run_yaml(WHEN_VERBATIM, &[]);
    let r = report(&run, 0);
    assert_task(&r, "exact", "Skipped", "When Expressions evaluated to false");
    assert_task(&r, "newline", "Succeeded", "Succeeded");
    assert_task(&r, "agg", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "agg")["results"], json!({"r": "Completed"}));
    assert_task(&r, "uses-skipped", "Skipped", "Results were missing");
    assert_eq!(task(&r, "uses-skipped")["finally"], true);
    assert_run(&r, "Succeeded", "Completed");
    assert_eq!(run0(&r)["message"], "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 2");
}

const MISSING_RESULT: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: missing
spec:
  pipelineSpec:
    tasks:
      - name: a
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: "true"
      - name: b
        params:
          - name: v
            value: $(tasks.a.results.r)
        taskSpec:
          params:
            - name: v
          steps:
            - name: s
              image: alpine
              script: echo "$(params.v)"
    finally:
      - name: fin
        taskSpec:
          steps:
            - name: s
              image: alpine
              script: "true"
"##;

/// A producer that succeeded without writing a consumed result fails the PipelineRun
/// (PipelineValidationFailed in current Tekton code, InvalidTaskResultReference in the
/// docs); the consumer never runs; finally still runs.
#[test]
fn missing_result_fails_the_run() {
    let (run, _dir) = run_yaml(MISSING_RESULT, &[]);
    let r = report(&run, 1);
    let reason = run0(&r)["reason"].as_str().unwrap_or("");
    assert_eq!(run0(&r)["status"], "Failed");
    assert!(
        reason == "PipelineValidationFailed" || reason == "InvalidTaskResultReference",
        "run reason {reason}: {r:#}"
    );
    assert_task(&r, "a", "Succeeded", "Succeeded");
    let b = task(&r, "b");
    assert_ne!(b["status"], "Succeeded");
    assert!(b.get("taskRun").is_none(), "consumer must not run: {r:#}");
    assert_eq!(b["attempts"], 0);
    assert_task(&r, "fin", "Succeeded", "Succeeded");
    assert!(
        run0(&r)["message"].as_str().unwrap_or("").contains("Could not find result with name r for pipeline task a"),
        "{r:#}"
    );
}

const PIPELINE_RESULTS_OMITTED: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: presults
spec:
  pipelineSpec:
    results:
      - name: from-failed
        value: $(tasks.f.results.r)
      - name: from-skipped
        value: $(tasks.s.results.r)
      - name: from-ok
        value: $(tasks.ok.results.r)
    tasks:
      - name: f
        onError: continue
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: |
                printf x > $(results.r.path)
                exit 1
      - name: s
        when:
          - input: a
            operator: in
            values: [b]
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf x > $(results.r.path)
      - name: ok
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf fine > $(results.r.path)
"##;

const PIPELINE_RESULT_MISSING: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: presults2
spec:
  pipelineSpec:
    results:
      - name: gone
        value: $(tasks.ok.results.r)
    tasks:
      - name: ok
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: "true"
"##;

/// Pipeline results referring to a failed or skipped task are silently dropped; one
/// referring to a successful task that did not write it fails the run.
#[test]
fn pipeline_results_from_unsuccessful_tasks_are_dropped() {
    let (run, _dir) = run_yaml(PIPELINE_RESULTS_OMITTED, &[]);
    let r = report(&run, 0);
    assert_task(&r, "f", "Failed", "FailureIgnored");
    assert_eq!(run0(&r)["results"], json!({"from-ok": "fine"}));
    assert_run(&r, "Succeeded", "Completed");

    let (run, _dir) = run_yaml(PIPELINE_RESULT_MISSING, &[]);
    let r = report(&run, 1);
    assert_task(&r, "ok", "Succeeded", "Succeeded");
    assert_run(&r, "Failed", "CouldntGetPipelineResult");
    assert_eq!(run0(&r)["results"], json!({}));
}

const MATRIX_LENGTHS: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: mxl
spec:
  pipelineSpec:
    tasks:
      - name: t
        matrix:
          params:
            - name: os
              value: [linux, mac, win]
        taskSpec:
          params:
            - name: os
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: |
                if [ "$(params.os)" != win ]; then printf '%s' "$(params.os)" > $(results.r.path); fi
      - name: count
        params:
          - name: total
            value: $(tasks.t.matrix.length)
          - name: produced
            value: $(tasks.t.matrix.r.length)
          - name: all
            value: $(tasks.t.results.r[*])
        taskSpec:
          params:
            - name: total
            - name: produced
            - name: all
              type: array
          results:
            - name: out
          steps:
            - name: s
              image: alpine
              args: ["$(params.all[*])"]
              script: |
                printf '%s %s' "$(params.total)" "$(params.produced)" > $(results.out.path)
                printf ' %s' "$@" >> $(results.out.path)
"##;

/// Aggregated matrix results hold only the combinations that produced the result;
/// `$(tasks.t.matrix.length)` counts combinations, `.matrix.r.length` produced results.
#[test]
fn matrix_lengths_and_partial_aggregation() {
    let (run, _dir) = run_yaml(MATRIX_LENGTHS, &[]);
    let r = report(&run, 0);
    for i in 0..3 {
        assert_task(&r, &format!("t[{i}]"), "Succeeded", "Succeeded");
    }
    assert_task(&r, "count", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "count")["results"], json!({"out": "3 2 linux mac"}));
}

const YAML11: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: y11
spec:
  params:
    - name: a
      value: yes
    - name: b
      value: on
    - name: c
      value: 1.10
    - name: d
      value: 1
  pipelineSpec:
    params:
      - name: a
      - name: b
      - name: c
      - name: d
    tasks:
      - name: t
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: printf '%s %s %s %s' "$(params.a)" "$(params.b)" "$(params.c)" "$(params.d)" > $(results.r.path)
"##;

/// Kubernetes decodes manifests with YAML 1.1 rules: `yes`/`on` are booleans and land
/// in string fields as "true"; `1.10` is the number 1.1. (This is also why a result
/// must not be named `y`/`n`: that name would be the string "true"/"false".)
#[test]
fn yaml_1_1_scalars_in_param_values() {
    let (run, _dir) = run_yaml(YAML11, &[]);
    let r = report(&run, 0);
    assert_eq!(task(&r, "t")["results"], json!({"r": "true true 1.1 1"}));
}

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

/// Condition messages Tekton writes (pkg/reconciler/pipelinerun/resources/pipelinerunstate.go
/// `GetPipelineConditionStatus`), kept apart from the behaviour tests above.
/// onError: continue failures are counted inside the Failed bracket.
#[test]
fn condition_message_counts_ignored_failures_like_tekton() {
    let (run, _dir) = run_yaml(TASK_ON_ERROR, &[]);
    let r = report(&run, 0);
    assert_eq!(run0(&r)["message"], "Tasks Completed: 3 (Failed: 1 (Ignored: 1), Cancelled 0), Skipped: 0");
}

/// `timeouts.tasks` expiry: the message names the tasks budget, not the pipeline budget
/// (same function, `HaveTasksTimedOut` branch).
#[test]
fn condition_message_for_tasks_timeout() {
    let (run, _dir) = run_yaml(PR_TIMEOUTS, &[]);
    let r = report(&run, 1);
    assert_run(&r, "Failed", "PipelineRunTimeout");
    assert_eq!(run0(&r)["message"], r#"PipelineRun "budget" failed due to tasks failed to finish within "1s""#);
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
