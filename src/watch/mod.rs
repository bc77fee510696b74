//! `tenon watch`: the long-running reconciler. It follows a directory (filesystem events)
//! or a git branch (a persistent clone, polled and woken by webhooks) and, for every
//! settled change or new revision, plans, runs what changed and promotes. One reconcile
//! at a time; the newest revision wins; bad input is reported and the watcher keeps
//! serving `/healthz`, `/readyz`, `/metrics` and `/status`.

pub mod http;
pub mod source;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Outcome};
use crate::promote::run::{promote_all, results_of, PromoteOptions, PromotionReport};
use crate::reconcile::{self, RunSettings};
use crate::report::PlanReport;
use crate::store::StateStore;
use crate::ui::Console;
use source::{GitSource, Ignored, SourceError};
use state::{rfc3339_now, Details, LastError, LastReconcile, ReconcileOutcome, Shared, SourceDoc};

/// Why `tenon watch --once` (or a stopped watcher) did not end well (exit codes:
/// `crate::error`). What went wrong was already logged with the revision.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the manifests are invalid (see the errors above); nothing was run")]
    Invalid,
    #[error("the reconcile could not run (see the error above)")]
    Reconcile,
    /// The git source could not be locked or fetched.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// What to follow.
#[derive(Debug, Clone)]
pub enum Source {
    Dir(PathBuf),
    Git { url: String, branch: String },
}

/// What to do with running tasks on SIGTERM/SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShutdownMode {
    /// Cancel running tasks at once (their process groups are killed).
    Cancel,
    /// Let running tasks finish, up to the shutdown timeout, then cancel them.
    Finish,
}

pub struct WatchOptions {
    pub source: Source,
    pub settings: RunSettings,
    pub quiet: bool,
    pub listen: SocketAddr,
    /// Write the bound address here once listening (for `--listen 127.0.0.1:0`).
    pub listen_file: Option<PathBuf>,
    /// Directory mode: changes closer together than this are one change.
    pub debounce: Duration,
    /// Directory mode: poll instead of native events.
    pub poll: bool,
    /// Git mode: how often to fetch.
    pub interval: Duration,
    /// Longest wait between retries of an unreachable remote.
    pub max_backoff: Duration,
    pub webhook_secret: Option<String>,
    /// Read timeout and connection cap of the HTTP endpoint.
    pub http_limits: http::Limits,
    /// Reconcile the current state once and exit.
    pub once: bool,
    pub shutdown: ShutdownMode,
    pub shutdown_timeout: Duration,
    /// Promote after successful reconciles (when the manifests have PromotionPolicies).
    pub promote: bool,
    pub promote_opts: PromoteOptions,
    pub json_logs: bool,
    /// Leader election gate: when present, reconcile and promote only while it is true.
    pub leader: Option<tokio::sync::watch::Receiver<bool>>,
    /// Stops the watcher like SIGTERM does (for embedding; signals cancel it too).
    pub stop: CancellationToken,
}

/// How one reconcile ended.
struct Ended {
    outcome: ReconcileOutcome,
    /// The revision may be recorded as done (not interrupted by shutdown).
    done: bool,
}

