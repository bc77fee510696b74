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
            ("Failed", "Failed".to_string(), counts.message)
        } else if !self.is_done() {
            ("Running", "Running".to_string(), counts.message)
        } else if counts.skipped > 0 {
            ("Succeeded", "Completed".to_string(), counts.message)
        } else {
            ("Succeeded", "Succeeded".to_string(), counts.message)
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

    fn counts(&self) -> Counts {
        let (mut succeeded, mut failed, mut cancelled, mut skipped, mut ignored) = (0, 0, 0, 0, 0);
        let mut hard_failure = false;
        for st in self.tasks.values() {
            match &st.status {
                TaskStatus::Succeeded => succeeded += 1,
                TaskStatus::Failed { ignored: ig, cancelled: c, .. } => {
                    if *c {
                        cancelled += 1
                    } else {
                        failed += 1
                    }
                    if *ig {
                        ignored += 1
                    } else {
                        hard_failure = true
                    }
                }
                TaskStatus::Skipped(_) => skipped += 1,
                TaskStatus::Pending | TaskStatus::Running => {}
            }
        }
        let ign = if ignored > 0 { format!(" (Ignored: {ignored})") } else { String::new() };
        let message = format!(
            "Tasks Completed: {} (Failed: {failed}{ign}, Cancelled {cancelled}), Skipped: {skipped}",
            succeeded + failed + cancelled
        );
        Counts { skipped, hard_failure, message }
    }
}

struct Counts {
    skipped: usize,
    hard_failure: bool,
    message: String,
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
