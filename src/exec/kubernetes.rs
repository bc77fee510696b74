//! The Kubernetes executor: one pod per TaskRun attempt, driven through the API server.
//!
//! Pod layout (the design and its limits are in README.md, "The Kubernetes executor"):
//!
//! - init container `prepare` (the helper image, a static busybox): copies `/bin/busybox` to
//!   `/tekton/bin/busybox`;
//! - container `tenon-holder` (the helper image): tenon uploads the TaskRun's files into it
//!   (scripts and the host workspaces, as one tar through `pods/exec`) and, after the last step,
//!   reads the results and the workspaces back (`tar`), whatever the outcome; then tenon
//!   deletes the pod;
//! - one container per step, all started together as Tekton does; each runs the static busybox
//!   from `/tekton/bin` as its entrypoint (`sh -c WRAPPER -- <the step's real argv>`), waits for
//!   the upload (step 0) or the previous step's marker in `/tekton/run`, runs the step, writes
//!   its exit code and a marker (`ok`, or `fail` which makes every later step skip itself), and
//!   exits with the step's code.
//!
//! Workspaces are `emptyDir` volumes filled from, and written back to, the host directories the
//! engine binds, so caching and outputs behave exactly as with the local executor, and a source
//! the cluster cannot reach (a directory) works. Every wait is a watch, never a poll of the API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt as _, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::common::normalize_image;
use super::common::{collect_results, failed, finish, image_default_command, pod_path_vars, substitute_step};
use super::common::{step_container_name, KNOWN_IMAGES};
use super::{AttemptStatus, BoxFuture, Executor, StepOutcome, TaskOutcome, TaskRunRequest};
use crate::model::Step;
use crate::ui::Console;

/// Label on every pod tenon creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tenon");
/// Label naming the tenon store (instance) that owns a pod: a restarted tenon on the same
/// store deletes the pods its previous process left behind.
pub const OWNER_LABEL: &str = "tenon.dev/owner";
/// Label naming the tenon process (a random id per process): the start-up sweep spares the
/// pods of its own process, so constructing the executor again (each reconcile of
/// `tenon watch`) never deletes pods still in use.
pub const SESSION_LABEL: &str = "tenon.dev/session";
pub const TASKRUN_LABEL: &str = "tenon.dev/taskrun";

/// This process's session id.
pub fn session() -> &'static str {
    static SESSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SESSION.get_or_init(|| {
        let seed = format!("{:?} {} session", std::time::SystemTime::now(), std::process::id());
        crate::hash::sha256_hex(seed.as_bytes())[..16].to_string()
    })
}
pub const ATTEMPT_LABEL: &str = "tenon.dev/attempt";

const HOLDER: &str = "tenon-holder";
const PREPARE: &str = "prepare";
/// The helper image's busybox, copied into the pod as every step's entrypoint.
const BUSYBOX: &str = "/tekton/bin/busybox";
/// Extra seconds of `activeDeadlineSeconds` beyond the task timeout: tenon deletes the pod at
/// the timeout itself; the deadline only bounds a pod whose tenon died.
const DEADLINE_SLACK: u64 = 30;

/// `tenon run --executor kubernetes` settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Namespace of the task pods (default: the kubeconfig context's, or the pod's own in-cluster).
    #[arg(long = "k8s-namespace", env = "TENON_K8S_NAMESPACE", value_name = "NS")]
    pub k8s_namespace: Option<String>,
    /// kubeconfig file (default: in-cluster config when running in a pod, else $KUBECONFIG or ~/.kube/config).
    #[arg(long = "k8s-kubeconfig", env = "TENON_K8S_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current context).
    #[arg(long = "k8s-context", value_name = "NAME")]
    pub context: Option<String>,
    /// ServiceAccount of the task pods (default: none mounted).
    #[arg(long = "k8s-service-account", value_name = "NAME")]
    pub service_account: Option<String>,
    /// imagePullPolicy of containers whose step does not set one.
    #[arg(long = "k8s-image-pull-policy", value_name = "POLICY", default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub pull_policy: String,
    /// Image of the prepare/holder containers; must contain a static busybox at /bin/busybox.
    #[arg(
        long = "k8s-helper-image",
        env = "TENON_K8S_HELPER_IMAGE",
        value_name = "IMAGE",
        default_value = "docker.io/library/busybox:1.36"
    )]
    pub helper_image: String,
    /// Extra label on task pods: KEY=VALUE. Repeatable.
    #[arg(long = "k8s-label", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// Annotation on task pods: KEY=VALUE. Repeatable.
    #[arg(long = "k8s-annotation", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub annotations: Vec<(String, String)>,
    /// nodeSelector entry of task pods: KEY=VALUE. Repeatable.
    #[arg(long = "k8s-node-selector", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub node_selector: Vec<(String, String)>,
    /// Toleration of task pods: KEY[=VALUE]:EFFECT (EFFECT NoSchedule, PreferNoSchedule or
    /// NoExecute; `KEY:EFFECT` tolerates any value). Repeatable.
    #[arg(long = "k8s-toleration", value_name = "KEY[=VALUE]:EFFECT", value_parser = parse_toleration)]
    pub tolerations: Vec<Value>,
    /// Copy `persistentVolumeClaim` workspaces from tenon's store (`<store>/pvc/<claim>`), as
    /// the local executor uses them, instead of mounting the cluster's PVC of that name.
    #[arg(long = "k8s-copy-pvc")]
    pub copy_pvc: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_toleration(s: &str) -> Result<Value, String> {
    let (kv, effect) = s.rsplit_once(':').ok_or_else(|| format!("expected KEY[=VALUE]:EFFECT, got {s:?}"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("{s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"));
    }
    Ok(match kv.split_once('=') {
        Some((k, v)) => json!({"key": k, "operator": "Equal", "value": v, "effect": effect}),
        None => json!({"key": kv, "operator": "Exists", "effect": effect}),
    })
}