/// Run the watcher until SIGTERM/SIGINT (or, with `once`, one reconcile).
pub async fn watch(mut opts: WatchOptions) -> Result<Outcome, Error> {
    let source_doc = match &opts.source {
        Source::Dir(d) => SourceDoc::Dir { dir: d.display().to_string() },
        Source::Git { url, branch } => SourceDoc::Git { url: source::redact(url), branch: branch.clone() },
    };
    std::fs::create_dir_all(&opts.settings.state_dir).map_err(|e| Error::Io {
        context: format!("cannot create state directory {}", opts.settings.state_dir.display()),
        source: e,
    })?;
    let mut shared = Shared::new(source_doc, opts.settings.state_dir.clone(), opts.webhook_secret.take());
    shared.has_leader_gate = opts.leader.is_some();
    let shared = Arc::new(shared);
    if let Some(mut rx) = opts.leader.clone() {
        // mirror leadership into /status and /metrics as it changes
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                shared.leader.store(*rx.borrow_and_update(), Ordering::Relaxed);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let stop = opts.stop.clone();
    spawn_signals(stop.clone());

    let server_stop = CancellationToken::new();
    if !opts.once {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = listener.local_addr().map_err(|e| Error::Io { context: "listener address".into(), source: e })?;
        if let Some(f) = &opts.listen_file {
            let tmp = f.with_extension("tmp");
            std::fs::write(&tmp, addr.to_string())
                .and_then(|_| std::fs::rename(&tmp, f))
                .map_err(|e| Error::Io { context: format!("cannot write {}", f.display()), source: e })?;
        }
        if shared.webhook_secret.is_none() && matches!(opts.source, Source::Git { .. }) {
            tracing::warn!("no webhook secret configured: POST /hooks/git accepts unsigned requests");
        }
        tracing::info!(address = %addr, source = %shared.source_label, "listening");
        tokio::spawn(http::serve(listener, shared.clone(), server_stop.clone(), opts.http_limits));
    }
    let result = match opts.source.clone() {
        Source::Dir(dir) => dir_loop(&opts, &shared, &stop, &dir).await,
        Source::Git { url, branch } => git_loop(&opts, &shared, &stop, &url, &branch).await,
    };
    server_stop.cancel();
    if stop.is_cancelled() {
        tracing::info!("stopped");
    }
    result
}

fn spawn_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.cancel();
    });
}

/// Wait while this replica is not the leader. False when stopping.
async fn await_leadership(
    opts: &mut Option<tokio::sync::watch::Receiver<bool>>,
    shared: &Shared,
    stop: &CancellationToken,
) -> bool {
    let Some(rx) = opts else { return !stop.is_cancelled() };
    loop {
        let is = *rx.borrow_and_update();
        shared.leader.store(is, Ordering::Relaxed);
        if is {
            return !stop.is_cancelled();
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return false },
            _ = stop.cancelled() => return false,
        }
    }
}

async fn dir_loop(
    opts: &WatchOptions,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    dir: &Path,
) -> Result<Outcome, Error> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", dir.display())));
    }
    let root = dir
        .canonicalize()
        .map_err(|e| Error::Io { context: format!("cannot resolve {}", dir.display()), source: e })?;
    let mut leader = opts.leader.clone();
    if opts.once {
        let ended = reconcile_tree(opts, shared, stop, &root, None).await;
        return once_outcome(ended.outcome);
    }
    let store = opts.settings.state_dir.canonicalize().unwrap_or_else(|_| opts.settings.state_dir.clone());
    let ignored = Arc::new(Mutex::new(Ignored {
        trees: vec![root.join(".git"), root.join(crate::promote::LEDGER_DIR), store],
        files: vec![],
    }));
    update_ignored(&ignored, &root);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher =
        source::watch_dir(&root, ignored.clone(), tx, opts.poll, opts.debounce.max(Duration::from_millis(200)))
            .map_err(Error::Usage)?;
    let changed = Arc::new(tokio::sync::Notify::new());
    // debounce: a change is settled when no event arrived for the window
    {
        let changed = changed.clone();
        let window = opts.debounce;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut n = 1usize;
                let mut last = first;
                loop {
                    match tokio::time::timeout(window, rx.recv()).await {
                        Ok(Some(p)) => {
                            n += 1;
                            last = p;
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                tracing::debug!(events = n, last = %last.display(), "change settled");
                changed.notify_one();
            }
        });
    }
    loop {
        if !await_leadership(&mut leader, shared, stop).await {
            break;
        }
        reconcile_tree(opts, shared, stop, &root, None).await;
        update_ignored(&ignored, &root);
        shared.ready.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = changed.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
    Ok(Outcome::Ok)
}

