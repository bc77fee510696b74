//! A standalone TaskRun: made concrete (for a run and a plan alike), then run through
//! the cache with its retries.

use std::path::Path;
use std::time::SystemTime;

use super::cached::{self, CacheJob};
use super::events::RunEvent;
use super::launch::{ChildMsg, Launch};
use super::request::{repo_workspaces, stabilize, Binding, TaskRunInput};
use super::resolve::Failure;
use super::setup::{ChildDone, Shared};
use super::summary::{child_summary, to_json};
use super::workspaces::RunVolumes;
use super::Engine;
use crate::exec::{AttemptStatus, TaskRunRequest};
use crate::model::subst::Vars;
use crate::model::{parse_duration, Obj, ParamValue, TaskRunSpec, TaskSpec};
use crate::plan::facts::DEFAULT_TIMEOUT;
use crate::report::RunSummary;
use crate::util::rfc3339_millis as rfc3339;

/// The Task a TaskRun runs: (its name, the spec, embedded).
pub fn resolve_task(sh: &Shared, tr: &Obj<TaskRunSpec>) -> Result<(String, TaskSpec, bool), Failure> {
    let name = &tr.name;
    let (task_name, mut spec, embedded) = match (&tr.spec.task_ref, &tr.spec.task_spec) {
        (_, Some(ts)) => (name.clone(), ts.clone(), true),
        (Some(r), None) => match r.name.as_deref().and_then(|n| sh.cat.task(n)) {
            Some(t) => (t.name.clone(), t.spec.clone(), false),
            None => {
                let msg = format!("Task {:?} not found", r.name.as_deref().unwrap_or(""));
                return Err(Failure::new("CouldntGetTask", msg));
            }
        },
        (None, None) => {
            return Err(Failure::new("TaskRunValidationFailed", "expected exactly one, got neither: taskRef, taskSpec"))
        }
    };
    // podTemplate volumes join the Task's own
    if let Some(vols) = tr.spec.pod_template.as_ref().and_then(|p| p.get("volumes")).and_then(|v| v.as_array()) {
        spec.volumes.extend(vols.iter().cloned());
    }
    Ok((task_name, spec, embedded))
}

/// The request of a standalone TaskRun running `task` (from [`resolve_task`]), and its
/// cache job when caching is on.
pub fn prepare(
    sh: &Shared,
    tr: &Obj<TaskRunSpec>,
    task: (String, TaskSpec, bool),
    uid: &str,
    run_dir: &Path,
) -> Result<(TaskRunRequest, Option<CacheJob>), Failure> {
    let name = tr.name.as_str();
    let (task_name, spec, embedded) = task;
    let mut supplied: Vec<(String, ParamValue)> =
        tr.spec.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
    supplied.extend(sh.opts.param_overrides.iter().cloned());
    let repo_names = repo_workspaces(&tr.meta.annotations);
    let mut volumes = RunVolumes::prepare(sh.cat, &tr.spec.workspaces, &repo_names, run_dir, sh.opts)?;
    volumes.create = sh.builder.materialize;
    let task_dir = run_dir.join("taskruns").join(name);
    let mut ctx = Vars::new();
    ctx.set_str("context.taskRun.name", name);
    ctx.set_str("context.taskRun.namespace", &sh.opts.namespace);
    ctx.set_str("context.taskRun.uid", uid);
    ctx.set_str("context.task.name", if embedded { name } else { &task_name });
    let bindings: Vec<Binding> = tr.spec.workspaces.iter().map(|b| (b.name.clone(), b.name.clone(), None)).collect();
    let none = Vars::new();
    let input = TaskRunInput {
        taskrun_name: name,
        label: name,
        spec: &spec,
        supplied: &supplied,
        propagated: &[],
        embedded,
        ctx: &ctx,
        pipeline_phase: &none,
        bindings: &bindings,
        dir: &task_dir,
        timeout: tr.spec.timeout.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_TIMEOUT),
    };
    let req = sh.builder.build(&input, &volumes, false)?;
    let Some(cache) = sh.cache else { return Ok((req, None)) };
    let sctx = stabilize(&ctx);
    let key_req = sh.builder.build(&TaskRunInput { ctx: &sctx, ..input }, &volumes, true)?;
    let ann = |n: &str| {
        tr.meta.annotations.get(n).cloned().or_else(|| {
            let task = tr.spec.task_ref.as_ref().and_then(|r| r.name.as_deref()).and_then(|t| sh.cat.task(t));
            task.and_then(|t| t.meta.annotations.get(n).cloned())
        })
    };
    let mut job = CacheJob {
        run: name.to_string(),
        run_uid: uid.to_string(),
        task: name.to_string(),
        key_spec: key_req.spec,
        ..Default::default()
    };
    for (k, v) in &supplied {
        job.params.insert(k.clone(), v.to_json());
    }
    cached::retain_used_params(&mut job, &spec);
    let describe = |n: &str| volumes.describe(n);
    cached::apply_bindings(&mut job, &ann, &bindings, &describe, &req, false, sh.never_inputs);
    cached::apply_forced(&mut job, cache, name);
    Ok((req, Some(job)))
}

