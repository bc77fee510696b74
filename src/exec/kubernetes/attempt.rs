//! Running one attempt: uploading inputs, watching the pod, collecting outcomes and copying outputs back.

use super::*;
use k8s_openapi::api::core::v1::PodStatus;

pub(super) fn container<'a>(statuses: &'a Option<Vec<ContainerStatus>>, name: &str) -> Option<&'a ContainerStatus> {
    statuses.as_ref()?.iter().find(|c| c.name == name)
}

/// Image pull and configuration errors of any container: (reason, message).
pub(super) fn waiting_problem(pod: &Pod) -> Option<(String, String)> {
    let st = pod.status.as_ref()?;
    for c in st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten()) {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
        let reason = w.reason.clone().unwrap_or_default();
        let msg = w.message.clone().unwrap_or_default();
        match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" | "ImageInspectError" => {
                return Some((
                    "TaskRunImagePullFailed".into(),
                    format!("the image {:?} of container {:?} could not be pulled ({reason}): {msg}", c.image, c.name),
                ))
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some((reason.clone(), format!("container {:?}: {reason}: {msg}", c.name)))
            }
            _ => {}
        }
    }
    None
}

pub(super) fn millis(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

/// Whether the attempt copies a Secret into the pod (a workspace bound to one, or a Task
/// volume of one).
pub(super) fn carries_secrets(req: &TaskRunRequest) -> bool {
    req.workspaces.iter().any(|w| w.path.is_some() && w.kind.starts_with("secret"))
        || req.spec.volumes.iter().any(|v| v.get("secret").is_some())
}

/// A step's or sidecar's log stream.
pub(super) struct Follower {
    handle: tokio::task::JoinHandle<()>,
    /// Lines shown so far.
    lines_seen: Arc<std::sync::atomic::AtomicUsize>,
    label: String,
    step: String,
    path: PathBuf,
}

/// Container name -> its log stream.
pub(super) type Followers = BTreeMap<String, Follower>;

/// The files of a step's termination message (see `step_wrapper`): (kind, name, content),
/// or `None` when it is not one (overflow, truncated, another writer, or bytes that were not
/// UTF-8: the API carries the message as a string, and U+FFFD is taken as a sign of that).
pub(super) fn parse_message(msg: &str) -> Option<Vec<(String, String, Vec<u8>)>> {
    if msg.contains('\u{FFFD}') {
        return None;
    }
    let mut rest = msg.as_bytes().strip_prefix(format!("{MESSAGE_MAGIC}\n").as_bytes())?;
    let mut out = Vec::new();
    loop {
        let nl = rest.iter().position(|&c| c == b'\n')?;
        let line = std::str::from_utf8(&rest[..nl]).ok()?;
        rest = &rest[nl + 1..];
        if line == "end" {
            return rest.is_empty().then_some(out);
        }
        let mut parts = line.split(' ');
        let (kind, name, len) = (parts.next()?, parts.next()?, parts.next()?.parse::<usize>().ok()?);
        if parts.next().is_some() || name.is_empty() || name.contains('/') || name.starts_with('.') {
            return None;
        }
        if rest.len() <= len || rest[len] != b'\n' {
            return None;
        }
        out.push((kind.to_string(), name.to_string(), rest[..len].to_vec()));
        rest = &rest[len + 1..];
    }
}

/// The files tenon would read back from the holder (`tekton/results`, each step's results and
/// `timedOut` and `startFailed` markers), rebuilt under `dir` from the termination messages of the steps that
/// ran; `None` if one of them has none that parses (then the holder is read).
pub(super) fn files_from_messages(req: &TaskRunRequest, plan: &PodPlan, pod: &Pod, dir: &Path) -> Option<PathBuf> {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone());
    let terminated =
        |cname: &str| container(&statuses, cname).and_then(|c| c.state.as_ref()).and_then(|s| s.terminated.clone());
    // the steps that ran, up to the one that ended the chain (the last, or one that failed
    // for good): its message carries the task results
    let mut ran = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let t = terminated(&s.cname)?;
        let stop = t.exit_code != 0 && req.spec.steps[i].on_error.as_deref() != Some("continue");
        ran.push((s, parse_message(t.message.as_deref()?)?));
        if stop {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    let end = ran.len().checked_sub(1)?;
    for (i, (s, files)) in ran.into_iter().enumerate() {
        let step_dir = dir.join("tekton/steps").join(&s.cname);
        for (kind, name, body) in files {
            let path = match kind.as_str() {
                "s" => step_dir.join("results").join(&name),
                "t" if name == "timedOut" => step_dir.join("timedOut"),
                "f" if name == "startFailed" => step_dir.join("startFailed"),
                "r" if i == end => dir.join("tekton/results").join(&name),
                _ => continue,
            };
            let parent = path.parent()?;
            std::fs::create_dir_all(parent).and_then(|_| std::fs::write(&path, body)).ok()?;
        }
    }
    std::fs::create_dir_all(dir.join("tekton/results")).ok()?;
    Some(dir.to_path_buf())
}

impl KubernetesExecutor {
    pub(super) async fn run_pod(
        &self,
        req: &TaskRunRequest,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, String> {
        let plan = plan(req, &self.args, &self.state_dir)?;
        let logs_dir = req.dir.join("logs");
        std::fs::create_dir_all(&logs_dir)
            .and_then(|_| std::fs::create_dir_all(req.dir.join("results")))
            .map_err(|e| format!("cannot create run directory {}: {e}", req.dir.display()))?;
        // large inputs through the registry, when there is one: left out of the tar
        let offload = match &self.data {
            Some(d) => d.offload(req, &plan).await,
            None => Default::default(),
        };
        let upload = upload_plan(&plan, &offload.hosts)?;
        // small uploads (scripts, the tekton directories, small workspaces) travel in the pod
        // spec: no exec round trip before the first step. Never Secret contents: whoever may
        // read the pod would read them
        let embedded = match upload.size <= EMBED_MAX as u64 && !carries_secrets(req) {
            true => {
                use base64::Engine as _;
                Some(base64::engine::general_purpose::STANDARD.encode(upload.bytes()?))
            }
            false => None,
        };
        let name = pod_name(&req.name, req.attempt, &req.dir);
        let mut pod = build_pod(&name, req, &self.args, &self.owner, &plan, embedded.as_deref())?;
        if let (Some(d), false) = (&self.data, offload.list.is_empty()) {
            d.add_fetcher(&mut pod, &plan, &offload.list, &self.args.pull_policy)?;
            tracing::debug!(pod = %name, files = offload.list.len(), bytes = offload.bytes, pushed = offload.pushed, tar_bytes = upload.size, "data plane: inputs from the registry");
        }
        let started = Instant::now();
        self.create(&name, &pod).await?;
        tracing::debug!(pod = %name, namespace = %self.namespace, embedded = embedded.is_some(), "pod created");

        let to_send = if embedded.is_some() { None } else { Some(&upload) };
        let result = self.drive(&name, req, &plan, to_send, cancel, started).await;
        let (end, last, followers) = match result {
            Ok(x) => x,
            Err(e) => {
                self.delete_later(&name);
                return Ok(failed("PodFailed", e, vec![]));
            }
        };
        tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "steps ended");
        let mut download_err = None;
        let mut downloaded = None;
        // fetched inputs the steps left as they were: not read back, kept on the host as is
        let mut unchanged = BTreeSet::new();
        if matches!(end, End::Steps) {
            let pod_files = req.dir.join("pod-files");
            // the steps' termination messages carry their results when they fit; the holder
            // (still up) is read with tar otherwise, and always for workspaces to write back
            let from_messages = if plan.copied.iter().any(|c| c.write_back) {
                None
            } else {
                files_from_messages(req, &plan, &last, &pod_files)
            };
            let holder_up = container(&last.status.as_ref().and_then(|s| s.container_statuses.clone()), HOLDER)
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            let by_message = from_messages.is_some();
            if let (None, true, Some(_)) = (&from_messages, holder_up, &self.data) {
                match super::registry::drop_unchanged(&self.pods, &name, &plan, &offload.list).await {
                    Ok(kept) => unchanged = kept,
                    Err(e) => download_err = Some(e),
                }
            }
            match from_messages {
                Some(d) => downloaded = Some(d),
                None if download_err.is_some() => {}
                None if holder_up => match self.download(&name, &plan, &pod_files).await {
                    Ok(d) => downloaded = Some(d),
                    Err(e) => download_err = Some(e),
                },
                None => {}
            }
            tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, by_message, "files read back");
        }
        self.finish_logs(&name, followers).await;
        tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "logs complete");
        self.delete_later(&name);
        let (mut steps_out, mut failure) = step_outcomes(req, &plan, &last, &end, &logs_dir);
        let mut results: BTreeMap<String, String> = BTreeMap::new();
        let mut step_results: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let Some(e) = download_err {
            failure.get_or_insert((AttemptStatus::Failed, "PodFailed".into(), format!("cannot read results: {e}")));
        }
        if let Some(dir) = downloaded {
            let res = dir.join("tekton/results");
            if let Err(msg) = collect_results(&req.spec, &res, req.max_result_size, &mut results) {
                failure = Some((AttemptStatus::Failed, "TaskRunResultLargerThanAllowedLimit".into(), msg));
            }
            for (k, v) in &results {
                let _ = std::fs::write(req.dir.join("results").join(k), v);
            }
            for (i, s) in plan.steps.iter().enumerate() {
                // a step that its own timeout ended (the wrapper's marker)
                if let Ok(t) = std::fs::read_to_string(dir.join("tekton/steps").join(&s.cname).join("timedOut")) {
                    if let Some(o) = steps_out.get_mut(i).filter(|o| o.termination_reason == "Error") {
                        o.termination_reason = "TimeoutExceeded".into();
                        let msg = format!("step {:?} exceeded its timeout of {}s", s.sname, t.trim());
                        if let Some(f) = failure.as_mut().filter(|f| f.2.contains(&format!("\"{}\"", s.cname))) {
                            f.2 = msg;
                        }
                    }
                }
                // a step that could not start (the wrapper's marker) fails the attempt, also
                // with onError: continue; the steps after it did not run
                if let Ok(why) = std::fs::read_to_string(dir.join("tekton/steps").join(&s.cname).join("startFailed")) {
                    for (j, o) in steps_out.iter_mut().enumerate().skip(i) {
                        o.termination_reason = if j == i { "Error" } else { "Skipped" }.into();
                        o.exit_code = None;
                    }
                    let msg = format!("step {:?} could not start: {}", s.sname, why.trim());
                    match failure.as_mut() {
                        Some(f) if f.2.contains(&format!("\"{}\"", s.cname)) => f.2 = msg,
                        Some(_) => {}
                        None => failure = Some((AttemptStatus::Failed, "Failed".into(), msg)),
                    }
                }
                let mut mine = BTreeMap::new();
                for r in &req.spec.steps[i].results {
                    if let Ok(b) = std::fs::read(dir.join("tekton/steps").join(&s.cname).join("results").join(&r.name))
                    {
                        mine.insert(r.name.clone(), String::from_utf8_lossy(&b).to_string());
                    }
                }
                step_results.insert(s.sname.clone(), mine);
            }
            for c in plan.copied.iter().filter(|c| c.write_back) {
                let mut uploaded = upload.manifests.get(&c.stage).cloned().unwrap_or_default();
                let prefix = format!("{}/", c.stage);
                for rel in unchanged.iter().filter_map(|p| p.strip_prefix(prefix.as_str())) {
                    uploaded.remove(rel);
                }
                if let Err(e) = write_back(&dir.join(&c.stage), &c.host, &uploaded) {
                    failure.get_or_insert((
                        AttemptStatus::Failed,
                        "PodFailed".into(),
                        format!("cannot copy workspace {} back: {e}", c.host.display()),
                    ));
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        tracing::debug!(pod = %name, elapsed_ms = started.elapsed().as_millis() as u64, "pod finished");
        Ok(finish(&req.spec, results, &step_results, failure, steps_out))
    }

    /// Create the pod; a tenon-owned pod of the same name (left by a killed tenon) is
    /// deleted first, so there is never a duplicate.
    pub(super) async fn create(&self, name: &str, pod: &Pod) -> Result<(), String> {
        for _ in 0..3 {
            match self.pods.create(&PostParams::default(), pod).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let old = self.pods.get_opt(name).await.ok().flatten();
                    let ours = old.as_ref().and_then(|p| p.metadata.labels.as_ref()).is_some_and(|l| {
                        l.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
                            && l.get(OWNER_LABEL) == Some(&self.owner)
                    });
                    if !ours && old.is_some() {
                        return Err(format!(
                            "pod {name} already exists in namespace {} and belongs to something else (another tenon store, or not tenon); use another namespace (--k8s-namespace) or run name",
                            self.namespace
                        ));
                    }
                    tracing::warn!(pod = name, "replacing a stale tenon pod of the same name");
                    delete_pod(&self.pods, name).await;
                    let uid = old.and_then(|p| p.metadata.uid).unwrap_or_default();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        kube::runtime::wait::await_condition(
                            self.pods.clone(),
                            name,
                            kube::runtime::wait::conditions::is_deleted(&uid),
                        ),
                    )
                    .await;
                }
                Err(e) => return Err(format!("cannot create pod {name}: {}", kube_msg(&e))),
            }
        }
        Err(format!("cannot create pod {name}: a pod of that name keeps existing"))
    }

    /// Watch the pod until the steps are done (or it breaks, times out, is cancelled),
    /// uploading the files (unless the pod spec carries them) when the holder runs and
    /// following step logs as they start.
    pub(super) async fn drive(
        &self,
        name: &str,
        req: &TaskRunRequest,
        plan: &PodPlan,
        upload: Option<&Upload>,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<(End, Pod, Followers), String> {
        let mut followers = Followers::new();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher::watcher(self.pods.clone(), cfg).default_backoff().boxed();
        let deadline = req.timeout.filter(|t| !t.is_zero()).map(|t| tokio::time::Instant::from_std(started + t));
        // an upload embedded in the pod spec is unpacked by the holder itself
        let mut uploaded = upload.is_none();
        let mut sidecars_ok = plan.sidecars.is_empty();
        let mut last: Option<Pod> = None;
        // whether the watch's latest (re)list held the pod
        let mut listed = false;
        let end = loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => break End::Cancelled,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break End::TimedOut,
                ev = stream.try_next() => ev,
            };
            let pod = match ev {
                Ok(Some(Event::Apply(p))) => p,
                Ok(Some(Event::Init)) => {
                    listed = false;
                    continue;
                }
                Ok(Some(Event::InitApply(p))) => {
                    listed = true;
                    p
                }
                // A (re)list without the pod: after a watch gap too long to resume (say the
                // API server restarted), a deletion shows only as the pod's absence. The list
                // may come from the API server's cache, so a quorum read decides.
                Ok(Some(Event::InitDone)) if !listed => match self.pods.get_opt(name).await {
                    Ok(None) => {
                        break End::Broken("PodDeleted".into(), format!("pod {name} was deleted by someone else"))
                    }
                    Ok(Some(p)) => p,
                    Err(_) => continue,
                },
                Ok(Some(Event::InitDone)) => continue,
                Ok(Some(Event::Delete(_))) => {
                    break End::Broken("PodDeleted".into(), format!("pod {name} was deleted by someone else"))
                }
                Ok(None) => break End::Broken("PodFailed".into(), "the pod watch ended".into()),
                Err(e) => {
                    tracing::debug!(error = %e, "pod watch error (retrying)");
                    continue;
                }
            };
            last = Some(pod.clone());
            let st = pod.status.clone().unwrap_or_default();
            if let Some(end) = self.pod_problem(name, &pod, &st) {
                break end;
            }
            let holder_running = container(&st.container_statuses, HOLDER)
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            if let (false, true, Some(upload)) = (uploaded, holder_running, upload) {
                let up = upload.send(&self.pods, name);
                tokio::select! {
                    _ = cancel.cancelled() => break End::Cancelled,
                    r = up => if let Err(e) = r { break End::Broken("PodFailed".into(), format!("cannot upload the workspaces: {e}")) },
                }
                uploaded = true;
                tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "workspaces uploaded");
            }
            if uploaded && holder_running && !sidecars_ok {
                let ready = match sidecars_ready(plan, &st) {
                    Ok(ready) => ready,
                    Err(msg) => break End::Broken("SidecarFailed".into(), msg),
                };
                if ready {
                    let cmd = "echo ok > /tekton/run/sidecars.tmp && mv /tekton/run/sidecars.tmp /tekton/run/sidecars";
                    let go = exec(&self.pods, name, HOLDER, vec!["sh".into(), "-c".into(), cmd.into()], None);
                    tokio::select! {
                        _ = cancel.cancelled() => break End::Cancelled,
                        r = go => if let Err(e) = r { break End::Broken("PodFailed".into(), format!("cannot start the steps: {e}")) },
                    }
                    sidecars_ok = true;
                }
            }
            for s in plan.sidecars.iter().chain(plan.steps.iter()) {
                let started = container(&st.container_statuses, &s.cname)
                    .and_then(|c| c.state.as_ref())
                    .is_some_and(|x| x.running.is_some() || x.terminated.is_some());
                if started && !followers.contains_key(&s.cname) {
                    followers.insert(s.cname.clone(), self.follow(name, req, s));
                }
            }
            // the steps in order: done when all ended, or when one failed for good
            if steps_ended(req, plan, &st) {
                break End::Steps;
            }
        };
        // one fresh read: the watch may lag the last container changes
        let last = match self.pods.get_opt(name).await {
            Ok(Some(p)) => p,
            _ => last.unwrap_or_default(),
        };
        Ok((end, last, followers))
    }

    /// Why the pod cannot run, if it cannot: a container stuck waiting, the pod failed
    /// (evicted, past its deadline), a PVC that does not exist, or the holder container
    /// ended.
    fn pod_problem(&self, name: &str, pod: &Pod, st: &PodStatus) -> Option<End> {
        if pod.metadata.deletion_timestamp.is_some() {
            return Some(End::Broken("PodDeleted".into(), format!("pod {name} was deleted by someone else")));
        }
        if let Some((reason, msg)) = waiting_problem(pod) {
            return Some(End::Broken(reason, msg));
        }
        if let Some(msg) = registry::fetch_failed(st, name) {
            return Some(End::Broken("PodFailed".into(), msg));
        }
        if st.phase.as_deref() == Some("Failed") || st.reason.is_some() {
            let reason = st.reason.clone().unwrap_or_default();
            let msg = st.message.clone().unwrap_or_default();
            return Some(match reason.as_str() {
                "DeadlineExceeded" => End::TimedOut,
                "Evicted" => End::Broken("Failed".into(), format!("pod {name} was evicted: {msg}")),
                _ => End::Broken("Failed".into(), format!("pod {name} failed: {reason} {msg}")),
            });
        }
        let missing_claim = st.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.message.as_deref().is_some_and(|m| m.contains("persistentvolumeclaim") && m.contains("not found"))
        });
        if let Some(c) = missing_claim {
            return Some(End::Broken(
                "InvalidWorkspaceBindings".into(),
                format!(
                    "{} in namespace {} (create the PVC, or pass --k8s-copy-pvc to use tenon's store)",
                    c.message.clone().unwrap_or_default(),
                    self.namespace
                ),
            ));
        }
        // the holder runs until the pod is deleted: if it ended, its hook could not place the
        // steps' entrypoint or it could not unpack the files
        let holder = container(&st.container_statuses, HOLDER).and_then(|c| c.state.clone());
        if let Some(t) = holder.as_ref().and_then(|s| s.terminated.as_ref()) {
            return Some(End::Broken(
                "PodFailed".into(),
                format!(
                    "container {HOLDER} (image {}) ended with code {}{}: does the helper image have a static busybox at /bin/busybox with sh, cp, base64 and tar? (--k8s-helper-image)",
                    self.args.helper_image,
                    t.exit_code,
                    t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                ),
            ));
        }
        None
    }

    /// Stream a step container's log live to the console and its log file.
    pub(super) fn follow(&self, pod: &str, req: &TaskRunRequest, s: &StepPlan) -> Follower {
        let pods = self.pods.clone();
        let console = self.console.clone();
        let (pod, label, step, cname) = (pod.to_string(), req.label.clone(), s.sname.clone(), s.cname.clone());
        let path = req.dir.join("logs").join(format!("{cname}.log"));
        let lines_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = lines_seen.clone();
        let handle = tokio::spawn(async move {
            use std::io::Write;
            let mut file = std::fs::File::create(&path).ok();
            let lp = LogParams { container: Some(cname.clone()), follow: true, ..Default::default() };
            match pods.log_stream(&pod, &lp).await {
                Ok(stream) => {
                    let mut lines = stream.lines();
                    while let Some(Ok(line)) = lines.next().await {
                        console.step_line(&label, &step, &line);
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(f) = file.as_mut() {
                            let _ = writeln!(f, "{line}");
                        }
                    }
                }
                Err(e) => tracing::debug!(pod = %pod, container = %cname, error = %e, "cannot stream logs"),
            }
        });
        Follower {
            handle,
            lines_seen,
            label: req.label.clone(),
            step: s.sname.clone(),
            path: req.dir.join("logs").join(format!("{}.log", s.cname)),
        }
    }

    /// Complete every log before the pod goes: a follow stream ends by itself when its
    /// container has ended, but the kubelet may notice that only seconds later (it checks a
    /// followed container's state every 5 s), so a stream still open after a moment is
    /// stopped and the container's whole log read once instead (the lines not shown yet go
    /// to the console). A sidecar still running gets its log so far.
    pub(super) async fn finish_logs(&self, pod: &str, followers: Followers) {
        let until = tokio::time::Instant::now() + Duration::from_millis(150);
        let done = followers.into_iter().map(|(cname, mut f)| async move {
            if tokio::time::timeout_at(until, &mut f.handle).await.is_ok() {
                return;
            }
            f.handle.abort();
            let _ = (&mut f.handle).await;
            let lp = LogParams { container: Some(cname.clone()), ..Default::default() };
            match self.pods.logs(pod, &lp).await {
                Ok(text) => {
                    use std::io::Write;
                    let seen = f.lines_seen.load(std::sync::atomic::Ordering::SeqCst);
                    let lines: Vec<&str> = text.lines().collect();
                    for line in lines.iter().skip(seen) {
                        self.console.step_line(&f.label, &f.step, line);
                    }
                    if let Ok(mut file) = std::fs::File::create(&f.path) {
                        for line in &lines {
                            let _ = writeln!(file, "{line}");
                        }
                    }
                }
                Err(e) => tracing::debug!(pod, container = %cname, error = %e, "cannot read the log"),
            }
        });
        futures::future::join_all(done).await;
    }

    /// Delete the pod without waiting: the outcome is known, the next task can start while
    /// the API server and the kubelet tear it down. [`Executor::close`] waits for the calls.
    pub(super) fn delete_later(&self, name: &str) {
        let (pods, name) = (self.pods.clone(), name.to_string());
        let handle = tokio::spawn(async move { delete_pod(&pods, &name).await });
        let mut pending = self.deletes.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }
}

