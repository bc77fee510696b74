//! Tekton's PipelineRun semantics as a pure state machine (Tekton's `PipelineRunFacts`
//! and `runNextSchedulableTask`): events in (`on_finished`, `on_timeout`, `on_cancel`),
//! actions out as values (`Launch`, `Skip`, `Cancel`, `FailRun`). No tokio, no
//! filesystem, no clock: the driver passes the time in ([`Time`], time since the run
//! started) and derives TaskRun ids from the names given here.
//!
//! Rules (`docs/pipelines.md`, `pipelinerunresolution.go`):
//! - a task is decided once every parent (runAfter and result producers) is done;
//! - a `when` skip does not cascade through `runAfter`; any other skip does
//!   (`Parent Tasks were skipped`); a consumer of a missing result is skipped
//!   (`Results were missing`) when the producer was when-skipped, the consumer is a
//!   finally task or has `onError: continue`, and otherwise fails the run;
//! - a failure (not under `onError: continue`) makes the run stop: running tasks finish,
//!   nothing new starts, then `finally` runs;
//! - cancellation and a `pipeline` timeout cancel what runs and skip `finally`; a
//!   `tasks` timeout cancels the DAG and still runs `finally`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::matrix::{Combo, NoFanOut};
use super::refs::{referenced_tasks, result_refs};
use crate::model::dag::{Dag, Readiness};
use crate::model::subst::Vars;
use crate::model::{parse_duration, ParamValue, PipelineRunSpec, PipelineSpec, PipelineTask};

/// Tekton's default TaskRun / PipelineRun timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Time since the PipelineRun started, on the driver's clock.
pub type Time = Duration;

/// Why a pipeline task gets no TaskRun (Tekton's skip reasons, verbatim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    WhenFalse,
    ParentSkipped,
    MissingResults,
    Stopping,
    Cancelled,
    PipelineTimeout,
    TasksTimeout,
    FinallyTimeout,
    EmptyMatrix,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::WhenFalse => "When Expressions evaluated to false",
            SkipReason::ParentSkipped => "Parent Tasks were skipped",
            SkipReason::MissingResults => "Results were missing",
            SkipReason::Stopping => "PipelineRun was stopping",
            SkipReason::Cancelled => "PipelineRun was cancelled",
            SkipReason::PipelineTimeout => "PipelineRun timeout has been reached",
            SkipReason::TasksTimeout => "PipelineRun Tasks timeout has been reached",
            SkipReason::FinallyTimeout => "PipelineRun Finally timeout has been reached",
            SkipReason::EmptyMatrix => "Matrix Parameters have an empty array",
        }
    }
}

/// The three budgets of `spec.timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Pipeline,
    Tasks,
    Finally,
}

impl TimeoutPhase {
    /// What the tasks it stops are skipped with (and the console says).
    pub fn skip_reason(self) -> SkipReason {
        match self {
            TimeoutPhase::Pipeline => SkipReason::PipelineTimeout,
            TimeoutPhase::Tasks => SkipReason::TasksTimeout,
            TimeoutPhase::Finally => SkipReason::FinallyTimeout,
        }
    }
}

/// How one TaskRun attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Planning: the TaskRun would run, so its results are not known yet.
    Planned,
}

/// One finished TaskRun attempt, as the executor reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// TaskRun condition reason (`Succeeded`, `Failed`, `TaskRunTimeout`, ...).
    pub reason: String,
    pub message: String,
    pub results: BTreeMap<String, ParamValue>,
}

/// A run-level failure with Tekton's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure {
    pub reason: String,
    pub message: String,
}

impl RunFailure {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        RunFailure { reason: reason.into(), message: message.into() }
    }
}

/// One TaskRun to start: a pipeline task, or one matrix combination of it.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub task: String,
    pub finally: bool,
    /// Matrix combination index (0 without a matrix).
    pub index: usize,
    /// The combination's params, for a matrixed task.
    pub combination: Option<Vec<(String, String)>>,
    /// 0 for the first attempt; a retry launches the same TaskRun again with the next.
    pub attempt: u32,
    pub retries: u32,
    /// `<run>-<task>`, or `<run>-<task>-<i>` for a matrix child (kept across retries).
    pub task_run: String,
    /// `task`, or `task[i]` for a matrix child.
    pub label: String,
    /// The pipeline task's params after the pipeline phases, then the combination's.
    pub params: Vec<(String, ParamValue)>,
    /// Embedded specs: the pipeline params propagated below `params`.
    pub propagated: Vec<(String, ParamValue)>,
    /// Embedded specs: the pipeline phases applied to the spec before its own.
    pub phase: Vars,
    pub embedded: bool,
    /// The referenced Task's name (`taskRef`), if any.
    pub task_ref: Option<String>,
    pub timeout: Duration,
    /// The results it consumes, by variable (`tasks.<t>.results.<r>`), with their values.
    pub upstream: Vec<(String, ParamValue)>,
    /// Its workspace bindings: (task workspace, pipeline workspace, subPath after the
    /// pipeline's phases).
    pub workspaces: Vec<(String, String, Option<String>)>,
}

