//! A PipelineRun made concrete for the scheduler: its spec, params, context and
//! volumes, the facts' input, and, for each TaskRun the facts launch, the request and
//! cache job (the same for a run and a plan). What ran so far is in the [`Ledger`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cached::{self, CacheCtx, CacheJob, CacheOutcome};
use super::request::{repo_workspaces, stabilize, Binding, RequestBuilder, TaskRunInput};
use super::resolve::{param_values, param_vars, Failure};
use super::workspaces::RunVolumes;
use super::EngineOptions;
use crate::exec::{TaskOutcome, TaskRunRequest};
use crate::model::dag::Dag;
use crate::model::subst::{find_refs, Vars};
use crate::model::{Catalog, Obj, ParamValue, PipelineRunSpec, PipelineSpec, PipelineTask, TaskSpec};
use crate::plan::refs::result_refs;
use crate::plan::{Gate, LaunchSpec, PipelineRunFacts, RunInput, Timeouts};
use crate::store::OutputSet;

/// What a run and a plan share: the catalog, options, the cache and how requests are
/// built.
pub struct Shared<'a> {
    pub cat: &'a Catalog,
    pub opts: &'a EngineOptions,
    pub cache: Option<&'a Arc<CacheCtx>>,
    /// Repository paths that are never task inputs: promotion targets and the ledger.
    pub never_inputs: &'a [PathBuf],
    pub builder: RequestBuilder<'a>,
}

/// Repository paths that are never task inputs: promotion targets and the ledger.
pub fn never_inputs(cat: &Catalog, repo_root: &Path) -> Vec<PathBuf> {
    let root = repo_root.canonicalize().unwrap_or_else(|_| repo_root.to_path_buf());
    let mut out: Vec<PathBuf> =
        cat.promotion_policies.iter().flat_map(|p| p.spec.target.updates.iter().map(|u| root.join(&u.file))).collect();
    out.push(root.join(crate::model::LEDGER_DIR));
    out
}

/// The Pipeline a PipelineRun runs: (its name, the spec). An error carries the
/// pipeline's name when there is one.
pub fn resolve_pipeline(
    cat: &Catalog,
    pr: &Obj<PipelineRunSpec>,
) -> Result<(Option<String>, PipelineSpec), (Option<String>, Failure)> {
    match (&pr.spec.pipeline_ref, &pr.spec.pipeline_spec) {
        (_, Some(ps)) => {
            let mut ps = ps.clone();
            crate::model::propagate_run_into_spec(&mut ps, &pr.spec);
            Ok((None, ps))
        }
        (Some(r), None) => match r.name.as_deref().and_then(|n| cat.pipeline(n)) {
            Some(p) => Ok((Some(p.name.clone()), p.spec.clone())),
            None => Err((
                r.name.clone(),
                Failure::new("CouldntGetPipeline", format!("Pipeline {:?} not found", r.name.as_deref().unwrap_or(""))),
            )),
        },
        (None, None) => Err((
            None,
            Failure::new("PipelineValidationFailed", "expected exactly one, got neither: pipelineRef, pipelineSpec"),
        )),
    }
}

/// One PipelineRun, ready to schedule.
pub struct PipelineSetup<'p> {
    pub name: String,
    pub uid: String,
    pub run_dir: PathBuf,
    pub pipeline_name: Option<String>,
    pub spec: Arc<PipelineSpec>,
    pub pr: &'p Obj<PipelineRunSpec>,
    /// Pipeline variables after Tekton's pipeline phases: params, context, `bound`.
    pub pvars: Vars,
    pub volumes: RunVolumes,
    /// The Pipeline's annotations (the PipelineRun's for an embedded pipelineSpec).
    annotations: BTreeMap<String, String>,
    dag: Dag,
}

/// A TaskRun the facts launch, made concrete.
pub struct Prepared {
    pub req: TaskRunRequest,
    pub job: Option<CacheJob>,
    /// (task workspace, run-level workspace) bindings, for outputs on shared volumes.
    pub ws_map: Vec<(String, String)>,
}

