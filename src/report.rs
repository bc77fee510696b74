//! The machine interface: versioned reports printed by `--output json`.
//!
//! Schema `tenon.dev/v1alpha1`, kind `RunReport` (and `ValidationReport`). Fields are
//! only ever added; a breaking change bumps the apiVersion.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::model::Diagnostic;

pub const API_VERSION: &str = "tenon.dev/v1alpha1";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub runs: Vec<RunSummary>,
    /// Input hashing done by this invocation (absent when caching is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashing: Option<HashingStats>,
    /// The store failed during the runs (a full disk, a locked database): what ran could
    /// not be recorded, and tenon exits 3. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// The shared cache (`--cache-repo`): hits, misses, bytes each way, errors, warnings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_cache: Option<RemoteSummary>,
}

/// How much input hashing an invocation did.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HashingStats {
    /// Input files seen.
    pub files: u64,
    /// Files actually read and hashed (the rest came from the stat cache).
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// Files whose digest came from the git index (the blob memo: not read).
    pub from_git_index: u64,
    /// Files keyed by their Git LFS pointer's oid.
    pub from_lfs_pointer: u64,
    /// Files whose digest came from the stat cache (not read).
    pub from_stat_cache: u64,
    /// Each input file and where its digest came from (`tenon plan -v` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<DigestSourceEntry>,
}

/// One input file's digest source: `from git index`, `from LFS pointer`, `from stat cache`
/// or `hashed`.
#[derive(Debug, Clone, Serialize)]
pub struct DigestSourceEntry {
    pub path: String,
    pub source: &'static str,
}

impl RunReport {
    pub fn new(runs: Vec<RunSummary>) -> Self {
        RunReport {
            api_version: API_VERSION,
            kind: "RunReport",
            runs,
            hashing: None,
            store_error: None,
            remote_cache: None,
        }
    }
    pub fn all_ok(&self) -> bool {
        self.runs.iter().all(|r| r.status == "Succeeded")
    }
}

/// One PipelineRun or TaskRun.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub name: String,
    /// `PipelineRun` or `TaskRun`.
    pub kind: String,
    /// The Pipeline's name (`null` for an embedded pipelineSpec or a TaskRun).
    pub pipeline: Option<String>,
    /// The Tekton `Succeeded` condition as a word: `Succeeded` (True) or `Failed` (False).
    pub status: String,
    /// Tekton's reason: `Succeeded`, `Completed` (something was skipped), `Failed`,
    /// `PipelineRunTimeout`, `Cancelled`, `ParameterMissing`, ...
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// Pipeline results (TaskRun: task results), typed JSON values.
    pub results: BTreeMap<String, Value>,
    pub tasks: Vec<TaskSummary>,
    /// Where this run's TaskRun directories, logs and volumes are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<String>,
}

/// Where a cached task's record came from.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CachedFrom {
    pub run: String,
    pub run_uid: String,
    pub created_at: String,
    /// The host that produced it and the shared cache it came from (`--cache-repo`), when
    /// this invocation found it there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// One pipeline task (or one matrix child, named `task[i]`).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    pub name: String,
    /// `Succeeded`, `Failed`, `Skipped`, `Cached`, `TimedOut`, `Cancelled`.
    pub status: String,
    /// Tekton's reason (`Succeeded`, `Failed`, `FailureIgnored`, `TaskRunTimeout`,
    /// `TaskRunCancelled`, or the skip reason such as `When Expressions evaluated to false`).
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub attempts: u32,
    pub duration_ms: u64,
    pub results: BTreeMap<String, Value>,
    /// `true` for a `finally` task.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    /// The TaskRun name (absent when skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_run: Option<String>,
    /// Per step: name, termination reason, exit code, log file (last attempt).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::model::status::StepOutcome>,
    /// The cache key of this TaskRun (absent when caching is off or it is not cacheable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// Why it ran (or, cached, where from): `input src/train.py changed (...)`, ...
    #[serde(rename = "cacheReasons", skip_serializing_if = "Vec::is_empty")]
    pub cache_reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<CachedFrom>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub valid: bool,
    pub errors: Vec<Diagnostic>,
    pub objects: BTreeMap<&'static str, usize>,
}

/// `tenon plan --output json`: what a run would do, without running anything.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub runs: Vec<PlanRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashing: Option<HashingStats>,
    /// With `--cache-repo`: what the shared cache gave the plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_cache: Option<RemoteSummary>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRun {
    pub name: String,
    pub kind: String,
    pub pipeline: Option<String>,
    /// Set when the run could not be planned (e.g. a missing param).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tasks: Vec<PlanTask>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanTask {
    pub name: String,
    /// `run`, `cached` or `skipped`.
    pub decision: String,
    /// Reasons a person can act on: `input src/train.py changed (sha256 1f2e..->9a0b..)`,
    /// `param lr changed 0.1 -> 0.2`, `run (after prepare)`, `no earlier record`, ...
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<CachedFrom>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
}

impl PlanReport {
    /// A plan from a dry run's report.
    pub fn from_dry_run(r: RunReport) -> PlanReport {
        let runs = r
            .runs
            .into_iter()
            .map(|run| {
                let error =
                    (run.status == "Failed" && run.tasks.iter().all(|t| t.status != "Failed") && run.tasks.is_empty())
                        .then(|| format!("{}: {}", run.reason, run.message));
                let tasks = run
                    .tasks
                    .into_iter()
                    .map(|t| {
                        let (decision, reasons) = match t.status.as_str() {
                            "Cached" => ("cached", t.cache_reasons),
                            "Skipped" => ("skipped", vec![t.reason]),
                            "Failed" => ("run", vec![format!("{}: {}", t.reason, t.message)]),
                            _ => (
                                "run",
                                if t.cache_reasons.is_empty() {
                                    vec!["caching is off".into()]
                                } else {
                                    t.cache_reasons
                                },
                            ),
                        };
                        PlanTask {
                            name: t.name,
                            decision: decision.into(),
                            reasons,
                            cache_key: t.cache_key,
                            cached_from: t.cached_from,
                            finally: t.finally,
                        }
                    })
                    .collect();
                PlanRun { name: run.name, kind: run.kind, pipeline: run.pipeline, error, tasks }
            })
            .collect();
        PlanReport { api_version: API_VERSION, kind: "Plan", runs, hashing: r.hashing, remote_cache: r.remote_cache }
    }
}

/// The report's view of the shared cache.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSummary {
    pub url: String,
    pub read_only: bool,
    pub hits: u64,
    pub misses: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub published: u64,
    pub errors: u64,
    /// Git blob memo rows imported from the registry before hashing (files not read), and
    /// rows the registry's memo gained from this invocation.
    pub git_memo_rows_in: u64,
    pub git_memo_rows_out: u64,
    /// The registry was unusable and the run went on with the local store.
    pub unavailable: bool,
    /// Every warning this invocation printed about the shared cache.
    pub warnings: Vec<String>,
}
