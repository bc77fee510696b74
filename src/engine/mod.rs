//! The engine: runs PipelineRuns and TaskRuns with Tekton's scheduling semantics
//! (DAG, when/skip cascade, finally, retries, timeouts, onError, matrix, results)
//! on top of an [`Executor`].

pub mod cached;
pub use crate::plan::matrix;
pub mod resolve;
pub mod workspaces;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::exec::{AttemptStatus, BoundWorkspace, Executor, StepOutcome, TaskOutcome, TaskRunRequest};
use crate::model::dag::Dag;
use crate::model::subst::{find_refs, Vars};
use crate::model::{
    format_duration, parse_duration, Catalog, Obj, ParamValue, PipelineRunSpec, PipelineSpec, PipelineTask,
    TaskRunSpec, TaskSpec,
};
use crate::plan::refs::{referenced_tasks, result_refs};
use crate::report::{RunSummary, TaskSummary};
use crate::ui::Console;
use cached::{CacheCtx, CacheJob, CacheOutcome};
use resolve::{param_values, param_vars, Failure};
use workspaces::RunVolumes;

/// Tekton's default TaskRun / PipelineRun timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Tekton's default cap on one result (the termination-message budget).
pub const DEFAULT_MAX_RESULT_SIZE: usize = 4096;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most TaskRun attempts running at once.
    pub parallel: usize,
    /// tenon's state directory (run directories, PVC volumes).
    pub state_dir: PathBuf,
    /// The repository tree bound by the repo-workspace annotation.
    pub repo_root: PathBuf,
    /// `--param NAME=VALUE` overrides for the run's params.
    pub param_overrides: Vec<(String, ParamValue)>,
    pub max_result_size: usize,
    pub namespace: String,
}

pub struct Engine {
    pub cat: Arc<Catalog>,
    pub exec: Arc<dyn Executor>,
    pub opts: EngineOptions,
    pub console: Arc<Console>,
    /// Cancels every run (Ctrl-C).
    pub cancel: CancellationToken,
    sem: Arc<Semaphore>,
    /// The cache, when enabled (`tenon run` by default; `tenon plan` in dry-run mode).
    pub cache: Option<Arc<CacheCtx>>,
    /// Repository paths that are never task inputs: promotion targets and the ledger.
    never_inputs: Vec<PathBuf>,
}

/// Where a pipeline task stands.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Running,
    Done(Done),
}

#[derive(Debug, Clone, PartialEq)]
enum Done {
    Succeeded,
    /// Failed; `ignored` under `onError: continue`.
    Failed {
        ignored: bool,
        timed_out: bool,
        cancelled: bool,
    },
    /// Skipped; `by_when` when a when expression was false.
    Skipped {
        reason: String,
        by_when: bool,
    },
}

#[derive(Debug, Clone)]
struct TaskState {
    state: State,
    finally: bool,
    reason: String,
    message: String,
    attempts: u32,
    duration: Duration,
    /// Results (matrix: string results aggregated into arrays).
    results: BTreeMap<String, ParamValue>,
    task_run: Option<String>,
    steps: Vec<StepOutcome>,
    /// Matrix children: (label, outcome, attempts, taskrun name).
    children: Vec<ChildDone>,
    expected_children: usize,
    matrix: bool,
    /// Task workspace -> run-level binding, for outputs on shared volumes.
    ws_map: BTreeMap<String, String>,
    /// Outputs this task produced or restored: (run-level workspace, set).
    outputs: Vec<(String, crate::store::OutputSet)>,
    /// Planning: this task would run, so its results are unknown.
    would_run: bool,
}

#[derive(Debug, Clone)]
struct ChildDone {
    index: usize,
    name: String,
    outcome: TaskOutcome,
    attempts: u32,
    cache: CacheOutcome,
}

impl TaskState {
    fn new(finally: bool) -> Self {
        TaskState {
            state: State::Pending,
            finally,
            reason: String::new(),
            message: String::new(),
            attempts: 0,
            duration: Duration::ZERO,
            results: BTreeMap::new(),
            task_run: None,
            steps: vec![],
            children: vec![],
            expected_children: 0,
            matrix: false,
            ws_map: BTreeMap::new(),
            outputs: vec![],
            would_run: false,
        }
    }
    fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }
    /// `$(tasks.t.status)`: Succeeded / Failed / None.
    fn exec_status(&self) -> &'static str {
        match &self.state {
            State::Done(Done::Succeeded) => "Succeeded",
            State::Done(Done::Failed { .. }) => "Failed",
            _ => "None",
        }
    }
}

/// One TaskRun ready to start (possibly a matrix child).
struct Launch {
    pt_name: String,
    index: usize,
    req: TaskRunRequest,
    retries: u32,
    cancel: CancellationToken,
    job: Option<CacheJob>,
}

/// A finished (or, planning, decided) TaskRun.
struct ChildMsg {
    pt_name: String,
    index: usize,
    tr_name: String,
    outcome: TaskOutcome,
    attempts: u32,
    cache: CacheOutcome,
    outputs: Vec<crate::store::OutputSet>,
}

fn cached_outcome(results: BTreeMap<String, ParamValue>) -> TaskOutcome {
    TaskOutcome {
        status: AttemptStatus::Succeeded,
        reason: "Cached".into(),
        message: String::new(),
        results,
        steps: vec![],
        duration: Duration::ZERO,
    }
}

