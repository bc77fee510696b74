//! Planning and building the Pod for one task attempt.

use super::*;
use crate::model::subst::Vars;

pub(super) fn unsupported(what: String) -> String {
    format!("unsupported by the kubernetes executor: {what}")
}

/// Translate the TaskRun into containers and copied volumes.
pub(super) fn plan(req: &TaskRunRequest, args: &KubeArgs, state_dir: &Path) -> Result<PodPlan, String> {
    let spec = &req.spec;
    let pvars = pod_path_vars(spec, &req.workspaces);
    let mut copied = Vec::new();
    let mut claims = Vec::new();
    let ws_mounts = workspace_mounts(req, args, state_dir, &mut copied, &mut claims);
    for (name, host) in &req.volumes {
        copied.push(Copied {
            volume: name.clone(),
            stage: format!("tenon/vol/{name}"),
            host: host.clone(),
            write_back: false,
        });
    }
    // isolated workspaces: once any step or sidecar lists one, only those containers see it
    let listed =
        |name: &str| spec.steps.iter().chain(spec.sidecars.iter()).any(|s| s.workspaces.iter().any(|u| u.name == name));
    let ctx = ContainerCtx { req, args, ws_mounts: &ws_mounts, listed: &listed };
    let mut steps = Vec::new();
    let mut scripts = Vec::new();
    let mut sidecars = Vec::new();
    let mut skipped = BTreeSet::new();
    for (i, raw) in spec.sidecars.iter().enumerate() {
        sidecars.push(sidecar_plan(&ctx, i, raw, &pvars, &mut scripts)?);
    }
    // the termination-message budget of each container (the kubelet's 12 KiB per pod,
    // split evenly, at most 4 KiB each), the holder counted
    let budget = message_budget(spec.sidecars.len() + spec.steps.len() + 1);
    let last = spec.steps.len().saturating_sub(1);
    for (i, raw) in spec.steps.iter().enumerate() {
        let shape = WrapperShape { has_sidecars: !sidecars.is_empty(), last: i == last, budget };
        let (step, when_ok) = step_plan(&ctx, i, raw, &pvars, &mut scripts, &shape)?;
        if !when_ok {
            skipped.insert(i);
        }
        steps.push(step);
    }
    Ok(PodPlan { steps, sidecars, skipped, copied, claims, scripts })
}

/// The mounts of the bound workspaces, as (ws name, volume, mount path, read-only,
/// subPath). A PVC workspace mounts the cluster's claim of that name (in `claims`, unless
/// `--copy-pvc`); every other one is a volume copied to and from the pod (in `copied`).
fn workspace_mounts(
    req: &TaskRunRequest,
    args: &KubeArgs,
    state_dir: &Path,
    copied: &mut Vec<Copied>,
    claims: &mut Vec<(String, String)>,
) -> Vec<(String, String, String, bool, Option<String>)> {
    let spec = &req.spec;
    // (ws name, volume, mount path, read-only, subPath)
    let mut ws_mounts: Vec<(String, String, String, bool, Option<String>)> = Vec::new();
    for w in &req.workspaces {
        let Some(host) = &w.path else { continue };
        let vol = dns_label(&format!("ws-{}", w.name));
        let mount = spec
            .workspaces
            .iter()
            .find(|d| d.name == w.name)
            .and_then(|d| d.mount_path.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("/workspace/{}", w.name));
        if w.kind.starts_with("persistentVolumeClaim:") && !args.copy_pvc {
            // the cluster's PVC of that name; the engine's host path is <store>/pvc/<claim>/<subPath>
            let sub = host
                .strip_prefix(state_dir.join("pvc").join(&w.claim))
                .ok()
                .map(|p| p.to_string_lossy().to_string())
                .filter(|p| !p.is_empty());
            claims.push((vol.clone(), w.claim.clone()));
            ws_mounts.push((w.name.clone(), vol, mount, w.read_only, sub));
            continue;
        }
        // two bindings of one host directory (one claim, with --copy-pvc) share one volume,
        // as they share the claim on a cluster: a write through one is seen through the other
        if let Some(c) = copied.iter_mut().find(|c| &c.host == host) {
            c.write_back |= !w.read_only;
            ws_mounts.push((w.name.clone(), c.volume.clone(), mount, w.read_only, None));
            continue;
        }
        copied.push(Copied {
            volume: vol.clone(),
            stage: format!("tenon/ws/{vol}"),
            host: host.clone(),
            write_back: !w.read_only,
        });
        ws_mounts.push((w.name.clone(), vol, mount, w.read_only, None));
    }
    ws_mounts
}

