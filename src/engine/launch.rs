//! One TaskRun through the cache and the executor: a hit is restored; a miss takes the
//! key's lock, runs, and (on success) publishes and records. Each attempt is one call:
//! the scheduler decides retries, and the key's lock is held across them in a [`Ticket`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cached::{self, CacheCtx, CacheJob, CacheOutcome};
use super::events::{Events, RunEvent};
use super::lfs;
use super::resolve;
use crate::cache::Preimage;
use crate::exec::{AttemptStatus, Executor, TaskOutcome, TaskRunRequest};
use crate::model::subst::Vars;
use crate::model::ParamValue;
use crate::store::{KeyLock, OutputSet, Record};

/// One TaskRun ready to start (possibly a matrix child).
pub struct Launch {
    /// The pipeline task (or TaskRun) it belongs to.
    pub task: String,
    pub index: usize,
    pub req: TaskRunRequest,
    pub cancel: CancellationToken,
    pub job: Option<CacheJob>,
}

/// The cache's hold on a TaskRun that runs: what to record when it succeeds, and the
/// key's lock (so that no other process runs the same key meanwhile), kept across
/// retries and released when the TaskRun ends.
pub struct Ticket {
    job: CacheJob,
    key: String,
    pre: Box<Preimage>,
    _lock: Option<KeyLock>,
}

/// A finished attempt (or a hit, which needs none).
pub struct ChildMsg {
    pub task: String,
    pub index: usize,
    pub req: TaskRunRequest,
    pub cancel: CancellationToken,
    pub outcome: TaskOutcome,
    /// Attempts this message covers (0 for a hit).
    pub attempts: u32,
    pub cache: CacheOutcome,
    pub outputs: Vec<OutputSet>,
    /// Kept for a retry; dropped (releasing the lock) when the TaskRun ends.
    pub ticket: Option<Box<Ticket>>,
    /// Where the TaskRun reads repository files: LFS pointers there are fetched before
    /// each attempt (kept for a retry).
    pub lfs: Vec<lfs::Scope>,
}

/// What the spawned futures share.
#[derive(Clone)]
pub struct Runner {
    pub exec: Arc<dyn Executor>,
    pub sem: Arc<Semaphore>,
    pub events: Events,
    pub cache: Option<Arc<CacheCtx>>,
}

/// How the cache gate ended.
enum Gated {
    Hit(Box<Record>, Option<String>),
    /// Run it: the cache's word for the report, and what to record on success.
    Run(CacheOutcome, Option<Box<Ticket>>),
    /// Cancelled while waiting for the key's lock.
    Cancelled(CacheOutcome),
}

fn cancelled_outcome(message: String) -> TaskOutcome {
    TaskOutcome {
        status: AttemptStatus::Cancelled,
        reason: "TaskRunCancelled".into(),
        message,
        results: BTreeMap::new(),
        steps: vec![],
        duration: Duration::ZERO,
    }
}

/// A hit's outcome: succeeded, with the record's results as this TaskRun sees them.
pub fn cached_outcome(results: BTreeMap<String, ParamValue>) -> TaskOutcome {
    TaskOutcome {
        status: AttemptStatus::Succeeded,
        reason: "Cached".into(),
        message: String::new(),
        results,
        steps: vec![],
        duration: Duration::ZERO,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| Err("cache worker failed".into()))
}

impl Runner {
    /// The first attempt of a TaskRun, through the cache.
    pub async fn first(self, l: Launch) -> ChildMsg {
        let span = tracing::info_span!("taskrun", name = %l.req.name, attempt = 0u32);
        self.first_inner(l).instrument(span).await
    }

