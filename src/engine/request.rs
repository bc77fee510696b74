//! Building one TaskRun's request: params, context, step template, StepActions, env
//! references and workspaces, in Tekton's phase order. Used by the run driver, the
//! planner and the single-TaskRun path alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::resolve::{self, param_values, param_vars, Failure};
use super::workspaces::{self, RunVolumes};
use super::EngineOptions;
use crate::exec::{BoundWorkspace, TaskRunRequest};
use crate::model::subst::Vars;
use crate::model::{Catalog, ParamSpec, ParamValue, TaskSpec};

/// (task workspace name, run-level binding name, extra subPath).
pub type Binding = (String, String, Option<String>);

/// What one TaskRun is made of, before its phases are applied.
pub struct TaskRunInput<'a> {
    pub taskrun_name: &'a str,
    pub label: &'a str,
    pub spec: &'a TaskSpec,
    pub supplied: &'a [(String, ParamValue)],
    /// Pipeline params propagated into an embedded spec (below `supplied`).
    pub propagated: &'a [(String, ParamValue)],
    pub embedded: bool,
    pub ctx: &'a Vars,
    pub pipeline_phase: &'a Vars,
    pub bindings: &'a [Binding],
    pub dir: &'a Path,
    pub timeout: Duration,
}

/// Builds requests for one engine's catalog and options.
pub struct RequestBuilder<'a> {
    pub cat: &'a Catalog,
    pub opts: &'a EngineOptions,
    /// The executor resolves `envFrom` itself (Kubernetes): leave it in the spec.
    pub executor_env_from: bool,
    /// Create the TaskRun's directory and materialize its volumes (not when planning).
    pub materialize: bool,
}

impl RequestBuilder<'_> {
    /// The request for `t`; `for_key`: the request a cache key is computed from (Secret
    /// values replaced by digests).
    pub fn build(&self, t: &TaskRunInput, volumes: &RunVolumes, for_key: bool) -> Result<TaskRunRequest, Failure> {
        let spec = self.resolve_spec(t, for_key)?;
        if self.materialize {
            let _ = std::fs::create_dir_all(t.dir);
        }
        let ws = bind_workspaces(&spec, t, volumes)?;
        let volumes = if self.materialize {
            workspaces::task_volumes(self.cat, &spec, t.dir, self.opts)?
        } else {
            BTreeMap::new()
        };
        Ok(TaskRunRequest {
            volumes,
            name: t.taskrun_name.into(),
            label: t.label.into(),
            spec,
            workspaces: ws,
            timeout: Some(t.timeout),
            attempt: 0,
            dir: t.dir.to_path_buf(),
            max_result_size: self.opts.max_result_size,
        })
    }

    /// The spec after Tekton's TaskRun phases (params, context), StepActions and env.
    fn resolve_spec(&self, t: &TaskRunInput, for_key: bool) -> Result<TaskSpec, Failure> {
        let mut spec = t.spec.clone();
        // pipeline-level phases for an embedded spec: the pipeline's params (propagated;
        // a pipeline task param of the same name shadows one), context, workspaces and
        // results, each in one pass, as Tekton applies them before the TaskRun exists
        if t.embedded && !t.pipeline_phase.is_empty() {
            spec = resolve::substitute(&spec, t.pipeline_phase);
        }
        let values = task_param_values(&spec, t)?;
        // Tekton's TaskRun phases, in order: params, then context (then, in the executor,
        // result, step and workspace paths). Each is one pass: a param value's text is
        // not rescanned for params, but the later phases do apply to it.
        let mut params = Vars::new();
        // embedded specs see undeclared supplied params too (propagation)
        if t.embedded {
            for (k, v) in merged_supplied(t.supplied) {
                params.set(format!("params.{k}"), v);
            }
        }
        params.extend(&param_vars(&values));
        let mut vars = params.clone();
        vars.then(t.ctx);
        resolve::apply_step_template(&mut spec);
        // StepActions first, as Tekton resolves them before the TaskRun's phases: a step's
        // params get the task's params (whole values: `$(params.a[*])` stays an array),
        // the action's params go into its body, then every phase runs over the whole spec.
        for step in spec.steps.iter_mut().filter(|s| s.ref_.is_some()) {
            for p in step.params.iter_mut() {
                p.value = params.apply_value(&p.value);
            }
        }
        resolve::inline_step_actions(&mut spec, self.cat)?;
        spec = resolve::substitute(&spec, &vars);
        let env_mode = resolve::EnvMode { for_key, env_from: !self.executor_env_from };
        resolve::resolve_env(&mut spec, self.cat, env_mode)?;
        Ok(spec)
    }
}

