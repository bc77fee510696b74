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
use super::{AttemptStatus, BoundWorkspace, BoxFuture, Executor, StepOutcome, TaskOutcome, TaskRunRequest};
use crate::model::{parse_duration, ParamValue, Step, TaskSpec};
use crate::subst::Vars;
use crate::ui::Console;

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

impl Sandbox {
    /// Pick a sandbox for `mode`; `Err` when bwrap was required but cannot be used.
    pub fn detect(mode: SandboxMode) -> Result<Sandbox, String> {
        if mode == SandboxMode::Host {
            return Ok(Sandbox::Host);
        }
        let found = std::env::var_os("TENON_BWRAP").map(PathBuf::from).or_else(|| {
            ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"].iter().map(PathBuf::from).find(|p| p.is_file())
        });
        let Some(bwrap) = found else {
            return match mode {
                SandboxMode::Bwrap => {
                    Err("--sandbox bwrap: bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
                        .into())
                }
                _ => Ok(Sandbox::Host),
            };
        };
        let sb = Sandbox::Bwrap { bwrap: bwrap.clone(), binds: host_binds() };
        // probe once: namespaces may be unavailable (containers without privileges)
        let mut probe = std::process::Command::new(&bwrap);
        probe.args(sb.prefix(&[])).arg("--").arg("/bin/true").stdout(Stdio::null()).stderr(Stdio::piped());
        match probe.output() {
            Ok(o) if o.status.success() => Ok(sb),
            Ok(o) if mode == SandboxMode::Bwrap => Err(format!(
                "--sandbox bwrap: bubblewrap does not work here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) if mode == SandboxMode::Bwrap => {
                Err(format!("--sandbox bwrap: cannot run {}: {e}", bwrap.display()))
            }
            _ => Ok(Sandbox::Host),
        }
    }

    /// [`Sandbox::detect`], remembering a successful bwrap probe in `state_dir` (keyed by
    /// the bwrap binary and the boot), so each invocation does not pay for a probe.
    pub fn detect_cached(mode: SandboxMode, state_dir: &Path) -> Result<Sandbox, String> {
        if mode == SandboxMode::Host {
            return Ok(Sandbox::Host);
        }
        let bwrap = std::env::var_os("TENON_BWRAP").map(PathBuf::from).or_else(|| {
            ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"].iter().map(PathBuf::from).find(|p| p.is_file())
        });
        let key = bwrap.as_ref().and_then(|b| {
            let m = std::fs::metadata(b).ok()?;
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            use std::os::unix::fs::MetadataExt;
            // "v2": the sandbox's arguments changed (read-only host, IPC namespace): probe again
            Some(format!("v2 {} {} {} {}", b.display(), m.mtime(), m.mtime_nsec(), boot.trim()))
        });
        let file = state_dir.join("sandbox-probe");
        if let (Some(k), Some(b)) = (&key, &bwrap) {
            if std::fs::read_to_string(&file).ok().as_deref() == Some(k.as_str()) {
                return Ok(Sandbox::Bwrap { bwrap: b.clone(), binds: host_binds() });
            }
        }
        let sb = Sandbox::detect(mode)?;
        if let (true, Some(k)) = (sb.is_bwrap(), key) {
            let _ = std::fs::write(&file, k);
        }
        Ok(sb)
    }

    /// Why `mode` gave host paths: the user's choice, or why bubblewrap cannot be used.
    pub fn host_reason(mode: SandboxMode) -> String {
        if mode == SandboxMode::Host {
            return "--sandbox host runs steps with host paths".into();
        }
        match Sandbox::detect(SandboxMode::Bwrap) {
            Err(e) => e.trim_start_matches("--sandbox bwrap: ").to_string(),
            Ok(_) => "bubblewrap was not usable when tenon started".into(),
        }
    }

    pub fn is_bwrap(&self) -> bool {
        matches!(self, Sandbox::Bwrap { .. })
    }

    /// bwrap arguments before the per-step binds.
    fn prefix(&self, extra: &[String]) -> Vec<String> {
        let Sandbox::Bwrap { binds, .. } = self else { return vec![] };
        let mut a: Vec<String> = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--tmpfs", "/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(binds.iter().cloned());
        a.extend(
            ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.extend(extra.iter().cloned());
        a
    }

    /// Whether a step sees host path `p` (outside the pod's own mounts) in this sandbox.
    fn sees(&self, p: &Path) -> bool {
        match self {
            Sandbox::Host => true,
            Sandbox::Bwrap { .. } => HOST_DIRS.iter().any(|d| p.starts_with(format!("/{d}"))),
        }
    }
}

/// Top-level host directories a step sees in the bwrap sandbox, read-only: the ones an
/// image provides (the merged-/usr links `/bin`, `/lib`, ... are recreated as links).
pub const HOST_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt"];

/// The entries of the host's `/etc` a step sees, read-only: users, name resolution,
/// certificates, the dynamic linker, locale and shell defaults, `alternatives` (what
/// `/usr/bin/python3` and friends point at). Never shadow files, ssh keys or credentials.
pub const HOST_ETC: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "gai.conf",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "magic",
    "magic.mime",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "resolv.conf",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
];

/// The host paths the bwrap sandbox binds (see [`HOST_DIRS`], [`HOST_ETC`]), all read-only.
fn host_binds() -> Vec<String> {
    let mut out = Vec::new();
    for n in HOST_DIRS {
        let p = format!("/{n}");
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&p) {
                    out.extend(["--symlink".to_string(), t.display().to_string(), p]);
                }
            }
            Ok(m) if m.is_dir() => out.extend(["--ro-bind".to_string(), p.clone(), p]),
            _ => {}
        }
    }
    out.extend(["--dir".to_string(), "/etc".to_string()]);
    let mut etc: Vec<String> = std::fs::read_dir("/etc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        // python3.11 and the like hold the interpreter's site configuration
        .filter(|n| HOST_ETC.contains(&n.as_str()) || n.starts_with("python3."))
        .collect();
    etc.sort();
    for n in etc {
        let p = format!("/etc/{n}");
        // a dangling link (resolv.conf of a resolver that is not running) is left out
        out.extend(["--ro-bind-try".to_string(), p.clone(), p]);
    }
    out.extend(["--ro-bind-try".to_string(), "/sys".to_string(), "/sys".to_string()]);
    out
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

async fn run_task(ex: &LocalExecutor, req: &TaskRunRequest, cancel: &CancellationToken) -> Result<TaskOutcome, String> {
    let d = mkdirs(&req.dir)?;
    let deadline = req.timeout.filter(|t| !t.is_zero()).map(|t| Instant::now() + t);
    let layout = Layout::new(&d, ex.sandbox.is_bwrap());
    // /tekton/steps/<index> -> step-<name>, as Tekton lays it out
    for (i, s) in req.spec.steps.iter().enumerate() {
        let cname = step_container_name(s, i);
        let _ = std::fs::create_dir_all(d.steps.join(&cname));
        let _ = std::os::unix::fs::symlink(&cname, d.steps.join(i.to_string()));
    }
    let pvars = path_vars(&req.spec, &layout, &req.workspaces);
    let _ = ex.pod_path_hint(req, &req.spec.steps.iter().chain(&req.spec.sidecars).collect::<Vec<_>>());
    // a failing step that names pod paths says why they are missing
    let hint = |step: &Step| ex.pod_path_hint(req, &[step]).map(|h| format!(" ({h})")).unwrap_or_default();

    // sidecars: background processes for the life of the steps
    let mut sidecars: Vec<(Child, String)> = Vec::new();
    for (i, sc) in req.spec.sidecars.iter().enumerate() {
        let sc = substitute_step(sc, &pvars);
        let name = sc.name.clone().unwrap_or_else(|| format!("sidecar-{i}"));
        match spawn(ex, req, &d, &layout, &sc, &format!("sidecar-{name}")) {
            Ok((child, _, marker)) => sidecars.push((child, marker)),
            Err(e) => {
                kill_all(&mut sidecars).await;
                return Ok(failed("Failed", format!("sidecar {name:?} could not start: {e}"), vec![]));
            }
        }
        // step 0 waits until every sidecar is ready (its probe passes, or it has been
        // running a moment, or it already finished)
        if let Err(e) = wait_ready(ex, req, &d, &layout, &sc, &name, &mut sidecars, cancel).await {
            kill_all(&mut sidecars).await;
            return Ok(failed("SidecarFailed", e, vec![]));
        }
    }

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
            steps_out.push(StepOutcome {
                name: sname,
                termination_reason: "Skipped".into(),
                exit_code: None,
                duration_ms: 0,
                log,
                image_id: None,
            });
            continue;
        }
        let mut vars = pvars.clone();
        for r in &raw.results {
            vars.set_str(
                format!("step.results.{}.path", r.name),
                layout.steps.join(&cname).join("results").join(&r.name).display().to_string(),
            );
        }
        let mut step = substitute_step(raw, &vars);
        // step results of earlier steps: runtime values, in env/command/args/when only
        let mut rt = Vars::new();
        for (s, rs) in &step_results {
            for (k, v) in rs {
                let val = parse_typed(v).unwrap_or(ParamValue::Str(v.clone()));
                rt.set(format!("steps.{s}.results.{k}"), val);
            }
        }
        if !rt.is_empty() {
            step.command = step.command.map(|c| rt.apply_list(&c));
            step.args = step.args.map(|a| rt.apply_list(&a));
            for e in &mut step.env {
                e.value = e.value.as_ref().map(|v| rt.apply_str(v));
            }
        }
        // step-level when
        let mut when_ok = true;
        for w in &step.when {
            match crate::cel::when_holds(w, &rt) {
                Ok(ok) => when_ok &= ok,
                Err(e) => {
                    failure =
                        Some((AttemptStatus::Failed, "CELEvaluationFailed".into(), format!("step {sname:?}: {e}")));
                    when_ok = false;
                }
            }
        }
        if !when_ok {
            let _ = std::fs::write(sdir.join("exitCode"), "0");
            steps_out.push(StepOutcome {
                name: sname,
                termination_reason: "Skipped".into(),
                exit_code: Some(0),
                duration_ms: 0,
                log,
                image_id: None,
            });
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
                steps_out.push(StepOutcome {
                    name: sname.clone(),
                    termination_reason: "Error".into(),
                    exit_code: None,
                    duration_ms: 0,
                    log,
                    image_id: None,
                });
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
            steps_out.push(StepOutcome {
                name: sname,
                termination_reason: "Error".into(),
                exit_code: Some(code),
                duration_ms: dur,
                log,
                image_id: None,
            });
            failure = Some((AttemptStatus::Failed, "TaskRunResultLargerThanAllowedLimit".into(), msg));
            continue;
        }
        let mut mine = BTreeMap::new();
        for r in &raw.results {
            let p = sdir.join("results").join(&r.name);
            if let Ok(b) = std::fs::read(&p) {
                mine.insert(r.name.clone(), String::from_utf8_lossy(&b).to_string());
            }
        }
        step_results.insert(sname.clone(), mine);
        match reason {
            Some("timeout") => {
                let whole = deadline.is_some_and(|dl| Instant::now() + Duration::from_millis(5) >= dl);
                steps_out.push(StepOutcome {
                    name: sname.clone(),
                    termination_reason: "TimeoutExceeded".into(),
                    exit_code: None,
                    duration_ms: dur,
                    log,
                    image_id: None,
                });
                failure = Some(if whole {
                    req.timed_out()
                } else {
                    (
                        AttemptStatus::Failed,
                        "Failed".into(),
                        format!("step {sname:?} exceeded its timeout of {}", step.timeout.clone().unwrap_or_default()),
                    )
                });
            }
            Some(_) => {
                steps_out.push(StepOutcome {
                    name: sname.clone(),
                    termination_reason: "Cancelled".into(),
                    exit_code: None,
                    duration_ms: dur,
                    log,
                    image_id: None,
                });
                failure = Some(req.cancelled());
            }
            None if code == 0 => {
                steps_out.push(StepOutcome {
                    name: sname,
                    termination_reason: "Completed".into(),
                    exit_code: Some(0),
                    duration_ms: dur,
                    log,
                    image_id: None,
                });
            }
            None if step.on_error.as_deref() == Some("continue") => {
                steps_out.push(StepOutcome {
                    name: sname,
                    termination_reason: "Continued".into(),
                    exit_code: Some(code),
                    duration_ms: dur,
                    log,
                    image_id: None,
                });
            }
            None => {
                steps_out.push(StepOutcome {
                    name: sname.clone(),
                    termination_reason: "Error".into(),
                    exit_code: Some(code),
                    duration_ms: dur,
                    log,
                    image_id: None,
                });
                failure = Some((
                    AttemptStatus::Failed,
                    "Failed".into(),
                    format!("\"{cname}\" exited with code {code}{}", hint(raw)),
                ));
            }
        }
    }
    kill_all(&mut sidecars).await;

    Ok(finish(&req.spec, results, &step_results, failure, steps_out))
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

