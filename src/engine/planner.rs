//! `tenon plan`: a synchronous loop over the same facts `tenon run` drives, asking the
//! cache instead of an executor. A TaskRun whose key is recorded is `cached` (its
//! results feed its consumers, as a run would restore them); any other would run, its
//! results unknown, so a consumer of them is `run (after X)`. Nothing is executed and
//! no tokio runtime is needed (except to ask a shared cache, through `runtime`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cached::{self, CacheCtx, CacheJob, CacheOutcome};
use super::launch::cached_outcome;
use super::request::{self, RequestBuilder};
use super::resolve::Failure;
use super::setup::{self, resolve_pipeline, ChildDone, Ledger, PipelineSetup, Prepared, Shared, TaskLedger};
use super::summary::{all_cached, cached_from};
use super::{taskrun, EngineOptions};
use crate::exec::TaskRunRequest;
use crate::model::{Catalog, Obj, ParamValue, PipelineRunSpec, TaskRunSpec};
use crate::plan::{Action, Outcome, PipelineRunFacts, SkipReason, Status, TaskStatus};
use crate::report::{HashingStats, PlanReport, PlanRun, PlanTask, API_VERSION};
use crate::store::OutputSet;

/// What `tenon plan` decided for every selected run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub runs: Vec<PlannedRun>,
}

#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub name: String,
    /// `PipelineRun` or `TaskRun`.
    pub kind: &'static str,
    pub pipeline: Option<String>,
    /// The run could not be planned at all (a missing Pipeline, invalid params, ...).
    pub error: Option<Failure>,
    pub tasks: Vec<PlannedTask>,
}

#[derive(Debug, Clone)]
pub struct PlannedTask {
    /// The pipeline task (`name[i]` for a matrix child) or TaskRun.
    pub name: String,
    pub finally: bool,
    pub decision: Decision,
}

/// What would happen to one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Its record would be restored (a [`CacheOutcome::Hit`]).
    Cached(CacheOutcome),
    /// It would run: the cache says why (a miss and its reasons, not cacheable, caching
    /// off, or after a task that would run first).
    Run(CacheOutcome),
    Skipped(String),
    /// The run would fail at this task before it runs (an invalid TaskRun, a CEL error,
    /// a missing result).
    Invalid(Failure),
}

/// Plans runs of one catalog against one cache.
pub struct Planner<'a> {
    pub cat: &'a Catalog,
    pub opts: &'a EngineOptions,
    pub cache: Option<&'a Arc<CacheCtx>>,
    never_inputs: Vec<PathBuf>,
    /// The executor resolves `envFrom` itself (keys differ with it).
    executor_env_from: bool,
    /// A runtime to ask the shared cache on (`None`: the shared cache is not asked).
    runtime: Option<tokio::runtime::Handle>,
}

impl<'a> Planner<'a> {
    pub fn new(cat: &'a Catalog, opts: &'a EngineOptions, cache: Option<&'a Arc<CacheCtx>>) -> Self {
        let never_inputs = setup::never_inputs(cat, &opts.repo_root);
        Planner { cat, opts, cache, never_inputs, executor_env_from: false, runtime: None }
    }

    /// Keys as the executor that would run them sees them (Kubernetes resolves `envFrom`).
    pub fn executor_env_from(mut self, yes: bool) -> Self {
        self.executor_env_from = yes;
        self
    }

    /// Ask the shared cache (the cache's `remote`) on this runtime, from a thread outside
    /// it (e.g. `spawn_blocking`).
    pub fn with_runtime(mut self, rt: tokio::runtime::Handle) -> Self {
        self.runtime = Some(rt);
        self
    }