impl<'p> PipelineSetup<'p> {
    /// Params, context and volumes of `pr` (running `spec`, the Pipeline `pipeline_name`).
    pub fn new(
        sh: &Shared,
        pr: &'p Obj<PipelineRunSpec>,
        pipeline_name: Option<String>,
        spec: PipelineSpec,
        uid: String,
        run_dir: PathBuf,
    ) -> Result<Self, Failure> {
        let name = pr.name.clone();
        let mut ctx = Vars::new();
        ctx.set_str("context.pipelineRun.name", &name);
        ctx.set_str("context.pipelineRun.namespace", &sh.opts.namespace);
        ctx.set_str("context.pipelineRun.uid", &uid);
        ctx.set_str("context.pipeline.name", pipeline_name.clone().unwrap_or_else(|| name.clone()));
        let mut supplied: Vec<(String, ParamValue)> =
            pr.spec.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        supplied.extend(sh.opts.param_overrides.iter().cloned());
        let pvalues = param_values(&spec.params, &supplied, "pipelineRun")?;
        // Tekton's pipeline phases, in order and each in one pass: params, context,
        // workspaces' `bound` (then, per task, retries and matrix lengths, statuses, results)
        let mut pvars = param_vars(&pvalues);
        pvars.then(&ctx).then(&Vars::new());
        let repo_names = repo_workspaces(&pr.meta.annotations);
        let mut volumes = RunVolumes::prepare(sh.cat, &pr.spec.workspaces, &repo_names, &run_dir, sh.opts)?;
        volumes.create = sh.builder.materialize;
        for w in &spec.workspaces {
            pvars.set_str(format!("workspaces.{}.bound", w.name), if volumes.has(&w.name) { "true" } else { "false" });
        }
        let annotations = match pipeline_name.as_deref().and_then(|n| sh.cat.pipeline(n)) {
            Some(p) => p.meta.annotations.clone(),
            None => pr.meta.annotations.clone(),
        };
        let dag = Dag::build(&spec.tasks).0;
        Ok(PipelineSetup {
            name,
            uid,
            run_dir,
            pipeline_name,
            spec: Arc::new(spec),
            pr,
            pvars,
            volumes,
            annotations,
            dag,
        })
    }

    /// The scheduler's state for this run.
    pub fn facts(&self, cat: &Catalog) -> PipelineRunFacts {
        let input = RunInput {
            name: self.name.clone(),
            vars: self.pvars.clone(),
            timeouts: Timeouts::from_run(&self.pr.spec),
            task_timeouts: RunInput::task_timeouts(&self.pr.spec),
            known_tasks: Some(cat.tasks.iter().map(|t| t.name.clone()).collect()),
        };
        PipelineRunFacts::with_dag(self.spec.clone(), self.dag.clone(), input)
    }

    fn pipeline_task(&self, name: &str, finally: bool) -> Option<&PipelineTask> {
        let list = if finally { &self.spec.finally } else { &self.spec.tasks };
        list.iter().find(|t| t.name == name)
    }

    /// The request and cache job of a TaskRun the facts launch. `Err`: the gate's word
    /// (an invalid TaskRun fails the run; planning, a key that needs a task that would
    /// run first).
    pub fn prepare(&self, sh: &Shared, l: &LaunchSpec, ledger: &Ledger) -> Result<Prepared, Gate> {
        let Some(pt) = self.pipeline_task(&l.task, l.finally) else {
            return Err(Gate::Fail(Failure::new("PipelineValidationFailed", format!("no pipeline task {}", l.task))));
        };
        let (spec, task_name): (TaskSpec, Option<String>) = match (&pt.task_spec, &l.task_ref) {
            (Some(ts), _) => (ts.task.clone(), None),
            (None, Some(r)) => match sh.cat.task(r) {
                Some(t) => (t.spec.clone(), Some(t.name.clone())),
                None => {
                    let msg = format!("Task {r:?} not found for pipeline task {}", pt.name);
                    return Err(Gate::Fail(Failure::new("CouldntGetTask", msg)));
                }
            },
            (None, None) => {
                let msg = format!("pipeline task {} has neither taskRef nor taskSpec", pt.name);
                return Err(Gate::Fail(Failure::new("PipelineValidationFailed", msg)));
            }
        };
        let bindings = self.bindings(pt, l);
        let mut ctx = self.pvars.without_prefix("params.");
        ctx.set_str("context.taskRun.name", &l.task_run);
        ctx.set_str("context.taskRun.namespace", &sh.opts.namespace);
        ctx.set_str("context.taskRun.uid", crate::util::new_uid(&l.task_run));
        ctx.set_str("context.task.name", task_name.clone().unwrap_or_else(|| l.task_run.clone()));
        let dir = self.run_dir.join("taskruns").join(&l.task_run);
        let input = TaskRunInput {
            taskrun_name: &l.task_run,
            label: &l.label,
            spec: &spec,
            supplied: &l.params,
            propagated: &l.propagated,
            embedded: l.embedded,
            ctx: &ctx,
            pipeline_phase: &l.phase,
            bindings: &bindings,
            dir: &dir,
            timeout: l.timeout,
        };
        let ws_map = bindings.iter().map(|(t, r, _)| (t.clone(), r.clone())).collect();
        let (sctx, sphase) = (stabilize(&ctx), stabilize(&l.phase));
        let key_input = TaskRunInput { ctx: &sctx, pipeline_phase: &sphase, ..input };
        let (req, key_spec) = match (sh.cache, sh.builder.materialize) {
            (None, _) => (sh.builder.build(&input, &self.volumes, false).map_err(Gate::Fail)?, None),
            // a plan runs nothing: the request a key is computed from is the only one
            (Some(_), false) => {
                let req = sh.builder.build(&key_input, &self.volumes, true).map_err(Gate::Fail)?;
                let spec = req.spec.clone();
                (req, Some(spec))
            }
            (Some(_), true) => {
                let req = sh.builder.build(&input, &self.volumes, false).map_err(Gate::Fail)?;
                (req, Some(sh.builder.build(&key_input, &self.volumes, true).map_err(Gate::Fail)?.spec))
            }
        };
        let (Some(cache), Some(key_spec)) = (sh.cache, key_spec) else {
            return Ok(Prepared { req, job: None, ws_map });
        };
        let mut job = self.cache_job(sh, cache, pt, l, key_spec, &bindings, &req, task_name.as_deref(), ledger)?;
        cached::retain_used_params(&mut job, &spec);
        Ok(Prepared { req, job: Some(job), ws_map })
    }

