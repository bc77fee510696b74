//! End-to-end tests of the Kubernetes executor and the leader-election Lease against a real
//! cluster: `TENON_TEST_KUBECONFIG` names the test cluster's kubeconfig (never the ambient
//! KUBECONFIG); without it every test prints why it is skipped and returns. The cluster needs
//! the images of `tests/k8s/make-images.sh` (`.ci/run` brings the cluster up and builds them).
//! Each test works in a namespace of its own, deleted at the end (also when it fails).

#[path = "k8s/cluster.rs"]
mod cluster;
mod common;
#[path = "k8s/kustomize.rs"]
mod kustomize;
#[path = "k8s/pods.rs"]
mod pods;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use pods::*;
use serde_json::Value;
use tenon::lease::{hold_lease_with, LeaseTiming};
use tokio_util::sync::CancellationToken;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn tasks(report: &Value) -> Vec<Value> {
    report["runs"][0]["tasks"].as_array().cloned().unwrap_or_default()
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    tasks(report)
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["status"].as_str().unwrap().to_string()))
        .collect()
}

fn ran(report: &Value) -> BTreeSet<String> {
    tasks(report).iter().filter(|t| t["status"] != "Cached").map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

/// A first attempt's pod as [`Recorder::created`] names it.
fn pod_of(run: &str, task: &str) -> String {
    format!("{run}-{task}#0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_pipeline_same_as_local_cached_then_incremental() {
    let Some(c) = Cluster::new("example").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_dir(&repo_root().join("examples/model-promotion"), &repo);
    let dir = repo.display().to_string();

    let t = Instant::now();
    let local = tenon_cached(&["run", &dir, "--output", "json", "-q"], &tmp.path().join("local"));
    let local_time = t.elapsed();
    assert_eq!(local.code, 0, "{}", local.stderr);

    let store = tmp.path().join("k8s");
    let rec = c.recorder().await;
    let t = Instant::now();
    let first = c.tenon(&["run", &dir, "--output", "json", "-q"], &store);
    let k8s_time = t.elapsed();
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let (l, k) = (local.json(), first.json());
    assert_eq!(statuses(&l), statuses(&k));
    assert_eq!(l["runs"][0]["results"], k["runs"][0]["results"], "pipeline results differ");
    for (lt, kt) in tasks(&l).iter().zip(tasks(&k).iter()) {
        assert_eq!(lt["results"], kt["results"], "results of {} differ", lt["name"]);
        assert_eq!(lt["reason"], kt["reason"]);
    }
    // the step image was recorded as the cluster resolved it
    assert!(tasks(&k)[0]["steps"][0]["imageId"].as_str().is_some_and(|s| s.contains("sha256:")), "{k:#}");
    rec.settle().await;
    let run = "model-promotion-run";
    let all: BTreeSet<String> =
        ["prepare", "train", "evaluate", "package", "report"].iter().map(|t| pod_of(run, t)).collect();
    assert_eq!(rec.created(), all);
    eprintln!(
        "NOTE example pipeline: local {:.2}s, kubernetes {:.2}s (5 task pods)",
        local_time.as_secs_f64(),
        k8s_time.as_secs_f64()
    );

    // a second run creates no pod: every task is Cached
    let rec = c.recorder().await;
    let second = c.tenon(&["run", &dir, "--output", "json", "-q"], &store);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(ran(&second.json()).is_empty(), "{}", second.stdout);
    rec.settle().await;
    assert_eq!(rec.created(), BTreeSet::new());

    // one input change: exactly the affected tasks get pods
    let f = repo.join("src/evaluate.py");
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str("\n# a comment changes the input, not the output\n");
    std::fs::write(&f, text).unwrap();
    let rec = c.recorder().await;
    let third = c.tenon(&["run", &dir, "--output", "json", "-q"], &store);
    assert_eq!(third.code, 0, "{}", third.stderr);
    let j = third.json();
    let reran = ran(&j);
    assert!(reran.contains("evaluate"), "{j:#}");
    assert!(!reran.contains("prepare") && !reran.contains("train"), "{reran:?}");
    rec.settle().await;
    assert_eq!(rec.created(), reran.iter().map(|t| pod_of(run, t)).collect::<BTreeSet<_>>());
    assert_eq!(j["runs"][0]["results"], l["runs"][0]["results"]);
    c.assert_no_pods().await;
}

const FAILURES: &str = r#"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: failures}
spec:
  tasks:
    - name: fails
      taskSpec:
        steps:
          - name: boom
            image: IMG
            script: |
              echo about to fail
              exit 3
          - name: never
            image: IMG
            script: echo never
    - name: slow
      timeout: 5s
      taskSpec:
        steps:
          - name: nap
            image: IMG
            script: sleep 120
    - name: stepslow
      taskSpec:
        steps:
          - name: nap
            image: IMG
            timeout: 2s
            script: sleep 60
          - name: after
            image: IMG
            script: echo never
    - name: flaky
      retries: 1
      taskSpec:
        steps:
          - name: maybe
            image: IMG
            script: |
              echo attempt $(context.task.retry-count)
              [ "$(context.task.retry-count)" = 1 ]
    - name: hog
      taskSpec:
        steps:
          - name: eat
            image: IMG
            computeResources:
              limits: {memory: 24Mi}
            script: tail /dev/zero
    - name: tolerant
      taskSpec:
        results: [{name: out}, {name: code}]
        steps:
          - name: bad
            image: IMG
            onError: continue
            script: exit 5
          - name: ruledout
            image: IMG
            when: [{input: "a", operator: notin, values: ["a"]}]
            script: exit 9
          - name: good
            image: IMG
            script: printf done > $(results.out.path); cat $(steps.step-bad.exitCode.path) > $(results.code.path)
    - name: big
      taskSpec:
        results: [{name: blob}]
        steps:
          - name: write
            image: IMG
            script: head -c 5000 /dev/zero | tr '\0' x > $(results.blob.path)
    - name: nopull
      taskSpec:
        steps:
          - name: s
            image: local/absent:1
            imagePullPolicy: Never
            script: echo hi
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: failures-run}
spec:
  pipelineRef: {name: failures}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_timeouts_retries_oom_are_reported() {
    let Some(c) = Cluster::new("failures").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("p.yaml"), FAILURES.replace("IMG", BUSYBOX)).unwrap();
    let rec = c.recorder().await;
    let r = c.tenon(
        &["run", tmp.path().to_str().unwrap(), "--output", "json", "-q", "--parallel", "8", "--no-cache"],
        &tmp.path().join("store"),
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    let t = |n: &str| task(&j, n).clone();

    let fails = t("fails");
    assert_eq!((fails["status"].as_str(), fails["reason"].as_str()), (Some("Failed"), Some("Failed")), "{fails:#}");
    assert_eq!(fails["steps"][0]["terminationReason"], "Error");
    assert_eq!(fails["steps"][0]["exitCode"], 3);
    assert_eq!(fails["steps"][1]["terminationReason"], "Skipped");

    let slow = t("slow");
    assert_eq!(
        (slow["status"].as_str(), slow["reason"].as_str()),
        (Some("TimedOut"), Some("TaskRunTimeout")),
        "{slow:#}"
    );

    let stepslow = t("stepslow");
    assert_eq!(stepslow["status"], "Failed", "{stepslow:#}");
    assert_eq!(stepslow["steps"][0]["terminationReason"], "TimeoutExceeded", "{stepslow:#}");
    assert_eq!(stepslow["steps"][1]["terminationReason"], "Skipped");
    assert!(stepslow["message"].as_str().unwrap().contains("exceeded its timeout"), "{stepslow:#}");

    let flaky = t("flaky");
    assert_eq!(flaky["status"], "Succeeded", "{flaky:#}");
    assert_eq!(flaky["attempts"], 2);

    let hog = t("hog");
    assert_eq!(hog["status"], "Failed", "{hog:#}");
    assert_eq!(hog["steps"][0]["terminationReason"], "OOMKilled", "{hog:#}");
    assert!(hog["message"].as_str().unwrap().contains("OOMKilled"));

    let tolerant = t("tolerant");
    assert_eq!(tolerant["status"], "Succeeded", "{tolerant:#}");
    assert_eq!(tolerant["steps"][0]["terminationReason"], "Continued");
    assert_eq!(tolerant["steps"][0]["exitCode"], 5);
    assert_eq!(tolerant["results"]["out"], "done");
    // Tekton writes the exit code without a newline (`5`, not `5\n`)
    assert_eq!(tolerant["results"]["code"], "5", "{tolerant:#}");
    assert_eq!(tolerant["steps"][1]["terminationReason"], "Skipped", "step-level when");
    assert_eq!(tolerant["steps"][2]["terminationReason"], "Completed");

    let big = t("big");
    assert_eq!(big["reason"], "TaskRunResultLargerThanAllowedLimit", "{big:#}");

    let nopull = t("nopull");
    assert_eq!(nopull["reason"], "TaskRunImagePullFailed", "{nopull:#}");

    rec.settle().await;
    let created = rec.created();
    assert!(created.contains("failures-run-flaky#0") && created.contains("failures-run-flaky#1"), "{created:?}");
    c.assert_no_pods().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_deletes_the_pod() {
    let Some(c) = Cluster::new("cancel").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SLEEPER.replace("IMG", BUSYBOX).replace("SECS", "120")).unwrap();
    let child = c.spawn_tenon(&["run", tmp.path().to_str().unwrap(), "--output", "json", "-q"], &tmp.path().join("s"));
    let pid = child.id() as i32;
    c.wait_running_pod().await;
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let r: Run = out.into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    let t = task(&r.json(), "sleeper").clone();
    assert_eq!((t["status"].as_str(), t["reason"].as_str()), (Some("Cancelled"), Some("TaskRunCancelled")), "{t:#}");
    c.assert_no_pods().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_run_replaces_the_orphan_pod() {
    let Some(c) = Cluster::new("restart").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SLEEPER.replace("IMG", BUSYBOX).replace("SECS", "6")).unwrap();
    let store = tmp.path().join("s");
    let dir = tmp.path().to_str().unwrap().to_string();
    let rec = c.recorder().await;
    let mut child = c.spawn_tenon(&["run", &dir, "--output", "json", "-q"], &store);
    let (_, old_uid) = c.wait_running_pod().await;
    child.kill().unwrap(); // SIGKILL: tenon gets no chance to clean up
    let _ = child.wait();
    assert!(c.pods().await.iter().any(|p| p.metadata.uid.as_deref() == Some(old_uid.as_str())), "the orphan is there");
    let r = c.tenon(&["run", &dir, "--output", "json", "-q"], &store);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(task(&r.json(), "sleeper")["results"]["woke"], "yes");
    rec.settle().await;
    // the orphan was deleted before its replacement was created: never two at once
    let ev = rec.events();
    let deleted_old = ev.iter().position(|e| e.0 == "delete" && e.2 == old_uid).expect("orphan deleted");
    let new_add =
        ev.iter().position(|e| e.0 == "add" && e.1 == "sleeper#0" && e.2 != old_uid).expect("replacement created");
    assert!(deleted_old < new_add, "{ev:?}");
    c.assert_no_pods().await;
}

const PORTABLE: &str = r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: plain}
spec:
  taskSpec:
    results: [{name: r}]
    steps:
      - {name: s, image: IMG, script: "printf 1 > $(results.r.path)"}
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: portable
  annotations: {tenon.dev/cache-executor-independent: "true"}
