//! The local executor: each step is a child process on this host, in its own process
//! group, with a clean environment. `image` is recorded, not used.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::common::{
    collect_results, failed, finish, image_default_command, parse_typed, path_vars, step_container_name,
    substitute_step, Layout, KNOWN_IMAGES,
};
use super::{
    AttemptFailure, AttemptStatus, BoundWorkspace, BoxFuture, Executor, StepOutcome, TaskOutcome, TaskRunRequest,
};
use crate::model::subst::Vars;
use crate::model::{parse_duration, ParamValue, Step, TaskSpec};
use crate::ui::Console;

mod process;
mod sandbox;

use process::*;
pub use process::{kill_marked, STEP_MARKER};
pub use sandbox::{HOST_DIRS, HOST_ETC};

/// PATH given to steps unless the user passes their own through.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub struct LocalExecutor {
    /// Host environment variables passed to steps (`--pass-env`).
    pub pass_env: Vec<(String, String)>,
    pub console: Arc<Console>,
    /// How steps are isolated (see [`Sandbox`]).
    pub sandbox: Sandbox,
    /// Why steps run with host paths (no sandbox), said when a task uses pod paths.
    pub host_reason: Option<String>,
    /// Host directories the sandbox hides even inside a bound directory (the store, when it
    /// lives in the repository).
    pub hidden: Vec<PathBuf>,
    warned_images: Mutex<HashSet<String>>,
    warned_pod_paths: std::sync::atomic::AtomicBool,
}

/// How the local executor lays out a step's filesystem.
///
/// - `Host`: steps see host paths: `$(results.x.path)` is a file in the TaskRun
///   directory, `$(workspaces.w.path)` the workspace's host directory.
/// - `Bwrap`: each step runs under bubblewrap in private mount, PID and IPC namespaces,
///   with the paths a Tekton pod has: `/tekton/results`, `/tekton/home`, `/tekton/steps`,
///   `/tekton/scripts`, `/workspace/<name>` (or the declared `mountPath`), Task `volumes`
///   at their `volumeMounts`. Of the host it sees only what an image would provide,
///   read-only ([`HOST_DIRS`], [`HOST_ETC`]); `/tmp` and `/var/tmp` are its own tmpfs,
///   the rest of the root is empty and read-only, so the store, other runs and the
///   host's files stay out of reach. When a step ends every process it started ends with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Sandbox {
    Host,
    Bwrap { bwrap: PathBuf, binds: Vec<String> },
}

/// `--sandbox` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// bubblewrap when it is installed and works here, else host paths.
    Auto,
    Bwrap,
    Host,
}

impl LocalExecutor {
    pub fn new(pass_env: Vec<(String, String)>, console: Arc<Console>) -> Self {
        LocalExecutor {
            pass_env,
            console,
            sandbox: Sandbox::Host,
            host_reason: None,
            hidden: Vec::new(),
            warned_images: Mutex::new(HashSet::new()),
            warned_pod_paths: Default::default(),
        }
    }

    /// Directories steps must never see in the sandbox, wherever they are bound from.
    pub fn hiding(mut self, dirs: Vec<PathBuf>) -> Self {
        self.hidden = dirs.into_iter().map(|d| d.canonicalize().unwrap_or(d)).collect();
        self
    }

    /// Why there is no sandbox (`--sandbox host`, or bubblewrap missing or not working).
    pub fn with_host_reason(mut self, why: Option<String>) -> Self {
        self.host_reason = why;
        self
    }

    /// Without the sandbox, Tekton's pod paths do not exist: what to say when a step that
    /// refers to them fails (and, once per process, when the first such task starts).
    fn pod_path_hint(&self, req: &TaskRunRequest, steps: &[&Step]) -> Option<String> {
        if self.sandbox.is_bwrap() {
            return None;
        }
        let used = pod_paths_in(steps);
        let first = used.first()?;
        let why = self.host_reason.clone().unwrap_or_else(|| "steps run with host paths".into());
        let hint = format!(
            "{first}: Tekton's pod paths exist only in the bwrap sandbox, not used here ({why}); install bubblewrap (apt-get install bubblewrap) and use the default --sandbox auto, or refer to $(workspaces.<name>.path), $(results.<name>.path) and $HOME, which --sandbox host maps to host paths"
        );
        if !self.warned_pod_paths.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.console.line(&format!("{} {}: {hint}", self.console.yellow("!"), req.label));
        }
        Some(hint)
    }

    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    fn note_image(&self, image: &str) {
        let mut seen = self.warned_images.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(image.to_string()) {
            tracing::info!(image, "image is recorded, not used: the local executor runs steps on this host");
        }
    }
}