/// A sidecar's container. With a script or command, it starts once the files are
/// uploaded; without, it runs its image's entrypoint at once.
fn sidecar_plan(
    ctx: &ContainerCtx,
    i: usize,
    raw: &Step,
    pvars: &Vars,
    scripts: &mut Vec<(String, String)>,
) -> Result<StepPlan, String> {
    let step: Step = substitute_step(raw, pvars);
    let name = step.name.clone().unwrap_or_else(|| format!("sidecar-{i}"));
    let cname = dns_label(&format!("sidecar-{name}"));
    let image = step.image.clone().filter(|s| !s.is_empty()).ok_or_else(|| format!("sidecar {name:?} has no image"))?;
    let mut c = ctx.container(&step, &cname, &image)?;
    if let Some(argv) = argv_of(&step, &format!("sidecar-script-{i}"), scripts) {
        c["command"] = json!([
            BUSYBOX,
            "sh",
            "-c",
            format!("while [ ! -e /tekton/run/ready ]; do {BUSYBOX} usleep 20000; done\n{RESOLVE}exec \"$p\" \"$@\"\n")
        ]);
        c["args"] = json!(std::iter::once("tenon-sidecar".to_string()).chain(argv).collect::<Vec<_>>());
    } else if let Some(a) = &step.args {
        c["args"] = json!(a);
    }
    if let Some(p) = step.readiness_probe.clone() {
        c["readinessProbe"] = typed(p);
    }
    Ok(StepPlan { sname: cname.clone(), cname, container: c })
}

/// Bytes of termination message each of `containers` containers may write: the kubelet keeps
/// at most 4 KiB of one container's message and 12 KiB of a pod's, split evenly.
pub(super) fn message_budget(containers: usize) -> usize {
    (12 * 1024 / containers.max(1)).min(4096)
}

/// Where a step's wrapper sits in the pod.
pub(super) struct WrapperShape {
    pub has_sidecars: bool,
    /// The last step: its termination message carries the task results.
    pub last: bool,
    /// Termination-message bytes the container may write.
    pub budget: usize,
}

/// A step's container, which runs the step inside a wrapper script that orders the steps;
/// and whether its `when` holds (else the container only passes the previous step's
/// marker on). Errors for what the kubernetes executor cannot run.
fn step_plan(
    ctx: &ContainerCtx,
    i: usize,
    raw: &Step,
    pvars: &Vars,
    scripts: &mut Vec<(String, String)>,
    shape: &WrapperShape,
) -> Result<(StepPlan, bool), String> {
    let cname = step_container_name(raw, i);
    let sname = raw.name.clone().unwrap_or_else(|| format!("unnamed-{i}"));
    let mut vars = pvars.clone();
    for r in &raw.results {
        vars.set_str(format!("step.results.{}.path", r.name), format!("/tekton/steps/{cname}/results/{}", r.name));
    }
    let step: Step = substitute_step(raw, &vars);
    // step-level when: decided here, params being substituted already; a step it rules
    // out gets a container that only passes the previous step's marker on
    let when_ok = step_when_holds(&step, &sname)?;
    let step_timeout = step_timeout_secs(&step, &sname)?;
    if step.stdout_config.is_some() || step.stderr_config.is_some() {
        return Err(unsupported(format!("step {sname:?}: stdoutConfig/stderrConfig")));
    }
    let uses_step_results = |s: &str| s.contains("$(steps.") && s.contains(".results.");
    if step.command.iter().flatten().chain(step.args.iter().flatten()).any(|a| uses_step_results(a))
        || step.env.iter().any(|e| e.value.as_deref().is_some_and(uses_step_results))
    {
        return Err(unsupported(format!("step {sname:?}: step results of earlier steps in command/args/env")));
    }
    let image = step.image.clone().filter(|s| !s.is_empty()).ok_or_else(|| format!("step {sname:?} has no image"))?;
    let argv = argv_of(&step, &format!("script-{i}"), scripts)
        .or_else(|| image_default_command(&image, &step.args.clone().unwrap_or_default()).filter(|v| !v.is_empty()))
        .ok_or_else(|| format!(
            "step {sname:?} has neither command nor script, so it would run the entrypoint of image {image:?}, which tenon cannot look up without a registry (known: {}); add a command or script",
            KNOWN_IMAGES.join(", ")
        ))?;
    let cont = step.on_error.as_deref() == Some("continue");
    let reports = Reports {
        task: ctx.req.spec.results.iter().map(|r| r.name.clone()).collect(),
        step: raw.results.iter().map(|r| r.name.clone()).collect(),
    };
    let wrapper = step_wrapper(i, &cname, shape, when_ok, step_timeout, cont, &reports);
    let mut c = ctx.container(&step, &cname, &image)?;
    c["command"] = json!([BUSYBOX, "sh", "-c", wrapper]);
    c["args"] = json!(std::iter::once("tenon-step".to_string()).chain(argv).collect::<Vec<_>>());
    Ok((StepPlan { cname, sname, container: c }, when_ok))
}