/// What the driver should do next.
#[derive(Debug, Clone)]
pub enum Action {
    Launch(Box<LaunchSpec>),
    Skip {
        task: String,
        reason: SkipReason,
    },
    /// Cancel every running TaskRun of `task`; each reports back through `on_finished`.
    Cancel {
        task: String,
    },
    /// The run fails (its reason wins over the task counts); `task` is marked failed.
    FailRun {
        task: String,
        failure: RunFailure,
    },
    /// Planning: `task` would run once `after` (which would run first) has: its inputs
    /// are not known yet. The task counts as succeeded with unknown results.
    After {
        task: String,
        after: String,
    },
}

/// The driver's word on a launch before it happens (it builds the TaskRun and, planning,
/// its cache key): go ahead, fail the run (an invalid TaskRun), or (planning) wait for a
/// task that would run first.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Go,
    Fail(RunFailure),
    After(String),
}

impl fmt::Display for Action {
    /// Compact text for logs and the tables: `launch m[1] {x=a}`, `skip b: <reason>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Launch(l) => {
                write!(f, "launch {}", l.label)?;
                if l.attempt > 0 {
                    write!(f, " retry {}", l.attempt)?;
                }
                if let Some(c) = &l.combination {
                    let kv: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, " {{{}}}", kv.join(","))?;
                }
                Ok(())
            }
            Action::Skip { task, reason } => write!(f, "skip {task}: {}", reason.as_str()),
            Action::Cancel { task } => write!(f, "cancel {task}"),
            Action::FailRun { task, failure } => write!(f, "fail {task}: {}: {}", failure.reason, failure.message),
            Action::After { task, after } => write!(f, "plan {task}: after {after}"),
        }
    }
}

/// `spec.timeouts` (or the v1beta1 `timeout`) as Tekton derives them; zero = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub pipeline: Duration,
    pub tasks: Option<Duration>,
    pub finally: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { pipeline: DEFAULT_TIMEOUT, tasks: None, finally: None }
    }
}

impl Timeouts {
    /// Unset `tasks` = `pipeline - finally`, unset `finally` = `pipeline - tasks` (when
    /// both operands are set and non-zero).
    pub fn from_run(run: &PipelineRunSpec) -> Timeouts {
        let t = run.timeouts.clone().unwrap_or_default();
        let dur = |s: &Option<String>| s.as_deref().and_then(parse_duration);
        let pipeline = dur(&t.pipeline).or(dur(&run.timeout)).unwrap_or(DEFAULT_TIMEOUT);
        let mut tasks = dur(&t.tasks);
        let mut finally = dur(&t.finally);
        if !pipeline.is_zero() {
            if tasks.is_none() {
                if let Some(f) = finally.filter(|f| !f.is_zero()) {
                    tasks = pipeline.checked_sub(f);
                }
            }
            if finally.is_none() {
                if let Some(tt) = tasks.filter(|f| !f.is_zero()) {
                    finally = pipeline.checked_sub(tt);
                }
            }
        }
        let nz = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Timeouts { pipeline, tasks: nz(tasks), finally: nz(finally) }
    }
}

/// What the facts need besides the pipeline spec.
#[derive(Debug, Clone, Default)]
pub struct RunInput {
    /// The PipelineRun's name (TaskRun names derive from it).
    pub name: String,
    /// Pipeline-level variables after Tekton's pipeline phases: params, context,
    /// `workspaces.<w>.bound`.
    pub vars: Vars,
    pub timeouts: Timeouts,
    /// `taskRunSpecs[].timeout` by pipeline task.
    pub task_timeouts: BTreeMap<String, Duration>,
    /// Referenced Tasks that exist; `None`: every `taskRef` resolves.
    pub known_tasks: Option<BTreeSet<String>>,
}