    async fn first_inner(self, l: Launch) -> ChildMsg {
        let (cache, ticket) = match (&self.cache, &l.job) {
            (Some(ctx), Some(job)) => match self.gate(ctx.clone(), job.clone(), &l).await {
                Gated::Hit(rec, origin) => return hit_msg(l, *rec, origin),
                Gated::Cancelled(cache) => {
                    let why = format!(
                        "TaskRun {:?} was cancelled while waiting for another run of the same task",
                        l.req.name
                    );
                    return child_msg(l, cancelled_outcome(why), 0, cache, vec![], None);
                }
                Gated::Run(cache, ticket) => (cache, ticket),
            },
            _ => (CacheOutcome::Off, None),
        };
        let scopes = lfs_scopes(&l);
        let outcome = self.attempt(&l.req, 0, &l.cancel, &scopes).await;
        let mut m = self.settle(l, outcome, cache, ticket).await;
        m.lfs = scopes;
        m
    }

    /// Attempt `attempt` of a TaskRun whose earlier attempt failed.
    pub async fn retry(self, prev: ChildMsg, attempt: u32) -> ChildMsg {
        let span = tracing::info_span!("taskrun", name = %prev.req.name, attempt);
        async move {
            let l = Launch { task: prev.task, index: prev.index, req: prev.req, cancel: prev.cancel, job: None };
            let outcome = self.attempt(&l.req, attempt, &l.cancel, &prev.lfs).await;
            let mut m = self.settle(l, outcome, prev.cache, prev.ticket).await;
            m.lfs = prev.lfs;
            m
        }
        .instrument(span)
        .await
    }

    /// After an attempt: a success is published and recorded (and the ticket ends); a
    /// failure keeps the ticket for a retry.
    async fn settle(
        &self,
        l: Launch,
        mut outcome: TaskOutcome,
        cache: CacheOutcome,
        ticket: Option<Box<Ticket>>,
    ) -> ChildMsg {
        if outcome.status != AttemptStatus::Succeeded {
            return child_msg(l, outcome, 1, cache, vec![], ticket);
        }
        let (Some(ctx), Some(ticket)) = (self.cache.clone(), ticket) else {
            return child_msg(l, outcome, 1, cache, vec![], None);
        };
        let published = self.publish(&ctx, &ticket.job, &l.req, &mut outcome).await;
        let mut outputs = vec![];
        if published {
            outputs = self.record(&ctx, &ticket, &l.req, &outcome).await;
        }
        drop(ticket);
        child_msg(l, outcome, 1, cache, outputs, None)
    }

    /// `tenon.dev/publish`: each output goes to the registry as a ModelKit and its result
    /// becomes the reference. False when one could not be published (nothing is recorded
    /// then: a record must carry the reference).
    async fn publish(&self, ctx: &CacheCtx, job: &CacheJob, req: &TaskRunRequest, o: &mut TaskOutcome) -> bool {
        let Some(remote) = ctx.remote.as_ref().filter(|_| !job.publish.is_empty()) else {
            return true;
        };
        let mut all = true;
        for (res, ws, path) in &job.publish {
            let published = match cached::output_path(req, ws, path) {
                Ok(local) => remote.publish_model(&job.task, &local, &ctx.store.scratch_dir()).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(reference) => {
                    let output = format!("{ws}:{path}");
                    self.events.emit(RunEvent::Published { label: &req.label, output: &output, reference: &reference });
                    o.results.insert(res.clone(), ParamValue::Str(reference));
                }
                Err(e) => {
                    let message = format!(
                        "{ws}:{path} not published ({e}); result {res} keeps the task's own value and the run is not cached"
                    );
                    self.events.emit(RunEvent::Warning { label: &req.label, message: &message });
                    all = false;
                }
            }
        }
        all
    }

    /// Record a success (outputs stored first), then queue it for the shared cache.
    async fn record(&self, ctx: &Arc<CacheCtx>, t: &Ticket, req: &TaskRunRequest, o: &TaskOutcome) -> Vec<OutputSet> {
        let (c, j, k, p, r, res) =
            (ctx.clone(), t.job.clone(), t.key.clone(), t.pre.clone(), req.clone(), o.results.clone());
        let (d, images) = (o.duration.as_millis() as u64, cached::observed_images(&o.steps));
        match blocking(move || cached::record(&c, &j, &k, &p, &r, &res, d, &images)).await {
            Ok(outs) => {
                if let Some(remote) = &ctx.remote {
                    remote.publish_later(t.key.clone(), ctx.store.clone());
                }
                outs
            }
            Err(e) => {
                self.events.emit(RunEvent::Warning { label: &req.label, message: &format!("not cached: {e}") });
                vec![]
            }
        }
    }

