//! Glue between the engine and the cache: building a task's cache job, computing its key
//! (hashing its inputs), restoring a hit, recording a success.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::cache::{explain, Preimage, RerunReason, KEY_SCHEMA_VERSION};
use crate::exec::TaskRunRequest;
use crate::hash::{self, Filter, HashStats, StatCache};
use crate::model::{ParamValue, TaskSpec};
use crate::store::{OutputSet, Record, Store, OUTPUT_FORMAT};

pub use crate::model::annotations::*;

/// Cache state shared by every task of an engine.
pub struct CacheCtx {
    pub store: Arc<dyn Store>,
    pub stats: StatCache,
    pub hash_stats: HashStats,
    /// Wall time spent hashing input trees, in nanoseconds (for metrics).
    pub hash_ns: std::sync::atomic::AtomicU64,
    /// (root, filters) -> the tree's root digest, hashed once per process.
    memo: Mutex<HashMap<(PathBuf, String), String>>,
    /// (root, filters) -> the input files under it that are unsmudged Git LFS pointers
    /// (keyed by the pointer's oid: a task that binds one needs the object fetched).
    pub lfs_inputs: Mutex<HashMap<(PathBuf, String), Vec<hash::LfsInput>>>,
    /// Input root -> the git index it lies in (`None`: not in a usable git work tree).
    git_views: Mutex<HashMap<PathBuf, Option<Arc<hash::git::GitView>>>>,
    /// `--no-cache`: run everything (records are still written).
    pub no_cache: bool,
    /// `--rerun TASK`: run these pipeline tasks.
    pub rerun: BTreeSet<String>,
    pub executor: String,
    /// Normalized image name -> digest, as the cluster reports them (Kubernetes executor).
    pub image_digests: BTreeMap<String, String>,
    /// The first failure of the store itself (a full disk, a locked database): the runs
    /// could not be recorded, and tenon exits 3.
    pub store_failure: Mutex<Option<String>>,
    /// The shared cache (`--cache-repo`): looked up after a local miss, published to after
    /// a success.
    pub remote: Option<Arc<crate::remote::RemoteCache>>,
    /// Planning imports what the shared cache has (`tenon cache pull`), instead of only
    /// reading its records.
    pub import_on_plan: bool,
}

impl CacheCtx {
    pub fn new(store: Arc<dyn Store>, no_cache: bool, rerun: BTreeSet<String>) -> Result<Self, String> {
        let known = store.stat_cache().map_err(|e| format!("cannot read the stat cache: {e}"))?;
        Ok(CacheCtx {
            store,
            stats: StatCache::new(known),
            hash_stats: HashStats::default(),
            hash_ns: Default::default(),
            memo: Mutex::new(HashMap::new()),
            lfs_inputs: Mutex::new(HashMap::new()),
            git_views: Mutex::new(HashMap::new()),
            no_cache,
            rerun,
            executor: "local".into(),
            image_digests: BTreeMap::new(),
            store_failure: Mutex::new(None),
            remote: None,
            import_on_plan: false,
        })
    }

