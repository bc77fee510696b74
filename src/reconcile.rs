//! The reconcile core shared by `tenon run`, `tenon plan` and `tenon watch`: load and
//! validate a directory, build the executor, the cache context and the engine, run (or
//! plan) the selected runs and return the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::engine::cached::CacheCtx;
use crate::engine::planner::{Plan, Planner};
use crate::engine::{Engine, EngineOptions};
use crate::error::Error;
use crate::exec::kubernetes::{KubeArgs, KubernetesExecutor};
use crate::exec::local::{LocalExecutor, Sandbox, SandboxMode};
use crate::exec::{Executor, ExecutorKind};
use crate::model::{self, Catalog, Diagnostics, ParamValue};
use crate::report::{HashingStats, RunReport};
use crate::store::SqliteStore;
use crate::ui::Console;

/// Why the reconcile core could not set up a run (its exit code: `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The sandbox asked for is not available here (invalid usage).
    #[error("{message}")]
    Sandbox { message: String },
    /// The shared cache settings are unusable (invalid usage).
    #[error("{message}")]
    RemoteCache { message: String },
    /// The executor could not connect or prepare (tenon could not work).
    #[error("the {executor} executor cannot start: {message}")]
    ExecutorStart { executor: &'static str, message: String },
    /// The store's stat cache could not be read (tenon could not work).
    #[error("{message}")]
    StatCache { message: String },
    /// The planner's thread ended without a plan (tenon could not work).
    #[error("the planner failed: {message}")]
    Planner { message: String },
}

/// What a run needs besides the manifests (the flags `tenon run` and `tenon watch` share).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Only the PipelineRun or TaskRun with this name.
    pub run: Option<String>,
    pub params: Vec<(String, ParamValue)>,
    /// Most TaskRuns at once (default: number of CPUs).
    pub parallel: Option<usize>,
    /// tenon's state directory.
    pub state_dir: PathBuf,
    pub max_result_size: usize,
    /// Host environment variables passed through to steps.
    pub pass_env: Vec<String>,
    pub namespace: String,
    pub no_cache: bool,
    pub sandbox: SandboxMode,
    /// Where tasks run (part of cache keys).
    pub executor: ExecutorKind,
    /// Settings of the Kubernetes executor (unused by the local one).
    pub kube: KubeArgs,
    pub rerun: Vec<String>,
    /// Run directories kept per PipelineRun/TaskRun name once a reconcile ends (`--keep-runs`).
    pub keep_runs: usize,
    /// The shared cache (`--cache-repo`), if any.
    pub remote: Option<crate::remote::RemoteSettings>,
    /// Planning imports what the shared cache has into the store (`tenon cache pull`).
    pub import_on_plan: bool,
    /// Record where each input file's digest came from (`tenon plan -v`).
    pub digest_sources: bool,
}

/// The default state directory: `$XDG_CACHE_HOME/tenon` or `~/.cache/tenon`.
pub fn default_store() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("tenon");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("tenon"),
        None => std::env::temp_dir().join("tenon"),
    }
}

/// Load every manifest under `dir` (a missing `dir` is a usage error).
pub fn load(dir: &Path) -> Result<Catalog, Error> {
    if !dir.exists() {
        return Err(Error::Usage(format!("{}: no such file or directory", dir.display())));
    }
    Ok(model::load_dir(dir))
}

/// Load and validate: the catalog, or every diagnostic.
pub fn load_valid(dir: &Path) -> Result<Result<Catalog, Diagnostics>, Error> {
    let cat = load(dir)?;
    let diags = model::validate(&cat);
    Ok(if diags.is_empty() { Ok(cat) } else { Err(diags) })
}

/// The state directory's cache store (created when missing; owner-only, and tightened
/// when an older tenon created it readable by others).
pub fn open_store(state_dir: &Path) -> Result<SqliteStore, Error> {
    crate::store::make_private_dir(state_dir).map_err(|e| Error::Io {
        context: format!("cannot create state directory {}", state_dir.display()),
        source: e,
    })?;
    let runs = state_dir.join("runs");
    if runs.is_dir() {
        let _ = crate::store::make_private_dir(&runs);
    }
    SqliteStore::open(&state_dir.join("cache"))
        .map_err(|e| Error::Store(format!("{e}\n  {}", open_hint(&e, state_dir))))
}

