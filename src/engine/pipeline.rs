//! `tenon run` of a PipelineRun: a thin async driver of [`PipelineRunFacts`]. The facts
//! decide (what starts, what is skipped, retries, timeouts, cancellation, `finally`);
//! this loop prepares each TaskRun, runs it through the cache and the executor on a
//! `JoinSet`, sleeps until the next deadline, and reports back what happened.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::events::RunEvent;
use super::launch::{ChildMsg, Launch};
use super::setup::{resolve_pipeline, ChildDone, Ledger, PipelineSetup, Prepared};
use super::summary::{all_cached, task_rows};
use super::Engine;
use crate::exec::AttemptStatus;
use crate::model::{Obj, PipelineRunSpec};
use crate::plan::{Action, Outcome, PipelineRunFacts, Status, TaskStatus};
use crate::report::RunSummary;
use crate::util::rfc3339_millis as rfc3339;

impl Engine {
    /// Run one PipelineRun to completion.
    pub async fn run_pipeline_run(&self, pr: &Obj<PipelineRunSpec>) -> RunSummary {
        let started = SystemTime::now();
        let kind = "PipelineRun";
        let (pipeline_name, spec) = match resolve_pipeline(&self.cat, pr) {
            Ok(v) => v,
            Err((pname, f)) => return self.failed_summary(&pr.name, kind, pname, started, f),
        };
        let (uid, run_dir, _guard) = match self.start_run(&pr.name, kind) {
            Ok(v) => v,
            Err(f) => return self.failed_summary(&pr.name, kind, pipeline_name, started, f),
        };
        let shared = self.shared();
        let setup = match PipelineSetup::new(&shared, pr, pipeline_name.clone(), spec, uid, run_dir) {
            Ok(s) => s,
            Err(f) => return self.failed_summary(&pr.name, kind, pipeline_name, started, f),
        };
        let span = tracing::info_span!("pipelinerun", name = %pr.name, uid = %setup.uid);
        let facts = setup.facts(&self.cat);
        let mut d = Driver {
            engine: self,
            setup,
            facts,
            ledger: Ledger::default(),
            joinset: JoinSet::new(),
            cancels: BTreeMap::new(),
            prepared: HashMap::new(),
            waiting_retry: HashMap::new(),
            t0: Instant::now(),
        };
        d.drive().instrument(span.clone()).await;
        span.in_scope(|| d.finish(started))
    }
}

struct Driver<'e, 'p> {
    engine: &'e Engine,
    setup: PipelineSetup<'p>,
    facts: PipelineRunFacts,
    ledger: Ledger,
    joinset: JoinSet<ChildMsg>,
    /// Per pipeline task: cancels its TaskRuns (a child of the engine's token).
    cancels: BTreeMap<String, CancellationToken>,
    /// TaskRuns prepared by the gate, started when their launch comes out.
    prepared: HashMap<(String, usize), Box<Prepared>>,
    /// Failed attempts that the facts retry: their request, cache state and lock.
    waiting_retry: HashMap<(String, usize), ChildMsg>,
    t0: Instant,
}