impl RunInput {
    /// `taskRunSpecs[].timeout` of a PipelineRun.
    pub fn task_timeouts(run: &PipelineRunSpec) -> BTreeMap<String, Duration> {
        run.task_run_specs
            .iter()
            .filter_map(|s| Some((s.pipeline_task_name.clone(), parse_duration(s.timeout.as_deref()?)?)))
            .collect()
    }
}

/// Where a pipeline task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    /// `ignored` under `onError: continue`.
    Failed {
        ignored: bool,
        timed_out: bool,
        cancelled: bool,
    },
    Skipped(SkipReason),
}

/// One TaskRun of a pipeline task (Tekton's `TaskRunFacts`, per child).
#[derive(Debug, Clone)]
pub struct ChildFacts {
    pub launch: LaunchSpec,
    /// Attempts finished so far.
    pub attempts: u32,
    /// The last attempt's outcome, once no retry follows.
    pub outcome: Option<Outcome>,
}

/// One pipeline task's facts.
#[derive(Debug, Clone)]
pub struct TaskFacts {
    pub name: String,
    pub finally: bool,
    pub status: TaskStatus,
    /// Condition reason: the TaskRun's, `FailureIgnored`, a skip or run failure reason.
    pub reason: String,
    pub message: String,
    /// Results (a matrix: string results aggregated into arrays by combination).
    pub results: BTreeMap<String, ParamValue>,
    pub matrix: bool,
    pub children: Vec<ChildFacts>,
    /// Planning: the task would run, so its results are unknown.
    pub planned: bool,
}

impl TaskFacts {
    fn new(name: &str, finally: bool) -> Self {
        TaskFacts {
            name: name.to_string(),
            finally,
            status: TaskStatus::Pending,
            reason: String::new(),
            message: String::new(),
            results: BTreeMap::new(),
            matrix: false,
            children: vec![],
            planned: false,
        }
    }
    pub fn is_done(&self) -> bool {
        !matches!(self.status, TaskStatus::Pending | TaskStatus::Running)
    }
    /// `$(tasks.t.status)`: Succeeded / Failed / None.
    pub fn exec_status(&self) -> &'static str {
        match self.status {
            TaskStatus::Succeeded => "Succeeded",
            TaskStatus::Failed { .. } => "Failed",
            _ => "None",
        }
    }
    /// Attempts of the busiest TaskRun.
    pub fn attempts(&self) -> u32 {
        self.children.iter().map(|c| c.attempts).max().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tasks,
    Finally,
    Done,
}

enum Decision {
    Run(Vec<LaunchSpec>),
    Skip(SkipReason),
    FailRun(RunFailure),
    After(String),
}

/// The state of one PipelineRun.
#[derive(Debug)]
pub struct PipelineRunFacts {
    pub(super) input: RunInput,
    pub(super) spec: Arc<PipelineSpec>,
    /// A pipeline param value holds a `$(` reference (so the param phase can bring a
    /// result reference into a pipeline task).
    params_have_refs: bool,
    dag: Dag,
    readiness: Readiness,
    phase: Phase,
    pub(super) tasks: BTreeMap<String, TaskFacts>,
    /// Why nothing new starts.
    stopping: Option<SkipReason>,
    pub(super) failure: Option<RunFailure>,
    pub(super) timed_out: Option<TimeoutPhase>,
    pub(super) cancelled: bool,
    finally_started: Option<Time>,
    /// Actions produced by events, handed out by the next `next_actions`.
    queued: Vec<Action>,
    /// TaskRuns launched and not finished (retries included).
    running: usize,
}

impl PipelineRunFacts {
    /// Facts for a validated pipeline spec (DAG errors were reported by validation).
    pub fn new(spec: PipelineSpec, input: RunInput) -> Self {
        let (dag, _) = Dag::build(&spec.tasks);
        Self::with_dag(Arc::new(spec), dag, input)
    }

    /// [`new`](Self::new) with the spec's DAG already built (by the caller, who needs it too).
    pub fn with_dag(spec: Arc<PipelineSpec>, dag: Dag, input: RunInput) -> Self {
        let readiness = Readiness::new(&dag, spec.tasks.iter().map(|t| t.name.as_str()));
        let mut tasks = BTreeMap::new();
        for t in &spec.tasks {
            tasks.insert(t.name.clone(), TaskFacts::new(&t.name, false));
        }
        for t in &spec.finally {
            tasks.insert(t.name.clone(), TaskFacts::new(&t.name, true));
        }
        PipelineRunFacts {
            params_have_refs: input.vars.first_phase_has_refs(),
            input,
            spec,
            dag,
            readiness,
            phase: Phase::Tasks,
            tasks,
            stopping: None,
            failure: None,
            timed_out: None,
            cancelled: false,
            finally_started: None,
            queued: vec![],
            running: 0,
        }
    }