impl Executor for LocalExecutor {
    fn run<'a>(&'a self, req: TaskRunRequest, cancel: CancellationToken) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut out = match run_task(self, &req, &cancel).await {
                Ok(o) => o,
                Err(msg) => TaskOutcome {
                    status: AttemptStatus::Failed,
                    reason: "TaskRunValidationFailed".into(),
                    message: msg,
                    results: BTreeMap::new(),
                    steps: vec![],
                    duration: Duration::ZERO,
                },
            };
            out.duration = start.elapsed();
            out
        })
    }
}

/// The Tekton pod paths (`/tekton/...`, `/workspace...`) that steps spell out literally.
fn pod_paths_in(steps: &[&Step]) -> Vec<String> {
    let text = serde_json::to_string(steps).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for start in ["/tekton/", "/workspace"] {
        for (i, _) in text.match_indices(start) {
            // a path of its own, not the tail of a host path like /home/me/workspace
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || "._-/$".contains(c)) {
                continue;
            }
            let path: String = text[i..].chars().take_while(|c| c.is_alphanumeric() || "/._-".contains(*c)).collect();
            if (start == "/workspace" && !(path == "/workspace" || path.starts_with("/workspace/")))
                || out.contains(&path)
            {
                continue;
            }
            out.push(path);
        }
    }
    out
}

struct Dirs {
    results: PathBuf,
    steps: PathBuf,
    home: PathBuf,
    scripts: PathBuf,
    work: PathBuf,
    logs: PathBuf,
}

fn mkdirs(base: &Path) -> Result<Dirs, String> {
    let d = Dirs {
        results: base.join("results"),
        steps: base.join("steps"),
        home: base.join("home"),
        scripts: base.join("scripts"),
        work: base.join("workspace"),
        logs: base.join("logs"),
    };
    for p in [&d.results, &d.steps, &d.home, &d.scripts, &d.work, &d.logs] {
        std::fs::create_dir_all(p).map_err(|e| format!("cannot create run directory {}: {e}", p.display()))?;
    }
    Ok(d)
}

impl Layout {
    fn new(d: &Dirs, sandbox: bool) -> Layout {
        if sandbox {
            Layout::pod()
        } else {
            Layout {
                sandbox,
                results: d.results.clone(),
                steps: d.steps.clone(),
                home: d.home.clone(),
                scripts: d.scripts.clone(),
                work: d.work.clone(),
            }
        }
    }

    /// The host path behind a pod path (identity outside the pod's own mounts).
    fn host_path(&self, d: &Dirs, spec: &TaskSpec, ws: &[BoundWorkspace], p: &Path) -> PathBuf {
        let mut pairs: Vec<(PathBuf, PathBuf)> = vec![
            (self.results.clone(), d.results.clone()),
            (self.steps.clone(), d.steps.clone()),
            (self.home.clone(), d.home.clone()),
            (self.scripts.clone(), d.scripts.clone()),
            (self.work.clone(), d.work.clone()),
        ];
        for w in ws {
            if let (Some(h), Some(at)) = (&w.path, self.workspace(spec, w)) {
                pairs.push((PathBuf::from(at), h.clone()));
            }
        }
        pairs.sort_by_key(|(pod, _)| std::cmp::Reverse(pod.as_os_str().len()));
        for (pod, host) in pairs {
            if let Ok(rel) = p.strip_prefix(&pod) {
                return host.join(rel);
            }
        }
        p.to_path_buf()
    }

