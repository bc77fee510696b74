//! The executor seam: run one TaskRun attempt somewhere (local processes by default).
//!
//! The engine hands an executor a [`TaskRunRequest`] whose spec already has params and
//! context substituted; the executor owns everything path-shaped (`$(results.x.path)`,
//! `$(workspaces.w.path)`, step result and exit-code paths) because those differ between
//! a host and a pod.

pub mod common;
pub mod kubernetes;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::model::status::StepOutcome;
use crate::model::{ParamValue, TaskSpec};

/// A workspace as the executor sees it.
#[derive(Debug, Clone)]
pub struct BoundWorkspace {
    pub name: String,
    /// Host directory; `None` for an optional workspace left unbound.
    pub path: Option<PathBuf>,
    pub read_only: bool,
    /// PVC claim name, if bound to one (for `$(workspaces.w.claim)`).
    pub claim: String,
    /// What backs it: `repo`, `emptyDir`, `volumeClaimTemplate`,
    /// `persistentVolumeClaim:<claim>`, `configMap:<digest>`, ... (as in cache keys).
    pub kind: String,
}

/// One attempt of one TaskRun.
#[derive(Debug, Clone)]
pub struct TaskRunRequest {
    /// TaskRun name (`<run>-<task>`, `-<i>` for matrix children).
    pub name: String,
    /// Short label for log prefixes (`train`, `train[1]`).
    pub label: String,
    pub spec: TaskSpec,
    pub workspaces: Vec<BoundWorkspace>,
    pub timeout: Option<Duration>,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// A fresh directory owned by this attempt.
    pub dir: PathBuf,
    /// The most bytes one result may hold.
    pub max_result_size: usize,
    /// Task `volumes` by name, as host directories (for steps' `volumeMounts`).
    pub volumes: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AttemptStatus {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

/// How an attempt failed: its status, Tekton's reason and message.
pub type AttemptFailure = (AttemptStatus, String, String);

impl TaskRunRequest {
    /// Tekton's failure for a TaskRun that outlived its timeout (every executor reports it alike).
    pub fn timed_out(&self) -> AttemptFailure {
        (
            AttemptStatus::TimedOut,
            "TaskRunTimeout".into(),
            format!(
                "TaskRun {:?} failed to finish within {:?}",
                self.name,
                crate::model::format_duration(self.timeout.unwrap_or_default())
            ),
        )
    }

    /// Tekton's failure for a cancelled TaskRun.
    pub fn cancelled(&self) -> AttemptFailure {
        (AttemptStatus::Cancelled, "TaskRunCancelled".into(), format!("TaskRun {:?} was cancelled", self.name))
    }
}

/// What one attempt ended as.
#[derive(Debug, Clone)]
pub struct TaskOutcome {
    pub status: AttemptStatus,
    /// Tekton's reason (`Succeeded`, `Failed`, `TaskRunTimeout`, `TaskRunCancelled`,
    /// `TaskRunResultLargerThanAllowedLimit`, `TaskRunValidationFailed`, ...).
    pub reason: String,
    pub message: String,
    pub results: BTreeMap<String, ParamValue>,
    pub steps: Vec<StepOutcome>,
    pub duration: Duration,
}

/// `--executor` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Processes on this host.
    Local,
    /// One pod per TaskRun on a Kubernetes cluster.
    Kubernetes,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs TaskRun attempts. Implementations must kill everything they started when
/// `cancel` fires or the timeout passes, and never leave processes behind.
pub trait Executor: Send + Sync {
    fn run<'a>(&'a self, req: TaskRunRequest, cancel: CancellationToken) -> BoxFuture<'a, TaskOutcome>;

    /// Whether steps' `envFrom` is left to the executor (a cluster resolves it from the
    /// namespace's objects, which no key covers); otherwise the engine resolves it from
    /// the repository's ConfigMaps/Secrets, keyed by their content digests.
    fn resolves_env_from(&self) -> bool {
        false
    }

    /// Finish work the executor left running in the background (the Kubernetes executor's
    /// pod deletions); called once the runs are done, before the process may exit.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