    /// The gate the facts call before a launch: prepare the TaskRun and keep it in
    /// `prepared` until its launch comes out, or say why it cannot start.
    pub fn gate(
        &self,
        sh: &Shared,
        l: &LaunchSpec,
        ledger: &Ledger,
        prepared: &mut HashMap<(String, usize), Box<Prepared>>,
    ) -> Gate {
        match self.prepare(sh, l, ledger) {
            Ok(p) => {
                prepared.insert((l.task.clone(), l.index), Box::new(p));
                Gate::Go
            }
            Err(g) => g,
        }
    }

    /// The pipeline task's workspace bindings, plus (embedded specs) the pipeline
    /// workspaces its spec uses by name without binding them: like Tekton
    /// (tektoncd/pipeline#8008) only the ones the spec references are propagated, so an
    /// unrelated repo workspace is not an input of this task.
    fn bindings(&self, pt: &PipelineTask, l: &LaunchSpec) -> Vec<Binding> {
        let mut out = l.workspaces.clone();
        if !l.embedded {
            return out;
        }
        let unbound: Vec<&str> = self
            .spec
            .workspaces
            .iter()
            .filter(|w| !pt.workspaces.iter().any(|b| b.name == w.name))
            .filter(|w| self.volumes.has(&w.name))
            .map(|w| w.name.as_str())
            .collect();
        if unbound.is_empty() {
            return out;
        }
        let text = serde_json::to_string(pt).unwrap_or_default();
        for w in unbound.into_iter().filter(|w| text.contains(&format!("workspaces.{w}."))) {
            out.push((w.to_string(), w.to_string(), None));
        }
        out
    }

    /// Annotation `name` for pipeline task `pt`: the Pipeline's (or, for an embedded
    /// pipelineSpec, the PipelineRun's) `name.<pt>` wins over the Task's own.
    fn task_annotation(&self, cat: &Catalog, pt: &PipelineTask, task_name: Option<&str>, name: &str) -> Option<String> {
        let scoped = format!("{name}.{}", pt.name);
        if let Some(v) = self.annotations.get(&scoped).or_else(|| self.pr.meta.annotations.get(&scoped)) {
            return Some(v.clone());
        }
        match (&pt.task_spec, task_name) {
            (Some(ts), _) => ts.metadata.as_ref().and_then(|m| m.annotations.get(name)).cloned(),
            (None, Some(t)) => cat.task(t).and_then(|t| t.meta.annotations.get(name)).cloned(),
            _ => None,
        }
    }

