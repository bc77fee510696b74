//! A finished run's report rows: the facts' statuses with the driver's ledger (TaskRun
//! names, attempts, durations, steps, the cache's word).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::cached::CacheOutcome;
use super::setup::{ChildDone, TaskLedger};
use crate::exec::AttemptStatus;
use crate::model::ParamValue;
use crate::plan::{TaskFacts, TaskStatus};
use crate::report::{CachedFrom, TaskSummary};
use crate::util::rfc3339_millis as rfc3339;

pub fn to_json(v: &BTreeMap<String, ParamValue>) -> BTreeMap<String, Value> {
    v.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

/// Whether every TaskRun of a task was a cache hit (none ran).
pub fn all_cached(l: &TaskLedger) -> bool {
    !l.children.is_empty() && l.children.values().all(|c| matches!(c.cache, CacheOutcome::Hit { .. }))
}

/// The report rows of one pipeline task: one, or one per TaskRun of a matrix.
pub fn task_rows(f: &TaskFacts, l: &TaskLedger, ignore: bool) -> Vec<TaskSummary> {
    if f.matrix && !l.children.is_empty() {
        return l
            .children
            .values()
            .map(|ch| child_summary(&format!("{}[{}]", f.name, ch.index), ch, f.finally, ignore))
            .collect();
    }
    let cached = f.status == TaskStatus::Succeeded && all_cached(l);
    let (status, reason) = match &f.status {
        TaskStatus::Succeeded if cached => ("Cached", "Cached".to_string()),
        TaskStatus::Succeeded => ("Succeeded", f.reason.clone()),
        TaskStatus::Failed { cancelled: true, .. } => ("Cancelled", f.reason.clone()),
        TaskStatus::Failed { timed_out: true, .. } => ("TimedOut", f.reason.clone()),
        TaskStatus::Failed { .. } => ("Failed", f.reason.clone()),
        TaskStatus::Skipped(r) => ("Skipped", r.as_str().to_string()),
        TaskStatus::Pending | TaskStatus::Running => ("Skipped", "PipelineRun was stopping".to_string()),
    };
    let first = l.children.values().next();
    let mut t = TaskSummary {
        name: f.name.clone(),
        status: status.into(),
        reason,
        message: f.message.clone(),
        attempts: l.children.values().map(|c| c.attempts).max().unwrap_or(0),
        duration_ms: l.children.values().map(|c| c.outcome.duration).max().unwrap_or_default().as_millis() as u64,
        results: to_json(&f.results),
        finally: f.finally,
        task_run: l.task_run.clone(),
        steps: first.map(|c| c.outcome.steps.clone()).unwrap_or_default(),
        ..TaskSummary::default()
    };
    if let Some(ch) = first {
        set_cache_fields(&mut t, &ch.cache);
    }
    vec![t]
}

/// The report row of one TaskRun.
pub fn child_summary(name: &str, ch: &ChildDone, finally: bool, ignore: bool) -> TaskSummary {
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

/// The cache's word in a report row: key, reasons, where a hit came from.
pub fn set_cache_fields(t: &mut TaskSummary, c: &CacheOutcome) {
    t.cache_key = c.key().map(String::from);
    t.cache_reasons = c.reasons();
    t.cached_from = cached_from(c);
}

/// Where a hit came from, for the report.
pub fn cached_from(c: &CacheOutcome) -> Option<CachedFrom> {
    let CacheOutcome::Hit { run, run_uid, created_ns, remote, .. } = c else { return None };
    Some(CachedFrom {
        remote: remote.clone(),
        run: run.clone(),
        run_uid: run_uid.clone(),
        created_at: rfc3339(std::time::UNIX_EPOCH + Duration::from_nanos((*created_ns).max(0) as u64)),
    })
}