/// `tenon cache reset`: move the store (`<state>/cache`) aside to
/// `<state>/cache.broken-<UTC time>`; the next run starts with an empty cache. Returns
/// where it went (`None`: there was no store).
pub fn reset_store(state_dir: &Path) -> Result<Option<PathBuf>, Error> {
    let cache = state_dir.join("cache");
    if std::fs::symlink_metadata(&cache).is_err() {
        return Ok(None);
    }
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
    let mut aside = state_dir.join(format!("cache.broken-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = state_dir.join(format!("cache.broken-{stamp}-{n}"));
    }
    std::fs::rename(&cache, &aside).map_err(|e| Error::Io {
        context: format!("cannot move {} aside to {}", cache.display(), aside.display()),
        source: e,
    })?;
    Ok(Some(aside))
}

/// Retention after a reconcile: keep the last `keep` run directories per run name (and
/// the latest successful run of each, which the cache protects). Never fails a run.
pub fn prune_run_dirs(state_dir: &Path, store: &SqliteStore, keep: usize) -> crate::retention::Pruned {
    let protect = store.latest_successful_runs().unwrap_or_default();
    match crate::retention::prune_runs(state_dir, keep, &protect) {
        Ok(p) => {
            if p.removed > 0 {
                tracing::info!(removed = p.removed, freed_bytes = p.freed_bytes, keep, "pruned old run directories");
            }
            p
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not prune old run directories");
            Default::default()
        }
    }
}

/// A run or task that failed because tenon's own write into the state directory (a run
/// directory, a script, a materialized volume) found the disk full or over quota: tenon
/// could not work, which is not the task's failure (exit 3). A step's own failing write
/// ends the step with an exit code instead, reported as the task's failure.
fn out_of_space(report: &RunReport) -> Option<String> {
    let full = |m: &str| m.contains("(os error 28)") || m.contains("(os error 122)");
    report.runs.iter().find_map(|r| {
        let own = full(&r.message).then(|| format!("{} {}: {}", r.kind, r.name, r.message));
        own.or_else(|| r.tasks.iter().find(|t| full(&t.message)).map(|t| format!("task {}: {}", t.name, t.message)))
    })
}

/// Why a store cannot be opened, and what to do about it.
fn open_hint(e: &crate::store::StoreError, state_dir: &Path) -> String {
    use rusqlite::ErrorCode;
    let crate::store::StoreError::Open { source, .. } = e else { return String::new() };
    let code = source.downcast_ref::<rusqlite::Error>().and_then(|e| e.sqlite_error_code());
    let io = source.downcast_ref::<std::io::Error>().map(|e| e.kind());
    let reset = || {
        format!(
            "the store is unusable; to move it aside (to a timestamped name) and start afresh, run: tenon cache reset --store {}",
            state_dir.display()
        )
    };
    let full =
        || format!("no space left on the filesystem of {}: free some space (or `tenon cache gc`)", state_dir.display());
    match (code, io) {
        (Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt), _) => reset(),
        (Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked), _) => {
            "another process holds the store database: wait for it, or raise TENON_DB_BUSY_TIMEOUT".into()
        }
        (Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly), _)
        | (_, Some(std::io::ErrorKind::PermissionDenied)) => {
            format!(
                "tenon needs to write {}: check its owner and permissions, or use another --store",
                state_dir.display()
            )
        }
        // SQLite reports a full disk met while growing its shared-memory file as a plain
        // `disk I/O error`: ask the filesystem too
        (Some(ErrorCode::DiskFull), _)
        | (_, Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)) => full(),
        _ if free_bytes(state_dir) == Some(0) => full(),
        _ => reset(),
    }
}