fn update_ignored(ignored: &Mutex<Ignored>, root: &Path) {
    if let Ok(cat) = reconcile::load(root) {
        let files = source::promotion_targets(&cat).into_iter().map(|f| root.join(f)).collect();
        ignored.lock().unwrap_or_else(|e| e.into_inner()).files = files;
    }
}

/// The exit of `--once` (and of a stopped watcher): 0 ok, 1 a run failed, 2 invalid
/// manifests, 3 tenon could not work.
fn once_outcome(outcome: ReconcileOutcome) -> Result<Outcome, Error> {
    match outcome {
        ReconcileOutcome::Succeeded | ReconcileOutcome::Skipped | ReconcileOutcome::UpToDate => Ok(Outcome::Ok),
        ReconcileOutcome::Invalid => Err(WatchError::Invalid.into()),
        ReconcileOutcome::Error => Err(WatchError::Reconcile.into()),
        ReconcileOutcome::Failed | ReconcileOutcome::Cancelled => Ok(Outcome::RunFailed),
    }
}

async fn git_loop(
    opts: &WatchOptions,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    url: &str,
    branch: &str,
) -> Result<Outcome, Error> {
    let src = GitSource::new(url, branch, &opts.settings.state_dir, opts.promote_opts.credentials.clone());
    let _lock = src.lock().map_err(WatchError::from)?;
    let source_key = format!("git {url}#{branch}");
    let store = reconcile::open_store(&opts.settings.state_dir)?;
    let mut leader = opts.leader.clone();
    let mut backoff: Option<Duration> = None;
    let mut last_outcome = ReconcileOutcome::UpToDate;
    loop {
        if !await_leadership(&mut leader, shared, stop).await {
            break;
        }
        let s = src.clone();
        let fetch = tokio::task::spawn_blocking(move || s.fetch());
        // a fetch stuck on the network does not hold up shutdown
        let fetched = tokio::select! {
            r = fetch => r.map_err(|e| SourceError::Git { message: format!("the fetch stopped: {e}") }).and_then(|r| r),
            _ = stop.cancelled() => break,
        };
        match fetched {
            Err(source) => {
                let e = crate::error::render(&source);
                shared.metrics.fetch_errors.inc();
                shared.status().last_error = Some(LastError::now(e.clone()));
                if opts.once {
                    return Err(WatchError::Source(source).into());
                }
                let wait = backoff.map_or(Duration::from_secs(1), |b| (b * 2).min(opts.max_backoff));
                backoff = Some(wait);
                tracing::error!(error = e.as_str(), retryIn = %humantime::format_duration(wait), "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.trigger.notified() => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            Ok(tip) => {
                backoff = None;
                let rev = tip.to_string();
                let done = store.reconciled_outcome(&source_key, &rev).ok().flatten();
                if done.is_none() {
                    let ended = reconcile_revision(opts, shared, stop, &src, &store, &source_key, tip).await;
                    last_outcome = ended.outcome;
                    if ended.done {
                        let _ = store.record_reconciled(&source_key, &rev, ended.outcome);
                    }
                } else {
                    shared.status().revision = Some(rev);
                }
                shared.ready.store(true, Ordering::Relaxed);
            }
        }
        if opts.once || stop.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            _ = shared.trigger.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
    if opts.once {
        once_outcome(last_outcome)
    } else {
        Ok(Outcome::Ok)
    }
}

/// Reconcile one fetched revision: check it out, skip tenon's own promotion commits,
/// else reconcile its tree and promote (unless a newer revision arrived meanwhile).
async fn reconcile_revision(
    opts: &WatchOptions,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    src: &GitSource,
    store: &dyn StateStore,
    source_key: &str,
    tip: git2::Oid,
) -> Ended {
    let rev = tip.to_string();
    let started = Instant::now();
    shared.status().reconcile_started_at = Some(rfc3339_now());
    let s = src.clone();
    let checkout = tokio::task::spawn_blocking(move || s.checkout(tip)).await;
    if let Err(e) = checkout.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| crate::error::render(&e))) {
        let details = Details { error: Some(format!("checkout {rev}: {e}")), ..Details::default() };
        return finish(shared, started, Some(&rev), ReconcileOutcome::Error, details, None, 0);
    }
    shared.status().revision = Some(rev.clone());
    // tenon's own promotion commits change only promotion targets and the ledger
    if let Some(prev) = store.last_reconciled(source_key).ok().flatten().and_then(|p| git2::Oid::from_str(&p).ok()) {
        let targets = reconcile::load(&src.dir).map(|c| source::promotion_targets(&c)).unwrap_or_default();
        let s = src.clone();
        let only = tokio::task::spawn_blocking(move || s.only_promotions(prev, tip, &targets)).await;
        if let Ok(Ok(true)) = only {
            let why = "only tenon promotion commits since the last reconcile: no task runs";
            let details = Details { skipped: Some(why.into()), ..Details::default() };
            return finish(shared, started, Some(&rev), ReconcileOutcome::Skipped, details, None, 0);
        }
    }
    reconcile_tree(opts, shared, stop, &src.dir, Some((src, tip))).await
}

