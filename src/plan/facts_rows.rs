//! The rows: fixtures (the `spec:` of a PipelineRun named `run`; `{S}` is a one-step
//! taskSpec) and, per scenario, the events and the actions expected after the last one.

use super::*;

const WHEN: &str = r#"  params: [{name: flag, value: "no"}]
  pipelineSpec:
    params: [{name: flag}]
    tasks:
    - name: gate
      when: [{input: "$(params.flag)", operator: in, values: ["yes"]}]
      taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}
    - {name: after-only, runAfter: [gate], taskSpec: {S}}
    - name: consumer
      params: [{name: v, value: "$(tasks.gate.results.r)"}]
      taskSpec: {params: [{name: v}], steps: [{image: alpine, script: "true"}]}
    - {name: grandchild, runAfter: [consumer], taskSpec: {S}}
    - name: notin-true
      when: [{input: "$(params.flag)", operator: notin, values: ["yes", "maybe"]}]
      taskSpec: {S}
"#;

const CEL: &str = r#"  pipelineSpec:
    tasks:
    - {name: eval, taskSpec: {results: [{name: acc}], steps: [{image: alpine, script: "true"}]}}
    - name: promote
      when: [{cel: "double('$(tasks.eval.results.acc)') > 0.9"}]
      taskSpec: {S}
"#;

const CEL_NOT_BOOL: &str = r#"  pipelineSpec:
    tasks:
    - {name: eval, taskSpec: {results: [{name: acc}], steps: [{image: alpine, script: "true"}]}}
    - name: judge
      when: [{cel: "'$(tasks.eval.results.acc)'"}]
      taskSpec: {S}
"#;

const FINALLY_STATUS: &str = r#"  params: [{name: flag, value: "yes"}]
  pipelineSpec:
    params: [{name: flag}]
    tasks:
    - {name: a, taskSpec: {S}}
    - name: b
      when: [{input: "$(params.flag)", operator: in, values: ["yes"]}]
      taskSpec: {S}
    finally:
    - {name: on-failure, when: [{input: "$(tasks.status)", operator: in, values: [Failed]}], taskSpec: {S}}
    - {name: on-success, when: [{input: "$(tasks.status)", operator: in, values: [Succeeded]}], taskSpec: {S}}
    - {name: on-completed, when: [{input: "$(tasks.status)", operator: in, values: [Completed]}], taskSpec: {S}}
    - {name: a-failed, when: [{input: "$(tasks.a.status)", operator: notin, values: [Succeeded]}], taskSpec: {S}}
"#;