    /// `what` failed with `e`: remember it when the store itself failed. Returns the message.
    pub fn store_error(&self, what: &str, e: &crate::store::StoreError) -> String {
        let msg = format!("{what}: {e}");
        if e.is_store_failure() {
            self.store_failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| msg.clone());
        }
        msg
    }

    /// The store failed earlier: later writes are not attempted (each could wait for a
    /// locked database again), and tenon exits 3 at the end.
    pub fn store_failed(&self) -> bool {
        self.store_failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Persist what this process learned about file digests.
    pub fn flush(&self) {
        if self.store_failed() {
            return;
        }
        let updates = self.stats.take_updates();
        if let Err(e) = self.store.save_stats(&updates) {
            tracing::warn!(error = %e, "could not save the stat cache");
        }
    }

    /// The git index `root` lies in, read once per process (with the memo rows of its
    /// blobs): in a git work tree, clean tracked files take their digests from the memo.
    fn git_view(&self, root: &Path) -> Option<Arc<hash::git::GitView>> {
        let mut views = self.git_views.lock().unwrap_or_else(|p| p.into_inner());
        views
            .entry(root.to_path_buf())
            .or_insert_with(|| {
                let mut g = hash::git::GitView::open(root)?;
                match self.store.blob_digests(&g.blob_ids()) {
                    Ok(m) => g.set_memo(m),
                    Err(e) => tracing::warn!(error = %e, "could not read the git blob memo"),
                }
                Some(Arc::new(g))
            })
            .clone()
    }

    /// Hash a repository tree once per process (a consistent snapshot for the run).
    fn tree_root(&self, root: &Path, include: &[String], exclude: &[String]) -> Result<String, String> {
        let memo_key = (root.to_path_buf(), format!("{include:?}{exclude:?}"));
        if let Some(t) = self.memo.lock().ok().and_then(|m| m.get(&memo_key).cloned()) {
            return Ok(t);
        }
        let filter = Filter::new(include, exclude)?;
        let started = std::time::Instant::now();
        let git = self.git_view(root);
        let (t, lfs) = hash::hash_tree_git(root, &filter, &self.stats, &self.hash_stats, git.as_deref())
            .map_err(|e| format!("cannot hash inputs under {}: {e}", root.display()))?;
        if let Some(g) = &git {
            if let Err(e) = self.store.save_blob_digests(&g.take_learned()) {
                tracing::warn!(error = %e, "could not save the git blob memo");
            }
        }
        if !lfs.is_empty() {
            if let Ok(mut m) = self.lfs_inputs.lock() {
                m.insert(memo_key.clone(), lfs);
            }
        }
        self.hash_ns.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        for e in t.entries.iter().filter(|e| e.kind == hash::Kind::Symlink) {
            let Ok(to) = std::fs::read_link(root.join(&e.path)) else { continue };
            if link_leaves(&e.path, &to, root) {
                tracing::warn!(
                    "input tree {}: symlink {} -> {} points outside it: the cache key sees the link, not what it points at, so a change there still gives a cache hit",
                    root.display(),
                    e.path,
                    to.display()
                );
            }
        }
        if let Err(e) = self.store.put_tree(&t) {
            tracing::warn!(error = %e, "could not remember an input tree");
        }
        if let Ok(mut m) = self.memo.lock() {
            m.insert(memo_key, t.root.clone());
        }
        Ok(t.root)
    }
}

/// Whether symlink `link` (relative to `root`) with target `to` points outside `root`,
/// judged on the text alone (lexically, as the kernel resolves `..` after the link).
fn link_leaves(link: &str, to: &Path, root: &Path) -> bool {
    use std::path::Component;
    let mut at: Vec<&std::ffi::OsStr> = Vec::new();
    let start = if to.is_absolute() {
        match to.strip_prefix(root) {
            Ok(rest) => rest,
            Err(_) => return true,
        }
    } else {
        at.extend(Path::new(link).parent().into_iter().flat_map(|p| p.iter()));
        to
    };
    for c in start.components() {
        match c {
            // `..` climbs one level (the pop happens whether or not it leaves the root)
            Component::ParentDir if at.pop().is_none() => return true,
            Component::Normal(n) => at.push(n),
            _ => {}
        }
    }
    false
}

/// Everything needed to compute one TaskRun's key, gathered by the engine.
#[derive(Debug, Clone, Default)]
pub struct CacheJob {
    pub run: String,
    pub run_uid: String,
    /// The pipeline task (or TaskRun) name, `task[i]` for matrix children.
    pub task: String,
    /// The spec with stable context (run-unique values left unsubstituted).
    pub key_spec: TaskSpec,
    pub params: BTreeMap<String, Value>,
    /// (task workspace, host root, include globs, exclude globs) of repository inputs.
    pub inputs: Vec<(String, PathBuf, Vec<String>, Vec<String>)>,
    pub upstream_results: BTreeMap<String, Value>,
    pub upstream_outputs: BTreeMap<String, String>,
    pub workspaces: BTreeMap<String, String>,
    /// Declared outputs: (task workspace, relative path).
    pub outputs: Vec<(String, String)>,
    /// Why this task can never be cached, if so.
    pub uncacheable: Option<String>,
    /// Why this task is forced to run (`--no-cache`, `--rerun`).
    pub forced: Option<RerunReason>,
    /// Params that just pass a run param through: task param -> run param name.
    pub param_sources: BTreeMap<String, String>,
    /// [`EXECUTOR_INDEPENDENT_ANNOTATION`] is `"true"`.
    pub executor_independent: bool,
    /// This run's directory: run-unique, so replaced by a placeholder in the preimage
    /// (a consumer of a path result is the same task in every run).
    pub run_dir: Option<PathBuf>,
    /// `tenon.dev/publish`: (result, workspace, path) of outputs published as ModelKits.
    pub publish: Vec<(String, String, String)>,
}