/// Whether a step's `when` expressions hold; they cannot use earlier steps' results.
fn step_when_holds(step: &Step, sname: &str) -> Result<bool, String> {
    let mut when_ok = true;
    for w in &step.when {
        if serde_json::to_string(w).unwrap_or_default().contains("$(steps.") {
            return Err(unsupported(format!("step {sname:?}: a when expression on earlier steps' results")));
        }
        when_ok &= crate::model::cel::when_holds(w, &crate::model::subst::Vars::new())
            .map_err(|e| format!("step {sname:?}: when: {e}"))?;
    }
    Ok(when_ok)
}

/// A step's timeout in whole seconds (at least 1), if it has one.
fn step_timeout_secs(step: &Step, sname: &str) -> Result<Option<u64>, String> {
    Ok(match step.timeout.as_deref() {
        Some(t) => match crate::model::parse_duration(t) {
            Some(d) if !d.is_zero() => Some(d.as_secs_f64().ceil().max(1.0) as u64),
            Some(_) => None,
            None => return Err(format!("step {sname:?}: invalid timeout {t:?}")),
        },
        None => None,
    })
}

/// The results a step's termination message reports (declared names).
pub(super) struct Reports {
    pub task: Vec<String>,
    pub step: Vec<String>,
}

/// First line of the termination message a step's wrapper writes (see [`step_wrapper`]).
pub(super) const MESSAGE_MAGIC: &str = "tenon1";

