//! Table tests for [`PipelineRunFacts`], in the style of Tekton's `dag_test.go` and
//! `pipelinerunstate_test.go`: a fixture (a PipelineRun as YAML, parsed and validated by
//! the real loader), events fed in order, and the actions expected after the last one
//! (plus, where given, the run's condition and a check on the task facts).
//!
//! Rows marked `engine:` state a scenario that `tests/run_behaviour.rs` runs through the
//! real binary; the facts must reach the same outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::model::subst::Vars;
use crate::model::{load_sources, propagate_run_into_spec, validate, ParamValue};
use crate::plan::params::{param_values, param_vars};

// ---- fixtures -------------------------------------------------------------------------

const S: &str = r#"{steps: [{name: s, image: alpine, script: "true"}]}"#;

/// A PipelineRun named `run` with an embedded pipelineSpec (`{S}` = a one-step taskSpec).
fn run_yaml(spec: &str) -> String {
    let spec = spec.replace("{S}", S);
    format!("apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata: {{name: run}}\nspec:\n{spec}")
}

/// Facts for a fixture, with `--param` style overrides; the fixture must validate.
fn facts(spec: &str, overrides: &[(&str, &str)]) -> PipelineRunFacts {
    let text = run_yaml(spec);
    let cat = load_sources(vec![("run.yaml".into(), text.clone())]);
    let diags = validate(&cat);
    assert!(
        cat.diagnostics.is_empty() && diags.is_empty(),
        "fixture invalid: {:?} {:?}\n{text}",
        cat.diagnostics,
        diags
    );
    let pr = &cat.pipeline_runs[0];
    let mut ps = pr.spec.pipeline_spec.clone().expect("fixtures embed their pipelineSpec");
    propagate_run_into_spec(&mut ps, &pr.spec);
    let mut supplied: Vec<(String, ParamValue)> =
        pr.spec.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
    supplied.extend(overrides.iter().map(|(k, v)| (k.to_string(), ParamValue::Str(v.to_string()))));
    let values = param_values(&ps.params, &supplied, "pipelineRun").expect("params resolve");
    let mut ctx = Vars::new();
    ctx.set_str("context.pipelineRun.name", "run");
    ctx.set_str("context.pipelineRun.namespace", "default");
    ctx.set_str("context.pipelineRun.uid", "00000000-0000-0000-0000-000000000000");
    ctx.set_str("context.pipeline.name", "run");
    let mut vars = param_vars(&values);
    vars.then(&ctx).then(&Vars::new());
    let input = RunInput {
        name: "run".into(),
        vars,
        timeouts: Timeouts::from_run(&pr.spec),
        task_timeouts: RunInput::task_timeouts(&pr.spec),
        known_tasks: Some(cat.tasks.iter().map(|t| t.name.clone()).collect()),
    };
    PipelineRunFacts::new(ps, input)
}

// ---- events ---------------------------------------------------------------------------

enum Ev {
    Done(&'static str, usize, Outcome),
    /// The clock moves to this many seconds and deadlines are checked.
    Timeout(u64),
    /// The clock moves to this many seconds.
    Clock(u64),
    Cancel,
}

fn outcome(status: Status, reason: &str, results: &[(&str, &str)]) -> Outcome {
    Outcome {
        status,
        reason: reason.into(),
        message: if status == Status::Succeeded { String::new() } else { format!("{reason}!") },
        results: results.iter().map(|(k, v)| (k.to_string(), ParamValue::Str(v.to_string()))).collect(),
    }
}
fn ok(t: &'static str) -> Ev {
    Ev::Done(t, 0, outcome(Status::Succeeded, "Succeeded", &[]))
}
fn ok_r(t: &'static str, results: &[(&str, &str)]) -> Ev {
    Ev::Done(t, 0, outcome(Status::Succeeded, "Succeeded", results))
}
fn ok_i(t: &'static str, i: usize, results: &[(&str, &str)]) -> Ev {
    Ev::Done(t, i, outcome(Status::Succeeded, "Succeeded", results))
}
fn fail(t: &'static str) -> Ev {
    Ev::Done(t, 0, outcome(Status::Failed, "Failed", &[]))
}
fn fail_i(t: &'static str, i: usize) -> Ev {
    Ev::Done(t, i, outcome(Status::Failed, "Failed", &[]))
}
fn fail_r(t: &'static str, results: &[(&str, &str)]) -> Ev {
    Ev::Done(t, 0, outcome(Status::Failed, "Failed", results))
}
fn timed_out(t: &'static str) -> Ev {
    Ev::Done(t, 0, outcome(Status::TimedOut, "TaskRunTimeout", &[]))
}
fn cancelled(t: &'static str) -> Ev {
    Ev::Done(t, 0, outcome(Status::Cancelled, "TaskRunCancelled", &[]))
}
fn array_result(t: &'static str, name: &str, n: usize) -> Ev {
    let mut o = outcome(Status::Succeeded, "Succeeded", &[]);
    o.results.insert(name.into(), ParamValue::Array((0..n).map(|i| i.to_string()).collect()));
    Ev::Done(t, 0, o)
}

/// Feed the events; the actions after the last one, as text.
fn play(f: &mut PipelineRunFacts, events: Vec<Ev>) -> Vec<String> {
    let mut now = Duration::ZERO;
    let mut acts = f.next_actions(now);
    for e in events {
        match e {
            Ev::Done(t, i, o) => f.on_finished(t, i, o),
            Ev::Timeout(s) => {
                now = Duration::from_secs(s);
                f.on_timeout(now);
            }
            Ev::Clock(s) => now = Duration::from_secs(s),
            Ev::Cancel => f.on_cancel(),
        }
        acts = f.next_actions(now);
    }
    acts.iter().map(|a| a.to_string()).collect()
}

struct Row {
    name: &'static str,
    fx: &'static str,
    params: &'static [(&'static str, &'static str)],
    events: Vec<Ev>,
    want: &'static [&'static str],
    /// (status, reason, message) of the run after the events.
    run: Option<(&'static str, &'static str, &'static str)>,
    check: Option<fn(&PipelineRunFacts)>,
}

fn row(name: &'static str, fx: &'static str, events: Vec<Ev>, want: &'static [&'static str]) -> Row {
    Row { name, fx, params: &[], events, want, run: None, check: None }
}