/// A client from an explicit kubeconfig (and context), or inferred: in-cluster config inside
/// a pod, else $KUBECONFIG / ~/.kube/config.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Client, String> {
    let opts = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| format!("cannot load the kubeconfig context {context:?}: {e}"))?,
        None => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration found (in-cluster, $KUBECONFIG, ~/.kube/config): {e}; pass --k8s-kubeconfig")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot create a Kubernetes client: {e}"))
}

/// Runs each TaskRun attempt as a pod.
pub struct KubernetesExecutor {
    pods: Api<Pod>,
    state_dir: PathBuf,
    client: kube::Client,
    namespace: String,
    args: KubeArgs,
    owner: String,
    console: Arc<Console>,
}

impl KubernetesExecutor {
    /// Connect (checking the namespace is reachable) for the store `state_dir` (its owner
    /// id labels the pods, see [`store_owner`]).
    pub async fn connect(args: KubeArgs, state_dir: &Path, console: Arc<Console>) -> Result<Self, String> {
        let owner = store_owner(state_dir)?;
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let namespace = args.k8s_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        pods.list(&ListParams::default().limit(1))
            .await
            .map_err(|e| format!("cannot list pods in namespace {namespace:?}: {}", kube_msg(&e)))?;
        Ok(KubernetesExecutor { pods, state_dir: state_dir.to_path_buf(), client, namespace, args, owner, console })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Delete the pods a previous tenon process on the same store left behind (killed
    /// mid-run): their runs are gone with that process; the engine starts fresh ones. Pods of
    /// this process are spared.
    pub async fn sweep(&self) -> Result<usize, String> {
        let sel =
            format!("{}={},{OWNER_LABEL}={},{SESSION_LABEL}!={}", MANAGED_BY.0, MANAGED_BY.1, self.owner, session());
        let list = self
            .pods
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(|e| format!("cannot list tenon's pods: {}", kube_msg(&e)))?;
        let mut n = 0;
        for p in list.items {
            let Some(name) = p.metadata.name else { continue };
            tracing::warn!(pod = %name, "deleting a pod left by a previous tenon process on this store");
            self.console.line(&format!("kubernetes: deleting pod {name} left by a previous tenon process"));
            delete_pod(&self.pods, &name).await;
            n += 1;
        }
        Ok(n)
    }

    /// Image name -> digest for every image the nodes report with a digest (`status.images`
    /// names): the cache key of a step then carries its image's digest, so a moved tag misses.
    /// Names are normalized ([`normalize_image`]); several nodes with different digests for
    /// one name give them all, comma-separated.
    pub async fn image_digests(&self) -> BTreeMap<String, String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Ok(list) = nodes.list(&ListParams::default()).await else {
            return BTreeMap::new();
        };
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in list.items {
            for img in n.status.and_then(|s| s.images).unwrap_or_default() {
                let names = img.names.unwrap_or_default();
                let digests: Vec<String> =
                    names.iter().filter_map(|x| x.split_once("@sha256:").map(|(_, d)| format!("sha256:{d}"))).collect();
                for name in names.iter().filter(|x| !x.contains('@')) {
                    seen.entry(normalize_image(name)).or_default().extend(digests.iter().cloned());
                }
            }
        }
        seen.into_iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(k, d)| (k, d.into_iter().collect::<Vec<_>>().join(",")))
            .collect()
    }
}

/// The owner id of a store: a random id kept in `<state>/k8s-owner`.
pub fn store_owner(state_dir: &Path) -> Result<String, String> {
    let f = state_dir.join("k8s-owner");
    if let Ok(s) = std::fs::read_to_string(&f) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let seed = format!("{:?} {} {:?}", std::time::SystemTime::now(), std::process::id(), state_dir);
    let id = crate::hash::sha256_hex(seed.as_bytes())[..16].to_string();
    std::fs::write(&f, &id).map_err(|e| format!("cannot write {}: {e}", f.display()))?;
    Ok(id)
}

fn kube_msg(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}

async fn delete_pod(pods: &Api<Pod>, name: &str) {
    let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    match pods.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => tracing::warn!(pod = name, error = %e, "could not delete pod"),
    }
}