/// The shell script step `i` runs in: it waits for the step before it (step 0 for the
/// upload and the sidecars), skips if that one failed or `when` rules this one out, runs
/// the step (under busybox `timeout` if it has one), records its exit code and passes on
/// its marker (ok also when it failed with `cont`, onError: continue).
///
/// Before it exits (not when it skips) it writes its termination message, Tekton's way of
/// returning results without a round trip: `tenon1\n`, then per file that exists
/// `<kind> <name> <bytes>\n<content>\n` (kind `s`: its own step results, `t`: the
/// `timedOut` marker, `f`: the `startFailed` marker, `r`: the task results, written only by the step that ends the chain:
/// the last one, or one that failed for good), then `end\n`. A message above the budget is
/// replaced by `tenon1 overflow`; tenon then reads the files with `tar` instead.
fn step_wrapper(
    i: usize,
    cname: &str,
    shape: &WrapperShape,
    when_ok: bool,
    step_timeout: Option<u64>,
    cont: bool,
    reports: &Reports,
) -> String {
    let mut wrapper = format!("B={BUSYBOX}; R=/tekton/run; S=/tekton/steps/{cname}; M=$R/m{i}\n");
    // the termination message: a(kind, name, file) adds a file that exists; m(1) also the
    // task results
    wrapper.push_str("a() { if [ -f \"$3\" ]; then n=`$B wc -c < \"$3\"`; echo \"$1 $2 $n\" >> $M; $B cat \"$3\" >> $M; echo >> $M; fi; }\n");
    wrapper.push_str(&format!(
        "m() {{ echo {MESSAGE_MAGIC} > $M; a t timedOut $S/timedOut; a f startFailed $S/startFailed"
    ));
    for r in &reports.step {
        wrapper.push_str(&format!("; a s {r} $S/results/{r}"));
    }
    wrapper.push_str("; if [ \"$1\" = 1 ]; then :");
    for r in &reports.task {
        wrapper.push_str(&format!("; a r {r} /tekton/results/{r}"));
    }
    wrapper.push_str(&format!(
        "; fi; echo end >> $M; if [ `$B wc -c < $M` -le {} ]; then $B cat $M > /dev/termination-log; else echo '{MESSAGE_MAGIC} overflow' > /dev/termination-log; fi; }}\n",
        shape.budget
    ));
    let last = if shape.last { 1 } else { 0 };
    // step 0 waits for the upload (and the sidecars), every other step for the one before it
    let mut waits = vec![if i == 0 { "ready".to_string() } else { format!("step-{}", i - 1) }];
    if i == 0 && shape.has_sidecars {
        waits.push("sidecars".into());
    }
    for w in waits {
        wrapper.push_str(&format!(
            "while [ ! -e $R/{w} ]; do $B usleep 20000; done\nread s < $R/{w}\nif [ \"$s\" != ok ]; then echo skip > $R/t{i}; $B mv $R/t{i} $R/step-{i}; exit 0; fi\n"
        ));
    }
    if !when_ok {
        wrapper.push_str(&format!(
            "$B printf 0 > $S/exitCode\necho ok > $R/t{i}; $B mv $R/t{i} $R/step-{i}\nm {last}\nexit 0\n"
        ));
    }
    wrapper.push_str(RESOLVE);
    // a step that cannot start (no such program, or its shebang's interpreter is missing)
    // fails even with onError: continue, as Tekton's entrypoint fails it (local.rs too)
    wrapper.push_str(&format!(
        "x=$p; l=; [ -f \"$p\" ] && IFS= read -r l < \"$p\"\ncase $l in '#!'*) x=${{l#??}}; x=${{x#\"${{x%%[! ]*}}\"}}; x=${{x%% *}};; esac\nif [ ! -x \"$p\" ] || [ ! -x \"$x\" ]; then\nif [ -e \"$x\" ]; then e='Permission denied'; else e='No such file or directory'; fi\necho \"cannot run $x: $e\" | $B tee /tekton/steps/{cname}/startFailed >&2\necho fail > $R/t{i}; $B mv $R/t{i} $R/step-{i}; m 1; exit 127\nfi\n"
    ));
    match step_timeout {
        // busybox timeout ends the step with SIGTERM; the marker tells a timeout from a
        // failure that happened to take as long
        Some(secs) => wrapper.push_str(&format!(
            "s0=`$B date +%s`\n$B timeout -s TERM {secs} \"$p\" \"$@\"\nc=$?\nt1=`$B date +%s`\nif [ $c != 0 ] && [ `$B expr $t1 - $s0` -ge {secs} ]; then echo {secs} > $S/timedOut; fi\n"
        )),
        None => wrapper.push_str("\"$p\" \"$@\"\nc=$?\n"),
    }
    let cont = if cont { 1 } else { 0 };
    wrapper.push_str(&format!(
        "$B printf %s $c > $S/exitCode\nif [ $c = 0 ] || [ {cont} = 1 ]; then echo ok > $R/t{i}; e={last}; else echo fail > $R/t{i}; e=1; fi\n$B mv $R/t{i} $R/step-{i}\nm $e\nexit $c\n"
    ));
    wrapper
}