/// What the cache decided for one TaskRun.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOutcome {
    /// Caching is off for this engine.
    Off,
    Hit {
        key: String,
        run: String,
        run_uid: String,
        created_ns: i64,
        /// Found in the shared cache: `produced by RUN on HOST, from oci://…`.
        remote: Option<String>,
    },
    /// Ran (or, planning, would run) because of `reasons`.
    Miss {
        key: String,
        reasons: Vec<RerunReason>,
    },
    Uncacheable {
        reason: String,
    },
    /// Planning: the key depends on a task that must run first.
    After {
        task: String,
    },
}

impl CacheOutcome {
    /// A hit on `rec` (`remote`: where the shared cache's copy came from).
    pub fn hit(rec: &Record, remote: Option<String>) -> Self {
        CacheOutcome::Hit {
            key: rec.key.clone(),
            run: rec.run.clone(),
            run_uid: rec.run_uid.clone(),
            created_ns: rec.created_ns,
            remote,
        }
    }
    pub fn key(&self) -> Option<&str> {
        match self {
            CacheOutcome::Hit { key, .. } | CacheOutcome::Miss { key, .. } => Some(key),
            _ => None,
        }
    }
    pub fn reasons(&self) -> Vec<String> {
        match self {
            CacheOutcome::Off => vec![],
            CacheOutcome::Hit { remote: Some(from), .. } => vec![format!("cached: {from}")],
            CacheOutcome::Hit { run, run_uid, .. } => {
                vec![format!("cached: produced by {run} ({})", &run_uid[..run_uid.len().min(8)])]
            }
            CacheOutcome::Miss { reasons, .. } => reasons.iter().map(|r| r.to_string()).collect(),
            CacheOutcome::Uncacheable { reason } => vec![format!("not cacheable: {reason}")],
            CacheOutcome::After { task } => vec![format!("run (after {task})")],
        }
    }
}

/// Keep only the params `spec` (before substitution) can use: declared by it or referenced
/// anywhere in it (an embedded spec receives every pipeline param by propagation, but only
/// the ones it mentions can change what it does; an undeclared param passed to a Task is
/// never substituted). Any other param stays out of the key, so changing it does not rerun
/// the task.
pub fn retain_used_params(job: &mut CacheJob, spec: &TaskSpec) {
    let mut text = String::new();
    crate::util::for_each_string(spec, &mut |s| {
        text.push_str(s);
        text.push('\n');
    });
    // over-inclusive on purpose (`params.a` also matches `params.ab`): a param kept that
    // need not be costs a rerun, one dropped that is used would be a false hit
    let referenced = |k: &str| {
        [format!("params.{k}"), format!("params[\"{k}\"]"), format!("params['{k}']")].iter().any(|f| text.contains(f))
    };
    job.params.retain(|k, _| spec.params.iter().any(|d| &d.name == k) || referenced(k));
}