/// Run one TaskRun through the cache: hit -> restore; miss -> lock, run, record.
async fn execute_launch(
    exec: Arc<dyn Executor>,
    sem: Arc<Semaphore>,
    console: Arc<Console>,
    cache: Option<Arc<CacheCtx>>,
    l: Launch,
) -> ChildMsg {
    let tr_name = l.req.name.clone();
    let msg = |outcome: TaskOutcome, attempts: u32, cache: CacheOutcome, outputs| ChildMsg {
        pt_name: l.pt_name.clone(),
        index: l.index,
        tr_name: tr_name.clone(),
        outcome,
        attempts,
        cache,
        outputs,
    };
    let (Some(ctx), Some(job)) = (cache, l.job.clone()) else {
        let (o, a) = run_attempts(exec, sem, l.req.clone(), l.retries, l.cancel.clone(), console).await;
        return msg(o, a, CacheOutcome::Off, vec![]);
    };
    let blocking = |f: Box<dyn FnOnce() -> CacheStep + Send>| async move {
        tokio::task::spawn_blocking(f).await.unwrap_or(CacheStep::Error("cache worker failed".into()))
    };
    // planning (`tenon plan`, never the watcher): the cache step runs on this worker rather
    // than going to the blocking pool and back, two thread wake-ups per task; the other
    // workers keep planning, and a large tree is hashed on rayon's threads anyway
    let in_place = |f: Box<dyn FnOnce() -> CacheStep + Send>| async move { f() };
    let hit = |rec: crate::store::Record, remote: Option<String>| {
        let cache = CacheOutcome::Hit {
            key: rec.key.clone(),
            run: rec.run.clone(),
            run_uid: rec.run_uid.clone(),
            created_ns: rec.created_ns,
            remote,
        };
        (cached_outcome(cached::localize_results(&rec.results, &l.req)), cache, rec.outputs.clone())
    };
    let uncacheable = job.uncacheable.clone();
    if ctx.dry_run && uncacheable.is_none() {
        // planning: key, lookup and explanation in one trip to the blocking pool
        let (c, j) = (ctx.clone(), job.clone());
        let step = in_place(Box::new(move || {
            let p = match cached::compute(&c, &j) {
                Ok(p) => p,
                Err(e) => return CacheStep::Error(e),
            };
            let key = p.key();
            if j.forced.is_none() {
                if let Ok(Some(rec)) = c.store.get(&key) {
                    return CacheStep::Hit(Box::new(rec));
                }
            }
            CacheStep::Planned(key, cached::miss_reasons(&c, &j, &p))
        }))
        .await;
        return match step {
            CacheStep::Hit(rec) => {
                let (o, c, outs) = hit(*rec, None);
                msg(o, 0, c, outs)
            }
            CacheStep::Planned(key, reasons) => {
                // the shared cache: read its record (`tenon cache pull`: import it)
                if let (Some(remote), None) = (&ctx.remote, &job.forced) {
                    let found =
                        if ctx.import_on_plan { remote.fetch(&key, &ctx.store).await } else { remote.peek(&key).await };
                    if let Some(h) = found {
                        let (o, c, outs) = hit(h.record, Some(h.origin));
                        return msg(o, 0, c, outs);
                    }
                }
                msg(cached_outcome(BTreeMap::new()), 0, CacheOutcome::Miss { key, reasons }, vec![])
            }
            other => {
                let e = match other {
                    CacheStep::Error(e) => e,
                    _ => "cache worker failed".into(),
                };
                let reason = format!("its inputs could not be hashed ({e})");
                msg(cached_outcome(BTreeMap::new()), 0, CacheOutcome::Uncacheable { reason }, vec![])
            }
        };
    }
    let (pre, key) = match &uncacheable {
        Some(_) => (None, String::new()),
        None => {
            let (c, j) = (ctx.clone(), job.clone());
            match blocking(Box::new(move || match cached::compute(&c, &j) {
                Ok(p) => CacheStep::Pre(Box::new(p)),
                Err(e) => CacheStep::Error(e),
            }))
            .await
            {
                CacheStep::Pre(p) => {
                    let k = p.key();
                    (Some(*p), k)
                }
                CacheStep::Error(e) => {
                    console.line(&format!("{} {}: not cached: {e}", console.yellow("!"), l.req.label));
                    (None, String::new())
                }
                _ => (None, String::new()),
            }
        }
    };
    let Some(pre) = pre else {
        let reason = uncacheable.unwrap_or_else(|| "its inputs could not be hashed".into());
        if ctx.dry_run {
            return msg(cached_outcome(BTreeMap::new()), 0, CacheOutcome::Uncacheable { reason }, vec![]);
        }
        let (o, a) = run_attempts(exec, sem, l.req.clone(), l.retries, l.cancel.clone(), console).await;
        return msg(o, a, CacheOutcome::Uncacheable { reason }, vec![]);
    };
    // look up (twice when running: again under the key lock, as another process may
    // have produced it meanwhile)
    let lookup = |ctx: Arc<CacheCtx>, key: String, req: TaskRunRequest, restore: bool| {
        blocking(Box::new(move || match ctx.store.get(&key) {
            Ok(Some(rec)) => {
                if restore {
                    if let Err(e) = cached::restore(&ctx, &rec, &req) {
                        return CacheStep::Error(e);
                    }
                }
                CacheStep::Hit(Box::new(rec))
            }
            Ok(None) => CacheStep::Miss,
            Err(e) => CacheStep::Error(e.to_string()),
        }))
    };
    if job.forced.is_none() {
        match lookup(ctx.clone(), key.clone(), l.req.clone(), !ctx.dry_run).await {
            CacheStep::Hit(rec) => {
                let (o, c, outs) = hit(*rec, None);
                return msg(o, 0, c, outs);
            }
            CacheStep::Error(e) => {
                console.line(&format!("{} {}: cache lookup failed, running: {e}", console.yellow("!"), l.req.label))
            }
            _ => {}
        }
    }
    let (c, j, p) = (ctx.clone(), job.clone(), pre.clone());
    let reasons = match blocking(Box::new(move || CacheStep::Reasons(cached::miss_reasons(&c, &j, &p)))).await {
        CacheStep::Reasons(r) => r,
        _ => vec!["no earlier record".into()],
    };
    if ctx.dry_run {
        return msg(cached_outcome(BTreeMap::new()), 0, CacheOutcome::Miss { key, reasons }, vec![]);
    }
    // Never run one key twice at once (across processes too): the second waits and then
    // reuses the first's record. A forced run does not wait: it was asked to run.
    let lock = if job.forced.is_none() {
        match wait_key_lock(&ctx, &key, &l.cancel, &console, &l.req.label).await {
            Some(lock) => lock,
            None => {
                let o = TaskOutcome {
                    status: AttemptStatus::Cancelled,
                    reason: "TaskRunCancelled".into(),
                    message: format!(
                        "TaskRun {:?} was cancelled while waiting for another run of the same task",
                        l.req.name
                    ),
                    results: BTreeMap::new(),
                    steps: vec![],
                    duration: Duration::ZERO,
                };
                return msg(o, 0, CacheOutcome::Miss { key, reasons }, vec![]);
            }
        }
    } else {
        None
    };
    if job.forced.is_none() {
        if let CacheStep::Hit(rec) = lookup(ctx.clone(), key.clone(), l.req.clone(), true).await {
            let (o, c, outs) = hit(*rec, None);
            return msg(o, 0, c, outs);
        }
        // the shared cache: a verified record is imported into the store, then restored
        // from there like any local hit
        if let Some(remote) = &ctx.remote {
            if let Some(h) = remote.fetch(&key, &ctx.store).await {
                match lookup(ctx.clone(), key.clone(), l.req.clone(), true).await {
                    CacheStep::Hit(rec) => {
                        let (o, c, outs) = hit(*rec, Some(h.origin));
                        return msg(o, 0, c, outs);
                    }
                    CacheStep::Error(e) => console.line(&format!(
                        "{} {}: the record from {} could not be restored, running: {e}",
                        console.yellow("!"),
                        l.req.label,
                        remote.url()
                    )),
                    _ => {}
                }
            }
        }
    }
    let (mut o, a) = run_attempts(exec, sem, l.req.clone(), l.retries, l.cancel.clone(), console.clone()).await;
    let mut outputs = vec![];
    // `tenon.dev/publish`: the output goes to the registry as a ModelKit and the result
    // becomes its reference; a record is written only with the reference in it
    let mut unpublished = None;
    if let (AttemptStatus::Succeeded, Some(remote), false) = (&o.status, &ctx.remote, job.publish.is_empty()) {
        for (res, ws, path) in &job.publish {
            let published = match cached::output_path(&l.req, ws, path) {
                Ok(local) => remote.publish_model(&job.task, &local, &ctx.store.scratch_dir()).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(reference) => {
                    console.line(&format!(
                        "{} {}: published {ws}:{path} as {reference}",
                        console.green("↑"),
                        l.req.label
                    ));
                    o.results.insert(res.clone(), crate::model::ParamValue::Str(reference));
                }
                Err(e) => {
                    console.line(&format!(
                        "{} {}: {ws}:{path} not published ({e}); result {res} keeps the task's own value and the run is not cached",
                        console.yellow("!"),
                        l.req.label
                    ));
                    unpublished = Some(e);
                }
            }
        }
    }
    if o.status == AttemptStatus::Succeeded && unpublished.is_none() {
        let (c, j, k, p, req, res, d) = (
            ctx.clone(),
            job.clone(),
            key.clone(),
            pre.clone(),
            l.req.clone(),
            o.results.clone(),
            o.duration.as_millis() as u64,
        );
        let images = cached::observed_images(&o.steps);
        match blocking(Box::new(move || match cached::record(&c, &j, &k, &p, &req, &res, d, &images) {
            Ok(outs) => CacheStep::Outputs(outs),
            Err(e) => CacheStep::Error(e),
        }))
        .await
        {
            CacheStep::Outputs(outs) => {
                outputs = outs;
                if let Some(remote) = &ctx.remote {
                    remote.publish_later(key.clone(), ctx.store.clone());
                }
            }
            CacheStep::Error(e) => console.line(&format!("{} {}: not cached: {e}", console.yellow("!"), l.req.label)),
            _ => {}
        }
    }
    drop(lock);
    msg(o, a, CacheOutcome::Miss { key, reasons }, outputs)
}