/// Load, validate, run and (when it all succeeded) promote the tree at `dir`.
async fn reconcile_tree(
    opts: &WatchOptions,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    dir: &Path,
    git: Option<(&GitSource, git2::Oid)>,
) -> Ended {
    let started = Instant::now();
    let rev = git.map(|(_, t)| t.to_string());
    {
        let mut st = shared.status();
        st.reconciling = true;
        st.reconcile_started_at = Some(rfc3339_now());
    }
    let invalid = ReconcileOutcome::Invalid;
    let cat = match load_catalog(dir) {
        Ok(cat) => cat,
        Err(details) => return finish(shared, started, rev.as_deref(), invalid, *details, None, 0),
    };
    let has_policies = !cat.promotion_policies.is_empty();
    let (result, interrupted) = run_until_stopped(opts, stop, cat, dir).await;
    let rec = match result {
        Ok(r) => r,
        Err(e) => {
            let outcome = if e.code() == crate::error::EXIT_INTERNAL { ReconcileOutcome::Error } else { invalid };
            let details = Details { error: Some(crate::error::render(&e)), ..Details::default() };
            return finish(shared, started, rev.as_deref(), outcome, details, None, 0);
        }
    };
    if let Some(e) = &rec.report.store_error {
        // the runs could not be recorded: not a success, and the revision is tried again
        let error = format!("tenon could not use its state directory, so what ran is not recorded: {e}");
        let details = Details { error: Some(error), ..Details::default() };
        let outcome = ReconcileOutcome::Error;
        return finish(shared, started, rev.as_deref(), outcome, details, Some(&rec.report), rec.hash_ns);
    }
    let ok = rec.report.all_ok();
    if interrupted && !ok {
        let outcome = ReconcileOutcome::Cancelled;
        let details = Details::default();
        let ended = finish(shared, started, rev.as_deref(), outcome, details, Some(&rec.report), rec.hash_ns);
        return Ended { done: false, ..ended };
    }
    let outcome = if ok { ReconcileOutcome::Succeeded } else { ReconcileOutcome::Failed };
    let mut details = Details::default();
    if ok && has_policies && opts.promote && !stop.is_cancelled() && shared.leader.load(Ordering::Relaxed) {
        details = promote_tree(opts, shared, dir, git, &rec.report).await;
    }
    let mut ended = finish(shared, started, rev.as_deref(), outcome, details, Some(&rec.report), rec.hash_ns);
    // a run failed because shutdown cancelled it: not done
    ended.done = !interrupted || ok;
    ended
}