    pub fn task(&self, name: &str) -> Option<&TaskFacts> {
        self.tasks.get(name)
    }
    /// Every task and finally task (by name).
    pub fn tasks(&self) -> impl Iterator<Item = &TaskFacts> {
        self.tasks.values()
    }
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done && self.queued.is_empty()
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Start or skip everything that can be decided now; move to `finally` and to the
    /// end when a phase has nothing left running.
    pub fn next_actions(&mut self, now: Time) -> Vec<Action> {
        self.next_actions_with(now, &mut |_| Gate::Go)
    }

    /// [`next_actions`](Self::next_actions), asking `gate` about each TaskRun before it
    /// is launched (a retry is not asked again).
    pub fn next_actions_with(&mut self, now: Time, gate: &mut dyn FnMut(&LaunchSpec) -> Gate) -> Vec<Action> {
        let mut out = std::mem::take(&mut self.queued);
        while self.phase != Phase::Done {
            self.schedule_ready(&mut out, gate);
            if self.running > 0 {
                break;
            }
            // nothing running and nothing ready: whatever is left is skipped
            let finally = self.phase == Phase::Finally;
            let reason = self.stopping.unwrap_or(SkipReason::Stopping);
            let left: Vec<String> =
                self.tasks.values().filter(|t| t.finally == finally && !t.is_done()).map(|t| t.name.clone()).collect();
            for name in left {
                self.skip(&name, reason, &mut out);
            }
            self.advance(now, &mut out);
        }
        out
    }

    /// The next phase: `finally` (or its skips), then the end.
    fn advance(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.phase == Phase::Finally || self.spec.finally.is_empty() {
            self.phase = Phase::Done;
            return;
        }
        if self.cancelled || self.timed_out == Some(TimeoutPhase::Pipeline) {
            let reason = if self.cancelled { SkipReason::Cancelled } else { SkipReason::PipelineTimeout };
            let names: Vec<String> = self.spec.finally.iter().map(|t| t.name.clone()).collect();
            for name in names {
                self.skip(&name, reason, out);
            }
            self.phase = Phase::Done;
            return;
        }
        self.phase = Phase::Finally;
        self.finally_started = Some(now);
        self.stopping = None; // finally tasks start regardless
        self.dag = Dag { names: self.spec.finally.iter().map(|t| t.name.clone()).collect(), parents: BTreeMap::new() };
        self.readiness = Readiness::new(&self.dag, self.spec.finally.iter().map(|t| t.name.as_str()));
    }

    fn schedule_ready(&mut self, out: &mut Vec<Action>, gate: &mut dyn FnMut(&LaunchSpec) -> Gate) {
        let finally = self.phase == Phase::Finally;
        loop {
            let ready = self.readiness.take_ready();
            if ready.is_empty() {
                return;
            }
            for name in ready {
                if self.tasks.get(&name).is_none_or(|t| t.status != TaskStatus::Pending) {
                    self.readiness.mark_done(&name);
                    continue;
                }
                let list = if finally { &self.spec.finally } else { &self.spec.tasks };
                let Some(pt) = list.iter().find(|t| t.name == name) else { continue };
                let matrix = pt.matrix.is_some();
                match self.decide(pt, finally, gate) {
                    Decision::Skip(reason) => self.skip(&name, reason, out),
                    Decision::FailRun(failure) => self.fail_run(&name, failure, finally, out),
                    Decision::After(after) => {
                        let st = self.tasks.get_mut(&name).expect("task exists");
                        st.status = TaskStatus::Succeeded;
                        st.planned = true;
                        st.reason = "Planned".into();
                        out.push(Action::After { task: name.clone(), after });
                    }
                    Decision::Run(launches) => {
                        let st = self.tasks.get_mut(&name).expect("task exists");
                        st.status = TaskStatus::Running;
                        st.matrix = matrix;
                        self.running += launches.len();
                        for l in launches {
                            out.push(Action::Launch(Box::new(l.clone())));
                            st.children.push(ChildFacts { launch: l, attempts: 0, outcome: None });
                        }
                    }
                }
                if self.tasks.get(&name).is_some_and(|t| t.is_done()) {
                    self.readiness.mark_done(&name);
                }
            }
        }
    }