/// Take the per-key lock, polling so that a wait for another process running the same key
/// sees cancellation (Ctrl-C) at once. `None`: cancelled while waiting; `Some(None)`: the
/// lock could not be used (the task runs unlocked, as before a lock existed).
async fn wait_key_lock(
    ctx: &Arc<CacheCtx>,
    key: &str,
    cancel: &CancellationToken,
    console: &Console,
    label: &str,
) -> Option<Option<crate::store::KeyLock>> {
    let mut announced = false;
    let mut pause = Duration::from_millis(10);
    loop {
        let (c, k) = (ctx.clone(), key.to_string());
        match tokio::task::spawn_blocking(move || c.store.try_lock_key(&k)).await {
            Ok(Ok(Some(lock))) => return Some(Some(lock)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot lock the cache key; running without it");
                return Some(None);
            }
            Err(_) => return Some(None),
        }
        if !announced {
            announced = true;
            console.line(&format!(
                "{} {label}: waiting for another run of the same task to finish (key {}; Ctrl-C cancels)",
                console.dim("…"),
                &key[..key.len().min(12)]
            ));
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Results of blocking cache work.
enum CacheStep {
    /// Planning: a miss with its key and reasons.
    Planned(String, Vec<String>),
    Pre(Box<crate::cache::Preimage>),
    Hit(Box<crate::store::Record>),
    Miss,
    Reasons(Vec<String>),
    Outputs(Vec<crate::store::OutputSet>),
    Error(String),
}

/// What to do with a pipeline task whose parents are done.
enum Decision {
    /// Launch these TaskRuns; (task workspace, run binding) pairs.
    Run(Vec<Launch>, Vec<(String, String)>),
    /// Planning: would run once `task` has run.
    After(String),
    Skip {
        reason: String,
        by_when: bool,
    },
    FailRun(Failure),
}

pub use crate::util::new_uid;
use crate::util::rfc3339_millis as rfc3339;

fn to_json(v: &BTreeMap<String, ParamValue>) -> BTreeMap<String, Value> {
    v.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

/// Repository paths that are never task inputs: promotion targets and the ledger.
fn never_inputs(cat: &Catalog, repo_root: &Path) -> Vec<PathBuf> {
    let root = repo_root.canonicalize().unwrap_or_else(|_| repo_root.to_path_buf());
    let mut out: Vec<PathBuf> =
        cat.promotion_policies.iter().flat_map(|p| p.spec.target.updates.iter().map(|u| root.join(&u.file))).collect();
    out.push(root.join(crate::model::LEDGER_DIR));
    out
}

impl Engine {
    pub fn new(
        cat: Arc<Catalog>,
        exec: Arc<dyn Executor>,
        opts: EngineOptions,
        console: Arc<Console>,
        cancel: CancellationToken,
    ) -> Self {
        let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
        let never_inputs = never_inputs(&cat, &opts.repo_root);
        Engine { cat, exec, opts, console, cancel, sem, cache: None, never_inputs }
    }

    /// Enable the cache (and, with `dry_run`, plan instead of running).
    pub fn with_cache(mut self, cache: Arc<CacheCtx>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// A new run's uid and directory, announced on the console.
    /// The guard keeps the directory from retention while the run is in progress and
    /// removes Secret material from it when the run ends.
    fn start_run(&self, name: &str, kind: &str) -> Result<(String, PathBuf, crate::retention::RunDirGuard), Failure> {
        let uid = new_uid(name);
        let run_dir = self.run_dir_for(name, &uid);
        // owner-only: restored outputs and materialized Secrets live here
        crate::store::make_private_dir(&run_dir).map_err(|e| {
            Failure::new("CreateRunFailed", format!("cannot create run directory {}: {e}", run_dir.display()))
        })?;
        let guard = crate::retention::RunDirGuard::acquire(&run_dir);
        let c = &self.console;
        c.line(&format!("{} {kind} {} {}", c.bold("▶"), c.bold(name), c.dim(&format!("({})", run_dir.display()))));
        Ok((uid, run_dir, guard))
    }

    /// Where a run keeps its TaskRun directories (planning: a scratch dir removed after).
    fn run_dir_for(&self, name: &str, uid: &str) -> PathBuf {
        if self.dry_run() {
            self.opts.state_dir.join("tmp").join(format!("plan-{}-{}", std::process::id(), &uid[..8]))
        } else {
            self.opts.state_dir.join("runs").join(name).join(&uid[..8])
        }
    }

    fn dry_run(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.dry_run)
    }

    fn failed_summary(
        &self,
        name: &str,
        kind: &str,
        pipeline: Option<String>,
        started: SystemTime,
        f: Failure,
    ) -> RunSummary {
        self.console.line(&format!("{} {kind} {name}: {}: {}", self.console.red("✗"), f.reason, f.message));
        RunSummary {
            name: name.into(),
            kind: kind.into(),
            pipeline,
            status: "Failed".into(),
            reason: f.reason,
            message: f.message,
            started_at: rfc3339(started),
            duration_ms: started.elapsed().unwrap_or_default().as_millis() as u64,
            results: BTreeMap::new(),
            tasks: vec![],
            run_dir: None,
        }
    }

    /// Run one PipelineRun to completion.
    pub async fn run_pipeline_run(&self, pr: &Obj<PipelineRunSpec>) -> RunSummary {
        let started = SystemTime::now();
        let t0 = Instant::now();
        let name = pr.name.clone();
        let (pipeline_name, spec): (Option<String>, PipelineSpec) =
            match (&pr.spec.pipeline_ref, &pr.spec.pipeline_spec) {
                (_, Some(ps)) => {
                    let mut ps = ps.clone();
                    crate::model::propagate_run_into_spec(&mut ps, &pr.spec);
                    (None, ps)
                }
                (Some(r), None) => match r.name.as_deref().and_then(|n| self.cat.pipeline(n)) {
                    Some(p) => (Some(p.name.clone()), p.spec.clone()),
                    None => {
                        return self.failed_summary(
                            &name,
                            "PipelineRun",
                            r.name.clone(),
                            started,
                            Failure::new(
                                "CouldntGetPipeline",
                                format!("Pipeline {:?} not found", r.name.as_deref().unwrap_or("")),
                            ),
                        )
                    }
                },
                (None, None) => {
                    return self.failed_summary(
                        &name,
                        "PipelineRun",
                        None,
                        started,
                        Failure::new(
                            "PipelineValidationFailed",
                            "expected exactly one, got neither: pipelineRef, pipelineSpec",
                        ),
                    )
                }
            };
        let (uid, run_dir, _run_guard) = match self.start_run(&name, "PipelineRun") {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "PipelineRun", pipeline_name, started, f),
        };

        // context and params
        let mut ctx = Vars::new();
        ctx.set_str("context.pipelineRun.name", &name);
        ctx.set_str("context.pipelineRun.namespace", &self.opts.namespace);
        ctx.set_str("context.pipelineRun.uid", &uid);
        ctx.set_str("context.pipeline.name", pipeline_name.clone().unwrap_or_else(|| name.clone()));
        let mut supplied: Vec<(String, ParamValue)> =
            pr.spec.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        supplied.extend(self.opts.param_overrides.iter().cloned());
        let pvalues = match param_values(&spec.params, &supplied, "pipelineRun") {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "PipelineRun", pipeline_name, started, f),
        };
        // Tekton's pipeline phases, in order and each in one pass: params, context,
        // workspaces' `bound` (then, per task, retries and matrix lengths, statuses, results)
        let mut pvars = param_vars(&pvalues);
        pvars.then(&ctx).then(&Vars::new());

        // workspaces
        let repo_names = repo_workspaces(&pr.meta.annotations);
        let mut volumes = match RunVolumes::prepare(&self.cat, &pr.spec.workspaces, &repo_names, &run_dir, &self.opts) {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "PipelineRun", pipeline_name, started, f),
        };
        volumes.create = !self.dry_run();
        for w in &spec.workspaces {
            pvars.set_str(format!("workspaces.{}.bound", w.name), if volumes.has(&w.name) { "true" } else { "false" });
        }

        // timeouts
        let crate::plan::Timeouts { pipeline: pipeline_timeout, tasks: tasks_timeout, finally: finally_timeout } =
            crate::plan::Timeouts::from_run(&pr.spec);
        let nz = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let pipeline_deadline = nz(Some(pipeline_timeout)).map(|d| t0 + d);
        let tasks_deadline = nz(tasks_timeout).map(|d| t0 + d);

        let pipeline_annotations = match pipeline_name.as_deref().and_then(|n| self.cat.pipeline(n)) {
            Some(p) => p.meta.annotations.clone(),
            None => pr.meta.annotations.clone(),
        };
        let mut run = PipelineRunState {
            engine: self,
            name: name.clone(),
            uid: uid.clone(),
            pipeline_annotations,
            spec: &spec,
            pr,
            pvars,
            volumes,
            run_dir: run_dir.clone(),
            states: BTreeMap::new(),
            stopping: None,
            run_failure: None,
            timed_out: None,
            cancelled: false,
            tasks_timeout: nz(tasks_timeout),
            finally_timeout: nz(finally_timeout),
            joinset: JoinSet::new(),
            dag_cancel: self.cancel.child_token(),
            finally_cancel: self.cancel.child_token(),
        };
        for pt in &spec.tasks {
            run.states.insert(pt.name.clone(), TaskState::new(false));
        }
        for pt in &spec.finally {
            run.states.insert(pt.name.clone(), TaskState::new(true));
        }
        let (dag, _) = Dag::build(&spec.tasks);

        // ---- DAG phase
        run.drive(
            &dag,
            &spec.tasks,
            false,
            earliest(tasks_deadline, pipeline_deadline),
            tasks_deadline,
            pipeline_deadline,
        )
        .await;
        // ---- finally phase
        if !spec.finally.is_empty() {
            let pipeline_expired = run.timed_out.as_deref() == Some("pipeline");
            if run.cancelled || pipeline_expired {
                let reason =
                    if run.cancelled { "PipelineRun was cancelled" } else { "PipelineRun timeout has been reached" };
                for pt in &spec.finally {
                    run.skip(&pt.name, reason, false);
                }
            } else {
                let fin_deadline = nz(finally_timeout).map(|d| Instant::now() + d);
                let fdag =
                    Dag { names: spec.finally.iter().map(|t| t.name.clone()).collect(), parents: BTreeMap::new() };
                run.stopping = None; // finally tasks start regardless
                run.drive(
                    &fdag,
                    &spec.finally,
                    true,
                    earliest(fin_deadline, pipeline_deadline),
                    fin_deadline,
                    pipeline_deadline,
                )
                .await;
            }
        }
        let mut summary = run.finish(pipeline_name, started, t0, pipeline_timeout);
        if self.dry_run() {
            let _ = std::fs::remove_dir_all(&run_dir);
            summary.run_dir = None;
        }
        summary
    }

    /// Run one TaskRun object to completion.
    pub async fn run_task_run(&self, tr: &Obj<TaskRunSpec>) -> RunSummary {
        let started = SystemTime::now();
        let name = tr.name.clone();
        let (task_name, spec, embedded): (String, TaskSpec, bool) = match (&tr.spec.task_ref, &tr.spec.task_spec) {
            (_, Some(ts)) => (name.clone(), ts.clone(), true),
            (Some(r), None) => match r.name.as_deref().and_then(|n| self.cat.task(n)) {
                Some(t) => (t.name.clone(), t.spec.clone(), false),
                None => {
                    return self.failed_summary(
                        &name,
                        "TaskRun",
                        None,
                        started,
                        Failure::new("CouldntGetTask", format!("Task {:?} not found", r.name.as_deref().unwrap_or(""))),
                    )
                }
            },
            (None, None) => {
                return self.failed_summary(
                    &name,
                    "TaskRun",
                    None,
                    started,
                    Failure::new("TaskRunValidationFailed", "expected exactly one, got neither: taskRef, taskSpec"),
                )
            }
        };
        // podTemplate volumes join the Task's own
        let mut spec = spec;
        if let Some(vols) = tr.spec.pod_template.as_ref().and_then(|p| p.get("volumes")).and_then(|v| v.as_array()) {
            spec.volumes.extend(vols.iter().cloned());
        }
        let (uid, run_dir, _run_guard) = match self.start_run(&name, "TaskRun") {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
        };
        let mut supplied: Vec<(String, ParamValue)> =
            tr.spec.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        supplied.extend(self.opts.param_overrides.iter().cloned());
        let repo_names = repo_workspaces(&tr.meta.annotations);
        let mut volumes = match RunVolumes::prepare(&self.cat, &tr.spec.workspaces, &repo_names, &run_dir, &self.opts) {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
        };
        volumes.create = !self.dry_run();
        let task_dir = run_dir.join("taskruns").join(&name);
        let mut ctx = Vars::new();
        ctx.set_str("context.taskRun.name", &name);
        ctx.set_str("context.taskRun.namespace", &self.opts.namespace);
        ctx.set_str("context.taskRun.uid", &uid);
        ctx.set_str("context.task.name", if embedded { &name } else { &task_name });
        let bindings: Vec<(String, String, Option<String>)> =
            tr.spec.workspaces.iter().map(|b| (b.name.clone(), b.name.clone(), None)).collect();
        let req = match self.build_request(
            &name,
            &name,
            &spec,
            &supplied,
            &[],
            embedded,
            &ctx,
            &Vars::new(),
            &volumes,
            &bindings,
            &task_dir,
            tr.spec.timeout.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_TIMEOUT),
            false,
        ) {
            Ok(r) => r,
            Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
        };
        let job = match &self.cache {
            None => None,
            Some(cache) => {
                let timeout = tr.spec.timeout.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_TIMEOUT);
                let key_req = match self.build_request(
                    &name,
                    &name,
                    &spec,
                    &supplied,
                    &[],
                    embedded,
                    &stabilize(&ctx),
                    &Vars::new(),
                    &volumes,
                    &bindings,
                    &task_dir,
                    timeout,
                    true,
                ) {
                    Ok(r) => r,
                    Err(f) => return self.failed_summary(&name, "TaskRun", None, started, f),
                };
                let ann = |n: &str| {
                    tr.meta.annotations.get(n).cloned().or_else(|| {
                        tr.spec
                            .task_ref
                            .as_ref()
                            .and_then(|r| r.name.as_deref())
                            .and_then(|t| self.cat.task(t))
                            .and_then(|t| t.meta.annotations.get(n).cloned())
                    })
                };
                let mut job = CacheJob {
                    run: name.clone(),
                    run_uid: uid.clone(),
                    task: name.clone(),
                    key_spec: key_req.spec,
                    ..Default::default()
                };
                for (k, v) in &supplied {
                    job.params.insert(k.clone(), v.to_json());
                }
                cached::retain_used_params(&mut job, &spec);
                cached::apply_bindings(
                    &mut job,
                    &ann,
                    &bindings,
                    &|n: &str| volumes.describe(n),
                    &req,
                    false,
                    &self.never_inputs,
                );
                cached::apply_forced(&mut job, cache, &name);
                Some(job)
            }
        };
        let launch =
            Launch { pt_name: name.clone(), index: 0, req, retries: tr.spec.retries, cancel: self.cancel.clone(), job };
        let m =
            execute_launch(self.exec.clone(), self.sem.clone(), self.console.clone(), self.cache.clone(), launch).await;
        let outcome = m.outcome.clone();
        let mut task = child_summary(
            &name,
            &ChildDone {
                index: 0,
                name: name.clone(),
                outcome: m.outcome,
                attempts: m.attempts,
                cache: m.cache.clone(),
            },
            false,
            false,
        );
        task.task_run = Some(name.clone());
        let ok = outcome.status == AttemptStatus::Succeeded;
        if let Some(cache) = &self.cache {
            if !cache.dry_run && !cache.store_failed() {
                let keys: Vec<String> = m.cache.key().map(String::from).into_iter().collect();
                if let Err(e) = cache.store.record_run(&name, &uid, ok, &keys) {
                    let msg = cache.store_error(&format!("could not record TaskRun {name}"), &e);
                    self.console.line(&format!("{} {msg}", self.console.yellow("!")));
                }
            }
        }
        RunSummary {
            name,
            kind: "TaskRun".into(),
            pipeline: None,
            status: if ok { "Succeeded".into() } else { "Failed".into() },
            reason: outcome.reason.clone(),
            message: outcome.message.clone(),
            started_at: rfc3339(started),
            duration_ms: started.elapsed().unwrap_or_default().as_millis() as u64,
            results: to_json(&outcome.results),
            tasks: vec![task],
            run_dir: if self.dry_run() {
                let _ = std::fs::remove_dir_all(&run_dir);
                None
            } else {
                Some(run_dir.display().to_string())
            },
        }
    }

    /// Build the request for one TaskRun: params, context, workspaces, step template,
    /// StepActions, env references.
    #[allow(clippy::too_many_arguments)]
    fn build_request(
        &self,
        taskrun_name: &str,
        label: &str,
        spec: &TaskSpec,
        supplied: &[(String, ParamValue)],
        // pipeline params propagated into an embedded spec (below `supplied`)
        propagated: &[(String, ParamValue)],
        embedded: bool,
        ctx: &Vars,
        pipeline_phase: &Vars,
        volumes: &RunVolumes,
        // (task workspace name, run-level binding name, extra subPath)
        bindings: &[(String, String, Option<String>)],
        dir: &std::path::Path,
        timeout: Duration,
        // the request a cache key is computed from (Secret values replaced by digests)
        for_key: bool,
    ) -> Result<TaskRunRequest, Failure> {
        let mut spec = spec.clone();
        // pipeline-level phases for an embedded spec: the pipeline's params (propagated;
        // a pipeline task param of the same name shadows one), context, workspaces and
        // results, each in one pass, as Tekton applies them before the TaskRun exists
        if embedded && !pipeline_phase.is_empty() {
            spec = resolve::substitute(&spec, pipeline_phase);
        }
        let all: Vec<(String, ParamValue)> = propagated.iter().chain(supplied).cloned().collect();
        let task_failure = |f: Failure| {
            Failure::new(
                if f.reason == "ParameterMissing" { "TaskRunValidationFailed" } else { &f.reason },
                format!("invalid input params for task {taskrun_name}: {}", f.message),
            )
        };
        let mut values =
            param_values(&spec.params, &all, &format!("TaskRun {taskrun_name:?}")).map_err(task_failure)?;
        if !propagated.is_empty() {
            // The TaskRun's own params are the pipeline task's; a propagated value already
            // went in with the pipeline's phase, so here the task's default (if any) applies.
            let own: Vec<crate::model::ParamSpec> = spec
                .params
                .iter()
                .filter(|d| d.default.is_some() || supplied.iter().any(|(n, _)| n == &d.name))
                .cloned()
                .collect();
            // (a default may still name a propagated param: that text is the author's)
            values = resolve::param_values_with(&own, supplied, &values, &format!("TaskRun {taskrun_name:?}"))
                .map_err(task_failure)?;
        }
        // Tekton's TaskRun phases, in order: params, then context (then, in the executor,
        // result, step and workspace paths). Each is one pass: a param value's text is
        // not rescanned for params, but the later phases do apply to it.
        let mut params = Vars::new();
        // embedded specs see undeclared supplied params too (propagation)
        if embedded {
            let mut merged: BTreeMap<&str, ParamValue> = BTreeMap::new();
            for (k, v) in supplied {
                // later values win; objects merge key by key
                let nv = match (merged.remove(k.as_str()), v) {
                    (Some(ParamValue::Object(mut old)), ParamValue::Object(new)) => {
                        old.extend(new.clone());
                        ParamValue::Object(old)
                    }
                    (_, v) => v.clone(),
                };
                merged.insert(k, nv);
            }
            for (k, v) in merged {
                params.set(format!("params.{k}"), v);
            }
        }
        params.extend(&param_vars(&values));
        let mut vars = params.clone();
        vars.then(ctx);
        resolve::apply_step_template(&mut spec);
        // StepActions first, as Tekton resolves them before the TaskRun's phases: a step's
        // params get the task's params (whole values: `$(params.a[*])` stays an array),
        // the action's params go into its body, then every phase runs over the whole spec.
        for step in spec.steps.iter_mut().filter(|s| s.ref_.is_some()) {
            for p in step.params.iter_mut() {
                p.value = params.apply_value(&p.value);
            }
        }
        resolve::inline_step_actions(&mut spec, &self.cat)?;
        spec = resolve::substitute(&spec, &vars);
        let env_mode = resolve::EnvMode { for_key, env_from: !self.exec.resolves_env_from() };
        resolve::resolve_env(&mut spec, &self.cat, env_mode)?;
        // workspaces
        if !self.dry_run() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut ws = Vec::new();
        for decl in &spec.workspaces {
            let b = bindings.iter().find(|(n, _, _)| n == &decl.name);
            let bound = match b {
                Some((_, run_name, sub)) => Some(volumes.path_for(run_name, sub.as_deref(), dir, &decl.name)?),
                None if embedded && volumes.has(&decl.name) => {
                    Some(volumes.path_for(&decl.name, None, dir, &decl.name)?)
                }
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
        // embedded specs may use pipeline workspaces they did not declare
        if embedded {
            for (tname, run_name, sub) in bindings {
                if !ws.iter().any(|w| &w.name == tname) {
                    let (p, ro, claim) = volumes.path_for(run_name, sub.as_deref(), dir, tname)?;
                    let kind = volumes.describe(run_name);
                    ws.push(BoundWorkspace { name: tname.clone(), path: Some(p), read_only: ro, claim, kind });
                }
            }
        }
        let volumes =
            if self.dry_run() { BTreeMap::new() } else { workspaces::task_volumes(&self.cat, &spec, dir, &self.opts)? };
        Ok(TaskRunRequest {
            volumes,
            name: taskrun_name.into(),
            label: label.into(),
            spec,
            workspaces: ws,
            timeout: Some(timeout),
            attempt: 0,
            dir: dir.to_path_buf(),
            max_result_size: self.opts.max_result_size,
        })
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn repo_workspaces(ann: &BTreeMap<String, String>) -> Vec<String> {
    ann.get(crate::model::REPO_WORKSPACE_ANNOTATION)
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// Run attempts until success, cancellation or retries are used up.
async fn run_attempts(
    exec: Arc<dyn Executor>,
    sem: Arc<Semaphore>,
    base: TaskRunRequest,
    retries: u32,
    cancel: CancellationToken,
    console: Arc<Console>,
) -> (TaskOutcome, u32) {
    let mut attempt = 0;
    loop {
        let mut req = base.clone();
        req.attempt = attempt;
        req.dir = base.dir.join(format!("attempt-{attempt}"));
        let mut rc = Vars::new();
        rc.set_str("context.task.retry-count", attempt.to_string());
        req.spec = resolve::substitute(&req.spec, &rc);
        let outcome = {
            let _permit = tokio::select! {
                p = sem.clone().acquire_owned() => p.ok(),
                _ = cancel.cancelled() => None,
            };
            if attempt == 0 && !cancel.is_cancelled() {
                console.line(&format!("{} {} {}", console.bold("→"), base.label, console.dim("started")));
            }
            if cancel.is_cancelled() {
                TaskOutcome {
                    status: AttemptStatus::Cancelled,
                    reason: "TaskRunCancelled".into(),
                    message: format!("TaskRun {:?} was cancelled", req.name),
                    results: BTreeMap::new(),
                    steps: vec![],
                    duration: Duration::ZERO,
                }
            } else {
                exec.run(req, cancel.clone()).await
            }
        };
        attempt += 1;
        let retryable =
            matches!(outcome.status, AttemptStatus::Failed | AttemptStatus::TimedOut) && !cancel.is_cancelled();
        if !retryable || attempt > retries {
            return (outcome, attempt);
        }
        console.line(&format!(
            "{} {} attempt {attempt} {}: {} (retrying, {} left)",
            console.yellow("↻"),
            base.label,
            outcome.reason,
            outcome.message,
            retries + 1 - attempt
        ));
    }
}

struct PipelineRunState<'a> {
    engine: &'a Engine,
    name: String,
    uid: String,
    /// The Pipeline's annotations (the PipelineRun's for an embedded pipelineSpec).
    pipeline_annotations: BTreeMap<String, String>,
    spec: &'a PipelineSpec,
    pr: &'a Obj<PipelineRunSpec>,
    pvars: Vars,
    volumes: RunVolumes,
    run_dir: PathBuf,
    states: BTreeMap<String, TaskState>,
    /// Why nothing new starts (`PipelineRun was stopping`, a timeout message).
    stopping: Option<String>,
    run_failure: Option<Failure>,
    /// `tasks`, `finally` or `pipeline` when a timeout fired.
    timed_out: Option<String>,
    cancelled: bool,
    tasks_timeout: Option<Duration>,
    finally_timeout: Option<Duration>,
    joinset: JoinSet<ChildMsg>,
    dag_cancel: CancellationToken,
    finally_cancel: CancellationToken,
}

impl<'a> PipelineRunState<'a> {
    fn skip(&mut self, name: &str, reason: &str, by_when: bool) {
        if let Some(st) = self.states.get_mut(name) {
            if st.is_done() {
                return;
            }
            st.state = State::Done(Done::Skipped { reason: reason.to_string(), by_when });
            st.reason = reason.to_string();
        }
        let c = &self.engine.console;
        c.line(&format!("{} {name} {} {}", c.yellow("⊘"), c.yellow("Skipped"), c.dim(&format!("({reason})"))));
    }

    fn pt<'b>(&self, list: &'b [PipelineTask], name: &str) -> Option<&'b PipelineTask> {
        list.iter().find(|t| t.name == name)
    }

    /// Variables for a pipeline task: params, context, workspaces.bound, results of done
    /// tasks, and (finally) execution statuses.
    fn vars_for(&self, pt: &PipelineTask, finally: bool) -> Vars {
        // pipeline task context, then execution statuses, then results: Tekton's order
        let mut v = Vars::new();
        v.set_str("context.pipelineTask.retries", pt.retries.to_string());
        let mut status = Vars::new();
        let mut results = Vars::new();
        // only the tasks this one refers to: planning a large pipeline stays linear
        let referenced = if finally { BTreeSet::new() } else { referenced_tasks(pt) };
        // a finally task may read any task's state; others only those they name (looked
        // up, not scanned: planning stays linear in the number of tasks)
        let visible: Box<dyn Iterator<Item = (&String, &TaskState)>> = if finally {
            Box::new(self.states.iter())
        } else {
            Box::new(referenced.iter().filter_map(|n| self.states.get_key_value(n)).filter(|(_, st)| !st.finally))
        };
        for (name, st) in visible {
            for (r, val) in &st.results {
                results
                    .set(format!("{}.{name}.results.{r}", if st.finally { "finally" } else { "tasks" }), val.clone());
            }
            if st.matrix {
                v.set_str(format!("tasks.{name}.matrix.length"), st.expected_children.to_string());
                for (r, val) in &st.results {
                    if let ParamValue::Array(a) = val {
                        v.set_str(format!("tasks.{name}.matrix.{r}.length"), a.len().to_string());
                    }
                }
            }
        }
        if finally {
            let mut any_failed = false;
            let mut any_skipped = false;
            let mut all_none = true;
            for (name, st) in self.states.iter().filter(|(_, s)| !s.finally) {
                status.set_str(format!("tasks.{name}.status"), st.exec_status());
                status.set_str(format!("tasks.{name}.reason"), st.reason.clone());
                match &st.state {
                    State::Done(Done::Failed { .. }) => {
                        any_failed = true;
                        all_none = false
                    }
                    State::Done(Done::Skipped { .. }) => any_skipped = true,
                    State::Done(Done::Succeeded) => all_none = false,
                    _ => {}
                }
            }
            let agg = if any_failed {
                "Failed"
            } else if all_none && any_skipped {
                "None"
            } else if any_skipped {
                "Completed"
            } else {
                "Succeeded"
            };
            status.set_str("tasks.status", agg);
        }
        let mut all = self.pvars.clone();
        all.then(&v).then(&status).then(&results);
        all
    }

    /// The pipeline task after the pipeline's param phase alone (for finding references).
    fn after_params(&self, pt: &PipelineTask) -> PipelineTask {
        let mut v = serde_json::to_value(pt).unwrap_or_default();
        self.pvars.first_phase().apply_json(&mut v, &[]);
        serde_json::from_value(v).unwrap_or_else(|_| pt.clone())
    }

    /// Decide what to do with a pipeline task whose parents are done.
    fn decide(&self, pt: &PipelineTask, dag: &Dag, finally: bool) -> Decision {
        if let Some(reason) = &self.stopping {
            return Decision::Skip { reason: reason.clone(), by_when: false };
        }
        // parents skipped for a reason other than `when` cascade
        if let Some(parents) = dag.parents.get(&pt.name) {
            for p in parents {
                if let Some(TaskState { state: State::Done(Done::Skipped { by_when: false, .. }), .. }) =
                    self.states.get(p)
                {
                    return Decision::Skip { reason: "Parent Tasks were skipped".into(), by_when: false };
                }
            }
        }
        // result references: the producer must have the result
        let continue_on_error = pt.on_error.as_deref() == Some("continue");
        // result references are looked for after the pipeline's param phase, as Tekton
        // resolves them on the substituted pipeline task: a param value may bring one in
        let scanned = self.after_params(pt);
        for (producer, result) in result_refs(&scanned) {
            let Some(st) = self.states.get(&producer) else {
                continue;
            };
            if st.would_run {
                // planning: the producer must run first, so its results are unknown
                return Decision::After(producer);
            }
            let has = st.results.contains_key(&result);
            if has {
                continue;
            }
            match &st.state {
                State::Done(Done::Skipped { .. }) | State::Done(Done::Failed { .. }) if finally => {
                    return Decision::Skip { reason: "Results were missing".into(), by_when: false };
                }
                State::Done(Done::Skipped { by_when: true, .. }) => {
                    return Decision::Skip { reason: "Results were missing".into(), by_when: false };
                }
                _ if finally || continue_on_error => {
                    return Decision::Skip { reason: "Results were missing".into(), by_when: false }
                }
                _ => {
                    return Decision::FailRun(Failure::new(
                        "PipelineValidationFailed",
                        format!("Could not find result with name {result} for pipeline task {producer}"),
                    ))
                }
            }
        }
        let vars = self.vars_for(&scanned, finally);
        // when
        for w in &pt.when {
            match crate::model::cel::when_holds(w, &vars) {
                Ok(true) => {}
                Ok(false) => {
                    return Decision::Skip { reason: "When Expressions evaluated to false".into(), by_when: true }
                }
                Err(e) => {
                    return Decision::FailRun(Failure::new(
                        "CELEvaluationFailed",
                        format!("pipeline task {}: {e}", pt.name),
                    ))
                }
            }
        }
        // the task to run
        let (spec, embedded, task_name) = match (&pt.task_ref, &pt.task_spec) {
            (_, Some(ts)) => (ts.task.clone(), true, None),
            (Some(r), None) => match r.name.as_deref().and_then(|n| self.engine.cat.task(n)) {
                Some(t) => (t.spec.clone(), false, Some(t.name.clone())),
                None => {
                    return Decision::FailRun(Failure::new(
                        "CouldntGetTask",
                        format!("Task {:?} not found for pipeline task {}", r.name.as_deref().unwrap_or(""), pt.name),
                    ))
                }
            },
            (None, None) => {
                return Decision::FailRun(Failure::new(
                    "PipelineValidationFailed",
                    format!("pipeline task {} has neither taskRef nor taskSpec", pt.name),
                ))
            }
        };
        let mut propagated: Vec<(String, ParamValue)> = Vec::new();
        if embedded {
            // propagated pipeline params: below the pipeline task's own params
            for p in &self.spec.params {
                if let Some(v) = self.pvars.get(&format!("params.{}", p.name)) {
                    propagated.push((p.name.clone(), v.clone()));
                }
            }
        }
        let mut supplied: Vec<(String, ParamValue)> = Vec::new();
        for p in &pt.params {
            supplied.push((p.name.clone(), vars.apply_value(&p.value)));
        }
        // matrix
        let combos: Vec<Vec<(String, String)>> = match &pt.matrix {
            None => vec![vec![]],
            Some(m) => match matrix::expand(&pt.name, m, &vars) {
                Ok(c) => c,
                Err(matrix::NoFanOut::Empty) => {
                    let reason = crate::plan::SkipReason::EmptyMatrix.as_str().into();
                    return Decision::Skip { reason, by_when: false };
                }
                Err(matrix::NoFanOut::Fail(f)) => return Decision::FailRun(Failure::new(&f.reason, f.message)),
            },
        };
        // pipeline phases for embedded specs: the pipeline's params, where a pipeline task
        // param of the same name shadows one with its value after the pipeline's param
        // phase (Tekton's propagation), then context, workspaces, results, statuses
        let phase = if embedded { crate::plan::facts::embedded_phase(pt, &vars, &self.pvars) } else { Vars::new() };
        let timeout = self
            .pr
            .spec
            .task_run_specs
            .iter()
            .find(|s| s.pipeline_task_name == pt.name)
            .and_then(|s| s.timeout.as_deref())
            .or(pt.timeout.as_deref())
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_TIMEOUT);
        let bindings: Vec<(String, String, Option<String>)> = pt
            .workspaces
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    b.workspace.clone().unwrap_or_else(|| b.name.clone()),
                    b.sub_path.as_ref().map(|s| vars.apply_str(s)),
                )
            })
            .chain(if embedded {
                // embedded specs may use a pipeline workspace by its own name without binding
                // it; like Tekton (tektoncd/pipeline#8008) only the ones the spec references are
                // propagated, so an unrelated repo workspace is not an input of this task
                let unbound: Vec<&str> = self
                    .spec
                    .workspaces
                    .iter()
                    .filter(|w| !pt.workspaces.iter().any(|b| b.name == w.name))
                    .filter(|w| self.volumes.has(&w.name))
                    .map(|w| w.name.as_str())
                    .collect();
                let text =
                    if unbound.is_empty() { String::new() } else { serde_json::to_string(pt).unwrap_or_default() };
                unbound
                    .into_iter()
                    .filter(|w| text.contains(&format!("workspaces.{w}.")))
                    .map(|w| (w.to_string(), w.to_string(), None))
                    .collect::<Vec<_>>()
            } else {
                vec![]
            })
            .collect();
        let mut launches = Vec::new();
        for (i, combo) in combos.into_iter().enumerate() {
            let tr_name = if pt.matrix.is_some() {
                format!("{}-{}-{i}", self.name, pt.name)
            } else {
                format!("{}-{}", self.name, pt.name)
            };
            let label = if pt.matrix.is_some() { format!("{}[{i}]", pt.name) } else { pt.name.clone() };
            let mut sup = supplied.clone();
            sup.extend(combo.into_iter().map(|(k, v)| (k, ParamValue::Str(v))));
            let mut ctx = self.pvars.clone();
            ctx = strip_params(&ctx);
            ctx.set_str("context.taskRun.name", &tr_name);
            ctx.set_str("context.taskRun.namespace", &self.engine.opts.namespace);
            ctx.set_str("context.taskRun.uid", new_uid(&tr_name));
            ctx.set_str("context.task.name", task_name.clone().unwrap_or_else(|| tr_name.clone()));
            let dir = self.run_dir.join("taskruns").join(&tr_name);
            let req = match self.engine.build_request(
                &tr_name,
                &label,
                &spec,
                &sup,
                &propagated,
                embedded,
                &ctx,
                &phase,
                &self.volumes,
                &bindings,
                &dir,
                timeout,
                false,
            ) {
                Ok(r) => r,
                Err(f) => return Decision::FailRun(f),
            };
            let job = match &self.engine.cache {
                None => None,
                Some(_) => {
                    let key_req = match self.engine.build_request(
                        &tr_name,
                        &label,
                        &spec,
                        &sup,
                        &propagated,
                        embedded,
                        &stabilize(&ctx),
                        &stabilize(&phase),
                        &self.volumes,
                        &bindings,
                        &dir,
                        timeout,
                        true,
                    ) {
                        Ok(r) => r,
                        Err(f) => return Decision::FailRun(f),
                    };
                    // the key's params: propagated ones too, below the task's own
                    let keyed: Vec<(String, ParamValue)> = propagated.iter().chain(&sup).cloned().collect();
                    match self.cache_job(
                        pt,
                        dag,
                        &label,
                        key_req.spec,
                        &keyed,
                        &bindings,
                        &req,
                        &vars,
                        task_name.as_deref(),
                    ) {
                        Ok(mut j) => {
                            cached::retain_used_params(&mut j, &spec);
                            Some(j)
                        }
                        Err(d) => return d,
                    }
                }
            };
            let cancel = if finally { self.finally_cancel.clone() } else { self.dag_cancel.clone() };
            launches.push(Launch { pt_name: pt.name.clone(), index: i, req, retries: pt.retries, cancel, job });
        }
        Decision::Run(launches, bindings.iter().map(|(t, r, _)| (t.clone(), r.clone())).collect())
    }

    /// Annotation `name` for pipeline task `pt`: the Pipeline's (or, for an embedded
    /// pipelineSpec, the PipelineRun's) `name.<pt>` wins over the Task's own.
    fn task_annotation(&self, pt: &PipelineTask, task_name: Option<&str>, name: &str) -> Option<String> {
        let scoped = format!("{name}.{}", pt.name);
        if let Some(v) = self.pipeline_annotations.get(&scoped).or_else(|| self.pr.meta.annotations.get(&scoped)) {
            return Some(v.clone());
        }
        let own = match (&pt.task_spec, task_name) {
            (Some(ts), _) => ts.metadata.as_ref().and_then(|m| m.annotations.get(name)).cloned(),
            (None, Some(t)) => self.engine.cat.task(t).and_then(|t| t.meta.annotations.get(name)).cloned(),
            _ => None,
        };
        own
    }

    /// Everything the cache needs to key one TaskRun of `pt`. In planning, a task whose
    /// key depends on a task that would run first is decided `run (after X)` here.
    #[allow(clippy::too_many_arguments)]
    fn cache_job(
        &self,
        pt: &PipelineTask,
        dag: &Dag,
        label: &str,
        key_spec: TaskSpec,
        sup: &[(String, ParamValue)],
        bindings: &[(String, String, Option<String>)],
        req: &TaskRunRequest,
        vars: &Vars,
        task_name: Option<&str>,
    ) -> Result<CacheJob, Decision> {
        let cache = self.engine.cache.as_ref().expect("cache enabled");
        let ann = |n: &str| self.task_annotation(pt, task_name, n);
        let mut job = CacheJob {
            run: self.name.clone(),
            run_uid: self.uid.clone(),
            task: label.to_string(),
            key_spec,
            run_dir: Some(self.run_dir.clone()),
            ..Default::default()
        };
        for p in &pt.params {
            if let ParamValue::Str(v) = &p.value {
                let refs = find_refs(v);
                if refs.len() == 1 && refs[0].start == 0 && refs[0].end == v.len() {
                    if let Some(name) = refs[0].expr.strip_prefix("params.") {
                        job.param_sources.insert(p.name.clone(), name.to_string());
                    }
                }
            }
        }
        for (k, v) in sup {
            job.params.insert(k.clone(), v.to_json());
        }
        let never = &self.engine.never_inputs;
        let shared =
            cached::apply_bindings(&mut job, &ann, bindings, &|n: &str| self.volumes.describe(n), req, true, never);
        // upstream results consumed (early cutoff: same values, same key)
        for (producer, result) in result_refs(pt) {
            if self.states.get(&producer).is_some_and(|s| s.would_run) {
                return Err(Decision::After(producer));
            }
            let k = format!("tasks.{producer}.results.{result}");
            if let Some(v) = vars.get(&k) {
                job.upstream_results.insert(k, v.to_json());
            }
        }
        // outputs of ancestors on the shared volumes this task sees (only tasks that bind
        // a shared volume need the walk up the DAG)
        let ancestors = if shared.is_empty() { BTreeSet::new() } else { dag.ancestors(&pt.name) };
        for a in &ancestors {
            let Some(st) = self.states.get(a) else { continue };
            let touches = st.ws_map.values().any(|r| shared.contains(r));
            if st.would_run && touches {
                return Err(Decision::After(a.clone()));
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

    /// Schedule and run `tasks` (the DAG or the finally set) until all are done.
    async fn drive(
        &mut self,
        dag: &Dag,
        tasks: &'a [PipelineTask],
        finally: bool,
        deadline: Option<Instant>,
        phase_deadline: Option<Instant>,
        pipeline_deadline: Option<Instant>,
    ) {
        let mut readiness = crate::model::dag::Readiness::new(dag, tasks.iter().map(|t| t.name.as_str()));
        let index: HashMap<&str, &'a PipelineTask> = tasks.iter().map(|t| (t.name.as_str(), t)).collect();
        for t in tasks {
            if self.states.get(&t.name).is_some_and(|s| s.is_done()) {
                readiness.mark_done(&t.name);
            }
        }
        loop {
            // start or skip everything that is ready, until nothing changes
            loop {
                let ready = readiness.take_ready();
                if ready.is_empty() {
                    break;
                }
                for name in ready {
                    let Some(&pt) = index.get(name.as_str()) else {
                        continue;
                    };
                    match self.states.get(&name).map(|s| &s.state) {
                        None | Some(State::Pending) => {}
                        Some(State::Done(_)) => {
                            readiness.mark_done(&name);
                            continue;
                        }
                        _ => continue,
                    }
                    match self.decide(pt, dag, finally) {
                        Decision::Skip { reason, by_when } => self.skip(&name, &reason, by_when),
                        Decision::FailRun(f) => {
                            let c = &self.engine.console;
                            c.line(&format!("{} {name} {}: {}", c.red("✗"), f.reason, f.message));
                            if let Some(st) = self.states.get_mut(&name) {
                                st.state =
                                    State::Done(Done::Failed { ignored: false, timed_out: false, cancelled: false });
                                st.reason = f.reason.clone();
                                st.message = f.message.clone();
                            }
                            if self.run_failure.is_none() {
                                self.run_failure = Some(f);
                            }
                            if !finally {
                                self.stopping.get_or_insert_with(|| "PipelineRun was stopping".into());
                            }
                        }
                        Decision::After(producer) => {
                            let c = &self.engine.console;
                            c.line(&format!(
                                "{} {name} {}",
                                c.bold("→"),
                                c.dim(&format!("would run (after {producer})"))
                            ));
                            let st = self.states.get_mut(&name).expect("state exists");
                            st.state = State::Done(Done::Succeeded);
                            st.would_run = true;
                            st.reason = "Planned".into();
                            st.children.push(ChildDone {
                                index: 0,
                                name: String::new(),
                                outcome: cached_outcome(BTreeMap::new()),
                                attempts: 0,
                                cache: CacheOutcome::After { task: producer },
                            });
                        }
                        Decision::Run(launches, ws_map) => {
                            let st = self.states.get_mut(&name).expect("state exists");
                            st.state = State::Running;
                            st.expected_children = launches.len();
                            st.matrix = pt.matrix.is_some();
                            st.task_run = launches.first().map(|l| l.req.name.clone());
                            st.ws_map = ws_map.into_iter().collect();
                            for l in launches {
                                let exec = self.engine.exec.clone();
                                let sem = self.engine.sem.clone();
                                let console = self.engine.console.clone();
                                let cache = self.engine.cache.clone();
                                self.joinset.spawn(execute_launch(exec, sem, console, cache, l));
                            }
                        }
                    }
                    if self.states.get(&name).is_some_and(|s| s.is_done()) {
                        readiness.mark_done(&name);
                    }
                }
            }
            if self.joinset.is_empty() {
                let all_done = tasks.iter().all(|t| self.states.get(&t.name).is_some_and(|s| s.is_done()));
                if all_done {
                    return;
                }
                // nothing running and nothing ready: skip the rest (stopping)
                for t in tasks {
                    if !self.states[&t.name].is_done() {
                        let reason = self.stopping.clone().unwrap_or_else(|| "PipelineRun was stopping".into());
                        self.skip(&t.name, &reason, false);
                    }
                }
                return;
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                res = self.joinset.join_next() => {
                    if let Some(Ok(m)) = res {
                        self.child_finished(tasks, m, finally, &mut readiness);
                    }
                    // take every other finished child before looking for ready tasks again
                    while let Some(res) = self.joinset.try_join_next() {
                        if let Ok(m) = res {
                            self.child_finished(tasks, m, finally, &mut readiness);
                        }
                    }
                }
                _ = sleep => {
                    let which = if pipeline_deadline.is_some() && deadline == pipeline_deadline && phase_deadline != deadline {
                        "pipeline"
                    } else if pipeline_deadline.is_some() && Some(Instant::now()) >= pipeline_deadline {
                        "pipeline"
                    } else if finally { "finally" } else { "tasks" };
                    let msg = match which {
                        "pipeline" => "PipelineRun timeout has been reached",
                        "finally" => "PipelineRun Finally timeout has been reached",
                        _ => "PipelineRun Tasks timeout has been reached",
                    };
                    let c = &self.engine.console;
                    c.line(&format!("{} {msg}", c.red("⏱")));
                    self.timed_out = Some(which.to_string());
                    self.stopping = Some(msg.to_string());
                    if finally { self.finally_cancel.cancel() } else { self.dag_cancel.cancel() }
                    if which == "pipeline" { self.finally_cancel.cancel(); }
                    // drain: cancelled children report back
                    while let Some(res) = self.joinset.join_next().await {
                        if let Ok(m) = res {
                            self.child_finished(tasks, m, finally, &mut readiness);
                        }
                    }
                }
                _ = self.engine.cancel.cancelled(), if !self.cancelled => {
                    self.cancelled = true;
                    self.stopping = Some("PipelineRun was cancelled".into());
                    let c = &self.engine.console;
                    c.line(&format!("{} cancelling PipelineRun {}", c.red("■"), self.name));
                }
            }
        }
    }

    /// A child finished: record it, and tell readiness when its pipeline task is done.
    fn child_finished(
        &mut self,
        tasks: &[PipelineTask],
        m: ChildMsg,
        finally: bool,
        readiness: &mut crate::model::dag::Readiness,
    ) {
        let name = m.pt_name.clone();
        self.child_done(tasks, m, finally);
        if self.states.get(&name).is_some_and(|s| s.is_done()) {
            readiness.mark_done(&name);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn child_done(&mut self, tasks: &[PipelineTask], m: ChildMsg, finally: bool) {
        let pt_name = m.pt_name.as_str();
        let Some(pt) = self.pt(tasks, pt_name) else {
            return;
        };
        let ignore = pt.on_error.as_deref() == Some("continue");
        let dry = self.engine.dry_run();
        let st = self.states.get_mut(pt_name).expect("state exists");
        for set in m.outputs {
            let run_ws = st.ws_map.get(&set.workspace).cloned().unwrap_or_else(|| set.workspace.clone());
            st.outputs.push((run_ws, set));
        }
        if dry && matches!(m.cache, CacheOutcome::Miss { .. } | CacheOutcome::Uncacheable { .. }) {
            st.would_run = true;
        }
        st.children.push(ChildDone {
            index: m.index,
            name: m.tr_name,
            outcome: m.outcome,
            attempts: m.attempts,
            cache: m.cache,
        });
        if st.children.len() < st.expected_children {
            return;
        }
        st.children.sort_by_key(|c| c.index);
        // aggregate
        let all_ok = st.children.iter().all(|c| c.outcome.status == AttemptStatus::Succeeded);
        let first_bad = st.children.iter().find(|c| c.outcome.status != AttemptStatus::Succeeded);
        st.attempts = st.children.iter().map(|c| c.attempts).max().unwrap_or(0);
        st.duration = st.children.iter().map(|c| c.outcome.duration).max().unwrap_or_default();
        if st.matrix {
            let mut agg: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for c in &st.children {
                for (k, v) in &c.outcome.results {
                    if let ParamValue::Str(s) = v {
                        agg.entry(k.clone()).or_default().push(s.clone());
                    }
                }
            }
            st.results = agg.into_iter().map(|(k, v)| (k, ParamValue::Array(v))).collect();
        } else if let Some(c) = st.children.first() {
            st.results = c.outcome.results.clone();
            st.steps = c.outcome.steps.clone();
        }
        let c = &self.engine.console;
        let all_cached = st.children.iter().all(|c| matches!(c.cache, CacheOutcome::Hit { .. }));
        if all_ok && dry {
            st.state = State::Done(Done::Succeeded);
            st.reason = if all_cached { "Cached".into() } else { "Planned".into() };
            let word = if all_cached { c.green("cached") } else { c.yellow("would run") };
            let why = st.children.iter().flat_map(|ch| ch.cache.reasons()).next().unwrap_or_default();
            c.line(&format!("{} {pt_name} {word} {}", c.bold("·"), c.dim(&why)));
        } else if all_ok && all_cached {
            st.state = State::Done(Done::Succeeded);
            st.reason = "Cached".into();
            let from = st.children.iter().flat_map(|ch| ch.cache.reasons()).next().unwrap_or_default();
            c.line(&format!("{} {pt_name} {} {}", c.green("✓"), c.green("Cached"), c.dim(&format!("({from})"))));
        } else if all_ok {
            st.state = State::Done(Done::Succeeded);
            st.reason = "Succeeded".into();
            c.line(&format!(
                "{} {pt_name} {} {}",
                c.green("✓"),
                c.green("Succeeded"),
                c.dim(&format!("({:.1}s)", st.duration.as_secs_f64()))
            ));
        } else {
            let bad = first_bad.expect("some child failed");
            let timed_out = bad.outcome.status == AttemptStatus::TimedOut;
            let cancelled = bad.outcome.status == AttemptStatus::Cancelled;
            st.state = State::Done(Done::Failed { ignored: ignore, timed_out, cancelled });
            st.reason = if ignore && !cancelled { "FailureIgnored".into() } else { bad.outcome.reason.clone() };
            st.message = bad.outcome.message.clone();
            let word = if cancelled {
                "Cancelled"
            } else if timed_out {
                "TimedOut"
            } else {
                "Failed"
            };
            let extra = if ignore { " (ignored: onError continue)" } else { "" };
            c.line(&format!("{} {pt_name} {}{extra}: {}", c.red("✗"), c.red(word), st.message));
            if !ignore && !finally && self.stopping.is_none() {
                self.stopping = Some("PipelineRun was stopping".into());
            }
        }
    }

    /// Pipeline results, final status and the summary.
    fn finish(
        mut self,
        pipeline: Option<String>,
        started: SystemTime,
        t0: Instant,
        pipeline_timeout: Duration,
    ) -> RunSummary {
        // results
        let mut vars = Vars::new();
        for (name, st) in &self.states {
            for (r, v) in &st.results {
                vars.set(format!("{}.{name}.results.{r}", if st.finally { "finally" } else { "tasks" }), v.clone());
            }
        }
        let planning = self.engine.dry_run();
        let declared = if planning { &[][..] } else { &self.spec.results[..] };
        let (values, missing) = crate::plan::pipeline_results(declared, &vars, |t| {
            self.states.get(t).map(|st| (st.state == State::Done(Done::Succeeded), &st.results))
        });
        let results: BTreeMap<String, Value> = values.into_iter().map(|(k, v)| (k, v.to_json())).collect();
        if let (None, Some(f)) = (&self.run_failure, missing) {
            self.run_failure = Some(Failure::new(&f.reason, f.message));
        }
        // status
        let mut tally = crate::plan::Tally::default();
        for st in self.states.values() {
            match &st.state {
                State::Done(Done::Succeeded) => tally.succeeded += 1,
                State::Done(Done::Failed { ignored, cancelled, .. }) => tally.failed(*ignored, *cancelled),
                State::Done(Done::Skipped { .. }) => tally.skipped += 1,
                _ => {}
            }
        }
        let counts = tally.message();
        let (status, reason, message) = if self.cancelled {
            ("Failed", "Cancelled".to_string(), format!("PipelineRun {:?} was cancelled", self.name))
        } else if self.timed_out.is_some() {
            (
                "Failed",
                "PipelineRunTimeout".to_string(),
                match (self.timed_out.as_deref(), self.tasks_timeout, self.finally_timeout) {
                    (Some("tasks"), Some(t), _) => {
                        format!(
                            "PipelineRun {:?} failed due to tasks failed to finish within {:?}",
                            self.name,
                            format_duration(t)
                        )
                    }
                    (Some("finally"), _, Some(t)) => format!(
                        "PipelineRun {:?} failed due to finally tasks failed to finish within {:?}",
                        self.name,
                        format_duration(t)
                    ),
                    _ => format!(
                        "PipelineRun {:?} failed to finish within {:?}",
                        self.name,
                        format_duration(pipeline_timeout)
                    ),
                },
            )
        } else if let Some(f) = &self.run_failure {
            ("Failed", f.reason.clone(), f.message.clone())
        } else if tally.hard_failure {
            ("Failed", "Failed".to_string(), counts.clone())
        } else if tally.skipped > 0 {
            ("Succeeded", "Completed".to_string(), counts.clone())
        } else {
            ("Succeeded", "Succeeded".to_string(), counts.clone())
        };
        let c = &self.engine.console;
        let mark = if status == "Succeeded" { c.green("✓") } else { c.red("✗") };
        c.line(&format!(
            "{mark} PipelineRun {} {} {} {}",
            self.name,
            if status == "Succeeded" { c.green(&reason) } else { c.red(&reason) },
            c.dim(&format!("({:.1}s)", t0.elapsed().as_secs_f64())),
            c.dim(&message)
        ));
        // tasks in declaration order; matrix children as name[i]
        let mut tasks = Vec::new();
        for (pt, fin) in self.spec.tasks.iter().map(|t| (t, false)).chain(self.spec.finally.iter().map(|t| (t, true))) {
            let st = &self.states[&pt.name];
            if st.matrix && !st.children.is_empty() {
                for ch in &st.children {
                    tasks.push(child_summary(
                        &format!("{}[{}]", pt.name, ch.index),
                        ch,
                        fin,
                        pt.on_error.as_deref() == Some("continue"),
                    ));
                }
                continue;
            }
            let (status, reason) = match &st.state {
                State::Done(Done::Succeeded) if st.reason == "Cached" => ("Cached", st.reason.clone()),
                State::Done(Done::Succeeded) => ("Succeeded", st.reason.clone()),
                State::Done(Done::Failed { cancelled: true, .. }) => ("Cancelled", st.reason.clone()),
                State::Done(Done::Failed { timed_out: true, .. }) => ("TimedOut", st.reason.clone()),
                State::Done(Done::Failed { .. }) => ("Failed", st.reason.clone()),
                State::Done(Done::Skipped { reason, .. }) => ("Skipped", reason.clone()),
                _ => ("Skipped", "PipelineRun was stopping".to_string()),
            };
            tasks.push(TaskSummary {
                name: pt.name.clone(),
                status: status.into(),
                reason,
                message: st.message.clone(),
                attempts: st.attempts,
                duration_ms: st.duration.as_millis() as u64,
                results: to_json(&st.results),
                finally: fin,
                task_run: st.task_run.clone(),
                steps: st.steps.clone(),
                ..TaskSummary::default()
            });
            if let (Some(t), Some(ch)) = (tasks.last_mut(), st.children.first()) {
                set_cache_fields(t, &ch.cache);
            }
        }
        // remember which records this run used, so gc keeps them while it is the latest
        if let Some(cache) = &self.engine.cache {
            if !cache.dry_run && !cache.store_failed() {
                let keys: Vec<String> = self
                    .states
                    .values()
                    .flat_map(|s| s.children.iter().filter_map(|c| c.cache.key().map(String::from)))
                    .collect();
                if let Err(e) = cache.store.record_run(&self.name, &self.uid, status == "Succeeded", &keys) {
                    let msg = cache.store_error(&format!("could not record PipelineRun {}", self.name), &e);
                    let c = &self.engine.console;
                    c.line(&format!("{} {msg}", c.yellow("!")));
                }
            }
        }
        RunSummary {
            name: self.name.clone(),
            kind: "PipelineRun".into(),
            pipeline,
            status: status.into(),
            reason,
            message,
            started_at: rfc3339(started),
            duration_ms: t0.elapsed().as_millis() as u64,
            results,
            tasks,
            run_dir: Some(self.run_dir.display().to_string()),
        }
    }
}

fn child_summary(name: &str, ch: &ChildDone, finally: bool, ignore: bool) -> TaskSummary {
    let o = &ch.outcome;
    let status = match o.status {
        AttemptStatus::Succeeded => "Succeeded",
        AttemptStatus::Failed => "Failed",
        AttemptStatus::TimedOut => "TimedOut",
        AttemptStatus::Cancelled => "Cancelled",
    };
    let status = if matches!(ch.cache, CacheOutcome::Hit { .. }) { "Cached" } else { status };
    let mut t = TaskSummary {
        name: name.into(),
        status: status.into(),
        reason: if ignore && o.status == AttemptStatus::Failed { "FailureIgnored".into() } else { o.reason.clone() },
        message: if o.status == AttemptStatus::Succeeded { String::new() } else { o.message.clone() },
        attempts: ch.attempts,
        duration_ms: o.duration.as_millis() as u64,
        results: to_json(&o.results),
        finally,
        task_run: Some(ch.name.clone()),
        steps: o.steps.clone(),
        ..TaskSummary::default()
    };
    set_cache_fields(&mut t, &ch.cache);
    t
}

fn set_cache_fields(t: &mut TaskSummary, c: &CacheOutcome) {
    t.cache_key = c.key().map(String::from);
    t.cache_reasons = c.reasons();
    if let CacheOutcome::Hit { run, run_uid, created_ns, remote, .. } = c {
        t.cached_from = Some(crate::report::CachedFrom {
            remote: remote.clone(),
            run: run.clone(),
            run_uid: run_uid.clone(),
            created_at: rfc3339(std::time::UNIX_EPOCH + Duration::from_nanos((*created_ns).max(0) as u64)),
        });
    }
}

/// Context with run-unique values left unsubstituted, for cache keys: a task that only
/// differs in its run's name or uid is the same task.
fn stabilize(v: &Vars) -> Vars {
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

fn strip_params(v: &Vars) -> Vars {
    v.without_prefix("params.")
}