/// A valid pod name (DNS-1123, at most 63 characters so it is also a label value):
/// `<taskrun>-pod[-retry<N>]-<5 hex of the attempt's directory>`. TaskRun names repeat from
/// run to run here, and a pod deleted at once (grace 0) may still be torn down by the kubelet
/// when the next run starts: a name of its own per attempt keeps exec and logs of the new pod
/// from ever reaching the old one.
pub fn pod_name(taskrun: &str, attempt: u32, attempt_dir: &Path) -> String {
    let tag = &crate::hash::sha256_hex(attempt_dir.as_os_str().as_encoded_bytes())[..5];
    let retry = if attempt == 0 { String::new() } else { format!("-retry{attempt}") };
    let base = dns_label(&format!("{taskrun}-pod{retry}"));
    let mut base = base.chars().take(63 - 6).collect::<String>();
    base = base.trim_end_matches('-').to_string();
    format!("{base}-{tag}")
}

fn dns_label(s: &str) -> String {
    let mut out: String =
        s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    out = out.trim_matches('-').to_string();
    if out.len() > 63 || out != s {
        let h = &crate::hash::sha256_hex(s.as_bytes())[..8];
        out.truncate(54);
        out = format!("{}-{h}", out.trim_end_matches('-'));
    }
    if out.is_empty() {
        out = "tenon".into();
    }
    out
}

/// A workspace or Task volume copied into the pod.
struct Copied {
    /// Pod volume name.
    volume: String,
    /// Where the helper containers see it: `tenon/ws/<name>` or `tenon/vol/<name>` (no leading /).
    stage: String,
    host: PathBuf,
    /// Written back to the host after the steps.
    write_back: bool,
}

struct StepPlan {
    cname: String,
    sname: String,
    container: Value,
}

struct PodPlan {
    steps: Vec<StepPlan>,
    sidecars: Vec<StepPlan>,
    /// Steps their `when` rules out.
    skipped: BTreeSet<usize>,
    copied: Vec<Copied>,
    /// (volume, claim name) of workspaces mounted from the cluster's PVCs.
    claims: Vec<(String, String)>,
    scripts: Vec<(String, String)>,
}

fn unsupported(what: String) -> String {
    format!("unsupported by the kubernetes executor: {what}")
}

/// Translate the TaskRun into containers and copied volumes.
fn plan(req: &TaskRunRequest, args: &KubeArgs, state_dir: &Path) -> Result<PodPlan, String> {
    let spec = &req.spec;
    let pvars = pod_path_vars(spec, &req.workspaces);
    let mut copied = Vec::new();
    let mut claims = Vec::new();
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
        copied.push(Copied {
            volume: vol.clone(),
            stage: format!("tenon/ws/{vol}"),
            host: host.clone(),
            write_back: !w.read_only,
        });
        ws_mounts.push((w.name.clone(), vol, mount, w.read_only, None));
    }
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
        let step: Step = substitute_step(raw, &pvars);
        let name = step.name.clone().unwrap_or_else(|| format!("sidecar-{i}"));
        let cname = dns_label(&format!("sidecar-{name}"));
        let image =
            step.image.clone().filter(|s| !s.is_empty()).ok_or_else(|| format!("sidecar {name:?} has no image"))?;
        let mut c = ctx.container(&step, &cname, &image)?;
        // with a script or command, it starts once the files are uploaded; without, it runs
        // its image's entrypoint at once
        if let Some(argv) = argv_of(&step, &format!("sidecar-script-{i}"), &mut scripts) {
            c["command"] = json!([
                BUSYBOX,
                "sh",
                "-c",
                format!(
                    "while [ ! -e /tekton/run/ready ]; do {BUSYBOX} usleep 20000; done\n{RESOLVE}exec \"$p\" \"$@\"\n"
                )
            ]);
            c["args"] = json!(std::iter::once("tenon-sidecar".to_string()).chain(argv).collect::<Vec<_>>());
        } else if let Some(a) = &step.args {
            c["args"] = json!(a);
        }
        if let Some(p) = step.readiness_probe.clone() {
            c["readinessProbe"] = typed(p);
        }
        sidecars.push(StepPlan { sname: cname.clone(), cname, container: c });
    }
    for (i, raw) in spec.steps.iter().enumerate() {
        let cname = step_container_name(raw, i);
        let sname = raw.name.clone().unwrap_or_else(|| format!("unnamed-{i}"));
        let mut vars = pvars.clone();
        for r in &raw.results {
            vars.set_str(format!("step.results.{}.path", r.name), format!("/tekton/steps/{cname}/results/{}", r.name));
        }
        let step: Step = substitute_step(raw, &vars);
        // step-level when: decided here, params being substituted already; a step it rules
        // out gets a container that only passes the previous step's marker on
        let mut when_ok = true;
        for w in &step.when {
            if serde_json::to_string(w).unwrap_or_default().contains("$(steps.") {
                return Err(unsupported(format!("step {sname:?}: a when expression on earlier steps' results")));
            }
            when_ok &= crate::cel::when_holds(w, &crate::subst::Vars::new())
                .map_err(|e| format!("step {sname:?}: when: {e}"))?;
        }
        if !when_ok {
            skipped.insert(i);
        }
        let step_timeout = match step.timeout.as_deref() {
            Some(t) => match crate::model::parse_duration(t) {
                Some(d) if !d.is_zero() => Some(d.as_secs_f64().ceil().max(1.0) as u64),
                Some(_) => None,
                None => return Err(format!("step {sname:?}: invalid timeout {t:?}")),
            },
            None => None,
        };
        if step.stdout_config.is_some() || step.stderr_config.is_some() {
            return Err(unsupported(format!("step {sname:?}: stdoutConfig/stderrConfig")));
        }
        let uses_step_results = |s: &str| s.contains("$(steps.") && s.contains(".results.");
        if step.command.iter().flatten().chain(step.args.iter().flatten()).any(|a| uses_step_results(a))
            || step.env.iter().any(|e| e.value.as_deref().is_some_and(uses_step_results))
        {
            return Err(unsupported(format!("step {sname:?}: step results of earlier steps in command/args/env")));
        }
        let image =
            step.image.clone().filter(|s| !s.is_empty()).ok_or_else(|| format!("step {sname:?} has no image"))?;
        let argv = argv_of(&step, &format!("script-{i}"), &mut scripts)
            .or_else(|| image_default_command(&image, &step.args.clone().unwrap_or_default()).filter(|v| !v.is_empty()))
            .ok_or_else(|| format!(
                "step {sname:?} has neither command nor script, so it would run the entrypoint of image {image:?}, which tenon cannot look up without a registry (known: {}); add a command or script",
                KNOWN_IMAGES.join(", ")
            ))?;
        let cont = step.on_error.as_deref() == Some("continue");
        let mut wrapper = format!("B={BUSYBOX}; R=/tekton/run\n");
        // step 0 waits for the upload (and the sidecars), every other step for the one before it
        let mut waits = vec![if i == 0 { "ready".to_string() } else { format!("step-{}", i - 1) }];
        if i == 0 && !sidecars.is_empty() {
            waits.push("sidecars".into());
        }
        for w in waits {
            wrapper.push_str(&format!(
                "while [ ! -e $R/{w} ]; do $B usleep 20000; done\nread s < $R/{w}\nif [ \"$s\" != ok ]; then echo skip > $R/t{i}; $B mv $R/t{i} $R/step-{i}; exit 0; fi\n"
            ));
        }
        if !when_ok {
            wrapper.push_str(&format!(
                "echo 0 > /tekton/steps/{cname}/exitCode\necho ok > $R/t{i}; $B mv $R/t{i} $R/step-{i}\nexit 0\n"
            ));
        }
        wrapper.push_str(RESOLVE);
        match step_timeout {
            // busybox timeout ends the step with SIGTERM; the marker tells a timeout from a
            // failure that happened to take as long
            Some(secs) => wrapper.push_str(&format!(
                "s0=`$B date +%s`\n$B timeout -s TERM {secs} \"$p\" \"$@\"\nc=$?\nt1=`$B date +%s`\nif [ $c != 0 ] && [ `$B expr $t1 - $s0` -ge {secs} ]; then echo {secs} > /tekton/steps/{cname}/timedOut; fi\n"
            )),
            None => wrapper.push_str("\"$p\" \"$@\"\nc=$?\n"),
        }
        wrapper.push_str(&format!(
            "echo $c > /tekton/steps/{cname}/exitCode\nif [ $c = 0 ] || [ {} = 1 ]; then echo ok > $R/t{i}; else echo fail > $R/t{i}; fi\n$B mv $R/t{i} $R/step-{i}\nexit $c\n",
            if cont { 1 } else { 0 }
        ));
        let mut c = ctx.container(&step, &cname, &image)?;
        c["command"] = json!([BUSYBOX, "sh", "-c", wrapper]);
        c["args"] = json!(std::iter::once("tenon-step".to_string()).chain(argv).collect::<Vec<_>>());
        steps.push(StepPlan { cname, sname, container: c });
    }
    Ok(PodPlan { steps, sidecars, skipped, copied, claims, scripts })
}