    /// bwrap binds of one TaskRun (host dir -> pod path), parents before children.
    fn binds(
        &self,
        d: &Dirs,
        req: &TaskRunRequest,
        step: &Step,
        cname: &str,
        hidden: &[PathBuf],
    ) -> Result<Vec<String>, String> {
        let (spec, ws, volumes) = (&req.spec, &req.workspaces, &req.volumes);
        // /tekton/steps is read-only to steps, except a step's own results directory
        let own_results = d.steps.join(cname).join("results");
        let _ = std::fs::create_dir_all(&own_results);
        let mut b: Vec<(String, String, bool)> = vec![
            (d.work.display().to_string(), "/workspace".into(), false),
            (d.results.display().to_string(), "/tekton/results".into(), false),
            (d.steps.display().to_string(), "/tekton/steps".into(), true),
            (own_results.display().to_string(), format!("/tekton/steps/{cname}/results"), false),
            (d.home.display().to_string(), "/tekton/home".into(), false),
            (d.scripts.display().to_string(), "/tekton/scripts".into(), true),
        ];
        // isolated workspaces: once any step or sidecar lists a workspace, only those
        // containers see it (at their own mountPath when given)
        let listed = |name: &str| {
            spec.steps.iter().chain(spec.sidecars.iter()).any(|s| s.workspaces.iter().any(|u| u.name == name))
        };
        for w in ws {
            if let (Some(host), Some(at)) = (&w.path, self.workspace(spec, w)) {
                if listed(&w.name) {
                    match step.workspaces.iter().find(|u| u.name == w.name) {
                        Some(u) => b.push((
                            host.display().to_string(),
                            u.mount_path.clone().filter(|m| !m.is_empty()).unwrap_or(at),
                            w.read_only,
                        )),
                        None => continue,
                    }
                } else {
                    b.push((host.display().to_string(), at, w.read_only));
                }
            }
        }
        for m in &step.volume_mounts {
            // `$(workspaces.w.volume)` names a workspace's volume: `ws-<name>`
            let ws_volume =
                m.name.strip_prefix("ws-").and_then(|n| ws.iter().find(|w| w.name == n)).and_then(|w| w.path.as_ref());
            let Some(host) = volumes.get(&m.name).or(ws_volume) else {
                return Err(format!("volumeMount {:?}: no volume named {:?} in the Task", m.mount_path, m.name));
            };
            let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) => crate::util::join_sub(host, sp)?,
                None => host.clone(),
            };
            b.push((host.display().to_string(), m.mount_path.clone(), m.read_only));
        }
        b.sort_by_key(|(_, at, _)| at.matches('/').count());
        // a hidden directory inside a bound one (the store in the repository) is covered by
        // an empty tmpfs, after the binds
        let masks: Vec<String> = b
            .iter()
            .flat_map(|(h, at, _)| hidden.iter().filter_map(move |x| Some(Path::new(at).join(x.strip_prefix(h).ok()?))))
            .flat_map(|at| ["--tmpfs".to_string(), at.display().to_string()])
            .collect();
        Ok(b.into_iter()
            .flat_map(|(h, at, ro)| [if ro { "--ro-bind".to_string() } else { "--bind".to_string() }, h, at])
            .chain(masks)
            .collect())
    }
}

/// Run one attempt of a task on this host: lay out Tekton's step directories, start the
/// sidecars, run the steps in order (after a failure the rest are skipped), stop the
/// sidecars, and gather the outcome.
async fn run_task(ex: &LocalExecutor, req: &TaskRunRequest, cancel: &CancellationToken) -> Result<TaskOutcome, String> {
    let d = mkdirs(&req.dir)?;
    let deadline = req.timeout.filter(|t| !t.is_zero()).map(|t| Instant::now() + t);
    let layout = Layout::new(&d, ex.sandbox.is_bwrap());
    // /tekton/steps/<index> -> step-<name>, as Tekton lays it out
    link_step_dirs(&req.spec.steps, &d);
    let pvars = path_vars(&req.spec, &layout, &req.workspaces);
    let _ = ex.pod_path_hint(req, &req.spec.steps.iter().chain(&req.spec.sidecars).collect::<Vec<_>>());
    // a failing step that names pod paths says why they are missing
    let hint = |step: &Step| ex.pod_path_hint(req, &[step]).map(|h| format!(" ({h})")).unwrap_or_default();

    // sidecars: background processes for the life of the steps
    let mut sidecars = match start_sidecars(ex, req, &d, &layout, &pvars, cancel).await {
        Ok(s) => s,
        Err((reason, message)) => return Ok(failed(reason, message, vec![])),
    };

    let mut steps_out = Vec::new();
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    let mut step_results: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut failure: Option<(AttemptStatus, String, String)> = None;

    for (i, raw) in req.spec.steps.iter().enumerate() {
        let cname = step_container_name(raw, i);
        let sname = raw.name.clone().unwrap_or_else(|| format!("unnamed-{i}"));
        let sdir = d.steps.join(&cname);
        let log = d.logs.join(format!("{cname}.log"));
        let _ = std::fs::create_dir_all(sdir.join("results"));
        if failure.is_some() {
            let _ = std::fs::write(sdir.join("exitCode"), "1");
            steps_out.push(step_outcome(sname, "Skipped", None, 0, log));
            continue;
        }
        let mut step = substitute_step(raw, &step_vars(&pvars, raw, &layout, &cname));
        // step results of earlier steps: runtime values, in env/command/args/when only
        let rt = apply_step_results(&mut step, &step_results);
        // step-level when
        if !step_when_holds(&step, &rt, &sname, &mut failure) {
            let _ = std::fs::write(sdir.join("exitCode"), "0");
            steps_out.push(step_outcome(sname, "Skipped", Some(0), 0, log));
            continue;
        }
        if let Some(img) = &step.image {
            ex.note_image(img);
        }
        let step_timeout = step.timeout.as_deref().and_then(parse_duration).filter(|t| !t.is_zero());
        let started = Instant::now();
        let step_deadline = match (step_timeout.map(|t| started + t), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (mut child, readers, marker) = match spawn(ex, req, &d, &layout, &step, &cname) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::write(sdir.join("exitCode"), "1");
                steps_out.push(step_outcome(sname.clone(), "Error", None, 0, log));
                failure = Some((
                    AttemptStatus::Failed,
                    "Failed".into(),
                    format!("step {sname:?} could not start: {e}{}", hint(raw)),
                ));
                continue;
            }
        };
        let ended = wait_child(&mut child, step_deadline, cancel).await;
        let _ = tokio::task::spawn_blocking(move || kill_marked(&marker)).await;
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        let dur = started.elapsed().as_millis() as u64;
        let (reason, code) = match ended {
            Ended::Exited(code) => (None, code),
            Ended::TimedOut => (Some("timeout"), -1),
            Ended::Cancelled => (Some("cancel"), -1),
        };
        let _ = std::fs::write(sdir.join("exitCode"), code.to_string());
        // collect results after every step, success or not (last writer wins)
        if let Err(msg) = collect_results(&req.spec, &d.results, req.max_result_size, &mut results) {
            steps_out.push(step_outcome(sname, "Error", Some(code), dur, log));
            failure = Some((AttemptStatus::Failed, "TaskRunResultLargerThanAllowedLimit".into(), msg));
            continue;
        }
        step_results.insert(sname.clone(), read_step_results(raw, &sdir));
        let (term, exit_code, failed) =
            step_verdict(req, &step, &sname, &cname, (reason, code), deadline, || hint(raw));
        steps_out.push(step_outcome(sname, term, exit_code, dur, log));
        if failed.is_some() {
            failure = failed;
        }
    }
    kill_all(&mut sidecars).await;

    Ok(finish(&req.spec, results, &step_results, failure, steps_out))
}

