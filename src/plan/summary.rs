//! A PipelineRun's outcome from its facts: pipeline results, condition status, reason
//! and message, with the engine's (Tekton's) strings.

use std::collections::BTreeMap;

use super::facts::{PipelineRunFacts, RunFailure, TaskStatus, TimeoutPhase};
use crate::model::subst::{find_refs, Seg, Vars};
use crate::model::{format_duration, ParamValue, PipelineResult};

/// The run's `Succeeded` condition and its pipeline results.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `Succeeded`, `Failed`, or `Running` while the run is not done.
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub results: BTreeMap<String, ParamValue>,
}

impl PipelineRunFacts {
    /// Pipeline results and the condition, as they stand (final once `is_done`).
    pub fn summary(&self) -> Summary {
        let (results, result_failure) = self.pipeline_results();
        let counts = self.counts();
        let name = &self.input.name;
        let t = &self.input.timeouts;
        let failure = self.failure.clone().or(result_failure);
        let (status, reason, message) = if self.cancelled {
            ("Failed", "Cancelled".to_string(), format!("PipelineRun {name:?} was cancelled"))
        } else if let Some(which) = self.timed_out {
            let message = match (which, t.tasks, t.finally) {
                (TimeoutPhase::Tasks, Some(d), _) => {
                    format!("PipelineRun {name:?} failed due to tasks failed to finish within {:?}", format_duration(d))
                }
                (TimeoutPhase::Finally, _, Some(d)) => format!(
                    "PipelineRun {name:?} failed due to finally tasks failed to finish within {:?}",
                    format_duration(d)
                ),
                _ => format!("PipelineRun {name:?} failed to finish within {:?}", format_duration(t.pipeline)),
            };
            ("Failed", "PipelineRunTimeout".to_string(), message)
        } else if let Some(f) = failure {
            ("Failed", f.reason, f.message)
        } else if counts.hard_failure {
            ("Failed", "Failed".to_string(), counts.message())
        } else if !self.is_done() {
            ("Running", "Running".to_string(), counts.message())
        } else if counts.skipped > 0 {
            ("Succeeded", "Completed".to_string(), counts.message())
        } else {
            ("Succeeded", "Succeeded".to_string(), counts.message())
        };
        Summary { status, reason, message, results }
    }

    fn pipeline_results(&self) -> (BTreeMap<String, ParamValue>, Option<RunFailure>) {
        let mut vars = Vars::new();
        for st in self.tasks.values() {
            let scope = if st.finally { "finally" } else { "tasks" };
            for (r, v) in &st.results {
                vars.set(format!("{scope}.{}.results.{r}", st.name), v.clone());
            }
        }
        pipeline_results(&self.spec.results, &vars, |t| {
            self.tasks.get(t).map(|st| (st.status == TaskStatus::Succeeded, &st.results))
        })
    }

    fn counts(&self) -> Tally {
        let mut t = Tally::default();
        for st in self.tasks.values() {
            match &st.status {
                TaskStatus::Succeeded => t.succeeded += 1,
                TaskStatus::Failed { ignored, cancelled, .. } => t.failed(*ignored, *cancelled),
                TaskStatus::Skipped(_) => t.skipped += 1,
                TaskStatus::Pending | TaskStatus::Running => {}
            }
        }
        t
    }
}

/// How a PipelineRun's tasks ended, and the condition message Tekton writes from it. The
/// engine and the facts both count with it.
#[derive(Debug, Default)]
pub struct Tally {
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub skipped: usize,
    /// Failures that `onError: continue` ignored (counted in `failed` or `cancelled` too).
    pub ignored: usize,
    /// A failure that was not ignored: the run fails.
    pub hard_failure: bool,
}

impl Tally {
    pub fn failed(&mut self, ignored: bool, cancelled: bool) {
        if cancelled {
            self.cancelled += 1
        } else {
            self.failed += 1
        }
        if ignored {
            self.ignored += 1
        } else {
            self.hard_failure = true
        }
    }

    /// `Tasks Completed: N (Failed: F[ (Ignored: I)], Cancelled C), Skipped: S`.
    pub fn message(&self) -> String {
        let ign = if self.ignored > 0 { format!(" (Ignored: {})", self.ignored) } else { String::new() };
        format!(
            "Tasks Completed: {} (Failed: {}{ign}, Cancelled {}), Skipped: {}",
            self.succeeded + self.failed + self.cancelled,
            self.failed,
            self.cancelled,
            self.skipped
        )
    }
}

/// Pipeline results, evaluated at the end: `vars` holds every `tasks.X.results.Y` and
/// `finally.X.results.Y`; `task(X)` says whether X succeeded, with its results. A result
/// naming a task that did not succeed is dropped; one naming a result that a successful
/// task did not write fails the run (`CouldntGetPipelineResult`, the first one found).
pub fn pipeline_results<'a>(
    declared: &[PipelineResult],
    vars: &Vars,
    task: impl Fn(&str) -> Option<(bool, &'a BTreeMap<String, ParamValue>)>,
) -> (BTreeMap<String, ParamValue>, Option<RunFailure>) {
    let mut results = BTreeMap::new();
    let mut failure = None;
    for r in declared {
        let Some(value) = &r.value else { continue };
        let mut omit = false;
        let mut missing = None;
        for text in value.texts() {
            for rf in find_refs(text) {
                let Some(segs) = rf.segs() else { continue };
                if let [Seg::Name(_), Seg::Name(name), Seg::Name(_), Seg::Name(res), ..] = segs.as_slice() {
                    match task(name) {
                        Some((true, produced)) => {
                            if !produced.contains_key(res) {
                                missing = Some(format!("$({})", rf.expr));
                            }
                        }
                        _ => omit = true,
                    }
                }
            }
        }
        if omit {
            continue;
        }
        if let Some(m) = missing {
            failure.get_or_insert_with(|| {
                RunFailure::new(
                    "CouldntGetPipelineResult",
                    format!("invalid pipelineresults [{}], the referenced results don't exist: {m}", r.name),
                )
            });
            continue;
        }
        results.insert(r.name.clone(), vars.apply_value(value));
    }
    (results, failure)
}