/// Compute the key of a job (hashing its inputs).
pub fn compute(ctx: &CacheCtx, job: &CacheJob) -> Result<Preimage, String> {
    let mut inputs = BTreeMap::new();
    for (ws, root, inc, exc) in &job.inputs {
        inputs.insert(ws.clone(), ctx.tree_root(root, inc, exc)?);
    }
    let mut spec = serde_json::to_value(&job.key_spec).map_err(|e| e.to_string())?;
    // param declarations are covered by `params`; descriptions never change behaviour
    if let Value::Object(m) = &mut spec {
        m.remove("description");
        m.remove("displayName");
    }
    // the record keeps the preimage as the key saw it: every map in sorted order
    crate::cache::canonicalize(&mut spec);
    let params = job
        .params
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            crate::cache::canonicalize(&mut v);
            (k.clone(), v)
        })
        .collect();
    let mut images = BTreeMap::new();
    if !ctx.image_digests.is_empty() {
        let spec = &job.key_spec;
        for s in spec.steps.iter().chain(spec.sidecars.iter()).chain(spec.step_template.iter()) {
            if let Some(img) = s.image.as_deref().filter(|i| !i.contains('@')) {
                if let Some(d) = ctx.image_digests.get(&crate::exec::common::normalize_image(img)) {
                    images.insert(img.to_string(), d.clone());
                }
            }
        }
    }
    let pre = Preimage {
        version: KEY_SCHEMA_VERSION,
        executor: if job.executor_independent { "any".into() } else { ctx.executor.clone() },
        images,
        spec,
        params,
        inputs,
        upstream_results: job.upstream_results.clone(),
        upstream_outputs: job.upstream_outputs.clone(),
        workspaces: job.workspaces.clone(),
        outputs: job.outputs.iter().map(|(w, p)| format!("{w}:{p}")).collect(),
        // a published result is a reference into this repository, not the task's own value:
        // records with and without it (or for another registry) are different
        publish: match &ctx.remote {
            Some(r) => job.publish.iter().map(|(res, _, _)| (res.clone(), r.model_repo(&job.task))).collect(),
            None => BTreeMap::new(),
        },
    };
    match &job.run_dir {
        Some(dir) => {
            let text = serde_json::to_string(&pre).map_err(|e| e.to_string())?;
            let dir = dir.display().to_string();
            if dir.len() > 1 && text.contains(&dir) {
                serde_json::from_str(&text.replace(&dir, "$(tenon.runDir)")).map_err(|e| e.to_string())
            } else {
                Ok(pre)
            }
        }
        None => Ok(pre),
    }
}

/// Why `key` (of `pre`) misses: compared with the latest record of the same task.
pub fn miss_reasons(ctx: &CacheCtx, job: &CacheJob, pre: &Preimage, key: &str) -> Vec<RerunReason> {
    if let Some(f) = &job.forced {
        return vec![f.clone()];
    }
    // the key is recorded, but its outputs cannot be restored (missing, damaged, older format)
    if let Ok(Some(why)) = ctx.store.unusable(key) {
        return vec![RerunReason::Unusable(why)];
    }
    match ctx.store.latest_for(&job.run, &job.task) {
        Ok(Some(rec)) => match serde_json::from_value::<Preimage>(rec.preimage.clone()) {
            Ok(old) => {
                let mut reasons = explain(&old, pre, &|root| ctx.store.get_tree(root).ok().flatten());
                // name the run param the user changed, when a task param just passes it on
                for r in reasons.iter_mut() {
                    if let RerunReason::ParamChanged { name, from, .. } = r {
                        *from = job.param_sources.get(name.as_str()).cloned();
                    }
                }
                reasons
            }
            Err(_) => vec![RerunReason::OtherSchemaRecord],
        },
        Ok(None) => vec![RerunReason::NoEarlierRecord],
        Err(e) => vec![RerunReason::EarlierUnreadable(e.to_string())],
    }
}

/// Host path of a declared output.
pub fn output_path(req: &TaskRunRequest, ws: &str, rel: &str) -> Result<PathBuf, String> {
    let w = req
        .workspaces
        .iter()
        .find(|w| w.name == ws)
        .ok_or_else(|| format!("output {ws}:{rel}: the task has no workspace {ws:?}"))?;
    let root = w.path.as_ref().ok_or_else(|| format!("output {ws}:{rel}: workspace {ws:?} is not bound"))?;
    // the output itself may be a symlink (stored as one); the directories on its way
    // must stay inside the workspace
    crate::engine::workspaces::join_sub_but_last(root, rel.trim_end_matches('/')).map_err(|f| f.message)
}

/// Results that mention this attempt's workspace paths are stored with
/// `$(workspaces.NAME.path)` in their place, and given the current paths on reuse, so a
/// cached result never points into another run's directories.
pub fn portable_results(results: &BTreeMap<String, ParamValue>, req: &TaskRunRequest) -> BTreeMap<String, ParamValue> {
    let mut paths: Vec<(String, String)> = req
        .workspaces
        .iter()
        .filter_map(|w| w.path.as_ref().map(|p| (p.display().to_string(), format!("$(workspaces.{}.path)", w.name))))
        .filter(|(p, _)| p.len() > 1)
        .collect();
    // longest first, so nested workspaces are replaced by the most specific one
    paths.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    let fix = |s: &str| paths.iter().fold(s.to_string(), |acc, (p, token)| acc.replace(p, token));
    map_results(results, &fix)
}