impl Engine {
    /// Run one TaskRun object to completion (retries included).
    pub async fn run_task_run(&self, tr: &Obj<TaskRunSpec>) -> RunSummary {
        let started = SystemTime::now();
        let name = tr.name.clone();
        let shared = self.shared();
        let task = match resolve_task(&shared, tr) {
            Ok(t) => t,
            Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
        };
        let (uid, run_dir, _guard) = match self.start_run(&name, "TaskRun") {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
        };
        let (req, job) = match prepare(&shared, tr, task, &uid, &run_dir) {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
        };
        let launch = Launch { task: name.clone(), index: 0, req, cancel: self.cancel.clone(), job };
        let (m, attempts) = self.attempts(launch, tr.spec.retries).await;
        let ok = m.outcome.status == AttemptStatus::Succeeded;
        let keys: Vec<String> = m.cache.key().map(String::from).into_iter().collect();
        self.record_run(&name, &uid, "TaskRun", ok, &keys);
        let (reason, message, results) =
            (m.outcome.reason.clone(), m.outcome.message.clone(), to_json(&m.outcome.results));
        let done = ChildDone { index: 0, name: name.clone(), outcome: m.outcome, attempts, cache: m.cache };
        let task = child_summary(&name, &done, false, false);
        RunSummary {
            name,
            kind: "TaskRun".into(),
            pipeline: None,
            status: if ok { "Succeeded".into() } else { "Failed".into() },
            reason,
            message,
            started_at: rfc3339(started),
            duration_ms: started.elapsed().unwrap_or_default().as_millis() as u64,
            results,
            tasks: vec![task],
            run_dir: Some(run_dir.display().to_string()),
        }
    }

    /// Attempts until success, cancellation or the retries are used up (Tekton's rule:
    /// a failed or timed-out attempt is retried unless the run was cancelled).
    async fn attempts(&self, launch: Launch, retries: u32) -> (ChildMsg, u32) {
        let mut m = self.runner().first(launch).await;
        let mut attempts = m.attempts;
        loop {
            let retryable =
                matches!(m.outcome.status, AttemptStatus::Failed | AttemptStatus::TimedOut) && !m.cancel.is_cancelled();
            if !retryable || attempts > retries || m.attempts == 0 {
                return (m, attempts);
            }
            self.events.emit(RunEvent::Retrying {
                label: &m.req.label,
                attempt: attempts,
                reason: &m.outcome.reason,
                message: &m.outcome.message,
                left: retries + 1 - attempts,
            });
            m = self.runner().retry(m, attempts).await;
            attempts += m.attempts;
        }
    }
}