/// The valid catalog at `dir`, or the details of why it is not.
fn load_catalog(dir: &Path) -> Result<crate::model::Catalog, Box<Details>> {
    match reconcile::load_valid(dir) {
        Err(e) => Err(Box::new(Details { error: Some(e.to_string()), ..Details::default() })),
        Ok(Err(diags)) => Err(Box::new(Details {
            error: Some(format!("{} error(s) in the manifests; nothing was run", diags.len())),
            messages: diags.0.iter().map(|d| d.to_string()).collect(),
            errors: diags.0,
            ..Details::default()
        })),
        Ok(Ok(cat)) => Ok(cat),
    }
}

/// Run `cat`; a stop lets it finish or cancels it, per the shutdown mode and timeout.
/// Also says whether the stop interrupted it.
async fn run_until_stopped(
    opts: &WatchOptions,
    stop: &CancellationToken,
    cat: crate::model::Catalog,
    dir: &Path,
) -> (Result<reconcile::Reconciled, Error>, bool) {
    // with JSON logs, stderr carries only JSON lines (step output is in the log files)
    let console = Arc::new(if opts.json_logs { Console::silent() } else { Console::new(opts.quiet) });
    let run_cancel = CancellationToken::new();
    let fut = reconcile::run_catalog(cat, dir, &opts.settings, console, run_cancel.clone());
    tokio::pin!(fut);
    let mut interrupted = false;
    let result = tokio::select! {
        r = &mut fut => r,
        _ = stop.cancelled() => {
            interrupted = true;
            if opts.shutdown == ShutdownMode::Cancel {
                run_cancel.cancel();
            }
            tokio::select! {
                r = &mut fut => r,
                _ = tokio::time::sleep(opts.shutdown_timeout) => {
                    run_cancel.cancel();
                    fut.await
                }
            }
        }
    };
    (result, interrupted)
}

/// Promote after a successful reconcile of `dir` (unless a newer revision arrived), and
/// the details to report: the promotion, or why there is none.
async fn promote_tree(
    opts: &WatchOptions,
    shared: &Arc<Shared>,
    dir: &Path,
    git: Option<(&GitSource, git2::Oid)>,
    report: &crate::report::RunReport,
) -> Details {
    let mut promotion: Option<PromotionReport> = None;
    let mut promotion_note: Option<String> = None;
    // newest revision wins: never apply a superseded revision's promotion
    let newer = match git {
        Some((src, tip)) => newer_revision(src, tip, dir).await,
        None => None,
    };
    if let Some(n) = newer {
        // the newer revision is reconciled next, without waiting for the poll interval
        shared.trigger.notify_one();
        promotion_note = Some(format!("not promoted: superseded by newer revision {n}"));
    } else {
        let results = results_of(report);
        let dir = dir.to_path_buf();
        let popts = opts.promote_opts.clone();
        let state_dir = opts.settings.state_dir.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<PromotionReport, Error> {
            let cat = reconcile::load(&dir)?;
            let store = reconcile::open_store(&state_dir)?;
            Ok(promote_all(&cat, &dir, &store, Some(&results), &popts)?)
        })
        .await
        .map_err(|e| format!("the promotion task stopped: {e}"))
        .and_then(|r| r.map_err(|e| crate::error::render(&e)));
        match r {
            Ok(p) => {
                shared.count_promotions(&p);
                promotion = Some(p);
            }
            Err(e) => promotion_note = Some(format!("promotion failed: {e}")),
        }
    }
    let mut details = Details { promotion_note, ..Details::default() };
    if let Some(p) = promotion {
        let states: Vec<String> = p.promotions.iter().map(|s| format!("{}={}", s.environment, s.state)).collect();
        details.promotions = (!states.is_empty()).then(|| states.join(","));
        if p.failed() {
            shared.status().last_error =
                Some(LastError { promotion: Some(p.clone()), ..LastError::now("a promotion failed") });
        }
        details.promotion = Some(p);
    }
    details
}