pub fn when() -> Vec<Row> {
    vec![
        // engine: when_false_skips_and_propagates_like_tekton
        row("when false: no cascade through runAfter; result consumer and its child skipped", WHEN, vec![], &[
            "skip gate: When Expressions evaluated to false",
            "launch notin-true",
            "launch after-only",
            "skip consumer: Results were missing",
            "skip grandchild: Parent Tasks were skipped",
        ]),
        row("when false: the rest succeeds, the run is Completed", WHEN, vec![ok("notin-true"), ok("after-only")], &[])
            .run("Succeeded", "Completed", "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 3"),
        row("when true: the gate runs, notin skips", WHEN, vec![], &[
            "launch gate",
            "skip notin-true: When Expressions evaluated to false",
        ])
        .params(&[("flag", "yes")]),
        row("when true: the result reaches the consumer", WHEN, vec![ok_r("gate", &[("r", "v")])], &[
            "launch after-only",
            "launch consumer",
        ])
        .params(&[("flag", "yes")])
        .check(|f| assert_eq!(param(&st(f, "consumer").children[0].launch, "v"), ParamValue::Str("v".into()))),
        // engine: when_true_runs_the_whole_chain
        row(
            "when true: the whole chain runs",
            WHEN,
            vec![ok_r("gate", &[("r", "v")]), ok("after-only"), ok("consumer"), ok("grandchild")],
            &[],
        )
        .params(&[("flag", "yes")])
        .run("Succeeded", "Completed", "Tasks Completed: 4 (Failed: 0, Cancelled 0), Skipped: 1"),
        row("cel true launches", CEL, vec![ok_r("eval", &[("acc", "0.95")])], &["launch promote"]),
        row("cel false skips", CEL, vec![ok_r("eval", &[("acc", "0.5")])], &[
            "skip promote: When Expressions evaluated to false",
        ])
        .run("Succeeded", "Completed", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 1"),
        row("cel that is not a bool fails the run", CEL_NOT_BOOL, vec![ok_r("eval", &[("acc", "0.5")])], &[
            "fail judge: CELEvaluationFailed: pipeline task judge: CEL expression \"'0.5'\": the expression is a string, not a bool",
        ])
        .run(
            "Failed",
            "CELEvaluationFailed",
            "pipeline task judge: CEL expression \"'0.5'\": the expression is a string, not a bool",
        ),
        row("finally: tasks.status Succeeded", FINALLY_STATUS, vec![ok("a"), ok("b")], &[
            "skip on-failure: When Expressions evaluated to false",
            "launch on-success",
            "skip on-completed: When Expressions evaluated to false",
            "skip a-failed: When Expressions evaluated to false",
        ]),
        row("finally: tasks.status Completed when something was skipped", FINALLY_STATUS, vec![ok("a")], &[
            "skip on-failure: When Expressions evaluated to false",
            "skip on-success: When Expressions evaluated to false",
            "launch on-completed",
            "skip a-failed: When Expressions evaluated to false",
        ])
        .params(&[("flag", "no")])
        .check(|f| assert_eq!(st(f, "on-completed").status, TaskStatus::Running)),
        row("finally: tasks.status Failed and tasks.a.status", FINALLY_STATUS, vec![fail("a"), ok("b")], &[
            "launch on-failure",
            "skip on-success: When Expressions evaluated to false",
            "skip on-completed: When Expressions evaluated to false",
            "launch a-failed",
        ]),
        row(
            "finally when-skips count as skipped",
            FINALLY_STATUS,
            vec![fail("a"), ok("b"), ok("a-failed"), ok("on-failure")],
            &[],
        )
        .run("Failed", "Failed", "Tasks Completed: 4 (Failed: 1, Cancelled 0), Skipped: 2"),
    ]
}

const FAILING: &str = r#"  pipelineSpec:
    tasks:
    - {name: ok, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: bad, taskSpec: {results: [{name: early}], steps: [{image: alpine, script: "true"}]}}
    - {name: down, runAfter: [bad], taskSpec: {S}}
    finally:
    - name: fin
      params:
      - {name: agg, value: $(tasks.status)}
      - {name: bad, value: $(tasks.bad.status)}
      - {name: ok, value: $(tasks.ok.status)}
      - {name: down, value: $(tasks.down.status)}
      taskSpec: {params: [{name: agg}, {name: bad}, {name: ok}, {name: down}], steps: [{image: alpine, script: "true"}]}
"#;

const ON_ERROR: &str = r#"  pipelineSpec:
    tasks:
    - {name: flaky, onError: continue, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: after, runAfter: [flaky], taskSpec: {S}}
    finally:
    - name: fin
      params: [{name: st, value: $(tasks.flaky.status)}, {name: why, value: $(tasks.flaky.reason)}]
      taskSpec: {params: [{name: st}, {name: why}], steps: [{image: alpine, script: "true"}]}
"#;

const ON_ERROR_CONSUMERS: &str = r#"  pipelineSpec:
    tasks:
    - {name: flaky, onError: continue, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: after, runAfter: [flaky], taskSpec: {S}}
    - name: tolerant
      onError: continue
      params: [{name: v, value: "$(tasks.flaky.results.r)"}]
      taskSpec: {params: [{name: v}], steps: [{image: alpine, script: "true"}]}
    - name: uses
      params: [{name: v, value: "$(tasks.flaky.results.r)"}]
      taskSpec: {params: [{name: v}], steps: [{image: alpine, script: "true"}]}
"#;

fn finally_params(f: &PipelineRunFacts, t: &str) -> Vec<String> {
    st(f, t).children[0].launch.params.iter().map(|(_, v)| format!("{v:?}")).collect()
}

pub fn failure_and_finally() -> Vec<Row> {
    vec![
        row("independent tasks start together", FAILING, vec![], &["launch ok", "launch bad"]),
        row(
            "a failure stops the run: unstarted tasks skipped, running ones finish",
            FAILING,
            vec![fail("bad")],
            &["skip down: PipelineRun was stopping"],
        ),
        row(
            "finally runs after a failure and sees the statuses",
            FAILING,
            vec![fail("bad"), ok("ok")],
            &["launch fin"],
        )
        .check(|f| {
            assert_eq!(
                finally_params(f, "fin"),
                [r#"Str("Failed")"#, r#"Str("Failed")"#, r#"Str("Succeeded")"#, r#"Str("None")"#]
            );
        }),
        // engine: failing_task_stops_the_run_and_finally_still_runs
        row("failed run: counts", FAILING, vec![fail_r("bad", &[("early", "w")]), ok("ok"), ok("fin")], &[])
            .run("Failed", "Failed", "Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 1")
            .check(|f| assert_eq!(st(f, "bad").results.get("early"), Some(&ParamValue::Str("w".into())))),
        row("onError continue: the failure does not stop the run", ON_ERROR, vec![fail("flaky")], &["launch after"]),
        row(
            "onError continue: finally sees Failed / FailureIgnored",
            ON_ERROR,
            vec![fail("flaky"), ok("after")],
            &["launch fin"],
        )
        .check(|f| {
            assert_eq!(finally_params(f, "fin"), [r#"Str("Failed")"#, r#"Str("FailureIgnored")"#]);
            assert_eq!(st(f, "flaky").reason, "FailureIgnored");
        }),
        // engine: pipeline_task_on_error_continue, condition_message_counts_ignored_failures_like_tekton
        row(
            "onError continue: the run succeeds, the failure is counted as ignored",
            ON_ERROR,
            vec![fail("flaky"), ok("after"), ok("fin")],
            &[],
        )
        .run("Succeeded", "Succeeded", "Tasks Completed: 3 (Failed: 1 (Ignored: 1), Cancelled 0), Skipped: 0"),
        row(
            "onError continue producer with its result: consumers run",
            ON_ERROR_CONSUMERS,
            vec![fail_r("flaky", &[("r", "x")])],
            &["launch after", "launch tolerant", "launch uses"],
        ),
        row(
            "onError continue producer without the result: tolerant consumer skipped, the other fails the run",
            ON_ERROR_CONSUMERS,
            vec![fail("flaky")],
            &[
                "launch after",
                "skip tolerant: Results were missing",
                "fail uses: PipelineValidationFailed: Could not find result with name r for pipeline task flaky",
            ],
        ),
        row("... and the run fails with that reason", ON_ERROR_CONSUMERS, vec![fail("flaky"), ok("after")], &[]).run(
            "Failed",
            "PipelineValidationFailed",
            "Could not find result with name r for pipeline task flaky",
        ),
    ]
}

const RETRIES: &str = r#"  pipelineSpec:
    tasks:
    - {name: flaky, retries: 1, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: always, runAfter: [flaky], retries: 2, taskSpec: {S}}
"#;

pub fn retries() -> Vec<Row> {
    vec![
        row(
            "a failed attempt with retries left is launched again",
            RETRIES,
            vec![fail("flaky")],
            &["launch flaky retry 1"],
        ),
        row("retry then success", RETRIES, vec![fail("flaky"), ok_r("flaky", &[("r", "ok")])], &["launch always"])
            .check(|f| {
                let t = st(f, "flaky");
                assert_eq!((t.attempts(), t.status.clone()), (2, TaskStatus::Succeeded));
                assert_eq!(t.children[0].launch.task_run, "run-flaky", "retries reuse the TaskRun name");
            }),
        row(
            "second retry",
            RETRIES,
            vec![fail("flaky"), ok("flaky"), fail("always"), fail("always")],
            &["launch always retry 2"],
        ),
        // engine: retries_rerun_failed_attempts
        row(
            "retries exhausted: the task fails",
            RETRIES,
            vec![fail("flaky"), ok("flaky"), fail("always"), fail("always"), fail("always")],
            &[],
        )
        .run("Failed", "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0")
        .check(|f| assert_eq!(st(f, "always").attempts(), 3)),
        // engine: timed_out_attempt_is_retried
        row("a timed-out attempt is retried", RETRIES, vec![timed_out("flaky")], &["launch flaky retry 1"]),
        row(
            "a cancelled attempt is not retried",
            RETRIES,
            vec![cancelled("flaky")],
            &["skip always: PipelineRun was stopping"],
        )
        .run("Failed", "Failed", "Tasks Completed: 1 (Failed: 0, Cancelled 1), Skipped: 1"),
        row("cancelling during a retry cancels it", RETRIES, vec![fail("flaky"), Ev::Cancel], &["cancel flaky"]),
        row(
            "no retry after the run is cancelled",
            RETRIES,
            vec![Ev::Cancel, fail("flaky")],
            &["skip always: PipelineRun was cancelled"],
        )
        .run("Failed", "Cancelled", "PipelineRun \"run\" was cancelled"),
    ]
}

const TASKS_TIMEOUT: &str = r#"  timeouts: {pipeline: 1h, tasks: 10m}
  pipelineSpec:
    tasks:
    - {name: slow, retries: 1, taskSpec: {S}}
    - {name: next, runAfter: [slow], taskSpec: {S}}
    finally:
    - {name: fin, taskSpec: {S}}
"#;

const PIPELINE_TIMEOUT: &str = r#"  timeouts: {pipeline: 30m}
  pipelineSpec:
    tasks:
    - {name: slow, taskSpec: {S}}
    - {name: next, runAfter: [slow], taskSpec: {S}}
    finally:
    - {name: fin, taskSpec: {S}}
"#;

const FINALLY_TIMEOUT: &str = r#"  timeouts: {pipeline: 1h, finally: 5m}
  pipelineSpec:
    tasks:
    - {name: a, taskSpec: {S}}
    finally:
    - {name: fin, taskSpec: {S}}
    - {name: fin2, taskSpec: {S}}
"#;

pub fn timeouts() -> Vec<Row> {
    vec![
        row("tasks timeout not reached yet", TASKS_TIMEOUT, vec![Ev::Timeout(599)], &[]),
        row("tasks timeout cancels the running DAG tasks", TASKS_TIMEOUT, vec![Ev::Timeout(600)], &["cancel slow"]),
        row(
            "tasks timeout: the rest is skipped, finally runs",
            TASKS_TIMEOUT,
            vec![Ev::Timeout(600), cancelled("slow")],
            &["skip next: PipelineRun Tasks timeout has been reached", "launch fin"],
        ),
        // engine: pipelinerun_tasks_timeout_still_runs_finally, condition_message_for_tasks_timeout
        row(
            "tasks timeout: the run times out",
            TASKS_TIMEOUT,
            vec![Ev::Timeout(600), cancelled("slow"), ok("fin")],
            &[],
        )
        .run(
            "Failed",
            "PipelineRunTimeout",
            "PipelineRun \"run\" failed due to tasks failed to finish within \"10m0s\"",
        ),
        row(
            "tasks timeout: a failure reported after it is not retried",
            TASKS_TIMEOUT,
            vec![Ev::Timeout(600), fail("slow")],
            &["skip next: PipelineRun Tasks timeout has been reached", "launch fin"],
        ),
        row(
            "the pipeline budget wins when both expired",
            TASKS_TIMEOUT,
            vec![Ev::Timeout(3600), cancelled("slow")],
            &["skip next: PipelineRun timeout has been reached", "skip fin: PipelineRun timeout has been reached"],
        )
        .run("Failed", "PipelineRunTimeout", "PipelineRun \"run\" failed to finish within \"1h0m0s\""),
        row("pipeline timeout cancels what runs", PIPELINE_TIMEOUT, vec![Ev::Timeout(1800)], &["cancel slow"]),
        row(
            "pipeline timeout skips the rest and finally",
            PIPELINE_TIMEOUT,
            vec![Ev::Timeout(1800), cancelled("slow")],
            &["skip next: PipelineRun timeout has been reached", "skip fin: PipelineRun timeout has been reached"],
        )
        .run("Failed", "PipelineRunTimeout", "PipelineRun \"run\" failed to finish within \"30m0s\""),
        row(
            "finally starts when the DAG is done",
            FINALLY_TIMEOUT,
            vec![Ev::Clock(60), ok("a")],
            &["launch fin", "launch fin2"],
        ),
        row(
            "finally budget counts from the finally start",
            FINALLY_TIMEOUT,
            vec![Ev::Clock(60), ok("a"), Ev::Timeout(359)],
            &[],
        ),
        row(
            "finally timeout cancels finally tasks",
            FINALLY_TIMEOUT,
            vec![Ev::Clock(60), ok("a"), Ev::Timeout(360)],
            &["cancel fin", "cancel fin2"],
        ),
        row(
            "finally timeout: the run times out",
            FINALLY_TIMEOUT,
            vec![Ev::Clock(60), ok("a"), Ev::Timeout(360), ok("fin"), cancelled("fin2")],
            &[],
        )
        .run(
            "Failed",
            "PipelineRunTimeout",
            "PipelineRun \"run\" failed due to finally tasks failed to finish within \"5m0s\"",
        ),
        row(
            "pipeline timeout during finally",
            FINALLY_TIMEOUT,
            vec![Ev::Clock(60), ok("a"), Ev::Timeout(3600), cancelled("fin"), cancelled("fin2")],
            &[],
        )
        .run("Failed", "PipelineRunTimeout", "PipelineRun \"run\" failed to finish within \"1h0m0s\""),
    ]
}

const MISSING: &str = r#"  pipelineSpec:
    tasks:
    - {name: a, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - name: b
      params: [{name: v, value: "$(tasks.a.results.r)"}]
      taskSpec: {params: [{name: v}], steps: [{image: alpine, script: "true"}]}
    finally:
    - {name: fin, taskSpec: {S}}
"#;

const FINALLY_RESULTS: &str = r#"  pipelineSpec:
    tasks:
    - {name: a, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: skipped, when: [{input: a, operator: in, values: [b]}], taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    finally:
    - name: uses-a
      params: [{name: v, value: "$(tasks.a.results.r)"}]
      taskSpec: {params: [{name: v}], steps: [{image: alpine, script: "true"}]}
    - name: uses-skipped
      params: [{name: v, value: "$(tasks.skipped.results.r)"}]
      taskSpec: {params: [{name: v}], steps: [{image: alpine, script: "true"}]}
"#;

const PIPELINE_RESULTS: &str = r#"  pipelineSpec:
    results:
    - {name: from-failed, value: $(tasks.f.results.r)}
    - {name: from-skipped, value: $(tasks.s.results.r)}
    - {name: from-ok, value: $(tasks.ok.results.r)}
    - {name: both, value: "$(tasks.ok.results.r)+$(tasks.ok.results.r)"}
    tasks:
    - {name: f, onError: continue, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: s, when: [{input: a, operator: in, values: [b]}], taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - {name: ok, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
"#;

const PIPELINE_RESULT_MISSING: &str = r#"  pipelineSpec:
    results:
    - {name: gone, value: $(tasks.ok.results.r)}
    tasks:
    - {name: ok, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
"#;

pub fn results() -> Vec<Row> {
    vec![
        row(
            "a missing result fails the run; finally still runs",
            MISSING,
            vec![ok("a")],
            &["fail b: PipelineValidationFailed: Could not find result with name r for pipeline task a", "launch fin"],
        ),
        // engine: missing_result_fails_the_run
        row("... with the run failure's reason", MISSING, vec![ok("a"), ok("fin")], &[]).run(
            "Failed",
            "PipelineValidationFailed",
            "Could not find result with name r for pipeline task a",
        ),
        row("a present result is passed on", MISSING, vec![ok_r("a", &[("r", "x\n")])], &["launch b"])
            .check(|f| assert_eq!(param(&st(f, "b").children[0].launch, "v"), ParamValue::Str("x\n".into()))),
        // engine: when_compares_results_verbatim_and_finally_skips_on_missing_results
        row(
            "finally: a result of a when-skipped task is missing",
            FINALLY_RESULTS,
            vec![ok_r("a", &[("r", "x")])],
            &["launch uses-a", "skip uses-skipped: Results were missing"],
        ),
        row(
            "finally: a result a failed task did not write is missing",
            FINALLY_RESULTS,
            vec![fail("a")],
            &["skip uses-a: Results were missing", "skip uses-skipped: Results were missing"],
        )
        .run("Failed", "Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 3"),
        row(
            "finally: a result a successful task did not write is missing",
            FINALLY_RESULTS,
            vec![ok("a")],
            &["skip uses-a: Results were missing", "skip uses-skipped: Results were missing"],
        )
        .run("Succeeded", "Completed", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 3"),
        // engine: pipeline_results_from_unsuccessful_tasks_are_dropped
        row(
            "pipeline results from unsuccessful tasks are dropped",
            PIPELINE_RESULTS,
            vec![fail_r("f", &[("r", "x")]), ok_r("ok", &[("r", "fine")])],
            &[],
        )
        .run("Succeeded", "Completed", "Tasks Completed: 2 (Failed: 1 (Ignored: 1), Cancelled 0), Skipped: 1")
        .check(|f| {
            let r = f.summary().results;
            let want: BTreeMap<String, ParamValue> = [("from-ok", "fine"), ("both", "fine+fine")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ParamValue::Str(v.into())))
                .collect();
            assert_eq!(r, want);
        }),
        row(
            "a pipeline result a successful task did not write fails the run",
            PIPELINE_RESULT_MISSING,
            vec![ok("ok")],
            &[],
        )
        .run(
            "Failed",
            "CouldntGetPipelineResult",
            "invalid pipelineresults [gone], the referenced results don't exist: $(tasks.ok.results.r)",
        )
        .check(|f| assert!(f.summary().results.is_empty())),
    ]
}

const MATRIX: &str = r#"  pipelineSpec:
    tasks:
    - name: m
      matrix: {params: [{name: platform, value: [linux, mac]}, {name: browser, value: [safari, chrome]}]}
      taskSpec: {params: [{name: platform}, {name: browser}], results: [{name: r}], steps: [{image: alpine, script: "true"}]}
    - name: after
      params: [{name: all, value: "$(tasks.m.results.r[*])"}]
      taskSpec: {params: [{name: all, type: array}], steps: [{image: alpine, script: "true"}]}
"#;

const MATRIX_EMPTY: &str = r#"  params: [{name: oses, value: []}]
  pipelineSpec:
    params: [{name: oses, type: array}]
    tasks:
    - name: t
      matrix: {params: [{name: os, value: "$(params.oses[*])"}]}
      taskSpec: {params: [{name: os}], steps: [{image: alpine, script: "true"}]}
    - {name: other, taskSpec: {S}}
    - {name: down, runAfter: [t], taskSpec: {S}}
"#;

const MATRIX_FROM_RESULT: &str = r#"  pipelineSpec:
    tasks:
    - {name: gen, taskSpec: {results: [{name: list, type: array}], steps: [{image: alpine, script: "true"}]}}
    - name: m
      matrix: {params: [{name: x, value: "$(tasks.gen.results.list[*])"}]}
      taskSpec: {params: [{name: x}], steps: [{image: alpine, script: "true"}]}
"#;

pub fn matrix() -> Vec<Row> {
    vec![
        // engine: matrix_fan_out_order_and_aggregation
        row(
            "fan-out: the first param varies fastest",
            MATRIX,
            vec![],
            &[
                "launch m[0] {browser=safari,platform=linux}",
                "launch m[1] {browser=safari,platform=mac}",
                "launch m[2] {browser=chrome,platform=linux}",
                "launch m[3] {browser=chrome,platform=mac}",
            ],
        )
        .check(|f| assert_eq!(st(f, "m").children[3].launch.task_run, "run-m-3")),
        row(
            "a matrixed task is done when every child is",
            MATRIX,
            vec![ok_i("m", 0, &[]), ok_i("m", 1, &[]), ok_i("m", 3, &[])],
            &[],
        ),
        row(
            "results aggregate in combination order",
            MATRIX,
            vec![
                ok_i("m", 3, &[("r", "d")]),
                ok_i("m", 1, &[("r", "b")]),
                ok_i("m", 0, &[("r", "a")]),
                ok_i("m", 2, &[("r", "c")]),
            ],
            &["launch after"],
        )
        .check(|f| {
            let all = ParamValue::Array(["a", "b", "c", "d"].map(String::from).to_vec());
            assert_eq!(param(&st(f, "after").children[0].launch, "all"), all);
        }),
        row(
            "one failed child fails the task",
            MATRIX,
            vec![ok_i("m", 0, &[]), fail_i("m", 1), ok_i("m", 2, &[]), ok_i("m", 3, &[])],
            &["skip after: PipelineRun was stopping"],
        )
        .run("Failed", "Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1"),
        // engine: matrix_with_empty_array_is_skipped
        row(
            "an empty matrix skips the task, and that skip cascades",
            MATRIX_EMPTY,
            vec![],
            &["skip t: Matrix Parameters have an empty array", "launch other", "skip down: Parent Tasks were skipped"],
        ),
        row("... the run is Completed", MATRIX_EMPTY, vec![ok("other")], &[]).run(
            "Succeeded",
            "Completed",
            "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 2",
        ),
        row(
            "a matrix from an array result",
            MATRIX_FROM_RESULT,
            vec![array_result("gen", "list", 2)],
            &["launch m[0] {x=0}", "launch m[1] {x=1}"],
        ),
        row(
            "more than 256 combinations fail the run",
            MATRIX_FROM_RESULT,
            vec![array_result("gen", "list", 300)],
            &["fail m: PipelineValidationFailed: expected 0 <= 300 <= 256: matrix of pipeline task m"],
        ),
    ]
}

const CANCEL: &str = r#"  pipelineSpec:
    tasks:
    - {name: a, taskSpec: {S}}
    - {name: b, taskSpec: {S}}
    - {name: after, runAfter: [a], taskSpec: {S}}
    finally:
    - {name: fin, taskSpec: {S}}
"#;

pub fn cancel() -> Vec<Row> {
    vec![
        row("cancel: running tasks are cancelled", CANCEL, vec![Ev::Cancel], &["cancel a", "cancel b"]),
        // engine: interrupt_cancels_the_run_without_orphans
        row(
            "cancel: the rest and finally are skipped",
            CANCEL,
            vec![Ev::Cancel, ok("b"), cancelled("a")],
            &["skip after: PipelineRun was cancelled", "skip fin: PipelineRun was cancelled"],
        )
        .run("Failed", "Cancelled", "PipelineRun \"run\" was cancelled")
        .check(|f| assert_eq!(st(f, "a").reason, "TaskRunCancelled")),
        row(
            "cancel during finally cancels finally",
            CANCEL,
            vec![ok("a"), ok("b"), ok("after"), Ev::Cancel],
            &["cancel fin"],
        ),
        row(
            "... and the run is cancelled",
            CANCEL,
            vec![ok("a"), ok("b"), ok("after"), Ev::Cancel, cancelled("fin")],
            &[],
        )
        .run("Failed", "Cancelled", "PipelineRun \"run\" was cancelled"),
        row(
            "cancel after the end changes nothing",
            CANCEL,
            vec![ok("a"), ok("b"), ok("after"), ok("fin"), Ev::Cancel],
            &[],
        )
        .run("Succeeded", "Succeeded", "Tasks Completed: 4 (Failed: 0, Cancelled 0), Skipped: 0"),
    ]
}