spec:
  taskSpec:
    results: [{name: r}]
    steps:
      - {name: s, image: IMG, script: "printf 1 > $(results.r.path)"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_is_part_of_the_key_unless_a_task_opts_out() {
    let Some(c) = Cluster::new("keys").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), PORTABLE.replace("IMG", BUSYBOX)).unwrap();
    let store = tmp.path().join("s");
    let dir = tmp.path().to_str().unwrap().to_string();
    let local = tenon_cached(&["run", &dir, "--output", "json", "-q"], &store);
    assert_eq!(local.code, 0, "{}", local.stderr);
    let k = c.tenon(&["run", &dir, "--output", "json", "-q"], &store);
    assert_eq!(k.code, 0, "{}", k.stderr);
    let status = |r: &Run, n: &str| {
        let j = r.json();
        j["runs"].as_array().unwrap().iter().find(|x| x["name"] == n).unwrap()["tasks"][0]["status"].clone()
    };
    assert_eq!(status(&k, "plain"), "Succeeded", "a local record is no hit on the cluster");
    assert_eq!(status(&k, "portable"), "Cached", "the opted-in task reuses the local record");
    // the record made on the cluster names the image digest its step ran
    let db = rusqlite::Connection::open(store.join("cache/tenon.db")).unwrap();
    let pre: Vec<String> = db
        .prepare("SELECT preimage FROM records")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let k8s: Vec<&String> = pre.iter().filter(|p| p.contains("\"executor\":\"kubernetes\"")).collect();
    assert_eq!(k8s.len(), 1, "{pre:?}");
    let v: Value = serde_json::from_str(k8s[0]).unwrap();
    assert!(v["observedImages"]["s"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{v:#}");
    c.assert_no_pods().await;
}

/// `deploy/` and the Argo CD and Flux overlays, rendered as kustomize does and created with
/// `dryRun=All`: the API server validates and admits every object (the Argo CD and Flux
/// custom resources aside: this cluster has not their CRDs; they must still render).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_pass_server_side_dry_run() {
    let Some(c) = Cluster::new("deploy").await else { return };
    let crds = ["argoproj.io/", "source.toolkit.fluxcd.io/", "kustomize.toolkit.fluxcd.io/"];
    for dir in ["deploy", "examples/gitops/argocd", "examples/gitops/flux"] {
        let mut objs = kustomize::build(&repo_root().join(dir));
        kustomize::set_namespace(&mut objs, &c.ns);
        let mut kinds = BTreeSet::new();
        for o in &objs {
            let api_version = o["apiVersion"].as_str().unwrap();
            if crds.iter().any(|g| api_version.starts_with(g)) {
                kinds.insert(format!("{} (custom, not created)", o["kind"].as_str().unwrap()));
                continue;
            }
            c.create(o, true).await.unwrap_or_else(|e| panic!("{dir}: {e}"));
            kinds.insert(o["kind"].as_str().unwrap().to_string());
        }
        let want = ["ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Service", "Deployment"];
        for kind in want {
            assert!(kinds.contains(kind), "{dir}: no {kind} among {kinds:?}");
        }
        if dir != "deploy" {
            assert!(kinds.len() > want.len(), "{dir} adds its own objects: {kinds:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_has_one_leader_and_hands_over() {
    let Some(c) = Cluster::new("lease").await else { return };
    let timing = LeaseTiming {
        duration: Duration::from_secs(3),
        renew: Duration::from_millis(500),
        retry: Duration::from_millis(200),
    };
    let start = |id: &str| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let cancel = CancellationToken::new();
        let h = tokio::spawn(hold_lease_with(
            c.client.clone(),
            c.ns.clone(),
            "tenon-leader".into(),
            id.into(),
            tx,
            cancel.clone(),
            timing,
        ));
        (rx, cancel, h)
    };
    async fn becomes(rx: &mut tokio::sync::watch::Receiver<bool>, want: bool, within: Duration) -> bool {
        tokio::time::timeout(within, rx.wait_for(|v| *v == want)).await.is_ok_and(|r| r.is_ok())
    }
    let holder = || async {
        let api: Api<Lease> = Api::namespaced(c.client.clone(), &c.ns);
        api.get("tenon-leader").await.unwrap().spec.unwrap().holder_identity
    };
    let (mut a_rx, a_cancel, a) = start("a");
    assert!(becomes(&mut a_rx, true, Duration::from_secs(10)).await, "a leads a free lease");
    let (mut b_rx, b_cancel, b) = start("b");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!*b_rx.borrow() && *a_rx.borrow(), "one leader while a renews");
    assert_eq!(holder().await.as_deref(), Some("a"));
    // a releases on cancel: b takes over at once (well within a lease duration)
    a_cancel.cancel();
    a.await.unwrap().unwrap();
    assert!(!*a_rx.borrow());
    assert!(becomes(&mut b_rx, true, Duration::from_secs(2)).await, "b takes a released lease");
    assert_eq!(holder().await.as_deref(), Some("b"));
    // b dies without releasing: a new contender waits for the lease to expire
    b.abort();
    let _ = b.await;
    let t = Instant::now();
    let (mut c_rx, c_cancel, cc) = start("c");
    assert!(becomes(&mut c_rx, true, Duration::from_secs(10)).await, "c takes an expired lease");
    assert!(t.elapsed() >= Duration::from_secs(3), "not before it expired: {:?}", t.elapsed());
    drop(b_cancel);
    c_cancel.cancel();
    cc.await.unwrap().unwrap();
    assert_eq!(holder().await, None, "released");
}

const PVC_PIPELINE: &str = r#"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: pvc}
spec:
  workspaces: [{name: data}]
  tasks:
    - name: write
      workspaces: [{name: data, workspace: data}]
      taskSpec:
        workspaces: [{name: data}]
        steps:
          - {name: w, image: IMG, script: "printf from-pod > $(workspaces.data.path)/hello.txt"}
    - name: read
      runAfter: [write]
      workspaces: [{name: data, workspace: data}]
      taskSpec:
        workspaces: [{name: data}]
        results: [{name: got}]
        steps:
          - {name: r, image: IMG, script: "cat $(workspaces.data.path)/hello.txt > $(results.got.path)"}
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: pvc-run}
spec:
  pipelineRef: {name: pvc}
  workspaces:
    - name: data
      persistentVolumeClaim: {claimName: CLAIM}
      subPath: run1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_volume_claims_are_the_clusters() {
    let Some(c) = Cluster::new("pvc").await else { return };
    // no dynamic provisioner on the test cluster: a hostPath PV (the node is this machine)
    let hostdir = tempfile::tempdir().unwrap();
    let pv_name = format!("{}-pv", c.ns);
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(c.client.clone());
    let pv = serde_json::from_value(serde_json::json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": hostdir.path().display().to_string(), "type": "Directory"}},
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    struct PvGuard(Api<k8s_openapi::api::core::v1::PersistentVolume>, String);
    impl Drop for PvGuard {
        fn drop(&mut self) {
            let (api, name) = (self.0.clone(), self.1.clone());
            cleanup(async move {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            });
        }
    }
    let _pv = PvGuard(pvs, pv_name.clone());
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.ns);
    let pvc = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    std::fs::write(tmp.path().join("p.yaml"), PVC_PIPELINE.replace("IMG", BUSYBOX).replace("CLAIM", "data")).unwrap();
    let r = c.tenon(&["run", tmp.path().to_str().unwrap(), "--output", "json", "-q"], &store);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(task(&r.json(), "read")["results"]["got"], "from-pod");
    // written on the volume itself (at the subPath), not in tenon's store
    assert_eq!(std::fs::read_to_string(hostdir.path().join("run1/hello.txt")).unwrap(), "from-pod");
    assert!(!store.join("pvc/data/run1/hello.txt").exists());

    // a claim the namespace lacks fails fast with a clear message
    std::fs::write(tmp.path().join("p.yaml"), PVC_PIPELINE.replace("IMG", BUSYBOX).replace("CLAIM", "absent")).unwrap();
    let r = c.tenon(&["run", tmp.path().to_str().unwrap(), "--output", "json", "-q"], &store);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let w = task(&r.json(), "write").clone();
    assert_eq!(w["reason"], "InvalidWorkspaceBindings", "{w:#}");
    assert!(w["message"].as_str().unwrap().contains("absent"), "{w:#}");
    c.assert_no_pods().await;
}

const SIDECARS: &str = r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: served}
spec:
  taskSpec:
    results: [{name: got}]
    sidecars:
      - name: web
        image: IMG
        script: |
          sleep 1
          mkdir -p /tmp/www && echo hello-sidecar > /tmp/www/index.html
          exec httpd -f -p 127.0.0.1:8080 -h /tmp/www
        readinessProbe:
          exec: {command: [wget, -q, -O, /dev/null, "http://127.0.0.1:8080/"]}
          periodSeconds: 1
    steps:
      - name: fetch
        image: IMG
        script: wget -qO- http://127.0.0.1:8080/ | tr -d '\n' > $(results.got.path)
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: brokensidecar}
spec:
  taskSpec:
    sidecars:
      - name: dies
        image: IMG
        script: exit 4
        readinessProbe:
          exec: {command: ["false"]}
    steps:
      - {name: s, image: IMG, script: echo never}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_are_ready_before_the_steps() {
    let Some(c) = Cluster::new("sidecars").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SIDECARS.replace("IMG", BUSYBOX)).unwrap();
    let r = c.tenon(&["run", tmp.path().to_str().unwrap(), "--output", "json", "-q"], &tmp.path().join("s"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j = r.json();
    let run = |n: &str| j["runs"].as_array().unwrap().iter().find(|x| x["name"] == n).unwrap()["tasks"][0].clone();
    // the step reached the sidecar over the pod's loopback: it waited for its readiness
    assert_eq!(run("served")["results"]["got"], "hello-sidecar", "{j:#}");
    let broken = run("brokensidecar");
    assert_eq!(broken["reason"], "SidecarFailed", "{broken:#}");
    assert!(broken["message"].as_str().unwrap().contains("code 4"), "{broken:#}");
    c.assert_no_pods().await;
}

/// GET `path` from a watcher's HTTP endpoint: the body parsed as JSON.
fn get_json(addr: &str, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

/// `tenon watch --leader-elect`: of two replicas only the Lease holder reconciles; when it is
/// stopped (SIGTERM) it releases the Lease and the other takes over and reconciles at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_leader_elect_reconciles_only_on_the_leader() {
    let Some(c) = Cluster::new("elect").await else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("run.yaml"),
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {name: hello}\nspec:\n  taskSpec:\n    steps:\n      - {name: s, image: busybox, script: echo hi}\n",
    )
    .unwrap();
    let start = |id: &str| {
        let store = dir.path().join(format!(".store-{id}"));
        std::fs::create_dir_all(&store).unwrap();
        let addr_file = store.join("addr");
        let log = store.join("log");
        let child = tenon_command(&["watch"], &store)
            .args(["--dir", dir.path().to_str().unwrap(), "--sandbox", "host", "-q"])
            .args(["--listen", "127.0.0.1:0", "--listen-file", addr_file.to_str().unwrap()])
            .args(["--leader-elect", "--lease-identity", id, "--lease-namespace", &c.ns])
            .args(["--k8s-kubeconfig", c.kubeconfig.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, addr_file, log)
    };
    let addr = |f: &Path| {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = std::fs::read_to_string(f) {
                return a.trim().to_string();
            }
            assert!(Instant::now() < until, "watcher did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let wait_for = |addr: &str, what: &str, cond: &dyn Fn(&Value) -> bool| {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = get_json(addr, "/status") {
                if cond(&s) {
                    return s;
                }
            }
            assert!(Instant::now() < until, "{addr}: {what} never held: {:?}", get_json(addr, "/status"));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (mut a, a_file, a_log) = start("replica-a");
    let a_addr = addr(&a_file);
    let s =
        wait_for(&a_addr, "a leads and reconciles", &|s| s["leader"] == true && s["reconciles"].as_u64() >= Some(1));
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    let (mut b, b_file, b_log) = start("replica-b");
    let b_addr = addr(&b_file);
    // b waits: not leader and no reconcile while a holds the lease
    std::thread::sleep(Duration::from_secs(3));
    let s = get_json(&b_addr, "/status").expect("b serves /status while waiting");
    assert_eq!(s["leader"], false, "{s:#}");
    assert_eq!(s["reconciles"].as_u64(), Some(0), "b reconciled without the lease: {s:#}");
    let holder = Api::<Lease>::namespaced(c.client.clone(), &c.ns)
        .get("tenon-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("replica-a"));
    // a stops: it releases the lease and b takes over well within a lease duration (15 s)
    let t = Instant::now();
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    assert!(a.wait().unwrap().success(), "a exits cleanly:\n{}", std::fs::read_to_string(&a_log).unwrap());
    wait_for(&b_addr, "b takes over", &|s| s["leader"] == true && s["reconciles"].as_u64() >= Some(1));
    eprintln!("takeover (SIGTERM to the new leader's first reconcile): {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10), "takeover took {:?}", t.elapsed());
    let _ = b.kill();
    let _ = b.wait();
    let _ = std::fs::read_to_string(&b_log);
}

/// `n` independent tasks of one Pipeline, each a step that sleeps 6 s.
fn fan_out(n: usize) -> String {
    let mut y = String::from("apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: fan}\nspec:\n  tasks:\n");
    for i in 0..n {
        y.push_str(&format!(
            "    - {{name: t{i}, taskSpec: {{steps: [{{name: nap, image: IMG, script: sleep 6}}]}}}}\n"
        ));
    }
    y.push_str("---\napiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata: {name: fan-run}\nspec:\n  pipelineRef: {name: fan}\n");
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_tasks_run_as_parallel_pods() {
    let Some(c) = Cluster::new("fanout").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("p.yaml"), fan_out(6).replace("IMG", BUSYBOX)).unwrap();
    // each step container's [startedAt, finishedAt] as the kubelet reports it, per TaskRun
    let spans: Arc<Mutex<std::collections::BTreeMap<String, (i64, i64)>>> = Default::default();
    let seen = spans.clone();
    let mut s = watcher::watcher(c.pods_api(), watcher::Config::default()).default_backoff().boxed();
    let watch = tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let Ok(Event::Apply(p) | Event::InitApply(p) | Event::Delete(p)) = e else { continue };
            let taskrun = p.metadata.labels.unwrap_or_default().get("tenon.dev/taskrun").cloned().unwrap_or_default();
            for cs in p.status.and_then(|s| s.container_statuses).unwrap_or_default() {
                let Some(t) = cs.state.and_then(|s| s.terminated) else { continue };
                if let (true, Some(a), Some(b)) = (cs.name.starts_with("step-"), t.started_at, t.finished_at) {
                    seen.lock().unwrap().insert(taskrun.clone(), (a.0.as_second(), b.0.as_second()));
                }
            }
        }
    });
    // no --parallel: the default must not hold independent pods back
    let r =
        c.tenon(&["run", tmp.path().to_str().unwrap(), "--output", "json", "-q", "--no-cache"], &tmp.path().join("s"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let until = Instant::now() + Duration::from_secs(30);
    while spans.lock().unwrap().len() < 6 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 6, "{spans:?}");
    // every pod's step ran while every other one did: the last to start started before the
    // first to finish finished (one after another, or two at a time, would not)
    let last_start = spans.values().map(|s| s.0).max().unwrap();
    let first_end = spans.values().map(|s| s.1).min().unwrap();
    assert!(last_start < first_end, "the pods did not all overlap: {spans:?}");
    c.assert_no_pods().await;
}

/// A workspace file far larger than tenon's memory budget goes to the pod and a file as large
/// comes back, both intact, while tenon's peak RSS stays bounded: the upload is a tar made on
/// the fly into the exec stream, the download is unpacked as it arrives, and the write-back
/// compares and moves files in chunks (before, each direction held the whole tar in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_workspace_files_stream_with_bounded_memory() {
    const MIB: usize = 1 << 20;
    const SIZE_MIB: usize = 256;
    const RSS_LIMIT_MIB: u64 = 150;
    let Some(c) = Cluster::new("bigdata").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (repo, store) = (tmp.path().join("repo"), tmp.path().join("s"));
    std::fs::create_dir_all(&repo).unwrap();
    // a pseudo-random MiB, numbered per copy so that no two MiB of the file are alike
    let block: Vec<u8> = (0..MIB as u64).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 53) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(repo.join("model.bin")).unwrap());
        for i in 0..SIZE_MIB {
            f.write_all(&(i as u64).to_le_bytes()).unwrap();
            f.write_all(&block[8..]).unwrap();
        }
        f.flush().unwrap();
    }
    let model = repo.join("model.bin");
    let want_in = sha256_of_output(&format!("cat {}", model.display()));
    let want_out = sha256_of_output(&format!("cat {}; echo tail", model.display()));
    std::fs::write(repo.join("p.yaml"), BIG_DATA.replace("IMG", BUSYBOX)).unwrap();
    let mut args: Vec<String> =
        ["run", repo.to_str().unwrap(), "--output", "json", "-q", "--no-cache", "--k8s-copy-pvc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(c.flags());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let (r, rss_kib) = run_measuring_rss(tenon_command(&refs, &store));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    let t = task(&j, "use");
    assert_eq!(t["results"]["insum"], want_in.as_str(), "the pod read the model intact: {t:#}");
    assert_eq!(t["results"]["outsum"], want_out.as_str(), "{t:#}");
    // written back to the host (the claim's copy in the store) intact
    let back = store.join("pvc/data/out/big.bin");
    assert_eq!(std::fs::metadata(&back).unwrap().len(), (SIZE_MIB * MIB + 5) as u64);
    assert_eq!(sha256_of_output(&format!("cat {}", back.display())), want_out);
    let rss_mib = rss_kib / 1024;
    eprintln!("{SIZE_MIB} MiB up and {SIZE_MIB} MiB back in {secs:.1} s; tenon's peak RSS {rss_mib} MiB");
    assert!(
        rss_mib < RSS_LIMIT_MIB,
        "tenon's peak RSS was {rss_mib} MiB moving {SIZE_MIB} MiB each way (limit {RSS_LIMIT_MIB} MiB)"
    );
    c.assert_no_pods().await;
}

const BIG_DATA: &str = r#"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: big
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - {name: source, emptyDir: {}}
    - {name: data, persistentVolumeClaim: {claimName: data}}
  pipelineSpec:
    workspaces: [{name: source}, {name: data}]
    tasks:
      - name: use
        workspaces: [{name: source, workspace: source}, {name: data, workspace: data}]
        taskSpec:
          workspaces: [{name: source, readOnly: true}, {name: data}]
          results: [{name: insum}, {name: outsum}]
          steps:
            - name: sum
              image: IMG
              script: |
                set -e
                sha256sum $(workspaces.source.path)/model.bin | cut -d' ' -f1 | tr -d '\n' > $(results.insum.path)
                mkdir -p $(workspaces.data.path)/out
                { cat $(workspaces.source.path)/model.bin; echo tail; } > $(workspaces.data.path)/out/big.bin
                sha256sum $(workspaces.data.path)/out/big.bin | cut -d' ' -f1 | tr -d '\n' > $(results.outsum.path)
"#;
