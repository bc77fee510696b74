//! Step processes: spawning, readiness, output pumping, supervision and killing.

use super::*;

/// Environment variable marking every process a step starts (value unique per step).
pub const STEP_MARKER: &str = "TENON_STEP";

/// Wait until a sidecar is ready: an `exec` readiness/startup probe passes (polled every
/// 200 ms, up to its `timeoutSeconds`×`failureThreshold` or 60 s), else 1 s of running.
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait_ready(
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

/// Start a step (or sidecar) process: its environment, command line and working
/// directory, the sandbox around it, a marker its descendants inherit, and readers that
/// pump its output to the console and its log. The child, the readers and the marker.
pub(super) fn spawn(
    ex: &LocalExecutor,
    req: &TaskRunRequest,
    d: &Dirs,
    layout: &Layout,
    step: &Step,
    cname: &str,
) -> Result<(Child, Readers, String), String> {
    let mut env = step_env(ex, layout, step);
    let (program, argv) = step_command(d, layout, step, cname, &env)?;
    let (cwd, bwrap_extra) = step_cwd(req, d, layout, step)?;
    // Resolve the program against the step's PATH, not tenon's (inside the sandbox the
    // host's directories are at the same places).
    let program = resolve_program(
        &program,
        env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH),
        if layout.sandbox { &d.work } else { &cwd },
        &|p| ex.sandbox.sees(p),
    );
    check_sandboxed_program(ex, req, d, layout, &program)?;
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
    let readers = pump_output(ex, req, d, layout, step, cname, &mut child)?;
    Ok((child, readers, marker))
}

/// A step's environment: a default `PATH`, `HOME`, the variables passed through, and the
/// step's own `env`.
fn step_env(ex: &LocalExecutor, layout: &Layout, step: &Step) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), layout.home.display().to_string());
    for (k, v) in &ex.pass_env {
        env.insert(k.clone(), v.clone());
    }
    for e in &step.env {
        env.insert(e.name.clone(), e.value.clone().unwrap_or_default());
    }
    env
}

/// The program and arguments a step runs: its script (under the shebang's interpreter),
/// its command, or the default command of a known image; `$(VAR)` expanded from `env`.
fn step_command(
    d: &Dirs,
    layout: &Layout,
    step: &Step,
    cname: &str,
    env: &BTreeMap<String, String>,
) -> Result<(String, Vec<String>), String> {
    let args: Vec<String> = step.args.clone().unwrap_or_default().iter().map(|a| k8s_expand(a, env)).collect();
    Ok(if let Some(script) = &step.script {
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
        let cmd: Vec<String> = cmd.iter().map(|a| k8s_expand(a, env)).collect();
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
    })
}

/// A step's working directory, created if it lies under the pod's own mounts or the
/// task's directory; without the sandbox, volume mounts are an error. With the extra
/// bwrap arguments it needs (`--dir` for a directory the sandbox must create).
fn step_cwd(req: &TaskRunRequest, d: &Dirs, layout: &Layout, step: &Step) -> Result<(PathBuf, Vec<String>), String> {
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
    Ok((cwd, bwrap_extra))
}

/// Under bwrap a program that cannot start would look like a step exiting 1: check first,
/// on the host side of the path, so onError: continue does not cover it.
fn check_sandboxed_program(
    ex: &LocalExecutor,
    req: &TaskRunRequest,
    d: &Dirs,
    layout: &Layout,
    program: &str,
) -> Result<(), String> {
    if layout.sandbox && Path::new(program).is_absolute() {
        let host = layout.host_path(d, &req.spec, &req.workspaces, Path::new(program));
        if !host.is_file() {
            return Err(format!("cannot run {program}: No such file or directory"));
        }
        if host == Path::new(program) && !ex.sandbox.sees(&host) {
            return Err(format!(
                "cannot run {program}: the sandbox shows steps only /{} of this host (use --sandbox host to run host programs)",
                HOST_DIRS.join(", /")
            ));
        }
    }
    Ok(())
}

/// Readers that pump a started step's stdout and stderr to the console and its log (and
/// to the files its stdoutConfig/stderrConfig name).
fn pump_output(
    ex: &LocalExecutor,
    req: &TaskRunRequest,
    d: &Dirs,
    layout: &Layout,
    step: &Step,
    cname: &str,
    child: &mut Child,
) -> Result<Readers, String> {
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
    Ok(readers)
}

/// The `sh` a script gets is the image's: busybox ash in alpine, busybox and bash images
/// (the Docker `bash` image is alpine-based), where `ash` exists too. Scripts for those
/// images run under busybox's ash when it is installed, so they behave as they do there.
pub(super) fn image_shell(interp: String, arg: Option<String>, image: Option<&str>) -> (String, Option<String>) {
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
pub(super) const BUSYBOX_SH: &str = "/bin/busybox";

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
pub(super) fn resolve_program(program: &str, path: &str, cwd: &Path, sees: &dyn Fn(&Path) -> bool) -> String {
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

pub(super) fn write_exec(path: &Path, body: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

pub(super) fn pump<R: AsyncRead + Unpin + Send + 'static>(
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

pub(super) enum Ended {
    Exited(i32),
    TimedOut,
    Cancelled,
}

pub(super) async fn wait_child(child: &mut Child, deadline: Option<Instant>, cancel: &CancellationToken) -> Ended {
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
pub(super) fn supervise(tenon: libc::pid_t) -> std::io::Result<()> {
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

pub(super) fn kill_group(pgid: i32, sig: i32) {
    // SAFETY: killpg only sends a signal; a stale group id yields ESRCH, which we ignore.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

pub(super) async fn kill_all(children: &mut Vec<(Child, String)>) {
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