impl Row {
    fn run(mut self, status: &'static str, reason: &'static str, message: &'static str) -> Row {
        self.run = Some((status, reason, message));
        self
    }
    fn check(mut self, f: fn(&PipelineRunFacts)) -> Row {
        self.check = Some(f);
        self
    }
    fn params(mut self, p: &'static [(&'static str, &'static str)]) -> Row {
        self.params = p;
        self
    }
}

fn run_table(rows: Vec<Row>) -> usize {
    let n = rows.len();
    let mut failures = Vec::new();
    for r in rows {
        let mut f = facts(r.fx, r.params);
        let got = play(&mut f, r.events);
        if got != r.want {
            failures.push(format!("{}:\n  got  {got:?}\n  want {:?}", r.name, r.want));
            continue;
        }
        if let Some((status, reason, message)) = r.run {
            let s = f.summary();
            if (s.status, s.reason.as_str(), s.message.as_str()) != (status, reason, message) {
                failures.push(format!("{}: run {:?} {:?} {:?}", r.name, s.status, s.reason, s.message));
                continue;
            }
            assert!(status == "Running" || f.is_done(), "{}: run has an outcome but is not done", r.name);
        }
        if let Some(check) = r.check {
            check(&f);
        }
    }
    assert!(failures.is_empty(), "{} of {n} rows failed:\n{}", failures.len(), failures.join("\n"));
    n
}

fn st(f: &PipelineRunFacts, t: &str) -> TaskFacts {
    f.task(t).unwrap_or_else(|| panic!("no task {t}")).clone()
}

fn param(l: &LaunchSpec, name: &str) -> ParamValue {
    l.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no param {name}"))
}

#[path = "facts_rows.rs"]
mod rows;

/// Every table, so the row count is checked in one place.
#[test]
fn tables() {
    let tables = [
        rows::when(),
        rows::failure_and_finally(),
        rows::retries(),
        rows::timeouts(),
        rows::results(),
        rows::matrix(),
        rows::cancel(),
    ];
    let n: usize = tables.into_iter().map(run_table).sum();
    assert!(n >= 40, "{n} rows");
}

#[test]
fn next_deadline_follows_the_phase() {
    let fx = "  timeouts: {pipeline: 1h, tasks: 10m}\n  pipelineSpec:\n    tasks:\n    - {name: a, taskSpec: {S}}\n    finally:\n    - {name: fin, taskSpec: {S}}\n";
    let mut f = facts(fx, &[]);
    f.next_actions(Duration::ZERO);
    assert_eq!(f.next_deadline(), Some(Duration::from_secs(600)), "tasks budget first");
    assert_eq!(f.on_timeout(Duration::from_secs(599)), None, "nothing expired yet");
    f.on_finished("a", 0, outcome(Status::Succeeded, "Succeeded", &[]));
    f.next_actions(Duration::from_secs(100));
    // finally = pipeline - tasks = 50m from when finally started
    assert_eq!(f.next_deadline(), Some(Duration::from_secs(3100)), "finally: 100s + 50m, before the pipeline's 1h");
    f.on_finished("fin", 0, outcome(Status::Succeeded, "Succeeded", &[]));
    assert!(f.next_actions(Duration::from_secs(200)).is_empty());
    assert!(f.is_done());
    assert_eq!(f.next_deadline(), None);
}