    fn skip(&mut self, name: &str, reason: SkipReason, out: &mut Vec<Action>) {
        let Some(st) = self.tasks.get_mut(name) else { return };
        if st.is_done() {
            return;
        }
        st.status = TaskStatus::Skipped(reason);
        st.reason = reason.as_str().to_string();
        self.readiness.mark_done(name);
        out.push(Action::Skip { task: name.to_string(), reason });
    }

    fn fail_run(&mut self, name: &str, failure: RunFailure, finally: bool, out: &mut Vec<Action>) {
        if let Some(st) = self.tasks.get_mut(name) {
            st.status = TaskStatus::Failed { ignored: false, timed_out: false, cancelled: false };
            st.reason = failure.reason.clone();
            st.message = failure.message.clone();
        }
        self.failure.get_or_insert_with(|| failure.clone());
        if !finally {
            self.stopping.get_or_insert(SkipReason::Stopping);
        }
        out.push(Action::FailRun { task: name.to_string(), failure });
    }

    /// A TaskRun attempt finished. A failed or timed-out attempt with retries left (and
    /// its phase neither cancelled nor timed out) is launched again.
    pub fn on_finished(&mut self, task: &str, index: usize, outcome: Outcome) {
        let stopped = self.phase_stopped();
        let Some(st) = self.tasks.get_mut(task) else { return };
        let Some(ch) = st.children.iter_mut().find(|c| c.launch.index == index) else { return };
        if ch.outcome.is_some() {
            return;
        }
        ch.attempts += 1;
        let retryable = matches!(outcome.status, Status::Failed | Status::TimedOut) && !stopped;
        if retryable && ch.attempts <= ch.launch.retries {
            let mut l = ch.launch.clone();
            l.attempt = ch.attempts;
            self.queued.push(Action::Launch(Box::new(l)));
            return;
        }
        ch.outcome = Some(outcome);
        self.running = self.running.saturating_sub(1);
        if st.children.iter().all(|c| c.outcome.is_some()) {
            self.complete(task);
        }
    }

    /// Whether the current phase's TaskRuns were cancelled (no retries then).
    fn phase_stopped(&self) -> bool {
        self.cancelled
            || match self.timed_out {
                Some(TimeoutPhase::Pipeline) => true,
                Some(TimeoutPhase::Tasks) => self.phase == Phase::Tasks,
                Some(TimeoutPhase::Finally) => self.phase == Phase::Finally,
                None => false,
            }
    }

    /// Every TaskRun of `task` finished: its status, reason and results.
    fn complete(&mut self, task: &str) {
        let finally = self.tasks.get(task).is_some_and(|t| t.finally);
        let list = if finally { &self.spec.finally } else { &self.spec.tasks };
        let ignore = list.iter().find(|t| t.name == task).is_some_and(|t| t.on_error.as_deref() == Some("continue"));
        let st = self.tasks.get_mut(task).expect("task exists");
        st.children.sort_by_key(|c| c.launch.index);
        let outcomes: Vec<&Outcome> = st.children.iter().filter_map(|c| c.outcome.as_ref()).collect();
        if st.matrix {
            let mut agg: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for o in &outcomes {
                for (k, v) in &o.results {
                    if let ParamValue::Str(s) = v {
                        agg.entry(k.clone()).or_default().push(s.clone());
                    }
                }
            }
            st.results = agg.into_iter().map(|(k, v)| (k, ParamValue::Array(v))).collect();
        } else if let Some(o) = outcomes.first() {
            st.results = o.results.clone();
        }
        st.planned = outcomes.iter().any(|o| o.status == Status::Planned);
        match outcomes.iter().find(|o| !matches!(o.status, Status::Succeeded | Status::Planned)) {
            None => {
                st.status = TaskStatus::Succeeded;
                st.reason = if st.planned { "Planned".into() } else { "Succeeded".into() };
            }
            Some(bad) => {
                let timed_out = bad.status == Status::TimedOut;
                let cancelled = bad.status == Status::Cancelled;
                st.reason = if ignore && !cancelled { "FailureIgnored".into() } else { bad.reason.clone() };
                st.message = bad.message.clone();
                st.status = TaskStatus::Failed { ignored: ignore, timed_out, cancelled };
                if !ignore && !finally {
                    self.stopping.get_or_insert(SkipReason::Stopping);
                }
            }
        }
        self.readiness.mark_done(task);
    }