/// The tip of the followed branch when it moved past `tip` with more than tenon's own
/// promotion commits (fetched now; `None` when it did not, or the fetch failed).
async fn newer_revision(src: &GitSource, tip: git2::Oid, dir: &Path) -> Option<String> {
    let s = src.clone();
    match tokio::task::spawn_blocking(move || s.fetch()).await {
        Ok(Ok(now)) if now != tip => {
            let s = src.clone();
            let targets = reconcile::load(dir).map(|c| source::promotion_targets(&c)).unwrap_or_default();
            let own = tokio::task::spawn_blocking(move || s.only_promotions(tip, now, &targets)).await;
            (!matches!(own, Ok(Ok(true)))).then(|| now.to_string())
        }
        _ => None,
    }
}

/// Account, publish and log a finished reconcile.
#[allow(clippy::too_many_arguments)]
fn finish(
    shared: &Shared,
    started: Instant,
    rev: Option<&str>,
    outcome: ReconcileOutcome,
    details: Details,
    report: Option<&crate::report::RunReport>,
    hash_ns: u64,
) -> Ended {
    let secs = started.elapsed().as_secs_f64();
    shared.count_reconcile(outcome, secs, report, hash_ns);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for t in report.iter().flat_map(|r| r.runs.iter()).flat_map(|r| r.tasks.iter()) {
        *counts.entry(t.status.clone()).or_default() += 1;
    }
    let tasks: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {}", k.to_lowercase())).collect();
    for line in &details.messages {
        tracing::error!("{line}");
    }
    log_reconcile(outcome, secs, rev, &tasks.join(", "), &details);
    {
        let mut st = shared.status();
        if outcome.is_success() {
            st.last_success_at = Some(rfc3339_now());
        } else if let Some(e) = &details.error {
            st.last_error = Some(LastError { revision: Some(rev.map(str::to_string)), ..LastError::now(e.clone()) });
        }
        st.last_reconcile = Some(LastReconcile {
            revision: rev.map(str::to_string),
            outcome,
            finished_at: rfc3339_now(),
            duration_ms: (secs * 1000.0) as u64,
            started_at: st.reconcile_started_at.clone(),
            details,
            report: report.cloned(),
            plan: report.map(|r| PlanReport::from_dry_run(r.clone())),
        });
        st.reconciling = false;
        st.reconciles += 1;
    }
    // tenon itself could not work (checkout, state directory): try the revision again later
    Ended { outcome, done: outcome != ReconcileOutcome::Error }
}

/// The one log event of a finished reconcile (`message` "reconcile"), at a level that
/// follows the outcome; the fields are the outcome, its duration, the short revision,
/// task counts by status, and the error, skip reason or promotions when there are any.
fn log_reconcile(outcome: ReconcileOutcome, secs: f64, rev: Option<&str>, tasks: &str, details: &Details) {
    let revision = rev.map(|r| &r[..12.min(r.len())]);
    let tasks = (!tasks.is_empty()).then_some(tasks);
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                $level,
                outcome = %outcome,
                duration = %format_args!("{secs:.2}s"),
                revision = revision.map(tracing::field::display),
                tasks,
                error = details.error.as_deref(),
                skipped = details.skipped.as_deref(),
                promotions = details.promotions.as_deref(),
                promotionNote = details.promotion_note.as_deref(),
                "reconcile"
            )
        };
    }
    match outcome {
        ReconcileOutcome::Succeeded | ReconcileOutcome::Skipped | ReconcileOutcome::UpToDate => {
            event!(tracing::Level::INFO)
        }
        ReconcileOutcome::Cancelled | ReconcileOutcome::Failed => event!(tracing::Level::WARN),
        ReconcileOutcome::Invalid | ReconcileOutcome::Error => event!(tracing::Level::ERROR),
    }
}