/// Wrapper lines that resolve a bare command name (`$1`) on the image's PATH into `$p`:
/// busybox's sh would otherwise prefer its own applet of that name (sh, cat, ...) to the
/// image's binary.
const RESOLVE: &str = "p=$1; shift\ncase $p in */*) ;; *) IFS=:; for d in $PATH; do if [ -f \"$d/$p\" ] && [ -x \"$d/$p\" ]; then p=$d/$p; break; fi; done; unset IFS;; esac\n";

/// Scalars of a probe or securityContext as Kubernetes types them: tenon's YAML model keeps
/// them as strings (`periodSeconds: "1"`), the pod API wants numbers and booleans.
fn typed(v: Value) -> Value {
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
fn argv_of(step: &Step, file: &str, scripts: &mut Vec<(String, String)>) -> Option<Vec<String>> {
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

/// What every step and sidecar container is built from.
struct ContainerCtx<'a> {
    req: &'a TaskRunRequest,
    args: &'a KubeArgs,
    /// (ws name, volume, mount path, read-only, subPath)
    ws_mounts: &'a [(String, String, String, bool, Option<String>)],
    listed: &'a dyn Fn(&str) -> bool,
}

impl ContainerCtx<'_> {
    /// The container of a step or sidecar, without command and args.
    fn container(&self, step: &Step, cname: &str, image: &str) -> Result<Value, String> {
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

fn build_pod(name: &str, req: &TaskRunRequest, args: &KubeArgs, owner: &str, plan: &PodPlan) -> Result<Pod, String> {
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
    let helper = |cname: &str, script: &str| {
        json!({
            "name": cname,
            "image": args.helper_image,
            "imagePullPolicy": args.pull_policy,
            "command": ["sh", "-c", script],
            "volumeMounts": helper_mounts,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        })
    };
    let prepare = helper(PREPARE, "mkdir -p /tekton/bin /tekton/run && cp /bin/busybox /tekton/bin/busybox");
    let holder = helper(HOLDER, "trap 'exit 0' TERM; while [ ! -e /tekton/run/collected ]; do sleep 1; done");
    let mut containers: Vec<Value> =
        plan.sidecars.iter().chain(plan.steps.iter()).map(|s| s.container.clone()).collect();
    containers.push(holder);
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
        "initContainers": [prepare],
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

/// The upload: scripts, the tekton directories and every copied volume, as a tar; plus, per
/// written-back volume, the files uploaded (so the write-back can tell deletions).
/// Per copied volume (its stage path), the files uploaded into it.
type Manifests = BTreeMap<String, BTreeSet<String>>;

fn upload_tar(plan: &PodPlan) -> Result<(Vec<u8>, Manifests), String> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, p, std::io::empty())
    };
    let io = |e: std::io::Error| format!("cannot build the upload: {e}");
    for d in ["tekton/results", "tekton/steps", "tekton/home", "tekton/scripts", "tekton/run"] {
        dir(&mut b, d, 0o777).map_err(io)?;
    }
    for (i, s) in plan.steps.iter().enumerate() {
        dir(&mut b, &format!("tekton/steps/{}/results", s.cname), 0o777).map_err(io)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("tekton/steps/{i}"), &s.cname).map_err(io)?;
    }
    for (file, body) in &plan.scripts {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        b.append_data(&mut h, format!("tekton/scripts/{file}"), body.as_bytes()).map_err(io)?;
    }
    let mut manifests = BTreeMap::new();
    for c in &plan.copied {
        let mut files = BTreeSet::new();
        if c.host.is_dir() {
            add_tree(&mut b, &c.host, &c.host, &c.stage, &mut files).map_err(io)?;
        }
        manifests.insert(c.stage.clone(), files);
    }
    let bytes = b.into_inner().map_err(io)?;
    Ok((bytes, manifests))
}