/// Wrapper lines that resolve a bare command name (`$1`) on the image's PATH into `$p`:
/// busybox's sh would otherwise prefer its own applet of that name (sh, cat, ...) to the
/// image's binary.
pub(super) const RESOLVE: &str = "p=$1; shift\ncase $p in */*) ;; *) IFS=:; for d in $PATH; do if [ -f \"$d/$p\" ] && [ -x \"$d/$p\" ]; then p=$d/$p; break; fi; done; unset IFS;; esac\n";

/// Scalars of a probe or securityContext as Kubernetes types them: tenon's YAML model keeps
/// them as strings (`periodSeconds: "1"`), the pod API wants numbers and booleans.
pub(super) fn typed(v: Value) -> Value {
    fn walk(key: &str, v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let t = walk(&k, v);
                        (k, t)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| walk(key, x)).collect()),
            Value::String(s) => {
                let int = key.ends_with("Seconds")
                    || key.ends_with("Threshold")
                    || matches!(key, "runAsUser" | "runAsGroup" | "port");
                let boolean = matches!(
                    key,
                    "privileged" | "readOnlyRootFilesystem" | "runAsNonRoot" | "allowPrivilegeEscalation" | "optional"
                );
                match s.parse::<i64>() {
                    Ok(n) if int => json!(n),
                    _ if boolean && (s == "true" || s == "false") => json!(s == "true"),
                    _ => Value::String(s),
                }
            }
            other => other,
        }
    }
    walk("", v)
}

/// A step's or sidecar's real argv: its script (written to `/tekton/scripts/<file>`, with
/// `#!/bin/sh` + `set -e` unless it has a shebang) or command, plus args; `None` for neither.
pub(super) fn argv_of(step: &Step, file: &str, scripts: &mut Vec<(String, String)>) -> Option<Vec<String>> {
    let args = step.args.clone().unwrap_or_default();
    if let Some(script) = &step.script {
        let body =
            if script.trim_start().starts_with("#!") { script.clone() } else { format!("#!/bin/sh\nset -e\n{script}") };
        scripts.push((file.to_string(), body));
        let mut v = vec![format!("/tekton/scripts/{file}")];
        v.extend(args);
        return Some(v);
    }
    let mut v = step.command.clone().filter(|c| !c.is_empty())?;
    v.extend(args);
    Some(v)
}

impl ContainerCtx<'_> {
    /// The container of a step or sidecar, without command and args.
    pub(super) fn container(&self, step: &Step, cname: &str, image: &str) -> Result<Value, String> {
        let mut env: Vec<Value> = Vec::new();
        if !step.env.iter().any(|e| e.name == "HOME") {
            env.push(json!({"name": "HOME", "value": "/tekton/home"}));
        }
        for e in &step.env {
            env.push(json!({"name": e.name, "value": e.value.clone().unwrap_or_default()}));
        }
        let mut mounts = vec![
            json!({"name": "tekton-internal", "mountPath": "/tekton"}),
            json!({"name": "tekton-workspace", "mountPath": "/workspace"}),
        ];
        for (wname, vol, at, ro, sub) in self.ws_mounts {
            let at = if (self.listed)(wname) {
                match step.workspaces.iter().find(|u| &u.name == wname) {
                    Some(u) => u.mount_path.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| at.clone()),
                    None => continue,
                }
            } else {
                at.clone()
            };
            let mut m = json!({"name": vol, "mountPath": at, "readOnly": ro});
            if let Some(sp) = sub {
                m["subPath"] = json!(sp);
            }
            mounts.push(m);
        }
        for m in &step.volume_mounts {
            let known =
                self.req.volumes.contains_key(&m.name) || self.ws_mounts.iter().any(|(_, v, _, _, _)| v == &m.name);
            if !known {
                return Err(format!("volumeMount {:?}: no volume named {:?} in the Task", m.mount_path, m.name));
            }
            // the step's own mount wins over an implicit one at the same path (/workspace, a
            // workspace a sidecar mounts explicitly), as Tekton's pod builder does
            mounts.retain(|x| x["mountPath"] != m.mount_path.as_str() || x["name"] == "tekton-internal");
            let mut vm = json!({"name": m.name, "mountPath": m.mount_path, "readOnly": m.read_only});
            if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                vm["subPath"] = json!(sp);
            }
            mounts.push(vm);
        }
        let mut c = json!({
            "name": cname,
            "image": image,
            "imagePullPolicy": step.image_pull_policy.clone().unwrap_or_else(|| self.args.pull_policy.clone()),
            "env": env,
            "workingDir": step.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/workspace".into()),
            "volumeMounts": mounts,
        });
        if let Some(r) = step.compute_resources.clone().or(step.resources.clone()) {
            c["resources"] = r;
        }
        if let Some(sc) = step.security_context.clone() {
            c["securityContext"] = typed(sc);
        }
        if !step.env_from.is_empty() {
            // ConfigMaps/Secrets of the pod's namespace, as Kubernetes resolves them
            c["envFrom"] = typed(Value::Array(step.env_from.clone()));
        }
        Ok(c)
    }
}

