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
        let upload = upload_plan(&plan)?;
        let name = pod_name(&req.name, req.attempt, &req.dir);
        let pod = build_pod(&name, req, &self.args, &self.owner, &plan)?;
        let started = Instant::now();
        self.create(&name, &pod).await?;
        tracing::debug!(pod = %name, namespace = %self.namespace, "pod created");

        let result = self.drive(&name, req, &plan, &upload, cancel, started).await;
        let (end, last, followers) = match result {
            Ok(x) => x,
            Err(e) => {
                delete_pod(&self.pods, &name).await;
                return Ok(failed("PodFailed", e, vec![]));
            }
        };
        tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "steps ended");
        // read back what the steps produced while the holder still runs
        let holder_up = container(&last.status.as_ref().and_then(|s| s.container_statuses.clone()), HOLDER)
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some());
        let mut download_err = None;
        let mut downloaded = None;
        if matches!(end, End::Steps) && holder_up {
            match self.download(&name, &plan, &req.dir.join("pod-files")).await {
                Ok(d) => downloaded = Some(d),
                Err(e) => download_err = Some(e),
            }
        }
        tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "files read back");
        delete_pod(&self.pods, &name).await;
        let (mut steps_out, failure) = step_outcomes(req, &plan, &last, &end, &logs_dir);
        // step logs end with their containers; a sidecar's stream may outlive the pod's
        // deletion by seconds and is cut short
        for (cname, f) in followers {
            let wait = if cname.starts_with("sidecar-") { 500 } else { 10_000 };
            let abort = f.abort_handle();
            if tokio::time::timeout(Duration::from_millis(wait), f).await.is_err() {
                abort.abort();
            }
        }
        let mut failure = failure;
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
                let empty = BTreeSet::new();
                if let Err(e) =
                    write_back(&dir.join(&c.stage), &c.host, upload.manifests.get(&c.stage).unwrap_or(&empty))
                {
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
    /// uploading the files when `prepare` runs and following step logs as they start.
    pub(super) async fn drive(
        &self,
        name: &str,
        req: &TaskRunRequest,
        plan: &PodPlan,
        upload: &Upload,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<(End, Pod, BTreeMap<String, tokio::task::JoinHandle<()>>), String> {
        let mut followers: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher::watcher(self.pods.clone(), cfg).default_backoff().boxed();
        let deadline = req.timeout.filter(|t| !t.is_zero()).map(|t| tokio::time::Instant::from_std(started + t));
        let mut uploaded = false;
        let mut sidecars_ok = plan.sidecars.is_empty();
        let mut last: Option<Pod> = None;
        let end = loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => break End::Cancelled,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break End::TimedOut,
                ev = stream.try_next() => ev,
            };
            let pod = match ev {
                Ok(Some(Event::Apply(p) | Event::InitApply(p))) => p,
                Ok(Some(Event::Delete(_))) => {
                    break End::Broken("PodDeleted".into(), format!("pod {name} was deleted by someone else"))
                }
                Ok(Some(_)) => continue,
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
            if !uploaded && holder_running {
                let up = upload.send(&self.pods, name);
                tokio::select! {
                    _ = cancel.cancelled() => break End::Cancelled,
                    r = up => if let Err(e) = r { break End::Broken("PodFailed".into(), format!("cannot upload the workspaces: {e}")) },
                }
                uploaded = true;
                tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "workspaces uploaded");
            }
            if uploaded && !sidecars_ok {
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
    /// (evicted, past its deadline), a PVC that does not exist, or the prepare container
    /// failed.
    fn pod_problem(&self, name: &str, pod: &Pod, st: &PodStatus) -> Option<End> {
        if let Some((reason, msg)) = waiting_problem(pod) {
            return Some(End::Broken(reason, msg));
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
        let prep = container(&st.init_container_statuses, PREPARE).and_then(|c| c.state.clone());
        if let Some(t) = prep.as_ref().and_then(|s| s.terminated.as_ref()) {
            if t.exit_code != 0 {
                return Some(End::Broken(
                    "PodFailed".into(),
                    format!(
                        "container {PREPARE} (image {}) exited with code {}: does the helper image have /bin/busybox? (--k8s-helper-image)",
                        self.args.helper_image, t.exit_code
                    ),
                ));
            }
        }
        None
    }

    /// Stream a step container's log live to the console and its log file.
    pub(super) fn follow(&self, pod: &str, req: &TaskRunRequest, s: &StepPlan) -> tokio::task::JoinHandle<()> {
        let pods = self.pods.clone();
        let console = self.console.clone();
        let (pod, label, step, cname) = (pod.to_string(), req.label.clone(), s.sname.clone(), s.cname.clone());
        let path = req.dir.join("logs").join(format!("{cname}.log"));
        tokio::spawn(async move {
            use std::io::Write;
            let mut file = std::fs::File::create(&path).ok();
            let lp = LogParams { container: Some(cname.clone()), follow: true, ..Default::default() };
            match pods.log_stream(&pod, &lp).await {
                Ok(stream) => {
                    let mut lines = stream.lines();
                    while let Some(Ok(line)) = lines.next().await {
                        console.step_line(&label, &step, &line);
                        if let Some(f) = file.as_mut() {
                            let _ = writeln!(f, "{line}");
                        }
                    }
                }
                Err(e) => tracing::debug!(pod = %pod, container = %cname, error = %e, "cannot stream logs"),
            }
        })
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
