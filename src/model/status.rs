//! What a TaskRun attempt leaves behind, as data: the values the executors produce and
//! the reports show (so `report` does not depend on `exec`).

use std::path::PathBuf;

/// One step of an attempt, as it ended.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    pub name: String,
    /// `Completed`, `Error`, `Continued`, `Skipped`, `TimeoutExceeded`, `Cancelled`.
    pub termination_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub log: PathBuf,
    /// The image the step ran, as the cluster resolved it (`imageID`, a digest), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}