/// The inverse of [`portable_results`] for the current attempt.
pub fn localize_results(results: &BTreeMap<String, ParamValue>, req: &TaskRunRequest) -> BTreeMap<String, ParamValue> {
    let mut vars = crate::model::subst::Vars::new();
    for w in &req.workspaces {
        vars.set_str(
            format!("workspaces.{}.path", w.name),
            w.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        );
    }
    let fix = |s: &str| if s.contains("$(workspaces.") { vars.apply_str(s) } else { s.to_string() };
    map_results(results, &fix)
}

fn map_results(results: &BTreeMap<String, ParamValue>, f: &dyn Fn(&str) -> String) -> BTreeMap<String, ParamValue> {
    results
        .iter()
        .map(|(k, v)| {
            let nv = match v {
                ParamValue::Str(s) => ParamValue::Str(f(s)),
                ParamValue::Array(a) => ParamValue::Array(a.iter().map(|s| f(s)).collect()),
                ParamValue::Object(o) => ParamValue::Object(o.iter().map(|(k, s)| (k.clone(), f(s))).collect()),
            };
            (k.clone(), nv)
        })
        .collect()
}

/// Restore a hit's outputs into the task's workspaces.
pub fn restore(ctx: &CacheCtx, rec: &Record, req: &TaskRunRequest) -> Result<(), String> {
    for o in &rec.outputs {
        let dest = output_path(req, &o.workspace, &o.path)?;
        ctx.store.restore_output(&o.tree, &dest).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            format!("cannot restore output {}:{}: {e}{cause}", o.workspace, o.path)
        })?;
    }
    Ok(())
}

/// Step name -> the image digest the executor reported (`imageID`), for the record.
pub fn observed_images(steps: &[crate::exec::StepOutcome]) -> BTreeMap<String, String> {
    steps.iter().filter_map(|s| Some((s.name.clone(), s.image_id.clone()?))).collect()
}

/// Store a success's outputs and commit its record.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &CacheCtx,
    job: &CacheJob,
    key: &str,
    pre: &Preimage,
    req: &TaskRunRequest,
    results: &BTreeMap<String, ParamValue>,
    duration_ms: u64,
    images: &BTreeMap<String, String>,
) -> Result<Vec<OutputSet>, String> {
    if ctx.store_failed() {
        return Err("not recorded: the store failed earlier in this run".into());
    }
    let mut outputs = Vec::new();
    for (ws, rel) in &job.outputs {
        let src = output_path(req, ws, rel)?;
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(format!("declared output {ws}:{rel} was not produced ({} does not exist)", src.display()));
        }
        let tree = ctx
            .store
            .store_output(&src)
            .map_err(|e| ctx.store_error(&format!("cannot store output {ws}:{rel}"), &e))?;
        outputs.push(OutputSet { workspace: ws.clone(), path: rel.clone(), tree, format: OUTPUT_FORMAT });
    }
    let rec = Record {
        key: key.to_string(),
        run: job.run.clone(),
        run_uid: job.run_uid.clone(),
        task: job.task.clone(),
        created_ns: hash::now_ns(),
        duration_ms,
        preimage: {
            let mut v = serde_json::to_value(pre).map_err(|e| e.to_string())?;
            // what the executor resolved the images to: recorded, not part of the key
            if !images.is_empty() {
                v["observedImages"] = serde_json::json!(images);
            }
            v
        },
        results: portable_results(results, req),
        outputs: outputs.clone(),
    };
    ctx.store.put(&rec).map_err(|e| ctx.store_error("cannot record the result", &e))?;
    Ok(outputs)
}