fn add_tree(
    b: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    dir: &Path,
    stage: &str,
    files: &mut BTreeSet<String>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().to_string();
        if rel == ".git" {
            continue;
        }
        let ft = e.file_type()?;
        b.append_path_with_name(&p, format!("{stage}/{rel}"))?;
        if ft.is_dir() {
            add_tree(b, root, &p, stage, files)?;
        } else {
            files.insert(rel);
        }
    }
    Ok(())
}

/// Run a command in a container, feeding `input`; returns stdout (stderr in the error).
async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    cmd: Vec<String>,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let ap = AttachParams::default().container(container).stdin(input.is_some()).stdout(true).stderr(true);
    let mut p = pods.exec(pod, cmd, &ap).await.map_err(|e| format!("exec in {pod}/{container}: {}", kube_msg(&e)))?;
    let status = p.take_status();
    let mut stdout = p.stdout().ok_or("exec: no stdout")?;
    let mut stderr = p.stderr().ok_or("exec: no stderr")?;
    let writer = async {
        if let (Some(data), Some(mut w)) = (input, p.stdin()) {
            // the websocket protocol of these clusters cannot close stdin: the command reads
            // exactly the number of bytes it is told (`head -c N`)
            w.write_all(data).await.map_err(|e| format!("exec stdin: {e}"))?;
            w.flush().await.map_err(|e| format!("exec stdin: {e}"))?;
            Ok::<_, String>(Some(w))
        } else {
            Ok(None)
        }
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (w, r1, r2) = tokio::join!(writer, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    let _keep_stdin_open = w?;
    r1.map_err(|e| format!("exec stdout: {e}"))?;
    let _ = r2;
    let st = match status {
        Some(s) => s.await,
        None => None,
    };
    drop(_keep_stdin_open);
    let _ = p.join().await;
    match st {
        Some(s) if s.status.as_deref() == Some("Failure") => Err(format!(
            "command in {pod}/{container} failed: {} {}",
            s.message.unwrap_or_default(),
            String::from_utf8_lossy(&err).trim()
        )),
        _ => Ok(out),
    }
}

/// How a pod watch ended.
enum End {
    /// Every step ran (or a step failed and the rest were skipped): read results back.
    Steps,
    Cancelled,
    TimedOut,
    /// The pod could not run: (reason, message).
    Broken(String, String),
}

fn container<'a>(statuses: &'a Option<Vec<ContainerStatus>>, name: &str) -> Option<&'a ContainerStatus> {
    statuses.as_ref()?.iter().find(|c| c.name == name)
}

/// Image pull and configuration errors of any container: (reason, message).
fn waiting_problem(pod: &Pod) -> Option<(String, String)> {
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

fn millis(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

impl Executor for KubernetesExecutor {
    fn run<'a>(&'a self, req: TaskRunRequest, cancel: CancellationToken) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut out = match self.run_pod(&req, &cancel).await {
                Ok(o) => o,
                Err(msg) => failed("TaskRunValidationFailed", msg, vec![]),
            };
            out.duration = start.elapsed();
            out
        })
    }

    /// `envFrom` goes into the pod: the namespace's objects, as Kubernetes resolves them.
    fn resolves_env_from(&self) -> bool {
        true
    }
}