/// How a step that ran ended: its termination reason, its exit code, and the failure it
/// causes the attempt. `reason` says why it was stopped, if it was (its own timeout or the
/// task's `deadline`, or cancellation); `hint` explains a failure that names pod paths.
fn step_verdict(
    req: &TaskRunRequest,
    step: &Step,
    sname: &str,
    cname: &str,
    (reason, code): (Option<&str>, i32),
    deadline: Option<Instant>,
    hint: impl FnOnce() -> String,
) -> (&'static str, Option<i32>, Option<AttemptFailure>) {
    match reason {
        Some("timeout") => {
            let whole = deadline.is_some_and(|dl| Instant::now() + Duration::from_millis(5) >= dl);
            let failure = if whole {
                req.timed_out()
            } else {
                (
                    AttemptStatus::Failed,
                    "Failed".into(),
                    format!("step {sname:?} exceeded its timeout of {}", step.timeout.clone().unwrap_or_default()),
                )
            };
            ("TimeoutExceeded", None, Some(failure))
        }
        Some(_) => ("Cancelled", None, Some(req.cancelled())),
        None if code == 0 => ("Completed", Some(0), None),
        None if step.on_error.as_deref() == Some("continue") => ("Continued", Some(code), None),
        None => (
            "Error",
            Some(code),
            Some((AttemptStatus::Failed, "Failed".into(), format!("\"{cname}\" exited with code {code}{}", hint()))),
        ),
    }
}

/// Lay out `/tekton/steps/<index>` -> `step-<name>` in `d.steps`, as Tekton does.
fn link_step_dirs(steps: &[Step], d: &Dirs) {
    for (i, s) in steps.iter().enumerate() {
        let cname = step_container_name(s, i);
        let _ = std::fs::create_dir_all(d.steps.join(&cname));
        let _ = std::os::unix::fs::symlink(&cname, d.steps.join(i.to_string()));
    }
}