/// Fill a job from a task's annotations and its workspace bindings
/// `(task workspace, run binding, subPath)`; `describe` says what backs a run binding.
/// Returns the run bindings that are shared writable volumes (`volumeClaimTemplate`);
/// with `shared_needs_outputs`, a task writing one without declared outputs is not cacheable.
#[allow(clippy::too_many_arguments)]
pub fn apply_bindings(
    job: &mut CacheJob,
    ann: &dyn Fn(&str) -> Option<String>,
    bindings: &[(String, String, Option<String>)],
    describe: &dyn Fn(&str) -> String,
    req: &TaskRunRequest,
    shared_needs_outputs: bool,
    never_inputs: &[PathBuf],
) -> BTreeSet<String> {
    let include = ann(INPUTS_ANNOTATION).map(|v| entries(&v)).unwrap_or_default();
    let exclude = ann(EXCLUDE_ANNOTATION).map(|v| entries(&v)).unwrap_or_default();
    for o in ann(OUTPUTS_ANNOTATION).map(|v| entries(&v)).unwrap_or_default() {
        match parse_output(&o) {
            Ok((w, _)) if !req.workspaces.iter().any(|b| b.name == w) => {
                let why = output_workspace_unknown(&o, &w, req.workspaces.iter().map(|b| b.name.as_str()));
                job.uncacheable = Some(format!("{OUTPUTS_ANNOTATION} {why}"));
            }
            Ok(wp) => job.outputs.push(wp),
            Err(why) => job.uncacheable = Some(format!("{OUTPUTS_ANNOTATION} {why}")),
        }
    }
    for e in ann(PUBLISH_ANNOTATION).map(|v| entries(&v)).unwrap_or_default() {
        match parse_publish(&e) {
            Ok((r, w, p)) if job.outputs.iter().any(|(ow, op)| ow == &w && op == &p) => job.publish.push((r, w, p)),
            Ok((_, w, p)) => {
                job.uncacheable = Some(format!(
                    "{PUBLISH_ANNOTATION} entry {e:?}: {w}:{p} is not one of the task's {OUTPUTS_ANNOTATION}"
                ))
            }
            Err(why) => job.uncacheable = Some(format!("{PUBLISH_ANNOTATION} {why}")),
        }
    }
    job.executor_independent = ann(EXECUTOR_INDEPENDENT_ANNOTATION).as_deref() == Some("true");
    // only a cluster's envFrom is left in the spec (locally it is resolved from the
    // repository's objects and keyed by their content)
    let spec = &job.key_spec;
    if spec.steps.iter().chain(spec.sidecars.iter()).chain(spec.step_template.iter()).any(|s| !s.env_from.is_empty()) {
        job.uncacheable =
            Some("envFrom reads the cluster's ConfigMaps/Secrets, whose content tenon does not track".into());
    }
    if ann(CACHE_ANNOTATION).as_deref() == Some("false") {
        job.uncacheable = Some(format!("{CACHE_ANNOTATION}: \"false\""));
    }
    let mut shared = BTreeSet::new();
    for (tname, run_name, sub) in bindings {
        let what = describe(run_name);
        let shown = match sub {
            Some(s) if !s.is_empty() => format!("{what} (subPath {s})"),
            _ => what.clone(),
        };
        job.workspaces.insert(tname.clone(), shown);
        let bound = req.workspaces.iter().find(|w| &w.name == tname);
        if what == "repo" {
            if let Some(path) = bound.and_then(|w| w.path.clone()) {
                // promotion targets and the ledger are never inputs: tenon's own commits
                // must not make tasks rerun
                let mut exclude = exclude.clone();
                for p in never_inputs {
                    if let Ok(rel) = p.strip_prefix(&path) {
                        exclude.push(rel.display().to_string());
                    }
                }
                job.inputs.push((tname.clone(), path, include.clone(), exclude));
            }
        } else if what.starts_with("persistentVolumeClaim") {
            job.uncacheable.get_or_insert(format!(
                "binds workspace {tname:?} to a persistentVolumeClaim, whose content tenon does not track"
            ));
        } else if what == "volumeClaimTemplate" && shared_needs_outputs {
            shared.insert(run_name.clone());
            let read_only = bound.is_some_and(|w| w.read_only);
            if !read_only && !job.outputs.iter().any(|(w, _)| w == tname) {
                job.uncacheable.get_or_insert(format!(
                    "writes to shared workspace {tname:?} without declaring {OUTPUTS_ANNOTATION} (e.g. \"{tname}:path/\")"
                ));
            }
        }
    }
    shared
}