/// Step outcomes from the last pod state, and the attempt's failure if any.
pub(super) fn step_outcomes(
    req: &TaskRunRequest,
    plan: &PodPlan,
    pod: &Pod,
    end: &End,
    logs_dir: &Path,
) -> (Vec<StepOutcome>, Option<Failure>) {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone());
    let mut failure: Option<Failure> = match end {
        End::Steps => None,
        End::Cancelled => Some(req.cancelled()),
        End::TimedOut => Some(req.timed_out()),
        End::Broken(reason, msg) => Some((AttemptStatus::Failed, reason.clone(), msg.clone())),
    };
    let mut out = Vec::new();
    let mut stopped = false;
    for (i, s) in plan.steps.iter().enumerate() {
        let cs = container(&statuses, &s.cname);
        let state = cs.and_then(|c| c.state.as_ref());
        let image_id =
            cs.map(|c| c.image_id.trim_start_matches("docker-pullable://").to_string()).filter(|x| !x.is_empty());
        let mut o = StepOutcome {
            name: s.sname.clone(),
            termination_reason: "Skipped".into(),
            exit_code: None,
            duration_ms: 0,
            log: logs_dir.join(format!("{}.log", s.cname)),
            image_id,
        };
        match (state.and_then(|x| x.terminated.as_ref()), state.is_some_and(|x| x.running.is_some())) {
            (Some(t), _) if !stopped => {
                let code = t.exit_code;
                o.exit_code = Some(code);
                if let (Some(a), Some(b)) = (millis(&t.started_at), millis(&t.finished_at)) {
                    o.duration_ms = (b - a).max(0) as u64;
                }
                if plan.skipped.contains(&i) {
                    o.termination_reason = "Skipped".into();
                    o.duration_ms = 0;
                    out.push(o);
                    continue;
                }
                let oom = t.reason.as_deref() == Some("OOMKilled");
                let cont = req.spec.steps[i].on_error.as_deref() == Some("continue");
                o.termination_reason = if code == 0 {
                    "Completed".into()
                } else if oom {
                    "OOMKilled".into()
                } else if cont {
                    "Continued".into()
                } else {
                    "Error".into()
                };
                if code != 0 && !cont {
                    stopped = true;
                    let why = if oom { " (OOMKilled: the step exceeded its memory limit)" } else { "" };
                    failure.get_or_insert((
                        AttemptStatus::Failed,
                        "Failed".into(),
                        format!("\"{}\" exited with code {code}{why}", s.cname),
                    ));
                }
            }
            (None, true) if !stopped => {
                o.termination_reason = match end {
                    End::TimedOut => "TimeoutExceeded".into(),
                    End::Cancelled => "Cancelled".into(),
                    _ => "Error".into(),
                };
                stopped = true;
            }
            _ => {}
        }
        out.push(o);
    }
    (out, failure)
}

