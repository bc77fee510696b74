//! The engine: runs PipelineRuns and TaskRuns on top of an [`Executor`], with Tekton's
//! scheduling semantics from [`crate::plan`] (the engine only drives them), and plans
//! them against the cache without running anything ([`planner`]).
//!
//! - [`pipeline`]: the async driver of a PipelineRun's facts (`tenon run`);
//! - [`planner`]: the synchronous loop over the same facts that asks the cache
//!   (`tenon plan`) and returns a [`planner::Plan`];
//! - [`taskrun`]: a standalone TaskRun;
//! - [`setup`], [`request`]: a run and each TaskRun made concrete (shared by both);
//! - [`launch`]: one TaskRun through the cache gate and the executor;
//! - [`events`]: progress as [`events::RunEvent`]s for the console and tracing;
//! - [`summary`]: report rows; [`cached`]: cache jobs, keys, records;
//!   [`resolve`], [`workspaces`]: spec resolution and volumes; [`lfs`]: Git LFS pointers
//!   made real before a TaskRun runs.

pub mod cached;
pub mod events;
pub mod launch;
pub mod lfs;
pub use crate::plan::matrix;
pub mod pipeline;
pub mod planner;
pub mod request;
pub mod resolve;
pub mod setup;
pub mod summary;
pub mod taskrun;
pub mod workspaces;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::exec::Executor;
use crate::model::Catalog;
use crate::report::RunSummary;
use crate::ui::Console;
use cached::CacheCtx;
use events::{Events, RunEvent};
use launch::Runner;
use request::RequestBuilder;
use resolve::Failure;
use setup::Shared;

pub use crate::plan::facts::DEFAULT_TIMEOUT;
pub use crate::util::new_uid;
use crate::util::rfc3339_millis as rfc3339;

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
    pub param_overrides: Vec<(String, crate::model::ParamValue)>,
    pub max_result_size: usize,
    pub namespace: String,
}

pub struct Engine {
    pub cat: Arc<Catalog>,
    pub exec: Arc<dyn Executor>,
    pub opts: EngineOptions,
    pub events: Events,
    /// Cancels every run (Ctrl-C).
    pub cancel: CancellationToken,
    sem: Arc<Semaphore>,
    /// The cache, when enabled.
    pub cache: Option<Arc<CacheCtx>>,
    /// Repository paths that are never task inputs: promotion targets and the ledger.
    never_inputs: Vec<PathBuf>,
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
        let never_inputs = setup::never_inputs(&cat, &opts.repo_root);
        Engine { cat, exec, opts, events: Events::new(console), cancel, sem, cache: None, never_inputs }
    }

    /// Enable the cache.
    pub fn with_cache(mut self, cache: Arc<CacheCtx>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// What a run shares with a plan: catalog, options, cache, request building.
    fn shared(&self) -> Shared<'_> {
        Shared {
            cat: &self.cat,
            opts: &self.opts,
            cache: self.cache.as_ref(),
            never_inputs: &self.never_inputs,
            builder: RequestBuilder {
                cat: &self.cat,
                opts: &self.opts,
                executor_env_from: self.exec.resolves_env_from(),
                materialize: true,
            },
        }
    }

    fn runner(&self) -> Runner {
        Runner {
            exec: self.exec.clone(),
            sem: self.sem.clone(),
            events: self.events.clone(),
            cache: self.cache.clone(),
        }
    }

    /// A new run's uid and directory, announced. The guard keeps the directory from
    /// retention while the run is in progress and removes Secret material from it when
    /// the run ends.
    fn start_run(&self, name: &str, kind: &str) -> Result<(String, PathBuf, crate::retention::RunDirGuard), Failure> {
        let uid = new_uid(name);
        let run_dir = request::run_dir(&self.opts.state_dir, name, &uid, false);
        // owner-only: restored outputs and materialized Secrets live here
        crate::store::make_private_dir(&run_dir).map_err(|e| {
            Failure::new("CreateRunFailed", format!("cannot create run directory {}: {e}", run_dir.display()))
        })?;
        let guard = crate::retention::RunDirGuard::acquire(&run_dir);
        let dir = run_dir.display().to_string();
        self.events.emit(RunEvent::RunStarted { kind, name, dir: &dir });
        Ok((uid, run_dir, guard))
    }

    fn failed_summary(
        &self,
        name: &str,
        kind: &str,
        pipeline: Option<String>,
        started: SystemTime,
        f: Failure,
    ) -> RunSummary {
        self.events.emit(RunEvent::RunNotStarted { kind, name, reason: &f.reason, message: &f.message });
        failed_run(name, kind, pipeline, started, f)
    }

    /// Remember which records a finished run used (gc keeps the latest successful one's).
    fn record_run(&self, name: &str, uid: &str, kind: &str, ok: bool, keys: &[String]) {
        let Some(cache) = &self.cache else { return };
        if cache.store_failed() {
            return;
        }
        if let Err(e) = cache.store.record_run(name, uid, ok, keys) {
            let message = cache.store_error(&format!("could not record {kind} {name}"), &e);
            self.events.emit(RunEvent::Warning { label: "", message: &message });
        }
    }
}

/// The summary of a run that failed before any task (the Pipeline or Task is missing,
/// params are invalid, the run directory cannot be made).
pub fn failed_run(name: &str, kind: &str, pipeline: Option<String>, started: SystemTime, f: Failure) -> RunSummary {
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