/// Start the task's sidecars, background processes for the life of the steps. Each must be
/// ready before the next starts; if one cannot start or get ready, those already started
/// are stopped and the attempt fails with this reason and message.
async fn start_sidecars(
    ex: &LocalExecutor,
    req: &TaskRunRequest,
    d: &Dirs,
    layout: &Layout,
    pvars: &Vars,
    cancel: &CancellationToken,
) -> Result<Vec<(Child, String)>, (&'static str, String)> {
    let mut sidecars: Vec<(Child, String)> = Vec::new();
    for (i, sc) in req.spec.sidecars.iter().enumerate() {
        let sc = substitute_step(sc, pvars);
        let name = sc.name.clone().unwrap_or_else(|| format!("sidecar-{i}"));
        match spawn(ex, req, d, layout, &sc, &format!("sidecar-{name}")) {
            Ok((child, _, marker)) => sidecars.push((child, marker)),
            Err(e) => {
                kill_all(&mut sidecars).await;
                return Err(("Failed", format!("sidecar {name:?} could not start: {e}")));
            }
        }
        // step 0 waits until every sidecar is ready (its probe passes, or it has been
        // running a moment, or it already finished)
        if let Err(e) = wait_ready(ex, req, d, layout, &sc, &name, &mut sidecars, cancel).await {
            kill_all(&mut sidecars).await;
            return Err(("SidecarFailed", e));
        }
    }
    Ok(sidecars)
}

/// A step's outcome (its image is not known on this host).
fn step_outcome(name: String, reason: &str, exit_code: Option<i32>, duration_ms: u64, log: PathBuf) -> StepOutcome {
    StepOutcome { name, termination_reason: reason.into(), exit_code, duration_ms, log, image_id: None }
}

/// A step's variables: the task's `pvars` and the paths of the step's own results
/// (`$(step.results.<name>.path)`).
fn step_vars(pvars: &Vars, raw: &Step, layout: &Layout, cname: &str) -> Vars {
    let mut vars = pvars.clone();
    for r in &raw.results {
        vars.set_str(
            format!("step.results.{}.path", r.name),
            layout.steps.join(cname).join("results").join(&r.name).display().to_string(),
        );
    }
    vars
}

/// Substitute the step results of earlier steps (runtime values) into a step's command,
/// args and env; the variables, which its `when` expressions also see.
fn apply_step_results(step: &mut Step, step_results: &BTreeMap<String, BTreeMap<String, String>>) -> Vars {
    let mut rt = Vars::new();
    for (s, rs) in step_results {
        for (k, v) in rs {
            let val = parse_typed(v).unwrap_or(ParamValue::Str(v.clone()));
            rt.set(format!("steps.{s}.results.{k}"), val);
        }
    }
    if !rt.is_empty() {
        step.command = step.command.take().map(|c| rt.apply_list(&c));
        step.args = step.args.take().map(|a| rt.apply_list(&a));
        for e in &mut step.env {
            e.value = e.value.as_ref().map(|v| rt.apply_str(v));
        }
    }
    rt
}

/// Whether a step's `when` expressions all hold; one that cannot be evaluated sets the
/// attempt's `failure` and skips the step.
fn step_when_holds(step: &Step, rt: &Vars, sname: &str, failure: &mut Option<AttemptFailure>) -> bool {
    let mut when_ok = true;
    for w in &step.when {
        match crate::model::cel::when_holds(w, rt) {
            Ok(ok) => when_ok &= ok,
            Err(e) => {
                *failure = Some((AttemptStatus::Failed, "CELEvaluationFailed".into(), format!("step {sname:?}: {e}")));
                when_ok = false;
            }
        }
    }
    when_ok
}

/// The results a step wrote to its own `results` directory (`$(step.results.<name>.path)`).
fn read_step_results(raw: &Step, sdir: &Path) -> BTreeMap<String, String> {
    let mut mine = BTreeMap::new();
    for r in &raw.results {
        let p = sdir.join("results").join(&r.name);
        if let Ok(b) = std::fs::read(&p) {
            mine.insert(r.name.clone(), String::from_utf8_lossy(&b).to_string());
        }
    }
    mine
}

/// Kubernetes `$(VAR)` expansion in command/args from the container's env; `$$` escapes.
fn k8s_expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(rel) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + rel];
                    if let Some(v) = env.get(name) {
                        out.push_str(v);
                        i += rel + 3;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

type Readers = Vec<tokio::task::JoinHandle<()>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs() {
        assert_eq!(parse_shebang("#!/bin/sh\nx"), ("/bin/sh".into(), None));
        assert_eq!(parse_shebang("#!/usr/bin/env python3\n"), ("/usr/bin/env".into(), Some("python3".into())));
        assert_eq!(parse_shebang("  #!/bin/bash -eu\n"), ("/bin/bash".into(), Some("-eu".into())));
    }

    #[test]
    fn kubernetes_env_expansion() {
        let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(k8s_expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }
}