/// The TaskRun's param values: its declarations, the supplied values (propagated ones
/// below them) and defaults.
fn task_param_values(spec: &TaskSpec, t: &TaskRunInput) -> Result<BTreeMap<String, ParamValue>, Failure> {
    let name = t.taskrun_name;
    let all: Vec<(String, ParamValue)> = t.propagated.iter().chain(t.supplied).cloned().collect();
    let task_failure = |f: Failure| {
        Failure::new(
            if f.reason == "ParameterMissing" { "TaskRunValidationFailed" } else { &f.reason },
            format!("invalid input params for task {name}: {}", f.message),
        )
    };
    let values = param_values(&spec.params, &all, &format!("TaskRun {name:?}")).map_err(task_failure)?;
    if t.propagated.is_empty() {
        return Ok(values);
    }
    // The TaskRun's own params are the pipeline task's; a propagated value already
    // went in with the pipeline's phase, so here the task's default (if any) applies.
    let own: Vec<ParamSpec> = spec
        .params
        .iter()
        .filter(|d| d.default.is_some() || t.supplied.iter().any(|(n, _)| n == &d.name))
        .cloned()
        .collect();
    // (a default may still name a propagated param: that text is the author's)
    resolve::param_values_with(&own, t.supplied, &values, &format!("TaskRun {name:?}")).map_err(task_failure)
}

/// Supplied params by name: later values win, objects merge key by key.
fn merged_supplied(supplied: &[(String, ParamValue)]) -> BTreeMap<&str, ParamValue> {
    let mut merged: BTreeMap<&str, ParamValue> = BTreeMap::new();
    for (k, v) in supplied {
        let nv = match (merged.remove(k.as_str()), v) {
            (Some(ParamValue::Object(mut old)), ParamValue::Object(new)) => {
                old.extend(new.clone());
                ParamValue::Object(old)
            }
            (_, v) => v.clone(),
        };
        merged.insert(k, nv);
    }
    merged
}

/// The workspaces the spec declares, bound to the run's volumes (embedded specs also get
/// pipeline workspaces they use without declaring).
fn bind_workspaces(spec: &TaskSpec, t: &TaskRunInput, volumes: &RunVolumes) -> Result<Vec<BoundWorkspace>, Failure> {
    let dir = t.dir;
    let mut ws = Vec::new();
    for decl in &spec.workspaces {
        let b = t.bindings.iter().find(|(n, _, _)| n == &decl.name);
        let bound = match b {
            Some((_, run_name, sub)) => Some(volumes.path_for(run_name, sub.as_deref(), dir, &decl.name)?),
            None if t.embedded && volumes.has(&decl.name) => Some(volumes.path_for(&decl.name, None, dir, &decl.name)?),
            None if decl.optional => None,
            None => {
                return Err(Failure::new(
                    "TaskRunValidationFailed",
                    format!("declared workspace {:?} is required but has not been bound", decl.name),
                ))
            }
        };
        ws.push(BoundWorkspace {
            name: decl.name.clone(),
            kind: volumes.describe(b.map(|(_, r, _)| r.as_str()).unwrap_or(&decl.name)),
            read_only: decl.read_only || bound.as_ref().is_some_and(|(_, ro, _)| *ro),
            claim: bound.as_ref().map(|(_, _, c)| c.clone()).unwrap_or_default(),
            path: bound.map(|(p, _, _)| p),
        });
    }
    if t.embedded {
        for (tname, run_name, sub) in t.bindings {
            if !ws.iter().any(|w| &w.name == tname) {
                let (p, ro, claim) = volumes.path_for(run_name, sub.as_deref(), dir, tname)?;
                let kind = volumes.describe(run_name);
                ws.push(BoundWorkspace { name: tname.clone(), path: Some(p), read_only: ro, claim, kind });
            }
        }
    }
    Ok(ws)
}

/// Context with run-unique values left unsubstituted, for cache keys: a task that only
/// differs in its run's name or uid is the same task.
pub fn stabilize(v: &Vars) -> Vars {
    let mut out = v.clone();
    for k in ["context.pipelineRun.name", "context.pipelineRun.uid", "context.taskRun.name", "context.taskRun.uid"] {
        if out.contains(k) {
            out.set_str(k, format!("$({k})"));
        }
    }
    // an embedded task's name is its TaskRun's name: run-unique too
    if let (Some(a), Some(b)) = (v.get("context.task.name"), v.get("context.taskRun.name")) {
        if a == b {
            out.set_str("context.task.name", "$(context.task.name)");
        }
    }
    out
}

/// The workspaces a run binds to the repository tree (its repo-workspace annotation).
pub fn repo_workspaces(ann: &BTreeMap<String, String>) -> Vec<String> {
    ann.get(crate::model::REPO_WORKSPACE_ANNOTATION)
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// Where a run keeps its TaskRun directories: under `runs/` when it runs, a scratch
/// name under `tmp/` (removed afterwards) when it is only planned.
pub fn run_dir(state_dir: &Path, name: &str, uid: &str, planning: bool) -> PathBuf {
    if planning {
        state_dir.join("tmp").join(format!("plan-{}-{}", std::process::id(), &uid[..8]))
    } else {
        state_dir.join("runs").join(name).join(&uid[..8])
    }
}