    /// Cancel the run: what runs is cancelled, nothing new starts, finally is skipped.
    pub fn on_cancel(&mut self) {
        if self.cancelled || self.phase == Phase::Done {
            return;
        }
        self.cancelled = true;
        self.stopping = Some(SkipReason::Cancelled);
        self.cancel_running();
    }

    /// A deadline passed: work out which budget expired and stop its phase. Returns the
    /// phase that timed out (none when no deadline has passed at `now`).
    pub fn on_timeout(&mut self, now: Time) -> Option<TimeoutPhase> {
        let which = self.expired(now)?;
        self.timed_out = Some(which);
        self.stopping = Some(which.skip_reason());
        self.cancel_running();
        Some(which)
    }

    fn cancel_running(&mut self) {
        for st in self.tasks.values().filter(|t| t.status == TaskStatus::Running) {
            self.queued.push(Action::Cancel { task: st.name.clone() });
        }
    }

    fn deadlines(&self) -> [(TimeoutPhase, Option<Time>); 3] {
        let t = &self.input.timeouts;
        let pipeline = Some(t.pipeline).filter(|d| !d.is_zero());
        let fired = |p| self.timed_out == Some(p) || self.timed_out == Some(TimeoutPhase::Pipeline);
        let tasks = t.tasks.filter(|_| self.phase == Phase::Tasks && self.timed_out.is_none());
        let finally = match (self.finally_started, t.finally) {
            (Some(s), Some(d)) if self.phase == Phase::Finally && !fired(TimeoutPhase::Finally) => Some(s + d),
            _ => None,
        };
        let pipeline = pipeline.filter(|_| !fired(TimeoutPhase::Pipeline));
        [(TimeoutPhase::Pipeline, pipeline), (TimeoutPhase::Tasks, tasks), (TimeoutPhase::Finally, finally)]
    }

    /// The earliest deadline still ahead (time since the run started).
    pub fn next_deadline(&self) -> Option<Time> {
        if self.phase == Phase::Done {
            return None;
        }
        self.deadlines().iter().filter_map(|(_, d)| *d).min()
    }

    /// The pipeline budget wins when several expired together.
    fn expired(&self, now: Time) -> Option<TimeoutPhase> {
        if self.phase == Phase::Done {
            return None;
        }
        self.deadlines().iter().find(|(_, d)| d.is_some_and(|d| now >= d)).map(|(p, _)| *p)
    }

    /// Decide a pipeline task whose parents are all done.
    fn decide(&self, pt: &PipelineTask, finally: bool, gate: &mut dyn FnMut(&LaunchSpec) -> Gate) -> Decision {
        if let Some(reason) = self.stopping {
            return Decision::Skip(reason);
        }
        // parents skipped for a reason other than `when` cascade
        for p in self.dag.parents.get(&pt.name).into_iter().flatten() {
            if let Some(TaskStatus::Skipped(r)) = self.tasks.get(p).map(|t| &t.status) {
                if *r != SkipReason::WhenFalse {
                    return Decision::Skip(SkipReason::ParentSkipped);
                }
            }
        }
        // result references, looked for after the pipeline's param phase (a param value
        // may bring one in)
        let scanned = self.after_params(pt);
        if let Some(d) = self.missing_result(&scanned, pt, finally) {
            return d;
        }
        let vars = self.vars_for(&scanned, finally);
        for w in &pt.when {
            match crate::model::cel::when_holds(w, &vars) {
                Ok(true) => {}
                Ok(false) => return Decision::Skip(SkipReason::WhenFalse),
                Err(e) => {
                    return Decision::FailRun(RunFailure::new(
                        "CELEvaluationFailed",
                        format!("pipeline task {}: {e}", pt.name),
                    ))
                }
            }
        }
        match self.launches(pt, &vars, finally) {
            Decision::Run(launches) => {
                for l in &launches {
                    match gate(l) {
                        Gate::Go => {}
                        Gate::Fail(f) => return Decision::FailRun(f),
                        Gate::After(t) => return Decision::After(t),
                    }
                }
                Decision::Run(launches)
            }
            other => other,
        }
    }

