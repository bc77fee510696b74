//! The Kubernetes executor: one pod per TaskRun attempt, driven through the API server.
//!
//! Pod layout (the design and its limits are in README.md, "The Kubernetes executor"):
//!
//! - container `tenon-holder` (the helper image, a static busybox), the pod's first: its
//!   postStart hook copies `/bin/busybox` to `/tekton/bin/busybox` (the kubelet starts the
//!   next container only when the hook is done); it unpacks the TaskRun's files (scripts, the
//!   tekton directories and small workspaces, one tar) from its argument when they fit the pod
//!   spec, else tenon uploads them into it through `pods/exec`; it stays up so that tenon can
//!   read results and workspaces back with `tar` when it must; then tenon deletes the pod;
//! - one container per step, all started together as Tekton does; each runs the static busybox
//!   from `/tekton/bin` as its entrypoint (`sh -c WRAPPER -- <the step's real argv>`), waits for
//!   the files (step 0) or the previous step's marker in `/tekton/run`, runs the step, writes
//!   its exit code and a marker (`ok`, or `fail` which makes every later step skip itself),
//!   writes its results to its termination message when they fit (Tekton's way) and exits
//!   with the step's code.
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
use tokio_util::sync::CancellationToken;

use super::common::normalize_image;
use super::common::{collect_results, failed, finish, image_default_command, pod_path_vars, substitute_step};
use super::common::{step_container_name, KNOWN_IMAGES};
use super::{AttemptStatus, BoxFuture, Executor, StepOutcome, TaskOutcome, TaskRunRequest};
use crate::model::Step;
use crate::ui::Console;

mod attempt;
mod pod;
mod registry;
#[cfg(test)]
mod tests;
mod transfer;

use pod::*;
pub use registry::{pod_fetch, DataPlane, RegistryAccess};
use transfer::*;

/// TaskRuns running at once on a cluster without `--parallel`: the pods run on the cluster's
/// nodes, not on tenon's CPUs.
pub const DEFAULT_PARALLEL_PODS: usize = 64;

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
/// The holder's postStart hook: the steps' entrypoint.
const PREPARE_SCRIPT: &str = "mkdir -p /tekton/bin /tekton/run && cp /bin/busybox /tekton/bin/busybox";
/// The holder: unpack the files embedded in the pod spec (`$1`, base64 of a tar), if any,
/// then wait to be deleted.
const HOLDER_SCRIPT: &str = "trap 'exit 0' TERM\nif [ -n \"$1\" ]; then echo \"$1\" | base64 -d | tar xf - -C / || exit 1; echo ok > /tekton/run/ready.tmp && mv /tekton/run/ready.tmp /tekton/run/ready; fi\nwhile [ ! -e /tekton/run/collected ]; do sleep 1; done\n";
/// The largest upload (tar bytes) that travels in the pod spec instead of through
/// `pods/exec`: its base64 stays well below the 128 KiB the kernel allows one argument.
const EMBED_MAX: usize = 64 * 1024;
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
    /// Image of the holder container; must contain a static busybox at /bin/busybox.
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
    /// Image with tenon as its entrypoint: with a registry (--cache-repo or
    /// --k8s-data-registry), an init container of this image fetches each input file of
    /// 1 MiB or more from the registry by digest (verified) instead of tenon sending it
    /// through the API server.
    #[arg(long = "k8s-tenon-image", env = "TENON_K8S_TENON_IMAGE", value_name = "IMAGE")]
    pub tenon_image: Option<String>,
    /// The registry repository as task pods reach it (`oci://host/repo` or
    /// `oci+http://host:port/repo`); default: --cache-repo's URL.
    #[arg(long = "k8s-data-registry", env = "TENON_K8S_DATA_REGISTRY", value_name = "URL")]
    pub data_registry: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the pods' namespace with the registry
    /// credentials the init container uses (default: anonymous).
    #[arg(long = "k8s-data-registry-secret", value_name = "NAME")]
    pub data_registry_secret: Option<String>,
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
    /// Pod deletions under way ([`KubernetesExecutor::delete_later`]).
    deletes: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Large inputs through a registry ([`registry`]).
    data: Option<DataPlane>,
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
        Ok(KubernetesExecutor {
            pods,
            state_dir: state_dir.to_path_buf(),
            client,
            namespace,
            args,
            owner,
            console,
            deletes: Default::default(),
            data: None,
        })
    }

    /// Fetch large inputs from a registry in the pod ([`DataPlane::from_flags`]).
    pub fn with_data_plane(mut self, data: Option<DataPlane>) -> Self {
        self.data = data;
        self
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

/// What every step and sidecar container is built from.
struct ContainerCtx<'a> {
    req: &'a TaskRunRequest,
    args: &'a KubeArgs,
    /// (ws name, volume, mount path, read-only, subPath)
    ws_mounts: &'a [(String, String, String, bool, Option<String>)],
    listed: &'a dyn Fn(&str) -> bool,
}

/// Per copied volume (its stage path), the files uploaded into it.
type Manifests = BTreeMap<String, BTreeSet<String>>;

/// How a pod watch ended.
enum End {
    /// Every step ran (or a step failed and the rest were skipped): read results back.
    Steps,
    Cancelled,
    TimedOut,
    /// The pod could not run: (reason, message).
    Broken(String, String),
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

    /// Wait for the pod deletions still under way (at most 30 s each).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let pending = std::mem::take(&mut *self.deletes.lock().unwrap_or_else(|e| e.into_inner()));
            for h in pending {
                let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
            }
        })
    }
}

type Failure = super::AttemptFailure;