/// `--no-cache` / `--rerun NAME` force a job to run.
pub fn apply_forced(job: &mut CacheJob, ctx: &CacheCtx, name: &str) {
    if ctx.no_cache {
        job.forced = Some(RerunReason::Forced { rerun: None });
    } else if ctx.rerun.contains(name) {
        job.forced = Some(RerunReason::Forced { rerun: Some(name.to_string()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::BoundWorkspace;

    fn req(spec: TaskSpec) -> TaskRunRequest {
        TaskRunRequest {
            name: "t".into(),
            label: "t".into(),
            spec,
            workspaces: vec![BoundWorkspace {
                name: "work".into(),
                path: Some("/tmp/w".into()),
                read_only: false,
                claim: String::new(),
                kind: "emptyDir".into(),
            }],
            timeout: None,
            attempt: 0,
            dir: "/tmp/d".into(),
            max_result_size: 4096,
            volumes: Default::default(),
        }
    }

    fn bind(outputs: &str, spec: TaskSpec) -> CacheJob {
        let mut job = CacheJob { key_spec: spec.clone(), ..Default::default() };
        let ann = |n: &str| (n == OUTPUTS_ANNOTATION).then(|| outputs.to_string());
        let bindings = [("work".to_string(), "work".to_string(), None)];
        apply_bindings(&mut job, &ann, &bindings, &|_| "emptyDir".into(), &req(spec), true, &[]);
        job
    }

    /// An output path that leaves its workspace, or names a workspace the task lacks, makes
    /// the task not cacheable (`plan` says why) instead of failing to record forever.
    #[test]
    fn invalid_outputs_are_not_cacheable_with_the_reason() {
        for (entry, why) in [
            ("work:../", "must stay inside workspace \"work\""),
            ("work:/etc/", "must be relative to workspace \"work\""),
            ("work:out/../../x", "must stay inside workspace \"work\""),
            ("nope:out/", "names workspace \"nope\", which the task does not have (it has: work)"),
            ("out/", "is not workspace:path"),
        ] {
            let job = bind(entry, TaskSpec::default());
            let got = job.uncacheable.unwrap_or_default();
            assert!(got.starts_with(OUTPUTS_ANNOTATION) && got.contains(why), "{entry}: {got}");
            assert!(job.outputs.is_empty(), "{entry}");
        }
        let job = bind("work:model/", TaskSpec::default());
        assert_eq!(job.uncacheable, None);
        assert_eq!(job.outputs, vec![("work".to_string(), "model/".to_string())]);
    }

    /// `envFrom` left in the key's spec (a cluster resolves it from the namespace) is
    /// never cached; locally it has been resolved into `env` by then.
    #[test]
    fn unresolved_env_from_is_not_cacheable() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "steps": [{"name": "s", "envFrom": [{"configMapRef": {"name": "c"}}]}]
        }))
        .unwrap();
        assert!(bind("", spec).uncacheable.is_some_and(|r| r.contains("envFrom")));
    }

    #[test]
    fn unused_propagated_params_leave_the_key() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "params": [{"name": "declared"}],
            "steps": [{"name": "s", "script": "echo $(params.used) $(params[\"quoted\"]) $(params.obj.key)"}]
        }))
        .unwrap();
        let mut job = CacheJob::default();
        for k in ["declared", "used", "quoted", "obj", "unused"] {
            job.params.insert(k.into(), Value::String("v".into()));
        }
        retain_used_params(&mut job, &spec);
        assert_eq!(job.params.keys().collect::<Vec<_>>(), ["declared", "obj", "quoted", "used"]);
    }

    #[test]
    fn symlinks_leaving_an_input_tree() {
        let root = Path::new("/repo/src");
        let leaves = |link: &str, to: &str| link_leaves(link, Path::new(to), root);
        assert!(leaves("a", "/etc/passwd"));
        assert!(leaves("a", "../data"));
        assert!(leaves("d/a", "../../x"));
        assert!(!leaves("d/a", "../x"));
        assert!(!leaves("a", "b/c"));
        assert!(!leaves("a", "/repo/src/b"));
        assert!(leaves("d/a", "x/../../../y"));
    }
}