/// Bytes available to this user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs for the kernel to fill in
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Check that the catalog has something to run (and, with `--run NAME`, that NAME exists).
pub fn check_runs(cat: &Catalog, dir: &Path, want: Option<&str>) -> Result<(), Error> {
    let names: Vec<&str> = cat
        .pipeline_runs
        .iter()
        .map(|r| r.name.as_str())
        .chain(cat.task_runs.iter().map(|r| r.name.as_str()))
        .collect();
    if names.is_empty() {
        return Err(Error::Usage(format!("no PipelineRun or TaskRun found in {}", dir.display())));
    }
    if let Some(want) = want {
        if !names.contains(&want) {
            let hint = names
                .iter()
                .min_by_key(|n| strsim::levenshtein(n, want))
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            return Err(Error::Usage(format!(
                "no PipelineRun or TaskRun named {want:?} in {}{hint}; found: {}",
                dir.display(),
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// The executor a reconcile uses, its id (part of cache keys) and the image digests it
/// already knows. The one place an executor is chosen. Without `sweep` (a plan) it
/// connects to the cluster but leaves its pods alone.
pub struct BuiltExecutor {
    pub exec: Arc<dyn Executor>,
    pub id: String,
    pub image_digests: std::collections::BTreeMap<String, String>,
}

pub async fn build_executor(s: &RunSettings, console: Arc<Console>, sweep: bool) -> Result<BuiltExecutor, Error> {
    let mut pass_env = Vec::new();
    for name in &s.pass_env {
        if let Ok(v) = std::env::var(name) {
            pass_env.push((name.clone(), v));
        }
    }
    let _ = std::fs::create_dir_all(&s.state_dir);
    match s.executor {
        ExecutorKind::Local => {
            let sandbox = Sandbox::detect_cached(s.sandbox, &s.state_dir)
                .map_err(|message| ReconcileError::Sandbox { message })?;
            let id = if sandbox.is_bwrap() { "local+bwrap" } else { "local" };
            let host_reason = (!sandbox.is_bwrap()).then(|| Sandbox::host_reason(s.sandbox));
            Ok(BuiltExecutor {
                exec: Arc::new(
                    LocalExecutor::new(pass_env, console)
                        .with_sandbox(sandbox)
                        .with_host_reason(host_reason)
                        .hiding(vec![s.state_dir.clone()]),
                ),
                id: id.to_string(),
                image_digests: Default::default(),
            })
        }
        ExecutorKind::Kubernetes => {
            let k8s_err = |message: String| ReconcileError::ExecutorStart { executor: "kubernetes", message };
            // large inputs through the shared cache's registry: the same URL, credentials and CA
            let registry = s.remote.as_ref().map(|r| crate::exec::kubernetes::RegistryAccess {
                url: r.url.clone(),
                read_only: r.read_only,
                config: r.client_config(),
            });
            // flags that do not fit are a usage error, found before connecting
            let data =
                crate::exec::kubernetes::DataPlane::from_flags(&s.kube, registry.as_ref()).map_err(Error::Usage)?;
            let k = KubernetesExecutor::connect(s.kube.clone(), &s.state_dir, console)
                .await
                .map_err(k8s_err)?
                .with_data_plane(data);
            if sweep {
                k.sweep().await.map_err(k8s_err)?;
            }
            let image_digests = k.image_digests().await;
            Ok(BuiltExecutor { exec: Arc::new(k), id: "kubernetes".to_string(), image_digests })
        }
    }
}

/// What a reconcile produced.
pub struct Reconciled {
    pub report: RunReport,
    /// Time spent hashing inputs (nanoseconds).
    pub hash_ns: u64,
}

/// Everything a run or a plan of a catalog is wired from.
struct Wired {
    settings: RunSettings,
    built: BuiltExecutor,
    opts: EngineOptions,
    store: Arc<SqliteStore>,
    cache: Arc<CacheCtx>,
}

/// How many TaskRuns run at once without `--parallel`: the local CPUs for the local
/// executor; on a cluster the pods run elsewhere, so independent tasks start together (as
/// Tekton creates their pods) up to [`crate::exec::kubernetes::DEFAULT_PARALLEL_PODS`].
fn default_parallel(executor: ExecutorKind) -> usize {
    match executor {
        ExecutorKind::Kubernetes => crate::exec::kubernetes::DEFAULT_PARALLEL_PODS,
        ExecutorKind::Local => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
    }
}

/// Check the selection, make the state directory, build the executor (`sweep`: clear
/// pods a crashed run left behind; not when only planning), open the store and the cache.
async fn wire(cat: &Catalog, dir: &Path, s: &RunSettings, console: Arc<Console>, sweep: bool) -> Result<Wired, Error> {
    check_runs(cat, dir, s.run.as_deref())?;
    std::fs::create_dir_all(&s.state_dir).map_err(|e| Error::Io {
        context: format!("cannot create state directory {}", s.state_dir.display()),
        source: e,
    })?;
    // steps run in other working directories (and bwrap binds need absolute sources): a
    // relative --store is resolved once, here
    let mut settings = s.clone();
    if !settings.state_dir.is_absolute() {
        settings.state_dir = std::path::absolute(&s.state_dir).unwrap_or_else(|_| s.state_dir.clone());
    }
    let s = settings;
    let built = build_executor(&s, console, sweep).await?;
    let opts = EngineOptions {
        parallel: s.parallel.unwrap_or_else(|| default_parallel(s.executor)).max(1),
        state_dir: s.state_dir.clone(),
        repo_root: if dir.is_dir() {
            dir.to_path_buf()
        } else {
            dir.parent().map(Path::to_path_buf).unwrap_or_default()
        },
        param_overrides: s.params.clone(),
        max_result_size: s.max_result_size,
        namespace: s.namespace.clone(),
    };
    let store = Arc::new(open_store(&opts.state_dir)?);
    let rerun: std::collections::BTreeSet<String> = s.rerun.iter().cloned().collect();
    let mut cache_ctx =
        CacheCtx::new(store.clone(), s.no_cache, rerun).map_err(|message| ReconcileError::StatCache { message })?;
    cache_ctx.executor = built.id.clone();
    if s.digest_sources {
        cache_ctx.hash_stats.record_sources();
    }
    cache_ctx.image_digests = built.image_digests.clone();
    if let Some(r) = &s.remote {
        cache_ctx.remote = Some(Arc::new(
            crate::remote::RemoteCache::new(r).map_err(|message| ReconcileError::RemoteCache { message })?,
        ));
        cache_ctx.import_on_plan = s.import_on_plan;
    }
    Ok(Wired { settings: s, built, opts, store, cache: Arc::new(cache_ctx) })
}

fn selected<'c, T>(objs: &'c [model::Obj<T>], run: Option<&'c str>) -> impl Iterator<Item = &'c model::Obj<T>> {
    objs.iter().filter(move |r| run.is_none_or(|n| n == r.name))
}

fn hashing(cache: &CacheCtx) -> HashingStats {
    HashingStats {
        files: cache.hash_stats.files.load(Ordering::Relaxed),
        hashed_files: cache.hash_stats.hashed_files.load(Ordering::Relaxed),
        hashed_bytes: cache.hash_stats.hashed_bytes.load(Ordering::Relaxed),
        from_git_index: cache.hash_stats.from_git_index.load(Ordering::Relaxed),
        from_lfs_pointer: cache.hash_stats.from_lfs_pointer.load(Ordering::Relaxed),
        from_stat_cache: cache.hash_stats.from_stat_cache.load(Ordering::Relaxed),
        sources: cache
            .hash_stats
            .sources()
            .into_iter()
            .map(|(p, s)| crate::report::DigestSourceEntry { path: p.display().to_string(), source: s.as_str() })
            .collect(),
    }
}

/// Run the selected runs of a validated catalog, with `dir` as the repository tree.
/// `cancel` stops every run (its process groups are killed); the stat cache is flushed
/// before returning.
pub async fn run_catalog(
    cat: Catalog,
    dir: &Path,
    s: &RunSettings,
    console: Arc<Console>,
    cancel: CancellationToken,
) -> Result<Reconciled, Error> {
    let w = wire(&cat, dir, s, console.clone(), true).await?;
    let s = &w.settings;
    let cat = Arc::new(cat);
    let cache = w.cache.clone();
    let repo_root = w.opts.repo_root.clone();
    if let Some(r) = &cache.remote {
        r.pull_git_memo(&repo_root, &cache.store).await;
    }
    let exec = w.built.exec.clone();
    let engine = Engine::new(cat.clone(), w.built.exec, w.opts, console, cancel.clone()).with_cache(cache.clone());
    let mut runs = Vec::new();
    for pr in selected(&cat.pipeline_runs, s.run.as_deref()) {
        runs.push(engine.run_pipeline_run(pr).await);
        if cancel.is_cancelled() {
            break;
        }
    }
    for tr in selected(&cat.task_runs, s.run.as_deref()) {
        if cancel.is_cancelled() {
            break;
        }
        runs.push(engine.run_task_run(tr).await);
    }
    exec.close().await;
    cache.flush();
    prune_run_dirs(&s.state_dir, &w.store, s.keep_runs);
    let mut report = RunReport::new(runs);
    if let Some(r) = &cache.remote {
        r.push_git_memo(&repo_root, &cache.store).await;
        report.remote_cache = Some(r.finish().await);
    }
    report.store_error = cache.store_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    if report.store_error.is_none() {
        report.store_error = out_of_space(&report);
    }
    report.hashing = Some(hashing(&cache));
    Ok(Reconciled { report, hash_ns: cache.hash_ns.load(Ordering::Relaxed) })
}

/// What `tenon plan` (and `tenon cache pull`) produced.
pub struct Planned {
    pub plan: Plan,
    pub hashing: HashingStats,
    pub remote_cache: Option<crate::report::RemoteSummary>,
}

/// Plan the selected runs of a validated catalog against the cache: nothing runs. The
/// planner is synchronous; it runs on a blocking thread and asks the shared cache (if
/// any) on this runtime.
pub async fn plan_catalog(cat: Catalog, dir: &Path, s: &RunSettings) -> Result<Planned, Error> {
    let w = wire(&cat, dir, s, Arc::new(Console::silent()), false).await?;
    let cache = w.cache.clone();
    if let Some(r) = &cache.remote {
        r.pull_git_memo(&w.opts.repo_root, &cache.store).await;
    }
    let env_from = w.built.exec.resolves_env_from();
    let (opts, run) = (w.opts, w.settings.run.clone());
    let rt = tokio::runtime::Handle::current();
    let c = cache.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let planner = Planner::new(&cat, &opts, Some(&c)).executor_env_from(env_from).with_runtime(rt);
        let mut plan = Plan::default();
        plan.runs.extend(selected(&cat.pipeline_runs, run.as_deref()).map(|pr| planner.plan_pipeline_run(pr)));
        plan.runs.extend(selected(&cat.task_runs, run.as_deref()).map(|tr| planner.plan_task_run(tr)));
        drop(planner);
        // `tenon plan` exits right after: freeing a large catalog object by object (about
        // 5 ms for 1,000 tasks) buys nothing
        std::mem::forget(cat);
        plan
    })
    .await
    .map_err(|e| ReconcileError::Planner { message: e.to_string() })?;
    cache.flush();
    let remote_cache = match &cache.remote {
        Some(r) => Some(r.finish().await),
        None => None,
    };
    let mut hashing = hashing(&cache);
    // relative to the planned directory, as the plan's reasons name inputs
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for e in &mut hashing.sources {
        let p = Path::new(&e.path);
        if let Some(r) = p.strip_prefix(&canon).ok().or_else(|| p.strip_prefix(dir).ok()) {
            e.path = r.display().to_string();
        }
    }
    Ok(Planned { plan, hashing, remote_cache })
}
