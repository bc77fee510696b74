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
}

impl RunReport {
    pub fn new(runs: Vec<RunSummary>) -> Self {
        RunReport { api_version: API_VERSION, kind: "RunReport", runs }
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

/// One pipeline task (or one matrix child, named `task[i]`).
#[derive(Debug, Clone, Serialize)]
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
    pub steps: Vec<crate::exec::StepOutcome>,
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