/// Whether every sidecar is ready (or ended well), so the steps can start; the error of a
/// sidecar that exited with a failure (the last one seen).
fn sidecars_ready(plan: &PodPlan, st: &PodStatus) -> Result<bool, String> {
    let mut ready = true;
    let mut broken = None;
    for sc in &plan.sidecars {
        let cs = container(&st.container_statuses, &sc.cname);
        let term = cs.and_then(|c| c.state.as_ref()).and_then(|x| x.terminated.as_ref());
        match (cs, term) {
            (_, Some(t)) if t.exit_code != 0 => {
                broken =
                    Some(format!("sidecar {:?} exited with code {} before the steps started", sc.cname, t.exit_code))
            }
            (_, Some(_)) => {}
            (Some(c), None) if c.ready => {}
            _ => ready = false,
        }
    }
    match broken {
        Some(msg) => Err(msg),
        None => Ok(ready),
    }
}

/// Whether the steps are done, taken in order: all ended, or one failed for good (not
/// onError: continue).
fn steps_ended(req: &TaskRunRequest, plan: &PodPlan, st: &PodStatus) -> bool {
    let mut all = true;
    let mut stop = false;
    for (i, s) in plan.steps.iter().enumerate() {
        let Some(t) = container(&st.container_statuses, &s.cname)
            .and_then(|c| c.state.as_ref())
            .and_then(|x| x.terminated.as_ref())
        else {
            all = false;
            break;
        };
        let cont = req.spec.steps[i].on_error.as_deref() == Some("continue");
        if t.exit_code != 0 && !cont {
            stop = true;
            break;
        }
    }
    all || stop
}