impl Driver<'_, '_> {
    async fn drive(&mut self) {
        loop {
            let actions = self.next_actions();
            let acted = !actions.is_empty();
            for a in actions {
                self.apply(a);
            }
            if self.joinset.is_empty() {
                if self.facts.is_done() || !acted {
                    return;
                }
                continue;
            }
            let deadline = self.facts.next_deadline().map(|d| self.t0 + d);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                res = self.joinset.join_next() => {
                    if let Some(Ok(m)) = res {
                        self.child_finished(m);
                    }
                    // take every other finished child before deciding again
                    while let Some(res) = self.joinset.try_join_next() {
                        if let Ok(m) = res {
                            self.child_finished(m);
                        }
                    }
                }
                _ = sleep => {
                    if let Some(phase) = self.facts.on_timeout(self.t0.elapsed()) {
                        let message = phase.skip_reason().as_str();
                        self.engine.events.emit(RunEvent::TimedOut { message });
                    }
                }
                _ = self.engine.cancel.cancelled(), if !self.facts.is_cancelled() && !self.facts.is_done() => {
                    self.facts.on_cancel();
                    self.engine.events.emit(RunEvent::Cancelling { run: &self.setup.name });
                }
            }
        }
    }

    /// The facts' next actions, preparing each TaskRun as it is decided (an invalid one
    /// fails the run there, as Tekton's validation would).
    fn next_actions(&mut self) -> Vec<Action> {
        let shared = self.engine.shared();
        let (setup, ledger, prepared) = (&self.setup, &self.ledger, &mut self.prepared);
        let mut gate = |l: &crate::plan::LaunchSpec| setup.gate(&shared, l, ledger, prepared);
        self.facts.next_actions_with(self.t0.elapsed(), &mut gate)
    }

    fn apply(&mut self, a: Action) {
        let events = &self.engine.events;
        match a {
            Action::Launch(l) if l.attempt > 0 => {
                if let Some(prev) = self.waiting_retry.remove(&(l.task.clone(), l.index)) {
                    let runner = self.engine.runner();
                    self.joinset.spawn(runner.retry(prev, l.attempt));
                }
            }
            Action::Launch(l) => {
                let Some(p) = self.prepared.remove(&(l.task.clone(), l.index)) else { return };
                self.ledger.prepared(&l.task, &p);
                let cancel = self.cancels.entry(l.task.clone()).or_insert_with(|| self.engine.cancel.child_token());
                let launch =
                    Launch { task: l.task.clone(), index: l.index, req: p.req, cancel: cancel.clone(), job: p.job };
                self.joinset.spawn(self.engine.runner().first(launch));
            }
            Action::Skip { task, reason } => events.emit(RunEvent::Skipped { task: &task, reason: reason.as_str() }),
            Action::FailRun { task, failure } => {
                events.emit(RunEvent::Invalid { task: &task, reason: &failure.reason, message: &failure.message });
                // a matrix child prepared before another failed its gate never launches
                self.prepared.retain(|(t, _), _| t != &task);
            }
            Action::Cancel { task } => {
                if let Some(c) = self.cancels.get(&task) {
                    c.cancel();
                }
            }
            // only planning reports tasks that would run after another
            Action::After { .. } => {}
        }
    }

    /// An attempt ended: tell the facts; keep its state when they retry it, record it
    /// when its TaskRun is over, and say so when its pipeline task is.
    fn child_finished(&mut self, m: ChildMsg) {
        let (task, index) = (m.task.clone(), m.index);
        *self.ledger.task(&task).attempts.entry(index).or_default() += m.attempts;
        let outcome = Outcome {
            status: match m.outcome.status {
                AttemptStatus::Succeeded => Status::Succeeded,
                AttemptStatus::Failed => Status::Failed,
                AttemptStatus::TimedOut => Status::TimedOut,
                AttemptStatus::Cancelled => Status::Cancelled,
            },
            reason: m.outcome.reason.clone(),
            message: m.outcome.message.clone(),
            results: m.outcome.results.clone(),
        };
        self.facts.on_finished(&task, index, outcome);
        let Some(f) = self.facts.task(&task) else { return };
        let child = f.children.iter().find(|c| c.launch.index == index);
        if let Some(ch) = child.filter(|c| c.outcome.is_none()) {
            // a retry follows
            let left = (ch.launch.retries + 1).saturating_sub(ch.attempts);
            self.engine.events.emit(RunEvent::Retrying {
                label: &m.req.label,
                attempt: ch.attempts,
                reason: &m.outcome.reason,
                message: &m.outcome.message,
                left,
            });
            self.waiting_retry.insert((task, index), m);
            return;
        }
        let attempts = self.ledger.task(&task).attempts.get(&index).copied().unwrap_or(0);
        let done = ChildDone { index, name: m.req.name.clone(), outcome: m.outcome, attempts, cache: m.cache };
        self.ledger.finished(&task, done, m.outputs);
        if self.facts.task(&task).is_some_and(|f| f.is_done()) {
            self.task_done(&task);
        }
    }

    /// Say how a pipeline task ended.
    fn task_done(&self, task: &str) {
        let (Some(f), Some(l)) = (self.facts.task(task), self.ledger.tasks.get(task)) else { return };
        let events = &self.engine.events;
        match &f.status {
            TaskStatus::Succeeded if all_cached(l) => {
                let from = l.children.values().flat_map(|ch| ch.cache.reasons()).next().unwrap_or_default();
                events.emit(RunEvent::Cached { task, from: &from });
            }
            TaskStatus::Succeeded => {
                let duration = l.children.values().map(|c| c.outcome.duration).max().unwrap_or_default();
                events.emit(RunEvent::Succeeded { task, duration });
            }
            TaskStatus::Failed { ignored, timed_out, cancelled } => {
                let word = if *cancelled {
                    "Cancelled"
                } else if *timed_out {
                    "TimedOut"
                } else {
                    "Failed"
                };
                events.emit(RunEvent::Failed { task, word, ignored: *ignored, message: &f.message });
            }
            _ => {}
        }
    }

    /// The run's condition, report rows, and the cache's memory of which records it used.
    fn finish(self, started: SystemTime) -> RunSummary {
        let s = self.facts.summary();
        let elapsed = self.t0.elapsed();
        let ok = s.status == "Succeeded";
        let name = &self.setup.name;
        self.engine.events.emit(RunEvent::Finished {
            kind: "PipelineRun",
            name,
            ok,
            reason: &s.reason,
            message: &s.message,
            elapsed,
        });
        let spec = &self.setup.spec;
        let mut tasks = Vec::new();
        for pt in spec.tasks.iter().chain(spec.finally.iter()) {
            let (Some(f), l) = (self.facts.task(&pt.name), self.ledger.tasks.get(&pt.name)) else { continue };
            let empty = Default::default();
            tasks.extend(task_rows(f, l.unwrap_or(&empty), pt.on_error.as_deref() == Some("continue")));
        }
        // remember which records this run used, so gc keeps them while it is the latest
        let keys: Vec<String> = self
            .ledger
            .tasks
            .values()
            .flat_map(|t| t.children.values().filter_map(|c| c.cache.key().map(String::from)))
            .collect();
        self.engine.record_run(name, &self.setup.uid, "PipelineRun", ok, &keys);
        RunSummary {
            name: name.clone(),
            kind: "PipelineRun".into(),
            pipeline: self.setup.pipeline_name.clone(),
            status: s.status.into(),
            reason: s.reason,
            message: s.message,
            started_at: rfc3339(started),
            duration_ms: elapsed.as_millis() as u64,
            results: s.results.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            tasks,
            run_dir: Some(self.setup.run_dir.display().to_string()),
        }
    }
}