    /// Everything the cache needs to key one TaskRun of `pt`. Planning: a key that
    /// depends on a task that would run first is `Gate::After` it.
    #[allow(clippy::too_many_arguments)]
    fn cache_job(
        &self,
        sh: &Shared,
        cache: &CacheCtx,
        pt: &PipelineTask,
        l: &LaunchSpec,
        key_spec: TaskSpec,
        bindings: &[Binding],
        req: &TaskRunRequest,
        task_name: Option<&str>,
        ledger: &Ledger,
    ) -> Result<CacheJob, Gate> {
        let ann = |n: &str| self.task_annotation(sh.cat, pt, task_name, n);
        let mut job = CacheJob {
            run: self.name.clone(),
            run_uid: self.uid.clone(),
            task: l.label.clone(),
            key_spec,
            run_dir: Some(self.run_dir.clone()),
            param_sources: param_sources(pt),
            ..Default::default()
        };
        // the key's params: propagated ones too, below the task's own
        for (k, v) in l.propagated.iter().chain(&l.params) {
            job.params.insert(k.clone(), v.to_json());
        }
        let describe = |n: &str| self.volumes.describe(n);
        let shared = cached::apply_bindings(&mut job, &ann, bindings, &describe, req, true, sh.never_inputs);
        // upstream results consumed (early cutoff: same values, same key)
        for (producer, _) in result_refs(pt) {
            if ledger.would_run(&producer) {
                return Err(Gate::After(producer));
            }
        }
        for (k, v) in &l.upstream {
            job.upstream_results.insert(k.clone(), v.to_json());
        }
        // outputs of ancestors on the shared volumes this task sees (only tasks that bind
        // a shared volume need the walk up the DAG; finally tasks have no ancestors)
        let ancestors = if shared.is_empty() || l.finally { BTreeSet::new() } else { self.dag.ancestors(&pt.name) };
        for a in &ancestors {
            let Some(st) = ledger.tasks.get(a) else { continue };
            let touches = st.ws_map.values().any(|r| shared.contains(r));
            if st.would_run && touches {
                return Err(Gate::After(a.clone()));
            }
            for (run_ws, set) in &st.outputs {
                if shared.contains(run_ws) {
                    job.upstream_outputs.insert(format!("{a} {run_ws}:{}", set.path), set.tree.root.clone());
                }
            }
        }
        cached::apply_forced(&mut job, cache, &pt.name);
        Ok(job)
    }
}

/// Params that just pass a run param through: task param -> run param name.
fn param_sources(pt: &PipelineTask) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &pt.params {
        if let ParamValue::Str(v) = &p.value {
            let refs = find_refs(v);
            if refs.len() == 1 && refs[0].start == 0 && refs[0].end == v.len() {
                if let Some(name) = refs[0].expr.strip_prefix("params.") {
                    out.insert(p.name.clone(), name.to_string());
                }
            }
        }
    }
    out
}

/// A finished TaskRun (or, planning, a decided one).
#[derive(Debug, Clone)]
pub struct ChildDone {
    pub index: usize,
    pub name: String,
    pub outcome: TaskOutcome,
    pub attempts: u32,
    pub cache: CacheOutcome,
}

/// What the driver knows of a pipeline task beyond its facts: its TaskRuns as they
/// ended, the cache's word on each, and the outputs they produced or restored.
#[derive(Debug, Clone, Default)]
pub struct TaskLedger {
    pub task_run: Option<String>,
    /// Task workspace -> run-level binding.
    pub ws_map: BTreeMap<String, String>,
    /// Outputs this task produced or restored: (run-level workspace, set).
    pub outputs: Vec<(String, OutputSet)>,
    pub children: BTreeMap<usize, ChildDone>,
    /// Attempts so far, by child.
    pub attempts: BTreeMap<usize, u32>,
    /// Planning: this task would run, so its outputs are unknown.
    pub would_run: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub tasks: BTreeMap<String, TaskLedger>,
}

impl Ledger {
    pub fn would_run(&self, task: &str) -> bool {
        self.tasks.get(task).is_some_and(|t| t.would_run)
    }

    pub fn task(&mut self, task: &str) -> &mut TaskLedger {
        self.tasks.entry(task.to_string()).or_default()
    }

    /// A TaskRun was prepared: its name (the first one's) and workspace bindings.
    pub fn prepared(&mut self, task: &str, p: &Prepared) {
        let t = self.task(task);
        t.task_run.get_or_insert_with(|| p.req.name.clone());
        t.ws_map.extend(p.ws_map.iter().cloned());
    }

    /// A TaskRun ended (for good): its outcome, and the outputs it produced or restored.
    pub fn finished(&mut self, task: &str, child: ChildDone, outputs: Vec<OutputSet>) {
        let t = self.task(task);
        for set in outputs {
            let run_ws = t.ws_map.get(&set.workspace).cloned().unwrap_or_else(|| set.workspace.clone());
            t.outputs.push((run_ws, set));
        }
        t.children.insert(child.index, child);
    }
}