    fn shared(&self) -> Shared<'_> {
        Shared {
            cat: self.cat,
            opts: self.opts,
            cache: self.cache,
            never_inputs: &self.never_inputs,
            builder: RequestBuilder {
                cat: self.cat,
                opts: self.opts,
                executor_env_from: self.executor_env_from,
                materialize: false,
            },
        }
    }

    /// Plan one PipelineRun.
    pub fn plan_pipeline_run(&self, pr: &Obj<PipelineRunSpec>) -> PlannedRun {
        let mut out =
            PlannedRun { name: pr.name.clone(), kind: "PipelineRun", pipeline: None, error: None, tasks: vec![] };
        let (pipeline, spec) = match resolve_pipeline(self.cat, pr) {
            Ok(v) => v,
            Err((pipeline, f)) => return PlannedRun { pipeline, error: Some(f), ..out },
        };
        out.pipeline = pipeline.clone();
        let uid = crate::util::new_uid(&pr.name);
        let run_dir = request::run_dir(&self.opts.state_dir, &pr.name, &uid, true);
        let shared = self.shared();
        let planned = scratch_dir(&run_dir)
            .and_then(|_| PipelineSetup::new(&shared, pr, pipeline, spec, uid, run_dir.clone()))
            .map(|setup| self.drive(&shared, &setup));
        let _ = std::fs::remove_dir_all(&run_dir);
        match planned {
            Ok(tasks) => out.tasks = tasks,
            Err(f) => out.error = Some(f),
        }
        out
    }

    /// The loop: decide, ask the cache for each TaskRun that would start, report back.
    fn drive(&self, sh: &Shared, setup: &PipelineSetup) -> Vec<PlannedTask> {
        let mut facts = setup.facts(self.cat);
        let mut ledger = Ledger::default();
        while !facts.is_done() {
            let mut prepared: HashMap<(String, usize), Box<Prepared>> = HashMap::new();
            let mut gate = |l: &crate::plan::LaunchSpec| setup.gate(sh, l, &ledger, &mut prepared);
            let actions = facts.next_actions_with(Duration::ZERO, &mut gate);
            if actions.is_empty() {
                break;
            }
            for a in actions {
                match a {
                    Action::Launch(l) => {
                        let Some(p) = prepared.remove(&(l.task.clone(), l.index)) else { continue };
                        ledger.prepared(&l.task, &p);
                        let (cache, results, outputs) = self.verdict(p.job.as_ref(), &p.req);
                        let hit = matches!(cache, CacheOutcome::Hit { .. });
                        let status = if hit { Status::Succeeded } else { Status::Planned };
                        ledger.task(&l.task).would_run |= !hit;
                        let child = ChildDone {
                            index: l.index,
                            name: p.req.name.clone(),
                            outcome: cached_outcome(results.clone()),
                            attempts: 0,
                            cache,
                        };
                        ledger.finished(&l.task, child, outputs);
                        let outcome = Outcome { status, reason: String::new(), message: String::new(), results };
                        facts.on_finished(&l.task, l.index, outcome);
                    }
                    Action::After { task, after } => {
                        let t = ledger.task(&task);
                        t.would_run = true;
                        let cache = CacheOutcome::After { task: after };
                        let child = ChildDone {
                            index: 0,
                            name: String::new(),
                            outcome: cached_outcome(BTreeMap::new()),
                            attempts: 0,
                            cache,
                        };
                        t.children.insert(0, child);
                    }
                    Action::Skip { .. } | Action::FailRun { .. } | Action::Cancel { .. } => {}
                }
            }
        }
        rows(setup, &facts, &ledger)
    }

    /// Plan one standalone TaskRun.
    pub fn plan_task_run(&self, tr: &Obj<TaskRunSpec>) -> PlannedRun {
        let mut out = PlannedRun { name: tr.name.clone(), kind: "TaskRun", pipeline: None, error: None, tasks: vec![] };
        let shared = self.shared();
        let task = match taskrun::resolve_task(&shared, tr) {
            Ok(t) => t,
            Err(f) => return PlannedRun { error: Some(f), ..out },
        };
        let uid = crate::util::new_uid(&tr.name);
        let run_dir = request::run_dir(&self.opts.state_dir, &tr.name, &uid, true);
        let prepared = scratch_dir(&run_dir).and_then(|_| taskrun::prepare(&shared, tr, task, &uid, &run_dir));
        let verdict = prepared.map(|(req, job)| self.verdict(job.as_ref(), &req).0);
        let _ = std::fs::remove_dir_all(&run_dir);
        match verdict {
            Ok(c @ CacheOutcome::Hit { .. }) => {
                out.tasks.push(PlannedTask { name: tr.name.clone(), finally: false, decision: Decision::Cached(c) })
            }
            Ok(c) => out.tasks.push(PlannedTask { name: tr.name.clone(), finally: false, decision: Decision::Run(c) }),
            Err(f) => out.error = Some(f),
        }
        out
    }

    /// The cache's word on one TaskRun: a hit (with the record's results as this TaskRun
    /// would see them, and its outputs), or why it would run.
    fn verdict(
        &self,
        job: Option<&CacheJob>,
        req: &TaskRunRequest,
    ) -> (CacheOutcome, BTreeMap<String, ParamValue>, Vec<OutputSet>) {
        let no_record = |c| (c, BTreeMap::new(), vec![]);
        let (Some(ctx), Some(job)) = (self.cache, job) else { return no_record(CacheOutcome::Off) };
        if let Some(reason) = &job.uncacheable {
            return no_record(CacheOutcome::Uncacheable { reason: reason.clone() });
        }
        let pre = match cached::compute(ctx, job) {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("its inputs could not be hashed ({e})");
                return no_record(CacheOutcome::Uncacheable { reason });
            }
        };
        let key = pre.key();
        let hit = |rec: crate::store::Record, remote: Option<String>| {
            let results = cached::localize_results(&rec.results, req);
            (CacheOutcome::hit(&rec, remote), results, rec.outputs)
        };
        let forced = job.forced.is_some();
        if !forced {
            if let Ok(Some(rec)) = ctx.store.get(&key) {
                return hit(rec, None);
            }
        }
        let reasons = cached::miss_reasons(ctx, job, &pre, &key);
        // the shared cache: read its record (`tenon cache pull`: import it)
        if let (Some(remote), Some(rt), false) = (&ctx.remote, &self.runtime, forced) {
            let found = if ctx.import_on_plan {
                rt.block_on(remote.fetch(&key, &ctx.store))
            } else {
                rt.block_on(remote.peek(&key))
            };
            if let Some(h) = found {
                return hit(h.record, Some(h.origin));
            }
        }
        no_record(CacheOutcome::Miss { key, reasons })
    }
}