    /// The cache's decision for a TaskRun about to run: look up (and restore) its key,
    /// wait for its lock, look again (another process may have produced it meanwhile),
    /// then the shared cache.
    async fn gate(&self, ctx: Arc<CacheCtx>, job: CacheJob, l: &Launch) -> Gated {
        let label = l.req.label.as_str();
        if let Some(reason) = job.uncacheable.clone() {
            return Gated::Run(CacheOutcome::Uncacheable { reason }, None);
        }
        let (c, j) = (ctx.clone(), job.clone());
        let pre = match blocking(move || cached::compute(&c, &j)).await {
            Ok(p) => p,
            Err(e) => {
                self.events.emit(RunEvent::Warning { label, message: &format!("not cached: {e}") });
                let reason = "its inputs could not be hashed".to_string();
                return Gated::Run(CacheOutcome::Uncacheable { reason }, None);
            }
        };
        let key = pre.key();
        let forced = job.forced.is_some();
        if !forced {
            match lookup(&ctx, &key, &l.req).await {
                Ok(Some(rec)) => return Gated::Hit(rec, None),
                Ok(None) => {}
                Err(e) => self
                    .events
                    .emit(RunEvent::Warning { label, message: &format!("cache lookup failed, running: {e}") }),
            }
        }
        let (c, j, p, k) = (ctx.clone(), job.clone(), pre.clone(), key.clone());
        let reasons = blocking(move || Ok(cached::miss_reasons(&c, &j, &p, &k)))
            .await
            .unwrap_or_else(|_| vec![crate::cache::RerunReason::NoEarlierRecord]);
        let miss = CacheOutcome::Miss { key: key.clone(), reasons };
        // Never run one key twice at once (across processes too): the second waits and then
        // reuses the first's record. A forced run does not wait: it was asked to run.
        let mut lock = None;
        if !forced {
            match self.wait_key_lock(&ctx, &key, &l.cancel, label).await {
                Some(l) => lock = l,
                None => return Gated::Cancelled(miss),
            }
            if let Some(hit) = self.second_look(&ctx, &key, &l.req).await {
                return hit;
            }
        }
        Gated::Run(miss, Some(Box::new(Ticket { job, key, pre: Box::new(pre), _lock: lock })))
    }

    /// Under the lock: the local store again, then the shared cache (a verified record
    /// is imported into the store, then restored from there like any local hit).
    async fn second_look(&self, ctx: &Arc<CacheCtx>, key: &str, req: &TaskRunRequest) -> Option<Gated> {
        if let Ok(Some(rec)) = lookup(ctx, key, req).await {
            return Some(Gated::Hit(rec, None));
        }
        let remote = ctx.remote.as_ref()?;
        let h = remote.fetch(key, &ctx.store).await?;
        match lookup(ctx, key, req).await {
            Ok(Some(rec)) => Some(Gated::Hit(rec, Some(h.origin))),
            Err(e) => {
                let message = format!("the record from {} could not be restored, running: {e}", remote.url());
                self.events.emit(RunEvent::Warning { label: &req.label, message: &message });
                None
            }
            Ok(None) => None,
        }
    }