#[test]
fn launch_specs_carry_resolved_params_names_and_timeouts() {
    let fx = r#"  params: [{name: greeting, value: hi}]
  taskRunSpecs: [{pipelineTaskName: b, timeout: 5m}]
  pipelineSpec:
    params: [{name: greeting}]
    tasks:
    - {name: a, retries: 2, timeout: 90s, taskSpec: {results: [{name: r}], steps: [{image: alpine, script: "true"}]}}
    - name: b
      params: [{name: v, value: "$(tasks.a.results.r)-$(params.greeting)"}, {name: count, value: "$(context.pipelineTask.retries)"}]
      taskSpec: {params: [{name: v}, {name: count}], steps: [{image: alpine, script: "true"}]}
"#;
    let mut f = facts(fx, &[]);
    let a = f.next_actions(Duration::ZERO);
    let Action::Launch(a) = &a[0] else { panic!("{a:?}") };
    assert_eq!((a.task_run.as_str(), a.retries, a.timeout), ("run-a", 2, Duration::from_secs(90)));
    assert!(a.embedded && a.task_ref.is_none());
    assert_eq!(a.propagated, vec![("greeting".to_string(), ParamValue::Str("hi".into()))]);
    f.on_finished("a", 0, outcome(Status::Succeeded, "Succeeded", &[("r", "x")]));
    let b = f.next_actions(Duration::ZERO);
    let Action::Launch(b) = &b[0] else { panic!("{b:?}") };
    assert_eq!(param(b, "v"), ParamValue::Str("x-hi".into()));
    assert_eq!(param(b, "count"), ParamValue::Str("0".into()));
    assert_eq!(b.timeout, Duration::from_secs(300), "taskRunSpecs timeout wins");
}

#[test]
fn timeouts_derive_the_missing_budget() {
    let t = |y: &str| {
        let cat = load_sources(vec![("r.yaml".into(), run_yaml(y))]);
        Timeouts::from_run(&cat.pipeline_runs[0].spec)
    };
    let m = |s: u64| Some(Duration::from_secs(60 * s));
    let ps = "  pipelineSpec: {tasks: [{name: a, taskSpec: {S}}]}\n";
    assert_eq!(t(ps), Timeouts { pipeline: DEFAULT_TIMEOUT, tasks: None, finally: None });
    let with = |x: &str| t(&format!("  timeouts: {x}\n{ps}"));
    assert_eq!(
        with("{pipeline: 1h, tasks: 40m}"),
        Timeouts { pipeline: DEFAULT_TIMEOUT, tasks: m(40), finally: m(20) }
    );
    assert_eq!(
        with("{pipeline: 1h, finally: 15m}"),
        Timeouts { pipeline: DEFAULT_TIMEOUT, tasks: m(45), finally: m(15) }
    );
    assert_eq!(with("{pipeline: \"0\"}"), Timeouts { pipeline: Duration::ZERO, tasks: None, finally: None });
}

#[test]
fn matrix_results_aggregate_by_combination_and_lengths_are_visible() {
    // engine: matrix_lengths_and_partial_aggregation
    let fx = r#"  pipelineSpec:
    tasks:
    - name: t
      matrix: {params: [{name: os, value: [linux, mac, win]}]}
      taskSpec: {params: [{name: os}], results: [{name: r}], steps: [{image: alpine, script: "true"}]}
    - name: count
      params:
      - {name: total, value: $(tasks.t.matrix.length)}
      - {name: produced, value: $(tasks.t.matrix.r.length)}
      - {name: all, value: "$(tasks.t.results.r[*])"}
      taskSpec: {params: [{name: total}, {name: produced}, {name: all, type: array}], steps: [{image: alpine, script: "true"}]}
"#;
    let mut f = facts(fx, &[]);
    assert_eq!(f.next_actions(Duration::ZERO).len(), 3);
    f.on_finished("t", 2, outcome(Status::Succeeded, "Succeeded", &[]));
    f.on_finished("t", 1, outcome(Status::Succeeded, "Succeeded", &[("r", "mac")]));
    f.on_finished("t", 0, outcome(Status::Succeeded, "Succeeded", &[("r", "linux")]));
    let acts = f.next_actions(Duration::ZERO);
    let Action::Launch(c) = &acts[0] else { panic!("{acts:?}") };
    assert_eq!(param(c, "total"), ParamValue::Str("3".into()));
    assert_eq!(param(c, "produced"), ParamValue::Str("2".into()));
    assert_eq!(param(c, "all"), ParamValue::Array(vec!["linux".into(), "mac".into()]));
    let mut want = BTreeMap::new();
    want.insert("r".to_string(), ParamValue::Array(vec!["linux".into(), "mac".into()]));
    assert_eq!(st(&f, "t").results, want);
}