    /// The pipeline task after the pipeline's param phase alone.
    /// Without a reference in any param value, it has the same references as `pt`.
    fn after_params<'t>(&self, pt: &'t PipelineTask) -> std::borrow::Cow<'t, PipelineTask> {
        if !self.params_have_refs {
            return std::borrow::Cow::Borrowed(pt);
        }
        let mut v = serde_json::to_value(pt).unwrap_or_default();
        self.input.vars.first_phase().apply_json(&mut v, &[]);
        std::borrow::Cow::Owned(serde_json::from_value(v).unwrap_or_else(|_| pt.clone()))
    }

    fn missing_result(&self, scanned: &PipelineTask, pt: &PipelineTask, finally: bool) -> Option<Decision> {
        let continue_on_error = pt.on_error.as_deref() == Some("continue");
        for (producer, result) in result_refs(scanned) {
            let Some(st) = self.tasks.get(&producer) else { continue };
            if st.planned {
                // planning: the producer would run first, so its results are unknown
                return Some(Decision::After(producer));
            }
            if st.results.contains_key(&result) {
                continue;
            }
            // a DAG consumer of a non-when-skipped producer was skipped as its child already
            let tolerated = finally || continue_on_error || st.status == TaskStatus::Skipped(SkipReason::WhenFalse);
            return Some(if tolerated {
                Decision::Skip(SkipReason::MissingResults)
            } else {
                Decision::FailRun(RunFailure::new(
                    "PipelineValidationFailed",
                    format!("Could not find result with name {result} for pipeline task {producer}"),
                ))
            });
        }
        None
    }

    /// Variables for a pipeline task: the pipeline's, `context.pipelineTask.retries`,
    /// matrix lengths, results of the tasks it names, and (finally) execution statuses.
    fn vars_for(&self, pt: &PipelineTask, finally: bool) -> Vars {
        let mut v = Vars::new();
        v.set_str("context.pipelineTask.retries", pt.retries.to_string());
        let mut status = Vars::new();
        let mut results = Vars::new();
        let referenced = if finally { BTreeSet::new() } else { referenced_tasks(pt) };
        let visible: Vec<&TaskFacts> = if finally {
            self.tasks.values().collect()
        } else {
            referenced.iter().filter_map(|n| self.tasks.get(n)).filter(|t| !t.finally).collect()
        };
        for st in visible {
            let scope = if st.finally { "finally" } else { "tasks" };
            for (r, val) in &st.results {
                results.set(format!("{scope}.{}.results.{r}", st.name), val.clone());
            }
            if st.matrix {
                v.set_str(format!("tasks.{}.matrix.length", st.name), st.children.len().to_string());
                for (r, val) in &st.results {
                    if let ParamValue::Array(a) = val {
                        v.set_str(format!("tasks.{}.matrix.{r}.length", st.name), a.len().to_string());
                    }
                }
            }
        }
        if finally {
            for st in self.tasks.values().filter(|t| !t.finally) {
                status.set_str(format!("tasks.{}.status", st.name), st.exec_status());
                status.set_str(format!("tasks.{}.reason", st.name), st.reason.clone());
            }
            status.set_str("tasks.status", self.aggregate_status());
        }
        let mut all = self.input.vars.clone();
        all.then(&v).then(&status).then(&results);
        all
    }

    /// `$(tasks.status)`: Failed, None (everything skipped), Completed (some skipped),
    /// Succeeded.
    fn aggregate_status(&self) -> &'static str {
        let dag = || self.tasks.values().filter(|t| !t.finally);
        if dag().any(|t| matches!(t.status, TaskStatus::Failed { .. })) {
            return "Failed";
        }
        let any_skipped = dag().any(|t| matches!(t.status, TaskStatus::Skipped(_)));
        let all_none = !dag().any(|t| t.status == TaskStatus::Succeeded);
        match (any_skipped, all_none) {
            (true, true) => "None",
            (true, false) => "Completed",
            _ => "Succeeded",
        }
    }

    /// The TaskRuns of a pipeline task that is to run (matrix: one per combination).
    fn launches(&self, pt: &PipelineTask, vars: &Vars, finally: bool) -> Decision {
        let embedded = pt.task_spec.is_some();
        let task_ref = if embedded { None } else { pt.task_ref.as_ref().and_then(|r| r.name.clone()) };
        if !embedded {
            let Some(r) = &pt.task_ref else {
                return Decision::FailRun(RunFailure::new(
                    "PipelineValidationFailed",
                    format!("pipeline task {} has neither taskRef nor taskSpec", pt.name),
                ));
            };
            let name = r.name.as_deref().unwrap_or("");
            if self.input.known_tasks.as_ref().is_some_and(|k| !k.contains(name)) {
                return Decision::FailRun(RunFailure::new(
                    "CouldntGetTask",
                    format!("Task {name:?} not found for pipeline task {}", pt.name),
                ));
            }
        }
        let combos = match self.combinations(pt, vars) {
            Ok(c) => c,
            Err(d) => return d,
        };
        let propagated: Vec<(String, ParamValue)> = if embedded {
            let p = |name: &str| self.input.vars.get(&format!("params.{name}")).cloned();
            self.spec.params.iter().filter_map(|d| Some((d.name.clone(), p(&d.name)?))).collect()
        } else {
            vec![]
        };
        let supplied: Vec<(String, ParamValue)> =
            pt.params.iter().map(|p| (p.name.clone(), vars.apply_value(&p.value))).collect();
        let phase = if embedded { embedded_phase(pt, vars, &self.input.vars) } else { Vars::new() };
        let timeout = self
            .input
            .task_timeouts
            .get(&pt.name)
            .copied()
            .or_else(|| pt.timeout.as_deref().and_then(parse_duration))
            .unwrap_or(DEFAULT_TIMEOUT);
        let upstream: Vec<(String, ParamValue)> = result_refs(pt)
            .into_iter()
            .filter_map(|(t, r)| {
                let k = format!("tasks.{t}.results.{r}");
                let v = vars.get(&k)?.clone();
                Some((k, v))
            })
            .collect();
        let workspaces: Vec<(String, String, Option<String>)> = pt
            .workspaces
            .iter()
            .map(|b| {
                let run_ws = b.workspace.clone().unwrap_or_else(|| b.name.clone());
                (b.name.clone(), run_ws, b.sub_path.as_ref().map(|s| vars.apply_str(s)))
            })
            .collect();
        let run = &self.input.name;
        let launches = combos
            .into_iter()
            .enumerate()
            .map(|(i, combo)| {
                let (task_run, label) = match combo {
                    Some(_) => (format!("{run}-{}-{i}", pt.name), format!("{}[{i}]", pt.name)),
                    None => (format!("{run}-{}", pt.name), pt.name.clone()),
                };
                let mut params = supplied.clone();
                params.extend(combo.iter().flatten().map(|(k, v)| (k.clone(), ParamValue::Str(v.clone()))));
                LaunchSpec {
                    task: pt.name.clone(),
                    finally,
                    index: i,
                    combination: combo,
                    attempt: 0,
                    retries: pt.retries,
                    task_run,
                    label,
                    params,
                    propagated: propagated.clone(),
                    phase: phase.clone(),
                    embedded,
                    task_ref: task_ref.clone(),
                    timeout,
                    upstream: upstream.clone(),
                    workspaces: workspaces.clone(),
                }
            })
            .collect();
        Decision::Run(launches)
    }

    /// The matrix combinations (`[None]` without a matrix).
    fn combinations(&self, pt: &PipelineTask, vars: &Vars) -> Result<Vec<Option<Combo>>, Decision> {
        let Some(m) = &pt.matrix else { return Ok(vec![None]) };
        match super::matrix::expand(&pt.name, m, vars) {
            Ok(c) => Ok(c.into_iter().map(Some).collect()),
            Err(NoFanOut::Empty) => Err(Decision::Skip(SkipReason::EmptyMatrix)),
            Err(NoFanOut::Fail(f)) => Err(Decision::FailRun(f)),
        }
    }
}

/// Pipeline phases for an embedded spec: the task's variables, where a pipeline task
/// param of the same name as a pipeline param shadows it with its value after the
/// pipeline's param phase (Tekton's propagation); matrix params are the child TaskRun's
/// own, left for the task's param phase.
pub fn embedded_phase(pt: &PipelineTask, vars: &Vars, pipeline_vars: &Vars) -> Vars {
    let mut phase = vars.clone();
    let pparams = pipeline_vars.first_phase();
    for p in &pt.params {
        let key = format!("params.{}", p.name);
        if phase.contains(&key) {
            phase.set(key, pparams.apply_value(&p.value));
        }
    }
    for p in pt.matrix.iter().flat_map(|m| m.params.iter().chain(m.include.iter().flat_map(|i| &i.params))) {
        phase.remove(&format!("params.{}", p.name));
    }
    phase
}

#[cfg(test)]
#[path = "facts_tests.rs"]
mod tests;