/// Environment variable marking every process a step starts (value unique per step).
pub const STEP_MARKER: &str = "TENON_STEP";

/// Wait until a sidecar is ready: an `exec` readiness/startup probe passes (polled every
/// 200 ms, up to its `timeoutSeconds`×`failureThreshold` or 60 s), else 1 s of running.
#[allow(clippy::too_many_arguments)]
async fn wait_ready(
    ex: &LocalExecutor,
    req: &TaskRunRequest,
    d: &Dirs,
    layout: &Layout,
    sc: &Step,
    name: &str,
    sidecars: &mut [(Child, String)],
    cancel: &CancellationToken,
) -> Result<(), String> {
    let probe = sc
        .startup_probe
        .as_ref()
        .or(sc.readiness_probe.as_ref())
        .and_then(|p| p.get("exec"))
        .and_then(|e| e.get("command"))
        .and_then(|c| serde_json::from_value::<Vec<String>>(c.clone()).ok());
    let started = Instant::now();
    let Some(command) = probe.filter(|c| !c.is_empty()) else {
        while started.elapsed() < Duration::from_secs(1) {
            if let Some((c, _)) = sidecars.last_mut() {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return Ok(());
    };
    let limit = Duration::from_secs(60);
    let probe_step =
        Step { name: Some(format!("{name}-probe")), command: Some(command), args: None, script: None, ..sc.clone() };
    loop {
        if cancel.is_cancelled() {
            return Err(format!("sidecar {name:?}: cancelled before it was ready"));
        }
        let (mut child, readers, marker) = spawn(ex, req, d, layout, &probe_step, &format!("sidecar-{name}-probe"))?;
        let ended = wait_child(&mut child, Some(Instant::now() + Duration::from_secs(10)), cancel).await;
        let _ = tokio::task::spawn_blocking(move || kill_marked(&marker)).await;
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        if matches!(ended, Ended::Exited(0)) {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!(
                "sidecar {name:?} did not become ready within {}s (its probe kept failing)",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kill every process whose environment carries `TENON_STEP=<marker>`: whatever a step
/// left behind, even outside its process group. Repeats until none is left (bounded).
pub fn kill_marked(marker: &str) {
    let needle = format!("{STEP_MARKER}={marker}");
    let me = std::process::id();
    for _ in 0..10 {
        let mut found = false;
        let Ok(rd) = std::fs::read_dir("/proc") else { return };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if pid as u32 == me {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                // zombies keep their environ unreadable or empty; a live match is killed
                // SAFETY: kill only sends a signal.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                found = true;
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(
    ex: &LocalExecutor,
    req: &TaskRunRequest,
    d: &Dirs,
    layout: &Layout,
    step: &Step,
    cname: &str,
) -> Result<(Child, Readers, String), String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), layout.home.display().to_string());
    for (k, v) in &ex.pass_env {
        env.insert(k.clone(), v.clone());
    }
    for e in &step.env {
        env.insert(e.name.clone(), e.value.clone().unwrap_or_default());
    }
    let args: Vec<String> = step.args.clone().unwrap_or_default().iter().map(|a| k8s_expand(a, &env)).collect();
    let (program, argv): (String, Vec<String>) = if let Some(script) = &step.script {
        let path = d.scripts.join(cname);
        let body =
            if script.trim_start().starts_with("#!") { script.clone() } else { format!("#!/bin/sh\nset -e\n{script}") };
        write_exec(&path, &body).map_err(|e| format!("cannot write script {}: {e}", path.display()))?;
        // Run the interpreter named by the shebang ourselves, as the kernel would: exec'ing
        // a file just written can fail with ETXTBSY while another thread forks.
        let (interp, interp_arg) = parse_shebang(&body);
        let (interp, interp_arg) = image_shell(interp, interp_arg, step.image.as_deref());
        let mut argv = Vec::new();
        argv.extend(interp_arg);
        argv.push(layout.scripts.join(cname).display().to_string());
        argv.extend(args);
        (interp, argv)
    } else if let Some(cmd) = step.command.as_ref().filter(|c| !c.is_empty()) {
        let cmd: Vec<String> = cmd.iter().map(|a| k8s_expand(a, &env)).collect();
        let mut argv = cmd[1..].to_vec();
        argv.extend(args);
        (cmd[0].clone(), argv)
    } else {
        let image = step.image.as_deref().unwrap_or("");
        match image_default_command(image, &args) {
            Some(argv) if !argv.is_empty() => (argv[0].clone(), argv[1..].to_vec()),
            _ => {
                return Err(format!(
                    "the step has neither command nor script, so it would run the entrypoint of image {image:?}, which the local executor does not know (known: {}); add a command or script",
                    KNOWN_IMAGES.join(", ")
                ))
            }
        }
    };
    let cwd = match &step.working_dir {
        None => layout.work.clone(),
        Some(w) if w.is_empty() => layout.work.clone(),
        Some(w) if Path::new(w).is_absolute() => PathBuf::from(w),
        Some(w) => layout.work.join(w),
    };
    let mut bwrap_extra: Vec<String> = Vec::new();
    if layout.sandbox {
        // directories under the pod's own mounts are created on their host side
        let host_side = [(&layout.work, &d.work), (&layout.home, &d.home), (&layout.results, &d.results)]
            .into_iter()
            .find_map(|(pod, host)| cwd.strip_prefix(pod).ok().map(|rel| host.join(rel)));
        match host_side {
            Some(h) => {
                std::fs::create_dir_all(&h).map_err(|e| format!("cannot create workingDir {}: {e}", cwd.display()))?
            }
            None => {
                if !cwd.exists() {
                    bwrap_extra.extend(["--dir".to_string(), cwd.display().to_string()]);
                }
            }
        }
    } else {
        if !step.volume_mounts.is_empty() {
            return Err(format!(
                "volumeMounts at {} need the bwrap sandbox (install bubblewrap, or use --sandbox bwrap)",
                step.volume_mounts.iter().map(|m| m.mount_path.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !cwd.exists() {
            if cwd.starts_with(&req.dir) {
                std::fs::create_dir_all(&cwd)
                    .map_err(|e| format!("cannot create workingDir {}: {e}", cwd.display()))?;
            } else {
                return Err(format!("workingDir {} does not exist on this host", cwd.display()));
            }
        }
    }
    // Resolve the program against the step's PATH, not tenon's (inside the sandbox the
    // host's directories are at the same places).
    let program = resolve_program(
        &program,
        env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH),
        if layout.sandbox { &d.work } else { &cwd },
        &|p| ex.sandbox.sees(p),
    );
    // Under bwrap a program that cannot start would look like a step exiting 1: check
    // first, on the host side of the path, so onError: continue does not cover it.
    if layout.sandbox && Path::new(&program).is_absolute() {
        let host = layout.host_path(d, &req.spec, &req.workspaces, Path::new(&program));
        if !host.is_file() {
            return Err(format!("cannot run {program}: No such file or directory"));
        }
        if host == Path::new(&program) && !ex.sandbox.sees(&host) {
            return Err(format!(
                "cannot run {program}: the sandbox shows steps only /{} of this host (use --sandbox host to run host programs)",
                HOST_DIRS.join(", /")
            ));
        }
    }
    let (program, argv) = match &ex.sandbox {
        Sandbox::Host => (program, argv),
        sb @ Sandbox::Bwrap { bwrap, .. } => {
            let mut a = sb.prefix(&layout.binds(d, req, step, cname, &ex.hidden)?);
            a.extend(bwrap_extra);
            // the root (a tmpfs holding the mount points) is read-only once they exist
            a.extend(["--remount-ro".to_string(), "/".to_string()]);
            a.extend(["--chdir".to_string(), cwd.display().to_string(), "--".to_string(), program]);
            a.extend(argv);
            (bwrap.display().to_string(), a)
        }
    };
    let cwd = if layout.sandbox { d.work.clone() } else { cwd };
    let mut cmd = Command::new(&program);
    // A marker every descendant inherits, so processes that escape the step's process
    // group (setsid, daemons) are still found and killed when the step ends.
    let marker = format!("{}-{cname}-{}", req.name, crate::util::new_uid(&req.dir.display().to_string()));
    env.insert(STEP_MARKER.into(), marker.clone());
    cmd.args(&argv)
        .env_clear()
        .envs(&env)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let tenon = std::process::id() as libc::pid_t;
    // SAFETY: `supervise` runs between fork and exec and only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || supervise(tenon));
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let log_path = d.logs.join(format!("{cname}.log"));
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open log {}: {e}", log_path.display()))?,
    ));
    let mut readers = Vec::new();
    let step_label = cname.strip_prefix("step-").unwrap_or(cname).to_string();
    // stdoutConfig/stderrConfig: also write the stream to a file the step names
    let tee = |cfg: &Option<serde_json::Value>| -> Option<Arc<Mutex<std::fs::File>>> {
        let path = cfg.as_ref()?.get("path")?.as_str()?;
        let in_volume = step.volume_mounts.iter().find_map(|m| {
            let rel = Path::new(path).strip_prefix(&m.mount_path).ok()?;
            Some(req.volumes.get(&m.name)?.join(rel))
        });
        let host = match in_volume {
            Some(h) if layout.sandbox => h,
            _ if layout.sandbox => layout.host_path(d, &req.spec, &req.workspaces, Path::new(path)),
            _ => PathBuf::from(path),
        };
        if let Some(parent) = host.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::File::create(&host).ok().map(|f| Arc::new(Mutex::new(f)))
    };
    if let Some(o) = child.stdout.take() {
        readers.push(pump(
            o,
            ex.console.clone(),
            req.label.clone(),
            step_label.clone(),
            log.clone(),
            tee(&step.stdout_config),
        ));
    }
    if let Some(e) = child.stderr.take() {
        readers.push(pump(e, ex.console.clone(), req.label.clone(), step_label, log, tee(&step.stderr_config)));
    }
    Ok((child, readers, marker))
}

/// The `sh` a script gets is the image's: busybox ash in alpine, busybox and bash images
/// (the Docker `bash` image is alpine-based), where `ash` exists too. Scripts for those
/// images run under busybox's ash when it is installed, so they behave as they do there.
fn image_shell(interp: String, arg: Option<String>, image: Option<&str>) -> (String, Option<String>) {
    let name = image.map(|i| {
        let no_digest = i.split('@').next().unwrap_or(i);
        let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
        last.split(':').next().unwrap_or(last).to_string()
    });
    let ash_image = matches!(name.as_deref(), Some("alpine" | "busybox" | "bash"));
    let wants_sh = match (interp.as_str(), arg.as_deref()) {
        ("/bin/sh" | "/bin/ash", _) => true,
        ("/usr/bin/env", Some("sh" | "ash")) => true,
        _ => false,
    };
    let wants_ash = interp == "/bin/ash" || arg.as_deref() == Some("ash");
    if (wants_sh && ash_image || wants_ash) && Path::new(BUSYBOX_SH).is_file() {
        return (BUSYBOX_SH.to_string(), Some("sh".into()));
    }
    (interp, arg)
}

/// Where Debian's busybox package installs the binary ("sh" is its ash).
const BUSYBOX_SH: &str = "/bin/busybox";

/// Interpreter and optional single argument of a `#!` line (Linux passes the rest of
/// the line as one argument).
pub(crate) fn parse_shebang(body: &str) -> (String, Option<String>) {
    let first = body.trim_start().lines().next().unwrap_or("");
    let rest = first.strip_prefix("#!").unwrap_or("/bin/sh").trim();
    match rest.split_once(char::is_whitespace) {
        Some((i, a)) if !a.trim().is_empty() => (i.to_string(), Some(a.trim().to_string())),
        _ => (rest.to_string(), None),
    }
}

/// `program` as a path: found on `path` among the directories a step `sees`.
fn resolve_program(program: &str, path: &str, cwd: &Path, sees: &dyn Fn(&Path) -> bool) -> String {
    if program.contains('/') {
        let p = Path::new(program);
        return if p.is_absolute() { program.to_string() } else { cwd.join(p).display().to_string() };
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(program);
        if cand.is_file() && sees(&cand) {
            return cand.display().to_string();
        }
    }
    program.to_string()
}

fn write_exec(path: &Path, body: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    r: R,
    console: Arc<Console>,
    label: String,
    step: String,
    log: Arc<Mutex<std::fs::File>>,
    tee: Option<Arc<Mutex<std::fs::File>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use std::io::Write;
        let mut lines = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Ok(mut f) = log.lock() {
                        let _ = f.write_all(&buf);
                    }
                    if let Some(t) = &tee {
                        if let Ok(mut f) = t.lock() {
                            let _ = f.write_all(&buf);
                        }
                    }
                    let text = String::from_utf8_lossy(&buf);
                    console.step_line(&label, &step, text.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

enum Ended {
    Exited(i32),
    TimedOut,
    Cancelled,
}

async fn wait_child(child: &mut Child, deadline: Option<Instant>, cancel: &CancellationToken) -> Ended {
    let pid = child.id();
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        st = child.wait() => {
            use std::os::unix::process::ExitStatusExt;
            match st {
                Ok(s) => Ended::Exited(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
                Err(_) => Ended::Exited(-1),
            }
        }
        _ = sleep => Ended::TimedOut,
        _ = cancel.cancelled() => Ended::Cancelled,
    };
    if let Some(pid) = pid {
        if !matches!(ended, Ended::Exited(_)) {
            kill_group(pid as i32, libc::SIGTERM);
            if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                kill_group(pid as i32, libc::SIGKILL);
            }
        }
        // Whatever the step left running in its group ends with it: no orphans.
        kill_group(pid as i32, libc::SIGKILL);
    }
    let _ = child.wait().await;
    ended
}

/// Make sure no step outlives tenon, even a `kill -9` of it. Runs in the forked child
/// (already the leader of the step's process group) before exec: it forks again; the
/// grandchild returns and execs the step, this process stays behind as the step's
/// supervisor and never returns. Every 200 ms, and whenever the step ends, it checks:
/// the step ended -> exit with its status (or die of its signal); tenon is gone (this
/// process was reparented) -> SIGKILL the whole process group, itself included.
///
/// Why not `PR_SET_PDEATHSIG` on the step: it fires when the *thread* that forked exits,
/// and tokio's threads come and go; and it would reach the step's first process only.
/// The supervisor's own parent check uses `getppid`, which names tenon's process, not a
/// thread. The step gets `PR_SET_PDEATHSIG` relative to the supervisor (one thread, as
/// long-lived as the step), so killing the supervisor kills the step too.
///
/// Only async-signal-safe calls: this runs in a fork of a multi-threaded process.
fn supervise(tenon: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: plain system calls on local data, between fork and exec.
    unsafe {
        // SIGCHLD is blocked before the second fork, so the step's exit cannot be missed
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut old);
        let supervisor = libc::getpid();
        let step = libc::fork();
        if step < 0 {
            let e = std::io::Error::last_os_error();
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Err(e);
        }
        if step == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != supervisor {
                libc::_exit(137);
            }
            return Ok(());
        }
        // The supervisor holds no file: the step's pipes reach EOF when the step ends,
        // and the spawn's exec-error pipe closes when the step execs.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..65536 {
                libc::close(fd);
            }
        }
        // tenon's signals to the group are for the step; it mirrors the step's end
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let tick = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
        loop {
            let mut status = 0;
            let r = libc::waitpid(step, &mut status, libc::WNOHANG);
            if r == step {
                if libc::WIFSIGNALED(status) {
                    let sig = libc::WTERMSIG(status);
                    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::setrlimit(libc::RLIMIT_CORE, &zero);
                    libc::signal(sig, libc::SIG_DFL);
                    let mut one: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut one);
                    libc::sigaddset(&mut one, sig);
                    libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                    libc::kill(supervisor, sig);
                    libc::_exit(128 + sig);
                }
                libc::_exit(libc::WEXITSTATUS(status));
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
            if libc::getppid() != tenon {
                libc::kill(0, libc::SIGKILL);
                libc::_exit(137);
            }
            libc::sigtimedwait(&chld, std::ptr::null_mut(), &tick);
        }
    }
}

fn kill_group(pgid: i32, sig: i32) {
    // SAFETY: killpg only sends a signal; a stale group id yields ESRCH, which we ignore.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

async fn kill_all(children: &mut Vec<(Child, String)>) {
    for (c, _) in children.iter_mut() {
        if let Some(pid) = c.id() {
            kill_group(pid as i32, libc::SIGTERM);
        }
    }
    for (c, marker) in children.iter_mut() {
        let m = marker.clone();
        let _ = tokio::task::spawn_blocking(move || kill_marked(&m)).await;
        if tokio::time::timeout(KILL_GRACE, c.wait()).await.is_err() {
            if let Some(pid) = c.id() {
                kill_group(pid as i32, libc::SIGKILL);
            }
            let _ = c.wait().await;
        }
        if let Some(pid) = c.id() {
            kill_group(pid as i32, libc::SIGKILL);
        }
    }
    children.clear();
}

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
