//! Tekton semantics cases that one table drives through every executor: `run_behaviour.rs`
//! runs them with the local executor, `behaviour_k8s.rs` on pods of the test cluster. Each
//! case is a manifest, `tenon run` flags, the expected exit code and a check of the
//! RunReport (statuses, reasons, results, step exit codes) that must hold on both. Cases use
//! only images the test cluster has stand-ins for (`alpine`, `busybox`: see
//! `tests/k8s/make-images.sh`); checks that depend on where steps run (timings, host
//! processes, the sandbox) stay in `run_behaviour.rs`.
//!
//! Expected values follow Tekton (see `shared/design/tekton-semantics.md`), not whatever
//! tenon happens to do: a failing case is a behaviour bug in tenon.

use std::sync::Mutex;
use std::time::Instant;

use crate::common::{run_yaml, task, Run};
use serde_json::{json, Value};

/// One row of the table.
pub struct Case {
    pub name: &'static str,
    pub yaml: &'static str,
    /// `tenon run` flags after `DIR --output json -q`
    pub args: &'static [&'static str],
    /// the exit code; 2 (a usage error) has no RunReport, the check gets `Value::Null`
    pub code: i32,
    pub check: fn(&Run, &Value),
}

/// Run every case with `flags` appended to its own (the executor's flags), `threads` at a
/// time, its budgets marked `# longer on pods` multiplied by `slower`; print each case's
/// outcome and wall time, then fail listing every case that failed.
pub fn run_table(executor: &str, flags: &[String], threads: usize, slower: u32) {
    let queue = Mutex::new(CASES.iter().rev().collect::<Vec<_>>());
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(case) = queue.lock().unwrap().pop() else { break };
                let start = Instant::now();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case, flags, slower)));
                let secs = start.elapsed().as_secs_f64();
                eprintln!("{executor}: {} {} ({secs:.1} s)", case.name, if outcome.is_ok() { "ok" } else { "FAILED" });
                if let Err(e) = outcome {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.lock().unwrap().push(format!("{}: {msg}", case.name));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{executor}: {} of {} cases pass ({:.1} s)",
        CASES.len() - failures.len(),
        CASES.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{executor}: {} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

fn run_case(case: &Case, flags: &[String], slower: u32) {
    let mut args: Vec<&str> = case.args.to_vec();
    args.extend(flags.iter().map(String::as_str));
    let (run, _dir) = run_yaml(&scaled(case.yaml, slower), &args);
    let r = if case.code == 2 {
        assert_eq!(run.code, 2, "exit code\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
        Value::Null
    } else {
        report(&run, case.code)
    };
    (case.check)(&run, &r);
}

/// `yaml` with each duration marked `# longer on pods` (`timeout: 5s # longer on pods`)
/// multiplied by `slower`: a timeout must leave a step time to run, and a pod takes seconds to
/// start (more on a busy cluster) where a process takes milliseconds. The outcomes checked
/// are the same.
fn scaled(yaml: &str, slower: u32) -> String {
    yaml.lines()
        .map(|l| match l.split_once(" # longer on pods") {
            Some((kv, _)) => {
                match kv.rsplit_once(": ").and_then(|(k, v)| Some((k, v.strip_suffix('s')?.parse::<u32>().ok()?))) {
                    Some((k, secs)) => format!("{k}: {}s", secs * slower),
                    None => panic!("not a duration in seconds: {l}"),
                }
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first run of a report.
pub fn run0(report: &Value) -> &Value {
    &report["runs"][0]
}

/// Names of all task entries of the first run, in report order.
pub fn task_names(report: &Value) -> Vec<String> {
    run0(report)["tasks"]
        .as_array()
        .map(|ts| ts.iter().map(|t| t["name"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// Assert a task's status and reason, printing the whole report on mismatch.
#[track_caller]
pub fn assert_task(report: &Value, name: &str, status: &str, reason: &str) {
    let t = task(report, name);
    assert_eq!(
        (t["status"].as_str(), t["reason"].as_str()),
        (Some(status), Some(reason)),
        "task {name}: status/reason\nreport: {report:#}"
    );
}

/// Assert the first run's status and reason.
#[track_caller]
pub fn assert_run(report: &Value, status: &str, reason: &str) {
    let r = run0(report);
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some(status), Some(reason)),
        "run status/reason\nreport: {report:#}"
    );
}

/// Parse the report and check the exit code that goes with it.
#[track_caller]
pub fn report(run: &Run, code: i32) -> Value {
    let v = run.json();
    assert_eq!(run.code, code, "exit code\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    v
}

/// `case!(check, YAML, code, args...)`: the row named after its check.
macro_rules! case {
    ($check:ident, $yaml:ident, $code:expr $(, $arg:expr)*) => {
        Case { name: stringify!($check), yaml: $yaml, args: &[$($arg),*], code: $code, check: $check }
    };
}

pub const CASES: &[Case] = &[
    case!(dag_order_result_passing_and_pipeline_results, CHAIN, 0),
    case!(when_false_skips_and_propagates_like_tekton, WHEN, 0),
    case!(when_true_runs_the_whole_chain, WHEN, 0, "--param", "flag=yes"),
    case!(failing_task_stops_the_run_and_finally_still_runs, FAILING, 1, "--parallel", "4"),
    case!(retries_rerun_failed_attempts, RETRIES, 1),
    case!(retry_count_in_referenced_task, RETRY_REF, 0),
    case!(pipeline_task_timeout, TASK_TIMEOUT, 1),
    case!(pipelinerun_tasks_timeout_still_runs_finally, PR_TIMEOUTS, 1),
    case!(pipeline_task_on_error_continue, TASK_ON_ERROR, 0),
    case!(step_on_error_continue, STEP_ON_ERROR, 0),
    case!(step_on_error_continue_does_not_cover_start_failure, STEP_ON_ERROR_START_FAILURE, 1),
    case!(matrix_fan_out_order_and_aggregation, MATRIX, 0),
    case!(matrix_include_adds_params_and_combinations, MATRIX_INCLUDE, 0),
    case!(matrix_with_empty_array_is_skipped, MATRIX_EMPTY, 0),
    case!(array_and_object_params_and_results, ARRAYS_OBJECTS, 0),
    case!(embedded_specs_and_param_propagation_precedence, EMBEDDED, 0),
    case!(run_params, PARAMS, 0),
    case!(cli_param_overrides_run_params, PARAMS, 0, "--param", "msg=from-cli", "--param", r#"words=["a b","c"]"#),
    case!(result_size_cap, BIG_RESULT, 1),
    case!(result_size_cap_raised, BIG_RESULT, 0, "--max-result-size", "8192"),
    case!(standalone_taskrun_with_taskref_params_and_emptydir, TASKRUN, 0),
    case!(own_volume_mounts_win_over_implicit_ones, OWN_MOUNTS, 0),
    case!(taskrun_param_values_are_substituted_once_per_phase, TASKRUN_INJECTION, 0, "--param", "inj=$(params.secret)"),
    case!(
        pipelinerun_param_values_are_substituted_once_per_phase,
        PIPELINE_INJECTION,
        0,
        "--param",
        "inj=$(params.secret)"
    ),
    case!(param_result_reference_refused, PIPELINE_INJECTION, 2, "--param", "inj=$(tasks.first.results.out)"),
    case!(stepaction_bodies_get_the_taskrun_phases_after_inlining, STEPACTION_PHASES, 0),
    case!(timed_out_attempt_is_retried, RETRY_TIMEOUT, 0),
    case!(when_compares_results_verbatim_and_finally_skips_on_missing_results, WHEN_VERBATIM, 0),
    case!(missing_result_fails_the_run, MISSING_RESULT, 1),
    case!(pipeline_results_from_unsuccessful_tasks_are_dropped, PIPELINE_RESULTS_OMITTED, 0),
    case!(missing_pipeline_result_fails_the_run, PIPELINE_RESULT_MISSING, 1),
    case!(matrix_lengths_and_partial_aggregation, MATRIX_LENGTHS, 0),
    case!(yaml_1_1_scalars_in_param_values, YAML11, 0),
    case!(condition_message_counts_ignored_failures_like_tekton, TASK_ON_ERROR, 0),
    case!(condition_message_for_tasks_timeout, PR_TIMEOUTS, 1),
];

// ------------------------------------------------------------------------------------------
// 1. DAG order, result passing, verbatim results, pipeline results
// ------------------------------------------------------------------------------------------

pub const CHAIN: &str = r##"
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

fn dag_order_result_passing_and_pipeline_results(run: &Run, r: &Value) {
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
// 3. when expressions and skip propagation
// ------------------------------------------------------------------------------------------

pub const WHEN: &str = r##"
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

fn when_false_skips_and_propagates_like_tekton(_run: &Run, r: &Value) {
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

fn when_true_runs_the_whole_chain(_run: &Run, r: &Value) {
    for t in ["gate", "after-only", "consumer", "grandchild"] {
        assert_task(&r, t, "Succeeded", "Succeeded");
    }
    assert_task(&r, "notin-true", "Skipped", "When Expressions evaluated to false");
    assert_run(&r, "Succeeded", "Completed");
}

// ------------------------------------------------------------------------------------------
// 4. failure: stopping, downstream skipped, finally sees statuses
// ------------------------------------------------------------------------------------------

pub const FAILING: &str = r##"
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

fn failing_task_stops_the_run_and_finally_still_runs(_run: &Run, r: &Value) {
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

pub const RETRIES: &str = r##"
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

fn retries_rerun_failed_attempts(_run: &Run, r: &Value) {
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

pub const RETRY_REF: &str = r##"
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
fn retry_count_in_referenced_task(_run: &Run, r: &Value) {
    assert_task(&r, "flaky", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "flaky")["attempts"], 2);
    assert_eq!(task(&r, "flaky")["results"], json!({"r": "retry 1"}));
}

// ------------------------------------------------------------------------------------------
// 6. timeouts
// ------------------------------------------------------------------------------------------

pub const TASK_TIMEOUT: &str = r##"
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

fn pipeline_task_timeout(_run: &Run, r: &Value) {
    assert_task(&r, "slow", "TimedOut", "TaskRunTimeout");
    assert_eq!(task(&r, "slow")["attempts"], 1);
    assert_run(&r, "Failed", "Failed");
    let steps = task(&r, "slow")["steps"].as_array().cloned().unwrap_or_default();
    assert_ne!(steps.first().map(|s| s["terminationReason"].clone()), Some(json!("Completed")), "{r:#}");
    assert_eq!(task(&r, "slow")["message"], r#"TaskRun "to-run-slow" failed to finish within "1s""#);
}

pub const PR_TIMEOUTS: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: budget
spec:
  timeouts:
    pipeline: 10s # longer on pods
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

fn pipelinerun_tasks_timeout_still_runs_finally(_run: &Run, r: &Value) {
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
    // Tekton cancels the running child with "TaskRun cancelled as the PipelineRun it
    // belongs to has timed out." and its condition reason is TaskRunCancelled.
    assert_eq!(long["reason"], "TaskRunCancelled", "{r:#}");
}

// ------------------------------------------------------------------------------------------
// 8. onError
// ------------------------------------------------------------------------------------------

pub const TASK_ON_ERROR: &str = r##"
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

fn pipeline_task_on_error_continue(_run: &Run, r: &Value) {
    assert_task(&r, "flaky", "Failed", "FailureIgnored");
    assert_task(&r, "after", "Succeeded", "Succeeded");
    assert_task(&r, "fin", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "fin")["results"], json!({"seen": "Failed FailureIgnored"}));
    assert_run(&r, "Succeeded", "Succeeded");
}

pub const STEP_ON_ERROR: &str = r##"
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

fn step_on_error_continue(_run: &Run, r: &Value) {
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

pub const STEP_ON_ERROR_START_FAILURE: &str = r##"
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
fn step_on_error_continue_does_not_cover_start_failure(_run: &Run, r: &Value) {
    assert_run(&r, "Failed", "Failed");
    let t = &run0(&r)["tasks"][0];
    assert_eq!(t["status"], "Failed", "{r:#}");
    assert_ne!(t["steps"][0]["terminationReason"], "Continued", "{r:#}");
}

// ------------------------------------------------------------------------------------------
// 9. matrix
// ------------------------------------------------------------------------------------------

pub const MATRIX: &str = r##"
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

fn matrix_fan_out_order_and_aggregation(_run: &Run, r: &Value) {
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

pub const MATRIX_INCLUDE: &str = r##"
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

fn matrix_include_adds_params_and_combinations(_run: &Run, r: &Value) {
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

pub const MATRIX_EMPTY: &str = r##"
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

fn matrix_with_empty_array_is_skipped(_run: &Run, r: &Value) {
    assert_task(&r, "t", "Skipped", "Matrix Parameters have an empty array");
    assert_task(&r, "other", "Succeeded", "Succeeded");
    assert!(!task_names(&r).contains(&"t[0]".to_string()), "{:?}", task_names(&r));
    assert_run(&r, "Succeeded", "Completed");
}

// ------------------------------------------------------------------------------------------
// 10. array and object params and results
// ------------------------------------------------------------------------------------------

pub const ARRAYS_OBJECTS: &str = r##"
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

fn array_and_object_params_and_results(_run: &Run, r: &Value) {
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

pub const EMBEDDED: &str = r##"
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

fn embedded_specs_and_param_propagation_precedence(_run: &Run, r: &Value) {
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

pub const PARAMS: &str = r##"
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

fn run_params(_run: &Run, r: &Value) {
    assert_eq!(run0(&r)["results"], json!({"msg": "from-runone;"}));
}

fn cli_param_overrides_run_params(_run: &Run, r: &Value) {
    assert_eq!(task(&r, "say")["results"], json!({"msg": "from-clia b;c;"}));
    assert_eq!(run0(&r)["results"], json!({"msg": "from-clia b;c;"}));
}

// ------------------------------------------------------------------------------------------
// 14. result size cap
// ------------------------------------------------------------------------------------------

pub const BIG_RESULT: &str = r##"
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

fn result_size_cap(_run: &Run, r: &Value) {
    assert_task(&r, "t", "Failed", "TaskRunResultLargerThanAllowedLimit");
    assert_run(&r, "Failed", "Failed");
}

fn result_size_cap_raised(_run: &Run, r: &Value) {
    assert_task(&r, "t", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "t")["results"]["blob"], "a".repeat(5000));
}

// ------------------------------------------------------------------------------------------
// 15. standalone TaskRun
// ------------------------------------------------------------------------------------------

pub const TASKRUN: &str = r##"
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

fn standalone_taskrun_with_taskref_params_and_emptydir(_run: &Run, r: &Value) {
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

/// A step's own volumeMount at `/workspace` replaces the implicit one, and a sidecar may
/// mount a workspace's volume explicitly at the path it already gets (Tekton's examples
/// `workspace-volume.yaml`, `workspace-in-sidecar.yaml`).
pub const OWN_MOUNTS: &str = r##"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: own-mounts
spec:
  workspaces:
    - name: w
      emptyDir: {}
  taskSpec:
    workspaces:
      - name: w
    results:
      - name: seen
    volumes:
      - name: empty
        emptyDir: {}
    sidecars:
      - name: side
        image: alpine
        volumeMounts:
          - name: $(workspaces.w.volume)
            mountPath: $(workspaces.w.path)
        script: echo side > $(workspaces.w.path)/side
    steps:
      - name: write
        image: alpine
        script: echo stuff > /workspace/stuff
      - name: own
        image: alpine
        volumeMounts:
          - name: empty
            mountPath: /workspace
        script: |
          if [ -e /workspace/stuff ]; then printf shared; else printf own; fi > $(results.seen.path)
"##;

fn own_volume_mounts_win_over_implicit_ones(_run: &Run, r: &Value) {
    assert_run(&r, "Succeeded", "Succeeded");
    assert_eq!(run0(&r)["results"], json!({"seen": "own"}), "{r:#}");
}

// ------------------------------------------------------------------------------------------
// 15b. substitution phases: single pass each, in Tekton's order
// ------------------------------------------------------------------------------------------

// Each step writes a param's substituted text verbatim (single quotes keep the shell away)
// into a result. The values carry references: the param phase must insert them as data,
// while the later phases (context, paths, workspaces, pipeline results) still apply.
pub const TASKRUN_INJECTION: &str = r##"
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

fn taskrun_param_values_are_substituted_once_per_phase(_run: &Run, r: &Value) {
    // `--param` is how a caller (or a webhook) supplies a value: it must not read `secret`
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

pub const PIPELINE_INJECTION: &str = r##"
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

fn pipelinerun_param_values_are_substituted_once_per_phase(_run: &Run, r: &Value) {
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
}

fn param_result_reference_refused(run: &Run, _r: &Value) {
    assert!(run.stderr.contains("result references are not allowed"), "{}", run.stderr);
}

// Tekton inlines a StepAction before the TaskRun's phases: a step's params get the task's
// params, the action's params go into its body, then the TaskRun's param and context
// phases run over the whole spec, the inlined body included.
pub const STEPACTION_PHASES: &str = r##"
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

fn stepaction_bodies_get_the_taskrun_phases_after_inlining(_run: &Run, r: &Value) {
    // the context phase reaches the inlined body; and, as in Tekton, the TaskRun's param
    // phase runs over the action's output, so a param value that reached the body through
    // a step param is read as a reference there
    assert_eq!(run0(&r)["results"]["out"], "S3CRET|tr-sa", "{r:#}");
}

// ------------------------------------------------------------------------------------------
// further Tekton semantics in the same areas
// ------------------------------------------------------------------------------------------

pub const RETRY_TIMEOUT: &str = r##"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: rt
spec:
  pipelineSpec:
    tasks:
      - name: t
        # a TaskRun's timeout counts its pod's start (in Tekton too): see `scaled`
        timeout: 5s # longer on pods
        retries: 1
        taskSpec:
          results:
            - name: r
          steps:
            - name: s
              image: alpine
              script: |
                if [ "$(context.task.retry-count)" = "0" ]; then sleep 300; fi
                printf 'done %s' "$(context.task.retry-count)" > $(results.r.path)
"##;

/// A timed-out attempt is retried, and the retry gets a fresh timeout.
fn timed_out_attempt_is_retried(_run: &Run, r: &Value) {
    assert_task(&r, "t", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "t")["attempts"], 2);
    assert_eq!(task(&r, "t")["results"], json!({"r": "done 1"}));
    assert_run(&r, "Succeeded", "Succeeded");
}

pub const WHEN_VERBATIM: &str = r##"
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
fn when_compares_results_verbatim_and_finally_skips_on_missing_results(_run: &Run, r: &Value) {
    assert_task(&r, "exact", "Skipped", "When Expressions evaluated to false");
    assert_task(&r, "newline", "Succeeded", "Succeeded");
    assert_task(&r, "agg", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "agg")["results"], json!({"r": "Completed"}));
    assert_task(&r, "uses-skipped", "Skipped", "Results were missing");
    assert_eq!(task(&r, "uses-skipped")["finally"], true);
    assert_run(&r, "Succeeded", "Completed");
    assert_eq!(run0(&r)["message"], "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 2");
}

pub const MISSING_RESULT: &str = r##"
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
fn missing_result_fails_the_run(_run: &Run, r: &Value) {
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

pub const PIPELINE_RESULTS_OMITTED: &str = r##"
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

pub const PIPELINE_RESULT_MISSING: &str = r##"
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
fn pipeline_results_from_unsuccessful_tasks_are_dropped(_run: &Run, r: &Value) {
    assert_task(&r, "f", "Failed", "FailureIgnored");
    assert_eq!(run0(&r)["results"], json!({"from-ok": "fine"}));
    assert_run(&r, "Succeeded", "Completed");
}

/// Pipeline results referring to a failed or skipped task are silently dropped; one
/// referring to a successful task that did not write it fails the run.
fn missing_pipeline_result_fails_the_run(_run: &Run, r: &Value) {
    assert_task(&r, "ok", "Succeeded", "Succeeded");
    assert_run(&r, "Failed", "CouldntGetPipelineResult");
    assert_eq!(run0(&r)["results"], json!({}));
}

pub const MATRIX_LENGTHS: &str = r##"
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
fn matrix_lengths_and_partial_aggregation(_run: &Run, r: &Value) {
    for i in 0..3 {
        assert_task(&r, &format!("t[{i}]"), "Succeeded", "Succeeded");
    }
    assert_task(&r, "count", "Succeeded", "Succeeded");
    assert_eq!(task(&r, "count")["results"], json!({"out": "3 2 linux mac"}));
}

pub const YAML11: &str = r##"
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
fn yaml_1_1_scalars_in_param_values(_run: &Run, r: &Value) {
    assert_eq!(task(&r, "t")["results"], json!({"r": "true true 1.1 1"}));
}

/// Condition messages Tekton writes (pkg/reconciler/pipelinerun/resources/pipelinerunstate.go
/// `GetPipelineConditionStatus`), kept apart from the behaviour tests above.
/// onError: continue failures are counted inside the Failed bracket.
fn condition_message_counts_ignored_failures_like_tekton(_run: &Run, r: &Value) {
    assert_eq!(run0(&r)["message"], "Tasks Completed: 3 (Failed: 1 (Ignored: 1), Cancelled 0), Skipped: 0");
}

/// `timeouts.tasks` expiry: the message names the tasks budget, not the pipeline budget
/// (same function, `HaveTasksTimedOut` branch).
fn condition_message_for_tasks_timeout(_run: &Run, r: &Value) {
    assert_run(&r, "Failed", "PipelineRunTimeout");
    assert_eq!(run0(&r)["message"], r#"PipelineRun "budget" failed due to tasks failed to finish within "1s""#);
}
