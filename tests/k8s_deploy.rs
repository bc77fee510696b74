//! `deploy/` for real: tenon's image made from the binary under test, `deploy/` applied with
//! the test overlay (`tests/k8s/overlay`) on the test cluster, the watched repository served
//! by a git daemon pod in the cluster. A push becomes task pods and a promotion commit; the
//! Lease is held by the tenon pod, its probes are green, and `/metrics` is scraped through the
//! Service (resolved to its pod and port, then port-forwarded through the API, as
//! `kubectl port-forward svc/tenon` does). Needs `TENON_TEST_KUBECONFIG` (see
//! tests/kubernetes.rs) and `TENON_TEST_K8S_DIR` (the cluster's `image` tool).

#[path = "k8s/cluster.rs"]
mod cluster;
mod common;
#[path = "k8s/images.rs"]
mod images;
#[path = "k8s/kustomize.rs"]
mod kustomize;
#[path = "k8s/pods.rs"]
mod pods;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use pods::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").current_dir(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait for `what` to hold of the namespace's pods, up to `secs`.
async fn wait_pods(c: &Cluster, what: &str, secs: u64, ok: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let pods = c.pods().await;
        if ok(&pods) {
            return pods;
        }
        assert!(Instant::now() < until, "{what} within {secs} s; pods: {:#?}", summary(&pods));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn ready(p: &Pod) -> bool {
    let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn named<'a>(pods: &'a [Pod], prefix: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
}

fn summary(pods: &[Pod]) -> Vec<(String, String)> {
    pods.iter()
        .map(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            (p.metadata.name.clone().unwrap_or_default(), phase)
        })
        .collect()
}