/// The pod. `embedded`: the upload (base64 of its tar) when it is small enough to travel in
/// the pod spec; the holder unpacks it as it starts, so the steps need no exec round trip.
pub(super) fn build_pod(
    name: &str,
    req: &TaskRunRequest,
    args: &KubeArgs,
    owner: &str,
    plan: &PodPlan,
    embedded: Option<&str>,
) -> Result<Pod, String> {
    let mut helper_mounts = vec![json!({"name": "tekton-internal", "mountPath": "/tekton"})];
    let mut volumes =
        vec![json!({"name": "tekton-internal", "emptyDir": {}}), json!({"name": "tekton-workspace", "emptyDir": {}})];
    for (vol, claim) in &plan.claims {
        volumes.push(json!({"name": vol, "persistentVolumeClaim": {"claimName": claim}}));
    }
    for c in &plan.copied {
        volumes.push(json!({"name": c.volume, "emptyDir": {}}));
        helper_mounts.push(json!({"name": c.volume, "mountPath": format!("/{}", c.stage)}));
    }
    // The holder comes first: the kubelet starts a pod's containers one by one, in order, and
    // runs a postStart hook before it starts the next container, so the hook's copy of the
    // static busybox is in place before any step starts (without an init container, whose
    // exit the kubelet only notices at its next relist, up to a second later).
    let holder = json!({
        "name": HOLDER,
        "image": args.helper_image,
        "imagePullPolicy": args.pull_policy,
        "command": ["sh", "-c", HOLDER_SCRIPT, HOLDER, embedded.unwrap_or("")],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", PREPARE_SCRIPT]}}},
        "volumeMounts": helper_mounts,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    });
    let mut containers: Vec<Value> = vec![holder];
    containers.extend(plan.sidecars.iter().chain(plan.steps.iter()).map(|s| s.container.clone()));
    let mut labels = BTreeMap::new();
    for (k, v) in &args.labels {
        labels.insert(k.clone(), v.clone());
    }
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels.insert(OWNER_LABEL.to_string(), owner.to_string());
    labels.insert(SESSION_LABEL.to_string(), session().to_string());
    labels.insert(TASKRUN_LABEL.to_string(), dns_label(&req.name));
    labels.insert(ATTEMPT_LABEL.to_string(), req.attempt.to_string());
    let mut annotations: BTreeMap<String, String> = args.annotations.iter().cloned().collect();
    annotations.insert("tenon.dev/taskrun-name".into(), req.name.clone());
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": containers,
        "volumes": volumes,
        "automountServiceAccountToken": args.service_account.is_some(),
    });
    if let Some(t) = req.timeout.filter(|t| !t.is_zero()) {
        spec["activeDeadlineSeconds"] = json!(t.as_secs() + DEADLINE_SLACK);
    }
    if let Some(sa) = &args.service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    if !args.node_selector.is_empty() {
        spec["nodeSelector"] = json!(args.node_selector.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    if !args.tolerations.is_empty() {
        spec["tolerations"] = json!(args.tolerations);
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    });
    serde_json::from_value(pod).map_err(|e| format!("invalid pod spec: {e}"))
}