/// The plan's rows: one per pipeline task in declaration order (one per TaskRun of a
/// matrix that would start), `finally` last.
fn rows(setup: &PipelineSetup, facts: &PipelineRunFacts, ledger: &Ledger) -> Vec<PlannedTask> {
    let spec = &setup.spec;
    let mut rows = Vec::new();
    let no_ledger = TaskLedger::default();
    for pt in spec.tasks.iter().chain(spec.finally.iter()) {
        let Some(f) = facts.task(&pt.name) else { continue };
        let l = ledger.tasks.get(&pt.name).unwrap_or(&no_ledger);
        let row = |name: String, decision| PlannedTask { name, finally: f.finally, decision };
        match &f.status {
            TaskStatus::Skipped(r) => rows.push(row(f.name.clone(), Decision::Skipped(r.as_str().into()))),
            TaskStatus::Failed { .. } => {
                rows.push(row(f.name.clone(), Decision::Invalid(Failure::new(&f.reason, f.message.clone()))))
            }
            TaskStatus::Pending | TaskStatus::Running => {
                rows.push(row(f.name.clone(), Decision::Skipped(SkipReason::Stopping.as_str().into())))
            }
            TaskStatus::Succeeded if f.matrix && !l.children.is_empty() => {
                rows.extend(l.children.values().map(|c| row(format!("{}[{}]", f.name, c.index), decision(&c.cache))))
            }
            TaskStatus::Succeeded => {
                let first = l.children.values().next().map(|c| c.cache.clone()).unwrap_or(CacheOutcome::Off);
                rows.push(row(
                    f.name.clone(),
                    if all_cached(l) { Decision::Cached(first) } else { Decision::Run(first) },
                ));
            }
        }
    }
    rows
}

/// A TaskRun's decision from the cache's word on it.
fn decision(c: &CacheOutcome) -> Decision {
    match c {
        CacheOutcome::Hit { .. } => Decision::Cached(c.clone()),
        other => Decision::Run(other.clone()),
    }
}

/// The plan's scratch run directory (volumes are described from it; removed after).
fn scratch_dir(dir: &std::path::Path) -> Result<(), Failure> {
    crate::store::make_private_dir(dir)
        .map_err(|e| Failure::new("CreateRunFailed", format!("cannot create run directory {}: {e}", dir.display())))
}

impl Plan {
    /// The plan as `tenon plan --output json` prints it.
    pub fn report(&self, hashing: Option<HashingStats>) -> PlanReport {
        let runs = self
            .runs
            .iter()
            .map(|r| PlanRun {
                name: r.name.clone(),
                kind: r.kind.to_string(),
                pipeline: r.pipeline.clone(),
                error: r.error.as_ref().map(|f| format!("{}: {}", f.reason, f.message)),
                tasks: r.tasks.iter().map(plan_task).collect(),
            })
            .collect();
        PlanReport { api_version: API_VERSION, kind: "Plan", runs, hashing, remote_cache: None }
    }
}

fn plan_task(t: &PlannedTask) -> PlanTask {
    let (decision, reasons, cache) = match &t.decision {
        Decision::Cached(c) => ("cached", c.reasons(), Some(c)),
        Decision::Run(c) => {
            let r = c.reasons();
            ("run", if r.is_empty() { vec!["caching is off".into()] } else { r }, Some(c))
        }
        Decision::Skipped(reason) => ("skipped", vec![reason.clone()], None),
        Decision::Invalid(f) => ("run", vec![format!("{}: {}", f.reason, f.message)], None),
    };
    PlanTask {
        name: t.name.clone(),
        decision: decision.into(),
        reasons,
        cache_key: cache.and_then(|c| c.key().map(String::from)),
        cached_from: cache.and_then(cached_from),
        finally: t.finally,
    }
}