    /// Take the per-key lock, polling so that a wait for another process running the same
    /// key sees cancellation (Ctrl-C) at once. `None`: cancelled while waiting;
    /// `Some(None)`: the lock could not be used (the task runs unlocked).
    async fn wait_key_lock(
        &self,
        ctx: &Arc<CacheCtx>,
        key: &str,
        cancel: &CancellationToken,
        label: &str,
    ) -> Option<Option<KeyLock>> {
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
                self.events.emit(RunEvent::WaitingForKey { label, key });
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// One attempt: wait for an execution slot, make the Git LFS files it reads real, then
    /// run it (or report it cancelled, or failed before it started when they cannot be).
    async fn attempt(
        &self,
        base: &TaskRunRequest,
        attempt: u32,
        cancel: &CancellationToken,
        scopes: &[lfs::Scope],
    ) -> TaskOutcome {
        let mut req = base.clone();
        req.attempt = attempt;
        req.dir = base.dir.join(format!("attempt-{attempt}"));
        let mut rc = Vars::new();
        rc.set_str("context.task.retry-count", attempt.to_string());
        req.spec = resolve::substitute(&req.spec, &rc);
        let _permit = tokio::select! {
            p = self.sem.clone().acquire_owned() => p.ok(),
            _ = cancel.cancelled() => None,
        };
        if cancel.is_cancelled() {
            return cancelled_outcome(format!("TaskRun {:?} was cancelled", req.name));
        }
        if !scopes.is_empty() {
            if let Err(e) = lfs::materialize(scopes, cancel).await {
                let lfs::Unfetched::Missing(message) = e else {
                    return cancelled_outcome(format!("TaskRun {:?} was cancelled", req.name));
                };
                return TaskOutcome {
                    status: AttemptStatus::Failed,
                    reason: lfs::REASON.into(),
                    message: format!("TaskRun {:?} did not start: {message}", req.name),
                    results: BTreeMap::new(),
                    steps: vec![],
                    duration: Duration::ZERO,
                };
            }
        }
        if attempt == 0 {
            self.events.emit(RunEvent::TaskRunStarted { label: &base.label });
        }
        self.exec.run(req, cancel.clone()).await
    }
}

/// Where a TaskRun about to run reads repository files: its cache inputs (narrowed by
/// `tenon.dev/inputs` and `tenon.dev/exclude`), or, without a cache job, every
/// repository workspace it binds.
fn lfs_scopes(l: &Launch) -> Vec<lfs::Scope> {
    match &l.job {
        Some(job) => job
            .inputs
            .iter()
            .map(|(_, root, include, exclude)| lfs::Scope {
                root: root.clone(),
                include: include.clone(),
                exclude: exclude.clone(),
            })
            .collect(),
        None => l
            .req
            .workspaces
            .iter()
            .filter(|w| w.kind == "repo")
            .filter_map(|w| w.path.clone())
            .map(|root| lfs::Scope { root, include: vec![], exclude: vec![] })
            .collect(),
    }
}

/// A hit's message: the record's results as this TaskRun sees them, its outputs.
fn hit_msg(l: Launch, rec: Record, remote: Option<String>) -> ChildMsg {
    let outcome = cached_outcome(cached::localize_results(&rec.results, &l.req));
    let cache = CacheOutcome::hit(&rec, remote);
    child_msg(l, outcome, 0, cache, rec.outputs, None)
}

fn child_msg(
    l: Launch,
    outcome: TaskOutcome,
    attempts: u32,
    cache: CacheOutcome,
    outputs: Vec<OutputSet>,
    ticket: Option<Box<Ticket>>,
) -> ChildMsg {
    ChildMsg {
        task: l.task,
        index: l.index,
        req: l.req,
        cancel: l.cancel,
        outcome,
        attempts,
        cache,
        outputs,
        ticket,
        lfs: vec![],
    }
}

/// Look `key` up in the local store and restore a hit into the TaskRun's workspaces.
async fn lookup(ctx: &Arc<CacheCtx>, key: &str, req: &TaskRunRequest) -> Result<Option<Box<Record>>, String> {
    let (ctx, key, req) = (ctx.clone(), key.to_string(), req.clone());
    blocking(move || match ctx.store.get(&key) {
        Ok(Some(rec)) => {
            cached::restore(&ctx, &rec, &req)?;
            Ok(Some(Box::new(rec)))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    })
    .await
}
