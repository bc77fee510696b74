//! The test cluster as the Kubernetes end-to-end tests use it (`tests/kubernetes.rs`,
//! `tests/k8s_faults.rs`): a namespace of its own per test, the `tenon` binary aimed at it,
//! a recorder of pod events, and the manifests several tests share.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use super::cluster;
use super::common::*;

pub const BUSYBOX: &str = "local/busybox:1.35";

/// Skips (saying so) without `TENON_TEST_KUBECONFIG`, fails without it under `CI=true`.
pub fn kubeconfig() -> Option<PathBuf> {
    cluster::test_kubeconfig("kubernetes")
}

/// A namespace of its own on the test cluster, deleted on drop.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub ns: String,
}

impl Cluster {
    pub async fn new(test: &str) -> Option<Cluster> {
        let kubeconfig = kubeconfig()?;
        let client = tenon::exec::kubernetes::client(Some(&kubeconfig), None).await.expect("test cluster reachable");
        let names = cluster::node_images(&client).await;
        for want in ["docker.io/library/python:3.11-slim", "docker.io/library/busybox:1.36"] {
            assert!(
                names.iter().any(|n| n == want),
                "image {want} is not on the test cluster: run tests/k8s/make-images.sh"
            );
        }
        let ns = format!("tenon-{test}-{}", &tenon::hash::sha256_hex(format!("{:?}", Instant::now()).as_bytes())[..6]);
        let api: Api<Namespace> = Api::all(client.clone());
        let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        api.create(&PostParams::default(), &obj).await.expect("create namespace");
        // tenon's pods mount no token, but the API server admits a pod only once the
        // controller manager gave its namespace the default ServiceAccount (at once, unless
        // the controller manager is still catching up after an API server restart)
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let until = Instant::now() + Duration::from_secs(90);
        while !matches!(sas.get_opt("default").await, Ok(Some(_))) {
            assert!(Instant::now() < until, "namespace {ns} got no default ServiceAccount in 90 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some(Cluster { kubeconfig, client, ns })
    }

    /// `--executor kubernetes` flags for this namespace.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--executor".into(),
            "kubernetes".into(),
            "--k8s-kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--k8s-namespace".into(),
            self.ns.clone(),
        ]
    }

    /// Create one object (any kind the cluster serves) in this namespace; with `dry_run`, the
    /// API server validates and admits it without storing it. (A create, not a server-side
    /// apply: the 1.20 API server's apply wrongly insists on `protocol` in a Service's ports.)
    pub async fn create(&self, obj: &serde_json::Value, dry_run: bool) -> Result<(), String> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = obj["kind"].as_str().unwrap_or_default();
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let what = format!("{kind} {}", obj["metadata"]["name"]);
        let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| format!("{what}: {api_version} {kind} is not served: {e}"))?;
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(self.client.clone(), &self.ns, &ar);
        let dynamic: kube::api::DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| format!("{what}: {e}"))?;
        let pp = PostParams { dry_run, ..Default::default() };
        api.create(&pp, &dynamic).await.map(|_| ()).map_err(|e| format!("{what}: {e}"))
    }

    pub fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn pods(&self) -> Vec<Pod> {
        self.pods_api().list(&ListParams::default()).await.expect("list pods").items
    }

    /// No pod is left once deletions finish (deleted pods may take a moment to disappear).
    pub async fn assert_no_pods(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let left: Vec<String> = self.pods().await.into_iter().filter_map(|p| p.metadata.name).collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < until, "pods left behind in {}: {left:?}", self.ns);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Record pod events in the namespace.
    /// Starts watching; returns once the watch's initial list is done.
    pub async fn recorder(&self) -> Recorder {
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let api = self.pods_api();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut seen = BTreeSet::new();
            let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(e) = s.next().await {
                let (kind, p) = match e {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => ("add", p),
                    Ok(Event::Delete(p)) => ("delete", p),
                    Ok(Event::InitDone) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                let taskrun = format!("{}#{}", label("tenon.dev/taskrun"), label("tenon.dev/attempt"));
                if kind == "add" && !seen.insert(uid.clone()) {
                    continue;
                }
                ev.lock().unwrap().push((kind, taskrun, uid));
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx).await.expect("pod watch started").unwrap();
        Recorder { events, task }
    }

    pub fn tenon(&self, args: &[&str], store: &Path) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.flags());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        tenon_command(&refs, store).output().expect("tenon runs").into()
    }

    pub fn spawn_tenon(&self, args: &[&str], store: &Path) -> std::process::Child {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.flags());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        tenon_command(&refs, store).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tenon starts")
    }

    /// Wait (watching) until a pod of this namespace runs a step; returns its name and uid.
    pub async fn wait_running_pod(&self) -> (String, String) {
        let mut s = watcher::watcher(self.pods_api(), watcher::Config::default()).default_backoff().boxed();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(e) = s.next().await {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = e {
                    let running = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.name.starts_with("step-") && c.state.as_ref().is_some_and(|s| s.running.is_some())
                        })
                    });
                    if running {
                        return Some((p.metadata.name.unwrap_or_default(), p.metadata.uid.unwrap_or_default()));
                    }
                }
            }
            None
        })
        .await;
        found.ok().flatten().expect("a step pod started running within 60s")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = self.ns.clone();
        cleanup(async move {
            let _ = api.delete(&ns, &DeleteParams::default()).await;
        });
    }
}

/// Run a clean-up from `Drop` (also while a failed test unwinds): on a thread of its own,
/// since the test's runtime may be the one dropping.
pub fn cleanup(f: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f);
    })
    .join();
}

pub type PodEvent = (&'static str, String, String);

pub struct Recorder {
    /// ("add" | "delete", `<taskrun>#<attempt>`, uid) in order.
    pub events: Arc<Mutex<Vec<PodEvent>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// The pods created so far, as `<taskrun>#<attempt>` (their labels).
    pub fn created(&self) -> BTreeSet<String> {
        self.events.lock().unwrap().iter().filter(|e| e.0 == "add").map(|e| e.1.clone()).collect()
    }
    pub fn events(&self) -> Vec<PodEvent> {
        self.events.lock().unwrap().clone()
    }
    /// Let the watch catch up with what just happened: tenon deletes every pod it creates
    /// before it exits, so wait until each recorded pod's deletion is seen too.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let ev = self.events();
            let open = ev.iter().filter(|a| a.0 == "add").any(|a| !ev.iter().any(|d| d.0 == "delete" && d.2 == a.2));
            if !open || Instant::now() > until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const SLEEPER: &str = r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: sleeper}
spec:
  taskSpec:
    results: [{name: woke}]
    steps:
      - name: nap
        image: IMG
        script: |
          sleep SECS
          printf yes > $(results.woke.path)
"#;

/// Run `cmd` to its end; its output and its peak resident set size in KiB (`wait4`'s
/// `ru_maxrss`: the kernel's own high-water mark of exactly that process, no polling).
pub fn run_measuring_rss(mut cmd: std::process::Command) -> (Run, u64) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tenon starts");
    let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    use std::io::Read;
    let out = pipe(child.stdout.take().map(|x| Box::new(x) as _));
    let err = pipe(child.stderr.take().map(|x| Box::new(x) as _));
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; the pid is our own child, waited for once here
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    let run = Run { code, stdout: out.join().unwrap(), stderr: err.join().unwrap() };
    (run, usage.ru_maxrss as u64)
}

/// sha256sum of what `sh -c SCRIPT` prints (the host's coreutils: fast in a debug build).
pub fn sha256_of_output(script: &str) -> String {
    let o = std::process::Command::new("sh").arg("-c").arg(format!("({script}) | sha256sum")).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}