impl KubernetesExecutor {
    async fn run_pod(&self, req: &TaskRunRequest, cancel: &CancellationToken) -> Result<TaskOutcome, String> {
        let plan = plan(req, &self.args, &self.state_dir)?;
        let logs_dir = req.dir.join("logs");
        std::fs::create_dir_all(&logs_dir)
            .and_then(|_| std::fs::create_dir_all(req.dir.join("results")))
            .map_err(|e| format!("cannot create run directory {}: {e}", req.dir.display()))?;
        let (upload, manifests) = upload_tar(&plan)?;
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
                if let Err(e) = write_back(&dir.join(&c.stage), &c.host, manifests.get(&c.stage).unwrap_or(&empty)) {
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
    async fn create(&self, name: &str, pod: &Pod) -> Result<(), String> {
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
    async fn drive(
        &self,
        name: &str,
        req: &TaskRunRequest,
        plan: &PodPlan,
        upload: &[u8],
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
            if let Some((reason, msg)) = waiting_problem(&pod) {
                break End::Broken(reason, msg);
            }
            if st.phase.as_deref() == Some("Failed") || st.reason.is_some() {
                let reason = st.reason.clone().unwrap_or_default();
                let msg = st.message.clone().unwrap_or_default();
                break match reason.as_str() {
                    "DeadlineExceeded" => End::TimedOut,
                    "Evicted" => End::Broken("Failed".into(), format!("pod {name} was evicted: {msg}")),
                    _ => End::Broken("Failed".into(), format!("pod {name} failed: {reason} {msg}")),
                };
            }
            let missing_claim = st.conditions.iter().flatten().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("persistentvolumeclaim") && m.contains("not found"))
            });
            if let Some(c) = missing_claim {
                break End::Broken(
                    "InvalidWorkspaceBindings".into(),
                    format!(
                        "{} in namespace {} (create the PVC, or pass --k8s-copy-pvc to use tenon's store)",
                        c.message.clone().unwrap_or_default(),
                        self.namespace
                    ),
                );
            }
            let prep = container(&st.init_container_statuses, PREPARE).and_then(|c| c.state.clone());
            if let Some(t) = prep.as_ref().and_then(|s| s.terminated.as_ref()) {
                if t.exit_code != 0 {
                    break End::Broken(
                        "PodFailed".into(),
                        format!(
                            "container {PREPARE} (image {}) exited with code {}: does the helper image have /bin/busybox? (--k8s-helper-image)",
                            self.args.helper_image, t.exit_code
                        ),
                    );
                }
            }
            let holder_running = container(&st.container_statuses, HOLDER)
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            if !uploaded && holder_running {
                let cmd = format!(
                    "head -c {} | tar xf - -C / && echo ok > /tekton/run/ready.tmp && mv /tekton/run/ready.tmp /tekton/run/ready",
                    upload.len()
                );
                let up = exec(&self.pods, name, HOLDER, vec!["sh".into(), "-c".into(), cmd], Some(upload));
                tokio::select! {
                    _ = cancel.cancelled() => break End::Cancelled,
                    r = up => if let Err(e) = r { break End::Broken("PodFailed".into(), format!("cannot upload the workspaces: {e}")) },
                }
                uploaded = true;
                tracing::debug!(pod = %name, ms = started.elapsed().as_millis() as u64, "workspaces uploaded");
            }
            if uploaded && !sidecars_ok {
                let mut ready = true;
                let mut broken = None;
                for sc in &plan.sidecars {
                    let cs = container(&st.container_statuses, &sc.cname);
                    let term = cs.and_then(|c| c.state.as_ref()).and_then(|x| x.terminated.as_ref());
                    match (cs, term) {
                        (_, Some(t)) if t.exit_code != 0 => {
                            broken = Some(format!(
                                "sidecar {:?} exited with code {} before the steps started",
                                sc.cname, t.exit_code
                            ))
                        }
                        (_, Some(_)) => {}
                        (Some(c), None) if c.ready => {}
                        _ => ready = false,
                    }
                }
                if let Some(msg) = broken {
                    break End::Broken("SidecarFailed".into(), msg);
                }
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
            if all || stop {
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

    /// Stream a step container's log live to the console and its log file.
    fn follow(&self, pod: &str, req: &TaskRunRequest, s: &StepPlan) -> tokio::task::JoinHandle<()> {
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

    async fn download(&self, name: &str, plan: &PodPlan, dir: &Path) -> Result<PathBuf, String> {
        let mut cmd = vec!["tar".to_string(), "cf".into(), "-".into(), "-C".into(), "/".into()];
        cmd.push("tekton/results".into());
        cmd.push("tekton/steps".into());
        for c in plan.copied.iter().filter(|c| c.write_back) {
            cmd.push(c.stage.clone());
        }
        let bytes = exec(&self.pods, name, HOLDER, cmd, None).await?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut ar = tar::Archive::new(bytes.as_slice());
        ar.set_preserve_permissions(true);
        ar.set_overwrite(true);
        ar.unpack(dir).map_err(|e| format!("cannot unpack the pod's files: {e}"))?;
        Ok(dir.to_path_buf())
    }
}

type Failure = super::AttemptFailure;

/// Step outcomes from the last pod state, and the attempt's failure if any.
fn step_outcomes(
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

/// Apply the pod's copy of a workspace to the host directory: new or changed files are
/// written (unchanged ones are left alone, so parallel tasks writing different files of a
/// shared workspace do not clobber each other), files uploaded and then deleted in the pod
/// are deleted.
fn write_back(from: &Path, to: &Path, uploaded: &BTreeSet<String>) -> std::io::Result<()> {
    let mut present = BTreeSet::new();
    if from.is_dir() {
        copy_changed(from, from, to, &mut present)?;
    }
    for rel in uploaded {
        if !present.contains(rel) {
            let p = to.join(rel);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

fn copy_changed(root: &Path, dir: &Path, to: &Path, present: &mut BTreeSet<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        let dest = to.join(&rel);
        let ft = e.file_type()?;
        if ft.is_dir() {
            // never follow a symlink on the host side: a step could aim it outside the workspace
            if !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::remove_file(&dest);
                std::fs::create_dir_all(&dest)?;
            }
            copy_changed(root, &p, to, present)?;
            continue;
        }
        present.insert(rel.to_string_lossy().to_string());
        if ft.is_symlink() {
            let target = std::fs::read_link(&p)?;
            if std::fs::read_link(&dest).ok().as_ref() != Some(&target) {
                let _ = std::fs::remove_file(&dest);
                std::os::unix::fs::symlink(&target, &dest)?;
            }
            continue;
        }
        let new = std::fs::read(&p)?;
        let dest_is_file = std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file());
        if dest_is_file && std::fs::read(&dest).ok().as_ref() == Some(&new) {
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, &new)?;
        let mode = std::fs::metadata(&p)?.permissions();
        std::fs::set_permissions(&dest, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(normalize_image("python:3.11-slim"), "docker.io/library/python:3.11-slim");
        assert_eq!(normalize_image("local/busybox:1.35"), "docker.io/local/busybox:1.35");
        assert_eq!(normalize_image("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize_image("ghcr.io/a/b:1"), "ghcr.io/a/b:1");
        assert_eq!(normalize_image("localhost:5000/a"), "localhost:5000/a:latest");
    }

    #[test]
    fn pod_names_are_valid() {
        let d = Path::new("/s/runs/r/1/taskruns/run-train/attempt-0");
        let n = pod_name("run-train", 0, d);
        assert!(n.starts_with("run-train-pod-") && n.len() == "run-train-pod-".len() + 5, "{n}");
        assert!(pod_name("run-train", 2, d).starts_with("run-train-pod-retry2-"));
        assert_ne!(n, pod_name("run-train", 0, Path::new("/s/runs/r/2/taskruns/run-train/attempt-0")));
        let long = pod_name(&"x".repeat(80), 0, d);
        assert!(long.len() <= 63, "{long}");
        let odd = pod_name("run-train[1]", 0, d);
        assert!(odd.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{odd}");
        assert_ne!(pod_name("a_b", 0, d), pod_name("a.b", 0, d));
    }

    #[test]
    fn write_back_merges_changes_only() {
        let t = tempfile::tempdir().unwrap();
        let (pod, host) = (t.path().join("pod"), t.path().join("host"));
        for d in [&pod, &host] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        // uploaded: keep.txt, gone.txt, sub/x; meanwhile another task wrote other.txt on the host
        std::fs::write(host.join("keep.txt"), "same").unwrap();
        std::fs::write(host.join("gone.txt"), "old").unwrap();
        std::fs::write(host.join("sub/x"), "1").unwrap();
        std::fs::write(host.join("other.txt"), "theirs").unwrap();
        let uploaded: BTreeSet<String> = ["keep.txt", "gone.txt", "sub/x"].iter().map(|s| s.to_string()).collect();
        // the pod kept keep.txt, deleted gone.txt, changed sub/x, added new.txt
        std::fs::write(pod.join("keep.txt"), "same").unwrap();
        std::fs::write(pod.join("sub/x"), "2").unwrap();
        std::fs::write(pod.join("new.txt"), "n").unwrap();
        // and a symlink dir on the host must not be followed
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, host.join("link")).unwrap();
        std::fs::create_dir_all(pod.join("link")).unwrap();
        std::fs::write(pod.join("link/f"), "x").unwrap();
        write_back(&pod, &host, &uploaded).unwrap();
        let read = |p: &str| std::fs::read_to_string(host.join(p)).ok();
        assert_eq!(read("keep.txt").as_deref(), Some("same"));
        assert_eq!(read("gone.txt"), None);
        assert_eq!(read("sub/x").as_deref(), Some("2"));
        assert_eq!(read("new.txt").as_deref(), Some("n"));
        assert_eq!(read("other.txt").as_deref(), Some("theirs"), "another writer's file survives");
        assert_eq!(read("link/f").as_deref(), Some("x"));
        assert!(!outside.join("f").exists(), "wrote through a host symlink");
    }

    #[test]
    fn probe_scalars_get_kubernetes_types() {
        let v = typed(json!({"exec": {"command": ["test", "1"]}, "periodSeconds": "1", "failureThreshold": "3",
                             "runAsUser": "1000", "readOnlyRootFilesystem": "true", "name": "7"}));
        assert_eq!(v["periodSeconds"], 1);
        assert_eq!(v["failureThreshold"], 3);
        assert_eq!(v["runAsUser"], 1000);
        assert_eq!(v["readOnlyRootFilesystem"], true);
        assert_eq!(v["exec"]["command"][1], "1", "command words stay strings");
        assert_eq!(v["name"], "7");
    }

    fn request(yaml_steps: Value, workspaces: Vec<super::super::BoundWorkspace>) -> TaskRunRequest {
        let spec: crate::model::TaskSpec = serde_json::from_value(yaml_steps).unwrap();
        TaskRunRequest {
            name: "run-t".into(),
            label: "t".into(),
            spec,
            workspaces,
            timeout: Some(Duration::from_secs(60)),
            attempt: 0,
            dir: PathBuf::from("/s/runs/r/1/taskruns/run-t/attempt-0"),
            max_result_size: 4096,
            volumes: BTreeMap::new(),
        }
    }

    #[test]
    fn pod_spec_from_a_task() {
        let ws = |name: &str, path: &str, kind: &str, claim: &str, ro: bool| super::super::BoundWorkspace {
            name: name.into(),
            path: Some(PathBuf::from(path)),
            read_only: ro,
            claim: claim.into(),
            kind: kind.into(),
        };
        let req = request(
            json!({
                "workspaces": [{"name": "src", "readOnly": true}, {"name": "data"}],
                "sidecars": [{"name": "db", "image": "redis:7"}],
                "steps": [
                    {"name": "a", "image": "alpine:3", "script": "echo hi", "onError": "continue",
                     "computeResources": {"limits": {"memory": "64Mi"}}},
                    {"name": "b", "image": "alpine:3", "command": ["cat"], "args": ["$(workspaces.data.path)/x"],
                     "workingDir": "/w"},
                ],
            }),
            vec![
                ws("src", "/repo", "repo", "", true),
                ws("data", "/s/pvc/team-data/sub", "persistentVolumeClaim:team-data", "team-data", false),
            ],
        );
        let args =
            KubeArgs { pull_policy: "IfNotPresent".into(), helper_image: "busybox:1.36".into(), ..Default::default() };
        let plan = plan(&req, &args, Path::new("/s")).unwrap();
        assert_eq!(plan.claims, vec![("ws-data".to_string(), "team-data".to_string())]);
        assert_eq!(plan.copied.len(), 1, "only the repo is copied");
        assert!(!plan.copied[0].write_back, "a read-only workspace is not written back");
        let pod = serde_json::to_value(build_pod("p", &req, &args, "owner1", &plan).unwrap()).unwrap();
        let spec = &pod["spec"];
        let names: Vec<&str> =
            spec["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["sidecar-db", "step-a", "step-b", "tenon-holder"]);
        assert_eq!(spec["initContainers"][0]["name"], "prepare");
        assert_eq!(spec["activeDeadlineSeconds"], 90);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(pod["metadata"]["labels"][OWNER_LABEL], "owner1");
        let a = &spec["containers"][1];
        assert_eq!(a["command"][0], BUSYBOX);
        assert_eq!(a["args"], json!(["tenon-step", "/tekton/scripts/script-0"]));
        assert!(a["command"][3].as_str().unwrap().contains("[ 1 = 1 ]"), "onError: continue");
        assert!(a["command"][3].as_str().unwrap().contains("$R/sidecars"), "step 0 waits for the sidecars");
        assert_eq!(a["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(a["workingDir"], "/workspace");
        let b = &spec["containers"][2];
        assert_eq!(b["args"], json!(["tenon-step", "cat", "/workspace/data/x"]));
        assert_eq!(b["workingDir"], "/w");
        assert!(b["command"][3].as_str().unwrap().contains("$R/step-0"));
        let data = b["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "ws-data").unwrap();
        assert_eq!(data["subPath"], "sub");
        assert_eq!(data["mountPath"], "/workspace/data");
        let src = b["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "ws-src").unwrap();
        assert_eq!(src["readOnly"], true);
        let vols = spec["volumes"].as_array().unwrap();
        assert!(vols.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "team-data"));
        // the sidecar without command runs its image's entrypoint
        assert!(spec["containers"][0].get("command").is_none());
        let (bytes, manifests) = upload_tar(&plan).unwrap();
        assert!(!bytes.is_empty() && manifests.contains_key("tenon/ws/ws-src"));
    }

    #[test]
    fn unsupported_features_are_named() {
        let args = KubeArgs::default();
        let when = json!([{"input": "$(steps.s.results.r)", "operator": "in", "values": ["a"]}]);
        let req = request(json!({"steps": [{"name": "a", "image": "x", "script": "true", "when": when}]}), vec![]);
        let e = plan(&req, &args, Path::new("/s")).err().unwrap();
        assert!(e.contains("unsupported by the kubernetes executor") && e.contains("when"), "{e}");
        let req = request(json!({"steps": [{"name": "a", "image": "quay.io/x/y:1"}]}), vec![]);
        let e = plan(&req, &args, Path::new("/s")).err().unwrap();
        assert!(e.contains("neither command nor script"), "{e}");
    }

    #[test]
    fn tolerations() {
        assert_eq!(parse_toleration("gpu:NoSchedule").unwrap()["operator"], "Exists");
        assert_eq!(parse_toleration("k=v:NoExecute").unwrap()["value"], "v");
        assert!(parse_toleration("k=v").is_err());
    }
}