/// The remote's `main` once it moved past `from` to a commit of tenon's (a promotion); on a
/// timeout the test fails with the tenon pod's log.
async fn wait_promotion(c: &Cluster, url: &str, work: &Path, from: &str, secs: u64) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let tip = git(work, &["ls-remote", url, "refs/heads/main"]);
        let tip = tip.split_whitespace().next().unwrap_or_default().to_string();
        if tip != from {
            git(work, &["fetch", "-q", url, "main"]);
            let msg = git(work, &["log", "-1", "--format=%B", &tip]);
            assert!(msg.contains("Tenon-Promotion-Id:"), "main moved to a commit that is not a promotion: {msg}");
            assert_eq!(git(work, &["rev-parse", &format!("{tip}^")]), from, "the promotion's parent is the push");
            return tip;
        }
        if Instant::now() > until {
            let pods = c.pods().await;
            let log = match named(&pods, "tenon-").and_then(|p| p.metadata.name.clone()) {
                Some(p) => c.pods_api().logs(&p, &Default::default()).await.unwrap_or_else(|e| e.to_string()),
                None => format!("no tenon pod: {:?}", summary(&pods)),
            };
            panic!("no promotion commit on main within {secs} s (still {from}); tenon's log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// GET `path` from the Service's pod and target port, through a port-forward.
async fn get_through_service(c: &Cluster, service: &str, path: &str) -> String {
    let svc = Api::<Service>::namespaced(c.client.clone(), &c.ns).get(service).await.expect("the Service");
    let spec = svc.spec.unwrap();
    let selector: Vec<String> = spec.selector.unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = c.pods_api().list(&ListParams::default().labels(&selector.join(","))).await.unwrap().items;
    assert_eq!(pods.len(), 1, "the Service selects exactly the tenon pod: {:?}", summary(&pods));
    let pod = &pods[0];
    let target = spec.ports.unwrap()[0].target_port.clone().expect("a target port");
    let port = match target {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n as u16,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
            let containers = &pod.spec.as_ref().unwrap().containers;
            let ports = containers.iter().flat_map(|c| c.ports.clone().unwrap_or_default());
            let found = ports.into_iter().find(|p| p.name.as_deref() == Some(name.as_str()));
            found.unwrap_or_else(|| panic!("no container port named {name}")).container_port as u16
        }
    };
    let mut pf = c.pods_api().portforward(pod.metadata.name.as_deref().unwrap(), &[port]).await.expect("port-forward");
    let mut stream = pf.take_stream(port).unwrap();
    let req = format!("GET {path} HTTP/1.0\r\nHost: tenon\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut body)).await.expect("a reply").unwrap();
    drop(stream);
    let _ = pf.join().await;
    assert!(body.starts_with("HTTP/1.") && body.contains(" 200 "), "GET {path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_with_the_test_overlay_turns_a_push_into_task_pods_and_a_promotion_commit() {
    let Some(c) = Cluster::new("deploy").await else { return };
    assert!(
        images::loaded().iter().any(|i| i == "docker.io/local/git:debian"),
        "the git server image is not loaded: run tests/k8s/make-images.sh"
    );
    let image = images::tenon_image();
    let (tenon_port, git_port) = (free_port(), free_port());
    let ports = |s: String| s.replace("18080", &tenon_port.to_string()).replace("19418", &git_port.to_string());

    // the git server, then the example repository pushed to it
    let server = ports(std::fs::read_to_string(repo_root().join("tests/k8s/git-server.yaml")).unwrap());
    c.create(&serde_yaml::from_str(&server).unwrap(), false).await.unwrap();
    wait_pods(&c, "the git server ready", 90, |p| named(p, "git-server").is_some_and(ready)).await;
    let url = format!("git://127.0.0.1:{git_port}/models.git");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    common::fixture::copy_dir(&repo_root().join("examples/model-promotion"), &work);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "the example"]);
    git(&work, &["push", "-q", &url, "main"]);
    let first = git(&work, &["rev-parse", "HEAD"]);

    // deploy/ with the overlay, as kustomize renders it
    let overlay = repo_root().join("tests/k8s/overlay");
    let mut objs = kustomize::build(&overlay);
    if let Ok(out) = std::process::Command::new("kubectl").arg("kustomize").arg(&overlay).output() {
        // where a kustomize is at hand, the subset must render exactly what it renders
        if out.status.success() {
            let mut theirs: Vec<Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
            let key = |v: &Value| format!("{}/{}", v["kind"], v["metadata"]["name"]);
            let mut ours = objs.clone();
            ours.sort_by_key(key);
            theirs.sort_by_key(key);
            assert_eq!(ours, theirs, "tests/k8s/kustomize.rs renders the overlay unlike `kubectl kustomize`");
        }
    }
    kustomize::set_namespace(&mut objs, &c.ns);
    assert!(
        objs.iter().all(|o| o["kind"] != "PersistentVolumeClaim"),
        "the overlay drops the store's claim (no provisioner)"
    );
    let recorder = c.recorder().await;
    let started = Instant::now();
    for o in &objs {
        let text = ports(serde_json::to_string(o).unwrap()).replace("local/tenon:test", &image);
        c.create(&serde_json::from_str(&text).unwrap(), false).await.unwrap();
    }

    // the first revision: task pods, then a promotion commit on top of it
    let promoted = wait_promotion(&c, &url, &work, &first, 240).await;
    println!("MEASURE deploy: apply -> first promotion commit: {:.1} s", started.elapsed().as_secs_f64());
    let pods = wait_pods(&c, "the tenon pod ready", 60, |p| named(p, "tenon-").is_some_and(ready)).await;
    let tenon_pod = named(&pods, "tenon-").unwrap().metadata.name.clone().unwrap();

    // a push: another split seed gives a model that beats the incumbent's accuracy (0.96
    // against 0.92), so every task reruns and the new model is promoted
    git(&work, &["checkout", "-q", &promoted]);
    let run = work.join("tekton/pipelinerun.yaml");
    let text = std::fs::read_to_string(&run).unwrap();
    assert!(text.contains("value: \"7\""));
    std::fs::write(&run, text.replace("value: \"7\"", "value: \"1\"")).unwrap();
    git(&work, &["-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-qam", "another split"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    let pushed = Instant::now();
    git(&work, &["push", "-q", &url, "HEAD:main"]);
    let promoted2 = wait_promotion(&c, &url, &work, &second, 120).await;
    println!("MEASURE deploy: push -> promotion commit: {:.1} s", pushed.elapsed().as_secs_f64());
    recorder.settle().await;

    let mut per_task = std::collections::BTreeMap::<String, usize>::new();
    for (kind, taskrun, _) in recorder.events() {
        if kind == "add" && taskrun.starts_with("model-promotion-run-") {
            *per_task.entry(taskrun.split('#').next().unwrap().to_string()).or_default() += 1;
        }
    }
    let want: std::collections::BTreeMap<String, usize> =
        [("prepare", 2), ("train", 2), ("evaluate", 2), ("package", 2), ("report", 2)]
            .into_iter()
            .map(|(t, n)| (format!("model-promotion-run-{t}"), n))
            .collect();
    assert_eq!(per_task, want, "one task pod per TaskRun and revision");

    // the Lease, the probes, and no task pod left behind
    let lease = Api::<Lease>::namespaced(c.client.clone(), &c.ns).get("tenon-leader").await.expect("the Lease");
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(tenon_pod.as_str()));
    let pods = wait_pods(&c, "only the tenon and git pods left", 60, |p| p.len() == 2).await;
    let pod = named(&pods, "tenon-").unwrap();
    assert!(ready(pod), "the readiness probe holds");
    let container = &pod.spec.as_ref().unwrap().containers[0];
    for probe in [&container.liveness_probe, &container.readiness_probe] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("HTTP probes as in deploy/");
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
    }
    let status = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap();
    assert_eq!(status[0].restart_count, 0, "the liveness probe never failed");
    assert_eq!(status[0].image, format!("docker.io/{image}"));

    let log = c.pods_api().logs(&tenon_pod, &Default::default()).await.unwrap();
    assert!(!log.contains(" ERROR ") && !log.contains("WARN tenon::store"), "tenon's log:\n{log}");

    // /metrics and /status through the Service
    let metrics = get_through_service(&c, "tenon", "/metrics").await;
    assert!(metrics.contains("\ntenon_leader 1"), "{metrics}");
    assert!(metrics.contains("tenon_promotions_total{state=\"Landed\"} 2"), "{metrics}");
    // tenon fetches its own promotion commit on its next poll and recognises it
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_through_service(&c, "tenon", "/status").await;
        let json: Value = serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(json["leader"], true, "{json:#}");
        if json["revision"] == promoted2.as_str() {
            assert_eq!(json["lastReconcile"]["outcome"], "skipped", "{json:#}");
            assert_eq!(json["promotions"]["prod"]["state"], "Landed", "{json:#}");
            break;
        }
        assert!(Instant::now() < until, "/status never reached the promotion commit: {json:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
